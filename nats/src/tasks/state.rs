//! The task service's owner state (see `crate::owner`): the unfinished tasks in memory, the
//! waiting requests, and what a group of requests does to the store.

use std::collections::HashMap;

use agora_core::{Caller, Lifecycle, Report, TaskError, TaskEvent, TaskState};
use async_nats::Client;
use async_nats::jetstream;
use async_nats::service::Request;
use bytes::Bytes;
use rusqlite::{Connection, Transaction};
use serde_json::value::RawValue;

use super::queue::{self, WorkQueue};
use super::schedule::{self as schedules, Change, RunBody, Scheduler};
use super::store::{self, ListFilter, NewTask, ScheduleRow};
use super::wire::{
    ClaimReply, FinishReply, ListReply, Priority, ProgressReply, ScheduleListReply, TaskEventWire,
    TaskView,
};
use super::workflow;
use super::{HISTORY_MAX, PRUNE_BATCH, PRUNE_EVERY_MS, TasksConfig, WAITERS_MAX};
use crate::error::{ErrorCode, ServiceError};
use crate::owner::State;
use crate::replica::Event;
use crate::service::{ErrorCounts, Replier, encode};
use crate::sqlite::StoreError;
use crate::subjects::tasks as subject;
mod execute;
mod scheduling;
mod submit;

/// Progress events kept in a task's history stop this many events before [`HISTORY_MAX`], so
/// the outcome always has room.
const HISTORY_OUTCOME_ROOM: u32 = 20;

/// Schedules the stream should hold: (subject, change).
pub type Wanted = Vec<(String, Change)>;

/// A request waiting for its reply.
#[derive(Debug)]
pub struct Pending {
    pub request: Request,
    pub endpoint: &'static str,
    /// Who asked (see `crate::identity`).
    pub caller: Caller,
}

/// A validated request for the owner.
#[derive(Debug)]
pub enum Command {
    Submit {
        op: &'static str,
        args: String,
        priority: Priority,
        client_id: Option<String>,
        wait_ms: u64,
        /// A delayed task's time.
        run_at_ms: Option<u64>,
        /// How long it is kept once finished.
        ttl_ms: Option<u64>,
    },
    /// Creates or replaces a recurring schedule. Unless paused, the endpoint put it in the
    /// schedule stream already (so the server judged its pattern).
    PutSchedule(ScheduleRow),
    ListSchedules {
        owner: Option<String>,
    },
    ScheduleAction {
        owner: String,
        name: String,
        action: ScheduleAction,
    },
    /// A checked workflow (see `super::workflow`).
    WorkflowSubmit(Box<super::workflow::Checked>),
    WorkflowGet {
        id: u64,
    },
    WorkflowList {
        owner: Option<String>,
        state: Option<agora_core::tasks::workflow::WorkflowState>,
        before: Option<u64>,
        limit: usize,
    },
    WorkflowCancel {
        id: u64,
    },
    Get {
        id: u64,
    },
    List(ListFilter),
    Cancel {
        id: u64,
    },
    Wait {
        id: u64,
        timeout_ms: u64,
    },
    Claim {
        id: u64,
        worker: String,
    },
    Progress {
        id: u64,
        worker: String,
        percent: u8,
    },
    Finish {
        id: u64,
        worker: String,
        claim: bool,
        outcome: Result<String, (String, Option<u64>)>,
    },
}

/// What is done to a recurring schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScheduleAction {
    Pause,
    Resume,
    Delete,
}

/// A run the server's scheduler published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fire {
    /// A delayed task's time came.
    Task(u64),
    /// A recurring schedule's tick: `seq` is the run's stream sequence (one task per run).
    Recurring { owner: String, name: String, seq: u64, next_ms: Option<u64> },
}

impl Fire {
    pub fn read(message: &jetstream::Message) -> Option<Self> {
        let body: RunBody = serde_json::from_slice(&message.payload).ok()?;
        match body {
            RunBody { task: Some(id), owner: None, name: None } => id.parse().ok().map(Self::Task),
            RunBody { task: None, owner: Some(owner), name: Some(name) } => {
                let seq = message.info().ok()?.stream_sequence;
                Some(Self::Recurring { owner, name, seq, next_ms: schedules::next_run_ms(message) })
            }
            _ => None,
        }
    }
}

