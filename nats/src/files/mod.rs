//! The file service (`agora-files`, any number in one queue group): files under a root
//! directory, fetched in chunks, hot ones from a bounded in-memory cache.
//!
//! ## Fetching
//! `agora.files.stat` gives a file's size, modification time, sha256 and the chunk size;
//! `agora.files.get` returns the raw bytes of one chunk (`offset`, at most one chunk long),
//! optionally only if the file still has the sha256 the client started with (`conflict`
//! otherwise), so a download that spans a change never mixes two versions. Clients fetch
//! several chunks at once, in order, verify the digest at the end, and can resume from any
//! offset. A chunk fits the server's max payload.
//!
//! ## Cache
//! Files up to `--cache-file-bytes-max` are read whole into a least-recently-used cache bounded
//! by `--cache-bytes` (moka, weighed by bytes). Each access checks the file's size and mtime on
//! disk; a changed file is dropped from the cache and read again. Larger files are read from
//! disk chunk by chunk and never cached (their digest is remembered per size and mtime). Hits,
//! misses, evictions and cached bytes are in `$SRV.STATS` and `agora.files.cache`.
//!
//! ## Changing files (the manager's)
//! `agora.files.put` writes a file whole (one message, or in parts); `agora.files.delete`
//! removes one and answers it as it was. Neither ever leaves a half-written file in view, and
//! every server sees the change at its next access.
//!
//! ## Confinement
//! A name is a relative path of normal components: absolute paths, `..`, `.` and backslashes
//! are `invalid_request`; a name whose real path (symlinks resolved) leaves the root, or that is
//! not a regular file, is `not_found`.

pub mod client;
mod disk;
pub mod wire;

pub use disk::check_name;

use std::collections::HashMap;
use std::future::Future;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context as _;
use async_nats::service::Request;
use async_nats::{Client, HeaderMap};
use bytes::Bytes;
use futures::StreamExt;
use moka::notification::RemovalCause;
use moka::policy::EvictionPolicy;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use crate::error::{ErrorCode, ServiceError};
use crate::metrics;
use crate::service::{ErrorCounts, Replier, add_endpoint, decode, decode_or_default, encode};
use crate::subjects::files as subject;
use wire::{
    CacheReport, CachedEntry, FileEntry, FileStat, GetRequest, HEADER_NAME, HEADER_OFFSET,
    HEADER_SHA256, HEADER_SIZE, HEADER_UPLOAD, ListFilesReply, ListFilesRequest, StatRequest,
    UploadProgress,
};

/// Longest file name (relative path), in bytes.
pub const NAME_BYTES_MAX: usize = 1_024;
/// `agora.files.list` sizes, and the most directory entries one listing visits.
pub const LIST_LIMIT_DEFAULT: usize = 1_000;
pub const LIST_LIMIT_MAX: usize = 10_000;
/// The largest `agora.files.list` body.
pub const LIST_BYTES_MAX: usize = 4 * 1024;
/// The smallest chunk, and the chunk size when the server states no max payload.
pub const CHUNK_BYTES_MIN: usize = 1024;
const CHUNK_BYTES_UNSTATED: usize = 1024 * 1024;
const LIST_VISITS_MAX: usize = 100_000;
/// Requests handled at once at most (beyond: `busy`).
pub const REQUESTS_IN_FLIGHT_MAX: usize = 512;
/// Uploads handled at once at most (each holds up to a max payload in memory).
pub const UPLOADS_IN_FLIGHT_MAX: usize = 4;
/// Room left in a message for headers and protocol next to a chunk.
pub const PAYLOAD_HEADROOM: usize = 4 * 1024;
/// Digests of uncached files remembered at most.
const DIGESTS_MAX: u64 = 10_000;

