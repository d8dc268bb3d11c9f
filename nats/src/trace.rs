//! Traces across NATS: W3C trace context (`traceparent`) on every request, event and
//! JetStream message Agora sends, spans exported over OTLP when an endpoint is configured.
//!
//! - **Propagation.** A request that arrives through [`crate::service::add_endpoint`] gets a
//!   span of its own: a child of the caller's `traceparent` header (or the root of a new trace).
//!   While it is handled, that span is the task's [`current`] one ([`scope`]): every request
//!   [`crate::client::AgoraClient`] makes, every task it queues and every event it makes
//!   ([`applying`]) carry it as their `traceparent`, so the next span is its child. The gateway does the same
//!   for HTTP requests (and answers with a `traceresponse` header); the `agora` CLI starts a
//!   trace with `--trace` and prints its id.
//! - **Sampling.** The W3C `sampled` flag decides what is recorded, and every hop follows the
//!   caller's decision. A request without a `traceparent` starts a trace sampled with
//!   probability `AGORA_TRACE_SAMPLE` (0 to 1; default 1 when spans are exported, else 0); at
//!   0 it starts none (tracing off: nothing is made for requests nobody traces).
//! - **Recording** a sampled span ([`record`]) logs one info record with its `trace_id`,
//!   `span_id` and `parent_span_id` (so `agora.logs` and the dashboard's Logs tab follow a
//!   trace), and, when `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or `OTEL_EXPORTER_OTLP_ENDPOINT`
//!   is set, exports it over OTLP/HTTP (JSON) in batches from a thread of its own. Nothing is
//!   recorded for an unsampled trace.
//! - Every log record published while a span is current carries its `trace_id`.

use std::future::Future;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_sdk::trace::{BatchSpanProcessor, SpanData, SpanProcessor};

/// The header of the W3C trace context.
pub const TRACEPARENT: &str = "traceparent";
/// The HTTP response header that says which span answered (W3C Trace Context Level 2).
pub const TRACERESPONSE: &str = "traceresponse";

/// One span's identity: the trace it belongs to, its own id, and whether it is recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trace {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub sampled: bool,
}

impl Trace {
    /// A new span: the child of `parent`, or the root of a new trace (sampled by the root
    /// sampler).
    pub fn child_of(parent: Option<&Trace>) -> Self {
        match parent {
            Some(parent) => {
                Self { trace_id: parent.trace_id, span_id: new_span_id(), sampled: parent.sampled }
            }
            None => Self::root(sample_root()),
        }
    }

    /// The span of a request that arrived with `parent` (its `traceparent`): its child; without
    /// one, the root of a new trace when traces start here (`AGORA_TRACE_SAMPLE` above 0, or
    /// spans exported), else none: with tracing off, a request nobody traces costs nothing.
    pub fn start(parent: Option<&Trace>) -> Option<Self> {
        match parent {
            Some(parent) => Some(Self::child_of(Some(parent))),
            None if roots_start() => Some(Self::root(sample_root())),
            None => None,
        }
    }

    /// The root of a new trace, sampled or not.
    pub fn root(sampled: bool) -> Self {
        let trace_id = TraceId::from(rand::random::<u128>().max(1));
        Self { trace_id, span_id: new_span_id(), sampled }
    }

    /// `00-<trace id>-<span id>-<flags>`.
    pub fn traceparent(&self) -> String {
        let flags = if self.sampled { "01" } else { "00" };
        format!("00-{}-{}-{flags}", self.trace_id, self.span_id)
    }

