//! The JSON API's handlers. Each builds one request for one subject from the path, the query
//! and the body, and answers with the service's reply as it came (or its coded error).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State as StateOf};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{ApiError, State};
use agora_nats::bank::wire::{AmountRequest, BalanceRequest, TransferRequest};
use agora_nats::clock::now_ms;
use agora_nats::coins::wire::{
    CoinsHistoryRequest, OrderLookup, PortfolioRequest, RemoveAssetRequest, UpdateAssetRequest,
};
use agora_nats::error::ErrorCode;
use agora_nats::files::wire::{ListFilesRequest, StatRequest};
use agora_nats::likes::wire::{LikeRequest, TopRequest};
use agora_nats::subjects;
use agora_nats::tasks::wire::{ListRequest, SubmitRequest, TaskIdRequest};

pub type ApiResult = Result<Response, ApiError>;

/// How long a services snapshot is reused, and how long one gathers replies.
pub const SERVICES_TTL: Duration = Duration::from_secs(1);
pub const SERVICES_GATHER: Duration = Duration::from_millis(300);
/// Most replies a services snapshot reads.
pub const SERVICES_REPLIES_MAX: usize = 4_096;

/// A JSON reply as the service sent it.
pub(crate) fn json_bytes(bytes: Bytes) -> Response {
    ([(CONTENT_TYPE, HeaderValue::from_static("application/json"))], bytes).into_response()
}

/// Sends `request` (as JSON) to `subject` and answers with the reply.
pub(crate) async fn forward<T: Serialize>(state: &State, subject: &str, request: &T) -> ApiResult {
    let payload = serde_json::to_vec(request)
        .map_err(|e| ApiError::new(ErrorCode::Internal, format!("cannot encode: {e}")))?;
    forward_bytes(state, subject, Bytes::from(payload)).await
}

/// Sends a JSON body to `subject` as it came and answers with the reply.
pub(crate) async fn forward_bytes(state: &State, subject: &str, payload: Bytes) -> ApiResult {
    Ok(json_bytes(state.agora.request_bytes(subject, payload).await?))
}

/// A request body that is JSON (empty when `empty_ok`), within the size limit.
pub(crate) fn json_body(
    body: Result<Bytes, BytesRejection>,
    empty_ok: bool,
) -> Result<Bytes, ApiError> {
    let body = body.map_err(|rejection| {
        ApiError::invalid(format!("cannot read the body: {}", rejection.body_text()))
            .with_status(rejection.status())
    })?;
    if body.is_empty() && empty_ok {
        return Ok(body);
    }
    agora_nats::service::check_object(&body)
        .and_then(|()| {
            serde_json::from_slice::<serde::de::IgnoredAny>(&body)
                .map_err(|e| format!("not JSON: {e}"))
        })
        .map_err(|e| ApiError::invalid(format!("bad body: {e}")))?;
    Ok(body)
}

/// A body parsed as `T`.
pub(crate) fn parse_body<T: serde::de::DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    let body = json_body(body, false)?;
    agora_nats::service::from_object(&body).map_err(|e| ApiError::invalid(format!("bad body: {e}")))
}

pub(crate) fn path<T>(path: Result<Path<T>, PathRejection>) -> Result<T, ApiError> {
    path.map(|Path(value)| value)
        .map_err(|rejection| ApiError::invalid(format!("bad path: {}", rejection.body_text())))
}

pub(crate) fn query<T>(query: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    query
        .map(|Query(value)| value)
        .map_err(|rejection| ApiError::invalid(format!("bad query: {}", rejection.body_text())))
}

pub async fn no_route(method: Method, uri: Uri) -> ApiError {
    ApiError::new(ErrorCode::NotFound, format!("no route for {method} {}", uri.path()))
}

pub async fn wrong_method(method: Method, uri: Uri) -> ApiError {
    ApiError::invalid(format!("{} does not take {method}", uri.path()))
        .with_status(StatusCode::METHOD_NOT_ALLOWED)
}

// ---------------------------------------------------------------------------------------------
// System
// ---------------------------------------------------------------------------------------------

