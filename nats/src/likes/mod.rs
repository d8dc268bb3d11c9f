//! A likes node (`agora-likes`): run three or more. Any node takes any like; every node knows
//! every count; a node that was down or cut off catches up by itself.
//!
//! ## Shape
//! - `agora.likes.like.<item>`, `unlike.<item>`, `count.<item>` and `top` are micro-service
//!   endpoints, so the nodes form one queue group: any node takes a request.
//! - **The owner thread** ([`crate::owner`], state [`state::Likes`]) holds the node's replica
//!   (`agora_core::LikeCounter`, the CRDT). It applies whatever is queued in one SQLite
//!   transaction (one *batch* of this node's writes), commits, then publishes the batch's
//!   records on `agora.likes.events.<item>` (one event per item, each saying how many parts the
//!   batch has; the last one signed, see [`trust`]) and only then replies. A reply therefore
//!   means "durable here and on its way to every node".
//! - Every node subscribes to every event and merges it. A batch whose parts all arrived, in
//!   order, is *covered*; a missing batch or part is a gap, and the node pulls from the origin.
//! - **Anti-entropy**: `agora.likes.sync.<node>` serves pages of "every record your coverage
//!   lacks". A node pulls from every peer that is ahead on startup and after a reconnect; the
//!   leader's round (every `--sync-interval-ms`) gathers every node's coverage over
//!   `agora.likes.digest` and orders lagging nodes to pull (`agora.likes.pull.<node>`).
//! - **Leader** ([`leader`]): whoever creates the `leader` key of the KV bucket `AGORA_LIKES`
//!   (whose `max_age` is the lease) leads, renewing every third of the lease; its epoch is the
//!   KV revision that created it. The leader answers `agora.likes.nodes` and runs the rounds.
//!   No like waits on the leader.
//!
//! ## Files
//! `mod.rs` the node, [`state`] the owner's state, [`store`] its SQL, [`wire`] the JSON,
//! [`sync`] events and pulls, [`leader`] the lease and rounds, [`trust`] the roster and
//! signatures, `client.rs` the calls on `AgoraClient`.

pub mod client;
pub mod leader;
pub mod state;
pub mod store;
pub mod sync;
pub mod trust;
pub mod wire;

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agora_core::likes::{self as core_likes, Limits, Record};
use agora_core::{Caller, ItemId, LikesError, NodeId, UserId};
use anyhow::Context as _;
use async_nats::Client;
use futures::StreamExt;
use rusqlite::Connection;
use tokio::sync::mpsc;

use crate::client::AgoraClient;
use crate::clock::now_ms;
use crate::error::{ErrorCode, ServiceError};
use crate::owner::{self, Limits as OwnerLimits, Mode};
use crate::service::{
    ErrorCounts, Replier, add_endpoint, decode_limited, decode_or_default, publish_reply,
};
use crate::subjects::{self, likes as subject};
use state::{Command, Envelope, Likes, Links};
use sync::Syncer;
use trust::{Assembler, Roster};
use wire::{
    DigestRequest, LikeEvent, LikeRequest, NodeDigest, PullOrder, SyncRequest, TopRequest,
    vector_from_wire,
};

