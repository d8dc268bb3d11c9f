//! `agora bench coins`: buy and sell orders against raw NATS request-reply echo and against
//! `bank.transfer`, all three at the same concurrency in alternating slices of one run.
//!
//! An order takes the same path as a transfer (one service, then one ledger commit: the coins
//! service prices it and sends the ledger a linked pair, where the bank sends one transfer), so
//! it is also reported relative to a plain transfer. Each of the in-flight loops is one user who
//! buys one AMZN and then sells it back, so holdings and the exchange's cash stay bounded and
//! every order succeeds.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::{
    Measurement, Rig, Sample, connections, cpu, echo_load, print_header, print_row, sample,
};
use agora_nats::subjects;

/// Options of `agora bench coins`.
#[derive(Debug, Clone)]
pub struct CoinsBenchOptions {
    /// Seconds of measurement per side.
    pub seconds: u64,
    /// Orders (and transfers, and raw requests) in flight.
    pub in_flight: usize,
    /// Client connections the load is spread over.
    pub connections: usize,
}

const SLICES: u32 = 6;

/// `agora bench coins`.
pub async fn coins(options: CoinsBenchOptions) -> anyhow::Result<Vec<Measurement>> {
    let mut rig = Rig::start(1)?;
    rig.start_component(
        "ledger",
        "agora-ledger",
        &["--data-dir".to_owned(), rig.data_dir("ledger")],
    )?;
    rig.start_component("bank", "agora-bank", &["--bank-id".to_owned(), "bench-0".to_owned()])?;
    rig.start_component("coins", "agora-coins", &["--data-dir".to_owned(), rig.data_dir("coins")])?;
    let clients = Arc::new(connections(&rig.url, options.connections).await?);
    let in_flight = options.in_flight.max(1);
    println!(
        "agora bench coins: nats-server {}, ledger, 1 bank, coins, {} connection(s), {in_flight} in \
         flight, {} s per side",
        crate::process::NATS_SERVER_VERSION,
        options.connections.max(1),
        options.seconds
    );
    let user = |worker: usize| format!("bench-trader-{worker}");
    for worker in 0..in_flight {
        clients[0].deposit(&user(worker), 1_000_000_000, None).await?;
    }
    let run = nuid::next().to_string();
    let order_run = run.clone();
    let order_payload = move |worker: usize, sequence: u64| {
        let run = &order_run;
        let id = format!("{run}-{sequence}");
        format!(r#"{{"user":"{}","symbol":"AMZN","quantity":1,"id":"{id}"}}"#, user(worker))
    };
    let payload_len = order_payload(0, 0).len();

    let echo = Arc::new(echo_load(clients.clone(), Bytes::from(vec![b' '; payload_len])));
    let transfer_clients = clients.clone();
    let transfer_run = run.clone();
    let transfer = Arc::new(move |worker: usize, sequence: u64| {
        let client = transfer_clients[worker % transfer_clients.len()].clone();
        let body = format!(
            r#"{{"from":"{}","to":"{}","amount":1,"id":"t-{transfer_run}-{worker}-{sequence}"}}"#,
            user(worker),
            user((worker + 1) % in_flight)
        );
        async move {
            client
                .request_bytes(subjects::bank::TRANSFER_SUBJECT, Bytes::from(body))
                .await
                .map(drop)
        }
    });
    let order_clients = clients.clone();
    // Each worker alternates buy and sell; sequences of one worker are consecutive.
    let order = Arc::new(move |worker: usize, sequence: u64| {
        let client = order_clients[worker % order_clients.len()].clone();
        let subject = if sequence.is_multiple_of(2) {
            subjects::coins::BUY_SUBJECT
        } else {
            subjects::coins::SELL_SUBJECT
        };
        let body = order_payload(worker, sequence * 1_000 + worker as u64);
        async move {
            let timeout = Duration::from_secs(30);
            client.request_bytes_within(subject, Bytes::from(body), timeout).await.map(drop)
        }
    });
    let duration = Duration::from_secs(options.seconds.max(1));
    let warmup = Duration::from_millis(300);
    sample(in_flight, warmup, echo.clone()).await?;
    sample(in_flight, warmup, transfer.clone()).await?;
    // Whole buy-sell pairs: a warm-up that ends after a buy leaves holdings, which is fine.
    sample(in_flight, warmup, order.clone()).await?;
    let slice = duration / SLICES;
    let (mut raw, mut bank, mut ours) = (Sample::new()?, Sample::new()?, Sample::new()?);
    // The CPU every process used while each side ran (see `cpu`).
    let processes = rig.processes();
    let mut used = [cpu::CpuTimes::default(), cpu::CpuTimes::default(), cpu::CpuTimes::default()];
    for _ in 0..SLICES {
        let mut at = processes.read();
        for (side, (into, spent)) in
            [&mut raw, &mut bank, &mut ours].into_iter().zip(&mut used).enumerate()
        {
            let load = match side {
                0 => sample(in_flight, slice, echo.clone()).await?,
                1 => sample(in_flight, slice, transfer.clone()).await?,
                _ => sample(in_flight, slice, order.clone()).await?,
            };
            into.merge(load)?;
            let now = processes.read();
            spent.add(&now.since(&at));
            at = now;
        }
    }
    let raw = raw.measurement(&format!("raw echo ({payload_len} B)"), in_flight);
    let bank = bank.measurement("bank.transfer", in_flight);
    let ours = ours.measurement("coins buy/sell", in_flight);
    print_header();
    print_row(&raw, None);
    print_row(&bank, Some(&raw));
    print_row(&ours, Some(&raw));
    println!(
        "\ncoins orders / bank transfers: {:.2}x  (an order is a linked pair in one ledger commit)",
        ours.ops_per_second / bank.ops_per_second
    );
    let wall = slice * SLICES;
    let sides: Vec<cpu::SideCpu> = [&raw, &bank, &ours]
        .into_iter()
        .zip(used)
        .map(|(side, used)| cpu::SideCpu {
            label: side.name.clone(),
            operations: side.operations,
            used,
            wall,
        })
        .collect();
    cpu::print(&sides);
    if ours.errors > 0 {
        println!("warning: {} orders failed", ours.errors);
    }
    rig.finish();
    Ok(vec![raw, bank, ours])
}
