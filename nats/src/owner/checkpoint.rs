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
//! under steady load never happens by itself; so once a commit leaves more than
//! [`WAL_FRAMES_MAX`] frames, the owner itself checkpoints `RESTART` before its next group,
//! between transactions: it waits for a passive pass under way (SQLite would refuse a second
//! checkpoint rather than wait, so the two take turns by a mutex), copies what is left (little),
//! and its next write starts the log over. A reader holding an old snapshot (a snapshot's copy)
//! makes it give up after [`RESTART_WAIT`], and it is not tried again for [`RESTART_BACKOFF`],
//! so the owner never waits long. The WAL stays bounded, and the owner pays one short wait per
//! [`WAL_FRAMES_MAX`] frames instead of a checkpoint per commit.

use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags};

/// Frames in the WAL after a commit from which a checkpoint is due (SQLite's default).
pub const CHECKPOINT_FRAMES: i32 = 1_000;
/// Frames (pages) the WAL may hold before it is made to start over: 64 MiB of 4 KiB pages.
pub const WAL_FRAMES_MAX: i32 = 16_384;
/// How long a `RESTART` waits for a passive pass under way and for readers (a snapshot's copy)
/// before it gives up.
pub const RESTART_WAIT: Duration = Duration::from_millis(250);
/// How long after a `RESTART` that gave up the next one is tried.
pub const RESTART_BACKOFF: Duration = Duration::from_secs(1);
/// How long the owner's connection waits for a `RESTART` in progress to let it write.
pub const OWNER_BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// The owner's side of its checkpoints. The thread stops when the owner's connection closes
/// (its WAL hook holds the thread's only poke).
#[derive(Debug)]
pub(super) struct Checkpointer {
    /// Frames the owner's last commit left in the WAL.
    frames: Arc<AtomicI32>,
    /// No `RESTART` before this (one gave up).
    quiet_until: Option<Instant>,
    /// Held for each checkpoint: SQLite refuses a second checkpoint at once instead of waiting.
    pass: Arc<Mutex<()>>,
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
            let (poke, poked) = mpsc::sync_channel::<()>(1);
            let pass = Arc::new(Mutex::new(()));
            let passes = pass.clone();
            std::thread::Builder::new()
                .name(format!("{name}-checkpoint"))
                .spawn(move || run(&conn, &poked, &passes))?;
            owner.busy_timeout(OWNER_BUSY_TIMEOUT)?;
            // (This pragma replaces any WAL hook: the hook comes after it.)
            owner.pragma_update(None, "wal_autocheckpoint", 0)?;
            let frames = Arc::new(AtomicI32::new(0));
            let committed = frames.clone();
            owner.wal_hook(Some(move |_: &mut rusqlite::hooks::Wal, frames: i32| {
                committed.store(frames, Ordering::Relaxed);
                if frames >= CHECKPOINT_FRAMES {
                    // One pending poke covers any number of commits.
                    poke.try_send(()).ok();
                }
                Ok(())
            }))?;
            Ok(Self { frames, quiet_until: None, pass })
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

    /// Before a group (outside any transaction): makes a WAL longer than [`WAL_FRAMES_MAX`]
    /// start over.
    pub(super) fn restart_if_long(&mut self, owner: &Connection) {
        if self.frames.load(Ordering::Relaxed) <= WAL_FRAMES_MAX
            || self.quiet_until.is_some_and(|until| Instant::now() < until)
        {
            return;
        }
        let _pass = self.pass.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let restarted =
            owner.busy_timeout(RESTART_WAIT).and_then(|()| checkpoint(owner, "RESTART"));
        let restored = owner.busy_timeout(OWNER_BUSY_TIMEOUT);
        match restarted.and_then(|done| restored.map(|()| done)) {
            Ok((false, _)) => {
                self.frames.store(0, Ordering::Relaxed);
                self.quiet_until = None;
            }
            Ok((true, _)) => self.quiet_until = Some(Instant::now() + RESTART_BACKOFF),
            Err(error) => {
                tracing::warn!(%error, "WAL restart failed");
                self.quiet_until = Some(Instant::now() + RESTART_BACKOFF);
            }
        }
    }
}

