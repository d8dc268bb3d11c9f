//! The coin exchange (`agora-coins`, one instance): a catalogue of assets, users' holdings, and
//! orders paid with bank money.
//!
//! ## An order, all or nothing
//! 1. The owner thread checks the order and reserves what it sells (`Exchange::reserve`): a buy
//!    takes units from the asset's available ones, a sell from the user's holding. The order is
//!    committed as `pending` (SQLite, fsynced) before any money moves.
//! 2. The order task asks the bank for `agora.bank.transfer` of the total (buy: user → the
//!    exchange's account; sell: the exchange's account → user) with the operation id
//!    `coins-<user>-<order id>`: the bank applies it at most once, and a retry learns its outcome.
//! 3. Paid, the owner settles the order `done` (the units go to the buyer, or back to the
//!    available ones); refused (`insufficient_funds`), it settles it `failed` and gives the
//!    reservation back. Only then does the client get its reply.
//!
//! If the bank's answer is unknown (timeout, bank down) the order stays pending and the client
//! gets `unavailable`; the recovery loop (and every start) retries pending orders with their
//! operation id until the bank answers. A client retrying with the same order id gets the
//! order's one outcome. So there are no coins without payment and no payment without coins.

pub mod store;
pub mod wire;

use std::collections::HashMap;
use std::collections::{BTreeSet, HashSet};
use std::future::Future;
use std::path::PathBuf;
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agora_core::AccountId;
use agora_core::coins::{self, Asset, Exchange, Side, Symbol};
use anyhow::Context as _;
use async_nats::Client;
use futures::StreamExt;
use tokio::sync::{Semaphore, oneshot};

use crate::client::{AgoraClient, ClientError};
use crate::clock::now_ms;
use crate::coins::store::{CoinsStore, StoreError, order_of};
use crate::coins::wire::{
    AddAssetRequest, AssetView, AssetsReply, AssetsRequest, CoinsHistoryReply, CoinsHistoryRequest,
    HoldingView, OrderLookup, OrderRequest, OrderView, PortfolioReply, PortfolioRequest,
    PriceEvent, RemoveAssetRequest, UpdateAssetRequest,
};
use crate::error::{ErrorCode, ServiceError};
use crate::service::{ErrorCounts, Replier, add_endpoint, decode, decode_or_default, encode};
use crate::subjects::coins as subject;

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
/// Pending orders retried per recovery round at most.
const RECOVERY_BATCH: usize = 256;
/// How often pending orders are retried, and how old one must be (a live order task is
/// usually still on it before that).
const RECOVERY_EVERY: Duration = Duration::from_secs(1);
const RECOVERY_AFTER_MS: u64 = 2_000;
const TICK: Duration = Duration::from_millis(200);

/// Coins service configuration (the binary fills it from flags and environment).
#[derive(Debug, Clone)]
pub struct CoinsConfig {
    /// Directory holding `coins.db`.
    pub data_dir: PathBuf,
    /// The exchange's own bank account: buyers pay into it, sellers are paid from it.
    pub exchange_account: String,
    /// How long one bank call may take before its outcome counts as unknown.
    pub bank_timeout_ms: u64,
}

