//! A likes node's owner state (see `crate::owner`): its replica of the CRDT
//! (`agora_core::LikeCounter`), and what a group does to the store. A group is one batch of
//! this node's writes: it closes when the group commits, and its events go out (signed)
//! before the replies.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use agora_core::likes::{Limits, Observed, Record, Vector};
use agora_core::{ItemId, LikeCounter, NodeId, UserId};
use async_nats::service::Request;
use async_nats::{Client, HeaderMap, Subject};
use bytes::Bytes;
use nkeys::KeyPair;
use rusqlite::{Connection, Transaction};
use tokio::sync::{mpsc, oneshot};

use super::wire::{
    ItemCount, LikeCount, LikeEvent, NodeDigest, SyncReply, TopReply, UserLike, vector_to_wire,
};
use super::{ENDPOINTS, SYNC_PAGE_BYTES, Status, lock, store, trust};
use crate::error::{ErrorCode, ServiceError};
use crate::owner::{Depth, State};
use crate::service::{ErrorCounts, Replier, encode, publish_reply};
use crate::sqlite::StoreError;
use crate::subjects::likes as subject;

/// A validated request for the owner.
#[derive(Debug)]
pub enum Command {
    Like { item: ItemId, user: Option<UserId>, liked: bool },
    Count { item: ItemId, user: Option<UserId> },
    Top { limit: usize },
    Serve { vector: Vector, after: Option<(NodeId, u64)> },
}

#[derive(Debug)]
pub enum Envelope {
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

/// What one batch wrote to one item: the body of its event.
#[derive(Debug, Default)]
struct ItemWrites {
    total: Option<u64>,
    users: BTreeMap<String, UserLike>,
    /// The span of the first request that wrote it: the event's `traceparent`.
    span: Option<crate::trace::Trace>,
}

/// What a group produced, sent once it committed.
#[derive(Debug, Default)]
pub struct Outbox {
    replies: Vec<(Box<Request>, &'static str, Result<Bytes, ServiceError>)>,
    /// Subject, headers (the batch's signature, on its last event), payload.
    events: Vec<(String, Option<HeaderMap>, Bytes)>,
    digests: Vec<(Subject, Vec<ItemId>)>,
    done: Vec<oneshot::Sender<()>>,
    /// This node's writes in the group's batch, per item.
    writes: BTreeMap<ItemId, ItemWrites>,
    /// Origins with a batch missing: pull from them.
    gaps: BTreeSet<NodeId>,
    /// The peer a finished pull claimed the coverage of.
    synced: Option<NodeId>,
    /// Likes and unlikes taken.
    accepted: u64,
}

/// What the owner shares with the rest of the node.
#[derive(Debug)]
pub struct Links {
    pub client: Client,
    pub errors: ErrorCounts,
    pub status: Status,
    pub queued: Depth,
    /// Gaps found in events: pull from their origin.
    pub orders: mpsc::Sender<NodeId>,
    /// This node's signing key: its batches and sync pages carry its signature.
    pub key: Arc<KeyPair>,
}

/// A likes node's state, owned by its owner thread.
pub struct Likes {
    counter: LikeCounter,
    node: NodeId,
    limits: Limits,
    client: Client,
    repliers: HashMap<&'static str, Replier>,
    status: Status,
    queued: Depth,
    orders: mpsc::Sender<NodeId>,
    key: Arc<KeyPair>,
    accepted: u64,
    accepted_last_second: u64,
    second_started_ms: u64,
}

impl std::fmt::Debug for Likes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Likes").field("node", &self.node).finish_non_exhaustive()
    }
}

fn unavailable(error: &StoreError) -> ServiceError {
    ServiceError::new(ErrorCode::Unavailable, format!("likes store failed ({error}); retry"))
}

impl Likes {
    /// The node's replica as the store has it.
    pub fn load(
        conn: &Connection,
        node: NodeId,
        limits: Limits,
        links: Links,
    ) -> Result<Self, StoreError> {
        let Links { client, errors, status, queued, orders, key } = links;
        let endpoints = ENDPOINTS.iter().map(|(name, _)| *name).chain([subject::SYNC]);
        let repliers = endpoints.map(|name| (name, Replier::new(name, errors.clone()))).collect();
        let now_ms = crate::clock::now_ms();
        let mut likes = Self {
            counter: LikeCounter::new(node.clone(), limits),
            node,
            limits,
            client,
            repliers,
            status,
            queued,
            orders,
            key,
            accepted: 0,
            accepted_last_second: 0,
            second_started_ms: now_ms,
        };
        likes.reload(conn)?;
        likes.publish_status(now_ms);
        tracing::info!(
            node = %likes.node,
            items = likes.counter.items_len(),
            likes = likes.counter.total(),
            batch = likes.counter.batch(),
            "likes store loaded"
        );
        Ok(likes)
    }

    /// (Re)builds the replica from the store.
    fn reload(&mut self, conn: &Connection) -> Result<(), StoreError> {
        self.counter = LikeCounter::new(self.node.clone(), self.limits);
        for record in store::records(conn)? {
            self.counter.restore(record);
        }
        for (origin, batch) in store::coverage(conn)? {
            self.counter.restore_coverage(origin, batch);
        }
        Ok(())
    }

