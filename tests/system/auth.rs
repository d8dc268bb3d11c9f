//! Users and permissions: nats-server runs `nats/config/single-auth.conf` (the users and
//! subject permissions of `auth.conf`), every component logs in as its role. Each role can do
//! its job and nothing it must not: only the bank reaches the ledger, the client role has no
//! manager subjects, and a refused publish reaches the caller as `forbidden`.

use std::process::Command;
use std::time::Duration;

use agora_devtools::process::{NatsServer, NatsServerOptions, component_binary, dev_password};
use agora_nats::chat::client::ChatSession;
use agora_nats::coins::wire::AddAssetRequest;
use agora_nats::subjects;
use agora_nats::tasks::wire::SubmitRequest;
use agora_nats::{AgoraClient, ClientError, ErrorCode};
use agora_tests::{System, code, eventually};
use bytes::Bytes;

/// The whole system under the auth config: ledger, two banks, coins, two file servers, chat,
/// tasks and a worker, two likes nodes, the gateway.
fn system() -> System {
    let mut system = System::nats_with_auth();
    system.start_ledger();
    system.add_bank();
    system.add_bank();
    system.start_coins();
    std::fs::create_dir_all(system.files_root()).expect("served directory");
    std::fs::write(system.files_root().join("readme.txt"), b"hello").expect("a served file");
    system.add_files(&[]);
    system.add_files(&[]);
    system.start_chat();
    system.start_tasks();
    system.add_worker(&[]);
    system.add_likes(false);
    system.add_likes(false);
    system.start_gateway();
    system
}

fn forbidden<T: std::fmt::Debug>(result: Result<T, ClientError>, what: &str) {
    match result {
        Err(ClientError::Service(error)) if error.code == ErrorCode::Forbidden => {
            assert!(error.message.contains("permission"), "{what}: {}", error.message);
        }
        other => panic!("{what} must be refused as forbidden, got {other:?}"),
    }
}

