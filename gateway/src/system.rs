//! The system routes: health, this API's OpenAPI document, the live service instances
//! (`$SRV.PING` and `$SRV.STATS`, gathered at most once a second) and recent log records.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State as StateOf};
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use serde::Deserialize;
use serde_json::{Value, json};

use super::State;
use super::http::{ApiError, ApiResult, json_bytes, query};
use super::routes::{Route, schema};
use super::session::Signed;
use agora_nats::client::gather;
use agora_nats::clock::now_ms;
use agora_nats::error::ErrorCode;
use agora_nats::subjects::micro;
use agora_nats::trace;

/// Health, the API document, service instances, logs.
pub const ROUTES: &[Route] = &[
    route!(
        "GET",
        "/api/health",
        "system",
        "Liveness, and whether NATS is connected",
        None,
        [],
        None,
        get(health)
    ),
    route!("GET", "/api/openapi.json", "system", "This document", None, [], None, get(openapi)),
    route!(
        "GET",
        "/api/services",
        "system",
        "Every live service instance ($SRV.PING and $SRV.STATS), at most a second old (managers)",
        None,
        [],
        None,
        get(services)
    ),
    route!(
        "GET",
        "/metrics",
        "system",
        "Prometheus metrics of every component instance, gathered over NATS (managers: a \
         scraper sends a manager's API token as its bearer token)",
        None,
        [],
        None,
        get(metrics),
        super::routes::Reply::Metrics
    ),
    route!(
        "GET",
        "/api/logs",
        "system",
        "Recent log records of every component, newest last (managers)",
        Some(schema::<LogsQuery>),
        ["service", "level", "limit", "trace_id"],
        None,
        get(logs)
    ),
];

/// How long a services snapshot is reused, and how long one gathers replies.
pub const SERVICES_TTL: Duration = Duration::from_secs(1);
pub const SERVICES_GATHER: Duration = Duration::from_millis(300);
/// Most replies a services snapshot reads.
pub const SERVICES_REPLIES_MAX: usize = 4_096;
/// How long a scrape gathers the instances' metrics, and from how many instances at most.
pub const METRICS_GATHER: Duration = Duration::from_millis(500);
pub const METRICS_REPLIES_MAX: usize = 1_024;

/// Every instance's metrics (`agora.metrics`), merged into one exposition.
pub async fn metrics(
    StateOf(state): StateOf<State>,
    headers: axum::http::HeaderMap,
    signed: Result<Signed, ApiError>,
) -> ApiResult {
    if !scraper(&state, &headers) {
        signed?.manager("the metrics")?;
    }
    let replies = gather(
        state.agora.nats(),
        agora_nats::subjects::metrics::ALL,
        Bytes::new(),
        METRICS_GATHER,
        Some(METRICS_REPLIES_MAX),
    )
    .await
    .map_err(|e| ApiError::new(ErrorCode::Unavailable, e.to_string()))?;
    let texts = replies.iter().filter_map(|reply| std::str::from_utf8(&reply.payload).ok());
    let body = agora_nats::metrics::merge(texts);
    Ok(([(CONTENT_TYPE, agora_nats::metrics::CONTENT_TYPE)], body).into_response())
}

/// Whether the request carries the scrapers' secret (`--metrics-token`) as its bearer token.
fn scraper(state: &State, headers: &axum::http::HeaderMap) -> bool {
    let Some(secret) = &state.config.metrics_token else { return false };
    let sent = super::session::bearer(headers).unwrap_or_default();
    // Compared in constant time: an early exit would tell how much of a guess was right.
    subtle::ConstantTimeEq::ct_eq(sent.as_bytes(), secret.as_bytes()).into()
}

/// The gateway's HTTP metrics.
#[derive(Debug, Clone)]
struct HttpMetrics {
    total: Family<HttpLabels, Counter>,
    seconds: Family<RouteLabels, Histogram, agora_nats::metrics::Buckets>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    method: String,
    route: String,
    status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

fn http_metrics() -> &'static HttpMetrics {
    static METRICS: std::sync::LazyLock<HttpMetrics> = std::sync::LazyLock::new(|| HttpMetrics {
        total: agora_nats::metrics::register(
            "http_requests",
            "HTTP requests answered, by method, route (its pattern) and status",
            Family::default(),
        ),
        seconds: agora_nats::metrics::register(
            "http_request_duration_seconds",
            "Time to an HTTP response's headers, by route (its pattern)",
            Family::new_with_constructor(agora_nats::metrics::seconds()),
        ),
    });
    &METRICS
}

