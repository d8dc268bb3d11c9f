use super::*;

#[test]
fn denials_are_read_from_server_errors() {
    assert_eq!(
        parse_denial("Permissions Violation for Publish to \"agora.ledger.get.alice\""),
        Some(PermissionDenial { operation: "publish", subject: "agora.ledger.get.alice".into() })
    );
    assert_eq!(
        parse_denial("permissions violation: Permissions Violation for Subscription to \"a.>\""),
        Some(PermissionDenial { operation: "subscribe", subject: "a.>".into() })
    );
    assert_eq!(parse_denial("Maximum Payload Violation"), None);
    assert_eq!(parse_denial("Permissions Violation for Publish"), None);
}

#[test]
fn several_servers_and_one_way_to_log_in() {
    let args = NatsArgs::anonymous("nats://a:4222, nats://b:4222");
    assert_eq!(args.servers().expect("two URLs").len(), 2);
    assert!(NatsArgs::anonymous(" , ").servers().is_err());
    assert_eq!(NatsArgs::user("nats://a", "bank", "pw").identity(), "user bank");
}
