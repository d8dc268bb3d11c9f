//! Which instance is active: a lease in the JetStream KV bucket `AGORA_LEASES` (one key per
//! service), created by the instance that takes it and renewed by revision. The bucket's
//! `max_age` is the lease: an instance that stops renewing loses its key, and only then can
//! another create it. The instance that makes the bucket sets it; every other instance takes the
//! lease on the bucket's terms (an `AGORA_LEASE_MS` that differs is warned about and not used).
//!
//! The active instance holds itself valid until the last renewal it *sent* plus the lease,
//! less a tenth: it stops before the key can expire at the server, so two instances never
//! both believe they are active. A renewal that fails with another revision in place ends it
//! at once; one that cannot reach the server is retried until that deadline.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use tokio::sync::Notify;

use crate::subjects::replica as subject;

/// Shortest lease accepted.
pub const LEASE_MS_MIN: u64 = 500;
/// Longest lease accepted.
pub const LEASE_MS_MAX: u64 = 60_000;

/// What the lease key holds.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Holder {
    pub instance: String,
    pub since_ms: u64,
}

/// Opens (creating if needed) the lease bucket, and reads how long it keeps a key: the lease at
/// the server, whatever an instance was configured with. The instance that created the bucket
/// set it (`lease_ms` here if this one did); every instance holds and renews its lease on the
/// bucket's terms, so that none believes itself active after the server dropped its key.
pub async fn bucket(
    js: &jetstream::Context,
    replicas: usize,
    lease_ms: u64,
) -> anyhow::Result<(kv::Store, u64)> {
    let wanted = kv::Config {
        bucket: subject::LEASE_BUCKET.to_owned(),
        description: "which instance of each replicated service is active".to_owned(),
        history: 1,
        max_age: Duration::from_millis(lease_ms),
        storage: jetstream::stream::StorageType::Memory,
        num_replicas: replicas,
        ..kv::Config::default()
    };
    let store = match js.create_key_value(wanted).await {
        Ok(store) => store,
        Err(error) => js.get_key_value(subject::LEASE_BUCKET).await.map_err(|e| {
            anyhow::anyhow!("cannot create ({error}) or open ({e}) the lease bucket")
        })?,
    };
    let kept = store.status().await.map_err(|e| anyhow::anyhow!("the lease bucket: {e}"))?;
    let kept_ms = u64::try_from(kept.info.config.max_age.as_millis()).unwrap_or(u64::MAX);
    anyhow::ensure!(
        (LEASE_MS_MIN..=LEASE_MS_MAX).contains(&kept_ms),
        "the lease bucket {} keeps keys {} (max_age), not {LEASE_MS_MIN}..={LEASE_MS_MAX} ms: \
         a lease could never run out, or not be held; delete the bucket (it is made again)",
        subject::LEASE_BUCKET,
        if kept_ms == 0 { "forever".to_owned() } else { format!("{kept_ms} ms") },
    );
    if kept_ms != lease_ms {
        tracing::warn!(
            bucket = subject::LEASE_BUCKET,
            kept_ms,
            asked_ms = lease_ms,
            "the lease bucket keeps leases {kept_ms} ms (set by the instance that made it), not \
             the {lease_ms} ms asked for: this instance holds, renews and waits for leases on \
             the bucket's {kept_ms} ms"
        );
    }
    Ok((store, kept_ms))
}

/// The lease as the active instance holds it: shared with its owner, which checks it before
/// every write.
#[derive(Debug)]
pub struct LeaseState {
    valid_until: Mutex<Option<Instant>>,
    /// The key's revision as this instance last wrote it.
    revision: std::sync::atomic::AtomicU64,
    deposed: AtomicBool,
    why: Mutex<String>,
    notify: Notify,
    /// What a renewal writes; held across it, so that renewals go one at a time.
    renewer: tokio::sync::Mutex<Renewer>,
}

/// The key a renewal updates, and with what.
#[derive(Debug)]
struct Renewer {
    bucket: kv::Store,
    key: String,
    value: Bytes,
    /// How long a renewal holds, from when it was sent.
    valid_for: Duration,
}

/// How a renewal ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Renewal {
    Renewed,
    /// Another revision is in place (the lease ran out at the server, or another instance
    /// took it): this instance is deposed.
    Lost,
    /// The server did not answer in time: tried again while the lease lasts.
    Unanswered,
}

impl LeaseState {
    fn new(valid_until: Instant, revision: u64, renewer: Renewer) -> Self {
        Self {
            valid_until: Mutex::new(Some(valid_until)),
            revision: std::sync::atomic::AtomicU64::new(revision),
            deposed: AtomicBool::new(false),
            why: Mutex::new(String::new()),
            notify: Notify::new(),
            renewer: tokio::sync::Mutex::new(renewer),
        }
    }

