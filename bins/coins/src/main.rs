//! `agora-coins`: the coin exchange (run one). Lists assets, takes buy and sell orders paid
//! through the bank, all or nothing, and finishes any order a crash left pending.

use std::path::PathBuf;

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
    /// Directory of the SQLite database (created if missing; seeded on first start).
    #[arg(long, env = "AGORA_COINS_DATA_DIR", default_value = "data/coins")]
    data_dir: PathBuf,
    /// The exchange's own bank account: buyers pay into it, sellers are paid from it.
    #[arg(long, env = "AGORA_COINS_EXCHANGE_ACCOUNT", default_value = "coins-exchange")]
    exchange_account: String,
    /// How long a bank call may take before its outcome counts as unknown, in milliseconds.
    #[arg(long, env = "AGORA_COINS_BANK_TIMEOUT_MS", default_value_t = 5_000)]
    bank_timeout_ms: u64,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    telemetry::init("info");
    let client = telemetry::connect(&args.nats, "agora-coins").await?;
    telemetry::publish_logs(&client, "coins", &telemetry::process_instance());
    let config = CoinsConfig {
        data_dir: args.data_dir,
        exchange_account: args.exchange_account,
        bank_timeout_ms: args.bank_timeout_ms,
    };
    coins::run(client, config, telemetry::shutdown_signal()).await
}
