//! The ledger's SQLite store: the only module that touches SQLite.
//!
//! Functions over the connection of the ledger's owner thread (see `crate::owner`), run in the
//! transaction it opened; nothing else opens the database.
//!
//! Operation (idempotency) records are an append-only log: a rowid table written in commit
//! order, so a batch of records fills a few consecutive pages, with an in-memory hash index
//! (id hash -> row) rebuilt from the table at startup. A SQLite index keyed by client ids would
//! put every record of a batch on its own page: measured, it cost a third of the transfer
//! throughput. The log is bounded by age and by count (see [`Operations::prune`]), so the
//! index is bounded too (about 24 bytes a record).
//! Locks are stored as *lock sets*, one row per lock request (a bank batch leases hundreds of
//! accounts at once), so leasing and releasing a batch costs one statement each, not one per
//! account.
//! The database runs in WAL mode. Transactions that write balances or operation records run
//! with `synchronous=FULL`, so a reply sent after `commit` means the data is on disk; lock-only
//! transactions run with `synchronous=NORMAL`, which survives a process crash (`kill -9`) but
//! may lose the last lock changes on power loss. That is safe: a lost lock is the same as an
//! expired one, and fencing tokens still increase because every start bumps a durable boot
//! epoch that forms the tokens' high bits.

use std::collections::HashMap;
use std::collections::hash_map::{DefaultHasher, Entry};
use std::hash::{Hash, Hasher};
use std::path::Path;

use agora_core::ledger::book::Key;
use agora_core::ledger::{Balances, PendingState, PendingTransfer, Posting};
use agora_core::{AccountId, Amount, Asset, OperationId};
use rusqlite::{Connection, OptionalExtension, params};

use crate::sqlite::{self, StoreError};
mod pending;
pub use pending::*;

/// File name of the ledger database inside its data directory.
pub const DATABASE_FILE: &str = "ledger.db";
/// The table of lock sets: leases, not replicated (see the owner state's `promoted`).
pub const LOCK_SETS_TABLE: &str = "lock_sets";
/// Fencing tokens are `boot_epoch << TOKEN_EPOCH_SHIFT | counter`.
pub const TOKEN_EPOCH_SHIFT: u32 = 40;

/// SQLite page cache of the ledger database.
pub const PAGE_CACHE_BYTES_MAX: i64 = 64 * 1024 * 1024;
/// Bytes of the database file SQLite may memory-map for reads.
pub const MMAP_BYTES_MAX: i64 = 256 * 1024 * 1024;
/// Lock-only transactions survive a process crash; balance writes and operation records are
/// committed with `synchronous=FULL` (see the owner state's `durable`).
pub const SYNCHRONOUS: &str = "NORMAL";

/// How long a statement waits for a lock another connection holds (a backup, `sqlite3`).
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
const MIGRATION_1: &str = "
    CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
    CREATE TABLE accounts (
        account TEXT PRIMARY KEY,
        balance INTEGER NOT NULL CHECK (balance >= 0)
    ) WITHOUT ROWID;
    CREATE TABLE lock_sets (
        set_id INTEGER PRIMARY KEY,
        owner TEXT NOT NULL,
        expires_at_ms INTEGER NOT NULL,
        grants TEXT NOT NULL
    );
    CREATE TABLE operations (
        seq INTEGER PRIMARY KEY,
        id TEXT NOT NULL,
        record TEXT NOT NULL,
        at_ms INTEGER NOT NULL
    );
";

