//! Delayed and recurring tasks, run by the NATS server's scheduler: on time, once per tick,
//! across restarts of the task service and the workers; paused, resumed and deleted; bad
//! schedules refused with the server's reason.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use agora_nats::subjects::tasks as subject;
use agora_nats::tasks::wire::{ListRequest, SchedulePutRequest, SubmitRequest, TaskView};
use agora_nats::{AgoraClient, ErrorCode};
use agora_tests::{System, code, finished_task as finished, wait_until};
use serde_json::json;
use serde_json::value::RawValue;

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn every_second(name: &str) -> SchedulePutRequest {
    SchedulePutRequest {
        name: name.to_owned(),
        schedule: "@every 1s".to_owned(),
        time_zone: None,
        op: "sum".to_owned(),
        args: RawValue::from_string(r#"{"numbers":[1,2]}"#.to_owned()).unwrap(),
        priority: None,
        paused: false,
    }
}

/// Every task schedule `name` submitted, from the task list.
async fn tasks_of(client: &AgoraClient, name: &str) -> Vec<TaskView> {
    let list = ListRequest { limit: Some(1_000), ..ListRequest::default() };
    let reply = client.tasks(&list).await.expect("list");
    reply.tasks.into_iter().filter(|task| task.schedule.as_deref() == Some(name)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_tasks_run_at_their_time_even_across_a_restart_and_cancelled_ones_never() {
    let mut system = System::with_tasks(1, &[]);
    let client = system.client().await;
    let delayed = |delay_ms: u64| SubmitRequest {
        delay_ms: Some(delay_ms),
        ..SubmitRequest::new("sum", &json!({"numbers": [20, 22]}))
    };

    let submitted = now_ms();
    let soon = client.submit(&delayed(2_000)).await.expect("submit");
    assert_eq!(soon.state, "queued");
    let held = client.task(&soon.id).await.expect("get");
    assert!(held.held, "waiting for its time: {held:?}");
    let run_at = held.run_at_ms.expect("its time");
    assert!((submitted + 2_000..=submitted + 4_000).contains(&run_at), "{run_at} vs {submitted}");
    let history = held.history.expect("history");
    assert_eq!(history[0].run_at_ms, Some(run_at), "the queued event says when");

    let doomed = client.submit(&delayed(3_000)).await.expect("submit");
    let cancelled = client.cancel_task(&doomed.id).await.expect("cancel");
    assert_eq!(cancelled.state, "cancelled");

    let done = finished(&client, &soon.id).await;
    assert_eq!(done.result.expect("result").get(), r#"{"value":42}"#);
    let started = done.started_ms.expect("started");
    assert!(started >= run_at, "started {started} before its time {run_at}");
    assert!(started - run_at < 3_000, "started {} ms late", started - run_at);
    assert!(!done.held);

    // Its time passes while the task service is down: it runs once it is back.
    let later = client.submit(&delayed(1_500)).await.expect("submit");
    system.kill_tasks();
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    system.start_tasks();
    let done = finished(&client, &later.id).await;
    assert_eq!((done.state.as_str(), done.attempts), ("completed", Some(1)));

    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let never = client.task(&doomed.id).await.expect("get");
    assert_eq!((never.state.as_str(), never.attempts), ("cancelled", Some(0)), "{never:?}");

    // Bad times are refused with a code; a time in the past runs now.
    for request in [
        SubmitRequest { delay_ms: Some(1), run_at_ms: Some(1), ..delayed(0) },
        SubmitRequest { delay_ms: Some(400 * 24 * 3_600_000), ..delayed(0) },
    ] {
        assert_eq!(code(client.submit(&request).await), ErrorCode::InvalidRequest);
    }
    let past = SubmitRequest { run_at_ms: Some(1), delay_ms: None, ..delayed(0) };
    let past = client.submit(&past).await.expect("submit");
    assert_eq!(finished(&client, &past.id).await.state, "completed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recurring_schedule_runs_once_per_tick_across_restarts_and_obeys_pause_and_delete() {
    let mut system = System::with_tasks(1, &[]);
    let client = system.client().await;
    let started = Instant::now();
    let created = client.put_schedule(&every_second("tick")).await.expect("put");
    assert_eq!((created.schedule.as_str(), created.paused, created.runs), ("@every 1s", false, 0));

    wait_until(Duration::from_secs(20), "three runs", async || {
        tasks_of(&client, "tick").await.len() >= 3
    })
    .await;

    // The task service and the worker die; ticks wait in the stream and are taken once each.
    system.kill_tasks();
    system.kill_worker(0);
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    system.start_tasks();
    system.add_worker(&[]);
    wait_until(Duration::from_secs(30), "runs after the restart", async || {
        tasks_of(&client, "tick").await.len() >= 8
    })
    .await;

    let paused =
        client.schedule_action(subject::SCHEDULE_PAUSE, "tick", None).await.expect("pause");
    assert!(paused.paused);
    let elapsed = started.elapsed();
    // Runs the service may still hold in flight settle first.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let before = tasks_of(&client, "tick").await;
    let ids: HashSet<_> =
        before.iter().map(|t| t.client_id.clone().expect("a client id")).collect();
    assert_eq!(ids.len(), before.len(), "one task per run");
    let ticks = elapsed.as_secs() + 2;
    assert!(
        before.len() as u64 <= ticks,
        "{} tasks in {elapsed:?}: a tick ran twice",
        before.len()
    );
    for task in &before {
        let done = finished(&client, &task.id).await;
        assert_eq!(done.state, "completed", "{done:?}");
    }
    let listed = client.schedules(None).await.expect("list").schedules;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].runs as usize, before.len(), "runs counted once each: {listed:?}");
    assert!(listed[0].last_task.is_some());

    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(
        tasks_of(&client, "tick").await.len(),
        before.len(),
        "a paused schedule runs nothing"
    );

    let resumed =
        client.schedule_action(subject::SCHEDULE_RESUME, "tick", None).await.expect("resume");
    assert!(!resumed.paused);
    wait_until(Duration::from_secs(20), "runs after resuming", async || {
        tasks_of(&client, "tick").await.len() > before.len()
    })
    .await;
    let deleted =
        client.schedule_action(subject::SCHEDULE_DELETE, "tick", None).await.expect("delete");
    assert_eq!(deleted.name, "tick");
    assert!(client.schedules(None).await.expect("list").schedules.is_empty());
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let final_count = tasks_of(&client, "tick").await.len();
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(tasks_of(&client, "tick").await.len(), final_count, "a deleted schedule is gone");
    let missing = client.schedule_action(subject::SCHEDULE_PAUSE, "tick", None).await;
    assert_eq!(code(missing), ErrorCode::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_schedules_are_refused_with_a_reason_and_the_service_stays_up() {
    let system = System::with_tasks(0, &[]);
    let client = system.client().await;
    let bad = [
        SchedulePutRequest { schedule: "@every 500ms".into(), ..every_second("a") },
        SchedulePutRequest { schedule: "61 * * * * *".into(), ..every_second("a") },
        SchedulePutRequest { schedule: "* * *".into(), ..every_second("a") },
        SchedulePutRequest { name: "a.b".into(), ..every_second("a") },
        SchedulePutRequest { op: "divide".into(), ..every_second("a") },
        // Only the server knows its time zones: it refuses this one, and says why.
        SchedulePutRequest {
            schedule: "0 0 3 * * *".into(),
            time_zone: Some("Mars/Olympus_Mons".into()),
            ..every_second("a")
        },
    ];
    for request in bad {
        let result = client.put_schedule(&request).await;
        assert_eq!(code(result), ErrorCode::InvalidRequest, "{request:?}");
    }
    assert!(client.schedules(None).await.expect("list").schedules.is_empty(), "nothing kept");
    let cron = SchedulePutRequest {
        schedule: "0 3 * * *".into(),
        time_zone: Some("UTC".into()),
        ..every_second("nightly")
    };
    let nightly = client.put_schedule(&cron).await.expect("a cron schedule");
    assert_eq!(
        (nightly.schedule.as_str(), nightly.time_zone.as_deref()),
        ("0 0 3 * * *", Some("UTC"))
    );
    // Raw payloads of every shape get coded errors.
    for payload in ["", "[]", "null", "{\"name\":1}", "{\"name\":\"x\"}"] {
        let reply = client
            .nats()
            .request(subject::schedules(subject::SCHEDULE_PUT), payload.into())
            .await
            .expect("a reply");
        let error: serde_json::Value = serde_json::from_slice(&reply.payload).expect("JSON");
        assert_eq!(error["error"]["code"], "invalid_request", "{payload}: {error}");
    }
    assert_eq!(client.schedules(None).await.expect("list").schedules.len(), 1, "still up");
}
