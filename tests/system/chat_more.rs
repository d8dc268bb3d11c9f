//! What chat users expect after sending: edits and deletes (earlier texts kept), reactions,
//! threads, read receipts, typing, unread counts and search, each through the caller's own
//! identity, converging on every client and in history after a `kill -9`.

use std::time::Duration;

use agora_nats::chat::client::ChatSession;
use agora_nats::chat::wire::{ChatUpdate, HistoryRequest, SearchRequest, StoredMessage};
use agora_nats::subjects::chat as subject;
use agora_nats::{AgoraClient, ErrorCode};
use agora_tests::{System, code, eventually};
use futures::StreamExt;

/// Collects the updates a subscription receives for `within`.
async fn updates(mut subscription: async_nats::Subscriber, within: Duration) -> Vec<ChatUpdate> {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    while let Ok(Some(message)) = tokio::time::timeout_at(deadline, subscription.next()).await {
        seen.push(serde_json::from_slice(&message.payload).expect("an update"));
    }
    seen
}

async fn room_history(client: &AgoraClient, room: &str) -> Vec<StoredMessage> {
    let request =
        HistoryRequest { room: Some(room.into()), limit: Some(500), ..Default::default() };
    client.chat_history(&request).await.expect("history").messages
}

async fn people(system: &System, names: &[&str]) -> Vec<(AgoraClient, ChatSession)> {
    let mut people = Vec::new();
    for name in names {
        let client = system.person(name).await;
        let session = ChatSession::register(client.clone(), name).await.expect("registers");
        people.push((client, session));
    }
    people
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_reactions_and_threads_converge_on_every_client_and_survive_a_kill() {
    let mut system = System::nats_with_auth();
    system.start_chat();
    let people = people(&system, &["alice", "bob", "carol"]).await;
    let [(alice, alice_chat), (bob, bob_chat), (carol, _)] = &people[..] else { unreachable!() };
    // Every client watches the room's updates.
    let mut watchers = Vec::new();
    for (client, _) in &people {
        let subscription = client.nats().subscribe(subject::events_room("all")).await.expect("sub");
        client.nats().flush().await.expect("flush");
        watchers.push(tokio::spawn(updates(subscription, Duration::from_secs(6))));
    }

    let first = alice_chat.say("all", "lunch at noon?").await.expect("sent").seq;
    let second = alice_chat.say("all", "oops, wrong room").await.expect("sent").seq;
    let edited = alice.chat_edit(first, "lunch at one?").await.expect("her edit");
    assert_eq!(edited.text, "lunch at one?");
    assert!(edited.edited_ms.is_some());
    bob.chat_react(first, "👍", true).await.expect("bob reacts");
    carol.chat_react(first, "👍", true).await.expect("carol reacts");
    carol.chat_react(first, "🎉", true).await.expect("carol reacts again");
    let again = carol.chat_react(first, "🎉", true).await.expect("the same reaction twice");
    assert_eq!(again.reactions["🎉"], ["carol"], "counted once");
    let mut reply = bob_chat.message(Some("all"), None, "one works");
    reply.reply_to = Some(first);
    let reply_seq = bob.chat_send(&reply).await.expect("a reply").seq;
    alice.chat_delete(second).await.expect("her delete");

    // Only the author edits or deletes; a reaction is the caller's own.
    assert_eq!(code(bob.chat_edit(first, "mine now").await), ErrorCode::Forbidden);
    assert_eq!(code(bob.chat_delete(first).await), ErrorCode::Forbidden);
    assert_eq!(code(alice.chat_edit(second, "back").await), ErrorCode::Conflict, "deleted");
    assert_eq!(code(bob.chat_react(9_999, "👍", true).await), ErrorCode::NotFound);
    for bad in ["", "two words", "\u{1b}[2J"] {
        assert_eq!(code(bob.chat_react(first, bad, true).await), ErrorCode::InvalidRequest);
    }
    let mut nested = bob_chat.message(Some("all"), None, "threads are one level");
    nested.reply_to = Some(reply_seq);
    assert_eq!(code(bob.chat_send(&nested).await), ErrorCode::InvalidRequest);
    let mut elsewhere = bob_chat.message(None, Some("alice"), "not in that room");
    elsewhere.reply_to = Some(first);
    assert_eq!(code(bob.chat_send(&elsewhere).await), ErrorCode::InvalidRequest);

    // Every client saw the same updates, in the same order.
    let mut seen = Vec::new();
    for watcher in watchers {
        let kinds: Vec<(String, Option<u64>, String)> = watcher
            .await
            .expect("joined")
            .into_iter()
            .map(|u| (u.kind, u.seq, u.emoji.or(u.text).unwrap_or_default()))
            .collect();
        seen.push(kinds);
    }
    let expected = vec![
        ("edit".to_owned(), Some(first), "lunch at one?".to_owned()),
        ("reaction".to_owned(), Some(first), "👍".to_owned()),
        ("reaction".to_owned(), Some(first), "👍".to_owned()),
        ("reaction".to_owned(), Some(first), "🎉".to_owned()),
        ("reply".to_owned(), Some(first), String::new()),
        ("delete".to_owned(), Some(second), String::new()),
    ];
    for kinds in &seen {
        assert_eq!(kinds, &expected);
    }

    // kill -9: history has all of it.
    system.kill_chat();
    system.start_chat();
    let history = eventually(Duration::from_secs(20), Duration::from_millis(100), async || {
        let request =
            HistoryRequest { room: Some("all".into()), limit: Some(50), ..Default::default() };
        bob.chat_history(&request).await.map(|reply| reply.messages).map_err(|e| e.to_string())
    })
    .await;
    let message = |seq| history.iter().find(|m| m.seq == seq).cloned().expect("in history");
    let lunch = message(first);
    assert_eq!(lunch.text, "lunch at one?");
    assert!(lunch.edited_ms.is_some());
    assert_eq!(lunch.reactions["👍"], ["bob", "carol"]);
    assert_eq!(lunch.reactions["🎉"], ["carol"]);
    assert_eq!(lunch.replies, 1);
    let gone = message(second);
    assert!(gone.deleted && gone.text.is_empty(), "{gone:?}");
    assert_eq!(message(reply_seq).reply_to, Some(first));
    let thread = HistoryRequest { thread: Some(first), ..Default::default() };
    let thread = carol.chat_history(&thread).await.expect("the thread").messages;
    assert_eq!(thread.iter().map(|m| m.seq).collect::<Vec<_>>(), [reply_seq]);
    let versions = carol.chat_edits(first).await.expect("earlier texts").versions;
    assert_eq!(versions.iter().map(|v| v.text.as_str()).collect::<Vec<_>>(), ["lunch at noon?"]);
    assert!(carol.chat_edits(second).await.expect("none kept").versions.is_empty());
    // A reaction taken back is gone.
    let back = bob.chat_react(first, "👍", false).await.expect("taken back");
    assert_eq!(back.reactions["👍"], ["carol"]);
    assert_eq!(room_history(bob, "all").await.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_finds_only_what_the_caller_may_read_with_paging_and_highlights() {
    let system = System::nats_with_auth();
    let mut system = system;
    system.start_chat();
    let people = people(&system, &["alice", "bob", "carol", "dave"]).await;
    let [(alice, alice_chat), (bob, bob_chat), (carol, carol_chat), _] = &people[..] else {
        unreachable!()
    };
    alice_chat.dm("bob", "the secret banana plan").await.expect("sent");
    carol_chat.dm("dave", "banana bread for dave only").await.expect("sent");
    bob_chat.say("all", "Banana split, anyone?").await.expect("sent");
    let old = bob_chat.say("all", "a banana that gets edited").await.expect("sent").seq;
    bob.chat_edit(old, "an apple now").await.expect("edited");
    let doomed = bob_chat.say("all", "banana to delete").await.expect("sent").seq;
    bob.chat_delete(doomed).await.expect("deleted");

    let search = |query: &str| SearchRequest {
        query: query.to_owned(),
        room: None,
        with: None,
        before: None,
        limit: None,
    };
    let found = bob.chat_search(&search("banana")).await.expect("bob searches");
    let texts: Vec<String> = found.hits.iter().map(|hit| hit.message.text.clone()).collect();
    assert_eq!(texts, ["Banana split, anyone?", "the secret banana plan"], "newest first");
    let marked: Vec<&str> = found.hits[1]
        .highlighted
        .iter()
        .filter(|piece| piece.matched)
        .map(|piece| piece.text.as_str())
        .collect();
    assert_eq!(marked, ["banana"]);
    let whole: String = found.hits[1].highlighted.iter().map(|p| p.text.as_str()).collect();
    assert_eq!(whole, "the secret banana plan");
    // Carol's direct message to dave is not bob's to find, by any road.
    let theirs = SearchRequest { with: Some("dave".into()), ..search("banana") };
    assert!(bob.chat_search(&theirs).await.expect("searches").hits.is_empty());
    let dave = carol.chat_search(&search("bread")).await.expect("carol searches").hits;
    assert_eq!(dave.len(), 1, "carol finds her own");
    assert!(alice.chat_search(&search("bread")).await.expect("searches").hits.is_empty());
    // The edited text is found, not the earlier one; a prefix works.
    assert_eq!(bob.chat_search(&search("appl*")).await.expect("prefix").hits.len(), 1);
    assert!(bob.chat_search(&search("gets edited")).await.expect("old").hits.is_empty());
    // Paging.
    for n in 0..25 {
        alice_chat.say("all", &format!("report number {n} is ready")).await.expect("sent");
    }
    let mut pages = Vec::new();
    let mut before = None;
    loop {
        let request = SearchRequest { before, limit: Some(10), ..search("report ready") };
        let page = alice.chat_search(&request).await.expect("a page");
        pages.push(page.hits.len());
        before = page.hits.last().map(|hit| hit.message.seq);
        if !page.more {
            break;
        }
    }
    assert_eq!(pages, [10, 10, 5]);
    // Bad searches: coded errors.
    for query in ["", "***", "\u{1b}[2J", &"word ".repeat(9)] {
        assert_eq!(code(alice.chat_search(&search(query)).await), ErrorCode::InvalidRequest);
    }
    let limit = SearchRequest { limit: Some(101), ..search("report") };
    assert_eq!(code(alice.chat_search(&limit).await), ErrorCode::InvalidRequest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_and_receipts_are_bounded_per_sender_and_unread_counts_follow_reads() {
    let mut system = System::nats_with_auth();
    system.start_chat();
    let people = people(&system, &["alice", "bob"]).await;
    let [(alice, alice_chat), (bob, _)] = &people[..] else { unreachable!() };
    let typing = bob.nats().subscribe(subject::live_room("all")).await.expect("sub");
    let receipts = bob.nats().subscribe(subject::events_room("all")).await.expect("sub");
    let direct = bob.nats().subscribe(subject::live_dm("bob")).await.expect("sub");
    bob.nats().flush().await.expect("flush");
    let typing = tokio::spawn(updates(typing, Duration::from_secs(4)));
    let receipts = tokio::spawn(updates(receipts, Duration::from_secs(4)));
    let direct = tokio::spawn(updates(direct, Duration::from_secs(4)));

    let mut last = 0;
    for n in 0..5 {
        last = alice_chat.say("all", &format!("message {n}")).await.expect("sent").seq;
    }
    alice_chat.dm("bob", "psst").await.expect("sent");
    // Two seconds of a flood: typing in the room and to bob, reading ever further.
    let started = std::time::Instant::now();
    let mut sent = 0;
    while started.elapsed() < Duration::from_millis(2_500) {
        if alice.chat_typing(Some("all".into()), None).await.expect("typing").sent {
            sent += 1;
        }
        alice.chat_typing(None, Some("bob".into())).await.expect("typing");
        alice.chat_read(Some("all".into()), None, last).await.expect("read");
    }
    assert!((1..=2).contains(&sent), "{sent} typing events in 2.5 s");
    let typing = typing.await.expect("joined");
    assert!((1..=2).contains(&typing.len()), "{typing:?}");
    assert!(typing.iter().all(|u| u.kind == "typing" && u.from == "alice"));
    let direct = direct.await.expect("joined");
    assert!((1..=2).contains(&direct.len()), "{direct:?}");
    assert_eq!(direct[0].with.as_deref(), Some("alice"), "bob sees who is typing to him");
    let receipts: Vec<_> =
        receipts.await.expect("joined").into_iter().filter(|u| u.kind == "read").collect();
    assert_eq!(receipts.len(), 1, "a receipt only when the marker moves: {receipts:?}");
    assert_eq!(receipts[0].seq, Some(last));

    // Unread counts follow what bob read.
    let unread = bob.chat_unread().await.expect("unread").conversations;
    let all = unread.iter().find(|c| c.room.as_deref() == Some("all")).expect("the room");
    assert_eq!((all.unread, all.read_seq), (5, 0));
    let dm = unread.iter().find(|c| c.with.as_deref() == Some("alice")).expect("the dm");
    assert_eq!(dm.unread, 1);
    bob.chat_read(Some("all".into()), None, last).await.expect("read");
    bob.chat_read(None, Some("alice".into()), u64::MAX).await.expect("read, clamped");
    let unread = bob.chat_unread().await.expect("unread").conversations;
    assert!(unread.iter().all(|c| c.unread == 0), "{unread:?}");
    // Identity: nobody reads or types for anyone else; services do not type.
    assert_eq!(code(bob.chat_read(None, Some("nobody".into()), 1).await), ErrorCode::UnknownUser);
    let bad = serde_json::json!({"room": "all", "with": "alice", "seq": 1});
    let reply: Result<serde_json::Value, _> = bob.request(subject::READ_SUBJECT, &bad).await;
    assert_eq!(code(reply), ErrorCode::InvalidRequest);
}
