//! `agora up`, as a newcomer runs it: everything starts on the auth config, the development
//! user and manager exist, and the commands it prints work.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use agora_devtools::process::{component_binary, dev_value};
use agora_devtools::up::{DEV_MANAGER, DEV_USER};

/// `agora up` in its own process group: stopped with SIGTERM (it stops its components), and
/// the whole group killed if it does not stop in time.
struct Up {
    child: Child,
}

impl Drop for Up {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        for _ in 0..100 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = Command::new("kill").args(["-KILL", "--", &format!("-{pid}")]).status();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A running `agora up` and the lines it prints.
struct Running {
    up: Up,
    heard: std::sync::mpsc::Receiver<String>,
    printed: String,
}

impl Running {
    /// Starts `agora up` (one bank, worker and likes node) and waits until it says it is up.
    fn start(dir: &std::path::Path, port: u16, http_port: u16) -> Self {
        use std::os::unix::process::CommandExt;
        let mut child = Command::new(component_binary("agora").expect("agora is built"))
            .args(["up", "--port", &port.to_string(), "--http-port", &http_port.to_string()])
            .args(["--banks", "1", "--workers", "1", "--likes-nodes", "1", "--dir"])
            .arg(dir)
            .env_remove("NATS_USER")
            .env_remove("NATS_PASSWORD")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("agora up starts");
        let stdout = child.stdout.take().expect("piped");
        let (said, heard) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if said.send(line).is_err() {
                    break;
                }
            }
        });
        let mut running = Self { up: Up { child }, heard, printed: String::new() };
        running.until(Duration::from_secs(60), |printed| printed.contains("Press Ctrl-C to stop."));
        running
    }

    /// Reads what it prints until `done` holds for all it printed so far, failing after
    /// `within`.
    fn until(&mut self, within: Duration, done: impl Fn(&str) -> bool) {
        let deadline = std::time::Instant::now() + within;
        while !done(&self.printed) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = self.heard.recv_timeout(left).unwrap_or_else(|_| {
                panic!("agora up did not say it within {within:?}; it said:\n{}", self.printed)
            });
            self.printed.push_str(&line);
            self.printed.push('\n');
        }
    }

    /// Sends `signal` (`-INT`, `-TERM`) to `agora up` alone and waits until it has exited
    /// (10 s at most), reading what it printed meanwhile.
    fn stop(&mut self, signal: &str) -> std::process::ExitStatus {
        let pid = self.up.child.id().to_string();
        let sent = Command::new("kill").args([signal, &pid]).status();
        assert!(sent.expect("kill runs").success());
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(status) = self.up.child.try_wait().expect("agora up") {
                break status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "agora up still runs 10 s after kill {signal}; it said:\n{}",
                self.printed
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        while let Ok(line) = self.heard.recv_timeout(Duration::from_secs(1)) {
            self.printed.push_str(&line);
            self.printed.push('\n');
        }
        status
    }

    /// The pid it printed last for `name` (`nats-server`, or a component such as `bank-1`).
    fn pid(&self, name: &str) -> u32 {
        self.printed
            .lines()
            .rev()
            .find_map(|line| {
                let words: Vec<&str> = line.split_whitespace().collect();
                let at = words.iter().position(|word| *word == "pid")?;
                let named = words.first() == Some(&name) || words.get(1) == Some(&name);
                named.then(|| words.get(at + 1)?.parse().ok()).flatten()
            })
            .unwrap_or_else(|| panic!("no pid of {name} in:\n{}", self.printed))
    }
}

