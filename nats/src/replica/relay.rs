//! The event relay: publishes the events of committed log entries to the stream
//! `AGORA_EVENTS`, in entry order, each stored once (its message id is
//! `<service>:<seq>:<index>`), and knows up to which entry they are all stored (a new active
//! instance relays again from there).
//!
//! ## How events are published
//! The owner hands an entry's events over and goes on with its next group. A publisher task
//! takes whatever entries are queued as one **burst** and publishes it as a JetStream
//! **fast-ingest batch** (ADR-50; the stream has `allow_batched`):
//! - each message is stored as it arrives, deduplicated by its id as any publish;
//! - the server acknowledges progress every few hundred messages (its flow control: the
//!   publisher keeps at most 32 acknowledgements' worth of messages unacknowledged);
//! - the burst's last message commits the batch, and one publish acknowledgement answers once
//!   all of it is stored.
//!
//! So the server sends, and the service reads, a few answers per burst instead of one per
//! event. A burst of one event is a plain publish. When a fast batch fails (a gap, a refused
//! message, a leader change, no answer in time), the burst's events are published again one by
//! one with an acknowledgement each; their ids make that safe. A stream that refuses fast batches
//! (an operator turned `allow_batched` off) gets events one by one, and is offered a fast batch
//! again every [`FAST_RETRY_AFTER`], so turning it back on needs no restart. The counter
//! `agora_relay_events_total{path}` tells which way events went (`batch` or `single`).
//!
//! An acknowledger task awaits the per-event acknowledgements in order, publishes again (same
//! ids) what was not stored until it is, and advances [`Relay::relayed`]. So a reply may reach
//! its caller before the events of its commit; both come after the commit is in the log.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, message::PublishMessage as Publish};
use async_nats::{Client, HeaderMap, Subscriber};
use futures::StreamExt;
use serde::Deserialize;
use tokio::sync::mpsc;

use super::log::Event;

/// The message id of an entry's `index`th event: the events stream stores it once.
fn event_id(service: &str, seq: u64, index: usize) -> String {
    format!("{service}:{seq}:{index}")
}

type Acks = Vec<(Option<jetstream::context::PublishAckFuture>, Event, String)>;

/// Acknowledgements handed to the acknowledger at once at most (well below the JetStream
/// client's in-flight limit of 5,000).
const RELAY_CHUNK: usize = 1024;

/// Events handed to the relay and not yet published at most: beyond, the owner waits. A
/// burst is at most this many events too.
const RELAY_QUEUED_EVENTS_MAX: usize = 65_536;

/// Entries whose events wait for the stream's acknowledgement at most (then the publisher
/// waits).
const RELAY_IN_FLIGHT_MAX: usize = 1024;

/// An entry's events on their way to the publisher, holding their room in the queue.
type Queued = (String, u64, Vec<Event>, tokio::sync::OwnedSemaphorePermit);

/// Publishes entries' events to the events stream in order (see the module's documentation),
/// and knows up to which entry they are all stored.
#[derive(Debug)]
pub struct Relay {
    relayed: Arc<AtomicU64>,
    queue: mpsc::Sender<Queued>,
    room: Arc<tokio::sync::Semaphore>,
    stopped: Arc<AtomicBool>,
}

impl Relay {
    /// A relay whose events up to `relayed` are stored.
    pub fn start(js: jetstream::Context, relayed: u64) -> Self {
        let (acks, mut pending) = mpsc::channel::<(u64, Acks, bool)>(RELAY_IN_FLIGHT_MAX);
        let (queue, mut entries) = mpsc::channel::<Queued>(RELAY_IN_FLIGHT_MAX);
        let done = Arc::new(AtomicU64::new(relayed));
        let stopped = Arc::new(AtomicBool::new(false));
        let room = Arc::new(tokio::sync::Semaphore::new(RELAY_QUEUED_EVENTS_MAX));
        let relay = Self { relayed: done.clone(), queue, room, stopped: stopped.clone() };
        let publisher_js = js.clone();
        let publisher_stopped = stopped.clone();
        tokio::spawn(async move {
            let mut fast = FastIngest::new(publisher_js.client());
            while let Some(first) = entries.recv().await {
                let mut events = first.2.len();
                let mut burst = vec![first];
                while events < RELAY_QUEUED_EVENTS_MAX {
                    let Ok(next) = entries.try_recv() else { break };
                    events += next.2.len();
                    burst.push(next);
                }
                if publisher_stopped.load(Ordering::Relaxed) {
                    // The next active instance relays these again.
                    return;
                }
                publish_burst(&publisher_js, &mut fast, &acks, burst).await;
            }
        });
        tokio::spawn(async move {
            while let Some((seq, acks, complete)) = pending.recv().await {
                for (ack, event, id) in acks {
                    if let Some(ack) = ack
                        && ack.await.is_ok()
                    {
                        continue;
                    }
                    // Again, with the same id, until stored (or the service stops).
                    let mut delay = Duration::from_millis(50);
                    while !stopped.load(Ordering::Relaxed) {
                        if publish_event(&js, &event, &id).await.is_ok() {
                            break;
                        }
                        tracing::warn!(id, "an event is not stored yet; retrying");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(2));
                    }
                }
                if complete {
                    done.fetch_max(seq, Ordering::Relaxed);
                }
            }
        });
        relay
    }

    /// Up to which entry every event is stored.
    pub fn relayed(&self) -> u64 {
        self.relayed.load(Ordering::Relaxed)
    }

    /// Hands an entry's events to the publisher (waiting while the queue is full).
    pub async fn send(&self, service: &str, seq: u64, events: Vec<Event>) {
        let wanted = u32::try_from(events.len().clamp(1, RELAY_QUEUED_EVENTS_MAX)).unwrap_or(1);
        let Ok(room) = self.room.clone().acquire_many_owned(wanted).await else { return };
        self.queue.send((service.to_owned(), seq, events, room)).await.ok();
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stopped.store(true, Ordering::Relaxed);
    }
}

