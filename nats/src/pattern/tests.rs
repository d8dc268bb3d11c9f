use super::*;
use agora_core::likes::{ItemId, UserId};
use agora_core::{AccountId, OperationId};

#[test]
fn the_schema_patterns_agree_with_the_core_parsers() {
    let samples = [
        "",
        "a",
        "A-z_09",
        "a.b",
        "a b",
        "a:b",
        "a@b.c",
        "u+1",
        "ÄBC",
        "BTC",
        "btc",
        "X1",
        "ABCDEFGHIJK",
        "order-1.2:3",
        "bank-1-x",
        "!#$%&'()*+,",
        "tab\there",
        "12345678",
        "1234567",
        "0",
        "42",
        "007",
        "-1",
        "_x",
        "x_",
    ];
    let long = |n: usize| "x".repeat(n);
    let lengths = [long(8), long(10), long(11), long(32), long(33), long(48), long(49)];
    let lengths2 = [long(64), long(65), long(128), long(129)];
    let all = samples
        .iter()
        .map(|s| s.to_string())
        .chain(lengths)
        .chain(lengths2)
        .chain(["BTC".repeat(4), "Z".repeat(10)]);
    type Parser = fn(&str) -> bool;
    let checks: [(&str, Parser); 11] = [
        (ACCOUNT, |s| AccountId::parse(s).is_ok()),
        (OPERATION_ID, |s| OperationId::parse(s).is_ok()),
        (SYMBOL, |s| agora_core::coins::Symbol::parse(s).is_ok()),
        (ORDER_ID, |s| agora_core::coins::check_order_id(s).is_ok()),
        (CHAT_NAME, agora_core::chat::Name::is_valid),
        (SESSION, |s| agora_core::chat::check_session(s).is_ok()),
        (ITEM, |s| ItemId::parse(s).is_ok()),
        (LIKES_USER, |s| UserId::parse(s).is_ok()),
        (USER_NAME, |s| agora_core::UserName::parse(s).is_ok()),
        (SCHEDULE_NAME, |s| agora_core::tasks::schedule::check_name(s).is_ok()),
        (TASK_ID, |s| s.parse::<u64>().is_ok_and(|id| id > 0) && !s.starts_with('0')),
    ];
    for text in all {
        for (pattern, parse) in checks {
            let regex = regex::Regex::new(pattern).expect("a valid pattern");
            assert_eq!(regex.is_match(&text), parse(&text), "{pattern} on {text:?}");
        }
    }
}
