use super::*;

#[test]
fn incoming_messages_are_checked_like_the_service_checks_them() {
    let good = br#"{"id":"m1","from":"alice","text":"hi","at":5}"#;
    let Some(Incoming::Room { room, message }) = parse_incoming("agora.chat.room.all", good) else {
        panic!("a room message");
    };
    assert_eq!((room.as_str(), message.at), ("all", Some(5)));
    assert!(matches!(
        parse_incoming("agora.chat.dm.bob", good),
        Some(Incoming::Direct { to, .. }) if to == "bob"
    ));
    let presence = br#"{"name":"bob","event":"join","since_ms":1,"at_ms":1}"#;
    assert!(matches!(
        parse_incoming("agora.chat.presence.bob", presence),
        Some(Incoming::Presence(_))
    ));
    for (subject_name, payload) in [
        ("agora.chat.room.all", &br#"{"id":"m1","from":"alice","text":"\u001b[2J"}"#[..]),
        ("agora.chat.room.all", &br#"{"id":"m1","from":"a.b","text":"hi"}"#[..]),
        ("agora.chat.room.all", &b"nonsense"[..]),
        ("agora.chat.other.all", good),
        ("agora.chat.presence.bob", &br#"{"name":"b b","event":"join","at_ms":1}"#[..]),
    ] {
        assert_eq!(parse_incoming(subject_name, payload), None, "{subject_name}");
    }
}

#[test]
fn repeats_are_dropped_within_the_window() {
    let mut recent = Recent::default();
    assert!(recent.first("alice", "1"));
    assert!(!recent.first("alice", "1"));
    assert!(recent.first("bob", "1"));
    for n in 0..DEDUP_WINDOW {
        recent.first("carol", &n.to_string());
    }
    assert!(recent.first("alice", "1"), "forgotten after the window");
    assert_eq!(recent.order.len(), DEDUP_WINDOW);
    assert_eq!(recent.seen.len(), DEDUP_WINDOW);
}
