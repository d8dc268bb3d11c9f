//! The chat client: a registered session that heartbeats, sends messages until they are in
//! history, and an inbox that receives rooms, direct messages and presence events.
//!
//! Used by `agora chat`, the tests and `agora bench chat`; anything else can speak the same
//! subjects (see `docs/subjects.md`).
//!
//! - [`ChatSession`] holds a name: it registers, heartbeats every `heartbeat_ms` the service
//!   asked for, registers again (same token) when the service forgot the session, and reports
//!   what happened on a [`watch`] channel. Dropping it stops the heartbeats (the name goes
//!   offline one timeout later); [`ChatSession::leave`] goes offline at once.
//! - Sending asks the chat service (`agora.chat.send`): it records the message, publishes it on
//!   its fan-out subject and acknowledges; without an acknowledgement the same message (same
//!   id) is sent again, up to [`SEND_ATTEMPTS`] times (history keeps it once, and publishes
//!   it once). Receivers still drop repeats by sender and id ([`ChatInbox`]).
//! - [`ChatInbox`] subscribes to `agora.chat.dm.<me>`, `agora.chat.room.all`, the rooms it is
//!   told to listen to and, optionally, every presence event. It drops what does not pass the
//!   service's format checks, so what it yields is plain, bounded text.

use std::borrow::Cow;
use std::collections::{HashSet, VecDeque};
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use agora_core::Name;
use agora_core::chat;
use async_nats::Client;
use futures::StreamExt;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_stream::StreamMap;

use crate::chat::wire::{
    ChatMessage, HistoryReply, HistoryRequest, MessageAck, PresenceEvent, RegisterReply,
    RegisterRequest, RoomRequest, RoomsReply, SendRequest, SessionReply, SessionRequest, WhoReply,
    WhoRequest,
};
use crate::client::{AgoraClient, ClientError};
use crate::clock::now_ms;
use crate::error::ErrorCode;
use crate::subjects::{self, chat as subject};

/// Sends of one message at most before giving up on an acknowledgement.
pub const SEND_ATTEMPTS: u32 = 3;
/// Pause before sending again after `busy`.
const BUSY_RETRY: Duration = Duration::from_millis(100);
/// Recent (sender, id) pairs an inbox remembers to drop repeats.
pub const DEDUP_WINDOW: usize = 4_096;

impl AgoraClient {
    pub async fn chat_register(
        &self,
        name: &str,
        session: Option<&str>,
    ) -> Result<RegisterReply, ClientError> {
        let request =
            RegisterRequest { name: name.to_owned(), session: session.map(str::to_owned) };
        self.request(subject::REGISTER_SUBJECT, &request).await
    }

    pub async fn chat_who(&self, request: &WhoRequest) -> Result<WhoReply, ClientError> {
        self.request(subject::WHO_SUBJECT, request).await
    }

    pub async fn chat_history(
        &self,
        request: &HistoryRequest,
    ) -> Result<HistoryReply, ClientError> {
        self.request(subject::HISTORY_SUBJECT, request).await
    }

    /// Replaces the text of one of the caller's messages (the earlier text is kept).
    pub async fn chat_edit(
        &self,
        seq: u64,
        text: &str,
    ) -> Result<super::wire::StoredMessage, ClientError> {
        let request = super::wire::EditRequest { seq, text: text.to_owned() };
        self.request(subject::EDIT_SUBJECT, &request).await
    }

    /// Deletes one of the caller's messages.
    pub async fn chat_delete(&self, seq: u64) -> Result<super::wire::StoredMessage, ClientError> {
        self.request(subject::DELETE_SUBJECT, &super::wire::SeqRequest { seq }).await
    }

    /// A message's earlier texts.
    pub async fn chat_edits(&self, seq: u64) -> Result<super::wire::EditsReply, ClientError> {
        self.request(subject::EDITS_SUBJECT, &super::wire::SeqRequest { seq }).await
    }

    /// Adds (`on`) or takes back the caller's reaction.
    pub async fn chat_react(
        &self,
        seq: u64,
        emoji: &str,
        on: bool,
    ) -> Result<super::wire::StoredMessage, ClientError> {
        let request = super::wire::ReactRequest { seq, emoji: emoji.to_owned(), on };
        self.request(subject::REACT_SUBJECT, &request).await
    }

    /// The caller read a room or a direct conversation up to `seq`.
    pub async fn chat_read(
        &self,
        room: Option<String>,
        with: Option<String>,
        seq: u64,
    ) -> Result<super::wire::ReadReply, ClientError> {
        let request = super::wire::ConversationRequest { room, with, seq: Some(seq) };
        self.request(subject::READ_SUBJECT, &request).await
    }

