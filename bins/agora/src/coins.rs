//! `agora coins ...`: the coin exchange: assets, buy, sell, portfolio, history, orders, and the
//! manager's add / remove / update.

use agora_nats::AgoraClient;
use agora_nats::coins::wire::{
    AddAssetRequest, AssetView, CoinsHistoryRequest, OrderView, UpdateAssetRequest,
};
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum CoinsCommand {
    /// List assets: all, or the given symbols.
    Assets { symbols: Vec<String> },
    /// Buy units with the user's bank money.
    Buy {
        symbol: String,
        quantity: i64,
        #[arg(long)]
        user: String,
        /// Order id: a retry with the same id is applied once.
        #[arg(long)]
        id: Option<String>,
    },
    /// Sell units held; the bank account is credited.
    Sell {
        symbol: String,
        quantity: i64,
        #[arg(long)]
        user: String,
        #[arg(long)]
        id: Option<String>,
    },
    /// A user's holdings with their value, and bank balance.
    Portfolio { user: String },
    /// Done orders, newest first.
    History {
        #[arg(long)]
        user: Option<String>,
        /// Settled at or after / before (ms since the epoch).
        #[arg(long)]
        from: Option<u64>,
        #[arg(long)]
        to: Option<u64>,
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// One order, as the ledger recorded it (an order either happened or was refused).
    Order { user: String, id: String },
    /// Manager operations (on agora.coins.admin.*).
    #[command(subcommand)]
    Admin(AdminCommand),
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// List a new asset: `agora coins admin add DOGE Dogecoin 15 100000`.
    Add { symbol: String, name: String, price: i64, quantity: i64 },
    /// Delist an asset nobody holds.
    Remove { symbol: String },
    /// Set an asset's price and/or available quantity.
    Update {
        symbol: String,
        #[arg(long)]
        price: Option<i64>,
        #[arg(long)]
        quantity: Option<i64>,
    },
}

fn asset_line(asset: &AssetView) -> String {
    format!(
        "{:<6} {:<24} price {:>12}  available {}",
        asset.symbol, asset.name, asset.price, asset.available
    )
}

fn order_line(order: &OrderView) -> String {
    let mut line = format!(
        "order {} {}: {} {} {} x {} = {} [{}]",
        order.id,
        order.user,
        order.side,
        order.symbol,
        order.quantity,
        order.unit_price,
        order.total,
        order.state
    );
    if let Some(holding) = order.holding {
        line += &format!(", now holds {holding}");
    }
    line += &format!(" at {}", crate::utc(order.settled_ms));
    line
}

pub async fn run(client: &AgoraClient, command: CoinsCommand, json: bool) -> anyhow::Result<()> {
    let print = |value: serde_json::Value, text: String| crate::print(json, value, text);
    let upper = |s: &str| s.to_ascii_uppercase();
    match command {
        CoinsCommand::Assets { symbols } => {
            let symbols = (!symbols.is_empty()).then(|| symbols.iter().map(|s| upper(s)).collect());
            let reply = client.coin_assets(symbols).await?;
            let mut lines: Vec<String> = reply.assets.iter().map(asset_line).collect();
            if !reply.not_found.is_empty() {
                lines.push(format!("not found: {}", reply.not_found.join(", ")));
            }
            print(serde_json::to_value(&reply)?, lines.join("\n"));
        }
        CoinsCommand::Buy { symbol, quantity, user, id } => {
            let order = client.buy_coins(&user, &upper(&symbol), quantity, id.as_deref()).await?;
            print(serde_json::to_value(&order)?, order_line(&order));
        }
        CoinsCommand::Sell { symbol, quantity, user, id } => {
            let order = client.sell_coins(&user, &upper(&symbol), quantity, id.as_deref()).await?;
            print(serde_json::to_value(&order)?, order_line(&order));
        }
        CoinsCommand::Portfolio { user } => {
            let reply = client.portfolio(&user).await?;
            let mut text = format!(
                "{}: holdings worth {}, bank balance {}",
                reply.user, reply.value, reply.balance
            );
            for holding in &reply.holdings {
                text += &format!(
                    "\n  {:<6} {:>10} x {:>12} = {}",
                    holding.symbol, holding.quantity, holding.price, holding.value
                );
            }
            print(serde_json::to_value(&reply)?, text);
        }
        CoinsCommand::History { user, from, to, limit } => {
            let request = CoinsHistoryRequest { user, from, to, limit: Some(limit) };
            let reply = client.coin_history(&request).await?;
            let mut lines: Vec<String> = reply.orders.iter().map(order_line).collect();
            if lines.is_empty() {
                lines.push("no orders".into());
            }
            if reply.more {
                lines.push("(more: use --to with the oldest time shown)".into());
            }
            print(serde_json::to_value(&reply)?, lines.join("\n"));
        }
        CoinsCommand::Order { user, id } => {
            let order = client.coin_order(&user, &id).await?;
            print(serde_json::to_value(&order)?, order_line(&order));
        }
        CoinsCommand::Admin(AdminCommand::Add { symbol, name, price, quantity }) => {
            let request = AddAssetRequest { symbol: upper(&symbol), name, price, quantity };
            let asset = client.add_asset(&request).await?;
            print(serde_json::to_value(&asset)?, format!("listed {}", asset_line(&asset)));
        }
        CoinsCommand::Admin(AdminCommand::Remove { symbol }) => {
            let asset = client.remove_asset(&upper(&symbol)).await?;
            print(serde_json::to_value(&asset)?, format!("delisted {}", asset.symbol));
        }
        CoinsCommand::Admin(AdminCommand::Update { symbol, price, quantity }) => {
            let request = UpdateAssetRequest { symbol: upper(&symbol), price, quantity };
            let asset = client.update_asset(&request).await?;
            print(serde_json::to_value(&asset)?, format!("updated {}", asset_line(&asset)));
        }
    }
    Ok(())
}
