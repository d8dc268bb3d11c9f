//! The coin exchange's rules: assets, holdings, and orders that reserve first and settle once
//! the bank has moved the money.
//!
//! An order is two steps around a bank transfer, so that a crash between them can always be
//! finished or undone:
//! 1. [`Exchange::reserve`] checks the order and takes what it sells out of reach: a buy takes
//!    the quantity from the asset's available units, a sell takes it from the user's holding.
//!    The order is then *pending* (and persisted so).
//! 2. The shell transfers the order's total through the bank (buy: user → exchange; sell:
//!    exchange → user) with an operation id derived from the order, so a retry is applied once.
//! 3. [`Exchange::settle`] ends the order: paid, the buyer's holding grows (a sell's units return
//!    to the available ones); refused, the reservation is given back.
//!
//! So units are never sold twice (the reservation is atomic with the check), and no units move
//! without payment nor payment without units.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use crate::account::AccountId;

/// Longest symbol and asset name, in bytes.
pub const SYMBOL_BYTES_MAX: usize = 10;
pub const ASSET_NAME_BYTES_MAX: usize = 64;
/// Longest client order id, in bytes.
pub const ORDER_ID_BYTES_MAX: usize = 48;
/// Most units of one order, and most units of one asset.
pub const QUANTITY_MAX: u64 = 1_000_000_000_000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CoinsError {
    #[error("symbol {0:?} is not 1..={SYMBOL_BYTES_MAX} characters of A-Z 0-9 (upper case)")]
    InvalidSymbol(String),
    #[error(
        "asset name must be 1..={ASSET_NAME_BYTES_MAX} bytes of text without control characters"
    )]
    InvalidName,
    #[error("order id {0:?} is not 1..={ORDER_ID_BYTES_MAX} characters of A-Z a-z 0-9 _ - . :")]
    InvalidOrderId(String),
    #[error("a price is a positive integer number of minor units, got {0}")]
    InvalidPrice(i64),
    #[error("a quantity is a positive integer up to {QUANTITY_MAX}, got {0}")]
    InvalidQuantity(i64),
    #[error("a quantity is a non-negative integer up to {QUANTITY_MAX}, got {0}")]
    InvalidStock(i64),
    #[error("no asset {0}")]
    UnknownSymbol(String),
    #[error("asset {0} exists already")]
    Exists(String),
    #[error("{symbol}: {wanted} wanted, {available} available")]
    InsufficientQuantity { symbol: String, wanted: u64, available: u64 },
    #[error("{user} holds {held} {symbol}, cannot sell {wanted}")]
    InsufficientHolding { user: String, symbol: String, wanted: u64, held: u64 },
    #[error("the order's total overflows")]
    Overflow,
    #[error("{0} is held by users or in pending orders; it cannot be removed")]
    InUse(String),
    #[error("the order is {0} already: only a pending order settles")]
    Settled(OrderState),
    #[error("{0:?} is not an order side (buy, sell)")]
    InvalidSide(String),
    #[error("{0:?} is not an order state (pending, done, failed)")]
    InvalidState(String),
}

/// An asset symbol: 1..=10 characters of `[A-Z0-9]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Symbol(String);

