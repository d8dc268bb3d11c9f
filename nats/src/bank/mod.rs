//! The bank service (`agora-bank`): deposit, withdraw, balance and transfer over NATS.
//!
//! Any number of instances share the client-facing subjects as one queue group. Each instance
//! is stateless: balances, locks and idempotency records live in the ledger.
//!
//! ## Group commit
//! Money-changing requests are validated in their endpoint task and queued (bounded; beyond
//! [`BankConfig::queue_max`] a request gets `busy`). One batcher task per instance takes up to
//! `batch_max` queued operations and, for the whole batch:
//! 1. leases every account it touches in one `agora.ledger.batch.lock` round trip (a sorted
//!    set, all or nothing, so instances never deadlock). If another instance holds some of the
//!    accounts, the operations touching them wait for a later batch and the rest go ahead;
//! 2. applies the operations in arrival order to the locked balances (`agora_core::Book`), each
//!    one all-or-nothing;
//! 3. commits the changed balances, the idempotency records and the lease releases in one
//!    `agora.ledger.batch.commit` (one durable SQLite transaction);
//! 4. only then replies to every operation and publishes `agora.bank.events.<account>`.
//!
//! Up to `pipeline_depth` batches per instance are in flight, never two on the same account:
//! two batches of the same owner could both "renew" a lease on one account and compute from
//! the same balance.
//!
//! ## Crash safety
//! A `kill -9` before the commit leaves leases that expire after `lease_ms` and changes nothing;
//! after the commit, the operations are durable and a client retrying with the same `id` gets
//! the recorded reply. A reply is never sent for an uncommitted change. If the commit's outcome
//! is unknown (ledger timeout) the reply is `unavailable`, telling the client to retry with the
//! same id.
//!
//! Balance reads are batched too (`agora.ledger.batch.get`), several batches in flight.

pub mod wire;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use agora_core::{AccountId, Book, EventKind, Operation, Posting};
use async_nats::Client;
use async_nats::service::Request;
use futures::StreamExt;
use rand::Rng;
use serde_json::value::RawValue;
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;

use crate::bank::wire::{
    AccountBalance, AmountRequest, BalanceRequest, BankEvent, BankRecord, OperationWire,
    ParsedOperation, TransferReply, TransferRequest,
};
use crate::client::{AgoraClient, ClientError};
use crate::clock::now_ms;
use crate::error::{ErrorCode, ServiceError};
use crate::ledger::wire::{
    BatchCommitRequest, BatchGetReply, BatchGetRequest, BatchLockReply, BatchLockRequest,
    OperationEntry, Release, Write,
};
use crate::service::{ErrorCounts, Replier, add_endpoint, decode};
use crate::subjects::{bank as subject, ledger as ledger_subject};

/// Upper bound for `batch_max`: a full batch's commit must fit one NATS message.
pub const BATCH_MAX_LIMIT: usize = 1024;
/// Upper bound for `pipeline_depth`.
pub const PIPELINE_DEPTH_MAX: usize = 16;
/// Most balance reads in one ledger round trip.
pub const READ_BATCH_MAX: usize = 1024;
/// Balance-read batches in flight at once per instance.
pub const READS_IN_FLIGHT_MAX: usize = 4;
/// Retries of a batch's lock request, each without the accounts that were held by others.
const LOCK_SPLITS_MAX: usize = 4;
/// Commit attempts for one batch (a retry drops operations whose id turned out to be taken).
const COMMIT_ATTEMPTS_MAX: usize = 3;
/// Pause before retrying operations that waited on another instance's locks.
const RETRY_BACKOFF_MS_MAX: u64 = 3;

