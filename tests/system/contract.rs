//! The documented contract (docs/subjects.md) as an outside client sees it: every request is a
//! JSON object or refused, tasks come back whole, numbers are judged as written, a task that
//! cannot succeed is refused at once, lists of unknown symbols answer alike, the OpenAPI
//! document describes exactly what the gateway accepts, and every endpoint a service serves is
//! in docs/subjects.md.

use std::time::Duration;

use agora_core::AccountId;
use agora_nats::chat::wire::HistoryRequest;
use agora_nats::subjects::{bank, chat, coins, files, ledger, likes, tasks, worker};
use agora_nats::tasks::wire::{TaskEventWire, TaskView};
use agora_nats::{AgoraClient, ErrorCode};
use agora_tests::{POLL, System, TEST_MANAGER, code, eventually, test_password, wait_until};
use bytes::Bytes;
use futures::StreamExt;
use serde_json::{Value, json};

/// Every shape of JSON that is not an object, plus the request's own fields as an array (what
/// serde would have read as the struct, field by field).
fn not_objects(positional: &str) -> Vec<String> {
    [positional, "[]", "[{}]", "\"text\"", "42", "-1.5", "true", "null"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

async fn refused_everywhere(client: &AgoraClient, cases: &[(String, &str)]) {
    for (subject, positional) in cases {
        for payload in not_objects(positional) {
            let result = client.request_bytes(subject, Bytes::from(payload.clone())).await;
            let error = result.expect_err(&format!("{subject} {payload} must be refused"));
            assert_eq!(error.code(), ErrorCode::InvalidRequest, "{subject} {payload}: {error}");
            assert!(error.to_string().contains("JSON object"), "{subject} {payload}: {error}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_of_every_service_is_a_json_object_or_refused() {
    let system = System::with_gateway();
    let client = system.client().await;
    std::fs::write(system.files_root().join("big.bin"), vec![7u8; 4096]).expect("a file");
    let zed = AccountId::parse("zed").expect("valid");
    let assets_before = client.coin_assets(None).await.expect("assets");

    let cases: Vec<(String, &str)> = vec![
        (bank::DEPOSIT_SUBJECT.into(), r#"["zed",900]"#),
        (bank::WITHDRAW_SUBJECT.into(), r#"["zed",900]"#),
        (bank::BALANCE_SUBJECT.into(), r#"["zed"]"#),
        (bank::TRANSFER_SUBJECT.into(), r#"["zed","amy",900]"#),
        (ledger::lock(&zed), r#"["bank-x",2000]"#),
        (ledger::unlock(&zed), r#"["bank-x",1]"#),
        (ledger::get(&zed), r#"["bank-x"]"#),
        (ledger::set(&zed), r#"["bank-x",1,700,false]"#),
        (ledger::BATCH_LOCK_SUBJECT.into(), r#"["bank-x",["zed"],2000,[]]"#),
        (ledger::BATCH_GET_SUBJECT.into(), r#"["bank-x",["zed"]]"#),
        (ledger::BATCH_COMMIT_SUBJECT.into(), r#"["bank-x",[],[],[]]"#),
        (ledger::LOCKS_SUBJECT.into(), "[100]"),
        (tasks::SUBMIT_SUBJECT.into(), r#"["sum",{"numbers":[1]}]"#),
        (tasks::GET_SUBJECT.into(), r#"["1"]"#),
        (tasks::LIST_SUBJECT.into(), r#"["completed"]"#),
        (tasks::CANCEL_SUBJECT.into(), r#"["1"]"#),
        (tasks::WAIT_SUBJECT.into(), r#"["1",10]"#),
        (tasks::CLAIM_SUBJECT.into(), r#"["1","w0"]"#),
        (tasks::PROGRESS_SUBJECT.into(), r#"["1","w0",50]"#),
        (tasks::FINISH_SUBJECT.into(), r#"["1","w0",{"value":1}]"#),
        (tasks::workflows(tasks::WORKFLOW_SUBMIT), r#"["w",null,null,[{"name":"a","op":"sum"}]]"#),
        (tasks::workflows(tasks::WORKFLOW_GET), r#"["1"]"#),
        (tasks::workflows(tasks::WORKFLOW_LIST), r#"["running"]"#),
        (tasks::workflows(tasks::WORKFLOW_CANCEL), r#"["1"]"#),
        (worker::status("w0"), "[]"),
        (chat::REGISTER_SUBJECT.into(), r#"["mallory"]"#),
        (chat::HEARTBEAT_SUBJECT.into(), r#"["mallory","session-1"]"#),
        (chat::LEAVE_SUBJECT.into(), r#"["mallory","session-1"]"#),
        (chat::JOIN_SUBJECT.into(), r#"["mallory","session-1","rust"]"#),
        (chat::PART_SUBJECT.into(), r#"["mallory","session-1","rust"]"#),
        (chat::WHO_SUBJECT.into(), r#"["rust",true]"#),
        (chat::HISTORY_SUBJECT.into(), r#"["all"]"#),
        (chat::SEND_SUBJECT.into(), r#"["all",null,"m-1","mallory","hi"]"#),
        (coins::ASSETS_SUBJECT.into(), r#"["BTC"]"#),
        (coins::BUY_SUBJECT.into(), r#"["zed","TSLA",1,"o-1"]"#),
        (coins::SELL_SUBJECT.into(), r#"["zed","TSLA",1,"o-2"]"#),
        (coins::ORDER_SUBJECT.into(), r#"["zed","o-1"]"#),
        (coins::PORTFOLIO_SUBJECT.into(), r#"["zed"]"#),
        (coins::HISTORY_SUBJECT.into(), r#"["zed"]"#),
        (coins::ADD_SUBJECT.into(), r#"["DOGE","Dogecoin",15,1000]"#),
        (coins::REMOVE_SUBJECT.into(), r#"["BTC"]"#),
        (coins::UPDATE_SUBJECT.into(), r#"["BTC",1,1]"#),
        (files::LIST_SUBJECT.into(), r#"["docs/",10]"#),
        (files::STAT_SUBJECT.into(), r#"["big.bin"]"#),
        (files::GET_SUBJECT.into(), r#"["big.bin",0,10]"#),
        (files::CACHE_SUBJECT.into(), "[]"),
        (files::DELETE_SUBJECT.into(), r#"["big.bin"]"#),
        (likes::like("p"), r#"["mallory"]"#),
        (likes::unlike("p"), r#"["mallory"]"#),
        (likes::count("p"), r#"["mallory"]"#),
        (likes::TOP_SUBJECT.into(), "[10]"),
        (likes::DIGEST_SUBJECT.into(), r#"[["p"]]"#),
        (likes::sync("likes-0"), r#"["likes-9",{}]"#),
    ];
    // The leader answers `nodes` once it leads.
    wait_until(Duration::from_secs(20), "a likes leader", async || {
        client.like_nodes().await.is_ok()
    })
    .await;
    let mut all = cases.clone();
    all.push((likes::NODES_SUBJECT.into(), "[]"));
    refused_everywhere(&client, &all).await;
    assert!(system.files_root().join("big.bin").exists(), "a refused removal removes nothing");

    // Through the gateway: every JSON body (as the manager, who may call every route).
    let http = reqwest::Client::new();
    let boss = system.http_token(TEST_MANAGER).await;
    let bodies: [(&str, &str, &str); 16] = [
        ("POST", "/api/bank/deposit", r#"["zed",900]"#),
        ("POST", "/api/bank/withdraw", r#"["zed",900]"#),
        ("POST", "/api/bank/transfer", r#"["zed","amy",900]"#),
        ("POST", "/api/bank/transfers", r#"[[{"from":"zed","to":"amy","amount":900}]]"#),
        ("POST", "/api/coins/buy", r#"["zed","TSLA",1]"#),
        ("POST", "/api/coins/sell", r#"["zed","TSLA",1]"#),
        ("POST", "/api/coins/admin/assets", r#"["DOGE","Dogecoin",15,1000]"#),
        ("PATCH", "/api/coins/admin/assets/BTC", "[1,1]"),
        ("POST", "/api/tasks", r#"["sum",{"numbers":[1]}]"#),
        ("POST", "/api/tasks/workflows", r#"["w",null,null,[{"name":"a","op":"sum"}]]"#),
        ("POST", "/api/chat/sessions", r#"["mallory"]"#),
        ("POST", "/api/chat/send", r#"["session-1","all",null,"hi"]"#),
        ("POST", "/api/chat/join", r#"["session-1","rust"]"#),
        ("POST", "/api/chat/part", r#"["session-1","rust"]"#),
        ("POST", "/api/likes/items/p/like", r#"["mallory"]"#),
        ("POST", "/api/likes/items/p/unlike", r#"["mallory"]"#),
    ];
    for (method, path, positional) in bodies {
        for body in not_objects(positional) {
            let response = http
                .request(method.parse().expect("a method"), format!("{}{path}", system.gateway_url))
                .header("content-type", "application/json")
                .bearer_auth(&boss)
                .body(body.clone())
                .send()
                .await
                .expect("the gateway answers");
            assert_eq!(response.status(), 400, "{method} {path} {body}");
            let reply: Value = response.json().await.expect("a JSON error");
            assert_eq!(reply["error"]["code"], "invalid_request", "{method} {path} {body}");
            assert!(
                reply["error"]["message"].as_str().is_some_and(|m| m.contains("JSON object")),
                "{method} {path} {body}: {reply}"
            );
        }
    }

    // Nothing happened: no money, no like, no session, no listing, no task, no message.
    assert_eq!(client.balance("zed").await.expect("balance").balance, 0);
    assert_eq!(client.like_count("p", None).await.expect("count").count, 0);
    let who = client.chat_who(&Default::default()).await.expect("who");
    assert!(who.users.is_empty(), "{who:?}");
    assert_eq!(client.coin_assets(None).await.expect("assets"), assets_before);
    let listed = client.tasks(&Default::default()).await.expect("list");
    assert!(listed.tasks.is_empty(), "{listed:?}");
    let all = HistoryRequest { room: Some("all".into()), ..Default::default() };
    let history = client.chat_history(&all).await.expect("history");
    assert!(history.messages.is_empty(), "{history:?}");
    // And everything still serves a proper object.
    let deposit = json!({"account": "zed", "amount": 5}).to_string();
    let reply = client.request_bytes(bank::DEPOSIT_SUBJECT, deposit.into()).await.expect("ok");
    assert_eq!(serde_json::from_slice::<Value>(&reply).expect("JSON")["balance"], 5);
    let stat = client.request_bytes(files::STAT_SUBJECT, r#"{"name":"big.bin"}"#.into()).await;
    assert!(stat.is_ok(), "{stat:?}");
}

/// A task as `wait` shows it (the same view, without history).
async fn waited(client: &AgoraClient, id: &str) -> Value {
    let reply = client
        .request_bytes(tasks::WAIT_SUBJECT, json!({"id": id, "timeout_ms": 0}).to_string().into())
        .await
        .expect("wait");
    serde_json::from_slice(&reply).expect("JSON")
}

async fn submit_raw(client: &AgoraClient, body: Value) -> Result<Value, agora_nats::ClientError> {
    let reply = client
        .request_bytes_within(
            tasks::SUBMIT_SUBJECT,
            body.to_string().into(),
            Duration::from_secs(30),
        )
        .await?;
    Ok(serde_json::from_slice(&reply).expect("JSON"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_with_wait_answers_the_whole_task_whatever_its_outcome() {
    let system = System::with_tasks(1, &[]);
    let client = system.client().await;
    let whole = |task: &Value| {
        for field in
            ["id", "state", "op", "args", "client_id", "priority", "attempts", "submitted_ms"]
        {
            assert!(task.get(field).is_some(), "{field} is missing from {task}");
        }
    };
    // Completed at once (a quick op, claimed with its outcome), and after a claim (sleep).
    for (op, args, priority) in [
        ("sum", json!({"numbers": [1, 2.5]}), "high"),
        ("sleep", json!({"ms": 200}), "normal"),
        ("fail", json!({"message": "no"}), "normal"),
    ] {
        let id = format!("whole-{op}");
        let body =
            json!({"op": op, "args": args, "id": id, "priority": priority, "wait_ms": 30_000});
        let task = submit_raw(&client, body).await.expect("submitted");
        whole(&task);
        assert_eq!(task["args"], args);
        assert_eq!(task["client_id"], id);
        assert_eq!(task["priority"], priority);
        let expected = if op == "fail" { "failed" } else { "completed" };
        assert_eq!(task["state"], expected, "{task}");
        assert_eq!(task, waited(&client, task["id"].as_str().expect("an id")).await);
        // The same submission again (same client id): the same whole task.
        let again = json!({"op": op, "args": args, "id": id, "priority": priority, "wait_ms": 100});
        assert_eq!(submit_raw(&client, again).await.expect("again"), task);
    }
    // Still running when the wait is over: the whole task as it is.
    let body = json!({"op": "sleep", "args": {"ms": 3_000}, "id": "slow", "wait_ms": 300});
    let running = submit_raw(&client, body).await.expect("submitted");
    whole(&running);
    assert!(["queued", "running"].contains(&running["state"].as_str().unwrap_or_default()));
    // Cancelled while someone waits: the waiter gets the whole cancelled task.
    let waiting = {
        let client = client.clone();
        tokio::spawn(async move {
            let body = json!({"op": "sleep", "args": {"ms": 60_000}, "id": "cancel-me",
                              "wait_ms": 30_000});
            submit_raw(&client, body).await.expect("submitted")
        })
    };
    let id = eventually(Duration::from_secs(20), POLL, async || {
        let listed = client.tasks(&Default::default()).await.expect("list");
        listed
            .tasks
            .iter()
            .find(|t| t.client_id.as_deref() == Some("cancel-me") && t.state == "running")
            .map(|task| task.id.clone())
            .ok_or_else(|| "the sleep never ran".to_owned())
    })
    .await;
    client.cancel_task(&id).await.expect("cancelled");
    let cancelled = tokio::time::timeout(Duration::from_secs(20), waiting)
        .await
        .expect("the waiter is answered")
        .expect("joined");
    whole(&cancelled);
    assert_eq!(cancelled["state"], "cancelled");
    assert_eq!(cancelled, waited(&client, &id).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sleep_reports_progress_while_it_runs() {
    let system = System::with_tasks(1, &[]);
    let client = system.client().await;
    let mut events = client.nats().subscribe(tasks::EVENTS_ALL).await.expect("subscribed");
    agora_nats::client::barrier(client.nats()).await.expect("barrier");
    let task = submit_raw(&client, json!({"op": "sleep", "args": {"ms": 2_000}}))
        .await
        .expect("submitted");
    let id = task["id"].as_str().expect("an id").to_owned();
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while let Ok(Some(message)) = tokio::time::timeout_at(deadline, events.next()).await {
        let event: TaskEventWire = serde_json::from_slice(&message.payload).expect("an event");
        if event.id.as_deref() != Some(id.as_str()) {
            continue;
        }
        let done = event.event == "completed";
        seen.push(event);
        if done {
            break;
        }
    }
    let names: Vec<&str> = seen.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(names.first(), Some(&"queued"), "{names:?}");
    assert_eq!(names.last(), Some(&"completed"), "{names:?}");
    let started = names.iter().position(|n| *n == "started").expect("started");
    let percents: Vec<u8> = seen[started..]
        .iter()
        .filter(|e| e.event == "progress")
        .filter_map(|e| e.percent)
        .collect();
    // A 2 s sleep reports several times (every 250 ms it moved), long before the 10 s
    // heartbeat, in rising steps.
    assert!(percents.len() >= 4, "progress events: {percents:?}");
    assert!(percents.windows(2).all(|w| w[0] < w[1]), "{percents:?}");
    assert!(percents.iter().all(|p| (1..=100).contains(p)), "{percents:?}");
    let stored = client.task(&id).await.expect("the task");
    let history = stored.history.expect("history");
    assert!(history.iter().filter(|e| e.event == "progress").count() >= 4, "{history:?}");
}

/// Integer literals beyond an `i64` (and beyond ±2^53), in every numeric op's arguments.
const OUT_OF_RANGE: [&str; 7] = [
    "18446744073709551616",
    "-18446744073709551616",
    "10000000000000000000007",
    "9223372036854775808",
    "-9223372036854775809",
    "9007199254740993",
    "-9007199254740993",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numbers_are_judged_as_written_and_hopeless_tasks_refused_at_submit() {
    let mut system = System::with_tasks(1, &[]);
    system.start_gateway();
    let client = system.client().await;
    let http = reqwest::Client::new();
    let gateway = format!("{}/api/tasks", system.gateway_url);
    let token = system.http_token("amy").await;
    let mut refused = Vec::new();
    for literal in OUT_OF_RANGE {
        for op in ["sum", "average", "max", "min"] {
            refused.push(format!(r#"{{"op":"{op}","args":{{"numbers":[1,{literal}]}}}}"#));
        }
        refused.push(format!(r#"{{"op":"sort","args":{{"numbers":[{literal},2]}}}}"#));
    }
    // Floats beyond ±1e300 or not finite, and what is not a number at all.
    for literal in ["1e301", "-2e300", "1e999", "\"1\"", "null", "[1]", "{}"] {
        refused.push(format!(r#"{{"op":"sum","args":{{"numbers":[{literal}]}}}}"#));
    }
    // An average, maximum or minimum of nothing can never succeed.
    for op in ["average", "max", "min"] {
        refused.push(format!(r#"{{"op":"{op}","args":{{"numbers":[]}}}}"#));
    }
    for body in &refused {
        let error = client
            .request_bytes(tasks::SUBMIT_SUBJECT, Bytes::from(body.clone()))
            .await
            .expect_err(body);
        assert_eq!(error.code(), ErrorCode::InvalidRequest, "{body}: {error}");
        // The gateway passes the numbers on as written, so it refuses alike.
        let response = http
            .post(&gateway)
            .header("content-type", "application/json")
            .bearer_auth(&token)
            .body(body.clone())
            .send()
            .await
            .expect("answers");
        assert_eq!(response.status(), 400, "{body} over HTTP");
    }
    for op in ["average", "max", "min"] {
        let body = format!(r#"{{"op":"{op}","args":{{"numbers":[]}}}}"#);
        let error = client.request_bytes(tasks::SUBMIT_SUBJECT, body.into()).await.expect_err(op);
        assert!(error.to_string().contains("at least one number"), "{error}");
    }
    let listed = client.tasks(&Default::default()).await.expect("list");
    assert!(listed.tasks.is_empty(), "nothing refused was queued: {listed:?}");

    // The bounds themselves, floats written as floats, and the sum of nothing are fine.
    for (args, value) in [
        (r#"{"numbers":[9007199254740992]}"#, json!(9_007_199_254_740_992_i64)),
        (r#"{"numbers":[-9007199254740992, 1]}"#, json!(-9_007_199_254_740_991_i64)),
        (r#"{"numbers":[1e20]}"#, json!(1e20)),
        (r#"{"numbers":[18446744073709551616.0]}"#, json!(18_446_744_073_709_551_616.0)),
        (r#"{"numbers":[]}"#, json!(0)),
    ] {
        let body = format!(r#"{{"op":"sum","args":{args},"wait_ms":20000}}"#);
        let reply = client
            .request_bytes_within(tasks::SUBMIT_SUBJECT, body.into(), Duration::from_secs(30))
            .await
            .expect(args);
        let task: TaskView = serde_json::from_slice(&reply).expect("a task");
        assert_eq!(task.state, "completed", "{task:?}");
        let result: Value = serde_json::from_str(task.result.expect("a result").get()).unwrap();
        assert_eq!(result["value"], value, "{args}");
    }

    // The CLI sends numbers as typed: the service judges them.
    let output = system
        .cli()
        .args(["task", "submit", "sum", "1", "18446744073709551616"])
        .output()
        .expect("runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.starts_with("error [invalid_request]:"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_symbols_are_listed_alike_however_many_were_asked() {
    let mut system = System::with_coins(1);
    system.start_gateway();
    let client = system.client().await;
    let assets = |body: &str| {
        let client = client.clone();
        let body = body.to_owned();
        async move {
            let reply = client.request_bytes(coins::ASSETS_SUBJECT, body.into()).await?;
            Ok::<Value, agora_nats::ClientError>(serde_json::from_slice(&reply).expect("JSON"))
        }
    };
    let reply = assets(r#"{"symbols":["NOPE"]}"#).await.expect("a list");
    assert_eq!(reply, json!({"assets": [], "not_found": ["NOPE"]}));
    let reply = assets(r#"{"symbols":["NOPE","NADA"]}"#).await.expect("a list");
    assert_eq!(reply, json!({"assets": [], "not_found": ["NADA", "NOPE"]}));
    let reply = assets(r#"{"symbols":["BTC","NOPE"]}"#).await.expect("a list");
    assert_eq!(reply["assets"][0]["symbol"], "BTC");
    assert_eq!(reply["not_found"], json!(["NOPE"]));
    let reply = assets(r#"{"symbols":["BTC"]}"#).await.expect("a list");
    assert_eq!(reply["assets"].as_array().map(Vec::len), Some(1));
    assert!(reply.get("not_found").is_none(), "{reply}");
    let reply = assets(r#"{"symbols":["not a symbol"]}"#).await.expect("a list");
    assert_eq!(reply["not_found"], json!(["not a symbol"]));
    // One asset asked for as `symbol` is that asset or `not_found`, as documented.
    assert_eq!(code(assets(r#"{"symbol":"NOPE"}"#).await), ErrorCode::NotFound);
    assert_eq!(assets(r#"{"symbol":"BTC"}"#).await.expect("BTC")["assets"][0]["symbol"], "BTC");
    // Over HTTP: the list form.
    let token = system.http_token("amy").await;
    for (query, not_found) in [("NOPE", json!(["NOPE"])), ("NOPE,NADA", json!(["NADA", "NOPE"]))] {
        let url = format!("{}/api/coins/assets?symbols={query}", system.gateway_url);
        let response =
            reqwest::Client::new().get(&url).bearer_auth(&token).send().await.expect("answers");
        assert_eq!(response.status(), 200, "{query}");
        let reply: Value = response.json().await.expect("JSON");
        assert_eq!(reply, json!({"assets": [], "not_found": not_found}), "{query}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_prints_times_people_read_and_json_keeps_milliseconds() {
    let mut system = System::with_files(1, &[]);
    system.start_tasks();
    system.add_worker(&[]);
    std::fs::write(system.files_root().join("notes.txt"), b"hello").expect("a file");
    let agora = |args: &[&str]| {
        let output = system.cli().args(args).output().expect("runs");
        assert!(output.status.success(), "{args:?}: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let year = |text: &str| {
        text.split(|c: char| !c.is_ascii_digit() && c != '-' && c != 'T' && c != ':')
            .any(|word| word.len() >= 19 && word.starts_with("20") && word.contains('T'))
    };
    let stat = agora(&["files", "stat", "notes.txt"]);
    assert!(stat.contains("modified 20") && stat.contains('Z'), "{stat}");
    assert!(!stat.contains(" ms"), "{stat}");
    let json: Value =
        serde_json::from_str(&agora(&["files", "stat", "notes.txt", "--json"])).expect("JSON");
    assert!(json["modified_ms"].as_u64().is_some_and(|ms| ms > 1_600_000_000_000), "{json}");
    let list = agora(&["files", "list"]);
    assert!(year(&list), "{list}");
    let submitted = agora(&["task", "submit", "sum", "1", "2", "--wait"]);
    let id = submitted.split_whitespace().nth(1).expect("task <id>").to_owned();
    let shown = agora(&["task", "get", &id]);
    let history: Vec<&str> = shown.lines().filter(|l| l.starts_with("  20")).collect();
    assert!(history.len() >= 2, "history lines with dates: {shown}");
    assert!(history.iter().all(|line| year(line)), "{shown}");
}

/// A JSON body sent to the gateway: the status and the reply.
async fn send_body(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    method: &str,
    path: &str,
    body: &Value,
) -> (u16, Value) {
    let response = http
        .request(method.parse().expect("a method"), format!("{base}{path}"))
        .header("content-type", "application/json")
        .bearer_auth(token)
        .body(body.to_string())
        .send()
        .await
        .expect("the gateway answers");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_describes_what_the_gateway_accepts() {
    let system = System::with_gateway();
    let http = reqwest::Client::new();
    let base = system.gateway_url.clone();
    let document: Value = http
        .get(format!("{base}/api/openapi.json"))
        .send()
        .await
        .expect("answers")
        .json()
        .await
        .expect("JSON");
    let paths = document["paths"].as_object().expect("paths");
    // What each route answers with.
    let events = &paths["/api/events"]["get"]["responses"]["200"]["content"];
    assert!(events.get("text/event-stream").is_some() && events.get("application/json").is_none());
    let download = &paths["/api/files/content/{name}"]["get"]["responses"]["200"]["content"];
    assert!(download.get("application/octet-stream").is_some(), "{download}");
    // Every parameter has a typed schema; path parameters are required.
    for (path, operations) in paths {
        for (method, operation) in operations.as_object().expect("operations") {
            for parameter in operation["parameters"].as_array().expect("parameters") {
                let schema = &parameter["schema"];
                assert!(schema["type"].is_string(), "{method} {path}: {parameter}");
                if parameter["in"] == "path" {
                    assert_eq!(parameter["required"], true, "{method} {path}: {parameter}");
                }
            }
        }
    }
    let typed = |path: &str, method: &str, name: &str| {
        paths[path][method]["parameters"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["name"] == name))
            .map(|p| p["schema"].clone())
            .unwrap_or_else(|| panic!("{method} {path} has no parameter {name}"))
    };
    assert_eq!(typed("/deposit/{account}/{amount}", "post", "amount")["type"], "integer");
    assert_eq!(typed("/deposit/{account}/{amount}", "post", "amount")["minimum"], 1);
    assert!(typed("/api/bank/balance/{account}", "get", "account")["pattern"].is_string());
    assert_eq!(typed("/api/tasks", "get", "limit")["maximum"], 1000);
    assert_eq!(typed("/api/tasks", "get", "dead_letter")["type"], "boolean");
    assert!(typed("/api/tasks", "get", "state")["enum"].is_array());
    assert_eq!(typed("/api/chat/history", "get", "as")["type"], "string");

    // Every body: an object schema with its fields; valid requests pass it and the gateway
    // takes them, invalid ones fail it and the gateway refuses them with 400.
    let validator = |path: &str, method: &str| {
        let body = &paths[path][method]["requestBody"];
        assert_eq!(body["required"], true, "{method} {path}");
        let schema = &body["content"]["application/json"]["schema"];
        let reference = schema["$ref"].as_str().expect("a named schema");
        let name = reference.trim_start_matches("#/components/schemas/");
        let named = &document["components"]["schemas"][name];
        assert_eq!(named["type"], "object", "{name}");
        assert!(named["properties"].as_object().is_some_and(|p| !p.is_empty()), "{name}");
        assert_eq!(named["additionalProperties"], false, "{name}");
        let root = json!({"$ref": reference, "components": document["components"]});
        jsonschema::draft202012::new(&root).expect("a valid schema")
    };
    let (amy, boss, pat) = (
        system.http_token("amy").await,
        system.http_token(TEST_MANAGER).await,
        system.http_token("pat").await,
    );
    let open = json!({"name": "amy"});
    let (status, session) =
        send_body(&http, &base, &amy, "POST", "/api/chat/sessions", &open).await;
    assert_eq!(status, 200, "{session}");
    let session = session["session"].as_str().expect("a token").to_owned();
    let amy_password = test_password("amy");
    // Who calls each route: amy, the manager for the manager's routes, pat (who changes a
    // password, which ends pat's tokens) last.
    let cases: Vec<(&str, &str, Value, Vec<Value>)> = vec![
        (
            "POST",
            "/api/bank/deposit",
            json!({"account": "amy", "amount": 50, "id": "d-1"}),
            vec![
                json!({}),
                json!({"account": "amy"}),
                json!({"account": "amy", "amount": "5"}),
                json!({"account": "amy", "amount": 0}),
                json!({"account": "no way!", "amount": 5}),
                json!({"account": "amy", "amount": 5, "x": 1}),
                json!({"account": "amy", "amount": 5, "id": "with space"}),
                json!(["amy", 5]),
            ],
        ),
        (
            "POST",
            "/api/bank/withdraw",
            json!({"account": "amy", "amount": 1}),
            vec![json!({"account": "amy", "amount": -1}), json!({"amount": 1})],
        ),
        (
            "POST",
            "/api/bank/transfer",
            json!({"from": "amy", "to": "bob", "amount": 1, "id": "t-1"}),
            vec![json!({"from": "amy", "amount": 1}), json!({"from": "amy", "to": 7, "amount": 1})],
        ),
        (
            "POST",
            "/api/bank/transfers",
            json!({"operations": [{"from": "amy", "to": "bob", "amount": 1, "id": "ts-1"},
                                  {"op": "pending", "from": "amy", "to": "bob", "amount": 1,
                                   "timeout_ms": 60000, "id": "ts-2"}]}),
            vec![
                json!({"operations": []}),
                json!({"operations": [{"from": "amy", "to": "bob", "amount": 0}]}),
                json!({"operations": [{"op": "steal", "from": "amy", "to": "bob", "amount": 1}]}),
                json!({"operations": [{"from": "amy", "to": "bob", "amount": 1, "asset": "btc"}]}),
                json!({"operations": [{"from": "amy", "to": "bob", "amount": 1, "typo": 1}]}),
                json!({"ops": []}),
            ],
        ),
        (
            "POST",
            "/api/coins/buy",
            json!({"user": "amy", "symbol": "TSLA", "quantity": 1}),
            vec![
                json!({"user": "amy", "symbol": "tsla", "quantity": 1}),
                json!({"user": "amy", "symbol": "TSLA", "quantity": 0}),
                json!({"user": "amy", "symbol": "TSLA", "quantity": 1, "id": "no way"}),
            ],
        ),
        (
            "POST",
            "/api/coins/sell",
            json!({"user": "amy", "symbol": "TSLA", "quantity": 1, "id": "s-1"}),
            vec![json!({"user": "amy", "symbol": "TSLA"})],
        ),
        (
            "POST",
            "/api/coins/admin/assets",
            json!({"symbol": "DOGE", "name": "Dogecoin", "price": 15, "quantity": 1000}),
            vec![
                json!({"symbol": "DOGE", "name": "Dogecoin", "price": 0, "quantity": 1}),
                json!({"symbol": "DOGE", "name": "Dogecoin", "price": 1}),
            ],
        ),
        (
            "PATCH",
            "/api/coins/admin/assets/{symbol}",
            json!({"price": 20}),
            vec![json!({"price": 0}), json!({"cost": 5})],
        ),
        (
            "POST",
            "/api/tasks",
            json!({"op": "sum", "args": {"numbers": [1, 2]}, "priority": "high", "wait_ms": 0}),
            vec![
                json!({"args": {}}),
                json!({"op": "divide"}),
                json!({"op": "sum", "priority": "urgent"}),
                json!({"op": "sum", "wait_ms": 60_001}),
                json!({"op": "sum", "args": [1, 2]}),
            ],
        ),
        (
            "POST",
            "/api/tasks/schedules",
            json!({"name": "nightly", "schedule": "0 3 * * *", "time_zone": "UTC", "op": "sum",
                   "args": {"numbers": [1]}, "priority": "normal", "paused": true}),
            vec![
                json!({"schedule": "@daily", "op": "sum"}),
                json!({"name": "a.b", "schedule": "@daily", "op": "sum"}),
                json!({"name": "n", "schedule": "@daily", "op": "divide"}),
                json!({"name": "n", "schedule": "", "op": "sum"}),
                json!({"name": "n", "schedule": "@daily", "op": "sum", "paused": "yes"}),
            ],
        ),
        (
            "POST",
            "/api/tasks/workflows",
            json!({"name": "report", "id": "w-1", "priority": "normal", "steps": [
                {"name": "a", "op": "count_words", "args": {"text": "x y"}},
                {"name": "t", "op": "sum", "args": {"numbers": [1]}, "after": ["a"],
                 "feed": "numbers", "on_failure": "compensate", "priority": "high",
                 "compensate": {"op": "sleep", "args": {"ms": 1}}}]}),
            vec![
                json!({"steps": []}),
                json!({"name": "report"}),
                json!({"steps": [{"name": "a.b", "op": "sum"}]}),
                json!({"steps": [{"name": "a", "op": "divide"}]}),
                json!({"steps": [{"name": "a", "op": "sum", "feed": "values"}]}),
                json!({"steps": [{"name": "a", "op": "sum", "on_failure": "retry"}]}),
                json!({"steps": [{"name": "a", "op": "sum", "after": "b"}]}),
                json!({"steps": [{"name": "a", "op": "sum", "typo": 1}]}),
            ],
        ),
        (
            "POST",
            "/api/chat/sessions",
            json!({"name": "amy"}),
            vec![json!({"name": "no way!"}), json!({"name": 5})],
        ),
        (
            "POST",
            "/api/chat/send",
            json!({"session": session, "room": "all", "text": "hi"}),
            vec![json!({"session": session, "room": "all"}), json!({"room": "all", "text": "x"})],
        ),
        (
            "POST",
            "/api/chat/edit",
            json!({"seq": 1, "text": "changed"}),
            vec![json!({"seq": 1}), json!({"seq": -1, "text": "x"}), json!({"seq": 1, "text": ""})],
        ),
        ("POST", "/api/chat/delete", json!({"seq": 1}), vec![json!({}), json!({"seq": "one"})]),
        (
            "POST",
            "/api/chat/react",
            json!({"seq": 1, "emoji": "👍", "on": true}),
            vec![
                json!({"seq": 1}),
                json!({"seq": 1, "emoji": ""}),
                json!({"seq": 1, "emoji": "x", "on": 1}),
            ],
        ),
        (
            "POST",
            "/api/chat/read",
            json!({"room": "all", "seq": 1}),
            vec![json!({"room": "a b", "seq": 1}), json!({"room": "all", "seq": -1})],
        ),
        (
            "POST",
            "/api/chat/typing",
            json!({"room": "all"}),
            vec![json!({"room": "a.b"}), json!({"to": "all"})],
        ),
        (
            "POST",
            "/api/chat/join",
            json!({"session": session, "room": "rust"}),
            vec![json!({"session": session, "room": "a.b"})],
        ),
        (
            "POST",
            "/api/chat/part",
            json!({"session": session, "room": "rust"}),
            vec![json!({"session": session})],
        ),
        (
            "POST",
            "/api/likes/items/{item}/like",
            json!({"user": "amy"}),
            vec![json!({"user": "no way!"}), json!({"who": "amy"})],
        ),
        (
            "POST",
            "/api/likes/items/{item}/unlike",
            json!({"user": "amy"}),
            vec![json!({"user": ""}), json!({"user": 5})],
        ),
        (
            "POST",
            "/api/auth/signup",
            json!({"name": "newcomer", "password": "long enough"}),
            vec![
                json!({"name": "x y", "password": "long enough"}),
                json!({"name": "newcomer", "password": "short"}),
                json!({"name": "newcomer"}),
            ],
        ),
        (
            "POST",
            "/api/auth/login",
            json!({"name": "amy", "password": amy_password}),
            vec![json!({"name": "amy"}), json!({"name": "amy", "password": 5})],
        ),
        (
            "POST",
            "/api/auth/token",
            json!({"name": "amy", "password": amy_password, "ttl_ms": 60_000}),
            vec![
                json!({"name": "amy", "password": amy_password, "ttl_ms": 1}),
                json!({"name": "amy", "password": amy_password, "days": 1}),
            ],
        ),
        (
            "POST",
            "/api/auth/password",
            json!({"old": test_password("pat"), "new": "a brand new password"}),
            vec![json!({"old": test_password("pat")}), json!({"old": 1, "new": "long enough"})],
        ),
    ];
    let mut covered = std::collections::BTreeSet::new();
    for (method, path, valid, invalids) in cases {
        let lower = method.to_ascii_lowercase();
        let schema = validator(path, &lower);
        covered.insert((lower.clone(), path));
        let concrete = path.replace("{symbol}", "DOGE").replace("{item}", "p-1");
        let token = if path.contains("/admin/") {
            &boss
        } else if path == "/api/auth/password" {
            &pat
        } else {
            &amy
        };
        assert!(schema.is_valid(&valid), "{method} {path}: {valid} fits its schema");
        // The invalid bodies first: a valid password change ends the caller's tokens.
        for invalid in &invalids {
            assert!(!schema.is_valid(invalid), "{method} {path}: {invalid} must not fit");
            let (status, reply) = send_body(&http, &base, token, method, &concrete, invalid).await;
            assert_eq!(status, 400, "{method} {path} {invalid}: {reply}");
            assert_eq!(reply["error"]["code"], "invalid_request", "{path} {invalid}");
        }
        let (status, reply) = send_body(&http, &base, token, method, &concrete, &valid).await;
        assert!(status < 400 || reply["error"]["code"] != "invalid_request", "{path}: {reply}");
    }
    // Every route with a JSON body was tried; the one whose body is bytes is the upload
    // (tried in the gateway's tests).
    let upload = &paths["/api/files/content/{name}"]["put"]["requestBody"]["content"];
    assert_eq!(upload["application/octet-stream"]["schema"]["format"], "binary", "{upload}");
    for (path, operations) in paths {
        for (method, operation) in operations.as_object().expect("operations") {
            if operation["requestBody"]["content"].get("application/json").is_some() {
                assert!(covered.contains(&(method.clone(), path.as_str())), "{method} {path}");
            }
        }
    }
}

/// The subjects docs/subjects.md names (every `agora.…` in backquotes), `{a,b}` spelled out;
/// each a list of tokens, where `<name>` or `*` stands for any one token.
fn documented_subjects() -> Vec<Vec<String>> {
    fn spelled_out(subject: &str) -> Vec<String> {
        let (Some(open), Some(close)) = (subject.find('{'), subject.find('}')) else {
            return vec![subject.to_owned()];
        };
        let (head, tail) = (&subject[..open], &subject[close + 1..]);
        subject[open + 1..close]
            .split(',')
            .flat_map(|choice| spelled_out(&format!("{head}{choice}{tail}")))
            .collect()
    }
    let text = include_str!("../../docs/subjects.md");
    text.split('`')
        .skip(1)
        .step_by(2)
        .filter(|quoted| quoted.starts_with("agora.") && !quoted.contains(char::is_whitespace))
        .flat_map(spelled_out)
        .map(|subject| subject.split('.').map(str::to_owned).collect())
        .collect()
}

fn documented(subject: &str, documented: &[Vec<String>]) -> bool {
    let tokens: Vec<&str> = subject.split('.').collect();
    documented.iter().any(|doc| {
        doc.len() == tokens.len()
            && doc.iter().zip(&tokens).all(|(d, t)| d == t || d == "*" || d.starts_with('<'))
    })
}

#[test]
fn the_documented_subjects_are_read_as_written() {
    let docs = documented_subjects();
    for subject in ["agora.bank.transfer", "agora.likes.like.*", "agora.worker.w1.status"] {
        assert!(documented(subject, &docs), "{subject}");
    }
    for subject in ["agora.bank.transfers.now", "agora.bank.teleport", "agora.worker.w1.stop"] {
        assert!(!documented(subject, &docs), "{subject}");
    }
}

/// The contract word for word, from the other side: every endpoint that any instance of every
/// service registers (their `$SRV.INFO`) is a subject docs/subjects.md documents, under its
/// service's documented name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_every_service_serves_is_documented() {
    let system = crate::auth::system();
    let operator = system.client().await;
    let docs = documented_subjects();
    let text = include_str!("../../docs/subjects.md");
    let services = [
        agora_nats::subjects::auth::SERVICE,
        ledger::SERVICE,
        bank::SERVICE,
        coins::SERVICE,
        files::SERVICE,
        chat::SERVICE,
        tasks::SERVICE,
        worker::SERVICE,
        likes::SERVICE,
    ];
    let mut served: Vec<(String, String)> = Vec::new();
    eventually(Duration::from_secs(20), Duration::from_millis(200), async || {
        let infos = operator
            .gather(agora_nats::subjects::micro::INFO, Bytes::new(), Duration::from_secs(1), None)
            .await
            .map_err(|e| e.to_string())?;
        let infos: Vec<Value> =
            infos.iter().filter_map(|m| serde_json::from_slice(&m.payload).ok()).collect();
        let missing: Vec<&str> = services
            .iter()
            .copied()
            .filter(|service| !infos.iter().any(|info| info["name"] == *service))
            .collect();
        if !missing.is_empty() {
            return Err(format!("not answering yet: {missing:?}"));
        }
        served = infos
            .iter()
            .flat_map(|info| {
                let name = info["name"].as_str().unwrap_or_default().to_owned();
                let endpoints = info["endpoints"].as_array().cloned().unwrap_or_default();
                endpoints.into_iter().map(move |endpoint| {
                    (name.clone(), endpoint["subject"].as_str().unwrap_or_default().to_owned())
                })
            })
            .collect();
        Ok(())
    })
    .await;
    assert!(served.len() > 60, "every service's endpoints: {served:?}");
    for (service, subject) in &served {
        assert!(text.contains(&format!("`{service}`")), "{service} is not in docs/subjects.md");
        assert!(documented(subject, &docs), "{service} serves {subject}, not in docs/subjects.md");
    }
}
