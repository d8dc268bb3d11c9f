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
mod tests;