/// Bank configuration (the binary fills it from flags and environment).
#[derive(Debug, Clone)]
pub struct BankConfig {
    /// Stable name of this instance (`bank-1`); the ledger owner id adds a per-process suffix.
    pub bank_id: String,
    /// Most operations per group commit (1..=[`BATCH_MAX_LIMIT`]).
    pub batch_max: usize,
    /// Batches in flight at once (1..=[`PIPELINE_DEPTH_MAX`]), over disjoint accounts.
    pub pipeline_depth: usize,
    /// How long to linger for more operations after the first one arrives (0: none).
    pub batch_window_ms: u64,
    /// Lease asked of the ledger; a crashed instance blocks its accounts at most this long.
    pub lease_ms: u64,
    /// How long an operation may wait for locks before it gets `busy`.
    pub lock_wait_ms: u64,
    /// How long to wait for a ledger reply.
    pub ledger_timeout_ms: u64,
    /// Bound of the queue of accepted, not yet batched requests.
    pub queue_max: usize,
}

impl BankConfig {
    fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            (1..=BATCH_MAX_LIMIT).contains(&self.batch_max),
            "batch_max must be 1..={BATCH_MAX_LIMIT}"
        );
        anyhow::ensure!(self.queue_max >= 1, "queue_max must be at least 1");
        anyhow::ensure!(
            (1..=PIPELINE_DEPTH_MAX).contains(&self.pipeline_depth),
            "pipeline_depth must be 1..={PIPELINE_DEPTH_MAX}"
        );
        anyhow::ensure!(
            (agora_core::locks::LEASE_MS_MIN..=agora_core::locks::LEASE_MS_MAX)
                .contains(&self.lease_ms),
            "lease_ms out of range"
        );
        anyhow::ensure!(self.batch_window_ms <= 1000, "batch_window_ms must be at most 1000");
        Ok(())
    }
}

/// A queued money-changing request.
struct Pending {
    parsed: ParsedOperation,
    request: Request,
    replier: Replier,
    /// When the operation gives up waiting for locks and gets `busy`.
    deadline: Instant,
    /// Not to be retried before this (set after it met another instance's locks).
    not_before: Instant,
}

/// A queued balance read.
struct Read {
    account: AccountId,
    request: Request,
    replier: Replier,
    deadline: Instant,
}

#[derive(Debug, Default)]
struct BankStats {
    batches: AtomicU64,
    operations_committed: AtomicU64,
    lock_conflicts: AtomicU64,
    largest_batch: AtomicU64,
    reads: AtomicU64,
}

impl BankStats {
    fn json(&self) -> serde_json::Value {
        let batches = self.batches.load(Ordering::Relaxed);
        let committed = self.operations_committed.load(Ordering::Relaxed);
        serde_json::json!({
            "batches": batches,
            "operations_committed": committed,
            "average_batch": committed.checked_div(batches).unwrap_or(0),
            "largest_batch": self.largest_batch.load(Ordering::Relaxed),
            "lock_conflicts": self.lock_conflicts.load(Ordering::Relaxed),
            "reads": self.reads.load(Ordering::Relaxed),
        })
    }
}

/// What a bank instance needs in its tasks.
struct Bank {
    client: Client,
    ledger: AgoraClient,
    owner: String,
    config: BankConfig,
    stats: BankStats,
}

