//! The ledger's owner state (see `crate::owner`): the lock table mirrored in the store, the
//! operation index, and a cache of balances; what a group of requests does to the store.
//!
//! Each command is validated completely against the in-memory lock table before it writes
//! (`agora_core::ledger::check_commit` for commits), so a refused command changes nothing. If
//! SQLite itself fails, the group is rolled back, every command in it gets `unavailable`, and
//! the lock table, the index and the cache are reloaded from disk.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use agora_core::{AccountId, Balance, Lock, LockTable, OperationId, ledger};
use async_nats::service::Request;
use bytes::Bytes;
use rusqlite::{Connection, Transaction};
use serde_json::value::RawValue;

use super::store::{self, LockSetRow, Operations};
use super::wire::{
    BatchCommitReply, BatchGetReply, BatchLockReply, LockGrant, LockInfo, LocksReply,
    OperationEntry, UnlockReply,
};
use super::{LedgerStats, PRUNE_PER_SWEEP_MAX};
use crate::bank::wire::AccountBalance;
use crate::error::ServiceError;
use crate::owner::{GroupReport, State};
use crate::replica::Event;
use crate::service::{Replier, encode};
use crate::sqlite::StoreError;

/// A decoded, validated ledger request.
#[derive(Debug)]
pub enum Action {
    Lock {
        accounts: Vec<AccountId>,
        owner: String,
        lease_ms: u64,
        ids: Vec<String>,
        batch: bool,
    },
    Unlock {
        account: AccountId,
        owner: String,
        token: u64,
    },
    Get {
        accounts: Vec<AccountId>,
        owner: Option<String>,
        batch: bool,
    },
    Commit {
        owner: String,
        writes: Vec<(AccountId, u64, Balance)>,
        operations: Vec<(OperationId, String)>,
        release: Vec<(AccountId, u64)>,
        single: bool,
        /// Bank events published once the commit is in the log.
        events: Vec<(AccountId, Bytes)>,
    },
    Locks {
        limit: usize,
    },
    Sweep,
}

impl Action {
    fn durable(&self) -> bool {
        matches!(self, Self::Commit { .. })
    }
}

/// A request (with where its reply goes) or internal work.
#[derive(Debug)]
pub struct Command {
    pub action: Action,
    pub reply: Option<(Request, Replier)>,
}

type Reply = (Request, Replier, Result<Bytes, ServiceError>);

/// Most balances the ledger keeps in memory. The ledger is the database's only user, so the
/// cache is always coherent; beyond this bound an arbitrary entry is evicted.
pub const BALANCE_CACHE_ENTRIES_MAX: usize = 1_000_000;

/// Balances read or written recently, so a batch does not re-read them from SQLite.
#[derive(Debug, Default)]
struct BalanceCache {
    balances: HashMap<AccountId, Balance>,
}

impl BalanceCache {
    fn get(&self, account: &AccountId) -> Option<Balance> {
        self.balances.get(account).copied()
    }

    fn put(&mut self, account: &AccountId, balance: Balance) {
        if self.balances.len() >= BALANCE_CACHE_ENTRIES_MAX && !self.balances.contains_key(account)
        {
            let evicted = self.balances.keys().next().cloned();
            if let Some(evicted) = evicted {
                self.balances.remove(&evicted);
            }
        }
        self.balances.insert(account.clone(), balance);
    }
}

/// Which stored lock set each lock belongs to (see `store`: one row per lock request).
#[derive(Debug, Default)]
struct LockSets {
    next_set_id: i64,
    members: HashMap<i64, BTreeSet<AccountId>>,
    set_of: HashMap<AccountId, i64>,
}

impl LockSets {
    /// Records a new set; returns its id and the older sets that lost members to it.
    fn create(&mut self, accounts: &[AccountId]) -> (i64, BTreeSet<i64>) {
        let set_id = self.next_set_id;
        let touched = self.insert(set_id, accounts);
        (set_id, touched)
    }

    /// Records set `set_id` (new, or read back from storage); later sets get higher ids.
    /// Returns the older sets that lost members to it.
    fn insert(&mut self, set_id: i64, accounts: &[AccountId]) -> BTreeSet<i64> {
        self.next_set_id = self.next_set_id.max(set_id + 1);
        let mut touched = BTreeSet::new();
        for account in accounts {
            if let Some(old) = self.set_of.insert(account.clone(), set_id) {
                if let Some(members) = self.members.get_mut(&old) {
                    members.remove(account);
                }
                touched.insert(old);
            }
        }
        self.members.insert(set_id, accounts.iter().cloned().collect());
        touched
    }

