//! Helpers every Agora NATS micro service shares: decoding requests within limits, replying
//! with JSON or with a coded error, and counting errors per code for `$SRV.STATS`.
//!
//! Error replies carry both the standard micro headers and a JSON body. async-nats'
//! `Request::respond(Err(..))` can only send an empty body, so errors are sent with
//! `respond_with_headers`; the service's built-in `num_errors` therefore stays 0 and the
//! per-code counts appear instead in each endpoint's `data` (see [`ErrorCounts`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use async_nats::HeaderMap;
use async_nats::service::endpoint::Endpoint;
use async_nats::service::{
    Group, NATS_SERVICE_ERROR, NATS_SERVICE_ERROR_CODE, Request, ServiceExt,
};
use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{ErrorBody, ErrorCode, ServiceError};
use crate::{metrics, trace};

/// The metadata key holding the host (container) an instance runs on: `agora health` finds
/// its own container's instance by it.
pub const METADATA_HOST: &str = "host";

/// This machine's (or container's) host name; empty if the system does not say.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|name| name.trim().to_owned())
        .unwrap_or_default()
}

/// A micro service builder with `metadata` plus the [`METADATA_HOST`] every instance carries.
pub fn builder(
    client: &async_nats::Client,
    mut metadata: HashMap<String, String>,
) -> async_nats::service::ServiceBuilder {
    metadata.insert(METADATA_HOST.to_owned(), host_name());
    client.service_builder().metadata(metadata)
}

/// Largest request payload any Agora endpoint accepts, in bytes.
pub const REQUEST_BYTES_MAX: usize = 64 * 1024;
/// The largest body of an endpoint that takes no fields (`{}`).
pub const NO_FIELDS_BYTES_MAX: usize = 4 * 1024;
/// How long a service that must run once listens for another instance before it starts.
pub const SECOND_INSTANCE_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

/// Parses a JSON request body of at most [`REQUEST_BYTES_MAX`] bytes.
pub fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, ServiceError> {
    decode_limited(payload, REQUEST_BYTES_MAX)
}

/// Parses a JSON request body, refusing empty, oversized (over `bytes_max`) or malformed ones.
pub fn decode_limited<T: DeserializeOwned>(
    payload: &[u8],
    bytes_max: usize,
) -> Result<T, ServiceError> {
    if payload.len() > bytes_max {
        return Err(ServiceError::invalid(format!(
            "request is {} bytes; the limit is {bytes_max}",
            payload.len()
        )));
    }
    if payload.iter().all(u8::is_ascii_whitespace) {
        return Err(ServiceError::invalid("empty request: a JSON object is required"));
    }
    from_object(payload).map_err(ServiceError::invalid)
}

/// What kind of JSON value a text starts with, for error messages.
fn json_kind(payload: &[u8]) -> &'static str {
    match payload.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => "an object",
        Some(b'[') => "an array",
        Some(b'"') => "a string",
        Some(b'-' | b'0'..=b'9') => "a number",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        Some(_) => "not JSON",
        None => "empty",
    }
}

/// Checks that a JSON text is an object (`{...}`), whatever it holds. serde reads a JSON array
/// as a struct's fields in order, so without this `["alice", 5]` would pass for
/// `{"account":"alice","amount":5}`; every request and every message Agora reads is an object.
pub fn check_object(payload: &[u8]) -> Result<(), String> {
    match json_kind(payload) {
        "an object" => Ok(()),
        kind => Err(format!("a JSON object ({{...}}) is required; this is {kind}")),
    }
}

/// Parses a JSON object into `T` (see [`check_object`]); the error says what was wrong.
pub fn from_object<T: DeserializeOwned>(payload: &[u8]) -> Result<T, String> {
    check_object(payload)?;
    serde_json::from_slice(payload).map_err(|e| format!("bad JSON: {e}"))
}

/// Parses a JSON body that may be empty (then `T::default()`).
pub fn decode_or_default<T: DeserializeOwned + Default>(
    payload: &[u8],
    bytes_max: usize,
) -> Result<T, ServiceError> {
    if payload.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    decode_limited(payload, bytes_max)
}

