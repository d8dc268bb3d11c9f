//! The bank's group commit: single operations queued by the endpoint tasks, sent to the ledger
//! in batches (`agora.ledger.apply`, each operation on its own), up to `pipeline_depth` at
//! once; each caller gets its operation's result in the shape of its endpoint.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::value::RawValue;
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;

use super::wire::{AccountBalance, TransferReply};
use super::{Bank, Single};
use crate::client::ClientError;
use crate::error::{ErrorCode, ServiceError};
use crate::ledger::wire::{
    ApplyReply, ApplyRequest, OperationKind, OperationRequest, OperationResult, PostingWire,
};

/// Takes queued single operations in batches; up to `pipeline_depth` batches in flight.
pub(super) async fn batcher(bank: Arc<Bank>, mut queue: mpsc::Receiver<Single>) {
    let permits = Arc::new(Semaphore::new(bank.config.pipeline_depth));
    while let Some(first) = queue.recv().await {
        if bank.config.batch_window_ms > 0 {
            tokio::time::sleep(Duration::from_millis(bank.config.batch_window_ms)).await;
        }
        let Ok(permit) = permits.clone().acquire_owned().await else { return };
        let mut batch = vec![first];
        while batch.len() < bank.config.batch_max {
            match queue.try_recv() {
                Ok(single) => batch.push(single),
                Err(_) => break,
            }
        }
        let bank = bank.clone();
        tokio::spawn(async move {
            bank.run_batch(batch).await;
            drop(permit);
        });
    }
}

/// How many single operations the bank sends to the ledger in one request.
fn batch_sizes() -> &'static prometheus_client::metrics::histogram::Histogram {
    static SIZES: std::sync::LazyLock<prometheus_client::metrics::histogram::Histogram> =
        std::sync::LazyLock::new(|| {
            crate::metrics::register(
                "bank_batch_operations",
                "Single deposits, withdrawals and transfers sent to the ledger in one request",
                prometheus_client::metrics::histogram::Histogram::new(
                    crate::metrics::size_buckets(),
                ),
            )
        });
    &SIZES
}

impl Bank {
    /// Sends one batch to the ledger and answers each of its operations. Operations on an
    /// account someone holds leased at the ledger (`agora.ledger.lock`) wait for the lease, up
    /// to `--lock-wait-ms`, then get `busy`; the others of the batch go ahead at once.
    async fn run_batch(&self, mut batch: Vec<Single>) {
        self.stats.batches.fetch_add(1, Ordering::Relaxed);
        self.stats.largest_batch.fetch_max(batch.len() as u64, Ordering::Relaxed);
        batch_sizes().observe(batch.len() as f64);
        let deadline = Instant::now() + Duration::from_millis(self.config.lock_wait_ms);
        let mut waiting: Vec<Single> = Vec::new();
        loop {
            if batch.is_empty() {
                if waiting.is_empty() {
                    return;
                }
                if Instant::now() >= deadline {
                    let busy = ServiceError::new(
                        ErrorCode::Busy,
                        format!(
                            "accounts stayed leased for {} ms; retry",
                            self.config.lock_wait_ms
                        ),
                    );
                    return reply_all(&waiting, &busy).await;
                }
                tokio::time::sleep(LEASE_RETRY).await;
                batch = std::mem::take(&mut waiting);
            }
            let request = ApplyRequest {
                operations: batch.iter().map(|single| single.operation.clone()).collect(),
                detail: true,
            };
            // The ledger's span is a child of one traced operation's (the first sampled one):
            // a batch serves many traces, and a span has one parent.
            let span = crate::service::batch_span(batch.iter().map(|single| &single.request));
            let reply: Result<ApplyReply, ClientError> = crate::trace::scope(
                span,
                self.ledger.request(crate::subjects::ledger::APPLY_SUBJECT, &request),
            )
            .await;
            match reply {
                Err(ClientError::Service(error)) if error.code == ErrorCode::Locked => {
                    let held: HashSet<String> = error.accounts.into_iter().collect();
                    let (blocked, free): (Vec<_>, Vec<_>) = batch
                        .into_iter()
                        .partition(|single| held.is_empty() || touches(&single.operation, &held));
                    waiting.extend(blocked);
                    batch = free;
                }
                reply => {
                    self.answer(std::mem::take(&mut batch), reply).await;
                }
            }
        }
    }

    async fn answer(&self, batch: Vec<Single>, reply: Result<ApplyReply, ClientError>) {
        let reply = match reply {
            Ok(reply) if reply.results.len() == batch.len() => reply,
            Ok(_) => {
                let error = ServiceError::new(ErrorCode::Internal, "the ledger's reply is short");
                return reply_all(&batch, &error).await;
            }
            Err(ClientError::Service(error)) => return reply_all(&batch, &error).await,
            Err(error) => {
                return reply_all(&batch, &error.unanswered("the ledger")).await;
            }
        };
        self.stats.operations_committed.fetch_add(reply.applied as u64, Ordering::Relaxed);
        for (single, result) in batch.iter().zip(reply.results) {
            let result = match result {
                OperationResult::Applied { postings } => {
                    reply_for(single.operation.op, postings.as_deref().unwrap_or_default())
                }
                OperationResult::Failed { error } => Err(error),
            };
            let bytes = result.map(|raw| raw.get().to_owned().into());
            single.replier.reply_bytes(&single.request, bytes).await;
        }
    }
}

/// How long operations on a leased account wait before they are tried again.
const LEASE_RETRY: Duration = Duration::from_millis(20);

/// Whether an operation names one of `accounts`.
fn touches(operation: &OperationRequest, accounts: &HashSet<String>) -> bool {
    [&operation.account, &operation.from, &operation.to]
        .into_iter()
        .flatten()
        .any(|account| accounts.contains(account))
}

/// The reply of an applied single operation, from its postings: `{"account","balance"}` for a
/// deposit or withdrawal, `{"from":{..},"to":{..}}` for a transfer. Built the same way from the
/// recorded postings when an id is retried, so the retry gets the same bytes.
fn reply_for(op: OperationKind, postings: &[PostingWire]) -> Result<Box<RawValue>, ServiceError> {
    let balance_of = |posting: &PostingWire| AccountBalance {
        account: posting.account.clone(),
        balance: posting.balance,
    };
    let raw = match (op, postings) {
        (OperationKind::Transfer, [from, to]) => serde_json::value::to_raw_value(&TransferReply {
            from: balance_of(from),
            to: balance_of(to),
        }),
        (OperationKind::Deposit | OperationKind::Withdraw, [single]) => {
            serde_json::value::to_raw_value(&balance_of(single))
        }
        _ => return Err(ServiceError::new(ErrorCode::Internal, "unexpected postings")),
    };
    raw.map_err(|e| ServiceError::new(ErrorCode::Internal, format!("cannot encode reply: {e}")))
}

async fn reply_all(batch: &[Single], error: &ServiceError) {
    for single in batch {
        single.replier.reply_bytes(&single.request, Err(error.clone())).await;
    }
}
