//! `agora-tasks`: the task service. Accepts tasks, queues them for the workers on JetStream,
//! and records every task's lifecycle in SQLite.

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
    #[command(flatten)]
    tasks: TasksConfig,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    telemetry::init("info");
    let client = telemetry::connect(&args.nats, "agora-tasks").await?;
    telemetry::observe(&client, "tasks", &telemetry::process_instance());
    tasks::run(client, args.tasks, telemetry::shutdown_signal()).await
}
