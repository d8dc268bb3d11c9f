use super::*;

#[test]
fn codes_round_trip_through_json_as_snake_case() {
    let all = [
        ErrorCode::InvalidRequest,
        ErrorCode::InsufficientFunds,
        ErrorCode::Busy,
        ErrorCode::Unavailable,
        ErrorCode::Locked,
        ErrorCode::NotOwner,
        ErrorCode::StaleToken,
        ErrorCode::DuplicateId,
        ErrorCode::Internal,
        ErrorCode::NotFound,
        ErrorCode::Conflict,
        ErrorCode::NameTaken,
        ErrorCode::UnknownUser,
        ErrorCode::NotRegistered,
        ErrorCode::RateLimited,
        ErrorCode::InsufficientQuantity,
        ErrorCode::Forbidden,
        ErrorCode::Unauthenticated,
        ErrorCode::LinkedFailed,
        ErrorCode::PendingPosted,
        ErrorCode::PendingVoided,
        ErrorCode::PendingExpired,
        ErrorCode::ExceedsPending,
    ];
    for code in all {
        let json = serde_json::to_string(&code).expect("serializes");
        assert_eq!(json, format!("\"{}\"", code.as_str()));
        assert_eq!(serde_json::from_str::<ErrorCode>(&json).expect("parses"), code);
        assert!((400..600).contains(&code.status()));
    }
}

#[test]
fn error_body_has_the_documented_shape() {
    let body = ErrorBody { error: ServiceError::new(ErrorCode::Busy, "try later") };
    assert_eq!(
        serde_json::to_value(&body).expect("serializes"),
        serde_json::json!({"error": {"code": "busy", "message": "try later"}})
    );
}
