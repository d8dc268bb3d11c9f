//! Recurring schedules.

use super::*;

/// `agora.tasks.schedules.put`: creates the caller's schedule `name`, or replaces it.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SchedulePutRequest {
    #[schemars(pattern(pattern::SCHEDULE_NAME))]
    pub name: String,
    /// `@every <duration>` (1s..366d), `@hourly`, `@daily`, `@weekly`, `@monthly`, `@yearly`,
    /// or cron: six fields seconds first (`0 0 3 * * *`) or five (`0 3 * * *`).
    #[schemars(length(min = 1, max = 128))]
    pub schedule: String,
    /// The IANA time zone of a cron schedule (default UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub time_zone: Option<String>,
    #[schemars(extend("enum" = agora_core::tasks::ops::OP_NAMES))]
    pub op: String,
    #[serde(default = "empty_object")]
    #[schemars(with = "serde_json::Map<String, serde_json::Value>")]
    pub args: Box<RawValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["normal", "high"]))]
    pub priority: Option<String>,
    /// Create it paused (it runs once resumed).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,
}

/// `agora.tasks.schedules.{pause,resume,delete}`: one of the caller's schedules (a manager
/// names another `owner`).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleNameRequest {
    #[schemars(pattern(pattern::SCHEDULE_NAME))]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

/// `agora.tasks.schedules.list`: the caller's schedules (a manager's: everyone's, or `owner`'s).
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleListRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

/// A recurring schedule as every reply shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScheduleView {
    pub name: String,
    pub owner: String,
    /// As the NATS server runs it (`@every 600s`, `0 0 3 * * *`).
    pub schedule: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    pub op: String,
    pub args: Box<RawValue>,
    pub priority: String,
    pub paused: bool,
    pub created_ms: u64,
    pub updated_ms: u64,
    /// Tasks it submitted so far.
    pub runs: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run_ms: Option<u64>,
    /// The task of its latest run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_task: Option<String>,
    /// When the server runs it next, as of its latest run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_run_ms: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScheduleListReply {
    /// By owner, then name.
    pub schedules: Vec<ScheduleView>,
}
