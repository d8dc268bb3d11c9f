//! The task service's and the workers' JSON payloads (`agora.tasks.*`), and the ops' arguments
//! decoded into `agora_core::Op`.

use agora_core::{Number, Op, Output, RawArgs, SortItems, TaskEvent};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::error::ServiceError;
use crate::pattern;
mod workflows;
pub use workflows::*;
mod schedules;
pub use schedules::*;

// ---------------------------------------------------------------------------------------------
// Tasks (client-facing)
// ---------------------------------------------------------------------------------------------

/// `agora.tasks.submit`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitRequest {
    #[schemars(extend("enum" = agora_core::tasks::ops::OP_NAMES))]
    pub op: String,
    /// The op's arguments, per op: `{"numbers":[1,2.5]}` (sum, average, max, min; integers
    /// within ±2^53, floats finite within ±1e300), `{"n":90}` (fibonacci),
    /// `{"numbers":[...]}` or `{"strings":[...]}` and `"descending"` (sort), `{"text":"..."}`,
    /// `{"ms":1000}` (sleep), `{"message":"..."}` (fail).
    // Kept as written: numbers keep their text, so an integer too large for an `i64` is
    // refused rather than read as a float (see `parse_op`).
    #[serde(default = "empty_object")]
    #[schemars(with = "serde_json::Map<String, serde_json::Value>")]
    pub args: Box<RawValue>,
    /// Client id: submitting the same id again returns the same task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    pub id: Option<String>,
    /// `normal` (default) or `high`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["normal", "high"]))]
    pub priority: Option<String>,
    /// Reply when the task has finished, or after this many milliseconds, with the whole
    /// task as it is then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 60_000))]
    pub wait_ms: Option<u64>,
    /// Run it at this time (ms since the epoch), not now: the NATS server's scheduler hands it
    /// to the workers then. At most 366 days ahead; a time in the past runs now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_at_ms: Option<u64>,
    /// Run it this many milliseconds from now (instead of `run_at_ms`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 31_622_400_000u64))]
    pub delay_ms: Option<u64>,
    /// Keep the finished task (and its result) this long, in milliseconds, instead of the
    /// service's `--retain-ms`: 1 s to 366 days.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1_000, max = 31_622_400_000u64))]
    pub ttl_ms: Option<u64>,
}

fn empty_object() -> Box<RawValue> {
    RawValue::from_string("{}".to_owned()).expect("{} is JSON")
}

impl SubmitRequest {
    /// A submission of `op` with `args` (normal priority, no client id, no wait).
    pub fn new(op: impl Into<String>, args: &serde_json::Value) -> Self {
        Self {
            op: op.into(),
            args: RawValue::from_string(args.to_string()).unwrap_or_else(|_| empty_object()),
            id: None,
            priority: None,
            wait_ms: None,
            run_at_ms: None,
            delay_ms: None,
            ttl_ms: None,
        }
    }
}

/// Task priority on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Priority {
    Normal,
    High,
}

