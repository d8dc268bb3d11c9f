//! The ledger service (`agora-ledger`): balances, locks and operation records over NATS.
//!
//! ## Shape
//! Endpoint tasks decode and validate requests, then hand typed commands to the ledger's owner
//! thread ([`crate::owner`], state [`state::Ledger`]): it applies whatever is queued (up to
//! [`GROUP_COMMANDS_MAX`]) in one SQLite transaction, commits, and only then replies. So
//! concurrent commits from several bank instances share one fsync (group commit at the
//! ledger), and no reply ever reports something that is not yet on disk.

pub mod client;
pub mod group;
pub mod state;
pub mod store;
pub mod wire;

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agora_core::locks::LOCK_MANY_ACCOUNTS_MAX;
use agora_core::{AccountId, OperationId};
use async_nats::Client;
use async_nats::service::Request;
use futures::StreamExt;

use crate::error::{ErrorCode, ServiceError};
use crate::owner::{self, Limits, Mode};
use crate::replica::ReplicaArgs;
use crate::service::{ErrorCounts, Replier, add_endpoint};
use crate::subjects::{self, ledger as subject};
use agora_core::Asset;
use agora_core::ledger::Request as LedgerRequest;
use state::{Action, Command, Ledger};
use store::HistoryQuery;
use wire::{
    ApplyRequest, BalanceRequest, BalancesRequest, BatchCommitRequest, BatchGetRequest,
    BatchLockRequest, DETAIL_OPERATIONS_MAX, GetRequest, HistoryRequest, LOOKUP_IDS_MAX,
    LockRequest, LocksRequest, OPERATIONS_MAX, OperationEntry, OperationRequest, OperationsRequest,
    SUPPLY_EXCEPT_MAX, SetRequest, SupplyRequest, UnlockRequest,
};

/// Largest request the ledger accepts, in bytes (a batch commit of a full bank batch).
pub const LEDGER_REQUEST_BYTES_MAX: usize = 1024 * 1024;
/// Most commands executed in one SQLite transaction.
pub const GROUP_COMMANDS_MAX: usize = 512;
/// Most operation records or writes in one batch commit.
pub const COMMIT_ENTRIES_MAX: usize = LOCK_MANY_ACCOUNTS_MAX;
/// Most events in one batch commit (a transfer has two postings).
pub const COMMIT_EVENTS_MAX: usize = 2 * COMMIT_ENTRIES_MAX;
/// Most locks listed by `agora.ledger.locks`.
pub const LOCKS_LISTED_MAX: usize = 10_000;
/// Most operation records pruned per sweep, so a sweep never stalls the owner task.
pub const PRUNE_PER_SWEEP_MAX: usize = 10_000;
/// Most transfers pending at once (each is kept in memory to expire it).
pub const PENDING_TRANSFERS_MAX: usize = 1_000_000;
/// Most pending transfers expired per sweep.
pub const EXPIRE_PER_TICK_MAX: usize = 8_192;
/// History page sizes.
pub const HISTORY_LIMIT_DEFAULT: usize = 100;
pub const HISTORY_LIMIT_MAX: usize = 1_000;
/// How often expired locks are removed and old operation records pruned.
pub const SWEEP_INTERVAL: Duration = Duration::from_millis(250);

/// Ledger configuration: the flags of `agora-ledger`.
#[derive(Debug, Clone, clap::Args)]
pub struct LedgerConfig {
    /// Directory of the SQLite database (created if missing).
    #[arg(long, env = "AGORA_LEDGER_DATA_DIR", default_value = "data/ledger")]
    pub data_dir: PathBuf,
    /// How long idempotency records of operation ids are kept, in milliseconds.
    #[arg(long, env = "AGORA_LEDGER_OPERATION_RETENTION_MS", default_value_t = 24 * 60 * 60 * 1000)]
    pub operation_retention_ms: u64,
    /// How many idempotency records are kept at most (the oldest go first); about 24 bytes of
    /// memory each.
    #[arg(long, env = "AGORA_LEDGER_OPERATION_RECORDS_MAX", default_value_t = 2_000_000)]
    pub operation_records_max: usize,
    /// Most requests queued for the storage thread before new ones get `busy`.
    #[arg(long, env = "AGORA_LEDGER_QUEUE_MAX", default_value_t = 16_384)]
    pub queue_max: usize,
    #[command(flatten)]
    pub replica: ReplicaArgs,
}

/// Counters shown in `$SRV.STATS`.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct LedgerStats {
    transactions: u64,
    commands: u64,
    largest_group: usize,
    locks_held: usize,
    pending_transfers: usize,
    storage_errors: u64,
}