/// What the owner is asked to do.
#[derive(Debug)]
pub enum Envelope {
    Request(Box<Pending>, Command),
    /// A run of a schedule, acknowledged once what it did is committed.
    Fire(Fire, Box<jetstream::Message>),
    /// JetStream gave up on a task's message (max deliveries) without an outcome.
    DeadLetter {
        id: u64,
        reason: String,
    },
    /// Periodic work: waiters whose time is up, failed publishes, pruning.
    Sweep,
}

/// A task to add: who, what, how urgent.
#[derive(Debug, Clone, Copy)]
pub(super) struct Submission<'a> {
    pub owner: &'a str,
    pub op: &'a str,
    pub args: &'a str,
    pub priority: Priority,
    /// The submit request's span: the queued message carries it to the worker.
    pub span: Option<crate::trace::Trace>,
    /// A delayed task's time: held until then.
    pub run_at_ms: Option<u64>,
    /// The recurring schedule submitting it.
    pub schedule: Option<&'a str>,
    pub ttl_ms: Option<u64>,
    /// The workflow and step it runs for (counted at the workflow's submit: no `busy` here).
    pub workflow: Option<(u64, &'a str)>,
}

/// An unfinished task, kept in memory by the owner.
#[derive(Debug)]
struct Active {
    /// Who submitted it (its events' subject names them).
    owner: String,
    life: Lifecycle,
    /// History events stored so far.
    events: u32,
    /// A delayed task waiting for its time (not in the work queue yet).
    held: bool,
    /// In the work queue (counted against its owner's `--user-queue-max`); a person's task
    /// beyond that waits here until one of theirs finishes.
    in_queue: bool,
}

#[derive(Debug)]
struct Waiter {
    pending: Pending,
    deadline_ms: u64,
}

/// What a group produced, sent once it committed.
#[derive(Debug, Default)]
pub struct Outbox {
    replies: Vec<(Pending, Result<Bytes, ServiceError>)>,
    events: Vec<Event>,
    cancels: Vec<u64>,
    /// Cancelled queued tasks whose message can go from the stream.
    purges: Vec<u64>,
    enqueue: Vec<queue::Queued>,
    /// Changes to the schedule stream.
    changes: Vec<Change>,
    /// Runs of schedules to acknowledge, and to hand back for later (the service was busy).
    acks: Vec<jetstream::Message>,
    naks: Vec<jetstream::Message>,
}

/// Why a report changed nothing.
#[derive(Debug)]
enum Refused {
    Finished(TaskState),
    Missing,
    Invalid(TaskError),
}

/// The task service's state, owned by its owner thread.
pub struct Tasks {
    client: Client,
    queue: WorkQueue,
    scheduler: Scheduler,
    pub(super) config: TasksConfig,
    pub(super) workflows: super::workflow::Workflows,
    /// Each person's submit rate (`--user-submit-rate`, `--user-submit-burst`).
    submits: agora_core::rate::RateLimiter,
    repliers: HashMap<&'static str, Replier>,
    active: HashMap<u64, Active>,
    next_id: u64,
    waiters: HashMap<u64, Vec<Waiter>>,
    waiter_count: usize,
    last_prune_ms: u64,
    /// Each person's tasks in the work queue now, and their tasks waiting for room there
    /// (oldest first): one person's flood never holds more than `--user-queue-max` places.
    queued_by_owner: HashMap<String, usize>,
    waiting: HashMap<String, std::collections::VecDeque<u64>>,
    /// Places taken and freed by the group being applied, in order: undone if it does not
    /// commit (see [`Tasks::reload_after_loss`]).
    places: Vec<Place>,
}

/// A change to the work queue's places within a group.
#[derive(Debug, Clone, Copy)]
enum Place {
    Taken(u64),
    Freed(u64),
}

impl std::fmt::Debug for Tasks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tasks").field("active", &self.active.len()).finish_non_exhaustive()
    }
}

fn not_found(id: u64) -> ServiceError {
    ServiceError::new(ErrorCode::NotFound, format!("no task {id}"))
}

fn unavailable(error: &StoreError) -> ServiceError {
    ServiceError::new(ErrorCode::Unavailable, format!("task store failed ({error}); retry"))
}

