//! JSON wire types: the payloads of every subject in [`crate::subjects`].
//!
//! These structs are the boundary. Requests deny unknown fields so a typo is an
//! `invalid_request` rather than a silently ignored option; they are converted into validated
//! `agora-core` values with `TryFrom` (parse, don't validate). Core types are never serialized
//! directly.

use agora_core::{
    AccountId, Amount, Balance, Number, Op, Operation, OperationId, Output, RawArgs, SortItems,
    TaskEvent,
};
use std::collections::BTreeMap;

use agora_core::likes::{Counter, ItemId, NodeId, Record, Register, UserId, Vector};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::error::ServiceError;

/// The name rules of `agora-core` as JSON-schema patterns, so that the gateway's OpenAPI
/// document (derived from these types) describes what the services accept. The core parsers
/// decide; a unit test checks that each pattern agrees with its parser.
pub mod pattern {
    /// A bank account (also a coins user): `agora_core::AccountId`.
    pub const ACCOUNT: &str = "^[A-Za-z0-9_-]{1,64}$";
    /// An operation id: `agora_core::OperationId`.
    pub const OPERATION_ID: &str = "^[!-~]{1,128}$";
    /// A coin symbol: `agora_core::coins::Symbol`.
    pub const SYMBOL: &str = "^[A-Z0-9]{1,10}$";
    /// A coin order id: `agora_core::coins::check_order_id`.
    pub const ORDER_ID: &str = "^[A-Za-z0-9_.:-]{1,48}$";
    /// A chat user or room name: `agora_core::chat::Name`.
    pub const CHAT_NAME: &str = "^[A-Za-z0-9_-]{1,32}$";
    /// A chat session token: `agora_core::chat::check_session`.
    pub const SESSION: &str = "^[!-~]{8,64}$";
    /// A likes item: `agora_core::likes::ItemId`.
    pub const ITEM: &str = "^[A-Za-z0-9_:-]{1,64}$";
    /// A likes user: `agora_core::likes::UserId`.
    pub const LIKES_USER: &str = "^[A-Za-z0-9_:.@+-]{1,64}$";
    /// A task id: a positive decimal integer.
    pub const TASK_ID: &str = "^[1-9][0-9]{0,19}$";
}

// ---------------------------------------------------------------------------------------------
// Bank (client-facing)
// ---------------------------------------------------------------------------------------------

/// `agora.bank.deposit` and `agora.bank.withdraw`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AmountRequest {
    #[schemars(pattern(pattern::ACCOUNT))]
    pub account: String,
    /// Minor units (cents).
    #[schemars(range(min = 1))]
    pub amount: i64,
    /// The operation id: the same id again gets the first reply, applied once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(pattern::OPERATION_ID))]
    pub id: Option<String>,
}

/// `agora.bank.balance`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BalanceRequest {
    #[schemars(pattern(pattern::ACCOUNT))]
    pub account: String,
}

/// `agora.bank.transfer`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TransferRequest {
    #[schemars(pattern(pattern::ACCOUNT))]
    pub from: String,
    /// Another account than `from`.
    #[schemars(pattern(pattern::ACCOUNT))]
    pub to: String,
    /// Minor units (cents).
    #[schemars(range(min = 1))]
    pub amount: i64,
    /// The operation id: the same id again gets the first reply, applied once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(pattern::OPERATION_ID))]
    pub id: Option<String>,
}

/// One account and its balance: the reply of deposit, withdraw and balance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountBalance {
    pub account: String,
    pub balance: Balance,
}

/// The reply of `agora.bank.transfer`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferReply {
    pub from: AccountBalance,
    pub to: AccountBalance,
}

/// Published on `agora.bank.events.<account>` after every commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BankEvent {
    pub op: String,
    pub account: String,
    pub amount: i64,
    pub balance: Balance,
    pub id: Option<String>,
    /// Commit time, milliseconds since the Unix epoch.
    pub at: u64,
}

/// A validated money-changing request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedOperation {
    pub operation: Operation,
    pub id: Option<OperationId>,
}

fn parse_id(id: Option<&str>) -> Result<Option<OperationId>, ServiceError> {
    id.map(OperationId::parse).transpose().map_err(ServiceError::from)
}

impl AmountRequest {
    pub fn into_deposit(self) -> Result<ParsedOperation, ServiceError> {
        let account = AccountId::parse(&self.account)?;
        let amount = Amount::parse(self.amount)?;
        let id = parse_id(self.id.as_deref())?;
        Ok(ParsedOperation { operation: Operation::Deposit { account, amount }, id })
    }

    pub fn into_withdraw(self) -> Result<ParsedOperation, ServiceError> {
        let account = AccountId::parse(&self.account)?;
        let amount = Amount::parse(self.amount)?;
        let id = parse_id(self.id.as_deref())?;
        Ok(ParsedOperation { operation: Operation::Withdraw { account, amount }, id })
    }
}

impl TryFrom<TransferRequest> for ParsedOperation {
    type Error = ServiceError;

