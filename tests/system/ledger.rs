//! The ledger's lock semantics, batch operations, durability and bad input.

use std::time::Duration;

use agora_core::AccountId;
use agora_nats::bank::wire::AccountBalance;
use agora_nats::ledger::wire::{
    BatchCommitReply, BatchCommitRequest, BatchLockReply, BatchLockRequest, GetRequest, LockGrant,
    LockRequest, LocksReply, LocksRequest, Release, SetRequest, UnlockReply, UnlockRequest, Write,
};
use agora_nats::subjects::ledger as subject;
use agora_nats::{AgoraClient, ClientError, ErrorCode};
use agora_tests::{System, code};

fn id(name: &str) -> AccountId {
    AccountId::parse(name).expect("valid")
}

async fn lock(
    client: &AgoraClient,
    account: &str,
    owner: &str,
    lease_ms: u64,
) -> Result<LockGrant, ClientError> {
    let request = LockRequest { owner: owner.into(), lease_ms };
    client.request(&subject::lock(&id(account)), &request).await
}

async fn get(
    client: &AgoraClient,
    account: &str,
    owner: Option<&str>,
) -> Result<AccountBalance, ClientError> {
    let request = GetRequest { owner: owner.map(str::to_owned) };
    client.request(&subject::get(&id(account)), &request).await
}

