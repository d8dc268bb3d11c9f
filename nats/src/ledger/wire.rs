//! The ledger's JSON payloads (`agora.ledger.*`, called by the bank).

use agora_core::ledger::{Balances, LedgerError, Operation, Posting, Request};
use agora_core::{AccountId, Amount, Asset, Balance, OperationId, UserName};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::error::ServiceError;
use crate::pattern;
mod locks;
pub use locks::*;

// ---------------------------------------------------------------------------------------------
// Operations (`agora.ledger.apply`, and the operations of `agora.bank.transfers`)
// ---------------------------------------------------------------------------------------------

/// What an operation does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OperationKind {
    Deposit,
    Withdraw,
    #[default]
    Transfer,
    /// A two-phase transfer's first phase: hold `amount` until posted, voided or expired.
    Pending,
    /// Move a pending transfer's amount (`amount`: part of it; the rest is released).
    Post,
    /// Release a pending transfer.
    Void,
}

/// One operation. Which fields it takes depends on `op` (default `transfer`):
/// `deposit`/`withdraw`: `account`, `amount`; `transfer`: `from`, `to`, `amount`; `pending`:
/// `from`, `to`, `amount`, `timeout_ms`, and an `id` (its handle); `post`: `pending_id` and
/// optionally `amount`; `void`: `pending_id`. `asset` (default `money`) applies to all but post
/// and void. `linked: true` ties it to the next operation: all of a chain or none.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OperationRequest {
    #[serde(default)]
    pub op: OperationKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(pattern::ACCOUNT))]
    pub account: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(pattern::ACCOUNT))]
    pub from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(pattern::ACCOUNT))]
    pub to: Option<String>,
    /// `money` (default) or a symbol such as `BTC`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(pattern::ASSET))]
    pub asset: Option<String>,
    /// Minor units (money) or units (an asset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub amount: Option<i64>,
    /// How long a pending transfer holds its amount before the ledger releases it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1000, max = 2_592_000_000u64))]
    pub timeout_ms: Option<u64>,
    /// The pending transfer (its `id`) a post or void finishes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(pattern::OPERATION_ID))]
    pub pending_id: Option<String>,
    /// The operation id: the same id again gets the first result, applied once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(pattern::OPERATION_ID))]
    pub id: Option<String>,
    /// Tie this operation to the next one (the last of a batch must not be linked).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub linked: bool,
    /// Set by the bank, never by a client: the person whose ids (and pending ids) these are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(skip)]
    pub scope: Option<String>,
}

/// `agora.ledger.apply`: operations applied in order, in one commit (see `agora_core::ledger`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplyRequest {
    pub operations: Vec<OperationRequest>,
    /// Include each applied operation's postings (balances after) in its result.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub detail: bool,
}

/// One balance an operation changed, as it is after.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PostingWire {
    pub account: String,
    pub asset: String,
    /// `deposit`, `withdraw`, `transfer_in|out`, `pending_in|out`, `post_in|out`,
    /// `void_in|out`, `expire_in|out`, `set`.
    pub kind: String,
    pub amount: i64,
    /// Posted balance after.
    pub balance: Balance,
    /// Held by pending transfers out of the account.
    pub pending: Balance,
    /// `balance - pending`: what the account may spend.
    pub available: Balance,
    /// On its way in by pending transfers.
    pub incoming: Balance,
    /// Commit time of the operation, ms since the Unix epoch (as its history entries have it).
    #[serde(default)]
    pub at: u64,
}

/// The result of one operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum OperationResult {
    Applied {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        postings: Option<Vec<PostingWire>>,
    },
    Failed {
        error: crate::error::ServiceError,
    },
}

/// Reply of `agora.ledger.apply` and `agora.bank.transfers`: one result per operation, in
/// order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApplyReply {
    pub results: Vec<OperationResult>,
    pub applied: usize,
    pub failed: usize,
}

/// What the ledger records with an applied operation that has an id: the operation (to tell
/// a retry from another use of the id) and its postings (to answer the retry the same way).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OperationRecord {
    pub op: OperationRequest,
    pub postings: Vec<PostingWire>,
}

/// `agora.ledger.history`: an account's entries in one asset, newest first.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HistoryRequest {
    #[schemars(pattern(pattern::ACCOUNT))]
    pub account: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(pattern::ASSET))]
    pub asset: Option<String>,
    /// Only entries at or after this time (ms since the Unix epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_ms: Option<u64>,
    /// Only entries before this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_ms: Option<u64>,
    /// Only entries older than this entry (`seq` of the last entry of the previous page).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<u64>,
    /// 1-1000, default 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub limit: Option<usize>,
}

/// One entry of an account's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct HistoryEntry {
    /// Increasing over the whole ledger; pass as `before` for the next page.
    pub seq: u64,
    pub kind: String,
    pub amount: i64,
    /// Posted balance after the entry.
    pub balance: Balance,
    pub pending: Balance,
    pub available: Balance,
    /// The operation id as its client gave it, if any.
    pub id: Option<String>,
    /// Commit time, ms since the Unix epoch.
    pub at: u64,
}

