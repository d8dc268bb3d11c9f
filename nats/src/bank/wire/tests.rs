use super::*;

#[test]
fn requests_refuse_unknown_fields_and_bad_values() {
    let typo = serde_json::from_str::<AmountRequest>(r#"{"account":"a","amout":5}"#);
    assert!(typo.is_err());
    let fraction = serde_json::from_str::<AmountRequest>(r#"{"account":"a","amount":1.5}"#);
    assert!(fraction.is_err());
    let request: TransferRequest =
        serde_json::from_str(r#"{"from":"a","to":"a","amount":5}"#).expect("shape is fine");
    let refused = request.into_transfer(&Caller::Service).expect_err("self transfer");
    assert_eq!(refused.code, ErrorCode::InvalidRequest);
}

#[test]
fn a_person_moves_only_their_own_money_under_their_own_ids() {
    let alice = Caller::user(agora_core::UserName::parse("alice").unwrap(), agora_core::Role::User);
    let amount = |account: &str, id: Option<&str>| AmountRequest {
        account: account.into(),
        amount: 5,
        id: id.map(str::to_owned),
    };
    let transfer = |from: &str| TransferRequest {
        from: from.into(),
        to: "bob".into(),
        amount: 5,
        id: Some("t-1".into()),
    };
    let mine = amount("alice", Some("op-1")).into_deposit(&alice).unwrap();
    let request = mine.to_request().unwrap();
    assert_eq!(request.id.unwrap().as_str(), "alice/op-1", "recorded under her name");
    assert_eq!(mine.id.as_deref(), Some("op-1"), "shown as she gave it");
    assert!(amount("alice", None).into_withdraw(&alice).unwrap().id.is_none());
    assert!(transfer("alice").into_transfer(&alice).is_ok());
    for refused in [
        amount("bob", None).into_deposit(&alice),
        amount("bob", None).into_withdraw(&alice),
        transfer("bob").into_transfer(&alice),
        amount("alice", None).into_deposit(&Caller::Anonymous),
    ] {
        let code = refused.expect_err("not hers").code;
        assert!(matches!(code, ErrorCode::Forbidden | ErrorCode::Unauthenticated), "{code}");
    }
    // A service moves whatever it names, under the id it gives.
    let service = transfer("bob").into_transfer(&Caller::Service);
    assert!(service.is_err(), "bob to bob");
    let paid = TransferRequest { to: "carol".into(), ..transfer("bob") };
    let paid = paid.into_transfer(&Caller::Service).unwrap().to_request().unwrap();
    assert_eq!(paid.id.unwrap().as_str(), "t-1");
}

#[test]
fn every_operation_kind_is_authorized_for_its_caller() {
    let alice = Caller::user(agora_core::UserName::parse("alice").unwrap(), agora_core::Role::User);
    let op = |json: serde_json::Value| -> OperationRequest {
        serde_json::from_value(json).expect("shape")
    };
    let allowed = [
        op(serde_json::json!({"op":"deposit","account":"alice","amount":1})),
        op(serde_json::json!({"op":"withdraw","account":"alice","amount":1,"asset":"money"})),
        op(serde_json::json!({"from":"alice","to":"bob","amount":1,"asset":"BTC"})),
        op(
            serde_json::json!({"op":"pending","from":"alice","to":"bob","amount":1,"timeout_ms":5000,"id":"h"}),
        ),
        op(serde_json::json!({"op":"post","pending_id":"h"})),
        op(serde_json::json!({"op":"void","pending_id":"h"})),
    ];
    for operation in allowed {
        let authorized = operation.clone().authorize(&alice).expect("hers");
        assert_eq!(authorized.scope.as_deref(), Some("alice"));
        let request = authorized.to_request().expect("valid");
        if let Some(pending) = request.operation.pending_id() {
            assert_eq!(pending.as_str(), "alice/h", "she finishes only her own holds");
        }
        assert_eq!(operation.authorize(&Caller::Service).expect("service").scope, None);
    }
    let refused = [
        op(serde_json::json!({"op":"deposit","account":"bob","amount":1})),
        op(serde_json::json!({"op":"deposit","account":"alice","amount":1,"asset":"BTC"})),
        op(serde_json::json!({"op":"withdraw","account":"alice","amount":1,"asset":"BTC"})),
        op(serde_json::json!({"from":"bob","to":"alice","amount":1})),
        op(
            serde_json::json!({"op":"pending","from":"bob","to":"alice","amount":1,"timeout_ms":5000,"id":"h"}),
        ),
        op(serde_json::json!({"op":"post","pending_id":"h","scope":"bob"})),
    ];
    for operation in refused {
        let code = operation.clone().authorize(&alice).expect_err("not hers").code;
        assert!(matches!(code, ErrorCode::Forbidden | ErrorCode::InvalidRequest), "{operation:?}");
        let code = operation.authorize(&Caller::Anonymous).expect_err("anonymous").code;
        assert!(matches!(code, ErrorCode::Unauthenticated | ErrorCode::InvalidRequest));
    }
}
