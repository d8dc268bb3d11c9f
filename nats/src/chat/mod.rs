//! The chat service (`agora-chat`): names and presence, room memberships, and the history of
//! every message.
//!
//! ## Shape
//! A message is sent to this service (`agora.chat.send`): it checks the message (known names,
//! text limits, the sender's rate), records it in SQLite with its sender as the server vouched
//! for them ([`crate::identity`]: a payload cannot speak for someone else), publishes it on its
//! fan-out subject (`agora.chat.room.<room>`, or `agora.chat.dm.<to>` which only `<to>` may
//! read), and then answers with its history position ([`wire::MessageAck`]) or a coded error
//! (`unknown_user` for a direct message to a name never registered, `rate_limited`, ...). Only
//! this service publishes on those subjects, so what members receive is what history has.
//! Clients resend with the same id until acknowledged; history keeps one copy per sender and
//! id, and a resend is not published again.
//!
//! Requests (register, heartbeat, leave, join, part, who, history, send) are micro-service
//! endpoints. A person registers, heartbeats, joins and reads history only as themselves.
//! Like the task service, endpoint and subscription tasks only decode; the owner thread
//! ([`crate::owner`], state [`state::ChatState`]) holds the `agora_core::Chat` state machine,
//! applies whatever is queued in one transaction, commits, and only then replies and publishes
//! presence events (`agora.chat.presence.<name>`). It also sweeps sessions whose heartbeats
//! stopped.

pub mod client;
pub mod state;
pub mod store;
pub mod wire;

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use agora_core::chat::{self, Command};
use agora_core::{Caller, ChatConfig, Name};
use async_nats::Client;
use futures::StreamExt;

use crate::error::{ErrorCode, ServiceError};
use crate::owner::{self, Limits, Mode};
use crate::service::{
    ErrorCounts, Replier, add_endpoint, decode, decode_limited, decode_or_default,
};
use crate::subjects::chat as subject;
use state::{ChatState, Envelope, HistoryQuery, Incoming, Place, RequestCommand, UpdateCommand};
use wire::{
    ConversationRequest, EditRequest, HistoryRequest, ReactRequest, RegisterRequest, RoomRequest,
    SearchRequest, SendRequest, SeqRequest, SessionRequest, WhoRequest,
};

/// Every endpoint of the chat service (names, also subjects below [`subject::GROUP`]).
const ENDPOINTS: [&str; 15] = [
    subject::REGISTER,
    subject::HEARTBEAT,
    subject::LEAVE,
    subject::JOIN,
    subject::PART,
    subject::WHO,
    subject::HISTORY,
    subject::EDIT,
    subject::DELETE,
    subject::EDITS,
    subject::REACT,
    subject::READ,
    subject::UNREAD,
    subject::TYPING,
    subject::SEARCH,
];

/// `agora.chat.search` page sizes.
pub const SEARCH_LIMIT_DEFAULT: usize = 20;
pub const SEARCH_LIMIT_MAX: usize = 100;

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
/// Largest `agora.chat.who` request, in bytes.
pub const WHO_BYTES_MAX: usize = 4 * 1024;
/// Messages pruned per sweep at most.
const PRUNE_BATCH: usize = 10_000;
/// How often the owner sweeps presence and prunes history.
const TICK: Duration = Duration::from_millis(100);
const PRUNE_EVERY_MS: u64 = 1_000;

