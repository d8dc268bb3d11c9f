//! The bank's JSON payloads (`agora.bank.*`), converted into `agora-core` values with
//! `TryFrom` at the edge.

use agora_core::{AccountId, Amount, Balance, Operation, OperationId};
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
