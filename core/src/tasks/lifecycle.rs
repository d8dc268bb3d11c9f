//! A task's lifecycle: the rules the task service applies to what workers and clients report.
//!
//! ```text
//!            claim             complete
//!  queued ---------> running ----------> completed
//!    ^  \              |  \
//!    |   \ cancel      |   \ fail (final) / dead letter
//!    |    v            |    v
//!    |  cancelled <----+  failed
//!    +--- fail (retry) ---+
//! ```
//!
//! Workers share a work queue with at-least-once delivery, so the same task can be claimed
//! twice (a redelivery after a worker was presumed dead) and reported twice. The rules make
//! that harmless: a claim of a live task always succeeds and counts an attempt; the **first**
//! outcome wins and every later report gets [`TaskError::Finished`], which tells the worker to
//! drop its copy. A cancelled task never becomes anything else.

use std::fmt;

/// Most bytes of an error message kept with a task.
pub const ERROR_BYTES_MAX: usize = 1024;

/// Where a task is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TaskState {
    /// Waiting for a worker (first attempt, or a retry after a failed attempt).
    Queued,
    /// A worker claimed it.
    Running,
    Completed,
    /// Failed on its last attempt (a dead letter).
    Failed,
    Cancelled,
}

impl TaskState {
    pub const ALL: [Self; 5] =
        [Self::Queued, Self::Running, Self::Completed, Self::Failed, Self::Cancelled];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|state| state.as_str() == text)
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled)
    }
}

impl fmt::Display for TaskState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a worker, a client or the queue reports about a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// A worker starts an attempt.
    Claim { worker: String },
    /// A worker is this far (0..=100).
    Progress { worker: String, percent: u8 },
    /// A worker finished with a result (stored by the caller).
    Complete { worker: String },
    /// An attempt failed; `retry_in_ms` is `None` when it was the last attempt.
    Fail { worker: String, error: String, retry_in_ms: Option<u64> },
    /// A client cancels.
    Cancel,
    /// The queue gave up on the task (it exhausted its deliveries without an outcome).
    DeadLetter { reason: String },
}

/// What happened, for the task's history and its event subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskEvent {
    Started { attempt: u32, worker: String },
    Progress { percent: u8 },
    Completed { attempt: u32, worker: String },
    Retrying { attempt: u32, error: String, retry_in_ms: u64 },
    Failed { attempt: u32, error: String, dead_letter: bool },
    Cancelled { was_running: bool },
}

impl TaskEvent {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Started { .. } => "started",
            Self::Progress { .. } => "progress",
            Self::Completed { .. } => "completed",
            Self::Retrying { .. } => "retrying",
            Self::Failed { .. } => "failed",
            Self::Cancelled { .. } => "cancelled",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TaskError {
    /// The task already reached this final state; the report changes nothing.
    #[error("the task is already {0}")]
    Finished(TaskState),
    #[error("progress must be 0..=100, not {0}")]
    BadPercent(u8),
}

/// The mutable part of a task record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lifecycle {
    pub state: TaskState,
    /// Attempts started so far.
    pub attempts: u32,
    /// The worker of the latest attempt.
    pub worker: Option<String>,
    pub progress: u8,
    /// When the first attempt started and when the task reached its final state.
    pub started_ms: Option<u64>,
    pub finished_ms: Option<u64>,
    /// The latest attempt's error.
    pub error: Option<String>,
    pub dead_letter: bool,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Self::new()
    }
}

impl Lifecycle {
    /// A newly submitted task.
    pub fn new() -> Self {
        Self {
            state: TaskState::Queued,
            attempts: 0,
            worker: None,
            progress: 0,
            started_ms: None,
            finished_ms: None,
            error: None,
            dead_letter: false,
        }
    }

