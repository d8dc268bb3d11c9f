//! The bank's money rules, applied to a batch of locked balances.
//!
//! A bank instance locks every account a batch touches, loads their balances into a [`Book`],
//! applies each [`Operation`] in arrival order and commits the changed balances in one ledger
//! transaction. Each operation is all-or-nothing on its own: one that fails (insufficient funds,
//! overflow) leaves the book exactly as it was, and the others in the batch go on.
//!
//! Invariants asserted here: a balance never goes below zero, arithmetic never wraps, and a
//! transfer leaves the sum of the balances it touches unchanged.
//!
//! ## Idempotency
//! An operation may carry a client-chosen [`OperationId`]. [`apply_batch`] decides, per
//! operation of a batch, from what the ledger has recorded for those ids: a recorded id with
//! the same operation gets its recorded reply again (applied once, answered the same, byte for
//! byte); an id recorded, or already taken, for another operation is refused; the same id twice
//! in one batch is applied once (the second gets the first's answer) or, for another operation,
//! refused. Everything else is applied to the [`Book`].

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::account::{AccountId, Amount, Balance, OperationId};

/// One client operation that changes money.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operation {
    Deposit { account: AccountId, amount: Amount },
    Withdraw { account: AccountId, amount: Amount },
    Transfer { from: AccountId, to: AccountId, amount: Amount },
}

impl Operation {
    /// A transfer between two distinct accounts.
    pub fn transfer(from: AccountId, to: AccountId, amount: Amount) -> Result<Self, BankError> {
        if from == to {
            return Err(BankError::SelfTransfer { account: from });
        }
        Ok(Self::Transfer { from, to, amount })
    }

    /// The accounts this operation must lock.
    pub fn accounts(&self) -> Vec<&AccountId> {
        match self {
            Self::Deposit { account, .. } | Self::Withdraw { account, .. } => vec![account],
            Self::Transfer { from, to, .. } => vec![from, to],
        }
    }
}

/// What happened to one account, as published in bank events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Deposit,
    Withdraw,
    TransferIn,
    TransferOut,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deposit => "deposit",
            Self::Withdraw => "withdraw",
            Self::TransferIn => "transfer_in",
            Self::TransferOut => "transfer_out",
        }
    }
}

/// One balance change made by an operation: the account, what happened, and the balance after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Posting {
    pub account: AccountId,
    pub kind: EventKind,
    pub amount: Amount,
    pub balance: Balance,
}

/// Why an operation was refused. Nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BankError {
    #[error("insufficient funds in {account}: balance {balance}, needed {amount}")]
    InsufficientFunds { account: AccountId, balance: Balance, amount: i64 },
    #[error("balance of {account} would overflow")]
    Overflow { account: AccountId },
    #[error("cannot transfer from {account} to itself")]
    SelfTransfer { account: AccountId },
    #[error("account {account} was not loaded into the batch (a bank bug)")]
    NotLoaded { account: AccountId },
}

/// The balances of the accounts one batch holds locked, and which of them changed.
#[derive(Debug, Default)]
pub struct Book {
    balances: BTreeMap<AccountId, Balance>,
    changed: BTreeSet<AccountId>,
}

impl Book {
    pub fn new(balances: impl IntoIterator<Item = (AccountId, Balance)>) -> Self {
        let balances: BTreeMap<_, _> = balances.into_iter().collect();
        assert!(balances.values().all(|b| *b >= 0), "a committed balance is never negative");
        Self { balances, changed: BTreeSet::new() }
    }

    pub fn balance(&self, account: &AccountId) -> Option<Balance> {
        self.balances.get(account).copied()
    }