pub async fn health(StateOf(state): StateOf<State>) -> ApiResult {
    let connection = state.agora.nats().connection_state();
    let connected = matches!(connection, async_nats::connection::State::Connected);
    let info = state.agora.nats().server_info();
    let body = json!({
        "status": if connected { "ok" } else { "degraded" },
        "nats": connection.to_string(),
        "server": {"name": info.server_name, "version": info.version},
        "manager": state.config.manager_token.is_some(),
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

pub async fn services(StateOf(state): StateOf<State>) -> ApiResult {
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
    let inbox = client.new_inbox();
    let mut replies = client.subscribe(format!("{inbox}.*")).await.map_err(|e| unavailable(&e))?;
    for kind in ["PING", "STATS"] {
        client
            .publish_with_reply(format!("$SRV.{kind}"), format!("{inbox}.{kind}"), Bytes::new())
            .await
            .map_err(|e| unavailable(&e))?;
    }
    client.flush().await.map_err(|e| unavailable(&e))?;
    let mut instances: BTreeMap<(String, String), Value> = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + SERVICES_GATHER;
    let mut read = 0;
    while read < SERVICES_REPLIES_MAX {
        let Ok(Some(message)) = tokio::time::timeout_at(deadline, replies.next()).await else {
            break;
        };
        read += 1;
        let Ok(reply) = serde_json::from_slice::<Value>(&message.payload) else { continue };
        let (Some(name), Some(id)) = (reply["name"].as_str(), reply["id"].as_str()) else {
            continue;
        };
        let entry = instances
            .entry((name.to_owned(), id.to_owned()))
            .or_insert_with(|| json!({"name": name, "id": id}));
        if message.subject.ends_with(".PING") {
            entry["version"] = reply["version"].clone();
            entry["metadata"] = reply["metadata"].clone();
        } else {
            entry["version"] = reply["version"].clone();
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
}

pub async fn logs(
    StateOf(state): StateOf<State>,
    logs_query: Result<Query<LogsQuery>, QueryRejection>,
) -> ApiResult {
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
    let records = state.live.recent_logs(logs_query.service.as_deref(), minimum, limit);
    Ok(Json(json!({ "records": records })).into_response())
}

// ---------------------------------------------------------------------------------------------
// Bank
// ---------------------------------------------------------------------------------------------

pub async fn balance(
    StateOf(state): StateOf<State>,
    account: Result<Path<String>, PathRejection>,
) -> ApiResult {
    let account = path(account)?;
    forward(&state, subjects::bank::BALANCE_SUBJECT, &BalanceRequest { account }).await
}

pub async fn deposit(
    StateOf(state): StateOf<State>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    forward_bytes(&state, subjects::bank::DEPOSIT_SUBJECT, json_body(body, false)?).await
}

pub async fn withdraw(
    StateOf(state): StateOf<State>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    forward_bytes(&state, subjects::bank::WITHDRAW_SUBJECT, json_body(body, false)?).await
}

pub async fn transfer(
    StateOf(state): StateOf<State>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    forward_bytes(&state, subjects::bank::TRANSFER_SUBJECT, json_body(body, false)?).await
}

/// The legacy routes' amount: an integer of minor units.
fn amount(text: &str) -> Result<i64, ApiError> {
    text.parse()
        .map_err(|_| ApiError::invalid(format!("the amount must be an integer, not {text:?}")))
}

/// The operation id of a legacy call: its `Idempotency-Key` header, if any.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    headers
        .get("idempotency-key")
        .map(|value| {
            value
                .to_str()
                .map(str::to_owned)
                .map_err(|_| ApiError::invalid("Idempotency-Key must be visible ASCII"))
        })
        .transpose()
}

pub async fn legacy_deposit(
    state: StateOf<State>,
    headers: HeaderMap,
    params: Result<Path<(String, String)>, PathRejection>,
) -> ApiResult {
    legacy_amount(state, headers, params, subjects::bank::DEPOSIT_SUBJECT).await
}

pub async fn legacy_withdraw(
    state: StateOf<State>,
    headers: HeaderMap,
    params: Result<Path<(String, String)>, PathRejection>,
) -> ApiResult {
    legacy_amount(state, headers, params, subjects::bank::WITHDRAW_SUBJECT).await
}

/// `/deposit` and `/withdrawal`: the account and the amount in the path.
async fn legacy_amount(
    StateOf(state): StateOf<State>,
    headers: HeaderMap,
    params: Result<Path<(String, String)>, PathRejection>,
    subject: &str,
) -> ApiResult {
    let (account, text) = path(params)?;
    let request = AmountRequest { account, amount: amount(&text)?, id: idempotency_key(&headers)? };
    forward(&state, subject, &request).await
}

pub async fn legacy_balance(
    state: StateOf<State>,
    account: Result<Path<String>, PathRejection>,
) -> ApiResult {
    balance(state, account).await
}

pub async fn legacy_transfer(
    StateOf(state): StateOf<State>,
    headers: HeaderMap,
    params: Result<Path<(String, String, String)>, PathRejection>,
) -> ApiResult {
    let (from, to, text) = path(params)?;
    let request =
        TransferRequest { from, to, amount: amount(&text)?, id: idempotency_key(&headers)? };
    forward(&state, subjects::bank::TRANSFER_SUBJECT, &request).await
}

// ---------------------------------------------------------------------------------------------
// Coins
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AssetsQuery {
    /// Comma-separated symbols (at most 100); every listed asset without it.
    pub symbols: Option<String>,
}

pub async fn coin_assets(
    StateOf(state): StateOf<State>,
    assets: Result<Query<AssetsQuery>, QueryRejection>,
) -> ApiResult {
    let symbols = query(assets)?
        .symbols
        .map(|list| list.split(',').map(str::trim).map(str::to_owned).collect::<Vec<_>>());
    let request = agora_nats::coins::wire::AssetsRequest { symbol: None, symbols };
    forward(&state, subjects::coins::ASSETS_SUBJECT, &request).await
}

pub async fn buy(StateOf(state): StateOf<State>, body: Result<Bytes, BytesRejection>) -> ApiResult {
    forward_bytes(&state, subjects::coins::BUY_SUBJECT, json_body(body, false)?).await
}

pub async fn sell(
    StateOf(state): StateOf<State>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    forward_bytes(&state, subjects::coins::SELL_SUBJECT, json_body(body, false)?).await
}

pub async fn coin_order(
    StateOf(state): StateOf<State>,
    params: Result<Path<(String, String)>, PathRejection>,
) -> ApiResult {
    let (user, id) = path(params)?;
    forward(&state, subjects::coins::ORDER_SUBJECT, &OrderLookup { user, id }).await
}

pub async fn portfolio(
    StateOf(state): StateOf<State>,
    user: Result<Path<String>, PathRejection>,
) -> ApiResult {
    let user = path(user)?;
    forward(&state, subjects::coins::PORTFOLIO_SUBJECT, &PortfolioRequest { user }).await
}

pub async fn coin_history(
    StateOf(state): StateOf<State>,
    request: Result<Query<CoinsHistoryRequest>, QueryRejection>,
) -> ApiResult {
    forward(&state, subjects::coins::HISTORY_SUBJECT, &query(request)?).await
}

/// Manager operations need the gateway's manager token as a bearer token.
fn manager(state: &State, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(token) = &state.config.manager_token else {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            "manager operations are disabled on this gateway (start it with --manager-token)",
        ));
    };
    let given = headers
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    match given {
        Some(given) if constant_time_eq(given.as_bytes(), token.as_bytes()) => Ok(()),
        Some(_) => Err(ApiError::new(ErrorCode::Forbidden, "wrong manager token")),
        None => Err(ApiError::new(
            ErrorCode::Forbidden,
            "manager operations need Authorization: Bearer <manager token>",
        )),
    }
}

/// Compares without stopping at the first difference (no timing hint about the token).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

pub async fn add_asset(
    StateOf(state): StateOf<State>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    manager(&state, &headers)?;
    forward_bytes(&state, subjects::coins::ADD_SUBJECT, json_body(body, false)?).await
}

/// A new price and/or available quantity.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AssetChange {
    /// Minor units per unit.
    #[schemars(range(min = 1))]
    pub price: Option<i64>,
    /// Units available to buy.
    #[schemars(range(min = 0, max = 1_000_000_000_000_i64))]
    pub quantity: Option<i64>,
}

/// The item of a likes route's path.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct ItemPath {
    #[schemars(pattern(agora_nats::pattern::ITEM))]
    pub item: String,
}

