//! `agora bank ...`: deposit, withdraw, transfer, batches of operations from a file, two-phase
//! transfers (hold, post, void), balances (now or at a past time) and an account's history.

use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

use agora_nats::AgoraClient;
use agora_nats::bank::wire::{
    BalanceRequest, HistoryRequest, OperationKind, OperationRequest, TransfersRequest,
};
use agora_nats::ledger::wire::{ApplyReply, BalanceReply, OperationResult, PostingWire};
use anyhow::Context;
use clap::Subcommand;

use crate::print;

#[derive(Debug, Subcommand)]
pub enum BankCommand {
    /// Add money to an account.
    Deposit {
        account: String,
        /// Minor units (e.g. cents), a positive integer.
        amount: i64,
        /// Idempotency key: a retry with the same id is applied once.
        #[arg(long)]
        id: Option<String>,
    },
    /// Take money out of an account.
    Withdraw {
        account: String,
        amount: i64,
        #[arg(long)]
        id: Option<String>,
    },
    /// Show an account's balance: posted, held by pending transfers, available.
    Balance {
        account: String,
        /// An asset instead of money (BTC, TSLA, ...).
        #[arg(long)]
        asset: Option<String>,
        /// The balance as it was at this time: ms since the Unix epoch, or an RFC 3339 time
        /// (2026-12-05T04:55:45.123Z, as history prints it).
        #[arg(long, value_parser = crate::time_ms)]
        at_ms: Option<u64>,
    },
    /// Move money (or `--asset` units) between two accounts, all or nothing.
    Transfer {
        from: String,
        to: String,
        amount: i64,
        #[arg(long)]
        id: Option<String>,
    },
    /// Apply up to 8,190 operations from a JSON file (`-`: standard input): either
    /// `{"operations":[...]}` or a bare array of operations, as `agora.bank.transfers` takes.
    Transfers {
        #[arg(long)]
        file: PathBuf,
        /// Show each applied operation's balances after (at most 1,000 operations).
        #[arg(long)]
        detail: bool,
    },
    /// Hold money for a two-phase transfer until it is posted, voided, or times out.
    Hold {
        from: String,
        to: String,
        amount: i64,
        /// The hold's id: `post` and `void` name it.
        #[arg(long)]
        id: String,
        /// How long the hold lasts before the ledger releases it (1000 ms to 30 days): the
        /// operation's `timeout_ms` (not `--timeout-ms`, which is how long to wait for a reply).
        #[arg(long, default_value_t = 60_000)]
        hold_ms: u64,
        #[arg(long)]
        asset: Option<String>,
    },
    /// Move a held amount (all of it, or `--amount` of it: the rest is released).
    Post {
        pending_id: String,
        #[arg(long)]
        amount: Option<i64>,
        #[arg(long)]
        id: Option<String>,
    },
    /// Release a held amount.
    Void {
        pending_id: String,
        #[arg(long)]
        id: Option<String>,
    },
    /// An account's entries, newest first: operation, amount, balance after, id, time.
    History {
        account: String,
        #[arg(long)]
        asset: Option<String>,
        /// Entries at or after this time: ms since the Unix epoch, or an RFC 3339 time
        /// (2026-12-05T04:55:45.123Z).
        #[arg(long, value_parser = crate::time_ms)]
        from_ms: Option<u64>,
        /// Entries before this time (as `--from-ms`).
        #[arg(long, value_parser = crate::time_ms)]
        to_ms: Option<u64>,
        /// Entries older than this one (the last `seq` of the previous page).
        #[arg(long)]
        before: Option<u64>,
        /// 1-1000 (default 100).
        #[arg(long)]
        limit: Option<usize>,
    },
}

/// Reads a batch file: `{"operations":[...],"detail"?}` or a bare array of operations.
fn read_operations(file: &PathBuf) -> anyhow::Result<Vec<OperationRequest>> {
    let mut text = String::new();
    if file.as_os_str() == "-" {
        std::io::stdin().read_to_string(&mut text).context("reading standard input")?;
    } else {
        text =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    }
    let value: serde_json::Value = serde_json::from_str(&text).context("the file is not JSON")?;
    let operations = match value {
        serde_json::Value::Array(_) => value,
        serde_json::Value::Object(mut object) => {
            object.remove("operations").context("the file's object has no \"operations\"")?
        }
        _ => anyhow::bail!("the file holds neither an object nor an array of operations"),
    };
    serde_json::from_value(operations).context("an operation does not have the documented shape")
}

fn balance_text(reply: &BalanceReply) -> String {
    let asset = reply.asset.as_deref().map(|a| format!(" {a}")).unwrap_or_default();
    let at = reply.at_ms.map(|at| format!(" at {}", crate::utc(at))).unwrap_or_default();
    let mut text = format!("{}{asset}{at}: balance {}", reply.account, reply.balance);
    if reply.pending != 0 || reply.incoming != 0 {
        text += &format!(
            " (held {}, available {}, incoming {})",
            reply.pending, reply.available, reply.incoming
        );
    }
    text
}

