//! Group commit for a client of the ledger: chains of operations queued by many request tasks
//! go to the ledger together, one `agora.ledger.apply` per group (chains stay chains: each is
//! applied all or nothing, on its own), up to `depth` groups in flight. Each caller gets its
//! chain's results. The ledger does the same work per operation either way; what a group saves
//! is a request, a reply and a place in the ledger's queue per chain.

use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc, oneshot};

use super::wire::{
    ApplyReply, ApplyRequest, DETAIL_OPERATIONS_MAX, OperationRequest, OperationResult,
};
use crate::client::{AgoraClient, ClientError};
use crate::error::{ErrorCode, ServiceError};

/// A chain's results, or why the whole request failed (`unavailable`: the outcome is unknown).
pub type ChainResult = Result<Vec<OperationResult>, ServiceError>;

struct Queued {
    chain: Vec<OperationRequest>,
    answer: oneshot::Sender<ChainResult>,
    /// The span of the request the chain is for.
    span: Option<crate::trace::Trace>,
}

/// Where request tasks queue their chains.
#[derive(Clone, Debug)]
pub struct Group {
    queue: mpsc::Sender<Queued>,
}

impl std::fmt::Debug for Queued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queued").field("operations", &self.chain.len()).finish()
    }
}

impl Group {
    /// Starts the group commit over `ledger`: at most `queue_max` chains waiting, groups of at
    /// most [`DETAIL_OPERATIONS_MAX`] operations (each reply carries postings), `depth` groups
    /// in flight.
    pub fn start(ledger: AgoraClient, queue_max: usize, depth: usize) -> Self {
        let (queue, waiting) = mpsc::channel(queue_max.max(1));
        tokio::spawn(run(ledger, waiting, depth.max(1)));
        Self { queue }
    }

    /// Applies one chain (its last operation unlinked, the others linked) with its postings:
    /// `busy` when the queue is full.
    pub async fn apply(&self, chain: Vec<OperationRequest>) -> ChainResult {
        if chain.is_empty() || chain.len() > DETAIL_OPERATIONS_MAX {
            return Err(ServiceError::invalid("a chain is 1 to 1000 operations"));
        }
        let (answer, result) = oneshot::channel();
        let span = crate::trace::current();
        self.queue.try_send(Queued { chain, answer, span }).map_err(|_| {
            ServiceError::new(ErrorCode::Busy, "too many ledger operations waiting; retry")
        })?;
        result.await.map_err(|_| ServiceError::new(ErrorCode::Unavailable, "stopping"))?
    }
}

async fn run(ledger: AgoraClient, mut waiting: mpsc::Receiver<Queued>, depth: usize) {
    let permits = Arc::new(Semaphore::new(depth));
    let mut carried: Option<Queued> = None;
    loop {
        let first = match carried.take() {
            Some(queued) => queued,
            None => match waiting.recv().await {
                Some(queued) => queued,
                None => return,
            },
        };
        let Ok(permit) = permits.clone().acquire_owned().await else { return };
        let mut operations = first.chain.len();
        let mut group = vec![first];
        // What queued meanwhile joins, as long as the group's postings fit one reply.
        while let Ok(next) = waiting.try_recv() {
            if operations + next.chain.len() > DETAIL_OPERATIONS_MAX {
                carried = Some(next);
                break;
            }
            operations += next.chain.len();
            group.push(next);
        }
        let ledger = ledger.clone();
        tokio::spawn(async move {
            commit(&ledger, group).await;
            drop(permit);
        });
    }
}

async fn commit(ledger: &AgoraClient, group: Vec<Queued>) {
    let lengths: Vec<usize> = group.iter().map(|q| q.chain.len()).collect();
    // The ledger's span is a child of one traced chain's (the first sampled one).
    let spans = group.iter().filter_map(|queued| queued.span);
    let span = spans.clone().find(|span| span.sampled).or_else(|| spans.clone().next());
    let mut answers = Vec::with_capacity(group.len());
    let mut operations = Vec::with_capacity(lengths.iter().sum());
    for queued in group {
        operations.extend(queued.chain);
        answers.push(queued.answer);
    }
    let request = ApplyRequest { operations, detail: true };
    let reply: Result<ApplyReply, ClientError> =
        crate::trace::scope(span, ledger.ledger_apply(&request)).await;
    let failure = match reply {
        Ok(reply) if reply.results.len() == lengths.iter().sum::<usize>() => {
            let mut results = reply.results.into_iter();
            for (answer, length) in answers.into_iter().zip(lengths) {
                answer.send(Ok(results.by_ref().take(length).collect())).ok();
            }
            return;
        }
        Ok(_) => ServiceError::new(ErrorCode::Internal, "the ledger's reply is short"),
        Err(ClientError::Service(error)) if error.code != ErrorCode::Unavailable => error,
        Err(error) => error.unanswered("the ledger"),
    };
    for answer in answers {
        answer.send(Err(failure.clone())).ok();
    }
}
