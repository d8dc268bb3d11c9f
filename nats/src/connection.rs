//! Connecting to NATS: server URLs, credentials, the first connection, and permission reports.
//!
//! Every binary flattens [`NatsArgs`] into its flags: `--server` (`NATS_URL`, several URLs
//! separated by commas), and at most one way to authenticate: `--user`/`--password`
//! (`NATS_USER`/`NATS_PASSWORD`), `--token` (`NATS_TOKEN`, an Agora API token), `--creds`
//! (`NATS_CREDS`, a JWT credentials file) or `--nkey` (`NATS_NKEY`, a file holding an NKey
//! seed).
//!
//! A person's connection may read replies only under its own inbox prefix (`_INBOX.<user>`;
//! see `subjects::accounts`), so the prefix follows the user name: `--user`'s, or the name a
//! token belongs to ([`NatsArgs::token_user`]); an anonymous connection uses `_INBOX._anon`.
//!
//! [`connect_with`] retries until a server answers, so a component may start before the cluster,
//! but a refused login (wrong password, unknown user) is an error at once: retrying cannot fix
//! it, and a service that waited forever would hide the mistake.
//!
//! nats-server reports a permission violation on the connection (`-ERR 'Permissions Violation
//! for Publish to "agora.ledger.get.alice"'`), not on the request. Every connection made here
//! records those reports in [`Denials`] of its own (found by its inbox prefix, which is unique
//! to it: `<prefix>.<tag>`), and [`crate::AgoraClient`] turns one that names its request's
//! subject ([`Denials::denial_of`]) into a `forbidden` error at once instead of a timeout. A
//! violation on one connection never fails a request of another, in the same process or not.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::time::Duration;

use anyhow::{Context, bail};
use async_nats::{ConnectErrorKind, ConnectOptions, Event, ServerAddr, ServerError};
use tokio::sync::Notify;

/// Where and how to connect to NATS (flattened into every binary's flags).
#[derive(Debug, Clone, clap::Args)]
pub struct NatsArgs {
    /// NATS server URL; several, separated by commas, for a cluster.
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub server: String,
    /// User name (with --password).
    #[arg(long, env = "NATS_USER", requires = "password", conflicts_with_all = ["creds", "nkey"])]
    pub user: Option<String>,
    /// Password of --user.
    #[arg(long, env = "NATS_PASSWORD", hide_env_values = true, requires = "user")]
    pub password: Option<String>,
    /// An Agora API token (`agora login` makes one).
    #[arg(long, env = "NATS_TOKEN", hide_env_values = true,
          conflicts_with_all = ["user", "creds", "nkey"])]
    pub token: Option<String>,
    /// A credentials file (user JWT and NKey seed).
    #[arg(long, env = "NATS_CREDS", conflicts_with = "nkey")]
    pub creds: Option<PathBuf>,
    /// A file holding an NKey seed (`SU...`).
    #[arg(long, env = "NATS_NKEY")]
    pub nkey: Option<PathBuf>,
    /// Whose `--token` is (its replies come to `_INBOX.<user>`).
    #[arg(skip)]
    pub token_user: Option<String>,
    /// The CA certificate (PEM) the server's TLS certificate is checked against; with it,
    /// the connection must be TLS.
    #[arg(long, env = "NATS_CA")]
    pub tls_ca: Option<PathBuf>,
}

impl NatsArgs {
    /// No credentials: a server without authorization.
    pub fn anonymous(server: impl Into<String>) -> Self {
        Self {
            server: server.into(),
            user: None,
            password: None,
            token: None,
            creds: None,
            nkey: None,
            token_user: None,
            tls_ca: None,
        }
    }

    /// The same, checking the server's TLS certificate against `ca` (when given).
    pub fn with_tls_ca(self, ca: Option<PathBuf>) -> Self {
        Self { tls_ca: ca, ..self }
    }

    /// An API token of `user`.
    pub fn token(server: impl Into<String>, user: &str, token: &str) -> Self {
        Self {
            token: Some(token.to_owned()),
            token_user: Some(user.to_owned()),
            ..Self::anonymous(server)
        }
    }

    /// A user and password.
    pub fn user(server: impl Into<String>, user: &str, password: &str) -> Self {
        Self {
            user: Some(user.to_owned()),
            password: Some(password.to_owned()),
            ..Self::anonymous(server)
        }
    }

    /// The server URLs (`--server` split at commas).
    pub fn servers(&self) -> anyhow::Result<Vec<ServerAddr>> {
        let servers = self
            .server
            .split(',')
            .map(str::trim)
            .filter(|url| !url.is_empty())
            .map(|url| url.parse::<ServerAddr>().with_context(|| format!("bad NATS URL {url:?}")))
            .collect::<anyhow::Result<Vec<_>>>()?;
        if servers.is_empty() {
            bail!("no NATS server URL given");
        }
        Ok(servers)
    }

