use super::*;

fn step(json: serde_json::Value) -> StepRequest {
    serde_json::from_value(json).expect("a step")
}

fn request(steps: serde_json::Value) -> WorkflowSubmitRequest {
    serde_json::from_value(serde_json::json!({ "steps": steps })).expect("a workflow")
}

#[test]
fn check_refuses_every_bad_step_with_its_name() {
    use serde_json::json;
    let cases = [
        (json!([{"name":"a","op":"nope"}]), "step \"a\""),
        (json!([{"name":"a","op":"sum","args":{"numbers":"x"}}]), "step \"a\""),
        (json!([{"name":"a","op":"sum","args":[1]}]), "object"),
        (json!([{"name":"a","op":"sum","args":{"numbers":[]},"feed":"numbers"}]), "nothing feeds"),
        (
            json!([{"name":"a","op":"sum","args":{"numbers":[]}},{"name":"b","op":"sum","after":["a"],"feed":"nope"}]),
            "not an argument",
        ),
        (
            json!([{"name":"a","op":"sum","args":{"numbers":[]}},{"name":"b","op":"sum","after":["a"],"feed":"text"}]),
            "step \"b\"",
        ),
        (
            json!([{"name":"a","op":"sum","args":{"numbers":[]},"on_failure":"retry"}]),
            "stop, skip or compensate",
        ),
        (
            json!([{"name":"a","op":"sum","args":{"numbers":[]},"compensate":{"op":"average","args":{"numbers":[]}}}]),
            "compensate",
        ),
        (json!([{"name":"a","op":"sum","args":{"numbers":[]},"priority":"urgent"}]), "step \"a\""),
        (json!([{"name":"a","op":"sum","args":{"numbers":[]},"after":["b"]}]), "not a step"),
        (json!([]), "1..=100"),
    ];
    for (steps, expected) in cases {
        let error = check(request(steps.clone())).expect_err(&steps.to_string());
        assert_eq!(error.code, ErrorCode::InvalidRequest);
        assert!(error.message.contains(expected), "{} should say {expected}", error.message);
    }
    assert!(
        serde_json::from_value::<WorkflowSubmitRequest>(
            json!({"steps":[{"name":"a","op":"sum","extra":1}]})
        )
        .is_err()
    );
}

#[test]
fn the_same_workflow_gives_the_same_text() {
    use serde_json::json;
    let one = check(request(json!([{"name":"a","op":"sum","args":{"numbers":[1]}}]))).unwrap();
    let two = check(request(json!([{"op":"sum","name":"a","args":{ "numbers" : [1] }}]))).unwrap();
    assert_eq!(one.text, two.text);
}

#[test]
fn feeding_appends_lists_and_sets_single_arguments() {
    use serde_json::json;
    let sum = step(
        json!({"name":"t","op":"sum","args":{"numbers":[100]},"after":["a","b","c"],"feed":"numbers"}),
    );
    let inputs = [Some(r#"{"value":1}"#.to_owned()), None, Some(r#"{"sorted":[2,3]}"#.to_owned())];
    assert_eq!(build_args(&sum, &inputs).unwrap().1, r#"{"numbers":[100,1,2,3]}"#);
    let upper = step(json!({"name":"u","op":"uppercase","after":["a"],"feed":"text"}));
    assert_eq!(
        build_args(&upper, &[Some(r#"{"value":"hi"}"#.to_owned())]).unwrap().1,
        r#"{"text":"hi"}"#
    );
    // A result the op cannot take fails the step, with the op's reason.
    let error = build_args(&upper, &[Some(r#"{"value":3}"#.to_owned())]).unwrap_err();
    assert!(error.message.starts_with("its input: uppercase"), "{}", error.message);
    let error = build_args(&sum, &[Some(r#"{"digits":"123"}"#.to_owned())]).unwrap_err();
    assert!(error.message.contains("not a number"), "{}", error.message);
    // A skipped dependency feeds nothing.
    assert_eq!(build_args(&sum, &[None, None, None]).unwrap().1, r#"{"numbers":[100]}"#);
}
