//! The simulated kube-scheduler: filters nodes with `omniscale_cluster`'s kube-scheduler
//! predicates (readiness, cordon, taints, node affinity, host ports, resources, volume zones,
//! topology spread, inter-pod affinity), scores the rest by least allocation, and binds; a pod
//! that fits nowhere gets `PodScheduled=False/Unschedulable` with upstream's "0/N nodes are
//! available" message, which node autoscalers react to. Not modelled: preemption.

use super::{Ctx, event, is_ready, key, name_of, ns_of};
use crate::store::{Target, WriteOptions};
use omniscale_cluster::{Domains, NodeId, Snapshot};
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// Requests of a pod in (milli-cpu, bytes): the max of any init container and the sum of the
/// app containers, as the scheduler computes effective requests.
pub fn pod_requests(spec: &Value) -> (i128, i128) {
    let sum = |list: &Value, res: &str| -> i128 {
        list.as_array().into_iter().flatten().map(|c| quantity_milli(&c["resources"]["requests"][res])).sum()
    };
    let max = |list: &Value, res: &str| -> i128 {
        list.as_array()
            .into_iter()
            .flatten()
            .map(|c| quantity_milli(&c["resources"]["requests"][res]))
            .max()
            .unwrap_or(0)
    };
    let cpu = sum(&spec["containers"], "cpu").max(max(&spec["initContainers"], "cpu"));
    let mem = (sum(&spec["containers"], "memory").max(max(&spec["initContainers"], "memory"))) / 1000;
    (cpu, mem)
}

/// A quantity in milli-units; absent or malformed is zero (validation rejects malformed ones).
pub fn quantity_milli(v: &Value) -> i128 {
    match v {
        Value::String(s) => omniscale_api::quantity::Quantity::parse(s).map(|q| q.milli()).unwrap_or(0),
        Value::Number(n) => n.as_f64().map(|f| (f * 1000.0) as i128).unwrap_or(0),
        _ => 0,
    }
}

/// Which nodes each DaemonSet's pods belong on (one row per template, one column per node):
/// node name, node affinity and selector, and taints (through `omniscale_cluster`, like the
/// scheduler), with the tolerations the DaemonSet controller adds to every daemon pod; cordoned
/// nodes still run daemons. Nodes are converted once for all templates.
pub fn daemon_eligible(templates: &[&Value], nodes: &[std::sync::Arc<Value>]) -> Vec<Vec<bool>> {
    let mut snap = Snapshot::new();
    let ids: Vec<Option<NodeId>> = nodes
        .iter()
        .map(|n| {
            let node = serde_json::from_value::<k8s_openapi::api::core::v1::Node>((**n).clone()).ok()?;
            snap.add_node_object(&node).ok()
        })
        .collect();
    templates
        .iter()
        .map(|template| {
            let mut spec = template["spec"].clone();
            let mut tolerations = spec["tolerations"].as_array().cloned().unwrap_or_default();
            for key in [
                "node.kubernetes.io/not-ready",
                "node.kubernetes.io/unreachable",
                "node.kubernetes.io/disk-pressure",
                "node.kubernetes.io/memory-pressure",
                "node.kubernetes.io/pid-pressure",
                "node.kubernetes.io/unschedulable",
                "node.kubernetes.io/network-unavailable",
            ] {
                tolerations.push(json!({"key": key, "operator": "Exists"}));
            }
            spec["tolerations"] = Value::Array(tolerations);
            let pod = serde_json::from_value::<k8s_openapi::api::core::v1::Pod>(
                json!({"metadata": template["metadata"], "spec": spec}),
            );
            let Some(class) = pod.ok().and_then(|p| snap.pod_class(&p, None).ok()) else {
                return vec![false; nodes.len()];
            };
            let c = snap.constraints(class, usize::MAX);
            ids.iter()
                .map(|id| {
                    id.is_some_and(|id| {
                        let n = &snap.nodes[id as usize];
                        snap.check_static(c, &n.labels, &n.taints, false).is_ok()
                    })
                })
                .collect()
        })
        .collect()
}

