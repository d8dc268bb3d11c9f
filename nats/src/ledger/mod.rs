//! The ledger service (`agora-ledger`): balances, locks and operation records over NATS.
//!
//! ## Shape
//! Endpoint tasks decode and validate requests, then hand typed commands to **one owner
//! task** through a bounded channel. The owner task holds the [`LockTable`] and the
//! [`Store`]; it drains whatever commands are queued (up to [`GROUP_COMMANDS_MAX`]), executes
//! them in one SQLite transaction, commits, and only then replies. So concurrent commits from several bank instances share one fsync (group commit at the
//! ledger), and no reply ever reports something that is not yet on disk.
//!
//! Each command is validated completely against the in-memory lock table before it writes, so
//! a refused command changes nothing. If SQLite itself fails, the transaction is rolled back,
//! every command in the group gets `unavailable`, and the lock table is reloaded from disk.

pub mod store;
pub mod wire;

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use agora_core::locks::LOCK_MANY_ACCOUNTS_MAX;
use agora_core::{AccountId, Balance, Lock, LockTable, OperationId};
use async_nats::Client;
use async_nats::service::Request;
use bytes::Bytes;
use futures::StreamExt;
use serde_json::value::RawValue;
use tokio::sync::mpsc;

use crate::bank::wire::AccountBalance;
use crate::clock::now_ms;
use crate::error::{ErrorCode, ServiceError};
use crate::ledger::store::{LockSetRow, Store, StoreError};
use crate::ledger::wire::{
    BatchCommitReply, BatchCommitRequest, BatchGetReply, BatchGetRequest, BatchLockReply,
    BatchLockRequest, GetRequest, LockGrant, LockInfo, LockRequest, LocksReply, LocksRequest,
    OperationEntry, SetRequest, UnlockReply, UnlockRequest,
};
use crate::service::{ErrorCounts, Replier, add_endpoint, encode};
use crate::subjects::{self, ledger as subject};

/// Largest request the ledger accepts, in bytes (a batch commit of a full bank batch).
pub const LEDGER_REQUEST_BYTES_MAX: usize = 1024 * 1024;
/// Most commands executed in one SQLite transaction.
pub const GROUP_COMMANDS_MAX: usize = 512;
/// Most operation records or writes in one batch commit.
pub const COMMIT_ENTRIES_MAX: usize = LOCK_MANY_ACCOUNTS_MAX;
/// Most locks listed by `agora.ledger.locks`.
pub const LOCKS_LISTED_MAX: usize = 10_000;
/// Most operation records pruned per sweep, so a sweep never stalls the owner task.
pub const PRUNE_PER_SWEEP_MAX: usize = 10_000;
/// How often expired locks are removed and old operation records pruned.
pub const SWEEP_INTERVAL_MS: u64 = 250;

/// Ledger configuration (the binary fills it from flags and environment).
#[derive(Debug, Clone)]
pub struct LedgerConfig {
    /// Directory holding `ledger.db`.
    pub data_dir: PathBuf,
    /// How long operation (idempotency) records are kept.
    pub operation_retention_ms: u64,
    /// How many operation records are kept at most (the oldest go first).
    pub operation_records_max: usize,
    /// Bound of the command queue in front of the owner task; beyond it requests get `busy`.
    pub queue_max: usize,
}

/// A decoded, validated ledger request.
#[derive(Debug)]
enum Action {
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

    fn read_only(&self) -> bool {
        matches!(self, Self::Get { .. } | Self::Locks { .. })
    }
}

#[derive(Debug)]
struct Command {
    action: Action,
    reply: Option<(Request, Replier)>,
}

type Reply = (Request, Replier, Result<Bytes, ServiceError>);

/// Counters shown in `$SRV.STATS`.
#[derive(Debug, Default, Clone, serde::Serialize)]
struct LedgerStats {
    transactions: u64,
    commands: u64,
    largest_group: usize,
    locks_held: usize,
    storage_errors: u64,
}

