use super::*;

/// A recurring schedule as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleRow {
    pub owner: String,
    pub name: String,
    /// The `Nats-Schedule` header.
    pub spec: String,
    pub time_zone: Option<String>,
    pub op: String,
    pub args: String,
    pub priority: String,
    pub paused: bool,
    pub created_ms: u64,
    pub updated_ms: u64,
    pub runs: u64,
    pub last_run_ms: Option<u64>,
    pub last_task: Option<u64>,
    pub next_run_ms: Option<u64>,
}

impl ScheduleRow {
    pub fn view(&self) -> crate::tasks::wire::ScheduleView {
        crate::tasks::wire::ScheduleView {
            name: self.name.clone(),
            owner: self.owner.clone(),
            schedule: self.spec.clone(),
            time_zone: self.time_zone.clone(),
            op: self.op.clone(),
            args: RawValue::from_string(self.args.clone())
                .unwrap_or_else(|_| RawValue::from_string("{}".to_owned()).expect("JSON")),
            priority: self.priority.clone(),
            paused: self.paused,
            created_ms: self.created_ms,
            updated_ms: self.updated_ms,
            runs: self.runs,
            last_run_ms: self.last_run_ms,
            last_task: self.last_task.map(|id| id.to_string()),
            next_run_ms: self.next_run_ms,
        }
    }
}

pub(super) const SCHEDULE_COLUMNS: &str = "owner, name, spec, time_zone, op, args, priority, paused, \
    created_ms, updated_ms, runs, last_run_ms, last_task, next_run_ms";

pub(super) fn schedule_of(row: &rusqlite::Row<'_>) -> rusqlite::Result<ScheduleRow> {
    Ok(ScheduleRow {
        owner: row.get(0)?,
        name: row.get(1)?,
        spec: row.get(2)?,
        time_zone: row.get(3)?,
        op: row.get(4)?,
        args: row.get(5)?,
        priority: row.get(6)?,
        paused: row.get(7)?,
        created_ms: row.get(8)?,
        updated_ms: row.get(9)?,
        runs: row.get(10)?,
        last_run_ms: row.get(11)?,
        last_task: row.get(12)?,
        next_run_ms: row.get(13)?,
    })
}

/// Creates a schedule or replaces its definition (keeping its creation time and runs).
pub fn put_schedule(conn: &Connection, row: &ScheduleRow) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO schedules (owner, name, spec, time_zone, op, args, priority, paused, \
         created_ms, updated_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9) \
         ON CONFLICT (owner, name) DO UPDATE SET spec = ?3, time_zone = ?4, op = ?5, \
         args = ?6, priority = ?7, paused = ?8, updated_ms = ?9, next_run_ms = NULL",
    )?
    .execute(params![
        row.owner,
        row.name,
        row.spec,
        row.time_zone,
        row.op,
        row.args,
        row.priority,
        row.paused,
        row.updated_ms
    ])?;
    Ok(())
}

pub fn schedule(
    conn: &Connection,
    owner: &str,
    name: &str,
) -> Result<Option<ScheduleRow>, StoreError> {
    let row = conn
        .prepare_cached(&format!(
            "SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE owner = ?1 AND name = ?2"
        ))?
        .query_row([owner, name], schedule_of)
        .optional()?;
    Ok(row)
}

/// The schedules of `owner` (everyone's for `None`), by owner and name, at most `limit`.
pub fn schedules(
    conn: &Connection,
    owner: Option<&str>,
    limit: usize,
) -> Result<Vec<ScheduleRow>, StoreError> {
    let mut statement = conn.prepare_cached(&format!(
        "SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE ?1 IS NULL OR owner = ?1 \
         ORDER BY owner, name LIMIT ?2"
    ))?;
    let rows = statement.query_map(params![owner, limit], schedule_of)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// How many schedules `owner` has, and everyone.
pub fn schedule_counts(conn: &Connection, owner: &str) -> Result<(u64, u64), StoreError> {
    let counts = conn
        .prepare_cached("SELECT count(*) FILTER (WHERE owner = ?1), count(*) FROM schedules")?
        .query_row([owner], |row| Ok((row.get(0)?, row.get(1)?)))?;
    Ok(counts)
}

pub fn set_paused(
    conn: &Connection,
    owner: &str,
    name: &str,
    paused: bool,
    now_ms: u64,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "UPDATE schedules SET paused = ?3, updated_ms = ?4, next_run_ms = NULL \
         WHERE owner = ?1 AND name = ?2",
    )?
    .execute(params![owner, name, paused, now_ms])?;
    Ok(())
}

pub fn delete_schedule(conn: &Connection, owner: &str, name: &str) -> Result<(), StoreError> {
    conn.prepare_cached("DELETE FROM schedules WHERE owner = ?1 AND name = ?2")?
        .execute([owner, name])?;
    Ok(())
}

/// A run of a schedule submitted `task` at `at_ms`; the server runs it next at `next_ms`.
pub fn record_run(
    conn: &Connection,
    owner: &str,
    name: &str,
    at_ms: u64,
    task: u64,
    next_ms: Option<u64>,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "UPDATE schedules SET runs = runs + 1, last_run_ms = ?3, last_task = ?4, \
         next_run_ms = ?5 WHERE owner = ?1 AND name = ?2",
    )?
    .execute(params![owner, name, at_ms, task, next_ms])?;
    Ok(())
}