    /// The caller is typing in a room or a direct conversation.
    pub async fn chat_typing(
        &self,
        room: Option<String>,
        with: Option<String>,
    ) -> Result<super::wire::TypingReply, ClientError> {
        let request = super::wire::ConversationRequest { room, with, seq: None };
        self.request(subject::TYPING_SUBJECT, &request).await
    }

    /// The caller's conversations with what they have not read.
    pub async fn chat_unread(&self) -> Result<super::wire::UnreadReply, ClientError> {
        self.request(subject::UNREAD_SUBJECT, &serde_json::json!({})).await
    }

    /// Searches what the caller may read.
    pub async fn chat_search(
        &self,
        request: &super::wire::SearchRequest,
    ) -> Result<super::wire::SearchReply, ClientError> {
        self.request(subject::SEARCH_SUBJECT, request).await
    }

    /// Sends a message and waits until the chat service recorded (and published) it, sending
    /// it again (same id) when no acknowledgement comes.
    pub async fn chat_send(&self, message: &SendRequest) -> Result<MessageAck, ClientError> {
        let mut attempt = 1;
        loop {
            match self.request(subject::SEND_SUBJECT, message).await {
                Err(ClientError::Timeout(_) | ClientError::NoResponders(_))
                    if attempt < SEND_ATTEMPTS =>
                {
                    attempt += 1;
                }
                Err(ClientError::Service(error))
                    if error.code == ErrorCode::Busy && attempt < SEND_ATTEMPTS =>
                {
                    attempt += 1;
                    tokio::time::sleep(BUSY_RETRY).await;
                }
                other => return other,
            }
        }
    }
}

/// What happened to a session's name, as its heartbeats found out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionStatus {
    Online,
    /// The service had ended the session (it missed heartbeats, or restarted without it); it
    /// was registered again. What arrived meanwhile is in history after `missed_after`.
    Rejoined {
        missed_after: Option<u64>,
    },
    /// Someone else holds the name now; this session is over.
    Lost(String),
}

/// A registered name: heartbeats in the background and sends messages as that name.
#[derive(Debug)]
pub struct ChatSession {
    client: AgoraClient,
    registration: RegisterReply,
    id_prefix: String,
    next_id: AtomicU64,
    status: watch::Receiver<SessionStatus>,
    heartbeat: JoinHandle<()>,
}

impl Drop for ChatSession {
    fn drop(&mut self) {
        self.heartbeat.abort();
    }
}

impl ChatSession {
    /// Registers `name` with a fresh session token and starts heartbeating.
    pub async fn register(client: AgoraClient, name: &str) -> Result<Self, ClientError> {
        let token = crate::auth::secrets::new_token().map_err(ClientError::Service)?;
        let registration = client.chat_register(name, Some(&token)).await?;
        let (status_tx, status) = watch::channel(SessionStatus::Online);
        let beat = Duration::from_millis(registration.heartbeat_ms.max(50));
        let heartbeat =
            tokio::spawn(heartbeat(client.clone(), name.to_owned(), token, beat, status_tx));
        Ok(Self {
            client,
            registration,
            id_prefix: nuid::next().to_string(),
            next_id: AtomicU64::new(1),
            status,
            heartbeat,
        })
    }

    pub fn name(&self) -> &str {
        &self.registration.name
    }

    /// The reply to the registration: the session token, timeouts, rooms, `missed_after`.
    pub fn registration(&self) -> &RegisterReply {
        &self.registration
    }

    pub fn client(&self) -> &AgoraClient {
        &self.client
    }

    /// Changes of the session's status, as the heartbeats find them.
    pub fn status(&self) -> watch::Receiver<SessionStatus> {
        self.status.clone()
    }

    /// A message from this session with a fresh id, to `room` or to `to`.
    pub fn message(&self, room: Option<&str>, to: Option<&str>, text: &str) -> SendRequest {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        SendRequest {
            room: room.map(str::to_owned),
            to: to.map(str::to_owned),
            id: format!("{}-{n}", self.id_prefix),
            from: Some(self.name().to_owned()),
            text: text.to_owned(),
            at: Some(now_ms()),
            reply_to: None,
        }
    }

    /// Says `text` in `room`; returns once it is in history.
    pub async fn say(&self, room: &str, text: &str) -> Result<MessageAck, ClientError> {
        let room = Name::room(room).map_err(|e| ClientError::Service(e.into()))?;
        self.client.chat_send(&self.message(Some(room.as_str()), None, text)).await
    }

    /// Sends `text` to `to` directly; returns once it is in history (`unknown_user` when `to`
    /// was never registered).
    pub async fn dm(&self, to: &str, text: &str) -> Result<MessageAck, ClientError> {
        let to = Name::user(to).map_err(|e| ClientError::Service(e.into()))?;
        self.client.chat_send(&self.message(None, Some(to.as_str()), text)).await
    }

