//! The coin exchange (`agora-coins`, one active instance): a catalogue of assets with prices;
//! users' holdings and the exchange's inventory are balances in the ledger.
//!
//! ## An order is one ledger commit
//! The request task prices the order from the committed catalogue and sends the ledger one
//! chain of two transfers (`agora.ledger.apply`, see `agora_core::coins::Order::legs`): a buy
//! moves the units (the symbol's asset) from the exchange's account to the user and the total
//! from the user to the exchange; a sell the other way round. The ledger applies both or
//! neither, in one commit, and only then does the client get its reply. Each leg's operation
//! id is derived from the user and the order id, so the same order again is answered from the
//! ledger's record, applied once. There is nothing to reserve, settle or recover: no window
//! where money moved and units did not.
//!
//! The exchange's own store keeps the catalogue and a trade log for `agora.coins.history`,
//! filled from the ledger's events of the exchange's account (`trades`).

pub mod client;
pub mod state;
pub mod store;
pub mod trades;
pub mod wire;

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agora_core::coins::{self, Asset, LegKind, Order, Side, Symbol};
use agora_core::{AccountId, Caller, Role};
use async_nats::Client;
use futures::StreamExt;
use tokio::sync::{Semaphore, oneshot};

use crate::client::{AgoraClient, ClientError};
use crate::error::{ErrorCode, ServiceError};
use crate::ledger::group::Group;
use crate::ledger::wire::{
    ApplyRequest, OperationKind, OperationRecord, OperationRequest, OperationResult, PostingWire,
    SupplyRequest,
};
use crate::owner::{self, Limits, Mode};
use crate::service::{ErrorCounts, Replier, add_endpoint, decode, decode_or_default, encode};
use crate::subjects::coins as subject;
use state::{Answer, Call, Command, STOCKED, Shared};
use wire::{
    AddAssetRequest, AssetView, AssetsReply, AssetsRequest, CoinsHistoryRequest, HoldingView,
    OrderLookup, OrderRequest, OrderView, PortfolioReply, PortfolioRequest, RemoveAssetRequest,
    UpdateAssetRequest,
};
mod inventory;
mod orders;

/// User endpoints (below [`subject::GROUP`]) and manager endpoints (below
/// [`subject::ADMIN_GROUP`]).
const USER_ENDPOINTS: [&str; 6] = [
    subject::ASSETS,
    subject::BUY,
    subject::SELL,
    subject::ORDER,
    subject::PORTFOLIO,
    subject::HISTORY,
];
const ADMIN_ENDPOINTS: [&str; 3] = [subject::ADD, subject::REMOVE, subject::UPDATE];

/// Requests being handled at once at most (beyond: `busy`).
pub const REQUESTS_IN_FLIGHT_MAX: usize = 4_096;
/// Calls queued for the owner thread at most.
pub const QUEUE_MAX: usize = 16_384;
/// Most calls in one SQLite transaction.
pub const GROUP_CALLS_MAX: usize = 1_024;
/// Symbols one assets request may name.
pub const ASSETS_SYMBOLS_MAX: usize = 100;
/// History page sizes.
pub const HISTORY_LIMIT_DEFAULT: usize = 50;
pub const HISTORY_LIMIT_MAX: usize = 1_000;
/// Largest `agora.coins.assets` request, in bytes (100 symbols).
const ASSETS_BYTES_MAX: usize = 16 * 1024;
/// Largest `agora.coins.history` request, in bytes.
const HISTORY_BYTES_MAX: usize = 4 * 1024;
/// How long a removal waits for the orders of its symbol that are under way.
const DELIST_WAIT: Duration = Duration::from_secs(10);
/// Orders waiting for the ledger at most (beyond: `busy`), and groups of them in flight.
const ORDERS_QUEUED_MAX: usize = 8_192;
const LEDGER_PIPELINE_DEPTH: usize = 4;
/// Tries of setting the exchange's units when trades race the update.
const STOCK_TRIES: usize = 5;
const TICK: Duration = Duration::from_millis(200);

