//! Signing up and in over HTTP: the dashboard's session cookie, and API tokens for programs.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State as StateOf;
use axum::extract::rejection::BytesRejection;
use axum::http::header::SET_COOKIE;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::State;
use super::http::{ApiResult, parse_body};
use super::routes::{Route, schema};
use super::session::{self, Signed};
use agora_nats::auth::wire::{LoginRequest, PasswordRequest, SignupRequest};

/// Signing up, in and out.
pub const ROUTES: &[Route] = &[
    route!(
        "POST",
        "/api/auth/signup",
        "auth",
        "Make a user (then sign in)",
        None,
        [],
        Some(schema::<SignupRequest>),
        post(signup)
    ),
    route!(
        "POST",
        "/api/auth/login",
        "auth",
        "Sign in: the session is an HttpOnly cookie",
        None,
        [],
        Some(schema::<Credentials>),
        post(login)
    ),
    route!(
        "POST",
        "/api/auth/token",
        "auth",
        "An API token for programs (Authorization: Bearer <token>)",
        None,
        [],
        Some(schema::<TokenCredentials>),
        post(token)
    ),
    route!(
        "POST",
        "/api/auth/logout",
        "auth",
        "End this session (or the bearer token)",
        None,
        [],
        None,
        post(logout)
    ),
    route!("GET", "/api/auth/me", "auth", "Who is signed in", None, [], None, get(me)),
    route!(
        "POST",
        "/api/auth/password",
        "auth",
        "A new password; every session and token of the user ends",
        None,
        [],
        Some(schema::<PasswordRequest>),
        post(password)
    ),
];

/// A user name and password.
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    #[schemars(pattern(agora_nats::pattern::USER_NAME))]
    pub name: String,
    #[schemars(length(min = 1, max = 128))]
    pub password: String,
}

/// A user name and password, and how long the token should live (ms; at most 30 days).
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenCredentials {
    #[schemars(pattern(agora_nats::pattern::USER_NAME))]
    pub name: String,
    #[schemars(length(min = 1, max = 128))]
    pub password: String,
    #[schemars(range(min = 1_000))]
    pub ttl_ms: Option<u64>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("name", &self.name).finish_non_exhaustive()
    }
}

impl std::fmt::Debug for TokenCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCredentials").field("name", &self.name).finish_non_exhaustive()
    }
}

#[derive(Serialize)]
struct Me {
    name: String,
    role: String,
    /// When the session ends (ms since the epoch).
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_ms: Option<u64>,
}

pub async fn signup(
    StateOf(state): StateOf<State>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let request: SignupRequest = parse_body(body)?;
    Ok(Json(state.agora.signup(&request.name, &request.password).await?).into_response())
}

pub async fn login(
    StateOf(state): StateOf<State>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let credentials: Credentials = parse_body(body)?;
    let request = LoginRequest {
        name: credentials.name,
        password: credentials.password,
        kind: Some("session".into()),
        ttl_ms: None,
    };
    let issued = state.agora.login(&request).await?;
    let now = agora_nats::clock::now_ms();
    let max_age_s = issued.expires_ms.saturating_sub(now) / 1_000;
    let cookie = session::cookie(&issued.token, max_age_s, state.config.secure_cookies)?;
    let me = Me { name: issued.name, role: issued.role, expires_ms: Some(issued.expires_ms) };
    Ok(([(SET_COOKIE, cookie)], Json(me)).into_response())
}

pub async fn token(
    StateOf(state): StateOf<State>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let credentials: TokenCredentials = parse_body(body)?;
    let request = LoginRequest {
        name: credentials.name,
        password: credentials.password,
        kind: Some("api".into()),
        ttl_ms: credentials.ttl_ms,
    };
    let issued = state.agora.login(&request).await?;
    Ok(Json(json!({
        "name": issued.name, "role": issued.role, "token": issued.token,
        "expires_ms": issued.expires_ms
    }))
    .into_response())
}

pub async fn logout(StateOf(state): StateOf<State>, signed: Signed) -> ApiResult {
    let revoked = signed.agora.logout(&signed.token).await?;
    state.checked.forget(&signed.token);
    let cleared = session::cleared_cookie(state.config.secure_cookies);
    Ok(([(SET_COOKIE, cleared)], Json(revoked)).into_response())
}

pub async fn me(signed: Signed) -> Response {
    let role = if signed.caller.is_manager() { "manager" } else { "user" };
    Json(Me { name: signed.name().to_owned(), role: role.to_owned(), expires_ms: None })
        .into_response()
}

pub async fn password(
    StateOf(state): StateOf<State>,
    signed: Signed,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let request: PasswordRequest = parse_body(body)?;
    let reply = signed.agora.change_password(&request.old, &request.new).await?;
    state.checked.forget(&signed.token);
    let cleared = session::cleared_cookie(state.config.secure_cookies);
    Ok(([(SET_COOKIE, cleared)], Json(reply)).into_response())
}
