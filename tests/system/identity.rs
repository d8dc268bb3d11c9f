//! Identity, tried as an attacker would: nats-server runs the auth config, people sign in
//! through the auth callout, and each test takes someone else's identity at one door (NATS
//! subjects, replies and inboxes, tokens, HTTP routes, pages of other sites) and proves the
//! door holds with a clear coded error while the owner's own operations go on, and that
//! nothing changed.

use std::io::{Read, Write};
use std::time::Duration;

use agora_nats::chat::client::ChatSession;
use agora_nats::chat::wire::{HistoryRequest, SendRequest};
use agora_nats::connection::{NatsArgs, connect_once};
use agora_nats::subjects;
use agora_nats::tasks::wire::{ListRequest, SubmitRequest};
use agora_nats::{AgoraClient, ErrorCode};
use agora_tests::{System, code, test_password};
use bytes::Bytes;
use futures::StreamExt;
use serde_json::{Value, json};

fn forbidden<T: std::fmt::Debug>(result: Result<T, agora_nats::ClientError>, what: &str) {
    let error = result.expect_err(what);
    assert_eq!(error.code(), ErrorCode::Forbidden, "{what}: {error}");
}

/// Auth, ledger, a bank, coins, chat, tasks with a worker, a likes node, a file server.
fn system() -> System {
    let mut system = System::nats_with_auth();
    system.start_ledger();
    system.add_bank();
    system.start_coins();
    system.start_chat();
    system.start_tasks();
    system.add_worker(&[]);
    system.add_likes(false);
    std::fs::create_dir_all(system.files_root()).expect("served directory");
    system.add_files(&[]);
    system
}

