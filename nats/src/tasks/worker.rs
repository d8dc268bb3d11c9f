//! A worker (`agora-worker`): takes tasks from the shared JetStream work queue and runs them.
//!
//! Every worker pulls from the same two durable consumers (high priority first), so they share
//! the work like a queue group, and a message stays in the stream until a worker acks it. A
//! worker acks only after the task service recorded the outcome, so a worker that dies at any
//! point leaves its messages to be redelivered (after `ack_wait`) to another worker.
//!
//! For each message: **claim** the attempt at the task service (a cancelled or finished task is
//! dropped here, so a cancelled queued task never runs), run the op (quick ones inline, heavy
//! ones on the blocking pool, `sleep` as a cancellable timer), send **heartbeats** while it
//! runs (JetStream in-progress acks plus progress reports, whose reply says whether to stop),
//! then report the **finish** and ack. A failed attempt is retried with exponential backoff
//! (a delayed nak) until its deliveries run out; the last one is reported as final, which makes
//! the task a dead letter. Cancellations arrive on `agora.tasks.control.cancel`.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agora_core::{Op, Output};
use async_nats::Client;
use async_nats::jetstream::{self, AckKind, consumer};
use futures::StreamExt;
use serde_json::value::RawValue;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::client::{AgoraClient, ClientError};
use crate::service::{ErrorCounts, Replier, add_endpoint};
use crate::subjects::{tasks as task_subject, worker as subject};
use crate::tasks::wire::{
    ClaimReply, ClaimRequest, FinishReply, FinishRequest, ProgressReply, ProgressRequest,
    QueuedTask, TaskIdRequest, WorkerStatus, output_json, parse_op,
};
use claim::Claim;

/// Most tasks one worker runs at once.
pub const CONCURRENCY_MAX: usize = 1_024;
/// Longest worker id: it is a subject token and a key of `AGORA_WORKERS`.
pub const WORKER_ID_BYTES_MAX: usize = 64;
/// The metadata key of a worker's micro service instance that holds its id.
pub const METADATA_WORKER: &str = "worker";
/// Longest pause before a retry.
pub const RETRY_BACKOFF_MS_MAX: u64 = 60_000;
/// How often an unreachable task service is retried while the worker holds a message.
const REPORT_RETRY: Duration = Duration::from_millis(500);
/// How often a running task's progress is looked at; it is reported when it moved (so a
/// progress bar moves while a task runs, not only at the `ack_wait / 3` heartbeat).
const PROGRESS_EVERY: Duration = Duration::from_millis(250);
/// How long a report to the task service waits for its reply.
const REPORT_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause after a failed pull from the work queue.
const PULL_RETRY: Duration = Duration::from_millis(200);
/// Pause between looks for the work queue the task service creates.
const QUEUE_POLL: Duration = Duration::from_millis(250);

/// Worker configuration: the flags of `agora-worker`.
#[derive(Debug, Clone, clap::Args)]
pub struct WorkerConfig {
    /// Unique worker name ([A-Za-z0-9_-]), also a subject token (`agora.worker.<id>.status`);
    /// defaults to `worker-<random>`.
    #[arg(long = "worker-id", env = "AGORA_WORKER_ID", default_value_t = random_worker_id(),
          hide_default_value = true)]
    pub worker_id: String,
    /// Tasks run at once (and pulled ahead per priority).
    #[arg(long, env = "AGORA_WORKER_CONCURRENCY", default_value_t = 32)]
    pub concurrency: usize,
    /// Delay before the first retry of a failed task, doubling each time (max 60 s).
    #[arg(long, env = "AGORA_WORKER_RETRY_BACKOFF_MS", default_value_t = 1_000)]
    pub retry_backoff_ms: u64,
}

/// `worker-` and ten random characters.
fn random_worker_id() -> String {
    format!("worker-{}", &nuid::next()[..10])
}

