//! `agora-ledger`: the data server that owns balances, locks and operation records.

use agora_nats::connection::NatsArgs;
use agora_nats::ledger::{self, LedgerConfig};
use agora_nats::telemetry;
use clap::Parser;

/// The services allocate many small, short-lived buffers per request (JSON, subjects,
/// replies); mimalloc measured faster than the system allocator for that.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Agora ledger: account balances and leases with fencing tokens, stored in SQLite.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    nats: NatsArgs,
    #[command(flatten)]
    ledger: LedgerConfig,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    telemetry::init("info");
    let client = telemetry::connect(&args.nats, "agora-ledger").await?;
    telemetry::observe(&client, "ledger", &telemetry::process_instance());
    ledger::run(
        client,
        args.ledger,
        || telemetry::announce_ready("agora-ledger"),
        telemetry::shutdown_signal(),
    )
    .await
}
