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
    crate::metrics::watch_consumer(&js, crate::subjects::replica::EVENTS_STREAM, trades::CONSUMER);
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
        other => ServiceError::new(
            ErrorCode::Unavailable,
            format!(
                "the ledger's answer is unknown ({other}); retry with the same id, or ask \
                 agora.coins.order"
            ),
        ),
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

    /// A buy or sell: priced, then one linked pair applied by the ledger.
    async fn order(&self, request: OrderRequest, side: Side) -> Result<OrderView, ServiceError> {
        let user = AccountId::parse(&request.user)?;
        if user == self.exchange_account {
            return Err(ServiceError::invalid("the exchange's own account cannot trade"));
        }
        let symbol = Symbol::parse(&request.symbol)?;
        let quantity = coins::quantity(request.quantity)?;
        let id = request.id.unwrap_or_else(|| nuid::next().to_string());
        coins::check_order_id(&id)?;
        // Counted before it is priced: a removal that begins later waits for it.
        *self
            .ordering
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(symbol.clone())
            .or_default() += 1;
        let _ordering = Ordering { ctx: self, symbol: symbol.clone() };
        let order = self.catalogue().quote(user, id, symbol, side, quantity)?;
        let legs = order.legs(&self.exchange_account);
        let operations = legs
            .iter()
            .enumerate()
            .map(|(index, leg)| OperationRequest {
                op: OperationKind::Transfer,
                from: Some(leg.from.to_string()),
                to: Some(leg.to.to_string()),
                asset: (!leg.asset.is_money()).then(|| leg.asset.to_string()),
                amount: Some(i64::try_from(leg.amount).unwrap_or(i64::MAX)),
                id: Some(leg.id.clone()),
                linked: index == 0,
                ..OperationRequest::default()
            })
            .collect();
        let results = self.orders.apply(operations).await?;
        let mut postings = Vec::new();
        let mut refusal = None;
        for (leg, result) in legs.iter().zip(results) {
            match result {
                OperationResult::Applied { postings: Some(p) } => postings.push((leg.kind, p)),
                OperationResult::Applied { postings: None } => {
                    return Err(ServiceError::new(ErrorCode::Internal, "postings missing"));
                }
                OperationResult::Failed { error } if error.code == ErrorCode::LinkedFailed => {}
                OperationResult::Failed { error } => refusal = Some((leg.kind, error)),
            }
        }
        match refusal {
            None => view_of(&order.user, &order.id, &postings).ok_or_else(|| {
                ServiceError::new(ErrorCode::Internal, "the ledger's postings are not an order")
            }),
            // The id was used before: for this same order (then that is the answer, even if the
            // price changed since), or for another one.
            Some((_, error)) if error.code == ErrorCode::InvalidRequest => {
                match self.lookup(&order.user, &order.id).await? {
                    Some(existing)
                        if existing.symbol == order.symbol.as_str()
                            && existing.side == side.as_str()
                            && existing.quantity == order.quantity =>
                    {
                        Ok(existing)
                    }
                    Some(_) => Err(ServiceError::invalid(format!(
                        "order id {} of {} was used for another order",
                        order.id, order.user
                    ))),
                    None => Err(error),
                }
            }
            Some((kind, error)) => Err(refused(&order, kind, error)),
        }
    }

    /// An order by user and id: from the ledger's records of its legs (while it keeps them),
    /// else from the trade log.
    async fn lookup(&self, user: &AccountId, id: &str) -> Result<Option<OrderView>, ServiceError> {
        let ids = [LegKind::Pay, LegKind::Units].map(|kind| coins::leg_id(user, id, kind));
        let reply = self.ledger.ledger_operations(ids.to_vec()).await.map_err(ledger_error)?;
        let mut postings = Vec::new();
        for entry in reply.operations {
            let kind = if entry.id == ids[0] { LegKind::Pay } else { LegKind::Units };
            let record: OperationRecord =
                serde_json::from_str(entry.record.get()).map_err(|e| {
                    ServiceError::new(ErrorCode::Internal, format!("record {}: {e}", entry.id))
                })?;
            postings.push((kind, record.postings));
        }
        if let Some(view) = view_of(user, id, &postings) {
            return Ok(Some(view));
        }
        let lookup = Command::Lookup { user: user.clone(), id: id.to_owned() };
        let Answer::Order(order) = self.call(lookup).await? else {
            return Err(wrong_answer());
        };
        Ok(order.map(|order| *order))
    }

    /// Sets the units of `symbol` the exchange's account holds to `units` (a deposit or
    /// withdrawal of the difference; tried again if trades change it in between).
    async fn set_units(&self, symbol: &Symbol, units: u64) -> Result<(), ServiceError> {
        for _ in 0..STOCK_TRIES {
            let held = self.ledger.ledger_balances(self.exchange_account.as_str()).await;
            let held = held
                .map_err(ledger_error)?
                .balances
                .into_iter()
                .find(|b| b.asset.as_deref() == Some(symbol.as_str()))
                .map_or(0, |b| b.balance);
            let target = i64::try_from(units).unwrap_or(i64::MAX);
            let (op, amount) = match target - held {
                0 => return Ok(()),
                more if more > 0 => (OperationKind::Deposit, more),
                less => (OperationKind::Withdraw, -less),
            };
            let operation = OperationRequest {
                op,
                account: Some(self.exchange_account.to_string()),
                asset: Some(symbol.to_string()),
                amount: Some(amount),
                ..OperationRequest::default()
            };
            let request = ApplyRequest { operations: vec![operation], detail: false };
            let reply = self.ledger.ledger_apply(&request).await.map_err(ledger_error)?;
            match reply.results.into_iter().next() {
                Some(OperationResult::Applied { .. }) => return Ok(()),
                Some(OperationResult::Failed { error })
                    if error.code == ErrorCode::InsufficientFunds => {}
                Some(OperationResult::Failed { error }) => return Err(error),
                None => return Err(ServiceError::new(ErrorCode::Internal, "no result")),
            }
        }
        Err(ServiceError::new(
            ErrorCode::Busy,
            format!("trades of {symbol} keep changing its units; retry"),
        ))
    }

    /// Removes a listing nobody but the exchange holds units of.
    async fn remove(&self, symbol: Symbol) -> Result<Asset, ServiceError> {
        let Answer::Asset(_) = self.call(Command::Delist { symbol: symbol.clone() }).await? else {
            return Err(wrong_answer());
        };
        let outcome = self.check_unheld(&symbol).await;
        let removed = outcome.is_ok();
        let answer = self.call(Command::FinishDelisting { symbol, removed }).await;
        outcome?;
        match answer? {
            Answer::Asset(asset) => Ok(asset),
            _ => Err(wrong_answer()),
        }
    }

    /// Waits for the orders of `symbol` under way, then checks no account but the exchange's
    /// holds (or has pending) units of it.
    async fn check_unheld(&self, symbol: &Symbol) -> Result<(), ServiceError> {
        let deadline = tokio::time::Instant::now() + DELIST_WAIT;
        while self.ordering.lock().unwrap_or_else(|p| p.into_inner()).contains_key(symbol) {
            if tokio::time::Instant::now() >= deadline {
                return Err(ServiceError::new(
                    ErrorCode::Busy,
                    format!("orders of {symbol} are under way; retry"),
                ));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let request = SupplyRequest {
            asset: symbol.to_string(),
            except: vec![self.exchange_account.to_string()],
        };
        let supply = self.ledger.ledger_supply(&request).await.map_err(ledger_error)?;
        if supply.accounts > 0 {
            return Err(coins::CoinsError::InUse(symbol.to_string()).into());
        }
        Ok(())
    }

    /// Deposits the seed catalogue's units to the exchange's account, once (on the first
    /// start, after the catalogue is seeded); tried until the ledger answers.
    async fn stock_seed(&self) {
        loop {
            match self.try_stock_seed().await {
                Ok(()) => return,
                Err(error) => {
                    tracing::warn!(%error, "cannot stock the exchange's account yet; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    async fn try_stock_seed(&self) -> Result<(), ServiceError> {
        let Answer::Flag(stocked) = self.call(Command::Flag { key: STOCKED }).await? else {
            return Err(wrong_answer());
        };
        if stocked {
            return Ok(());
        }
        // Applied once: the ids make a second try (after a crash before the flag) a replay.
        let operations = coins::seed()
            .into_iter()
            .map(|(asset, units)| OperationRequest {
                op: OperationKind::Deposit,
                account: Some(self.exchange_account.to_string()),
                asset: Some(asset.symbol.to_string()),
                amount: Some(i64::try_from(units).unwrap_or(i64::MAX)),
                id: Some(format!("coins:stock:{}:seed", asset.symbol)),
                ..OperationRequest::default()
            })
            .collect();
        let reply = self
            .ledger
            .ledger_apply(&ApplyRequest { operations, detail: false })
            .await
            .map_err(ledger_error)?;
        if let Some(OperationResult::Failed { error }) =
            reply.results.into_iter().find(|r| matches!(r, OperationResult::Failed { .. }))
        {
            return Err(error);
        }
        let Answer::Done = self.call(Command::SetFlag { key: STOCKED }).await? else {
            return Err(wrong_answer());
        };
        tracing::info!(account = %self.exchange_account, "stocked the exchange's account");
        Ok(())
    }
}

/// A refused leg's error as the trader should read it.
fn refused(order: &Order, leg: LegKind, error: ServiceError) -> ServiceError {
    if error.code != ErrorCode::InsufficientFunds {
        return error;
    }
    let message = match (order.side, leg) {
        (Side::Buy, LegKind::Pay) => {
            return ServiceError::new(
                ErrorCode::InsufficientFunds,
                format!(
                    "{} cannot pay {} for {} {}",
                    order.user, order.total, order.quantity, order.symbol
                ),
            );
        }
        (Side::Sell, LegKind::Pay) => {
            return ServiceError::new(
                ErrorCode::InsufficientFunds,
                format!("the exchange cannot pay {} for this sale now", order.total),
            );
        }
        (Side::Buy, LegKind::Units) => {
            format!("{}: {} wanted, fewer available", order.symbol, order.quantity)
        }
        (Side::Sell, LegKind::Units) => {
            format!("{} holds fewer than {} {}", order.user, order.quantity, order.symbol)
        }
    };
    ServiceError::new(ErrorCode::InsufficientQuantity, message)
}

/// An order as the ledger's postings of its two legs tell it (`None` unless both are there).
fn view_of(user: &AccountId, id: &str, legs: &[(LegKind, Vec<PostingWire>)]) -> Option<OrderView> {
    let postings = |kind: LegKind| legs.iter().find(|(k, _)| *k == kind).map(|(_, p)| p);
    let mine = |p: &&PostingWire| p.account == user.as_str();
    let units = postings(LegKind::Units)?.iter().find(mine)?;
    let pay = postings(LegKind::Pay)?.iter().find(mine)?;
    let side = match units.kind.as_str() {
        "transfer_in" => Side::Buy,
        "transfer_out" => Side::Sell,
        _ => return None,
    };
    let quantity = u64::try_from(units.amount).ok()?;
    let total = u64::try_from(pay.amount).ok()?;
    Some(OrderView {
        id: id.to_owned(),
        user: user.to_string(),
        symbol: units.asset.clone(),
        side: side.as_str().to_owned(),
        quantity,
        unit_price: total.checked_div(quantity)?,
        total,
        state: OrderView::DONE.to_owned(),
        created_ms: units.at,
        settled_ms: units.at,
        holding: u64::try_from(units.balance).ok(),
    })
}
