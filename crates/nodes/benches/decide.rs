//! `cargo xtask bench nodes-engine` (or `cargo bench -p omniscale-nodes --bench decide`): one
//! loop of the Auto Scaling Group engine at Cluster Autoscaler's published test size (1,000
//! nodes, 30 pods each), one JSON object per line. `build` (objects → snapshot) and `decide`
//! (the whole plan) are timed apart: the first is what the shell pays per loop for converting
//! its caches, the second is the engine.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Instant;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1 as core;
use omniscale_api::nodepool::NodePool;
use omniscale_nodes::history::History;
use omniscale_nodes::input::{Objects, Settings, build};
use omniscale_nodes::{Instance, InstanceState, InstanceTypeInfo, NodeGroup, decide};
use serde_json::{Value, json};

const GROUPS: usize = 10;
const NODES: usize = 1000;
const PODS_PER_NODE: usize = 30;
const ZONES: [&str; 3] = ["us-east-1a", "us-east-1b", "us-east-1c"];

fn m5_2xlarge() -> InstanceTypeInfo {
    InstanceTypeInfo {
        name: "m5.2xlarge".into(),
        vcpu: 8,
        memory_mib: 32768,
        gpus: 0,
        arch: "amd64".into(),
        max_pods: Some(58),
    }
}

/// Ten groups of 100 running instances, one zone each in turn.
fn groups() -> Vec<NodeGroup> {
    (0..GROUPS)
        .map(|g| NodeGroup {
            name: format!("ng-{g}"),
            min_size: 1,
            max_size: 200,
            desired: (NODES / GROUPS) as u32,
            instances: (0..NODES / GROUPS)
                .map(|k| Instance {
                    id: format!("i-{g}-{k}"),
                    zone: ZONES[g % 3].into(),
                    instance_type: Some("m5.2xlarge".into()),
                    state: InstanceState::Running,
                })
                .collect(),
            instance_types: vec![m5_2xlarge()],
            zones: vec![ZONES[g % 3].into()],
            tags: [
                ("k8s.io/cluster-autoscaler/enabled".to_owned(), "true".to_owned()),
                ("k8s.io/cluster-autoscaler/bench".to_owned(), "owned".to_owned()),
            ]
            .into(),
            last_failed_activity: None,
        })
        .collect()
}

fn nodes() -> Vec<core::Node> {
    let a = omniscale_nodes::template::estimated_allocatable(&m5_2xlarge());
    (0..NODES)
        .map(|i| {
            let (g, k) = (i / (NODES / GROUPS), i % (NODES / GROUPS));
            let zone = ZONES[g % 3];
            let name = format!("ip-{g}-{k}");
            serde_json::from_value(json!({
                "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name,
                    "topology.kubernetes.io/zone": zone, "node.kubernetes.io/instance-type": "m5.2xlarge"}},
                "spec": {"providerID": format!("aws:///{zone}/i-{g}-{k}")},
                "status": {
                    "allocatable": {"cpu": format!("{}m", a.cpu), "memory": format!("{}", a.memory), "pods": format!("{}", a.pods)},
                    "capacity": {"cpu": "8", "memory": "32Gi", "pods": format!("{}", a.pods)},
                    "conditions": [{"type": "Ready", "status": "True"}]}
            }))
            .unwrap()
        })
        .collect()
}

