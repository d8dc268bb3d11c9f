//! The bank service (`agora-bank`): the ledger's door for people and services: deposit,
//! withdraw, transfer, batches of operations (`agora.bank.transfers`: linked chains,
//! two-phase transfers, assets), balances and history, over NATS.
//!
//! Any number of instances share the client-facing subjects as one queue group. Each instance
//! is stateless: it decides *who* may do what (a person moves only their own money, under ids
//! recorded as theirs) and the ledger applies the operations (`agora.ledger.apply`: the rules
//! live in `agora_core::ledger`, applied by the ledger's single writer, so no bank ever reads a
//! balance to write it back).
//!
//! ## Group commit
//! Single requests (deposit, withdraw, transfer) are validated in their endpoint task and
//! queued (bounded; beyond [`BankConfig::queue_max`] a request gets `busy`). One batcher per
//! instance takes up to `batch_max` queued operations and sends them as one
//! `agora.ledger.apply` (each operation on its own, not linked), up to `pipeline_depth` at once;
//! the ledger commits concurrent requests of every bank in one transaction and one log entry.
//! A batch request (`agora.bank.transfers`) goes to the ledger as it is.
//!
//! ## Crash safety
//! A reply is sent only after the ledger committed (its log has it). If the ledger's answer
//! is lost (timeout) the reply is `unavailable`, telling the client to retry with the same
//! `id`: an id is applied once and answered the same way again.
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

use agora_core::{AccountId, Asset, Caller};
use async_nats::Client;
use async_nats::service::Request;
use futures::StreamExt;
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;

use crate::bank::wire::{
    AmountRequest, BalanceRequest, HistoryRequest, OperationRequest, TransferRequest,
    TransfersRequest,
};
use crate::client::{AgoraClient, ClientError};
use crate::error::{ErrorCode, ServiceError};
use crate::ledger::wire::ApplyRequest;
use crate::service::{ErrorCounts, Replier, add_endpoint, decode, decode_limited};
use crate::subjects::bank as subject;
use crate::subjects::ledger as ledger_subject;

/// Upper bound for `batch_max`: a full batch's reply (with balances) must fit one message.
pub const BATCH_MAX_LIMIT: usize = crate::ledger::wire::DETAIL_OPERATIONS_MAX;
/// Upper bound for `pipeline_depth`.
pub const PIPELINE_DEPTH_MAX: usize = 16;
/// Most balance reads in one ledger round trip.
pub const READ_BATCH_MAX: usize = 1024;
/// Balance-read batches in flight at once per instance.
pub const READS_IN_FLIGHT_MAX: usize = 4;
/// `agora.bank.transfers`, history and past-balance requests in flight at once per instance
/// (the next ones wait in line).
pub const FORWARDED_IN_FLIGHT_MAX: usize = 64;
/// What forwarded requests waiting for one of those places may hold at most, in KiB of their
/// payloads (beyond: `busy`).
pub const FORWARDED_WAITING_KIB_MAX: usize = 64 * 1024;
/// Largest `agora.bank.transfers` request, in bytes (8,190 operations fit).
pub const TRANSFERS_BYTES_MAX: usize = 1024 * 1024;

/// Bank configuration: the flags of `agora-bank`.
#[derive(Debug, Clone, clap::Args)]
pub struct BankConfig {
    /// Name of this instance (a per-process suffix makes its owner id unique).
    #[arg(long, env = "AGORA_BANK_ID", default_value = "bank")]
    pub bank_id: String,
    /// Most single operations per ledger request (1-1000).
    #[arg(long, env = "AGORA_BANK_BATCH_MAX", default_value_t = 256)]
    pub batch_max: usize,
    /// Ledger requests of single operations in flight at once (1-16).
    #[arg(long, env = "AGORA_BANK_PIPELINE_DEPTH", default_value_t = 4)]
    pub pipeline_depth: usize,
    /// Milliseconds to wait for more operations after the first of a batch (0: none).
    #[arg(long, env = "AGORA_BANK_BATCH_WINDOW_MS", default_value_t = 0)]
    pub batch_window_ms: u64,
    /// How long a balance read waits for an account leased at the ledger (`agora.ledger.lock`)
    /// before it gets `busy`.
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
        anyhow::ensure!(self.batch_window_ms <= 1000, "batch_window_ms must be at most 1000");
        anyhow::ensure!(
            (100..=600_000).contains(&self.ledger_timeout_ms),
            "ledger_timeout_ms must be 100..=600000"
        );
        Ok(())
    }
}