pub fn allocatable(node: &Value) -> (i128, i128, i128) {
    let a = &node["status"]["allocatable"];
    (quantity_milli(&a["cpu"]), quantity_milli(&a["memory"]) / 1000, quantity_milli(&a["pods"]) / 1000)
}

/// Builds the scheduling snapshot: ready, live nodes and the pods bound to them.
fn snapshot(nodes: &[std::sync::Arc<Value>], pods: &[std::sync::Arc<Value>]) -> (Snapshot, usize) {
    let mut snap = Snapshot::new();
    let mut not_ready = 0;
    for n in nodes {
        if !n["metadata"]["deletionTimestamp"].is_null() || !is_ready(n) {
            not_ready += 1;
            continue;
        }
        let parsed = serde_json::from_value::<k8s_openapi::api::core::v1::Node>((**n).clone());
        if let Err(e) =
            parsed.map_err(|e| e.to_string()).and_then(|n| snap.add_node_object(&n).map_err(|e| e.to_string()))
        {
            tracing::warn!(node = %name_of(n), error = %e, "node left out of scheduling");
            not_ready += 1;
        }
    }
    for p in pods {
        let bound = p["spec"]["nodeName"].as_str().is_some_and(|n| !n.is_empty());
        if !bound || matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed")) {
            continue;
        }
        if let Ok(pod) = serde_json::from_value::<k8s_openapi::api::core::v1::Pod>((**p).clone()) {
            let _ = snap.add_pod_object(&pod, None);
        }
    }
    (snap, not_ready)
}

