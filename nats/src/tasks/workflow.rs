//! Workflows in the task service: steps that are tasks, run as `agora_core`'s workflow state
//! machine decides (`agora_core::tasks::workflow`).
//!
//! Everything a workflow does happens in the owner's transaction with the task it reacts to: a
//! step's task finishing, its dependents' tasks being submitted and the workflow's new state
//! commit together, so a crash or a failover never leaves a step finished without its
//! dependents started. Step tasks are ordinary tasks of the workflow's owner (their view names
//! `workflow` and `step`), so they share the work queue, its fairness and its retries.
//!
//! A step's `feed` builds its args from its dependencies' results when it starts; args that
//! the op refuses then fail the step (with the op's reason), and its policy applies.

use std::collections::{HashMap, VecDeque};

use agora_core::tasks::workflow::{
    Action, Feed, OnFailure, Outcome, Plan, Step, StepSpec, StepState, Workflow, WorkflowState,
};
use agora_core::{Caller, TaskState};
use bytes::Bytes;
use rusqlite::{Connection, Transaction};
use serde_json::Value;
use serde_json::value::RawValue;

use super::state::{Outbox, Submission, Tasks};
use super::store::{self, StepRow, WorkflowRow};
use super::wire::{
    Priority, StepRequest, StepView, WorkflowEventWire, WorkflowListReply, WorkflowSubmitRequest,
    WorkflowView, parse_op,
};
use crate::error::{ErrorCode, ServiceError};
use crate::service::encode;
use crate::sqlite::StoreError;
mod views;
pub use views::*;

/// Unfinished workflows one person may have at once.
pub const WORKFLOWS_PER_OWNER_MAX: usize = 100;
/// Unfinished workflows in all.
pub const WORKFLOWS_MAX: usize = 1_000;
/// Finished workflows kept at most (the oldest go first; `--retain-ms` also applies).
pub const WORKFLOWS_KEPT_MAX: u64 = 100_000;
/// A step's result is shown in the workflow up to this size (the task has it all).
const RESULT_SHOWN_BYTES_MAX: usize = 4 * 1024;

/// A submitted workflow, checked.
#[derive(Debug, Clone)]
pub struct Checked {
    pub name: Option<String>,
    pub client_id: Option<String>,
    pub priority: Priority,
    pub steps: Vec<StepRequest>,
    pub plan: Plan,
    /// The steps as stored (canonical JSON: the same workflow gives the same text).
    pub text: String,
}

/// The arguments a step's feed fills, and how.
fn feed_kind(field: &str) -> Option<Feed> {
    match field {
        "numbers" | "strings" => Some(Feed::List),
        "text" | "n" | "ms" | "message" => Some(Feed::One),
        _ => None,
    }
}

/// A stand-in for what a feed gives, to check the rest of the args at submit.
fn placeholder(field: &str) -> Value {
    match field {
        "numbers" | "n" | "ms" => Value::from(0),
        _ => Value::String(String::new()),
    }
}

fn object(args: &RawValue) -> Result<serde_json::Map<String, Value>, ServiceError> {
    match serde_json::from_str::<Value>(args.get()) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ServiceError::invalid("args must be a JSON object")),
        Err(error) => Err(ServiceError::invalid(format!("bad args: {error}"))),
    }
}

fn raw(value: &Value) -> Box<RawValue> {
    RawValue::from_string(value.to_string())
        .unwrap_or_else(|_| RawValue::from_string("{}".to_owned()).expect("{} is JSON"))
}

