//! The auth service's calls on [`AgoraClient`].

use super::wire::{
    CheckReply, LoginRequest, LogoutReply, PasswordReply, PasswordRequest, RoleRequest,
    SignupRequest, TokenBody, TokenReply, TokenRequest, UserView, UsersReply, UsersRequest,
    WhoamiReply,
};
use crate::client::{AgoraClient, ClientError};
use crate::subjects::auth as subject;

impl AgoraClient {
    /// Makes a user (the role `user`).
    pub async fn signup(&self, name: &str, password: &str) -> Result<UserView, ClientError> {
        let request = SignupRequest { name: name.to_owned(), password: password.to_owned() };
        self.request(subject::SIGNUP_SUBJECT, &request).await
    }

    /// Checks a user's password and makes a token (Agora's components only: the gateway).
    pub async fn login(&self, request: &LoginRequest) -> Result<TokenReply, ClientError> {
        self.request(subject::LOGIN_SUBJECT, request).await
    }

    /// A new API token for the signed-in user of this connection.
    pub async fn new_token(&self, ttl_ms: Option<u64>) -> Result<TokenReply, ClientError> {
        self.request(subject::TOKEN_SUBJECT, &TokenRequest { ttl_ms }).await
    }

    /// Whose a token is (Agora's components only).
    pub async fn check_token(&self, token: &str) -> Result<CheckReply, ClientError> {
        self.request(subject::CHECK_SUBJECT, &TokenBody { token: token.to_owned() }).await
    }

    /// Ends one of the caller's tokens.
    pub async fn logout(&self, token: &str) -> Result<LogoutReply, ClientError> {
        self.request(subject::LOGOUT_SUBJECT, &TokenBody { token: token.to_owned() }).await
    }

    pub async fn whoami(&self) -> Result<WhoamiReply, ClientError> {
        self.request(subject::WHOAMI_SUBJECT, &serde_json::json!({})).await
    }

    /// A new password for the caller; every token they hold ends.
    pub async fn change_password(
        &self,
        old: &str,
        new: &str,
    ) -> Result<PasswordReply, ClientError> {
        let request = PasswordRequest { old: old.to_owned(), new: new.to_owned() };
        self.request(subject::PASSWORD_SUBJECT, &request).await
    }

    /// Users by name (managers).
    pub async fn users(&self, request: &UsersRequest) -> Result<UsersReply, ClientError> {
        self.request(subject::USERS_SUBJECT, request).await
    }

    /// A user's new role (managers).
    pub async fn set_role(&self, name: &str, role: &str) -> Result<UserView, ClientError> {
        let request = RoleRequest { name: name.to_owned(), role: role.to_owned() };
        self.request(subject::ROLE_SUBJECT, &request).await
    }
}
