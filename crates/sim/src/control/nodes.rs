//! Node lifecycle: static nodes from the scenario, cloud instances that register as nodes once
//! booted, nodes removed when their instance terminates, and the pod garbage collection that
//! follows a node's removal.

use super::{Ctx, key, name_of, ns_of};
use crate::store::{DeleteOptions, Target, WriteOptions};
use crate::world::common::CapacityType;
use crate::world::instance_types::{self, NodeResources};
use crate::world::scenario::Taint;
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, HashSet};

/// What a node looks like to Kubernetes; built from an instance or a static node group.
#[derive(Clone, Debug)]
pub struct NodeTemplate {
    pub name: String,
    pub provider_id: Option<String>,
    pub ip: String,
    pub instance_type: Option<String>,
    pub zone: String,
    pub capacity_type: Option<CapacityType>,
    pub arch: String,
    pub capacity: NodeResources,
    pub allocatable: NodeResources,
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<Taint>,
}

impl NodeTemplate {
    pub fn to_node(&self, region: &str, now: &str) -> Value {
        let mut labels: Map<String, Value> = Map::new();
        let mut put = |k: &str, v: &str| {
            labels.insert(k.to_owned(), json!(v));
        };
        put("kubernetes.io/hostname", &self.name);
        put("kubernetes.io/os", "linux");
        put("kubernetes.io/arch", &self.arch);
        put("topology.kubernetes.io/zone", &self.zone);
        put("topology.kubernetes.io/region", region);
        if let Some(it) = &self.instance_type {
            put("node.kubernetes.io/instance-type", it);
        }
        if let Some(ct) = self.capacity_type {
            put("karpenter.sh/capacity-type", ct.as_str());
            put("eks.amazonaws.com/capacityType", if ct == CapacityType::Spot { "SPOT" } else { "ON_DEMAND" });
        }
        for (k, v) in &self.labels {
            labels.insert(k.clone(), json!(v));
        }
        let res = |r: &NodeResources| json!({"cpu": format!("{}m", r.cpu_millis), "memory": format!("{}Ki", r.memory_bytes / 1024), "pods": r.pods.to_string(), "ephemeral-storage": "20Gi"});
        let taints: Vec<Value> = self.taints.iter().map(|t| serde_json::to_value(t).unwrap_or(Value::Null)).collect();
        let mut spec = json!({});
        if let Some(p) = &self.provider_id {
            spec["providerID"] = json!(p);
        }
        if !taints.is_empty() {
            spec["taints"] = Value::Array(taints);
        }
        let cond = |t: &str, s: &str, reason: &str, msg: &str| json!({"type": t, "status": s, "reason": reason, "message": msg, "lastHeartbeatTime": now, "lastTransitionTime": now});
        json!({"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": self.name, "labels": labels},
            "spec": spec,
            "status": {
                "capacity": res(&self.capacity), "allocatable": res(&self.allocatable),
                "conditions": [
                    cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
                    cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                    cond("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
                    cond("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
                ],
                "addresses": [{"type": "InternalIP", "address": self.ip}, {"type": "Hostname", "address": self.name}],
                "nodeInfo": {"kubeletVersion": "v1.33.0", "kubeProxyVersion": "", "architecture": self.arch, "operatingSystem": "linux",
                             "osImage": "Amazon Linux 2023", "kernelVersion": "6.1.0", "containerRuntimeVersion": "containerd://1.7.27",
                             "machineID": "", "systemUUID": "", "bootID": ""}}})
    }
}

fn region(ctx: &Ctx<'_>) -> String {
    ctx.world.cloud.as_ref().map(|c| c.region().to_owned()).unwrap_or_else(|| "us-east-1".into())
}

/// The kubelet registers a node with this taint (NoSchedule); kube-controller-manager's node
/// lifecycle controller lifts it once the node reports Ready, on its next pass. So a node that
/// joins is Ready for a moment before pods can land on it, as on a real control plane.
const NOT_READY_TAINT: &str = "node.kubernetes.io/not-ready";
/// kube-controller-manager's `--node-monitor-period` default.
const NODE_MONITOR_PERIOD: jiff::SignedDuration = jiff::SignedDuration::from_secs(5);

/// Registers a node; `joining` (an instance booted, not a scenario's node present from the
/// start) registers it with the not-ready taint.
fn create_node(ctx: &mut Ctx<'_>, tpl: &NodeTemplate, joining: bool) {
    let Some(rt) = ctx.rt("", "v1", "nodes") else { return };
    let now = crate::store::ts(ctx.now);
    let mut node = tpl.to_node(&region(ctx), &now);
    if joining {
        let taint = json!({"key": NOT_READY_TAINT, "effect": "NoSchedule", "timeAdded": now});
        match node["spec"]["taints"].as_array_mut() {
            Some(taints) => taints.push(taint),
            None => node["spec"]["taints"] = json!([taint]),
        }
    }
    match ctx.store.create(&Target::new(&rt, None, None), node, &WriteOptions::manager("kubelet"), ctx.now) {
        Ok(n) => super::event(
            ctx,
            &n,
            "Normal",
            "RegisteredNode",
            &format!("Node {} event: Registered Node {} in Controller", tpl.name, tpl.name),
        ),
        Err(e) if e.code == 409 => {}
        Err(e) => tracing::warn!(node = %tpl.name, error = %e, "registering node"),
    }
}

/// Templates of the static nodes a scenario (or `--serve --nodes`) asks for.
pub fn static_templates(groups: &[crate::world::scenario::StaticNodes]) -> Vec<NodeTemplate> {
    let mut out = Vec::new();
    let mut ip = 10u32;
    for g in groups {
        let Ok(res) = g.resources() else { continue };
        let arch = g
            .instance_type
            .as_deref()
            .and_then(instance_types::find)
            .map(|t| t.architecture.as_str())
            .unwrap_or("amd64");
        for i in 0..g.count {
            ip += 1;
            out.push(NodeTemplate {
                name: g.node_name(i),
                provider_id: None,
                ip: format!("10.0.0.{ip}"),
                instance_type: g.instance_type.clone(),
                zone: g.zone.clone().unwrap_or_else(|| "us-east-1a".into()),
                capacity_type: None,
                arch: arch.to_owned(),
                capacity: res.capacity,
                allocatable: res.allocatable,
                labels: g.labels.clone(),
                taints: g.taints.clone(),
            });
        }
    }
    out
}

/// Advances the cloud to `t` and returns what its instances look like to Kubernetes: the nodes
/// of running instances, and the node names of instances that stopped or terminated.
pub fn cloud_nodes(world: &mut super::World, t: f64) -> (Vec<NodeTemplate>, Vec<String>) {
    let mut templates = Vec::new();
    let mut gone = Vec::new();
    let asgs = &world.asgs;
    let Some(cloud) = world.cloud.as_mut() else { return (templates, gone) };
    for ev in cloud.tick(t) {
        tracing::debug!(event = ?ev, "cloud");
    }
    for inst in cloud.instances() {
        use crate::world::cloud::InstanceState;
        match inst.state {
            InstanceState::Running => {
                let Some(it) = instance_types::find(&inst.instance_type) else { continue };
                let asg = inst.asg_name.as_ref().and_then(|n| asgs.iter().find(|a| &a.name == n));
                templates.push(NodeTemplate {
                    name: inst.private_dns_name.clone(),
                    provider_id: Some(inst.provider_id.clone()),
                    ip: inst.private_ip.clone(),
                    instance_type: Some(inst.instance_type.clone()),
                    zone: inst.zone.clone(),
                    capacity_type: Some(inst.capacity_type),
                    arch: it.architecture.as_str().to_owned(),
                    capacity: it.capacity(),
                    allocatable: it.allocatable(),
                    labels: asg.map(|a| a.node_labels.clone()).unwrap_or_default(),
                    taints: asg.map(|a| a.node_taints.clone()).unwrap_or_default(),
                });
            }
            _ => gone.push(inst.private_dns_name.clone()),
        }
    }
    (templates, gone)
}

pub fn sync(ctx: &mut Ctx<'_>) {
    if !ctx.world.static_created {
        ctx.world.static_created = true;
        for tpl in static_templates(&ctx.world.static_nodes.clone()) {
            create_node(ctx, &tpl, false);
        }
    }
    let (templates, gone) = cloud_nodes(ctx.world, ctx.t);
    let existing: HashSet<String> = ctx.store.all(&key("", "nodes"), None).iter().map(|n| name_of(n)).collect();
    for tpl in templates.iter().filter(|t| !existing.contains(&t.name)) {
        create_node(ctx, tpl, true);
    }
    lift_not_ready_taints(ctx);
    if let Some(rt) = ctx.rt("", "v1", "nodes") {
        for name in gone.iter().filter(|n| existing.contains(*n)) {
            let _ = ctx.store.delete(&Target::new(&rt, None, Some(name)), &DeleteOptions::default(), ctx.now);
        }
    }
    // Pod GC: pods bound to nodes that no longer exist are removed at once.
    let nodes: HashSet<String> = ctx.store.all(&key("", "nodes"), None).iter().map(|n| name_of(n)).collect();
    let Some(pod_rt) = ctx.rt("", "v1", "pods") else { return };
    for p in ctx.store.all(&key("", "pods"), None) {
        if let Some(n) = p["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()) {
            if !nodes.contains(n) {
                let t = Target::new(&pod_rt, Some(&ns_of(&p)), Some(&name_of(&p)));
                let _ = ctx.store.delete(&t, &DeleteOptions { grace_period: Some(0), ..Default::default() }, ctx.now);
            }
        }
    }
}

/// The node lifecycle controller's pass: a Ready node's not-ready taint goes once it has been
/// on for a monitor period.
fn lift_not_ready_taints(ctx: &mut Ctx<'_>) {
    let Some(rt) = ctx.rt("", "v1", "nodes") else { return };
    for n in ctx.store.all(&key("", "nodes"), None) {
        let Some(taints) = n["spec"]["taints"].as_array().filter(|_| super::is_ready(&n)) else { continue };
        let due = |t: &Value| {
            t["key"] == NOT_READY_TAINT
                && t["timeAdded"]
                    .as_str()
                    .and_then(|s| s.parse::<jiff::Timestamp>().ok())
                    .is_none_or(|added| ctx.now.duration_since(added) >= NODE_MONITOR_PERIOD)
        };
        let kept: Vec<Value> = taints.iter().filter(|t| !due(t)).cloned().collect();
        if kept.len() == taints.len() {
            continue;
        }
        let mut node = (*n).clone();
        node["spec"]["taints"] = Value::Array(kept);
        let t = Target::new(&rt, None, Some(&name_of(&n)));
        if let Err(e) = ctx.store.update(&t, node, &WriteOptions::manager("kube-controller-manager"), ctx.now) {
            tracing::debug!(node = %name_of(&n), error = %e, "lifting the not-ready taint");
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::world::scenario::StaticNodes;

    fn taints(ctx: &Ctx<'_>, name: &str) -> Vec<String> {
        let n = ctx.store.all(&key("", "nodes"), None).into_iter().find(|n| name_of(n) == name).unwrap();
        n["spec"]["taints"].as_array().into_iter().flatten().map(|t| t["key"].as_str().unwrap().to_owned()).collect()
    }

    /// A node that joins carries the not-ready taint for one monitor period after it is Ready
    /// (a scenario's nodes present from the start do not); the node's own taints stay.
    #[test]
    fn joining_nodes_are_tainted_not_ready_until_the_lifecycle_pass() {
        let cluster = crate::server::Cluster::new(omniscale_api::clock::Clock::wall(1.0), 100);
        let mut store = cluster.store();
        let (mut world, mut metrics) = (super::super::World::default(), crate::server::MetricsTable::default());
        let start = cluster.now();
        let mut ctx = Ctx { store: &mut store, world: &mut world, metrics: &mut metrics, now: start, t: 0.0 };
        let mut nodes = StaticNodes::of_type("n", 2, "m5.large");
        nodes.taints = vec![Taint {
            key: "dedicated".into(),
            value: "db".into(),
            effect: crate::world::scenario::TaintEffect::NoSchedule,
        }];
        let tpls = static_templates(&[nodes]);
        create_node(&mut ctx, &tpls[0], false);
        create_node(&mut ctx, &tpls[1], true);
        assert_eq!(taints(&ctx, &tpls[0].name), ["dedicated"]);
        assert_eq!(taints(&ctx, &tpls[1].name), ["dedicated", NOT_READY_TAINT]);
        ctx.now = start + jiff::SignedDuration::from_secs(4);
        lift_not_ready_taints(&mut ctx);
        assert_eq!(taints(&ctx, &tpls[1].name), ["dedicated", NOT_READY_TAINT], "within the monitor period");
        ctx.now = start + NODE_MONITOR_PERIOD;
        lift_not_ready_taints(&mut ctx);
        assert_eq!(taints(&ctx, &tpls[1].name), ["dedicated"]);
    }
}
