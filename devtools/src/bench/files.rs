//! `agora bench files`: downloads of a cached 8 MiB file by 16 concurrent clients vs raw NATS
//! request-reply of chunks of the same size, in bytes/s, in alternating slices of one run.
//!
//! Each Agora client fetches the whole file as `agora files get` does (a `stat`, then the
//! chunks, [`DOWNLOAD_WINDOW`] in flight, each checked against the digest); the raw side keeps as
//! many chunk requests in flight (16 × the window) to a responder that answers each with a
//! chunk of the same size from memory.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::{Goal, Measurement, Rig, Sample, connections, print_goal, sample};
use agora_nats::client::ClientError;
use agora_nats::files::client::DOWNLOAD_WINDOW;
use agora_nats::subjects;

/// Options of `agora bench files`.
#[derive(Debug, Clone)]
pub struct FilesBenchOptions {
    pub seconds: u64,
    /// Concurrent downloading clients.
    pub clients: usize,
    /// Size of the cached file.
    pub file_bytes: usize,
}

const SLICES: u32 = 4;
const FILE_NAME: &str = "bench.bin";

/// Serves raw chunks on [`subjects::bench::CHUNK`]: the reply is as many bytes as the request
/// asks (its payload is the size in decimal), from memory.
pub async fn chunk_responder(
    url: &str,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    use futures::StreamExt;
    let client = async_nats::connect(url).await?;
    let mut requests =
        client.queue_subscribe(subjects::bench::CHUNK, subjects::bench::CHUNK.to_owned()).await?;
    agora_nats::client::barrier(&client).await?;
    agora_nats::telemetry::announce_ready("chunk-responder");
    let buffer = Bytes::from(vec![7u8; 1024 * 1024]);
    let serve = async {
        while let Some(message) = requests.next().await {
            let size: usize = std::str::from_utf8(&message.payload)
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0)
                .min(buffer.len());
            if let Some(reply) = message.reply {
                client.publish(reply, buffer.slice(..size)).await.ok();
            }
        }
    };
    tokio::select! {
        () = serve => {}
        () = shutdown => {}
    }
    Ok(())
}

/// `agora bench files`.
pub async fn files(options: FilesBenchOptions) -> anyhow::Result<Vec<Measurement>> {
    let mut rig = Rig::start(0)?;
    let served = rig.dir.path().join("served");
    std::fs::create_dir_all(&served)?;
    let file: Vec<u8> = (0..options.file_bytes).map(|i| (i % 253) as u8).collect();
    std::fs::write(served.join(FILE_NAME), &file)?;
    let args = ["bench", "chunk-responder", "--server", rig.url.as_str()].map(str::to_owned);
    rig.start_process("chunk-responder", "files", &std::env::current_exe()?, &args, &[])?;
    let root = served.display().to_string();
    rig.start_component("files", "agora-files", &["--root".to_owned(), root])?;
    let clients = Arc::new(connections(&rig.url, options.clients).await?);
    let (stat, bytes) = clients[0].fetch_file(FILE_NAME).await?;
    anyhow::ensure!(bytes == file, "the benchmark file came back different");
    let stat_again = clients[0].file_stat(FILE_NAME).await?;
    anyhow::ensure!(stat_again.cached, "the benchmark file is not cached (raise --cache-bytes)");
    let chunk = stat.chunk_bytes;
    println!(
        "agora bench files: nats-server {}, 1 file server, a cached {} B file in chunks of {chunk} \
         B, {} clients ({} chunks in flight each), {} s per side",
        crate::process::NATS_SERVER_VERSION,
        stat.size,
        options.clients,
        DOWNLOAD_WINDOW,
        options.seconds
    );
    let raw_clients = clients.clone();
    let raw = Arc::new(move |worker: usize, _sequence: u64| {
        let client = raw_clients[worker % raw_clients.len()].clone();
        async move {
            let reply = client
                .request_bytes(subjects::bench::CHUNK, Bytes::from(chunk.to_string()))
                .await?;
            if reply.len() as u64 != chunk {
                return Err(ClientError::Transport("a short raw chunk".into()));
            }
            Ok(())
        }
    });
    let file_clients = clients.clone();
    let size = stat.size;
    let ours = Arc::new(move |worker: usize, _sequence: u64| {
        let client = file_clients[worker % file_clients.len()].clone();
        async move {
            let (stat, bytes) = client.fetch_file(FILE_NAME).await?;
            if stat.size != size || bytes.len() as u64 != size {
                return Err(ClientError::Transport("a short download".into()));
            }
            Ok(())
        }
    });
    let duration = Duration::from_secs(options.seconds.max(1));
    let raw_in_flight = options.clients * DOWNLOAD_WINDOW;
    let warmup = Duration::from_millis(300);
    sample(raw_in_flight, warmup, raw.clone()).await?;
    sample(options.clients, warmup, ours.clone()).await?;
    let slice = duration / SLICES;
    let (mut raw_total, mut ours_total) = (Sample::new()?, Sample::new()?);
    for _ in 0..SLICES {
        raw_total.merge(sample(raw_in_flight, slice, raw.clone()).await?)?;
        ours_total.merge(sample(options.clients, slice, ours.clone()).await?)?;
    }
    let raw = raw_total.measurement(&format!("raw chunk request-reply ({chunk} B)"), raw_in_flight);
    let ours =
        ours_total.measurement(&format!("files.get of a cached {size} B file"), options.clients);
    let raw_bytes = raw.ops_per_second * chunk as f64;
    let ours_bytes = ours.ops_per_second * size as f64;
    println!(
        "\n{:<44} {:>9} {:>12} {:>10} {:>10} {:>8}",
        "scenario", "in-flight", "MB/s", "p50 µs", "p99 µs", "errors"
    );
    for (row, bytes_per_second) in [(&raw, raw_bytes), (&ours, ours_bytes)] {
        println!(
            "{:<44} {:>9} {:>12.1} {:>10} {:>10} {:>8}",
            row.name,
            row.in_flight,
            bytes_per_second / 1e6,
            row.latency_us_p50,
            row.latency_us_p99,
            row.errors
        );
    }
    // Goals compare bytes/s: express both as "operations" of one byte.
    let as_bytes = |row: &Measurement, per_second: f64| Measurement {
        ops_per_second: per_second,
        ..row.clone()
    };
    println!("\ngoals:");
    print_goal(
        "cached-file bytes/s >= 0.5x raw request-reply",
        Some(&as_bytes(&raw, raw_bytes)),
        Some(&as_bytes(&ours, ours_bytes)),
        Goal::RatioAtLeast(0.5),
    );
    rig.finish();
    Ok(vec![raw, ours])
}
