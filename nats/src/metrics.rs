//! Prometheus metrics of this process, and how they leave it: over NATS.
//!
//! Every component keeps one registry (prometheus-client). The request metrics every micro
//! service shares are kept here ([`requests`]): counts by endpoint and outcome (`ok` or the
//! error code), a latency histogram and the requests in flight per endpoint; they are fed by
//! [`crate::service::add_endpoint`] (arrival) and [`crate::service::Replier`] (the reply).
//! Capabilities register their own families with [`register`] (the owner runtime's groups and
//! commits, the files cache, JetStream consumer lag, ...); values that are read rather than
//! counted (a consumer's lag) are refreshed by [`on_scrape`] collectors when asked.
//!
//! Components open no port: [`serve`] answers on `agora.metrics` (every instance answers) and
//! on `agora.metrics.<service>` with the text exposition format, every series labelled with
//! the `service` and `instance` it came from. The gateway gathers every instance's answer into
//! one scrape target, `GET /metrics` ([`merge`]); docs/operations.md says why.

use std::any::Any;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Metric, Registry};

use crate::subjects;

/// How long the collectors of one scrape may take together.
pub const COLLECT_TIMEOUT: Duration = Duration::from_secs(2);
/// The largest exposition an instance sends (NATS' default max payload is 1 MiB).
pub const EXPOSITION_BYTES_MAX: usize = 900 * 1024;
/// The content type of the merged exposition (OpenMetrics text, ending in `# EOF`).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Latency buckets: 50 µs to ~26 s, doubling.
pub fn seconds_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.000_05, 2.0, 20)
}

/// Size buckets (operations in a batch, envelopes in a group): 1 to 8,192, doubling.
pub fn size_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(1.0, 2.0, 14)
}

/// Builds histograms of a family with the given buckets.
#[derive(Debug, Clone, Copy)]
pub struct Buckets(pub fn() -> Histogram);

impl MetricConstructor<Histogram> for Buckets {
    fn new_metric(&self) -> Histogram {
        (self.0)()
    }
}

/// A latency histogram family constructor.
pub fn seconds() -> Buckets {
    Buckets(|| Histogram::new(seconds_buckets()))
}

/// A size histogram family constructor.
pub fn sizes() -> Buckets {
    Buckets(|| Histogram::new(size_buckets()))
}

type Collector = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

struct Metrics {
    registry: Registry,
    /// Registered metrics by name, so that registering one twice returns the first.
    by_name: HashMap<String, Box<dyn Any + Send + Sync>>,
    collectors: Vec<Collector>,
}

static METRICS: LazyLock<Mutex<Metrics>> = LazyLock::new(|| {
    Mutex::new(Metrics {
        registry: Registry::default(),
        by_name: HashMap::new(),
        collectors: Vec::new(),
    })
});

fn locked() -> std::sync::MutexGuard<'static, Metrics> {
    METRICS.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Registers `metric` under `name` (without the `agora_` prefix every name gets) and returns a
/// handle to it; a name registered before returns the first one's handle.
pub fn register<M>(name: &str, help: &str, metric: M) -> M
where
    M: Metric + Clone + Send + Sync + 'static,
{
    let mut metrics = locked();
    if let Some(existing) = metrics.by_name.get(name).and_then(|m| m.downcast_ref::<M>()) {
        return existing.clone();
    }
    metrics.registry.register(format!("agora_{name}"), help, metric.clone());
    metrics.by_name.insert(name.to_owned(), Box::new(metric.clone()));
    metric
}

/// Runs `collect` before every exposition (to read values that are asked for, not counted).
pub fn on_scrape<F, Fut>(collect: F)
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    locked().collectors.push(Arc::new(move || Box::pin(collect())));
}

/// A gauge read from `read` at each scrape.
pub fn gauge_from(name: &str, help: &str, read: impl Fn() -> Option<i64> + Send + Sync + 'static) {
    let gauge: Gauge = register(name, help, Gauge::default());
    on_scrape(move || {
        if let Some(value) = read() {
            gauge.set(value);
        }
        std::future::ready(())
    });
}

