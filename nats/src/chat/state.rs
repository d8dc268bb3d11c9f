//! The chat service's owner state (see `crate::owner`): names, sessions and rooms
//! (`agora_core::Chat`) in memory, and what a group of requests and messages does to the
//! store.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use agora_core::chat::{self, Command, LeaveReason, Target};
use agora_core::{Chat, ChatEvent, Name};
use async_nats::Client;
use async_nats::service::Request;
use bytes::Bytes;
use rusqlite::{Connection, Transaction};

use super::store::{self, Conversation, NewMessage};
use super::wire::{
    ChatMessage, ChatUpdate, EditsReply, HistoryReply, MessageAck, PresenceEvent, ReadReply,
    RegisterReply, RoomsReply, SearchReply, SessionReply, StoredMessage, TypingReply, UnreadReply,
    UserView, WhoReply,
};
use super::{
    ChatServiceConfig, ENDPOINTS, MessageCounts, PRUNE_BATCH, PRUNE_EVERY_MS, WHO_USERS_MAX,
};
use crate::clock::now_ms;
use crate::error::{ErrorCode, ServiceError};
use crate::owner::State;
use crate::replica::Event;
use crate::service::{ErrorCounts, Replier, encode};
use crate::sqlite::StoreError;
use crate::subjects::chat as subject;
mod counters;
use counters::chat_metrics;
mod presence;
mod reads;
mod updates;
use presence::{presence_payload, user_view};

/// A message taken off a fan-out subject, checked.
#[derive(Debug)]
pub struct Incoming {
    pub room: Option<Name>,
    pub to: Option<Name>,
    pub from: Name,
    pub id: String,
    pub text: String,
    pub at_ms: Option<u64>,
    /// The message it replies to (a thread).
    pub reply_to: Option<u64>,
}

/// A validated request for the owner.
#[derive(Debug)]
pub enum RequestCommand {
    Chat(Command),
    Who { room: Option<Name>, offline: bool },
    History { query: HistoryQuery },
    Update(UpdateCommand),
}

/// What a person does to messages after they were sent, and what they ask about them.
#[derive(Debug)]
pub enum UpdateCommand {
    Edit {
        name: Name,
        seq: u64,
        text: Option<String>,
    },
    /// An edit without text: the message's text goes.
    Delete {
        name: Name,
        seq: u64,
        text: Option<String>,
    },
    React {
        name: Name,
        seq: u64,
        emoji: String,
        on: bool,
    },
    Read {
        name: Name,
        place: Place,
        seq: u64,
    },
    Typing {
        name: Name,
        place: Place,
    },
    Unread {
        name: Name,
    },
    Search {
        name: Name,
        query: String,
        place: Option<Place>,
        before: Option<u64>,
        limit: usize,
    },
    Edits {
        reader: Option<Name>,
        seq: u64,
    },
}

#[derive(Debug)]
pub struct HistoryQuery {
    pub room: Option<Name>,
    pub with: Option<Name>,
    pub as_user: Option<Name>,
    pub before: Option<u64>,
    pub after: Option<u64>,
    pub limit: usize,
    /// The replies to this message.
    pub thread: Option<u64>,
    /// Who reads (none: a service).
    pub reader: Option<Name>,
}

/// What the owner is asked to do.
#[derive(Debug)]
pub enum Envelope {
    Request {
        request: Box<Request>,
        endpoint: &'static str,
        command: RequestCommand,
    },
    /// A message to record, publish and acknowledge (`agora.chat.send`).
    Message {
        incoming: Incoming,
        request: Box<Request>,
    },
    /// Periodic work: silent sessions end, history is pruned.
    Sweep,
}

/// Where a reply goes: a micro-service request, or the reply subject of a plain message.
#[derive(Debug)]
enum ReplyTo {
    Request(Box<Request>, &'static str),
}

/// What a group produced, sent once it committed.
#[derive(Debug, Default)]
pub struct Outbox {
    replies: Vec<(ReplyTo, Result<Bytes, ServiceError>)>,
    /// Recorded messages, for their fan-out subjects.
    messages: Vec<Event>,
    presence: Vec<(String, Bytes)>,
    /// Messages recorded and resends found, counted once committed.
    recorded: u64,
    duplicates: u64,
}

/// The chat service's state, owned by its owner thread.
pub struct ChatState {
    chat: Chat,
    client: Client,
    config: ChatServiceConfig,
    repliers: HashMap<&'static str, Replier>,
    counts: Arc<MessageCounts>,
    last_seq: u64,
    last_prune_ms: u64,
    typing: agora_core::chat::EventLimiter,
    receipts: agora_core::chat::EventLimiter,
}

impl std::fmt::Debug for ChatState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatState").field("last_seq", &self.last_seq).finish_non_exhaustive()
    }
}

