//! # agora-tests: the system-test harness
//!
//! Every test runs real processes: a `nats-server` on a free loopback port with JetStream and
//! a temporary store, and the real `agora-ledger` / `agora-bank` binaries (built by
//! `cargo build --workspace --bins`, which `scripts/test` does first). Everything is killed
//! when the [`System`] is dropped; if the test is failing, the components' logs are printed.

use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agora_devtools::process::{Component, NatsServer, NatsServerOptions, component_binary};
use agora_nats::connection::{NatsArgs, connect_once};
use agora_nats::{AgoraClient, ClientError, ErrorCode};
use tempfile::TempDir;

/// What the gateway prints once it listens, before its URL.
const GATEWAY_LISTENING: &str = "agora-gateway listening on ";

/// Runs `check` every `every` until it gives a value, and returns it; once `within` has passed
/// the test fails with `check`'s last complaint. Every wait in the tests is this one (or a
/// receive with a deadline): none waits without one.
pub async fn eventually<T>(
    within: Duration,
    every: Duration,
    mut check: impl AsyncFnMut() -> Result<T, String>,
) -> T {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match check().await {
            Ok(value) => return value,
            Err(complaint) => {
                assert!(tokio::time::Instant::now() < deadline, "after {within:?}: {complaint}");
                tokio::time::sleep(every).await;
            }
        }
    }
}

/// [`eventually`] for a condition: waits until `check` holds, failing with `what` after
/// `within`.
/// Waits until task `id` finished (fails the test after 60 s); returns it.
pub async fn finished_task(
    client: &agora_nats::AgoraClient,
    id: &str,
) -> agora_nats::tasks::wire::TaskView {
    eventually(Duration::from_secs(60), Duration::ZERO, async || {
        let task = client.wait_task(id, 10_000).await.map_err(|e| e.to_string())?;
        match task.state.as_str() {
            "queued" | "running" => Err(format!("task {id} did not finish: {task:?}")),
            _ => Ok(task),
        }
    })
    .await
}

pub async fn wait_until(within: Duration, what: &str, mut check: impl AsyncFnMut() -> bool) {
    eventually(within, POLL, async || if check().await { Ok(()) } else { Err(what.to_owned()) })
        .await;
}

/// How often [`wait_until`] looks.
pub const POLL: Duration = Duration::from_millis(50);

/// [`eventually`] for threads that are not async (the browser driver's callers, harness
/// start-up).
pub fn eventually_blocking<T>(
    within: Duration,
    every: Duration,
    mut check: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = std::time::Instant::now() + within;
    loop {
        match check() {
            Ok(value) => return value,
            Err(complaint) => {
                assert!(std::time::Instant::now() < deadline, "after {within:?}: {complaint}");
                std::thread::sleep(every);
            }
        }
    }
}

/// The error code of a request that must be refused (panics if it succeeded).
pub fn code<T: std::fmt::Debug>(result: Result<T, ClientError>) -> ErrorCode {
    result.expect_err("the request must be refused").code()
}

/// How long the test task service lets a worker hold a task without a heartbeat: short, so
/// crash tests see redeliveries quickly.
pub const TEST_ACK_WAIT_MS: u64 = 1_500;

/// How long the test chat service waits for heartbeats before a user is offline: short, so
/// presence tests see expiries quickly.
pub const TEST_PRESENCE_TIMEOUT_MS: u64 = 1_500;

/// The first manager of the test auth service (made at its first start).
pub const TEST_MANAGER: &str = "boss";

/// The password the tests give user `name` (a function of the name, so any test can sign
/// anyone in; long enough for the policy).
pub fn test_password(name: &str) -> String {
    format!("pw-of-{name}-4f9c")
}

/// The test likes nodes' leader lease: short, so leader-death tests do not wait long.
pub const TEST_LIKES_LEASE_MS: u64 = 1_500;
/// The test likes leader's anti-entropy round interval.
pub const TEST_LIKES_SYNC_INTERVAL_MS: u64 = 500;

