//! The ledger's account locks: leases with fencing tokens.
//!
//! A bank instance (an *owner*) locks the accounts it is about to change and receives, per
//! account, a fencing token. Every write must present the token of a live lease; once a lease
//! expires, its token is stale, so a bank that stalled past its lease (a GC pause, a network
//! partition, a `kill -STOP`) cannot overwrite what a newer lock holder wrote.
//!
//! Tokens come from one counter that only goes up, so they increase per account as required
//! and also across accounts. The shell seeds the counter with a value above every token it has
//! ever handed out (see `agora-nats`' store: a boot epoch in the high bits), so tokens keep
//! increasing across ledger restarts.
//!
//! Expired locks are treated as absent by every check; [`LockTable::expire`] removes them so
//! the table stays bounded.

use std::collections::BTreeMap;

use crate::account::AccountId;

/// Shortest lease a lock may ask for.
pub const LEASE_MS_MIN: u64 = 10;
/// Longest lease a lock may ask for: a crashed owner blocks an account at most this long.
pub const LEASE_MS_MAX: u64 = 60_000;
/// Most accounts one lock-many request may name.
pub const LOCK_MANY_ACCOUNTS_MAX: usize = 4096;
/// Most locks held at once, over all owners.
pub const LOCKS_MAX: usize = 1_000_000;
/// Longest owner name, in bytes.
pub const OWNER_LENGTH_MAX: usize = 128;

/// A live or expired lease on one account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lock {
    pub owner: String,
    pub token: u64,
    pub expires_at_ms: u64,
}

impl Lock {
    fn is_live(&self, now_ms: u64) -> bool {
        now_ms < self.expires_at_ms
    }
}

/// What a successful lock hands back for one account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub account: AccountId,
    pub token: u64,
    pub expires_at_ms: u64,
}

/// Why a lock operation was refused. All of these are operating errors, not bugs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LockError {
    #[error("locked by another owner: {}", join(.accounts))]
    Locked { accounts: Vec<AccountId> },
    #[error("account {account} is locked by another owner")]
    NotOwner { account: AccountId },
    #[error("stale fencing token (lease expired or lock lost): {}", join(.accounts))]
    StaleToken { accounts: Vec<AccountId> },
    #[error("lease_ms must be {LEASE_MS_MIN}..={LEASE_MS_MAX}, got {0}")]
    InvalidLease(u64),
    #[error("owner must be 1-{OWNER_LENGTH_MAX} printable ASCII characters")]
    InvalidOwner,
    #[error(
        "accounts must be a non-empty, strictly increasing list of at most {LOCK_MANY_ACCOUNTS_MAX}"
    )]
    InvalidAccountSet,
    #[error("the lock table is full ({LOCKS_MAX} locks)")]
    TableFull,
}

fn join(accounts: &[AccountId]) -> String {
    accounts.iter().map(AccountId::as_str).collect::<Vec<_>>().join(", ")
}

/// Validates an owner name (a bank instance id).
pub fn check_owner(owner: &str) -> Result<(), LockError> {
    if owner.is_empty()
        || owner.len() > OWNER_LENGTH_MAX
        || !owner.chars().all(|c| c.is_ascii_graphic())
    {
        return Err(LockError::InvalidOwner);
    }
    Ok(())
}

/// All locks of one ledger.
#[derive(Debug)]
pub struct LockTable {
    locks: BTreeMap<AccountId, Lock>,
    next_token: u64,
}

impl LockTable {
    /// An empty table whose first token will be `first_token` (at least 1).
    pub fn new(first_token: u64) -> Self {
        Self { locks: BTreeMap::new(), next_token: first_token.max(1) }
    }

    /// The token the next lock will get.
    pub fn next_token(&self) -> u64 {
        self.next_token
    }

    /// Makes the next token at least `token` (a table rebuilt from storage keeps counting up
    /// from the tokens its predecessor handed out).
    pub fn raise_next_token(&mut self, token: u64) {
        self.next_token = self.next_token.max(token);
    }

    /// Puts back a lock read from storage at startup; later tokens stay above it.
    pub fn restore(&mut self, account: AccountId, lock: Lock) {
        self.next_token = self.next_token.max(lock.token.saturating_add(1));
        self.locks.insert(account, lock);
    }

    /// The live lock on `account`, if any.
    pub fn holder(&self, now_ms: u64, account: &AccountId) -> Option<&Lock> {
        self.locks.get(account).filter(|lock| lock.is_live(now_ms))
    }

