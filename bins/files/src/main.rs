//! `agora-files`: a file server (run any number). Serves the files under a directory in
//! chunks, hot ones from a bounded in-memory cache.

use std::path::PathBuf;

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
    /// The served directory (subdirectories included; nothing outside it).
    #[arg(long, env = "AGORA_FILES_ROOT", default_value = "files")]
    root: PathBuf,
    /// Cache capacity, in bytes.
    #[arg(long, env = "AGORA_FILES_CACHE_BYTES", default_value_t = 256 * 1024 * 1024)]
    cache_bytes: u64,
    /// Files larger than this are read from disk chunk by chunk, never cached, in bytes.
    #[arg(long, env = "AGORA_FILES_CACHE_FILE_BYTES_MAX", default_value_t = 32 * 1024 * 1024)]
    cache_file_bytes_max: u64,
    /// Chunk size, in bytes (lowered to fit the server's max payload).
    #[arg(long, env = "AGORA_FILES_CHUNK_BYTES", default_value_t = 512 * 1024)]
    chunk_bytes: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    telemetry::init("info");
    let client = telemetry::connect(&args.nats, "agora-files").await?;
    telemetry::publish_logs(&client, "files", &telemetry::process_instance());
    let config = FilesConfig {
        root: args.root,
        cache_bytes: args.cache_bytes,
        cache_file_bytes_max: args.cache_file_bytes_max,
        chunk_bytes: args.chunk_bytes,
    };
    files::run(client, config, telemetry::shutdown_signal()).await
}
