//! `agora-likes`: one likes node (run three or more). Takes likes for any item, applies every
//! other node's events, catches up by anti-entropy, and campaigns for the leader lease.

use std::path::PathBuf;

use agora_nats::connection::NatsArgs;
use agora_nats::likes::{self, LikesConfig};
use agora_nats::telemetry;
use clap::Parser;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Agora likes node: like, unlike, count and top, replicated across every node.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    nats: NatsArgs,
    /// Directory of this node's SQLite database (one directory per node: it is the node's
    /// identity and its share of the likes).
    #[arg(long, env = "AGORA_LIKES_DATA_DIR", default_value = "data/likes")]
    data_dir: PathBuf,
    /// This node's id (1-32 of A-Z a-z 0-9 _ -); stored on first start. Default: the stored
    /// one, or a new random `likes-xxxxxxxx`.
    #[arg(long, env = "AGORA_LIKES_NODE_ID")]
    node_id: Option<String>,
    /// Leader lease, in milliseconds: a dead leader is replaced within about this long.
    #[arg(long, env = "AGORA_LIKES_LEASE_MS", default_value_t = 3_000)]
    lease_ms: u64,
    /// How often the leader runs an anti-entropy round, in milliseconds.
    #[arg(long, env = "AGORA_LIKES_SYNC_INTERVAL_MS", default_value_t = 1_000)]
    sync_interval_ms: u64,
    /// Items this node takes new likes for at most.
    #[arg(long, env = "AGORA_LIKES_ITEMS_MAX", default_value_t = 1_000_000)]
    items_max: usize,
    /// (item, user) likes this node takes new ones for at most.
    #[arg(long, env = "AGORA_LIKES_USERS_MAX", default_value_t = 5_000_000)]
    users_max: usize,
    /// Replicas of the leader-lease KV bucket (3 on a three-node NATS cluster).
    #[arg(long, env = "AGORA_LIKES_KV_REPLICAS", default_value_t = 1)]
    kv_replicas: usize,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    telemetry::init("info");
    let client = telemetry::connect_without_echo(&args.nats, "agora-likes").await?;
    let instance = args.node_id.clone().unwrap_or_else(telemetry::process_instance);
    telemetry::publish_logs(&client, "likes", &instance);
    let config = LikesConfig {
        data_dir: args.data_dir,
        node_id: args.node_id,
        lease_ms: args.lease_ms,
        sync_interval_ms: args.sync_interval_ms,
        items_max: args.items_max,
        users_max: args.users_max,
        kv_replicas: args.kv_replicas,
    };
    likes::run(client, config, telemetry::shutdown_signal()).await
}
