//! The chat service (`agora-chat`): names and presence, room memberships, and the history of
//! every message.
//!
//! ## Shape
//! Messages do not pass through this service: clients publish them on the fan-out subjects
//! (`agora.chat.room.<room>`, `agora.chat.dm.<to>`), where members and recipients receive them
//! straight from NATS. This service is one more subscriber: it checks each message (known
//! names, text limits, the sender's rate), records it in SQLite and, when the message came
//! with a reply subject, answers with its history position ([`wire::MessageAck`]) or a coded error
//! (`unknown_user` for a direct message to a name never registered, `rate_limited`, ...).
//! Clients send with a reply subject and resend with the same id until acknowledged; history
//! keeps one copy per sender and id.
//!
//! Requests (register, heartbeat, leave, join, part, who, history) are micro-service endpoints.
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
use agora_core::{ChatConfig, Name};
use anyhow::Context as _;
use async_nats::Client;
use futures::StreamExt;

use crate::error::{ErrorCode, ServiceError};
use crate::owner::{self, Limits, Mode};
use crate::service::{
    ErrorCounts, Replier, add_endpoint, decode, decode_limited, decode_or_default, publish_reply,
};
use crate::subjects::{self, chat as subject};
use state::{ChatState, Envelope, HistoryQuery, Incoming, RequestCommand};
use wire::{ChatMessage, HistoryRequest, RegisterRequest, RoomRequest, SessionRequest, WhoRequest};

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
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    config.validate()?;
    // One chat service keeps presence and history: a second one would answer half the
    // requests from other state.
    crate::service::refuse_second_instance(&client, subject::SERVICE).await?;
    let conn = store::open(&config.data_dir)
        .with_context(|| format!("opening {}", config.data_dir.display()))?;
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
    let owner_thread = owner::spawn("chat", conn, state, inbox, limits)?;

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
                if let Err(Envelope::Request { request, .. }) = envelopes.try_send(envelope) {
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
                            Err(Envelope::Message { reply, .. }) => {
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
    // The owner drains what is queued, commits and stops once every queue handle is gone.
    owner_thread.join().await;
    client.flush().await.ok();
    Ok(())
}

fn busy() -> ServiceError {
    ServiceError::new(ErrorCode::Busy, "the chat service is overloaded; retry")
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
            let request: WhoRequest = decode_or_default(payload, WHO_BYTES_MAX)?;
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