/// kube-scheduler's loop, once per step: pending pods by priority then age, filtered with
/// `omniscale_cluster`'s predicates (the ones the node engines simulate with), scored by least
/// allocation, bound or marked unschedulable with upstream's message.
pub fn schedule(ctx: &mut Ctx<'_>) {
    let pods = ctx.store.all(&key("", "pods"), None);
    let nodes = ctx.store.all(&key("", "nodes"), None);
    let Some(pod_rt) = ctx.rt("", "v1", "pods") else { return };
    let mut pending: Vec<_> = pods
        .iter()
        .filter(|p| {
            p["spec"]["nodeName"].as_str().is_none_or(str::is_empty) && p["metadata"]["deletionTimestamp"].is_null()
        })
        .filter(|p| p["spec"]["schedulerName"].as_str().is_none_or(|s| s == "default-scheduler"))
        .filter(|p| p["spec"]["schedulingGates"].as_array().is_none_or(Vec::is_empty))
        .collect();
    if pending.is_empty() {
        return;
    }
    pending.sort_by_key(|p| {
        (
            std::cmp::Reverse(p["spec"]["priority"].as_i64().unwrap_or(0)),
            p["metadata"]["creationTimestamp"].as_str().unwrap_or_default().to_owned(),
        )
    });
    let (mut snap, not_ready) = snapshot(&nodes, &pods);
    for p in pending {
        let pod_name = name_of(p);
        let ns = ns_of(p);
        let t = Target::new(&pod_rt, Some(&ns), Some(&pod_name));
        let parsed = serde_json::from_value::<k8s_openapi::api::core::v1::Pod>((**p).clone())
            .map_err(|e| e.to_string())
            .and_then(|pod| snap.add_pod_object(&pod, None).map_err(|e| e.to_string()));
        let id = match parsed {
            Ok(id) => id,
            Err(e) => {
                tracing::warn!(pod = %pod_name, error = %e, "pod cannot be scheduled: malformed");
                continue;
            }
        };
        snap.ready();
        let class = snap.pods[id as usize].class;
        let req = snap.class_of(class).requests.clone();
        let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
        if not_ready > 0 {
            reasons.insert("node(s) were not ready".into(), not_ready);
        }
        let mut best: Option<(f64, String, NodeId)> = None;
        for node in 0..snap.nodes.len() as NodeId {
            if let Err(r) = snap.check(class, usize::MAX, node, Domains::default()) {
                *reasons.entry(r.to_string()).or_default() += 1;
                continue;
            }
            // LeastAllocated: prefer the node with the most free share after placement.
            let n = &snap.nodes[node as usize];
            let free = |total: i64, u: i64| if total > 0 { (total - u) as f64 / total as f64 } else { 0.0 };
            let score = (free(n.allocatable.cpu, n.used.cpu + req.cpu)
                + free(n.allocatable.memory, n.used.memory + req.memory))
                / 2.0;
            if best.as_ref().is_none_or(|(s, bn, _)| score > *s || (score == *s && n.name < *bn)) {
                best = Some((score, n.name.clone(), node));
            }
        }
        match best {
            Some((_, node, id_node)) => {
                if ctx.store.bind(&ns, &pod_name, &json!({"target": {"name": node}})).is_ok() {
                    snap.place(id, id_node);
                    let cond = json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": crate::store::ts(ctx.now)});
                    set_condition(ctx, &t, cond);
                    event(ctx, p, "Normal", "Scheduled", &format!("Successfully assigned {ns}/{pod_name} to {node}"));
                }
            }
            None => {
                let total = nodes.len();
                let parts: Vec<String> = reasons.iter().map(|(r, n)| format!("{n} {r}")).collect();
                let msg = if total == 0 {
                    "no nodes available to schedule pods".to_owned()
                } else {
                    format!(
                        "0/{total} nodes are available: {}. preemption: 0/{total} nodes are available: {total} No preemption victims found for incoming pod.",
                        parts.join(", "),
                    )
                };
                let cond = json!({"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": msg, "lastProbeTime": null, "lastTransitionTime": crate::store::ts(ctx.now)});
                let already = p["status"]["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["type"] == "PodScheduled" && c["message"] == cond["message"]);
                if !already {
                    set_condition(ctx, &t, cond);
                    event(ctx, p, "Warning", "FailedScheduling", &msg);
                }
            }
        }
    }
}

pub(super) fn set_condition(ctx: &mut Ctx<'_>, t: &Target, cond: Value) {
    let Ok(p) = ctx.store.get(t) else { return };
    let mut p = p;
    let mut conds: Vec<Value> = p["status"]["conditions"].as_array().cloned().unwrap_or_default();
    match conds.iter_mut().find(|c| c["type"] == cond["type"]) {
        Some(c) => {
            let keep = c["status"] == cond["status"];
            let ltt = c["lastTransitionTime"].clone();
            *c = cond;
            if keep {
                c["lastTransitionTime"] = ltt;
            }
        }
        None => conds.push(cond),
    }
    p["status"]["conditions"] = Value::Array(conds);
    let _ =
        ctx.store.update(&t.clone().with_subresource("status"), p, &WriteOptions::manager("kube-scheduler"), ctx.now);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_daemon_eligibility() {
        let spec = json!({"containers": [{"resources": {"requests": {"cpu": "250m", "memory": "64Mi"}}}, {"resources": {"requests": {"cpu": "0.5"}}}],
                          "initContainers": [{"resources": {"requests": {"cpu": "1"}}}]});
        assert_eq!(pod_requests(&spec), (1000, 64 * 1024 * 1024));
        let node = |name: &str, labels: Value, taints: Value, unschedulable: bool| {
            std::sync::Arc::new(json!({"metadata": {"name": name, "labels": labels},
                "spec": {"taints": taints, "unschedulable": unschedulable}}))
        };
        let nodes = vec![
            node("plain", json!({"zone": "a"}), json!([]), false),
            node("gpu", json!({"zone": "a"}), json!([{"key": "gpu", "value": "x", "effect": "NoSchedule"}]), false),
            node(
                "cordoned",
                json!({"zone": "a"}),
                json!([{"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}]),
                true,
            ),
            node("other-zone", json!({"zone": "b"}), json!([]), false),
        ];
        let template = json!({"metadata": {"labels": {"app": "d"}}, "spec": {"nodeSelector": {"zone": "a"},
            "containers": [{"name": "c", "image": "i"}]}});
        assert_eq!(daemon_eligible(&[&template], &nodes), vec![vec![true, false, true, false]]);
        let tolerant = json!({"spec": {"tolerations": [{"key": "gpu", "operator": "Exists"}], "containers": [{"name": "c", "image": "i"}]}});
        assert_eq!(daemon_eligible(&[&tolerant], &nodes), vec![vec![true, true, true, true]]);
    }
}