/// A counter that follows a count kept elsewhere (`read`, never decreasing), read at each
/// scrape.
pub fn counter_from(
    name: &str,
    help: &str,
    read: impl Fn() -> Option<u64> + Send + Sync + 'static,
) {
    let counter: Counter = register(name, help, Counter::default());
    on_scrape(move || {
        if let Some(value) = read() {
            counter.inc_by(value.saturating_sub(counter.get()));
        }
        std::future::ready(())
    });
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConsumerLabels {
    stream: String,
    consumer: String,
}

fn consumer_family(name: &str, help: &str) -> Family<ConsumerLabels, Gauge> {
    register(name, help, Family::default())
}

fn pending_family() -> Family<ConsumerLabels, Gauge> {
    consumer_family(
        "jetstream_consumer_pending",
        "Messages of the stream the consumer has not delivered yet (its lag)",
    )
}

/// The lag of a consumer that reports it itself (an ordered consumer, which the server
/// forgets when it goes): set it from the `pending` of each message it reads.
pub fn consumer_pending(stream: &str, consumer: &str) -> Gauge {
    let labels = ConsumerLabels { stream: stream.to_owned(), consumer: consumer.to_owned() };
    pending_family().get_or_create(&labels).clone()
}

/// Reports a JetStream consumer's lag at each scrape: messages not yet delivered, delivered
/// and not acknowledged, redelivered and not acknowledged.
pub fn watch_consumer(js: &async_nats::jetstream::Context, stream: &str, consumer: &str) {
    let pending = pending_family();
    let ack_pending = consumer_family(
        "jetstream_consumer_ack_pending",
        "Messages delivered and not yet acknowledged",
    );
    let redelivered = consumer_family(
        "jetstream_consumer_redelivered",
        "Messages delivered more than once and not yet acknowledged",
    );
    let labels = ConsumerLabels { stream: stream.to_owned(), consumer: consumer.to_owned() };
    let (js, stream, consumer) = (js.clone(), stream.to_owned(), consumer.to_owned());
    on_scrape(move || {
        let (js, stream, consumer) = (js.clone(), stream.clone(), consumer.clone());
        let (pending, ack_pending, redelivered, labels) =
            (pending.clone(), ack_pending.clone(), redelivered.clone(), labels.clone());
        async move {
            let Ok(stream) = js.get_stream_no_info(&stream).await else { return };
            match stream.consumer_info(&consumer).await {
                Ok(info) => {
                    pending.get_or_create(&labels).set(info.num_pending as i64);
                    ack_pending.get_or_create(&labels).set(info.num_ack_pending as i64);
                    redelivered.get_or_create(&labels).set(info.num_redelivered as i64);
                }
                Err(error) => tracing::debug!(%error, consumer, "no consumer info for metrics"),
            }
        }
    });
}

/// The labels of per-endpoint series.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    pub endpoint: String,
}

/// The labels of request counts.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub endpoint: String,
    /// `ok`, or the error code.
    pub code: String,
}

/// The request metrics every micro service shares.
#[derive(Debug, Clone)]
pub struct Requests {
    pub total: Family<OutcomeLabels, Counter>,
    pub seconds: Family<EndpointLabels, Histogram, Buckets>,
    pub in_flight: Family<EndpointLabels, Gauge>,
}

/// This process's request metrics.
pub fn requests() -> &'static Requests {
    static REQUESTS: LazyLock<Requests> = LazyLock::new(|| Requests {
        total: register(
            "requests",
            "Requests answered, by endpoint and outcome (ok or the error code)",
            Family::default(),
        ),
        seconds: register(
            "request_duration_seconds",
            "Time from a request's arrival to its reply, by endpoint",
            Family::new_with_constructor(seconds()),
        ),
        in_flight: register(
            "requests_in_flight",
            "Requests arrived and not yet answered, by endpoint",
            Family::default(),
        ),
    });
    &REQUESTS
}

/// Whether this process meters its requests (counts by endpoint and code, latency histograms,
/// in flight): on unless `AGORA_REQUEST_METRICS=off`, read once. Off, a request costs what it
/// did before metrics existed; what the process exposes otherwise stays (queues, stores, lag).
pub fn metering() -> bool {
    static ON: LazyLock<bool> = LazyLock::new(|| {
        std::env::var("AGORA_REQUEST_METRICS").map_or(true, |value| value != "off")
    });
    *ON
}

/// The time since this process's first look at the clock: request arrival stamps.
pub fn monotonic_us() -> u64 {
    static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);
    EPOCH.elapsed().as_micros() as u64
}

/// This process's metrics in the text format, every series labelled `service` and `instance`.
pub async fn exposition(service: &str, instance: &str) -> String {
    let collectors = locked().collectors.clone();
    let collect = futures::future::join_all(collectors.iter().map(|collect| collect()));
    if tokio::time::timeout(COLLECT_TIMEOUT, collect).await.is_err() {
        tracing::debug!("metrics collectors took too long; exposing what they had");
    }
    let mut text = String::new();
    {
        let metrics = locked();
        // Writing into a String cannot fail.
        prometheus_client::encoding::text::encode_registry(&mut text, &metrics.registry).ok();
    }
    let text = label_samples(&text, &[("service", service), ("instance", instance)]);
    if text.len() > EXPOSITION_BYTES_MAX {
        tracing::warn!(bytes = text.len(), "metrics exposition too large; cut");
        let mut cut = text[..EXPOSITION_BYTES_MAX].rfind('\n').map_or(0, |end| end + 1);
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        return text[..cut].to_owned();
    }
    text
}

