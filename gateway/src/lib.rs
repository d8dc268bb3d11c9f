//! The gateway (`agora-gateway`): Agora's HTTP API and its live web dashboard, one process
//! that talks to every service over NATS and to browsers over HTTP.
//!
//! - [`routes`]: a route is a row (method, path, summary, parameter and body types, handler);
//!   each capability's module declares its rows and [`routes::all`] is the API. The router and
//!   the OpenAPI document (`/api/openapi.json`) are both built from it, so they cannot
//!   disagree.
//! - [`http`]: what handlers share. Most forward one JSON request to one subject and pass the
//!   reply through byte for byte; a service's coded error becomes the HTTP status of its code
//!   with the same JSON body ([`ApiError`]).
//! - One module per capability: [`system`] (health, OpenAPI, services, logs), [`bank`],
//!   [`coins`], [`tasks`], [`likes`], [`files`] (downloads streamed chunk by chunk, with
//!   `Range`, `ETag` and `Content-Length`) and [`chat`] (sessions the gateway holds for
//!   browsers, which cannot heartbeat on NATS themselves, ended when idle).
//! - [`live`]: one set of NATS subscriptions fanned out to every browser over Server-Sent
//!   Events, plus the recent log records.
//! - [`assets`]: the dashboard (plain HTML, CSS and JavaScript compiled into the binary).
//!
//! Limits: request bodies ([`GatewayConfig::body_bytes_max`]), live clients, chat sessions,
//! the log ring, event sizes, the services snapshot (at most one gathering per second).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use agora_nats::client::AgoraClient;

#[macro_use]
pub mod routes;
pub mod assets;
pub mod bank;
pub mod chat;
pub mod coins;
pub mod files;
pub mod http;
pub mod likes;
pub mod live;
pub mod system;
pub mod tasks;

pub use http::ApiError;

/// Most live (SSE) clients at once by default.
pub const LIVE_CLIENTS_MAX_DEFAULT: usize = 256;
/// Most chat sessions the gateway holds for browsers by default.
pub const CHAT_SESSIONS_MAX_DEFAULT: usize = 1_024;

/// How a gateway runs.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Where to listen for HTTP (port 0: any free port; the chosen one is announced).
    pub listen: SocketAddr,
    /// How long to wait for a service's reply.
    pub request_timeout_ms: u64,
    /// Largest request body accepted.
    pub body_bytes_max: usize,
    /// Most live event streams at once; more get `busy`.
    pub live_clients_max: usize,
    /// Most chat sessions held for browsers; more get `busy`.
    pub chat_sessions_max: usize,
    /// A chat session with no request and no live stream for this long is ended.
    pub chat_idle_ms: u64,
    /// Manager operations (coin admin) need `Authorization: Bearer <token>`; without a
    /// token they are disabled.
    pub manager_token: Option<String>,
}

impl GatewayConfig {
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!((100..=60_000).contains(&self.request_timeout_ms), "request timeout");
        anyhow::ensure!((1024..=16 << 20).contains(&self.body_bytes_max), "body bytes max");
        anyhow::ensure!((1..=65_536).contains(&self.live_clients_max), "live clients max");
        anyhow::ensure!((1..=65_536).contains(&self.chat_sessions_max), "chat sessions max");
        anyhow::ensure!((1_000..=3_600_000).contains(&self.chat_idle_ms), "chat idle ms");
        if let Some(token) = &self.manager_token {
            anyhow::ensure!(token.len() >= 8, "a manager token has at least 8 characters");
        }
        Ok(())
    }
}

/// What every handler shares.
#[derive(Debug)]
pub struct Gateway {
    pub(crate) agora: AgoraClient,
    pub(crate) config: GatewayConfig,
    pub(crate) live: live::Hub,
    pub(crate) chat: Arc<chat::Sessions>,
    pub(crate) services: system::ServicesCache,
}

pub type State = Arc<Gateway>;

/// Serves until `shutdown` resolves. `ready` gets the bound address once it listens.
pub async fn run(
    client: async_nats::Client,
    config: GatewayConfig,
    ready: impl FnOnce(SocketAddr),
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    config.validate()?;
    agora_nats::client::barrier(&client).await?;
    let agora = AgoraClient::new(client.clone())
        .with_timeout(Duration::from_millis(config.request_timeout_ms));
    let live = live::Hub::start(&client).await?;
    let chat = Arc::new(chat::Sessions::new(config.chat_sessions_max, config.chat_idle_ms));
    let gateway = Arc::new(Gateway {
        agora,
        config: config.clone(),
        live,
        chat,
        services: system::ServicesCache::default(),
    });
    let reaper = tokio::spawn(chat::reap(gateway.clone()));
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    let address = listener.local_addr()?;
    tracing::info!(%address, "gateway listening");
    ready(address);
    let app = routes::router(gateway.clone());
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await?;
    reaper.abort();
    gateway.chat.leave_all().await;
    Ok(())
}
