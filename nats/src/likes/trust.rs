//! Which likes nodes exist, and proof that what a node merges came from them.
//!
//! A likes node merges what its peers send: their events (batches of writes) and their sync
//! pages (records they hold). Without a check, anyone who can publish on
//! `agora.likes.events.*` could claim that node `likes-1` took a million likes, or invent a
//! node, and every replica would keep it for good. So:
//!
//! - Every node has an **ed25519 signing key** (an nkey), made on its first start and kept in
//!   its store with its node id: the key is the node's identity as much as its directory is.
//! - The JetStream KV bucket [`subject::NODES_BUCKET`] is the **roster**: node id -> public
//!   key. A node registers itself on start (`create`: the first key for an id wins; a node
//!   whose id is taken by another key refuses to start). Deleting an entry revokes a node.
//! - A node **signs each batch** it publishes: the last event of a batch carries, in the
//!   [`subject::SIGNATURE_HEADER`] header, the signature of a digest of every event of the
//!   batch ([`batch_digest`]). A receiver assembles a batch's events ([`Assembler`]) and
//!   merges them only once all arrived and the signature is its origin's; an unknown origin,
//!   a missing part or a bad signature drops the batch (the next one shows the gap, and a pull
//!   repairs it from a trusted peer).
//! - A node **signs each sync page** it serves ([`page_digest`]); the puller merges a page only
//!   if the node it asked signed it.
//!
//! One signature per batch and per page, not per like: a few tens of microseconds per batch
//! of up to [`agora_core::likes::BATCH_WRITES_MAX`] writes. What a trusted node relays about
//! others in a sync page, and what it claims within a batch, is bounded by
//! `LikeCounter::admit` (a counter rises by at most a batch of writes per batch).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use agora_core::NodeId;
use agora_core::likes::Record;
use async_nats::HeaderMap;
use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use futures::StreamExt;
use nkeys::KeyPair;
use sha2::{Digest, Sha256};

use rusqlite::Connection;

use super::store;
use crate::likes::wire::LikeEvent;
use crate::subjects::likes as subject;

/// Events of one batch held while the rest arrive, per origin: at most this many bytes.
pub const ASSEMBLY_BYTES_MAX: usize = 16 * 1024 * 1024;
/// How long an origin missing from the roster is not looked up again...
const UNKNOWN_RETRY: Duration = Duration::from_secs(1);
/// ...and how many such origins are remembered at most (then forgotten at once).
const UNKNOWN_MAX: usize = 1_024;
/// How long a node keeps trying to register itself when it starts.
const REGISTER_WITHIN: Duration = Duration::from_secs(30);
/// Pause between tries to open or write the roster.
const REGISTER_RETRY: Duration = Duration::from_millis(500);

/// This node's signing key: the stored one, or a new one (stored).
pub fn signing_key(conn: &Connection) -> anyhow::Result<KeyPair> {
    if let Some(seed) = store::seed(conn)? {
        return KeyPair::from_seed(&seed)
            .map_err(|e| anyhow::anyhow!("the stored signing key is unreadable: {e}"));
    }
    let key = KeyPair::new_user();
    let seed = key.seed().map_err(|e| anyhow::anyhow!("cannot encode a new key: {e}"))?;
    store::set_seed(conn, &seed)?;
    Ok(key)
}

/// Opens (or creates) the roster bucket.
async fn roster_bucket(client: &async_nats::Client, replicas: usize) -> anyhow::Result<kv::Store> {
    let js = jetstream::new(client.clone());
    if let Ok(bucket) = js.get_key_value(subject::NODES_BUCKET).await {
        return Ok(bucket);
    }
    js.create_key_value(kv::Config {
        bucket: subject::NODES_BUCKET.to_owned(),
        description: "agora-likes nodes and their public signing keys".to_owned(),
        history: 1,
        storage: jetstream::stream::StorageType::File,
        num_replicas: replicas,
        ..kv::Config::default()
    })
    .await
    .map_err(|e| anyhow::anyhow!("cannot create the {} bucket: {e}", subject::NODES_BUCKET))
}

/// The nodes that exist and their public keys, kept current from the roster bucket.
#[derive(Clone)]
pub struct Roster {
    bucket: kv::Store,
    keys: Arc<RwLock<HashMap<String, Arc<KeyPair>>>>,
    /// Origins looked up and not found, and when.
    unknown: Arc<Mutex<HashMap<String, Instant>>>,
}

impl std::fmt::Debug for Roster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys = self.keys.read().map(|k| k.len()).unwrap_or_default();
        f.debug_struct("Roster").field("nodes", &keys).finish()
    }
}

