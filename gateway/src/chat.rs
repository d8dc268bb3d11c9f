//! Chat sessions the gateway holds for browsers.
//!
//! A name is online while its session heartbeats on NATS; a browser cannot, so the gateway
//! registers the name ([`agora_nats::chat::client::ChatSession`]) and heartbeats for it. The
//! browser holds the session token the chat service issued and sends it with every call.
//! A session lives while a live stream ([`super::live`]) carries its direct messages, or
//! while calls keep coming; after [`super::GatewayConfig::chat_idle_ms`] without either, the
//! gateway ends it (the name goes offline) — a closed tab cannot leave a name online.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State as StateOf};
use axum::response::IntoResponse;
use axum::routing::{delete, get, post};
use serde::Deserialize;
use serde_json::json;

use super::State;
use super::http::{ApiError, ApiResult, forward, parse_body, path, query};
use super::routes::{Route, schema};
use super::session::Signed;
use agora_core::Name;
use agora_nats::chat::client::{ChatSession, SessionStatus};
use agora_nats::chat::wire::SessionRequest;
use agora_nats::chat::wire::{
    ConversationRequest, EditRequest, HistoryRequest, ReactRequest, RoomsReply, SearchRequest,
    SeqRequest, WhoRequest,
};
use agora_nats::error::{ErrorCode, ServiceError};
use agora_nats::subjects::chat as subject;

/// The chat routes: sessions the gateway holds, send, join, part, who, history.
pub const ROUTES: &[Route] = &[
    route!(
        "POST",
        "/api/chat/sessions",
        "chat",
        "Go online as the signed-in user: the gateway holds the session while it is used",
        None,
        [],
        Some(schema::<OpenRequest>),
        post(open)
    ),
    route!(
        "DELETE",
        "/api/chat/sessions/{session}",
        "chat",
        "Go offline now",
        Some(schema::<SessionRequest>),
        [],
        None,
        delete(close)
    ),
    route!(
        "POST",
        "/api/chat/send",
        "chat",
        "Say something in a room, or to one user; answers once it is in history",
        None,
        [],
        Some(schema::<SendRequest>),
        post(send)
    ),
    route!(
        "POST",
        "/api/chat/join",
        "chat",
        "Join a room",
        None,
        [],
        Some(schema::<RoomChange>),
        post(join)
    ),
    route!(
        "POST",
        "/api/chat/part",
        "chat",
        "Leave a room",
        None,
        [],
        Some(schema::<RoomChange>),
        post(part)
    ),
    route!(
        "GET",
        "/api/chat/who",
        "chat",
        "Who is online (room=, offline=true)",
        Some(schema::<WhoRequest>),
        ["room", "offline"],
        None,
        get(who)
    ),
    route!(
        "GET",
        "/api/chat/history",
        "chat",
        "History of a room, of a direct conversation (with + as), or of what a user could see",
        Some(schema::<HistoryRequest>),
        ["room", "with", "as", "before", "after", "limit", "thread"],
        None,
        get(history)
    ),
    route!(
        "POST",
        "/api/chat/edit",
        "chat",
        "Change the text of one of your messages (the earlier text is kept)",
        None,
        [],
        Some(schema::<EditRequest>),
        post(edit)
    ),
    route!(
        "POST",
        "/api/chat/delete",
        "chat",
        "Delete one of your messages",
        None,
        [],
        Some(schema::<SeqRequest>),
        post(delete_message)
    ),
    route!(
        "GET",
        "/api/chat/edits",
        "chat",
        "A message's earlier texts",
        Some(schema::<SeqRequest>),
        ["seq"],
        None,
        get(edits)
    ),
    route!(
        "POST",
        "/api/chat/react",
        "chat",
        "Add or take back your reaction to a message",
        None,
        [],
        Some(schema::<ReactRequest>),
        post(react)
    ),
    route!(
        "POST",
        "/api/chat/read",
        "chat",
        "Mark a room or a direct conversation read up to a message",
        None,
        [],
        Some(schema::<ConversationRequest>),
        post(read)
    ),
    route!(
        "POST",
        "/api/chat/typing",
        "chat",
        "Say you are typing in a room or to someone (at most one event per 2 s)",
        None,
        [],
        Some(schema::<ConversationRequest>),
        post(typing)
    ),
    route!(
        "GET",
        "/api/chat/unread",
        "chat",
        "Your conversations with what you have not read",
        None,
        [],
        None,
        get(unread)
    ),
    route!(
        "GET",
        "/api/chat/search",
        "chat",
        "Search the messages you may read",
        Some(schema::<SearchRequest>),
        ["query", "room", "with", "before", "limit"],
        None,
        get(search)
    ),
];

