//! `agora files ...`: list, stat, and get (with a progress bar, resume and a digest check);
//! `cache` shows a server's cache.

use anyhow::Context;
use std::io::{Read, Write};
use std::path::PathBuf;

use agora_nats::AgoraClient;
use agora_nats::files::client::Progress;
use agora_nats::files::wire::{FileStat, ListFilesRequest};
use agora_nats::files::{FileHasher, finish_hex};
use clap::Subcommand;
use indicatif::{ProgressBar, ProgressStyle};
use sha2::Digest;

#[derive(Debug, Subcommand)]
pub enum FilesCommand {
    /// Download a file; resumes a `<out>.part` left by an interrupted download of the same
    /// version, and checks the sha256.
    Get {
        name: String,
        /// Where to write (default: the file's base name in the current directory; a
        /// directory: the file's base name in it).
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// List files (names, sizes).
    List {
        #[arg(long)]
        prefix: Option<String>,
        #[arg(long, default_value_t = 1_000)]
        limit: usize,
    },
    /// A file's size, modification time, sha256 and chunking.
    Stat { name: String },
    /// What one server has cached, and its cache counters.
    Cache,
    /// Upload a local file, replacing the served file of that name whole (the manager role);
    /// a file larger than a message goes in parts, read from disk as they are sent.
    Put {
        /// The local file.
        path: PathBuf,
        /// The name to serve it as (default: the local file's base name).
        #[arg(long)]
        name: Option<String>,
    },
    /// Remove a served file (the manager role); every server stops serving it at once.
    Rm { name: String },
}

struct Bar(Option<ProgressBar>);

/// A progress bar of `size` bytes, on the terminal only (hidden when stderr is not one).
fn bar(size: u64) -> ProgressBar {
    let bar = ProgressBar::new(size);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

impl Progress for Bar {
    fn started(&mut self, stat: &FileStat, resumed_from: u64) {
        let bar = bar(stat.size);
        bar.set_position(resumed_from);
        self.0 = Some(bar);
    }
    fn advanced(&mut self, bytes: u64) {
        if let Some(bar) = &self.0 {
            bar.inc(bytes);
        }
    }
}

pub async fn run(client: &AgoraClient, command: FilesCommand, json: bool) -> anyhow::Result<()> {
    match command {
        FilesCommand::Get { name, output } => {
            let base = name.rsplit('/').next().unwrap_or(name.as_str());
            let output = match output {
                Some(directory) if directory.is_dir() => directory.join(base),
                Some(path) => path,
                None => PathBuf::from(base),
            };
            let part = output.with_extension(match output.extension() {
                Some(ext) => format!("{}.part", ext.to_string_lossy()),
                None => "part".to_owned(),
            });
            let version = PathBuf::from(format!("{}.sha256", part.display()));
            // Resume only a part of the same version of the file.
            let stat = client.file_stat(&name).await?;
            let mut hasher = FileHasher::new();
            let mut resumed_from = 0;
            let same_version =
                std::fs::read_to_string(&version).is_ok_and(|v| v.trim() == stat.sha256);
            if same_version && let Ok(mut existing) = std::fs::File::open(&part) {
                let mut buffer = vec![0u8; 1 << 20];
                loop {
                    let read = existing.read(&mut buffer)?;
                    if read == 0 {
                        break;
                    }
                    hasher.update(&buffer[..read]);
                    resumed_from += read as u64;
                }
            }
            let writing = |path: &std::path::Path| format!("cannot write {}", path.display());
            std::fs::write(&version, &stat.sha256).with_context(|| writing(&version))?;
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&part)
                .with_context(|| writing(&part))?;
            if resumed_from == 0 {
                file.set_len(0).with_context(|| writing(&part))?;
            }
            let mut bar = Bar(None);
            let progress: &mut (dyn Progress + Send) = if json { &mut () } else { &mut bar };
            let stat =
                client.download(&name, resumed_from, &mut file, &mut hasher, progress).await?;
            file.flush().with_context(|| writing(&part))?;
            if let Some(bar) = &bar.0 {
                bar.finish_and_clear();
            }
            let digest = finish_hex(hasher);
            if digest != stat.sha256 {
                std::fs::remove_file(&part).ok();
                std::fs::remove_file(&version).ok();
                anyhow::bail!("digest mismatch: got {digest}, the server said {}", stat.sha256);
            }
            std::fs::rename(&part, &output).with_context(|| writing(&output))?;
            std::fs::remove_file(&version).ok();
            if json {
                println!("{}", serde_json::to_value(&stat)?);
            } else {
                println!(
                    "{} -> {}: {} bytes, sha256 {} (verified){}",
                    stat.name,
                    output.display(),
                    stat.size,
                    stat.sha256,
                    if resumed_from > 0 {
                        format!(", resumed at {resumed_from}")
                    } else {
                        String::new()
                    }
                );
            }
        }
        FilesCommand::List { prefix, limit } => {
            let reply = client.list_files(&ListFilesRequest { prefix, limit: Some(limit) }).await?;
            if json {
                println!("{}", serde_json::to_value(&reply)?);
            } else {
                for file in &reply.files {
                    println!("{:>12}  {}  {}", file.size, crate::utc(file.modified_ms), file.name);
                }
                if reply.truncated {
                    println!("(truncated: use --prefix or --limit)");
                }
            }
        }
        FilesCommand::Put { path, name } => {
            let name = match name {
                Some(name) => name,
                None => path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .map(str::to_owned)
                    .ok_or_else(|| anyhow::anyhow!("give --name for {}", path.display()))?,
            };
            let stat = put(client, &path, &name, !json).await?;
            if json {
                println!("{}", serde_json::to_value(&stat)?);
            } else {
                println!("{}: {} bytes, sha256 {}", stat.name, stat.size, stat.sha256);
            }
        }
        FilesCommand::Rm { name } => {
            let removed = client.delete_file(&name).await?;
            if json {
                println!("{}", serde_json::to_value(&removed)?);
            } else {
                println!("removed {} ({} bytes)", removed.name, removed.size);
            }
        }
        FilesCommand::Stat { name } => {
            let stat = client.file_stat(&name).await?;
            if json {
                println!("{}", serde_json::to_value(&stat)?);
            } else {
                println!(
                    "{}: {} bytes, modified {}, sha256 {}, {} chunks of {} bytes{}",
                    stat.name,
                    stat.size,
                    crate::utc(stat.modified_ms),
                    stat.sha256,
                    stat.chunks,
                    stat.chunk_bytes,
                    if stat.cached { ", cached" } else { "" }
                );
            }
        }
        FilesCommand::Cache => {
            let report = client.file_cache().await?;
            if json {
                println!("{}", serde_json::to_value(&report)?);
            } else {
                println!(
                    "{} of {} bytes cached; hits {}, misses {}, evictions {}, invalidations {}",
                    report.bytes,
                    report.capacity_bytes,
                    report.hits,
                    report.misses,
                    report.evictions,
                    report.invalidations
                );
                for entry in &report.entries {
                    println!("{:>12}  {}", entry.bytes, entry.name);
                }
            }
        }
    }
    Ok(())
}

/// Uploads the local file `path` as `name`: whole when it fits one message, else in parts read
/// from disk one at a time (its digest taken first, and checked by the server at the end),
/// with a progress bar when `show` and on a terminal.
async fn put(
    client: &AgoraClient,
    path: &std::path::Path,
    name: &str,
    show: bool,
) -> anyhow::Result<FileStat> {
    let cannot = |e: std::io::Error| anyhow::anyhow!("cannot read {}: {e}", path.display());
    let size = std::fs::metadata(path).map_err(cannot)?.len();
    if size <= client.upload_bytes_max() as u64 {
        let bytes = std::fs::read(path).map_err(cannot)?;
        return Ok(client.put_file(name, bytes.into()).await?);
    }
    let mut hasher = FileHasher::default();
    std::io::copy(&mut std::fs::File::open(path).map_err(cannot)?, &mut hasher).map_err(cannot)?;
    let sha256 = finish_hex(hasher);
    let file = tokio::fs::File::open(path).await.map_err(cannot)?;
    let body = futures::stream::unfold(file, |mut file| async move {
        use tokio::io::AsyncReadExt;
        let mut buffer = vec![0u8; 1 << 20];
        match file.read(&mut buffer).await {
            Ok(0) => None,
            Ok(read) => {
                buffer.truncate(read);
                Some((Ok(bytes::Bytes::from(buffer)), file))
            }
            Err(error) => Some((Err(error), file)),
        }
    });
    let shown = show.then(|| bar(size));
    let body = futures::StreamExt::inspect(body, |read: &std::io::Result<bytes::Bytes>| {
        if let (Some(bar), Ok(bytes)) = (&shown, read) {
            bar.inc(bytes.len() as u64);
        }
    });
    let stat = client.put_file_parts(name, size, Some(&sha256), body).await;
    if let Some(bar) = shown {
        bar.finish_and_clear();
    }
    Ok(stat?)
}