/// The whole task as `get` (without history) and `wait` show it.
fn full_view(conn: &Connection, id: u64) -> Result<Bytes, ServiceError> {
    match store::get(conn, id, true) {
        Ok(Some(row)) => encode(&row.view()),
        Ok(None) => Err(not_found(id)),
        Err(error) => Err(unavailable(&error)),
    }
}

fn refusal(id: u64, refused: &Refused) -> ServiceError {
    match refused {
        Refused::Finished(state) => {
            ServiceError::new(ErrorCode::Conflict, format!("task {id} is already {state}"))
        }
        Refused::Missing => not_found(id),
        Refused::Invalid(error) => ServiceError::invalid(error.to_string()),
    }
}

fn event_payload(id: u64, mut wire: TaskEventWire) -> Bytes {
    wire.id = Some(id.to_string());
    Bytes::from(serde_json::to_vec(&wire).unwrap_or_default())
}

/// The schedule that hands delayed task `id` over at its stored time.
fn delayed_schedule(conn: &Connection, id: u64) -> Result<Change, StoreError> {
    let run_at = store::get(conn, id, false)?.and_then(|row| row.run_at_ms).unwrap_or(0);
    Ok(Change::delayed(id, agora_core::tasks::schedule::Spec::At(run_at).header()))
}

impl Tasks {
    /// The state as the store has it.
    pub fn load(
        conn: &Connection,
        client: Client,
        js: jetstream::Context,
        config: TasksConfig,
        errors: &ErrorCounts,
    ) -> Result<Self, StoreError> {
        let repliers = super::ENDPOINTS
            .into_iter()
            .chain(super::SCHEDULE_ENDPOINTS.map(|(name, _)| name))
            .chain(super::WORKFLOW_ENDPOINTS.map(|(name, _)| name))
            .map(|name| (name, Replier::new(name, errors.clone())))
            .collect();
        let submits = agora_core::rate::RateLimiter::new(
            config.user_submit_rate,
            config.user_submit_burst,
            super::RATE_KEYS_MAX,
        );
        let mut tasks = Self {
            client,
            queue: WorkQueue::new(js.clone(), tokio::runtime::Handle::current()),
            scheduler: Scheduler::new(js, tokio::runtime::Handle::current()),
            config,
            repliers,
            active: HashMap::new(),
            next_id: 1,
            waiters: HashMap::new(),
            waiter_count: 0,
            last_prune_ms: 0,
            queued_by_owner: HashMap::new(),
            waiting: HashMap::new(),
            places: Vec::new(),
            workflows: super::workflow::Workflows::default(),
            submits,
        };
        tasks.reload(conn)?;
        Ok(tasks)
    }

    /// (Re)builds the in-memory table of unfinished tasks from the store, none of them holding
    /// a place in the work queue yet.
    fn reload(&mut self, conn: &Connection) -> Result<(), StoreError> {
        self.active = store::active(conn)?
            .into_iter()
            .map(|(row, events)| {
                let active = Active {
                    owner: row.owner,
                    life: row.lifecycle,
                    events,
                    held: row.held,
                    in_queue: false,
                };
                (row.id, active)
            })
            .collect();
        self.next_id = store::max_id(conn)? + 1;
        self.workflows = super::workflow::Workflows::load(conn)?;
        self.queued_by_owner.clear();
        self.waiting.clear();
        self.places.clear();
        Ok(())
    }