/// File service configuration: the flags of `agora-files`.
#[derive(Debug, Clone, clap::Args)]
pub struct FilesConfig {
    /// The served directory (subdirectories included; nothing outside it).
    #[arg(long, env = "AGORA_FILES_ROOT", default_value = "files")]
    pub root: PathBuf,
    /// Cache capacity, in bytes.
    #[arg(long, env = "AGORA_FILES_CACHE_BYTES", default_value_t = 256 * 1024 * 1024)]
    pub cache_bytes: u64,
    /// Files larger than this are read from disk chunk by chunk, never cached, in bytes.
    #[arg(long, env = "AGORA_FILES_CACHE_FILE_BYTES_MAX", default_value_t = 32 * 1024 * 1024)]
    pub cache_file_bytes_max: u64,
    /// Chunk size, in bytes (lowered to fit the server's max payload).
    #[arg(long, env = "AGORA_FILES_CHUNK_BYTES", default_value_t = 512 * 1024)]
    pub chunk_bytes: usize,
    /// The largest file an upload sent in parts may make, in bytes.
    #[arg(long, env = "AGORA_FILES_UPLOAD_BYTES_MAX", default_value_t = 1024 * 1024 * 1024)]
    pub upload_bytes_max: u64,
    /// Uploads sent in parts that may be in progress at once (beyond: `busy`).
    #[arg(long, env = "AGORA_FILES_UPLOADS_MAX", default_value_t = 64)]
    pub uploads_max: usize,
    /// An upload no part of which arrived for this long is dropped when another begins, in ms.
    #[arg(long, env = "AGORA_FILES_UPLOAD_IDLE_MS", default_value_t = 15 * 60 * 1000)]
    pub upload_idle_ms: u64,
}

/// Longest upload id (`Agora-Upload`).
pub const UPLOAD_ID_BYTES_MAX: usize = 64;

/// A cached file: its bytes and the version they are.
#[derive(Debug)]
struct Cached {
    bytes: Bytes,
    size: u64,
    modified_ms: u64,
    sha256: String,
}

/// What a request learns about a file.
#[derive(Debug, Clone)]
struct Found {
    name: String,
    path: PathBuf,
    size: u64,
    modified_ms: u64,
    sha256: String,
    cached: Option<Arc<Cached>>,
}

#[derive(Debug, Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    evictions: Arc<AtomicU64>,
    invalidations: AtomicU64,
}

struct Files {
    root: PathBuf,
    cache: moka::sync::Cache<String, Arc<Cached>>,
    /// Digests of files too large to cache: name → (size, mtime, sha256).
    digests: moka::sync::Cache<String, (u64, u64, String)>,
    counters: Counters,
    capacity_bytes: u64,
    file_bytes_max: u64,
    chunk_bytes: u64,
    upload_bytes_max: u64,
    staging: disk::Staging,
}

pub(crate) fn invalid(message: impl Into<String>) -> ServiceError {
    ServiceError::invalid(message)
}

pub(crate) fn not_found(name: &str) -> ServiceError {
    ServiceError::new(ErrorCode::NotFound, format!("no file {name}"))
}

fn io_error(error: &std::io::Error) -> ServiceError {
    ServiceError::new(ErrorCode::Unavailable, format!("cannot read the file: {error}"))
}

pub(crate) fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

impl Files {
    /// A file as it is on disk now, from the cache when the cache has this version.
    fn find(&self, name: &str) -> Result<Found, ServiceError> {
        let (path, metadata) = disk::resolve(&self.root, name)?;
        let (size, modified_ms) = (metadata.len(), disk::modified_ms(&metadata));
        let found = |sha256: String, cached| Found {
            name: name.to_owned(),
            path: path.clone(),
            size,
            modified_ms,
            sha256,
            cached,
        };
        if let Some(cached) = self.cache.get(name) {
            if cached.size == size && cached.modified_ms == modified_ms {
                self.counters.hits.fetch_add(1, Ordering::Relaxed);
                return Ok(found(cached.sha256.clone(), Some(cached)));
            }
            self.cache.invalidate(name);
            self.counters.invalidations.fetch_add(1, Ordering::Relaxed);
        }
        self.counters.misses.fetch_add(1, Ordering::Relaxed);
        if size <= self.file_bytes_max && size <= self.capacity_bytes {
            let bytes = std::fs::read(&path).map_err(|e| io_error(&e))?;
            if bytes.len() as u64 != size {
                return Err(ServiceError::new(ErrorCode::Busy, "the file is being written; retry"));
            }
            let sha256 = hex(&Sha256::digest(&bytes));
            let cached = Arc::new(Cached {
                bytes: Bytes::from(bytes),
                size,
                modified_ms,
                sha256: sha256.clone(),
            });
            // Apply the recorded reads first, so eviction follows the true recency.
            self.cache.run_pending_tasks();
            self.cache.insert(name.to_owned(), cached.clone());
            return Ok(found(sha256, Some(cached)));
        }
        if let Some((s, m, sha256)) = self.digests.get(name)
            && s == size
            && m == modified_ms
        {
            return Ok(found(sha256, None));
        }
        let mut file = std::fs::File::open(&path).map_err(|e| io_error(&e))?;
        let mut hasher = Sha256::new();
        let mut buffer = vec![0u8; 1 << 20];
        loop {
            let read = file.read(&mut buffer).map_err(|e| io_error(&e))?;
            if read == 0 {
                break;
            }
            hasher.update(&buffer[..read]);
        }
        let sha256 = hex(&hasher.finalize());
        self.digests.insert(name.to_owned(), (size, modified_ms, sha256.clone()));
        Ok(found(sha256, None))
    }

