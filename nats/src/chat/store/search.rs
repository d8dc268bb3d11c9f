use super::*;

/// Marks around the words a search found (control characters no message holds).
pub(super) const MARK_START: char = '\u{2}';
pub(super) const MARK_END: char = '\u{3}';

/// Cuts a highlighted text into pieces.
pub(super) fn pieces(marked: &str) -> Vec<TextPiece> {
    let mut pieces = Vec::new();
    let mut rest = marked;
    while !rest.is_empty() {
        match rest.find(MARK_START) {
            Some(0) => {
                let body = &rest[MARK_START.len_utf8()..];
                let end = body.find(MARK_END).unwrap_or(body.len());
                pieces.push(TextPiece { text: body[..end].to_owned(), matched: true });
                rest = body.get(end + MARK_END.len_utf8()..).unwrap_or("");
            }
            Some(at) => {
                pieces.push(TextPiece { text: rest[..at].to_owned(), matched: false });
                rest = &rest[at..];
            }
            None => {
                pieces.push(TextPiece { text: rest.to_owned(), matched: false });
                rest = "";
            }
        }
    }
    pieces
}

/// Messages in `conversation` (as [`history`] reads it) matching the FTS5 `query`, newest
/// first, before `before`, at most `limit`, and whether more matched.
pub fn search(
    conn: &Connection,
    query: &str,
    conversation: &Conversation,
    before: Option<u64>,
    limit: usize,
) -> Result<(Vec<SearchHit>, bool), StoreError> {
    let mut values: Vec<rusqlite::types::Value> =
        vec![rusqlite::types::Value::Text(query.to_owned())];
    let scope = scope_sql(conversation, &mut values);
    values
        .push(rusqlite::types::Value::Integer(sqlite::saturating_i64(before.unwrap_or(u64::MAX))));
    let before_at = values.len();
    let columns = MESSAGE_COLUMNS
        .split(", ")
        .map(|column| format!("m.{column}"))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "SELECT {columns}, highlight(messages_fts, 0, char(2), char(3)) \
         FROM messages_fts JOIN messages m ON m.seq = messages_fts.rowid \
         WHERE messages_fts MATCH ?1 AND messages_fts.rowid < ?{before_at} AND m.deleted = 0 \
         AND {scope} ORDER BY messages_fts.rowid DESC LIMIT {}",
        limit + 1
    );
    let mut statement = conn.prepare_cached(&sql)?;
    let rows = statement.query_map(params_from_iter(values), |row| {
        let marked: String = row.get(MESSAGE_COLUMN_COUNT)?;
        Ok(SearchHit { message: message_of(row)?, highlighted: pieces(&marked) })
    })?;
    let mut hits: Vec<SearchHit> = rows.collect::<Result<_, _>>()?;
    let more = hits.len() > limit;
    hits.truncate(limit);
    let mut messages: Vec<StoredMessage> = hits.iter().map(|hit| hit.message.clone()).collect();
    attach_reactions(conn, &mut messages)?;
    for (hit, message) in hits.iter_mut().zip(messages) {
        hit.message = message;
    }
    Ok((hits, more))
}

/// The newest message in the search index. Messages are indexed in batches after they are
/// recorded ([`index_new`]): every message not deleted is indexed up to here, none after.
pub(super) fn indexed_upto(conn: &Connection) -> Result<u64, StoreError> {
    let upto: Option<u64> = conn
        .prepare_cached("SELECT max(id) FROM messages_fts_docsize")?
        .query_row([], |row| row.get(0))?;
    Ok(upto.unwrap_or(0))
}

/// Indexes the messages recorded since the last call (in one batch: one FTS5 segment, not one
/// per group); returns how many.
pub fn index_new(conn: &Connection) -> Result<usize, StoreError> {
    let after = indexed_upto(conn)?;
    let indexed = conn
        .prepare_cached(
            "INSERT INTO messages_fts (rowid, text) SELECT seq, text FROM messages \
             WHERE seq > ?1 AND deleted = 0",
        )?
        .execute([after])?;
    Ok(indexed)
}

pub(super) fn index(conn: &Connection, seq: u64, text: &str) -> Result<(), StoreError> {
    conn.prepare_cached("INSERT INTO messages_fts (rowid, text) VALUES (?1, ?2)")?
        .execute(params![seq, text])?;
    Ok(())
}

pub(super) fn unindex(conn: &Connection, seq: u64, text: &str) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO messages_fts (messages_fts, rowid, text) VALUES ('delete', ?1, ?2)",
    )?
    .execute(params![seq, text])?;
    Ok(())
}
