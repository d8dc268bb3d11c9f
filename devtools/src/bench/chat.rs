//! `agora bench chat`: raw NATS fan-out to N subscribers vs Agora chat messages in a room with
//! N members while the chat service records history.
//!
//! Both sides publish the same JSON message bytes from one connection to N receivers on their
//! own connections, keeping at most `window` messages in flight (a message is in flight until
//! every receiver has it and, for Agora, until the chat service acknowledged it is in
//! history). So both run as fast as they can without unbounded queues, and latencies are
//! delivery latencies, not queue lengths.
//!
//! - Raw receivers are plain subscriptions that read the message number from the payload.
//! - Agora receivers are [`ChatInbox`]es (what `agora chat` uses): they parse and check every
//!   message and drop repeats. The sender is a registered user sending to the chat service
//!   (`agora.chat.send`, with a reply subject), which records each message, publishes it to
//!   the room and acknowledges it once it is committed to SQLite: the acknowledgement's delay
//!   is the history write lag.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use async_nats::Client;
use bytes::Bytes;
use futures::StreamExt;
use hdrhistogram::Histogram;
use tokio::sync::Notify;

use super::{Goal, Measurement, Rig, print_goal, print_header, print_row};
use agora_nats::chat::client::{ChatInbox, ChatSession, Incoming};
use agora_nats::chat::wire::{ChatMessage, HistoryRequest, MessageAck, SendRequest};
use agora_nats::client::AgoraClient;
use agora_nats::subjects;

/// Options of `agora bench chat`.
#[derive(Debug, Clone)]
pub struct ChatBenchOptions {
    /// Seconds per measurement.
    pub seconds: u64,
    /// Receivers: raw subscribers, and members of the Agora room.
    pub members: usize,
    /// Messages in flight at most.
    pub window: u64,
}

/// Send instants are kept in a ring this long (far more than a window).
const RING: usize = 1 << 20;
const SLICES: u32 = 3;
/// How long a slice waits for the last deliveries and acknowledgements.
const DRAIN: Duration = Duration::from_secs(5);
const ROOM: &str = "bench";

/// What one slice's senders and receivers share.
struct Tracker {
    start: Instant,
    /// Microseconds since `start` at which message `n % RING` was sent.
    sent_at: Vec<AtomicU64>,
    received: Vec<AtomicU64>,
    acked: AtomicU64,
    /// Whether acknowledgements hold the window (Agora).
    acks: bool,
    progress: Notify,
    delivery: Mutex<Histogram<u64>>,
    history_lag: Mutex<Histogram<u64>>,
    lag_max_us: AtomicU64,
    /// When the last delivery or acknowledgement came (µs since `start`).
    last_progress_us: AtomicU64,
}

impl Tracker {
    fn new(receivers: usize, acks: bool) -> anyhow::Result<Arc<Self>> {
        Ok(Arc::new(Self {
            start: Instant::now(),
            sent_at: (0..RING).map(|_| AtomicU64::new(0)).collect(),
            received: (0..receivers).map(|_| AtomicU64::new(0)).collect(),
            acked: AtomicU64::new(0),
            acks,
            progress: Notify::new(),
            delivery: Mutex::new(Histogram::new_with_bounds(1, 60_000_000, 3)?),
            history_lag: Mutex::new(Histogram::new_with_bounds(1, 60_000_000, 3)?),
            lag_max_us: AtomicU64::new(0),
            last_progress_us: AtomicU64::new(0),
        }))
    }

