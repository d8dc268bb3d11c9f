//! Snapshots: a copy of a service's SQLite view at a log sequence, in the replicated object
//! store `AGORA_SNAPSHOTS` (one object per service, replaced by the next). They bound how much
//! of the log a new instance replays and how long the log grows: once a snapshot at `S` is
//! stored, the log keeps only what follows it (and what the event relay may still need).
//!
//! The active instance takes one every `--snapshot-every` entries, off its owner: a read-only
//! connection runs `VACUUM INTO` (a consistent copy while the owner keeps writing, WAL mode),
//! the copy is uploaded, then the log is purged below it. An instance whose disk is empty (or
//! whose position the log no longer holds) downloads the snapshot, then replays what follows.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context as _;
use async_nats::jetstream::{self, object_store};
use rusqlite::{Connection, OpenFlags};
use tokio::io::AsyncWriteExt;

use super::log;
use crate::subjects::replica as subject;

/// Opens (creating if needed) the snapshot store.
pub async fn store(
    js: &jetstream::Context,
    replicas: usize,
) -> anyhow::Result<object_store::ObjectStore> {
    let wanted = object_store::Config {
        bucket: subject::SNAPSHOT_BUCKET.to_owned(),
        description: Some("snapshots of Agora's replicated services".to_owned()),
        storage: jetstream::stream::StorageType::File,
        num_replicas: replicas,
        ..Default::default()
    };
    match js.create_object_store(wanted).await {
        Ok(store) => Ok(store),
        Err(error) => js.get_object_store(subject::SNAPSHOT_BUCKET).await.map_err(|e| {
            anyhow::anyhow!("cannot create ({error}) or open ({e}) the snapshot store")
        }),
    }
}

/// Removes a database and its WAL files.
pub fn remove_database(path: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let mut file = path.as_os_str().to_owned();
        file.push(suffix);
        std::fs::remove_file(PathBuf::from(file)).ok();
    }
}

/// Downloads the service's snapshot to `path` (replacing what is there): its log position, or
/// `None` when there is none.
pub async fn restore(
    store: &object_store::ObjectStore,
    service: &str,
    path: &Path,
) -> anyhow::Result<Option<u64>> {
    let mut object = match store.get(service).await {
        Ok(object) => object,
        Err(error) if error.kind() == object_store::GetErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(anyhow::anyhow!("cannot read the {service} snapshot: {error}")),
    };
    let partial = path.with_extension("restoring");
    if let Some(dir) = path.parent() {
        tokio::fs::create_dir_all(dir).await.ok();
    }
    let mut file = tokio::fs::File::create(&partial).await.context("creating the restore file")?;
    tokio::io::copy(&mut object, &mut file).await.context("downloading the snapshot")?;
    file.flush().await?;
    file.sync_all().await?;
    drop(file);
    remove_database(path);
    tokio::fs::rename(&partial, path).await.context("moving the snapshot in place")?;
    let path = path.to_owned();
    let seq = tokio::task::spawn_blocking(move || -> anyhow::Result<u64> {
        let conn = Connection::open(&path)?;
        Ok(log::applied(&conn)?)
    })
    .await??;
    tracing::info!(service, seq, "restored the snapshot");
    Ok(Some(seq))
}

/// Takes snapshots for the active instance.
#[allow(missing_debug_implementations)]
pub struct Snapshots {
    js: jetstream::Context,
    store: object_store::ObjectStore,
    service: &'static str,
    log_stream: String,
    database: PathBuf,
    every: u64,
    last: u64,
    running: Arc<AtomicBool>,
    /// The service's runtime (the owner may run on a small runtime of its own).
    runtime: tokio::runtime::Handle,
}

impl Snapshots {
    pub fn new(
        js: jetstream::Context,
        store: object_store::ObjectStore,
        service: &'static str,
        database: PathBuf,
        every: u64,
        last: u64,
    ) -> Self {
        Self {
            js,
            store,
            service,
            log_stream: subject::log_stream(service),
            database,
            every: every.max(1),
            last,
            running: Arc::default(),
            runtime: tokio::runtime::Handle::current(),
        }
    }

    /// Starts a snapshot in the background if `every` entries passed since the last one and
    /// none is running.
    pub fn maybe_take(&mut self, applied: u64, relayed: u64) {
        if applied < self.last + self.every || self.running.swap(true, Ordering::Relaxed) {
            return;
        }
        self.last = applied;
        let (js, store, service, stream, database, running) = (
            self.js.clone(),
            self.store.clone(),
            self.service,
            self.log_stream.clone(),
            self.database.clone(),
            self.running.clone(),
        );
        self.runtime.spawn(async move {
            match take(&js, &store, service, &stream, &database, relayed).await {
                Ok(seq) => tracing::info!(service, seq, "snapshot stored; log purged below it"),
                Err(error) => tracing::warn!(service, %error, "snapshot failed"),
            }
            running.store(false, Ordering::Relaxed);
        });
    }
}

/// Copies the view, uploads it, purges the log below it (and below what the relay still
/// needs): the snapshot's sequence.
pub async fn take(
    js: &jetstream::Context,
    store: &object_store::ObjectStore,
    service: &str,
    log_stream: &str,
    database: &Path,
    relayed: u64,
) -> anyhow::Result<u64> {
    let copy = database.with_extension("snapshot");
    let (source, target) = (database.to_owned(), copy.clone());
    let seq = tokio::task::spawn_blocking(move || -> anyhow::Result<u64> {
        std::fs::remove_file(&target).ok();
        let conn = Connection::open_with_flags(
            &source,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute("VACUUM INTO ?1", [target.to_string_lossy().as_ref()])?;
        drop(conn);
        Ok(log::applied(&Connection::open(&target)?)?)
    })
    .await??;
    let mut file = tokio::fs::File::open(&copy).await?;
    let meta = object_store::ObjectMetadata {
        name: service.to_owned(),
        description: Some(format!("{service} at log sequence {seq}")),
        ..Default::default()
    };
    store.put(meta, &mut file).await.map_err(|e| anyhow::anyhow!("uploading: {e}"))?;
    tokio::fs::remove_file(&copy).await.ok();
    let keep_from = seq.min(relayed) + 1;
    let stream = js.get_stream(log_stream).await?;
    stream.purge().sequence(keep_from).await.map_err(|e| anyhow::anyhow!("purging: {e}"))?;
    Ok(seq)
}
