//! `agora-bank`: the client-facing money service; run any number side by side.

use agora_nats::bank::{self, BankConfig};
use agora_nats::connection::NatsArgs;
use agora_nats::telemetry;
use clap::Parser;

/// The services allocate many small, short-lived buffers per request (JSON, subjects,
/// replies); mimalloc measured faster than the system allocator for that.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Agora bank: deposit, withdraw, balance and transfer, with group commit at the ledger.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    nats: NatsArgs,
    #[command(flatten)]
    bank: BankConfig,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    telemetry::init("info");
    let id = args.bank.bank_id.clone();
    let client = telemetry::connect(&args.nats, &format!("agora-bank {id}")).await?;
    telemetry::observe(&client, "bank", &id);
    let ledger_client = telemetry::connect(&args.nats, &format!("agora-bank {id} ledger")).await?;
    bank::run(
        client,
        ledger_client,
        args.bank,
        || telemetry::announce_ready("agora-bank"),
        telemetry::shutdown_signal(),
    )
    .await
}
