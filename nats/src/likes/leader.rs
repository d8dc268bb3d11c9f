//! The leader: one node, elected through a JetStream KV lease (`agora_core::likes::lease`
//! decides when to campaign, renew and run a round), answers `agora.likes.nodes` and runs the
//! anti-entropy rounds. No like waits on it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agora_core::NodeId;
use agora_core::likes::lease::{LeaseClock, Step};
use agora_core::likes::{self as core_likes, Vector};
use async_nats::Client;
use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::mpsc;

use super::wire::{LeaderLease, NodeDigest, NodesReply, PullOrder, vector_from_wire};
use super::{DIGEST_WINDOW, LikesConfig, Status, lock};
use crate::client::{AgoraClient, ClientError};
use crate::clock::now_ms;
use crate::service::{encode, publish_reply};
use crate::subjects::likes as subject;

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

/// This node's leadership while it lasts (its timing is in the [`LeaseClock`]).
struct Leadership {
    lease: LeaderLease,
    /// The KV revision of the lease as this node last wrote it.
    revision: u64,
    nodes: Arc<Mutex<NodesReply>>,
    answering: tokio::task::JoinHandle<()>,
    previous: BTreeMap<NodeId, Vector>,
}

/// Takes the lease if nobody holds it (or this node held it before a restart): its epoch and
/// the revision it wrote, or `None`.
async fn campaign(bucket: &kv::Store, candidate: &mut LeaderLease) -> Option<u64> {
    let created = match bucket.entry(subject::LEADER_KEY).await {
        Ok(Some(entry)) if entry.operation == kv::Operation::Put => {
            match serde_json::from_slice::<LeaderLease>(&entry.value) {
                Ok(lease) if lease.node == candidate.node => {
                    bucket.update(subject::LEADER_KEY, Bytes::new(), entry.revision).await.ok()
                }
                _ => None,
            }
        }
        Ok(_) => bucket.create(subject::LEADER_KEY, Bytes::new()).await.ok(),
        Err(_) => None,
    }?;
    candidate.epoch = created;
    let value = serde_json::to_vec(&candidate).unwrap_or_default();
    bucket.update(subject::LEADER_KEY, value.into(), created).await.ok()
}

/// Campaigns for the leader lease forever; while leading, renews it, answers
/// `agora.likes.nodes` and runs the anti-entropy rounds.
pub async fn lead(
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
    // The bucket's `max_age` is the lease (another node may have created it with its flags).
    let lease_ms = match bucket.status().await {
        Ok(bucket) => {
            u64::try_from(bucket.info.config.max_age.as_millis()).unwrap_or(config.lease_ms)
        }
        Err(_) => config.lease_ms,
    };
    let mut clock = LeaseClock::new(lease_ms, config.sync_interval_ms);
    let poll = Duration::from_millis(clock.poll_ms());
    let agora = AgoraClient::new(client.clone());
    let mut leadership: Option<Leadership> = None;
    loop {
        tokio::time::sleep(poll).await;
        let now = now_ms();
        match (clock.step(now), &mut leadership) {
            (Step::Renew, Some(lead)) => {
                let value = serde_json::to_vec(&lead.lease).unwrap_or_default();
                match bucket.update(subject::LEADER_KEY, value.into(), lead.revision).await {
                    Ok(revision) => {
                        lead.revision = revision;
                        clock.renewed(now);
                    }
                    Err(error) => {
                        tracing::warn!(%error, epoch = lead.lease.epoch, "lost the leader lease");
                        clock.lost();
                        if let Some(lead) = leadership.take() {
                            lead.answering.abort();
                        }
                        lock(&status).leader = false;
                        continue;
                    }
                }
                if clock.step(now) == Step::Round {
                    clock.rounded(now);
                    round(&agora, &client, &status, &orders, lead).await;
                }
            }
            (Step::Round, Some(lead)) => {
                clock.rounded(now);
                round(&agora, &client, &status, &orders, lead).await;
            }
            (Step::Campaign, _) | (Step::Renew | Step::Round, None) => {
                let mut candidate = LeaderLease { node: node.to_string(), epoch: 0, since_ms: now };
                let Some(revision) = campaign(&bucket, &mut candidate).await else { continue };
                let epoch = candidate.epoch;
                clock.elected(now, epoch);
                tracing::info!(epoch, "leading the likes nodes");
                lock(&status).leader = true;
                let nodes = Arc::new(Mutex::new(NodesReply {
                    leader: candidate.clone(),
                    as_of_ms: now,
                    nodes: Vec::new(),
                }));
                let mut lead = Leadership {
                    lease: candidate,
                    revision,
                    nodes: nodes.clone(),
                    answering: tokio::spawn(async {}),
                    previous: BTreeMap::new(),
                };
                // The first round before answering: `nodes` is never empty.
                clock.rounded(now);
                round(&agora, &client, &status, &orders, &mut lead).await;
                lead.answering = tokio::spawn(answer_nodes(client.clone(), status.clone(), nodes));
                leadership = Some(lead);
            }
            (Step::Idle, _) => {}
        }
    }
}

/// Every live node's digest, this one's included: gathered for [`DIGEST_WINDOW`], or until
/// `peers` other nodes answered (`Some(0)`: only this node's).
pub async fn gather_digests(
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

#[derive(Debug, Clone, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct NodeLabels {
    node: String,
}

/// The coverage lag of every node, as the leader's last round saw it.
fn behind_gauge()
-> prometheus_client::metrics::family::Family<NodeLabels, prometheus_client::metrics::gauge::Gauge>
{
    crate::metrics::register(
        "likes_coverage_lag_batches",
        "Batches some node covers and this one not, summed over origins (set by the leader's \
         anti-entropy round, for every node)",
        Default::default(),
    )
}

/// One anti-entropy round: gather every node's digest, order the lagging ones to pull (this
/// node's own orders go straight to its syncer).
async fn round(
    agora: &AgoraClient,
    client: &Client,
    status: &Status,
    orders: &mpsc::Sender<NodeId>,
    lead: &mut Leadership,
) {
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
    let lag = behind_gauge();
    lag.clear();
    for (node, batches) in core_likes::behind(&current) {
        lag.get_or_create(&NodeLabels { node: node.to_string() }).set(batches as i64);
    }
    for (node, from) in core_likes::pull_plan(&current, &lead.previous) {
        let order = PullOrder {
            leader: lead.lease.node.clone(),
            epoch: lead.lease.epoch,
            from: from.iter().map(NodeId::to_string).collect(),
        };
        tracing::debug!(%node, from = ?order.from, "round: ordering a pull");
        if node.as_str() == lead.lease.node {
            for peer in from {
                orders.try_send(peer).ok();
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
pub async fn resign(client: &Client, node: &NodeId) {
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
