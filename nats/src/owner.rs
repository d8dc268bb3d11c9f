//! The one owner runtime: every stateful service (ledger, tasks, chat, coins, likes) keeps its
//! state and its SQLite database in one **owner** that this module runs.
//!
//! ## What the runtime does, once for all
//! - A bounded [`Queue`] feeds the owner: endpoint tasks decode and validate on the async
//!   runtime, then hand typed envelopes over without waiting; a full queue is the caller's
//!   `busy`.
//! - The owner takes whatever is queued (up to `group_max`) as one **group** and applies it in
//!   one SQLite transaction ([`rusqlite::Transaction`]), so many requests share one commit (and
//!   one fsync). Only after the commit does it deliver the group's replies and events: no reply
//!   reports what is not durable.
//! - If any envelope of the group fails on storage, the transaction is rolled back (dropping it
//!   does that), the state rebuilds its memory from the store ([`State::rolled_back`]), and the
//!   group's replies become `unavailable`; nothing of it is half-applied.
//! - Between groups, [`State::tick`] is asked for periodic work (expiries, sweeps, pruning),
//!   which runs as a group of its own, under the same rules.
//! - When every [`Queue`] handle is dropped the owner drains what is queued, commits, and
//!   stops ([`OwnerHandle::join`]).
//!
//! ## Where the owner runs ([`Mode`])
//! - [`Mode::Thread`]: a thread of its own (with a small runtime for delivering), for services
//!   whose groups are big transactions (tasks, chat, coins, likes): they never hold up the
//!   service's runtime.
//! - [`Mode::Task`]: a task on the service's runtime, for a service whose groups are small and
//!   whose requests must not pay two thread hops (the ledger, on every bank call): a durable
//!   commit (an fsync) leaves the runtime's thread with `block_in_place` first.
//!
//! ## What a service writes
//! Its [`State`]: how to apply one envelope inside a transaction, how to reload, and how to
//! deliver an outbox. The SQL lives in the service's `store` module, as functions over a
//! `&Connection` (a `&Transaction` derefs to one).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use rusqlite::{Connection, DropBehavior, Transaction, TransactionBehavior};
use tokio::sync::mpsc;

use crate::metrics;
use crate::replica::log::AppendError;
use crate::replica::{Entry, Event, Journal};
use crate::sqlite::StoreError;
mod meter;
use meter::{OwnerMetrics, Phase};
mod grouping;
use grouping::{apply_all, next_group};
mod checkpoint;
use checkpoint::Checkpointer;

/// What a stateful service plugs into the owner runtime.
pub trait State: Send + 'static {
    /// What is queued for the owner: validated requests, peers' events, internal work.
    type Envelope: Send + 'static;
    /// What a group produces, delivered once it committed (replies, events, ...).
    type Outbox: Default + Send;

    /// Applies one envelope inside the group's transaction. `Err` is a storage failure: the
    /// whole group is rolled back (a refused request is an `Ok` whose reply is the refusal).
    fn apply(
        &mut self,
        tx: &Transaction<'_>,
        now_ms: u64,
        envelope: Self::Envelope,
        out: &mut Self::Outbox,
    ) -> Result<(), StoreError>;

    /// The span of the request an envelope carries (see `crate::trace`): its events carry it.
    fn span(&self, _envelope: &Self::Envelope) -> Option<crate::trace::Trace> {
        None
    }

    /// Runs after the group's last envelope, still inside its transaction.
    fn close(
        &mut self,
        _tx: &Transaction<'_>,
        _now_ms: u64,
        _out: &mut Self::Outbox,
    ) -> Result<(), StoreError> {
        Ok(())
    }

    /// Whether this envelope needs a durable commit (`synchronous=FULL`): a group with one
    /// commits durably. By default every commit is as durable as the database was opened.
    fn durable(&self, _envelope: &Self::Envelope) -> bool {
        false
    }

    /// Periodic work, asked for every tick (with or without requests): run as a group.
    fn tick(&mut self, _now_ms: u64) -> Vec<Self::Envelope> {
        Vec::new()
    }

    /// An envelope of a group that failed before it was applied (an earlier one's storage
    /// error): put its reply in the outbox, so [`State::rolled_back`] answers it
    /// `unavailable` with the rest. By default it is dropped unanswered.
    fn abandon(&mut self, _envelope: Self::Envelope, _out: &mut Self::Outbox) {}

    /// The group's transaction was rolled back because of `error`: rebuild the in-memory state
    /// from `conn`, and turn the outbox into what may be sent now (replies become
    /// `unavailable`; events of what was not committed are dropped).
    fn rolled_back(&mut self, conn: &Connection, error: &StoreError, out: &mut Self::Outbox);

    /// Sends a group's outbox (after its commit, or after its rollback). The owner awaits it
    /// before the next group.
    fn deliver(&mut self, now_ms: u64, out: Self::Outbox) -> impl Future<Output = ()> + Send;

    /// After every group: a chance to publish counters.
    fn after_group(&mut self, _report: &GroupReport) {}

    /// A replicated owner ([`spawn_replicated`]): takes the group's durable events out of the
    /// outbox. They go into the group's log entry and are published by the runtime once the
    /// entry is in the log (so no event of a committed change is lost), not by `deliver`.
    fn durable_events(&mut self, _out: &mut Self::Outbox) -> Vec<Event> {
        Vec::new()
    }

    /// Tables of a replicated owner that are not replicated: volatile state (leases) that a
    /// new active instance starts without ([`State::promoted`] clears it).
    fn volatile_tables(&self) -> &'static [&'static str] {
        &[]
    }

    /// A replicated owner's first group when its instance becomes the active one (inside the
    /// group's transaction, so what it writes is in the log): e.g. a new fencing epoch.
    fn promoted(&mut self, _tx: &Transaction<'_>, _now_ms: u64) -> Result<(), StoreError> {
        Ok(())
    }
}