    /// Connect options carrying these credentials, and an inbox prefix and a record of
    /// permission violations of the connection's own.
    pub async fn options(&self) -> anyhow::Result<ConnectOptions> {
        let inbox_user = |user: &str| crate::subjects::accounts::inbox_prefix(Some(user));
        let (options, prefix) =
            match (&self.user, &self.password, &self.token, &self.creds, &self.nkey) {
                (Some(user), Some(password), None, None, None) => (
                    ConnectOptions::with_user_and_password(user.clone(), password.clone()),
                    inbox_user(user),
                ),
                (None, None, Some(token), None, None) => (
                    ConnectOptions::with_token(token.clone()),
                    self.token_user.as_deref().map_or_else(|| "_INBOX".to_owned(), inbox_user),
                ),
                (None, None, None, Some(creds), None) => (
                    ConnectOptions::with_credentials_file(creds).await.with_context(|| {
                        format!("cannot read credentials file {}", creds.display())
                    })?,
                    "_INBOX".to_owned(),
                ),
                (None, None, None, None, Some(path)) => {
                    let seed = std::fs::read_to_string(path).with_context(|| {
                        format!("cannot read NKey seed file {}", path.display())
                    })?;
                    (ConnectOptions::with_nkey(seed.trim().to_owned()), "_INBOX".to_owned())
                }
                (None, None, None, None, None) => {
                    (ConnectOptions::new(), crate::subjects::accounts::inbox_prefix(None))
                }
                _ => bail!("give one of --user/--password, --token, --creds or --nkey"),
            };
        // A prefix of this connection's own (still under the user's `_INBOX.<user>`), which
        // finds its denials.
        let prefix = format!("{prefix}.{}", nuid::next());
        let denials = Denials::register(prefix.clone());
        let options = options.custom_inbox_prefix(prefix);
        let options = match &self.tls_ca {
            Some(ca) => {
                if !ca.is_file() {
                    bail!("no CA certificate at {}", ca.display());
                }
                options.add_root_certificates(ca.clone()).require_tls(true)
            }
            None => options,
        };
        Ok(options.ping_interval(PING_INTERVAL).event_callback(move |event| {
            let denials = denials.clone();
            async move { denials.report(event) }
        }))
    }

    /// Who this connects as, for logs (never the secret).
    pub fn identity(&self) -> String {
        match (&self.user, &self.token, &self.creds, &self.nkey) {
            (Some(user), ..) => format!("user {user}"),
            (_, Some(_), ..) => {
                format!("the token of {}", self.token_user.as_deref().unwrap_or("a user"))
            }
            (_, _, Some(creds), _) => format!("credentials {}", creds.display()),
            (_, _, _, Some(nkey)) => format!("nkey {}", nkey.display()),
            _ => "no credentials".to_owned(),
        }
    }
}

/// How often a connection pings its server: a server that stopped answering (a node lost, a
/// network cut) is noticed after a few of these, and the client moves to another server.
const PING_INTERVAL: Duration = Duration::from_secs(5);

/// How long [`connect_with`] waits between attempts while no server answers (it doubles up to this).
const RETRY_DELAY_MAX: Duration = Duration::from_secs(2);

/// Connects, retrying while no server answers; a refused login fails at once. `configure`
/// adds per-connection options (a name, no echo, ...).
pub async fn connect_with(
    nats: &NatsArgs,
    configure: impl Fn(ConnectOptions) -> ConnectOptions,
) -> anyhow::Result<async_nats::Client> {
    let servers = nats.servers()?;
    let mut delay = Duration::from_millis(100);
    let mut attempts = 0u64;
    loop {
        let options = configure(nats.options().await?);
        match options.connect(servers.clone()).await {
            Ok(client) => return Ok(client),
            Err(error)
                if matches!(
                    error.kind(),
                    ConnectErrorKind::AuthorizationViolation | ConnectErrorKind::Authentication
                ) =>
            {
                bail!("NATS at {} refused {}: {error}", nats.server, nats.identity());
            }
            Err(error) => {
                attempts += 1;
                if attempts == 1 || attempts.is_multiple_of(10) {
                    tracing::warn!(server = %nats.server, %error, attempts, "cannot reach NATS yet; retrying");
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(RETRY_DELAY_MAX);
            }
        }
    }
}

/// One attempt within `timeout` (a command-line client: fail fast, say why).
pub async fn connect_once(
    nats: &NatsArgs,
    timeout: Duration,
    configure: impl Fn(ConnectOptions) -> ConnectOptions,
) -> anyhow::Result<async_nats::Client> {
    let servers = nats.servers()?;
    let options = configure(nats.options().await?).connection_timeout(timeout);
    options.connect(servers).await.with_context(|| {
        format!("cannot connect to NATS at {} as {}", nats.server, nats.identity())
    })
}

/// A permission violation nats-server reported on some connection of this process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PermissionDenial {
    /// `publish` or `subscribe`.
    pub operation: &'static str,
    pub subject: String,
}

