//! `agora-ledger`: the data server that owns balances, locks and operation records.

use std::path::PathBuf;

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
    /// Directory of the SQLite database (created if missing).
    #[arg(long, env = "AGORA_LEDGER_DATA_DIR", default_value = "data/ledger")]
    data_dir: PathBuf,
    /// How long idempotency records of operation ids are kept, in milliseconds.
    #[arg(long, env = "AGORA_LEDGER_OPERATION_RETENTION_MS", default_value_t = 24 * 60 * 60 * 1000)]
    operation_retention_ms: u64,
    /// How many idempotency records are kept at most (the oldest go first); about 24 bytes of
    /// memory each.
    #[arg(long, env = "AGORA_LEDGER_OPERATION_RECORDS_MAX", default_value_t = 2_000_000)]
    operation_records_max: usize,
    /// Most requests queued for the storage thread before new ones get `busy`.
    #[arg(long, env = "AGORA_LEDGER_QUEUE_MAX", default_value_t = 16_384)]
    queue_max: usize,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    telemetry::init("info");
    let client = telemetry::connect(&args.nats, "agora-ledger").await?;
    telemetry::publish_logs(&client, "ledger", &telemetry::process_instance());
    let config = LedgerConfig {
        data_dir: args.data_dir,
        operation_retention_ms: args.operation_retention_ms,
        operation_records_max: args.operation_records_max,
        queue_max: args.queue_max,
    };
    ledger::run(
        client,
        config,
        || telemetry::announce_ready("agora-ledger"),
        telemetry::shutdown_signal(),
    )
    .await
}
