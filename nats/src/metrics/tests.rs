use super::*;

#[test]
fn every_sample_gets_the_instance_labels() {
    let text = "# HELP agora_x X.\n# TYPE agora_x counter\nagora_x_total 3\n\
                    agora_y{endpoint=\"a\"} 1\nagora_z{} 2\n";
    let labelled = label_samples(text, &[("service", "bank"), ("instance", "i\"1")]);
    assert_eq!(
        labelled,
        "# HELP agora_x X.\n# TYPE agora_x counter\n\
             agora_x_total{service=\"bank\",instance=\"i\\\"1\"} 3\n\
             agora_y{service=\"bank\",instance=\"i\\\"1\",endpoint=\"a\"} 1\n\
             agora_z{service=\"bank\",instance=\"i\\\"1\"} 2\n"
    );
}

#[test]
fn merged_families_appear_once_with_every_instance() {
    let a = "# HELP agora_r R.\n# TYPE agora_r counter\nagora_r_total{instance=\"a\"} 1\n\
                 # HELP agora_g G.\n# TYPE agora_g gauge\nagora_g{instance=\"a\"} 5\n# EOF\n";
    let b = "# HELP agora_r R.\n# TYPE agora_r counter\nagora_r_total{instance=\"b\"} 2\n\
                 # HELP agora_h H.\n# TYPE agora_h gauge\nagora_h{instance=\"b\"} 7\n";
    let merged = merge([a, b]);
    assert_eq!(
        merged,
        "# HELP agora_r R.\n# TYPE agora_r counter\nagora_r_total{instance=\"a\"} 1\n\
             agora_r_total{instance=\"b\"} 2\n\
             # HELP agora_g G.\n# TYPE agora_g gauge\nagora_g{instance=\"a\"} 5\n\
             # HELP agora_h H.\n# TYPE agora_h gauge\nagora_h{instance=\"b\"} 7\n# EOF\n"
    );
    assert_eq!(merged.matches("# TYPE agora_r").count(), 1);
}

#[tokio::test]
async fn registering_twice_gives_the_same_metric() {
    let a: Counter = register("test_twice", "Twice.", Counter::default());
    let b: Counter = register("test_twice", "Twice.", Counter::default());
    a.inc();
    assert_eq!(b.get(), 1);
    requests()
        .total
        .get_or_create(&OutcomeLabels { endpoint: "e".into(), code: "ok".into() })
        .inc();
    let text = exposition("svc", "one").await;
    assert_eq!(text.matches("# TYPE agora_test_twice counter").count(), 1, "{text}");
    assert!(
        text.contains(
            "agora_requests_total{service=\"svc\",instance=\"one\",endpoint=\"e\",code=\"ok\"} 1"
        ),
        "{text}"
    );
}