/// Runs one bank instance until `shutdown` resolves. `on_ready` is called once every endpoint
/// is subscribed.
///
/// `client` serves the endpoints, replies and events; `ledger_client`, a second connection,
/// carries only the calls to the ledger. After a batch the bank publishes hundreds of replies
/// and events at once; on a shared connection the next batch's ledger request would queue
/// behind all of them (head-of-line blocking), which measured at over a millisecond a batch.
pub async fn run(
    client: Client,
    ledger_client: Client,
    config: BankConfig,
    on_ready: impl FnOnce(),
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    config.validate()?;
    let owner = format!("{}-{}", config.bank_id, nuid::next());
    let ledger = AgoraClient::new(ledger_client)
        .with_timeout(Duration::from_millis(config.ledger_timeout_ms));
    let bank = Arc::new(Bank {
        client: client.clone(),
        ledger,
        owner,
        config,
        stats: BankStats::default(),
    });

    let (ops_tx, ops_rx) = mpsc::channel::<Pending>(bank.config.queue_max);
    let (reads_tx, reads_rx) = mpsc::channel::<Read>(bank.config.queue_max);

    let errors = ErrorCounts::default();
    let stats_errors = errors.clone();
    let stats_bank = bank.clone();
    let metadata = HashMap::from([
        ("bank_id".to_owned(), bank.config.bank_id.clone()),
        ("owner".to_owned(), bank.owner.clone()),
    ]);
    let service = crate::service::builder(&client, metadata)
        .description("Agora bank: deposit, withdraw, balance and transfer with group commit")
        .stats_handler(move |endpoint, _| {
            let mut data = stats_errors.snapshot(&endpoint);
            data["bank"] = stats_bank.stats.json();
            data
        })
        .start(subject::SERVICE, env!("CARGO_PKG_VERSION"))
        .await
        .map_err(|e| anyhow::anyhow!("cannot start service: {e}"))?;
    let group = service.group(subject::GROUP);

    let mut tasks = Vec::new();
    for name in [subject::DEPOSIT, subject::WITHDRAW, subject::TRANSFER] {
        let mut endpoint = add_endpoint(&group, name, name).await?;
        let replier = Replier::new(name, errors.clone());
        let queue = ops_tx.clone();
        let lock_wait = Duration::from_millis(bank.config.lock_wait_ms);
        tasks.push(tokio::spawn(async move {
            while let Some(request) = endpoint.next().await {
                let parsed = match parse_operation(name, &request.message.payload) {
                    Ok(parsed) => parsed,
                    Err(error) => {
                        replier.reply_bytes(&request, Err(error)).await;
                        continue;
                    }
                };
                let now = Instant::now();
                let pending = Pending {
                    parsed,
                    request,
                    replier: replier.clone(),
                    deadline: now + lock_wait,
                    not_before: now,
                };
                if let Err(refused) = queue.try_send(pending) {
                    let pending = refused.into_inner();
                    let busy = ServiceError::new(ErrorCode::Busy, "bank queue is full; retry");
                    pending.replier.reply_bytes(&pending.request, Err(busy)).await;
                }
            }
        }));
    }
    {
        let mut endpoint = add_endpoint(&group, subject::BALANCE, subject::BALANCE).await?;
        let replier = Replier::new(subject::BALANCE, errors.clone());
        let queue = reads_tx.clone();
        let lock_wait = Duration::from_millis(bank.config.lock_wait_ms);
        tasks.push(tokio::spawn(async move {
            while let Some(request) = endpoint.next().await {
                let account = decode::<BalanceRequest>(&request.message.payload)
                    .and_then(|body| AccountId::parse(&body.account).map_err(ServiceError::from));
                let account = match account {
                    Ok(account) => account,
                    Err(error) => {
                        replier.reply_bytes(&request, Err(error)).await;
                        continue;
                    }
                };
                let deadline = Instant::now() + lock_wait;
                let read = Read { account, request, replier: replier.clone(), deadline };
                if let Err(refused) = queue.try_send(read) {
                    let read = refused.into_inner();
                    let busy = ServiceError::new(ErrorCode::Busy, "bank queue is full; retry");
                    read.replier.reply_bytes(&read.request, Err(busy)).await;
                }
            }
        }));
    }
    tasks.push(tokio::spawn(batcher(bank.clone(), ops_rx)));
    tasks.push(tokio::spawn(reader(bank.clone(), reads_rx, reads_tx.clone())));
    drop(ops_tx);
    drop(reads_tx);
    // Subscriptions are in place at the server before anyone is told we are ready.
    crate::client::barrier(&client).await?;
    tracing::info!(owner = %bank.owner, "bank ready");
    on_ready();

    shutdown.await;
    tracing::info!("bank stopping");
    service.stop().await.ok();
    for task in &tasks {
        task.abort();
    }
    client.flush().await.ok();
    Ok(())
}

