//! The ledger's rules for a batch commit: what must hold before it writes anything.
//!
//! A commit (from a bank batch) writes balances, records operation ids and releases leases in
//! one transaction, all or nothing. [`check_commit`] refuses it, changing nothing, unless:
//! - the owner is a valid owner name;
//! - no balance is negative, and no account is written twice;
//! - every write carries the token of a live lease the owner holds (fencing: a stalled or
//!   deposed writer cannot write);
//! - every release is the owner's lock, and no account is released twice;
//! - no operation id is recorded already, nor appears twice (exactly-once per id).

use std::collections::BTreeSet;

use crate::account::{AccountId, Balance, OperationId};
use crate::locks::{self, LockError, LockTable};

/// One balance write: the account, the writer's fencing token, the new balance.
pub type Write = (AccountId, u64, Balance);
/// One lease release: the account and the owner's token.
pub type Release = (AccountId, u64);

/// Why a commit is refused. Nothing was written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommitError {
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error("balance of {0} must not be negative")]
    NegativeBalance(AccountId),
    #[error("{0} is written twice")]
    WrittenTwice(AccountId),
    #[error("{0} is released twice")]
    ReleasedTwice(AccountId),
    #[error("operation ids already recorded: {}", .0.iter().map(OperationId::as_str).collect::<Vec<_>>().join(", "))]
    Duplicate(Vec<OperationId>),
}

/// Checks a commit of `owner` at `now_ms` against the lock table; `recorded` says whether an
/// operation id is recorded already.
pub fn check_commit(
    locks: &LockTable,
    now_ms: u64,
    owner: &str,
    writes: &[Write],
    operations: &[OperationId],
    release: &[Release],
    mut recorded: impl FnMut(&OperationId) -> bool,
) -> Result<(), CommitError> {
    locks::check_owner(owner)?;
    let mut written = BTreeSet::new();
    for (account, _, balance) in writes {
        if *balance < 0 {
            return Err(CommitError::NegativeBalance(account.clone()));
        }
        if !written.insert(account) {
            return Err(CommitError::WrittenTwice(account.clone()));
        }
    }
    locks.check_writes(now_ms, owner, writes.iter().map(|(a, token, _)| (a, *token)))?;
    let mut released = BTreeSet::new();
    for (account, token) in release {
        if !released.insert(account) {
            return Err(CommitError::ReleasedTwice(account.clone()));
        }
        locks.check_release(now_ms, owner, account, *token)?;
    }
    let mut ids = BTreeSet::new();
    let duplicates: Vec<OperationId> =
        operations.iter().filter(|id| !ids.insert(*id) || recorded(id)).cloned().collect();
    if !duplicates.is_empty() {
        return Err(CommitError::Duplicate(duplicates));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(name: &str) -> AccountId {
        AccountId::parse(name).expect("valid")
    }

    fn op(id: &str) -> OperationId {
        OperationId::parse(id).expect("valid")
    }

    #[test]
    fn a_commit_is_refused_unless_every_rule_holds() {
        let mut locks = LockTable::new(1);
        let (a, b, c) = (account("a"), account("b"), account("c"));
        let grants = locks.lock_many(0, "bank-1", &[a.clone(), b.clone()], 1_000).expect("locks");
        let (ta, tb) = (grants[0].token, grants[1].token);
        let none = |_: &OperationId| false;
        let ok = check_commit(
            &locks,
            10,
            "bank-1",
            &[(a.clone(), ta, 5)],
            &[op("x")],
            &[(a.clone(), ta), (b.clone(), tb)],
            none,
        );
        assert_eq!(ok, Ok(()));
        type Case = (&'static str, Vec<Write>, Vec<OperationId>, Vec<Release>, u64, CommitError);
        let cases: Vec<Case> = vec![
            (
                "not an owner",
                vec![],
                vec![],
                vec![],
                10,
                CommitError::Lock(LockError::InvalidOwner),
            ),
            (
                "bank-1",
                vec![(a.clone(), ta, -1)],
                vec![],
                vec![],
                10,
                CommitError::NegativeBalance(a.clone()),
            ),
            (
                "bank-1",
                vec![(a.clone(), ta, 1), (a.clone(), ta, 2)],
                vec![],
                vec![],
                10,
                CommitError::WrittenTwice(a.clone()),
            ),
            (
                "bank-1",
                vec![(a.clone(), ta + 9, 1)],
                vec![],
                vec![],
                10,
                CommitError::Lock(LockError::StaleToken { accounts: vec![a.clone()] }),
            ),
            (
                "bank-1",
                vec![(c.clone(), ta, 1)],
                vec![],
                vec![],
                10,
                CommitError::Lock(LockError::StaleToken { accounts: vec![c.clone()] }),
            ),
            (
                "bank-1",
                vec![(a.clone(), ta, 1)],
                vec![],
                vec![],
                2_000,
                CommitError::Lock(LockError::StaleToken { accounts: vec![a.clone()] }),
            ),
            (
                "bank-2",
                vec![(a.clone(), ta, 1)],
                vec![],
                vec![],
                10,
                CommitError::Lock(LockError::StaleToken { accounts: vec![a.clone()] }),
            ),
            (
                "bank-1",
                vec![],
                vec![],
                vec![(a.clone(), ta), (a.clone(), ta)],
                10,
                CommitError::ReleasedTwice(a.clone()),
            ),
            (
                "bank-2",
                vec![],
                vec![],
                vec![(a.clone(), ta)],
                10,
                CommitError::Lock(LockError::NotOwner { account: a.clone() }),
            ),
            (
                "bank-1",
                vec![],
                vec![op("x"), op("x")],
                vec![],
                10,
                CommitError::Duplicate(vec![op("x")]),
            ),
        ];
        for (owner, writes, operations, release, now, expected) in cases {
            let refused = check_commit(&locks, now, owner, &writes, &operations, &release, none);
            assert_eq!(refused, Err(expected), "{owner} {writes:?} {operations:?} {release:?}");
        }
        let recorded = |id: &OperationId| id.as_str() == "old";
        let refused =
            check_commit(&locks, 10, "bank-1", &[], &[op("new"), op("old")], &[], recorded);
        assert_eq!(refused, Err(CommitError::Duplicate(vec![op("old")])));
    }
}