/// A queued single operation.
struct Single {
    operation: OperationRequest,
    request: Request,
    replier: Replier,
}

/// A queued balance read.
struct Read {
    account: AccountId,
    asset: Asset,
    request: Request,
    replier: Replier,
    deadline: Instant,
}

#[derive(Debug, Default)]
struct BankStats {
    batches: AtomicU64,
    operations_committed: AtomicU64,
    largest_batch: AtomicU64,
    transfers_requests: AtomicU64,
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
            "transfers_requests": self.transfers_requests.load(Ordering::Relaxed),
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
    /// Forwarded requests (transfers, history, past balances) in flight.
    forwarded: Arc<Semaphore>,
    /// Places in the line for [`Bank::forwarded`].
    waiting: Arc<Semaphore>,
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
    let forwarded = Arc::new(Semaphore::new(FORWARDED_IN_FLIGHT_MAX));
    let waiting = Arc::new(Semaphore::new(FORWARDED_WAITING_KIB_MAX));
    let bank =
        Arc::new(Bank { ledger, owner, config, stats: BankStats::default(), forwarded, waiting });

    let (ops_tx, ops_rx) = mpsc::channel::<Single>(bank.config.queue_max);
    let (reads_tx, reads_rx) = mpsc::channel::<Read>(bank.config.queue_max);