impl Roster {
    /// Registers `node` with `key` (retrying while JetStream is not there yet) and starts
    /// following the bucket. Fails if the id is registered with another key.
    pub async fn join(
        client: &async_nats::Client,
        replicas: usize,
        node: &NodeId,
        key: &KeyPair,
    ) -> anyhow::Result<Self> {
        let deadline = Instant::now() + REGISTER_WITHIN;
        let bucket = loop {
            match roster_bucket(client, replicas).await {
                Ok(bucket) => break bucket,
                Err(error) if Instant::now() < deadline => {
                    tracing::warn!(%error, "cannot open the likes roster yet; retrying");
                    tokio::time::sleep(REGISTER_RETRY).await;
                }
                Err(error) => return Err(error),
            }
        };
        let public = key.public_key();
        loop {
            let registered = match bucket.create(node.as_str(), public.clone().into()).await {
                Ok(_) => Ok(true),
                Err(error) if error.kind() == kv::CreateErrorKind::AlreadyExists => Ok(false),
                Err(error) => Err(anyhow::anyhow!("cannot register: {error}")),
            };
            match registered {
                Ok(true) => {
                    tracing::info!(%node, key = %public, "registered in the likes roster");
                    break;
                }
                Ok(false) => {
                    let entry = bucket.entry(node.as_str()).await?;
                    match entry {
                        Some(entry) if entry.value.as_ref() == public.as_bytes() => break,
                        Some(entry) if entry.operation == kv::Operation::Put => anyhow::bail!(
                            "likes node id {node} is registered with another signing key ({}): \
                             another node has this id, or this node's data directory was \
                             replaced. Give this node a new id, or revoke the old one with \
                             `nats kv del {} {node}`",
                            String::from_utf8_lossy(&entry.value),
                            subject::NODES_BUCKET
                        ),
                        // Deleted (revoked) or purged: register again.
                        _ => {
                            let revision = entry.map(|e| e.revision).unwrap_or(0);
                            bucket.update(node.as_str(), public.clone().into(), revision).await?;
                            break;
                        }
                    }
                }
                Err(error) if Instant::now() < deadline => {
                    tracing::warn!(%error, "cannot register in the likes roster yet; retrying");
                    tokio::time::sleep(REGISTER_RETRY).await;
                }
                Err(error) => return Err(error),
            }
        }
        let roster = Self { bucket, keys: Arc::default(), unknown: Arc::default() };
        let mut updates = roster
            .bucket
            .watch_with_history(">")
            .await
            .map_err(|e| anyhow::anyhow!("cannot follow the likes roster: {e}"))?;
        let follower = roster.clone();
        tokio::spawn(async move {
            while let Some(Ok(entry)) = updates.next().await {
                follower.apply(&entry);
            }
        });
        Ok(roster)
    }

    fn apply(&self, entry: &kv::Entry) {
        let mut keys = self.keys.write().unwrap_or_else(|p| p.into_inner());
        let parsed = std::str::from_utf8(&entry.value)
            .ok()
            .and_then(|text| KeyPair::from_public_key(text).ok());
        match (entry.operation, parsed) {
            (kv::Operation::Put, Some(key)) => {
                keys.insert(entry.key.clone(), Arc::new(key));
            }
            _ => {
                keys.remove(&entry.key);
            }
        }
    }

    /// The public key of `node`, if it is in the roster (looked up at once when the follower
    /// has not seen it yet; a miss is remembered for a second).
    pub async fn key(&self, node: &str) -> Option<Arc<KeyPair>> {
        if let Some(key) = self.keys.read().unwrap_or_else(|p| p.into_inner()).get(node) {
            return Some(key.clone());
        }
        {
            let mut unknown = self.unknown.lock().unwrap_or_else(|p| p.into_inner());
            if unknown.get(node).is_some_and(|at| at.elapsed() < UNKNOWN_RETRY) {
                return None;
            }
            if unknown.len() >= UNKNOWN_MAX {
                unknown.clear();
            }
            unknown.insert(node.to_owned(), Instant::now());
        }
        if let Ok(Some(entry)) = self.bucket.entry(node).await {
            self.apply(&entry);
        }
        self.keys.read().unwrap_or_else(|p| p.into_inner()).get(node).cloned()
    }
}

/// The digest a batch's signature covers: the origin, the batch number and every event's
/// payload in order, each with its length (so no two batches share a digest).
pub fn batch_digest<'a>(
    origin: &str,
    batch: u64,
    payloads: impl IntoIterator<Item = &'a [u8]>,
) -> [u8; 32] {
    let mut hash = Sha256::new();
    hash.update(b"agora-likes-batch\0");
    hash.update((origin.len() as u64).to_be_bytes());
    hash.update(origin.as_bytes());
    hash.update(batch.to_be_bytes());
    for payload in payloads {
        hash.update((payload.len() as u64).to_be_bytes());
        hash.update(payload);
    }
    hash.finalize().into()
}