/// A running Agora: nats-server plus whichever components a test starts.
#[derive(Debug)]
pub struct System {
    /// Whether nats-server checks users and permissions (see [`System::nats_with_auth`]).
    pub auth: bool,
    pub dir: TempDir,
    pub nats: NatsServer,
    pub ledger: Option<Component>,
    pub banks: Vec<Option<Component>>,
    pub tasks: Option<Component>,
    /// Extra flags the task service was started with (kept for restarts).
    pub tasks_args: Vec<String>,
    pub workers: Vec<Option<Component>>,
    pub chat: Option<Component>,
    /// Extra flags the chat service was started with (kept for restarts).
    pub chat_args: Vec<String>,
    pub coins: Option<Component>,
    pub files: Vec<Option<Component>>,
    pub likes: Vec<Option<Component>>,
    /// The proxy each likes node reaches NATS through, if it has one (to cut it off).
    pub likes_proxies: Vec<Option<Proxy>>,
    pub gateway: Option<Component>,
    /// The gateway's base URL (`http://127.0.0.1:<port>`), once started.
    pub gateway_url: String,
    /// The auth service (started with the auth config, and for the gateway).
    pub auth_service: Option<Component>,
    /// Environment every component started from now on gets (an OTLP endpoint, ...).
    pub env: Vec<(String, String)>,
}

impl System {
    /// nats-server and a ledger, no banks yet.
    pub fn start() -> Self {
        let mut system = Self::nats_only();
        system.start_ledger();
        system
    }

    /// Only nats-server.
    pub fn nats_only() -> Self {
        Self::nats_with(false)
    }

    /// Only nats-server with the accounts, users and permissions of
    /// `nats/config/accounts.conf`, and the auth service that decides who people are: every
    /// component started from now on logs in as its role with its development password;
    /// people sign up and in ([`Self::person`], [`Self::manager`]).
    pub fn nats_with_auth() -> Self {
        let mut system = Self::nats_with(true);
        system.start_auth();
        system
    }