/// Runs the coins service until `shutdown` resolves.
pub async fn run(
    client: Client,
    config: CoinsConfig,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let exchange_account = AccountId::parse(&config.exchange_account)?;
    anyhow::ensure!(
        (100..=600_000).contains(&config.bank_timeout_ms),
        "bank-timeout-ms is 100..=600000"
    );
    crate::service::refuse_second_instance(&client, subject::SERVICE).await?;
    let store = CoinsStore::open(&config.data_dir)
        .with_context(|| format!("opening {}", config.data_dir.display()))?;
    let (calls, inbox) = std_mpsc::sync_channel(QUEUE_MAX);
    let owner = Owner::new(store, client.clone())?;
    let owner_thread =
        std::thread::Builder::new().name("coins-owner".into()).spawn(move || owner.run(inbox))?;
    let bank = AgoraClient::new(client.clone())
        .with_timeout(Duration::from_millis(config.bank_timeout_ms));
    let ctx = Arc::new(Ctx {
        calls,
        bank,
        exchange_account,
        in_flight: Arc::new(Semaphore::new(REQUESTS_IN_FLIGHT_MAX)),
        paying: Mutex::new(HashSet::new()),
    });
    // Orders a crash left pending are finished (or undone) before anything new is taken.
    let recovered = ctx.recover(0).await;
    tracing::info!(recovered, "coins store loaded");

    let errors = ErrorCounts::default();
    let stats_errors = errors.clone();
    let service = crate::service::builder(&client, HashMap::new())
        .description("Agora coins: assets, a manager role, buying and selling with bank money")
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
                        let reply = ctx.handle(name, &request.message.payload).await;
                        replier.reply_bytes(&request, reply).await;
                        drop(permit);
                    });
                }
            }));
        }
    }
    let recovery = ctx.clone();
    loops.push(tokio::spawn(async move {
        loop {
            tokio::time::sleep(RECOVERY_EVERY).await;
            recovery.recover(RECOVERY_AFTER_MS).await;
        }
    }));
    crate::client::barrier(&client).await?;
    crate::telemetry::announce_ready(subject::SERVICE);
    shutdown.await;
    for task in &loops {
        task.abort();
    }
    drop(loops);
    drop(service);
    drop(ctx);
    tokio::task::spawn_blocking(move || owner_thread.join()).await.ok();
    client.flush().await.ok();
    Ok(())
}

fn busy() -> ServiceError {
    ServiceError::new(ErrorCode::Busy, "the coins service is overloaded; retry")
}

fn unavailable(error: &StoreError) -> ServiceError {
    ServiceError::new(ErrorCode::Unavailable, format!("coins store failed ({error}); retry"))
}

fn asset_view(asset: &Asset) -> AssetView {
    AssetView {
        symbol: asset.symbol.to_string(),
        name: asset.name.clone(),
        price: asset.price,
        available: asset.available,
    }
}

/// What the owner thread is asked to do.
#[derive(Debug)]
enum Command {
    Assets { symbols: Option<Vec<String>> },
    Reserve { user: AccountId, id: String, symbol: Symbol, side: Side, quantity: u64 },
    Settle { seq: u64, refusal: Option<ServiceError> },
    Lookup { user: AccountId, id: String },
    Holdings { user: AccountId },
    History { user: Option<AccountId>, from: Option<u64>, to: Option<u64>, limit: usize },
    Pending { older_than_ms: u64 },
    Add { asset: Asset },
    Remove { symbol: Symbol },
    Update { symbol: Symbol, price: Option<u64>, available: Option<u64> },
}

#[derive(Debug)]
enum Answer {
    Assets(AssetsReply),
    Asset(AssetView),
    Order(Box<OrderView>),
    Orders(Vec<OrderView>),
    Holdings(Vec<HoldingView>),
    History(CoinsHistoryReply),
}

type Call = (Command, oneshot::Sender<Result<Answer, ServiceError>>);

/// What request tasks share.
struct Ctx {
    calls: std_mpsc::SyncSender<Call>,
    bank: AgoraClient,
    exchange_account: AccountId,
    in_flight: Arc<Semaphore>,
    /// Pending orders someone is paying for now. One payer per order: were a refused payment
    /// retried concurrently, the retry could succeed after the order was settled failed.
    paying: Mutex<HashSet<u64>>,
}

/// Holds an order in [`Ctx::paying`] until dropped.
struct Paying<'a> {
    ctx: &'a Ctx,
    seq: u64,
}

impl Drop for Paying<'_> {
    fn drop(&mut self) {
        self.ctx.paying.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.seq);
    }
}

fn wrong_answer() -> ServiceError {
    ServiceError::new(ErrorCode::Internal, "the owner answered something else")
}

impl Ctx {
    async fn call(&self, command: Command) -> Result<Answer, ServiceError> {
        let (reply, answer) = oneshot::channel();
        self.calls.try_send((command, reply)).map_err(|_| busy())?;
        answer.await.map_err(|_| ServiceError::new(ErrorCode::Unavailable, "coins stopping"))?
    }

