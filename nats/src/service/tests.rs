use super::*;
use crate::bank::wire::AmountRequest;

#[test]
fn decode_refuses_empty_oversized_and_malformed_bodies() {
    for (payload, needle) in [
        (&b""[..], "empty"),
        (&b"   "[..], "empty"),
        (&b"{"[..], "bad JSON"),
        (&b"[1,2]"[..], "this is an array"),
        (&b" [\"a\",5]"[..], "this is an array"),
        (&b"\"a\""[..], "this is a string"),
        (&b"42"[..], "this is a number"),
        (&b"-1"[..], "this is a number"),
        (&b"true"[..], "this is a boolean"),
        (&b"null"[..], "this is null"),
        (&b"<x/>"[..], "not JSON"),
        (&b"{\"account\":\"a\"}"[..], "missing field `amount`"),
    ] {
        let error = decode::<AmountRequest>(payload).expect_err("refused");
        assert_eq!(error.code, ErrorCode::InvalidRequest);
        assert!(error.message.contains(needle), "{}", error.message);
    }
    let huge = vec![b' '; REQUEST_BYTES_MAX + 1];
    assert!(decode::<AmountRequest>(&huge).expect_err("too big").message.contains("limit"));
}

#[test]
fn endpoints_without_fields_take_empty_or_an_empty_object() {
    assert!(no_fields(b"").is_ok());
    assert!(no_fields(b"{}").is_ok());
    assert!(no_fields(b" { } ").is_ok());
    for bad in [&b"[]"[..], b"[1]", b"{\"x\":1}", b"null", b"\"\"", b"0"] {
        assert_eq!(no_fields(bad).expect_err("refused").code, ErrorCode::InvalidRequest);
    }
}

#[test]
fn error_replies_carry_headers_and_body() {
    let (headers, body) = error_reply(&ServiceError::new(ErrorCode::Busy, "a\nb"));
    assert_eq!(headers.get(NATS_SERVICE_ERROR).map(|v| v.as_str()), Some("ab"));
    assert_eq!(headers.get(NATS_SERVICE_ERROR_CODE).map(|v| v.as_str()), Some("429"));
    let body: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(body["error"]["code"], "busy");
}

#[test]
fn error_counts_are_per_endpoint_and_code() {
    let counts = ErrorCounts::default();
    counts.record("deposit", ErrorCode::InvalidRequest);
    counts.record("deposit", ErrorCode::InvalidRequest);
    counts.record("balance", ErrorCode::Busy);
    assert_eq!(counts.snapshot("deposit")["errors"]["invalid_request"], 2);
    assert_eq!(counts.snapshot("withdraw")["errors"], serde_json::json!({}));
}