/// Balances per account and asset (with what pending transfers hold), two-phase transfers,
/// and every balance change as a history entry.
const MIGRATION_2: &str = "
    CREATE TABLE balances (
        account TEXT NOT NULL,
        asset TEXT NOT NULL,
        posted INTEGER NOT NULL CHECK (posted >= 0),
        debits_pending INTEGER NOT NULL CHECK (debits_pending >= 0 AND debits_pending <= posted),
        credits_pending INTEGER NOT NULL CHECK (credits_pending >= 0),
        PRIMARY KEY (account, asset)
    ) WITHOUT ROWID;
    INSERT INTO balances (account, asset, posted, debits_pending, credits_pending)
        SELECT account, 'money', balance, 0, 0 FROM accounts;
    DROP TABLE accounts;
    CREATE TABLE pending_transfers (
        id TEXT PRIMARY KEY,
        from_account TEXT NOT NULL,
        to_account TEXT NOT NULL,
        asset TEXT NOT NULL,
        amount INTEGER NOT NULL CHECK (amount > 0),
        expires_at_ms INTEGER NOT NULL,
        state TEXT NOT NULL,
        posted INTEGER,
        finished_at_ms INTEGER
    ) WITHOUT ROWID;
    CREATE INDEX pending_transfers_finished ON pending_transfers (finished_at_ms)
        WHERE finished_at_ms IS NOT NULL;
    CREATE TABLE entries (
        seq INTEGER PRIMARY KEY,
        account TEXT NOT NULL,
        asset TEXT NOT NULL,
        kind TEXT NOT NULL,
        amount INTEGER NOT NULL,
        posted INTEGER NOT NULL,
        debits_pending INTEGER NOT NULL,
        credits_pending INTEGER NOT NULL,
        id TEXT,
        at_ms INTEGER NOT NULL
    );
    CREATE INDEX entries_by_account ON entries (account, asset, seq);
";

/// Who holds an asset (`agora.ledger.supply`): a partial index, money (every account's) left
/// out.
const MIGRATION_3: &str = "
    CREATE INDEX balances_by_asset ON balances (asset, account) WHERE asset != 'money';
";

/// An applied operation's record refers to its history entries instead of repeating them.
const MIGRATION_4: &str = "
    ALTER TABLE operations ADD COLUMN first_entry INTEGER;
    ALTER TABLE operations ADD COLUMN entry_count INTEGER;
";

/// One stored lock set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockSetRow {
    pub set_id: i64,
    pub owner: String,
    pub expires_at_ms: u64,
    pub grants: Vec<(AccountId, u64)>,
}

/// `account=token,account=token`: account names never contain `=` or `,`.
fn encode_grants(grants: &[(AccountId, u64)]) -> String {
    let parts: Vec<String> = grants.iter().map(|(a, token)| format!("{a}={token}")).collect();
    parts.join(",")
}

fn decode_grants(text: &str) -> Option<Vec<(AccountId, u64)>> {
    text.split(',')
        .filter(|part| !part.is_empty())
        .map(|part| {
            let (account, token) = part.split_once('=')?;
            Some((AccountId::parse(account).ok()?, token.parse().ok()?))
        })
        .collect()
}

/// An operation record as stored: a client's record (`agora.ledger.batch.commit`) or an
/// applied operation's `{"op","postings"}` as earlier versions wrote it (`entries: None`), or an
/// applied operation's request (`text`) and the history entries that hold its postings (the
/// first entry's `seq` and how many: written consecutively, never deleted), which keeps the
/// record a fifth of the size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub text: String,
    pub entries: Option<(u64, u64)>,
}

/// The in-memory index of the operation log: id hash -> row. The ledger's owner holds it
/// beside its connection; it mirrors committed rows, so after a rollback it is loaded again.
#[derive(Debug, Default)]
pub struct Operations {
    by_hash: HashMap<u64, i64>,
    /// Ids whose hash equals another stored id's (astronomically rare, but handled).
    collided: HashMap<String, i64>,
}

fn id_hash(id: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    id.hash(&mut hasher);
    hasher.finish()
}

