//! The ledger's calls on [`AgoraClient`], made by the bank: lease many accounts, read many
//! balances, commit a batch.

use super::wire::{
    BatchCommitReply, BatchCommitRequest, BatchGetReply, BatchGetRequest, BatchLockReply,
    BatchLockRequest,
};
use crate::client::{AgoraClient, ClientError};
use crate::subjects::ledger as subject;

impl AgoraClient {
    /// Leases every account of `request` at once (all or nothing) and reads the records of
    /// its ids.
    pub async fn ledger_lock(
        &self,
        request: &BatchLockRequest,
    ) -> Result<BatchLockReply, ClientError> {
        self.request(subject::BATCH_LOCK_SUBJECT, request).await
    }

    /// Reads balances (accounts another owner holds come back as `locked`).
    pub async fn ledger_get(
        &self,
        request: &BatchGetRequest,
    ) -> Result<BatchGetReply, ClientError> {
        self.request(subject::BATCH_GET_SUBJECT, request).await
    }

    /// Writes balances, records ids and releases leases in one durable transaction.
    pub async fn ledger_commit(
        &self,
        request: &BatchCommitRequest,
    ) -> Result<BatchCommitReply, ClientError> {
        self.request(subject::BATCH_COMMIT_SUBJECT, request).await
    }
}