    /// Forgets one lock; returns the set it belonged to.
    fn remove(&mut self, account: &AccountId) -> Option<i64> {
        let set_id = self.set_of.remove(account)?;
        if let Some(members) = self.members.get_mut(&set_id) {
            members.remove(account);
        }
        Some(set_id)
    }
}

/// The ledger's state, owned by its owner thread.
pub struct Ledger {
    boot_epoch: u64,
    locks: LockTable,
    sets: LockSets,
    operations: Operations,
    balances: BalanceCache,
    operation_retention_ms: u64,
    operation_records_max: usize,
    stats: Arc<Mutex<LedgerStats>>,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger").field("locks", &self.locks.len()).finish_non_exhaustive()
    }
}

impl Ledger {
    /// The state as the store has it.
    pub fn load(
        conn: &Connection,
        boot_epoch: u64,
        operation_retention_ms: u64,
        operation_records_max: usize,
        stats: Arc<Mutex<LedgerStats>>,
    ) -> Result<Self, StoreError> {
        let mut ledger = Self {
            boot_epoch,
            locks: LockTable::new(store::first_token(boot_epoch)),
            sets: LockSets::default(),
            operations: Operations::default(),
            balances: BalanceCache::default(),
            operation_retention_ms,
            operation_records_max,
            stats,
        };
        ledger.reload(conn)?;
        Ok(ledger)
    }

    /// (Re)builds the lock table, the lock sets and the operation index from the store, and
    /// empties the balance cache.
    fn reload(&mut self, conn: &Connection) -> Result<(), StoreError> {
        let mut locks = LockTable::new(store::first_token(self.boot_epoch));
        let mut sets = LockSets::default();
        for row in store::load_lock_sets(conn)? {
            let accounts: Vec<AccountId> = row.grants.iter().map(|(a, _)| a.clone()).collect();
            // Keep the stored id so later rewrites hit the same row.
            sets.insert(row.set_id, &accounts);
            for (account, token) in row.grants {
                let lock =
                    Lock { owner: row.owner.clone(), token, expires_at_ms: row.expires_at_ms };
                locks.restore(account, lock);
            }
        }
        // Tokens keep increasing past every lock restored or handed out before.
        locks.raise_next_token(self.locks.next_token());
        (self.locks, self.sets) = (locks, sets);
        self.operations = Operations::load(conn)?;
        self.balances = BalanceCache::default();
        Ok(())
    }

    fn balance(
        &mut self,
        tx: &Transaction<'_>,
        account: &AccountId,
    ) -> Result<Balance, StoreError> {
        if let Some(balance) = self.balances.get(account) {
            return Ok(balance);
        }
        let balance = store::balance(tx, account)?;
        self.balances.put(account, balance);
        Ok(balance)
    }

    /// Rewrites (or deletes, once empty) the stored rows of the given lock sets.
    fn persist_sets(
        &mut self,
        tx: &Transaction<'_>,
        set_ids: impl IntoIterator<Item = i64>,
    ) -> Result<(), StoreError> {
        for set_id in set_ids {
            let members = self.sets.members.get(&set_id).cloned().unwrap_or_default();
            let mut owner = None;
            let mut grants = Vec::with_capacity(members.len());
            for account in members {
                if let Some(lock) = self.locks.get(&account) {
                    owner = Some((lock.owner.clone(), lock.expires_at_ms));
                    grants.push((account, lock.token));
                }
            }
            match owner {
                Some((owner, expires_at_ms)) => {
                    store::put_lock_set(tx, &LockSetRow { set_id, owner, expires_at_ms, grants })?
                }
                None => {
                    self.sets.members.remove(&set_id);
                    store::delete_lock_set(tx, set_id)?;
                }
            }
        }
        Ok(())
    }

    /// Releases locks already checked with `check_release`, and persists the change.
    fn release(
        &mut self,
        tx: &Transaction<'_>,
        now_ms: u64,
        owner: &str,
        release: &[(AccountId, u64)],
    ) -> Result<(), StoreError> {
        let mut touched = BTreeSet::new();
        for (account, token) in release {
            if self.locks.release(now_ms, owner, account, *token).is_ok() {
                touched.extend(self.sets.remove(account));
            }
        }
        self.persist_sets(tx, touched)
    }

