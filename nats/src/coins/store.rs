//! The coin exchange's SQLite store: the catalogue, holdings, and the log of every order.
//!
//! Functions over the connection of the exchange's owner thread (see `crate::owner`), run in
//! the transaction it opened. WAL with `synchronous=FULL`: an
//! order's reservation is durable before the bank is asked to move money, and its settlement
//! before the client hears of it, so a crash between the two is always finished or undone.

use std::path::Path;

use agora_core::AccountId;
use agora_core::coins::{Asset, Order, OrderState, Side, Symbol};
use rusqlite::{Connection, OptionalExtension, params};

use crate::coins::wire::OrderView;
use crate::error::ServiceError;
use crate::sqlite::{self, StoreError};

/// File name of the coins database inside its data directory.
pub const DATABASE_FILE: &str = "coins.db";
const PAGE_CACHE_BYTES_MAX: i64 = 8 * 1024 * 1024;
/// Every commit is on disk (fsynced) before anything else happens: a reservation before the
/// bank moves money, a settlement before the client hears of it.
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

const ORDER_COLUMNS: &str = "seq, user, id, symbol, side, quantity, unit_price, total, state, \
                             error, created_ms, settled_ms, holding";

/// An order as the log has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredOrder {
    /// Position in the exchange's log.
    pub seq: u64,
    pub order: Order,
    pub state: OrderState,
    /// Why a failed order failed.
    pub error: Option<ServiceError>,
    pub created_ms: u64,
    pub settled_ms: Option<u64>,
    /// The user's holding of the symbol after a done order.
    pub holding: Option<u64>,
}

impl From<&StoredOrder> for OrderView {
    fn from(stored: &StoredOrder) -> Self {
        let order = &stored.order;
        OrderView {
            seq: stored.seq,
            id: order.id.clone(),
            user: order.user.to_string(),
            symbol: order.symbol.to_string(),
            side: order.side.as_str().to_owned(),
            quantity: order.quantity,
            unit_price: order.unit_price,
            total: order.total,
            state: stored.state.as_str().to_owned(),
            error: stored.error.clone(),
            created_ms: stored.created_ms,
            settled_ms: stored.settled_ms,
            holding: stored.holding,
        }
    }
}

/// A column that does not parse: the row is corrupt (an error, never a default).
fn corrupt(column: usize, error: impl std::fmt::Display) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        column,
        rusqlite::types::Type::Text,
        error.to_string().into(),
    )
}

fn stored_order(row: &rusqlite::Row<'_>) -> rusqlite::Result<StoredOrder> {
    let text = |column: usize| row.get::<_, String>(column);
    let error: Option<String> = row.get(9)?;
    let error = error
        .map(|text| serde_json::from_str::<ServiceError>(&text).map_err(|e| corrupt(9, e)))
        .transpose()?;
    Ok(StoredOrder {
        seq: row.get(0)?,
        order: Order {
            user: AccountId::parse(&text(1)?).map_err(|e| corrupt(1, e))?,
            id: row.get(2)?,
            symbol: Symbol::parse(&text(3)?).map_err(|e| corrupt(3, e))?,
            side: Side::parse(&text(4)?).map_err(|e| corrupt(4, e))?,
            quantity: row.get(5)?,
            unit_price: row.get(6)?,
            total: row.get(7)?,
        },
        state: OrderState::parse(&text(8)?).map_err(|e| corrupt(8, e))?,
        error,
        created_ms: row.get(10)?,
        settled_ms: row.get(11)?,
        holding: row.get(12)?,
    })
}

/// Opens (creating if needed) the coins database in `data_dir`.
pub fn open(data_dir: &Path) -> Result<Connection, StoreError> {
    sqlite::open_wal(data_dir, DATABASE_FILE, PAGE_CACHE_BYTES_MAX, &[MIGRATION_1])
}

/// Whether the catalogue was ever seeded (it is seeded once, on the first start).
pub fn seeded(conn: &Connection) -> Result<bool, StoreError> {
    let value: Option<String> = conn
        .query_row("SELECT value FROM meta WHERE key = 'seeded'", [], |row| row.get(0))
        .optional()?;
    Ok(value.is_some())
}

pub fn mark_seeded(conn: &Connection) -> Result<(), StoreError> {
    conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('seeded', '1')", [])?;
    Ok(())
}

