//! The likes nodes' JSON payloads: requests, events, digests, anti-entropy pages.

use std::collections::BTreeMap;

use agora_core::likes::{Counter, ItemId, NodeId, Record, Register, UserId, Vector};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::ServiceError;
use crate::pattern;

// ---------------------------------------------------------------------------------------------
// Likes (`agora-likes`)
// ---------------------------------------------------------------------------------------------

/// Body of `agora.likes.like.<item>`, `agora.likes.unlike.<item>` and
/// `agora.likes.count.<item>` (all optional: an empty body is an anonymous like, or a plain
/// count).
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LikeRequest {
    /// Makes a like idempotent per user; needed to unlike; with a count, says whether this
    /// user likes the item.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(pattern::LIKES_USER))]
    pub user: Option<String>,
}

/// Reply of like, unlike and count: the item's count on the node that answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LikeCount {
    pub item: String,
    pub count: u64,
    /// With a user: whether that user likes the item now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liked: Option<bool>,
    /// Like and unlike: whether the request changed anything (a repeated like does not).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changed: Option<bool>,
    /// The node that answered.
    pub node: String,
}

/// Body of `agora.likes.top` (optional).
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TopRequest {
    /// Default 10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1_000))]
    pub limit: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemCount {
    pub item: String,
    pub count: u64,
}

/// Reply of `agora.likes.top`: the most-liked items, most first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopReply {
    pub items: Vec<ItemCount>,
    /// How many items the node holds in all.
    pub items_total: u64,
    pub node: String,
}

/// One user's like in an event or a sync page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserLike {
    pub user: String,
    pub liked: bool,
    /// The write's stamp (last writer wins; ties by origin node id).
    pub ts: u64,
}

/// Published on `agora.likes.events.<item>` for each item a node's batch changed: the node's
/// new records for that item, and the count as that node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LikeEvent {
    pub item: String,
    /// The item's count on the origin node after the batch.
    pub count: u64,
    /// The node that took the likes.
    pub origin: String,
    /// The origin's batch number, and how many events (items) the batch has.
    pub batch: u64,
    pub parts: u32,
    /// The origin's anonymous-like counter for the item, if the batch changed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
    /// Users whose like the batch changed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<UserLike>,
}

/// Where a sync page ended: the next page has `origin`'s records after `batch`, then the
/// following origins'.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncCursor {
    pub origin: String,
    pub batch: u64,
}

/// Body of `agora.likes.sync.<node>`: "send me every record your coverage has and mine
/// (`vector`) does not".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncRequest {
    /// The asking node.
    pub node: String,
    pub vector: BTreeMap<String, u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<SyncCursor>,
}

/// An anonymous-like counter record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CounterRecord {
    pub item: String,
    pub node: String,
    pub total: u64,
    pub batch: u64,
}

/// A user-like register record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserRecord {
    pub item: String,
    pub user: String,
    pub liked: bool,
    pub ts: u64,
    pub origin: String,
    pub batch: u64,
}

/// A page of records, with the answering node's coverage (the asker claims it once the last
/// page, `next: null`, is merged).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SyncReply {
    pub node: String,
    pub vector: BTreeMap<String, u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub counters: Vec<CounterRecord>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<UserRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<SyncCursor>,
}

/// Body of `agora.likes.digest` (optional): items whose counts each node should include.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DigestRequest {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub items: Vec<String>,
}

/// One node's state and load: its reply to `agora.likes.digest`, its entry in
/// `agora.likes.nodes`, and its `$SRV.STATS` data.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NodeDigest {
    pub node: String,
    /// Whether the node holds the leader lease.
    pub leader: bool,
    pub started_ms: u64,
    /// Coverage: per origin node, the batch up to which this node has every write.
    pub vector: BTreeMap<String, u64>,
    /// Items held, user likes held, and the sum of all counts.
    pub items: u64,
    pub users: u64,
    pub likes: u64,
    /// Likes and unlikes this node took since it started, and per second lately.
    pub accepted: u64,
    pub accepted_per_sec: u64,
    /// Work queued for the node's owner thread.
    pub queue: u64,
    /// The last anti-entropy pull that completed: when, and from which node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_from: Option<String>,
    pub syncs: u64,
    /// Batches, sync pages and records from peers this node refused: from a node not in the
    /// roster, not signed by their node, or claiming more likes than a batch can hold.
    #[serde(default)]
    pub refused: u64,
    /// The counts asked for in the digest request.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub counts: BTreeMap<String, u64>,
}

/// The leader lease as stored in the KV bucket, and as `agora.likes.nodes` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderLease {
    pub node: String,
    /// Increases with every new leadership (the KV revision that created it).
    pub epoch: u64,
    pub since_ms: u64,
}

/// Reply of `agora.likes.nodes` (answered by the leader): the live nodes of its last round.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodesReply {
    pub leader: LeaderLease,
    /// When the round that gathered `nodes` ran.
    pub as_of_ms: u64,
    pub nodes: Vec<NodeDigest>,
}

/// Published by the leader on `agora.likes.pull.<node>`: pull from these peers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PullOrder {
    pub leader: String,
    pub epoch: u64,
    pub from: Vec<String>,
}

impl TryFrom<CounterRecord> for Record {
    type Error = ServiceError;
    fn try_from(wire: CounterRecord) -> Result<Self, ServiceError> {
        Ok(Record::Counter {
            item: ItemId::parse(&wire.item)?,
            node: NodeId::parse(&wire.node)?,
            counter: Counter { total: wire.total, batch: wire.batch },
        })
    }
}

impl TryFrom<UserRecord> for Record {
    type Error = ServiceError;
    fn try_from(wire: UserRecord) -> Result<Self, ServiceError> {
        Ok(Record::User {
            item: ItemId::parse(&wire.item)?,
            user: UserId::parse(&wire.user)?,
            register: Register {
                liked: wire.liked,
                ts_ms: wire.ts,
                origin: NodeId::parse(&wire.origin)?,
                batch: wire.batch,
            },
        })
    }
}

impl LikeEvent {
    /// The records the event carries (all of them with the dot `(origin, batch)`).
    pub fn records(&self) -> Result<(NodeId, Vec<Record>), ServiceError> {
        let item = ItemId::parse(&self.item)?;
        let origin = NodeId::parse(&self.origin)?;
        let mut records = Vec::with_capacity(self.users.len() + 1);
        if let Some(total) = self.total {
            let counter = Counter { total, batch: self.batch };
            records.push(Record::Counter { item: item.clone(), node: origin.clone(), counter });
        }
        for like in &self.users {
            let register = Register {
                liked: like.liked,
                ts_ms: like.ts,
                origin: origin.clone(),
                batch: self.batch,
            };
            let user = UserId::parse(&like.user)?;
            records.push(Record::User { item: item.clone(), user, register });
        }
        Ok((origin, records))
    }
}

/// A version vector on the wire (node ids as keys).
pub fn vector_to_wire(vector: &Vector) -> BTreeMap<String, u64> {
    vector.iter().map(|(node, batch)| (node.to_string(), *batch)).collect()
}

/// A version vector from the wire; every key must be a node id.
pub fn vector_from_wire(wire: &BTreeMap<String, u64>) -> Result<Vector, ServiceError> {
    wire.iter().map(|(node, batch)| Ok((NodeId::parse(node)?, *batch))).collect()
}