impl Symbol {
    pub fn parse(text: &str) -> Result<Self, CoinsError> {
        let ok = (1..=SYMBOL_BYTES_MAX).contains(&text.len())
            && text.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
        if ok {
            Ok(Self(text.to_owned()))
        } else {
            Err(CoinsError::InvalidSymbol(text.chars().take(20).collect()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Symbol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Checks an asset name: 1..=64 bytes, no control characters.
pub fn check_name(name: &str) -> Result<(), CoinsError> {
    let ok = (1..=ASSET_NAME_BYTES_MAX).contains(&name.len())
        && !name.chars().any(char::is_control)
        && !name.trim().is_empty();
    if ok { Ok(()) } else { Err(CoinsError::InvalidName) }
}

/// Checks a client order id: 1..=48 characters of `[A-Za-z0-9_.:-]`.
pub fn check_order_id(id: &str) -> Result<(), CoinsError> {
    let ok = (1..=ORDER_ID_BYTES_MAX).contains(&id.len())
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.:".contains(&b));
    if ok { Ok(()) } else { Err(CoinsError::InvalidOrderId(id.chars().take(60).collect())) }
}

/// A positive price in minor units.
pub fn price(value: i64) -> Result<u64, CoinsError> {
    u64::try_from(value).ok().filter(|p| *p > 0).ok_or(CoinsError::InvalidPrice(value))
}

/// An order's quantity: 1..=[`QUANTITY_MAX`].
pub fn quantity(value: i64) -> Result<u64, CoinsError> {
    u64::try_from(value)
        .ok()
        .filter(|q| (1..=QUANTITY_MAX).contains(q))
        .ok_or(CoinsError::InvalidQuantity(value))
}

/// An asset's available units: 0..=[`QUANTITY_MAX`].
pub fn stock(value: i64) -> Result<u64, CoinsError> {
    u64::try_from(value).ok().filter(|q| *q <= QUANTITY_MAX).ok_or(CoinsError::InvalidStock(value))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Asset {
    pub symbol: Symbol,
    pub name: String,
    /// Minor units per unit.
    pub price: u64,
    /// Units the exchange can sell now (not reserved by a pending buy).
    pub available: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    Buy,
    Sell,
}

impl Side {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Buy => "buy",
            Self::Sell => "sell",
        }
    }

    pub fn parse(text: &str) -> Result<Self, CoinsError> {
        match text {
            "buy" => Ok(Self::Buy),
            "sell" => Ok(Self::Sell),
            other => Err(CoinsError::InvalidSide(other.chars().take(20).collect())),
        }
    }
}

/// Where an order is: reserved and waiting for its payment, or settled one way or the other.
/// `Pending` is the only state an order leaves, once ([`OrderState::settle`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OrderState {
    /// Reserved (durably) and waiting for the bank's answer.
    Pending,
    /// Paid: the units are the buyer's (a sale's units are available again).
    Done,
    /// Refused by the bank: the reservation was given back.
    Failed,
}

impl OrderState {
    pub const ALL: [Self; 3] = [Self::Pending, Self::Done, Self::Failed];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Done => "done",
            Self::Failed => "failed",
        }
    }

    pub fn parse(text: &str) -> Result<Self, CoinsError> {
        Self::ALL
            .into_iter()
            .find(|state| state.as_str() == text)
            .ok_or_else(|| CoinsError::InvalidState(text.chars().take(20).collect()))
    }

    /// The state after the bank's answer: `Done` if it paid, `Failed` if it refused. Only a
    /// pending order settles; a settled one stays as it is (the caller reports it).
    pub fn settle(self, paid: bool) -> Result<Self, CoinsError> {
        match (self, paid) {
            (Self::Pending, true) => Ok(Self::Done),
            (Self::Pending, false) => Ok(Self::Failed),
            (settled, _) => Err(CoinsError::Settled(settled)),
        }
    }

    pub fn is_pending(self) -> bool {
        self == Self::Pending
    }
}

impl fmt::Display for OrderState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A checked order, reserved and waiting for its payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    pub user: AccountId,
    pub id: String,
    pub symbol: Symbol,
    pub side: Side,
    pub quantity: u64,
    pub unit_price: u64,
    /// `quantity * unit_price`, in minor units (fits an i64: the bank's amounts).
    pub total: u64,
}

/// The exchange: assets and holdings. Pending orders' reservations are already applied.
#[derive(Debug, Clone, Default)]
pub struct Exchange {
    assets: BTreeMap<Symbol, Asset>,
    holdings: HashMap<(AccountId, Symbol), u64>,
    /// Units of each asset reserved by pending orders (buys and sells).
    pending: HashMap<Symbol, u64>,
}

impl Exchange {
    pub fn new() -> Self {
        Self::default()
    }