impl Priority {
    pub fn parse(text: Option<&str>) -> Result<Self, ServiceError> {
        match text {
            None | Some("normal") => Ok(Self::Normal),
            Some("high") => Ok(Self::High),
            Some(other) => Err(ServiceError::invalid(format!(
                "priority must be \"normal\" or \"high\", not {other:?}"
            ))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Normal => "normal",
            Self::High => "high",
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NumbersArgs<'a> {
    #[serde(borrow)]
    numbers: Vec<&'a RawValue>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FibonacciArgs {
    n: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SortArgs<'a> {
    #[serde(default, borrow)]
    numbers: Option<Vec<&'a RawValue>>,
    #[serde(default)]
    strings: Option<Vec<String>>,
    #[serde(default)]
    descending: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TextArgs {
    text: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SleepArgs {
    ms: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FailArgs {
    #[serde(default)]
    message: String,
}

/// A number as it was written. JSON has one number type; here an integer literal (no `.`, no
/// exponent) must fit an `i64` (then `Op::new` bounds it to ±2^53) and anything else is a
/// finite float. Reading the text, not a parsed `f64`, is what refuses 2^64 instead of
/// silently rounding it to 1.8446744073709552e19.
fn number(raw: &RawValue) -> Result<Number, ServiceError> {
    let text = raw.get();
    if !text.starts_with(|c: char| c == '-' || c.is_ascii_digit()) {
        return Err(ServiceError::invalid(format!("{text} is not a number")));
    }
    if text.contains(['.', 'e', 'E']) {
        return match text.parse::<f64>() {
            Ok(float) if float.is_finite() => Ok(Number::Float(float)),
            _ => Err(ServiceError::invalid(format!(
                "{text} is out of range; floats must be finite within ±1e300"
            ))),
        };
    }
    text.parse::<i64>().map(Number::Int).map_err(|_| {
        ServiceError::invalid(format!("{text} is out of range; integers must be within ±2^53"))
    })
}

fn numbers(values: &[&RawValue]) -> Result<Vec<Number>, ServiceError> {
    values.iter().map(|value| number(value)).collect()
}

/// Decodes and bounds-checks an op and its arguments (`agora_core::Op::new`).
pub fn parse_op(op: &str, args: &RawValue) -> Result<Op, ServiceError> {
    fn args_of<'a, T: Deserialize<'a>>(op: &str, args: &'a RawValue) -> Result<T, ServiceError> {
        crate::service::check_object(args.get().as_bytes())
            .and_then(|()| serde_json::from_str(args.get()).map_err(|e| e.to_string()))
            .map_err(|e| {
                ServiceError::invalid(format!("{op}: bad args ({e}); expected {}", Op::usage(op)))
            })
    }
    let raw = match op {
        "sum" | "average" | "max" | "min" => {
            RawArgs::Numbers(numbers(&args_of::<NumbersArgs>(op, args)?.numbers)?)
        }
        "fibonacci" => RawArgs::N(args_of::<FibonacciArgs>(op, args)?.n),
        "sort" => {
            let sort: SortArgs = args_of(op, args)?;
            let items = match (sort.numbers, sort.strings) {
                (Some(values), None) => SortItems::Numbers(numbers(&values)?),
                (None, Some(strings)) => SortItems::Strings(strings),
                _ => {
                    return Err(ServiceError::invalid(format!(
                        "sort: give exactly one of \"numbers\" and \"strings\"; expected {}",
                        Op::usage(op)
                    )));
                }
            };
            RawArgs::Sort { items, descending: sort.descending }
        }
        "count_words" | "count_chars" | "uppercase" | "lowercase" => {
            RawArgs::Text(args_of::<TextArgs>(op, args)?.text)
        }
        "sleep" => RawArgs::Ms(args_of::<SleepArgs>(op, args)?.ms),
        "fail" => RawArgs::Message(args_of::<FailArgs>(op, args)?.message),
        _ => RawArgs::N(0),
    };
    Op::new(op, raw).map_err(|e| ServiceError::invalid(e.0))
}

/// A result as JSON: `{"value": ...}` (numbers and text), `{"digits": "..."}` (fibonacci),
/// `{"sorted": [...]}`, `{"slept_ms": n}`.
pub fn output_json(output: &Output) -> serde_json::Value {
    use serde_json::json;
    let number = |n: &Number| match n {
        Number::Int(i) => json!(i),
        Number::Float(f) => json!(f),
    };
    match output {
        // Within ±2^53 * 20_000, so it fits i64 (and stays exact).
        Output::Int(i) => json!({ "value": i64::try_from(*i).unwrap_or(i64::MAX) }),
        Output::Float(f) => json!({ "value": f }),
        Output::BigInt(digits) => json!({ "digits": digits }),
        Output::Numbers(values) => {
            json!({ "sorted": values.iter().map(number).collect::<Vec<_>>() })
        }
        Output::Strings(values) => json!({ "sorted": values }),
        Output::Text(text) => json!({ "value": text }),
        Output::Slept(ms) => json!({ "slept_ms": ms }),
    }
}

/// A task as the task service reports it. `submit` without `wait_ms` and `cancel` fill only
/// `id` and `state`; `list` leaves out `args`, `result` and `history`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TaskView {
    pub id: String,
    /// Who submitted it (`_agora`: one of Agora's services).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub op: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Box<RawValue>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submitted_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Box<RawValue>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dead_letter: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history: Option<Vec<TaskEventWire>>,
    /// When a delayed task runs (ms since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_at_ms: Option<u64>,
    /// True while a delayed task waits for its time (it is not in the work queue yet).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub held: bool,
    /// The recurring schedule that submitted it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// The workflow it is a step of, and the step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
}

impl TaskView {
    /// Only a task's id and state.
    pub fn brief(id: u64, state: agora_core::TaskState) -> Self {
        Self { id: id.to_string(), state: state.as_str().to_owned(), ..Self::default() }
    }
}

/// One lifecycle event: published on `agora.tasks.events.<id>` (with `id`, and `result` on
/// `completed`) and kept in the task's history (without them).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TaskEventWire {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub event: String,
    pub at_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_in_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dead_letter: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Box<RawValue>>,
    /// `queued` of a delayed task: when it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_at_ms: Option<u64>,
}

impl TaskEventWire {
    pub fn from_event(event: &TaskEvent, at_ms: u64) -> Self {
        let mut wire = Self { event: event.name().to_owned(), at_ms, ..Self::default() };
        match event {
            TaskEvent::Started { attempt, worker } | TaskEvent::Completed { attempt, worker } => {
                wire.attempt = Some(*attempt);
                wire.worker = Some(worker.clone());
            }
            TaskEvent::Progress { percent } => wire.percent = Some(*percent),
            TaskEvent::Retrying { attempt, error, retry_in_ms } => {
                wire.attempt = Some(*attempt);
                wire.error = Some(error.clone());
                wire.retry_in_ms = Some(*retry_in_ms);
            }
            TaskEvent::Failed { attempt, error, dead_letter } => {
                wire.attempt = Some(*attempt);
                wire.error = Some(error.clone());
                wire.dead_letter = *dead_letter;
            }
            TaskEvent::Cancelled { .. } => {}
        }
        wire
    }
}

/// `agora.tasks.get` and `agora.tasks.cancel`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskIdRequest {
    #[schemars(pattern(pattern::TASK_ID))]
    pub id: String,
}

/// `agora.tasks.wait`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaitRequest {
    pub id: String,
    /// At most `tasks::WAIT_MS_MAX`.
    pub timeout_ms: u64,
}

/// `agora.tasks.list`: newest first, filtered.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["queued", "running", "completed", "failed", "cancelled"]))]
    pub state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = agora_core::tasks::ops::OP_NAMES))]
    pub op: Option<String>,
    /// Default 50.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1_000))]
    pub limit: Option<usize>,
    /// Only tasks older than this task id (the previous page's `next_before`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(pattern::TASK_ID))]
    pub before: Option<String>,
    /// Only dead letters (tasks that exhausted their attempts).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dead_letter: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ListReply {
    pub tasks: Vec<TaskView>,
    /// Pass as `before` for the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_before: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Tasks (worker-facing)