fn results_text(reply: &ApplyReply) -> String {
    let mut lines = vec![format!("{} applied, {} failed", reply.applied, reply.failed)];
    for (index, result) in reply.results.iter().enumerate() {
        match result {
            OperationResult::Applied { postings: Some(postings) } => {
                lines.push(format!("  {index}: applied ({})", postings_text(postings)));
            }
            OperationResult::Applied { postings: None } => {}
            OperationResult::Failed { error } => {
                lines.push(format!("  {index}: {}: {}", error.code, error.message))
            }
        }
    }
    lines.join("\n")
}

/// Each posting of an applied operation: `alice pending_out 50 -> 300`.
fn postings_text(postings: &[PostingWire]) -> String {
    let each =
        postings.iter().map(|p| format!("{} {} {} -> {}", p.account, p.kind, p.amount, p.balance));
    each.collect::<Vec<_>>().join(", ")
}

/// One operation as a batch of one: `done` and its postings, or its error as the command's.
async fn one(
    client: &AgoraClient,
    operation: OperationRequest,
    done: String,
    json: bool,
) -> anyhow::Result<()> {
    let request = TransfersRequest { operations: vec![operation], detail: true };
    let reply = client.transfers(&request).await?;
    match reply.results.first() {
        Some(OperationResult::Failed { error }) => {
            Err(agora_nats::ClientError::Service(error.clone()).into())
        }
        Some(OperationResult::Applied { postings: Some(postings) }) => {
            print(
                json,
                serde_json::to_value(&reply)?,
                format!("{done}: {}", postings_text(postings)),
            );
            Ok(())
        }
        _ => {
            print(json, serde_json::to_value(&reply)?, results_text(&reply));
            Ok(())
        }
    }
}

pub async fn run(client: &AgoraClient, command: BankCommand, json: bool) -> anyhow::Result<()> {
    let print = |value: serde_json::Value, text: String| print(json, value, text);
    match command {
        BankCommand::Deposit { account, amount, id } => {
            let reply = client.deposit(&account, amount, id.as_deref()).await?;
            print(
                serde_json::to_value(&reply)?,
                format!("{}: balance {}", reply.account, reply.balance),
            );
        }
        BankCommand::Withdraw { account, amount, id } => {
            let reply = client.withdraw(&account, amount, id.as_deref()).await?;
            print(
                serde_json::to_value(&reply)?,
                format!("{}: balance {}", reply.account, reply.balance),
            );
        }
        BankCommand::Balance { account, asset, at_ms } => {
            let reply = client.balance_of(&BalanceRequest { account, asset, at_ms }).await?;
            print(serde_json::to_value(&reply)?, balance_text(&reply));
        }
        BankCommand::Transfer { from, to, amount, id } => {
            let reply = client.transfer(&from, &to, amount, id.as_deref()).await?;
            print(
                serde_json::to_value(&reply)?,
                format!(
                    "transferred {amount}: {} balance {}, {} balance {}",
                    reply.from.account, reply.from.balance, reply.to.account, reply.to.balance
                ),
            );
        }
        BankCommand::Transfers { file, detail } => {
            let operations = read_operations(&file)?;
            let reply = client.transfers(&TransfersRequest { operations, detail }).await?;
            print(serde_json::to_value(&reply)?, results_text(&reply));
        }
        BankCommand::Hold { from, to, amount, id, hold_ms, asset } => {
            let done = format!(
                "held {amount} as {id} until posted, voided or expired (in {})",
                humantime::format_duration(Duration::from_millis(hold_ms))
            );
            let operation = OperationRequest {
                op: OperationKind::Pending,
                from: Some(from),
                to: Some(to),
                amount: Some(amount),
                timeout_ms: Some(hold_ms),
                asset,
                id: Some(id),
                ..OperationRequest::default()
            };
            one(client, operation, done, json).await?;
        }
        BankCommand::Post { pending_id, amount, id } => {
            let done = match amount {
                Some(amount) => format!("posted {amount} of {pending_id}, the rest released"),
                None => format!("posted {pending_id}"),
            };
            let operation = OperationRequest {
                op: OperationKind::Post,
                pending_id: Some(pending_id),
                amount,
                id,
                ..OperationRequest::default()
            };
            one(client, operation, done, json).await?;
        }
        BankCommand::Void { pending_id, id } => {
            let done = format!("voided {pending_id}");
            let operation = OperationRequest {
                op: OperationKind::Void,
                pending_id: Some(pending_id),
                id,
                ..OperationRequest::default()
            };
            one(client, operation, done, json).await?;
        }
        BankCommand::History { account, asset, from_ms, to_ms, before, limit } => {
            let request = HistoryRequest { account, asset, from_ms, to_ms, before, limit };
            let reply = client.history(&request).await?;
            let mut lines = vec![format!("{} ({}):", reply.account, reply.asset)];
            for entry in &reply.entries {
                lines.push(format!(
                    "  #{} {} {:<12} {:>12} -> balance {} (held {}) {}",
                    entry.seq,
                    crate::utc(entry.at),
                    entry.kind,
                    entry.amount,
                    entry.balance,
                    entry.pending,
                    entry.id.as_deref().unwrap_or("-"),
                ));
            }
            if reply.entries.is_empty() {
                lines.push("  no entries".into());
            }
            if reply.more {
                let last = reply.entries.last().map(|e| e.seq).unwrap_or_default();
                lines.push(format!("  more: --before {last}"));
            }
            print(serde_json::to_value(&reply)?, lines.join("\n"));
        }
    }
    Ok(())
}
