//! The chat service's SQLite store: known names with their sessions and rooms, and the history
//! of every room and direct message.
//!
//! Functions over the connection of the chat service's owner thread (see `crate::owner`), run
//! inside the transaction it opened. WAL with `synchronous=NORMAL`: a committed group survives
//! `kill -9` of the service.
//!
//! History rows get increasing `seq` numbers (the table's integer key), so "since I left" is
//! `seq > n` and a page further back is `seq < n`. Each row has a conversation key: `#room`
//! for a room, `@a@b` (the two names sorted) for a direct conversation, so one index serves
//! every room and every pair. `(from, id)` is unique: a resent message is stored once.

use std::collections::BTreeSet;
use std::path::Path;

use crate::sqlite::{self, StoreError};
use rusqlite::{Connection, OptionalExtension, params, params_from_iter};

use crate::chat::wire::{EditVersion, SearchHit, StoredMessage, TextPiece, UnreadCount};
mod search;
use search::{index, indexed_upto, unindex};
pub use search::{index_new, search};

/// File name of the chat database inside its data directory.
pub const DATABASE_FILE: &str = "chat.db";
/// SQLite page cache of the chat database.
const PAGE_CACHE_BYTES_MAX: i64 = 8 * 1024 * 1024;
/// Commits survive a process crash, not a power loss.
pub const SYNCHRONOUS: &str = "NORMAL";

const MIGRATION_1: &str = "
    CREATE TABLE users (
        name TEXT PRIMARY KEY,
        registered_ms INTEGER NOT NULL,
        last_seen_ms INTEGER NOT NULL,
        session TEXT,
        since_ms INTEGER,
        left_seq INTEGER
    ) WITHOUT ROWID;
    CREATE TABLE memberships (
        name TEXT NOT NULL,
        room TEXT NOT NULL,
        PRIMARY KEY (name, room)
    ) WITHOUT ROWID;
    CREATE TABLE messages (
        seq INTEGER PRIMARY KEY,
        conv TEXT NOT NULL,
        to_name TEXT,
        from_name TEXT NOT NULL,
        msg_id TEXT NOT NULL,
        text TEXT NOT NULL,
        at_ms INTEGER NOT NULL,
        recorded_ms INTEGER NOT NULL,
        UNIQUE (from_name, msg_id)
    );
    CREATE INDEX messages_by_conv ON messages (conv, seq);
    CREATE INDEX messages_by_recipient ON messages (to_name, seq) WHERE to_name IS NOT NULL;
";

/// Threads, edits (earlier texts kept), deletes, reactions, read markers, and the full-text
/// index of history (FTS5 over `messages.text`, kept in step by the functions here).
const MIGRATION_2: &str = "
    ALTER TABLE messages ADD COLUMN reply_to INTEGER;
    ALTER TABLE messages ADD COLUMN replies INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE messages ADD COLUMN edited_ms INTEGER;
    ALTER TABLE messages ADD COLUMN deleted INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX messages_by_thread ON messages (reply_to, seq) WHERE reply_to IS NOT NULL;
    CREATE TABLE message_edits (
        seq INTEGER NOT NULL,
        version INTEGER NOT NULL,
        text TEXT NOT NULL,
        replaced_ms INTEGER NOT NULL,
        PRIMARY KEY (seq, version)
    ) WITHOUT ROWID;
    CREATE TABLE reactions (
        seq INTEGER NOT NULL,
        emoji TEXT NOT NULL,
        name TEXT NOT NULL,
        at_ms INTEGER NOT NULL,
        PRIMARY KEY (seq, emoji, name)
    ) WITHOUT ROWID;
    CREATE TABLE read_markers (
        name TEXT NOT NULL,
        conv TEXT NOT NULL,
        seq INTEGER NOT NULL,
        at_ms INTEGER NOT NULL,
        PRIMARY KEY (name, conv)
    ) WITHOUT ROWID;
    CREATE VIRTUAL TABLE messages_fts USING fts5(
        text, content = 'messages', content_rowid = 'seq',
        tokenize = 'unicode61 remove_diacritics 2'
    );
    INSERT INTO messages_fts (messages_fts) VALUES ('rebuild');
