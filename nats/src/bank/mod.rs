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

pub mod batch;
pub mod client;
pub mod reads;
pub mod wire;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use agora_core::{AccountId, Caller};
use async_nats::Client;
use async_nats::service::Request;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::bank::wire::{AmountRequest, BalanceRequest, ParsedOperation, TransferRequest};
use crate::client::AgoraClient;
use crate::error::{ErrorCode, ServiceError};
use crate::service::{ErrorCounts, Replier, add_endpoint, decode};
use crate::subjects::bank as subject;

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

/// Bank configuration: the flags of `agora-bank`.
#[derive(Debug, Clone, clap::Args)]
pub struct BankConfig {
    /// Name of this instance (a per-process suffix makes its ledger owner id unique).
    #[arg(long, env = "AGORA_BANK_ID", default_value = "bank")]
    pub bank_id: String,
    /// Most operations per group commit (1-1024).
    #[arg(long, env = "AGORA_BANK_BATCH_MAX", default_value_t = 256)]
    pub batch_max: usize,
    /// Batches in flight at once, over disjoint accounts (1-16).
    #[arg(long, env = "AGORA_BANK_PIPELINE_DEPTH", default_value_t = 2)]
    pub pipeline_depth: usize,
    /// Milliseconds to wait for more operations after the first of a batch (0: none).
    #[arg(long, env = "AGORA_BANK_BATCH_WINDOW_MS", default_value_t = 0)]
    pub batch_window_ms: u64,
    /// Lease on locked accounts, in milliseconds: how long a crashed instance can block them.
    #[arg(long, env = "AGORA_BANK_LEASE_MS", default_value_t = 2_000)]
    pub lease_ms: u64,
    /// How long an operation may wait for locked accounts before it gets `busy`.
    #[arg(long, env = "AGORA_BANK_LOCK_WAIT_MS", default_value_t = 5_000)]
    pub lock_wait_ms: u64,
    /// How long to wait for the ledger's reply, in milliseconds.
    #[arg(long, env = "AGORA_BANK_LEDGER_TIMEOUT_MS", default_value_t = 2_000)]
    pub ledger_timeout_ms: u64,
    /// Most accepted requests waiting for a batch before new ones get `busy`.
    #[arg(long, env = "AGORA_BANK_QUEUE_MAX", default_value_t = 8_192)]
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
    ledger: AgoraClient,
    owner: String,
    config: BankConfig,
    stats: BankStats,
}

/// Runs one bank instance until `shutdown` resolves. `on_ready` is called once every endpoint
/// is subscribed.
///
/// `client` serves the endpoints and replies; `ledger_client`, a second connection, carries
/// only the calls to the ledger (which publishes the events, from its log). After a batch the
/// bank publishes hundreds of replies at once; on a shared connection the next batch's ledger request would queue
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
    let bank = Arc::new(Bank { ledger, owner, config, stats: BankStats::default() });

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
                let caller = crate::identity::caller(request.message.headers.as_ref());
                let parsed = caller
                    .and_then(|caller| parse_operation(name, &caller, &request.message.payload));
                let parsed = match parsed {
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
                // A person reads their own balance (a manager anyone's).
                let account =
                    crate::identity::caller(request.message.headers.as_ref()).and_then(|caller| {
                        let body = decode::<BalanceRequest>(&request.message.payload)?;
                        let account = AccountId::parse(&body.account)?;
                        caller.may_read("account", &body.account)?;
                        Ok(account)
                    });
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
    tasks.push(tokio::spawn(batch::batcher(bank.clone(), ops_rx)));
    tasks.push(tokio::spawn(reads::reader(bank.clone(), reads_rx, reads_tx.clone())));
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

fn parse_operation(
    endpoint: &str,
    caller: &Caller,
    payload: &[u8],
) -> Result<ParsedOperation, ServiceError> {
    match endpoint {
        subject::DEPOSIT => decode::<AmountRequest>(payload)?.into_deposit(caller),
        subject::WITHDRAW => decode::<AmountRequest>(payload)?.into_withdraw(caller),
        _ => decode::<TransferRequest>(payload)?.into_transfer(caller),
    }
}

impl std::fmt::Debug for Bank {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bank").field("owner", &self.owner).finish_non_exhaustive()
    }
}
