//! The ledger's state machine: every movement of money or of an asset goes through a [`Book`].
//!
//! ## Balances
//! Each account holds a balance per [`Asset`] ([`Balances`]): `posted` (what it owns),
//! `debits_pending` (held by its pending transfers out) and `credits_pending` (on their way in).
//! `available = posted - debits_pending` is what it may spend. Invariants, asserted on every
//! change: `0 <= debits_pending <= posted`, `credits_pending >= 0`, and
//! `posted + credits_pending` never overflows (so posting what is pending always fits).
//!
//! ## Operations
//! - `deposit` / `withdraw`: money (or units) entering or leaving the ledger;
//! - `transfer`: one asset from one account to another, at once;
//! - `pending`: a two-phase transfer's first phase: the amount is held (it counts against the
//!   payer's `available`) until it is `post`ed (whole or in part: the rest is released),
//!   `void`ed, or it expires at its timeout ([`expire`], called by the ledger itself). Each
//!   ends a pending transfer exactly once: the others then fail with
//!   [`LedgerError::PendingFinished`].
//!
//! ## Batches, chains and ids
//! [`apply_batch`] applies requests in order. Each is all or nothing on its own; a run of
//! requests flagged `linked` plus the first one after them that is not, is a *chain*: all of it
//! or none (a failing leg gets its own error, the others [`LedgerError::LinkedFailed`]). A request
//! may carry an operation id: an id recorded before for the same operation gets its recorded
//! result again (applied once), for another operation [`LedgerError::IdReused`]; the same id
//! twice in one batch is applied once. Refused requests are not recorded: their id stays free,
//! in the same batch too.

use std::collections::{BTreeSet, HashMap};
use std::fmt;

use crate::account::{AccountId, Amount, Asset, Balance, OperationId};

/// Shortest timeout of a pending transfer, in milliseconds.
pub const PENDING_TIMEOUT_MS_MIN: u64 = 1_000;
/// Longest timeout of a pending transfer: 30 days.
pub const PENDING_TIMEOUT_MS_MAX: u64 = 30 * 24 * 60 * 60 * 1000;

/// An account's holding of one asset.
pub type Key = (AccountId, Asset);

/// The balances of one account in one asset (see the module docs for the invariants).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Balances {
    pub posted: Balance,
    pub debits_pending: Balance,
    pub credits_pending: Balance,
}

impl Balances {
    /// What the account may spend: posted minus what its pending transfers hold.
    pub fn available(&self) -> Balance {
        self.posted - self.debits_pending
    }

    fn assert_valid(&self) {
        assert!(self.debits_pending >= 0 && self.credits_pending >= 0, "{self:?}");
        assert!(self.debits_pending <= self.posted, "pending debits beyond posted: {self:?}");
        assert!(self.posted.checked_add(self.credits_pending).is_some(), "{self:?}");
    }
}

/// One operation on the ledger.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Operation {
    Deposit {
        account: AccountId,
        asset: Asset,
        amount: Amount,
    },
    Withdraw {
        account: AccountId,
        asset: Asset,
        amount: Amount,
    },
    Transfer {
        from: AccountId,
        to: AccountId,
        asset: Asset,
        amount: Amount,
    },
    /// Holds `amount` of `from` for `to` until posted, voided or expired (`timeout_ms` after).
    Pending {
        from: AccountId,
        to: AccountId,
        asset: Asset,
        amount: Amount,
        timeout_ms: u64,
    },
    /// Moves a pending transfer's amount (or part of it: the rest is released).
    Post {
        pending: OperationId,
        amount: Option<Amount>,
    },
    /// Releases a pending transfer.
    Void {
        pending: OperationId,
    },
}

impl Operation {
    /// A transfer between two distinct accounts.
    pub fn transfer(
        from: AccountId,
        to: AccountId,
        asset: Asset,
        amount: Amount,
    ) -> Result<Self, LedgerError> {
        if from == to {
            return Err(LedgerError::SelfTransfer { account: from });
        }
        Ok(Self::Transfer { from, to, asset, amount })
    }

    /// A pending transfer between two distinct accounts, with a timeout in bounds.
    pub fn pending(
        from: AccountId,
        to: AccountId,
        asset: Asset,
        amount: Amount,
        timeout_ms: u64,
    ) -> Result<Self, LedgerError> {
        if from == to {
            return Err(LedgerError::SelfTransfer { account: from });
        }
        if !(PENDING_TIMEOUT_MS_MIN..=PENDING_TIMEOUT_MS_MAX).contains(&timeout_ms) {
            return Err(LedgerError::Timeout { timeout_ms });
        }
        Ok(Self::Pending { from, to, asset, amount, timeout_ms })
    }

    /// The balances this operation touches directly (post and void: those of their pending
    /// transfer, see [`Operation::pending_id`]).
    pub fn keys(&self) -> Vec<Key> {
        match self {
            Self::Deposit { account, asset, .. } | Self::Withdraw { account, asset, .. } => {
                vec![(account.clone(), asset.clone())]
            }
            Self::Transfer { from, to, asset, .. } | Self::Pending { from, to, asset, .. } => {
                vec![(from.clone(), asset.clone()), (to.clone(), asset.clone())]
            }
            Self::Post { .. } | Self::Void { .. } => Vec::new(),
        }
    }

    /// The pending transfer a post or void finishes.
    pub fn pending_id(&self) -> Option<&OperationId> {
        match self {
            Self::Post { pending, .. } | Self::Void { pending } => Some(pending),
            _ => None,
        }
    }

    /// The operation's name on the wire.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Deposit { .. } => "deposit",
            Self::Withdraw { .. } => "withdraw",
            Self::Transfer { .. } => "transfer",
            Self::Pending { .. } => "pending",
            Self::Post { .. } => "post",
            Self::Void { .. } => "void",
        }
    }
}

/// One request of a batch: an operation, its optional id, and whether the next one is linked
/// to it (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub id: Option<OperationId>,
    pub operation: Operation,
    pub linked: bool,
}

/// Where a pending transfer stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PendingState {
    Pending,
    /// Posted, with the amount that moved.
    Posted(Balance),
    Voided,
    Expired,
}

impl PendingState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Posted(_) => "posted",
            Self::Voided => "voided",
            Self::Expired => "expired",
        }
    }
}

/// A two-phase transfer, from its first phase on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PendingTransfer {
    pub from: AccountId,
    pub to: AccountId,
    pub asset: Asset,
    pub amount: Amount,
    pub expires_at_ms: u64,
    pub state: PendingState,
}