    /// Applies a report. `Ok(None)`: accepted, nothing to record (progress from a worker
    /// whose attempt was superseded, while a retry waits, or that did not move).
    pub fn apply(&mut self, now_ms: u64, report: Report) -> Result<Option<TaskEvent>, TaskError> {
        if self.state.is_terminal() {
            return Err(TaskError::Finished(self.state));
        }
        let event = match report {
            Report::Claim { worker } => {
                self.state = TaskState::Running;
                self.attempts = self.attempts.saturating_add(1);
                self.worker = Some(worker.clone());
                self.progress = 0;
                self.started_ms.get_or_insert(now_ms);
                TaskEvent::Started { attempt: self.attempts, worker }
            }
            Report::Progress { worker, percent } => {
                if percent > 100 {
                    return Err(TaskError::BadPercent(percent));
                }
                // A report of the percent the task already has (a heartbeat's) changes
                // nothing, so it is not an event: history and watchers see each step once.
                if self.state != TaskState::Running
                    || self.worker.as_deref() != Some(&worker)
                    || percent == self.progress
                {
                    return Ok(None);
                }
                self.progress = percent;
                TaskEvent::Progress { percent }
            }
            Report::Complete { worker } => {
                self.finish(now_ms, TaskState::Completed);
                self.progress = 100;
                self.error = None;
                self.worker = Some(worker.clone());
                TaskEvent::Completed { attempt: self.attempts.max(1), worker }
            }
            Report::Fail { worker, error, retry_in_ms } => {
                let error = truncate(error);
                self.error = Some(error.clone());
                self.worker = Some(worker);
                match retry_in_ms {
                    Some(retry_in_ms) => {
                        self.state = TaskState::Queued;
                        TaskEvent::Retrying { attempt: self.attempts.max(1), error, retry_in_ms }
                    }
                    None => {
                        self.finish(now_ms, TaskState::Failed);
                        self.dead_letter = true;
                        TaskEvent::Failed {
                            attempt: self.attempts.max(1),
                            error,
                            dead_letter: true,
                        }
                    }
                }
            }
            Report::Cancel => {
                let was_running = self.state == TaskState::Running;
                self.finish(now_ms, TaskState::Cancelled);
                TaskEvent::Cancelled { was_running }
            }
            Report::DeadLetter { reason } => {
                let error = truncate(reason);
                self.error = Some(error.clone());
                self.finish(now_ms, TaskState::Failed);
                self.dead_letter = true;
                TaskEvent::Failed { attempt: self.attempts, error, dead_letter: true }
            }
        };
        Ok(Some(event))
    }

    fn finish(&mut self, now_ms: u64, state: TaskState) {
        self.state = state;
        self.finished_ms = Some(now_ms);
    }
}