/// Reply of `agora.ledger.history`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct HistoryReply {
    pub account: String,
    pub asset: String,
    pub entries: Vec<HistoryEntry>,
    /// More entries match beyond this page.
    pub more: bool,
}

/// `agora.ledger.balance`: the balances of an account in one asset, now or at a past time.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BalanceRequest {
    #[schemars(pattern(pattern::ACCOUNT))]
    pub account: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(pattern::ASSET))]
    pub asset: Option<String>,
    /// The balance as it was at this time (ms since the Unix epoch): after every entry
    /// committed at or before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_ms: Option<u64>,
}

/// An account's balances in one asset: the reply of `agora.bank.balance`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct BalanceReply {
    pub account: String,
    /// Left out for money.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asset: Option<String>,
    /// Posted balance: what the account holds.
    pub balance: Balance,
    /// Held by its pending transfers out.
    pub pending: Balance,
    /// `balance - pending`: what it may spend.
    pub available: Balance,
    /// On its way in by pending transfers.
    pub incoming: Balance,
    /// For a past time: the time asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_ms: Option<u64>,
}

/// `agora.ledger.balances`: every asset an account has a balance in.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BalancesRequest {
    #[schemars(pattern(pattern::ACCOUNT))]
    pub account: String,
}

/// Reply of `agora.ledger.balances`: money first, then the assets by symbol (an asset whose
/// balances are all zero is left out).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct BalancesReply {
    pub account: String,
    pub balances: Vec<BalanceReply>,
}

/// `agora.ledger.supply`: how much of an asset the accounts hold, all of them or all but some.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SupplyRequest {
    #[schemars(pattern(pattern::ASSET))]
    pub asset: String,
    /// Accounts left out of the sums (at most 100).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub except: Vec<String>,
}

/// Reply of `agora.ledger.supply`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SupplyReply {
    pub asset: String,
    /// Accounts with a non-zero balance (posted or pending) in the asset.
    pub accounts: u64,
    /// Their posted balances, summed.
    pub balance: i128,
    /// What their pending transfers hold, summed.
    pub pending: i128,
}

/// `agora.ledger.operations`: the records of operation ids (as recorded: a person's ids are
/// `<person>/<id>`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OperationsRequest {
    pub ids: Vec<String>,
}

/// Reply of `agora.ledger.operations`: the records found (`{"op","postings"}`), in the order
/// asked; ids without a record (never applied, or pruned) are left out.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OperationsReply {
    pub operations: Vec<OperationEntry>,
}

/// Most ids one `agora.ledger.operations` request may name.
pub const LOOKUP_IDS_MAX: usize = 1_000;
/// Most accounts a supply request may leave out.
pub const SUPPLY_EXCEPT_MAX: usize = 100;

/// Most operations in one `agora.ledger.apply` or `agora.bank.transfers` request.
pub const OPERATIONS_MAX: usize = 8_190;
/// Most operations of a request that asks for `detail` (their postings must fit one reply).
pub const DETAIL_OPERATIONS_MAX: usize = 1_000;

fn required<'a, T>(value: &'a Option<T>, what: &str, op: &str) -> Result<&'a T, ServiceError> {
    value.as_ref().ok_or_else(|| ServiceError::invalid(format!("{op} needs {what}")))
}

fn refused_field(present: bool, what: &str, op: &str) -> Result<(), ServiceError> {
    if present {
        return Err(ServiceError::invalid(format!("{op} takes no {what}")));
    }
    Ok(())
}

