//! Live events for browsers: one set of NATS subscriptions per gateway, fanned out to every
//! browser's Server-Sent Events stream through a bounded broadcast channel.
//!
//! Each SSE event is named after its topic (`bank`, `chat`, `presence`, `tasks`, `likes`,
//! `prices`, `logs`) and its data is `{"subject":"...","data":<the NATS payload>}`. Payloads
//! that are not JSON, are larger than [`EVENT_BYTES_MAX`] or (chat) fail the chat service's
//! format checks are not forwarded. A direct message goes only to streams of a chat session
//! of its sender or its recipient. A browser that falls [`BROADCAST_CAPACITY`] events behind
//! gets a `lagged` event with the number it missed (and should reload what it shows).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State as StateOf};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::sync::broadcast;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;

use super::State;
use super::http::{ApiError, query};
use super::routes::{Reply, Route, schema};
use agora_nats::chat::client::{Incoming, parse_incoming};
use agora_nats::error::ErrorCode;
use agora_nats::subjects;
use agora_nats::telemetry::LogRecord;

/// The live event stream.
pub const ROUTES: &[Route] = &[route!(
    "GET",
    "/api/events",
    "system",
    "Server-Sent Events: bank, chat, presence, tasks, likes, prices, logs (topics=a,b; \
         session=<chat session> adds its direct messages)",
    Some(schema::<EventsQuery>),
    ["topics", "session"],
    None,
    get(events),
    Reply::EventStream
)];

/// Events a slow browser may fall behind before it misses some.
pub const BROADCAST_CAPACITY: usize = 4_096;
/// Larger payloads are not forwarded.
pub const EVENT_BYTES_MAX: usize = 16 * 1024;
/// Log records kept for `/api/logs`.
pub const LOG_RING_MAX: usize = 1_000;
/// How often an idle event stream sends a keep-alive comment.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// What a browser can subscribe to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topic {
    Bank,
    Chat,
    Presence,
    Tasks,
    Likes,
    Prices,
    Logs,
}

impl Topic {
    pub const ALL: [Topic; 7] = [
        Topic::Bank,
        Topic::Chat,
        Topic::Presence,
        Topic::Tasks,
        Topic::Likes,
        Topic::Prices,
        Topic::Logs,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bank => "bank",
            Self::Chat => "chat",
            Self::Presence => "presence",
            Self::Tasks => "tasks",
            Self::Likes => "likes",
            Self::Prices => "prices",
            Self::Logs => "logs",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|topic| topic.as_str() == text)
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }

    /// The NATS subjects behind a topic.
    fn subjects(self) -> &'static [&'static str] {
        match self {
            Self::Bank => &[subjects::bank::EVENTS_ALL],
            Self::Chat => &[subjects::chat::ROOM_ALL, subjects::chat::DM_ALL],
            Self::Presence => &[subjects::chat::PRESENCE_ALL],
            Self::Tasks => &[subjects::tasks::EVENTS_ALL],
            Self::Likes => &[subjects::likes::EVENTS_ALL],
            Self::Prices => &[subjects::coins::PRICES_ALL],
            Self::Logs => &[subjects::logs::ALL],
        }
    }
}

/// Recent log records: (severity 0 error / 1 warn / 2 info, the record, its service).
type LogRing = Mutex<VecDeque<(u8, Arc<RawValue>, String)>>;

/// One event as every stream sees it.
#[derive(Debug)]
pub struct LiveEvent {
    topic: Topic,
    /// A direct message's sender and recipient: only their sessions' streams get it.
    direct: Option<(String, String)>,
    /// `{"subject","data"}`, ready to send.
    json: String,
}

/// The subscriptions, the broadcast and the recent logs.
#[derive(Debug)]
pub struct Hub {
    sender: broadcast::Sender<Arc<LiveEvent>>,
    logs: Arc<LogRing>,
    clients: Arc<AtomicUsize>,
}

impl Hub {
    /// Subscribes to every topic's subjects and starts fanning out.
    pub async fn start(client: &async_nats::Client) -> anyhow::Result<Self> {
        let (sender, _) = broadcast::channel(BROADCAST_CAPACITY);
        let logs = Arc::new(Mutex::new(VecDeque::with_capacity(LOG_RING_MAX)));
        let mut streams = Vec::new();
        for topic in Topic::ALL {
            for subject in topic.subjects() {
                let subscriber = client.subscribe(*subject).await?;
                streams.push(subscriber.map(move |message| (topic, message)).boxed());
            }
        }
        agora_nats::client::barrier(client).await?;
        let mut all = futures::stream::select_all(streams);
        let fan_out = sender.clone();
        let ring = logs.clone();
        tokio::spawn(async move {
            while let Some((topic, message)) = all.next().await {
                if let Some(event) = event(topic, &message, &ring) {
                    // No receivers is fine: nobody is watching.
                    let _ = fan_out.send(Arc::new(event));
                }
            }
        });
        Ok(Self { sender, logs, clients: Arc::new(AtomicUsize::new(0)) })
    }

