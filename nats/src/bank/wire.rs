//! The bank's JSON payloads (`agora.bank.*`), converted into `agora-core` values with
//! `TryFrom` at the edge.

use agora_core::{AccountId, Balance, Caller};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::{ErrorCode, ServiceError};
pub use crate::ledger::wire::{OperationKind, OperationRequest};
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

/// `agora.bank.balance`: the balance now, or (`at_ms`) as it was at a past time.
pub use crate::ledger::wire::BalanceRequest;
/// `agora.bank.history`: an account's entries, newest first.
pub use crate::ledger::wire::HistoryRequest;

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
    /// The asset, left out for money.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asset: Option<String>,
    pub amount: i64,
    pub balance: Balance,
    pub id: Option<String>,
    /// Commit time, milliseconds since the Unix epoch.
    pub at: u64,
}

/// `agora.bank.transfers`: up to 8,190 operations in one request (see
/// [`OperationRequest`]), one result each.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TransfersRequest {
    #[schemars(length(min = 1, max = 8190))]
    pub operations: Vec<OperationRequest>,
    /// Include each applied operation's postings (balances after); at most 1,000 operations.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub detail: bool,
}

/// The account `caller` may move money out of (or into): their own, or any for a service.
fn own_account(caller: &Caller, named: Option<&str>, what: &str) -> Result<(), ServiceError> {
    let Some(named) = named else {
        return Err(ServiceError::invalid(format!("{what} is required")));
    };
    // The name's shape first: a malformed one is bad input, whoever sends it.
    AccountId::parse(named)?;
    caller.acting_on("account", Some(named))?;
    Ok(())
}

impl OperationRequest {
    /// This operation as `caller` may send it to the ledger: a person moves only their own
    /// money and units out (and deposits or withdraws only money), under ids (and pending ids)
    /// recorded as theirs; a service moves anything.
    pub fn authorize(mut self, caller: &Caller) -> Result<Self, ServiceError> {
        if self.scope.is_some() {
            return Err(ServiceError::invalid("unknown field `scope`"));
        }
        caller.signed_in("moving money")?;
        let Some(person) = caller.name() else { return Ok(self) };
        match self.op {
            OperationKind::Deposit | OperationKind::Withdraw => {
                own_account(caller, self.account.as_deref(), "account")?;
                if self.asset.as_deref().is_some_and(|asset| asset != agora_core::account::MONEY) {
                    return Err(ServiceError::new(
                        ErrorCode::Forbidden,
                        "units of an asset enter and leave the ledger through its service \
                         (the coin exchange), not a person",
                    ));
                }
            }
            OperationKind::Transfer | OperationKind::Pending => {
                own_account(caller, self.from.as_deref(), "from")?;
            }
            OperationKind::Post | OperationKind::Void => {}
        }
        self.scope = Some(person.to_string());
        Ok(self)
    }
}

impl AmountRequest {
    fn operation(self, op: OperationKind) -> OperationRequest {
        OperationRequest {
            op,
            account: Some(self.account),
            amount: Some(self.amount),
            id: self.id,
            ..OperationRequest::default()
        }
    }

    pub fn into_deposit(self, caller: &Caller) -> Result<OperationRequest, ServiceError> {
        let operation = self.operation(OperationKind::Deposit);
        let operation = operation.authorize(caller)?;
        operation.to_request()?;
        Ok(operation)
    }

    pub fn into_withdraw(self, caller: &Caller) -> Result<OperationRequest, ServiceError> {
        let operation = self.operation(OperationKind::Withdraw);
        let operation = operation.authorize(caller)?;
        operation.to_request()?;
        Ok(operation)
    }
}

impl TransferRequest {
    /// A transfer out of `caller`'s own account (any, for a service), to anyone's.
    pub fn into_transfer(self, caller: &Caller) -> Result<OperationRequest, ServiceError> {
        let operation = OperationRequest {
            op: OperationKind::Transfer,
            from: Some(self.from),
            to: Some(self.to),
            amount: Some(self.amount),
            id: self.id,
            ..OperationRequest::default()
        };
        let operation = operation.authorize(caller)?;
        operation.to_request()?;
        Ok(operation)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let request = mine.to_request().unwrap();
        assert_eq!(request.id.unwrap().as_str(), "alice/op-1", "recorded under her name");
        assert_eq!(mine.id.as_deref(), Some("op-1"), "shown as she gave it");
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
        let paid = paid.into_transfer(&Caller::Service).unwrap().to_request().unwrap();
        assert_eq!(paid.id.unwrap().as_str(), "t-1");
    }

    #[test]
    fn every_operation_kind_is_authorized_for_its_caller() {
        let alice =
            Caller::user(agora_core::UserName::parse("alice").unwrap(), agora_core::Role::User);
        let op = |json: serde_json::Value| -> OperationRequest {
            serde_json::from_value(json).expect("shape")
        };
        let allowed = [
            op(serde_json::json!({"op":"deposit","account":"alice","amount":1})),
            op(serde_json::json!({"op":"withdraw","account":"alice","amount":1,"asset":"money"})),
            op(serde_json::json!({"from":"alice","to":"bob","amount":1,"asset":"BTC"})),
            op(
                serde_json::json!({"op":"pending","from":"alice","to":"bob","amount":1,"timeout_ms":5000,"id":"h"}),
            ),
            op(serde_json::json!({"op":"post","pending_id":"h"})),
            op(serde_json::json!({"op":"void","pending_id":"h"})),
        ];
        for operation in allowed {
            let authorized = operation.clone().authorize(&alice).expect("hers");
            assert_eq!(authorized.scope.as_deref(), Some("alice"));
            let request = authorized.to_request().expect("valid");
            if let Some(pending) = request.operation.pending_id() {
                assert_eq!(pending.as_str(), "alice/h", "she finishes only her own holds");
            }
            assert_eq!(operation.authorize(&Caller::Service).expect("service").scope, None);
        }
        let refused = [
            op(serde_json::json!({"op":"deposit","account":"bob","amount":1})),
            op(serde_json::json!({"op":"deposit","account":"alice","amount":1,"asset":"BTC"})),
            op(serde_json::json!({"op":"withdraw","account":"alice","amount":1,"asset":"BTC"})),
            op(serde_json::json!({"from":"bob","to":"alice","amount":1})),
            op(
                serde_json::json!({"op":"pending","from":"bob","to":"alice","amount":1,"timeout_ms":5000,"id":"h"}),
            ),
            op(serde_json::json!({"op":"post","pending_id":"h","scope":"bob"})),
        ];
        for operation in refused {
            let code = operation.clone().authorize(&alice).expect_err("not hers").code;
            assert!(
                matches!(code, ErrorCode::Forbidden | ErrorCode::InvalidRequest),
                "{operation:?}"
            );
            let code = operation.authorize(&Caller::Anonymous).expect_err("anonymous").code;
            assert!(matches!(code, ErrorCode::Unauthenticated | ErrorCode::InvalidRequest));
        }
    }
}
