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
            workflows: super::workflow::Workflows::default(),
            submits,
        };
        tasks.reload(conn)?;
        Ok(tasks)
    }

    /// (Re)builds the in-memory table of unfinished tasks from the store.
    fn reload(&mut self, conn: &Connection) -> Result<(), StoreError> {
        let queued: std::collections::HashSet<u64> =
            self.active.iter().filter(|(_, a)| a.in_queue).map(|(id, _)| *id).collect();
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
        // Places in the work queue survive a reload (after a rolled-back group): the tasks
        // that held one still do, and each person's count is what they hold.
        let mut counts: HashMap<String, usize> = HashMap::new();
        for (id, active) in &mut self.active {
            active.in_queue = queued.contains(id);
            if active.in_queue && active.owner != agora_core::identity::SERVICE_OWNER {
                *counts.entry(active.owner.clone()).or_default() += 1;
            }
        }
        self.queued_by_owner = counts;
        let active = &self.active;
        self.waiting.values_mut().for_each(|ids| ids.retain(|id| active.contains_key(id)));
        Ok(())
    }

    /// Takes a place in the work queue for task `id` if its owner has one left; otherwise the
    /// task waits its turn. Components' tasks are not limited.
    fn admit(&mut self, id: u64) -> bool {
        let Some(active) = self.active.get_mut(&id) else { return false };
        if active.in_queue {
            return true;
        }
        if active.owner != agora_core::identity::SERVICE_OWNER {
            let count = self.queued_by_owner.entry(active.owner.clone()).or_default();
            if *count >= self.config.user_queue_max {
                self.waiting.entry(active.owner.clone()).or_default().push_back(id);
                return false;
            }
            *count += 1;
        }
        active.in_queue = true;
        true
    }

    /// A task of `owner` left the work queue: the next of theirs waiting takes its place.
    fn leave_queue(
        &mut self,
        tx: &Transaction<'_>,
        owner: &str,
        out: &mut Outbox,
    ) -> Result<(), StoreError> {
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
            if let Some(active) = self.active.get_mut(&id) {
                active.in_queue = true;
                if active.owner != agora_core::identity::SERVICE_OWNER {
                    *self.queued_by_owner.entry(active.owner.clone()).or_default() += 1;
                }
            }
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
        Ok(republished)
    }

    /// What the schedule stream should hold: (delayed tasks, recurring schedules), each as
    /// (subject, change).
    pub fn wanted_schedules(&self, conn: &Connection) -> Result<(Wanted, Wanted), StoreError> {
        let mut delayed = Vec::new();
        for (id, _) in self.active.iter().filter(|(_, active)| active.held) {
            let run_at = store::get(conn, *id, false)?.and_then(|row| row.run_at_ms).unwrap_or(0);
            let at = agora_core::tasks::schedule::Spec::At(run_at).header();
            delayed.push((subject::scheduled_task(&id.to_string()), Change::delayed(*id, at)));
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

    fn enqueue_stored(
        &self,
        conn: &Connection,
        id: u64,
        outbox: &mut Outbox,
    ) -> Result<(), StoreError> {
        if let Some(row) = store::get(conn, id, false)? {
            let priority = Priority::parse(Some(&row.priority)).unwrap_or(Priority::Normal);
            let message = queue::message(id, &row.op, row.args.as_deref().unwrap_or("{}"));
            outbox.enqueue.push(queue::Queued { id, priority, message, span: None });
        }
        Ok(())
    }

    fn sweep(
        &mut self,
        tx: &Transaction<'_>,
        now: u64,
        out: &mut Outbox,
    ) -> Result<(), StoreError> {
        // Waiters whose time is up get the task as it is.
        let expired: Vec<u64> = self
            .waiters
            .iter()
            .filter(|(_, list)| list.iter().any(|w| w.deadline_ms <= now))
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            let Some(list) = self.waiters.remove(&id) else { continue };
            let (due, keep): (Vec<_>, Vec<_>) =
                list.into_iter().partition(|w| w.deadline_ms <= now);
            self.waiter_count -= due.len();
            if !keep.is_empty() {
                self.waiters.insert(id, keep);
            }
            let reply = full_view(tx, id);
            for waiter in due {
                out.replies.push((waiter.pending, reply.clone()));
            }
        }
        out.changes.extend(self.scheduler.due(now));
        // Tasks whose publish failed go out again.
        for id in self.queue.due(now) {
            if self.active.contains_key(&id) {
                self.enqueue_stored(tx, id, out)?;
            }
        }
        if now.saturating_sub(self.last_prune_ms) >= PRUNE_EVERY_MS {
            self.last_prune_ms = now;
            self.submits.forget(now);
            let before = now.saturating_sub(self.config.retain_ms);
            let pruned = store::prune(tx, now, before, self.config.tasks_max, PRUNE_BATCH)?;
            let flows =
                store::prune_workflows(tx, before, workflow::WORKFLOWS_KEPT_MAX, PRUNE_BATCH)?;
            if pruned + flows > 0 {
                tracing::debug!(pruned, workflows = flows, "pruned finished tasks and workflows");
            }
        }
        Ok(())
    }

    fn execute(
        &mut self,
        tx: &Transaction<'_>,
        now: u64,
        pending: Pending,
        command: Command,
        out: &mut Outbox,
    ) -> Result<(), StoreError> {
        let reply: Result<Bytes, ServiceError> = match command {
            Command::Submit { op, args, priority, client_id, wait_ms, run_at_ms, ttl_ms } => {
                let owner = pending.caller.owner().to_owned();
                if let Err(limited) = self.take_submits(&owner, 1, now) {
                    out.replies.push((pending, Err(limited)));
                    return Ok(());
                }
                let span = crate::service::span_of(&pending.request);
                let task = Submission {
                    owner: &owner,
                    op,
                    args: &args,
                    priority,
                    span,
                    run_at_ms,
                    schedule: None,
                    ttl_ms,
                    workflow: None,
                };
                match self.submit(tx, now, &task, client_id.as_deref(), out)? {
                    Ok((id, state)) if wait_ms > 0 && !state.is_terminal() => {
                        self.add_waiter(id, pending, now + wait_ms, out);
                        return Ok(());
                    }
                    Ok((id, _)) if wait_ms > 0 => full_view(tx, id),
                    Ok((id, state)) => encode(&TaskView::brief(id, state)),
                    Err(error) => Err(error),
                }
            }
            Command::PutSchedule(row) => self.put_schedule(tx, row, out)?,
            Command::WorkflowSubmit(checked) => {
                let owner = pending.caller.owner().to_owned();
                match self.take_submits(&owner, checked.steps.len() as u64, now) {
                    Ok(()) => self.submit_workflow(tx, now, &owner, *checked, out)?,
                    Err(limited) => Err(limited),
                }
            }
            Command::WorkflowGet { id } => match workflow::owner_of(tx, id)? {
                None => Err(workflow::workflow_not_found(id)),
                Some(owner) => workflow::may(&pending.caller, false, &owner)
                    .and_then(|()| workflow::workflow_reply(tx, id)),
            },
            Command::WorkflowCancel { id } => match workflow::owner_of(tx, id)? {
                None => Err(workflow::workflow_not_found(id)),
                Some(owner) => match workflow::may(&pending.caller, true, &owner) {
                    Ok(()) => self.cancel_workflow(tx, now, id, out)?,
                    Err(error) => Err(error),
                },
            },
            Command::WorkflowList { owner, state, before, limit } => {
                workflow::list(tx, owner.as_deref(), state, before, limit)
            }
            Command::ListSchedules { owner } => {
                let rows =
                    store::schedules(tx, owner.as_deref(), schedules::SCHEDULES_MAX as usize)?;
                encode(&ScheduleListReply {
                    schedules: rows.iter().map(ScheduleRow::view).collect(),
                })
            }
            Command::ScheduleAction { owner, name, action } => {
                self.schedule_action(tx, now, &owner, &name, action, out)?
            }
            Command::Get { id } => match store::get(tx, id, true)? {
                Some(row) if let Err(error) = pending.caller.may_read("task", &row.owner) => {
                    Err(error.into())
                }
                Some(row) => {
                    let mut view = row.view();
                    let history = store::history(tx, id)?;
                    view.history =
                        Some(history.iter().filter_map(|e| serde_json::from_str(e).ok()).collect());
                    encode(&view)
                }
                None => Err(not_found(id)),
            },
            Command::List(filter) => {
                let rows = store::list(tx, &filter)?;
                let next_before = (rows.len() == filter.limit)
                    .then(|| rows.last().map(|row| row.id.to_string()))
                    .flatten();
                let tasks = rows
                    .iter()
                    .map(|row| TaskView { args: None, result: None, ..row.view() })
                    .collect();
                encode(&ListReply { tasks, next_before })
            }
            Command::Cancel { id } => {
                if let Some(owner) = self.owner_of(tx, id)?
                    && let Err(error) = pending.caller.may_change("task", &owner)
                {
                    out.replies.push((pending, Err(error.into())));
                    return Ok(());
                }
                match self.report_all(tx, now, id, vec![Report::Cancel], None, out)? {
                    Ok(_) => encode(&TaskView::brief(id, TaskState::Cancelled)),
                    Err(refused) => Err(refusal(id, &refused)),
                }
            }
            Command::Wait { id, timeout_ms } => {
                if let Some(owner) = self.owner_of(tx, id)?
                    && let Err(error) = pending.caller.may_read("task", &owner)
                {
                    out.replies.push((pending, Err(error.into())));
                    return Ok(());
                }
                if self.active.contains_key(&id) && timeout_ms > 0 {
                    self.add_waiter(id, pending, now + timeout_ms, out);
                    return Ok(());
                }
                full_view(tx, id)
            }
            Command::Claim { id, worker } => {
                match self.report_all(tx, now, id, vec![Report::Claim { worker }], None, out)? {
                    Ok(life) => encode(&ClaimReply {
                        run: true,
                        state: life.state.as_str().to_owned(),
                        attempt: life.attempts,
                    }),
                    Err(Refused::Finished(state)) => encode(&ClaimReply {
                        run: false,
                        state: state.as_str().to_owned(),
                        attempt: 0,
                    }),
                    Err(refused) => Err(refusal(id, &refused)),
                }
            }
            Command::Progress { id, worker, percent } => {
                let report = Report::Progress { worker, percent };
                match self.report_all(tx, now, id, vec![report], None, out)? {
                    Ok(_) => encode(&ProgressReply { stop: false }),
                    Err(Refused::Finished(_)) => encode(&ProgressReply { stop: true }),
                    Err(refused) => Err(refusal(id, &refused)),
                }
            }
            Command::Finish { id, worker, claim, outcome } => {
                let mut reports = Vec::with_capacity(2);
                if claim {
                    reports.push(Report::Claim { worker: worker.clone() });
                }
                let result = match outcome {
                    Ok(result) => {
                        reports.push(Report::Complete { worker });
                        Some(result)
                    }
                    Err((error, retry_in_ms)) => {
                        reports.push(Report::Fail { worker, error, retry_in_ms });
                        None
                    }
                };
                match self.report_all(tx, now, id, reports, result.as_deref(), out)? {
                    Ok(life) => encode(&FinishReply {
                        state: life.state.as_str().to_owned(),
                        accepted: true,
                    }),
                    Err(Refused::Finished(state)) => {
                        encode(&FinishReply { state: state.as_str().to_owned(), accepted: false })
                    }
                    Err(refused) => Err(refusal(id, &refused)),
                }
            }
        };
        out.replies.push((pending, reply));
        Ok(())
    }

    /// Takes `tasks` from a person's submit rate (components are not limited).
    fn take_submits(&mut self, owner: &str, tasks: u64, now: u64) -> Result<(), ServiceError> {
        if owner == agora_core::identity::SERVICE_OWNER {
            return Ok(());
        }
        self.submits.take(owner, tasks, now).map_err(|limited| {
            ServiceError::new(
                ErrorCode::RateLimited,
                format!(
                    "{owner} submits faster than {} tasks a second (at most {} at once); retry \
                     in {} ms",
                    self.config.user_submit_rate,
                    self.config.user_submit_burst,
                    limited.retry_in_ms
                ),
            )
        })
    }

    fn add_waiter(&mut self, id: u64, pending: Pending, deadline_ms: u64, out: &mut Outbox) {
        if self.waiter_count >= WAITERS_MAX {
            let busy =
                ServiceError::new(ErrorCode::Busy, "too many waiting requests; poll with get");
            out.replies.push((pending, Err(busy)));
            return;
        }
        self.waiter_count += 1;
        self.waiters.entry(id).or_default().push(Waiter { pending, deadline_ms });
    }

    /// Who owns task `id`, if it exists.
    fn owner_of(&self, tx: &Transaction<'_>, id: u64) -> Result<Option<String>, StoreError> {
        if let Some(active) = self.active.get(&id) {
            return Ok(Some(active.owner.clone()));
        }
        Ok(store::get(tx, id, false)?.map(|row| row.owner))
    }

    /// Cancels task `id` if it is unfinished (a workflow stopped its step).
    pub(super) fn cancel_task(
        &mut self,
        tx: &Transaction<'_>,
        now: u64,
        id: u64,
        out: &mut Outbox,
    ) -> Result<(), StoreError> {
        self.report_all(tx, now, id, vec![Report::Cancel], None, out).map(drop)
    }

    /// Accepts a submission: `Ok(Ok((id, state)))`, or a refusal.
    pub(super) fn submit(
        &mut self,
        tx: &Transaction<'_>,
        now: u64,
        task: &Submission<'_>,
        client_id: Option<&str>,
        out: &mut Outbox,
    ) -> Result<Result<(u64, TaskState), ServiceError>, StoreError> {
        let Submission { owner, op, args, priority, span, run_at_ms, schedule, ttl_ms, workflow } =
            *task;
        if let Some(client_id) = client_id
            && let Some(existing) = store::by_client_id(tx, owner, client_id)?
        {
            let same = existing.op == op
                && existing.priority == priority.as_str()
                && existing.args.as_deref() == Some(args);
            return Ok(if same {
                Ok((existing.id, existing.lifecycle.state))
            } else {
                Err(ServiceError::invalid(format!(
                    "id {client_id:?} was already used for a different task ({})",
                    existing.id
                )))
            });
        }
        if workflow.is_none() && self.active.len() >= self.config.pending_max {
            return Ok(Err(ServiceError::new(
                ErrorCode::Busy,
                format!(
                    "{} tasks are waiting or running (the limit); retry later",
                    self.active.len()
                ),
            )));
        }
        let id = self.next_id;
        let task = NewTask {
            id,
            owner,
            client_id,
            op,
            args,
            priority: priority.as_str(),
            submitted_ms: now,
            run_at_ms,
            held: run_at_ms.is_some(),
            schedule,
            ttl_ms,
            workflow,
        };
        store::insert(tx, &task)?;
        self.next_id += 1;
        let queued = TaskEventWire {
            event: "queued".to_owned(),
            at_ms: now,
            run_at_ms,
            ..Default::default()
        };
        store::append_event(tx, id, 0, &serde_json::to_string(&queued).unwrap_or_default())?;
        let active = Active {
            owner: owner.to_owned(),
            life: Lifecycle::new(),
            events: 1,
            held: run_at_ms.is_some(),
            in_queue: false,
        };
        self.active.insert(id, active);
        let subject = subject::events(owner, &id.to_string());
        out.events.push(Event::new(subject, event_payload(id, queued)));
        match run_at_ms {
            // The server's scheduler hands it over at its time.
            Some(at) => {
                let at = agora_core::tasks::schedule::Spec::At(at).header();
                out.changes.push(Change::delayed(id, at));
            }
            None if self.admit(id) => {
                let message = queue::message(id, op, args);
                out.enqueue.push(queue::Queued { id, priority, message, span });
            }
            None => {}
        }
        Ok(Ok((id, TaskState::Queued)))
    }

    /// Applies reports in order (all or nothing) to an unfinished task, stores the task once
    /// and its events, and answers the task's waiters once it finished.
    fn report_all(
        &mut self,
        tx: &Transaction<'_>,
        now: u64,
        id: u64,
        reports: Vec<Report>,
        result: Option<&str>,
        out: &mut Outbox,
    ) -> Result<Result<Lifecycle, Refused>, StoreError> {
        let Some(active) = self.active.get_mut(&id) else {
            return Ok(match store::get(tx, id, false)? {
                Some(row) => Err(Refused::Finished(row.lifecycle.state)),
                None => Err(Refused::Missing),
            });
        };
        let mut life = active.life.clone();
        let owner = active.owner.clone();
        let held = active.held;
        let in_queue = active.in_queue;
        let mut events = Vec::with_capacity(reports.len());
        for report in reports {
            match life.apply(now, report) {
                Ok(Some(event)) => events.push(event),
                Ok(None) => {}
                Err(TaskError::Finished(state)) => return Ok(Err(Refused::Finished(state))),
                Err(error) => return Ok(Err(Refused::Invalid(error))),
            }
        }
        active.life = life.clone();
        if events.is_empty() {
            return Ok(Ok(life));
        }
        store::update(tx, id, &life, result)?;
        let mut wires = Vec::with_capacity(events.len());
        for event in &events {
            let wire = TaskEventWire::from_event(event, now);
            let keep = !matches!(event, TaskEvent::Progress { .. })
                || active.events < HISTORY_MAX.saturating_sub(HISTORY_OUTCOME_ROOM);
            if keep && active.events < HISTORY_MAX {
                let text = serde_json::to_string(&wire).unwrap_or_default();
                store::append_event(tx, id, active.events, &text)?;
                active.events += 1;
            }
            match event {
                TaskEvent::Cancelled { was_running: true } => out.cancels.push(id),
                TaskEvent::Cancelled { was_running: false } if held => {
                    out.changes
                        .push(Change::Remove { subject: subject::scheduled_task(&id.to_string()) });
                }
                TaskEvent::Cancelled { was_running: false } if in_queue => out.purges.push(id),
                TaskEvent::Cancelled { was_running: false } => {
                    // It was waiting for a place: it simply never gets one.
                    if let Some(ids) = self.waiting.get_mut(&owner) {
                        ids.retain(|waiting| *waiting != id);
                    }
                }
                _ => {}
            }
            wires.push(wire);
        }
        if life.state.is_terminal() {
            self.active.remove(&id);
            if in_queue {
                self.leave_queue(tx, &owner, out)?;
            }
            if let Some(waiters) = self.waiters.remove(&id) {
                self.waiter_count -= waiters.len();
                // The task as `get` and `wait` show it (read inside this transaction, so it is
                // the row just written): one view of a task, whoever asks.
                let reply = full_view(tx, id);
                for waiter in waiters {
                    out.replies.push((waiter.pending, reply.clone()));
                }
            }
            if let Some(last) = wires.last_mut() {
                last.result = result.and_then(|text| RawValue::from_string(text.to_owned()).ok());
            }
        }
        let subject = subject::events(&owner, &id.to_string());
        for wire in wires {
            out.events.push(Event::new(subject.clone(), event_payload(id, wire)));
        }
        if life.state.is_terminal() {
            // Its workflow's next steps start in this same transaction.
            self.workflow_task_finished(tx, now, id, life.state, out)?;
        }
        Ok(Ok(life))
    }
}

