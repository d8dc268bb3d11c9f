use super::*;
use crate::likes::wire::UserLike;

#[test]
fn bad_requests_are_refused_before_the_owner() {
    let cases: [(&str, &str, &str); 11] = [
        (subject::LIKE, "agora.likes.like.p", "not json"),
        (subject::LIKE, "agora.likes.like.p", r#"{"user":""}"#),
        (subject::LIKE, "agora.likes.like.p", r#"{"user":"a b"}"#),
        (subject::LIKE, "agora.likes.like.p", r#"{"user":"a","extra":1}"#),
        (subject::LIKE, "agora.likes.like.p", r#"{"user":7}"#),
        (subject::UNLIKE, "agora.likes.unlike.p", ""),
        (subject::COUNT, "agora.likes.count.p", r#"{"who":"a"}"#),
        (subject::TOP, subject::TOP_SUBJECT, r#"{"limit":0}"#),
        (subject::TOP, subject::TOP_SUBJECT, r#"{"limit":100000}"#),
        (subject::SYNC, "agora.likes.sync.n1", r#"{"node":"n.2","vector":{}}"#),
        (subject::SYNC, "agora.likes.sync.n1", r#"{"node":"n2","vector":{"a b":1}}"#),
    ];
    for (endpoint, subject, payload) in cases {
        let error = parse_request(endpoint, &Caller::Service, subject, payload.as_bytes())
            .expect_err(payload);
        assert_eq!(error.code, ErrorCode::InvalidRequest, "{endpoint} {payload}");
    }
    let long_item = format!("agora.likes.like.{}", "i".repeat(65));
    assert!(parse_request(subject::LIKE, &Caller::Service, &long_item, b"").is_err());
    assert!(matches!(
        parse_request(subject::LIKE, &Caller::Service, "agora.likes.like.p", b""),
        Ok(Command::Like { user: None, liked: true, .. })
    ));
    assert!(matches!(
        parse_request(
            subject::UNLIKE,
            &Caller::Service,
            "agora.likes.unlike.p",
            br#"{"user":"a@b.c"}"#
        ),
        Ok(Command::Like { user: Some(_), liked: false, .. })
    ));
    assert!(matches!(
        parse_request(subject::TOP, &Caller::Service, subject::TOP_SUBJECT, b""),
        Ok(Command::Top { limit: TOP_LIMIT_DEFAULT })
    ));
}

#[test]
fn events_are_checked_and_own_events_skipped() {
    let me = NodeId::parse("me").expect("valid");
    let event = |origin: &str, batch: u64, parts: u32| {
        serde_json::to_vec(&LikeEvent {
            item: "p".into(),
            count: 3,
            origin: origin.into(),
            batch,
            parts,
            total: Some(2),
            users: vec![UserLike { user: "u".into(), liked: true, ts: 9 }],
        })
        .expect("encodes")
    };
    let Ok(Some((_, _, records))) = parse_event(&me, &event("n2", 4, 1)) else {
        panic!("a peer's event");
    };
    assert_eq!(records.len(), 2);
    assert!(matches!(parse_event(&me, &event("me", 4, 1)), Ok(None)));
    assert!(parse_event(&me, &event("n2", 0, 1)).is_err());
    assert!(parse_event(&me, &event("n2", 4, 0)).is_err());
    assert!(parse_event(&me, &event("n 2", 4, 1)).is_err());
    assert!(parse_event(&me, b"{}").is_err());
}

#[test]
fn digest_requests_are_bounded() {
    assert!(parse_digest(b"").expect("empty is all").is_empty());
    let many = serde_json::json!({ "items": vec!["p"; DIGEST_ITEMS_MAX + 1] }).to_string();
    assert!(parse_digest(many.as_bytes()).is_err());
    assert!(parse_digest(br#"{"items":["a.b"]}"#).is_err());
}
