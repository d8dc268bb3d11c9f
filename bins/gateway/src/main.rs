//! `agora-gateway`: Agora's HTTP API and live web dashboard, over NATS.

use std::net::SocketAddr;

use agora_gateway::{self as gateway, GatewayConfig};
use agora_nats::connection::NatsArgs;
use agora_nats::telemetry;
use clap::Parser;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Agora gateway: the JSON API, the dashboard and live events for browsers.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    nats: NatsArgs,
    #[command(flatten)]
    gateway: GatewayConfig,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    telemetry::init("info");
    let client = telemetry::connect(&args.nats, "agora-gateway").await?;
    telemetry::observe(&client, "gateway", &telemetry::process_instance());
    let ready = |address: SocketAddr| {
        println!("agora-gateway listening on http://{address}");
        telemetry::announce_ready("agora-gateway");
    };
    gateway::run(client, args.gateway, ready, telemetry::shutdown_signal()).await
}
