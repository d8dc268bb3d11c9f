//! The ledger's SQLite store: the only module that touches SQLite.
//!
//! One owner thread holds the one [`Store`] (see `ledger`); nothing else opens the database.
//! The database runs in WAL mode. Transactions that write balances or operation records run
//! with `synchronous=FULL`, so a reply sent after `commit` means the data is on disk; lock-only
//! transactions run with `synchronous=NORMAL`, which survives a process crash (`kill -9`) but
//! may lose the last lock changes on power loss. That is safe: a lost lock is the same as an
//! expired one, and fencing tokens still increase because every start bumps a durable boot
//! epoch that forms the tokens' high bits.

use std::path::{Path, PathBuf};

use agora_core::{AccountId, Balance, Lock};
use rusqlite::{Connection, OptionalExtension, params};

/// File name of the ledger database inside its data directory.
pub const DATABASE_FILE: &str = "ledger.db";
/// Fencing tokens are `boot_epoch << TOKEN_EPOCH_SHIFT | counter`.
pub const TOKEN_EPOCH_SHIFT: u32 = 40;

const SCHEMA_VERSION: i64 = 1;
const MIGRATION_1: &str = "
    CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
    CREATE TABLE accounts (
        account TEXT PRIMARY KEY,
        balance INTEGER NOT NULL CHECK (balance >= 0)
    ) WITHOUT ROWID;
    CREATE TABLE locks (
        account TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        token INTEGER NOT NULL,
        expires_at_ms INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE operations (
        id TEXT PRIMARY KEY,
        record TEXT NOT NULL,
        at_ms INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX operations_by_time ON operations (at_ms);
";

/// Storage failures. The ledger answers `unavailable` and reloads its state from disk.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("corrupt row: {0}")]
    Corrupt(String),
}

/// The ledger database.
#[derive(Debug)]
pub struct Store {
    conn: Connection,
    boot_epoch: u64,
}

impl Store {
    /// Opens (creating if needed) the database in `data_dir`, migrates it and records a new
    /// boot epoch durably.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|source| StoreError::DataDir {
            path: data_dir.to_owned(),
            source,
        })?;
        let conn = Connection::open(data_dir.join(DATABASE_FILE))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
        if version < 1 {
            conn.execute_batch(&format!(
                "BEGIN; {MIGRATION_1} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
            ))?;
        }
        let previous: Option<i64> = conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'boot_epoch'",
                [],
                |row| row.get(0),
            )
            .optional()?;
        let boot_epoch = previous.unwrap_or(0) + 1;
        conn.execute(
            "INSERT INTO meta (key, value) VALUES ('boot_epoch', ?1)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            params![boot_epoch],
        )?;
        let boot_epoch = u64::try_from(boot_epoch)
            .map_err(|_| StoreError::Corrupt(format!("boot epoch {boot_epoch}")))?;
        Ok(Self { conn, boot_epoch })
    }

    /// The first fencing token of this boot: above every token of every earlier boot.
    pub fn first_token(&self) -> u64 {
        self.boot_epoch << TOKEN_EPOCH_SHIFT
    }

    /// Every lock on disk (the ledger restores them at startup; expired ones are swept).
    pub fn load_locks(&self) -> Result<Vec<(AccountId, Lock)>, StoreError> {
        let mut statement = self
            .conn
            .prepare("SELECT account, owner, token, expires_at_ms FROM locks")?;
        let rows = statement.query_map([], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, i64>(2)?,
                row.get::<_, i64>(3)?,
            ))
        })?;
        let mut locks = Vec::new();
        for row in rows {
            let (account, owner, token, expires_at_ms) = row?;
            let account = AccountId::parse(&account)
                .map_err(|e| StoreError::Corrupt(format!("lock account: {e}")))?;
            let lock = Lock {
                owner,
                token: u64::try_from(token).map_err(|_| StoreError::Corrupt("token".into()))?,
                expires_at_ms: u64::try_from(expires_at_ms)
                    .map_err(|_| StoreError::Corrupt("expiry".into()))?,
            };
            locks.push((account, lock));
        }
        Ok(locks)
    }

    /// Starts a write transaction; `durable` transactions fsync on commit.
    pub fn begin(&mut self, durable: bool) -> Result<(), StoreError> {
        let level = if durable { "FULL" } else { "NORMAL" };
        self.conn.pragma_update(None, "synchronous", level)?;
        self.conn.execute_batch("BEGIN IMMEDIATE")?;
        Ok(())
    }

    pub fn commit(&mut self) -> Result<(), StoreError> {
        self.conn.execute_batch("COMMIT")?;
        Ok(())
    }

    /// Rolls back an open transaction, if any.
    pub fn rollback(&mut self) {
        if !self.conn.is_autocommit() {
            if let Err(error) = self.conn.execute_batch("ROLLBACK") {
                tracing::error!(%error, "rollback failed");
            }
        }
    }

    /// The balance of an account; an account never written has balance 0.
    pub fn balance(&self, account: &AccountId) -> Result<Balance, StoreError> {
        let mut statement = self
            .conn
            .prepare_cached("SELECT balance FROM accounts WHERE account = ?1")?;
        let balance = statement
            .query_row(params![account.as_str()], |row| row.get::<_, i64>(0))
            .optional()?;
        Ok(balance.unwrap_or(0))
    }

    pub fn set_balance(&self, account: &AccountId, balance: Balance) -> Result<(), StoreError> {
        let mut statement = self.conn.prepare_cached(
            "INSERT INTO accounts (account, balance) VALUES (?1, ?2)
             ON CONFLICT (account) DO UPDATE SET balance = excluded.balance",
        )?;
        statement.execute(params![account.as_str(), balance])?;
        Ok(())
    }

    pub fn put_lock(&self, account: &AccountId, lock: &Lock) -> Result<(), StoreError> {
        let token = i64::try_from(lock.token).map_err(|_| StoreError::Corrupt("token".into()))?;
        let expires = i64::try_from(lock.expires_at_ms).unwrap_or(i64::MAX);
        let mut statement = self.conn.prepare_cached(
            "INSERT INTO locks (account, owner, token, expires_at_ms) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (account) DO UPDATE SET owner = excluded.owner,
                 token = excluded.token, expires_at_ms = excluded.expires_at_ms",
        )?;
        statement.execute(params![account.as_str(), lock.owner, token, expires])?;
        Ok(())
    }

    pub fn delete_lock(&self, account: &AccountId) -> Result<(), StoreError> {
        let mut statement = self
            .conn
            .prepare_cached("DELETE FROM locks WHERE account = ?1")?;
        statement.execute(params![account.as_str()])?;
        Ok(())
    }

    /// The record stored with an operation id, if that id was committed.
    pub fn operation(&self, id: &str) -> Result<Option<String>, StoreError> {
        let mut statement = self
            .conn
            .prepare_cached("SELECT record FROM operations WHERE id = ?1")?;
        Ok(statement
            .query_row(params![id], |row| row.get(0))
            .optional()?)
    }

    pub fn insert_operation(&self, id: &str, record: &str, at_ms: u64) -> Result<(), StoreError> {
        let mut statement = self
            .conn
            .prepare_cached("INSERT INTO operations (id, record, at_ms) VALUES (?1, ?2, ?3)")?;
        statement.execute(params![
            id,
            record,
            i64::try_from(at_ms).unwrap_or(i64::MAX)
        ])?;
        Ok(())
    }

    /// Deletes at most `limit` operation records older than `before_ms`; returns how many.
    pub fn prune_operations(&self, before_ms: u64, limit: usize) -> Result<usize, StoreError> {
        let mut statement = self.conn.prepare_cached(
            "DELETE FROM operations WHERE id IN
                 (SELECT id FROM operations WHERE at_ms < ?1 ORDER BY at_ms LIMIT ?2)",
        )?;
        let before = i64::try_from(before_ms).unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        Ok(statement.execute(params![before, limit])?)
    }

    /// Number of accounts with a stored balance, and the sum of all balances.
    pub fn totals(&self) -> Result<(u64, i128), StoreError> {
        let mut statement = self
            .conn
            .prepare_cached("SELECT account, balance FROM accounts")?;
        let mut rows = statement.query([])?;
        let (mut count, mut sum) = (0u64, 0i128);
        while let Some(row) = rows.next()? {
            count += 1;
            sum += i128::from(row.get::<_, i64>(1)?);
        }
        Ok((count, sum))
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
            let lock = Lock {
                owner: "bank-1".into(),
                token: 7,
                expires_at_ms: 99,
            };
            store.put_lock(&id("alice"), &lock).expect("lock");
            store.insert_operation("op-1", "{}", 10).expect("record");
            store.commit().expect("commit");
            store.first_token()
        };
        let store = Store::open(dir.path()).expect("reopen");
        assert!(store.first_token() > first_token, "a new boot epoch");
        assert_eq!(store.balance(&id("alice")).expect("read"), 500);
        assert_eq!(store.balance(&id("nobody")).expect("read"), 0);
        assert_eq!(store.load_locks().expect("locks").len(), 1);
        assert_eq!(
            store.operation("op-1").expect("read").as_deref(),
            Some("{}")
        );
        assert_eq!(store.totals().expect("totals"), (1, 500));
    }

    #[test]
    fn rollback_discards_and_constraints_hold() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = Store::open(dir.path()).expect("open");
        store.begin(true).expect("begin");
        store.set_balance(&id("a"), 5).expect("write");
        store.rollback();
        assert_eq!(store.balance(&id("a")).expect("read"), 0);
        assert!(
            store.set_balance(&id("a"), -1).is_err(),
            "CHECK (balance >= 0)"
        );
        store.insert_operation("x", "{}", 1).expect("first");
        assert!(
            store.insert_operation("x", "{}", 2).is_err(),
            "ids are unique"
        );
        assert_eq!(store.prune_operations(2, 10).expect("prune"), 1);
        assert_eq!(store.operation("x").expect("read"), None);
    }
}