/// What happened to one balance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntryKind {
    Deposit,
    Withdraw,
    TransferIn,
    TransferOut,
    PendingIn,
    PendingOut,
    PostIn,
    PostOut,
    VoidIn,
    VoidOut,
    ExpireIn,
    ExpireOut,
    /// A balance written by a lease holder (`agora.ledger.set` / `batch.commit`).
    Set,
}

impl EntryKind {
    pub const ALL: [EntryKind; 13] = [
        Self::Deposit,
        Self::Withdraw,
        Self::TransferIn,
        Self::TransferOut,
        Self::PendingIn,
        Self::PendingOut,
        Self::PostIn,
        Self::PostOut,
        Self::VoidIn,
        Self::VoidOut,
        Self::ExpireIn,
        Self::ExpireOut,
        Self::Set,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deposit => "deposit",
            Self::Withdraw => "withdraw",
            Self::TransferIn => "transfer_in",
            Self::TransferOut => "transfer_out",
            Self::PendingIn => "pending_in",
            Self::PendingOut => "pending_out",
            Self::PostIn => "post_in",
            Self::PostOut => "post_out",
            Self::VoidIn => "void_in",
            Self::VoidOut => "void_out",
            Self::ExpireIn => "expire_in",
            Self::ExpireOut => "expire_out",
            Self::Set => "set",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == text)
    }
}

/// One balance change made by an operation: the account and asset, what happened, the amount
/// and the balances after.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Posting {
    pub account: AccountId,
    pub asset: Asset,
    pub kind: EntryKind,
    pub amount: Balance,
    pub balances: Balances,
}

/// Why an operation was refused. Nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    #[error("insufficient funds in {account} ({asset}): available {available}, needed {amount}")]
    InsufficientFunds { account: AccountId, asset: Asset, available: Balance, amount: Balance },
    #[error("balance of {account} ({asset}) would overflow")]
    Overflow { account: AccountId, asset: Asset },
    #[error("cannot transfer from {account} to itself")]
    SelfTransfer { account: AccountId },
    #[error(
        "timeout_ms must be {PENDING_TIMEOUT_MS_MIN}..={PENDING_TIMEOUT_MS_MAX}, got {timeout_ms}"
    )]
    Timeout { timeout_ms: u64 },
    #[error("a pending transfer needs an id (posts and voids name it)")]
    PendingNeedsId,
    #[error("no pending transfer {id}")]
    PendingNotFound { id: OperationId },
    #[error("pending transfer {id} is {} already", .state.as_str())]
    PendingFinished { id: OperationId, state: PendingState },
    #[error("cannot post {amount} of pending transfer {id}: it holds {pending}")]
    PostExceedsPending { id: OperationId, pending: Balance, amount: Balance },
    #[error("too many pending transfers ({max}); post or void some first")]
    PendingLimit { max: usize },
    #[error("id {id} was already used for a different operation")]
    IdReused { id: OperationId },
    #[error("linked chain failed: operation {index} of the batch was refused")]
    LinkedFailed { index: usize },
    #[error(
        "linked chain refused: operation {index} of the batch was applied before, by an earlier \
         request, but the rest of its chain was not; a chain applies whole or not at all"
    )]
    PartlyRecorded { index: usize },
    #[error("{what} was not loaded into the book (a ledger bug)")]
    NotLoaded { what: String },
}

enum Undo {
    Balance(Key, Option<Balances>),
    Pending(OperationId, Option<PendingTransfer>),
}

/// Balances and pending transfers the ledger holds in memory (a cache of its store, which
/// loads what a batch needs first), with an undo log for chains and the changes made since
/// [`Book::take_changes`].
#[derive(Default)]
pub struct Book {
    balances: HashMap<Key, Balances>,
    pendings: HashMap<OperationId, PendingTransfer>,
    /// Pending transfers still pending, by expiry.
    expiries: BTreeSet<(u64, OperationId)>,
    undo: Vec<Undo>,
    changed_balances: BTreeSet<Key>,
    changed_pendings: BTreeSet<OperationId>,
    pending_max: usize,
}

impl fmt::Debug for Book {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Book")
            .field("balances", &self.balances.len())
            .field("pendings", &self.pendings.len())
            .finish_non_exhaustive()
    }
}

/// The changes a batch made: balances and pending transfers as they are now.
pub type Changes = (Vec<(Key, Balances)>, Vec<(OperationId, PendingTransfer)>);

impl Book {
    /// An empty book that holds at most `pending_max` transfers pending at once.
    pub fn new(pending_max: usize) -> Self {
        Self { pending_max, ..Self::default() }
    }

    /// Loads a stored balance (the store's or a new account's zero).
    pub fn load_balances(&mut self, key: Key, balances: Balances) {
        balances.assert_valid();
        self.balances.insert(key, balances);
    }

    /// Loads a stored pending transfer.
    pub fn load_pending(&mut self, id: OperationId, transfer: PendingTransfer) {
        if transfer.state == PendingState::Pending {
            self.expiries.insert((transfer.expires_at_ms, id.clone()));
        }
        self.pendings.insert(id, transfer);
    }

    pub fn balances(&self, key: &Key) -> Option<Balances> {
        self.balances.get(key).copied()
    }

    pub fn pending(&self, id: &OperationId) -> Option<&PendingTransfer> {
        self.pendings.get(id)
    }

    /// Balances held in memory.
    pub fn balances_len(&self) -> usize {
        self.balances.len()
    }

    /// Transfers still pending.
    pub fn pending_len(&self) -> usize {
        self.expiries.len()
    }

    /// Finished transfers held (read back from the store when named).
    pub fn finished_len(&self) -> usize {
        self.pendings.len() - self.expiries.len()
    }

    /// Forgets the balances held (a cache bound), keeping the pending transfers. Only between
    /// batches (after [`Book::take_changes`]).
    pub fn forget_balances(&mut self) {
        assert!(self.changed_balances.is_empty(), "forget only committed balances");
        self.balances.clear();
    }

    /// Forgets the finished pending transfers held (they are read again when named). Only
    /// between batches.
    pub fn forget_finished(&mut self) {
        assert!(self.changed_pendings.is_empty(), "forget only committed transfers");
        self.pendings.retain(|_, transfer| transfer.state == PendingState::Pending);
    }