    fn stat(&self, name: &str) -> Result<FileStat, ServiceError> {
        let found = self.find(name)?;
        Ok(FileStat {
            name: found.name,
            size: found.size,
            modified_ms: found.modified_ms,
            sha256: found.sha256,
            chunk_bytes: self.chunk_bytes,
            chunks: found.size.div_ceil(self.chunk_bytes),
            cached: found.cached.is_some(),
        })
    }

    fn get(&self, request: &GetRequest) -> Result<(Bytes, Found), ServiceError> {
        let length = request.length.unwrap_or(self.chunk_bytes);
        if length == 0 || length > self.chunk_bytes {
            return Err(invalid(format!("length is 1..={}", self.chunk_bytes)));
        }
        let found = self.find(&request.name)?;
        if request.sha256.as_ref().is_some_and(|expected| *expected != found.sha256) {
            return Err(ServiceError::new(
                ErrorCode::Conflict,
                format!(
                    "{} changed since you started (sha256 {}); start again",
                    found.name, found.sha256
                ),
            ));
        }
        if request.offset > found.size {
            return Err(invalid(format!(
                "offset {} is past the end ({})",
                request.offset, found.size
            )));
        }
        let end = found.size.min(request.offset.saturating_add(length));
        let bytes = match &found.cached {
            Some(cached) => cached.bytes.slice(request.offset as usize..end as usize),
            None => {
                let mut file = std::fs::File::open(&found.path).map_err(|e| io_error(&e))?;
                file.seek(SeekFrom::Start(request.offset)).map_err(|e| io_error(&e))?;
                let mut buffer = vec![0u8; (end - request.offset) as usize];
                file.read_exact(&mut buffer).map_err(|e| io_error(&e))?;
                Bytes::from(buffer)
            }
        };
        Ok((bytes, found))
    }