/// Checks a workflow the way submit does a task: every step's op and args (a fed argument
/// stands in with a value of its type), every compensation, the graph.
pub fn check(request: WorkflowSubmitRequest) -> Result<Checked, ServiceError> {
    let priority = Priority::parse(request.priority.as_deref())?;
    if let Some(name) = &request.name
        && (name.is_empty() || name.len() > 128 || name.chars().any(char::is_control))
    {
        return Err(ServiceError::invalid("name must be 1..=128 bytes without control characters"));
    }
    let mut specs = Vec::with_capacity(request.steps.len());
    let mut steps = Vec::with_capacity(request.steps.len());
    for mut step in request.steps {
        let name = step.name.clone();
        let context = move |error: ServiceError| {
            ServiceError::new(error.code, format!("step {name:?}: {}", error.message))
        };
        let mut args = object(&step.args).map_err(&context)?;
        let feed = match &step.feed {
            None => None,
            Some(field) => {
                let kind = feed_kind(field).ok_or_else(|| {
                    context(ServiceError::invalid(format!(
                        "feed {field:?} is not an argument; it is one of numbers, strings, \
                         text, n, ms, message"
                    )))
                })?;
                // What the op receives: the given list with one fed item more, or the fed value.
                match (kind, args.get_mut(field)) {
                    (Feed::List, Some(Value::Array(items))) => items.push(placeholder(field)),
                    (Feed::List, None) => {
                        args.insert(field.clone(), Value::Array(vec![placeholder(field)]));
                    }
                    (Feed::List, Some(_)) => {}
                    (Feed::One, _) => {
                        args.insert(field.clone(), placeholder(field));
                    }
                }
                Some(kind)
            }
        };
        parse_op(&step.op, &raw(&Value::Object(args))).map_err(&context)?;
        // What feeds a list argument comes after what args gives; a list given as something
        // else is refused by the op above.
        if let Some(compensation) = &step.compensate {
            parse_op(&compensation.op, &compensation.args).map_err(|error| {
                context(ServiceError::invalid(format!("compensate: {}", error.message)))
            })?;
        }
        let on_failure = match step.on_failure.as_deref() {
            None => OnFailure::Stop,
            Some(text) => OnFailure::parse(text).ok_or_else(|| {
                context(ServiceError::invalid(format!(
                    "on_failure is stop, skip or compensate; not {text:?}"
                )))
            })?,
        };
        if let Some(text) = step.priority.as_deref() {
            Priority::parse(Some(text)).map_err(&context)?;
        }
        // Canonical args (serde_json maps sort their keys).
        step.args = raw(&Value::Object(object(&step.args)?));
        if let Some(compensation) = &mut step.compensate {
            compensation.args = raw(&Value::Object(object(&compensation.args)?));
        }
        specs.push(StepSpec {
            name: step.name.clone(),
            after: step.after.clone(),
            on_failure,
            feed,
            compensable: step.compensate.is_some(),
        });
        steps.push(step);
    }
    let plan = Plan::new(&specs).map_err(|error| ServiceError::invalid(error.0))?;
    let text = serde_json::to_string(&steps)
        .map_err(|error| ServiceError::new(ErrorCode::Internal, error.to_string()))?;
    Ok(Checked { name: request.name, client_id: request.id, priority, steps, plan, text })
}

/// The value a finished task's result stands for: `value`, `digits`, `sorted`, `slept_ms`.
fn result_value(result: &str) -> Option<Value> {
    let Ok(Value::Object(mut map)) = serde_json::from_str::<Value>(result) else { return None };
    ["value", "digits", "sorted", "slept_ms"].into_iter().find_map(|key| map.remove(key))
}

/// A step's op and its args with its dependencies' results fed in (`inputs`: each
/// dependency's result, in `after` order; `None` for a skipped one). The op judges the result.
pub fn build_args(
    step: &StepRequest,
    inputs: &[Option<String>],
) -> Result<(&'static str, String), ServiceError> {
    let mut args = object(&step.args)?;
    if let Some(field) = &step.feed {
        let values: Vec<Value> =
            inputs.iter().flatten().filter_map(|result| result_value(result)).collect();
        match feed_kind(field) {
            Some(Feed::List) => {
                let mut list = match args.remove(field) {
                    Some(Value::Array(items)) => items,
                    _ => Vec::new(),
                };
                for value in values {
                    match value {
                        Value::Array(items) => list.extend(items),
                        other => list.push(other),
                    }
                }
                args.insert(field.clone(), Value::Array(list));
            }
            Some(Feed::One) => {
                if let Some(value) = values.into_iter().next() {
                    args.insert(field.clone(), value);
                }
            }
            None => {}
        }
    }
    let args = raw(&Value::Object(args));
    let op = parse_op(&step.op, &args)
        .map_err(|error| ServiceError::invalid(format!("its input: {}", error.message)))?;
    Ok((op.name(), args.get().to_owned()))
}

