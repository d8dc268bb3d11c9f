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
    /// Another process holds the data directory (see [`lock_dir`]).
    #[error(
        "the data directory {path} is in use by another process ({holder}): each instance \
         needs a data directory of its own"
    )]
    DataDirInUse { path: std::path::PathBuf, holder: String },
}

/// The file in a data directory whose lock says a process uses the directory.
pub const LOCK_FILE: &str = "LOCK";

/// A process's exclusive hold on a data directory, released when it is dropped or the process
/// ends in any way (`kill -9` too: the kernel drops the lock with the file).
#[derive(Debug)]
pub struct DirLock {
    _file: std::fs::File,
}

/// Takes `data_dir` (created if missing) for this process, or fails with
/// [`StoreError::DataDirInUse`] while another process holds it: two instances on one directory
/// would write one database from two states, and a standby restoring a snapshot would replace
/// the file under the other. The lock file holds the holder's process id.
pub fn lock_dir(data_dir: &Path) -> Result<DirLock, StoreError> {
    use std::io::{Read, Seek, Write};
    let failed = |source| StoreError::DataDir { path: data_dir.to_owned(), source };
    std::fs::create_dir_all(data_dir).map_err(failed)?;
    let path = data_dir.join(LOCK_FILE);
    let mut file = std::fs::File::options()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(failed)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            file.read_to_string(&mut holder).ok();
            let holder = match holder.trim() {
                "" => "its process id not written yet".to_owned(),
                pid => format!("process {pid}"),
            };
            return Err(StoreError::DataDirInUse { path: data_dir.to_owned(), holder });
        }
        Err(std::fs::TryLockError::Error(source)) => return Err(failed(source)),
    }
    file.set_len(0).map_err(failed)?;
    file.rewind().map_err(failed)?;
    writeln!(file, "{}", std::process::id()).map_err(failed)?;
    Ok(DirLock { _file: file })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_data_directory_is_held_by_one_holder_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("made/if/missing");
        let held = lock_dir(&data).expect("the first takes it");
        let pid = std::process::id().to_string();
        assert_eq!(std::fs::read_to_string(data.join(LOCK_FILE)).unwrap().trim(), pid);
        // flock is per open file: a second open in this process is another holder.
        match lock_dir(&data) {
            Err(StoreError::DataDirInUse { path, holder }) => {
                assert_eq!(path, data);
                assert_eq!(holder, format!("process {pid}"));
            }
            other => panic!("a second holder: {other:?}"),
        }
        drop(held);
        let again = lock_dir(&data).expect("free once dropped");
        assert_eq!(std::fs::read_to_string(data.join(LOCK_FILE)).unwrap().trim(), pid);
        drop(again);
    }

    #[test]
    fn a_data_directory_that_cannot_be_made_is_a_data_dir_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a-file");
        std::fs::write(&file, b"x").unwrap();
        assert!(matches!(lock_dir(&file.join("below")), Err(StoreError::DataDir { .. })));
    }
}
