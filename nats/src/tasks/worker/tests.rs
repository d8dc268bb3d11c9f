use super::*;

#[test]
fn backoff_doubles_up_to_the_cap() {
    let config = WorkerConfig { worker_id: "w".into(), concurrency: 1, retry_backoff_ms: 100 };
    assert_eq!(config.backoff_ms(1), 100);
    assert_eq!(config.backoff_ms(2), 200);
    assert_eq!(config.backoff_ms(4), 800);
    assert_eq!(config.backoff_ms(40), RETRY_BACKOFF_MS_MAX);
}

#[test]
fn worker_ids_are_subject_tokens() {
    let config =
        |id: &str| WorkerConfig { worker_id: id.into(), concurrency: 4, retry_backoff_ms: 10 };
    assert!(config("worker-1_a").validate().is_ok());
    for bad in ["", "a.b", "a b", "*", ">"] {
        assert!(config(bad).validate().is_err(), "{bad:?}");
    }
}