    /// Applies one operation; on error nothing changes.
    pub fn apply(&mut self, operation: &Operation) -> Result<Vec<Posting>, BankError> {
        match operation {
            Operation::Deposit { account, amount } => {
                let balance = self.credit_preview(account, *amount)?;
                Ok(vec![self.set(account, EventKind::Deposit, *amount, balance)])
            }
            Operation::Withdraw { account, amount } => {
                let balance = self.debit_preview(account, *amount)?;
                Ok(vec![self.set(account, EventKind::Withdraw, *amount, balance)])
            }
            Operation::Transfer { from, to, amount } => {
                if from == to {
                    return Err(BankError::SelfTransfer { account: from.clone() });
                }
                let before = self.sum_of([from, to]);
                let from_balance = self.debit_preview(from, *amount)?;
                let to_balance = self.credit_preview(to, *amount)?;
                let postings = vec![
                    self.set(from, EventKind::TransferOut, *amount, from_balance),
                    self.set(to, EventKind::TransferIn, *amount, to_balance),
                ];
                assert_eq!(before, self.sum_of([from, to]), "a transfer conserves money");
                Ok(postings)
            }
        }
    }

    /// The changed accounts and their new balances, in account order.
    pub fn changed(&self) -> impl Iterator<Item = (&AccountId, Balance)> {
        self.changed.iter().map(|account| (account, self.balances[account]))
    }

    fn loaded(&self, account: &AccountId) -> Result<Balance, BankError> {
        self.balance(account).ok_or_else(|| BankError::NotLoaded { account: account.clone() })
    }

    fn credit_preview(&self, account: &AccountId, amount: Amount) -> Result<Balance, BankError> {
        self.loaded(account)?
            .checked_add(amount.get())
            .ok_or_else(|| BankError::Overflow { account: account.clone() })
    }

    fn debit_preview(&self, account: &AccountId, amount: Amount) -> Result<Balance, BankError> {
        let balance = self.loaded(account)?;
        if balance < amount.get() {
            return Err(BankError::InsufficientFunds {
                account: account.clone(),
                balance,
                amount: amount.get(),
            });
        }
        Ok(balance - amount.get())
    }

    fn set(
        &mut self,
        account: &AccountId,
        kind: EventKind,
        amount: Amount,
        balance: Balance,
    ) -> Posting {
        assert!(balance >= 0, "a balance never goes below zero");
        self.balances.insert(account.clone(), balance);
        self.changed.insert(account.clone());
        Posting { account: account.clone(), kind, amount, balance }
    }

    fn sum_of<'a>(&self, accounts: impl IntoIterator<Item = &'a AccountId>) -> i128 {
        accounts.into_iter().filter_map(|a| self.balance(a)).map(i128::from).sum()
    }
}

/// What became of one operation of a batch (see [`apply_batch`]). `R` is a recorded reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome<R> {
    /// Applied to the book: write the postings, record the reply under its id.
    Applied(Vec<Posting>),
    /// Refused by the money rules; nothing changed (not recorded: the id may be retried).
    Refused(BankError),
    /// Its id was committed before for this same operation: answer with the recorded reply.
    Replay(R),
    /// Its id belongs to another operation (recorded, taken, or earlier in this batch).
    IdReused,
    /// The same id and operation as the batch's operation at this index: its answer.
    SameAs(usize),
}

