//! The task service's SQLite store: every task, its lifecycle columns and its history.
//!
//! Functions over the connection of the service's owner thread (see `crate::owner`); they run
//! inside the transaction it opened. The database runs in WAL mode with `synchronous=NORMAL`: a
//! committed transaction
//! survives a crash of the process (`kill -9`), and the last transactions before a power loss
//! may be lost. That matches the work queue it records (JetStream's file store also syncs on
//! an interval, not per message); the task service re-enqueues from this store at startup.
//!
//! Task ids are the table's integer keys, handed out in submission order, so "newest first"
//! is `ORDER BY id DESC` and a page boundary is an id.

use std::path::Path;

use agora_core::tasks::workflow::{Step, StepState, WorkflowState};
use agora_core::{Lifecycle, TaskState};
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::value::RawValue;

use super::wire::TaskView;

use crate::sqlite::{self, StoreError};
mod workflows;
pub use workflows::*;
mod schedules;
pub use schedules::*;

/// File name of the task database inside its data directory.
pub const DATABASE_FILE: &str = "tasks.db";
/// SQLite page cache of the task database.
const PAGE_CACHE_BYTES_MAX: i64 = 4 * 1024 * 1024;
/// Commits that are not asked to be durable survive a process crash, not a power loss.
pub const SYNCHRONOUS: &str = "NORMAL";

