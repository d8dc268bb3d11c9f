//! The chat service (`agora-chat`): names and presence, room memberships, and the history of
//! every message.
//!
//! ## Shape
//! Messages do not pass through this service: clients publish them on the fan-out subjects
//! (`agora.chat.room.<room>`, `agora.chat.dm.<to>`), where members and recipients receive them
//! straight from NATS. This service is one more subscriber: it checks each message (known
//! names, text limits, the sender's rate), records it in SQLite and, when the message came
//! with a reply subject, answers with its history position ([`MessageAck`]) or a coded error
//! (`unknown_user` for a direct message to a name never registered, `rate_limited`, ...).
//! Clients send with a reply subject and resend with the same id until acknowledged; history
//! keeps one copy per sender and id.
//!
//! Requests (register, heartbeat, leave, join, part, who, history) are micro-service endpoints.
//! Like the task service, endpoint and subscription tasks only decode; **one owner thread**
//! holds the [`Chat`] state machine and the [`ChatStore`], applies whatever is queued in one
//! transaction, commits, and only then replies and publishes presence events
//! (`agora.chat.presence.<name>`). It also sweeps sessions whose heartbeats stopped.

pub mod client;
pub mod store;
pub mod wire;

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc as std_mpsc;
use std::time::Duration;

use agora_core::chat::{self, Command, LeaveReason, Target};
use agora_core::{Chat, ChatConfig, ChatEvent, Name};
use anyhow::Context as _;
use async_nats::service::Request;
use async_nats::{Client, Subject};
use bytes::Bytes;
use futures::StreamExt;

use crate::chat::store::{ChatStore, Conversation, NewMessage, StoreError};
use crate::chat::wire::{
    ChatMessage, HistoryReply, HistoryRequest, MessageAck, PresenceEvent, RegisterReply,
    RegisterRequest, RoomRequest, RoomsReply, SessionReply, SessionRequest, UserView, WhoReply,
    WhoRequest,
};
use crate::clock::now_ms;
use crate::error::{ErrorCode, ServiceError};
use crate::service::{
    ErrorCounts, Replier, add_endpoint, decode, decode_limited, encode, publish_reply,
};
use crate::subjects::{self, chat as subject};

/// Every endpoint of the chat service (names, also subjects below [`subject::GROUP`]).
const ENDPOINTS: [&str; 7] = [
    subject::REGISTER,
    subject::HEARTBEAT,
    subject::LEAVE,
    subject::JOIN,
    subject::PART,
    subject::WHO,
    subject::HISTORY,
];

/// Largest message payload recorded, in bytes (text is limited to
/// [`chat::TEXT_BYTES_MAX`]; JSON escaping can make it longer).
pub const MESSAGE_BYTES_MAX: usize = 32 * 1024;
/// `agora.chat.history` page sizes.
pub const HISTORY_LIMIT_DEFAULT: usize = 50;
pub const HISTORY_LIMIT_MAX: usize = 500;
/// Most users in one `agora.chat.who` reply.
pub const WHO_USERS_MAX: usize = 1_000;
/// Most envelopes in one SQLite transaction.
pub const GROUP_ENVELOPES_MAX: usize = 4_096;
/// Envelopes queued for the owner thread at most (beyond: `busy`, or dropped and counted for a
/// message without a reply subject).
pub const QUEUE_MAX: usize = 65_536;
/// Messages pruned per sweep at most.
const PRUNE_BATCH: usize = 10_000;
/// How often the owner sweeps presence and prunes history.
const TICK: Duration = Duration::from_millis(100);
const PRUNE_EVERY_MS: u64 = 1_000;

/// Chat service configuration (the binary fills it from flags and environment).
#[derive(Debug, Clone)]
pub struct ChatServiceConfig {
    /// Directory holding `chat.db`.
    pub data_dir: PathBuf,
    /// A session without a heartbeat for this long goes offline.
    pub presence_timeout_ms: u64,
    /// Messages per second per sender, sustained...
    pub rate_per_sec: u32,
    /// ...and in a burst.
    pub burst: u32,
    /// Names that may ever be registered.
    pub users_max: usize,
    /// Messages kept in history (the oldest go first).
    pub history_max: u64,
}