    fn list(&self, prefix: &str, limit: usize) -> ListFilesReply {
        let mut files = Vec::new();
        let mut pending = vec![self.root.clone()];
        let mut visits = 0;
        let mut truncated = false;
        while let Some(dir) = pending.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else { continue };
            for entry in entries.flatten() {
                visits += 1;
                if visits > LIST_VISITS_MAX {
                    truncated = true;
                    break;
                }
                let Ok(real) = entry.path().canonicalize() else { continue };
                if !real.starts_with(&self.root) {
                    continue;
                }
                let Ok(metadata) = std::fs::metadata(&real) else { continue };
                let Ok(relative) = entry.path().strip_prefix(&self.root).map(Path::to_path_buf)
                else {
                    continue;
                };
                let Some(name) = relative.to_str().map(str::to_owned) else { continue };
                if metadata.is_dir() {
                    // Symlinked directories are not followed (no loops).
                    if entry.file_type().is_ok_and(|t| t.is_dir()) {
                        pending.push(entry.path());
                    }
                } else if metadata.is_file()
                    && name.starts_with(prefix)
                    && !name.contains(disk::UPLOAD_MARK)
                {
                    files.push(FileEntry {
                        name,
                        size: metadata.len(),
                        modified_ms: disk::modified_ms(&metadata),
                    });
                }
            }
        }
        files.sort_by(|a, b| a.name.cmp(&b.name));
        if files.len() > limit {
            files.truncate(limit);
            truncated = true;
        }
        ListFilesReply { files, truncated }
    }

    /// Writes `bytes` as file `name` (creating its directories), whole or not at all: into a
    /// temporary file beside it, synced, then renamed over the old one. Readers see the old
    /// version or the new one, and every server sees the new one at its next access (the
    /// cache checks size and mtime).
    fn put(
        &self,
        name: &str,
        bytes: &[u8],
        sha256: Option<&str>,
    ) -> Result<FileStat, ServiceError> {
        disk::check_upload_name(name)?;
        let digest = sha256_hex(bytes);
        if let Some(expected) = sha256
            && !expected.eq_ignore_ascii_case(&digest)
        {
            return Err(invalid(format!(
                "the body's sha256 is {digest}, not {expected}: it was damaged or cut"
            )));
        }
        disk::write_whole(&self.root, name, bytes)?;
        self.cache.invalidate(name);
        self.stat(name)
    }

    /// Removes file `name` (the manager's): every server stops serving it at once, since each
    /// looks at the disk on every request.
    fn delete(&self, name: &str) -> Result<FileEntry, ServiceError> {
        let metadata = disk::remove(&self.root, name)?;
        self.cache.invalidate(name);
        self.digests.invalidate(name);
        Ok(FileEntry {
            name: name.to_owned(),
            size: metadata.len(),
            modified_ms: disk::modified_ms(&metadata),
        })
    }

    /// Writes one part of an upload sent in parts; the last one puts the file in place whole
    /// (as [`Files::put`] does) and answers its stat, the others the bytes held so far.
    fn put_part(&self, part: &disk::Part<'_>, sha256: Option<&str>) -> Result<Bytes, ServiceError> {
        disk::check_upload_name(part.name)?;
        let upload = part.upload;
        if !agora_core::token::is_word(upload, UPLOAD_ID_BYTES_MAX) {
            return Err(invalid(format!(
                "an upload id is 1..={UPLOAD_ID_BYTES_MAX} characters of [A-Za-z0-9_-]"
            )));
        }
        if part.size > self.upload_bytes_max {
            return Err(invalid(format!(
                "a file of {} bytes is more than an upload may make ({} bytes)",
                part.size, self.upload_bytes_max
            )));
        }
        let end = part.offset.checked_add(part.bytes.len() as u64);
        if end.is_none_or(|end| end > part.size) {
            return Err(invalid(format!(
                "a part of {} bytes at offset {} ends past the file's size ({})",
                part.bytes.len(),
                part.offset,
                part.size
            )));
        }
        if part.bytes.is_empty() && part.size > 0 {
            return Err(invalid("a part carries at least one byte"));
        }
        let (staged, received) = disk::write_part(&self.root, self.staging, part)?;
        if received < part.size {
            return encode(&UploadProgress {
                name: part.name.to_owned(),
                upload: upload.to_owned(),
                received,
                size: part.size,
            });
        }
        let digest = disk::finish(&self.root, part.name, &staged, sha256)?;
        self.cache.invalidate(part.name);
        // Its digest is known: the stat below (and later ones) need not read it again.
        if let Ok((_, metadata)) = disk::resolve(&self.root, part.name) {
            let version = (metadata.len(), disk::modified_ms(&metadata), digest);
            self.digests.insert(part.name.to_owned(), version);
        }
        encode(&self.stat(part.name)?)
    }

    fn report(&self, entries: bool) -> CacheReport {
        self.cache.run_pending_tasks();
        let mut listed: Vec<CachedEntry> = if entries {
            self.cache
                .iter()
                .map(|(name, cached)| CachedEntry {
                    name: name.to_string(),
                    bytes: cached.size,
                    modified_ms: cached.modified_ms,
                })
                .collect()
        } else {
            Vec::new()
        };
        listed.sort_by(|a, b| a.name.cmp(&b.name));
        CacheReport {
            capacity_bytes: self.capacity_bytes,
            file_bytes_max: self.file_bytes_max,
            bytes: self.cache.weighted_size(),
            hits: self.counters.hits.load(Ordering::Relaxed),
            misses: self.counters.misses.load(Ordering::Relaxed),
            evictions: self.counters.evictions.load(Ordering::Relaxed),
            invalidations: self.counters.invalidations.load(Ordering::Relaxed),
            entries: listed,
        }
    }
}

/// The cache's metrics, read at each scrape.
fn cache_metrics(files: &Arc<Files>) {
    let read = |files: &Arc<Files>, pick: fn(&Files) -> u64| {
        let files = Arc::downgrade(files);
        move || files.upgrade().map(|files| pick(&files))
    };
    metrics::gauge_from("files_cache_bytes", "Bytes of file contents held in the cache", {
        let bytes = read(files, |f| f.cache.weighted_size());
        move || bytes().map(|b| b as i64)
    });
    type Pick = fn(&Files) -> u64;
    let counters: [(&str, &str, Pick); 4] = [
        ("files_cache_hits", "Reads served from the cache", |f| {
            f.counters.hits.load(Ordering::Relaxed)
        }),
        ("files_cache_misses", "Reads that went to the disk", |f| {
            f.counters.misses.load(Ordering::Relaxed)
        }),
        ("files_cache_evictions", "Files evicted to stay within the cache's bytes", |f| {
            f.counters.evictions.load(Ordering::Relaxed)
        }),
        ("files_cache_invalidations", "Cached files dropped because the file changed", |f| {
            f.counters.invalidations.load(Ordering::Relaxed)
        }),
    ];
    for (name, help, pick) in counters {
        metrics::counter_from(name, help, read(files, pick));
    }
}

