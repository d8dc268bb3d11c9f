//! The bank's calls on [`AgoraClient`]: deposit, withdraw, balance, transfer.

use super::wire::{
    AccountBalance, AmountRequest, BalanceRequest, HistoryRequest, TransferReply, TransferRequest,
    TransfersRequest,
};
use crate::client::{AgoraClient, ClientError};
use crate::ledger::wire::{ApplyReply, BalanceReply, HistoryReply};
use crate::subjects::bank as subject;

impl AgoraClient {
    pub async fn deposit(
        &self,
        account: &str,
        amount: i64,
        id: Option<&str>,
    ) -> Result<AccountBalance, ClientError> {
        self.amount_request(subject::DEPOSIT_SUBJECT, account, amount, id).await
    }

    pub async fn withdraw(
        &self,
        account: &str,
        amount: i64,
        id: Option<&str>,
    ) -> Result<AccountBalance, ClientError> {
        self.amount_request(subject::WITHDRAW_SUBJECT, account, amount, id).await
    }

    async fn amount_request(
        &self,
        subject: &str,
        account: &str,
        amount: i64,
        id: Option<&str>,
    ) -> Result<AccountBalance, ClientError> {
        let request =
            AmountRequest { account: account.to_owned(), amount, id: id.map(str::to_owned) };
        self.request(subject, &request).await
    }

    /// An account's money balances now.
    pub async fn balance(&self, account: &str) -> Result<BalanceReply, ClientError> {
        let request = BalanceRequest { account: account.to_owned(), ..BalanceRequest::default() };
        self.balance_of(&request).await
    }

    /// An account's balances in an asset, now or at a past time.
    pub async fn balance_of(&self, request: &BalanceRequest) -> Result<BalanceReply, ClientError> {
        self.request(subject::BALANCE_SUBJECT, request).await
    }

    /// Up to 8,190 operations in one request, one result each.
    pub async fn transfers(&self, request: &TransfersRequest) -> Result<ApplyReply, ClientError> {
        self.request(subject::TRANSFERS_SUBJECT, request).await
    }

    /// A page of an account's history, newest first.
    pub async fn history(&self, request: &HistoryRequest) -> Result<HistoryReply, ClientError> {
        self.request(subject::HISTORY_SUBJECT, request).await
    }

    pub async fn transfer(
        &self,
        from: &str,
        to: &str,
        amount: i64,
        id: Option<&str>,
    ) -> Result<TransferReply, ClientError> {
        let request = TransferRequest {
            from: from.to_owned(),
            to: to.to_owned(),
            amount,
            id: id.map(str::to_owned),
        };
        self.request(subject::TRANSFER_SUBJECT, &request).await
    }
}
