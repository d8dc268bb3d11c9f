//! The coin exchange's owner state (see `crate::owner`): the `agora_core::Exchange` (assets,
//! holdings, reservations of pending orders) in memory, and what each call does to the store.

use std::collections::BTreeSet;

use agora_core::AccountId;
use agora_core::coins::{self, Asset, Exchange, OrderState, Side, Symbol};
use rusqlite::{Connection, Transaction};
use tokio::sync::oneshot;

use super::RECOVERY_BATCH;
use super::store::{self, StoredOrder};
use super::wire::{AssetView, AssetsReply, CoinsHistoryReply, HoldingView, PriceEvent};
use crate::error::{ErrorCode, ServiceError};
use crate::owner::State;
use crate::replica::Event;
use crate::sqlite::StoreError;
use crate::subjects::coins as subject;

/// What the owner thread is asked to do.
#[derive(Debug)]
pub enum Command {
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
pub enum Answer {
    Assets(AssetsReply),
    Asset(AssetView),
    Order(Box<StoredOrder>),
    Orders(Vec<StoredOrder>),
    Holdings(Vec<HoldingView>),
    History(CoinsHistoryReply),
}

/// Where the answer to a call goes.
pub type AnswerTo = oneshot::Sender<Result<Answer, ServiceError>>;

/// A call and where its answer goes.
pub type Call = (Command, AnswerTo);

/// What a group produced, sent once it committed.
#[derive(Debug, Default)]
pub struct Outbox {
    answers: Vec<(AnswerTo, Result<Answer, ServiceError>)>,
    prices: Vec<PriceEvent>,
}

/// The exchange's state, owned by its owner thread.
pub struct Coins {
    exchange: Exchange,
}

impl std::fmt::Debug for Coins {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coins").finish_non_exhaustive()
    }
}

fn unavailable(error: &StoreError) -> ServiceError {
    ServiceError::new(ErrorCode::Unavailable, format!("coins store failed ({error}); retry"))
}

pub fn asset_view(asset: &Asset) -> AssetView {
    AssetView {
        symbol: asset.symbol.to_string(),
        name: asset.name.clone(),
        price: asset.price,
        available: asset.available,
    }
}

fn not_found(what: String) -> ServiceError {
    ServiceError::new(ErrorCode::NotFound, what)
}

impl Coins {
    /// The state as the store has it (the catalogue is seeded by the first active instance,
    /// see [`State::promoted`]).
    pub fn load(conn: &Connection) -> Result<Self, StoreError> {
        let mut state = Self { exchange: Exchange::new() };
        state.reload(conn)?;
        Ok(state)
    }

    fn reload(&mut self, conn: &Connection) -> Result<(), StoreError> {
        self.exchange = Exchange::new();
        for asset in store::assets(conn)? {
            self.exchange.restore_asset(asset);
        }
        for (user, symbol, quantity) in store::holdings(conn)? {
            self.exchange.restore_holding(user, symbol, quantity);
        }
        for stored in store::pending(conn, usize::MAX >> 1)? {
            self.exchange.restore_pending(&stored.order);
        }
        Ok(())
    }

