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
//! - [`session`] and [`auth`]: who calls (a token from the auth service, as the dashboard's
//!   HttpOnly cookie or a bearer header); every request the gateway then makes says for whom,
//!   so the services apply the person's rights. [`guard`]: the Host and Origin checks and
//!   JSON-only bodies every state change passes (no CSRF, no DNS rebinding).
//!
//! Limits: connections ([`GatewayConfig::connections_max`]), the time to send the headers and
//! the body, request bodies, live streams and chat sessions (in all and per user), the log
//! ring, event sizes, the services snapshot (at most one gathering per second).

use anyhow::Context;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use agora_nats::client::AgoraClient;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::sync::Semaphore;

#[macro_use]
pub mod routes;
pub mod assets;
pub mod auth;
pub mod bank;
pub mod chat;
pub mod coins;
pub mod files;
pub mod guard;
pub mod http;
pub mod likes;
pub mod live;
pub mod session;
pub mod system;
pub mod tasks;

pub use http::ApiError;

/// How a gateway runs: the flags of `agora-gateway`.
#[derive(Debug, Clone, clap::Args)]
pub struct GatewayConfig {
    /// HTTP address to listen on (port 0: any free port; the chosen one is announced).
    #[arg(long, env = "AGORA_GATEWAY_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// How long to wait for a service's reply, in milliseconds.
    #[arg(long, env = "AGORA_GATEWAY_REQUEST_TIMEOUT_MS", default_value_t = 5_000)]
    pub request_timeout_ms: u64,
    /// Largest request body, in bytes.
    #[arg(long, env = "AGORA_GATEWAY_BODY_BYTES_MAX", default_value_t = 64 * 1024)]
    pub body_bytes_max: usize,
    /// Open HTTP connections at most; more are closed at once.
    #[arg(long, env = "AGORA_GATEWAY_CONNECTIONS_MAX", default_value_t = 1_024)]
    pub connections_max: usize,
    /// A connection has this long to send a request's headers, in milliseconds.
    #[arg(long, env = "AGORA_GATEWAY_HEADER_TIMEOUT_MS", default_value_t = 10_000)]
    pub header_timeout_ms: u64,
    /// A request has this long to send its body, in milliseconds.
    #[arg(long, env = "AGORA_GATEWAY_BODY_TIMEOUT_MS", default_value_t = 10_000)]
    pub body_timeout_ms: u64,
    /// Most live event streams (browsers) at once.
    #[arg(long, env = "AGORA_GATEWAY_LIVE_CLIENTS_MAX", default_value_t = 256)]
    pub live_clients_max: usize,
    /// Most live event streams of one user.
    #[arg(long, env = "AGORA_GATEWAY_LIVE_CLIENTS_PER_USER", default_value_t = 8)]
    pub live_clients_per_user: usize,
    /// Most chat sessions held for browsers.
    #[arg(long, env = "AGORA_GATEWAY_CHAT_SESSIONS_MAX", default_value_t = 1_024)]
    pub chat_sessions_max: usize,
    /// Most chat sessions held for one user.
    #[arg(long, env = "AGORA_GATEWAY_CHAT_SESSIONS_PER_USER", default_value_t = 4)]
    pub chat_sessions_per_user: usize,
    /// A browser's chat session with no call and no live stream for this long ends, in ms.
    #[arg(long, env = "AGORA_GATEWAY_CHAT_IDLE_MS", default_value_t = 30_000)]
    pub chat_idle_ms: u64,
    /// Host names the gateway answers for, besides IP addresses (comma-separated).
    #[arg(
        long,
        env = "AGORA_GATEWAY_ALLOWED_HOSTS",
        default_value = "localhost",
        value_delimiter = ','
    )]
    pub allowed_hosts: Vec<String>,
    /// Other sites' origins that may change things here (`https://app.example`; none by
    /// default: only this gateway's own pages).
    #[arg(long, env = "AGORA_GATEWAY_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,
    /// A secret a Prometheus scraper may send as its bearer token for `GET /metrics` (and for
    /// nothing else), besides a manager's token; at least 16 characters. Unset: managers only.
    #[arg(long, env = "AGORA_GATEWAY_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<String>,
    /// Mark the session cookie `Secure` (when browsers reach the gateway over HTTPS).
    #[arg(long, env = "AGORA_GATEWAY_SECURE_COOKIES")]
    pub secure_cookies: bool,
}

impl GatewayConfig {
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!((100..=60_000).contains(&self.request_timeout_ms), "request timeout");
        anyhow::ensure!((1024..=16 << 20).contains(&self.body_bytes_max), "body bytes max");
        anyhow::ensure!((1..=65_536).contains(&self.connections_max), "connections max");
        anyhow::ensure!((100..=600_000).contains(&self.header_timeout_ms), "header timeout");
        anyhow::ensure!((100..=600_000).contains(&self.body_timeout_ms), "body timeout");
        anyhow::ensure!((1..=65_536).contains(&self.live_clients_max), "live clients max");
        anyhow::ensure!((1..=1_024).contains(&self.live_clients_per_user), "live per user");
        anyhow::ensure!((1..=65_536).contains(&self.chat_sessions_max), "chat sessions max");
        anyhow::ensure!((1..=1_024).contains(&self.chat_sessions_per_user), "chat per user");
        anyhow::ensure!((1_000..=3_600_000).contains(&self.chat_idle_ms), "chat idle ms");
        if let Some(token) = &self.metrics_token {
            anyhow::ensure!(
                (16..=256).contains(&token.len()) && token.chars().all(|c| c.is_ascii_graphic()),
                "the metrics token is 16 to 256 printable characters"
            );
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
    pub(crate) checked: session::Checked,
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
    let chat = Arc::new(chat::Sessions::new(&config));
    let gateway = Arc::new(Gateway {
        agora,
        config: config.clone(),
        live,
        chat,
        services: system::ServicesCache::default(),
        checked: session::Checked::default(),
    });
    system::gauges(&gateway);
    let reaper = tokio::spawn(chat::reap(gateway.clone()));
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {} (--listen)", config.listen))?;
    let address = listener.local_addr()?;
    tracing::info!(%address, "gateway listening");
    ready(address);
    serve(listener, routes::router(gateway.clone()), &config, shutdown).await;
    reaper.abort();
    gateway.chat.leave_all().await;
    Ok(())
}

/// Accepts connections up to the limit (beyond, a new one is closed at once), each with a
/// deadline for its request headers, until `shutdown`; then lets open requests finish.
async fn serve(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    config: &GatewayConfig,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let permits = Arc::new(Semaphore::new(config.connections_max));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let header_timeout = Duration::from_millis(config.header_timeout_ms);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "connection limit reached; closing");
            drop(stream);
            continue;
        };
        let mut builder = auto::Builder::new(TokioExecutor::new()).http1_only();
        builder.http1().timer(TokioTimer::new()).header_read_timeout(header_timeout);
        let service = TowerToHyperService::new(app.clone());
        let connection = builder.serve_connection(TokioIo::new(stream), service).into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%peer, %error, "connection ended");
            }
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}