    /// The lock on `account`, live or expired but not yet swept.
    pub fn get(&self, account: &AccountId) -> Option<&Lock> {
        self.locks.get(account)
    }

    /// Every lock still in the table, live or not yet swept.
    pub fn iter(&self) -> impl Iterator<Item = (&AccountId, &Lock)> {
        self.locks.iter()
    }

    pub fn len(&self) -> usize {
        self.locks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.locks.is_empty()
    }

    /// Locks every account in `accounts` (strictly increasing) for `owner`, all or nothing.
    ///
    /// An account already held by `owner` is renewed: same token, new expiry. An account held
    /// by another owner with a live lease refuses the whole request, naming every such account,
    /// so a caller can retry without them.
    pub fn lock_many(
        &mut self,
        now_ms: u64,
        owner: &str,
        accounts: &[AccountId],
        lease_ms: u64,
    ) -> Result<Vec<Grant>, LockError> {
        check_owner(owner)?;
        if !(LEASE_MS_MIN..=LEASE_MS_MAX).contains(&lease_ms) {
            return Err(LockError::InvalidLease(lease_ms));
        }
        let strictly_increasing = accounts.windows(2).all(|pair| pair[0] < pair[1]);
        if accounts.is_empty() || accounts.len() > LOCK_MANY_ACCOUNTS_MAX || !strictly_increasing {
            return Err(LockError::InvalidAccountSet);
        }
        let held_by_others: Vec<AccountId> = accounts
            .iter()
            .filter(|account| self.holder(now_ms, account).is_some_and(|lock| lock.owner != owner))
            .cloned()
            .collect();
        if !held_by_others.is_empty() {
            return Err(LockError::Locked { accounts: held_by_others });
        }
        let new_entries = accounts.iter().filter(|a| !self.locks.contains_key(*a)).count();
        if self.locks.len() + new_entries > LOCKS_MAX {
            return Err(LockError::TableFull);
        }
        let expires_at_ms = now_ms.saturating_add(lease_ms);
        let grants = accounts
            .iter()
            .map(|account| {
                let renewal = self.holder(now_ms, account).map(|lock| lock.token);
                let token = renewal.unwrap_or_else(|| self.take_token());
                let lock = Lock { owner: owner.to_owned(), token, expires_at_ms };
                self.locks.insert(account.clone(), lock);
                Grant { account: account.clone(), token, expires_at_ms }
            })
            .collect();
        Ok(grants)
    }

    /// Checks that a reader may see `account`: refused while another owner holds a live lock.
    pub fn check_read(
        &self,
        now_ms: u64,
        reader: Option<&str>,
        account: &AccountId,
    ) -> Result<(), LockError> {
        match self.holder(now_ms, account) {
            Some(lock) if Some(lock.owner.as_str()) != reader => {
                Err(LockError::Locked { accounts: vec![account.clone()] })
            }
            _ => Ok(()),
        }
    }

    /// Checks that `owner` holds a live lock with exactly the given token on every account.
    /// Refuses all writes if any one is stale, naming every stale account.
    pub fn check_writes<'a>(
        &self,
        now_ms: u64,
        owner: &str,
        writes: impl IntoIterator<Item = (&'a AccountId, u64)>,
    ) -> Result<(), LockError> {
        let stale: Vec<AccountId> = writes
            .into_iter()
            .filter(|(account, token)| {
                !self
                    .holder(now_ms, account)
                    .is_some_and(|lock| lock.owner == owner && lock.token == *token)
            })
            .map(|(account, _)| account.clone())
            .collect();
        if stale.is_empty() { Ok(()) } else { Err(LockError::StaleToken { accounts: stale }) }
    }

    /// Checks that `release` would succeed, without changing anything.
    pub fn check_release(
        &self,
        now_ms: u64,
        owner: &str,
        account: &AccountId,
        token: u64,
    ) -> Result<(), LockError> {
        match self.locks.get(account) {
            Some(lock) if lock.owner != owner && lock.is_live(now_ms) => {
                Err(LockError::NotOwner { account: account.clone() })
            }
            Some(lock) if lock.owner == owner && lock.token == token => Ok(()),
            _ => Err(LockError::StaleToken { accounts: vec![account.clone()] }),
        }
    }

    /// Releases `owner`'s lock on `account`. A lock that already expired but was not taken by
    /// anyone else is released too (it is harmless either way); a live lock of another owner
    /// is `NotOwner`; a token that does not match is `StaleToken`.
    pub fn release(
        &mut self,
        now_ms: u64,
        owner: &str,
        account: &AccountId,
        token: u64,
    ) -> Result<(), LockError> {
        self.check_release(now_ms, owner, account, token)?;
        self.locks.remove(account);
        Ok(())
    }

