//! No single point of failure: every replicated service (ledger, tasks, chat, coins) runs as an
//! active instance and a standby. Under load, the active one is killed with `kill -9` and its
//! data directory deleted; the standby takes over from the log, a new instance starts on an
//! empty disk and rebuilds its view from the log, and then that one is made active too. Every
//! acknowledged write is there exactly once, money is conserved, and every event of a
//! committed change is in the events stream exactly once. The longest a request waited for an
//! answer (the unavailability callers saw) is printed.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agora_devtools::process::Component;
use agora_nats::chat::client::ChatSession;
use agora_nats::chat::wire::HistoryRequest;
use agora_nats::subjects::replica as replica_subject;
use agora_nats::tasks::wire::{ListRequest, SubmitRequest};
use agora_nats::{AgoraClient, ClientError, ErrorCode};
use agora_tests::{System, eventually};
use rand::{Rng, SeedableRng};
use serde_json::json;

/// How long one request may keep being retried (same id) before the test fails.
const RETRY_WINDOW: Duration = Duration::from_secs(30);
/// The longest failover the issue allows (lease 2 s, then the log read to its end).
const FAILOVER_MAX: Duration = Duration::from_secs(5);

/// Retries `call` (which reuses its id) while the outcome is unknown (`busy`, `unavailable`,
/// a timeout); returns its definitive result and how long it took.
async fn settle<T, F, Fut>(what: &str, mut call: F) -> (Result<T, ClientError>, Duration)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ClientError>>,
{
    let started = Instant::now();
    loop {
        let result = call().await;
        match &result {
            Err(error) if matches!(error.code(), ErrorCode::Busy | ErrorCode::Unavailable) => {
                assert!(started.elapsed() < RETRY_WINDOW, "{what} not settled: {error}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            _ => return (result, started.elapsed()),
        }
    }
}

/// One replicated service's instances in the test: which data directory each one has.
struct Instances {
    service: &'static str,
    /// The harness's own instance (data directory `<service>`) is in the [`System`].
    others: Vec<(String, Option<Component>)>,
    started: usize,
}

impl Instances {
    fn new(system: &System, service: &'static str) -> Self {
        let mut instances = Self { service, others: Vec::new(), started: 0 };
        instances.add_standby(system);
        instances
    }

    fn add_standby(&mut self, system: &System) {
        self.started += 1;
        let data = format!("{}-{}", self.service, self.started);
        let component = system.start_standby(self.service, &data, &[]);
        self.others.push((data, Some(component)));
    }

    /// `kill -9` the active instance and delete its data directory; start a new standby on an
    /// empty one. Returns the killed instance's process id.
    async fn kill_active_with_disk(&mut self, system: &mut System) -> u32 {
        let pid = system.active_pid(self.service).await.expect("an active instance");
        let harness = match self.service {
            "ledger" => &mut system.ledger,
            "tasks" => &mut system.tasks,
            "chat" => &mut system.chat,
            _ => &mut system.coins,
        };
        let dir = if harness.as_ref().is_some_and(|c| c.id() == pid) {
            harness.take().expect("running").kill_hard();
            self.service.to_owned()
        } else {
            let (dir, component) = self
                .others
                .iter_mut()
                .find(|(_, c)| c.as_ref().is_some_and(|c| c.id() == pid))
                .expect("the active instance is one of ours");
            component.take().expect("running").kill_hard();
            dir.clone()
        };
        remove_dir(&system.dir.path().join(&dir));
        println!("{}: killed the active instance ({dir}) and deleted its disk", self.service);
        self.add_standby(system);
        pid
    }

    /// Waits until an instance other than `killed` is active.
    async fn wait_new_active(&self, system: &System, killed: u32) {
        let (service, pid) = (self.service, killed);
        eventually(Duration::from_secs(10), Duration::from_millis(50), async || {
            match system.active_pid(service).await {
                Some(active) if active != pid => Ok(()),
                other => Err(format!("no new active {service} yet ({other:?})")),
            }
        })
        .await;
    }
}

fn remove_dir(dir: &Path) {
    std::fs::remove_dir_all(dir).unwrap_or_else(|e| panic!("delete {}: {e}", dir.display()));
}

/// The events stream's message count per subject under `filter`.
async fn events_by_subject(system: &System, filter: &str) -> BTreeMap<String, usize> {
    let nats = async_nats::connect(system.url()).await.expect("connect");
    let js = async_nats::jetstream::new(nats);
    let stream = js.get_stream(replica_subject::EVENTS_STREAM).await.expect("events stream");
    let mut subjects = stream.info_with_subjects(filter).await.expect("subjects");
    let mut counts = BTreeMap::new();
    use futures::StreamExt;
    while let Some(entry) = subjects.next().await {
        let (subject, count) = entry.expect("subject");
        counts.insert(subject, count);
    }
    counts
}

fn account(index: usize) -> String {
    format!("rep-{index:02}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ledger_loses_its_active_instance_and_disk_twice_under_load_and_nothing_is_lost() {
    const CLIENTS: usize = 12;
    const OPERATIONS: usize = 1_200;
    const ACCOUNTS: usize = 30;
    let mut system = System::start();
    let mut ledgers = Instances::new(&system, "ledger");
    system.add_bank();
    system.add_bank();

    // Transfers, deposits and withdrawals with ids, each sent until it has an outcome.
    let book: Arc<Mutex<BTreeMap<String, i64>>> = Arc::default();
    let postings: Arc<Mutex<BTreeMap<String, usize>>> = Arc::default();
    let slowest = Arc::new(Mutex::new(Duration::ZERO));
    let mut load = Vec::new();
    for c in 0..CLIENTS {
        let client = AgoraClient::new(async_nats::connect(system.url()).await.expect("connect"))
            .with_timeout(Duration::from_secs(2));
        let (book, postings, slowest) = (book.clone(), postings.clone(), slowest.clone());
        load.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(c as u64);
            for n in 0..OPERATIONS / CLIENTS {
                let a = account(rng.random_range(0..ACCOUNTS));
                let b = account(
                    (rng.random_range(1..ACCOUNTS) + a[4..].parse::<usize>().unwrap()) % ACCOUNTS,
                );
                let amount = rng.random_range(1..=500);
                let id = format!("rep-{c}-{n}");
                let kind = rng.random_range(0..3);
                let (result, took) = settle(&id, || async {
                    match kind {
                        0 => client.deposit(&a, amount, Some(&id)).await.map(drop),
                        1 => client.withdraw(&a, amount, Some(&id)).await.map(drop),
                        _ => client.transfer(&a, &b, amount, Some(&id)).await.map(drop),
                    }
                })
                .await;
                {
                    let mut slowest = slowest.lock().unwrap();
                    *slowest = (*slowest).max(took);
                }
                match result {
                    Ok(()) => {
                        let mut book = book.lock().unwrap();
                        let mut postings = postings.lock().unwrap();
                        match kind {
                            0 => *book.entry(a.clone()).or_default() += amount,
                            1 => *book.entry(a.clone()).or_default() -= amount,
                            _ => {
                                *book.entry(a.clone()).or_default() -= amount;
                                *book.entry(b.clone()).or_default() += amount;
                                *postings.entry(b).or_default() += 1;
                            }
                        }
                        *postings.entry(a).or_default() += 1;
                    }
                    Err(error) if error.code() == ErrorCode::InsufficientFunds => {}
                    Err(error) => panic!("{id}: {error}"),
                }
            }
        }));
    }
    // Twice: kill -9 the active ledger and delete its disk; a standby takes over, and a new
    // instance on an empty disk rebuilds its view from the log (and is the next one killed).
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let killed = ledgers.kill_active_with_disk(&mut system).await;
    ledgers.wait_new_active(&system, killed).await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let killed = ledgers.kill_active_with_disk(&mut system).await;
    ledgers.wait_new_active(&system, killed).await;
    for task in load {
        task.await.expect("load");
    }

    let client = system.client().await;
    let book = book.lock().unwrap().clone();
    for index in 0..ACCOUNTS {
        let name = account(index);
        let (balance, _) = settle("balance", || client.balance(&name)).await;
        let balance = balance.expect("balance").balance;
        assert_eq!(balance, book.get(&name).copied().unwrap_or(0), "{name}: the books agree");
    }
    // Every event of a committed change, once.
    let events = events_by_subject(&system, "agora.bank.events.>").await;
    for (name, count) in postings.lock().unwrap().iter() {
        let subject = format!("agora.bank.events.{name}");
        assert_eq!(events.get(&subject).copied(), Some(*count), "{subject}");
    }
    let slowest = *slowest.lock().unwrap();
    println!("ledger: the longest a caller waited for an outcome: {slowest:?}");
    assert!(slowest < FAILOVER_MAX + Duration::from_secs(2), "unavailable for {slowest:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_chat_and_coins_lose_their_active_instance_and_disk_and_nothing_is_lost() {
    let mut system = System::with_coins(1);
    system.chat_args = Vec::new();
    system.start_chat();
    system.tasks_args = Vec::new();
    system.start_tasks();
    system.add_worker(&[]);
    let mut tasks = Instances::new(&system, "tasks");
    let mut chat = Instances::new(&system, "chat");
    let mut coins = Instances::new(&system, "coins");
    let client = system.client().await;
    for user in ["ann", "ben"] {
        client.deposit(user, 1_000_000, Some(&format!("seed-{user}"))).await.expect("deposit");
    }
    let alice = ChatSession::register(system.client().await, "alice").await.expect("registers");

    let mut slowest = Duration::ZERO;
    let mut submitted = Vec::new();
    let mut said = Vec::new();
    let mut bought: BTreeMap<&str, i64> = BTreeMap::new();
    for round in 0..60 {
        match round {
            // Not waiting for the standby: the next requests meet the failover.
            15 => drop(tasks.kill_active_with_disk(&mut system).await),
            30 => drop(chat.kill_active_with_disk(&mut system).await),
            45 => drop(coins.kill_active_with_disk(&mut system).await),
            _ => {}
        }
        // A task, a chat message and a coin order, each until acknowledged.
        let request = SubmitRequest {
            id: Some(format!("task-{round}")),
            ..SubmitRequest::new("uppercase", &json!({"text": format!("t{round}")}))
        };
        let (task, took) = settle("submit", || client.submit(&request)).await;
        submitted.push(task.expect("submitted").id);
        slowest = slowest.max(took);

        let message = alice.message(Some("all"), None, &format!("message {round}"));
        let (ack, took) = settle("send", || client.chat_send(&message)).await;
        ack.expect("recorded");
        said.push(format!("message {round}"));
        slowest = slowest.max(took);

        let user = if round % 2 == 0 { "ann" } else { "ben" };
        let id = format!("order-{round}");
        let (order, took) = settle("buy", || client.buy_coins(user, "AMZN", 1, Some(&id))).await;
        assert_eq!(order.expect("bought").state, "done");
        *bought.entry(user).or_default() += 1;
        slowest = slowest.max(took);
    }

    // Every acknowledged task completes, once; the stream of its events has each once.
    for id in &submitted {
        eventually(Duration::from_secs(30), Duration::from_millis(100), async || {
            let task = client.task(id).await.map_err(|e| e.to_string())?;
            if task.state == "completed" { Ok(()) } else { Err(format!("{id} is {}", task.state)) }
        })
        .await;
    }
    let all = client
        .tasks(&ListRequest { limit: Some(500), ..ListRequest::default() })
        .await
        .expect("list");
    assert_eq!(all.tasks.len(), submitted.len(), "one task per acknowledged submit");
    let events = events_by_subject(&system, "agora.tasks.events.>").await;
    for id in &submitted {
        let count: usize =
            events.iter().filter(|(s, _)| s.ends_with(&format!(".{id}"))).map(|(_, n)| n).sum();
        assert_eq!(count, 3, "task {id}: queued, started, completed");
    }
    // Every acknowledged message is in the history once, and in the events stream once.
    let history = client
        .chat_history(&HistoryRequest {
            room: Some("all".into()),
            limit: Some(100),
            ..HistoryRequest::default()
        })
        .await
        .expect("history");
    let texts: Vec<String> = history.messages.iter().map(|m| m.text.clone()).collect();
    assert_eq!(texts, said);
    let events = events_by_subject(&system, "agora.chat.room.all").await;
    assert_eq!(events.get("agora.chat.room.all").copied(), Some(said.len()));
    // Every acknowledged order once: holdings and money agree.
    for (user, quantity) in &bought {
        let portfolio = client.portfolio(user).await.expect("portfolio");
        let amzn: u64 =
            portfolio.holdings.iter().filter(|h| h.symbol == "AMZN").map(|h| h.quantity).sum();
        assert_eq!(amzn as i64, *quantity, "{user}'s units");
    }
    println!("tasks, chat, coins: the longest a caller waited for an outcome: {slowest:?}");
    assert!(slowest < FAILOVER_MAX + Duration::from_secs(2), "unavailable for {slowest:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_bound_the_log_and_a_new_instance_on_an_empty_disk_starts_from_one() {
    let mut system = System::nats_only();
    let snapshot_every = ["--snapshot-every", "100"];
    let mut first = system.start_instance(
        "ledger",
        "ledger-a",
        &snapshot_every,
        agora_devtools::process::READY_LINE,
    );
    system.add_bank();
    let client = system.client().await;
    for n in 0..300 {
        let id = format!("snap-{n}");
        client.deposit(&account(n % 10), 7, Some(&id)).await.expect("deposit");
    }
    // The log was purged below a snapshot.
    let nats = async_nats::connect(system.url()).await.expect("connect");
    let js = async_nats::jetstream::new(nats);
    let first_seq = eventually(Duration::from_secs(30), Duration::from_millis(200), async || {
        let mut log = js
            .get_stream(replica_subject::log_stream("ledger"))
            .await
            .map_err(|e| e.to_string())?;
        let state = log.info().await.map_err(|e| e.to_string())?.state.clone();
        if state.first_sequence > 100 {
            Ok(state.first_sequence)
        } else {
            Err(format!("{state:?}"))
        }
    })
    .await;
    // A new instance on an empty disk starts from the snapshot, then the log after it.
    let second = system.start_standby("ledger", "ledger-b", &snapshot_every);
    let log = std::fs::read_to_string(second.log()).expect("log");
    assert!(log.contains("restored the snapshot"), "{log}");
    first.kill_hard();
    for n in 0..10 {
        let name = account(n);
        let (balance, _) = settle("balance", || client.balance(&name)).await;
        assert_eq!(balance.expect("balance").balance, 30 * 7, "log purged from {first_seq}");
    }
    drop(second);
}

/// The stream's messages in order: (subject, message id).
async fn events_in_order(js: &async_nats::jetstream::Context) -> Vec<(String, String)> {
    let mut stream = js.get_stream(replica_subject::EVENTS_STREAM).await.expect("events stream");
    let last = stream.info().await.expect("info").state.last_sequence;
    let mut events = Vec::new();
    for seq in 1..=last {
        let message = stream.get_raw_message(seq).await.expect("an event");
        let id = message.headers.get("Nats-Msg-Id").map(|v| v.as_str().to_owned());
        events.push((message.subject.to_string(), id.expect("every event has its id")));
    }
    events
}

/// The events the ledger relayed, by path (`agora_relay_events_total`): fast batches, one by
/// one.
async fn relayed_by_path(js: &async_nats::jetstream::Context) -> (u64, u64) {
    let metrics = js
        .client()
        .request(agora_nats::subjects::metrics::subject("ledger"), "".into())
        .await
        .expect("the ledger's metrics");
    let text = String::from_utf8_lossy(&metrics.payload);
    let count = |path: &str| -> u64 {
        text.lines()
            .filter(|line| line.starts_with("agora_relay_events_total{"))
            .filter(|line| line.contains(&format!("path=\"{path}\"")))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    };
    (count("batch"), count("single"))
}

/// The ledger relays a committed change's events in fast-ingest batches: an events stream made
/// by an earlier version (without `allow_batched`) takes them once the ledger starts. When the
/// stream refuses them (an operator turned them off), the relay publishes one by one, and takes
/// fast batches again once they are back on (no restart). Either way, every event is stored
/// once, in order: entry after entry, each entry's events in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_stored_once_and_in_order_in_fast_batches_or_one_by_one() {
    use async_nats::jetstream::stream;
    const BATCH: usize = 1_000;
    let mut system = System::nats_only();
    let js = async_nats::jetstream::new(async_nats::connect(system.url()).await.expect("connect"));
    let earlier = stream::Config {
        name: replica_subject::EVENTS_STREAM.to_owned(),
        subjects: replica_subject::EVENTS_SUBJECTS.iter().map(|s| (*s).to_owned()).collect(),
        duplicate_window: agora_nats::replica::EVENTS_DUPLICATE_WINDOW,
        ..Default::default()
    };
    js.create_stream(earlier).await.expect("the events stream of an earlier version");
    system.start_ledger();
    system.add_bank();
    let bank = system.client().await;
    eventually(Duration::from_secs(10), Duration::from_millis(50), async || {
        let mut stream =
            js.get_stream(replica_subject::EVENTS_STREAM).await.map_err(|e| e.to_string())?;
        let config = stream.info().await.map_err(|e| e.to_string())?.config.clone();
        if config.allow_batch_publish { Ok(()) } else { Err("no fast batches yet".to_owned()) }
    })
    .await;

    let batch = |tag: &str| {
        let operations = (0..BATCH)
            .map(|i| {
                json!({"from": "ev-src", "to": format!("ev-{:02}", i % 20), "amount": 1,
                       "id": format!("{tag}-{i}")})
            })
            .collect::<Vec<_>>();
        agora_nats::bank::wire::TransfersRequest {
            operations: serde_json::from_value(json!(operations)).expect("operations"),
            detail: false,
        }
    };
    bank.deposit("ev-src", 1_000_000, Some("ev-fund")).await.expect("deposit");
    let reply = bank.transfers(&batch("fast")).await.expect("a batch");
    assert_eq!(reply.applied, BATCH);
    // The batch's events go in a fast batch; the deposit's one event alone.
    eventually(Duration::from_secs(20), Duration::from_millis(100), async || {
        let paths = relayed_by_path(&js).await;
        if paths == (2 * BATCH as u64, 1) { Ok(()) } else { Err(format!("{paths:?}")) }
    })
    .await;

    // Fast batches turned off on the stream: the next ones are refused, and the relay goes on
    // one by one.
    let mut config = js
        .get_stream(replica_subject::EVENTS_STREAM)
        .await
        .expect("stream")
        .info()
        .await
        .expect("info")
        .config
        .clone();
    config.allow_batch_publish = false;
    js.update_stream(config.clone()).await.expect("fast batches off");
    let reply = bank.transfers(&batch("single")).await.expect("a batch");
    assert_eq!(reply.applied, BATCH);
    for i in 0..3 {
        bank.transfer("ev-src", "ev-00", 1, Some(&format!("one-{i}"))).await.expect("a transfer");
    }
    eventually(Duration::from_secs(20), Duration::from_millis(100), async || {
        let paths = relayed_by_path(&js).await;
        let single = 1 + 2 * (BATCH as u64 + 3);
        if paths == (2 * BATCH as u64, single) { Ok(()) } else { Err(format!("{paths:?}")) }
    })
    .await;
    // The relay was refused before it published these one by one.
    let refused = tokio::time::Instant::now();

    // Turned on again: once the relay offers a fast batch again, it is taken (no restart).
    config.allow_batch_publish = true;
    js.update_stream(config).await.expect("fast batches on");
    tokio::time::sleep_until(refused + agora_nats::replica::relay::FAST_RETRY_AFTER).await;
    let reply = bank.transfers(&batch("again")).await.expect("a batch");
    assert_eq!(reply.applied, BATCH);
    eventually(Duration::from_secs(20), Duration::from_millis(100), async || {
        let paths = relayed_by_path(&js).await;
        if paths.0 == 4 * BATCH as u64 { Ok(()) } else { Err(format!("{paths:?}")) }
    })
    .await;

    let expected = 1 + 2 * (3 * BATCH + 3);
    let mut events = Vec::new();
    eventually(Duration::from_secs(20), Duration::from_millis(100), async || {
        events = events_in_order(&js).await;
        if events.len() >= expected { Ok(()) } else { Err(format!("{} events", events.len())) }
    })
    .await;
    assert_eq!(events.len(), expected, "every event once (one per posting)");
    let mut last: Option<(u64, usize)> = None;
    for (subject, id) in &events {
        assert!(subject.starts_with("agora.bank.events.ev-"), "{subject}");
        let mut parts = id.split(':');
        assert_eq!(parts.next(), Some("ledger"), "{id}");
        let seq: u64 = parts.next().and_then(|s| s.parse().ok()).expect("entry");
        let index: usize = parts.next().and_then(|s| s.parse().ok()).expect("index");
        let in_order = match last {
            None => index == 0,
            Some((s, i)) => (seq == s && index == i + 1) || (seq > s && index == 0),
        };
        assert!(in_order, "{id} after {last:?}");
        last = Some((seq, index));
    }
}

/// The lease bucket keeps a key as long as the instance that made it said (the default 2 s
/// here, made by the task service). Chat instances asked for a 10 s lease hold theirs on the
/// bucket's terms: the active one renews before the server drops its key, so the key never
/// vanishes and the standby never takes over while the active one lives (on a 10 s lease of
/// its own, the active one would renew every 3.3 s, after its key was gone); once it is
/// killed, the standby takes over within the bucket's lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_asked_for_a_longer_lease_than_the_bucket_keeps_hold_it_on_the_buckets_terms() {
    let mut system = System::nats_only();
    system.start_tasks();
    let long = ["--lease-ms", "10000"];
    let mut active =
        system.start_instance("chat", "chat-a", &long, agora_devtools::process::READY_LINE);
    let _standby = system.start_standby("chat", "chat-b", &long);
    let js = async_nats::jetstream::new(async_nats::connect(system.url()).await.expect("connect"));
    let bucket = js.get_key_value(replica_subject::LEASE_BUCKET).await.expect("lease bucket");
    let status = bucket.status().await.expect("status");
    assert_eq!(status.info.config.max_age, Duration::from_secs(2), "the bucket's lease");
    let holder = async || -> Option<String> {
        let entry = bucket.entry("chat").await.expect("read the lease")?;
        let holder: agora_nats::replica::lease::Holder =
            serde_json::from_slice(&entry.value).ok()?;
        (entry.operation == async_nats::jetstream::kv::Operation::Put).then_some(holder.instance)
    };
    let first = holder().await.expect("the active chat instance holds the lease");
    // `<service>-<host>-<pid>-<nuid>`
    let pid = first.rsplit('-').nth(1).and_then(|pid| pid.parse::<u32>().ok());
    assert_eq!(pid, Some(active.id()), "{first} is the instance started first");
    let watch = Instant::now();
    while watch.elapsed() < Duration::from_secs(8) {
        let now = holder().await;
        assert_eq!(now.as_deref(), Some(first.as_str()), "after {:?}", watch.elapsed());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    active.kill_hard();
    let killed = Instant::now();
    eventually(Duration::from_secs(10), Duration::from_millis(50), async || match holder().await {
        Some(instance) if instance != first => Ok(()),
        other => Err(format!("the lease is still {other:?}")),
    })
    .await;
    let took = killed.elapsed();
    println!("the standby took over {took:?} after the active instance was killed");
    assert!(took <= FAILOVER_MAX, "took over after {took:?}, the bucket's lease is 2 s");
}

/// Starts `binary` as `name` on the data directory `data` of the test's directory (with
/// `extra` flags), waiting until it is ready.
fn start_on(
    system: &System,
    name: &str,
    binary: &str,
    data: &str,
    extra: &[&str],
) -> anyhow::Result<Component> {
    let mut args = vec![
        "--server".to_owned(),
        system.url().to_owned(),
        "--data-dir".to_owned(),
        system.dir.path().join(data).display().to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let path = agora_devtools::process::component_binary(binary).expect("built");
    let logs = system.dir.path().join("logs");
    Component::start(name, &path, &args, &[], &logs)
}

/// Two instances on one data directory would write one database from two states (and a
/// standby restoring a snapshot would replace the file under the active one): a second
/// instance refuses the directory and names the process that holds it, for the replicated
/// services and a likes node alike, and the holder goes on serving; once the holder is killed
/// with `kill -9`, the kernel drops its lock and an instance starts there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_refuses_a_data_directory_another_process_holds() {
    let mut system = System::with_banks(1);
    system.add_likes(false);
    let client = system.client().await;
    client.deposit("alice", 5, Some("first")).await.expect("served");
    let ledger = system.active_pid("ledger").await.expect("an active ledger");
    let likes_node = ["--node-id", "likes-9", "--lease-ms", "3000"];
    for (binary, data, extra, holder) in [
        ("agora-ledger", "ledger", &[][..], Some(ledger)),
        ("agora-likes", "likes-0", &likes_node[..], None),
    ] {
        let refused = start_on(&system, "second", binary, data, extra)
            .map(drop)
            .expect_err("a second instance on a held data directory");
        let said = format!("{refused:#}");
        let dir = system.dir.path().join(data);
        assert!(
            said.contains(&format!(
                "the data directory {} is in use by another process",
                dir.display()
            )),
            "{binary}: {said}"
        );
        if let Some(pid) = holder {
            assert!(said.contains(&format!("(process {pid})")), "{said}");
        }
    }
    assert_eq!(client.deposit("alice", 5, Some("second")).await.expect("still served").balance, 10);
    assert_eq!(client.like("p", Some("u")).await.expect("still served").count, 1);

    system.kill_ledger();
    let _ledger = start_on(&system, "ledger-again", "agora-ledger", "ledger", &[])
        .expect("free after kill -9");
    assert_eq!(client.deposit("alice", 5, Some("third")).await.expect("served again").balance, 15);
}