";

/// Which messages a history query reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Conversation {
    Room(String),
    /// The direct messages between two names.
    Direct(String, String),
    /// Everything one name could have seen: direct messages to or from it and the messages of
    /// the given rooms.
    Inbox {
        name: String,
        rooms: Vec<String>,
    },
    /// The replies to one message.
    Thread(u64),
}

/// A message to record.
#[derive(Debug, Clone)]
pub struct NewMessage<'a> {
    pub room: Option<&'a str>,
    pub to: Option<&'a str>,
    pub from: &'a str,
    pub id: &'a str,
    pub text: &'a str,
    pub at_ms: u64,
    pub recorded_ms: u64,
    pub reply_to: Option<u64>,
}

/// A known name as stored.
#[derive(Debug, Clone)]
pub struct UserRow {
    pub name: String,
    pub registered_ms: u64,
    pub last_seen_ms: u64,
    /// Token and start of the session that was live when last written.
    pub session: Option<(String, u64)>,
    /// History position when the name last went offline.
    pub left_seq: Option<u64>,
    pub rooms: BTreeSet<String>,
}

fn room_key(room: &str) -> String {
    format!("#{room}")
}

fn direct_key(a: &str, b: &str) -> String {
    if a <= b { format!("@{a}@{b}") } else { format!("@{b}@{a}") }
}

const MESSAGE_COLUMNS: &str = "seq, conv, to_name, from_name, msg_id, text, at_ms, recorded_ms, \
    reply_to, replies, edited_ms, deleted";
const MESSAGE_COLUMN_COUNT: usize = 12;

fn message_of(row: &rusqlite::Row<'_>) -> rusqlite::Result<StoredMessage> {
    let conv: String = row.get(1)?;
    Ok(StoredMessage {
        seq: row.get(0)?,
        room: conv.strip_prefix('#').map(str::to_owned),
        to: row.get(2)?,
        from: row.get(3)?,
        id: row.get(4)?,
        text: row.get(5)?,
        at: row.get(6)?,
        recorded_ms: row.get(7)?,
        reply_to: row.get(8)?,
        replies: row.get(9)?,
        edited_ms: row.get(10)?,
        deleted: row.get(11)?,
        reactions: Default::default(),
    })
}

/// Opens (creating if needed) the chat database in `data_dir`.
pub fn open(data_dir: &Path) -> Result<Connection, StoreError> {
    sqlite::open_wal(data_dir, DATABASE_FILE, PAGE_CACHE_BYTES_MAX, &[MIGRATION_1, MIGRATION_2])
}

/// Every known name with its rooms.
pub fn users(conn: &Connection) -> Result<Vec<UserRow>, StoreError> {
    let mut users: Vec<UserRow> = conn
        .prepare(
            "SELECT name, registered_ms, last_seen_ms, session, since_ms, left_seq \
             FROM users ORDER BY name",
        )?
        .query_map([], |row| {
            let session: Option<String> = row.get(3)?;
            let since: Option<u64> = row.get(4)?;
            Ok(UserRow {
                name: row.get(0)?,
                registered_ms: row.get(1)?,
                last_seen_ms: row.get(2)?,
                session: session.zip(since),
                left_seq: row.get(5)?,
                rooms: BTreeSet::new(),
            })
        })?
        .collect::<Result<_, _>>()?;
    let mut statement = conn.prepare("SELECT name, room FROM memberships")?;
    let memberships = statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
    for membership in memberships {
        let (name, room): (String, String) = membership?;
        if let Ok(at) = users.binary_search_by(|user| user.name.cmp(&name)) {
            users[at].rooms.insert(room);
        }
    }
    Ok(users)
}