impl ChatServiceConfig {
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            (300..=3_600_000).contains(&self.presence_timeout_ms),
            "presence-timeout-ms is 300..=3600000"
        );
        anyhow::ensure!((1..=1_000_000).contains(&self.rate_per_sec), "rate is 1..=1000000/s");
        anyhow::ensure!((1..=1_000_000).contains(&self.burst), "burst is 1..=1000000");
        anyhow::ensure!((1..=10_000_000).contains(&self.users_max), "users-max is 1..=10^7");
        anyhow::ensure!(self.history_max >= 1, "history-max must be positive");
        Ok(())
    }

    fn core(&self) -> ChatConfig {
        ChatConfig {
            presence_timeout_ms: self.presence_timeout_ms,
            rate_per_sec: self.rate_per_sec,
            burst: self.burst,
            users_max: self.users_max,
        }
    }

    /// How often clients are told to heartbeat: three beats per timeout.
    pub fn heartbeat_ms(&self) -> u64 {
        self.presence_timeout_ms / 3
    }
}

/// Counters of the message path, shown in the `history` endpoint's `$SRV.STATS` data.
#[derive(Debug, Default)]
struct MessageCounts {
    recorded: AtomicU64,
    duplicates: AtomicU64,
    refused: AtomicU64,
    /// Messages without a reply subject that found the owner's queue full.
    dropped: AtomicU64,
}

impl MessageCounts {
    fn snapshot(&self) -> serde_json::Value {
        serde_json::json!({
            "recorded": self.recorded.load(Ordering::Relaxed),
            "duplicates": self.duplicates.load(Ordering::Relaxed),
            "refused": self.refused.load(Ordering::Relaxed),
            "dropped": self.dropped.load(Ordering::Relaxed),
        })
    }
}

/// Runs the chat service until `shutdown` resolves.
pub async fn run(
    client: Client,
    config: ChatServiceConfig,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    config.validate()?;
    // One chat service keeps presence and history: a second one would answer half the
    // requests from other state.
    crate::service::refuse_second_instance(&client, subject::SERVICE).await?;
    let store = ChatStore::open(&config.data_dir)
        .with_context(|| format!("opening {}", config.data_dir.display()))?;
    let errors = ErrorCounts::default();
    let counts = Arc::new(MessageCounts::default());
    let (envelopes, inbox) = std_mpsc::sync_channel(QUEUE_MAX);
    let owner = Owner::new(store, client.clone(), config, errors.clone(), counts.clone())?;
    tracing::info!(
        users = owner.chat.users().count(),
        online = owner.chat.online_count(),
        last_seq = owner.last_seq,
        "chat store loaded"
    );
    let owner_thread =
        std::thread::Builder::new().name("chat-owner".into()).spawn(move || owner.run(inbox))?;

    let stats_errors = errors.clone();
    let stats_counts = counts.clone();
    let service = crate::service::builder(&client, HashMap::new())
        .description("Agora chat: names, presence, rooms and message history")
        .stats_handler(move |endpoint, _| {
            let mut data = stats_errors.snapshot(&endpoint);
            if endpoint == subject::HISTORY {
                data["messages"] = stats_counts.snapshot();
            }
            data
        })
        .start(subject::SERVICE, env!("CARGO_PKG_VERSION"))
        .await
        .map_err(|e| anyhow::anyhow!("cannot start service: {e}"))?;
    let group = service.group(subject::GROUP);
    let mut loops = Vec::new();
    for name in ENDPOINTS {
        let mut endpoint = add_endpoint(&group, name, name).await?;
        let envelopes = envelopes.clone();
        let replier = Replier::new(name, errors.clone());
        loops.push(tokio::spawn(async move {
            while let Some(request) = endpoint.next().await {
                let command = match parse_request(name, &request.message.payload) {
                    Ok(command) => command,
                    Err(error) => {
                        replier.reply_bytes(&request, Err(error)).await;
                        continue;
                    }
                };
                let envelope =
                    Envelope::Request { request: Box::new(request), endpoint: name, command };
                if let Err(
                    std_mpsc::TrySendError::Full(Envelope::Request { request, .. })
                    | std_mpsc::TrySendError::Disconnected(Envelope::Request { request, .. }),
                ) = envelopes.try_send(envelope)
                {
                    replier.reply_bytes(&request, Err(busy())).await;
                }
            }
        }));
    }
    for (wildcard, direct) in [(subject::ROOM_ALL, false), (subject::DM_ALL, true)] {
        let mut messages = client.subscribe(wildcard).await?;
        let envelopes = envelopes.clone();
        let client = client.clone();
        let counts = counts.clone();
        loops.push(tokio::spawn(async move {
            while let Some(message) = messages.next().await {
                let target = subjects::last_token(&message.subject);
                let reply = message.reply.clone();
                let refusal = match parse_message(target, direct, &message.payload) {
                    Ok(incoming) => {
                        let envelope = Envelope::Message { incoming, reply };
                        match envelopes.try_send(envelope) {
                            Ok(()) => continue,
                            Err(
                                std_mpsc::TrySendError::Full(Envelope::Message { reply, .. })
                                | std_mpsc::TrySendError::Disconnected(Envelope::Message {
                                    reply,
                                    ..
                                }),
                            ) => {
                                if reply.is_none() {
                                    counts.dropped.fetch_add(1, Ordering::Relaxed);
                                }
                                busy()
                            }
                            Err(_) => continue,
                        }
                    }
                    Err(error) => {
                        counts.refused.fetch_add(1, Ordering::Relaxed);
                        error
                    }
                };
                if let Some(reply) = message.reply {
                    publish_reply(&client, reply, Err(refusal)).await.ok();
                }
            }
        }));
    }
    // Subscriptions are in place at the server before anyone is told we are ready.
    crate::client::barrier(&client).await?;
    crate::telemetry::announce_ready(subject::SERVICE);
    shutdown.await;
    for task in &loops {
        task.abort();
    }
    drop(envelopes);
    drop(loops);
    drop(service);
    // The owner drains what is queued, commits and stops once every sender is gone.
    tokio::task::spawn_blocking(move || owner_thread.join()).await.ok();
    client.flush().await.ok();
    Ok(())
}