async fn set(
    client: &AgoraClient,
    account: &str,
    owner: &str,
    token: u64,
    balance: i64,
) -> Result<AccountBalance, ClientError> {
    let request = SetRequest { owner: owner.into(), token, balance, release: false };
    client.request(&subject::set(&id(account)), &request).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_semantics_leases_fencing_reads_and_ownership() {
    let system = System::start();
    let client = system.client().await;

    let first = lock(&client, "alice", "owner-a", 400).await.expect("free account");
    assert_eq!(first.balance, 0, "an account never seen has balance 0");
    assert_eq!(get(&client, "alice", Some("owner-a")).await.expect("owner reads").balance, 0);
    assert_eq!(code(get(&client, "alice", Some("owner-b")).await), ErrorCode::Locked);
    assert_eq!(code(get(&client, "alice", None).await), ErrorCode::Locked);
    assert_eq!(code(lock(&client, "alice", "owner-b", 400).await), ErrorCode::Locked);

    let unlock_by_other = UnlockRequest { owner: "owner-b".into(), token: first.token };
    let refused: Result<UnlockReply, _> =
        client.request(&subject::unlock(&id("alice")), &unlock_by_other).await;
    assert_eq!(code(refused), ErrorCode::NotOwner);

    assert_eq!(
        set(&client, "alice", "owner-a", first.token, 100).await.expect("holder").balance,
        100
    );
    assert_eq!(
        code(set(&client, "alice", "owner-a", first.token + 1, 7).await),
        ErrorCode::StaleToken
    );
    assert_eq!(code(set(&client, "alice", "owner-b", first.token, 7).await), ErrorCode::StaleToken);

    let renewed = lock(&client, "alice", "owner-a", 400).await.expect("renewal");
    assert_eq!(renewed.token, first.token, "a renewal keeps the token");
    assert!(renewed.expires_at_ms >= first.expires_at_ms);

    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        code(set(&client, "alice", "owner-a", first.token, 999).await),
        ErrorCode::StaleToken,
        "a write after the lease expired is refused"
    );
    assert_eq!(get(&client, "alice", Some("owner-b")).await.expect("expired").balance, 100);

    let second = lock(&client, "alice", "owner-b", 400).await.expect("expired lease");
    assert!(second.token > first.token, "fencing tokens increase per account");
    let unlock = UnlockRequest { owner: "owner-b".into(), token: second.token };
    let released: UnlockReply =
        client.request(&subject::unlock(&id("alice")), &unlock).await.expect("owner unlocks");
    assert!(released.released);
    assert_eq!(get(&client, "alice", None).await.expect("unlocked").balance, 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_lock_is_all_or_nothing_and_commit_is_atomic() {
    let system = System::start();
    let client = system.client().await;
    let batch_lock = |owner: &str, accounts: &[&str]| BatchLockRequest {
        owner: owner.into(),
        accounts: accounts.iter().map(|a| a.to_string()).collect(),
        lease_ms: 5_000,
        ids: vec!["op-1".into()],
    };
    let held: BatchLockReply = client
        .request(subject::BATCH_LOCK_SUBJECT, &batch_lock("owner-a", &["a", "b"]))
        .await
        .expect("free accounts");
    assert_eq!(held.locks.len(), 2);
    assert!(held.operations.is_empty(), "op-1 was never recorded");

    let refused = client
        .request::<_, BatchLockReply>(
            subject::BATCH_LOCK_SUBJECT,
            &batch_lock("owner-b", &["b", "c"]),
        )
        .await
        .expect_err("b is held");
    let ClientError::Service(error) = refused else { panic!("a coded error") };
    assert_eq!(error.code, ErrorCode::Locked);
    assert_eq!(error.accounts, vec!["b".to_string()], "names the conflicting accounts");
    lock(&client, "c", "owner-c", 5_000).await.expect("nothing was taken by the refused request");

    let (a, b) = (&held.locks[0], &held.locks[1]);
    let commit = |b_token: u64| BatchCommitRequest {
        owner: "owner-a".into(),
        writes: vec![
            Write { account: "a".into(), token: a.token, balance: 70 },
            Write { account: "b".into(), token: b_token, balance: 30 },
        ],
        operations: vec![agora_nats::ledger::wire::OperationEntry {
            id: "op-1".into(),
            record: serde_json::value::to_raw_value(&serde_json::json!({"note": 1})).expect("json"),
        }],
        release: vec![
            Release { account: "a".into(), token: a.token },
            Release { account: "b".into(), token: b_token },
        ],
        events: vec![],
    };
    let stale = client
        .request::<_, BatchCommitReply>(subject::BATCH_COMMIT_SUBJECT, &commit(b.token + 99))
        .await;
    assert_eq!(code(stale), ErrorCode::StaleToken);
    assert_eq!(
        get(&client, "a", Some("owner-a")).await.expect("read").balance,
        0,
        "nothing written"
    );

    let done: BatchCommitReply =
        client.request(subject::BATCH_COMMIT_SUBJECT, &commit(b.token)).await.expect("commit");
    assert_eq!((done.written, done.recorded, done.released), (2, 1, 2));
    assert_eq!(get(&client, "a", None).await.expect("released").balance, 70);
    assert_eq!(get(&client, "b", None).await.expect("released").balance, 30);

    let again: BatchLockReply = client
        .request(subject::BATCH_LOCK_SUBJECT, &batch_lock("owner-a", &["a"]))
        .await
        .expect("free again");
    assert_eq!(again.operations.len(), 1, "the recorded id is found");
    assert_eq!(again.operations[0].record.get(), r#"{"note":1}"#);
    let duplicate = BatchCommitRequest {
        owner: "owner-a".into(),
        writes: vec![],
        operations: commit(0).operations,
        release: vec![],
        events: vec![],
    };
    let refused =
        client.request::<_, BatchCommitReply>(subject::BATCH_COMMIT_SUBJECT, &duplicate).await;
    assert_eq!(code(refused), ErrorCode::DuplicateId);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledger_restart_keeps_balances_drops_leases_and_tokens_keep_increasing() {
    let mut system = System::start();
    let client = system.client().await;
    let grant = lock(&client, "kept", "owner-a", 30_000).await.expect("free");
    set(&client, "kept", "owner-a", grant.token, 1234).await.expect("holder writes");
    let other = lock(&client, "other", "owner-a", 30_000).await.expect("free");

    // A new active ledger (here: the same one restarted) starts a new fencing epoch without
    // leases: locks are leases, not replicated (docs/replication.md).
    system.kill_ledger();
    system.start_ledger();

    assert_eq!(get(&client, "kept", Some("owner-b")).await.expect("no lease").balance, 1234);
    assert_eq!(
        code(set(&client, "kept", "owner-a", grant.token, 1300).await),
        ErrorCode::StaleToken,
        "a token of an earlier term writes nothing"
    );
    let again = lock(&client, "kept", "owner-a", 30_000).await.expect("free again");
    assert!(again.token > other.token, "tokens keep increasing across restarts");
    set(&client, "kept", "owner-a", again.token, 1300).await.expect("the new token writes");
    let unlock = UnlockRequest { owner: "owner-a".into(), token: again.token };
    let _: UnlockReply =
        client.request(&subject::unlock(&id("kept")), &unlock).await.expect("unlock");
    assert_eq!(get(&client, "kept", None).await.expect("read").balance, 1300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledger_bad_inputs_get_invalid_request_and_it_keeps_serving() {
    let system = System::start();
    let client = system.client().await;
    let long_owner = format!(r#"{{"owner":"{}","lease_ms":100}}"#, "o".repeat(200));
    let cases: Vec<(String, String)> = vec![
        ("agora.ledger.lock.alice".into(), "not json".into()),
        ("agora.ledger.lock.alice".into(), "".into()),
        ("agora.ledger.lock.alice".into(), r#"{"owner":"a"}"#.into()),
        ("agora.ledger.lock.alice".into(), r#"{"owner":"a","lease_ms":0}"#.into()),
        ("agora.ledger.lock.alice".into(), r#"{"owner":"a","lease_ms":600000}"#.into()),
        ("agora.ledger.lock.alice".into(), r#"{"owner":"","lease_ms":100}"#.into()),
        ("agora.ledger.lock.alice".into(), long_owner),
        ("agora.ledger.lock.alice".into(), r#"{"owner":"a","lease_ms":100,"x":1}"#.into()),
        ("agora.ledger.lock.al!ce".into(), r#"{"owner":"a","lease_ms":100}"#.into()),
        ("agora.ledger.set.alice".into(), r#"{"owner":"a","token":1,"balance":-5}"#.into()),
        ("agora.ledger.get.alice".into(), r#"{"owner":5}"#.into()),
        (
            "agora.ledger.batch.lock".into(),
            r#"{"owner":"a","accounts":["b","a"],"lease_ms":100}"#.into(),
        ),
        ("agora.ledger.batch.lock".into(), r#"{"owner":"a","accounts":[],"lease_ms":100}"#.into()),
        (
            "agora.ledger.batch.lock".into(),
            r#"{"owner":"a","accounts":["a","a"],"lease_ms":100}"#.into(),
        ),
        ("agora.ledger.batch.get".into(), r#"{"accounts":[]}"#.into()),
        ("agora.ledger.batch.get".into(), r#"{"accounts":["bad name"]}"#.into()),
        (
            "agora.ledger.batch.commit".into(),
            r#"{"owner":"a","writes":[{"account":"x","token":1,"balance":-1}]}"#.into(),
        ),
        (
            "agora.ledger.batch.commit".into(),
            r#"{"owner":"a","operations":[{"id":"has space","record":{}}]}"#.into(),
        ),
        ("agora.ledger.locks".into(), r#"{"limit":"many"}"#.into()),
    ];
    for (subject, payload) in cases {
        let reply = client.request_bytes(&subject, payload.clone().into()).await;
        assert_eq!(code(reply), ErrorCode::InvalidRequest, "{subject} {payload}");
    }
    let grant = lock(&client, "alice", "owner-a", 1_000).await.expect("still serving");
    assert!(grant.token > 0);
    let locks: LocksReply =
        client.request(subject::LOCKS_SUBJECT, &LocksRequest::default()).await.expect("locks");
    assert_eq!(locks.total, 1);
    assert_eq!(locks.locks[0].account, "alice");
}
