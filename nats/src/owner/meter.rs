use super::*;

#[derive(Debug, Clone, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub(super) struct OwnerLabels {
    owner: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub(super) struct PhaseLabels {
    owner: String,
    /// `commit` (apply and commit, with its fsync), or for a replicated owner `stage` (apply)
    /// and `append` (the log's replicated append, then the local commit).
    phase: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub(super) struct OutcomeLabels {
    owner: String,
    /// `committed` or `rolled_back`.
    outcome: &'static str,
}

/// An owner's metrics: its groups (sizes, phases' times, outcomes) and its queue.
#[derive(Debug)]
pub(super) struct OwnerMetrics {
    owner: String,
    pub(super) queue: prometheus_client::metrics::gauge::Gauge,
    pub(super) envelopes: prometheus_client::metrics::histogram::Histogram,
    seconds: Family<PhaseLabels, Histogram, metrics::Buckets>,
    groups: Family<OutcomeLabels, prometheus_client::metrics::counter::Counter>,
    /// The series of [`PHASES`] and of the two outcomes, looked up once each (on first use,
    /// so that a phase an owner never has is not exposed).
    phases: [std::sync::OnceLock<Histogram>; PHASES.len()],
    outcomes: [std::sync::OnceLock<prometheus_client::metrics::counter::Counter>; 2],
}

/// The phases of a group ([`PhaseLabels`]), named by [`PHASES`].
#[derive(Debug, Clone, Copy)]
pub(super) enum Phase {
    Commit,
    Stage,
    Append,
}

pub(super) const PHASES: [&str; 3] = ["commit", "stage", "append"];

impl OwnerMetrics {
    pub(super) fn new(owner: &str) -> Self {
        let queue: Family<OwnerLabels, prometheus_client::metrics::gauge::Gauge> =
            metrics::register(
                "owner_queue_depth",
                "Requests waiting for the owner (a stateful service's one writer)",
                Family::default(),
            );
        let envelopes: Family<OwnerLabels, Histogram, metrics::Buckets> = metrics::register(
            "owner_group_envelopes",
            "Requests applied together in one group (one transaction, one commit)",
            Family::new_with_constructor(metrics::sizes()),
        );
        let labels = OwnerLabels { owner: owner.to_owned() };
        Self {
            owner: owner.to_owned(),
            queue: queue.get_or_create(&labels).clone(),
            envelopes: envelopes.get_or_create(&labels).clone(),
            seconds: metrics::register(
                "owner_group_seconds",
                "Time a group spent, by phase: commit (SQLite, fsync included); for a \
                 replicated service stage (apply) and append (the replicated log, then commit)",
                Family::new_with_constructor(metrics::seconds()),
            ),
            groups: metrics::register(
                "owner_groups",
                "Groups by outcome (committed, or rolled_back)",
                Family::default(),
            ),
            phases: Default::default(),
            outcomes: Default::default(),
        }
    }

    pub(super) fn phase(&self, phase: Phase, elapsed: Duration) {
        let index = phase as usize;
        let phase = PHASES[index];
        let histogram = self.phases[index].get_or_init(|| {
            let labels = PhaseLabels { owner: self.owner.clone(), phase };
            self.seconds.get_or_create(&labels).clone()
        });
        histogram.observe(elapsed.as_secs_f64());
    }

    pub(super) fn outcome(&self, committed: bool) {
        let (index, outcome) = if committed { (0, "committed") } else { (1, "rolled_back") };
        let counter = self.outcomes[index].get_or_init(|| {
            self.groups.get_or_create(&OutcomeLabels { owner: self.owner.clone(), outcome }).clone()
        });
        counter.inc();
    }
}
