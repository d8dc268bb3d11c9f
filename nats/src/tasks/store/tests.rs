use super::*;
use agora_core::Report;

fn new_task(id: u64, client_id: Option<&str>) -> NewTask<'_> {
    NewTask {
        id,
        owner: "alice",
        client_id,
        op: "sum",
        args: r#"{"numbers":[1]}"#,
        priority: "normal",
        submitted_ms: id,
        run_at_ms: None,
        held: false,
        schedule: None,
        ttl_ms: None,
        workflow: None,
    }
}

#[test]
fn tasks_round_trip_and_list_newest_first() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut conn = open(dir.path()).expect("open");
    let store = conn.transaction().unwrap();
    for id in 1..=5 {
        insert(&store, &new_task(id, Some(&format!("c{id}")))).unwrap();
    }
    let mut life = Lifecycle::new();
    life.apply(9, Report::Claim { worker: "w".into() }).unwrap();
    life.apply(10, Report::Complete { worker: "w".into() }).unwrap();
    update(&store, 2, &life, Some(r#"{"value":1}"#)).unwrap();
    append_event(&store, 2, 0, r#"{"event":"queued"}"#).unwrap();
    append_event(&store, 2, 1, r#"{"event":"completed"}"#).unwrap();
    store.commit().unwrap();
    let store = &conn;

    let task = get(store, 2, true).unwrap().expect("exists");
    assert_eq!(task.lifecycle, life);
    assert_eq!(task.result.as_deref(), Some(r#"{"value":1}"#));
    assert_eq!(history(store, 2).unwrap().len(), 2);
    assert_eq!(by_client_id(store, "alice", "c3").unwrap().map(|t| t.id), Some(3));
    assert!(by_client_id(store, "bob", "c3").unwrap().is_none(), "one per owner");
    assert!(by_client_id(store, "alice", "nope").unwrap().is_none());

    let ids = |filter: &ListFilter| {
        list(store, filter).unwrap().into_iter().map(|t| t.id).collect::<Vec<_>>()
    };
    assert_eq!(ids(&ListFilter { limit: 3, ..Default::default() }), [5, 4, 3]);
    assert_eq!(ids(&ListFilter { limit: 9, before: Some(3), ..Default::default() }), [2, 1]);
    let completed =
        ListFilter { limit: 9, state: Some(TaskState::Completed), ..Default::default() };
    assert_eq!(ids(&completed), [2]);
    let by_op = ListFilter { limit: 9, op: Some("max".into()), ..Default::default() };
    assert!(ids(&by_op).is_empty());
    let mine = ListFilter { limit: 2, owner: Some("alice".into()), ..Default::default() };
    assert_eq!(ids(&mine), [5, 4]);
    let theirs = ListFilter { limit: 9, owner: Some("bob".into()), ..Default::default() };
    assert!(ids(&theirs).is_empty());
    assert_eq!(active(store).unwrap().len(), 4);
    assert_eq!(max_id(store).unwrap(), 5);

    // Only finished tasks are pruned.
    assert_eq!(prune(store, 0, u64::MAX, 0, 100).unwrap(), 1);
    assert!(get(store, 2, false).unwrap().is_none());
    assert!(history(store, 2).unwrap().is_empty());
    assert_eq!(active(store).unwrap().len(), 4);
}

#[test]
fn client_ids_are_unique_per_owner() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path()).expect("open");
    insert(&store, &new_task(1, Some("same"))).unwrap();
    assert!(insert(&store, &new_task(2, Some("same"))).is_err());
    insert(&store, &NewTask { owner: "bob", ..new_task(5, Some("same")) }).unwrap();
    insert(&store, &new_task(3, None)).unwrap();
    insert(&store, &new_task(4, None)).unwrap();
    // A corrupt value is an error, never read as something else.
    store.execute("UPDATE tasks SET state = 'weird' WHERE id = 3", []).unwrap();
    assert!(get(&store, 3, false).is_err());
    store.execute("UPDATE tasks SET state = 'queued', submitted_ms = -5 WHERE id = 3", []).unwrap();
    assert!(get(&store, 3, false).is_err());
}

#[test]
fn the_tasks_of_before_owners_get_the_services_owner() {
    let dir = tempfile::tempdir().expect("tempdir");
    let old =
        crate::sqlite::open_wal(dir.path(), DATABASE_FILE, PAGE_CACHE_BYTES_MAX, &[MIGRATION_1])
            .unwrap();
    old.execute(
        "INSERT INTO tasks (id, client_id, op, args, priority, state, submitted_ms) \
             VALUES (7, 'c', 'sum', '{}', 'normal', 'queued', 1)",
        [],
    )
    .unwrap();
    drop(old);
    let store = open(dir.path()).expect("migrated");
    let task = get(&store, 7, false).unwrap().expect("kept");
    assert_eq!((task.owner.as_str(), task.client_id.as_deref()), ("_agora", Some("c")));
    assert_eq!(active(&store).unwrap().len(), 1);
}

#[test]
fn schedules_round_trip() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path()).expect("open");
    let row = ScheduleRow {
        owner: "alice".into(),
        name: "nightly".into(),
        spec: "0 0 3 * * *".into(),
        time_zone: Some("Europe/Amsterdam".into()),
        op: "sum".into(),
        args: r#"{"numbers":[1]}"#.into(),
        priority: "normal".into(),
        paused: false,
        created_ms: 5,
        updated_ms: 5,
        runs: 0,
        last_run_ms: None,
        last_task: None,
        next_run_ms: None,
    };
    put_schedule(&store, &row).unwrap();
    assert_eq!(schedule(&store, "alice", "nightly").unwrap().as_ref(), Some(&row));
    record_run(&store, "alice", "nightly", 9, 42, Some(99)).unwrap();
    let replaced = ScheduleRow { spec: "@every 60s".into(), created_ms: 7, updated_ms: 7, ..row };
    put_schedule(&store, &replaced).unwrap();
    let stored = schedule(&store, "alice", "nightly").unwrap().unwrap();
    assert_eq!((stored.created_ms, stored.updated_ms, stored.runs), (5, 7, 1), "runs are kept");
    assert_eq!(
        (stored.last_task, stored.next_run_ms, stored.spec.as_str()),
        (Some(42), None, "@every 60s")
    );
    put_schedule(&store, &ScheduleRow { owner: "bob".into(), ..replaced }).unwrap();
    assert_eq!(schedule_counts(&store, "alice").unwrap(), (1, 2));
    set_paused(&store, "alice", "nightly", true, 8).unwrap();
    assert!(schedule(&store, "alice", "nightly").unwrap().unwrap().paused);
    assert_eq!(schedules(&store, None, 10).unwrap().len(), 2);
    assert_eq!(schedules(&store, Some("bob"), 10).unwrap()[0].owner, "bob");
    delete_schedule(&store, "alice", "nightly").unwrap();
    assert_eq!(schedule_counts(&store, "alice").unwrap(), (0, 1));
}
