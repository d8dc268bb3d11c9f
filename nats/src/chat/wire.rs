//! Chat's JSON payloads: messages on the fan-out subjects, requests, presence events.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::pattern;

// ---------------------------------------------------------------------------------------------
// Chat
// ---------------------------------------------------------------------------------------------

/// A chat message as the chat service publishes it on `agora.chat.room.<room>` and
/// `agora.chat.dm.<to>`, once it is in history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatMessage {
    /// The sender's message id; with `from`, the dedup key of history.
    pub id: String,
    /// The sender, as the server vouched for them.
    pub from: String,
    pub text: String,
    /// When the sender sent it (ms since the epoch; the service's clock when the sender did
    /// not say).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<u64>,
    /// Its position in history.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
}

/// `agora.chat.send`: a message to a room (`room`) or to one user (`to`). The sender is the
/// caller; `from` may repeat their name (a service names the sender).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SendRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(pattern::CHAT_NAME))]
    pub room: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(pattern::CHAT_NAME))]
    pub to: Option<String>,
    /// The sender's id of the message: a resend with the same id is recorded once.
    #[schemars(length(min = 1, max = 64))]
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(pattern::CHAT_NAME))]
    pub from: Option<String>,
    #[schemars(length(min = 1, max = 4_096))]
    pub text: String,
    /// When the sender sent it (ms since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<u64>,
}

/// The chat service's reply to `agora.chat.send`: the message is in history.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MessageAck {
    /// Its position in history.
    pub seq: u64,
    /// True when history already had this `from` + `id` (a resend): stored once.
    pub duplicate: bool,
}

/// `agora.chat.register`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    pub name: String,
    /// A client-chosen session token; registering again with it is idempotent. The service
    /// makes one up when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegisterReply {
    pub name: String,
    /// Send it with every heartbeat, leave, join and part.
    pub session: String,
    pub since_ms: u64,
    /// Heartbeat at least this often...
    pub heartbeat_ms: u64,
    /// ...because a session silent this long is offline.
    pub timeout_ms: u64,
    /// True the first time this name was ever registered.
    pub first: bool,
    /// When the name was last online before this session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_last_seen_ms: Option<u64>,
    /// History position when the name went offline: ask `agora.chat.history`
    /// `{"as":name,"after":missed_after}` for what arrived since.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missed_after: Option<u64>,
    /// Rooms the name is in (besides `all`), kept across sessions.
    pub rooms: Vec<String>,
}

/// `agora.chat.heartbeat` and `agora.chat.leave`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SessionRequest {
    #[schemars(pattern(pattern::CHAT_NAME))]
    pub name: String,
    #[schemars(pattern(pattern::SESSION))]
    pub session: String,
}

/// `agora.chat.heartbeat` and `agora.chat.leave` replies.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionReply {
    pub name: String,
    pub online: bool,
}

/// `agora.chat.join` and `agora.chat.part`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoomRequest {
    pub name: String,
    pub session: String,
    pub room: String,
}

/// `agora.chat.join` and `agora.chat.part` replies: the user's rooms now (besides `all`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RoomsReply {
    pub name: String,
    pub rooms: Vec<String>,
}

/// `agora.chat.who`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WhoRequest {
    /// Only members of this room (everyone is in `all`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(pattern::CHAT_NAME))]
    pub room: Option<String>,
    /// Also list known names that are offline.
    #[serde(default)]
    pub offline: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserView {
    pub name: String,
    pub online: bool,
    /// When the current session began (online users).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since_ms: Option<u64>,
    /// The last heartbeat (online) or when the user went offline.
    pub last_seen_ms: u64,
    pub rooms: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WhoReply {
    /// Online users first, then by name.
    pub users: Vec<UserView>,
    /// True when more users matched than a reply holds.
    pub truncated: bool,
}

/// `agora.chat.history`: give `room`; or `with` and `as` (a direct conversation); or only `as`
/// (everything `as` could have seen: its direct messages and its rooms' messages).
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HistoryRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(pattern::CHAT_NAME))]
    pub room: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(pattern::CHAT_NAME))]
    pub with: Option<String>,
    #[serde(default, rename = "as", skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(pattern::CHAT_NAME))]
    pub as_user: Option<String>,
    /// Only messages with `seq` below this (a page further back)...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<u64>,
    /// ...or above this (what arrived since).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<u64>,
    /// Default 50.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 500))]
    pub limit: Option<usize>,
}

/// A message in history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredMessage {
    pub seq: u64,
    /// The room, for a room message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    /// The recipient, for a direct message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    pub id: String,
    pub from: String,
    pub text: String,
    pub at: u64,
    /// When the chat service stored it.
    pub recorded_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HistoryReply {
    /// Oldest first.
    pub messages: Vec<StoredMessage>,
    /// True when more messages matched than `limit` (page on with `before` or `after`).
    pub more: bool,
}

/// What `agora.chat.presence.<name>` carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceEvent {
    pub name: String,
    /// `join` (came online), `leave` (went offline), `enter` / `exit` (a room).
    pub event: String,
    /// The room, for `enter` and `exit`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    /// Why a user left: `left` (said so) or `timeout` (heartbeats stopped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When the session began (`join`, `leave`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since_ms: Option<u64>,
    pub at_ms: u64,
}