/// An unfinished workflow, kept in memory by the owner.
#[derive(Debug)]
pub struct Active {
    owner: String,
    priority: Priority,
    steps: Vec<StepRequest>,
    flow: Workflow,
    /// Why steps failed without a task.
    errors: Vec<Option<String>>,
    /// History events stored so far.
    events: u32,
}

/// The unfinished workflows and which of their tasks each step waits for.
#[derive(Debug, Default)]
pub struct Workflows {
    active: HashMap<u64, Active>,
    by_task: HashMap<u64, u64>,
    next_id: u64,
}

impl Workflows {
    /// The unfinished workflows as the store has them.
    pub fn load(conn: &Connection) -> Result<Self, StoreError> {
        let mut workflows = Self { next_id: store::max_workflow_id(conn)? + 1, ..Self::default() };
        for row in store::unfinished_workflows(conn)? {
            let steps: Vec<StepRequest> = match serde_json::from_str(&row.steps) {
                Ok(steps) => steps,
                Err(error) => {
                    tracing::error!(id = row.id, %error, "a stored workflow cannot be read");
                    continue;
                }
            };
            let Ok(Checked { plan, .. }) = check(WorkflowSubmitRequest {
                name: None,
                id: None,
                priority: None,
                steps: steps.clone(),
            }) else {
                tracing::error!(id = row.id, "a stored workflow no longer checks");
                continue;
            };
            let records = store::workflow_steps(conn, row.id)?;
            let errors = records.iter().map(|r| r.error.clone()).collect();
            let flow = match Workflow::restore(
                plan,
                row.state,
                records.iter().map(|r| r.step).collect(),
            ) {
                Ok(flow) => flow,
                Err(error) => {
                    tracing::error!(id = row.id, %error, "a stored workflow cannot be restored");
                    continue;
                }
            };
            for step in &flow.steps {
                if let (StepState::Running, Some(task)) = (step.state, step.task) {
                    workflows.by_task.insert(task, row.id);
                }
                if let (StepState::Compensating, Some(task)) = (step.state, step.compensation) {
                    workflows.by_task.insert(task, row.id);
                }
            }
            let active = Active {
                owner: row.owner,
                priority: Priority::parse(Some(&row.priority)).unwrap_or(Priority::Normal),
                steps,
                flow,
                errors,
                events: store::workflow_event_count(conn, row.id)?,
            };
            workflows.active.insert(row.id, active);
        }
        Ok(workflows)
    }

    /// The workflow task `task` is a step (or compensation) of, if it waits for it.
    pub fn of_task(&mut self, task: u64) -> Option<u64> {
        self.by_task.remove(&task)
    }

    pub fn unfinished(&self) -> usize {
        self.active.len()
    }
}

fn event_text(event: &WorkflowEventWire) -> String {
    serde_json::to_string(event).unwrap_or_default()
}