/// The request of an endpoint that takes no fields: empty, or `{}`. Anything else (an
/// unknown field, an array, a string) is refused like any other bad request.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoFields {}

/// Checks the body of an endpoint that takes no fields (see [`NoFields`]).
pub fn no_fields(payload: &[u8]) -> Result<(), ServiceError> {
    decode_or_default::<NoFields>(payload, NO_FIELDS_BYTES_MAX).map(drop)
}

/// Serializes a reply. Serializing our own wire types cannot fail; if it ever does, that is
/// reported as an `internal` error rather than a panic in a service loop.
pub fn encode<T: Serialize>(value: &T) -> Result<Bytes, ServiceError> {
    serde_json::to_vec(value)
        .map(Bytes::from)
        .map_err(|e| ServiceError::new(ErrorCode::Internal, format!("cannot encode reply: {e}")))
}

/// The headers and body of an error reply.
pub fn error_reply(error: &ServiceError) -> (HeaderMap, Bytes) {
    let mut headers = HeaderMap::new();
    // Header values cannot hold line breaks; messages are ours and one line, but be sure.
    let description: String = error.message.chars().filter(|c| !c.is_control()).collect();
    headers.insert(NATS_SERVICE_ERROR, description.as_str());
    headers.insert(NATS_SERVICE_ERROR_CODE, error.code.status().to_string().as_str());
    let body = serde_json::to_vec(&ErrorBody { error: error.clone() }).unwrap_or_default();
    (headers, Bytes::from(body))
}

/// Answers a plain message (not a micro-service request) on its reply subject: the JSON, or a
/// coded error with the same headers and body as a service's error reply.
pub async fn publish_reply(
    client: &async_nats::Client,
    reply: async_nats::Subject,
    result: Result<Bytes, ServiceError>,
) -> Result<(), async_nats::PublishError> {
    match result {
        Ok(payload) => client.publish(reply, payload).await,
        Err(error) => {
            let (headers, body) = error_reply(&error);
            client.publish_with_headers(reply, headers, body).await
        }
    }
}

/// Refuses to start a service that must run once (it keeps state no other instance shares)
/// while another instance of `service` answers `$SRV.PING`.
pub async fn refuse_second_instance(
    client: &async_nats::Client,
    service: &str,
) -> anyhow::Result<()> {
    let running =
        crate::client::ping_instances(client, Some(service), SECOND_INSTANCE_WAIT, |_| true)
            .await?;
    if let Some(id) = running.first().and_then(|info| info["id"].as_str()) {
        anyhow::bail!("another {service} (id {id}) is running on this NATS system; run one");
    }
    Ok(())
}

/// Per-endpoint, per-code error counters, shown in `$SRV.STATS` endpoint `data`.
#[derive(Debug, Clone, Default)]
pub struct ErrorCounts {
    inner: Arc<Mutex<HashMap<String, BTreeMap<ErrorCode, u64>>>>,
}

impl ErrorCounts {
    pub fn record(&self, endpoint: &str, code: ErrorCode) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        *inner.entry(endpoint.to_owned()).or_default().entry(code).or_default() += 1;
    }

    /// JSON for one endpoint: `{"errors": {"busy": 3, ...}}`.
    pub fn snapshot(&self, endpoint: &str) -> serde_json::Value {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let errors: BTreeMap<&str, u64> = inner
            .get(endpoint)
            .map(|codes| codes.iter().map(|(code, n)| (code.as_str(), *n)).collect())
            .unwrap_or_default();
        serde_json::json!({ "errors": errors })
    }
}

/// Adds endpoint `name` on `subject` (relative to the group) to a service group. The name is
/// also the key of the endpoint's `$SRV.STATS` entry, of its [`ErrorCounts`] and of its
/// request metrics (`crate::metrics::requests`).
pub async fn add_endpoint(
    group: &Group,
    name: &str,
    subject: &str,
) -> anyhow::Result<MeteredEndpoint> {
    let inner = group
        .endpoint_builder()
        .name(name)
        .add(subject)
        .await
        .map_err(|e| anyhow::anyhow!("cannot add endpoint {subject}: {e}"))?;
    let labels = metrics::EndpointLabels { endpoint: name.to_owned() };
    let in_flight = metrics::requests().in_flight.get_or_create(&labels).clone();
    Ok(MeteredEndpoint { inner, in_flight })
}

