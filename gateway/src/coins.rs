//! The coin exchange's routes; manager routes need the gateway's manager token.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query};
use axum::routing::{delete, get, patch, post};
use serde::Deserialize;

use super::http::{ApiResult, forward, forward_bytes, json_body, parse_body, path, query};
use super::routes::{Route, schema};
use super::session::Signed;
use agora_nats::coins::wire::{
    AddAssetRequest, CoinsHistoryRequest, OrderLookup, OrderRequest, PortfolioRequest,
    RemoveAssetRequest, UpdateAssetRequest,
};
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
        "List an asset (managers)",
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
    signed: Signed,
    assets: Result<Query<AssetsQuery>, QueryRejection>,
) -> ApiResult {
    let symbols = query(assets)?
        .symbols
        .map(|list| list.split(',').map(str::trim).map(str::to_owned).collect::<Vec<_>>());
    let request = agora_nats::coins::wire::AssetsRequest { symbol: None, symbols };
    forward(&signed.agora, subjects::coins::ASSETS_SUBJECT, &request).await
}

pub async fn buy(signed: Signed, body: Result<Bytes, BytesRejection>) -> ApiResult {
    forward_bytes(&signed.agora, subjects::coins::BUY_SUBJECT, json_body(body, false)?).await
}

pub async fn sell(signed: Signed, body: Result<Bytes, BytesRejection>) -> ApiResult {
    forward_bytes(&signed.agora, subjects::coins::SELL_SUBJECT, json_body(body, false)?).await
}

pub async fn coin_order(
    signed: Signed,
    params: Result<Path<(String, String)>, PathRejection>,
) -> ApiResult {
    let (user, id) = path(params)?;
    forward(&signed.agora, subjects::coins::ORDER_SUBJECT, &OrderLookup { user, id }).await
}

pub async fn portfolio(signed: Signed, user: Result<Path<String>, PathRejection>) -> ApiResult {
    let user = path(user)?;
    forward(&signed.agora, subjects::coins::PORTFOLIO_SUBJECT, &PortfolioRequest { user }).await
}

pub async fn coin_history(
    signed: Signed,
    request: Result<Query<CoinsHistoryRequest>, QueryRejection>,
) -> ApiResult {
    forward(&signed.agora, subjects::coins::HISTORY_SUBJECT, &query(request)?).await
}

pub async fn add_asset(signed: Signed, body: Result<Bytes, BytesRejection>) -> ApiResult {
    signed.manager("listing coins")?;
    forward_bytes(&signed.agora, subjects::coins::ADD_SUBJECT, json_body(body, false)?).await
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
    signed: Signed,
    symbol: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    signed.manager("listing coins")?;
    let symbol = path(symbol)?;
    let change: AssetChange = parse_body(body)?;
    let request = UpdateAssetRequest { symbol, price: change.price, quantity: change.quantity };
    forward(&signed.agora, subjects::coins::UPDATE_SUBJECT, &request).await
}

pub async fn remove_asset(
    signed: Signed,
    symbol: Result<Path<String>, PathRejection>,
) -> ApiResult {
    signed.manager("listing coins")?;
    let symbol = path(symbol)?;
    forward(&signed.agora, subjects::coins::REMOVE_SUBJECT, &RemoveAssetRequest { symbol }).await
}
