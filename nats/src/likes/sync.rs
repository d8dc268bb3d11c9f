//! Anti-entropy, the node's side: peers' events assembled into signed batches, and pulls of
//! every record this node's coverage lacks from a peer (on a gap, at startup, after a
//! reconnect, and on the leader's orders), page by signed page.

use std::collections::BTreeSet;

use agora_core::NodeId;
use agora_core::likes::{self as core_likes, Record};
use anyhow::Context as _;
use async_nats::Client;
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::{mpsc, oneshot};

use super::state::Envelope;
use super::trust::{self, Assembler, Refused, Roster};
use super::wire::{NodeDigest, SyncReply, SyncRequest, vector_from_wire};
use super::{DIGEST_WINDOW, PULL_PAGES_MAX, RECONNECT_POLL, Status, lock, parse_event};
use crate::client::AgoraClient;
use crate::owner;
use crate::subjects::likes as subject;

/// Takes every peer's events: assembles each batch, checks it came from its origin (see
/// `likes_trust`), and queues the whole batch for the owner.
pub async fn take_events(
    mut events: async_nats::Subscriber,
    me: NodeId,
    mut assembler: Assembler,
    queue: owner::Queue<Envelope>,
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
                if queue.try_send(envelope).is_err() {
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

/// Pulls records from peers: on the leader's orders and on gaps the owner found.
#[derive(Debug, Clone)]
pub struct Syncer {
    pub client: AgoraClient,
    pub node: NodeId,
    pub queue: owner::Queue<Envelope>,
    pub status: Status,
    pub roster: Roster,
}

impl Syncer {
    pub async fn run(self, mut orders: mpsc::Receiver<NodeId>) {
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
    pub async fn pull(&self, peer: &NodeId) -> anyhow::Result<usize> {
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
pub fn ahead_of(node: &NodeId, status: &Status, digests: Vec<NodeDigest>) -> Vec<NodeId> {
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
pub async fn pull_after_reconnect(
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
