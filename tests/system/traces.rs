//! Traces across NATS, as a trace viewer sees them: every component exports its spans over
//! OTLP/HTTP (JSON) to a collector the test runs; one transfer's spans (gateway -> bank ->
//! ledger) and one task's (CLI -> tasks -> worker -> tasks) share a trace and nest in order.
//! The same hops log their spans on `agora.logs`, with the trace id.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agora_nats::telemetry::LogRecord;
use agora_nats::trace::Trace;
use agora_tests::{System, eventually};
use futures::StreamExt;
use serde_json::{Value, json};

const WITHIN: Duration = Duration::from_secs(30);

/// One span as the collector received it.
#[derive(Debug, Clone)]
struct Span {
    service: String,
    name: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    start_ns: u128,
    end_ns: u128,
}

/// An OTLP/HTTP collector (JSON encoding) on a loopback port: keeps every span it is sent.
struct Collector {
    url: String,
    spans: Arc<Mutex<Vec<Span>>>,
}

impl Collector {
    async fn start() -> Self {
        let spans: Arc<Mutex<Vec<Span>>> = Arc::default();
        let kept = spans.clone();
        let app = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(move |body: axum::body::Bytes| {
                let kept = kept.clone();
                async move {
                    if let Ok(export) = serde_json::from_slice::<Value>(&body) {
                        kept.lock().unwrap().extend(spans_of(&export));
                    }
                    axum::Json(json!({}))
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a port");
        let url = format!("http://{}", listener.local_addr().expect("an address"));
        tokio::spawn(async move { axum::serve(listener, app).await.ok() });
        Self { url, spans }
    }

    /// The spans of one trace, once those named `names` have arrived.
    async fn trace(&self, trace_id: &str, names: &[&str]) -> Vec<Span> {
        eventually(WITHIN, Duration::from_millis(100), async || {
            let spans: Vec<Span> = self
                .spans
                .lock()
                .unwrap()
                .iter()
                .filter(|span| span.trace_id == trace_id)
                .cloned()
                .collect();
            if names.iter().all(|name| spans.iter().any(|span| span.name == *name)) {
                Ok(spans)
            } else {
                Err(format!("spans {names:?} of trace {trace_id}; got {spans:#?}"))
            }
        })
        .await
    }
}

/// The spans of an OTLP JSON export request.
fn spans_of(export: &Value) -> Vec<Span> {
    let mut spans = Vec::new();
    for resource in export["resourceSpans"].as_array().into_iter().flatten() {
        let service = resource["resource"]["attributes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|a| a["key"] == "service.name")
            .and_then(|a| a["value"]["stringValue"].as_str())
            .unwrap_or_default()
            .to_owned();
        for scope in resource["scopeSpans"].as_array().into_iter().flatten() {
            for span in scope["spans"].as_array().into_iter().flatten() {
                let text = |key: &str| span[key].as_str().unwrap_or_default().to_owned();
                let nanos = |key: &str| {
                    span[key]
                        .as_str()
                        .and_then(|n| n.parse().ok())
                        .or_else(|| span[key].as_u64().map(u128::from))
                        .unwrap_or_default()
                };
                spans.push(Span {
                    service: service.clone(),
                    name: text("name"),
                    trace_id: text("traceId").to_lowercase(),
                    span_id: text("spanId").to_lowercase(),
                    parent_span_id: text("parentSpanId").to_lowercase(),
                    start_ns: nanos("startTimeUnixNano"),
                    end_ns: nanos("endTimeUnixNano"),
                });
            }
        }
    }
    spans
}

/// The span named `name` among `spans`.
fn named<'a>(spans: &'a [Span], name: &str) -> &'a Span {
    spans
        .iter()
        .find(|span| span.name == name)
        .unwrap_or_else(|| panic!("no span {name:?} in {spans:#?}"))
}

/// `child` is `parent`'s child and lies within it in time (1 ms of slack: each process reads
/// its own clock).
fn nested(parent: &Span, child: &Span) {
    const SLACK_NS: u128 = 1_000_000;
    assert_eq!(child.parent_span_id, parent.span_id, "{child:#?} is a child of {parent:#?}");
    assert!(child.start_ns + SLACK_NS >= parent.start_ns, "{child:#?} starts in {parent:#?}");
    assert!(child.end_ns <= parent.end_ns + SLACK_NS, "{child:#?} ends in {parent:#?}");
}

/// A system whose components export their spans to `collector`, quickly.
fn traced_system(collector: &Collector) -> System {
    let mut system = System::start();
    system.env = vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(), collector.url.clone()),
        ("OTEL_BSP_SCHEDULE_DELAY".to_owned(), "100".to_owned()),
    ];
    // The ledger started before the environment was set: once more, with it.
    system.kill_ledger();
    system.start_ledger();
    system
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_is_one_trace_from_the_gateway_through_the_bank_to_the_ledger() {
    let collector = Collector::start().await;
    let mut system = traced_system(&collector);
    system.add_bank();
    system.start_gateway();
    let token = system.http_token("alice").await;
    let watcher = system.client().await;
    let mut logs = watcher.nats().subscribe("agora.logs.>").await.expect("subscribed");
    let mut events = watcher.nats().subscribe("agora.bank.events.bob").await.expect("subscribed");

    let http = reqwest::Client::new();
    let deposit = http
        .post(format!("{}/api/bank/deposit", system.gateway_url))
        .bearer_auth(&token)
        .json(&json!({"account": "alice", "amount": 500}))
        .send()
        .await
        .expect("the gateway answers");
    assert_eq!(deposit.status(), 200);

    // The caller's own span: the HTTP request carries it as its traceparent.
    let caller = Trace::root(true);
    let response = http
        .post(format!("{}/api/bank/transfer", system.gateway_url))
        .bearer_auth(&token)
        .header("traceparent", caller.traceparent())
        .json(&json!({"from": "alice", "to": "bob", "amount": 200}))
        .send()
        .await
        .expect("the gateway answers");
    assert_eq!(response.status(), 200);
    let answered = response.headers()["traceresponse"].to_str().expect("text").to_owned();
    let gateway_span = Trace::parse(&answered).expect("a traceresponse");
    assert_eq!(gateway_span.trace_id, caller.trace_id, "the gateway continues the trace");

    let trace_id = caller.trace_id.to_string();
    let spans = collector
        .trace(&trace_id, &["gateway POST /api/bank/transfer", "bank transfer", "ledger apply"])
        .await;
    let gateway = named(&spans, "gateway POST /api/bank/transfer");
    let bank = named(&spans, "bank transfer");
    let ledger = named(&spans, "ledger apply");
    assert_eq!(gateway.parent_span_id, caller.span_id.to_string());
    assert_eq!(gateway.span_id, gateway_span.span_id.to_string());
    nested(gateway, bank);
    nested(bank, ledger);
    assert_eq!(
        (gateway.service.as_str(), bank.service.as_str(), ledger.service.as_str()),
        ("agora-gateway", "agora-bank", "agora-ledger")
    );
    // The bank event the transfer made carries the ledger's span.
    let event = tokio::time::timeout(WITHIN, events.next())
        .await
        .expect("bob's event")
        .expect("subscription open");
    let carried = Trace::from_headers(event.headers.as_ref()).expect("a traceparent");
    assert_eq!(carried.trace_id.to_string(), trace_id);
    assert_eq!(carried.span_id.to_string(), ledger.span_id);

    // Each hop logged its span with the trace id.
    let mut logged: HashMap<String, LogRecord> = HashMap::new();
    let mut records = 0;
    let deadline = tokio::time::Instant::now() + WITHIN;
    while logged.len() < 3 {
        let message = tokio::time::timeout_at(deadline, logs.next())
            .await
            .unwrap_or_else(|_| panic!("span records of gateway, bank, ledger: {logged:?}"))
            .expect("log subscription open");
        let Ok(record) = serde_json::from_slice::<LogRecord>(&message.payload) else { continue };
        if record.trace_id.as_deref() == Some(trace_id.as_str()) {
            records += 1;
            let again = logged.insert(record.service.clone(), record.clone());
            assert!(again.is_none(), "one record per hop: {again:?} then {record:?}");
        }
    }
    // And nothing more of this trace comes.
    while let Ok(Some(message)) =
        tokio::time::timeout(Duration::from_millis(500), logs.next()).await
    {
        let record: Option<LogRecord> = serde_json::from_slice(&message.payload).ok();
        assert!(
            record.is_none_or(|r| r.trace_id.as_deref() != Some(trace_id.as_str())),
            "a fourth record of the trace after {records}"
        );
    }
    for service in ["gateway", "bank", "ledger"] {
        assert!(logged[service].message.starts_with("span "), "{:?}", logged[service]);
    }

    // A call that is not sampled records nothing, yet is answered with its span.
    let quiet = Trace::root(false);
    let response = http
        .get(format!("{}/api/bank/balance/alice", system.gateway_url))
        .bearer_auth(&token)
        .header("traceparent", quiet.traceparent())
        .send()
        .await
        .expect("the gateway answers");
    assert_eq!(response.status(), 200);
    let answered = Trace::parse(response.headers()["traceresponse"].to_str().expect("text"));
    assert_eq!(answered.map(|t| (t.trace_id, t.sampled)), Some((quiet.trace_id, false)));
    tokio::time::sleep(Duration::from_millis(600)).await;
    let quiet_id = quiet.trace_id.to_string();
    assert!(collector.spans.lock().unwrap().iter().all(|span| span.trace_id != quiet_id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_is_one_trace_from_the_cli_through_the_queue_to_the_worker_and_back() {
    let collector = Collector::start().await;
    let mut system = traced_system(&collector);
    system.start_tasks();
    system.add_worker(&[]);
    for (op, args) in [("sum", &["1", "2", "3"][..]), ("sleep", &["300"][..])] {
        let output = system
            .cli()
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", &collector.url)
            .args(["--trace", "task", "submit", op])
            .args(args)
            .arg("--wait")
            .output()
            .expect("agora runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{stderr}");
        let trace_id = stderr
            .lines()
            .find_map(|line| line.strip_prefix("trace "))
            .unwrap_or_else(|| panic!("agora --trace prints the trace id: {stderr}"))
            .trim()
            .to_owned();
        assert_eq!(trace_id.len(), 32, "{trace_id}");
        // The CLI's span, the submit, the worker's run, and the worker's reports to the task
        // service (a quick op is claimed with its outcome; others are claimed first).
        let run = format!("worker run {op}");
        let mut names = vec!["cli agora task submit", "tasks submit", &run, "tasks finish"];
        if op == "sleep" {
            names.push("tasks claim");
        }
        let spans = collector.trace(&trace_id, &names).await;
        let cli = named(&spans, "cli agora task submit");
        let submit = named(&spans, "tasks submit");
        let run = named(&spans, &run);
        let finish = named(&spans, "tasks finish");
        assert!(cli.parent_span_id.is_empty() || cli.parent_span_id == "0000000000000000");
        nested(cli, submit);
        assert_eq!(run.parent_span_id, submit.span_id, "the queued message carries the trace");
        assert!(run.start_ns + 1_000_000 >= submit.start_ns);
        nested(run, finish);
        if op == "sleep" {
            nested(run, named(&spans, "tasks claim"));
        }
    }
}
