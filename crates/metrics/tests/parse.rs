#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]
//! Paths and parsing, on bodies shaped as metrics-server, prometheus-adapter and KEDA write them.

use omniscale_metrics::{Answer, Query};
use serde_json::json;

fn parse(q: &Query, body: serde_json::Value) -> Result<Answer, String> {
    Answer::parse(q, body.to_string().as_bytes())
}

#[test]
fn paths_follow_the_aggregated_apis() {
    let cases = [
        (Query::PodMetrics { namespace: "team".into() }, "/apis/metrics.k8s.io/v1beta1/namespaces/team/pods"),
        (Query::NodeMetrics, "/apis/metrics.k8s.io/v1beta1/nodes"),
        (
            Query::Pods { namespace: "team".into(), metric: "http_requests".into(), metric_selector: String::new() },
            "/apis/custom.metrics.k8s.io/v1beta2/namespaces/team/pods/*/http_requests",
        ),
        (
            Query::Pods {
                namespace: "team".into(),
                metric: "rps".into(),
                metric_selector: "verb=GET,code in (200,201)".into(),
            },
            "/apis/custom.metrics.k8s.io/v1beta2/namespaces/team/pods/*/rps?metricLabelSelector=verb%3DGET%2Ccode%20in%20%28200%2C201%29",
        ),
        (
            Query::Object {
                namespace: "team".into(),
                resource: "ingresses.networking.k8s.io".into(),
                name: "main".into(),
                metric: "hits".into(),
                metric_selector: String::new(),
            },
            "/apis/custom.metrics.k8s.io/v1beta2/namespaces/team/ingresses.networking.k8s.io/main/hits",
        ),
        (
            Query::Object {
                namespace: "team".into(),
                resource: "namespaces".into(),
                name: "team".into(),
                metric: "queue:depth".into(),
                metric_selector: String::new(),
            },
            "/apis/custom.metrics.k8s.io/v1beta2/namespaces/team/metrics/queue%3Adepth",
        ),
        (
            Query::External { namespace: "team".into(), metric: "sqs_messages".into(), selector: "queue=jobs".into() },
            "/apis/external.metrics.k8s.io/v1beta1/namespaces/team/sqs_messages?labelSelector=queue%3Djobs",
        ),
    ];
    for (q, path) in cases {
        assert_eq!(q.path(), path);
    }
}

#[test]
fn pod_metrics_are_parsed_once_and_bad_items_left_out() {
    let q = Query::PodMetrics { namespace: "team".into() };
    let body = json!({"kind": "PodMetricsList", "apiVersion": "metrics.k8s.io/v1beta1", "metadata": {}, "items": [
        {"metadata": {"name": "web-1", "namespace": "team"}, "timestamp": "2026-01-01T12:00:00Z", "window": "15s",
         "containers": [{"name": "app", "usage": {"cpu": "250m", "memory": "64Mi"}},
                        {"name": "sidecar", "usage": {"cpu": "1500u", "memory": "8Mi"}}]},
        {"metadata": {"name": "web-2", "namespace": "team"}, "timestamp": "not a time", "window": "15s", "containers": []},
        {"metadata": {"name": "web-3", "namespace": "team"}, "timestamp": "2026-01-01T12:00:00Z", "window": "1m0s",
         "containers": [{"name": "app", "usage": {"cpu": "lots"}}]}
    ]});
    let Answer::PodMetrics(m) = parse(&q, body).unwrap() else { panic!() };
    assert_eq!(m.len(), 1, "web-2 and web-3 are malformed and count as missing");
    let u = &m["web-1"];
    assert_eq!(u.window, jiff::SignedDuration::from_secs(15));
    // 250m + 1.5m, rounded up to milli as upstream's MilliValue does.
    assert_eq!(u.of("cpu", None).unwrap().value, 252);
    assert_eq!(u.of("cpu", Some("app")).unwrap().value, 250);
    assert_eq!(u.of("memory", Some("sidecar")).unwrap().value, 8 * 1024 * 1024 * 1000);
    assert_eq!(u.of("cpu", Some("nope")), None);
    assert_eq!(u.of("gpu", None), None, "a container without the resource makes the pod missing");
    assert!(parse(&q, json!({"items": 3})).unwrap_err().starts_with("malformed response"));
}

fn value(kind: &str, name: &str, metric: &str, v: &str) -> serde_json::Value {
    json!({"describedObject": {"kind": kind, "namespace": "team", "name": name, "apiVersion": "/v1"},
           "metric": {"name": metric}, "timestamp": "2026-01-01T12:00:00Z", "value": v})
}

#[test]
fn custom_metrics_per_pod_and_per_object() {
    let q = Query::Pods { namespace: "team".into(), metric: "rps".into(), metric_selector: String::new() };
    let body = json!({"kind": "MetricValueList", "apiVersion": "custom.metrics.k8s.io/v1beta2", "metadata": {},
        "items": [value("Pod", "web-1", "rps", "10500m"), value("Pod", "web-2", "rps", "7")]});
    let Answer::Pods(m) = parse(&q, body).unwrap() else { panic!() };
    assert_eq!((m["web-1"].value, m["web-2"].value), (10_500, 7_000));
    assert_eq!(m["web-1"].window, jiff::SignedDuration::from_mins(1), "upstream's default window");
    let q = Query::Object {
        namespace: "team".into(),
        resource: "services".into(),
        name: "front".into(),
        metric: "hits".into(),
        metric_selector: String::new(),
    };
    let Answer::Object(s) = parse(&q, json!({"items": [value("Service", "front", "hits", "2k")]})).unwrap() else {
        panic!()
    };
    assert_eq!(s.value, 2_000_000);
    let two = json!({"items": [value("Service", "front", "hits", "1"), value("Service", "front", "hits", "2")]});
    assert!(parse(&q, two).unwrap_err().contains("returned 2 values where exactly one"));
}

#[test]
fn external_series_are_summed() {
    let q = Query::External { namespace: "team".into(), metric: "queue".into(), selector: String::new() };
    let series = |v: &str, q: &str| json!({"metricName": "queue", "metricLabels": {"queue": q}, "timestamp": "2026-01-01T12:00:00Z", "value": v});
    let body = json!({"kind": "ExternalMetricValueList", "apiVersion": "external.metrics.k8s.io/v1beta1",
        "metadata": {}, "items": [series("30", "a"), series("12500m", "b")]});
    let Answer::External(s) = parse(&q, body).unwrap() else { panic!() };
    assert_eq!(s.value, 42_500);
    assert_eq!(
        parse(&q, json!({"items": []})).unwrap_err(),
        "no metrics returned from the external metrics API",
        "upstream refuses an empty answer rather than reading it as zero"
    );
}