impl Operations {
    /// The index of every stored operation record.
    pub fn load(conn: &Connection) -> Result<Self, StoreError> {
        let mut index = Self::default();
        let mut statement = conn.prepare("SELECT seq, id FROM operations ORDER BY seq")?;
        let mut rows = statement.query([])?;
        while let Some(row) = rows.next()? {
            index.note(&row.get::<_, String>(1)?, row.get(0)?);
        }
        Ok(index)
    }

    fn note(&mut self, id: &str, seq: i64) {
        match self.by_hash.entry(id_hash(id)) {
            Entry::Vacant(slot) => {
                slot.insert(seq);
            }
            Entry::Occupied(_) => {
                self.collided.insert(id.to_owned(), seq);
            }
        }
    }

    fn forget(&mut self, id: &str, seq: i64) {
        if self.collided.get(id) == Some(&seq) {
            self.collided.remove(id);
        } else if let Entry::Occupied(slot) = self.by_hash.entry(id_hash(id))
            && *slot.get() == seq
        {
            slot.remove();
        }
    }

    /// Number of operation records kept.
    pub fn len(&self) -> usize {
        self.by_hash.len() + self.collided.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The record stored with an operation id, if that id was committed.
    pub fn get(&self, conn: &Connection, id: &str) -> Result<Option<Record>, StoreError> {
        let seq = match self.collided.get(id) {
            Some(seq) => *seq,
            None => match self.by_hash.get(&id_hash(id)) {
                Some(seq) => *seq,
                None => return Ok(None),
            },
        };
        let mut statement = conn.prepare_cached(
            "SELECT id, record, first_entry, entry_count FROM operations WHERE seq = ?1",
        )?;
        let row = statement
            .query_row(params![seq], |row| {
                let entries = match (row.get::<_, Option<u64>>(2)?, row.get::<_, Option<u64>>(3)?) {
                    (Some(first), Some(count)) => Some((first, count)),
                    _ => None,
                };
                Ok((row.get::<_, String>(0)?, Record { text: row.get(1)?, entries }))
            })
            .optional()?;
        Ok(row.filter(|(stored_id, _)| stored_id == id).map(|(_, record)| record))
    }

    pub fn contains(&self, conn: &Connection, id: &str) -> Result<bool, StoreError> {
        Ok(self.get(conn, id)?.is_some())
    }

    /// Records an operation id; returns false (and changes nothing) if the id is taken.
    pub fn insert(
        &mut self,
        conn: &Connection,
        id: &str,
        record: &Record,
        at_ms: u64,
    ) -> Result<bool, StoreError> {
        if self.contains(conn, id)? {
            return Ok(false);
        }
        let (first, count) = record.entries.unzip();
        conn.prepare_cached(
            "INSERT INTO operations (id, record, at_ms, first_entry, entry_count)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![id, record.text, at_ms, first, count])?;
        self.note(id, conn.last_insert_rowid());
        Ok(true)
    }

    /// Deletes the oldest operation records that are older than `before_ms` or beyond the
    /// newest `keep_max`, at most `limit` of them; returns how many.
    pub fn prune(
        &mut self,
        conn: &Connection,
        before_ms: u64,
        keep_max: usize,
        limit: usize,
    ) -> Result<usize, StoreError> {
        let excess = self.len().saturating_sub(keep_max);
        let doomed: Vec<(i64, String)> = {
            let mut statement =
                conn.prepare_cached("SELECT seq, id, at_ms FROM operations ORDER BY seq LIMIT ?1")?;
            let rows = statement.query_map(params![limit], |row| {
                Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?, row.get::<_, u64>(2)?))
            })?;
            let mut doomed = Vec::new();
            for row in rows {
                let (seq, id, at_ms) = row?;
                if doomed.len() >= excess && at_ms >= before_ms {
                    break;
                }
                doomed.push((seq, id));
            }
            doomed
        };
        let Some((last_seq, _)) = doomed.last() else { return Ok(0) };
        conn.prepare_cached("DELETE FROM operations WHERE seq <= ?1")?
            .execute(params![last_seq])?;
        for (seq, id) in &doomed {
            self.forget(id, *seq);
        }
        Ok(doomed.len())
    }
}