/// Runs the ledger until `shutdown` resolves. `on_ready` is called once every endpoint is
/// subscribed.
pub async fn run(
    client: Client,
    config: LedgerConfig,
    on_ready: impl FnOnce(),
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let store = Store::open(&config.data_dir)?;
    let (command_tx, command_rx) = mpsc::channel::<Command>(config.queue_max.max(1));
    let stats = Arc::new(Mutex::new(LedgerStats::default()));
    let ledger = Ledger::new(store, config.operation_retention_ms, config.operation_records_max)?;
    let owner = tokio::spawn(owner_loop(ledger, command_rx, stats.clone()));

    let errors = ErrorCounts::default();
    let stats_errors = errors.clone();
    let service = crate::service::builder(&client, HashMap::new())
        .description("Agora ledger: account balances, leases with fencing tokens, batch commits")
        .stats_handler(move |endpoint, _| {
            let mut data = stats_errors.snapshot(&endpoint);
            let ledger = stats.lock().map(|s| s.clone()).unwrap_or_default();
            data["ledger"] = serde_json::to_value(ledger).unwrap_or_default();
            data
        })
        .start(subject::SERVICE, env!("CARGO_PKG_VERSION"))
        .await
        .map_err(|e| anyhow::anyhow!("cannot start service: {e}"))?;
    let group = service.group(subject::GROUP);
    let endpoints = [
        ("lock", subject::LOCK),
        ("unlock", subject::UNLOCK),
        ("get", subject::GET),
        ("set", subject::SET),
        ("batch-lock", subject::BATCH_LOCK),
        ("batch-get", subject::BATCH_GET),
        ("batch-commit", subject::BATCH_COMMIT),
        ("locks", subject::LOCKS),
    ];
    let mut tasks = Vec::new();
    for (name, suffix) in endpoints {
        let mut endpoint = add_endpoint(&group, name, suffix).await?;
        let replier = Replier::new(name, errors.clone());
        let commands = command_tx.clone();
        tasks.push(tokio::spawn(async move {
            while let Some(request) = endpoint.next().await {
                match parse(name, &request) {
                    Err(error) => replier.reply_bytes(&request, Err(error)).await,
                    Ok(action) => {
                        let command = Command { action, reply: Some((request, replier.clone())) };
                        if let Err(refused) = commands.try_send(command) {
                            let command = refused.into_inner();
                            if let Some((request, replier)) = command.reply {
                                let busy = ServiceError::new(ErrorCode::Busy, "ledger queue full");
                                replier.reply_bytes(&request, Err(busy)).await;
                            }
                        }
                    }
                }
            }
        }));
    }
    let sweeper_commands = command_tx.clone();
    tasks.push(tokio::spawn(async move {
        let mut interval =
            tokio::time::interval(std::time::Duration::from_millis(SWEEP_INTERVAL_MS));
        loop {
            interval.tick().await;
            let sweep = Command { action: Action::Sweep, reply: None };
            if sweeper_commands.send(sweep).await.is_err() {
                break;
            }
        }
    }));
    // Subscriptions are in place at the server before anyone is told we are ready.
    crate::client::barrier(&client).await?;
    tracing::info!(data_dir = %config.data_dir.display(), "ledger ready");
    on_ready();

    shutdown.await;
    tracing::info!("ledger stopping");
    for task in &tasks {
        task.abort();
    }
    drop(command_tx);
    service.stop().await.ok();
    owner.await.ok();
    client.flush().await.ok();
    Ok(())
}

fn parse_account(request: &Request) -> Result<AccountId, ServiceError> {
    Ok(AccountId::parse(subjects::last_token(request.message.subject.as_str()))?)
}

fn parse_accounts(names: &[String]) -> Result<Vec<AccountId>, ServiceError> {
    if names.len() > LOCK_MANY_ACCOUNTS_MAX {
        return Err(ServiceError::invalid(format!(
            "at most {LOCK_MANY_ACCOUNTS_MAX} accounts per request"
        )));
    }
    names.iter().map(|name| AccountId::parse(name).map_err(ServiceError::from)).collect()
}

fn decode<T: serde::de::DeserializeOwned>(payload: &[u8]) -> Result<T, ServiceError> {
    crate::service::decode_limited(payload, LEDGER_REQUEST_BYTES_MAX)
}

fn decode_or_default<T: serde::de::DeserializeOwned + Default>(
    payload: &[u8],
) -> Result<T, ServiceError> {
    crate::service::decode_or_default(payload, LEDGER_REQUEST_BYTES_MAX)
}

