//! Starting real processes locally: a `nats-server` and Agora component binaries.
//!
//! Used by the system tests, `agora bench` and `agora up`. Every process is killed when its
//! handle is dropped, and its output goes to a log file in a directory the caller owns, so a
//! failing test can show what a component said.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// The nats-server version Agora pins (installed by `scripts/install-nats-server`).
pub const NATS_SERVER_VERSION: &str = "2.15.1";
/// How long a process may take to report that it is ready.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);
/// The line a component prints on stdout once it is serving.
pub use agora_nats::telemetry::{READY_LINE, STANDBY_LINE};
/// What nats-server logs once it takes clients.
const NATS_READY_LINE: &str = "Server is ready";

/// Finds `nats-server`: `$AGORA_NATS_SERVER`, then `PATH`.
pub fn nats_server_binary() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("AGORA_NATS_SERVER") {
        return Ok(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join("nats-server");
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!(
        "nats-server not found on PATH; run scripts/install-nats-server \
         (installs nats-server {NATS_SERVER_VERSION} from PyPI) or set AGORA_NATS_SERVER"
    )
}

/// Finds an Agora binary (`agora-ledger`, ...) built in the same target directory as the
/// running executable (tests run from `target/<profile>/deps`).
pub fn component_binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot locate the running executable")?;
    let mut dir = exe.parent().map(Path::to_path_buf);
    while let Some(candidate_dir) = dir {
        let candidate = candidate_dir.join(name);
        if candidate.is_file() {
            return Ok(candidate);
        }
        dir = candidate_dir.parent().map(Path::to_path_buf);
        if candidate_dir.file_name().is_some_and(|n| n == "target") {
            break;
        }
    }
    bail!(
        "{name} not found next to {}; build it first: cargo build --workspace --bins",
        exe.display()
    )
}