/// The header a request gets on arrival: when it arrived ([`metrics::monotonic_us`]), so that
/// its reply, wherever it is sent from, knows how long it took. A caller's own is replaced.
pub const RECEIVED_HEADER: &str = "Agora-Received-Us";

/// An endpoint's requests, each stamped with its arrival ([`RECEIVED_HEADER`]) and counted in
/// flight until [`Replier`] answers it.
pub struct MeteredEndpoint {
    inner: Endpoint,
    in_flight: prometheus_client::metrics::gauge::Gauge,
}

impl std::fmt::Debug for MeteredEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeteredEndpoint").field("in_flight", &self.in_flight.get()).finish()
    }
}

impl futures::Stream for MeteredEndpoint {
    type Item = Request;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Request>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_next(cx);
        if let std::task::Poll::Ready(Some(request)) = polled {
            let mut request = request;
            let parent = trace::Trace::from_headers(request.message.headers.as_ref());
            let span = trace::Trace::start(parent.as_ref());
            let headers = request.message.headers.get_or_insert_with(HeaderMap::new);
            if metrics::metering() || span.is_some() {
                headers.insert(RECEIVED, metrics::monotonic_us().to_string().as_str());
            }
            match span {
                Some(span) => {
                    trace::note_span();
                    headers.insert(SPAN, span.traceparent().as_str());
                }
                // A caller's own is not believed (an empty one is no span).
                None if trace::spans_seen() && headers.get(SPAN).is_some() => {
                    headers.insert(SPAN, "")
                }
                None => {}
            }
            if metrics::metering() {
                self.in_flight.inc();
            }
            return std::task::Poll::Ready(Some(request));
        }
        polled
    }
}

// Header names built once (a name from a `&str` is checked and copied at every lookup).
const RECEIVED: async_nats::HeaderName = async_nats::HeaderName::from_static(RECEIVED_HEADER);
const SPAN: async_nats::HeaderName = async_nats::HeaderName::from_static(SPAN_HEADER);

/// The header a request gets on arrival: its own span (see [`crate::trace`]), a child of the
/// caller's `traceparent`. A caller's own is replaced.
pub const SPAN_HEADER: &str = "Agora-Span";

/// The span of a request that came through a [`MeteredEndpoint`]: what its handler works for
/// (`trace::scope(service::span_of(&request), ...)`).
pub fn span_of(request: &Request) -> Option<trace::Trace> {
    if !trace::spans_seen() {
        return None;
    }
    trace::Trace::parse(request.message.headers.as_ref()?.get(SPAN)?.as_str())
}

/// The span a batch of requests' downstream call works for: the first sampled request's, else
/// the first's (a span has one parent; a batch serves many).
pub fn batch_span<'a>(requests: impl Iterator<Item = &'a Request> + Clone) -> Option<trace::Trace> {
    if !trace::spans_seen() {
        return None;
    }
    let header = |request: &'a Request| {
        request.message.headers.as_ref()?.get(SPAN).map(|value| value.as_str())
    };
    let sampled = requests.clone().filter_map(header).find(|span| trace::Trace::is_sampled(span));
    let first = || requests.clone().find_map(header);
    trace::Trace::parse(sampled.or_else(first)?)
}

/// When `request` arrived (see [`RECEIVED_HEADER`]).
fn received_us(request: &Request) -> Option<u64> {
    request.message.headers.as_ref()?.get(RECEIVED)?.as_str().parse().ok()
}

/// Replies to `request` with a JSON value or a coded error. A reply that cannot be published
/// (connection gone) is logged: the requester will time out and retry.
#[derive(Debug, Clone)]
pub struct Replier {
    /// Shared: a request carries its endpoint's replier, and a clone is one reference count.
    inner: Arc<ReplierInner>,
}

#[derive(Debug)]
struct ReplierInner {
    endpoint: String,
    errors: ErrorCounts,
    /// The endpoint's request metrics, looked up once.
    ok: prometheus_client::metrics::counter::Counter,
    seconds: prometheus_client::metrics::histogram::Histogram,
    in_flight: prometheus_client::metrics::gauge::Gauge,
}

