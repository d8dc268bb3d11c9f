//! End-to-end: the compose stack (`docker-compose.yaml`: three NATS nodes, every component
//! with its own user, replicas) brought up in Docker and driven through faults while under
//! load. Needs a Docker engine and the `agora:dev` image: `scripts/e2e` builds the image and
//! runs this (`scripts/test` calls it when Docker is present), so it is ignored by a plain
//! `cargo test`.
//!
//! One stack, phases in order, each checking an invariant:
//! 1. kill -9 a bank during thousands of concurrent transfers: money is conserved and every
//!    acknowledged transfer is applied exactly once (balances equal the acknowledged history);
//! 2. stop a NATS node (the one leading the task stream) during transfers and task
//!    submissions: every component connection it held moves to the other nodes, the stream
//!    gets a new leader, every acknowledged transfer and task survives, every instance serves
//!    with the node down, and the node comes back and catches up;
//! 3. cut a likes node off the network while likes arrive, reconnect it: every node reports
//!    the exact total;
//! 4. kill -9 a worker mid-task: every task completes;
//! 5. chat, coins and an upload in parts (then its removal) through the gateway's HTTP API,
//!    each person signed in as themselves;
//! 6. no single point of failure (active instances and their volumes lost, log leaders stopped);
//! 7. the stack's Prometheus scrapes every component through the gateway, with its rules.
//!
//! Before the faults: the task stream and the likes bucket are replicated on all three nodes;
//! and the doors are tried as an attacker would: a connection without TLS, a nats-server
//! without the cluster's certificate joining through the route port, the monitoring port from
//! the host, a person calling the ledger, the coin manager's subjects, or moving, reading and
//! liking as someone else, over NATS and through the gateway. Each is refused.
//!
//! The load is made by people: `ACCOUNTS` users sign up, and each moves only their own money.
//!
//! The stack is always taken down (`down -v`), also when a phase fails.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agora_devtools::health::ping;
use agora_devtools::process::{dev_password, dev_value};
use agora_devtools::up::DEV_MANAGER;
use agora_nats::connection::{NatsArgs, connect_with};
use agora_nats::subjects;
use agora_nats::tasks::wire::SubmitRequest;
use agora_nats::{AgoraClient, ClientError, ErrorCode};
use agora_tests::{eventually, get_json, prometheus_query};
use futures::StreamExt;
use serde_json::{Value, json};

/// How long the stack may take to answer after `up`.
const STARTUP: Duration = Duration::from_secs(240);
/// The service instances the stack runs, by micro service name.
const INSTANCES: [(&str, usize); 9] = [
    ("agora-auth", 1),
    ("agora-ledger", 1),
    ("agora-bank", 2),
    ("agora-coins", 1),
    ("agora-files", 2),
    ("agora-chat", 1),
    ("agora-tasks", 1),
    ("agora-worker", 3),
    ("agora-likes", 3),
];

/// A compose project on free host ports, taken down on drop.
struct Stack {
    compose: Vec<String>,
    project: String,
    ports: HashMap<&'static str, u16>,
}

