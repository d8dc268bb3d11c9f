//! Workflows: tasks that depend on each other, as a graph of named steps.
//!
//! A step runs once every step it comes `after` is done; its task may take their results as
//! input (`feed`, built by the task service). What happens when a step fails is that step's
//! policy:
//!
//! - [`OnFailure::Stop`] (the default): the workflow fails; running steps are cancelled and
//!   waiting ones never start.
//! - [`OnFailure::Skip`]: the step is `skipped` and the workflow goes on; its dependents run
//!   without its result.
//! - [`OnFailure::Compensate`]: the workflow stops as with `stop`, then undoes what it did: the
//!   compensation of every completed step that has one runs, one at a time, latest completed
//!   first (a saga). The workflow ends `compensated`, or `failed` if a compensation failed.
//!
//! ```text
//!                 all steps completed or skipped
//!   running --------------------------------------> completed
//!     |  \  a step fails (stop)
//!     |   +-------------------------------------> failed
//!     |  a step fails (compensate)     compensations done
//!     +--------------------> compensating -------------------> compensated (or failed)
//!     |  cancel                        |  cancel
//!     +--------------------------------+--------------------> cancelled
//! ```
//!
//! This module decides; the task service acts: it submits the tasks of [`Action::Start`] and
//! [`Action::Compensate`], cancels those of [`Action::Cancel`], and reports each task's end
//! with [`Workflow::finished`]. Every report is idempotent: a task that is no longer what its
//! step waits for changes nothing, so a step cancelled by the workflow whose task reports
//! later is harmless.

use std::collections::HashMap;
use std::fmt;

/// Most steps in one workflow.
pub const STEPS_MAX: usize = 100;
/// Most bytes of a step name (`A-Z a-z 0-9 _ -`).
pub const STEP_NAME_BYTES_MAX: usize = 64;

/// What a failed step does to its workflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnFailure {
    #[default]
    Stop,
    Skip,
    Compensate,
}

impl OnFailure {
    pub const ALL: [Self; 3] = [Self::Stop, Self::Skip, Self::Compensate];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::Skip => "skip",
            Self::Compensate => "compensate",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|policy| policy.as_str() == text)
    }
}

/// How a step's task takes its dependencies' results.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feed {
    /// Every dependency's result is appended to a list argument (`numbers`, `strings`).
    List,
    /// The one dependency's result is the argument (`text`, `n`, `ms`, `message`).
    One,
}

/// A step as submitted, without its task (the service keeps op and args).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepSpec {
    pub name: String,
    /// Names of the steps that must be done before this one starts.
    pub after: Vec<String>,
    pub on_failure: OnFailure,
    pub feed: Option<Feed>,
    /// The step has a compensation (a task that undoes it).
    pub compensable: bool,
}

/// Where a step is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StepState {
    /// Its dependencies are not all done yet.
    Waiting,
    /// Its task is queued or running.
    Running,
    Completed,
    /// Failed; the workflow stopped (or compensated) because of it.
    Failed,
    /// Failed with `skip`: the workflow went on without it.
    Skipped,
    /// Never ran, or was stopped, because the workflow ended.
    Cancelled,
    /// Its compensation task is queued or running.
    Compensating,
    Compensated,
    /// Its compensation failed.
    CompensationFailed,
}

impl StepState {
    pub const ALL: [Self; 9] = [
        Self::Waiting,
        Self::Running,
        Self::Completed,
        Self::Failed,
        Self::Skipped,
        Self::Cancelled,
        Self::Compensating,
        Self::Compensated,
        Self::CompensationFailed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Waiting => "waiting",
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Skipped => "skipped",
            Self::Cancelled => "cancelled",
            Self::Compensating => "compensating",
            Self::Compensated => "compensated",
            Self::CompensationFailed => "compensation_failed",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|state| state.as_str() == text)
    }

    /// Done as far as its dependents are concerned.
    fn lets_dependents_run(self) -> bool {
        matches!(self, Self::Completed | Self::Skipped)
    }
}

/// Where a workflow is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WorkflowState {
    Running,
    Completed,
    Failed,
    Cancelled,
    Compensating,
    Compensated,
}