    /// Pending transfers due at `now_ms`, oldest first, at most `limit`.
    pub fn due(&self, now_ms: u64, limit: usize) -> Vec<OperationId> {
        self.expiries
            .iter()
            .take_while(|(at, _)| *at <= now_ms)
            .take(limit)
            .map(|(_, id)| id.clone())
            .collect()
    }

    /// The balances and pending transfers changed since the last call (to write to the store).
    pub fn take_changes(&mut self) -> Changes {
        self.undo.clear();
        // A change undone by a failed chain may have removed what it added: nothing to write.
        let balances = std::mem::take(&mut self.changed_balances)
            .into_iter()
            .filter_map(|key| self.balances.get(&key).map(|balances| (key.clone(), *balances)))
            .collect();
        let pendings = std::mem::take(&mut self.changed_pendings)
            .into_iter()
            .filter_map(|id| self.pendings.get(&id).map(|transfer| (id.clone(), transfer.clone())))
            .collect();
        (balances, pendings)
    }

    fn loaded(&self, key: &Key) -> Result<Balances, LedgerError> {
        self.balances(key)
            .ok_or_else(|| LedgerError::NotLoaded { what: format!("{} ({})", key.0, key.1) })
    }

    fn set_balances(&mut self, key: &Key, balances: Balances) {
        balances.assert_valid();
        let before = self.balances.insert(key.clone(), balances);
        self.undo.push(Undo::Balance(key.clone(), before));
        self.changed_balances.insert(key.clone());
    }

    fn set_pending(&mut self, id: &OperationId, transfer: PendingTransfer) {
        let before = self.pendings.insert(id.clone(), transfer.clone());
        if let Some(before) = &before {
            self.expiries.remove(&(before.expires_at_ms, id.clone()));
        }
        if transfer.state == PendingState::Pending {
            self.expiries.insert((transfer.expires_at_ms, id.clone()));
        }
        self.undo.push(Undo::Pending(id.clone(), before));
        self.changed_pendings.insert(id.clone());
    }

    /// Undoes every change made after `mark` (a length of the undo log).
    fn rollback(&mut self, mark: usize) {
        while self.undo.len() > mark {
            match self.undo.pop() {
                Some(Undo::Balance(key, before)) => match before {
                    Some(balances) => {
                        self.balances.insert(key, balances);
                    }
                    None => {
                        self.balances.remove(&key);
                    }
                },
                Some(Undo::Pending(id, before)) => {
                    if let Some(now) = self.pendings.remove(&id) {
                        self.expiries.remove(&(now.expires_at_ms, id.clone()));
                    }
                    if let Some(before) = before {
                        if before.state == PendingState::Pending {
                            self.expiries.insert((before.expires_at_ms, id.clone()));
                        }
                        self.pendings.insert(id, before);
                    }
                }
                None => break,
            }
        }
    }

    /// `key` credited with `amount` (checked against posted + credits pending).
    fn credit(&self, key: &Key, amount: Balance) -> Result<Balances, LedgerError> {
        let mut balances = self.loaded(key)?;
        let overflow = || LedgerError::Overflow { account: key.0.clone(), asset: key.1.clone() };
        balances
            .posted
            .checked_add(balances.credits_pending)
            .and_then(|sum| sum.checked_add(amount))
            .ok_or_else(overflow)?;
        balances.posted += amount;
        Ok(balances)
    }

    /// `key` with `amount` taken from what it has available.
    fn debit(&self, key: &Key, amount: Balance) -> Result<Balances, LedgerError> {
        let mut balances = self.loaded(key)?;
        if balances.available() < amount {
            return Err(LedgerError::InsufficientFunds {
                account: key.0.clone(),
                asset: key.1.clone(),
                available: balances.available(),
                amount,
            });
        }
        balances.posted -= amount;
        Ok(balances)
    }

    fn posting(&self, key: &Key, kind: EntryKind, amount: Balance) -> Posting {
        Posting {
            account: key.0.clone(),
            asset: key.1.clone(),
            kind,
            amount,
            balances: self.balances[key],
        }
    }

    /// Applies one operation at `now_ms`; on error nothing changes.
    pub fn apply(
        &mut self,
        id: Option<&OperationId>,
        operation: &Operation,
        now_ms: u64,
    ) -> Result<Vec<Posting>, LedgerError> {
        match operation {
            Operation::Deposit { account, asset, amount } => {
                let key = (account.clone(), asset.clone());
                let after = self.credit(&key, amount.get())?;
                self.set_balances(&key, after);
                Ok(vec![self.posting(&key, EntryKind::Deposit, amount.get())])
            }
            Operation::Withdraw { account, asset, amount } => {
                let key = (account.clone(), asset.clone());
                let after = self.debit(&key, amount.get())?;
                self.set_balances(&key, after);
                Ok(vec![self.posting(&key, EntryKind::Withdraw, amount.get())])
            }
            Operation::Transfer { from, to, asset, amount } => {
                if from == to {
                    return Err(LedgerError::SelfTransfer { account: from.clone() });
                }
                let (from, to) = ((from.clone(), asset.clone()), (to.clone(), asset.clone()));
                let debited = self.debit(&from, amount.get())?;
                let credited = self.credit(&to, amount.get())?;
                self.set_balances(&from, debited);
                self.set_balances(&to, credited);
                Ok(vec![
                    self.posting(&from, EntryKind::TransferOut, amount.get()),
                    self.posting(&to, EntryKind::TransferIn, amount.get()),
                ])
            }
            Operation::Pending { from, to, asset, amount, timeout_ms } => {
                let id = id.ok_or(LedgerError::PendingNeedsId)?;
                if from == to {
                    return Err(LedgerError::SelfTransfer { account: from.clone() });
                }
                if !(PENDING_TIMEOUT_MS_MIN..=PENDING_TIMEOUT_MS_MAX).contains(timeout_ms) {
                    return Err(LedgerError::Timeout { timeout_ms: *timeout_ms });
                }
                if self.pendings.contains_key(id) {
                    return Err(LedgerError::IdReused { id: id.clone() });
                }
                if self.expiries.len() >= self.pending_max {
                    return Err(LedgerError::PendingLimit { max: self.pending_max });
                }
                let transfer = PendingTransfer {
                    from: from.clone(),
                    to: to.clone(),
                    asset: asset.clone(),
                    amount: *amount,
                    expires_at_ms: now_ms.saturating_add(*timeout_ms),
                    state: PendingState::Pending,
                };
                let (from, to) = ((from.clone(), asset.clone()), (to.clone(), asset.clone()));
                let mut debited = self.debit(&from, amount.get())?;
                debited.posted += amount.get();
                debited.debits_pending += amount.get();
                let mut credited = self.credit(&to, amount.get())?;
                credited.posted -= amount.get();
                credited.credits_pending += amount.get();
                self.set_balances(&from, debited);
                self.set_balances(&to, credited);
                self.set_pending(id, transfer);
                Ok(vec![
                    self.posting(&from, EntryKind::PendingOut, amount.get()),
                    self.posting(&to, EntryKind::PendingIn, amount.get()),
                ])
            }
            Operation::Post { pending, amount } => {
                let transfer = self.open_pending(pending, now_ms)?;
                let posted = amount.map_or(transfer.amount.get(), Amount::get);
                if posted > transfer.amount.get() {
                    return Err(LedgerError::PostExceedsPending {
                        id: pending.clone(),
                        pending: transfer.amount.get(),
                        amount: posted,
                    });
                }
                let held = transfer.amount.get();
                let (from, to) = transfer.keys();
                let mut debited = self.loaded(&from)?;
                debited.debits_pending -= held;
                debited.posted -= posted;
                let mut credited = self.loaded(&to)?;
                credited.credits_pending -= held;
                credited.posted += posted;
                self.set_balances(&from, debited);
                self.set_balances(&to, credited);
                let state = PendingState::Posted(posted);
                self.set_pending(pending, PendingTransfer { state, ..transfer });
                Ok(vec![
                    self.posting(&from, EntryKind::PostOut, posted),
                    self.posting(&to, EntryKind::PostIn, posted),
                ])
            }
            Operation::Void { pending } => {
                let transfer = self.open_pending(pending, now_ms)?;
                Ok(self.release(pending, transfer, PendingState::Voided))
            }
        }
    }

