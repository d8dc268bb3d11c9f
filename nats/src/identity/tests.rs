use super::*;

fn with(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in pairs {
        headers.insert(*name, *value);
    }
    headers
}

fn user(name: &str, role: Role) -> Caller {
    Caller::user(UserName::parse(name).unwrap(), role)
}

#[test]
fn the_servers_stamp_says_who_asked_and_beats_any_header() {
    let info = |acc: &str, user: &str| format!(r#"{{"acc":"{acc}","rtt":1,"user":"{user}"}}"#);
    let cases = [
        (with(&[(REQUEST_INFO_HEADER, &info("USERS", "alice"))]), user("alice", Role::User)),
        (with(&[(REQUEST_INFO_HEADER, &info("MANAGERS", "boss"))]), user("boss", Role::Manager)),
        (
            with(&[
                (REQUEST_INFO_HEADER, &info("USERS", "alice")),
                (USER_HEADER, "bob"),
                (ROLE_HEADER, "manager"),
            ]),
            user("alice", Role::User),
        ),
        (with(&[(REQUEST_INFO_HEADER, r#"{"acc":"USERS"}"#)]), Caller::Anonymous),
        (with(&[]), Caller::Service),
        (with(&[(USER_HEADER, "carol")]), user("carol", Role::User)),
        (with(&[(USER_HEADER, "dan"), (ROLE_HEADER, "manager")]), user("dan", Role::Manager)),
        // A stamp of another account is not a person of ours: the component rules apply.
        (with(&[(REQUEST_INFO_HEADER, &info("AGORA", "x"))]), Caller::Service),
    ];
    for (headers, expected) in cases {
        assert_eq!(caller(Some(&headers)).unwrap(), expected, "{headers:?}");
    }
    assert_eq!(caller(None).unwrap(), Caller::Service);
}

#[test]
fn a_bad_identity_is_refused_not_guessed() {
    let bad = [
        with(&[(REQUEST_INFO_HEADER, "not json")]),
        with(&[(REQUEST_INFO_HEADER, r#"{"acc":"USERS","user":"a.b"}"#)]),
        with(&[(USER_HEADER, "_agora")]),
        with(&[(USER_HEADER, "eve"), (ROLE_HEADER, "root")]),
    ];
    for headers in bad {
        assert!(caller(Some(&headers)).is_err(), "{headers:?}");
    }
}

#[test]
fn a_component_says_whom_it_acts_for() {
    for expected in [user("alice", Role::User), user("boss", Role::Manager), Caller::Service] {
        assert_eq!(caller(Some(&headers_for(&expected))).unwrap(), expected);
    }
}
