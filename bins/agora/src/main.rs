//! `agora`: the command-line client for every Agora capability, `agora up` and `agora bench`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use agora_devtools::bench::{
    self, BankBenchOptions, ChatBenchOptions, CoinsBenchOptions, FilesBenchOptions,
    GatewayBenchOptions, LikesBenchOptions, TasksBenchOptions,
};
use agora_devtools::health;
use agora_devtools::up::{self, UpOptions};
use agora_nats::connection::{self, NatsArgs};
use agora_nats::{AgoraClient, ClientError, telemetry};
use clap::{Args, Parser, Subcommand};

mod account;
mod bank;
mod chat;
mod coins;
mod files;
mod likes;
mod task;
mod workflow;

/// Agora: a NATS-native, event-driven system. Talks to the services over NATS.
#[derive(Debug, Parser)]
#[command(version, propagate_version = true)]
struct Cli {
    #[command(flatten)]
    nats: Login,
    /// Print the raw JSON reply instead of readable text.
    #[arg(long, global = true)]
    json: bool,
    /// How long to wait for a reply, in milliseconds.
    #[arg(long, global = true, env = "AGORA_TIMEOUT_MS", default_value_t = 5_000)]
    timeout_ms: u64,
    /// Where `agora login` keeps its token (default ~/.config/agora/credentials.json).
    #[arg(long, global = true, env = "AGORA_CREDENTIALS")]
    credentials: Option<PathBuf>,
    /// Trace this call: every service it reaches records its span (sampled), and the trace id
    /// is printed on stderr (`trace <id>`), to find in the logs or a trace viewer.
    #[arg(long, global = true)]
    trace: bool,
    #[command(subcommand)]
    command: Command,
}

/// Where and as whom to connect. As [`NatsArgs`], but the user flags are `--nats-user` and
/// `--nats-password`: `--user` names a coins or likes user in this client's commands.
#[derive(Debug, Args)]
struct Login {
    /// NATS server URL; several, separated by commas, for a cluster.
    #[arg(long, global = true, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    server: String,
    /// NATS user name (with --nats-password).
    #[arg(long, global = true, env = "NATS_USER", requires = "nats_password")]
    nats_user: Option<String>,
    /// Password of --nats-user.
    #[arg(long, global = true, env = "NATS_PASSWORD", hide_env_values = true)]
    nats_password: Option<String>,
    /// A credentials file (user JWT and NKey seed).
    #[arg(long, global = true, env = "NATS_CREDS")]
    creds: Option<PathBuf>,
    /// A file holding an NKey seed.
    #[arg(long, global = true, env = "NATS_NKEY")]
    nkey: Option<PathBuf>,
    /// The CA certificate (PEM) the server's TLS certificate is checked against; with it,
    /// the connection must be TLS.
    #[arg(long, global = true, env = "NATS_CA")]
    tls_ca: Option<PathBuf>,
}