/// Opens (creating if needed) the database in `data_dir`, migrates it and records a new boot
/// epoch durably; returns the connection and the epoch.
pub fn open(data_dir: &Path) -> Result<Connection, StoreError> {
    let conn = sqlite::open_wal(
        data_dir,
        DATABASE_FILE,
        PAGE_CACHE_BYTES_MAX,
        &[MIGRATION_1, MIGRATION_2, MIGRATION_3, MIGRATION_4],
    )?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.pragma_update(None, "mmap_size", MMAP_BYTES_MAX)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    Ok(conn)
}

/// The fencing epoch stored (0 before the first).
pub fn boot_epoch(conn: &Connection) -> Result<u64, StoreError> {
    let epoch: Option<u64> = conn
        .query_row("SELECT value FROM meta WHERE key = 'boot_epoch'", [], |row| row.get(0))
        .optional()?;
    Ok(epoch.unwrap_or(0))
}

/// Stores the next fencing epoch (inside the caller's transaction) and returns it.
pub fn bump_boot_epoch(conn: &Connection) -> Result<u64, StoreError> {
    let epoch = boot_epoch(conn)? + 1;
    conn.execute(
        "INSERT INTO meta (key, value) VALUES ('boot_epoch', ?1)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        params![epoch],
    )?;
    Ok(epoch)
}

/// Deletes every lock set (a new active ledger starts without leases).
pub fn delete_all_lock_sets(conn: &Connection) -> Result<(), StoreError> {
    conn.execute("DELETE FROM lock_sets", [])?;
    Ok(())
}

/// The first fencing token of a boot: above every token of every earlier boot.
pub fn first_token(boot_epoch: u64) -> u64 {
    boot_epoch << TOKEN_EPOCH_SHIFT
}

/// Every lock set on disk, oldest first (the ledger restores them at startup).
pub fn load_lock_sets(conn: &Connection) -> Result<Vec<LockSetRow>, StoreError> {
    let mut statement =
        conn.prepare("SELECT set_id, owner, expires_at_ms, grants FROM lock_sets ORDER BY set_id")?;
    let rows = statement.query_map([], |row| {
        Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?, row.get(2)?, row.get::<_, String>(3)?))
    })?;
    let mut sets = Vec::new();
    for row in rows {
        let (set_id, owner, expires_at_ms, grants) = row?;
        let grants = decode_grants(&grants)
            .ok_or_else(|| StoreError::Corrupt(format!("lock set {set_id} grants")))?;
        sets.push(LockSetRow { set_id, owner, expires_at_ms, grants });
    }
    Ok(sets)
}

/// The balances of an account in an asset; one never written has zeros.
pub fn balances(conn: &Connection, key: &Key) -> Result<Balances, StoreError> {
    let mut statement = conn.prepare_cached(
        "SELECT posted, debits_pending, credits_pending FROM balances
         WHERE account = ?1 AND asset = ?2",
    )?;
    let balances = statement
        .query_row(params![key.0.as_str(), key.1.as_str()], |row| {
            Ok(Balances {
                posted: row.get(0)?,
                debits_pending: row.get(1)?,
                credits_pending: row.get(2)?,
            })
        })
        .optional()?;
    Ok(balances.unwrap_or_default())
}

pub fn set_balances(conn: &Connection, key: &Key, balances: &Balances) -> Result<(), StoreError> {
    let mut statement = conn.prepare_cached(
        "INSERT INTO balances (account, asset, posted, debits_pending, credits_pending)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (account, asset) DO UPDATE SET posted = excluded.posted,
             debits_pending = excluded.debits_pending, credits_pending = excluded.credits_pending",
    )?;
    statement.execute(params![
        key.0.as_str(),
        key.1.as_str(),
        balances.posted,
        balances.debits_pending,
        balances.credits_pending
    ])?;
    Ok(())
}

