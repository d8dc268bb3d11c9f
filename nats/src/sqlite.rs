//! What every store shares: opening a database in WAL mode with its schema, the one storage
//! error, and the conversions between SQLite's `i64` and our `u64`s where rusqlite's own
//! checked ones (`fallible_uint`) do not apply.

use std::path::Path;

use rusqlite::Connection;

/// A storage failure of any store. The service answers `unavailable`, and its owner rolls the
/// group back and reloads (see `owner`).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("cannot create data directory {path}: {source}")]
    DataDir { path: std::path::PathBuf, source: std::io::Error },
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// The replicated log did not take the group (see `crate::replica`).
    #[error("replication: {0}")]
    Replication(String),
}

/// Opens (creating if needed) `data_dir/file` in WAL mode with `synchronous=NORMAL` (a commit
/// survives `kill -9`) and a page cache of `cache_bytes`, and brings its schema up to date:
/// `migrations[n]` takes the schema from version `n` to `n + 1` (`PRAGMA user_version`), each
/// in one transaction, so a store is at one version or the next, never between.
pub fn open_wal(
    data_dir: &Path,
    file: &str,
    cache_bytes: i64,
    migrations: &[&str],
) -> Result<Connection, StoreError> {
    std::fs::create_dir_all(data_dir)
        .map_err(|source| StoreError::DataDir { path: data_dir.to_owned(), source })?;
    let mut conn = Connection::open(data_dir.join(file))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    // Negative cache_size is in KiB.
    conn.pragma_update(None, "cache_size", -(cache_bytes / 1024))?;
    let version: i64 = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
    let version = usize::try_from(version)
        .map_err(|_| StoreError::Corrupt(format!("schema version {version}")))?;
    if version > migrations.len() {
        return Err(StoreError::Corrupt(format!(
            "{file} has schema version {version}, newer than this program knows ({})",
            migrations.len()
        )));
    }
    for (index, migration) in migrations.iter().enumerate().skip(version) {
        let tx = conn.transaction()?;
        tx.execute_batch(migration)?;
        tx.pragma_update(None, "user_version", index + 1)?;
        tx.commit()?;
    }
    Ok(conn)
}

/// A `u64` bound where SQLite wants an `i64`, saturating: for query bounds that may exceed
/// what is stored (`seq < 2^64-1`), never for values written.
pub fn saturating_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// A rowid handed out by SQLite (never negative) as a `u64`.
pub fn rowid(value: i64) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| StoreError::Corrupt(format!("rowid {value}")))
}
