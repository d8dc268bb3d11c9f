use super::*;

fn user(name: &str, role: Role) -> UserRecord {
    UserRecord {
        name: UserName::parse(name).unwrap(),
        role,
        password_hash: format!("hash-of-{name}"),
        created_ms: 5,
    }
}

#[test]
fn users_and_tokens_round_trip_and_expire() {
    let dir = tempfile::tempdir().unwrap();
    let conn = open(dir.path()).unwrap();
    assert!(add_user(&conn, &user("alice", Role::User)).unwrap());
    assert!(!add_user(&conn, &user("ALICE", Role::User)).unwrap(), "names ignore case");
    assert!(add_user(&conn, &user("boss", Role::Manager)).unwrap());
    assert_eq!(user_count(&conn).unwrap(), 2);
    assert_eq!(super::user(&conn, "alice").unwrap(), Some(user("alice", Role::User)));
    assert_eq!(super::user(&conn, "nobody").unwrap(), None);
    assert!(set_role(&conn, "alice", Role::Manager).unwrap());
    assert!(!set_role(&conn, "nobody", Role::Manager).unwrap());
    let (page, more) = users(&conn, None, 1).unwrap();
    assert_eq!((page[0].name.as_str(), more), ("alice", true));
    let (page, more) = users(&conn, Some("alice"), 5).unwrap();
    assert_eq!((page.len(), page[0].name.as_str(), more), (1, "boss", false));

    let record = |expires_ms| TokenRecord {
        name: UserName::parse("alice").unwrap(),
        kind: TokenKind::Api,
        created_ms: 10,
        expires_ms,
    };
    add_token(&conn, "d1", &record(100)).unwrap();
    add_token(&conn, "d2", &record(200)).unwrap();
    assert_eq!(token(&conn, "d1").unwrap(), Some(record(100)));
    assert_eq!(tokens_of(&conn, "alice").unwrap().len(), 2);
    assert_eq!(remove_expired(&conn, 150, 10).unwrap(), 1);
    assert_eq!(token(&conn, "d1").unwrap(), None);
    assert!(remove_token(&conn, "d2").unwrap());
    assert!(!remove_token(&conn, "d2").unwrap());
    add_token(&conn, "d3", &record(300)).unwrap();
    assert_eq!(remove_tokens_of(&conn, "alice").unwrap(), 1);
    // A token of a user who does not exist cannot be stored.
    let ghost = TokenRecord { name: UserName::parse("ghost").unwrap(), ..record(1) };
    assert!(add_token(&conn, "d4", &ghost).is_err());
    // A corrupt row is an error, not a default.
    conn.execute("UPDATE users SET role = 'root' WHERE name = 'boss'", []).unwrap();
    assert!(super::user(&conn, "boss").is_err());
}
