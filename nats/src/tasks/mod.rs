//! The task service (`agora-tasks`): accepts tasks, queues them for the workers, and records
//! every task's lifecycle.
//!
//! ## Shape
//! - Endpoint tasks (on the async runtime) decode and validate requests, then hand commands to
//!   the service's owner thread ([`crate::owner`], full queue: `busy`).
//! - The owner ([`state::Tasks`]) holds the in-memory table of unfinished tasks; it applies a
//!   group of commands in one SQLite transaction using `agora_core::Lifecycle`, commits, and
//!   only then replies and publishes events (`agora.tasks.events.<id>`).
//! - Work goes to the workers through the JetStream work-queue stream [`subject::STREAM`]
//!   (one subject and one durable pull consumer per priority, shared by every worker).
//!
//! ## Nothing is lost
//! A submitted task is committed before its reply and published to the stream after it, with
//! `Nats-Msg-Id` = task id (so a republish inside the stream's duplicate window is dropped by
//! JetStream). A failed publish is retried; after a crash, startup compares the unfinished
//! tasks with the ids in the stream and republishes the missing ones. Workers claim each
//! attempt here and ack the message only after this service recorded the outcome, so a task is
//! always either finished in the store or has a message in the stream. Duplicate deliveries
//! are harmless: the first outcome wins (`agora_core::tasks::lifecycle`). A message that
//! exhausted its deliveries without an outcome (its workers kept dying) is turned into a dead
//! letter when JetStream's max-deliveries advisory arrives.
//!
//! ## Files
//! `mod.rs` the service, [`state`] the owner's state, [`store`] its SQL, [`wire`] the JSON,
//! `client.rs` the calls on `AgoraClient`, [`worker`] the worker (`agora-worker`).

pub mod client;
pub mod queue;
pub mod schedule;
pub mod state;
pub mod store;
pub mod wire;
pub mod worker;
pub mod workflow;

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use agora_core::{Caller, Role, TaskState};
use anyhow::Context as _;
use async_nats::Client;
use async_nats::jetstream::{self, consumer, stream};
use futures::StreamExt;

use crate::error::{ErrorCode, ServiceError};
use crate::owner::{self, Limits, Mode};
use crate::service::{
    ErrorCounts, Replier, add_endpoint, decode, decode_limited, decode_or_default,
};
use crate::subjects::tasks as subject;
use agora_core::tasks::schedule::{self as rules, Spec};
use agora_core::tasks::workflow::WorkflowState;
use state::{Command, Envelope, Pending, ScheduleAction, Tasks};
use store::{ListFilter, ScheduleRow};
use wire::{
    ClaimRequest, FinishRequest, ListRequest, Priority, ProgressRequest, QueuedTask,
    ScheduleListRequest, ScheduleNameRequest, SchedulePutRequest, SubmitRequest, TaskIdRequest,
    WaitRequest, WorkflowIdRequest, WorkflowListRequest, WorkflowSubmitRequest, parse_op,
};
mod parse;
use parse::{parse_command, parse_schedule, parse_workflow};

/// Every endpoint of the task service (names, also subjects below [`subject::GROUP`]).
const ENDPOINTS: [&str; 8] = [
    subject::SUBMIT,
    subject::GET,
    subject::LIST,
    subject::CANCEL,
    subject::WAIT,
    subject::CLAIM,
    subject::PROGRESS,
    subject::FINISH,
];

/// The recurring-schedule endpoints (names; subjects below [`subject::SCHEDULES_GROUP`]).
const SCHEDULE_ENDPOINTS: [(&str, &str); 5] = [
    ("schedule-put", subject::SCHEDULE_PUT),
    ("schedule-list", subject::SCHEDULE_LIST),
    ("schedule-pause", subject::SCHEDULE_PAUSE),
    ("schedule-resume", subject::SCHEDULE_RESUME),
    ("schedule-delete", subject::SCHEDULE_DELETE),
];

/// The workflow endpoints (names; subjects below [`subject::WORKFLOWS_GROUP`]).
const WORKFLOW_ENDPOINTS: [(&str, &str); 4] = [
    ("workflow-submit", subject::WORKFLOW_SUBMIT),
    ("workflow-get", subject::WORKFLOW_GET),
    ("workflow-list", subject::WORKFLOW_LIST),
    ("workflow-cancel", subject::WORKFLOW_CANCEL),
];