/// How often idle sessions are looked for.
const REAP_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug)]
struct Entry {
    session: Arc<ChatSession>,
    touched: Instant,
    streams: usize,
}

/// The sessions, by the token the chat service issued.
#[derive(Debug)]
pub struct Sessions {
    entries: Mutex<HashMap<String, Entry>>,
    max: usize,
    per_user: usize,
    idle: Duration,
}

impl Sessions {
    pub fn new(config: &super::GatewayConfig) -> Self {
        Self {
            entries: Mutex::default(),
            max: config.chat_sessions_max,
            per_user: config.chat_sessions_per_user,
            idle: Duration::from_millis(config.chat_idle_ms),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.lock().map(|entries| entries.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        // A panic while holding the lock cannot leave the map half-changed (single inserts
        // and removes), so a poisoned lock is still usable.
        self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// `user`'s session of `token`, marked as used now (someone else's is not found).
    pub fn get(&self, token: &str, user: &str) -> Result<Arc<ChatSession>, ApiError> {
        let mut entries = self.lock();
        let entry = entries.get_mut(token).filter(|e| e.session.name() == user);
        let entry = entry.ok_or_else(not_registered)?;
        entry.touched = Instant::now();
        Ok(entry.session.clone())
    }

    /// Counts a live stream on `user`'s session until the guard is dropped.
    pub fn attach(
        self: &Arc<Self>,
        token: &str,
        user: &str,
    ) -> Result<(String, StreamGuard), ApiError> {
        let mut entries = self.lock();
        let entry = entries.get_mut(token).filter(|e| e.session.name() == user);
        let entry = entry.ok_or_else(not_registered)?;
        entry.streams += 1;
        entry.touched = Instant::now();
        let name = entry.session.name().to_owned();
        Ok((name, StreamGuard { sessions: self.clone(), token: token.to_owned() }))
    }

    fn detach(&self, token: &str) {
        if let Some(entry) = self.lock().get_mut(token) {
            entry.streams = entry.streams.saturating_sub(1);
            entry.touched = Instant::now();
        }
    }

    fn remove(&self, token: &str, user: &str) -> Option<Arc<ChatSession>> {
        let mut entries = self.lock();
        entries.get(token).filter(|e| e.session.name() == user)?;
        entries.remove(token).map(|entry| entry.session)
    }

    /// Removes the sessions nobody used for the idle time, and those whose name was lost.
    fn take_idle(&self) -> Vec<Arc<ChatSession>> {
        let mut entries = self.lock();
        let idle: Vec<String> = entries
            .iter()
            .filter(|(_, entry)| {
                let lost = matches!(*entry.session.status().borrow(), SessionStatus::Lost(_));
                lost || (entry.streams == 0 && entry.touched.elapsed() >= self.idle)
            })
            .map(|(token, _)| token.clone())
            .collect();
        idle.iter().filter_map(|token| entries.remove(token)).map(|entry| entry.session).collect()
    }

    /// Ends every session (the gateway is stopping).
    pub async fn leave_all(&self) {
        let all: Vec<_> = self.lock().drain().map(|(_, entry)| entry.session).collect();
        for session in all {
            leave(session).await;
        }
    }
}

/// Keeps a session alive while a live stream is open.
#[derive(Debug)]
pub struct StreamGuard {
    sessions: Arc<Sessions>,
    token: String,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.sessions.detach(&self.token);
    }
}

fn not_registered() -> ApiError {
    ApiError::new(ErrorCode::NotRegistered, "no such chat session here (register the name again)")
}

async fn leave(session: Arc<ChatSession>) {
    let name = session.name().to_owned();
    match Arc::try_unwrap(session) {
        Ok(session) => {
            if let Err(error) = session.leave().await {
                tracing::info!(%name, %error, "chat session could not leave; it times out");
            }
        }
        // A request still uses it: dropping the last handle stops the heartbeats, and the
        // name goes offline one timeout later.
        Err(_) => tracing::info!(%name, "chat session in use; it times out"),
    }
}

/// Ends idle sessions, every second (`REAP_EVERY`).
pub async fn reap(gateway: State) {
    let mut ticks = tokio::time::interval(REAP_EVERY);
    loop {
        ticks.tick().await;
        for session in gateway.chat.take_idle() {
            leave(session).await;
        }
    }
}

/// A chat session goes by its user's name (the body may repeat it).
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OpenRequest {
    #[schemars(pattern(agora_nats::pattern::CHAT_NAME))]
    pub name: Option<String>,
}

pub async fn open(
    StateOf(state): StateOf<State>,
    signed: Signed,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let request: OpenRequest = if body.as_ref().is_ok_and(Bytes::is_empty) {
        OpenRequest::default()
    } else {
        parse_body(body)?
    };
    if let Some(named) = &request.name {
        Name::user(named).map_err(ServiceError::from)?;
    }
    let name =
        signed.caller.acting_on("name", request.name.as_deref()).map_err(ServiceError::from)?;
    {
        let entries = state.chat.lock();
        if entries.len() >= state.chat.max {
            return Err(ApiError::new(
                ErrorCode::Busy,
                "the gateway holds as many chat sessions as it may",
            ));
        }
        if entries.values().filter(|e| e.session.name() == name).count() >= state.chat.per_user {
            return Err(ApiError::new(
                ErrorCode::Busy,
                format!("{name} has {} chat sessions here already", state.chat.per_user),
            ));
        }
    }
    let session = ChatSession::register(signed.agora.clone(), name).await?;
    let registration = session.registration().clone();
    let entry = Entry { session: Arc::new(session), touched: Instant::now(), streams: 0 };
    state.chat.lock().insert(registration.session.clone(), entry);
    Ok(Json(registration).into_response())
}

pub async fn close(
    StateOf(state): StateOf<State>,
    signed: Signed,
    token: Result<Path<String>, PathRejection>,
) -> ApiResult {
    let token = path(token)?;
    let session = state.chat.remove(&token, signed.name()).ok_or_else(not_registered)?;
    let name = session.name().to_owned();
    leave(session).await;
    Ok(Json(json!({ "name": name, "online": false })).into_response())
}

/// Give `room` or `to`, not both.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SendRequest {
    #[schemars(pattern(agora_nats::pattern::SESSION))]
    pub session: String,
    #[schemars(pattern(agora_nats::pattern::CHAT_NAME))]
    pub room: Option<String>,
    #[schemars(pattern(agora_nats::pattern::CHAT_NAME))]
    pub to: Option<String>,
    /// 1-4096 bytes of plain text; no control characters but newline and tab.
    #[schemars(length(min = 1, max = 4096))]
    pub text: String,
}

pub async fn send(
    StateOf(state): StateOf<State>,
    signed: Signed,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let request: SendRequest = parse_body(body)?;
    let chat_error = |e: agora_core::ChatError| ApiError::from(ServiceError::from(e));
    let (room, to) = match (&request.room, &request.to) {
        (Some(room), None) => (Some(Name::room(room).map_err(chat_error)?), None),
        (None, Some(to)) => (None, Some(Name::user(to).map_err(chat_error)?)),
        _ => return Err(ApiError::invalid("give either room or to")),
    };
    let session = state.chat.get(&request.session, signed.name())?;
    let message = session.message(
        room.as_ref().map(Name::as_str),
        to.as_ref().map(Name::as_str),
        &request.text,
    );
    agora_core::chat::check_message(session.name(), &message.id, &message.text)
        .map_err(chat_error)?;
    let ack = session.client().chat_send(&message).await?;
    let shown = json!({"id": message.id, "from": session.name(), "text": message.text,
                       "at": message.at, "seq": ack.seq});
    Ok(Json(json!({ "seq": ack.seq, "duplicate": ack.duplicate, "message": shown }))
        .into_response())
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RoomChange {
    #[schemars(pattern(agora_nats::pattern::SESSION))]
    pub session: String,
    #[schemars(pattern(agora_nats::pattern::CHAT_NAME))]
    pub room: String,
}

pub async fn join(
    StateOf(state): StateOf<State>,
    signed: Signed,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let request: RoomChange = parse_body(body)?;
    let session = state.chat.get(&request.session, signed.name())?;
    let rooms: RoomsReply = session.join(&request.room).await?;
    Ok(Json(rooms).into_response())
}

pub async fn part(
    StateOf(state): StateOf<State>,
    signed: Signed,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let request: RoomChange = parse_body(body)?;
    let session = state.chat.get(&request.session, signed.name())?;
    let rooms: RoomsReply = session.part(&request.room).await?;
    Ok(Json(rooms).into_response())
}

pub async fn who(signed: Signed, request: Result<Query<WhoRequest>, QueryRejection>) -> ApiResult {
    forward(&signed.agora, subject::WHO_SUBJECT, &query(request)?).await
}

pub async fn history(
    signed: Signed,
    request: Result<Query<HistoryRequest>, QueryRejection>,
) -> ApiResult {
    forward(&signed.agora, subject::HISTORY_SUBJECT, &query(request)?).await
}

pub async fn edit(signed: Signed, body: Result<Bytes, BytesRejection>) -> ApiResult {
    let request: EditRequest = parse_body(body)?;
    forward(&signed.agora, subject::EDIT_SUBJECT, &request).await
}

pub async fn delete_message(signed: Signed, body: Result<Bytes, BytesRejection>) -> ApiResult {
    let request: SeqRequest = parse_body(body)?;
    forward(&signed.agora, subject::DELETE_SUBJECT, &request).await
}

pub async fn edits(
    signed: Signed,
    request: Result<Query<SeqRequest>, QueryRejection>,
) -> ApiResult {
    forward(&signed.agora, subject::EDITS_SUBJECT, &query(request)?).await
}

pub async fn react(signed: Signed, body: Result<Bytes, BytesRejection>) -> ApiResult {
    let request: ReactRequest = parse_body(body)?;
    forward(&signed.agora, subject::REACT_SUBJECT, &request).await
}

pub async fn read(signed: Signed, body: Result<Bytes, BytesRejection>) -> ApiResult {
    let request: ConversationRequest = parse_body(body)?;
    forward(&signed.agora, subject::READ_SUBJECT, &request).await
}

pub async fn typing(signed: Signed, body: Result<Bytes, BytesRejection>) -> ApiResult {
    let request: ConversationRequest = parse_body(body)?;
    forward(&signed.agora, subject::TYPING_SUBJECT, &request).await
}

pub async fn unread(signed: Signed) -> ApiResult {
    forward(&signed.agora, subject::UNREAD_SUBJECT, &json!({})).await
}

pub async fn search(
    signed: Signed,
    request: Result<Query<SearchRequest>, QueryRejection>,
) -> ApiResult {
    forward(&signed.agora, subject::SEARCH_SUBJECT, &query(request)?).await
}
