//! Chat: fan-out to the right people in order, presence with real clients coming and going,
//! history across restarts, offline direct messages, dedup, and bad input.

use std::collections::HashMap;
use std::process::Stdio;
use std::time::Duration;

use agora_nats::chat::client::{ChatInbox, ChatSession, Incoming};
use agora_nats::chat::wire::{HistoryRequest, PresenceEvent, SendRequest, WhoRequest};
use agora_nats::subjects::chat as subject;
use agora_nats::{AgoraClient, ErrorCode};
use agora_tests::{System, TEST_PRESENCE_TIMEOUT_MS, code};
use bytes::Bytes;

/// Everything an inbox receives until it has been quiet for `quiet`.
async fn drain(inbox: &mut ChatInbox, quiet: Duration) -> Vec<Incoming> {
    let mut received = Vec::new();
    while let Ok(Some(incoming)) = tokio::time::timeout(quiet, inbox.next()).await {
        received.push(incoming);
    }
    received
}

/// The texts of the room messages in `received`, per room.
fn room_texts(received: &[Incoming]) -> HashMap<String, Vec<String>> {
    let mut rooms: HashMap<String, Vec<String>> = HashMap::new();
    for incoming in received {
        if let Incoming::Room { room, message } = incoming {
            rooms.entry(room.clone()).or_default().push(message.text.clone());
        }
    }
    rooms
}

fn direct_texts(received: &[Incoming]) -> Vec<String> {
    received
        .iter()
        .filter_map(|incoming| match incoming {
            Incoming::Direct { message, .. } => Some(format!("{}:{}", message.from, message.text)),
            _ => None,
        })
        .collect()
}

/// Waits for a presence event of `name` with `event` (and `reason`) on `inbox`.
async fn presence(
    inbox: &mut ChatInbox,
    name: &str,
    event: &str,
    within: Duration,
) -> PresenceEvent {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, inbox.next()).await {
            Ok(Some(Incoming::Presence(seen))) if seen.name == name && seen.event == event => {
                return seen;
            }
            Ok(Some(_)) => {}
            _ => panic!("no {event} event for {name} within {within:?}"),
        }
    }
}