/// What one group was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupReport {
    pub envelopes: usize,
    pub committed: bool,
    pub durable: bool,
    /// Time spent applying and committing.
    pub elapsed: Duration,
}

/// The owner's limits and pace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Envelopes applied in one transaction at most.
    pub group_max: usize,
    /// How often [`State::tick`] is asked for periodic work.
    pub tick: Duration,
    /// The `synchronous` level of commits that are not durable ones (`"NORMAL"`, `"FULL"`).
    pub synchronous: &'static str,
    /// Where the owner runs.
    pub mode: Mode,
}

/// Where an owner runs (see the module's documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A thread of its own.
    Thread,
    /// A task on the service's (multi-threaded) runtime.
    Task,
}

/// The sending side of an owner's queue: cheap to clone, counts what is queued.
#[derive(Debug)]
pub struct Queue<E> {
    sender: mpsc::Sender<E>,
    queued: Arc<AtomicU64>,
}

impl<E> Clone for Queue<E> {
    fn clone(&self) -> Self {
        Self { sender: self.sender.clone(), queued: self.queued.clone() }
    }
}

/// How long [`Queue::send_waiting`] waits for room in a full queue, at most.
pub const SEND_WAIT_MAX: Duration = Duration::from_secs(10);

impl<E> Queue<E> {
    /// Queues without waiting; gives the envelope back if the queue is full or the owner gone.
    pub fn try_send(&self, envelope: E) -> Result<(), E> {
        self.queued.fetch_add(1, Ordering::Relaxed);
        self.sender.try_send(envelope).map_err(|error| {
            self.queued.fetch_sub(1, Ordering::Relaxed);
            match error {
                mpsc::error::TrySendError::Full(e) | mpsc::error::TrySendError::Closed(e) => e,
            }
        })
    }

    /// Queues, waiting while the queue is full for at most [`SEND_WAIT_MAX`] (internal work
    /// that must not be dropped lightly, such as a pulled page).
    pub async fn send_waiting(&self, envelope: E) -> Result<(), E> {
        self.queued.fetch_add(1, Ordering::Relaxed);
        self.sender.send_timeout(envelope, SEND_WAIT_MAX).await.map_err(|error| {
            self.queued.fetch_sub(1, Ordering::Relaxed);
            match error {
                mpsc::error::SendTimeoutError::Timeout(e)
                | mpsc::error::SendTimeoutError::Closed(e) => e,
            }
        })
    }