    async fn handle(&self, endpoint: &str, payload: &[u8]) -> Result<bytes::Bytes, ServiceError> {
        match endpoint {
            subject::ASSETS => {
                let request: AssetsRequest = decode_or_default(payload, 16 * 1024)?;
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
                let Answer::Assets(reply) = self.call(Command::Assets { symbols }).await? else {
                    return Err(wrong_answer());
                };
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
                encode(&self.order(decode(payload)?, side).await?)
            }
            subject::ORDER => {
                let request: OrderLookup = decode(payload)?;
                let user = AccountId::parse(&request.user)?;
                coins::check_order_id(&request.id)?;
                let Answer::Order(order) =
                    self.call(Command::Lookup { user, id: request.id }).await?
                else {
                    return Err(wrong_answer());
                };
                encode(&*order)
            }
            subject::PORTFOLIO => {
                let request: PortfolioRequest = decode(payload)?;
                let user = AccountId::parse(&request.user)?;
                let Answer::Holdings(holdings) =
                    self.call(Command::Holdings { user: user.clone() }).await?
                else {
                    return Err(wrong_answer());
                };
                let balance = self.bank.balance(user.as_str()).await.map_err(bank_error)?;
                let value = holdings.iter().fold(0u64, |sum, h| sum.saturating_add(h.value));
                encode(&PortfolioReply {
                    user: user.to_string(),
                    holdings,
                    value,
                    balance: balance.balance,
                })
            }
            subject::HISTORY => {
                let request: CoinsHistoryRequest = decode_or_default(payload, 4 * 1024)?;
                let user = request.user.as_deref().map(AccountId::parse).transpose()?;
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
            subject::ADD => {
                let request: AddAssetRequest = decode(payload)?;
                coins::check_name(&request.name)?;
                let asset = Asset {
                    symbol: Symbol::parse(&request.symbol)?,
                    name: request.name,
                    price: coins::price(request.price)?,
                    available: coins::stock(request.quantity)?,
                };
                self.asset_call(Command::Add { asset }).await
            }
            subject::REMOVE => {
                let request: RemoveAssetRequest = decode(payload)?;
                self.asset_call(Command::Remove { symbol: Symbol::parse(&request.symbol)? }).await
            }
            subject::UPDATE => {
                let request: UpdateAssetRequest = decode(payload)?;
                if request.price.is_none() && request.quantity.is_none() {
                    return Err(ServiceError::invalid("give a new `price` and/or `quantity`"));
                }
                let command = Command::Update {
                    symbol: Symbol::parse(&request.symbol)?,
                    price: request.price.map(coins::price).transpose()?,
                    available: request.quantity.map(coins::stock).transpose()?,
                };
                self.asset_call(command).await
            }
            other => Err(ServiceError::new(ErrorCode::Internal, format!("no endpoint {other}"))),
        }
    }

    async fn asset_call(&self, command: Command) -> Result<bytes::Bytes, ServiceError> {
        let Answer::Asset(asset) = self.call(command).await? else {
            return Err(wrong_answer());
        };
        encode(&asset)
    }

    /// A buy or sell: reserve, pay through the bank, settle.
    async fn order(&self, request: OrderRequest, side: Side) -> Result<OrderView, ServiceError> {
        let user = AccountId::parse(&request.user)?;
        if user == self.exchange_account {
            return Err(ServiceError::invalid("the exchange's own account cannot trade"));
        }
        let symbol = Symbol::parse(&request.symbol)?;
        let quantity = coins::quantity(request.quantity)?;
        let id = request.id.unwrap_or_else(|| nuid::next().to_string());
        coins::check_order_id(&id)?;
        let Answer::Order(order) =
            self.call(Command::Reserve { user, id, symbol, side, quantity }).await?
        else {
            return Err(wrong_answer());
        };
        self.drive(*order).await
    }

    /// Takes an order to its end: the order as it is once settled (a refused order is its
    /// error), or `unavailable` if the bank's answer is unknown (the order stays pending).
    async fn drive(&self, order: OrderView) -> Result<OrderView, ServiceError> {
        let settled = match order.state.as_str() {
            "pending" => {
                if !self.paying.lock().unwrap_or_else(|p| p.into_inner()).insert(order.seq) {
                    return Err(ServiceError::new(
                        ErrorCode::Busy,
                        "the order is being paid right now; ask agora.coins.order, or retry \
                         with the same id",
                    ));
                }
                let _paying = Paying { ctx: self, seq: order.seq };
                // Settled meanwhile by the payer that just finished? Then that is the outcome.
                let Answer::Order(current) = self
                    .call(Command::Lookup { user: order_user(&order)?, id: order.id.clone() })
                    .await?
                else {
                    return Err(wrong_answer());
                };
                if current.state != "pending" {
                    return finished(*current);
                }
                let Some(parsed) = order_of(&order) else {
                    return Err(ServiceError::new(
                        ErrorCode::Internal,
                        "a stored order is corrupt",
                    ));
                };
                let refusal = self.pay(&parsed).await?;
                let Answer::Order(settled) =
                    self.call(Command::Settle { seq: order.seq, refusal }).await?
                else {
                    return Err(wrong_answer());
                };
                *settled
            }
            _ => order,
        };
        finished(settled)
    }

    /// Moves an order's money: `Ok(None)` paid, `Ok(Some(refusal))` definitively refused (the
    /// bank applied nothing), `Err(unavailable)` when the outcome is unknown.
    async fn pay(&self, order: &coins::Order) -> Result<Option<ServiceError>, ServiceError> {
        let (from, to) = match order.side {
            Side::Buy => (&order.user, &self.exchange_account),
            Side::Sell => (&self.exchange_account, &order.user),
        };
        let id = format!("coins-{}-{}", order.user, order.id);
        let amount = i64::try_from(order.total).unwrap_or(i64::MAX);
        match self.bank.transfer(from.as_str(), to.as_str(), amount, Some(&id)).await {
            Ok(_) => Ok(None),
            Err(ClientError::Service(error))
                if matches!(
                    error.code,
                    ErrorCode::InsufficientFunds | ErrorCode::InvalidRequest
                ) =>
            {
                let mut refusal = error;
                if order.side == Side::Sell && refusal.code == ErrorCode::InsufficientFunds {
                    refusal.message = format!(
                        "the exchange cannot pay {} for this sale now ({})",
                        order.total, refusal.message
                    );
                }
                Ok(Some(refusal))
            }
            Err(error) => Err(payment_unknown(error)),
        }
    }

    /// Drives pending orders older than `older_than_ms`; returns how many ended.
    async fn recover(&self, older_than_ms: u64) -> usize {
        let Ok(Answer::Orders(pending)) = self.call(Command::Pending { older_than_ms }).await
        else {
            return 0;
        };
        let mut ended = 0;
        for order in pending {
            let (user, id) = (order.user.clone(), order.id.clone());
            match self.drive(order).await {
                Ok(_) => ended += 1,
                Err(error) if error.code == ErrorCode::Unavailable => {
                    tracing::warn!(%user, %id, %error, "pending order: the bank's answer is unknown");
                    break;
                }
                // Someone is paying for it right now.
                Err(error) if error.code == ErrorCode::Busy => {}
                Err(_) => ended += 1,
            }
        }
        if ended > 0 {
            tracing::info!(ended, "pending orders finished");
        }
        ended
    }
}

/// A settled order as a reply: a failed one is its error.
fn finished(order: OrderView) -> Result<OrderView, ServiceError> {
    match (&order.state[..], &order.error) {
        ("failed", Some(error)) => Err(error.clone()),
        ("failed", None) => Err(ServiceError::new(ErrorCode::Internal, "failed, reason lost")),
        _ => Ok(order),
    }
}

fn order_user(order: &OrderView) -> Result<AccountId, ServiceError> {
    Ok(AccountId::parse(&order.user)?)
}

/// A failed bank call, as the coins service reports it.
fn bank_error(error: ClientError) -> ServiceError {
    match error {
        ClientError::Service(error) if error.code != ErrorCode::Unavailable => error,
        other => {
            ServiceError::new(ErrorCode::Unavailable, format!("the bank did not answer ({other})"))
        }
    }
}

/// A payment whose outcome is unknown.
fn payment_unknown(error: ClientError) -> ServiceError {
    ServiceError::new(
        ErrorCode::Unavailable,
        format!(
            "the bank's answer is unknown ({error}); the order stays pending and is retried: ask \
             agora.coins.order, or retry with the same id"
        ),
    )
}

struct Owner {
    exchange: Exchange,
    store: CoinsStore,
    client: Client,
    runtime: tokio::runtime::Handle,
}

impl Owner {
    fn new(store: CoinsStore, client: Client) -> anyhow::Result<Self> {
        let mut owner = Self {
            exchange: Exchange::new(),
            store,
            client,
            runtime: tokio::runtime::Handle::current(),
        };
        if !owner.store.seeded()? {
            owner.store.begin()?;
            for asset in coins::seed() {
                owner.store.put_asset(&asset)?;
            }
            owner.store.mark_seeded()?;
            owner.store.commit()?;
            tracing::info!("seeded the catalogue: BTC, ETH, AMZN, MSFT, TSLA");
        }
        owner.reload()?;
        Ok(owner)
    }

