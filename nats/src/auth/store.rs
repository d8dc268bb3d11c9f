//! The auth service's SQLite store: users (a password only as its argon2 hash) and tokens
//! (only as their SHA-256 digests: the store cannot give a token back, only recognise one).
//!
//! Functions over the connection of the service's owner thread (see `crate::owner`), run in
//! the transaction it opened. WAL with `synchronous=FULL`: a user who signed up, a token that
//! was handed out or revoked, is on disk before anyone hears of it.

use std::path::Path;

use agora_core::auth::{TokenKind, TokenRecord, UserRecord};
use agora_core::identity::{Role, UserName};
use rusqlite::{Connection, OptionalExtension, params};

use crate::sqlite::{self, StoreError};

/// File name of the auth database inside its data directory.
pub const DATABASE_FILE: &str = "auth.db";
const PAGE_CACHE_BYTES_MAX: i64 = 8 * 1024 * 1024;
/// Every commit is on disk before anything else happens.
pub const SYNCHRONOUS: &str = "FULL";

const MIGRATION_1: &str = "
    CREATE TABLE users (
        name TEXT PRIMARY KEY,
        role TEXT NOT NULL,
        hash TEXT NOT NULL,
        created_ms INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE tokens (
        digest TEXT PRIMARY KEY,
        name TEXT NOT NULL REFERENCES users (name) ON DELETE CASCADE,
        kind TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        expires_ms INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX tokens_by_name ON tokens (name, created_ms);
    CREATE INDEX tokens_by_expiry ON tokens (expires_ms);
";

/// Opens (creating if needed) the store in `data_dir`.
pub fn open(data_dir: &Path) -> Result<Connection, StoreError> {
    let conn = sqlite::open_wal(data_dir, DATABASE_FILE, PAGE_CACHE_BYTES_MAX, &[MIGRATION_1])?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(conn)
}

fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
}

fn user_of(
    name: String,
    role: String,
    hash: String,
    created_ms: u64,
) -> Result<UserRecord, StoreError> {
    Ok(UserRecord {
        name: UserName::parse(&name).map_err(corrupt)?,
        role: Role::parse(&role).map_err(corrupt)?,
        password_hash: hash,
        created_ms,
    })
}

pub fn user(conn: &Connection, name: &str) -> Result<Option<UserRecord>, StoreError> {
    let row = conn
        .query_row(
            "SELECT name, role, hash, created_ms FROM users WHERE name = ?1",
            [name],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)),
        )
        .optional()?;
    row.map(|(name, role, hash, created)| user_of(name, role, hash, created)).transpose()
}

pub fn user_count(conn: &Connection) -> Result<u64, StoreError> {
    Ok(conn.query_row("SELECT COUNT(*) FROM users", [], |row| row.get(0))?)
}

/// Adds a user; `false` if the name is taken (compared without case: `Alice` is `alice`'s).
pub fn add_user(conn: &Connection, user: &UserRecord) -> Result<bool, StoreError> {
    let taken: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM users WHERE name = ?1 COLLATE NOCASE)",
        [user.name.as_str()],
        |row| row.get(0),
    )?;
    if taken {
        return Ok(false);
    }
    conn.execute(
        "INSERT INTO users (name, role, hash, created_ms) VALUES (?1, ?2, ?3, ?4)",
        params![user.name.as_str(), user.role.as_str(), user.password_hash, user.created_ms],
    )?;
    Ok(true)
}

pub fn set_password(conn: &Connection, name: &str, hash: &str) -> Result<bool, StoreError> {
    Ok(conn.execute("UPDATE users SET hash = ?2 WHERE name = ?1", params![name, hash])? == 1)
}

pub fn set_role(conn: &Connection, name: &str, role: Role) -> Result<bool, StoreError> {
    Ok(conn.execute("UPDATE users SET role = ?2 WHERE name = ?1", params![name, role.as_str()])?
        == 1)
}

/// Users by name after `after`, at most `limit` (and whether there are more).
pub fn users(
    conn: &Connection,
    after: Option<&str>,
    limit: usize,
) -> Result<(Vec<UserRecord>, bool), StoreError> {
    let mut statement = conn.prepare(
        "SELECT name, role, hash, created_ms FROM users WHERE name > ?1 ORDER BY name LIMIT ?2",
    )?;
    let rows = statement.query_map(
        params![after.unwrap_or(""), sqlite::saturating_i64(limit as u64 + 1)],
        |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)),
    )?;
    let mut users = Vec::new();
    for row in rows {
        let (name, role, hash, created) = row?;
        users.push(user_of(name, role, hash, created)?);
    }
    let more = users.len() > limit;
    users.truncate(limit);
    Ok((users, more))
}

/// A token by its digest.
pub fn token(conn: &Connection, digest: &str) -> Result<Option<TokenRecord>, StoreError> {
    let row: Option<(String, String, u64, u64)> = conn
        .query_row(
            "SELECT name, kind, created_ms, expires_ms FROM tokens WHERE digest = ?1",
            [digest],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)),
        )
        .optional()?;
    row.map(|(name, kind, created_ms, expires_ms)| {
        Ok(TokenRecord {
            name: UserName::parse(&name).map_err(corrupt)?,
            kind: TokenKind::parse(&kind).ok_or_else(|| corrupt(format!("token kind {kind}")))?,
            created_ms,
            expires_ms,
        })
    })
    .transpose()
}

/// The tokens a user holds: `(created_ms, digest)`.
pub fn tokens_of(conn: &Connection, name: &str) -> Result<Vec<(u64, String)>, StoreError> {
    let mut statement =
        conn.prepare("SELECT created_ms, digest FROM tokens WHERE name = ?1 ORDER BY created_ms")?;
    let rows = statement.query_map([name], |row| Ok((row.get(0)?, row.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub fn add_token(conn: &Connection, digest: &str, token: &TokenRecord) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO tokens (digest, name, kind, created_ms, expires_ms)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            digest,
            token.name.as_str(),
            token.kind.as_str(),
            token.created_ms,
            token.expires_ms
        ],
    )?;
    Ok(())
}

/// Removes a token; `true` if there was one.
pub fn remove_token(conn: &Connection, digest: &str) -> Result<bool, StoreError> {
    Ok(conn.execute("DELETE FROM tokens WHERE digest = ?1", [digest])? == 1)
}

/// Removes every token of a user; how many there were.
pub fn remove_tokens_of(conn: &Connection, name: &str) -> Result<u64, StoreError> {
    Ok(conn.execute("DELETE FROM tokens WHERE name = ?1", [name])? as u64)
}

/// Removes tokens expired at `now_ms`, at most `limit`; how many.
pub fn remove_expired(conn: &Connection, now_ms: u64, limit: usize) -> Result<u64, StoreError> {
    Ok(conn.execute(
        "DELETE FROM tokens WHERE digest IN
             (SELECT digest FROM tokens WHERE expires_ms <= ?1 LIMIT ?2)",
        params![now_ms, sqlite::saturating_i64(limit as u64)],
    )? as u64)
}

#[cfg(test)]
mod tests;
