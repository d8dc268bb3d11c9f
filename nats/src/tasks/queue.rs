//! The work queue as the task service feeds it: each unfinished task is one message in the
//! `AGORA_TASKS` stream (`Nats-Msg-Id` = task id). A publish that fails is retried after a
//! pause by the owner's sweep; a cancelled queued task's message is purged.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use async_nats::HeaderMap;
use async_nats::jetstream;
use bytes::Bytes;

use super::wire::Priority;
use crate::subjects::tasks as subject;

/// A task's message for the work queue.
#[derive(Debug)]
pub struct Queued {
    pub id: u64,
    pub priority: Priority,
    pub message: Bytes,
    /// The span of the request that submitted it (none when republished).
    pub span: Option<crate::trace::Trace>,
}

/// Pause before republishing a task whose publish failed.
const REPUBLISH_AFTER_MS: u64 = 1_000;

/// The work-queue message of a task.
pub fn message(id: u64, op: &str, args: &str) -> Bytes {
    let op = serde_json::to_string(op).unwrap_or_default();
    Bytes::from(format!(r#"{{"id":"{id}","op":{op},"args":{args}}}"#))
}

/// Publishes tasks to the stream from the owner thread, remembering the ones that failed.
#[derive(Debug)]
pub struct WorkQueue {
    js: jetstream::Context,
    runtime: tokio::runtime::Handle,
    /// Ids whose publish failed, shared with the publishing tasks. Bounded: it only ever holds
    /// unfinished tasks (at most `--pending-max`), once each.
    unqueued: Arc<Mutex<BTreeSet<u64>>>,
    /// Tasks to publish again, and when.
    republish: Vec<(u64, u64)>,
}

impl WorkQueue {
    pub fn new(js: jetstream::Context, runtime: tokio::runtime::Handle) -> Self {
        Self { js, runtime, unqueued: Arc::default(), republish: Vec::new() }
    }

    /// Publishes tasks to the work queue; a failed publish comes back from [`Self::due`]
    /// after a pause.
    pub fn publish(&self, enqueue: Vec<Queued>) {
        for Queued { id, priority, message: payload, span } in enqueue {
            let js = self.js.clone();
            let unqueued = self.unqueued.clone();
            self.runtime.spawn(async move {
                let subject = subject::queue(priority == Priority::High, &id.to_string());
                let mut headers = HeaderMap::new();
                headers.insert(async_nats::header::NATS_MESSAGE_ID, id.to_string().as_str());
                if let Some(span) = span {
                    headers.insert(crate::trace::TRACEPARENT, span.traceparent().as_str());
                }
                let acked = match js.publish_with_headers(subject, headers, payload).await {
                    Ok(ack) => ack.await.map(drop).map_err(|e| e.to_string()),
                    Err(error) => Err(error.to_string()),
                };
                if let Err(error) = acked {
                    tracing::warn!(id, %error, "could not queue task; will retry");
                    unqueued.lock().unwrap_or_else(|p| p.into_inner()).insert(id);
                }
            });
        }
    }

    /// Publishes these tasks again at the next sweep's turn (their first publish was lost).
    pub fn retry(&self, ids: Vec<u64>) {
        self.unqueued.lock().unwrap_or_else(|p| p.into_inner()).extend(ids);
    }

    /// Removes the messages of cancelled queued tasks from the stream.
    pub fn purge(&self, ids: Vec<u64>) {
        if ids.is_empty() {
            return;
        }
        let js = self.js.clone();
        self.runtime.spawn(async move {
            let Ok(stream) = js.get_stream(subject::STREAM).await else { return };
            for id in ids {
                for high in [true, false] {
                    let queued = subject::queue(high, &id.to_string());
                    stream.purge().filter(queued).await.ok();
                }
            }
        });
    }

    /// The tasks whose failed publish is due for another try at `now`; failures seen since the
    /// last call are scheduled a second (`REPUBLISH_AFTER_MS`) from now.
    pub fn due(&mut self, now: u64) -> Vec<u64> {
        let failed = std::mem::take(&mut *self.unqueued.lock().unwrap_or_else(|p| p.into_inner()));
        self.republish.extend(failed.into_iter().map(|id| (id, now + REPUBLISH_AFTER_MS)));
        let (due, later): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.republish).into_iter().partition(|(_, at)| *at <= now);
        self.republish = later;
        due.into_iter().map(|(id, _)| id).collect()
    }
}
