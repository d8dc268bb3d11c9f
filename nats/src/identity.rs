//! Who sent a request, as the NATS server says (see `agora_core::identity` for the rules).
//!
//! End users connect through the auth callout and land in one of two accounts: `USERS` or, for
//! managers, `MANAGERS`. Their requests reach Agora's services (in the `AGORA` account) through
//! service imports with `share: true`, so the server stamps each one with the header
//! `Nats-Request-Info`: the account the request came from and the user's name as the auth
//! service approved it. A client cannot forge that header: the server replaces whatever a
//! request carried when it crosses an import.
//!
//! A request with no such stamp came from inside the `AGORA` account: from one of Agora's own
//! components, which the NATS configuration lets in with their own passwords and permissions.
//! Such a caller acts for itself ([`Caller::Service`]), or for a person when it says so in the
//! `Agora-User` and `Agora-Role` headers: the gateway does, for the session behind an HTTP
//! request. Only a component can be that caller, so only a component can say it.
//!
//! On a server without authorization (the single-node development config) everything is one
//! account and every caller is a service: that configuration trusts everyone who can reach its
//! port, and is for development and the tests of everything but identity.

use agora_core::identity::{Caller, Role, UserName};
use async_nats::HeaderMap;
use serde::Deserialize;

use crate::error::{ErrorCode, ServiceError};
use crate::subjects::accounts;

/// The header the NATS server stamps on a request that crossed a shared service import.
pub const REQUEST_INFO_HEADER: &str = "Nats-Request-Info";
/// The person a component acts for (set by the gateway; believed only inside `AGORA`).
pub const USER_HEADER: &str = "Agora-User";
/// That person's role (`user` or `manager`; `user` when absent).
pub const ROLE_HEADER: &str = "Agora-Role";

/// The parts of `Nats-Request-Info` that say who asked.
#[derive(Debug, Deserialize)]
struct RequestInfo {
    /// The account the request came from.
    acc: String,
    /// The user name the auth service approved (empty for an anonymous connection).
    #[serde(default)]
    user: String,
}

/// The connection a person's request came from, as `Nats-Request-Info` says: its server's name
/// and its client id there (none for a request without the stamp).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Origin {
    #[serde(default)]
    pub server: String,
    #[serde(rename = "id", default)]
    pub cid: u64,
}

/// Where a request with these headers came from (read only when asked: [`caller`] does not).
pub fn origin(headers: Option<&HeaderMap>) -> Option<Origin> {
    let info = headers?.get(REQUEST_INFO_HEADER)?;
    serde_json::from_str::<Origin>(info.as_str()).ok().filter(|origin| origin.cid != 0)
}

/// Who sent a request with these headers.
pub fn caller(headers: Option<&HeaderMap>) -> Result<Caller, ServiceError> {
    // Names built once (a name from a `&str` is checked and copied at every lookup).
    const REQUEST_INFO: async_nats::HeaderName =
        async_nats::HeaderName::from_static(REQUEST_INFO_HEADER);
    const USER: async_nats::HeaderName = async_nats::HeaderName::from_static(USER_HEADER);
    const ROLE: async_nats::HeaderName = async_nats::HeaderName::from_static(ROLE_HEADER);
    let header =
        |name: async_nats::HeaderName| headers.and_then(|h| h.get(name)).map(|v| v.as_str());
    if let Some(info) = header(REQUEST_INFO) {
        let info: RequestInfo = serde_json::from_str(info).map_err(|_| unauthenticated())?;
        let role = match info.acc.as_str() {
            accounts::USERS => Some(Role::User),
            accounts::MANAGERS => Some(Role::Manager),
            // Another account's stamp (a chained import): not a person of ours.
            _ => None,
        };
        if let Some(role) = role {
            if info.user.is_empty() {
                return Ok(Caller::Anonymous);
            }
            let name = UserName::parse(&info.user).map_err(|_| unauthenticated())?;
            return Ok(Caller::user(name, role));
        }
    }
    match header(USER) {
        None => Ok(Caller::Service),
        Some(name) => {
            let name = UserName::parse(name).map_err(ServiceError::from)?;
            let role = header(ROLE).map_or(Ok(Role::User), Role::parse)?;
            Ok(Caller::user(name, role))
        }
    }
}

/// The headers a component sends to act for `caller` (none for a service).
pub fn headers_for(caller: &Caller) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Caller::User { name, role } = caller {
        headers.insert(USER_HEADER, name.as_str());
        headers.insert(ROLE_HEADER, role.as_str());
    }
    headers
}

fn unauthenticated() -> ServiceError {
    ServiceError::new(ErrorCode::Unauthenticated, "the request's identity is not one of Agora's")
}

#[cfg(test)]
mod tests;
