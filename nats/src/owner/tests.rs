use super::*;

use std::sync::{Mutex, mpsc};

/// A toy service: counters in memory mirrored in a table; an envelope can ask for a
/// storage failure.
#[derive(Debug)]
enum Toy {
    Add { key: &'static str, by: i64, reply: mpsc::Sender<Result<i64, String>> },
    Fail,
}

#[derive(Debug, Default)]
struct Seen {
    groups: Vec<GroupReport>,
    reloads: usize,
    delivered: Vec<Result<i64, String>>,
    ticks: usize,
}

struct Counters {
    memory: std::collections::HashMap<&'static str, i64>,
    seen: Arc<Mutex<Seen>>,
    tick_work: Vec<Toy>,
}

type Replies = Vec<(mpsc::Sender<Result<i64, String>>, Result<i64, String>)>;

impl State for Counters {
    type Envelope = Toy;
    type Outbox = Replies;

    fn apply(
        &mut self,
        tx: &Transaction<'_>,
        _now_ms: u64,
        envelope: Toy,
        out: &mut Replies,
    ) -> Result<(), StoreError> {
        match envelope {
            Toy::Add { key, by, reply } => {
                let value = self.memory.get(key).copied().unwrap_or(0) + by;
                tx.execute(
                    "INSERT INTO counters (key, value) VALUES (?1, ?2)
                         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    rusqlite::params![key, value],
                )?;
                self.memory.insert(key, value);
                out.push((reply, Ok(value)));
                Ok(())
            }
            Toy::Fail => Err(StoreError::Corrupt("asked to fail".into())),
        }
    }

    fn durable(&self, envelope: &Toy) -> bool {
        matches!(envelope, Toy::Add { by: 100.., .. })
    }

    fn abandon(&mut self, envelope: Toy, out: &mut Replies) {
        if let Toy::Add { reply, .. } = envelope {
            out.push((reply, Err("not applied".into())));
        }
    }

    fn tick(&mut self, _now_ms: u64) -> Vec<Toy> {
        self.seen.lock().unwrap().ticks += 1;
        std::mem::take(&mut self.tick_work)
    }

    fn rolled_back(&mut self, conn: &Connection, error: &StoreError, out: &mut Replies) {
        self.seen.lock().unwrap().reloads += 1;
        let mut statement = conn.prepare("SELECT key, value FROM counters").unwrap();
        let rows = statement
            .query_map([], |row| Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?)))
            .unwrap();
        let stored: std::collections::HashMap<String, i64> = rows.map(Result::unwrap).collect();
        self.memory.retain(|key, value| match stored.get(*key) {
            Some(stored) => {
                *value = *stored;
                true
            }
            None => false,
        });
        for (_, reply) in out.iter_mut() {
            *reply = Err(format!("unavailable: {error}"));
        }
    }

    async fn deliver(&mut self, _now_ms: u64, out: Replies) {
        let mut seen = self.seen.lock().unwrap();
        for (to, reply) in out {
            seen.delivered.push(reply.clone());
            to.send(reply).ok();
        }
    }

    fn after_group(&mut self, report: &GroupReport) {
        self.seen.lock().unwrap().groups.push(*report);
    }
}

fn open(path: Option<&std::path::Path>) -> Connection {
    let conn = match path {
        Some(path) => Connection::open(path.join("toy.db")).unwrap(),
        None => Connection::open_in_memory().unwrap(),
    };
    conn.execute_batch("CREATE TABLE counters (key TEXT PRIMARY KEY, value INTEGER NOT NULL)")
        .unwrap();
    conn
}

fn stored(conn: &Connection, key: &str) -> Option<i64> {
    conn.query_row("SELECT value FROM counters WHERE key = ?1", [key], |row| row.get(0)).ok()
}

const QUEUE_MAX: usize = 64;
const LIMITS: Limits = Limits {
    group_max: 16,
    tick: Duration::from_millis(20),
    synchronous: "NORMAL",
    mode: Mode::Thread,
};

/// A running toy owner: its runtime (the service's, in task mode), its queue and handle.
struct Running {
    runtime: tokio::runtime::Runtime,
    queue: Queue<Toy>,
    handle: OwnerHandle,
    seen: Arc<Mutex<Seen>>,
}

impl Running {
    /// Drops the queue and waits until the owner drained it and stopped.
    fn stop(self) -> Arc<Mutex<Seen>> {
        let Self { runtime, queue, handle, seen } = self;
        drop(queue);
        runtime.block_on(handle.join());
        seen
    }
}