/// Records a session start (and the name, the first time).
pub fn set_online(
    conn: &Connection,
    name: &str,
    session: &str,
    since_ms: u64,
    registered_ms: u64,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO users (name, registered_ms, last_seen_ms, session, since_ms) \
             VALUES (?1, ?4, ?3, ?2, ?3) \
             ON CONFLICT (name) DO UPDATE SET session = ?2, since_ms = ?3, \
             last_seen_ms = max(last_seen_ms, ?3)",
    )?
    .execute(params![name, session, since_ms, registered_ms])?;
    Ok(())
}

/// Records a session end: when the name was last seen and how far history was then.
pub fn set_offline(
    conn: &Connection,
    name: &str,
    last_seen_ms: u64,
    left_seq: u64,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "UPDATE users SET session = NULL, since_ms = NULL, last_seen_ms = ?2, \
             left_seq = ?3 WHERE name = ?1",
    )?
    .execute(params![name, last_seen_ms, left_seq])?;
    Ok(())
}

pub fn left_seq(conn: &Connection, name: &str) -> Result<Option<u64>, StoreError> {
    let seq: Option<Option<u64>> = conn
        .prepare_cached("SELECT left_seq FROM users WHERE name = ?1")?
        .query_row([name], |row| row.get(0))
        .optional()?;
    Ok(seq.flatten())
}

pub fn set_member(
    conn: &Connection,
    name: &str,
    room: &str,
    member: bool,
) -> Result<(), StoreError> {
    let sql = if member {
        "INSERT OR IGNORE INTO memberships (name, room) VALUES (?1, ?2)"
    } else {
        "DELETE FROM memberships WHERE name = ?1 AND room = ?2"
    };
    conn.prepare_cached(sql)?.execute([name, room])?;
    Ok(())
}

/// The position of a message already in history, by its sender and id.
pub fn find(conn: &Connection, from: &str, id: &str) -> Result<Option<u64>, StoreError> {
    let seq: Option<u64> = conn
        .prepare_cached("SELECT seq FROM messages WHERE from_name = ?1 AND msg_id = ?2")?
        .query_row([from, id], |row| row.get(0))
        .optional()?;
    Ok(seq)
}

/// Records a message and returns its position; `None` when history has its sender and id
/// already (see [`find`]).
pub fn insert(conn: &Connection, message: &NewMessage<'_>) -> Result<Option<u64>, StoreError> {
    let conv = match (message.room, message.to) {
        (Some(room), _) => room_key(room),
        (None, Some(to)) => direct_key(message.from, to),
        (None, None) => {
            return Err(StoreError::Corrupt("a message needs a room or a recipient".into()));
        }
    };
    conn.prepare_cached(
        "INSERT INTO messages (conv, to_name, from_name, msg_id, text, at_ms, \
             recorded_ms, reply_to) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
             ON CONFLICT (from_name, msg_id) DO NOTHING",
    )?
    .execute(params![
        conv,
        message.to,
        message.from,
        message.id,
        message.text,
        message.at_ms,
        message.recorded_ms,
        message.reply_to
    ])?;
    if conn.changes() != 1 {
        return Ok(None);
    }
    sqlite::rowid(conn.last_insert_rowid()).map(Some)
}

pub fn last_seq(conn: &Connection) -> Result<u64, StoreError> {
    let max: Option<u64> = conn.query_row("SELECT max(seq) FROM messages", [], |r| r.get(0))?;
    Ok(max.unwrap_or(0))
}

