//! The bank's client-facing behaviour: replies, events, idempotency and bad input.

use std::time::Duration;

use agora_nats::bank::wire::{AccountBalance, BankEvent, TransferReply};
use agora_nats::subjects::bank as subject;
use agora_nats::{ClientError, ErrorCode};
use agora_tests::{System, code};
use futures::StreamExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deposit_withdraw_transfer_balance_and_events() {
    let system = System::with_banks(1);
    let client = system.client().await;
    let mut events = client.nats().subscribe(subject::EVENTS_ALL).await.expect("subscribe");
    client.nats().flush().await.expect("flush");

    let deposited = client.deposit("alice", 500, Some("op-1")).await.expect("deposit");
    assert_eq!(deposited, AccountBalance { account: "alice".into(), balance: 500 });
    let moved = client.transfer("alice", "bob", 200, None).await.expect("transfer");
    assert_eq!(
        moved,
        TransferReply {
            from: AccountBalance { account: "alice".into(), balance: 300 },
            to: AccountBalance { account: "bob".into(), balance: 200 },
        }
    );
    assert_eq!(client.withdraw("bob", 50, Some("op-3")).await.expect("withdraw").balance, 150);
    assert_eq!(client.balance("bob").await.expect("balance").balance, 150);
    assert_eq!(client.balance("nobody").await.expect("never seen").balance, 0);
    assert_eq!(code(client.withdraw("bob", 151, None).await), ErrorCode::InsufficientFunds);
    assert_eq!(
        code(client.transfer("bob", "alice", 1_000, None).await),
        ErrorCode::InsufficientFunds
    );
    assert_eq!(client.balance("bob").await.expect("unchanged").balance, 150);

    let mut seen = Vec::new();
    while seen.len() < 4 {
        let message = tokio::time::timeout(Duration::from_secs(5), events.next())
            .await
            .expect("an event arrives")
            .expect("subscription open");
        let event: BankEvent = serde_json::from_slice(&message.payload).expect("event JSON");
        assert_eq!(message.subject.as_str(), format!("agora.bank.events.{}", event.account));
        assert!(event.at > 0);
        seen.push((event.op, event.account, event.amount, event.balance, event.id));
    }
    seen.sort();
    let mut expected = vec![
        ("deposit".to_string(), "alice".to_string(), 500, 500, Some("op-1".to_string())),
        ("transfer_in".into(), "bob".into(), 200, 200, None),
        ("transfer_out".into(), "alice".into(), 200, 300, None),
        ("withdraw".into(), "bob".into(), 50, 150, Some("op-3".into())),
    ];
    expected.sort();
    assert_eq!(seen, expected, "one event per balance change, none for refused operations");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operation_ids_make_retries_idempotent() {
    let system = System::with_banks(2);
    let client = system.client().await;

    let first = client.deposit("carol", 100, Some("dep-1")).await.expect("deposit");
    client.deposit("carol", 1, None).await.expect("another deposit");
    let retry = client.deposit("carol", 100, Some("dep-1")).await.expect("retry");
    assert_eq!(retry, first, "a retry gets the first result");
    assert_eq!(client.balance("carol").await.expect("balance").balance, 101, "applied once");

    let reused = client.withdraw("carol", 100, Some("dep-1")).await;
    assert_eq!(code(reused), ErrorCode::InvalidRequest, "an id names one operation");
    let reused = client.deposit("carol", 99, Some("dep-1")).await;
    assert_eq!(code(reused), ErrorCode::InvalidRequest);

    let moved = client.transfer("carol", "dave", 40, Some("tr-1")).await.expect("transfer");
    for _ in 0..3 {
        assert_eq!(client.transfer("carol", "dave", 40, Some("tr-1")).await.expect("retry"), moved);
    }
    assert_eq!(client.balance("dave").await.expect("balance").balance, 40);

    // A refused operation is not recorded: once funded, a retry with its id goes through.
    assert_eq!(
        code(client.withdraw("dave", 500, Some("wd-1")).await),
        ErrorCode::InsufficientFunds
    );
    client.deposit("dave", 460, None).await.expect("fund");
    assert_eq!(client.withdraw("dave", 500, Some("wd-1")).await.expect("now funded").balance, 0);

    // The same id sent concurrently to both banks is applied once.
    let sends = (0..16).map(|_| client.deposit("erin", 5, Some("dep-race")));
    let replies = futures::future::join_all(sends).await;
    for reply in replies {
        assert_eq!(reply.expect("each send gets the one result").balance, 5);
    }
    assert_eq!(client.balance("erin").await.expect("balance").balance, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_inputs_get_invalid_request_and_the_bank_keeps_serving() {
    let system = System::with_banks(1);
    let client = system.client().await;
    client.deposit("frank", 10, None).await.expect("seed");
    let long_name = "a".repeat(65);
    let long_id = "i".repeat(129);
    let cases: Vec<(&str, String)> = vec![
        (subject::DEPOSIT_SUBJECT, "{not json".into()),
        (subject::DEPOSIT_SUBJECT, "".into()),
        (subject::DEPOSIT_SUBJECT, r#"[1,2,3]"#.into()),
        (subject::DEPOSIT_SUBJECT, r#"{"amount":5}"#.into()),
        (subject::DEPOSIT_SUBJECT, r#"{"account":"frank"}"#.into()),
        (subject::DEPOSIT_SUBJECT, r#"{"account":"frank","amount":0}"#.into()),
        (subject::DEPOSIT_SUBJECT, r#"{"account":"frank","amount":-5}"#.into()),
        (subject::DEPOSIT_SUBJECT, r#"{"account":"frank","amount":1.5}"#.into()),
        (subject::DEPOSIT_SUBJECT, r#"{"account":"frank","amount":"5"}"#.into()),
        (subject::DEPOSIT_SUBJECT, r#"{"account":"frank","amount":99999999999999999999}"#.into()),
        (subject::DEPOSIT_SUBJECT, r#"{"account":"frank","amount":9223372036854775807}"#.into()),
        (subject::DEPOSIT_SUBJECT, r#"{"account":"fr ank","amount":5}"#.into()),
        (subject::DEPOSIT_SUBJECT, r#"{"account":"","amount":5}"#.into()),
        (subject::DEPOSIT_SUBJECT, format!(r#"{{"account":"{long_name}","amount":5}}"#)),
        (subject::DEPOSIT_SUBJECT, format!(r#"{{"account":"frank","amount":5,"id":"{long_id}"}}"#)),
        (subject::DEPOSIT_SUBJECT, r#"{"account":"frank","amount":5,"id":""}"#.into()),
        (subject::DEPOSIT_SUBJECT, r#"{"account":"frank","amount":5,"extra":true}"#.into()),
        (subject::WITHDRAW_SUBJECT, r#"{"account":"frank","amount":0}"#.into()),
        (subject::WITHDRAW_SUBJECT, r#"{"account":"a.b","amount":1}"#.into()),
        (subject::BALANCE_SUBJECT, r#"{}"#.into()),
        (subject::BALANCE_SUBJECT, r#"{"account":"*"}"#.into()),
        (subject::TRANSFER_SUBJECT, r#"{"from":"frank","to":"frank","amount":1}"#.into()),
        (subject::TRANSFER_SUBJECT, r#"{"from":"frank","to":"gina","amount":0}"#.into()),
        (subject::TRANSFER_SUBJECT, r#"{"from":"frank","amount":1}"#.into()),
        (
            subject::TRANSFER_SUBJECT,
            format!(r#"{{"from":"frank","to":"gina","amount":1,"pad":"{}"}}"#, "x".repeat(70_000)),
        ),
    ];
    for (subject, payload) in &cases {
        let reply = client.request_bytes(subject, payload.clone().into()).await;
        let ClientError::Service(error) = reply.expect_err("refused") else {
            panic!("{subject} {payload}: expected a coded service error");
        };
        assert_eq!(error.code, ErrorCode::InvalidRequest, "{subject} {payload}");
        assert!(!error.message.is_empty());
    }
    // The largest deposit that fits is accepted; one more unit would overflow.
    client.deposit("huge", i64::MAX, None).await.expect("fits");
    assert_eq!(code(client.deposit("huge", 1, None).await), ErrorCode::InvalidRequest);
    assert_eq!(code(client.transfer("frank", "huge", 1, None).await), ErrorCode::InvalidRequest);
    assert_eq!(client.balance("frank").await.expect("still serving").balance, 10);
    assert_eq!(client.deposit("frank", 5, None).await.expect("still serving").balance, 15);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_carry_the_standard_micro_headers_and_json_body() {
    let system = System::with_banks(1);
    let client = system.client().await;
    let reply = client
        .nats()
        .request(subject::WITHDRAW_SUBJECT, r#"{"account":"x","amount":5}"#.into())
        .await
        .expect("a reply");
    let headers = reply.headers.expect("error headers");
    assert_eq!(headers.get("Nats-Service-Error-Code").map(|v| v.as_str()), Some("409"));
    assert!(headers.get("Nats-Service-Error").is_some_and(|v| v.as_str().contains("insufficient")));
    let body: serde_json::Value = serde_json::from_slice(&reply.payload).expect("JSON body");
    assert_eq!(body["error"]["code"], "insufficient_funds");

    let ping = client.nats().request("$SRV.PING.agora-bank", "".into()).await.expect("ping");
    let ping: serde_json::Value = serde_json::from_slice(&ping.payload).expect("ping JSON");
    assert_eq!(ping["name"], "agora-bank");
    let stats = client.nats().request("$SRV.STATS.agora-bank", "".into()).await.expect("stats");
    let stats: serde_json::Value = serde_json::from_slice(&stats.payload).expect("stats JSON");
    let withdraw = stats["endpoints"]
        .as_array()
        .expect("endpoints")
        .iter()
        .find(|e| e["name"] == "withdraw")
        .expect("withdraw endpoint");
    assert_eq!(withdraw["data"]["errors"]["insufficient_funds"], 1);
}
