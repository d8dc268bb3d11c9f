//! `agora-worker`: runs tasks from the shared JetStream work queue. Run any number of them.

use agora_nats::connection::NatsArgs;
use agora_nats::tasks::worker::{self, WorkerConfig};
use agora_nats::telemetry;
use clap::Parser;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Agora worker: takes tasks from the shared work queue, runs them and reports the outcome.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    nats: NatsArgs,
    #[command(flatten)]
    worker: WorkerConfig,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    telemetry::init("info");
    let id = args.worker.worker_id.clone();
    let client = telemetry::connect(&args.nats, &format!("agora-worker {id}")).await?;
    telemetry::observe(&client, "worker", &id);
    worker::run(client, args.worker, telemetry::shutdown_signal()).await
}
