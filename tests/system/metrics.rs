//! Metrics as operators use them: a real Prometheus (Debian's package, installed by
//! scripts/install-prometheus) scrapes the gateway's `GET /metrics`, which gathers every
//! component instance over NATS, under the accounts and permissions of production; the test
//! asks Prometheus what it saw and compares with the load it sent. And who may read metrics.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use agora_nats::tasks::wire::SubmitRequest;
use agora_tests::{System, TEST_MANAGER, get_json, prometheus_query, wait_until};
use serde_json::Value;

const SCRAPER_TOKEN: &str = "test-scraper-token-0123456789";
const WITHIN: Duration = Duration::from_secs(60);

/// A Prometheus server, killed on drop.
struct Prometheus {
    child: Child,
    url: String,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

impl Prometheus {
    /// Scrapes `gateway_url` every second with the scraper token, with the repo's alert rules.
    fn start(dir: &Path, gateway_url: &str) -> Self {
        let port = agora_devtools::process::free_port().expect("a free port");
        let target = gateway_url.trim_start_matches("http://");
        let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/prometheus/alerts.yml");
        let token = dir.join("token");
        std::fs::write(&token, SCRAPER_TOKEN).expect("token file");
        let config = format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
             rule_files: [{rules:?}]\n\
             scrape_configs:\n\
             - job_name: agora\n\
             \x20 scrape_timeout: 1s\n\
             \x20 authorization: {{credentials_file: {token:?}}}\n\
             \x20 static_configs: [{{targets: [{target:?}]}}]\n",
            rules = rules.display().to_string(),
            token = token.display().to_string(),
        );
        let config_file = dir.join("prometheus.yml");
        std::fs::write(&config_file, config).expect("config file");
        let log = std::fs::File::create(dir.join("prometheus.log")).expect("log file");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config_file.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("prometheus starts (scripts/install-prometheus installs it)");
        Self { child, url: format!("http://127.0.0.1:{port}") }
    }

    /// The value of an instant query that yields one number, if it does yet.
    async fn number(&self, query: &str) -> Option<f64> {
        let result = prometheus_query(&self.url, query).await?;
        if result.len() != 1 {
            return None;
        }
        result[0]["value"][1].as_str()?.parse().ok()
    }

    async fn json(&self, path: &str) -> Option<Value> {
        get_json(&format!("{}{path}", self.url)).await
    }
}

