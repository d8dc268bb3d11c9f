#[derive(Debug, Clone, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub(super) struct KindLabels {
    /// `room` or `dm`.
    kind: &'static str,
}

/// The chat service's metrics: what it fans out, and how far history trails the senders.
pub(super) struct ChatMetrics {
    pub(super) room: prometheus_client::metrics::counter::Counter,
    pub(super) dm: prometheus_client::metrics::counter::Counter,
    pub(super) history_lag: prometheus_client::metrics::histogram::Histogram,
}

pub(super) fn chat_metrics() -> &'static ChatMetrics {
    static METRICS: std::sync::LazyLock<ChatMetrics> = std::sync::LazyLock::new(|| {
        let messages: prometheus_client::metrics::family::Family<
            KindLabels,
            prometheus_client::metrics::counter::Counter,
        > = crate::metrics::register(
            "chat_messages",
            "Messages recorded and fanned out, by kind (room: to every member; dm: to one)",
            Default::default(),
        );
        // One at a time: a family's handle holds its lock until the statement ends.
        let room = messages.get_or_create(&KindLabels { kind: "room" }).clone();
        let dm = messages.get_or_create(&KindLabels { kind: "dm" }).clone();
        ChatMetrics {
            room,
            dm,
            history_lag: crate::metrics::register(
                "chat_history_lag_seconds",
                "From a message's sending (its at_ms) to its commit in history",
                prometheus_client::metrics::histogram::Histogram::new(
                    crate::metrics::seconds_buckets(),
                ),
            ),
        }
    });
    &METRICS
}