/// Runs a file server until `shutdown` resolves.
pub async fn run(
    client: Client,
    config: FilesConfig,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let root = config.root.canonicalize().with_context(|| {
        format!("the served directory {} does not exist", config.root.display())
    })?;
    anyhow::ensure!(root.is_dir(), "{} is not a directory", root.display());
    anyhow::ensure!(
        config.chunk_bytes >= CHUNK_BYTES_MIN,
        "chunk-bytes is at least {CHUNK_BYTES_MIN}"
    );
    anyhow::ensure!(config.uploads_max >= 1, "uploads-max is at least 1");
    anyhow::ensure!(
        config.upload_idle_ms >= 1_000,
        "upload-idle-ms is at least 1000 (an upload's parts come one after another)"
    );
    // The server's INFO (its max payload) is known once connected: a round trip first.
    crate::client::barrier(&client).await?;
    let max_payload = match client.server_info().max_payload {
        0 => CHUNK_BYTES_UNSTATED,
        known => known,
    };
    let chunk_bytes =
        config.chunk_bytes.min(max_payload.saturating_sub(PAYLOAD_HEADROOM)).max(CHUNK_BYTES_MIN);
    let counters = Counters::default();
    let evictions = counters.evictions.clone();
    let cache = moka::sync::Cache::builder()
        .max_capacity(config.cache_bytes)
        .weigher(|_: &String, cached: &Arc<Cached>| u32::try_from(cached.size).unwrap_or(u32::MAX))
        .eviction_policy(EvictionPolicy::lru())
        .eviction_listener(move |_, _, cause| {
            if cause == RemovalCause::Size {
                evictions.fetch_add(1, Ordering::Relaxed);
            }
        })
        .build();
    let files = Arc::new(Files {
        root,
        cache,
        digests: moka::sync::Cache::new(DIGESTS_MAX),
        counters,
        capacity_bytes: config.cache_bytes,
        file_bytes_max: config.cache_file_bytes_max,
        chunk_bytes: chunk_bytes as u64,
        upload_bytes_max: config.upload_bytes_max,
        staging: disk::Staging {
            uploads_max: config.uploads_max,
            idle: std::time::Duration::from_millis(config.upload_idle_ms),
        },
    });
    tracing::info!(root = %files.root.display(), chunk_bytes, cache_bytes = config.cache_bytes, "serving files");
    cache_metrics(&files);
    let errors = ErrorCounts::default();
    let stats_errors = errors.clone();
    let stats_files = files.clone();
    let service = crate::service::builder(&client, HashMap::new())
        .description("Agora files: a directory served in chunks, hot files from memory")
        .stats_handler(move |endpoint, _| {
            let mut data = stats_errors.snapshot(&endpoint);
            if endpoint == subject::GET {
                data["cache"] = serde_json::to_value(stats_files.report(false)).unwrap_or_default();
            }
            data
        })
        .start(subject::SERVICE, env!("CARGO_PKG_VERSION"))
        .await
        .map_err(|e| anyhow::anyhow!("cannot start service: {e}"))?;
    let group = service.group(subject::GROUP);
    let in_flight = Arc::new(Semaphore::new(REQUESTS_IN_FLIGHT_MAX));
    let uploads = Arc::new(Semaphore::new(UPLOADS_IN_FLIGHT_MAX));
    let mut loops = Vec::new();
    for name in
        [subject::LIST, subject::STAT, subject::GET, subject::CACHE, subject::PUT, subject::DELETE]
    {
        let mut endpoint = add_endpoint(&group, name, name).await?;
        let replier = Replier::new(name, errors.clone());
        let in_flight = if name == subject::PUT { uploads.clone() } else { in_flight.clone() };
        let files = files.clone();
        loops.push(tokio::spawn(async move {
            while let Some(request) = endpoint.next().await {
                let Ok(permit) = in_flight.clone().try_acquire_owned() else {
                    let error =
                        ServiceError::new(ErrorCode::Busy, "the file server is busy; retry");
                    replier.reply_bytes(&request, Err(error)).await;
                    continue;
                };
                let (files, replier) = (files.clone(), replier.clone());
                tokio::spawn(async move {
                    handle(&files, name, &replier, request).await;
                    drop(permit);
                });
            }
        }));
    }
    crate::client::barrier(&client).await?;
    crate::telemetry::announce_ready(subject::SERVICE);
    shutdown.await;
    for task in &loops {
        task.abort();
    }
    drop(service);
    client.flush().await.ok();
    Ok(())
}

