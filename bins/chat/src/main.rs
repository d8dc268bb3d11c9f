//! `agora-chat`: the chat service. Keeps names and presence, room memberships, and the history
//! of every room and direct message (messages themselves fan out over plain NATS subjects).

use std::path::PathBuf;

use agora_nats::chat::{self, ChatServiceConfig};
use agora_nats::connection::NatsArgs;
use agora_nats::telemetry;
use clap::Parser;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Agora chat service: register, heartbeat, leave, join, part, who and history.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    nats: NatsArgs,
    /// Directory of the SQLite database (created if missing).
    #[arg(long, env = "AGORA_CHAT_DATA_DIR", default_value = "data/chat")]
    data_dir: PathBuf,
    /// A user with no heartbeat for this long goes offline, in milliseconds.
    #[arg(long, env = "AGORA_CHAT_PRESENCE_TIMEOUT_MS", default_value_t = 15_000)]
    presence_timeout_ms: u64,
    /// Messages per second one user may send, sustained.
    #[arg(long, env = "AGORA_CHAT_RATE_PER_SEC", default_value_t = 20)]
    rate_per_sec: u32,
    /// Messages one user may send in a burst.
    #[arg(long, env = "AGORA_CHAT_BURST", default_value_t = 40)]
    burst: u32,
    /// Names that may ever be registered.
    #[arg(long, env = "AGORA_CHAT_USERS_MAX", default_value_t = 100_000)]
    users_max: usize,
    /// Messages kept in history; the oldest go first.
    #[arg(long, env = "AGORA_CHAT_HISTORY_MAX", default_value_t = 1_000_000)]
    history_max: u64,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    telemetry::init("info");
    let client = telemetry::connect(&args.nats, "agora-chat").await?;
    telemetry::publish_logs(&client, "chat", &telemetry::process_instance());
    let config = ChatServiceConfig {
        data_dir: args.data_dir,
        presence_timeout_ms: args.presence_timeout_ms,
        rate_per_sec: args.rate_per_sec,
        burst: args.burst,
        users_max: args.users_max,
        history_max: args.history_max,
    };
    chat::run(client, config, telemetry::shutdown_signal()).await
}