const MIGRATION_1: &str = "
    CREATE TABLE tasks (
        id INTEGER PRIMARY KEY,
        client_id TEXT UNIQUE,
        op TEXT NOT NULL,
        args TEXT NOT NULL,
        priority TEXT NOT NULL,
        state TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        worker TEXT,
        progress INTEGER NOT NULL DEFAULT 0,
        submitted_ms INTEGER NOT NULL,
        started_ms INTEGER,
        finished_ms INTEGER,
        result TEXT,
        error TEXT,
        dead_letter INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX tasks_by_state ON tasks (state, id);
    CREATE INDEX tasks_by_op ON tasks (op, id);
    CREATE INDEX tasks_dead_letters ON tasks (id) WHERE dead_letter = 1;
    CREATE TABLE task_events (
        task_id INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        event TEXT NOT NULL,
        PRIMARY KEY (task_id, seq)
    ) WITHOUT ROWID;
";

/// Every task has an owner (who submitted it; `_agora` for the tasks of before), and a client
/// id names one task per owner, not one for everyone.
const MIGRATION_2: &str = "
    CREATE TABLE tasks_owned (
        id INTEGER PRIMARY KEY,
        owner TEXT NOT NULL,
        client_id TEXT,
        op TEXT NOT NULL,
        args TEXT NOT NULL,
        priority TEXT NOT NULL,
        state TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        worker TEXT,
        progress INTEGER NOT NULL DEFAULT 0,
        submitted_ms INTEGER NOT NULL,
        started_ms INTEGER,
        finished_ms INTEGER,
        result TEXT,
        error TEXT,
        dead_letter INTEGER NOT NULL DEFAULT 0,
        UNIQUE (owner, client_id)
    );
    INSERT INTO tasks_owned (id, owner, client_id, op, args, priority, state, attempts, worker,
                             progress, submitted_ms, started_ms, finished_ms, result, error,
                             dead_letter)
        SELECT id, '_agora', client_id, op, args, priority, state, attempts, worker, progress,
               submitted_ms, started_ms, finished_ms, result, error, dead_letter FROM tasks;
    DROP TABLE tasks;
    ALTER TABLE tasks_owned RENAME TO tasks;
    CREATE INDEX tasks_by_state ON tasks (state, id);
    CREATE INDEX tasks_by_op ON tasks (op, id);
    CREATE INDEX tasks_dead_letters ON tasks (id) WHERE dead_letter = 1;
    CREATE INDEX tasks_by_owner ON tasks (owner, id);
";

/// Delayed tasks (a time to run, held until then), the schedule that submitted a task, and
/// the recurring schedules.
const MIGRATION_3: &str = "
    ALTER TABLE tasks ADD COLUMN run_at_ms INTEGER;
    ALTER TABLE tasks ADD COLUMN held INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE tasks ADD COLUMN schedule TEXT;
    CREATE TABLE schedules (
        owner TEXT NOT NULL,
        name TEXT NOT NULL,
        spec TEXT NOT NULL,
        time_zone TEXT,
        op TEXT NOT NULL,
        args TEXT NOT NULL,
        priority TEXT NOT NULL,
        paused INTEGER NOT NULL DEFAULT 0,
        created_ms INTEGER NOT NULL,
        updated_ms INTEGER NOT NULL,
        runs INTEGER NOT NULL DEFAULT 0,
        last_run_ms INTEGER,
        last_task INTEGER,
        next_run_ms INTEGER,
        PRIMARY KEY (owner, name)
    ) WITHOUT ROWID;
";

/// A finished task's own retention (`ttl_ms` at submit), sooner than `--retain-ms`.
const MIGRATION_4: &str = "
    ALTER TABLE tasks ADD COLUMN ttl_ms INTEGER;
    CREATE INDEX tasks_expiring ON tasks (finished_ms) WHERE ttl_ms IS NOT NULL;
";

/// Workflows: their steps as submitted (JSON), each step's runtime record, their history, and
/// the workflow and step a task belongs to.
const MIGRATION_5: &str = "
    ALTER TABLE tasks ADD COLUMN workflow INTEGER;
    ALTER TABLE tasks ADD COLUMN step TEXT;
    CREATE INDEX tasks_by_workflow ON tasks (workflow) WHERE workflow IS NOT NULL;
    CREATE TABLE workflows (
        id INTEGER PRIMARY KEY,
        owner TEXT NOT NULL,
        name TEXT,
        client_id TEXT,
        priority TEXT NOT NULL,
        state TEXT NOT NULL,
        steps TEXT NOT NULL,
        submitted_ms INTEGER NOT NULL,
        finished_ms INTEGER,
        UNIQUE (owner, client_id)
    );
    CREATE INDEX workflows_by_owner ON workflows (owner, id);
    CREATE INDEX workflows_by_state ON workflows (state, id);
    CREATE TABLE workflow_steps (
        workflow INTEGER NOT NULL,
        step INTEGER NOT NULL,
        state TEXT NOT NULL,
        task INTEGER,
        compensation INTEGER,
        completed_seq INTEGER,
        error TEXT,
        PRIMARY KEY (workflow, step)
    ) WITHOUT ROWID;
    CREATE TABLE workflow_events (
        workflow INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        event TEXT NOT NULL,
        PRIMARY KEY (workflow, seq)
    ) WITHOUT ROWID;
";

/// A new task's row.
#[derive(Debug, Clone)]
pub struct NewTask<'a> {
    pub id: u64,
    pub owner: &'a str,
    pub client_id: Option<&'a str>,
    pub op: &'a str,
    pub args: &'a str,
    pub priority: &'a str,
    pub submitted_ms: u64,
    /// A delayed task's time; `held` until then.
    pub run_at_ms: Option<u64>,
    pub held: bool,
    /// The recurring schedule that submitted it.
    pub schedule: Option<&'a str>,
    /// Kept this long once finished (else `--retain-ms`).
    pub ttl_ms: Option<u64>,
    /// The workflow and step it runs for.
    pub workflow: Option<(u64, &'a str)>,
}

/// A stored task (`args`, `result` as stored JSON text).
#[derive(Debug, Clone)]
pub struct TaskRow {
    pub id: u64,
    pub owner: String,
    pub client_id: Option<String>,
    pub op: String,
    pub args: Option<String>,
    pub priority: String,
    pub lifecycle: Lifecycle,
    pub submitted_ms: u64,
    pub result: Option<String>,
    pub run_at_ms: Option<u64>,
    pub held: bool,
    pub schedule: Option<String>,
    pub workflow: Option<u64>,
    pub step: Option<String>,
}

impl TaskRow {
    /// The task as every reply shows it (without history).
    pub fn view(&self) -> TaskView {
        let raw = |text: &str| RawValue::from_string(text.to_owned()).ok();
        let life = &self.lifecycle;
        TaskView {
            id: self.id.to_string(),
            owner: Some(self.owner.clone()),
            state: life.state.as_str().to_owned(),
            op: Some(self.op.clone()),
            args: self.args.as_deref().and_then(raw),
            client_id: self.client_id.clone(),
            priority: Some(self.priority.clone()),
            attempts: Some(life.attempts),
            worker: life.worker.clone(),
            progress: Some(life.progress),
            submitted_ms: Some(self.submitted_ms),
            started_ms: life.started_ms,
            finished_ms: life.finished_ms,
            result: self.result.as_deref().and_then(raw),
            error: life.error.clone(),
            dead_letter: life.dead_letter,
            history: None,
            run_at_ms: self.run_at_ms,
            held: self.held,
            schedule: self.schedule.clone(),
            workflow: self.workflow.map(|id| id.to_string()),
            step: self.step.clone(),
        }
    }
}

/// What `list` filters on.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    /// Only this owner's tasks.
    pub owner: Option<String>,
    pub state: Option<TaskState>,
    pub op: Option<String>,
    pub before: Option<u64>,
    pub dead_letter: bool,
    pub limit: usize,
}

const ROW_COLUMNS: &str = "id, client_id, op, priority, state, attempts, worker, progress, \
    submitted_ms, started_ms, finished_ms, error, dead_letter, owner, run_at_ms, held, schedule, \
    workflow, step";
