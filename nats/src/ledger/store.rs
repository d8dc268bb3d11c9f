//! The ledger's SQLite store: the only module that touches SQLite.
//!
//! One owner task holds the one [`Store`] (see `ledger`); nothing else opens the database.
//!
//! Operation (idempotency) records are an append-only log: a rowid table written in commit
//! order, so a batch of records fills a few consecutive pages, with an in-memory hash index
//! (id hash -> row) rebuilt from the table at startup. A SQLite index keyed by client ids would
//! put every record of a batch on its own page: measured, it cost a third of the transfer
//! throughput. The log is bounded by age and by count (see [`Store::prune_operations`]), so the
//! index is bounded too (about 24 bytes a record).
//! Locks are stored as *lock sets*, one row per lock request (a bank batch leases hundreds of
//! accounts at once), so leasing and releasing a batch costs one statement each, not one per
//! account.
//! The database runs in WAL mode. Transactions that write balances or operation records run
//! with `synchronous=FULL`, so a reply sent after `commit` means the data is on disk; lock-only
//! transactions run with `synchronous=NORMAL`, which survives a process crash (`kill -9`) but
//! may lose the last lock changes on power loss. That is safe: a lost lock is the same as an
//! expired one, and fencing tokens still increase because every start bumps a durable boot
//! epoch that forms the tokens' high bits.

use std::collections::HashMap;
use std::collections::hash_map::{DefaultHasher, Entry};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use agora_core::{AccountId, Balance};
use rusqlite::{Connection, OptionalExtension, params};

/// File name of the ledger database inside its data directory.
pub const DATABASE_FILE: &str = "ledger.db";
/// Fencing tokens are `boot_epoch << TOKEN_EPOCH_SHIFT | counter`.
pub const TOKEN_EPOCH_SHIFT: u32 = 40;

/// SQLite page cache of the ledger database.
pub const PAGE_CACHE_BYTES_MAX: i64 = 64 * 1024 * 1024;
/// Bytes of the database file SQLite may memory-map for reads.
pub const MMAP_BYTES_MAX: i64 = 256 * 1024 * 1024;

const SCHEMA_VERSION: i64 = 1;
const MIGRATION_1: &str = "
    CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
    CREATE TABLE accounts (
        account TEXT PRIMARY KEY,
        balance INTEGER NOT NULL CHECK (balance >= 0)
    ) WITHOUT ROWID;
    CREATE TABLE lock_sets (
        set_id INTEGER PRIMARY KEY,
        owner TEXT NOT NULL,
        expires_at_ms INTEGER NOT NULL,
        grants TEXT NOT NULL
    );
    CREATE TABLE operations (
        seq INTEGER PRIMARY KEY,
        id TEXT NOT NULL,
        record TEXT NOT NULL,
        at_ms INTEGER NOT NULL
    );
";

/// Storage failures. The ledger answers `unavailable` and reloads its state from disk.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("cannot create data directory {path}: {source}")]
    DataDir { path: PathBuf, source: std::io::Error },
    #[error("corrupt row: {0}")]
    Corrupt(String),
}

/// One stored lock set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockSetRow {
    pub set_id: i64,
    pub owner: String,
    pub expires_at_ms: u64,
    pub grants: Vec<(AccountId, u64)>,
}

/// `account=token,account=token`: account names never contain `=` or `,`.
fn encode_grants(grants: &[(AccountId, u64)]) -> String {
    let parts: Vec<String> = grants.iter().map(|(a, token)| format!("{a}={token}")).collect();
    parts.join(",")
}

fn decode_grants(text: &str) -> Option<Vec<(AccountId, u64)>> {
    text.split(',')
        .filter(|part| !part.is_empty())
        .map(|part| {
            let (account, token) = part.split_once('=')?;
            Some((AccountId::parse(account).ok()?, token.parse().ok()?))
        })
        .collect()
}