    fn try_from(request: TransferRequest) -> Result<Self, ServiceError> {
        let from = AccountId::parse(&request.from)?;
        let to = AccountId::parse(&request.to)?;
        let amount = Amount::parse(request.amount)?;
        let id = parse_id(request.id.as_deref())?;
        Ok(ParsedOperation { operation: Operation::transfer(from, to, amount)?, id })
    }
}

/// An operation as stored in its idempotency record, so a retry can be compared with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum OperationWire {
    Deposit { account: String, amount: i64 },
    Withdraw { account: String, amount: i64 },
    Transfer { from: String, to: String, amount: i64 },
}

impl From<&Operation> for OperationWire {
    fn from(operation: &Operation) -> Self {
        match operation {
            Operation::Deposit { account, amount } => {
                Self::Deposit { account: account.to_string(), amount: amount.get() }
            }
            Operation::Withdraw { account, amount } => {
                Self::Withdraw { account: account.to_string(), amount: amount.get() }
            }
            Operation::Transfer { from, to, amount } => {
                Self::Transfer { from: from.to_string(), to: to.to_string(), amount: amount.get() }
            }
        }
    }
}

/// What the bank records with each committed operation that carries an id: the operation and
/// the exact reply it got, so a retry gets the first result byte for byte.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BankRecord {
    pub op: OperationWire,
    pub reply: Box<RawValue>,
}

// ---------------------------------------------------------------------------------------------
// Ledger (internal, called by the bank)
// ---------------------------------------------------------------------------------------------

/// `agora.ledger.lock.<account>`: take or renew a lease.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockRequest {
    pub owner: String,
    pub lease_ms: u64,
}

/// One granted lease, with the balance as of the grant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockGrant {
    pub account: String,
    pub token: u64,
    pub balance: Balance,
    pub expires_at_ms: u64,
}

/// `agora.ledger.unlock.<account>`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnlockRequest {
    pub owner: String,
    pub token: u64,
}

/// Reply of unlock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnlockReply {
    pub account: String,
    pub released: bool,
}

/// `agora.ledger.get.<account>`: the reader names itself so it may read its own locked accounts.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GetRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

/// `agora.ledger.set.<account>`: write one balance under a lease, optionally releasing it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetRequest {
    pub owner: String,
    pub token: u64,
    pub balance: Balance,
    #[serde(default)]
    pub release: bool,
}

/// `agora.ledger.batch.lock`: lease a strictly increasing set of accounts, all or nothing, and
/// look up the idempotency records of the given operation ids in the same round trip.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchLockRequest {
    pub owner: String,
    pub accounts: Vec<String>,
    pub lease_ms: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ids: Vec<String>,
}

/// A recorded operation: an id and the opaque record the bank stored with it. The ledger
/// never looks inside a record, so it is carried as raw JSON, not parsed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OperationEntry {
    pub id: String,
    pub record: Box<RawValue>,
}

/// Reply of `agora.ledger.batch.lock`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BatchLockReply {
    pub locks: Vec<LockGrant>,
    /// Records of those requested ids that were already committed.
    pub operations: Vec<OperationEntry>,
}

/// `agora.ledger.batch.get`: read many balances; accounts locked by others are listed apart.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchGetRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    pub accounts: Vec<String>,
}

/// Reply of `agora.ledger.batch.get`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchGetReply {
    pub balances: Vec<AccountBalance>,
    pub locked: Vec<String>,
}

/// One balance written under a lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Write {
    pub account: String,
    pub token: u64,
    pub balance: Balance,
}

/// One lease to give back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Release {
    pub account: String,
    pub token: u64,
}

/// `agora.ledger.batch.commit`: in one durable transaction, write balances, record operation
/// ids and release leases. All or nothing.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchCommitRequest {
    pub owner: String,
    #[serde(default)]
    pub writes: Vec<Write>,
    #[serde(default)]
    pub operations: Vec<OperationEntry>,
    #[serde(default)]
    pub release: Vec<Release>,
}

/// Reply of `agora.ledger.batch.commit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchCommitReply {
    pub written: usize,
    pub recorded: usize,
    pub released: usize,
}

/// `agora.ledger.locks`: the live locks (for operators and tests).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocksRequest {
    #[serde(default)]
    pub limit: Option<usize>,
}

/// One live lock as listed by `agora.ledger.locks`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockInfo {
    pub account: String,
    pub owner: String,
    pub token: u64,
    pub expires_at_ms: u64,
}