// ---------------------------------------------------------------------------------------------

/// A message on the work queue (`agora.tasks.queue.<priority>`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QueuedTask {
    pub id: String,
    pub op: String,
    pub args: Box<RawValue>,
}

/// `agora.tasks.claim`: a worker starts an attempt.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimRequest {
    pub id: String,
    pub worker: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClaimReply {
    /// `false`: the task is finished or cancelled; drop the message.
    pub run: bool,
    pub state: String,
    pub attempt: u32,
}

/// `agora.tasks.progress`: a worker's progress, also its heartbeat for long tasks.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProgressRequest {
    pub id: String,
    pub worker: String,
    pub percent: u8,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProgressReply {
    /// The task was cancelled or finished elsewhere: stop.
    pub stop: bool,
}

/// `agora.tasks.finish`: an attempt's outcome, exactly one of `result` and `error`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FinishRequest {
    pub id: String,
    pub worker: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Box<RawValue>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// With `error`: retry after this long; absent means this was the last attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_in_ms: Option<u64>,
    /// The attempt was not claimed first (a quick op, run at once): claim and finish it in
    /// one step. If the task was cancelled or finished meanwhile, the outcome is discarded.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub claim: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FinishReply {
    /// The task's state after the report.
    pub state: String,
    /// `false`: the task had already finished (or was cancelled); the report changed nothing.
    pub accepted: bool,
}

/// A worker's status (`agora.worker.<id>.status` and its `$SRV.STATS` data).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WorkerStatus {
    pub worker: String,
    pub concurrency: usize,
    pub done: u64,
    pub failed: u64,
    /// Attempts dropped because the task was cancelled or finished elsewhere.
    pub dropped: u64,
    /// Ids of the tasks running now.
    pub current: Vec<String>,
}