/// A ReplicaSet pod of deployment `d` (of 100); bound to `node`, else unschedulable.
fn pod(i: usize, d: usize, cpu_m: usize, node: Option<&str>) -> core::Pod {
    let mut v = json!({
        "metadata": {"name": format!("p{i}"), "namespace": "default", "labels": {"app": format!("app-{d}")},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": format!("app-{d}"),
                "uid": format!("rs-{d}"), "controller": true}]},
        "spec": {"containers": [{"name": "c", "image": "i",
            "resources": {"requests": {"cpu": format!("{cpu_m}m"), "memory": format!("{}Mi", 128 + (d % 3) * 128)}}}]},
        "status": {"phase": "Running"}
    });
    match node {
        Some(n) => v["spec"]["nodeName"] = json!(n),
        None => {
            v["status"]["phase"] = json!("Pending");
            v["status"]["conditions"] = json!([{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/1000 nodes"}])
        }
    }
    serde_json::from_value(v).unwrap()
}

/// 30 pods on every node, `cpu_m` millicores each (plus a little per deployment), and
/// `pending` unschedulable pods of the same deployments asking for 2 cpu (more than any node
/// has left, so each needs a new one).
fn pods(cpu_m: usize, pending: usize) -> Vec<core::Pod> {
    let mut out = Vec::with_capacity(NODES * PODS_PER_NODE + pending);
    for i in 0..NODES * PODS_PER_NODE {
        let (node, d) = (i / PODS_PER_NODE, i % 100);
        let name = format!("ip-{}-{}", node / (NODES / GROUPS), node % (NODES / GROUPS));
        out.push(pod(i, d, cpu_m + (d % 4) * 10, Some(&name)));
    }
    for j in 0..pending {
        out.push(pod(NODES * PODS_PER_NODE + j, j % 100, 2000, None));
    }
    out
}

fn pool() -> NodePool {
    serde_json::from_value(json!({"apiVersion": "omniscale.dev/v1alpha1", "kind": "NodePool",
        "metadata": {"name": "bench"}, "spec": {"autoScalingGroup": {"discovery": {"clusterName": "bench"}}}}))
    .unwrap()
}

fn at(s: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + s).unwrap()
}

/// Best of `runs`: (build ms, decide ms, what the plan did).
fn measure(runs: usize, cpu_m: usize, pending: usize, history_from: Option<i64>, now: i64) -> (f64, f64, Value) {
    let (nodes, pods, pools) = (nodes(), pods(cpu_m, pending), vec![pool()]);
    let objects = Objects { nodes: &nodes, pods: &pods, pdbs: &[], daemonsets: &[], node_pools: &pools };
    let settings = Settings::default();
    // A scale-down needs nodes unneeded for a while: one earlier loop starts their timers.
    let history = match history_from {
        Some(t) => decide(&build(objects, groups(), &[], None), &settings, &History::default(), at(t)).history,
        None => History::default(),
    };
    let mut best = (f64::MAX, f64::MAX, Value::Null);
    for _ in 0..runs {
        let t = Instant::now();
        let input = build(objects, groups(), &[], None);
        let build_ms = t.elapsed().as_secs_f64() * 1000.0;
        let t = Instant::now();
        let plan = decide(&input, &settings, &history, at(now));
        let decide_ms = t.elapsed().as_secs_f64() * 1000.0;
        let added: u32 = plan.scale_up.iter().map(|r| r.to - r.from).sum();
        let outcome = json!({"nodes_added": added, "triggered": plan.triggered.len(),
            "unneeded": plan.unneeded.len(), "removed": plan.remove.len()});
        if decide_ms < best.1 {
            best = (build_ms.min(best.0), decide_ms, outcome);
        }
    }
    best
}

fn line(bench: &str, pending: usize, (build_ms, decide_ms, outcome): (f64, f64, Value)) {
    let r = |x: f64| (x * 1000.0).round() / 1000.0;
    println!(
        "{}",
        json!({"bench": bench, "nodes": NODES, "pods": NODES * PODS_PER_NODE + pending, "pending": pending,
               "groups": GROUPS, "build_ms": r(build_ms), "decide_ms": r(decide_ms), "outcome": outcome})
    );
}

fn main() {
    let only = std::env::args().nth(1).filter(|a| !a.starts_with('-'));
    let want = |name: &str| only.as_deref().is_none_or(|o| name.contains(o));
    // Busy nodes (about 80% cpu): nothing to remove, every pending pod needs a new node.
    if want("scale-up") {
        for pending in [0, 100, 1000] {
            line("scale-up", pending, measure(3, 200, pending, None, 0));
        }
    }
    // Quiet nodes (about 17% cpu, 26% memory) unneeded for 11 minutes: the whole scale-down path, drain
    // simulation of every candidate included.
    if want("scale-down") {
        let since = -SignedDuration::from_mins(11).as_secs();
        line("scale-down", 0, measure(3, 30, 0, Some(since), 0));
    }
}
