//! `agora-tasks`: the task service. Accepts tasks, queues them for the workers on JetStream,
//! and records every task's lifecycle in SQLite.

use std::path::PathBuf;

use agora_nats::connection::NatsArgs;
use agora_nats::tasks::{self, TasksConfig};
use agora_nats::telemetry;
use clap::Parser;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Agora task service: submit, get, list, cancel and wait for tasks; workers report here.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    nats: NatsArgs,
    /// Directory of the SQLite database (created if missing).
    #[arg(long, env = "AGORA_TASKS_DATA_DIR", default_value = "data/tasks")]
    data_dir: PathBuf,
    /// Most unfinished (queued or running) tasks; beyond, submissions get `busy`.
    #[arg(long, env = "AGORA_TASKS_PENDING_MAX", default_value_t = 100_000)]
    pending_max: usize,
    /// How long finished tasks are kept, in milliseconds (default 7 days).
    #[arg(long, env = "AGORA_TASKS_RETAIN_MS", default_value_t = 7 * 24 * 60 * 60 * 1000)]
    retain_ms: u64,
    /// Most tasks kept in the store (the oldest finished ones go first).
    #[arg(long, env = "AGORA_TASKS_MAX", default_value_t = 1_000_000)]
    tasks_max: u64,
    /// How long a worker may hold a task without a heartbeat before it goes to another one.
    #[arg(long, env = "AGORA_TASKS_ACK_WAIT_MS", default_value_t = 30_000)]
    ack_wait_ms: u64,
    /// Attempts per task at most; a task failing them all becomes a dead letter.
    #[arg(long, env = "AGORA_TASKS_MAX_DELIVER", default_value_t = 5)]
    max_deliver: i64,
    /// Replicas of the work-queue stream (3 on a three-node cluster: tasks survive a node loss).
    #[arg(long, env = "AGORA_TASKS_STREAM_REPLICAS", default_value_t = 1)]
    stream_replicas: usize,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    telemetry::init("info");
    let client = telemetry::connect(&args.nats, "agora-tasks").await?;
    telemetry::publish_logs(&client, "tasks", &telemetry::process_instance());
    let config = TasksConfig {
        data_dir: args.data_dir,
        pending_max: args.pending_max,
        retain_ms: args.retain_ms,
        tasks_max: args.tasks_max,
        ack_wait_ms: args.ack_wait_ms,
        max_deliver: args.max_deliver,
        stream_replicas: args.stream_replicas,
    };
    tasks::run(client, config, telemetry::shutdown_signal()).await
}