/// A delayed task due this soon runs now.
const DELAY_MS_MIN: u64 = 500;

/// Largest submission, in bytes.
pub const SUBMIT_BYTES_MAX: usize = 256 * 1024;
/// Largest finish report (a result), in bytes.
pub const FINISH_BYTES_MAX: usize = 768 * 1024;
/// Room for headers next to a submitted task's message in the work queue.
const QUEUE_HEADROOM: usize = 1024;
/// Largest `agora.tasks.list` request, in bytes.
pub const LIST_BYTES_MAX: usize = 4 * 1024;
/// Longest `wait_ms` / `timeout_ms`.
pub const WAIT_MS_MAX: u64 = 60_000;
/// Most waiting requests at once (beyond: `busy`).
pub const WAITERS_MAX: usize = 100_000;
/// `agora.tasks.list` page sizes.
pub const LIST_LIMIT_DEFAULT: usize = 50;
pub const LIST_LIMIT_MAX: usize = 1_000;
/// Most history events kept per task; later progress events are published but not kept.
pub const HISTORY_MAX: u32 = 200;
/// Most commands in one SQLite transaction.
pub const GROUP_COMMANDS_MAX: usize = 1_024;
/// Commands queued for the owner thread at most (beyond: `busy`).
pub const COMMAND_QUEUE_MAX: usize = 16_384;
/// Most bytes of a client id and of a worker id.
pub const CLIENT_ID_BYTES_MAX: usize = 128;
/// Tasks the work-queue stream holds at most, per unfinished task allowed (`--pending-max`).
const STREAM_MESSAGES_PER_PENDING: usize = 2;
/// JetStream's window for dropping a republished task (same `Nats-Msg-Id`).
const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
/// Messages a worker consumer may have delivered and not yet acked, in all.
const ACK_PENDING_MAX: i64 = 20_000;
/// People whose submit rate is tracked at once, at most.
const RATE_KEYS_MAX: usize = 100_000;
/// Finished tasks pruned per sweep at most.
const PRUNE_BATCH: usize = 10_000;
/// How often the owner sweeps (waiter timeouts, publish retries, pruning).
const TICK: Duration = Duration::from_millis(50);
const PRUNE_EVERY_MS: u64 = 1_000;

/// Task service configuration: the flags of `agora-tasks`.
#[derive(Debug, Clone, clap::Args)]
pub struct TasksConfig {
    /// Directory of the SQLite database (created if missing).
    #[arg(long, env = "AGORA_TASKS_DATA_DIR", default_value = "data/tasks")]
    pub data_dir: PathBuf,
    /// Most unfinished (queued or running) tasks; beyond, submissions get `busy`.
    #[arg(long, env = "AGORA_TASKS_PENDING_MAX", default_value_t = 100_000)]
    pub pending_max: usize,
    /// How long finished tasks are kept, in milliseconds (default 7 days).
    #[arg(long, env = "AGORA_TASKS_RETAIN_MS", default_value_t = 7 * 24 * 60 * 60 * 1000)]
    pub retain_ms: u64,
    /// Most tasks kept in the store (the oldest finished ones go first).
    #[arg(long, env = "AGORA_TASKS_MAX", default_value_t = 1_000_000)]
    pub tasks_max: u64,
    /// How long a worker may hold a task without a heartbeat before it goes to another one.
    #[arg(long, env = "AGORA_TASKS_ACK_WAIT_MS", default_value_t = 30_000)]
    pub ack_wait_ms: u64,
    /// Attempts per task at most; a task failing them all becomes a dead letter.
    #[arg(long, env = "AGORA_TASKS_MAX_DELIVER", default_value_t = 5)]
    pub max_deliver: i64,
    /// A person's tasks in the work queue at once, at most; the rest of theirs wait their turn
    /// (oldest first), so one person's flood never starves another's tasks. Components' tasks
    /// are not limited.
    #[arg(long, env = "AGORA_TASKS_USER_QUEUE_MAX", default_value_t = 32)]
    pub user_queue_max: usize,
    /// Tasks a person may submit per second, on average (a workflow counts its steps); beyond:
    /// `rate_limited`. Components are not limited.
    #[arg(long, env = "AGORA_TASKS_USER_SUBMIT_RATE", default_value_t = 1_000)]
    pub user_submit_rate: u64,
    /// Tasks a person may submit at once, above the rate (at least 100: a whole workflow).
    #[arg(long, env = "AGORA_TASKS_USER_SUBMIT_BURST", default_value_t = 10_000)]
    pub user_submit_burst: u64,
    /// Replicas of the work-queue stream (3 on a three-node cluster: tasks survive a node loss).
    #[arg(long, env = "AGORA_TASKS_STREAM_REPLICAS", default_value_t = 1)]
    pub stream_replicas: usize,
    #[command(flatten)]
    pub replica: crate::replica::ReplicaArgs,
}

