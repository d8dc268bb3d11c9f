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
    /// HTTP address to listen on (port 0: any free port).
    #[arg(long, env = "AGORA_GATEWAY_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// How long to wait for a service's reply, in milliseconds.
    #[arg(long, env = "AGORA_GATEWAY_REQUEST_TIMEOUT_MS", default_value_t = 5_000)]
    request_timeout_ms: u64,
    /// Largest request body, in bytes.
    #[arg(long, env = "AGORA_GATEWAY_BODY_BYTES_MAX", default_value_t = 64 * 1024)]
    body_bytes_max: usize,
    /// Most live event streams (browsers) at once.
    #[arg(long, env = "AGORA_GATEWAY_LIVE_CLIENTS_MAX",
          default_value_t = gateway::LIVE_CLIENTS_MAX_DEFAULT)]
    live_clients_max: usize,
    /// Most chat sessions held for browsers.
    #[arg(long, env = "AGORA_GATEWAY_CHAT_SESSIONS_MAX",
          default_value_t = gateway::CHAT_SESSIONS_MAX_DEFAULT)]
    chat_sessions_max: usize,
    /// A browser's chat session with no call and no live stream for this long ends, in ms.
    #[arg(long, env = "AGORA_GATEWAY_CHAT_IDLE_MS", default_value_t = 30_000)]
    chat_idle_ms: u64,
    /// Enables manager operations (coin admin) for callers that send this bearer token.
    #[arg(long, env = "AGORA_GATEWAY_MANAGER_TOKEN", hide_env_values = true)]
    manager_token: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    telemetry::init("info");
    let client = telemetry::connect(&args.nats, "agora-gateway").await?;
    telemetry::publish_logs(&client, "gateway", &telemetry::process_instance());
    let config = GatewayConfig {
        listen: args.listen,
        request_timeout_ms: args.request_timeout_ms,
        body_bytes_max: args.body_bytes_max,
        live_clients_max: args.live_clients_max,
        chat_sessions_max: args.chat_sessions_max,
        chat_idle_ms: args.chat_idle_ms,
        manager_token: args.manager_token,
    };
    let ready = |address: SocketAddr| {
        println!("agora-gateway listening on http://{address}");
        telemetry::announce_ready("agora-gateway");
    };
    gateway::run(client, config, ready, telemetry::shutdown_signal()).await
}
