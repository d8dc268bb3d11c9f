//! Workflows.

use super::*;

/// A stored workflow (`steps`: its steps as submitted, JSON).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkflowRow {
    pub id: u64,
    pub owner: String,
    pub name: Option<String>,
    pub client_id: Option<String>,
    pub priority: String,
    pub state: WorkflowState,
    pub steps: String,
    pub submitted_ms: u64,
    pub finished_ms: Option<u64>,
}

/// A step's runtime record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepRow {
    pub step: Step,
    /// Why it failed without a task (its input could not be built).
    pub error: Option<String>,
}

pub(super) const WORKFLOW_COLUMNS: &str =
    "id, owner, name, client_id, priority, state, steps, submitted_ms, finished_ms";

pub(super) fn conversion(column: usize, message: String) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(column, rusqlite::types::Type::Text, message.into())
}

pub(super) fn workflow_of(row: &rusqlite::Row<'_>) -> rusqlite::Result<WorkflowRow> {
    let state: String = row.get(5)?;
    Ok(WorkflowRow {
        id: row.get(0)?,
        owner: row.get(1)?,
        name: row.get(2)?,
        client_id: row.get(3)?,
        priority: row.get(4)?,
        state: WorkflowState::parse(&state)
            .ok_or_else(|| conversion(5, format!("{state:?} is not a workflow state")))?,
        steps: row.get(6)?,
        submitted_ms: row.get(7)?,
        finished_ms: row.get(8)?,
    })
}

pub fn max_workflow_id(conn: &Connection) -> Result<u64, StoreError> {
    let max: Option<u64> = conn.query_row("SELECT max(id) FROM workflows", [], |r| r.get(0))?;
    Ok(max.unwrap_or(0))
}

pub fn insert_workflow(conn: &Connection, row: &WorkflowRow) -> Result<(), StoreError> {
    conn.prepare_cached(&format!(
        "INSERT INTO workflows ({WORKFLOW_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
    ))?
    .execute(params![
        row.id,
        row.owner,
        row.name,
        row.client_id,
        row.priority,
        row.state.as_str(),
        row.steps,
        row.submitted_ms,
        row.finished_ms
    ])?;
    Ok(())
}

pub fn set_workflow_state(
    conn: &Connection,
    id: u64,
    state: WorkflowState,
    finished_ms: Option<u64>,
) -> Result<(), StoreError> {
    conn.prepare_cached("UPDATE workflows SET state = ?2, finished_ms = ?3 WHERE id = ?1")?
        .execute(params![id, state.as_str(), finished_ms])?;
    Ok(())
}

/// Writes step `step` of workflow `id`.
pub fn put_step(conn: &Connection, id: u64, step: usize, row: &StepRow) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT OR REPLACE INTO workflow_steps \
         (workflow, step, state, task, compensation, completed_seq, error) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        id,
        step,
        row.step.state.as_str(),
        row.step.task,
        row.step.compensation,
        row.step.completed_seq,
        row.error
    ])?;
    Ok(())
}

pub fn workflow(conn: &Connection, id: u64) -> Result<Option<WorkflowRow>, StoreError> {
    let row = conn
        .prepare_cached(&format!("SELECT {WORKFLOW_COLUMNS} FROM workflows WHERE id = ?1"))?
        .query_row([id], workflow_of)
        .optional()?;
    Ok(row)
}

pub fn workflow_by_client_id(
    conn: &Connection,
    owner: &str,
    client_id: &str,
) -> Result<Option<WorkflowRow>, StoreError> {
    let row = conn
        .prepare_cached(&format!(
            "SELECT {WORKFLOW_COLUMNS} FROM workflows WHERE owner = ?1 AND client_id = ?2"
        ))?
        .query_row([owner, client_id], workflow_of)
        .optional()?;
    Ok(row)
}

