//! Accounts, users and permissions: nats-server runs `nats/config/single-auth.conf` (the
//! accounts of `accounts.conf`), every component signs in to `AGORA` as its role, and people
//! sign in through the auth callout. Each component and each person can do their job and
//! nothing they must not: only the bank reaches the ledger, only managers administer, and a
//! refused publish reaches the caller as `forbidden`.

use std::process::Command;
use std::time::Duration;

use agora_devtools::process::{NatsServer, NatsServerOptions, component_binary};
use agora_nats::chat::client::ChatSession;
use agora_nats::coins::wire::AddAssetRequest;
use agora_nats::subjects;
use agora_nats::tasks::wire::SubmitRequest;
use agora_nats::{ClientError, ErrorCode};
use agora_tests::{System, TEST_MANAGER, code, eventually, test_password};
use bytes::Bytes;

/// The whole system under the auth config: auth, ledger, two banks, coins, two file servers,
/// chat, tasks and a worker, two likes nodes, the gateway.
pub(crate) fn system() -> System {
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

/// Asserts a refusal by the NATS server's permissions, reported as `forbidden`.
pub fn forbidden<T: std::fmt::Debug>(result: Result<T, ClientError>, what: &str) {
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
async fn every_component_and_person_does_their_job_with_only_their_permissions() {
    let system = system();
    let alice = system.person("alice").await;
    let bob = system.person("bob").await;
    let manager = system.manager().await;
    assert_eq!(manager.whoami().await.expect("whoami").role.as_deref(), Some("manager"));

    // Bank (bank -> ledger), with a person's own events fanned out to them.
    let mut events = alice
        .nats()
        .subscribe(subjects::bank::events(&agora_core::AccountId::parse("alice").unwrap()))
        .await
        .expect("alice may watch her balance");
    agora_nats::client::barrier(alice.nats()).await.expect("barrier");
    alice.deposit("alice", 1_000, Some("d-1")).await.expect("deposit");
    alice.transfer("alice", "bob", 300, Some("t-1")).await.expect("transfer");
    assert_eq!(bob.balance("bob").await.expect("balance").balance, 300);
    let event = tokio::time::timeout(Duration::from_secs(5), futures::StreamExt::next(&mut events))
        .await
        .expect("a bank event arrives");
    assert!(event.is_some());

    // Coins: the manager lists an asset, a person buys it: a linked pair in the ledger
    // (coins -> ledger), and the trade log follows the ledger's events (coins' consumer).
    let asset =
        AddAssetRequest { symbol: "ABC".into(), name: "Abc".into(), price: 100, quantity: 5 };
    manager.add_asset(&asset).await.expect("the manager lists an asset");
    let order = alice.buy_coins("alice", "ABC", 2, Some("o-1")).await.expect("bought");
    assert_eq!(order.state, "done");
    assert_eq!(alice.balance("alice").await.expect("balance").balance, 500);
    assert_eq!(alice.portfolio("alice").await.expect("portfolio").holdings[0].quantity, 2);
    let listed = manager.coin_assets(Some(vec!["ABC".into()])).await.expect("assets");
    assert_eq!(listed.assets[0].available, 3);
    let history = agora_nats::coins::wire::CoinsHistoryRequest::default();
    eventually(Duration::from_secs(10), Duration::from_millis(100), async || {
        let orders = alice.coin_history(&history).await.expect("history").orders;
        if orders.iter().any(|o| o.id == "o-1") { Ok(()) } else { Err("not logged".to_owned()) }
    })
    .await;

    // Files: the manager uploads, a person reads from either server.
    manager.put_file("notes/a.txt", Bytes::from_static(b"uploaded")).await.expect("upload");
    let (_, bytes) = alice.fetch_file("notes/a.txt").await.expect("download");
    assert_eq!(bytes, b"uploaded");
    let (_, bytes) = bob.fetch_file("readme.txt").await.expect("download");
    assert_eq!(bytes, b"hello");
    manager.delete_file("notes/a.txt").await.expect("the manager removes a file");
    assert_eq!(code(alice.fetch_file("notes/a.txt").await), ErrorCode::NotFound);

    // Chat: register, join, say (the chat service records and publishes).
    let ann = ChatSession::register(system.person("ann").await, "ann").await.expect("registers");
    ann.join("lobby").await.expect("joins");
    ann.say("lobby", "hi all").await.expect("recorded");

    // Tasks: submitted by a person, run by a worker through the JetStream work queue.
    let request = SubmitRequest {
        id: Some("task-1".into()),
        wait_ms: Some(10_000),
        ..SubmitRequest::new("sleep", &serde_json::json!({"ms": 10}))
    };
    let task = alice.submit(&request).await.expect("submitted");
    let task = alice.wait_task(&task.id, 10_000).await.expect("waited");
    assert_eq!((task.state.as_str(), task.owner.as_deref()), ("completed", Some("alice")));
    // The manager sees the workers' status: every live worker answers through the import.
    let workers = manager.workers(Duration::from_millis(500)).await.expect("the workers");
    assert_eq!(workers.len(), 1, "{workers:?}");
    assert!(workers[0].done >= 1, "{workers:?}");

    // Likes: two nodes take likes, share them, elect a leader through the KV bucket.
    for person in [&alice, &bob, &manager] {
        person.like("post-1", None).await.expect("like");
    }
    let operator = system.client().await;
    eventually(Duration::from_secs(20), Duration::from_millis(200), async || {
        let digests = operator
            .likes_digests(Duration::from_millis(500), &["post-1".to_owned()], Some(2))
            .await
            .map_err(|e| e.to_string())?;
        let agreed =
            digests.len() == 2 && digests.iter().all(|d| d.counts.get("post-1") == Some(&3));
        let leader = alice.like_nodes().await.is_ok();
        if agreed && leader { Ok(()) } else { Err(format!("likes nodes agree: {digests:?}")) }
    })
    .await;

    // The gateway, as its own component acting for a signed-in manager, sees every instance.
    let token = system.http_token(TEST_MANAGER).await;
    let get = |path: &str| {
        let (url, token) = (format!("{}{path}", system.gateway_url), token.clone());
        async move {
            let response = reqwest::Client::new()
                .get(&url)
                .bearer_auth(token)
                .send()
                .await
                .expect("gateway answers");
            response.json::<serde_json::Value>().await.expect("JSON")
        }
    };
    assert_eq!(get("/api/bank/balance/bob").await["balance"], 300);
    let services = get("/api/services").await;
    let text = services.to_string();
    for name in ["agora-auth", "agora-ledger", "agora-bank", "agora-coins", "agora-files"] {
        assert!(text.contains(name), "{name} in {text}");
    }

    // And nothing anywhere hit a permission it lacks.
    ann.leave().await.expect("leaves");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let violations = violations(&system);
    assert!(violations.is_empty(), "permission violations:\n{}", violations.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_bank_and_the_exchanges_pairs_reach_the_ledger_and_only_managers_administer() {
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

    for role in ["operator", "coins", "gateway", "files", "chat", "tasks", "likes", "auth"] {
        let caller = system.client_as(role).await.expect("logs in");
        forbidden(caller.request_bytes(&ledger_get, payload()).await, &format!("{role} -> ledger"));
        let commit = subjects::ledger::BATCH_COMMIT_SUBJECT;
        forbidden(caller.request_bytes(commit, payload()).await, &format!("{role} -> commit"));
    }
    // The coin exchange applies its linked pairs and reads balances and records; nobody else
    // but the bank does.
    let coins = system.client_as("coins").await.expect("logs in");
    coins.ledger_balances("alice").await.expect("the exchange reads balances");
    let internal = [
        subjects::ledger::APPLY_SUBJECT,
        subjects::ledger::BALANCES_SUBJECT,
        subjects::ledger::SUPPLY_SUBJECT,
        subjects::ledger::OPERATIONS_SUBJECT,
    ];
    for role in ["operator", "gateway", "files", "chat", "tasks", "likes", "auth"] {
        let caller = system.client_as(role).await.expect("logs in");
        for subject in internal {
            forbidden(
                caller.request_bytes(subject, payload()).await,
                &format!("{role} -> {subject}"),
            );
        }
    }
    let person = system.person("alice").await;
    let manager = system.manager().await;
    for (who, caller) in [("a person", &person), ("a manager", &manager)] {
        forbidden(caller.request_bytes(&ledger_get, payload()).await, &format!("{who} -> ledger"));
        for subject in internal {
            let refused = caller.request_bytes(subject, payload()).await;
            forbidden(refused, &format!("{who} -> {subject}"));
        }
    }
    let asset = AddAssetRequest { symbol: "XYZ".into(), name: "Xyz".into(), price: 1, quantity: 1 };
    forbidden(person.add_asset(&asset).await, "a person -> coins admin add");
    forbidden(person.remove_asset("XYZ").await, "a person -> coins admin remove");
    forbidden(person.put_file("x.txt", Bytes::from_static(b"x")).await, "a person -> files put");
    std::fs::write(system.files_root().join("keep.txt"), b"keep").expect("a served file");
    forbidden(person.delete_file("keep.txt").await, "a person -> files delete");
    // A scatter-gather nobody may answer for them is refused too, not an empty answer.
    let within = Duration::from_millis(500);
    forbidden(person.workers(within).await, "a person -> the workers' stats");
    for (who, caller) in [("a person", &person), ("a manager", &manager)] {
        forbidden(caller.likes_digests(within, &[], None).await, &format!("{who} -> digests"));
    }
    // The refusals changed nothing, and the same person still does their own job.
    assert_eq!(code(manager.remove_asset("XYZ").await), ErrorCode::NotFound);
    assert!(!system.files_root().join("x.txt").exists());
    assert!(system.files_root().join("keep.txt").exists());
    person.deposit("alice", 10, None).await.expect("a person deposits");
    assert_eq!(person.balance("alice").await.expect("balance").balance, 10);

    // Before signing in, the command-line client may only sign up: a refusal says how to sign
    // in. It signs in with `agora login`, and shows a refusal as a coded error.
    let output = system.cli().args(["bank", "balance", "alice"]).output().expect("runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success() && stderr.starts_with("error [forbidden]"), "{stderr}");
    assert!(stderr.contains("you are not signed in: `agora login <name>` first"), "{stderr}");
    let login = system
        .cli()
        .args(["login", "alice"])
        .env("AGORA_PASSWORD", test_password("alice"))
        .output()
        .expect("agora runs");
    assert!(login.status.success(), "{}", String::from_utf8_lossy(&login.stderr));
    let output = system.cli().args(["coins", "admin", "remove", "XYZ"]).output().expect("runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("error [forbidden]"), "{stderr}");
    assert!(stderr.contains("agora.coins.admin.remove"), "{stderr}");
    assert!(!stderr.contains("not signed in"), "alice is signed in: {stderr}");
    let output = system.cli().args(["task", "workers"]).output().expect("runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success() && output.stdout.is_empty(), "{output:?}");
    assert!(stderr.contains("error [forbidden]"), "{stderr}");
    assert!(stderr.contains("$SRV.STATS.agora-worker"), "{stderr}");
    let whoami = system.cli().args(["whoami"]).output().expect("runs");
    assert_eq!(String::from_utf8_lossy(&whoami.stdout).trim(), "alice (user)");
    let balance = system.cli().args(["bank", "balance", "alice"]).output().expect("runs");
    assert_eq!(String::from_utf8_lossy(&balance.stdout).trim(), "alice: balance 10");

    // A saved token that ended (revoked here; expired, or the password changed) is refused
    // with what to do about it, and signing out still forgets it.
    let path = system.dir.path().join("credentials.json");
    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).expect("saved")).expect("JSON");
    let token = saved["token"].as_str().expect("a token");
    assert!(person.logout(token).await.expect("revokes").revoked);
    let output = system.cli().args(["bank", "balance", "alice"]).output().expect("runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.starts_with("error [unauthenticated]: the saved token of alice was refused")
            && stderr.contains("`agora login alice` again"),
        "{stderr}"
    );
    let output = system.cli().args(["logout"]).output().expect("runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(stdout.trim(), "signed out alice");
    assert!(!path.exists(), "the ended token is forgotten");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_credentials_are_refused_at_once_and_anonymous_may_only_sign_up() {
    let system = System::nats_with_auth();
    system.sign_up("alice").await;
    for (user, password) in [("alice", "wrong password"), ("nobody", "whatever"), ("bank", "")] {
        let started = std::time::Instant::now();
        let error = system.client_with(user, password).await.expect_err("refused");
        let text = format!("{error:#}").to_lowercase();
        assert!(text.contains("authorization") || text.contains("auth"), "{user}: {text}");
        assert!(started.elapsed() < Duration::from_secs(3), "{user}: refused at once");
    }
    for token in ["agora_not-a-token", &"x".repeat(5_000)] {
        let args = agora_nats::connection::NatsArgs::token(system.url(), "alice", token);
        let refused = agora_nats::connection::connect_once(&args, Duration::from_secs(3), |o| o);
        assert!(refused.await.is_err(), "token {:.20}", token);
    }
    // Anonymous: signing up and asking who it is (nobody), nothing else.
    let anonymous = system.anonymous().await;
    let me = anonymous.whoami().await.expect("anonymous may ask who it is");
    assert_eq!((me.name, me.role, me.service), (None, None, false));
    forbidden(anonymous.deposit("alice", 1, None).await, "anonymous -> deposit");
    anonymous.signup("carol", &test_password("carol")).await.expect("signs up");
    assert_eq!(
        code(anonymous.signup("Carol", &test_password("carol")).await),
        ErrorCode::NameTaken,
        "names are taken without regard to case"
    );
    for (name, password) in [
        ("exchange", "long enough"),
        ("ledger", "long enough"),
        ("_x", "long enough"),
        ("dan", "short"),
    ] {
        assert_eq!(
            code(anonymous.signup(name, password).await),
            ErrorCode::InvalidRequest,
            "{name}"
        );
    }
    // The people's own passwords work.
    let carol = system.client_with("carol", &test_password("carol")).await.expect("signs in");
    assert_eq!(carol.whoami().await.expect("whoami").name.as_deref(), Some("carol"));

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

/// Credentials that end close, at once, the connections that signed in with them (all but
/// the one that asked): a new role all of the person's (their password ones come back with
/// the new role, their token ones cannot), a logout the token's, a new password the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_close_when_the_credentials_they_signed_in_with_end() {
    let system = System::nats_with_auth();
    let manager = system.manager().await;
    let bob = system.person("bob").await;
    let bob_too = system.client_with("bob", &test_password("bob")).await.expect("signs in");
    let with_token = async |token: &str| {
        let nats = agora_nats::connection::NatsArgs::token(system.url(), "bob", token);
        let client = agora_nats::connection::connect_once(&nats, Duration::from_secs(3), |o| o)
            .await
            .expect("signs in with the token");
        agora_nats::AgoraClient::new(client).with_timeout(Duration::from_millis(500))
    };
    let bob_token = with_token(&bob.new_token(None).await.expect("a token").token).await;
    for connection in [&bob, &bob_too, &bob_token] {
        assert_eq!(connection.whoami().await.expect("whoami").role.as_deref(), Some("user"));
    }
    let gone = async |connection: &agora_nats::AgoraClient, what: &str| {
        eventually(Duration::from_secs(10), Duration::from_millis(100), async || match connection
            .whoami()
            .await
        {
            Err(_) => Ok(()),
            Ok(_) => Err(format!("{what} still answers")),
        })
        .await;
    };

    // A new role: both password connections come back as a manager's, without a new sign-in.
    manager.set_role("bob", "manager").await.expect("promoted");
    for connection in [&bob, &bob_too] {
        eventually(Duration::from_secs(10), Duration::from_millis(100), async || match connection
            .users(&Default::default())
            .await
        {
            Ok(_) => Ok(()),
            Err(error) => Err(format!("not a manager's connection yet: {error}")),
        })
        .await;
    }
    // ... and the token connection cannot: the new role ended the token.
    gone(&bob_token, "the connection of a token a new role ended").await;

    // A logout closes the connections of that token only.
    let bob_token = with_token(&bob.new_token(None).await.expect("a token").token).await;
    let other_token = bob.new_token(None).await.expect("another token").token;
    let bob_other = with_token(&other_token).await;
    assert!(bob.logout(&other_token).await.expect("revokes").revoked);
    gone(&bob_other, "the connection of a revoked token").await;
    bob_token.whoami().await.expect("another token's connection stays");

    // A new password closes every other connection; the one that changed it goes on.
    let new = "a-new-password-of-bob";
    bob_too.change_password(&test_password("bob"), new).await.expect("changed");
    gone(&bob, "a connection signed in with the old password").await;
    gone(&bob_token, "a connection of a token the new password ended").await;
    bob_too.whoami().await.expect("the connection that asked goes on");
    let again = system.client_with("bob", new).await.expect("the new password signs in");
    assert_eq!(again.whoami().await.expect("whoami").role.as_deref(), Some("manager"));
}
