//! The replicated log of one service: what an entry is, how it is written by the active
//! instance (the [`Journal`]: fenced by the stream's expected last sequence), how any instance
//! applies it to its SQLite view (the events it carries are relayed by [`super::relay`]).
//!
//! ## An entry
//! One owner group: the SQLite *patchset* of its transaction (the session extension records
//! every row it inserted, updated or deleted) and the durable events it produced (subject and
//! payload). An entry larger than [`PART_BYTES_MAX`] is split into parts (`Agora-Part: i/n`),
//! applied only once its last part is read; parts left behind by an instance that died
//! mid-entry are skipped (a new entry starts at a part 1).
//!
//! Headers of every part: `Agora-Instance` (the writer), `Agora-Relayed` (the highest entry
//! whose events the writer knew stored in the events stream), `Agora-Part`.

use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, message::PublishMessage as Publish};
use bytes::Bytes;
use rusqlite::session::{ConflictAction, ConflictType};
use rusqlite::{Connection, OptionalExtension};

use super::lease::LeaseState;
use crate::sqlite::StoreError;

/// Largest part of an entry, in bytes (below the server's default 1 MiB payload limit).
pub const PART_BYTES_MAX: usize = 512 * 1024;
/// How long the active instance waits for the log to store an entry before it answers
/// `unavailable` (and checks, before its next write, whether the entry landed after all).
pub const APPEND_TIMEOUT: Duration = Duration::from_secs(2);
/// Most events one entry carries (a full bank batch: two per transfer).
pub const ENTRY_EVENTS_MAX: usize = 1 << 16;

const HEADER_INSTANCE: &str = "Agora-Instance";
const HEADER_RELAYED: &str = "Agora-Relayed";
const HEADER_PART: &str = "Agora-Part";
const MAGIC: &[u8; 4] = b"AGL1";
/// The length of a `traceparent` (version 00).
const TRACEPARENT_BYTES: usize = 55;

/// The table every replicated store keeps its position in the log in (written in the same
/// transaction as what it applied).
const PREPARE: &str = "CREATE TABLE IF NOT EXISTS agora_replication (
    key TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID";

/// A durable event: published once its entry is in the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub subject: String,
    pub payload: Bytes,
    /// The span of the request that made it: published as its `traceparent`.
    pub trace: Option<crate::trace::Trace>,
}

impl Event {
    /// An event made now, carrying the [`crate::trace::current`] span.
    pub fn new(subject: String, payload: Bytes) -> Self {
        Self { subject, payload, trace: crate::trace::current() }
    }
}

/// What one entry holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Entry {
    pub changes: Vec<u8>,
    pub events: Vec<Event>,
}