    /// Rebuilds the state from the store after a group that did not commit, or after entries
    /// this instance wrote were applied from the log (their outboxes were lost with the
    /// group). Every unfinished task ends up with a place in the work queue or waiting for
    /// one, and with its message (or its schedule) on the way:
    /// - a place held at the last commit is kept (its message is in the stream);
    /// - a place this group took is given back: its message was never sent;
    /// - a task without a place (waiting, or new from the log) is admitted where its owner has
    ///   room, oldest first, and its message is published again (by the sweep; the stream
    ///   drops a copy it already holds by its message id);
    /// - a delayed task new from the log gets its schedule put again.
    fn reload_after_loss(&mut self, conn: &Connection) -> Result<(), StoreError> {
        let mut placed: std::collections::HashSet<u64> =
            self.active.iter().filter(|(_, a)| a.in_queue).map(|(id, _)| *id).collect();
        for place in std::mem::take(&mut self.places).into_iter().rev() {
            match place {
                Place::Taken(id) => placed.remove(&id),
                Place::Freed(id) => placed.insert(id),
            };
        }
        let known: std::collections::HashSet<u64> = self.active.keys().copied().collect();
        self.reload(conn)?;
        let mut unheld: Vec<u64> =
            self.active.iter().filter(|(_, a)| !a.held).map(|(id, _)| *id).collect();
        unheld.sort_unstable();
        let (kept, unplaced): (Vec<u64>, Vec<u64>) =
            unheld.into_iter().partition(|id| placed.contains(id));
        for id in kept {
            self.take_place(id);
        }
        let republish: Vec<u64> = unplaced.into_iter().filter(|id| self.admit(*id)).collect();
        self.places.clear();
        let mut schedules = Vec::new();
        for (id, _) in self.active.iter().filter(|(id, a)| a.held && !known.contains(id)) {
            schedules.push(delayed_schedule(conn, *id)?);
        }
        if !republish.is_empty() || !schedules.is_empty() {
            tracing::info!(
                republish = republish.len(),
                schedules = schedules.len(),
                "tasks whose message or schedule a lost group held go out again"
            );
        }
        self.queue.retry(republish);
        self.scheduler.apply(schedules);
        Ok(())
    }

    /// Task `id` holds a place in the work queue, counted against its owner.
    fn take_place(&mut self, id: u64) {
        let Some(active) = self.active.get_mut(&id) else { return };
        if active.in_queue {
            return;
        }
        if active.owner != agora_core::identity::SERVICE_OWNER {
            *self.queued_by_owner.entry(active.owner.clone()).or_default() += 1;
        }
        active.in_queue = true;
        self.places.push(Place::Taken(id));
    }

    /// Takes a place in the work queue for task `id` if its owner has one left; otherwise the
    /// task waits its turn. Components' tasks are not limited.
    fn admit(&mut self, id: u64) -> bool {
        let Some(active) = self.active.get(&id) else { return false };
        if active.in_queue {
            return true;
        }
        if active.owner != agora_core::identity::SERVICE_OWNER
            && self.queued_by_owner.get(&active.owner).copied().unwrap_or(0)
                >= self.config.user_queue_max
        {
            self.waiting.entry(active.owner.clone()).or_default().push_back(id);
            return false;
        }
        self.take_place(id);
        true
    }

    /// Task `id` of `owner` left the work queue: the next of theirs waiting takes its place.
    fn leave_queue(
        &mut self,
        tx: &Transaction<'_>,
        id: u64,
        owner: &str,
        out: &mut Outbox,
    ) -> Result<(), StoreError> {
        self.places.push(Place::Freed(id));
        if owner == agora_core::identity::SERVICE_OWNER {
            return Ok(());
        }
        if let Some(count) = self.queued_by_owner.get_mut(owner) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.queued_by_owner.remove(owner);
            }
        }
        while let Some(next) = self.waiting.get_mut(owner).and_then(|ids| ids.pop_front()) {
            if self.active.contains_key(&next) {
                if self.admit(next) {
                    self.enqueue_stored(tx, next, out)?;
                }
                break;
            }
        }
        if self.waiting.get(owner).is_some_and(|ids| ids.is_empty()) {
            self.waiting.remove(owner);
        }
        Ok(())
    }

    /// Unfinished tasks now.
    pub fn unfinished(&self) -> usize {
        self.active.len()
    }

    /// Publishes every unfinished task that has no message in the stream (at startup).
    pub fn republish_missing(
        &mut self,
        conn: &Connection,
        present: &std::collections::HashSet<u64>,
    ) -> Result<usize, StoreError> {
        // What is in the stream holds its places; the rest is admitted oldest first.
        let mut queued: Vec<u64> = self
            .active
            .iter()
            .filter(|(id, active)| !active.held && present.contains(id))
            .map(|(id, _)| *id)
            .collect();
        queued.sort_unstable();
        for id in queued {
            self.take_place(id);
        }
        let mut missing: Vec<u64> = self
            .active
            .iter()
            .filter(|(id, active)| !active.held && !present.contains(id))
            .map(|(id, _)| *id)
            .collect();
        missing.sort_unstable();
        let mut outbox = Outbox::default();
        let mut republished = 0;
        for id in &missing {
            if self.admit(*id) {
                self.enqueue_stored(conn, *id, &mut outbox)?;
                republished += 1;
            }
        }
        self.queue.publish(outbox.enqueue);
        self.places.clear();
        Ok(republished)
    }

    /// What the schedule stream should hold: (delayed tasks, recurring schedules), each as
    /// (subject, change).
    pub fn wanted_schedules(&self, conn: &Connection) -> Result<(Wanted, Wanted), StoreError> {
        let mut delayed = Vec::new();
        for (id, _) in self.active.iter().filter(|(_, active)| active.held) {
            delayed.push((subject::scheduled_task(&id.to_string()), delayed_schedule(conn, *id)?));
        }
        let recurring = store::schedules(conn, None, schedules::SCHEDULES_MAX as usize)?
            .into_iter()
            .filter(|row| !row.paused)
            .map(|row| {
                let change = Change::recurring(
                    &row.owner,
                    &row.name,
                    row.spec.clone(),
                    row.time_zone.clone(),
                );
                (subject::recurring(&row.owner, &row.name), change)
            })
            .collect();
        Ok((delayed, recurring))
    }
}

