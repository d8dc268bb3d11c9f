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
mod tests {
    use super::*;

    fn node(id: &str) -> NodeId {
        NodeId::parse(id).expect("valid")
    }

    fn counter(item: &str, origin: &str, total: u64, batch: u64) -> Record {
        Record::Counter {
            item: ItemId::parse(item).expect("valid"),
            node: node(origin),
            counter: Counter { total, batch },
        }
    }

    #[test]
    fn records_coverage_and_identity_survive_reopening() {
        let dir = tempfile::tempdir().expect("dir");
        {
            let mut conn = open(dir.path()).expect("opens");
            assert_eq!(node_id(&conn).expect("reads"), None);
            set_node_id(&conn, "n1").expect("sets");
            let store = conn.transaction().expect("begin");
            put(&store, &counter("p", "n1", 1, 1)).expect("put");
            put(&store, &counter("p", "n1", 2, 2)).expect("overwrite");
            let register = Register { liked: true, ts_ms: 5, origin: node("n2"), batch: 7 };
            let user = UserId::parse("a@b.c").expect("valid");
            let item = ItemId::parse("p").expect("valid");
            put(&store, &Record::User { item, user, register }).expect("put");
            set_coverage(&store, &node("n1"), 2).expect("coverage");
            set_coverage(&store, &node("n1"), 1).expect("never lowered");
            store.commit().expect("commit");
        }
        let store = open(dir.path()).expect("reopens");
        assert_eq!(node_id(&store).expect("reads").as_deref(), Some("n1"));
        let stored = records(&store).expect("reads");
        assert_eq!(stored.len(), 2);
        assert!(stored.contains(&counter("p", "n1", 2, 2)));
        assert_eq!(coverage(&store).expect("reads"), vec![(node("n1"), 2)]);
        // A row that does not parse is an error, not skipped.
        store.execute("UPDATE records SET slot = 'not a node' WHERE kind = 0", []).unwrap();
        assert!(records(&store).is_err());
    }

    #[test]
    fn pages_hold_what_the_peer_lacks_and_never_split_a_batch() {
        let dir = tempfile::tempdir().expect("dir");
        let mut conn = open(dir.path()).expect("opens");
        let store = conn.transaction().expect("begin");
        for batch in 1..=4u64 {
            for item in 0..3 {
                put(&store, &counter(&format!("i{batch}-{item}"), "a", 1, batch)).expect("put");
            }
        }
        put(&store, &counter("x", "b", 1, 1)).expect("put");
        store.commit().expect("commit");
        let store = &conn;
        let origins = [node("a"), node("b")];
        let theirs = Vector::from([(node("a"), 1)]);
        let all = page(store, &origins, &theirs, None, 1 << 20).expect("page");
        assert_eq!(all.counters.len(), 9 + 1, "a's batches 2..=4 and all of b");
        assert!(all.next.is_none());
        // A tiny budget: one whole batch per page.
        let mut after: Option<SyncCursor> = None;
        let mut seen = Vec::new();
        for _ in 0..10 {
            let cursor = after.as_ref().map(|c| (node(&c.origin), c.batch));
            let page = page(store, &origins, &theirs, cursor.as_ref().map(|(o, b)| (o, *b)), 1)
                .expect("page");
            let batches: std::collections::BTreeSet<u64> =
                page.counters.iter().map(|c| c.batch).collect();
            assert_eq!(batches.len(), 1, "one batch per page: {batches:?}");
            seen.extend(page.counters.into_iter().map(|c| c.item));
            after = page.next;
            if after.is_none() {
                break;
            }
        }
        seen.sort();
        let mut expected: Vec<String> = all.counters.into_iter().map(|c| c.item).collect();
        expected.sort();
        assert_eq!(seen, expected);
    }
}