/// Publishes a burst of entries: as one fast batch when it has more than one event (and the
/// stream takes fast batches), else, or when the batch fails, event by event. The entries are
/// marked relayed in order by the acknowledger.
async fn publish_burst(
    js: &jetstream::Context,
    fast: &mut FastIngest,
    acks_to: &mpsc::Sender<(u64, Acks, bool)>,
    burst: Vec<Queued>,
) {
    let count: usize = burst.iter().map(|(_, _, events, _)| events.len()).sum();
    if count > 1 && fast.takes_batches() {
        let messages: Vec<(&Event, String)> = burst
            .iter()
            .flat_map(|(service, seq, events, _)| {
                events.iter().enumerate().map(move |(index, e)| (e, event_id(service, *seq, index)))
            })
            .collect();
        match fast.publish(&messages).await {
            Ok(()) => {
                for (_, seq, events, room) in burst {
                    relayed("batch").inc_by(events.len() as u64);
                    acks_to.send((seq, Vec::new(), true)).await.ok();
                    drop(room);
                }
                return;
            }
            Err(error) => {
                tracing::warn!(%error, count, "a fast batch of events failed; publishing them one by one")
            }
        }
    }
    for (service, seq, events, room) in burst {
        relayed("single").inc_by(events.len() as u64);
        publish_entry(js, acks_to, &service, seq, events).await;
        drop(room);
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct RelayLabels {
    /// `batch` (in a fast-ingest batch) or `single` (one by one, each acknowledged).
    path: &'static str,
}

/// The counter of events relayed by `path` (the exposition labels them with the service).
fn relayed(path: &'static str) -> prometheus_client::metrics::counter::Counter {
    type Counters = prometheus_client::metrics::family::Family<
        RelayLabels,
        prometheus_client::metrics::counter::Counter,
    >;
    static EVENTS: std::sync::LazyLock<Counters> = std::sync::LazyLock::new(|| {
        crate::metrics::register(
            "relay_events",
            "Events of committed changes published to the events stream, by path: batch \
             (fast-ingest batches) or single (one by one, each acknowledged)",
            Counters::default(),
        )
    });
    EVENTS.get_or_create(&RelayLabels { path }).clone()
}

/// Publishes an entry's events in order, each with its own acknowledgement, and hands the
/// acknowledgements to the acknowledger.
async fn publish_entry(
    js: &jetstream::Context,
    acks_to: &mpsc::Sender<(u64, Acks, bool)>,
    service: &str,
    seq: u64,
    events: Vec<Event>,
) {
    let mut acks = Vec::with_capacity(events.len().min(RELAY_CHUNK));
    for (index, event) in events.into_iter().enumerate() {
        if acks.len() == RELAY_CHUNK {
            // The acknowledgements go to the acknowledger as they come: each holds one of the
            // client's in-flight permits, which a large entry would otherwise exhaust.
            let chunk = std::mem::replace(&mut acks, Vec::with_capacity(RELAY_CHUNK));
            acks_to.send((seq, chunk, false)).await.ok();
        }
        let id = event_id(service, seq, index);
        match js.send_publish(event.subject.clone(), publish(&event, &id)).await {
            Ok(ack) => acks.push((Some(ack), event, id)),
            Err(error) => {
                tracing::warn!(%error, id, "could not send an event; the relay retries");
                acks.push((None, event, id));
            }
        }
    }
    acks_to.send((seq, acks, true)).await.ok();
}

/// An event's headers: its message id, and its request's `traceparent`.
fn headers(event: &Event, id: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(async_nats::header::NATS_MESSAGE_ID, id);
    if let Some(trace) = event.trace {
        headers.insert(crate::trace::TRACEPARENT, trace.traceparent().as_str());
    }
    headers
}

fn publish(event: &Event, id: &str) -> Publish {
    Publish::build().payload(event.payload.clone()).headers(headers(event, id))
}

/// Publishes one event and waits for the stream to store it.
async fn publish_event(
    js: &jetstream::Context,
    event: &Event,
    id: &str,
) -> Result<(), jetstream::context::PublishError> {
    js.send_publish(event.subject.clone(), publish(event, id)).await?.await.map(|_| ())
}

/// How many messages the server is asked to acknowledge at once (it caps this at 500, and
/// lowers it while other fast batches run on the stream).
const FAST_FLOW: u16 = 500;
/// Acknowledgements' worth of messages the publisher may have unacknowledged: at the server's
/// largest flow, 16,000 messages, far below the stream's ingest queue (100,000); the server
/// lowers its flow while other fast batches run on the stream, and this window with it. (With
/// ADR-50's suggested two, an 8,190-transfer batch's 16,380 events waited on the server's
/// acknowledgements: 0.9x of per-event publishes instead of 1.0-1.1x.)
const FAST_OUTSTANDING_ACKS: u64 = 32;
/// How long the publisher waits for the server's next answer in a fast batch.
const FAST_ANSWER_TIMEOUT: Duration = Duration::from_secs(5);
/// The JetStream error code of a stream that does not allow fast batches.
const BATCH_PUBLISH_DISABLED: u16 = 10205;
/// How long after a stream refused fast batches the relay offers it one again (events go one
/// by one meanwhile).
pub const FAST_RETRY_AFTER: Duration = Duration::from_secs(10);

/// The fast-ingest operations, the second-to-last token of a message's reply subject.
const OP_START: u8 = 0;
const OP_APPEND: u8 = 1;
const OP_COMMIT: u8 = 2;

/// A publisher of fast-ingest batches on the service's connection. Every batch's reply
/// subjects are `<inbox>.<batch id>.<flow>.fail.<batch seq>.<op>.$FI` (gaps fail the batch),
/// and the server answers on them: one subscription, `<inbox>.>`, made at first use, takes
/// every answer.
struct FastIngest {
    client: Client,
    inbox: String,
    answers: Option<Subscriber>,
    /// When the stream last refused fast batches: events go one by one until
    /// [`FAST_RETRY_AFTER`] later.
    refused_at: Option<Instant>,
}

/// An answer in a fast batch.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum Flow {
    /// Every message up to `seq` is stored; the next acknowledgement comes after `msgs` more.
    Ack { seq: u64, msgs: u16 },
    /// A message was lost on the way: the batch ends.
    Gap { last_seq: u64, seq: u64 },
    /// The message `seq` was refused: the batch ends.
    Err { seq: u64, error: ApiError },
}

/// The batch's publish acknowledgement (or its refusal).
#[derive(Debug, Deserialize)]
struct BatchAck {
    #[serde(default)]
    count: u64,
    #[serde(default)]
    error: Option<ApiError>,
}

#[derive(Debug, Deserialize)]
struct ApiError {
    #[serde(default)]
    err_code: u16,
    #[serde(default)]
    description: String,
}

/// What the publisher learns from an answer.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    /// Stored up to this batch sequence; acknowledgements come every this many messages.
    Progress { stored: u64, every: u16 },
    /// The batch ended with this many messages stored.
    Committed { count: u64 },
}

