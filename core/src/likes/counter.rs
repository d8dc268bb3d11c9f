//! Likes: a count per item that any number of nodes take likes for and always agree on.
//!
//! ## What a count means
//! - An **anonymous like** (no user) adds one to the item for good. Nobody can tell whose it
//!   was, so it cannot be taken back: `unlike` without a user is refused
//!   ([`LikesError::AnonymousUnlike`]).
//! - A **user's like** counts once per item, however often it is sent, and on whichever nodes.
//!   `unlike` by that user takes back that user's like only; unliking what one does not like
//!   changes nothing. So no intent can take a count below zero.
//! - `count(item)` = the anonymous likes + the users who like it now.
//!
//! ## How nodes agree (a state-based CRDT)
//! [`LikeCounter`] is one node's replica. Its state is a set of records, each merged by a rule
//! that does not care about order or repetition:
//! - a **counter** per (item, node): the anonymous likes that node took. Only that node
//!   increments it; merging keeps the larger total (a grow-only counter).
//! - a **register** per (item, user): liked or not, stamped `(ts_ms, origin)`. A node writing it
//!   stamps `max(now_ms, current ts + 1)`, so a write always beats every write its node has seen;
//!   merging keeps the larger stamp (last writer wins; ties broken by origin node id).
//!
//! Every write carries a **dot** `(origin, batch)`: the node that made it and the number of the
//! group of writes (a batch) it was made in. Batches count up per origin. A node's
//! **coverage** (its version vector) says, per origin, the batch up to which it has every write
//! or one that beats it. Batches arrive whole and in order per origin (the shell assembles a
//! batch's event parts and checks its origin's signature first); the next batch is covered
//! when it arrives ([`LikeCounter::observe`]). A missed batch is a gap: the node asks a peer
//! for every record whose dot its coverage does not reach, merges them and claims the peer's
//! coverage ([`LikeCounter::claim`]). [`pull_plan`] is the leader's periodic round: who should
//! pull from whom.
//!
//! ## What a replica takes from others
//! Only the origin increments its counters, and one batch holds at most [`BATCH_WRITES_MAX`]
//! writes, so a counter rises by at most that much per batch: [`LikeCounter::admit`] refuses a
//! record claiming more (a buggy or hostile peer cannot add a million likes in one event).
//! Which nodes exist, and that a batch really comes from its origin, the shell checks.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;

/// Most writes (likes and unlikes) one batch of one node holds: a counter rises by at most
/// this much per batch.
pub const BATCH_WRITES_MAX: u64 = 1_024;

/// Longest item id, user id and node id, in bytes (all ASCII).
pub const ITEM_BYTES_MAX: usize = 64;
pub const USER_BYTES_MAX: usize = 64;
pub const NODE_BYTES_MAX: usize = 32;

/// Why a like, unlike or query was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LikesError {
    #[error("item {0:?} is not 1..={ITEM_BYTES_MAX} characters of A-Z a-z 0-9 _ - :")]
    InvalidItem(String),
    #[error("user {0:?} is not 1..={USER_BYTES_MAX} characters of A-Z a-z 0-9 _ - : . @ +")]
    InvalidUser(String),
    #[error("node id {0:?} is not 1..={NODE_BYTES_MAX} characters of A-Z a-z 0-9 _ -")]
    InvalidNode(String),
    #[error("an unlike needs a user: only a user's own like can be taken back")]
    AnonymousUnlike,
    #[error("this node holds {0} items, its limit: no new items")]
    TooManyItems(usize),
    #[error("this node holds {0} user likes, its limit: no new user likes")]
    TooManyUsers(usize),
    #[error(
        "{node}'s counter of {item} cannot rise from {from} (batch {from_batch}) to {to} \
         (batch {to_batch}): at most {BATCH_WRITES_MAX} per batch"
    )]
    Implausible { item: String, node: String, from: u64, from_batch: u64, to: u64, to_batch: u64 },
}

/// An item: 1..=64 characters of `[A-Za-z0-9_:-]`, so always one NATS subject token.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ItemId(String);

