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
mod tests;
