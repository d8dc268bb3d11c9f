//! Workflows: chains and fan-out/fan-in that feed results forward, each failure policy (stop,
//! skip, compensate), cancel, a kill -9 of the task service in the middle, and who may see and
//! cancel a workflow.

use std::time::Duration;

use agora_nats::subjects::tasks as subject;
use agora_nats::tasks::wire::{
    ListRequest, WorkflowListRequest, WorkflowSubmitRequest, WorkflowView,
};
use agora_nats::{AgoraClient, ErrorCode};
use agora_tests::{System, code, eventually};
use bytes::Bytes;
use serde_json::{Value, json};

fn workflow(steps: Value) -> WorkflowSubmitRequest {
    serde_json::from_value(json!({ "steps": steps })).expect("a workflow")
}

/// Waits until workflow `id` ended (fails the test after 90 s); returns it.
async fn ended(client: &AgoraClient, id: &str) -> WorkflowView {
    eventually(Duration::from_secs(90), Duration::from_millis(100), async || {
        let view = client.workflow(id).await.map_err(|e| e.to_string())?;
        match view.state.as_str() {
            "running" | "compensating" => Err(format!("workflow {id} did not end: {view:?}")),
            _ => Ok(view),
        }
    })
    .await
}

/// Each step's (state, result or error) by name.
fn steps(view: &WorkflowView) -> Vec<(String, String, String)> {
    view.steps
        .as_deref()
        .expect("steps")
        .iter()
        .map(|s| {
            let outcome = match (&s.result, &s.error) {
                (Some(result), _) => result.get().to_owned(),
                (None, Some(error)) => error.clone(),
                (None, None) => String::new(),
            };
            (s.name.clone(), s.state.clone(), outcome)
        })
        .collect()
}