impl FastIngest {
    fn new(client: Client) -> Self {
        let inbox = client.new_inbox();
        Self { client, inbox, answers: None, refused_at: None }
    }

    /// Whether the next burst goes as a fast batch: unless the stream refused one lately.
    fn takes_batches(&self) -> bool {
        self.refused_at.is_none_or(|at| at.elapsed() >= FAST_RETRY_AFTER)
    }

    /// Publishes `messages` (two or more) as one batch, returning once the stream stored all.
    async fn publish(&mut self, messages: &[(&Event, String)]) -> Result<(), String> {
        let result = self.try_publish(messages).await;
        if result.is_ok() && self.refused_at.take().is_some() {
            tracing::info!("the events stream takes fast batches again");
        }
        if result.is_err() {
            // What the failed batch's answers left buffered goes with this subscription (the
            // next one passes over later ones by their batch id).
            self.answers = None;
        }
        result
    }

    async fn try_publish(&mut self, messages: &[(&Event, String)]) -> Result<(), String> {
        if self.answers.is_none() {
            let subscription = self.client.subscribe(format!("{}.>", self.inbox)).await;
            self.answers = Some(subscription.map_err(|e| format!("subscribing: {e}"))?);
        }
        let batch = nuid::next();
        let prefix = format!("{}.{batch}.{FAST_FLOW}.fail.", self.inbox);
        let last = messages.len() as u64;
        let (mut stored, mut every) = (0u64, u64::from(FAST_FLOW));
        for (index, (event, id)) in messages.iter().enumerate() {
            let seq = index as u64 + 1;
            while stored + every * FAST_OUTSTANDING_ACKS <= seq {
                match self.answer(&prefix).await? {
                    Answer::Progress { stored: s, every: e } => {
                        stored = stored.max(s);
                        every = u64::from(e.max(1));
                    }
                    Answer::Committed { count } => {
                        return Err(format!("the batch ended after {count} of {last} events"));
                    }
                }
            }
            let op = match seq {
                1 => OP_START,
                s if s == last => OP_COMMIT,
                _ => OP_APPEND,
            };
            let reply = format!("{prefix}{seq}.{op}.$FI");
            self.client
                .publish_with_reply_and_headers(
                    event.subject.clone(),
                    reply,
                    headers(event, id),
                    event.payload.clone(),
                )
                .await
                .map_err(|e| format!("publishing: {e}"))?;
        }
        loop {
            if let Answer::Committed { count } = self.answer(&prefix).await? {
                if count == last {
                    return Ok(());
                }
                return Err(format!("the batch stored {count} of {last} events"));
            }
        }
    }