/// Answers `agora.metrics` and `agora.metrics.<service>` with [`exposition`] until the
/// connection closes.
pub async fn serve(client: async_nats::Client, service: String, instance: String) {
    let up: Gauge = register("up", "1 for every instance that answers", Gauge::default());
    up.set(1);
    let subscribe = |subject: String| {
        let client = client.clone();
        async move { client.subscribe(subject).await }
    };
    let (all, own) = match tokio::try_join!(
        subscribe(subjects::metrics::ALL.to_owned()),
        subscribe(subjects::metrics::subject(&service)),
    ) {
        Ok(subscriptions) => subscriptions,
        Err(error) => {
            tracing::warn!(%error, "cannot answer metrics requests");
            return;
        }
    };
    let mut requests = futures::stream::select(all, own);
    while let Some(message) = requests.next().await {
        let Some(reply) = message.reply else { continue };
        let text = exposition(&service, &instance).await;
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(subjects::metrics::HEADER_SERVICE, service.as_str());
        headers.insert(subjects::metrics::HEADER_INSTANCE, instance.as_str());
        if client.publish_with_headers(reply, headers, text.into()).await.is_err() {
            return;
        }
    }
}

/// Starts [`serve`] on its own task.
pub fn spawn(client: &async_nats::Client, service: &str, instance: &str) {
    tokio::spawn(serve(client.clone(), service.to_owned(), instance.to_owned()));
}

/// Adds `labels` first to every sample line of a text exposition.
pub fn label_samples(text: &str, labels: &[(&str, &str)]) -> String {
    let mut added = String::new();
    for (i, (name, value)) in labels.iter().enumerate() {
        if i > 0 {
            added.push(',');
        }
        added.push_str(name);
        added.push_str("=\"");
        for c in value.chars() {
            match c {
                '\\' => added.push_str("\\\\"),
                '"' => added.push_str("\\\""),
                '\n' => added.push_str("\\n"),
                c => added.push(c),
            }
        }
        added.push('"');
    }
    let mut out = String::with_capacity(text.len() + text.lines().count() * added.len());
    for line in text.lines() {
        if line.starts_with('#') || line.is_empty() {
            out.push_str(line);
        } else if let Some(open) = line.find(['{', ' ']) {
            let (name, rest) = line.split_at(open);
            out.push_str(name);
            out.push('{');
            out.push_str(&added);
            match rest.strip_prefix('{') {
                Some(labels) if labels.starts_with('}') => out.push_str(labels),
                Some(labels) => {
                    out.push(',');
                    out.push_str(labels);
                }
                None => {
                    out.push('}');
                    out.push_str(rest);
                }
            }
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

/// Merges the expositions of many instances into one: each family's `# HELP` and `# TYPE`
/// once, then every instance's samples of it (the format allows a family in one place only).
pub fn merge<'a>(expositions: impl IntoIterator<Item = &'a str>) -> String {
    // Families in order of first appearance: (header lines, sample lines).
    let mut order: Vec<String> = Vec::new();
    let mut families: HashMap<String, (Vec<&'a str>, Vec<&'a str>)> = HashMap::new();
    for text in expositions {
        let mut current: Option<String> = None;
        let mut seen_header = false;
        for line in text.lines() {
            if line == "# EOF" || line.is_empty() {
                continue;
            }
            if let Some(rest) = line.strip_prefix("# ") {
                let mut words = rest.splitn(3, ' ');
                let (_kind, name) = (words.next(), words.next().unwrap_or_default());
                if current.as_deref() != Some(name) {
                    current = Some(name.to_owned());
                    seen_header = families.contains_key(name);
                    if !seen_header {
                        order.push(name.to_owned());
                    }
                }
                let family = families.entry(name.to_owned()).or_default();
                if !seen_header {
                    family.0.push(line);
                }
            } else if let Some(name) = &current {
                families.entry(name.clone()).or_default().1.push(line);
            }
        }
    }
    let mut out = String::new();
    for name in order {
        let (headers, samples) = &families[&name];
        for line in headers.iter().chain(samples) {
            out.push_str(line);
            out.push('\n');
        }
    }
    out.push_str("# EOF\n");
    out
}

#[cfg(test)]
mod tests;