async fn online(client: &AgoraClient) -> Vec<String> {
    let who = client.chat_who(&WhoRequest::default()).await.expect("who");
    who.users.into_iter().filter(|u| u.online).map(|u| u.name).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcasts_reach_everyone_rooms_their_members_dms_their_target_in_sender_order() {
    let system = System::with_chat(&["--rate-per-sec", "10000", "--burst", "10000"]);
    let client = system.client().await;
    let mut sessions = HashMap::new();
    let mut inboxes = HashMap::new();
    for name in ["alice", "bob", "carol"] {
        // Each user has its own connection, like separate processes.
        let own = system.client().await;
        sessions.insert(name, ChatSession::register(own.clone(), name).await.expect("registers"));
        inboxes.insert(name, ChatInbox::open(own.nats(), name, false).await.expect("inbox"));
    }
    for name in ["alice", "bob"] {
        sessions[name].join("rust").await.expect("joins");
        inboxes.get_mut(name).expect("inbox").listen("rust").await.expect("listens");
    }

    // Alice and bob each send 200 broadcast messages back to back, without waiting for
    // acknowledgements (one connection each, so NATS keeps each sender's order, and the chat
    // service records and publishes them in that order).
    const COUNT: usize = 200;
    for name in ["alice", "bob"] {
        let session = &sessions[name];
        for n in 0..COUNT {
            let message = session.message(Some("all"), None, &format!("{name}-{n}"));
            let payload = Bytes::from(serde_json::to_vec(&message).expect("json"));
            session.client().nats().publish(subject::SEND_SUBJECT, payload).await.expect("pub");
        }
        session.client().nats().flush().await.expect("flush");
    }
    sessions["alice"].say("rust", "members only").await.expect("room message recorded");
    let ack = sessions["alice"].dm("carol", "for carol").await.expect("dm recorded");
    assert!(!ack.duplicate);
    sessions["bob"].dm("alice", "for alice").await.expect("dm recorded");

    let mut received = HashMap::new();
    for name in ["alice", "bob", "carol"] {
        let inbox = inboxes.get_mut(name).expect("inbox");
        received.insert(name, drain(inbox, Duration::from_millis(700)).await);
    }
    for name in ["alice", "bob", "carol"] {
        let rooms = room_texts(&received[name]);
        let all = &rooms["all"];
        assert_eq!(all.len(), 2 * COUNT, "{name} gets every broadcast once");
        for sender in ["alice", "bob"] {
            let order: Vec<&String> = all.iter().filter(|t| t.starts_with(sender)).collect();
            let expected: Vec<String> = (0..COUNT).map(|n| format!("{sender}-{n}")).collect();
            assert!(order.iter().zip(&expected).all(|(a, b)| *a == b), "{name}: {sender} in order");
        }
        let in_rust = rooms.get("rust").cloned().unwrap_or_default();
        if name == "carol" {
            assert!(in_rust.is_empty(), "carol is not in #rust");
        } else {
            assert_eq!(in_rust, vec!["members only".to_owned()]);
        }
    }
    assert_eq!(direct_texts(&received["carol"]), vec!["alice:for carol".to_owned()]);
    assert_eq!(direct_texts(&received["alice"]), vec!["bob:for alice".to_owned()]);
    assert!(direct_texts(&received["bob"]).is_empty(), "bob got nobody's direct message");

    // History has every broadcast, in each sender's order (all of them within a second).
    let mut history = Vec::new();
    let mut before = None;
    loop {
        let request = HistoryRequest {
            room: Some("all".into()),
            before,
            limit: Some(500),
            ..HistoryRequest::default()
        };
        let page = client.chat_history(&request).await.expect("history");
        before = page.messages.first().map(|m| m.seq);
        history.splice(0..0, page.messages);
        if !page.more {
            break;
        }
    }
    assert_eq!(history.len(), 2 * COUNT);
    for sender in ["alice", "bob"] {
        let texts: Vec<&str> =
            history.iter().filter(|m| m.from == sender).map(|m| m.text.as_str()).collect();
        let expected: Vec<String> = (0..COUNT).map(|n| format!("{sender}-{n}")).collect();
        assert_eq!(texts, expected.iter().map(String::as_str).collect::<Vec<_>>());
    }
    let lag = history.iter().map(|m| m.recorded_ms.saturating_sub(m.at)).max().unwrap_or(0);
    assert!(lag < 1_000, "history write lag {lag} ms");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_follows_registrations_heartbeats_kills_and_leaves() {
    let system = System::with_chat(&[]);
    let client = system.client().await;
    let mut watcher = ChatInbox::open(client.nats(), "watcher", true).await.expect("inbox");
    let timeout = Duration::from_millis(TEST_PRESENCE_TIMEOUT_MS);

    let alice = ChatSession::register(system.client().await, "alice").await.expect("registers");
    let joined = presence(&mut watcher, "alice", "join", timeout).await;
    assert_eq!(joined.since_ms, Some(alice.registration().since_ms));
    assert!(alice.registration().first);
    assert_eq!(alice.registration().timeout_ms, TEST_PRESENCE_TIMEOUT_MS);
    assert_eq!(
        code(ChatSession::register(system.client().await, "alice").await),
        ErrorCode::NameTaken
    );

    // Heartbeats keep alice online well past the timeout.
    tokio::time::sleep(timeout * 3).await;
    assert_eq!(online(&client).await, vec!["alice".to_owned()]);
    let who = client.chat_who(&WhoRequest::default()).await.expect("who");
    let view = &who.users[0];
    assert_eq!(view.since_ms, Some(alice.registration().since_ms));
    assert!(view.last_seen_ms > alice.registration().since_ms, "heartbeats are seen");

    // A real client process killed with -9 goes offline after the timeout.
    let mut bob = system
        .cli()
        .args(["chat", "--name", "bob"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("agora chat runs");
    presence(&mut watcher, "bob", "join", Duration::from_secs(10)).await;
    assert_eq!(
        code(ChatSession::register(system.client().await, "bob").await),
        ErrorCode::NameTaken
    );
    bob.kill().expect("kill -9");
    bob.wait().ok();
    let left = presence(&mut watcher, "bob", "leave", timeout * 3).await;
    assert_eq!(left.reason.as_deref(), Some("timeout"));
    assert_eq!(online(&client).await, vec!["alice".to_owned()]);
    let bob = ChatSession::register(system.client().await, "bob").await.expect("free again");
    assert!(!bob.registration().first);
    assert!(bob.registration().previous_last_seen_ms.is_some());

    // An explicit leave is immediate.
    alice.leave().await.expect("leaves");
    let left = presence(&mut watcher, "alice", "leave", timeout).await;
    assert_eq!(left.reason.as_deref(), Some("left"));
    assert_eq!(online(&client).await, vec!["bob".to_owned()]);
    let who = client.chat_who(&WhoRequest { room: None, offline: true }).await.expect("who");
    assert_eq!(who.users.len(), 2, "offline names are listed on request");
    ChatSession::register(system.client().await, "alice").await.expect("alice is free again");

    // Rooms: entering and leaving one are presence events too, and `who` filters by room.
    bob.join("rust").await.expect("joins");
    let entered = presence(&mut watcher, "bob", "enter", timeout).await;
    assert_eq!(entered.room.as_deref(), Some("rust"));
    let members = client
        .chat_who(&WhoRequest { room: Some("rust".into()), offline: false })
        .await
        .expect("who");
    assert_eq!(members.users.iter().map(|u| u.name.as_str()).collect::<Vec<_>>(), vec!["bob"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_survives_restarts_offline_dms_wait_and_resends_are_stored_once() {
    let mut system = System::with_chat(&[]);
    let client = system.client().await;
    let alice = ChatSession::register(system.client().await, "alice").await.expect("registers");
    let bob = ChatSession::register(system.client().await, "bob").await.expect("registers");
    bob.join("rust").await.expect("joins");
    alice.say("all", "before bob left").await.expect("recorded");
    bob.leave().await.expect("leaves");

    // While bob is offline: a direct message, a message in his room, a resend.
    let dm = alice.message(None, Some("bob"), "are you there?");
    let first = client.chat_send(&dm).await.expect("recorded");
    let again = client.chat_send(&dm).await.expect("acknowledged");
    assert_eq!((again.seq, again.duplicate), (first.seq, true));
    alice.say("rust", "news in rust").await.expect("recorded");
    alice.say("go", "not bob's room").await.expect("recorded");
    assert_eq!(code(alice.dm("zed", "hello?").await), ErrorCode::UnknownUser);

    // kill -9 the chat service and start it again on the same store.
    system.kill_chat();
    system.start_chat();
    let bob = ChatSession::register(system.client().await, "bob").await.expect("back");
    let missed_after = bob.registration().missed_after.expect("bob was here before");
    assert_eq!(bob.registration().rooms, vec!["rust".to_owned()], "rooms are kept");
    let request = HistoryRequest {
        as_user: Some("bob".into()),
        after: Some(missed_after),
        ..HistoryRequest::default()
    };
    let missed = client.chat_history(&request).await.expect("history");
    let texts: Vec<&str> = missed.messages.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(texts, vec!["are you there?", "news in rust"]);
    assert_eq!(missed.messages[0].to.as_deref(), Some("bob"));

    let request = HistoryRequest {
        with: Some("alice".into()),
        as_user: Some("bob".into()),
        ..HistoryRequest::default()
    };
    let talk = client.chat_history(&request).await.expect("history");
    assert_eq!(talk.messages.len(), 1, "the resend is stored once");
    let request = HistoryRequest { room: Some("all".into()), ..HistoryRequest::default() };
    let all = client.chat_history(&request).await.expect("history");
    assert_eq!(
        all.messages.iter().map(|m| m.text.as_str()).collect::<Vec<_>>(),
        vec!["before bob left"]
    );

    // alice's session survived the restart: the name is still hers.
    assert_eq!(code(client.chat_register("alice", None).await), ErrorCode::NameTaken);
    let mut status = alice.status();
    assert!(tokio::time::timeout(Duration::from_secs(2), status.changed()).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_coded_errors_and_the_service_stays_up() {
    let system = System::with_chat(&["--rate-per-sec", "1", "--burst", "3"]);
    let client = system.client().await;
    let alice = ChatSession::register(system.client().await, "alice").await.expect("registers");
    let session = alice.registration().session.clone();

    let requests: Vec<(&str, String, ErrorCode)> = vec![
        (subject::REGISTER_SUBJECT, "".into(), ErrorCode::InvalidRequest),
        (subject::REGISTER_SUBJECT, "{".into(), ErrorCode::InvalidRequest),
        (subject::REGISTER_SUBJECT, r#"{"name":""}"#.into(), ErrorCode::InvalidRequest),
        (subject::REGISTER_SUBJECT, r#"{"name":"a.b"}"#.into(), ErrorCode::InvalidRequest),
        (
            subject::REGISTER_SUBJECT,
            format!(r#"{{"name":"{}"}}"#, "x".repeat(33)),
            ErrorCode::InvalidRequest,
        ),
        (
            subject::REGISTER_SUBJECT,
            r#"{"name":"bob","extra":1}"#.into(),
            ErrorCode::InvalidRequest,
        ),
        (subject::REGISTER_SUBJECT, r#"{"name":"alice"}"#.into(), ErrorCode::NameTaken),
        (
            subject::HEARTBEAT_SUBJECT,
            r#"{"name":"alice","session":"not-hers-1"}"#.into(),
            ErrorCode::NotRegistered,
        ),
        (
            subject::HEARTBEAT_SUBJECT,
            r#"{"name":"nobody","session":"whatever-1"}"#.into(),
            ErrorCode::UnknownUser,
        ),
        (subject::LEAVE_SUBJECT, r#"{"name":"alice"}"#.into(), ErrorCode::InvalidRequest),
        (
            subject::JOIN_SUBJECT,
            format!(r#"{{"name":"alice","session":"{session}","room":"a b"}}"#),
            ErrorCode::InvalidRequest,
        ),
        (
            subject::PART_SUBJECT,
            format!(r#"{{"name":"alice","session":"{session}","room":"all"}}"#),
            ErrorCode::InvalidRequest,
        ),
        (subject::WHO_SUBJECT, r#"{"room":"*"}"#.into(), ErrorCode::InvalidRequest),
        (subject::HISTORY_SUBJECT, r#"{}"#.into(), ErrorCode::InvalidRequest),
        (
            subject::HISTORY_SUBJECT,
            r#"{"room":"all","limit":100000}"#.into(),
            ErrorCode::InvalidRequest,
        ),
        (subject::HISTORY_SUBJECT, r#"{"with":"zed","as":"alice"}"#.into(), ErrorCode::UnknownUser),
        (subject::HISTORY_SUBJECT, r#"{"as":"zed"}"#.into(), ErrorCode::UnknownUser),
    ];
    for (subject_name, payload, expected) in requests {
        let result = client.request_bytes(subject_name, Bytes::from(payload.clone())).await;
        assert_eq!(code(result), expected, "{subject_name} {payload}");
    }

    // Messages sent with a reply subject get the same kind of answer.
    let send = |subject_name: String, payload: String| {
        let client = client.clone();
        async move { client.request_bytes(&subject_name, Bytes::from(payload)).await }
    };
    let to_send = subject::SEND_SUBJECT.to_owned();
    let messages: Vec<(String, String, ErrorCode)> = vec![
        (to_send.clone(), "not json".into(), ErrorCode::InvalidRequest),
        (
            to_send.clone(),
            r#"{"room":"all","id":"m1","from":"alice","text":""}"#.into(),
            ErrorCode::InvalidRequest,
        ),
        (
            to_send.clone(),
            format!(r#"{{"room":"all","id":"m1","from":"alice","text":"{}"}}"#, "x".repeat(5000)),
            ErrorCode::InvalidRequest,
        ),
        (
            to_send.clone(),
            r#"{"room":"all","id":"m1","from":"alice","text":"\u001b[31mred"}"#.into(),
            ErrorCode::InvalidRequest,
        ),
        (
            to_send.clone(),
            r#"{"room":"all","id":"m1","from":"zed","text":"hi"}"#.into(),
            ErrorCode::UnknownUser,
        ),
        (
            to_send.clone(),
            r#"{"to":"zed","id":"m1","from":"alice","text":"hi"}"#.into(),
            ErrorCode::UnknownUser,
        ),
        (
            to_send.clone(),
            r#"{"to":"a$b","id":"m1","from":"alice","text":"hi"}"#.into(),
            ErrorCode::InvalidRequest,
        ),
        (
            to_send.clone(),
            r#"{"room":"all","to":"bob","id":"m1","from":"alice","text":"hi"}"#.into(),
            ErrorCode::InvalidRequest,
        ),
    ];
    for (subject_name, payload, expected) in messages {
        assert_eq!(
            code(send(subject_name.clone(), payload.clone()).await),
            expected,
            "{subject_name} {payload}"
        );
    }

    // The rate: a burst of 3, then 1 per second; a resend is never refused for the rate.
    let mut acks = Vec::new();
    for n in 0..3 {
        acks.push(alice.say("all", &format!("burst {n}")).await.expect("within the burst"));
    }
    let error = alice.say("all", "one too many").await.expect_err("over the rate");
    assert_eq!(error.code(), ErrorCode::RateLimited);
    assert!(error.to_string().contains("allowed in"), "{error}");
    let resend = SendRequest {
        room: Some("all".into()),
        to: None,
        id: "m-resend".into(),
        from: Some("alice".into()),
        text: "x".into(),
        at: None,
        reply_to: None,
    };
    assert_eq!(code(client.chat_send(&resend).await), ErrorCode::RateLimited);
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let first = client.chat_send(&resend).await.expect("refilled");
    let again = client.chat_send(&resend).await.expect("a resend");
    assert_eq!((again.seq, again.duplicate), (first.seq, true));

    // Nothing refused reached history, and the service still answers.
    let request = HistoryRequest { room: Some("all".into()), ..HistoryRequest::default() };
    let history = client.chat_history(&request).await.expect("history");
    assert_eq!(
        history.messages.iter().map(|m| m.text.as_str()).collect::<Vec<_>>(),
        vec!["burst 0", "burst 1", "burst 2", "x"]
    );
    ChatSession::register(system.client().await, "bob").await.expect("still up");
}
