//! Passwords and tokens, as the auth service handles them: passwords hashed with argon2id
//! (the `argon2` crate's default parameters), off the runtime's threads and a few at a time;
//! tokens of 256 random bits from the operating system's CSPRNG, stored only as their SHA-256.

use std::sync::Arc;
use std::time::Duration;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use data_encoding::BASE64URL_NOPAD;
use rand::TryRngCore;
use rand::rngs::OsRng;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use crate::error::{ErrorCode, ServiceError};

/// Passwords hashed or checked at once at most (each takes ~19 MiB and tens of ms).
pub const HASHES_IN_FLIGHT_MAX: usize = 4;
/// How long a password check waits for its turn before the caller gets `busy`.
const HASH_WAIT_MAX: Duration = Duration::from_secs(5);
/// Bytes of a token (256 random bits).
const TOKEN_BYTES: usize = 32;
/// What every token starts with (so a leaked one is recognisable in logs and scanners).
pub const TOKEN_PREFIX: &str = "agora_";

/// Hashes and checks passwords on the blocking pool, a few at a time.
#[derive(Debug, Clone)]
pub struct Passwords {
    permits: Arc<Semaphore>,
    /// A hash no password matches: an unknown user's check costs what a known one's does, so
    /// timing does not tell which names exist.
    decoy: Arc<str>,
}

fn random_bytes<const N: usize>() -> Result<[u8; N], ServiceError> {
    let mut bytes = [0u8; N];
    OsRng.try_fill_bytes(&mut bytes).map_err(|e| {
        ServiceError::new(ErrorCode::Internal, format!("the system's random source failed: {e}"))
    })?;
    Ok(bytes)
}

fn hash_blocking(password: &[u8]) -> Result<String, ServiceError> {
    let salt = SaltString::encode_b64(&random_bytes::<16>()?)
        .map_err(|e| ServiceError::new(ErrorCode::Internal, format!("salt: {e}")))?;
    Argon2::default()
        .hash_password(password, &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| ServiceError::new(ErrorCode::Internal, format!("hashing failed: {e}")))
}

fn verify_blocking(password: &[u8], hash: &str) -> bool {
    PasswordHash::new(hash)
        .is_ok_and(|parsed| Argon2::default().verify_password(password, &parsed).is_ok())
}

impl Passwords {
    pub fn new() -> Result<Self, ServiceError> {
        let decoy = hash_blocking(&random_bytes::<16>()?)?;
        Ok(Self { permits: Arc::new(Semaphore::new(HASHES_IN_FLIGHT_MAX)), decoy: decoy.into() })
    }

    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, ServiceError> {
        let busy = || ServiceError::new(ErrorCode::Busy, "too many sign-ins at once; retry");
        let permit = tokio::time::timeout(HASH_WAIT_MAX, self.permits.clone().acquire_owned())
            .await
            .map_err(|_| busy())?
            .map_err(|_| busy())?;
        let done = tokio::task::spawn_blocking(move || {
            let result = work();
            drop(permit);
            result
        });
        done.await.map_err(|e| ServiceError::new(ErrorCode::Internal, format!("hashing: {e}")))
    }

    /// The argon2 PHC string of `password` (a fresh random salt).
    pub async fn hash(&self, password: String) -> Result<String, ServiceError> {
        self.blocking(move || hash_blocking(password.as_bytes())).await?
    }

    /// Whether `password` matches `hash`; with no hash (no such user), false, at the same cost.
    pub async fn check(
        &self,
        password: String,
        hash: Option<String>,
    ) -> Result<bool, ServiceError> {
        let known = hash.is_some();
        let hash = hash.unwrap_or_else(|| self.decoy.to_string());
        let matched = self.blocking(move || verify_blocking(password.as_bytes(), &hash)).await?;
        Ok(known && matched)
    }
}

/// A new token: [`TOKEN_PREFIX`] and 256 random bits, base64url.
pub fn new_token() -> Result<String, ServiceError> {
    Ok(format!("{TOKEN_PREFIX}{}", BASE64URL_NOPAD.encode(&random_bytes::<TOKEN_BYTES>()?)))
}

/// What the store keeps of a token: its SHA-256, hex.
pub fn digest(token: &str) -> String {
    Sha256::digest(token.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests;
