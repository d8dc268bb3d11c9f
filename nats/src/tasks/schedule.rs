//! Delayed and recurring tasks on the NATS server's own scheduler (JetStream message
//! schedules, ADR-51): no timer of ours decides when a task runs.
//!
//! - The stream [`subject::SCHEDULE_STREAM`] (`allow_msg_schedules`, R3 on a cluster) holds one
//!   message per schedule, on its own subject: `agora.schedules.task.<id>` (`@at`: a delayed
//!   task) or `agora.schedules.recurring.<owner>.<name>` (`@every`, cron). The server keeps it
//!   and, on time, publishes its body to [`subject::FIRE`] in the same stream.
//! - The task service consumes the runs with the durable consumer [`subject::CONSUMER_FIRE`]
//!   and acknowledges one only after its owner committed what it did: a delayed task released
//!   to the work queue, or a recurring schedule's task submitted with the client id
//!   `schedule:<name>:<run's stream sequence>` (a redelivered run finds its task: once per
//!   tick).
//! - The task store is the record of what should be scheduled; the stream is what the server
//!   runs. At startup the active instance puts back what is missing and removes what should not
//!   be there (see [`reconcile`]); a schedule already in the stream is left alone, because
//!   publishing it again would restart an `@every` interval.
//!
//! The stream is a work queue: only the run subject has a consumer, so a schedule message is
//! never acknowledged away. Runs of recurring schedules carry a TTL ([`RUN_TTL`]): a run nobody
//! took within it (the task service was down that long) is dropped, not replayed late.

use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use async_nats::HeaderMap;
use async_nats::jetstream::{self, consumer, stream};
use bytes::Bytes;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use super::TasksConfig;
use super::state::{Envelope, Fire};
use crate::error::{ErrorCode, ServiceError};
use crate::owner;
use crate::subjects::tasks as subject;

/// Headers of ADR-51.
pub const SCHEDULE_HEADER: &str = "Nats-Schedule";
pub const TARGET_HEADER: &str = "Nats-Schedule-Target";
pub const TIME_ZONE_HEADER: &str = "Nats-Schedule-Time-Zone";
pub const TTL_HEADER: &str = "Nats-Schedule-TTL";
/// On a run: the next run's time (RFC 3339), or `purge` after the last.
pub const NEXT_HEADER: &str = "Nats-Schedule-Next";
/// A recurring schedule's run not taken within this long is dropped.
pub const RUN_TTL: &str = "3600s";
/// Recurring schedules per owner, and in all.
pub const SCHEDULES_PER_OWNER_MAX: u64 = 100;
pub const SCHEDULES_MAX: u64 = 10_000;
/// Largest schedule message (its body is a small JSON object).
const MESSAGE_BYTES_MAX: i32 = 4 * 1024;
/// How long a run may wait for its acknowledgement before it is delivered again.
const RUN_ACK_WAIT: Duration = Duration::from_secs(30);
/// Runs delivered and not yet acknowledged, at most.
const RUNS_ACK_PENDING_MAX: i64 = 1_000;
/// Pause before a failed publish or purge is tried again.
const RETRY_AFTER_MS: u64 = 1_000;

/// What a schedule's message carries, and so what each of its runs carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunBody {
    /// A delayed task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    /// A recurring schedule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// One change to the schedule stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Put (or replace) the schedule on `subject`.
    Put { subject: String, schedule: String, time_zone: Option<String>, ttl: bool, body: Bytes },
    /// Remove the schedule on `subject` (it stops).
    Remove { subject: String },
}

impl Change {
    /// A delayed task's run at its time (the `@at` header).
    pub fn delayed(id: u64, schedule: String) -> Self {
        let body = RunBody { task: Some(id.to_string()), owner: None, name: None };
        Self::Put {
            subject: subject::scheduled_task(&id.to_string()),
            schedule,
            time_zone: None,
            ttl: false,
            body: Bytes::from(serde_json::to_vec(&body).unwrap_or_default()),
        }
    }

    /// A recurring schedule.
    pub fn recurring(owner: &str, name: &str, schedule: String, time_zone: Option<String>) -> Self {
        let body =
            RunBody { task: None, owner: Some(owner.to_owned()), name: Some(name.to_owned()) };
        Self::Put {
            subject: subject::recurring(owner, name),
            schedule,
            time_zone,
            ttl: true,
            body: Bytes::from(serde_json::to_vec(&body).unwrap_or_default()),
        }
    }
}

