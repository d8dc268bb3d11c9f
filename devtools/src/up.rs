//! `agora up`: the whole system on this machine, for trying it out.
//!
//! Starts a nats-server (JetStream on) on a fixed port with the accounts and permissions of
//! `nats/config/accounts.conf`, the auth service, the ledger, bank instances, the task
//! service, the chat service, the coin exchange, two file servers (over `<dir>/files`, with a
//! sample file or two on first run), likes nodes and workers, keeps their data and logs under
//! one directory, restarts whatever dies (the nats-server too, on its port and store; a process
//! that keeps dying before it is ready, or within 10 s of being ready again, after a backoff of
//! 1 s doubling up to 30 s), and stops everything on Ctrl-C or SIGTERM, whatever is down: each
//! component is asked to stop (SIGTERM: it finishes what it is doing and lets go of its lease)
//! and killed only if it has not within 5 s (or at a second Ctrl-C), then the server.
//!
//! Every component logs in as its role with the development password of `dev.env`; people
//! sign up and in. A development manager and a development user are made at the first start
//! and printed, so the dashboard and the CLI can be tried at once.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use agora_nats::AgoraClient;
use agora_nats::connection::{NatsArgs, connect_once};
use agora_nats::error::ErrorCode;
use anyhow::Context;

use crate::process::{
    Component, NatsServer, NatsServerOptions, READY_LINE, component_binary, dev_value,
};

/// The development user `agora up` makes (its password is `AGORA_DEV_USER_PASSWORD` in
/// `dev.env`).
pub const DEV_USER: &str = "alice";
/// The first manager's name (its password is `AGORA_MANAGER_PASSWORD` in `dev.env`).
pub const DEV_MANAGER: &str = "manager";
/// How long the auth service may take to answer its first sign-up.
const AUTH_READY_WITHIN: Duration = Duration::from_secs(30);
/// How often `agora up` looks at what it runs.
const CHECK_EVERY: Duration = Duration::from_millis(500);
/// How long components get to stop on their own (SIGTERM) before they are killed.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// The longest wait before restarting a process that keeps exiting before it is ready.
const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(30);
/// How long a restarted process must stay up for its next exit to be restarted at once: one
/// that dies sooner is in a crash loop and is restarted after the backoff, as one that dies
/// before it is ready.
const STABLE_AFTER: Duration = Duration::from_secs(10);

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

    /// Starts it and waits until it is ready.
    fn start(&self, logs: &Path) -> anyhow::Result<Component> {
        self.with_envs(|envs| Component::start(&self.name, &self.binary, &self.args, envs, logs))
    }

    /// Starts it and returns at once (a restart: `agora up` goes on watching everything).
    fn spawn(&self, logs: &Path) -> anyhow::Result<Component> {
        self.with_envs(|envs| {
            Component::spawn(&self.name, &self.binary, &self.args, envs, logs, READY_LINE)
        })
    }

    fn with_envs<T>(&self, run: impl FnOnce(&[(&str, &str)]) -> T) -> T {
        let password = crate::process::dev_password(self.role).unwrap_or_default();
        let mut envs: Vec<(&str, &str)> =
            vec![("NATS_USER", self.role), ("NATS_PASSWORD", password.as_str())];
        envs.extend(self.envs.iter().map(|(key, value)| (*key, value.as_str())));
        run(&envs)
    }
}

/// Where a supervised process is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Life {
    /// Ready (or, for a component, started and said so) `since`, after the `attempt`-th
    /// restart in a row (0: its first start, or up for [`STABLE_AFTER`] before its last exit).
    Up { since: Instant, attempt: u32 },
    /// Restarted, not ready yet: the `attempt`-th restart in a row.
    Starting { attempt: u32 },
    /// Exited before it was ready (or could not be started): started again at `at`.
    Waiting { at: Instant, attempt: u32 },
}

/// How long to wait before the `attempt`-th restart in a row of a process that keeps exiting
/// before it is ready (or soon after): 1 s, 2 s, 4 s, ... [`RESTART_BACKOFF_MAX`].
fn backoff(attempt: u32) -> Duration {
    Duration::from_secs(1u64 << attempt.saturating_sub(1).min(5)).min(RESTART_BACKOFF_MAX)
}

/// What one look at a supervised process found.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Nothing,
    /// It exited while up: restart it now.
    Exited(String),
    /// It exited before it was ready, or within [`STABLE_AFTER`] of a restart's readiness
    /// (`up_for`): restart it after the backoff.
    Failed {
        status: String,
        up_for: Option<Duration>,
    },
    /// Ready again after a restart.
    Ready,
    /// Its backoff is over: restart it.
    Due,
}