/// Appends one history entry: a posting, the client's id and the commit time; returns its
/// `seq` (one above every earlier entry's: entries are never deleted).
pub fn insert_entry(
    conn: &Connection,
    posting: &Posting,
    id: Option<&str>,
    at_ms: u64,
) -> Result<u64, StoreError> {
    conn.prepare_cached(
        "INSERT INTO entries (account, asset, kind, amount, posted, debits_pending,
             credits_pending, id, at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
        posting.account.as_str(),
        posting.asset.as_str(),
        posting.kind.as_str(),
        posting.amount,
        posting.balances.posted,
        posting.balances.debits_pending,
        posting.balances.credits_pending,
        id,
        sqlite::saturating_i64(at_ms),
    ])?;
    sqlite::rowid(conn.last_insert_rowid())
}

/// The entries `first..first + count` with their account and asset, in order (an applied
/// operation's postings, see [`Record`]).
pub fn entries(
    conn: &Connection,
    first: u64,
    count: u64,
) -> Result<Vec<(String, String, EntryRow)>, StoreError> {
    let mut statement = conn.prepare_cached(&format!(
        "SELECT {ENTRY_COLUMNS}, account, asset FROM entries WHERE seq >= ?1 AND seq < ?2
         ORDER BY seq"
    ))?;
    let end = first.saturating_add(count);
    let rows = statement
        .query_map(params![sqlite::saturating_i64(first), sqlite::saturating_i64(end)], |row| {
            Ok((row.get(8)?, row.get(9)?, entry_row(row)?))
        })?;
    let rows: Vec<_> = rows.collect::<Result<_, _>>()?;
    if rows.len() as u64 != count {
        return Err(StoreError::Corrupt(format!("entries {first}..{end}: {} found", rows.len())));
    }
    Ok(rows)
}

/// The newest commit time in the history (entry times never go back).
pub fn last_entry_at(conn: &Connection) -> Result<u64, StoreError> {
    let at: Option<i64> = conn
        .query_row("SELECT at_ms FROM entries ORDER BY seq DESC LIMIT 1", [], |row| row.get(0))
        .optional()?;
    Ok(at.map_or(0, |at| u64::try_from(at).unwrap_or(0)))
}

/// What selects a page of history.
#[derive(Debug, Clone)]
pub struct HistoryQuery {
    pub key: Key,
    pub from_ms: u64,
    pub to_ms: u64,
    pub before: u64,
    pub limit: usize,
}

/// One stored entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryRow {
    pub seq: u64,
    pub kind: String,
    pub amount: i64,
    pub balances: Balances,
    pub id: Option<String>,
    pub at_ms: u64,
}

fn entry_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<EntryRow> {
    Ok(EntryRow {
        seq: row.get(0)?,
        kind: row.get(1)?,
        amount: row.get(2)?,
        balances: Balances {
            posted: row.get(3)?,
            debits_pending: row.get(4)?,
            credits_pending: row.get(5)?,
        },
        id: row.get(6)?,
        at_ms: row.get(7)?,
    })
}

const ENTRY_COLUMNS: &str = "seq, kind, amount, posted, debits_pending, credits_pending, id, at_ms";