/// Workflow `id`'s steps, in order.
pub fn workflow_steps(conn: &Connection, id: u64) -> Result<Vec<StepRow>, StoreError> {
    let mut statement = conn.prepare_cached(
        "SELECT state, task, compensation, completed_seq, error FROM workflow_steps \
         WHERE workflow = ?1 ORDER BY step",
    )?;
    let rows = statement.query_map([id], |row| {
        let state: String = row.get(0)?;
        Ok(StepRow {
            step: Step {
                state: StepState::parse(&state)
                    .ok_or_else(|| conversion(0, format!("{state:?} is not a step state")))?,
                task: row.get(1)?,
                compensation: row.get(2)?,
                completed_seq: row.get(3)?,
            },
            error: row.get(4)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Every workflow still running or compensating, oldest first.
pub fn unfinished_workflows(conn: &Connection) -> Result<Vec<WorkflowRow>, StoreError> {
    let mut statement = conn.prepare(&format!(
        "SELECT {WORKFLOW_COLUMNS} FROM workflows WHERE state IN ('running', 'compensating') \
         ORDER BY id"
    ))?;
    let rows = statement.query_map([], workflow_of)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Newest first: (workflow, its steps, its completed steps), filtered, at most `limit`.
pub fn list_workflows(
    conn: &Connection,
    owner: Option<&str>,
    state: Option<WorkflowState>,
    before: Option<u64>,
    limit: usize,
) -> Result<Vec<(WorkflowRow, usize, usize)>, StoreError> {
    let mut statement = conn.prepare_cached(&format!(
        "SELECT {WORKFLOW_COLUMNS}, \
         (SELECT count(*) FROM workflow_steps WHERE workflow = workflows.id), \
         (SELECT count(*) FROM workflow_steps WHERE workflow = workflows.id \
          AND state = 'completed') \
         FROM workflows WHERE id < ?1 AND (?2 IS NULL OR owner = ?2) \
         AND (?3 IS NULL OR state = ?3) ORDER BY id DESC LIMIT ?4"
    ))?;
    let before = sqlite::saturating_i64(before.unwrap_or(u64::MAX));
    let rows = statement
        .query_map(params![before, owner, state.map(WorkflowState::as_str), limit], |row| {
            Ok((workflow_of(row)?, row.get(9)?, row.get(10)?))
        })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub fn append_workflow_event(
    conn: &Connection,
    id: u64,
    seq: u32,
    event: &str,
) -> Result<(), StoreError> {
    conn.prepare_cached("INSERT INTO workflow_events (workflow, seq, event) VALUES (?1, ?2, ?3)")?
        .execute(params![id, seq, event])?;
    Ok(())
}

/// Workflow `id`'s history, oldest first (stored event JSON).
pub fn workflow_history(conn: &Connection, id: u64) -> Result<Vec<String>, StoreError> {
    let mut statement =
        conn.prepare_cached("SELECT event FROM workflow_events WHERE workflow = ?1 ORDER BY seq")?;
    let rows = statement.query_map([id], |row| row.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// How many history events workflow `id` has.
pub fn workflow_event_count(conn: &Connection, id: u64) -> Result<u32, StoreError> {
    let count = conn
        .prepare_cached("SELECT count(*) FROM workflow_events WHERE workflow = ?1")?
        .query_row([id], |row| row.get(0))?;
    Ok(count)
}

/// Deletes up to `batch` finished workflows that finished before `finished_before_ms`, or
/// beyond the newest `keep`; returns how many went. Their tasks go with the task pruning.
pub fn prune_workflows(
    conn: &Connection,
    finished_before_ms: u64,
    keep: u64,
    batch: usize,
) -> Result<usize, StoreError> {
    let oldest_kept = max_workflow_id(conn)?.saturating_sub(keep);
    let ids: Vec<u64> = conn
        .prepare_cached(
            "SELECT id FROM workflows WHERE state NOT IN ('running', 'compensating') \
             AND (finished_ms < ?1 OR id <= ?2) ORDER BY id LIMIT ?3",
        )?
        .query_map(
            params![sqlite::saturating_i64(finished_before_ms), oldest_kept, batch],
            |row| row.get(0),
        )?
        .collect::<Result<_, _>>()?;
    for id in &ids {
        conn.prepare_cached("DELETE FROM workflow_events WHERE workflow = ?1")?.execute([id])?;
        conn.prepare_cached("DELETE FROM workflow_steps WHERE workflow = ?1")?.execute([id])?;
        conn.prepare_cached("DELETE FROM workflows WHERE id = ?1")?.execute([id])?;
    }
    Ok(ids.len())
}