fn truncate(mut text: String) -> String {
    if text.len() > ERROR_BYTES_MAX {
        let mut end = ERROR_BYTES_MAX;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(w: &str) -> Report {
        Report::Claim { worker: w.into() }
    }
    fn complete(w: &str) -> Report {
        Report::Complete { worker: w.into() }
    }
    fn fail(w: &str, retry: Option<u64>) -> Report {
        Report::Fail { worker: w.into(), error: "boom".into(), retry_in_ms: retry }
    }

    #[test]
    fn happy_path_records_attempts_and_times() {
        let mut task = Lifecycle::new();
        let started = task.apply(10, claim("w1")).unwrap();
        assert_eq!(started, Some(TaskEvent::Started { attempt: 1, worker: "w1".into() }));
        let progress = Report::Progress { worker: "w1".into(), percent: 50 };
        assert_eq!(task.apply(11, progress).unwrap(), Some(TaskEvent::Progress { percent: 50 }));
        assert_eq!(task.progress, 50);
        let done = task.apply(12, complete("w1")).unwrap();
        assert_eq!(done, Some(TaskEvent::Completed { attempt: 1, worker: "w1".into() }));
        assert_eq!(
            (task.state, task.started_ms, task.finished_ms, task.progress),
            (TaskState::Completed, Some(10), Some(12), 100)
        );
    }

    #[test]
    fn a_redelivery_counts_an_attempt_and_the_first_outcome_wins() {
        let mut task = Lifecycle::new();
        task.apply(1, claim("w1")).unwrap();
        // w1 is presumed dead; the queue redelivers to w2.
        let again = task.apply(5, claim("w2")).unwrap();
        assert_eq!(again, Some(TaskEvent::Started { attempt: 2, worker: "w2".into() }));
        assert_eq!(task.started_ms, Some(1), "first start is kept");
        // w1's late progress is ignored; w1 finishing first still wins.
        let late = Report::Progress { worker: "w1".into(), percent: 90 };
        assert_eq!(task.apply(6, late).unwrap(), None);
        task.apply(7, complete("w1")).unwrap();
        assert_eq!(task.worker.as_deref(), Some("w1"));
        for report in [complete("w2"), fail("w2", None), claim("w3"), Report::Cancel] {
            assert_eq!(
                task.apply(8, report).unwrap_err(),
                TaskError::Finished(TaskState::Completed)
            );
        }
        assert_eq!((task.state, task.attempts), (TaskState::Completed, 2));
    }

    #[test]
    fn failures_retry_then_dead_letter() {
        let mut task = Lifecycle::new();
        task.apply(1, claim("w1")).unwrap();
        let retry = task.apply(2, fail("w1", Some(100))).unwrap();
        assert_eq!(
            retry,
            Some(TaskEvent::Retrying { attempt: 1, error: "boom".into(), retry_in_ms: 100 })
        );
        assert_eq!(task.state, TaskState::Queued);
        task.apply(3, claim("w2")).unwrap();
        let failed = task.apply(4, fail("w2", None)).unwrap();
        assert_eq!(
            failed,
            Some(TaskEvent::Failed { attempt: 2, error: "boom".into(), dead_letter: true })
        );
        assert!(task.dead_letter && task.state == TaskState::Failed);
        assert_eq!(task.finished_ms, Some(4));
    }

    #[test]
    fn the_queue_can_dead_letter_a_task_whose_workers_died() {
        let mut task = Lifecycle::new();
        task.apply(1, claim("w1")).unwrap();
        let reason = Report::DeadLetter { reason: "x".repeat(5000) };
        let Some(TaskEvent::Failed { error, dead_letter, .. }) = task.apply(2, reason).unwrap()
        else {
            panic!("a failure");
        };
        assert!(dead_letter);
        assert_eq!(error.len(), ERROR_BYTES_MAX);
    }

    #[test]
    fn cancel_wins_over_later_reports() {
        let mut queued = Lifecycle::new();
        assert_eq!(
            queued.apply(1, Report::Cancel).unwrap(),
            Some(TaskEvent::Cancelled { was_running: false })
        );
        assert_eq!(queued.apply(2, claim("w")), Err(TaskError::Finished(TaskState::Cancelled)));
        let mut running = Lifecycle::new();
        running.apply(1, claim("w")).unwrap();
        assert_eq!(
            running.apply(2, Report::Cancel).unwrap(),
            Some(TaskEvent::Cancelled { was_running: true })
        );
        assert_eq!(running.apply(3, complete("w")), Err(TaskError::Finished(TaskState::Cancelled)));
        assert_eq!(running.attempts, 1);
    }

    #[test]
    fn progress_is_bounded_and_only_for_the_current_attempt() {
        let mut task = Lifecycle::new();
        let progress = |percent| Report::Progress { worker: "w".into(), percent };
        assert_eq!(task.apply(1, progress(10)).unwrap(), None, "not running yet");
        task.apply(1, claim("w")).unwrap();
        assert_eq!(task.apply(2, progress(101)), Err(TaskError::BadPercent(101)));
        assert_eq!(task.progress, 0);
        assert_eq!(task.apply(3, progress(0)).unwrap(), None, "no move from the claim's 0");
        assert_eq!(task.apply(4, progress(40)).unwrap(), Some(TaskEvent::Progress { percent: 40 }));
        assert_eq!(task.apply(5, progress(40)).unwrap(), None, "a heartbeat's repeat");
        assert_eq!(task.apply(6, progress(41)).unwrap(), Some(TaskEvent::Progress { percent: 41 }));
        assert_eq!(task.progress, 41);
    }

    #[test]
    fn states_round_trip_their_names() {
        for state in TaskState::ALL {
            assert_eq!(TaskState::parse(state.as_str()), Some(state));
        }
        assert_eq!(TaskState::parse("done"), None);
    }
}
