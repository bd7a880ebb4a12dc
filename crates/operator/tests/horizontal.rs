#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]
//! The horizontal shell against the simulated cluster: `mode: Recommend` publishes without
//! scaling, `Auto` scales, and the decision history is persisted in status.

mod support;

use clap::Parser;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use omniscale_api::Autoscaler;
use omniscale_operator::cli::{Cli, Command};
use omniscale_sim::control::World;
use omniscale_sim::runtime::{self, SimOptions};
use omniscale_sim::world::load::ContainerUsage;
use omniscale_sim::world::scenario::{StaticNodes, WorkloadSpec};
use serde_json::json;
use std::collections::BTreeMap;
use std::time::Duration;

async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..300 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

/// A simulated cluster whose `web` Deployment (1 replica, 100m request) burns 400m per pod, an
/// Autoscaler for it in `mode`, and the operator running against it.
struct Setup {
    sim: runtime::Running,
    client: kube::Client,
    stop: tokio_util::sync::CancellationToken,
    operator: tokio::task::JoinHandle<omniscale_operator::Result<()>>,
    kubeconfig: std::path::PathBuf,
}

fn cpu_50() -> serde_json::Value {
    json!([{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}}])
}

async fn setup(mode: &str, dry_run: bool, metrics: serde_json::Value, tag: &str) -> Setup {
    omniscale_operator::install_crypto_provider();
    let mut world = World::default();
    world.static_nodes = vec![StaticNodes::of_type("node", 3, "m5.large")];
    // Each pod of `web` burns 400m against a 100m request: 400% of request, target 50%.
    world.workloads = vec![WorkloadSpec {
        namespace: "default".into(),
        name: "web".into(),
        load: None,
        containers: BTreeMap::from([(
            "c".to_owned(),
            ContainerUsage { cpu_millis: 400.0, memory_mib: 10.0, jitter: 0.0 },
        )]),
    }];
    let sim = runtime::start(SimOptions { speed: 60.0, ..SimOptions::default() }, world).await.unwrap();
    let client = support::prepared_client(&sim).await;
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let d: Deployment = serde_json::from_value(json!({"metadata": {"name": "web"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [
                {"name": "c", "image": "nginx", "resources": {"requests": {"cpu": "100m"}}}]}}}}))
    .unwrap();
    deploys.create(&PostParams::default(), &d).await.unwrap();
    let autoscalers: Api<Autoscaler> = Api::namespaced(client.clone(), "default");
    let a: Autoscaler = serde_json::from_value(json!({"apiVersion": "omniscale.dev/v1alpha1", "kind": "Autoscaler",
        "metadata": {"name": "web"},
        "spec": {"mode": mode, "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
            "horizontal": {"minReplicas": 1, "maxReplicas": 10, "metrics": metrics}}}))
    .unwrap();
    autoscalers.create(&PostParams::default(), &a).await.unwrap();

    let kubeconfig = std::env::temp_dir().join(format!("omniscale-horizontal-{}-{tag}.kubeconfig", std::process::id()));
    std::fs::write(&kubeconfig, sim.kubeconfig()).unwrap();
    let mut argv = vec!["omniscale", "run", "--kubeconfig", kubeconfig.to_str().unwrap(), "--pod-name", "test"];
    argv.extend(["--http-addr", "127.0.0.1:0"]);
    if dry_run {
        argv.push("--dry-run");
    }
    let cli = Cli::try_parse_from(argv).unwrap();
    let Command::Run(args) = cli.command else { panic!("run args") };
    let stop = tokio_util::sync::CancellationToken::new();
    let operator =
        tokio::spawn(omniscale_operator::run::run_with(*args, stop.clone(), sim.cluster.shared.clock.clone()));

    Setup { sim, client, stop, operator, kubeconfig }
}

impl Setup {
    async fn finish(self) {
        self.stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.operator).await;
        let _ = std::fs::remove_file(&self.kubeconfig);
        self.sim.shutdown().await;
    }
}

