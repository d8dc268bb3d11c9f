//! Chat rules: names, rooms and message text; who holds which name (presence); who is in which
//! room; and how fast each user may send.
//!
//! [`Chat`] is a state machine. The chat service feeds it commands with the time
//! (`apply(now_ms, command)`), persists the [`ChatEvent`]s that come out and publishes them.
//!
//! - A **name** is held by at most one live session. Registering a name someone holds gets
//!   [`ChatError::NameTaken`]; once the holder leaves or stops heartbeating for
//!   [`ChatConfig::presence_timeout_ms`], anyone may register it. Registering again with the
//!   same session token is idempotent (a client retrying a lost reply keeps its session).
//! - A name once registered stays **known** for good: messages may come from it and direct
//!   messages may go to it while it is offline (they wait in history).
//! - Everyone is in the broadcast room [`BROADCAST_ROOM`]; other rooms are joined and parted.
//! - Each sender has a token bucket: [`ChatConfig::rate_per_sec`] messages per second with
//!   bursts of [`ChatConfig::burst`]. Arithmetic is in milli-messages, integers only.

use std::collections::{BTreeSet, HashMap};
use std::fmt;

/// The room everyone is in.
pub const BROADCAST_ROOM: &str = "all";
/// Longest user or room name, in bytes (names are ASCII).
pub const NAME_BYTES_MAX: usize = 32;
/// Longest message text, in bytes of UTF-8.
pub const TEXT_BYTES_MAX: usize = 4096;
/// Longest client message id, in bytes.
pub const MESSAGE_ID_BYTES_MAX: usize = 64;
/// Session tokens are this many bytes at least and at most.
pub const SESSION_BYTES_MIN: usize = 8;
pub const SESSION_BYTES_MAX: usize = 64;
/// Rooms (besides the broadcast room) one user may be in.
pub const ROOMS_PER_USER_MAX: usize = 32;

/// Why a chat command or message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChatError {
    #[error("{what} {text:?} is not 1..={NAME_BYTES_MAX} characters of A-Z a-z 0-9 _ -")]
    InvalidName { what: &'static str, text: String },
    #[error("{0}")]
    InvalidText(String),
    #[error("the name {0} is held by a live user")]
    NameTaken(String),
    #[error("{0} holds no session with that token (it expired or was left); register again")]
    NotRegistered(String),
    #[error("{0} was never registered")]
    UnknownUser(String),
    #[error("{name} sends too fast; the next message is allowed in {retry_in_ms} ms")]
    RateLimited { name: String, retry_in_ms: u64 },
    #[error("{0} is in {ROOMS_PER_USER_MAX} rooms already")]
    TooManyRooms(String),
    #[error("no new names: {0} names are registered (the limit)")]
    TooManyUsers(usize),
    #[error("everyone is in the room {BROADCAST_ROOM}; it cannot be left")]
    BroadcastRoom,
}

/// A validated user or room name: 1..=32 characters of `[A-Za-z0-9_-]`, so it is always one
/// NATS subject token.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Name(String);

impl Name {
    /// Whether `text` is a valid name (without making one).
    pub fn is_valid(text: &str) -> bool {
        crate::token::is_word(text, NAME_BYTES_MAX)
    }

    pub fn parse(what: &'static str, text: &str) -> Result<Self, ChatError> {
        if Self::is_valid(text) {
            Ok(Self(text.to_owned()))
        } else {
            Err(ChatError::InvalidName { what, text: text.chars().take(64).collect() })
        }
    }

    pub fn user(text: &str) -> Result<Self, ChatError> {
        Self::parse("user name", text)
    }

