//! A likes node (`agora-likes`): run three or more. Any node takes any like; every node knows
//! every count; a node that was down or cut off catches up by itself.
//!
//! ## Shape
//! - `agora.likes.like.<item>`, `unlike.<item>`, `count.<item>` and `top` are micro-service
//!   endpoints, so the nodes form one queue group: any node takes a request.
//! - **One owner thread** per node holds the [`LikeCounter`] replica (the CRDT, see
//!   `agora_core::likes`) and the [`LikesStore`]. It applies whatever is queued in one SQLite
//!   transaction (one *batch* of this node's writes), commits, then publishes the batch's
//!   records on `agora.likes.events.<item>` (one event per item, each saying how many parts the
//!   batch has) and only then replies. A reply therefore means "durable here and on its way to
//!   every node".
//! - Every node subscribes to every event and merges it. A batch whose parts all arrived, in
//!   order, is *covered*; a missing batch or part is a gap, and the node pulls from the origin.
//! - **Anti-entropy**: `agora.likes.sync.<node>` serves pages of "every record your coverage
//!   lacks". A node pulls from every peer that is ahead on startup and after a reconnect; the
//!   leader's round (every `--sync-interval-ms`) gathers every node's coverage over
//!   `agora.likes.digest` and orders lagging nodes to pull (`agora.likes.pull.<node>`).
//! - **Leader**: whoever creates the `leader` key of the KV bucket `AGORA_LIKES` (whose
//!   `max_age` is the lease) leads, renewing every third of the lease; its epoch is the KV
//!   revision that created it. The leader answers `agora.likes.nodes` and runs the rounds.
//!   No like waits on the leader.

pub mod store;
pub mod trust;
pub mod wire;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agora_core::likes::{self as core_likes, Limits, Observed, Record, Vector};
use agora_core::{ItemId, LikeCounter, LikesError, NodeId, UserId};
use anyhow::Context as _;
use async_nats::jetstream::{self, kv};
use async_nats::service::Request;
use async_nats::{Client, HeaderMap, Subject};
use bytes::Bytes;
use futures::StreamExt;
use nkeys::KeyPair;
use tokio::sync::{mpsc, oneshot};

use crate::client::{AgoraClient, ClientError};
use crate::clock::now_ms;
use crate::error::{ErrorCode, ServiceError};
use crate::likes::store::{LikesStore, StoreError};
use crate::likes::wire::{
    DigestRequest, ItemCount, LeaderLease, LikeCount, LikeEvent, LikeRequest, NodeDigest,
    NodesReply, PullOrder, SyncReply, SyncRequest, TopReply, TopRequest, UserLike,
    vector_from_wire, vector_to_wire,
};
use crate::service::{
    ErrorCounts, Replier, add_endpoint, decode_limited, decode_or_default, encode, publish_reply,
};
use crate::subjects::{self, likes as subject};
use trust::{Assembler, Refused, Roster};

/// Request bodies of like, unlike, count, top and digest are small.
pub const REQUEST_BYTES_MAX: usize = 4 * 1024;
/// A sync request carries a version vector: one entry per node.
pub const SYNC_REQUEST_BYTES_MAX: usize = 64 * 1024;
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

/// A likes node's configuration (the binary fills it from flags and environment).
#[derive(Debug, Clone)]
pub struct LikesConfig {
    /// Directory holding `likes.db` (the node's identity: one directory per node).
    pub data_dir: PathBuf,
    /// The node id; on first start it is stored, later starts must give the same or none.
    /// None on a new directory: a random `likes-xxxxxxxx`.
    pub node_id: Option<String>,
    /// Leader lease (the KV bucket's `max_age`).
    pub lease_ms: u64,
    /// How often the leader runs an anti-entropy round.
    pub sync_interval_ms: u64,
    /// Items and user likes this node takes new ones for at most.
    pub items_max: usize,
    pub users_max: usize,
    /// Replicas of the leader bucket (3 in a three-node NATS cluster).
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
    let store = LikesStore::open(&config.data_dir)
        .with_context(|| format!("opening {}", config.data_dir.display()))?;
    let node = resolve_node_id(&store, config.node_id.as_deref())?;
    let key = Arc::new(trust::signing_key(&store)?);
    let roster = Roster::join(&client, config.kv_replicas, &node, &key).await?;
    let errors = ErrorCounts::default();
    let status: Status = Arc::new(Mutex::new(NodeDigest {
        node: node.to_string(),
        started_ms: now_ms(),
        ..NodeDigest::default()
    }));
    let queued = Arc::new(AtomicU64::new(0));
    let (envelopes, inbox) = std_mpsc::sync_channel(QUEUE_MAX);
    let (orders, order_inbox) = mpsc::channel::<NodeId>(PULL_QUEUE_MAX);
    let links = OwnerLinks {
        client: client.clone(),
        errors: errors.clone(),
        status: status.clone(),
        queued: queued.clone(),
        orders: orders.clone(),
        key,
    };
    let owner = Owner::new(store, node.clone(), config.limits(), links)?;
    tracing::info!(
        node = %node,
        items = owner.counter.items_len(),
        likes = owner.counter.total(),
        batch = owner.counter.batch(),
        "likes store loaded"
    );
    let owner_thread =
        std::thread::Builder::new().name("likes-owner".into()).spawn(move || owner.run(inbox))?;
    let queue = Queue { envelopes, queued };
    let mut loops = Vec::new();

