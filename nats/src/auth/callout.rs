//! The auth callout: nats-server asks `$SYS.REQ.USER.AUTH` about every connecting client that
//! is not one of Agora's components, and this answers with who the client is and what it may
//! do, or why not.
//!
//! - A token (`agora login`'s, in the CONNECT's `auth_token`): its user, until the token
//!   expires (the server disconnects the client then).
//! - A user name and password: that user, once the password checks.
//! - Nothing: an anonymous connection that may only sign up.
//!
//! The answer is a user JWT for the connection's key, placed in the `USERS` account (or
//! `MANAGERS` for a manager), with the permissions of [`super::permissions::of`] and the
//! user's name (which the server then stamps on every request the user makes), signed with the
//! issuer key the server config names. Anything else gets an error answer at once, never
//! silence (silence would keep the client waiting for the server's timeout).

use agora_core::auth::AuthError;
use agora_core::identity::{Role, UserName};
use bytes::Bytes;
use nkeys::KeyPair;

use super::jwt::{self, AuthorizationRequest, AuthorizationResponse, Claims, ConnectOpts, User};
use super::permissions::{self, SUBSCRIPTIONS_MAX};
use super::state::{Answer, Command};
use super::{Service, secrets};
use crate::clock::now_ms;
use crate::error::ServiceError;
use crate::subjects::accounts;

/// Who a connecting client proved to be: a person (and until when), or nobody.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Proven {
    Person { name: UserName, role: Role, until_ms: Option<u64> },
    Anonymous,
}

impl Service {
    /// Who the CONNECT's credentials belong to.
    pub async fn identify(&self, options: &ConnectOpts) -> Result<Proven, ServiceError> {
        let given = |value: &Option<String>| value.clone().filter(|v| !v.is_empty());
        match (given(&options.auth_token), given(&options.user), given(&options.pass)) {
            (Some(token), None, None) => {
                let digest = secrets::digest(&token);
                let Answer::Token(found) = self.ask(Command::FindToken { digest }).await? else {
                    return Err(ServiceError::from(AuthError::BadCredentials));
                };
                let (record, role) = found.ok_or(AuthError::BadCredentials)?;
                record.check(now_ms())?;
                Ok(Proven::Person { name: record.name, role, until_ms: Some(record.expires_ms) })
            }
            (None, Some(name), Some(password)) => {
                let user = self.check_password(&name, password).await?;
                Ok(Proven::Person { name: user.name, role: user.role, until_ms: None })
            }
            (None, None, None) => Ok(Proven::Anonymous),
            _ => Err(ServiceError::from(AuthError::BadCredentials)),
        }
    }

    /// The server's signed request in, our signed answer out. `None` only for a message that is
    /// not a request from a NATS server (no connection key to answer for).
    pub async fn authorize(&self, payload: &[u8]) -> Option<Bytes> {
        let text = std::str::from_utf8(payload).ok()?;
        let request: Claims<AuthorizationRequest> = match jwt::decode(text) {
            Ok(request) => request,
            Err(error) => {
                tracing::warn!(%error, "an auth callout request that is not a server's JWT");
                return None;
            }
        };
        let AuthorizationRequest { server_id, user_nkey, client_info, connect_opts } = request.nats;
        if request.iss != server_id.id {
            tracing::warn!(iss = %request.iss, "an auth callout request not signed by its server");
            return None;
        }
        let verdict = match self.identify(&connect_opts).await {
            Ok(proven) => {
                if let Proven::Person { name, .. } = &proven {
                    let token = connect_opts.auth_token.as_deref().filter(|t| !t.is_empty());
                    let connection = super::live::Connection {
                        server_id: server_id.id.clone(),
                        server_name: server_id.name.clone(),
                        cid: client_info.id,
                        token: token.map(super::secrets::digest),
                    };
                    self.live.add(name.as_str(), connection);
                }
                self.user_jwt(&user_nkey, &proven).map_err(|e| e.to_string())
            }
            Err(error) => {
                let who = connect_opts.user.as_deref().unwrap_or("(token or none)");
                tracing::info!(user = who, host = %client_info.host, code = %error.code,
                               "sign-in refused");
                Err(error.message)
            }
        };
        let response = match verdict {
            Ok(user_jwt) => AuthorizationResponse::allow(user_jwt),
            Err(error) => AuthorizationResponse::deny(error),
        };
        let claims = Claims {
            jti: String::new(),
            iat: 0,
            iss: String::new(),
            sub: user_nkey,
            aud: server_id.id,
            name: String::new(),
            exp: None,
            nats: response,
        };
        match jwt::encode(claims, &self.issuer, now_s()) {
            Ok(signed) => Some(Bytes::from(signed)),
            Err(error) => {
                tracing::error!(%error, "cannot sign an auth callout answer");
                None
            }
        }
    }

    /// The user JWT of a connection (`user_nkey`) for `proven`.
    fn user_jwt(&self, user_nkey: &str, proven: &Proven) -> Result<String, jwt::JwtError> {
        let (person, until_ms) = match proven {
            Proven::Person { name, role, until_ms } => (Some((name, *role)), *until_ms),
            Proven::Anonymous => (None, None),
        };
        let (publish, subscribe) = permissions::of(person);
        let account = match person {
            Some((_, Role::Manager)) => accounts::MANAGERS,
            Some((_, Role::User)) | None => accounts::USERS,
        };
        let claims = Claims {
            jti: String::new(),
            iat: 0,
            iss: String::new(),
            sub: user_nkey.to_owned(),
            aud: account.to_owned(),
            name: person.map(|(name, _)| name.to_string()).unwrap_or_default(),
            exp: until_ms.map(|ms| i64::try_from(ms / 1_000).unwrap_or(i64::MAX)),
            nats: User::new(publish, subscribe, SUBSCRIPTIONS_MAX, -1),
        };
        jwt::encode(claims, &self.issuer, now_s())
    }
}

fn now_s() -> i64 {
    i64::try_from(now_ms() / 1_000).unwrap_or(i64::MAX)
}

/// The issuer key from its seed (`SA...`).
pub fn issuer(seed: &str) -> anyhow::Result<KeyPair> {
    let key = KeyPair::from_seed(seed.trim())
        .map_err(|e| anyhow::anyhow!("the issuer seed is not an NKey seed: {e}"))?;
    anyhow::ensure!(
        key.public_key().starts_with('A'),
        "the issuer seed must be an account seed (SA...), the account nats-server's auth_callout \
         names as issuer"
    );
    Ok(key)
}