    /// Merges records from a peer (an event or a pulled page), leaving out the implausible
    /// ones (`LikeCounter::admit`).
    fn merge_all(&mut self, tx: &Transaction<'_>, records: Vec<Record>) -> Result<(), StoreError> {
        for record in records {
            if let Err(error) = self.counter.admit(&record) {
                lock(&self.status).refused += 1;
                tracing::warn!(%error, "refused a likes record");
                continue;
            }
            if self.counter.merge(record.clone()).is_some() {
                store::put(tx, &record)?;
            }
        }
        Ok(())
    }

    fn execute(
        &mut self,
        tx: &Transaction<'_>,
        now: u64,
        command: Command,
        out: &mut Outbox,
    ) -> Result<Result<Bytes, ServiceError>, StoreError> {
        let node = self.node.to_string();
        match command {
            Command::Like { item, user, liked } => {
                let outcome = match self.counter.like(now, &item, user.as_ref(), liked) {
                    Ok(outcome) => outcome,
                    Err(error) => return Ok(Err(error.into())),
                };
                out.accepted += 1;
                if let Some(record) = &outcome.record {
                    store::put(tx, record)?;
                    let entry = out.writes.entry(item.clone()).or_default();
                    entry.span = entry.span.or_else(crate::trace::current);
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
                let page = store::page(tx, &origins, &vector, after, SYNC_PAGE_BYTES)?;
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
    fn events(&self, batch: u64, out: &mut Outbox) {
        let writes = std::mem::take(&mut out.writes);
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
                let headers = writes.span.map(|span| {
                    let mut headers = HeaderMap::new();
                    headers.insert(crate::trace::TRACEPARENT, span.traceparent().as_str());
                    headers
                });
                out.events.push((subject::events(item.as_str()), headers, Bytes::from(payload)));
            }
        }
        let payloads = out.events[first..].iter().map(|(_, _, payload)| &payload[..]);
        let digest = trust::batch_digest(self.node.as_str(), batch, payloads);
        if let Some(last) = out.events.last_mut() {
            let signed = trust::signed(&self.key, &digest);
            let headers = last.1.get_or_insert_with(HeaderMap::new);
            for (name, values) in signed.iter() {
                for value in values {
                    headers.insert(name.clone(), value.clone());
                }
            }
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
        status.queue = self.queued.get();
    }
}

impl State for Likes {
    type Envelope = Envelope;
    type Outbox = Outbox;

    fn span(&self, envelope: &Envelope) -> Option<crate::trace::Trace> {
        match envelope {
            Envelope::Request { request, .. } => crate::service::span_of(request),
            _ => None,
        }
    }

    fn apply(
        &mut self,
        tx: &Transaction<'_>,
        now_ms: u64,
        envelope: Envelope,
        out: &mut Outbox,
    ) -> Result<(), StoreError> {
        match envelope {
            Envelope::Request { request, endpoint, command } => {
                let reply = self.execute(tx, now_ms, command, out)?;
                out.replies.push((request, endpoint, reply));
            }
            Envelope::Event { origin, batch, records } => {
                self.merge_all(tx, records)?;
                match self.counter.observe(&origin, batch) {
                    Observed::Covered(batch) => store::set_coverage(tx, &origin, batch)?,
                    Observed::Gap => {
                        out.gaps.insert(origin);
                    }
                    Observed::Old => {}
                }
            }
            Envelope::Merge { records, claim, peer, done } => {
                self.merge_all(tx, records)?;
                if let Some(vector) = claim {
                    for (origin, batch) in self.counter.claim(&vector) {
                        store::set_coverage(tx, &origin, batch)?;
                    }
                    out.synced = Some(peer);
                }
                out.done.push(done);
            }
            Envelope::Digest { reply, items } => out.digests.push((reply, items)),
        }
        Ok(())
    }

    /// The group is this node's batch: closed (and its events built, signed) in the group's
    /// transaction.
    fn close(
        &mut self,
        tx: &Transaction<'_>,
        _now_ms: u64,
        out: &mut Outbox,
    ) -> Result<(), StoreError> {
        if let Some(batch) = self.counter.finish() {
            store::set_coverage(tx, &self.node, batch)?;
            self.events(batch, out);
        }
        Ok(())
    }

    /// Rates and the status are refreshed even when nothing happens.
    fn tick(&mut self, now_ms: u64) -> Vec<Envelope> {
        self.publish_status(now_ms);
        Vec::new()
    }

    fn rolled_back(&mut self, conn: &Connection, error: &StoreError, out: &mut Outbox) {
        if let Err(error) = self.reload(conn) {
            tracing::error!(%error, "cannot reload the likes store");
        }
        let failure = unavailable(error);
        out.replies.iter_mut().for_each(|(_, _, reply)| *reply = Err(failure.clone()));
        out.events.clear();
        // Pullers see their page refused (the sender is dropped) and retry later.
        out.done.clear();
        out.synced = None;
        out.accepted = 0;
    }

    async fn deliver(&mut self, now_ms: u64, out: Outbox) {
        let Outbox { replies, events, digests, done, gaps, synced, accepted, .. } = out;
        self.accepted += accepted;
        if let Some(peer) = synced {
            let mut status = lock(&self.status);
            status.last_sync_ms = Some(now_ms);
            status.last_sync_from = Some(peer.to_string());
            status.syncs += 1;
        }
        for origin in gaps {
            self.orders.try_send(origin).ok();
        }
        // The status before the digests it answers, and before replies.
        self.publish_status(now_ms);
        let digests: Vec<(Subject, Result<Bytes, ServiceError>)> = digests
            .into_iter()
            .map(|(reply, items)| (reply, encode(&self.digest(&items))))
            .collect();
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

        for done in done {
            done.send(()).ok();
        }
    }
}