/// Reply of `agora.ledger.locks`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocksReply {
    pub locks: Vec<LockInfo>,
    /// Live locks in all, which may exceed `locks.len()` when a limit applied.
    pub total: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schema_patterns_agree_with_the_core_parsers() {
        let samples = [
            "",
            "a",
            "A-z_09",
            "a.b",
            "a b",
            "a:b",
            "a@b.c",
            "u+1",
            "ÄBC",
            "BTC",
            "btc",
            "X1",
            "ABCDEFGHIJK",
            "order-1.2:3",
            "bank-1-x",
            "!#$%&'()*+,",
            "tab\there",
            "12345678",
            "1234567",
            "0",
            "42",
            "007",
            "-1",
        ];
        let long = |n: usize| "x".repeat(n);
        let lengths = [long(8), long(10), long(11), long(32), long(33), long(48), long(49)];
        let lengths2 = [long(64), long(65), long(128), long(129)];
        let all = samples
            .iter()
            .map(|s| s.to_string())
            .chain(lengths)
            .chain(lengths2)
            .chain(["BTC".repeat(4), "Z".repeat(10)]);
        type Parser = fn(&str) -> bool;
        let checks: [(&str, Parser); 9] = [
            (pattern::ACCOUNT, |s| AccountId::parse(s).is_ok()),
            (pattern::OPERATION_ID, |s| OperationId::parse(s).is_ok()),
            (pattern::SYMBOL, |s| agora_core::coins::Symbol::parse(s).is_ok()),
            (pattern::ORDER_ID, |s| agora_core::coins::check_order_id(s).is_ok()),
            (pattern::CHAT_NAME, agora_core::chat::Name::is_valid),
            (pattern::SESSION, |s| agora_core::chat::check_session(s).is_ok()),
            (pattern::ITEM, |s| ItemId::parse(s).is_ok()),
            (pattern::LIKES_USER, |s| UserId::parse(s).is_ok()),
            (pattern::TASK_ID, |s| s.parse::<u64>().is_ok_and(|id| id > 0) && !s.starts_with('0')),
        ];
        for text in all {
            for (pattern, parse) in checks {
                let regex = regex::Regex::new(pattern).expect("a valid pattern");
                assert_eq!(regex.is_match(&text), parse(&text), "{pattern} on {text:?}");
            }
        }
    }
    use crate::error::ErrorCode;

    #[test]
    fn requests_refuse_unknown_fields_and_bad_values() {
        let typo = serde_json::from_str::<AmountRequest>(r#"{"account":"a","amout":5}"#);
        assert!(typo.is_err());
        let fraction = serde_json::from_str::<AmountRequest>(r#"{"account":"a","amount":1.5}"#);
        assert!(fraction.is_err());
        let request: TransferRequest =
            serde_json::from_str(r#"{"from":"a","to":"a","amount":5}"#).expect("shape is fine");
        let refused = ParsedOperation::try_from(request).expect_err("self transfer");
        assert_eq!(refused.code, ErrorCode::InvalidRequest);
    }

    #[test]
    fn records_round_trip() {
        let reply = r#"{"from":{"account":"a","balance":1}}"#;
        let record = BankRecord {
            op: OperationWire::Transfer { from: "a".into(), to: "b".into(), amount: 3 },
            reply: RawValue::from_string(reply.to_owned()).expect("valid JSON"),
        };
        let json = serde_json::to_string(&record).expect("serializes");
        assert!(json.contains(r#""type":"transfer""#));
        let back: BankRecord = serde_json::from_str(&json).expect("parses");
        assert_eq!(back.op, record.op);
        assert_eq!(back.reply.get(), reply, "the reply is kept byte for byte");
    }
}

// ---------------------------------------------------------------------------------------------
// Tasks (client-facing)
// ---------------------------------------------------------------------------------------------

/// `agora.tasks.submit`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitRequest {
    #[schemars(extend("enum" = agora_core::ops::OP_NAMES))]
    pub op: String,
    /// The op's arguments, per op: `{"numbers":[1,2.5]}` (sum, average, max, min; integers
    /// within ±2^53, floats finite within ±1e300), `{"n":90}` (fibonacci),
    /// `{"numbers":[...]}` or `{"strings":[...]}` and `"descending"` (sort), `{"text":"..."}`,
    /// `{"ms":1000}` (sleep), `{"message":"..."}` (fail).
    // Kept as written: numbers keep their text, so an integer too large for an `i64` is
    // refused rather than read as a float (see `parse_op`).
    #[serde(default = "empty_object")]
    #[schemars(with = "serde_json::Map<String, serde_json::Value>")]
    pub args: Box<RawValue>,
    /// Client id: submitting the same id again returns the same task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    pub id: Option<String>,
    /// `normal` (default) or `high`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["normal", "high"]))]
    pub priority: Option<String>,
    /// Reply when the task has finished, or after this many milliseconds, with the whole
    /// task as it is then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 60_000))]
    pub wait_ms: Option<u64>,
}

fn empty_object() -> Box<RawValue> {
    RawValue::from_string("{}".to_owned()).expect("{} is JSON")
}

impl SubmitRequest {
    /// A submission of `op` with `args` (normal priority, no client id, no wait).
    pub fn new(op: impl Into<String>, args: &serde_json::Value) -> Self {
        Self {
            op: op.into(),
            args: RawValue::from_string(args.to_string()).unwrap_or_else(|_| empty_object()),
            id: None,
            priority: None,
            wait_ms: None,
        }
    }
}

/// Task priority on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Priority {
    Normal,
    High,
}

impl Priority {
    pub fn parse(text: Option<&str>) -> Result<Self, ServiceError> {
        match text {
            None | Some("normal") => Ok(Self::Normal),
            Some("high") => Ok(Self::High),
            Some(other) => Err(ServiceError::invalid(format!(
                "priority must be \"normal\" or \"high\", not {other:?}"
            ))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Normal => "normal",
            Self::High => "high",
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NumbersArgs<'a> {
    #[serde(borrow)]
    numbers: Vec<&'a RawValue>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FibonacciArgs {
    n: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SortArgs<'a> {
    #[serde(default, borrow)]
    numbers: Option<Vec<&'a RawValue>>,
    #[serde(default)]
    strings: Option<Vec<String>>,
    #[serde(default)]
    descending: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TextArgs {
    text: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SleepArgs {
    ms: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FailArgs {
    #[serde(default)]
    message: String,
}

/// A number as it was written. JSON has one number type; here an integer literal (no `.`, no
/// exponent) must fit an `i64` (then `Op::new` bounds it to ±2^53) and anything else is a
/// finite float. Reading the text, not a parsed `f64`, is what refuses 2^64 instead of
/// silently rounding it to 1.8446744073709552e19.
fn number(raw: &RawValue) -> Result<Number, ServiceError> {
    let text = raw.get();
    if !text.starts_with(|c: char| c == '-' || c.is_ascii_digit()) {
        return Err(ServiceError::invalid(format!("{text} is not a number")));
    }
    if text.contains(['.', 'e', 'E']) {
        return match text.parse::<f64>() {
            Ok(float) if float.is_finite() => Ok(Number::Float(float)),
            _ => Err(ServiceError::invalid(format!(
                "{text} is out of range; floats must be finite within ±1e300"
            ))),
        };
    }
    text.parse::<i64>().map(Number::Int).map_err(|_| {
        ServiceError::invalid(format!("{text} is out of range; integers must be within ±2^53"))
    })
}

fn numbers(values: &[&RawValue]) -> Result<Vec<Number>, ServiceError> {
    values.iter().map(|value| number(value)).collect()
}

/// Decodes and bounds-checks an op and its arguments (`agora_core::Op::new`).
pub fn parse_op(op: &str, args: &RawValue) -> Result<Op, ServiceError> {
    fn args_of<'a, T: Deserialize<'a>>(op: &str, args: &'a RawValue) -> Result<T, ServiceError> {
        crate::service::check_object(args.get().as_bytes())
            .and_then(|()| serde_json::from_str(args.get()).map_err(|e| e.to_string()))
            .map_err(|e| {
                ServiceError::invalid(format!("{op}: bad args ({e}); expected {}", Op::usage(op)))
            })
    }
    let raw = match op {
        "sum" | "average" | "max" | "min" => {
            RawArgs::Numbers(numbers(&args_of::<NumbersArgs>(op, args)?.numbers)?)
        }
        "fibonacci" => RawArgs::N(args_of::<FibonacciArgs>(op, args)?.n),
        "sort" => {
            let sort: SortArgs = args_of(op, args)?;
            let items = match (sort.numbers, sort.strings) {
                (Some(values), None) => SortItems::Numbers(numbers(&values)?),
                (None, Some(strings)) => SortItems::Strings(strings),
                _ => {
                    return Err(ServiceError::invalid(format!(
                        "sort: give exactly one of \"numbers\" and \"strings\"; expected {}",
                        Op::usage(op)
                    )));
                }
            };
            RawArgs::Sort { items, descending: sort.descending }
        }
        "count_words" | "count_chars" | "uppercase" | "lowercase" => {
            RawArgs::Text(args_of::<TextArgs>(op, args)?.text)
        }
        "sleep" => RawArgs::Ms(args_of::<SleepArgs>(op, args)?.ms),
        "fail" => RawArgs::Message(args_of::<FailArgs>(op, args)?.message),
        _ => RawArgs::N(0),
    };
    Op::new(op, raw).map_err(|e| ServiceError::invalid(e.0))
}

/// A result as JSON: `{"value": ...}` (numbers and text), `{"digits": "..."}` (fibonacci),
/// `{"sorted": [...]}`, `{"slept_ms": n}`.
pub fn output_json(output: &Output) -> serde_json::Value {
    use serde_json::json;
    let number = |n: &Number| match n {
        Number::Int(i) => json!(i),
        Number::Float(f) => json!(f),
    };
    match output {
        // Within ±2^53 * 20_000, so it fits i64 (and stays exact).
        Output::Int(i) => json!({ "value": i64::try_from(*i).unwrap_or(i64::MAX) }),
        Output::Float(f) => json!({ "value": f }),
        Output::BigInt(digits) => json!({ "digits": digits }),
        Output::Numbers(values) => {
            json!({ "sorted": values.iter().map(number).collect::<Vec<_>>() })
        }
        Output::Strings(values) => json!({ "sorted": values }),
        Output::Text(text) => json!({ "value": text }),
        Output::Slept(ms) => json!({ "slept_ms": ms }),
    }
}

/// A task as the task service reports it. `submit` without `wait_ms` and `cancel` fill only
/// `id` and `state`; `list` leaves out `args`, `result` and `history`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TaskView {
    pub id: String,
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub op: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Box<RawValue>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submitted_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Box<RawValue>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dead_letter: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history: Option<Vec<TaskEventWire>>,
}

/// One lifecycle event: published on `agora.tasks.events.<id>` (with `id`, and `result` on
/// `completed`) and kept in the task's history (without them).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TaskEventWire {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub event: String,
    pub at_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_in_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dead_letter: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Box<RawValue>>,
}

impl TaskEventWire {
    pub fn from_event(event: &TaskEvent, at_ms: u64) -> Self {
        let mut wire = Self { event: event.name().to_owned(), at_ms, ..Self::default() };
        match event {
            TaskEvent::Started { attempt, worker } | TaskEvent::Completed { attempt, worker } => {
                wire.attempt = Some(*attempt);
                wire.worker = Some(worker.clone());
            }
            TaskEvent::Progress { percent } => wire.percent = Some(*percent),
            TaskEvent::Retrying { attempt, error, retry_in_ms } => {
                wire.attempt = Some(*attempt);
                wire.error = Some(error.clone());
                wire.retry_in_ms = Some(*retry_in_ms);
            }
            TaskEvent::Failed { attempt, error, dead_letter } => {
                wire.attempt = Some(*attempt);
                wire.error = Some(error.clone());
                wire.dead_letter = *dead_letter;
            }
            TaskEvent::Cancelled { .. } => {}
        }
        wire
    }
}

/// `agora.tasks.get` and `agora.tasks.cancel`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskIdRequest {
    #[schemars(pattern(pattern::TASK_ID))]
    pub id: String,
}

/// `agora.tasks.wait`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaitRequest {
    pub id: String,
    /// At most `tasks::WAIT_MS_MAX`.
    pub timeout_ms: u64,
}

/// `agora.tasks.list`: newest first, filtered.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["queued", "running", "completed", "failed", "cancelled"]))]
    pub state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = agora_core::ops::OP_NAMES))]
    pub op: Option<String>,
    /// Default 50.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1_000))]
    pub limit: Option<usize>,
    /// Only tasks older than this task id (the previous page's `next_before`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(pattern::TASK_ID))]
    pub before: Option<String>,
    /// Only dead letters (tasks that exhausted their attempts).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dead_letter: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ListReply {
    pub tasks: Vec<TaskView>,
    /// Pass as `before` for the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_before: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Tasks (worker-facing)
// ---------------------------------------------------------------------------------------------

/// A message on the work queue (`agora.tasks.queue.<priority>`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QueuedTask {
    pub id: String,
    pub op: String,
    pub args: Box<RawValue>,
}