/// Coins service configuration: the flags of `agora-coins`.
#[derive(Debug, Clone, clap::Args)]
pub struct CoinsConfig {
    /// Directory of the SQLite database (created if missing; seeded on first start).
    #[arg(long, env = "AGORA_COINS_DATA_DIR", default_value = "data/coins")]
    pub data_dir: PathBuf,
    /// The exchange's own ledger account: it holds the inventory, buyers pay into it, sellers
    /// are paid from it.
    #[arg(long, env = "AGORA_COINS_EXCHANGE_ACCOUNT", default_value = "coins-exchange",
          value_parser = |text: &str| AccountId::parse(text))]
    pub exchange_account: AccountId,
    /// How long a ledger call may take before its outcome counts as unknown, in milliseconds.
    #[arg(long, env = "AGORA_COINS_LEDGER_TIMEOUT_MS", default_value_t = 5_000)]
    pub ledger_timeout_ms: u64,
    #[command(flatten)]
    pub replica: crate::replica::ReplicaArgs,
}

/// Runs the coins service until `shutdown` resolves.
pub async fn run(
    client: Client,
    config: CoinsConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        (100..=600_000).contains(&config.ledger_timeout_ms),
        "ledger-timeout-ms is 100..=600000"
    );
    let replicated = crate::replica::Replicated {
        service: "coins",
        args: &config.replica,
        data_dir: &config.data_dir,
        file: store::DATABASE_FILE,
        open: store::open,
    };
    crate::replica::run(
        client.clone(),
        replicated,
        |conn, journal, stop| serve(client.clone(), config.clone(), conn, journal, stop),
        shutdown,
    )
    .await
}

/// The active coin exchange: its owner over the view, its endpoints, until `shutdown`.
async fn serve(
    client: Client,
    config: CoinsConfig,
    conn: rusqlite::Connection,
    journal: crate::replica::Journal,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let state = state::Coins::load(&conn)?;
    let catalogue = state.shared();
    let limits = Limits {
        group_max: GROUP_CALLS_MAX,
        tick: TICK,
        synchronous: store::SYNCHRONOUS,
        mode: Mode::Thread,
    };
    let (calls, inbox) = owner::queue(QUEUE_MAX);
    let owner_thread = owner::spawn_replicated("coins", conn, state, inbox, limits, journal)?;
    let ledger = AgoraClient::new(client.clone())
        .with_timeout(Duration::from_millis(config.ledger_timeout_ms));
    let orders = Group::start(ledger.clone(), ORDERS_QUEUED_MAX, LEDGER_PIPELINE_DEPTH);
    let ctx = Arc::new(Ctx {
        calls,
        orders,
        ledger,
        catalogue,
        exchange_account: config.exchange_account.clone(),
        in_flight: Arc::new(Semaphore::new(REQUESTS_IN_FLIGHT_MAX)),
        ordering: Mutex::new(HashMap::new()),
    });

    let errors = ErrorCounts::default();
    let stats_errors = errors.clone();
    let service = crate::service::builder(&client, HashMap::new())
        .description("Agora coins: assets, a manager role, buying and selling through the ledger")
        .stats_handler(move |endpoint, _| stats_errors.snapshot(&endpoint))
        .start(subject::SERVICE, env!("CARGO_PKG_VERSION"))
        .await
        .map_err(|e| anyhow::anyhow!("cannot start service: {e}"))?;
    let mut loops = Vec::new();
    let groups = [
        (service.group(subject::GROUP), &USER_ENDPOINTS[..]),
        (service.group(subject::ADMIN_GROUP), &ADMIN_ENDPOINTS[..]),
    ];
    for (group, names) in &groups {
        for &name in names.iter() {
            let mut endpoint = add_endpoint(group, name, name).await?;
            let replier = Replier::new(name, errors.clone());
            let ctx = ctx.clone();
            loops.push(tokio::spawn(async move {
                while let Some(request) = endpoint.next().await {
                    let Ok(permit) = ctx.in_flight.clone().try_acquire_owned() else {
                        replier.reply_bytes(&request, Err(busy())).await;
                        continue;
                    };
                    let (ctx, replier) = (ctx.clone(), replier.clone());
                    tokio::spawn(async move {
                        let reply = match crate::identity::caller(request.message.headers.as_ref())
                        {
                            Ok(caller) => {
                                let handled = ctx.handle(name, &caller, &request.message.payload);
                                crate::trace::scope(crate::service::span_of(&request), handled)
                                    .await
                            }
                            Err(error) => Err(error),
                        };
                        replier.reply_bytes(&request, reply).await;
                        drop(permit);
                    });
                }
            }));
        }
    }
    let stocking = ctx.clone();
    loops.push(tokio::spawn(async move { stocking.stock_seed().await }));
    let js = async_nats::jetstream::new(client.clone());
    loops.push(tokio::spawn(trades::follow(ctx.clone(), js)));
    crate::client::barrier(&client).await?;
    crate::telemetry::announce_ready(subject::SERVICE);
    shutdown.await;
    for task in &loops {
        task.abort();
    }
    drop(loops);
    drop(service);
    drop(ctx);
    owner_thread.join().await;
    client.flush().await.ok();
    Ok(())
}