    /// Envelopes queued and not yet taken by the owner.
    pub fn len(&self) -> u64 {
        self.queued.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A handle that reads how many envelopes wait (for a state that reports its load).
    pub fn depth(&self) -> Depth {
        Depth(self.queued.clone())
    }
}

/// How many envelopes wait in an owner's queue (see [`Queue::depth`]).
#[derive(Debug, Clone)]
pub struct Depth(Arc<AtomicU64>);

impl Depth {
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// The receiving side of an owner's queue, handed to [`spawn`].
#[derive(Debug)]
pub struct Inbox<E> {
    receiver: mpsc::Receiver<E>,
    queued: Arc<AtomicU64>,
}

/// An owner's queue: at most `queue_max` envelopes wait; beyond, [`Queue::try_send`] gives
/// the envelope back (the caller's `busy`).
pub fn queue<E>(queue_max: usize) -> (Queue<E>, Inbox<E>) {
    let (sender, receiver) = mpsc::channel(queue_max.max(1));
    let queued = Arc::new(AtomicU64::new(0));
    (Queue { sender, queued: queued.clone() }, Inbox { receiver, queued })
}

/// A running owner.
#[derive(Debug)]
pub enum OwnerHandle {
    Thread(std::thread::JoinHandle<()>),
    Task(tokio::task::JoinHandle<()>),
}

impl OwnerHandle {
    /// Waits until the owner drained its queue and stopped: drop every [`Queue`] first.
    pub async fn join(self) {
        match self {
            Self::Thread(handle) => {
                tokio::task::spawn_blocking(move || handle.join()).await.ok();
            }
            Self::Task(handle) => {
                handle.await.ok();
            }
        }
    }
}

/// Starts the owner `name` over `conn` and `state`, taking what comes into `inbox`, where
/// `limits.mode` says ([`Mode::Task`] must be called on a multi-threaded runtime).
pub fn spawn<S: State>(
    name: &str,
    conn: Connection,
    state: S,
    inbox: Inbox<S::Envelope>,
    limits: Limits,
) -> std::io::Result<OwnerHandle> {
    start(name, conn, state, inbox, limits, None)
}

/// Starts the owner of a replicated service's active instance (see `crate::replica`): every
/// group becomes one entry of the service's log, appended (fenced) before the local commit and
/// before any reply; its first group is [`State::promoted`]. Local commits need no fsync: the
/// log is the durable copy, and the view catches up from it after a crash.
pub fn spawn_replicated<S: State>(
    name: &str,
    conn: Connection,
    state: S,
    inbox: Inbox<S::Envelope>,
    limits: Limits,
    journal: Journal,
) -> std::io::Result<OwnerHandle> {
    start(name, conn, state, inbox, limits, Some(journal))
}

fn start<S: State>(
    name: &str,
    mut conn: Connection,
    state: S,
    inbox: Inbox<S::Envelope>,
    limits: Limits,
    journal: Option<Journal>,
) -> std::io::Result<OwnerHandle> {
    let Inbox { receiver, queued } = inbox;
    let promote = journal.is_some();
    let metrics = OwnerMetrics::new(name);
    let checkpointer = Checkpointer::start(&mut conn, name);
    let owner = Owner {
        conn,
        state,
        limits,
        queued,
        synchronous: None,
        journal,
        promote,
        metrics,
        checkpointer,
    };
    match limits.mode {
        Mode::Thread => {
            // The owner's own small runtime only awaits deliveries (publishes go to the
            // service's NATS connection, which lives on the service's runtime).
            let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build()?;
            let handle = std::thread::Builder::new()
                .name(format!("{name}-owner"))
                .spawn(move || runtime.block_on(owner.run(receiver)))?;
            Ok(OwnerHandle::Thread(handle))
        }
        Mode::Task => Ok(OwnerHandle::Task(tokio::spawn(owner.run(receiver)))),
    }
}

struct Owner<S: State> {
    conn: Connection,
    state: S,
    limits: Limits,
    queued: Arc<AtomicU64>,
    /// The connection's current `synchronous` level, to switch only on change.
    synchronous: Option<&'static str>,
    /// The log of a replicated owner.
    journal: Option<Journal>,
    /// [`State::promoted`] is still to run.
    promote: bool,
    metrics: OwnerMetrics,
    /// Takes the WAL checkpoints off this thread (none for an in-memory database).
    checkpointer: Option<Checkpointer>,
}

impl<S: State> Owner<S> {
    async fn run(mut self, mut inbox: mpsc::Receiver<S::Envelope>) {
        let mut next_tick = Instant::now() + self.limits.tick;
        if self.journal.is_some() {
            self.run_group(Vec::new()).await;
        }
        while let Some(group) = next_group(&mut inbox, next_tick, self.limits.group_max).await {
            let left = self.queued.fetch_sub(group.len() as u64, Ordering::Relaxed);
            self.metrics.queue.set(left.saturating_sub(group.len() as u64) as i64);
            if !group.is_empty() {
                self.metrics.envelopes.observe(group.len() as f64);
                self.run_group(group).await;
            }
            if Instant::now() >= next_tick {
                next_tick = Instant::now() + self.limits.tick;
                let work = self.state.tick(crate::clock::now_ms());
                if !work.is_empty() {
                    self.run_group(work).await;
                }
            }
        }
    }