fn parse_operation(endpoint: &str, payload: &[u8]) -> Result<ParsedOperation, ServiceError> {
    match endpoint {
        subject::DEPOSIT => decode::<AmountRequest>(payload)?.into_deposit(),
        subject::WITHDRAW => decode::<AmountRequest>(payload)?.into_withdraw(),
        _ => ParsedOperation::try_from(decode::<TransferRequest>(payload)?),
    }
}

fn jitter_ms() -> u64 {
    rand::rng().random_range(1..=RETRY_BACKOFF_MS_MAX)
}

/// What a finished batch hands back to the batcher.
struct BatchDone {
    accounts: Vec<AccountId>,
    /// Operations that found accounts locked by another instance; they retry later.
    waiting: Vec<Pending>,
}

/// Forms batches from queued operations and runs up to `pipeline_depth` of them at once.
///
/// Batches in flight at the same time never share an account: an operation whose accounts
/// are held by an in-flight batch of this instance waits until that batch is done. (Two
/// batches of one owner on one account would both "renew" its lease and compute from the
/// same balance.) Operations deferred because another instance holds their accounts retry
/// after a short, jittered pause.
async fn batcher(bank: Arc<Bank>, mut queue: mpsc::Receiver<Pending>) {
    let depth = bank.config.pipeline_depth;
    let (done_tx, mut done_rx) = mpsc::channel::<BatchDone>(depth);
    let mut waiting: VecDeque<Pending> = VecDeque::new();
    let mut busy: HashSet<AccountId> = HashSet::new();
    let mut in_flight = 0usize;
    let mut queue_open = true;
    loop {
        let retry_at = waiting.iter().map(|p| p.not_before).min();
        let accepting = queue_open && in_flight < depth;
        tokio::select! {
            biased;
            Some(done) = done_rx.recv() => {
                in_flight -= 1;
                for account in &done.accounts {
                    busy.remove(account);
                }
                let not_before = Instant::now() + Duration::from_millis(jitter_ms());
                for mut pending in done.waiting {
                    pending.not_before = not_before;
                    waiting.push_back(pending);
                }
            }
            next = queue.recv(), if accepting => match next {
                Some(pending) => {
                    waiting.push_back(pending);
                    if bank.config.batch_window_ms > 0 && in_flight == 0 {
                        tokio::time::sleep(Duration::from_millis(bank.config.batch_window_ms)).await;
                    }
                }
                None => queue_open = false,
            },
            () = sleep_until_or_forever(retry_at), if in_flight < depth => {}
        }
        if !queue_open && in_flight == 0 && waiting.is_empty() {
            return;
        }
        while in_flight < depth {
            while waiting.len() < bank.config.batch_max * depth {
                match queue.try_recv() {
                    Ok(pending) => waiting.push_back(pending),
                    Err(_) => break,
                }
            }
            let batch = take_batch(&bank, &mut waiting, &busy).await;
            if batch.is_empty() {
                break;
            }
            let accounts: Vec<AccountId> = batch
                .iter()
                .flat_map(|p| p.parsed.operation.accounts())
                .cloned()
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            busy.extend(accounts.iter().cloned());
            in_flight += 1;
            let bank = bank.clone();
            let done = done_tx.clone();
            tokio::spawn(async move {
                let waiting = bank.run_batch(batch).await;
                done.send(BatchDone { accounts, waiting }).await.ok();
            });
        }
    }
}

