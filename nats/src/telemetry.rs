//! Logging setup shared by every binary: `tracing` to stderr, filtered by `RUST_LOG`.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. `default_filter` applies when `RUST_LOG` is unset.
pub fn init(default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .init();
}

/// Connects to NATS with a recognisable client name, retrying until the server is reachable
/// (a component may start before its server).
pub async fn connect(url: &str, name: &str) -> anyhow::Result<async_nats::Client> {
    let client = options(name).connect(url).await?;
    Ok(client)
}

/// [`connect`], but the server does not deliver this connection's own messages back to its
/// subscriptions (a likes node needs none of its own events).
pub async fn connect_without_echo(url: &str, name: &str) -> anyhow::Result<async_nats::Client> {
    let client = options(name).no_echo().connect(url).await?;
    Ok(client)
}

fn options(name: &str) -> async_nats::ConnectOptions {
    async_nats::ConnectOptions::new().name(name).retry_on_initial_connect()
}

/// Resolves on Ctrl-C or SIGTERM: the graceful shutdown every binary waits for.
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(_) => {
                    interrupt.await.ok();
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    interrupt.await.ok();
}

/// Tells a supervising process (tests, `agora up`) that the component is serving.
pub fn announce_ready(component: &str) {
    println!("{} {component}", crate::process::READY_LINE);
}