/// Counts every HTTP request by its route's pattern (`/api/bank/balance/{account}`; never the
/// path itself, which would make a series per account), and handles it as a span of its own:
/// a child of the request's `traceparent` (or a new trace's root), current while the handler
/// calls the services, named in the `traceresponse` header of the response.
pub async fn meter(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let started = Instant::now();
    let started_at = std::time::SystemTime::now();
    let method = request.method().as_str().to_owned();
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or("unmatched", |path| path.as_str())
        .to_owned();
    let parent = request
        .headers()
        .get(trace::TRACEPARENT)
        .and_then(|value| value.to_str().ok())
        .and_then(trace::Trace::parse);
    let span = trace::Trace::start(parent.as_ref());
    let mut response = trace::scope(span, next.run(request)).await;
    if let Some(value) = span.and_then(|s| axum::http::HeaderValue::from_str(&s.traceparent()).ok())
    {
        response.headers_mut().insert(trace::TRACERESPONSE, value);
    }
    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    let labels = HttpLabels { method, route, status };
    let metering = agora_nats::metrics::metering();
    if metering {
        http_metrics().total.get_or_create(&labels).inc();
    }
    let route = RouteLabels { route: labels.route };
    if metering {
        http_metrics().seconds.get_or_create(&route).observe(elapsed.as_secs_f64());
    }
    // Only a recorded span needs a name.
    let Some(span) = span.filter(|span| span.sampled) else { return response };
    let operation = format!("{} {}", labels.method, route.route);
    let status_text = status.to_string();
    trace::record(trace::Finished {
        span,
        parent,
        operation: &operation,
        kind: opentelemetry::trace::SpanKind::Server,
        started: started_at,
        elapsed,
        error: (status >= 500).then_some(status_text.as_str()),
        attributes: vec![opentelemetry::KeyValue::new(
            "http.response.status_code",
            i64::from(status),
        )],
    });
    response
}

/// Gauges read at each scrape: live streams and the chat sessions the gateway holds.
pub fn gauges(state: &State) {
    let live = Arc::downgrade(state);
    agora_nats::metrics::gauge_from(
        "gateway_live_streams",
        "Live event streams (GET /api/events) open",
        move || live.upgrade().map(|state| state.live.clients() as i64),
    );
    let chat = Arc::downgrade(state);
    agora_nats::metrics::gauge_from(
        "gateway_chat_sessions",
        "Chat sessions the gateway holds for signed-in browsers",
        move || chat.upgrade().map(|state| state.chat.len() as i64),
    );
}

pub async fn health(StateOf(state): StateOf<State>) -> ApiResult {
    let connection = state.agora.nats().connection_state();
    let connected = matches!(connection, async_nats::connection::State::Connected);
    let info = state.agora.nats().server_info();
    let body = json!({
        "status": if connected { "ok" } else { "degraded" },
        "nats": connection.to_string(),
        "server": {"name": info.server_name, "version": info.version},
        "live_clients": state.live.clients(),
        "chat_sessions": state.chat.len(),
        "version": env!("CARGO_PKG_VERSION"),
    });
    if connected {
        Ok(Json(body).into_response())
    } else {
        Err(ApiError::new(ErrorCode::Unavailable, format!("NATS is {connection}")))
    }
}

pub async fn openapi() -> Response {
    Json(super::routes::openapi()).into_response()
}

/// A shared, short-lived snapshot of every service instance.
#[derive(Debug, Default)]
pub struct ServicesCache {
    snapshot: Mutex<Option<(Instant, Bytes)>>,
    /// One gathering at a time; the others wait for it and share its snapshot.
    gathering: tokio::sync::Mutex<()>,
}

impl ServicesCache {
    fn fresh(&self) -> Option<Bytes> {
        let snapshot = self.snapshot.lock().ok()?;
        let (at, bytes) = snapshot.as_ref()?;
        (at.elapsed() < SERVICES_TTL).then(|| bytes.clone())
    }
}

