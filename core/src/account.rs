//! Validated domain values: parse, don't validate.
//!
//! Every value that crosses the wire is parsed into one of these types once, at the boundary;
//! past that point the rest of the system can rely on the invariants they carry.

use std::fmt;

/// Longest account name, in bytes (names are ASCII).
pub const ACCOUNT_ID_LENGTH_MAX: usize = 64;
/// Longest client-chosen operation id, in bytes.
pub const OPERATION_ID_LENGTH_MAX: usize = 128;
/// Longest operation id as recorded: a person's ids are recorded as `<user>/<id>`, so one
/// person's ids can neither collide with nor reveal another's.
pub const OPERATION_ID_RECORDED_MAX: usize =
    OPERATION_ID_LENGTH_MAX + crate::identity::USER_NAME_BYTES_MAX + 1;

/// A balance in integer minor units. Never negative in a committed state.
pub type Balance = i64;

/// Why a value was refused at the boundary.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error(
        "account name must be 1-{ACCOUNT_ID_LENGTH_MAX} characters of [A-Za-z0-9_-], got {0:?}"
    )]
    Account(String),
    #[error("amount must be a positive integer number of minor units, got {0}")]
    Amount(i64),
    #[error("operation id must be 1-{OPERATION_ID_LENGTH_MAX} printable ASCII characters")]
    OperationId,
    #[error("asset must be \"money\" or 1-10 characters of A-Z 0-9, got {0:?}")]
    Asset(String),
}

/// An account name: 1 to 64 characters of `[A-Za-z0-9_-]`.
///
/// The character set is a subset of what a NATS subject token allows, so an account can be
/// the last token of a subject such as `agora.ledger.lock.<account>`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AccountId(String);

impl AccountId {
    pub fn parse(name: &str) -> Result<Self, ParseError> {
        if !crate::token::is_word(name, ACCOUNT_ID_LENGTH_MAX) {
            return Err(ParseError::Account(truncate_for_message(name)));
        }
        Ok(Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A strictly positive amount of money in minor units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Amount(i64);

impl Amount {
    pub fn parse(minor_units: i64) -> Result<Self, ParseError> {
        if minor_units <= 0 {
            return Err(ParseError::Amount(minor_units));
        }
        Ok(Self(minor_units))
    }

    pub fn get(self) -> i64 {
        self.0
    }
}

/// A client-chosen idempotency key: 1 to 128 printable ASCII characters (no spaces).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OperationId(String);

impl OperationId {
    /// A client's id: 1 to [`OPERATION_ID_LENGTH_MAX`] printable ASCII characters.
    pub fn parse(id: &str) -> Result<Self, ParseError> {
        Self::parse_within(id, OPERATION_ID_LENGTH_MAX)
    }

    /// An id as recorded (a client's, or a person's scoped one): at most
    /// [`OPERATION_ID_RECORDED_MAX`].
    pub fn parse_recorded(id: &str) -> Result<Self, ParseError> {
        Self::parse_within(id, OPERATION_ID_RECORDED_MAX)
    }

    fn parse_within(id: &str, max: usize) -> Result<Self, ParseError> {
        if id.is_empty() || id.len() > max || !id.chars().all(|c| c.is_ascii_graphic()) {
            return Err(ParseError::OperationId);
        }
        Ok(Self(id.to_owned()))
    }

    /// The id `owner` chose, as recorded: `<owner>/<id>`.
    pub fn scoped(owner: &crate::identity::UserName, id: &OperationId) -> Self {
        Self(format!("{owner}/{id}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for OperationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An asset code: `money` (the bank's minor units), or a symbol of 1 to 10 characters of
/// `A-Z 0-9` (`BTC`, `TSLA`). Balances are kept per account and asset.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Asset(String);

/// The code of money.
pub const MONEY: &str = "money";
/// Longest asset symbol, in characters.
pub const ASSET_SYMBOL_LENGTH_MAX: usize = 10;

impl Asset {
    pub fn money() -> Self {
        Self(MONEY.to_owned())
    }

    pub fn parse(code: &str) -> Result<Self, ParseError> {
        let symbol = !code.is_empty()
            && code.len() <= ASSET_SYMBOL_LENGTH_MAX
            && code.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit());
        if code != MONEY && !symbol {
            return Err(ParseError::Asset(truncate_for_message(code)));
        }
        Ok(Self(code.to_owned()))
    }

    pub fn is_money(&self) -> bool {
        self.0 == MONEY
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for Asset {
    fn default() -> Self {
        Self::money()
    }
}

impl fmt::Display for Asset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Error messages echo the offending value, but never an unbounded amount of it.
fn truncate_for_message(value: &str) -> String {
    const ECHO_CHARS_MAX: usize = 80;
    value.chars().take(ECHO_CHARS_MAX).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assets_are_money_or_symbols() {
        for good in ["money", "BTC", "TSLA", "A", "X1", "ABCDEFGHIJ"] {
            assert_eq!(Asset::parse(good).map(|a| a.to_string()), Ok(good.to_string()));
        }
        for bad in ["", "Money", "btc", "ABCDEFGHIJK", "B-C", "B C", "MONEY ", "é"] {
            assert!(Asset::parse(bad).is_err(), "{bad:?} must be refused");
        }
        assert!(Asset::default().is_money());
    }

    #[test]
    fn account_names_follow_the_documented_alphabet() {
        for good in ["a", "alice", "Bob_2", "x-y", &"z".repeat(64)] {
            assert_eq!(AccountId::parse(good).map(|a| a.to_string()), Ok(good.to_string()));
        }
        for bad in ["", &"z".repeat(65), "a.b", "a b", "a*", "a>", "ä", "a/b", "\u{0}"] {
            assert!(AccountId::parse(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn amounts_are_strictly_positive() {
        assert_eq!(Amount::parse(1).map(Amount::get), Ok(1));
        assert_eq!(Amount::parse(i64::MAX).map(Amount::get), Ok(i64::MAX));
        assert_eq!(Amount::parse(0), Err(ParseError::Amount(0)));
        assert_eq!(Amount::parse(-5), Err(ParseError::Amount(-5)));
        assert!(Amount::parse(i64::MIN).is_err());
        let alice = crate::identity::UserName::parse(&"a".repeat(32)).unwrap();
        let longest = OperationId::parse(&"x".repeat(OPERATION_ID_LENGTH_MAX)).unwrap();
        let scoped = OperationId::scoped(&alice, &longest);
        assert_eq!(scoped.as_str().len(), OPERATION_ID_RECORDED_MAX);
        assert_eq!(OperationId::parse_recorded(scoped.as_str()), Ok(scoped.clone()));
        assert!(OperationId::parse(scoped.as_str()).is_err(), "a client's ids are shorter");
    }

    #[test]
    fn operation_ids_are_bounded_printable_ascii() {
        assert!(OperationId::parse("op-1").is_ok());
        assert!(OperationId::parse(&"i".repeat(128)).is_ok());
        for bad in ["", &"i".repeat(129), "has space", "tab\t", "é"] {
            assert_eq!(OperationId::parse(bad), Err(ParseError::OperationId), "{bad:?}");
        }
    }

    #[test]
    fn refused_values_are_echoed_truncated() {
        let long = "∞".repeat(500);
        let ParseError::Account(echo) = AccountId::parse(&long).unwrap_err() else {
            panic!("wrong error");
        };
        assert_eq!(echo.chars().count(), 80);
    }
}
