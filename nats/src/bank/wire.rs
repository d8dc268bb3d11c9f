//! The bank's JSON payloads (`agora.bank.*`), converted into `agora-core` values with
//! `TryFrom` at the edge.

use agora_core::{AccountId, Amount, Balance, Caller, Operation, OperationId};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::error::ServiceError;
use crate::pattern;

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
    /// The id it is recorded under (a person's: `<user>/<id>`).
    pub id: Option<OperationId>,
    /// The id as the client gave it (what its events show).
    pub client_id: Option<OperationId>,
}

impl ParsedOperation {
    /// `operation` with the client's `id`, for `caller`.
    fn new(operation: Operation, id: Option<&str>, caller: &Caller) -> Result<Self, ServiceError> {
        let client_id = id.map(OperationId::parse).transpose()?;
        let id = match (caller.name(), &client_id) {
            (Some(owner), Some(id)) => Some(OperationId::scoped(owner, id)),
            _ => client_id.clone(),
        };
        Ok(Self { operation, id, client_id })
    }
}

/// The account `caller` may move money out of (or into): their own, or any for a service.
fn own_account(caller: &Caller, named: &str) -> Result<AccountId, ServiceError> {
    // The name's shape first: a malformed one is bad input, whoever sends it.
    let account = AccountId::parse(named)?;
    caller.acting_on("account", Some(named))?;
    Ok(account)
}

impl AmountRequest {
    pub fn into_deposit(self, caller: &Caller) -> Result<ParsedOperation, ServiceError> {
        let account = own_account(caller, &self.account)?;
        let amount = Amount::parse(self.amount)?;
        ParsedOperation::new(Operation::Deposit { account, amount }, self.id.as_deref(), caller)
    }

    pub fn into_withdraw(self, caller: &Caller) -> Result<ParsedOperation, ServiceError> {
        let account = own_account(caller, &self.account)?;
        let amount = Amount::parse(self.amount)?;
        ParsedOperation::new(Operation::Withdraw { account, amount }, self.id.as_deref(), caller)
    }
}

impl TransferRequest {
    /// A transfer out of `caller`'s own account (any, for a service), to anyone's.
    pub fn into_transfer(self, caller: &Caller) -> Result<ParsedOperation, ServiceError> {
        let from = own_account(caller, &self.from)?;
        let to = AccountId::parse(&self.to)?;
        let amount = Amount::parse(self.amount)?;
        ParsedOperation::new(Operation::transfer(from, to, amount)?, self.id.as_deref(), caller)
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

impl TryFrom<&OperationWire> for Operation {
    type Error = ServiceError;

    fn try_from(wire: &OperationWire) -> Result<Self, ServiceError> {
        Ok(match wire {
            OperationWire::Deposit { account, amount } => Operation::Deposit {
                account: AccountId::parse(account)?,
                amount: Amount::parse(*amount)?,
            },
            OperationWire::Withdraw { account, amount } => Operation::Withdraw {
                account: AccountId::parse(account)?,
                amount: Amount::parse(*amount)?,
            },
            OperationWire::Transfer { from, to, amount } => Operation::transfer(
                AccountId::parse(from)?,
                AccountId::parse(to)?,
                Amount::parse(*amount)?,
            )?,
        })
    }
}

/// What the bank records with each committed operation that carries an id: the operation and
/// the exact reply it got, so a retry gets the first result byte for byte.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BankRecord {
    pub op: OperationWire,
    pub reply: Box<RawValue>,
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
        let refused = request.into_transfer(&Caller::Service).expect_err("self transfer");
        assert_eq!(refused.code, ErrorCode::InvalidRequest);
    }

    #[test]
    fn a_person_moves_only_their_own_money_under_their_own_ids() {
        let alice =
            Caller::user(agora_core::UserName::parse("alice").unwrap(), agora_core::Role::User);
        let amount = |account: &str, id: Option<&str>| AmountRequest {
            account: account.into(),
            amount: 5,
            id: id.map(str::to_owned),
        };
        let transfer = |from: &str| TransferRequest {
            from: from.into(),
            to: "bob".into(),
            amount: 5,
            id: Some("t-1".into()),
        };
        let mine = amount("alice", Some("op-1")).into_deposit(&alice).unwrap();
        assert_eq!(mine.id.unwrap().as_str(), "alice/op-1", "recorded under her name");
        assert_eq!(mine.client_id.unwrap().as_str(), "op-1", "shown as she gave it");
        assert!(amount("alice", None).into_withdraw(&alice).unwrap().id.is_none());
        assert!(transfer("alice").into_transfer(&alice).is_ok());
        for refused in [
            amount("bob", None).into_deposit(&alice),
            amount("bob", None).into_withdraw(&alice),
            transfer("bob").into_transfer(&alice),
            amount("alice", None).into_deposit(&Caller::Anonymous),
        ] {
            let code = refused.expect_err("not hers").code;
            assert!(matches!(code, ErrorCode::Forbidden | ErrorCode::Unauthenticated), "{code}");
        }
        // A service moves whatever it names, under the id it gives.
        let service = transfer("bob").into_transfer(&Caller::Service);
        assert!(service.is_err(), "bob to bob");
        let paid = TransferRequest { to: "carol".into(), ..transfer("bob") };
        assert_eq!(paid.into_transfer(&Caller::Service).unwrap().id.unwrap().as_str(), "t-1");
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
