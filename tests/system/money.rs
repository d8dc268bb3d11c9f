//! The ledger's operations through the bank: batches with a result per operation, linked
//! chains, two-phase transfers (hold, post, void, expiry across a failover), assets, history
//! and past balances; bad input of every kind refused with a code and nothing half-applied;
//! people moving only their own money.

use std::time::Duration;

use agora_nats::bank::wire::{BalanceRequest, HistoryRequest, OperationRequest, TransfersRequest};
use agora_nats::ledger::wire::{ApplyReply, OperationResult};
use agora_nats::{AgoraClient, ClientError, ErrorCode};
use agora_tests::{System, code, eventually};
use serde_json::{Value, json};

fn ops(values: Value) -> Vec<OperationRequest> {
    serde_json::from_value(values).expect("operations of the documented shape")
}

async fn apply(client: &AgoraClient, operations: Value) -> Result<ApplyReply, ClientError> {
    client.transfers(&TransfersRequest { operations: ops(operations), detail: false }).await
}

fn codes(reply: &ApplyReply) -> Vec<Option<ErrorCode>> {
    reply
        .results
        .iter()
        .map(|result| match result {
            OperationResult::Applied { .. } => None,
            OperationResult::Failed { error } => Some(error.code),
        })
        .collect()
}

/// `apply`, retried with the same operations while the outcome is unknown (a failover).
async fn settled(client: &AgoraClient, operations: Value) -> ApplyReply {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        match apply(client, operations.clone()).await {
            Ok(reply) => return reply,
            Err(error) if matches!(error.code(), ErrorCode::Unavailable | ErrorCode::Busy) => {
                assert!(std::time::Instant::now() < deadline, "not settled: {error}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => panic!("{error}"),
        }
    }
}

async fn balance_in(client: &AgoraClient, account: &str, asset: Option<&str>) -> (i64, i64, i64) {
    let request =
        BalanceRequest { account: account.into(), asset: asset.map(str::to_owned), at_ms: None };
    let reply = client.balance_of(&request).await.expect("balance");
    (reply.balance, reply.pending, reply.available)
}

async fn posted(client: &AgoraClient, account: &str) -> i64 {
    balance_in(client, account, None).await.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_answer_each_operation_and_bad_batches_change_nothing() {
    let system = System::with_banks(1);
    let bank = system.client().await;
    let accounts: Vec<String> = (0..50).map(|i| format!("acct-{i:02}")).collect();
    let seed: Vec<Value> =
        accounts.iter().map(|a| json!({"op":"deposit","account":a,"amount":1_000_000})).collect();
    let seeded = apply(&bank, Value::Array(seed)).await.expect("seeded");
    assert_eq!((seeded.applied, seeded.failed), (50, 0));

    // The largest batch: 8,190 transfers with ids, one result each, money conserved.
    let full: Vec<Value> = (0..8_190)
        .map(|i| {
            json!({"from": accounts[i % 50], "to": accounts[(i * 7 + 1) % 50], "amount": 1 + i % 5,
                   "id": format!("full-{i}")})
        })
        .map(|mut op| {
            if op["from"] == op["to"] {
                op["to"] = json!("sink");
            }
            op
        })
        .collect();
    let reply = apply(&bank, Value::Array(full.clone())).await.expect("a full batch");
    assert_eq!((reply.results.len(), reply.applied, reply.failed), (8_190, 8_190, 0));
    let mut total = posted(&bank, "sink").await;
    for account in &accounts {
        total += posted(&bank, account).await;
    }
    assert_eq!(total, 50 * 1_000_000, "transfers move money, never make or lose it");
    // The same batch again: every id answered from its record, nothing applied twice.
    let again = apply(&bank, Value::Array(full)).await.expect("retried");
    assert_eq!((again.applied, again.failed), (8_190, 0));
    assert_eq!(
        posted(&bank, "sink").await + {
            let mut sum = 0;
            for account in &accounts {
                sum += posted(&bank, account).await;
            }
            sum
        },
        50 * 1_000_000
    );
    let before = posted(&bank, "acct-00").await;

    // A per-operation refusal does not stop the others.
    let mixed = apply(
        &bank,
        json!([
            {"from":"acct-00","to":"acct-01","amount":1},
            {"from":"acct-00","to":"acct-01","amount":999_999_999},
            {"op":"withdraw","account":"acct-00","amount":1},
            {"op":"post","pending_id":"never-held"},
        ]),
    )
    .await
    .expect("mixed");
    assert_eq!(
        codes(&mixed),
        vec![None, Some(ErrorCode::InsufficientFunds), None, Some(ErrorCode::NotFound)]
    );
    assert_eq!(posted(&bank, "acct-00").await, before - 2);

    // Bad batches: refused whole, with invalid_request, and nothing of them applied.
    let one = json!({"from":"acct-00","to":"acct-01","amount":1});
    let too_many = Value::Array(vec![one.clone(); 8_191]);
    let bad_batches = [
        json!([]),
        too_many,
        json!([{"from":"acct-00","to":"acct-01","amount":1,"linked":true}]),
        json!([one.clone(), {"from":"acct-00","to":"acct 01","amount":1}]),
        json!([one.clone(), {"from":"acct-00","to":"acct-00","amount":1}]),
        json!([one.clone(), {"from":"acct-00","to":"acct-01","amount":0}]),
        json!([one.clone(), {"op":"deposit","from":"acct-00","amount":1}]),
        json!([one.clone(), {"op":"pending","from":"acct-00","to":"acct-01","amount":1,"timeout_ms":5000}]),
        json!([one.clone(), {"op":"pending","from":"acct-00","to":"acct-01","amount":1,"timeout_ms":0,"id":"h0"}]),
        json!([one.clone(), {"op":"pending","from":"acct-00","to":"acct-01","amount":1,"timeout_ms":31_536_000_000u64,"id":"h1"}]),
        json!([one.clone(), {"op":"void","pending_id":"x","amount":3}]),
        json!([one.clone(), {"op":"post"}]),
        json!([one.clone(), {"from":"acct-00","to":"acct-01","amount":1,"asset":"btc"}]),
        json!([one.clone(), {"op":"steal","from":"acct-00","to":"acct-01","amount":1}]),
        json!([one.clone(), {"from":"acct-00","to":"acct-01","amount":1,"scope":"mallory"}]),
    ];
    for batch in bad_batches {
        let request = json!({"operations": batch});
        let refused = bank
            .request::<_, ApplyReply>(agora_nats::subjects::bank::TRANSFERS_SUBJECT, &request)
            .await;
        assert_eq!(
            code(refused),
            ErrorCode::InvalidRequest,
            "{}",
            request.to_string().chars().take(200).collect::<String>()
        );
    }
    for shape in [json!([]), json!("x"), json!({"operations":[one.clone()],"extra":1}), json!({})] {
        let refused = bank
            .request::<_, ApplyReply>(agora_nats::subjects::bank::TRANSFERS_SUBJECT, &shape)
            .await;
        assert_eq!(code(refused), ErrorCode::InvalidRequest, "{shape}");
    }
    assert_eq!(posted(&bank, "acct-00").await, before - 2, "no bad batch applied anything");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linked_chains_move_money_and_units_together_or_not_at_all() {
    let system = System::with_banks(1);
    let bank = system.client().await;
    apply(
        &bank,
        json!([
            {"op":"deposit","account":"buyer","amount":1_000},
            {"op":"deposit","account":"exchange","asset":"BTC","amount":5},
        ]),
    )
    .await
    .expect("funded");
    // Units short: the money leg is undone, every leg gets its code.
    let short = apply(
        &bank,
        json!([
            {"from":"buyer","to":"exchange","amount":600,"linked":true,"id":"buy-1-money"},
            {"from":"exchange","to":"buyer","asset":"BTC","amount":6,"linked":true,"id":"buy-1-units"},
            {"op":"deposit","account":"buyer","amount":1,"id":"buy-1-fee"},
            {"op":"deposit","account":"other","amount":7},
        ]),
    )
    .await
    .expect("answered");
    assert_eq!(
        codes(&short),
        vec![
            Some(ErrorCode::LinkedFailed),
            Some(ErrorCode::InsufficientFunds),
            Some(ErrorCode::LinkedFailed),
            None
        ]
    );
    assert_eq!(balance_in(&bank, "buyer", None).await.0, 1_000);
    assert_eq!(balance_in(&bank, "exchange", Some("BTC")).await.0, 5);
    assert_eq!(posted(&bank, "other").await, 7, "an operation after the chain stands alone");
    // The same ids, now possible: applied together, and once however often retried.
    let trade = json!([
        {"from":"buyer","to":"exchange","amount":600,"linked":true,"id":"buy-1-money"},
        {"from":"exchange","to":"buyer","asset":"BTC","amount":5,"id":"buy-1-units"},
    ]);
    for _ in 0..3 {
        let done = apply(&bank, trade.clone()).await.expect("trade");
        assert_eq!(codes(&done), vec![None, None]);
    }
    assert_eq!(balance_in(&bank, "buyer", None).await.0, 400);
    assert_eq!(balance_in(&bank, "buyer", Some("BTC")).await.0, 5);
    assert_eq!(balance_in(&bank, "exchange", None).await.0, 600);
    assert_eq!(balance_in(&bank, "exchange", Some("BTC")).await.0, 0);
    // A chain partly applied before (its first leg's id, same operation) adds nothing now.
    let partly = apply(
        &bank,
        json!([
            {"from":"buyer","to":"exchange","amount":600,"linked":true,"id":"buy-1-money"},
            {"op":"deposit","account":"buyer","amount":5,"id":"buy-1-bonus"},
        ]),
    )
    .await
    .expect("answered");
    assert_eq!(codes(&partly), vec![None, Some(ErrorCode::LinkedFailed)]);
    assert_eq!(balance_in(&bank, "buyer", None).await.0, 400, "the bonus leg was not applied");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_phase_transfers_finish_once_and_expire_once_across_a_failover() {
    let mut system = System::with_banks(1);
    let bank = system.client().await;
    bank.deposit("payer", 1_000, None).await.expect("funded");
    let hold = |id: &str, amount: i64, timeout_ms: u64| {
        json!([{"op":"pending","from":"payer","to":"payee","amount":amount,
                "timeout_ms":timeout_ms,"id":id}])
    };
    assert_eq!(codes(&apply(&bank, hold("h1", 300, 60_000)).await.unwrap()), vec![None]);
    assert_eq!(balance_in(&bank, "payer", None).await, (1_000, 300, 700));
    let payee = bank.balance("payee").await.expect("payee");
    assert_eq!((payee.balance, payee.incoming), (0, 300));
    // Held money is not spent twice.
    assert_eq!(code(bank.withdraw("payer", 701, None).await), ErrorCode::InsufficientFunds);
    let post = |id: &str, amount: Option<i64>| match amount {
        Some(amount) => json!([{"op":"post","pending_id":id,"amount":amount}]),
        None => json!([{"op":"post","pending_id":id}]),
    };
    let void = |id: &str| json!([{"op":"void","pending_id":id}]);
    assert_eq!(
        codes(&apply(&bank, post("h1", Some(301))).await.unwrap()),
        vec![Some(ErrorCode::ExceedsPending)]
    );
    assert_eq!(codes(&apply(&bank, post("h1", Some(120))).await.unwrap()), vec![None]);
    assert_eq!(balance_in(&bank, "payer", None).await, (880, 0, 880), "the rest released");
    assert_eq!(posted(&bank, "payee").await, 120);
    assert_eq!(
        codes(&apply(&bank, post("h1", None)).await.unwrap()),
        vec![Some(ErrorCode::PendingPosted)]
    );
    assert_eq!(
        codes(&apply(&bank, void("h1")).await.unwrap()),
        vec![Some(ErrorCode::PendingPosted)]
    );
    assert_eq!(codes(&apply(&bank, hold("h2", 80, 60_000)).await.unwrap()), vec![None]);
    assert_eq!(codes(&apply(&bank, void("h2")).await.unwrap()), vec![None]);
    assert_eq!(
        codes(&apply(&bank, post("h2", None)).await.unwrap()),
        vec![Some(ErrorCode::PendingVoided)]
    );
    assert_eq!(
        codes(&apply(&bank, hold("h2", 1, 60_000)).await.unwrap()),
        vec![Some(ErrorCode::InvalidRequest)],
        "an id holds once"
    );
    assert_eq!(balance_in(&bank, "payer", None).await, (880, 0, 880));

    // A hold that runs out while the active ledger is killed: the standby releases it, once.
    let _standby = system.start_standby("ledger", "ledger-b", &[]);
    assert_eq!(codes(&apply(&bank, hold("h3", 500, 3_000)).await.unwrap()), vec![None]);
    assert_eq!(balance_in(&bank, "payer", None).await, (880, 500, 380));
    system.kill_ledger();
    let released = eventually(Duration::from_secs(30), Duration::from_millis(200), async || {
        match bank.balance("payer").await {
            Ok(reply) if reply.pending == 0 => Ok(reply),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert_eq!((released.balance, released.available), (880, 880));
    assert_eq!(
        codes(&settled(&bank, post("h3", None)).await),
        vec![Some(ErrorCode::PendingExpired)]
    );
    let history = bank
        .history(&HistoryRequest { account: "payer".into(), ..HistoryRequest::default() })
        .await
        .expect("history");
    let expiries: Vec<_> = history.entries.iter().filter(|e| e.kind == "expire_out").collect();
    assert_eq!(expiries.len(), 1, "released exactly once: {:?}", history.entries);
    assert_eq!(expiries[0].amount, 500);
    let kinds: Vec<&str> = history.entries.iter().rev().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        vec![
            "deposit",
            "pending_out",
            "post_out",
            "pending_out",
            "void_out",
            "pending_out",
            "expire_out"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_pages_filters_by_time_and_answers_past_balances() {
    let system = System::with_banks(1);
    let bank = system.client().await;
    let mut times = Vec::new();
    for i in 1..=5 {
        bank.deposit("saver", i * 100, Some(&format!("d-{i}"))).await.expect("deposit");
        times.push(agora_nats::clock::now_ms());
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let page = |before: Option<u64>, from_ms: Option<u64>, to_ms: Option<u64>| HistoryRequest {
        account: "saver".into(),
        limit: Some(2),
        before,
        from_ms,
        to_ms,
        ..HistoryRequest::default()
    };
    let first = bank.history(&page(None, None, None)).await.expect("page 1");
    assert!(first.more);
    assert_eq!(first.entries.iter().map(|e| e.balance).collect::<Vec<_>>(), vec![1_500, 1_000]);
    assert_eq!(first.entries[0].id.as_deref(), Some("d-5"));
    let second = bank.history(&page(Some(first.entries[1].seq), None, None)).await.expect("2");
    assert_eq!(second.entries.iter().map(|e| e.amount).collect::<Vec<_>>(), vec![300, 200]);
    let last = bank.history(&page(Some(second.entries[1].seq), None, None)).await.expect("3");
    assert_eq!((last.entries.len(), last.more), (1, false));
    // Between the second and the fourth deposit.
    let window =
        HistoryRequest { limit: Some(100), ..page(None, Some(times[1] + 1), Some(times[3] + 1)) };
    let window = bank.history(&window).await.expect("window");
    assert!(window.entries.iter().all(|e| e.at > times[1] && e.at <= times[3] + 1));
    assert!(window.entries.iter().any(|e| e.amount == 400));
    for (i, at) in times.iter().enumerate() {
        let then = BalanceRequest { account: "saver".into(), asset: None, at_ms: Some(*at) };
        let reply = bank.balance_of(&then).await.expect("then");
        let expected: i64 = (1..=i as i64 + 1).map(|k| k * 100).sum();
        assert_eq!(reply.balance, expected, "balance at {at}");
    }
    let before_all = BalanceRequest { account: "saver".into(), asset: None, at_ms: Some(1) };
    assert_eq!(bank.balance_of(&before_all).await.expect("long ago").balance, 0);
    for bad in [
        HistoryRequest { limit: Some(0), ..page(None, None, None) },
        HistoryRequest { limit: Some(1_001), ..page(None, None, None) },
        page(None, Some(10), Some(10)),
        HistoryRequest { account: "no one".into(), ..page(None, None, None) },
        HistoryRequest { asset: Some("usd".into()), ..page(None, None, None) },
    ] {
        assert_eq!(code(bank.history(&bad).await), ErrorCode::InvalidRequest, "{bad:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_moves_and_reads_only_their_own_money_in_every_operation() {
    let mut system = System::nats_with_auth();
    system.start_ledger();
    system.add_bank();
    let (alice, bob) = (system.person("alice").await, system.person("bob").await);
    bob.deposit("bob", 1_000, None).await.expect("bob's own");
    alice.deposit("alice", 100, None).await.expect("alice's own");
    let held = apply(
        &bob,
        json!([{"op":"pending","from":"bob","to":"alice","amount":50,"timeout_ms":60_000,"id":"hold"}]),
    )
    .await
    .expect("bob holds");
    assert_eq!(codes(&held), vec![None]);
    // Alice tries every operation on bob's money: each refused, and the batch with it.
    let attempts = [
        json!([{"from":"bob","to":"alice","amount":1}]),
        json!([{"from":"alice","to":"bob","amount":1}, {"from":"bob","to":"alice","amount":1}]),
        json!([{"op":"withdraw","account":"bob","amount":1}]),
        json!([{"op":"deposit","account":"bob","amount":1}]),
        json!([{"op":"pending","from":"bob","to":"alice","amount":1,"timeout_ms":5000,"id":"x"}]),
        json!([{"op":"deposit","account":"alice","asset":"BTC","amount":1}]),
    ];
    for attempt in attempts {
        let refused = apply(&alice, attempt.clone()).await;
        assert_eq!(code(refused), ErrorCode::Forbidden, "{attempt}");
    }
    // Bob's hold is his: alice naming it finds nothing of hers.
    for finish in
        [json!([{"op":"post","pending_id":"hold"}]), json!([{"op":"void","pending_id":"hold"}])]
    {
        let reply = apply(&alice, finish).await.expect("answered");
        assert_eq!(codes(&reply), vec![Some(ErrorCode::NotFound)]);
    }
    assert_eq!(balance_in(&bob, "bob", None).await, (1_000, 50, 950));
    assert_eq!(posted(&alice, "alice").await, 100);
    let peek = HistoryRequest { account: "bob".into(), ..HistoryRequest::default() };
    assert_eq!(code(alice.history(&peek).await), ErrorCode::Forbidden);
    let past = BalanceRequest { account: "bob".into(), asset: None, at_ms: Some(1) };
    assert_eq!(code(alice.balance_of(&past).await), ErrorCode::Forbidden);
    // Bob posts his own hold.
    let posted_hold = apply(&bob, json!([{"op":"post","pending_id":"hold"}])).await.expect("his");
    assert_eq!(codes(&posted_hold), vec![None]);
    assert_eq!(balance_in(&alice, "alice", None).await.0, 150);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ledger_answers_every_balance_of_an_account_who_holds_an_asset_and_records_by_id() {
    use agora_nats::ledger::wire::{OperationRecord, SupplyRequest};
    let system = System::with_banks(1);
    let bank = system.client().await;
    apply(
        &bank,
        json!([
            {"op":"deposit","account":"desk","amount":900},
            {"op":"deposit","account":"desk","asset":"ETH","amount":10},
            {"op":"deposit","account":"desk","asset":"BTC","amount":3},
            {"from":"desk","to":"ann","asset":"BTC","amount":1,"id":"gift-1"},
            {"op":"pending","from":"desk","to":"ben","asset":"BTC","amount":1,"timeout_ms":60_000,"id":"hold-1"},
        ]),
    )
    .await
    .expect("applied");

    // Every asset of an account: money first, then by symbol, each with its pending part.
    let desk = bank.ledger_balances("desk").await.expect("balances");
    let shown: Vec<(Option<&str>, i64, i64)> =
        desk.balances.iter().map(|b| (b.asset.as_deref(), b.balance, b.pending)).collect();
    assert_eq!(shown, vec![(None, 900, 0), (Some("BTC"), 2, 1), (Some("ETH"), 10, 0)]);
    assert!(bank.ledger_balances("nobody").await.expect("balances").balances.is_empty());

    // Who holds BTC but the desk: ann (posted) and ben (incoming: a post would give it him).
    let supply = |except: Vec<&str>| {
        let request = SupplyRequest {
            asset: "BTC".into(),
            except: except.into_iter().map(str::to_owned).collect(),
        };
        let bank = bank.clone();
        async move { bank.ledger_supply(&request).await.expect("supply") }
    };
    let all = supply(vec![]).await;
    assert_eq!((all.accounts, all.balance, all.pending), (3, 3, 1));
    let others = supply(vec!["desk"]).await;
    assert_eq!((others.accounts, others.balance, others.pending), (2, 1, 0));

    // Records by id (a service's ids as given), in the order asked; unknown ones left out.
    let ids = vec!["hold-1".to_owned(), "never".to_owned(), "gift-1".to_owned()];
    let records = bank.ledger_operations(ids).await.expect("records");
    let found: Vec<&str> = records.operations.iter().map(|o| o.id.as_str()).collect();
    assert_eq!(found, ["hold-1", "gift-1"]);
    let gift: OperationRecord =
        serde_json::from_str(records.operations[1].record.get()).expect("a record");
    let ann = gift.postings.iter().find(|p| p.account == "ann").expect("ann's posting");
    assert_eq!((ann.kind.as_str(), ann.amount, ann.balance), ("transfer_in", 1, 1));
    assert!(ann.at > 0, "a posting carries its commit time");

    // Bad requests of each endpoint: coded, and the ledger still serves.
    use agora_nats::subjects::ledger as subject;
    let cases = [
        (subject::BALANCES_SUBJECT, r#"{}"#),
        (subject::BALANCES_SUBJECT, r#"{"account":"bad name"}"#),
        (subject::BALANCES_SUBJECT, r#"["desk"]"#),
        (subject::SUPPLY_SUBJECT, r#"{"asset":"money"}"#),
        (subject::SUPPLY_SUBJECT, r#"{"asset":"btc"}"#),
        (subject::SUPPLY_SUBJECT, r#"{"asset":"BTC","except":["bad name"]}"#),
        (subject::OPERATIONS_SUBJECT, r#"{"ids":[]}"#),
        (subject::OPERATIONS_SUBJECT, r#"{"ids":["has space"]}"#),
        (subject::OPERATIONS_SUBJECT, r#"{"ids":"gift-1"}"#),
    ];
    for (subject, payload) in cases {
        let result = bank.request_bytes(subject, bytes::Bytes::from(payload)).await;
        assert_eq!(code(result), ErrorCode::InvalidRequest, "{subject} {payload}");
    }
    let many: Vec<String> = (0..1_001).map(|i| format!("id-{i}")).collect();
    assert_eq!(code(bank.ledger_operations(many).await), ErrorCode::InvalidRequest);
    assert_eq!(posted(&bank, "desk").await, 900);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_batches_at_once_wait_in_line_and_none_is_refused() {
    use futures::StreamExt;
    let system = System::with_banks(1);
    let bank = system.client().await;
    apply(&bank, json!([{"op":"deposit","account":"crowd","amount":1_000}])).await.expect("funded");
    // Far more requests at once than the bank forwards at once: they wait, none is `busy`.
    let results = futures::stream::iter(0..400)
        .map(|i| {
            let bank = bank.clone();
            async move {
                let operations = json!([{"from":"crowd","to":format!("fan-{i}"),"amount":1,"id":format!("crowd-{i}")}]);
                apply(&bank, operations).await
            }
        })
        .buffer_unordered(400)
        .collect::<Vec<_>>()
        .await;
    for result in &results {
        let reply = result.as_ref().expect("answered, not refused");
        assert_eq!(codes(reply), vec![None]);
    }
    assert_eq!(posted(&bank, "crowd").await, 600);
}