    fn nats_with(auth: bool) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let options = NatsServerOptions { port: None, dir: dir.path().join("nats"), auth };
        let nats = NatsServer::start(&options)
            .expect("nats-server starts (scripts/install-nats-server installs it)");
        Self {
            auth,
            dir,
            nats,
            ledger: None,
            banks: Vec::new(),
            tasks: None,
            tasks_args: Vec::new(),
            workers: Vec::new(),
            chat: None,
            chat_args: Vec::new(),
            coins: None,
            files: Vec::new(),
            likes: Vec::new(),
            likes_proxies: Vec::new(),
            gateway: None,
            gateway_url: String::new(),
            auth_service: None,
            env: Vec::new(),
        }
    }

    /// Starts (or restarts, on the same data directory) the auth service, with the
    /// development issuer key and first manager ([`TEST_MANAGER`]).
    pub fn start_auth(&mut self) {
        let args = vec![
            "--server".to_owned(),
            self.url().to_owned(),
            "--data-dir".to_owned(),
            self.dir.path().join("auth").display().to_string(),
            "--manager-name".to_owned(),
            TEST_MANAGER.to_owned(),
        ];
        let dev = |key: &str| agora_devtools::process::dev_value(key).unwrap_or_default();
        let (seed, kick) = (dev("AGORA_AUTH_ISSUER_SEED"), dev("NATS_PASSWORD_AUTH_KICK"));
        let password = test_password(TEST_MANAGER);
        let envs = [
            ("AGORA_AUTH_ISSUER_SEED", seed.as_str()),
            ("AGORA_MANAGER_PASSWORD", &password),
            ("AGORA_AUTH_KICK_USER", "auth-kick"),
            ("AGORA_AUTH_KICK_PASSWORD", &kick),
        ];
        let auth = self.spawn_with("auth", "agora-auth", &args, "auth", &envs);
        self.auth_service = Some(auth);
    }

    /// `kill -9` the auth service.
    pub fn kill_auth(&mut self) {
        if let Some(mut auth) = self.auth_service.take() {
            auth.kill_hard();
        }
    }

    /// A person's connection: `name` signed up (if new) with [`test_password`] and signed in
    /// to NATS with it (the auth config only).
    pub async fn person(&self, name: &str) -> AgoraClient {
        self.sign_up(name).await;
        self.client_with(name, &test_password(name)).await.expect("a person signs in")
    }

    /// Signs `name` up with [`test_password`] (anonymously; an existing name is fine).
    pub async fn sign_up(&self, name: &str) {
        let anonymous = self.anonymous().await;
        match anonymous.signup(name, &test_password(name)).await {
            Ok(_) => {}
            Err(error) if error.code() == ErrorCode::NameTaken => {}
            Err(error) => panic!("{name} signs up: {error}"),
        }
    }

    /// A bearer token of `name` for the gateway: signed up through it if new (the first
    /// manager, [`TEST_MANAGER`], exists already).
    pub async fn http_token(&self, name: &str) -> String {
        let http = reqwest::Client::new();
        let credentials = serde_json::json!({"name": name, "password": test_password(name)});
        if name != TEST_MANAGER {
            let response = http
                .post(format!("{}/api/auth/signup", self.gateway_url))
                .json(&credentials)
                .send()
                .await
                .expect("the gateway answers");
            let status = response.status().as_u16();
            let body: serde_json::Value = response.json().await.unwrap_or_default();
            assert!(status == 200 || body["error"]["code"] == "name_taken", "{name}: {body}");
        }
        let issued: serde_json::Value = http
            .post(format!("{}/api/auth/token", self.gateway_url))
            .json(&credentials)
            .send()
            .await
            .expect("the gateway answers")
            .json()
            .await
            .expect("JSON");
        issued["token"]
            .as_str()
            .unwrap_or_else(|| panic!("a token for {name}: {issued}"))
            .to_owned()
    }

    /// The `agora` command line, pointed at this system's server, its saved token (if a test
    /// logs in) kept in this system's directory rather than the user's home.
    pub fn cli(&self) -> std::process::Command {
        let binary = component_binary("agora").expect("agora is built");
        let mut command = std::process::Command::new(binary);
        command
            .env("NATS_URL", self.url())
            .env("AGORA_CREDENTIALS", self.dir.path().join("credentials.json"))
            .env_remove("NATS_USER")
            .env_remove("NATS_PASSWORD")
            .env_remove("AGORA_PASSWORD");
        command
    }

    /// The first manager's connection (the auth config only).
    pub async fn manager(&self) -> AgoraClient {
        self.client_with(TEST_MANAGER, &test_password(TEST_MANAGER)).await.expect("the manager")
    }

    /// A connection without credentials.
    pub async fn anonymous(&self) -> AgoraClient {
        let nats = NatsArgs::anonymous(self.url());
        let client =
            connect_once(&nats, Duration::from_secs(3), |options| options).await.expect("connects");
        AgoraClient::new(client).with_timeout(Duration::from_secs(5))
    }

    /// Every component once (ledger, a bank, coins, tasks with a worker, chat, a file server,
    /// a likes node, auth) and the gateway in front.
    pub fn with_gateway() -> Self {
        let mut system = Self::with_coins(1);
        std::fs::create_dir_all(system.files_root()).expect("served directory");
        system.add_files(&["--chunk-bytes", "65536"]);
        system.start_chat();
        system.start_tasks();
        system.add_worker(&[]);
        system.add_likes(false);
        system.start_gateway();
        system
    }

    /// Starts the gateway on a loopback port the OS picks when it binds (no race with other
    /// tests for a port); its URL is the one it announces. The auth service too, if it does
    /// not run yet (the gateway's sessions are its tokens).
    pub fn start_gateway(&mut self) {
        self.start_gateway_with(&[]);
    }

    /// [`Self::start_gateway`] with `extra` flags.
    pub fn start_gateway_with(&mut self, extra: &[&str]) {
        if self.auth_service.is_none() {
            self.start_auth();
        }
        let args: Vec<String> =
            ["--server", self.url(), "--listen", "127.0.0.1:0", "--chat-idle-ms", "3000"]
                .iter()
                .chain(extra)
                .map(|s| s.to_string())
                .collect();
        let gateway = self.spawn("gateway", "agora-gateway", &args, "gateway");
        let log = std::fs::read_to_string(gateway.log()).expect("the gateway's log");
        let url = log
            .lines()
            .rev()
            .find_map(|line| line.strip_prefix(GATEWAY_LISTENING))
            .expect("the gateway says where it listens")
            .trim()
            .to_owned();
        self.gateway = Some(gateway);
        self.gateway_url = url;
    }

    /// The directory the test file servers serve.
    pub fn files_root(&self) -> PathBuf {
        self.dir.path().join("served")
    }

    /// nats-server and `servers` file servers (with `args` added to their flags) over
    /// [`Self::files_root`], which the test fills.
    pub fn with_files(servers: usize, args: &[&str]) -> Self {
        let mut system = Self::nats_only();
        std::fs::create_dir_all(system.files_root()).expect("served directory");
        for _ in 0..servers {
            system.add_files(args);
        }
        system
    }

    /// Starts one more file server; returns its index.
    pub fn add_files(&mut self, extra: &[&str]) -> usize {
        let index = self.files.len();
        let mut args: Vec<String> = vec![
            "--server".to_owned(),
            self.url().to_owned(),
            "--root".to_owned(),
            self.files_root().display().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let server = self.spawn(&format!("files-{index}"), "agora-files", &args, "files");
        self.files.push(Some(server));
        index
    }

    /// nats-server, a ledger, `banks` banks and the coins service.
    pub fn with_coins(banks: usize) -> Self {
        let mut system = Self::with_banks(banks);
        system.start_coins();
        system
    }

    /// Starts (or restarts, on the same data directory) the coins service.
    pub fn start_coins(&mut self) {
        let args: Vec<String> = [
            "--server",
            self.url(),
            "--data-dir",
            &self.dir.path().join("coins").display().to_string(),
            "--ledger-timeout-ms",
            "3000",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let coins = self.spawn("coins", "agora-coins", &args, "coins");
        self.coins = Some(coins);
    }

    /// `kill -9` the coins service.
    pub fn kill_coins(&mut self) {
        if let Some(mut coins) = self.coins.take() {
            coins.kill_hard();
        }
    }

    /// nats-server and `nodes` likes nodes, `likes-0`, `likes-1`, ...
    pub fn with_likes(nodes: usize) -> Self {
        let mut system = Self::nats_only();
        for _ in 0..nodes {
            system.add_likes(false);
        }
        system
    }

    /// Starts the next likes node (reaching NATS through a [`Proxy`] if `proxied`, so a test
    /// can cut it off); returns its index.
    pub fn add_likes(&mut self, proxied: bool) -> usize {
        let proxy = proxied.then(|| Proxy::start(self.url()));
        self.likes.push(None);
        self.likes_proxies.push(proxy);
        let index = self.likes.len() - 1;
        self.start_likes(index);
        index
    }

    /// Starts (or restarts, on the same data directory) likes node `index`.
    pub fn start_likes(&mut self, index: usize) {
        let url = match &self.likes_proxies[index] {
            Some(proxy) => proxy.url(),
            None => self.url().to_owned(),
        };
        let args: Vec<String> = [
            "--server",
            &url,
            "--data-dir",
            &self.dir.path().join(format!("likes-{index}")).display().to_string(),
            "--node-id",
            &format!("likes-{index}"),
            "--lease-ms",
            &TEST_LIKES_LEASE_MS.to_string(),
            "--sync-interval-ms",
            &TEST_LIKES_SYNC_INTERVAL_MS.to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let node = self.spawn(&format!("likes-{index}"), "agora-likes", &args, "likes");
        self.likes[index] = Some(node);
    }

    /// `kill -9` likes node `index`.
    pub fn kill_likes(&mut self, index: usize) {
        if let Some(mut node) = self.likes[index].take() {
            node.kill_hard();
        }
    }

    /// nats-server and the chat service (presence timeout [`TEST_PRESENCE_TIMEOUT_MS`], with
    /// `chat_args` added to its flags).
    pub fn with_chat(chat_args: &[&str]) -> Self {
        let mut system = Self::nats_only();
        system.chat_args = chat_args.iter().map(|s| s.to_string()).collect();
        system.start_chat();
        system
    }

    /// Starts (or restarts, on the same data directory) the chat service.
    pub fn start_chat(&mut self) {
        let mut args = vec![
            "--server".to_owned(),
            self.url().to_owned(),
            "--data-dir".to_owned(),
            self.dir.path().join("chat").display().to_string(),
            "--presence-timeout-ms".to_owned(),
            TEST_PRESENCE_TIMEOUT_MS.to_string(),
        ];
        args.extend(self.chat_args.iter().cloned());
        let chat = self.spawn("chat", "agora-chat", &args, "chat");
        self.chat = Some(chat);
    }

    /// `kill -9` the chat service.
    pub fn kill_chat(&mut self) {
        if let Some(mut chat) = self.chat.take() {
            chat.kill_hard();
        }
    }

    /// nats-server, the task service (with `tasks_args` added to its flags) and `workers`
    /// workers named `w0`, `w1`, ...
    pub fn with_tasks(workers: usize, tasks_args: &[&str]) -> Self {
        let mut system = Self::nats_only();
        system.tasks_args = tasks_args.iter().map(|s| s.to_string()).collect();
        system.start_tasks();
        for _ in 0..workers {
            system.add_worker(&[]);
        }
        system
    }

    /// Starts (or restarts, on the same data directory) the task service.
    pub fn start_tasks(&mut self) {
        let mut args = vec![
            "--server".to_owned(),
            self.url().to_owned(),
            "--data-dir".to_owned(),
            self.dir.path().join("tasks").display().to_string(),
            "--ack-wait-ms".to_owned(),
            TEST_ACK_WAIT_MS.to_string(),
        ];
        args.extend(self.tasks_args.iter().cloned());
        let tasks = self.spawn("tasks", "agora-tasks", &args, "tasks");
        self.tasks = Some(tasks);
    }

    /// `kill -9` the task service.
    pub fn kill_tasks(&mut self) {
        if let Some(mut tasks) = self.tasks.take() {
            tasks.kill_hard();
        }
    }

    /// Starts worker `w<index>` (the next index) with extra flags; returns its index.
    pub fn add_worker(&mut self, extra: &[&str]) -> usize {
        let index = self.workers.len();
        let mut args: Vec<String> = [
            "--server",
            self.url(),
            "--worker-id",
            &format!("w{index}"),
            "--retry-backoff-ms",
            "50",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        let worker = self.spawn(&format!("w{index}"), "agora-worker", &args, "worker");
        self.workers.push(Some(worker));
        index
    }

    /// `kill -9` worker `index`.
    pub fn kill_worker(&mut self, index: usize) {
        if let Some(mut worker) = self.workers[index].take() {
            worker.kill_hard();
        }
    }

    /// nats-server, a ledger and `banks` bank instances.
    pub fn with_banks(banks: usize) -> Self {
        let mut system = Self::start();
        for _ in 0..banks {
            system.add_bank();
        }
        system
    }

    pub fn url(&self) -> &str {
        self.nats.url()
    }

    fn logs(&self) -> PathBuf {
        self.dir.path().join("logs")
    }

    /// Starts component `binary` as `name`, logging in as `role` when the server checks users.
    fn spawn(&self, name: &str, binary: &str, args: &[String], role: &str) -> Component {
        self.spawn_with(name, binary, args, role, &[])
    }

    /// [`Self::spawn`] with more environment.
    fn spawn_with(
        &self,
        name: &str,
        binary: &str,
        args: &[String],
        role: &str,
        more: &[(&str, &str)],
    ) -> Component {
        let path = component_binary(binary).unwrap_or_else(|e| panic!("{binary} is built: {e}"));
        let password = agora_devtools::process::dev_password(role).unwrap_or_default();
        let mut envs: Vec<(&str, &str)> = if self.auth {
            vec![("NATS_USER", role), ("NATS_PASSWORD", &password)]
        } else {
            Vec::new()
        };
        envs.extend(self.env.iter().map(|(key, value)| (key.as_str(), value.as_str())));
        envs.extend_from_slice(more);
        Component::start(name, &path, args, &envs, &self.logs())
            .unwrap_or_else(|e| panic!("{name} starts: {e:#}"))
    }

    /// Starts another instance of the replicated service `service` (`ledger`, `tasks`, `chat`,
    /// `coins`) on a data directory of its own, `data` (under the test's directory), with
    /// `extra` flags; returns once it follows the log as a standby.
    pub fn start_standby(&self, service: &str, data: &str, extra: &[&str]) -> Component {
        self.start_instance(service, data, extra, agora_devtools::process::STANDBY_LINE)
    }

    /// [`Self::start_standby`], returning once the instance prints `line` (`READY_LINE` for
    /// one that becomes the active instance).
    pub fn start_instance(
        &self,
        service: &str,
        data: &str,
        extra: &[&str],
        line: &str,
    ) -> Component {
        self.start_instance_via(self.url(), service, data, extra, line)
    }

    /// [`Self::start_instance`], reaching NATS at `server` (a [`Proxy`]'s URL).
    pub fn start_instance_via(
        &self,
        server: &str,
        service: &str,
        data: &str,
        extra: &[&str],
        line: &str,
    ) -> Component {
        let mut args = vec![
            "--server".to_owned(),
            server.to_owned(),
            "--data-dir".to_owned(),
            self.dir.path().join(data).display().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let path = component_binary(&format!("agora-{service}")).expect("built");
        let password = agora_devtools::process::dev_password(service).unwrap_or_default();
        let envs: Vec<(&str, &str)> = if self.auth {
            vec![("NATS_USER", service), ("NATS_PASSWORD", &password)]
        } else {
            vec![]
        };
        Component::start_until(data, &path, &args, &envs, &self.logs(), line)
            .unwrap_or_else(|e| panic!("{data} starts: {e:#}"))
    }

    /// The process id of the active instance of a replicated service, from its lease.
    pub async fn active_pid(&self, service: &str) -> Option<u32> {
        let nats = async_nats::connect(self.url()).await.ok()?;
        let js = async_nats::jetstream::new(nats);
        let bucket = js.get_key_value(agora_nats::subjects::replica::LEASE_BUCKET).await.ok()?;
        let entry = bucket.get(service).await.ok()??;
        let holder: agora_nats::replica::lease::Holder = serde_json::from_slice(&entry).ok()?;
        // `<service>-<host>-<pid>-<nuid>`
        holder.instance.rsplit('-').nth(1)?.parse().ok()
    }

    /// Starts (or restarts, on the same data directory) the ledger.
    pub fn start_ledger(&mut self) {
        let args = vec![
            "--server".to_owned(),
            self.url().to_owned(),
            "--data-dir".to_owned(),
            self.dir.path().join("ledger").display().to_string(),
        ];
        let ledger = self.spawn("ledger", "agora-ledger", &args, "ledger");
        self.ledger = Some(ledger);
    }

    /// `kill -9` the ledger.
    pub fn kill_ledger(&mut self) {
        if let Some(mut ledger) = self.ledger.take() {
            ledger.kill_hard();
        }
    }

    /// Starts a new bank instance; returns its index.
    pub fn add_bank(&mut self) -> usize {
        self.banks.push(None);
        let index = self.banks.len() - 1;
        self.start_bank(index);
        index
    }

    /// Starts (or restarts) bank `index`.
    pub fn start_bank(&mut self, index: usize) {
        let args: Vec<String> = [
            "--server",
            self.url(),
            "--bank-id",
            &format!("bank-{index}"),
            "--lock-wait-ms",
            "8000",
            // A full batch (8,190 operations) takes the debug ledger near 2 s on a busy machine.
            "--ledger-timeout-ms",
            "5000",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let bank = self.spawn(&format!("bank-{index}"), "agora-bank", &args, "bank");
        self.banks[index] = Some(bank);
    }

    /// `kill -9` bank `index`.
    pub fn kill_bank(&mut self, index: usize) {
        if let Some(mut bank) = self.banks[index].take() {
            bank.kill_hard();
        }
    }

    /// A client with its own connection: on a server without users, one of Agora's own
    /// (a service: it acts on whatever it names); with the auth config, the `operator`.
    pub async fn client(&self) -> AgoraClient {
        if self.auth {
            return self.client_as("operator").await.expect("the operator logs in");
        }
        let nats = async_nats::connect(self.url()).await.expect("connects to nats-server");
        AgoraClient::new(nats).with_timeout(Duration::from_secs(3))
    }

    /// A client logged in as `role` with its development password (`nats/config/dev.env`).
    pub async fn client_as(&self, role: &str) -> anyhow::Result<AgoraClient> {
        let password = agora_devtools::process::dev_password(role).unwrap_or_default();
        self.client_with(role, &password).await
    }

    /// A client logged in as `user` with `password`.
    pub async fn client_with(&self, user: &str, password: &str) -> anyhow::Result<AgoraClient> {
        let nats = NatsArgs::user(self.url(), user, password);
        let client = connect_once(&nats, Duration::from_secs(3), |options| options).await?;
        Ok(AgoraClient::new(client).with_timeout(Duration::from_secs(3)))
    }
}

/// A TCP proxy in front of nats-server that a test can cut (a network partition: connections
/// are closed and new ones refused) and heal.
#[derive(Debug)]
pub struct Proxy {
    port: u16,
    state: Arc<ProxyState>,
}

#[derive(Debug, Default)]
struct ProxyState {
    cut: AtomicBool,
    /// Messages from the server on subjects starting with this are dropped.
    drop_prefix: Mutex<Option<String>>,
    stopped: AtomicBool,
    connections: Mutex<Vec<TcpStream>>,
}

impl ProxyState {
    fn close_all(&self) {
        let mut connections = self.connections.lock().unwrap_or_else(|p| p.into_inner());
        for stream in connections.drain(..) {
            stream.shutdown(Shutdown::Both).ok();
        }
    }
}

impl Proxy {
    /// Listens on a free loopback port and forwards to the server at `nats_url`.
    pub fn start(nats_url: &str) -> Self {
        let target = nats_url.trim_start_matches("nats://").to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
        let port = listener.local_addr().expect("bound").port();
        let state = Arc::new(ProxyState::default());
        let accepting = state.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if accepting.stopped.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                if accepting.cut.load(Ordering::SeqCst) {
                    client.shutdown(Shutdown::Both).ok();
                    continue;
                }
                let Ok(server) = TcpStream::connect(&target) else { continue };
                let pipes = [
                    (client.try_clone(), server.try_clone()),
                    (server.try_clone(), client.try_clone()),
                ];
                {
                    let mut connections =
                        accepting.connections.lock().unwrap_or_else(|p| p.into_inner());
                    connections.extend(client.try_clone());
                    connections.extend(server.try_clone());
                }
                for (index, pipe) in pipes.into_iter().enumerate() {
                    let state = accepting.clone();
                    if let (Ok(mut from), Ok(mut to)) = pipe {
                        std::thread::spawn(move || {
                            if index == 0 {
                                std::io::copy(&mut from, &mut to).ok();
                            } else {
                                forward_messages(&mut from, &mut to, &state).ok();
                            }
                            from.shutdown(Shutdown::Both).ok();
                            to.shutdown(Shutdown::Both).ok();
                        });
                    }
                }
            }
        });
        Self { port, state }
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Closes every connection and refuses new ones until [`Self::heal`].
    pub fn cut(&self) {
        self.state.cut.store(true, Ordering::SeqCst);
        self.state.close_all();
    }

    pub fn heal(&self) {
        self.state.cut.store(false, Ordering::SeqCst);
    }

    /// Drops (until `None`) every message the server delivers on a subject starting with
    /// `prefix`, leaving the connection up: the client silently misses them.
    pub fn drop_messages(&self, prefix: Option<&str>) {
        *self.state.drop_prefix.lock().unwrap_or_else(|p| p.into_inner()) =
            prefix.map(str::to_owned);
    }
}

/// Copies the server's side of the NATS protocol to the client, frame by frame, leaving out
/// `MSG`/`HMSG` frames whose subject starts with the state's drop prefix.
fn forward_messages(
    from: &mut TcpStream,
    to: &mut TcpStream,
    state: &ProxyState,
) -> std::io::Result<()> {
    use std::io::{Read, Write};
    let mut buffer: Vec<u8> = Vec::with_capacity(1 << 16);
    let mut chunk = vec![0u8; 1 << 16];
    loop {
        let read = from.read(&mut chunk)?;
        if read == 0 {
            return Ok(());
        }
        buffer.extend_from_slice(&chunk[..read]);
        let mut start = 0;
        let mut out = Vec::with_capacity(buffer.len());
        while let Some(end) = buffer[start..].windows(2).position(|w| w == b"\r\n") {
            let line_end = start + end + 2;
            let line = String::from_utf8_lossy(&buffer[start..start + end]).into_owned();
            let mut words = line.split_whitespace();
            let verb = words.next().unwrap_or_default().to_ascii_uppercase();
            let frame_end = if verb == "MSG" || verb == "HMSG" {
                let size: usize =
                    line.split_whitespace().last().and_then(|n| n.parse().ok()).unwrap_or(0);
                line_end + size + 2
            } else {
                line_end
            };
            if frame_end > buffer.len() {
                break;
            }
            let subject = words.next().unwrap_or_default();
            let dropped = (verb == "MSG" || verb == "HMSG")
                && state
                    .drop_prefix
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .as_deref()
                    .is_some_and(|prefix| subject.starts_with(prefix));
            if !dropped {
                out.extend_from_slice(&buffer[start..frame_end]);
            }
            start = frame_end;
        }
        to.write_all(&out)?;
        buffer.drain(..start);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.state.stopped.store(true, Ordering::SeqCst);
        self.state.close_all();
        // Wake the accepting thread so it sees `stopped`.
        TcpStream::connect(("127.0.0.1", self.port)).ok();
    }
}

impl Drop for System {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let logs = std::iter::once(self.nats.log().to_owned()).chain(
            std::fs::read_dir(self.logs())
                .into_iter()
                .flatten()
                .flatten()
                .map(|entry| entry.path()),
        );
        for log in logs {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(40)..];
            eprintln!("--- last lines of {} ---\n{}", log.display(), tail.join("\n"));
        }
    }
}

/// `GET url` as JSON, if it answers with JSON within 5 s.
pub async fn get_json(url: &str) -> Option<serde_json::Value> {
    reqwest::Client::new()
        .get(url)
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()
}

/// The result of a Prometheus instant query at `base` (`http://host:port`), if it answers.
pub async fn prometheus_query(base: &str, query: &str) -> Option<Vec<serde_json::Value>> {
    let mut url = reqwest::Url::parse(&format!("{base}/api/v1/query")).ok()?;
    url.query_pairs_mut().append_pair("query", query);
    let reply = get_json(url.as_str()).await?;
    reply["data"]["result"].as_array().cloned()
}
