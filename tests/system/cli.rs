//! The `agora` command-line client against a running system.

use std::process::Command;

use agora_nats::process::component_binary;
use agora_tests::System;

fn agora(system: &System, args: &[&str]) -> (bool, String, String) {
    let output = Command::new(component_binary("agora").expect("agora is built"))
        .args(args)
        .env("NATS_URL", system.url())
        .output()
        .expect("agora runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bank_commands_print_readable_text_json_and_coded_errors() {
    let system = System::with_banks(1);

    let (ok, out, _) = agora(&system, &["bank", "deposit", "alice", "500", "--id", "d-1"]);
    assert!(ok);
    assert_eq!(out.trim(), "alice: balance 500");
    let (ok, out, _) = agora(&system, &["bank", "deposit", "alice", "500", "--id", "d-1"]);
    assert!(ok);
    assert_eq!(out.trim(), "alice: balance 500", "the same id is applied once");

    let (ok, out, _) = agora(&system, &["bank", "transfer", "alice", "bob", "200"]);
    assert!(ok);
    assert_eq!(out.trim(), "transferred 200: alice balance 300, bob balance 200");

    let (ok, out, _) = agora(&system, &["bank", "balance", "bob", "--json"]);
    assert!(ok);
    let json: serde_json::Value = serde_json::from_str(out.trim()).expect("JSON output");
    assert_eq!(json, serde_json::json!({"account": "bob", "balance": 200}));

    let (ok, out, err) = agora(&system, &["bank", "withdraw", "bob", "1000"]);
    assert!(!ok, "an error exits non-zero");
    assert!(out.is_empty());
    assert!(err.starts_with("error [insufficient_funds]:"), "{err}");

    let (ok, _, err) = agora(&system, &["bank", "deposit", "bad name", "5"]);
    assert!(!ok);
    assert!(err.starts_with("error [invalid_request]:"), "{err}");

    let (ok, _, err) =
        agora(&system, &["bank", "balance", "bob", "--server", "nats://127.0.0.1:1"]);
    assert!(!ok);
    assert!(err.contains("cannot connect"), "{err}");
}