    /// Removes every expired lock and returns the accounts it freed.
    pub fn expire(&mut self, now_ms: u64) -> Vec<AccountId> {
        let expired: Vec<AccountId> = self
            .locks
            .iter()
            .filter(|(_, lock)| !lock.is_live(now_ms))
            .map(|(account, _)| account.clone())
            .collect();
        for account in &expired {
            self.locks.remove(account);
        }
        expired
    }

    fn take_token(&mut self) -> u64 {
        let token = self.next_token;
        self.next_token = self.next_token.checked_add(1).expect("fencing tokens exhausted");
        token
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rebuilt_table_keeps_counting_up() {
        let mut old = LockTable::new(10);
        let account = AccountId::parse("a").expect("valid");
        let token =
            old.lock_many(0, "o", std::slice::from_ref(&account), 100).expect("locks")[0].token;
        old.release(0, "o", &account, token).expect("released");
        let mut rebuilt = LockTable::new(10);
        rebuilt.raise_next_token(old.next_token());
        let again = rebuilt.lock_many(0, "o", &[account], 100).expect("locks")[0].token;
        assert!(again > token, "a released token is never handed out again");
        rebuilt.raise_next_token(1);
        assert_eq!(rebuilt.next_token(), again + 1, "never lowered");
    }

    fn ids(names: &[&str]) -> Vec<AccountId> {
        names.iter().map(|n| AccountId::parse(n).expect("valid")).collect()
    }

    fn id(name: &str) -> AccountId {
        AccountId::parse(name).expect("valid")
    }

    #[test]
    fn lock_grants_increasing_tokens_and_renews_for_the_same_owner() {
        let mut table = LockTable::new(100);
        let first = table.lock_many(0, "bank-a", &ids(&["a", "b"]), 1000).expect("free");
        assert_eq!(first.iter().map(|g| g.token).collect::<Vec<_>>(), vec![100, 101]);
        assert!(first.iter().all(|g| g.expires_at_ms == 1000));

        let renewed = table.lock_many(500, "bank-a", &ids(&["a"]), 1000).expect("own lock");
        assert_eq!(renewed[0].token, 100, "a renewal keeps the token");
        assert_eq!(renewed[0].expires_at_ms, 1500);

        table.release(600, "bank-a", &id("a"), 100).expect("owner releases");
        let again = table.lock_many(700, "bank-b", &ids(&["a"]), 1000).expect("free again");
        assert_eq!(again[0].token, 102, "a new acquisition gets a higher token");
    }

    #[test]
    fn lock_many_is_all_or_nothing_and_names_every_conflict() {
        let mut table = LockTable::new(1);
        table.lock_many(0, "x", &ids(&["b", "d"]), 1000).expect("free");
        let refused = table.lock_many(10, "y", &ids(&["a", "b", "c", "d"]), 1000);
        assert_eq!(refused, Err(LockError::Locked { accounts: ids(&["b", "d"]) }));
        assert!(table.holder(10, &id("a")).is_none(), "nothing was taken");
        assert!(table.holder(10, &id("c")).is_none(), "nothing was taken");
        assert_eq!(table.len(), 2);
    }

    #[test]
    fn an_expired_lease_frees_the_account_and_stales_the_token() {
        let mut table = LockTable::new(1);
        let grant = table.lock_many(0, "x", &ids(&["a"]), 100).expect("free").remove(0);
        assert!(table.check_writes(99, "x", [(&id("a"), grant.token)]).is_ok());
        assert_eq!(
            table.check_writes(100, "x", [(&id("a"), grant.token)]),
            Err(LockError::StaleToken { accounts: ids(&["a"]) }),
            "the lease ends at expires_at_ms"
        );
        let taken = table.lock_many(150, "y", &ids(&["a"]), 100).expect("expired").remove(0);
        assert!(taken.token > grant.token);
        assert!(table.check_writes(160, "x", [(&id("a"), grant.token)]).is_err());
        assert!(table.check_writes(160, "y", [(&id("a"), taken.token)]).is_ok());
        assert_eq!(
            table.release(160, "x", &id("a"), grant.token),
            Err(LockError::NotOwner { account: id("a") })
        );
    }

    #[test]
    fn writes_need_owner_and_exact_token_on_every_account() {
        let mut table = LockTable::new(1);
        let grants = table.lock_many(0, "x", &ids(&["a", "b"]), 1000).expect("free");
        let (a, b) = (&grants[0], &grants[1]);
        assert!(table.check_writes(1, "x", [(&a.account, a.token), (&b.account, b.token)]).is_ok());
        assert_eq!(
            table.check_writes(1, "x", [(&a.account, a.token), (&b.account, b.token + 7)]),
            Err(LockError::StaleToken { accounts: ids(&["b"]) })
        );
        assert!(table.check_writes(1, "y", [(&a.account, a.token)]).is_err(), "not the owner");
        assert!(table.check_writes(1, "x", [(&id("zz"), 1)]).is_err(), "never locked");
    }

    #[test]
    fn reads_are_refused_only_while_another_owner_holds_a_live_lock() {
        let mut table = LockTable::new(1);
        table.lock_many(0, "x", &ids(&["a"]), 100).expect("free");
        assert!(table.check_read(1, Some("x"), &id("a")).is_ok(), "the owner may read");
        assert_eq!(
            table.check_read(1, Some("y"), &id("a")),
            Err(LockError::Locked { accounts: ids(&["a"]) })
        );
        assert!(table.check_read(1, None, &id("a")).is_err());
        assert!(table.check_read(100, None, &id("a")).is_ok(), "expired");
        assert!(table.check_read(1, None, &id("b")).is_ok(), "never locked");
    }

    #[test]
    fn release_rules() {
        let mut table = LockTable::new(1);
        let grant = table.lock_many(0, "x", &ids(&["a"]), 100).expect("free").remove(0);
        assert_eq!(
            table.release(1, "y", &id("a"), grant.token),
            Err(LockError::NotOwner { account: id("a") })
        );
        assert_eq!(
            table.release(1, "x", &id("a"), grant.token + 1),
            Err(LockError::StaleToken { accounts: ids(&["a"]) })
        );
        assert!(table.release(1, "x", &id("a"), grant.token).is_ok());
        assert!(table.is_empty());
        assert!(table.release(1, "x", &id("a"), grant.token).is_err(), "released once");

        let grant = table.lock_many(0, "x", &ids(&["b"]), 100).expect("free").remove(0);
        assert!(table.release(500, "x", &id("b"), grant.token).is_ok(), "expired, not retaken");
    }

    #[test]
    fn expire_sweeps_only_dead_leases() {
        let mut table = LockTable::new(1);
        table.lock_many(0, "x", &ids(&["a"]), 100).expect("free");
        table.lock_many(0, "y", &ids(&["b"]), 300).expect("free");
        assert_eq!(table.expire(99), Vec::<AccountId>::new());
        assert_eq!(table.expire(100), ids(&["a"]));
        assert_eq!(table.len(), 1);
        assert_eq!(table.expire(1000), ids(&["b"]));
        assert!(table.is_empty());
    }

    #[test]
    fn bad_requests_are_refused_without_side_effects() {
        let mut table = LockTable::new(1);
        assert_eq!(table.lock_many(0, "x", &ids(&["a"]), 0), Err(LockError::InvalidLease(0)));
        assert_eq!(
            table.lock_many(0, "x", &ids(&["a"]), LEASE_MS_MAX + 1),
            Err(LockError::InvalidLease(LEASE_MS_MAX + 1))
        );
        assert_eq!(table.lock_many(0, "x", &[], 100), Err(LockError::InvalidAccountSet));
        assert_eq!(
            table.lock_many(0, "x", &ids(&["b", "a"]), 100),
            Err(LockError::InvalidAccountSet)
        );
        assert_eq!(
            table.lock_many(0, "x", &ids(&["a", "a"]), 100),
            Err(LockError::InvalidAccountSet)
        );
        assert_eq!(table.lock_many(0, "", &ids(&["a"]), 100), Err(LockError::InvalidOwner));
        assert_eq!(table.lock_many(0, "a b", &ids(&["a"]), 100), Err(LockError::InvalidOwner));
        assert!(table.is_empty());
    }

    #[test]
    fn restored_locks_keep_tokens_increasing() {
        let mut table = LockTable::new(5);
        table.restore(id("a"), Lock { owner: "x".into(), token: 41, expires_at_ms: 1000 });
        let grant = table.lock_many(0, "y", &ids(&["b"]), 100).expect("free").remove(0);
        assert_eq!(grant.token, 42);
        assert!(table.check_read(0, None, &id("a")).is_err(), "restored lock is live");
    }
}
