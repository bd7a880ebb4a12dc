#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]
//! One Autoscaler's evaluation from a cycle's answers: every metric type reads the right query,
//! failures keep upstream's reasons, and a namespace's Autoscalers share their reads.

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use omniscale_api::autoscaler::HorizontalSpec;
use omniscale_hpa::decide::{History, MetricOutcome};
use omniscale_hpa::input::{self, Scale};
use omniscale_metrics::{Answer, Cache, ContainerUsage, PodIndex, Query, Sample, Usage};
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;

const NOW: &str = "2026-01-01T12:00:00Z";

fn now() -> Timestamp {
    NOW.parse().unwrap()
}

fn pod(name: &str, cpu_request: &str) -> Arc<Pod> {
    Arc::new(
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "team", "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": cpu_request}}}]},
            "status": {"phase": "Running", "startTime": "2026-01-01T10:00:00Z",
                "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T10:00:30Z"}]}
        }))
        .unwrap(),
    )
}

fn spec(metrics: serde_json::Value) -> HorizontalSpec {
    serde_json::from_value(json!({"minReplicas": 1, "maxReplicas": 20, "metrics": metrics})).unwrap()
}

fn sample(milli: i64) -> Sample {
    Sample { value: milli, timestamp: now(), window: jiff::SignedDuration::from_secs(30) }
}

fn scale(replicas: i32) -> Scale {
    Scale { spec_replicas: replicas, status_replicas: replicas, selector: "app=web".into() }
}

fn resource_of(api_version: &str, kind: &str) -> Option<String> {
    (api_version == "networking.k8s.io/v1" && kind == "Ingress").then(|| "ingresses.networking.k8s.io".into())
}

fn run<'a>(h: &'a HorizontalSpec, pods: &PodIndex, cache: &Cache, replicas: i32) -> input::Evaluation<'a> {
    input::evaluate(h, "team", &scale(replicas), pods, cache, &resource_of, &mut History::default(), now())
}

fn proposal<'a>(e: &'a input::Evaluation<'_>, i: usize) -> &'a omniscale_hpa::calc::Proposal {
    match &e.decision.metrics[i] {
        MetricOutcome::Proposal(p) => p,
        other => panic!("metric {i}: {other:?}"),
    }
}

#[test]
fn every_metric_type_reads_its_query() {
    let h = spec(json!([
        {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}},
        {"type": "Pods", "pods": {"metric": {"name": "rps", "selector": {"matchLabels": {"verb": "GET"}}},
            "target": {"type": "AverageValue", "averageValue": "10"}}},
        {"type": "Object", "object": {"describedObject": {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "name": "main"},
            "metric": {"name": "hits"}, "target": {"type": "Value", "value": "100"}}},
        {"type": "External", "external": {"metric": {"name": "queue", "selector": {"matchLabels": {"q": "jobs"}}},
            "target": {"type": "AverageValue", "averageValue": "30"}}}
    ]));
    let pods = PodIndex::new([pod("web-1", "200m"), pod("web-2", "200m")]);
    let mut cache = Cache::new();
    input::want(&input::metric_specs(h.metrics.as_deref()), "team", &mut cache, &resource_of);
    let pending = cache.take_pending();
    let pods_q = Query::Pods { namespace: "team".into(), metric: "rps".into(), metric_selector: "verb=GET".into() };
    let object_q = Query::Object {
        namespace: "team".into(),
        resource: "ingresses.networking.k8s.io".into(),
        name: "main".into(),
        metric: "hits".into(),
        metric_selector: String::new(),
    };
    let external_q = Query::External { namespace: "team".into(), metric: "queue".into(), selector: "q=jobs".into() };
    let pm_q = Query::PodMetrics { namespace: "team".into() };
    assert_eq!(pending.len(), 4);
    for q in [&pods_q, &object_q, &external_q, &pm_q] {
        assert!(pending.contains(q), "{q:?} not asked for: {pending:?}");
    }
    let usage = |cpu: i64| Usage {
        timestamp: now(),
        window: jiff::SignedDuration::from_secs(30),
        containers: vec![ContainerUsage::new("c", [("cpu", cpu)])],
    };
    cache
        .put(pm_q, Ok(Answer::PodMetrics(HashMap::from([("web-1".into(), usage(150)), ("web-2".into(), usage(250))]))));
    cache.put(
        pods_q,
        Ok(Answer::Pods(HashMap::from([("web-1".into(), sample(20_000)), ("web-2".into(), sample(40_000))]))),
    );
    cache.put(object_q, Ok(Answer::Object(sample(250_000))));
    cache.put(external_q, Ok(Answer::External(sample(90_000))));
    let e = run(&h, &pods, &cache, 2);
    // cpu: 200m average of 200m requests = 100% vs 50% → 4.
    assert_eq!((proposal(&e, 0).utilization, proposal(&e, 0).replicas), (Some(100), 4));
    // rps: 30 per pod vs 10 → 6.
    assert_eq!(proposal(&e, 1).replicas, 6);
    // hits: 250 vs 100 → ratio 2.5 × 2 ready pods → 5.
    assert_eq!(proposal(&e, 2).replicas, 5);
    // queue: 90 ÷ 30 per replica → 3.
    assert_eq!(proposal(&e, 3).replicas, 3);
    assert_eq!(e.decision.proposed, Some(6));
    let status = input::current_metrics(&e);
    let status = serde_json::to_value(&status).unwrap();
    assert_eq!(status[0]["resource"]["current"], json!({"averageUtilization": 100, "averageValue": "200m"}));
    assert_eq!(status[1]["pods"]["current"]["averageValue"], "30");
    assert_eq!(status[2]["object"]["current"], json!({"value": "250"}));
    assert_eq!(status[3]["external"]["current"], json!({"averageValue": "45"}));
}

