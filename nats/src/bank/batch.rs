//! The bank's group commit: batches formed from queued operations, run at most
//! `pipeline_depth` at once over disjoint accounts; each leased at the ledger in one round trip,
//! applied with `agora_core::apply_batch` (money rules and operation ids) and committed in one.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use agora_core::bank;
use agora_core::{AccountId, Book, EventKind, Operation, OperationId, Posting};
use rand::Rng;
use serde_json::value::RawValue;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::wire::{AccountBalance, BankEvent, BankRecord, OperationWire, TransferReply};
use super::{Bank, COMMIT_ATTEMPTS_MAX, LOCK_SPLITS_MAX, Pending, RETRY_BACKOFF_MS_MAX};
use crate::client::ClientError;
use crate::clock::now_ms;
use crate::error::{ErrorCode, ServiceError};
use crate::ledger::wire::{
    BatchCommitRequest, BatchLockRequest, CommitEvent, OperationEntry, Release, Write,
};

pub(super) fn jitter_ms() -> u64 {
    rand::rng().random_range(1..=RETRY_BACKOFF_MS_MAX)
}

/// What a finished batch hands back to the batcher.
struct BatchDone {
    accounts: Vec<AccountId>,
    /// Operations that found accounts locked by another instance; they retry later.
    waiting: Vec<Pending>,
}

/// Forms batches from queued operations and runs up to `pipeline_depth` of them at once.
///
/// Batches in flight at the same time never share an account: an operation whose accounts
/// are held by an in-flight batch of this instance waits until that batch is done. (Two
/// batches of one owner on one account would both "renew" its lease and compute from the
/// same balance.) Operations deferred because another instance holds their accounts retry
/// after a short, jittered pause.
pub(super) async fn batcher(bank: Arc<Bank>, mut queue: mpsc::Receiver<Pending>) {
    let depth = bank.config.pipeline_depth;
    let (done_tx, mut done_rx) = mpsc::channel::<BatchDone>(depth);
    let mut waiting: VecDeque<Pending> = VecDeque::new();
    let mut busy: HashSet<AccountId> = HashSet::new();
    let mut in_flight = 0usize;
    let mut queue_open = true;
    loop {
        let retry_at = waiting.iter().map(|p| p.not_before).min();
        let accepting = queue_open && in_flight < depth;
        tokio::select! {
            biased;
            Some(done) = done_rx.recv() => {
                in_flight -= 1;
                for account in &done.accounts {
                    busy.remove(account);
                }
                let not_before = Instant::now() + Duration::from_millis(jitter_ms());
                for mut pending in done.waiting {
                    pending.not_before = not_before;
                    waiting.push_back(pending);
                }
            }
            next = queue.recv(), if accepting => match next {
                Some(pending) => {
                    waiting.push_back(pending);
                    if bank.config.batch_window_ms > 0 && in_flight == 0 {
                        tokio::time::sleep(Duration::from_millis(bank.config.batch_window_ms)).await;
                    }
                }
                None => queue_open = false,
            },
            () = sleep_until_or_forever(retry_at), if in_flight < depth => {}
        }
        if !queue_open && in_flight == 0 && waiting.is_empty() {
            return;
        }
        while in_flight < depth {
            while waiting.len() < bank.config.batch_max * depth {
                match queue.try_recv() {
                    Ok(pending) => waiting.push_back(pending),
                    Err(_) => break,
                }
            }
            let batch = take_batch(&bank, &mut waiting, &busy).await;
            if batch.is_empty() {
                break;
            }
            let accounts: Vec<AccountId> = batch
                .iter()
                .flat_map(|p| p.parsed.operation.accounts())
                .cloned()
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            busy.extend(accounts.iter().cloned());
            in_flight += 1;
            let bank = bank.clone();
            let done = done_tx.clone();
            tokio::spawn(async move {
                let waiting = bank.run_batch(batch).await;
                done.send(BatchDone { accounts, waiting }).await.ok();
            });
        }
    }
}

