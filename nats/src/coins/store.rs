//! The coin exchange's SQLite store: the catalogue, holdings, and the log of every order.
//!
//! One owner thread holds the one [`CoinsStore`] (see `coins`). WAL with `synchronous=FULL`: an
//! order's reservation is durable before the bank is asked to move money, and its settlement
//! before the client hears of it, so a crash between the two is always finished or undone.

use std::path::Path;

use agora_core::AccountId;
use agora_core::coins::{Asset, Order, Side, Symbol};
use rusqlite::{Connection, OptionalExtension, params};

use crate::coins::wire::OrderView;
use crate::error::ServiceError;
use crate::sqlite::{self, i, u};

/// File name of the coins database inside its data directory.
pub const DATABASE_FILE: &str = "coins.db";
const PAGE_CACHE_BYTES_MAX: i64 = 8 * 1024 * 1024;

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

pub type StoreError = rusqlite::Error;

const ORDER_COLUMNS: &str = "seq, user, id, symbol, side, quantity, unit_price, total, state, \
                             error, created_ms, settled_ms, holding";

fn order_view(row: &rusqlite::Row<'_>) -> rusqlite::Result<OrderView> {
    let error: Option<String> = row.get(9)?;
    Ok(OrderView {
        seq: u(row.get(0)?),
        user: row.get(1)?,
        id: row.get(2)?,
        symbol: row.get(3)?,
        side: row.get(4)?,
        quantity: u(row.get(5)?),
        unit_price: u(row.get(6)?),
        total: u(row.get(7)?),
        state: row.get(8)?,
        error: error.and_then(|e| serde_json::from_str::<ServiceError>(&e).ok()),
        created_ms: u(row.get(10)?),
        settled_ms: row.get::<_, Option<i64>>(11)?.map(u),
        holding: row.get::<_, Option<i64>>(12)?.map(u),
    })
}

/// An order as stored, parsed back into the core's terms.
pub fn order_of(view: &OrderView) -> Option<Order> {
    Some(Order {
        user: AccountId::parse(&view.user).ok()?,
        id: view.id.clone(),
        symbol: Symbol::parse(&view.symbol).ok()?,
        side: if view.side == "buy" { Side::Buy } else { Side::Sell },
        quantity: view.quantity,
        unit_price: view.unit_price,
        total: view.total,
    })
}

#[derive(Debug)]
pub struct CoinsStore {
    conn: Connection,
}