    /// The batch's next answer (answers to earlier batches are passed over).
    async fn answer(&mut self, prefix: &str) -> Result<Answer, String> {
        let answers = self.answers.as_mut().ok_or("no subscription")?;
        loop {
            let message = match tokio::time::timeout(FAST_ANSWER_TIMEOUT, answers.next()).await {
                Ok(Some(message)) => message,
                Ok(None) => return Err("the subscription ended".to_owned()),
                Err(_) => return Err("no answer in time".to_owned()),
            };
            if !message.subject.as_str().starts_with(prefix) {
                continue;
            }
            let answer = read_answer(&message.payload);
            if let Err(Refusal { code: BATCH_PUBLISH_DISABLED, .. }) = answer {
                if self.refused_at.is_none() {
                    tracing::warn!(
                        "the events stream does not take fast batches (allow_batched): events \
                         are published one by one, and a fast batch is tried again every {} s",
                        FAST_RETRY_AFTER.as_secs()
                    );
                }
                self.refused_at = Some(Instant::now());
            }
            return answer.map_err(|refusal| refusal.message);
        }
    }
}

/// A fast batch's end by the server: its JetStream error code (0 if none) and why.
#[derive(Debug, PartialEq, Eq)]
struct Refusal {
    code: u16,
    message: String,
}

/// Reads one answer of a fast batch.
fn read_answer(payload: &[u8]) -> Result<Answer, Refusal> {
    if let Ok(flow) = serde_json::from_slice::<Flow>(payload) {
        return match flow {
            Flow::Ack { seq, msgs } => Ok(Answer::Progress { stored: seq, every: msgs }),
            Flow::Gap { last_seq, seq } => {
                Err(Refusal { code: 0, message: format!("a gap: {last_seq} expected, {seq} came") })
            }
            Flow::Err { seq, error } => Err(Refusal {
                code: error.err_code,
                message: format!("event {seq} refused: {}", error.description),
            }),
        };
    }
    match serde_json::from_slice::<BatchAck>(payload) {
        Ok(BatchAck { error: Some(error), .. }) => {
            Err(Refusal { code: error.err_code, message: error.description })
        }
        Ok(BatchAck { count, error: None }) => Ok(Answer::Committed { count }),
        Err(error) => Err(Refusal { code: 0, message: format!("an unreadable answer: {error}") }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_of_fast_batch_answer_is_read() {
        assert_eq!(
            read_answer(br#"{"type":"ack","seq":500,"msgs":250}"#),
            Ok(Answer::Progress { stored: 500, every: 250 })
        );
        assert_eq!(
            read_answer(br#"{"stream":"AGORA_EVENTS","seq":9,"batch":"b","count":7}"#),
            Ok(Answer::Committed { count: 7 })
        );
        let refused = read_answer(
            br#"{"error":{"code":400,"err_code":10205,"description":"batch publish is disabled"}}"#,
        );
        assert_eq!(refused.map_err(|r| r.code), Err(BATCH_PUBLISH_DISABLED));
        let gap = read_answer(br#"{"type":"gap","last_seq":3,"seq":5}"#);
        assert_eq!(gap.map_err(|r| r.code), Err(0));
        let err = read_answer(
            br#"{"type":"err","seq":4,"error":{"code":503,"err_code":10077,"description":"full"}}"#,
        );
        assert_eq!(
            err.map_err(|r| (r.code, r.message)),
            Err((10077, "event 4 refused: full".into()))
        );
        assert!(read_answer(b"not json").is_err());
    }
}
