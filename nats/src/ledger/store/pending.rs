//! Two-phase transfers: the pending ones as stored (open until posted, voided or expired).

use super::*;

pub(super) fn state_text(state: PendingState) -> (&'static str, Option<i64>) {
    match state {
        PendingState::Posted(amount) => ("posted", Some(amount)),
        state => (state.as_str(), None),
    }
}

/// A stored pending transfer's columns: id, [from, to, asset, state], [amount, expires], posted.
type PendingColumns = (String, [String; 4], [i64; 2], Option<i64>);

pub(super) fn pending_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<PendingColumns> {
    Ok((
        row.get(0)?,
        [row.get(1)?, row.get(2)?, row.get(3)?, row.get(6)?],
        [row.get(4)?, row.get(5)?],
        row.get(7)?,
    ))
}

pub(super) fn decode_pending(
    (id, [from, to, asset, state], [amount, expires], posted): PendingColumns,
) -> Result<(OperationId, PendingTransfer), StoreError> {
    let corrupt = || StoreError::Corrupt(format!("pending transfer {id}"));
    let state = match (state.as_str(), posted) {
        ("pending", _) => PendingState::Pending,
        ("posted", Some(amount)) => PendingState::Posted(amount),
        ("voided", _) => PendingState::Voided,
        ("expired", _) => PendingState::Expired,
        _ => return Err(corrupt()),
    };
    let transfer = PendingTransfer {
        from: AccountId::parse(&from).map_err(|_| corrupt())?,
        to: AccountId::parse(&to).map_err(|_| corrupt())?,
        asset: Asset::parse(&asset).map_err(|_| corrupt())?,
        amount: Amount::parse(amount).map_err(|_| corrupt())?,
        expires_at_ms: u64::try_from(expires).map_err(|_| corrupt())?,
        state,
    };
    Ok((OperationId::parse_recorded(&id).map_err(|_| corrupt())?, transfer))
}

pub(super) const PENDING_COLUMNS: &str =
    "id, from_account, to_account, asset, amount, expires_at_ms, state, posted";

/// One pending transfer (in any state), if it is stored.
pub fn pending_transfer(
    conn: &Connection,
    id: &OperationId,
) -> Result<Option<PendingTransfer>, StoreError> {
    let mut statement = conn.prepare_cached(&format!(
        "SELECT {PENDING_COLUMNS} FROM pending_transfers WHERE id = ?1"
    ))?;
    let row = statement.query_row(params![id.as_str()], pending_row).optional()?;
    row.map(|row| decode_pending(row).map(|(_, transfer)| transfer)).transpose()
}

/// Every transfer still pending (the ledger keeps them in memory to expire them).
pub fn open_pending_transfers(
    conn: &Connection,
) -> Result<Vec<(OperationId, PendingTransfer)>, StoreError> {
    let mut statement = conn.prepare(&format!(
        "SELECT {PENDING_COLUMNS} FROM pending_transfers WHERE state = 'pending'"
    ))?;
    let rows = statement.query_map([], pending_row)?;
    let mut open = Vec::new();
    for row in rows {
        open.push(decode_pending(row?)?);
    }
    Ok(open)
}

pub fn put_pending_transfer(
    conn: &Connection,
    id: &OperationId,
    transfer: &PendingTransfer,
    now_ms: u64,
) -> Result<(), StoreError> {
    let (state, posted) = state_text(transfer.state);
    let finished = (transfer.state != PendingState::Pending).then_some(now_ms);
    conn.prepare_cached(
        "INSERT INTO pending_transfers
             (id, from_account, to_account, asset, amount, expires_at_ms, state, posted,
              finished_at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
         ON CONFLICT (id) DO UPDATE SET state = excluded.state, posted = excluded.posted,
             finished_at_ms = excluded.finished_at_ms",
    )?
    .execute(params![
        id.as_str(),
        transfer.from.as_str(),
        transfer.to.as_str(),
        transfer.asset.as_str(),
        transfer.amount.get(),
        sqlite::saturating_i64(transfer.expires_at_ms),
        state,
        posted,
        finished,
    ])?;
    Ok(())
}

/// Deletes finished pending transfers finished before `before_ms`, at most `limit`.
pub fn prune_pending_transfers(
    conn: &Connection,
    before_ms: u64,
    limit: usize,
) -> Result<usize, StoreError> {
    let deleted = conn
        .prepare_cached(
            "DELETE FROM pending_transfers WHERE id IN (SELECT id FROM pending_transfers
             WHERE finished_at_ms < ?1 LIMIT ?2)",
        )?
        .execute(params![sqlite::saturating_i64(before_ms), limit])?;
    Ok(deleted)
}