/// Creates (or updates) the schedule stream and the task service's consumer of runs.
pub async fn ensure_stream(
    js: &jetstream::Context,
    config: &TasksConfig,
) -> anyhow::Result<consumer::PullConsumer> {
    // Every delayed task, every schedule, and runs waiting: bounded by the task service's own
    // limits.
    let messages_max = (config.pending_max as u64 + SCHEDULES_MAX) * 2;
    js.create_or_update_stream(stream::Config {
        name: subject::SCHEDULE_STREAM.to_owned(),
        description: Some("Agora's delayed and recurring tasks, run by the server".to_owned()),
        subjects: vec![subject::SCHEDULE_SUBJECTS.to_owned()],
        retention: stream::RetentionPolicy::WorkQueue,
        storage: stream::StorageType::File,
        discard: stream::DiscardPolicy::Old,
        max_messages: i64::try_from(messages_max).unwrap_or(i64::MAX),
        max_message_size: MESSAGE_BYTES_MAX,
        num_replicas: config.stream_replicas,
        allow_message_schedules: true,
        allow_message_ttl: true,
        ..Default::default()
    })
    .await
    .context("creating the schedule stream")?;
    let stream = js.get_stream(subject::SCHEDULE_STREAM).await?;
    let consumer = stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some(subject::CONSUMER_FIRE.to_owned()),
            description: Some("the task service's runs of delayed and recurring tasks".to_owned()),
            filter_subject: subject::FIRE.to_owned(),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: RUN_ACK_WAIT,
            max_ack_pending: RUNS_ACK_PENDING_MAX,
            ..Default::default()
        })
        .await
        .context("creating the consumer of runs")?;
    Ok(consumer)
}

/// Applies one change to the stream now, and says why the server refused it.
pub async fn apply(js: &jetstream::Context, change: &Change) -> Result<(), ServiceError> {
    match change {
        Change::Put { subject, schedule, time_zone, ttl, body } => {
            let mut headers = HeaderMap::new();
            headers.insert(SCHEDULE_HEADER, schedule.as_str());
            headers.insert(TARGET_HEADER, subject::FIRE);
            if let Some(zone) = time_zone {
                headers.insert(TIME_ZONE_HEADER, zone.as_str());
            }
            if *ttl {
                headers.insert(TTL_HEADER, RUN_TTL);
            }
            let acked = match js.publish_with_headers(subject.clone(), headers, body.clone()).await
            {
                Ok(ack) => ack.await.map(drop),
                Err(error) => Err(error),
            };
            acked.map_err(|error| refused(&error))
        }
        Change::Remove { subject } => {
            let stream = js.get_stream(subject::SCHEDULE_STREAM).await.map_err(|error| {
                ServiceError::new(ErrorCode::Unavailable, format!("schedule stream: {error}"))
            })?;
            stream.purge().filter(subject.clone()).await.map(drop).map_err(|error| {
                ServiceError::new(
                    ErrorCode::Unavailable,
                    format!("cannot remove {subject}: {error}"),
                )
            })
        }
    }
}

/// A refused schedule publish as a coded error: the server's pattern checks are
/// `invalid_request` (a bad cron, an unknown time zone), anything else `unavailable`.
fn refused(error: &async_nats::jetstream::context::PublishError) -> ServiceError {
    let server = std::error::Error::source(error)
        .and_then(|source| source.downcast_ref::<async_nats::jetstream::Error>());
    match server {
        // 10189 pattern, 10190 target, 10223 time zone (ADR-51).
        Some(server) if [10189, 10190, 10223].contains(&server.error_code().0) => {
            ServiceError::invalid(format!("the NATS server refused the schedule: {server}"))
        }
        _ => ServiceError::new(ErrorCode::Unavailable, format!("cannot schedule: {error}")),
    }
}

/// Changes waiting for the applying task, at most (beyond, they wait for a retry).
const CHANGES_QUEUED_MAX: usize = 65_536;

/// Applies changes in the background from the owner thread, one at a time in the order they
/// were committed (a pause is never overtaken by the resume after it); a failed one is tried
/// again from [`Scheduler::due`].
#[derive(Debug)]
pub struct Scheduler {
    sender: tokio::sync::mpsc::Sender<Change>,
    failed: Arc<Mutex<Vec<Change>>>,
    retry: Vec<(Change, u64)>,
}