fn busy() -> ServiceError {
    ServiceError::new(ErrorCode::Busy, "the chat service is overloaded; retry")
}

/// A message taken off a fan-out subject, checked.
#[derive(Debug)]
struct Incoming {
    room: Option<Name>,
    to: Option<Name>,
    from: Name,
    id: String,
    text: String,
    at_ms: Option<u64>,
}

/// A validated request for the owner.
#[derive(Debug)]
enum RequestCommand {
    Chat(Command),
    Who { room: Option<Name>, offline: bool },
    History { query: HistoryQuery },
}

#[derive(Debug)]
struct HistoryQuery {
    room: Option<Name>,
    with: Option<Name>,
    as_user: Option<Name>,
    before: Option<u64>,
    after: Option<u64>,
    limit: usize,
}

#[derive(Debug)]
enum Envelope {
    Request { request: Box<Request>, endpoint: &'static str, command: RequestCommand },
    Message { incoming: Incoming, reply: Option<Subject> },
}

fn parse_message(target: &str, direct: bool, payload: &[u8]) -> Result<Incoming, ServiceError> {
    let message: ChatMessage = decode_limited(payload, MESSAGE_BYTES_MAX)?;
    let (room, to) =
        if direct { (None, Some(Name::user(target)?)) } else { (Some(Name::room(target)?), None) };
    chat::check_message(&message.from, &message.id, &message.text)?;
    let from = Name::user(&message.from)?;
    Ok(Incoming { room, to, from, id: message.id, text: message.text, at_ms: message.at })
}

fn session_of(request: SessionRequest) -> Result<(Name, String), ServiceError> {
    chat::check_session(&request.session)?;
    Ok((Name::user(&request.name)?, request.session))
}

fn room_command(payload: &[u8], join: bool) -> Result<Command, ServiceError> {
    let request: RoomRequest = decode(payload)?;
    chat::check_session(&request.session)?;
    let name = Name::user(&request.name)?;
    let room = Name::room(&request.room)?;
    let token = request.session;
    Ok(if join { Command::Join { name, token, room } } else { Command::Part { name, token, room } })
}

/// Decodes and validates a request (on the runtime, before it reaches the owner thread).
fn parse_request(endpoint: &str, payload: &[u8]) -> Result<RequestCommand, ServiceError> {
    Ok(match endpoint {
        subject::REGISTER => {
            let request: RegisterRequest = decode(payload)?;
            let token = match request.session {
                Some(token) => {
                    chat::check_session(&token)?;
                    token
                }
                None => nuid::next().to_string(),
            };
            RequestCommand::Chat(Command::Register { name: Name::user(&request.name)?, token })
        }
        subject::HEARTBEAT => {
            let (name, token) = session_of(decode(payload)?)?;
            RequestCommand::Chat(Command::Heartbeat { name, token })
        }
        subject::LEAVE => {
            let (name, token) = session_of(decode(payload)?)?;
            RequestCommand::Chat(Command::Leave { name, token })
        }
        subject::JOIN => RequestCommand::Chat(room_command(payload, true)?),
        subject::PART => RequestCommand::Chat(room_command(payload, false)?),
        subject::WHO => {
            let request: WhoRequest = crate::service::decode_or_default(payload, 4096)?;
            let room = request.room.as_deref().map(Name::room).transpose()?;
            RequestCommand::Who { room, offline: request.offline }
        }
        subject::HISTORY => {
            let request: HistoryRequest = decode(payload)?;
            let room = request.room.as_deref().map(Name::room).transpose()?;
            let with = request.with.as_deref().map(Name::user).transpose()?;
            let as_user = request.as_user.as_deref().map(Name::user).transpose()?;
            match (&room, &with, &as_user) {
                (Some(_), None, None) | (None, Some(_), Some(_)) | (None, None, Some(_)) => {}
                _ => {
                    return Err(ServiceError::invalid(
                        "give `room`, or `with` and `as` (a direct conversation), or only `as` \
                         (everything that name could see)",
                    ));
                }
            }
            let limit = request.limit.unwrap_or(HISTORY_LIMIT_DEFAULT);
            if !(1..=HISTORY_LIMIT_MAX).contains(&limit) {
                return Err(ServiceError::invalid(format!("limit is 1..={HISTORY_LIMIT_MAX}")));
            }
            RequestCommand::History {
                query: HistoryQuery {
                    room,
                    with,
                    as_user,
                    before: request.before,
                    after: request.after,
                    limit,
                },
            }
        }
        other => {
            return Err(ServiceError::new(ErrorCode::Internal, format!("no endpoint {other}")));
        }
    })
}

/// Where a reply goes: a micro-service request, or the reply subject of a plain message.
#[derive(Debug)]
enum ReplyTo {
    Request(Box<Request>, &'static str),
    Subject(Subject),
}

/// What a group produced, sent once it committed.
#[derive(Debug, Default)]
struct Outbox {
    replies: Vec<(ReplyTo, Result<Bytes, ServiceError>)>,
    presence: Vec<(String, Bytes)>,
}

struct Owner {
    chat: Chat,
    store: ChatStore,
    client: Client,
    runtime: tokio::runtime::Handle,
    config: ChatServiceConfig,
    repliers: HashMap<&'static str, Replier>,
    counts: Arc<MessageCounts>,
    last_seq: u64,
    last_sweep_ms: u64,
    last_prune_ms: u64,
}

fn unavailable(error: &StoreError) -> ServiceError {
    ServiceError::new(ErrorCode::Unavailable, format!("chat store failed ({error}); retry"))
}

fn user_view(name: &Name, user: &chat::User) -> UserView {
    UserView {
        name: name.to_string(),
        online: user.is_online(),
        since_ms: user.session.as_ref().map(|s| s.since_ms),
        last_seen_ms: user.session.as_ref().map_or(user.last_seen_ms, |s| s.last_seen_ms),
        rooms: user.rooms.iter().map(Name::to_string).collect(),
    }
}

/// The presence event for `event`; room events happen at `now_ms`.
fn presence_payload(now_ms: u64, event: &ChatEvent) -> (String, PresenceEvent) {
    let (name, wire) = match event {
        ChatEvent::Online { name, since_ms, .. } => (
            name,
            PresenceEvent {
                name: name.to_string(),
                event: "join".into(),
                room: None,
                reason: None,
                since_ms: Some(*since_ms),
                at_ms: *since_ms,
            },
        ),
        ChatEvent::Offline { name, reason, since_ms, at_ms } => (
            name,
            PresenceEvent {
                name: name.to_string(),
                event: "leave".into(),
                room: None,
                reason: Some(reason.as_str().into()),
                since_ms: Some(*since_ms),
                at_ms: *at_ms,
            },
        ),
        ChatEvent::Entered { name, room } | ChatEvent::Exited { name, room } => (
            name,
            PresenceEvent {
                name: name.to_string(),
                event: if matches!(event, ChatEvent::Entered { .. }) { "enter" } else { "exit" }
                    .into(),
                room: Some(room.to_string()),
                reason: None,
                since_ms: None,
                at_ms: now_ms,
            },
        ),
    };
    (subject::presence(name.as_str()), wire)
}

impl Owner {
    fn new(
        store: ChatStore,
        client: Client,
        config: ChatServiceConfig,
        errors: ErrorCounts,
        counts: Arc<MessageCounts>,
    ) -> anyhow::Result<Self> {
        let repliers =
            ENDPOINTS.into_iter().map(|name| (name, Replier::new(name, errors.clone()))).collect();
        let mut owner = Self {
            chat: Chat::new(config.core()),
            store,
            client,
            runtime: tokio::runtime::Handle::current(),
            config,
            repliers,
            counts,
            last_seq: 0,
            last_sweep_ms: 0,
            last_prune_ms: 0,
        };
        owner.reload()?;
        Ok(owner)
    }

