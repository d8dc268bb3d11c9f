//! `agora bench <scenario>`: Agora's own benchmark.
//!
//! Every scenario starts its own nats-server and services, measures a raw NATS baseline in the
//! same run (same machine, same server, same payload size, same concurrency) and prints
//! Agora's figures as ratios of it, so results are comparable across machines.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use async_nats::Client;
use bytes::Bytes;
use futures::StreamExt;
use hdrhistogram::Histogram;

mod batch;
mod chat;
mod coins;
pub mod cpu;
mod files;
mod gateway;
mod likes;

pub use chat::{ChatBenchOptions, chat};
pub use coins::{CoinsBenchOptions, coins};
pub use files::{FilesBenchOptions, chunk_responder, files};
pub use gateway::{GatewayBenchOptions, gateway};
pub use likes::{LikesBenchOptions, likes};

use crate::process::{Component, NatsServer, NatsServerOptions, component_binary};
use agora_nats::bank::wire::{BalanceRequest, TransferRequest};
use agora_nats::client::{AgoraClient, ClientError};
use agora_nats::subjects;

/// Options of `agora bench bank`.
#[derive(Debug, Clone)]
pub struct BankBenchOptions {
    /// Seconds per measurement.
    pub seconds: u64,
    /// Bank instances to run.
    pub banks: usize,
    /// Accounts transfers spread over.
    pub accounts: usize,
    /// Client connections the load is spread over (the raw baseline uses as many).
    pub connections: usize,
    /// nats-server nodes: 1, or a cluster on loopback (the ledger and the echo responder on
    /// the first node, banks and client connections spread over the others).
    pub nats_nodes: usize,
    /// Run on the accounts config (`single-auth.conf`): every component logs in as its role,
    /// and each client connection is a person (signed in through the auth callout) moving and
    /// reading their own account; the raw echo crosses the same account import. One node.
    pub auth: bool,
    /// Batch sizes to measure `agora.bank.transfers` at, instead of the single-operation rows
    /// (see `batch`); empty: the single-operation rows.
    pub batches: Vec<usize>,
}

/// The first manager of a benchmark's auth service.
pub(crate) const BENCH_MANAGER: &str = "bench-manager";

/// The password the benchmark gives its people.
const BENCH_PASSWORD: &str = "bench-password-of-a-person";

/// One connection per person in `names`, each signed up (when new) and signed in through the
/// auth callout.
async fn people_connections(url: &str, names: Vec<String>) -> anyhow::Result<Vec<AgoraClient>> {
    let mut clients = Vec::with_capacity(names.len());
    for name in &names {
        crate::up::sign_up(url, name, BENCH_PASSWORD).await?;
        let nats = agora_nats::connection::NatsArgs::user(url, name, BENCH_PASSWORD);
        let client = agora_nats::connection::connect_with(&nats, |options| options).await?;
        clients.push(AgoraClient::new(client).with_timeout(Duration::from_secs(10)));
    }
    Ok(clients)
}

/// At most this many nodes in a benchmark's local cluster.
pub const NATS_NODES_MAX: usize = 5;

/// One measured row.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Measurement {
    pub name: String,
    pub in_flight: usize,
    pub operations: u64,
    pub errors: u64,
    pub ops_per_second: f64,
    pub latency_us_p50: u64,
    pub latency_us_p99: u64,
    /// What the first failed operation said (errors are counted, and one is shown).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
}

/// How many alternating slices a comparison is cut into.
const SLICES: u32 = 6;

/// Latencies, errors and time of one or more measured slices.
struct Sample {
    histogram: Histogram<u64>,
    errors: u64,
    first_error: Option<String>,
    elapsed: Duration,
}

impl Sample {
    fn new() -> anyhow::Result<Self> {
        Ok(Self {
            histogram: Histogram::new_with_bounds(1, 60_000_000, 3)?,
            errors: 0,
            first_error: None,
            elapsed: Duration::ZERO,
        })
    }

    fn merge(&mut self, other: Sample) -> anyhow::Result<()> {
        self.histogram.add(other.histogram)?;
        self.errors += other.errors;
        self.first_error = self.first_error.take().or(other.first_error);
        self.elapsed += other.elapsed;
        Ok(())
    }

