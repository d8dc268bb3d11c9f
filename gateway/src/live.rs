//! Live events for browsers: one set of NATS subscriptions per gateway, fanned out to every
//! browser's Server-Sent Events stream through a bounded broadcast channel.
//!
//! Each SSE event is named after its topic (`bank`, `chat`, `updates`, `presence`, `tasks`,
//! `likes`, `prices`, `logs`) and its data is `{"subject":"...","data":<the NATS payload>}`. Payloads
//! that are not JSON, are larger than [`EVENT_BYTES_MAX`] or (chat) fail the chat service's
//! format checks are not forwarded. A stream belongs to a signed-in user and carries what that
//! user may read ([`Audience`]): rooms, presence, prices and like counts for everyone; bank
//! and task events to their owner (and managers); a direct message to its two parties only;
//! logs to managers. A browser that falls [`BROADCAST_CAPACITY`] events behind gets a
//! `lagged` event with the number it missed (and should reload what it shows).

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
use super::session::Signed;
use agora_nats::chat::client::{Incoming, parse_incoming};
use agora_nats::error::ErrorCode;
use agora_nats::likes::wire::LikeEvent;
use agora_nats::subjects;
use agora_nats::telemetry::LogRecord;

/// The live event stream.
pub const ROUTES: &[Route] = &[route!(
    "GET",
    "/api/events",
    "system",
    "Server-Sent Events of what the signed-in user may read: bank, chat, updates, presence, \
         tasks, likes, prices, logs (topics=a,b; session=<chat session> keeps it alive)",
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
    /// What happens to chat messages after they are sent, and typing.
    Updates,
}

impl Topic {
    pub const ALL: [Topic; 8] = [
        Topic::Bank,
        Topic::Chat,
        Topic::Updates,
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
            Self::Updates => "updates",
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
            Self::Updates => &[
                subjects::chat::EVENTS_ROOM_ALL,
                subjects::chat::EVENTS_DM_ALL,
                subjects::chat::LIVE_ROOM_ALL,
                subjects::chat::LIVE_DM_ALL,
            ],
        }
    }
}

/// Recent log records: (severity 0 error / 1 warn / 2 info, the record, its service).
type LogRing = Mutex<VecDeque<Logged>>;

/// A log record the gateway keeps: its level's rank, its JSON, its service and trace.
#[derive(Debug)]
struct Logged {
    level: u8,
    json: Arc<RawValue>,
    service: String,
    trace_id: Option<String>,
}

/// Who may see an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Audience {
    Everyone,
    /// Its owner (an account's events, a user's tasks) and managers.
    Owner(String),
    /// A direct message: its sender and its recipient, nobody else.
    Parties(String, String),
    Managers,
}

impl Audience {
    /// Whether `viewer` (a user's name, and whether a manager) may see it.
    pub fn admits(&self, name: &str, manager: bool) -> bool {
        match self {
            Self::Everyone => true,
            Self::Owner(owner) => manager || owner == name,
            Self::Parties(from, to) => from == name || to == name,
            Self::Managers => manager,
        }
    }
}

/// One event as every stream sees it.
#[derive(Debug)]
pub struct LiveEvent {
    topic: Topic,
    audience: Audience,
    /// `{"subject","data"}`, ready to send.
    json: String,
}

/// The subscriptions, the broadcast and the recent logs.
#[derive(Debug)]
pub struct Hub {
    sender: broadcast::Sender<Arc<LiveEvent>>,
    logs: Arc<LogRing>,
    clients: Arc<AtomicUsize>,
    /// Open streams per user.
    per_user: Arc<Mutex<std::collections::HashMap<String, usize>>>,
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
        Ok(Self { sender, logs, clients: Arc::new(AtomicUsize::new(0)), per_user: Arc::default() })
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
        trace_id: Option<&str>,
    ) -> Vec<Arc<RawValue>> {
        let Ok(ring) = self.logs.lock() else { return Vec::new() };
        let mut records: Vec<_> = ring
            .iter()
            .rev()
            .filter(|logged| {
                logged.level <= level_max
                    && service.is_none_or(|service| service == logged.service)
                    && trace_id.is_none_or(|id| Some(id) == logged.trace_id.as_deref())
            })
            .take(limit)
            .map(|logged| logged.json.clone())
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
    let mut data: Box<RawValue> = serde_json::from_slice(&message.payload).ok()?;
    let token = |from_end: usize| message.subject.rsplit('.').nth(from_end).map(str::to_owned);
    let audience = match topic {
        Topic::Chat | Topic::Presence => {
            match parse_incoming(&message.subject, &message.payload)? {
                Incoming::Direct { to, message } => Audience::Parties(message.from, to),
                Incoming::Room { .. } | Incoming::Presence(_) => Audience::Everyone,
            }
        }
        // `agora.bank.events.<account>`, `agora.tasks.events.<owner>.<id>`.
        Topic::Bank => Audience::Owner(token(0)?),
        Topic::Tasks => Audience::Owner(token(1)?),
        Topic::Logs => Audience::Managers,
        // A like's count, not who liked it.
        Topic::Likes => {
            let event: LikeEvent = serde_json::from_slice(&message.payload).ok()?;
            let count = serde_json::json!({"item": event.item, "count": event.count});
            data = RawValue::from_string(count.to_string()).ok()?;
            Audience::Everyone
        }
        Topic::Prices => Audience::Everyone,
        // `agora.chat.{events,live}.room.<room>`: everyone; `....dm.<name>`: only that name.
        Topic::Updates => match message.subject.split('.').nth(3) {
            Some("room") => Audience::Everyone,
            Some("dm") => {
                let name = token(0)?;
                Audience::Parties(name.clone(), name)
            }
            _ => return None,
        },
    };
    if topic == Topic::Logs {
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
            ring.push_back(Logged {
                level,
                json: Arc::from(data.clone()),
                service: record.service,
                trace_id: record.trace_id,
            });
        }
    }
    let subject = serde_json::to_string(message.subject.as_str()).ok()?;
    let json = format!(r#"{{"subject":{subject},"data":{}}}"#, data.get());
    Some(LiveEvent { topic, audience, json })
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// Comma-separated topics (default: all).
    pub topics: Option<String>,
    /// A chat session token of the signed-in user: the stream keeps it alive.
    pub session: Option<String>,
}

