//! The NATS JWTs of the auth callout: the server's authorization request (read and its
//! signature checked), and our answer (an authorization response carrying a user JWT), both
//! signed with the issuer account's key the server config names.
//!
//! A NATS JWT is `base64url(header).base64url(claims).base64url(ed25519 signature)`, the
//! header `{"typ":"JWT","alg":"ed25519-nkey"}` and the signature by the key in the claims'
//! `iss`. The claims types are written here rather than taken from a crate: the Rust ports
//! require fields the server leaves out (a client without a JWT has no `name_tag`, an
//! anonymous one no `user`), and a request they cannot read would leave a client waiting for
//! the server's timeout instead of getting an answer.

use data_encoding::{BASE32_NOPAD, BASE64URL_NOPAD};
use nkeys::KeyPair;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha512_256};

const HEADER: &str = r#"{"typ":"JWT","alg":"ed25519-nkey"}"#;
/// The JWT format version the server expects.
const VERSION: u32 = 2;

/// Why a JWT was not read.
#[derive(Debug, thiserror::Error)]
pub enum JwtError {
    #[error("not a JWT (three base64url parts)")]
    Shape,
    #[error("not an ed25519-nkey JWT")]
    Algorithm,
    #[error("bad claims: {0}")]
    Claims(#[from] serde_json::Error),
    #[error("bad signature")]
    Signature,
    #[error("signing failed: {0}")]
    Sign(String),
}

/// The claims every NATS JWT has, around its `nats` part.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims<T> {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub jti: String,
    #[serde(default)]
    pub iat: i64,
    pub iss: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sub: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub aud: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Unix seconds after which the server refuses (and, for a user, disconnects) it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    pub nats: T,
}

/// The server's question: who is this connecting client? (`nats` of the request.)
#[derive(Debug, Clone, Deserialize)]
pub struct AuthorizationRequest {
    pub server_id: ServerId,
    /// The key the server made for this connection: our answer's user JWT must be for it.
    pub user_nkey: String,
    #[serde(default)]
    pub client_info: ClientInfo,
    #[serde(default)]
    pub connect_opts: ConnectOpts,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct ServerId {
    /// The server's id: our answer's audience.
    pub id: String,
    #[serde(default)]
    pub name: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct ClientInfo {
    #[serde(default)]
    pub host: String,
    #[serde(default)]
    pub id: u64,
    #[serde(default)]
    pub name: String,
}

/// What the client sent in its CONNECT.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ConnectOpts {
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub pass: Option<String>,
    #[serde(default)]
    pub auth_token: Option<String>,
}

/// Our answer (`nats` of the response): a user JWT, or why not.
#[derive(Debug, Clone, Serialize)]
pub struct AuthorizationResponse {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub jwt: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub error: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub version: u32,
}

/// The user a connection becomes (`nats` of the user JWT).
#[derive(Debug, Clone, Serialize)]
pub struct User {
    #[serde(rename = "pub")]
    pub publish: Permission,
    #[serde(rename = "sub")]
    pub subscribe: Permission,
    /// Subscriptions at most (-1: no limit).
    pub subs: i64,
    /// Bytes a connection may send per... (-1: no limit).
    pub data: i64,
    /// Largest message the connection may publish, in bytes.
    pub payload: i64,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub version: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Permission {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<String>,
}

impl User {
    pub fn new(publish: Permission, subscribe: Permission, subs: i64, payload: i64) -> Self {
        Self { publish, subscribe, subs, data: -1, payload, kind: "user", version: VERSION }
    }
}

impl AuthorizationResponse {
    pub fn allow(user_jwt: String) -> Self {
        Self {
            jwt: user_jwt,
            error: String::new(),
            kind: "authorization_response",
            version: VERSION,
        }
    }

    pub fn deny(error: impl Into<String>) -> Self {
        Self {
            jwt: String::new(),
            error: error.into(),
            kind: "authorization_response",
            version: VERSION,
        }
    }
}

/// Reads a JWT and checks that the key in its `iss` signed it.
pub fn decode<T: DeserializeOwned>(token: &str) -> Result<Claims<T>, JwtError> {
    let mut parts = token.trim().split('.');
    let (Some(header), Some(claims), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Shape);
    };
    let header_json = BASE64URL_NOPAD.decode(header.as_bytes()).map_err(|_| JwtError::Shape)?;
    let header_value: serde_json::Value = serde_json::from_slice(&header_json)?;
    if header_value["alg"] != "ed25519-nkey" && header_value["alg"] != "ed25519" {
        return Err(JwtError::Algorithm);
    }
    let claims_json = BASE64URL_NOPAD.decode(claims.as_bytes()).map_err(|_| JwtError::Shape)?;
    let signature = BASE64URL_NOPAD.decode(signature.as_bytes()).map_err(|_| JwtError::Shape)?;
    let decoded: Claims<T> = serde_json::from_slice(&claims_json)?;
    let signer = KeyPair::from_public_key(&decoded.iss).map_err(|_| JwtError::Signature)?;
    let signed = &token.trim()[..header.len() + 1 + claims.len()];
    signer.verify(signed.as_bytes(), &signature).map_err(|_| JwtError::Signature)?;
    Ok(decoded)
}

/// Writes `claims` as a JWT signed by `key` (which becomes its `iss`), with `iat` = `now_s`
/// and the `jti` the Go library computes (base32 of the SHA-512/256 of the claims).
pub fn encode<T: Serialize>(
    mut claims: Claims<T>,
    key: &KeyPair,
    now_s: i64,
) -> Result<String, JwtError> {
    claims.iss = key.public_key();
    claims.iat = now_s;
    claims.jti = String::new();
    let unsigned = serde_json::to_vec(&claims)?;
    claims.jti = BASE32_NOPAD.encode(&Sha512_256::digest(&unsigned));
    let body = serde_json::to_vec(&claims)?;
    let signed =
        format!("{}.{}", BASE64URL_NOPAD.encode(HEADER.as_bytes()), BASE64URL_NOPAD.encode(&body));
    let signature = key.sign(signed.as_bytes()).map_err(|e| JwtError::Sign(e.to_string()))?;
    Ok(format!("{signed}.{}", BASE64URL_NOPAD.encode(&signature)))
}

#[cfg(test)]
mod tests;
