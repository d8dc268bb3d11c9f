//! Ledger (internal, called by the bank).

use super::*;

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
    /// The asset (default money).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asset: Option<String>,
}

/// Reply of `agora.ledger.batch.get`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchGetReply {
    pub balances: Vec<BalanceReply>,
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
    /// The bank events of the batch: in the ledger's replicated log with the commit, then
    /// published on `agora.bank.events.<account>` (and kept in the events stream).
    #[serde(default)]
    pub events: Vec<CommitEvent>,
}

/// One event of a batch commit.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommitEvent {
    pub account: String,
    pub event: Box<RawValue>,
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