impl Tasks {
    /// Submits a workflow: its first steps' tasks are submitted in the same transaction.
    pub(super) fn submit_workflow(
        &mut self,
        tx: &Transaction<'_>,
        now: u64,
        owner: &str,
        checked: Checked,
        out: &mut Outbox,
    ) -> Result<Result<Bytes, ServiceError>, StoreError> {
        if let Some(client_id) = &checked.client_id
            && let Some(existing) = store::workflow_by_client_id(tx, owner, client_id)?
        {
            return if existing.steps == checked.text {
                Ok(workflow_reply(tx, existing.id))
            } else {
                Ok(Err(ServiceError::invalid(format!(
                    "id {client_id:?} was already used for a different workflow ({})",
                    existing.id
                ))))
            };
        }
        let workflows = &self.workflows;
        let mine = workflows.active.values().filter(|w| w.owner == owner).count();
        let full =
            if owner != agora_core::identity::SERVICE_OWNER && mine >= WORKFLOWS_PER_OWNER_MAX {
                Some(format!("{owner} has {mine} unfinished workflows (the limit)"))
            } else if workflows.active.len() >= WORKFLOWS_MAX {
                Some(format!("{} workflows are unfinished (the limit)", workflows.active.len()))
            } else if self.unfinished() + checked.steps.len() > self.config.pending_max {
                Some(format!("{} tasks are waiting or running (the limit)", self.unfinished()))
            } else {
                None
            };
        if let Some(full) = full {
            return Ok(Err(ServiceError::new(ErrorCode::Busy, format!("{full}; retry later"))));
        }
        let id = self.workflows.next_id;
        self.workflows.next_id += 1;
        store::insert_workflow(
            tx,
            &WorkflowRow {
                id,
                owner: owner.to_owned(),
                name: checked.name,
                client_id: checked.client_id,
                priority: checked.priority.as_str().to_owned(),
                state: WorkflowState::Running,
                steps: checked.text,
                submitted_ms: now,
                finished_ms: None,
            },
        )?;
        for step in 0..checked.steps.len() {
            store::put_step(tx, id, step, &StepRow { step: Step::NEW, error: None })?;
        }
        let running =
            WorkflowEventWire { at_ms: now, state: "running".to_owned(), ..Default::default() };
        store::append_workflow_event(tx, id, 0, &event_text(&running))?;
        let errors = vec![None; checked.steps.len()];
        let active = Active {
            owner: owner.to_owned(),
            priority: checked.priority,
            steps: checked.steps,
            flow: Workflow::new(checked.plan),
            errors,
            events: 1,
        };
        self.workflows.active.insert(id, active);
        self.advance(tx, now, id, Workflow::start, out)?;
        Ok(workflow_reply(tx, id))
    }

    /// Cancels a workflow (the caller may: checked by the caller of this).
    pub(super) fn cancel_workflow(
        &mut self,
        tx: &Transaction<'_>,
        now: u64,
        id: u64,
        out: &mut Outbox,
    ) -> Result<Result<Bytes, ServiceError>, StoreError> {
        if !self.workflows.active.contains_key(&id) {
            return Ok(match store::workflow(tx, id)? {
                Some(row) => Err(ServiceError::new(
                    ErrorCode::Conflict,
                    format!("workflow {id} is already {}", row.state),
                )),
                None => Err(workflow_not_found(id)),
            });
        }
        self.advance(tx, now, id, |flow| flow.cancel().1, out)?;
        Ok(workflow_reply(tx, id))
    }

    /// Task `task` of a workflow ended: the workflow reacts.
    pub(super) fn workflow_task_finished(
        &mut self,
        tx: &Transaction<'_>,
        now: u64,
        task: u64,
        state: TaskState,
        out: &mut Outbox,
    ) -> Result<(), StoreError> {
        let Some(id) = self.workflows.of_task(task) else { return Ok(()) };
        let outcome =
            if state == TaskState::Completed { Outcome::Completed } else { Outcome::Failed };
        self.advance(tx, now, id, |flow| flow.finished(task, outcome), out)
    }