/// Runs a second `agora up` that must refuse to start: what it said on stderr.
fn refused(dir: &std::path::Path, port: u16, http_port: u16) -> String {
    let mut second = Command::new(component_binary("agora").expect("agora is built"))
        .args(["up", "--port", &port.to_string(), "--http-port", &http_port.to_string()])
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("agora up starts");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = second.try_wait().expect("agora up") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            second.kill().ok();
            panic!("a second agora up (--dir {}) still runs after 10 s", dir.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut said = String::new();
    std::io::Read::read_to_string(&mut second.stderr.take().expect("piped"), &mut said).ok();
    assert!(!status.success(), "{said}");
    said
}

/// `kill -9 <pid>`.
fn kill_hard(pid: u32) {
    let killed = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
    assert!(killed.expect("kill runs").success(), "kill -9 {pid}");
}

/// The CLI against `agora up`'s server, with its own credentials file.
fn cli(port: u16, credentials: &std::path::Path, args: &[&str], password: Option<&str>) -> Output {
    let mut command = Command::new(component_binary("agora").expect("agora is built"));
    command
        .args(args)
        .env("NATS_URL", format!("nats://127.0.0.1:{port}"))
        .env("AGORA_CREDENTIALS", credentials)
        .env_remove("NATS_USER")
        .env_remove("NATS_PASSWORD")
        .env_remove("AGORA_PASSWORD");
    if let Some(password) = password {
        command.env("AGORA_PASSWORD", password);
    }
    command.output().expect("agora runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agora_up_runs_everything_with_a_development_user_and_manager() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let (port, http_port) = (free_port(), free_port());
    let mut running = Running::start(dir.path(), port, http_port);
    let printed = running.printed.clone();

    // A second `agora up` on the same directory (a second server on the same store) refuses.
    let said = refused(dir.path(), free_port(), free_port());
    assert!(said.contains("is another agora up running?"), "{said}");
    assert!(said.contains(&format!("(process {})", running.up.child.id())), "{said}");
    // So does one on another directory but a port in use, before it starts anything.
    let elsewhere = tempfile::tempdir().expect("temporary directory");
    for (ports, flag) in
        [((port, free_port()), "--port"), ((free_port(), http_port), "--http-port")]
    {
        let said = refused(elsewhere.path(), ports.0, ports.1);
        assert!(said.contains(&format!("({flag}) is taken")), "{said}");
        assert!(!elsewhere.path().join("logs").exists(), "it started something: {said}");
    }
    let user_password = dev_value("AGORA_DEV_USER_PASSWORD").expect("in dev.env");
    let manager_password = dev_value("AGORA_MANAGER_PASSWORD").expect("in dev.env");
    assert!(printed.contains(&format!("{DEV_USER} / {user_password}")), "{printed}");
    assert!(printed.contains(&format!("{DEV_MANAGER} / {manager_password}")), "{printed}");

    // The CLI, as printed: log in, then act as the development user.
    let credentials = dir.path().join("credentials.json");
    let agora = |args: &[&str], password: Option<&str>| {
        let output = cli(port, &credentials, args, password);
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        let error = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(output.status.success(), "agora {args:?}: {text}{error}");
        text
    };
    agora(&["login", DEV_USER], Some(&user_password));
    assert_eq!(agora(&["whoami"], None).trim(), format!("{DEV_USER} (user)"));
    assert_eq!(
        agora(&["bank", "deposit", DEV_USER, "500", "--id", "first-deposit"], None).trim(),
        format!("{DEV_USER}: balance 500")
    );
    agora(&["signup", "bob"], Some("bob-password-1"));
    let moved = agora(&["bank", "transfer", DEV_USER, "bob", "200"], None);
    assert_eq!(moved.trim(), format!("transferred 200: {DEV_USER} balance 300, bob balance 200"));
    let done = agora(&["task", "submit", "fibonacci", "90", "--wait"], None);
    assert!(done.contains("completed"), "{done}");

    // The dashboard: the manager signs in with the printed password.
    let http = reqwest::Client::new();
    let signed = http
        .post(format!("http://127.0.0.1:{http_port}/api/auth/login"))
        .json(&serde_json::json!({"name": DEV_MANAGER, "password": manager_password}))
        .send()
        .await
        .expect("the gateway answers");
    assert_eq!(signed.status(), 200);
    let me: serde_json::Value = signed.json().await.expect("json");
    assert_eq!(me["role"], "manager");

    // Stopped as a process manager stops it (SIGTERM to it alone), it stops its components
    // the same way: each finishes, says so and lets go of its lease, before any is killed.
    let status = running.stop("-TERM");
    assert!(status.success(), "{status}");
    assert!(running.printed.ends_with("stopping\n"), "{}", running.printed);
    let logs = dir.path().join("logs");
    for (component, said) in [
        ("ledger", "ledger stopping"),
        ("bank-1", "bank stopping"),
        ("worker-1", "worker stopping"),
    ] {
        let log = std::fs::read_to_string(logs.join(format!("{component}.log"))).expect("its log");
        assert!(log.contains(said), "{component} did not stop on its own:\n{log}");
    }
}

/// `kill -9` of the nats-server and a component at once: `agora up` starts both again (the
/// server on its port and store), everything reconnects and the money path works; a component
/// killed again as soon as it is back is restarted after a backoff; with the server down and a
/// component restarting, Ctrl-C (SIGINT) still stops everything at once, and a second Ctrl-C
/// does not wait for a component that does not stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agora_up_brings_back_the_server_and_components_killed_and_stops_at_once() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let (port, http_port) = (free_port(), free_port());
    let mut running = Running::start(dir.path(), port, http_port);
    let credentials = dir.path().join("credentials.json");
    let password = dev_value("AGORA_DEV_USER_PASSWORD").expect("in dev.env");
    let login = cli(port, &credentials, &["login", DEV_USER], Some(&password));
    assert!(login.status.success(), "{login:?}");
    let deposit =
        |id: &str| cli(port, &credentials, &["bank", "deposit", DEV_USER, "5", "--id", id], None);
    assert!(deposit("before").status.success());

    kill_hard(running.pid("nats-server"));
    kill_hard(running.pid("bank-1"));
    running.until(Duration::from_secs(60), |printed| {
        printed.contains("nats-server is ready again") && printed.contains("bank-1 is ready again")
    });
    assert!(running.printed.contains("nats-server exited (signal: 9"), "{}", running.printed);
    assert!(running.printed.contains("bank-1 exited (signal: 9"), "{}", running.printed);
    // Dead again as soon as it is back: a crash loop, restarted after a backoff.
    kill_hard(running.pid("bank-1"));
    running.until(Duration::from_secs(30), |printed| {
        printed.matches("bank-1 is ready again").count() >= 2
    });
    let crashed = running.printed.lines().find(|line| line.contains("after it was ready again"));
    let crashed = crashed.unwrap_or_else(|| panic!("no crash loop seen:\n{}", running.printed));
    assert!(crashed.starts_with("bank-1 exited "), "{crashed}");
    assert!(crashed.contains("(signal: 9 (SIGKILL)); restarting it in 1 s"), "{crashed}");
    // Everything reconnects: a deposit through the restarted bank lands (its ledger and the
    // auth callout reconnected too), and the earlier one was kept by the server's store.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let landed = deposit("after");
        if landed.status.success() {
            assert_eq!(
                String::from_utf8_lossy(&landed.stdout).trim(),
                format!("{DEV_USER}: balance 10")
            );
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no deposit within 30 s: {landed:?}");
        std::thread::sleep(Duration::from_millis(250));
    }

    // The server down again and a component restarting that cannot be ready without it.
    kill_hard(running.pid("nats-server"));
    let gateway = running.pid("gateway");
    kill_hard(gateway);
    running.until(Duration::from_secs(10), |printed| {
        printed.contains("gateway exited") && printed.matches("nats-server exited").count() >= 2
    });
    // A component that cannot stop (stopped by SIGSTOP, it never hears the SIGTERM): a second
    // Ctrl-C ends the grace at once.
    let stuck = running.pid("worker-1");
    let paused = Command::new("kill").args(["-STOP", &stuck.to_string()]).status();
    assert!(paused.expect("kill runs").success());
    let pid = running.up.child.id();
    let sent = Command::new("kill").args(["-INT", &pid.to_string()]).status();
    assert!(sent.expect("kill runs").success());
    running.until(Duration::from_secs(5), |printed| printed.ends_with("stopping\n"));
    let status = running.stop("-INT");
    assert!(status.success(), "{status}");
    assert!(
        running.printed.contains("worker-1 is still stopping: killing it (asked twice)"),
        "{}",
        running.printed
    );
    // Nothing it started is left (its processes are in its process group). A restart it had
    // just begun may leave a helper of the server's launcher (a pyenv shim resolving the
    // binary) to finish on its own: given a moment.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let left = Command::new("pgrep").args(["-g", &pid.to_string()]).output().expect("pgrep");
        let pids =
            String::from_utf8_lossy(&left.stdout).split_whitespace().collect::<Vec<_>>().join(",");
        if pids.is_empty() {
            break;
        }
        if std::time::Instant::now() > deadline {
            let ps = Command::new("ps").args(["-o", "pid,ppid,stat,args", "-p", &pids]).output();
            let ps =
                ps.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
            panic!(
                "left running 5 s after agora up stopped:\n{ps}\nagora up said:\n{}",
                running.printed
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
