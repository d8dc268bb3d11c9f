//! The trade log, filled from the ledger: every leg of an order moves the exchange's account,
//! so the ledger's events of that account (kept once each in the stream `AGORA_EVENTS`) tell
//! every trade. A durable JetStream consumer reads them and the owner logs them; a batch is
//! acknowledged only once it is committed, and logging a leg again changes nothing, so after
//! any crash or failover the log catches up with exactly what the ledger did.

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

/// The durable consumer's name.
pub const CONSUMER: &str = "coins-trades";
/// Events read (and logged in one commit) at most at once.
const BATCH_MAX: usize = 1_000;
/// How long one fetch waits for events.
const FETCH_WAIT: Duration = Duration::from_secs(1);
/// Pause after a failure (the stream or the owner is away).
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// Redelivery of events not acknowledged in this time: after a crash between a commit and
/// its acknowledgement, the next instance gets them again this soon (logging twice is a no-op).
const ACK_WAIT: Duration = Duration::from_secs(5);

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
    loop {
        if let Err(error) = follow_once(&ctx, &js).await {
            tracing::warn!(%error, "trade log: cannot read the ledger's events; retrying");
        }
        tokio::time::sleep(RETRY_AFTER).await;
    }
}

async fn follow_once(ctx: &Ctx, js: &jetstream::Context) -> anyhow::Result<()> {
    let stream = js.get_stream(subjects::replica::EVENTS_STREAM).await?;
    let consumer: consumer::PullConsumer = stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some(CONSUMER.to_owned()),
            description: Some("agora-coins: the trade log".to_owned()),
            filter_subject: subjects::bank::events(&ctx.exchange_account),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: ACK_WAIT,
            ..Default::default()
        })
        .await?;
    loop {
        let mut batch =
            consumer.fetch().max_messages(BATCH_MAX).expires(FETCH_WAIT).messages().await?;
        let mut legs = Vec::new();
        let mut messages = Vec::new();
        while let Some(message) = batch.next().await {
            let message = message.map_err(|e| anyhow::anyhow!("{e}"))?;
            match serde_json::from_slice::<BankEvent>(&message.payload) {
                Ok(event) => legs.extend(leg(&ctx.exchange_account, &event)),
                Err(error) => tracing::warn!(%error, "trade log: an event that does not parse"),
            }
            messages.push(message);
        }
        if !legs.is_empty() {
            let Answer::Done = ctx.call(Command::Log { legs }).await? else {
                anyhow::bail!("the owner answered something else");
            };
        }
        // Each event on its own (acknowledging "all up to here" would also take events another
        // instance fetched and never logged).
        for message in messages {
            message.ack().await.map_err(|e| anyhow::anyhow!("{e}"))?;
        }
    }
}

#[cfg(test)]
mod tests;