    pub fn room(text: &str) -> Result<Self, ChatError> {
        Self::parse("room name", text)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_broadcast(&self) -> bool {
        self.0 == BROADCAST_ROOM
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Message text: 1..=[`TEXT_BYTES_MAX`] bytes, no control characters except newline and tab
/// (so no terminal escape sequences). It is plain text: nothing downstream interprets markup.
pub fn check_text(text: &str) -> Result<(), ChatError> {
    if text.trim().is_empty() {
        return Err(ChatError::InvalidText("text is empty".to_owned()));
    }
    if text.len() > TEXT_BYTES_MAX {
        return Err(ChatError::InvalidText(format!(
            "text is {} bytes; the limit is {TEXT_BYTES_MAX}",
            text.len()
        )));
    }
    if has_control_characters(text) {
        return Err(ChatError::InvalidText(
            "text holds control characters (only newline and tab are allowed)".to_owned(),
        ));
    }
    Ok(())
}

/// Whether `text` holds a control character other than newline and tab: C0 (U+0000-U+001F),
/// DEL (U+007F) or C1 (U+0080-U+009F, encoded as 0xC2 0x80-0x9F). Works on bytes: receivers
/// check every message.
fn has_control_characters(text: &str) -> bool {
    let bytes = text.as_bytes();
    // Most text has no byte that could start one; this loop vectorizes.
    if !bytes.iter().fold(false, |seen, &b| seen | (b < 0x20) | (b == 0x7f) | (b == 0xc2)) {
        return false;
    }
    bytes.iter().enumerate().any(|(at, &byte)| match byte {
        b'\n' | b'\t' => false,
        0x00..=0x1f | 0x7f => true,
        0xc2 => bytes.get(at + 1).is_some_and(|next| (0x80..=0x9f).contains(next)),
        _ => false,
    })
}

/// A client message id (the dedup key with the sender): 1..=64 printable ASCII bytes.
pub fn check_message_id(id: &str) -> Result<(), ChatError> {
    if (1..=MESSAGE_ID_BYTES_MAX).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(())
    } else {
        Err(ChatError::InvalidText(format!(
            "message id must be 1..={MESSAGE_ID_BYTES_MAX} printable ASCII characters"
        )))
    }
}

/// A message's sender, id and text are well formed (what the chat service records and what
/// receivers accept).
pub fn check_message(from: &str, id: &str, text: &str) -> Result<(), ChatError> {
    if !Name::is_valid(from) {
        return Err(ChatError::InvalidName {
            what: "sender",
            text: from.chars().take(64).collect(),
        });
    }
    check_message_id(id)?;
    check_text(text)
}

/// A session token: [`SESSION_BYTES_MIN`]..=[`SESSION_BYTES_MAX`] printable ASCII bytes.
pub fn check_session(token: &str) -> Result<(), ChatError> {
    if (SESSION_BYTES_MIN..=SESSION_BYTES_MAX).contains(&token.len())
        && token.bytes().all(|b| b.is_ascii_graphic())
    {
        Ok(())
    } else {
        Err(ChatError::InvalidText(format!(
            "session must be {SESSION_BYTES_MIN}..={SESSION_BYTES_MAX} printable ASCII characters"
        )))
    }
}

/// The limits a [`Chat`] enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChatConfig {
    /// A session with no heartbeat for this long is offline.
    pub presence_timeout_ms: u64,
    /// Sustained messages per second per sender.
    pub rate_per_sec: u32,
    /// Messages a sender may send at once after being quiet.
    pub burst: u32,
    /// Names that may ever be registered.
    pub users_max: usize,
}

/// A live session: who holds a name right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub token: String,
    pub since_ms: u64,
    pub last_seen_ms: u64,
}

/// Everything known about one name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub registered_ms: u64,
    /// When the name was last seen online (a heartbeat, or when it went offline).
    pub last_seen_ms: u64,
    pub session: Option<Session>,
    /// Rooms joined, besides the broadcast room.
    pub rooms: BTreeSet<Name>,
    /// Milli-messages in the send bucket, and when it was last filled.
    bucket_milli: u64,
    bucket_at_ms: u64,
}

impl User {
    pub fn is_online(&self) -> bool {
        self.session.is_some()
    }
}

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaveReason {
    /// The client said so.
    Left,
    /// No heartbeat within the presence timeout.
    Timeout,
}

impl LeaveReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Left => "left",
            Self::Timeout => "timeout",
        }
    }
}

/// What a command changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChatEvent {
    /// A session began. `first` is true the first time the name was ever registered.
    Online {
        name: Name,
        since_ms: u64,
        first: bool,
        previous_last_seen_ms: Option<u64>,
    },
    Offline {
        name: Name,
        reason: LeaveReason,
        since_ms: u64,
        at_ms: u64,
    },
    Entered {
        name: Name,
        room: Name,
    },
    Exited {
        name: Name,
        room: Name,
    },
}

/// A command from a client (or the clock, for [`Command::Expire`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Register {
        name: Name,
        token: String,
    },
    Heartbeat {
        name: Name,
        token: String,
    },
    Leave {
        name: Name,
        token: String,
    },
    Join {
        name: Name,
        token: String,
        room: Name,
    },
    Part {
        name: Name,
        token: String,
        room: Name,
    },
    /// Ends every session whose last heartbeat is older than the presence timeout.
    Expire,
}