async fn published(autoscalers: &Api<Autoscaler>) {
    eventually("a published recommendation", || async {
        let a = autoscalers.get("web").await.unwrap();
        let h = a.status.as_ref().and_then(|s| s.horizontal.as_ref());
        h.and_then(|h| h.desired_replicas).is_some_and(|d| d >= 4)
            && h.and_then(|h| h.history.as_ref()).is_some_and(|h| !h.recommendations.is_empty())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recommend_publishes_without_scaling_then_auto_scales() {
    let t = setup("Recommend", false, cpu_50(), "recommend").await;
    let client = t.client.clone();
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let autoscalers: Api<Autoscaler> = Api::namespaced(client.clone(), "default");
    // Recommend: the decision is published, the Deployment is left alone.
    published(&autoscalers).await;
    let a = autoscalers.get("web").await.unwrap();
    let conds = &a.status.as_ref().unwrap().conditions;
    let active = conds.iter().find(|c| c.type_ == "ScalingActive").unwrap();
    assert_eq!((active.status.as_str(), active.reason.as_str()), ("True", "ValidMetricFound"));
    assert!(conds.iter().any(|c| c.type_ == "Ready"), "the validation controller's condition is kept");
    let metrics = a.status.as_ref().unwrap().horizontal.as_ref().unwrap().current_metrics.clone().unwrap();
    assert_eq!(metrics[0].resource.as_ref().unwrap().current.average_utilization, Some(400));
    assert_eq!(deploys.get("web").await.unwrap().spec.unwrap().replicas, Some(1), "Recommend never scales");

    // Auto: the same decision is acted on, with an Event.
    let patch = json!({"spec": {"mode": "Auto"}});
    autoscalers.patch("web", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    eventually("the Deployment scaled", || async {
        deploys.get("web").await.unwrap().spec.unwrap().replicas.unwrap_or(0) >= 4
    })
    .await;
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    eventually("a SuccessfulRescale event", || async {
        let list = events.list(&ListParams::default()).await.unwrap();
        list.items.iter().any(|e| e.reason.as_deref() == Some("SuccessfulRescale"))
    })
    .await;
    // The status patch of the cycle that rescaled may land after its Event.
    eventually("status with the rescale and its history", || async {
        let a = autoscalers.get("web").await.unwrap();
        let h = a.status.unwrap().horizontal.unwrap();
        h.last_scale_time.is_some() && h.history.is_some_and(|h| !h.recommendations.is_empty())
    })
    .await;

    t.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_publishes_but_never_scales() {
    let t = setup("Auto", true, cpu_50(), "dry-run").await;
    let deploys: Api<Deployment> = Api::namespaced(t.client.clone(), "default");
    let autoscalers: Api<Autoscaler> = Api::namespaced(t.client.clone(), "default");
    published(&autoscalers).await;
    // Several more sync periods: still one replica.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(deploys.get("web").await.unwrap().spec.unwrap().replicas, Some(1));
    t.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_and_object_metrics_scale_through_the_metrics_apis() {
    let metrics = json!([
        {"type": "External", "external": {"metric": {"name": "queue_depth", "selector": {"matchLabels": {"queue": "jobs"}}},
            "target": {"type": "AverageValue", "averageValue": "30"}}},
        {"type": "Object", "object": {"describedObject": {"apiVersion": "v1", "kind": "Service", "name": "front"},
            "metric": {"name": "hits"}, "target": {"type": "Value", "value": "100"}}}
    ]);
    let t = setup("Auto", false, metrics, "external").await;
    let labels = |q: &str| BTreeMap::from([("queue".to_owned(), q.to_owned())]);
    // 90 jobs at 30 per replica → 3; the other queue's series is not selected.
    t.sim.cluster.set_external_metric(
        "default",
        "queue_depth",
        vec![(labels("jobs"), "90".into()), (labels("mail"), "900".into())],
    );
    // 50 hits against a 100 target at 1 replica asks for fewer, so the queue decides.
    t.sim.cluster.set_custom_metric("default", "services", "front", "hits", "50");
    let deploys: Api<Deployment> = Api::namespaced(t.client.clone(), "default");
    let autoscalers: Api<Autoscaler> = Api::namespaced(t.client.clone(), "default");
    eventually("scaled to 3 by the queue", || async {
        deploys.get("web").await.unwrap().spec.unwrap().replicas == Some(3)
    })
    .await;
    // Once the three replicas exist, each has 30 of the 90 jobs.
    eventually("status shows both metrics at 3 replicas", || async {
        let a = autoscalers.get("web").await.unwrap();
        let h = a.status.and_then(|s| s.horizontal);
        h.and_then(|h| h.current_metrics).is_some_and(|m| {
            m.len() == 2
                && m[0].external.as_ref().and_then(|e| e.current.average_value.as_ref()).is_some_and(|v| v.0 == "30")
        })
    })
    .await;
    let h = autoscalers.get("web").await.unwrap().status.unwrap().horizontal.unwrap();
    let m = h.current_metrics.unwrap();
    assert_eq!(m[0].external.as_ref().unwrap().current.average_value.as_ref().unwrap().0, "30");
    assert_eq!(m[1].object.as_ref().unwrap().current.value.as_ref().unwrap().0, "50");
    let explanation = h.explanation.unwrap();
    assert!(explanation[0].starts_with("queue_depth: "), "{explanation:?}");

    // The external metric disappears: the metric fails with upstream's reason, and a broken
    // metric blocks the scale-down the Object metric alone would make.
    t.sim.cluster.set_external_metric("default", "queue_depth", vec![]);
    eventually("FailedGetExternalMetric", || async {
        let a = autoscalers.get("web").await.unwrap();
        a.status.unwrap().conditions.iter().any(|c| c.type_ == "ScalingActive" && c.reason == "FailedGetExternalMetric")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(deploys.get("web").await.unwrap().spec.unwrap().replicas, Some(3));
    t.finish().await;
}
