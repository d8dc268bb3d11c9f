//! `agora up`: the whole system on this machine, for trying it out.
//!
//! Starts a nats-server (JetStream on) on a fixed port with the accounts and permissions of
//! `nats/config/accounts.conf`, the auth service, the ledger, bank instances, the task
//! service, the chat service, the coin exchange, two file servers (over `<dir>/files`, with a
//! sample file or two on first run), likes nodes and workers, keeps their data and logs under
//! one directory, restarts a component that dies, and stops everything on Ctrl-C.
//!
//! Every component logs in as its role with the development password of `dev.env`; people
//! sign up and in. A development manager and a development user are made at the first start
//! and printed, so the dashboard and the CLI can be tried at once.

use std::path::PathBuf;
use std::time::Duration;

use agora_nats::AgoraClient;
use agora_nats::connection::{NatsArgs, connect_once};
use agora_nats::error::ErrorCode;

use crate::process::{Component, NatsServer, NatsServerOptions, component_binary, dev_value};

/// The development user `agora up` makes (its password is `AGORA_DEV_USER_PASSWORD` in
/// `dev.env`).
pub const DEV_USER: &str = "alice";
/// The first manager's name (its password is `AGORA_MANAGER_PASSWORD` in `dev.env`).
pub const DEV_MANAGER: &str = "manager";
/// How long the auth service may take to answer its first sign-up.
const AUTH_READY_WITHIN: Duration = Duration::from_secs(30);

/// What `agora up` runs.
#[derive(Debug, Clone)]
pub struct UpOptions {
    pub port: u16,
    pub dir: PathBuf,
    pub banks: usize,
    pub workers: usize,
    pub likes_nodes: usize,
    /// The gateway's HTTP port (dashboard and API).
    pub http_port: u16,
}

struct Spec {
    name: String,
    binary: PathBuf,
    args: Vec<String>,
    /// The NATS user it logs in as (its password is the role's in `dev.env`).
    role: &'static str,
    /// More environment (the auth service's issuer key and first manager).
    envs: Vec<(&'static str, String)>,
}

impl Spec {
    fn new(
        name: impl Into<String>,
        binary: &str,
        role: &'static str,
        args: Vec<String>,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            name: name.into(),
            binary: component_binary(binary)?,
            args,
            role,
            envs: Vec::new(),
        })
    }

    fn start(&self, logs: &std::path::Path) -> anyhow::Result<Component> {
        let password = crate::process::dev_password(self.role).unwrap_or_default();
        let mut envs: Vec<(&str, &str)> =
            vec![("NATS_USER", self.role), ("NATS_PASSWORD", password.as_str())];
        envs.extend(self.envs.iter().map(|(key, value)| (*key, value.as_str())));
        Component::start(&self.name, &self.binary, &self.args, &envs, logs)
    }
}

/// A value of `dev.env` that must be there.
fn dev(key: &str) -> anyhow::Result<String> {
    dev_value(key).ok_or_else(|| anyhow::anyhow!("nats/config/dev.env has no {key}"))
}