    pub fn clients(&self) -> usize {
        self.clients.load(Ordering::Relaxed)
    }

    /// The newest `limit` log records at `level_max` (0 error, 1 warn, 2 info) or more
    /// severe, of `service` if given; oldest first.
    pub fn recent_logs(
        &self,
        service: Option<&str>,
        level_max: u8,
        limit: usize,
    ) -> Vec<Arc<RawValue>> {
        let Ok(ring) = self.logs.lock() else { return Vec::new() };
        let mut records: Vec<_> = ring
            .iter()
            .rev()
            .filter(|(level, _, from)| {
                *level <= level_max && service.is_none_or(|service| service == from)
            })
            .take(limit)
            .map(|(_, record, _)| record.clone())
            .collect();
        records.reverse();
        records
    }
}

/// Builds the event for one NATS message, or `None` when it is not to be forwarded.
fn event(topic: Topic, message: &async_nats::Message, logs: &LogRing) -> Option<LiveEvent> {
    if message.payload.len() > EVENT_BYTES_MAX {
        return None;
    }
    let data: &RawValue = serde_json::from_slice(&message.payload).ok()?;
    let mut direct = None;
    match topic {
        Topic::Chat | Topic::Presence => {
            match parse_incoming(&message.subject, &message.payload)? {
                Incoming::Direct { to, message } => direct = Some((message.from, to)),
                Incoming::Room { .. } | Incoming::Presence(_) => {}
            }
        }
        Topic::Logs => {
            let record: LogRecord = serde_json::from_slice(&message.payload).ok()?;
            let level = match record.level.as_str() {
                "error" => 0,
                "warn" => 1,
                _ => 2,
            };
            if let Ok(mut ring) = logs.lock() {
                if ring.len() == LOG_RING_MAX {
                    ring.pop_front();
                }
                ring.push_back((level, Arc::from(data.to_owned()), record.service));
            }
        }
        _ => {}
    }
    let subject = serde_json::to_string(message.subject.as_str()).ok()?;
    let json = format!(r#"{{"subject":{subject},"data":{}}}"#, data.get());
    Some(LiveEvent { topic, direct, json })
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// Comma-separated topics (default: all).
    pub topics: Option<String>,
    /// A chat session token: this stream also carries its name's direct messages and keeps
    /// the session alive.
    pub session: Option<String>,
}

/// Counts a live client until dropped.
struct ClientGuard(Arc<AtomicUsize>);

impl Drop for ClientGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// `GET /api/events`: the live stream.
pub async fn events(
    StateOf(state): StateOf<State>,
    request: Result<Query<EventsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let request = query(request)?;
    let mut wanted = 0u8;
    match request.topics.as_deref() {
        None | Some("") => Topic::ALL.iter().for_each(|topic| wanted |= topic.bit()),
        Some(list) => {
            for name in list.split(',') {
                let topic = Topic::parse(name.trim()).ok_or_else(|| {
                    ApiError::invalid(format!(
                        "unknown topic {name:?} (bank, chat, presence, tasks, likes, prices, logs)"
                    ))
                })?;
                wanted |= topic.bit();
            }
        }
    }
    let session = match &request.session {
        Some(token) => Some(state.chat.attach(token)?),
        None => None,
    };
    let clients = state.live.clients.clone();
    if clients.fetch_add(1, Ordering::Relaxed) >= state.config.live_clients_max {
        clients.fetch_sub(1, Ordering::Relaxed);
        return Err(ApiError::new(ErrorCode::Busy, "too many live clients; retry later"));
    }
    let guard = ClientGuard(clients);
    let name = session.as_ref().map(|(name, _)| name.clone());
    let hello = serde_json::json!({
        "topics": Topic::ALL.iter().filter(|t| wanted & t.bit() != 0).map(|t| t.as_str())
            .collect::<Vec<_>>(),
        "name": name,
    });
    let first = futures::stream::once(async move {
        Ok::<_, std::convert::Infallible>(Event::default().event("hello").data(hello.to_string()))
    });
    let updates = BroadcastStream::new(state.live.sender.subscribe()).filter_map(move |item| {
        // The guards live as long as the stream.
        let _ = (&guard, &session);
        let event = match item {
            Ok(event) => {
                let for_me = match (&event.direct, &name) {
                    (None, _) => true,
                    (Some((from, to)), Some(me)) => from == me || to == me,
                    (Some(_), None) => false,
                };
                (wanted & event.topic.bit() != 0 && for_me)
                    .then(|| Event::default().event(event.topic.as_str()).data(&event.json))
            }
            Err(BroadcastStreamRecvError::Lagged(missed)) => {
                Some(Event::default().event("lagged").data(format!(r#"{{"missed":{missed}}}"#)))
            }
        };
        futures::future::ready(event.map(Ok))
    });
    let keep_alive = KeepAlive::new().interval(KEEP_ALIVE);
    Ok(Sse::new(first.chain(updates)).keep_alive(keep_alive).into_response())
}
