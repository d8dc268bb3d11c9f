//! The name rules of `agora-core` as JSON-schema patterns, so that the gateway's OpenAPI
//! document (derived from the wire types) describes what the services accept. The core parsers
//! decide; a test checks that each pattern agrees with its parser.

/// A bank account (also a coins user): `agora_core::AccountId`.
pub const ACCOUNT: &str = "^[A-Za-z0-9_-]{1,64}$";
/// An operation id: `agora_core::OperationId`.
pub const OPERATION_ID: &str = "^[!-~]{1,128}$";
/// A coin symbol: `agora_core::coins::Symbol`.
pub const SYMBOL: &str = "^[A-Z0-9]{1,10}$";
/// An asset code: `money` or a symbol.
pub const ASSET: &str = "^(money|[A-Z0-9]{1,10})$";
/// A coin order id: `agora_core::coins::check_order_id`.
pub const ORDER_ID: &str = "^[A-Za-z0-9_.:-]{1,48}$";
/// A chat user or room name: `agora_core::chat::Name`.
pub const CHAT_NAME: &str = "^[A-Za-z0-9_-]{1,32}$";
/// A chat session token: `agora_core::chat::check_session`.
pub const SESSION: &str = "^[!-~]{8,64}$";
/// A likes item: `agora_core::likes::ItemId`.
pub const ITEM: &str = "^[A-Za-z0-9_:-]{1,64}$";
/// A likes user: `agora_core::likes::UserId`.
pub const LIKES_USER: &str = "^[A-Za-z0-9_:.@+-]{1,64}$";
/// A user name: `agora_core::identity::UserName`.
pub const USER_NAME: &str = "^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$";
/// A recurring task schedule's name: `agora_core::tasks::schedule::check_name`.
pub const SCHEDULE_NAME: &str = "^[A-Za-z0-9_-]{1,64}$";
/// A task id: a positive decimal integer.
pub const TASK_ID: &str = "^[1-9][0-9]{0,19}$";

#[cfg(test)]
mod tests {
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
}