pub async fn services(StateOf(state): StateOf<State>, signed: Signed) -> ApiResult {
    signed.manager("the service instances")?;
    if let Some(bytes) = state.services.fresh() {
        return Ok(json_bytes(bytes));
    }
    let _gathering = state.services.gathering.lock().await;
    if let Some(bytes) = state.services.fresh() {
        return Ok(json_bytes(bytes));
    }
    let instances = gather_services(&state).await?;
    let bytes = Bytes::from(
        serde_json::to_vec(&json!({"as_of_ms": now_ms(), "instances": instances}))
            .map_err(|e| ApiError::new(ErrorCode::Internal, e.to_string()))?,
    );
    if let Ok(mut snapshot) = state.services.snapshot.lock() {
        *snapshot = Some((Instant::now(), bytes.clone()));
    }
    Ok(json_bytes(bytes))
}

/// Asks `$SRV.PING` and `$SRV.STATS` and merges the answers per instance id.
async fn gather_services(state: &State) -> Result<Vec<Value>, ApiError> {
    let unavailable =
        |e: &dyn std::fmt::Display| ApiError::new(ErrorCode::Unavailable, e.to_string());
    let client = state.agora.nats();
    let (pings, stats) = tokio::join!(
        gather(client, micro::PING, Bytes::new(), SERVICES_GATHER, Some(SERVICES_REPLIES_MAX)),
        gather(client, micro::STATS, Bytes::new(), SERVICES_GATHER, Some(SERVICES_REPLIES_MAX)),
    );
    let (pings, stats) = (pings.map_err(|e| unavailable(&e))?, stats.map_err(|e| unavailable(&e))?);
    let mut instances: BTreeMap<(String, String), Value> = BTreeMap::new();
    let answers = pings.iter().map(|m| (true, m)).chain(stats.iter().map(|m| (false, m)));
    for (ping, message) in answers {
        let Ok(reply) = serde_json::from_slice::<Value>(&message.payload) else { continue };
        let (Some(name), Some(id)) = (reply["name"].as_str(), reply["id"].as_str()) else {
            continue;
        };
        let entry = instances
            .entry((name.to_owned(), id.to_owned()))
            .or_insert_with(|| json!({"name": name, "id": id}));
        entry["version"] = reply["version"].clone();
        if ping {
            entry["metadata"] = reply["metadata"].clone();
        } else {
            entry["started"] = reply["started"].clone();
            entry["endpoints"] = reply["endpoints"].clone();
        }
    }
    Ok(instances.into_values().collect())
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LogsQuery {
    /// Only this component's records (`bank`, `ledger`, ...).
    pub service: Option<String>,
    /// The least severe level shown (default `info`).
    #[schemars(extend("enum" = ["info", "warn", "error"]))]
    pub level: Option<String>,
    /// Default 200.
    #[schemars(range(min = 1, max = 1_000))]
    pub limit: Option<usize>,
    /// Only the records of this trace (32 hex digits): the path of one request.
    #[schemars(regex(pattern = r"^[0-9a-f]{32}$"))]
    pub trace_id: Option<String>,
}

pub async fn logs(
    StateOf(state): StateOf<State>,
    signed: Signed,
    logs_query: Result<Query<LogsQuery>, QueryRejection>,
) -> ApiResult {
    signed.manager("the logs")?;
    let logs_query = query(logs_query)?;
    let minimum = match logs_query.level.as_deref() {
        None | Some("info") => 2,
        Some("warn") => 1,
        Some("error") => 0,
        Some(other) => {
            return Err(ApiError::invalid(format!("level is info, warn or error, not {other:?}")));
        }
    };
    let limit = logs_query.limit.unwrap_or(200);
    if !(1..=super::live::LOG_RING_MAX).contains(&limit) {
        return Err(ApiError::invalid(format!("limit is 1 to {}", super::live::LOG_RING_MAX)));
    }
    if let Some(id) = &logs_query.trace_id
        && (id.len() != 32 || !id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
    {
        return Err(ApiError::invalid("trace_id is 32 lowercase hex digits"));
    }
    let records = state.live.recent_logs(
        logs_query.service.as_deref(),
        minimum,
        limit,
        logs_query.trace_id.as_deref(),
    );
    Ok(Json(json!({ "records": records })).into_response())
}