/// Columns after [`ROW_COLUMNS`] start here.
const NEXT_COLUMN: usize = 19;

fn row_of(row: &rusqlite::Row<'_>) -> rusqlite::Result<TaskRow> {
    let state: String = row.get(4)?;
    let state = TaskState::parse(&state).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            4,
            rusqlite::types::Type::Text,
            format!("{state:?} is not a task state").into(),
        )
    })?;
    Ok(TaskRow {
        id: row.get(0)?,
        owner: row.get(13)?,
        client_id: row.get(1)?,
        op: row.get(2)?,
        args: None,
        priority: row.get(3)?,
        lifecycle: Lifecycle {
            state,
            attempts: row.get(5)?,
            worker: row.get(6)?,
            progress: row.get(7)?,
            started_ms: row.get(9)?,
            finished_ms: row.get(10)?,
            error: row.get(11)?,
            dead_letter: row.get(12)?,
        },
        submitted_ms: row.get(8)?,
        result: None,
        run_at_ms: row.get(14)?,
        held: row.get(15)?,
        schedule: row.get(16)?,
        workflow: row.get(17)?,
        step: row.get(18)?,
    })
}

/// Opens (creating if needed) the task database in `data_dir`.
pub fn open(data_dir: &Path) -> Result<Connection, StoreError> {
    sqlite::open_wal(
        data_dir,
        DATABASE_FILE,
        PAGE_CACHE_BYTES_MAX,
        &[MIGRATION_1, MIGRATION_2, MIGRATION_3, MIGRATION_4, MIGRATION_5],
    )
}

pub fn max_id(conn: &Connection) -> Result<u64, StoreError> {
    let max: Option<u64> = conn.query_row("SELECT max(id) FROM tasks", [], |r| r.get(0))?;
    Ok(max.unwrap_or(0))
}

pub fn insert(conn: &Connection, task: &NewTask<'_>) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO tasks (id, client_id, op, args, priority, state, submitted_ms, owner, \
         run_at_ms, held, schedule, ttl_ms, workflow, step) \
         VALUES (?1, ?2, ?3, ?4, ?5, 'queued', ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
    )?
    .execute(params![
        task.id,
        task.client_id,
        task.op,
        task.args,
        task.priority,
        task.submitted_ms,
        task.owner,
        task.run_at_ms,
        task.held,
        task.schedule,
        task.ttl_ms,
        task.workflow.map(|(id, _)| id),
        task.workflow.map(|(_, step)| step)
    ])?;
    Ok(())
}

/// A delayed task's time came: it goes to the work queue.
pub fn release(conn: &Connection, id: u64) -> Result<(), StoreError> {
    conn.prepare_cached("UPDATE tasks SET held = 0 WHERE id = ?1")?.execute([id])?;
    Ok(())
}

/// Writes a task's lifecycle columns, and its result when it has one.
pub fn update(
    conn: &Connection,
    id: u64,
    life: &Lifecycle,
    result: Option<&str>,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "UPDATE tasks SET state = ?2, attempts = ?3, worker = ?4, progress = ?5, \
         started_ms = ?6, finished_ms = ?7, error = ?8, dead_letter = ?9, \
         result = coalesce(?10, result) WHERE id = ?1",
    )?
    .execute(params![
        id,
        life.state.as_str(),
        life.attempts,
        life.worker,
        life.progress,
        life.started_ms,
        life.finished_ms,
        life.error,
        life.dead_letter,
        result
    ])?;
    Ok(())
}

pub fn append_event(conn: &Connection, id: u64, seq: u32, event: &str) -> Result<(), StoreError> {
    conn.prepare_cached("INSERT INTO task_events (task_id, seq, event) VALUES (?1, ?2, ?3)")?
        .execute(params![id, seq, event])?;
    Ok(())
}

/// The task of `owner` a client id names, with its args (to compare a resubmission).
pub fn by_client_id(
    conn: &Connection,
    owner: &str,
    client_id: &str,
) -> Result<Option<TaskRow>, StoreError> {
    let id: Option<u64> = conn
        .prepare_cached("SELECT id FROM tasks WHERE owner = ?1 AND client_id = ?2")?
        .query_row([owner, client_id], |r| r.get(0))
        .optional()?;
    match id {
        Some(id) => get(conn, id, false),
        None => Ok(None),
    }
}