/// Up to `limit` messages of a conversation, oldest first, and whether more matched.
/// With `after`: the first ones after it; otherwise the last ones (before `before`).
pub fn history(
    conn: &Connection,
    conversation: &Conversation,
    before: Option<u64>,
    after: Option<u64>,
    limit: usize,
) -> Result<(Vec<StoredMessage>, bool), StoreError> {
    let mut values: Vec<rusqlite::types::Value> = Vec::new();
    let scope = scope_sql(conversation, &mut values);
    let mut clauses = vec![scope];
    if let Some(before) = before {
        values.push(rusqlite::types::Value::Integer(sqlite::saturating_i64(before)));
        clauses.push(format!("seq < ?{}", values.len()));
    }
    if let Some(after) = after {
        values.push(rusqlite::types::Value::Integer(sqlite::saturating_i64(after)));
        clauses.push(format!("seq > ?{}", values.len()));
    }
    let order = if after.is_some() { "ASC" } else { "DESC" };
    let sql = format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages WHERE {} ORDER BY seq {order} LIMIT {}",
        clauses.join(" AND "),
        limit + 1
    );
    let mut messages: Vec<StoredMessage> = conn
        .prepare_cached(&sql)?
        .query_map(params_from_iter(values), message_of)?
        .collect::<Result<_, _>>()?;
    let more = messages.len() > limit;
    messages.truncate(limit);
    if after.is_none() {
        messages.reverse();
    }
    attach_reactions(conn, &mut messages)?;
    Ok((messages, more))
}

/// The SQL condition selecting `conversation`'s messages, its values appended to `values`.
fn scope_sql(conversation: &Conversation, values: &mut Vec<rusqlite::types::Value>) -> String {
    let mut text = |value: String| {
        values.push(rusqlite::types::Value::Text(value));
        format!("?{}", values.len())
    };
    match conversation {
        Conversation::Room(room) => format!("conv = {}", text(room_key(room))),
        Conversation::Direct(a, b) => format!("conv = {}", text(direct_key(a, b))),
        Conversation::Inbox { name, rooms } => {
            let me = text(name.clone());
            let mut keys: Vec<String> = rooms.iter().map(|room| text(room_key(room))).collect();
            keys.push(text(room_key(agora_core::chat::BROADCAST_ROOM)));
            format!(
                "(to_name = {me} OR (from_name = {me} AND to_name IS NOT NULL) \
                 OR conv IN ({}))",
                keys.join(", ")
            )
        }
        Conversation::Thread(parent) => {
            values.push(rusqlite::types::Value::Integer(sqlite::saturating_i64(*parent)));
            format!("reply_to = ?{}", values.len())
        }
    }
}

/// Rebuilds the full-text index from history. The index is each instance's own: the
/// replicated log carries the messages, not the index's tables, so an instance that followed
/// the log as a standby rebuilds it when it becomes the active one.
pub fn rebuild_search(conn: &Connection) -> Result<(), StoreError> {
    conn.execute("INSERT INTO messages_fts (messages_fts) VALUES ('rebuild')", [])?;
    Ok(())
}

/// The conversation key of a room (`#room`).
pub fn room_conv(room: &str) -> String {
    room_key(room)
}

/// The conversation key of two names' direct messages.
pub fn direct_conv(a: &str, b: &str) -> String {
    direct_key(a, b)
}

/// A message by its position, with its reactions.
pub fn message(conn: &Connection, seq: u64) -> Result<Option<StoredMessage>, StoreError> {
    let found = conn
        .prepare_cached(&format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE seq = ?1"))?
        .query_row([seq], message_of)
        .optional()?;
    let Some(message) = found else { return Ok(None) };
    let mut messages = [message];
    attach_reactions(conn, &mut messages)?;
    let [message] = messages;
    Ok(Some(message))
}

/// Fills in the reactions of `messages`.
fn attach_reactions(conn: &Connection, messages: &mut [StoredMessage]) -> Result<(), StoreError> {
    let mut statement = conn.prepare_cached(
        "SELECT emoji, name FROM reactions WHERE seq = ?1 ORDER BY at_ms, emoji, name",
    )?;
    for message in messages.iter_mut() {
        let rows = statement.query_map([message.seq], |row| Ok((row.get(0)?, row.get(1)?)))?;
        for row in rows {
            let (emoji, name): (String, String) = row?;
            message.reactions.entry(emoji).or_default().push(name);
        }
    }
    Ok(())
}

/// The thread of `parent` got a reply: its count now.
pub fn count_reply(conn: &Connection, parent: u64) -> Result<u64, StoreError> {
    let replies = conn
        .prepare_cached(
            "UPDATE messages SET replies = replies + 1 WHERE seq = ?1 RETURNING replies",
        )?
        .query_row([parent], |row| row.get(0))?;
    Ok(replies)
}

/// Replaces a message's text, keeping the earlier one.
pub fn edit(
    conn: &Connection,
    seq: u64,
    old: &str,
    text: &str,
    now_ms: u64,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO message_edits (seq, version, text, replaced_ms) VALUES \
         (?1, (SELECT count(*) FROM message_edits WHERE seq = ?1), ?2, ?3)",
    )?
    .execute(params![seq, old, now_ms])?;
    let indexed = seq <= indexed_upto(conn)?;
    if indexed {
        unindex(conn, seq, old)?;
    }
    conn.prepare_cached("UPDATE messages SET text = ?2, edited_ms = ?3 WHERE seq = ?1")?
        .execute(params![seq, text, now_ms])?;
    if indexed {
        index(conn, seq, text)?;
    }
    Ok(())
}