/// Chat service configuration: the flags of `agora-chat`.
#[derive(Debug, Clone, clap::Args)]
pub struct ChatServiceConfig {
    /// Directory of the SQLite database (created if missing).
    #[arg(long, env = "AGORA_CHAT_DATA_DIR", default_value = "data/chat")]
    pub data_dir: PathBuf,
    /// A user with no heartbeat for this long goes offline, in milliseconds.
    #[arg(long, env = "AGORA_CHAT_PRESENCE_TIMEOUT_MS", default_value_t = 15_000)]
    pub presence_timeout_ms: u64,
    /// Messages per second one user may send, sustained.
    #[arg(long, env = "AGORA_CHAT_RATE_PER_SEC", default_value_t = 20)]
    pub rate_per_sec: u32,
    /// Messages one user may send in a burst.
    #[arg(long, env = "AGORA_CHAT_BURST", default_value_t = 40)]
    pub burst: u32,
    /// Names that may ever be registered.
    #[arg(long, env = "AGORA_CHAT_USERS_MAX", default_value_t = 100_000)]
    pub users_max: usize,
    /// Messages kept in history; the oldest go first.
    #[arg(long, env = "AGORA_CHAT_HISTORY_MAX", default_value_t = 1_000_000)]
    pub history_max: u64,
    #[command(flatten)]
    pub replica: crate::replica::ReplicaArgs,
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
pub struct MessageCounts {
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
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    config.validate()?;
    let replicated = crate::replica::Replicated {
        service: "chat",
        args: &config.replica,
        data_dir: &config.data_dir,
        file: store::DATABASE_FILE,
        open: store::open,
    };
    crate::replica::run(
        client.clone(),
        replicated,
        |conn, journal, stop| serve(client.clone(), config.clone(), conn, journal, stop),
        shutdown,
    )
    .await
}

/// The active chat service: its owner over the view, its endpoints, until `shutdown`.
async fn serve(
    client: Client,
    config: ChatServiceConfig,
    conn: rusqlite::Connection,
    journal: crate::replica::Journal,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let errors = ErrorCounts::default();
    let counts = Arc::new(MessageCounts::default());
    let state = ChatState::load(&conn, client.clone(), config, &errors, counts.clone())?;
    let limits = Limits {
        group_max: GROUP_ENVELOPES_MAX,
        tick: TICK,
        synchronous: store::SYNCHRONOUS,
        mode: Mode::Thread,
    };
    let (envelopes, inbox) = owner::queue(QUEUE_MAX);
    let owner_thread = owner::spawn_replicated("chat", conn, state, inbox, limits, journal)?;

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
                let caller = crate::identity::caller(request.message.headers.as_ref());
                let parsed = caller
                    .and_then(|caller| parse_request(name, &caller, &request.message.payload));
                let command = match parsed {
                    Ok(command) => command,
                    Err(error) => {
                        replier.reply_bytes(&request, Err(error)).await;
                        continue;
                    }
                };
                let envelope =
                    Envelope::Request { request: Box::new(request), endpoint: name, command };
                if let Err(Envelope::Request { request, .. }) = envelopes.try_send(envelope) {
                    replier.reply_bytes(&request, Err(busy())).await;
                }
            }
        }));
    }
    {
        let mut endpoint = add_endpoint(&group, subject::SEND, subject::SEND).await?;
        let envelopes = envelopes.clone();
        let replier = Replier::new(subject::SEND, errors.clone());
        let counts = counts.clone();
        loops.push(tokio::spawn(async move {
            while let Some(request) = endpoint.next().await {
                let caller = crate::identity::caller(request.message.headers.as_ref());
                let parsed =
                    caller.and_then(|caller| parse_message(&caller, &request.message.payload));
                let incoming = match parsed {
                    Ok(incoming) => incoming,
                    Err(error) => {
                        counts.refused.fetch_add(1, Ordering::Relaxed);
                        replier.reply_bytes(&request, Err(error)).await;
                        continue;
                    }
                };
                let envelope = Envelope::Message { incoming, request: Box::new(request) };
                if let Err(Envelope::Message { request, .. }) = envelopes.try_send(envelope) {
                    replier.reply_bytes(&request, Err(busy())).await;
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
    // The owner drains what is queued, commits and stops once every queue handle is gone.
    owner_thread.join().await;
    client.flush().await.ok();
    Ok(())
}

fn busy() -> ServiceError {
    ServiceError::new(ErrorCode::Busy, "the chat service is overloaded; retry")
}

/// A message `caller` sends: from themselves (a service names the sender), to one room or one
/// user.
fn parse_message(caller: &Caller, payload: &[u8]) -> Result<Incoming, ServiceError> {
    let message: SendRequest = decode_limited(payload, MESSAGE_BYTES_MAX)?;
    let (room, to) = match (&message.room, &message.to) {
        (Some(room), None) => (Some(Name::room(room)?), None),
        (None, Some(to)) => (None, Some(Name::user(to)?)),
        _ => return Err(ServiceError::invalid("give `room` or `to`, one of them")),
    };
    message.from.as_deref().map(Name::user).transpose()?;
    let from = caller.acting_on("name", message.from.as_deref())?;
    chat::check_message(from, &message.id, &message.text)?;
    let from = Name::user(from)?;
    Ok(Incoming {
        room,
        to,
        from,
        id: message.id,
        text: message.text,
        at_ms: message.at,
        reply_to: message.reply_to,
    })
}

/// The name `caller` acts as (theirs; the named one for a service).
fn own_name(caller: &Caller, named: &str) -> Result<Name, ServiceError> {
    let name = Name::user(named)?;
    caller.acting_on("name", Some(named))?;
    Ok(name)
}

fn session_of(caller: &Caller, request: SessionRequest) -> Result<(Name, String), ServiceError> {
    chat::check_session(&request.session)?;
    Ok((own_name(caller, &request.name)?, request.session))
}

fn room_command(caller: &Caller, payload: &[u8], join: bool) -> Result<Command, ServiceError> {
    let request: RoomRequest = decode(payload)?;
    chat::check_session(&request.session)?;
    let name = own_name(caller, &request.name)?;
    let room = Name::room(&request.room)?;
    let token = request.session;
    Ok(if join { Command::Join { name, token, room } } else { Command::Part { name, token, room } })
}

/// Decodes and validates a request of `caller` (on the runtime, before it reaches the owner
/// thread).
fn parse_request(
    endpoint: &str,
    caller: &Caller,
    payload: &[u8],
) -> Result<RequestCommand, ServiceError> {
    caller.signed_in("chat")?;
    Ok(match endpoint {
        subject::REGISTER => {
            let request: RegisterRequest = decode(payload)?;
            let token = match request.session {
                Some(token) => {
                    chat::check_session(&token)?;
                    token
                }
                None => crate::auth::secrets::new_token()?,
            };
            let name = own_name(caller, &request.name)?;
            RequestCommand::Chat(Command::Register { name, token })
        }
        subject::HEARTBEAT => {
            let (name, token) = session_of(caller, decode(payload)?)?;
            RequestCommand::Chat(Command::Heartbeat { name, token })
        }
        subject::LEAVE => {
            let (name, token) = session_of(caller, decode(payload)?)?;
            RequestCommand::Chat(Command::Leave { name, token })
        }
        subject::JOIN => RequestCommand::Chat(room_command(caller, payload, true)?),
        subject::PART => RequestCommand::Chat(room_command(caller, payload, false)?),
        subject::WHO => {
            let request: WhoRequest = decode_or_default(payload, WHO_BYTES_MAX)?;
            let room = request.room.as_deref().map(Name::room).transpose()?;
            RequestCommand::Who { room, offline: request.offline }
        }
        subject::HISTORY => {
            let request: HistoryRequest = decode(payload)?;
            let room = request.room.as_deref().map(Name::room).transpose()?;
            let with = request.with.as_deref().map(Name::user).transpose()?;
            // A conversation, or what a name could see, is read only as that name.
            let as_user = match &request.as_user {
                Some(named) => Some(own_name(caller, named)?),
                None => None,
            };
            match (&room, &with, &as_user, request.thread) {
                (None, None, None, Some(_))
                | (Some(_), None, None, None)
                | (None, Some(_), Some(_), None)
                | (None, None, Some(_), None) => {}
                _ => {
                    return Err(ServiceError::invalid(
                        "give `room`, or `with` and `as` (a direct conversation), or only `as` \
                         (everything that name could see), or only `thread`",
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
                    thread: request.thread,
                    reader: person(caller).ok(),
                },
            }
        }
        subject::EDIT => {
            let request: EditRequest = decode_limited(payload, MESSAGE_BYTES_MAX)?;
            chat::check_text(&request.text)?;
            let name = person(caller)?;
            RequestCommand::Update(UpdateCommand::Edit {
                name,
                seq: request.seq,
                text: Some(request.text),
            })
        }
        subject::DELETE => {
            let request: SeqRequest = decode(payload)?;
            let name = person(caller)?;
            RequestCommand::Update(UpdateCommand::Delete { name, seq: request.seq, text: None })
        }
        subject::EDITS => {
            let request: SeqRequest = decode(payload)?;
            RequestCommand::Update(UpdateCommand::Edits {
                reader: person(caller).ok(),
                seq: request.seq,
            })
        }
        subject::REACT => {
            let request: ReactRequest = decode(payload)?;
            chat::check_emoji(&request.emoji)?;
            let name = person(caller)?;
            RequestCommand::Update(UpdateCommand::React {
                name,
                seq: request.seq,
                emoji: request.emoji,
                on: request.on,
            })
        }
        subject::READ => {
            let request: ConversationRequest = decode(payload)?;
            let seq = request
                .seq
                .ok_or_else(|| ServiceError::invalid("give `seq`: read up to which message"))?;
            let place = place(&request)?;
            RequestCommand::Update(UpdateCommand::Read { name: person(caller)?, place, seq })
        }
        subject::TYPING => {
            let request: ConversationRequest = decode(payload)?;
            if request.seq.is_some() {
                return Err(ServiceError::invalid("typing takes no `seq`"));
            }
            let place = place(&request)?;
            RequestCommand::Update(UpdateCommand::Typing { name: person(caller)?, place })
        }
        subject::UNREAD => {
            let _: WhoRequest =
                decode_or_default(payload, WHO_BYTES_MAX).and_then(|request: WhoRequest| {
                    if request.room.is_some() || request.offline {
                        Err(ServiceError::invalid("unread takes no fields"))
                    } else {
                        Ok(request)
                    }
                })?;
            RequestCommand::Update(UpdateCommand::Unread { name: person(caller)? })
        }
        subject::SEARCH => {
            let request: SearchRequest = decode(payload)?;
            let query = chat::search_query(&request.query)?;
            let place = match (&request.room, &request.with) {
                (None, None) => None,
                _ => Some(place(&ConversationRequest {
                    room: request.room.clone(),
                    with: request.with.clone(),
                    seq: None,
                })?),
            };
            let limit = request.limit.unwrap_or(SEARCH_LIMIT_DEFAULT);
            if !(1..=SEARCH_LIMIT_MAX).contains(&limit) {
                return Err(ServiceError::invalid(format!("limit is 1..={SEARCH_LIMIT_MAX}")));
            }
            RequestCommand::Update(UpdateCommand::Search {
                name: person(caller)?,
                query,
                place,
                before: request.before,
                limit,
            })
        }
        other => {
            return Err(ServiceError::new(ErrorCode::Internal, format!("no endpoint {other}")));
        }
    })
}

/// The person calling: edits, reactions, receipts, typing and searches are a person's own.
fn person(caller: &Caller) -> Result<Name, ServiceError> {
    match caller.name() {
        Some(name) => Ok(Name::user(name.as_str())?),
        None => Err(ServiceError::new(
            ErrorCode::Forbidden,
            "only a person edits, reacts, reads, types and searches (as themselves)",
        )),
    }
}

/// A room, or a direct conversation `with` someone: one of them.
fn place(request: &ConversationRequest) -> Result<Place, ServiceError> {
    match (&request.room, &request.with) {
        (Some(room), None) => Ok(Place::Room(Name::room(room)?)),
        (None, Some(with)) => Ok(Place::With(Name::user(with)?)),
        _ => Err(ServiceError::invalid("give `room` or `with`, one of them")),
    }
}

#[cfg(test)]
mod tests;
