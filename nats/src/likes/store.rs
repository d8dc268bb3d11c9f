//! A likes node's SQLite store: its replica's records, its coverage, and its identity.
//!
//! Functions over the connection of the node's owner thread (see `crate::owner`), run in the
//! transaction it opened (a group: one batch of the node's writes). WAL with
//! `synchronous=NORMAL`:
//! a committed batch survives `kill -9`, so a restarted node keeps its own contribution and
//! never reuses a batch number.
//!
//! Every record is one row keyed by `(item, kind, slot)`: kind 0 is the anonymous-like counter
//! of node `slot`, kind 1 the register of user `slot`. The `(origin, batch)` index serves
//! anti-entropy: "every record of origin O after batch b" is one range scan.

use std::path::Path;

use agora_core::likes::{Counter, ItemId, NodeId, Record, Register, UserId, Vector};
use rusqlite::{Connection, OptionalExtension, params};

use crate::likes::wire::{CounterRecord, SyncCursor, UserRecord};
use crate::sqlite::{self, StoreError};

/// File name of the likes database inside its data directory.
pub const DATABASE_FILE: &str = "likes.db";
/// SQLite page cache of the likes database.
const PAGE_CACHE_BYTES_MAX: i64 = 16 * 1024 * 1024;
/// Commits survive a process crash, not a power loss (a node that lost its last batches
/// on a power loss takes them back from its peers).
pub const SYNCHRONOUS: &str = "NORMAL";

const KIND_COUNTER: i64 = 0;
const KIND_USER: i64 = 1;

const MIGRATION_1: &str = "
    CREATE TABLE records (
        item TEXT NOT NULL,
        kind INTEGER NOT NULL,
        slot TEXT NOT NULL,
        origin TEXT NOT NULL,
        batch INTEGER NOT NULL,
        value INTEGER NOT NULL,
        ts INTEGER NOT NULL,
        PRIMARY KEY (item, kind, slot)
    ) WITHOUT ROWID;
    CREATE INDEX records_by_dot ON records (origin, batch);
    CREATE TABLE coverage (
        origin TEXT PRIMARY KEY,
        batch INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE meta (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    ) WITHOUT ROWID;
";

/// One page of records for a peer.
#[derive(Debug, Default)]
pub struct Page {
    pub counters: Vec<CounterRecord>,
    pub users: Vec<UserRecord>,
    /// Where the next page starts, if there is more.
    pub next: Option<SyncCursor>,
}

/// Opens (creating if needed) a likes node's database in `data_dir`.
pub fn open(data_dir: &Path) -> Result<Connection, StoreError> {
    sqlite::open_wal(data_dir, DATABASE_FILE, PAGE_CACHE_BYTES_MAX, &[MIGRATION_1])
}

/// A column that does not parse: the row is corrupt (an error, never skipped or defaulted).
fn corrupt(column: usize, error: impl std::fmt::Display) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        column,
        rusqlite::types::Type::Text,
        error.to_string().into(),
    )
}

/// The node id this store belongs to, if it was ever set.
pub fn node_id(conn: &Connection) -> Result<Option<String>, StoreError> {
    meta(conn, "node_id")
}

pub fn set_node_id(conn: &Connection, node: &str) -> Result<(), StoreError> {
    set_meta(conn, "node_id", node)
}

/// The seed of the node's signing key (an nkey), if it was ever made.
pub fn seed(conn: &Connection) -> Result<Option<String>, StoreError> {
    meta(conn, "seed")
}

pub fn set_seed(conn: &Connection, seed: &str) -> Result<(), StoreError> {
    set_meta(conn, "seed", seed)
}

fn meta(conn: &Connection, key: &str) -> Result<Option<String>, StoreError> {
    Ok(conn
        .query_row("SELECT value FROM meta WHERE key = ?1", [key], |row| row.get(0))
        .optional()?)
}

fn set_meta(conn: &Connection, key: &str, value: &str) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO meta (key, value) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        [key, value],
    )?;
    Ok(())
}

