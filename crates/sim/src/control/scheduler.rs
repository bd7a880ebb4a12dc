//! The simulated kube-scheduler: filters nodes by readiness, cordon, taints and tolerations,
//! nodeSelector, required node affinity and resource fit (cpu, memory, pods), scores the rest by
//! least allocation, and binds; a pod that fits nowhere gets `PodScheduled=False/Unschedulable`
//! with upstream's "0/N nodes are available" message, which node autoscalers react to.
//! Not modelled: inter-pod affinity, topology spread and preemption.

use super::{Ctx, event, is_ready, key, name_of, ns_of};
use crate::store::{Target, WriteOptions};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};

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

pub fn node_selector_matches(spec: &Value, node: &Value) -> bool {
    let labels = &node["metadata"]["labels"];
    let selector_ok = spec["nodeSelector"].as_object().into_iter().flatten().all(|(k, v)| labels[k] == *v);
    let terms =
        &spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"];
    let affinity_ok = match terms.as_array() {
        Some(ts) if !ts.is_empty() => ts.iter().any(|t| {
            t["matchExpressions"].as_array().into_iter().flatten().all(|e| expression_matches(e, labels))
                && t["matchFields"].as_array().into_iter().flatten().all(|e| {
                    e["key"] == "metadata.name"
                        && expression_matches(e, &json!({"metadata.name": node["metadata"]["name"]}))
                })
        }),
        _ => true,
    };
    selector_ok && affinity_ok
}

