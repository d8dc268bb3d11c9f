//! `agora-chat`: the chat service. Keeps names and presence, room memberships, and the history
//! of every room and direct message (messages themselves fan out over plain NATS subjects).

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
    #[command(flatten)]
    chat: ChatServiceConfig,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    telemetry::init("info");
    let client = telemetry::connect(&args.nats, "agora-chat").await?;
    telemetry::observe(&client, "chat", &telemetry::process_instance());
    chat::run(client, args.chat, telemetry::shutdown_signal()).await
}