impl Entry {
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty() && self.events.is_empty()
    }

    /// `AGL1 | u32 changes | changes | u32 events | (u16 subject | subject | u32 len | payload)*`,
    /// then, if any event has a span, `u32 traced | (u32 event index | 55 bytes traceparent)*`
    /// (entries written before spans existed end after the events, and decode the same).
    pub fn encode(&self) -> Vec<u8> {
        let events: usize = self.events.iter().map(|e| 6 + e.subject.len() + e.payload.len()).sum();
        let mut out = Vec::with_capacity(12 + self.changes.len() + events);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(self.changes.len() as u32).to_be_bytes());
        out.extend_from_slice(&self.changes);
        out.extend_from_slice(&(self.events.len() as u32).to_be_bytes());
        for event in &self.events {
            out.extend_from_slice(&(event.subject.len() as u16).to_be_bytes());
            out.extend_from_slice(event.subject.as_bytes());
            out.extend_from_slice(&(event.payload.len() as u32).to_be_bytes());
            out.extend_from_slice(&event.payload);
        }
        let traced: Vec<(usize, String)> = self
            .events
            .iter()
            .enumerate()
            .filter_map(|(index, event)| Some((index, event.trace?.traceparent())))
            .collect();
        if !traced.is_empty() {
            out.extend_from_slice(&(traced.len() as u32).to_be_bytes());
            for (index, traceparent) in traced {
                out.extend_from_slice(&(index as u32).to_be_bytes());
                out.extend_from_slice(traceparent.as_bytes());
            }
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, StoreError> {
        fn corrupt() -> StoreError {
            StoreError::Corrupt("a log entry that does not decode".into())
        }
        let mut rest = bytes.strip_prefix(MAGIC.as_slice()).ok_or_else(corrupt)?;
        fn take<'a>(rest: &mut &'a [u8], n: usize) -> Result<&'a [u8], StoreError> {
            if rest.len() < n {
                return Err(corrupt());
            }
            let (head, tail) = rest.split_at(n);
            *rest = tail;
            Ok(head)
        }
        let len =
            u32::from_be_bytes(take(&mut rest, 4)?.try_into().map_err(|_| corrupt())?) as usize;
        let changes = take(&mut rest, len)?.to_vec();
        let count =
            u32::from_be_bytes(take(&mut rest, 4)?.try_into().map_err(|_| corrupt())?) as usize;
        if count > ENTRY_EVENTS_MAX {
            return Err(corrupt());
        }
        let mut events = Vec::with_capacity(count);
        for _ in 0..count {
            let len =
                u16::from_be_bytes(take(&mut rest, 2)?.try_into().map_err(|_| corrupt())?) as usize;
            let subject =
                String::from_utf8(take(&mut rest, len)?.to_vec()).map_err(|_| corrupt())?;
            let len =
                u32::from_be_bytes(take(&mut rest, 4)?.try_into().map_err(|_| corrupt())?) as usize;
            let payload = Bytes::copy_from_slice(take(&mut rest, len)?);
            events.push(Event { subject, payload, trace: None });
        }
        if !rest.is_empty() {
            let traced =
                u32::from_be_bytes(take(&mut rest, 4)?.try_into().map_err(|_| corrupt())?) as usize;
            if traced > count {
                return Err(corrupt());
            }
            for _ in 0..traced {
                let index =
                    u32::from_be_bytes(take(&mut rest, 4)?.try_into().map_err(|_| corrupt())?);
                let text = std::str::from_utf8(take(&mut rest, TRACEPARENT_BYTES)?)
                    .map_err(|_| corrupt())?;
                let event = events.get_mut(index as usize).ok_or_else(corrupt)?;
                event.trace = crate::trace::Trace::parse(text);
            }
        }
        Ok(Self { changes, events })
    }
}

/// Creates the position table if missing.
pub fn prepare(conn: &Connection) -> Result<(), StoreError> {
    conn.execute_batch(PREPARE)?;
    Ok(())
}

/// The last log sequence this store applied (0: none).
pub fn applied(conn: &Connection) -> Result<u64, StoreError> {
    let exists: Option<String> = conn
        .query_row(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'agora_replication'",
            [],
            |row| row.get(0),
        )
        .optional()?;
    if exists.is_none() {
        return Ok(0);
    }
    let value: Option<u64> = conn
        .query_row("SELECT value FROM agora_replication WHERE key = 'applied'", [], |row| {
            row.get(0)
        })
        .optional()?;
    Ok(value.unwrap_or(0))
}

/// Records the position, inside the caller's transaction.
pub fn set_applied(conn: &Connection, seq: u64) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO agora_replication (key, value) VALUES ('applied', ?1)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        [seq],
    )?;
    Ok(())
}

/// Applies an entry's changes inside the caller's transaction. The store was at the entry's
/// predecessor, so nothing conflicts; if something does (a store that diverged), the log wins.
pub fn apply_changes(conn: &Connection, changes: &[u8]) -> Result<(), StoreError> {
    if changes.is_empty() {
        return Ok(());
    }
    let mut input: &[u8] = changes;
    conn.apply_strm(&mut input, None::<fn(&str) -> bool>, |conflict, _item| match conflict {
        ConflictType::SQLITE_CHANGESET_DATA | ConflictType::SQLITE_CHANGESET_CONFLICT => {
            ConflictAction::SQLITE_CHANGESET_REPLACE
        }
        _ => ConflictAction::SQLITE_CHANGESET_OMIT,
    })?;
    Ok(())
}