    /// A pending transfer that may still be posted or voided at `now_ms`.
    fn open_pending(&self, id: &OperationId, now_ms: u64) -> Result<PendingTransfer, LedgerError> {
        let transfer = self
            .pendings
            .get(id)
            .ok_or_else(|| LedgerError::PendingNotFound { id: id.clone() })?
            .clone();
        let state = match transfer.state {
            PendingState::Pending if now_ms >= transfer.expires_at_ms => PendingState::Expired,
            state => state,
        };
        if state != PendingState::Pending {
            return Err(LedgerError::PendingFinished { id: id.clone(), state });
        }
        Ok(transfer)
    }

    /// Gives a pending transfer's amount back (void or expiry).
    fn release(
        &mut self,
        id: &OperationId,
        transfer: PendingTransfer,
        state: PendingState,
    ) -> Vec<Posting> {
        let held = transfer.amount.get();
        let (from, to) = transfer.keys();
        let (Ok(mut debited), Ok(mut credited)) = (self.loaded(&from), self.loaded(&to)) else {
            panic!("a pending transfer's balances are loaded with it");
        };
        debited.debits_pending -= held;
        credited.credits_pending -= held;
        self.set_balances(&from, debited);
        self.set_balances(&to, credited);
        self.set_pending(id, PendingTransfer { state, ..transfer });
        let (out, into) = match state {
            PendingState::Expired => (EntryKind::ExpireOut, EntryKind::ExpireIn),
            _ => (EntryKind::VoidOut, EntryKind::VoidIn),
        };
        vec![self.posting(&from, out, held), self.posting(&to, into, held)]
    }
}

impl PendingTransfer {
    /// The payer's and the payee's balances.
    pub fn keys(&self) -> (Key, Key) {
        ((self.from.clone(), self.asset.clone()), (self.to.clone(), self.asset.clone()))
    }
}

/// Expires pending transfer `id` if it is still pending and due at `now_ms`; `None` otherwise
/// (posted, voided or expired already, or not yet due). Its balances must be loaded.
pub fn expire(book: &mut Book, id: &OperationId, now_ms: u64) -> Option<Vec<Posting>> {
    let transfer = book.pendings.get(id)?.clone();
    if transfer.state != PendingState::Pending || now_ms < transfer.expires_at_ms {
        return None;
    }
    let postings = book.release(id, transfer, PendingState::Expired);
    book.undo.clear();
    Some(postings)
}

/// What became of one request of a batch. `R` is a recorded result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome<R> {
    /// Applied: write the postings, record the result under its id.
    Applied(Vec<Posting>),
    /// Refused; nothing changed (not recorded: the id may be used again).
    Refused(LedgerError),
    /// Its id was recorded before for this same operation: answer with the recorded result.
    Replay(R),
    /// The same id and operation as the request at this index: its answer.
    SameAs(usize),
}

/// A recorded id's operation and result, as the store keeps it.
pub type Stored<R> = (Operation, R);

