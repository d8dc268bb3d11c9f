//! The coin exchange's rules: a catalogue of assets with prices, and orders that are one
//! linked pair of ledger transfers.
//!
//! Users' holdings and the exchange's inventory are balances in the ledger (an asset per
//! symbol), so the exchange keeps no positions of its own. An order is priced from the
//! [`Catalogue`] ([`Catalogue::quote`]) and becomes two legs ([`Order::legs`]): money one way and
//! units the other, applied by the ledger as one chain, all or nothing, in one commit. Each leg
//! has an operation id derived from the user and the order id, so the same order again is
//! answered from the ledger's record, applied once.

use std::collections::BTreeMap;
use std::fmt;

use crate::account::{AccountId, Asset as LedgerAsset};

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
    #[error("the order's total overflows")]
    Overflow,
    #[error("{0} is held by users; it cannot be removed")]
    InUse(String),
    #[error("{0} is being removed")]
    Delisting(String),
    #[error("{0:?} is not an order side (buy, sell)")]
    InvalidSide(String),
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

impl Symbol {
    /// The ledger asset of this symbol (a symbol is always a valid asset code).
    pub fn asset(&self) -> LedgerAsset {
        LedgerAsset::parse(&self.0).unwrap_or_default()
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
    if crate::token::is_word_with(id, ORDER_ID_BYTES_MAX, b".:") {
        Ok(())
    } else {
        Err(CoinsError::InvalidOrderId(id.chars().take(60).collect()))
    }
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

/// A listed asset: what the exchange sells and at what price. Its units are balances in the
/// ledger (the exchange's account holds the inventory).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Asset {
    pub symbol: Symbol,
    pub name: String,
    /// Minor units per unit.
    pub price: u64,
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

/// An order, priced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    pub user: AccountId,
    pub id: String,
    pub symbol: Symbol,
    pub side: Side,
    pub quantity: u64,
    pub unit_price: u64,
    pub total: u64,
}

/// Which of an order's two legs: the money, or the units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LegKind {
    Pay,
    Units,
}

impl LegKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pay => "pay",
            Self::Units => "units",
        }
    }
}

/// One leg of an order: a ledger transfer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leg {
    pub kind: LegKind,
    pub from: AccountId,
    pub to: AccountId,
    pub asset: LedgerAsset,
    pub amount: u64,
    /// The ledger operation id (see [`leg_id`]).
    pub id: String,
}

/// Prefix of every ledger operation id of an order leg.
pub const LEG_ID_PREFIX: &str = "coins:";

/// The ledger operation id of a leg: `coins:<user>:<order id>:pay|units`. A person's own ids
/// are recorded as `<person>/<id>`, so no person can take these.
pub fn leg_id(user: &AccountId, order_id: &str, kind: LegKind) -> String {
    format!("{LEG_ID_PREFIX}{user}:{order_id}:{}", kind.as_str())
}

/// The user, order id and leg of a leg id ([`leg_id`]); `None` for any other id.
pub fn parse_leg_id(id: &str) -> Option<(AccountId, String, LegKind)> {
    let rest = id.strip_prefix(LEG_ID_PREFIX)?;
    let (user, rest) = rest.split_once(':')?;
    let (order_id, kind) = rest.rsplit_once(':')?;
    let kind = match kind {
        "pay" => LegKind::Pay,
        "units" => LegKind::Units,
        _ => return None,
    };
    check_order_id(order_id).ok()?;
    Some((AccountId::parse(user).ok()?, order_id.to_owned(), kind))
}

impl Order {
    /// The order's two legs, in the order the ledger applies them: the units first (a buy:
    /// exchange -> user; a sell: user -> exchange), so a shortage of units is what an order hears
    /// of first, then the money the other way. One chain: both or neither.
    pub fn legs(&self, exchange: &AccountId) -> [Leg; 2] {
        let (user, exchange) = (self.user.clone(), exchange.clone());
        let pay = |from: &AccountId, to: &AccountId| Leg {
            kind: LegKind::Pay,
            from: from.clone(),
            to: to.clone(),
            asset: LedgerAsset::money(),
            amount: self.total,
            id: leg_id(&self.user, &self.id, LegKind::Pay),
        };
        let units = |from: &AccountId, to: &AccountId| Leg {
            kind: LegKind::Units,
            from: from.clone(),
            to: to.clone(),
            asset: self.symbol.asset(),
            amount: self.quantity,
            id: leg_id(&self.user, &self.id, LegKind::Units),
        };
        match self.side {
            Side::Buy => [units(&exchange, &user), pay(&user, &exchange)],
            Side::Sell => [units(&user, &exchange), pay(&exchange, &user)],
        }
    }
}