/// The ledger database.
///
/// The connection sits behind a mutex only so that a durable commit (fsync, and any WAL
/// checkpoint it triggers) can run on the blocking thread pool while the owner task awaits it;
/// the owner task is the only user, so the mutex is never contended.
#[derive(Debug)]
pub struct Store {
    conn: Arc<Mutex<Connection>>,
    boot_epoch: u64,
    operations: OperationIndex,
    /// The connection's current `synchronous` level (FULL: true), to switch only on change.
    durable: Option<bool>,
}

/// The in-memory index of the operation log: id hash -> row.
#[derive(Debug, Default)]
struct OperationIndex {
    by_hash: HashMap<u64, i64>,
    /// Ids whose hash equals another stored id's (astronomically rare, but handled).
    collided: HashMap<String, i64>,
}

impl OperationIndex {
    fn load(conn: &Connection) -> Result<Self, StoreError> {
        let mut index = Self::default();
        let mut statement = conn.prepare("SELECT seq, id FROM operations ORDER BY seq")?;
        let mut rows = statement.query([])?;
        while let Some(row) = rows.next()? {
            index.insert(&row.get::<_, String>(1)?, row.get(0)?);
        }
        Ok(index)
    }

    fn insert(&mut self, id: &str, seq: i64) {
        match self.by_hash.entry(id_hash(id)) {
            Entry::Vacant(slot) => {
                slot.insert(seq);
            }
            Entry::Occupied(_) => {
                self.collided.insert(id.to_owned(), seq);
            }
        }
    }

    fn remove(&mut self, id: &str, seq: i64) {
        if self.collided.get(id) == Some(&seq) {
            self.collided.remove(id);
        } else if let Entry::Occupied(slot) = self.by_hash.entry(id_hash(id))
            && *slot.get() == seq
        {
            slot.remove();
        }
    }
}

fn id_hash(id: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    id.hash(&mut hasher);
    hasher.finish()
}

