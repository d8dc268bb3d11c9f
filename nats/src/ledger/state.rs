//! The ledger's owner state (see `crate::owner`): the lock table mirrored in the store, the
//! operation index, and a cache of balances; what a group of requests does to the store.
//!
//! Each command is validated completely against the in-memory lock table before it writes
//! (`agora_core::ledger::check_commit` for commits), so a refused command changes nothing. If
//! SQLite itself fails, the group is rolled back, every command in it gets `unavailable`, and
//! the lock table, the index and the cache are reloaded from disk.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use agora_core::ledger::book::{self, Key, Outcome, Stored};
use agora_core::ledger::{Balances, Book, EntryKind, Operation, Posting, Request as LedgerRequest};
use agora_core::{AccountId, Asset, Balance, Lock, LockTable, OperationId, ledger};
use async_nats::service::Request;
use bytes::Bytes;
use rusqlite::{Connection, Transaction};
use serde_json::value::RawValue;

use super::store::{self, HistoryQuery, LockSetRow, Operations};
use super::wire::{
    ApplyReply, BalanceReply, BalancesReply, BatchCommitReply, BatchGetReply, BatchLockReply,
    HistoryEntry, HistoryReply, LockGrant, LockInfo, LocksReply, OperationEntry, OperationRecord,
    OperationRequest, OperationResult, OperationsReply, PostingWire, SupplyReply, UnlockReply,
};
use super::{EXPIRE_PER_TICK_MAX, LedgerStats, PENDING_TRANSFERS_MAX, PRUNE_PER_SWEEP_MAX};
use crate::bank::wire::{AccountBalance, BankEvent};
use crate::error::ServiceError;
use crate::owner::{GroupReport, State};
use crate::replica::Event;
use crate::service::{Replier, encode};
use crate::sqlite::StoreError;
mod apply;
mod execute;

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
        asset: Asset,
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
    /// Operations applied in order (`agora_core::ledger::apply_batch`); `shown` is each one's
    /// id as its client gave it (what history and events show).
    Apply {
        requests: Vec<LedgerRequest>,
        shown: Vec<Option<String>>,
        detail: bool,
    },
    History(HistoryQuery),
    /// Every asset of an account.
    Balances(AccountId),
    /// The sums of an asset over the accounts, but `except`.
    Supply {
        asset: Asset,
        except: Vec<AccountId>,
    },
    /// The records of operation ids.
    Operations(Vec<String>),
    Balance {
        key: Key,
        at_ms: Option<u64>,
    },
    Sweep,
    /// Releases the pending transfers that are due.
    Expire,
}

impl Action {
    fn durable(&self) -> bool {
        matches!(self, Self::Commit { .. } | Self::Apply { .. } | Self::Expire)
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
/// book is always coherent; beyond this bound it forgets the balances it holds (between
/// groups) and reads them again as needed.
pub const BALANCE_CACHE_ENTRIES_MAX: usize = 1_000_000;
/// Finished pending transfers the book may hold (read back when named) before it forgets them.
const FINISHED_HELD_MAX: usize = 100_000;

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
    /// Balances and pending transfers: the ledger's state machine over a cache of the store.
    book: Book,
    /// The newest history time: entries are stamped with no earlier time (clocks may differ
    /// across a failover).
    last_at_ms: u64,
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
            book: Book::new(PENDING_TRANSFERS_MAX),
            last_at_ms: 0,
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
        let mut book = Book::new(PENDING_TRANSFERS_MAX);
        for (id, transfer) in store::open_pending_transfers(conn)? {
            for key in <[Key; 2]>::from(transfer.keys()) {
                book.load_balances(key.clone(), store::balances(conn, &key)?);
            }
            book.load_pending(id, transfer);
        }
        self.book = book;
        self.last_at_ms = store::last_entry_at(conn)?;
        Ok(())
    }

    /// The balances of `key`, from the book or the store.
    fn balances(&mut self, conn: &Connection, key: &Key) -> Result<Balances, StoreError> {
        if let Some(balances) = self.book.balances(key) {
            return Ok(balances);
        }
        let balances = store::balances(conn, key)?;
        self.book.load_balances(key.clone(), balances);
        Ok(balances)
    }

