use super::*;

fn alice() -> Caller {
    Caller::user(agora_core::UserName::parse("alice").unwrap(), agora_core::Role::User)
}

#[test]
fn bad_messages_are_refused_before_the_owner() {
    let good = br#"{"room":"all","id":"m1","text":"hi <b>there</b>"}"#;
    let incoming = parse_message(&alice(), good).expect("valid");
    assert_eq!(incoming.room.as_ref().map(Name::as_str), Some("all"));
    assert_eq!(incoming.from.as_str(), "alice", "the sender is the caller");
    assert_eq!(incoming.at_ms, None);
    let direct = br#"{"to":"bob","id":"m1","text":"hi"}"#;
    assert!(parse_message(&alice(), direct).expect("valid").to.is_some());
    let named = br#"{"room":"all","id":"m1","from":"alice","text":"hi"}"#;
    assert!(parse_message(&alice(), named).is_ok(), "she may name herself");
    let long = format!(r#"{{"room":"all","id":"m1","text":"{}"}}"#, "x".repeat(5000));
    for payload in [
        &b""[..],
        &b"not json"[..],
        &br#"["all","m1","hi"]"#[..],
        &br#"{"room":"all","id":"m1"}"#[..],
        &br#"{"id":"m1","text":"hi"}"#[..],
        &br#"{"room":"all","to":"bob","id":"m1","text":"hi"}"#[..],
        &br#"{"room":"all","id":"m1","text":"hi","extra":1}"#[..],
        &br#"{"room":"all","id":"","text":"hi"}"#[..],
        &br#"{"room":"all","id":"m1","text":""}"#[..],
        &br#"{"room":"all","id":"m1","text":"\u001b[2J"}"#[..],
        &br#"{"room":"bad$room","id":"m1","text":"hi"}"#[..],
        long.as_bytes(),
    ] {
        let error = parse_message(&alice(), payload).expect_err("refused");
        assert_eq!(error.code, ErrorCode::InvalidRequest, "{}", String::from_utf8_lossy(payload));
    }
    // Nobody speaks for someone else; a service names the sender, and must.
    let forged = br#"{"room":"all","id":"m1","from":"bob","text":"hi"}"#;
    assert_eq!(parse_message(&alice(), forged).unwrap_err().code, ErrorCode::Forbidden);
    assert_eq!(parse_message(&Caller::Service, forged).unwrap().from.as_str(), "bob");
    assert_eq!(parse_message(&Caller::Service, good).unwrap_err().code, ErrorCode::Forbidden);
    let anonymous = parse_message(&Caller::Anonymous, good).unwrap_err();
    assert_eq!(anonymous.code, ErrorCode::Unauthenticated);
}

#[test]
fn bad_requests_are_refused_before_the_owner() {
    let cases: [(&str, &str); 12] = [
        (subject::REGISTER, r#"{}"#),
        (subject::REGISTER, r#"{"name":"a.b"}"#),
        (subject::REGISTER, r#"{"name":"alice","session":"short"}"#),
        (subject::HEARTBEAT, r#"{"name":"alice"}"#),
        (subject::LEAVE, r#"{"name":"alice","session":"x y z w v u"}"#),
        (subject::JOIN, r#"{"name":"alice","session":"token-a1","room":"*"}"#),
        (subject::PART, r#"{"name":"alice","session":"token-a1"}"#),
        (subject::WHO, r#"{"room":"no spaces"}"#),
        (subject::HISTORY, r#"{}"#),
        (subject::HISTORY, r#"{"room":"all","as":"alice"}"#),
        (subject::HISTORY, r#"{"with":"bob"}"#),
        (subject::HISTORY, r#"{"room":"all","limit":0}"#),
    ];
    for (endpoint, payload) in cases {
        let error =
            parse_request(endpoint, &Caller::Service, payload.as_bytes()).expect_err(payload);
        assert_eq!(error.code, ErrorCode::InvalidRequest, "{endpoint} {payload}");
    }
    assert!(parse_request(subject::WHO, &alice(), b"").is_ok());
    let RequestCommand::Chat(Command::Register { token, .. }) =
        parse_request(subject::REGISTER, &alice(), br#"{"name":"alice"}"#).expect("valid")
    else {
        panic!("a register command");
    };
    chat::check_session(&token).expect("a made-up token is a valid token");
    // A person registers, beats, joins and reads conversations only as themselves.
    for (endpoint, payload) in [
        (subject::REGISTER, r#"{"name":"bob"}"#),
        (subject::HEARTBEAT, r#"{"name":"bob","session":"token-b12"}"#),
        (subject::LEAVE, r#"{"name":"bob","session":"token-b12"}"#),
        (subject::JOIN, r#"{"name":"bob","session":"token-b12","room":"r"}"#),
        (subject::HISTORY, r#"{"with":"alice","as":"bob"}"#),
        (subject::HISTORY, r#"{"as":"bob"}"#),
    ] {
        let error = parse_request(endpoint, &alice(), payload.as_bytes()).expect_err(payload);
        assert_eq!(error.code, ErrorCode::Forbidden, "{endpoint} {payload}");
    }
    let error = parse_request(subject::WHO, &Caller::Anonymous, b"").unwrap_err();
    assert_eq!(error.code, ErrorCode::Unauthenticated);
}