impl WorkflowState {
    pub const ALL: [Self; 6] = [
        Self::Running,
        Self::Completed,
        Self::Failed,
        Self::Cancelled,
        Self::Compensating,
        Self::Compensated,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::Compensating => "compensating",
            Self::Compensated => "compensated",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|state| state.as_str() == text)
    }

    pub fn is_terminal(self) -> bool {
        !matches!(self, Self::Running | Self::Compensating)
    }
}

impl fmt::Display for WorkflowState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a step's task ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Completed,
    /// Failed (after its retries), dead-lettered, could not be built, or was cancelled by
    /// someone other than the workflow.
    Failed,
}

/// What the task service does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Submit step `n`'s task (its dependencies are done).
    Start(usize),
    /// Cancel this task: its step was stopped by the workflow.
    Cancel(u64),
    /// Submit step `n`'s compensation task.
    Compensate(usize),
    /// The workflow reached this final state.
    Finished(WorkflowState),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct WorkflowError(pub String);

fn refuse(message: impl Into<String>) -> WorkflowError {
    WorkflowError(message.into())
}

/// A step's runtime record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    pub state: StepState,
    /// Its task, once started.
    pub task: Option<u64>,
    /// Its compensation task, once started.
    pub compensation: Option<u64>,
    /// When it completed, in the workflow's order of completions (1, 2, ...).
    pub completed_seq: Option<u32>,
}

impl Step {
    pub const NEW: Self =
        Self { state: StepState::Waiting, task: None, compensation: None, completed_seq: None };
}

/// A checked graph: each step's dependencies as indices, in a valid order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    after: Vec<Vec<usize>>,
    on_failure: Vec<OnFailure>,
    compensable: Vec<bool>,
}

impl Plan {
    /// Checks a workflow's steps: 1..=[`STEPS_MAX`] of them, unique names, dependencies that
    /// exist (each named once, never the step itself), no cycle, and a feed only where there
    /// is something to feed (`One`: exactly one dependency).
    pub fn new(steps: &[StepSpec]) -> Result<Self, WorkflowError> {
        if steps.is_empty() || steps.len() > STEPS_MAX {
            return Err(refuse(format!(
                "a workflow has 1..={STEPS_MAX} steps, not {}",
                steps.len()
            )));
        }
        let mut index = HashMap::with_capacity(steps.len());
        for (i, step) in steps.iter().enumerate() {
            check_step_name(&step.name)?;
            if index.insert(step.name.as_str(), i).is_some() {
                return Err(refuse(format!("two steps are named {:?}", step.name)));
            }
        }
        let mut after = Vec::with_capacity(steps.len());
        for step in steps {
            let mut deps = Vec::with_capacity(step.after.len());
            for name in &step.after {
                let Some(&dep) = index.get(name.as_str()) else {
                    return Err(refuse(format!(
                        "step {:?} comes after {name:?}, which is not a step",
                        step.name
                    )));
                };
                if name == &step.name {
                    return Err(refuse(format!("step {:?} comes after itself", step.name)));
                }
                if deps.contains(&dep) {
                    return Err(refuse(format!(
                        "step {:?} names {name:?} twice in after",
                        step.name
                    )));
                }
                deps.push(dep);
            }
            match (step.feed, deps.len()) {
                (Some(_), 0) => {
                    return Err(refuse(format!(
                        "step {:?} has feed but no after: nothing feeds it",
                        step.name
                    )));
                }
                (Some(Feed::One), n) if n > 1 => {
                    return Err(refuse(format!(
                        "step {:?} feeds a single argument from {n} steps; it takes one",
                        step.name
                    )));
                }
                _ => {}
            }
            after.push(deps);
        }
        if let Some(step) = cycle(&after) {
            return Err(refuse(format!(
                "step {:?} depends on itself through a cycle",
                steps[step].name
            )));
        }
        Ok(Self {
            after,
            on_failure: steps.iter().map(|s| s.on_failure).collect(),
            compensable: steps.iter().map(|s| s.compensable).collect(),
        })
    }

    pub fn len(&self) -> usize {
        self.after.len()
    }

    pub fn is_empty(&self) -> bool {
        self.after.is_empty()
    }

    /// Step `n`'s dependencies, in the order they were named.
    pub fn after(&self, step: usize) -> &[usize] {
        &self.after[step]
    }
}