pub fn assets(conn: &Connection) -> Result<Vec<Asset>, StoreError> {
    let mut statement = conn.prepare("SELECT symbol, name, price, available FROM assets")?;
    let rows = statement.query_map([], |row| {
        let symbol: String = row.get(0)?;
        Ok(Asset {
            symbol: Symbol::parse(&symbol).map_err(|e| corrupt(0, e))?,
            name: row.get(1)?,
            price: row.get(2)?,
            available: row.get(3)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub fn holdings(conn: &Connection) -> Result<Vec<(AccountId, Symbol, u64)>, StoreError> {
    let mut statement = conn.prepare("SELECT user, symbol, quantity FROM holdings")?;
    let rows = statement.query_map([], |row| {
        let (user, symbol): (String, String) = (row.get(0)?, row.get(1)?);
        Ok((
            AccountId::parse(&user).map_err(|e| corrupt(0, e))?,
            Symbol::parse(&symbol).map_err(|e| corrupt(1, e))?,
            row.get(2)?,
        ))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub fn put_asset(conn: &Connection, asset: &Asset) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO assets (symbol, name, price, available) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (symbol) DO UPDATE SET
                name = excluded.name, price = excluded.price, available = excluded.available",
    )?
    .execute(params![asset.symbol.as_str(), asset.name, asset.price, asset.available])?;
    Ok(())
}

pub fn delete_asset(conn: &Connection, symbol: &Symbol) -> Result<(), StoreError> {
    conn.execute("DELETE FROM assets WHERE symbol = ?1", [symbol.as_str()])?;
    Ok(())
}

/// Stores a holding (a zero holding is deleted).
pub fn set_holding(
    conn: &Connection,
    user: &AccountId,
    symbol: &Symbol,
    quantity: u64,
) -> Result<(), StoreError> {
    if quantity == 0 {
        conn.prepare_cached("DELETE FROM holdings WHERE user = ?1 AND symbol = ?2")?
            .execute(params![user.as_str(), symbol.as_str()])?;
    } else {
        conn.prepare_cached(
            "INSERT INTO holdings (user, symbol, quantity) VALUES (?1, ?2, ?3)
                 ON CONFLICT (user, symbol) DO UPDATE SET quantity = excluded.quantity",
        )?
        .execute(params![user.as_str(), symbol.as_str(), quantity])?;
    }
    Ok(())
}

/// Records a reserved order as pending; returns its position in the log.
pub fn insert_order(conn: &Connection, order: &Order, created_ms: u64) -> Result<u64, StoreError> {
    conn.prepare_cached(
        "INSERT INTO orders (user, id, symbol, side, quantity, unit_price, total, state,
                                 created_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'pending', ?8)",
    )?
    .execute(params![
        order.user.as_str(),
        order.id,
        order.symbol.as_str(),
        order.side.as_str(),
        order.quantity,
        order.unit_price,
        order.total,
        created_ms
    ])?;
    sqlite::rowid(conn.last_insert_rowid())
}

/// Ends a pending order (see `OrderState::settle`): `done` with the user's holding
/// afterwards, or `failed` with why.
pub fn settle_order(
    conn: &Connection,
    seq: u64,
    state: OrderState,
    error: Option<&ServiceError>,
    settled_ms: u64,
    holding: u64,
) -> Result<(), StoreError> {
    let (error, holding) = match state {
        OrderState::Failed => (error.and_then(|e| serde_json::to_string(e).ok()), None),
        _ => (None, Some(holding)),
    };
    let state = state.as_str();
    conn.prepare_cached(
        "UPDATE orders SET state = ?2, error = ?3, settled_ms = ?4, holding = ?5
             WHERE seq = ?1 AND state = 'pending'",
    )?
    .execute(params![seq, state, error, settled_ms, holding])?;
    Ok(())
}

pub fn find_order(
    conn: &Connection,
    user: &str,
    id: &str,
) -> Result<Option<StoredOrder>, StoreError> {
    let sql = format!("SELECT {ORDER_COLUMNS} FROM orders WHERE user = ?1 AND id = ?2");
    Ok(conn.prepare_cached(&sql)?.query_row(params![user, id], stored_order).optional()?)
}

pub fn order(conn: &Connection, seq: u64) -> Result<Option<StoredOrder>, StoreError> {
    let sql = format!("SELECT {ORDER_COLUMNS} FROM orders WHERE seq = ?1");
    Ok(conn.prepare_cached(&sql)?.query_row([seq], stored_order).optional()?)
}

/// Pending orders, oldest first (at most `limit`).
pub fn pending(conn: &Connection, limit: usize) -> Result<Vec<StoredOrder>, StoreError> {
    let mut statement = conn.prepare_cached(&format!(
        "SELECT {ORDER_COLUMNS} FROM orders WHERE state = 'pending' ORDER BY seq LIMIT ?1"
    ))?;
    let rows = statement.query_map([limit], stored_order)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Done orders settled in `[from, to)`, of `user` if given, newest first; and whether more
/// matched than `limit`.
pub fn history(
    conn: &Connection,
    user: Option<&str>,
    from: Option<u64>,
    to: Option<u64>,
    limit: usize,
) -> Result<(Vec<StoredOrder>, bool), StoreError> {
    let mut statement = conn.prepare_cached(&format!(
        "SELECT {ORDER_COLUMNS} FROM orders
         WHERE state = 'done' AND (?1 IS NULL OR user = ?1)
           AND settled_ms >= ?2 AND settled_ms < ?3
         ORDER BY settled_ms DESC, seq DESC LIMIT ?4"
    ))?;
    let rows = statement.query_map(
        params![
            user,
            sqlite::saturating_i64(from.unwrap_or(0)),
            sqlite::saturating_i64(to.unwrap_or(u64::MAX)),
            limit + 1
        ],
        stored_order,
    )?;
    let mut orders: Vec<StoredOrder> = rows.collect::<Result<_, _>>()?;
    let more = orders.len() > limit;
    orders.truncate(limit);
    Ok((orders, more))
}