    fn measurement(&self, name: &str, in_flight: usize) -> Measurement {
        Measurement {
            name: name.to_owned(),
            in_flight,
            operations: self.histogram.len(),
            errors: self.errors,
            ops_per_second: self.histogram.len() as f64 / self.elapsed.as_secs_f64(),
            latency_us_p50: self.histogram.value_at_quantile(0.50),
            latency_us_p99: self.histogram.value_at_quantile(0.99),
            first_error: self.first_error.clone(),
        }
    }
}

/// Runs `operation` from `in_flight` concurrent loops for `duration`.
async fn sample<F, Fut>(
    in_flight: usize,
    duration: Duration,
    operation: Arc<F>,
) -> anyhow::Result<Sample>
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), ClientError>> + Send,
{
    // Sequence numbers make operation ids, so they must not repeat across slices.
    static SLICE: AtomicU64 = AtomicU64::new(0);
    let first_sequence = SLICE.fetch_add(1, Ordering::Relaxed) << 32;
    let started = Instant::now();
    let deadline = started + duration;
    let mut workers = Vec::with_capacity(in_flight);
    for worker in 0..in_flight {
        let operation = operation.clone();
        workers.push(tokio::spawn(async move {
            let mut sample = Sample::new()?;
            let mut sequence = first_sequence;
            while Instant::now() < deadline {
                let sent = Instant::now();
                match operation(worker, sequence).await {
                    Ok(()) => {
                        let micros = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
                        sample.histogram.saturating_record(micros.max(1));
                    }
                    Err(error) => {
                        sample.errors += 1;
                        sample.first_error.get_or_insert_with(|| error.to_string());
                    }
                }
                sequence += 1;
            }
            anyhow::Ok(sample)
        }));
    }
    let mut total = Sample::new()?;
    for worker in workers {
        total.merge(worker.await??)?;
    }
    total.elapsed = started.elapsed();
    Ok(total)
}

/// Measures `raw` and `ours` in alternating slices, so both see the same machine conditions
/// (other load, CPU frequency, caches), after a short warm-up of each.
async fn compare<R, RF, O, OF>(
    in_flight: usize,
    duration: Duration,
    raw: R,
    ours: O,
) -> anyhow::Result<(Sample, Sample)>
where
    R: Fn(usize, u64) -> RF + Send + Sync + 'static,
    RF: Future<Output = Result<(), ClientError>> + Send,
    O: Fn(usize, u64) -> OF + Send + Sync + 'static,
    OF: Future<Output = Result<(), ClientError>> + Send,
{
    let (raw, ours, _) = compare_metered(in_flight, duration, raw, ours, None).await?;
    Ok((raw, ours))
}

/// [`compare`], also reading what CPU each of `processes` used while each side ran.
async fn compare_metered<R, RF, O, OF>(
    in_flight: usize,
    duration: Duration,
    raw: R,
    ours: O,
    processes: Option<&cpu::Processes>,
) -> anyhow::Result<(Sample, Sample, [cpu::CpuTimes; 2])>
where
    R: Fn(usize, u64) -> RF + Send + Sync + 'static,
    RF: Future<Output = Result<(), ClientError>> + Send,
    O: Fn(usize, u64) -> OF + Send + Sync + 'static,
    OF: Future<Output = Result<(), ClientError>> + Send,
{
    let (raw, ours) = (Arc::new(raw), Arc::new(ours));
    let warmup = Duration::from_millis(300);
    sample(in_flight, warmup, raw.clone()).await?;
    sample(in_flight, warmup, ours.clone()).await?;
    let slice = duration / SLICES;
    let (mut raw_total, mut ours_total) = (Sample::new()?, Sample::new()?);
    let mut used = [cpu::CpuTimes::default(), cpu::CpuTimes::default()];
    let read = || processes.map(cpu::Processes::read).unwrap_or_default();
    for _ in 0..SLICES {
        let at = read();
        raw_total.merge(sample(in_flight, slice, raw.clone()).await?)?;
        let between = read();
        ours_total.merge(sample(in_flight, slice, ours.clone()).await?)?;
        used[0].add(&between.since(&at));
        used[1].add(&read().since(&between));
    }
    Ok((raw_total, ours_total, used))
}