/// Applies a batch in arrival order to `book`, honouring operation ids: `recorded` holds what
/// the ledger has committed for the batch's ids (the operation and its reply), `taken` the ids
/// the ledger refused as already recorded at commit time (a race with another instance).
pub fn apply_batch<R: Clone>(
    book: &mut Book,
    batch: &[(Option<&OperationId>, &Operation)],
    recorded: &HashMap<OperationId, (Operation, R)>,
    taken: &BTreeSet<OperationId>,
) -> Vec<Outcome<R>> {
    let mut first_with_id: HashMap<&OperationId, usize> = HashMap::new();
    let mut outcomes = Vec::with_capacity(batch.len());
    for (index, (id, operation)) in batch.iter().enumerate() {
        if let Some(id) = id {
            if let Some((recorded_operation, reply)) = recorded.get(*id) {
                outcomes.push(if recorded_operation == *operation {
                    Outcome::Replay(reply.clone())
                } else {
                    Outcome::IdReused
                });
                continue;
            }
            if taken.contains(*id) {
                outcomes.push(Outcome::IdReused);
                continue;
            }
            if let Some(&first) = first_with_id.get(id) {
                outcomes.push(if batch[first].1 == *operation {
                    Outcome::SameAs(first)
                } else {
                    Outcome::IdReused
                });
                continue;
            }
            first_with_id.insert(id, index);
        }
        outcomes.push(match book.apply(operation) {
            Ok(postings) => Outcome::Applied(postings),
            Err(error) => Outcome::Refused(error),
        });
    }
    outcomes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op_id(text: &str) -> OperationId {
        OperationId::parse(text).expect("valid")
    }

    #[test]
    fn ids_make_a_batch_idempotent_whatever_the_order() {
        let deposit = Operation::Deposit { account: id("a"), amount: amount(5) };
        let other = Operation::Deposit { account: id("a"), amount: amount(6) };
        let withdraw = Operation::Withdraw { account: id("a"), amount: amount(100) };
        let (one, two, three, four, five) =
            (op_id("one"), op_id("two"), op_id("three"), op_id("four"), op_id("five"));
        let recorded = HashMap::from([
            (one.clone(), (deposit.clone(), "first reply")),
            (two.clone(), (deposit.clone(), "second reply")),
        ]);
        let taken = BTreeSet::from([three.clone()]);
        let batch = [
            (Some(&one), &deposit),   // recorded, same operation: replayed
            (Some(&two), &other),     // recorded for another operation: refused
            (Some(&three), &deposit), // taken at commit by someone else: refused
            (Some(&four), &deposit),  // new: applied
            (Some(&four), &deposit),  // again in the batch: the first's answer
            (Some(&four), &other),    // same id, another operation: refused
            (None, &deposit),         // no id: applied every time
            (None, &deposit),
            (Some(&five), &withdraw), // refused by the rules: not recorded
        ];
        let mut book = book(&[("a", 0)]);
        let outcomes = apply_batch(&mut book, &batch, &recorded, &taken);
        assert_eq!(outcomes[0], Outcome::Replay("first reply"));
        assert_eq!(outcomes[1], Outcome::IdReused);
        assert_eq!(outcomes[2], Outcome::IdReused);
        assert!(matches!(&outcomes[3], Outcome::Applied(p) if p[0].balance == 5));
        assert_eq!(outcomes[4], Outcome::SameAs(3));
        assert_eq!(outcomes[5], Outcome::IdReused);
        assert!(matches!(&outcomes[6], Outcome::Applied(p) if p[0].balance == 10));
        assert!(matches!(&outcomes[7], Outcome::Applied(p) if p[0].balance == 15));
        assert!(matches!(&outcomes[8], Outcome::Refused(BankError::InsufficientFunds { .. })));
        assert_eq!(book.balance(&id("a")), Some(15), "applied exactly three deposits");
    }

    fn id(name: &str) -> AccountId {
        AccountId::parse(name).expect("valid")
    }

    fn amount(units: i64) -> Amount {
        Amount::parse(units).expect("positive")
    }

    fn book(entries: &[(&str, Balance)]) -> Book {
        Book::new(entries.iter().map(|(name, balance)| (id(name), *balance)))
    }

    #[test]
    fn deposit_withdraw_and_transfer_post_balances_after() {
        let mut book = book(&[("a", 0), ("b", 10)]);
        let deposit = Operation::Deposit { account: id("a"), amount: amount(500) };
        assert_eq!(
            book.apply(&deposit),
            Ok(vec![Posting {
                account: id("a"),
                kind: EventKind::Deposit,
                amount: amount(500),
                balance: 500
            }])
        );
        let transfer = Operation::transfer(id("a"), id("b"), amount(200)).expect("distinct");
        let postings = book.apply(&transfer).expect("funded");
        assert_eq!(postings[0].kind, EventKind::TransferOut);
        assert_eq!(postings[0].balance, 300);
        assert_eq!(postings[1].kind, EventKind::TransferIn);
        assert_eq!(postings[1].balance, 210);
        let withdraw = Operation::Withdraw { account: id("b"), amount: amount(210) };
        assert_eq!(book.apply(&withdraw).expect("funded")[0].balance, 0);
        assert_eq!(book.changed().collect::<Vec<_>>(), vec![(&id("a"), 300), (&id("b"), 0)]);
    }

    #[test]
    fn refused_operations_change_nothing() {
        let mut book = book(&[("a", 100), ("b", i64::MAX - 5)]);
        let overdraw = Operation::Withdraw { account: id("a"), amount: amount(101) };
        assert_eq!(
            book.apply(&overdraw),
            Err(BankError::InsufficientFunds { account: id("a"), balance: 100, amount: 101 })
        );
        let overflow = Operation::transfer(id("a"), id("b"), amount(6)).expect("distinct");
        assert_eq!(book.apply(&overflow), Err(BankError::Overflow { account: id("b") }));
        assert_eq!(book.balance(&id("a")), Some(100), "debit side untouched after overflow");
        let deposit_overflow = Operation::Deposit { account: id("b"), amount: amount(i64::MAX) };
        assert_eq!(book.apply(&deposit_overflow), Err(BankError::Overflow { account: id("b") }));
        assert_eq!(book.changed().count(), 0);
    }

    #[test]
    fn transfer_to_self_is_refused() {
        assert_eq!(
            Operation::transfer(id("a"), id("a"), amount(1)),
            Err(BankError::SelfTransfer { account: id("a") })
        );
        let mut book = book(&[("a", 5)]);
        let forged = Operation::Transfer { from: id("a"), to: id("a"), amount: amount(1) };
        assert!(book.apply(&forged).is_err());
    }

    #[test]
    fn accounts_not_in_the_batch_are_reported_not_touched() {
        let mut book = book(&[("a", 5)]);
        let stray = Operation::transfer(id("a"), id("ghost"), amount(1)).expect("distinct");
        assert_eq!(book.apply(&stray), Err(BankError::NotLoaded { account: id("ghost") }));
        assert_eq!(book.balance(&id("a")), Some(5));
    }

    #[test]
    fn a_batch_in_order_conserves_money_and_never_overdraws() {
        // A deterministic pseudo-random walk over many operations: the sum of balances moves
        // exactly by deposits minus withdrawals, and no balance ever dips below zero.
        let names: Vec<AccountId> = (0..8).map(|i| id(&format!("acct-{i}"))).collect();
        let mut book = Book::new(names.iter().map(|n| (n.clone(), 0)));
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut expected: i128 = 0;
        for _ in 0..10_000 {
            let a = names[(next() % 8) as usize].clone();
            let b = names[(next() % 8) as usize].clone();
            let units = (next() % 1000 + 1) as i64;
            let operation = match next() % 3 {
                0 => Operation::Deposit { account: a, amount: amount(units) },
                1 => Operation::Withdraw { account: a, amount: amount(units) },
                _ => match Operation::transfer(a, b, amount(units)) {
                    Ok(transfer) => transfer,
                    Err(_) => continue,
                },
            };
            if book.apply(&operation).is_ok() {
                match operation {
                    Operation::Deposit { .. } => expected += i128::from(units),
                    Operation::Withdraw { .. } => expected -= i128::from(units),
                    Operation::Transfer { .. } => {}
                }
            }
            let total: i128 = names.iter().filter_map(|n| book.balance(n)).map(i128::from).sum();
            assert_eq!(total, expected);
            assert!(names.iter().all(|n| book.balance(n).is_some_and(|b| b >= 0)));
        }
    }
}