impl Login {
    fn nats(self) -> NatsArgs {
        NatsArgs {
            server: self.server,
            user: self.nats_user,
            password: self.nats_password,
            token: None,
            creds: self.creds,
            nkey: self.nkey,
            token_user: None,
            tls_ca: self.tls_ca,
        }
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    #[command(flatten)]
    Account(account::AccountCommand),
    /// Money (and assets): deposit, withdraw, balance, transfer, transfers (batches), hold,
    /// post, void, history.
    #[command(subcommand)]
    Bank(bank::BankCommand),
    /// Tasks: submit, get, list, cancel, wait, watch; recurring schedules; list workers.
    #[command(subcommand)]
    Task(task::TaskCommand),
    /// Workflows: tasks that depend on each other (chains, fan-out/fan-in, compensation).
    #[command(subcommand)]
    Workflow(workflow::WorkflowCommand),
    /// Chat: interactive (`agora chat --name alice`), or send, history, who.
    Chat(chat::ChatArgs),
    /// The coin exchange: assets, buy, sell, portfolio, history, order; admin add/remove/update.
    #[command(subcommand)]
    Coins(coins::CoinsCommand),
    /// Files: get (progress bar, resume, digest check), list, stat, cache; put, rm (managers).
    #[command(subcommand)]
    Files(files::FilesCommand),
    /// Likes: like, unlike, count, top; the nodes and their leader.
    #[command(subcommand)]
    Likes(likes::LikesCommand),
    /// Measure Agora against raw NATS in one run.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Exit 0 when a service instance on this host answers $SRV.PING, or an HTTP URL answers
    /// 2xx (the containers' health checks).
    Health(HealthArgs),
    /// Run the whole system locally (nats-server, auth, ledger, banks, tasks, workers, chat,
    /// coins, files, likes, the gateway and its dashboard) until Ctrl-C, restarting whatever
    /// dies (the nats-server too, on its port and store; a crash loop after a backoff). A second
    /// Ctrl-C stops it without waiting.
    Up(UpArgs),
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// bank.balance and bank.transfer vs raw request-reply echo, at 1 and 256 in flight.
    Bank(BankBenchArgs),
    /// Trivial tasks submitted and awaited end to end vs raw queue-group request-reply.
    Tasks(TasksBenchArgs),
    /// Chat messages to a room's members, recorded in history, vs raw NATS fan-out.
    Chat(ChatBenchArgs),
    /// Likes taken by 3 nodes vs raw request-reply, and the time until every node agrees.
    Likes(LikesBenchArgs),
    /// Coin orders (buy and sell) vs raw request-reply echo and vs bank.transfer.
    Coins(CoinsBenchArgs),
    /// Downloads of a cached file by concurrent clients vs raw chunk request-reply, in bytes/s.
    Files(FilesBenchArgs),
    /// HTTP GET /balance/{account} through the gateway vs the same request over raw NATS.
    Gateway(GatewayBenchArgs),
    /// The raw NATS baseline: reply to every request on agora.bench.echo with its payload.
    #[command(hide = true)]
    EchoResponder,
    /// The raw baseline of `bench files`: reply with as many bytes as asked.
    #[command(hide = true)]
    ChunkResponder,
}

#[derive(Debug, Args)]
struct BankBenchArgs {
    /// Seconds per measured row.
    #[arg(long, default_value_t = 3)]
    seconds: u64,
    /// Bank instances to start.
    #[arg(long, default_value_t = 1)]
    banks: usize,
    /// Accounts the load spreads over.
    #[arg(long, default_value_t = 1_000)]
    accounts: usize,
    /// Client connections the load spreads over.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// nats-server nodes: 1, or a local cluster (2 to 5) with the ledger and the echo
    /// responder on the first node and the banks and client connections on the others.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=bench::NATS_NODES_MAX as i64))]
    nats_nodes: u8,
    /// On the accounts config: the components log in as their roles and each connection is a
    /// person (through the auth callout) moving and reading their own account; the raw echo
    /// crosses the same account import. One node.
    #[arg(long, conflicts_with = "nats_nodes")]
    auth: bool,
    /// Measure `agora.bank.transfers` at these batch sizes (transfers/s, next to raw echo of
    /// the same payload and SQLite's own ceiling of N rows per fsynced transaction) instead of
    /// single operations. `--batch` alone: 1,100,1000,8190.
    #[arg(long, value_delimiter = ',', num_args = 0.., default_missing_value = "1,100,1000,8190",
          value_parser = clap::value_parser!(u16).range(1..=8190), conflicts_with = "auth")]
    batch: Option<Vec<u16>>,
}

#[derive(Debug, Args)]
struct TasksBenchArgs {
    /// Seconds per measured row.
    #[arg(long, default_value_t = 3)]
    seconds: u64,
    /// Workers to start.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Client connections the load spreads over.
    #[arg(long, default_value_t = 4)]
    connections: usize,
}

#[derive(Debug, Args)]
struct ChatBenchArgs {
    /// Seconds of measurement per side.
    #[arg(long, default_value_t = 6)]
    seconds: u64,
    /// Receivers: raw subscribers, and members of the chat room.
    #[arg(long, default_value_t = 16)]
    members: usize,
    /// Messages in flight at most.
    #[arg(long, default_value_t = 1_000)]
    window: u64,
}

#[derive(Debug, Args)]
struct LikesBenchArgs {
    /// Seconds of measurement per side.
    #[arg(long, default_value_t = 6)]
    seconds: u64,
    /// Likes (and raw requests) in flight.
    #[arg(long, default_value_t = 256)]
    in_flight: usize,
    /// Likes nodes (and raw echo responders) to run.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Client connections the load spreads over.
    #[arg(long, default_value_t = 4)]
    connections: usize,
}

