//! The coin exchange's calls on [`AgoraClient`], for the CLI, tests and the gateway.

use super::wire::{
    AddAssetRequest, AssetView, AssetsReply, AssetsRequest, CoinsHistoryReply, CoinsHistoryRequest,
    OrderLookup, OrderRequest, OrderView, PortfolioReply, PortfolioRequest, RemoveAssetRequest,
    UpdateAssetRequest,
};
use crate::client::{AgoraClient, ClientError};
use crate::subjects::coins as subject;

/// Manager and user calls for the CLI, tests and the gateway.
impl AgoraClient {
    pub async fn coin_assets(
        &self,
        symbols: Option<Vec<String>>,
    ) -> Result<AssetsReply, ClientError> {
        let request = AssetsRequest { symbol: None, symbols };
        self.request(subject::ASSETS_SUBJECT, &request).await
    }

    pub async fn buy_coins(
        &self,
        user: &str,
        symbol: &str,
        quantity: i64,
        id: Option<&str>,
    ) -> Result<OrderView, ClientError> {
        self.coin_order_request(subject::BUY_SUBJECT, user, symbol, quantity, id).await
    }

    pub async fn sell_coins(
        &self,
        user: &str,
        symbol: &str,
        quantity: i64,
        id: Option<&str>,
    ) -> Result<OrderView, ClientError> {
        self.coin_order_request(subject::SELL_SUBJECT, user, symbol, quantity, id).await
    }

    async fn coin_order_request(
        &self,
        subject: &str,
        user: &str,
        symbol: &str,
        quantity: i64,
        id: Option<&str>,
    ) -> Result<OrderView, ClientError> {
        let request = OrderRequest {
            user: user.to_owned(),
            symbol: symbol.to_owned(),
            quantity,
            id: id.map(str::to_owned),
        };
        self.request(subject, &request).await
    }

    pub async fn coin_order(&self, user: &str, id: &str) -> Result<OrderView, ClientError> {
        let request = OrderLookup { user: user.to_owned(), id: id.to_owned() };
        self.request(subject::ORDER_SUBJECT, &request).await
    }

    pub async fn portfolio(&self, user: &str) -> Result<PortfolioReply, ClientError> {
        self.request(subject::PORTFOLIO_SUBJECT, &PortfolioRequest { user: user.to_owned() }).await
    }

    pub async fn coin_history(
        &self,
        request: &CoinsHistoryRequest,
    ) -> Result<CoinsHistoryReply, ClientError> {
        self.request(subject::HISTORY_SUBJECT, request).await
    }

    pub async fn add_asset(&self, request: &AddAssetRequest) -> Result<AssetView, ClientError> {
        self.request(subject::ADD_SUBJECT, request).await
    }

    pub async fn remove_asset(&self, symbol: &str) -> Result<AssetView, ClientError> {
        let request = RemoveAssetRequest { symbol: symbol.to_owned() };
        self.request(subject::REMOVE_SUBJECT, &request).await
    }

    pub async fn update_asset(
        &self,
        request: &UpdateAssetRequest,
    ) -> Result<AssetView, ClientError> {
        self.request(subject::UPDATE_SUBJECT, request).await
    }
}