/// Runs one ledger instance until `shutdown` resolves: a standby following the ledger's log
/// until it becomes the active one (see `crate::replica`). `on_ready` is called once every
/// endpoint of the active one is subscribed.
pub async fn run(
    client: Client,
    config: LedgerConfig,
    on_ready: impl FnOnce(),
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let replicated = crate::replica::Replicated {
        service: "ledger",
        args: &config.replica,
        data_dir: &config.data_dir,
        file: store::DATABASE_FILE,
        open: store::open,
    };
    crate::replica::run(
        client.clone(),
        replicated,
        |conn, journal, stop| serve(client.clone(), config.clone(), conn, journal, on_ready, stop),
        shutdown,
    )
    .await
}

/// The active ledger: its owner over the view, its endpoints, until `stop`.
async fn serve(
    client: Client,
    config: LedgerConfig,
    conn: rusqlite::Connection,
    journal: crate::replica::Journal,
    on_ready: impl FnOnce(),
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let boot_epoch = store::boot_epoch(&conn)?;
    let stats = Arc::new(Mutex::new(LedgerStats::default()));
    let ledger = Ledger::load(
        &conn,
        boot_epoch,
        config.operation_retention_ms,
        config.operation_records_max,
        stats.clone(),
    )?;
    let (command_tx, inbox) = owner::queue(config.queue_max);
    let limits = Limits {
        group_max: GROUP_COMMANDS_MAX,
        tick: SWEEP_INTERVAL,
        synchronous: store::SYNCHRONOUS,
        // Every bank call waits on the ledger: no thread hops on the way (its groups are small;
        // a durable commit leaves the runtime's thread for its fsync).
        mode: Mode::Task,
    };
    let owner_thread = owner::spawn_replicated("ledger", conn, ledger, inbox, limits, journal)?;

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
        ("apply", subject::APPLY),
        ("history", subject::HISTORY),
        ("balance", subject::BALANCE),
        ("balances", subject::BALANCES),
        ("supply", subject::SUPPLY),
        ("operations", subject::OPERATIONS),
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
                        if let Err(command) = commands.try_send(command)
                            && let Some((request, replier)) = command.reply
                        {
                            let busy = ServiceError::new(ErrorCode::Busy, "ledger queue full");
                            replier.reply_bytes(&request, Err(busy)).await;
                        }
                    }
                }
            }
        }));
    }
    // Subscriptions are in place at the server before anyone is told we are ready.
    crate::client::barrier(&client).await?;
    tracing::info!(data_dir = %config.data_dir.display(), "ledger ready");
    on_ready();

    shutdown.await;
    tracing::info!("ledger stopping");
    for task in &tasks {
        task.abort();
    }
    drop(tasks);
    drop(command_tx);
    service.stop().await.ok();
    // The owner drains what is queued, commits and stops once every queue handle is gone.
    owner_thread.join().await;
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
    // The ledger is the bank's: no person reaches it (their accounts import no ledger subject,
    // and a request stamped as a person's is refused here too).
    crate::identity::caller(request.message.headers.as_ref())?.require_service("the ledger")?;
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
                asset: Asset::money(),
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
                events: Vec::new(),
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
                asset: parse_asset(body.asset.as_deref())?,
                owner: body.owner,
                batch: true,
            })
        }
        "batch-commit" => {
            let body: BatchCommitRequest = decode(payload)?;
            parse_commit(body)
        }
        "apply" => parse_apply(decode(payload)?),
        "history" => {
            let body: HistoryRequest = decode(payload)?;
            Ok(Action::History(history_query(&body)?))
        }
        "balance" => {
            let body: BalanceRequest = decode(payload)?;
            let key = (AccountId::parse(&body.account)?, parse_asset(body.asset.as_deref())?);
            Ok(Action::Balance { key, at_ms: body.at_ms })
        }
        "balances" => {
            let body: BalancesRequest = decode(payload)?;
            Ok(Action::Balances(AccountId::parse(&body.account)?))
        }
        "supply" => {
            let body: SupplyRequest = decode(payload)?;
            let asset = Asset::parse(&body.asset)?;
            if asset.is_money() {
                return Err(ServiceError::invalid(
                    "the supply of money is not summed; name an asset",
                ));
            }
            if body.except.len() > SUPPLY_EXCEPT_MAX {
                return Err(ServiceError::invalid(format!(
                    "at most {SUPPLY_EXCEPT_MAX} accounts in except"
                )));
            }
            let except =
                body.except.iter().map(|a| AccountId::parse(a)).collect::<Result<_, _>>()?;
            Ok(Action::Supply { asset, except })
        }
        "operations" => {
            let body: OperationsRequest = decode(payload)?;
            if body.ids.is_empty() || body.ids.len() > LOOKUP_IDS_MAX {
                return Err(ServiceError::invalid(format!("ids: 1 to {LOOKUP_IDS_MAX}")));
            }
            for id in &body.ids {
                OperationId::parse_recorded(id)?;
            }
            Ok(Action::Operations(body.ids))
        }
        "locks" => {
            let body: LocksRequest = decode_or_default(payload)?;
            Ok(Action::Locks { limit: body.limit.unwrap_or(1000).min(LOCKS_LISTED_MAX) })
        }
        other => Err(ServiceError::new(ErrorCode::Internal, format!("no endpoint {other}"))),
    }
}

