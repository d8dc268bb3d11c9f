//! The gateway's HTTP API against real services: every route, error mapping, bad input,
//! live events, downloads with ranges, the OpenAPI document; and the log publishing layer.

use std::time::Duration;

use agora_nats::telemetry::LogRecord;
use agora_tests::{System, TEST_MANAGER, eventually, test_password};
use futures::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// How long a test waits for a live event it expects.
const EVENT_WITHIN: Duration = Duration::from_secs(20);

/// A small JSON HTTP client for the gateway, signed in as one user (a bearer token) or not.
struct Http {
    base: String,
    client: reqwest::Client,
    token: Option<String>,
}

impl Http {
    /// Not signed in.
    fn new(system: &System) -> Self {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .expect("an HTTP client");
        Self { base: system.gateway_url.clone(), client, token: None }
    }

    /// Signed in as `name`: signed up (through the gateway) if new, with a token of its own.
    async fn user(system: &System, name: &str) -> Self {
        let anonymous = Self::new(system);
        let credentials = json!({"name": name, "password": test_password(name)});
        let (status, body) =
            anonymous.call("POST", "/api/auth/signup", Body::Json(&credentials)).await;
        assert!(status == 200 || body["error"]["code"] == "name_taken", "{name}: {body}");
        Self::signed_in(system, name).await
    }

    /// Signed in as the first manager.
    async fn manager(system: &System) -> Self {
        Self::signed_in(system, TEST_MANAGER).await
    }

    async fn signed_in(system: &System, name: &str) -> Self {
        let mut http = Self::new(system);
        let credentials = json!({"name": name, "password": test_password(name)});
        let issued = http.ok("POST", "/api/auth/token", Body::Json(&credentials)).await;
        http.token = Some(issued["token"].as_str().expect("a token").to_owned());
        http
    }

    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let request = self.client.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// Sends `body` (JSON, raw text, or nothing) and returns the status and the JSON reply.
    async fn call(&self, method: &str, path: &str, body: Body<'_>) -> (StatusCode, Value) {
        let method = Method::from_bytes(method.as_bytes()).expect("a method");
        let mut request = self.request(method, path);
        request = match body {
            Body::None => request,
            Body::Json(value) => request.json(&value),
            Body::Raw(text) => {
                request.header("content-type", "application/json").body(text.to_owned())
            }
        };
        let response = request.send().await.expect("the gateway answers");
        let status = response.status();
        let text = response.text().await.expect("a body");
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, value)
    }

    async fn ok(&self, method: &str, path: &str, body: Body<'_>) -> Value {
        let (status, value) = self.call(method, path, body).await;
        assert_eq!(status, StatusCode::OK, "{method} {path}: {value}");
        value
    }

    /// Asserts the status and the error code of a failed call.
    async fn fails(&self, method: &str, path: &str, body: Body<'_>, status: u16, code: &str) {
        let (got, value) = self.call(method, path, body).await;
        assert_eq!(got.as_u16(), status, "{method} {path}: {value}");
        assert_eq!(value["error"]["code"], code, "{method} {path}: {value}");
        assert!(value["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{value}");
    }
}