/// Signs `name` up unless it exists: retried while the auth service is starting.
pub async fn sign_up(url: &str, name: &str, password: &str) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + AUTH_READY_WITHIN;
    loop {
        let attempt = async {
            let nats =
                connect_once(&NatsArgs::anonymous(url), Duration::from_secs(3), |o| o).await?;
            let client = AgoraClient::new(nats).with_timeout(Duration::from_secs(3));
            match client.signup(name, password).await {
                Ok(_) => Ok(()),
                Err(error) if error.code() == ErrorCode::NameTaken => Ok(()),
                Err(error) => Err(anyhow::Error::from(error)),
            }
        };
        match attempt.await {
            Ok(()) => return Ok(()),
            Err(error) if tokio::time::Instant::now() >= deadline => {
                return Err(error.context(format!("signing up {name}")));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

/// Runs until Ctrl-C / SIGTERM.
pub async fn run(options: UpOptions) -> anyhow::Result<()> {
    std::fs::create_dir_all(&options.dir)?;
    let dir = std::fs::canonicalize(&options.dir)?;
    let logs = dir.join("logs");
    let nats = NatsServer::start(&NatsServerOptions {
        port: Some(options.port),
        dir: dir.join("nats"),
        auth: true,
    })?;
    let url = nats.url().to_owned();
    println!(
        "nats-server {} listening on {url} (log: {})",
        crate::process::NATS_SERVER_VERSION,
        nats.log().display()
    );

    let data = |name: &str| -> Vec<String> {
        vec![
            "--server".into(),
            url.clone(),
            "--data-dir".into(),
            dir.join(name).display().to_string(),
        ]
    };
    let mut auth = Spec::new("auth", "agora-auth", "auth", {
        let mut args = data("auth");
        args.extend(["--manager-name".into(), DEV_MANAGER.into()]);
        args
    })?;
    let manager_password = dev("AGORA_MANAGER_PASSWORD")?;
    auth.envs = vec![
        ("AGORA_AUTH_ISSUER_SEED", dev("AGORA_AUTH_ISSUER_SEED")?),
        ("AGORA_MANAGER_PASSWORD", manager_password.clone()),
    ];
    let mut specs = vec![auth, Spec::new("ledger", "agora-ledger", "ledger", data("ledger"))?];
    for index in 1..=options.banks {
        let args =
            vec!["--server".into(), url.clone(), "--bank-id".into(), format!("bank-{index}")];
        specs.push(Spec::new(format!("bank-{index}"), "agora-bank", "bank", args)?);
    }
    specs.push(Spec::new("tasks", "agora-tasks", "tasks", data("tasks"))?);
    specs.push(Spec::new("chat", "agora-chat", "chat", data("chat"))?);
    specs.push(Spec::new("coins", "agora-coins", "coins", data("coins"))?);
    let served = dir.join("files");
    if !served.exists() {
        std::fs::create_dir_all(served.join("docs"))?;
        std::fs::write(
            served.join("welcome.txt"),
            "Welcome to Agora. Files in this directory are served by agora-files.\n",
        )?;
        let sample: Vec<u8> = (0..3 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(served.join("docs/sample-3MiB.bin"), sample)?;
    }
    for index in 1..=2 {
        let args =
            vec!["--server".into(), url.clone(), "--root".into(), served.display().to_string()];
        specs.push(Spec::new(format!("files-{index}"), "agora-files", "files", args)?);
    }
    for index in 1..=options.likes_nodes {
        let mut args = data(&format!("likes-{index}"));
        args.extend(["--node-id".into(), format!("likes-{index}")]);
        specs.push(Spec::new(format!("likes-{index}"), "agora-likes", "likes", args)?);
    }
    for index in 1..=options.workers {
        let args =
            vec!["--server".into(), url.clone(), "--worker-id".into(), format!("worker-{index}")];
        specs.push(Spec::new(format!("worker-{index}"), "agora-worker", "worker", args)?);
    }
    let http = format!("127.0.0.1:{}", options.http_port);
    let args = vec!["--server".into(), url.clone(), "--listen".into(), http.clone()];
    specs.push(Spec::new("gateway", "agora-gateway", "gateway", args)?);
    let mut running = Vec::new();
    for spec in &specs {
        let component = spec.start(&logs)?;
        println!(
            "started {:<10} pid {:<7} log {}",
            spec.name,
            component.id(),
            component.log().display()
        );
        running.push(component);
    }
    let user_password = dev("AGORA_DEV_USER_PASSWORD")?;
    sign_up(&url, DEV_USER, &user_password).await?;
    let operator = crate::process::dev_password("operator").unwrap_or_default();
    println!(
        "\nAgora is up. Dashboard: http://{http}/ : sign in as {DEV_USER} / {user_password} \
         (a user), or {DEV_MANAGER} / {manager_password} (the manager), or sign up.\n\
         API: http://{http}/api/openapi.json\n\
         Try, in another terminal:\n\
         \x20 export NATS_URL={url}\n\
         \x20 AGORA_PASSWORD={user_password} agora login {DEV_USER}   # or type the password\n\
         \x20 agora whoami\n\
         \x20 agora bank deposit {DEV_USER} 500 --id first-deposit\n\
         \x20 agora signup bob                   # a second user (type a password)\n\
         \x20 agora bank transfer {DEV_USER} bob 200; agora bank balance {DEV_USER}\n\
         \x20 agora task submit fibonacci 90 --wait\n\
         \x20 agora task submit sleep 3000 --wait\n\
         \x20 agora task list; agora task workers; agora task watch\n\
         \x20 agora chat                          # as {DEV_USER}; bob in a third terminal\n\
         \x20 agora chat send hello everyone; agora chat history --room all; agora chat who\n\
         \x20 agora coins assets; agora bank deposit {DEV_USER} 100000\n\
         \x20 agora coins buy TSLA 2 --user {DEV_USER}\n\
         \x20 agora coins portfolio {DEV_USER}; agora coins history\n\
         \x20 agora files list; agora files get docs/sample-3MiB.bin -o /tmp/sample.bin\n\
         \x20 agora likes like post-42; agora likes count post-42; agora likes top\n\
         \x20 agora likes nodes                  # the nodes, their load and the leader\n\
         \x20 nats --user operator --password {operator} micro ls   # the nats CLI, as the operator\n\
         Data and logs: {}\nPress Ctrl-C to stop.",
        dir.display(),
    );

    let shutdown = agora_nats::telemetry::shutdown_signal();
    tokio::pin!(shutdown);
    let mut check = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            _ = check.tick() => {
                for (component, spec) in running.iter_mut().zip(&specs) {
                    if component.exited() {
                        println!("{} exited; restarting it (log: {})", spec.name, component.log().display());
                        match spec.start(&logs) {
                            Ok(fresh) => *component = fresh,
                            Err(error) => println!("could not restart {}: {error:#}", spec.name),
                        }
                    }
                }
            }
        }
    }
    println!("stopping");
    drop(running);
    drop(nats);
    Ok(())
}