impl OperationRequest {
    /// The ledger request: validated, with its ids (and the pending id it names) recorded under
    /// `scope` when the bank set one (`<person>/<id>`).
    pub fn to_request(&self) -> Result<Request, ServiceError> {
        let op = self.op_name();
        let scope = self.scope.as_deref().map(UserName::parse).transpose()?;
        let scoped = |id: &str| -> Result<OperationId, ServiceError> {
            let id = OperationId::parse(id)?;
            Ok(match &scope {
                Some(owner) => OperationId::scoped(owner, &id),
                None => OperationId::parse_recorded(id.as_str())?,
            })
        };
        let id = self.id.as_deref().map(scoped).transpose()?;
        let account = |name: &Option<String>, what| -> Result<AccountId, ServiceError> {
            Ok(AccountId::parse(required(name, what, op)?)?)
        };
        let asset = || -> Result<Asset, ServiceError> {
            Ok(self.asset.as_deref().map(Asset::parse).transpose()?.unwrap_or_default())
        };
        let amount = || -> Result<Amount, ServiceError> {
            Ok(Amount::parse(*required(&self.amount, "amount", op)?)?)
        };
        let operation = match self.op {
            OperationKind::Deposit | OperationKind::Withdraw => {
                refused_field(self.from.is_some() || self.to.is_some(), "from or to", op)?;
                refused_field(self.timeout_ms.is_some(), "timeout_ms", op)?;
                refused_field(self.pending_id.is_some(), "pending_id", op)?;
                let (account, asset, amount) =
                    (account(&self.account, "account")?, asset()?, amount()?);
                if self.op == OperationKind::Deposit {
                    Operation::Deposit { account, asset, amount }
                } else {
                    Operation::Withdraw { account, asset, amount }
                }
            }
            OperationKind::Transfer | OperationKind::Pending => {
                refused_field(self.account.is_some(), "account (use from and to)", op)?;
                refused_field(self.pending_id.is_some(), "pending_id", op)?;
                let (from, to) = (account(&self.from, "from")?, account(&self.to, "to")?);
                let (asset, amount) = (asset()?, amount()?);
                if self.op == OperationKind::Transfer {
                    refused_field(self.timeout_ms.is_some(), "timeout_ms", op)?;
                    Operation::transfer(from, to, asset, amount)?
                } else {
                    let timeout_ms = *required(&self.timeout_ms, "timeout_ms", op)?;
                    if id.is_none() {
                        return Err(LedgerError::PendingNeedsId.into());
                    }
                    Operation::pending(from, to, asset, amount, timeout_ms)?
                }
            }
            OperationKind::Post | OperationKind::Void => {
                refused_field(
                    self.account.is_some() || self.from.is_some() || self.to.is_some(),
                    "account, from or to (the pending transfer has them)",
                    op,
                )?;
                refused_field(self.asset.is_some(), "asset", op)?;
                refused_field(self.timeout_ms.is_some(), "timeout_ms", op)?;
                let pending = scoped(required(&self.pending_id, "pending_id", op)?)?;
                if self.op == OperationKind::Post {
                    let amount = self.amount.map(Amount::parse).transpose()?;
                    Operation::Post { pending, amount }
                } else {
                    refused_field(self.amount.is_some(), "amount", op)?;
                    Operation::Void { pending }
                }
            }
        };
        Ok(Request { id, operation, linked: self.linked })
    }

    fn op_name(&self) -> &'static str {
        match self.op {
            OperationKind::Deposit => "deposit",
            OperationKind::Withdraw => "withdraw",
            OperationKind::Transfer => "transfer",
            OperationKind::Pending => "pending",
            OperationKind::Post => "post",
            OperationKind::Void => "void",
        }
    }
}

/// An operation as recorded with its id (no id, scope or link: what it does).
impl From<&Operation> for OperationRequest {
    fn from(operation: &Operation) -> Self {
        let asset = |asset: &Asset| Some(asset.to_string());
        match operation {
            Operation::Deposit { account, asset: a, amount } => Self {
                op: OperationKind::Deposit,
                account: Some(account.to_string()),
                asset: asset(a),
                amount: Some(amount.get()),
                ..Self::default()
            },
            Operation::Withdraw { account, asset: a, amount } => Self {
                op: OperationKind::Withdraw,
                account: Some(account.to_string()),
                asset: asset(a),
                amount: Some(amount.get()),
                ..Self::default()
            },
            Operation::Transfer { from, to, asset: a, amount } => Self {
                op: OperationKind::Transfer,
                from: Some(from.to_string()),
                to: Some(to.to_string()),
                asset: asset(a),
                amount: Some(amount.get()),
                ..Self::default()
            },
            Operation::Pending { from, to, asset: a, amount, timeout_ms } => Self {
                op: OperationKind::Pending,
                from: Some(from.to_string()),
                to: Some(to.to_string()),
                asset: asset(a),
                amount: Some(amount.get()),
                timeout_ms: Some(*timeout_ms),
                ..Self::default()
            },
            Operation::Post { pending, amount } => Self {
                op: OperationKind::Post,
                pending_id: Some(pending.to_string()),
                amount: amount.map(Amount::get),
                ..Self::default()
            },
            Operation::Void { pending } => Self {
                op: OperationKind::Void,
                pending_id: Some(pending.to_string()),
                ..Self::default()
            },
        }
    }
}

impl PostingWire {
    /// A posting committed at `at`.
    pub fn at(posting: &Posting, at: u64) -> Self {
        let (account, asset) = (posting.account.to_string(), posting.asset.to_string());
        let kind = posting.kind.as_str().to_owned();
        Self::new(account, asset, kind, posting.amount, posting.balances, at)
    }

    /// A posting as its history entry holds it: the balances after it, its commit time.
    pub fn new(
        account: String,
        asset: String,
        kind: String,
        amount: i64,
        balances: Balances,
        at: u64,
    ) -> Self {
        Self {
            account,
            asset,
            kind,
            amount,
            balance: balances.posted,
            pending: balances.debits_pending,
            available: balances.available(),
            incoming: balances.credits_pending,
            at,
        }
    }
}

impl BalanceReply {
    pub fn new(account: &AccountId, asset: &Asset, balances: Balances) -> Self {
        Self {
            account: account.to_string(),
            asset: (!asset.is_money()).then(|| asset.to_string()),
            balance: balances.posted,
            pending: balances.debits_pending,
            available: balances.available(),
            incoming: balances.credits_pending,
            at_ms: None,
        }
    }
}