fn parse(endpoint: &str, request: &Request) -> Result<Action, ServiceError> {
    let payload = &request.message.payload;
    match endpoint {
        "lock" => {
            let body: LockRequest = decode(payload)?;
            let account = parse_account(request)?;
            Ok(Action::Lock {
                accounts: vec![account],
                owner: body.owner,
                lease_ms: body.lease_ms,
                ids: Vec::new(),
                batch: false,
            })
        }
        "unlock" => {
            let body: UnlockRequest = decode(payload)?;
            Ok(Action::Unlock {
                account: parse_account(request)?,
                owner: body.owner,
                token: body.token,
            })
        }
        "get" => {
            let body: GetRequest = decode_or_default(payload)?;
            Ok(Action::Get {
                accounts: vec![parse_account(request)?],
                owner: body.owner,
                batch: false,
            })
        }
        "set" => {
            let body: SetRequest = decode(payload)?;
            let account = parse_account(request)?;
            let release = if body.release { vec![(account.clone(), body.token)] } else { vec![] };
            Ok(Action::Commit {
                owner: body.owner,
                writes: vec![(account, body.token, body.balance)],
                operations: Vec::new(),
                release,
                single: true,
            })
        }
        "batch-lock" => {
            let body: BatchLockRequest = decode(payload)?;
            if body.ids.len() > COMMIT_ENTRIES_MAX {
                return Err(ServiceError::invalid(format!("at most {COMMIT_ENTRIES_MAX} ids")));
            }
            Ok(Action::Lock {
                accounts: parse_accounts(&body.accounts)?,
                owner: body.owner,
                lease_ms: body.lease_ms,
                ids: body.ids,
                batch: true,
            })
        }
        "batch-get" => {
            let body: BatchGetRequest = decode(payload)?;
            if body.accounts.is_empty() {
                return Err(ServiceError::invalid("accounts must not be empty"));
            }
            Ok(Action::Get {
                accounts: parse_accounts(&body.accounts)?,
                owner: body.owner,
                batch: true,
            })
        }
        "batch-commit" => {
            let body: BatchCommitRequest = decode(payload)?;
            parse_commit(body)
        }
        "locks" => {
            let body: LocksRequest = decode_or_default(payload)?;
            Ok(Action::Locks { limit: body.limit.unwrap_or(1000).min(LOCKS_LISTED_MAX) })
        }
        other => Err(ServiceError::new(ErrorCode::Internal, format!("no endpoint {other}"))),
    }
}

fn parse_commit(body: BatchCommitRequest) -> Result<Action, ServiceError> {
    let BatchCommitRequest { owner, writes, operations, release } = body;
    for (what, len) in
        [("writes", writes.len()), ("operations", operations.len()), ("release", release.len())]
    {
        if len > COMMIT_ENTRIES_MAX {
            return Err(ServiceError::invalid(format!("at most {COMMIT_ENTRIES_MAX} {what}")));
        }
    }
    let writes = writes
        .into_iter()
        .map(|w| Ok((AccountId::parse(&w.account)?, w.token, w.balance)))
        .collect::<Result<Vec<_>, ServiceError>>()?;
    let operations = operations
        .into_iter()
        .map(|entry: OperationEntry| {
            Ok((OperationId::parse(&entry.id)?, entry.record.get().to_owned()))
        })
        .collect::<Result<Vec<_>, ServiceError>>()?;
    let release = release
        .into_iter()
        .map(|r| Ok((AccountId::parse(&r.account)?, r.token)))
        .collect::<Result<Vec<_>, ServiceError>>()?;
    Ok(Action::Commit { owner, writes, operations, release, single: false })
}

/// The owner task: the only code that touches the lock table and the store.
///
/// It runs SQLite synchronously on the runtime thread, deliberately: the ledger binary uses a
/// single-threaded runtime and nothing in the process can make progress without the store, so
/// a hop to another thread would only add latency. While a transaction (and its fsync) runs,
/// new requests queue up and form the next group.
async fn owner_loop(
    mut ledger: Ledger,
    mut commands: mpsc::Receiver<Command>,
    stats: Arc<Mutex<LedgerStats>>,
) {
    while let Some(first) = commands.recv().await {
        let mut group = vec![first];
        while group.len() < GROUP_COMMANDS_MAX {
            match commands.try_recv() {
                Ok(command) => group.push(command),
                Err(_) => break,
            }
        }
        let started = std::time::Instant::now();
        let size = group.len();
        let outcome = ledger.execute_group(now_ms(), group).await;
        let executed = started.elapsed();
        if let Ok(mut stats) = stats.lock() {
            stats.transactions += 1;
            stats.commands += outcome.len() as u64;
            stats.largest_group = stats.largest_group.max(outcome.len());
            stats.locks_held = ledger.locks.len();
            stats.storage_errors = ledger.storage_errors;
        }
        for (request, replier, result) in outcome.into_iter().flatten() {
            replier.reply_bytes(&request, result).await;
        }
        tracing::debug!(
            size,
            execute_us = executed.as_micros() as u64,
            total_us = started.elapsed().as_micros() as u64,
            "group done"
        );
    }
}

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

