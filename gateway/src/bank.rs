//! The bank's routes, and the original business server's (`/deposit/{account}/{amount}`, ...).

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query};
use axum::http::HeaderMap;
use axum::routing::{get, post};
use serde::Deserialize;

use super::http::{ApiError, ApiResult, forward, forward_bytes, json_body, path, query};
use super::routes::{Route, schema};
use super::session::Signed;
use agora_nats::bank::wire::{
    AmountRequest, BalanceRequest, HistoryRequest, TransferRequest, TransfersRequest,
};
use agora_nats::subjects;

/// The bank's routes (the original server's included; an Idempotency-Key header sets their op id).
pub const ROUTES: &[Route] = &[
    route!(
        "GET",
        "/api/bank/balance/{account}",
        "bank",
        "An account's balances (posted, pending, available), now or at_ms in the past",
        Some(schema::<BalanceRequest>),
        ["asset", "at_ms"],
        None,
        get(balance)
    ),
    route!(
        "GET",
        "/api/bank/history/{account}",
        "bank",
        "An account's entries, newest first (paged with before; from_ms/to_ms filter)",
        Some(schema::<HistoryRequest>),
        ["asset", "from_ms", "to_ms", "before", "limit"],
        None,
        get(history)
    ),
    route!(
        "POST",
        "/api/bank/transfers",
        "bank",
        "Up to 8,190 operations (transfers, deposits, withdrawals, pending, post, void; linked chains), one result each",
        None,
        [],
        Some(schema::<TransfersRequest>),
        post(transfers)
    ),
    route!(
        "POST",
        "/api/bank/deposit",
        "bank",
        "Deposit",
        None,
        [],
        Some(schema::<AmountRequest>),
        post(deposit)
    ),
    route!(
        "POST",
        "/api/bank/withdraw",
        "bank",
        "Withdraw",
        None,
        [],
        Some(schema::<AmountRequest>),
        post(withdraw)
    ),
    route!(
        "POST",
        "/api/bank/transfer",
        "bank",
        "Transfer between two accounts",
        None,
        [],
        Some(schema::<TransferRequest>),
        post(transfer)
    ),
    // The original business server's routes (an Idempotency-Key header sets the op id).
    route!(
        "POST",
        "/deposit/{account}/{amount}",
        "legacy",
        "Deposit (original route)",
        Some(schema::<AmountRequest>),
        [],
        None,
        post(legacy_deposit)
    ),
    route!(
        "POST",
        "/withdrawal/{account}/{amount}",
        "legacy",
        "Withdraw (original route)",
        Some(schema::<AmountRequest>),
        [],
        None,
        post(legacy_withdraw)
    ),
    route!(
        "GET",
        "/balance/{account}",
        "legacy",
        "Balance (original route)",
        Some(schema::<BalanceRequest>),
        [],
        None,
        get(legacy_balance)
    ),
    route!(
        "POST",
        "/transfer/{from}/{to}/{amount}",
        "legacy",
        "Transfer (original route)",
        Some(schema::<TransferRequest>),
        [],
        None,
        post(legacy_transfer)
    ),
];

/// The query of `GET /api/bank/balance/{account}`.
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BalanceQuery {
    pub asset: Option<String>,
    pub at_ms: Option<u64>,
}

pub async fn balance(
    signed: Signed,
    account: Result<Path<String>, PathRejection>,
    params: Result<Query<BalanceQuery>, QueryRejection>,
) -> ApiResult {
    let account = path(account)?;
    let BalanceQuery { asset, at_ms } = query(params)?;
    let request = BalanceRequest { account, asset, at_ms };
    forward(&signed.agora, subjects::bank::BALANCE_SUBJECT, &request).await
}

/// The query of `GET /api/bank/history/{account}`.
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    pub asset: Option<String>,
    pub from_ms: Option<u64>,
    pub to_ms: Option<u64>,
    pub before: Option<u64>,
    pub limit: Option<usize>,
}

pub async fn history(
    signed: Signed,
    account: Result<Path<String>, PathRejection>,
    params: Result<Query<HistoryQuery>, QueryRejection>,
) -> ApiResult {
    let account = path(account)?;
    let HistoryQuery { asset, from_ms, to_ms, before, limit } = query(params)?;
    let request = HistoryRequest { account, asset, from_ms, to_ms, before, limit };
    forward(&signed.agora, subjects::bank::HISTORY_SUBJECT, &request).await
}

pub async fn transfers(signed: Signed, body: Result<Bytes, BytesRejection>) -> ApiResult {
    forward_bytes(&signed.agora, subjects::bank::TRANSFERS_SUBJECT, json_body(body, false)?).await
}

pub async fn deposit(signed: Signed, body: Result<Bytes, BytesRejection>) -> ApiResult {
    forward_bytes(&signed.agora, subjects::bank::DEPOSIT_SUBJECT, json_body(body, false)?).await
}

pub async fn withdraw(signed: Signed, body: Result<Bytes, BytesRejection>) -> ApiResult {
    forward_bytes(&signed.agora, subjects::bank::WITHDRAW_SUBJECT, json_body(body, false)?).await
}

pub async fn transfer(signed: Signed, body: Result<Bytes, BytesRejection>) -> ApiResult {
    forward_bytes(&signed.agora, subjects::bank::TRANSFER_SUBJECT, json_body(body, false)?).await
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
    signed: Signed,
    headers: HeaderMap,
    params: Result<Path<(String, String)>, PathRejection>,
) -> ApiResult {
    legacy_amount(signed, headers, params, subjects::bank::DEPOSIT_SUBJECT).await
}

pub async fn legacy_withdraw(
    signed: Signed,
    headers: HeaderMap,
    params: Result<Path<(String, String)>, PathRejection>,
) -> ApiResult {
    legacy_amount(signed, headers, params, subjects::bank::WITHDRAW_SUBJECT).await
}

/// `/deposit` and `/withdrawal`: the account and the amount in the path.
async fn legacy_amount(
    signed: Signed,
    headers: HeaderMap,
    params: Result<Path<(String, String)>, PathRejection>,
    subject: &str,
) -> ApiResult {
    let (account, text) = path(params)?;
    let request = AmountRequest { account, amount: amount(&text)?, id: idempotency_key(&headers)? };
    forward(&signed.agora, subject, &request).await
}

pub async fn legacy_balance(
    signed: Signed,
    account: Result<Path<String>, PathRejection>,
) -> ApiResult {
    let account = path(account)?;
    let request = BalanceRequest { account, ..BalanceRequest::default() };
    forward(&signed.agora, subjects::bank::BALANCE_SUBJECT, &request).await
}

pub async fn legacy_transfer(
    signed: Signed,
    headers: HeaderMap,
    params: Result<Path<(String, String, String)>, PathRejection>,
) -> ApiResult {
    let (from, to, text) = path(params)?;
    let request =
        TransferRequest { from, to, amount: amount(&text)?, id: idempotency_key(&headers)? };
    forward(&signed.agora, subjects::bank::TRANSFER_SUBJECT, &request).await
}