/// Request bodies of like, unlike, count, top and digest are small.
pub const REQUEST_BYTES_MAX: usize = 4 * 1024;
/// A sync request carries a version vector: one entry per node.
pub const SYNC_REQUEST_BYTES_MAX: usize = 64 * 1024;
/// The largest event (one part of a batch) a node accepts.
pub const EVENT_BYTES_MAX: usize = 256 * 1024;
/// The largest `agora.likes.digest` request.
pub const DIGEST_REQUEST_BYTES_MAX: usize = 16 * 1024;
/// `agora.likes.top` sizes.
pub const TOP_LIMIT_DEFAULT: usize = 10;
pub const TOP_LIMIT_MAX: usize = 1_000;
/// Items one digest request may ask counts of.
pub const DIGEST_ITEMS_MAX: usize = 100;
/// Most envelopes (so at most that many writes: one batch) in one SQLite transaction. A batch
/// is never split across sync pages, so this also bounds a page.
pub const GROUP_ENVELOPES_MAX: usize = core_likes::BATCH_WRITES_MAX as usize;
/// Envelopes queued for the owner thread at most (beyond: `busy`).
pub const QUEUE_MAX: usize = 65_536;
/// About this many bytes of records per sync page (plus at most one batch).
pub const SYNC_PAGE_BYTES: usize = 128 * 1024;
/// Pages one pull may take at most (a pull that needs more goes on in the next round).
pub const PULL_PAGES_MAX: usize = 10_000;
/// How long a scatter-gather over `agora.likes.digest` waits for answers.
pub const DIGEST_WINDOW: Duration = Duration::from_millis(200);
/// Pull orders (peers) queued for the syncer at most.
const PULL_QUEUE_MAX: usize = 1_024;
/// How often the owner wakes without work (rates, status).
const TICK: Duration = Duration::from_millis(100);
/// How often the node checks whether its connection came back.
const RECONNECT_POLL: Duration = Duration::from_millis(200);

/// Every client-facing endpoint with its subject below [`subject::GROUP`].
const ENDPOINTS: [(&str, &str); 4] = [
    (subject::LIKE, "like.*"),
    (subject::UNLIKE, "unlike.*"),
    (subject::COUNT, "count.*"),
    (subject::TOP, subject::TOP),
];

/// A likes node's configuration: the flags of `agora-likes`.
#[derive(Debug, Clone, clap::Args)]
pub struct LikesConfig {
    /// Directory of this node's SQLite database (one directory per node: it is the node's
    /// identity and its share of the likes).
    #[arg(long, env = "AGORA_LIKES_DATA_DIR", default_value = "data/likes")]
    pub data_dir: PathBuf,
    /// This node's id (1-32 of A-Z a-z 0-9 _ -); stored on first start. Default: the stored
    /// one, or a new random `likes-xxxxxxxx`.
    #[arg(long, env = "AGORA_LIKES_NODE_ID")]
    pub node_id: Option<String>,
    /// Leader lease, in milliseconds: a dead leader is replaced within about this long.
    #[arg(long, env = "AGORA_LIKES_LEASE_MS", default_value_t = 3_000)]
    pub lease_ms: u64,
    /// How often the leader runs an anti-entropy round, in milliseconds.
    #[arg(long, env = "AGORA_LIKES_SYNC_INTERVAL_MS", default_value_t = 1_000)]
    pub sync_interval_ms: u64,
    /// Items this node takes new likes for at most.
    #[arg(long, env = "AGORA_LIKES_ITEMS_MAX", default_value_t = 1_000_000)]
    pub items_max: usize,
    /// (item, user) likes this node takes new ones for at most.
    #[arg(long, env = "AGORA_LIKES_USERS_MAX", default_value_t = 5_000_000)]
    pub users_max: usize,
    /// Replicas of the leader-lease and roster KV buckets (3 on a three-node NATS cluster).
    #[arg(long, env = "AGORA_LIKES_KV_REPLICAS", default_value_t = 1)]
    pub kv_replicas: usize,
}

impl LikesConfig {
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!((300..=60_000).contains(&self.lease_ms), "lease-ms is 300..=60000");
        anyhow::ensure!(
            (100..=600_000).contains(&self.sync_interval_ms),
            "sync-interval-ms is 100..=600000"
        );
        anyhow::ensure!((1..=100_000_000).contains(&self.items_max), "items-max is 1..=10^8");
        anyhow::ensure!((1..=100_000_000).contains(&self.users_max), "users-max is 1..=10^8");
        anyhow::ensure!((1..=5).contains(&self.kv_replicas), "kv-replicas is 1..=5");
        if let Some(node) = &self.node_id {
            NodeId::parse(node)?;
        }
        Ok(())
    }

    fn limits(&self) -> Limits {
        Limits { items_max: self.items_max, users_max: self.users_max }
    }
}

