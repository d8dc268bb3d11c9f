//! The bank's balance reads: batched (`agora.ledger.batch.get`), several batches in flight; a
//! read of an account another instance holds locked waits and retries until its deadline.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use agora_core::{AccountId, Asset};
use rand::Rng;
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;

use super::{Bank, READ_BATCH_MAX, READS_IN_FLIGHT_MAX, Read};
use crate::client::ClientError;
use crate::error::{ErrorCode, ServiceError};
use crate::ledger::wire::{BalanceReply, BatchGetRequest};

/// Takes queued balance reads in batches; several batches may be in flight.
pub(super) async fn reader(
    bank: Arc<Bank>,
    mut queue: mpsc::Receiver<Read>,
    requeue: mpsc::Sender<Read>,
) {
    let permits = Arc::new(Semaphore::new(READS_IN_FLIGHT_MAX));
    while let Some(first) = queue.recv().await {
        let mut batch = vec![first];
        while batch.len() < READ_BATCH_MAX {
            match queue.try_recv() {
                Ok(read) => batch.push(read),
                Err(_) => break,
            }
        }
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let bank = bank.clone();
        let requeue = requeue.clone();
        tokio::spawn(async move {
            bank.read_batch(batch, requeue).await;
            drop(permit);
        });
    }
}

impl Bank {
    /// Reads a batch's balances, one ledger round trip per asset among them.
    async fn read_batch(&self, batch: Vec<Read>, requeue: mpsc::Sender<Read>) {
        let mut by_asset: BTreeMap<Asset, Vec<Read>> = BTreeMap::new();
        for read in batch {
            by_asset.entry(read.asset.clone()).or_default().push(read);
        }
        for (asset, reads) in by_asset {
            self.read_asset(&asset, reads, requeue.clone()).await;
        }
    }

    async fn read_asset(&self, asset: &Asset, batch: Vec<Read>, requeue: mpsc::Sender<Read>) {
        let accounts: BTreeSet<&AccountId> = batch.iter().map(|r| &r.account).collect();
        let request = BatchGetRequest {
            owner: Some(self.owner.clone()),
            accounts: accounts.iter().map(|a| a.to_string()).collect(),
            asset: (!asset.is_money()).then(|| asset.to_string()),
        };
        let reply = self.ledger.ledger_get(&request).await;
        let reply = match reply {
            Ok(reply) => reply,
            Err(error) => {
                let error = unread(&error);
                for read in batch {
                    read.replier.reply_bytes(&read.request, Err(error.clone())).await;
                }
                return;
            }
        };
        self.stats.reads.fetch_add(batch.len() as u64, Ordering::Relaxed);
        let balances: HashMap<&str, &BalanceReply> =
            reply.balances.iter().map(|b| (b.account.as_str(), b)).collect();
        let mut retry = Vec::new();
        for read in batch {
            match balances.get(read.account.as_str()) {
                Some(balance) => read.replier.reply(&read.request, Ok(balance)).await,
                None if Instant::now() >= read.deadline => {
                    let busy = ServiceError::new(
                        ErrorCode::Busy,
                        format!("account {} stayed locked; retry", read.account),
                    );
                    read.replier.reply_bytes(&read.request, Err(busy)).await;
                }
                None => retry.push(read),
            }
        }
        if retry.is_empty() {
            return;
        }
        let pause = Duration::from_millis(rand::rng().random_range(1..=3));
        tokio::time::sleep(pause).await;
        for read in retry {
            if let Err(refused) = requeue.try_send(read) {
                let read = refused.into_inner();
                let busy = ServiceError::new(ErrorCode::Busy, "bank queue is full; retry");
                read.replier.reply_bytes(&read.request, Err(busy)).await;
            }
        }
    }
}

/// A read the ledger did not answer: `unavailable`, to be asked again (it changed nothing).
pub(super) fn unread(error: &ClientError) -> ServiceError {
    ServiceError::new(
        ErrorCode::Unavailable,
        format!("the ledger did not answer a read ({error}); retry"),
    )
}