fn expression_matches(e: &Value, labels: &Value) -> bool {
    let key = e["key"].as_str().unwrap_or_default();
    let v = labels[key].as_str();
    let values: Vec<&str> = e["values"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    match e["operator"].as_str().unwrap_or_default() {
        "In" => v.is_some_and(|v| values.contains(&v)),
        "NotIn" => v.is_none_or(|v| !values.contains(&v)),
        "Exists" => v.is_some(),
        "DoesNotExist" => v.is_none(),
        "Gt" => v
            .and_then(|v| v.parse::<i64>().ok())
            .zip(values.first().and_then(|x| x.parse::<i64>().ok()))
            .is_some_and(|(a, b)| a > b),
        "Lt" => v
            .and_then(|v| v.parse::<i64>().ok())
            .zip(values.first().and_then(|x| x.parse::<i64>().ok()))
            .is_some_and(|(a, b)| a < b),
        _ => false,
    }
}

/// Whether the pod tolerates the node's NoSchedule/NoExecute taints (and, for DaemonSets, the
/// standard node-condition taints they tolerate automatically).
pub fn tolerates(spec: &Value, node: &Value, daemon: bool) -> bool {
    untolerated(spec, node, daemon).is_none()
}

fn untolerated(spec: &Value, node: &Value, daemon: bool) -> Option<Value> {
    let tolerations = spec["tolerations"].as_array().cloned().unwrap_or_default();
    node["spec"]["taints"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|t| {
            let effect = t["effect"].as_str().unwrap_or_default();
            if effect == "PreferNoSchedule" {
                return false;
            }
            if daemon && t["key"].as_str().is_some_and(|k| k.starts_with("node.kubernetes.io/")) {
                return false;
            }
            !tolerations.iter().any(|tol| {
                let key_ok = tol["key"].is_null() && tol["operator"] == "Exists" || tol["key"] == t["key"];
                let op_ok = tol["operator"] == "Exists"
                    || tol["value"].as_str().unwrap_or_default() == t["value"].as_str().unwrap_or_default();
                let effect_ok = tol["effect"].is_null() || tol["effect"] == t["effect"] || tol["effect"] == "";
                key_ok && op_ok && effect_ok
            })
        })
        .cloned()
}

pub fn allocatable(node: &Value) -> (i128, i128, i128) {
    let a = &node["status"]["allocatable"];
    (quantity_milli(&a["cpu"]), quantity_milli(&a["memory"]) / 1000, quantity_milli(&a["pods"]) / 1000)
}

pub fn schedule(ctx: &mut Ctx<'_>) {
    let pods = ctx.store.all(&key("", "pods"), None);
    let nodes = ctx.store.all(&key("", "nodes"), None);
    let Some(pod_rt) = ctx.rt("", "v1", "pods") else { return };
    // Usage per node from pods already bound and not finished.
    let mut used: HashMap<String, (i128, i128, i128)> = HashMap::new();
    for p in &pods {
        let Some(n) = p["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()) else { continue };
        if matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed")) {
            continue;
        }
        let (c, m) = pod_requests(&p["spec"]);
        let e = used.entry(n.to_owned()).or_default();
        e.0 += c;
        e.1 += m;
        e.2 += 1;
    }
    let mut pending: Vec<_> = pods
        .iter()
        .filter(|p| {
            p["spec"]["nodeName"].as_str().is_none_or(str::is_empty) && p["metadata"]["deletionTimestamp"].is_null()
        })
        .filter(|p| p["spec"]["schedulerName"].as_str().is_none_or(|s| s == "default-scheduler"))
        .filter(|p| p["spec"]["schedulingGates"].as_array().is_none_or(Vec::is_empty))
        .collect();
    pending.sort_by_key(|p| {
        (
            std::cmp::Reverse(p["spec"]["priority"].as_i64().unwrap_or(0)),
            p["metadata"]["creationTimestamp"].as_str().unwrap_or_default().to_owned(),
        )
    });
    for p in pending {
        let (cpu, mem) = pod_requests(&p["spec"]);
        let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
        let mut best: Option<(f64, String)> = None;
        for n in &nodes {
            let name = name_of(n);
            let mut fail = |r: String| *reasons.entry(r).or_default() += 1;
            if !n["metadata"]["deletionTimestamp"].is_null() || !is_ready(n) {
                fail("node(s) were not ready".into());
                continue;
            }
            if n["spec"]["unschedulable"] == true {
                fail("node(s) were unschedulable".into());
                continue;
            }
            if let Some(t) = untolerated(&p["spec"], n, false) {
                let v = t["value"].as_str().unwrap_or_default();
                fail(format!("node(s) had untolerated taint {{{}: {v}}}", t["key"].as_str().unwrap_or_default()));
                continue;
            }
            if !node_selector_matches(&p["spec"], n) {
                fail("node(s) didn't match Pod's node affinity/selector".into());
                continue;
            }
            let (ac, am, ap) = allocatable(n);
            let (uc, um, up) = used.get(&name).copied().unwrap_or_default();
            let mut fits = true;
            if up + 1 > ap {
                fail("Too many pods".into());
                fits = false;
            }
            if uc + cpu > ac {
                fail("Insufficient cpu".into());
                fits = false;
            }
            if um + mem > am {
                fail("Insufficient memory".into());
                fits = false;
            }
            if !fits {
                continue;
            }
            // LeastAllocated: prefer the node with the most free share after placement.
            let free = |total: i128, u: i128| if total > 0 { (total - u) as f64 / total as f64 } else { 0.0 };
            let score = (free(ac, uc + cpu) + free(am, um + mem)) / 2.0;
            if best.as_ref().is_none_or(|(s, bn)| score > *s || (score == *s && name < *bn)) {
                best = Some((score, name));
            }
        }
        let pod_name = name_of(p);
        let ns = ns_of(p);
        let t = Target::new(&pod_rt, Some(&ns), Some(&pod_name));
        match best {
            Some((_, node)) => {
                if ctx.store.bind(&ns, &pod_name, &json!({"target": {"name": node}})).is_ok() {
                    let e = used.entry(node.clone()).or_default();
                    e.0 += cpu;
                    e.1 += mem;
                    e.2 += 1;
                    let cond = json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": crate::store::ts(ctx.now)});
                    set_condition(ctx, &t, cond);
                    event(ctx, p, "Normal", "Scheduled", &format!("Successfully assigned {ns}/{pod_name} to {node}"));
                }
            }
            None => {
                let mut parts: Vec<String> = reasons.iter().map(|(r, n)| format!("{n} {r}")).collect();
                parts.sort();
                let msg = if nodes.is_empty() {
                    "no nodes available to schedule pods".to_owned()
                } else {
                    format!(
                        "0/{} nodes are available: {}. preemption: 0/{} nodes are available: {} No preemption victims found for incoming pod.",
                        nodes.len(),
                        parts.join(", "),
                        nodes.len(),
                        nodes.len()
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
    fn requests_and_affinity() {
        let spec = json!({"containers": [{"resources": {"requests": {"cpu": "250m", "memory": "64Mi"}}}, {"resources": {"requests": {"cpu": "0.5"}}}],
                          "initContainers": [{"resources": {"requests": {"cpu": "1"}}}]});
        assert_eq!(pod_requests(&spec), (1000, 64 * 1024 * 1024));
        let node = json!({"metadata": {"name": "n", "labels": {"zone": "a", "size": "4"}}, "spec": {"taints": [{"key": "gpu", "value": "x", "effect": "NoSchedule"}]}});
        let pod = json!({"nodeSelector": {"zone": "a"}, "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "size", "operator": "Gt", "values": ["2"]}]}]}}}});
        assert!(node_selector_matches(&pod, &node));
        assert!(!tolerates(&pod, &node, false));
        let tolerant = json!({"tolerations": [{"key": "gpu", "operator": "Exists"}]});
        assert!(tolerates(&tolerant, &node, false));
        assert!(!node_selector_matches(&json!({"nodeSelector": {"zone": "b"}}), &node));
    }
}
