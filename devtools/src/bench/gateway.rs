//! `agora bench gateway`: HTTP `GET /balance/{account}` through the gateway, from many
//! keep-alive connections, against the same balance request sent straight to the bank over
//! NATS, at the same concurrency in alternating slices of one run. The HTTP requests carry a
//! manager's bearer token (a manager reads any balance), checked as for any caller.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::sync::Mutex;

use super::{BENCH_MANAGER, Measurement, Rig, compare, connections, print_header, print_row};
use agora_nats::client::ClientError;
use agora_nats::subjects;

/// Options of `agora bench gateway`.
#[derive(Debug, Clone)]
pub struct GatewayBenchOptions {
    /// Seconds of measurement per side.
    pub seconds: u64,
    /// HTTP connections, each with one request in flight (the NATS side keeps as many
    /// requests in flight).
    pub http_connections: usize,
    /// NATS connections of the raw side.
    pub nats_connections: usize,
    /// Accounts the balance reads spread over.
    pub accounts: usize,
}

/// One HTTP/1.1 keep-alive connection to the gateway.
async fn http_connection(address: &str) -> anyhow::Result<SendRequest<Empty<Bytes>>> {
    let stream = tokio::net::TcpStream::connect(address).await?;
    stream.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    Ok(sender)
}

/// How long the auth service may take to make its first manager.
const AUTH_READY_WITHIN: Duration = Duration::from_secs(30);

/// A bearer token of the benchmark's manager, from `POST /api/auth/token`.
async fn manager_token(address: &str) -> anyhow::Result<String> {
    let password = crate::process::dev_value("AGORA_MANAGER_PASSWORD")
        .context("dev.env has no AGORA_MANAGER_PASSWORD")?;
    let body = serde_json::json!({"name": BENCH_MANAGER, "password": password}).to_string();
    let deadline = Instant::now() + AUTH_READY_WITHIN;
    loop {
        let attempt = async {
            let stream = tokio::net::TcpStream::connect(address).await?;
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(connection);
            let request = hyper::Request::post("/api/auth/token")
                .header(hyper::header::HOST, address)
                .header(hyper::header::CONTENT_TYPE, "application/json")
                .body(Full::new(Bytes::from(body.clone())))?;
            let response = sender.send_request(request).await?;
            let status = response.status();
            let bytes = response.into_body().collect().await?.to_bytes();
            anyhow::ensure!(
                status.is_success(),
                "HTTP {status}: {}",
                String::from_utf8_lossy(&bytes)
            );
            let reply: serde_json::Value = serde_json::from_slice(&bytes)?;
            reply["token"].as_str().map(str::to_owned).context("no token in the reply")
        };
        match attempt.await {
            Ok(token) => return Ok(token),
            Err(error) if Instant::now() >= deadline => {
                return Err(error.context("signing the benchmark's manager in"));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// `agora bench gateway`.
pub async fn gateway(options: GatewayBenchOptions) -> anyhow::Result<Vec<Measurement>> {
    let mut rig = Rig::start(0)?;
    rig.start_component(
        "ledger",
        "agora-ledger",
        &["--data-dir".to_owned(), rig.data_dir("ledger")],
    )?;
    rig.start_component("bank", "agora-bank", &["--bank-id".to_owned(), "bench-0".to_owned()])?;
    rig.start_auth()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let address = format!("127.0.0.1:{port}");
    rig.start_component("gateway", "agora-gateway", &["--listen".to_owned(), address.clone()])?;
    let clients = Arc::new(connections(&rig.url, options.nats_connections).await?);
    let in_flight = options.http_connections.max(1);
    let accounts = options.accounts.max(1);
    let account = move |i: usize| format!("reader-{:04}", i % accounts);
    for i in 0..accounts {
        clients[0].deposit(&account(i), 1_000 + i as i64, None).await?;
    }
    let authorization = format!("Bearer {}", manager_token(&address).await?);
    let mut senders = Vec::with_capacity(in_flight);
    for _ in 0..in_flight {
        senders.push(Mutex::new(http_connection(&address).await?));
    }
    let senders = Arc::new(senders);
    println!(
        "agora bench gateway: nats-server {}, ledger, 1 bank, gateway; {in_flight} HTTP \
         connection(s) vs {in_flight} NATS requests in flight over {} connection(s), {} s per side",
        crate::process::NATS_SERVER_VERSION,
        options.nats_connections.max(1),
        options.seconds
    );

    let raw_clients = clients.clone();
    let raw = move |worker: usize, sequence: u64| {
        let client = raw_clients[worker % raw_clients.len()].clone();
        let body = format!(r#"{{"account":"{}"}}"#, account(worker + sequence as usize));
        async move {
            client.request_bytes(subjects::bank::BALANCE_SUBJECT, Bytes::from(body)).await.map(drop)
        }
    };
    let host = address.clone();
    let http = move |worker: usize, sequence: u64| {
        let senders = senders.clone();
        let request =
            hyper::Request::get(format!("/balance/{}", account(worker + sequence as usize)))
                .header(hyper::header::HOST, host.as_str())
                .header(hyper::header::AUTHORIZATION, authorization.as_str())
                .body(Empty::<Bytes>::new());
        async move {
            let failed = |e: &dyn std::fmt::Display| ClientError::Transport(e.to_string());
            let request = request.map_err(|e| failed(&e))?;
            let mut sender = senders[worker].lock().await;
            let response = sender.send_request(request).await.map_err(|e| failed(&e))?;
            let status = response.status();
            let body = response.into_body().collect().await.map_err(|e| failed(&e))?;
            if status != hyper::StatusCode::OK || body.to_bytes().is_empty() {
                return Err(failed(&format!("HTTP {status}")));
            }
            Ok(())
        }
    };
    let duration = Duration::from_secs(options.seconds.max(1));
    let (raw, ours) = compare(in_flight, duration, raw, http).await?;
    let raw = raw.measurement("raw NATS bank.balance", in_flight);
    let ours = ours.measurement("HTTP GET /balance/{account}", in_flight);
    print_header();
    print_row(&raw, None);
    print_row(&ours, Some(&raw));
    println!(
        "\nHTTP through the gateway / NATS straight to the bank: {:.2}x ops/s",
        ours.ops_per_second / raw.ops_per_second
    );
    if ours.errors > 0 || raw.errors > 0 {
        println!("warning: {} HTTP and {} NATS requests failed", ours.errors, raw.errors);
    }
    rig.finish();
    Ok(vec![raw, ours])
}
