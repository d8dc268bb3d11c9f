//! Tasks and workers: load balancing, crashes, backpressure, retries, cancellation,
//! idempotency, restarts and bad input, against real processes.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use agora_nats::ErrorCode;
use agora_nats::subjects::tasks as subject;
use agora_nats::tasks::wire::{ListRequest, SubmitRequest, TaskEventWire};
use agora_tests::{POLL, System, code, eventually, finished_task as finished, wait_until};
use bytes::Bytes;
use futures::StreamExt;
use serde_json::{Value, json};

fn request(op: &str, args: Value, id: Option<&str>) -> SubmitRequest {
    SubmitRequest { id: id.map(str::to_owned), ..SubmitRequest::new(op, &args) }
}

/// Collects task events from a subscription into per-task lists.
fn collect_events(
    mut events: async_nats::Subscriber,
) -> tokio::task::JoinHandle<HashMap<String, Vec<String>>> {
    tokio::spawn(async move {
        let mut seen: HashMap<String, Vec<String>> = HashMap::new();
        while let Ok(Some(message)) =
            tokio::time::timeout(Duration::from_secs(3), events.next()).await
        {
            let event: TaskEventWire =
                serde_json::from_slice(&message.payload).expect("event JSON");
            seen.entry(event.id.expect("events carry the id")).or_default().push(event.event);
        }
        seen
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_share_300_tasks_each_completed_exactly_once() {
    let system = System::with_tasks(3, &[]);
    let client = system.client().await;
    let events = client.nats().subscribe(subject::EVENTS_ALL).await.expect("subscribe");
    client.nats().flush().await.expect("flush");

    let mut submissions = Vec::new();
    for i in 0..300i64 {
        let client = client.clone();
        submissions.push(tokio::spawn(async move {
            let numbers: Vec<i64> = (0..(i % 17)).map(|k| k * i - 40).collect();
            let expected: i64 = numbers.iter().sum();
            let task = client
                .submit(&request("sum", json!({ "numbers": numbers }), Some(&format!("load-{i}"))))
                .await
                .expect("submit");
            (task.id, expected)
        }));
    }
    let mut by_worker: HashMap<String, usize> = HashMap::new();
    let mut ids = HashSet::new();
    for submission in submissions {
        let (id, expected) = submission.await.expect("joined");
        let task = finished(&client, &id).await;
        assert_eq!(task.state, "completed", "{task:?}");
        assert_eq!(task.result.expect("a result").get(), format!(r#"{{"value":{expected}}}"#));
        assert_eq!(task.attempts, Some(1));
        *by_worker.entry(task.worker.expect("a worker")).or_default() += 1;
        ids.insert(id);
    }
    assert_eq!(ids.len(), 300, "300 distinct tasks");
    assert_eq!(by_worker.len(), 3, "every worker did some: {by_worker:?}");

    let seen = collect_events(events).await.expect("events");
    assert_eq!(seen.len(), 300);
    for (id, list) in &seen {
        assert_eq!(list.iter().filter(|e| *e == "completed").count(), 1, "task {id}: {list:?}");
        assert_eq!(list.iter().filter(|e| *e == "started").count(), 1, "task {id}: {list:?}");
        assert_eq!(list.first().map(String::as_str), Some("queued"), "task {id}: {list:?}");
    }
    let workers = client.workers(Duration::from_millis(500)).await.expect("workers");
    assert_eq!(workers.len(), 3);
    assert_eq!(workers.iter().map(|w| w.done).sum::<u64>(), 300);
    assert!(workers.iter().all(|w| w.done > 0 && w.current.is_empty()), "{workers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_task_leaves_its_tasks_to_another_worker() {
    let mut system = System::with_tasks(2, &[]);
    let client = system.client().await;
    let mut ids = Vec::new();
    for _ in 0..6 {
        ids.push(
            client.submit(&request("sleep", json!({"ms": 2_500}), None)).await.expect("submit").id,
        );
    }
    // Wait until the first worker is running some of them, then kill it.
    let running =
        ListRequest { state: Some("running".into()), limit: Some(50), ..Default::default() };
    let on_w0: Vec<String> = eventually(Duration::from_secs(10), POLL, async || {
        let list = client.tasks(&running).await.map_err(|e| e.to_string())?;
        let mine: Vec<String> = list
            .tasks
            .into_iter()
            .filter(|t| t.worker.as_deref() == Some("w0"))
            .map(|t| t.id)
            .collect();
        if mine.is_empty() { Err("w0 never ran a task".to_owned()) } else { Ok(mine) }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    system.kill_worker(0);

    for id in &ids {
        let task = finished(&client, id).await;
        assert_eq!(task.state, "completed", "{task:?}");
        assert_eq!(task.result.as_ref().expect("result").get(), r#"{"slept_ms":2500}"#);
        if on_w0.contains(id) {
            assert_eq!(task.worker.as_deref(), Some("w1"), "finished elsewhere: {task:?}");
            assert_eq!(task.attempts, Some(2), "the record shows the extra attempt: {task:?}");
            let history = client.task(id).await.expect("get").history.expect("history");
            let started: Vec<_> = history
                .iter()
                .filter(|e| e.event == "started")
                .map(|e| (e.attempt, e.worker.clone()))
                .collect();
            assert_eq!(started, [(Some(1), Some("w0".into())), (Some(2), Some("w1".into()))]);
        }
    }
}

/// A worker started with the id of a running one refuses (the two would answer for each
/// other's status and share a name in every task's history) and the running one goes on; once
/// that worker is gone (`kill -9`), its id starts again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_worker_with_a_running_workers_id_refuses_to_start() {
    let mut system = System::with_tasks(1, &[]);
    let start = |system: &System| {
        let path = agora_devtools::process::component_binary("agora-worker").expect("built");
        let args = ["--server", system.url(), "--worker-id", "w0"].map(String::from);
        let logs = system.dir.path().join("logs");
        agora_devtools::process::Component::start("w0-again", &path, &args, &[], &logs)
    };
    let refused = start(&system).map(drop).expect_err("a second w0 is refused");
    let said = format!("{refused:#}");
    assert!(said.contains("another worker with id w0 is running"), "{said}");
    let client = system.client().await;
    let sum = request("sum", json!({"numbers": [1, 2]}), None);
    let task = finished(&client, &client.submit(&sum).await.expect("submit").id).await;
    assert_eq!((task.state.as_str(), task.worker.as_deref()), ("completed", Some("w0")));

    system.kill_worker(0);
    let _again = start(&system).expect("the id is free once its worker is gone");
    let task = finished(&client, &client.submit(&sum).await.expect("submit").id).await;
    assert_eq!((task.state.as_str(), task.worker.as_deref()), ("completed", Some("w0")));
}

/// Workers started with one id at the same moment: the server lets exactly one claim it, the
/// others refuse; a worker whose id is taken from under it (its key in `AGORA_WORKERS`
/// overwritten) stops with an error instead of running beside the new holder; a clean stop
/// gives the id back at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_id_is_held_by_one_worker_however_close_together_they_start() {
    let system = System::with_tasks(0, &[]);
    let path = agora_devtools::process::component_binary("agora-worker").expect("built");
    let logs = system.dir.path().join("logs");
    let start = |name: String| {
        let args = ["--server", system.url(), "--worker-id", "twin"].map(String::from);
        let (path, logs) = (path.clone(), logs.clone());
        std::thread::spawn(move || {
            agora_devtools::process::Component::start(&name, &path, &args, &[], &logs)
        })
    };
    for round in 0..3 {
        let starts: Vec<_> = (0..4).map(|i| start(format!("twin-{round}-{i}"))).collect();
        let results: Vec<_> = starts.into_iter().map(|s| s.join().expect("joined")).collect();
        let refusals: Vec<String> =
            results.iter().filter_map(|r| r.as_ref().err().map(|e| format!("{e:#}"))).collect();
        assert_eq!(refusals.len(), 3, "round {round}: exactly one holds the id: {refusals:?}");
        for said in &refusals {
            assert!(said.contains("another worker with id twin is running"), "{said}");
        }
        let mut holder = results.into_iter().find_map(Result::ok).expect("one started");
        if round < 2 {
            // A clean stop gives the id back: the next round claims it at once.
            holder.terminate();
            continue;
        }
        // Taken from under it: it stops, and says why.
        let client = system.client().await;
        let js = async_nats::jetstream::new(client.nats().clone());
        let bucket = js.get_key_value("AGORA_WORKERS").await.expect("the id bucket");
        bucket.put("twin", Bytes::from_static(b"someone else")).await.expect("overwritten");
        let status = eventually(Duration::from_secs(10), POLL, async || {
            holder.exit_status().ok_or_else(|| "still running".to_owned())
        })
        .await;
        assert!(!status.success(), "{status:?}");
        let log = std::fs::read_to_string(holder.log()).expect("its log");
        assert!(log.contains("another worker took over this worker's id"), "{log}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn far_more_tasks_than_workers_are_all_run_and_overflow_is_refused_not_dropped() {
    let system = System::with_tasks(0, &["--pending-max", "300"]);
    let mut system = system;
    system.add_worker(&["--concurrency", "2"]);
    system.add_worker(&["--concurrency", "2"]);
    let client = system.client().await;
    let mut submissions = Vec::new();
    for i in 0..800 {
        let client = client.clone();
        submissions.push(tokio::spawn(async move {
            client.submit(&request("sleep", json!({"ms": 2}), Some(&format!("bp-{i}")))).await
        }));
    }
    let (mut accepted, mut refused) = (Vec::new(), 0);
    for submission in submissions {
        match submission.await.expect("joined") {
            Ok(task) => accepted.push(task.id),
            Err(error) => {
                assert_eq!(error.code(), ErrorCode::Busy, "{error}");
                refused += 1;
            }
        }
    }
    assert_eq!(accepted.len() + refused, 800);
    assert!(accepted.len() >= 300, "at least the limit was accepted: {}", accepted.len());
    assert!(refused > 0, "4 slots cannot keep up with 800 submissions; the excess must be refused");
    for id in &accepted {
        let task = finished(&client, id).await;
        assert_eq!(task.state, "completed", "{task:?}");
    }
    let completed =
        ListRequest { state: Some("completed".into()), limit: Some(1000), ..Default::default() };
    assert_eq!(client.tasks(&completed).await.expect("list").tasks.len(), accepted.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_that_always_fails_is_retried_then_dead_lettered() {
    let system = System::with_tasks(2, &["--max-deliver", "3"]);
    let client = system.client().await;
    let task = client
        .submit(&request("fail", json!({"message": "disk on fire"}), None))
        .await
        .expect("submit");
    let done = finished(&client, &task.id).await;
    assert_eq!(done.state, "failed");
    assert!(done.dead_letter);
    assert_eq!(done.attempts, Some(3));
    assert_eq!(done.error.as_deref(), Some("disk on fire"));
    let history = client.task(&task.id).await.expect("get").history.expect("history");
    let kinds: Vec<&str> = history.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(
        kinds,
        ["queued", "started", "retrying", "started", "retrying", "started", "failed"]
    );
    let dead =
        client.tasks(&ListRequest { dead_letter: true, ..Default::default() }).await.expect("list");
    assert_eq!(dead.tasks.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(), [task.id.as_str()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_tasks_never_run_or_stop_running() {
    let mut system = System::with_tasks(0, &[]);
    system.add_worker(&["--concurrency", "1"]);
    let client = system.client().await;
    let blocker =
        client.submit(&request("sleep", json!({"ms": 1_500}), None)).await.expect("submit");
    let queued = client.submit(&request("sleep", json!({"ms": 10}), None)).await.expect("submit");
    wait_until(Duration::from_secs(5), "the blocker runs", async || {
        client.task(&blocker.id).await.expect("get").state == "running"
    })
    .await;
    let cancelled = client.cancel_task(&queued.id).await.expect("cancel");
    assert_eq!(cancelled.state, "cancelled");
    assert_eq!(finished(&client, &blocker.id).await.state, "completed");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let never = client.task(&queued.id).await.expect("get");
    assert_eq!((never.state.as_str(), never.attempts), ("cancelled", Some(0)), "{never:?}");
    assert!(never.history.expect("history").iter().all(|e| e.event != "started"));

    let long = client.submit(&request("sleep", json!({"ms": 60_000}), None)).await.expect("submit");
    wait_until(Duration::from_secs(5), "the long task runs", async || {
        client.task(&long.id).await.expect("get").state == "running"
    })
    .await;
    assert_eq!(client.cancel_task(&long.id).await.expect("cancel").state, "cancelled");
    wait_until(Duration::from_secs(5), "the worker stops it", async || {
        let workers = client.workers(Duration::from_millis(300)).await.expect("workers");
        workers.len() == 1 && workers[0].current.is_empty()
    })
    .await;
    // The worker is free again, and a finished task cannot be cancelled.
    let next = client
        .submit(&request("count_words", json!({"text": "a b c"}), None))
        .await
        .expect("submit");
    assert_eq!(finished(&client, &next.id).await.result.expect("result").get(), r#"{"value":3}"#);
    assert_eq!(code(client.cancel_task(&long.id).await), ErrorCode::Conflict);
    assert_eq!(code(client.cancel_task(&next.id).await), ErrorCode::Conflict);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_client_id_is_one_task_even_when_submitted_concurrently() {
    let system = System::with_tasks(1, &[]);
    let client = system.client().await;
    let mut copies = Vec::new();
    for _ in 0..10 {
        let client = client.clone();
        copies.push(tokio::spawn(async move {
            client
                .submit(&request("fibonacci", json!({"n": 90}), Some("fib-90")))
                .await
                .expect("submit")
                .id
        }));
    }
    let mut ids = HashSet::new();
    for copy in copies {
        ids.insert(copy.await.expect("joined"));
    }
    assert_eq!(ids.len(), 1, "{ids:?}");
    let id = ids.into_iter().next().expect("one");
    let done = finished(&client, &id).await;
    assert_eq!(done.result.expect("result").get(), r#"{"digits":"2880067194370816120"}"#);
    let again = client
        .submit(&request("fibonacci", json!({"n": 90}), Some("fib-90")))
        .await
        .expect("submit");
    assert_eq!((again.id.as_str(), again.state.as_str()), (id.as_str(), "completed"));
    let other = client.submit(&request("fibonacci", json!({"n": 91}), Some("fib-90"))).await;
    assert_eq!(code(other), ErrorCode::InvalidRequest);
    let all = client.tasks(&ListRequest::default()).await.expect("list");
    assert_eq!(all.tasks.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_service_restart_keeps_history_and_loses_no_task() {
    let mut system = System::with_tasks(2, &[]);
    let client = system.client().await;
    let first = client
        .submit(&request("uppercase", json!({"text": "straße"}), None))
        .await
        .expect("submit");
    let done = finished(&client, &first.id).await;
    assert_eq!(done.result.expect("result").get(), r#"{"value":"STRASSE"}"#);

    // Tasks in flight while the service is killed: the workers hold their reports until it is
    // back, and every task still completes exactly once.
    let mut ids = Vec::new();
    for i in 0..20 {
        let task = client
            .submit(&request("sleep", json!({"ms": 300 + i * 10}), None))
            .await
            .expect("submit");
        ids.push(task.id);
    }
    system.kill_tasks();
    tokio::time::sleep(Duration::from_millis(800)).await;
    system.start_tasks();

    let again = client.task(&first.id).await.expect("get after restart");
    assert_eq!(again.state, "completed");
    let kinds: Vec<_> = again.history.expect("history").into_iter().map(|e| e.event).collect();
    assert_eq!(kinds, ["queued", "started", "completed"]);
    for id in &ids {
        let task = finished(&client, id).await;
        assert_eq!(task.state, "completed", "{task:?}");
    }
    let next = client
        .submit(&request("max", json!({"numbers": [3, 9.5, -1]}), None))
        .await
        .expect("submit");
    assert!(next.id.parse::<u64>().expect("numeric") > 21, "ids keep increasing: {}", next.id);
    assert_eq!(finished(&client, &next.id).await.result.expect("result").get(), r#"{"value":9.5}"#);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn high_priority_tasks_jump_the_queue() {
    let mut system = System::with_tasks(0, &[]);
    system.add_worker(&["--concurrency", "1"]);
    let client = system.client().await;
    let blocker = client.submit(&request("sleep", json!({"ms": 800}), None)).await.expect("submit");
    wait_until(Duration::from_secs(5), "the blocker runs", async || {
        client.task(&blocker.id).await.expect("get").state == "running"
    })
    .await;
    let mut normal = Vec::new();
    for _ in 0..10 {
        normal.push(
            client.submit(&request("sleep", json!({"ms": 20}), None)).await.expect("submit").id,
        );
    }
    let mut high = request("sleep", json!({"ms": 20}), None);
    high.priority = Some("high".into());
    let high = client.submit(&high).await.expect("submit");
    let high_started = finished(&client, &high.id).await.started_ms.expect("started");
    let mut after = 0;
    for id in &normal {
        if finished(&client, id).await.started_ms.expect("started") > high_started {
            after += 1;
        }
    }
    // The worker may already hold one normal task it pulled ahead; the rest wait.
    assert!(after >= 8, "only {after} of 10 normal tasks started after the high one");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_coded_errors_and_the_service_stays_up() {
    let system = System::with_tasks(1, &[]);
    let client = system.client().await;
    let cases: &[(&str, &str, ErrorCode)] = &[
        (subject::SUBMIT_SUBJECT, "", ErrorCode::InvalidRequest),
        (subject::SUBMIT_SUBJECT, "{", ErrorCode::InvalidRequest),
        (subject::SUBMIT_SUBJECT, r#"{"op":"sum"}"#, ErrorCode::InvalidRequest),
        (subject::SUBMIT_SUBJECT, r#"{"op":"nope","args":{}}"#, ErrorCode::InvalidRequest),
        (
            subject::SUBMIT_SUBJECT,
            r#"{"op":"sum","args":{"numbers":[1e999]}}"#,
            ErrorCode::InvalidRequest,
        ),
        (
            subject::SUBMIT_SUBJECT,
            r#"{"op":"sum","args":{"numbers":[9007199254740993]}}"#,
            ErrorCode::InvalidRequest,
        ),
        (
            subject::SUBMIT_SUBJECT,
            r#"{"op":"fibonacci","args":{"n":-1}}"#,
            ErrorCode::InvalidRequest,
        ),
        (
            subject::SUBMIT_SUBJECT,
            r#"{"op":"sleep","args":{"ms":3600001}}"#,
            ErrorCode::InvalidRequest,
        ),
        (
            subject::SUBMIT_SUBJECT,
            r#"{"op":"sort","args":{"numbers":[1],"strings":["a"]}}"#,
            ErrorCode::InvalidRequest,
        ),
        (
            subject::SUBMIT_SUBJECT,
            r#"{"op":"sleep","args":{"ms":1},"priority":"urgent"}"#,
            ErrorCode::InvalidRequest,
        ),
        (
            subject::SUBMIT_SUBJECT,
            r#"{"op":"sleep","args":{"ms":1},"extra":1}"#,
            ErrorCode::InvalidRequest,
        ),
        (subject::GET_SUBJECT, r#"{"id":"x"}"#, ErrorCode::InvalidRequest),
        (subject::GET_SUBJECT, r#"{"id":"999999"}"#, ErrorCode::NotFound),
        (subject::CANCEL_SUBJECT, r#"{"id":"999999"}"#, ErrorCode::NotFound),
        (subject::WAIT_SUBJECT, r#"{"id":"1","timeout_ms":60001}"#, ErrorCode::InvalidRequest),
        (subject::WAIT_SUBJECT, r#"{"id":"999999","timeout_ms":10}"#, ErrorCode::NotFound),
        (subject::LIST_SUBJECT, r#"{"state":"done"}"#, ErrorCode::InvalidRequest),
        (subject::LIST_SUBJECT, r#"{"limit":100000}"#, ErrorCode::InvalidRequest),
        (subject::LIST_SUBJECT, r#"{"op":"divide"}"#, ErrorCode::InvalidRequest),
        (subject::CLAIM_SUBJECT, r#"{"id":"999999","worker":"w"}"#, ErrorCode::NotFound),
        (subject::CLAIM_SUBJECT, r#"{"id":"1","worker":""}"#, ErrorCode::InvalidRequest),
        (
            subject::PROGRESS_SUBJECT,
            r#"{"id":"1","worker":"w","percent":300}"#,
            ErrorCode::InvalidRequest,
        ),
        (
            subject::FINISH_SUBJECT,
            r#"{"id":"1","worker":"w","result":1,"error":"x"}"#,
            ErrorCode::InvalidRequest,
        ),
    ];
    for (subject, payload, expected) in cases {
        let result = client.request_bytes(subject, Bytes::from(payload.to_string())).await;
        assert_eq!(code(result), *expected, "{subject} {payload}");
    }
    let huge = format!(r#"{{"op":"count_chars","args":{{"text":"{}"}}}}"#, "x".repeat(300_000));
    assert_eq!(
        code(client.request_bytes(subject::SUBMIT_SUBJECT, Bytes::from(huge)).await),
        ErrorCode::InvalidRequest
    );
    let task = client
        .submit(&request("count_chars", json!({"text": "héllo"}), None))
        .await
        .expect("still up");
    assert_eq!(finished(&client, &task.id).await.result.expect("result").get(), r#"{"value":5}"#);
    // A waiting submit returns the finished task in one round trip.
    let mut waiting = request("average", json!({"numbers": [1, 2]}), None);
    waiting.wait_ms = Some(10_000);
    let done = client.submit(&waiting).await.expect("submit and wait");
    assert_eq!(
        (done.state.as_str(), done.result.expect("result").get()),
        ("completed", r#"{"value":1.5}"#)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_whose_workers_keep_dying_becomes_a_dead_letter() {
    let mut system = System::with_tasks(0, &["--max-deliver", "2"]);
    let client = system.client().await;
    let task = client.submit(&request("sleep", json!({"ms": 30_000}), None)).await.expect("submit");
    for attempt in 1..=2u32 {
        let worker = system.add_worker(&[]);
        let name = format!("w{worker}");
        wait_until(Duration::from_secs(10), "a worker runs the task", async || {
            let now = client.task(&task.id).await.expect("get");
            now.state == "running" && now.worker.as_deref() == Some(name.as_str())
        })
        .await;
        assert_eq!(client.task(&task.id).await.expect("get").attempts, Some(attempt));
        system.kill_worker(worker);
    }
    // No worker is left, and JetStream gives up after two deliveries.
    let done = finished(&client, &task.id).await;
    assert_eq!((done.state.as_str(), done.dead_letter, done.attempts), ("failed", true, Some(2)));
    assert!(done.error.as_deref().is_some_and(|e| e.contains("2 deliveries")), "{done:?}");
    // The message is gone from the queue: a new worker has nothing to redo.
    system.add_worker(&[]);
    let next =
        client.submit(&request("count_chars", json!({"text": "ok"}), None)).await.expect("submit");
    assert_eq!(finished(&client, &next.id).await.state, "completed");
    assert_eq!(client.task(&task.id).await.expect("get").attempts, Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_from_one_person_leaves_another_persons_latency_within_twice_idle() {
    let mut system = System::nats_with_auth();
    system.start_tasks();
    system.add_worker(&[]);
    system.add_worker(&[]);
    let alice = system.person("alice").await;
    let bob = system.person("bob").await;
    let sleep = |ms: u64| SubmitRequest {
        wait_ms: Some(30_000),
        ..SubmitRequest::new("sleep", &json!({ "ms": ms }))
    };
    // Submitted to finished, as the task service recorded it.
    let latency = async |client: &agora_nats::AgoraClient| {
        let task = client.submit(&sleep(300)).await.expect("submitted");
        assert_eq!(task.state, "completed", "{task:?}");
        task.finished_ms.expect("finished") - task.submitted_ms.expect("submitted")
    };
    let median = |mut figures: Vec<u64>| {
        figures.sort_unstable();
        figures[figures.len() / 2]
    };
    let mut idle = Vec::new();
    for _ in 0..7 {
        idle.push(latency(&bob).await);
    }
    let idle = median(idle);

    // Alice floods the queue with 10,000 tasks of her own: far more than the workers' 64
    // slots can run at once (about 100 s of work for them).
    let submitted = futures::stream::iter(0..10_000u64)
        .map(|_| {
            let alice = alice.clone();
            async move {
                let task = SubmitRequest::new("sleep", &json!({ "ms": 600 }));
                alice.submit(&task).await.map(|view| view.id)
            }
        })
        .buffer_unordered(64)
        .collect::<Vec<_>>()
        .await;
    let ids = submitted.into_iter().collect::<Result<Vec<_>, _>>().expect("every task accepted");
    let mut busy = Vec::new();
    for _ in 0..5 {
        busy.push(latency(&bob).await);
    }
    let busy = median(busy);
    eprintln!("fairness: idle {idle} ms, behind alice's flood {busy} ms");
    assert!(busy <= 2 * idle, "bob waits {busy} ms behind alice's flood (idle {idle} ms)");

    // Nothing of alice's is lost: she cancels what has not run; each task either completed or
    // was cancelled, and none failed.
    assert_eq!(ids.len(), 10_000);
    futures::stream::iter(&ids)
        .for_each_concurrent(64, |id| {
            let alice = alice.clone();
            async move {
                alice.cancel_task(id).await.ok();
            }
        })
        .await;
    wait_until(Duration::from_secs(120), "alice's flood to settle", async || {
        let mut open = 0;
        for state in ["queued", "running"] {
            let list = ListRequest {
                state: Some(state.into()),
                limit: Some(1_000),
                ..ListRequest::default()
            };
            open += alice.tasks(&list).await.map_or(1, |reply| reply.tasks.len());
        }
        open == 0
    })
    .await;
    let failed =
        ListRequest { state: Some("failed".into()), limit: Some(10), ..ListRequest::default() };
    assert!(alice.tasks(&failed).await.expect("list").tasks.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_submitting_faster_than_their_rate_is_refused_and_others_are_not() {
    let mut system = System::nats_with_auth();
    system.tasks_args =
        ["--user-submit-rate", "5", "--user-submit-burst", "100"].map(str::to_owned).to_vec();
    system.start_tasks();
    let alice = system.person("alice").await;
    let bob = system.person("bob").await;
    let task = || SubmitRequest::new("sum", &json!({"numbers": [1]}));
    // The burst, at once: accepted.
    let accepted = futures::stream::iter(0..100)
        .map(|_| {
            let alice = alice.clone();
            async move { alice.submit(&task()).await }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    assert!(accepted.iter().all(Result::is_ok), "the burst is accepted");
    // Then no more than the rate: refused with a coded error that says when to retry.
    let error = alice.submit(&task()).await.expect_err("over the rate");
    assert_eq!(error.code(), ErrorCode::RateLimited, "{error}");
    assert!(error.to_string().contains("retry in"), "{error}");
    let flow: agora_nats::tasks::wire::WorkflowSubmitRequest = serde_json::from_value(
        json!({"steps": [{"name": "a", "op": "sum", "args": {"numbers": [1]}}]}),
    )
    .expect("a workflow");
    assert_eq!(code(alice.submit_workflow(&flow).await), ErrorCode::RateLimited);
    // Someone else is not held back.
    bob.submit(&task()).await.expect("bob submits");
    // The rate refills: five a second.
    tokio::time::sleep(Duration::from_millis(450)).await;
    alice.submit(&task()).await.expect("a token came back");
    // Components are not limited (their tasks serve everyone).
    let service = system.client_as("gateway").await.expect("a component signs in");
    for _ in 0..20 {
        service.submit(&task()).await.expect("a component submits");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_task_with_a_time_to_live_goes_when_it_runs_out_and_only_then() {
    let system = System::with_tasks(1, &[]);
    let client = system.client().await;
    let brief = SubmitRequest {
        ttl_ms: Some(1_500),
        wait_ms: Some(10_000),
        ..SubmitRequest::new("sum", &json!({"numbers": [2, 3]}))
    };
    let one = json!({"numbers": [1]});
    let kept = SubmitRequest { wait_ms: Some(10_000), ..SubmitRequest::new("sum", &one) };
    let brief = client.submit(&brief).await.expect("submitted");
    let kept = client.submit(&kept).await.expect("submitted");
    assert_eq!(brief.result.expect("its result").get(), r#"{"value":5}"#);
    assert!(client.task(&brief.id).await.is_ok(), "kept while its time runs");
    wait_until(Duration::from_secs(20), "the expired task to go", async || {
        client.task(&brief.id).await.err().map(|error| error.code()) == Some(ErrorCode::NotFound)
    })
    .await;
    assert_eq!(client.task(&kept.id).await.expect("the other stays").state, "completed");
    for ttl in [0, 999, 31_622_400_001] {
        let bad = SubmitRequest { ttl_ms: Some(ttl), ..SubmitRequest::new("sum", &one) };
        assert_eq!(code(client.submit(&bad).await), ErrorCode::InvalidRequest, "{ttl}");
    }
}

/// Changes the task service's log stream (as the service's own user: its appends fail).
async fn change_log(
    system: &System,
    change: impl FnOnce(&mut async_nats::jetstream::stream::Config),
) {
    let tasks = system.client_as("tasks").await.expect("the task service's user logs in");
    let js = async_nats::jetstream::new(tasks.nats().clone());
    let mut stream = js
        .get_stream(agora_nats::subjects::replica::log_stream("tasks"))
        .await
        .expect("the log stream");
    let mut config = stream.info().await.expect("its config").config.clone();
    change(&mut config);
    js.update_stream(config).await.expect("the log stream changed");
}

/// Waits (20 s at most) until task `id` completed.
async fn completes(client: &agora_nats::AgoraClient, id: &str) {
    eventually(Duration::from_secs(20), POLL, async || {
        let task = client.wait_task(id, 1_000).await.map_err(|e| e.to_string())?;
        match task.state.as_str() {
            "completed" => Ok(()),
            _ => Err(format!("task {id} did not complete: {task:?}")),
        }
    })
    .await;
}

/// A group whose entry the log stores without answering (its outbox is lost; the entry comes
/// back from the log), and a group whose entry the log refuses (undone): every task still
/// gets its message in the work queue, and no place in it is lost or leaked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_lost_on_the_way_to_the_log_lose_no_task_and_no_place_in_the_queue() {
    let mut system = System::nats_with_auth();
    system.tasks_args = vec!["--user-queue-max".into(), "2".into()];
    system.start_tasks();
    let client = system.person("alice").await;
    let sleep = |id: &str| request("sleep", json!({"ms": 10}), Some(id));
    let first = client.submit(&sleep("first")).await.expect("submit").id;
    // The log keeps the submit's entry but never answers: the reply is lost, the task is not.
    change_log(&system, |config| config.no_ack = true).await;
    assert!(client.submit(&sleep("unanswered")).await.is_err(), "the append was not answered");
    change_log(&system, |config| config.no_ack = false).await;
    let unanswered = client.submit(&sleep("unanswered")).await.expect("the same task").id;
    // Two more wait for one of the person's two places.
    let third = client.submit(&sleep("third")).await.expect("submit").id;
    let fourth = client.submit(&sleep("fourth")).await.expect("submit").id;
    // The log refuses the next entry: cancelling the first (whose place goes to the third) is
    // undone, then done.
    let mut largest = 0;
    change_log(&system, |config| largest = std::mem::replace(&mut config.max_message_size, 16))
        .await;
    assert_eq!(code(client.cancel_task(&first).await), ErrorCode::Unavailable);
    change_log(&system, |config| config.max_message_size = largest).await;
    assert_eq!(client.task(&first).await.expect("get").state, "queued", "the cancel was undone");
    assert_eq!(client.cancel_task(&first).await.expect("cancel").state, "cancelled");
    system.add_worker(&[]);
    for id in [&unanswered, &third, &fourth] {
        completes(&client, id).await;
    }
    let first = client.task(&first).await.expect("get");
    assert_eq!((first.state.as_str(), first.attempts), ("cancelled", Some(0)), "{first:?}");
    let all = client.tasks(&ListRequest::default()).await.expect("list");
    assert_eq!(all.tasks.len(), 4, "one task per client id: {:?}", all.tasks);
}
