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

pub mod client;
pub mod state;
pub mod store;
pub mod wire;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agora_core::coins::{self, Asset, OrderState, Side, Symbol};
use agora_core::{AccountId, Caller, Role};
use async_nats::Client;
use futures::StreamExt;
use tokio::sync::{Semaphore, oneshot};

use crate::client::{AgoraClient, ClientError};
use crate::error::{ErrorCode, ServiceError};
use crate::owner::{self, Limits, Mode};
use crate::service::{ErrorCounts, Replier, add_endpoint, decode, decode_or_default, encode};
use crate::subjects::coins as subject;
use state::{Answer, Call, Coins, Command};
use store::StoredOrder;
use wire::{
    AddAssetRequest, AssetsRequest, CoinsHistoryRequest, OrderLookup, OrderRequest, OrderView,
    PortfolioReply, PortfolioRequest, RemoveAssetRequest, UpdateAssetRequest,
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
/// Pending orders retried per recovery round at most.
const RECOVERY_BATCH: usize = 256;
/// Largest `agora.coins.assets` request, in bytes (100 symbols).
const ASSETS_BYTES_MAX: usize = 16 * 1024;
/// Largest `agora.coins.history` request, in bytes.
const HISTORY_BYTES_MAX: usize = 4 * 1024;
/// How often pending orders are retried, and how old one must be (a live order task is
/// usually still on it before that).
const RECOVERY_EVERY: Duration = Duration::from_secs(1);
const RECOVERY_AFTER_MS: u64 = 2_000;
const TICK: Duration = Duration::from_millis(200);

/// Coins service configuration: the flags of `agora-coins`.
#[derive(Debug, Clone, clap::Args)]
pub struct CoinsConfig {
    /// Directory of the SQLite database (created if missing; seeded on first start).
    #[arg(long, env = "AGORA_COINS_DATA_DIR", default_value = "data/coins")]
    pub data_dir: PathBuf,
    /// The exchange's own bank account: buyers pay into it, sellers are paid from it.
    #[arg(long, env = "AGORA_COINS_EXCHANGE_ACCOUNT", default_value = "coins-exchange",
          value_parser = |text: &str| AccountId::parse(text))]
    pub exchange_account: AccountId,
    /// How long a bank call may take before its outcome counts as unknown, in milliseconds.
    #[arg(long, env = "AGORA_COINS_BANK_TIMEOUT_MS", default_value_t = 5_000)]
    pub bank_timeout_ms: u64,
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
        (100..=600_000).contains(&config.bank_timeout_ms),
        "bank-timeout-ms is 100..=600000"
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
    let exchange_account = config.exchange_account.clone();
    let state = Coins::load(&conn)?;
    let limits = Limits {
        group_max: GROUP_CALLS_MAX,
        tick: TICK,
        synchronous: store::SYNCHRONOUS,
        mode: Mode::Thread,
    };
    let (calls, inbox) = owner::queue(QUEUE_MAX);
    let owner_thread = owner::spawn_replicated("coins", conn, state, inbox, limits, journal)?;
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
                        let reply = match crate::identity::caller(request.message.headers.as_ref())
                        {
                            Ok(caller) => ctx.handle(name, &caller, &request.message.payload).await,
                            Err(error) => Err(error),
                        };
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
    owner_thread.join().await;
    client.flush().await.ok();
    Ok(())
}

fn busy() -> ServiceError {
    ServiceError::new(ErrorCode::Busy, "the coins service is overloaded; retry")
}

/// What request tasks share.
struct Ctx {
    calls: owner::Queue<Call>,
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
                let Answer::Order(order) =
                    self.call(Command::Lookup { user, id: request.id }).await?
                else {
                    return Err(wrong_answer());
                };
                encode(&OrderView::from(&*order))
            }
            subject::PORTFOLIO => {
                let request: PortfolioRequest = decode(payload)?;
                let user = AccountId::parse(&request.user)?;
                caller.may_read("portfolio", &request.user)?;
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
    async fn drive(&self, stored: StoredOrder) -> Result<OrderView, ServiceError> {
        if !stored.state.is_pending() {
            return finished(&stored);
        }
        if !self.paying.lock().unwrap_or_else(|p| p.into_inner()).insert(stored.seq) {
            return Err(ServiceError::new(
                ErrorCode::Busy,
                "the order is being paid right now; ask agora.coins.order, or retry with the \
                 same id",
            ));
        }
        let _paying = Paying { ctx: self, seq: stored.seq };
        // Settled meanwhile by the payer that just finished? Then that is the outcome.
        let lookup =
            Command::Lookup { user: stored.order.user.clone(), id: stored.order.id.clone() };
        let Answer::Order(current) = self.call(lookup).await? else {
            return Err(wrong_answer());
        };
        if !current.state.is_pending() {
            return finished(&current);
        }
        let refusal = self.pay(&stored.order).await?;
        let Answer::Order(settled) =
            self.call(Command::Settle { seq: stored.seq, refusal }).await?
        else {
            return Err(wrong_answer());
        };
        finished(&settled)
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
        for stored in pending {
            let (user, id) = (stored.order.user.clone(), stored.order.id.clone());
            match self.drive(stored).await {
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

/// An order as a reply: a failed one is its error.
fn finished(stored: &StoredOrder) -> Result<OrderView, ServiceError> {
    match (stored.state, &stored.error) {
        (OrderState::Failed, Some(error)) => Err(error.clone()),
        (OrderState::Failed, None) => {
            Err(ServiceError::new(ErrorCode::Internal, "failed, reason lost"))
        }
        _ => Ok(OrderView::from(stored)),
    }
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
