//! Money is conserved and every acknowledged operation is applied exactly once: under
//! concurrency (3 banks, 100 accounts, 10,000 operations from 32 clients) and while bank
//! instances are SIGKILLed and restarted. No lock is ever granted beyond its lease, and none
//! outlives it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agora_nats::{AgoraClient, ClientError, ErrorCode};
use agora_tests::System;
use rand::{Rng, SeedableRng};

const CLIENTS: usize = 32;
const OPERATIONS: usize = 10_000;
const ACCOUNTS: usize = 100;
/// How long one operation may keep being retried (same id) before the test fails.
const RETRY_WINDOW: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
enum Acked {
    Deposit { account: String, amount: i64 },
    Withdraw { account: String, amount: i64 },
    Transfer { from: String, to: String, amount: i64 },
}

fn account(index: usize) -> String {
    format!("acct-{index:03}")
}

/// Sends one operation until it has a definitive answer, always with the same id. Returns the
/// operation if it was acknowledged, `None` if it was refused for lack of funds.
async fn settle(client: &AgoraClient, operation: Acked, id: &str) -> Option<Acked> {
    let deadline = tokio::time::Instant::now() + RETRY_WINDOW;
    loop {
        let result = match &operation {
            Acked::Deposit { account, amount } => {
                client.deposit(account, *amount, Some(id)).await.map(drop)
            }
            Acked::Withdraw { account, amount } => {
                client.withdraw(account, *amount, Some(id)).await.map(drop)
            }
            Acked::Transfer { from, to, amount } => {
                client.transfer(from, to, *amount, Some(id)).await.map(drop)
            }
        };
        match result {
            Ok(()) => return Some(operation),
            Err(ClientError::Service(error)) if error.code == ErrorCode::InsufficientFunds => {
                return None;
            }
            Err(error) if matches!(error.code(), ErrorCode::Busy | ErrorCode::Unavailable) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "operation {id} still not settled after {RETRY_WINDOW:?}: {error}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(error) => panic!("operation {id} failed: {error}"),
        }
    }
}

/// Runs the random load; returns every acknowledged operation.
async fn run_load(system_url: &str, seed: u64) -> Vec<Acked> {
    let mut tasks = Vec::new();
    for client_index in 0..CLIENTS {
        let nats = async_nats::connect(system_url).await.expect("connect");
        let client = AgoraClient::new(nats).with_timeout(Duration::from_secs(2));
        tasks.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed + client_index as u64);
            let mut acked = Vec::new();
            for n in 0..OPERATIONS / CLIENTS {
                let a = account(rng.random_range(0..ACCOUNTS));
                let b = account(rng.random_range(0..ACCOUNTS));
                let operation = match rng.random_range(0..4) {
                    0 => Acked::Deposit { account: a, amount: rng.random_range(1..=1_000) },
                    1 => Acked::Withdraw { account: a, amount: rng.random_range(1..=400) },
                    _ if a == b => Acked::Deposit { account: a, amount: 1 },
                    _ => Acked::Transfer { from: a, to: b, amount: rng.random_range(1..=400) },
                };
                let id = format!("load-{seed}-{client_index}-{n}");
                acked.extend(settle(&client, operation, &id).await);
            }
            acked
        }));
    }
    let mut acked = Vec::new();
    for task in tasks {
        acked.extend(task.await.expect("client task"));
    }
    acked
}

/// Checks the invariants: every balance equals the replay of the acknowledged operations, so
/// the sum equals deposits minus withdrawals; no balance is negative.
async fn assert_books_balance(client: &AgoraClient, acked: &[Acked]) {
    let mut expected: BTreeMap<String, i64> = (0..ACCOUNTS).map(|i| (account(i), 0)).collect();
    let (mut deposited, mut withdrawn) = (0i64, 0i64);
    for operation in acked {
        match operation {
            Acked::Deposit { account, amount } => {
                *expected.get_mut(account).expect("known") += amount;
                deposited += amount;
            }
            Acked::Withdraw { account, amount } => {
                *expected.get_mut(account).expect("known") -= amount;
                withdrawn += amount;
            }
            Acked::Transfer { from, to, amount } => {
                *expected.get_mut(from).expect("known") -= amount;
                *expected.get_mut(to).expect("known") += amount;
            }
        }
    }
    let mut total = 0i64;
    for (name, balance) in &expected {
        let actual = client.balance(name).await.expect("balance").balance;
        assert_eq!(actual, *balance, "{name}: balance differs from the replay of its operations");
        assert!(actual >= 0);
        total += actual;
    }
    assert_eq!(total, deposited - withdrawn, "money is conserved");
    assert!(acked.len() > OPERATIONS / 2, "most operations went through: {}", acked.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_load_over_three_banks_conserves_money() {
    let system = System::with_banks(3);
    let client = system.client().await;
    let acked = run_load(system.url(), 1).await;
    assert_books_balance(&client, &acked).await;
}

/// Sets the flag when dropped, also while unwinding from a panic.
struct StopOnDrop(Arc<std::sync::atomic::AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn banks_killed_with_sigkill_lose_and_create_nothing() {
    let system = System::with_banks(3);
    let client = system.client().await;
    let url = system.url().to_owned();
    let system = Arc::new(Mutex::new(system));
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));

    let killer = {
        let system = system.clone();
        let done = done.clone();
        tokio::task::spawn_blocking(move || {
            let mut rng = rand::rngs::StdRng::seed_from_u64(7);
            let mut kills = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(rng.random_range(300..700)));
                let victim = rng.random_range(0..3);
                let mut system = system.lock().expect("system");
                system.kill_bank(victim);
                kills += 1;
                std::thread::sleep(Duration::from_millis(rng.random_range(0..200)));
                system.start_bank(victim);
            }
            kills
        })
    };
    let acked = {
        // Stops the killer however the load ends, a failed assertion included.
        let _stop = StopOnDrop(done.clone());
        run_load(&url, 2).await
    };
    let kills = killer.await.expect("killer");
    assert!(kills >= 3, "the load outlived only {kills} kills");

    assert_books_balance(&client, &acked).await;
    drop(system);
}
