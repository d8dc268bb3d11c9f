//! Logging setup shared by every binary: `tracing` to stderr, filtered by `RUST_LOG`, and
//! every info, warn and error event also published on `agora.logs.<service>` (see
//! [`publish_logs`]) so the gateway's Logs tab and `nats sub 'agora.logs.>'` show them live.
//!
//! Publishing never blocks the code that logs: the layer puts a bounded record on a bounded
//! queue ([`LOG_QUEUE_MAX`]) and counts what it had to drop; one task drains the queue into
//! NATS once the binary is connected (records logged before that wait in the queue).

use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::mpsc;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::clock::now_ms;
use crate::connection::{self, NatsArgs};
use crate::subjects;

/// Log records waiting to be published; more are dropped (and counted).
pub const LOG_QUEUE_MAX: usize = 1_024;
/// A published message is cut to this many bytes...
pub const LOG_MESSAGE_BYTES_MAX: usize = 2_048;
/// ...and keeps at most this many other fields, each cut to [`LOG_FIELD_BYTES_MAX`].
pub const LOG_FIELDS_MAX: usize = 16;
pub const LOG_FIELD_BYTES_MAX: usize = 256;

/// What the layer queues: the record without the publisher's service and instance.
#[derive(Debug)]
struct Queued {
    ts_ms: u64,
    level: Level,
    target: String,
    message: String,
    fields: serde_json::Map<String, serde_json::Value>,
    trace_id: Option<String>,
}

#[derive(Debug)]
struct LogQueue {
    receiver: Mutex<Option<mpsc::Receiver<Queued>>>,
    dropped: Arc<AtomicU64>,
}

static LOG_QUEUE: OnceLock<LogQueue> = OnceLock::new();

/// Installs the global subscriber. `default_filter` applies to stderr when `RUST_LOG` is
/// unset; the NATS publisher takes info and above whatever `RUST_LOG` says.
pub fn init(default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .with_filter(filter);
    let (sender, receiver) = mpsc::channel(LOG_QUEUE_MAX);
    let dropped = Arc::new(AtomicU64::new(0));
    let queue = LogQueue { receiver: Mutex::new(Some(receiver)), dropped: dropped.clone() };
    let publisher = (LOG_QUEUE.set(queue).is_ok())
        .then(|| PublishLayer { sender, dropped }.with_filter(LevelFilter::INFO));
    tracing_subscriber::registry().with(stderr).with(publisher).init();
}

/// Starts publishing this process's log records on `agora.logs.<service>` (once; later calls
/// and processes that did not [`init`] do nothing).
pub fn publish_logs(client: &async_nats::Client, service: &str, instance: &str) {
    let Some(queue) = LOG_QUEUE.get() else { return };
    let Some(mut receiver) = queue.receiver.lock().ok().and_then(|mut r| r.take()) else {
        return;
    };
    let client = client.clone();
    let subject = subjects::logs::subject(service);
    let service = service.to_owned();
    let instance = instance.to_owned();
    let dropped = queue.dropped.clone();
    tokio::spawn(async move {
        while let Some(queued) = receiver.recv().await {
            let record = LogRecord {
                ts_ms: queued.ts_ms,
                level: queued.level.as_str().to_ascii_lowercase(),
                service: service.clone(),
                instance: instance.clone(),
                target: queued.target,
                message: queued.message,
                fields: queued.fields,
                trace_id: queued.trace_id,
                dropped: dropped.swap(0, Ordering::Relaxed),
            };
            let Ok(payload) = serde_json::to_vec(&record) else { continue };
            // Publishing only fails once the client is closed: then nothing more can go out.
            if client.publish(subject.clone(), payload.into()).await.is_err() {
                return;
            }
        }
    });
}

/// Makes this process observable as instance `instance` of component `service`: its logs on
/// `agora.logs.<service>` ([`publish_logs`]), its metrics on `agora.metrics`
/// ([`crate::metrics::serve`]) and its trace spans ([`crate::trace::init`]).
pub fn observe(client: &async_nats::Client, service: &str, instance: &str) {
    crate::trace::init(service);
    publish_logs(client, service, instance);
    crate::metrics::spawn(client, service, instance);
}

/// An instance name for components that have no id of their own: `pid-<process id>`.
pub fn process_instance() -> String {
    format!("pid-{}", std::process::id())
}

/// The tracing layer behind [`publish_logs`]: never blocks, never allocates without bound.
struct PublishLayer {
    sender: mpsc::Sender<Queued>,
    dropped: Arc<AtomicU64>,
}