    /// Loads stored state.
    pub fn restore_asset(&mut self, asset: Asset) {
        self.assets.insert(asset.symbol.clone(), asset);
    }
    pub fn restore_holding(&mut self, user: AccountId, symbol: Symbol, quantity: u64) {
        if quantity > 0 {
            self.holdings.insert((user, symbol), quantity);
        }
    }
    pub fn restore_pending(&mut self, order: &Order) {
        *self.pending.entry(order.symbol.clone()).or_default() += order.quantity;
    }

    pub fn asset(&self, symbol: &Symbol) -> Option<&Asset> {
        self.assets.get(symbol)
    }

    pub fn assets(&self) -> impl Iterator<Item = &Asset> {
        self.assets.values()
    }

    pub fn holding(&self, user: &AccountId, symbol: &Symbol) -> u64 {
        self.holdings.get(&(user.clone(), symbol.clone())).copied().unwrap_or(0)
    }

    /// A user's holdings, by symbol.
    pub fn holdings_of(&self, user: &AccountId) -> BTreeMap<Symbol, u64> {
        self.holdings
            .iter()
            .filter(|((holder, _), _)| holder == user)
            .map(|((_, symbol), quantity)| (symbol.clone(), *quantity))
            .collect()
    }

    /// Lists a new asset.
    pub fn add(&mut self, asset: Asset) -> Result<(), CoinsError> {
        if self.assets.contains_key(&asset.symbol) {
            return Err(CoinsError::Exists(asset.symbol.to_string()));
        }
        self.assets.insert(asset.symbol.clone(), asset);
        Ok(())
    }

    /// Delists an asset nobody holds and no order is pending on.
    pub fn remove(&mut self, symbol: &Symbol) -> Result<Asset, CoinsError> {
        if !self.assets.contains_key(symbol) {
            return Err(CoinsError::UnknownSymbol(symbol.to_string()));
        }
        let held = self.holdings.keys().any(|(_, s)| s == symbol);
        if held || self.pending.get(symbol).is_some_and(|n| *n > 0) {
            return Err(CoinsError::InUse(symbol.to_string()));
        }
        self.assets.remove(symbol).ok_or_else(|| CoinsError::UnknownSymbol(symbol.to_string()))
    }

    /// Sets an asset's price and/or available units; returns the asset before and after.
    pub fn update(
        &mut self,
        symbol: &Symbol,
        price: Option<u64>,
        available: Option<u64>,
    ) -> Result<(Asset, Asset), CoinsError> {
        let asset = self
            .assets
            .get_mut(symbol)
            .ok_or_else(|| CoinsError::UnknownSymbol(symbol.to_string()))?;
        let before = asset.clone();
        if let Some(price) = price {
            asset.price = price;
        }
        if let Some(available) = available {
            asset.available = available;
        }
        Ok((before, asset.clone()))
    }

    /// Checks an order and reserves what it sells: step 1 of an order.
    pub fn reserve(
        &mut self,
        user: AccountId,
        id: String,
        symbol: Symbol,
        side: Side,
        quantity: u64,
    ) -> Result<Order, CoinsError> {
        let asset = self
            .assets
            .get_mut(&symbol)
            .ok_or_else(|| CoinsError::UnknownSymbol(symbol.to_string()))?;
        let total = asset
            .price
            .checked_mul(quantity)
            .filter(|total| i64::try_from(*total).is_ok())
            .ok_or(CoinsError::Overflow)?;
        match side {
            Side::Buy => {
                if asset.available < quantity {
                    return Err(CoinsError::InsufficientQuantity {
                        symbol: symbol.to_string(),
                        wanted: quantity,
                        available: asset.available,
                    });
                }
                asset.available -= quantity;
            }
            Side::Sell => {
                let key = (user.clone(), symbol.clone());
                let held = self.holdings.get(&key).copied().unwrap_or(0);
                if held < quantity {
                    return Err(CoinsError::InsufficientHolding {
                        user: user.to_string(),
                        symbol: symbol.to_string(),
                        wanted: quantity,
                        held,
                    });
                }
                if held == quantity {
                    self.holdings.remove(&key);
                } else {
                    self.holdings.insert(key, held - quantity);
                }
            }
        }
        let unit_price = asset.price;
        *self.pending.entry(symbol.clone()).or_default() += quantity;
        Ok(Order { user, id, symbol, side, quantity, unit_price, total })
    }