fn unavailable(error: &StoreError) -> ServiceError {
    ServiceError::new(ErrorCode::Unavailable, format!("chat store failed ({error}); retry"))
}

/// Typing events: one per sender and conversation every this long.
const TYPING_GAP_MS: u64 = 2_000;
/// Read receipts: one per sender and conversation every this long (the marker is always kept).
const RECEIPT_GAP_MS: u64 = 1_000;
/// Senders-and-conversations the limiters remember.
const LIMITER_KEYS_MAX: usize = 100_000;

impl ChatState {
    /// The state as the store has it.
    pub fn load(
        conn: &Connection,
        client: Client,
        config: ChatServiceConfig,
        errors: &ErrorCounts,
        counts: Arc<MessageCounts>,
    ) -> Result<Self, StoreError> {
        let repliers = ENDPOINTS
            .into_iter()
            .chain([subject::SEND])
            .map(|name| (name, Replier::new(name, errors.clone())))
            .collect();
        let started = std::time::Instant::now();
        store::rebuild_search(conn)?;
        tracing::info!(took_ms = started.elapsed().as_millis() as u64, "search index rebuilt");
        let mut state = Self {
            chat: Chat::new(config.core()),
            client,
            config,
            repliers,
            counts,
            last_seq: 0,
            last_prune_ms: 0,
            typing: agora_core::chat::EventLimiter::new(TYPING_GAP_MS, LIMITER_KEYS_MAX),
            receipts: agora_core::chat::EventLimiter::new(RECEIPT_GAP_MS, LIMITER_KEYS_MAX),
        };
        state.reload(conn)?;
        tracing::info!(
            users = state.chat.users().count(),
            online = state.chat.online_count(),
            last_seq = state.last_seq,
            "chat store loaded"
        );
        Ok(state)
    }

    /// (Re)builds the in-memory state from the store.
    fn reload(&mut self, conn: &Connection) -> Result<(), StoreError> {
        let now = now_ms();
        self.chat = Chat::new(self.config.core());
        for row in store::users(conn)? {
            let Ok(name) = Name::user(&row.name) else { continue };
            let rooms: BTreeSet<Name> =
                row.rooms.iter().filter_map(|room| Name::room(room).ok()).collect();
            self.chat.restore(now, name, row.registered_ms, row.last_seen_ms, row.session, rooms);
        }
        self.last_seq = store::last_seq(conn)?;
        Ok(())
    }