/// Where a message goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'a> {
    Room(&'a Name),
    Direct(&'a Name),
}

/// Names, sessions, rooms and send buckets.
#[derive(Debug, Clone)]
pub struct Chat {
    config: ChatConfig,
    users: HashMap<Name, User>,
}

impl Chat {
    pub fn new(config: ChatConfig) -> Self {
        Self { config, users: HashMap::new() }
    }

    pub fn config(&self) -> &ChatConfig {
        &self.config
    }

    /// Puts back a user loaded from storage. A restored session counts as seen `now_ms`, so
    /// a live client keeps its name across a restart of the service and a dead one expires
    /// one timeout later.
    pub fn restore(
        &mut self,
        now_ms: u64,
        name: Name,
        registered_ms: u64,
        last_seen_ms: u64,
        session: Option<(String, u64)>,
        rooms: BTreeSet<Name>,
    ) {
        let session = session.map(|(token, since_ms)| Session {
            token,
            since_ms,
            last_seen_ms: now_ms.max(last_seen_ms),
        });
        let user = User {
            registered_ms,
            last_seen_ms,
            session,
            rooms,
            bucket_milli: self.bucket_full(),
            bucket_at_ms: now_ms,
        };
        self.users.insert(name, user);
    }

    pub fn user(&self, name: &Name) -> Option<&User> {
        self.users.get(name)
    }

    pub fn users(&self) -> impl Iterator<Item = (&Name, &User)> {
        self.users.iter()
    }

    pub fn online_count(&self) -> usize {
        self.users.values().filter(|u| u.is_online()).count()
    }

    fn bucket_full(&self) -> u64 {
        u64::from(self.config.burst.max(1)) * 1000
    }

    /// Applies a command; on error nothing changed.
    pub fn apply(&mut self, now_ms: u64, command: Command) -> Result<Vec<ChatEvent>, ChatError> {
        match command {
            Command::Register { name, token } => self.register(now_ms, name, token),
            Command::Heartbeat { name, token } => {
                let user = self.session_user(&name, &token)?;
                if let Some(session) = &mut user.session {
                    session.last_seen_ms = session.last_seen_ms.max(now_ms);
                }
                user.last_seen_ms = user.last_seen_ms.max(now_ms);
                Ok(Vec::new())
            }
            Command::Leave { name, token } => {
                self.session_user(&name, &token)?;
                Ok(self.end_session(now_ms, &name, LeaveReason::Left).into_iter().collect())
            }
            Command::Join { name, token, room } => {
                let user = self.session_user(&name, &token)?;
                if room.is_broadcast() || user.rooms.contains(&room) {
                    return Ok(Vec::new());
                }
                if user.rooms.len() >= ROOMS_PER_USER_MAX {
                    return Err(ChatError::TooManyRooms(name.0));
                }
                user.rooms.insert(room.clone());
                Ok(vec![ChatEvent::Entered { name, room }])
            }
            Command::Part { name, token, room } => {
                if room.is_broadcast() {
                    return Err(ChatError::BroadcastRoom);
                }
                let user = self.session_user(&name, &token)?;
                if user.rooms.remove(&room) {
                    Ok(vec![ChatEvent::Exited { name, room }])
                } else {
                    Ok(Vec::new())
                }
            }
            Command::Expire => {
                let timeout = self.config.presence_timeout_ms;
                let mut expired: Vec<Name> = self
                    .users
                    .iter()
                    .filter(|(_, user)| {
                        user.session
                            .as_ref()
                            .is_some_and(|s| s.last_seen_ms.saturating_add(timeout) <= now_ms)
                    })
                    .map(|(name, _)| name.clone())
                    .collect();
                expired.sort();
                Ok(expired
                    .iter()
                    .filter_map(|name| self.end_session(now_ms, name, LeaveReason::Timeout))
                    .collect())
            }
        }
    }

    fn register(
        &mut self,
        now_ms: u64,
        name: Name,
        token: String,
    ) -> Result<Vec<ChatEvent>, ChatError> {
        let timeout = self.config.presence_timeout_ms;
        let users_max = self.config.users_max;
        let known = self.users.len();
        let full = self.bucket_full();
        let first = !self.users.contains_key(&name);
        if first && known >= users_max {
            return Err(ChatError::TooManyUsers(known));
        }
        let user = self.users.entry(name.clone()).or_insert_with(|| User {
            registered_ms: now_ms,
            last_seen_ms: now_ms,
            session: None,
            rooms: BTreeSet::new(),
            bucket_milli: full,
            bucket_at_ms: now_ms,
        });
        let mut events = Vec::new();
        if let Some(session) = &mut user.session {
            if session.token == token {
                session.last_seen_ms = session.last_seen_ms.max(now_ms);
                return Ok(events);
            }
            if session.last_seen_ms.saturating_add(timeout) > now_ms {
                return Err(ChatError::NameTaken(name.0));
            }
            // The holder is gone but not yet swept: end its session first.
            let since_ms = session.since_ms;
            user.session = None;
            events.push(ChatEvent::Offline {
                name: name.clone(),
                reason: LeaveReason::Timeout,
                since_ms,
                at_ms: now_ms,
            });
        }
        let previous_last_seen_ms = (!first).then_some(user.last_seen_ms);
        user.session = Some(Session { token, since_ms: now_ms, last_seen_ms: now_ms });
        user.last_seen_ms = user.last_seen_ms.max(now_ms);
        events.push(ChatEvent::Online { name, since_ms: now_ms, first, previous_last_seen_ms });
        Ok(events)
    }

    /// The user holding `name` with session `token`.
    fn session_user(&mut self, name: &Name, token: &str) -> Result<&mut User, ChatError> {
        let user =
            self.users.get_mut(name).ok_or_else(|| ChatError::UnknownUser(name.0.clone()))?;
        match &user.session {
            Some(session) if session.token == token => Ok(user),
            _ => Err(ChatError::NotRegistered(name.0.clone())),
        }
    }

    fn end_session(&mut self, now_ms: u64, name: &Name, reason: LeaveReason) -> Option<ChatEvent> {
        let user = self.users.get_mut(name)?;
        let session = user.session.take()?;
        user.last_seen_ms = match reason {
            LeaveReason::Left => now_ms.max(session.last_seen_ms),
            LeaveReason::Timeout => session.last_seen_ms,
        };
        Some(ChatEvent::Offline {
            name: name.clone(),
            reason,
            since_ms: session.since_ms,
            at_ms: user.last_seen_ms,
        })
    }

    /// Checks that a message may be recorded: its sender and (for a direct message) its
    /// recipient are known names, and the sender is within its rate. Takes one message from
    /// the sender's bucket when it may.
    pub fn accept_message(
        &mut self,
        now_ms: u64,
        from: &Name,
        target: Target<'_>,
    ) -> Result<(), ChatError> {
        if let Target::Direct(to) = target
            && !self.users.contains_key(to)
        {
            return Err(ChatError::UnknownUser(to.0.clone()));
        }
        let rate = u64::from(self.config.rate_per_sec.max(1));
        let full = self.bucket_full();
        let user =
            self.users.get_mut(from).ok_or_else(|| ChatError::UnknownUser(from.0.clone()))?;
        let elapsed_ms = now_ms.saturating_sub(user.bucket_at_ms);
        // `rate` messages per 1000 ms is `rate` milli-messages per ms.
        user.bucket_milli =
            user.bucket_milli.saturating_add(elapsed_ms.saturating_mul(rate)).min(full);
        user.bucket_at_ms = user.bucket_at_ms.max(now_ms);
        if user.bucket_milli < 1000 {
            let retry_in_ms = (1000 - user.bucket_milli).div_ceil(rate);
            return Err(ChatError::RateLimited { name: from.0.clone(), retry_in_ms });
        }
        user.bucket_milli -= 1000;
        Ok(())
    }

    /// Gives back the message [`Self::accept_message`] took, for a message that turned out to
    /// be recorded already (a resend is not a new message).
    pub fn refund_message(&mut self, from: &Name) {
        let full = self.bucket_full();
        if let Some(user) = self.users.get_mut(from) {
            user.bucket_milli = user.bucket_milli.saturating_add(1000).min(full);
        }
    }
}

/// Longest reaction (an emoji or a short word such as `+1`), in bytes.
pub const EMOJI_BYTES_MAX: usize = 32;
/// Distinct reactions one message holds at most.
pub const REACTIONS_PER_MESSAGE_MAX: usize = 20;
/// Longest search, in bytes, and most words in it.
pub const SEARCH_BYTES_MAX: usize = 256;
pub const SEARCH_TERMS_MAX: usize = 8;

/// A reaction: 1..=[`EMOJI_BYTES_MAX`] bytes, no whitespace or control characters.
pub fn check_emoji(emoji: &str) -> Result<(), ChatError> {
    if emoji.is_empty()
        || emoji.len() > EMOJI_BYTES_MAX
        || emoji.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(ChatError::InvalidText(format!(
            "a reaction is 1..={EMOJI_BYTES_MAX} bytes without spaces or control characters"
        )));
    }
    Ok(())
}