impl<S: Subscriber> Layer<S> for PublishLayer {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let Ok(permit) = self.sender.try_reserve() else {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let mut visitor = FieldVisitor::default();
        event.record(&mut visitor);
        let metadata = event.metadata();
        // The span the task works for, or the one the record is about (a recorded span).
        let trace_id =
            crate::trace::current().map(|trace| trace.trace_id.to_string()).or_else(|| {
                visitor.fields.get("trace_id").and_then(|id| id.as_str()).map(str::to_owned)
            });
        permit.send(Queued {
            ts_ms: now_ms(),
            level: *metadata.level(),
            target: metadata.target().to_owned(),
            message: visitor.message,
            fields: visitor.fields,
            trace_id,
        });
    }
}

#[derive(Default)]
struct FieldVisitor {
    message: String,
    fields: serde_json::Map<String, serde_json::Value>,
}

impl Visit for FieldVisitor {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.record_text(field, format!("{value:?}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.record_text(field, value.to_owned());
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.record_value(field, value.into());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.record_value(field, value.into());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.record_value(field, value.into());
    }
}

impl FieldVisitor {
    fn record_text(&mut self, field: &Field, mut text: String) {
        if field.name() == "message" {
            truncate(&mut text, LOG_MESSAGE_BYTES_MAX);
            self.message = text;
        } else {
            truncate(&mut text, LOG_FIELD_BYTES_MAX);
            self.record_value(field, text.into());
        }
    }

    fn record_value(&mut self, field: &Field, value: serde_json::Value) {
        if self.fields.len() < LOG_FIELDS_MAX {
            self.fields.insert(field.name().to_owned(), value);
        }
    }
}

/// Cuts `text` to at most `max` bytes on a character boundary.
fn truncate(text: &mut String, max: usize) {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
}

/// Connects to NATS with a recognisable client name and the given credentials, retrying
/// until a server is reachable (a component may start before its server); see
/// [`crate::connection`].
pub async fn connect(nats: &NatsArgs, name: &str) -> anyhow::Result<async_nats::Client> {
    let client = connection::connect_with(nats, |options| options.name(name)).await?;
    tracing::info!(server = %nats.server, as_ = %nats.identity(), "connected to NATS");
    Ok(client)
}

/// [`connect`], but the server does not deliver this connection's own messages back to its
/// subscriptions (a likes node needs none of its own events).
pub async fn connect_without_echo(
    nats: &NatsArgs,
    name: &str,
) -> anyhow::Result<async_nats::Client> {
    let client = connection::connect_with(nats, |options| options.name(name).no_echo()).await?;
    tracing::info!(server = %nats.server, as_ = %nats.identity(), "connected to NATS");
    Ok(client)
}

/// Resolves on Ctrl-C or SIGTERM: the graceful shutdown every binary waits for.
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(_) => {
                    interrupt.await.ok();
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    interrupt.await.ok();
}

/// What a component prints on stdout once it serves (followed by its name): supervising
/// processes (tests, `agora up`) wait for it.
pub const READY_LINE: &str = "AGORA_READY";

/// Tells a supervising process (tests, `agora up`) that the component is serving.
pub fn announce_ready(component: &str) {
    println!("{READY_LINE} {component}");
}

/// What an instance of a replicated service prints once it follows the log as a standby.
pub const STANDBY_LINE: &str = "AGORA_STANDBY";

/// Prints [`STANDBY_LINE`] (see `crate::replica`).
pub fn announce_standby(component: &str) {
    println!("{STANDBY_LINE} {component}");
}

/// Published on `agora.logs.<service>`: one info, warn or error event of a component.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogRecord {
    /// When it was logged (ms since the epoch).
    pub ts_ms: u64,
    /// `info`, `warn` or `error`.
    pub level: String,
    /// The component's short name (`bank`), as in the subject.
    pub service: String,
    /// Which instance of the component (its id, or its process id).
    pub instance: String,
    /// The Rust module that logged it.
    pub target: String,
    pub message: String,
    /// The event's other fields (at most 16, each cut to 256 bytes).
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub fields: serde_json::Map<String, serde_json::Value>,
    /// The trace the record belongs to (the span being handled when it was logged), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// Records this process dropped since the previous one it published (its queue was full).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub dropped: u64,
}

fn is_zero(value: &u64) -> bool {
    *value == 0
}
