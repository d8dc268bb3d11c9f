//! Agora's one error-code enum and its wire form.
//!
//! Every service replies to a failed request with the standard NATS micro headers
//! (`Nats-Service-Error: <message>`, `Nats-Service-Error-Code: <numeric status>`) and the body
//! `{"error":{"code":"insufficient_funds","message":"..."}}`. The string `code` is the stable
//! API that clients and tests match on; the numeric status follows HTTP conventions so the
//! gateway can reuse it.

use std::fmt;

use agora_core::auth::AuthError;
use agora_core::ledger::{CommitError, LedgerError, PendingState};
use agora_core::{
    AccountId, ChatError, CoinsError, IdentityError, LikesError, LockError, OperationId, ParseError,
};
use serde::{Deserialize, Serialize};

/// Stable error codes. Never renumber or rename one: clients match on `as_str()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Malformed JSON, a missing or unknown field, a value out of its bounds.
    InvalidRequest,
    /// A withdrawal or transfer larger than the balance.
    InsufficientFunds,
    /// Locks or capacity could not be had in time; retrying later may succeed.
    Busy,
    /// A dependency is down or the outcome is unknown; retry with the same id.
    Unavailable,
    /// Ledger: the account is locked by another owner.
    Locked,
    /// Ledger: the caller is not the owner of the lock.
    NotOwner,
    /// Ledger: the fencing token is not the one of a live lease.
    StaleToken,
    /// Ledger: an operation id is already recorded.
    DuplicateId,
    /// A bug: the service could not do what it should have.
    Internal,
    /// The named thing (a task) does not exist, or no longer does.
    NotFound,
    /// The request contradicts the current state (cancelling a finished task).
    Conflict,
    /// Chat: the name is held by a live user.
    NameTaken,
    /// Chat: the name was never registered.
    UnknownUser,
    /// Chat: no live session with that name and token (it expired or was left).
    NotRegistered,
    /// Chat: the sender is over its message rate; retry after the time in the message.
    RateLimited,
    /// Coins: not enough units available to buy, or held to sell.
    InsufficientQuantity,
    /// The caller may not do this: it is someone else's, or needs the manager's role.
    Forbidden,
    /// No identity, or a bad one: wrong name, password or token, an expired token, no session.
    Unauthenticated,
    /// Ledger: another operation of the same linked chain was refused, so this one was not
    /// applied either (the error names the failing one).
    LinkedFailed,
    /// Ledger: the pending transfer was posted already.
    PendingPosted,
    /// Ledger: the pending transfer was voided already.
    PendingVoided,
    /// Ledger: the pending transfer expired (its amount was released).
    PendingExpired,
    /// Ledger: a post of more than the pending transfer holds.
    ExceedsPending,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidRequest => "invalid_request",
            Self::InsufficientFunds => "insufficient_funds",
            Self::Busy => "busy",
            Self::Unavailable => "unavailable",
            Self::Locked => "locked",
            Self::NotOwner => "not_owner",
            Self::StaleToken => "stale_token",
            Self::DuplicateId => "duplicate_id",
            Self::Internal => "internal",
            Self::NotFound => "not_found",
            Self::Conflict => "conflict",
            Self::NameTaken => "name_taken",
            Self::UnknownUser => "unknown_user",
            Self::NotRegistered => "not_registered",
            Self::RateLimited => "rate_limited",
            Self::InsufficientQuantity => "insufficient_quantity",
            Self::Forbidden => "forbidden",
            Self::Unauthenticated => "unauthenticated",
            Self::LinkedFailed => "linked_failed",
            Self::PendingPosted => "pending_posted",
            Self::PendingVoided => "pending_voided",
            Self::PendingExpired => "pending_expired",
            Self::ExceedsPending => "exceeds_pending",
        }
    }

    /// The numeric `Nats-Service-Error-Code`, HTTP-like.
    pub fn status(self) -> u16 {
        match self {
            Self::InvalidRequest => 400,
            Self::NotRegistered | Self::Unauthenticated => 401,
            Self::NotOwner | Self::Forbidden => 403,
            Self::NotFound | Self::UnknownUser => 404,
            Self::InsufficientFunds
            | Self::StaleToken
            | Self::DuplicateId
            | Self::Conflict
            | Self::NameTaken
            | Self::InsufficientQuantity
            | Self::LinkedFailed
            | Self::PendingPosted
            | Self::PendingVoided
            | Self::PendingExpired
            | Self::ExceedsPending => 409,
            Self::Locked => 423,
            Self::Busy | Self::RateLimited => 429,
            Self::Internal => 500,
            Self::Unavailable => 503,
        }
    }

    /// The code for a numeric status from a service that sent no JSON body.
    pub fn from_status(status: u16) -> Self {
        match status {
            400 => Self::InvalidRequest,
            401 => Self::NotRegistered,
            403 => Self::NotOwner,
            404 => Self::NotFound,
            409 => Self::InsufficientFunds,
            423 => Self::Locked,
            429 => Self::Busy,
            503 => Self::Unavailable,
            _ => Self::Internal,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error as it travels on the wire: `{"error":{...}}` wraps this.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ServiceError {
    pub code: ErrorCode,
    pub message: String,
    /// Accounts the error is about (`locked`, `stale_token`), when it names any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub accounts: Vec<String>,
    /// Operation ids the error is about (`duplicate_id`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ids: Vec<String>,
}

/// The JSON body of an error reply.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ServiceError,
}

impl ServiceError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), accounts: Vec::new(), ids: Vec::new() }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidRequest, message)
    }

    pub fn with_accounts(mut self, accounts: &[AccountId]) -> Self {
        self.accounts = accounts.iter().map(|a| a.to_string()).collect();
        self
    }
}