    /// Executes one command inside the open transaction. The outer `Err` is a storage failure
    /// (fails the whole group); the inner `Err` is this command's refusal (changes nothing).
    fn execute(
        &mut self,
        tx: &Transaction<'_>,
        now_ms: u64,
        action: &Action,
    ) -> Result<Result<Bytes, ServiceError>, StoreError> {
        match action {
            Action::Lock { accounts, owner, lease_ms, ids, batch } => {
                let grants = match self.locks.lock_many(now_ms, owner, accounts, *lease_ms) {
                    Ok(grants) => grants,
                    Err(error) => return Ok(Err(error.into())),
                };
                let (set_id, touched) = self.sets.create(accounts);
                self.persist_sets(tx, touched.into_iter().chain([set_id]))?;
                let mut locks = Vec::with_capacity(grants.len());
                for grant in grants {
                    locks.push(LockGrant {
                        balance: self.balance(tx, &grant.account)?,
                        account: grant.account.to_string(),
                        token: grant.token,
                        expires_at_ms: grant.expires_at_ms,
                    });
                }
                if !*batch {
                    return Ok(encode(&locks[0]));
                }
                let mut operations = Vec::new();
                for id in ids.iter().collect::<BTreeSet<_>>() {
                    if let Some(record) = self.operations.get(tx, id)? {
                        let record = RawValue::from_string(record)
                            .map_err(|e| StoreError::Corrupt(format!("record {id}: {e}")))?;
                        operations.push(OperationEntry { id: id.clone(), record });
                    }
                }
                Ok(encode(&BatchLockReply { locks, operations }))
            }
            Action::Unlock { account, owner, token } => {
                if let Err(error) = self.locks.check_release(now_ms, owner, account, *token) {
                    return Ok(Err(error.into()));
                }
                self.release(tx, now_ms, owner, &[(account.clone(), *token)])?;
                Ok(encode(&UnlockReply { account: account.to_string(), released: true }))
            }
            Action::Get { accounts, owner, batch } => {
                let mut balances = Vec::with_capacity(accounts.len());
                let mut locked = Vec::new();
                for account in accounts {
                    match self.locks.check_read(now_ms, owner.as_deref(), account) {
                        Ok(()) => balances.push(AccountBalance {
                            account: account.to_string(),
                            balance: self.balance(tx, account)?,
                        }),
                        Err(error) if !*batch => return Ok(Err(error.into())),
                        Err(_) => locked.push(account.to_string()),
                    }
                }
                if *batch {
                    Ok(encode(&BatchGetReply { balances, locked }))
                } else {
                    Ok(encode(&balances[0]))
                }
            }
            Action::Commit { owner, writes, operations, release, single, .. } => {
                let ids: Vec<OperationId> = operations.iter().map(|(id, _)| id.clone()).collect();
                let mut lookup_failed = None;
                let checked =
                    ledger::check_commit(&self.locks, now_ms, owner, writes, &ids, release, |id| {
                        match self.operations.contains(tx, id.as_str()) {
                            Ok(known) => known,
                            Err(error) => {
                                lookup_failed = Some(error);
                                true
                            }
                        }
                    });
                if let Some(error) = lookup_failed {
                    return Err(error);
                }
                if let Err(error) = checked {
                    return Ok(Err(error.into()));
                }
                for (id, record) in operations {
                    if !self.operations.insert(tx, id.as_str(), record, now_ms)? {
                        // check_commit saw the id free a moment ago in this transaction.
                        return Err(StoreError::Corrupt(format!("operation id {id} appeared")));
                    }
                }
                for (account, _, balance) in writes {
                    store::set_balance(tx, account, *balance)?;
                    self.balances.put(account, *balance);
                }
                self.release(tx, now_ms, owner, release)?;
                if *single {
                    let (account, _, balance) = &writes[0];
                    return Ok(encode(&AccountBalance {
                        account: account.to_string(),
                        balance: *balance,
                    }));
                }
                Ok(encode(&BatchCommitReply {
                    written: writes.len(),
                    recorded: operations.len(),
                    released: release.len(),
                }))
            }
            Action::Locks { limit } => {
                let live: Vec<LockInfo> = self
                    .locks
                    .iter()
                    .filter(|(account, _)| self.locks.holder(now_ms, account).is_some())
                    .map(|(account, lock)| LockInfo {
                        account: account.to_string(),
                        owner: lock.owner.clone(),
                        token: lock.token,
                        expires_at_ms: lock.expires_at_ms,
                    })
                    .collect();
                let total = live.len();
                let locks = live.into_iter().take(*limit).collect();
                Ok(encode(&LocksReply { locks, total }))
            }
            Action::Sweep => {
                let mut touched = BTreeSet::new();
                for account in self.locks.expire(now_ms) {
                    touched.extend(self.sets.remove(&account));
                }
                self.persist_sets(tx, touched)?;
                let horizon = now_ms.saturating_sub(self.operation_retention_ms);
                self.operations.prune(
                    tx,
                    horizon,
                    self.operation_records_max,
                    PRUNE_PER_SWEEP_MAX,
                )?;
                Ok(Ok(Bytes::new()))
            }
        }
    }
}