impl CoinsStore {
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        let conn = sqlite::open_wal(data_dir, DATABASE_FILE, PAGE_CACHE_BYTES_MAX, MIGRATION_1)
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        Ok(Self { conn })
    }

    pub fn begin(&self) -> Result<(), StoreError> {
        sqlite::begin(&self.conn)
    }

    pub fn commit(&self) -> Result<(), StoreError> {
        sqlite::commit(&self.conn)
    }

    pub fn rollback(&self) {
        sqlite::rollback(&self.conn);
    }

    /// Whether the catalogue was ever seeded (it is seeded once, on the first start).
    pub fn seeded(&self) -> Result<bool, StoreError> {
        let value: Option<String> = self
            .conn
            .query_row("SELECT value FROM meta WHERE key = 'seeded'", [], |row| row.get(0))
            .optional()?;
        Ok(value.is_some())
    }

    pub fn mark_seeded(&self) -> Result<(), StoreError> {
        self.conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('seeded', '1')", [])?;
        Ok(())
    }

    pub fn assets(&self) -> Result<Vec<Asset>, StoreError> {
        let mut statement =
            self.conn.prepare("SELECT symbol, name, price, available FROM assets")?;
        let rows = statement.query_map([], |row| {
            Ok((row.get::<_, String>(0)?, row.get(1)?, u(row.get(2)?), u(row.get(3)?)))
        })?;
        let mut assets = Vec::new();
        for row in rows {
            let (symbol, name, price, available) = row?;
            if let Ok(symbol) = Symbol::parse(&symbol) {
                assets.push(Asset { symbol, name, price, available });
            }
        }
        Ok(assets)
    }

    pub fn holdings(&self) -> Result<Vec<(AccountId, Symbol, u64)>, StoreError> {
        let mut statement = self.conn.prepare("SELECT user, symbol, quantity FROM holdings")?;
        let rows = statement.query_map([], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?, u(row.get(2)?)))
        })?;
        let mut holdings = Vec::new();
        for row in rows {
            let (user, symbol, quantity) = row?;
            if let (Ok(user), Ok(symbol)) = (AccountId::parse(&user), Symbol::parse(&symbol)) {
                holdings.push((user, symbol, quantity));
            }
        }
        Ok(holdings)
    }

    pub fn put_asset(&self, asset: &Asset) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "INSERT INTO assets (symbol, name, price, available) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (symbol) DO UPDATE SET
                    name = excluded.name, price = excluded.price, available = excluded.available",
            )?
            .execute(params![
                asset.symbol.as_str(),
                asset.name,
                i(asset.price),
                i(asset.available)
            ])?;
        Ok(())
    }

    pub fn delete_asset(&self, symbol: &Symbol) -> Result<(), StoreError> {
        self.conn.execute("DELETE FROM assets WHERE symbol = ?1", [symbol.as_str()])?;
        Ok(())
    }

    /// Stores a holding (a zero holding is deleted).
    pub fn set_holding(
        &self,
        user: &AccountId,
        symbol: &Symbol,
        quantity: u64,
    ) -> Result<(), StoreError> {
        if quantity == 0 {
            self.conn
                .prepare_cached("DELETE FROM holdings WHERE user = ?1 AND symbol = ?2")?
                .execute(params![user.as_str(), symbol.as_str()])?;
        } else {
            self.conn
                .prepare_cached(
                    "INSERT INTO holdings (user, symbol, quantity) VALUES (?1, ?2, ?3)
                     ON CONFLICT (user, symbol) DO UPDATE SET quantity = excluded.quantity",
                )?
                .execute(params![user.as_str(), symbol.as_str(), i(quantity)])?;
        }
        Ok(())
    }

    /// Records a reserved order as pending; returns its position in the log.
    pub fn insert_order(&self, order: &Order, created_ms: u64) -> Result<u64, StoreError> {
        self.conn
            .prepare_cached(
                "INSERT INTO orders (user, id, symbol, side, quantity, unit_price, total, state,
                                     created_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'pending', ?8)",
            )?
            .execute(params![
                order.user.as_str(),
                order.id,
                order.symbol.as_str(),
                order.side.as_str(),
                i(order.quantity),
                i(order.unit_price),
                i(order.total),
                i(created_ms)
            ])?;
        Ok(u(self.conn.last_insert_rowid()))
    }

    /// Ends a pending order: `done` with the user's holding afterwards, or `failed` with why.
    pub fn settle_order(
        &self,
        seq: u64,
        error: Option<&ServiceError>,
        settled_ms: u64,
        holding: u64,
    ) -> Result<(), StoreError> {
        let (state, error, holding) = match error {
            None => ("done", None, Some(i(holding))),
            Some(error) => ("failed", serde_json::to_string(error).ok(), None),
        };
        self.conn
            .prepare_cached(
                "UPDATE orders SET state = ?2, error = ?3, settled_ms = ?4, holding = ?5
                 WHERE seq = ?1 AND state = 'pending'",
            )?
            .execute(params![i(seq), state, error, i(settled_ms), holding])?;
        Ok(())
    }

    pub fn find_order(&self, user: &str, id: &str) -> Result<Option<OrderView>, StoreError> {
        self.conn
            .prepare_cached(&format!(
                "SELECT {ORDER_COLUMNS} FROM orders WHERE user = ?1 AND id = ?2"
            ))?
            .query_row(params![user, id], order_view)
            .optional()
    }

    pub fn order(&self, seq: u64) -> Result<Option<OrderView>, StoreError> {
        self.conn
            .prepare_cached(&format!("SELECT {ORDER_COLUMNS} FROM orders WHERE seq = ?1"))?
            .query_row([i(seq)], order_view)
            .optional()
    }

    /// Pending orders, oldest first (at most `limit`).
    pub fn pending(&self, limit: usize) -> Result<Vec<OrderView>, StoreError> {
        let mut statement = self.conn.prepare_cached(&format!(
            "SELECT {ORDER_COLUMNS} FROM orders WHERE state = 'pending' ORDER BY seq LIMIT ?1"
        ))?;
        let rows = statement.query_map([i(limit as u64)], order_view)?;
        rows.collect()
    }

    /// Done orders settled in `[from, to)`, of `user` if given, newest first; and whether more
    /// matched than `limit`.
    pub fn history(
        &self,
        user: Option<&str>,
        from: Option<u64>,
        to: Option<u64>,
        limit: usize,
    ) -> Result<(Vec<OrderView>, bool), StoreError> {
        let mut statement = self.conn.prepare_cached(&format!(
            "SELECT {ORDER_COLUMNS} FROM orders
             WHERE state = 'done' AND (?1 IS NULL OR user = ?1)
               AND settled_ms >= ?2 AND settled_ms < ?3
             ORDER BY settled_ms DESC, seq DESC LIMIT ?4"
        ))?;
        let rows = statement.query_map(
            params![user, i(from.unwrap_or(0)), i(to.unwrap_or(u64::MAX)), i(limit as u64 + 1)],
            order_view,
        )?;
        let mut orders: Vec<OrderView> = rows.collect::<Result<_, _>>()?;
        let more = orders.len() > limit;
        orders.truncate(limit);
        Ok((orders, more))
    }
}