/// `money` unless named.
pub fn parse_asset(asset: Option<&str>) -> Result<Asset, ServiceError> {
    Ok(asset.map(Asset::parse).transpose()?.unwrap_or_default())
}

/// A page of history as asked for, within its bounds.
pub fn history_query(body: &HistoryRequest) -> Result<HistoryQuery, ServiceError> {
    let limit = body.limit.unwrap_or(HISTORY_LIMIT_DEFAULT);
    if !(1..=HISTORY_LIMIT_MAX).contains(&limit) {
        return Err(ServiceError::invalid(format!("limit must be 1..={HISTORY_LIMIT_MAX}")));
    }
    let (from_ms, to_ms) = (body.from_ms.unwrap_or(0), body.to_ms.unwrap_or(u64::MAX));
    if from_ms >= to_ms {
        return Err(ServiceError::invalid("from_ms must be before to_ms"));
    }
    Ok(HistoryQuery {
        key: (AccountId::parse(&body.account)?, parse_asset(body.asset.as_deref())?),
        from_ms,
        to_ms,
        before: body.before.unwrap_or(u64::MAX),
        limit,
    })
}

/// Checks a batch of operations as a whole (size, an open chain) and each of them; any bad
/// one refuses the request, and nothing is applied.
fn parse_operations(
    operations: &[OperationRequest],
    detail: bool,
) -> Result<Vec<LedgerRequest>, ServiceError> {
    if operations.is_empty() {
        return Err(ServiceError::invalid("operations must not be empty"));
    }
    if operations.len() > OPERATIONS_MAX {
        return Err(ServiceError::invalid(format!(
            "at most {OPERATIONS_MAX} operations per request, got {}",
            operations.len()
        )));
    }
    if detail && operations.len() > DETAIL_OPERATIONS_MAX {
        return Err(ServiceError::invalid(format!(
            "detail is for at most {DETAIL_OPERATIONS_MAX} operations"
        )));
    }
    if operations.last().is_some_and(|last| last.linked) {
        return Err(ServiceError::invalid(
            "the last operation is linked: its chain never ends (link only to a next operation)",
        ));
    }
    operations
        .iter()
        .enumerate()
        .map(|(index, operation)| {
            operation.to_request().map_err(|error| ServiceError {
                message: format!("operation {index}: {}", error.message),
                ..error
            })
        })
        .collect()
}

fn parse_apply(body: ApplyRequest) -> Result<Action, ServiceError> {
    let requests = parse_operations(&body.operations, body.detail)?;
    let shown = body.operations.into_iter().map(|op| op.id).collect();
    Ok(Action::Apply { requests, shown, detail: body.detail })
}

fn parse_commit(body: BatchCommitRequest) -> Result<Action, ServiceError> {
    let BatchCommitRequest { owner, writes, operations, release, events } = body;
    for (what, len, max) in [
        ("writes", writes.len(), COMMIT_ENTRIES_MAX),
        ("operations", operations.len(), COMMIT_ENTRIES_MAX),
        ("release", release.len(), COMMIT_ENTRIES_MAX),
        ("events", events.len(), COMMIT_EVENTS_MAX),
    ] {
        if len > max {
            return Err(ServiceError::invalid(format!("at most {max} {what}")));
        }
    }
    let events = events
        .into_iter()
        .map(|e| Ok((AccountId::parse(&e.account)?, bytes::Bytes::from(e.event.get().to_owned()))))
        .collect::<Result<Vec<_>, ServiceError>>()?;
    let writes = writes
        .into_iter()
        .map(|w| Ok((AccountId::parse(&w.account)?, w.token, w.balance)))
        .collect::<Result<Vec<_>, ServiceError>>()?;
    let operations = operations
        .into_iter()
        .map(|entry: OperationEntry| {
            Ok((OperationId::parse_recorded(&entry.id)?, entry.record.get().to_owned()))
        })
        .collect::<Result<Vec<_>, ServiceError>>()?;
    let release = release
        .into_iter()
        .map(|r| Ok((AccountId::parse(&r.account)?, r.token)))
        .collect::<Result<Vec<_>, ServiceError>>()?;
    Ok(Action::Commit { owner, writes, operations, release, single: false, events })
}
