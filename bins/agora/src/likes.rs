//! `agora likes ...`: like, unlike, count, the most-liked items, and the nodes with their leader.

use std::time::Duration;

use agora_nats::AgoraClient;
use agora_nats::likes::wire::{LikeCount, NodeDigest};
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum LikesCommand {
    /// Like an item. With --user, a like counts once per user however often it is sent.
    Like {
        item: String,
        #[arg(long)]
        user: Option<String>,
    },
    /// Take a user's like of an item back (anonymous likes cannot be taken back); signed
    /// in, your own.
    Unlike {
        item: String,
        #[arg(long)]
        user: Option<String>,
    },
    /// An item's count (with --user: and whether that user likes it).
    Count {
        item: String,
        #[arg(long)]
        user: Option<String>,
    },
    /// The most-liked items.
    Top {
        #[arg(long, default_value_t = 10)]
        limit: usize,
    },
    /// The live nodes with their load, and the leader (asked of the leader).
    Nodes {
        /// Ask every node directly instead (works without a leader; the operator's: a
        /// person's connection may not).
        #[arg(long)]
        all: bool,
    },
}

fn count_line(reply: &LikeCount) -> String {
    let mut line = format!("{}: {}", reply.item, crate::counted(reply.count, "like", "likes"));
    match (reply.liked, reply.changed) {
        (Some(liked), Some(false)) => {
            line += &format!(" (unchanged: already {})", if liked { "liked" } else { "not liked" })
        }
        (Some(true), _) => line += " (liked by you)",
        _ => {}
    }
    line + &format!(" [node {}]", reply.node)
}

fn node_line(node: &NodeDigest) -> String {
    let vector: Vec<String> = node.vector.iter().map(|(o, b)| format!("{o}:{b}")).collect();
    format!(
        "{:<16} {:>6} {:>10} {:>9} {:>8} {:>6}  {}{}",
        node.node,
        node.items,
        node.likes,
        node.accepted,
        node.accepted_per_sec,
        node.queue,
        vector.join(","),
        node.last_sync_from
            .as_ref()
            .map(|peer| format!("  (last pull from {peer})"))
            .unwrap_or_default(),
    )
}

pub async fn run(client: &AgoraClient, command: LikesCommand, json: bool) -> anyhow::Result<()> {
    let print = |value: serde_json::Value, text: String| crate::print(json, value, text);
    match command {
        LikesCommand::Like { item, user } => {
            let reply = client.like(&item, user.as_deref()).await?;
            print(serde_json::to_value(&reply)?, count_line(&reply));
        }
        LikesCommand::Unlike { item, user } => {
            let reply = client.unlike(&item, user.as_deref()).await?;
            print(serde_json::to_value(&reply)?, count_line(&reply));
        }
        LikesCommand::Count { item, user } => {
            let reply = client.like_count(&item, user.as_deref()).await?;
            print(serde_json::to_value(&reply)?, count_line(&reply));
        }
        LikesCommand::Top { limit } => {
            let reply = client.top_likes(limit).await?;
            let items = crate::counted(reply.items_total, "item", "items");
            let mut text = format!("{items} on node {}", reply.node);
            for (rank, item) in reply.items.iter().enumerate() {
                text += &format!("\n{:>4}. {:<40} {}", rank + 1, item.item, item.count);
            }
            print(serde_json::to_value(&reply)?, text);
        }
        LikesCommand::Nodes { all } => {
            let header = format!(
                "{:<16} {:>6} {:>10} {:>9} {:>8} {:>6}  coverage",
                "node", "items", "likes", "accepted", "per sec", "queue"
            );
            if all {
                let nodes = client.likes_digests(Duration::from_millis(500), &[], None).await?;
                let mut text = header;
                for node in &nodes {
                    text +=
                        &format!("\n{}{}", node_line(node), if node.leader { "  *" } else { "" });
                }
                print(serde_json::to_value(&nodes)?, text);
            } else {
                let reply = client.like_nodes().await?;
                let now_ms = agora_nats::clock::now_ms();
                let mut text = format!(
                    "leader {} (epoch {}, for {} s); {} live nodes as of {} ms ago\n{header}",
                    reply.leader.node,
                    reply.leader.epoch,
                    now_ms.saturating_sub(reply.leader.since_ms) / 1_000,
                    reply.nodes.len(),
                    now_ms.saturating_sub(reply.as_of_ms),
                );
                for node in &reply.nodes {
                    text += &format!("\n{}", node_line(node));
                }
                print(serde_json::to_value(&reply)?, text);
            }
        }
    }
    Ok(())
}
