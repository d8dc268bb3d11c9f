//! The coin exchange with a real ledger, bank and `agora-coins`: an order is one linked pair
//! in the ledger, never oversold, money and units conserved, every order all or nothing even
//! across `kill -9` of the exchange and of the ledger.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use agora_nats::coins::wire::{
    AddAssetRequest, CoinsHistoryRequest, OrderView, UpdateAssetRequest,
};
use agora_nats::subjects::coins as subject;
use agora_nats::{AgoraClient, ClientError, ErrorCode};
use agora_tests::{System, code, eventually, wait_until};
use bytes::Bytes;
use futures::StreamExt;

const EXCHANGE: &str = "coins-exchange";

async fn balances(client: &AgoraClient, accounts: &[String]) -> BTreeMap<String, i64> {
    let mut all = BTreeMap::new();
    for account in accounts {
        all.insert(account.clone(), client.balance(account).await.expect("balance").balance);
    }
    all
}

/// Every trade in the exchange's log, once it holds `count` (the log follows the ledger's
/// events, moments behind).
async fn done_orders(client: &AgoraClient, count: usize) -> Vec<OrderView> {
    let request = CoinsHistoryRequest { limit: Some(1_000), ..CoinsHistoryRequest::default() };
    eventually(Duration::from_secs(15), Duration::from_millis(100), async || {
        let history = client.coin_history(&request).await.expect("history");
        assert!(!history.more, "the test reads all of history in one page");
        if history.orders.len() >= count {
            Ok(history.orders)
        } else {
            Err(format!("{} of {count} trades logged", history.orders.len()))
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_buyers_never_oversell_and_money_is_conserved() {
    let system = System::with_coins(2);
    let client = system.client().await;
    let request = AddAssetRequest {
        symbol: "LAST".into(),
        name: "The last ten units".into(),
        price: 100,
        quantity: 10,
    };
    client.add_asset(&request).await.expect("listed");
    let users: Vec<String> = (0..20).map(|u| format!("racer-{u}")).collect();
    for user in &users {
        client.deposit(user, 1_000, None).await.expect("deposit");
    }
    let orders = futures::stream::iter(users.iter().flat_map(|u| [(u.clone(), 0), (u.clone(), 1)]))
        .map(|(user, k)| {
            let client = client.clone();
            async move {
                let id = format!("race-{k}");
                (user.clone(), client.buy_coins(&user, "LAST", 1, Some(&id)).await)
            }
        })
        .buffer_unordered(40)
        .collect::<Vec<(String, Result<OrderView, ClientError>)>>()
        .await;
    let mut bought: BTreeMap<String, u64> = BTreeMap::new();
    for (user, result) in orders {
        match result {
            Ok(order) => *bought.entry(user).or_default() += order.quantity,
            Err(error) => assert_eq!(error.code(), ErrorCode::InsufficientQuantity, "{error}"),
        }
    }
    assert_eq!(bought.values().sum::<u64>(), 10, "exactly the ten units were sold");
    let last = client.coin_assets(Some(vec!["LAST".into()])).await.expect("assets");
    assert_eq!(last.assets[0].available, 0);
    for (user, quantity) in &bought {
        let portfolio = client.portfolio(user).await.expect("portfolio");
        assert_eq!(portfolio.holdings[0].quantity, *quantity);
        assert_eq!(portfolio.balance, 1_000 - 100 * *quantity as i64);
    }
    let mut accounts = users.clone();
    accounts.push(EXCHANGE.into());
    let money = balances(&client, &accounts).await;
    assert_eq!(money.values().sum::<i64>(), 20 * 1_000, "no money created or lost");
    assert_eq!(money[EXCHANGE], 1_000);
    let log = done_orders(&client, 10).await;
    assert_eq!(log.iter().filter(|o| o.symbol == "LAST").count(), 10, "holdings match the log");
}

/// Order attempts whose outcome was unknown (the service or the bank was down).
static UNKNOWN_OUTCOMES: AtomicUsize = AtomicUsize::new(0);

/// Sends an order until it has a definitive outcome (done, or refused for good), retrying with
/// the same id while the outcome is unknown.
async fn order_until_known(
    client: &AgoraClient,
    buy: bool,
    user: &str,
    quantity: i64,
    id: &str,
) -> Result<OrderView, ErrorCode> {
    // A retry, not a poll (and spawned: the shared `eventually` is not `Send` here).
    for _ in 0..400 {
        let result = if buy {
            client.buy_coins(user, "AMZN", quantity, Some(id)).await
        } else {
            client.sell_coins(user, "AMZN", quantity, Some(id)).await
        };
        match result {
            Ok(order) => return Ok(order),
            Err(error)
                if matches!(
                    error.code(),
                    ErrorCode::InsufficientFunds | ErrorCode::InsufficientQuantity
                ) =>
            {
                return Err(error.code());
            }
            Err(error) if error.code() == ErrorCode::InvalidRequest => panic!("{error}"),
            Err(_) => {
                UNKNOWN_OUTCOMES.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    panic!("order {user}/{id} never got an outcome within 400 tries");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_survive_kill_9_of_the_exchange_and_the_ledger_all_or_nothing_applied_once() {
    const USERS: usize = 8;
    const ORDERS: usize = 20;
    let mut system = System::with_coins(1);
    let client = system.client().await.with_timeout(Duration::from_secs(2));
    let users: Vec<String> = (0..USERS).map(|u| format!("trader-{u}")).collect();
    for user in &users {
        client.deposit(user, 1_000_000, None).await.expect("deposit");
    }
    let initial =
        client.coin_assets(Some(vec!["AMZN".into()])).await.expect("asset").assets[0].available;
    let finished = Arc::new(AtomicUsize::new(0));
    let mut load = Vec::new();
    for user in users.clone() {
        let (client, finished) = (client.clone(), finished.clone());
        load.push(tokio::spawn(async move {
            let mut outcomes = Vec::new();
            for j in 0..ORDERS {
                let id = format!("o-{j}");
                let buy = j % 3 != 2;
                let outcome =
                    order_until_known(&client, buy, &user, if buy { 2 } else { 3 }, &id).await;
                finished.fetch_add(1, Ordering::Relaxed);
                outcomes.push((id, outcome));
            }
            (user, outcomes)
        }));
    }
    wait_until(Duration::from_secs(60), "a quarter of the orders done", async || {
        finished.load(Ordering::Relaxed) >= USERS * ORDERS / 4
    })
    .await;
    tokio::task::block_in_place(|| system.kill_coins());
    tokio::time::sleep(Duration::from_millis(300)).await;
    tokio::task::block_in_place(|| system.start_coins());
    wait_until(Duration::from_secs(60), "half of the orders done", async || {
        finished.load(Ordering::Relaxed) >= USERS * ORDERS / 2
    })
    .await;
    tokio::task::block_in_place(|| system.kill_ledger());
    tokio::time::sleep(Duration::from_millis(300)).await;
    tokio::task::block_in_place(|| system.start_ledger());
    let mut outcomes = Vec::new();
    for task in load {
        outcomes.push(task.await.expect("load"));
    }
    let unknown = UNKNOWN_OUTCOMES.load(Ordering::Relaxed);
    assert!(unknown > 0, "orders were in flight when the service died");
    eprintln!("kill -9 mid-orders: {unknown} attempts had no answer and were retried by id");

    // Every order ended, once: asked again it is the same order; a refused one left nothing.
    let mut done_ids = BTreeSet::new();
    for (user, results) in &outcomes {
        for (id, outcome) in results {
            let stored = client.coin_order(user, id).await;
            match outcome {
                Ok(order) => {
                    let stored = stored.expect("recorded");
                    assert_eq!(stored.state, "done");
                    assert_eq!(
                        (stored.total, stored.quantity, stored.created_ms),
                        (order.total, order.quantity, order.created_ms),
                        "{user}/{id}"
                    );
                    done_ids.insert((user.clone(), id.clone()));
                }
                Err(_) => assert_eq!(code(stored), ErrorCode::NotFound, "{user}/{id}"),
            }
        }
    }
    let (user, id) = done_ids.iter().next().expect("some orders were done").clone();
    let before = client.coin_order(&user, &id).await.expect("stored");
    let buy = before.side == "buy";
    let again = order_until_known(&client, buy, &user, before.quantity as i64, &id).await;
    assert_eq!(again.expect("the same done order"), before, "a retried id is applied once");

    // No coins without payment, no payment without coins.
    let log = done_orders(&client, done_ids.len()).await;
    assert_eq!(log.len(), done_ids.len(), "the log holds each done order once");
    let mut expected_exchange = 0i64;
    let mut held: BTreeMap<String, i64> = BTreeMap::new();
    for order in &log {
        let (money, units) = if order.side == "buy" {
            (order.total as i64, order.quantity as i64)
        } else {
            (-(order.total as i64), -(order.quantity as i64))
        };
        expected_exchange += money;
        *held.entry(order.user.clone()).or_default() += units;
    }
    let mut accounts = users.clone();
    accounts.push(EXCHANGE.into());
    let money = balances(&client, &accounts).await;
    assert_eq!(money.values().sum::<i64>(), USERS as i64 * 1_000_000, "money conserved");
    assert_eq!(money[EXCHANGE], expected_exchange, "the exchange got exactly the done orders");
    let mut holdings_total = 0;
    for user in &users {
        let portfolio = client.portfolio(user).await.expect("portfolio");
        let quantity = portfolio.holdings.iter().map(|h| h.quantity as i64).sum::<i64>();
        assert_eq!(quantity, held.get(user).copied().unwrap_or(0), "{user}'s holding = the log");
        holdings_total += quantity as u64;
    }
    let amzn =
        client.coin_assets(Some(vec!["AMZN".into()])).await.expect("asset").assets[0].available;
    assert_eq!(amzn + holdings_total, initial, "every unit is available or held");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_change_nothing_and_bad_input_gets_coded_errors() {
    let system = System::with_coins(1);
    let client = system.client().await;
    let catalogue = client.coin_assets(None).await.expect("assets");
    let symbols: Vec<&str> = catalogue.assets.iter().map(|a| a.symbol.as_str()).collect();
    assert_eq!(symbols, ["AMZN", "BTC", "ETH", "MSFT", "TSLA"], "the seeded catalogue");
    let some = client
        .coin_assets(Some(vec!["BTC".into(), "NOPE".into(), "ETH".into()]))
        .await
        .expect("several");
    assert_eq!((some.assets.len(), some.not_found.clone()), (2, vec!["NOPE".to_owned()]));

    client.deposit("poor", 1_000, None).await.expect("deposit");
    let btc_before =
        client.coin_assets(Some(vec!["BTC".into()])).await.expect("btc").assets[0].available;
    assert_eq!(
        code(client.buy_coins("poor", "BTC", 1, Some("b-1")).await),
        ErrorCode::InsufficientFunds
    );
    assert_eq!(
        code(client.sell_coins("poor", "BTC", 1, None).await),
        ErrorCode::InsufficientQuantity
    );
    let after =
        client.coin_assets(Some(vec!["BTC".into()])).await.expect("btc").assets[0].available;
    assert_eq!(after, btc_before, "a refused buy gives the units back");
    assert_eq!(client.balance("poor").await.expect("balance").balance, 1_000);
    assert!(client.portfolio("poor").await.expect("portfolio").holdings.is_empty());
    assert_eq!(
        code(client.coin_order("poor", "b-1").await),
        ErrorCode::NotFound,
        "a refused order leaves nothing behind"
    );

    client.deposit("rich", 100_000, None).await.expect("deposit");
    let order = client.buy_coins("rich", "TSLA", 2, Some("t-1")).await.expect("bought");
    assert_eq!((order.state.as_str(), order.total, order.holding), ("done", 50_000, Some(2)));
    let again = client.buy_coins("rich", "TSLA", 2, Some("t-1")).await.expect("same order");
    assert_eq!(again, order, "a retried id is applied once");
    assert_eq!(client.coin_order("rich", "t-1").await.expect("recorded"), order);
    assert_eq!(client.balance("rich").await.expect("balance").balance, 50_000);
    assert_eq!(
        code(client.buy_coins("rich", "TSLA", 3, Some("t-1")).await),
        ErrorCode::InvalidRequest
    );
    assert_eq!(
        code(client.sell_coins("rich", "TSLA", 5, None).await),
        ErrorCode::InsufficientQuantity
    );
    let portfolio = client.portfolio("rich").await.expect("portfolio");
    assert_eq!((portfolio.value, portfolio.balance), (50_000, 50_000));

    // Prices fan out.
    let mut prices = client.nats().subscribe(subject::prices("TSLA")).await.expect("subscribe");
    agora_nats::client::barrier(client.nats()).await.expect("barrier");
    let update = UpdateAssetRequest { symbol: "TSLA".into(), price: Some(26_000), quantity: None };
    assert_eq!(client.update_asset(&update).await.expect("repriced").price, 26_000);
    let event = tokio::time::timeout(Duration::from_secs(3), prices.next())
        .await
        .expect("a price event")
        .expect("message");
    let event: serde_json::Value = serde_json::from_slice(&event.payload).expect("JSON");
    assert_eq!((event["price"].as_u64(), event["previous"].as_u64()), (Some(26_000), Some(25_000)));
    let again = client.buy_coins("rich", "TSLA", 2, Some("t-1")).await.expect("same order");
    assert_eq!(again, order, "a retry after a price change is the order as it was made");
    assert_eq!(code(client.remove_asset("TSLA").await), ErrorCode::Conflict, "rich holds TSLA");

    // Manager operations have subjects of their own (the server can restrict them).
    for admin in [subject::ADD_SUBJECT, subject::REMOVE_SUBJECT, subject::UPDATE_SUBJECT] {
        assert!(admin.starts_with("agora.coins.admin."), "{admin}");
    }

    let cases: Vec<(&str, &str, ErrorCode)> = vec![
        (
            subject::ASSETS_SUBJECT,
            r#"{"symbol":"BTC","symbols":["ETH"]}"#,
            ErrorCode::InvalidRequest,
        ),
        (subject::ASSETS_SUBJECT, r#"{"symbol":"NOPE"}"#, ErrorCode::NotFound),
        (subject::ASSETS_SUBJECT, "[1]", ErrorCode::InvalidRequest),
        (subject::BUY_SUBJECT, "", ErrorCode::InvalidRequest),
        (subject::BUY_SUBJECT, r#"{"user":"rich","symbol":"BTC"}"#, ErrorCode::InvalidRequest),
        (
            subject::BUY_SUBJECT,
            r#"{"user":"rich","symbol":"BTC","quantity":0}"#,
            ErrorCode::InvalidRequest,
        ),
        (
            subject::BUY_SUBJECT,
            r#"{"user":"rich","symbol":"BTC","quantity":-3}"#,
            ErrorCode::InvalidRequest,
        ),
        (
            subject::BUY_SUBJECT,
            r#"{"user":"rich","symbol":"BTC","quantity":1.5}"#,
            ErrorCode::InvalidRequest,
        ),
        (
            subject::BUY_SUBJECT,
            r#"{"user":"rich","symbol":"btc","quantity":1}"#,
            ErrorCode::InvalidRequest,
        ),
        (
            subject::BUY_SUBJECT,
            r#"{"user":"rich","symbol":"NOPE","quantity":1}"#,
            ErrorCode::InvalidRequest,
        ),
        (
            subject::BUY_SUBJECT,
            r#"{"user":"bad name","symbol":"BTC","quantity":1}"#,
            ErrorCode::InvalidRequest,
        ),
        (
            subject::BUY_SUBJECT,
            r#"{"user":"rich","symbol":"BTC","quantity":1,"id":"a b"}"#,
            ErrorCode::InvalidRequest,
        ),
        (
            subject::BUY_SUBJECT,
            r#"{"user":"coins-exchange","symbol":"BTC","quantity":1}"#,
            ErrorCode::InvalidRequest,
        ),
        (
            subject::SELL_SUBJECT,
            r#"{"user":"rich","symbol":"TSLA","quantity":1,"x":1}"#,
            ErrorCode::InvalidRequest,
        ),
        (subject::ORDER_SUBJECT, r#"{"user":"rich","id":"never"}"#, ErrorCode::NotFound),
        (subject::ORDER_SUBJECT, r#"{"user":"rich"}"#, ErrorCode::InvalidRequest),
        (subject::PORTFOLIO_SUBJECT, r#"{"user":""}"#, ErrorCode::InvalidRequest),
        (subject::HISTORY_SUBJECT, r#"{"limit":0}"#, ErrorCode::InvalidRequest),
        (subject::HISTORY_SUBJECT, r#"{"from":10,"to":5}"#, ErrorCode::InvalidRequest),
        (
            subject::ADD_SUBJECT,
            r#"{"symbol":"doge","name":"Doge","price":1,"quantity":1}"#,
            ErrorCode::InvalidRequest,
        ),
        (
            subject::ADD_SUBJECT,
            r#"{"symbol":"DOGE","name":"","price":1,"quantity":1}"#,
            ErrorCode::InvalidRequest,
        ),
        (
            subject::ADD_SUBJECT,
            r#"{"symbol":"DOGE","name":"Doge","price":0,"quantity":1}"#,
            ErrorCode::InvalidRequest,
        ),
        (
            subject::ADD_SUBJECT,
            r#"{"symbol":"DOGE","name":"Doge","price":1,"quantity":-1}"#,
            ErrorCode::InvalidRequest,
        ),
        (
            subject::ADD_SUBJECT,
            r#"{"symbol":"BTC","name":"Again","price":1,"quantity":1}"#,
            ErrorCode::Conflict,
        ),
        (subject::REMOVE_SUBJECT, r#"{"symbol":"NOPE"}"#, ErrorCode::NotFound),
        (subject::UPDATE_SUBJECT, r#"{"symbol":"BTC"}"#, ErrorCode::InvalidRequest),
        (subject::UPDATE_SUBJECT, r#"{"symbol":"NOPE","price":5}"#, ErrorCode::NotFound),
        (subject::UPDATE_SUBJECT, r#"{"symbol":"BTC","price":-5}"#, ErrorCode::InvalidRequest),
    ];
    for (subject, payload, expected) in cases {
        let result = client.request_bytes(subject, Bytes::from(payload)).await;
        assert_eq!(code(result), expected, "{subject} {payload}");
    }
    // Nothing changed, and the service still serves.
    let money = balances(&client, &["rich".into(), EXCHANGE.into()]).await;
    assert_eq!((money["rich"], money[EXCHANGE]), (50_000, 50_000));
    assert_eq!(client.coin_assets(None).await.expect("assets").assets.len(), 5);
    let removable =
        AddAssetRequest { symbol: "DOGE".into(), name: "Doge".into(), price: 1, quantity: 1 };
    client.add_asset(&removable).await.expect("listed");
    assert_eq!(client.remove_asset("DOGE").await.expect("delisted").symbol, "DOGE");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_is_one_ledger_commit_and_waits_for_a_ledger_that_is_down() {
    let mut system = System::with_coins(1);
    let client = system.client().await.with_timeout(Duration::from_secs(10));
    client.deposit("dora", 100_000, None).await.expect("deposit");
    let tsla = || async {
        client.coin_assets(Some(vec!["TSLA".into()])).await.expect("asset").assets[0].available
    };
    let before = tsla().await;

    // Both legs are entries of one commit: the same time, the ids of the order.
    let order = client.buy_coins("dora", "TSLA", 2, Some("d-0")).await.expect("bought");
    let history = |asset: Option<&str>| {
        let request = agora_nats::ledger::wire::HistoryRequest {
            account: "dora".into(),
            asset: asset.map(str::to_owned),
            ..Default::default()
        };
        let client = client.clone();
        async move { client.history(&request).await.expect("history").entries }
    };
    let (money, units) = (history(None).await, history(Some("TSLA")).await);
    assert_eq!(
        (money[0].kind.as_str(), money[0].amount, money[0].id.as_deref()),
        ("transfer_out", 50_000, Some("coins:dora:d-0:pay"))
    );
    assert_eq!(
        (units[0].kind.as_str(), units[0].amount, units[0].id.as_deref()),
        ("transfer_in", 2, Some("coins:dora:d-0:units"))
    );
    assert_eq!((money[0].at, units[0].at), (order.created_ms, order.created_ms));
    assert_eq!(units[0].balance, 2, "the holding is the ledger's balance");
    assert_eq!(tsla().await, before - 2, "the inventory is the exchange's balance");

    // With the ledger down nothing moves; once it is back the same id applies once.
    system.kill_ledger();
    assert_eq!(
        code(client.buy_coins("dora", "TSLA", 1, Some("d-1")).await),
        ErrorCode::Unavailable
    );
    system.start_ledger();
    let done = eventually(Duration::from_secs(15), Duration::from_millis(100), async || {
        client.buy_coins("dora", "TSLA", 1, Some("d-1")).await.map_err(|e| e.to_string())
    })
    .await;
    assert_eq!((done.state.as_str(), done.holding), ("done", Some(3)));
    let money = balances(&client, &["dora".into(), EXCHANGE.into()]).await;
    assert_eq!((money["dora"], money[EXCHANGE]), (25_000, 75_000), "paid exactly once");
    let again = client.buy_coins("dora", "TSLA", 1, Some("d-1")).await.expect("the same order");
    assert_eq!(again, done);
    assert_eq!(client.balance("dora").await.expect("balance").balance, 25_000);
    assert_eq!(tsla().await, before - 3);
}

/// A price change whose log append timed out although the log has it (the exchange lost the
/// acknowledgement): the caller hears `unavailable`, and the change counts as not made. At the
/// exchange's next group, a read that changes nothing, it catches up with the log. From then on
/// orders are priced at the logged price, with no further change needed to refresh the
/// catalogue they are priced from.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_price_change_whose_append_timed_out_but_landed_prices_orders_once_caught_up() {
    let mut system = System::nats_only();
    // Leases that outlast the lost acknowledgements (the renewals' answers are lost too): the
    // server keeps a lease as long as its bucket says, made here before any service makes it.
    let js = async_nats::jetstream::new(async_nats::connect(system.url()).await.expect("connect"));
    let leases = async_nats::jetstream::kv::Config {
        bucket: agora_nats::subjects::replica::LEASE_BUCKET.to_owned(),
        max_age: Duration::from_secs(15),
        storage: async_nats::jetstream::stream::StorageType::Memory,
        ..Default::default()
    };
    js.create_key_value(leases).await.expect("the lease bucket");
    system.start_ledger();
    system.add_bank();
    let proxy = agora_tests::Proxy::start(system.url());
    let _coins = system.start_instance_via(
        &proxy.url(),
        "coins",
        "coins",
        &["--lease-ms", "15000", "--ledger-timeout-ms", "3000"],
        agora_devtools::process::READY_LINE,
    );
    let client = system.client().await;
    let price = async || -> u64 {
        let assets = client.coin_assets(Some(vec!["AMZN".into()])).await.expect("assets");
        assets.assets[0].price
    };
    let before = price().await;
    // The exchange's own first writes are done (the catalogue seeded, its units deposited to
    // the ledger and that recorded, its trade log's position): its log has two entries or more
    // and no new one for a while, and a read through its owner comes after all of them. So the
    // change below is its only write while answers are lost.
    let mut seen = (0, tokio::time::Instant::now());
    eventually(Duration::from_secs(30), Duration::from_millis(100), async || {
        let log = agora_nats::subjects::replica::log_stream("coins");
        let mut stream = js.get_stream(log).await.map_err(|e| e.to_string())?;
        let entries = stream.info().await.map_err(|e| e.to_string())?.state.last_sequence;
        if entries != seen.0 {
            seen = (entries, tokio::time::Instant::now());
        }
        if entries >= 2 && seen.1.elapsed() >= Duration::from_millis(1500) {
            Ok(())
        } else {
            Err(format!("{entries} entries"))
        }
    })
    .await;
    client.coin_history(&CoinsHistoryRequest::default()).await.expect("history");

    // Every answer the server sends the exchange is lost: the change's append is stored, its
    // acknowledgement never arrives, and after the append timeout the change is rolled back.
    proxy.drop_messages(Some("_INBOX"));
    let update = UpdateAssetRequest {
        symbol: "AMZN".into(),
        price: Some(before as i64 + 7),
        quantity: None,
    };
    assert_eq!(code(client.update_asset(&update).await), ErrorCode::Unavailable);
    proxy.drop_messages(None);
    assert_eq!(price().await, before, "the exchange does not know the change yet");

    // A read through the exchange's owner: its group first catches up with the log. (A read
    // may time out: under load, other work of the exchange's, such as its trade log starting
    // over, can have asked the server something while its answers were lost, and waits for
    // that first. Reads change no price, so however many it takes, only the catch-up can.)
    eventually(Duration::from_secs(20), Duration::from_millis(100), async || {
        client.coin_history(&CoinsHistoryRequest::default()).await.map_err(|e| e.to_string())?;
        let now = price().await;
        if now == before + 7 { Ok(()) } else { Err(format!("AMZN at {now}")) }
    })
    .await;
    client.deposit("late", 1_000_000, None).await.expect("deposit");
    let order = client.buy_coins("late", "AMZN", 1, Some("l-1")).await.expect("bought");
    assert_eq!(order.unit_price, before + 7, "priced as the log says");
}
