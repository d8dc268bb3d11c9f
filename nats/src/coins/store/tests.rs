use super::*;

fn units(user: &str, id: &str, side: Side, quantity: u64) -> TradeLeg {
    TradeLeg {
        user: AccountId::parse(user).expect("user"),
        id: id.to_owned(),
        at_ms: 1_000,
        part: TradePart::Units { symbol: Symbol::parse("AMZN").expect("symbol"), side, quantity },
    }
}

fn pay(user: &str, id: &str, total: u64) -> TradeLeg {
    TradeLeg {
        user: AccountId::parse(user).expect("user"),
        id: id.to_owned(),
        at_ms: 1_000,
        part: TradePart::Pay { total },
    }
}

/// Every way the legs of trades can come (together, apart, twice, interleaved with other
/// trades' legs, one leg only) logs each trade whole once both legs are in, and no trade before.
#[test]
fn legs_of_trades_log_whole_trades_however_they_come() {
    let dir = tempfile::tempdir().expect("dir");
    let conn = open(dir.path()).expect("open");
    let batches: Vec<Vec<TradeLeg>> = vec![
        // Both legs of o-1 together, o-2's units alone, the same leg of o-3 twice.
        vec![
            pay("ann", "o-1", 300),
            units("ann", "o-1", Side::Buy, 3),
            units("bob", "o-2", Side::Sell, 2),
        ],
        vec![units("cat", "o-3", Side::Buy, 1), units("cat", "o-3", Side::Buy, 1)],
        // o-2's pay leg later; o-1 again (an event delivered twice); o-4 interleaved.
        vec![pay("ann", "o-4", 50), pay("bob", "o-2", 200), units("ann", "o-4", Side::Buy, 1)],
        vec![units("ann", "o-1", Side::Buy, 3), pay("ann", "o-1", 300)],
    ];
    for batch in &batches {
        let tx = conn.unchecked_transaction().expect("begin");
        log_legs(&tx, batch).expect("logged");
        tx.commit().expect("commit");
    }
    let trade = |user: &str, id: &str| find_trade(&conn, user, id).expect("read");
    let o1 = trade("ann", "o-1").expect("o-1 is whole");
    assert_eq!((o1.side.as_str(), o1.quantity, o1.total, o1.unit_price), ("buy", 3, 300, 100));
    let o2 = trade("bob", "o-2").expect("o-2 is whole once its pay leg came");
    assert_eq!((o2.side.as_str(), o2.quantity, o2.total), ("sell", 2, 200));
    assert_eq!(trade("cat", "o-3"), None, "o-3 has no pay leg yet");
    let o4 = trade("ann", "o-4").expect("o-4");
    assert_eq!((o4.quantity, o4.total), (1, 50));
    let (all, more) = history(&conn, None, None, None, 100).expect("history");
    assert_eq!(all.len(), 3, "o-1, o-2 and o-4, each once: {all:?}");
    assert!(!more);
}

/// The trade log's position starts at 0, is what the last batch read (also lower, when the
/// event stream was made again from nothing and is read from its start), and survives a reopen.
#[test]
fn the_trade_log_position_is_the_last_event_read_and_is_kept() {
    let dir = tempfile::tempdir().expect("dir");
    let conn = open(dir.path()).expect("open");
    assert_eq!(trade_position(&conn).expect("read"), 0);
    for seq in [5, 900, 3, 900] {
        set_trade_position(&conn, seq).expect("set");
        assert_eq!(trade_position(&conn).expect("read"), seq);
    }
    drop(conn);
    let conn = open(dir.path()).expect("reopen");
    assert_eq!(trade_position(&conn).expect("read"), 900);
    conn.execute("UPDATE meta SET value = 'x' WHERE key = 'trade_log_position'", [])
        .expect("corrupt it");
    assert!(matches!(trade_position(&conn), Err(StoreError::Corrupt(_))));
}