/// What the node's status snapshot and its digests share (updated by the owner after every
/// group, by the leader task and by the syncer).
type Status = Arc<Mutex<NodeDigest>>;

fn lock(status: &Status) -> std::sync::MutexGuard<'_, NodeDigest> {
    status.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs a likes node until `shutdown` resolves.
pub async fn run(
    client: Client,
    config: LikesConfig,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    config.validate()?;
    let _data_dir = crate::sqlite::lock_dir(&config.data_dir)?;
    let conn = store::open(&config.data_dir)
        .with_context(|| format!("opening {}", config.data_dir.display()))?;
    let node = resolve_node_id(&conn, config.node_id.as_deref())?;
    let key = Arc::new(trust::signing_key(&conn)?);
    let roster = Roster::join(&client, config.kv_replicas, &node, &key).await?;
    let errors = ErrorCounts::default();
    let status: Status = Arc::new(Mutex::new(NodeDigest {
        node: node.to_string(),
        started_ms: now_ms(),
        ..NodeDigest::default()
    }));
    let (queue, inbox) = owner::queue(QUEUE_MAX);
    let (orders, order_inbox) = mpsc::channel::<NodeId>(PULL_QUEUE_MAX);
    let links = Links {
        client: client.clone(),
        errors: errors.clone(),
        status: status.clone(),
        queued: queue.depth(),
        orders: orders.clone(),
        key,
    };
    let likes = Likes::load(&conn, node.clone(), config.limits(), links)?;
    let limits = OwnerLimits {
        group_max: GROUP_ENVELOPES_MAX,
        tick: TICK,
        synchronous: store::SYNCHRONOUS,
        mode: Mode::Thread,
    };
    let owner_thread = owner::spawn("likes", conn, likes, inbox, limits)?;
    let mut loops = Vec::new();

    // Events first, so nothing falls between the startup pulls and them.
    let events = client.subscribe(subject::EVENTS_ALL).await?;
    loops.push(tokio::spawn(sync::take_events(
        events,
        node.clone(),
        Assembler::new(roster.clone()),
        queue.clone(),
        status.clone(),
    )));
    let mut digests = client.subscribe(subject::DIGEST_SUBJECT).await?;
    let digest_queue = queue.clone();
    let digest_client = client.clone();
    loops.push(tokio::spawn(async move {
        while let Some(message) = digests.next().await {
            let Some(reply) = message.reply else { continue };
            let result = parse_digest(&message.payload).and_then(|items| {
                digest_queue
                    .try_send(Envelope::Digest { reply: reply.clone(), items })
                    .map_err(|_| busy())
            });
            if let Err(error) = result {
                publish_reply(&digest_client, reply, Err(error)).await.ok();
            }
        }
    }));
    let mut pull_orders = client.subscribe(subject::pull(node.as_str())).await?;
    let order_sender = orders.clone();
    loops.push(tokio::spawn(async move {
        // An order is a hint, not an authority: a pull only merges pages the peer signed (a
        // peer must be in the roster), so a late order of a deposed leader, or one anybody
        // published, costs a pull at most.
        while let Some(message) = pull_orders.next().await {
            let Ok(order) = crate::service::from_object::<PullOrder>(&message.payload) else {
                continue;
            };
            for peer in order.from.iter().filter_map(|p| NodeId::parse(p).ok()) {
                order_sender.try_send(peer).ok();
            }
        }
    }));
    crate::client::barrier(&client).await?;

    let syncer = Syncer {
        client: AgoraClient::new(client.clone()),
        node: node.clone(),
        queue: queue.clone(),
        status: status.clone(),
        roster,
    };
    // Startup anti-entropy: catch up with every peer that is ahead before serving.
    let digests = syncer.client.likes_digests(DIGEST_WINDOW, &[], None).await.unwrap_or_default();
    // This connection does not hear its own digest: one with this id is another process.
    if digests.iter().any(|digest| digest.node == node.as_str()) {
        anyhow::bail!("another likes node with id {node} is running; every node needs its own id");
    }
    for peer in sync::ahead_of(&node, &status, digests) {
        if let Err(error) = syncer.pull(&peer).await {
            tracing::warn!(%peer, %error, "startup pull failed; the leader's round retries");
        }
    }
    loops.push(tokio::spawn(syncer.run(order_inbox)));
    loops.push(tokio::spawn(sync::pull_after_reconnect(
        client.clone(),
        node.clone(),
        status.clone(),
        orders.clone(),
    )));

    let stats_errors = errors.clone();
    let stats_status = status.clone();
    let mut metadata = HashMap::new();
    metadata.insert("node".to_owned(), node.to_string());
    let service = crate::service::builder(&client, metadata)
        .description("Agora likes: counts every node agrees on")
        .stats_handler(move |endpoint, _| {
            let mut data = stats_errors.snapshot(&endpoint);
            if endpoint == subject::LIKE {
                data["node"] = serde_json::to_value(&*lock(&stats_status)).unwrap_or_default();
            }
            data
        })
        .start(subject::SERVICE, env!("CARGO_PKG_VERSION"))
        .await
        .map_err(|e| anyhow::anyhow!("cannot start service: {e}"))?;
    let group = service.group(subject::GROUP);
    let sync_subject = subject::sync_endpoint(node.as_str());
    let all_endpoints = ENDPOINTS.into_iter().chain([(subject::SYNC, sync_subject.as_str())]);
    for (name, endpoint_subject) in all_endpoints {
        let mut endpoint = add_endpoint(&group, name, endpoint_subject).await?;
        let queue = queue.clone();
        let replier = Replier::new(name, errors.clone());
        loops.push(tokio::spawn(async move {
            while let Some(request) = endpoint.next().await {
                let parsed =
                    crate::identity::caller(request.message.headers.as_ref()).and_then(|caller| {
                        let message = &request.message;
                        parse_request(name, &caller, &message.subject, &message.payload)
                    });
                let command = match parsed {
                    Ok(command) => command,
                    Err(error) => {
                        replier.reply_bytes(&request, Err(error)).await;
                        continue;
                    }
                };
                let envelope =
                    Envelope::Request { request: Box::new(request), endpoint: name, command };
                if let Err(Envelope::Request { request, .. }) = queue.try_send(envelope) {
                    replier.reply_bytes(&request, Err(busy())).await;
                }
            }
        }));
    }
    let leader = tokio::spawn(leader::lead(
        client.clone(),
        node.clone(),
        config.clone(),
        status.clone(),
        orders,
    ));
    crate::client::barrier(&client).await?;
    crate::telemetry::announce_ready(subject::SERVICE);
    shutdown.await;

    leader.abort();
    leader.await.ok();
    leader::resign(&client, &node).await;
    for task in &loops {
        task.abort();
    }
    drop(queue);
    drop(loops);
    drop(service);
    // The owner drains what is queued, commits and stops once every queue handle is gone.
    owner_thread.join().await;
    client.flush().await.ok();
    Ok(())
}