    /// (Re)builds the in-memory state from the store.
    fn reload(&mut self) -> Result<(), StoreError> {
        let now = now_ms();
        self.chat = Chat::new(self.config.core());
        for row in self.store.users()? {
            let Ok(name) = Name::user(&row.name) else { continue };
            let rooms: BTreeSet<Name> =
                row.rooms.iter().filter_map(|room| Name::room(room).ok()).collect();
            self.chat.restore(now, name, row.registered_ms, row.last_seen_ms, row.session, rooms);
        }
        self.last_seq = self.store.last_seq()?;
        Ok(())
    }

    fn run(mut self, inbox: std_mpsc::Receiver<Envelope>) {
        while let Some(group) = crate::sqlite::next_group(&inbox, TICK, GROUP_ENVELOPES_MAX) {
            let now = now_ms();
            if !group.is_empty() {
                self.run_group(now, group);
            }
            self.sweep(now);
        }
        tracing::info!("chat owner stopped");
    }

    fn run_group(&mut self, now: u64, group: Vec<Envelope>) {
        let mut outbox = Outbox::default();
        let mut counted = (0u64, 0u64);
        let result = self.store.begin().and_then(|()| {
            for envelope in group {
                match envelope {
                    Envelope::Request { request, endpoint, command } => {
                        let reply = self.execute(now, command, &mut outbox)?;
                        outbox.replies.push((ReplyTo::Request(request, endpoint), reply));
                    }
                    Envelope::Message { incoming, reply } => {
                        let ack = self.record(now, &incoming, &mut counted)?;
                        if let Some(reply) = reply {
                            outbox.replies.push((ReplyTo::Subject(reply), ack));
                        }
                    }
                }
            }
            self.store.commit()
        });
        if let Err(error) = result {
            tracing::error!(%error, "chat store transaction failed; rolling back");
            self.store.rollback();
            if let Err(error) = self.reload() {
                tracing::error!(%error, "cannot reload the chat store");
            }
            let failure = unavailable(&error);
            outbox.replies.iter_mut().for_each(|(_, reply)| *reply = Err(failure.clone()));
            outbox.presence.clear();
        } else {
            self.counts.recorded.fetch_add(counted.0, Ordering::Relaxed);
            self.counts.duplicates.fetch_add(counted.1, Ordering::Relaxed);
        }
        self.deliver(outbox);
    }

