use super::*;

/// Every service a person may call is imported by their account in `accounts.conf`, and
/// nothing a person may call is Agora-internal.
#[test]
fn what_a_person_may_call_is_what_their_account_imports() {
    let config = include_str!("../../../config/accounts.conf");
    let imports = |account: &str| -> Vec<String> {
        let start = config.find(&format!("    {account} {{")).expect("the account");
        let block = &config[start..];
        let end = block.find("\n    }\n").expect("its end");
        block[..end]
            .lines()
            .filter(|line| line.contains("service: { account: AGORA"))
            .filter_map(|line| line.split("subject: \"").nth(1))
            .filter_map(|rest| rest.split('"').next())
            .map(str::to_owned)
            .collect()
    };
    let alice = UserName::parse("alice").unwrap();
    for (account, role) in [(accounts::USERS, Role::User), (accounts::MANAGERS, Role::Manager)] {
        let imported = imports(account);
        let (publish, subscribe) = of(Some((&alice, role)));
        for subject in &publish.allow {
            if subject.starts_with(subjects::BARRIER_PREFIX) {
                continue;
            }
            assert!(imported.contains(subject), "{account} imports {subject}");
            assert!(!subject.starts_with("agora.ledger"), "{subject} is internal");
        }
        // Everything imported is the signed-in person's to call, but signing up (for an
        // anonymous connection).
        for subject in imported.iter().filter(|s| *s != auth::SIGNUP_SUBJECT) {
            assert!(publish.allow.contains(subject), "{role:?} may call {subject}");
        }
        assert!(subscribe.allow.contains(&"_INBOX.alice.>".to_owned()));
        assert!(!subscribe.allow.iter().any(|s| s == "_INBOX.>" || s == ">"));
        assert!(subscribe.allow.contains(&"agora.chat.dm.alice".to_owned()));
        assert!(!subscribe.allow.contains(&"agora.chat.dm.*".to_owned()));
    }
    let (publish, subscribe) = of(None);
    assert_eq!(publish.allow[0], auth::SIGNUP_SUBJECT);
    assert!(imports(accounts::USERS).contains(&auth::SIGNUP_SUBJECT.to_owned()));
    assert_eq!(subscribe.allow, vec!["_INBOX._anon.>".to_owned()]);
    let (_, user) = of(Some((&alice, Role::User)));
    assert!(user.allow.contains(&"agora.bank.events.alice".to_owned()));
    assert!(user.allow.contains(&"agora.tasks.events.alice.*".to_owned()));
    assert!(!user.allow.iter().any(|s| s.starts_with("agora.logs")));
}
