//! `agora bench bank --batch N,...`: transfers per second through `agora.bank.transfers` at
//! batch sizes N, each next to raw request-reply echo of the same payload at the same number
//! in flight, and next to SQLite's own ceiling measured in the same run: N rows per fsynced
//! transaction (WAL, `synchronous=FULL`, as the ledger commits).

use std::sync::Arc;
use std::time::{Duration, Instant};

use agora_nats::client::{AgoraClient, ClientError};
use agora_nats::subjects;
use bytes::Bytes;

use super::{Measurement, compare_metered, cpu, echo_load, print_row};

/// Requests in flight for batches of `size`: enough to keep the ledger busy, no more.
pub fn in_flight(size: usize) -> usize {
    (1024 / size.max(1)).clamp(2, 256)
}

/// `size` transfers among `accounts` accounts, each with its own id, as the JSON of one
/// `agora.bank.transfers` request.
fn batch_payload(size: usize, accounts: usize, prefix: &str, seed: u64) -> String {
    let mut text = String::with_capacity(size * 90 + 32);
    text.push_str(r#"{"operations":["#);
    for i in 0..size {
        let n = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(i as u64 * 7_919);
        let from = (n % accounts as u64) as usize;
        let to = (from + 1 + (n / 7 % (accounts as u64 - 1)) as usize) % accounts;
        if i > 0 {
            text.push(',');
        }
        text.push_str(&format!(
            r#"{{"from":"acct-{from:06}","to":"acct-{to:06}","amount":1,"id":"{prefix}-{seed}-{i}"}}"#
        ));
    }
    text.push_str("]}");
    text
}

/// The `failed` count of an `agora.bank.transfers` reply, read from its end (the reply's
/// results come first and are not decoded).
fn failed(reply: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(&reply[reply.len().saturating_sub(64)..]).ok()?;
    let start = text.rfind(r#""failed":"#)? + r#""failed":"#.len();
    text[start..].trim_end_matches('}').parse().ok()
}

/// N rows per fsynced transaction into a fresh SQLite database for `duration`: rows per
/// second.
fn sqlite_ceiling(size: usize, duration: Duration) -> anyhow::Result<f64> {
    let dir = tempfile::tempdir()?;
    let conn = rusqlite::Connection::open(dir.path().join("ceiling.db"))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.execute_batch(
        "CREATE TABLE entries (seq INTEGER PRIMARY KEY, account TEXT NOT NULL,
             amount INTEGER NOT NULL, id TEXT NOT NULL)",
    )?;
    let started = Instant::now();
    let mut rows = 0u64;
    while started.elapsed() < duration {
        let tx = conn.unchecked_transaction()?;
        {
            let mut insert =
                tx.prepare_cached("INSERT INTO entries (account, amount, id) VALUES (?1, 1, ?2)")?;
            for i in 0..size {
                insert.execute(rusqlite::params![
                    format!("acct-{:06}", i % 1000),
                    format!("{rows}-{i}")
                ])?;
            }
        }
        tx.commit()?;
        rows += size as u64;
    }
    Ok(rows as f64 / started.elapsed().as_secs_f64())
}

/// One row per batch size (see the module docs); `clients` are connected, the accounts
/// `acct-000000..` funded.
pub async fn rows(
    clients: Arc<Vec<AgoraClient>>,
    accounts: usize,
    sizes: &[usize],
    duration: Duration,
    processes: &cpu::Processes,
) -> anyhow::Result<Vec<Measurement>> {
    let mut rows = Vec::new();
    let mut sides = Vec::new();
    println!(
        "\n{:<28} {:>9} {:>12} {:>12} {:>16} {:>10}",
        "batch", "in-flight", "transfers/s", "x raw req/s", "sqlite rows/s", "x sqlite"
    );
    for &size in sizes {
        let in_flight = in_flight(size);
        let sample = batch_payload(size, accounts, "sample", 0);
        let echo = echo_load(clients.clone(), Bytes::from(sample.clone()));
        let bank_clients = clients.clone();
        let run = nuid::next().to_string();
        let operation = move |worker: usize, sequence: u64| {
            let client = bank_clients[worker % bank_clients.len()].clone();
            let payload = batch_payload(size, accounts, &format!("{run}-{worker}"), sequence);
            async move {
                let reply = client
                    .request_bytes(subjects::bank::TRANSFERS_SUBJECT, Bytes::from(payload))
                    .await?;
                match failed(&reply) {
                    Some(0) => Ok(()),
                    other => Err(ClientError::Transport(format!("{other:?} operations failed"))),
                }
            }
        };
        let (raw, ours, [raw_cpu, ours_cpu]) =
            compare_metered(in_flight, duration, echo, operation, Some(processes)).await?;
        let raw = raw.measurement(&format!("raw echo ({} B)", sample.len()), in_flight);
        let ours = ours.measurement(&format!("bank.transfers x{size}"), in_flight);
        let wall = duration / super::SLICES * super::SLICES;
        sides.push(cpu::SideCpu {
            label: format!("raw echo x{size} (request)"),
            operations: raw.operations,
            used: raw_cpu,
            wall,
        });
        sides.push(cpu::SideCpu {
            label: format!("x{size} (per transfer)"),
            operations: ours.operations * size as u64,
            used: ours_cpu,
            wall,
        });
        let ceiling = tokio::task::spawn_blocking(move || sqlite_ceiling(size, duration)).await??;
        let transfers = ours.ops_per_second * size as f64;
        println!(
            "{:<28} {:>9} {:>12.0} {:>11.2}x {:>16.0} {:>9.2}x",
            ours.name,
            in_flight,
            transfers,
            ours.ops_per_second / raw.ops_per_second,
            ceiling,
            transfers / ceiling
        );
        print_row(&raw, None);
        print_row(&ours, Some(&raw));
        rows.push(raw);
        rows.push(ours);
    }
    cpu::print(&sides);
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_are_valid_requests_of_distinct_accounts_and_ids() {
        let payload = batch_payload(50, 7, "p", 3);
        let request: agora_nats::bank::wire::TransfersRequest =
            serde_json::from_str(&payload).expect("a transfers request");
        assert_eq!(request.operations.len(), 50);
        for operation in &request.operations {
            assert_ne!(operation.from, operation.to);
            operation.to_request().expect("valid");
        }
        let ids: std::collections::BTreeSet<_> =
            request.operations.iter().map(|o| o.id.clone()).collect();
        assert_eq!(ids.len(), 50);
        assert_eq!(failed(br#"{"results":[],"applied":3,"failed":12}"#), Some(12));
        assert_eq!(in_flight(1), 256);
        assert_eq!(in_flight(8190), 2);
    }
}
