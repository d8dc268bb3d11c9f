//! The coin exchange's SQLite store: the catalogue and the trade log.
//!
//! Holdings and the exchange's inventory are not here: they are balances in the ledger, and an
//! order is a linked pair of ledger transfers. The trade log is what the ledger's events of the
//! exchange's account tell (see `super::trades`), kept for `agora.coins.history`.
//!
//! Functions over the connection of the exchange's owner thread (see `crate::owner`), run in
//! the transaction it opened.

use std::path::Path;

use agora_core::AccountId;
use agora_core::coins::{Asset, Side, Symbol};
use rusqlite::{Connection, OptionalExtension, params};

use crate::coins::wire::OrderView;
use crate::sqlite::{self, StoreError};

/// File name of the coins database inside its data directory.
pub const DATABASE_FILE: &str = "coins.db";
const PAGE_CACHE_BYTES_MAX: i64 = 8 * 1024 * 1024;
/// A catalogue change is on disk (fsynced) before the manager hears of it.
pub const SYNCHRONOUS: &str = "FULL";

const MIGRATION_1: &str = "
    CREATE TABLE assets (
        symbol TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        price INTEGER NOT NULL,
        available INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE holdings (
        user TEXT NOT NULL,
        symbol TEXT NOT NULL,
        quantity INTEGER NOT NULL,
        PRIMARY KEY (user, symbol)
    ) WITHOUT ROWID;
    CREATE TABLE orders (
        seq INTEGER PRIMARY KEY,
        user TEXT NOT NULL,
        id TEXT NOT NULL,
        symbol TEXT NOT NULL,
        side TEXT NOT NULL,
        quantity INTEGER NOT NULL,
        unit_price INTEGER NOT NULL,
        total INTEGER NOT NULL,
        state TEXT NOT NULL,
        error TEXT,
        created_ms INTEGER NOT NULL,
        settled_ms INTEGER,
        holding INTEGER,
        UNIQUE (user, id)
    );
    CREATE INDEX orders_pending ON orders (seq) WHERE state = 'pending';
    CREATE INDEX orders_done ON orders (settled_ms) WHERE state = 'done';
    CREATE INDEX orders_done_by_user ON orders (user, settled_ms) WHERE state = 'done';
    CREATE TABLE meta (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    ) WITHOUT ROWID;
";

/// Holdings, inventory and orders moved to the ledger: the catalogue keeps prices, and the
/// trade log is filled from the ledger's events. (Holdings of an exchange before this version
/// are not carried over.)
const MIGRATION_2: &str = "
    DROP TABLE holdings;
    DROP TABLE orders;
    ALTER TABLE assets DROP COLUMN available;
    CREATE TABLE trades (
        user TEXT NOT NULL,
        id TEXT NOT NULL,
        symbol TEXT,
        side TEXT,
        quantity INTEGER,
        total INTEGER,
        at_ms INTEGER NOT NULL,
        PRIMARY KEY (user, id)
    ) WITHOUT ROWID;
    CREATE INDEX trades_by_time ON trades (at_ms) WHERE total IS NOT NULL;
    CREATE INDEX trades_by_user ON trades (user, at_ms) WHERE total IS NOT NULL;
";

const TRADE_COLUMNS: &str = "user, id, symbol, side, quantity, total, at_ms";

/// One leg of a trade as an event of the exchange's account told it: the units (symbol, side,
/// quantity) or the money (total).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TradeLeg {
    pub user: AccountId,
    pub id: String,
    pub at_ms: u64,
    pub part: TradePart,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TradePart {
    Units { symbol: Symbol, side: Side, quantity: u64 },
    Pay { total: u64 },
}

/// A column that does not parse: the row is corrupt (an error, never a default).
fn corrupt(column: usize, error: impl std::fmt::Display) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        column,
        rusqlite::types::Type::Text,
        error.to_string().into(),
    )
}

/// A whole trade (both legs logged) as an order.
fn trade(row: &rusqlite::Row<'_>) -> rusqlite::Result<OrderView> {
    let user: String = row.get(0)?;
    AccountId::parse(&user).map_err(|e| corrupt(0, e))?;
    let symbol: String = row.get(2)?;
    Symbol::parse(&symbol).map_err(|e| corrupt(2, e))?;
    let side: String = row.get(3)?;
    let side = Side::parse(&side).map_err(|e| corrupt(3, e))?;
    let quantity: u64 = row.get(4)?;
    let total: u64 = row.get(5)?;
    let at_ms: u64 = row.get(6)?;
    Ok(OrderView {
        id: row.get(1)?,
        user,
        symbol,
        side: side.as_str().to_owned(),
        quantity,
        unit_price: total.checked_div(quantity).unwrap_or(0),
        total,
        state: OrderView::DONE.to_owned(),
        created_ms: at_ms,
        settled_ms: at_ms,
        holding: None,
    })
}

/// Opens (creating if needed) the coins database in `data_dir`.
pub fn open(data_dir: &Path) -> Result<Connection, StoreError> {
    sqlite::open_wal(data_dir, DATABASE_FILE, PAGE_CACHE_BYTES_MAX, &[MIGRATION_1, MIGRATION_2])
}

/// A flag of the store (`seeded`: the catalogue was seeded; `stocked`: the seed's units were
/// deposited to the exchange's ledger account).
pub fn flag(conn: &Connection, key: &str) -> Result<bool, StoreError> {
    Ok(meta(conn, key)?.is_some())
}

/// A value of the `meta` table.
fn meta(conn: &Connection, key: &str) -> Result<Option<String>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT value FROM meta WHERE key = ?1")?
        .query_row([key], |row| row.get(0))
        .optional()?)
}