    /// The money balance of an account.
    fn balance(&mut self, conn: &Connection, account: &AccountId) -> Result<Balance, StoreError> {
        Ok(self.balances(conn, &(account.clone(), Asset::money()))?.posted)
    }

    /// Loads into the book what `requests` touch: balances, and the pending transfers they
    /// name (or create: an id still held by a pending transfer is not free).
    fn load_for(
        &mut self,
        conn: &Connection,
        requests: &[LedgerRequest],
    ) -> Result<(), StoreError> {
        for request in requests {
            let pending = match (&request.operation, &request.id) {
                (Operation::Pending { .. }, Some(id)) => Some(id),
                (operation, _) => operation.pending_id(),
            };
            if let Some(id) = pending
                && self.book.pending(id).is_none()
                && let Some(transfer) = store::pending_transfer(conn, id)?
            {
                self.book.load_pending(id.clone(), transfer);
            }
            for key in self.touched(request) {
                self.balances(conn, &key)?;
            }
        }
        Ok(())
    }

    /// The balances a request touches: its own, and those of the pending transfer it
    /// finishes (once that is in the book).
    fn touched(&self, request: &LedgerRequest) -> Vec<Key> {
        let mut keys = request.operation.keys();
        if let Some(transfer) = request.operation.pending_id().and_then(|id| self.book.pending(id))
        {
            keys.extend(<[Key; 2]>::from(transfer.keys()));
        }
        keys
    }

    /// What the store recorded for the requests' ids: the operation and its postings.
    fn recorded(
        &self,
        conn: &Connection,
        requests: &[LedgerRequest],
    ) -> Result<HashMap<OperationId, Stored<Vec<PostingWire>>>, StoreError> {
        let mut recorded = HashMap::new();
        for id in requests.iter().filter_map(|r| r.id.as_ref()) {
            if recorded.contains_key(id) {
                continue;
            }
            let Some(record) = self.operations.get(conn, id.as_str())? else { continue };
            let record = operation_record(conn, id.as_str(), record)?;
            // Recorded without its id (a pending transfer's is required: give it back).
            let op = OperationRequest { id: Some(id.to_string()), ..record.op };
            let operation = op.to_request().map_err(|e| unreadable(id.as_str(), &e))?.operation;
            recorded.insert(id.clone(), (operation, record.postings));
        }
        Ok(recorded)
    }

    /// The records of `ids` as clients read them (`agora.ledger.operations`): those found, in
    /// order.
    fn operation_entries(
        &self,
        conn: &Connection,
        ids: impl IntoIterator<Item = impl AsRef<str>>,
    ) -> Result<Vec<OperationEntry>, StoreError> {
        let mut entries = Vec::new();
        for id in ids {
            let id = id.as_ref();
            let Some(record) = self.operations.get(conn, id)? else { continue };
            let text = match record.entries {
                None => record.text,
                Some(_) => serde_json::to_string(&operation_record(conn, id, record)?)
                    .map_err(|e| unreadable(id, &e))?,
            };
            let record = RawValue::from_string(text).map_err(|e| unreadable(id, &e))?;
            entries.push(OperationEntry { id: id.to_owned(), record });
        }
        Ok(entries)
    }

    /// The time a group's entries carry: now, or the last one if the clock went back.
    fn stamp(&mut self, now_ms: u64) -> u64 {
        self.last_at_ms = self.last_at_ms.max(now_ms);
        self.last_at_ms
    }