impl TasksConfig {
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!((1..=10_000_000).contains(&self.pending_max), "pending-max is 1..=10^7");
        anyhow::ensure!(self.tasks_max >= 1, "tasks-max must be positive");
        anyhow::ensure!(
            (100..=3_600_000).contains(&self.ack_wait_ms),
            "ack-wait-ms is 100..=3600000"
        );
        anyhow::ensure!((1..=100).contains(&self.max_deliver), "max-deliver is 1..=100");
        anyhow::ensure!((1..=5).contains(&self.stream_replicas), "stream-replicas is 1..=5");
        anyhow::ensure!(
            (1..=1_000_000).contains(&self.user_queue_max),
            "user-queue-max is 1..=1000000"
        );
        anyhow::ensure!(
            (1..=10_000_000).contains(&self.user_submit_rate),
            "user-submit-rate is 1..=10000000"
        );
        anyhow::ensure!(
            (agora_core::tasks::workflow::STEPS_MAX as u64..=100_000_000)
                .contains(&self.user_submit_burst),
            "user-submit-burst is 100..=100000000"
        );
        Ok(())
    }
}

/// Creates (or updates) the work-queue stream and the workers' consumers.
pub async fn ensure_queue(js: &jetstream::Context, config: &TasksConfig) -> anyhow::Result<()> {
    let queue_max = i64::try_from(config.pending_max.saturating_mul(STREAM_MESSAGES_PER_PENDING))
        .unwrap_or(i64::MAX);
    js.create_or_update_stream(stream::Config {
        name: subject::STREAM.to_owned(),
        description: Some("Agora tasks waiting for a worker".to_owned()),
        subjects: vec![subject::QUEUE_HIGH.to_owned(), subject::QUEUE_NORMAL.to_owned()],
        retention: stream::RetentionPolicy::WorkQueue,
        storage: stream::StorageType::File,
        discard: stream::DiscardPolicy::New,
        max_messages: queue_max,
        max_message_size: i32::try_from(SUBMIT_BYTES_MAX + QUEUE_HEADROOM).unwrap_or(i32::MAX),
        duplicate_window: DUPLICATE_WINDOW,
        num_replicas: config.stream_replicas,
        ..Default::default()
    })
    .await
    .context("creating the task stream")?;
    let stream = js.get_stream(subject::STREAM).await?;
    for (name, filter) in [
        (subject::CONSUMER_HIGH, subject::QUEUE_HIGH),
        (subject::CONSUMER_NORMAL, subject::QUEUE_NORMAL),
    ] {
        stream
            .create_consumer(consumer::pull::Config {
                durable_name: Some(name.to_owned()),
                description: Some("shared by every agora-worker".to_owned()),
                filter_subject: filter.to_owned(),
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait: Duration::from_millis(config.ack_wait_ms),
                max_deliver: config.max_deliver,
                max_ack_pending: ACK_PENDING_MAX,
                ..Default::default()
            })
            .await
            .with_context(|| format!("creating consumer {name}"))?;
    }
    Ok(())
}

/// Ids of the tasks that have a message in the stream now (from its per-subject state).
async fn ids_in_stream(js: &jetstream::Context) -> anyhow::Result<std::collections::HashSet<u64>> {
    let stream = js.get_stream(subject::STREAM).await?;
    let mut subjects = stream.info_with_subjects(subject::QUEUE_ALL).await?;
    let mut ids = std::collections::HashSet::new();
    while let Some(entry) = subjects.next().await {
        let (queued, _count) = entry?;
        if let Ok(id) = crate::subjects::last_token(&queued).parse() {
            ids.insert(id);
        }
    }
    Ok(ids)
}