/// Serves raw request-reply echo on [`subjects::bench::ECHO`] (the reply is the request
/// payload) until `shutdown` resolves. `agora bench` runs it as a process of its own, like the
/// services it is compared with.
pub async fn echo_responder(
    nats: &agora_nats::connection::NatsArgs,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let client = agora_nats::connection::connect_with(nats, |options| options).await?;
    // A queue group, so several responders share the requests like service instances do.
    let mut requests =
        client.queue_subscribe(subjects::bench::ECHO, subjects::bench::ECHO.to_owned()).await?;
    // Subscriptions are in place at the server before anyone is told we are ready.
    agora_nats::client::barrier(&client).await?;
    agora_nats::telemetry::announce_ready("echo-responder");
    let serve = async {
        while let Some(message) = requests.next().await {
            if let Some(reply) = message.reply {
                client.publish(reply, message.payload).await.ok();
            }
        }
    };
    tokio::select! {
        () = serve => {}
        () = shutdown => {}
    }
    Ok(())
}

async fn connections(url: &str, count: usize) -> anyhow::Result<Vec<AgoraClient>> {
    connections_to(&vec![url.to_owned(); count.max(1)]).await
}

/// One client connection to each URL.
async fn connections_to(urls: &[String]) -> anyhow::Result<Vec<AgoraClient>> {
    let mut clients = Vec::with_capacity(urls.len());
    for url in urls {
        let client: Client = async_nats::connect(url.as_str()).await?;
        clients.push(AgoraClient::new(client).with_timeout(Duration::from_secs(10)));
    }
    Ok(clients)
}

/// How long a local cluster may take to connect its routes.
const ROUTES_TIMEOUT: Duration = Duration::from_secs(20);

