//! The coin exchange's owner state (see `crate::owner`): the catalogue and the trade log.
//! Request tasks price orders from a shared copy of the catalogue ([`Shared`]), published once
//! a change is committed.

use std::sync::{Arc, RwLock};

use agora_core::AccountId;
use agora_core::coins::{Asset, Catalogue, Symbol};
use rusqlite::{Connection, Transaction};
use tokio::sync::oneshot;

use super::store::{self, TradeLeg};
use super::wire::{CoinsHistoryReply, OrderView, PriceEvent};
use crate::error::{ErrorCode, ServiceError};
use crate::owner::State;
use crate::replica::Event;
use crate::sqlite::StoreError;
use crate::subjects::coins as subject;

/// The catalogue as committed, read by request tasks.
pub type Shared = Arc<RwLock<Catalogue>>;

/// The store's flag: the catalogue was seeded.
pub const SEEDED: &str = "seeded";
/// The store's flag: the seed's units were deposited to the exchange's ledger account.
pub const STOCKED: &str = "stocked";

/// What the owner thread is asked to do.
#[derive(Debug)]
pub enum Command {
    Add {
        asset: Asset,
    },
    /// Stops new orders of the symbol (a removal begins).
    Delist {
        symbol: Symbol,
    },
    /// Ends a removal: drops the asset, or lists it again.
    FinishDelisting {
        symbol: Symbol,
        removed: bool,
    },
    Reprice {
        symbol: Symbol,
        price: u64,
    },
    /// Legs of trades, from the ledger's events up to `position` in `AGORA_EVENTS`.
    Log {
        legs: Vec<TradeLeg>,
        position: u64,
    },
    /// Where the trade log goes on reading the ledger's events.
    TradePosition,
    Lookup {
        user: AccountId,
        id: String,
    },
    History {
        user: Option<AccountId>,
        from: Option<u64>,
        to: Option<u64>,
        limit: usize,
    },
    Flag {
        key: &'static str,
    },
    SetFlag {
        key: &'static str,
    },
}

#[derive(Debug)]
pub enum Answer {
    Asset(Asset),
    Order(Option<Box<OrderView>>),
    History(CoinsHistoryReply),
    Flag(bool),
    /// A stream sequence.
    Position(u64),
    Done,
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
    /// The catalogue changed: publish it before answering.
    changed: bool,
}

/// The exchange's state, owned by its owner thread.
pub struct Coins {
    catalogue: Catalogue,
    shared: Shared,
}

impl std::fmt::Debug for Coins {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coins").finish_non_exhaustive()
    }
}

fn unavailable(error: &StoreError) -> ServiceError {
    ServiceError::new(ErrorCode::Unavailable, format!("coins store failed ({error}); retry"))
}

fn not_found(symbol: &Symbol) -> ServiceError {
    ServiceError::new(ErrorCode::NotFound, format!("no asset {symbol}"))
}

fn price_event(
    symbol: &Symbol,
    price: Option<u64>,
    previous: Option<u64>,
    event: &str,
    at_ms: u64,
) -> PriceEvent {
    PriceEvent { symbol: symbol.to_string(), price, previous, event: event.to_owned(), at_ms }
}

impl Coins {
    /// The state as the store has it (the catalogue is seeded by the first active instance,
    /// see [`State::promoted`]).
    pub fn load(conn: &Connection) -> Result<Self, StoreError> {
        let mut state = Self { catalogue: Catalogue::new(), shared: Shared::default() };
        state.reload(conn)?;
        state.publish();
        Ok(state)
    }

    /// The catalogue request tasks read.
    pub fn shared(&self) -> Shared {
        self.shared.clone()
    }

    fn reload(&mut self, conn: &Connection) -> Result<(), StoreError> {
        let mut catalogue = Catalogue::new();
        for asset in store::assets(conn)? {
            catalogue.restore(asset);
        }
        self.catalogue = catalogue;
        Ok(())
    }

    fn publish(&self) {
        *self.shared.write().unwrap_or_else(|p| p.into_inner()) = self.catalogue.clone();
    }

