//! # agora-nats: Agora's NATS shell
//!
//! The only crate that knows subjects, JSON wire types, NATS services and SQLite. It decodes
//! requests into `agora-core` values, calls the pure domain logic, persists, replies and
//! publishes. Binaries in `bins/` only parse flags and call a `run` function from here.
//!
//! ## Layout
//! - [`subjects`]: every subject, as constants and builders.
//! - [`wire`]: every JSON payload; [`error`]: the one error-code enum and error body.
//! - [`service`]: decoding within limits, replying with JSON or a coded error.
//! - [`client`]: a typed request-reply client ([`client::AgoraClient`]).
//! - [`ledger`] + [`store`]: the ledger service and its SQLite store.
//! - [`bank`]: the bank service with group commit.
//! - [`chat`] + [`chat_store`]: the chat service (names, presence, history) and its store;
//!   [`chat_client`]: sessions that heartbeat and send until recorded, and inboxes.
//! - [`coins`] + [`coins_store`]: the coin exchange (orders reserved, paid through the bank,
//!   settled; pending ones recovered) and its store; its client calls are on [`AgoraClient`].
//! - [`files`]: the file service (chunks, the bounded LRU cache, confinement) and downloads.
//! - [`gateway`]: the HTTP API and the live web dashboard (axum), over all of the above.
//! - [`health`]: `agora health`, the containers' health checks ($SRV.PING of their own
//!   instance, or an HTTP URL).
//! - [`likes`] + [`likes_store`]: a likes node (the CRDT replica's owner, events, anti-entropy,
//!   the leader lease) and its store; the likes client calls are on [`AgoraClient`];
//!   [`likes_trust`]: the roster of nodes and their signing keys, signed batches and pages.
//! - [`sqlite`]: opening the task and chat databases, transactions, owner-thread groups.
//! - [`process`]: starting nats-server and component processes (tests, bench, `agora up`).
//! - [`bench`]: `agora bench` scenarios, each measured against raw NATS in the same run.
//! - [`up`]: `agora up`, the whole system locally.
//! - [`connection`]: NATS URLs and credentials (`--user`/`--password`, `--creds`, `--nkey`),
//!   connecting, and permission violations reported to the caller.
//! - [`telemetry`], [`clock`]: logging/connecting, and the wall clock.

pub mod bank;
pub mod chat;
pub mod client;
pub mod clock;
pub mod coins;
pub mod connection;
pub mod error;
pub mod files;
pub mod ledger;
pub mod likes;
pub mod owner;
pub mod pattern;
pub mod service;
pub mod sqlite;
pub mod subjects;
pub mod tasks;
pub mod telemetry;

pub use client::{AgoraClient, ClientError};
pub use error::{ErrorCode, ServiceError};
