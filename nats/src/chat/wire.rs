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
    /// The message it replies to (a thread).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<u64>,
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
    /// Reply in the thread of this message (same room or conversation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<u64>,
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
    /// Only the replies to this message (its thread), instead of a conversation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread: Option<u64>,
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
    /// The message it replies to (a thread).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<u64>,
    /// Replies in its thread.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub replies: u64,
    /// When its text was last edited (`agora.chat.edits` has the earlier texts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edited_ms: Option<u64>,
    /// Deleted by its author: `text` is empty.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
    /// Reactions: who reacted with each, in the order they did.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub reactions: std::collections::BTreeMap<String, Vec<String>>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
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

// ---------------------------------------------------------------------------------------------
// Edits, deletes, reactions, threads, receipts, typing, unread counts, search
// ---------------------------------------------------------------------------------------------

/// `agora.chat.edit`: the author changes a message's text (its earlier texts are kept).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EditRequest {
    /// The message's position in history.
    pub seq: u64,
    #[schemars(length(min = 1, max = 4_096))]
    pub text: String,
}

/// `agora.chat.delete` (the author) and `agora.chat.edits` (its earlier texts).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SeqRequest {
    pub seq: u64,
}

/// `agora.chat.react`: the caller's reaction to a message, added (`on`, the default) or taken
/// back.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReactRequest {
    pub seq: u64,
    #[schemars(length(min = 1, max = 32))]
    pub emoji: String,
    #[serde(default = "yes")]
    pub on: bool,
}

fn yes() -> bool {
    true
}

/// `agora.chat.read` (the caller read a conversation up to `seq`) and `agora.chat.typing` (the
/// caller is typing; no `seq`): in `room`, or in the direct conversation `with` someone.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConversationRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(pattern::CHAT_NAME))]
    pub room: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(pattern::CHAT_NAME))]
    pub with: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
}

/// `agora.chat.search`: words in the messages the caller may read, newest first.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchRequest {
    /// Every word must appear; `deploy*` matches words starting with `deploy`.
    #[schemars(length(min = 1, max = 256))]
    pub query: String,
    /// Only this room...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(pattern::CHAT_NAME))]
    pub room: Option<String>,
    /// ...or only the direct conversation with this name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(pattern::CHAT_NAME))]
    pub with: Option<String>,
    /// Only messages with `seq` below this (the next page).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<u64>,
    /// Default 20.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub limit: Option<usize>,
}

/// A piece of a found message's text: `match` pieces are what the search found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TextPiece {
    pub text: String,
    #[serde(rename = "match")]
    pub matched: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SearchHit {
    pub message: StoredMessage,
    /// The message's text cut into pieces, the found words marked.
    pub highlighted: Vec<TextPiece>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SearchReply {
    /// Newest first.
    pub hits: Vec<SearchHit>,
    /// More matched: page on with `before` = the last hit's `seq`.
    pub more: bool,
}

/// One conversation's unread messages (`agora.chat.unread`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnreadCount {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub with: Option<String>,
    /// Messages from others after `read_seq` (counted up to 10,000).
    pub unread: u64,
    /// Where the caller read up to (0: nothing yet).
    pub read_seq: u64,
    pub last_seq: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UnreadReply {
    /// Conversations with unread messages first, then by name.
    pub conversations: Vec<UnreadCount>,
}

/// One earlier text of an edited message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EditVersion {
    pub text: String,
    /// When it was replaced.
    pub replaced_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EditsReply {
    pub seq: u64,
    /// Oldest first; the current text is the message's.
    pub versions: Vec<EditVersion>,
}

/// What happens to messages after they are sent, on `agora.chat.events.room.<room>` and
/// `agora.chat.events.dm.<name>` (both parties of a direct conversation, except `typing`:
/// only the other).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatUpdate {
    /// `edit`, `delete`, `reaction`, `reply` (a thread got a reply: `replies` is its count),
    /// `read` (a receipt) or `typing`.
    pub kind: String,
    /// The message concerned (for `read`: read up to it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// Who did it (the server vouched for them).
    pub from: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    /// The other party of a direct conversation, seen from the receiver: for `alice` reading
    /// `agora.chat.events.dm.alice`, the name she talks with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub with: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emoji: Option<String>,
    /// `reaction`: added (true) or taken back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on: Option<bool>,
    /// `reply`: the thread's reply count now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replies: Option<u64>,
    pub at_ms: u64,
}

/// `agora.chat.read`'s reply: where the caller has read up to now.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReadReply {
    pub read_seq: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub with: Option<String>,
}

/// `agora.chat.typing`'s reply: whether the event went out (one per 2 s per conversation).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TypingReply {
    pub sent: bool,
}

impl ChatUpdate {
    /// An update of `kind` by `from` at `at_ms`, about nothing yet (set the fields it carries).
    pub fn new(kind: &str, from: impl ToString, at_ms: u64) -> Self {
        Self {
            kind: kind.to_owned(),
            seq: None,
            from: from.to_string(),
            room: None,
            with: None,
            text: None,
            emoji: None,
            on: None,
            replies: None,
            at_ms,
        }
    }
}

impl StoredMessage {
    /// A stand-in for a place in a conversation (a room, or `from`'s conversation with `with`)
    /// when an update concerns the conversation rather than one message.
    pub fn placeholder(
        from: impl ToString,
        room: Option<String>,
        with: Option<String>,
        seq: u64,
        at: u64,
    ) -> Self {
        Self {
            seq,
            room,
            to: with,
            id: String::new(),
            from: from.to_string(),
            text: String::new(),
            at,
            recorded_ms: at,
            reply_to: None,
            replies: 0,
            edited_ms: None,
            deleted: false,
            reactions: Default::default(),
        }
    }
}