/// `GET /metrics` with `token` as the bearer (or none): the status and the body.
async fn scrape(system: &System, token: Option<&str>) -> (u16, String) {
    let mut request = reqwest::Client::new()
        .get(format!("{}/metrics", system.gateway_url))
        .timeout(Duration::from_secs(10));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("the gateway answers");
    let status = response.status().as_u16();
    (status, response.text().await.expect("a body"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_every_instance_and_sees_the_load_sent() {
    let mut system = System::nats_with_auth();
    system.start_ledger();
    system.add_bank();
    system.add_bank();
    system.start_tasks();
    system.add_worker(&[]);
    std::fs::create_dir_all(system.files_root()).expect("served directory");
    std::fs::write(system.files_root().join("hello.txt"), b"hello").expect("a served file");
    system.add_files(&[]);
    system.start_chat();
    system.start_gateway_with(&["--metrics-token", SCRAPER_TOKEN]);

    // Who may read the metrics: the scrapers' secret or a manager; nobody else.
    let alice_token = system.http_token("alice").await;
    let manager_token = system.http_token(TEST_MANAGER).await;
    assert_eq!(scrape(&system, None).await.0, 401, "anonymous");
    assert_eq!(scrape(&system, Some(&alice_token)).await.0, 403, "a person who is not a manager");
    assert_eq!(scrape(&system, Some("test-scraper-token-0123456780")).await.0, 401, "a guess");
    let (status, text) = scrape(&system, Some(&manager_token)).await;
    assert_eq!(status, 200, "{text}");
    // Every component instance answers, each labelled; the families appear once.
    for (service, instances) in [
        ("ledger", 1),
        ("bank", 2),
        ("tasks", 1),
        ("worker", 1),
        ("files", 1),
        ("auth", 1),
        ("chat", 1),
    ] {
        let up = format!("agora_up{{service=\"{service}\",");
        assert_eq!(text.matches(&up).count(), instances, "{service} instances in:\n{text}");
    }
    assert!(text.contains("agora_up{service=\"gateway\","), "{text}");
    assert_eq!(text.matches("# TYPE agora_requests counter").count(), 1);
    assert!(text.trim_end().ends_with("# EOF"));
    // Over NATS, a person cannot ask the instances for their metrics.
    let alice = system.person("alice").await;
    let asked = alice.nats().request(agora_nats::subjects::metrics::ALL, "".into()).await;
    assert!(asked.is_err(), "a person's request for metrics is not answered");

    // The load: deposits and transfers through the bank, a file read, a task.
    alice.deposit("alice", 1_000_000, Some("m-0")).await.expect("deposit");
    const TRANSFERS: usize = 120;
    let mut sent = Vec::new();
    for i in 0..TRANSFERS {
        let alice = alice.clone();
        sent.push(tokio::spawn(async move {
            alice.transfer("alice", "bob", 3, Some(&format!("m-t{i}"))).await
        }));
    }
    for transfer in sent {
        transfer.await.expect("joined").expect("transfer");
    }
    // Refused ones are counted by their code.
    for _ in 0..5 {
        let refused = alice.transfer("alice", "bob", 10_000_000, None).await;
        assert!(refused.is_err());
    }

    let prometheus = Prometheus::start(system.dir.path(), &system.gateway_url);
    let transfers = "sum(agora_requests_total{service=\"bank\",endpoint=\"transfer\",code=\"ok\"})";
    wait_until(WITHIN, "Prometheus counts every transfer sent", async || {
        prometheus.number(transfers).await == Some(TRANSFERS as f64)
    })
    .await;
    let refused = "sum(agora_requests_total{service=\"bank\",endpoint=\"transfer\",\
                   code=\"insufficient_funds\"})";
    assert_eq!(prometheus.number(refused).await, Some(5.0));
    // Latency: one observation per transfer, and a p99 that is a time.
    let observed =
        "sum(agora_request_duration_seconds_count{service=\"bank\",endpoint=\"transfer\"})";
    assert_eq!(prometheus.number(observed).await, Some((TRANSFERS + 5) as f64));
    let p99 = "histogram_quantile(0.99, sum by (le) \
               (agora_request_duration_seconds_bucket{service=\"bank\",endpoint=\"transfer\"}))";
    let p99 = prometheus.number(p99).await.expect("a p99");
    assert!(p99 > 0.0 && p99 < 10.0, "p99 {p99}");
    // Both banks are scraped as instances of one service.
    assert_eq!(prometheus.number("count(agora_up{service=\"bank\"})").await, Some(2.0));
    // The ledger's owner committed groups, and nothing is in flight any more.
    let groups = "sum(agora_owner_groups_total{service=\"ledger\",outcome=\"committed\"})";
    assert!(prometheus.number(groups).await.unwrap_or(0.0) >= 1.0);
    let in_flight = "sum(agora_requests_in_flight{service=\"bank\"})";
    assert_eq!(prometheus.number(in_flight).await, Some(0.0));
    // The bank's batches to the ledger carried every single operation.
    let batched = "sum(agora_bank_batch_operations_sum)";
    let batched = prometheus.number(batched).await.expect("batched operations");
    assert!(batched >= (TRANSFERS + 1) as f64, "{batched}");

    // The task queue's consumers report their lag; a task submitted and run shows.
    let submit = SubmitRequest {
        wait_ms: Some(20_000),
        ..SubmitRequest::new("sum", &serde_json::json!({"numbers": [1, 2, 3]}))
    };
    let task = alice.submit(&submit).await.expect("a task");
    assert_eq!(task.state, "completed", "{task:?}");
    let lag = "sum(agora_jetstream_consumer_pending{stream=\"AGORA_TASKS\"})";
    wait_until(WITHIN, "the task consumers' lag is scraped", async || {
        prometheus.number(lag).await == Some(0.0)
    })
    .await;

    // No label names a person: a scrape after the load says nothing of alice or bob.
    let (_, after) = scrape(&system, Some(SCRAPER_TOKEN)).await;
    assert!(after.contains("agora_bank_batch_operations"), "{after}");
    for name in ["alice", "bob"] {
        assert!(!after.contains(name), "{name} appears in the metrics");
    }

    // Chat: what it fanned out, and how far history trails the senders.
    let talker = agora_nats::chat::client::ChatSession::register(alice.clone(), "alice")
        .await
        .expect("registers");
    for n in 0..3 {
        talker.say("all", &format!("message {n}")).await.expect("recorded");
    }
    wait_until(WITHIN, "the chat's room messages are counted", async || {
        prometheus.number("sum(agora_chat_messages_total{kind=\"room\"})").await == Some(3.0)
    })
    .await;
    let lag = "sum(agora_chat_history_lag_seconds_count)";
    assert_eq!(prometheus.number(lag).await, Some(3.0));

    // The gateway's own HTTP requests, by route pattern.
    let http = "sum(agora_http_requests_total{route=\"/metrics\",status=\"200\"})";
    assert!(prometheus.number(http).await.unwrap_or(0.0) >= 1.0);

    // The alert rules load and are evaluated; none fires on a healthy system.
    wait_until(WITHIN, "the alert rules are evaluated", async || {
        let Some(rules) = prometheus.json("/api/v1/rules").await else { return false };
        let rules: Vec<&Value> = rules["data"]["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().into_iter().flatten())
            .collect();
        rules.len() >= 6 && rules.iter().all(|r| r["health"] == "ok")
    })
    .await;
    let alerts = prometheus.json("/api/v1/alerts").await.expect("alerts");
    let firing: Vec<&Value> = alerts["data"]["alerts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["state"] == "firing")
        .collect();
    assert!(firing.is_empty(), "{firing:?}");
}

#[test]
fn the_alert_rules_and_the_compose_scrape_config_are_valid() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/prometheus");
    let checked = Command::new("promtool")
        .args(["check", "rules"])
        .arg(root.join("alerts.yml"))
        .output()
        .expect("promtool runs (scripts/install-prometheus installs it)");
    assert!(checked.status.success(), "{}", String::from_utf8_lossy(&checked.stdout));
    // The compose config, with its paths pointed at the repo's files.
    let dir = tempfile::tempdir().expect("a directory");
    let config = std::fs::read_to_string(root.join("prometheus.yml")).expect("config");
    std::fs::write(dir.path().join("metrics-token"), SCRAPER_TOKEN).expect("token");
    let config = config
        .replace("/etc/prometheus/alerts.yml", &root.join("alerts.yml").display().to_string())
        .replace(
            "/etc/prometheus/metrics-token",
            &dir.path().join("metrics-token").display().to_string(),
        );
    std::fs::write(dir.path().join("prometheus.yml"), config).expect("config");
    let checked = Command::new("promtool")
        .args(["check", "config"])
        .arg(dir.path().join("prometheus.yml"))
        .output()
        .expect("promtool runs");
    assert!(
        checked.status.success(),
        "{}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
}