fn busy() -> ServiceError {
    ServiceError::new(ErrorCode::Busy, "the coins service is overloaded; retry")
}

/// What request tasks share.
pub(crate) struct Ctx {
    calls: owner::Queue<Call>,
    /// Orders' linked pairs, sent to the ledger in groups.
    orders: Group,
    ledger: AgoraClient,
    /// The catalogue as committed (prices).
    catalogue: Shared,
    exchange_account: AccountId,
    in_flight: Arc<Semaphore>,
    /// Orders under way per symbol: a removal waits for them before it checks who holds it.
    ordering: Mutex<HashMap<Symbol, usize>>,
}

/// Counts an order of a symbol as under way until dropped.
struct Ordering<'a> {
    ctx: &'a Ctx,
    symbol: Symbol,
}

impl Drop for Ordering<'_> {
    fn drop(&mut self) {
        let mut ordering = self.ctx.ordering.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = ordering.get_mut(&self.symbol) {
            *count -= 1;
            if *count == 0 {
                ordering.remove(&self.symbol);
            }
        }
    }
}

fn wrong_answer() -> ServiceError {
    ServiceError::new(ErrorCode::Internal, "the owner answered something else")
}

/// A failed ledger call, as the coins service reports it.
fn ledger_error(error: ClientError) -> ServiceError {
    match error {
        ClientError::Service(error) if error.code != ErrorCode::Unavailable => error,
        other => {
            let mut error = other.unanswered("the ledger");
            error.message.push_str(" (agora.coins.order tells whether an order was made)");
            error
        }
    }
}

impl Ctx {
    async fn call(&self, command: Command) -> Result<Answer, ServiceError> {
        let (reply, answer) = oneshot::channel();
        self.calls.try_send((command, reply)).map_err(|_| busy())?;
        answer.await.map_err(|_| ServiceError::new(ErrorCode::Unavailable, "coins stopping"))?
    }

