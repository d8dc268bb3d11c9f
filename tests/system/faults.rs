//! How the bank behaves when its dependencies misbehave: the ledger is down, accounts are
//! held by another owner, the queue is full. Every request gets a coded answer; nothing hangs.

use std::time::{Duration, Instant};

use agora_core::AccountId;
use agora_nats::ErrorCode;
use agora_nats::ledger::wire::{LockGrant, LockRequest};
use agora_nats::subjects::ledger as ledger_subject;
use agora_tests::{System, code};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledger_down_means_unavailable_and_service_resumes_when_it_returns() {
    let mut system = System::with_banks(1);
    let client = system.client().await;
    client.deposit("ivan", 100, Some("before")).await.expect("ledger up");

    system.kill_ledger();
    let started = Instant::now();
    assert_eq!(code(client.deposit("ivan", 5, Some("during")).await), ErrorCode::Unavailable);
    assert_eq!(code(client.balance("ivan").await), ErrorCode::Unavailable);
    assert!(started.elapsed() < Duration::from_secs(3), "answers within the ledger timeout");

    system.start_ledger();
    // The operation with an unknown outcome is retried with its id and applied once.
    assert_eq!(client.deposit("ivan", 5, Some("during")).await.expect("ledger back").balance, 105);
    assert_eq!(client.deposit("ivan", 5, Some("during")).await.expect("retry").balance, 105);
    assert_eq!(client.balance("ivan").await.expect("balance").balance, 105);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_wait_for_another_owners_lease_then_proceed() {
    let system = System::with_banks(1);
    let client = system.client().await;
    client.deposit("judy", 50, None).await.expect("seed");
    let lease_ms = 800;
    let account = AccountId::parse("judy").expect("valid");
    let request = LockRequest { owner: "crashed-bank".into(), lease_ms };
    let _: LockGrant =
        client.request(&ledger_subject::lock(&account), &request).await.expect("lock");

    let started = Instant::now();
    let (deposit, balance) = tokio::join!(client.deposit("judy", 10, None), client.balance("judy"));
    assert_eq!(deposit.expect("waited for the lease").balance, 60);
    let balance = balance.expect("waited for the lease").balance;
    assert!(balance == 50 || balance == 60, "a committed balance: {balance}");
    assert!(
        started.elapsed() >= Duration::from_millis(lease_ms - 100),
        "the bank must not write through another owner's lease"
    );
    // Other accounts were never blocked.
    assert_eq!(client.deposit("kim", 1, None).await.expect("unblocked").balance, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_longer_than_the_wait_gives_busy_and_changes_nothing() {
    let system = System::with_banks(1);
    let client = system.client().await.with_timeout(Duration::from_secs(15));
    client.deposit("lara", 50, None).await.expect("seed");
    let account = AccountId::parse("lara").expect("valid");
    // Longer than the test banks' --lock-wait-ms (8 s).
    let request = LockRequest { owner: "stuck-bank".into(), lease_ms: 12_000 };
    let _: LockGrant =
        client.request(&ledger_subject::lock(&account), &request).await.expect("lock");

    assert_eq!(code(client.withdraw("lara", 10, Some("w-1")).await), ErrorCode::Busy);
    tokio::time::sleep(Duration::from_millis(4_500)).await;
    assert_eq!(client.withdraw("lara", 10, Some("w-1")).await.expect("lease over").balance, 40);
}