/// `agora.tasks.claim`: a worker starts an attempt.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimRequest {
    pub id: String,
    pub worker: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClaimReply {
    /// `false`: the task is finished or cancelled; drop the message.
    pub run: bool,
    pub state: String,
    pub attempt: u32,
}

/// `agora.tasks.progress`: a worker's progress, also its heartbeat for long tasks.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProgressRequest {
    pub id: String,
    pub worker: String,
    pub percent: u8,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProgressReply {
    /// The task was cancelled or finished elsewhere: stop.
    pub stop: bool,
}

/// `agora.tasks.finish`: an attempt's outcome, exactly one of `result` and `error`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FinishRequest {
    pub id: String,
    pub worker: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Box<RawValue>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// With `error`: retry after this long; absent means this was the last attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_in_ms: Option<u64>,
    /// The attempt was not claimed first (a quick op, run at once): claim and finish it in
    /// one step. If the task was cancelled or finished meanwhile, the outcome is discarded.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub claim: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FinishReply {
    /// The task's state after the report.
    pub state: String,
    /// `false`: the task had already finished (or was cancelled); the report changed nothing.
    pub accepted: bool,
}

/// A worker's status (`agora.worker.<id>.status` and its `$SRV.STATS` data).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WorkerStatus {
    pub worker: String,
    pub concurrency: usize,
    pub done: u64,
    pub failed: u64,
    /// Attempts dropped because the task was cancelled or finished elsewhere.
    pub dropped: u64,
    /// Ids of the tasks running now.
    pub current: Vec<String>,
}

