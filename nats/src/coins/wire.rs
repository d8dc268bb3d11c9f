//! The coin exchange's JSON payloads (`agora.coins.*`).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::pattern;

// ---------------------------------------------------------------------------------------------
// Coins (`agora-coins`)
// ---------------------------------------------------------------------------------------------

/// One listed asset. Prices are minor units (cents) per unit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssetView {
    pub symbol: String,
    pub name: String,
    pub price: u64,
    /// Units the exchange can sell now.
    pub available: u64,
}

/// Body of `agora.coins.assets` (optional): every asset, one `symbol`, or several `symbols`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssetsRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub symbol: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub symbols: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssetsReply {
    pub assets: Vec<AssetView>,
    /// Asked-for symbols that are not listed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_found: Vec<String>,
}

/// Body of `agora.coins.buy` and `agora.coins.sell`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderRequest {
    /// The user's bank account.
    #[schemars(pattern(pattern::ACCOUNT))]
    pub user: String,
    #[schemars(pattern(pattern::SYMBOL))]
    pub symbol: String,
    #[schemars(range(min = 1, max = 1_000_000_000_000_i64))]
    pub quantity: i64,
    /// The order id (per user): a retry with the same id is applied once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(pattern::ORDER_ID))]
    pub id: Option<String>,
}

/// Body of `agora.coins.order`: one order's state.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderLookup {
    #[schemars(pattern(pattern::ACCOUNT))]
    pub user: String,
    #[schemars(pattern(pattern::ORDER_ID))]
    pub id: String,
}

/// An order: the reply of buy, sell and order, and an entry of history. An order either
/// happened (both its legs, in one ledger commit) or was refused with an error: there is no
/// pending or failed order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderView {
    pub id: String,
    pub user: String,
    pub symbol: String,
    /// `buy` or `sell`.
    pub side: String,
    pub quantity: u64,
    pub unit_price: u64,
    pub total: u64,
    /// Always `done`.
    pub state: String,
    /// The ledger's commit time of the order (ms since the epoch).
    pub created_ms: u64,
    /// The same as `created_ms`: an order is settled as it is made.
    pub settled_ms: u64,
    /// The user's units of the symbol right after the order (in the reply of buy and sell, and
    /// of `agora.coins.order` while the ledger keeps the order's record).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holding: Option<u64>,
}

impl OrderView {
    pub const DONE: &str = "done";
}

/// Body of `agora.coins.portfolio`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PortfolioRequest {
    #[schemars(pattern(pattern::ACCOUNT))]
    pub user: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldingView {
    pub symbol: String,
    pub quantity: u64,
    pub price: u64,
    /// quantity × price, minor units.
    pub value: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortfolioReply {
    pub user: String,
    pub holdings: Vec<HoldingView>,
    /// The holdings' value at current prices.
    pub value: u64,
    /// The user's bank balance.
    pub balance: i64,
}

/// Body of `agora.coins.history` (optional): done orders, newest first.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CoinsHistoryRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(pattern::ACCOUNT))]
    pub user: Option<String>,
    /// Settled at or after / before (ms since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<u64>,
    /// Default 50.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1_000))]
    pub limit: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoinsHistoryReply {
    pub orders: Vec<OrderView>,
    pub more: bool,
}

/// Body of `agora.coins.admin.add`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AddAssetRequest {
    #[schemars(pattern(pattern::SYMBOL))]
    pub symbol: String,
    #[schemars(length(min = 1, max = 64))]
    pub name: String,
    /// Minor units per unit.
    #[schemars(range(min = 1))]
    pub price: i64,
    /// Units available to buy.
    #[schemars(range(min = 0, max = 1_000_000_000_000_i64))]
    pub quantity: i64,
}

/// Body of `agora.coins.admin.remove`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RemoveAssetRequest {
    #[schemars(pattern(pattern::SYMBOL))]
    pub symbol: String,
}

/// Body of `agora.coins.admin.update`: a new price and/or available quantity.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateAssetRequest {
    #[schemars(pattern(pattern::SYMBOL))]
    pub symbol: String,
    /// Minor units per unit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub price: Option<i64>,
    /// Units available to buy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1_000_000_000_000_i64))]
    pub quantity: Option<i64>,
}

/// Published on `agora.coins.prices.<symbol>` when an asset is listed, repriced or delisted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PriceEvent {
    pub symbol: String,
    /// The new price (absent once delisted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<u64>,
    /// `listed`, `price`, or `delisted`.
    pub event: String,
    pub at_ms: u64,
}