    fn reload(&mut self) -> Result<(), StoreError> {
        self.exchange = Exchange::new();
        for asset in self.store.assets()? {
            self.exchange.restore_asset(asset);
        }
        for (user, symbol, quantity) in self.store.holdings()? {
            self.exchange.restore_holding(user, symbol, quantity);
        }
        for order in self.store.pending(usize::MAX >> 1)? {
            if let Some(order) = order_of(&order) {
                self.exchange.restore_pending(&order);
            }
        }
        Ok(())
    }

    fn run(mut self, inbox: std_mpsc::Receiver<Call>) {
        while let Some(group) = crate::sqlite::next_group(&inbox, TICK, GROUP_CALLS_MAX) {
            if !group.is_empty() {
                self.run_group(now_ms(), group);
            }
        }
        tracing::info!("coins owner stopped");
    }

    fn run_group(&mut self, now: u64, group: Vec<Call>) {
        let mut answers = Vec::with_capacity(group.len());
        let mut prices = Vec::new();
        let result = self.store.begin().and_then(|()| {
            for (command, reply) in group {
                let answer = self.execute(now, command, &mut prices)?;
                answers.push((reply, answer));
            }
            self.store.commit()
        });
        if let Err(error) = result {
            tracing::error!(%error, "coins store transaction failed; rolling back");
            self.store.rollback();
            if let Err(error) = self.reload() {
                tracing::error!(%error, "cannot reload the coins store");
            }
            let failure = unavailable(&error);
            answers.iter_mut().for_each(|(_, answer)| *answer = Err(failure.clone()));
            prices.clear();
        }
        if !prices.is_empty() {
            self.runtime.block_on(async {
                for event in prices {
                    if let Ok(payload) = serde_json::to_vec(&event) {
                        let subject = subject::prices(&event.symbol);
                        self.client.publish(subject, payload.into()).await.ok();
                    }
                }
            });
        }
        for (reply, answer) in answers {
            reply.send(answer).ok();
        }
    }