// ---------------------------------------------------------------------------------------------
// Chat
// ---------------------------------------------------------------------------------------------

/// A chat message as published on `agora.chat.room.<room>` and `agora.chat.dm.<to>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatMessage {
    /// The sender's message id; with `from`, the dedup key of history.
    pub id: String,
    pub from: String,
    pub text: String,
    /// When the sender sent it (ms since the epoch); the service's clock when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<u64>,
}

/// The chat service's reply to a message sent with a reply subject: it is in history.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MessageAck {
    /// Its position in history.
    pub seq: u64,
    /// True when history already had this `from` + `id` (a resend): stored once.
    pub duplicate: bool,
}

/// `agora.chat.register`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    pub name: String,
    /// A client-chosen session token; registering again with it is idempotent. The service
    /// makes one up when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegisterReply {
    pub name: String,
    /// Send it with every heartbeat, leave, join and part.
    pub session: String,
    pub since_ms: u64,
    /// Heartbeat at least this often...
    pub heartbeat_ms: u64,
    /// ...because a session silent this long is offline.
    pub timeout_ms: u64,
    /// True the first time this name was ever registered.
    pub first: bool,
    /// When the name was last online before this session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_last_seen_ms: Option<u64>,
    /// History position when the name went offline: ask `agora.chat.history`
    /// `{"as":name,"after":missed_after}` for what arrived since.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missed_after: Option<u64>,
    /// Rooms the name is in (besides `all`), kept across sessions.
    pub rooms: Vec<String>,
}

