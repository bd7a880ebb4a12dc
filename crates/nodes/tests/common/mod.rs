//! Object builders for the engine tests: nodes, pods, groups and NodePools as the shell would
//! see them.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use omniscale_api::nodepool::NodePool;
use omniscale_nodes::input::{Objects, Settings};
use omniscale_nodes::{Instance, InstanceState, InstanceTypeInfo, NodeGroup};
use serde_json::json;

pub fn at(s: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + s).unwrap()
}

pub fn t3_small() -> InstanceTypeInfo {
    InstanceTypeInfo {
        name: "t3.small".into(),
        vcpu: 2,
        memory_mib: 2048,
        gpus: 0,
        arch: "amd64".into(),
        max_pods: Some(11),
    }
}

pub fn t2_small() -> InstanceTypeInfo {
    InstanceTypeInfo {
        name: "t2.small".into(),
        vcpu: 1,
        memory_mib: 2048,
        gpus: 0,
        arch: "amd64".into(),
        max_pods: Some(11),
    }
}

pub fn m5_large() -> InstanceTypeInfo {
    InstanceTypeInfo {
        name: "m5.large".into(),
        vcpu: 2,
        memory_mib: 8192,
        gpus: 0,
        arch: "amd64".into(),
        max_pods: Some(29),
    }
}

/// A group with `n` running instances `i-<name>-<k>`.
pub fn group(name: &str, min: u32, max: u32, n: u32, types: Vec<InstanceTypeInfo>) -> NodeGroup {
    NodeGroup {
        name: name.into(),
        min_size: min,
        max_size: max,
        desired: n,
        instances: (0..n).map(|k| instance(name, k, InstanceState::Running)).collect(),
        instance_types: types,
        zones: vec!["us-east-1a".into(), "us-east-1b".into()],
        tags: [
            ("k8s.io/cluster-autoscaler/enabled".to_owned(), "true".to_owned()),
            ("k8s.io/cluster-autoscaler/demo".to_owned(), "owned".to_owned()),
        ]
        .into(),
        last_failed_activity: None,
    }
}

pub fn instance(group: &str, k: u32, state: InstanceState) -> Instance {
    Instance {
        id: format!("i-{group}-{k}"),
        zone: if k.is_multiple_of(2) { "us-east-1a".into() } else { "us-east-1b".into() },
        instance_type: None,
        state,
    }
}

/// The Node an instance registers as, with EKS allocatable for the type.
pub fn node_for(group: &str, k: u32, t: &InstanceTypeInfo) -> core::Node {
    let a = omniscale_nodes::template::estimated_allocatable(t);
    let zone = if k.is_multiple_of(2) { "us-east-1a" } else { "us-east-1b" };
    let name = format!("ip-{group}-{k}");
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {
            "kubernetes.io/hostname": name, "topology.kubernetes.io/zone": zone,
            "node.kubernetes.io/instance-type": t.name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64"}},
        "spec": {"providerID": format!("aws:///{zone}/i-{group}-{k}")},
        "status": {
            "allocatable": {"cpu": format!("{}m", a.cpu), "memory": format!("{}", a.memory), "pods": format!("{}", a.pods)},
            "capacity": {"cpu": format!("{}", t.vcpu), "memory": format!("{}Mi", t.memory_mib), "pods": format!("{}", a.pods)},
            "conditions": [{"type": "Ready", "status": "True"}]}
    }))
    .unwrap()
}

/// A ReplicaSet pod; bound when `node` is given, else unschedulable.
pub fn pod(ns: &str, name: &str, cpu: &str, mem: &str, node: Option<&str>) -> core::Pod {
    let mut v = json!({
        "metadata": {"name": name, "namespace": ns, "uid": format!("uid-{ns}-{name}"), "labels": {"app": "web"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-1", "uid": "rs-1", "controller": true}]},
        "spec": {"containers": [{"name": "c", "image": "nginx", "resources": {"requests": {"cpu": cpu, "memory": mem}}}]},
        "status": {"phase": if node.is_some() { "Running" } else { "Pending" }}
    });
    match node {
        Some(n) => v["spec"]["nodeName"] = json!(n),
        None => {
            v["status"]["conditions"] = json!([{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/1 nodes are available"}])
        }
    }
    serde_json::from_value(v).unwrap()
}

pub fn annotate(mut p: core::Pod, k: &str, v: &str) -> core::Pod {
    p.metadata.annotations.get_or_insert_with(BTreeMap::new).insert(k.into(), v.into());
    p
}

pub fn pdb(ns: &str, name: &str, app: &str, allowed: i32) -> PodDisruptionBudget {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": ns},
        "spec": {"selector": {"matchLabels": {"app": app}}, "minAvailable": 1},
        "status": {"disruptionsAllowed": allowed, "currentHealthy": 0, "desiredHealthy": 0, "expectedPods": 0}
    }))
    .unwrap()
}

pub fn pool(name: &str, spec: serde_json::Value) -> NodePool {
    serde_json::from_value(json!({
        "apiVersion": "omniscale.dev/v1alpha1", "kind": "NodePool",
        "metadata": {"name": name}, "spec": spec
    }))
    .unwrap()
}

pub fn discovery_pool(name: &str, max_nodes: Option<i32>) -> NodePool {
    let mut spec = json!({"autoScalingGroup": {"discovery": {"clusterName": "demo"}}});
    if let Some(n) = max_nodes {
        spec["limits"] = json!({"nodes": n});
    }
    pool(name, spec)
}

/// Owned objects for [`Objects`].
#[derive(Default, Clone)]
pub struct World {
    pub nodes: Vec<core::Node>,
    pub pods: Vec<core::Pod>,
    pub pdbs: Vec<PodDisruptionBudget>,
    pub pools: Vec<NodePool>,
}

impl World {
    pub fn objects(&self) -> Objects<'_> {
        Objects { nodes: &self.nodes, pods: &self.pods, pdbs: &self.pdbs, daemonsets: &[], node_pools: &self.pools }
    }
}

pub fn settings() -> Settings {
    Settings::default()
}

/// Marks a node NotReady since `since`, registered at `registered` (both timestamps).
pub fn not_ready(mut n: core::Node, registered: jiff::Timestamp, since: jiff::Timestamp) -> core::Node {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    n.metadata.creation_timestamp = Some(Time(registered));
    let conditions = n.status.as_mut().unwrap().conditions.as_mut().unwrap();
    for c in conditions.iter_mut().filter(|c| c.type_ == "Ready") {
        c.status = "Unknown".into();
        c.reason = Some("NodeStatusUnknown".into());
        c.last_transition_time = Some(Time(since));
    }
    n
}