    fn execute(
        &mut self,
        tx: &Transaction<'_>,
        now: u64,
        command: Command,
        out: &mut Outbox,
    ) -> Result<Result<Answer, ServiceError>, StoreError> {
        Ok(match command {
            Command::Add { asset } => match self.catalogue.add(asset.clone()) {
                Ok(()) => {
                    store::put_asset(tx, &asset)?;
                    out.changed = true;
                    out.prices.push(price_event(
                        &asset.symbol,
                        Some(asset.price),
                        None,
                        "listed",
                        now,
                    ));
                    Ok(Answer::Asset(asset))
                }
                Err(error) => Err(error.into()),
            },
            Command::Delist { symbol } => match self.catalogue.delist(&symbol) {
                Ok(asset) => {
                    out.changed = true;
                    Ok(Answer::Asset(asset))
                }
                Err(agora_core::CoinsError::UnknownSymbol(_)) => Err(not_found(&symbol)),
                Err(error) => Err(error.into()),
            },
            Command::FinishDelisting { symbol, removed } => {
                out.changed = true;
                match self.catalogue.finish_delisting(&symbol, removed) {
                    Some(asset) => {
                        store::delete_asset(tx, &symbol)?;
                        out.prices.push(price_event(
                            &symbol,
                            None,
                            Some(asset.price),
                            "delisted",
                            now,
                        ));
                        Ok(Answer::Asset(asset))
                    }
                    None if removed => Err(ServiceError::new(
                        ErrorCode::Busy,
                        format!("the removal of {symbol} was interrupted; retry"),
                    )),
                    None => Ok(Answer::Done),
                }
            }
            Command::Reprice { symbol, price } => match self.catalogue.reprice(&symbol, price) {
                Ok((before, after)) => {
                    store::put_asset(tx, &after)?;
                    out.changed = true;
                    if before.price != after.price {
                        out.prices.push(price_event(
                            &symbol,
                            Some(after.price),
                            Some(before.price),
                            "price",
                            now,
                        ));
                    }
                    Ok(Answer::Asset(after))
                }
                Err(agora_core::CoinsError::UnknownSymbol(_)) => Err(not_found(&symbol)),
                Err(error) => Err(error.into()),
            },
            Command::Log { legs, position } => {
                store::log_legs(tx, &legs)?;
                store::set_trade_position(tx, position)?;
                Ok(Answer::Done)
            }
            Command::TradePosition => Ok(Answer::Position(store::trade_position(tx)?)),
            Command::Lookup { user, id } => {
                Ok(Answer::Order(store::find_trade(tx, user.as_str(), &id)?.map(Box::new)))
            }
            Command::History { user, from, to, limit } => {
                let user = user.as_ref().map(AccountId::as_str);
                let (orders, more) = store::history(tx, user, from, to, limit)?;
                Ok(Answer::History(CoinsHistoryReply { orders, more }))
            }
            Command::Flag { key } => Ok(Answer::Flag(store::flag(tx, key)?)),
            Command::SetFlag { key } => {
                store::set_flag(tx, key)?;
                Ok(Answer::Done)
            }
        })
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
        let answer = self.execute(tx, now_ms, command, out)?;
        out.answers.push((reply, answer));
        Ok(())
    }

    /// On the very first start the catalogue is seeded, in the log like every write (its
    /// units are deposited to the exchange's ledger account by the service, see `STOCKED`).
    fn promoted(&mut self, tx: &Transaction<'_>, _now_ms: u64) -> Result<(), StoreError> {
        if !store::flag(tx, SEEDED)? {
            for (asset, _units) in agora_core::coins::seed() {
                store::put_asset(tx, &asset)?;
            }
            store::set_flag(tx, SEEDED)?;
            self.reload(tx)?;
            self.publish();
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
                Some(Event::new(subject::prices(&event.symbol), payload.into()))
            })
            .collect()
    }

    fn rolled_back(&mut self, conn: &Connection, error: &StoreError, out: &mut Outbox) {
        // Removals under way end with the reload: their orders may go on.
        if let Err(error) = self.reload(conn) {
            tracing::error!(%error, "cannot reload the coins store");
        }
        out.changed = true;
        let failure = unavailable(error);
        out.answers.iter_mut().for_each(|(_, answer)| *answer = Err(failure.clone()));
        out.prices.clear();
    }

    async fn deliver(&mut self, _now_ms: u64, out: Outbox) {
        let Outbox { answers, prices: _, changed } = out;
        // Orders priced after an answer see the change it reports.
        if changed {
            self.publish();
        }
        for (reply, answer) in answers {
            reply.send(answer).ok();
        }
    }
}