/// `agora.chat.heartbeat` and `agora.chat.leave`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SessionRequest {
    #[schemars(pattern(pattern::CHAT_NAME))]
    pub name: String,
    #[schemars(pattern(pattern::SESSION))]
    pub session: String,
}

/// `agora.chat.heartbeat` and `agora.chat.leave` replies.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionReply {
    pub name: String,
    pub online: bool,
}

/// `agora.chat.join` and `agora.chat.part`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoomRequest {
    pub name: String,
    pub session: String,
    pub room: String,
}

/// `agora.chat.join` and `agora.chat.part` replies: the user's rooms now (besides `all`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RoomsReply {
    pub name: String,
    pub rooms: Vec<String>,
}

/// `agora.chat.who`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WhoRequest {
    /// Only members of this room (everyone is in `all`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(pattern::CHAT_NAME))]
    pub room: Option<String>,
    /// Also list known names that are offline.
    #[serde(default)]
    pub offline: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserView {
    pub name: String,
    pub online: bool,
    /// When the current session began (online users).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since_ms: Option<u64>,
    /// The last heartbeat (online) or when the user went offline.
    pub last_seen_ms: u64,
    pub rooms: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WhoReply {
    /// Online users first, then by name.
    pub users: Vec<UserView>,
    /// True when more users matched than a reply holds.
    pub truncated: bool,
}

/// `agora.chat.history`: give `room`; or `with` and `as` (a direct conversation); or only `as`
/// (everything `as` could have seen: its direct messages and its rooms' messages).
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HistoryRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(pattern::CHAT_NAME))]
    pub room: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(pattern::CHAT_NAME))]
    pub with: Option<String>,
    #[serde(default, rename = "as", skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(pattern::CHAT_NAME))]
    pub as_user: Option<String>,
    /// Only messages with `seq` below this (a page further back)...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<u64>,
    /// ...or above this (what arrived since).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<u64>,
    /// Default 50.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 500))]
    pub limit: Option<usize>,
}

/// A message in history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredMessage {
    pub seq: u64,
    /// The room, for a room message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    /// The recipient, for a direct message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    pub id: String,
    pub from: String,
    pub text: String,
    pub at: u64,
    /// When the chat service stored it.
    pub recorded_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HistoryReply {
    /// Oldest first.
    pub messages: Vec<StoredMessage>,
    /// True when more messages matched than `limit` (page on with `before` or `after`).
    pub more: bool,
}

/// What `agora.chat.presence.<name>` carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceEvent {
    pub name: String,
    /// `join` (came online), `leave` (went offline), `enter` / `exit` (a room).
    pub event: String,
    /// The room, for `enter` and `exit`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    /// Why a user left: `left` (said so) or `timeout` (heartbeats stopped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When the session began (`join`, `leave`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since_ms: Option<u64>,
    pub at_ms: u64,
}

// ---------------------------------------------------------------------------------------------
// Likes (`agora-likes`)
// ---------------------------------------------------------------------------------------------

/// Body of `agora.likes.like.<item>`, `agora.likes.unlike.<item>` and
/// `agora.likes.count.<item>` (all optional: an empty body is an anonymous like, or a plain
/// count).
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LikeRequest {
    /// Makes a like idempotent per user; needed to unlike; with a count, says whether this
    /// user likes the item.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(pattern::LIKES_USER))]
    pub user: Option<String>,
}

/// Reply of like, unlike and count: the item's count on the node that answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LikeCount {
    pub item: String,
    pub count: u64,
    /// With a user: whether that user likes the item now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liked: Option<bool>,
    /// Like and unlike: whether the request changed anything (a repeated like does not).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changed: Option<bool>,
    /// The node that answered.
    pub node: String,
}

/// Body of `agora.likes.top` (optional).
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TopRequest {
    /// Default 10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1_000))]
    pub limit: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemCount {
    pub item: String,
    pub count: u64,
}

/// Reply of `agora.likes.top`: the most-liked items, most first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopReply {
    pub items: Vec<ItemCount>,
    /// How many items the node holds in all.
    pub items_total: u64,
    pub node: String,
}

/// One user's like in an event or a sync page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserLike {
    pub user: String,
    pub liked: bool,
    /// The write's stamp (last writer wins; ties by origin node id).
    pub ts: u64,
}

/// Published on `agora.likes.events.<item>` for each item a node's batch changed: the node's
/// new records for that item, and the count as that node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LikeEvent {
    pub item: String,
    /// The item's count on the origin node after the batch.
    pub count: u64,
    /// The node that took the likes.
    pub origin: String,
    /// The origin's batch number, and how many events (items) the batch has.
    pub batch: u64,
    pub parts: u32,
    /// The origin's anonymous-like counter for the item, if the batch changed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
    /// Users whose like the batch changed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<UserLike>,
}

