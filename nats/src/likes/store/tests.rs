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
        let page =
            page(store, &origins, &theirs, cursor.as_ref().map(|(o, b)| (o, *b)), 1).expect("page");
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
