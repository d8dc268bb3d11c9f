use super::*;

#[test]
fn bad_schedule_requests_are_refused_before_the_owner() {
    let alice = Caller::user(agora_core::UserName::parse("alice").unwrap(), agora_core::Role::User);
    let cases: [(&str, &str, &str); 12] = [
        (subject::SCHEDULE_PUT, "", "empty"),
        (subject::SCHEDULE_PUT, "[]", "object"),
        (
            subject::SCHEDULE_PUT,
            r#"{"name":"a b","schedule":"@daily","op":"sum","args":{"numbers":[1]}}"#,
            "schedule name",
        ),
        (
            subject::SCHEDULE_PUT,
            r#"{"name":"n","schedule":"@every 500ms","op":"sum","args":{"numbers":[1]}}"#,
            "whole seconds",
        ),
        (
            subject::SCHEDULE_PUT,
            r#"{"name":"n","schedule":"* * *","op":"sum","args":{"numbers":[1]}}"#,
            "six fields",
        ),
        (subject::SCHEDULE_PUT, r#"{"name":"n","schedule":"@daily","op":"nope"}"#, "unknown op"),
        (
            subject::SCHEDULE_PUT,
            r#"{"name":"n","schedule":"@every 1m","time_zone":"UTC","op":"sum","args":{"numbers":[1]}}"#,
            "cron",
        ),
        (
            subject::SCHEDULE_PUT,
            r#"{"name":"n","schedule":"@daily","time_zone":"+02:00","op":"sum","args":{"numbers":[1]}}"#,
            "time zone",
        ),
        (
            subject::SCHEDULE_PUT,
            r#"{"name":"n","schedule":"@daily","op":"sum","args":{"numbers":[1]},"x":1}"#,
            "unknown field",
        ),
        (subject::SCHEDULE_PAUSE, r#"{}"#, "name"),
        (subject::SCHEDULE_DELETE, r#"{"name":""}"#, "schedule name"),
        (subject::SCHEDULE_LIST, r#"{"limit":1}"#, "unknown field"),
    ];
    for (verb, payload, needle) in cases {
        let Err(error) = parse_schedule(verb, &alice, payload.as_bytes()) else {
            panic!("{verb} {payload} was accepted");
        };
        assert_eq!(error.code, ErrorCode::InvalidRequest, "{payload}");
        assert!(error.message.contains(needle), "{payload}: {}", error.message);
    }
    // Someone else's schedules are out of reach; a manager may act on them.
    let theirs = br#"{"name":"n","owner":"bob"}"#;
    let error = parse_schedule(subject::SCHEDULE_PAUSE, &alice, theirs).unwrap_err();
    assert_eq!(error.code, ErrorCode::Forbidden);
    let error = parse_schedule(subject::SCHEDULE_LIST, &alice, br#"{"owner":"bob"}"#).unwrap_err();
    assert_eq!(error.code, ErrorCode::Forbidden);
    let manager =
        Caller::user(agora_core::UserName::parse("root").unwrap(), agora_core::Role::Manager);
    assert!(parse_schedule(subject::SCHEDULE_PAUSE, &manager, theirs).is_ok());
    let anonymous = parse_schedule(subject::SCHEDULE_LIST, &Caller::Anonymous, b"");
    assert_eq!(anonymous.unwrap_err().code, ErrorCode::Unauthenticated);
    let Ok(Command::PutSchedule(row)) = parse_schedule(
            subject::SCHEDULE_PUT,
            &alice,
            br#"{"name":"nightly","schedule":"0 3 * * *","time_zone":"Europe/Amsterdam","op":"sum","args":{"numbers":[1]}}"#,
        ) else {
            panic!("a valid schedule")
        };
    assert_eq!((row.owner.as_str(), row.spec.as_str()), ("alice", "0 0 3 * * *"));
    // A delayed submission is checked too.
    for (payload, needle) in [
        (r#"{"op":"sum","args":{"numbers":[1]},"delay_ms":1,"run_at_ms":1}"#, "not both"),
        (r#"{"op":"sum","args":{"numbers":[1]},"delay_ms":40000000000}"#, "366 days"),
    ] {
        let error = parse_command(subject::SUBMIT, &alice, payload.as_bytes()).unwrap_err();
        assert!(error.message.contains(needle), "{payload}: {}", error.message);
    }
    let Ok(Command::Submit { run_at_ms, .. }) = parse_command(
        subject::SUBMIT,
        &alice,
        br#"{"op":"sum","args":{"numbers":[1]},"delay_ms":60000}"#,
    ) else {
        panic!("a delayed task")
    };
    assert!(run_at_ms.is_some());
    let Ok(Command::Submit { run_at_ms: None, .. }) = parse_command(
        subject::SUBMIT,
        &alice,
        br#"{"op":"sum","args":{"numbers":[1]},"run_at_ms":5}"#,
    ) else {
        panic!("a time in the past runs now")
    };
}

#[test]
fn bad_requests_are_refused_before_the_owner() {
    let cases: [(&str, &str, &str); 14] = [
        (subject::SUBMIT, "", "empty"),
        (subject::SUBMIT, r#"{"op":"divide","args":{}}"#, "unknown op"),
        (subject::SUBMIT, r#"{"op":"sum","args":{"numbers":"1,2"}}"#, "bad args"),
        (subject::SUBMIT, r#"{"op":"sum","args":{"numbers":[1],"x":1}}"#, "unknown field"),
        (subject::SUBMIT, r#"{"op":"fibonacci","args":{"n":100001}}"#, "largest"),
        (subject::SUBMIT, r#"{"op":"sleep","args":{"ms":1},"priority":"urgent"}"#, "priority"),
        (subject::SUBMIT, r#"{"op":"sleep","args":{"ms":1},"wait_ms":60001}"#, "wait_ms"),
        (subject::SUBMIT, r#"{"op":"sleep","args":{"ms":1},"id":""}"#, "id must be"),
        (subject::GET, r#"{"id":"abc"}"#, "not a task id"),
        (subject::GET, r#"{"id":"0"}"#, "not a task id"),
        (subject::LIST, r#"{"state":"done"}"#, "state must be"),
        (subject::LIST, r#"{"limit":0}"#, "limit"),
        (subject::PROGRESS, r#"{"id":"1","worker":"w","percent":101}"#, "percent"),
        (subject::FINISH, r#"{"id":"1","worker":"w"}"#, "exactly one"),
    ];
    for (endpoint, payload, needle) in cases {
        let Err(error) = parse_command(endpoint, &Caller::Service, payload.as_bytes()) else {
            panic!("{endpoint} {payload} was accepted");
        };
        assert_eq!(error.code, ErrorCode::InvalidRequest, "{payload}");
        assert!(error.message.contains(needle), "{payload}: {}", error.message);
    }
    let Ok(Command::List(filter)) = parse_command(subject::LIST, &Caller::Service, b"") else {
        panic!("list")
    };
    assert_eq!(filter.limit, LIST_LIMIT_DEFAULT);
}

#[test]
fn same_args_give_the_same_text() {
    let a: SubmitRequest =
        serde_json::from_str(r#"{"op":"sort","args":{"strings":["a"],"descending":true}}"#)
            .unwrap();
    let b: SubmitRequest =
        serde_json::from_str(r#"{"op":"sort","args":{"descending":true,"strings":["a"]}}"#)
            .unwrap();
    let text = |request: &SubmitRequest| match parse_command(
        subject::SUBMIT,
        &Caller::Service,
        &serde_json::to_vec(request).unwrap(),
    ) {
        Ok(Command::Submit { args, .. }) => args,
        other => panic!("{other:?}"),
    };
    assert_eq!(text(&a), text(&b));
    let message = queue::message(7, "sum", r#"{"numbers":[1]}"#);
    let task: QueuedTask = serde_json::from_slice(&message).unwrap();
    assert_eq!(
        (task.id.as_str(), task.op.as_str(), task.args.get()),
        ("7", "sum", r#"{"numbers":[1]}"#)
    );
}