/// The listed assets. A symbol being removed takes no new orders (see [`Catalogue::delist`]).
#[derive(Debug, Clone, Default)]
pub struct Catalogue {
    assets: BTreeMap<Symbol, Asset>,
    delisting: std::collections::BTreeSet<Symbol>,
}

impl Catalogue {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn restore(&mut self, asset: Asset) {
        self.assets.insert(asset.symbol.clone(), asset);
    }

    pub fn asset(&self, symbol: &Symbol) -> Option<&Asset> {
        self.assets.get(symbol)
    }

    pub fn assets(&self) -> impl Iterator<Item = &Asset> {
        self.assets.values()
    }

    pub fn add(&mut self, asset: Asset) -> Result<(), CoinsError> {
        if self.assets.contains_key(&asset.symbol) {
            return Err(CoinsError::Exists(asset.symbol.to_string()));
        }
        self.assets.insert(asset.symbol.clone(), asset);
        Ok(())
    }

    /// Stops new orders of `symbol` while its removal checks that nobody holds it.
    pub fn delist(&mut self, symbol: &Symbol) -> Result<Asset, CoinsError> {
        let asset = self.known(symbol)?.clone();
        if !self.delisting.insert(symbol.clone()) {
            return Err(CoinsError::Delisting(symbol.to_string()));
        }
        Ok(asset)
    }

    /// Ends a removal: `removed` drops the asset, otherwise it takes orders again. Only a
    /// symbol being delisted is dropped (a removal that was interrupted drops nothing).
    pub fn finish_delisting(&mut self, symbol: &Symbol, removed: bool) -> Option<Asset> {
        let delisting = self.delisting.remove(symbol);
        if delisting && removed { self.assets.remove(symbol) } else { None }
    }

    /// A new price: the asset before and after.
    pub fn reprice(&mut self, symbol: &Symbol, price: u64) -> Result<(Asset, Asset), CoinsError> {
        self.known(symbol)?;
        let asset = self.assets.get_mut(symbol).ok_or_else(|| unknown(symbol))?;
        let before = asset.clone();
        asset.price = price;
        Ok((before, asset.clone()))
    }

    /// Prices an order at the asset's current price.
    pub fn quote(
        &self,
        user: AccountId,
        id: String,
        symbol: Symbol,
        side: Side,
        quantity: u64,
    ) -> Result<Order, CoinsError> {
        let asset = self.known(&symbol)?;
        if self.delisting.contains(&symbol) {
            return Err(CoinsError::Delisting(symbol.to_string()));
        }
        let total = asset
            .price
            .checked_mul(quantity)
            .filter(|total| i64::try_from(*total).is_ok())
            .ok_or(CoinsError::Overflow)?;
        Ok(Order { user, id, symbol, side, quantity, unit_price: asset.price, total })
    }

    fn known(&self, symbol: &Symbol) -> Result<&Asset, CoinsError> {
        self.assets.get(symbol).ok_or_else(|| unknown(symbol))
    }
}

fn unknown(symbol: &Symbol) -> CoinsError {
    CoinsError::UnknownSymbol(symbol.to_string())
}

