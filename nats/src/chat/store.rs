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

use crate::chat::wire::StoredMessage;

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

const MESSAGE_COLUMNS: &str = "seq, conv, to_name, from_name, msg_id, text, at_ms, recorded_ms";

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
    })
}

/// Opens (creating if needed) the chat database in `data_dir`.
pub fn open(data_dir: &Path) -> Result<Connection, StoreError> {
    sqlite::open_wal(data_dir, DATABASE_FILE, PAGE_CACHE_BYTES_MAX, &[MIGRATION_1])
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
             recorded_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
             ON CONFLICT (from_name, msg_id) DO NOTHING",
    )?
    .execute(params![
        conv,
        message.to,
        message.from,
        message.id,
        message.text,
        message.at_ms,
        message.recorded_ms
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
    let mut text = |value: String| {
        values.push(rusqlite::types::Value::Text(value));
        format!("?{}", values.len())
    };
    let scope = match conversation {
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
    };
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
    Ok((messages, more))
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
    let deleted = conn.prepare_cached("DELETE FROM messages WHERE seq <= ?1")?.execute([cut])?;
    Ok(deleted)
}
#[cfg(test)]
mod tests {
    use super::*;

    fn message<'a>(
        room: Option<&'a str>,
        to: Option<&'a str>,
        from: &'a str,
        id: &'a str,
    ) -> NewMessage<'a> {
        NewMessage { room, to, from, id, text: "hi", at_ms: 1, recorded_ms: 2 }
    }

    #[test]
    fn history_pages_by_conversation_and_dedups_by_sender_and_id() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut conn = open(dir.path()).expect("opens");
        let store = conn.transaction().expect("begin");
        let mut seqs = Vec::new();
        for n in 0..5 {
            seqs.push(
                insert(&store, &message(Some("all"), None, "alice", &format!("a{n}")))
                    .expect("insert")
                    .expect("new"),
            );
        }
        let new = |m: NewMessage<'_>| insert(&store, &m).expect("insert").expect("new");
        let dm = new(message(None, Some("bob"), "alice", "d1"));
        let reply = new(message(None, Some("alice"), "bob", "d1"));
        let other = new(message(None, Some("carol"), "bob", "d2"));
        let rust = new(message(Some("rust"), None, "carol", "r1"));
        store.commit().expect("commit");
        let store = &conn;
        let again = insert(store, &message(Some("all"), None, "alice", "a0")).expect("insert");
        assert_eq!(again, None, "stored once");
        assert_eq!(find(store, "alice", "a3").expect("find"), Some(seqs[3]));
        assert_eq!(find(store, "bob", "a3").expect("find"), None);

        let all = Conversation::Room("all".into());
        let (last, more) = history(store, &all, None, None, 2).expect("reads");
        assert_eq!(last.iter().map(|m| m.seq).collect::<Vec<_>>(), vec![seqs[3], seqs[4]]);
        assert!(more);
        assert_eq!(last[0].room.as_deref(), Some("all"));
        let (page, more) = history(store, &all, Some(seqs[3]), None, 10).expect("reads");
        assert_eq!(page.len(), 3);
        assert!(!more);
        let (since, _) = history(store, &all, None, Some(seqs[1]), 10).expect("reads");
        assert_eq!(since.iter().map(|m| m.seq).collect::<Vec<_>>(), seqs[2..].to_vec());

        let pair = Conversation::Direct("bob".into(), "alice".into());
        let (talk, _) = history(store, &pair, None, None, 10).expect("reads");
        assert_eq!(talk.iter().map(|m| m.seq).collect::<Vec<_>>(), vec![dm, reply]);
        assert_eq!(talk[0].to.as_deref(), Some("bob"));
        assert_eq!(talk[0].room, None);

        let inbox = Conversation::Inbox { name: "bob".into(), rooms: vec![] };
        let (seen, _) = history(store, &inbox, None, Some(seqs[4]), 10).expect("reads");
        assert_eq!(seen.iter().map(|m| m.seq).collect::<Vec<_>>(), vec![dm, reply, other]);
        let inbox = Conversation::Inbox { name: "carol".into(), rooms: vec!["rust".into()] };
        let (seen, _) = history(store, &inbox, None, Some(seqs[4]), 10).expect("reads");
        assert_eq!(seen.iter().map(|m| m.seq).collect::<Vec<_>>(), vec![other, rust]);
    }

    #[test]
    fn users_sessions_and_rooms_round_trip_and_history_is_pruned() {
        let dir = tempfile::tempdir().expect("temp dir");
        {
            let store = open(dir.path()).expect("opens");
            set_online(&store, "alice", "token-a1", 10, 10).expect("online");
            set_online(&store, "bob", "token-b1", 20, 20).expect("online");
            set_offline(&store, "bob", 30, 7).expect("offline");
            set_member(&store, "alice", "rust", true).expect("joins");
            set_member(&store, "alice", "go", true).expect("joins");
            set_member(&store, "alice", "go", false).expect("parts");
            for n in 0..10 {
                insert(&store, &message(Some("all"), None, "alice", &format!("m{n}")))
                    .expect("insert");
            }
        }
        let store = open(dir.path()).expect("reopens");
        let known = users(&store).expect("loads");
        assert_eq!(known.len(), 2);
        assert_eq!(known[0].session, Some(("token-a1".into(), 10)));
        assert_eq!(known[0].rooms, BTreeSet::from(["rust".to_owned()]));
        assert_eq!(
            (known[1].session.clone(), known[1].last_seen_ms, known[1].left_seq),
            (None, 30, Some(7))
        );
        assert_eq!(left_seq(&store, "bob").expect("reads"), Some(7));
        assert_eq!(last_seq(&store).expect("reads"), 10);
        assert_eq!(prune(&store, 4, 3).expect("prunes"), 3);
        assert_eq!(prune(&store, 4, 100).expect("prunes"), 3);
        assert_eq!(prune(&store, 4, 100).expect("prunes"), 0);
        let (left, more) =
            history(&store, &Conversation::Room("all".into()), None, None, 100).expect("reads");
        assert_eq!((left.len(), more, left[0].seq), (4, false, 7));
    }
}