    fn now_us(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// Time since message `n` was sent; notes the progress.
    fn since_sent_us(&self, n: u64) -> u64 {
        let sent = self.sent_at[n as usize % RING].load(Ordering::Relaxed);
        let now = self.now_us();
        self.last_progress_us.fetch_max(now, Ordering::Relaxed);
        now.saturating_sub(sent).max(1)
    }

    fn delivered(&self, receiver: usize, n: u64) {
        let micros = self.since_sent_us(n);
        self.delivery.lock().unwrap_or_else(|p| p.into_inner()).saturating_record(micros);
        self.received[receiver].fetch_add(1, Ordering::Relaxed);
        self.progress.notify_one();
    }

    fn acknowledged(&self, n: u64) {
        let micros = self.since_sent_us(n);
        self.history_lag.lock().unwrap_or_else(|p| p.into_inner()).saturating_record(micros);
        self.lag_max_us.fetch_max(micros, Ordering::Relaxed);
        self.acked.fetch_add(1, Ordering::Relaxed);
        self.progress.notify_one();
    }

    /// Messages every receiver (and, with acks, the chat service) has.
    fn done(&self) -> u64 {
        let slowest =
            self.received.iter().map(|r| r.load(Ordering::Relaxed)).min().unwrap_or_default();
        if self.acks { slowest.min(self.acked.load(Ordering::Relaxed)) } else { slowest }
    }

    fn delivered_total(&self) -> u64 {
        self.received.iter().map(|r| r.load(Ordering::Relaxed)).sum()
    }
}

/// The message number from a payload starting `{"id":"<n>"`.
fn number_of(payload: &[u8]) -> Option<u64> {
    let rest = payload.strip_prefix(br#"{"id":""#)?;
    let end = rest.iter().position(|b| *b == b'"')?;
    std::str::from_utf8(&rest[..end]).ok()?.parse().ok()
}

const TEXT: &str = "the quick brown fox jumps over the lazy dog, again and again and again";

/// A raw side's message: what the chat service publishes (`{"id":"<n>",...}`).
fn message_bytes(n: u64, from: &str) -> Bytes {
    let message = ChatMessage {
        id: n.to_string(),
        from: from.to_owned(),
        text: TEXT.to_owned(),
        at: Some(agora_nats::clock::now_ms()),
        seq: None,
        reply_to: None,
    };
    Bytes::from(serde_json::to_vec(&message).unwrap_or_default())
}

/// The Agora side's request: message `n` to the room.
fn send_bytes(n: u64, from: &str) -> Bytes {
    let request = SendRequest {
        room: Some(ROOM.to_owned()),
        to: None,
        id: n.to_string(),
        from: Some(from.to_owned()),
        text: TEXT.to_owned(),
        at: Some(agora_nats::clock::now_ms()),
        reply_to: None,
    };
    Bytes::from(serde_json::to_vec(&request).unwrap_or_default())
}

/// One slice's result.
struct Slice {
    delivered: u64,
    elapsed: Duration,
    sent: u64,
    acked: u64,
}

/// Where and how one slice publishes.
struct Publisher<'a> {
    client: &'a Client,
    subject: &'a str,
    from: &'a str,
    /// Acknowledgements come to `<prefix>.<n>` (Agora).
    reply_prefix: Option<&'a str>,
    window: u64,
}

/// Publishes from `first` on for `duration` within the window, then waits for the stragglers.
async fn publish(
    tracker: &Arc<Tracker>,
    publisher: &Publisher<'_>,
    first: u64,
    duration: Duration,
) -> anyhow::Result<Slice> {
    let Publisher { client, subject, from, reply_prefix, window } = *publisher;
    let started = Instant::now();
    let started_us = tracker.now_us();
    let mut n = first;
    let mut sent = 0;
    while started.elapsed() < duration {
        while sent - tracker.done() >= window {
            let notified = tracker.progress.notified();
            if sent - tracker.done() < window {
                break;
            }
            if tokio::time::timeout(DRAIN, notified).await.is_err() {
                let received: Vec<u64> =
                    tracker.received.iter().map(|r| r.load(Ordering::Relaxed)).collect();
                anyhow::bail!(
                    "no progress for {DRAIN:?}: messages are being lost (sent {sent}, received \
                     {received:?}, acknowledged {})",
                    tracker.acked.load(Ordering::Relaxed)
                );
            }
        }
        let payload =
            if reply_prefix.is_some() { send_bytes(n, from) } else { message_bytes(n, from) };
        tracker.sent_at[n as usize % RING].store(tracker.now_us(), Ordering::Relaxed);
        match reply_prefix {
            Some(prefix) => {
                client
                    .publish_with_reply(subject.to_owned(), format!("{prefix}.{n}"), payload)
                    .await?
            }
            None => client.publish(subject.to_owned(), payload).await?,
        }
        n += 1;
        sent += 1;
    }
    client.flush().await?;
    let deadline = Instant::now() + DRAIN;
    while tracker.done() < sent && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    // Up to the last delivery: time spent waiting for messages that never came is not counted.
    let last_us = tracker.last_progress_us.load(Ordering::Relaxed);
    Ok(Slice {
        delivered: tracker.delivered_total(),
        elapsed: Duration::from_micros(last_us.saturating_sub(started_us)),
        sent,
        acked: tracker.acked.load(Ordering::Relaxed),
    })
}

/// Accumulated figures of one side.
struct Side {
    name: String,
    delivered: u64,
    elapsed: Duration,
    sent: u64,
    acked: u64,
    delivery: Histogram<u64>,
    history_lag: Histogram<u64>,
    lag_max_us: u64,
}

impl Side {
    fn new(name: &str) -> anyhow::Result<Self> {
        Ok(Self {
            name: name.to_owned(),
            delivered: 0,
            elapsed: Duration::ZERO,
            sent: 0,
            acked: 0,
            delivery: Histogram::new_with_bounds(1, 60_000_000, 3)?,
            history_lag: Histogram::new_with_bounds(1, 60_000_000, 3)?,
            lag_max_us: 0,
        })
    }

