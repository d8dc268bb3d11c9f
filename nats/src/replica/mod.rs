//! Replication of the stateful services (ledger, tasks, chat, coins): no write is acknowledged
//! before it is on the NATS cluster, and any instance can take over.
//!
//! ## How
//! - Each service has a **log**: the JetStream stream `AGORA_LOG_<SERVICE>` (R3 on a cluster,
//!   `--replicas`). Its active instance's owner ([`crate::owner`]) turns every group into one
//!   entry (the SQLite patchset of its transaction plus the events it produced), appends it
//!   with `Nats-Expected-Last-Sequence` (fencing: it lands only if nobody else wrote since),
//!   and only then commits locally and replies. SQLite is each instance's *view* of the log.
//! - Instances run as **active** or **standby**. Standbys follow the log (an ordered consumer)
//!   and apply entries to their own SQLite. The active one holds the lease in
//!   `AGORA_LEASES` ([`lease`]); when it stops renewing, a standby takes the lease, reads the
//!   log to its end, loads its state from its view and starts answering.
//! - A deposed active (lease run out, partitioned, or fenced by the log) stops: the process
//!   exits, and its supervisor starts it again as a standby.
//! - **Events** of committed changes travel inside the entry; the active relays them to the
//!   stream `AGORA_EVENTS` (deduplicated by message id; in fast-ingest batches, [`relay`]), and
//!   a new active relays again those the old one may not have stored, so none is lost.
//! - **Snapshots** ([`snapshot`]) bound the log and the replay time.
//!
//! docs/replication.md describes the protocol for operators.

pub mod lease;
pub mod log;
pub mod relay;
pub mod snapshot;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use async_nats::Client;
use async_nats::jetstream::{self, consumer, stream};
use futures::StreamExt;
use rusqlite::Connection;

pub use log::{Entry, Event, Journal};

use crate::sqlite::StoreError;
use crate::subjects::replica as subject;

/// Largest log message (a part of an entry, with headroom for headers).
const LOG_MESSAGE_BYTES_MAX: i32 = (log::PART_BYTES_MAX + 64 * 1024) as i32;
/// How long the events stream deduplicates a re-relayed event.
pub const EVENTS_DUPLICATE_WINDOW: Duration = Duration::from_secs(10 * 60);
/// How long an instance retries setting up its streams (a cluster that just started).
const SETUP_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a standby waits for the log to deliver the entries up to its end when it takes
/// over, at most.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(30);

/// The replication flags every replicated service takes.
#[derive(Debug, Clone, clap::Args)]
pub struct ReplicaArgs {
    /// Replicas of the log, events, lease and snapshot streams (3 on a three-node cluster:
    /// every acknowledged write survives the loss of a node and its disk).
    #[arg(long = "replicas", env = "AGORA_REPLICAS", default_value_t = 1)]
    pub replicas: usize,
    /// The active instance's lease, in milliseconds: a standby takes over this long after the
    /// active one stopped renewing it. The instance that makes the lease bucket sets it for
    /// every service; an instance asked for another lease warns and keeps the bucket's.
    #[arg(long, env = "AGORA_LEASE_MS", default_value_t = 2_000)]
    pub lease_ms: u64,
    /// Log entries between two snapshots.
    #[arg(long, env = "AGORA_SNAPSHOT_EVERY", default_value_t = 50_000)]
    pub snapshot_every: u64,
    /// Bytes the events stream keeps at most (the oldest go first).
    #[arg(long, env = "AGORA_EVENTS_BYTES_MAX", default_value_t = 1 << 30)]
    pub events_bytes_max: i64,
    /// How long the events stream keeps an event, in seconds (default 7 days).
    #[arg(long, env = "AGORA_EVENTS_MAX_AGE_S", default_value_t = 7 * 24 * 3600)]
    pub events_max_age_s: u64,
}

impl ReplicaArgs {
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!((1..=5).contains(&self.replicas), "replicas is 1..=5");
        anyhow::ensure!(
            (lease::LEASE_MS_MIN..=lease::LEASE_MS_MAX).contains(&self.lease_ms),
            "lease-ms is {}..={}",
            lease::LEASE_MS_MIN,
            lease::LEASE_MS_MAX
        );
        anyhow::ensure!(self.snapshot_every >= 100, "snapshot-every is at least 100");
        anyhow::ensure!(self.events_bytes_max >= 1 << 20, "events-bytes-max is at least 1 MiB");
        anyhow::ensure!(self.events_max_age_s >= 60, "events-max-age-s is at least 60");
        Ok(())
    }
}

