//! Who is calling the gateway: a signed-in person, known by a token the auth service issued
//! (the dashboard's `agora_session` cookie, or `Authorization: Bearer <token>` for programs).
//!
//! The gateway keeps no sessions of its own: it asks the auth service whose a token is
//! (`agora.auth.check`) and remembers the answer for [`CHECK_TTL`], so a revoked token stops
//! working within that time everywhere. Every request the gateway then makes for the person
//! says so ([`AgoraClient::acting_for`]): the services apply the person's rights, never the
//! gateway's.

use std::time::Duration;

use agora_core::{Caller, Role, UserName};
use agora_nats::client::AgoraClient;
use agora_nats::error::ErrorCode;
use axum::extract::FromRequestParts;
use axum::http::HeaderValue;
use axum::http::header::{AUTHORIZATION, COOKIE};
use axum::http::request::Parts;

use super::State;
use super::http::ApiError;

/// The dashboard's session cookie.
pub const COOKIE_NAME: &str = "agora_session";
/// How long a token's owner is remembered without asking the auth service again.
pub const CHECK_TTL: Duration = Duration::from_secs(5);
/// Tokens remembered at most.
pub const CHECKED_MAX: u64 = 10_000;
/// Longest token accepted (the auth service's are 49 bytes).
const TOKEN_BYTES_MAX: usize = 256;

/// Who owns which token, as the auth service said a moment ago.
#[derive(Debug)]
pub struct Checked(moka::sync::Cache<String, Caller>);

impl Default for Checked {
    fn default() -> Self {
        Self(moka::sync::Cache::builder().max_capacity(CHECKED_MAX).time_to_live(CHECK_TTL).build())
    }
}

impl Checked {
    /// Forgets a token (it was revoked here).
    pub fn forget(&self, token: &str) {
        self.0.invalidate(token);
    }
}

/// A request of a signed-in person.
#[derive(Debug, Clone)]
pub struct Signed {
    pub caller: Caller,
    /// The gateway's connection, acting for the person.
    pub agora: AgoraClient,
    pub token: String,
}

impl Signed {
    pub fn name(&self) -> &str {
        self.caller.name().map_or("", UserName::as_str)
    }

    /// Refuses anyone but a manager.
    pub fn manager(&self, what: &'static str) -> Result<(), ApiError> {
        self.caller
            .require_manager(what)
            .map_err(|e| ApiError::from(agora_nats::ServiceError::from(e)))
    }
}

/// The `Authorization: Bearer <token>` of a request, if it has one.
pub fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim)
}

/// The token a request carries: the bearer token, else the session cookie.
pub fn token_of(parts: &Parts) -> Option<String> {
    let bearer = bearer(&parts.headers);
    let cookie = || {
        parts.headers.get_all(COOKIE).iter().filter_map(|value| value.to_str().ok()).find_map(
            |cookies| {
                cookies.split(';').find_map(|pair| {
                    let (name, value) = pair.trim().split_once('=')?;
                    (name == COOKIE_NAME).then(|| value.trim().to_owned())
                })
            },
        )
    };
    bearer
        .map(str::to_owned)
        .or_else(cookie)
        .filter(|t| !t.is_empty() && t.len() <= TOKEN_BYTES_MAX)
}

fn unauthenticated(message: &str) -> ApiError {
    ApiError::new(ErrorCode::Unauthenticated, message)
}

impl FromRequestParts<State> for Signed {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &State) -> Result<Self, ApiError> {
        let token = token_of(parts)
            .ok_or_else(|| unauthenticated("sign in first (POST /api/auth/login)"))?;
        let caller = match state.checked.0.get(&token) {
            Some(caller) => caller,
            None => {
                let owner = state.agora.check_token(&token).await?;
                let name = UserName::parse(&owner.name)
                    .map_err(|_| unauthenticated("the token's user is not one of ours"))?;
                let role = Role::parse(&owner.role)
                    .map_err(|_| unauthenticated("the token's role is not one of ours"))?;
                let caller = Caller::user(name, role);
                state.checked.0.insert(token.clone(), caller.clone());
                caller
            }
        };
        let agora = state.agora.acting_for(&caller);
        Ok(Self { caller, agora, token })
    }
}

/// The `Set-Cookie` value of a new session.
pub fn cookie(token: &str, max_age_s: u64, secure: bool) -> Result<HeaderValue, ApiError> {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{COOKIE_NAME}={token}; Path=/; Max-Age={max_age_s}; HttpOnly; SameSite=Strict{secure}"
    ))
    .map_err(|_| ApiError::new(ErrorCode::Internal, "a token that is not a cookie value"))
}

/// The `Set-Cookie` value that ends the session in the browser.
pub fn cleared_cookie(secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{COOKIE_NAME}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict{secure}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("agora_session=; Max-Age=0"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(headers: &[(&str, &str)]) -> Parts {
        let mut request = axum::http::Request::builder();
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.body(()).unwrap().into_parts().0
    }

    #[test]
    fn the_token_comes_from_the_bearer_header_or_the_cookie() {
        assert_eq!(
            token_of(&parts(&[("authorization", "Bearer agora_x")])).as_deref(),
            Some("agora_x")
        );
        let cookies = [("cookie", "theme=dark; agora_session=agora_y; other=1")];
        assert_eq!(token_of(&parts(&cookies)).as_deref(), Some("agora_y"));
        let both = [("authorization", "Bearer agora_x"), ("cookie", "agora_session=agora_y")];
        assert_eq!(token_of(&parts(&both)).as_deref(), Some("agora_x"), "the header wins");
        assert_eq!(token_of(&parts(&[("cookie", "agora_sessionX=1")])), None);
        assert_eq!(token_of(&parts(&[("authorization", "Basic abc")])), None);
        assert_eq!(token_of(&parts(&[("authorization", "Bearer ")])), None);
        let long = format!("Bearer {}", "x".repeat(300));
        assert_eq!(token_of(&parts(&[("authorization", &long)])), None);
    }

    #[test]
    fn session_cookies_are_http_only_and_same_site() {
        let value = cookie("agora_abc", 60, true).unwrap();
        let text = value.to_str().unwrap();
        for part in
            ["agora_session=agora_abc", "HttpOnly", "SameSite=Strict", "Secure", "Max-Age=60"]
        {
            assert!(text.contains(part), "{text}");
        }
        assert!(!cookie("x", 1, false).unwrap().to_str().unwrap().contains("Secure"));
        assert!(cleared_cookie(false).to_str().unwrap().contains("Max-Age=0"));
    }
}