/// Runs one task service instance until `shutdown` resolves: a standby following the task
/// log until it becomes the active one (see `crate::replica`).
pub async fn run(
    client: Client,
    config: TasksConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    config.validate()?;
    let replicated = crate::replica::Replicated {
        service: "tasks",
        args: &config.replica,
        data_dir: &config.data_dir,
        file: store::DATABASE_FILE,
        open: store::open,
    };
    crate::replica::run(
        client.clone(),
        replicated,
        |conn, journal, stop| serve(client.clone(), config.clone(), conn, journal, stop),
        shutdown,
    )
    .await
}

/// The active task service: its owner over the view, its endpoints, until `shutdown`.
async fn serve(
    client: Client,
    config: TasksConfig,
    conn: rusqlite::Connection,
    journal: crate::replica::Journal,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let js = jetstream::new(client.clone());
    ensure_queue(&js, &config).await?;
    let runs = schedule::ensure_stream(&js, &config).await?;
    for consumer in [subject::CONSUMER_HIGH, subject::CONSUMER_NORMAL] {
        crate::metrics::watch_consumer(&js, subject::STREAM, consumer);
    }
    let errors = ErrorCounts::default();
    let mut tasks = Tasks::load(&conn, client.clone(), js.clone(), config, &errors)?;
    let present = ids_in_stream(&js).await.context("reading the task stream")?;
    let republished = tasks.republish_missing(&conn, &present)?;
    tracing::info!(unfinished = tasks.unfinished(), republished, "task store loaded");
    // The server runs what the store says should run: nothing more, nothing less.
    let (delayed, recurring) = tasks.wanted_schedules(&conn)?;
    let (put, removed) = schedule::reconcile(&js, subject::SCHEDULED_TASKS, delayed).await?;
    let (put_r, removed_r) = schedule::reconcile(&js, subject::RECURRING_ALL, recurring).await?;
    tracing::info!(put = put + put_r, removed = removed + removed_r, "schedules reconciled");
    let limits = Limits {
        group_max: GROUP_COMMANDS_MAX,
        tick: TICK,
        synchronous: store::SYNCHRONOUS,
        mode: Mode::Thread,
    };
    let (queue, inbox) = owner::queue(COMMAND_QUEUE_MAX);
    let owner_thread = owner::spawn_replicated("tasks", conn, tasks, inbox, limits, journal)?;

    let stats_errors = errors.clone();
    let service = crate::service::builder(&client, HashMap::new())
        .description("Agora task service: submit, query and cancel tasks; workers report here")
        .stats_handler(move |endpoint, _| stats_errors.snapshot(&endpoint))
        .start(subject::SERVICE, env!("CARGO_PKG_VERSION"))
        .await
        .map_err(|e| anyhow::anyhow!("cannot start service: {e}"))?;
    let group = service.group(subject::GROUP);
    let schedules_group = service.group(subject::SCHEDULES_GROUP);
    let mut loops = Vec::new();
    for (name, verb) in SCHEDULE_ENDPOINTS {
        let mut endpoint = add_endpoint(&schedules_group, name, verb).await?;
        let queue = queue.clone();
        let replier = Replier::new(name, errors.clone());
        let js = js.clone();
        loops.push(tokio::spawn(async move {
            while let Some(request) = endpoint.next().await {
                let caller = crate::identity::caller(request.message.headers.as_ref());
                let parsed = caller.and_then(|caller| {
                    let command = parse_schedule(verb, &caller, &request.message.payload)?;
                    Ok((command, caller))
                });
                let (command, caller) = match parsed {
                    Ok(parsed) => parsed,
                    Err(error) => {
                        replier.reply_bytes(&request, Err(error)).await;
                        continue;
                    }
                };
                // A schedule is put in the stream before it is recorded: the server judges
                // its pattern and time zone, and says why it refuses one.
                if let Command::PutSchedule(row) = &command
                    && !row.paused
                {
                    let change = schedule::Change::recurring(
                        &row.owner,
                        &row.name,
                        row.spec.clone(),
                        row.time_zone.clone(),
                    );
                    if let Err(error) = schedule::apply(&js, &change).await {
                        replier.reply_bytes(&request, Err(error)).await;
                        continue;
                    }
                }
                let pending = Box::new(Pending { request, endpoint: name, caller });
                if let Err(Envelope::Request(pending, _)) =
                    queue.try_send(Envelope::Request(pending, command))
                {
                    let busy =
                        ServiceError::new(ErrorCode::Busy, "the task service is overloaded; retry");
                    replier.reply_bytes(&pending.request, Err(busy)).await;
                }
            }
        }));
    }
    for name in ENDPOINTS {
        let endpoint = add_endpoint(&group, name, name).await?;
        loops.push(serve_endpoint(endpoint, name, name, queue.clone(), &errors, parse_command));
    }
    let workflows_group = service.group(subject::WORKFLOWS_GROUP);
    for (name, verb) in WORKFLOW_ENDPOINTS {
        let endpoint = add_endpoint(&workflows_group, name, verb).await?;
        loops.push(serve_endpoint(endpoint, name, verb, queue.clone(), &errors, parse_workflow));
    }
    loops.push(tokio::spawn(schedule::runs(runs, queue.clone())));
    loops.push(tokio::spawn(dead_letters(client.clone(), js, queue.clone())));
    drop(queue);
    // Subscriptions are in place at the server before anyone is told we are ready.
    crate::client::barrier(&client).await?;
    crate::telemetry::announce_ready(subject::SERVICE);
    shutdown.await;
    for task in &loops {
        task.abort();
    }
    drop(loops);
    drop(service);
    // The owner drains what is queued, commits and stops once every queue handle is gone.
    owner_thread.join().await;
    client.flush().await.ok();
    Ok(())
}

