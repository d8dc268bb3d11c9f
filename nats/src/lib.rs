//! # agora-nats: Agora's NATS shell
//!
//! The only crate that knows subjects, JSON wire types, NATS services and SQLite. It decodes
//! requests into `agora-core` values, calls the pure domain logic, persists, replies and
//! publishes. Binaries in `bins/` only parse flags and call a `run` function from here.
//!
//! ## Layout
//! Shared by every capability:
//! - [`subjects`]: every subject, as constants and builders; [`error`]: the one error-code
//!   enum and error body; [`pattern`]: the wire formats as regexes (for the OpenAPI document).
//! - [`service`]: decoding within limits (a request is a JSON object or refused), replying
//!   with JSON or a coded error, micro-service set-up.
//! - [`client`]: the typed request-reply client ([`client::AgoraClient`]; each capability
//!   adds its calls in its own `client.rs`) and the one scatter-gather ([`client::gather`]).
//! - [`owner`]: the one owner runtime of the stateful services: a bounded queue, one owner
//!   thread, groups applied in one transaction, rollback and reload, delivery after commit.
//! - [`sqlite`]: opening a store, the storage error, checked integer conversions.
//! - [`connection`]: NATS URLs and credentials (`--user`/`--password`, `--creds`, `--nkey`),
//!   connecting, and permission violations reported to the caller.
//! - [`telemetry`], [`clock`]: logging (also on `agora.logs.<service>`), connecting, the
//!   ready line, and the wall clock.
//!
//! One folder per capability, each with `mod.rs` (its config and service), `wire.rs` (its
//! payloads), `client.rs` (its client calls) and, when it keeps state, `state.rs` (what its
//! owner thread holds and does) and `store.rs` (its SQL): [`ledger`], [`bank`] (+ batching and
//! reads), [`tasks`] (+ the work queue and the worker), [`chat`], [`coins`], [`files`] (+ the
//! disk), [`likes`] (+ anti-entropy, the leader, the roster of signing keys).

pub mod auth;
pub mod bank;
pub mod chat;
pub mod client;
pub mod clock;
pub mod coins;
pub mod connection;
pub mod error;
pub mod files;
pub mod identity;
pub mod ledger;
pub mod likes;
pub mod metrics;
pub mod owner;
pub mod pattern;
pub mod replica;
pub mod service;
pub mod sqlite;
pub mod subjects;
pub mod tasks;
pub mod telemetry;
pub mod trace;

pub use client::{AgoraClient, ClientError};
pub use error::{ErrorCode, ServiceError};
