//! The bank's calls on [`AgoraClient`]: deposit, withdraw, balance, transfer.

use super::wire::{AccountBalance, AmountRequest, BalanceRequest, TransferReply, TransferRequest};
use crate::client::{AgoraClient, ClientError};
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

    pub async fn balance(&self, account: &str) -> Result<AccountBalance, ClientError> {
        let request = BalanceRequest { account: account.to_owned(), ..BalanceRequest::default() };
        self.request(subject::BALANCE_SUBJECT, &request).await
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