impl Scheduler {
    pub fn new(js: jetstream::Context, runtime: tokio::runtime::Handle) -> Self {
        let (sender, mut changes) = tokio::sync::mpsc::channel::<Change>(CHANGES_QUEUED_MAX);
        let failed: Arc<Mutex<Vec<Change>>> = Arc::default();
        let retry_later = failed.clone();
        runtime.spawn(async move {
            while let Some(change) = changes.recv().await {
                if let Err(error) = apply(&js, &change).await {
                    tracing::warn!(?change, %error, "schedule change failed; will retry");
                    // A refused pattern stays refused: retrying cannot help.
                    if error.code != ErrorCode::InvalidRequest {
                        retry_later.lock().unwrap_or_else(|p| p.into_inner()).push(change);
                    }
                }
            }
        });
        Self { sender, failed, retry: Vec::new() }
    }

    pub fn apply(&self, changes: Vec<Change>) {
        for change in changes {
            if let Err(error) = self.sender.try_send(change) {
                let change = match error {
                    tokio::sync::mpsc::error::TrySendError::Full(change)
                    | tokio::sync::mpsc::error::TrySendError::Closed(change) => change,
                };
                self.failed.lock().unwrap_or_else(|p| p.into_inner()).push(change);
            }
        }
    }

    /// Changes whose retry is due at `now`; failures seen since the last call wait a second.
    pub fn due(&mut self, now: u64) -> Vec<Change> {
        let failed = std::mem::take(&mut *self.failed.lock().unwrap_or_else(|p| p.into_inner()));
        self.retry.extend(failed.into_iter().map(|change| (change, now + RETRY_AFTER_MS)));
        let (due, later): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.retry).into_iter().partition(|(_, at)| *at <= now);
        self.retry = later;
        due.into_iter().map(|(change, _)| change).collect()
    }
}

/// The subjects holding a schedule now, below `filter`.
pub async fn subjects_in_stream(
    js: &jetstream::Context,
    filter: &str,
) -> anyhow::Result<HashSet<String>> {
    let stream = js.get_stream(subject::SCHEDULE_STREAM).await?;
    let mut subjects = stream.info_with_subjects(filter).await?;
    let mut present = HashSet::new();
    while let Some(entry) = subjects.next().await {
        present.insert(entry?.0);
    }
    Ok(present)
}

/// Makes the stream hold exactly the schedules in `wanted` (subject -> change): puts what is
/// missing, removes what is not wanted, leaves the rest running. Returns (put, removed).
pub async fn reconcile(
    js: &jetstream::Context,
    filter: &str,
    wanted: Vec<(String, Change)>,
) -> anyhow::Result<(usize, usize)> {
    let present = subjects_in_stream(js, filter).await?;
    let wanted_subjects: BTreeSet<&str> = wanted.iter().map(|(s, _)| s.as_str()).collect();
    let mut put = 0;
    for (subject, change) in &wanted {
        if !present.contains(subject) {
            if let Err(error) = apply(js, change).await {
                tracing::error!(subject, %error, "cannot put a schedule back");
            }
            put += 1;
        }
    }
    let mut removed = 0;
    for subject in present.iter().filter(|s| !wanted_subjects.contains(s.as_str())) {
        apply(js, &Change::Remove { subject: subject.clone() }).await.ok();
        removed += 1;
    }
    Ok((put, removed))
}

/// Hands every run the server publishes to the owner; the owner acknowledges it once committed.
pub async fn runs(consumer: consumer::PullConsumer, queue: owner::Queue<Envelope>) {
    loop {
        let mut messages = match consumer.messages().await {
            Ok(messages) => messages,
            Err(error) => {
                tracing::warn!(%error, "cannot read the runs of schedules; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        while let Some(message) = messages.next().await {
            let message = match message {
                Ok(message) => message,
                Err(error) => {
                    tracing::warn!(%error, "runs of schedules");
                    continue;
                }
            };
            let Some(fire) = Fire::read(&message) else {
                tracing::warn!(subject = %message.subject, "a run that is not Agora's; dropped");
                message.ack_with(jetstream::AckKind::Term).await.ok();
                continue;
            };
            if queue.send_waiting(Envelope::Fire(fire, Box::new(message))).await.is_err() {
                return;
            }
        }
    }
}

/// Reads the time in a run's [`NEXT_HEADER`].
pub fn next_run_ms(message: &jetstream::Message) -> Option<u64> {
    let next = message.headers.as_ref()?.get(NEXT_HEADER)?.as_str();
    agora_core::tasks::schedule::parse_rfc3339(next).ok()
}