/// A person's search words as an FTS5 query: every word must appear (a word ending in `*`
/// matches as a prefix); quotes and operators are taken literally, never as query syntax.
pub fn search_query(text: &str) -> Result<String, ChatError> {
    let bad = |why: &str| ChatError::InvalidText(format!("search: {why}"));
    if text.len() > SEARCH_BYTES_MAX || has_control_characters(text) {
        return Err(bad(&format!("1..={SEARCH_BYTES_MAX} bytes of text")));
    }
    let mut terms = Vec::new();
    for word in text.split_whitespace() {
        let (word, prefix) = match word.strip_suffix('*') {
            Some(stem) => (stem, true),
            None => (word, false),
        };
        // Only letters and digits count for the index: "don't" is "don" "t".
        if !word.chars().any(char::is_alphanumeric) {
            continue;
        }
        let quoted = format!("\"{}\"", word.replace('"', "\"\""));
        terms.push(if prefix { format!("{quoted}*") } else { quoted });
    }
    if terms.is_empty() {
        return Err(bad("give at least one word"));
    }
    if terms.len() > SEARCH_TERMS_MAX {
        return Err(bad(&format!("at most {SEARCH_TERMS_MAX} words")));
    }
    Ok(terms.join(" "))
}

/// Bounds ephemeral events (typing, read receipts) per sender and conversation: at most one
/// per `gap_ms`, and at most `keys_max` senders-and-conversations remembered (beyond, the
/// oldest are forgotten, which only ever lets an event through early).
#[derive(Debug, Clone)]
pub struct EventLimiter {
    gap_ms: u64,
    keys_max: usize,
    last: HashMap<(String, String), u64>,
}

