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
    /// Unique worker name ([A-Za-z0-9_-]); defaults to worker-<random>.
    #[arg(long, env = "AGORA_WORKER_ID")]
    worker_id: Option<String>,
    /// Tasks run at once (and pulled ahead per priority).
    #[arg(long, env = "AGORA_WORKER_CONCURRENCY", default_value_t = 32)]
    concurrency: usize,
    /// Delay before the first retry of a failed task, doubling each time (max 60 s).
    #[arg(long, env = "AGORA_WORKER_RETRY_BACKOFF_MS", default_value_t = 1_000)]
    retry_backoff_ms: u64,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    telemetry::init("info");
    let worker_id = args.worker_id.unwrap_or_else(|| format!("worker-{}", &nuid::next()[..10]));
    let client = telemetry::connect(&args.nats, &format!("agora-worker {worker_id}")).await?;
    telemetry::publish_logs(&client, "worker", &worker_id);
    let config = WorkerConfig {
        worker_id,
        concurrency: args.concurrency,
        retry_backoff_ms: args.retry_backoff_ms,
    };
    worker::run(client, config, telemetry::shutdown_signal()).await
}