/// Waits until `path` contains `needle`, returning the file's text, or fails after `timeout`
/// (or as soon as `child` exits).
fn wait_for_text(
    path: &Path,
    needle: &str,
    child: &mut Child,
    timeout: Duration,
) -> anyhow::Result<String> {
    let started = Instant::now();
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(needle) {
            return Ok(text);
        }
        if let Some(status) = child.try_wait()? {
            bail!("process exited ({status}) before it was ready; its log:\n{text}");
        }
        if started.elapsed() > timeout {
            bail!("not ready after {timeout:?}; its log:\n{text}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The single-node server configs (`nats/config/`), compiled in: `single.conf`, and
/// `single-auth.conf` (the same with the accounts, users and permissions of
/// `accounts.conf`). They are written next to the store of every server started here.
const CONFIGS: [(&str, &str); 4] = [
    ("single.conf", include_str!("../../nats/config/single.conf")),
    ("single-auth.conf", include_str!("../../nats/config/single-auth.conf")),
    ("accounts.conf", include_str!("../../nats/config/accounts.conf")),
    ("limits.conf", include_str!("../../nats/config/limits.conf")),
];
/// The development secrets (`nats/config/dev.env`): the passwords of the components' users in
/// `accounts.conf`, the callout's issuer key, the first manager's password.
pub const DEV_ENV: &str = include_str!("../../nats/config/dev.env");

/// The development password of a component's user in `accounts.conf` (`bank`, `auth`, ...).
pub fn dev_password(role: &str) -> Option<String> {
    dev_value(&format!("NATS_PASSWORD_{}", role.to_ascii_uppercase()))
}

/// A value in `dev.env` (`AGORA_MANAGER_TOKEN`, ...).
pub fn dev_value(key: &str) -> Option<String> {
    dev_env().into_iter().find(|(k, _)| k == key).map(|(_, value)| value)
}

fn dev_env() -> Vec<(String, String)> {
    DEV_ENV
        .lines()
        .map(str::trim)
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.split_once('='))
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .collect()
}

/// A port nothing listens on now (the OS picks it; it stays free unless someone takes it first).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Options for a local nats-server.
#[derive(Debug, Clone)]
pub struct NatsServerOptions {
    /// Client port; `None` picks a free one.
    pub port: Option<u16>,
    /// JetStream store, config and log directory.
    pub dir: PathBuf,
    /// Users and permissions (`single-auth.conf`, passwords from `dev.env`), or none
    /// (`single.conf`).
    pub auth: bool,
}

/// A running nats-server (JetStream on, loopback only), killed on drop.
#[derive(Debug)]
pub struct NatsServer {
    child: Child,
    url: String,
    /// How it was started (a restart starts it the same way, on the same port).
    options: NatsServerOptions,
    extra_args: Vec<String>,
    /// Whether the latest start is ready.
    ready: Readiness,
}

impl NatsServer {
    /// Starts a nats-server with its store and log under `options.dir`.
    pub fn start(options: &NatsServerOptions) -> anyhow::Result<Self> {
        Self::spawn(options, &[])
    }

    /// Starts a cluster of `nodes` servers on loopback (no authorization), each with its own
    /// store under `dir/node-<n>` and routes to all the others (`agora bench --nats-nodes`).
    /// They return once each is ready; routes form just after (see `bench::wait_for_routes`).
    pub fn start_cluster(dir: &Path, nodes: usize) -> anyhow::Result<Vec<Self>> {
        let route_ports = (0..nodes).map(|_| free_port()).collect::<anyhow::Result<Vec<_>>>()?;
        let routes = route_ports
            .iter()
            .map(|port| format!("nats-route://127.0.0.1:{port}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut servers = Vec::with_capacity(nodes);
        for (index, route_port) in route_ports.iter().enumerate() {
            let options = NatsServerOptions {
                port: None,
                dir: dir.join(format!("node-{index}")),
                auth: false,
            };
            let cluster = [
                "--name".to_owned(),
                format!("agora-{index}"),
                "--cluster_name".to_owned(),
                "agora-local".to_owned(),
                "--cluster".to_owned(),
                format!("nats://127.0.0.1:{route_port}"),
                "--routes".to_owned(),
                routes.clone(),
            ];
            servers.push(Self::spawn(&options, &cluster)?);
        }
        Ok(servers)
    }

    fn spawn(options: &NatsServerOptions, extra_args: &[String]) -> anyhow::Result<Self> {
        let (mut child, ready) = Self::launch(options, extra_args, false)?;
        let needle = "Listening for client connections on ";
        let text = match wait_for_text(&ready.log, NATS_READY_LINE, &mut child, STARTUP_TIMEOUT) {
            Ok(text) => text,
            Err(error) => {
                child.kill().ok();
                child.wait().ok();
                return Err(error.context("nats-server did not start"));
            }
        };
        let address = text
            .lines()
            .find_map(|line| line.split(needle).nth(1))
            .map(str::trim)
            .context("nats-server did not say where it listens")?;
        let mut options = options.clone();
        // A restart listens where this one does.
        options.port = Some(
            address
                .rsplit(':')
                .next()
                .and_then(|port| port.parse().ok())
                .context("nats-server's address has no port")?,
        );
        Ok(Self {
            child,
            url: format!("nats://{address}"),
            options,
            extra_args: extra_args.to_vec(),
            ready,
        })
    }

    /// Starts the process, its output (stdout and stderr) to `nats-server.log` in
    /// `options.dir`: a fresh log, or appended to (a restart); with what tells when it is ready.
    fn launch(
        options: &NatsServerOptions,
        extra_args: &[String],
        append: bool,
    ) -> anyhow::Result<(Child, Readiness)> {
        let binary = nats_server_binary()?;
        let store = options.dir.join("jetstream");
        std::fs::create_dir_all(&store)?;
        for (name, text) in CONFIGS {
            std::fs::write(options.dir.join(name), text)?;
        }
        let config =
            options.dir.join(if options.auth { "single-auth.conf" } else { "single.conf" });
        let log_path = options.dir.join("nats-server.log");
        let log = File::options()
            .create(true)
            .write(true)
            .append(append)
            .truncate(!append)
            .open(&log_path)?;
        // Counted once the log is as this start finds it (emptied, or as a restart appends).
        let ready = Readiness::new(&log_path, NATS_READY_LINE);
        let port = options.port.map_or("-1".to_owned(), |p| p.to_string());
        let child = Command::new(&binary)
            .arg("-c")
            .arg(&config)
            .args(["-a", "127.0.0.1", "-p", &port, "-js", "-sd"])
            .arg(&store)
            .args(extra_args)
            .envs(dev_env())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        Ok((child, ready))
    }

    /// Starts the server again the way it was started, on the same port and store, after it
    /// exited; returns at once (see [`NatsServer::ready`]).
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.child.kill().ok();
        self.child.wait().ok();
        (self.child, self.ready) = Self::launch(&self.options, &self.extra_args, true)?;
        Ok(())
    }

    /// Whether the latest start is ready for clients.
    pub fn ready(&self) -> bool {
        self.ready.reached()
    }

    /// How the process ended, once it has.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The server's process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> &Path {
        &self.ready.log
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

/// A line a process writes to its log once it is ready, counted from when it was started: a
/// restarted process appends to the log its predecessor wrote.
#[derive(Debug)]
struct Readiness {
    log: PathBuf,
    line: String,
    /// How often the log had the line before the start.
    before: usize,
}

impl Readiness {
    fn new(log: &Path, line: &str) -> Self {
        let before = std::fs::read_to_string(log).unwrap_or_default().matches(line).count();
        Self { log: log.to_owned(), line: line.to_owned(), before }
    }

    fn text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn reached(&self) -> bool {
        self.text().matches(self.line.as_str()).count() > self.before
    }
}

/// A running Agora component process, killed on drop.
#[derive(Debug)]
pub struct Component {
    child: Child,
    log: PathBuf,
    ready: Readiness,
}

impl Component {
    /// Starts `binary` with `args`, logging to `<log_dir>/<name>.log`, and waits until it
    /// prints [`READY_LINE`] (a replicated service: until it is the active instance).
    pub fn start(
        name: &str,
        binary: &Path,
        args: &[String],
        envs: &[(&str, &str)],
        log_dir: &Path,
    ) -> anyhow::Result<Self> {
        Self::start_until(name, binary, args, envs, log_dir, READY_LINE)
    }

    /// [`Component::start`], waiting for `line` instead (e.g. [`STANDBY_LINE`]).
    pub fn start_until(
        name: &str,
        binary: &Path,
        args: &[String],
        envs: &[(&str, &str)],
        log_dir: &Path,
        line: &str,
    ) -> anyhow::Result<Self> {
        let mut component = Self::spawn(name, binary, args, envs, log_dir, line)?;
        let started = Instant::now();
        loop {
            if component.ready() {
                return Ok(component);
            }
            if let Some(status) = component.exit_status() {
                let text = component.ready.text();
                bail!("{name} exited ({status}) before it was ready; its log:\n{text}");
            }
            if started.elapsed() > STARTUP_TIMEOUT {
                component.kill_hard();
                let text = component.ready.text();
                bail!("{name} not ready after {STARTUP_TIMEOUT:?}; its log:\n{text}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Starts `binary` and returns at once: [`Component::ready`] tells when it printed `line`
    /// (its log is `<log_dir>/<name>.log`, appended to).
    pub fn spawn(
        name: &str,
        binary: &Path,
        args: &[String],
        envs: &[(&str, &str)],
        log_dir: &Path,
        line: &str,
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(log_dir)?;
        let log = log_dir.join(format!("{name}.log"));
        let file = File::options().create(true).append(true).open(&log)?;
        let mut command = Command::new(binary);
        command.args(args).stdin(Stdio::null()).stdout(file.try_clone()?).stderr(file);
        for (key, value) in envs {
            command.env(key, value);
        }
        // Counted before the process can write.
        let ready = Readiness::new(&log, line);
        let child =
            command.spawn().with_context(|| format!("cannot start {}", binary.display()))?;
        Ok(Self { child, log, ready })
    }

    /// Whether it printed its ready line since it was started.
    pub fn ready(&self) -> bool {
        self.ready.reached()
    }

    /// How the process ended, once it has.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    pub fn log(&self) -> &Path {
        &self.log
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Asks the process to stop (SIGTERM: it finishes what it is doing, releases what it
    /// holds and exits); [`Component::exit_status`] tells when it has.
    pub fn terminate(&mut self) {
        if self.exit_status().is_none() {
            let pid = rustix::process::Pid::from_child(&self.child);
            rustix::process::kill_process(pid, rustix::process::Signal::TERM).ok();
        }
    }

    /// `kill -9`: the process gets no chance to clean up.
    pub fn kill_hard(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

impl Drop for Component {
    fn drop(&mut self) {
        self.kill_hard();
    }
}