    let errors = ErrorCounts::default();
    let stats_errors = errors.clone();
    let stats_bank = bank.clone();
    let metadata = HashMap::from([
        ("bank_id".to_owned(), bank.config.bank_id.clone()),
        ("owner".to_owned(), bank.owner.clone()),
    ]);
    let service = crate::service::builder(&client, metadata)
        .description("Agora bank: deposit, withdraw, transfer, batches, balances and history")
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
        tasks.push(tokio::spawn(async move {
            while let Some(request) = endpoint.next().await {
                let caller = crate::identity::caller(request.message.headers.as_ref());
                let operation = caller
                    .and_then(|caller| parse_operation(name, &caller, &request.message.payload));
                let operation = match operation {
                    Ok(operation) => operation,
                    Err(error) => {
                        replier.reply_bytes(&request, Err(error)).await;
                        continue;
                    }
                };
                let single = Single { operation, request, replier: replier.clone() };
                if let Err(refused) = queue.try_send(single) {
                    let single = refused.into_inner();
                    let busy = ServiceError::new(ErrorCode::Busy, "bank queue is full; retry");
                    single.replier.reply_bytes(&single.request, Err(busy)).await;
                }
            }
        }));
    }
    {
        let mut endpoint = add_endpoint(&group, subject::BALANCE, subject::BALANCE).await?;
        let replier = Replier::new(subject::BALANCE, errors.clone());
        let queue = reads_tx.clone();
        let lock_wait = Duration::from_millis(bank.config.lock_wait_ms);
        let bank = bank.clone();
        tasks.push(tokio::spawn(async move {
            while let Some(request) = endpoint.next().await {
                // A person reads their own balance (a manager anyone's).
                let body =
                    crate::identity::caller(request.message.headers.as_ref()).and_then(|caller| {
                        let body = decode::<BalanceRequest>(&request.message.payload)?;
                        let account = AccountId::parse(&body.account)?;
                        let asset = crate::ledger::parse_asset(body.asset.as_deref())?;
                        caller.may_read("account", &body.account)?;
                        Ok((body, account, asset))
                    });
                let (body, account, asset) = match body {
                    Ok(body) => body,
                    Err(error) => {
                        replier.reply_bytes(&request, Err(error)).await;
                        continue;
                    }
                };
                if body.at_ms.is_some() {
                    bank.forward(request, replier.clone(), ledger_subject::BALANCE_SUBJECT, body);
                    continue;
                }
                let deadline = Instant::now() + lock_wait;
                let read = Read { account, asset, request, replier: replier.clone(), deadline };
                if let Err(refused) = queue.try_send(read) {
                    let read = refused.into_inner();
                    let busy = ServiceError::new(ErrorCode::Busy, "bank queue is full; retry");
                    read.replier.reply_bytes(&read.request, Err(busy)).await;
                }
            }
        }));
    }
    {
        let mut endpoint = add_endpoint(&group, subject::TRANSFERS, subject::TRANSFERS).await?;
        let replier = Replier::new(subject::TRANSFERS, errors.clone());
        let bank = bank.clone();
        tasks.push(tokio::spawn(async move {
            while let Some(request) = endpoint.next().await {
                let caller = crate::identity::caller(request.message.headers.as_ref());
                let body = caller.and_then(|caller| {
                    let body: TransfersRequest =
                        decode_limited(&request.message.payload, TRANSFERS_BYTES_MAX)?;
                    let operations = body
                        .operations
                        .into_iter()
                        .enumerate()
                        .map(|(index, operation)| {
                            operation.authorize(&caller).map_err(|error| ServiceError {
                                message: format!("operation {index}: {}", error.message),
                                ..error
                            })
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    // The ledger checks the batch and its operations (refused whole if bad).
                    Ok(ApplyRequest { operations, detail: body.detail })
                });
                match body {
                    Ok(body) => {
                        bank.stats.transfers_requests.fetch_add(1, Ordering::Relaxed);
                        bank.forward(request, replier.clone(), ledger_subject::APPLY_SUBJECT, body)
                    }
                    Err(error) => replier.reply_bytes(&request, Err(error)).await,
                }
            }
        }));
    }
    {
        let mut endpoint = add_endpoint(&group, subject::HISTORY, subject::HISTORY).await?;
        let replier = Replier::new(subject::HISTORY, errors.clone());
        let bank = bank.clone();
        tasks.push(tokio::spawn(async move {
            while let Some(request) = endpoint.next().await {
                let body =
                    crate::identity::caller(request.message.headers.as_ref()).and_then(|caller| {
                        let body = decode::<HistoryRequest>(&request.message.payload)?;
                        crate::ledger::history_query(&body)?;
                        caller.may_read("account", &body.account)?;
                        Ok(body)
                    });
                match body {
                    Ok(body) => bank.forward(
                        request,
                        replier.clone(),
                        ledger_subject::HISTORY_SUBJECT,
                        body,
                    ),
                    Err(error) => replier.reply_bytes(&request, Err(error)).await,
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

impl Bank {
    /// Sends `body` to the ledger's `subject` and its reply (or error) back to the caller, in
    /// a task of its own: at most [`FORWARDED_IN_FLIGHT_MAX`] at once, the next ones wait in
    /// line, and beyond [`FORWARDED_WAITING_KIB_MAX`] of waiting payloads the caller gets
    /// `busy`.
    fn forward(
        self: &Arc<Self>,
        request: Request,
        replier: Replier,
        subject: &'static str,
        body: impl serde::Serialize + Send + Sync + 'static,
    ) {
        let bank = self.clone();
        tokio::spawn(async move {
            let kib = u32::try_from(request.message.payload.len() / 1024 + 1).unwrap_or(u32::MAX);
            let Ok(place) = bank.waiting.clone().try_acquire_many_owned(kib) else {
                let busy = ServiceError::new(ErrorCode::Busy, "too many requests waiting; retry");
                replier.reply_bytes(&request, Err(busy)).await;
                return;
            };
            let Ok(permit) = bank.forwarded.clone().acquire_owned().await else { return };
            drop(place);
            let reply = bank.ledger.request_raw(subject, &body).await;
            drop(permit);
            let result = reply.map_err(|error| match error {
                ClientError::Service(error) => error,
                // A batch is a change (applied once per id); a read is simply asked again.
                error if subject == ledger_subject::APPLY_SUBJECT => error.unanswered("the ledger"),
                error => reads::unread(&error),
            });
            replier.reply_bytes(&request, result).await;
        });
    }
}

fn parse_operation(
    endpoint: &str,
    caller: &Caller,
    payload: &[u8],
) -> Result<OperationRequest, ServiceError> {
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