    /// Parses a `traceparent` header value (W3C, version 00); `None` if it is not a valid one
    /// (wrong lengths, not hex, an all-zero id).
    pub fn parse(value: &str) -> Option<Self> {
        let value = value.trim();
        let mut parts = value.split('-');
        let (version, trace_id, span_id, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if version.len() != 2 || trace_id.len() != 32 || span_id.len() != 16 || flags.len() != 2 {
            return None;
        }
        // Version ff is forbidden; a later version may add fields after these four.
        let version = u8::from_str_radix(version, 16).ok()?;
        if version == 0xff || (version == 0 && parts.next().is_some()) {
            return None;
        }
        let hex = |text: &str| text.bytes().all(|b| b.is_ascii_hexdigit());
        if !hex(trace_id) || !hex(span_id) {
            return None;
        }
        let trace_id = TraceId::from_hex(trace_id).ok()?;
        let span_id = SpanId::from_hex(span_id).ok()?;
        let flags = u8::from_str_radix(flags, 16).ok()?;
        (trace_id != TraceId::INVALID && span_id != SpanId::INVALID).then_some(Self {
            trace_id,
            span_id,
            sampled: flags & 1 == 1,
        })
    }

    /// Whether a `traceparent` value says "sampled", without parsing the rest.
    pub fn is_sampled(value: &str) -> bool {
        value.trim().ends_with(['1', '3', '5', '7', '9', 'b', 'd', 'f', 'B', 'D', 'F'])
    }

    /// The `traceparent` of NATS headers, if there is a valid one.
    pub fn from_headers(headers: Option<&async_nats::HeaderMap>) -> Option<Self> {
        const NAME: async_nats::HeaderName = async_nats::HeaderName::from_static(TRACEPARENT);
        Self::parse(headers?.get(NAME)?.as_str())
    }
}

fn new_span_id() -> SpanId {
    SpanId::from(rand::random::<u64>().max(1))
}

tokio::task_local! {
    static CURRENT: Trace;
}

std::thread_local! {
    /// The span of the envelope an owner applies now (owners apply synchronously).
    static APPLYING: std::cell::Cell<Option<Trace>> = const { std::cell::Cell::new(None) };
}

/// The span the running task works for, or the one of the request an owner applies now.
pub fn current() -> Option<Trace> {
    CURRENT.try_with(|trace| *trace).ok().or_else(|| APPLYING.with(std::cell::Cell::get))
}

/// Runs `apply` (synchronous: an owner applying one request) with `span` as [`current`]: the
/// events it makes carry it.
pub fn applying<T>(span: Option<Trace>, apply: impl FnOnce() -> T) -> T {
    let before = APPLYING.with(|cell| cell.replace(span));
    let result = apply();
    APPLYING.with(|cell| cell.set(before));
    result
}

/// Runs `work` with `trace` as its [`current`] span (or as it is, without one).
pub async fn scope<F: Future>(trace: Option<Trace>, work: F) -> F::Output {
    match trace {
        Some(trace) => CURRENT.scope(trace, work).await,
        None => work.await,
    }
}

struct Tracing {
    /// The component's name (spans are named `<service> <operation>`).
    service: String,
    /// Chance that a trace starting here is sampled.
    root_ratio: f64,
    exporter: Option<BatchSpanProcessor>,
}

static TRACING: OnceLock<Tracing> = OnceLock::new();

/// Sets tracing up for component `service` (once; later calls do nothing): spans are exported
/// if an OTLP endpoint is configured (see the module's documentation).
pub fn init(service: &str) {
    if TRACING.get().is_some() {
        return;
    }
    let configured = ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"]
        .iter()
        .any(|key| std::env::var(key).is_ok_and(|value| !value.trim().is_empty()));
    let exporter = configured.then(|| exporter(service)).flatten();
    let default_ratio = if exporter.is_some() { 1.0 } else { 0.0 };
    let root_ratio = std::env::var("AGORA_TRACE_SAMPLE")
        .ok()
        .and_then(|value| value.trim().parse::<f64>().ok())
        .filter(|ratio| (0.0..=1.0).contains(ratio))
        .unwrap_or(default_ratio);
    TRACING.set(Tracing { service: service.to_owned(), root_ratio, exporter }).ok();
}

fn exporter(service: &str) -> Option<BatchSpanProcessor> {
    use opentelemetry_otlp::WithHttpConfig;
    use opentelemetry_otlp::{Protocol, WithExportConfig};
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(OtlpHttp::new())
        .with_protocol(Protocol::HttpJson)
        .with_timeout(EXPORT_TIMEOUT)
        .build();
    match exporter {
        Ok(exporter) => {
            let mut processor = BatchSpanProcessor::builder(exporter).build();
            let resource = opentelemetry_sdk::Resource::builder_empty()
                .with_service_name(format!("agora-{service}"))
                .build();
            processor.set_resource(&resource);
            tracing::info!("exporting trace spans over OTLP");
            Some(processor)
        }
        Err(error) => {
            tracing::warn!(%error, "cannot export trace spans; tracing stays off");
            None
        }
    }
}

/// Time an export may take, connecting and reading the collector's answer included.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest collector answer read.
const EXPORT_REPLY_BYTES_MAX: u64 = 4 * 1024 * 1024;

/// The OTLP exporter's HTTP client: ureq, blocking, on the batch span processor's own thread
/// (which is what the exporter's blocking clients are for), so that the service binaries link no
/// HTTP server stack (hyper comes with reqwest).
#[derive(Debug)]
struct OtlpHttp(ureq::Agent);

impl OtlpHttp {
    fn new() -> Self {
        let config = ureq::Agent::config_builder()
            .timeout_global(Some(EXPORT_TIMEOUT))
            .http_status_as_error(false)
            .build();
        Self(config.into())
    }
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for OtlpHttp {
    async fn send_bytes(
        &self,
        request: http::Request<bytes::Bytes>,
    ) -> Result<http::Response<bytes::Bytes>, opentelemetry_http::HttpError> {
        let (parts, body) = request.into_parts();
        let response = self.0.run(http::Request::from_parts(parts, body.to_vec()))?;
        let (parts, mut body) = response.into_parts();
        let body = body.with_config().limit(EXPORT_REPLY_BYTES_MAX).read_to_vec()?;
        Ok(http::Response::from_parts(parts, bytes::Bytes::from(body)))
    }
}

/// Whether any request this process handled had a span: until one does, nobody needs to look
/// for one (the owners' hot paths skip the header lookups).
static SPANS_SEEN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Notes that a request got a span (see [`spans_seen`]).
pub fn note_span() {
    if !SPANS_SEEN.load(std::sync::atomic::Ordering::Relaxed) {
        SPANS_SEEN.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Whether any request of this process had a span yet.
pub fn spans_seen() -> bool {
    SPANS_SEEN.load(std::sync::atomic::Ordering::Relaxed)
}

/// Whether requests that arrive without a trace start one.
fn roots_start() -> bool {
    TRACING.get().is_some_and(|tracing| tracing.root_ratio > 0.0)
}

fn sample_root() -> bool {
    let ratio = TRACING.get().map_or(0.0, |tracing| tracing.root_ratio);
    ratio > 0.0 && (ratio >= 1.0 || rand::random::<f64>() < ratio)
}

/// Sends the spans not yet exported (before a short-lived process exits).
pub fn flush() {
    if let Some(exporter) = TRACING.get().and_then(|tracing| tracing.exporter.as_ref()) {
        exporter.force_flush().ok();
    }
}

/// A finished span.
#[derive(Debug)]
pub struct Finished<'a> {
    pub span: Trace,
    /// The caller's span (the parent), if the span did not start the trace.
    pub parent: Option<Trace>,
    /// What was done (`bank.transfer`, `GET /api/bank/balance/{account}`); the span is named
    /// `<service> <operation>`.
    pub operation: &'a str,
    pub kind: SpanKind,
    pub started: SystemTime,
    pub elapsed: Duration,
    /// The error code, if it failed.
    pub error: Option<&'a str>,
    pub attributes: Vec<KeyValue>,
}

/// Records a finished span if its trace is sampled: an info log record, and the span itself
/// over OTLP when exporting.
pub fn record(finished: Finished<'_>) {
    if !finished.span.sampled {
        return;
    }
    let Some(tracing_setup) = TRACING.get() else { return };
    let name = format!("{} {}", tracing_setup.service, finished.operation);
    let parent_span_id = finished.parent.map_or(SpanId::INVALID, |parent| parent.span_id);
    tracing::info!(
        trace_id = %finished.span.trace_id,
        span_id = %finished.span.span_id,
        parent_span_id = %parent_span_id,
        duration_us = finished.elapsed.as_micros() as u64,
        outcome = finished.error.unwrap_or("ok"),
        "span {name}"
    );
    let Some(exporter) = &tracing_setup.exporter else { return };
    let status = match finished.error {
        Some(code) => Status::error(code.to_owned()),
        None => Status::Ok,
    };
    let mut attributes = finished.attributes;
    if let Some(code) = finished.error {
        attributes.push(KeyValue::new("agora.error_code", code.to_owned()));
    }
    exporter.on_end(SpanData {
        span_context: SpanContext::new(
            finished.span.trace_id,
            finished.span.span_id,
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        ),
        parent_span_id,
        parent_span_is_remote: finished.parent.is_some(),
        span_kind: finished.kind,
        name: name.into(),
        start_time: finished.started,
        end_time: finished.started + finished.elapsed,
        attributes,
        dropped_attributes_count: 0,
        events: Default::default(),
        links: Default::default(),
        status,
        instrumentation_scope: InstrumentationScope::builder("agora").build(),
    });
}

#[cfg(test)]
mod tests;