    /// Records one message (or finds it recorded already).
    fn record(
        &mut self,
        now: u64,
        incoming: &Incoming,
        counted: &mut (u64, u64),
    ) -> Result<Result<Bytes, ServiceError>, StoreError> {
        let target = match (&incoming.room, &incoming.to) {
            (Some(room), _) => Target::Room(room),
            (None, Some(to)) => Target::Direct(to),
            (None, None) => return Ok(Err(ServiceError::invalid("a message needs a target"))),
        };
        let mut duplicate = |seq| {
            counted.1 += 1;
            encode(&MessageAck { seq, duplicate: true })
        };
        if let Err(error) = self.chat.accept_message(now, &incoming.from, target) {
            // A resend is acknowledged again, never refused (not even for the rate).
            if let Some(seq) = self.store.find(incoming.from.as_str(), &incoming.id)? {
                return Ok(duplicate(seq));
            }
            self.counts.refused.fetch_add(1, Ordering::Relaxed);
            return Ok(Err(error.into()));
        }
        let inserted = self.store.insert(&NewMessage {
            room: incoming.room.as_ref().map(Name::as_str),
            to: incoming.to.as_ref().map(Name::as_str),
            from: incoming.from.as_str(),
            id: &incoming.id,
            text: &incoming.text,
            at_ms: incoming.at_ms.unwrap_or(now),
            recorded_ms: now,
        })?;
        let Some(seq) = inserted else {
            self.chat.refund_message(&incoming.from);
            let seq = self.store.find(incoming.from.as_str(), &incoming.id)?.unwrap_or_default();
            return Ok(duplicate(seq));
        };
        self.last_seq = self.last_seq.max(seq);
        counted.0 += 1;
        Ok(encode(&MessageAck { seq, duplicate: false }))
    }