impl ItemId {
    pub fn parse(text: &str) -> Result<Self, LikesError> {
        if crate::token::is_word_with(text, ITEM_BYTES_MAX, b":") {
            Ok(Self(text.to_owned()))
        } else {
            Err(LikesError::InvalidItem(text.chars().take(80).collect()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A user: 1..=64 characters of `[A-Za-z0-9_:.@+-]` (names, emails, ids).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId(String);

impl UserId {
    pub fn parse(text: &str) -> Result<Self, LikesError> {
        if crate::token::is_word_with(text, USER_BYTES_MAX, b":.@+") {
            Ok(Self(text.to_owned()))
        } else {
            Err(LikesError::InvalidUser(text.chars().take(80).collect()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A node: 1..=32 characters of `[A-Za-z0-9_-]` (one subject token). Cheap to clone: every
/// register names its origin.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(Arc<str>);

impl NodeId {
    pub fn parse(text: &str) -> Result<Self, LikesError> {
        if crate::token::is_word(text, NODE_BYTES_MAX) {
            Ok(Self(Arc::from(text)))
        } else {
            Err(LikesError::InvalidNode(text.chars().take(80).collect()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

macro_rules! display_as_str {
    ($($id:ty),*) => {$(
        impl fmt::Display for $id {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    )*};
}
display_as_str!(ItemId, UserId, NodeId);

/// A version vector: per origin node, the batch up to which a replica has every write.
pub type Vector = BTreeMap<NodeId, u64>;

/// The anonymous likes one node took for one item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counter {
    pub total: u64,
    /// The batch of the last increment (the counter's node is its origin).
    pub batch: u64,
}

/// One user's like of one item, last writer wins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Register {
    pub liked: bool,
    pub ts_ms: u64,
    pub origin: NodeId,
    pub batch: u64,
}

impl Register {
    /// The merge order: stamp, then origin (then the rest, so that even two malformed writes
    /// with one stamp resolve the same way everywhere).
    fn key(&self) -> (u64, &NodeId, u64, bool) {
        (self.ts_ms, &self.origin, self.batch, self.liked)
    }
}

/// One record of the replicated state, as events and anti-entropy carry it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    Counter { item: ItemId, node: NodeId, counter: Counter },
    User { item: ItemId, user: UserId, register: Register },
}

impl Record {
    pub fn item(&self) -> &ItemId {
        match self {
            Self::Counter { item, .. } | Self::User { item, .. } => item,
        }
    }

    /// The write's dot: (origin, batch).
    pub fn dot(&self) -> (&NodeId, u64) {
        match self {
            Self::Counter { node, counter, .. } => (node, counter.batch),
            Self::User { register, .. } => (&register.origin, register.batch),
        }
    }
}

/// One item's state on one replica.
#[derive(Debug, Clone, Default)]
pub struct Item {
    counters: BTreeMap<NodeId, Counter>,
    users: HashMap<UserId, Register>,
    /// Users whose register says liked.
    liked: u64,
    /// The sum of the counters.
    anonymous: u64,
}

impl Item {
    pub fn count(&self) -> u64 {
        self.anonymous.saturating_add(self.liked)
    }

    pub fn anonymous(&self) -> u64 {
        self.anonymous
    }

    pub fn users(&self) -> u64 {
        self.liked
    }

    /// Keeps the larger total. Returns whether it changed.
    fn merge_counter(&mut self, node: &NodeId, counter: Counter) -> bool {
        let current = self.counters.get(node).map_or(0, |c| c.total);
        if counter.total <= current {
            return false;
        }
        self.anonymous = self.anonymous.saturating_add(counter.total - current);
        self.counters.insert(node.clone(), counter);
        true
    }

    /// Keeps the later register. Returns whether it changed, and whether the user is new here.
    fn merge_register(&mut self, user: &UserId, register: Register) -> (bool, bool) {
        let was_liked = match self.users.get(user) {
            Some(current) if current.key() >= register.key() => return (false, false),
            Some(current) => Some(current.liked),
            None => None,
        };
        match (was_liked.unwrap_or(false), register.liked) {
            (false, true) => self.liked += 1,
            (true, false) => self.liked = self.liked.saturating_sub(1),
            _ => {}
        }
        self.users.insert(user.clone(), register);
        (true, was_liked.is_none())
    }
}

/// Limits on what a node takes from clients (replicated writes are always merged: refusing
/// them would keep the replicas apart).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub items_max: usize,
    /// (item, user) registers.
    pub users_max: usize,
}

/// What a like or unlike did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The item's count on this replica afterwards.
    pub count: u64,
    /// For a user's request: whether the user likes the item now.
    pub liked: Option<bool>,
    /// The write to persist and publish; `None` when nothing changed (a repeated like, an
    /// unlike of what the user does not like).
    pub record: Option<Record>,
}

/// What a peer's whole batch told [`LikeCounter::observe`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observed {
    /// A batch already covered (a duplicate, or one a pull brought): nothing to do.
    Old,
    /// The batch was the next one and is now covered.
    Covered(u64),
    /// A batch before it was missed: pull from the origin.
    Gap,
}

/// One node's replica of every item's likes.
#[derive(Debug, Clone)]
pub struct LikeCounter {
    node: NodeId,
    limits: Limits,
    items: HashMap<ItemId, Item>,
    registers: usize,
    total: u64,
    coverage: Vector,
    /// The batch being written, if one is open.
    open: Option<u64>,
    /// Whether the open batch wrote anything.
    wrote: bool,
    /// Per origin, the latest batch that arrived beyond a gap (covered once the gap is).
    beyond: HashMap<NodeId, u64>,
}

impl LikeCounter {
    pub fn new(node: NodeId, limits: Limits) -> Self {
        Self {
            node,
            limits,
            items: HashMap::new(),
            registers: 0,
            total: 0,
            coverage: Vector::new(),
            open: None,
            wrote: false,
            beyond: HashMap::new(),
        }
    }

    pub fn node(&self) -> &NodeId {
        &self.node
    }

    /// The last batch this node wrote.
    pub fn batch(&self) -> u64 {
        self.covered(&self.node)
    }

    pub fn covered(&self, origin: &NodeId) -> u64 {
        self.coverage.get(origin).copied().unwrap_or(0)
    }

    /// The coverage; its keys are every origin this replica holds records of.
    pub fn vector(&self) -> &Vector {
        &self.coverage
    }

    pub fn item(&self, item: &ItemId) -> Option<&Item> {
        self.items.get(item)
    }

    pub fn count(&self, item: &ItemId) -> u64 {
        self.items.get(item).map_or(0, Item::count)
    }

    /// Whether `user` likes `item` on this replica.
    pub fn likes(&self, item: &ItemId, user: &UserId) -> bool {
        self.items.get(item).and_then(|i| i.users.get(user)).is_some_and(|r| r.liked)
    }

    pub fn items_len(&self) -> usize {
        self.items.len()
    }

    pub fn registers_len(&self) -> usize {
        self.registers
    }

    /// The sum of every item's count.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// The `limit` most-liked items, most first (ties by item id); an item nobody likes (any
    /// more) is not among them.
    pub fn top(&self, limit: usize) -> Vec<(&ItemId, u64)> {
        let mut all: Vec<(&ItemId, u64)> = self
            .items
            .iter()
            .map(|(id, item)| (id, item.count()))
            .filter(|(_, count)| *count > 0)
            .collect();
        let order = |a: &(&ItemId, u64), b: &(&ItemId, u64)| b.1.cmp(&a.1).then(a.0.cmp(b.0));
        if limit < all.len() {
            all.select_nth_unstable_by(limit, order);
            all.truncate(limit);
        }
        all.sort_unstable_by(order);
        all
    }

    /// Loads a stored record (no limits, no outputs).
    pub fn restore(&mut self, record: Record) {
        self.merge(record);
    }

    /// Loads stored coverage.
    pub fn restore_coverage(&mut self, origin: NodeId, batch: u64) {
        let have = self.coverage.entry(origin).or_default();
        *have = (*have).max(batch);
    }

    /// Opens the next batch (if none is open) and returns its number. Writes until
    /// [`Self::finish`] carry it.
    pub fn begin(&mut self) -> u64 {
        *self.open.get_or_insert_with(|| {
            self.wrote = false;
            self.coverage.get(&self.node).copied().unwrap_or(0) + 1
        })
    }

    /// Closes the open batch: `Some(batch)` if it wrote anything (the node's coverage of itself
    /// is then that batch), `None` if it wrote nothing (the number is used again).
    pub fn finish(&mut self) -> Option<u64> {
        let batch = self.open.take()?;
        if !std::mem::take(&mut self.wrote) {
            return None;
        }
        self.coverage.insert(self.node.clone(), batch);
        Some(batch)
    }

    /// A client's like (`liked`) or unlike of `item`, anonymous or by `user`, at `now_ms`.
    pub fn like(
        &mut self,
        now_ms: u64,
        item: &ItemId,
        user: Option<&UserId>,
        liked: bool,
    ) -> Result<Outcome, LikesError> {
        let Some(user) = user else {
            if !liked {
                return Err(LikesError::AnonymousUnlike);
            }
            self.check_item_room(item)?;
            let batch = self.begin();
            let node = self.node.clone();
            let total =
                self.items.get(item).and_then(|i| i.counters.get(&node)).map_or(0, |c| c.total) + 1;
            let counter = Counter { total, batch };
            let record = Record::Counter { item: item.clone(), node, counter };
            self.merge(record.clone());
            self.wrote = true;
            return Ok(Outcome { count: self.count(item), liked: None, record: Some(record) });
        };
        let current = self.items.get(item).and_then(|i| i.users.get(user));
        if current.is_some_and(|r| r.liked) == liked {
            // Nothing to change; an unlike of an unknown (item, user) is not stored either.
            return Ok(Outcome { count: self.count(item), liked: Some(liked), record: None });
        }
        let ts_ms = current.map_or(now_ms, |r| now_ms.max(r.ts_ms + 1));
        if current.is_none() {
            self.check_item_room(item)?;
            if self.registers >= self.limits.users_max {
                return Err(LikesError::TooManyUsers(self.registers));
            }
        }
        let batch = self.begin();
        let register = Register { liked, ts_ms, origin: self.node.clone(), batch };
        let record = Record::User { item: item.clone(), user: user.clone(), register };
        self.merge(record.clone());
        self.wrote = true;
        Ok(Outcome { count: self.count(item), liked: Some(liked), record: Some(record) })
    }

    fn check_item_room(&self, item: &ItemId) -> Result<(), LikesError> {
        if !self.items.contains_key(item) && self.items.len() >= self.limits.items_max {
            return Err(LikesError::TooManyItems(self.items.len()));
        }
        Ok(())
    }

    /// Merges a record from anywhere (an event, a pull, the store). Returns the item's new count
    /// if the record changed this replica, `None` if it was old news.
    pub fn merge(&mut self, record: Record) -> Option<u64> {
        let item_id = record.item().clone();
        let entry = self.items.entry(item_id.clone()).or_default();
        let before = entry.count();
        let origin = record.dot().0.clone();
        let (changed, new_user) = match record {
            Record::Counter { node, counter, .. } => (entry.merge_counter(&node, counter), false),
            Record::User { user, register, .. } => entry.merge_register(&user, register),
        };
        // Every origin seen has a coverage entry (maybe 0): anti-entropy pages walk them.
        self.coverage.entry(origin).or_insert(0);
        let after = entry.count();
        if !changed {
            // An unchanged merge into an item this replica did not hold leaves nothing behind.
            if entry.counters.is_empty() && entry.users.is_empty() {
                self.items.remove(&item_id);
            }
            return None;
        }
        self.registers += usize::from(new_user);
        self.total = self.total.saturating_sub(before).saturating_add(after);
        Some(after)
    }

    /// Notes that `origin`'s whole `batch` arrived (its records are merged).
    pub fn observe(&mut self, origin: &NodeId, batch: u64) -> Observed {
        let have = self.covered(origin);
        if *origin == self.node || batch <= have {
            return Observed::Old;
        }
        if batch == have + 1 {
            self.beyond.remove(origin);
            self.coverage.insert(origin.clone(), batch);
            Observed::Covered(batch)
        } else {
            self.beyond.insert(origin.clone(), batch);
            Observed::Gap
        }
    }

    /// Takes a peer's coverage after merging every record it sent whose dot this replica's
    /// coverage did not reach. Returns the origins whose coverage rose, with the new value.
    pub fn claim(&mut self, vector: &Vector) -> Vec<(NodeId, u64)> {
        let mut raised = Vec::new();
        for (origin, &batch) in vector {
            if *origin == self.node && self.open.is_some() {
                continue;
            }
            let mut have = self.covered(origin).max(batch);
            // A batch that arrived whole while the one before it was out of reach is covered
            // now too.
            if let Some(beyond) = self.beyond.get(origin).copied()
                && beyond <= have + 1
            {
                have = have.max(beyond);
                self.beyond.remove(origin);
            }
            if have > self.covered(origin) {
                self.coverage.insert(origin.clone(), have);
                raised.push((origin.clone(), have));
            }
        }
        raised
    }

    /// Whether a record from elsewhere (an event or a pulled page) is plausible: a counter
    /// rises by at most [`BATCH_WRITES_MAX`] per batch beyond what this replica has. Records
    /// that are old news always pass (merging ignores them).
    pub fn admit(&self, record: &Record) -> Result<(), LikesError> {
        let Record::Counter { item, node, counter } = record else { return Ok(()) };
        let current = self
            .items
            .get(item)
            .and_then(|i| i.counters.get(node))
            .copied()
            .unwrap_or(Counter { total: 0, batch: 0 });
        if counter.total <= current.total {
            return Ok(());
        }
        let batches = counter.batch.saturating_sub(current.batch);
        if counter.total - current.total > batches.saturating_mul(BATCH_WRITES_MAX) {
            return Err(LikesError::Implausible {
                item: item.to_string(),
                node: node.to_string(),
                from: current.total,
                from_batch: current.batch,
                to: counter.total,
                to_batch: counter.batch,
            });
        }
        Ok(())
    }

    /// Whether `peer`'s coverage reaches a write this replica's does not.
    pub fn lacks(&self, peer: &Vector) -> bool {
        lacks(&self.coverage, peer)
    }
}

/// Whether coverage `mine` misses a batch that `theirs` covers.
pub fn lacks(mine: &Vector, theirs: &Vector) -> bool {
    theirs.iter().any(|(origin, &batch)| batch > mine.get(origin).copied().unwrap_or(0))
}

/// How far behind each node is: the batches, summed over every origin, that some node covers
/// and it does not (0 for a node that covers everything any node does).
pub fn behind(current: &BTreeMap<NodeId, Vector>) -> BTreeMap<NodeId, u64> {
    let mut most: BTreeMap<&NodeId, u64> = BTreeMap::new();
    for vector in current.values() {
        for (origin, &batch) in vector {
            let entry = most.entry(origin).or_default();
            *entry = (*entry).max(batch);
        }
    }
    current
        .iter()
        .map(|(node, vector)| {
            let lag = most
                .iter()
                .map(|(origin, &batch)| {
                    batch - vector.get(*origin).copied().unwrap_or(0).min(batch)
                })
                .sum();
            (node.clone(), lag)
        })
        .collect()
}

/// The leader's anti-entropy round: given every live node's coverage now (`current`) and a
/// round ago (`previous`), which node should pull from which peers. A node pulls from a peer
/// whose coverage of a round ago it still does not reach: events in flight have had a whole
/// round to arrive, so what is still missing was lost. A peer not seen a round ago is compared
/// as it is now.
pub fn pull_plan(
    current: &BTreeMap<NodeId, Vector>,
    previous: &BTreeMap<NodeId, Vector>,
) -> BTreeMap<NodeId, Vec<NodeId>> {
    let mut plan = BTreeMap::new();
    for (node, mine) in current {
        let from: Vec<NodeId> = current
            .iter()
            .filter(|(peer, _)| *peer != node)
            .filter(|(peer, now)| lacks(mine, previous.get(*peer).unwrap_or(now)))
            .map(|(peer, _)| peer.clone())
            .collect();
        if !from.is_empty() {
            plan.insert(node.clone(), from);
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits { items_max: 100, users_max: 100 };

    fn node(id: &str) -> NodeId {
        NodeId::parse(id).expect("valid node")
    }
    fn item(id: &str) -> ItemId {
        ItemId::parse(id).expect("valid item")
    }
    fn user(id: &str) -> UserId {
        UserId::parse(id).expect("valid user")
    }

    #[test]
    fn behind_counts_the_batches_a_node_misses() {
        let vector = |pairs: &[(&str, u64)]| -> Vector {
            pairs.iter().map(|(origin, batch)| (node(origin), *batch)).collect()
        };
        let current: BTreeMap<NodeId, Vector> = [
            (node("a"), vector(&[("a", 5), ("b", 3)])),
            (node("b"), vector(&[("a", 2), ("b", 7)])),
            (node("c"), vector(&[])),
        ]
        .into_iter()
        .collect();
        let behind = behind(&current);
        assert_eq!(behind[&node("a")], 4);
        assert_eq!(behind[&node("b")], 3);
        assert_eq!(behind[&node("c")], 12);
        let same: BTreeMap<NodeId, Vector> =
            [(node("a"), vector(&[("a", 1)])), (node("b"), vector(&[("a", 1)]))].into();
        assert!(super::behind(&same).values().all(|lag| *lag == 0));
        assert!(super::behind(&BTreeMap::new()).is_empty());
    }

    /// Applies a like in its own batch and returns the write.
    fn like(c: &mut LikeCounter, now: u64, it: &str, who: Option<&str>, liked: bool) -> Outcome {
        let who = who.map(user);
        let outcome = c.like(now, &item(it), who.as_ref(), liked).expect("accepted");
        c.finish();
        outcome
    }

    #[test]
    fn ids_are_validated() {
        for good in ["post-42", "a", "x:y_z", &"i".repeat(64)] {
            ItemId::parse(good).expect(good);
        }
        for bad in ["", "a.b", "a b", "*", ">", &"i".repeat(65), "é"] {
            assert!(matches!(ItemId::parse(bad), Err(LikesError::InvalidItem(_))), "{bad}");
        }
        for good in ["alice", "a.b@example.com", "u+1", "id:7"] {
            UserId::parse(good).expect(good);
        }
        for bad in ["", "a b", "a\"b", &"u".repeat(65)] {
            assert!(UserId::parse(bad).is_err(), "{bad}");
        }
        NodeId::parse("likes-1").expect("valid");
        for bad in ["", "a.b", "a:b", &"n".repeat(33)] {
            assert!(NodeId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn anonymous_likes_add_and_cannot_be_taken_back() {
        let mut c = LikeCounter::new(node("n1"), LIMITS);
        assert_eq!(like(&mut c, 1, "p", None, true).count, 1);
        let second = like(&mut c, 2, "p", None, true);
        assert_eq!(second.count, 2);
        assert_eq!(
            second.record,
            Some(Record::Counter {
                item: item("p"),
                node: node("n1"),
                counter: Counter { total: 2, batch: 2 }
            })
        );
        assert_eq!(c.like(3, &item("p"), None, false), Err(LikesError::AnonymousUnlike));
        assert_eq!(c.count(&item("p")), 2);
        assert_eq!(c.total(), 2);
    }

    #[test]
    fn a_user_counts_once_and_unlikes_only_their_own_like() {
        let mut c = LikeCounter::new(node("n1"), LIMITS);
        like(&mut c, 1, "p", None, true);
        let first = like(&mut c, 10, "p", Some("alice"), true);
        assert_eq!((first.count, first.liked), (2, Some(true)));
        let again = like(&mut c, 11, "p", Some("alice"), true);
        assert_eq!((again.count, again.record), (2, None), "a repeated like changes nothing");
        // Bob never liked it: his unlike changes nothing and stores nothing.
        let bob = like(&mut c, 12, "p", Some("bob"), false);
        assert_eq!((bob.count, bob.liked, bob.record), (2, Some(false), None));
        let undo = like(&mut c, 13, "p", Some("alice"), false);
        assert_eq!((undo.count, undo.liked), (1, Some(false)));
        assert!(undo.record.is_some());
        let twice = like(&mut c, 14, "p", Some("alice"), false);
        assert_eq!((twice.count, twice.record), (1, None), "never below the anonymous likes");
        assert!(!c.likes(&item("p"), &user("alice")));
        assert_eq!(like(&mut c, 15, "p", Some("alice"), true).count, 2, "liked again");
        assert_eq!(c.registers_len(), 1);
    }

    #[test]
    fn a_write_beats_every_write_its_node_has_seen_even_with_a_slow_clock() {
        let mut a = LikeCounter::new(node("a"), LIMITS);
        let mut b = LikeCounter::new(node("b"), LIMITS);
        let liked = like(&mut a, 1_000, "p", Some("u"), true).record.expect("written");
        b.merge(liked);
        // b's clock is behind a's: its unlike still wins, being stamped after what it saw.
        let Some(Record::User { register, .. }) = like(&mut b, 400, "p", Some("u"), false).record
        else {
            panic!("a register write");
        };
        assert_eq!(register.ts_ms, 1_001);
        assert_eq!(b.count(&item("p")), 0);
    }

    #[test]
    fn batches_number_the_groups_that_wrote() {
        let mut c = LikeCounter::new(node("n1"), LIMITS);
        assert_eq!(c.begin(), 1);
        assert_eq!(c.begin(), 1, "one open batch");
        assert_eq!(c.finish(), None, "nothing written: the number is reused");
        let batch = c.begin();
        c.like(1, &item("p"), None, true).expect("ok");
        c.like(1, &item("q"), Some(&user("u")), true).expect("ok");
        assert_eq!((batch, c.finish()), (1, Some(1)));
        assert_eq!(c.batch(), 1);
        c.like(2, &item("p"), None, true).expect("opens batch 2 by itself");
        assert_eq!(c.finish(), Some(2));
        assert_eq!(c.vector().get(&node("n1")), Some(&2));
    }

    #[test]
    fn limits_refuse_new_items_and_users_but_never_merges() {
        let mut c = LikeCounter::new(node("n1"), Limits { items_max: 1, users_max: 1 });
        like(&mut c, 1, "p", Some("u1"), true);
        assert_eq!(c.like(2, &item("q"), None, true), Err(LikesError::TooManyItems(1)));
        assert_eq!(
            c.like(2, &item("p"), Some(&user("u2")), true),
            Err(LikesError::TooManyUsers(1))
        );
        c.like(2, &item("p"), None, true).expect("an existing item takes anonymous likes");
        c.like(2, &item("p"), Some(&user("u1")), false).expect("a known user may unlike");
        c.finish();
        let mut other = LikeCounter::new(node("n2"), LIMITS);
        let record = like(&mut other, 3, "q", Some("u9"), true).record.expect("written");
        assert_eq!(c.merge(record), Some(1));
        assert_eq!((c.items_len(), c.registers_len()), (2, 2));
    }

    /// Every order and repetition of the same writes merges to the same state.
    #[test]
    fn merging_is_order_and_repetition_insensitive() {
        let mut writes = Vec::new();
        let mut nodes: Vec<LikeCounter> =
            ["a", "b", "c"].iter().map(|n| LikeCounter::new(node(n), LIMITS)).collect();
        for step in 0..60u64 {
            let n = &mut nodes[(step % 3) as usize];
            let who = ["u1", "u2", "u3"][(step % 5 % 3) as usize];
            let user = (step % 4 != 0).then_some(who);
            let liked = user.is_none() || step % 7 != 3;
            let it = ["p", "q"][(step % 2) as usize];
            if let Some(record) = like(n, 1_000 + step / 2, it, user, liked).record {
                writes.push(record);
            }
        }
        let replay = |order: &[Record]| {
            let mut r = LikeCounter::new(node("z"), LIMITS);
            for record in order {
                r.merge(record.clone());
            }
            (r.count(&item("p")), r.count(&item("q")), r.total())
        };
        let expected = replay(&writes);
        let mut reversed = writes.clone();
        reversed.reverse();
        assert_eq!(replay(&reversed), expected);
        let doubled: Vec<Record> = writes.iter().chain(writes.iter()).cloned().collect();
        assert_eq!(replay(&doubled), expected);
        let mut shuffled = writes.clone();
        // A fixed permutation: deterministic, but far from the original order.
        for i in 0..shuffled.len() {
            let j = (i * 17 + 5) % shuffled.len();
            shuffled.swap(i, j);
        }
        assert_eq!(replay(&shuffled), expected);
        assert!(expected.2 > 0);
    }

    #[test]
    fn coverage_advances_with_whole_batches_and_reports_gaps() {
        let mut c = LikeCounter::new(node("me"), LIMITS);
        let o = node("o");
        assert_eq!(c.observe(&o, 1), Observed::Covered(1));
        assert_eq!(c.observe(&o, 1), Observed::Old, "a duplicate");
        assert_eq!(c.observe(&o, 2), Observed::Covered(2));
        // Batch 3 lost: batch 4 is a gap, and so is every batch until a pull.
        assert_eq!(c.observe(&o, 4), Observed::Gap);
        assert_eq!(c.observe(&o, 5), Observed::Gap);
        assert_eq!(c.covered(&o), 2);
        // A pull claims the peer's coverage (3); batch 5 arrived whole meanwhile... but 4 is
        // not known to have: the claim stops at what is sure.
        let raised = c.claim(&Vector::from([(o.clone(), 3)]));
        assert_eq!(raised, vec![(o.clone(), 3)]);
        assert_eq!(c.covered(&o), 3);
        // Claimed up to 4 (the batch that was the gap's start): batch 5 arrived whole.
        c.claim(&Vector::from([(o.clone(), 4)]));
        assert_eq!(c.covered(&o), 5);
        assert_eq!(c.observe(&o, 6), Observed::Covered(6));
        // A batch that never arrived whole (its parts were not all there, or its signature
        // failed) is a gap once the next one arrives.
        assert_eq!(c.observe(&o, 8), Observed::Gap);
        assert_eq!(c.observe(&c.node().clone(), 99), Observed::Old, "own events");
        assert!(c.claim(&Vector::from([(o.clone(), 2)])).is_empty(), "never lowered");
    }

    #[test]
    fn a_counter_rises_by_at_most_a_batch_of_writes_per_batch() {
        let mut c = LikeCounter::new(node("me"), LIMITS);
        let counter = |total, batch| Record::Counter {
            item: item("p"),
            node: node("o"),
            counter: Counter { total, batch },
        };
        // From nothing: batch 1 may hold BATCH_WRITES_MAX likes, not one more.
        assert!(c.admit(&counter(BATCH_WRITES_MAX, 1)).is_ok());
        let error = c.admit(&counter(BATCH_WRITES_MAX + 1, 1)).unwrap_err();
        assert!(matches!(error, LikesError::Implausible { to: 1_025, .. }), "{error}");
        assert!(c.admit(&counter(1_000_000, 1)).is_err(), "a million anonymous likes at once");
        assert!(c.admit(&counter(5, 0)).is_err(), "no batch, no likes");
        c.merge(counter(10, 2));
        // Beyond what is held: at most BATCH_WRITES_MAX per batch since the held one.
        assert!(c.admit(&counter(10 + 3 * BATCH_WRITES_MAX, 5)).is_ok());
        assert!(c.admit(&counter(11 + 3 * BATCH_WRITES_MAX, 5)).is_err());
        assert!(c.admit(&counter(11, 2)).is_err(), "a batch cannot grow after the fact");
        // Old news passes (merging ignores it), and user likes have no counter to inflate.
        assert!(c.admit(&counter(3, 1)).is_ok());
        let register = Register { liked: true, ts_ms: 1, origin: node("o"), batch: 1 };
        assert!(c.admit(&Record::User { item: item("p"), user: user("u"), register }).is_ok());
        assert_eq!(c.count(&item("p")), 10, "admitting merges nothing");
    }

    #[test]
    fn a_fresh_replica_adopts_its_own_batches_from_a_peer() {
        let mut c = LikeCounter::new(node("me"), LIMITS);
        c.merge(Record::Counter {
            item: item("p"),
            node: node("me"),
            counter: Counter { total: 5, batch: 9 },
        });
        c.claim(&Vector::from([(node("me"), 9)]));
        assert_eq!(c.begin(), 10, "new writes never reuse a dot");
        c.like(1, &item("p"), None, true).expect("ok");
        assert_eq!(c.count(&item("p")), 6, "counting on from the adopted total");
        assert!(c.claim(&Vector::from([(node("me"), 20)])).is_empty(), "not while writing");
    }

    #[test]
    fn lacking_and_the_pull_plan() {
        let (a, b, c) = (node("a"), node("b"), node("c"));
        let va = Vector::from([(a.clone(), 5), (b.clone(), 3)]);
        let vb = Vector::from([(a.clone(), 5), (b.clone(), 4)]);
        assert!(lacks(&va, &vb));
        assert!(!lacks(&vb, &va));
        assert!(!lacks(&va, &va));
        let vc_behind = Vector::from([(a.clone(), 1)]);
        let current = BTreeMap::from([
            (a.clone(), va.clone()),
            (b.clone(), vb.clone()),
            (c.clone(), vc_behind),
        ]);
        // A round ago b covered only what a covers now: a is merely in flight, not lacking.
        let previous = BTreeMap::from([(b.clone(), va.clone())]);
        let plan = pull_plan(&current, &previous);
        assert_eq!(plan.get(&a), None);
        assert_eq!(plan.get(&c), Some(&vec![a.clone(), b.clone()]));
        assert_eq!(plan.get(&b), None);
        // With no previous round, current coverage is compared.
        assert_eq!(pull_plan(&current, &BTreeMap::new()).get(&a), Some(&vec![b.clone()]));
    }

    #[test]
    fn top_orders_by_count_then_item() {
        let mut c = LikeCounter::new(node("n"), LIMITS);
        for (it, n) in [("a", 1), ("b", 3), ("c", 3), ("d", 2)] {
            for _ in 0..n {
                like(&mut c, 1, it, None, true);
            }
        }
        let top: Vec<(String, u64)> =
            c.top(3).into_iter().map(|(i, n)| (i.to_string(), n)).collect();
        assert_eq!(top, vec![("b".into(), 3), ("c".into(), 3), ("d".into(), 2)]);
        assert_eq!(c.top(10).len(), 4);
        assert_eq!(c.total(), 9);
        // Unliked by everyone who liked it: known, counted 0, not among the most liked.
        like(&mut c, 2, "e", Some("ann"), true);
        assert_eq!(c.top(10).len(), 5);
        like(&mut c, 3, "e", Some("ann"), false);
        assert_eq!(c.top(10).len(), 4);
        assert_eq!(c.items_len(), 5);
    }
}
