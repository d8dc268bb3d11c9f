//! # agora-core: Agora's domain logic, with no I/O
//!
//! Everything here is deterministic: no network, no clock, no randomness, no files. Time comes
//! in as `now_ms` arguments and identities (owners, ids) come in as values, so every rule can be
//! unit-tested exhaustively in memory. The NATS shell (`agora-nats`) decodes requests, calls into
//! this crate, persists what it returns and replies.
//!
//! ## Layout
//! - [`account`]: validated names and quantities: [`AccountId`], [`Amount`], [`OperationId`].
//! - [`identity`]: who asks ([`Caller`]: a user with a [`Role`], a service, or anonymous) and
//!   what each may do; [`auth`]: the credential rules (passwords, tokens and their lives).
//! - [`locks`]: [`LockTable`], the ledger's account leases with fencing tokens.
//! - [`ledger`]: [`ledger::book`], the ledger's state machine: balances per account and
//!   [`Asset`] (posted and pending), transfers, two-phase transfers, linked chains and idempotent
//!   ids, applied in batches ([`ledger::apply_batch`]); [`ledger::check_commit`], what a lease
//!   holder's commit must satisfy before it writes.
//! - [`chat`]: [`Chat`], chat names, presence sessions, room memberships and send rates.
//! - [`coins`]: the coin exchange's [`Catalogue`] of assets and prices, and its orders: each one
//!   linked pair of ledger transfers (money one way, units the other).
//! - [`likes`]: [`LikeCounter`], a node's replica of every item's likes: a state-based CRDT
//!   (per-node counters, per-user registers) with version vectors for anti-entropy.
//! - [`tasks`]: [`tasks::ops`], the operations tasks run ([`Op`]), their input bounds and
//!   their computation; [`tasks::lifecycle`], a task's [`Lifecycle`], the rules for claims,
//!   outcomes, retries and cancels.
//! - [`token`]: the shape every name and id that travels in a subject is checked by.
#![deny(clippy::float_arithmetic)]

pub mod account;
pub mod auth;
pub mod chat;
pub mod coins;
pub mod identity;
pub mod ledger;
pub mod likes;
pub mod locks;
pub mod rate;
pub mod tasks;
pub mod token;

pub use account::{AccountId, Amount, Asset, Balance, OperationId, ParseError};
pub use chat::{Chat, ChatConfig, ChatError, ChatEvent, Name};
pub use coins::{Catalogue, CoinsError, Symbol};
pub use identity::{Caller, IdentityError, Role, UserName};
pub use ledger::{Balances, Book, LedgerError, Operation, Posting};
pub use likes::{ItemId, LikeCounter, LikesError, NodeId, UserId};
pub use locks::{Grant, Lock, LockError, LockTable};
pub use tasks::lifecycle::{Lifecycle, Report, TaskError, TaskEvent, TaskState};
pub use tasks::ops::{Number, Op, OpError, Output, RawArgs, SortItems};