impl Tasks {
    /// Creates or replaces a schedule (the caller may act on its owner: checked at parse).
    fn put_schedule(
        &mut self,
        tx: &Transaction<'_>,
        row: ScheduleRow,
        out: &mut Outbox,
    ) -> Result<Result<Bytes, ServiceError>, StoreError> {
        let subject = subject::recurring(&row.owner, &row.name);
        let existing = store::schedule(tx, &row.owner, &row.name)?;
        if existing.is_none() {
            let (mine, all) = store::schedule_counts(tx, &row.owner)?;
            let full = if mine >= schedules::SCHEDULES_PER_OWNER_MAX {
                Some(format!("{} has {mine} schedules (the limit)", row.owner))
            } else if all >= schedules::SCHEDULES_MAX {
                Some(format!("there are {all} schedules (the limit)"))
            } else {
                None
            };
            if let Some(full) = full {
                // The endpoint put it in the stream already: take it out again.
                out.changes.push(Change::Remove { subject });
                return Ok(Err(ServiceError::new(ErrorCode::Busy, full)));
            }
        }
        if row.paused {
            out.changes.push(Change::Remove { subject });
        }
        store::put_schedule(tx, &row)?;
        let stored = store::schedule(tx, &row.owner, &row.name)?.unwrap_or(row);
        Ok(encode(&stored.view()))
    }