/// Applies `requests` in order at `now_ms` (see the module docs). `recorded` holds what the
/// store has recorded for the batch's ids. A batch whose last request is `linked` (an open
/// chain) is refused by the caller before it gets here; if it does, its tail is a chain.
pub fn apply_batch<R: Clone>(
    book: &mut Book,
    requests: &[Request],
    now_ms: u64,
    recorded: &HashMap<OperationId, Stored<R>>,
) -> Vec<Outcome<R>> {
    let mut first_with_id: HashMap<&OperationId, usize> = HashMap::new();
    let mut outcomes: Vec<Outcome<R>> = Vec::with_capacity(requests.len());
    let mut start = 0;
    while start < requests.len() {
        let end =
            (start..requests.len()).find(|&i| !requests[i].linked).unwrap_or(requests.len() - 1);
        let mark = book.undo.len();
        let mut ids_here = Vec::new();
        let mut failed = None;
        for index in start..=end {
            let request = &requests[index];
            let outcome = match &request.id {
                Some(id) => match (recorded.get(id), first_with_id.get(id)) {
                    (Some((operation, result)), _) if *operation == request.operation => {
                        Outcome::Replay(result.clone())
                    }
                    (Some(_), _) => Outcome::Refused(LedgerError::IdReused { id: id.clone() }),
                    (None, Some(&first)) if requests[first].operation == request.operation => {
                        Outcome::SameAs(first)
                    }
                    (None, Some(_)) => Outcome::Refused(LedgerError::IdReused { id: id.clone() }),
                    (None, None) => {
                        let outcome = applied(book.apply(Some(id), &request.operation, now_ms));
                        if matches!(outcome, Outcome::Applied(_)) {
                            first_with_id.insert(id, index);
                            ids_here.push(id);
                        }
                        outcome
                    }
                },
                None => applied(book.apply(None, &request.operation, now_ms)),
            };
            let refused = matches!(outcome, Outcome::Refused(_));
            outcomes.push(outcome);
            if refused && end > start {
                failed = Some(index);
                break;
            }
        }
        // Legs applied by an earlier request (from a record) or an earlier chain of this batch.
        let earlier = |outcome: &Outcome<R>| match outcome {
            Outcome::Replay(_) => true,
            Outcome::SameAs(first) => *first < start,
            _ => false,
        };
        let failure = match failed {
            Some(failed) => Some((failed, None)),
            // A chain partly applied before: what it would add now is not applied either.
            None if end > start
                && outcomes[start..].iter().any(earlier)
                && !outcomes[start..].iter().all(earlier) =>
            {
                let index = (start..=end).find(|&i| earlier(&outcomes[i])).unwrap_or(start);
                Some((index, Some(LedgerError::PartlyRecorded { index })))
            }
            None => None,
        };
        if let Some((failed, reason)) = failure {
            // The failing leg keeps its own error; the legs applied now are undone (those
            // applied earlier stay so, and are answered as such).
            let own = match reason {
                Some(_) => outcomes[failed].clone(),
                None => outcomes.pop().expect("the failing leg's outcome"),
            };
            book.rollback(mark);
            for id in ids_here {
                first_with_id.remove(id);
            }
            for index in start..end + 1 {
                let outcome = match outcomes.get(index) {
                    _ if index == failed => own.clone(),
                    Some(outcome) if earlier(outcome) => outcome.clone(),
                    _ => Outcome::Refused(
                        reason.clone().unwrap_or(LedgerError::LinkedFailed { index: failed }),
                    ),
                };
                if index < outcomes.len() {
                    outcomes[index] = outcome;
                } else {
                    outcomes.push(outcome);
                }
            }
        }
        start = end + 1;
    }
    outcomes
}