    /// Records one message (or finds it recorded already).
    fn record(
        &mut self,
        tx: &Transaction<'_>,
        now: u64,
        incoming: &Incoming,
        out: &mut Outbox,
    ) -> Result<Result<Bytes, ServiceError>, StoreError> {
        let target = match (&incoming.room, &incoming.to) {
            (Some(room), _) => Target::Room(room),
            (None, Some(to)) => Target::Direct(to),
            (None, None) => return Ok(Err(ServiceError::invalid("a message needs a target"))),
        };
        let mut duplicate = |seq| {
            out.duplicates += 1;
            encode(&MessageAck { seq, duplicate: true })
        };
        if let Err(error) = self.chat.accept_message(now, &incoming.from, target) {
            // A resend is acknowledged again, never refused (not even for the rate).
            if let Some(seq) = store::find(tx, incoming.from.as_str(), &incoming.id)? {
                return Ok(duplicate(seq));
            }
            self.counts.refused.fetch_add(1, Ordering::Relaxed);
            return Ok(Err(error.into()));
        }
        if let Some(parent) = incoming.reply_to {
            let conv = |room: Option<&str>, from: &str, to: Option<&str>| match room {
                Some(room) => store::room_conv(room),
                None => store::direct_conv(from, to.unwrap_or_default()),
            };
            let here = conv(
                incoming.room.as_ref().map(Name::as_str),
                incoming.from.as_str(),
                incoming.to.as_ref().map(Name::as_str),
            );
            let parent_message = store::message(tx, parent)?;
            let same = parent_message.as_ref().is_some_and(|p| {
                p.reply_to.is_none()
                    && !p.deleted
                    && conv(p.room.as_deref(), &p.from, p.to.as_deref()) == here
            });
            if !same {
                self.chat.refund_message(&incoming.from);
                return Ok(Err(ServiceError::invalid(format!(
                    "reply_to: no message {parent} in this conversation to reply to (threads \
                     are one level deep)"
                ))));
            }
        }
        let inserted = store::insert(
            tx,
            &NewMessage {
                room: incoming.room.as_ref().map(Name::as_str),
                to: incoming.to.as_ref().map(Name::as_str),
                from: incoming.from.as_str(),
                id: &incoming.id,
                text: &incoming.text,
                at_ms: incoming.at_ms.unwrap_or(now),
                recorded_ms: now,
                reply_to: incoming.reply_to,
            },
        )?;
        let Some(seq) = inserted else {
            self.chat.refund_message(&incoming.from);
            let seq = store::find(tx, incoming.from.as_str(), &incoming.id)?.unwrap_or_default();
            return Ok(duplicate(seq));
        };
        self.last_seq = self.last_seq.max(seq);
        out.recorded += 1;
        if crate::metrics::metering() {
            let metrics = chat_metrics();
            let sent = if incoming.room.is_some() { &metrics.room } else { &metrics.dm };
            sent.inc();
            if let Some(sent) = incoming.at_ms.filter(|sent| *sent <= now) {
                metrics.history_lag.observe((now - sent) as f64 / 1e3);
            }
        }
        // Published as recorded: the sender the server vouched for, its place in history.
        let published = ChatMessage {
            id: incoming.id.clone(),
            from: incoming.from.to_string(),
            text: incoming.text.clone(),
            at: Some(incoming.at_ms.unwrap_or(now)),
            seq: Some(seq),
            reply_to: incoming.reply_to,
        };
        let subject = match (&incoming.room, &incoming.to) {
            (Some(room), _) => subject::room(room.as_str()),
            (None, to) => subject::dm(to.as_ref().map_or("", Name::as_str)),
        };
        if let Ok(payload) = encode(&published) {
            out.messages.push(Event::new(subject, payload));
        }
        if let Some(parent) = incoming.reply_to {
            let replies = store::count_reply(tx, parent)?;
            if let Some(parent_message) = store::message(tx, parent)? {
                let update = ChatUpdate {
                    seq: Some(parent),
                    replies: Some(replies),
                    ..ChatUpdate::new("reply", &incoming.from, now)
                };
                Self::push_update(out, &parent_message, update, true, None);
            }
        }
        Ok(encode(&MessageAck { seq, duplicate: false }))
    }

    fn execute(
        &mut self,
        tx: &Transaction<'_>,
        now: u64,
        command: RequestCommand,
        out: &mut Outbox,
    ) -> Result<Result<Bytes, ServiceError>, StoreError> {
        match command {
            RequestCommand::Chat(command) => self.execute_chat(tx, now, command, out),
            RequestCommand::Who { room, offline } => Ok(self.who(room.as_ref(), offline)),
            RequestCommand::History { query } => self.history(tx, &query),
            RequestCommand::Update(command) => self.execute_update(tx, now, command, out),
        }
    }

