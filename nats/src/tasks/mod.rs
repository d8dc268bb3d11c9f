//! The task service (`agora-tasks`): accepts tasks, queues them for the workers, and records
//! every task's lifecycle.
//!
//! ## Shape
//! - Endpoint tasks (on the async runtime) decode and validate requests, then hand commands to
//!   **one owner thread** through a bounded channel (full: `busy`).
//! - The owner thread holds the [`TaskStore`] and the in-memory table of unfinished tasks. It
//!   drains whatever commands are queued (up to [`GROUP_COMMANDS_MAX`]), applies them in one
//!   SQLite transaction using `agora_core::Lifecycle`, commits, and only then replies and
//!   publishes events (`agora.tasks.events.<id>`).
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
//! are harmless: the first outcome wins (`agora_core::task`). A message that exhausted its
//! deliveries without an outcome (its workers kept dying) is turned into a dead letter when
//! JetStream's max-deliveries advisory arrives.

pub mod store;
pub mod wire;
pub mod worker;

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::mpsc as std_mpsc;
use std::time::Duration;

use agora_core::{Lifecycle, Report, TaskError, TaskEvent, TaskState};
use anyhow::Context as _;
use async_nats::jetstream::{self, consumer, stream};
use async_nats::service::Request;
use async_nats::{Client, HeaderMap};
use bytes::Bytes;
use futures::StreamExt;
use serde_json::value::RawValue;

use crate::clock::now_ms;
use crate::error::{ErrorCode, ServiceError};
use crate::service::{ErrorCounts, Replier, add_endpoint, decode, decode_limited, encode};
use crate::subjects::tasks as subject;
use crate::tasks::store::{ListFilter, NewTask, StoreError, TaskRow, TaskStore};
use crate::tasks::wire::{
    ClaimReply, ClaimRequest, FinishReply, FinishRequest, ListReply, ListRequest, Priority,
    ProgressReply, ProgressRequest, QueuedTask, SubmitRequest, TaskEventWire, TaskIdRequest,
    TaskView, WaitRequest, parse_op,
};

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

/// Largest submission, in bytes.
pub const SUBMIT_BYTES_MAX: usize = 256 * 1024;
/// Largest finish report (a result), in bytes.
pub const FINISH_BYTES_MAX: usize = 768 * 1024;
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
/// Finished tasks pruned per sweep at most.
const PRUNE_BATCH: usize = 10_000;
/// How often the owner sweeps (waiter timeouts, publish retries, pruning).
const TICK: Duration = Duration::from_millis(50);
const PRUNE_EVERY_MS: u64 = 1_000;
/// Pause before republishing a task whose publish failed.
const REPUBLISH_AFTER_MS: u64 = 1_000;

/// Task service configuration (the binary fills it from flags and environment).
#[derive(Debug, Clone)]
pub struct TasksConfig {
    /// Directory holding `tasks.db`.
    pub data_dir: PathBuf,
    /// Most unfinished tasks at once; a submission beyond gets `busy`.
    pub pending_max: usize,
    /// Finished tasks are kept this long...
    pub retain_ms: u64,
    /// ...and at most this many tasks are kept.
    pub tasks_max: u64,
    /// How long a worker may hold a message without acking or heartbeating it.
    pub ack_wait_ms: u64,
    /// Deliveries of one task at most (its attempts); then it is a dead letter.
    pub max_deliver: i64,
    /// Replicas of the work-queue stream (and its consumers).
    pub stream_replicas: usize,
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
        Ok(())
    }
}