pub async fn update_asset(
    StateOf(state): StateOf<State>,
    headers: HeaderMap,
    symbol: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    manager(&state, &headers)?;
    let symbol = path(symbol)?;
    let change: AssetChange = parse_body(body)?;
    let request = UpdateAssetRequest { symbol, price: change.price, quantity: change.quantity };
    forward(&state, subjects::coins::UPDATE_SUBJECT, &request).await
}

pub async fn remove_asset(
    StateOf(state): StateOf<State>,
    headers: HeaderMap,
    symbol: Result<Path<String>, PathRejection>,
) -> ApiResult {
    manager(&state, &headers)?;
    let symbol = path(symbol)?;
    forward(&state, subjects::coins::REMOVE_SUBJECT, &RemoveAssetRequest { symbol }).await
}

// ---------------------------------------------------------------------------------------------
// Tasks
// ---------------------------------------------------------------------------------------------

pub async fn submit_task(
    StateOf(state): StateOf<State>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let request: SubmitRequest = parse_body(body)?;
    Ok(Json(state.agora.submit(&request).await?).into_response())
}

pub async fn list_tasks(
    StateOf(state): StateOf<State>,
    request: Result<Query<ListRequest>, QueryRejection>,
) -> ApiResult {
    forward(&state, subjects::tasks::LIST_SUBJECT, &query(request)?).await
}