/// The owner task's state: the lock table mirrored in the store, and the balance cache.
struct Ledger {
    store: Store,
    locks: LockTable,
    sets: LockSets,
    balances: BalanceCache,
    operation_retention_ms: u64,
    operation_records_max: usize,
    storage_errors: u64,
}

impl Ledger {
    fn new(
        store: Store,
        operation_retention_ms: u64,
        operation_records_max: usize,
    ) -> Result<Self, StoreError> {
        let (locks, sets) = Self::load_locks(&store)?;
        Ok(Self {
            store,
            locks,
            sets,
            balances: BalanceCache::default(),
            operation_retention_ms,
            operation_records_max,
            storage_errors: 0,
        })
    }

    fn load_locks(store: &Store) -> Result<(LockTable, LockSets), StoreError> {
        let mut locks = LockTable::new(store.first_token());
        let mut sets = LockSets::default();
        for row in store.load_lock_sets()? {
            let accounts: Vec<AccountId> = row.grants.iter().map(|(a, _)| a.clone()).collect();
            // Keep the stored id so later rewrites hit the same row.
            sets.insert(row.set_id, &accounts);
            for (account, token) in row.grants {
                let lock =
                    Lock { owner: row.owner.clone(), token, expires_at_ms: row.expires_at_ms };
                locks.restore(account, lock);
            }
        }
        Ok((locks, sets))
    }

    fn balance(&mut self, account: &AccountId) -> Result<Balance, StoreError> {
        if let Some(balance) = self.balances.get(account) {
            return Ok(balance);
        }
        let balance = self.store.balance(account)?;
        self.balances.put(account, balance);
        Ok(balance)
    }