/// Whatever `subscription` received within `window` (none expected).
async fn received(subscription: &mut async_nats::Subscriber, window: Duration) -> Vec<String> {
    let mut got = Vec::new();
    while let Ok(Some(message)) = tokio::time::timeout(window, subscription.next()).await {
        got.push(format!("{}: {}", message.subject, String::from_utf8_lossy(&message.payload)));
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nobody_moves_reads_trades_or_speaks_as_someone_else_over_nats() {
    let system = system();
    let (alice, bob) = (system.person("alice").await, system.person("bob").await);
    let manager = system.manager().await;
    bob.deposit("bob", 100_000_000, Some("b-1")).await.expect("bob's own deposit");
    let bobs_task = bob
        .submit(&SubmitRequest {
            wait_ms: Some(10_000),
            ..SubmitRequest::new("sum", &json!({"numbers": [1]}))
        })
        .await
        .expect("bob's task");
    bob.buy_coins("bob", "BTC", 1, Some("o-1")).await.expect("bob's order");
    let bob_chat = ChatSession::register(bob.clone(), "bob").await.expect("bob chats");
    let bobs_balance = bob.balance("bob").await.expect("his balance").balance;

    // Money: every operation on bob's account, by alice and by a manager.
    for (who, caller) in [("alice", &alice), ("a manager", &manager)] {
        forbidden(
            caller.deposit("bob", 9_000_000_000_000_000_000, None).await,
            &format!("{who} deposits to bob"),
        );
        forbidden(caller.withdraw("bob", 1, None).await, &format!("{who} withdraws from bob"));
        forbidden(caller.transfer("bob", "alice", 1, None).await, &format!("{who} takes from bob"));
    }
    forbidden(alice.balance("bob").await, "alice reads bob's balance");
    assert_eq!(manager.balance("bob").await.expect("a manager reads").balance, bobs_balance);
    // Trades and portfolios.
    forbidden(alice.buy_coins("bob", "BTC", 1, None).await, "alice buys for bob");
    forbidden(alice.sell_coins("bob", "BTC", 1, None).await, "alice sells bob's");
    forbidden(alice.coin_order("bob", "o-1").await, "alice reads bob's order");
    forbidden(alice.portfolio("bob").await, "alice reads bob's portfolio");
    let history = agora_nats::coins::wire::CoinsHistoryRequest {
        user: Some("bob".into()),
        ..Default::default()
    };
    forbidden(alice.coin_history(&history).await, "alice reads bob's trades");
    let mine = alice.coin_history(&Default::default()).await.expect("her own history");
    assert!(mine.orders.is_empty(), "alice's history has none of bob's orders: {mine:?}");
    // Tasks.
    forbidden(alice.task(&bobs_task.id).await, "alice reads bob's task");
    forbidden(alice.cancel_task(&bobs_task.id).await, "alice cancels bob's task");
    forbidden(alice.wait_task(&bobs_task.id, 10).await, "alice waits on bob's task");
    let listed = alice.tasks(&ListRequest::default()).await.expect("her list");
    assert!(listed.tasks.is_empty(), "alice lists none of bob's tasks: {listed:?}");
    assert_eq!(
        manager.task(&bobs_task.id).await.expect("a manager reads").owner.as_deref(),
        Some("bob")
    );
    forbidden(manager.cancel_task(&bobs_task.id).await, "a manager cancels bob's task");
    // Likes.
    forbidden(alice.like("post", Some("bob")).await, "alice likes as bob");
    forbidden(alice.unlike("post", Some("bob")).await, "alice unlikes as bob");
    // Chat: her name only, his conversations never.
    forbidden(alice.chat_register("bob", None).await, "alice registers as bob");
    let session = bob_chat.registration().session.clone();
    let beat = agora_nats::chat::wire::SessionRequest { name: "bob".into(), session };
    forbidden(
        alice.request::<_, Value>(subjects::chat::LEAVE_SUBJECT, &beat).await,
        "alice ends bob's session",
    );
    let as_bob = SendRequest {
        room: Some("all".into()),
        to: None,
        id: "x".into(),
        from: Some("bob".into()),
        text: "i am bob".into(),
        at: None,
        reply_to: None,
    };
    forbidden(alice.chat_send(&as_bob).await, "alice speaks as bob");
    for request in [
        HistoryRequest { as_user: Some("bob".into()), ..Default::default() },
        HistoryRequest {
            with: Some("carol".into()),
            as_user: Some("bob".into()),
            ..Default::default()
        },
    ] {
        forbidden(alice.chat_history(&request).await, "alice reads bob's messages");
    }
    // Forged identity headers are not believed: the server stamps who asked.
    for (name, value) in [
        ("Nats-Request-Info", r#"{"acc":"USERS","user":"bob"}"#),
        ("Nats-Request-Info", r#"{"acc":"AGORA"}"#),
        ("Agora-User", "bob"),
        ("Agora-Role", "manager"),
    ] {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(name, value);
        let reply = alice
            .request_with_headers(
                subjects::auth::WHOAMI_SUBJECT,
                headers.clone(),
                Bytes::from_static(b"{}"),
            )
            .await
            .expect("whoami");
        let me: Value = serde_json::from_slice(&reply).expect("JSON");
        assert_eq!(
            (me["name"].as_str(), me["role"].as_str()),
            (Some("alice"), Some("user")),
            "{name}: {me}"
        );
        let body = Bytes::from_static(br#"{"account":"bob","amount":1}"#);
        let stolen =
            alice.request_with_headers(subjects::bank::WITHDRAW_SUBJECT, headers, body).await;
        forbidden(stolen, &format!("a withdrawal with {name}: {value}"));
    }

    // Nothing of it happened; the owners' own operations go on.
    assert_eq!(bob.balance("bob").await.expect("his balance").balance, bobs_balance);
    assert_eq!(bob.task(&bobs_task.id).await.expect("his task").state, "completed");
    bob_chat.say("all", "still me").await.expect("bob still chats");
    alice.deposit("alice", 5, None).await.expect("alice's own deposit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nobody_reads_anothers_messages_replies_or_events() {
    let system = system();
    let (alice, bob, carol) =
        (system.person("alice").await, system.person("bob").await, system.person("carol").await);
    let bob_chat = ChatSession::register(bob.clone(), "bob").await.expect("bob chats");
    ChatSession::register(carol.clone(), "carol").await.expect("carol chats");
    ChatSession::register(alice.clone(), "alice").await.expect("alice chats");

    // Alice tries to listen to everything that is not hers.
    let wiretaps = [
        "agora.chat.dm.*",
        "agora.chat.dm.bob",
        "agora.chat.dm.carol",
        "_INBOX.>",
        "_INBOX.bob.>",
        "agora.bank.events.*",
        "agora.bank.events.bob",
        "agora.tasks.events.>",
        "agora.tasks.events.bob.*",
        "agora.logs.>",
        "agora.ledger.>",
        "$SYS.REQ.USER.AUTH",
        ">",
    ];
    let mut taps = Vec::new();
    for subject in wiretaps {
        taps.push((subject, alice.nats().subscribe(subject).await.expect("the client sends it")));
    }
    agora_nats::client::barrier(alice.nats()).await.expect("barrier");

    // Bob and carol go about their business: a DM, money, a task, a token.
    bob_chat.dm("carol", "a secret").await.expect("recorded");
    bob.deposit("bob", 100, None).await.expect("deposit");
    bob.submit(&SubmitRequest {
        wait_ms: Some(10_000),
        ..SubmitRequest::new("sum", &json!({"numbers": [2]}))
    })
    .await
    .expect("task");
    let token = bob.new_token(None).await.expect("bob's token");
    for (subject, tap) in &mut taps {
        let got = received(tap, Duration::from_millis(300)).await;
        assert!(got.is_empty(), "alice's tap on {subject} heard: {got:?}");
    }
    // Alice's refused subscriptions fail no request of bob's, even at the same moment in the
    // same process, nor her own requests (each connection keeps what the server refused it).
    for _ in 0..20 {
        let (tap, balance) =
            tokio::join!(alice.nats().subscribe("_INBOX.bob.>"), bob.balance("bob"));
        drop(tap);
        balance.expect("bob's request is not failed by alice's refused subscription");
    }
    alice.balance("alice").await.expect("alice's own requests still work");
    // The server refused each subscription, and says so.
    let log = std::fs::read_to_string(system.nats.log()).expect("the server's log");
    for subject in ["agora.chat.dm.*", "_INBOX.>", "agora.bank.events.bob"] {
        assert!(
            log.contains(&format!(
                "Subscription Violation - User \"alice\", Subject \"{subject}\""
            )) || log.contains(&format!("\"{subject}\"")),
            "the server logs the refused {subject}"
        );
    }
    // Carol, the recipient, got it; history has it for its two parties only.
    let request = HistoryRequest {
        with: Some("bob".into()),
        as_user: Some("carol".into()),
        ..Default::default()
    };
    let history = carol.chat_history(&request).await.expect("her conversation");
    assert_eq!(history.messages[0].text, "a secret");
    let request = HistoryRequest { as_user: Some("alice".into()), ..Default::default() };
    let hers = alice.chat_history(&request).await.expect("what alice could see");
    assert!(hers.messages.iter().all(|m| m.text != "a secret"), "{hers:?}");
    // Bob's token still works for bob only (alice never saw it).
    let args = NatsArgs::token(system.url(), "bob", &token.token);
    let again = connect_once(&args, Duration::from_secs(3), |o| o).await.expect("bob's token");
    let again = AgoraClient::new(again);
    assert_eq!(again.whoami().await.expect("whoami").name.as_deref(), Some("bob"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_cannot_be_aimed_at_an_internal_subject() {
    let system = system();
    let (alice, bob) = (system.person("alice").await, system.person("bob").await);
    // Inside Agora's account, what listens on the ledger's subjects and the bank's events.
    let ledger = system.client_as("ledger").await.expect("the ledger's user");
    // (Only the subjects aimed at: alice's balance requests make ledger reads of their own.)
    let mut ledger_tap =
        ledger.nats().subscribe("agora.ledger.set.alice").await.expect("subscribes");
    let mut commit_tap =
        ledger.nats().subscribe("agora.ledger.batch.commit").await.expect("subscribes");
    let gateway = system.client_as("gateway").await.expect("the gateway's user");
    let mut events_tap = gateway.nats().subscribe("agora.bank.events.>").await.expect("subscribes");
    let mut bobs_events = bob.nats().subscribe("agora.bank.events.bob").await.expect("his");
    for client in [&ledger, &gateway, &bob] {
        agora_nats::client::barrier(client.nats()).await.expect("barrier");
    }
    // Alice asks services she may call, with replies aimed at those subjects.
    for (subject, payload) in [
        (subjects::chat::WHO_SUBJECT, "{}"),
        (subjects::bank::BALANCE_SUBJECT, r#"{"account":"alice"}"#),
        (subjects::auth::WHOAMI_SUBJECT, "{}"),
    ] {
        for reply in
            ["agora.ledger.set.alice", "agora.ledger.batch.commit", "agora.bank.events.bob"]
        {
            alice
                .nats()
                .publish_with_reply(subject, reply, Bytes::from(payload))
                .await
                .expect("published");
        }
    }
    alice.nats().flush().await.expect("flushed");
    for (what, tap) in [
        ("the ledger", &mut ledger_tap),
        ("the ledger's commits", &mut commit_tap),
        ("the bank's events", &mut events_tap),
        ("bob's events", &mut bobs_events),
    ] {
        let got = received(tap, Duration::from_millis(500)).await;
        assert!(got.is_empty(), "a reply reached {what}: {got:?}");
    }
    assert_eq!(bob.balance("bob").await.expect("balance").balance, 0, "nothing was written");
    // The real events still reach their owner.
    bob.deposit("bob", 3, None).await.expect("deposit");
    let event = tokio::time::timeout(Duration::from_secs(5), bobs_events.next()).await;
    let event = event.expect("bob's event in time").expect("an event");
    let event: Value = serde_json::from_slice(&event.payload).expect("JSON");
    assert_eq!(
        (event["account"].as_str(), event["amount"].as_i64()),
        (Some("bob"), Some(3)),
        "{event}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_expire_end_at_logout_and_a_password_change_and_cannot_be_replayed() {
    let system = System::nats_with_auth();
    let alice = system.person("alice").await;
    let connect = |token: String| {
        let args = NatsArgs::token(system.url(), "alice", &token);
        async move { connect_once(&args, Duration::from_secs(3), |o| o).await.map(AgoraClient::new) }
    };
    // A short token: it works, then the server ends the connection when it expires, and no
    // new connection is let in with it.
    let short = alice.new_token(Some(1_500)).await.expect("a token");
    let session = connect(short.token.clone()).await.expect("a live token");
    assert_eq!(session.whoami().await.expect("whoami").name.as_deref(), Some("alice"));
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert!(session.whoami().await.is_err(), "the expired token's connection is over");
    assert!(connect(short.token.clone()).await.is_err(), "an expired token lets nobody in");
    // Logged out: replaying it fails at once.
    let long = alice.new_token(None).await.expect("a token");
    connect(long.token.clone()).await.expect("works before logout");
    assert!(alice.logout(&long.token).await.expect("logout").revoked);
    assert!(connect(long.token.clone()).await.is_err(), "a revoked token is refused");
    // Someone else's token cannot be ended by alice.
    let bob = system.person("bob").await;
    let bobs = bob.new_token(None).await.expect("bob's token");
    assert!(!alice.logout(&bobs.token).await.expect("answers").revoked);
    connect(bobs.token.clone()).await.expect("bob's token still works");
    // A new password ends every token, and the old password.
    let kept = alice.new_token(None).await.expect("a token");
    let reply = alice
        .change_password(&test_password("alice"), "a brand new password")
        .await
        .expect("changed");
    assert!(reply.revoked >= 1);
    assert!(connect(kept.token).await.is_err(), "tokens end with the old password");
    assert!(system.client_with("alice", &test_password("alice")).await.is_err());
    system.client_with("alice", "a brand new password").await.expect("the new one works");
    assert_eq!(
        code(alice.change_password("wrong", "another new one").await),
        ErrorCode::Unauthenticated
    );
}

/// One HTTP request written by hand (an attacker's client), and the status of the answer.
async fn raw_http(address: &str, request: &str) -> u16 {
    let address = address.trim_start_matches("http://").to_owned();
    let request = request.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(&address).expect("connects");
        stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        stream.write_all(request.as_bytes()).expect("sends");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).ok();
        answer.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
    })
    .await
    .expect("joined")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_takes_no_forged_request_from_another_site_host_or_session() {
    let mut system = system();
    system.start_gateway_with(&["--header-timeout-ms", "4000", "--connections-max", "16"]);
    let base = system.gateway_url.clone();
    // No idle connections kept: each request's connection is closed after it (the slot
    // test at the end counts connections).
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    system.sign_up("alice").await;
    system.sign_up("bob").await;
    let bob = system.person("bob").await;
    bob.deposit("bob", 700, None).await.expect("bob's money");

    // The original routes need a session, and act on its user's own account only.
    for path in ["/withdrawal/bob/1", "/deposit/bob/1", "/transfer/bob/alice/1"] {
        let response = http.post(format!("{base}{path}")).send().await.expect("answers");
        assert_eq!(response.status(), 401, "{path} without a session");
    }
    // Sign in with the browser's cookie.
    let login = http
        .post(format!("{base}/api/auth/login"))
        .json(&json!({"name": "alice", "password": test_password("alice")}))
        .send()
        .await
        .expect("answers");
    assert_eq!(login.status(), 200);
    let cookie = login.headers()["set-cookie"].to_str().expect("ASCII").to_owned();
    for part in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(part), "{cookie}");
    }
    let session = cookie.split(';').next().expect("name=value").to_owned();
    let token = session.split_once('=').expect("=").1.to_owned();
    assert!(token.len() >= 40, "a long random token: {token}");
    let as_alice = |method: reqwest::Method, path: &str| {
        http.request(method, format!("{base}{path}")).header("cookie", session.clone())
    };
    let response =
        as_alice(reqwest::Method::POST, "/withdrawal/bob/1").send().await.expect("answers");
    assert_eq!(response.status(), 403, "alice takes bob's money over HTTP");
    let response =
        as_alice(reqwest::Method::GET, "/api/chat/history?as=bob").send().await.expect("ok");
    assert_eq!(response.status(), 403, "alice reads bob's messages over HTTP");
    let response = as_alice(reqwest::Method::GET, "/api/logs").send().await.expect("answers");
    assert_eq!(response.status(), 403, "logs are the managers'");

    // Pages of another site: a form, a text/plain POST, a JSON POST from its origin.
    let deposit = format!("{base}/api/bank/deposit");
    let cases = [
        ("application/x-www-form-urlencoded", "account=alice&amount=5", None, 415),
        ("text/plain", r#"{"account":"alice","amount":5}"#, None, 415),
        ("multipart/form-data; boundary=x", "--x--", None, 415),
        (
            "application/json",
            r#"{"account":"alice","amount":5}"#,
            Some("https://evil.example"),
            403,
        ),
        ("application/json", r#"{"account":"alice","amount":5}"#, Some("null"), 403),
    ];
    for (kind, body, origin, status) in cases {
        let mut request = http
            .post(&deposit)
            .header("cookie", session.clone())
            .header("content-type", kind)
            .body(body);
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        let response = request.send().await.expect("answers");
        assert_eq!(response.status(), status, "{kind} from {origin:?}");
    }
    // DNS rebinding: a name this gateway does not answer for.
    let address = base.trim_start_matches("http://");
    let rebound = raw_http(
        address,
        &format!(
            "GET /api/health HTTP/1.1\r\nHost: evil.example:{}\r\nConnection: close\r\n\r\n",
            address.rsplit(':').next().unwrap_or("80")
        ),
    )
    .await;
    assert_eq!(rebound, 403);
    // Its own pages: the same deposit goes through.
    let origin = format!("http://{address}");
    let ok = http
        .post(&deposit)
        .header("cookie", session.clone())
        .header("origin", origin)
        .json(&json!({"account": "alice", "amount": 5}))
        .send()
        .await
        .expect("answers");
    assert_eq!(ok.status(), 200);
    // A made-up or ended session is nobody.
    for forged in ["agora_made-up", "", &token.replace('a', "b")] {
        let response = http
            .get(format!("{base}/api/auth/me"))
            .header("cookie", format!("agora_session={forged}"))
            .send()
            .await
            .expect("ok");
        assert_eq!(response.status(), 401, "{forged}");
    }
    let out = as_alice(reqwest::Method::POST, "/api/auth/logout").send().await.expect("answers");
    assert_eq!(out.status(), 200);
    let replayed = as_alice(reqwest::Method::GET, "/api/auth/me").send().await.expect("answers");
    assert_eq!(replayed.status(), 401, "a session ends at logout");

    // Headers that never end: the connection is closed after the header timeout, and while
    // such connections take every slot, new ones are turned away; the gateway recovers.
    // The shared client goes first: its idle keep-alive connections hold slots of their own.
    drop(http);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let slow: Vec<std::net::TcpStream> = (0..16)
        .map(|_| {
            let mut stream = std::net::TcpStream::connect(address).expect("connects");
            stream
                .write_all(b"GET /api/health HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
                .expect("sends");
            stream
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let fresh = reqwest::Client::builder().pool_max_idle_per_host(0).build().expect("client");
    let refused = tokio::time::timeout(
        Duration::from_secs(2),
        fresh.get(format!("{base}/api/health")).send(),
    )
    .await;
    assert!(
        !matches!(refused, Ok(Ok(ref r)) if r.status() == 200),
        "no slot while all are held: {refused:?}"
    );
    for mut stream in slow {
        stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        let mut rest = Vec::new();
        let started = std::time::Instant::now();
        stream.read_to_end(&mut rest).ok();
        assert!(started.elapsed() < Duration::from_secs(8), "closed after the header timeout");
    }
    let health = fresh.get(format!("{base}/api/health")).send().await.expect("answers again");
    assert_eq!(health.status(), 200);
    assert_eq!(bob.balance("bob").await.expect("balance").balance, 700, "bob's money is untouched");
}