/// Creates (or updates) a service's log stream and the shared events stream.
pub async fn ensure_streams(
    js: &jetstream::Context,
    service: &str,
    args: &ReplicaArgs,
) -> anyhow::Result<()> {
    js.create_or_update_stream(stream::Config {
        name: subject::log_stream(service),
        description: Some(format!("the replicated log of agora-{service}")),
        subjects: vec![subject::log(service)],
        storage: stream::StorageType::File,
        num_replicas: args.replicas,
        max_message_size: LOG_MESSAGE_BYTES_MAX,
        allow_direct: true,
        ..Default::default()
    })
    .await
    .with_context(|| format!("creating the {service} log stream"))?;
    let events = stream::Config {
        name: subject::EVENTS_STREAM.to_owned(),
        description: Some("every event of a committed change in Agora, once".to_owned()),
        subjects: subject::EVENTS_SUBJECTS.iter().map(|s| (*s).to_owned()).collect(),
        storage: stream::StorageType::File,
        num_replicas: args.replicas,
        max_bytes: args.events_bytes_max,
        max_age: Duration::from_secs(args.events_max_age_s),
        discard: stream::DiscardPolicy::Old,
        duplicate_window: EVENTS_DUPLICATE_WINDOW,
        allow_direct: true,
        allow_batch_publish: true,
        ..Default::default()
    };
    let stream = match js.get_or_create_stream(events).await {
        Ok(stream) => stream,
        Err(error) => anyhow::bail!("cannot create or open the events stream: {error}"),
    };
    // A stream made by an earlier version: it takes fast batches from now on (without, the
    // relay publishes events one by one).
    let config = &stream.cached_info().config;
    if !config.allow_batch_publish {
        let config = stream::Config { allow_batch_publish: true, ..config.clone() };
        if let Err(error) = js.update_stream(config).await {
            tracing::warn!(%error, "cannot let the events stream take fast batches");
        }
    }
    Ok(())
}

/// A replicated service as [`run`] needs it.
#[derive(Debug)]
pub struct Replicated<'a> {
    /// `ledger`, `tasks`, `chat`, `coins`.
    pub service: &'static str,
    pub args: &'a ReplicaArgs,
    /// The directory of this instance's view.
    pub data_dir: &'a Path,
    /// The SQLite file of the view in it.
    pub file: &'static str,
    /// Opens (creating and migrating) the view in a data directory.
    pub open: fn(&Path) -> Result<Connection, StoreError>,
}

impl Replicated<'_> {
    fn database(&self) -> PathBuf {
        self.data_dir.join(self.file)
    }
}

/// A unique name for this instance (host, process, random).
fn instance_name(service: &str) -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "host".to_owned());
    format!("{service}-{host}-{}-{}", std::process::id(), nuid::next())
}

/// Where the local view stands against the log: restores the snapshot when the view is
/// missing or older than what the log still holds.
async fn prepare_view(
    js: &jetstream::Context,
    replicated: &Replicated<'_>,
    snapshots: &async_nats::jetstream::object_store::ObjectStore,
) -> anyhow::Result<()> {
    let service = replicated.service;
    let database = replicated.database();
    let mut log = js.get_stream(subject::log_stream(service)).await?;
    let state = log.info().await?.state.clone();
    let local = if database.exists() {
        let path = database.clone();
        Some(tokio::task::spawn_blocking(move || log::applied(&Connection::open(path)?)).await??)
    } else {
        None
    };
    let first_needed = local.unwrap_or(0) + 1;
    let purged_past = state.last_sequence >= first_needed && state.first_sequence > first_needed;
    if let Some(applied) = local
        && applied > state.last_sequence
    {
        anyhow::bail!(
            "{} is at log entry {applied}, but the log ends at {}: this view does not belong to \
             this cluster's log (move it away to start from the log)",
            database.display(),
            state.last_sequence
        );
    }
    if local.is_none() || purged_past {
        match snapshot::restore(snapshots, service, &database).await? {
            Some(seq) if seq + 1 >= state.first_sequence || state.messages == 0 => {}
            Some(seq) => anyhow::bail!(
                "the {service} snapshot is at {seq} but the log starts at {}",
                state.first_sequence
            ),
            None if state.first_sequence > 1 => anyhow::bail!(
                "the {service} log starts at {} and there is no snapshot to start from",
                state.first_sequence
            ),
            None => {}
        }
    }
    Ok(())
}

/// Reads the log from `from` on (ordered consumer, no acknowledgements).
async fn follow(
    js: &jetstream::Context,
    service: &str,
    from: u64,
) -> anyhow::Result<consumer::pull::Ordered> {
    let stream = js.get_stream(subject::log_stream(service)).await?;
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig {
            deliver_policy: if from <= 1 {
                consumer::DeliverPolicy::All
            } else {
                consumer::DeliverPolicy::ByStartSequence { start_sequence: from }
            },
            ..Default::default()
        })
        .await
        .map_err(|e| anyhow::anyhow!("cannot follow the {service} log: {e}"))?;
    consumer.messages().await.map_err(|e| anyhow::anyhow!("cannot follow the {service} log: {e}"))
}

