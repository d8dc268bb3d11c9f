use super::*;

#[test]
fn traceparent_round_trips_and_bad_ones_are_ignored() {
    let trace = Trace::root(true);
    let text = trace.traceparent();
    assert_eq!(text.len(), 55);
    assert_eq!(Trace::parse(&text), Some(trace));
    let unsampled = Trace::root(false);
    assert_eq!(Trace::parse(&unsampled.traceparent()), Some(unsampled));
    let child = Trace::child_of(Some(&trace));
    assert_eq!(child.trace_id, trace.trace_id);
    assert_ne!(child.span_id, trace.span_id);
    assert!(child.sampled);
    for bad in [
        "",
        "00-00000000000000000000000000000000-0000000000000001-01",
        "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
        "zz-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b71692033-01",
        "garbage",
    ] {
        assert_eq!(Trace::parse(bad), None, "{bad}");
    }
    let known = Trace::parse("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
        .expect("the W3C example");
    assert_eq!(known.trace_id.to_string(), "0af7651916cd43dd8448eb211c80319c");
    assert_eq!(known.span_id.to_string(), "b7ad6b7169203331");
}

#[tokio::test]
async fn the_current_span_is_the_scopes() {
    assert_eq!(current(), None);
    let trace = Trace::root(true);
    assert_eq!(scope(Some(trace), async { current() }).await, Some(trace));
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(TRACEPARENT, trace.traceparent().as_str());
    assert_eq!(Trace::from_headers(Some(&headers)), Some(trace));
    assert_eq!(scope(None, async { current() }).await, None);
}
