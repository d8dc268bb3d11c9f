//! The dashboard in a real browser: headless Chromium driven over WebDriver (chromedriver),
//! two sessions side by side against a real gateway and real services.
//!
//! Needs the Debian packages `chromium` and `chromium-driver` (`scripts/install-chromium`,
//! which `scripts/test` runs). Screenshots are kept in `target/test-artifacts/`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use agora_tests::{System, TEST_MANAGER, test_password};
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::json;

/// chromedriver on a port of its own, killed on drop.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Driver {
    /// Starts chromedriver on a port it picks itself (`--port=0`) and reads the port from
    /// what it prints: no race with other processes for a port.
    fn start() -> Self {
        let binary = std::env::var("AGORA_CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into());
        let mut child = Command::new(&binary)
            .arg("--port=0")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| {
                panic!(
                    "cannot start {binary} ({error}). The browser test needs headless Chromium \
                     and its WebDriver: run scripts/install-chromium (apt-get install chromium \
                     chromium-driver), or point AGORA_CHROMEDRIVER at a chromedriver"
                )
            });
        // The line arrives within a second or two; a reader thread keeps the wait bounded.
        let stdout = child.stdout.take().expect("piped stdout");
        let (found, port) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                let port = line
                    .split_once("started successfully on port ")
                    .and_then(|(_, rest)| rest.trim_end_matches('.').trim().parse::<u16>().ok());
                if let Some(port) = port {
                    found.send(port).ok();
                }
            }
        });
        let port = port
            .recv_timeout(Duration::from_secs(10))
            .expect("chromedriver says where it listens within 10 s");
        Self { child, url: format!("http://127.0.0.1:{port}") }
    }

    async fn session(&self) -> Client {
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".to_owned(),
            json!({"args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                            "--disable-dev-shm-usage", "--window-size=1400,950"]}),
        );
        ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&self.url)
            .await
            .expect("a browser session")
    }
}

/// Polls `check` until it returns `Some`, for up to `seconds` ([`agora_tests::eventually`]).
macro_rules! eventually {
    ($seconds:expr, $what:expr, $check:expr) => {
        agora_tests::eventually(
            Duration::from_secs($seconds),
            Duration::from_millis(100),
            async || $check.ok_or_else(|| format!("timed out waiting for {}", $what)),
        )
        .await
    };
}

async fn texts(browser: &Client, css: &str) -> Vec<String> {
    let mut texts = Vec::new();
    for element in browser.find_all(Locator::Css(css)).await.unwrap_or_default() {
        texts.push(element.text().await.unwrap_or_default());
    }
    texts
}

/// Whether the element `css` is there and shown.
async fn shown(browser: &Client, css: &str) -> bool {
    match browser.find(Locator::Css(css)).await {
        Ok(element) => element.is_displayed().await.unwrap_or(false),
        Err(_) => false,
    }
}

async fn type_into(browser: &Client, css: &str, text: &str) {
    let input = browser.find(Locator::Css(css)).await.expect(css);
    input.clear().await.expect("clears");
    input.send_keys(text).await.expect("types");
}

/// Clicks the element `css`. Live tables are redrawn as events arrive, so the element found
/// may be replaced before the click lands: then it is found again, for up to ten seconds.
async fn click(browser: &Client, css: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let element = browser.find(Locator::Css(css)).await.expect(css);
        match element.click().await {
            Ok(_) => return,
            Err(error)
                if error.is_stale_element_reference() && std::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(error) => panic!("clicking {css}: {error:?}"),
        }
    }
}

