//! Every NATS subject Agora uses, in one place.
//!
//! Subjects and their JSON payloads are Agora's public API (documented in `docs/subjects.md`).
//! Nothing else in the code base spells a subject: services and clients call these constants
//! and builders, so a rename is one edit here plus one in the document.
//!
//! Per-account subjects put the account last (`agora.ledger.lock.<account>`) so NATS subject
//! mapping can later partition the ledger by account without changing any client.

use agora_core::AccountId;

/// Prefix of every Agora subject.
pub const ROOT: &str = "agora";

/// The ledger, the data server that owns balances and locks (an internal API for the bank).
pub mod ledger {
    use super::AccountId;

    /// NATS micro service name.
    pub const SERVICE: &str = "agora-ledger";
    /// Group (subject prefix) of every ledger endpoint.
    pub const GROUP: &str = "agora.ledger";

    /// Endpoint suffixes below [`GROUP`]; `*` is the account token.
    pub const LOCK: &str = "lock.*";
    pub const UNLOCK: &str = "unlock.*";
    pub const GET: &str = "get.*";
    pub const SET: &str = "set.*";
    pub const BATCH_LOCK: &str = "batch.lock";
    pub const BATCH_GET: &str = "batch.get";
    pub const BATCH_COMMIT: &str = "batch.commit";
    pub const LOCKS: &str = "locks";

    pub fn lock(account: &AccountId) -> String {
        format!("{GROUP}.lock.{account}")
    }
    pub fn unlock(account: &AccountId) -> String {
        format!("{GROUP}.unlock.{account}")
    }
    pub fn get(account: &AccountId) -> String {
        format!("{GROUP}.get.{account}")
    }
    pub fn set(account: &AccountId) -> String {
        format!("{GROUP}.set.{account}")
    }
    pub const BATCH_LOCK_SUBJECT: &str = "agora.ledger.batch.lock";
    pub const BATCH_GET_SUBJECT: &str = "agora.ledger.batch.get";
    pub const BATCH_COMMIT_SUBJECT: &str = "agora.ledger.batch.commit";
    pub const LOCKS_SUBJECT: &str = "agora.ledger.locks";
}

/// The bank, the client-facing money service.
pub mod bank {
    use super::AccountId;

    /// NATS micro service name.
    pub const SERVICE: &str = "agora-bank";
    /// Group (subject prefix) of every bank endpoint.
    pub const GROUP: &str = "agora.bank";

    pub const DEPOSIT: &str = "deposit";
    pub const WITHDRAW: &str = "withdraw";
    pub const BALANCE: &str = "balance";
    pub const TRANSFER: &str = "transfer";

    pub const DEPOSIT_SUBJECT: &str = "agora.bank.deposit";
    pub const WITHDRAW_SUBJECT: &str = "agora.bank.withdraw";
    pub const BALANCE_SUBJECT: &str = "agora.bank.balance";
    pub const TRANSFER_SUBJECT: &str = "agora.bank.transfer";

    /// Every committed balance change is published here.
    pub fn events(account: &AccountId) -> String {
        format!("{GROUP}.events.{account}")
    }
    /// Wildcard over every account's events.
    pub const EVENTS_ALL: &str = "agora.bank.events.>";
}

/// Subjects of `agora bench`'s raw NATS baselines (served by the benchmark itself).
pub mod bench {
    /// Raw request-reply echo: the reply is the request payload.
    pub const ECHO: &str = "agora.bench.echo";
}

/// The last token of a subject (the account of a per-account subject).
pub fn last_token(subject: &str) -> &str {
    subject.rsplit('.').next().unwrap_or(subject)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builders_agree_with_endpoint_constants() {
        let alice = AccountId::parse("alice").expect("valid");
        assert_eq!(ledger::lock(&alice), "agora.ledger.lock.alice");
        assert_eq!(ledger::unlock(&alice), "agora.ledger.unlock.alice");
        assert_eq!(ledger::get(&alice), "agora.ledger.get.alice");
        assert_eq!(ledger::set(&alice), "agora.ledger.set.alice");
        assert_eq!(ledger::BATCH_LOCK_SUBJECT, format!("{}.{}", ledger::GROUP, ledger::BATCH_LOCK));
        assert_eq!(ledger::BATCH_GET_SUBJECT, format!("{}.{}", ledger::GROUP, ledger::BATCH_GET));
        assert_eq!(
            ledger::BATCH_COMMIT_SUBJECT,
            format!("{}.{}", ledger::GROUP, ledger::BATCH_COMMIT)
        );
        assert_eq!(ledger::LOCKS_SUBJECT, format!("{}.{}", ledger::GROUP, ledger::LOCKS));
        for (subject, endpoint) in [
            (bank::DEPOSIT_SUBJECT, bank::DEPOSIT),
            (bank::WITHDRAW_SUBJECT, bank::WITHDRAW),
            (bank::BALANCE_SUBJECT, bank::BALANCE),
            (bank::TRANSFER_SUBJECT, bank::TRANSFER),
        ] {
            assert_eq!(subject, format!("{}.{endpoint}", bank::GROUP));
        }
        assert_eq!(bank::events(&alice), "agora.bank.events.alice");
        assert!(ledger::GROUP.starts_with(ROOT) && bank::GROUP.starts_with(ROOT));
        assert_eq!(last_token("agora.ledger.get.alice"), "alice");
    }
}