    /// Writes what the book changed, and one history entry and one event per posting; returns
    /// the `seq` of each slice's first entry (its entries are consecutive).
    fn write_changes(
        &mut self,
        tx: &Transaction<'_>,
        now_ms: u64,
        postings: &[(&[Posting], Option<&str>)],
        events: &mut Vec<Event>,
    ) -> Result<Vec<u64>, StoreError> {
        let (balances, pendings) = self.book.take_changes();
        for (key, balances) in &balances {
            store::set_balances(tx, key, balances)?;
        }
        for (id, transfer) in &pendings {
            store::put_pending_transfer(tx, id, transfer, now_ms)?;
        }
        let at = self.stamp(now_ms);
        let mut firsts = Vec::with_capacity(postings.len());
        for (postings, id) in postings {
            let mut first = None;
            for (index, posting) in (0u64..).zip(postings.iter()) {
                let seq = store::insert_entry(tx, posting, *id, at)?;
                if *first.get_or_insert(seq) + index != seq {
                    return Err(StoreError::Corrupt(format!("entry {seq} out of order")));
                }
                events.push(bank_event(posting, *id, at)?);
            }
            firsts.push(first.unwrap_or(0));
        }
        Ok(firsts)
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
}

/// A stored record that does not read back.
fn unreadable(id: &str, error: &dyn std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("record {id}: {error}"))
}

/// An applied operation's record, its postings read back from its history entries if that is
/// where they are.
fn operation_record(
    conn: &Connection,
    id: &str,
    record: store::Record,
) -> Result<OperationRecord, StoreError> {
    let Some((first, count)) = record.entries else {
        return serde_json::from_str(&record.text).map_err(|e| unreadable(id, &e));
    };
    let op = serde_json::from_str(&record.text).map_err(|e| unreadable(id, &e))?;
    let postings = store::entries(conn, first, count)?
        .into_iter()
        .map(|(account, asset, row)| {
            PostingWire::new(account, asset, row.kind, row.amount, row.balances, row.at_ms)
        })
        .collect();
    Ok(OperationRecord { op, postings })
}

/// The event of one posting, published on `agora.bank.events.<account>`.
fn bank_event(posting: &Posting, id: Option<&str>, at: u64) -> Result<Event, StoreError> {
    let event = BankEvent {
        op: posting.kind.as_str().to_owned(),
        account: posting.account.to_string(),
        asset: (!posting.asset.is_money()).then(|| posting.asset.to_string()),
        amount: posting.amount,
        balance: posting.balances.posted,
        id: id.map(str::to_owned),
        at,
    };
    let payload = serde_json::to_vec(&event)
        .map_err(|e| StoreError::Corrupt(format!("cannot encode an event: {e}")))?;
    Ok(Event::new(crate::subjects::bank::events(&posting.account), payload.into()))
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

    fn span(&self, command: &Command) -> Option<crate::trace::Trace> {
        crate::service::span_of(&command.reply.as_ref()?.0)
    }

    fn apply(
        &mut self,
        tx: &Transaction<'_>,
        now_ms: u64,
        command: Command,
        out: &mut Outbox,
    ) -> Result<(), StoreError> {
        let Command { action, reply } = command;
        let result = match self.execute(tx, now_ms, &action, &mut out.events) {
            Ok(result) => result,
            Err(error) => {
                // Answered `unavailable` by `rolled_back`, with the rest of the group.
                if let Some((request, replier)) = reply {
                    out.replies.push((request, replier, Err(storage_failed(&error))));
                }
                return Err(error);
            }
        };
        if result.is_ok()
            && let Action::Commit { events, .. } = action
        {
            out.events.extend(events.into_iter().map(|(account, payload)| {
                Event::new(crate::subjects::bank::events(&account), payload)
            }));
        }
        if let Some((request, replier)) = reply {
            out.replies.push((request, replier, result));
        }
        Ok(())
    }

    fn abandon(&mut self, command: Command, out: &mut Outbox) {
        if let Some((request, replier)) = command.reply {
            let error = ServiceError::new(crate::error::ErrorCode::Unavailable, "not applied");
            out.replies.push((request, replier, Err(error)));
        }
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
        vec![
            Command { action: Action::Sweep, reply: None },
            Command { action: Action::Expire, reply: None },
        ]
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
            stats.pending_transfers = self.book.pending_len();
        }
        if self.book.balances_len() > BALANCE_CACHE_ENTRIES_MAX {
            self.book.forget_balances();
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
