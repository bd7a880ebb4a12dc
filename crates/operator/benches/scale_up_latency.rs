//! `cargo xtask bench nodes` (or `cargo bench -p omniscale-operator --bench scale_up_latency`):
//! decision latency of the node shell — from a pod turning unschedulable to the
//! `SetDesiredCapacity` call — on the simulated cluster at real speed (1×), with the
//! unmodified operator in this process talking to the simulated API server over HTTP.
//!
//! Each trial creates one Deployment whose single pod (1500m) fits no existing or upcoming
//! node, so every trial needs one new node of the group. The start of a trial is when a watch
//! on pods (like the operator's own) first sees the pod with `PodScheduled=False,
//! reason=Unschedulable`; the end is when the simulated cloud records the desired-capacity call.
//! Trials are 400 ms apart (sequential, so each measures one decision). Prints one JSON line.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../tests/support/mod.rs"]
mod support;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use omniscale_api::NodePool;
use omniscale_operator::cloud::SimCloud;
use omniscale_sim::control::World;
use omniscale_sim::runtime::{self, SimOptions};
use omniscale_sim::world::cloud::{AutoScalingGroupSpec, Cloud, CloudConfig};
use serde_json::json;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const TRIALS: usize = 60;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    omniscale_operator::install_crypto_provider();
    if let Ok(filter) = std::env::var("OMNISCALE_LOG") {
        tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::new(filter)).init();
    }
    let mut cloud = Cloud::new(CloudConfig { boot_delay_seconds: 100_000.0, ..CloudConfig::default() });
    let mut spec = AutoScalingGroupSpec::new("bench-ng", 0, 1000, &["t3.small"]);
    spec.desired_capacity = Some(0);
    spec.tags.insert("k8s.io/cluster-autoscaler/enabled".into(), "true".into());
    spec.tags.insert("k8s.io/cluster-autoscaler/bench".into(), "owned".into());
    cloud.create_auto_scaling_group(spec, 0.0).unwrap();
    let mut world = World::default();
    world.cloud = Some(cloud);
    let sim = runtime::start(SimOptions { speed: 1.0, ..SimOptions::default() }, world).await.unwrap();
    let client = support::prepared_client(&sim).await;
    let pool: NodePool = serde_json::from_value(json!({
        "apiVersion": "omniscale.dev/v1alpha1", "kind": "NodePool", "metadata": {"name": "bench"},
        "spec": {"autoScalingGroup": {"discovery": {"clusterName": "bench"}}}
    }))
    .unwrap();
    Api::<NodePool>::all(client.clone()).create(&PostParams::default(), &pool).await.unwrap();

    let sim_cloud = Arc::new(SimCloud::new(sim.world.clone(), sim.cluster.shared.clock.clone()));
    let operator =
        support::Operator::start(&sim, "bench-latency", &["--max-node-provision-time", "10h"], sim_cloud.clone());

    // When each pod was first seen unschedulable, by the deployment it belongs to.
    let seen: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let seen_w = seen.clone();
    tokio::spawn(watcher(pods, watcher::Config::default()).applied_objects().for_each(move |p| {
        if let Ok(p) = p {
            if omniscale_nodes::input::unschedulable(&p) {
                let app = p.metadata.labels.as_ref().and_then(|l| l.get("app")).cloned().unwrap_or_default();
                seen_w.lock().unwrap().entry(app).or_insert_with(Instant::now);
            }
        }
        async {}
    }));
    // Let the operator become leader and sync.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let mut latencies = Vec::new();
    for i in 0..TRIALS {
        let app = format!("trial-{i}");
        let d: Deployment = serde_json::from_value(json!({
            "metadata": {"name": app},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": app}},
                     "template": {"metadata": {"labels": {"app": app}},
                                  "spec": {"containers": [{"name": "c", "image": "busybox",
                                           "resources": {"requests": {"cpu": "1500m", "memory": "256Mi"}}}]}}}
        }))
        .unwrap();
        deployments.create(&PostParams::default(), &d).await.unwrap();
        let want = (i + 1) as u32;
        let deadline = Instant::now() + Duration::from_secs(20);
        let called = loop {
            let hit = sim_cloud.calls.lock().unwrap().iter().find(|(_, _, d)| *d == want).map(|(t, ..)| *t);
            if let Some(t) = hit {
                break t;
            }
            assert!(Instant::now() < deadline, "trial {i}: no SetDesiredCapacity({want}) within 20 s");
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let start = loop {
            if let Some(t) = seen.lock().unwrap().get(&app).copied() {
                break t;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        latencies.push(called.saturating_duration_since(start).as_secs_f64() * 1000.0);
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    latencies.sort_by(f64::total_cmp);
    let pct = |q: f64| latencies[((q * latencies.len() as f64).ceil() as usize).clamp(1, latencies.len()) - 1];
    println!(
        "{}",
        json!({"bench": "scale_up_latency", "trials": TRIALS, "p50_ms": pct(0.5), "p90_ms": pct(0.9),
               "p99_ms": pct(0.99), "max_ms": latencies.last()})
    );
    operator.stop().await;
    sim.shutdown().await;
}