/// Distinct free loopback ports for `keys` (every listener is held until all are chosen, so
/// no two keys get the same port).
fn free_ports(keys: &[&'static str]) -> HashMap<&'static str, u16> {
    let listeners: Vec<_> = keys
        .iter()
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("a free port"))
        .collect();
    keys.iter()
        .zip(&listeners)
        .map(|(key, listener)| (*key, listener.local_addr().expect("a bound port").port()))
        .collect()
}

const PORT_KEYS: [&str; 5] = [
    "AGORA_NATS_PORT_1",
    "AGORA_NATS_PORT_2",
    "AGORA_NATS_PORT_3",
    "AGORA_HTTP_PORT",
    "AGORA_PROMETHEUS_PORT",
];

fn root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

impl Stack {
    fn up() -> Self {
        let compose = if Command::new("docker")
            .args(["compose", "version"])
            .output()
            .is_ok_and(|o| o.status.success())
        {
            vec!["docker".to_owned(), "compose".to_owned()]
        } else {
            vec!["docker-compose".to_owned()]
        };
        let project = std::env::var("AGORA_E2E_PROJECT")
            .unwrap_or_else(|_| format!("agora-e2e-{}", std::process::id()));
        // A port found free can be taken by another process before Docker binds it: then the
        // stack is taken down and started again on other ports, a bounded number of times.
        let mut attempts = 0;
        loop {
            attempts += 1;
            let stack = Self {
                compose: compose.clone(),
                project: project.clone(),
                ports: free_ports(&PORT_KEYS),
            };
            let output = stack.run(&["up", "-d", "--no-build"]);
            if output.status.success() {
                return stack;
            }
            let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
            let taken = stderr.contains("port is already allocated")
                || stderr.contains("address already in use");
            assert!(taken && attempts < 3, "compose up (attempt {attempts}): {stderr}");
            // Dropping the stack takes it down.
            eprintln!("[e2e] a host port was taken meanwhile; starting again on other ports");
        }
    }

    fn command(&self) -> Command {
        let mut command = Command::new(&self.compose[0]);
        command.args(&self.compose[1..]).current_dir(root()).args([
            "-p",
            &self.project,
            "-f",
            "docker-compose.yaml",
        ]);
        for (key, port) in &self.ports {
            command.env(key, port.to_string());
        }
        command
    }

    fn run(&self, args: &[&str]) -> Output {
        eprintln!("[e2e] compose {}", args.join(" "));
        self.command().args(args).output().expect("compose runs")
    }

    fn ok(&self, args: &[&str]) {
        let output = self.run(args);
        assert!(
            output.status.success(),
            "compose {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    fn container(&self, service: &str) -> String {
        let output = self.run(&["ps", "-q", service]);
        let id = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        assert!(!id.is_empty(), "no container for {service}");
        id
    }

    fn docker(&self, args: &[&str]) {
        eprintln!("[e2e] docker {}", args.join(" "));
        let output = Command::new("docker").args(args).output().expect("docker runs");
        assert!(
            output.status.success(),
            "docker {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    fn network_of(&self, container: &str) -> String {
        let output = Command::new("docker")
            .args([
                "inspect",
                "-f",
                "{{range $name, $_ := .NetworkSettings.Networks}}{{$name}} {{end}}",
            ])
            .arg(container)
            .output()
            .expect("docker inspect");
        let networks = String::from_utf8_lossy(&output.stdout).to_string();
        networks.split_whitespace().next().expect("a network").to_owned()
    }

    fn nats_url(&self) -> String {
        ["AGORA_NATS_PORT_1", "AGORA_NATS_PORT_2", "AGORA_NATS_PORT_3"]
            .map(|key| format!("nats://127.0.0.1:{}", self.ports[key]))
            .join(",")
    }

    fn http(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.ports["AGORA_HTTP_PORT"])
    }

    /// `GET path` on the monitoring port of NATS node `node` (`nats-1`..`nats-3`): from
    /// inside its container (the port listens on the container's loopback only).
    async fn monitor(&self, node: &str, path: &str) -> Value {
        let url = format!("http://127.0.0.1:8222{path}");
        let output = self
            .command()
            .args(["exec", "-T", node, "/bin/agora", "health", "--timeout-ms", "5000"])
            .args(["--http", &url, "--body"])
            .output()
            .expect("compose runs");
        assert!(
            output.status.success(),
            "{node} {url}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("{node} {url}: {e}"))
    }

    /// The named component connections NATS node `node` holds, counted by name (the test's
    /// own and the health checks' short-lived `agora-cli` ones left out).
    async fn connections(&self, node: &str) -> BTreeMap<String, usize> {
        let connz = self.monitor(node, "/connz?limit=4096").await;
        let mut names = BTreeMap::new();
        for connection in connz["connections"].as_array().into_iter().flatten() {
            let name = connection["name"].as_str().unwrap_or("");
            if name.starts_with("agora-") && name != "agora-cli" && name != "agora-e2e" {
                *names.entry(name.to_owned()).or_default() += 1;
            }
        }
        names
    }

    /// A JetStream stream as NATS node `node` sees it (its `stream_detail` in `/jsz`).
    async fn stream(&self, node: &str, stream: &str) -> Value {
        let jsz = self.monitor(node, "/jsz?accounts=true&streams=true&config=true").await;
        let streams = jsz["account_details"].as_array().into_iter().flatten();
        let mut details =
            streams.flat_map(|a| a["stream_detail"].as_array().cloned().unwrap_or_default());
        details
            .find(|d| d["name"] == stream)
            .unwrap_or_else(|| panic!("{node} has no stream {stream}: {jsz}"))
    }
}

/// The compose stack's NATS nodes (service names, and their `server_name`s).
const NODES: [&str; 3] = ["nats-1", "nats-2", "nats-3"];
/// The task queue's stream, and the likes leader bucket's.
const REPLICATED: [&str; 2] = ["AGORA_TASKS", "KV_AGORA_LIKES"];

/// The named component connections of several nodes, together.
async fn connections_of(stack: &Stack, nodes: &[&str]) -> BTreeMap<String, usize> {
    let mut total = BTreeMap::new();
    for node in nodes {
        for (name, count) in stack.connections(node).await {
            *total.entry(name).or_default() += count;
        }
    }
    total
}

/// The node leading `stream` (as `asking` sees it), once there is one.
async fn stream_leader(stack: &Stack, asking: &str, stream: &str) -> String {
    eventually(Duration::from_secs(60), Duration::from_millis(500), async || {
        let detail = stack.stream(asking, stream).await;
        match detail["cluster"]["leader"].as_str().filter(|l| !l.is_empty()) {
            Some(leader) => Ok(leader.to_owned()),
            None => Err(format!("{stream} has no leader: {detail}")),
        }
    })
    .await
}

impl Drop for Stack {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let logs = self.run(&["logs", "--no-color", "--tail", "60"]);
            eprintln!("{}", String::from_utf8_lossy(&logs.stdout));
        }
        let output = self.run(&["down", "-v", "--remove-orphans", "-t", "5"]);
        if !output.status.success() {
            eprintln!("compose down: {}", String::from_utf8_lossy(&output.stderr));
        }
    }
}

/// The CA the stack's NATS certificate is checked against (scripts/make-certs).
fn ca() -> std::path::PathBuf {
    std::env::var_os("AGORA_TLS_DIR")
        .map_or_else(|| root().join(".agora/tls"), std::path::PathBuf::from)
        .join("ca.pem")
}

/// Connects as `nats` over TLS, retrying until the stack answers.
async fn connect(nats: NatsArgs) -> AgoraClient {
    let nats = nats.with_tls_ca(Some(ca()));
    let client = tokio::time::timeout(STARTUP, connect_with(&nats, |o| o.name("agora-e2e")))
        .await
        .expect("NATS reachable")
        .expect("logs in");
    AgoraClient::new(client).with_timeout(Duration::from_secs(5))
}

/// The `operator` component user: service discovery, stats and the likes digests.
async fn operator(stack: &Stack) -> AgoraClient {
    let password = dev_password("operator").expect("a development password");
    connect(NatsArgs::user(stack.nats_url(), "operator", &password)).await
}

/// The password the test gives person `name`.
fn password_of(name: &str) -> String {
    format!("e2e-pw-of-{name}")
}

/// Person `name`, signed up (if new) and signed in over NATS through the auth callout.
async fn person(stack: &Stack, name: &str) -> AgoraClient {
    let anonymous = connect(NatsArgs::anonymous(stack.nats_url())).await;
    let password = password_of(name);
    let signed_up = until_settled(name, || anonymous.signup(name, &password)).await;
    match signed_up {
        Ok(_) => {}
        Err(error) if error.code() == ErrorCode::NameTaken => {}
        Err(error) => panic!("{name} signs up: {error}"),
    }
    connect(NatsArgs::user(stack.nats_url(), name, &password_of(name))).await
}

/// The first manager (made by agora-auth from dev.env).
async fn manager(stack: &Stack) -> AgoraClient {
    let password = dev_value("AGORA_MANAGER_PASSWORD").expect("in dev.env");
    connect(NatsArgs::user(stack.nats_url(), DEV_MANAGER, &password)).await
}

fn code<T>(result: Result<T, ClientError>) -> Result<(), ErrorCode> {
    result.map(|_| ()).map_err(|e| e.code())
}

/// Waits until every expected instance answers `$SRV.PING` and the gateway is healthy.
async fn wait_ready(stack: &Stack, client: &AgoraClient, within: Duration) {
    let deadline = Instant::now() + within;
    let http = reqwest::Client::new();
    loop {
        let mut missing = Vec::new();
        for (service, expected) in INSTANCES {
            let found = ping(client.nats(), service, Duration::from_millis(700)).await;
            let found = found.map(|instances| instances.len()).unwrap_or(0);
            if found < expected {
                missing.push(format!("{service} {found}/{expected}"));
            }
        }
        let gateway = http.get(stack.http("/api/health")).send().await;
        if !gateway.is_ok_and(|r| r.status().is_success()) {
            missing.push("gateway".to_owned());
        }
        if missing.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "not ready: {}", missing.join(", "));
        eprintln!("[e2e] waiting for {}", missing.join(", "));
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// Retries `call` while its outcome is unknown or the service is busy, with the same id, until
/// it is acknowledged or definitely refused.
async fn until_settled<T, F, Fut>(what: &str, mut call: F) -> Result<T, ClientError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ClientError>>,
{
    let started = Instant::now();
    let deadline = started + Duration::from_secs(180);
    loop {
        let result = call().await;
        LONGEST_WAIT_MS.fetch_max(started.elapsed().as_millis() as u64, Ordering::SeqCst);
        match result {
            Ok(value) => return Ok(value),
            Err(error)
                if matches!(
                    error.code(),
                    ErrorCode::InvalidRequest
                        | ErrorCode::InsufficientFunds
                        | ErrorCode::InsufficientQuantity
                        | ErrorCode::NotFound
                        | ErrorCode::Conflict
                        | ErrorCode::Forbidden
                        | ErrorCode::NameTaken
                ) =>
            {
                return Err(error);
            }
            Err(error) => {
                assert!(Instant::now() < deadline, "{what}: still failing: {error}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

const ACCOUNTS: usize = 24;
const OPENING: i64 = 2_000;

fn account(index: usize) -> String {
    format!("e2e-{index}")
}

/// The acknowledged transfers, to compare balances with.
#[derive(Default)]
struct Book {
    applied: Vec<(usize, usize, i64)>,
    refused: u64,
}

/// `count` concurrent transfers between the test accounts (ids `<prefix>-<n>`), each retried
/// until settled; `fault` runs once `trigger` of them were acknowledged.
async fn transfers(
    people: &[AgoraClient],
    prefix: &str,
    count: u64,
    trigger: u64,
    fault: impl FnOnce() + Send,
    book: &Arc<Mutex<Book>>,
) {
    let settled = Arc::new(AtomicU64::new(0));
    let next = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for _ in 0..48 {
        let (people, book, settled, next) =
            (people.to_vec(), book.clone(), settled.clone(), next.clone());
        let prefix = prefix.to_owned();
        workers.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::SeqCst);
                if n >= count {
                    return;
                }
                let from = (n as usize * 7) % ACCOUNTS;
                let to = (from + 1 + (n as usize * 13) % (ACCOUNTS - 1)) % ACCOUNTS;
                let amount = 1 + (n as i64 * 37) % 400;
                let id = format!("{prefix}-{n}");
                let (from_name, to_name) = (account(from), account(to));
                // Each person moves only their own money.
                let client = &people[from];
                let result =
                    until_settled(&id, || client.transfer(&from_name, &to_name, amount, Some(&id)))
                        .await;
                let mut book = book.lock().expect("book");
                match result {
                    Ok(_) => book.applied.push((from, to, amount)),
                    Err(error) if error.code() == ErrorCode::InsufficientFunds => book.refused += 1,
                    Err(error) => panic!("transfer {id}: {error}"),
                }
                settled.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    while settled.load(Ordering::SeqCst) < trigger.min(count) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    fault();
    for worker in workers {
        worker.await.expect("transfer worker");
    }
}

/// Brings every test account back to the opening balance (ids `<prefix>-<n>`), so the books
/// start over.
async fn back_to_opening(people: &[AgoraClient], prefix: &str) {
    for (index, owner) in people.iter().enumerate().take(ACCOUNTS) {
        let name = account(index);
        let now = until_settled("balance", || owner.balance(&name)).await.expect("balance");
        let id = format!("{prefix}-{index}");
        let delta = OPENING - now.balance;
        if delta > 0 {
            until_settled(&id, || owner.deposit(&name, delta, Some(&id))).await.expect("deposit");
        } else if delta < 0 {
            until_settled(&id, || owner.withdraw(&name, -delta, Some(&id)))
                .await
                .expect("withdraw");
        }
    }
}

/// Every balance equals the opening balance plus the acknowledged transfers, once each.
async fn check_books(people: &[AgoraClient], book: &Mutex<Book>) {
    let mut expected = vec![OPENING; ACCOUNTS];
    let (applied, refused) = {
        let book = book.lock().expect("book");
        for &(from, to, amount) in &book.applied {
            expected[from] -= amount;
            expected[to] += amount;
        }
        (book.applied.len(), book.refused)
    };
    let mut actual = Vec::new();
    for (index, client) in people.iter().enumerate().take(ACCOUNTS) {
        let name = account(index);
        let balance = until_settled("balance", || client.balance(&name)).await.expect("balance");
        actual.push(balance.balance);
    }
    let total: i64 = actual.iter().sum();
    assert_eq!(total, OPENING * ACCOUNTS as i64, "money is conserved");
    assert_eq!(actual, expected, "every acknowledged transfer applied exactly once");
    eprintln!(
        "[e2e] books balance: {applied} transfers applied, {refused} refused (insufficient funds)"
    );
}

async fn wait_instances(client: &AgoraClient, service: &str, expected: usize) {
    eventually(Duration::from_secs(90), Duration::from_secs(1), async || {
        let found = ping(client.nats(), service, Duration::from_millis(700)).await;
        match found.map(|instances| instances.len()) {
            Ok(count) if count == expected => Ok(()),
            other => Err(format!("{service}: not {expected} instances ({other:?})")),
        }
    })
    .await;
}

fn sleep_task(id: &str, ms: u64) -> SubmitRequest {
    SubmitRequest { id: Some(id.to_owned()), ..SubmitRequest::new("sleep", &json!({ "ms": ms })) }
}

/// Waits until every task completed (none may fail or be lost).
async fn all_complete(client: &AgoraClient, ids: &[String]) {
    let deadline = Instant::now() + Duration::from_secs(180);
    for id in ids {
        loop {
            let task = until_settled(id, || client.wait_task(id, 5_000)).await.expect("task");
            match task.state.as_str() {
                "completed" => break,
                "queued" | "running" => {
                    assert!(Instant::now() < deadline, "{id} never completed: {task:?}");
                }
                _ => panic!("{id} did not complete: {task:?}"),
            }
        }
    }
}

/// The compose service (container host name) of the active instance of replicated `service`
/// (`ledger`, `tasks`, `chat`, `coins`), from its lease (read as that service's own user).
async fn active_instance(stack: &Stack, service: &str) -> String {
    let password = dev_password(service).expect("a development password");
    let client = connect(NatsArgs::user(stack.nats_url(), service, &password)).await;
    let js = async_nats::jetstream::new(client.nats().clone());
    eventually(Duration::from_secs(60), Duration::from_millis(200), async || {
        let bucket = js
            .get_key_value(subjects::replica::LEASE_BUCKET)
            .await
            .map_err(|e| format!("lease bucket: {e}"))?;
        let entry = bucket.get(service).await.map_err(|e| e.to_string())?;
        let holder: agora_nats::replica::lease::Holder =
            serde_json::from_slice(&entry.ok_or(format!("nobody holds the {service} lease"))?)
                .map_err(|e| e.to_string())?;
        // `<service>-<host>-<pid>-<nuid>`
        let rest = holder.instance.strip_prefix(&format!("{service}-")).unwrap_or_default();
        let host = rest.rsplitn(3, '-').nth(2).unwrap_or_default();
        if host.is_empty() {
            Err(format!("holder {}", holder.instance))
        } else {
            Ok(host.to_owned())
        }
    })
    .await
}

/// `kill -9` the container of a replicated service's instance and delete its volume.
fn kill_with_volume(stack: &Stack, container: &str) {
    stack.ok(&["kill", "-s", "SIGKILL", container]);
    stack.ok(&["rm", "-f", container]);
    stack.docker(&["volume", "rm", &format!("{}_{container}", stack.project)]);
}

/// Starts a killed instance again, on an empty volume: it restores from the replicated log and
/// stands by.
fn start_again(stack: &Stack, container: &str) {
    stack.ok(&["up", "-d", "--no-deps", container]);
}

/// The longest any call waited in [`until_settled`] since the last [`take_unavailability`].
static LONGEST_WAIT_MS: AtomicU64 = AtomicU64::new(0);

fn take_unavailability() -> Duration {
    Duration::from_millis(LONGEST_WAIT_MS.swap(0, Ordering::SeqCst))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Docker and the agora:dev image: run scripts/e2e"]
async fn the_compose_stack_survives_faults_under_load() {
    let stack = Stack::up();
    let client = operator(&stack).await;
    wait_ready(&stack, &client, STARTUP).await;
    eprintln!("[e2e] every service instance answers $SRV.PING");
    let started = Instant::now();

    // The state that must survive a node loss has a replica on every node.
    for stream in REPLICATED {
        let detail = stack.stream("nats-1", stream).await;
        assert_eq!(detail["config"]["num_replicas"], 3, "{stream}: {detail}");
        let peers = detail["cluster"]["replicas"].as_array().map_or(0, Vec::len);
        assert_eq!(peers, 2, "{stream} has two peers besides nats-1: {detail}");
    }
    let mut people = Vec::new();
    for index in 0..ACCOUNTS {
        people.push(person(&stack, &account(index)).await);
    }
    attacks(&stack, &people).await;
    eprintln!("[e2e] 0. every door refuses another's identity ({:?})", started.elapsed());

    // 1. kill -9 a bank during thousands of transfers.
    for (index, owner) in people.iter().enumerate() {
        let (name, id) = (account(index), format!("open-{index}"));
        until_settled(&id, || owner.deposit(&name, OPENING, Some(&id))).await.expect("opened");
    }
    let book = Arc::new(Mutex::new(Book::default()));
    transfers(&people, "kb", 3_000, 600, || stack.ok(&["kill", "-s", "SIGKILL", "bank-1"]), &book)
        .await;
    check_books(&people, &book).await;
    stack.ok(&["start", "bank-1"]);
    wait_instances(&client, "agora-bank", 2).await;
    eprintln!("[e2e] 1. bank killed under load: books balance ({:?})", started.elapsed());

    // 2. Stop the NATS node that leads the task stream during transfers and task submissions;
    //    bring it back.
    let victim = stream_leader(&stack, "nats-1", "AGORA_TASKS").await;
    let survivors: Vec<&str> = NODES.into_iter().filter(|node| *node != victim).collect();
    let everyone = connections_of(&stack, &NODES).await;
    let moving: usize = stack.connections(&victim).await.values().sum();
    assert!(moving > 0, "{victim} holds component connections to move: {everyone:?}");
    let keys: Vec<String> = (0..60).map(|n| format!("nats-down-{n}")).collect();
    // A recurring schedule runs on the server's scheduler (R3) through the node's loss.
    let ticking = agora_nats::tasks::wire::SchedulePutRequest {
        name: "e2e-tick".to_owned(),
        schedule: "@every 1s".to_owned(),
        time_zone: None,
        op: "sum".to_owned(),
        args: serde_json::value::RawValue::from_string(r#"{"numbers":[1]}"#.to_owned())
            .expect("JSON"),
        priority: None,
        paused: false,
    };
    until_settled("e2e-tick", || people[1].put_schedule(&ticking)).await.expect("scheduled");
    let ticking_since = Instant::now();
    // A workflow (a chain of naps beside a fan-in) runs on through the node's loss.
    let flow: agora_nats::tasks::wire::WorkflowSubmitRequest =
        serde_json::from_value(serde_json::json!({"id": "e2e-flow", "steps": [
            {"name": "nap0", "op": "sleep", "args": {"ms": 1500}},
            {"name": "nap1", "op": "sleep", "args": {"ms": 1500}, "after": ["nap0"]},
            {"name": "nap2", "op": "sleep", "args": {"ms": 1500}, "after": ["nap1"]},
            {"name": "a", "op": "count_words", "args": {"text": "one two"}},
            {"name": "b", "op": "count_words", "args": {"text": "three"}},
            {"name": "all", "op": "sum", "after": ["a", "b", "nap2"], "feed": "numbers"}
        ]}))
        .expect("a workflow");
    let workflow =
        until_settled("e2e-flow", || people[1].submit_workflow(&flow)).await.expect("submitted");
    // People submit tasks as themselves, and wait for their own.
    let submitter = {
        let client = people[0].clone();
        tokio::spawn(async move {
            let mut ids = Vec::new();
            for key in &keys {
                let task = sleep_task(key, 100);
                let view = until_settled(key, || client.submit(&task)).await.expect("submitted");
                ids.push(view.id);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            ids
        })
    };
    let stop = || stack.ok(&["stop", "-t", "2", &victim]);
    transfers(&people, "nd", 2_000, 300, stop, &book).await;
    let tasks = submitter.await.expect("submitter");
    check_books(&people, &book).await;
    all_complete(&people[0], &tasks).await;
    // Every component connection the node held is on another node now.
    eventually(Duration::from_secs(60), Duration::from_secs(1), async || {
        let now = connections_of(&stack, &survivors).await;
        let missing: Vec<&String> = everyone
            .iter()
            .filter(|(name, n)| now.get(*name) < Some(n))
            .map(|(name, _)| name)
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(format!("not reconnected from {victim}: {missing:?}"))
        }
    })
    .await;
    let leader = stream_leader(&stack, survivors[0], "AGORA_TASKS").await;
    assert_ne!(leader, victim, "the task stream's leader moved");
    wait_ready(&stack, &client, Duration::from_secs(60)).await;
    eprintln!(
        "[e2e] {victim} down: its {moving} component connections moved, AGORA_TASKS led by \
         {leader}, every instance serves"
    );
    stack.ok(&["start", &victim]);
    wait_ready(&stack, &client, Duration::from_secs(120)).await;
    // The node is back in the stream's group and has caught up.
    eventually(Duration::from_secs(120), Duration::from_secs(1), async || {
        let leader = stream_leader(&stack, survivors[0], "AGORA_TASKS").await;
        let detail = stack.stream(&leader, "AGORA_TASKS").await;
        let replicas = detail["cluster"]["replicas"].as_array().cloned().unwrap_or_default();
        let current = replicas.iter().filter(|r| r["current"] == true).count();
        let back = replicas.iter().any(|r| r["name"] == victim.as_str() && r["current"] == true);
        if back && current == 2 {
            Ok(())
        } else {
            Err(format!("{victim} did not catch up: {detail}"))
        }
    })
    .await;
    // The schedule ran through it all, once per tick.
    let pause = agora_nats::subjects::tasks::SCHEDULE_PAUSE;
    until_settled("e2e-tick-pause", || people[1].schedule_action(pause, "e2e-tick", None))
        .await
        .expect("paused");
    let ticked = ticking_since.elapsed().as_secs();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let list = agora_nats::tasks::wire::ListRequest { limit: Some(1_000), ..Default::default() };
    let runs: Vec<String> = people[1]
        .tasks(&list)
        .await
        .expect("tasks")
        .tasks
        .into_iter()
        .filter(|task| task.schedule.as_deref() == Some("e2e-tick"))
        .map(|task| task.id)
        .collect();
    assert!(
        runs.len() as u64 >= ticked / 2 && runs.len() as u64 <= ticked + 2,
        "{} runs of an @every 1s schedule in {ticked} s",
        runs.len()
    );
    all_complete(&people[1], &runs).await;
    let schedules = stream_leader(&stack, survivors[0], "AGORA_SCHEDULES").await;
    let detail = stack.stream(&schedules, "AGORA_SCHEDULES").await;
    assert_eq!(detail["cluster"]["replicas"].as_array().map(Vec::len), Some(2), "R3: {detail}");
    eprintln!("[e2e] a schedule ran {} times in {ticked} s across the node's loss", runs.len());
    let done = eventually(Duration::from_secs(120), Duration::from_millis(500), async || {
        let view = people[1].workflow(&workflow.id).await.map_err(|e| e.to_string())?;
        match view.state.as_str() {
            "running" => Err(format!("workflow {} still running: {view:?}", view.id)),
            _ => Ok(view),
        }
    })
    .await;
    assert_eq!(done.state, "completed", "{done:?}");
    let all = done.steps.as_deref().unwrap_or_default().iter().find(|s| s.name == "all");
    assert_eq!(all.and_then(|s| s.result.as_ref()).map(|r| r.get()), Some(r#"{"value":1503}"#));
    let steps_run = people[1]
        .tasks(&list)
        .await
        .expect("tasks")
        .tasks
        .into_iter()
        .filter(|task| task.workflow.as_deref() == Some(&done.id))
        .count();
    assert_eq!(steps_run, 6, "one task per step");
    eprintln!("[e2e] a workflow of 6 steps completed across the node's loss, one task each");
    eprintln!("[e2e] 2. NATS node stopped under load: nothing lost ({:?})", started.elapsed());

    // 3. Cut a likes node off the network while people like items (each like is its person's:
    //    a retry does not count twice); reconnect it.
    let likes_2 = stack.container("likes-2");
    let network = stack.network_of(&likes_2);
    let items: Vec<String> = (0..12).map(|n| format!("e2e-post-{n}")).collect();
    let likes: Vec<(usize, &String)> =
        (0..ACCOUNTS).flat_map(|p| items.iter().map(move |item| (p, item))).collect();
    let liked = AtomicU64::new(0);
    let cut = std::sync::Once::new();
    futures::stream::iter(&likes)
        .for_each_concurrent(16, |(who, item)| {
            let (people, liked, cut, stack) = (&people, &liked, &cut, &stack);
            let (likes_2, network) = (&likes_2, &network);
            async move {
                let key = format!("{who}-{item}");
                until_settled(&key, || people[*who].like(item, None)).await.expect("liked");
                if liked.fetch_add(1, Ordering::SeqCst) == 80 {
                    cut.call_once(|| stack.docker(&["network", "disconnect", network, likes_2]));
                }
            }
        })
        .await;
    // Cut off for real: the reachable nodes answer, likes-2 does not.
    let reachable =
        client.likes_digests(Duration::from_millis(800), &items, Some(3)).await.expect("digests");
    let nodes: Vec<&str> = reachable.iter().map(|d| d.node.as_str()).collect();
    assert!(!nodes.contains(&"likes-2") && nodes.len() == 2, "while cut off: {nodes:?}");
    stack.docker(&["network", "connect", &network, &likes_2]);
    eventually(Duration::from_secs(180), Duration::from_secs(1), async || {
        let digests = client
            .likes_digests(Duration::from_millis(800), &items, Some(3))
            .await
            .unwrap_or_default();
        let counts: BTreeMap<String, Vec<u64>> = digests
            .iter()
            .map(|d| {
                let counts = items.iter().map(|i| d.counts.get(i).copied().unwrap_or(0));
                (d.node.clone(), counts.collect())
            })
            .collect();
        let exact = counts.values().all(|c| c.iter().all(|&count| count == ACCOUNTS as u64));
        if counts.len() == 3 && exact {
            Ok(())
        } else {
            Err(format!("likes nodes disagree: {counts:?}"))
        }
    })
    .await;
    eprintln!(
        "[e2e] 3. likes node partitioned: all agree on {} likes ({:?})",
        likes.len(),
        started.elapsed()
    );

    // 4. kill -9 a worker mid-task: every task completes.
    let mut tasks = Vec::new();
    for n in 0..18 {
        let key = format!("worker-dies-{n}");
        let task = sleep_task(&key, 3_000);
        tasks.push(until_settled(&key, || people[1].submit(&task)).await.expect("submitted").id);
    }
    eventually(Duration::from_secs(60), Duration::from_millis(200), async || {
        let workers = client.workers(Duration::from_millis(700)).await.unwrap_or_default();
        let busy =
            workers.iter().find(|w| w.worker == "worker-1").is_some_and(|w| !w.current.is_empty());
        if busy { Ok(()) } else { Err(format!("worker-1 never ran a task: {workers:?}")) }
    })
    .await;
    stack.ok(&["kill", "-s", "SIGKILL", "worker-1"]);
    all_complete(&people[1], &tasks).await;
    stack.ok(&["start", "worker-1"]);
    eprintln!("[e2e] 4. worker killed mid-task: all complete ({:?})", started.elapsed());

    // 5. Chat and coins through the gateway's HTTP API, each person with their own token.
    let http = reqwest::Client::new();
    let ann = http_token(&stack, "e2e-ann", true).await;
    let call = |token: &str, method: reqwest::Method, path: &str, body: Option<Value>| {
        let mut request = http.request(method, stack.http(path)).bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        async move {
            let response = request.send().await.expect("the gateway answers");
            let status = response.status();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            assert!(status.is_success(), "{status}: {body}");
            body
        }
    };
    let session = call(&ann, reqwest::Method::POST, "/api/chat/sessions", Some(json!({}))).await;
    assert_eq!(session["name"], "e2e-ann", "the session is the signed-in user's: {session}");
    let session = session["session"].as_str().expect("a session").to_owned();
    let join = json!({"session": session, "room": "e2e"});
    call(&ann, reqwest::Method::POST, "/api/chat/join", Some(join)).await;
    let say = json!({"session": session, "room": "e2e", "text": "hello from compose"});
    call(&ann, reqwest::Method::POST, "/api/chat/send", Some(say)).await;
    let history = call(&ann, reqwest::Method::GET, "/api/chat/history?room=e2e", None).await;
    assert_eq!(history["messages"][0]["text"], "hello from compose", "{history}");
    assert_eq!(history["messages"][0]["from"], "e2e-ann", "{history}");

    let boss = http_token(&stack, DEV_MANAGER, false).await;
    let listing = json!({"symbol": "E2E", "name": "End to end", "price": 250, "quantity": 100});
    call(&boss, reqwest::Method::POST, "/api/coins/admin/assets", Some(listing.clone())).await;
    let buyer = http_token(&stack, "e2e-buyer", true).await;
    let refused = http
        .post(stack.http("/api/coins/admin/assets"))
        .bearer_auth(&buyer)
        .json(&listing)
        .send()
        .await
        .expect("answers");
    assert_eq!(refused.status(), 403, "a user does not list coins");
    let deposit = json!({"account": "e2e-buyer", "amount": 10_000, "id": "buyer-1"});
    call(&buyer, reqwest::Method::POST, "/api/bank/deposit", Some(deposit)).await;
    let order = json!({"user": "e2e-buyer", "symbol": "E2E", "quantity": 4, "id": "e2e-o-1"});
    let bought = call(&buyer, reqwest::Method::POST, "/api/coins/buy", Some(order)).await;
    assert_eq!(bought["state"], "done", "{bought}");
    let balance = call(&buyer, reqwest::Method::GET, "/api/bank/balance/e2e-buyer", None).await;
    assert_eq!(balance["balance"], 9_000, "{balance}");
    // Ann can neither read nor move the buyer's money; nobody without a session can.
    for (token, expected) in [(Some(&ann), 403), (None, 401)] {
        for (method, path) in [
            (reqwest::Method::GET, "/balance/e2e-buyer"),
            (reqwest::Method::POST, "/withdrawal/e2e-buyer/100"),
            (reqwest::Method::POST, "/transfer/e2e-buyer/e2e-ann/100"),
        ] {
            let mut request = http.request(method.clone(), stack.http(path));
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            let response = request.send().await.expect("answers");
            assert_eq!(response.status(), expected, "{method} {path} as {token:?}");
        }
    }
    let balance = call(&buyer, reqwest::Method::GET, "/api/bank/balance/e2e-buyer", None).await;
    assert_eq!(balance["balance"], 9_000, "nothing moved: {balance}");
    // Files: the manager uploads a file larger than a NATS message; it goes on in parts to
    // both file servers (one shared volume) and lands whole; ann reads it, and may not upload.
    let upload = |token: &str, body: Vec<u8>| {
        http.put(stack.http("/api/files/content/e2e/upload.bin"))
            .bearer_auth(token)
            .header("content-type", "application/octet-stream")
            .body(body)
            .send()
    };
    let file: Vec<u8> =
        (0..3_500_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8).collect();
    let uploaded = upload(&boss, file.clone()).await.expect("the gateway answers");
    assert_eq!(uploaded.status(), 200, "the manager's upload");
    let stat: Value = uploaded.json().await.expect("the stat");
    assert_eq!(stat["size"], file.len(), "{stat}");
    let back = http
        .get(stack.http("/api/files/content/e2e/upload.bin"))
        .bearer_auth(&ann)
        .send()
        .await
        .expect("the gateway answers");
    assert_eq!(back.status(), 200);
    assert!(back.bytes().await.expect("the file") == file.as_slice(), "served as uploaded");
    let refused = upload(&ann, b"mine".to_vec()).await.expect("the gateway answers");
    assert_eq!(refused.status(), 403, "a user does not upload");
    // Only the manager removes it, and then no server serves it.
    let remove = |token: &str| {
        http.delete(stack.http("/api/files/content/e2e/upload.bin")).bearer_auth(token).send()
    };
    let refused = remove(&ann).await.expect("the gateway answers");
    assert_eq!(refused.status(), 403, "a user does not remove files");
    assert_eq!(remove(&boss).await.expect("the gateway answers").status(), 200, "removed");
    for _ in 0..4 {
        let gone = http
            .get(stack.http("/api/files/stat/e2e/upload.bin"))
            .bearer_auth(&ann)
            .send()
            .await
            .expect("the gateway answers");
        assert_eq!(gone.status(), 404, "no file server serves a removed file");
    }
    eprintln!("[e2e] 5. chat, coins and an upload through the gateway ({:?})", started.elapsed());

    // 6. No single point of failure: kill -9 the active instance of each replicated service
    //    and delete its volume, under load; then stop the NATS node leading the ledger's log.
    take_unavailability();
    let ledger = active_instance(&stack, "ledger").await;
    let book = Arc::new(Mutex::new(Book::default()));
    back_to_opening(&people, "reopen").await;
    transfers(&people, "kl", 2_000, 300, || kill_with_volume(&stack, &ledger), &book).await;
    check_books(&people, &book).await;
    let now_active = active_instance(&stack, "ledger").await;
    assert_ne!(now_active, ledger, "the standby took over");
    start_again(&stack, &ledger);
    eprintln!(
        "[e2e] 6a. {ledger} and its volume lost under load: {now_active} took over, books \
         balance; longest wait {:?}",
        take_unavailability()
    );

    let tasks_active = active_instance(&stack, "tasks").await;
    let mut ids = Vec::new();
    for n in 0..40 {
        if n == 15 {
            kill_with_volume(&stack, &tasks_active);
        }
        let key = format!("replicated-{n}");
        let task = sleep_task(&key, 50);
        let view = until_settled(&key, || people[0].submit(&task)).await.expect("submitted");
        ids.push(view.id);
    }
    start_again(&stack, &tasks_active);
    all_complete(&people[0], &ids).await;
    let list = agora_nats::tasks::wire::ListRequest { limit: Some(1_000), ..Default::default() };
    let listed = until_settled("list", || people[0].tasks(&list)).await.expect("list");
    for id in &ids {
        assert_eq!(listed.tasks.iter().filter(|t| &t.id == id).count(), 1, "task {id} once");
    }
    eprintln!(
        "[e2e] 6b. {tasks_active} and its volume lost: every task once; longest wait {:?}",
        take_unavailability()
    );

    let chat_active = active_instance(&stack, "chat").await;
    let speaker = account(2);
    let talk = agora_nats::chat::client::ChatSession::register(people[2].clone(), &speaker)
        .await
        .expect("registers");
    let mut said = Vec::new();
    for n in 0..40 {
        if n == 15 {
            kill_with_volume(&stack, &chat_active);
        }
        let message = talk.message(Some("replicated"), None, &format!("replicated {n}"));
        until_settled("send", || people[2].chat_send(&message)).await.expect("recorded");
        said.push(format!("replicated {n}"));
    }
    start_again(&stack, &chat_active);
    let request = agora_nats::chat::wire::HistoryRequest {
        room: Some("replicated".into()),
        limit: Some(100),
        ..Default::default()
    };
    let history =
        until_settled("history", || people[2].chat_history(&request)).await.expect("history");
    let texts: Vec<String> = history.messages.iter().map(|m| m.text.clone()).collect();
    assert_eq!(texts, said, "every acknowledged message once, in order");
    eprintln!(
        "[e2e] 6c. {chat_active} and its volume lost: every message once; longest wait {:?}",
        take_unavailability()
    );

    let coins_active = active_instance(&stack, "coins").await;
    let buyer = &people[3];
    let name = account(3);
    until_settled("funds", || buyer.deposit(&name, 50_000, Some("coins-funds")))
        .await
        .expect("deposit");
    let before = until_settled("portfolio", || buyer.portfolio(&name)).await.expect("portfolio");
    let held = |p: &agora_nats::coins::wire::PortfolioReply| -> u64 {
        p.holdings.iter().filter(|h| h.symbol == "E2E").map(|h| h.quantity).sum()
    };
    for n in 0..20 {
        if n == 8 {
            kill_with_volume(&stack, &coins_active);
        }
        let id = format!("replicated-order-{n}");
        let order = until_settled(&id, || buyer.buy_coins(&name, "E2E", 1, Some(&id))).await;
        assert_eq!(order.expect("bought").state, "done");
    }
    start_again(&stack, &coins_active);
    let after = until_settled("portfolio", || buyer.portfolio(&name)).await.expect("portfolio");
    assert_eq!(held(&after), held(&before) + 20, "every acknowledged order once");
    assert_eq!(after.balance, before.balance - 20 * 250, "paid once per order");
    eprintln!(
        "[e2e] 6d. {coins_active} and its volume lost: every order once; longest wait {:?}",
        take_unavailability()
    );

    // The NATS node leading the ledger's log stops during transfers.
    let victim = stream_leader(&stack, "nats-1", "AGORA_LOG_LEDGER").await;
    let book = Arc::new(Mutex::new(Book::default()));
    back_to_opening(&people, "reopen2").await;
    take_unavailability();
    transfers(&people, "ll", 2_000, 300, || stack.ok(&["stop", "-t", "2", &victim]), &book).await;
    check_books(&people, &book).await;
    let survivor = NODES.into_iter().find(|n| *n != victim).expect("a survivor");
    let leader = stream_leader(&stack, survivor, "AGORA_LOG_LEDGER").await;
    assert_ne!(leader, victim, "the ledger log's leader moved");
    eprintln!(
        "[e2e] 6e. {victim} (leading AGORA_LOG_LEDGER) stopped under load: books balance, the \
         log is led by {leader}; longest wait {:?}",
        take_unavailability()
    );
    stack.ok(&["start", &victim]);
    wait_ready(&stack, &client, Duration::from_secs(120)).await;
    eprintln!("[e2e] 6. no single point of failure ({:?})", started.elapsed());

    // 7. The stack's Prometheus scrapes every component through the gateway, with its rules.
    prometheus_sees_everyone(&stack).await;
    eprintln!("[e2e] 7. Prometheus scrapes every component ({:?})", started.elapsed());
}

/// The stack's Prometheus: the gateway's target is up, every component has instances in it,
/// the transfers of this run are counted, and the alert rules evaluate.
async fn prometheus_sees_everyone(stack: &Stack) {
    let base = format!("http://127.0.0.1:{}", stack.ports["AGORA_PROMETHEUS_PORT"]);
    let query = |q: &'static str| prometheus_query(&base, q);
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let up = query("up{job=\"agora\"}").await.unwrap_or_default();
        let services: BTreeSet<String> = query("count by (service) (agora_up)")
            .await
            .unwrap_or_default()
            .iter()
            .filter_map(|r| r["metric"]["service"].as_str().map(str::to_owned))
            .collect();
        let transfers =
            query("sum(agora_requests_total{service=\"bank\",endpoint=\"transfer\",code=\"ok\"})")
                .await
                .unwrap_or_default();
        let expected = ["auth", "bank", "chat", "coins", "files", "gateway", "ledger", "likes"]
            .into_iter()
            .chain(["tasks", "worker"]);
        let everyone = expected.clone().all(|s| services.contains(s));
        let counted =
            transfers.first().and_then(|r| r["value"][1].as_str()).is_some_and(|v| v != "0");
        if up.first().is_some_and(|r| r["value"][1] == "1") && everyone && counted {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus: up {up:?}, services {services:?}, transfers {transfers:?}"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let rules = get_json(&format!("{base}/api/v1/rules")).await.expect("Prometheus answers");
    let health: Vec<&Value> = rules["data"]["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|g| g["rules"].as_array().into_iter().flatten())
        .map(|r| &r["health"])
        .collect();
    assert!(health.len() >= 6 && health.iter().all(|h| *h == "ok"), "{rules}");
}

/// An API token of `name` from the gateway (signed up first when `sign_up`).
async fn http_token(stack: &Stack, name: &str, sign_up: bool) -> String {
    let http = reqwest::Client::new();
    let password = if sign_up {
        password_of(name)
    } else {
        dev_value("AGORA_MANAGER_PASSWORD").expect("in dev.env")
    };
    let credentials = json!({"name": name, "password": password});
    if sign_up {
        let response = http
            .post(stack.http("/api/auth/signup"))
            .json(&credentials)
            .send()
            .await
            .expect("answers");
        assert!(response.status().is_success() || response.status() == 409, "signing up {name}");
    }
    let response =
        http.post(stack.http("/api/auth/token")).json(&credentials).send().await.expect("answers");
    let body: Value = response.json().await.expect("JSON");
    body["token"].as_str().unwrap_or_else(|| panic!("a token for {name}: {body}")).to_owned()
}

/// Every door tried with someone else's identity, or none.
async fn attacks(stack: &Stack, people: &[AgoraClient]) {
    let (alice, bob) = (&people[0], &people[1]);
    let bob_name = account(1);
    // A person may not call the ledger, nor the coin manager's subjects, nor act as another.
    let victim = agora_core::AccountId::parse(&bob_name).expect("an account");
    let ledger = alice.request_bytes(&subjects::ledger::get(&victim), "{}".into()).await;
    assert_eq!(code(ledger), Err(ErrorCode::Forbidden), "a person calls the ledger");
    assert_eq!(code(alice.remove_asset("BTC").await), Err(ErrorCode::Forbidden), "delisting");
    let moved = alice.transfer(&bob_name, &account(0), 1, None).await;
    assert_eq!(code(moved), Err(ErrorCode::Forbidden), "alice moves bob's money");
    assert_eq!(code(alice.withdraw(&bob_name, 1, None).await), Err(ErrorCode::Forbidden));
    assert_eq!(code(alice.balance(&bob_name).await), Err(ErrorCode::Forbidden), "reads bob's");
    assert_eq!(code(alice.like("e2e-x", Some(&bob_name)).await), Err(ErrorCode::Forbidden));
    // A manager reads anyone's balance but moves nobody's money.
    let boss = manager(stack).await;
    boss.balance(&bob_name).await.expect("a manager reads bob's balance");
    assert_eq!(code(boss.withdraw(&bob_name, 1, None).await), Err(ErrorCode::Forbidden));
    // Bob's inbox and the whole inbox space are not alice's to read.
    let spy = alice.nats().subscribe(format!("_INBOX.{bob_name}.>")).await.expect("sent");
    let mut spy = spy.take_until(Box::pin(tokio::time::sleep(Duration::from_secs(3))));
    bob.balance(&bob_name).await.expect("bob reads his own balance");
    assert!(spy.next().await.is_none(), "alice read a reply meant for bob");

    // A connection without TLS is refused.
    let plain = NatsArgs::user(stack.nats_url(), &account(0), &password_of(&account(0)));
    let attempt = agora_nats::connection::connect_once(&plain, Duration::from_secs(5), |o| o);
    assert!(attempt.await.is_err(), "a connection without TLS (and the CA) is refused");

    // The monitoring port is not published on the host.
    for node in NODES {
        let published = stack.run(&["port", node, "8222"]);
        let text = String::from_utf8_lossy(&published.stdout).trim().to_owned();
        assert!(text.is_empty() || text.ends_with(":0"), "{node} monitoring published: {text}");
    }

    // A nats-server without the cluster's certificate cannot join through the route port.
    let network = stack.network_of(&stack.container("nats-1"));
    let rogue = Rogue::start(&network);
    tokio::time::sleep(Duration::from_secs(5)).await;
    for node in NODES {
        let routez = stack.monitor(node, "/routez").await;
        let names: Vec<&str> = routez["routes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["remote_name"].as_str())
            .collect();
        assert!(!names.contains(&"rogue"), "the rogue server joined {node}: {names:?}");
        let others = NODES.iter().filter(|n| **n != node);
        assert!(others.clone().all(|n| names.contains(n)), "{node} routes: {names:?}");
    }
    drop(rogue);
}

/// A nats-server with no certificate on the stack's network, routing to every node; removed on
/// drop.
struct Rogue {
    name: String,
}

impl Rogue {
    fn start(network: &str) -> Self {
        let name = format!("agora-e2e-rogue-{}", std::process::id());
        let image = std::env::var("AGORA_IMAGE").unwrap_or_else(|_| "agora:dev".to_owned());
        let output = Command::new("docker")
            .args(["run", "-d", "--rm", "--name", &name, "--network", network, &image])
            .args(["/bin/nats-server", "-n", "rogue", "-p", "4222", "--cluster_name", "agora"])
            .args(["--cluster", "nats://0.0.0.0:6222", "--routes"])
            .arg("nats-route://nats-1:6222,nats-route://nats-2:6222,nats-route://nats-3:6222")
            .output()
            .expect("docker runs");
        assert!(output.status.success(), "rogue: {}", String::from_utf8_lossy(&output.stderr));
        Self { name }
    }
}

impl Drop for Rogue {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rm", "-f", &self.name]).output();
    }
}
