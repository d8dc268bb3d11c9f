use super::*;

fn id(name: &str) -> AccountId {
    AccountId::parse(name).expect("valid")
}

fn key(name: &str) -> Key {
    (id(name), Asset::money())
}

fn whole(text: &str) -> Record {
    Record { text: text.to_owned(), entries: None }
}

fn posted(posted: i64) -> Balances {
    Balances { posted, ..Balances::default() }
}

#[test]
fn balances_locks_and_records_survive_reopen_and_epochs_increase() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first_epoch = {
        let mut conn = open(dir.path()).expect("open");
        let epoch = bump_boot_epoch(&conn).expect("epoch");
        let mut operations = Operations::load(&conn).expect("index");
        let tx = conn.transaction().expect("begin");
        set_balances(&tx, &key("alice"), &posted(500)).expect("write");
        let set = LockSetRow {
            set_id: 3,
            owner: "bank-1".into(),
            expires_at_ms: 99,
            grants: vec![(id("alice"), 7), (id("bob"), 8)],
        };
        put_lock_set(&tx, &set).expect("lock");
        assert!(operations.insert(&tx, "op-1", &whole("{}"), 10).expect("record"));
        tx.commit().expect("commit");
        epoch
    };
    let conn = open(dir.path()).expect("reopen");
    assert_eq!(boot_epoch(&conn).expect("epoch"), first_epoch, "the epoch is stored");
    let epoch = bump_boot_epoch(&conn).expect("epoch");
    assert!(first_token(epoch) > first_token(first_epoch), "a new epoch is above");
    assert_eq!(balances(&conn, &key("alice")).map(|b| b.posted).expect("read"), 500);
    assert_eq!(balances(&conn, &key("nobody")).map(|b| b.posted).expect("read"), 0);
    let sets = load_lock_sets(&conn).expect("locks");
    assert_eq!(sets.len(), 1);
    assert_eq!(sets[0].grants, vec![(id("alice"), 7), (id("bob"), 8)]);
    let operations = Operations::load(&conn).expect("index");
    assert_eq!(operations.get(&conn, "op-1").expect("read").map(|r| r.text).as_deref(), Some("{}"));
}

#[test]
fn rollback_discards_and_constraints_hold() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut conn = open(dir.path()).expect("open");
    let mut operations = Operations::load(&conn).expect("index");
    {
        let tx = conn.transaction().expect("begin");
        set_balances(&tx, &key("a"), &posted(5)).expect("write");
        // Dropped: rolled back.
    }
    assert_eq!(balances(&conn, &key("a")).map(|b| b.posted).expect("read"), 0);
    assert!(set_balances(&conn, &key("a"), &posted(-1)).is_err(), "CHECK (balance >= 0)");
    assert!(operations.insert(&conn, "x", &whole("{}"), 1).expect("first"));
    assert!(
        !operations.insert(&conn, "x", &whole("{\"a\":1}"), 2).expect("taken"),
        "ids are unique"
    );
    assert_eq!(operations.get(&conn, "x").expect("read").map(|r| r.text).as_deref(), Some("{}"));
    assert!(operations.contains(&conn, "x").expect("read"));
    assert!(!operations.contains(&conn, "y").expect("read"));
    {
        let tx = conn.transaction().expect("begin");
        assert!(operations.insert(&tx, "y", &whole("{}"), 1).expect("new"));
    }
    // The row is gone with the rollback: the stored id check finds nothing, and a reload
    // forgets it too.
    assert!(!operations.contains(&conn, "y").expect("read"));
    let mut operations = Operations::load(&conn).expect("index");
    assert_eq!(operations.len(), 1);
    assert_eq!(operations.prune(&conn, 2, 10, 100).expect("prune by age"), 1);
    assert_eq!(operations.get(&conn, "x").expect("read"), None);
}

#[test]
fn operation_log_is_pruned_oldest_first_by_age_and_count_and_reindexed_on_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let conn = open(dir.path()).expect("open");
        let mut operations = Operations::load(&conn).expect("index");
        for i in 0..10 {
            assert!(
                operations.insert(&conn, &format!("op-{i}"), &whole("{}"), 100 + i).expect("ok")
            );
        }
        assert_eq!(operations.prune(&conn, 0, 7, 100).expect("by count"), 3);
        assert_eq!(operations.len(), 7);
        assert!(!operations.contains(&conn, "op-2").expect("read"));
        assert!(operations.contains(&conn, "op-3").expect("read"));
        assert_eq!(operations.prune(&conn, 105, 100, 1).expect("limited"), 1);
        assert_eq!(operations.prune(&conn, 105, 100, 100).expect("by age"), 1);
        assert_eq!(operations.prune(&conn, 105, 100, 100).expect("nothing due"), 0);
    }
    let conn = open(dir.path()).expect("reopen");
    let operations = Operations::load(&conn).expect("index");
    assert_eq!(operations.len(), 5);
    assert!(operations.contains(&conn, "op-5").expect("read"));
    assert!(!operations.contains(&conn, "op-4").expect("read"));
}