    fn execute(
        &mut self,
        now: u64,
        command: RequestCommand,
        out: &mut Outbox,
    ) -> Result<Result<Bytes, ServiceError>, StoreError> {
        match command {
            RequestCommand::Chat(command) => self.execute_chat(now, command, out),
            RequestCommand::Who { room, offline } => Ok(self.who(room.as_ref(), offline)),
            RequestCommand::History { query } => self.history(&query),
        }
    }

    fn execute_chat(
        &mut self,
        now: u64,
        command: Command,
        out: &mut Outbox,
    ) -> Result<Result<Bytes, ServiceError>, StoreError> {
        let (name, register, leave) = match &command {
            Command::Register { name, .. } => (name.clone(), true, false),
            Command::Leave { name, .. } => (name.clone(), false, true),
            Command::Heartbeat { name, .. }
            | Command::Join { name, .. }
            | Command::Part { name, .. } => (name.clone(), false, false),
            Command::Expire => return Ok(Err(ServiceError::invalid("not a request"))),
        };
        let rooms_request = matches!(command, Command::Join { .. } | Command::Part { .. });
        let events = match self.chat.apply(now, command) {
            Ok(events) => events,
            Err(error) => return Ok(Err(error.into())),
        };
        self.persist(now, &events, out)?;
        let Some(user) = self.chat.user(&name) else {
            return Ok(Err(ServiceError::new(ErrorCode::Internal, "user vanished")));
        };
        let rooms: Vec<String> = user.rooms.iter().map(Name::to_string).collect();
        if register {
            let Some(session) = &user.session else {
                return Ok(Err(ServiceError::new(ErrorCode::Internal, "no session")));
            };
            let (first, previous_last_seen_ms) = events
                .iter()
                .find_map(|event| match event {
                    ChatEvent::Online { first, previous_last_seen_ms, .. } => {
                        Some((*first, *previous_last_seen_ms))
                    }
                    _ => None,
                })
                .unwrap_or((false, None));
            let missed_after = if first { None } else { self.store.left_seq(name.as_str())? };
            return Ok(encode(&RegisterReply {
                name: name.to_string(),
                session: session.token.clone(),
                since_ms: session.since_ms,
                heartbeat_ms: self.config.heartbeat_ms(),
                timeout_ms: self.config.presence_timeout_ms,
                first,
                previous_last_seen_ms,
                missed_after,
                rooms,
            }));
        }
        if rooms_request {
            return Ok(encode(&RoomsReply { name: name.to_string(), rooms }));
        }
        Ok(encode(&SessionReply { name: name.to_string(), online: !leave }))
    }