impl Store {
    /// Opens (creating if needed) the database in `data_dir`, migrates it and records a new
    /// boot epoch durably.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(data_dir)
            .map_err(|source| StoreError::DataDir { path: data_dir.to_owned(), source })?;
        let conn = Connection::open(data_dir.join(DATABASE_FILE))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        // Negative cache_size is in KiB.
        conn.pragma_update(None, "cache_size", -(PAGE_CACHE_BYTES_MAX / 1024))?;
        conn.pragma_update(None, "mmap_size", MMAP_BYTES_MAX)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
        if version < 1 {
            conn.execute_batch(&format!(
                "BEGIN; {MIGRATION_1} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
            ))?;
        }
        let previous: Option<i64> = conn
            .query_row("SELECT value FROM meta WHERE key = 'boot_epoch'", [], |row| row.get(0))
            .optional()?;
        let boot_epoch = previous.unwrap_or(0) + 1;
        conn.execute(
            "INSERT INTO meta (key, value) VALUES ('boot_epoch', ?1)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            params![boot_epoch],
        )?;
        let boot_epoch = u64::try_from(boot_epoch)
            .map_err(|_| StoreError::Corrupt(format!("boot epoch {boot_epoch}")))?;
        let operations = OperationIndex::load(&conn)?;
        Ok(Self { conn: Arc::new(Mutex::new(conn)), boot_epoch, operations, durable: None })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the connection cannot leave SQLite inconsistent (it has its
        // own transaction state), so a poisoned lock is still usable.
        self.conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Commits the open transaction on the blocking thread pool (a durable commit waits for
    /// fsync, and sometimes for a WAL checkpoint).
    pub async fn commit_durable(&self) -> Result<(), StoreError> {
        let conn = self.conn.clone();
        let commit = tokio::task::spawn_blocking(move || {
            let conn = conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            conn.execute_batch("COMMIT")
        });
        match commit.await {
            Ok(result) => Ok(result?),
            Err(join_error) => std::panic::resume_unwind(join_error.into_panic()),
        }
    }

    /// The first fencing token of this boot: above every token of every earlier boot.
    pub fn first_token(&self) -> u64 {
        self.boot_epoch << TOKEN_EPOCH_SHIFT
    }

    /// Every lock set on disk, oldest first (the ledger restores them at startup).
    pub fn load_lock_sets(&self) -> Result<Vec<LockSetRow>, StoreError> {
        let conn = self.conn();
        let mut statement = conn.prepare(
            "SELECT set_id, owner, expires_at_ms, grants FROM lock_sets ORDER BY set_id",
        )?;
        let rows = statement.query_map([], |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, i64>(2)?,
                row.get::<_, String>(3)?,
            ))
        })?;
        let mut sets = Vec::new();
        for row in rows {
            let (set_id, owner, expires_at_ms, grants) = row?;
            let expires_at_ms = u64::try_from(expires_at_ms)
                .map_err(|_| StoreError::Corrupt(format!("lock set {set_id} expiry")))?;
            let grants = decode_grants(&grants)
                .ok_or_else(|| StoreError::Corrupt(format!("lock set {set_id} grants")))?;
            sets.push(LockSetRow { set_id, owner, expires_at_ms, grants });
        }
        Ok(sets)
    }

    /// Starts a write transaction; `durable` transactions fsync on commit.
    pub fn begin(&mut self, durable: bool) -> Result<(), StoreError> {
        if self.durable != Some(durable) {
            let level = if durable { "FULL" } else { "NORMAL" };
            self.conn().pragma_update(None, "synchronous", level)?;
            self.durable = Some(durable);
        }
        self.conn().execute_batch("BEGIN IMMEDIATE")?;
        Ok(())
    }

    pub fn commit(&mut self) -> Result<(), StoreError> {
        self.conn().execute_batch("COMMIT")?;
        Ok(())
    }

    /// Rolls back an open transaction, if any.
    /// Rolls back an open transaction, if any, and rebuilds the operation index from disk
    /// (it may hold ids of the rolled-back records).
    pub fn rollback(&mut self) {
        if !self.conn().is_autocommit()
            && let Err(error) = self.conn().execute_batch("ROLLBACK")
        {
            tracing::error!(%error, "rollback failed");
        }
        let index = OperationIndex::load(&self.conn());
        match index {
            Ok(index) => self.operations = index,
            Err(error) => tracing::error!(%error, "cannot rebuild the operation index"),
        }
    }

    /// The balance of an account; an account never written has balance 0.
    pub fn balance(&self, account: &AccountId) -> Result<Balance, StoreError> {
        let conn = self.conn();
        let mut statement =
            conn.prepare_cached("SELECT balance FROM accounts WHERE account = ?1")?;
        let balance = statement
            .query_row(params![account.as_str()], |row| row.get::<_, i64>(0))
            .optional()?;
        Ok(balance.unwrap_or(0))
    }

    pub fn set_balance(&self, account: &AccountId, balance: Balance) -> Result<(), StoreError> {
        let conn = self.conn();
        let mut statement = conn.prepare_cached(
            "INSERT INTO accounts (account, balance) VALUES (?1, ?2)
             ON CONFLICT (account) DO UPDATE SET balance = excluded.balance",
        )?;
        statement.execute(params![account.as_str(), balance])?;
        Ok(())
    }

    /// Writes (or rewrites) one lock set: the locks one request took, sharing owner and lease.
    pub fn put_lock_set(&self, row: &LockSetRow) -> Result<(), StoreError> {
        let expires = i64::try_from(row.expires_at_ms).unwrap_or(i64::MAX);
        let conn = self.conn();
        let mut statement = conn.prepare_cached(
            "INSERT INTO lock_sets (set_id, owner, expires_at_ms, grants) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (set_id) DO UPDATE SET owner = excluded.owner,
                 expires_at_ms = excluded.expires_at_ms, grants = excluded.grants",
        )?;
        statement.execute(params![row.set_id, row.owner, expires, encode_grants(&row.grants)])?;
        Ok(())
    }

    pub fn delete_lock_set(&self, set_id: i64) -> Result<(), StoreError> {
        let conn = self.conn();
        let mut statement = conn.prepare_cached("DELETE FROM lock_sets WHERE set_id = ?1")?;
        statement.execute(params![set_id])?;
        Ok(())
    }

    /// The record stored with an operation id, if that id was committed.
    pub fn operation(&self, id: &str) -> Result<Option<String>, StoreError> {
        let seq = match self.operations.collided.get(id) {
            Some(seq) => *seq,
            None => match self.operations.by_hash.get(&id_hash(id)) {
                Some(seq) => *seq,
                None => return Ok(None),
            },
        };
        let conn = self.conn();
        let mut statement =
            conn.prepare_cached("SELECT id, record FROM operations WHERE seq = ?1")?;
        let row = statement
            .query_row(params![seq], |row| Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?)))
            .optional()?;
        Ok(row.filter(|(stored_id, _)| stored_id == id).map(|(_, record)| record))
    }

    pub fn operation_exists(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self.operation(id)?.is_some())
    }

    /// Number of operation records kept.
    pub fn operation_count(&self) -> usize {
        self.operations.by_hash.len() + self.operations.collided.len()
    }

    /// Records an operation id; returns false (and changes nothing) if the id is taken.
    pub fn insert_operation(
        &mut self,
        id: &str,
        record: &str,
        at_ms: u64,
    ) -> Result<bool, StoreError> {
        if self.operation_exists(id)? {
            return Ok(false);
        }
        let seq = {
            let conn = self.conn();
            let mut statement = conn
                .prepare_cached("INSERT INTO operations (id, record, at_ms) VALUES (?1, ?2, ?3)")?;
            statement.execute(params![id, record, i64::try_from(at_ms).unwrap_or(i64::MAX)])?;
            conn.last_insert_rowid()
        };
        self.operations.insert(id, seq);
        Ok(true)
    }

    /// Deletes the oldest operation records that are older than `before_ms` or beyond the
    /// newest `keep_max`, at most `limit` of them; returns how many.
    pub fn prune_operations(
        &mut self,
        before_ms: u64,
        keep_max: usize,
        limit: usize,
    ) -> Result<usize, StoreError> {
        let excess = self.operation_count().saturating_sub(keep_max);
        let before = i64::try_from(before_ms).unwrap_or(i64::MAX);
        let doomed: Vec<(i64, String)> = {
            let conn = self.conn();
            let mut statement =
                conn.prepare_cached("SELECT seq, id, at_ms FROM operations ORDER BY seq LIMIT ?1")?;
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let rows = statement.query_map(params![limit], |row| {
                Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?, row.get::<_, i64>(2)?))
            })?;
            let mut doomed = Vec::new();
            for row in rows {
                let (seq, id, at_ms) = row?;
                if doomed.len() >= excess && at_ms >= before {
                    break;
                }
                doomed.push((seq, id));
            }
            doomed
        };
        let Some((last_seq, _)) = doomed.last() else { return Ok(0) };
        {
            let conn = self.conn();
            let mut statement = conn.prepare_cached("DELETE FROM operations WHERE seq <= ?1")?;
            statement.execute(params![last_seq])?;
        }
        for (seq, id) in &doomed {
            self.operations.remove(id, *seq);
        }
        Ok(doomed.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(name: &str) -> AccountId {
        AccountId::parse(name).expect("valid")
    }

    #[test]
    fn balances_locks_and_records_survive_reopen_and_epochs_increase() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first_token = {
            let mut store = Store::open(dir.path()).expect("open");
            store.begin(true).expect("begin");
            store.set_balance(&id("alice"), 500).expect("write");
            let set = LockSetRow {
                set_id: 3,
                owner: "bank-1".into(),
                expires_at_ms: 99,
                grants: vec![(id("alice"), 7), (id("bob"), 8)],
            };
            store.put_lock_set(&set).expect("lock");
            assert!(store.insert_operation("op-1", "{}", 10).expect("record"));
            store.commit().expect("commit");
            store.first_token()
        };
        let store = Store::open(dir.path()).expect("reopen");
        assert!(store.first_token() > first_token, "a new boot epoch");
        assert_eq!(store.balance(&id("alice")).expect("read"), 500);
        assert_eq!(store.balance(&id("nobody")).expect("read"), 0);
        let sets = store.load_lock_sets().expect("locks");
        assert_eq!(sets.len(), 1);
        assert_eq!(sets[0].grants, vec![(id("alice"), 7), (id("bob"), 8)]);
        assert_eq!(store.operation("op-1").expect("read").as_deref(), Some("{}"));
    }

    #[test]
    fn rollback_discards_and_constraints_hold() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = Store::open(dir.path()).expect("open");
        store.begin(true).expect("begin");
        store.set_balance(&id("a"), 5).expect("write");
        store.rollback();
        assert_eq!(store.balance(&id("a")).expect("read"), 0);
        assert!(store.set_balance(&id("a"), -1).is_err(), "CHECK (balance >= 0)");
        assert!(store.insert_operation("x", "{}", 1).expect("first"));
        assert!(!store.insert_operation("x", "{\"a\":1}", 2).expect("taken"), "ids are unique");
        assert_eq!(store.operation("x").expect("read").as_deref(), Some("{}"));
        assert!(store.operation_exists("x").expect("read"));
        assert!(!store.operation_exists("y").expect("read"));
        store.begin(true).expect("begin");
        assert!(store.insert_operation("y", "{}", 1).expect("new"));
        store.rollback();
        assert!(!store.operation_exists("y").expect("read"), "the index forgets rolled-back ids");
        assert_eq!(store.prune_operations(2, 10, 100).expect("prune by age"), 1);
        assert_eq!(store.operation("x").expect("read"), None);
    }

    #[test]
    fn operation_log_is_pruned_oldest_first_by_age_and_count_and_reindexed_on_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let mut store = Store::open(dir.path()).expect("open");
            for i in 0..10 {
                assert!(store.insert_operation(&format!("op-{i}"), "{}", 100 + i).expect("ok"));
            }
            assert_eq!(store.prune_operations(0, 7, 100).expect("by count"), 3);
            assert_eq!(store.operation_count(), 7);
            assert!(!store.operation_exists("op-2").expect("read"));
            assert!(store.operation_exists("op-3").expect("read"));
            assert_eq!(store.prune_operations(105, 100, 1).expect("limited"), 1);
            assert_eq!(store.prune_operations(105, 100, 100).expect("by age"), 1);
            assert_eq!(store.prune_operations(105, 100, 100).expect("nothing due"), 0);
        }
        let store = Store::open(dir.path()).expect("reopen");
        assert_eq!(store.operation_count(), 5);
        assert!(store.operation_exists("op-5").expect("read"));
        assert!(!store.operation_exists("op-4").expect("read"));
    }

    #[test]
    fn colliding_hashes_are_told_apart_by_the_stored_id() {
        let mut index = OperationIndex::default();
        index.insert("a", 1);
        // Force a collision: a second id filed under the same hash goes to `collided`.
        index.by_hash.insert(id_hash("b"), 1);
        index.insert("b", 2);
        assert_eq!(index.collided.get("b"), Some(&2));
        index.remove("b", 2);
        assert!(index.collided.is_empty());
    }

    #[test]
    fn grants_encoding_round_trips_and_refuses_garbage() {
        let grants = vec![(id("a-1"), 1), (id("B_2"), u64::MAX)];
        assert_eq!(decode_grants(&encode_grants(&grants)), Some(grants));
        assert_eq!(decode_grants(""), Some(vec![]));
        assert_eq!(decode_grants("a=x"), None);
        assert_eq!(decode_grants("a b=1"), None);
    }
}
