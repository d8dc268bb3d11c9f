//! The auth service's payloads.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::pattern;

/// Body of `agora.auth.signup`, and of the gateway's `POST /api/auth/signup`.
#[derive(Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SignupRequest {
    #[schemars(pattern(pattern::USER_NAME))]
    pub name: String,
    #[schemars(length(min = 8, max = 128))]
    pub password: String,
}

impl std::fmt::Debug for SignupRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignupRequest").field("name", &self.name).finish_non_exhaustive()
    }
}

/// Body of `agora.auth.login` (Agora's components only: the gateway signs browsers in with
/// it), and of the gateway's `POST /api/auth/login`.
#[derive(Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    #[schemars(pattern(pattern::USER_NAME))]
    pub name: String,
    #[schemars(length(min = 1, max = 128))]
    pub password: String,
    /// `session` (the default: a browser's) or `api` (a program's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["session", "api"]))]
    pub kind: Option<String>,
    /// How long the token lives, in ms (default and most: 12 hours for a session, 30 days
    /// for an API token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1_000))]
    pub ttl_ms: Option<u64>,
}

impl std::fmt::Debug for LoginRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginRequest").field("name", &self.name).finish_non_exhaustive()
    }
}

/// A new token: present it as the NATS connection's token (an API token), or as the
/// gateway's session cookie or `Authorization: Bearer` header.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenReply {
    pub name: String,
    pub role: String,
    pub token: String,
    pub expires_ms: u64,
}

impl std::fmt::Debug for TokenReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenReply")
            .field("name", &self.name)
            .field("role", &self.role)
            .field("expires_ms", &self.expires_ms)
            .finish_non_exhaustive()
    }
}

/// Body of `agora.auth.token`: a new API token for the signed-in caller.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1_000))]
    pub ttl_ms: Option<u64>,
}

/// Body of `agora.auth.check` (components only) and of `agora.auth.logout`.
#[derive(Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenBody {
    #[schemars(length(min = 1, max = 256))]
    pub token: String,
}

impl std::fmt::Debug for TokenBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenBody { .. }")
    }
}

/// Whose a token is (`agora.auth.check`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckReply {
    pub name: String,
    pub role: String,
    pub kind: String,
    pub expires_ms: u64,
}

/// `agora.auth.logout`: whether the token was a live one of the caller's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogoutReply {
    pub revoked: bool,
}

/// Who the caller is (`agora.auth.whoami`): a user, or one of Agora's services.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WhoamiReply {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default)]
    pub service: bool,
}

/// Body of `agora.auth.password`: the caller's new password; every token they hold ends.
#[derive(Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordRequest {
    #[schemars(length(min = 1, max = 128))]
    pub old: String,
    #[schemars(length(min = 8, max = 128))]
    pub new: String,
}

impl std::fmt::Debug for PasswordRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PasswordRequest { .. }")
    }
}

/// `agora.auth.password`: how many of the caller's tokens ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PasswordReply {
    pub revoked: u64,
}

/// A user as managers see them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserView {
    pub name: String,
    pub role: String,
    pub created_ms: u64,
}

/// Body of `agora.auth.users` (managers): users by name, after `after`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UsersRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(pattern::USER_NAME))]
    pub after: Option<String>,
    /// Default 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1_000))]
    pub limit: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsersReply {
    pub users: Vec<UserView>,
    pub more: bool,
}

/// Body of `agora.auth.role` (managers): a user's new role; their tokens end (a role lives
/// in a connection's account, so the next sign-in carries the new one).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RoleRequest {
    #[schemars(pattern(pattern::USER_NAME))]
    pub name: String,
    #[schemars(extend("enum" = ["user", "manager"]))]
    pub role: String,
}