#[test]
fn failures_keep_upstream_reasons_and_block_scale_down_only() {
    let h = spec(json!([
        {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}},
        {"type": "External", "external": {"metric": {"name": "queue"}, "target": {"type": "Value", "value": "30"}}},
        {"type": "Object", "object": {"describedObject": {"apiVersion": "example.com/v1", "kind": "Widget", "name": "w"},
            "metric": {"name": "m"}, "target": {"type": "Value", "value": "1"}}}
    ]));
    let pods = PodIndex::new([pod("web-1", "200m"), pod("web-2", "200m")]);
    let mut cache = Cache::new();
    input::want(&input::metric_specs(h.metrics.as_deref()), "team", &mut cache, &resource_of);
    assert_eq!(cache.take_pending().len(), 2, "an Object metric of an unserved kind is never asked for");
    let low = Usage {
        timestamp: now(),
        window: jiff::SignedDuration::from_secs(30),
        containers: vec![ContainerUsage::new("c", [("cpu", 20)])],
    };
    cache.put(
        Query::PodMetrics { namespace: "team".into() },
        Ok(Answer::PodMetrics(HashMap::from([("web-1".into(), low.clone()), ("web-2".into(), low)]))),
    );
    cache.put(
        Query::External { namespace: "team".into(), metric: "queue".into(), selector: String::new() },
        Err("unable to fetch metrics from the external metrics API: 503".into()),
    );
    let e = run(&h, &pods, &cache, 4);
    match &e.decision.metrics[1] {
        MetricOutcome::Error { reason, message } => {
            assert_eq!(reason, "FailedGetExternalMetric");
            assert!(message.contains("503"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    match &e.decision.metrics[2] {
        MetricOutcome::Error { reason, message } => {
            assert_eq!(reason, "FailedGetObjectMetric");
            assert!(message.contains("does not serve Widget"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    // cpu alone would scale down (10% of 50%), but broken metrics block a scale-down.
    assert_eq!(e.decision.branch, "metrics failed");
    assert_eq!(e.decision.desired, 4);
}

#[test]
fn a_scale_without_selector_is_refused_like_upstream() {
    let h = spec(json!(null));
    let pods = PodIndex::new([pod("web-1", "200m")]);
    let cache = Cache::new();
    let mut history = History::default();
    let s = Scale { spec_replicas: 3, status_replicas: 3, selector: String::new() };
    let e = input::evaluate(&h, "team", &s, &pods, &cache, &resource_of, &mut history, now());
    let active = e.decision.conditions.iter().find(|c| c.type_ == "ScalingActive").unwrap();
    assert_eq!((active.status, active.reason.as_str()), ("False", "SelectorRequired"));
    assert_eq!(e.decision.desired, 3);
}

#[test]
fn a_namespace_of_autoscalers_costs_one_pod_metrics_read() {
    let mut cache = Cache::new();
    for _ in 0..50 {
        input::want(&input::metric_specs(None), "team", &mut cache, &resource_of);
        input::want(&input::metric_specs(None), "other", &mut cache, &resource_of);
    }
    assert_eq!(
        cache.take_pending(),
        vec![Query::PodMetrics { namespace: "other".into() }, Query::PodMetrics { namespace: "team".into() }]
    );
}