    fn add(&mut self, slice: &Slice, tracker: &Tracker) -> anyhow::Result<()> {
        self.delivered += slice.delivered;
        self.elapsed += slice.elapsed;
        self.sent += slice.sent;
        self.acked += slice.acked;
        self.delivery.add(&*tracker.delivery.lock().unwrap_or_else(|p| p.into_inner()))?;
        self.history_lag.add(&*tracker.history_lag.lock().unwrap_or_else(|p| p.into_inner()))?;
        self.lag_max_us = self.lag_max_us.max(tracker.lag_max_us.load(Ordering::Relaxed));
        Ok(())
    }

    fn measurement(&self, receivers: usize) -> Measurement {
        Measurement {
            name: self.name.clone(),
            in_flight: receivers,
            operations: self.delivered,
            errors: (self.sent * receivers as u64).saturating_sub(self.delivered),
            ops_per_second: self.delivered as f64 / self.elapsed.as_secs_f64().max(1e-9),
            latency_us_p50: self.delivery.value_at_quantile(0.50),
            latency_us_p99: self.delivery.value_at_quantile(0.99),
            first_error: None,
        }
    }
}

/// `agora bench chat`.
pub async fn chat(options: ChatBenchOptions) -> anyhow::Result<Vec<Measurement>> {
    let receivers = options.members.max(1);
    let window = options.window.max(1);
    let mut rig = Rig::start(0)?;
    let url = rig.url.clone();
    // Rate limits are for people; the benchmark's one sender goes as fast as it can.
    let args = [
        "--data-dir".to_owned(),
        rig.data_dir("chat"),
        "--rate-per-sec".to_owned(),
        "1000000".to_owned(),
        "--burst".to_owned(),
        "1000000".to_owned(),
    ];
    rig.start_component("chat", "agora-chat", &args)?;
    println!(
        "agora bench chat: nats-server {}, {receivers} receivers, window {window} messages, \
         {} s per row",
        crate::process::NATS_SERVER_VERSION,
        options.seconds
    );
    let connect = || async { async_nats::connect(&url).await.context("connecting") };
    let sender = connect().await?;
    let mut receiver_clients = Vec::with_capacity(receivers);
    for _ in 0..receivers {
        receiver_clients.push(connect().await?);
    }
    // The Agora room's members and its sender are registered users.
    let agora = AgoraClient::new(sender.clone()).with_timeout(Duration::from_secs(10));
    let speaker = ChatSession::register(agora.clone(), "bench-sender").await?;
    let mut members = Vec::with_capacity(receivers);
    for (index, client) in receiver_clients.iter().enumerate() {
        let own = AgoraClient::new(client.clone());
        let member = ChatSession::register(own, &format!("member-{index}")).await?;
        member.join(ROOM).await?;
        members.push(member);
    }
    let send_subject = subjects::chat::SEND_SUBJECT;
    let raw_subject = subjects::bench::FANOUT;
    let duration = Duration::from_secs(options.seconds.max(1)) / SLICES;
    let (mut raw_side, mut agora_side) =
        (Side::new("raw fan-out")?, Side::new("chat room + history")?);
    let mut next = 1u64;
    for slice in 0..=SLICES {
        // Slice 0 is a warm-up of both sides.
        let warmup = slice == 0;
        let length = if warmup { Duration::from_millis(300) } else { duration };

        let tracker = Tracker::new(receivers, false)?;
        let mut tasks = Vec::new();
        for (index, client) in receiver_clients.iter().enumerate() {
            let mut subscription = client.subscribe(raw_subject).await?;
            agora_nats::client::barrier(client).await?;
            let tracker = tracker.clone();
            tasks.push(tokio::spawn(async move {
                while let Some(message) = subscription.next().await {
                    if let Some(n) = number_of(&message.payload) {
                        tracker.delivered(index, n);
                    }
                }
            }));
        }
        let publisher = Publisher {
            client: &sender,
            subject: raw_subject,
            from: "raw",
            reply_prefix: None,
            window,
        };
        let result = publish(&tracker, &publisher, next, length).await?;
        tasks.iter().for_each(tokio::task::JoinHandle::abort);
        next += result.sent;
        if !warmup {
            raw_side.add(&result, &tracker)?;
        }

        let tracker = Tracker::new(receivers, true)?;
        let mut tasks = Vec::new();
        for (index, client) in receiver_clients.iter().enumerate() {
            let mut inbox = ChatInbox::open(client, &format!("member-{index}"), false).await?;
            inbox.listen(ROOM).await?;
            let tracker = tracker.clone();
            tasks.push(tokio::spawn(async move {
                while let Some(incoming) = inbox.next().await {
                    if let Incoming::Room { message, .. } = incoming
                        && let Ok(n) = message.id.parse()
                    {
                        tracker.delivered(index, n);
                    }
                }
            }));
        }
        let reply_prefix = sender.new_inbox();
        let mut acks = sender.subscribe(format!("{reply_prefix}.*")).await?;
        agora_nats::client::barrier(&sender).await?;
        let ack_tracker = tracker.clone();
        tasks.push(tokio::spawn(async move {
            while let Some(ack) = acks.next().await {
                let fresh = serde_json::from_slice::<MessageAck>(&ack.payload)
                    .is_ok_and(|ack| !ack.duplicate);
                if let (true, Ok(n)) = (fresh, subjects::last_token(&ack.subject).parse()) {
                    ack_tracker.acknowledged(n);
                }
            }
        }));
        let publisher = Publisher {
            client: &sender,
            subject: send_subject,
            from: speaker.name(),
            reply_prefix: Some(&reply_prefix),
            window,
        };
        let result = publish(&tracker, &publisher, next, length).await?;
        tasks.iter().for_each(tokio::task::JoinHandle::abort);
        next += result.sent;
        if !warmup {
            agora_side.add(&result, &tracker)?;
        }
    }

    // History holds every message the benchmark sent to the room, once.
    let request = HistoryRequest { room: Some(ROOM.into()), limit: Some(1), ..Default::default() };
    let newest = agora.chat_history(&request).await?.messages.pop();
    let oldest = agora
        .chat_history(&HistoryRequest { after: Some(0), ..request.clone() })
        .await?
        .messages
        .pop();
    let stored = match (oldest, newest) {
        (Some(oldest), Some(newest)) => newest.seq - oldest.seq + 1,
        _ => 0,
    };

    print_header();
    let raw = raw_side.measurement(receivers);
    let ours = agora_side.measurement(receivers);
    print_row(&raw, None);
    print_row(&ours, Some(&raw));
    let lag_p99_ms = agora_side.history_lag.value_at_quantile(0.99) as f64 / 1000.0;
    let lag_max_ms = agora_side.lag_max_us as f64 / 1000.0;
    println!(
        "\n(in-flight = receivers; ops/s = messages delivered per second summed over receivers;\n\
         errors = deliveries missing at the end)\n\
         history write lag (send -> committed, acknowledged): p99 {lag_p99_ms:.1} ms, max \
         {lag_max_ms:.1} ms; acknowledged {} of {} messages; history holds {stored} room messages",
        agora_side.acked, agora_side.sent
    );
    println!("\ngoals:");
    print_goal(
        "delivered msgs/s >= 0.5x raw fan-out",
        Some(&raw),
        Some(&ours),
        Goal::RatioAtLeast(0.5),
    );
    // The warm-up's messages are in history too.
    let every = agora_side.acked == agora_side.sent && stored >= agora_side.sent;
    let in_time = every && agora_side.lag_max_us <= 1_000_000;
    println!(
        "  {:<52} {:>10}  {}",
        "every message in history within 1 s",
        format!("{lag_max_ms:.0} ms"),
        if in_time { "met" } else { "NOT met" }
    );
    drop(members);
    drop(speaker);
    rig.finish();
    Ok(vec![raw, ours])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_numbers_come_from_the_id() {
        assert_eq!(number_of(&message_bytes(42, "raw")), Some(42));
        assert_eq!(number_of(br#"{"from":"x"}"#), None);
    }
}