/// Answers one endpoint: each request is parsed on the runtime (`parse` gets the verb, the
/// caller and the payload) and handed to the owner; a full queue answers `busy`.
fn serve_endpoint(
    mut endpoint: crate::service::MeteredEndpoint,
    name: &'static str,
    verb: &'static str,
    queue: owner::Queue<Envelope>,
    errors: &ErrorCounts,
    parse: fn(&str, &Caller, &[u8]) -> Result<Command, ServiceError>,
) -> tokio::task::JoinHandle<()> {
    let replier = Replier::new(name, errors.clone());
    tokio::spawn(async move {
        while let Some(request) = endpoint.next().await {
            let caller = crate::identity::caller(request.message.headers.as_ref());
            let parsed = caller
                .and_then(|caller| Ok((parse(verb, &caller, &request.message.payload)?, caller)));
            match parsed {
                Ok((command, caller)) => {
                    let pending = Box::new(Pending { request, endpoint: name, caller });
                    if let Err(Envelope::Request(pending, _)) =
                        queue.try_send(Envelope::Request(pending, command))
                    {
                        let busy = ServiceError::new(
                            ErrorCode::Busy,
                            "the task service is overloaded; retry",
                        );
                        replier.reply_bytes(&pending.request, Err(busy)).await;
                    }
                }
                Err(error) => replier.reply_bytes(&request, Err(error)).await,
            }
        }
    })
}

/// Turns JetStream's max-deliveries advisories into dead letters and removes the message.
async fn dead_letters(client: Client, js: jetstream::Context, queue: owner::Queue<Envelope>) {
    #[derive(serde::Deserialize)]
    struct Advisory {
        stream_seq: u64,
        deliveries: u64,
    }
    let Ok(mut advisories) = client.subscribe(subject::MAX_DELIVERIES_ADVISORY).await else {
        tracing::error!("cannot subscribe to max-deliveries advisories");
        return;
    };
    while let Some(message) = advisories.next().await {
        let Ok(advisory) = serde_json::from_slice::<Advisory>(&message.payload) else {
            continue;
        };
        let Ok(stream) = js.get_stream(subject::STREAM).await else { continue };
        let Ok(stored) = stream.get_raw_message(advisory.stream_seq).await else { continue };
        let Ok(task) = serde_json::from_slice::<QueuedTask>(&stored.payload) else { continue };
        let Ok(id) = task.id.parse() else { continue };
        let reason = format!(
            "gave up after {} deliveries without an outcome (its workers stopped or timed out)",
            advisory.deliveries
        );
        match queue.send_waiting(Envelope::DeadLetter { id, reason }).await {
            Ok(()) => {
                stream.delete_message(advisory.stream_seq).await.ok();
            }
            Err(_) => tracing::error!(id, "the owner's queue stayed full: a dead letter was lost"),
        }
    }
}

#[cfg(test)]
mod tests;
