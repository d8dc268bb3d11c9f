//! `agora health`: the health checks of the compose stack's containers (which have no shell).
//!
//! - A service container is healthy when its own instance (the one whose `host` metadata is
//!   the container's host name) answers `$SRV.PING.<service>`: being connected is not enough,
//!   the service must be serving.
//! - nats-server and the gateway are healthy when an HTTP URL answers 2xx
//!   (`/healthz` on nats-server's monitoring port, `/api/health` on the gateway).

use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::rt::TokioIo;

use agora_nats::client::ping_instances;
use agora_nats::service::{METADATA_HOST, host_name};

/// The most of a body `check_http` reads.
const BODY_MAX: usize = 16 << 20;

/// The `$SRV.PING` answers of `service`'s instances gathered for `within`: each is the
/// instance's JSON (`name`, `id`, `version`, `metadata`).
pub async fn ping(
    client: &async_nats::Client,
    service: &str,
    within: Duration,
) -> anyhow::Result<Vec<serde_json::Value>> {
    Ok(ping_instances(client, Some(service), within, |_| false).await?)
}

/// Succeeds when an instance of `service` on `host` (this host when `None`) answers
/// `$SRV.PING` within `within`.
pub async fn check_service(
    client: &async_nats::Client,
    service: &str,
    host: Option<&str>,
    within: Duration,
) -> anyhow::Result<String> {
    let host = host.map_or_else(host_name, str::to_owned);
    let is_mine = |info: &serde_json::Value| info["metadata"][METADATA_HOST] == host.as_str();
    let instances = ping_instances(client, Some(service), within, is_mine).await?;
    let mine = instances.iter().find(|info| is_mine(info));
    match mine {
        Some(info) => {
            Ok(format!("{service} {} on {host} answers", info["id"].as_str().unwrap_or("")))
        }
        None => bail!(
            "no instance of {service} on host {host:?} answered $SRV.PING within {within:?} \
             ({} elsewhere)",
            instances.len()
        ),
    }
}

/// Succeeds when `GET url` (plain `http://host:port/path`) answers 2xx within `within`.
///
/// With `body`, the report is the response's body (what a monitoring endpoint answers, for a
/// script inside a container that has nothing else to fetch it with).
pub async fn check_http(url: &str, within: Duration, body: bool) -> anyhow::Result<String> {
    let uri: hyper::Uri = url.parse().with_context(|| format!("bad URL {url:?}"))?;
    if uri.scheme_str() != Some("http") {
        bail!("only http:// URLs are checked, not {url}");
    }
    let authority = uri.authority().context("the URL has no host")?.clone();
    let port = authority.port_u16().unwrap_or(80);
    let check = async {
        let stream = tokio::net::TcpStream::connect((authority.host(), port)).await?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        let request = hyper::Request::get(path)
            .header(hyper::header::HOST, authority.as_str())
            .body(Empty::<Bytes>::new())?;
        let response = sender.send_request(request).await?;
        let status = response.status();
        let text = if body {
            use http_body_util::BodyExt;
            let bytes = http_body_util::Limited::new(response.into_body(), BODY_MAX)
                .collect()
                .await
                .map_err(|e| anyhow::anyhow!("reading the body: {e}"))?
                .to_bytes();
            String::from_utf8_lossy(&bytes).into_owned()
        } else {
            String::new()
        };
        anyhow::Ok((status, text))
    };
    let (status, text) = tokio::time::timeout(within, check)
        .await
        .with_context(|| format!("{url} did not answer within {within:?}"))?
        .with_context(|| format!("GET {url}"))?;
    if !status.is_success() {
        bail!("GET {url} answered {status}");
    }
    Ok(if body { text } else { format!("GET {url} answered {status}") })
}