impl State for Tasks {
    type Envelope = Envelope;
    type Outbox = Outbox;

    fn span(&self, envelope: &Envelope) -> Option<crate::trace::Trace> {
        match envelope {
            Envelope::Request(pending, _) => crate::service::span_of(&pending.request),
            _ => None,
        }
    }

    fn apply(
        &mut self,
        tx: &Transaction<'_>,
        now_ms: u64,
        envelope: Envelope,
        out: &mut Outbox,
    ) -> Result<(), StoreError> {
        match envelope {
            Envelope::Request(pending, command) => self.execute(tx, now_ms, *pending, command, out),
            Envelope::Fire(fire, message) => self.fire(tx, now_ms, fire, message, out),
            Envelope::DeadLetter { id, reason } => {
                let report = Report::DeadLetter { reason };
                self.report_all(tx, now_ms, id, vec![report], None, out).map(drop)
            }
            Envelope::Sweep => self.sweep(tx, now_ms, out),
        }
    }

    fn tick(&mut self, _now_ms: u64) -> Vec<Envelope> {
        vec![Envelope::Sweep]
    }

    fn rolled_back(&mut self, conn: &Connection, error: &StoreError, out: &mut Outbox) {
        if let Err(error) = self.reload_after_loss(conn) {
            tracing::error!(%error, "cannot reload the task store");
        }
        let failure = unavailable(error);
        out.replies.iter_mut().for_each(|(_, reply)| *reply = Err(failure.clone()));
        out.events.clear();
        out.cancels.clear();
        out.purges.clear();
        out.enqueue.clear();
        out.changes.clear();
        // Unacknowledged runs come again.
        out.acks.clear();
        out.naks.clear();
    }

    /// Task events travel in the log entry; the runtime publishes them once it is stored.
    fn durable_events(&mut self, out: &mut Outbox) -> Vec<Event> {
        std::mem::take(&mut out.events)
    }

    /// Sends replies and cancel notices, then hands new work to the stream (the events went
    /// out before, from the log entry).
    async fn deliver(&mut self, _now_ms: u64, outbox: Outbox) {
        let Outbox { replies, events: _, cancels, purges, enqueue, changes, acks, naks } = outbox;
        // The group committed (or was undone already): its places stand.
        self.places.clear();
        for (pending, reply) in replies {
            self.repliers[pending.endpoint].reply_bytes(&pending.request, reply).await;
        }
        for id in cancels {
            let payload = Bytes::from(format!(r#"{{"id":"{id}"}}"#));
            self.client.publish(subject::CONTROL_CANCEL, payload).await.ok();
        }

        self.queue.publish(enqueue);
        self.queue.purge(purges);
        self.scheduler.apply(changes);
        for run in acks {
            run.ack().await.ok();
        }
        for run in naks {
            run.ack_with(jetstream::AckKind::Nak(Some(std::time::Duration::from_secs(5))))
                .await
                .ok();
        }
    }
}