/// Waits until every node of a cluster reaches a subscriber on every other node (its routes
/// are up and interest has propagated), so no measured request meets "no responders".
async fn wait_for_routes(urls: &[String]) -> anyhow::Result<()> {
    let clients = connections_to(urls).await?;
    let deadline = Instant::now() + ROUTES_TIMEOUT;
    for (index, listener) in clients.iter().enumerate() {
        let subject = subjects::bench::routes_probe(index);
        let mut probes = listener.nats().subscribe(subject.clone()).await?;
        let nats = listener.nats().clone();
        let responder = tokio::spawn(async move {
            while let Some(probe) = probes.next().await {
                if let Some(reply) = probe.reply {
                    nats.publish(reply, Bytes::new()).await.ok();
                }
            }
        });
        for asker in &clients {
            while asker.nats().request(subject.clone(), Bytes::new()).await.is_err() {
                anyhow::ensure!(Instant::now() < deadline, "the cluster's routes did not form");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        responder.abort();
    }
    Ok(())
}

/// The raw baseline's load: request-reply echo of `payload`, spread over the connections.
fn echo_load(
    clients: Arc<Vec<AgoraClient>>,
    payload: Bytes,
) -> impl Fn(usize, u64) -> std::pin::Pin<Box<dyn Future<Output = Result<(), ClientError>> + Send>>
+ Send
+ Sync
+ 'static {
    move |worker: usize, _sequence: u64| {
        let client = clients[worker % clients.len()].clone();
        let payload = payload.clone();
        Box::pin(
            async move { client.request_bytes(subjects::bench::ECHO, payload).await.map(drop) },
        )
    }
}

fn print_header() {
    println!(
        "\n{:<28} {:>9} {:>12} {:>9} {:>9} {:>8} {:>12} {:>10}",
        "scenario", "in-flight", "ops/s", "p50 µs", "p99 µs", "errors", "x raw ops/s", "x raw p50"
    );
}

fn print_row(row: &Measurement, baseline: Option<&Measurement>) {
    let (throughput_ratio, latency_ratio) = match baseline {
        Some(base) => (
            format!("{:.2}x", row.ops_per_second / base.ops_per_second),
            format!("{:.2}x", row.latency_us_p50 as f64 / base.latency_us_p50.max(1) as f64),
        ),
        None => ("-".into(), "-".into()),
    };
    println!(
        "{:<28} {:>9} {:>12.0} {:>9} {:>9} {:>8} {:>12} {:>10}",
        row.name,
        row.in_flight,
        row.ops_per_second,
        row.latency_us_p50,
        row.latency_us_p99,
        row.errors,
        throughput_ratio,
        latency_ratio
    );
    if let Some(error) = row.first_error.as_deref().filter(|_| row.errors > 0) {
        println!("{:<28} first error: {error}", "");
    }
}

/// The processes of one benchmark run: nats-server (one node, or a cluster), an echo
/// responder and the components.
struct Rig {
    dir: tempfile::TempDir,
    /// The first node's URL: where the echo responders and, unless placed, the components go.
    url: String,
    /// Every node's URL (one, unless [`Rig::start_cluster`]).
    urls: Vec<String>,
    _nats: Vec<NatsServer>,
    /// The components started (echo responders included), by name.
    components: Vec<(String, Component)>,
    filter: String,
    /// Whether nats-server runs the accounts config (components log in as their roles).
    auth: bool,
}

impl Rig {
    /// nats-server plus `echo_responders` raw echo responders (one queue group).
    fn start(echo_responders: usize) -> anyhow::Result<Self> {
        Self::start_single(echo_responders, false)
    }

    /// One nats-server, on the accounts config when `auth` (then the auth service runs too).
    fn start_single(echo_responders: usize, auth: bool) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let nats = NatsServer::start(&NatsServerOptions {
            port: None,
            dir: dir.path().join("nats"),
            auth,
        })?;
        let mut rig = Self::with_servers(dir, vec![nats], 0, auth)?;
        if auth {
            rig.start_auth()?;
        }
        rig.start_echo_responders(echo_responders)?;
        Ok(rig)
    }

    /// A cluster of `nodes` nats-servers (its routes formed), plus `echo_responders` raw echo
    /// responders on the first node.
    async fn start_cluster(nodes: usize, echo_responders: usize) -> anyhow::Result<Self> {
        anyhow::ensure!((1..=NATS_NODES_MAX).contains(&nodes), "1 to {NATS_NODES_MAX} nodes");
        if nodes == 1 {
            return Self::start(echo_responders);
        }
        let dir = tempfile::tempdir()?;
        let servers = NatsServer::start_cluster(&dir.path().join("nats"), nodes)?;
        let urls: Vec<String> = servers.iter().map(|s| s.url().to_owned()).collect();
        wait_for_routes(&urls).await?;
        Self::with_servers(dir, servers, echo_responders, false)
    }

    fn with_servers(
        dir: tempfile::TempDir,
        servers: Vec<NatsServer>,
        echo_responders: usize,
        auth: bool,
    ) -> anyhow::Result<Self> {
        let urls: Vec<String> = servers.iter().map(|s| s.url().to_owned()).collect();
        let url = urls[0].clone();
        // Components log warnings only, unless AGORA_BENCH_RUST_LOG asks for more.
        let filter = std::env::var("AGORA_BENCH_RUST_LOG").unwrap_or_else(|_| "warn".to_owned());
        let mut rig = Self { dir, url, urls, _nats: servers, components: Vec::new(), filter, auth };
        rig.start_echo_responders(echo_responders)?;
        Ok(rig)
    }

    /// Raw echo responders (one queue group) on the first node; on the accounts config they
    /// log in as the bank, so raw echo takes the bank's path through the account import.
    fn start_echo_responders(&mut self, count: usize) -> anyhow::Result<()> {
        for index in 0..count {
            let args =
                ["bench", "echo-responder", "--server", self.url.as_str()].map(str::to_owned);
            let name = format!("echo-{index}");
            self.start_process(&name, "bank", &std::env::current_exe()?, &args, &[])?;
        }
        Ok(())
    }

    /// The auth service, with the development issuer key and a first manager
    /// ([`BENCH_MANAGER`], password `AGORA_MANAGER_PASSWORD` of `dev.env`).
    fn start_auth(&mut self) -> anyhow::Result<()> {
        let dev = |key: &str| {
            crate::process::dev_value(key).with_context(|| format!("dev.env has no {key}"))
        };
        let envs = [
            ("AGORA_AUTH_ISSUER_SEED", dev("AGORA_AUTH_ISSUER_SEED")?),
            ("AGORA_MANAGER_PASSWORD", dev("AGORA_MANAGER_PASSWORD")?),
        ];
        let mut args = vec!["--server".to_owned(), self.url.clone()];
        args.extend(["--data-dir".to_owned(), self.data_dir("auth")]);
        args.extend(["--manager-name".to_owned(), BENCH_MANAGER.to_owned()]);
        let binary = component_binary("agora-auth")?;
        self.start_process("auth", "auth", &binary, &args, &envs)
    }

    /// The node the `index`-th bank or client connection goes to: with a cluster, every node
    /// but the first (the ledger's and the echo responder's) in turn, so each request and
    /// reply crosses a route, as it does in production.
    fn spread(&self, index: usize) -> &str {
        match self.urls.len() {
            1 => &self.urls[0],
            nodes => &self.urls[1 + index % (nodes - 1)],
        }
    }

    /// Starts a process; on the accounts config it logs in as `role`.
    fn start_process(
        &mut self,
        name: &str,
        role: &str,
        binary: &std::path::Path,
        args: &[String],
        more: &[(&str, String)],
    ) -> anyhow::Result<()> {
        let password = crate::process::dev_password(role).unwrap_or_default();
        let mut envs = vec![("RUST_LOG", self.filter.as_str())];
        if self.auth {
            envs.extend([("NATS_USER", role), ("NATS_PASSWORD", password.as_str())]);
        }
        envs.extend(more.iter().map(|(key, value)| (*key, value.as_str())));
        let logs: PathBuf = self.dir.path().join("logs");
        let component = Component::start(name, binary, args, &envs, &logs)?;
        self.components.push((name.to_owned(), component));
        Ok(())
    }

    /// Starts component binary `binary` with `--server <url>` (the first node) and `args`.
    fn start_component(&mut self, name: &str, binary: &str, args: &[String]) -> anyhow::Result<()> {
        let url = self.url.clone();
        self.start_component_on(&url, name, binary, args)
    }

    /// Starts component binary `binary` with `--server <url>` and `args`.
    fn start_component_on(
        &mut self,
        url: &str,
        name: &str,
        binary: &str,
        args: &[String],
    ) -> anyhow::Result<()> {
        let mut all = vec!["--server".to_owned(), url.to_owned()];
        all.extend(args.iter().cloned());
        let role = binary.strip_prefix("agora-").unwrap_or(binary);
        self.start_process(name, role, &component_binary(binary)?, &all, &[])
    }

    fn data_dir(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// Every process of the run for [`cpu`]: the nats-server nodes, the components (numbered
    /// ones such as `echo-0`, `echo-1` together) and this client.
    fn processes(&self) -> cpu::Processes {
        let mut processes: Vec<(String, u32)> =
            self._nats.iter().map(|node| ("nats-server".to_owned(), node.id())).collect();
        for (name, component) in &self.components {
            let base = match name.rsplit_once('-') {
                Some((base, index)) if index.chars().all(|c| c.is_ascii_digit()) => base,
                _ => name.as_str(),
            };
            processes.push((base.to_owned(), component.id()));
        }
        processes.push(("client".to_owned(), std::process::id()));
        cpu::Processes::new(processes)
    }

    fn finish(self) {
        if std::env::var_os("AGORA_BENCH_KEEP").is_some() {
            println!("\ncomponent logs and data kept in {}", self.dir.keep().display());
        }
    }
}

/// `agora bench bank`: raw echo vs `bank.balance` and `bank.transfer` at 1 and 256 in flight.
pub async fn bank(options: BankBenchOptions) -> anyhow::Result<Vec<Measurement>> {
    anyhow::ensure!(!options.auth || options.nats_nodes == 1, "--auth runs on one node");
    let mut rig = if options.auth {
        Rig::start_single(1, true)?
    } else {
        Rig::start_cluster(options.nats_nodes, 1).await?
    };
    // On a cluster the ledger's log, events, lease and snapshots have three replicas (as in
    // the compose stack): every acknowledged write is on a quorum before the reply.
    let replicas = rig.urls.len().min(3).to_string();
    rig.start_component(
        "ledger",
        "agora-ledger",
        &["--data-dir".to_owned(), rig.data_dir("ledger"), "--replicas".to_owned(), replicas],
    )?;
    for index in 0..options.banks.max(1) {
        let args = ["--bank-id".to_owned(), format!("bench-{index}")];
        let url = rig.spread(index).to_owned();
        rig.start_component_on(&url, &format!("bank-{index}"), "agora-bank", &args)?;
    }
    let urls: Vec<String> =
        (0..options.connections.max(1)).map(|index| rig.spread(index).to_owned()).collect();
    // On the accounts config each connection is a person, acct-<i>, who moves and reads only
    // their own account, and the accounts are theirs.
    let people = options.auth.then(|| urls.len().max(2));
    let accounts = people.unwrap_or(options.accounts.max(2));
    let account = move |i: usize| format!("acct-{:06}", i % accounts);
    let clients = Arc::new(match people {
        Some(count) => people_connections(&rig.url, (0..count).map(account).collect()).await?,
        None => connections_to(&urls).await?,
    });

    let topology = match rig.urls.len() {
        1 => "one node".to_owned(),
        nodes => format!(
            "a {nodes}-node cluster: ledger (log R{}) and echo responder on node 1, banks and \
             clients on nodes 2-{nodes}",
            nodes.min(3)
        ),
    };
    let who = match people {
        Some(count) => format!(
            "the accounts config: {count} people, one connection each, each moving and reading \
             their own account"
        ),
        None => format!("{} connection(s)", options.connections.max(1)),
    };
    println!(
        "agora bench bank: nats-server {} ({topology}), {} bank instance(s), {} accounts, {who}, {} s per row",
        crate::process::NATS_SERVER_VERSION,
        options.banks.max(1),
        accounts,
        options.seconds
    );
    for i in 0..accounts {
        // A person deposits into their own account.
        let seed = if people.is_some() { &clients[i] } else { &clients[0] };
        seed.deposit(&account(i), 1_000_000_000, None).await.context("seeding accounts")?;
    }

    let balance_payload =
        serde_json::to_vec(&BalanceRequest { account: account(0), ..BalanceRequest::default() })?;
    let transfer_payload = serde_json::to_vec(&TransferRequest {
        from: account(0),
        to: account(1),
        amount: 1,
        id: Some(format!("bench-{}-{:012}", nuid::next(), 0)),
    })?;
    let duration = Duration::from_secs(options.seconds.max(1));
    if !options.batches.is_empty() {
        anyhow::ensure!(people.is_none(), "--batch runs without --auth");
        let processes = rig.processes();
        let rows =
            batch::rows(clients.clone(), accounts, &options.batches, duration, &processes).await?;
        rig.finish();
        return Ok(rows);
    }
    let mut rows = Vec::new();
    print_header();
    for in_flight in [1usize, 256] {
        for (name, payload) in [("balance", &balance_payload), ("transfer", &transfer_payload)] {
            let echo = echo_load(clients.clone(), Bytes::from(payload.clone()));
            let bank_clients = clients.clone();
            let run_id = nuid::next().to_string();
            // The load generator does the same work for Agora as for raw echo: it sends bytes
            // and checks the reply for an error, without decoding it.
            let operation = move |worker: usize, sequence: u64| {
                let client = bank_clients[worker % bank_clients.len()].clone();
                let (from, to) = match people {
                    // A person's own account, to another person's.
                    Some(count) => {
                        let me = worker % count;
                        let other =
                            (me + 1 + (sequence as usize * 17 + worker) % (count - 1)) % count;
                        (account(me), account(other))
                    }
                    None => (
                        account(worker.wrapping_mul(7919).wrapping_add(sequence as usize * 31)),
                        account(
                            worker.wrapping_mul(104_729).wrapping_add(sequence as usize * 17 + 1),
                        ),
                    ),
                };
                let (subject, payload) = if name == "balance" {
                    (subjects::bank::BALANCE_SUBJECT, format!(r#"{{"account":"{from}"}}"#))
                } else if from == to {
                    let id = format!("bench-{run_id}-{worker}-{sequence}");
                    let body = format!(r#"{{"account":"{to}","amount":1,"id":"{id}"}}"#);
                    (subjects::bank::DEPOSIT_SUBJECT, body)
                } else {
                    let id = format!("bench-{run_id}-{worker}-{sequence}");
                    let body = format!(r#"{{"from":"{from}","to":"{to}","amount":1,"id":"{id}"}}"#);
                    (subjects::bank::TRANSFER_SUBJECT, body)
                };
                async move { client.request_bytes(subject, Bytes::from(payload)).await.map(drop) }
            };
            let (raw, ours) = compare(in_flight, duration, echo, operation).await?;
            let raw = raw.measurement(&format!("raw echo ({} B)", payload.len()), in_flight);
            let ours = ours.measurement(&format!("bank.{name}"), in_flight);
            print_row(&raw, None);
            print_row(&ours, Some(&raw));
            rows.push(raw);
            rows.push(ours);
        }
    }
    print_goals(&rows);
    rig.finish();
    Ok(rows)
}

fn print_goals(rows: &[Measurement]) {
    let find = |prefix: &str, in_flight: usize, nth: usize| {
        rows.iter().filter(|r| r.name.starts_with(prefix) && r.in_flight == in_flight).nth(nth)
    };
    // Rows come in pairs: raw echo with the balance payload, then with the transfer payload.
    let goals = [
        (
            "balance ops/s at 256 in flight >= 0.35x raw",
            find("raw", 256, 0),
            find("bank.balance", 256, 0),
            0.35,
            true,
        ),
        (
            "transfer ops/s at 256 in flight >= 0.25x raw",
            find("raw", 256, 1),
            find("bank.transfer", 256, 0),
            0.25,
            true,
        ),
        (
            "balance p50 at 1 in flight <= 3x raw",
            find("raw", 1, 0),
            find("bank.balance", 1, 0),
            3.0,
            false,
        ),
    ];
    println!("\ngoals:");
    for (label, raw, ours, bound, throughput) in goals {
        let goal =
            if throughput { Goal::RatioAtLeast(bound) } else { Goal::LatencyRatioAtMost(bound) };
        print_goal(label, raw, ours, goal);
    }
}

/// A target a benchmark row is held to.
#[derive(Debug, Clone, Copy)]
enum Goal {
    /// ops/s at least this fraction of raw's.
    RatioAtLeast(f64),
    /// p50 at most this multiple of raw's.
    LatencyRatioAtMost(f64),
    /// p50 at most this many microseconds.
    P50AtMostUs(u64),
    /// At least this many ops/s.
    OpsAtLeast(f64),
}

fn print_goal(label: &str, raw: Option<&Measurement>, ours: Option<&Measurement>, goal: Goal) {
    let (Some(raw), Some(ours)) = (raw, ours) else {
        return;
    };
    let (figure, met) = match goal {
        Goal::RatioAtLeast(bound) => {
            let ratio = ours.ops_per_second / raw.ops_per_second;
            (format!("{ratio:.3}x"), ratio >= bound)
        }
        Goal::LatencyRatioAtMost(bound) => {
            let ratio = ours.latency_us_p50 as f64 / raw.latency_us_p50.max(1) as f64;
            (format!("{ratio:.3}x"), ratio <= bound)
        }
        Goal::P50AtMostUs(bound) => {
            (format!("{} µs", ours.latency_us_p50), ours.latency_us_p50 <= bound)
        }
        Goal::OpsAtLeast(bound) => {
            (format!("{:.0}/s", ours.ops_per_second), ours.ops_per_second >= bound)
        }
    };
    println!("  {:<52} {:>10}  {}", label, figure, if met { "met" } else { "NOT met" });
}

/// Options of `agora bench tasks`.
#[derive(Debug, Clone)]
pub struct TasksBenchOptions {
    /// Seconds per measurement.
    pub seconds: u64,
    /// Workers to run.
    pub workers: usize,
    /// Client connections the load is spread over (the raw baseline uses as many).
    pub connections: usize,
}

/// Celery 5 + Redis (prefork, 2 processes) on the reference 2-core machine: about 650
/// trivial tasks/s end to end. Agora aims for ten times that.
const CELERY_TASKS_PER_SECOND: f64 = 650.0;

/// `agora bench tasks`: raw queue-group request-reply (2 responders) vs a trivial `sum` task
/// submitted and awaited end to end (`submit` with `wait_ms`), at 1 and 256 in flight.
pub async fn tasks(options: TasksBenchOptions) -> anyhow::Result<Vec<Measurement>> {
    let mut rig = Rig::start(2)?;
    let url = rig.url.clone();
    rig.start_component("tasks", "agora-tasks", &["--data-dir".to_owned(), rig.data_dir("tasks")])?;
    for index in 0..options.workers.max(1) {
        let args = ["--worker-id".to_owned(), format!("bench-{index}")];
        rig.start_component(&format!("worker-{index}"), "agora-worker", &args)?;
    }
    let clients = Arc::new(connections(&url, options.connections).await?);
    println!(
        "agora bench tasks: nats-server {}, {} worker(s), {} connection(s), {} s per row",
        crate::process::NATS_SERVER_VERSION,
        options.workers.max(1),
        options.connections.max(1),
        options.seconds
    );
    let payload = Bytes::from_static(br#"{"op":"sum","args":{"numbers":[1,2,3]},"wait_ms":30000}"#);
    // Warm the path once (the stream, the consumers, the workers' pulls).
    clients[0].request_bytes(subjects::tasks::SUBMIT_SUBJECT, payload.clone()).await?;
    let duration = Duration::from_secs(options.seconds.max(1));
    let mut rows = Vec::new();
    print_header();
    for in_flight in [1usize, 256] {
        let echo = echo_load(clients.clone(), payload.clone());
        let task_clients = clients.clone();
        let task_payload = payload.clone();
        let submit = move |worker: usize, _sequence: u64| {
            let client = task_clients[worker % task_clients.len()].clone();
            let payload = task_payload.clone();
            async move {
                let timeout = Duration::from_secs(40);
                client
                    .request_bytes_within(subjects::tasks::SUBMIT_SUBJECT, payload, timeout)
                    .await
                    .map(drop)
            }
        };
        let (raw, ours) = compare(in_flight, duration, echo, submit).await?;
        let raw = raw.measurement(&format!("raw queue echo ({} B)", payload.len()), in_flight);
        let ours = ours.measurement("task sum end to end", in_flight);
        print_row(&raw, None);
        print_row(&ours, Some(&raw));
        rows.push(raw);
        rows.push(ours);
    }
    let find = |prefix: &str, in_flight: usize| {
        rows.iter().find(|r| r.name.starts_with(prefix) && r.in_flight == in_flight)
    };
    println!("\ngoals:");
    let (raw_256, ours_256) = (find("raw", 256), find("task", 256));
    print_goal(
        "tasks/s at 256 in flight >= 0.15x raw",
        raw_256,
        ours_256,
        Goal::RatioAtLeast(0.15),
    );
    print_goal(
        "tasks/s at 256 in flight >= 10x Celery+Redis (6500/s)",
        raw_256,
        ours_256,
        Goal::OpsAtLeast(10.0 * CELERY_TASKS_PER_SECOND),
    );
    print_goal(
        "sequential submit-to-result p50 < 2 ms",
        find("raw", 1),
        find("task", 1),
        Goal::P50AtMostUs(1_999),
    );
    delayed_lateness(&clients).await?;
    rig.finish();
    Ok(rows)
}

/// Delayed tasks handed over by the NATS server's scheduler: how late each starts after its
/// time (`started_ms - run_at_ms`; `run_at_ms` is whole seconds, as the scheduler counts).
async fn delayed_lateness(clients: &Arc<Vec<AgoraClient>>) -> anyhow::Result<()> {
    const TASKS: usize = 200;
    let now = agora_nats::clock::now_ms();
    let mut submitted = Vec::with_capacity(TASKS);
    for index in 0..TASKS {
        let request = agora_nats::tasks::wire::SubmitRequest {
            // Spread over two seconds, starting two seconds from now.
            run_at_ms: Some(now + 2_000 + (index as u64 * 2_000 / TASKS as u64)),
            ..agora_nats::tasks::wire::SubmitRequest::new(
                "sum",
                &serde_json::json!({"numbers": [1]}),
            )
        };
        submitted.push(clients[index % clients.len()].submit(&request).await?.id);
    }
    let mut late_ms = Vec::with_capacity(TASKS);
    for id in &submitted {
        let task = clients[0].wait_task(id, 30_000).await?;
        if let (Some(started), Some(at)) = (task.started_ms, task.run_at_ms) {
            late_ms.push(started.saturating_sub(at));
        }
    }
    late_ms.sort_unstable();
    let at =
        |q: f64| late_ms.get(((late_ms.len() as f64 - 1.0) * q) as usize).copied().unwrap_or(0);
    println!(
        "\ndelayed tasks ({} of {TASKS} started): late after their time p50 {} ms, p99 {} ms, max {} ms",
        late_ms.len(),
        at(0.5),
        at(0.99),
        late_ms.last().copied().unwrap_or(0)
    );
    Ok(())
}