pub async fn task(
    StateOf(state): StateOf<State>,
    id: Result<Path<String>, PathRejection>,
) -> ApiResult {
    let id = path(id)?;
    forward(&state, subjects::tasks::GET_SUBJECT, &TaskIdRequest { id }).await
}

pub async fn cancel_task(
    StateOf(state): StateOf<State>,
    id: Result<Path<String>, PathRejection>,
) -> ApiResult {
    let id = path(id)?;
    forward(&state, subjects::tasks::CANCEL_SUBJECT, &TaskIdRequest { id }).await
}

pub async fn workers(StateOf(state): StateOf<State>) -> ApiResult {
    let workers = state.agora.workers(SERVICES_GATHER).await?;
    Ok(Json(json!({ "workers": workers })).into_response())
}

// ---------------------------------------------------------------------------------------------
// Likes
// ---------------------------------------------------------------------------------------------

/// An item as a subject token: checked before it goes into a subject.
fn item(item: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    let item = path(item)?;
    agora_core::likes::ItemId::parse(&item).map_err(|e| ApiError::invalid(e.to_string()))?;
    Ok(item)
}

pub async fn top_likes(
    StateOf(state): StateOf<State>,
    request: Result<Query<TopRequest>, QueryRejection>,
) -> ApiResult {
    forward(&state, subjects::likes::TOP_SUBJECT, &query(request)?).await
}

pub async fn like_nodes(StateOf(state): StateOf<State>) -> ApiResult {
    forward_bytes(&state, subjects::likes::NODES_SUBJECT, Bytes::new()).await
}

pub async fn like_count(
    StateOf(state): StateOf<State>,
    name: Result<Path<String>, PathRejection>,
    request: Result<Query<LikeRequest>, QueryRejection>,
) -> ApiResult {
    let item = item(name)?;
    forward(&state, &subjects::likes::count(&item), &query(request)?).await
}

pub async fn like(
    StateOf(state): StateOf<State>,
    name: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let item = item(name)?;
    forward_bytes(&state, &subjects::likes::like(&item), json_body(body, true)?).await
}

pub async fn unlike(
    StateOf(state): StateOf<State>,
    name: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let item = item(name)?;
    forward_bytes(&state, &subjects::likes::unlike(&item), json_body(body, true)?).await
}

// ---------------------------------------------------------------------------------------------
// Files
// ---------------------------------------------------------------------------------------------

pub async fn list_files(
    StateOf(state): StateOf<State>,
    request: Result<Query<ListFilesRequest>, QueryRejection>,
) -> ApiResult {
    forward(&state, subjects::files::LIST_SUBJECT, &query(request)?).await
}

pub async fn file_stat(
    StateOf(state): StateOf<State>,
    name: Result<Path<String>, PathRejection>,
) -> ApiResult {
    let name = path(name)?;
    forward(&state, subjects::files::STAT_SUBJECT, &StatRequest { name }).await
}

pub async fn file_cache(StateOf(state): StateOf<State>) -> ApiResult {
    forward_bytes(&state, subjects::files::CACHE_SUBJECT, Bytes::new()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole() {
        assert!(constant_time_eq(b"secret-token", b"secret-token"));
        assert!(!constant_time_eq(b"secret-token", b"secret-tokeN"));
        assert!(!constant_time_eq(b"secret", b"secret-token"));
    }
}