    fn execute(
        &mut self,
        now: u64,
        command: Command,
        prices: &mut Vec<PriceEvent>,
    ) -> Result<Result<Answer, ServiceError>, StoreError> {
        Ok(match command {
            Command::Assets { symbols } => Ok(Answer::Assets(self.assets(symbols))),
            Command::Reserve { user, id, symbol, side, quantity } => {
                if let Some(existing) = self.store.find_order(user.as_str(), &id)? {
                    let same = existing.symbol == symbol.as_str()
                        && existing.side == side.as_str()
                        && existing.quantity == quantity;
                    return Ok(if same {
                        Ok(Answer::Order(Box::new(existing)))
                    } else {
                        Err(ServiceError::invalid(format!(
                            "order id {id} of {user} was used for another order"
                        )))
                    });
                }
                let order = match self.exchange.reserve(user, id, symbol, side, quantity) {
                    Ok(order) => order,
                    Err(error) => return Ok(Err(error.into())),
                };
                self.write_positions(&order.user, &order.symbol)?;
                let seq = self.store.insert_order(&order, now)?;
                match self.store.order(seq)? {
                    Some(view) => Ok(Answer::Order(Box::new(view))),
                    None => Err(ServiceError::new(ErrorCode::Internal, "order vanished")),
                }
            }
            Command::Settle { seq, refusal } => {
                let Some(view) = self.store.order(seq)? else {
                    return Ok(Err(ServiceError::new(ErrorCode::NotFound, "no such order")));
                };
                if view.state != "pending" {
                    return Ok(Ok(Answer::Order(Box::new(view))));
                }
                let Some(order) = order_of(&view) else {
                    return Ok(Err(ServiceError::new(ErrorCode::Internal, "corrupt order")));
                };
                let holding = self.exchange.settle(&order, refusal.is_none());
                self.write_positions(&order.user, &order.symbol)?;
                self.store.settle_order(seq, refusal.as_ref(), now, holding)?;
                match self.store.order(seq)? {
                    Some(view) => Ok(Answer::Order(Box::new(view))),
                    None => Err(ServiceError::new(ErrorCode::Internal, "order vanished")),
                }
            }
            Command::Lookup { user, id } => match self.store.find_order(user.as_str(), &id)? {
                Some(view) => Ok(Answer::Order(Box::new(view))),
                None => {
                    Err(ServiceError::new(ErrorCode::NotFound, format!("{user} has no order {id}")))
                }
            },
            Command::Holdings { user } => {
                let holdings = self
                    .exchange
                    .holdings_of(&user)
                    .into_iter()
                    .map(|(symbol, quantity)| {
                        let price = self.exchange.asset(&symbol).map_or(0, |a| a.price);
                        HoldingView {
                            symbol: symbol.to_string(),
                            quantity,
                            price,
                            value: price.saturating_mul(quantity),
                        }
                    })
                    .collect();
                Ok(Answer::Holdings(holdings))
            }
            Command::History { user, from, to, limit } => {
                let user = user.as_ref().map(AccountId::as_str);
                let (orders, more) = self.store.history(user, from, to, limit)?;
                Ok(Answer::History(CoinsHistoryReply { orders, more }))
            }
            Command::Pending { older_than_ms } => {
                let cutoff = now.saturating_sub(older_than_ms);
                let pending = self.store.pending(RECOVERY_BATCH)?;
                Ok(Answer::Orders(pending.into_iter().filter(|o| o.created_ms <= cutoff).collect()))
            }
            Command::Add { asset } => match self.exchange.add(asset.clone()) {
                Ok(()) => {
                    self.store.put_asset(&asset)?;
                    prices.push(PriceEvent {
                        symbol: asset.symbol.to_string(),
                        price: Some(asset.price),
                        previous: None,
                        event: "listed".into(),
                        at_ms: now,
                    });
                    Ok(Answer::Asset(asset_view(&asset)))
                }
                Err(error) => Err(error.into()),
            },
            Command::Remove { symbol } => match self.exchange.remove(&symbol) {
                Ok(asset) => {
                    self.store.delete_asset(&symbol)?;
                    prices.push(PriceEvent {
                        symbol: symbol.to_string(),
                        price: None,
                        previous: Some(asset.price),
                        event: "delisted".into(),
                        at_ms: now,
                    });
                    Ok(Answer::Asset(asset_view(&asset)))
                }
                Err(coins::CoinsError::UnknownSymbol(s)) => {
                    Err(ServiceError::new(ErrorCode::NotFound, format!("no asset {s}")))
                }
                Err(error) => Err(error.into()),
            },
            Command::Update { symbol, price, available } => {
                match self.exchange.update(&symbol, price, available) {
                    Ok((before, after)) => {
                        self.store.put_asset(&after)?;
                        if before.price != after.price {
                            prices.push(PriceEvent {
                                symbol: symbol.to_string(),
                                price: Some(after.price),
                                previous: Some(before.price),
                                event: "price".into(),
                                at_ms: now,
                            });
                        }
                        Ok(Answer::Asset(asset_view(&after)))
                    }
                    Err(coins::CoinsError::UnknownSymbol(s)) => {
                        Err(ServiceError::new(ErrorCode::NotFound, format!("no asset {s}")))
                    }
                    Err(error) => Err(error.into()),
                }
            }
        })
    }

    /// Stores the asset's available units and the user's holding as the exchange has them.
    fn write_positions(&self, user: &AccountId, symbol: &Symbol) -> Result<(), StoreError> {
        if let Some(asset) = self.exchange.asset(symbol) {
            self.store.put_asset(asset)?;
        }
        self.store.set_holding(user, symbol, self.exchange.holding(user, symbol))
    }

    fn assets(&self, symbols: Option<Vec<String>>) -> AssetsReply {
        let Some(symbols) = symbols else {
            return AssetsReply {
                assets: self.exchange.assets().map(asset_view).collect(),
                not_found: Vec::new(),
            };
        };
        let mut assets = Vec::new();
        let mut not_found = Vec::new();
        let unique: BTreeSet<String> = symbols.into_iter().collect();
        for text in unique {
            match Symbol::parse(&text).ok().and_then(|s| self.exchange.asset(&s)) {
                Some(asset) => assets.push(asset_view(asset)),
                None => not_found.push(text),
            }
        }
        AssetsReply { assets, not_found }
    }
}

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