    async fn run_group(&mut self, group: Vec<S::Envelope>) {
        if let Some(checkpointer) = &mut self.checkpointer {
            checkpointer.restart_if_long(&self.conn);
        }
        if self.journal.is_some() {
            return self.run_replicated_group(group).await;
        }
        let started = Instant::now();
        let now_ms = crate::clock::now_ms();
        let envelopes = group.len();
        let durable = group.iter().any(|envelope| self.state.durable(envelope));
        let mut out = S::Outbox::default();
        // On the service's runtime, a durable commit waits for an fsync: off its thread.
        let leave_runtime = durable
            && self.limits.mode == Mode::Task
            && tokio::runtime::Handle::current().runtime_flavor()
                == tokio::runtime::RuntimeFlavor::MultiThread;
        let result = if leave_runtime {
            tokio::task::block_in_place(|| self.commit(now_ms, group, durable, &mut out))
        } else {
            self.commit(now_ms, group, durable, &mut out)
        };
        let report =
            GroupReport { envelopes, committed: false, durable, elapsed: started.elapsed() };
        self.metrics.phase(Phase::Commit, report.elapsed);
        self.finish_group(now_ms, result, out, report).await;
    }

    /// After a group's commit (or its rollback: the state reloads, replies become
    /// `unavailable`): delivers its outbox and reports it.
    async fn finish_group(
        &mut self,
        now_ms: u64,
        result: Result<(), StoreError>,
        mut out: S::Outbox,
        mut report: GroupReport,
    ) {
        report.committed = result.is_ok();
        self.metrics.outcome(report.committed);
        if let Err(error) = result {
            // The transaction was rolled back.
            tracing::error!(%error, "group not committed; rolled back, reloading from the store");
            self.synchronous = None;
            self.state.rolled_back(&self.conn, &error, &mut out);
        }
        self.state.deliver(now_ms, out).await;
        self.state.after_group(&report);
    }

    /// A group of a replicated owner: staged in a transaction whose changes a session records,
    /// appended to the log, then committed; or rolled back with every reply `unavailable`.
    async fn run_replicated_group(&mut self, group: Vec<S::Envelope>) {
        let started = Instant::now();
        let now_ms = crate::clock::now_ms();
        let envelopes = group.len();
        if self.journal.as_ref().is_some_and(Journal::needs_check) {
            self.catch_up().await;
        }
        let mut out = S::Outbox::default();
        let result = match self.stage(now_ms, group, &mut out) {
            Err(error) => {
                self.end_transaction(false).ok();
                Err(error)
            }
            Ok(entry) => {
                let staged = started.elapsed();
                let (bytes, events) = (entry.changes.len(), entry.events.len());
                let appended = self.append(entry).await;
                self.metrics.phase(Phase::Stage, staged);
                self.metrics.phase(Phase::Append, started.elapsed() - staged);
                tracing::debug!(
                    staged_us = staged.as_micros() as u64,
                    appended_us = started.elapsed().as_micros() as u64,
                    bytes,
                    events,
                    "group staged and appended"
                );
                appended
            }
        };
        let report =
            GroupReport { envelopes, committed: false, durable: true, elapsed: started.elapsed() };
        self.finish_group(now_ms, result, out, report).await;
    }

    /// Applies the group in a transaction left open, recording its changes: the log entry.
    fn stage(
        &mut self,
        now_ms: u64,
        group: Vec<S::Envelope>,
        out: &mut S::Outbox,
    ) -> Result<Entry, StoreError> {
        if self.synchronous != Some("NORMAL") {
            self.conn.pragma_update(None, "synchronous", "NORMAL")?;
            self.synchronous = Some("NORMAL");
        }
        let conn = &self.conn;
        let mut session = rusqlite::session::Session::new(conn)?;
        let volatile = self.state.volatile_tables();
        if !volatile.is_empty() {
            session.table_filter(Some(move |table: &str| !volatile.contains(&table)));
        }
        session.attach(None::<&str>)?;
        // Writing from the start: a checkpoint that restarts the WAL holds writers back, and a
        // transaction that read first could not become a writer after it.
        let mut tx = Transaction::new_unchecked(conn, TransactionBehavior::Immediate)?;
        if self.promote {
            self.state.promoted(&tx, now_ms)?;
        }
        apply_all(&mut self.state, &tx, now_ms, group, out)?;
        self.state.close(&tx, now_ms, out)?;
        let mut changes = Vec::new();
        session.patchset_strm(&mut changes)?;
        drop(session);
        let events = self.state.durable_events(out);
        // The transaction stays open (no borrow of the connection across the append).
        tx.set_drop_behavior(DropBehavior::Ignore);
        drop(tx);
        Ok(Entry { changes, events })
    }