/// Applies a whole entry read from the log, in one transaction with its position.
pub fn apply(conn: &Connection, seq: u64, entry: &Entry) -> Result<(), StoreError> {
    let tx = conn.unchecked_transaction()?;
    apply_changes(&tx, &entry.changes)?;
    set_applied(&tx, seq)?;
    tx.commit()?;
    Ok(())
}

/// One message of the log as read back.
#[derive(Debug, Clone)]
pub struct Part {
    pub seq: u64,
    pub instance: String,
    pub relayed: u64,
    /// `(index, count)`, 1-based.
    pub part: (u32, u32),
    pub payload: Bytes,
}

impl Part {
    pub fn from_message(seq: u64, headers: Option<&HeaderMap>, payload: Bytes) -> Self {
        let header = |name: &str| -> Option<String> {
            headers.and_then(|h| h.get(name)).map(|v| v.as_str().to_owned())
        };
        let part = header(HEADER_PART)
            .and_then(|p| {
                let (i, n) = p.split_once('/')?;
                Some((i.parse().ok()?, n.parse().ok()?))
            })
            .unwrap_or((1, 1));
        Self {
            seq,
            instance: header(HEADER_INSTANCE).unwrap_or_default(),
            relayed: header(HEADER_RELAYED).and_then(|r| r.parse().ok()).unwrap_or(0),
            part,
            payload,
        }
    }
}

/// Puts parts back together: a complete entry once its last part arrives.
#[derive(Debug, Default)]
pub struct Assembler {
    parts: Vec<Bytes>,
    instance: String,
}

/// An entry read back from the log, with the sequence of its last part and who wrote it.
#[derive(Debug, Clone)]
pub struct Read {
    pub seq: u64,
    pub instance: String,
    pub relayed: u64,
    pub entry: Entry,
}

impl Assembler {
    pub fn push(&mut self, part: Part) -> Result<Option<Read>, StoreError> {
        let (index, count) = part.part;
        if index <= 1 {
            self.parts.clear();
            self.instance = part.instance.clone();
        } else if self.instance != part.instance || self.parts.len() + 1 != index as usize {
            // A part of an entry whose beginning we did not see (left by a writer that died).
            self.parts.clear();
            return Ok(None);
        }
        self.parts.push(part.payload);
        if index < count {
            return Ok(None);
        }
        let entry = if self.parts.len() == 1 {
            Entry::decode(&self.parts[0])?
        } else {
            Entry::decode(&self.parts.concat())?
        };
        self.parts.clear();
        Ok(Some(Read { seq: part.seq, instance: part.instance, relayed: part.relayed, entry }))
    }

    /// Forgets an incomplete entry (the active instance starts a new one after it).
    pub fn reset(&mut self) {
        self.parts.clear();
    }
}

/// Why an append did not land.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// Someone else wrote to the log, or this instance's lease ended: it must stop.
    #[error("this instance is no longer the active one: {0}")]
    Deposed(String),
    /// Unknown whether it landed (a timeout, the stream between leaders): the next write
    /// checks first.
    #[error("the replicated log did not confirm the write: {0}")]
    Uncertain(String),
}

/// The active instance's writer: appends entries, relays their events, takes snapshots.
pub struct Journal {
    pub(super) js: jetstream::Context,
    pub(super) service: &'static str,
    pub(super) subject: String,
    pub(super) stream: String,
    pub(super) instance: String,
    /// The last complete entry applied here.
    pub(super) applied: u64,
    /// The stream's last sequence as this instance knows it (parts of an abandoned entry
    /// included).
    pub(super) last: u64,
    /// The log's last sequence when this instance took over (what follows is its own).
    pub(super) start: u64,
    /// An append failed without an answer: check the log before the next one.
    pub(super) uncertain: bool,
    pub(super) lease: Arc<LeaseState>,
    pub(super) relay: super::relay::Relay,
    pub(super) snapshots: super::snapshot::Snapshots,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("service", &self.service)
            .field("applied", &self.applied)
            .finish_non_exhaustive()
    }
}

impl Journal {
    /// Whether this instance may still write (its lease holds and nobody deposed it).
    pub fn is_valid(&self) -> bool {
        self.lease.is_valid()
    }