/// Every stored record (a row that does not parse is an error: the store is corrupt).
pub fn records(conn: &Connection) -> Result<Vec<Record>, StoreError> {
    let mut statement =
        conn.prepare("SELECT item, kind, slot, origin, batch, value, ts FROM records")?;
    let rows = statement.query_map([], |row| {
        let text = |column: usize| row.get::<_, String>(column);
        let item = ItemId::parse(&text(0)?).map_err(|e| corrupt(0, e))?;
        let (batch, value): (u64, u64) = (row.get(4)?, row.get(5)?);
        Ok(match row.get::<_, i64>(1)? {
            KIND_COUNTER => {
                let node = NodeId::parse(&text(2)?).map_err(|e| corrupt(2, e))?;
                Record::Counter { item, node, counter: Counter { total: value, batch } }
            }
            KIND_USER => {
                let user = UserId::parse(&text(2)?).map_err(|e| corrupt(2, e))?;
                let origin = NodeId::parse(&text(3)?).map_err(|e| corrupt(3, e))?;
                let register = Register { liked: value != 0, ts_ms: row.get(6)?, origin, batch };
                Record::User { item, user, register }
            }
            kind => return Err(corrupt(1, format!("record kind {kind}"))),
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The stored coverage.
pub fn coverage(conn: &Connection) -> Result<Vec<(NodeId, u64)>, StoreError> {
    let mut statement = conn.prepare("SELECT origin, batch FROM coverage")?;
    let rows = statement.query_map([], |row| {
        let origin: String = row.get(0)?;
        Ok((NodeId::parse(&origin).map_err(|e| corrupt(0, e))?, row.get(1)?))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Stores a record as the replica now holds it (the merge already decided it wins).
pub fn put(conn: &Connection, record: &Record) -> Result<(), StoreError> {
    let (item, kind, slot, origin, batch, value, ts) = match record {
        Record::Counter { item, node, counter } => {
            (item, KIND_COUNTER, node.as_str(), node, counter.batch, counter.total, 0)
        }
        Record::User { item, user, register } => (
            item,
            KIND_USER,
            user.as_str(),
            &register.origin,
            register.batch,
            u64::from(register.liked),
            register.ts_ms,
        ),
    };
    conn.prepare_cached(
        "INSERT INTO records (item, kind, slot, origin, batch, value, ts)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (item, kind, slot) DO UPDATE SET
                origin = excluded.origin, batch = excluded.batch,
                value = excluded.value, ts = excluded.ts",
    )?
    .execute(params![item.as_str(), kind, slot, origin.as_str(), batch, value, ts])?;
    Ok(())
}

pub fn set_coverage(conn: &Connection, origin: &NodeId, batch: u64) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO coverage (origin, batch) VALUES (?1, ?2)
             ON CONFLICT (origin) DO UPDATE SET batch = max(batch, excluded.batch)",
    )?
    .execute(params![origin.as_str(), batch])?;
    Ok(())
}

/// The records a peer with coverage `theirs` lacks, for the origins in `origins` (sorted),
/// starting after `after`: about `bytes_budget` bytes of them, never splitting a batch.
pub fn page(
    conn: &Connection,
    origins: &[NodeId],
    theirs: &Vector,
    after: Option<(&NodeId, u64)>,
    bytes_budget: usize,
) -> Result<Page, StoreError> {
    let mut page = Page::default();
    let mut bytes = 0usize;
    let mut statement = conn.prepare_cached(
        "SELECT item, kind, slot, batch, value, ts FROM records
         WHERE origin = ?1 AND batch > ?2 ORDER BY batch",
    )?;
    let start = after.map_or(0, |(origin, _)| origins.partition_point(|o| o < origin));
    for origin in &origins[start..] {
        let from = match after {
            Some((at, batch)) if at == origin => batch,
            _ => theirs.get(origin).copied().unwrap_or(0),
        };
        let mut rows = statement.query(params![origin.as_str(), from])?;
        let mut last_batch = None;
        while let Some(row) = rows.next()? {
            let batch = row.get(3)?;
            if bytes >= bytes_budget && last_batch != Some(batch) {
                page.next = Some(SyncCursor {
                    origin: origin.to_string(),
                    batch: last_batch.unwrap_or(from),
                });
                return Ok(page);
            }
            last_batch = Some(batch);
            let item: String = row.get(0)?;
            let slot: String = row.get(2)?;
            let value = row.get(4)?;
            bytes += item.len() + slot.len() + origin.as_str().len() + 80;
            if row.get::<_, i64>(1)? == KIND_COUNTER {
                page.counters.push(CounterRecord { item, node: slot, total: value, batch });
            } else {
                page.users.push(UserRecord {
                    item,
                    user: slot,
                    liked: value != 0,
                    ts: row.get(5)?,
                    origin: origin.to_string(),
                    batch,
                });
            }
        }
    }
    Ok(page)
}
#[cfg(test)]
mod tests;