impl From<ParseError> for ServiceError {
    fn from(error: ParseError) -> Self {
        Self::invalid(error.to_string())
    }
}

impl From<IdentityError> for ServiceError {
    fn from(error: IdentityError) -> Self {
        let message = error.to_string();
        match error {
            IdentityError::InvalidName(_)
            | IdentityError::Reserved(_)
            | IdentityError::InvalidRole(_) => Self::invalid(message),
            IdentityError::NotYours { .. }
            | IdentityError::ManagerOnly(_)
            | IdentityError::UserOnly(_)
            | IdentityError::ServiceOnly(_) => Self::new(ErrorCode::Forbidden, message),
            IdentityError::SignInFirst(_) => Self::new(ErrorCode::Unauthenticated, message),
        }
    }
}

impl From<AuthError> for ServiceError {
    fn from(error: AuthError) -> Self {
        let message = error.to_string();
        match error {
            AuthError::BadCredentials | AuthError::Expired => {
                Self::new(ErrorCode::Unauthenticated, message)
            }
            AuthError::WeakPassword | AuthError::BadTtl { .. } => Self::invalid(message),
        }
    }
}

impl From<LockError> for ServiceError {
    fn from(error: LockError) -> Self {
        let message = error.to_string();
        match error {
            LockError::Locked { accounts } => {
                Self::new(ErrorCode::Locked, message).with_accounts(&accounts)
            }
            LockError::NotOwner { account } => {
                Self::new(ErrorCode::NotOwner, message).with_accounts(&[account])
            }
            LockError::StaleToken { accounts } => {
                Self::new(ErrorCode::StaleToken, message).with_accounts(&accounts)
            }
            LockError::TableFull => Self::new(ErrorCode::Busy, message),
            LockError::InvalidLease(_) | LockError::InvalidOwner | LockError::InvalidAccountSet => {
                Self::invalid(message)
            }
        }
    }
}

impl From<CommitError> for ServiceError {
    fn from(error: CommitError) -> Self {
        let message = error.to_string();
        match error {
            CommitError::Lock(error) => error.into(),
            CommitError::Duplicate(ids) => {
                let mut error = Self::new(ErrorCode::DuplicateId, message);
                error.ids = ids.iter().map(OperationId::to_string).collect();
                error
            }
            CommitError::NegativeBalance(_)
            | CommitError::WrittenTwice(_)
            | CommitError::ReleasedTwice(_) => Self::invalid(message),
        }
    }
}