/// The node id: the stored one, which a given `--node-id` must match; else the given one or a
/// new random one, stored.
fn resolve_node_id(conn: &Connection, given: Option<&str>) -> anyhow::Result<NodeId> {
    let stored = store::node_id(conn)?;
    let id = match (stored, given) {
        (Some(stored), Some(given)) if stored != given => anyhow::bail!(
            "this data directory belongs to likes node {stored}, not {given}; \
             give each node its own directory"
        ),
        (Some(stored), _) => stored,
        (None, Some(given)) => given.to_owned(),
        (None, None) => {
            let random = nuid::next().to_string().to_lowercase();
            format!("likes-{}", &random[random.len() - 8..])
        }
    };
    let node = NodeId::parse(&id)?;
    store::set_node_id(conn, node.as_str())?;
    Ok(node)
}

fn busy() -> ServiceError {
    ServiceError::new(ErrorCode::Busy, "the likes node is overloaded; retry")
}

/// Decodes and validates a request of `caller` (on the runtime, before it reaches the owner
/// thread): a person likes as themselves; the nodes' own endpoints are for the nodes.
fn parse_request(
    endpoint: &str,
    caller: &Caller,
    subject: &str,
    payload: &[u8],
) -> Result<Command, ServiceError> {
    if endpoint == subject::SYNC {
        caller.require_service("a likes node's pages")?;
    }
    caller.signed_in("likes")?;
    let item = || ItemId::parse(subjects::last_token(subject));
    let user = |request: LikeRequest| -> Result<Option<UserId>, ServiceError> {
        request.user.as_deref().map(UserId::parse).transpose()?;
        let user = caller.acting_as("user", request.user.as_deref())?;
        Ok(user.map(UserId::parse).transpose()?)
    };
    Ok(match endpoint {
        subject::LIKE | subject::UNLIKE => {
            let item = item()?;
            let user = user(decode_or_default(payload, REQUEST_BYTES_MAX)?)?;
            let liked = endpoint == subject::LIKE;
            if !liked && user.is_none() {
                return Err(LikesError::AnonymousUnlike.into());
            }
            Command::Like { item, user, liked }
        }
        subject::COUNT => {
            let item = item()?;
            Command::Count { item, user: user(decode_or_default(payload, REQUEST_BYTES_MAX)?)? }
        }
        subject::TOP => {
            let request: TopRequest = decode_or_default(payload, REQUEST_BYTES_MAX)?;
            let limit = request.limit.unwrap_or(TOP_LIMIT_DEFAULT);
            if !(1..=TOP_LIMIT_MAX).contains(&limit) {
                return Err(ServiceError::invalid(format!("limit is 1..={TOP_LIMIT_MAX}")));
            }
            Command::Top { limit }
        }
        subject::SYNC => {
            let request: SyncRequest = decode_limited(payload, SYNC_REQUEST_BYTES_MAX)?;
            NodeId::parse(&request.node)?;
            let vector = vector_from_wire(&request.vector)?;
            let after = match request.after {
                Some(cursor) => Some((NodeId::parse(&cursor.origin)?, cursor.batch)),
                None => None,
            };
            Command::Serve { vector, after }
        }
        other => {
            return Err(ServiceError::new(ErrorCode::Internal, format!("no endpoint {other}")));
        }
    })
}

/// An event as decoded: the event, its origin and its records.
pub(crate) type ParsedEvent = (LikeEvent, NodeId, Vec<Record>);

/// Decodes an event; `None` for this node's own events.
pub(crate) fn parse_event(
    me: &NodeId,
    payload: &[u8],
) -> Result<Option<ParsedEvent>, ServiceError> {
    let event: LikeEvent = decode_limited(payload, EVENT_BYTES_MAX)?;
    if event.origin == me.as_str() {
        return Ok(None);
    }
    if event.parts == 0 || event.batch == 0 {
        return Err(ServiceError::invalid("an event has a batch and at least one part"));
    }
    let (origin, records) = event.records()?;
    Ok(Some((event, origin, records)))
}

fn parse_digest(payload: &[u8]) -> Result<Vec<ItemId>, ServiceError> {
    let request: DigestRequest = decode_or_default(payload, DIGEST_REQUEST_BYTES_MAX)?;
    if request.items.len() > DIGEST_ITEMS_MAX {
        return Err(ServiceError::invalid(format!("at most {DIGEST_ITEMS_MAX} items")));
    }
    request.items.iter().map(|item| Ok(ItemId::parse(item)?)).collect()
}

#[cfg(test)]
mod tests;