impl WorkerConfig {
    pub fn validate(&self) -> anyhow::Result<()> {
        let id = &self.worker_id;
        anyhow::ensure!(
            agora_core::token::is_word(id, WORKER_ID_BYTES_MAX),
            "worker id must be 1-{WORKER_ID_BYTES_MAX} characters of [A-Za-z0-9_-], not {id:?}"
        );
        anyhow::ensure!(
            (1..=CONCURRENCY_MAX).contains(&self.concurrency),
            "concurrency is 1..={CONCURRENCY_MAX}"
        );
        anyhow::ensure!(
            self.retry_backoff_ms <= RETRY_BACKOFF_MS_MAX,
            "retry backoff is at most {RETRY_BACKOFF_MS_MAX} ms"
        );
        Ok(())
    }

    /// The delay before retrying after the `delivered`-th attempt failed.
    pub fn backoff_ms(&self, delivered: u32) -> u64 {
        let doublings = delivered.saturating_sub(1).min(20);
        self.retry_backoff_ms.saturating_mul(1 << doublings).min(RETRY_BACKOFF_MS_MAX)
    }
}

#[derive(Debug, Default)]
struct Shared {
    status: Mutex<WorkerStatus>,
    running: Mutex<HashMap<String, CancellationToken>>,
}

impl Shared {
    fn status(&self) -> WorkerStatus {
        let mut status = self.status.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        status.current = running.keys().cloned().collect();
        status.current.sort();
        status
    }

    fn count(&self, update: impl FnOnce(&mut WorkerStatus)) {
        update(&mut self.status.lock().unwrap_or_else(|p| p.into_inner()));
    }
}

/// Runs a worker until `shutdown` resolves; then it stops pulling and lets running tasks
/// finish for up to `ack_wait`.
pub async fn run(
    client: Client,
    config: WorkerConfig,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    config.validate()?;
    let js = jetstream::new(client.clone());
    let (high, normal) = consumers(&js).await?;
    let mut normal_info = normal.clone();
    let consumer_config = normal_info.info().await?.config.clone();
    let max_deliver = u32::try_from(consumer_config.max_deliver).unwrap_or(u32::MAX).max(1);
    let heartbeat = (consumer_config.ack_wait / 3).max(Duration::from_millis(50));

    let shared = Arc::new(Shared::default());
    shared.count(|s| {
        s.worker = config.worker_id.clone();
        s.concurrency = config.concurrency;
    });
    let stats = shared.clone();
    let metadata = HashMap::from([(METADATA_WORKER.to_owned(), config.worker_id.clone())]);
    let service = crate::service::builder(&client, metadata)
        .description("Agora worker: runs tasks from the shared work queue")
        .stats_handler(move |_, _| serde_json::to_value(stats.status()).unwrap_or_default())
        .start(subject::SERVICE, env!("CARGO_PKG_VERSION"))
        .await
        .map_err(|e| anyhow::anyhow!("cannot start service: {e}"))?;
    let status_endpoint = subject::status_endpoint(&config.worker_id);
    let mut status =
        add_endpoint(&service.group(subject::GROUP), subject::STATUS, &status_endpoint).await?;
    let status_shared = shared.clone();
    let replier = Replier::new(subject::STATUS, ErrorCounts::default());
    let status_loop = tokio::spawn(async move {
        while let Some(request) = status.next().await {
            let status = crate::service::no_fields(&request.message.payload)
                .map(|()| status_shared.status());
            replier.reply(&request, status).await;
        }
    });
    // Two workers with one id would answer for each other's status and share a name in
    // every task's history: the id is claimed at the server (the key holds this instance's
    // service id), and a second one refuses. This worker answers pings before it claims (a
    // barrier: the server has its subscriptions), so that one that finds the id held and asks
    // whether its holder is alive hears it.
    crate::client::barrier(&client).await?;
    let own = service.info().await.id;
    let alive = async |holder: String| {
        let running = crate::client::ping_instances(
            &client,
            Some(subject::SERVICE),
            crate::service::SECOND_INSTANCE_WAIT,
            |_| false,
        )
        .await?;
        Ok(running.iter().any(|info| info["id"] == holder.as_str()))
    };
    let claim = Claim::take(&js, &config.worker_id, &own, alive).await?;
    let lost = claim.lost();
    let mut cancels = client.subscribe(task_subject::CONTROL_CANCEL).await?;
    let cancel_shared = shared.clone();
    let cancel_loop = tokio::spawn(async move {
        while let Some(message) = cancels.next().await {
            if let Ok(request) = crate::service::from_object::<TaskIdRequest>(&message.payload) {
                let running = cancel_shared.running.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(token) = running.get(&request.id) {
                    token.cancel();
                }
            }
        }
    });

    let prefetch = config.concurrency;
    let mut high_messages = high.stream().max_messages_per_batch(prefetch).messages().await?;
    let mut normal_messages = normal.stream().max_messages_per_batch(prefetch).messages().await?;
    let context = Arc::new(Context {
        tasks: AgoraClient::new(client.clone()).with_timeout(REPORT_TIMEOUT),
        config: config.clone(),
        shared: shared.clone(),
        max_deliver,
        heartbeat,
    });
    // Subscriptions are in place at the server before anyone is told we are ready.
    crate::client::barrier(&client).await?;
    crate::telemetry::announce_ready(subject::SERVICE);
    tracing::info!(worker = %config.worker_id, concurrency = config.concurrency, max_deliver, "worker ready");

    let slots = Arc::new(Semaphore::new(config.concurrency));
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            () = &mut shutdown => break,
            () = lost.cancelled() => break,
            permit = slots.clone().acquire_owned() => permit?,
        };
        let message = tokio::select! {
            biased;
            () = &mut shutdown => break,
            () = lost.cancelled() => break,
            Some(message) = high_messages.next() => message,
            Some(message) = normal_messages.next() => message,
            else => break,
        };
        match message {
            Ok(message) => {
                let context = context.clone();
                tokio::spawn(async move {
                    context.handle(message).await;
                    drop(permit);
                });
            }
            Err(error) => {
                tracing::warn!(%error, "pulling tasks failed");
                tokio::time::sleep(PULL_RETRY).await;
            }
        }
    }
    tracing::info!("worker stopping; letting running tasks finish");
    drop(high_messages);
    drop(normal_messages);
    let grace = consumer_config.ack_wait;
    let all = u32::try_from(config.concurrency).unwrap_or(u32::MAX);
    tokio::time::timeout(grace, slots.acquire_many(all)).await.ok();
    status_loop.abort();
    cancel_loop.abort();
    drop(service);
    let lost = lost.is_cancelled();
    claim.release().await;
    client.flush().await.ok();
    anyhow::ensure!(!lost, "worker id {} was lost (see above); it stopped", config.worker_id);
    Ok(())
}