fn step<'a>(view: &'a WorkflowView, name: &str) -> &'a agora_nats::tasks::wire::StepView {
    view.steps.as_deref().expect("steps").iter().find(|s| s.name == name).expect(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chains_and_fan_ins_feed_results_forward_even_across_a_kill_of_the_task_service() {
    let mut system = System::with_tasks(2, &[]);
    let client = system.client().await;
    let request = workflow(json!([
        {"name": "word", "op": "uppercase", "args": {"text": "agora"}},
        {"name": "chars", "op": "count_chars", "after": ["word"], "feed": "text"},
        {"name": "a", "op": "count_words", "args": {"text": "one two three"}},
        {"name": "b", "op": "count_words", "args": {"text": "four five"}},
        {"name": "slow", "op": "sleep", "args": {"ms": 2500}},
        {"name": "total", "op": "sum", "args": {"numbers": [100]}, "after": ["a", "b", "chars"],
         "feed": "numbers"},
        {"name": "sorted", "op": "sort", "args": {"numbers": [7]}, "after": ["total", "slow"],
         "feed": "numbers"},
        {"name": "last", "op": "max", "after": ["sorted"], "feed": "numbers"}
    ]));
    let submitted = client.submit_workflow(&request).await.expect("submitted");
    assert_eq!(submitted.state, "running");
    assert_eq!(submitted.step_count, 8);
    // The steps without dependencies started at once; the rest wait.
    let started: Vec<_> =
        steps(&submitted).into_iter().map(|(name, state, _)| (name, state)).collect();
    for (name, state) in &started {
        let expected =
            if ["word", "a", "b", "slow"].contains(&name.as_str()) { "running" } else { "waiting" };
        assert_eq!(state, expected, "{name}: {started:?}");
    }

    // The task service dies while `slow` runs and comes back: nothing is lost or run twice.
    eventually(Duration::from_secs(30), Duration::from_millis(50), async || {
        let view = client.workflow(&submitted.id).await.map_err(|e| e.to_string())?;
        let total = step(&view, "total").state.clone();
        (total == "completed").then_some(()).ok_or(format!("total is {total}"))
    })
    .await;
    system.kill_tasks();
    tokio::time::sleep(Duration::from_millis(500)).await;
    system.start_tasks();

    let done = ended(&client, &submitted.id).await;
    assert_eq!(done.state, "completed", "{done:?}");
    assert_eq!(done.completed_steps, 8);
    let results: Vec<(String, String)> =
        steps(&done).into_iter().map(|(name, _, outcome)| (name, outcome)).collect();
    let expected = [
        ("word", r#"{"value":"AGORA"}"#),
        ("chars", r#"{"value":5}"#),
        ("a", r#"{"value":3}"#),
        ("b", r#"{"value":2}"#),
        ("slow", r#"{"slept_ms":2500}"#),
        ("total", r#"{"value":110}"#),
        ("sorted", r#"{"sorted":[7,110,2500]}"#),
        ("last", r#"{"value":2500}"#),
    ]
    .map(|(name, result)| (name.to_owned(), result.to_owned()));
    assert_eq!(results, expected);

    // One task per step, each the step's own, with the args its inputs made.
    let tasks = client
        .tasks(&ListRequest { limit: Some(100), ..ListRequest::default() })
        .await
        .expect("list")
        .tasks;
    let mine: Vec<_> = tasks.iter().filter(|t| t.workflow.as_deref() == Some(&done.id)).collect();
    assert_eq!(mine.len(), 8, "{mine:?}");
    let total_task = client.task(step(&done, "total").task.as_deref().expect("task")).await;
    let total_task = total_task.expect("get");
    assert_eq!(total_task.step.as_deref(), Some("total"));
    assert_eq!(total_task.args.expect("args").get(), r#"{"numbers":[100,3,2,5]}"#);

    // The history tells the story in order: running first, completed last, each step's
    // running before its completed.
    let history = done.history.expect("history");
    assert_eq!(
        history.first().map(|e| (e.step.is_none(), e.state.as_str())),
        Some((true, "running"))
    );
    assert_eq!(
        history.last().map(|e| (e.step.is_none(), e.state.as_str())),
        Some((true, "completed"))
    );
    for name in ["word", "chars", "total", "last"] {
        let at = |state: &str| {
            history
                .iter()
                .position(|e| e.step.as_deref() == Some(name) && e.state == state)
                .unwrap_or_else(|| panic!("{name} {state} in {history:?}"))
        };
        assert!(at("running") < at("completed"), "{name}");
    }
    let at = |name: &str, state: &str| {
        history.iter().position(|e| e.step.as_deref() == Some(name) && e.state == state)
    };
    assert!(at("chars", "completed") < at("total", "running"), "{history:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_step_follows_its_policy_stop_skip_or_compensate() {
    let system = System::with_tasks(2, &["--max-deliver", "2"]);
    let client = system.client().await;

    // stop: the running sibling is cancelled, the dependent never starts.
    let stop = client
        .submit_workflow(&workflow(json!([
            {"name": "bad", "op": "fail", "args": {"message": "no luck"}},
            {"name": "long", "op": "sleep", "args": {"ms": 30000}},
            {"name": "after", "op": "sum", "after": ["bad", "long"], "feed": "numbers"}
        ])))
        .await
        .expect("submitted");
    let stopped = ended(&client, &stop.id).await;
    assert_eq!(stopped.state, "failed");
    let states: Vec<_> = steps(&stopped).into_iter().map(|(n, s, _)| (n, s)).collect();
    assert_eq!(
        states,
        [("bad", "failed"), ("long", "cancelled"), ("after", "cancelled")]
            .map(|(n, s)| (n.to_owned(), s.to_owned()))
    );
    assert!(step(&stopped, "bad").error.as_deref().is_some_and(|e| e.contains("no luck")));
    let long = client.task(step(&stopped, "long").task.as_deref().expect("task")).await;
    assert_eq!(long.expect("get").state, "cancelled");
    assert!(step(&stopped, "after").task.is_none(), "it never ran");

    // skip: the workflow goes on without the step's result.
    let skip = client
        .submit_workflow(&workflow(json!([
            // Declared before the steps it comes after: the graph decides, not the list.
            {"name": "sum", "op": "sum", "after": ["flaky", "ok"], "feed": "numbers"},
            {"name": "flaky", "op": "fail", "on_failure": "skip"},
            {"name": "ok", "op": "count_words", "args": {"text": "x y"}}
        ])))
        .await
        .expect("submitted");
    let skipped = ended(&client, &skip.id).await;
    assert_eq!(skipped.state, "completed");
    assert_eq!(step(&skipped, "flaky").state, "skipped");
    assert_eq!(step(&skipped, "sum").result.as_ref().map(|r| r.get()), Some(r#"{"value":2}"#));
    // The history is causal: what ended comes before what it started.
    let history = skipped.history.clone().expect("history");
    let at = |name: &str, state: &str| {
        history.iter().position(|e| e.step.as_deref() == Some(name) && e.state == state)
    };
    let started = at("sum", "running").expect("sum started");
    assert!(at("ok", "completed").expect("ok") < started, "{history:?}");
    assert!(at("flaky", "skipped").expect("flaky") < started, "{history:?}");

    // compensate: completed steps are undone, latest first; a running one is cancelled.
    let saga = client
        .submit_workflow(&workflow(json!([
            {"name": "reserve", "op": "sum", "args": {"numbers": [1]},
             "compensate": {"op": "count_chars", "args": {"text": "undo reserve"}}},
            {"name": "pay", "op": "sum", "args": {"numbers": [2]}, "after": ["reserve"],
             "compensate": {"op": "count_chars", "args": {"text": "undo pay"}}},
            {"name": "audit", "op": "sleep", "args": {"ms": 30000}, "after": ["reserve"],
             "compensate": {"op": "count_chars", "args": {"text": "never"}}},
            {"name": "ship", "op": "fail", "after": ["pay"], "on_failure": "compensate"}
        ])))
        .await
        .expect("submitted");
    let undone = ended(&client, &saga.id).await;
    assert_eq!(undone.state, "compensated", "{undone:?}");
    let states: Vec<_> = steps(&undone).into_iter().map(|(n, s, _)| (n, s)).collect();
    assert_eq!(
        states,
        [
            ("reserve", "compensated"),
            ("pay", "compensated"),
            ("audit", "cancelled"),
            ("ship", "failed")
        ]
        .map(|(n, s)| (n.to_owned(), s.to_owned()))
    );
    let undo = |name: &str| {
        step(&undone, name)
            .compensation_task
            .clone()
            .expect("a compensation")
            .parse::<u64>()
            .unwrap()
    };
    assert!(undo("pay") < undo("reserve"), "pay is undone before reserve");
    assert!(step(&undone, "audit").compensation_task.is_none(), "only completed steps are undone");
    for name in ["reserve", "pay"] {
        let task = client.task(&undo(name).to_string()).await.expect("get");
        assert_eq!(task.state, "completed");
        assert_eq!(task.step.as_deref(), Some(format!("{name}:compensate").as_str()));
    }

    // An input its op cannot take fails the step with the op's reason (then: stop).
    let mistyped = client
        .submit_workflow(&workflow(json!([
            {"name": "n", "op": "sum", "args": {"numbers": [1]}},
            {"name": "shout", "op": "uppercase", "after": ["n"], "feed": "text"}
        ])))
        .await
        .expect("submitted");
    let failed = ended(&client, &mistyped.id).await;
    assert_eq!(failed.state, "failed");
    let shout = step(&failed, "shout");
    assert_eq!(shout.state, "failed");
    assert!(shout.task.is_none());
    assert!(shout.error.as_deref().is_some_and(|e| e.starts_with("its input")), "{shout:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workflows_are_their_owners_alone_and_cancel_stops_them() {
    let mut system = System::nats_with_auth();
    system.start_tasks();
    system.add_worker(&[]);
    let alice = system.person("alice").await;
    let bob = system.person("bob").await;
    let manager = system.manager().await;

    let long = workflow(json!([
        {"name": "first", "op": "sleep", "args": {"ms": 30000}},
        {"name": "then", "op": "sum", "after": ["first"], "feed": "numbers"}
    ]));
    let mut named = long.clone();
    named.id = Some("nightly-report".to_owned());
    let mine = alice.submit_workflow(&named).await.expect("submitted");
    assert_eq!(mine.owner, "alice");
    // The same client id and steps: the same workflow; other steps: refused.
    assert_eq!(alice.submit_workflow(&named).await.expect("again").id, mine.id);
    let mut changed = workflow(json!([{"name": "other", "op": "sum", "args": {"numbers": [1]}}]));
    changed.id = Some("nightly-report".to_owned());
    assert_eq!(code(alice.submit_workflow(&changed).await), ErrorCode::InvalidRequest);
    // Client ids are per person: bob's is his own.
    let bobs = bob.submit_workflow(&named).await.expect("bob's");
    assert_ne!(bobs.id, mine.id);

    // Bob can neither see nor cancel alice's workflow, nor its step tasks.
    assert_eq!(code(bob.workflow(&mine.id).await), ErrorCode::Forbidden);
    assert_eq!(code(bob.cancel_workflow(&mine.id).await), ErrorCode::Forbidden);
    let first_task = step(&mine, "first").task.clone().expect("started");
    assert_eq!(code(bob.cancel_task(&first_task).await), ErrorCode::Forbidden);
    let bobs_list = bob.workflows(&WorkflowListRequest::default()).await.expect("list");
    assert!(bobs_list.workflows.iter().all(|w| w.owner == "bob"), "{bobs_list:?}");
    let as_alice = WorkflowListRequest { owner: Some("alice".into()), ..Default::default() };
    assert_eq!(code(bob.workflows(&as_alice).await), ErrorCode::Forbidden);
    // A manager sees everyone's.
    let all = manager.workflows(&WorkflowListRequest::default()).await.expect("list");
    assert!(
        all.workflows.iter().any(|w| w.owner == "alice")
            && all.workflows.iter().any(|w| w.owner == "bob")
    );

    // Alice cancels: the running step's task is cancelled, the next never starts.
    let cancelled = alice.cancel_workflow(&mine.id).await.expect("cancel");
    assert_eq!(cancelled.state, "cancelled");
    let states: Vec<_> = steps(&cancelled).into_iter().map(|(n, s, _)| (n, s)).collect();
    assert_eq!(
        states,
        [("first", "cancelled"), ("then", "cancelled")].map(|(n, s)| (n.to_owned(), s.to_owned()))
    );
    assert_eq!(alice.task(&first_task).await.expect("get").state, "cancelled");
    assert_eq!(code(alice.cancel_workflow(&mine.id).await), ErrorCode::Conflict);
    let running = WorkflowListRequest { state: Some("running".into()), ..Default::default() };
    assert!(alice.workflows(&running).await.expect("list").workflows.is_empty());

    // Cancelling a step's task by hand is that step failing: its policy (stop) applies.
    let bobs_first = step(&bobs, "first").task.clone().expect("started");
    bob.cancel_task(&bobs_first).await.expect("cancel the task");
    let stopped = ended(&bob, &bobs.id).await;
    assert_eq!(stopped.state, "failed");

    // Every malformed request is refused with a code, and the service stays up.
    let bad: [(&str, &str, ErrorCode); 10] = [
        (subject::WORKFLOW_SUBMIT, "[]", ErrorCode::InvalidRequest),
        (
            subject::WORKFLOW_SUBMIT,
            r#"{"steps":[{"name":"a","op":"sum","args":{"numbers":[1]}}],"x":1}"#,
            ErrorCode::InvalidRequest,
        ),
        (
            subject::WORKFLOW_SUBMIT,
            r#"{"steps":[{"name":"a","op":"fail"},{"name":"a","op":"fail"}]}"#,
            ErrorCode::InvalidRequest,
        ),
        (
            subject::WORKFLOW_SUBMIT,
            r#"{"steps":[{"name":"a","op":"fail","after":["a"]}]}"#,
            ErrorCode::InvalidRequest,
        ),
        (subject::WORKFLOW_SUBMIT, r#"{"steps":"a"}"#, ErrorCode::InvalidRequest),
        (subject::WORKFLOW_GET, r#"{"id":"0"}"#, ErrorCode::InvalidRequest),
        (subject::WORKFLOW_GET, r#"{"id":"999999"}"#, ErrorCode::NotFound),
        (subject::WORKFLOW_CANCEL, r#"{"id":"x"}"#, ErrorCode::InvalidRequest),
        (subject::WORKFLOW_LIST, r#"{"state":"done"}"#, ErrorCode::InvalidRequest),
        (subject::WORKFLOW_LIST, r#"{"limit":0}"#, ErrorCode::InvalidRequest),
    ];
    for (verb, payload, expected) in bad {
        let result = alice.request_bytes(&subject::workflows(verb), Bytes::from(payload)).await;
        assert_eq!(code(result), expected, "{verb} {payload}");
    }
    let huge = format!(
        r#"{{"steps":[{}]}}"#,
        (0..101).map(|i| format!(r#"{{"name":"s{i}","op":"fail"}}"#)).collect::<Vec<_>>().join(",")
    );
    let result =
        alice.request_bytes(&subject::workflows(subject::WORKFLOW_SUBMIT), Bytes::from(huge)).await;
    assert_eq!(code(result), ErrorCode::InvalidRequest);
    // Still up.
    alice.workflows(&WorkflowListRequest::default()).await.expect("list");

    // A person has at most 100 unfinished workflows; the next is `busy` until one ends.
    let nap = workflow(json!([{"name": "nap", "op": "sleep", "args": {"ms": 60000}}]));
    let mut naps = Vec::new();
    for _ in 0..100 {
        naps.push(bob.submit_workflow(&nap).await.expect("within the limit").id);
    }
    assert_eq!(code(bob.submit_workflow(&nap).await), ErrorCode::Busy);
    alice.submit_workflow(&nap).await.expect("alice has her own limit");
    bob.cancel_workflow(&naps[0]).await.expect("cancel one");
    bob.submit_workflow(&nap).await.expect("room again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workflow_goes_on_when_its_active_task_service_is_lost_with_its_disk() {
    let mut system = System::with_tasks(2, &[]);
    let _standby = system.start_standby("tasks", "tasks-standby", &[]);
    let client = system.client().await;
    // A chain of six naps, and four counts fanned out beside it; one step over all.
    let mut steps: Vec<Value> = (0..6)
        .map(|i| {
            let after: Vec<String> = if i == 0 { vec![] } else { vec![format!("nap{}", i - 1)] };
            json!({"name": format!("nap{i}"), "op": "sleep", "args": {"ms": 400}, "after": after})
        })
        .collect();
    for i in 0..4 {
        let text = vec!["w"; i + 1].join(" ");
        steps.push(
            json!({"name": format!("count{i}"), "op": "count_words", "args": {"text": text}}),
        );
    }
    steps.push(json!({"name": "end", "op": "sum", "after": ["count0", "count1", "count2", "count3", "nap5"], "feed": "numbers"}));
    let submitted =
        client.submit_workflow(&workflow(Value::Array(steps))).await.expect("submitted");

    eventually(Duration::from_secs(30), Duration::from_millis(50), async || {
        let view = client.workflow(&submitted.id).await.map_err(|e| e.to_string())?;
        let state = step(&view, "nap1").state.clone();
        (state == "completed").then_some(()).ok_or(format!("nap1 is {state}"))
    })
    .await;
    // The harness's instance started first: it is the active one. Gone, with its disk.
    let pid = system.active_pid("tasks").await.expect("an active instance");
    assert_eq!(Some(pid), system.tasks.as_ref().map(|c| c.id()));
    system.kill_tasks();
    std::fs::remove_dir_all(system.dir.path().join("tasks")).expect("its disk is gone");

    let done = eventually(Duration::from_secs(60), Duration::from_millis(100), async || {
        let view = client.workflow(&submitted.id).await.map_err(|e| e.to_string())?;
        (view.state == "completed").then_some(view.clone()).ok_or(format!("{view:?}"))
    })
    .await;
    assert_ne!(system.active_pid("tasks").await, Some(pid), "the standby took over");
    // 1 + 2 + 3 + 4 words, and the last nap's 400 ms.
    assert_eq!(step(&done, "end").result.as_ref().map(|r| r.get()), Some(r#"{"value":410}"#));
    let tasks = client
        .tasks(&ListRequest { limit: Some(100), ..ListRequest::default() })
        .await
        .expect("list")
        .tasks;
    let mut names: Vec<String> = tasks
        .iter()
        .filter(|t| t.workflow.as_deref() == Some(&done.id))
        .filter_map(|t| t.step.clone())
        .collect();
    names.sort();
    let mut expected: Vec<String> =
        done.steps.as_deref().unwrap().iter().map(|s| s.name.clone()).collect();
    expected.sort();
    assert_eq!(names, expected, "one task per step, none twice");
}
