//! Users' credentials, as rules: what a password must be, what a token is good for and until
//! when. Hashing and randomness are the shell's (argon2, the OS's CSPRNG); here a token is
//! only its digest and its record.

use crate::identity::{Role, UserName};

/// Shortest password, in bytes.
pub const PASSWORD_BYTES_MIN: usize = 8;
/// Longest password, in bytes (argon2 reads all of it).
pub const PASSWORD_BYTES_MAX: usize = 128;
/// Tokens one user holds at most; a new one beyond retires the oldest.
pub const TOKENS_PER_USER_MAX: usize = 32;
/// Longest life of a session (the dashboard's cookie), in ms: 12 hours.
pub const SESSION_TTL_MS: u64 = 12 * 3_600_000;
/// Longest life of an API token (`agora login`), in ms: 30 days.
pub const API_TOKEN_TTL_MS: u64 = 30 * 24 * 3_600_000;
/// Shortest life a caller may ask of a token, in ms.
pub const TOKEN_TTL_MIN_MS: u64 = 1_000;

/// Why credentials were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Unknown user, wrong password, unknown or revoked token: one answer for all, so a
    /// caller learns nothing about which.
    #[error("wrong user name, password or token")]
    BadCredentials,
    #[error("the token expired; log in again")]
    Expired,
    #[error(
        "a password is {PASSWORD_BYTES_MIN}-{PASSWORD_BYTES_MAX} bytes without control characters"
    )]
    WeakPassword,
    #[error("a token lives {TOKEN_TTL_MIN_MS} ms at least and {max} ms at most")]
    BadTtl { max: u64 },
}

/// Checks a new password against the policy.
pub fn check_password(password: &str) -> Result<(), AuthError> {
    let fits = (PASSWORD_BYTES_MIN..=PASSWORD_BYTES_MAX).contains(&password.len());
    if fits && !password.chars().any(char::is_control) {
        Ok(())
    } else {
        Err(AuthError::WeakPassword)
    }
}

/// What a token is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenKind {
    /// The dashboard's session cookie (the gateway holds it for the browser).
    Session,
    /// A program's or the CLI's token (`agora login`), presented to NATS when connecting.
    Api,
}

impl TokenKind {
    pub const ALL: [TokenKind; 2] = [TokenKind::Session, TokenKind::Api];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Session => "session",
            Self::Api => "api",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == text)
    }

    /// The longest life of a token of this kind.
    pub fn ttl_max_ms(self) -> u64 {
        match self {
            Self::Session => SESSION_TTL_MS,
            Self::Api => API_TOKEN_TTL_MS,
        }
    }

    /// When a token issued at `now_ms` for `ttl_ms` (the kind's longest when `None`) expires.
    pub fn expiry(self, now_ms: u64, ttl_ms: Option<u64>) -> Result<u64, AuthError> {
        let max = self.ttl_max_ms();
        let ttl = ttl_ms.unwrap_or(max);
        if !(TOKEN_TTL_MIN_MS..=max).contains(&ttl) {
            return Err(AuthError::BadTtl { max });
        }
        Ok(now_ms.saturating_add(ttl))
    }
}

/// A stored token: whose it is, what for, until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    pub name: UserName,
    pub kind: TokenKind,
    pub created_ms: u64,
    pub expires_ms: u64,
}

impl TokenRecord {
    /// Whether the token is still good at `now_ms`.
    pub fn check(&self, now_ms: u64) -> Result<(), AuthError> {
        if now_ms < self.expires_ms { Ok(()) } else { Err(AuthError::Expired) }
    }
}

/// A user as the store has them (the password only as its hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    pub name: UserName,
    pub role: Role,
    /// The argon2 PHC string.
    pub password_hash: String,
    pub created_ms: u64,
}

/// Which of a user's tokens to retire so that a new one fits: the oldest beyond
/// [`TOKENS_PER_USER_MAX`] - 1, given `(created_ms, id)` of the ones they hold.
pub fn tokens_to_retire<T: Clone>(mut held: Vec<(u64, T)>) -> Vec<T> {
    if held.len() < TOKENS_PER_USER_MAX {
        return Vec::new();
    }
    held.sort_by_key(|(created, _)| *created);
    let excess = held.len() + 1 - TOKENS_PER_USER_MAX;
    held.into_iter().take(excess).map(|(_, id)| id).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_follow_the_policy() {
        assert_eq!(check_password("12345678"), Ok(()));
        assert_eq!(check_password(&"p".repeat(PASSWORD_BYTES_MAX)), Ok(()));
        assert_eq!(check_password("ünïcödé!"), Ok(()), "any printable text");
        for bad in ["", "1234567", "password\n", "pass\u{0}word", &"p".repeat(129)] {
            assert_eq!(check_password(bad), Err(AuthError::WeakPassword), "{bad:?}");
        }
    }

    #[test]
    fn tokens_expire_within_their_kinds_bounds() {
        for kind in TokenKind::ALL {
            assert_eq!(TokenKind::parse(kind.as_str()), Some(kind));
            assert_eq!(kind.expiry(1_000, None), Ok(1_000 + kind.ttl_max_ms()));
            assert_eq!(kind.expiry(0, Some(TOKEN_TTL_MIN_MS)), Ok(TOKEN_TTL_MIN_MS));
            let max = kind.ttl_max_ms();
            assert_eq!(kind.expiry(0, Some(max + 1)), Err(AuthError::BadTtl { max }));
            assert_eq!(kind.expiry(0, Some(TOKEN_TTL_MIN_MS - 1)), Err(AuthError::BadTtl { max }));
            assert_eq!(kind.expiry(u64::MAX - 1, None), Ok(u64::MAX), "saturates");
        }
        assert_eq!(TokenKind::parse("forever"), None);
        let record = TokenRecord {
            name: UserName::parse("alice").unwrap(),
            kind: TokenKind::Api,
            created_ms: 0,
            expires_ms: 100,
        };
        assert_eq!(record.check(99), Ok(()));
        assert_eq!(record.check(100), Err(AuthError::Expired));
    }

    #[test]
    fn a_new_token_retires_the_oldest_beyond_the_limit() {
        let held = |n: usize| (0..n).map(|i| ((n - i) as u64 * 10, i)).collect::<Vec<_>>();
        assert!(tokens_to_retire(held(TOKENS_PER_USER_MAX - 1)).is_empty());
        // Full: the oldest one (created first) goes.
        let full = held(TOKENS_PER_USER_MAX);
        assert_eq!(tokens_to_retire(full), vec![TOKENS_PER_USER_MAX - 1]);
        // Over (a lower limit than before): enough of the oldest go to leave room for one.
        let over = held(TOKENS_PER_USER_MAX + 2);
        let retired = tokens_to_retire(over);
        assert_eq!(retired.len(), 3);
        assert_eq!(retired[0], TOKENS_PER_USER_MAX + 1);
    }
}