    /// Applies `change` to workflow `id`, carries out what it asks (submits and cancels
    /// tasks), and stores every step and state that changed, with its history.
    fn advance(
        &mut self,
        tx: &Transaction<'_>,
        now: u64,
        id: u64,
        change: impl FnOnce(&mut Workflow) -> Vec<Action>,
        out: &mut Outbox,
    ) -> Result<(), StoreError> {
        // Out of the table while it acts: a task it cancels reports back to nobody.
        let Some(mut wf) = self.workflows.active.remove(&id) else { return Ok(()) };
        let before = wf.flow.steps.clone();
        let state_before = wf.flow.state;
        let mut actions: VecDeque<Action> = change(&mut wf.flow).into();
        while let Some(action) = actions.pop_front() {
            match action {
                Action::Start(step) => {
                    let inputs = wf.flow.plan().after(step).iter().map(|&dep| {
                        let task = wf.flow.steps[dep].task;
                        Ok(match task {
                            Some(task) if wf.flow.steps[dep].state == StepState::Completed => {
                                store::get(tx, task, true)?.and_then(|row| row.result)
                            }
                            _ => None,
                        })
                    });
                    let inputs = inputs.collect::<Result<Vec<_>, StoreError>>()?;
                    let request = &wf.steps[step];
                    let submitted = match build_args(request, &inputs) {
                        Ok((op, args)) => {
                            let priority = request
                                .priority
                                .as_deref()
                                .and_then(|p| Priority::parse(Some(p)).ok())
                                .unwrap_or(wf.priority);
                            self.submit_step(
                                tx,
                                now,
                                &wf.owner,
                                (id, &request.name),
                                op,
                                &args,
                                priority,
                                out,
                            )?
                        }
                        Err(error) => Err(error),
                    };
                    match submitted {
                        Ok(task) => {
                            wf.flow.started(step, task);
                            self.workflows.by_task.insert(task, id);
                        }
                        Err(error) => {
                            wf.errors[step] = Some(error.message);
                            actions.extend(wf.flow.step_finished(step, Outcome::Failed));
                        }
                    }
                }
                Action::Compensate(step) => {
                    let request = &wf.steps[step];
                    let Some(compensation) = &request.compensate else { continue };
                    let name = format!("{}:compensate", request.name);
                    let submitted = match parse_op(&compensation.op, &compensation.args) {
                        Ok(op) => self.submit_step(
                            tx,
                            now,
                            &wf.owner,
                            (id, &name),
                            op.name(),
                            compensation.args.get(),
                            wf.priority,
                            out,
                        )?,
                        Err(error) => Err(error),
                    };
                    match submitted {
                        Ok(task) => {
                            wf.flow.compensation_started(step, task);
                            self.workflows.by_task.insert(task, id);
                        }
                        Err(error) => {
                            wf.errors[step] = Some(format!("compensate: {}", error.message));
                            actions.extend(wf.flow.compensation_finished(step, Outcome::Failed));
                        }
                    }
                }
                Action::Cancel(task) => {
                    self.workflows.by_task.remove(&task);
                    self.cancel_task(tx, now, task, out)?;
                }
                Action::Finished(_) => {}
            }
        }
        // What changed goes to the store and the history: what ended before what it started.
        let mut changed: Vec<usize> =
            (0..before.len()).filter(|&i| before[i] != wf.flow.steps[i]).collect();
        changed.sort_by_key(|&i| {
            let state = wf.flow.steps[i].state;
            (matches!(state, StepState::Running | StepState::Compensating), i)
        });
        for step in changed {
            let (old, new) = (&before[step], &wf.flow.steps[step]);
            let row = StepRow { step: *new, error: wf.errors[step].clone() };
            store::put_step(tx, id, step, &row)?;
            if old.state != new.state {
                let task = match new.state {
                    StepState::Compensating
                    | StepState::Compensated
                    | StepState::CompensationFailed => new.compensation,
                    _ => new.task,
                };
                let event = WorkflowEventWire {
                    at_ms: now,
                    step: Some(wf.steps[step].name.clone()),
                    state: new.state.as_str().to_owned(),
                    task: task.map(|t| t.to_string()),
                    error: wf.errors[step].clone(),
                };
                store::append_workflow_event(tx, id, wf.events, &event_text(&event))?;
                wf.events += 1;
            }
        }
        let state = wf.flow.state;
        if state != state_before {
            let finished = state.is_terminal().then_some(now);
            store::set_workflow_state(tx, id, state, finished)?;
            let event = WorkflowEventWire {
                at_ms: now,
                state: state.as_str().to_owned(),
                ..Default::default()
            };
            store::append_workflow_event(tx, id, wf.events, &event_text(&event))?;
            wf.events += 1;
        }
        if !state.is_terminal() {
            self.workflows.active.insert(id, wf);
        }
        Ok(())
    }

    /// Submits one step's (or compensation's) task as the workflow's owner.
    #[allow(clippy::too_many_arguments)]
    fn submit_step(
        &mut self,
        tx: &Transaction<'_>,
        now: u64,
        owner: &str,
        step: (u64, &str),
        op: &'static str,
        args: &str,
        priority: Priority,
        out: &mut Outbox,
    ) -> Result<Result<u64, ServiceError>, StoreError> {
        let task = Submission {
            owner,
            op,
            args,
            priority,
            span: None,
            run_at_ms: None,
            schedule: None,
            ttl_ms: None,
            workflow: Some(step),
        };
        Ok(self.submit(tx, now, &task, None, out)?.map(|(id, _)| id))
    }
}

#[cfg(test)]
mod tests;