    fn execute_chat(
        &mut self,
        tx: &Transaction<'_>,
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
        self.persist(tx, now, &events, out)?;
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
            let missed_after = if first { None } else { store::left_seq(tx, name.as_str())? };
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
        tx: &Transaction<'_>,
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
                    store::set_online(tx, name.as_str(), token, *since_ms, registered)?;
                }
                ChatEvent::Offline { name, at_ms, .. } => {
                    store::set_offline(tx, name.as_str(), *at_ms, self.last_seq)?;
                }
                ChatEvent::Entered { name, room } => {
                    store::set_member(tx, name.as_str(), room.as_str(), true)?;
                }
                ChatEvent::Exited { name, room } => {
                    store::set_member(tx, name.as_str(), room.as_str(), false)?;
                }
            }
            let (subject, wire) = presence_payload(now, event);
            if let Ok(payload) = serde_json::to_vec(&wire) {
                out.presence.push((subject, Bytes::from(payload)));
            }
        }
        Ok(())
    }

    /// Ends silent sessions and prunes history.
    fn sweep(
        &mut self,
        tx: &Transaction<'_>,
        now: u64,
        out: &mut Outbox,
    ) -> Result<(), StoreError> {
        let events = self.chat.apply(now, Command::Expire).unwrap_or_default();
        self.persist(tx, now, &events, out)?;
        // New messages join the search index in one batch per sweep.
        store::index_new(tx)?;
        for event in &events {
            if let ChatEvent::Offline { name, reason: LeaveReason::Timeout, .. } = event {
                tracing::info!(%name, "presence timed out");
            }
        }
        if now.saturating_sub(self.last_prune_ms) >= PRUNE_EVERY_MS {
            self.last_prune_ms = now;
            self.typing.forget(now);
            self.receipts.forget(now);
            let pruned = store::prune(tx, self.config.history_max, PRUNE_BATCH)?;
            if pruned > 0 {
                tracing::debug!(pruned, "pruned chat history");
            }
        }
        Ok(())
    }
}

/// A direct conversation or a room, as a request names it.
#[derive(Debug, Clone)]
pub enum Place {
    Room(Name),
    With(Name),
}

/// Whether `reader` may read `message`: a room's messages every signed-in person (as its
/// history), a direct message its two parties; a service everything.
fn may_read(reader: Option<&Name>, message: &StoredMessage) -> bool {
    match (&message.room, reader) {
        (Some(_), _) | (None, None) => true,
        (None, Some(me)) => {
            message.from == me.as_str() || message.to.as_deref() == Some(me.as_str())
        }
    }
}

fn not_found(seq: u64) -> ServiceError {
    ServiceError::new(ErrorCode::NotFound, format!("no message {seq} you may read"))
}

impl State for ChatState {
    type Envelope = Envelope;
    type Outbox = Outbox;

    fn span(&self, envelope: &Envelope) -> Option<crate::trace::Trace> {
        match envelope {
            Envelope::Request { request, .. } | Envelope::Message { request, .. } => {
                crate::service::span_of(request)
            }
            _ => None,
        }
    }

    fn apply(
        &mut self,
        tx: &Transaction<'_>,
        now_ms: u64,
        envelope: Envelope,
        out: &mut Outbox,
    ) -> Result<(), StoreError> {
        match envelope {
            Envelope::Request { request, endpoint, command } => {
                let reply = self.execute(tx, now_ms, command, out)?;
                out.replies.push((ReplyTo::Request(request, endpoint), reply));
            }
            Envelope::Message { incoming, request } => {
                let ack = self.record(tx, now_ms, &incoming, out)?;
                out.replies.push((ReplyTo::Request(request, subject::SEND), ack));
            }
            Envelope::Sweep => self.sweep(tx, now_ms, out)?,
        }
        Ok(())
    }

    fn tick(&mut self, _now_ms: u64) -> Vec<Envelope> {
        vec![Envelope::Sweep]
    }

    fn rolled_back(&mut self, conn: &Connection, error: &StoreError, out: &mut Outbox) {
        if let Err(error) = self.reload(conn) {
            tracing::error!(%error, "cannot reload the chat store");
        }
        let failure = unavailable(error);
        out.replies.iter_mut().for_each(|(_, reply)| *reply = Err(failure.clone()));
        out.presence.clear();
        out.messages.clear();
        out.recorded = 0;
        out.duplicates = 0;
    }

    /// Recorded messages travel in the log entry; the runtime publishes them once it is stored,
    /// before the acknowledgements (once a sender has its ack, members have it).
    fn durable_events(&mut self, out: &mut Outbox) -> Vec<Event> {
        std::mem::take(&mut out.messages)
    }

    async fn deliver(&mut self, _now_ms: u64, outbox: Outbox) {
        let Outbox { replies, messages: _, presence, recorded, duplicates } = outbox;
        self.counts.recorded.fetch_add(recorded, Ordering::Relaxed);
        self.counts.duplicates.fetch_add(duplicates, Ordering::Relaxed);
        for (to, reply) in replies {
            match to {
                ReplyTo::Request(request, endpoint) => {
                    self.repliers[endpoint].reply_bytes(&request, reply).await;
                }
            }
        }
        for (subject, payload) in presence {
            self.client.publish(subject, payload).await.ok();
        }
    }
}