/// Checks a step name's shape.
pub fn check_step_name(name: &str) -> Result<(), WorkflowError> {
    if crate::token::is_word(name, STEP_NAME_BYTES_MAX) {
        Ok(())
    } else {
        Err(refuse(format!(
            "{name:?} is not a step name (1..={STEP_NAME_BYTES_MAX} of A-Z a-z 0-9 _ -)"
        )))
    }
}

/// A step on a cycle, if there is one (Kahn's algorithm: what never becomes free is on or
/// behind a cycle).
fn cycle(after: &[Vec<usize>]) -> Option<usize> {
    let mut blocked: Vec<usize> = after.iter().map(Vec::len).collect();
    let mut dependents = vec![Vec::new(); after.len()];
    for (step, deps) in after.iter().enumerate() {
        for &dep in deps {
            dependents[dep].push(step);
        }
    }
    let mut free: Vec<usize> = (0..after.len()).filter(|&s| blocked[s] == 0).collect();
    let mut seen = 0;
    while let Some(step) = free.pop() {
        seen += 1;
        for &next in &dependents[step] {
            blocked[next] -= 1;
            if blocked[next] == 0 {
                free.push(next);
            }
        }
    }
    (seen < after.len()).then(|| (0..after.len()).find(|&s| blocked[s] > 0)).flatten()
}

/// A workflow's state machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workflow {
    plan: Plan,
    pub state: WorkflowState,
    pub steps: Vec<Step>,
}

impl Workflow {
    /// A new workflow; [`Workflow::start`] says what to run first.
    pub fn new(plan: Plan) -> Self {
        let steps = vec![Step::NEW; plan.len()];
        Self { plan, state: WorkflowState::Running, steps }
    }

    /// A workflow as stored.
    pub fn restore(
        plan: Plan,
        state: WorkflowState,
        steps: Vec<Step>,
    ) -> Result<Self, WorkflowError> {
        if steps.len() != plan.len() {
            return Err(refuse(format!(
                "{} steps stored for a plan of {}",
                steps.len(),
                plan.len()
            )));
        }
        Ok(Self { plan, state, steps })
    }

    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// The steps that can run at once (no dependencies).
    pub fn start(&mut self) -> Vec<Action> {
        let mut actions = Vec::new();
        self.start_ready(&mut actions);
        actions
    }

    /// Step `n`'s task was submitted.
    pub fn started(&mut self, step: usize, task: u64) {
        if let Some(record) = self.steps.get_mut(step) {
            record.task = Some(task);
        }
    }

    /// Step `n`'s compensation task was submitted.
    pub fn compensation_started(&mut self, step: usize, task: u64) {
        if let Some(record) = self.steps.get_mut(step) {
            record.compensation = Some(task);
        }
    }

    /// The step whose task (`false`) or compensation (`true`) is `task`.
    pub fn step_of(&self, task: u64) -> Option<(usize, bool)> {
        self.steps.iter().enumerate().find_map(|(i, step)| {
            if step.task == Some(task) {
                Some((i, false))
            } else if step.compensation == Some(task) {
                Some((i, true))
            } else {
                None
            }
        })
    }

    /// Task `task` ended. A task that is not what a step waits for changes nothing.
    pub fn finished(&mut self, task: u64, outcome: Outcome) -> Vec<Action> {
        match self.step_of(task) {
            Some((step, false)) => self.step_finished(step, outcome),
            Some((step, true)) => self.compensation_finished(step, outcome),
            None => Vec::new(),
        }
    }

    /// Step `n` ended (its task, or the service could not even build its task).
    pub fn step_finished(&mut self, step: usize, outcome: Outcome) -> Vec<Action> {
        let mut actions = Vec::new();
        if self.state != WorkflowState::Running
            || self.steps.get(step).map(|s| s.state) != Some(StepState::Running)
        {
            return actions;
        }
        match outcome {
            Outcome::Completed => {
                let seq = self.steps.iter().filter_map(|s| s.completed_seq).max().unwrap_or(0);
                self.steps[step].state = StepState::Completed;
                self.steps[step].completed_seq = Some(seq + 1);
                self.start_ready(&mut actions);
                self.complete_if_done(&mut actions);
            }
            Outcome::Failed => match self.plan.on_failure[step] {
                OnFailure::Skip => {
                    self.steps[step].state = StepState::Skipped;
                    self.start_ready(&mut actions);
                    self.complete_if_done(&mut actions);
                }
                OnFailure::Stop => {
                    self.steps[step].state = StepState::Failed;
                    self.stop(&mut actions);
                    self.state = WorkflowState::Failed;
                    actions.push(Action::Finished(self.state));
                }
                OnFailure::Compensate => {
                    self.steps[step].state = StepState::Failed;
                    self.stop(&mut actions);
                    self.state = WorkflowState::Compensating;
                    self.compensate_next(&mut actions);
                }
            },
        }
        actions
    }