    fn room_request(&self, room: &str) -> RoomRequest {
        RoomRequest {
            name: self.name().to_owned(),
            session: self.registration.session.clone(),
            room: room.to_owned(),
        }
    }

    pub async fn join(&self, room: &str) -> Result<RoomsReply, ClientError> {
        self.client.request(subject::JOIN_SUBJECT, &self.room_request(room)).await
    }

    pub async fn part(&self, room: &str) -> Result<RoomsReply, ClientError> {
        self.client.request(subject::PART_SUBJECT, &self.room_request(room)).await
    }

    /// Goes offline now.
    pub async fn leave(self) -> Result<SessionReply, ClientError> {
        self.heartbeat.abort();
        let request = SessionRequest {
            name: self.name().to_owned(),
            session: self.registration.session.clone(),
        };
        self.client.request(subject::LEAVE_SUBJECT, &request).await
    }
}

async fn heartbeat(
    client: AgoraClient,
    name: String,
    token: String,
    every: Duration,
    status: watch::Sender<SessionStatus>,
) {
    let request = SessionRequest { name: name.clone(), session: token.clone() };
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let beat: Result<SessionReply, _> =
            client.request(subject::HEARTBEAT_SUBJECT, &request).await;
        match beat {
            Err(error) if error.code() == ErrorCode::NotRegistered => {
                match client.chat_register(&name, Some(&token)).await {
                    Ok(reply) => {
                        status.send_replace(SessionStatus::Rejoined {
                            missed_after: reply.missed_after,
                        });
                    }
                    Err(error) if error.code() == ErrorCode::NameTaken => {
                        status.send_replace(SessionStatus::Lost(error.to_string()));
                        return;
                    }
                    Err(error) => tracing::warn!(%error, "could not register again"),
                }
            }
            // The service is away: keep beating; it restores sessions when it is back.
            Err(error) => tracing::debug!(%error, "heartbeat failed"),
            Ok(_) => {}
        }
    }
}

/// Something a chat client receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    Room { room: String, message: ChatMessage },
    Direct { to: String, message: ChatMessage },
    Presence(PresenceEvent),
}

/// A chat message as received, borrowed from the payload where it has no escapes.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ReceivedMessage<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(borrow)]
    from: Cow<'a, str>,
    #[serde(borrow)]
    text: Cow<'a, str>,
    #[serde(default)]
    at: Option<u64>,
    #[serde(default)]
    seq: Option<u64>,
    #[serde(default)]
    reply_to: Option<u64>,
}

impl ReceivedMessage<'_> {
    /// Whether it is well formed (the format checks the chat service applies).
    fn is_valid(&self) -> bool {
        chat::check_message(&self.from, &self.id, &self.text).is_ok()
    }

    fn into_owned(self) -> ChatMessage {
        ChatMessage {
            id: self.id.into_owned(),
            from: self.from.into_owned(),
            text: self.text.into_owned(),
            at: self.at,
            seq: self.seq,
            reply_to: self.reply_to,
        }
    }
}

/// What arrived on a chat subject, before dedup.
enum Arrival<'a> {
    Room(&'a str, ReceivedMessage<'a>),
    Direct(&'a str, ReceivedMessage<'a>),
    Presence(PresenceEvent),
}

/// Parses and checks what arrived on a chat subject; `None` for anything malformed.
fn arrival<'a>(subject_name: &'a str, payload: &'a [u8]) -> Option<Arrival<'a>> {
    let target = subjects::last_token(subject_name);
    let kind = subject_name.strip_prefix(subject::GROUP)?.split('.').nth(1)?;
    // The same shape rule as the chat service's: a message or event is a JSON object.
    crate::service::check_object(payload).ok()?;
    if kind == "presence" {
        let event: PresenceEvent = serde_json::from_slice(payload).ok()?;
        return Name::is_valid(&event.name).then_some(Arrival::Presence(event));
    }
    if payload.len() > crate::chat::MESSAGE_BYTES_MAX || !Name::is_valid(target) {
        return None;
    }
    let message: ReceivedMessage<'a> = serde_json::from_slice(payload).ok()?;
    if !message.is_valid() {
        return None;
    }
    match kind {
        "room" => Some(Arrival::Room(target, message)),
        "dm" => Some(Arrival::Direct(target, message)),
        _ => None,
    }
}