impl Life {
    fn look(self, exited: Option<String>, ready: bool, now: Instant) -> Seen {
        match (self, exited) {
            (Life::Up { since, attempt }, Some(status))
                if attempt > 0 && now.saturating_duration_since(since) < STABLE_AFTER =>
            {
                Seen::Failed { status, up_for: Some(now.saturating_duration_since(since)) }
            }
            (Life::Up { .. }, Some(status)) => Seen::Exited(status),
            (Life::Up { .. }, None) => Seen::Nothing,
            (Life::Starting { .. }, _) if ready => Seen::Ready,
            (Life::Starting { .. }, Some(status)) => Seen::Failed { status, up_for: None },
            (Life::Starting { .. }, None) => Seen::Nothing,
            (Life::Waiting { at, .. }, _) if now >= at => Seen::Due,
            (Life::Waiting { .. }, _) => Seen::Nothing,
        }
    }

    /// The restart that comes after this state (a stable process's exit starts the count
    /// afresh: [`Life::look`] calls it `Exited`).
    fn attempt(self, seen: &Seen) -> u32 {
        match (self, seen) {
            (Life::Up { .. }, Seen::Exited(_)) => 1,
            (
                Life::Up { attempt, .. }
                | Life::Starting { attempt }
                | Life::Waiting { attempt, .. },
                _,
            ) => attempt + 1,
        }
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

/// Acts on what a look at a process found: says it, and restarts the process when it is time.
fn supervise(
    name: &str,
    log: &Path,
    life: &mut Life,
    seen: Seen,
    now: Instant,
    restart: impl FnOnce() -> anyhow::Result<u32>,
) {
    let attempt = life.attempt(&seen);
    match seen {
        Seen::Nothing => return,
        Seen::Ready => {
            println!("{name} is ready again");
            *life = Life::Up { since: now, attempt: attempt - 1 };
            return;
        }
        Seen::Failed { status, up_for } => {
            let delay = backoff(attempt - 1);
            let when = match up_for {
                None => "before it was ready".to_owned(),
                Some(up_for) => format!("{} ms after it was ready again", up_for.as_millis()),
            };
            println!(
                "{name} exited {when} ({status}); restarting it in {} s (log: {})",
                delay.as_secs(),
                log.display()
            );
            *life = Life::Waiting { at: now + delay, attempt: attempt - 1 };
            return;
        }
        Seen::Exited(status) => println!("{name} exited ({status})"),
        Seen::Due => {}
    }
    *life = match restart() {
        Ok(pid) => {
            println!("{name} restarted: pid {pid} (log: {})", log.display());
            Life::Starting { attempt }
        }
        Err(error) => {
            let delay = backoff(attempt);
            println!("could not restart {name}: {error:#}; trying again in {} s", delay.as_secs());
            Life::Waiting { at: now + delay, attempt }
        }
    };
}

/// Runs until Ctrl-C / SIGTERM.
pub async fn run(options: UpOptions) -> anyhow::Result<()> {
    std::fs::create_dir_all(&options.dir)?;
    let dir = std::fs::canonicalize(&options.dir)?;
    // Another `agora up` on this directory would start a second server on the same JetStream
    // store and second components on the same data directories.
    let _dir = agora_nats::sqlite::lock_dir(&dir).with_context(|| {
        format!("agora up --dir {}: is another agora up running?", dir.display())
    })?;
    // Both ports are checked before anything starts: a taken one would otherwise be found
    // only once the server or the gateway fails, after the others have started.
    for (port, flag) in [(options.port, "--port"), (options.http_port, "--http-port")] {
        std::net::TcpListener::bind(("127.0.0.1", port)).with_context(|| {
            format!("port {port} ({flag}) is taken: another agora up or program listens on it; pick another with {flag}")
        })?;
    }
    let logs = dir.join("logs");
    let mut nats = NatsServer::start(&NatsServerOptions {
        port: Some(options.port),
        dir: dir.join("nats"),
        auth: true,
    })?;
    let url = nats.url().to_owned();
    println!(
        "nats-server {} pid {} listening on {url} (log: {})",
        crate::process::NATS_SERVER_VERSION,
        nats.id(),
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
        ("AGORA_AUTH_KICK_USER", "auth-kick".to_owned()),
        ("AGORA_AUTH_KICK_PASSWORD", dev("NATS_PASSWORD_AUTH_KICK")?),
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
         \x20 agora task list; agora task watch\n\
         \x20 agora chat                          # as {DEV_USER}; bob in a third terminal\n\
         \x20 agora chat send hello everyone; agora chat history --room all; agora chat who\n\
         \x20 agora coins assets; agora bank deposit {DEV_USER} 100000\n\
         \x20 agora coins buy TSLA 2 --user {DEV_USER}\n\
         \x20 agora coins portfolio {DEV_USER}; agora coins history\n\
         \x20 agora files list; agora files get docs/sample-3MiB.bin -o /tmp/sample.bin\n\
         \x20 agora likes like post-42; agora likes count post-42; agora likes top\n\
         \x20 agora likes nodes                  # the nodes, their load and the leader\n\
         \x20 AGORA_PASSWORD={manager_password} agora login {DEV_MANAGER}   # then, as the manager:\n\
         \x20 agora task workers; agora users    # the live workers; everyone's roles\n\
         \x20 nats --user operator --password {operator} micro ls   # the nats CLI, as the operator\n\
         Data and logs: {}\nPress Ctrl-C to stop.",
        dir.display(),
    );

    // Nothing below waits for a process: a restarted one is looked at again on the next
    // tick, so Ctrl-C is heard within one tick whatever is down.
    let shutdown = agora_nats::telemetry::shutdown_signal();
    tokio::pin!(shutdown);
    let mut check = tokio::time::interval(CHECK_EVERY);
    let started = Life::Up { since: Instant::now(), attempt: 0 };
    let mut nats_life = started;
    let mut lives = vec![started; specs.len()];
    let nats_log = nats.log().to_owned();
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            _ = check.tick() => {
                let now = Instant::now();
                let exited = nats.exit_status().map(|status| status.to_string());
                let seen = nats_life.look(exited, nats.ready(), now);
                supervise("nats-server", &nats_log, &mut nats_life, seen, now, || {
                    nats.restart()?;
                    Ok(nats.id())
                });
                for ((component, spec), life) in running.iter_mut().zip(&specs).zip(&mut lives) {
                    let exited = component.exit_status().map(|status| status.to_string());
                    let seen = life.look(exited, component.ready(), now);
                    let log = component.log().to_owned();
                    supervise(&spec.name, &log, life, seen, now, || {
                        *component = spec.spawn(&logs)?;
                        Ok(component.id())
                    });
                }
            }
        }
    }
    // Components first, while the server is there for them to release their leases. A second
    // Ctrl-C (or SIGTERM), heard from here on, cuts their grace short.
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupted = signal(SignalKind::interrupt())?;
    let mut terminated = signal(SignalKind::terminate())?;
    println!("stopping");
    for component in &mut running {
        component.terminate();
    }
    let deadline = tokio::time::Instant::now() + STOP_GRACE;
    let mut look = tokio::time::interval(Duration::from_millis(20));
    let hurried = loop {
        tokio::select! {
            _ = interrupted.recv() => break true,
            _ = terminated.recv() => break true,
            _ = look.tick() => {
                let all_stopped =
                    running.iter_mut().all(|component| component.exit_status().is_some());
                if all_stopped || tokio::time::Instant::now() >= deadline {
                    break false;
                }
            }
        }
    };
    for (component, spec) in running.iter_mut().zip(&specs) {
        if component.exit_status().is_none() {
            if hurried {
                println!("{} is still stopping: killing it (asked twice)", spec.name);
            } else {
                println!("{} did not stop within {STOP_GRACE:?}: killing it", spec.name);
            }
        }
    }
    drop(running);
    drop(nats);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restarts_back_off_from_one_second_doubling_to_thirty() {
        let waits: Vec<u64> = (1..=9).map(|attempt| backoff(attempt).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30, 30, 30]);
        assert_eq!(backoff(0), Duration::from_secs(1));
        assert_eq!(backoff(u32::MAX), RESTART_BACKOFF_MAX);
    }

    /// Every state against every observation: what `agora up` does next.
    #[test]
    fn a_look_at_a_process_is_judged_by_where_it_was() {
        let now = Instant::now();
        let later = now + Duration::from_secs(3);
        let gone = || Some("signal: 9 (SIGKILL)".to_owned());
        let failed = |up_for| Seen::Failed { status: gone().unwrap(), up_for };
        let first = Life::Up { since: now, attempt: 0 };
        let back = Life::Up { since: now, attempt: 2 };
        let starting = Life::Starting { attempt: 2 };
        let waiting = Life::Waiting { at: later, attempt: 2 };
        for ready in [false, true] {
            // Up: only an exit matters (a ready line of its start is old news).
            for up in [first, back] {
                assert_eq!(up.look(None, ready, now), Seen::Nothing);
                assert_eq!(up.look(None, ready, now + STABLE_AFTER), Seen::Nothing);
                assert_eq!(
                    up.look(gone(), ready, now + STABLE_AFTER),
                    Seen::Exited(gone().unwrap())
                );
            }
            // The first start's exit is restarted at once however soon it comes; a restart's
            // exit only once it has been up long enough.
            assert_eq!(first.look(gone(), ready, now), Seen::Exited(gone().unwrap()));
            assert_eq!(back.look(gone(), ready, later), failed(Some(later - now)));
            let almost = now + STABLE_AFTER - Duration::from_millis(1);
            assert_eq!(back.look(gone(), ready, almost), failed(Some(almost - now)));
            // A clock read before `since` (never, but) is no crash loop of negative length.
            assert_eq!(
                Life::Up { since: later, attempt: 2 }.look(gone(), ready, now),
                failed(Some(Duration::ZERO))
            );
            // Waiting: only the clock matters (the exited process says nothing new).
            assert_eq!(waiting.look(gone(), ready, now), Seen::Nothing);
            assert_eq!(waiting.look(gone(), ready, later), Seen::Due);
            assert_eq!(waiting.look(None, ready, later + Duration::from_secs(1)), Seen::Due);
        }
        // Starting: ready wins (it said so before it died: the next look sees the exit).
        assert_eq!(starting.look(None, false, now), Seen::Nothing);
        assert_eq!(starting.look(None, true, now), Seen::Ready);
        assert_eq!(starting.look(gone(), true, now), Seen::Ready);
        assert_eq!(starting.look(gone(), false, now), failed(None));
        // Which restart in a row comes next.
        assert_eq!(back.attempt(&Seen::Exited(gone().unwrap())), 1);
        assert_eq!(back.attempt(&failed(Some(later - now))), 3);
        assert_eq!(starting.attempt(&Seen::Ready), 3);
        assert_eq!(starting.attempt(&failed(None)), 3);
        assert_eq!(waiting.attempt(&Seen::Due), 3);
    }

    /// A process that keeps dying before it is ready, or soon after, is restarted ever more
    /// slowly, and one that stays up starts counting afresh.
    #[test]
    fn supervision_restarts_at_once_then_backs_off_then_starts_afresh() {
        let now = Instant::now();
        let log = Path::new("x.log");
        let mut life = Life::Up { since: now, attempt: 0 };
        let mut restarts = 0;
        let mut restart = || -> anyhow::Result<u32> {
            restarts += 1;
            Ok(restarts)
        };
        let failed = |up_for| Seen::Failed { status: "exit 1".into(), up_for };
        supervise("x", log, &mut life, Seen::Exited("killed".into()), now, &mut restart);
        assert_eq!(life, Life::Starting { attempt: 1 });
        supervise("x", log, &mut life, failed(None), now, &mut restart);
        assert_eq!(life, Life::Waiting { at: now + Duration::from_secs(1), attempt: 1 });
        supervise("x", log, &mut life, Seen::Due, now, &mut restart);
        assert_eq!(life, Life::Starting { attempt: 2 });
        supervise("x", log, &mut life, failed(None), now, &mut restart);
        assert_eq!(life, Life::Waiting { at: now + Duration::from_secs(2), attempt: 2 });
        supervise("x", log, &mut life, Seen::Due, now, &mut restart);
        supervise("x", log, &mut life, Seen::Ready, now, &mut restart);
        assert_eq!(life, Life::Up { since: now, attempt: 3 });
        // Ready, then dead again at once: a crash loop, backed off as if it never came up.
        let soon = now + Duration::from_secs(1);
        supervise("x", log, &mut life, failed(Some(soon - now)), soon, &mut restart);
        assert_eq!(life, Life::Waiting { at: soon + Duration::from_secs(4), attempt: 3 });
        supervise("x", log, &mut life, Seen::Due, soon, &mut restart);
        assert_eq!(life, Life::Starting { attempt: 4 });
        supervise("x", log, &mut life, Seen::Ready, soon, &mut restart);
        assert_eq!(life, Life::Up { since: soon, attempt: 4 });
        // Up long enough: its next exit is restarted at once, counting from 1 again.
        supervise(
            "x",
            log,
            &mut life,
            Seen::Exited("killed".into()),
            soon + STABLE_AFTER,
            &mut restart,
        );
        assert_eq!(life, Life::Starting { attempt: 1 });
        assert_eq!(restarts, 5);
        // A restart that cannot even spawn waits too.
        let mut life = Life::Up { since: now, attempt: 0 };
        let failing = || -> anyhow::Result<u32> { anyhow::bail!("no binary") };
        supervise("x", log, &mut life, Seen::Exited("killed".into()), now, failing);
        assert_eq!(life, Life::Waiting { at: now + Duration::from_secs(1), attempt: 1 });
    }
}
