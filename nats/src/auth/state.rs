//! The auth service's owner state (see `crate::owner`): every read and write of users and
//! tokens, each answered on its own channel once its group committed. Password hashing and
//! checking happen outside (they are slow on purpose): the owner only stores and finds.

use agora_core::auth::{self as rules, TokenRecord, UserRecord};
use agora_core::identity::Role;
use rusqlite::{Connection, Transaction};
use tokio::sync::oneshot;

use super::store;
use crate::error::{ErrorCode, ServiceError};
use crate::owner::State;
use crate::sqlite::StoreError;

/// Expired tokens removed per sweep at most.
const SWEEP_BATCH: usize = 1_000;

/// What the owner is asked.
#[derive(Debug)]
pub enum Command {
    /// Adds a user (the password already hashed) unless the name is taken or the store full.
    AddUser {
        user: UserRecord,
        users_max: u64,
    },
    /// A user, to check a password against.
    FindUser {
        name: String,
    },
    /// A token by digest, with its user's role now.
    FindToken {
        digest: String,
    },
    /// Stores a token, retiring the user's oldest beyond `TOKENS_PER_USER_MAX`.
    AddToken {
        digest: String,
        record: TokenRecord,
    },
    /// Removes a token if it is `owner`'s (anyone's when `None`).
    RevokeToken {
        digest: String,
        owner: Option<String>,
    },
    /// A new password hash; every token of the user ends.
    SetPassword {
        name: String,
        hash: String,
    },
    /// A new role; every token of the user ends (the next sign-in carries the role).
    SetRole {
        name: String,
        role: Role,
    },
    ListUsers {
        after: Option<String>,
        limit: usize,
    },
    /// Periodic: removes expired tokens.
    Sweep,
}

/// What a command found or did.
#[derive(Debug)]
pub enum Answer {
    User(UserRecord),
    Found(Option<UserRecord>),
    Token(Option<(TokenRecord, Role)>),
    Done,
    Revoked(u64),
    Users(Vec<UserRecord>, bool),
}

pub type Reply = oneshot::Sender<Result<Answer, ServiceError>>;

/// A command and where its answer goes.
#[derive(Debug)]
pub struct Envelope {
    pub command: Command,
    pub reply: Option<Reply>,
}

/// Answers of one group, sent once it committed.
pub type Outbox = Vec<(Reply, Result<Answer, ServiceError>)>;

/// The auth service's state: nothing but the store (users and tokens are read from it).
#[derive(Debug, Default)]
pub struct Auth;

fn unavailable(error: &StoreError) -> ServiceError {
    ServiceError::new(ErrorCode::Unavailable, format!("auth store failed ({error}); retry"))
}

fn not_found(name: &str) -> ServiceError {
    ServiceError::new(ErrorCode::NotFound, format!("no user {name}"))
}

impl Auth {
    fn execute(
        &mut self,
        tx: &Transaction<'_>,
        now_ms: u64,
        command: Command,
    ) -> Result<Result<Answer, ServiceError>, StoreError> {
        Ok(match command {
            Command::AddUser { user, users_max } => {
                if store::user_count(tx)? >= users_max {
                    Err(ServiceError::new(
                        ErrorCode::Busy,
                        format!("no room for more users ({users_max} at most)"),
                    ))
                } else if store::add_user(tx, &user)? {
                    Ok(Answer::User(user))
                } else {
                    Err(ServiceError::new(
                        ErrorCode::NameTaken,
                        format!("the name {} is taken", user.name),
                    ))
                }
            }
            Command::FindUser { name } => Ok(Answer::Found(store::user(tx, &name)?)),
            Command::FindToken { digest } => {
                let found = match store::token(tx, &digest)? {
                    Some(token) => store::user(tx, token.name.as_str())?.map(|u| (token, u.role)),
                    None => None,
                };
                Ok(Answer::Token(found))
            }
            Command::AddToken { digest, record } => {
                let held = store::tokens_of(tx, record.name.as_str())?;
                for old in rules::tokens_to_retire(held) {
                    store::remove_token(tx, &old)?;
                }
                store::add_token(tx, &digest, &record)?;
                Ok(Answer::Done)
            }
            Command::RevokeToken { digest, owner } => {
                let theirs = match (&owner, store::token(tx, &digest)?) {
                    (_, None) => false,
                    (None, Some(_)) => true,
                    (Some(owner), Some(token)) => token.name.as_str() == owner,
                };
                let revoked = theirs && store::remove_token(tx, &digest)?;
                Ok(Answer::Revoked(u64::from(revoked)))
            }
            Command::SetPassword { name, hash } => {
                if store::set_password(tx, &name, &hash)? {
                    Ok(Answer::Revoked(store::remove_tokens_of(tx, &name)?))
                } else {
                    Err(not_found(&name))
                }
            }
            Command::SetRole { name, role } => {
                if store::set_role(tx, &name, role)? {
                    store::remove_tokens_of(tx, &name)?;
                    match store::user(tx, &name)? {
                        Some(user) => Ok(Answer::User(user)),
                        None => Err(not_found(&name)),
                    }
                } else {
                    Err(not_found(&name))
                }
            }
            Command::ListUsers { after, limit } => {
                let (users, more) = store::users(tx, after.as_deref(), limit)?;
                Ok(Answer::Users(users, more))
            }
            Command::Sweep => {
                let removed = store::remove_expired(tx, now_ms, SWEEP_BATCH)?;
                if removed > 0 {
                    tracing::debug!(removed, "expired tokens removed");
                }
                Ok(Answer::Done)
            }
        })
    }
}

impl State for Auth {
    type Envelope = Envelope;
    type Outbox = Outbox;

    fn apply(
        &mut self,
        tx: &Transaction<'_>,
        now_ms: u64,
        envelope: Envelope,
        out: &mut Outbox,
    ) -> Result<(), StoreError> {
        let answer = self.execute(tx, now_ms, envelope.command)?;
        if let Some(reply) = envelope.reply {
            out.push((reply, answer));
        }
        Ok(())
    }

    fn tick(&mut self, _now_ms: u64) -> Vec<Envelope> {
        vec![Envelope { command: Command::Sweep, reply: None }]
    }

    fn rolled_back(&mut self, _conn: &Connection, error: &StoreError, out: &mut Outbox) {
        // Nothing is kept in memory: the store is all there is.
        let failure = unavailable(error);
        out.iter_mut().for_each(|(_, answer)| *answer = Err(failure.clone()));
    }

    async fn deliver(&mut self, _now_ms: u64, out: Outbox) {
        for (reply, answer) in out {
            reply.send(answer).ok();
        }
    }
}