pub fn set_flag(conn: &Connection, key: &str) -> Result<(), StoreError> {
    conn.prepare_cached("INSERT OR IGNORE INTO meta (key, value) VALUES (?1, '1')")?
        .execute([key])?;
    Ok(())
}

/// The meta key of the trade log's position in `AGORA_EVENTS`.
const TRADE_POSITION: &str = "trade_log_position";

/// The stream sequence of the last of the exchange's events the trade log has read (0: none).
pub fn trade_position(conn: &Connection) -> Result<u64, StoreError> {
    meta(conn, TRADE_POSITION)?.map_or(Ok(0), |value| {
        value.parse().map_err(|e| StoreError::Corrupt(format!("trade log position {value}: {e}")))
    })
}

/// Sets the trade log's position to `seq`, the last event it read. Only the active instance
/// commits, reading in stream order, so the position only moves back when it starts again on an
/// event stream that was made again from nothing (see `super::trades`).
pub fn set_trade_position(conn: &Connection, seq: u64) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO meta (key, value) VALUES (?1, ?2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    )?
    .execute(params![TRADE_POSITION, seq.to_string()])?;
    Ok(())
}

pub fn assets(conn: &Connection) -> Result<Vec<Asset>, StoreError> {
    let mut statement = conn.prepare("SELECT symbol, name, price FROM assets")?;
    let rows = statement.query_map([], |row| {
        let symbol: String = row.get(0)?;
        Ok(Asset {
            symbol: Symbol::parse(&symbol).map_err(|e| corrupt(0, e))?,
            name: row.get(1)?,
            price: row.get(2)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub fn put_asset(conn: &Connection, asset: &Asset) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO assets (symbol, name, price) VALUES (?1, ?2, ?3)
             ON CONFLICT (symbol) DO UPDATE SET name = excluded.name, price = excluded.price",
    )?
    .execute(params![asset.symbol.as_str(), asset.name, asset.price])?;
    Ok(())
}

pub fn delete_asset(conn: &Connection, symbol: &Symbol) -> Result<(), StoreError> {
    conn.execute("DELETE FROM assets WHERE symbol = ?1", [symbol.as_str()])?;
    Ok(())
}

/// Logs legs of trades (again is a no-op: events may come twice); the legs of one trade that
/// come together are written as one row.
pub fn log_legs(conn: &Connection, legs: &[TradeLeg]) -> Result<(), StoreError> {
    /// One row: what the legs seen so far tell (a leg seen twice tells the same again).
    #[derive(Default)]
    struct Row<'a> {
        symbol: Option<&'a str>,
        side: Option<&'a str>,
        quantity: Option<u64>,
        total: Option<u64>,
    }
    let mut rows: Vec<(&TradeLeg, Row<'_>)> = Vec::with_capacity(legs.len());
    let mut index: std::collections::HashMap<(&str, &str), usize> =
        std::collections::HashMap::with_capacity(legs.len());
    for leg in legs {
        let at = *index.entry((leg.user.as_str(), leg.id.as_str())).or_insert_with(|| {
            rows.push((leg, Row::default()));
            rows.len() - 1
        });
        let row = &mut rows[at].1;
        match &leg.part {
            TradePart::Units { symbol, side, quantity } => {
                (row.symbol, row.side) = (Some(symbol.as_str()), Some(side.as_str()));
                row.quantity = Some(*quantity);
            }
            TradePart::Pay { total } => row.total = Some(*total),
        }
    }
    let mut statement = conn.prepare_cached(
        "INSERT INTO trades (user, id, symbol, side, quantity, total, at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (user, id) DO UPDATE SET
             symbol = COALESCE(excluded.symbol, symbol),
             side = COALESCE(excluded.side, side),
             quantity = COALESCE(excluded.quantity, quantity),
             total = COALESCE(excluded.total, total)",
    )?;
    for (first, row) in rows {
        statement.execute(params![
            first.user.as_str(),
            first.id,
            row.symbol,
            row.side,
            row.quantity,
            row.total,
            sqlite::saturating_i64(first.at_ms)
        ])?;
    }
    Ok(())
}

/// A logged trade (both legs), by user and order id.
pub fn find_trade(
    conn: &Connection,
    user: &str,
    id: &str,
) -> Result<Option<OrderView>, StoreError> {
    let sql = format!(
        "SELECT {TRADE_COLUMNS} FROM trades WHERE user = ?1 AND id = ?2
           AND quantity IS NOT NULL AND total IS NOT NULL"
    );
    Ok(conn.prepare_cached(&sql)?.query_row(params![user, id], trade).optional()?)
}

/// Trades in `[from, to)`, of `user` if given, newest first; and whether more matched than
/// `limit`.
pub fn history(
    conn: &Connection,
    user: Option<&str>,
    from: Option<u64>,
    to: Option<u64>,
    limit: usize,
) -> Result<(Vec<OrderView>, bool), StoreError> {
    let mut statement = conn.prepare_cached(&format!(
        "SELECT {TRADE_COLUMNS} FROM trades
         WHERE total IS NOT NULL AND quantity IS NOT NULL AND (?1 IS NULL OR user = ?1)
           AND at_ms >= ?2 AND at_ms < ?3
         ORDER BY at_ms DESC, user DESC, id DESC LIMIT ?4"
    ))?;
    let rows = statement.query_map(
        params![
            user,
            sqlite::saturating_i64(from.unwrap_or(0)),
            sqlite::saturating_i64(to.unwrap_or(u64::MAX)),
            limit + 1
        ],
        trade,
    )?;
    let mut orders: Vec<OrderView> = rows.collect::<Result<_, _>>()?;
    let more = orders.len() > limit;
    orders.truncate(limit);
    Ok((orders, more))
}

#[cfg(test)]
mod tests;