/// The digest a sync page's signature covers: who served it and its bytes.
pub fn page_digest(node: &str, payload: &[u8]) -> [u8; 32] {
    let mut hash = Sha256::new();
    hash.update(b"agora-likes-page\0");
    hash.update((node.len() as u64).to_be_bytes());
    hash.update(node.as_bytes());
    hash.update(payload);
    hash.finalize().into()
}

/// Signs a digest: the header carrying the signature.
pub fn signed(key: &KeyPair, digest: &[u8; 32]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Ok(signature) = key.sign(digest) {
        let text = data_encoding::BASE64URL_NOPAD.encode(&signature);
        headers.insert(subject::SIGNATURE_HEADER, text.as_str());
    }
    headers
}

/// Whether `headers` carry `key`'s signature of `digest`.
pub fn verify(key: &KeyPair, digest: &[u8; 32], headers: Option<&HeaderMap>) -> bool {
    let Some(text) = headers.and_then(|h| h.get(subject::SIGNATURE_HEADER)) else {
        return false;
    };
    let Ok(signature) = data_encoding::BASE64URL_NOPAD.decode(text.as_str().as_bytes()) else {
        return false;
    };
    key.verify(digest, &signature).is_ok()
}

/// A peer's whole batch: signed by its origin, ready to merge.
#[derive(Debug)]
pub struct Batch {
    pub origin: NodeId,
    pub batch: u64,
    pub records: Vec<Record>,
}

/// Why an event was not (yet) a batch.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// More parts are to come.
    Incomplete,
    /// The origin is not in the roster.
    UnknownNode(String),
    /// The batch's signature is missing or not its origin's.
    BadSignature { origin: String, batch: u64 },
    /// The batch's parts do not add up (a part count that changed, too many bytes).
    Malformed(String),
}

#[derive(Debug, Default)]
struct Partial {
    batch: u64,
    parts: u32,
    payloads: Vec<Bytes>,
    records: Vec<Record>,
    bytes: usize,
}

/// Assembles peers' events into whole batches and checks each batch's signature.
#[derive(Debug)]
pub struct Assembler {
    roster: Roster,
    partial: HashMap<NodeId, Partial>,
}

impl Assembler {
    pub fn new(roster: Roster) -> Self {
        Self { roster, partial: HashMap::new() }
    }

    /// Takes one event (decoded as `event`, with its `payload` and `headers`): the whole
    /// batch once its last part arrived and its signature is its origin's.
    pub async fn take(
        &mut self,
        event: &LikeEvent,
        origin: NodeId,
        records: Vec<Record>,
        payload: Bytes,
        headers: Option<&HeaderMap>,
    ) -> Result<Batch, Refused> {
        // Only nodes of the roster get a place to assemble in (checked again, with the
        // signature, once the batch is whole).
        if !self.partial.contains_key(&origin) && self.roster.key(origin.as_str()).await.is_none() {
            return Err(Refused::UnknownNode(origin.to_string()));
        }
        let partial = self.partial.entry(origin.clone()).or_default();
        if partial.batch != event.batch || partial.parts != event.parts {
            // Another batch began: whatever was held of an earlier one is incomplete (its
            // loss is a gap the next batch shows).
            *partial = Partial { batch: event.batch, parts: event.parts, ..Partial::default() };
        }
        partial.bytes += payload.len();
        if partial.bytes > ASSEMBLY_BYTES_MAX || partial.payloads.len() >= event.parts as usize {
            self.partial.remove(&origin);
            return Err(Refused::Malformed(format!(
                "batch {} of {origin} is larger than its parts or {ASSEMBLY_BYTES_MAX} bytes",
                event.batch
            )));
        }
        partial.payloads.push(payload);
        partial.records.extend(records);
        if partial.payloads.len() < event.parts as usize {
            return Err(Refused::Incomplete);
        }
        let Partial { batch, payloads, records, .. } =
            self.partial.remove(&origin).unwrap_or_default();
        let Some(key) = self.roster.key(origin.as_str()).await else {
            return Err(Refused::UnknownNode(origin.to_string()));
        };
        let digest = batch_digest(origin.as_str(), batch, payloads.iter().map(|p| &p[..]));
        if !verify(&key, &digest, headers) {
            return Err(Refused::BadSignature { origin: origin.to_string(), batch });
        }
        Ok(Batch { origin, batch, records })
    }
}