/// Applies one log message to the view; the entry it completed, if any. `seen` is the last
/// sequence read: a gap means the log was purged below a snapshot while this instance lagged,
/// and it must start again from the snapshot.
fn apply_message(
    conn: &Connection,
    assembler: &mut log::Assembler,
    seen: &mut u64,
    message: &jetstream::Message,
) -> anyhow::Result<Option<log::Read>> {
    let seq = message.info().map(|info| info.stream_sequence).unwrap_or(0);
    if *seen > 0 && seq != *seen + 1 {
        anyhow::bail!(
            "the log skipped from {} to {seq} (purged below a snapshot while this instance \
             lagged): start it again to restore the snapshot",
            *seen
        );
    }
    *seen = seq;
    let part = log::Part::from_message(seq, message.headers.as_ref(), message.payload.clone());
    let Some(read) = assembler.push(part)? else { return Ok(None) };
    log::apply(conn, read.seq, &read.entry)?;
    Ok(Some(read))
}

/// Runs one instance of a replicated service until `shutdown`: a standby following the log
/// until it takes the lease, then the active instance (`serve`, given the view, the journal
/// and a stop signal). A standby prints [`crate::telemetry::STANDBY_LINE`] once it follows.
/// Returns an error when this instance was deposed (its supervisor starts it again).
pub async fn run<Serve, Fut>(
    client: Client,
    replicated: Replicated<'_>,
    serve: Serve,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()>
where
    Serve: FnOnce(Connection, Journal, std::pin::Pin<Box<dyn Future<Output = ()> + Send>>) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let (service, args, database) = (replicated.service, replicated.args, replicated.database());
    args.validate()?;
    // Before anything touches the view (a snapshot's restore replaces its file).
    let _data_dir = crate::sqlite::lock_dir(replicated.data_dir)?;
    let js = jetstream::new(client.clone());
    // A cluster that just started may not have elected its JetStream leader yet: retry.
    let setup_deadline = tokio::time::Instant::now() + SETUP_TIMEOUT;
    let (snapshots, lease_bucket) = loop {
        let setup = async {
            ensure_streams(&js, service, args).await?;
            let snapshots = snapshot::store(&js, args.replicas).await?;
            let lease_bucket = lease::bucket(&js, args.replicas, args.lease_ms).await?;
            anyhow::Ok((snapshots, lease_bucket))
        };
        match setup.await {
            Ok(done) => break done,
            Err(error) if tokio::time::Instant::now() < setup_deadline => {
                tracing::warn!(%error, "JetStream not ready for the {service} log; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(error) => return Err(error),
        }
    };
    prepare_view(&js, &replicated, &snapshots).await?;
    let conn = (replicated.open)(replicated.data_dir)
        .with_context(|| format!("opening {}", database.display()))?;
    log::prepare(&conn)?;
    let mut applied = log::applied(&conn)?;
    let instance = instance_name(service);
    // The lease is the bucket's (see `lease::bucket`), whatever this instance was asked for.
    let (lease_bucket, lease_ms) = lease_bucket;
    let candidate = lease::Lease::new(lease_bucket, service, &instance, lease_ms);
    let mut shutdown = Box::pin(shutdown);

    // Standby: follow the log, campaign for the lease.
    let mut messages = follow(&js, service, applied + 1).await?;
    let mut assembler = log::Assembler::default();
    // The last log sequence read (0: none yet; the first one read may follow a purge).
    let mut seen = 0;
    let mut announced = false;
    let mut last_relayed = 0;
    let mut poll = tokio::time::interval(candidate.poll());
    let lease = loop {
        tokio::select! {
            () = &mut shutdown => return Ok(()),
            message = messages.next() => {
                let message = message
                    .ok_or_else(|| anyhow::anyhow!("the {service} log ended"))?
                    .map_err(|e| anyhow::anyhow!("reading the {service} log: {e}"))?;
                if let Some(read) = apply_message(&conn, &mut assembler, &mut seen, &message)? {
                    applied = read.seq;
                    last_relayed = read.relayed;
                }
            }
            _ = poll.tick() => {
                if let Some(lease) = candidate.campaign(crate::clock::now_ms()).await {
                    break lease;
                }
                if !announced {
                    announced = true;
                    let holder = candidate.holder().await.map(|h| h.instance).unwrap_or_default();
                    tracing::info!(instance, active = holder, applied, "standing by");
                    crate::telemetry::announce_standby(&format!("agora-{service}"));
                }
            }
        }
    };

    // Taking over: read the log to its end first.
    let took_over = std::time::Instant::now();
    let mut log_stream = js.get_stream(subject::log_stream(service)).await?;
    let last = log_stream.info().await?.state.last_sequence;
    let deadline = tokio::time::Instant::now() + CATCH_UP_TIMEOUT;
    while seen.max(applied) < last {
        let message = tokio::time::timeout_at(deadline, messages.next())
            .await
            .map_err(|_| anyhow::anyhow!("the {service} log did not deliver up to {last}"))?
            .ok_or_else(|| anyhow::anyhow!("the {service} log ended"))?
            .map_err(|e| anyhow::anyhow!("reading the {service} log: {e}"))?;
        if let Some(read) = apply_message(&conn, &mut assembler, &mut seen, &message)? {
            applied = read.seq;
            last_relayed = read.relayed;
        }
    }
    drop(messages);
    // An entry whose writer died before its last part is abandoned: this instance writes after
    // it.
    assembler.reset();

    // The upgrade of a store that has data but no log yet: its snapshot is the log's start.
    if applied == 0 && last == 0 {
        let path = database.clone();
        let has_data = tokio::task::spawn_blocking(move || has_rows(&path)).await??;
        if has_data {
            let seq = snapshot::take(
                &js,
                &snapshots,
                service,
                &subject::log_stream(service),
                &database,
                0,
            )
            .await?;
            tracing::info!(service, seq, "stored the existing data as the first snapshot");
        }
    }

    // The relay counts from what the log says is stored, and is handed again what the previous
    // active may not have stored (duplicates are dropped), ahead of this instance's entries.
    let relay = relay::Relay::start(js.clone(), last_relayed.min(applied));
    relay_again(&js, &relay, service, last_relayed, applied).await?;
    let journal = Journal {
        js: js.clone(),
        service,
        subject: subject::log(service),
        stream: subject::log_stream(service),
        instance: instance.clone(),
        applied,
        last,
        start: last,
        uncertain: false,
        lease: lease.clone(),
        relay,
        snapshots: snapshot::Snapshots::new(
            js.clone(),
            snapshots,
            service,
            database.clone(),
            args.snapshot_every,
            applied,
        ),
    };
    tracing::info!(
        instance,
        applied,
        took_ms = took_over.elapsed().as_millis() as u64,
        "active: the log is applied up to its end"
    );
    let deposed_lease = lease.clone();
    let stop: std::pin::Pin<Box<dyn Future<Output = ()> + Send>> = Box::pin(async move {
        deposed_lease.deposed().await;
    });
    let stop: std::pin::Pin<Box<dyn Future<Output = ()> + Send>> = Box::pin(async move {
        futures::future::select(stop, shutdown).await;
    });
    serve(conn, journal, stop).await?;
    if lease.is_deposed() {
        anyhow::bail!("agora-{service} was deposed ({}); start it again to follow", lease.why());
    }
    // A clean stop hands over at once: the lease is released for a standby to take.
    lease.depose("stopped");
    candidate.release(&lease).await;
    Ok(())
}

/// Whether any table of the store at `path` has a row (besides the replication position).
fn has_rows(path: &Path) -> anyhow::Result<bool> {
    let conn = Connection::open(path)?;
    let tables: Vec<String> = conn
        .prepare(
            "SELECT name FROM sqlite_master WHERE type = 'table'
             AND name NOT LIKE 'sqlite_%' AND name != 'agora_replication'",
        )?
        .query_map([], |row| row.get(0))?
        .collect::<Result<_, _>>()?;
    for table in tables {
        let any: bool = conn.query_row(
            &format!("SELECT EXISTS (SELECT 1 FROM \"{}\")", table.replace('"', "\"\"")),
            [],
            |row| row.get(0),
        )?;
        if any {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Hands the relay again the events of entries `(relayed, applied]` (their ids are the same).
async fn relay_again(
    js: &jetstream::Context,
    relay: &relay::Relay,
    service: &str,
    relayed: u64,
    applied: u64,
) -> anyhow::Result<()> {
    if applied <= relayed {
        return Ok(());
    }
    let stream = js.get_stream(subject::log_stream(service)).await?;
    let first = stream.cached_info().state.first_sequence.max(relayed + 1);
    let mut assembler = log::Assembler::default();
    let mut count = 0usize;
    for seq in first..=applied {
        let message = match stream.get_raw_message(seq).await {
            Ok(message) => message,
            Err(error) => {
                tracing::warn!(%error, seq, "cannot read a log entry to relay again");
                continue;
            }
        };
        let part = log::Part::from_message(seq, Some(&message.headers), message.payload);
        let Some(read) = assembler.push(part)? else { continue };
        count += read.entry.events.len();
        relay.send(service, read.seq, read.entry.events).await;
    }
    tracing::info!(service, from = relayed + 1, to = applied, count, "relaying events again");
    Ok(())
}