    // Events first, so nothing falls between the startup pulls and them.
    let events = client.subscribe(subject::EVENTS_ALL).await?;
    loops.push(tokio::spawn(take_events(
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
                    .send(Envelope::Digest { reply: reply.clone(), items })
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
    for peer in ahead_of(&node, &status, digests) {
        if let Err(error) = syncer.pull(&peer).await {
            tracing::warn!(%peer, %error, "startup pull failed; the leader's round retries");
        }
    }
    loops.push(tokio::spawn(syncer.run(order_inbox)));
    loops.push(tokio::spawn(pull_after_reconnect(
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
    let sync_subject = format!("{}.{node}", subject::SYNC);
    let all_endpoints = ENDPOINTS.into_iter().chain([(subject::SYNC, sync_subject.as_str())]);
    for (name, endpoint_subject) in all_endpoints {
        let mut endpoint = add_endpoint(&group, name, endpoint_subject).await?;
        let queue = queue.clone();
        let replier = Replier::new(name, errors.clone());
        loops.push(tokio::spawn(async move {
            while let Some(request) = endpoint.next().await {
                let parsed =
                    parse_request(name, &request.message.subject, &request.message.payload);
                let command = match parsed {
                    Ok(command) => command,
                    Err(error) => {
                        replier.reply_bytes(&request, Err(error)).await;
                        continue;
                    }
                };
                let envelope =
                    Envelope::Request { request: Box::new(request), endpoint: name, command };
                if let Err(Envelope::Request { request, .. }) = queue.send(envelope) {
                    replier.reply_bytes(&request, Err(busy())).await;
                }
            }
        }));
    }
    let leader =
        tokio::spawn(lead(client.clone(), node.clone(), config.clone(), status.clone(), orders));
    crate::client::barrier(&client).await?;
    crate::telemetry::announce_ready(subject::SERVICE);
    shutdown.await;

    leader.abort();
    leader.await.ok();
    resign(&client, &node).await;
    for task in &loops {
        task.abort();
    }
    drop(queue);
    drop(loops);
    drop(service);
    // The owner drains what is queued, commits and stops once every sender is gone.
    tokio::task::spawn_blocking(move || owner_thread.join()).await.ok();
    client.flush().await.ok();
    Ok(())
}

/// The node id: the stored one, which a given `--node-id` must match; else the given one or a
/// new random one, stored.
fn resolve_node_id(store: &LikesStore, given: Option<&str>) -> anyhow::Result<NodeId> {
    let stored = store.node_id()?;
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
    store.set_node_id(node.as_str())?;
    Ok(node)
}

fn busy() -> ServiceError {
    ServiceError::new(ErrorCode::Busy, "the likes node is overloaded; retry")
}

/// The owner's queue, counting what is in it (for the node's load).
#[derive(Debug, Clone)]
struct Queue {
    envelopes: std_mpsc::SyncSender<Envelope>,
    queued: Arc<AtomicU64>,
}

impl Queue {
    /// Queues without waiting; gives the envelope back if the queue is full or gone.
    fn send(&self, envelope: Envelope) -> Result<(), Envelope> {
        self.queued.fetch_add(1, Ordering::Relaxed);
        self.envelopes.try_send(envelope).map_err(|error| {
            self.queued.fetch_sub(1, Ordering::Relaxed);
            match error {
                std_mpsc::TrySendError::Full(e) | std_mpsc::TrySendError::Disconnected(e) => e,
            }
        })
    }

    /// Queues, waiting (briefly, repeatedly) while the queue is full.
    async fn send_waiting(&self, mut envelope: Envelope) -> Result<(), ()> {
        for _ in 0..1_000 {
            match self.send(envelope) {
                Ok(()) => return Ok(()),
                Err(back) => envelope = back,
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Err(())
    }
}

/// A validated request for the owner.
#[derive(Debug)]
enum Command {
    Like { item: ItemId, user: Option<UserId>, liked: bool },
    Count { item: ItemId, user: Option<UserId> },
    Top { limit: usize },
    Serve { vector: Vector, after: Option<(NodeId, u64)> },
}

#[derive(Debug)]
enum Envelope {
    Request {
        request: Box<Request>,
        endpoint: &'static str,
        command: Command,
    },
    /// A peer's whole batch (its events on `agora.likes.events.<item>`), signed by it.
    Event {
        origin: NodeId,
        batch: u64,
        records: Vec<Record>,
    },
    /// A page this node pulled; the last one claims the peer's coverage.
    Merge {
        records: Vec<Record>,
        claim: Option<Vector>,
        peer: NodeId,
        done: oneshot::Sender<()>,
    },
    Digest {
        reply: Subject,
        items: Vec<ItemId>,
    },
}

/// Decodes and validates a request (on the runtime, before it reaches the owner thread).
fn parse_request(endpoint: &str, subject: &str, payload: &[u8]) -> Result<Command, ServiceError> {
    let item = || ItemId::parse(subjects::last_token(subject));
    let user = |request: LikeRequest| request.user.as_deref().map(UserId::parse).transpose();
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
type ParsedEvent = (LikeEvent, NodeId, Vec<Record>);

/// Decodes an event; `None` for this node's own events.
fn parse_event(me: &NodeId, payload: &[u8]) -> Result<Option<ParsedEvent>, ServiceError> {
    let event: LikeEvent = decode_limited(payload, SYNC_REQUEST_BYTES_MAX * 4)?;
    if event.origin == me.as_str() {
        return Ok(None);
    }
    if event.parts == 0 || event.batch == 0 {
        return Err(ServiceError::invalid("an event has a batch and at least one part"));
    }
    let (origin, records) = event.records()?;
    Ok(Some((event, origin, records)))
}

/// Takes every peer's events: assembles each batch, checks it came from its origin (see
/// `likes_trust`), and queues the whole batch for the owner.
async fn take_events(
    mut events: async_nats::Subscriber,
    me: NodeId,
    mut assembler: Assembler,
    queue: Queue,
    status: Status,
) {
    while let Some(message) = events.next().await {
        let (event, origin, records) = match parse_event(&me, &message.payload) {
            Ok(Some(parsed)) => parsed,
            Ok(None) => continue,
            Err(error) => {
                tracing::debug!(%error, "ignored a malformed like event");
                continue;
            }
        };
        let payload = message.payload.clone();
        match assembler.take(&event, origin, records, payload, message.headers.as_ref()).await {
            Ok(batch) => {
                let envelope = Envelope::Event {
                    origin: batch.origin,
                    batch: batch.batch,
                    records: batch.records,
                };
                if queue.send(envelope).is_err() {
                    tracing::debug!("owner queue full: a batch was dropped (a pull repairs it)");
                }
            }
            Err(Refused::Incomplete) => {}
            Err(refused) => {
                lock(&status).refused += 1;
                tracing::warn!(?refused, "refused a likes batch");
            }
        }
    }
}

fn parse_digest(payload: &[u8]) -> Result<Vec<ItemId>, ServiceError> {
    let request: DigestRequest = decode_or_default(payload, REQUEST_BYTES_MAX * 4)?;
    if request.items.len() > DIGEST_ITEMS_MAX {
        return Err(ServiceError::invalid(format!("at most {DIGEST_ITEMS_MAX} items")));
    }
    request.items.iter().map(|item| Ok(ItemId::parse(item)?)).collect()
}

/// What one batch wrote to one item: the body of its event.
#[derive(Debug, Default)]
struct ItemWrites {
    total: Option<u64>,
    users: BTreeMap<String, UserLike>,
}

/// What a group produced, sent once it committed.
#[derive(Debug, Default)]
struct Outbox {
    replies: Vec<(Box<Request>, &'static str, Result<Bytes, ServiceError>)>,
    /// Subject, headers (the batch's signature, on its last event), payload.
    events: Vec<(String, Option<HeaderMap>, Bytes)>,
    digests: Vec<(Subject, Vec<ItemId>)>,
    done: Vec<oneshot::Sender<()>>,
}

/// What the owner thread shares with the rest of the node.
struct OwnerLinks {
    client: Client,
    errors: ErrorCounts,
    status: Status,
    queued: Arc<AtomicU64>,
    /// Gaps found in events: pull from their origin.
    orders: mpsc::Sender<NodeId>,
    /// This node's signing key: its batches and sync pages carry its signature.
    key: Arc<KeyPair>,
}

struct Owner {
    counter: LikeCounter,
    store: LikesStore,
    node: NodeId,
    limits: Limits,
    client: Client,
    runtime: tokio::runtime::Handle,
    repliers: HashMap<&'static str, Replier>,
    status: Status,
    queued: Arc<AtomicU64>,
    /// Gaps found in events: pull from their origin.
    orders: mpsc::Sender<NodeId>,
    key: Arc<KeyPair>,
    accepted: u64,
    accepted_last_second: u64,
    second_started_ms: u64,
}

fn unavailable(error: &StoreError) -> ServiceError {
    ServiceError::new(ErrorCode::Unavailable, format!("likes store failed ({error}); retry"))
}

impl Owner {
    fn new(
        store: LikesStore,
        node: NodeId,
        limits: Limits,
        links: OwnerLinks,
    ) -> anyhow::Result<Self> {
        let OwnerLinks { client, errors, status, queued, orders, key } = links;
        let endpoints = ENDPOINTS.iter().map(|(name, _)| *name).chain([subject::SYNC]);
        let repliers = endpoints.map(|name| (name, Replier::new(name, errors.clone()))).collect();
        let mut owner = Self {
            counter: LikeCounter::new(node.clone(), limits),
            store,
            node,
            limits,
            client,
            runtime: tokio::runtime::Handle::current(),
            repliers,
            status,
            queued,
            orders,
            key,
            accepted: 0,
            accepted_last_second: 0,
            second_started_ms: now_ms(),
        };
        owner.reload()?;
        owner.publish_status(now_ms());
        Ok(owner)
    }

    /// (Re)builds the replica from the store.
    fn reload(&mut self) -> Result<(), StoreError> {
        self.counter = LikeCounter::new(self.node.clone(), self.limits);
        for record in self.store.records()? {
            self.counter.restore(record);
        }
        for (origin, batch) in self.store.coverage()? {
            self.counter.restore_coverage(origin, batch);
        }
        Ok(())
    }

    fn run(mut self, inbox: std_mpsc::Receiver<Envelope>) {
        while let Some(group) = crate::sqlite::next_group(&inbox, TICK, GROUP_ENVELOPES_MAX) {
            let now = now_ms();
            self.queued.fetch_sub(group.len() as u64, Ordering::Relaxed);
            if group.is_empty() {
                self.publish_status(now);
            } else {
                // Refreshes the status too, before answering digests.
                self.run_group(now, group);
            }
        }
        tracing::info!("likes owner stopped");
    }

    fn run_group(&mut self, now: u64, group: Vec<Envelope>) {
        let mut out = Outbox::default();
        let mut writes: BTreeMap<ItemId, ItemWrites> = BTreeMap::new();
        let mut gaps = BTreeSet::new();
        let mut synced = None;
        let mut accepted = 0;
        let result = self.store.begin().and_then(|()| {
            for envelope in group {
                match envelope {
                    Envelope::Request { request, endpoint, command } => {
                        let reply = self.execute(now, command, &mut writes, &mut accepted)?;
                        out.replies.push((request, endpoint, reply));
                    }
                    Envelope::Event { origin, batch, records } => {
                        self.merge_all(records)?;
                        match self.counter.observe(&origin, batch) {
                            Observed::Covered(batch) => self.store.set_coverage(&origin, batch)?,
                            Observed::Gap => {
                                gaps.insert(origin);
                            }
                            Observed::Old => {}
                        }
                    }
                    Envelope::Merge { records, claim, peer, done } => {
                        self.merge_all(records)?;
                        if let Some(vector) = claim {
                            for (origin, batch) in self.counter.claim(&vector) {
                                self.store.set_coverage(&origin, batch)?;
                            }
                            synced = Some(peer);
                        }
                        out.done.push(done);
                    }
                    Envelope::Digest { reply, items } => out.digests.push((reply, items)),
                }
            }
            if let Some(batch) = self.counter.finish() {
                self.store.set_coverage(&self.node, batch)?;
                self.events(batch, writes, &mut out);
            }
            self.store.commit()
        });
        if let Err(error) = result {
            tracing::error!(%error, "likes store transaction failed; rolling back");
            self.store.rollback();
            if let Err(error) = self.reload() {
                tracing::error!(%error, "cannot reload the likes store");
            }
            let failure = unavailable(&error);
            out.replies.iter_mut().for_each(|(_, _, reply)| *reply = Err(failure.clone()));
            out.events.clear();
            // Pullers see their page refused (the sender is dropped) and retry later.
            out.done.clear();
        } else {
            self.accepted += accepted;
            if let Some(peer) = synced {
                let mut status = lock(&self.status);
                status.last_sync_ms = Some(now);
                status.last_sync_from = Some(peer.to_string());
                status.syncs += 1;
            }
        }
        for origin in gaps {
            self.orders.try_send(origin).ok();
        }
        self.deliver(out);
    }

    /// Merges records from a peer (an event or a pulled page), leaving out the implausible
    /// ones (`LikeCounter::admit`).
    fn merge_all(&mut self, records: Vec<Record>) -> Result<(), StoreError> {
        for record in records {
            if let Err(error) = self.counter.admit(&record) {
                lock(&self.status).refused += 1;
                tracing::warn!(%error, "refused a likes record");
                continue;
            }
            if self.counter.merge(record.clone()).is_some() {
                self.store.put(&record)?;
            }
        }
        Ok(())
    }

    fn execute(
        &mut self,
        now: u64,
        command: Command,
        writes: &mut BTreeMap<ItemId, ItemWrites>,
        accepted: &mut u64,
    ) -> Result<Result<Bytes, ServiceError>, StoreError> {
        let node = self.node.to_string();
        match command {
            Command::Like { item, user, liked } => {
                let outcome = match self.counter.like(now, &item, user.as_ref(), liked) {
                    Ok(outcome) => outcome,
                    Err(error) => return Ok(Err(error.into())),
                };
                *accepted += 1;
                if let Some(record) = &outcome.record {
                    self.store.put(record)?;
                    let entry = writes.entry(item.clone()).or_default();
                    match record {
                        Record::Counter { counter, .. } => entry.total = Some(counter.total),
                        Record::User { user, register, .. } => {
                            let like = UserLike {
                                user: user.to_string(),
                                liked: register.liked,
                                ts: register.ts_ms,
                            };
                            entry.users.insert(user.to_string(), like);
                        }
                    }
                }
                Ok(encode(&LikeCount {
                    item: item.to_string(),
                    count: outcome.count,
                    liked: outcome.liked,
                    changed: Some(outcome.record.is_some()),
                    node,
                }))
            }
            Command::Count { item, user } => Ok(encode(&LikeCount {
                count: self.counter.count(&item),
                liked: user.map(|user| self.counter.likes(&item, &user)),
                item: item.to_string(),
                changed: None,
                node,
            })),
            Command::Top { limit } => {
                let items = self
                    .counter
                    .top(limit)
                    .into_iter()
                    .map(|(item, count)| ItemCount { item: item.to_string(), count })
                    .collect();
                let items_total = self.counter.items_len() as u64;
                Ok(encode(&TopReply { items, items_total, node }))
            }
            Command::Serve { vector, after } => {
                let origins: Vec<NodeId> = self.counter.vector().keys().cloned().collect();
                let after = after.as_ref().map(|(origin, batch)| (origin, *batch));
                let page = self.store.page(&origins, &vector, after, SYNC_PAGE_BYTES)?;
                Ok(encode(&SyncReply {
                    node,
                    vector: vector_to_wire(self.counter.vector()),
                    counters: page.counters,
                    users: page.users,
                    next: page.next,
                }))
            }
        }
    }

    /// The events of this node's `batch`: one per item it wrote, the last one carrying the
    /// node's signature of the whole batch.
    fn events(&self, batch: u64, writes: BTreeMap<ItemId, ItemWrites>, out: &mut Outbox) {
        let parts = u32::try_from(writes.len()).unwrap_or(u32::MAX);
        let first = out.events.len();
        for (item, writes) in writes {
            let event = LikeEvent {
                item: item.to_string(),
                count: self.counter.count(&item),
                origin: self.node.to_string(),
                batch,
                parts,
                total: writes.total,
                users: writes.users.into_values().collect(),
            };
            if let Ok(payload) = serde_json::to_vec(&event) {
                out.events.push((subject::events(item.as_str()), None, Bytes::from(payload)));
            }
        }
        let payloads = out.events[first..].iter().map(|(_, _, payload)| &payload[..]);
        let digest = trust::batch_digest(self.node.as_str(), batch, payloads);
        if let Some(last) = out.events.last_mut() {
            last.1 = Some(trust::signed(&self.key, &digest));
        }
    }

    fn digest(&self, items: &[ItemId]) -> NodeDigest {
        let mut digest = lock(&self.status).clone();
        digest.counts =
            items.iter().map(|item| (item.to_string(), self.counter.count(item))).collect();
        digest
    }

    /// Refreshes the shared status (stats, digests) after a group or a tick.
    fn publish_status(&mut self, now: u64) {
        if now.saturating_sub(self.second_started_ms) >= 1_000 {
            let mut status = lock(&self.status);
            status.accepted_per_sec = (self.accepted - self.accepted_last_second) * 1_000
                / now.saturating_sub(self.second_started_ms).max(1);
            self.accepted_last_second = self.accepted;
            self.second_started_ms = now;
        }
        let mut status = lock(&self.status);
        status.vector = vector_to_wire(self.counter.vector());
        status.items = self.counter.items_len() as u64;
        status.users = self.counter.registers_len() as u64;
        status.likes = self.counter.total();
        status.accepted = self.accepted;
        status.queue = self.queued.load(Ordering::Relaxed);
    }

    fn deliver(&mut self, out: Outbox) {
        let Outbox { replies, events, digests, done } = out;
        self.publish_status(now_ms());
        let digests: Vec<(Subject, Result<Bytes, ServiceError>)> = digests
            .into_iter()
            .map(|(reply, items)| (reply, encode(&self.digest(&items))))
            .collect();
        self.runtime.block_on(async {
            // Events before replies: once a client has its reply, every node can have the like.
            for (subject, headers, payload) in events {
                let published = match headers {
                    Some(headers) => self.client.publish_with_headers(subject, headers, payload).await,
                    None => self.client.publish(subject, payload).await,
                };
                if let Err(error) = published {
                    tracing::warn!(%error, "could not publish a like event (anti-entropy repairs it)");
                }
            }
            for (request, endpoint, reply) in replies {
                // A sync page is signed: the puller merges only what the node it asked served.
                let headers = match (&reply, endpoint) {
                    (Ok(page), subject::SYNC) => {
                        let digest = trust::page_digest(self.node.as_str(), page);
                        Some(trust::signed(&self.key, &digest))
                    }
                    _ => None,
                };
                self.repliers[endpoint].reply_bytes_with(&request, reply, headers).await;
            }
            for (reply, digest) in digests {
                publish_reply(&self.client, reply, digest).await.ok();
            }
        });
        for done in done {
            done.send(()).ok();
        }
    }
}

/// Pulls records from peers: on the leader's orders and on gaps the owner found.
#[derive(Debug, Clone)]
struct Syncer {
    client: AgoraClient,
    node: NodeId,
    queue: Queue,
    status: Status,
    roster: Roster,
}

impl Syncer {
    async fn run(self, mut orders: mpsc::Receiver<NodeId>) {
        while let Some(first) = orders.recv().await {
            let mut peers = BTreeSet::from([first]);
            while let Ok(peer) = orders.try_recv() {
                peers.insert(peer);
            }
            for peer in peers.into_iter().filter(|peer| *peer != self.node) {
                if let Err(error) = self.pull(&peer).await {
                    tracing::debug!(%peer, %error, "pull failed; the next round retries");
                }
            }
        }
    }

    /// Fetches every record `peer` has that this node's coverage lacks, page by page, and
    /// claims the peer's coverage once the last page is merged. Returns the records merged.
    async fn pull(&self, peer: &NodeId) -> anyhow::Result<usize> {
        let vector = lock(&self.status).vector.clone();
        let mut after = None;
        let mut claim = None;
        let mut merged = 0;
        let key = self
            .roster
            .key(peer.as_str())
            .await
            .with_context(|| format!("{peer} is not in the likes roster"))?;
        for _ in 0..PULL_PAGES_MAX {
            let request =
                SyncRequest { node: self.node.to_string(), vector: vector.clone(), after };
            let payload = Bytes::from(serde_json::to_vec(&request)?);
            let message =
                self.client.request_message(&subject::sync(peer.as_str()), payload).await?;
            let digest = trust::page_digest(peer.as_str(), &message.payload);
            if !trust::verify(&key, &digest, message.headers.as_ref()) {
                lock(&self.status).refused += 1;
                anyhow::bail!("a sync page that {peer} did not sign");
            }
            let reply = crate::service::from_object::<SyncReply>(&message.payload)
                .map_err(|e| anyhow::anyhow!("{peer} sent a bad page: {e}"))
                .and_then(|reply| {
                    anyhow::ensure!(
                        reply.node == peer.as_str(),
                        "{peer} answered as {}",
                        reply.node
                    );
                    Ok(reply)
                })
                .inspect_err(|_| lock(&self.status).refused += 1)?;
            let claim = claim.get_or_insert(reply.vector);
            let mut records = Vec::with_capacity(reply.counters.len() + reply.users.len());
            for counter in reply.counters {
                records.extend(Record::try_from(counter).ok());
            }
            for user in reply.users {
                records.extend(Record::try_from(user).ok());
            }
            // Records and coverage of nodes that do not exist are not taken from anyone.
            let mut known = Vec::with_capacity(records.len());
            for record in records {
                if self.roster.key(record.dot().0.as_str()).await.is_some() {
                    known.push(record);
                } else {
                    lock(&self.status).refused += 1;
                }
            }
            let records = known;
            merged += records.len();
            let last = reply.next.is_none();
            let (done, merged_page) = oneshot::channel();
            let claim = if last {
                let mut vector = vector_from_wire(claim)?;
                let mut unknown = Vec::new();
                for origin in vector.keys() {
                    if self.roster.key(origin.as_str()).await.is_none() {
                        unknown.push(origin.clone());
                    }
                }
                for origin in unknown {
                    vector.remove(&origin);
                }
                Some(vector)
            } else {
                None
            };
            let envelope = Envelope::Merge { records, claim, peer: peer.clone(), done };
            if self.queue.send_waiting(envelope).await.is_err() {
                anyhow::bail!("the owner's queue stayed full");
            }
            merged_page.await.context("the page was not merged")?;
            if last {
                tracing::debug!(%peer, merged, "pulled");
                return Ok(merged);
            }
            after = reply.next;
        }
        anyhow::bail!("more than {PULL_PAGES_MAX} pages; the rest comes with the next pull")
    }
}

/// The peers whose coverage reaches writes this node's does not.
async fn peers_ahead(client: &AgoraClient, node: &NodeId, status: &Status) -> Vec<NodeId> {
    match client.likes_digests(DIGEST_WINDOW, &[], None).await {
        Ok(digests) => ahead_of(node, status, digests),
        Err(error) => {
            tracing::warn!(%error, "cannot gather the other nodes' digests");
            Vec::new()
        }
    }
}

/// Of `digests`, the peers whose coverage reaches writes this node's does not.
fn ahead_of(node: &NodeId, status: &Status, digests: Vec<NodeDigest>) -> Vec<NodeId> {
    let mine = vector_from_wire(&lock(status).vector).unwrap_or_default();
    digests
        .into_iter()
        .filter(|digest| digest.node != node.as_str())
        .filter_map(|digest| {
            let theirs = vector_from_wire(&digest.vector).ok()?;
            core_likes::lacks(&mine, &theirs).then(|| NodeId::parse(&digest.node).ok()).flatten()
        })
        .collect()
}

/// After the connection comes back (a partition healed), pulls from every peer that is ahead.
async fn pull_after_reconnect(
    client: Client,
    node: NodeId,
    status: Status,
    orders: mpsc::Sender<NodeId>,
) {
    let agora = AgoraClient::new(client.clone());
    let mut was_connected = true;
    loop {
        tokio::time::sleep(RECONNECT_POLL).await;
        let connected = client.connection_state() == async_nats::connection::State::Connected;
        if connected && !was_connected {
            tracing::info!("reconnected; pulling from the nodes that are ahead");
            for peer in peers_ahead(&agora, &node, &status).await {
                orders.try_send(peer).ok();
            }
        }
        was_connected = connected;
    }
}

/// The leader bucket: `max_age` is the lease, so a leader that stops renewing loses its key.
async fn leader_bucket(client: &Client, config: &LikesConfig) -> anyhow::Result<kv::Store> {
    let js = jetstream::new(client.clone());
    let wanted = kv::Config {
        bucket: subject::LEADER_BUCKET.to_owned(),
        description: "agora-likes leader lease".to_owned(),
        history: 1,
        max_age: Duration::from_millis(config.lease_ms),
        storage: jetstream::stream::StorageType::Memory,
        num_replicas: config.kv_replicas,
        ..kv::Config::default()
    };
    match js.create_key_value(wanted).await {
        Ok(store) => Ok(store),
        Err(error) => {
            // It exists with another lease (another node's flags): use it as it is.
            let store = js.get_key_value(subject::LEADER_BUCKET).await.map_err(|e| {
                anyhow::anyhow!("cannot create ({error}) or open ({e}) the leader bucket")
            })?;
            tracing::warn!(%error, "using the existing leader bucket as it is");
            Ok(store)
        }
    }
}

/// This node's leadership while it lasts.
struct Leadership {
    lease: LeaderLease,
    /// This node's own pull orders go straight to its syncer.
    orders: mpsc::Sender<NodeId>,
    revision: u64,
    renew_at_ms: u64,
    nodes: Arc<Mutex<NodesReply>>,
    answering: tokio::task::JoinHandle<()>,
    previous: BTreeMap<NodeId, Vector>,
    next_round_ms: u64,
}

/// Campaigns for the leader lease forever; while leading, renews it, answers
/// `agora.likes.nodes` and runs the anti-entropy rounds.
async fn lead(
    client: Client,
    node: NodeId,
    config: LikesConfig,
    status: Status,
    orders: mpsc::Sender<NodeId>,
) {
    let bucket = loop {
        match leader_bucket(&client, &config).await {
            Ok(bucket) => break bucket,
            Err(error) => {
                tracing::warn!(%error, "no leader bucket (is JetStream on?); retrying");
                tokio::time::sleep(Duration::from_millis(config.lease_ms)).await;
            }
        }
    };
    let max_age = match bucket.status().await {
        Ok(bucket) => bucket.info.config.max_age,
        Err(_) => Duration::from_millis(config.lease_ms),
    };
    let lease_ms = u64::try_from(max_age.as_millis()).unwrap_or(config.lease_ms).max(300);
    let renew_ms = lease_ms / 3;
    let poll = Duration::from_millis((lease_ms / 10).max(30));
    let agora = AgoraClient::new(client.clone());
    let mut leadership: Option<Leadership> = None;
    loop {
        tokio::time::sleep(poll).await;
        let now = now_ms();
        if let Some(lead) = &mut leadership {
            if now >= lead.renew_at_ms {
                let value = serde_json::to_vec(&lead.lease).unwrap_or_default();
                match bucket.update(subject::LEADER_KEY, value.into(), lead.revision).await {
                    Ok(revision) => {
                        lead.revision = revision;
                        lead.renew_at_ms = now + renew_ms;
                    }
                    Err(error) => {
                        tracing::warn!(%error, epoch = lead.lease.epoch, "lost the leader lease");
                        if let Some(lead) = leadership.take() {
                            lead.answering.abort();
                        }
                        lock(&status).leader = false;
                        continue;
                    }
                }
            }
            if now >= lead.next_round_ms {
                lead.next_round_ms = now + config.sync_interval_ms;
                round(&agora, &client, &status, lead).await;
            }
            continue;
        }
        // Not leading: take the lease if nobody holds it (or this node held it before a restart).
        let mut candidate = LeaderLease { node: node.to_string(), epoch: 0, since_ms: now };
        let created = match bucket.entry(subject::LEADER_KEY).await {
            Ok(Some(entry)) if entry.operation == kv::Operation::Put => {
                match serde_json::from_slice::<LeaderLease>(&entry.value) {
                    Ok(lease) if lease.node == node.as_str() => {
                        bucket.update(subject::LEADER_KEY, Bytes::new(), entry.revision).await.ok()
                    }
                    _ => None,
                }
            }
            Ok(_) => bucket.create(subject::LEADER_KEY, Bytes::new()).await.ok(),
            Err(_) => None,
        };
        let Some(epoch) = created else { continue };
        candidate.epoch = epoch;
        let value = serde_json::to_vec(&candidate).unwrap_or_default();
        let Ok(revision) = bucket.update(subject::LEADER_KEY, value.into(), epoch).await else {
            continue;
        };
        tracing::info!(epoch, "leading the likes nodes");
        lock(&status).leader = true;
        let nodes = Arc::new(Mutex::new(NodesReply {
            leader: candidate.clone(),
            as_of_ms: now,
            nodes: Vec::new(),
        }));
        let mut lead = Leadership {
            lease: candidate,
            orders: orders.clone(),
            revision,
            renew_at_ms: now + renew_ms,
            nodes: nodes.clone(),
            answering: tokio::spawn(async {}),
            previous: BTreeMap::new(),
            next_round_ms: now + config.sync_interval_ms,
        };
        // The first round before answering: `nodes` is never empty.
        round(&agora, &client, &status, &mut lead).await;
        lead.answering = tokio::spawn(answer_nodes(client.clone(), status.clone(), nodes));
        leadership = Some(lead);
    }
}

/// Every live node's digest, this one's included: gathered for [`DIGEST_WINDOW`], or until
/// `peers` other nodes answered (`Some(0)`: only this node's).
async fn gather_digests(
    agora: &AgoraClient,
    status: &Status,
    peers: Option<usize>,
) -> Result<Vec<NodeDigest>, ClientError> {
    let mut digests = match peers {
        Some(0) => Vec::new(),
        peers => agora.likes_digests(DIGEST_WINDOW, &[], peers).await?,
    };
    // A connection without echo does not hear its own digest request.
    let own = lock(status).clone();
    if !digests.iter().any(|d| d.node == own.node) {
        digests.push(own);
        digests.sort_by(|a, b| a.node.cmp(&b.node));
    }
    Ok(digests)
}

/// One anti-entropy round: gather every node's digest, order the lagging ones to pull.
async fn round(agora: &AgoraClient, client: &Client, status: &Status, lead: &mut Leadership) {
    let as_of_ms = now_ms();
    let digests = match gather_digests(agora, status, None).await {
        Ok(digests) => digests,
        Err(error) => {
            tracing::warn!(%error, "round: cannot gather digests");
            return;
        }
    };
    let current: BTreeMap<NodeId, Vector> = digests
        .iter()
        .filter_map(|d| Some((NodeId::parse(&d.node).ok()?, vector_from_wire(&d.vector).ok()?)))
        .collect();
    for (node, from) in core_likes::pull_plan(&current, &lead.previous) {
        let order = PullOrder {
            leader: lead.lease.node.clone(),
            epoch: lead.lease.epoch,
            from: from.iter().map(NodeId::to_string).collect(),
        };
        tracing::debug!(%node, from = ?order.from, "round: ordering a pull");
        if node.as_str() == lead.lease.node {
            for peer in from {
                lead.orders.try_send(peer).ok();
            }
            continue;
        }
        if let Ok(payload) = serde_json::to_vec(&order) {
            client.publish(subject::pull(node.as_str()), payload.into()).await.ok();
        }
    }
    lead.previous = current;
    let mut nodes = lead.nodes.lock().unwrap_or_else(|p| p.into_inner());
    nodes.as_of_ms = as_of_ms;
    nodes.nodes = digests;
}

/// Answers `agora.likes.nodes` while this node leads, with digests gathered for the request
/// (as of when it came), so a like answered before it shows. It waits until every node of the
/// last round answered, or [`DIGEST_WINDOW`]; if gathering fails, the last round answers.
async fn answer_nodes(client: Client, status: Status, nodes: Arc<Mutex<NodesReply>>) {
    let Ok(mut requests) = client.subscribe(subject::NODES_SUBJECT).await else {
        tracing::error!("cannot subscribe to {}", subject::NODES_SUBJECT);
        return;
    };
    let agora = AgoraClient::new(client.clone());
    while let Some(message) = requests.next().await {
        let Some(reply) = message.reply else { continue };
        if let Err(error) = crate::service::no_fields(&message.payload) {
            publish_reply(&client, reply, Err(error)).await.ok();
            continue;
        }
        let (mut answer, known) = {
            let last = nodes.lock().unwrap_or_else(|p| p.into_inner());
            (last.clone(), last.nodes.len())
        };
        let as_of_ms = now_ms();
        // The last round's nodes less this one (its connection does not hear itself).
        let peers = known.saturating_sub(1);
        if let Ok(digests) = gather_digests(&agora, &status, Some(peers)).await {
            answer.as_of_ms = as_of_ms;
            answer.nodes = digests;
        }
        publish_reply(&client, reply, encode(&answer)).await.ok();
    }
}

/// On a graceful stop, gives the lease up at once (if this node holds it).
async fn resign(client: &Client, node: &NodeId) {
    let Ok(bucket) = jetstream::new(client.clone()).get_key_value(subject::LEADER_BUCKET).await
    else {
        return;
    };
    if let Ok(Some(entry)) = bucket.entry(subject::LEADER_KEY).await {
        let ours = serde_json::from_slice::<LeaderLease>(&entry.value)
            .is_ok_and(|lease| lease.node == node.as_str());
        if ours && entry.operation == kv::Operation::Put {
            bucket.delete_expect_revision(subject::LEADER_KEY, Some(entry.revision)).await.ok();
            tracing::info!("gave up the leader lease");
        }
    }
}

/// The subject for `item`: an item that is not one subject token would reach no node (or the
/// wrong one), so it is refused here with the error a node would give.
fn item_subject(item: &str, subject: fn(&str) -> String) -> Result<String, ClientError> {
    ItemId::parse(item).map_err(|error| ClientError::Service(error.into()))?;
    Ok(subject(item))
}

impl AgoraClient {
    /// Likes `item` (anonymously, or once per `user`).
    pub async fn like(&self, item: &str, user: Option<&str>) -> Result<LikeCount, ClientError> {
        let request = LikeRequest { user: user.map(str::to_owned) };
        self.request(&item_subject(item, subject::like)?, &request).await
    }

    /// Takes `user`'s like of `item` back.
    pub async fn unlike(&self, item: &str, user: &str) -> Result<LikeCount, ClientError> {
        let request = LikeRequest { user: Some(user.to_owned()) };
        self.request(&item_subject(item, subject::unlike)?, &request).await
    }

    /// The count of `item` (and whether `user` likes it).
    pub async fn like_count(
        &self,
        item: &str,
        user: Option<&str>,
    ) -> Result<LikeCount, ClientError> {
        let request = LikeRequest { user: user.map(str::to_owned) };
        self.request(&item_subject(item, subject::count)?, &request).await
    }

    pub async fn top_likes(&self, limit: usize) -> Result<TopReply, ClientError> {
        self.request(subject::TOP_SUBJECT, &TopRequest { limit: Some(limit) }).await
    }

    /// The live nodes and the leader, from the leader.
    pub async fn like_nodes(&self) -> Result<NodesReply, ClientError> {
        self.request_bytes(subject::NODES_SUBJECT, Bytes::new()).await.and_then(|reply| {
            serde_json::from_slice(&reply)
                .map_err(|e| ClientError::Transport(format!("unexpected nodes reply: {e}")))
        })
    }

    /// Every node's digest (with the counts of `items`), gathered for `within` or until
    /// `expected` nodes answered.
    pub async fn likes_digests(
        &self,
        within: Duration,
        items: &[String],
        expected: Option<usize>,
    ) -> Result<Vec<NodeDigest>, ClientError> {
        let transport = |e: &dyn std::fmt::Display| ClientError::Transport(e.to_string());
        let client = self.nats();
        let inbox = client.new_inbox();
        let mut replies = client.subscribe(inbox.clone()).await.map_err(|e| transport(&e))?;
        let payload = serde_json::to_vec(&DigestRequest { items: items.to_vec() })
            .map_err(|e| transport(&e))?;
        client
            .publish_with_reply(subject::DIGEST_SUBJECT, inbox, payload.into())
            .await
            .map_err(|e| transport(&e))?;
        client.flush().await.map_err(|e| transport(&e))?;
        let mut digests = Vec::new();
        let deadline = tokio::time::Instant::now() + within;
        while let Ok(Some(message)) = tokio::time::timeout_at(deadline, replies.next()).await {
            if let Ok(digest) = serde_json::from_slice::<NodeDigest>(&message.payload) {
                digests.push(digest);
            }
            if expected.is_some_and(|n| digests.len() >= n) {
                break;
            }
        }
        digests.sort_by(|a, b| a.node.cmp(&b.node));
        Ok(digests)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_requests_are_refused_before_the_owner() {
        let cases: [(&str, &str, &str); 11] = [
            (subject::LIKE, "agora.likes.like.p", "not json"),
            (subject::LIKE, "agora.likes.like.p", r#"{"user":""}"#),
            (subject::LIKE, "agora.likes.like.p", r#"{"user":"a b"}"#),
            (subject::LIKE, "agora.likes.like.p", r#"{"user":"a","extra":1}"#),
            (subject::LIKE, "agora.likes.like.p", r#"{"user":7}"#),
            (subject::UNLIKE, "agora.likes.unlike.p", ""),
            (subject::COUNT, "agora.likes.count.p", r#"{"who":"a"}"#),
            (subject::TOP, subject::TOP_SUBJECT, r#"{"limit":0}"#),
            (subject::TOP, subject::TOP_SUBJECT, r#"{"limit":100000}"#),
            (subject::SYNC, "agora.likes.sync.n1", r#"{"node":"n.2","vector":{}}"#),
            (subject::SYNC, "agora.likes.sync.n1", r#"{"node":"n2","vector":{"a b":1}}"#),
        ];
        for (endpoint, subject, payload) in cases {
            let error = parse_request(endpoint, subject, payload.as_bytes()).expect_err(payload);
            assert_eq!(error.code, ErrorCode::InvalidRequest, "{endpoint} {payload}");
        }
        let long_item = format!("agora.likes.like.{}", "i".repeat(65));
        assert!(parse_request(subject::LIKE, &long_item, b"").is_err());
        assert!(matches!(
            parse_request(subject::LIKE, "agora.likes.like.p", b""),
            Ok(Command::Like { user: None, liked: true, .. })
        ));
        assert!(matches!(
            parse_request(subject::UNLIKE, "agora.likes.unlike.p", br#"{"user":"a@b.c"}"#),
            Ok(Command::Like { user: Some(_), liked: false, .. })
        ));
        assert!(matches!(
            parse_request(subject::TOP, subject::TOP_SUBJECT, b""),
            Ok(Command::Top { limit: TOP_LIMIT_DEFAULT })
        ));
    }

    #[test]
    fn events_are_checked_and_own_events_skipped() {
        let me = NodeId::parse("me").expect("valid");
        let event = |origin: &str, batch: u64, parts: u32| {
            serde_json::to_vec(&LikeEvent {
                item: "p".into(),
                count: 3,
                origin: origin.into(),
                batch,
                parts,
                total: Some(2),
                users: vec![UserLike { user: "u".into(), liked: true, ts: 9 }],
            })
            .expect("encodes")
        };
        let Ok(Some((_, _, records))) = parse_event(&me, &event("n2", 4, 1)) else {
            panic!("a peer's event");
        };
        assert_eq!(records.len(), 2);
        assert!(matches!(parse_event(&me, &event("me", 4, 1)), Ok(None)));
        assert!(parse_event(&me, &event("n2", 0, 1)).is_err());
        assert!(parse_event(&me, &event("n2", 4, 0)).is_err());
        assert!(parse_event(&me, &event("n 2", 4, 1)).is_err());
        assert!(parse_event(&me, b"{}").is_err());
    }

    #[test]
    fn digest_requests_are_bounded() {
        assert!(parse_digest(b"").expect("empty is all").is_empty());
        let many = serde_json::json!({ "items": vec!["p"; DIGEST_ITEMS_MAX + 1] }).to_string();
        assert!(parse_digest(many.as_bytes()).is_err());
        assert!(parse_digest(br#"{"items":["a.b"]}"#).is_err());
    }
}
