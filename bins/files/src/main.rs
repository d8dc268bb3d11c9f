//! `agora-files`: a file server (run any number). Serves the files under a directory in
//! chunks, hot ones from a bounded in-memory cache.

use agora_nats::connection::NatsArgs;
use agora_nats::files::{self, FilesConfig};
use agora_nats::telemetry;
use clap::Parser;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Agora file server: list, stat, get (in chunks) and cache.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    nats: NatsArgs,
    #[command(flatten)]
    files: FilesConfig,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    telemetry::init("info");
    let client = telemetry::connect(&args.nats, "agora-files").await?;
    telemetry::observe(&client, "files", &telemetry::process_instance());
    files::run(client, args.files, telemetry::shutdown_signal()).await
}