async fn handle(files: &Arc<Files>, endpoint: &'static str, replier: &Replier, request: Request) {
    let payload = request.message.payload.clone();
    let headers = request.message.headers.clone();
    let work = files.clone();
    // Disk reads and digests block: off the runtime's threads.
    let result =
        tokio::task::spawn_blocking(move || -> Result<(Bytes, Option<HeaderMap>), ServiceError> {
            // Anyone signed in reads; uploading is the manager's.
            let caller = crate::identity::caller(headers.as_ref())?;
            caller.signed_in("the files")?;
            match endpoint {
                subject::PUT => caller.require_manager("uploading a file")?,
                subject::DELETE => caller.require_manager("removing a file")?,
                _ => {}
            }
            match endpoint {
                subject::LIST => {
                    let request: ListFilesRequest = decode_or_default(&payload, LIST_BYTES_MAX)?;
                    let limit = request.limit.unwrap_or(LIST_LIMIT_DEFAULT);
                    if !(1..=LIST_LIMIT_MAX).contains(&limit) {
                        return Err(invalid(format!("limit is 1..={LIST_LIMIT_MAX}")));
                    }
                    let prefix = request.prefix.unwrap_or_default();
                    Ok((encode(&work.list(&prefix, limit))?, None))
                }
                subject::STAT => {
                    let request: StatRequest = decode(&payload)?;
                    Ok((encode(&work.stat(&request.name)?)?, None))
                }
                subject::GET => {
                    let request: GetRequest = decode(&payload)?;
                    let (bytes, found) = work.get(&request)?;
                    let mut headers = HeaderMap::new();
                    headers.insert(HEADER_SIZE, found.size.to_string().as_str());
                    headers.insert(HEADER_SHA256, found.sha256.as_str());
                    headers.insert(HEADER_OFFSET, request.offset.to_string().as_str());
                    Ok((bytes, Some(headers)))
                }
                subject::DELETE => {
                    let request: StatRequest = decode(&payload)?;
                    Ok((encode(&work.delete(&request.name)?)?, None))
                }
                subject::CACHE => {
                    crate::service::no_fields(&payload)?;
                    Ok((encode(&work.report(true))?, None))
                }
                subject::PUT => {
                    let header = |key: &str| {
                        headers.as_ref().and_then(|h| h.get(key)).map(|v| v.as_str().to_owned())
                    };
                    let name = header(HEADER_NAME).ok_or_else(|| {
                        invalid(format!("an upload names its file in the {HEADER_NAME} header"))
                    })?;
                    let sha256 = header(HEADER_SHA256);
                    let Some(upload) = header(HEADER_UPLOAD) else {
                        return Ok((encode(&work.put(&name, &payload, sha256.as_deref())?)?, None));
                    };
                    let number = |key: &str| {
                        header(key).and_then(|v| v.trim().parse::<u64>().ok()).ok_or_else(|| {
                            invalid(format!(
                                "a part of an upload gives its {key} header (a whole number)"
                            ))
                        })
                    };
                    let part = disk::Part {
                        name: &name,
                        upload: &upload,
                        offset: number(HEADER_OFFSET)?,
                        size: number(HEADER_SIZE)?,
                        bytes: &payload,
                    };
                    Ok((work.put_part(&part, sha256.as_deref())?, None))
                }
                other => {
                    Err(ServiceError::new(ErrorCode::Internal, format!("no endpoint {other}")))
                }
            }
        })
        .await
        .unwrap_or_else(|_| Err(ServiceError::new(ErrorCode::Internal, "the request panicked")));
    match result {
        Ok((bytes, Some(headers))) => {
            if let Err(error) = request.respond_with_headers(Ok(bytes), headers).await {
                tracing::warn!(%error, "could not send a chunk");
            }
        }
        Ok((bytes, None)) => replier.reply_bytes(&request, Ok(bytes)).await,
        Err(error) => replier.reply_bytes(&request, Err(error)).await,
    }
}

/// Lower-case hex sha256 of `bytes` (for clients checking a download).
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Lower-case hex of a finished hasher.
pub fn finish_hex(hasher: Sha256) -> String {
    hex(&hasher.finalize())
}

/// Re-export for callers that hash.
pub use sha2::Sha256 as FileHasher;

#[cfg(test)]
mod tests;