/// Where a sync page ended: the next page has `origin`'s records after `batch`, then the
/// following origins'.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncCursor {
    pub origin: String,
    pub batch: u64,
}

/// Body of `agora.likes.sync.<node>`: "send me every record your coverage has and mine
/// (`vector`) does not".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncRequest {
    /// The asking node.
    pub node: String,
    pub vector: BTreeMap<String, u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<SyncCursor>,
}

/// An anonymous-like counter record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CounterRecord {
    pub item: String,
    pub node: String,
    pub total: u64,
    pub batch: u64,
}

/// A user-like register record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserRecord {
    pub item: String,
    pub user: String,
    pub liked: bool,
    pub ts: u64,
    pub origin: String,
    pub batch: u64,
}

/// A page of records, with the answering node's coverage (the asker claims it once the last
/// page, `next: null`, is merged).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SyncReply {
    pub node: String,
    pub vector: BTreeMap<String, u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub counters: Vec<CounterRecord>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<UserRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<SyncCursor>,
}

/// Body of `agora.likes.digest` (optional): items whose counts each node should include.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DigestRequest {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub items: Vec<String>,
}

/// One node's state and load: its reply to `agora.likes.digest`, its entry in
/// `agora.likes.nodes`, and its `$SRV.STATS` data.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NodeDigest {
    pub node: String,
    /// Whether the node holds the leader lease.
    pub leader: bool,
    pub started_ms: u64,
    /// Coverage: per origin node, the batch up to which this node has every write.
    pub vector: BTreeMap<String, u64>,
    /// Items held, user likes held, and the sum of all counts.
    pub items: u64,
    pub users: u64,
    pub likes: u64,
    /// Likes and unlikes this node took since it started, and per second lately.
    pub accepted: u64,
    pub accepted_per_sec: u64,
    /// Work queued for the node's owner thread.
    pub queue: u64,
    /// The last anti-entropy pull that completed: when, and from which node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_from: Option<String>,
    pub syncs: u64,
    /// Batches, sync pages and records from peers this node refused: from a node not in the
    /// roster, not signed by their node, or claiming more likes than a batch can hold.
    #[serde(default)]
    pub refused: u64,
    /// The counts asked for in the digest request.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub counts: BTreeMap<String, u64>,
}

/// The leader lease as stored in the KV bucket, and as `agora.likes.nodes` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderLease {
    pub node: String,
    /// Increases with every new leadership (the KV revision that created it).
    pub epoch: u64,
    pub since_ms: u64,
}

/// Reply of `agora.likes.nodes` (answered by the leader): the live nodes of its last round.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodesReply {
    pub leader: LeaderLease,
    /// When the round that gathered `nodes` ran.
    pub as_of_ms: u64,
    pub nodes: Vec<NodeDigest>,
}

/// Published by the leader on `agora.likes.pull.<node>`: pull from these peers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PullOrder {
    pub leader: String,
    pub epoch: u64,
    pub from: Vec<String>,
}

impl TryFrom<CounterRecord> for Record {
    type Error = ServiceError;
    fn try_from(wire: CounterRecord) -> Result<Self, ServiceError> {
        Ok(Record::Counter {
            item: ItemId::parse(&wire.item)?,
            node: NodeId::parse(&wire.node)?,
            counter: Counter { total: wire.total, batch: wire.batch },
        })
    }
}

impl TryFrom<UserRecord> for Record {
    type Error = ServiceError;
    fn try_from(wire: UserRecord) -> Result<Self, ServiceError> {
        Ok(Record::User {
            item: ItemId::parse(&wire.item)?,
            user: UserId::parse(&wire.user)?,
            register: Register {
                liked: wire.liked,
                ts_ms: wire.ts,
                origin: NodeId::parse(&wire.origin)?,
                batch: wire.batch,
            },
        })
    }
}

impl LikeEvent {
    /// The records the event carries (all of them with the dot `(origin, batch)`).
    pub fn records(&self) -> Result<(NodeId, Vec<Record>), ServiceError> {
        let item = ItemId::parse(&self.item)?;
        let origin = NodeId::parse(&self.origin)?;
        let mut records = Vec::with_capacity(self.users.len() + 1);
        if let Some(total) = self.total {
            let counter = Counter { total, batch: self.batch };
            records.push(Record::Counter { item: item.clone(), node: origin.clone(), counter });
        }
        for like in &self.users {
            let register = Register {
                liked: like.liked,
                ts_ms: like.ts,
                origin: origin.clone(),
                batch: self.batch,
            };
            let user = UserId::parse(&like.user)?;
            records.push(Record::User { item: item.clone(), user, register });
        }
        Ok((origin, records))
    }
}

/// A version vector on the wire (node ids as keys).
pub fn vector_to_wire(vector: &Vector) -> BTreeMap<String, u64> {
    vector.iter().map(|(node, batch)| (node.to_string(), *batch)).collect()
}