    fn execute(
        &mut self,
        tx: &Transaction<'_>,
        now: u64,
        command: Command,
        prices: &mut Vec<PriceEvent>,
    ) -> Result<Result<Answer, ServiceError>, StoreError> {
        Ok(match command {
            Command::Assets { symbols } => Ok(Answer::Assets(self.assets(symbols))),
            Command::Reserve { user, id, symbol, side, quantity } => {
                if let Some(existing) = store::find_order(tx, user.as_str(), &id)? {
                    let order = &existing.order;
                    let same =
                        order.symbol == symbol && order.side == side && order.quantity == quantity;
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
                self.write_positions(tx, &order.user, &order.symbol)?;
                let seq = store::insert_order(tx, &order, now)?;
                self.stored(tx, seq)?
            }
            Command::Settle { seq, refusal } => {
                let Some(stored) = store::order(tx, seq)? else {
                    return Ok(Err(not_found(format!("no order #{seq}"))));
                };
                // Settled meanwhile (by another payer): that is the outcome.
                let Ok(state) = stored.state.settle(refusal.is_none()) else {
                    return Ok(Ok(Answer::Order(Box::new(stored))));
                };
                let holding = self.exchange.settle(&stored.order, state == OrderState::Done);
                self.write_positions(tx, &stored.order.user, &stored.order.symbol)?;
                store::settle_order(tx, seq, state, refusal.as_ref(), now, holding)?;
                self.stored(tx, seq)?
            }
            Command::Lookup { user, id } => match store::find_order(tx, user.as_str(), &id)? {
                Some(stored) => Ok(Answer::Order(Box::new(stored))),
                None => Err(not_found(format!("{user} has no order {id}"))),
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
                let (orders, more) = store::history(tx, user, from, to, limit)?;
                let orders = orders.iter().map(Into::into).collect();
                Ok(Answer::History(CoinsHistoryReply { orders, more }))
            }
            Command::Pending { older_than_ms } => {
                let cutoff = now.saturating_sub(older_than_ms);
                let pending = store::pending(tx, RECOVERY_BATCH)?;
                Ok(Answer::Orders(pending.into_iter().filter(|o| o.created_ms <= cutoff).collect()))
            }
            Command::Add { asset } => match self.exchange.add(asset.clone()) {
                Ok(()) => {
                    store::put_asset(tx, &asset)?;
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
                    store::delete_asset(tx, &symbol)?;
                    prices.push(PriceEvent {
                        symbol: symbol.to_string(),
                        price: None,
                        previous: Some(asset.price),
                        event: "delisted".into(),
                        at_ms: now,
                    });
                    Ok(Answer::Asset(asset_view(&asset)))
                }
                Err(coins::CoinsError::UnknownSymbol(s)) => Err(not_found(format!("no asset {s}"))),
                Err(error) => Err(error.into()),
            },
            Command::Update { symbol, price, available } => {
                match self.exchange.update(&symbol, price, available) {
                    Ok((before, after)) => {
                        store::put_asset(tx, &after)?;
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
                        Err(not_found(format!("no asset {s}")))
                    }
                    Err(error) => Err(error.into()),
                }
            }
        })
    }

    /// The order at `seq`, just written.
    fn stored(
        &self,
        tx: &Transaction<'_>,
        seq: u64,
    ) -> Result<Result<Answer, ServiceError>, StoreError> {
        Ok(match store::order(tx, seq)? {
            Some(stored) => Ok(Answer::Order(Box::new(stored))),
            None => Err(ServiceError::new(ErrorCode::Internal, "order vanished")),
        })
    }

    /// Stores the asset's available units and the user's holding as the exchange has them.
    fn write_positions(
        &self,
        tx: &Transaction<'_>,
        user: &AccountId,
        symbol: &Symbol,
    ) -> Result<(), StoreError> {
        if let Some(asset) = self.exchange.asset(symbol) {
            store::put_asset(tx, asset)?;
        }
        store::set_holding(tx, user, symbol, self.exchange.holding(user, symbol))
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

impl State for Coins {
    type Envelope = Call;
    type Outbox = Outbox;

    fn apply(
        &mut self,
        tx: &Transaction<'_>,
        now_ms: u64,
        (command, reply): Call,
        out: &mut Outbox,
    ) -> Result<(), StoreError> {
        let answer = self.execute(tx, now_ms, command, &mut out.prices)?;
        out.answers.push((reply, answer));
        Ok(())
    }

    /// On the very first start the catalogue is seeded, in the log like every write.
    fn promoted(&mut self, tx: &Transaction<'_>, _now_ms: u64) -> Result<(), StoreError> {
        if !store::seeded(tx)? {
            for asset in coins::seed() {
                store::put_asset(tx, &asset)?;
            }
            store::mark_seeded(tx)?;
            self.reload(tx)?;
            tracing::info!("seeded the catalogue: BTC, ETH, AMZN, MSFT, TSLA");
        }
        Ok(())
    }

    /// Price events travel in the log entry; the runtime publishes them once it is stored.
    fn durable_events(&mut self, out: &mut Outbox) -> Vec<Event> {
        std::mem::take(&mut out.prices)
            .into_iter()
            .filter_map(|event| {
                let payload = serde_json::to_vec(&event).ok()?;
                Some(Event { subject: subject::prices(&event.symbol), payload: payload.into() })
            })
            .collect()
    }

    fn rolled_back(&mut self, conn: &Connection, error: &StoreError, out: &mut Outbox) {
        if let Err(error) = self.reload(conn) {
            tracing::error!(%error, "cannot reload the coins store");
        }
        let failure = unavailable(error);
        out.answers.iter_mut().for_each(|(_, answer)| *answer = Err(failure.clone()));
        out.prices.clear();
    }

    async fn deliver(&mut self, _now_ms: u64, out: Outbox) {
        let Outbox { answers, prices: _ } = out;
        for (reply, answer) in answers {
            reply.send(answer).ok();
        }
    }
}
