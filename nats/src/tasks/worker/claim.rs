//! A worker's claim on its id: a key of the JetStream KV bucket `AGORA_WORKERS`, so that two
//! workers never run with one id, however close together they start. The server arbitrates:
//! a worker creates its key (only one create succeeds), or takes over the key of a worker that
//! no longer answers with a compare-and-set on the revision it read (only one succeeds, and
//! not if the holder renewed meanwhile). The holder renews its key by revision; the bucket's
//! `max_age` drops the key of a worker that stopped renewing. A worker that finds its key
//! changed by another, or cannot renew it for a whole lease, has lost its id and stops.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use crate::subjects::{tasks as task_subject, worker as subject};

/// How long a claim lasts without a renewal (the bucket's `max_age`).
pub const CLAIM_TTL: Duration = Duration::from_secs(6);
/// How often the holder renews it.
const RENEW_EVERY: Duration = Duration::from_secs(1);
/// The holder gives its id up this long before its key could run out at the server.
const MARGIN: Duration = Duration::from_secs(2);

/// A worker's id, held until [`Claim::release`] or until it is lost (then `lost` is
/// cancelled).
pub struct Claim {
    bucket: kv::Store,
    id: String,
    revision: Arc<AtomicU64>,
    lost: CancellationToken,
    renewer: tokio::task::JoinHandle<()>,
}

impl Claim {
    /// Claims `id` for this worker (`instance`: its micro service's id, which the key holds).
    /// `alive` tells whether the instance holding the key still answers (asked only when the
    /// key is held).
    pub async fn take(
        js: &jetstream::Context,
        id: &str,
        instance: &str,
        alive: impl AsyncFnOnce(String) -> anyhow::Result<bool>,
    ) -> anyhow::Result<Self> {
        let bucket = bucket(js).await?;
        let value = Bytes::from(instance.to_owned());
        let sent = Instant::now();
        let revision = match bucket.create(id, value.clone()).await {
            Ok(revision) => revision,
            Err(error) if error.kind() == kv::CreateErrorKind::AlreadyExists => {
                let held = bucket
                    .entry(id)
                    .await
                    .map_err(|e| anyhow::anyhow!("cannot read the claim on {id}: {e}"))?;
                let holder = held
                    .as_ref()
                    .map(|entry| String::from_utf8_lossy(&entry.value).into_owned())
                    .unwrap_or_default();
                anyhow::ensure!(
                    !alive(holder).await?,
                    "another worker with id {id} is running; every worker needs its own \
                     --worker-id"
                );
                // Its holder is gone (killed before its key ran out): taken over, unless
                // another worker took it over first or the holder renewed it meanwhile.
                let read = held.map_or(0, |entry| entry.revision);
                bucket.update(id, value.clone(), read).await.map_err(|e| {
                    anyhow::anyhow!(
                        "another worker with id {id} is running (it claimed the id just now: \
                         {e}); every worker needs its own --worker-id"
                    )
                })?
            }
            Err(error) => anyhow::bail!("cannot claim worker id {id}: {error}"),
        };
        let revision = Arc::new(AtomicU64::new(revision));
        let lost = CancellationToken::new();
        let renewer = tokio::spawn(renew(
            bucket.clone(),
            id.to_owned(),
            value,
            (revision.clone(), sent),
            lost.clone(),
        ));
        Ok(Self { bucket, id: id.to_owned(), revision, lost, renewer })
    }

    /// Cancelled when the id is lost.
    pub fn lost(&self) -> CancellationToken {
        self.lost.clone()
    }

    /// Gives the id back at a clean stop, so that it can be used again at once.
    pub async fn release(self) {
        self.renewer.abort();
        self.renewer.await.ok();
        if !self.lost.is_cancelled() {
            let revision = self.revision.load(Ordering::SeqCst);
            self.bucket.delete_expect_revision(&self.id, Some(revision)).await.ok();
        }
    }
}

/// Opens (creating if needed) the bucket, with as many replicas as the work queue.
async fn bucket(js: &jetstream::Context) -> anyhow::Result<kv::Store> {
    if let Ok(store) = js.get_key_value(subject::ID_BUCKET).await {
        return Ok(store);
    }
    let mut queue = js
        .get_stream(task_subject::STREAM)
        .await
        .map_err(|e| anyhow::anyhow!("cannot read the work queue's stream: {e}"))?;
    let replicas = queue
        .info()
        .await
        .map_err(|e| anyhow::anyhow!("cannot read the work queue's stream: {e}"))?
        .config
        .num_replicas;
    let config = kv::Config {
        bucket: subject::ID_BUCKET.to_owned(),
        description: "worker ids in use: each held by its running worker".to_owned(),
        history: 1,
        max_age: CLAIM_TTL,
        storage: jetstream::stream::StorageType::Memory,
        num_replicas: replicas.max(1),
        ..kv::Config::default()
    };
    match js.create_key_value(config).await {
        Ok(store) => Ok(store),
        Err(error) => js.get_key_value(subject::ID_BUCKET).await.map_err(|e| {
            anyhow::anyhow!("cannot create ({error}) or open ({e}) the worker id bucket")
        }),
    }
}

/// Renews the claim every [`RENEW_EVERY`] until aborted; cancels `lost` (and ends) when
/// another revision is in place, or when no renewal succeeded in time to be sure the key is
/// still there ([`CLAIM_TTL`] less [`MARGIN`] after the last successful one was sent).
async fn renew(
    bucket: kv::Store,
    id: String,
    value: Bytes,
    (revision, mut renewed): (Arc<AtomicU64>, Instant),
    lost: CancellationToken,
) {
    loop {
        tokio::time::sleep(RENEW_EVERY).await;
        let sent = Instant::now();
        let left = (renewed + CLAIM_TTL - MARGIN).saturating_duration_since(sent);
        if left.is_zero() {
            tracing::error!(worker = %id, "could not renew the worker id in time; stopping");
            lost.cancel();
            return;
        }
        let current = revision.load(Ordering::SeqCst);
        match tokio::time::timeout(left, bucket.update(&id, value.clone(), current)).await {
            Ok(Ok(next)) => {
                revision.store(next, Ordering::SeqCst);
                renewed = sent;
            }
            Ok(Err(error)) if error.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                // A renewal that timed out may have landed after all: the key is still ours.
                if let Ok(Some(entry)) = bucket.entry(&id).await
                    && entry.value == value
                {
                    revision.store(entry.revision, Ordering::SeqCst);
                    continue;
                }
                tracing::error!(worker = %id, "another worker took over this worker's id; stopping");
                lost.cancel();
                return;
            }
            Ok(Err(error)) => tracing::warn!(worker = %id, %error, "cannot renew the worker id"),
            Err(_) => tracing::warn!(worker = %id, "renewing the worker id timed out"),
        }
    }
}