    /// Renews the lease now: the key is updated only if it still holds the revision this
    /// instance wrote last, so a lease that ran out at the server (its key gone) or that
    /// another instance took is never taken back. Deposes on `Lost`.
    async fn renew(&self, timeout: Duration) -> Renewal {
        let renewer = self.renewer.lock().await;
        if self.is_deposed() {
            return Renewal::Lost;
        }
        let revision = self.revision.load(Ordering::Relaxed);
        let sent = Instant::now();
        let update = renewer.bucket.update(&renewer.key, renewer.value.clone(), revision);
        match tokio::time::timeout(timeout, update).await {
            Ok(Ok(next)) => {
                self.revision.store(next, Ordering::Relaxed);
                self.extend(sent + renewer.valid_for);
                Renewal::Renewed
            }
            Ok(Err(error)) if error.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                self.depose("another instance holds the lease, or it ran out at the server");
                Renewal::Lost
            }
            Ok(Err(error)) => {
                tracing::warn!(%error, "could not renew the lease; retrying until it runs out");
                Renewal::Unanswered
            }
            Err(_) => {
                tracing::warn!("renewing the lease timed out; retrying until it runs out");
                Renewal::Unanswered
            }
        }
    }

    /// Whether this instance may write: its lease holds, or (after this process stalled past
    /// it, say a long group on a busy machine) a late renewal found the key still as this
    /// instance left it and renewed it. Deposes when the lease is gone.
    pub async fn revalidate(&self, timeout: Duration) -> bool {
        if self.is_valid() {
            return true;
        }
        if self.is_deposed() {
            return false;
        }
        let renewed = self.renew(timeout).await == Renewal::Renewed && self.is_valid();
        if !renewed {
            self.depose("the lease ran out before it could be renewed");
        }
        renewed
    }

    pub fn is_valid(&self) -> bool {
        !self.deposed.load(Ordering::Relaxed)
            && self
                .valid_until
                .lock()
                .map(|until| until.is_some_and(|until| Instant::now() < until))
                .unwrap_or(false)
    }

    fn extend(&self, until: Instant) {
        if let Ok(mut valid) = self.valid_until.lock() {
            *valid = Some(until);
        }
    }

    /// Ends this instance's term (idempotent).
    pub fn depose(&self, why: &str) {
        if !self.deposed.swap(true, Ordering::Relaxed) {
            if let Ok(mut reason) = self.why.lock() {
                *reason = why.to_owned();
            }
            tracing::warn!(why, "no longer the active instance");
        }
        self.notify.notify_waiters();
    }

    pub fn is_deposed(&self) -> bool {
        self.deposed.load(Ordering::Relaxed)
    }

    pub fn why(&self) -> String {
        self.why.lock().map(|w| w.clone()).unwrap_or_default()
    }

    /// Resolves once deposed (or once the lease ran out without renewal).
    pub async fn deposed(&self) {
        loop {
            let notified = self.notify.notified();
            if self.is_deposed() {
                return;
            }
            if !self.revalidate(LATE_RENEWAL_TIMEOUT).await {
                return;
            }
            tokio::time::timeout(Duration::from_millis(100), notified).await.ok();
        }
    }
}

/// A candidate for one service's lease.
#[derive(Debug)]
pub struct Lease {
    bucket: kv::Store,
    key: String,
    instance: String,
    lease: Duration,
}

impl Lease {
    pub fn new(bucket: kv::Store, service: &str, instance: &str, lease_ms: u64) -> Self {
        Self {
            bucket,
            key: service.to_owned(),
            instance: instance.to_owned(),
            lease: Duration::from_millis(lease_ms),
        }
    }

    /// How often a standby looks for a free lease.
    pub fn poll(&self) -> Duration {
        self.lease / 10
    }

    /// Who holds the lease now, if anyone.
    pub async fn holder(&self) -> Option<Holder> {
        match self.bucket.entry(&self.key).await {
            Ok(Some(entry)) if entry.operation == kv::Operation::Put => {
                serde_json::from_slice(&entry.value).ok()
            }
            _ => None,
        }
    }

    /// Takes the lease if it is free (or already this instance's); on success, starts renewing
    /// it and returns the shared state.
    pub async fn campaign(&self, now_ms: u64) -> Option<Arc<LeaseState>> {
        let sent = Instant::now();
        let value: Bytes =
            serde_json::to_vec(&Holder { instance: self.instance.clone(), since_ms: now_ms })
                .unwrap_or_default()
                .into();
        let revision = match self.bucket.entry(&self.key).await {
            Ok(Some(entry)) if entry.operation == kv::Operation::Put => {
                let holder: Option<Holder> = serde_json::from_slice(&entry.value).ok();
                if holder.is_some_and(|h| h.instance == self.instance) {
                    self.bucket.update(&self.key, value.clone(), entry.revision).await.ok()
                } else {
                    None
                }
            }
            Ok(_) => self.bucket.create(&self.key, value.clone()).await.ok(),
            Err(_) => None,
        }?;
        let renewer = Renewer {
            bucket: self.bucket.clone(),
            key: self.key.clone(),
            value,
            valid_for: self.valid_for(),
        };
        let state = Arc::new(LeaseState::new(sent + self.valid_for(), revision, renewer));
        tokio::spawn(renew(self.lease, state.clone()));
        Some(state)
    }

    /// Gives the lease up (after a clean stop), if it is still the one this instance wrote.
    pub async fn release(&self, state: &LeaseState) {
        let revision = state.revision.load(Ordering::Relaxed);
        if let Err(error) = self.bucket.purge_expect_revision(&self.key, Some(revision)).await {
            tracing::debug!(%error, "the lease was not released (it will expire)");
        }
    }

    fn valid_for(&self) -> Duration {
        self.lease - self.lease / 10
    }
}

/// Renews every third of the lease until deposed.
async fn renew(lease: Duration, state: Arc<LeaseState>) {
    let every = lease / 3;
    loop {
        tokio::time::sleep(every).await;
        if state.is_deposed() {
            return;
        }
        if state.renew(every).await == Renewal::Lost {
            return;
        }
        if !state.is_valid() {
            state.depose("the lease ran out before it could be renewed");
            return;
        }
    }
}

/// How long a late renewal (see [`LeaseState::revalidate`]) waits for the server.
pub const LATE_RENEWAL_TIMEOUT: Duration = Duration::from_millis(500);