#[test]
fn colliding_hashes_are_told_apart_by_the_stored_id() {
    let mut index = Operations::default();
    index.note("a", 1);
    // Force a collision: a second id filed under the same hash goes to `collided`.
    index.by_hash.insert(id_hash("b"), 1);
    index.note("b", 2);
    assert_eq!(index.collided.get("b"), Some(&2));
    index.forget("b", 2);
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

#[test]
fn pending_transfers_round_trip_and_only_finished_ones_are_pruned_by_index() {
    let dir = tempfile::tempdir().expect("tempdir");
    let conn = open(dir.path()).expect("open");
    let hold = |state| PendingTransfer {
        from: id("a"),
        to: id("b"),
        asset: Asset::money(),
        amount: Amount::parse(5).unwrap(),
        expires_at_ms: 1_000,
        state,
    };
    let (open_id, done_id) =
        (OperationId::parse("open").unwrap(), OperationId::parse("done").unwrap());
    put_pending_transfer(&conn, &open_id, &hold(PendingState::Pending), 10).expect("put");
    put_pending_transfer(&conn, &done_id, &hold(PendingState::Posted(3)), 20).expect("put");
    assert_eq!(
        pending_transfer(&conn, &done_id).expect("read"),
        Some(hold(PendingState::Posted(3)))
    );
    assert_eq!(
        open_pending_transfers(&conn).expect("open ones"),
        vec![(open_id.clone(), hold(PendingState::Pending))]
    );
    let plan: String = conn
        .query_row(
            "EXPLAIN QUERY PLAN SELECT id FROM pending_transfers WHERE finished_at_ms < 5",
            [],
            |row| row.get(3),
        )
        .expect("plan");
    assert!(plan.contains("pending_transfers_finished"), "the sweep scans nothing: {plan}");
    assert_eq!(prune_pending_transfers(&conn, 20, 100).expect("prune"), 0, "not before");
    assert_eq!(prune_pending_transfers(&conn, 21, 100).expect("prune"), 1);
    assert!(pending_transfer(&conn, &done_id).expect("read").is_none());
    assert!(pending_transfer(&conn, &open_id).expect("read").is_some(), "open ones stay");
}

/// An applied operation's record names its history entries instead of repeating them: the
/// entries it names read back in order, with their accounts and assets; a range that does not
/// hold exactly the entries named is corrupt, never short.
#[test]
fn records_refer_to_consecutive_history_entries() {
    use agora_core::ledger::{EntryKind, Posting};
    let dir = tempfile::tempdir().expect("tempdir");
    let conn = open(dir.path()).expect("open");
    let mut operations = Operations::load(&conn).expect("index");
    let posting = |account: &str, kind: EntryKind, amount: i64, balance: i64| Posting {
        account: id(account),
        asset: Asset::money(),
        kind,
        amount,
        balances: posted(balance),
    };
    let first =
        insert_entry(&conn, &posting("ann", EntryKind::Deposit, 10, 10), None, 5).expect("entry");
    let out = posting("ann", EntryKind::TransferOut, 4, 6);
    let transfer = [out, posting("bob", EntryKind::TransferIn, 4, 4)];
    let seqs: Vec<u64> =
        transfer.iter().map(|p| insert_entry(&conn, p, Some("t-1"), 7).expect("entry")).collect();
    assert_eq!(seqs, vec![first + 1, first + 2], "entries are consecutive");
    let record = Record { text: r#"{"op":"transfer"}"#.into(), entries: Some((seqs[0], 2)) };
    assert!(operations.insert(&conn, "t-1", &record, 7).expect("record"));
    let operations = Operations::load(&conn).expect("reindexed");
    assert_eq!(operations.get(&conn, "t-1").expect("read"), Some(record));
    let rows = entries(&conn, seqs[0], 2).expect("entries");
    let read: Vec<String> = rows
        .iter()
        .map(|(account, asset, row)| {
            let (kind, amount, balance) = (&row.kind, row.amount, row.balances.posted);
            format!("{account} {asset} {kind} {amount} {balance} {:?} {}", row.id, row.at_ms)
        })
        .collect();
    assert_eq!(
        read,
        vec![
            r#"ann money transfer_out 4 6 Some("t-1") 7"#,
            r#"bob money transfer_in 4 4 Some("t-1") 7"#,
        ]
    );
    assert!(matches!(entries(&conn, seqs[0], 3), Err(StoreError::Corrupt(_))), "one missing");
    assert_eq!(entries(&conn, first, 0).expect("none").len(), 0);
}