/// The catalogue a new exchange starts with (prices in cents), and the units of each its
/// account is given in the ledger.
pub fn seed() -> Vec<(Asset, u64)> {
    [
        ("BTC", "Bitcoin", 6_500_000, 100),
        ("ETH", "Ether", 320_000, 1_000),
        ("AMZN", "Amazon.com Inc.", 18_500, 10_000),
        ("MSFT", "Microsoft Corp.", 42_000, 10_000),
        ("TSLA", "Tesla Inc.", 25_000, 10_000),
    ]
    .into_iter()
    .map(|(symbol, name, price, units)| {
        (Asset { symbol: Symbol(symbol.to_owned()), name: name.to_owned(), price }, units)
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str) -> AccountId {
        AccountId::parse(name).expect("valid")
    }
    fn sym(s: &str) -> Symbol {
        Symbol::parse(s).expect("valid")
    }
    fn catalogue() -> Catalogue {
        let mut catalogue = Catalogue::new();
        for (asset, _) in seed() {
            catalogue.add(asset).expect("new");
        }
        catalogue
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
        assert!(stock(-1).is_err());
        assert!(check_name("Bitcoin").is_ok());
        for bad in ["", "   ", "a\nb"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_order_id("order-1.a:b_c").is_ok());
        for bad in ["", "a b", "ä", &"x".repeat(49)] {
            assert!(check_order_id(bad).is_err(), "{bad:?}");
        }
        assert_eq!(Side::parse("buy"), Ok(Side::Buy));
        assert_eq!(Side::parse("sell"), Ok(Side::Sell));
        assert!(Side::parse("hold").is_err());
    }

    #[test]
    fn an_order_is_priced_and_becomes_two_legs_in_opposite_directions() {
        let catalogue = catalogue();
        let exchange = user("coins-exchange");
        let buy =
            catalogue.quote(user("alice"), "o1".into(), sym("ETH"), Side::Buy, 3).expect("priced");
        assert_eq!((buy.unit_price, buy.total), (320_000, 960_000));
        let [first, second] = buy.legs(&exchange);
        assert_eq!((first.kind, &first.from, &first.to), (LegKind::Units, &exchange, &buy.user));
        assert_eq!((first.asset.as_str(), first.amount), ("ETH", 3));
        assert_eq!((second.kind, &second.from, &second.to), (LegKind::Pay, &buy.user, &exchange));
        assert!(second.asset.is_money());
        assert_eq!(second.amount, 960_000);
        let sell = Order { side: Side::Sell, ..buy.clone() };
        let [first, second] = sell.legs(&exchange);
        assert_eq!((first.kind, &first.from, &first.to), (LegKind::Units, &sell.user, &exchange));
        assert_eq!((second.kind, &second.from, &second.to), (LegKind::Pay, &exchange, &sell.user));
        for leg in buy.legs(&exchange).iter().chain(sell.legs(&exchange).iter()) {
            assert_eq!(
                parse_leg_id(&leg.id),
                Some((user("alice"), "o1".to_owned(), leg.kind)),
                "{}",
                leg.id
            );
            assert!(crate::OperationId::parse(&leg.id).is_ok(), "a leg id is a ledger id");
        }
        // The longest user and order id still make a valid ledger operation id.
        let long = Order { user: user(&"u".repeat(64)), id: "o".repeat(ORDER_ID_BYTES_MAX), ..buy };
        for leg in long.legs(&exchange) {
            assert!(crate::OperationId::parse(&leg.id).is_ok(), "{}", leg.id);
        }
        for other in ["", "coins:", "coins:alice:o1", "coins:alice:o1:fee", "bank:alice:o1:pay"] {
            assert_eq!(parse_leg_id(other), None, "{other}");
        }
    }

    #[test]
    fn quotes_refuse_unknown_symbols_overflow_and_assets_being_removed() {
        let mut catalogue = catalogue();
        let quote = |c: &Catalogue, symbol: &str, quantity| {
            c.quote(user("alice"), "o".into(), sym(symbol), Side::Buy, quantity)
        };
        assert_eq!(quote(&catalogue, "DOGE", 1), Err(CoinsError::UnknownSymbol("DOGE".into())));
        catalogue.reprice(&sym("BTC"), 10_000_000).expect("listed");
        assert_eq!(quote(&catalogue, "BTC", QUANTITY_MAX), Err(CoinsError::Overflow));
        catalogue.delist(&sym("BTC")).expect("listed");
        assert_eq!(quote(&catalogue, "BTC", 1), Err(CoinsError::Delisting("BTC".into())));
        assert_eq!(catalogue.delist(&sym("BTC")), Err(CoinsError::Delisting("BTC".into())));
        assert_eq!(catalogue.finish_delisting(&sym("BTC"), false), None);
        assert!(quote(&catalogue, "BTC", 1).is_ok(), "a removal that failed lists it again");
        catalogue.delist(&sym("BTC")).expect("listed");
        assert!(catalogue.finish_delisting(&sym("ETH"), true).is_none(), "not being removed");
        assert!(catalogue.asset(&sym("ETH")).is_some());
        assert!(catalogue.finish_delisting(&sym("BTC"), true).is_some());
        assert!(catalogue.asset(&sym("BTC")).is_none());
        assert_eq!(catalogue.delist(&sym("BTC")), Err(CoinsError::UnknownSymbol("BTC".into())));
        let (before, after) = catalogue.reprice(&sym("ETH"), 1).expect("listed");
        assert_eq!((before.price, after.price), (320_000, 1));
        let doge = Asset { symbol: sym("DOGE"), name: "Dogecoin".into(), price: 15 };
        catalogue.add(doge.clone()).expect("new");
        assert_eq!(catalogue.add(doge), Err(CoinsError::Exists("DOGE".into())));
    }
}
