//! Simulated kubelets and metrics-server: start bound pods after a delay, report readiness,
//! apply in-place resizes when the node has room, finish graceful deletions, and publish
//! `metrics.k8s.io` usage from the scenario's load models.

use super::scheduler::{allocatable, pod_requests, quantity_milli};
use super::{Ctx, Timings, World, event, is_ready, key, name_of, ns_of, uid_of};
use crate::server::MetricsTable;
use crate::store::{DeleteOptions, Target, WriteOptions};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

pub fn run(ctx: &mut Ctx<'_>) {
    let Some(pod_rt) = ctx.rt("", "v1", "pods") else { return };
    let pods = ctx.store.all(&key("", "pods"), None);
    let nodes: HashMap<String, Arc<Value>> =
        ctx.store.all(&key("", "nodes"), None).into_iter().map(|n| (name_of(&n), n)).collect();
    let t = ctx.t;
    let timings = ctx.world.timings.clone();
    let now = crate::store::ts(ctx.now);
    let mut seen = HashSet::new();
    for p in &pods {
        let uid = uid_of(p);
        seen.insert(uid.clone());
        let Some(node_name) = p["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()) else { continue };
        let Some(node) = nodes.get(node_name) else { continue };
        let (ns, name) = (ns_of(p), name_of(p));
        let target = Target::new(&pod_rt, Some(&ns), Some(&name));
        if !p["metadata"]["deletionTimestamp"].is_null() {
            let since = *ctx.world.stopping_at.entry(uid.clone()).or_insert(t);
            if finished_terminating(p, since, t, &timings) {
                let _ =
                    ctx.store.delete(&target, &DeleteOptions { grace_period: Some(0), ..Default::default() }, ctx.now);
            }
            continue;
        }
        let bound = *ctx.world.bound_at.entry(uid.clone()).or_insert(t);
        let Some(r) = report(p, node, &pods, bound, t, &timings, &now) else { continue };
        let mut updated = (**p).clone();
        updated["status"] = r.status;
        if ctx
            .store
            .update(&target.clone().with_subresource("status"), updated, &WriteOptions::manager("kubelet"), ctx.now)
            .is_ok()
            && r.started
        {
            event(ctx, p, "Normal", "Started", "Started container");
        }
    }
    ctx.world.bound_at.retain(|u, _| seen.contains(u));
    ctx.world.stopping_at.retain(|u, _| seen.contains(u));
}

/// Whether a terminating pod, first seen terminating at `since`, is gone from its node at `t`:
/// its grace period (capped at [`Timings::pod_stop`]) has passed.
pub fn finished_terminating(p: &Value, since: f64, t: f64, timings: &Timings) -> bool {
    let grace = p["metadata"]["deletionGracePeriodSeconds"].as_f64().unwrap_or(0.0);
    t - since >= grace.min(timings.pod_stop)
}

/// What a kubelet writes for a pod.
#[derive(Debug)]
pub struct Report {
    /// The pod's whole new `status`.
    pub status: Value,
    /// The containers started with this report (the kubelet's `Started` event).
    pub started: bool,
}

/// The status the kubelet of `node` reports at `t` for `p`, which it first saw bound at
/// `bound` (`pods`: everything, for in-place resize room): containers start after
/// [`Timings::pod_start`] and become ready [`Timings::pod_ready`] later; resizes are applied
/// when the node has room. `None` before the containers start, for finished pods, and when
/// nothing changed. `now` is the RFC 3339 time the report carries.
pub fn report(
    p: &Value,
    node: &Value,
    pods: &[Arc<Value>],
    bound: f64,
    t: f64,
    timings: &Timings,
    now: &str,
) -> Option<Report> {
    let uid = uid_of(p);
    let phase = p["status"]["phase"].as_str().unwrap_or("Pending");
    if matches!(phase, "Succeeded" | "Failed") {
        return None;
    }
    let started = t - bound >= timings.pod_start;
    let ready = t - bound >= timings.pod_start + timings.pod_ready;
    if !started {
        return None;
    }
    let mut status = p["status"].clone();
    if phase != "Running" {
        status["phase"] = json!("Running");
        status["startTime"] = json!(now);
        status["hostIP"] = node["status"]["addresses"][0]["address"].clone();
        status["hostIPs"] = json!([{"ip": node["status"]["addresses"][0]["address"]}]);
        status["podIP"] = json!(pod_ip(&uid));
        status["podIPs"] = json!([{"ip": pod_ip(&uid)}]);
    }
    let containers = p["spec"]["containers"].as_array().cloned().unwrap_or_default();
    let old_statuses = status["containerStatuses"].as_array().cloned().unwrap_or_default();
    let statuses: Vec<Value> = containers
        .iter()
        .map(|c| {
            let prev = old_statuses.iter().find(|s| s["name"] == c["name"]);
            let resources = prev.map(|s| s["resources"].clone()).filter(|r| !r.is_null()).unwrap_or_else(|| c["resources"].clone());
            let started_at = prev.map(|s| s["state"]["running"]["startedAt"].clone()).filter(|s| !s.is_null()).unwrap_or(json!(now));
            json!({"name": c["name"], "image": c["image"], "imageID": format!("sim://{}", c["image"].as_str().unwrap_or_default()),
                   "containerID": format!("containerd://{}", uid), "ready": ready, "started": true, "restartCount": 0,
                   "state": {"running": {"startedAt": started_at}},
                   "resources": resources, "allocatedResources": resources["requests"]})
        })
        .collect();
    status["containerStatuses"] = Value::Array(statuses);
    let cond = |ty: &str, ok: bool| json!({"type": ty, "status": if ok { "True" } else { "False" }, "lastProbeTime": null, "lastTransitionTime": now});
    let mut conds: Vec<Value> = status["conditions"].as_array().cloned().unwrap_or_default();
    for (ty, ok) in [
        ("Initialized", true),
        ("PodReadyToStartContainers", true),
        ("ContainersReady", ready),
        ("Ready", ready),
        ("PodScheduled", true),
    ] {
        let c = cond(ty, ok);
        match conds.iter_mut().find(|x| x["type"] == ty) {
            Some(x) if x["status"] == c["status"] => {}
            Some(x) => *x = c,
            None => conds.push(c),
        }
    }
    status["conditions"] = Value::Array(conds);
    let mut updated = p.clone();
    updated["status"] = status;
    apply_resize(&mut updated, node, pods);
    (updated["status"] != p["status"]).then(|| Report { status: updated["status"].take(), started: phase != "Running" })
}

fn pod_ip(uid: &str) -> String {
    let h = uid.bytes().fold(7u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
    format!("10.244.{}.{}", (h >> 8) % 250 + 1, h % 250 + 1)
}

/// In-place resize (1.33 semantics): when the spec's resources differ from what the kubelet
/// runs, apply them if the node has room, else mark the pod `PodResizePending` (Infeasible if
/// it could never fit, Deferred if it could once others leave).
fn apply_resize(pod: &mut Value, node: &Value, pods: &[Arc<Value>]) {
    let spec_res: Vec<Value> =
        pod["spec"]["containers"].as_array().into_iter().flatten().map(|c| c["resources"].clone()).collect();
    let running: Vec<Value> =
        pod["status"]["containerStatuses"].as_array().into_iter().flatten().map(|c| c["resources"].clone()).collect();
    let mut conds: Vec<Value> = pod["status"]["conditions"].as_array().cloned().unwrap_or_default();
    conds.retain(|c| c["type"] != "PodResizePending" && c["type"] != "PodResizeInProgress");
    if spec_res == running {
        pod["status"]["conditions"] = Value::Array(conds);
        return;
    }
    let (want_cpu, want_mem) = pod_requests(&pod["spec"]);
    let (ac, am, _) = allocatable(node);
    let node_name = node["metadata"]["name"].as_str().unwrap_or_default();
    let uid = pod["metadata"]["uid"].clone();
    let (oc, om) = pods
        .iter()
        .filter(|p| p["spec"]["nodeName"] == node_name && p["metadata"]["uid"] != uid)
        .filter(|p| !matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed")))
        .map(|p| pod_requests(&p["spec"]))
        .fold((0, 0), |(a, b), (c, m)| (a + c, b + m));
    let now = pod["status"]["startTime"].clone();
    if want_cpu > ac || want_mem > am {
        conds.push(json!({"type": "PodResizePending", "status": "True", "reason": "Infeasible", "message": format!("Node didn't have enough capacity: requested {want_cpu}m cpu, capacity {ac}m"), "lastProbeTime": null, "lastTransitionTime": now}));
    } else if oc + want_cpu > ac || om + want_mem > am {
        conds.push(json!({"type": "PodResizePending", "status": "True", "reason": "Deferred", "message": "Node didn't have enough resource: cpu or memory", "lastProbeTime": null, "lastTransitionTime": now}));
    } else if let Some(list) = pod["status"]["containerStatuses"].as_array_mut() {
        for (i, s) in list.iter_mut().enumerate() {
            if let Some(r) = spec_res.get(i) {
                s["resources"] = r.clone();
                s["allocatedResources"] = r["requests"].clone();
            }
        }
    }
    pod["status"]["conditions"] = Value::Array(conds);
}

/// The workload (Deployment, StatefulSet, DaemonSet or bare ReplicaSet) a pod belongs to.
fn workload_of(pod: &Value, rs_owner: &HashMap<String, (String, String)>) -> Option<(String, String)> {
    let r = pod["metadata"]["ownerReferences"].as_array()?.iter().find(|r| r["controller"] == true)?;
    let ns = ns_of(pod);
    match r["kind"].as_str()? {
        "ReplicaSet" => {
            rs_owner.get(r["uid"].as_str()?).cloned().or_else(|| Some((ns, r["name"].as_str()?.to_owned())))
        }
        _ => Some((ns, r["name"].as_str()?.to_owned())),
    }
}

/// metrics-server: per-container usage of running pods and per-node totals.
pub fn metrics(ctx: &mut Ctx<'_>) {
    let pods = ctx.store.all(&key("", "pods"), None);
    let replicasets = ctx.store.all(&key("apps", "replicasets"), None);
    let nodes = ctx.store.all(&key("", "nodes"), None);
    let now = crate::store::ts(ctx.now);
    refresh_metrics(ctx.metrics, &pods, &replicasets, &nodes, ctx.world, ctx.t, &now);
}

/// Recomputes what metrics-server and the custom/external metrics adapters serve from the
/// pods, ReplicaSets (for a pod's Deployment) and nodes, and the world's load models, at `t`.
/// The values tests fix (`fixed_*`) are kept.
pub fn refresh_metrics(
    table: &mut MetricsTable,
    pods: &[Arc<Value>],
    replicasets: &[Arc<Value>],
    nodes: &[Arc<Value>],
    world: &World,
    t: f64,
    now: &str,
) {
    let mut rs_owner: HashMap<String, (String, String)> = HashMap::new();
    for rs in replicasets {
        if let Some(d) =
            rs["metadata"]["ownerReferences"].as_array().into_iter().flatten().find(|r| r["kind"] == "Deployment")
        {
            rs_owner.insert(uid_of(rs), (ns_of(rs), d["name"].as_str().unwrap_or_default().to_owned()));
        }
    }
    let running: Vec<&Arc<Value>> = pods
        .iter()
        .filter(|p| p["status"]["phase"] == "Running" && p["metadata"]["deletionTimestamp"].is_null())
        .collect();
    let mut ready_by_workload: HashMap<(String, String), u32> = HashMap::new();
    for p in &running {
        if let Some(w) = workload_of(p, &rs_owner) {
            if is_ready(p) {
                *ready_by_workload.entry(w).or_default() += 1;
            }
        }
    }
    let mut pod_metrics = BTreeMap::new();
    let mut custom = BTreeMap::new();
    let mut node_usage: HashMap<String, (f64, f64)> = HashMap::new();
    for p in running {
        let workload = workload_of(p, &rs_owner);
        let spec =
            workload.as_ref().and_then(|(ns, n)| world.workloads.iter().find(|w| &w.namespace == ns && &w.name == n));
        let containers = p["spec"]["containers"].as_array().cloned().unwrap_or_default();
        let seed = world.seed ^ uid_of(p).bytes().fold(0u64, |h, b| h.wrapping_mul(131).wrapping_add(u64::from(b)));
        let mut out = Vec::new();
        for (i, c) in containers.iter().enumerate() {
            let cname = c["name"].as_str().unwrap_or_default();
            let limit = quantity_milli(&c["resources"]["limits"]["cpu"]);
            let limit = (limit > 0).then_some(limit as f64);
            let (mut cpu, mut mem) = (1.0, 8.0 * 1024.0 * 1024.0);
            if let Some(s) = spec {
                if let Some(u) = s.containers.get(cname) {
                    let usage = u.usage_at(t, seed.wrapping_add(i as u64));
                    cpu = usage.cpu_millis;
                    mem = usage.memory_bytes;
                } else if let (Some(load), 0) = (&s.load, i) {
                    let ready = workload.as_ref().and_then(|w| ready_by_workload.get(w)).copied().unwrap_or(0);
                    let usage = load.pod_usage(t, if is_ready(p) { ready } else { 0 }, limit);
                    cpu = usage.cpu_millis.max(1.0);
                    mem = usage.memory_bytes.max(mem);
                }
            }
            if let Some(l) = limit {
                cpu = cpu.min(l);
            }
            let node = p["spec"]["nodeName"].as_str().unwrap_or_default().to_owned();
            let e = node_usage.entry(node).or_default();
            e.0 += cpu;
            e.1 += mem;
            out.push(json!({"name": cname, "usage": {"cpu": format!("{}n", (cpu * 1e6).round() as i64), "memory": format!("{}Ki", (mem / 1024.0).round() as i64)}}));
        }
        // What a Prometheus adapter would serve for an instrumented web server: each ready pod's
        // share of its workload's request rate.
        if let (Some(load), Some(w)) = (spec.and_then(|s| s.load.as_ref()), &workload) {
            let ready = ready_by_workload.get(w).copied().unwrap_or(0);
            let rps = if is_ready(p) && ready > 0 { load.rate.rate_at(t) / f64::from(ready) } else { 0.0 };
            custom.insert(
                (ns_of(p), "pods".to_owned(), name_of(p), "requests_per_second".to_owned()),
                format!("{}m", (rps * 1000.0).round() as i64),
            );
        }
        pod_metrics.insert(
            (ns_of(p), name_of(p)),
            json!({"kind": "PodMetrics", "apiVersion": "metrics.k8s.io/v1beta1",
                   "metadata": {"name": name_of(p), "namespace": ns_of(p), "labels": p["metadata"]["labels"], "creationTimestamp": now},
                   "timestamp": now, "window": "15s", "containers": out}),
        );
    }
    let mut node_metrics = BTreeMap::new();
    for n in nodes {
        let name = name_of(n);
        let (cpu, mem) = node_usage.get(&name).copied().unwrap_or_default();
        // The node's own daemons: a little cpu and memory even when empty.
        let (cpu, mem) = (cpu + 50.0, mem + 400.0 * 1024.0 * 1024.0);
        node_metrics.insert(
            name.clone(),
            json!({"kind": "NodeMetrics", "apiVersion": "metrics.k8s.io/v1beta1",
                   "metadata": {"name": name, "labels": n["metadata"]["labels"], "creationTimestamp": now},
                   "timestamp": now, "window": "15s",
                   "usage": {"cpu": format!("{}n", (cpu * 1e6).round() as i64), "memory": format!("{}Ki", (mem / 1024.0).round() as i64)}}),
        );
    }
    let mut external: BTreeMap<(String, String), crate::server::ExternalSeries> = BTreeMap::new();
    for m in &world.external_metrics {
        let v = m.value.rate_at(t);
        external
            .entry((m.namespace.clone(), m.name.clone()))
            .or_default()
            .push((m.labels.clone(), format!("{}m", (v * 1000.0).round() as i64)));
    }
    table.pods = pod_metrics;
    table.nodes = node_metrics;
    table.custom = custom;
    table.external = external;
}