/// A task with its args and result (`full`), or without them.
pub fn get(conn: &Connection, id: u64, full: bool) -> Result<Option<TaskRow>, StoreError> {
    let mut statement = conn
        .prepare_cached(&format!("SELECT {ROW_COLUMNS}, args, result FROM tasks WHERE id = ?1"))?;
    let task = statement
        .query_row([id], |row| {
            let mut task = row_of(row)?;
            task.args = Some(row.get(NEXT_COLUMN)?);
            if full {
                task.result = row.get(NEXT_COLUMN + 1)?;
            }
            Ok(task)
        })
        .optional()?;
    Ok(task)
}

/// The task's history, oldest first (stored event JSON).
pub fn history(conn: &Connection, id: u64) -> Result<Vec<String>, StoreError> {
    let mut statement =
        conn.prepare_cached("SELECT event FROM task_events WHERE task_id = ?1 ORDER BY seq")?;
    let rows = statement.query_map([id], |row| row.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Newest first, filtered, at most `filter.limit`.
pub fn list(conn: &Connection, filter: &ListFilter) -> Result<Vec<TaskRow>, StoreError> {
    let mut sql = format!("SELECT {ROW_COLUMNS} FROM tasks WHERE id < ?1");
    if filter.state.is_some() {
        sql.push_str(" AND state = ?2");
    }
    if filter.op.is_some() {
        sql.push_str(" AND op = ?3");
    }
    if filter.dead_letter {
        sql.push_str(" AND dead_letter = 1");
    }
    if filter.owner.is_some() {
        sql.push_str(" AND owner = ?5");
    }
    sql.push_str(" ORDER BY id DESC LIMIT ?4");
    let mut statement = conn.prepare_cached(&sql)?;
    let before = sqlite::saturating_i64(filter.before.unwrap_or(u64::MAX));
    let state = filter.state.map(TaskState::as_str);
    let limit = filter.limit;
    let mut bound: Vec<(usize, &dyn rusqlite::ToSql)> = vec![(1, &before), (4, &limit)];
    if let Some(state) = &state {
        bound.push((2, state));
    }
    if let Some(op) = &filter.op {
        bound.push((3, op));
    }
    if let Some(owner) = &filter.owner {
        bound.push((5, owner));
    }
    for (index, value) in bound {
        statement.raw_bind_parameter(index, value)?;
    }
    let mut rows = statement.raw_query();
    let mut tasks = Vec::new();
    while let Some(row) = rows.next()? {
        tasks.push(row_of(row)?);
    }
    Ok(tasks)
}

/// Every task not yet finished, oldest first, with the number of history events it has.
pub fn active(conn: &Connection) -> Result<Vec<(TaskRow, u32)>, StoreError> {
    let mut statement = conn.prepare(&format!(
        "SELECT {ROW_COLUMNS}, (SELECT count(*) FROM task_events WHERE task_id = tasks.id) \
         FROM tasks WHERE state IN ('queued', 'running') ORDER BY id"
    ))?;
    let rows = statement.query_map([], |row| Ok((row_of(row)?, row.get(NEXT_COLUMN)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Deletes up to `batch` finished tasks that finished before `finished_before_ms`, or beyond
/// the newest `keep` tasks; returns how many went.
pub fn prune(
    conn: &Connection,
    now_ms: u64,
    finished_before_ms: u64,
    keep: u64,
    batch: usize,
) -> Result<usize, StoreError> {
    let oldest_kept = max_id(conn)?.saturating_sub(keep);
    let ids: Vec<u64> = {
        let mut statement = conn.prepare_cached(
            "SELECT id FROM tasks WHERE state IN ('completed', 'failed', 'cancelled') \
             AND (finished_ms < ?1 OR id <= ?2) AND NOT EXISTS (SELECT 1 FROM workflows \
             WHERE workflows.id = tasks.workflow AND state IN ('running', 'compensating')) \
             ORDER BY id LIMIT ?3",
        )?;
        let rows = statement.query_map(
            params![sqlite::saturating_i64(finished_before_ms), oldest_kept, batch],
            |row| row.get(0),
        )?;
        let mut ids: Vec<u64> = rows.collect::<Result<_, _>>()?;
        // Tasks whose own time to live ran out.
        let mut expiring = conn.prepare_cached(
            "SELECT id FROM tasks WHERE ttl_ms IS NOT NULL AND finished_ms IS NOT NULL \
             AND finished_ms + ttl_ms < ?1 ORDER BY finished_ms LIMIT ?2",
        )?;
        let expired = expiring
            .query_map(params![sqlite::saturating_i64(now_ms), batch], |row| {
                row.get::<_, u64>(0)
            })?;
        for id in expired {
            let id = id?;
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        ids
    };
    for id in &ids {
        conn.prepare_cached("DELETE FROM task_events WHERE task_id = ?1")?.execute([id])?;
        conn.prepare_cached("DELETE FROM tasks WHERE id = ?1")?.execute([id])?;
    }
    Ok(ids.len())
}

#[cfg(test)]
mod tests;