/// The shared consumers, waiting for the task service to create them.
async fn consumers(
    js: &jetstream::Context,
) -> anyhow::Result<(consumer::PullConsumer, consumer::PullConsumer)> {
    let mut logged = false;
    loop {
        let found = async {
            let stream = js.get_stream(task_subject::STREAM).await?;
            let high = stream
                .get_consumer(task_subject::CONSUMER_HIGH)
                .await
                .map_err(|e| anyhow::anyhow!(e))?;
            let normal = stream
                .get_consumer(task_subject::CONSUMER_NORMAL)
                .await
                .map_err(|e| anyhow::anyhow!(e))?;
            anyhow::Ok((high, normal))
        }
        .await;
        match found {
            Ok(pair) => return Ok(pair),
            Err(error) if !logged => {
                tracing::warn!(%error, "waiting for the task service to create the work queue");
                logged = true;
            }
            Err(_) => {}
        }
        tokio::time::sleep(QUEUE_POLL).await;
    }
}

struct Context {
    tasks: AgoraClient,
    config: WorkerConfig,
    shared: Arc<Shared>,
    max_deliver: u32,
    heartbeat: Duration,
}

/// How an attempt ended.
enum Ending {
    Done(Box<RawValue>),
    Failed(String),
    /// Cancelled, or finished elsewhere: drop it.
    Stopped,
}