#[derive(Debug, Args)]
struct CoinsBenchArgs {
    /// Seconds of measurement per side.
    #[arg(long, default_value_t = 6)]
    seconds: u64,
    /// Orders (and transfers, and raw requests) in flight.
    #[arg(long, default_value_t = 64)]
    in_flight: usize,
    /// Client connections the load spreads over.
    #[arg(long, default_value_t = 4)]
    connections: usize,
}

#[derive(Debug, Args)]
struct FilesBenchArgs {
    /// Seconds of measurement per side.
    #[arg(long, default_value_t = 6)]
    seconds: u64,
    /// Concurrent downloading clients (each on its own connection).
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Size of the cached file, in bytes.
    #[arg(long, default_value_t = 8 * 1024 * 1024)]
    file_bytes: usize,
}

#[derive(Debug, Args)]
struct GatewayBenchArgs {
    /// Seconds of measurement per side.
    #[arg(long, default_value_t = 6)]
    seconds: u64,
    /// HTTP keep-alive connections, one request in flight on each.
    #[arg(long, default_value_t = 64)]
    http_connections: usize,
    /// NATS connections of the raw side (as many requests in flight as HTTP connections).
    #[arg(long, default_value_t = 4)]
    nats_connections: usize,
    /// Accounts the reads spread over.
    #[arg(long, default_value_t = 1000)]
    accounts: usize,
}

#[derive(Debug, Args)]
struct HealthArgs {
    /// A micro service name (`agora-bank`): an instance on this host must answer $SRV.PING.
    #[arg(long)]
    service: Option<String>,
    /// Look for the instance on this host name instead of this machine's.
    #[arg(long, requires = "service")]
    host: Option<String>,
    /// An http:// URL that must answer 2xx (`http://127.0.0.1:8222/healthz`).
    #[arg(long, conflicts_with = "service", required_unless_present = "service")]
    http: Option<String>,
    /// Print the --http response's body (at most 16 MiB) instead of a report.
    #[arg(long, requires = "http")]
    body: bool,
}

#[derive(Debug, Args)]
struct UpArgs {
    /// Port of the local nats-server.
    #[arg(long, default_value_t = 4222)]
    port: u16,
    /// Where data and logs go.
    #[arg(long, env = "AGORA_DIR", default_value = ".agora")]
    dir: PathBuf,
    /// Bank instances to run.
    #[arg(long, default_value_t = 2)]
    banks: usize,
    /// Workers to run.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Likes nodes to run.
    #[arg(long, default_value_t = 3)]
    likes_nodes: usize,
    /// Port of the gateway (the dashboard and the HTTP API).
    #[arg(long, default_value_t = 8080)]
    http_port: u16,
}

#[tokio::main]
async fn main() -> ExitCode {
    let matches = <Cli as clap::CommandFactory>::command().get_matches();
    let cli = match <Cli as clap::FromArgMatches>::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(error) => error.exit(),
    };
    // The command's names (`bank transfer`), never its values: a span's name.
    let mut operation = vec!["agora"];
    let mut level = &matches;
    while let Some((name, sub)) = level.subcommand() {
        operation.push(name);
        level = sub;
    }
    let operation = operation.join(" ");
    // Failures reach the user as one `error [code]: ...` line; the NATS client's own report of
    // a refused login and the warning of a refused publish would only say it twice.
    telemetry::init("warn,async_nats=off,agora_nats::connection=error");
    let span = cli.trace.then(|| {
        agora_nats::trace::init("cli");
        agora_nats::trace::Trace::root(true)
    });
    let started = (std::time::SystemTime::now(), std::time::Instant::now());
    let result = agora_nats::trace::scope(span, run(cli)).await;
    if let Some(span) = span {
        agora_nats::trace::record(agora_nats::trace::Finished {
            span,
            parent: None,
            operation: &operation,
            kind: opentelemetry::trace::SpanKind::Client,
            started: started.0,
            elapsed: started.1.elapsed(),
            error: result.as_ref().err().map(|_| "failed"),
            attributes: Vec::new(),
        });
        agora_nats::trace::flush();
        eprintln!("trace {}", span.trace_id);
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            match error.downcast_ref::<ClientError>() {
                Some(ClientError::Service(service)) => {
                    eprintln!("error [{}]: {}", service.code, service.message);
                    let anonymous = ANONYMOUS.load(std::sync::atomic::Ordering::Relaxed);
                    if anonymous && service.code == agora_nats::ErrorCode::Forbidden {
                        eprintln!(
                            "you are not signed in: `agora login <name>` first (or give \
                             --nats-user, --creds or --nkey)"
                        );
                    }
                }
                Some(other) => eprintln!("error [{}]: {other}", other.code()),
                None => eprintln!("error: {error:#}"),
            }
            ExitCode::FAILURE
        }
    }
}