/// Creates (or updates) the work-queue stream and the workers' consumers.
pub async fn ensure_queue(js: &jetstream::Context, config: &TasksConfig) -> anyhow::Result<()> {
    let queue_max = i64::try_from(config.pending_max.saturating_mul(2)).unwrap_or(i64::MAX);
    js.create_or_update_stream(stream::Config {
        name: subject::STREAM.to_owned(),
        description: Some("Agora tasks waiting for a worker".to_owned()),
        subjects: vec![subject::QUEUE_HIGH.to_owned(), subject::QUEUE_NORMAL.to_owned()],
        retention: stream::RetentionPolicy::WorkQueue,
        storage: stream::StorageType::File,
        discard: stream::DiscardPolicy::New,
        max_messages: queue_max,
        max_message_size: i32::try_from(SUBMIT_BYTES_MAX + 1024).unwrap_or(i32::MAX),
        duplicate_window: Duration::from_secs(120),
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
                max_ack_pending: 20_000,
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

/// Runs the task service until `shutdown` resolves.
pub async fn run(
    client: Client,
    config: TasksConfig,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    config.validate()?;
    let js = jetstream::new(client.clone());
    ensure_queue(&js, &config).await?;
    let store = TaskStore::open(&config.data_dir)
        .with_context(|| format!("opening {}", config.data_dir.display()))?;
    let errors = ErrorCounts::default();
    let (commands, inbox) = std_mpsc::sync_channel(COMMAND_QUEUE_MAX);
    let mut owner = Owner::new(store, client.clone(), js.clone(), config, errors.clone())?;
    let present = ids_in_stream(&js).await.context("reading the task stream")?;
    let republished = owner.republish_missing(&present)?;
    tracing::info!(unfinished = owner.active.len(), republished, "task store loaded");
    let owner_thread =
        std::thread::Builder::new().name("tasks-owner".into()).spawn(move || owner.run(inbox))?;

    let stats_errors = errors.clone();
    let service = crate::service::builder(&client, HashMap::new())
        .description("Agora task service: submit, query and cancel tasks; workers report here")
        .stats_handler(move |endpoint, _| stats_errors.snapshot(&endpoint))
        .start(subject::SERVICE, env!("CARGO_PKG_VERSION"))
        .await
        .map_err(|e| anyhow::anyhow!("cannot start service: {e}"))?;
    let group = service.group(subject::GROUP);
    let mut loops = Vec::new();
    for name in ENDPOINTS {
        let mut endpoint = add_endpoint(&group, name, name).await?;
        let commands = commands.clone();
        let replier = Replier::new(name, errors.clone());
        loops.push(tokio::spawn(async move {
            while let Some(request) = endpoint.next().await {
                match parse_command(name, &request.message.payload) {
                    Ok(command) => {
                        let pending = Pending { request, endpoint: name };
                        let envelope = Envelope::Request(Box::new(pending), command);
                        if let Err(
                            std_mpsc::TrySendError::Full(Envelope::Request(pending, _))
                            | std_mpsc::TrySendError::Disconnected(Envelope::Request(pending, _)),
                        ) = commands.try_send(envelope)
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
        }));
    }
    loops.push(tokio::spawn(dead_letters(client.clone(), js, commands.clone())));
    // Subscriptions are in place at the server before anyone is told we are ready.
    crate::client::barrier(&client).await?;
    crate::telemetry::announce_ready(subject::SERVICE);
    shutdown.await;
    for task in &loops {
        task.abort();
    }
    drop(commands);
    drop(loops);
    drop(service);
    // The owner drains what is queued, commits and stops once every sender is gone.
    tokio::task::spawn_blocking(move || owner_thread.join()).await.ok();
    client.flush().await.ok();
    Ok(())
}

/// Turns JetStream's max-deliveries advisories into dead letters and removes the message.
async fn dead_letters(
    client: Client,
    js: jetstream::Context,
    commands: std_mpsc::SyncSender<Envelope>,
) {
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
        if commands.send(Envelope::DeadLetter { id, reason }).is_ok() {
            stream.delete_message(advisory.stream_seq).await.ok();
        }
    }
}

/// A request waiting for its reply.
#[derive(Debug)]
struct Pending {
    request: Request,
    endpoint: &'static str,
}

/// What the owner thread is asked to do.
#[derive(Debug)]
enum Command {
    Submit {
        op: &'static str,
        args: String,
        priority: Priority,
        client_id: Option<String>,
        wait_ms: u64,
    },
    Get {
        id: u64,
    },
    List(ListFilter),
    Cancel {
        id: u64,
    },
    Wait {
        id: u64,
        timeout_ms: u64,
    },
    Claim {
        id: u64,
        worker: String,
    },
    Progress {
        id: u64,
        worker: String,
        percent: u8,
    },
    Finish {
        id: u64,
        worker: String,
        claim: bool,
        outcome: Result<String, (String, Option<u64>)>,
    },
}

#[derive(Debug)]
enum Envelope {
    Request(Box<Pending>, Command),
    DeadLetter { id: u64, reason: String },
}

fn parse_id(text: &str) -> Result<u64, ServiceError> {
    text.parse::<u64>().ok().filter(|id| *id > 0).ok_or_else(|| {
        ServiceError::invalid(format!("{text:?} is not a task id (task ids are positive integers)"))
    })
}

fn check_name(what: &str, text: &str) -> Result<(), ServiceError> {
    if text.is_empty() || text.len() > CLIENT_ID_BYTES_MAX || text.chars().any(|c| c.is_control()) {
        return Err(ServiceError::invalid(format!(
            "{what} must be 1..={CLIENT_ID_BYTES_MAX} bytes without control characters"
        )));
    }
    Ok(())
}

/// Decodes and validates a request (on the runtime, before it reaches the owner thread).
fn parse_command(endpoint: &str, payload: &[u8]) -> Result<Command, ServiceError> {
    Ok(match endpoint {
        subject::SUBMIT => {
            let submit: SubmitRequest = decode_limited(payload, SUBMIT_BYTES_MAX)?;
            let op = parse_op(&submit.op, &submit.args)?;
            if let Some(id) = &submit.id {
                check_name("id", id)?;
            }
            let wait_ms = submit.wait_ms.unwrap_or(0);
            if wait_ms > WAIT_MS_MAX {
                return Err(ServiceError::invalid(format!("wait_ms is at most {WAIT_MS_MAX}")));
            }
            // serde_json maps sort their keys: the same args give the same text.
            let args = serde_json::from_str::<serde_json::Value>(submit.args.get())
                .map_err(|e| ServiceError::invalid(format!("bad args: {e}")))?
                .to_string();
            Command::Submit {
                op: op.name(),
                args,
                priority: Priority::parse(submit.priority.as_deref())?,
                client_id: submit.id,
                wait_ms,
            }
        }
        subject::GET => Command::Get { id: parse_id(&decode::<TaskIdRequest>(payload)?.id)? },
        subject::CANCEL => Command::Cancel { id: parse_id(&decode::<TaskIdRequest>(payload)?.id)? },
        subject::WAIT => {
            let wait: WaitRequest = decode(payload)?;
            if wait.timeout_ms > WAIT_MS_MAX {
                return Err(ServiceError::invalid(format!("timeout_ms is at most {WAIT_MS_MAX}")));
            }
            Command::Wait { id: parse_id(&wait.id)?, timeout_ms: wait.timeout_ms }
        }
        subject::LIST => {
            let list: ListRequest = crate::service::decode_or_default(payload, 4096)?;
            let state = match list.state.as_deref() {
                None => None,
                Some(text) => Some(TaskState::parse(text).ok_or_else(|| {
                    ServiceError::invalid(format!(
                        "state must be one of queued, running, completed, failed, cancelled; not {text:?}"
                    ))
                })?),
            };
            if let Some(op) = &list.op
                && !agora_core::ops::OP_NAMES.contains(&op.as_str())
            {
                return Err(ServiceError::invalid(format!("unknown op {op:?}")));
            }
            let limit = list.limit.unwrap_or(LIST_LIMIT_DEFAULT);
            if !(1..=LIST_LIMIT_MAX).contains(&limit) {
                return Err(ServiceError::invalid(format!("limit is 1..={LIST_LIMIT_MAX}")));
            }
            let before = list.before.as_deref().map(parse_id).transpose()?;
            Command::List(ListFilter {
                state,
                op: list.op,
                before,
                dead_letter: list.dead_letter,
                limit,
            })
        }
        subject::CLAIM => {
            let claim: ClaimRequest = decode(payload)?;
            check_name("worker", &claim.worker)?;
            Command::Claim { id: parse_id(&claim.id)?, worker: claim.worker }
        }
        subject::PROGRESS => {
            let progress: ProgressRequest = decode(payload)?;
            check_name("worker", &progress.worker)?;
            if progress.percent > 100 {
                return Err(ServiceError::invalid("percent is 0..=100"));
            }
            Command::Progress {
                id: parse_id(&progress.id)?,
                worker: progress.worker,
                percent: progress.percent,
            }
        }
        subject::FINISH => {
            let finish: FinishRequest = decode_limited(payload, FINISH_BYTES_MAX)?;
            check_name("worker", &finish.worker)?;
            let outcome = match (finish.result, finish.error) {
                (Some(result), None) => Ok(result.get().to_owned()),
                (None, Some(error)) => Err((error, finish.retry_in_ms)),
                _ => return Err(ServiceError::invalid("give exactly one of result and error")),
            };
            Command::Finish {
                id: parse_id(&finish.id)?,
                worker: finish.worker,
                claim: finish.claim,
                outcome,
            }
        }
        other => {
            return Err(ServiceError::new(ErrorCode::Internal, format!("no endpoint {other}")));
        }
    })
}

/// An unfinished task, kept in memory by the owner.
#[derive(Debug)]
struct Active {
    life: Lifecycle,
    /// History events stored so far.
    events: u32,
}

#[derive(Debug)]
struct Waiter {
    pending: Pending,
    deadline_ms: u64,
}

/// What a group produced, sent once it committed.
#[derive(Debug, Default)]
struct Outbox {
    replies: Vec<(Pending, Result<Bytes, ServiceError>)>,
    events: Vec<(String, Bytes)>,
    cancels: Vec<u64>,
    /// Cancelled queued tasks whose message can go from the stream.
    purges: Vec<u64>,
    enqueue: Vec<(u64, Priority, Bytes)>,
}

struct Owner {
    store: TaskStore,
    client: Client,
    js: jetstream::Context,
    runtime: tokio::runtime::Handle,
    config: TasksConfig,
    repliers: HashMap<&'static str, Replier>,
    active: HashMap<u64, Active>,
    next_id: u64,
    waiters: HashMap<u64, Vec<Waiter>>,
    waiter_count: usize,
    republish: Vec<(u64, u64)>,
    /// Ids whose publish to the stream failed (from the publishing tasks).
    publish_failed: (std_mpsc::Sender<u64>, std_mpsc::Receiver<u64>),
    last_sweep_ms: u64,
    last_prune_ms: u64,
}

/// Why a report changed nothing.
#[derive(Debug)]
enum Refused {
    Finished(TaskState),
    Missing,
    Invalid(TaskError),
}

fn not_found(id: u64) -> ServiceError {
    ServiceError::new(ErrorCode::NotFound, format!("no task {id}"))
}

fn unavailable(error: &StoreError) -> ServiceError {
    ServiceError::new(ErrorCode::Unavailable, format!("task store failed ({error}); retry"))
}

fn raw(text: &str) -> Option<Box<RawValue>> {
    RawValue::from_string(text.to_owned()).ok()
}

fn view_of(row: &TaskRow) -> TaskView {
    let life = &row.lifecycle;
    TaskView {
        id: row.id.to_string(),
        state: life.state.as_str().to_owned(),
        op: Some(row.op.clone()),
        args: row.args.as_deref().and_then(raw),
        client_id: row.client_id.clone(),
        priority: Some(row.priority.clone()),
        attempts: Some(life.attempts),
        worker: life.worker.clone(),
        progress: Some(life.progress),
        submitted_ms: Some(row.submitted_ms),
        started_ms: life.started_ms,
        finished_ms: life.finished_ms,
        result: row.result.as_deref().and_then(raw),
        error: life.error.clone(),
        dead_letter: life.dead_letter,
        history: None,
    }
}

fn brief(id: u64, state: TaskState) -> TaskView {
    TaskView { id: id.to_string(), state: state.as_str().to_owned(), ..TaskView::default() }
}

impl Owner {
    fn new(
        store: TaskStore,
        client: Client,
        js: jetstream::Context,
        config: TasksConfig,
        errors: ErrorCounts,
    ) -> anyhow::Result<Self> {
        let repliers =
            ENDPOINTS.into_iter().map(|name| (name, Replier::new(name, errors.clone()))).collect();
        let mut owner = Self {
            store,
            client,
            js,
            runtime: tokio::runtime::Handle::current(),
            config,
            repliers,
            active: HashMap::new(),
            next_id: 1,
            waiters: HashMap::new(),
            waiter_count: 0,
            republish: Vec::new(),
            publish_failed: std_mpsc::channel(),
            last_sweep_ms: 0,
            last_prune_ms: 0,
        };
        owner.reload()?;
        Ok(owner)
    }

    /// (Re)builds the in-memory table of unfinished tasks from the store.
    fn reload(&mut self) -> Result<(), StoreError> {
        self.active = self
            .store
            .active()?
            .into_iter()
            .map(|(row, events)| (row.id, Active { life: row.lifecycle, events }))
            .collect();
        self.next_id = self.store.max_id()? + 1;
        Ok(())
    }

    /// Publishes every unfinished task that has no message in the stream.
    fn republish_missing(
        &mut self,
        present: &std::collections::HashSet<u64>,
    ) -> Result<usize, StoreError> {
        let mut missing: Vec<u64> =
            self.active.keys().filter(|id| !present.contains(id)).copied().collect();
        missing.sort_unstable();
        let mut outbox = Outbox::default();
        for id in &missing {
            self.enqueue_stored(*id, &mut outbox)?;
        }
        self.publish_queue(outbox.enqueue);
        Ok(missing.len())
    }

    fn enqueue_stored(&self, id: u64, outbox: &mut Outbox) -> Result<(), StoreError> {
        if let Some(row) = self.store.get(id, false)? {
            let priority = Priority::parse(Some(&row.priority)).unwrap_or(Priority::Normal);
            let message = queue_message(id, &row.op, row.args.as_deref().unwrap_or("{}"));
            outbox.enqueue.push((id, priority, message));
        }
        Ok(())
    }

    fn run(mut self, inbox: std_mpsc::Receiver<Envelope>) {
        while let Some(group) = crate::sqlite::next_group(&inbox, TICK, GROUP_COMMANDS_MAX) {
            let now = now_ms();
            if !group.is_empty() {
                self.run_group(now, group);
            }
            self.sweep(now);
        }
        tracing::info!("task owner stopped");
    }

    fn run_group(&mut self, now: u64, group: Vec<Envelope>) {
        let mut outbox = Outbox::default();
        let result = self.store.begin().and_then(|()| {
            for envelope in group {
                match envelope {
                    Envelope::Request(pending, command) => {
                        self.execute(now, *pending, command, &mut outbox)?;
                    }
                    Envelope::DeadLetter { id, reason } => {
                        let _refused =
                            self.report(now, id, Report::DeadLetter { reason }, None, &mut outbox)?;
                    }
                }
            }
            self.store.commit()
        });
        if let Err(error) = result {
            tracing::error!(%error, "task store transaction failed; rolling back");
            self.store.rollback();
            if let Err(error) = self.reload() {
                tracing::error!(%error, "cannot reload the task store");
            }
            let failure = unavailable(&error);
            outbox.replies.iter_mut().for_each(|(_, reply)| *reply = Err(failure.clone()));
            outbox.events.clear();
            outbox.cancels.clear();
            outbox.purges.clear();
            outbox.enqueue.clear();
        }
        self.deliver(outbox);
    }

    /// Sends replies, events and cancel notices, then hands new work to the stream.
    fn deliver(&self, outbox: Outbox) {
        let Outbox { replies, events, cancels, purges, enqueue } = outbox;
        self.runtime.block_on(async {
            for (pending, reply) in replies {
                self.repliers[pending.endpoint].reply_bytes(&pending.request, reply).await;
            }
            for (subject, payload) in events {
                self.client.publish(subject, payload).await.ok();
            }
            for id in cancels {
                let payload = Bytes::from(format!(r#"{{"id":"{id}"}}"#));
                self.client.publish(subject::CONTROL_CANCEL, payload).await.ok();
            }
        });
        self.publish_queue(enqueue);
        if !purges.is_empty() {
            let js = self.js.clone();
            self.runtime.spawn(async move {
                let Ok(stream) = js.get_stream(subject::STREAM).await else { return };
                for id in purges {
                    for high in [true, false] {
                        let queued = subject::queue(high, &id.to_string());
                        stream.purge().filter(queued).await.ok();
                    }
                }
            });
        }
    }

    fn publish_queue(&self, enqueue: Vec<(u64, Priority, Bytes)>) {
        for (id, priority, payload) in enqueue {
            let js = self.js.clone();
            let failed = self.publish_failed.0.clone();
            self.runtime.spawn(async move {
                let subject = subject::queue(priority == Priority::High, &id.to_string());
                let mut headers = HeaderMap::new();
                headers.insert(async_nats::header::NATS_MESSAGE_ID, id.to_string().as_str());
                let acked = match js.publish_with_headers(subject, headers, payload).await {
                    Ok(ack) => ack.await.map(drop).map_err(|e| e.to_string()),
                    Err(error) => Err(error.to_string()),
                };
                if let Err(error) = acked {
                    tracing::warn!(id, %error, "could not queue task; will retry");
                    failed.send(id).ok();
                }
            });
        }
    }

    fn sweep(&mut self, now: u64) {
        if now.saturating_sub(self.last_sweep_ms) < TICK.as_millis() as u64 {
            return;
        }
        self.last_sweep_ms = now;
        while let Ok(id) = self.publish_failed.1.try_recv() {
            self.republish.push((id, now + REPUBLISH_AFTER_MS));
        }
        let mut outbox = Outbox::default();
        // Waiters whose time is up get the task as it is.
        let expired: Vec<u64> = self
            .waiters
            .iter()
            .filter(|(_, list)| list.iter().any(|w| w.deadline_ms <= now))
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            let Some(list) = self.waiters.remove(&id) else { continue };
            let (due, keep): (Vec<_>, Vec<_>) =
                list.into_iter().partition(|w| w.deadline_ms <= now);
            self.waiter_count -= due.len();
            if !keep.is_empty() {
                self.waiters.insert(id, keep);
            }
            let view = self.store.get(id, true).ok().flatten().map(|row| view_of(&row));
            for waiter in due {
                let reply = view.as_ref().ok_or_else(|| not_found(id)).and_then(encode);
                outbox.replies.push((waiter.pending, reply));
            }
        }
        // Tasks whose publish failed go out again.
        let (due, later): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.republish).into_iter().partition(|(_, at)| *at <= now);
        self.republish = later;
        for (id, _) in due {
            if self.active.contains_key(&id) && self.enqueue_stored(id, &mut outbox).is_err() {
                self.republish.push((id, now + REPUBLISH_AFTER_MS));
            }
        }
        if now.saturating_sub(self.last_prune_ms) >= PRUNE_EVERY_MS {
            self.last_prune_ms = now;
            let before = now.saturating_sub(self.config.retain_ms);
            let pruned = self.store.begin().and_then(|()| {
                let n = self.store.prune(before, self.config.tasks_max, PRUNE_BATCH)?;
                self.store.commit().map(|()| n)
            });
            match pruned {
                Ok(0) => {}
                Ok(n) => tracing::debug!(pruned = n, "pruned finished tasks"),
                Err(error) => {
                    self.store.rollback();
                    tracing::warn!(%error, "pruning failed");
                }
            }
        }
        self.deliver(outbox);
    }

    fn execute(
        &mut self,
        now: u64,
        pending: Pending,
        command: Command,
        out: &mut Outbox,
    ) -> Result<(), StoreError> {
        let reply: Result<Bytes, ServiceError> = match command {
            Command::Submit { op, args, priority, client_id, wait_ms } => {
                match self.submit(now, op, &args, priority, client_id.as_deref(), out)? {
                    Ok((id, state)) if wait_ms > 0 && !state.is_terminal() => {
                        self.add_waiter(id, pending, now + wait_ms, out);
                        return Ok(());
                    }
                    Ok((id, _)) if wait_ms > 0 => self.full_view(id),
                    Ok((id, state)) => encode(&brief(id, state)),
                    Err(error) => Err(error),
                }
            }
            Command::Get { id } => match self.store.get(id, true)? {
                Some(row) => {
                    let mut view = view_of(&row);
                    let history = self.store.history(id)?;
                    view.history =
                        Some(history.iter().filter_map(|e| serde_json::from_str(e).ok()).collect());
                    encode(&view)
                }
                None => Err(not_found(id)),
            },
            Command::List(filter) => {
                let rows = self.store.list(&filter)?;
                let next_before = (rows.len() == filter.limit)
                    .then(|| rows.last().map(|row| row.id.to_string()))
                    .flatten();
                let tasks = rows
                    .iter()
                    .map(|row| TaskView { args: None, result: None, ..view_of(row) })
                    .collect();
                encode(&ListReply { tasks, next_before })
            }
            Command::Cancel { id } => match self.report(now, id, Report::Cancel, None, out)? {
                Ok(_) => encode(&brief(id, TaskState::Cancelled)),
                Err(Refused::Finished(state)) => Err(ServiceError::new(
                    ErrorCode::Conflict,
                    format!("task {id} is already {state}"),
                )),
                Err(refused) => Err(refusal(id, &refused)),
            },
            Command::Wait { id, timeout_ms } => {
                if self.active.contains_key(&id) && timeout_ms > 0 {
                    self.add_waiter(id, pending, now + timeout_ms, out);
                    return Ok(());
                }
                match self.store.get(id, true)? {
                    Some(row) => encode(&view_of(&row)),
                    None => Err(not_found(id)),
                }
            }
            Command::Claim { id, worker } => {
                match self.report(now, id, Report::Claim { worker }, None, out)? {
                    Ok(life) => encode(&ClaimReply {
                        run: true,
                        state: life.state.as_str().to_owned(),
                        attempt: life.attempts,
                    }),
                    Err(Refused::Finished(state)) => encode(&ClaimReply {
                        run: false,
                        state: state.as_str().to_owned(),
                        attempt: 0,
                    }),
                    Err(refused) => Err(refusal(id, &refused)),
                }
            }
            Command::Progress { id, worker, percent } => {
                match self.report(now, id, Report::Progress { worker, percent }, None, out)? {
                    Ok(_) => encode(&ProgressReply { stop: false }),
                    Err(Refused::Finished(_)) => encode(&ProgressReply { stop: true }),
                    Err(refused) => Err(refusal(id, &refused)),
                }
            }
            Command::Finish { id, worker, claim, outcome } => {
                let mut reports = Vec::with_capacity(2);
                if claim {
                    reports.push(Report::Claim { worker: worker.clone() });
                }
                let result = match outcome {
                    Ok(result) => {
                        reports.push(Report::Complete { worker });
                        Some(result)
                    }
                    Err((error, retry_in_ms)) => {
                        reports.push(Report::Fail { worker, error, retry_in_ms });
                        None
                    }
                };
                match self.report_all(now, id, reports, result.as_deref(), out)? {
                    Ok(life) => encode(&FinishReply {
                        state: life.state.as_str().to_owned(),
                        accepted: true,
                    }),
                    Err(Refused::Finished(state)) => {
                        encode(&FinishReply { state: state.as_str().to_owned(), accepted: false })
                    }
                    Err(refused) => Err(refusal(id, &refused)),
                }
            }
        };
        out.replies.push((pending, reply));
        Ok(())
    }

    fn full_view(&self, id: u64) -> Result<Bytes, ServiceError> {
        match self.store.get(id, true) {
            Ok(Some(row)) => encode(&view_of(&row)),
            Ok(None) => Err(not_found(id)),
            Err(error) => Err(unavailable(&error)),
        }
    }

    fn add_waiter(&mut self, id: u64, pending: Pending, deadline_ms: u64, out: &mut Outbox) {
        if self.waiter_count >= WAITERS_MAX {
            let busy =
                ServiceError::new(ErrorCode::Busy, "too many waiting requests; poll with get");
            out.replies.push((pending, Err(busy)));
            return;
        }
        self.waiter_count += 1;
        self.waiters.entry(id).or_default().push(Waiter { pending, deadline_ms });
    }

    /// Accepts a submission: `Ok(Ok((id, state)))`, or a refusal.
    fn submit(
        &mut self,
        now: u64,
        op: &str,
        args: &str,
        priority: Priority,
        client_id: Option<&str>,
        out: &mut Outbox,
    ) -> Result<Result<(u64, TaskState), ServiceError>, StoreError> {
        if let Some(client_id) = client_id
            && let Some(existing) = self.store.by_client_id(client_id)?
        {
            let same = existing.op == op
                && existing.priority == priority.as_str()
                && existing.args.as_deref() == Some(args);
            return Ok(if same {
                Ok((existing.id, existing.lifecycle.state))
            } else {
                Err(ServiceError::invalid(format!(
                    "id {client_id:?} was already used for a different task ({})",
                    existing.id
                )))
            });
        }
        if self.active.len() >= self.config.pending_max {
            return Ok(Err(ServiceError::new(
                ErrorCode::Busy,
                format!(
                    "{} tasks are waiting or running (the limit); retry later",
                    self.active.len()
                ),
            )));
        }
        let id = self.next_id;
        self.store.insert(&NewTask {
            id,
            client_id,
            op,
            args,
            priority: priority.as_str(),
            submitted_ms: now,
        })?;
        self.next_id += 1;
        let queued = TaskEventWire { event: "queued".to_owned(), at_ms: now, ..Default::default() };
        self.store.append_event(id, 0, &serde_json::to_string(&queued).unwrap_or_default())?;
        self.active.insert(id, Active { life: Lifecycle::new(), events: 1 });
        out.events.push((subject::events(&id.to_string()), event_payload(id, queued)));
        out.enqueue.push((id, priority, queue_message(id, op, args)));
        Ok(Ok((id, TaskState::Queued)))
    }

    /// Applies a report to an unfinished task, stores and publishes its event, and answers
    /// the task's waiters once it finished.
    fn report(
        &mut self,
        now: u64,
        id: u64,
        report: Report,
        result: Option<&str>,
        out: &mut Outbox,
    ) -> Result<Result<Lifecycle, Refused>, StoreError> {
        self.report_all(now, id, vec![report], result, out)
    }

    /// Applies reports in order (all or nothing), stores the task once and its events, and
    /// answers the task's waiters once it finished.
    fn report_all(
        &mut self,
        now: u64,
        id: u64,
        reports: Vec<Report>,
        result: Option<&str>,
        out: &mut Outbox,
    ) -> Result<Result<Lifecycle, Refused>, StoreError> {
        let Some(active) = self.active.get_mut(&id) else {
            return Ok(match self.store.get(id, false)? {
                Some(row) => Err(Refused::Finished(row.lifecycle.state)),
                None => Err(Refused::Missing),
            });
        };
        let mut life = active.life.clone();
        let mut events = Vec::with_capacity(reports.len());
        for report in reports {
            match life.apply(now, report) {
                Ok(Some(event)) => events.push(event),
                Ok(None) => {}
                Err(TaskError::Finished(state)) => return Ok(Err(Refused::Finished(state))),
                Err(error) => return Ok(Err(Refused::Invalid(error))),
            }
        }
        active.life = life.clone();
        if events.is_empty() {
            return Ok(Ok(life));
        }
        self.store.update(id, &life, result)?;
        let mut wires = Vec::with_capacity(events.len());
        for event in &events {
            let wire = TaskEventWire::from_event(event, now);
            let keep = !matches!(event, TaskEvent::Progress { .. })
                || active.events < HISTORY_MAX.saturating_sub(20);
            if keep && active.events < HISTORY_MAX {
                let text = serde_json::to_string(&wire).unwrap_or_default();
                self.store.append_event(id, active.events, &text)?;
                active.events += 1;
            }
            match event {
                TaskEvent::Cancelled { was_running: true } => out.cancels.push(id),
                TaskEvent::Cancelled { was_running: false } => out.purges.push(id),
                _ => {}
            }
            wires.push(wire);
        }
        if life.state.is_terminal() {
            self.active.remove(&id);
            let result = result.and_then(raw);
            if let Some(waiters) = self.waiters.remove(&id) {
                self.waiter_count -= waiters.len();
                // The task as `get` and `wait` show it (read inside this transaction, so it
                // is the row just written): one view of a task, whoever asks.
                let reply = self.full_view(id);
                for waiter in waiters {
                    out.replies.push((waiter.pending, reply.clone()));
                }
            }
            if let Some(last) = wires.last_mut() {
                last.result = result;
            }
        }
        let subject = subject::events(&id.to_string());
        for wire in wires {
            out.events.push((subject.clone(), event_payload(id, wire)));
        }
        Ok(Ok(life))
    }
}

fn refusal(id: u64, refused: &Refused) -> ServiceError {
    match refused {
        Refused::Finished(state) => {
            ServiceError::new(ErrorCode::Conflict, format!("task {id} is already {state}"))
        }
        Refused::Missing => not_found(id),
        Refused::Invalid(error) => ServiceError::invalid(error.to_string()),
    }
}

fn event_payload(id: u64, mut wire: TaskEventWire) -> Bytes {
    wire.id = Some(id.to_string());
    Bytes::from(serde_json::to_vec(&wire).unwrap_or_default())
}

fn queue_message(id: u64, op: &str, args: &str) -> Bytes {
    let op = serde_json::to_string(op).unwrap_or_default();
    Bytes::from(format!(r#"{{"id":"{id}","op":{op},"args":{args}}}"#))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_requests_are_refused_before_the_owner() {
        let cases: [(&str, &str, &str); 14] = [
            (subject::SUBMIT, "", "empty"),
            (subject::SUBMIT, r#"{"op":"divide","args":{}}"#, "unknown op"),
            (subject::SUBMIT, r#"{"op":"sum","args":{"numbers":"1,2"}}"#, "bad args"),
            (subject::SUBMIT, r#"{"op":"sum","args":{"numbers":[1],"x":1}}"#, "unknown field"),
            (subject::SUBMIT, r#"{"op":"fibonacci","args":{"n":100001}}"#, "largest"),
            (subject::SUBMIT, r#"{"op":"sleep","args":{"ms":1},"priority":"urgent"}"#, "priority"),
            (subject::SUBMIT, r#"{"op":"sleep","args":{"ms":1},"wait_ms":60001}"#, "wait_ms"),
            (subject::SUBMIT, r#"{"op":"sleep","args":{"ms":1},"id":""}"#, "id must be"),
            (subject::GET, r#"{"id":"abc"}"#, "not a task id"),
            (subject::GET, r#"{"id":"0"}"#, "not a task id"),
            (subject::LIST, r#"{"state":"done"}"#, "state must be"),
            (subject::LIST, r#"{"limit":0}"#, "limit"),
            (subject::PROGRESS, r#"{"id":"1","worker":"w","percent":101}"#, "percent"),
            (subject::FINISH, r#"{"id":"1","worker":"w"}"#, "exactly one"),
        ];
        for (endpoint, payload, needle) in cases {
            let Err(error) = parse_command(endpoint, payload.as_bytes()) else {
                panic!("{endpoint} {payload} was accepted");
            };
            assert_eq!(error.code, ErrorCode::InvalidRequest, "{payload}");
            assert!(error.message.contains(needle), "{payload}: {}", error.message);
        }
        let Ok(Command::List(filter)) = parse_command(subject::LIST, b"") else { panic!("list") };
        assert_eq!(filter.limit, LIST_LIMIT_DEFAULT);
    }

    #[test]
    fn same_args_give_the_same_text() {
        let a: SubmitRequest =
            serde_json::from_str(r#"{"op":"sort","args":{"strings":["a"],"descending":true}}"#)
                .unwrap();
        let b: SubmitRequest =
            serde_json::from_str(r#"{"op":"sort","args":{"descending":true,"strings":["a"]}}"#)
                .unwrap();
        let text = |request: &SubmitRequest| match parse_command(
            subject::SUBMIT,
            &serde_json::to_vec(request).unwrap(),
        ) {
            Ok(Command::Submit { args, .. }) => args,
            other => panic!("{other:?}"),
        };
        assert_eq!(text(&a), text(&b));
        let message = queue_message(7, "sum", r#"{"numbers":[1]}"#);
        let task: QueuedTask = serde_json::from_slice(&message).unwrap();
        assert_eq!(
            (task.id.as_str(), task.op.as_str(), task.args.get()),
            ("7", "sum", r#"{"numbers":[1]}"#)
        );
    }
}