/// What a group produced: one reply per request, sent once it committed.
#[derive(Debug, Default)]
pub struct Outbox {
    replies: Vec<Reply>,
    events: Vec<Event>,
}

impl State for Ledger {
    type Envelope = Command;
    type Outbox = Outbox;

    fn apply(
        &mut self,
        tx: &Transaction<'_>,
        now_ms: u64,
        command: Command,
        out: &mut Outbox,
    ) -> Result<(), StoreError> {
        let Command { action, reply } = command;
        let result = self.execute(tx, now_ms, &action)?;
        if result.is_ok()
            && let Action::Commit { events, .. } = action
        {
            out.events.extend(events.into_iter().map(|(account, payload)| Event {
                subject: crate::subjects::bank::events(&account),
                payload,
            }));
        }
        if let Some((request, replier)) = reply {
            out.replies.push((request, replier, result));
        }
        Ok(())
    }

    fn durable_events(&mut self, out: &mut Outbox) -> Vec<Event> {
        std::mem::take(&mut out.events)
    }

    /// A new active ledger starts a new fencing epoch (in the log), so its tokens are above
    /// every token any earlier instance handed out.
    /// Locks are leases and are not replicated: a new active ledger starts with none (and
    /// drops those its view may hold from an earlier term), so a bank holding one from before
    /// gets `stale_token` and locks again. Its new epoch keeps every token above every earlier
    /// one.
    fn promoted(&mut self, tx: &Transaction<'_>, _now_ms: u64) -> Result<(), StoreError> {
        let epoch = store::bump_boot_epoch(tx)?;
        store::delete_all_lock_sets(tx)?;
        self.boot_epoch = epoch;
        let mut locks = LockTable::new(store::first_token(epoch));
        locks.raise_next_token(self.locks.next_token());
        self.locks = locks;
        self.sets = LockSets::default();
        tracing::info!(epoch, "ledger fencing epoch");
        Ok(())
    }

    fn volatile_tables(&self) -> &'static [&'static str] {
        &[store::LOCK_SETS_TABLE]
    }

    /// Balance writes and operation records are fsynced before their replies; lock-only
    /// groups are not (a lost lock is an expired one: tokens still increase, see `store`).
    fn durable(&self, command: &Command) -> bool {
        command.action.durable()
    }

    fn tick(&mut self, _now_ms: u64) -> Vec<Command> {
        vec![Command { action: Action::Sweep, reply: None }]
    }

    fn rolled_back(&mut self, conn: &Connection, error: &StoreError, out: &mut Outbox) {
        if let Ok(mut stats) = self.stats.lock() {
            stats.storage_errors += 1;
        }
        if let Err(error) = self.reload(conn) {
            tracing::error!(%error, "cannot reload the ledger's state");
        }
        let error = storage_failed(error);
        out.events.clear();
        out.replies.iter_mut().for_each(|(_, _, result)| *result = Err(error.clone()));
    }

    async fn deliver(&mut self, _now_ms: u64, out: Outbox) {
        if out.replies.is_empty() {
            return;
        }
        for (request, replier, result) in out.replies {
            replier.reply_bytes(&request, result).await;
        }
    }

    fn after_group(&mut self, report: &GroupReport) {
        if let Ok(mut stats) = self.stats.lock() {
            stats.transactions += 1;
            stats.commands += report.envelopes as u64;
            stats.largest_group = stats.largest_group.max(report.envelopes);
            stats.locks_held = self.locks.len();
        }
        tracing::debug!(
            size = report.envelopes,
            durable = report.durable,
            elapsed_us = report.elapsed.as_micros() as u64,
            "group done"
        );
    }
}

/// What a request gets when the ledger's storage failed.
fn storage_failed(error: &StoreError) -> ServiceError {
    ServiceError::new(
        crate::error::ErrorCode::Unavailable,
        format!("ledger storage failed: {error}"),
    )
}
