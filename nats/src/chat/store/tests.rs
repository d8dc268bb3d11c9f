use super::*;

fn message<'a>(
    room: Option<&'a str>,
    to: Option<&'a str>,
    from: &'a str,
    id: &'a str,
) -> NewMessage<'a> {
    NewMessage { room, to, from, id, text: "hi", at_ms: 1, recorded_ms: 2, reply_to: None }
}

#[test]
fn history_pages_by_conversation_and_dedups_by_sender_and_id() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut conn = open(dir.path()).expect("opens");
    let store = conn.transaction().expect("begin");
    let mut seqs = Vec::new();
    for n in 0..5 {
        seqs.push(
            insert(&store, &message(Some("all"), None, "alice", &format!("a{n}")))
                .expect("insert")
                .expect("new"),
        );
    }
    let new = |m: NewMessage<'_>| insert(&store, &m).expect("insert").expect("new");
    let dm = new(message(None, Some("bob"), "alice", "d1"));
    let reply = new(message(None, Some("alice"), "bob", "d1"));
    let other = new(message(None, Some("carol"), "bob", "d2"));
    let rust = new(message(Some("rust"), None, "carol", "r1"));
    store.commit().expect("commit");
    let store = &conn;
    let again = insert(store, &message(Some("all"), None, "alice", "a0")).expect("insert");
    assert_eq!(again, None, "stored once");
    assert_eq!(find(store, "alice", "a3").expect("find"), Some(seqs[3]));
    assert_eq!(find(store, "bob", "a3").expect("find"), None);

    let all = Conversation::Room("all".into());
    let (last, more) = history(store, &all, None, None, 2).expect("reads");
    assert_eq!(last.iter().map(|m| m.seq).collect::<Vec<_>>(), vec![seqs[3], seqs[4]]);
    assert!(more);
    assert_eq!(last[0].room.as_deref(), Some("all"));
    let (page, more) = history(store, &all, Some(seqs[3]), None, 10).expect("reads");
    assert_eq!(page.len(), 3);
    assert!(!more);
    let (since, _) = history(store, &all, None, Some(seqs[1]), 10).expect("reads");
    assert_eq!(since.iter().map(|m| m.seq).collect::<Vec<_>>(), seqs[2..].to_vec());

    let pair = Conversation::Direct("bob".into(), "alice".into());
    let (talk, _) = history(store, &pair, None, None, 10).expect("reads");
    assert_eq!(talk.iter().map(|m| m.seq).collect::<Vec<_>>(), vec![dm, reply]);
    assert_eq!(talk[0].to.as_deref(), Some("bob"));
    assert_eq!(talk[0].room, None);

    let inbox = Conversation::Inbox { name: "bob".into(), rooms: vec![] };
    let (seen, _) = history(store, &inbox, None, Some(seqs[4]), 10).expect("reads");
    assert_eq!(seen.iter().map(|m| m.seq).collect::<Vec<_>>(), vec![dm, reply, other]);
    let inbox = Conversation::Inbox { name: "carol".into(), rooms: vec!["rust".into()] };
    let (seen, _) = history(store, &inbox, None, Some(seqs[4]), 10).expect("reads");
    assert_eq!(seen.iter().map(|m| m.seq).collect::<Vec<_>>(), vec![other, rust]);
}

#[test]
fn users_sessions_and_rooms_round_trip_and_history_is_pruned() {
    let dir = tempfile::tempdir().expect("temp dir");
    {
        let store = open(dir.path()).expect("opens");
        set_online(&store, "alice", "token-a1", 10, 10).expect("online");
        set_online(&store, "bob", "token-b1", 20, 20).expect("online");
        set_offline(&store, "bob", 30, 7).expect("offline");
        set_member(&store, "alice", "rust", true).expect("joins");
        set_member(&store, "alice", "go", true).expect("joins");
        set_member(&store, "alice", "go", false).expect("parts");
        for n in 0..10 {
            insert(&store, &message(Some("all"), None, "alice", &format!("m{n}"))).expect("insert");
        }
    }
    let store = open(dir.path()).expect("reopens");
    let known = users(&store).expect("loads");
    assert_eq!(known.len(), 2);
    assert_eq!(known[0].session, Some(("token-a1".into(), 10)));
    assert_eq!(known[0].rooms, BTreeSet::from(["rust".to_owned()]));
    assert_eq!(
        (known[1].session.clone(), known[1].last_seen_ms, known[1].left_seq),
        (None, 30, Some(7))
    );
    assert_eq!(left_seq(&store, "bob").expect("reads"), Some(7));
    assert_eq!(last_seq(&store).expect("reads"), 10);
    assert_eq!(prune(&store, 4, 3).expect("prunes"), 3);
    assert_eq!(prune(&store, 4, 100).expect("prunes"), 3);
    assert_eq!(prune(&store, 4, 100).expect("prunes"), 0);
    let (left, more) =
        history(&store, &Conversation::Room("all".into()), None, None, 100).expect("reads");
    assert_eq!((left.len(), more, left[0].seq), (4, false, 7));
}