/// Parses what arrived on a chat subject; `None` for anything malformed.
pub fn parse_incoming(subject_name: &str, payload: &[u8]) -> Option<Incoming> {
    Some(match arrival(subject_name, payload)? {
        Arrival::Room(room, message) => {
            Incoming::Room { room: room.to_owned(), message: message.into_owned() }
        }
        Arrival::Direct(to, message) => {
            Incoming::Direct { to: to.to_owned(), message: message.into_owned() }
        }
        Arrival::Presence(event) => Incoming::Presence(event),
    })
}

/// Remembers the last [`DEDUP_WINDOW`] (sender, id) pairs as 64-bit keyed hashes (two
/// different pairs in one window colliding is a 1 in 2^52 event, and the key is random per
/// inbox, so nobody can aim for it).
#[derive(Debug, Default)]
struct Recent {
    keys: RandomState,
    order: VecDeque<u64>,
    /// The hashes are the keys already: no second hashing.
    seen: HashSet<u64, BuildHasherDefault<Prehashed>>,
}

/// A [`Hasher`] for keys that are hashes already.
#[derive(Debug, Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used; fold anything else in, to stay a correct hasher.
        for byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*byte);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}

impl Recent {
    /// True the first time a pair is seen (within the window).
    fn first(&mut self, from: &str, id: &str) -> bool {
        let key = self.keys.hash_one((from, id));
        if !self.seen.insert(key) {
            return false;
        }
        if self.order.len() >= DEDUP_WINDOW
            && let Some(old) = self.order.pop_front()
        {
            self.seen.remove(&old);
        }
        self.order.push_back(key);
        true
    }
}

/// What one user receives: its direct messages, the broadcast room, the rooms it listens to
/// and (optionally) presence events, deduplicated, checked, in arrival order per subject.
///
/// The subscriptions are polled together in the caller's task (no task or channel per
/// subscription); each keeps async-nats' bounded buffer.
#[derive(Debug)]
pub struct ChatInbox {
    client: Client,
    /// Subscriptions by subject.
    subscriptions: StreamMap<String, async_nats::Subscriber>,
    recent: Recent,
}

impl ChatInbox {
    /// Subscribes to `name`'s direct messages, the broadcast room and, with `presence`, every
    /// presence event. The subscriptions are in place when this returns.
    pub async fn open(client: &Client, name: &str, presence: bool) -> Result<Self, ClientError> {
        let name = Name::user(name).map_err(|e| ClientError::Service(e.into()))?;
        let mut inbox = Self {
            client: client.clone(),
            subscriptions: StreamMap::new(),
            recent: Recent::default(),
        };
        inbox.subscribe(subject::dm(name.as_str())).await?;
        if presence {
            inbox.subscribe(subject::PRESENCE_ALL.to_owned()).await?;
        }
        inbox.listen(chat::BROADCAST_ROOM).await?;
        Ok(inbox)
    }

    async fn subscribe(&mut self, subject_name: String) -> Result<(), ClientError> {
        if self.subscriptions.contains_key(&subject_name) {
            return Ok(());
        }
        let transport = |e: &dyn std::fmt::Display| ClientError::Transport(e.to_string());
        let subscription =
            self.client.subscribe(subject_name.clone()).await.map_err(|e| transport(&e))?;
        self.subscriptions.insert(subject_name, subscription);
        Ok(())
    }

    /// Starts receiving `room`'s messages (a no-op when already listening).
    pub async fn listen(&mut self, room: &str) -> Result<(), ClientError> {
        let room = Name::room(room).map_err(|e| ClientError::Service(e.into()))?;
        self.subscribe(subject::room(room.as_str())).await?;
        // The server has every subscription made so far once this round trip is back.
        crate::client::barrier(&self.client).await
    }

    /// Stops receiving `room`'s messages.
    pub fn ignore(&mut self, room: &str) {
        // Dropping the subscriber unsubscribes.
        self.subscriptions.remove(&subject::room(room));
    }

    /// The next message or event; `None` once the connection is gone for good.
    pub async fn next(&mut self) -> Option<Incoming> {
        loop {
            let (_, message) = self.subscriptions.next().await?;
            // Repeats are dropped before anything is copied out of the payload.
            return Some(match arrival(&message.subject, &message.payload) {
                None => continue,
                Some(Arrival::Presence(event)) => Incoming::Presence(event),
                Some(Arrival::Room(room, received)) => {
                    if !self.recent.first(&received.from, &received.id) {
                        continue;
                    }
                    Incoming::Room { room: room.to_owned(), message: received.into_owned() }
                }
                Some(Arrival::Direct(to, received)) => {
                    if !self.recent.first(&received.from, &received.id) {
                        continue;
                    }
                    Incoming::Direct { to: to.to_owned(), message: received.into_owned() }
                }
            });
        }
    }
}

#[cfg(test)]
mod tests;