    fn catalogue(&self) -> std::sync::RwLockReadGuard<'_, agora_core::Catalogue> {
        self.catalogue.read().unwrap_or_else(|p| p.into_inner())
    }

    /// One request of `caller`: a person trades, and reads orders and portfolios, as
    /// themselves (a manager reads anyone's); listings are the manager's.
    async fn handle(
        &self,
        endpoint: &str,
        caller: &Caller,
        payload: &[u8],
    ) -> Result<bytes::Bytes, ServiceError> {
        caller.signed_in("the exchange")?;
        match endpoint {
            subject::ASSETS => {
                let request: AssetsRequest = decode_or_default(payload, ASSETS_BYTES_MAX)?;
                // `{"symbol"}` asks for one asset (`not_found` if it is not listed);
                // `{"symbols"}` asks for a list, answered with what was not found, however
                // many that is.
                let single = request.symbol.is_some();
                let symbols = match (request.symbol, request.symbols) {
                    (Some(_), Some(_)) => {
                        return Err(ServiceError::invalid("give `symbol` or `symbols`, not both"));
                    }
                    (Some(symbol), None) => Some(vec![symbol]),
                    (None, Some(symbols)) if symbols.len() > ASSETS_SYMBOLS_MAX => {
                        return Err(ServiceError::invalid(format!(
                            "at most {ASSETS_SYMBOLS_MAX} symbols"
                        )));
                    }
                    (None, symbols) => symbols,
                };
                let reply = self.assets(symbols).await?;
                if single && reply.assets.is_empty() {
                    let missing = reply.not_found.join(", ");
                    return Err(ServiceError::new(
                        ErrorCode::NotFound,
                        format!("no asset {missing}"),
                    ));
                }
                encode(&reply)
            }
            subject::BUY | subject::SELL => {
                let side = if endpoint == subject::BUY { Side::Buy } else { Side::Sell };
                let request: OrderRequest = decode(payload)?;
                AccountId::parse(&request.user)?;
                caller.acting_on("user", Some(&request.user))?;
                encode(&self.order(request, side).await?)
            }
            subject::ORDER => {
                let request: OrderLookup = decode(payload)?;
                let user = AccountId::parse(&request.user)?;
                caller.may_read("order", &request.user)?;
                coins::check_order_id(&request.id)?;
                match self.lookup(&user, &request.id).await? {
                    Some(order) => encode(&order),
                    None => Err(ServiceError::new(
                        ErrorCode::NotFound,
                        format!("{user} has no order {}", request.id),
                    )),
                }
            }
            subject::PORTFOLIO => {
                let request: PortfolioRequest = decode(payload)?;
                let user = AccountId::parse(&request.user)?;
                caller.may_read("portfolio", &request.user)?;
                encode(&self.portfolio(&user).await?)
            }
            subject::HISTORY => {
                let request: CoinsHistoryRequest = decode_or_default(payload, HISTORY_BYTES_MAX)?;
                // A person's history is their own orders; a manager's and a service's anyone's.
                let user = match caller {
                    Caller::User { name, role: Role::User } => {
                        request.user.as_deref().map(AccountId::parse).transpose()?;
                        caller.acting_on("user", request.user.as_deref())?;
                        Some(name.to_string())
                    }
                    _ => request.user,
                };
                let user = user.as_deref().map(AccountId::parse).transpose()?;
                let limit = request.limit.unwrap_or(HISTORY_LIMIT_DEFAULT);
                if !(1..=HISTORY_LIMIT_MAX).contains(&limit) {
                    return Err(ServiceError::invalid(format!("limit is 1..={HISTORY_LIMIT_MAX}")));
                }
                if let (Some(from), Some(to)) = (request.from, request.to)
                    && from >= to
                {
                    return Err(ServiceError::invalid("`from` must be before `to`"));
                }
                let command = Command::History { user, from: request.from, to: request.to, limit };
                let Answer::History(reply) = self.call(command).await? else {
                    return Err(wrong_answer());
                };
                encode(&reply)
            }
            subject::ADD | subject::REMOVE | subject::UPDATE
                if let Err(error) = caller.require_manager("listing coins") =>
            {
                Err(error.into())
            }
            subject::ADD => {
                let request: AddAssetRequest = decode(payload)?;
                coins::check_name(&request.name)?;
                let asset = Asset {
                    symbol: Symbol::parse(&request.symbol)?,
                    name: request.name,
                    price: coins::price(request.price)?,
                };
                let units = coins::stock(request.quantity)?;
                if self.catalogue().asset(&asset.symbol).is_some() {
                    return Err(coins::CoinsError::Exists(asset.symbol.to_string()).into());
                }
                self.set_units(&asset.symbol, units).await?;
                let Answer::Asset(asset) = self.call(Command::Add { asset }).await? else {
                    return Err(wrong_answer());
                };
                encode(&self.view(&asset, units))
            }
            subject::REMOVE => {
                let request: RemoveAssetRequest = decode(payload)?;
                let asset = self.remove(Symbol::parse(&request.symbol)?).await?;
                encode(&self.view(&asset, 0))
            }
            subject::UPDATE => {
                let request: UpdateAssetRequest = decode(payload)?;
                if request.price.is_none() && request.quantity.is_none() {
                    return Err(ServiceError::invalid("give a new `price` and/or `quantity`"));
                }
                let symbol = Symbol::parse(&request.symbol)?;
                let price = request.price.map(coins::price).transpose()?;
                let units = request.quantity.map(coins::stock).transpose()?;
                let Some(listed) = self.catalogue().asset(&symbol).cloned() else {
                    return Err(ServiceError::new(
                        ErrorCode::NotFound,
                        format!("no asset {symbol}"),
                    ));
                };
                if let Some(units) = units {
                    self.set_units(&symbol, units).await?;
                }
                let asset = match price {
                    Some(price) => {
                        let Answer::Asset(asset) =
                            self.call(Command::Reprice { symbol: symbol.clone(), price }).await?
                        else {
                            return Err(wrong_answer());
                        };
                        asset
                    }
                    None => listed,
                };
                let available = self.units_of(&self.exchange_account).await?;
                encode(&self.view(&asset, available.get(symbol.as_str()).copied().unwrap_or(0)))
            }
            other => Err(ServiceError::new(ErrorCode::Internal, format!("no endpoint {other}"))),
        }
    }

    fn view(&self, asset: &Asset, available: u64) -> AssetView {
        AssetView {
            symbol: asset.symbol.to_string(),
            name: asset.name.clone(),
            price: asset.price,
            available,
        }
    }

    /// The units (non-money balances, what may be spent) `account` has, by symbol.
    async fn units_of(&self, account: &AccountId) -> Result<HashMap<String, u64>, ServiceError> {
        let reply = self.ledger.ledger_balances(account.as_str()).await.map_err(ledger_error)?;
        Ok(reply
            .balances
            .into_iter()
            .filter_map(|b| Some((b.asset?, u64::try_from(b.available).unwrap_or(0))))
            .collect())
    }

    /// Listed assets with the units the exchange's account can sell now.
    async fn assets(&self, symbols: Option<Vec<String>>) -> Result<AssetsReply, ServiceError> {
        let inventory = self.units_of(&self.exchange_account).await?;
        let catalogue = self.catalogue();
        let view = |asset: &Asset| {
            let available = inventory.get(asset.symbol.as_str()).copied().unwrap_or(0);
            self.view(asset, available)
        };
        let Some(symbols) = symbols else {
            return Ok(AssetsReply {
                assets: catalogue.assets().map(view).collect(),
                not_found: Vec::new(),
            });
        };
        let mut assets = Vec::new();
        let mut not_found = Vec::new();
        let unique: std::collections::BTreeSet<String> = symbols.into_iter().collect();
        for text in unique {
            match Symbol::parse(&text).ok().and_then(|s| catalogue.asset(&s)) {
                Some(asset) => assets.push(view(asset)),
                None => not_found.push(text),
            }
        }
        Ok(AssetsReply { assets, not_found })
    }

    /// A user's units at current prices, and their money.
    async fn portfolio(&self, user: &AccountId) -> Result<PortfolioReply, ServiceError> {
        let reply = self.ledger.ledger_balances(user.as_str()).await.map_err(ledger_error)?;
        let catalogue = self.catalogue();
        let mut holdings = Vec::new();
        let mut balance = 0;
        for entry in reply.balances {
            let Some(symbol) = entry.asset else {
                balance = entry.balance;
                continue;
            };
            let Ok(quantity) = u64::try_from(entry.balance) else { continue };
            if quantity == 0 {
                continue;
            }
            let price = Symbol::parse(&symbol)
                .ok()
                .and_then(|s| catalogue.asset(&s).map(|a| a.price))
                .unwrap_or(0);
            holdings.push(HoldingView {
                symbol,
                quantity,
                price,
                value: price.saturating_mul(quantity),
            });
        }
        let value = holdings.iter().fold(0u64, |sum, h| sum.saturating_add(h.value));
        Ok(PortfolioReply { user: user.to_string(), holdings, value, balance })
    }
}