    /// Whether this instance may still write, renewing its lease first if this process
    /// stalled past it (see [`LeaseState::revalidate`]).
    pub async fn revalidate(&self) -> bool {
        self.lease.revalidate(super::lease::LATE_RENEWAL_TIMEOUT).await
    }

    /// Marks this instance deposed: the service stops.
    pub fn depose(&self, why: &str) {
        self.lease.depose(why);
    }

    pub fn needs_check(&self) -> bool {
        self.uncertain
    }

    /// The log may hold an entry of this instance that its view lacks: check before writing.
    pub fn mark_uncertain(&mut self) {
        self.uncertain = true;
    }

    /// Writes one entry (in parts if needed), each part expecting the stream's last sequence
    /// to be what this instance wrote last: the sequence of the part before it. The parts go
    /// out one after another without waiting (only this instance writes, so part `i` lands at
    /// `last + i`), then every acknowledgement is awaited: one round trip, not one per part.
    pub async fn append(&mut self, entry: &Entry) -> Result<u64, AppendError> {
        if !self.is_valid() {
            return Err(AppendError::Deposed("the lease is not held".into()));
        }
        let body = Bytes::from(entry.encode());
        let count = body.len().div_ceil(PART_BYTES_MAX).max(1);
        let relayed = self.relay.relayed().to_string();
        let first = self.last;
        let sent = tokio::time::timeout(APPEND_TIMEOUT, async {
            let mut acks = Vec::with_capacity(count);
            for index in 0..count {
                let mut headers = HeaderMap::new();
                headers.insert(HEADER_INSTANCE, self.instance.as_str());
                headers.insert(HEADER_RELAYED, relayed.as_str());
                if count > 1 {
                    headers.insert(HEADER_PART, format!("{}/{count}", index + 1).as_str());
                }
                let start = (index * PART_BYTES_MAX).min(body.len());
                let end = ((index + 1) * PART_BYTES_MAX).min(body.len());
                let publish = Publish::build()
                    .payload(body.slice(start..end))
                    .headers(headers)
                    .expected_last_sequence(first + index as u64);
                acks.push(self.js.send_publish(self.subject.clone(), publish).await?);
            }
            let mut last = first;
            for ack in acks {
                last = ack.await?.sequence;
            }
            Ok::<u64, jetstream::context::PublishError>(last)
        })
        .await;
        match sent {
            Ok(Ok(last)) => {
                self.last = last;
                Ok(last)
            }
            Ok(Err(error)) => {
                self.uncertain = true;
                Err(AppendError::Uncertain(error.to_string()))
            }
            Err(_) => {
                self.uncertain = true;
                Err(AppendError::Uncertain("timed out".into()))
            }
        }
    }

    /// What the log holds after what this instance applied: entries this instance wrote
    /// without learning it (to apply now), or `Deposed` if another instance wrote.
    pub async fn missing(&mut self) -> Result<Vec<Read>, AppendError> {
        let uncertain = |e: &dyn std::fmt::Display| AppendError::Uncertain(e.to_string());
        let mut stream = self.js.get_stream(&self.stream).await.map_err(|e| uncertain(&e))?;
        let last = stream.info().await.map_err(|e| uncertain(&e))?.state.last_sequence;
        let mut assembler = Assembler::default();
        let mut found = Vec::new();
        for seq in self.start.max(self.applied) + 1..=last {
            let message = stream.get_raw_message(seq).await.map_err(|e| uncertain(&e))?;
            let part = Part::from_message(seq, Some(&message.headers), message.payload);
            if part.instance != self.instance {
                return Err(AppendError::Deposed(format!("{} wrote entry {seq}", part.instance)));
            }
            if let Some(read) = assembler.push(part).map_err(|e| uncertain(&e))? {
                found.push(read);
            }
        }
        self.last = last;
        self.uncertain = false;
        Ok(found)
    }

    /// After an entry's commit: its events go to the events stream (deduplicated by
    /// `<service>:<seq>:<index>`), and a snapshot is taken when one is due.
    pub async fn committed(&mut self, seq: u64, events: Vec<Event>) {
        self.applied = seq;
        self.relay.send(self.service, seq, events).await;
        self.snapshots.maybe_take(seq, self.relay.relayed());
    }
}

#[cfg(test)]
mod tests;
