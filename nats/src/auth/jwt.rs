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
mod tests {
    use super::*;

    /// A request as nats-server 2.15 sends it for a user and password client (the shape of
    /// its JSON: optional fields left out).
    fn request_claims(server: &KeyPair, user_nkey: &str) -> serde_json::Value {
        serde_json::json!({
            "iat": 1, "iss": server.public_key(), "sub": "AAXX", "aud": "nats-authorization-request",
            "nats": {
                "server_id": {"name": "n1", "host": "0.0.0.0", "id": server.public_key(),
                              "version": "2.15.1"},
                "user_nkey": user_nkey,
                "client_info": {"host": "127.0.0.1", "id": 7, "kind": "Client", "type": "nats"},
                "connect_opts": {"user": "alice", "pass": "secret", "lang": "rust",
                                 "protocol": 1},
                "type": "authorization_request", "version": 2
            }
        })
    }

    #[test]
    fn a_signed_request_is_read_and_a_forged_one_refused() {
        let server = KeyPair::new_server();
        let user = KeyPair::new_user();
        let claims: Claims<serde_json::Value> =
            serde_json::from_value(request_claims(&server, &user.public_key())).unwrap();
        let token = encode(claims, &server, 1).unwrap();
        let read: Claims<AuthorizationRequest> = decode(&token).unwrap();
        assert_eq!(read.nats.user_nkey, user.public_key());
        assert_eq!(read.nats.server_id.id, server.public_key());
        assert_eq!(read.nats.connect_opts.user.as_deref(), Some("alice"));
        assert_eq!(read.nats.connect_opts.auth_token, None);
        // Claims changed after signing, or signed by another key than `iss` says: refused.
        let mut parts: Vec<&str> = token.split('.').collect();
        let mut forged = request_claims(&server, &user.public_key());
        forged["nats"]["connect_opts"]["user"] = "bob".into();
        let forged_body = BASE64URL_NOPAD.encode(forged.to_string().as_bytes());
        parts[1] = &forged_body;
        assert!(matches!(
            decode::<AuthorizationRequest>(&parts.join(".")),
            Err(JwtError::Signature)
        ));
        let mallory = KeyPair::new_server();
        let mut claims: Claims<serde_json::Value> =
            serde_json::from_value(request_claims(&server, &user.public_key())).unwrap();
        claims.iss = server.public_key();
        let other = encode(claims, &mallory, 1).unwrap();
        let read: Claims<AuthorizationRequest> = decode(&other).unwrap();
        assert_eq!(read.iss, mallory.public_key(), "the signer is who iss says, nobody else");
        for bad in ["", "a.b", "a.b.c.d", "!!.??.**"] {
            assert!(decode::<AuthorizationRequest>(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_response_carries_a_user_jwt_for_the_connection() {
        let issuer = KeyPair::new_account();
        let user = User::new(
            Permission { allow: vec!["agora.bank.balance".into()], deny: vec![] },
            Permission { allow: vec!["_INBOX.alice.>".into()], deny: vec![] },
            100,
            65_536,
        );
        let user_claims = Claims {
            jti: String::new(),
            iat: 0,
            iss: String::new(),
            sub: "UCONN".into(),
            aud: "USERS".into(),
            name: "alice".into(),
            exp: Some(2_000_000_000),
            nats: user,
        };
        let user_jwt = encode(user_claims, &issuer, 10).unwrap();
        let read: Claims<serde_json::Value> = decode(&user_jwt).unwrap();
        assert_eq!((read.iss.as_str(), read.iat), (issuer.public_key().as_str(), 10));
        assert_eq!(read.nats["pub"]["allow"][0], "agora.bank.balance");
        assert_eq!(read.nats["type"], "user");
        assert_eq!(read.jti.len(), 52, "base32 of 32 bytes, as the Go library makes it");
        let response = Claims {
            jti: String::new(),
            iat: 0,
            iss: String::new(),
            sub: "UCONN".into(),
            aud: "NSERVER".into(),
            name: String::new(),
            exp: None,
            nats: AuthorizationResponse::allow(user_jwt.clone()),
        };
        let read: Claims<serde_json::Value> =
            decode(&encode(response, &issuer, 10).unwrap()).unwrap();
        assert_eq!(read.nats["jwt"], user_jwt.as_str());
        assert_eq!(read.nats["type"], "authorization_response");
        assert!(read.nats.get("error").is_none());
    }
}