    /// Writes what events changed and queues them for publishing.
    fn persist(
        &mut self,
        now: u64,
        events: &[ChatEvent],
        out: &mut Outbox,
    ) -> Result<(), StoreError> {
        for event in events {
            match event {
                ChatEvent::Online { name, since_ms, .. } => {
                    // The session that began is the user's session now.
                    let user = self.chat.user(name);
                    let token = user.and_then(|u| u.session.as_ref()).map(|s| s.token.as_str());
                    let registered = user.map_or(*since_ms, |u| u.registered_ms);
                    let token = token.unwrap_or_default();
                    self.store.set_online(name.as_str(), token, *since_ms, registered)?;
                }
                ChatEvent::Offline { name, at_ms, .. } => {
                    self.store.set_offline(name.as_str(), *at_ms, self.last_seq)?;
                }
                ChatEvent::Entered { name, room } => {
                    self.store.set_member(name.as_str(), room.as_str(), true)?;
                }
                ChatEvent::Exited { name, room } => {
                    self.store.set_member(name.as_str(), room.as_str(), false)?;
                }
            }
            let (subject, wire) = presence_payload(now, event);
            if let Ok(payload) = serde_json::to_vec(&wire) {
                out.presence.push((subject, Bytes::from(payload)));
            }
        }
        Ok(())
    }

    fn who(&self, room: Option<&Name>, offline: bool) -> Result<Bytes, ServiceError> {
        let mut users: Vec<UserView> = self
            .chat
            .users()
            .filter(|(_, user)| offline || user.is_online())
            .filter(|(_, user)| {
                room.is_none_or(|room| room.is_broadcast() || user.rooms.contains(room))
            })
            .map(|(name, user)| user_view(name, user))
            .collect();
        users.sort_by(|a, b| b.online.cmp(&a.online).then_with(|| a.name.cmp(&b.name)));
        let truncated = users.len() > WHO_USERS_MAX;
        users.truncate(WHO_USERS_MAX);
        encode(&WhoReply { users, truncated })
    }

    fn history(&self, query: &HistoryQuery) -> Result<Result<Bytes, ServiceError>, StoreError> {
        let known = |name: &Name| {
            self.chat.user(name).ok_or_else(|| {
                ServiceError::from(agora_core::ChatError::UnknownUser(name.to_string()))
            })
        };
        let conversation = match (&query.room, &query.with, &query.as_user) {
            (Some(room), _, _) => Conversation::Room(room.to_string()),
            (None, Some(with), Some(me)) => {
                if let Err(error) = known(with).and(known(me)) {
                    return Ok(Err(error));
                }
                Conversation::Direct(with.to_string(), me.to_string())
            }
            (None, None, Some(me)) => match known(me) {
                Ok(user) => Conversation::Inbox {
                    name: me.to_string(),
                    rooms: user.rooms.iter().map(Name::to_string).collect(),
                },
                Err(error) => return Ok(Err(error)),
            },
            _ => return Ok(Err(ServiceError::invalid("no conversation given"))),
        };
        let (messages, more) =
            self.store.history(&conversation, query.before, query.after, query.limit)?;
        Ok(encode(&HistoryReply { messages, more }))
    }

    /// Ends silent sessions and prunes history, on its own transaction.
    fn sweep(&mut self, now: u64) {
        if now.saturating_sub(self.last_sweep_ms) < TICK.as_millis() as u64 {
            return;
        }
        self.last_sweep_ms = now;
        let mut outbox = Outbox::default();
        let events = self.chat.apply(now, Command::Expire).unwrap_or_default();
        let prune = now.saturating_sub(self.last_prune_ms) >= PRUNE_EVERY_MS;
        if events.is_empty() && !prune {
            return;
        }
        let result = self.store.begin().and_then(|()| {
            self.persist(now, &events, &mut outbox)?;
            let pruned = if prune {
                self.last_prune_ms = now;
                self.store.prune(self.config.history_max, PRUNE_BATCH)?
            } else {
                0
            };
            self.store.commit().map(|()| pruned)
        });
        match result {
            Ok(0) => {}
            Ok(pruned) => tracing::debug!(pruned, "pruned chat history"),
            Err(error) => {
                tracing::error!(%error, "presence sweep failed; rolling back");
                self.store.rollback();
                if let Err(error) = self.reload() {
                    tracing::error!(%error, "cannot reload the chat store");
                }
                outbox.presence.clear();
            }
        }
        for event in &events {
            if let ChatEvent::Offline { name, reason: LeaveReason::Timeout, .. } = event {
                tracing::info!(%name, "presence timed out");
            }
        }
        self.deliver(outbox);
    }