/// Entries of one account and asset, newest first: at most `limit`, older than `before`, in
/// `[from_ms, to_ms)`.
pub fn history(conn: &Connection, query: &HistoryQuery) -> Result<Vec<EntryRow>, StoreError> {
    let mut statement = conn.prepare_cached(&format!(
        "SELECT {ENTRY_COLUMNS} FROM entries
         WHERE account = ?1 AND asset = ?2 AND seq < ?3 AND at_ms >= ?4 AND at_ms < ?5
         ORDER BY seq DESC LIMIT ?6"
    ))?;
    let rows = statement.query_map(
        params![
            query.key.0.as_str(),
            query.key.1.as_str(),
            sqlite::saturating_i64(query.before),
            sqlite::saturating_i64(query.from_ms),
            sqlite::saturating_i64(query.to_ms),
            query.limit
        ],
        entry_row,
    )?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The balances of an account and asset as of `at_ms` (after every entry at or before it).
pub fn balances_at(conn: &Connection, key: &Key, at_ms: u64) -> Result<Balances, StoreError> {
    let mut statement = conn.prepare_cached(&format!(
        "SELECT {ENTRY_COLUMNS} FROM entries WHERE account = ?1 AND asset = ?2 AND at_ms <= ?3
         ORDER BY seq DESC LIMIT 1"
    ))?;
    let row = statement
        .query_row(
            params![key.0.as_str(), key.1.as_str(), sqlite::saturating_i64(at_ms)],
            entry_row,
        )
        .optional()?;
    Ok(row.map(|row| row.balances).unwrap_or_default())
}

/// Every asset `account` has a non-zero balance in: money first, then by symbol.
pub fn balances_of(
    conn: &Connection,
    account: &AccountId,
) -> Result<Vec<(Asset, Balances)>, StoreError> {
    let mut statement = conn.prepare_cached(
        "SELECT asset, posted, debits_pending, credits_pending FROM balances
         WHERE account = ?1 AND (posted != 0 OR debits_pending != 0 OR credits_pending != 0)
         ORDER BY asset != 'money', asset",
    )?;
    let rows = statement.query_map([account.as_str()], |row| {
        let asset: String = row.get(0)?;
        let asset = Asset::parse(&asset).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(
                0,
                rusqlite::types::Type::Text,
                e.to_string().into(),
            )
        })?;
        Ok((
            asset,
            Balances {
                posted: row.get(1)?,
                debits_pending: row.get(2)?,
                credits_pending: row.get(3)?,
            },
        ))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// How many accounts but `except` hold `asset` (posted or pending), and their posted and
/// pending sums. Through `balances_by_asset` (assets other than money).
pub fn supply(
    conn: &Connection,
    asset: &Asset,
    except: &[AccountId],
) -> Result<(u64, i128, i128), StoreError> {
    let mut statement = conn.prepare_cached(
        "SELECT account, posted, debits_pending FROM balances
         WHERE asset = ?1 AND asset != 'money'
           AND (posted != 0 OR debits_pending != 0 OR credits_pending != 0)",
    )?;
    let mut rows = statement.query([asset.as_str()])?;
    let (mut accounts, mut posted, mut pending) = (0u64, 0i128, 0i128);
    while let Some(row) = rows.next()? {
        let account: String = row.get(0)?;
        if except.iter().any(|e| e.as_str() == account) {
            continue;
        }
        accounts += 1;
        posted += i128::from(row.get::<_, i64>(1)?);
        pending += i128::from(row.get::<_, i64>(2)?);
    }
    Ok((accounts, posted, pending))
}

/// Writes (or rewrites) one lock set: the locks one request took, sharing owner and lease.
pub fn put_lock_set(conn: &Connection, row: &LockSetRow) -> Result<(), StoreError> {
    let mut statement = conn.prepare_cached(
        "INSERT INTO lock_sets (set_id, owner, expires_at_ms, grants) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (set_id) DO UPDATE SET owner = excluded.owner,
             expires_at_ms = excluded.expires_at_ms, grants = excluded.grants",
    )?;
    let expires = sqlite::saturating_i64(row.expires_at_ms);
    statement.execute(params![row.set_id, row.owner, expires, encode_grants(&row.grants)])?;
    Ok(())
}

pub fn delete_lock_set(conn: &Connection, set_id: i64) -> Result<(), StoreError> {
    conn.prepare_cached("DELETE FROM lock_sets WHERE set_id = ?1")?.execute(params![set_id])?;
    Ok(())
}

#[cfg(test)]
mod tests;
