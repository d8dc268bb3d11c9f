//! JSON wire types: the payloads of every subject in [`crate::subjects`].
//!
//! These structs are the boundary. Requests deny unknown fields so a typo is an
//! `invalid_request` rather than a silently ignored option; they are converted into validated
//! `agora-core` values with `TryFrom` (parse, don't validate). Core types are never serialized
//! directly.

use agora_core::{AccountId, Amount, Balance, Operation, OperationId};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::error::ServiceError;

// ---------------------------------------------------------------------------------------------
// Bank (client-facing)
// ---------------------------------------------------------------------------------------------

/// `agora.bank.deposit` and `agora.bank.withdraw`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmountRequest {
    pub account: String,
    pub amount: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

/// `agora.bank.balance`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BalanceRequest {
    pub account: String,
}

/// `agora.bank.transfer`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransferRequest {
    pub from: String,
    pub to: String,
    pub amount: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
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