    /// Rewrites (or deletes, once empty) the stored rows of the given lock sets.
    fn persist_sets(&mut self, set_ids: impl IntoIterator<Item = i64>) -> Result<(), StoreError> {
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
                    self.store.put_lock_set(&LockSetRow { set_id, owner, expires_at_ms, grants })?
                }
                None => {
                    self.sets.members.remove(&set_id);
                    self.store.delete_lock_set(set_id)?;
                }
            }
        }
        Ok(())
    }

    /// Releases locks already checked with `check_release`, and persists the change.
    fn release(
        &mut self,
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
        self.persist_sets(touched)
    }

    /// Executes a group of commands in one transaction; returns one entry per command.
    async fn execute_group(&mut self, now_ms: u64, group: Vec<Command>) -> Vec<Option<Reply>> {
        let results = match self.run_group(now_ms, &group).await {
            Ok(results) => results,
            Err(error) => {
                self.storage_errors += 1;
                tracing::error!(%error, "ledger transaction failed; reloading state from disk");
                self.store.rollback();
                self.balances = BalanceCache::default();
                match Self::load_locks(&self.store) {
                    Ok((locks, sets)) => (self.locks, self.sets) = (locks, sets),
                    Err(error) => tracing::error!(%error, "cannot reload locks"),
                }
                let error = ServiceError::from(error);
                group.iter().map(|_| Err(error.clone())).collect()
            }
        };
        group
            .into_iter()
            .zip(results)
            .map(|(command, result)| {
                command.reply.map(|(request, replier)| (request, replier, result))
            })
            .collect()
    }

    /// Runs every command of a group in one transaction and commits it. A group that writes
    /// balances or records commits durably, off the runtime thread.
    async fn run_group(
        &mut self,
        now_ms: u64,
        group: &[Command],
    ) -> Result<Vec<Result<Bytes, ServiceError>>, StoreError> {
        let read_only = group.iter().all(|command| command.action.read_only());
        if read_only {
            // Reads see committed state only (every transaction commits before it replies),
            // so they need no transaction of their own.
            return group
                .iter()
                .map(|command| self.execute(now_ms, &command.action))
                .collect::<Result<Vec<_>, StoreError>>();
        }
        let durable = group.iter().any(|command| command.action.durable());
        self.store.begin(durable)?;
        let results = group
            .iter()
            .map(|command| self.execute(now_ms, &command.action))
            .collect::<Result<Vec<_>, StoreError>>()?;
        if durable {
            self.store.commit_durable().await?;
        } else {
            self.store.commit()?;
        }
        Ok(results)
    }

    /// Executes one command inside the open transaction. The outer `Err` is a storage failure
    /// (fails the whole group); the inner `Err` is this command's refusal (changes nothing).
    fn execute(
        &mut self,
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
                self.persist_sets(touched.into_iter().chain([set_id]))?;
                let mut locks = Vec::with_capacity(grants.len());
                for grant in grants {
                    locks.push(LockGrant {
                        balance: self.balance(&grant.account)?,
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
                    if let Some(record) = self.store.operation(id)? {
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
                self.release(now_ms, owner, &[(account.clone(), *token)])?;
                Ok(encode(&UnlockReply { account: account.to_string(), released: true }))
            }
            Action::Get { accounts, owner, batch } => {
                let mut balances = Vec::with_capacity(accounts.len());
                let mut locked = Vec::new();
                for account in accounts {
                    match self.locks.check_read(now_ms, owner.as_deref(), account) {
                        Ok(()) => balances.push(AccountBalance {
                            account: account.to_string(),
                            balance: self.balance(account)?,
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
            Action::Commit { owner, writes, operations, release, single } => {
                if let Err(error) = self.check_commit(now_ms, owner, writes, operations, release) {
                    return Ok(Err(error));
                }
                for (id, record) in operations {
                    if !self.store.insert_operation(id.as_str(), record, now_ms)? {
                        // check_commit saw the id free a moment ago in this transaction.
                        return Err(StoreError::Corrupt(format!("operation id {id} appeared")));
                    }
                }
                for (account, _, balance) in writes {
                    self.store.set_balance(account, *balance)?;
                    self.balances.put(account, *balance);
                }
                self.release(now_ms, owner, release)?;
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
                self.persist_sets(touched)?;
                let horizon = now_ms.saturating_sub(self.operation_retention_ms);
                self.store.prune_operations(
                    horizon,
                    self.operation_records_max,
                    PRUNE_PER_SWEEP_MAX,
                )?;
                Ok(Ok(Bytes::new()))
            }
        }
    }

    /// Everything a commit must satisfy before it writes anything.
    fn check_commit(
        &self,
        now_ms: u64,
        owner: &str,
        writes: &[(AccountId, u64, Balance)],
        operations: &[(OperationId, String)],
        release: &[(AccountId, u64)],
    ) -> Result<(), ServiceError> {
        agora_core::locks::check_owner(owner)?;
        let mut written = BTreeSet::new();
        for (account, _, balance) in writes {
            if *balance < 0 {
                return Err(ServiceError::invalid(format!(
                    "balance of {account} must not be negative"
                )));
            }
            if !written.insert(account) {
                return Err(ServiceError::invalid(format!("{account} is written twice")));
            }
        }
        self.locks.check_writes(now_ms, owner, writes.iter().map(|(a, token, _)| (a, *token)))?;
        let mut released = BTreeSet::new();
        for (account, token) in release {
            if !released.insert(account) {
                return Err(ServiceError::invalid(format!("{account} is released twice")));
            }
            self.locks.check_release(now_ms, owner, account, *token)?;
        }
        let mut ids = BTreeSet::new();
        let mut duplicates = Vec::new();
        for (id, _) in operations {
            let known = self.store.operation_exists(id.as_str()).map_err(ServiceError::from)?;
            if !ids.insert(id) || known {
                duplicates.push(id.to_string());
            }
        }
        if !duplicates.is_empty() {
            let mut error = ServiceError::new(
                ErrorCode::DuplicateId,
                format!("operation ids already recorded: {}", duplicates.join(", ")),
            );
            error.ids = duplicates;
            return Err(error);
        }
        Ok(())
    }
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger").field("locks", &self.locks.len()).finish_non_exhaustive()
    }
}

impl From<StoreError> for ServiceError {
    fn from(error: StoreError) -> Self {
        ServiceError::new(ErrorCode::Unavailable, format!("ledger storage failed: {error}"))
    }
}