    /// Step `n`'s compensation ended (its task, or the service could not submit it).
    pub fn compensation_finished(&mut self, step: usize, outcome: Outcome) -> Vec<Action> {
        let mut actions = Vec::new();
        if self.state != WorkflowState::Compensating
            || self.steps[step].state != StepState::Compensating
        {
            return actions;
        }
        self.steps[step].state = match outcome {
            Outcome::Completed => StepState::Compensated,
            Outcome::Failed => StepState::CompensationFailed,
        };
        self.compensate_next(&mut actions);
        actions
    }

    /// Cancels the workflow: running tasks are cancelled (compensations too), nothing more
    /// starts. A finished workflow stays as it is (`false`).
    pub fn cancel(&mut self) -> (bool, Vec<Action>) {
        let mut actions = Vec::new();
        if self.state.is_terminal() {
            return (false, actions);
        }
        self.stop(&mut actions);
        for step in &mut self.steps {
            if step.state == StepState::Compensating {
                step.state = StepState::CompensationFailed;
                actions.extend(step.compensation.map(Action::Cancel));
            }
        }
        self.state = WorkflowState::Cancelled;
        actions.push(Action::Finished(self.state));
        (true, actions)
    }

    /// Nothing more starts: running steps are cancelled, waiting ones will never run.
    fn stop(&mut self, actions: &mut Vec<Action>) {
        for step in &mut self.steps {
            match step.state {
                StepState::Running => {
                    step.state = StepState::Cancelled;
                    actions.extend(step.task.map(Action::Cancel));
                }
                StepState::Waiting => step.state = StepState::Cancelled,
                _ => {}
            }
        }
    }

    /// Starts the latest-completed step's compensation that has not run, or ends the
    /// workflow when none is left.
    fn compensate_next(&mut self, actions: &mut Vec<Action>) {
        let next = (0..self.steps.len())
            .filter(|&i| self.plan.compensable[i] && self.steps[i].state == StepState::Completed)
            .max_by_key(|&i| self.steps[i].completed_seq);
        match next {
            Some(step) => {
                self.steps[step].state = StepState::Compensating;
                actions.push(Action::Compensate(step));
            }
            None => {
                let failed = self.steps.iter().any(|s| s.state == StepState::CompensationFailed);
                self.state =
                    if failed { WorkflowState::Failed } else { WorkflowState::Compensated };
                actions.push(Action::Finished(self.state));
            }
        }
    }

    fn start_ready(&mut self, actions: &mut Vec<Action>) {
        for step in 0..self.steps.len() {
            let ready = self.steps[step].state == StepState::Waiting
                && self.plan.after[step]
                    .iter()
                    .all(|&dep| self.steps[dep].state.lets_dependents_run());
            if ready {
                self.steps[step].state = StepState::Running;
                actions.push(Action::Start(step));
            }
        }
    }

    fn complete_if_done(&mut self, actions: &mut Vec<Action>) {
        if self.steps.iter().all(|s| s.state.lets_dependents_run()) {
            self.state = WorkflowState::Completed;
            actions.push(Action::Finished(self.state));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, after: &[&str]) -> StepSpec {
        StepSpec {
            name: name.to_owned(),
            after: after.iter().map(|s| (*s).to_owned()).collect(),
            on_failure: OnFailure::Stop,
            feed: None,
            compensable: false,
        }
    }

    fn with(mut step: StepSpec, on_failure: OnFailure, compensable: bool) -> StepSpec {
        step.on_failure = on_failure;
        step.compensable = compensable;
        step
    }

    fn workflow(steps: &[StepSpec]) -> Workflow {
        Workflow::new(Plan::new(steps).expect("valid"))
    }

    /// Runs `Start`/`Compensate` actions by giving each a task id (step * 10 + 1, or + 2 for a
    /// compensation).
    fn run(workflow: &mut Workflow, actions: &[Action]) {
        for action in actions {
            match *action {
                Action::Start(step) => workflow.started(step, step as u64 * 10 + 1),
                Action::Compensate(step) => {
                    workflow.compensation_started(step, step as u64 * 10 + 2);
                }
                _ => {}
            }
        }
    }

    fn states(workflow: &Workflow) -> Vec<&'static str> {
        workflow.steps.iter().map(|s| s.state.as_str()).collect()
    }