async fn screenshot(browser: &Client, name: &str) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts");
    std::fs::create_dir_all(&dir).expect("artifact directory");
    let png = browser.screenshot().await.expect("a screenshot");
    std::fs::write(dir.join(name), png).expect("the screenshot is written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_works_in_a_real_browser() {
    let system = System::with_gateway();
    let driver = Driver::start();
    let ann = driver.session().await;
    let ben = driver.session().await;
    let base = system.gateway_url.clone();

    // Signing in: nothing but the sign-in form until then. Ann signs up in the page; ben
    // (the manager) signs in. A wrong password is refused and leaves the page signed out.
    for browser in [&ann, &ben] {
        browser.goto(&format!("{base}/#chat")).await.expect("the dashboard loads");
        eventually!(10, "the sign-in form", shown(browser, "#signin").await.then_some(()));
        assert!(!shown(browser, "#tab-chat").await, "no tab shows before signing in");
    }
    type_into(&ben, "#signin-name", TEST_MANAGER).await;
    type_into(&ben, "#signin-password", "not-the-password").await;
    click(&ben, "#signin-submit").await;
    eventually!(10, "the refusal", {
        let toasts = texts(&ben, "#toasts .toast").await;
        toasts.iter().any(|t| t.starts_with("unauthenticated")).then_some(())
    });
    assert!(texts(&ben, "#me-name").await.iter().all(String::is_empty), "still signed out");
    for (browser, name, button) in
        [(&ann, "ann", "#signup-submit"), (&ben, TEST_MANAGER, "#signin-submit")]
    {
        type_into(browser, "#signin-name", name).await;
        type_into(browser, "#signin-password", &test_password(name)).await;
        click(browser, button).await;
        eventually!(10, "the signed-in page", {
            (texts(browser, "#me-name").await.first().map(String::as_str) == Some(name))
                .then_some(())
        });
    }
    // Monitoring and logs are the manager's: ann's page does not offer them.
    assert!(!shown(&ann, "a[data-tab=monitoring]").await, "a user is not offered monitoring");
    assert!(shown(&ben, "a[data-tab=monitoring]").await, "the manager is");

    // Chat: both go online as who they signed in as; ann's message shows up in ben's
    // browser, as text.
    for (browser, name) in [(&ann, "ann"), (&ben, TEST_MANAGER)] {
        click(browser, "a[data-tab=chat]").await;
        click(browser, "#chat-join").await;
        eventually!(10, "the chat to open", {
            let me = texts(browser, "#chat-me").await;
            (me.first().map(String::as_str) == Some(name)).then_some(())
        });
    }
    let text = "hello ben <img src=x onerror=\"document.title='owned'\">";
    type_into(&ann, "#chat-input", text).await;
    eventually!(10, "ben sees ann typing", {
        match ben.find(Locator::Css("#chat-title")).await {
            Ok(title) => title
                .attr("data-typing")
                .await
                .ok()
                .flatten()
                .filter(|t| t.contains("ann is typing")),
            Err(_) => None,
        }
    });
    click(&ann, "#chat-send").await;
    eventually!(10, "ann's message in ben's browser", {
        texts(&ben, "#chat-messages .message .text").await.iter().any(|t| t == text).then_some(())
    });
    assert!(ben.find_all(Locator::Css("#chat-messages img")).await.expect("query").is_empty());
    assert_eq!(ben.title().await.expect("title"), "Agora", "the message was not run as HTML");
    let online = texts(&ben, "#chat-who li").await;
    assert!(online.iter().any(|u| u.contains("ann")), "ann is online in ben's list: {online:?}");
    // Ann reacts to her message and finds it by a word; the found word is marked.
    click(&ann, "#chat-messages .message.mine .actions .react").await;
    eventually!(10, "the reaction", {
        texts(&ann, "#chat-messages .message.mine .reaction")
            .await
            .first()
            .filter(|t| t.contains('1'))
            .map(drop)
    });
    eventually!(10, "ann's reaction live in ben's browser", {
        texts(&ben, "#chat-messages .message .reaction")
            .await
            .first()
            .filter(|t| t.contains('1'))
            .map(drop)
    });
    let word = text.split_whitespace().next().expect("a word").to_owned();
    type_into(&ann, "#chat-search", &word).await;
    click(&ann, "#chat-search-go").await;
    let marked = eventually!(10, "a search hit", {
        texts(&ann, "#chat-search-results .hit mark").await.into_iter().next()
    });
    assert_eq!(marked.to_lowercase(), word.to_lowercase());
    screenshot(&ann, "dashboard-chat-search.png").await;
    screenshot(&ben, "dashboard-chat.png").await;

    // Tasks: submit one in ann's browser and watch it complete.
    click(&ann, "a[data-tab=tasks]").await;
    ann.find(Locator::Css("#task-op"))
        .await
        .expect("op")
        .select_by_value("sleep")
        .await
        .expect("op");
    type_into(&ann, "#task-args", r#"{"ms": 1200}"#).await;
    click(&ann, "#task-submit").await;
    let row = eventually!(20, "the task to complete", {
        let rows = ann.find_all(Locator::Css("#tasks-table tr[data-state=completed]")).await;
        match rows.ok().and_then(|rows| rows.into_iter().next()) {
            // The row may be redrawn between finding and reading it: then try again.
            Some(row) => row.text().await.ok(),
            None => None,
        }
    });
    assert!(row.contains("sleep") && row.contains("100%"), "{row}");
    // A delayed task waits as `scheduled`, then runs.
    type_into(&ann, "#task-args", r#"{"ms": 100}"#).await;
    type_into(&ann, "#task-delay", "3").await;
    click(&ann, "#task-submit").await;
    eventually!(10, "a scheduled task", {
        let rows = ann.find_all(Locator::Css("#tasks-table tr[data-state=scheduled]")).await;
        rows.ok().filter(|rows| !rows.is_empty()).map(drop)
    });
    type_into(&ann, "#task-delay", "").await;
    // A recurring schedule from the same operation: it runs every second until paused.
    type_into(&ann, "#schedule-name", "heartbeat").await;
    type_into(&ann, "#schedule-spec", "@every 1s").await;
    click(&ann, "#schedule-submit").await;
    eventually!(20, "runs of the schedule", {
        let runs = texts(&ann, "#schedules-table tr[data-name=heartbeat] .runs").await;
        runs.first().and_then(|runs| runs.parse::<u64>().ok()).filter(|runs| *runs >= 2).map(drop)
    });
    eventually!(20, "the delayed task ran", {
        let rows = ann.find_all(Locator::Css("#tasks-table tr[data-state=scheduled]")).await;
        rows.ok().filter(|rows| rows.is_empty()).map(drop)
    });
    screenshot(&ann, "dashboard-tasks.png").await;
    // The workers' status is the manager's: ann's page does not offer it, ben's lists the
    // running worker with what it did.
    assert!(!shown(&ann, "#workers-card").await, "a user is not offered the workers");
    click(&ben, "a[data-tab=tasks]").await;
    let workers = eventually!(10, "the manager's workers table", {
        let rows = texts(&ben, "#workers-table tbody tr").await;
        (shown(&ben, "#workers-card").await && !rows.is_empty()).then_some(rows)
    });
    assert_eq!(workers.len(), 1, "{workers:?}");
    let toasts = texts(&ann, "#toasts .toast").await;
    assert!(!toasts.iter().any(|t| t.starts_with("forbidden")), "{toasts:?}");
    click(&ann, "#schedules-table tr[data-name=heartbeat] button").await;
    eventually!(10, "the schedule paused", {
        let paused = ann.find_all(Locator::Css("#schedules-table tr[data-state=paused]")).await;
        paused.ok().filter(|rows| !rows.is_empty()).map(drop)
    });

    // Workflows: the example (fan-in, then a chain) runs from the form; its graph shows each
    // step's state live, and a step's task and result on a click.
    click(&ann, "#workflow-submit").await;
    eventually!(20, "the workflow's graph, its slow step running", {
        let running = ann
            .find_all(Locator::Css("#workflow-graph .node[data-step=wait][data-state=running]"))
            .await;
        running.ok().filter(|nodes| !nodes.is_empty()).map(drop)
    });
    let edges = ann.find_all(Locator::Css("#workflow-graph .edge")).await.expect("edges");
    assert_eq!(edges.len(), 4, "a and b into total, total into wait, wait into shout");
    ann.execute("document.getElementById('workflow-view').scrollIntoView()", vec![]).await.ok();
    screenshot(&ann, "dashboard-workflow-running.png").await;
    eventually!(20, "every step completed", {
        let done = ann.find_all(Locator::Css("#workflow-graph .node[data-state=completed]")).await;
        done.ok().filter(|nodes| nodes.len() == 5).map(drop)
    });
    eventually!(10, "the workflow completed in the list", {
        let rows = ann.find_all(Locator::Css("#workflows-table tr[data-state=completed]")).await;
        rows.ok().filter(|rows| !rows.is_empty()).map(drop)
    });
    // The graph is redrawn as events come: a click may land on a node just replaced.
    eventually!(10, "a click on the step", {
        match ann.find(Locator::Css("#workflow-graph .node[data-step=total]")).await {
            Ok(node) => node.click().await.ok().map(drop),
            Err(_) => None,
        }
    });
    let described = eventually!(10, "the step's description", {
        texts(&ann, "#workflow-step").await.pop().filter(|text| text.contains("result"))
    });
    assert!(described.contains(r#"result {"value":9}"#), "{described}");
    ann.execute("document.getElementById('workflow-view').scrollIntoView()", vec![]).await.ok();
    screenshot(&ann, "dashboard-workflow.png").await;

    // Bank: ann's own balance is watched from the first look. She deposits and pays ben; her
    // statement lists both, newest first, with the balance after each.
    click(&ann, "a[data-tab=bank]").await;
    eventually!(10, "ann's own balance", {
        let rows = texts(&ann, "#bank-balances tbody tr").await;
        (rows.len() == 1 && rows[0].starts_with("ann") && rows[0].contains("0.00")).then_some(())
    });
    type_into(&ann, "#bank-deposit input[name=account]", "ann").await;
    type_into(&ann, "#bank-deposit input[name=amount]", "50000").await;
    click(&ann, "#bank-deposit button").await;
    eventually!(
        10,
        "the deposit",
        texts(&ann, "#toasts .toast").await.iter().any(|t| t == "Done").then_some(())
    );
    type_into(&ann, "#bank-transfer input[name=from]", "ann").await;
    type_into(&ann, "#bank-transfer input[name=to]", TEST_MANAGER).await;
    type_into(&ann, "#bank-transfer input[name=amount]", "12345").await;
    click(&ann, "#bank-transfer button").await;
    type_into(&ann, "#bank-statement input[name=account]", "ann").await;
    let rows = eventually!(10, "the statement", {
        click(&ann, "#bank-statement button").await;
        let rows = texts(&ann, "#bank-entries tbody tr").await;
        // Rows are there, and shown (a row being drawn reads as empty text).
        (rows.len() == 2 && rows.iter().all(|row| !row.is_empty())).then_some(rows)
    });
    assert!(
        rows[0].contains("Transfer out")
            && rows[0].contains("-123.45")
            && rows[0].contains("376.55"),
        "{rows:?}"
    );
    assert!(rows[1].contains("Deposit") && rows[1].contains("500.00"), "{rows:?}");
    screenshot(&ann, "dashboard-bank-statement.png").await;

    // Coins: ann's portfolio shows from the first look (her bank balance, nothing held). She
    // buys one AMZN (the first symbol) with her money; her portfolio holds it, and the recent
    // orders list it once the trade log has it.
    click(&ann, "a[data-tab=coins]").await;
    eventually!(
        10,
        "the catalogue",
        (!texts(&ann, "#coins-symbol option").await.is_empty()).then_some(())
    );
    eventually!(10, "ann's portfolio", {
        let text = texts(&ann, "#coins-portfolio p").await.concat();
        text.starts_with("Bank balance 376.55").then_some(())
    });
    assert!(texts(&ann, "#coins-portfolio tbody tr").await.is_empty(), "nothing held yet");
    type_into(&ann, "#coins-order input[name=user]", "ann").await;
    type_into(&ann, "#coins-order input[name=quantity]", "1").await;
    click(&ann, "#coins-order button[value=buy]").await;
    eventually!(
        10,
        "the order",
        texts(&ann, "#toasts .toast")
            .await
            .iter()
            .any(|t| t == "buy 1 AMZN: done, 185.00")
            .then_some(())
    );
    eventually!(10, "the portfolio", {
        let rows = texts(&ann, "#coins-portfolio tbody tr").await;
        (rows.len() == 1 && rows[0].starts_with("AMZN 1")).then_some(())
    });
    eventually!(10, "the trade in recent orders", {
        click(&ann, "a[data-tab=coins]").await;
        let rows = texts(&ann, "#coins-history tbody tr").await;
        rows.iter()
            .any(|r| r.contains("ann") && r.contains("AMZN") && r.contains("185.00"))
            .then_some(())
    });
    screenshot(&ann, "dashboard-coins.png").await;

    // Likes: ann likes an item; the count changes in her browser and, live, in ben's. A
    // like is ann's: her heart says she likes it, and a click takes it back (and another
    // gives it again: never twice). Ben's like counts.
    click(&ben, "a[data-tab=likes]").await;
    click(&ann, "a[data-tab=likes]").await;
    type_into(&ann, "#likes-item", "post-browser").await;
    click(&ann, "#likes-add").await;
    let count = "li[data-item=post-browser] .count";
    let heart = "li[data-item=post-browser] .heart";
    eventually!(10, "the first like", (texts(&ann, count).await == ["1"]).then_some(()));
    eventually!(10, "the item in ben's browser", (texts(&ben, count).await == ["1"]).then_some(()));
    assert_eq!(texts(&ann, heart).await, ["♥ Liked"]);
    assert_eq!(texts(&ben, heart).await, ["♥ Like"], "ben's heart is his");
    click(&ann, heart).await;
    eventually!(10, "ann's like taken back", (texts(&ann, count).await == ["0"]).then_some(()));
    eventually!(10, "and in ben's browser", (texts(&ben, count).await == ["0"]).then_some(()));
    assert_eq!(texts(&ann, heart).await, ["♥ Like"]);
    click(&ann, heart).await;
    eventually!(10, "ann's like again", (texts(&ann, count).await == ["1"]).then_some(()));
    click(&ben, heart).await;
    eventually!(10, "ben's like", (texts(&ann, count).await == ["2"]).then_some(()));
    eventually!(
        10,
        "the count in ben's browser",
        (texts(&ben, count).await == ["2"]).then_some(())
    );
    screenshot(&ann, "dashboard-likes.png").await;

    // Monitoring: every instance's metrics, with charts, for the manager.
    click(&ben, "a[data-tab=monitoring]").await;
    eventually!(20, "the instances table", {
        let services = texts(&ben, "#mon-table tbody td:first-child").await;
        (services.iter().any(|s| s == "bank") && services.iter().any(|s| s == "likes"))
            .then_some(())
    });
    // A rate needs two reads; the charts draw a few, with a legend, and the tiles a figure.
    eventually!(30, "charts of a few reads", {
        let rate = texts(&ben, "#mon-rate").await;
        let legend = texts(&ben, "#mon-legend span").await;
        let canvas = ben.find(Locator::Css("#mon-chart-rate")).await.ok();
        let points = match canvas {
            Some(canvas) => canvas.attr("data-points").await.ok().flatten(),
            None => None,
        };
        (rate.first().is_some_and(|r| r != "–" && !r.is_empty())
            && legend.iter().any(|s| s == "bank")
            && points.and_then(|p| p.parse::<u32>().ok()).is_some_and(|p| p >= 4))
        .then_some(())
    });
    let columns = texts(&ben, "#mon-table thead th").await;
    for column in ["p99", "In flight", "Queue", "Commit p99", "Consumer lag", "Cache"] {
        assert!(columns.iter().any(|c| c == column), "{column} in {columns:?}");
    }
    // The table is redrawn on every refresh, so its row is read again if it was replaced.
    let queue = eventually!(10, "the ledger's row", {
        let row = ben
            .find(Locator::XPath("//table[@id='mon-table']//tr[td[1][normalize-space()='ledger']]"))
            .await
            .ok();
        match row {
            Some(row) => match row.find_all(Locator::Css("td")).await {
                Ok(cells) if cells.len() > 7 => cells[7].text().await.ok(),
                _ => None,
            },
            None => None,
        }
    });
    assert!(queue.parse::<u64>().is_ok(), "the ledger's queue depth is a number: {queue:?}");
    screenshot(&ben, "dashboard-monitoring.png").await;

    // Logs: a traced transfer through the gateway; its trace id in a log line shows the
    // whole path (gateway, bank, ledger) when clicked.
    click(&ben, "a[data-tab=logs]").await;
    let caller = agora_nats::trace::Trace::root(true);
    let trace_id = caller.trace_id.to_string();
    let token = system.http_token("ann").await;
    let http = reqwest::Client::new();
    let deposited = http
        .post(format!("{base}/api/bank/deposit"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"account": "ann", "amount": 10}))
        .send()
        .await
        .expect("the gateway answers");
    assert_eq!(deposited.status(), 200);
    let transferred = http
        .post(format!("{base}/api/bank/transfer"))
        .bearer_auth(&token)
        .header("traceparent", caller.traceparent())
        .json(&serde_json::json!({"from": "ann", "to": "ben", "amount": 1}))
        .send()
        .await
        .expect("the gateway answers");
    assert_eq!(transferred.status(), 200);

    let link = format!("#logs-list a.trace[data-trace='{trace_id}']");
    eventually!(20, "the trace's log lines", shown(&ben, &link).await.then_some(()));
    click(&ben, &link).await;
    agora_tests::eventually(Duration::from_secs(20), Duration::from_millis(200), async || {
        let mut shown_rows = Vec::new();
        for row in ben.find_all(Locator::Css("#logs-list .log")).await.unwrap_or_default() {
            if row.is_displayed().await.unwrap_or(false) {
                shown_rows.push(row.text().await.unwrap_or_default());
            }
        }
        let hop = |name: &str| {
            shown_rows.iter().filter(|t| t.contains(&format!("span {name}"))).count() == 1
        };
        let every_hop_once = hop("gateway POST /api/bank/transfer")
            && hop("bank transfer")
            && hop("ledger apply")
            && shown_rows.iter().all(|t| t.contains(&trace_id[..8]));
        if every_hop_once {
            Ok(())
        } else {
            Err(format!("only the trace's records, from every hop, each once: {shown_rows:#?}"))
        }
    })
    .await;
    assert!(shown(&ben, "#logs-trace").await, "the trace banner");
    screenshot(&ben, "dashboard-logs-trace.png").await;
    click(&ben, "#logs-trace-clear").await;
    eventually!(10, "every record again", (!shown(&ben, "#logs-trace").await).then_some(()));

    // Amounts are i64 minor units: one beyond 2^53 (where a JavaScript number stops being
    // exact) goes to the bank and comes back in the statement to the cent.
    click(&ann, "a[data-tab=bank]").await;
    type_into(&ann, "#bank-deposit input[name=account]", "ann").await;
    type_into(&ann, "#bank-deposit input[name=amount]", "9007199254740993").await;
    click(&ann, "#bank-deposit button").await;
    type_into(&ann, "#bank-statement input[name=account]", "ann").await;
    let newest = eventually!(10, "the large deposit in the statement", {
        click(&ann, "#bank-statement button").await;
        let rows = texts(&ann, "#bank-entries tbody tr").await;
        rows.into_iter().next().filter(|row| row.contains("Deposit") && row.contains("90,071"))
    });
    assert!(newest.contains("90,071,992,547,409.93"), "{newest}");

    // Files: ben (the manager) uploads a file from his disk, larger than one NATS message (it
    // goes on in parts); it is listed and served as it was. Ann's page does not offer uploads.
    let local = tempfile::tempdir().expect("a directory");
    let report: Vec<u8> = (0..1_500_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(local.path().join("report.bin"), &report).expect("written");
    click(&ben, "a[data-tab=files]").await;
    eventually!(10, "the upload form", shown(&ben, "#files-upload").await.then_some(()));
    let input = ben.find(Locator::Css("#files-upload-file")).await.expect("the file input");
    let chosen = local.path().join("report.bin");
    input.send_keys(chosen.to_str().expect("UTF-8")).await.expect("a file chosen");
    type_into(&ben, "#files-upload-name", "docs/report.bin").await;
    click(&ben, "#files-upload-submit").await;
    eventually!(10, "the upload", {
        let toasts = texts(&ben, "#toasts .toast").await;
        toasts.iter().any(|t| t.starts_with("docs/report.bin uploaded")).then_some(())
    });
    eventually!(10, "the uploaded file listed", {
        let rows = texts(&ben, "#files-table tbody tr").await;
        rows.iter().any(|row| row.contains("docs/report.bin")).then_some(())
    });
    assert_eq!(std::fs::read(system.files_root().join("docs/report.bin")).expect("served"), report);
    click(&ann, "a[data-tab=files]").await;
    eventually!(10, "ann's file list", {
        let rows = texts(&ann, "#files-table tbody tr").await;
        rows.iter().any(|row| row.contains("docs/report.bin")).then_some(())
    });
    assert!(!shown(&ann, "#files-upload").await, "a user is not offered uploads");
    assert!(texts(&ann, "#files-table button.remove").await.is_empty(), "nor removals");
    // ben removes it: asked first; dismissed, nothing happens; accepted, it is gone.
    let remove = r#"#files-table button.remove[data-name="docs/report.bin"]"#;
    click(&ben, remove).await;
    ben.dismiss_alert().await.expect("a question");
    assert_eq!(texts(&ben, remove).await.len(), 1, "dismissed: still listed");
    click(&ben, remove).await;
    ben.accept_alert().await.expect("a question");
    eventually!(10, "the removal", {
        let toasts = texts(&ben, "#toasts .toast").await;
        toasts.iter().any(|t| t.starts_with("docs/report.bin removed")).then_some(())
    });
    eventually!(10, "the removed file unlisted", {
        let rows = texts(&ben, "#files-table tbody tr").await;
        (!rows.iter().any(|row| row.contains("docs/report.bin"))).then_some(())
    });
    assert!(!system.files_root().join("docs/report.bin").exists());

    // Signing out ends the session: the page is back at the sign-in form, and the cookie
    // no longer works.
    click(&ann, "#signout").await;
    eventually!(10, "the sign-in form again", shown(&ann, "#signin").await.then_some(()));
    // The next person to sign in on the same page sees nothing of ann's: not her balance, not
    // her statement, not her name in a form (it is theirs), and nothing is asked as her.
    type_into(&ann, "#signin-name", "cat").await;
    type_into(&ann, "#signin-password", &test_password("cat")).await;
    click(&ann, "#signup-submit").await;
    eventually!(10, "cat signed in", {
        (texts(&ann, "#me-name").await.first().map(String::as_str) == Some("cat")).then_some(())
    });
    click(&ann, "a[data-tab=bank]").await;
    eventually!(10, "cat's own balance", {
        let rows = texts(&ann, "#bank-balances tbody tr").await;
        (rows.len() == 1 && rows[0].starts_with("cat")).then_some(())
    });
    eventually!(10, "cat's (empty) statement", {
        let status = texts(&ann, "#bank-statement-status").await;
        (status.first().map(String::as_str) == Some("0 entries of cat (money)")).then_some(())
    });
    assert!(texts(&ann, "#bank-entries tbody tr").await.is_empty(), "none of ann's entries");
    for form in ["#bank-deposit", "#bank-withdraw", "#bank-statement"] {
        let input = ann.find(Locator::Css(&format!("{form} input[name=account]"))).await;
        let value = input.expect(form).prop("value").await.expect("a value");
        assert_eq!(value.as_deref(), Some("cat"), "{form}");
    }
    let page = texts(&ann, "body").await.concat();
    let mut words = page.split(|c: char| !c.is_alphanumeric());
    assert!(!words.any(|word| word == "ann"), "nothing of ann's on cat's page: {page}");
    click(&ann, "#signout").await;
    eventually!(10, "the sign-in form again", shown(&ann, "#signin").await.then_some(()));
    ann.goto(&format!("{base}/#bank")).await.expect("reloads");
    eventually!(10, "still signed out after a reload", shown(&ann, "#signin").await.then_some(()));
    assert!(!shown(&ann, "#tab-bank").await, "no tab shows after signing out");

    ann.close().await.expect("closes");
    ben.close().await.expect("closes");
}
