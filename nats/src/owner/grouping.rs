use super::*;

/// Applies a group's envelopes in order; after a storage error the rest are abandoned (their
/// replies left for the rollback to answer).
pub(super) fn apply_all<S: State>(
    state: &mut S,
    tx: &rusqlite::Transaction<'_>,
    now_ms: u64,
    group: Vec<S::Envelope>,
    out: &mut S::Outbox,
) -> Result<(), StoreError> {
    let mut envelopes = group.into_iter();
    for envelope in envelopes.by_ref() {
        let span = state.span(&envelope);
        let applied = crate::trace::applying(span, || state.apply(tx, now_ms, envelope, out));
        if let Err(error) = applied {
            for rest in envelopes {
                state.abandon(rest, out);
            }
            return Err(error);
        }
    }
    Ok(())
}

/// The next group: whatever is queued (at most `max`), after waiting until `until` for the
/// first. Empty when nothing came; `None` once every sender is gone and the queue is empty.
pub(super) async fn next_group<T>(
    inbox: &mut mpsc::Receiver<T>,
    until: Instant,
    max: usize,
) -> Option<Vec<T>> {
    let first = match tokio::time::timeout_at(until.into(), inbox.recv()).await {
        Ok(Some(item)) => Some(item),
        Ok(None) => return None,
        Err(_) => None,
    };
    let mut group: Vec<T> = first.into_iter().collect();
    while group.len() < max {
        match inbox.try_recv() {
            Ok(item) => group.push(item),
            Err(_) => break,
        }
    }
    Some(group)
}