    #[test]
    fn plans_refuse_every_bad_graph() {
        let cases: Vec<(Vec<StepSpec>, &str)> = vec![
            (vec![], "1..=100 steps"),
            ((0..=STEPS_MAX).map(|i| spec(&format!("s{i}"), &[])).collect(), "1..=100 steps"),
            (vec![spec("a", &[]), spec("a", &[])], "two steps"),
            (vec![spec("", &[])], "not a step name"),
            (vec![spec("a b", &[])], "not a step name"),
            (vec![spec(&"x".repeat(65), &[])], "not a step name"),
            (vec![spec("a", &["nope"])], "not a step"),
            (vec![spec("a", &["a"])], "after itself"),
            (vec![spec("a", &[]), spec("b", &["a", "a"])], "twice"),
            (vec![spec("a", &["b"]), spec("b", &["a"])], "cycle"),
            (
                vec![spec("a", &["c"]), spec("b", &["a"]), spec("c", &["b"]), spec("d", &[])],
                "cycle",
            ),
            (vec![StepSpec { feed: Some(Feed::List), ..spec("a", &[]) }], "nothing feeds"),
            (
                vec![
                    spec("a", &[]),
                    spec("b", &[]),
                    StepSpec { feed: Some(Feed::One), ..spec("c", &["a", "b"]) },
                ],
                "takes one",
            ),
        ];
        for (steps, expected) in cases {
            let error = Plan::new(&steps).expect_err(expected);
            assert!(error.0.contains(expected), "{error} should say {expected}");
        }
        // Declared in any order: the graph, not the list, decides.
        let plan = Plan::new(&[spec("c", &["a", "b"]), spec("b", &["a"]), spec("a", &[])]).unwrap();
        assert_eq!(plan.after(0), &[2, 1]);
        assert!(
            Plan::new(&(0..STEPS_MAX).map(|i| spec(&format!("s{i}"), &[])).collect::<Vec<_>>())
                .is_ok()
        );
    }

    #[test]
    fn a_chain_runs_in_order() {
        let mut wf = workflow(&[spec("a", &[]), spec("b", &["a"]), spec("c", &["b"])]);
        let actions = wf.start();
        assert_eq!(actions, vec![Action::Start(0)]);
        run(&mut wf, &actions);
        let actions = wf.finished(1, Outcome::Completed);
        assert_eq!(actions, vec![Action::Start(1)]);
        run(&mut wf, &actions);
        // A report twice, or for an unknown task, changes nothing.
        assert!(wf.finished(1, Outcome::Completed).is_empty());
        assert!(wf.finished(999, Outcome::Failed).is_empty());
        let actions = wf.finished(11, Outcome::Completed);
        assert_eq!(actions, vec![Action::Start(2)]);
        run(&mut wf, &actions);
        assert_eq!(
            wf.finished(21, Outcome::Completed),
            vec![Action::Finished(WorkflowState::Completed)]
        );
        assert_eq!(wf.state, WorkflowState::Completed);
        assert_eq!(states(&wf), ["completed"; 3]);
    }

    #[test]
    fn fan_out_then_fan_in() {
        let mut wf = workflow(&[
            spec("a", &[]),
            spec("b", &[]),
            spec("c", &[]),
            spec("all", &["a", "b", "c"]),
        ]);
        let actions = wf.start();
        assert_eq!(actions, vec![Action::Start(0), Action::Start(1), Action::Start(2)]);
        run(&mut wf, &actions);
        assert!(wf.finished(21, Outcome::Completed).is_empty());
        assert!(wf.finished(1, Outcome::Completed).is_empty());
        let actions = wf.finished(11, Outcome::Completed);
        assert_eq!(actions, vec![Action::Start(3)]);
        run(&mut wf, &actions);
        assert_eq!(
            wf.finished(31, Outcome::Completed),
            vec![Action::Finished(WorkflowState::Completed)]
        );
    }