    fn schedule_action(
        &mut self,
        tx: &Transaction<'_>,
        now: u64,
        owner: &str,
        name: &str,
        action: ScheduleAction,
        out: &mut Outbox,
    ) -> Result<Result<Bytes, ServiceError>, StoreError> {
        let Some(row) = store::schedule(tx, owner, name)? else {
            return Ok(Err(ServiceError::new(
                ErrorCode::NotFound,
                format!("{owner} has no schedule {name:?}"),
            )));
        };
        let subject = subject::recurring(owner, name);
        match action {
            ScheduleAction::Pause => {
                store::set_paused(tx, owner, name, true, now)?;
                if !row.paused {
                    out.changes.push(Change::Remove { subject });
                }
            }
            ScheduleAction::Resume => {
                store::set_paused(tx, owner, name, false, now)?;
                if row.paused {
                    out.changes.push(Change::recurring(owner, name, row.spec, row.time_zone));
                }
            }
            ScheduleAction::Delete => {
                store::delete_schedule(tx, owner, name)?;
                out.changes.push(Change::Remove { subject });
                return Ok(encode(&ScheduleRow { paused: true, ..row }.view()));
            }
        }
        let stored = store::schedule(tx, owner, name)?;
        Ok(stored.map_or_else(
            || {
                Err(ServiceError::new(
                    ErrorCode::NotFound,
                    format!("{owner} has no schedule {name:?}"),
                ))
            },
            |row| encode(&row.view()),
        ))
    }

