use super::*;

fn event(account: &str, op: &str, asset: Option<&str>, amount: i64, id: Option<&str>) -> BankEvent {
    BankEvent {
        op: op.into(),
        account: account.into(),
        asset: asset.map(str::to_owned),
        amount,
        balance: 0,
        id: id.map(str::to_owned),
        at: 7,
    }
}

#[test]
fn the_exchanges_events_of_order_legs_are_trade_legs_and_nothing_else_is() {
    let exchange = AccountId::parse("coins-exchange").expect("valid");
    let alice = AccountId::parse("alice").expect("valid");
    let units = |op, id| event("coins-exchange", op, Some("BTC"), 2, Some(id));
    let bought = leg(&exchange, &units("transfer_out", "coins:alice:o-1:units"));
    assert_eq!(
        bought,
        Some(TradeLeg {
            user: alice.clone(),
            id: "o-1".into(),
            at_ms: 7,
            part: TradePart::Units {
                symbol: Symbol::parse("BTC").expect("valid"),
                side: Side::Buy,
                quantity: 2
            },
        })
    );
    let sold = leg(&exchange, &units("transfer_in", "coins:alice:o-2:units"));
    assert!(matches!(sold.map(|l| l.part), Some(TradePart::Units { side: Side::Sell, .. })));
    let paid = event("coins-exchange", "transfer_in", None, 500, Some("coins:alice:o-1:pay"));
    assert_eq!(leg(&exchange, &paid).map(|l| l.part), Some(TradePart::Pay { total: 500 }));

    // Not a trade leg: another account's event, no id, someone else's id, the seed's
    // deposit, a leg of the wrong asset or kind.
    let others = [
        event("alice", "transfer_in", Some("BTC"), 2, Some("coins:alice:o-1:units")),
        event("coins-exchange", "transfer_out", Some("BTC"), 2, None),
        event("coins-exchange", "transfer_out", Some("BTC"), 2, Some("alice/o-1")),
        event("coins-exchange", "deposit", Some("BTC"), 100, Some("coins:stock:BTC:seed")),
        event("coins-exchange", "deposit", Some("BTC"), 2, Some("coins:alice:o-1:units")),
        event("coins-exchange", "transfer_in", Some("BTC"), 2, Some("coins:alice:o-1:pay")),
        event("coins-exchange", "transfer_in", None, 2, Some("coins:alice:o-1:units")),
        event("coins-exchange", "transfer_in", None, -2, Some("coins:alice:o-1:pay")),
    ];
    for other in others {
        assert_eq!(leg(&exchange, &other), None, "{other:?}");
    }
}
