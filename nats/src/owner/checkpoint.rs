//! WAL checkpoints off the owner's thread.
//!
//! SQLite's automatic checkpoint runs inside the commit that crosses its threshold: with big
//! groups (a bank batch writes megabytes) that is nearly every commit, and the owner waits for
//! pages copied into the database file and an fsync before its next group. Instead the owner's
//! connection never checkpoints itself (`wal_autocheckpoint=0`); a commit that leaves
//! [`CHECKPOINT_FRAMES`] or more in the WAL (SQLite's own threshold) pokes a thread with its own
//! connection, which checkpoints `PASSIVE` (never blocking the owner) while the owner goes on.
//!
//! A WAL only starts over at its beginning when a write begins after a complete checkpoint, which
//! under steady load never happens by itself; so once the WAL holds more than
//! [`WAL_FRAMES_MAX`] frames the thread checkpoints `RESTART`: it waits for the owner's open
//! transaction to end, copies what is left (little: the passive passes did the rest), and holds
//! the owner's next transaction back until the log starts over. The WAL stays bounded, and the
//! owner pays one short wait per [`WAL_FRAMES_MAX`] frames instead of a checkpoint per commit.

use std::sync::mpsc;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

/// Frames in the WAL after a commit from which a checkpoint is due (SQLite's default).
pub const CHECKPOINT_FRAMES: i32 = 1_000;
/// Frames (pages) the WAL may hold before it is made to start over: 64 MiB of 4 KiB pages.
pub const WAL_FRAMES_MAX: i64 = 16_384;
/// How long a `RESTART` waits for the owner's transaction and for readers (a snapshot's copy)
/// before it gives up until the next commit.
const RESTART_WAIT: Duration = Duration::from_millis(250);
/// How long the owner's connection waits for a `RESTART` in progress to let it write.
pub const OWNER_BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Holds the checkpoint thread: dropping it (and the owner's connection, whose commits poke
/// the thread) stops the thread.
#[derive(Debug)]
pub(super) struct Checkpointer {
    _thread: std::thread::JoinHandle<()>,
}

impl Checkpointer {
    /// Takes checkpoints of `owner`'s database over from it (nothing for an in-memory one).
    pub(super) fn start(owner: &mut Connection, name: &str) -> Option<Self> {
        let path = owner.path().filter(|path| !path.is_empty())?.to_owned();
        let started = (|| -> Result<Self, Box<dyn std::error::Error>> {
            let conn = Connection::open_with_flags(
                &path,
                OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )?;
            conn.busy_timeout(RESTART_WAIT)?;
            let (poke, poked) = mpsc::sync_channel::<i32>(1);
            let thread = std::thread::Builder::new()
                .name(format!("{name}-checkpoint"))
                .spawn(move || run(&conn, &poked))?;
            owner.busy_timeout(OWNER_BUSY_TIMEOUT)?;
            // (This pragma replaces any WAL hook: the hook comes after it.)
            owner.pragma_update(None, "wal_autocheckpoint", 0)?;
            owner.wal_hook(Some(move |_: &mut rusqlite::hooks::Wal, frames: i32| {
                if frames >= CHECKPOINT_FRAMES {
                    // One pending poke covers any number of commits.
                    poke.try_send(frames).ok();
                }
                Ok(())
            }))?;
            Ok(Self { _thread: thread })
        })();
        match started {
            Ok(checkpointer) => Some(checkpointer),
            Err(error) => {
                // SQLite's own automatic checkpoints stay on.
                tracing::warn!(%error, "cannot checkpoint off the owner's thread");
                None
            }
        }
    }
}

/// The checkpoint thread: one pass per poke (the frames a commit left in the WAL), until the
/// owner's connection is gone.
fn run(conn: &Connection, poked: &mpsc::Receiver<i32>) {
    let mut frames = 0;
    while let Ok(committed) = poked.recv() {
        frames = frames.max(i64::from(committed));
        let mode = if frames > WAL_FRAMES_MAX { "RESTART" } else { "PASSIVE" };
        match checkpoint(conn, mode) {
            // A RESTART that found the WAL busy left it as long: it is tried again next time.
            Ok((_busy, log)) => frames = log,
            Err(error) => tracing::warn!(%error, mode, "WAL checkpoint failed"),
        }
    }
}

/// `PRAGMA wal_checkpoint(mode)`: whether it was blocked, and the frames in the WAL.
fn checkpoint(conn: &Connection, mode: &str) -> rusqlite::Result<(bool, i64)> {
    conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |row| {
        Ok((row.get::<_, i64>(0)? != 0, row.get::<_, i64>(1)?))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wal_frames(conn: &Connection) -> i64 {
        checkpoint(conn, "PASSIVE").expect("checkpoint").1
    }

    #[test]
    fn the_wal_is_checkpointed_off_the_owner_and_starts_over_once_long() {
        let dir = tempfile::tempdir().expect("dir");
        let mut owner = crate::sqlite::open_wal(
            dir.path(),
            "t.db",
            1 << 20,
            &["CREATE TABLE t (v BLOB NOT NULL)"],
        )
        .expect("open");
        let checkpointer = Checkpointer::start(&mut owner, "test").expect("started");
        let auto: i64 =
            owner.pragma_query_value(None, "wal_autocheckpoint", |row| row.get(0)).expect("read");
        assert_eq!(auto, 0, "the owner no longer checkpoints in its commits");
        let page = vec![7u8; 4000];
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let mut longest = 0;
        // Far more than WAL_FRAMES_MAX frames are written; the WAL must stay near the bound.
        for _ in 0..60 {
            let tx = owner.unchecked_transaction().expect("begin");
            for _ in 0..1_000 {
                tx.execute("INSERT INTO t (v) VALUES (?1)", [&page]).expect("insert");
            }
            tx.commit().expect("commit");
            std::thread::sleep(Duration::from_millis(20));
            let size = std::fs::metadata(dir.path().join("t.db-wal")).expect("wal").len();
            longest = longest.max(size);
            assert!(std::time::Instant::now() < deadline, "took too long");
        }
        let rows: i64 = owner.query_row("SELECT count(*) FROM t", [], |r| r.get(0)).expect("n");
        assert_eq!(rows, 60_000);
        // A few commits may land while a RESTART waits its turn.
        let bound = (WAL_FRAMES_MAX as u64 * 2) * 4_200;
        assert!(longest < bound, "the WAL grew to {longest} bytes (bound {bound})");
        assert!(wal_frames(&owner) <= WAL_FRAMES_MAX * 2);
        drop(checkpointer);
    }
}
