//! The ledger's calls on [`AgoraClient`], made by the bank and the coin exchange: apply
//! operations, read balances, supplies and records; lease many accounts, commit a batch.

use super::wire::{
    ApplyReply, ApplyRequest, BalancesReply, BalancesRequest, BatchCommitReply, BatchCommitRequest,
    BatchGetReply, BatchGetRequest, BatchLockReply, BatchLockRequest, OperationsReply,
    OperationsRequest, SupplyReply, SupplyRequest,
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

    /// Applies operations in order, in one commit (chains all or nothing).
    pub async fn ledger_apply(&self, request: &ApplyRequest) -> Result<ApplyReply, ClientError> {
        self.request(subject::APPLY_SUBJECT, request).await
    }

    /// Every asset an account has a balance in.
    pub async fn ledger_balances(&self, account: &str) -> Result<BalancesReply, ClientError> {
        let request = BalancesRequest { account: account.to_owned() };
        self.request(subject::BALANCES_SUBJECT, &request).await
    }

    /// How much of an asset the accounts but `except` hold.
    pub async fn ledger_supply(&self, request: &SupplyRequest) -> Result<SupplyReply, ClientError> {
        self.request(subject::SUPPLY_SUBJECT, request).await
    }

    /// The records of operation ids (as recorded).
    pub async fn ledger_operations(
        &self,
        ids: Vec<String>,
    ) -> Result<OperationsReply, ClientError> {
        self.request(subject::OPERATIONS_SUBJECT, &OperationsRequest { ids }).await
    }
}
