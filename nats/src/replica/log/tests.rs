use super::*;

#[test]
fn entries_round_trip_and_garbage_is_refused() {
    let entry = Entry {
        changes: vec![1, 2, 3, 0, 255],
        events: vec![
            Event {
                subject: "agora.bank.events.alice".into(),
                payload: Bytes::from("{}"),
                trace: None,
            },
            Event { subject: "agora.chat.room.lobby".into(), payload: Bytes::new(), trace: None },
        ],
    };
    assert_eq!(Entry::decode(&entry.encode()).unwrap(), entry);
    // With spans: each event keeps its own; without, the entry is the one written before
    // spans existed.
    let mut traced = entry.clone();
    traced.events[1].trace = Some(crate::trace::Trace::root(true));
    let encoded = traced.encode();
    assert_eq!(encoded.len(), entry.encode().len() + 4 + 4 + 55);
    assert_eq!(Entry::decode(&encoded).unwrap(), traced);
    for cut in entry.encode().len() + 1..encoded.len() {
        assert!(Entry::decode(&encoded[..cut]).is_err(), "traced, truncated at {cut}");
    }
    assert_eq!(Entry::decode(&Entry::default().encode()).unwrap(), Entry::default());
    let encoded = entry.encode();
    for cut in 0..encoded.len() {
        assert!(Entry::decode(&encoded[..cut]).is_err(), "truncated at {cut}");
    }
    assert!(Entry::decode(b"XXXX\0\0\0\0\0\0\0\0").is_err());
}

fn part(seq: u64, instance: &str, part: (u32, u32), payload: &[u8]) -> Part {
    Part {
        seq,
        instance: instance.into(),
        relayed: 0,
        part,
        payload: Bytes::copy_from_slice(payload),
    }
}

#[test]
fn parts_assemble_and_abandoned_parts_are_skipped() {
    let entry = Entry { changes: vec![7; 100], events: Vec::new() };
    let body = entry.encode();
    let (a, b) = body.split_at(50);
    let mut assembler = Assembler::default();
    assert!(assembler.push(part(1, "x", (1, 2), a)).unwrap().is_none());
    let read = assembler.push(part(2, "x", (2, 2), b)).unwrap().expect("complete");
    assert_eq!((read.seq, read.entry), (2, entry.clone()));
    // x died after its first part; y starts a new entry: x's part is dropped.
    assert!(assembler.push(part(3, "x", (1, 2), a)).unwrap().is_none());
    let read = assembler.push(part(4, "y", (1, 1), &body)).unwrap().expect("y's entry");
    assert_eq!((read.seq, read.instance.as_str()), (4, "y"));
    // A second part without its first is dropped too.
    assert!(assembler.push(part(5, "y", (2, 2), b)).unwrap().is_none());
}

fn store() -> Connection {
    let conn = Connection::open_in_memory().unwrap();
    conn.execute_batch(
        "CREATE TABLE t (k TEXT PRIMARY KEY, v INTEGER NOT NULL) WITHOUT ROWID;
             CREATE TABLE r (id INTEGER PRIMARY KEY, x TEXT)",
    )
    .unwrap();
    prepare(&conn).unwrap();
    conn
}

fn record(conn: &Connection, sql: &str) -> Vec<u8> {
    let mut session = rusqlite::session::Session::new(conn).unwrap();
    session.attach(None::<&str>).unwrap();
    conn.execute_batch(sql).unwrap();
    let mut out = Vec::new();
    session.patchset_strm(&mut out).unwrap();
    out
}

fn dump(conn: &Connection) -> Vec<(String, i64)> {
    let mut statement = conn.prepare("SELECT k, v FROM t ORDER BY k").unwrap();
    statement
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
        .unwrap()
        .map(|r| r.unwrap())
        .collect()
}

#[test]
fn a_follower_applying_the_patchsets_ends_equal() {
    let (active, follower) = (store(), store());
    let steps = [
        "INSERT INTO t VALUES ('a', 1), ('b', 2); INSERT INTO r (x) VALUES ('one')",
        "UPDATE t SET v = v + 10 WHERE k = 'a'; DELETE FROM t WHERE k = 'b'",
        "INSERT INTO t VALUES ('b', 5); UPDATE t SET v = 0 WHERE k = 'a'",
        "DELETE FROM r",
    ];
    for (seq, sql) in steps.iter().enumerate() {
        let changes = record(&active, sql);
        apply(&follower, seq as u64 + 1, &Entry { changes, events: Vec::new() }).unwrap();
        assert_eq!(dump(&follower), dump(&active), "after step {seq}");
    }
    assert_eq!(applied(&follower).unwrap(), steps.len() as u64);
    let rows: i64 = follower.query_row("SELECT count(*) FROM r", [], |r| r.get(0)).unwrap();
    assert_eq!(rows, 0);
    // Applied twice (a follower that crashed before recording its position): same result.
    let changes = record(&active, "UPDATE t SET v = 42 WHERE k = 'b'");
    let entry = Entry { changes, events: Vec::new() };
    apply(&follower, 5, &entry).unwrap();
    apply(&follower, 5, &entry).unwrap();
    assert_eq!(dump(&follower), dump(&active));
}
