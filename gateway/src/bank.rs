//! The bank's routes, and the original business server's (`/deposit/{account}/{amount}`, ...).

use axum::body::Bytes;
use axum::extract::Path;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::http::HeaderMap;
use axum::routing::{get, post};

use super::http::{ApiError, ApiResult, forward, forward_bytes, json_body, path};
use super::routes::{Route, schema};
use super::session::Signed;
use agora_nats::bank::wire::{AmountRequest, BalanceRequest, TransferRequest};
use agora_nats::subjects;

/// The bank's routes (the original server's included; an Idempotency-Key header sets their op id).
pub const ROUTES: &[Route] = &[
    route!(
        "GET",
        "/api/bank/balance/{account}",
        "bank",
        "An account's balance",
        Some(schema::<BalanceRequest>),
        [],
        None,
        get(balance)
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

pub async fn balance(signed: Signed, account: Result<Path<String>, PathRejection>) -> ApiResult {
    let account = path(account)?;
    forward(&signed.agora, subjects::bank::BALANCE_SUBJECT, &BalanceRequest { account }).await
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
    balance(signed, account).await
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