    /// A run of the server's scheduler: a delayed task goes to the work queue; a recurring
    /// schedule submits its task, once per run.
    fn fire(
        &mut self,
        tx: &Transaction<'_>,
        now: u64,
        fire: Fire,
        message: Box<jetstream::Message>,
        out: &mut Outbox,
    ) -> Result<(), StoreError> {
        match fire {
            Fire::Task(id) => {
                if let Some(active) = self.active.get_mut(&id)
                    && active.held
                {
                    active.held = false;
                    store::release(tx, id)?;
                    if self.admit(id) {
                        self.enqueue_stored(tx, id, out)?;
                    }
                }
            }
            Fire::Recurring { owner, name, seq, next_ms } => {
                let client_id = format!("schedule:{name}:{seq}");
                let row = store::schedule(tx, &owner, &name)?;
                // A paused or deleted schedule's run is dropped; a run seen before is done.
                if let Some(row) = row.filter(|row| !row.paused)
                    && store::by_client_id(tx, &owner, &client_id)?.is_none()
                {
                    let priority = Priority::parse(Some(&row.priority)).unwrap_or(Priority::Normal);
                    let task = Submission {
                        owner: &owner,
                        op: &row.op,
                        args: &row.args,
                        priority,
                        span: None,
                        run_at_ms: None,
                        schedule: Some(&name),
                        ttl_ms: None,
                        workflow: None,
                    };
                    match self.submit(tx, now, &task, Some(&client_id), out)? {
                        Ok((id, _)) => store::record_run(tx, &owner, &name, now, id, next_ms)?,
                        Err(error) if error.code == ErrorCode::Busy => {
                            out.naks.push(*message);
                            return Ok(());
                        }
                        Err(error) => {
                            tracing::warn!(%owner, %name, %error, "a scheduled run was refused");
                        }
                    }
                }
            }
        }
        out.acks.push(*message);
        Ok(())
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
        if let Err(error) = self.reload(conn) {
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