/// Counts a live client, in all and for its user, until dropped.
struct ClientGuard {
    clients: Arc<AtomicUsize>,
    per_user: Arc<Mutex<std::collections::HashMap<String, usize>>>,
    user: String,
}

impl Drop for ClientGuard {
    fn drop(&mut self) {
        self.clients.fetch_sub(1, Ordering::Relaxed);
        let mut per_user = self.per_user.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = per_user.get_mut(&self.user) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                per_user.remove(&self.user);
            }
        }
    }
}

/// `GET /api/events`: the live stream.
pub async fn events(
    StateOf(state): StateOf<State>,
    signed: Signed,
    request: Result<Query<EventsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let request = query(request)?;
    let mut wanted = 0u8;
    match request.topics.as_deref() {
        None | Some("") => Topic::ALL.iter().for_each(|topic| wanted |= topic.bit()),
        Some(list) => {
            for name in list.split(',') {
                let topic = Topic::parse(name.trim()).ok_or_else(|| {
                    let known: Vec<&str> = Topic::ALL.iter().map(|t| t.as_str()).collect();
                    ApiError::invalid(format!("unknown topic {name:?} ({})", known.join(", ")))
                })?;
                wanted |= topic.bit();
            }
        }
    }
    let me = signed.name().to_owned();
    let manager = signed.caller.is_manager();
    let session = match &request.session {
        Some(token) => Some(state.chat.attach(token, &me)?),
        None => None,
    };
    let clients = state.live.clients.clone();
    if clients.fetch_add(1, Ordering::Relaxed) >= state.config.live_clients_max {
        clients.fetch_sub(1, Ordering::Relaxed);
        return Err(ApiError::new(ErrorCode::Busy, "too many live clients; retry later"));
    }
    {
        let mut per_user = state.live.per_user.lock().unwrap_or_else(|p| p.into_inner());
        let count = per_user.entry(me.clone()).or_default();
        if *count >= state.config.live_clients_per_user {
            clients.fetch_sub(1, Ordering::Relaxed);
            return Err(ApiError::new(
                ErrorCode::Busy,
                format!("{me} has {count} live streams open already"),
            ));
        }
        *count += 1;
    }
    let guard = ClientGuard { clients, per_user: state.live.per_user.clone(), user: me.clone() };
    let name = Some(me.clone());
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
                let for_me = event.audience.admits(&me, manager);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn message(subject: &str, payload: &str) -> async_nats::Message {
        async_nats::Message {
            subject: subject.into(),
            reply: None,
            payload: bytes::Bytes::from(payload.to_owned()),
            headers: None,
            status: None,
            description: None,
            length: payload.len(),
        }
    }

    /// A room's updates reach everyone; a person's direct-conversation updates and typing only
    /// them, not even a manager.
    #[test]
    fn chat_updates_reach_only_their_audience() {
        let ring = LogRing::default();
        let update = r#"{"kind":"reaction","seq":3,"from":"bob","at_ms":1}"#;
        let room = event(Topic::Updates, &message("agora.chat.events.room.all", update), &ring)
            .expect("forwarded");
        assert!(room.audience.admits("carol", false));
        for subject in ["agora.chat.events.dm.alice", "agora.chat.live.dm.alice"] {
            let direct =
                event(Topic::Updates, &message(subject, update), &ring).expect("forwarded");
            assert!(direct.audience.admits("alice", false), "{subject}");
            assert!(!direct.audience.admits("bob", false), "{subject}: not even its sender");
            assert!(!direct.audience.admits("root", true), "{subject}: not a manager");
        }
        assert!(event(Topic::Updates, &message("agora.chat.events.x.y", update), &ring).is_none());
        assert!(
            event(Topic::Updates, &message("agora.chat.events.room.all", "nope"), &ring).is_none()
        );
    }
}