impl Context {
    /// Runs one queued task as a span of its own: a child of the span that submitted it (the
    /// message's `traceparent`), current while the worker claims, reports and finishes it.
    async fn handle(&self, message: jetstream::Message) {
        let parent = crate::trace::Trace::from_headers(message.headers.as_ref());
        let Some(span) = crate::trace::Trace::start(parent.as_ref()) else {
            return self.handle_traced(message).await;
        };
        let started = std::time::SystemTime::now();
        let clock = std::time::Instant::now();
        // The span's name (only a recorded span needs one).
        let op = span.sampled.then(|| {
            serde_json::from_slice::<QueuedTask>(&message.payload)
                .map_or_else(|_| "run".to_owned(), |task| format!("run {}", task.op))
        });
        crate::trace::scope(Some(span), self.handle_traced(message)).await;
        let Some(op) = op else { return };
        crate::trace::record(crate::trace::Finished {
            span,
            parent,
            operation: &op,
            kind: opentelemetry::trace::SpanKind::Consumer,
            started,
            elapsed: clock.elapsed(),
            error: None,
            attributes: vec![opentelemetry::KeyValue::new(
                "agora.worker",
                self.config.worker_id.clone(),
            )],
        });
    }

    async fn handle_traced(&self, message: jetstream::Message) {
        let delivered =
            message.info().map(|i| u32::try_from(i.delivered).unwrap_or(1)).unwrap_or(1);
        let task = match serde_json::from_slice::<QueuedTask>(&message.payload) {
            Ok(task) => task,
            Err(error) => {
                tracing::error!(%error, "dropping a malformed queue message");
                message.ack_with(AckKind::Term).await.ok();
                return;
            }
        };
        let op = parse_op(&task.op, &task.args).map_err(|e| e.message);
        // Quick ops (microseconds of CPU) run at once and are claimed together with their
        // outcome; others are claimed first, so a cancelled task never starts.
        let quick = op.as_ref().is_ok_and(Op::is_quick);
        if !quick {
            let claim = ClaimRequest { id: task.id.clone(), worker: self.config.worker_id.clone() };
            let subject = task_subject::CLAIM_SUBJECT;
            let Some(claim) = self
                .until_reported(&message, || self.tasks.request::<_, ClaimReply>(subject, &claim))
                .await
            else {
                return;
            };
            if !claim.run {
                tracing::debug!(id = %task.id, state = %claim.state, "dropping a finished task");
                self.shared.count(|s| s.dropped += 1);
                message.ack().await.ok();
                return;
            }
        }
        let ending = match op {
            Ok(op) if quick => match op.execute() {
                Ok(output) => done(&output),
                Err(error) => Ending::Failed(error),
            },
            Ok(op) => self.attempt(&message, &task.id, op).await,
            // Cannot happen for what the task service queued; fail it rather than loop.
            Err(error) => Ending::Failed(format!("cannot run: {error}")),
        };
        let finish = match ending {
            Ending::Stopped => {
                self.shared.count(|s| s.dropped += 1);
                message.ack().await.ok();
                return;
            }
            Ending::Done(result) => FinishRequest {
                id: task.id.clone(),
                worker: self.config.worker_id.clone(),
                result: Some(result),
                error: None,
                retry_in_ms: None,
                claim: quick,
            },
            Ending::Failed(error) => {
                let retry_in_ms =
                    (delivered < self.max_deliver).then(|| self.config.backoff_ms(delivered));
                FinishRequest {
                    id: task.id.clone(),
                    worker: self.config.worker_id.clone(),
                    result: None,
                    error: Some(error),
                    retry_in_ms,
                    claim: quick,
                }
            }
        };
        let retry_in_ms = finish.retry_in_ms;
        let succeeded = finish.result.is_some();
        let Some(reply) = self
            .until_reported(&message, || {
                self.tasks.request::<_, FinishReply>(task_subject::FINISH_SUBJECT, &finish)
            })
            .await
        else {
            return;
        };
        self.shared.count(|s| match (reply.accepted, succeeded) {
            (false, _) => s.dropped += 1,
            (true, true) => s.done += 1,
            (true, false) => s.failed += 1,
        });
        match retry_in_ms {
            Some(delay) if reply.accepted => {
                message.ack_with(AckKind::Nak(Some(Duration::from_millis(delay)))).await.ok();
            }
            _ => {
                message.ack().await.ok();
            }
        }
    }

