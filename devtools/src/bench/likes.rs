//! `agora bench likes`: likes taken by three `agora-likes` nodes vs raw NATS request-reply
//! to three echo responders in one queue group, both at the same concurrency, plus raw publish
//! throughput and the time until every node agrees once the likes stop.
//!
//! A like is an anonymous `agora.likes.like.<item>` over 1,000 items, spread over the client
//! connections; its reply comes once the like is committed on the node that took it and its
//! event is published to the others. Agreement means every node reports the same coverage
//! (version vector) and the same total: every like of the run is on every node.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{
    Goal, Measurement, Rig, compare, connections, echo_load, print_goal, print_header, print_row,
};
use agora_nats::client::AgoraClient;
use agora_nats::subjects;

/// Options of `agora bench likes`.
#[derive(Debug, Clone)]
pub struct LikesBenchOptions {
    /// Seconds of measurement per side.
    pub seconds: u64,
    /// Likes (and raw requests) in flight.
    pub in_flight: usize,
    /// Likes nodes to run.
    pub nodes: usize,
    /// Client connections the load is spread over (the raw baseline uses as many).
    pub connections: usize,
}

/// Items the likes spread over.
const ITEMS: u64 = 1_000;
/// Raw publishes measured for the publish-throughput row.
const PUBLISHES: u64 = 500_000;

/// `agora bench likes`.
pub async fn likes(options: LikesBenchOptions) -> anyhow::Result<Vec<Measurement>> {
    let nodes = options.nodes.max(1);
    let mut rig = Rig::start(nodes)?;
    for index in 0..nodes {
        let args = [
            "--data-dir".to_owned(),
            rig.data_dir(&format!("likes-{index}")),
            "--node-id".to_owned(),
            format!("bench-{index}"),
        ];
        rig.start_component(&format!("likes-{index}"), "agora-likes", &args)?;
    }
    let clients = Arc::new(connections(&rig.url, options.connections).await?);
    println!(
        "agora bench likes: nats-server {}, {nodes} likes node(s) and {nodes} echo responder(s), \
         {} connection(s), {} in flight, {} s per side",
        crate::process::NATS_SERVER_VERSION,
        options.connections.max(1),
        options.in_flight,
        options.seconds
    );
    let publish_rate = raw_publish_rate(&clients[0]).await?;
    println!("\nraw publish throughput (one connection, 16 B): {publish_rate:.0} msgs/s");

    let duration = Duration::from_secs(options.seconds.max(1));
    let echo = echo_load(clients.clone(), Bytes::new());
    let like_clients = clients.clone();
    let like = move |worker: usize, sequence: u64| {
        let client = like_clients[worker % like_clients.len()].clone();
        let item = (worker as u64).wrapping_mul(7_919).wrapping_add(sequence) % ITEMS;
        let subject = subjects::likes::like(&format!("item-{item}"));
        async move { client.request_bytes(&subject, Bytes::new()).await.map(drop) }
    };
    print_header();
    let (raw, ours) = compare(options.in_flight, duration, echo, like).await?;
    let stopped = Instant::now();
    let agreed = agreement(&clients[0], nodes).await?;
    let raw = raw.measurement("raw request-reply (0 B)", options.in_flight);
    let ours = ours.measurement(&format!("likes.like on {nodes} nodes"), options.in_flight);
    print_row(&raw, None);
    print_row(&ours, Some(&raw));
    let (converged, total) = agreed;
    let converged = converged.saturating_duration_since(stopped);
    println!(
        "\nall {nodes} nodes agreed on {total} likes {:.1} ms after the last like was answered",
        converged.as_secs_f64() * 1_000.0
    );
    println!("\ngoals:");
    print_goal(
        "likes/s at 256 in flight >= 0.3x raw request-reply",
        Some(&raw),
        Some(&ours),
        Goal::RatioAtLeast(0.3),
    );
    println!(
        "  {:<52} {:>10}  {}",
        "every node agrees within 1 s of the last like",
        format!("{:.1} ms", converged.as_secs_f64() * 1_000.0),
        if converged <= Duration::from_secs(1) { "met" } else { "NOT met" }
    );
    rig.finish();
    Ok(vec![raw, ours])
}

/// Raw fire-and-forget publishes per second from one connection (flushed at the end).
async fn raw_publish_rate(client: &AgoraClient) -> anyhow::Result<f64> {
    let payload = Bytes::from_static(b"0123456789abcdef");
    let started = Instant::now();
    for _ in 0..PUBLISHES {
        client.nats().publish(subjects::bench::FANOUT, payload.clone()).await?;
    }
    client.nats().flush().await?;
    Ok(PUBLISHES as f64 / started.elapsed().as_secs_f64())
}

/// Waits until every node reports the same coverage and total; returns when, and the total.
async fn agreement(client: &AgoraClient, nodes: usize) -> anyhow::Result<(Instant, u64)> {
    let started = Instant::now();
    loop {
        let digests = client.likes_digests(Duration::from_secs(1), &[], Some(nodes)).await?;
        let agreed = digests.len() == nodes
            && digests.windows(2).all(|w| w[0].vector == w[1].vector && w[0].likes == w[1].likes);
        if agreed {
            return Ok((Instant::now(), digests[0].likes));
        }
        anyhow::ensure!(started.elapsed() < Duration::from_secs(30), "no agreement: {digests:?}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}
