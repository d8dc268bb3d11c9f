//! The `agora` command-line client against a running system.

use std::time::Duration;

use agora_tests::{POLL, System, eventually};

fn agora(system: &System, args: &[&str]) -> (bool, String, String) {
    let output = system.cli().args(args).output().expect("agora runs");
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
    assert_eq!(
        json,
        serde_json::json!({"account": "bob", "balance": 200, "pending": 0, "available": 200,
                           "incoming": 0})
    );

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

    // Two-phase: hold, post part of it, and a second post refused with its code.
    let hold = ["bank", "hold", "alice", "bob", "100", "--id", "rent", "--hold-ms", "60000"];
    let (ok, out, err) = agora(&system, &hold);
    assert!(ok, "{err}");
    let held = "held 100 as rent until posted, voided or expired (in 1m): alice pending_out 100";
    assert!(out.starts_with(held), "{out}");
    let (ok, out, _) = agora(&system, &["bank", "balance", "alice"]);
    assert!(ok);
    assert_eq!(out.trim(), "alice: balance 300 (held 100, available 200, incoming 0)");
    let (ok, out, err) = agora(&system, &["bank", "post", "rent", "--amount", "40"]);
    assert!(ok, "{err}");
    let posted = "posted 40 of rent, the rest released: alice post_out 40 -> 260";
    assert!(out.starts_with(posted), "{out}");
    let (ok, _, err) = agora(&system, &["bank", "void", "rent"]);
    assert!(!ok);
    assert!(err.starts_with("error [pending_posted]:"), "{err}");

    // A batch from a file: a linked chain with a bad leg, and one that stands alone.
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("ops.json");
    let ops = r#"[{"from":"alice","to":"bob","amount":5,"linked":true},
                  {"from":"alice","to":"bob","amount":999999},
                  {"op":"deposit","account":"carol","amount":7}]"#;
    std::fs::write(&file, ops).expect("write");
    let (ok, out, err) = agora(&system, &["bank", "transfers", "--file", file.to_str().unwrap()]);
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "1 applied, 2 failed");
    assert!(lines[1].starts_with("  0: linked_failed:"), "{out}");
    assert!(lines[2].starts_with("  1: insufficient_funds:"), "{out}");
    let (ok, _, err) = agora(&system, &["bank", "transfers", "--file", "/no/such/file"]);
    assert!(!ok);
    assert!(err.contains("reading /no/such/file"), "{err}");

    let (ok, out, err) = agora(&system, &["bank", "history", "alice", "--limit", "2", "--json"]);
    assert!(ok, "{err}");
    let json: serde_json::Value = serde_json::from_str(out.trim()).expect("JSON output");
    let kinds: Vec<&str> =
        json["entries"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, vec!["post_out", "pending_out"]);
    assert_eq!(json["more"], true);
    let (ok, out, err) = agora(&system, &["bank", "history", "alice", "--asset", "BTC"]);
    assert!(ok && out == "alice (BTC):\n  no entries\n", "{out}{err}");

    // The text shows each entry's time as people read it (UTC), and the time flags take it
    // back as shown, or in milliseconds as on the wire.
    let newest = json["entries"][0]["at"].as_u64().expect("at");
    let (ok, out, err) = agora(&system, &["bank", "history", "alice", "--limit", "1"]);
    assert!(ok, "{err}");
    let shown = out.lines().nth(1).and_then(|line| line.split_whitespace().nth(1));
    let shown = shown.unwrap_or_else(|| panic!("no entry in {out}")).to_owned();
    assert!(shown.starts_with("20") && shown.ends_with('Z') && shown.contains('T'), "{out}");
    let since = |from: &str| {
        let (ok, out, err) =
            agora(&system, &["bank", "history", "alice", "--from-ms", from, "--json"]);
        assert!(ok, "{err}");
        let json: serde_json::Value = serde_json::from_str(out.trim()).expect("JSON output");
        json["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["at"].as_u64().unwrap())
            .collect::<Vec<_>>()
    };
    let from_shown = since(&shown);
    assert!(
        from_shown.contains(&newest) && from_shown.iter().all(|at| *at >= newest),
        "{from_shown:?}"
    );
    assert_eq!(since(&newest.to_string()), from_shown);
    let (ok, out, err) = agora(&system, &["bank", "balance", "alice", "--at-ms", &shown]);
    assert!(ok, "{err}");
    assert!(out.starts_with(&format!("alice at {shown}: balance ")), "{out}");
    for bad in ["yesterday", "2026-13-01T00:00:00Z", "99999999999999999999999", "", "1.5"] {
        let (ok, _, err) = agora(&system, &["bank", "history", "alice", "--from-ms", bad]);
        assert!(!ok && err.contains("--from-ms"), "{bad}: {err}");
    }

    // A hold lasts `--hold-ms`, whatever the reply timeout (`--timeout-ms`, AGORA_TIMEOUT_MS)
    // is: they once shared a flag, and AGORA_TIMEOUT_MS=1500 made a 1.5 s hold.
    let made = std::time::Instant::now();
    let long = ["bank", "hold", "alice", "bob", "10", "--id", "long"];
    let output = system.cli().env("AGORA_TIMEOUT_MS", "1500").args(long).output().expect("runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let short = ["--id", "short", "--hold-ms", "1000", "--timeout-ms", "8000"];
    let (ok, _, err) = agora(&system, &[&long[..5], &short[..]].concat());
    assert!(ok, "{err}");
    let expired = || {
        let (ok, out, err) =
            agora(&system, &["bank", "history", "alice", "--limit", "5", "--json"]);
        assert!(ok, "{err}");
        let json: serde_json::Value = serde_json::from_str(out.trim()).expect("JSON output");
        let entries = json["entries"].as_array().cloned().unwrap_or_default();
        entries
            .iter()
            .filter(|e| e["kind"] == "expire_out")
            // `<owner>/<id>` where callers are users, the id alone here.
            .map(|e| e["id"].as_str().unwrap_or_default().rsplit('/').next().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    agora_tests::eventually_blocking(Duration::from_secs(10), POLL, || {
        let ids = expired();
        if ids == ["short"] { Ok(()) } else { Err(format!("expired: {ids:?}")) }
    });
    // Past the moment the long hold would have ended with a 1.5 s life: still held.
    std::thread::sleep(Duration::from_millis(3_000).saturating_sub(made.elapsed()));
    assert_eq!(expired(), ["short"]);
    let (ok, out, _) = agora(&system, &["bank", "balance", "alice"]);
    assert!(ok);
    assert!(out.contains("(held 10,"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_commands_submit_wait_list_cancel_and_show_workers() {
    let system = System::with_tasks(1, &[]);

    let (ok, out, err) = agora(&system, &["task", "submit", "sum", "1", "2", "3.5", "--wait"]);
    assert!(ok, "{err}");
    assert!(out.contains("task 1 completed op=sum attempts=1 worker=w0"), "{out}");
    assert!(out.contains(r#"result: {"value":6.5}"#), "{out}");

    let (ok, out, _) = agora(&system, &["task", "submit", "fibonacci", "90", "--wait", "--json"]);
    assert!(ok);
    let task: serde_json::Value = serde_json::from_str(out.trim()).expect("JSON output");
    assert_eq!(task["result"]["digits"], "2880067194370816120");

    let (ok, out, _) = agora(&system, &["task", "submit", "sleep", "60000", "--id", "long"]);
    assert!(ok);
    assert_eq!(out.trim(), "task 3 queued");
    let (ok, out, _) = agora(&system, &["task", "cancel", "3"]);
    assert!(ok);
    assert_eq!(out.trim(), "task 3 cancelled");
    let (ok, _, err) = agora(&system, &["task", "cancel", "3"]);
    assert!(!ok);
    assert!(err.starts_with("error [conflict]:"), "{err}");

    let (ok, out, _) = agora(&system, &["task", "get", "1"]);
    assert!(ok);
    for line in ["queued", "started    attempt=1 worker=w0", "completed  attempt=1 worker=w0"] {
        assert!(out.contains(line), "{line:?} in {out}");
    }
    let (ok, out, _) = agora(&system, &["task", "list", "--state", "completed"]);
    assert!(ok);
    assert_eq!(out.lines().count(), 3, "a header and two tasks: {out}");
    let (ok, out, _) = agora(&system, &["task", "list", "--op", "count_words"]);
    assert!(ok && out == "no tasks\n", "{out}");
    let (ok, out, _) = agora(&system, &["task", "workers"]);
    assert!(ok);
    assert!(out.lines().nth(1).is_some_and(|line| line.starts_with("w0 ")), "{out}");

    let (ok, _, err) = agora(&system, &["task", "submit", "sum", "one"]);
    assert!(!ok);
    assert!(err.contains("not a number"), "{err}");
    let (ok, _, err) = agora(&system, &["task", "submit", "divide", "1"]);
    assert!(!ok);
    assert!(err.starts_with("error [invalid_request]: unknown op"), "{err}");
    let (ok, _, err) = agora(&system, &["task", "submit", "fail", "boom", "--wait"]);
    assert!(!ok, "a failed task exits non-zero");
    assert!(err.contains("failed"), "{err}");

    // Delayed and recurring tasks.
    let (ok, out, err) =
        agora(&system, &["task", "submit", "sum", "4", "5", "--in", "2s", "--wait"]);
    assert!(ok, "{err}");
    assert!(out.contains("completed") && out.contains("ran_at=20"), "{out}");
    assert!(out.contains(r#"result: {"value":9}"#), "{out}");
    // Without --wait, a delayed task says when it runs.
    let tomorrow = agora_nats::clock::now_ms() / 1_000 * 1_000 + 86_400_000;
    let at = agora_core::tasks::schedule::rfc3339(tomorrow);
    let (ok, out, err) = agora(&system, &["task", "submit", "sum", "6", "--at", &at]);
    assert!(ok, "{err}");
    assert!(out.starts_with("task ") && out.contains("queued op=sum attempts=0"), "{out}");
    assert!(out.contains(&format!("runs_at={at}")), "{at} in {out}");
    let (ok, _, err) = agora(&system, &["task", "submit", "sum", "1", "--in", "soon"]);
    assert!(!ok);
    assert!(err.contains("--in") && err.contains("not a duration"), "{err}");
    let (ok, _, err) = agora(&system, &["task", "submit", "sum", "1", "--at", "tomorrow"]);
    assert!(!ok);
    assert!(err.contains("RFC 3339"), "{err}");
    let (ok, out, err) = agora(
        &system,
        &["task", "schedule", "nightly", "sum", "1", "2", "--cron", "0 3 * * *", "--tz", "UTC"],
    );
    assert!(ok, "{err}");
    assert!(
        out.contains("nightly") && out.contains("0 0 3 * * * UTC") && out.contains("active"),
        "{out}"
    );
    let (ok, _, err) =
        agora(&system, &["task", "schedule", "bad", "sum", "1", "--cron", "0 3 * *"]);
    assert!(!ok);
    assert!(err.starts_with("error [invalid_request]: cron has six fields"), "{err}");
    let (ok, out, _) = agora(&system, &["task", "pause", "nightly"]);
    assert!(ok && out.contains("paused"), "{out}");
    let (ok, out, _) = agora(&system, &["task", "schedules", "--json"]);
    assert!(ok);
    let listed: serde_json::Value = serde_json::from_str(out.trim()).expect("JSON");
    assert_eq!(
        (listed["name"].as_str(), listed["paused"].as_bool()),
        (Some("nightly"), Some(true))
    );
    let (ok, out, _) = agora(&system, &["task", "unschedule", "nightly"]);
    assert!(ok && out.contains("schedule nightly deleted"), "{out}");
    let (ok, out, _) = agora(&system, &["task", "schedules"]);
    assert!(ok && out == "no schedules\n", "{out}");
    let (ok, _, err) = agora(&system, &["task", "resume", "nightly"]);
    assert!(!ok);
    assert!(err.starts_with("error [not_found]"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workflow_commands_run_follow_list_get_and_cancel() {
    let system = System::with_tasks(1, &[]);
    let file = system.dir.path().join("report.json");
    std::fs::write(
        &file,
        serde_json::json!({"name": "report", "steps": [
            {"name": "a", "op": "count_words", "args": {"text": "one two three"}},
            {"name": "b", "op": "count_words", "args": {"text": "four five"}},
            {"name": "total", "op": "sum", "args": {"numbers": [100]}, "after": ["a", "b"],
             "feed": "numbers"}
        ]})
        .to_string(),
    )
    .expect("a workflow file");
    let path = file.display().to_string();
    let (ok, out, err) = agora(&system, &["workflow", "run", &path, "--wait"]);
    assert!(ok, "{err}");
    assert!(out.contains("workflow 1 completed (3/3 steps completed) report"), "{out}");
    let total = out.lines().find(|line| line.trim_start().starts_with("total ")).expect(&out);
    assert!(
        total.contains("completed") && total.contains("a,b") && total.contains(r#"{"value":105}"#),
        "{total}"
    );

    let (ok, out, _) = agora(&system, &["workflow", "get", "1", "--json"]);
    assert!(ok);
    let view: serde_json::Value = serde_json::from_str(out.trim()).expect("JSON");
    assert_eq!(view["steps"][2]["result"]["value"], 105);

    // A failing step stops the workflow: --wait exits non-zero and says so.
    let failing = system.dir.path().join("failing.json");
    std::fs::write(&failing, r#"{"steps":[{"name":"boom","op":"fail","args":{"message":"no"}}]}"#)
        .expect("a file");
    let (ok, _, err) =
        agora(&system, &["workflow", "run", &failing.display().to_string(), "--wait"]);
    assert!(!ok);
    assert!(err.contains("workflow 2 failed"), "{err}");

    let long = system.dir.path().join("long.json");
    std::fs::write(&long, r#"{"steps":[{"name":"nap","op":"sleep","args":{"ms":60000}}]}"#)
        .expect("a file");
    let (ok, out, _) = agora(&system, &["workflow", "run", &long.display().to_string()]);
    assert!(ok && out.contains("workflow 3 running"), "{out}");
    let (ok, out, _) = agora(&system, &["workflow", "list", "--state", "running"]);
    assert!(ok);
    assert_eq!(out.lines().count(), 2, "a header and one workflow: {out}");
    let (ok, out, _) = agora(&system, &["workflow", "cancel", "3"]);
    assert!(ok && out.contains("workflow 3 cancelled"), "{out}");
    let (ok, _, err) = agora(&system, &["workflow", "cancel", "3"]);
    assert!(!ok);
    assert!(err.starts_with("error [conflict]"), "{err}");
    let (ok, out, _) = agora(&system, &["workflow", "list", "--state", "running"]);
    assert!(ok && out == "no workflows\n", "{out}");

    let bad = system.dir.path().join("bad.json");
    std::fs::write(
        &bad,
        r#"{"steps":[{"name":"a","op":"sum","args":{"numbers":[1]},"after":["a"]}]}"#,
    )
    .expect("a file");
    let (ok, _, err) = agora(&system, &["workflow", "run", &bad.display().to_string()]);
    assert!(!ok);
    assert!(err.starts_with("error [invalid_request]: step \"a\" comes after itself"), "{err}");
    let (ok, _, err) = agora(&system, &["workflow", "run", "/no/such/file.json"]);
    assert!(!ok);
    assert!(err.contains("cannot read /no/such/file.json"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_commands_send_show_history_and_who() {
    let system = System::with_chat(&[]);

    let (ok, out, err) =
        agora(&system, &["chat", "send", "--name", "alice", "hello", "<b>world</b>"]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "sent (history #1)");
    let (ok, out, err) = agora(&system, &["chat", "send", "--name", "bob", "--to", "alice", "hi"]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "sent (history #2)");
    let (ok, _, err) = agora(&system, &["chat", "send", "--name", "alice", "--to", "zed", "hi"]);
    assert!(!ok);
    assert!(err.starts_with("error [unknown_user]:"), "{err}");

    let (ok, out, _) = agora(&system, &["chat", "history"]);
    assert!(ok);
    assert!(out.trim().ends_with("[#all] alice: hello <b>world</b>"), "{out}");
    let (ok, out, _) =
        agora(&system, &["chat", "history", "--with", "bob", "--as", "alice", "--json"]);
    assert!(ok);
    let json: serde_json::Value = serde_json::from_str(out.trim()).expect("JSON output");
    assert_eq!(json["messages"][0]["from"], "bob");
    assert_eq!(json["messages"][0]["to"], "alice");
    // A reply in message 1's thread: the message counts its replies.
    let (ok, out, err) =
        agora(&system, &["chat", "send", "--name", "bob", "--reply-to", "1", "welcome"]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "sent (history #3)");
    let (ok, out, _) = agora(&system, &["chat", "history", "--room", "all"]);
    assert!(ok);
    assert!(out.lines().next().is_some_and(|l| l.ends_with("<b>world</b> [1 reply]")), "{out}");
    assert!(out.lines().nth(1).is_some_and(|l| l.ends_with("welcome (reply to #1)")), "{out}");

    let (ok, out, _) = agora(&system, &["chat", "who", "--offline"]);
    assert!(ok);
    let names: Vec<&str> = out.lines().filter_map(|l| l.split_whitespace().next()).collect();
    assert_eq!(names, vec!["alice", "bob"], "{out}");
    assert!(out.contains("offline, last seen"), "{out}");

    let (ok, _, err) = agora(&system, &["chat", "who", "--room", "no spaces"]);
    assert!(!ok);
    assert!(err.starts_with("error [invalid_request]:"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn likes_commands_like_unlike_count_top_and_list_nodes() {
    let system = System::with_likes(3);

    let (ok, out, err) = agora(&system, &["likes", "like", "post-42"]);
    assert!(ok, "{err}");
    assert!(out.starts_with("post-42: 1 like [node likes-"), "{out}");
    let (ok, out, _) = agora(&system, &["likes", "like", "post-42", "--user", "alice"]);
    assert!(ok);
    assert!(out.starts_with("post-42: 2 likes (liked by you)"), "{out}");
    let (ok, out, _) = agora(&system, &["likes", "like", "post-42", "--user", "alice"]);
    assert!(ok);
    assert!(out.starts_with("post-42: 2 likes (unchanged: already liked)"), "{out}");
    let (ok, out, _) = agora(&system, &["likes", "like", "post-7", "--user", "bob", "--json"]);
    assert!(ok);
    let json: serde_json::Value = serde_json::from_str(out.trim()).expect("JSON output");
    assert_eq!((json["item"].as_str(), json["count"].as_u64()), (Some("post-7"), Some(1)));

    let (ok, out, _) = agora(&system, &["likes", "unlike", "post-7", "--user", "bob"]);
    assert!(ok);
    assert!(out.starts_with("post-7: 0 likes"), "{out}");
    let (ok, _, err) = agora(&system, &["likes", "like", "bad.item"]);
    assert!(!ok);
    assert!(err.starts_with("error [invalid_request]:"), "{err}");

    // Any node answers the count; wait until the last like reached all of them.
    let top = eventually(Duration::from_secs(5), POLL, async || {
        let (ok, top, err) = agora(&system, &["likes", "top", "--limit", "1"]);
        assert!(ok, "{err}");
        let all = top.contains("post-42") && top.trim_end().ends_with(" 2");
        if all && top.starts_with("2 items") { Ok(top) } else { Err(format!("top: {top}")) }
    })
    .await;
    assert!(top.contains("1. post-42"), "{top}");
    // post-7 was liked and unliked: known (of the 2 items), but not among the most liked.
    eventually(Duration::from_secs(5), POLL, async || {
        let (ok, top, err) = agora(&system, &["likes", "top"]);
        assert!(ok, "{err}");
        let listed: Vec<&str> = top.lines().skip(1).collect();
        let only_liked = listed.len() == 1 && listed[0].contains("1. post-42");
        if only_liked && top.starts_with("2 items") { Ok(()) } else { Err(format!("top: {top}")) }
    })
    .await;

    // The leader lists the nodes of its last round (every 500 ms in tests).
    let nodes = eventually(Duration::from_secs(5), POLL, async || {
        let (ok, nodes, err) = agora(&system, &["likes", "nodes"]);
        assert!(ok, "{err}");
        if nodes.contains("3 live nodes") { Ok(nodes) } else { Err(format!("nodes: {nodes}")) }
    })
    .await;
    assert!(nodes.starts_with("leader likes-"), "{nodes}");
    let (ok, out, _) = agora(&system, &["likes", "nodes", "--all", "--json"]);
    assert!(ok);
    let nodes: Vec<serde_json::Value> = serde_json::from_str(out.trim()).expect("JSON output");
    assert_eq!(nodes.len(), 3);
    assert_eq!(nodes.iter().filter(|n| n["leader"] == true).count(), 1, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coins_commands_trade_show_portfolio_history_and_manage_assets() {
    let system = System::with_coins(1);
    let (ok, _, err) = agora(&system, &["bank", "deposit", "carol", "100000"]);
    assert!(ok, "{err}");

    let (ok, out, err) = agora(&system, &["coins", "assets"]);
    assert!(ok, "{err}");
    assert!(out.lines().any(|l| l.starts_with("BTC    Bitcoin")), "{out}");
    let (ok, out, err) =
        agora(&system, &["coins", "buy", "tsla", "2", "--user", "carol", "--id", "c-1"]);
    assert!(ok, "{err}");
    assert!(out.starts_with("order c-1 carol: "), "{out}");
    assert!(out.contains("buy TSLA 2 x 25000 = 50000 [done], now holds 2"), "{out}");
    let (ok, out, _) = agora(&system, &["coins", "sell", "TSLA", "1", "--user", "carol"]);
    assert!(ok);
    assert!(out.contains("sell TSLA 1 x 25000 = 25000 [done], now holds 1"), "{out}");
    let (ok, out, _) = agora(&system, &["coins", "portfolio", "carol"]);
    assert!(ok);
    assert!(out.starts_with("carol: holdings worth 25000, bank balance 75000"), "{out}");
    let (ok, out, _) = agora(&system, &["coins", "history", "--user", "dave"]);
    assert!(ok && out == "no orders\n", "{out}");
    // The trade log follows the ledger's events, moments behind.
    eventually(Duration::from_secs(10), POLL, async || {
        let (ok, out, _) = agora(&system, &["coins", "history", "--user", "carol", "--json"]);
        assert!(ok);
        let history: serde_json::Value = serde_json::from_str(out.trim()).expect("JSON output");
        match history["orders"].as_array().map(Vec::len) {
            Some(2) => Ok(()),
            other => Err(format!("{other:?} orders logged")),
        }
    })
    .await;
    let (ok, out, _) = agora(&system, &["coins", "order", "carol", "c-1"]);
    assert!(ok);
    assert!(out.contains("[done]"), "{out}");

    let (ok, _, err) = agora(&system, &["coins", "buy", "BTC", "1", "--user", "carol"]);
    assert!(!ok);
    assert!(err.starts_with("error [insufficient_funds]:"), "{err}");
    let (ok, _, err) = agora(&system, &["coins", "sell", "ETH", "1", "--user", "carol"]);
    assert!(!ok);
    assert!(err.starts_with("error [insufficient_quantity]:"), "{err}");
    let (ok, _, err) = agora(&system, &["coins", "buy", "BTC", "0", "--user", "carol"]);
    assert!(!ok);
    assert!(err.starts_with("error [invalid_request]:"), "{err}");

    let (ok, out, err) =
        agora(&system, &["coins", "admin", "add", "doge", "Dogecoin", "15", "1000"]);
    assert!(ok, "{err}");
    assert!(out.starts_with("listed DOGE"), "{out}");
    let (ok, out, _) = agora(&system, &["coins", "admin", "update", "DOGE", "--price", "20"]);
    assert!(ok);
    assert!(out.contains("price           20"), "{out}");
    let (ok, out, _) = agora(&system, &["coins", "admin", "remove", "DOGE"]);
    assert!(ok);
    assert_eq!(out.trim(), "delisted DOGE");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_commands_get_resume_list_stat_cache_and_put() {
    let system = System::with_files(1, &["--chunk-bytes", "65536"]);
    let root = system.files_root();
    let bytes: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::create_dir_all(root.join("docs")).expect("dir");
    std::fs::write(root.join("docs/report.bin"), &bytes).expect("write");
    let out = system.dir.path().join("report.bin");
    let out_text = out.display().to_string();

    // An interrupted download of the same version is resumed.
    let stat_json = agora(&system, &["files", "stat", "docs/report.bin", "--json"]).1;
    let stat: serde_json::Value = serde_json::from_str(stat_json.trim()).expect("JSON");
    let sha = stat["sha256"].as_str().expect("sha256").to_owned();
    let part = system.dir.path().join("report.bin.part");
    std::fs::write(&part, &bytes[..100_000]).expect("part");
    std::fs::write(system.dir.path().join("report.bin.part.sha256"), &sha).expect("version");
    let (ok, stdout, err) = agora(&system, &["files", "get", "docs/report.bin", "-o", &out_text]);
    assert!(ok, "{err}");
    assert!(stdout.contains("300000 bytes"), "{stdout}");
    assert!(stdout.contains("(verified), resumed at 100000"), "{stdout}");
    assert!(std::fs::read(&out).expect("written") == bytes);
    assert!(!part.exists());
    // Into a directory: under the file's base name there. Into a directory that is not
    // there: refused, naming the path, and nothing written anywhere.
    let into = system.dir.path().join("downloads");
    std::fs::create_dir(&into).expect("a directory");
    let (ok, stdout, err) =
        agora(&system, &["files", "get", "docs/report.bin", "-o", &into.display().to_string()]);
    assert!(ok, "{err}");
    assert!(stdout.contains(&format!("-> {}", into.join("report.bin").display())), "{stdout}");
    assert!(std::fs::read(into.join("report.bin")).expect("written") == bytes);
    let missing = system.dir.path().join("missing/report.bin");
    let (ok, _, err) =
        agora(&system, &["files", "get", "docs/report.bin", "-o", &missing.display().to_string()]);
    assert!(!ok && err.contains(&format!("cannot write {}", missing.display())), "{err}");
    let entries = |dir: &std::path::Path| std::fs::read_dir(dir).expect("listed").count();
    assert_eq!(entries(&into), 1, "only the download itself");

    let (ok, stdout, _) = agora(&system, &["files", "list"]);
    assert!(ok);
    // Size, modification time (UTC), name.
    let columns: Vec<&str> = stdout.split_whitespace().collect();
    assert_eq!(columns.len(), 3, "{stdout}");
    assert_eq!((columns[0], columns[2]), ("300000", "docs/report.bin"), "{stdout}");
    assert!(columns[1].starts_with("20") && columns[1].ends_with('Z'), "{stdout}");
    let (ok, stdout, _) = agora(&system, &["files", "stat", "docs/report.bin"]);
    assert!(ok);
    assert!(stdout.contains("5 chunks of 65536 bytes"), "{stdout}");
    let (ok, stdout, _) = agora(&system, &["files", "cache"]);
    assert!(ok);
    assert!(stdout.contains("docs/report.bin"), "{stdout}");
    // An upload replaces the served file whole, under its own name or the one given.
    let local = system.dir.path().join("notes.txt");
    std::fs::write(&local, "uploaded by the CLI\n").expect("write");
    let local_text = local.display().to_string();
    let (ok, stdout, err) = agora(&system, &["files", "put", &local_text]);
    assert!(ok, "{err}");
    assert!(stdout.starts_with("notes.txt: 20 bytes, sha256 "), "{stdout}");
    let (ok, stdout, err) = agora(&system, &["files", "put", &local_text, "--name", "docs/n.txt"]);
    assert!(ok, "{err}");
    assert!(stdout.starts_with("docs/n.txt: 20 bytes"), "{stdout}");
    for name in ["notes.txt", "docs/n.txt"] {
        assert_eq!(std::fs::read_to_string(root.join(name)).expect(name), "uploaded by the CLI\n");
    }
    // A file larger than a message goes in parts, read from disk, and lands whole.
    let large: Vec<u8> =
        (0..2_600_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let local_large = system.dir.path().join("large.bin");
    std::fs::write(&local_large, &large).expect("write");
    let local_large = local_large.display().to_string();
    let (ok, stdout, err) = agora(&system, &["files", "put", &local_large, "--name", "docs/l.bin"]);
    assert!(ok, "{err}");
    assert!(stdout.starts_with("docs/l.bin: 2600000 bytes, sha256 "), "{stdout}");
    assert!(std::fs::read(root.join("docs/l.bin")).expect("on disk") == large);
    let (ok, _, err) = agora(&system, &["files", "put", &local_text, "--name", "../x"]);
    assert!(!ok && err.starts_with("error [invalid_request]:"), "{err}");
    let (ok, _, err) = agora(&system, &["files", "put", "/no/such/file"]);
    assert!(!ok && err.contains("cannot read /no/such/file"), "{err}");
    let (ok, _, err) = agora(&system, &["files", "get", "../etc/passwd"]);
    assert!(!ok);
    assert!(err.starts_with("error [invalid_request]:"), "{err}");
    let (ok, _, err) = agora(&system, &["files", "get", "nope.bin"]);
    assert!(!ok);
    assert!(err.starts_with("error [not_found]:"), "{err}");
    // Removal: once, then it is not there.
    let (ok, stdout, err) = agora(&system, &["files", "rm", "docs/n.txt"]);
    assert!(ok, "{err}");
    assert_eq!(stdout.trim(), "removed docs/n.txt (20 bytes)");
    assert!(!root.join("docs/n.txt").exists());
    let (ok, _, err) = agora(&system, &["files", "rm", "docs/n.txt"]);
    assert!(!ok && err.starts_with("error [not_found]:"), "{err}");
}