fn applied<R>(result: Result<Vec<Posting>, LedgerError>) -> Outcome<R> {
    match result {
        Ok(postings) => Outcome::Applied(postings),
        Err(error) => Outcome::Refused(error),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    fn acct(name: &str) -> AccountId {
        AccountId::parse(name).expect("valid")
    }

    fn op_id(text: &str) -> OperationId {
        OperationId::parse(text).expect("valid")
    }

    fn amount(units: i64) -> Amount {
        Amount::parse(units).expect("positive")
    }

    fn money() -> Asset {
        Asset::money()
    }

    fn btc() -> Asset {
        Asset::parse("BTC").expect("symbol")
    }

    fn book(entries: &[(&str, Asset, Balance)]) -> Book {
        let mut book = Book::new(100);
        for (name, asset, posted) in entries {
            book.load_balances(
                (acct(name), asset.clone()),
                Balances { posted: *posted, ..Balances::default() },
            );
        }
        book
    }

    fn request(id: Option<&str>, operation: Operation, linked: bool) -> Request {
        Request { id: id.map(op_id), operation, linked }
    }

    fn transfer(from: &str, to: &str, asset: Asset, units: i64) -> Operation {
        Operation::transfer(acct(from), acct(to), asset, amount(units)).expect("distinct")
    }

    fn posted(book: &Book, name: &str, asset: Asset) -> Balance {
        book.balances(&(acct(name), asset)).expect("loaded").posted
    }

    type Recorded = HashMap<OperationId, Stored<()>>;

    #[test]
    fn deposit_withdraw_and_transfer_move_one_asset_each() {
        let mut book =
            book(&[("a", money(), 0), ("b", money(), 10), ("a", btc(), 3), ("b", btc(), 0)]);
        let deposit =
            Operation::Deposit { account: acct("a"), asset: money(), amount: amount(500) };
        let postings = book.apply(None, &deposit, 0).expect("deposit");
        assert_eq!(postings[0].kind, EntryKind::Deposit);
        assert_eq!(postings[0].balances.posted, 500);
        let postings = book.apply(None, &transfer("a", "b", btc(), 2), 0).expect("units");
        assert_eq!((postings[0].kind, postings[0].balances.posted), (EntryKind::TransferOut, 1));
        assert_eq!((postings[1].kind, postings[1].balances.posted), (EntryKind::TransferIn, 2));
        assert_eq!(posted(&book, "a", money()), 500, "a transfer of BTC leaves money alone");
        let refused = book.apply(None, &transfer("a", "b", btc(), 2), 0);
        assert!(matches!(refused, Err(LedgerError::InsufficientFunds { available: 1, .. })));
        let withdraw =
            Operation::Withdraw { account: acct("b"), asset: money(), amount: amount(11) };
        assert!(matches!(
            book.apply(None, &withdraw, 0),
            Err(LedgerError::InsufficientFunds { .. })
        ));
        let (balances, _) = book.take_changes();
        assert_eq!(balances.len(), 3, "a money, a btc, b btc");
    }

    #[test]
    fn overflow_and_self_transfers_are_refused_and_change_nothing() {
        let mut book = book(&[("a", money(), 100), ("b", money(), i64::MAX - 5)]);
        assert_eq!(
            book.apply(None, &transfer("a", "b", money(), 6), 0),
            Err(LedgerError::Overflow { account: acct("b"), asset: money() })
        );
        let forged = Operation::Transfer {
            from: acct("a"),
            to: acct("a"),
            asset: money(),
            amount: amount(1),
        };
        assert!(matches!(book.apply(None, &forged, 0), Err(LedgerError::SelfTransfer { .. })));
        assert!(Operation::transfer(acct("a"), acct("a"), money(), amount(1)).is_err());
        // A pending credit counts towards the overflow bound too.
        let hold = Operation::pending(acct("a"), acct("b"), money(), amount(5), 10_000).unwrap();
        book.apply(Some(&op_id("h")), &hold, 0).expect("fits exactly");
        let deposit = Operation::Deposit { account: acct("b"), asset: money(), amount: amount(1) };
        assert!(matches!(book.apply(None, &deposit, 0), Err(LedgerError::Overflow { .. })));
        assert_eq!(posted(&book, "a", money()), 100);
    }

    #[test]
    fn two_phase_transfers_hold_then_post_void_or_expire_exactly_once() {
        let mut book = book(&[("a", money(), 100), ("b", money(), 0)]);
        let hold = |units, timeout| {
            Operation::pending(acct("a"), acct("b"), money(), amount(units), timeout).unwrap()
        };
        assert_eq!(
            Operation::pending(acct("a"), acct("b"), money(), amount(1), 0),
            Err(LedgerError::Timeout { timeout_ms: 0 })
        );
        assert!(Operation::pending(acct("a"), acct("b"), money(), amount(1), u64::MAX).is_err());
        assert_eq!(book.apply(None, &hold(1, 5_000), 0), Err(LedgerError::PendingNeedsId));
        book.apply(Some(&op_id("p1")), &hold(60, 5_000), 0).expect("held");
        let a = book.balances(&(acct("a"), money())).unwrap();
        assert_eq!((a.posted, a.debits_pending, a.available()), (100, 60, 40));
        let b = book.balances(&(acct("b"), money())).unwrap();
        assert_eq!((b.posted, b.credits_pending, b.available()), (0, 60, 0));
        // Held money cannot be spent twice.
        assert!(matches!(
            book.apply(Some(&op_id("p2")), &hold(41, 5_000), 0),
            Err(LedgerError::InsufficientFunds { available: 40, .. })
        ));
        assert!(matches!(
            book.apply(Some(&op_id("p1")), &hold(1, 5_000), 0),
            Err(LedgerError::IdReused { .. })
        ));
        let post = |units: Option<i64>| Operation::Post {
            pending: op_id("p1"),
            amount: units.map(amount),
        };
        assert!(matches!(
            book.apply(None, &post(Some(61)), 10),
            Err(LedgerError::PostExceedsPending { pending: 60, amount: 61, .. })
        ));
        let postings = book.apply(None, &post(Some(25)), 10).expect("partial post");
        assert_eq!(postings[0].kind, EntryKind::PostOut);
        assert_eq!(
            postings[0].balances,
            Balances { posted: 75, debits_pending: 0, credits_pending: 0 }
        );
        assert_eq!(
            postings[1].balances,
            Balances { posted: 25, debits_pending: 0, credits_pending: 0 }
        );
        for again in [post(None), Operation::Void { pending: op_id("p1") }] {
            assert_eq!(
                book.apply(None, &again, 20),
                Err(LedgerError::PendingFinished {
                    id: op_id("p1"),
                    state: PendingState::Posted(25)
                })
            );
        }
        // Voided: released; then neither posted nor expired.
        book.apply(Some(&op_id("p3")), &hold(10, 5_000), 100).expect("held");
        book.apply(None, &Operation::Void { pending: op_id("p3") }, 200).expect("voided");
        assert!(matches!(
            book.apply(None, &Operation::Post { pending: op_id("p3"), amount: None }, 300),
            Err(LedgerError::PendingFinished { state: PendingState::Voided, .. })
        ));
        assert_eq!(expire(&mut book, &op_id("p3"), 10_000), None);
        // Expired by the ledger once it is due, and only then, and once.
        book.apply(Some(&op_id("p4")), &hold(30, 1_000), 1_000).expect("held");
        assert_eq!(book.due(1_999, 10), Vec::<OperationId>::new());
        assert_eq!(expire(&mut book, &op_id("p4"), 1_999), None, "not yet due");
        assert!(
            matches!(
                book.apply(None, &Operation::Post { pending: op_id("p4"), amount: None }, 2_000),
                Err(LedgerError::PendingFinished { state: PendingState::Expired, .. })
            ),
            "a due transfer cannot be posted, even before the sweep"
        );
        assert_eq!(book.due(2_000, 10), vec![op_id("p4")]);
        let postings = expire(&mut book, &op_id("p4"), 2_000).expect("expired");
        assert_eq!(postings[0].kind, EntryKind::ExpireOut);
        assert_eq!(postings[0].balances.available(), 75);
        assert_eq!(expire(&mut book, &op_id("p4"), 3_000), None, "exactly once");
        assert!(book.due(u64::MAX, 10).is_empty());
        assert_eq!(
            book.apply(None, &Operation::Void { pending: op_id("nope") }, 0),
            Err(LedgerError::PendingNotFound { id: op_id("nope") })
        );
    }

    #[test]
    fn a_linked_chain_is_all_or_nothing_with_a_code_per_leg() {
        let mut book =
            book(&[("a", money(), 10), ("b", money(), 0), ("b", btc(), 5), ("a", btc(), 0)]);
        let requests = [
            request(Some("buy-money"), transfer("a", "b", money(), 10), true),
            request(Some("buy-units"), transfer("b", "a", btc(), 6), false), // only 5
            request(None, transfer("a", "b", money(), 1), false),            // alone: applies
        ];
        let outcomes = apply_batch(&mut book, &requests, 0, &Recorded::new());
        assert_eq!(outcomes[0], Outcome::Refused(LedgerError::LinkedFailed { index: 1 }));
        assert!(matches!(outcomes[1], Outcome::Refused(LedgerError::InsufficientFunds { .. })));
        assert!(matches!(outcomes[2], Outcome::Applied(_)));
        assert_eq!(posted(&book, "a", money()), 9, "the chain's first leg was undone");
        assert_eq!(posted(&book, "b", btc()), 5);
        // The ids of a failed chain were not taken: the same chain, funded, goes through.
        let requests = [
            request(Some("buy-money"), transfer("a", "b", money(), 9), true),
            request(Some("buy-units"), transfer("b", "a", btc(), 5), false),
        ];
        let outcomes = apply_batch(&mut book, &requests, 0, &Recorded::new());
        assert!(outcomes.iter().all(|o| matches!(o, Outcome::Applied(_))), "{outcomes:?}");
        assert_eq!((posted(&book, "a", btc()), posted(&book, "b", money())), (5, 10));
    }

    #[test]
    fn ids_make_a_batch_idempotent_whatever_the_order() {
        let deposit = Operation::Deposit { account: acct("a"), asset: money(), amount: amount(5) };
        let other = Operation::Deposit { account: acct("a"), asset: money(), amount: amount(6) };
        let withdraw =
            Operation::Withdraw { account: acct("a"), asset: money(), amount: amount(100) };
        let recorded: HashMap<OperationId, Stored<&str>> = HashMap::from([
            (op_id("one"), (deposit.clone(), "first")),
            (op_id("two"), (deposit.clone(), "second")),
        ]);
        let requests = [
            request(Some("one"), deposit.clone(), false), // recorded, same: replayed
            request(Some("two"), other.clone(), false),   // recorded, another: refused
            request(Some("four"), deposit.clone(), false), // new: applied
            request(Some("four"), deposit.clone(), false), // again: the first's answer
            request(Some("four"), other.clone(), false),  // same id, another operation
            request(None, deposit.clone(), false),        // no id: applied every time
            request(Some("five"), withdraw, false),       // refused by the rules
        ];
        let mut book = book(&[("a", money(), 0)]);
        let outcomes = apply_batch(&mut book, &requests, 0, &recorded);
        assert_eq!(outcomes[0], Outcome::Replay("first"));
        assert_eq!(outcomes[1], Outcome::Refused(LedgerError::IdReused { id: op_id("two") }));
        assert!(matches!(&outcomes[2], Outcome::Applied(p) if p[0].balances.posted == 5));
        assert_eq!(outcomes[3], Outcome::SameAs(2));
        assert_eq!(outcomes[4], Outcome::Refused(LedgerError::IdReused { id: op_id("four") }));
        assert!(matches!(&outcomes[5], Outcome::Applied(p) if p[0].balances.posted == 10));
        assert!(matches!(outcomes[6], Outcome::Refused(LedgerError::InsufficientFunds { .. })));
        assert_eq!(posted(&book, "a", money()), 10, "exactly two deposits");
    }

    #[test]
    fn every_entry_kind_has_one_name() {
        for kind in EntryKind::ALL {
            assert_eq!(EntryKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(EntryKind::parse("steal"), None);
    }

    // ---------------------------------------------------------------------------------------
    // A model of the ledger, written the plain way (copy the state, apply, keep or drop the
    // copy), and random histories replayed against both.
    // ---------------------------------------------------------------------------------------

    #[derive(Debug, Clone, Default, PartialEq)]
    struct Model {
        balances: BTreeMap<Key, (i64, i64, i64)>,
        /// id -> (from, to, asset, amount, expires, state: 0 pending 1 posted 2 voided 3 expired)
        pendings: BTreeMap<OperationId, (Key, Key, i64, u64, u8)>,
        recorded: BTreeMap<OperationId, Operation>,
        deposited: BTreeMap<Asset, i128>,
    }

    impl Model {
        fn get(&self, key: &Key) -> (i64, i64, i64) {
            self.balances.get(key).copied().unwrap_or_default()
        }

        fn apply(&mut self, id: Option<&OperationId>, op: &Operation, now: u64) -> bool {
            let fits = |(p, _, c): (i64, i64, i64), add: i64| {
                (p as i128 + c as i128 + add as i128) <= i64::MAX as i128
            };
            match op {
                Operation::Deposit { account, asset, amount } => {
                    let key = (account.clone(), asset.clone());
                    let b = self.get(&key);
                    if !fits(b, amount.get()) {
                        return false;
                    }
                    self.balances.insert(key, (b.0 + amount.get(), b.1, b.2));
                    *self.deposited.entry(asset.clone()).or_default() += amount.get() as i128;
                }
                Operation::Withdraw { account, asset, amount } => {
                    let key = (account.clone(), asset.clone());
                    let b = self.get(&key);
                    if b.0 - b.1 < amount.get() {
                        return false;
                    }
                    self.balances.insert(key, (b.0 - amount.get(), b.1, b.2));
                    *self.deposited.entry(asset.clone()).or_default() -= amount.get() as i128;
                }
                Operation::Transfer { from, to, asset, amount }
                | Operation::Pending { from, to, asset, amount, .. } => {
                    let (fk, tk) = ((from.clone(), asset.clone()), (to.clone(), asset.clone()));
                    let (f, t) = (self.get(&fk), self.get(&tk));
                    if from == to || f.0 - f.1 < amount.get() || !fits(t, amount.get()) {
                        return false;
                    }
                    let a = amount.get();
                    if let Operation::Pending { timeout_ms, .. } = op {
                        let Some(id) = id else { return false };
                        if self.pendings.contains_key(id) {
                            return false;
                        }
                        self.balances.insert(fk.clone(), (f.0, f.1 + a, f.2));
                        self.balances.insert(tk.clone(), (t.0, t.1, t.2 + a));
                        self.pendings.insert(id.clone(), (fk, tk, a, now + timeout_ms, 0));
                    } else {
                        self.balances.insert(fk, (f.0 - a, f.1, f.2));
                        self.balances.insert(tk, (t.0 + a, t.1, t.2));
                    }
                }
                Operation::Post { pending, .. } | Operation::Void { pending } => {
                    let amount = match op {
                        Operation::Post { amount, .. } => Some(*amount),
                        _ => None,
                    };
                    let Some((fk, tk, held, expires, state)) = self.pendings.get(pending).cloned()
                    else {
                        return false;
                    };
                    if state != 0 || now >= expires {
                        return false;
                    }
                    let moved = match amount {
                        Some(Some(units)) if units.get() > held => return false,
                        Some(Some(units)) => units.get(),
                        Some(None) => held,
                        None => 0,
                    };
                    let (f, t) = (self.get(&fk), self.get(&tk));
                    self.balances.insert(fk.clone(), (f.0 - moved, f.1 - held, f.2));
                    self.balances.insert(tk.clone(), (t.0 + moved, t.1, t.2 - held));
                    let state = if amount.is_some() { 1 } else { 2 };
                    self.pendings.insert(pending.clone(), (fk, tk, held, expires, state));
                }
            }
            true
        }

        /// A batch: chains on a copy. Returns which requests applied (or replayed).
        fn batch(&mut self, requests: &[Request], now: u64) -> Vec<bool> {
            let mut ok = Vec::new();
            let mut start = 0;
            while start < requests.len() {
                let end = (start..requests.len())
                    .find(|&i| !requests[i].linked)
                    .unwrap_or(requests.len() - 1);
                let before = self.clone();
                let mut chain = Vec::new();
                let mut replays = Vec::new();
                for request in &requests[start..=end] {
                    // Applied before this chain (by an earlier batch or chain).
                    let replay = request.id.as_ref().and_then(|id| before.recorded.get(id))
                        == Some(&request.operation);
                    replays.push(replay);
                    let applied = match &request.id {
                        Some(id) => match self.recorded.get(id) {
                            Some(op) => *op == request.operation,
                            None => {
                                let applied = self.apply(Some(id), &request.operation, now);
                                if applied {
                                    self.recorded.insert(id.clone(), request.operation.clone());
                                }
                                applied
                            }
                        },
                        None => self.apply(None, &request.operation, now),
                    };
                    chain.push(applied);
                    if !applied {
                        break;
                    }
                }
                let partly = replays.iter().any(|r| *r) && !replays.iter().all(|r| *r);
                if chain.iter().all(|a| *a) && !(partly && end > start) {
                    ok.extend(chain);
                } else {
                    // A leg answered from its record was applied before, and stays so.
                    *self = before;
                    replays.resize(end + 1 - start, false);
                    ok.extend(replays);
                }
                start = end + 1;
            }
            ok
        }

        fn expire_due(&mut self, now: u64) -> usize {
            let due: Vec<OperationId> = self
                .pendings
                .iter()
                .filter(|(_, p)| p.4 == 0 && p.3 <= now)
                .map(|(id, _)| id.clone())
                .collect();
            for id in &due {
                let (fk, tk, held, expires, _) = self.pendings[id].clone();
                let (f, t) = (self.get(&fk), self.get(&tk));
                self.balances.insert(fk.clone(), (f.0, f.1 - held, f.2));
                self.balances.insert(tk.clone(), (t.0, t.1, t.2 - held));
                self.pendings.insert(id.clone(), (fk, tk, held, expires, 3));
            }
            due.len()
        }
    }

    const NAMES: [&str; 4] = ["a", "b", "c", "d"];

    fn operation() -> impl Strategy<Value = Operation> {
        let key = (0..4usize, prop::bool::ANY);
        let asset = |btc_: bool| if btc_ { btc() } else { money() };
        let units = prop_oneof![1i64..50, Just(i64::MAX - 3), 1i64..5];
        prop_oneof![
            (key.clone(), units.clone()).prop_map(move |((a, x), u)| Operation::Deposit {
                account: acct(NAMES[a]),
                asset: asset(x),
                amount: amount(u)
            }),
            (key.clone(), units.clone()).prop_map(move |((a, x), u)| Operation::Withdraw {
                account: acct(NAMES[a]),
                asset: asset(x),
                amount: amount(u)
            }),
            (key.clone(), 0..4usize, units.clone()).prop_map(move |((a, x), b, u)| {
                Operation::Transfer {
                    from: acct(NAMES[a]),
                    to: acct(NAMES[b]),
                    asset: asset(x),
                    amount: amount(u),
                }
            }),
            (key, 0..4usize, units, 1_000u64..5_000).prop_map(move |((a, x), b, u, t)| {
                Operation::Pending {
                    from: acct(NAMES[a]),
                    to: acct(NAMES[b]),
                    asset: asset(x),
                    amount: amount(u),
                    timeout_ms: t,
                }
            }),
            (0..8u8, prop::option::of(1i64..60)).prop_map(|(p, u)| Operation::Post {
                pending: op_id(&format!("id{p}")),
                amount: u.map(amount)
            }),
            (0..8u8).prop_map(|p| Operation::Void { pending: op_id(&format!("id{p}")) }),
        ]
    }

    fn batch() -> impl Strategy<Value = (Vec<Request>, u64)> {
        let request = (prop::option::of(0..8u8), operation(), prop::bool::weighted(0.3)).prop_map(
            |(id, operation, linked)| Request {
                id: id.map(|i| op_id(&format!("id{i}"))),
                operation,
                linked,
            },
        );
        (prop::collection::vec(request, 1..8), 0u64..3_000).prop_map(|(mut requests, dt)| {
            if let Some(last) = requests.last_mut() {
                last.linked = false;
            }
            (requests, dt)
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

        /// Random histories of batches (chains, ids, two-phase transfers, expiry as time
        /// passes) give the same balances, the same pending states and the same applied
        /// requests as the model; money and units are conserved per asset.
        #[test]
        fn random_histories_agree_with_the_model(batches in prop::collection::vec(batch(), 1..25)) {
            let mut book = Book::new(1_000);
            let mut model = Model::default();
            let mut recorded: HashMap<OperationId, Stored<()>> = HashMap::new();
            for name in NAMES {
                for asset in [money(), btc()] {
                    book.load_balances((acct(name), asset), Balances::default());
                }
            }
            let mut now = 0u64;
            for (requests, dt) in batches {
                now += dt;
                for id in book.due(now, 100) {
                    prop_assert!(expire(&mut book, &id, now).is_some());
                }
                book.take_changes();
                model.expire_due(now);
                let outcomes = apply_batch(&mut book, &requests, now, &recorded);
                let expected = model.batch(&requests, now);
                let got: Vec<bool> = outcomes
                    .iter()
                    .map(|o| match o {
                        Outcome::Applied(_) | Outcome::Replay(_) => true,
                        Outcome::SameAs(first) => matches!(outcomes[*first], Outcome::Applied(_) | Outcome::Replay(_)),
                        Outcome::Refused(_) => false,
                    })
                    .collect();
                prop_assert_eq!(&got, &expected, "requests {:?} outcomes {:?}", requests, outcomes);
                for (request, outcome) in requests.iter().zip(&outcomes) {
                    if let (Some(id), Outcome::Applied(_)) = (&request.id, outcome) {
                        recorded.insert(id.clone(), (request.operation.clone(), ()));
                    }
                }
                book.take_changes();
                for name in NAMES {
                    for asset in [money(), btc()] {
                        let key = (acct(name), asset);
                        let b = book.balances(&key).expect("loaded");
                        prop_assert_eq!((b.posted, b.debits_pending, b.credits_pending), model.get(&key));
                    }
                }
                for (id, (_, _, _, _, state)) in &model.pendings {
                    let transfer = book.pending(id).expect("known");
                    let kind = match transfer.state {
                        PendingState::Pending => 0, PendingState::Posted(_) => 1,
                        PendingState::Voided => 2, PendingState::Expired => 3,
                    };
                    prop_assert_eq!(kind, *state);
                }
                for asset in [money(), btc()] {
                    let keys = NAMES.iter().map(|n| book.balances(&(acct(n), asset.clone())).unwrap());
                    let (posted, debits, credits) = keys.fold((0i128, 0i128, 0i128), |s, b| {
                        (s.0 + b.posted as i128, s.1 + b.debits_pending as i128, s.2 + b.credits_pending as i128)
                    });
                    prop_assert_eq!(posted, model.deposited.get(&asset).copied().unwrap_or(0), "conserved");
                    prop_assert_eq!(debits, credits, "every pending debit has its credit");
                }
            }
        }
    }
}