    #[test]
    fn stop_cancels_running_steps_and_never_starts_waiting_ones() {
        let mut wf = workflow(&[spec("a", &[]), spec("b", &[]), spec("c", &["a", "b"])]);
        let actions = wf.start();
        run(&mut wf, &actions);
        let actions = wf.finished(1, Outcome::Failed);
        assert_eq!(actions, vec![Action::Cancel(11), Action::Finished(WorkflowState::Failed)]);
        assert_eq!(states(&wf), ["failed", "cancelled", "cancelled"]);
        // The cancelled task's own report comes back: nothing more happens.
        assert!(wf.finished(11, Outcome::Failed).is_empty());
        assert!(wf.finished(11, Outcome::Completed).is_empty());
        assert_eq!(wf.state, WorkflowState::Failed);
    }

    #[test]
    fn skip_goes_on_without_the_step() {
        let mut wf = workflow(&[
            with(spec("a", &[]), OnFailure::Skip, false),
            spec("b", &[]),
            spec("c", &["a", "b"]),
        ]);
        let actions = wf.start();
        run(&mut wf, &actions);
        assert!(wf.finished(1, Outcome::Failed).is_empty());
        let actions = wf.finished(11, Outcome::Completed);
        assert_eq!(actions, vec![Action::Start(2)]);
        run(&mut wf, &actions);
        assert_eq!(
            wf.finished(21, Outcome::Completed),
            vec![Action::Finished(WorkflowState::Completed)]
        );
        assert_eq!(states(&wf), ["skipped", "completed", "completed"]);
    }

    #[test]
    fn compensate_undoes_completed_steps_latest_first() {
        // a and b complete (b first), c fails with compensate; d was running.
        let mut wf = workflow(&[
            with(spec("a", &[]), OnFailure::Stop, true),
            with(spec("b", &[]), OnFailure::Stop, true),
            with(spec("n", &[]), OnFailure::Stop, false),
            with(spec("c", &["a", "b", "n"]), OnFailure::Compensate, false),
            spec("d", &[]),
        ]);
        let actions = wf.start();
        assert_eq!(actions.len(), 4);
        run(&mut wf, &actions);
        wf.finished(11, Outcome::Completed);
        wf.finished(21, Outcome::Completed);
        let actions = wf.finished(1, Outcome::Completed);
        assert_eq!(actions, vec![Action::Start(3)]);
        run(&mut wf, &actions);
        let actions = wf.finished(31, Outcome::Failed);
        assert_eq!(actions, vec![Action::Cancel(41), Action::Compensate(0)]);
        run(&mut wf, &actions);
        assert_eq!(wf.state, WorkflowState::Compensating);
        // A step's late report while compensating changes nothing.
        assert!(wf.finished(41, Outcome::Completed).is_empty());
        assert_eq!(wf.finished(2, Outcome::Completed), vec![Action::Compensate(1)]);
        wf.compensation_started(1, 12);
        assert_eq!(
            wf.finished(12, Outcome::Completed),
            vec![Action::Finished(WorkflowState::Compensated)]
        );
        assert_eq!(states(&wf), ["compensated", "compensated", "completed", "failed", "cancelled"]);
    }

    #[test]
    fn a_failed_compensation_fails_the_workflow_after_the_rest() {
        let mut wf = workflow(&[
            with(spec("a", &[]), OnFailure::Stop, true),
            with(spec("b", &["a"]), OnFailure::Stop, true),
            with(spec("c", &["b"]), OnFailure::Compensate, false),
        ]);
        let a = wf.start();
        run(&mut wf, &a);
        let b = wf.finished(1, Outcome::Completed);
        run(&mut wf, &b);
        let c = wf.finished(11, Outcome::Completed);
        run(&mut wf, &c);
        assert_eq!(wf.finished(21, Outcome::Failed), vec![Action::Compensate(1)]);
        wf.compensation_started(1, 12);
        assert_eq!(wf.finished(12, Outcome::Failed), vec![Action::Compensate(0)]);
        wf.compensation_started(0, 2);
        assert_eq!(
            wf.finished(2, Outcome::Completed),
            vec![Action::Finished(WorkflowState::Failed)]
        );
        assert_eq!(states(&wf), ["compensated", "compensation_failed", "failed"]);
    }