/// Queues `envelopes` before the owner starts, so they form groups as the limits allow.
fn run(conn: Connection, envelopes: Vec<Toy>, tick_work: Vec<Toy>, mode: Mode) -> Running {
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let state = Counters { memory: Default::default(), seen: seen.clone(), tick_work };
    let (queue, inbox) = queue(QUEUE_MAX);
    for envelope in envelopes {
        queue.try_send(envelope).unwrap();
    }
    let handle = {
        let _inside = runtime.enter();
        spawn("toy", conn, state, inbox, Limits { mode, ..LIMITS }).unwrap()
    };
    Running { runtime, queue, handle, seen }
}

fn add(key: &'static str, by: i64) -> (Toy, mpsc::Receiver<Result<i64, String>>) {
    let (reply, answer) = mpsc::channel();
    (Toy::Add { key, by, reply }, answer)
}

fn groups_and_one_transaction_each(conn: Connection, mode: Mode) {
    // 20 adds queued at once: one group of 16 and one of 4, each one transaction.
    let (envelopes, answers): (Vec<_>, Vec<_>) = (0..20).map(|_| add("a", 1)).unzip();
    let seen = run(conn, envelopes, Vec::new(), mode).stop();
    let values: Vec<i64> = answers.iter().map(|a| a.recv().unwrap().unwrap()).collect();
    assert_eq!(values, (1..=20).collect::<Vec<_>>());
    let seen = seen.lock().unwrap();
    let sizes: Vec<usize> = seen.groups.iter().map(|g| g.envelopes).collect();
    assert_eq!(sizes, vec![16, 4]);
    assert!(seen.groups.iter().all(|g| g.committed && !g.durable));
}

fn a_failed_group_leaves_nothing(conn: Connection, mode: Mode) {
    // A group with a storage failure: nothing of it stays, every reply is unavailable, the
    // memory is rebuilt, and the next group (the tick's work) goes on from what is stored.
    let (first, first_answer) = add("b", 5);
    let (big, big_answer) = add("b", 100);
    let (after, after_answer) = add("b", 1);
    let (behind, behind_answer) = add("b", 7);
    let running = run(conn, vec![first, big, Toy::Fail, behind], vec![after], mode);
    let answer = after_answer.recv_timeout(Duration::from_secs(5)).expect("tick work");
    assert_eq!(answer, Ok(1), "the failed group left nothing behind");
    assert!(first_answer.recv().unwrap().unwrap_err().starts_with("unavailable"));
    assert!(big_answer.recv().unwrap().unwrap_err().starts_with("unavailable"));
    let behind = behind_answer.recv_timeout(Duration::from_secs(5)).expect("answered");
    assert!(behind.unwrap_err().starts_with("unavailable"), "one behind the failure too");
    let seen = running.stop();
    let seen = seen.lock().unwrap();
    assert_eq!(seen.reloads, 1);
    assert!(seen.ticks >= 1);
    let failed = seen.groups[0];
    assert!(!failed.committed && failed.durable && failed.envelopes == 4, "{failed:?}");
    assert!(seen.groups[1].committed);
}

#[test]
fn groups_commit_together_and_a_failed_group_rolls_back_in_memory() {
    for mode in [Mode::Thread, Mode::Task] {
        groups_and_one_transaction_each(open(None), mode);
        a_failed_group_leaves_nothing(open(None), mode);
    }
}

#[test]
fn groups_commit_together_and_a_failed_group_rolls_back_on_disk() {
    for mode in [Mode::Thread, Mode::Task] {
        let (one, two) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        groups_and_one_transaction_each(open(Some(one.path())), mode);
        a_failed_group_leaves_nothing(open(Some(two.path())), mode);
        // What the owner committed is on disk, for another connection; the failed group
        // not.
        let other = Connection::open(two.path().join("toy.db")).unwrap();
        assert_eq!(stored(&other, "b"), Some(1));
        let other = Connection::open(one.path().join("toy.db")).unwrap();
        assert_eq!(stored(&other, "a"), Some(20));
    }
}

#[test]
fn the_queue_is_bounded_and_counts_what_waits() {
    let (queue, inbox) = queue::<u8>(2);
    assert!(queue.try_send(1).is_ok());
    assert!(queue.try_send(2).is_ok());
    assert_eq!(queue.try_send(3), Err(3), "full: given back");
    assert_eq!(queue.len(), 2);
    drop(inbox);
    assert_eq!(queue.try_send(4), Err(4), "gone: given back");
}
