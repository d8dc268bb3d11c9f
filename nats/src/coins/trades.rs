//! The trade log, filled from the ledger: every leg of an order moves the exchange's account,
//! so the ledger's events of that account (kept once each in the stream `AGORA_EVENTS`) tell
//! every trade. The active instance reads them with an ordered consumer (no acknowledgements)
//! from the position its store records, and the owner logs a batch of legs and moves the
//! position in one commit, which the exchange's log replicates. Logging a leg again changes
//! nothing, so after any crash or failover the log catches up with exactly what the ledger did;
//! and an instance that is no longer the active one reads on its own consumer, taking nothing
//! from the active one's.

use std::time::Duration;

use agora_core::AccountId;
use agora_core::coins::{self, LegKind, Side, Symbol};
use async_nats::jetstream::{self, consumer};
use futures::StreamExt;

use super::Ctx;
use super::state::{Answer, Command};
use super::store::{TradeLeg, TradePart};
use crate::bank::wire::BankEvent;
use crate::subjects;

/// The trade log's consumers are named after this (one per instance and start: the name, a
/// dash and a unique id; a replacement the client makes after a gap adds `_<n>`). Also the
/// `consumer` label of its lag (`agora_jetstream_consumer_pending`).
pub const CONSUMER: &str = "coins-trades";
/// Events logged in one commit at most.
const BATCH_MAX: usize = 1_000;
/// How long a batch gathers events after its first one (the trade log trails the replies by
/// about this much under load).
const LINGER: Duration = Duration::from_millis(20);
/// Pause after a failure (the stream or the owner is away).
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// The leg of a trade an event of the exchange's account tells, if it is one.
pub fn leg(exchange: &AccountId, event: &BankEvent) -> Option<TradeLeg> {
    if event.account != exchange.as_str() {
        return None;
    }
    let (user, id, kind) = coins::parse_leg_id(event.id.as_deref()?)?;
    let amount = u64::try_from(event.amount).ok()?;
    let part = match (kind, event.asset.as_deref(), event.op.as_str()) {
        (LegKind::Pay, None, "transfer_in" | "transfer_out") => TradePart::Pay { total: amount },
        (LegKind::Units, Some(symbol), op) => {
            let side = match op {
                "transfer_out" => Side::Buy,
                "transfer_in" => Side::Sell,
                _ => return None,
            };
            TradePart::Units { symbol: Symbol::parse(symbol).ok()?, side, quantity: amount }
        }
        _ => return None,
    };
    Some(TradeLeg { user, id, at_ms: event.at, part })
}

/// Follows the exchange account's events until aborted.
pub(crate) async fn follow(ctx: std::sync::Arc<Ctx>, js: jetstream::Context) {
    let lag = crate::metrics::consumer_pending(subjects::replica::EVENTS_STREAM, CONSUMER);
    // The durable consumer an earlier version read with: its lag would only grow now.
    if let Ok(stream) = js.get_stream_no_info(subjects::replica::EVENTS_STREAM).await {
        stream.delete_consumer(CONSUMER).await.ok();
    }
    loop {
        if let Err(error) = follow_once(&ctx, &js, &lag).await {
            tracing::warn!(%error, "trade log: cannot read the ledger's events; retrying");
        }
        tokio::time::sleep(RETRY_AFTER).await;
    }
}

async fn follow_once(
    ctx: &Ctx,
    js: &jetstream::Context,
    lag: &prometheus_client::metrics::gauge::Gauge,
) -> anyhow::Result<()> {
    let Answer::Position(position) = ctx.call(Command::TradePosition).await? else {
        anyhow::bail!("the owner answered something else");
    };
    let stream = js.get_stream(subjects::replica::EVENTS_STREAM).await?;
    let last = stream.cached_info().state.last_sequence;
    let position = if position > last {
        // The stream was made again from nothing since: it is read from its start, and the
        // position follows what is read from it.
        tracing::warn!(
            position,
            last,
            "trade log: the ledger's event stream is behind its position"
        );
        0
    } else {
        position
    };
    let mut messages = stream
        .create_consumer(consumer::pull::OrderedConfig {
            name: Some(format!("{CONSUMER}-{}", nuid::next())),
            description: Some("agora-coins: the trade log".to_owned()),
            filter_subject: subjects::bank::events(&ctx.exchange_account),
            deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                start_sequence: position + 1,
            },
            ..Default::default()
        })
        .await?
        .messages()
        .await?;
    loop {
        let mut batch = vec![next(&mut messages).await?];
        let linger = tokio::time::sleep(LINGER);
        tokio::pin!(linger);
        while batch.len() < BATCH_MAX {
            tokio::select! {
                message = next(&mut messages) => batch.push(message?),
                () = &mut linger => break,
            }
        }
        let mut legs = Vec::new();
        let (mut position, mut pending) = (0, 0);
        for message in &batch {
            let info = message.info().map_err(|e| anyhow::anyhow!("{e}"))?;
            (position, pending) = (info.stream_sequence, info.pending);
            match serde_json::from_slice::<BankEvent>(&message.payload) {
                Ok(event) => legs.extend(leg(&ctx.exchange_account, &event)),
                Err(error) => tracing::warn!(%error, "trade log: an event that does not parse"),
            }
        }
        let Answer::Done = ctx.call(Command::Log { legs, position }).await? else {
            anyhow::bail!("the owner answered something else");
        };
        lag.set(i64::try_from(pending).unwrap_or(i64::MAX));
    }
}

async fn next(messages: &mut consumer::pull::Ordered) -> anyhow::Result<jetstream::Message> {
    match messages.next().await {
        Some(message) => message.map_err(|e| anyhow::anyhow!("{e}")),
        None => anyhow::bail!("the consumer ended"),
    }
}

#[cfg(test)]
mod tests;