/// A version vector from the wire; every key must be a node id.
pub fn vector_from_wire(wire: &BTreeMap<String, u64>) -> Result<Vector, ServiceError> {
    wire.iter().map(|(node, batch)| Ok((NodeId::parse(node)?, *batch))).collect()
}

// ---------------------------------------------------------------------------------------------
// Coins (`agora-coins`)
// ---------------------------------------------------------------------------------------------

/// One listed asset. Prices are minor units (cents) per unit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssetView {
    pub symbol: String,
    pub name: String,
    pub price: u64,
    /// Units the exchange can sell now.
    pub available: u64,
}

/// Body of `agora.coins.assets` (optional): every asset, one `symbol`, or several `symbols`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssetsRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub symbol: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub symbols: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssetsReply {
    pub assets: Vec<AssetView>,
    /// Asked-for symbols that are not listed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_found: Vec<String>,
}

/// Body of `agora.coins.buy` and `agora.coins.sell`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderRequest {
    /// The user's bank account.
    #[schemars(pattern(pattern::ACCOUNT))]
    pub user: String,
    #[schemars(pattern(pattern::SYMBOL))]
    pub symbol: String,
    #[schemars(range(min = 1, max = 1_000_000_000_000_i64))]
    pub quantity: i64,
    /// The order id (per user): a retry with the same id is applied once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(pattern::ORDER_ID))]
    pub id: Option<String>,
}

/// Body of `agora.coins.order`: one order's state.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderLookup {
    #[schemars(pattern(pattern::ACCOUNT))]
    pub user: String,
    #[schemars(pattern(pattern::ORDER_ID))]
    pub id: String,
}

/// An order: the reply of buy, sell and order, and an entry of history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderView {
    /// Position in the exchange's log.
    pub seq: u64,
    pub id: String,
    pub user: String,
    pub symbol: String,
    /// `buy` or `sell`.
    pub side: String,
    pub quantity: u64,
    pub unit_price: u64,
    pub total: u64,
    /// `pending` (paying), `done`, or `failed` (the reservation was given back).
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ServiceError>,
    pub created_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settled_ms: Option<u64>,
    /// The user's holding of the symbol after the order (done orders).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holding: Option<u64>,
}

/// Body of `agora.coins.portfolio`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PortfolioRequest {
    #[schemars(pattern(pattern::ACCOUNT))]
    pub user: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldingView {
    pub symbol: String,
    pub quantity: u64,
    pub price: u64,
    /// quantity × price, minor units.
    pub value: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortfolioReply {
    pub user: String,
    pub holdings: Vec<HoldingView>,
    /// The holdings' value at current prices.
    pub value: u64,
    /// The user's bank balance.
    pub balance: i64,
}

/// Body of `agora.coins.history` (optional): done orders, newest first.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CoinsHistoryRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(pattern::ACCOUNT))]
    pub user: Option<String>,
    /// Settled at or after / before (ms since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<u64>,
    /// Default 50.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1_000))]
    pub limit: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoinsHistoryReply {
    pub orders: Vec<OrderView>,
    pub more: bool,
}

/// Body of `agora.coins.admin.add`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AddAssetRequest {
    #[schemars(pattern(pattern::SYMBOL))]
    pub symbol: String,
    #[schemars(length(min = 1, max = 64))]
    pub name: String,
    /// Minor units per unit.
    #[schemars(range(min = 1))]
    pub price: i64,
    /// Units available to buy.
    #[schemars(range(min = 0, max = 1_000_000_000_000_i64))]
    pub quantity: i64,
}

/// Body of `agora.coins.admin.remove`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RemoveAssetRequest {
    #[schemars(pattern(pattern::SYMBOL))]
    pub symbol: String,
}

/// Body of `agora.coins.admin.update`: a new price and/or available quantity.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateAssetRequest {
    #[schemars(pattern(pattern::SYMBOL))]
    pub symbol: String,
    /// Minor units per unit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub price: Option<i64>,
    /// Units available to buy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1_000_000_000_000_i64))]
    pub quantity: Option<i64>,
}

/// Published on `agora.coins.prices.<symbol>` when an asset is listed, repriced or delisted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PriceEvent {
    pub symbol: String,
    /// The new price (absent once delisted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<u64>,
    /// `listed`, `price`, or `delisted`.
    pub event: String,
    pub at_ms: u64,
}

// ---------------------------------------------------------------------------------------------
// Logs
// ---------------------------------------------------------------------------------------------

/// Published on `agora.logs.<service>`: one info, warn or error event of a component.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogRecord {
    /// When it was logged (ms since the epoch).
    pub ts_ms: u64,
    /// `info`, `warn` or `error`.
    pub level: String,
    /// The component's short name (`bank`), as in the subject.
    pub service: String,
    /// Which instance of the component (its id, or its process id).
    pub instance: String,
    /// The Rust module that logged it.
    pub target: String,
    pub message: String,
    /// The event's other fields (at most 16, each cut to 256 bytes).
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub fields: serde_json::Map<String, serde_json::Value>,
    /// Records this process dropped since the previous one it published (its queue was full).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub dropped: u64,
}

fn is_zero(value: &u64) -> bool {
    *value == 0
}
