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
    /// Name of this instance (a per-process suffix makes its ledger owner id unique).
    #[arg(long, env = "AGORA_BANK_ID", default_value = "bank")]
    bank_id: String,
    /// Most operations per group commit (1-1024).
    #[arg(long, env = "AGORA_BANK_BATCH_MAX", default_value_t = 256)]
    batch_max: usize,
    /// Batches in flight at once, over disjoint accounts (1-16).
    #[arg(long, env = "AGORA_BANK_PIPELINE_DEPTH", default_value_t = 2)]
    pipeline_depth: usize,
    /// Milliseconds to wait for more operations after the first of a batch (0: none).
    #[arg(long, env = "AGORA_BANK_BATCH_WINDOW_MS", default_value_t = 0)]
    batch_window_ms: u64,
    /// Lease on locked accounts, in milliseconds: how long a crashed instance can block them.
    #[arg(long, env = "AGORA_BANK_LEASE_MS", default_value_t = 2_000)]
    lease_ms: u64,
    /// How long an operation may wait for locked accounts before it gets `busy`.
    #[arg(long, env = "AGORA_BANK_LOCK_WAIT_MS", default_value_t = 5_000)]
    lock_wait_ms: u64,
    /// How long to wait for the ledger's reply, in milliseconds.
    #[arg(long, env = "AGORA_BANK_LEDGER_TIMEOUT_MS", default_value_t = 2_000)]
    ledger_timeout_ms: u64,
    /// Most accepted requests waiting for a batch before new ones get `busy`.
    #[arg(long, env = "AGORA_BANK_QUEUE_MAX", default_value_t = 8_192)]
    queue_max: usize,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    telemetry::init("info");
    let client = telemetry::connect(&args.nats, &format!("agora-bank {}", args.bank_id)).await?;
    telemetry::publish_logs(&client, "bank", &args.bank_id);
    let ledger_client =
        telemetry::connect(&args.nats, &format!("agora-bank {} ledger", args.bank_id)).await?;
    let config = BankConfig {
        bank_id: args.bank_id,
        batch_max: args.batch_max,
        pipeline_depth: args.pipeline_depth,
        batch_window_ms: args.batch_window_ms,
        lease_ms: args.lease_ms,
        lock_wait_ms: args.lock_wait_ms,
        ledger_timeout_ms: args.ledger_timeout_ms,
        queue_max: args.queue_max,
    };
    bank::run(
        client,
        ledger_client,
        config,
        || telemetry::announce_ready("agora-bank"),
        telemetry::shutdown_signal(),
    )
    .await
}