/// A time on the wire (milliseconds since the Unix epoch) as people read it, in UTC:
/// `2026-12-05T04:55:45.123Z`. `--json` output keeps the milliseconds.
pub(crate) fn utc(ms: u64) -> String {
    let at = std::time::UNIX_EPOCH + Duration::from_millis(ms);
    humantime::format_rfc3339_millis(at).to_string()
}

/// `count` of a thing, as people say it: `1 like`, `2 likes`, `0 likes`.
pub(crate) fn counted(count: u64, one: &str, many: &str) -> String {
    format!("{count} {}", if count == 1 { one } else { many })
}

/// A time given on the command line: milliseconds since the Unix epoch (as the wire has it),
/// or an RFC 3339 time as [`utc`] prints it (`2026-12-05T04:55:45.123Z`).
pub(crate) fn time_ms(text: &str) -> Result<u64, String> {
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse().map_err(|_| format!("{text} is too large a time in milliseconds"));
    }
    agora_core::tasks::schedule::parse_rfc3339(text).map_err(|_| {
        format!("{text:?} is neither milliseconds since the Unix epoch nor an RFC 3339 time (2026-12-05T04:55:45.123Z)")
    })
}

/// Prints a reply: its JSON with `--json`, else the readable text.
pub(crate) fn print(json: bool, value: serde_json::Value, text: String) {
    if json {
        println!("{value}");
    } else {
        println!("{text}");
    }
}

async fn connect_as(server: &NatsArgs, timeout_ms: u64) -> anyhow::Result<AgoraClient> {
    let timeout = Duration::from_millis(timeout_ms);
    let nats =
        connection::connect_once(server, timeout, |options| options.name("agora-cli")).await?;
    Ok(AgoraClient::new(nats).with_timeout(Duration::from_millis(timeout_ms)))
}