    fn deliver(&self, outbox: Outbox) {
        let Outbox { replies, presence } = outbox;
        if replies.is_empty() && presence.is_empty() {
            return;
        }
        self.runtime.block_on(async {
            for (to, reply) in replies {
                match to {
                    ReplyTo::Request(request, endpoint) => {
                        self.repliers[endpoint].reply_bytes(&request, reply).await;
                    }
                    ReplyTo::Subject(subject) => {
                        if let Err(error) = publish_reply(&self.client, subject, reply).await {
                            tracing::warn!(%error, "could not acknowledge a message");
                        }
                    }
                }
            }
            for (subject, payload) in presence {
                self.client.publish(subject, payload).await.ok();
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_messages_are_refused_before_the_owner() {
        let good = br#"{"id":"m1","from":"alice","text":"hi <b>there</b>"}"#;
        let incoming = parse_message("all", false, good).expect("valid");
        assert_eq!(incoming.room.as_ref().map(Name::as_str), Some("all"));
        assert_eq!(incoming.at_ms, None);
        assert!(parse_message("bob", true, good).expect("valid").to.is_some());
        let long = format!(r#"{{"id":"m1","from":"alice","text":"{}"}}"#, "x".repeat(5000));
        for (target, payload) in [
            ("all", &b""[..]),
            ("all", &b"not json"[..]),
            ("all", &br#"{"id":"m1","from":"alice"}"#[..]),
            ("all", &br#"{"id":"m1","from":"alice","text":"hi","extra":1}"#[..]),
            ("all", &br#"{"id":"m1","from":"al ice","text":"hi"}"#[..]),
            ("all", &br#"{"id":"","from":"alice","text":"hi"}"#[..]),
            ("all", &br#"{"id":"m1","from":"alice","text":""}"#[..]),
            ("all", &br#"{"id":"m1","from":"alice","text":"\u001b[2J"}"#[..]),
            ("all", long.as_bytes()),
            ("bad$room", good),
        ] {
            let error = parse_message(target, false, payload).expect_err("refused");
            assert_eq!(
                error.code,
                ErrorCode::InvalidRequest,
                "{}",
                String::from_utf8_lossy(payload)
            );
        }
    }

    #[test]
    fn bad_requests_are_refused_before_the_owner() {
        let cases: [(&str, &str); 12] = [
            (subject::REGISTER, r#"{}"#),
            (subject::REGISTER, r#"{"name":"a.b"}"#),
            (subject::REGISTER, r#"{"name":"alice","session":"short"}"#),
            (subject::HEARTBEAT, r#"{"name":"alice"}"#),
            (subject::LEAVE, r#"{"name":"alice","session":"x y z w v u"}"#),
            (subject::JOIN, r#"{"name":"alice","session":"token-a1","room":"*"}"#),
            (subject::PART, r#"{"name":"alice","session":"token-a1"}"#),
            (subject::WHO, r#"{"room":"no spaces"}"#),
            (subject::HISTORY, r#"{}"#),
            (subject::HISTORY, r#"{"room":"all","as":"alice"}"#),
            (subject::HISTORY, r#"{"with":"bob"}"#),
            (subject::HISTORY, r#"{"room":"all","limit":0}"#),
        ];
        for (endpoint, payload) in cases {
            let error = parse_request(endpoint, payload.as_bytes()).expect_err(payload);
            assert_eq!(error.code, ErrorCode::InvalidRequest, "{endpoint} {payload}");
        }
        assert!(parse_request(subject::WHO, b"").is_ok());
        let RequestCommand::Chat(Command::Register { token, .. }) =
            parse_request(subject::REGISTER, br#"{"name":"alice"}"#).expect("valid")
        else {
            panic!("a register command");
        };
        chat::check_session(&token).expect("a made-up token is a valid token");
    }
}