#[derive(Debug, Clone, Copy)]
enum Body<'a> {
    None,
    Json(&'a Value),
    Raw(&'a str),
}

/// Reads Server-Sent Events from a streaming response.
struct Sse {
    stream: futures::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buffer: String,
}

impl Sse {
    async fn open(http: &Http, query: &str) -> Self {
        let response = http
            .request(Method::GET, &format!("/api/events?{query}"))
            .send()
            .await
            .expect("the event stream opens");
        assert_eq!(response.status(), StatusCode::OK);
        let mut sse = Self { stream: response.bytes_stream().boxed(), buffer: String::new() };
        let (event, _) = sse.next().await;
        assert_eq!(event, "hello");
        sse
    }

    /// The next event: its name and its data as JSON.
    async fn next(&mut self) -> (String, Value) {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut event = String::new();
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(name) = line.strip_prefix("event: ") {
                        event = name.to_owned();
                    } else if let Some(text) = line.strip_prefix("data: ") {
                        data.push_str(text);
                    }
                }
                if event.is_empty() {
                    continue; // a keep-alive comment
                }
                return (event, serde_json::from_str(&data).expect("event data is JSON"));
            }
            let chunk = tokio::time::timeout(Duration::from_secs(10), self.stream.next())
                .await
                .expect("an event within 10 s")
                .expect("the stream is open")
                .expect("the stream reads");
            self.buffer.push_str(std::str::from_utf8(&chunk).expect("UTF-8"));
        }
    }

    /// The next event named `name` (skipping others).
    async fn next_named(&mut self, name: &str) -> Value {
        self.next_where(name, |_| true).await
    }

    /// The next event named `name` whose data `wanted` accepts (skipping others), within
    /// [`EVENT_WITHIN`].
    async fn next_where(&mut self, name: &str, wanted: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + EVENT_WITHIN;
        loop {
            let (event, data) = tokio::time::timeout_at(deadline, self.next())
                .await
                .unwrap_or_else(|_| panic!("no such {name} event within {EVENT_WITHIN:?}"));
            if event == name && wanted(&data) {
                return data;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_and_maps_service_errors_to_http() {
    let system = System::with_gateway();
    let anonymous = Http::new(&system);
    let health = anonymous.ok("GET", "/api/health", Body::None).await;
    assert_eq!(health["status"], "ok");
    let (alice, bob, carol) = (
        Http::user(&system, "alice").await,
        Http::user(&system, "bob").await,
        Http::user(&system, "carol").await,
    );
    let boss = Http::manager(&system).await;
    let me = alice.ok("GET", "/api/auth/me", Body::None).await;
    assert_eq!((me["name"].as_str(), me["role"].as_str()), (Some("alice"), Some("user")));
    assert_eq!(boss.ok("GET", "/api/auth/me", Body::None).await["role"], "manager");
    let http = &alice;

    // Bank, and the original routes (which now return the result), each on one's own account.
    let deposit = json!({"account": "alice", "amount": 1_000_000, "id": "d-1"});
    let reply = http.ok("POST", "/api/bank/deposit", Body::Json(&deposit)).await;
    assert_eq!(reply, json!({"account": "alice", "balance": 1_000_000}));
    let again = http.ok("POST", "/api/bank/deposit", Body::Json(&deposit)).await;
    assert_eq!(again["balance"], 1_000_000, "the same id is applied once");
    assert_eq!(
        bob.ok("POST", "/deposit/bob/500", Body::None).await,
        json!({"account": "bob", "balance": 500})
    );
    assert_eq!(bob.ok("GET", "/balance/bob", Body::None).await["balance"], 500);
    let transfer = alice.ok("POST", "/transfer/alice/bob/300", Body::None).await;
    assert_eq!(transfer["from"], json!({"account": "alice", "balance": 999_700}));
    assert_eq!(transfer["to"], json!({"account": "bob", "balance": 800}));
    assert_eq!(bob.ok("POST", "/withdrawal/bob/100", Body::None).await["balance"], 700);
    bob.fails("POST", "/withdrawal/bob/100000", Body::None, 409, "insufficient_funds").await;
    for _ in 0..2 {
        let response = carol
            .request(Method::POST, "/deposit/carol/25")
            .header("idempotency-key", "legacy-1")
            .send()
            .await
            .expect("answers");
        assert_eq!(response.status(), StatusCode::OK);
    }
    assert_eq!(carol.ok("GET", "/api/bank/balance/carol", Body::None).await["balance"], 25);
    let withdraw = json!({"account": "bob", "amount": 200});
    assert_eq!(bob.ok("POST", "/api/bank/withdraw", Body::Json(&withdraw)).await["balance"], 500);
    let transfer = json!({"from": "bob", "to": "carol", "amount": 600});
    bob.fails("POST", "/api/bank/transfer", Body::Json(&transfer), 409, "insufficient_funds").await;
    let transfer = json!({"from": "bob", "to": "carol", "amount": 500});
    let reply = bob.ok("POST", "/api/bank/transfer", Body::Json(&transfer)).await;
    assert_eq!(reply["to"]["balance"], 525);
    // A manager reads anyone's balance, moves nobody's money.
    assert_eq!(boss.ok("GET", "/api/bank/balance/carol", Body::None).await["balance"], 525);
    boss.fails("POST", "/withdrawal/carol/1", Body::None, 403, "forbidden").await;

    // Coins, with the manager's routes.
    let assets = http.ok("GET", "/api/coins/assets", Body::None).await;
    assert!(assets["assets"].as_array().expect("assets").iter().any(|a| a["symbol"] == "TSLA"));
    let some = http.ok("GET", "/api/coins/assets?symbols=TSLA,NOPE", Body::None).await;
    assert_eq!(some["assets"][0]["symbol"], "TSLA");
    assert_eq!(some["not_found"], json!(["NOPE"]));
    let order = json!({"user": "alice", "symbol": "TSLA", "quantity": 2, "id": "o-1"});
    let bought = http.ok("POST", "/api/coins/buy", Body::Json(&order)).await;
    assert_eq!((bought["state"].as_str(), bought["total"].as_u64()), (Some("done"), Some(50_000)));
    let sold = json!({"user": "alice", "symbol": "TSLA", "quantity": 1, "id": "o-2"});
    assert_eq!(http.ok("POST", "/api/coins/sell", Body::Json(&sold)).await["state"], "done");
    let lookup = http.ok("GET", "/api/coins/orders/alice/o-1", Body::None).await;
    assert_eq!(lookup["seq"], bought["seq"]);
    http.fails("GET", "/api/coins/orders/alice/nope", Body::None, 404, "not_found").await;
    let portfolio = http.ok("GET", "/api/coins/portfolio/alice", Body::None).await;
    assert_eq!(portfolio["holdings"][0]["quantity"], 1);
    assert_eq!(portfolio["balance"], 999_700 - 50_000 + 25_000);
    // The trade log follows the ledger's events: the orders are in the history moments later.
    eventually(Duration::from_secs(10), Duration::from_millis(50), async || {
        let history = http.ok("GET", "/api/coins/history?user=alice&limit=10", Body::None).await;
        match history["orders"].as_array().map(Vec::len) {
            Some(2) => Ok(()),
            other => Err(format!("{other:?} orders in the history")),
        }
    })
    .await;
    let too_many = json!({"user": "alice", "symbol": "BTC", "quantity": 101});
    http.fails("POST", "/api/coins/buy", Body::Json(&too_many), 409, "insufficient_quantity").await;
    let listing = json!({"symbol": "DOGE", "name": "Dogecoin", "price": 15, "quantity": 1000});
    http.fails("POST", "/api/coins/admin/assets", Body::Json(&listing), 403, "forbidden").await;
    anonymous
        .fails("POST", "/api/coins/admin/assets", Body::Json(&listing), 401, "unauthenticated")
        .await;
    let listed = boss.ok("POST", "/api/coins/admin/assets", Body::Json(&listing)).await;
    assert_eq!(listed["symbol"], "DOGE");
    boss.fails("POST", "/api/coins/admin/assets", Body::Json(&listing), 409, "conflict").await;
    let price = json!({"price": 20});
    let updated = boss.ok("PATCH", "/api/coins/admin/assets/DOGE", Body::Json(&price)).await;
    assert_eq!(updated["price"], 20);
    boss.ok("DELETE", "/api/coins/admin/assets/DOGE", Body::None).await;
    boss.fails("DELETE", "/api/coins/admin/assets/DOGE", Body::None, 404, "not_found").await;

    // Tasks.
    let submit = json!({"op": "fibonacci", "args": {"n": 10}, "id": "t-1", "wait_ms": 10_000});
    let task = http.ok("POST", "/api/tasks", Body::Json(&submit)).await;
    assert_eq!(
        (task["state"].as_str(), task["owner"].as_str()),
        (Some("completed"), Some("alice"))
    );
    let id = task["id"].as_str().expect("an id").to_owned();
    let fetched = http.ok("GET", &format!("/api/tasks/{id}"), Body::None).await;
    assert_eq!(fetched["result"], task["result"]);
    let list = http.ok("GET", "/api/tasks?limit=5", Body::None).await;
    assert_eq!(list["tasks"][0]["id"], id.as_str());
    http.fails("POST", &format!("/api/tasks/{id}/cancel"), Body::None, 409, "conflict").await;
    http.fails("GET", "/api/tasks/999999", Body::None, 404, "not_found").await;
    http.fails("GET", "/api/workers", Body::None, 403, "forbidden").await;
    let workers = boss.ok("GET", "/api/workers", Body::None).await;
    assert_eq!(workers["workers"].as_array().map(Vec::len), Some(1));
    // Recurring schedules: alice's own; the manager may act on anyone's.
    let nightly = json!({"name": "nightly", "schedule": "0 3 * * *", "op": "sum",
                         "args": {"numbers": [1]}});
    let created = http.ok("POST", "/api/tasks/schedules", Body::Json(&nightly)).await;
    assert_eq!(
        (created["owner"].as_str(), created["schedule"].as_str()),
        (Some("alice"), Some("0 0 3 * * *"))
    );
    let bad = json!({"name": "nightly", "schedule": "@every 0s", "op": "sum"});
    http.fails("POST", "/api/tasks/schedules", Body::Json(&bad), 400, "invalid_request").await;
    let mine = http.ok("GET", "/api/tasks/schedules", Body::None).await;
    assert_eq!(mine["schedules"][0]["name"], "nightly");
    http.fails("GET", "/api/tasks/schedules?owner=root", Body::None, 403, "forbidden").await;
    let paused = http.ok("POST", "/api/tasks/schedules/nightly/pause", Body::None).await;
    assert_eq!(paused["paused"], true);
    let resumed =
        boss.ok("POST", "/api/tasks/schedules/nightly/resume?owner=alice", Body::None).await;
    assert_eq!(resumed["paused"], false);
    boss.fails("POST", "/api/tasks/schedules/nightly/pause", Body::None, 404, "not_found").await;
    http.ok("DELETE", "/api/tasks/schedules/nightly", Body::None).await;
    http.fails("DELETE", "/api/tasks/schedules/nightly", Body::None, 404, "not_found").await;
    // Workflows: alice's own; ann can neither read nor cancel them; the manager reads them
    // but, as with tasks, does not cancel someone else's.
    let flow = json!({"name": "pair", "steps": [
        {"name": "nap", "op": "sleep", "args": {"ms": 30000}},
        {"name": "total", "op": "sum", "after": ["nap"], "feed": "numbers"}]});
    let running = http.ok("POST", "/api/tasks/workflows", Body::Json(&flow)).await;
    assert_eq!(
        (running["owner"].as_str(), running["state"].as_str()),
        (Some("alice"), Some("running"))
    );
    let flow_id = running["id"].as_str().expect("an id").to_owned();
    let listed = http.ok("GET", "/api/tasks/workflows?state=running", Body::None).await;
    assert_eq!(listed["workflows"][0]["id"], flow_id.as_str());
    let ann_http = Http::user(&system, "ann").await;
    let path = format!("/api/tasks/workflows/{flow_id}");
    ann_http.fails("GET", &path, Body::None, 403, "forbidden").await;
    ann_http.fails("POST", &format!("{path}/cancel"), Body::None, 403, "forbidden").await;
    ann_http.fails("GET", "/api/tasks/workflows?owner=alice", Body::None, 403, "forbidden").await;
    let theirs = ann_http.ok("GET", "/api/tasks/workflows", Body::None).await;
    assert_eq!(theirs["workflows"], json!([]));
    anonymous.fails("GET", &path, Body::None, 401, "unauthenticated").await;
    let seen = boss.ok("GET", &path, Body::None).await;
    assert_eq!(seen["steps"][0]["state"], "running");
    boss.fails("POST", &format!("{path}/cancel"), Body::None, 403, "forbidden").await;
    let cancelled = http.ok("POST", &format!("{path}/cancel"), Body::None).await;
    assert_eq!(cancelled["state"], "cancelled");
    http.fails("POST", &format!("{path}/cancel"), Body::None, 409, "conflict").await;
    http.fails("GET", "/api/tasks/workflows/0", Body::None, 400, "invalid_request").await;

    // Chat: a session the gateway holds for ann, messages, who, history, its end.
    let ann = Http::user(&system, "ann").await;
    let opened = ann.ok("POST", "/api/chat/sessions", Body::Json(&json!({"name": "ann"}))).await;
    assert_eq!(opened["name"], "ann");
    let session = opened["session"].as_str().expect("a session token").to_owned();
    ann.fails("POST", "/api/chat/sessions", Body::None, 409, "name_taken").await;
    let mallory = json!({"name": "mallory"});
    ann.fails("POST", "/api/chat/sessions", Body::Json(&mallory), 403, "forbidden").await;
    let say = json!({"session": session, "room": "all", "text": "hello <b>all</b>"});
    let sent = ann.ok("POST", "/api/chat/send", Body::Json(&say)).await;
    assert!(sent["seq"].as_u64().is_some());
    assert_eq!(sent["message"]["from"], "ann");
    // Someone else's session token is no session of theirs.
    http.fails("POST", "/api/chat/send", Body::Json(&say), 401, "not_registered").await;
    let room = json!({"session": session, "room": "ops"});
    let joined = ann.ok("POST", "/api/chat/join", Body::Json(&room)).await;
    assert_eq!(joined["rooms"], json!(["ops"]));
    let parted = ann.ok("POST", "/api/chat/part", Body::Json(&room)).await;
    assert_eq!(parted["rooms"], json!([]));
    let history = http.ok("GET", "/api/chat/history?room=all", Body::None).await;
    assert_eq!(history["messages"][0]["text"], "hello <b>all</b>");
    // After sending: ann edits, alice reacts, both find it; only ann may edit her message.
    let seq = sent["seq"].as_u64().expect("a seq");
    let edit = json!({"seq": seq, "text": "hello everyone"});
    let edited = ann.ok("POST", "/api/chat/edit", Body::Json(&edit)).await;
    assert_eq!(edited["text"], "hello everyone");
    http.fails("POST", "/api/chat/edit", Body::Json(&edit), 403, "forbidden").await;
    let react = json!({"seq": seq, "emoji": "👍"});
    let reacted = ann.ok("POST", "/api/chat/react", Body::Json(&react)).await;
    assert_eq!(reacted["reactions"]["👍"], json!(["ann"]));
    // A person who never chatted cannot react (no chat name), but finds and reads.
    http.fails("POST", "/api/chat/react", Body::Json(&react), 404, "unknown_user").await;
    let found = http.ok("GET", "/api/chat/search?query=everyone", Body::None).await;
    assert_eq!(found["hits"][0]["message"]["seq"], seq);
    let edits = http.ok("GET", &format!("/api/chat/edits?seq={seq}"), Body::None).await;
    assert_eq!(edits["versions"][0]["text"], "hello <b>all</b>");
    let read = json!({"room": "all", "seq": seq});
    assert_eq!(http.ok("POST", "/api/chat/read", Body::Json(&read)).await["read_seq"], seq);
    let unread = http.ok("GET", "/api/chat/unread", Body::None).await;
    assert_eq!(unread["conversations"][0]["unread"], 0);
    let typing = ann.ok("POST", "/api/chat/typing", Body::Json(&json!({"room": "all"}))).await;
    assert_eq!(typing["sent"], true);
    http.fails("GET", "/api/chat/search?query=", Body::None, 400, "invalid_request").await;
    let who = http.ok("GET", "/api/chat/who", Body::None).await;
    assert_eq!(who["users"][0]["name"], "ann");
    assert_eq!(who["users"][0]["online"], true);
    let to_nobody = json!({"session": session, "to": "nobody", "text": "hi"});
    ann.fails("POST", "/api/chat/send", Body::Json(&to_nobody), 404, "unknown_user").await;
    ann.ok("DELETE", &format!("/api/chat/sessions/{session}"), Body::None).await;
    ann.fails("POST", "/api/chat/send", Body::Json(&say), 401, "not_registered").await;
    let who = http.ok("GET", "/api/chat/who?offline=true", Body::None).await;
    assert_eq!(who["users"][0]["online"], false);

    // Likes: each user likes as themselves.
    let liked = http.ok("POST", "/api/likes/items/p-1/like", Body::None).await;
    assert_eq!((liked["count"].as_u64(), liked["changed"].as_bool()), (Some(1), Some(true)));
    let named = json!({"user": "alice"});
    let again = http.ok("POST", "/api/likes/items/p-1/like", Body::Json(&named)).await;
    assert_eq!((again["count"].as_u64(), again["changed"].as_bool()), (Some(1), Some(false)));
    let forged = json!({"user": "bob"});
    http.fails("POST", "/api/likes/items/p-1/like", Body::Json(&forged), 403, "forbidden").await;
    assert_eq!(bob.ok("POST", "/api/likes/items/p-1/like", Body::None).await["count"], 2);
    let count = http.ok("GET", "/api/likes/items/p-1?user=alice", Body::None).await;
    assert_eq!((count["count"].as_u64(), count["liked"].as_bool()), (Some(2), Some(true)));
    assert_eq!(http.ok("POST", "/api/likes/items/p-1/unlike", Body::None).await["count"], 1);
    let top = http.ok("GET", "/api/likes/top?limit=5", Body::None).await;
    assert_eq!(top["items"], json!([{"item": "p-1", "count": 1}]));
    let nodes = eventually(Duration::from_secs(15), Duration::from_millis(200), async || {
        let (status, nodes) = http.call("GET", "/api/likes/nodes", Body::None).await;
        match status {
            StatusCode::OK => Ok(nodes),
            StatusCode::SERVICE_UNAVAILABLE => Err(format!("a leader answers: {nodes}")),
            other => panic!("{other}: {nodes}"),
        }
    })
    .await;
    assert_eq!(nodes["leader"]["node"], "likes-0");

    // Files: list, stat, whole and partial downloads, conditional requests, HEAD.
    let root = system.files_root();
    std::fs::write(root.join("hello.txt"), "hello world\n").expect("write");
    let big: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
    std::fs::create_dir_all(root.join("data")).expect("mkdir");
    std::fs::write(root.join("data/big.bin"), &big).expect("write");
    let list = http.ok("GET", "/api/files", Body::None).await;
    let names: Vec<&str> = list["files"]
        .as_array()
        .expect("files")
        .iter()
        .filter_map(|f| f["name"].as_str())
        .collect();
    assert_eq!(names, ["data/big.bin", "hello.txt"]);
    let stat = http.ok("GET", "/api/files/stat/data/big.bin", Body::None).await;
    assert_eq!((stat["size"].as_u64(), stat["chunks"].as_u64()), (Some(200_000), Some(4)));
    let whole =
        http.request(Method::GET, "/api/files/content/data/big.bin").send().await.expect("ok");
    assert_eq!(whole.status(), StatusCode::OK);
    assert_eq!(whole.content_length(), Some(200_000));
    let etag = whole.headers()["etag"].to_str().expect("ASCII").to_owned();
    assert_eq!(etag, format!("\"{}\"", stat["sha256"].as_str().expect("sha")));
    assert_eq!(whole.bytes().await.expect("bytes").as_ref(), big.as_slice());
    let part = http
        .request(Method::GET, "/api/files/content/data/big.bin")
        .header("range", "bytes=70000-140000")
        .send()
        .await
        .expect("answers");
    assert_eq!(part.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(part.headers()["content-range"], "bytes 70000-140000/200000");
    assert_eq!(part.bytes().await.expect("bytes").as_ref(), &big[70_000..=140_000]);
    let tail = http
        .request(Method::GET, "/api/files/content/data/big.bin")
        .header("range", "bytes=-10")
        .send()
        .await
        .expect("answers");
    assert_eq!(tail.bytes().await.expect("bytes").as_ref(), &big[199_990..]);
    let outside = http
        .request(Method::GET, "/api/files/content/data/big.bin")
        .header("range", "bytes=200000-")
        .send()
        .await
        .expect("answers");
    assert_eq!(outside.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(outside.headers()["content-range"], "bytes */200000");
    let cached = http
        .request(Method::GET, "/api/files/content/data/big.bin")
        .header("if-none-match", &etag)
        .send()
        .await
        .expect("answers");
    assert_eq!(cached.status(), StatusCode::NOT_MODIFIED);
    let head = http.request(Method::HEAD, "/api/files/content/hello.txt").send().await.expect("ok");
    assert_eq!(head.headers()["content-length"], "12");
    assert!(head.headers()["content-type"].to_str().expect("ASCII").starts_with("text/plain"));
    // A served page never runs on the dashboard's origin.
    std::fs::write(root.join("page.html"), "<script>document.title='owned'</script>").expect("w");
    let page = http.request(Method::GET, "/api/files/content/page.html").send().await.expect("ok");
    assert_eq!(page.status(), StatusCode::OK);
    let headers = page.headers();
    assert!(headers["content-disposition"].to_str().expect("ASCII").starts_with("attachment"));
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert!(headers["content-security-policy"].to_str().expect("ASCII").contains("sandbox"));
    anonymous
        .fails("GET", "/api/files/content/page.html", Body::None, 401, "unauthenticated")
        .await;
    http.fails("GET", "/api/files/content/missing.txt", Body::None, 404, "not_found").await;
    http.fails("GET", "/api/files/stat/missing.txt", Body::None, 404, "not_found").await;
    assert!(http.ok("GET", "/api/files/cache", Body::None).await.is_object());

    // Uploads: the manager's, as the file's bytes; served at once, whole. Anyone else, another
    // site's page, a JSON body, a bad name or too many bytes is refused and writes nothing.
    let upload = |who: &Http, name: &str, kind: &str, body: Vec<u8>| {
        who.request(Method::PUT, &format!("/api/files/content/{name}"))
            .header("content-type", kind)
            .body(body)
            .send()
    };
    let octets = "application/octet-stream";
    let uploaded: Vec<u8> = (0..300_000u32).map(|i| (i % 241) as u8).collect();
    let reply = upload(&boss, "up/loaded.bin", octets, uploaded.clone()).await.expect("answers");
    assert_eq!(reply.status(), StatusCode::OK);
    let stat: Value = reply.json().await.expect("JSON");
    assert_eq!(
        (stat["name"].as_str(), stat["size"].as_u64()),
        (Some("up/loaded.bin"), Some(300_000))
    );
    assert_eq!(http.ok("GET", "/api/files/stat/up/loaded.bin", Body::None).await, stat);
    let back = http.request(Method::GET, "/api/files/content/up/loaded.bin").send().await;
    assert_eq!(back.expect("answers").bytes().await.expect("bytes").as_ref(), uploaded.as_slice());
    assert_eq!(std::fs::read(root.join("up/loaded.bin")).expect("on disk"), uploaded);
    let max = 1024 * 1024 - 4 * 1024;
    // A body with no Content-Length (sent chunked) is taken up to one message only.
    let streamed = |body: Vec<u8>| {
        let parts = futures::stream::iter(
            body.chunks(64 * 1024).map(|c| Ok::<_, std::io::Error>(c.to_vec())).collect::<Vec<_>>(),
        );
        boss.request(Method::PUT, "/api/files/content/up/streamed.bin")
            .header("content-type", octets)
            .body(reqwest::Body::wrap_stream(parts))
            .send()
    };
    let foreign = boss
        .request(Method::PUT, "/api/files/content/up/foreign.bin")
        .header("content-type", octets)
        .header("origin", "http://evil.example")
        .body(b"x".to_vec())
        .send();
    for (refused, status, code) in [
        (upload(http, "up/alice.bin", octets, b"mine".to_vec()), 403, "forbidden"),
        (upload(&anonymous, "up/anonymous.bin", octets, b"x".to_vec()), 401, "unauthenticated"),
        (foreign, 403, "forbidden"),
        (upload(&boss, "up/json.bin", "application/json", b"{}".to_vec()), 415, "invalid_request"),
        (streamed(vec![7; max + 1]), 411, "invalid_request"),
        (upload(&boss, "up//x", octets, b"x".to_vec()), 400, "invalid_request"),
        (upload(&boss, "up/a%5Cb", octets, b"x".to_vec()), 400, "invalid_request"),
    ] {
        let refused = refused.await.expect("answers");
        let got = refused.status().as_u16();
        let reply: Value = refused.json().await.expect("a JSON error");
        assert_eq!((got, reply["error"]["code"].as_str()), (status, Some(code)), "{reply}");
    }
    let names: Vec<String> = std::fs::read_dir(root.join("up"))
        .expect("the upload directory")
        .map(|entry| entry.expect("an entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["loaded.bin"], "only the manager's upload, and no temporary file");
    // The largest upload that goes as one message fits; a larger one goes in parts and lands
    // whole; so does a chunked body that fits one message.
    let reply = upload(&boss, "up/loaded.bin", octets, vec![9; max]).await.expect("answers");
    assert_eq!(reply.status(), StatusCode::OK);
    let large: Vec<u8> = (0..(2 * max + 12_345) as u32).map(|i| (i % 251) as u8).collect();
    let reply = upload(&boss, "up/large.bin", octets, large.clone()).await.expect("answers");
    assert_eq!(reply.status(), StatusCode::OK);
    let stat: Value = reply.json().await.expect("JSON");
    assert_eq!(stat["size"].as_u64(), Some(large.len() as u64));
    assert_eq!(stat["sha256"].as_str(), Some(agora_nats::files::sha256_hex(&large).as_str()));
    let back = http.request(Method::GET, "/api/files/content/up/large.bin").send().await;
    assert!(back.expect("answers").bytes().await.expect("bytes").as_ref() == large.as_slice());
    let reply = streamed(vec![5; 100_000]).await.expect("answers");
    assert_eq!(reply.status(), StatusCode::OK);
    assert_eq!(std::fs::read(root.join("up/streamed.bin")).expect("on disk"), vec![5; 100_000]);
    let staged = std::fs::read_dir(root.join(".agora-upload-staging")).expect("staging").count();
    assert_eq!(staged, 0, "no part of a finished upload is left");

    // Removals: the manager's. Anyone else, another site's page or a bad name is refused and
    // removes nothing; the file removed is served no more.
    let remove = |who: &Http, name: &str| {
        who.request(Method::DELETE, &format!("/api/files/content/{name}")).send()
    };
    let foreign = boss
        .request(Method::DELETE, "/api/files/content/up/streamed.bin")
        .header("origin", "http://evil.example")
        .send();
    for (refused, status, code) in [
        (remove(http, "up/streamed.bin"), 403, "forbidden"),
        (remove(&anonymous, "up/streamed.bin"), 401, "unauthenticated"),
        (foreign, 403, "forbidden"),
        (remove(&boss, "up/..%2F..%2Fsecret"), 400, "invalid_request"),
        (remove(&boss, "up/missing.bin"), 404, "not_found"),
        (remove(&boss, "up"), 404, "not_found"),
    ] {
        let refused = refused.await.expect("answers");
        let got = refused.status().as_u16();
        let reply: Value = refused.json().await.expect("a JSON error");
        assert_eq!((got, reply["error"]["code"].as_str()), (status, Some(code)), "{reply}");
    }
    assert!(root.join("up/streamed.bin").exists(), "the refusals removed nothing");
    let reply = remove(&boss, "up/streamed.bin").await.expect("answers");
    assert_eq!(reply.status(), StatusCode::OK);
    let removed: Value = reply.json().await.expect("JSON");
    assert_eq!(
        (removed["name"].as_str(), removed["size"].as_u64()),
        (Some("up/streamed.bin"), Some(100_000))
    );
    assert!(!root.join("up/streamed.bin").exists());
    http.fails("GET", "/api/files/content/up/streamed.bin", Body::None, 404, "not_found").await;
    http.fails("GET", "/api/files/stat/up/streamed.bin", Body::None, 404, "not_found").await;

    // Monitoring and logs: the manager's.
    http.fails("GET", "/api/services", Body::None, 403, "forbidden").await;
    http.fails("GET", "/api/logs", Body::None, 403, "forbidden").await;
    anonymous.fails("GET", "/api/logs", Body::None, 401, "unauthenticated").await;
    let services = boss.ok("GET", "/api/services", Body::None).await;
    let mut names: Vec<String> = services["instances"]
        .as_array()
        .expect("instances")
        .iter()
        .filter_map(|i| i["name"].as_str().map(str::to_owned))
        .collect();
    names.dedup();
    for service in [
        "agora-auth",
        "agora-bank",
        "agora-chat",
        "agora-coins",
        "agora-files",
        "agora-ledger",
        "agora-likes",
        "agora-tasks",
        "agora-worker",
    ] {
        assert!(names.iter().any(|n| n == service), "{service} in {names:?}");
    }
    let with_stats = &services["instances"][0];
    assert!(with_stats["endpoints"].is_array() && with_stats["version"].is_string());
    let logs = boss.ok("GET", "/api/logs?service=gateway", Body::None).await;
    assert!(
        logs["records"]
            .as_array()
            .expect("records")
            .iter()
            .any(|r| r["message"] == "gateway listening"),
        "{logs}"
    );

    // Unknown routes and methods.
    let (status, body) = http.call("GET", "/api/nope", Body::None).await;
    assert_eq!((status.as_u16(), &body["error"]["code"]), (404, &json!("not_found")));
    let (status, body) = http.call("DELETE", "/api/bank/deposit", Body::None).await;
    assert_eq!((status.as_u16(), &body["error"]["code"]), (405, &json!("invalid_request")));

    // The dashboard (no sign-in needed to load it).
    let page = anonymous.request(Method::GET, "/").send().await.expect("answers");
    assert!(page.headers()["content-security-policy"].to_str().expect("ASCII").contains("'self'"));
    assert!(page.text().await.expect("text").contains("<title>Agora</title>"));
    for asset in ["/assets/app.js", "/assets/app.css"] {
        assert_eq!(http.request(Method::GET, asset).send().await.expect("ok").status(), 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_lists_exactly_the_routes_served() {
    let system = System::with_gateway();
    let http = Http::new(&system);
    let document = http.ok("GET", "/api/openapi.json", Body::None).await;
    assert_eq!(document["openapi"], "3.1.0");
    let paths = document["paths"].as_object().expect("paths");
    assert!(paths.len() >= 30, "{} paths", paths.len());
    for (path, operations) in paths {
        for method in operations.as_object().expect("operations").keys() {
            let concrete = path
                .split('/')
                .map(|part| if part.starts_with('{') { "x" } else { part })
                .collect::<Vec<_>>()
                .join("/");
            if concrete == "/api/events" {
                continue; // a stream: checked in the live-events test
            }
            let (status, body) =
                http.call(&method.to_ascii_uppercase(), &concrete, Body::Raw("{}")).await;
            let message = body["error"]["message"].as_str().unwrap_or_default();
            assert!(
                status != StatusCode::METHOD_NOT_ALLOWED && !message.starts_with("no route"),
                "{method} {path} is documented but not served: {status} {body}"
            );
        }
    }
    let (_, body) = http.call("GET", "/api/definitely/not/served", Body::None).await;
    assert!(body["error"]["message"].as_str().expect("message").starts_with("no route"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_on_every_route_is_a_clear_4xx_and_changes_nothing() {
    let system = System::with_gateway();
    let http = Http::user(&system, "alice").await;
    http.ok("POST", "/deposit/alice/1000", Body::None).await;
    let opened = http.ok("POST", "/api/chat/sessions", Body::None).await;
    let session = opened["session"].as_str().expect("token").to_owned();
    let assets_before = http.ok("GET", "/api/coins/assets", Body::None).await;

    let big = format!(r#"{{"account":"alice","amount":1,"id":"{}"}}"#, "x".repeat(70_000));
    let cases: Vec<(&str, String, Option<String>, u16, &str)> = vec![
        ("POST", "/api/bank/deposit".into(), Some("not json".into()), 400, "invalid_request"),
        ("POST", "/api/bank/deposit".into(), Some(String::new()), 400, "invalid_request"),
        (
            "POST",
            "/api/bank/deposit".into(),
            Some(r#"{"account":"alice","amount":-5}"#.into()),
            400,
            "invalid_request",
        ),
        (
            "POST",
            "/api/bank/deposit".into(),
            Some(r#"{"account":"alice","amount":5,"x":1}"#.into()),
            400,
            "invalid_request",
        ),
        (
            "POST",
            "/api/bank/deposit".into(),
            Some(r#"{"account":"no way!","amount":5}"#.into()),
            400,
            "invalid_request",
        ),
        ("POST", "/api/bank/deposit".into(), Some(big), 413, "invalid_request"),
        (
            "POST",
            "/api/bank/withdraw".into(),
            Some(r#"{"account":"alice","amount":"5"}"#.into()),
            400,
            "invalid_request",
        ),
        (
            "POST",
            "/api/bank/transfer".into(),
            Some(r#"{"from":"alice","amount":5}"#.into()),
            400,
            "invalid_request",
        ),
        ("GET", "/api/bank/balance/no%20way".into(), None, 400, "invalid_request"),
        ("POST", "/deposit/alice/abc".into(), None, 400, "invalid_request"),
        ("POST", "/deposit/alice/-5".into(), None, 400, "invalid_request"),
        ("POST", "/withdrawal/alice/0".into(), None, 400, "invalid_request"),
        ("POST", "/transfer/alice/bob/1.5".into(), None, 400, "invalid_request"),
        ("GET", "/balance/a.b".into(), None, 400, "invalid_request"),
        ("GET", "/api/coins/assets?bogus=1".into(), None, 400, "invalid_request"),
        (
            "POST",
            "/api/coins/buy".into(),
            Some(r#"{"user":"alice","symbol":"TSLA","quantity":0}"#.into()),
            400,
            "invalid_request",
        ),
        (
            "POST",
            "/api/coins/buy".into(),
            Some(r#"{"user":"alice","symbol":"TSLA","quantity":-1}"#.into()),
            400,
            "invalid_request",
        ),
        (
            "POST",
            "/api/coins/sell".into(),
            Some(r#"{"user":"alice","symbol":"TSLA"}"#.into()),
            400,
            "invalid_request",
        ),
        (
            "POST",
            "/api/coins/buy".into(),
            Some(r#"{"user":"alice","symbol":"NOPE","quantity":1}"#.into()),
            400,
            "invalid_request",
        ),
        ("GET", "/api/coins/history?limit=abc".into(), None, 400, "invalid_request"),
        ("GET", "/api/coins/portfolio/no%20way".into(), None, 400, "invalid_request"),
        ("DELETE", "/api/coins/admin/assets/BTC".into(), None, 403, "forbidden"),
        ("POST", "/api/tasks".into(), Some(r#"{"op":"nope"}"#.into()), 400, "invalid_request"),
        (
            "POST",
            "/api/tasks".into(),
            Some(r#"{"op":"fibonacci","args":{"n":"x"}}"#.into()),
            400,
            "invalid_request",
        ),
        ("POST", "/api/tasks".into(), Some("{}".into()), 400, "invalid_request"),
        ("GET", "/api/tasks?limit=-1".into(), None, 400, "invalid_request"),
        (
            "POST",
            "/api/chat/sessions".into(),
            Some(r#"{"name":"no way!"}"#.into()),
            400,
            "invalid_request",
        ),
        ("POST", "/api/chat/sessions".into(), Some("[]".into()), 400, "invalid_request"),
        (
            "POST",
            "/api/chat/send".into(),
            Some(r#"{"session":"nope","room":"all","text":"x"}"#.into()),
            401,
            "not_registered",
        ),
        (
            "POST",
            "/api/chat/send".into(),
            Some(format!(r#"{{"session":"{session}","text":"x"}}"#)),
            400,
            "invalid_request",
        ),
        (
            "POST",
            "/api/chat/send".into(),
            Some(format!(r#"{{"session":"{session}","room":"no way!","text":"x"}}"#)),
            400,
            "invalid_request",
        ),
        (
            "POST",
            "/api/chat/send".into(),
            Some(format!(r#"{{"session":"{session}","room":"all","text":""}}"#)),
            400,
            "invalid_request",
        ),
        (
            "POST",
            "/api/chat/join".into(),
            Some(format!(r#"{{"session":"{session}","room":"a.b"}}"#)),
            400,
            "invalid_request",
        ),
        ("DELETE", "/api/chat/sessions/nope".into(), None, 401, "not_registered"),
        ("GET", "/api/chat/history?limit=x".into(), None, 400, "invalid_request"),
        ("GET", "/api/chat/who?offline=maybe".into(), None, 400, "invalid_request"),
        ("POST", "/api/likes/items/a.b/like".into(), None, 400, "invalid_request"),
        ("POST", "/api/likes/items/p-1/like".into(), Some("[".into()), 400, "invalid_request"),
        (
            "POST",
            "/api/likes/items/p-1/like".into(),
            Some(r#"{"user":"no way!"}"#.into()),
            400,
            "invalid_request",
        ),
        (
            "POST",
            "/api/likes/items/p-1/unlike".into(),
            Some(r#"{"user":"bob"}"#.into()),
            403,
            "forbidden",
        ),
        ("GET", "/api/likes/items/p-1?bogus=1".into(), None, 400, "invalid_request"),
        ("GET", "/api/likes/top?limit=x".into(), None, 400, "invalid_request"),
        ("GET", "/api/files/stat/..%2Fetc%2Fpasswd".into(), None, 400, "invalid_request"),
        ("GET", "/api/files/content/..%2Fetc%2Fpasswd".into(), None, 400, "invalid_request"),
        ("GET", "/api/files?limit=x".into(), None, 400, "invalid_request"),
        ("GET", "/api/events?topics=bogus".into(), None, 400, "invalid_request"),
        ("GET", "/api/events?session=nope".into(), None, 401, "not_registered"),
        ("GET", "/api/logs".into(), None, 403, "forbidden"),
        (
            "POST",
            "/api/auth/signup".into(),
            Some(r#"{"name":"a b","password":"long enough"}"#.into()),
            400,
            "invalid_request",
        ),
        (
            "POST",
            "/api/auth/signup".into(),
            Some(r#"{"name":"newbie","password":"short"}"#.into()),
            400,
            "invalid_request",
        ),
        (
            "POST",
            "/api/auth/signup".into(),
            Some(r#"{"name":"exchange","password":"long enough"}"#.into()),
            400,
            "invalid_request",
        ),
        (
            "POST",
            "/api/auth/signup".into(),
            Some(r#"{"name":"alice","password":"long enough"}"#.into()),
            409,
            "name_taken",
        ),
        (
            "POST",
            "/api/auth/login".into(),
            Some(r#"{"name":"alice","password":"wrong password"}"#.into()),
            401,
            "unauthenticated",
        ),
        (
            "POST",
            "/api/auth/login".into(),
            Some(r#"{"name":"nobody","password":"wrong password"}"#.into()),
            401,
            "unauthenticated",
        ),
        (
            "POST",
            "/api/auth/token".into(),
            Some(r#"{"name":"alice","password":"x","ttl_ms":1}"#.into()),
            400,
            "invalid_request",
        ),
    ];
    for (method, path, body, status, code) in &cases {
        let body = match body {
            Some(text) => Body::Raw(text),
            None => Body::None,
        };
        http.fails(method, path, body, *status, code).await;
    }
    let boss = Http::manager(&system).await;
    boss.fails("GET", "/api/logs?level=debug", Body::None, 400, "invalid_request").await;
    // An unknown topic is refused naming every topic there is, and each of those opens.
    let (_, refused) = http.call("GET", "/api/events?topics=bogus", Body::None).await;
    let message = refused["error"]["message"].as_str().unwrap_or_default().to_owned();
    for topic in ["bank", "chat", "updates", "presence", "tasks", "likes", "prices", "logs"] {
        assert!(message.contains(topic), "{topic} in {message}");
        drop(Sse::open(&http, &format!("topics={topic}")).await);
    }

    // Nothing changed, and everything still serves.
    assert_eq!(http.ok("GET", "/balance/alice", Body::None).await["balance"], 1000);
    assert_eq!(http.ok("GET", "/api/coins/assets", Body::None).await, assets_before);
    let tasks = http.ok("GET", "/api/tasks", Body::None).await;
    assert_eq!(tasks["tasks"], json!([]));
    assert_eq!(http.ok("GET", "/api/likes/top", Body::None).await["items"], json!([]));
    let history = http.ok("GET", "/api/chat/history?room=all", Body::None).await;
    assert_eq!(history["messages"], json!([]));
    let say = json!({"session": session, "room": "all", "text": "still here"});
    http.ok("POST", "/api/chat/send", Body::Json(&say)).await;
    assert_eq!(http.ok("GET", "/api/health", Body::None).await["status"], "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_events_reach_browsers_and_direct_messages_only_their_parties() {
    let system = System::with_gateway();
    let (ann, ben, cid) = (
        Http::user(&system, "ann").await,
        Http::user(&system, "ben").await,
        Http::user(&system, "cid").await,
    );
    let boss = Http::manager(&system).await;
    let ann_session = ann.ok("POST", "/api/chat/sessions", Body::None).await;
    let ben_session = ben.ok("POST", "/api/chat/sessions", Body::None).await;
    let ann_token = ann_session["session"].as_str().expect("token").to_owned();
    let ben_token = ben_session["session"].as_str().expect("token").to_owned();

    let mut anns = Sse::open(&ann, &format!("session={ann_token}")).await;
    let mut cids = Sse::open(&cid, "").await;
    let mut boss_stream = Sse::open(&boss, "").await;
    // A stream is a signed-in user's, and may not keep someone else's chat session alive.
    let (status, _) = Http::new(&system).call("GET", "/api/events", Body::None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) =
        cid.call("GET", &format!("/api/events?session={ann_token}"), Body::None).await;
    assert_eq!((status.as_u16(), &body["error"]["code"]), (401, &json!("not_registered")));

    // Bank events: to their account's owner (and managers), not to others.
    cid.ok("POST", "/deposit/cid/7", Body::None).await;
    ann.ok("POST", "/deposit/ann/42", Body::None).await;
    let bank = anns.next_named("bank").await;
    assert_eq!(bank["subject"], "agora.bank.events.ann");
    assert_eq!(
        (bank["data"]["op"].as_str(), bank["data"]["balance"].as_i64()),
        (Some("deposit"), Some(42))
    );
    assert_eq!(cids.next_named("bank").await["subject"], "agora.bank.events.cid");
    boss_stream.next_where("bank", |event| event["subject"] == "agora.bank.events.ann").await;

    // Likes: the count, not who liked.
    ann.ok("POST", "/api/likes/items/p-9/like", Body::None).await;
    let like = cids.next_named("likes").await;
    assert_eq!(like["data"], json!({"item": "p-9", "count": 1}));

    let price = json!({"price": 26_000});
    boss.ok("PATCH", "/api/coins/admin/assets/TSLA", Body::Json(&price)).await;
    let price = cids.next_named("prices").await;
    assert_eq!(
        (price["data"]["symbol"].as_str(), price["data"]["price"].as_u64()),
        (Some("TSLA"), Some(26_000))
    );

    // Task events: to their owner.
    let submit = json!({"op": "sum", "args": {"numbers": [1, 2]}});
    let task = ann.ok("POST", "/api/tasks", Body::Json(&submit)).await;
    let completed = anns.next_where("tasks", |event| event["data"]["event"] == "completed").await;
    assert_eq!(completed["data"]["id"], task["id"]);
    assert!(
        completed["subject"].as_str().is_some_and(|s| s.starts_with("agora.tasks.events.ann."))
    );

    // A direct message reaches its two parties only; a room message everyone.
    let dm = json!({"session": ben_token, "to": "ann", "text": "psst"});
    ben.ok("POST", "/api/chat/send", Body::Json(&dm)).await;
    let room = json!({"session": ben_token, "room": "all", "text": "hello all"});
    ben.ok("POST", "/api/chat/send", Body::Json(&room)).await;
    let first = anns.next_named("chat").await;
    assert_eq!(
        (first["subject"].as_str(), first["data"]["text"].as_str(), first["data"]["from"].as_str()),
        (Some("agora.chat.dm.ann"), Some("psst"), Some("ben"))
    );
    assert_eq!(anns.next_named("chat").await["data"]["text"], "hello all");
    let seen = cids.next_named("chat").await;
    assert_eq!(seen["data"]["text"], "hello all", "cid's stream skipped the DM");
    assert_eq!(boss_stream.next_named("chat").await["data"]["text"], "hello all", "managers too");
    // Nobody else's bank or task events reached cid's stream meanwhile: the next bank event
    // cid sees is cid's own.
    cid.ok("POST", "/deposit/cid/1", Body::None).await;
    assert_eq!(cids.next_named("bank").await["subject"], "agora.bank.events.cid");

    // The session stays while its stream is open, well past the idle time (3 s in tests).
    tokio::time::sleep(Duration::from_secs(4)).await;
    let who = ann.ok("GET", "/api/chat/who", Body::None).await;
    let online: Vec<&str> =
        who["users"].as_array().expect("users").iter().filter_map(|u| u["name"].as_str()).collect();
    assert!(online.contains(&"ann"), "ann's stream keeps her session: {who}");
    assert!(!online.contains(&"ben"), "ben had no stream and no calls for 4 s: {who}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn components_publish_their_logs_on_nats() {
    let mut system = System::nats_only();
    let client = async_nats::connect(system.url()).await.expect("connects");
    let mut logs = client.subscribe("agora.logs.>").await.expect("subscribes");
    agora_nats::client::barrier(&client).await.expect("subscribed");
    system.start_ledger();
    let message = tokio::time::timeout(Duration::from_secs(10), logs.next())
        .await
        .expect("a log record within 10 s")
        .expect("a message");
    assert_eq!(message.subject.as_str(), "agora.logs.ledger");
    let record: LogRecord = serde_json::from_slice(&message.payload).expect("a log record");
    assert_eq!(record.service, "ledger");
    assert!(["info", "warn", "error"].contains(&record.level.as_str()), "{record:?}");
    assert!(!record.message.is_empty() && record.ts_ms > 0, "{record:?}");
}