/// Every line of every log that reports a permission violation.
fn violations(system: &System) -> Vec<String> {
    let mut found = Vec::new();
    for dir in [system.dir.path().join("logs"), system.dir.path().join("nats")] {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
            found.extend(
                text.lines()
                    .filter(|line| line.to_lowercase().contains("violation"))
                    .map(|line| format!("{}: {line}", entry.path().display())),
            );
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_role_does_its_job_with_only_its_permissions() {
    let system = system();
    let client = system.client_as("client").await.expect("the client role logs in");
    let manager = system.client_as("manager").await.expect("the manager role logs in");

    // Bank (bank -> ledger), with its events fanned out to clients.
    let mut events = client
        .nats()
        .subscribe(subjects::bank::EVENTS_ALL)
        .await
        .expect("clients may watch balances");
    agora_nats::client::barrier(client.nats()).await.expect("barrier");
    client.deposit("alice", 1_000, Some("d-1")).await.expect("deposit");
    client.transfer("alice", "bob", 300, Some("t-1")).await.expect("transfer");
    assert_eq!(client.balance("bob").await.expect("balance").balance, 300);
    let event = tokio::time::timeout(Duration::from_secs(5), futures::StreamExt::next(&mut events))
        .await
        .expect("a bank event arrives");
    assert!(event.is_some());

    // Coins: the manager lists an asset, a client buys with bank money (coins -> bank).
    let asset =
        AddAssetRequest { symbol: "ABC".into(), name: "Abc".into(), price: 100, quantity: 5 };
    manager.add_asset(&asset).await.expect("the manager lists an asset");
    let order = client.buy_coins("alice", "ABC", 2, Some("o-1")).await.expect("bought");
    assert_eq!(order.state, "done");
    assert_eq!(client.balance("alice").await.expect("balance").balance, 500);

    // Files: the manager uploads, a client reads from either server.
    manager.put_file("notes/a.txt", Bytes::from_static(b"uploaded")).await.expect("upload");
    let (_, bytes) = client.fetch_file("notes/a.txt").await.expect("download");
    assert_eq!(bytes, b"uploaded");
    let (_, bytes) = client.fetch_file("readme.txt").await.expect("download");
    assert_eq!(bytes, b"hello");

    // Chat: register, join, say, history (the chat service records and publishes presence).
    let ann = ChatSession::register(client.clone(), "ann").await.expect("registers");
    ann.join("lobby").await.expect("joins");
    ann.say("lobby", "hi all").await.expect("recorded");

    // Tasks: submitted by a client, run by a worker through the JetStream work queue.
    let request = SubmitRequest {
        id: Some("task-1".into()),
        wait_ms: Some(10_000),
        ..SubmitRequest::new("sleep", &serde_json::json!({"ms": 10}))
    };
    let task = client.submit(&request).await.expect("submitted");
    let task = client.wait_task(&task.id, 10_000).await.expect("waited");
    assert_eq!(task.state, "completed", "{task:?}");

    // Likes: two nodes take likes, share them, elect a leader through the KV bucket.
    for user in ["u1", "u2", "u3"] {
        client.like("post-1", Some(user)).await.expect("like");
    }
    eventually(Duration::from_secs(20), Duration::from_millis(200), async || {
        let digests = client
            .likes_digests(Duration::from_millis(500), &["post-1".to_owned()], Some(2))
            .await
            .map_err(|e| e.to_string())?;
        let agreed =
            digests.len() == 2 && digests.iter().all(|d| d.counts.get("post-1") == Some(&3));
        let leader = client.like_nodes().await.is_ok();
        if agreed && leader { Ok(()) } else { Err(format!("likes nodes agree: {digests:?}")) }
    })
    .await;

    // The gateway, as its own user, answers over HTTP and sees every service instance.
    let get = |path: &str| {
        let url = format!("{}{path}", system.gateway_url);
        async move {
            let response = reqwest::get(&url).await.expect("gateway answers");
            response.json::<serde_json::Value>().await.expect("JSON")
        }
    };
    assert_eq!(get("/api/bank/balance/bob").await["balance"], 300);
    let services = get("/api/services").await;
    let text = services.to_string();
    for name in ["agora-ledger", "agora-bank", "agora-coins", "agora-files", "agora-chat"] {
        assert!(text.contains(name), "{name} in {text}");
    }

    // And nothing anywhere hit a permission it lacks.
    ann.leave().await.expect("leaves");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let violations = violations(&system);
    assert!(violations.is_empty(), "permission violations:\n{}", violations.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_bank_reaches_the_ledger_and_only_the_manager_administers() {
    let mut system = System::nats_with_auth();
    system.start_ledger();
    system.add_bank();
    system.start_coins();
    std::fs::create_dir_all(system.files_root()).expect("served directory");
    system.add_files(&[]);
    let alice = agora_core::AccountId::parse("alice").expect("an account");
    let ledger_get = subjects::ledger::get(&alice);
    let payload = || Bytes::from_static(b"{}");

    // The bank's own user may call the ledger.
    let bank = system.client_as("bank").await.expect("the bank role logs in");
    bank.request_bytes(&ledger_get, payload()).await.expect("the bank reads the ledger");

    for role in ["client", "manager", "coins", "gateway", "files", "chat", "tasks", "likes"] {
        let caller = system.client_as(role).await.expect("logs in");
        forbidden(caller.request_bytes(&ledger_get, payload()).await, &format!("{role} -> ledger"));
        let lock = subjects::ledger::BATCH_COMMIT_SUBJECT;
        forbidden(caller.request_bytes(lock, payload()).await, &format!("{role} -> commit"));
    }
    let client = system.client_as("client").await.expect("logs in");
    let asset = AddAssetRequest { symbol: "XYZ".into(), name: "Xyz".into(), price: 1, quantity: 1 };
    forbidden(client.add_asset(&asset).await, "client -> coins admin add");
    forbidden(client.remove_asset("XYZ").await, "client -> coins admin remove");
    forbidden(client.put_file("x.txt", Bytes::from_static(b"x")).await, "client -> files put");
    // The refusals changed nothing, and the same client still does its own job.
    let manager = system.client_as("manager").await.expect("logs in");
    assert_eq!(code(manager.remove_asset("XYZ").await), ErrorCode::NotFound);
    assert!(!system.files_root().join("x.txt").exists());
    client.deposit("alice", 10, None).await.expect("a client deposits");
    assert_eq!(client.balance("alice").await.expect("balance").balance, 10);

    // The command-line client shows the refusal as a coded error.
    let password = dev_password("client").expect("a dev password");
    let output = Command::new(component_binary("agora").expect("agora is built"))
        .args(["coins", "admin", "remove", "XYZ"])
        .env("NATS_URL", system.url())
        .env("NATS_USER", "client")
        .env("NATS_PASSWORD", &password)
        .output()
        .expect("agora runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("error [forbidden]"), "{stderr}");
    assert!(stderr.contains("agora.coins.admin.remove"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_an_unknown_user_or_no_credentials_are_refused() {
    let system = System::nats_with_auth();
    for (user, password) in [("client", "wrong"), ("nobody", "whatever"), ("bank", "")] {
        let error = system.client_with(user, password).await.expect_err("refused");
        let text = format!("{error:#}").to_lowercase();
        assert!(text.contains("authorization") || text.contains("auth"), "{user}: {text}");
    }
    let anonymous = async_nats::connect(system.url()).await;
    assert!(anonymous.is_err(), "a connection without credentials is refused");
    // The roles' own passwords work.
    let client: AgoraClient = system.client_as("client").await.expect("the right password works");
    agora_nats::client::barrier(client.nats()).await.expect("connected");

    // A component with a wrong password exits at once and says why (no endless retrying).
    let binary = component_binary("agora-ledger").expect("agora-ledger is built");
    let output = Command::new(binary)
        .args(["--data-dir", &system.dir.path().join("ledger").display().to_string()])
        .env("NATS_URL", system.url())
        .env("NATS_USER", "ledger")
        .env("NATS_PASSWORD", "wrong")
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("refused user ledger"), "{stderr}");

    // nats-server without the auth config (the single-node default) needs no credentials.
    let dir = tempfile::tempdir().expect("dir");
    let open = NatsServer::start(&NatsServerOptions {
        port: None,
        dir: dir.path().to_path_buf(),
        auth: false,
    })
    .expect("starts");
    async_nats::connect(open.url()).await.expect("no credentials needed");
}