impl From<LedgerError> for ServiceError {
    fn from(error: LedgerError) -> Self {
        let message = error.to_string();
        match error {
            LedgerError::InsufficientFunds { account, .. } => {
                Self::new(ErrorCode::InsufficientFunds, message).with_accounts(&[account])
            }
            LedgerError::Overflow { account, .. } | LedgerError::SelfTransfer { account } => {
                Self::invalid(message).with_accounts(&[account])
            }
            LedgerError::Timeout { .. }
            | LedgerError::PendingNeedsId
            | LedgerError::IdReused { .. } => Self::invalid(message),
            LedgerError::PendingNotFound { .. } => Self::new(ErrorCode::NotFound, message),
            LedgerError::PendingFinished { state, .. } => {
                let code = match state {
                    PendingState::Posted(_) => ErrorCode::PendingPosted,
                    PendingState::Voided => ErrorCode::PendingVoided,
                    PendingState::Expired | PendingState::Pending => ErrorCode::PendingExpired,
                };
                Self::new(code, message)
            }
            LedgerError::PostExceedsPending { .. } => Self::new(ErrorCode::ExceedsPending, message),
            LedgerError::PendingLimit { .. } => Self::new(ErrorCode::Busy, message),
            LedgerError::LinkedFailed { .. } | LedgerError::PartlyRecorded { .. } => {
                Self::new(ErrorCode::LinkedFailed, message)
            }
            LedgerError::NotLoaded { .. } => Self::new(ErrorCode::Internal, message),
        }
    }
}

impl From<ChatError> for ServiceError {
    fn from(error: ChatError) -> Self {
        let code = match &error {
            ChatError::InvalidName { .. }
            | ChatError::InvalidText(_)
            | ChatError::TooManyRooms(_)
            | ChatError::BroadcastRoom => ErrorCode::InvalidRequest,
            ChatError::NameTaken(_) => ErrorCode::NameTaken,
            ChatError::NotRegistered(_) => ErrorCode::NotRegistered,
            ChatError::UnknownUser(_) => ErrorCode::UnknownUser,
            ChatError::RateLimited { .. } => ErrorCode::RateLimited,
            ChatError::TooManyUsers(_) => ErrorCode::Busy,
        };
        Self::new(code, error.to_string())
    }
}

impl From<CoinsError> for ServiceError {
    fn from(error: CoinsError) -> Self {
        let code = match &error {
            CoinsError::Exists(_) | CoinsError::InUse(_) => ErrorCode::Conflict,
            // Orders wait while a removal checks who holds the asset; it may be listed again.
            CoinsError::Delisting(_) => ErrorCode::Busy,
            // A stored trade that does not parse: the store is corrupt, not the request.
            CoinsError::InvalidSide(_) => ErrorCode::Internal,
            CoinsError::InvalidSymbol(_)
            | CoinsError::InvalidName
            | CoinsError::InvalidOrderId(_)
            | CoinsError::InvalidPrice(_)
            | CoinsError::InvalidQuantity(_)
            | CoinsError::InvalidStock(_)
            | CoinsError::UnknownSymbol(_)
            | CoinsError::Overflow => ErrorCode::InvalidRequest,
        };
        Self::new(code, error.to_string())
    }
}

impl From<LikesError> for ServiceError {
    fn from(error: LikesError) -> Self {
        let code = match &error {
            LikesError::InvalidItem(_)
            | LikesError::InvalidUser(_)
            | LikesError::InvalidNode(_)
            | LikesError::AnonymousUnlike
            | LikesError::Implausible { .. } => ErrorCode::InvalidRequest,
            LikesError::TooManyItems(_) | LikesError::TooManyUsers(_) => ErrorCode::Busy,
        };
        Self::new(code, error.to_string())
    }
}

#[cfg(test)]
mod tests;