    #[test]
    fn compensate_with_nothing_to_undo_ends_compensated() {
        let mut wf = workflow(&[with(spec("a", &[]), OnFailure::Compensate, false)]);
        let actions = wf.start();
        run(&mut wf, &actions);
        assert_eq!(
            wf.finished(1, Outcome::Failed),
            vec![Action::Finished(WorkflowState::Compensated)]
        );
    }

    #[test]
    fn cancel_stops_everything_once() {
        let mut wf = workflow(&[spec("a", &[]), spec("b", &["a"])]);
        let actions = wf.start();
        run(&mut wf, &actions);
        let (changed, actions) = wf.cancel();
        assert!(changed);
        assert_eq!(actions, vec![Action::Cancel(1), Action::Finished(WorkflowState::Cancelled)]);
        assert_eq!(states(&wf), ["cancelled", "cancelled"]);
        assert_eq!(wf.cancel(), (false, vec![]));
        assert!(wf.finished(1, Outcome::Completed).is_empty());
        // A finished workflow cannot be cancelled.
        let mut done = workflow(&[spec("a", &[])]);
        let actions = done.start();
        run(&mut done, &actions);
        done.finished(1, Outcome::Completed);
        assert_eq!(done.cancel(), (false, vec![]));
        assert_eq!(done.state, WorkflowState::Completed);
    }

    #[test]
    fn cancel_while_compensating_cancels_the_compensation() {
        let mut wf = workflow(&[
            with(spec("a", &[]), OnFailure::Stop, true),
            with(spec("b", &["a"]), OnFailure::Compensate, false),
        ]);
        let a = wf.start();
        run(&mut wf, &a);
        let b = wf.finished(1, Outcome::Completed);
        run(&mut wf, &b);
        let c = wf.finished(11, Outcome::Failed);
        run(&mut wf, &c);
        let (_, actions) = wf.cancel();
        assert_eq!(actions, vec![Action::Cancel(2), Action::Finished(WorkflowState::Cancelled)]);
        assert!(wf.finished(2, Outcome::Completed).is_empty());
    }

    /// Every graph of up to 6 steps and every order of outcomes ends in a final state with no
    /// step left running or waiting, and every step ran at most once.
    #[test]
    fn every_run_ends() {
        use proptest::prelude::*;
        let graph = (1usize..=6).prop_flat_map(|n| {
            (
                proptest::collection::vec(proptest::collection::vec(any::<bool>(), n), n),
                proptest::collection::vec(0u8..3, n),
                proptest::collection::vec(any::<bool>(), n),
                proptest::collection::vec((any::<bool>(), any::<u8>()), 40),
            )
        });
        proptest!(|((edges, policies, compensable, outcomes) in graph)| {
            let n = edges.len();
            let steps: Vec<StepSpec> = (0..n).map(|i| StepSpec {
                name: format!("s{i}"),
                // Only earlier steps: always a valid graph.
                after: (0..i).filter(|&j| edges[i][j]).map(|j| format!("s{j}")).collect(),
                on_failure: OnFailure::ALL[policies[i] as usize],
                feed: None,
                compensable: compensable[i],
            }).collect();
            let mut wf = workflow(&steps);
            let mut next_task = 0u64;
            let mut starts = vec![0; n];
            let mut live: Vec<u64> = Vec::new();
            let mut pending = wf.start();
            let mut outcomes = outcomes.into_iter();
            loop {
                for action in pending.drain(..) {
                    match action {
                        Action::Start(s) => { starts[s] += 1; next_task += 1; wf.started(s, next_task); live.push(next_task); }
                        Action::Compensate(s) => { next_task += 1; wf.compensation_started(s, next_task); live.push(next_task); }
                        Action::Cancel(task) => live.retain(|t| *t != task),
                        Action::Finished(_) => {}
                    }
                }
                if live.is_empty() { break; }
                let (ok, pick) = outcomes.next().unwrap_or((true, 0));
                let task = live.remove(pick as usize % live.len());
                pending = wf.finished(task, if ok { Outcome::Completed } else { Outcome::Failed });
            }
            prop_assert!(wf.state.is_terminal(), "{:?}", wf.state);
            prop_assert!(starts.iter().all(|&s| s <= 1));
            prop_assert!(wf.steps.iter().all(|s| !matches!(s.state, StepState::Running | StepState::Waiting | StepState::Compensating)));
        });
    }
}