/// One connection's last permission denials, numbered, and a wake-up for requests waiting on
/// them.
#[derive(Debug)]
pub struct Denials {
    /// The connection's inbox prefix (its replies come to `<prefix>.*`).
    prefix: String,
    recent: Mutex<VecDeque<(u64, PermissionDenial)>>,
    next: AtomicU64,
    notify: Notify,
}

/// Denials remembered per connection (a request only looks at those reported while it waits).
const DENIALS_KEPT: usize = 64;

/// The live connections' denials, by inbox prefix (a connection's entry goes with it).
static CONNECTIONS: LazyLock<Mutex<Vec<Weak<Denials>>>> = LazyLock::new(Mutex::default);

impl Denials {
    /// The record of a new connection with inbox prefix `prefix`; its event callback holds it,
    /// so it lives as long as the connection.
    fn register(prefix: String) -> Arc<Self> {
        let denials = Arc::new(Self {
            prefix,
            recent: Mutex::new(VecDeque::with_capacity(DENIALS_KEPT)),
            next: AtomicU64::new(0),
            notify: Notify::new(),
        });
        let mut all = CONNECTIONS.lock().unwrap_or_else(|p| p.into_inner());
        all.retain(|weak| weak.strong_count() > 0);
        all.push(Arc::downgrade(&denials));
        denials
    }

    /// The record of the connection `client` (made by [`connect_with`] or [`connect_once`]);
    /// none for a connection made otherwise.
    pub fn of(client: &async_nats::Client) -> Option<Arc<Self>> {
        let inbox = client.new_inbox();
        let all = CONNECTIONS.lock().unwrap_or_else(|p| p.into_inner());
        all.iter().filter_map(Weak::upgrade).find(|denials| {
            inbox.strip_prefix(denials.prefix.as_str()).is_some_and(|rest| rest.starts_with('.'))
        })
    }

    fn report(&self, event: Event) {
        if let Event::ServerError(ServerError::Other(message)) = &event
            && let Some(denial) = parse_denial(message)
        {
            tracing::warn!(operation = denial.operation, subject = %denial.subject, "NATS permission violation");
            let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
            if recent.len() == DENIALS_KEPT {
                recent.pop_front();
            }
            recent.push_back((self.next.fetch_add(1, Ordering::SeqCst), denial));
            drop(recent);
            self.notify.notify_waiters();
        }
    }

    /// Whether `denial` dooms a request to `subject`: publishing to it was refused, or
    /// subscribing to this connection's own reply inbox was.
    fn stops_request_to(&self, denial: &PermissionDenial, subject: &str) -> bool {
        match denial.operation {
            "publish" => denial.subject == subject,
            _ => denial.subject.starts_with(self.prefix.as_str()),
        }
    }

    /// Marks now: [`Self::denial_of`] looks at denials reported after its mark. Take it before
    /// sending the request, or a quick denial could be reported before anyone waits for it.
    pub fn mark(&self) -> u64 {
        self.next.load(Ordering::SeqCst)
    }

    /// Resolves with the first permission denial of this connection reported after `mark`
    /// that dooms a request to `subject`; pending forever if none comes.
    pub async fn denial_of(&self, mark: u64, subject: &str) -> PermissionDenial {
        let mut seen = mark;
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            // The common case, on every request: nothing new, no lock taken.
            if self.next.load(Ordering::SeqCst) > seen {
                let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
                for (number, denial) in recent.iter() {
                    if *number >= seen && self.stops_request_to(denial, subject) {
                        return denial.clone();
                    }
                }
                seen = self.next.load(Ordering::SeqCst);
            }
            notified.await;
        }
    }
}

/// Reads nats-server's `Permissions Violation for Publish to "<subject>"` (or `for
/// Subscription to`).
pub fn parse_denial(message: &str) -> Option<PermissionDenial> {
    let rest = message.split("Permissions Violation for ").nth(1)?;
    let operation = if rest.starts_with("Publish") {
        "publish"
    } else if rest.starts_with("Subscription") {
        "subscribe"
    } else {
        return None;
    };
    let quoted = rest.split_once(" to \"")?.1;
    let subject = quoted.split('"').next()?;
    Some(PermissionDenial { operation, subject: subject.to_owned() })
}

#[cfg(test)]
mod tests;