    /// Ends the open transaction.
    fn end_transaction(&mut self, commit: bool) -> Result<(), StoreError> {
        if self.conn.is_autocommit() {
            return Ok(());
        }
        if commit {
            if let Err(error) = self.conn.execute_batch("COMMIT") {
                self.conn.execute_batch("ROLLBACK").ok();
                return Err(error.into());
            }
        } else {
            self.conn.execute_batch("ROLLBACK")?;
        }
        Ok(())
    }

    /// Appends the staged entry to the log and commits it, or rolls it back.
    async fn append(&mut self, entry: Entry) -> Result<(), StoreError> {
        let journal = self.journal.as_mut().expect("only replicated owners append");
        // A long group may have kept this runtime from renewing the lease in time: it is
        // renewed now if nobody else could have taken it.
        if !journal.revalidate().await {
            // Deposed by the failed renewal.
            self.end_transaction(false).ok();
            return Err(StoreError::Replication(
                "this instance is no longer the active one".into(),
            ));
        }
        if entry.is_empty() {
            // Nothing changed (reads): nothing to replicate.
            self.end_transaction(true)?;
            self.promote = false;
            return Ok(());
        }
        match journal.append(&entry).await {
            Ok(seq) => {
                let recorded = crate::replica::log::set_applied(&self.conn, seq);
                let committed = recorded.and_then(|()| self.end_transaction(true));
                let journal = self.journal.as_mut().expect("replicated");
                if let Err(error) = committed {
                    // The log has it and the view not: it is applied from the log next.
                    journal.mark_uncertain();
                    return Err(error);
                }
                self.promote = false;
                let relaying = Instant::now();
                journal.committed(seq, entry.events).await;
                tracing::debug!(relay_us = relaying.elapsed().as_micros() as u64, "events relayed");
                Ok(())
            }
            Err(error) => {
                if let AppendError::Deposed(why) = &error {
                    journal.depose(why);
                }
                self.end_transaction(false).ok();
                Err(StoreError::Replication(error.to_string()))
            }
        }
    }

    /// After an append without an answer: applies what the log holds beyond this view (entries
    /// this instance wrote without learning it), relays their events, and reloads the state.
    async fn catch_up(&mut self) {
        let Some(journal) = self.journal.as_mut() else { return };
        match journal.missing().await {
            Ok(reads) if reads.is_empty() => {}
            Ok(reads) => {
                for read in reads {
                    if let Err(error) =
                        crate::replica::log::apply(&self.conn, read.seq, &read.entry)
                    {
                        tracing::error!(%error, seq = read.seq, "cannot apply a log entry");
                        if let Some(journal) = self.journal.as_mut() {
                            journal.mark_uncertain();
                        }
                        break;
                    }
                    let journal = self.journal.as_mut().expect("replicated");
                    journal.committed(read.seq, read.entry.events).await;
                }
                // The state reloads what the log added, and delivers what that changes (the
                // exchange's catalogue that orders are priced from).
                let reason = StoreError::Replication("caught up with the log".into());
                let mut out = S::Outbox::default();
                self.state.rolled_back(&self.conn, &reason, &mut out);
                self.state.deliver(crate::clock::now_ms(), out).await;
            }
            Err(AppendError::Deposed(why)) => journal.depose(&why),
            Err(error) => tracing::warn!(%error, "cannot check the log yet"),
        }
    }

    fn commit(
        &mut self,
        now_ms: u64,
        group: Vec<S::Envelope>,
        durable: bool,
        out: &mut S::Outbox,
    ) -> Result<(), StoreError> {
        let level = if durable { "FULL" } else { self.limits.synchronous };
        if self.synchronous != Some(level) {
            self.conn.pragma_update(None, "synchronous", level)?;
            self.synchronous = Some(level);
        }
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        apply_all(&mut self.state, &tx, now_ms, group, out)?;
        self.state.close(&tx, now_ms, out)?;
        tx.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
