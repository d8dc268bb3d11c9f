//! `agora up`, as a newcomer runs it: everything starts on the auth config, the development
//! user and manager exist, and the commands it prints work.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agora_up_runs_everything_with_a_development_user_and_manager() {
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().expect("temporary directory");
    let (port, http_port) = (free_port(), free_port());
    let mut child = Command::new(component_binary("agora").expect("agora is built"))
        .args(["up", "--port", &port.to_string(), "--http-port", &http_port.to_string()])
        .args(["--banks", "1", "--workers", "1", "--likes-nodes", "1", "--dir"])
        .arg(dir.path())
        .env_remove("NATS_USER")
        .env_remove("NATS_PASSWORD")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("agora up starts");
    let stdout = child.stdout.take().expect("piped");
    let _up = Up { child };
    let (said, heard) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if said.send(line).is_err() {
                break;
            }
        }
    });
    let mut printed = String::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !printed.contains("Press Ctrl-C to stop.") {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let line = heard
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("agora up says it is up within 60 s; it said:\n{printed}"));
        printed.push_str(&line);
        printed.push('\n');
    }
    let user_password = dev_value("AGORA_DEV_USER_PASSWORD").expect("in dev.env");
    let manager_password = dev_value("AGORA_MANAGER_PASSWORD").expect("in dev.env");
    assert!(printed.contains(&format!("{DEV_USER} / {user_password}")), "{printed}");
    assert!(printed.contains(&format!("{DEV_MANAGER} / {manager_password}")), "{printed}");

    // The CLI, as printed: log in, then act as the development user.
    let credentials = dir.path().join("credentials.json");
    let agora = |args: &[&str], password: Option<&str>| {
        let mut command = Command::new(component_binary("agora").expect("agora is built"));
        command
            .args(args)
            .env("NATS_URL", format!("nats://127.0.0.1:{port}"))
            .env("AGORA_CREDENTIALS", &credentials)
            .env_remove("NATS_USER")
            .env_remove("NATS_PASSWORD")
            .env_remove("AGORA_PASSWORD");
        if let Some(password) = password {
            command.env("AGORA_PASSWORD", password);
        }
        let output = command.output().expect("agora runs");
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
}
