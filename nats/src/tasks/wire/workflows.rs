//! Workflows.

use super::*;

/// A task that undoes a completed step (run when a later step fails with `compensate`).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CompensationRequest {
    #[schemars(extend("enum" = agora_core::tasks::ops::OP_NAMES))]
    pub op: String,
    #[serde(default = "empty_object")]
    #[schemars(with = "serde_json::Map<String, serde_json::Value>")]
    pub args: Box<RawValue>,
}

/// One step of a workflow: a task, the steps it comes after, and what its failure does.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StepRequest {
    #[schemars(pattern(pattern::SCHEDULE_NAME))]
    pub name: String,
    #[schemars(extend("enum" = agora_core::tasks::ops::OP_NAMES))]
    pub op: String,
    #[serde(default = "empty_object")]
    #[schemars(with = "serde_json::Map<String, serde_json::Value>")]
    pub args: Box<RawValue>,
    /// Steps that must be done (completed, or skipped) before this one starts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    pub after: Vec<String>,
    /// The argument that takes the results of the `after` steps: `numbers` or `strings` (each
    /// result appended, lists concatenated, after what `args` gives), or `text`, `n`, `ms`,
    /// `message` (the one `after` step's result).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["numbers", "strings", "text", "n", "ms", "message"]))]
    pub feed: Option<String>,
    /// `stop` (default), `skip` or `compensate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["stop", "skip", "compensate"]))]
    pub on_failure: Option<String>,
    /// The task that undoes this step once it completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compensate: Option<CompensationRequest>,
    /// `normal` (default: the workflow's) or `high`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["normal", "high"]))]
    pub priority: Option<String>,
}

/// `agora.tasks.workflows.submit`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkflowSubmitRequest {
    /// A label for people (not unique).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    pub name: Option<String>,
    /// Client id: submitting the same id again returns the same workflow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    pub id: Option<String>,
    /// Every step's priority unless it names its own: `normal` (default) or `high`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["normal", "high"]))]
    pub priority: Option<String>,
    #[schemars(length(min = 1, max = 100))]
    pub steps: Vec<StepRequest>,
}

/// `agora.tasks.workflows.{get,cancel}`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkflowIdRequest {
    #[schemars(pattern(pattern::TASK_ID))]
    pub id: String,
}

/// `agora.tasks.workflows.list`: newest first.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkflowListRequest {
    /// `running`, `completed`, `failed`, `cancelled`, `compensating` or `compensated`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// A manager names whose workflows (default: everyone's for a manager, else the caller's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Only workflows older than this id (the previous page's `next_before`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1_000))]
    pub limit: Option<usize>,
}

/// A step as `get` shows it: what it runs and where it is.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepView {
    pub name: String,
    pub op: String,
    pub args: Box<RawValue>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub after: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feed: Option<String>,
    pub on_failure: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compensate: Option<CompensationRequest>,
    /// `waiting`, `running`, `completed`, `failed`, `skipped`, `cancelled`, `compensating`,
    /// `compensated`, `compensation_failed`.
    pub state: String,
    /// Its task, once started (`agora.tasks.get` tells more).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Box<RawValue>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Its compensation task, once started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compensation_task: Option<String>,
}

/// One change in a workflow's history: a step's new state (`step`), or the workflow's.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WorkflowEventWire {
    pub at_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A workflow as the task service reports it (`list` leaves out `steps` and `history`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WorkflowView {
    pub id: String,
    pub owner: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// `running`, `completed`, `failed`, `cancelled`, `compensating`, `compensated`.
    pub state: String,
    pub submitted_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_ms: Option<u64>,
    /// How many steps it has, and how many are completed.
    pub step_count: usize,
    pub completed_steps: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<Vec<StepView>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history: Option<Vec<WorkflowEventWire>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkflowListReply {
    /// Newest first.
    pub workflows: Vec<WorkflowView>,
    /// Pass as `before` for the next page (absent on the last page).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_before: Option<String>,
}