async fn sleep_until_or_forever(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Takes up to `batch_max` operations that are due and whose accounts no in-flight batch
/// holds, in arrival order; answers `busy` to those past their deadline.
async fn take_batch(
    bank: &Bank,
    waiting: &mut VecDeque<Pending>,
    busy: &HashSet<AccountId>,
) -> Vec<Pending> {
    let now = Instant::now();
    let mut batch = Vec::new();
    let mut kept = VecDeque::with_capacity(waiting.len());
    while let Some(pending) = waiting.pop_front() {
        if pending.deadline <= now {
            let busy = ServiceError::new(
                ErrorCode::Busy,
                format!("accounts stayed locked for {} ms; retry", bank.config.lock_wait_ms),
            );
            pending.replier.reply_bytes(&pending.request, Err(busy)).await;
            continue;
        }
        let runnable = batch.len() < bank.config.batch_max
            && pending.not_before <= now
            && !pending.parsed.operation.accounts().iter().any(|a| busy.contains(*a));
        if runnable {
            batch.push(pending);
        } else {
            kept.push_back(pending);
        }
    }
    *waiting = kept;
    batch
}

/// How one operation of a batch ends.
enum Outcome {
    /// Refused or answered from a record; nothing to write.
    Done(Result<Box<RawValue>, ServiceError>),
    /// Applied to the book: written and recorded at commit. The reply is serialized once and
    /// used both for the client and inside the idempotency record.
    Applied { postings: Vec<Posting>, reply: Box<RawValue> },
    /// Same id and operation as an earlier operation in this batch: gets its reply.
    SameAs(usize),
}

impl Bank {
    /// Runs one batch; returns the operations that must wait for another instance's locks.
    async fn run_batch(&self, mut batch: Vec<Pending>) -> Vec<Pending> {
        let mut waiting = Vec::new();
        let mut splits = 0;
        let started = Instant::now();
        let locked = loop {
            if batch.is_empty() {
                return waiting;
            }
            let accounts: BTreeSet<&AccountId> =
                batch.iter().flat_map(|p| p.parsed.operation.accounts()).collect();
            let ids: BTreeSet<&str> =
                batch.iter().filter_map(|p| p.parsed.id.as_ref().map(|id| id.as_str())).collect();
            let request = BatchLockRequest {
                owner: self.owner.clone(),
                accounts: accounts.iter().map(|a| a.to_string()).collect(),
                lease_ms: self.config.lease_ms,
                ids: ids.iter().map(|id| (*id).to_owned()).collect(),
            };
            let reply = self
                .ledger
                .request::<_, BatchLockReply>(ledger_subject::BATCH_LOCK_SUBJECT, &request)
                .await;
            match reply {
                Ok(reply) => break reply,
                Err(ClientError::Service(error)) if error.code == ErrorCode::Locked => {
                    self.stats.lock_conflicts.fetch_add(1, Ordering::Relaxed);
                    let held: BTreeSet<&str> = error.accounts.iter().map(String::as_str).collect();
                    splits += 1;
                    if held.is_empty() || splits > LOCK_SPLITS_MAX {
                        waiting.append(&mut batch);
                        return waiting;
                    }
                    let (blocked, free): (Vec<_>, Vec<_>) = batch.into_iter().partition(|p| {
                        p.parsed.operation.accounts().iter().any(|a| held.contains(a.as_str()))
                    });
                    waiting.extend(blocked);
                    batch = free;
                }
                Err(error) => {
                    let error = unavailable("could not lock accounts at the ledger", &error);
                    reply_all(&batch, &error).await;
                    return waiting;
                }
            }
        };
        let lock_elapsed = started.elapsed();
        self.stats.batches.fetch_add(1, Ordering::Relaxed);
        self.stats.largest_batch.fetch_max(batch.len() as u64, Ordering::Relaxed);

        let mut tokens = BTreeMap::new();
        let mut balances = Vec::new();
        for grant in &locked.locks {
            let Ok(account) = AccountId::parse(&grant.account) else {
                let error = ServiceError::new(ErrorCode::Internal, "ledger sent a bad account");
                reply_all(&batch, &error).await;
                return waiting;
            };
            tokens.insert(account.clone(), grant.token);
            balances.push((account, grant.balance));
        }
        let recorded: HashMap<&str, &RawValue> =
            locked.operations.iter().map(|e| (e.id.as_str(), &*e.record)).collect();
        let release: Vec<Release> = tokens
            .iter()
            .map(|(account, token)| Release { account: account.to_string(), token: *token })
            .collect();

        let mut taken_ids: BTreeSet<String> = BTreeSet::new();
        for _ in 0..COMMIT_ATTEMPTS_MAX {
            let outcomes = self.apply(&batch, &balances, &recorded, &taken_ids);
            let (writes, operations) = match self.changes(&batch, &outcomes, &balances, &tokens) {
                Ok(changes) => changes,
                Err(error) => {
                    // Nothing was written; the leases expire on their own.
                    reply_all(&batch, &error).await;
                    return waiting;
                }
            };
            let commit = BatchCommitRequest {
                owner: self.owner.clone(),
                writes,
                operations,
                release: release.clone(),
            };
            let committed = self
                .ledger
                .request::<_, serde_json::Value>(ledger_subject::BATCH_COMMIT_SUBJECT, &commit)
                .await;
            match committed {
                Ok(_) => {
                    let commit_elapsed = started.elapsed();
                    let size = batch.len();
                    self.finish(batch, outcomes).await;
                    tracing::debug!(
                        size,
                        lock_us = lock_elapsed.as_micros() as u64,
                        commit_us = commit_elapsed.as_micros() as u64,
                        total_us = started.elapsed().as_micros() as u64,
                        "batch committed"
                    );
                    return waiting;
                }
                Err(ClientError::Service(error)) if error.code == ErrorCode::DuplicateId => {
                    taken_ids.extend(error.ids);
                }
                Err(ClientError::Service(error)) if error.code == ErrorCode::StaleToken => {
                    // The leases ran out before the commit: nothing was written. Try again.
                    tracing::warn!(%error, "batch commit refused: leases expired; retrying");
                    waiting.extend(batch);
                    return waiting;
                }
                Err(error) => {
                    let error = unavailable("commit outcome unknown", &error);
                    reply_all(&batch, &error).await;
                    return waiting;
                }
            }
        }
        let error = ServiceError::new(ErrorCode::Busy, "operation ids kept conflicting; retry");
        reply_all(&batch, &error).await;
        waiting
    }

    /// Applies the batch to a fresh book of the locked balances.
    fn apply(
        &self,
        batch: &[Pending],
        balances: &[(AccountId, i64)],
        recorded: &HashMap<&str, &RawValue>,
        taken_ids: &BTreeSet<String>,
    ) -> Vec<Outcome> {
        let mut book = Book::new(balances.iter().cloned());
        let mut first_with_id: HashMap<&str, usize> = HashMap::new();
        let mut outcomes = Vec::with_capacity(batch.len());
        for (index, pending) in batch.iter().enumerate() {
            let operation = &pending.parsed.operation;
            if let Some(id) = pending.parsed.id.as_ref().map(|id| id.as_str()) {
                if let Some(record) = recorded.get(id) {
                    outcomes.push(Outcome::Done(replay(id, operation, record)));
                    continue;
                }
                if taken_ids.contains(id) {
                    outcomes.push(Outcome::Done(Err(id_reused(id))));
                    continue;
                }
                if let Some(&first) = first_with_id.get(id) {
                    let same = batch[first].parsed.operation == *operation;
                    outcomes.push(if same {
                        Outcome::SameAs(first)
                    } else {
                        Outcome::Done(Err(id_reused(id)))
                    });
                    continue;
                }
                first_with_id.insert(id, index);
            }
            outcomes.push(match book.apply(operation).map_err(ServiceError::from) {
                Ok(postings) => match reply_for(&postings) {
                    Ok(reply) => Outcome::Applied { reply, postings },
                    Err(error) => Outcome::Done(Err(error)),
                },
                Err(error) => Outcome::Done(Err(error)),
            });
        }
        outcomes
    }

    /// The balance writes and idempotency records of a batch's outcomes.
    fn changes(
        &self,
        batch: &[Pending],
        outcomes: &[Outcome],
        balances: &[(AccountId, i64)],
        tokens: &BTreeMap<AccountId, u64>,
    ) -> Result<(Vec<Write>, Vec<OperationEntry>), ServiceError> {
        let mut latest: BTreeMap<&AccountId, i64> = BTreeMap::new();
        let mut operations = Vec::new();
        for (pending, outcome) in batch.iter().zip(outcomes) {
            let Outcome::Applied { postings, reply } = outcome else {
                continue;
            };
            for posting in postings {
                latest.insert(&posting.account, posting.balance);
            }
            if let Some(id) = &pending.parsed.id {
                let record = BankRecord {
                    op: OperationWire::from(&pending.parsed.operation),
                    reply: reply.clone(),
                };
                // Serializing our own types cannot fail; if it ever did, the batch must not
                // commit: an operation without its record would be applied again on retry.
                let record = serde_json::value::to_raw_value(&record).map_err(|e| {
                    ServiceError::new(ErrorCode::Internal, format!("cannot record {id}: {e}"))
                })?;
                operations.push(OperationEntry { id: id.to_string(), record });
            }
        }
        let unchanged: BTreeMap<&AccountId, i64> = balances.iter().map(|(a, b)| (a, *b)).collect();
        let writes = latest
            .into_iter()
            .filter(|(account, balance)| unchanged.get(account) != Some(balance))
            .map(|(account, balance)| Write {
                account: account.to_string(),
                token: tokens[account],
                balance,
            })
            .collect();
        Ok((writes, operations))
    }

    /// After a durable commit: reply to every operation, then publish the events (both only
    /// after the commit; replies first, so clients are not kept waiting behind the events).
    async fn finish(&self, batch: Vec<Pending>, outcomes: Vec<Outcome>) {
        for (pending, outcome) in batch.iter().zip(&outcomes) {
            let result = resolve(outcome, &outcomes);
            pending.replier.reply(&pending.request, result).await;
        }
        let at = now_ms();
        let mut applied = 0u64;
        for (pending, outcome) in batch.iter().zip(&outcomes) {
            let Outcome::Applied { postings, .. } = outcome else { continue };
            applied += 1;
            for posting in postings {
                let event = BankEvent {
                    op: posting.kind.as_str().to_owned(),
                    account: posting.account.to_string(),
                    amount: posting.amount.get(),
                    balance: posting.balance,
                    id: pending.parsed.id.as_ref().map(|id| id.to_string()),
                    at,
                };
                if let Ok(payload) = serde_json::to_vec(&event) {
                    let subject = subject::events(&posting.account);
                    if let Err(error) = self.client.publish(subject, payload.into()).await {
                        tracing::warn!(%error, "could not publish bank event");
                    }
                }
            }
        }
        self.stats.operations_committed.fetch_add(applied, Ordering::Relaxed);
    }
}

/// The reply of an outcome, following `SameAs` to the first operation with that id.
fn resolve(outcome: &Outcome, outcomes: &[Outcome]) -> Result<Box<RawValue>, ServiceError> {
    match outcome {
        Outcome::Done(result) => result.clone(),
        Outcome::Applied { reply, .. } => Ok(reply.clone()),
        Outcome::SameAs(first) => resolve(&outcomes[*first], outcomes),
    }
}

/// The reply of a successful operation, from its postings.
fn reply_for(postings: &[Posting]) -> Result<Box<RawValue>, ServiceError> {
    let balance_of = |posting: &Posting| AccountBalance {
        account: posting.account.to_string(),
        balance: posting.balance,
    };
    let raw = match postings {
        [from, to] if from.kind == EventKind::TransferOut => {
            serde_json::value::to_raw_value(&TransferReply {
                from: balance_of(from),
                to: balance_of(to),
            })
        }
        [single] => serde_json::value::to_raw_value(&balance_of(single)),
        _ => return Err(ServiceError::new(ErrorCode::Internal, "unexpected postings")),
    };
    raw.map_err(|e| ServiceError::new(ErrorCode::Internal, format!("cannot encode reply: {e}")))
}

/// The reply for a retried id: the recorded reply if the operation is the same.
fn replay(
    id: &str,
    operation: &Operation,
    record: &RawValue,
) -> Result<Box<RawValue>, ServiceError> {
    match serde_json::from_str::<BankRecord>(record.get()) {
        Ok(record) if record.op == OperationWire::from(operation) => Ok(record.reply),
        Ok(_) => Err(id_reused(id)),
        Err(error) => Err(ServiceError::new(
            ErrorCode::Internal,
            format!("unreadable record for id {id}: {error}"),
        )),
    }
}

fn id_reused(id: &str) -> ServiceError {
    ServiceError::invalid(format!("id {id} was already used for a different operation"))
}

fn unavailable(what: &str, error: &ClientError) -> ServiceError {
    ServiceError::new(ErrorCode::Unavailable, format!("{what} ({error}); retry with the same id"))
}

async fn reply_all(batch: &[Pending], error: &ServiceError) {
    for pending in batch {
        pending.replier.reply_bytes(&pending.request, Err(error.clone())).await;
    }
}

/// Takes queued balance reads in batches; several batches may be in flight.
async fn reader(bank: Arc<Bank>, mut queue: mpsc::Receiver<Read>, requeue: mpsc::Sender<Read>) {
    let permits = Arc::new(Semaphore::new(READS_IN_FLIGHT_MAX));
    while let Some(first) = queue.recv().await {
        let mut batch = vec![first];
        while batch.len() < READ_BATCH_MAX {
            match queue.try_recv() {
                Ok(read) => batch.push(read),
                Err(_) => break,
            }
        }
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let bank = bank.clone();
        let requeue = requeue.clone();
        tokio::spawn(async move {
            bank.read_batch(batch, requeue).await;
            drop(permit);
        });
    }
}

impl Bank {
    async fn read_batch(&self, batch: Vec<Read>, requeue: mpsc::Sender<Read>) {
        let accounts: BTreeSet<&AccountId> = batch.iter().map(|r| &r.account).collect();
        let request = BatchGetRequest {
            owner: Some(self.owner.clone()),
            accounts: accounts.iter().map(|a| a.to_string()).collect(),
        };
        let reply = self
            .ledger
            .request::<_, BatchGetReply>(ledger_subject::BATCH_GET_SUBJECT, &request)
            .await;
        let reply = match reply {
            Ok(reply) => reply,
            Err(error) => {
                let error = unavailable("could not read balances at the ledger", &error);
                for read in batch {
                    read.replier.reply_bytes(&read.request, Err(error.clone())).await;
                }
                return;
            }
        };
        self.stats.reads.fetch_add(batch.len() as u64, Ordering::Relaxed);
        let balances: HashMap<&str, &AccountBalance> =
            reply.balances.iter().map(|b| (b.account.as_str(), b)).collect();
        let mut retry = Vec::new();
        for read in batch {
            match balances.get(read.account.as_str()) {
                Some(balance) => read.replier.reply(&read.request, Ok(balance)).await,
                None if Instant::now() >= read.deadline => {
                    let busy = ServiceError::new(
                        ErrorCode::Busy,
                        format!("account {} stayed locked; retry", read.account),
                    );
                    read.replier.reply_bytes(&read.request, Err(busy)).await;
                }
                None => retry.push(read),
            }
        }
        if retry.is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(jitter_ms())).await;
        for read in retry {
            if let Err(refused) = requeue.try_send(read) {
                let read = refused.into_inner();
                let busy = ServiceError::new(ErrorCode::Busy, "bank queue is full; retry");
                read.replier.reply_bytes(&read.request, Err(busy)).await;
            }
        }
    }
}

impl std::fmt::Debug for Bank {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bank").field("owner", &self.owner).finish_non_exhaustive()
    }
}
