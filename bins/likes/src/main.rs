//! `agora-likes`: one likes node (run three or more). Takes likes for any item, applies every
//! other node's events, catches up by anti-entropy, and campaigns for the leader lease.

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
    #[command(flatten)]
    likes: LikesConfig,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    telemetry::init("info");
    let client = telemetry::connect_without_echo(&args.nats, "agora-likes").await?;
    let instance = args.likes.node_id.clone().unwrap_or_else(telemetry::process_instance);
    telemetry::observe(&client, "likes", &instance);
    likes::run(client, args.likes, telemetry::shutdown_signal()).await
}