    /// Ends a pending order: `paid` moves the units to their new owner, otherwise the
    /// reservation is given back. Returns the user's holding of the symbol afterwards.
    pub fn settle(&mut self, order: &Order, paid: bool) -> u64 {
        if let Some(pending) = self.pending.get_mut(&order.symbol) {
            *pending = pending.saturating_sub(order.quantity);
        }
        let to_user = matches!((order.side, paid), (Side::Buy, true) | (Side::Sell, false));
        if to_user {
            let holding =
                self.holdings.entry((order.user.clone(), order.symbol.clone())).or_default();
            *holding = holding.saturating_add(order.quantity);
        } else if let Some(asset) = self.assets.get_mut(&order.symbol) {
            asset.available = asset.available.saturating_add(order.quantity);
        }
        self.holding(&order.user, &order.symbol)
    }

    /// Units of `symbol` reserved by pending orders.
    pub fn pending(&self, symbol: &Symbol) -> u64 {
        self.pending.get(symbol).copied().unwrap_or(0)
    }
}

/// The catalogue a new exchange starts with (prices in cents).
pub fn seed() -> Vec<Asset> {
    [
        ("BTC", "Bitcoin", 6_500_000, 100),
        ("ETH", "Ether", 320_000, 1_000),
        ("AMZN", "Amazon.com Inc.", 18_500, 10_000),
        ("MSFT", "Microsoft Corp.", 42_000, 10_000),
        ("TSLA", "Tesla Inc.", 25_000, 10_000),
    ]
    .into_iter()
    .map(|(symbol, name, price, available)| Asset {
        symbol: Symbol(symbol.to_owned()),
        name: name.to_owned(),
        price,
        available,
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_order_settles_once_from_pending() {
        for state in OrderState::ALL {
            assert_eq!(OrderState::parse(state.as_str()), Ok(state));
            for paid in [true, false] {
                let next = state.settle(paid);
                match state {
                    OrderState::Pending => {
                        let expected = if paid { OrderState::Done } else { OrderState::Failed };
                        assert_eq!(next, Ok(expected));
                        assert!(!expected.is_pending());
                    }
                    settled => assert_eq!(next, Err(CoinsError::Settled(settled))),
                }
            }
        }
        assert!(OrderState::parse("PENDING").is_err());
        assert!(OrderState::parse("").is_err());
        assert_eq!(Side::parse("buy"), Ok(Side::Buy));
        assert_eq!(Side::parse("sell"), Ok(Side::Sell));
        assert!(Side::parse("hold").is_err(), "a corrupt side is an error, never a sale");
    }

    fn user(name: &str) -> AccountId {
        AccountId::parse(name).expect("valid")
    }
    fn sym(s: &str) -> Symbol {
        Symbol::parse(s).expect("valid")
    }
    fn exchange() -> Exchange {
        let mut exchange = Exchange::new();
        for asset in seed() {
            exchange.add(asset).expect("new");
        }
        exchange
    }

    #[test]
    fn values_are_checked() {
        for bad in ["", "btc", "B-TC", "ABCDEFGHIJK"] {
            assert!(Symbol::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(price(0), Err(CoinsError::InvalidPrice(0)));
        assert_eq!(price(-5), Err(CoinsError::InvalidPrice(-5)));
        assert_eq!(quantity(0), Err(CoinsError::InvalidQuantity(0)));
        assert_eq!(quantity(-1), Err(CoinsError::InvalidQuantity(-1)));
        assert!(quantity(i64::MAX).is_err());
        assert_eq!(stock(0), Ok(0));
        assert!(check_name("Bitcoin").is_ok());
        assert!(
            check_name("").is_err() && check_name("a\nb").is_err() && check_name("  ").is_err()
        );
        assert!(check_order_id("order-1").is_ok());
        assert!(check_order_id("has space").is_err() && check_order_id("").is_err());
    }

    #[test]
    fn a_buy_reserves_then_settles_or_gives_back() {
        let mut e = exchange();
        let btc = sym("BTC");
        let order = e.reserve(user("alice"), "o1".into(), btc.clone(), Side::Buy, 3).expect("ok");
        assert_eq!((order.unit_price, order.total), (6_500_000, 19_500_000));
        assert_eq!((e.asset(&btc).expect("listed").available, e.pending(&btc)), (97, 3));
        assert_eq!(e.settle(&order, true), 3);
        assert_eq!((e.asset(&btc).expect("listed").available, e.pending(&btc)), (97, 0));
        let refused = e.reserve(user("bob"), "o2".into(), btc.clone(), Side::Buy, 5).expect("ok");
        assert_eq!(e.settle(&refused, false), 0, "unpaid: nothing to bob");
        assert_eq!(e.asset(&btc).expect("listed").available, 97, "the units are back");
    }

    #[test]
    fn never_oversold_and_never_sold_short() {
        let mut e = exchange();
        let btc = sym("BTC");
        let all = e.reserve(user("a"), "1".into(), btc.clone(), Side::Buy, 100).expect("all");
        assert!(matches!(
            e.reserve(user("b"), "2".into(), btc.clone(), Side::Buy, 1),
            Err(CoinsError::InsufficientQuantity { available: 0, .. })
        ));
        e.settle(&all, true);
        assert!(matches!(
            e.reserve(user("a"), "3".into(), btc.clone(), Side::Sell, 101),
            Err(CoinsError::InsufficientHolding { held: 100, .. })
        ));
        let sell = e.reserve(user("a"), "4".into(), btc.clone(), Side::Sell, 60).expect("held");
        assert_eq!(e.holding(&user("a"), &btc), 40, "reserved while the payment is pending");
        assert!(e.reserve(user("a"), "5".into(), btc.clone(), Side::Sell, 41).is_err());
        assert_eq!(e.settle(&sell, false), 100, "an unpaid sell gives the units back");
        let sell = e.reserve(user("a"), "6".into(), btc.clone(), Side::Sell, 100).expect("held");
        assert_eq!(e.settle(&sell, true), 0);
        assert_eq!(e.asset(&btc).expect("listed").available, 100);
        assert!(e.holdings_of(&user("a")).is_empty());
    }

    #[test]
    fn totals_fit_the_bank_and_unknown_symbols_are_refused() {
        let mut e = exchange();
        e.update(&sym("BTC"), Some(u64::MAX / 2), Some(QUANTITY_MAX)).expect("listed");
        assert_eq!(
            e.reserve(user("a"), "1".into(), sym("BTC"), Side::Buy, 10),
            Err(CoinsError::Overflow)
        );
        assert!(matches!(
            e.reserve(user("a"), "2".into(), sym("NOPE"), Side::Buy, 1),
            Err(CoinsError::UnknownSymbol(_))
        ));
    }

    #[test]
    fn manager_operations() {
        let mut e = exchange();
        let doge = Asset { symbol: sym("DOGE"), name: "Dogecoin".into(), price: 10, available: 5 };
        e.add(doge.clone()).expect("new");
        assert_eq!(e.add(doge), Err(CoinsError::Exists("DOGE".into())));
        let (before, after) = e.update(&sym("DOGE"), Some(12), None).expect("listed");
        assert_eq!((before.price, after.price, after.available), (10, 12, 5));
        let order = e.reserve(user("a"), "1".into(), sym("DOGE"), Side::Buy, 1).expect("ok");
        assert_eq!(e.remove(&sym("DOGE")), Err(CoinsError::InUse("DOGE".into())), "pending");
        e.settle(&order, true);
        assert_eq!(e.remove(&sym("DOGE")), Err(CoinsError::InUse("DOGE".into())), "held");
        let sell = e.reserve(user("a"), "2".into(), sym("DOGE"), Side::Sell, 1).expect("ok");
        e.settle(&sell, true);
        assert_eq!(e.remove(&sym("DOGE")).expect("free").symbol, sym("DOGE"));
        assert!(matches!(e.remove(&sym("DOGE")), Err(CoinsError::UnknownSymbol(_))));
    }
}
