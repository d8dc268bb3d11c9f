//! The coin exchange's routes; manager routes need the gateway's manager token.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State as StateOf};
use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use axum::routing::{delete, get, patch, post};
use serde::Deserialize;

use super::State;
use super::http::{
    ApiError, ApiResult, forward, forward_bytes, json_body, parse_body, path, query,
};
use super::routes::{Route, schema};
use agora_nats::coins::wire::{
    AddAssetRequest, CoinsHistoryRequest, OrderLookup, OrderRequest, PortfolioRequest,
    RemoveAssetRequest, UpdateAssetRequest,
};
use agora_nats::error::ErrorCode;
use agora_nats::subjects;

/// The coin exchange's routes.
pub const ROUTES: &[Route] = &[
    route!(
        "GET",
        "/api/coins/assets",
        "coins",
        "Listed assets (all, or symbols=A,B)",
        Some(schema::<AssetsQuery>),
        ["symbols"],
        None,
        get(coin_assets)
    ),
    route!(
        "POST",
        "/api/coins/buy",
        "coins",
        "Buy units with bank money",
        None,
        [],
        Some(schema::<OrderRequest>),
        post(buy)
    ),
    route!(
        "POST",
        "/api/coins/sell",
        "coins",
        "Sell units for bank money",
        None,
        [],
        Some(schema::<OrderRequest>),
        post(sell)
    ),
    route!(
        "GET",
        "/api/coins/orders/{user}/{id}",
        "coins",
        "One order's state",
        Some(schema::<OrderLookup>),
        [],
        None,
        get(coin_order)
    ),
    route!(
        "GET",
        "/api/coins/portfolio/{user}",
        "coins",
        "Holdings and bank balance",
        Some(schema::<PortfolioRequest>),
        [],
        None,
        get(portfolio)
    ),
    route!(
        "GET",
        "/api/coins/history",
        "coins",
        "Done orders, newest first",
        Some(schema::<CoinsHistoryRequest>),
        ["user", "from", "to", "limit"],
        None,
        get(coin_history)
    ),
    route!(
        "POST",
        "/api/coins/admin/assets",
        "coins-manager",
        "List an asset (Authorization: Bearer <manager token>)",
        None,
        [],
        Some(schema::<AddAssetRequest>),
        post(add_asset)
    ),
    route!(
        "PATCH",
        "/api/coins/admin/assets/{symbol}",
        "coins-manager",
        "Reprice or restock an asset (manager)",
        Some(schema::<RemoveAssetRequest>),
        [],
        Some(schema::<AssetChange>),
        patch(update_asset)
    ),
    route!(
        "DELETE",
        "/api/coins/admin/assets/{symbol}",
        "coins-manager",
        "Delist an asset nobody holds (manager)",
        Some(schema::<RemoveAssetRequest>),
        [],
        None,
        delete(remove_asset)
    ),
];

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