    /// Repeats a report until the task service answers, keeping the message with in-progress
    /// acks meanwhile. `None`: the answer was an error that retrying cannot fix (logged; the
    /// message is left to be redelivered).
    async fn until_reported<T, F, Fut>(&self, message: &jetstream::Message, report: F) -> Option<T>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, ClientError>>,
    {
        let mut logged = false;
        loop {
            match report().await {
                Ok(reply) => return Some(reply),
                Err(ClientError::Service(error))
                    if error.code != crate::ErrorCode::Busy
                        && error.code != crate::ErrorCode::Unavailable =>
                {
                    tracing::error!(%error, "the task service refused a report; dropping the message");
                    message.ack_with(AckKind::Term).await.ok();
                    return None;
                }
                Err(error) => {
                    if !logged {
                        tracing::warn!(%error, "cannot reach the task service; retrying");
                        logged = true;
                    }
                    message.ack_with(AckKind::Progress).await.ok();
                    tokio::time::sleep(REPORT_RETRY).await;
                }
            }
        }
    }

    /// Runs one attempt with heartbeats, until it ends or is stopped.
    async fn attempt(&self, message: &jetstream::Message, id: &str, op: Op) -> Ending {
        let token = CancellationToken::new();
        self.shared
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_owned(), token.clone());
        let percent = Arc::new(std::sync::atomic::AtomicU8::new(0));
        let work = run_op(op, percent.clone());
        tokio::pin!(work);
        let mut beat = tokio::time::interval(self.heartbeat);
        beat.tick().await;
        let mut look = tokio::time::interval(PROGRESS_EVERY);
        look.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut reported = 0;
        let ending = loop {
            // A heartbeat keeps the message (an in-progress ack) and reports progress even
            // if it did not move; in between, progress is reported whenever it moved.
            let heartbeat = tokio::select! {
                output = &mut work => break match output {
                    Ok(output) => done(&output),
                    Err(error) => Ending::Failed(error),
                },
                () = token.cancelled() => break Ending::Stopped,
                _ = beat.tick() => true,
                _ = look.tick() => false,
            };
            let now = percent.load(std::sync::atomic::Ordering::Relaxed);
            if heartbeat {
                message.ack_with(AckKind::Progress).await.ok();
            } else if now == reported {
                continue;
            }
            reported = now;
            let progress = ProgressRequest {
                id: id.to_owned(),
                worker: self.config.worker_id.clone(),
                percent: now,
            };
            if let Ok(ProgressReply { stop: true }) =
                self.tasks.request(task_subject::PROGRESS_SUBJECT, &progress).await
            {
                break Ending::Stopped;
            }
        };
        self.shared.running.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
        ending
    }
}

fn done(output: &Output) -> Ending {
    match RawValue::from_string(output_json(output).to_string()) {
        Ok(raw) => Ending::Done(raw),
        Err(error) => Ending::Failed(format!("cannot encode the result: {error}")),
    }
}

/// Computes a heavy op on the blocking pool, or `sleep` as a timer
/// that moves `percent` along.
async fn run_op(op: Op, percent: Arc<std::sync::atomic::AtomicU8>) -> Result<Output, String> {
    if let Op::Sleep(ms) = op {
        let started = tokio::time::Instant::now();
        let total = Duration::from_millis(ms);
        let step = (total / 20).max(Duration::from_millis(10));
        while started.elapsed() < total {
            tokio::time::sleep(step.min(total - started.elapsed())).await;
            let done = started.elapsed().as_millis().saturating_mul(100) / u128::from(ms.max(1));
            percent.store(
                u8::try_from(done.min(100)).unwrap_or(100),
                std::sync::atomic::Ordering::Relaxed,
            );
        }
        return op.execute();
    }
    tokio::task::spawn_blocking(move || op.execute())
        .await
        .unwrap_or_else(|e| Err(format!("the op crashed: {e}")))
}

mod claim;

#[cfg(test)]
mod tests;