impl EventLimiter {
    pub fn new(gap_ms: u64, keys_max: usize) -> Self {
        Self { gap_ms, keys_max: keys_max.max(1), last: HashMap::new() }
    }

    /// Whether `sender`'s event in `conversation` may go out at `now_ms` (and counts it).
    pub fn allow(&mut self, now_ms: u64, sender: &str, conversation: &str) -> bool {
        let key = (sender.to_owned(), conversation.to_owned());
        if let Some(last) = self.last.get(&key)
            && now_ms < last.saturating_add(self.gap_ms)
        {
            return false;
        }
        if self.last.len() >= self.keys_max && !self.last.contains_key(&key) {
            self.forget(now_ms);
            if self.last.len() >= self.keys_max {
                self.last.clear();
            }
        }
        self.last.insert(key, now_ms);
        true
    }

    /// Forgets what no longer limits anything.
    pub fn forget(&mut self, now_ms: u64) {
        let gap = self.gap_ms;
        self.last.retain(|_, last| now_ms < last.saturating_add(gap));
    }

    pub fn len(&self) -> usize {
        self.last.len()
    }

    pub fn is_empty(&self) -> bool {
        self.last.is_empty()
    }
}

#[cfg(test)]
mod event_tests {
    use super::*;

    #[test]
    fn reactions_and_searches_are_checked() {
        for good in ["👍", "+1", "🎉🎉", "ok"] {
            check_emoji(good).unwrap();
        }
        for bad in ["", " ", "a b", "\u{1b}", &"x".repeat(33)] {
            assert!(check_emoji(bad).is_err(), "{bad:?}");
        }
        assert_eq!(search_query("hello world").unwrap(), r#""hello" "world""#);
        assert_eq!(search_query("deploy* \"x").unwrap(), r#""deploy"* """x""#);
        assert_eq!(search_query("OR NOT (a)").unwrap(), r#""OR" "NOT" "(a)""#, "no operators");
        for bad in ["", "   ", "*** ---", "\u{1b}[2J", &"word ".repeat(9), &"x".repeat(257)] {
            assert!(search_query(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn ephemeral_events_are_bounded_per_sender_and_conversation() {
        let mut limiter = EventLimiter::new(1_000, 3);
        assert!(limiter.allow(0, "alice", "#all"));
        assert!(!limiter.allow(999, "alice", "#all"), "within the gap");
        assert!(limiter.allow(10, "alice", "#rust"), "another conversation");
        assert!(limiter.allow(10, "bob", "#all"), "another sender");
        assert!(limiter.allow(1_000, "alice", "#all"), "after the gap");
        // Full: what no longer limits goes first; the table never grows past its bound.
        assert!(limiter.allow(1_500, "carol", "#all"));
        assert!(limiter.len() <= 3);
        for n in 0..100 {
            limiter.allow(2_000, &format!("u{n}"), "#all");
            assert!(limiter.len() <= 3);
        }
        limiter.forget(10_000);
        assert!(limiter.is_empty());
        // A flood from one sender: one event per gap.
        let mut limiter = EventLimiter::new(500, 100);
        let passed = (0..10_000u64).filter(|at| limiter.allow(at / 2, "mallory", "#all")).count();
        assert_eq!(passed, 10, "5 s of typing: one event per 500 ms");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: u64 = 10_000;

    fn chat() -> Chat {
        Chat::new(ChatConfig {
            presence_timeout_ms: TIMEOUT,
            rate_per_sec: 10,
            burst: 3,
            users_max: 3,
        })
    }

    fn name(text: &str) -> Name {
        Name::user(text).expect("valid")
    }

    fn register(
        chat: &mut Chat,
        now: u64,
        who: &str,
        token: &str,
    ) -> Result<Vec<ChatEvent>, ChatError> {
        chat.apply(now, Command::Register { name: name(who), token: token.to_owned() })
    }

    #[test]
    fn names_are_one_subject_token_of_safe_characters() {
        for good in ["a", "alice", "Bob_2", "x-y", &"n".repeat(NAME_BYTES_MAX)] {
            assert_eq!(Name::user(good).expect("valid").as_str(), good);
        }
        for bad in ["", "a.b", "a b", "*", ">", "ä", "a\n", &"n".repeat(NAME_BYTES_MAX + 1)] {
            assert!(matches!(Name::user(bad), Err(ChatError::InvalidName { .. })), "{bad:?}");
        }
        assert!(Name::room("all").expect("valid").is_broadcast());
    }

    #[test]
    fn text_ids_and_sessions_are_bounded() {
        check_text("hello\n\tworld <b>not bold</b>").expect("plain text");
        check_text(&"é".repeat(TEXT_BYTES_MAX / 2)).expect("at the limit");
        for bad in [
            "",
            "  \n",
            "bell\u{7}",
            "esc\u{1b}[31m",
            "del\u{7f}",
            "c1 \u{9b}31m",
            "nul\0",
            &"x".repeat(TEXT_BYTES_MAX + 1),
        ] {
            assert!(check_text(bad).is_err(), "{bad:?}");
        }
        // Every character agrees with `char::is_control`.
        for c in (0..=0x3000u32).filter_map(char::from_u32) {
            let text = format!("a{c}b");
            let control = c.is_control() && c != '\n' && c != '\t';
            assert_eq!(has_control_characters(&text), control, "{c:?}");
        }
        check_message_id("m-1").expect("valid");
        for bad in ["", "a b", &"i".repeat(MESSAGE_ID_BYTES_MAX + 1)] {
            assert!(check_message_id(bad).is_err());
        }
        check_session("12345678").expect("valid");
        for bad in ["short", "with space", &"s".repeat(SESSION_BYTES_MAX + 1)] {
            assert!(check_session(bad).is_err());
        }
    }

    #[test]
    fn a_live_name_is_taken_and_free_again_after_leave() {
        let mut chat = chat();
        let events = register(&mut chat, 100, "alice", "token-a1").expect("registers");
        assert_eq!(
            events,
            vec![ChatEvent::Online {
                name: name("alice"),
                since_ms: 100,
                first: true,
                previous_last_seen_ms: None
            }]
        );
        assert_eq!(
            register(&mut chat, 200, "alice", "token-b1"),
            Err(ChatError::NameTaken("alice".into()))
        );
        // The holder retrying its registration keeps its session.
        assert_eq!(register(&mut chat, 300, "alice", "token-a1"), Ok(vec![]));
        // Only the holder can leave.
        let leave = |token: &str| Command::Leave { name: name("alice"), token: token.into() };
        assert_eq!(
            chat.apply(400, leave("token-b1")),
            Err(ChatError::NotRegistered("alice".into()))
        );
        let events = chat.apply(500, leave("token-a1")).expect("leaves");
        assert_eq!(
            events,
            vec![ChatEvent::Offline {
                name: name("alice"),
                reason: LeaveReason::Left,
                since_ms: 100,
                at_ms: 500
            }]
        );
        assert_eq!(
            chat.apply(600, leave("token-a1")),
            Err(ChatError::NotRegistered("alice".into()))
        );
        let events = register(&mut chat, 700, "alice", "token-b1").expect("free again");
        assert!(matches!(
            events.as_slice(),
            [ChatEvent::Online { first: false, previous_last_seen_ms: Some(500), .. }]
        ));
    }

    #[test]
    fn heartbeats_keep_a_session_and_silence_ends_it() {
        let mut chat = chat();
        register(&mut chat, 0, "alice", "token-a1").expect("registers");
        register(&mut chat, 0, "bob", "token-b1").expect("registers");
        let beat =
            |who: &str, token: &str| Command::Heartbeat { name: name(who), token: token.into() };
        chat.apply(TIMEOUT - 1, beat("alice", "token-a1")).expect("beats");
        assert_eq!(
            chat.apply(TIMEOUT - 1, beat("alice", "wrong-token")),
            Err(ChatError::NotRegistered("alice".into()))
        );
        assert_eq!(
            chat.apply(1, beat("carol", "token-c1")),
            Err(ChatError::UnknownUser("carol".into()))
        );
        assert_eq!(chat.apply(TIMEOUT - 1, Command::Expire), Ok(vec![]));
        let events = chat.apply(TIMEOUT, Command::Expire).expect("sweeps");
        assert_eq!(
            events,
            vec![ChatEvent::Offline {
                name: name("bob"),
                reason: LeaveReason::Timeout,
                since_ms: 0,
                at_ms: 0
            }]
        );
        assert!(chat.user(&name("alice")).expect("known").is_online());
        assert!(!chat.user(&name("bob")).expect("known").is_online());
        assert_eq!(chat.online_count(), 1);
        let events = chat.apply(2 * TIMEOUT - 1, Command::Expire).expect("sweeps");
        assert!(
            matches!(events.as_slice(), [ChatEvent::Offline { at_ms, .. }] if *at_ms == TIMEOUT - 1)
        );
    }

    #[test]
    fn a_silent_holder_loses_its_name_to_a_new_registration_before_the_sweep() {
        let mut chat = chat();
        register(&mut chat, 0, "alice", "token-a1").expect("registers");
        assert!(register(&mut chat, TIMEOUT - 1, "alice", "token-a2").is_err());
        let events = register(&mut chat, TIMEOUT, "alice", "token-a2").expect("takes over");
        assert!(matches!(
            events.as_slice(),
            [
                ChatEvent::Offline { reason: LeaveReason::Timeout, .. },
                ChatEvent::Online { first: false, .. }
            ]
        ));
        let beat = Command::Heartbeat { name: name("alice"), token: "token-a1".into() };
        assert_eq!(chat.apply(TIMEOUT, beat), Err(ChatError::NotRegistered("alice".into())));
    }

    #[test]
    fn registered_names_are_bounded() {
        let mut chat = chat();
        for who in ["a", "b", "c"] {
            register(&mut chat, 0, who, "token-xx").expect("registers");
        }
        assert_eq!(register(&mut chat, 0, "d", "token-xx"), Err(ChatError::TooManyUsers(3)));
        // Known names may still come back.
        chat.apply(0, Command::Leave { name: name("a"), token: "token-xx".into() })
            .expect("leaves");
        register(&mut chat, 1, "a", "token-yy").expect("known name");
    }

    #[test]
    fn rooms_are_joined_and_parted_by_the_holder() {
        let mut chat = chat();
        register(&mut chat, 0, "alice", "token-a1").expect("registers");
        let room = Name::room("rust").expect("valid");
        let join = |token: &str, room: &Name| Command::Join {
            name: name("alice"),
            token: token.into(),
            room: room.clone(),
        };
        assert_eq!(
            chat.apply(1, join("nope-nope", &room)),
            Err(ChatError::NotRegistered("alice".into()))
        );
        assert_eq!(
            chat.apply(1, join("token-a1", &room)),
            Ok(vec![ChatEvent::Entered { name: name("alice"), room: room.clone() }])
        );
        assert_eq!(chat.apply(2, join("token-a1", &room)), Ok(vec![]), "joining twice is a no-op");
        let all = Name::room(BROADCAST_ROOM).expect("valid");
        assert_eq!(chat.apply(2, join("token-a1", &all)), Ok(vec![]));
        let part = |room: &Name| Command::Part {
            name: name("alice"),
            token: "token-a1".into(),
            room: room.clone(),
        };
        assert_eq!(chat.apply(3, part(&all)), Err(ChatError::BroadcastRoom));
        assert_eq!(
            chat.apply(3, part(&room)),
            Ok(vec![ChatEvent::Exited { name: name("alice"), room: room.clone() }])
        );
        assert_eq!(chat.apply(4, part(&room)), Ok(vec![]));
        for i in 0..ROOMS_PER_USER_MAX {
            let room = Name::room(&format!("r{i}")).expect("valid");
            chat.apply(5, join("token-a1", &room)).expect("joins");
        }
        let extra = Name::room("extra").expect("valid");
        assert_eq!(
            chat.apply(6, join("token-a1", &extra)),
            Err(ChatError::TooManyRooms("alice".into()))
        );
        // Rooms survive going offline (they are memberships, not presence).
        chat.apply(7, Command::Leave { name: name("alice"), token: "token-a1".into() })
            .expect("leaves");
        assert_eq!(chat.user(&name("alice")).expect("known").rooms.len(), ROOMS_PER_USER_MAX);
    }

    #[test]
    fn messages_need_known_names_and_respect_the_rate() {
        let mut chat = chat();
        register(&mut chat, 0, "alice", "token-a1").expect("registers");
        register(&mut chat, 0, "bob", "token-b1").expect("registers");
        let (alice, bob, carol) = (name("alice"), name("bob"), name("carol"));
        let room = Name::room("all").expect("valid");
        assert_eq!(
            chat.accept_message(0, &carol, Target::Room(&room)),
            Err(ChatError::UnknownUser("carol".into()))
        );
        assert_eq!(
            chat.accept_message(0, &alice, Target::Direct(&carol)),
            Err(ChatError::UnknownUser("carol".into()))
        );
        // A burst of 3, then 10 per second (one per 100 ms).
        for _ in 0..3 {
            chat.accept_message(0, &alice, Target::Direct(&bob)).expect("within the burst");
        }
        assert_eq!(
            chat.accept_message(0, &alice, Target::Room(&room)),
            Err(ChatError::RateLimited { name: "alice".into(), retry_in_ms: 100 })
        );
        assert_eq!(
            chat.accept_message(40, &alice, Target::Room(&room)),
            Err(ChatError::RateLimited { name: "alice".into(), retry_in_ms: 60 })
        );
        chat.accept_message(100, &alice, Target::Room(&room)).expect("refilled one");
        assert!(chat.accept_message(100, &alice, Target::Room(&room)).is_err());
        chat.refund_message(&alice);
        chat.accept_message(100, &alice, Target::Room(&room)).expect("given back");
        assert!(chat.accept_message(100, &alice, Target::Room(&room)).is_err());
        // Other senders have their own bucket; an offline but known name may still receive.
        chat.apply(100, Command::Leave { name: bob.clone(), token: "token-b1".into() })
            .expect("leaves");
        chat.accept_message(100, &bob, Target::Direct(&alice)).expect("own bucket");
        chat.accept_message(10_000, &alice, Target::Direct(&bob)).expect("offline recipient");
        // A long quiet period refills only up to the burst.
        for _ in 0..3 {
            chat.accept_message(1_000_000, &alice, Target::Room(&room)).expect("burst");
        }
        assert!(chat.accept_message(1_000_000, &alice, Target::Room(&room)).is_err());
    }

    #[test]
    fn restored_sessions_get_one_more_timeout() {
        let mut chat = chat();
        let rooms: BTreeSet<Name> = [Name::room("rust").expect("valid")].into();
        chat.restore(50_000, name("alice"), 1, 20_000, Some(("token-a1".into(), 10_000)), rooms);
        chat.restore(50_000, name("bob"), 1, 30_000, None, BTreeSet::new());
        assert_eq!(chat.online_count(), 1);
        assert_eq!(chat.apply(50_000 + TIMEOUT - 1, Command::Expire), Ok(vec![]));
        assert_eq!(chat.apply(50_000 + TIMEOUT, Command::Expire).expect("sweeps").len(), 1);
        assert_eq!(chat.user(&name("alice")).expect("known").rooms.len(), 1);
    }
}
