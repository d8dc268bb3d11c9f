//! `agora up`: the whole system on this machine, for trying it out.
//!
//! Starts a nats-server (JetStream on) on a fixed port, the ledger, bank instances, the task
//! service, the chat service, the coin exchange, two file servers (over `<dir>/files`, with a
//! sample file or two on first run), likes nodes and workers, keeps their data and logs under one directory,
//! restarts a component that dies, and stops everything on Ctrl-C.

use std::path::PathBuf;
use std::time::Duration;

use crate::process::{Component, NatsServer, NatsServerOptions, component_binary};

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
    /// The gateway's manager token (coin admin in the dashboard and the API).
    pub manager_token: String,
}

struct Spec {
    name: String,
    binary: PathBuf,
    args: Vec<String>,
}

/// Runs until Ctrl-C / SIGTERM.
pub async fn run(options: UpOptions) -> anyhow::Result<()> {
    std::fs::create_dir_all(&options.dir)?;
    let dir = std::fs::canonicalize(&options.dir)?;
    let logs = dir.join("logs");
    let nats = NatsServer::start(&NatsServerOptions {
        port: Some(options.port),
        dir: dir.join("nats"),
        auth: false,
    })?;
    let url = nats.url().to_owned();
    println!(
        "nats-server {} listening on {url} (log: {})",
        crate::process::NATS_SERVER_VERSION,
        nats.log().display()
    );

    let mut specs = vec![Spec {
        name: "ledger".into(),
        binary: component_binary("agora-ledger")?,
        args: vec![
            "--server".into(),
            url.clone(),
            "--data-dir".into(),
            dir.join("ledger").display().to_string(),
        ],
    }];
    for index in 1..=options.banks {
        specs.push(Spec {
            name: format!("bank-{index}"),
            binary: component_binary("agora-bank")?,
            args: vec!["--server".into(), url.clone(), "--bank-id".into(), format!("bank-{index}")],
        });
    }
    specs.push(Spec {
        name: "tasks".into(),
        binary: component_binary("agora-tasks")?,
        args: vec![
            "--server".into(),
            url.clone(),
            "--data-dir".into(),
            dir.join("tasks").display().to_string(),
        ],
    });
    specs.push(Spec {
        name: "chat".into(),
        binary: component_binary("agora-chat")?,
        args: vec![
            "--server".into(),
            url.clone(),
            "--data-dir".into(),
            dir.join("chat").display().to_string(),
        ],
    });
    specs.push(Spec {
        name: "coins".into(),
        binary: component_binary("agora-coins")?,
        args: vec![
            "--server".into(),
            url.clone(),
            "--data-dir".into(),
            dir.join("coins").display().to_string(),
        ],
    });
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
        specs.push(Spec {
            name: format!("files-{index}"),
            binary: component_binary("agora-files")?,
            args: vec![
                "--server".into(),
                url.clone(),
                "--root".into(),
                served.display().to_string(),
            ],
        });
    }
    for index in 1..=options.likes_nodes {
        specs.push(Spec {
            name: format!("likes-{index}"),
            binary: component_binary("agora-likes")?,
            args: vec![
                "--server".into(),
                url.clone(),
                "--data-dir".into(),
                dir.join(format!("likes-{index}")).display().to_string(),
                "--node-id".into(),
                format!("likes-{index}"),
            ],
        });
    }
    for index in 1..=options.workers {
        specs.push(Spec {
            name: format!("worker-{index}"),
            binary: component_binary("agora-worker")?,
            args: vec![
                "--server".into(),
                url.clone(),
                "--worker-id".into(),
                format!("worker-{index}"),
            ],
        });
    }
    let http = format!("127.0.0.1:{}", options.http_port);
    specs.push(Spec {
        name: "gateway".into(),
        binary: component_binary("agora-gateway")?,
        args: vec![
            "--server".into(),
            url.clone(),
            "--listen".into(),
            http.clone(),
            "--manager-token".into(),
            options.manager_token.clone(),
        ],
    });
    let mut running = Vec::new();
    for spec in &specs {
        let component = Component::start(&spec.name, &spec.binary, &spec.args, &[], &logs)?;
        println!(
            "started {:<10} pid {:<7} log {}",
            spec.name,
            component.id(),
            component.log().display()
        );
        running.push(component);
    }
    println!(
        "\nAgora is up. Dashboard: http://{http}/ (manager token: {token})\n\
         API: http://{http}/api/openapi.json; curl http://{http}/balance/alice\n\
         Try, in another terminal:\n\
         \x20 export NATS_URL={url}\n\
         \x20 agora bank deposit alice 500 --id first-deposit\n\
         \x20 agora bank transfer alice bob 200\n\
         \x20 agora bank balance bob\n\
         \x20 agora task submit fibonacci 90 --wait\n\
         \x20 agora task submit sleep 3000 --wait\n\
         \x20 agora task list; agora task workers; agora task watch\n\
         \x20 agora chat --name alice           # and --name bob in a third terminal\n\
         \x20 agora chat send --name carol hello everyone; agora chat history; agora chat who\n\
         \x20 agora coins assets; agora bank deposit carol 100000\n\
         \x20 agora coins buy TSLA 2 --user carol; agora coins portfolio carol; agora coins history\n\
         \x20 agora files list; agora files get docs/sample-3MiB.bin -o /tmp/sample.bin\n\
         \x20 agora likes like post-42 --user alice; agora likes count post-42; agora likes top\n\
         \x20 agora likes nodes                 # the nodes, their load and the leader\n\
         \x20 nats micro ls                      # if you have the nats CLI\n\
         \x20 nats sub 'agora.>'\n\
         Data and logs: {}\nPress Ctrl-C to stop.",
        dir.display(),
        token = options.manager_token,
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
                        match Component::start(&spec.name, &spec.binary, &spec.args, &[], &logs) {
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
