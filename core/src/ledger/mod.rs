//! The ledger's rules.
//!
//! - [`book`]: the state machine every money (and asset) movement goes through: balances per
//!   account and asset (posted, pending), transfers, two-phase transfers (pending, post, void,
//!   expiry), linked chains that are all or nothing, and idempotent operation ids.
//! - [`commit`]: what a lease holder's batch commit (`agora.ledger.batch.commit`) must satisfy
//!   before it writes (the lock protocol: fencing tokens, no negative balances).

pub mod book;
pub mod commit;

pub use book::{
    Balances, Book, EntryKind, LedgerError, Operation, Outcome, PendingState, PendingTransfer,
    Posting, Request, Stored, apply_batch, expire,
};
pub use commit::{CommitError, Release, Write, check_commit};