impl Replier {
    pub fn new(endpoint: impl Into<String>, errors: ErrorCounts) -> Self {
        let endpoint = endpoint.into();
        let requests = metrics::requests();
        let outcome = metrics::OutcomeLabels { endpoint: endpoint.clone(), code: "ok".to_owned() };
        let labels = metrics::EndpointLabels { endpoint: endpoint.clone() };
        // One at a time: a family's handle holds its lock until the statement ends.
        let ok = requests.total.get_or_create(&outcome).clone();
        let seconds = requests.seconds.get_or_create(&labels).clone();
        let in_flight = requests.in_flight.get_or_create(&labels).clone();
        Self { inner: Arc::new(ReplierInner { ok, seconds, in_flight, endpoint, errors }) }
    }

    pub async fn reply<T: Serialize>(&self, request: &Request, result: Result<T, ServiceError>) {
        let bytes = result.and_then(|value| encode(&value));
        self.reply_bytes(request, bytes).await;
    }

    pub async fn reply_bytes(&self, request: &Request, result: Result<Bytes, ServiceError>) {
        self.reply_bytes_with(request, result, None).await;
    }

    /// [`Self::reply_bytes`], with `headers` on a successful reply.
    pub async fn reply_bytes_with(
        &self,
        request: &Request,
        result: Result<Bytes, ServiceError>,
        headers: Option<HeaderMap>,
    ) {
        let code = result.as_ref().err().map(|error| error.code);
        // The span ends as the reply leaves (the caller may be done before this task goes on).
        let answered = (metrics::monotonic_us(), std::time::SystemTime::now());
        let sent = match (result, headers) {
            (Ok(payload), Some(headers)) => {
                request.respond_with_headers(Ok(payload), headers).await
            }
            (Ok(payload), None) => request.respond(Ok(payload)).await,
            (Err(error), _) => {
                self.inner.errors.record(&self.inner.endpoint, error.code);
                let (headers, body) = error_reply(&error);
                request.respond_with_headers(Ok(body), headers).await
            }
        };
        if let Err(error) = sent {
            tracing::warn!(endpoint = %self.inner.endpoint, %error, "could not send reply");
        }
        self.count(request, code, answered);
    }

    /// Counts an answered request: its outcome, and (if it came through a
    /// [`MeteredEndpoint`]) its time from arrival to `answered` (monotonic µs, wall clock).
    fn count(
        &self,
        request: &Request,
        code: Option<ErrorCode>,
        answered: (u64, std::time::SystemTime),
    ) {
        let metering = metrics::metering();
        match code {
            _ if !metering => {}
            None => {
                self.inner.ok.inc();
            }
            Some(code) => {
                let outcome = metrics::OutcomeLabels {
                    endpoint: self.inner.endpoint.clone(),
                    code: code.as_str().to_owned(),
                };
                metrics::requests().total.get_or_create(&outcome).inc();
            }
        }
        let Some(received) = received_us(request) else { return };
        let elapsed_us = answered.0.saturating_sub(received);
        if metering {
            self.inner.seconds.observe(elapsed_us as f64 / 1e6);
            self.inner.in_flight.dec();
        }
        if !trace::spans_seen() {
            return;
        }
        let headers = request.message.headers.as_ref();
        let sampled = headers
            .and_then(|headers| headers.get(SPAN))
            .is_some_and(|span| trace::Trace::is_sampled(span.as_str()));
        if !sampled {
            return;
        }
        let Some(span) = span_of(request) else { return };
        let elapsed = std::time::Duration::from_micros(elapsed_us);
        trace::record(trace::Finished {
            span,
            parent: trace::Trace::from_headers(headers),
            operation: &self.inner.endpoint,
            kind: opentelemetry::trace::SpanKind::Server,
            started: answered.1 - elapsed,
            elapsed,
            error: code.map(ErrorCode::as_str),
            attributes: vec![opentelemetry::KeyValue::new(
                "messaging.destination.name",
                request.message.subject.to_string(),
            )],
        });
    }
}

#[cfg(test)]
mod tests;