/// A message's earlier texts, oldest first.
pub fn edits(conn: &Connection, seq: u64) -> Result<Vec<EditVersion>, StoreError> {
    let mut statement = conn.prepare_cached(
        "SELECT text, replaced_ms FROM message_edits WHERE seq = ?1 ORDER BY version",
    )?;
    let rows = statement
        .query_map([seq], |row| Ok(EditVersion { text: row.get(0)?, replaced_ms: row.get(1)? }))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Deletes a message's text, earlier texts and reactions; its place in history stays.
pub fn delete(conn: &Connection, seq: u64, old: &str, now_ms: u64) -> Result<(), StoreError> {
    if seq <= indexed_upto(conn)? {
        unindex(conn, seq, old)?;
    }
    conn.prepare_cached(
        "UPDATE messages SET text = '', deleted = 1, edited_ms = ?2 WHERE seq = ?1",
    )?
    .execute(params![seq, now_ms])?;
    conn.prepare_cached("DELETE FROM message_edits WHERE seq = ?1")?.execute([seq])?;
    conn.prepare_cached("DELETE FROM reactions WHERE seq = ?1")?.execute([seq])?;
    Ok(())
}

/// Adds (`on`) or takes back `name`'s reaction; `Ok(false)` when nothing changed. A message
/// holds at most `distinct_max` different reactions (`Err(())` beyond).
pub fn react(
    conn: &Connection,
    seq: u64,
    name: &str,
    emoji: &str,
    on: bool,
    now_ms: u64,
    distinct_max: usize,
) -> Result<Result<bool, ()>, StoreError> {
    if !on {
        let gone = conn
            .prepare_cached("DELETE FROM reactions WHERE seq = ?1 AND emoji = ?2 AND name = ?3")?
            .execute(params![seq, emoji, name])?;
        return Ok(Ok(gone > 0));
    }
    let (distinct, known): (usize, bool) = conn
        .prepare_cached(
            "SELECT count(DISTINCT emoji), coalesce(max(emoji = ?2), 0) FROM reactions \
             WHERE seq = ?1",
        )?
        .query_row(params![seq, emoji], |row| Ok((row.get(0)?, row.get(1)?)))?;
    if !known && distinct >= distinct_max {
        return Ok(Err(()));
    }
    let added = conn
        .prepare_cached(
            "INSERT OR IGNORE INTO reactions (seq, emoji, name, at_ms) VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![seq, emoji, name, now_ms])?;
    Ok(Ok(added > 0))
}

/// `name` read `conv` up to `seq`; `false` when they had read that far already.
pub fn set_read(
    conn: &Connection,
    name: &str,
    conv: &str,
    seq: u64,
    now_ms: u64,
) -> Result<bool, StoreError> {
    let changed = conn
        .prepare_cached(
            "INSERT INTO read_markers (name, conv, seq, at_ms) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (name, conv) DO UPDATE SET seq = ?3, at_ms = ?4 WHERE seq < ?3",
        )?
        .execute(params![name, conv, seq, now_ms])?;
    Ok(changed > 0)
}

/// Unread messages are counted up to this many per conversation.
pub const UNREAD_COUNT_MAX: u64 = 10_000;

/// `name`'s conversations (the given rooms, and everyone they exchanged direct messages with)
/// with what they have not read.
pub fn unread(
    conn: &Connection,
    name: &str,
    rooms: &[String],
) -> Result<Vec<UnreadCount>, StoreError> {
    let mut partners: Vec<String> = {
        let mut statement = conn.prepare_cached(
            "SELECT DISTINCT from_name FROM messages WHERE to_name = ?1 \
             UNION SELECT DISTINCT to_name FROM messages WHERE from_name = ?1 \
             AND to_name IS NOT NULL",
        )?;
        let rows = statement.query_map([name], |row| row.get(0))?;
        rows.collect::<Result<_, _>>()?
    };
    partners.retain(|partner| partner != name);
    let conversations = rooms.iter().map(|room| (Some(room.clone()), None, room_key(room))).chain(
        partners.into_iter().map(|with| {
            let conv = direct_key(name, &with);
            (None, Some(with), conv)
        }),
    );
    let mut counts = Vec::new();
    for (room, with, conv) in conversations {
        let read_seq: u64 = conn
            .prepare_cached("SELECT seq FROM read_markers WHERE name = ?1 AND conv = ?2")?
            .query_row([name, &conv], |row| row.get(0))
            .optional()?
            .unwrap_or(0);
        let unread: u64 = conn
            .prepare_cached(
                "SELECT count(*) FROM (SELECT 1 FROM messages WHERE conv = ?1 AND seq > ?2 \
                 AND from_name != ?3 AND deleted = 0 LIMIT ?4)",
            )?
            .query_row(params![conv, read_seq, name, UNREAD_COUNT_MAX], |row| row.get(0))?;
        let last_seq: Option<u64> = conn
            .prepare_cached("SELECT max(seq) FROM messages WHERE conv = ?1")?
            .query_row([&conv], |row| row.get(0))?;
        counts.push(UnreadCount { room, with, unread, read_seq, last_seq: last_seq.unwrap_or(0) });
    }
    counts.sort_by(|a, b| {
        (b.unread > 0).cmp(&(a.unread > 0)).then_with(|| {
            (a.room.as_deref(), a.with.as_deref()).cmp(&(b.room.as_deref(), b.with.as_deref()))
        })
    });
    Ok(counts)
}

/// Deletes the oldest messages so that at most `keep` remain (at most `batch` per call).
pub fn prune(conn: &Connection, keep: u64, batch: usize) -> Result<usize, StoreError> {
    let (min, max): (Option<u64>, Option<u64>) =
        conn.query_row("SELECT min(seq), max(seq) FROM messages", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
    let (Some(min), Some(max)) = (min, max) else { return Ok(0) };
    // Sequence numbers have no gaps except pruned ones, so this is the row count.
    if max - min < keep {
        return Ok(0);
    }
    let cut = (max - keep).min(min + batch as u64 - 1);
    conn.prepare_cached(
        "INSERT INTO messages_fts (messages_fts, rowid, text) \
         SELECT 'delete', seq, text FROM messages WHERE seq <= ?1 AND deleted = 0",
    )?
    .execute([cut.min(indexed_upto(conn)?)])?;
    conn.prepare_cached("DELETE FROM message_edits WHERE seq <= ?1")?.execute([cut])?;
    conn.prepare_cached("DELETE FROM reactions WHERE seq <= ?1")?.execute([cut])?;
    let deleted = conn.prepare_cached("DELETE FROM messages WHERE seq <= ?1")?.execute([cut])?;
    Ok(deleted)
}
#[cfg(test)]
mod replication_tests;
#[cfg(test)]
mod tests;
