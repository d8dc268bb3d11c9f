//! `agora-coins`: the coin exchange (run one). Lists assets, takes buy and sell orders paid
//! through the bank, all or nothing, and finishes any order a crash left pending.

use agora_nats::coins::{self, CoinsConfig};
use agora_nats::connection::NatsArgs;
use agora_nats::telemetry;
use clap::Parser;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Agora coin exchange: assets, buy, sell, portfolio, history; manager add/remove/update.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    nats: NatsArgs,
    #[command(flatten)]
    coins: CoinsConfig,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    telemetry::init("info");
    let client = telemetry::connect(&args.nats, "agora-coins").await?;
    telemetry::observe(&client, "coins", &telemetry::process_instance());
    coins::run(client, args.coins, telemetry::shutdown_signal()).await
}