/// The checkpoint thread: one passive pass per poke, until the owner's connection is gone.
fn run(conn: &Connection, poked: &mpsc::Receiver<()>, pass: &Mutex<()>) {
    while poked.recv().is_ok() {
        let _pass = pass.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Err(error) = checkpoint(conn, "PASSIVE") {
            tracing::warn!(%error, "WAL checkpoint failed");
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

    fn owner_db(dir: &std::path::Path) -> Connection {
        crate::sqlite::open_wal(dir, "t.db", 1 << 20, &["CREATE TABLE t (v BLOB NOT NULL)"])
            .expect("open")
    }

    /// One commit of `rows` rows of about a page each.
    fn commit_pages(owner: &Connection, rows: usize) {
        let page = vec![7u8; 4000];
        let tx = owner.unchecked_transaction().expect("begin");
        for _ in 0..rows {
            tx.execute("INSERT INTO t (v) VALUES (?1)", [&page]).expect("insert");
        }
        tx.commit().expect("commit");
    }

    #[test]
    fn the_wal_is_checkpointed_off_the_owner_and_starts_over_once_long() {
        let dir = tempfile::tempdir().expect("dir");
        let mut owner = owner_db(dir.path());
        let mut checkpointer = Checkpointer::start(&mut owner, "test").expect("started");
        let auto: i64 =
            owner.pragma_query_value(None, "wal_autocheckpoint", |row| row.get(0)).expect("read");
        assert_eq!(auto, 0, "the owner no longer checkpoints in its commits");
        let mut longest = 0;
        // Far more than WAL_FRAMES_MAX frames are written, as an owner does (a restart check
        // before each group); the WAL must never hold much more than the bound.
        for _ in 0..60 {
            checkpointer.restart_if_long(&owner);
            commit_pages(&owner, 1_000);
            let size = std::fs::metadata(dir.path().join("t.db-wal")).expect("wal").len();
            longest = longest.max(size);
        }
        let rows: i64 = owner.query_row("SELECT count(*) FROM t", [], |r| r.get(0)).expect("n");
        assert_eq!(rows, 60_000);
        let bound = (WAL_FRAMES_MAX as u64 + 2_100) * 4_200;
        assert!(longest < bound, "the WAL grew to {longest} bytes (bound {bound})");
        assert!(wal_frames(&owner) <= i64::from(WAL_FRAMES_MAX) + 2_100);
    }

    /// A reader on an old snapshot (a snapshot's copy) keeps the WAL from starting over: the
    /// owner gives up after RESTART_WAIT, does not try again within RESTART_BACKOFF, and its
    /// writes go on.
    #[test]
    fn a_long_reader_costs_the_owner_one_short_wait_per_backoff() {
        let dir = tempfile::tempdir().expect("dir");
        let mut owner = owner_db(dir.path());
        let mut checkpointer = Checkpointer::start(&mut owner, "test").expect("started");
        commit_pages(&owner, 100);
        let reader = Connection::open(dir.path().join("t.db")).expect("reader");
        reader.execute_batch("BEGIN").expect("begin");
        let seen: i64 = reader.query_row("SELECT count(*) FROM t", [], |r| r.get(0)).expect("n");
        assert_eq!(seen, 100);
        for _ in 0..17 {
            commit_pages(&owner, 1_000);
        }
        let started = Instant::now();
        checkpointer.restart_if_long(&owner);
        let first = started.elapsed();
        assert!(first >= RESTART_WAIT / 2, "it waited for the reader ({first:?})");
        assert!(first < RESTART_WAIT * 4, "but not long ({first:?})");
        let started = Instant::now();
        checkpointer.restart_if_long(&owner);
        assert!(started.elapsed() < RESTART_WAIT / 2, "no second wait within the backoff");
        commit_pages(&owner, 10);
        reader.execute_batch("COMMIT").expect("end the read");
        checkpointer.quiet_until = None;
        checkpointer.restart_if_long(&owner);
        commit_pages(&owner, 10);
        assert!(wal_frames(&owner) < 100, "the WAL started over once the reader was gone");
    }
}
