use super::*;

fn search_texts(conn: &Connection, query: &str) -> Vec<String> {
    let inbox = Conversation::Room("all".into());
    let (hits, _) = search(conn, query, &inbox, None, 100).expect("searches");
    hits.into_iter().map(|hit| hit.message.text).collect()
}

/// A standby applies the active's patchsets, rebuilds its index when it takes over, and
/// then finds exactly what the active finds; both indexes pass FTS5's integrity check.
#[test]
fn a_standby_applying_patchsets_searches_like_the_active() {
    let (active_dir, standby_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let active = open(active_dir.path()).expect("opens");
    let standby = open(standby_dir.path()).expect("opens");
    crate::replica::log::prepare(&active).unwrap();
    crate::replica::log::prepare(&standby).unwrap();
    let group = |work: &dyn Fn(&Connection)| {
        let mut session = rusqlite::session::Session::new(&active).unwrap();
        session.attach(None::<&str>).unwrap();
        work(&active);
        let mut patchset = Vec::new();
        session.patchset_strm(&mut patchset).unwrap();
        drop(session);
        crate::replica::log::apply_changes(&standby, &patchset).expect("applies");
    };
    let say = |conn: &Connection, id: &str, text: &str| {
        let message = NewMessage {
            room: Some("all"),
            to: None,
            from: "alice",
            id,
            text,
            at_ms: 1,
            recorded_ms: 1,
            reply_to: None,
        };
        insert(conn, &message).unwrap().unwrap()
    };
    group(&|conn| {
        for n in 0..50 {
            say(conn, &format!("m{n}"), &format!("banana number {n} and more words"));
        }
    });
    group(&|conn| {
        edit(conn, 3, "banana number 2 and more words", "an apple instead", 5).unwrap();
        delete(conn, 4, "banana number 3 and more words", 6).unwrap();
    });
    group(&|conn| {
        say(conn, "late", "a late banana");
        prune(conn, 40, 100).unwrap();
    });
    // The active indexes in batches; a standby rebuilds once it takes over.
    index_new(&active).expect("indexes");
    rebuild_search(&standby).expect("rebuilds");
    for query in [r#""banana""#, r#""apple""#, r#""late""#, r#""number" "7""#] {
        assert_eq!(search_texts(&standby, query), search_texts(&active, query), "{query}");
    }
    assert_eq!(search_texts(&standby, r#""banana""#).len(), 40, "seq 12..=51 are kept");
    for conn in [&active, &standby] {
        conn.execute("INSERT INTO messages_fts (messages_fts) VALUES ('integrity-check')", [])
            .expect("the index matches its content");
    }
}