/// Whether the command connected with no credentials at all (no flags, no saved token): on a
/// server with users it may only sign up, so a refusal says how to sign in.
static ANONYMOUS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Connects with the flags' credentials, else `agora login`'s saved token, else anonymously.
async fn connect_saved(
    server: &NatsArgs,
    credentials: Option<&std::path::Path>,
    timeout_ms: u64,
) -> anyhow::Result<AgoraClient> {
    let explicit = server.user.is_some() || server.creds.is_some() || server.nkey.is_some();
    let saved = match credentials {
        Some(path) if !explicit => account::load(path)?,
        _ => None,
    };
    ANONYMOUS.store(saved.is_none() && !explicit, std::sync::atomic::Ordering::Relaxed);
    match saved {
        Some(saved) => {
            let args = NatsArgs::token(server.server.clone(), &saved.name, &saved.token)
                .with_tls_ca(server.tls_ca.clone());
            connect_as(&args, timeout_ms).await.map_err(|error| {
                let refused = error.chain().any(|cause| {
                    cause.downcast_ref::<async_nats::ConnectError>().is_some_and(|e| {
                        e.kind() == async_nats::ConnectErrorKind::AuthorizationViolation
                    })
                });
                if !refused {
                    return error;
                }
                ClientError::Service(agora_nats::ServiceError::new(
                    agora_nats::ErrorCode::Unauthenticated,
                    format!(
                        "the saved token of {0} was refused (it expired, was revoked, or the \
                         password changed): `agora login {0}` again",
                        saved.name
                    ),
                ))
                .into()
            })
        }
        None => connect_as(server, timeout_ms).await,
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let Cli { nats, json, timeout_ms, credentials, command, trace: _ } = cli;
    let server = nats.nats();
    let credentials = account::credentials_path(credentials.as_deref());
    let connect = |server: &NatsArgs, timeout_ms: u64| {
        let (server, credentials) = (server.clone(), credentials.clone());
        async move { connect_saved(&server, credentials.as_deref(), timeout_ms).await }
    };
    match command {
        Command::Account(command) => {
            let as_user = |login: account::ConnectAs| {
                let server = server.clone();
                let saved = connect(&server, timeout_ms);
                async move {
                    match login {
                        account::ConnectAs::User(name, password) => {
                            let args = NatsArgs::user(server.server.clone(), &name, &password)
                                .with_tls_ca(server.tls_ca.clone());
                            connect_as(&args, timeout_ms).await
                        }
                        account::ConnectAs::Anonymous => {
                            let args = NatsArgs::anonymous(server.server.clone())
                                .with_tls_ca(server.tls_ca.clone());
                            connect_as(&args, timeout_ms).await
                        }
                        account::ConnectAs::Saved => saved.await,
                    }
                }
            };
            account::run(command, credentials.clone(), as_user, json).await
        }
        Command::Bank(command) => {
            bank::run(&connect(&server, timeout_ms).await?, command, json).await
        }
        Command::Task(command) => {
            task::run(&connect(&server, timeout_ms).await?, command, json).await
        }
        Command::Workflow(command) => {
            workflow::run(&connect(&server, timeout_ms).await?, command, json).await
        }
        Command::Chat(args) => chat::run(&connect(&server, timeout_ms).await?, args, json).await,
        Command::Coins(command) => {
            coins::run(&connect(&server, timeout_ms).await?, command, json).await
        }
        Command::Files(command) => {
            files::run(&connect(&server, timeout_ms).await?, command, json).await
        }
        Command::Likes(command) => {
            likes::run(&connect(&server, timeout_ms).await?, command, json).await
        }
        Command::Bench(BenchCommand::Bank(args)) => {
            bench::bank(BankBenchOptions {
                seconds: args.seconds,
                banks: args.banks,
                accounts: args.accounts,
                connections: args.connections,
                nats_nodes: usize::from(args.nats_nodes),
                auth: args.auth,
                batches: args.batch.unwrap_or_default().into_iter().map(usize::from).collect(),
            })
            .await?;
            Ok(())
        }
        Command::Bench(BenchCommand::Tasks(args)) => {
            bench::tasks(TasksBenchOptions {
                seconds: args.seconds,
                workers: args.workers,
                connections: args.connections,
            })
            .await?;
            Ok(())
        }
        Command::Bench(BenchCommand::Chat(args)) => {
            bench::chat(ChatBenchOptions {
                seconds: args.seconds,
                members: args.members,
                window: args.window,
            })
            .await?;
            Ok(())
        }
        Command::Bench(BenchCommand::Likes(args)) => {
            bench::likes(LikesBenchOptions {
                seconds: args.seconds,
                in_flight: args.in_flight,
                nodes: args.nodes,
                connections: args.connections,
            })
            .await?;
            Ok(())
        }
        Command::Bench(BenchCommand::Coins(args)) => {
            bench::coins(CoinsBenchOptions {
                seconds: args.seconds,
                in_flight: args.in_flight,
                connections: args.connections,
            })
            .await?;
            Ok(())
        }
        Command::Bench(BenchCommand::Files(args)) => {
            bench::files(FilesBenchOptions {
                seconds: args.seconds,
                clients: args.clients,
                file_bytes: args.file_bytes,
            })
            .await?;
            Ok(())
        }
        Command::Bench(BenchCommand::Gateway(args)) => {
            bench::gateway(GatewayBenchOptions {
                seconds: args.seconds,
                http_connections: args.http_connections,
                nats_connections: args.nats_connections,
                accounts: args.accounts,
            })
            .await?;
            Ok(())
        }
        Command::Bench(BenchCommand::ChunkResponder) => {
            bench::chunk_responder(&server.server, telemetry::shutdown_signal()).await
        }
        Command::Bench(BenchCommand::EchoResponder) => {
            bench::echo_responder(&server, telemetry::shutdown_signal()).await
        }
        Command::Health(args) => {
            let within = Duration::from_millis(timeout_ms);
            let report = match (args.service, args.http) {
                (Some(service), _) => {
                    let client = connect(&server, timeout_ms).await?;
                    health::check_service(client.nats(), &service, args.host.as_deref(), within)
                        .await?
                }
                (None, Some(url)) => health::check_http(&url, within, args.body).await?,
                (None, None) => anyhow::bail!("give --service or --http"),
            };
            println!("{report}");
            Ok(())
        }
        Command::Up(args) => {
            up::run(UpOptions {
                port: args.port,
                dir: args.dir,
                banks: args.banks,
                workers: args.workers,
                likes_nodes: args.likes_nodes,
                http_port: args.http_port,
            })
            .await
        }
    }
}