async fn sleep_until_or_forever(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Takes up to `batch_max` operations that are due and whose accounts no in-flight batch
/// holds, in arrival order; answers `busy` to those past their deadline.
async fn take_batch(
    bank: &Bank,
    waiting: &mut VecDeque<Pending>,
    busy: &HashSet<AccountId>,
) -> Vec<Pending> {
    let now = Instant::now();
    let mut batch = Vec::new();
    let mut kept = VecDeque::with_capacity(waiting.len());
    while let Some(pending) = waiting.pop_front() {
        if pending.deadline <= now {
            let busy = ServiceError::new(
                ErrorCode::Busy,
                format!("accounts stayed locked for {} ms; retry", bank.config.lock_wait_ms),
            );
            pending.replier.reply_bytes(&pending.request, Err(busy)).await;
            continue;
        }
        let runnable = batch.len() < bank.config.batch_max
            && pending.not_before <= now
            && !pending.parsed.operation.accounts().iter().any(|a| busy.contains(*a));
        if runnable {
            batch.push(pending);
        } else {
            kept.push_back(pending);
        }
    }
    *waiting = kept;
    batch
}

/// How one operation of a batch ends.
enum Outcome {
    /// Refused or answered from a record; nothing to write.
    Done(Result<Box<RawValue>, ServiceError>),
    /// Applied to the book: written and recorded at commit. The reply is serialized once and
    /// used both for the client and inside the idempotency record.
    Applied { postings: Vec<Posting>, reply: Box<RawValue> },
    /// Same id and operation as an earlier operation in this batch: gets its reply.
    SameAs(usize),
}

impl Bank {
    /// Runs one batch; returns the operations that must wait for another instance's locks.
    async fn run_batch(&self, mut batch: Vec<Pending>) -> Vec<Pending> {
        let mut waiting = Vec::new();
        let mut splits = 0;
        let started = Instant::now();
        let locked = loop {
            if batch.is_empty() {
                return waiting;
            }
            let accounts: BTreeSet<&AccountId> =
                batch.iter().flat_map(|p| p.parsed.operation.accounts()).collect();
            let ids: BTreeSet<&str> =
                batch.iter().filter_map(|p| p.parsed.id.as_ref().map(|id| id.as_str())).collect();
            let request = BatchLockRequest {
                owner: self.owner.clone(),
                accounts: accounts.iter().map(|a| a.to_string()).collect(),
                lease_ms: self.config.lease_ms,
                ids: ids.iter().map(|id| (*id).to_owned()).collect(),
            };
            let reply = self.ledger.ledger_lock(&request).await;
            match reply {
                Ok(reply) => break reply,
                Err(ClientError::Service(error)) if error.code == ErrorCode::Locked => {
                    self.stats.lock_conflicts.fetch_add(1, Ordering::Relaxed);
                    let held: BTreeSet<&str> = error.accounts.iter().map(String::as_str).collect();
                    splits += 1;
                    if held.is_empty() || splits > LOCK_SPLITS_MAX {
                        waiting.append(&mut batch);
                        return waiting;
                    }
                    let (blocked, free): (Vec<_>, Vec<_>) = batch.into_iter().partition(|p| {
                        p.parsed.operation.accounts().iter().any(|a| held.contains(a.as_str()))
                    });
                    waiting.extend(blocked);
                    batch = free;
                }
                Err(error) => {
                    let error = unavailable("could not lock accounts at the ledger", &error);
                    reply_all(&batch, &error).await;
                    return waiting;
                }
            }
        };
        let lock_elapsed = started.elapsed();
        self.stats.batches.fetch_add(1, Ordering::Relaxed);
        self.stats.largest_batch.fetch_max(batch.len() as u64, Ordering::Relaxed);

        let mut tokens = BTreeMap::new();
        let mut balances = Vec::new();
        for grant in &locked.locks {
            let Ok(account) = AccountId::parse(&grant.account) else {
                let error = ServiceError::new(ErrorCode::Internal, "ledger sent a bad account");
                reply_all(&batch, &error).await;
                return waiting;
            };
            tokens.insert(account.clone(), grant.token);
            balances.push((account, grant.balance));
        }
        // What the ledger recorded for the batch's ids: the operation and its reply.
        let recorded = match recorded_operations(&locked.operations) {
            Ok(recorded) => recorded,
            Err(error) => {
                reply_all(&batch, &error).await;
                return waiting;
            }
        };
        let release: Vec<Release> = tokens
            .iter()
            .map(|(account, token)| Release { account: account.to_string(), token: *token })
            .collect();

        let mut taken_ids: BTreeSet<OperationId> = BTreeSet::new();
        for _ in 0..COMMIT_ATTEMPTS_MAX {
            let outcomes = self.apply(&batch, &balances, &recorded, &taken_ids);
            let (writes, operations) = match self.changes(&batch, &outcomes, &balances, &tokens) {
                Ok(changes) => changes,
                Err(error) => {
                    // Nothing was written; the leases expire on their own.
                    reply_all(&batch, &error).await;
                    return waiting;
                }
            };
            let commit = BatchCommitRequest {
                owner: self.owner.clone(),
                writes,
                operations,
                release: release.clone(),
                events: events(&batch, &outcomes, now_ms()),
            };
            let committed = self.ledger.ledger_commit(&commit).await;
            match committed {
                Ok(_) => {
                    let commit_elapsed = started.elapsed();
                    let size = batch.len();
                    self.finish(batch, outcomes).await;
                    tracing::debug!(
                        size,
                        lock_us = lock_elapsed.as_micros() as u64,
                        commit_us = commit_elapsed.as_micros() as u64,
                        total_us = started.elapsed().as_micros() as u64,
                        "batch committed"
                    );
                    return waiting;
                }
                Err(ClientError::Service(error)) if error.code == ErrorCode::DuplicateId => {
                    taken_ids.extend(
                        error.ids.iter().filter_map(|id| OperationId::parse_recorded(id).ok()),
                    );
                }
                Err(ClientError::Service(error)) if error.code == ErrorCode::StaleToken => {
                    // The leases ran out before the commit: nothing was written. Try again.
                    tracing::warn!(%error, "batch commit refused: leases expired; retrying");
                    waiting.extend(batch);
                    return waiting;
                }
                Err(error) => {
                    let error = unavailable("commit outcome unknown", &error);
                    reply_all(&batch, &error).await;
                    return waiting;
                }
            }
        }
        let error = ServiceError::new(ErrorCode::Busy, "operation ids kept conflicting; retry");
        reply_all(&batch, &error).await;
        waiting
    }

    /// Applies the batch to a fresh book of the locked balances, honouring operation ids
    /// (`agora_core::apply_batch`); an applied operation's reply is built once, for the client
    /// and for its record.
    fn apply(
        &self,
        batch: &[Pending],
        balances: &[(AccountId, i64)],
        recorded: &HashMap<OperationId, (Operation, Box<RawValue>)>,
        taken_ids: &BTreeSet<OperationId>,
    ) -> Vec<Outcome> {
        let mut book = Book::new(balances.iter().cloned());
        let operations: Vec<(Option<&OperationId>, &Operation)> =
            batch.iter().map(|p| (p.parsed.id.as_ref(), &p.parsed.operation)).collect();
        let outcomes = agora_core::apply_batch(&mut book, &operations, recorded, taken_ids);
        outcomes
            .into_iter()
            .zip(batch)
            .map(|(outcome, pending)| match outcome {
                bank::Outcome::Applied(postings) => match reply_for(&postings) {
                    Ok(reply) => Outcome::Applied { reply, postings },
                    Err(error) => Outcome::Done(Err(error)),
                },
                bank::Outcome::Refused(error) => Outcome::Done(Err(error.into())),
                bank::Outcome::Replay(reply) => Outcome::Done(Ok(reply)),
                bank::Outcome::IdReused => {
                    let id = pending.parsed.id.as_ref().map(OperationId::as_str).unwrap_or("");
                    Outcome::Done(Err(id_reused(id)))
                }
                bank::Outcome::SameAs(first) => Outcome::SameAs(first),
            })
            .collect()
    }

    /// The balance writes and idempotency records of a batch's outcomes.
    fn changes(
        &self,
        batch: &[Pending],
        outcomes: &[Outcome],
        balances: &[(AccountId, i64)],
        tokens: &BTreeMap<AccountId, u64>,
    ) -> Result<(Vec<Write>, Vec<OperationEntry>), ServiceError> {
        let mut latest: BTreeMap<&AccountId, i64> = BTreeMap::new();
        let mut operations = Vec::new();
        for (pending, outcome) in batch.iter().zip(outcomes) {
            let Outcome::Applied { postings, reply } = outcome else {
                continue;
            };
            for posting in postings {
                latest.insert(&posting.account, posting.balance);
            }
            if let Some(id) = &pending.parsed.id {
                let record = BankRecord {
                    op: OperationWire::from(&pending.parsed.operation),
                    reply: reply.clone(),
                };
                // Serializing our own types cannot fail; if it ever did, the batch must not
                // commit: an operation without its record would be applied again on retry.
                let record = serde_json::value::to_raw_value(&record).map_err(|e| {
                    ServiceError::new(ErrorCode::Internal, format!("cannot record {id}: {e}"))
                })?;
                operations.push(OperationEntry { id: id.to_string(), record });
            }
        }
        let unchanged: BTreeMap<&AccountId, i64> = balances.iter().map(|(a, b)| (a, *b)).collect();
        let writes = latest
            .into_iter()
            .filter(|(account, balance)| unchanged.get(account) != Some(balance))
            .map(|(account, balance)| Write {
                account: account.to_string(),
                token: tokens[account],
                balance,
            })
            .collect();
        Ok((writes, operations))
    }

    /// After the commit: reply to every operation (the ledger publishes the events, from its
    /// log).
    async fn finish(&self, batch: Vec<Pending>, outcomes: Vec<Outcome>) {
        for (pending, outcome) in batch.iter().zip(&outcomes) {
            let result = resolve(outcome, &outcomes);
            pending.replier.reply(&pending.request, result).await;
        }
        let applied = outcomes.iter().filter(|o| matches!(o, Outcome::Applied { .. })).count();
        self.stats.operations_committed.fetch_add(applied as u64, Ordering::Relaxed);
    }
}

/// The events of a batch's applied operations, one per posting: committed with the batch, so
/// they exist exactly when the change does.
fn events(batch: &[Pending], outcomes: &[Outcome], at: u64) -> Vec<CommitEvent> {
    let mut events = Vec::new();
    for (pending, outcome) in batch.iter().zip(outcomes) {
        let Outcome::Applied { postings, .. } = outcome else { continue };
        for posting in postings {
            let event = BankEvent {
                op: posting.kind.as_str().to_owned(),
                account: posting.account.to_string(),
                amount: posting.amount.get(),
                balance: posting.balance,
                id: pending.parsed.client_id.as_ref().map(|id| id.to_string()),
                at,
            };
            if let Ok(event) = serde_json::value::to_raw_value(&event) {
                events.push(CommitEvent { account: posting.account.to_string(), event });
            }
        }
    }
    events
}

/// The reply of an outcome, following `SameAs` to the first operation with that id.
fn resolve(outcome: &Outcome, outcomes: &[Outcome]) -> Result<Box<RawValue>, ServiceError> {
    match outcome {
        Outcome::Done(result) => result.clone(),
        Outcome::Applied { reply, .. } => Ok(reply.clone()),
        Outcome::SameAs(first) => resolve(&outcomes[*first], outcomes),
    }
}

/// The reply of a successful operation, from its postings.
fn reply_for(postings: &[Posting]) -> Result<Box<RawValue>, ServiceError> {
    let balance_of = |posting: &Posting| AccountBalance {
        account: posting.account.to_string(),
        balance: posting.balance,
    };
    let raw = match postings {
        [from, to] if from.kind == EventKind::TransferOut => {
            serde_json::value::to_raw_value(&TransferReply {
                from: balance_of(from),
                to: balance_of(to),
            })
        }
        [single] => serde_json::value::to_raw_value(&balance_of(single)),
        _ => return Err(ServiceError::new(ErrorCode::Internal, "unexpected postings")),
    };
    raw.map_err(|e| ServiceError::new(ErrorCode::Internal, format!("cannot encode reply: {e}")))
}

/// The ledger's records of a batch's ids, as operations and replies.
fn recorded_operations(
    entries: &[OperationEntry],
) -> Result<HashMap<OperationId, (Operation, Box<RawValue>)>, ServiceError> {
    entries
        .iter()
        .map(|entry| {
            let unreadable = |error: &dyn std::fmt::Display| {
                ServiceError::new(
                    ErrorCode::Internal,
                    format!("unreadable record for id {}: {error}", entry.id),
                )
            };
            let record: BankRecord =
                serde_json::from_str(entry.record.get()).map_err(|e| unreadable(&e))?;
            let operation = Operation::try_from(&record.op).map_err(|e| unreadable(&e))?;
            let id = OperationId::parse_recorded(&entry.id).map_err(|e| unreadable(&e))?;
            Ok((id, (operation, record.reply)))
        })
        .collect()
}

fn id_reused(id: &str) -> ServiceError {
    ServiceError::invalid(format!("id {id} was already used for a different operation"))
}

pub(super) fn unavailable(what: &str, error: &ClientError) -> ServiceError {
    ServiceError::new(ErrorCode::Unavailable, format!("{what} ({error}); retry with the same id"))
}

async fn reply_all(batch: &[Pending], error: &ServiceError) {
    for pending in batch {
        pending.replier.reply_bytes(&pending.request, Err(error.clone())).await;
    }
}
