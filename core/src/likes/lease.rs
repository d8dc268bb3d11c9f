//! The likes leader's lease, as a state machine: when to campaign, renew, run a round, and when
//! leadership is lost. The shell holds the lease in a JetStream KV key whose `max_age` is the
//! lease (create to take it, update by revision to renew); this decides *when*, with time
//! passed in.
//!
//! - Following: poll every tenth of the lease for a free key ([`Step::Campaign`]).
//! - Leading (after [`LeaseClock::elected`]): renew every third of the lease, so two renewals
//!   can fail before the key expires; run an anti-entropy round every round interval.
//! - A renewal that fails ([`LeaseClock::lost`]) ends leadership at once: someone else may hold
//!   the key already.

/// What the leader task should do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Not leading: try to take the lease.
    Campaign,
    /// Leading and the renewal is due: renew before anything else.
    Renew,
    /// Leading, renewed, and a round is due.
    Round,
    /// Leading, nothing due.
    Idle,
}

/// Leadership held under an epoch (the KV revision that created the lease).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    pub epoch: u64,
    pub since_ms: u64,
    renew_at_ms: u64,
    next_round_ms: u64,
}

/// The lease's timing and whether this node holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseClock {
    lease_ms: u64,
    round_ms: u64,
    held: Option<Held>,
}

/// Shortest lease and round the clock accepts (a lease below it would expire between polls).
pub const LEASE_MS_MIN: u64 = 300;
pub const ROUND_MS_MIN: u64 = 10;

impl LeaseClock {
    /// A follower's clock for a lease of `lease_ms` and rounds every `round_ms`.
    pub fn new(lease_ms: u64, round_ms: u64) -> Self {
        Self {
            lease_ms: lease_ms.max(LEASE_MS_MIN),
            round_ms: round_ms.max(ROUND_MS_MIN),
            held: None,
        }
    }

    pub fn lease_ms(&self) -> u64 {
        self.lease_ms
    }

    /// How often the leader renews: a third of the lease.
    pub fn renew_every_ms(&self) -> u64 {
        self.lease_ms / 3
    }

    /// How often the leader task looks at the clock: a tenth of the lease (at least 30 ms).
    pub fn poll_ms(&self) -> u64 {
        (self.lease_ms / 10).max(30)
    }

    pub fn held(&self) -> Option<Held> {
        self.held
    }

    /// What to do at `now_ms`.
    pub fn step(&self, now_ms: u64) -> Step {
        match self.held {
            None => Step::Campaign,
            Some(held) if now_ms >= held.renew_at_ms => Step::Renew,
            Some(held) if now_ms >= held.next_round_ms => Step::Round,
            Some(_) => Step::Idle,
        }
    }

    /// The lease was taken at `now_ms` under `epoch`: the first round runs at once (so the
    /// leader's table is never empty), the first renewal a third of the lease later.
    pub fn elected(&mut self, now_ms: u64, epoch: u64) {
        self.held = Some(Held {
            epoch,
            since_ms: now_ms,
            renew_at_ms: now_ms + self.renew_every_ms(),
            next_round_ms: now_ms,
        });
    }

    /// The lease was renewed at `now_ms`.
    pub fn renewed(&mut self, now_ms: u64) {
        let renew_every_ms = self.renew_every_ms();
        if let Some(held) = &mut self.held {
            held.renew_at_ms = now_ms + renew_every_ms;
        }
    }

    /// A round ran at `now_ms`; the next is one round interval later.
    pub fn rounded(&mut self, now_ms: u64) {
        let round_ms = self.round_ms;
        if let Some(held) = &mut self.held {
            held.next_round_ms = now_ms + round_ms;
        }
    }

    /// A renewal failed, or the node resigns: it follows from now on.
    pub fn lost(&mut self) -> Option<Held> {
        self.held.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_follower_campaigns_and_a_leader_renews_before_it_rounds() {
        let mut clock = LeaseClock::new(3_000, 1_000);
        assert_eq!((clock.renew_every_ms(), clock.poll_ms()), (1_000, 300));
        for now in [0, 1, 10_000] {
            assert_eq!(clock.step(now), Step::Campaign, "a follower only campaigns");
        }
        clock.elected(100, 7);
        assert_eq!(clock.held().map(|h| (h.epoch, h.since_ms)), Some((7, 100)));
        assert_eq!(clock.step(100), Step::Round, "the first round at once");
        clock.rounded(100);
        assert_eq!(clock.step(100), Step::Idle);
        assert_eq!(clock.step(1_099), Step::Idle);
        // The renewal (every third of the lease) and the round (every second) fall together:
        // the renewal goes first.
        assert_eq!(clock.step(1_100), Step::Renew);
        clock.renewed(1_100);
        assert_eq!(clock.step(1_100), Step::Round);
        clock.rounded(1_100);
        assert_eq!(clock.step(2_099), Step::Idle);
        // A late renewal (the task stalled) is still first.
        assert_eq!(clock.step(5_000), Step::Renew);
        clock.renewed(5_000);
        assert_eq!(clock.step(5_000), Step::Round);
        // Losing the lease: back to campaigning, whatever time says.
        assert_eq!(clock.lost().map(|h| h.epoch), Some(7));
        assert_eq!(clock.step(5_001), Step::Campaign);
        assert_eq!(clock.lost(), None);
        clock.renewed(6_000);
        clock.rounded(6_000);
        assert_eq!(clock.step(6_000), Step::Campaign, "no renewal without the lease");
    }

    #[test]
    fn leases_and_rounds_have_floors() {
        let clock = LeaseClock::new(1, 0);
        assert_eq!(clock.lease_ms(), LEASE_MS_MIN);
        assert_eq!(clock.renew_every_ms(), LEASE_MS_MIN / 3);
        assert_eq!(clock.poll_ms(), 30);
        let mut clock = LeaseClock::new(3_000, 0);
        clock.elected(0, 1);
        clock.rounded(0);
        assert_eq!(clock.step(ROUND_MS_MIN - 1), Step::Idle);
        assert_eq!(clock.step(ROUND_MS_MIN), Step::Round);
    }
}
