//! # agora-devtools: what runs around the services
//!
//! Nothing here is linked into a service binary: process orchestration, `agora up`, the
//! containers' health checks and `agora bench` live in this crate, used by the `agora` CLI and
//! the tests.
//!
//! ## Layout
//! - [`process`]: starting nats-server with the compiled-in configs (`nats/config/`), and
//!   component processes that announce when they are ready; killed on drop.
//! - [`up`]: `agora up`, the whole system locally.
//! - [`health`]: `agora health`, the containers' checks (`$SRV.PING` of their own instance, or
//!   an HTTP URL).
//! - [`bench`](mod@bench): `agora bench` scenarios, each measured against raw NATS in the same run.

pub mod bench;
pub mod health;
pub mod process;
pub mod up;
