//! Workload controllers: Deployment (rolling update and recreate), ReplicaSet, StatefulSet,
//! DaemonSet and the PodDisruptionBudget status controller. They read the store and write
//! through the same API methods clients use, with their upstream field-manager names.

use super::{Ctx, event, is_ready, key, name_of, ns_of, uid_of};
use crate::selector::LabelSelector;
use crate::store::{PatchType, Target, WriteOptions};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;

fn owned_by<'a>(objs: &'a [Arc<Value>], uid: &str) -> Vec<&'a Arc<Value>> {
    objs.iter()
        .filter(|o| {
            o["metadata"]["ownerReferences"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|r| r["uid"] == uid && r["controller"] == true)
        })
        .collect()
}

fn owner_ref(owner: &Value, kind: &str, api_version: &str) -> Value {
    json!({"apiVersion": api_version, "kind": kind, "name": owner["metadata"]["name"], "uid": owner["metadata"]["uid"],
           "controller": true, "blockOwnerDeletion": true})
}

/// FNV-1a of the template, rendered like the pod-template-hash label (safe alphabet, 10 chars).
fn template_hash(template: &Value) -> String {
    let mut t = template.clone();
    if let Some(l) = t["metadata"]["labels"].as_object_mut() {
        l.remove("pod-template-hash");
    }
    let h =
        t.to_string().bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut x = h;
    (0..10)
        .map(|_| {
            let c = ALPHABET[(x % ALPHABET.len() as u64) as usize] as char;
            x /= ALPHABET.len() as u64;
            c
        })
        .collect()
}

fn int_or_percent(v: &Value, total: i64, round_up: bool) -> i64 {
    match v {
        Value::Number(n) => n.as_i64().unwrap_or(0),
        Value::String(s) => match s.strip_suffix('%').and_then(|p| p.parse::<f64>().ok()) {
            Some(p) => {
                let x = p * total as f64 / 100.0;
                (if round_up { x.ceil() } else { x.floor() }) as i64
            }
            None => s.parse().unwrap_or(0),
        },
        _ => 0,
    }
}

fn active(p: &Value) -> bool {
    p["metadata"]["deletionTimestamp"].is_null()
        && !matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed"))
}

pub fn deployments(ctx: &mut Ctx<'_>) {
    let deps = ctx.store.all(&key("apps", "deployments"), None);
    let rss = ctx.store.all(&key("apps", "replicasets"), None);
    let pods = ctx.store.all(&key("", "pods"), None);
    let Some(rs_rt) = ctx.rt("apps", "v1", "replicasets") else { return };
    let Some(dep_rt) = ctx.rt("apps", "v1", "deployments") else { return };
    let opts = WriteOptions::manager("kube-controller-manager");
    for d in deps {
        if !d["metadata"]["deletionTimestamp"].is_null() {
            continue;
        }
        let (ns, name, uid) = (ns_of(&d), name_of(&d), uid_of(&d));
        let spec = &d["spec"];
        let desired = spec["replicas"].as_i64().unwrap_or(1);
        let hash = template_hash(&spec["template"]);
        let mine = owned_by(&rss, &uid);
        let new_rs =
            mine.iter().find(|r| r["metadata"]["labels"]["pod-template-hash"] == hash.as_str()).map(|r| (***r).clone());
        let olds: Vec<Value> = mine
            .iter()
            .filter(|r| r["metadata"]["labels"]["pod-template-hash"] != hash.as_str())
            .map(|r| (***r).clone())
            .collect();
        let revision = mine
            .iter()
            .filter_map(|r| {
                r["metadata"]["annotations"]["deployment.kubernetes.io/revision"].as_str()?.parse::<i64>().ok()
            })
            .max()
            .unwrap_or(0);
        let old_total: i64 = olds.iter().map(|r| r["spec"]["replicas"].as_i64().unwrap_or(0)).sum();
        let recreate = spec["strategy"]["type"] == "Recreate";
        let surge = int_or_percent(&spec["strategy"]["rollingUpdate"]["maxSurge"], desired, true);
        let unavailable = int_or_percent(&spec["strategy"]["rollingUpdate"]["maxUnavailable"], desired, false);
        let unavailable = if surge == 0 && unavailable == 0 { 1 } else { unavailable };
        let new_rs = match new_rs {
            Some(r) => r,
            None => {
                let mut template = spec["template"].clone();
                template["metadata"]["labels"]["pod-template-hash"] = json!(hash);
                let mut selector = spec["selector"].clone();
                selector["matchLabels"]["pod-template-hash"] = json!(hash);
                let start = if recreate || !olds.is_empty() { 0 } else { desired };
                let rs = json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
                    "metadata": {"name": format!("{name}-{hash}"), "namespace": ns, "labels": template["metadata"]["labels"],
                        "annotations": {"deployment.kubernetes.io/revision": (revision + 1).to_string(),
                                        "deployment.kubernetes.io/desired-replicas": desired.to_string()},
                        "ownerReferences": [owner_ref(&d, "Deployment", "apps/v1")]},
                    "spec": {"replicas": start, "selector": selector, "template": template, "minReadySeconds": spec["minReadySeconds"]}});
                match ctx.store.create(&Target::new(&rs_rt, Some(&ns), None), rs, &opts, ctx.now) {
                    Ok(created) => {
                        if start > 0 {
                            event(
                                ctx,
                                &d,
                                "Normal",
                                "ScalingReplicaSet",
                                &format!("Scaled up replica set {name}-{hash} from 0 to {start}"),
                            );
                        }
                        created
                    }
                    Err(e) => {
                        tracing::debug!(deployment = %name, error = %e, "creating replica set");
                        continue;
                    }
                }
            }
        };
        let rs_pods = |rs: &Value| -> Vec<Arc<Value>> {
            owned_by(&pods, &uid_of(rs)).into_iter().filter(|p| active(p)).cloned().collect()
        };
        let available = |rs: &Value| rs_pods(rs).iter().filter(|p| is_ready(p)).count() as i64;
        let new_name = name_of(&new_rs);
        let new_replicas = new_rs["spec"]["replicas"].as_i64().unwrap_or(0);
        let scale = |ctx: &mut Ctx<'_>, rs: &Value, to: i64| {
            let from = rs["spec"]["replicas"].as_i64().unwrap_or(0);
            if from == to {
                return;
            }
            let t = Target::new(&rs_rt, Some(&ns), Some(&name_of(rs)));
            let patch = json!({"spec": {"replicas": to}, "metadata": {"annotations": {"deployment.kubernetes.io/desired-replicas": desired.to_string()}}});
            if ctx.store.patch(&t, PatchType::Merge, &patch, &opts, ctx.now).is_ok() {
                let dir = if to > from { "up" } else { "down" };
                event(
                    ctx,
                    &d,
                    "Normal",
                    "ScalingReplicaSet",
                    &format!("Scaled {dir} replica set {} from {from} to {to}", name_of(rs)),
                );
            }
        };
        if recreate {
            let old_pods: usize = olds.iter().map(|r| rs_pods(r).len()).sum();
            for r in &olds {
                scale(ctx, r, 0);
            }
            if old_pods == 0 {
                scale(ctx, &new_rs, desired);
            }
        } else if olds.is_empty() || old_total == 0 {
            scale(ctx, &new_rs, desired);
            for r in &olds {
                scale(ctx, r, 0);
            }
        } else {
            // Rolling update: grow the new set within maxSurge, shrink old sets within
            // maxUnavailable, counting only available pods as serving.
            let max_total = desired + surge;
            let grow_to = (max_total - old_total).clamp(new_replicas, desired);
            scale(ctx, &new_rs, grow_to);
            let total_available: i64 = available(&new_rs) + olds.iter().map(available).sum::<i64>();
            let min_available = desired - unavailable;
            let old_unavailable: i64 =
                olds.iter().map(|r| r["spec"]["replicas"].as_i64().unwrap_or(0) - available(r)).sum();
            let mut budget = (total_available - min_available).max(0) + old_unavailable.max(0);
            for r in &olds {
                let cur = r["spec"]["replicas"].as_i64().unwrap_or(0);
                let cut = cur.min(budget);
                if cut > 0 {
                    scale(ctx, r, cur - cut);
                    budget -= cut;
                }
            }
        }
        // Status from the freshest replica sets.
        let rss_now = ctx.store.all(&key("apps", "replicasets"), Some(&ns));
        let mine_now = owned_by(&rss_now, &uid);
        let sum = |f: &str| -> i64 { mine_now.iter().map(|r| r["status"][f].as_i64().unwrap_or(0)).sum() };
        let updated = mine_now
            .iter()
            .find(|r| name_of(r) == new_name)
            .map(|r| r["status"]["replicas"].as_i64().unwrap_or(0))
            .unwrap_or(0);
        let (replicas, ready, avail) = (sum("replicas"), sum("readyReplicas"), sum("availableReplicas"));
        let complete = updated == desired && replicas == desired && avail == desired;
        let cond_time = json!(crate::store::ts(ctx.now));
        let mut status = json!({
        "observedGeneration": d["metadata"]["generation"], "replicas": replicas, "updatedReplicas": updated,
        "readyReplicas": ready, "availableReplicas": avail, "unavailableReplicas": (desired - avail).max(0),
        "conditions": [
            {"type": "Available", "status": if avail >= desired - unavailable { "True" } else { "False" },
             "reason": if avail >= desired - unavailable { "MinimumReplicasAvailable" } else { "MinimumReplicasUnavailable" },
             "message": if avail >= desired - unavailable { "Deployment has minimum availability." } else { "Deployment does not have minimum availability." },
             "lastUpdateTime": cond_time, "lastTransitionTime": cond_time},
            {"type": "Progressing", "status": "True",
             "reason": if complete { "NewReplicaSetAvailable" } else { "ReplicaSetUpdated" },
             "message": if complete { format!("ReplicaSet \"{new_name}\" has successfully progressed.") } else { format!("ReplicaSet \"{new_name}\" is progressing.") },
             "lastUpdateTime": cond_time, "lastTransitionTime": cond_time}
        ]});
        keep_transition_times(&d["status"]["conditions"], &mut status["conditions"]);
        omit_zero(
            &mut status,
            &["readyReplicas", "availableReplicas", "unavailableReplicas", "updatedReplicas", "replicas"],
        );
        write_status(ctx, &dep_rt, &d, status);
    }
}

/// Upstream's status counters are `omitempty`: zero means absent, and a zero written explicitly
/// would make every status write look like a change.
fn omit_zero(status: &mut Value, fields: &[&str]) {
    if let Some(m) = status.as_object_mut() {
        m.retain(|k, v| !(fields.contains(&k.as_str()) && *v == 0));
    }
}

/// Conditions whose status did not change keep their timestamps, so status writes stay no-ops.
fn keep_transition_times(old: &Value, new: &mut Value) {
    let Some(list) = new.as_array_mut() else { return };
    for c in list {
        if let Some(prev) = old.as_array().into_iter().flatten().find(|p| p["type"] == c["type"]) {
            if prev["status"] == c["status"] && prev["reason"] == c["reason"] {
                c["lastTransitionTime"] = prev["lastTransitionTime"].clone();
                c["lastUpdateTime"] = prev["lastUpdateTime"].clone();
            } else if prev["status"] == c["status"] {
                c["lastTransitionTime"] = prev["lastTransitionTime"].clone();
            }
        }
    }
}

pub(super) fn write_status(ctx: &mut Ctx<'_>, rt: &crate::registry::ResourceType, obj: &Value, status: Value) {
    if obj["status"] == status {
        return;
    }
    let mut o = obj.clone();
    o["status"] = status;
    let t = Target::new(rt, Some(&ns_of(obj)), Some(&name_of(obj))).with_subresource("status");
    if let Err(e) = ctx.store.update(&t, o, &WriteOptions::manager("kube-controller-manager"), ctx.now) {
        tracing::debug!(object = %name_of(obj), error = %e, "status update");
    }
}

fn pod_from_template(owner: &Value, kind: &str, api_version: &str, template: &Value, name: Option<String>) -> Value {
    let mut meta = template["metadata"].clone();
    if !meta.is_object() {
        meta = json!({});
    }
    match name {
        Some(n) => meta["name"] = json!(n),
        None => meta["generateName"] = json!(format!("{}-", name_of(owner))),
    }
    meta["namespace"] = json!(ns_of(owner));
    meta["ownerReferences"] = json!([owner_ref(owner, kind, api_version)]);
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": template["spec"]})
}

/// Pods to remove first when scaling down: unscheduled, then pending, then unready, then newest.
fn deletion_order(p: &Value) -> (u8, u8, u8, std::cmp::Reverse<String>) {
    let unscheduled = p["spec"]["nodeName"].as_str().is_none_or(str::is_empty);
    let pending = p["status"]["phase"] != "Running";
    (
        u8::from(!unscheduled),
        u8::from(!pending),
        u8::from(is_ready(p)),
        std::cmp::Reverse(p["metadata"]["creationTimestamp"].as_str().unwrap_or_default().to_owned()),
    )
}

pub fn replicasets(ctx: &mut Ctx<'_>) {
    let rss = ctx.store.all(&key("apps", "replicasets"), None);
    let pods = ctx.pods_and_pending();
    let (Some(rs_rt), Some(pod_rt)) = (ctx.rt("apps", "v1", "replicasets"), ctx.rt("", "v1", "pods")) else { return };
    for rs in rss {
        if !rs["metadata"]["deletionTimestamp"].is_null() {
            continue;
        }
        let ns = ns_of(&rs);
        let mut mine: Vec<Arc<Value>> =
            owned_by(&pods, &uid_of(&rs)).into_iter().filter(|p| active(p)).cloned().collect();
        let want = rs["spec"]["replicas"].as_i64().unwrap_or(1);
        let have = mine.len() as i64;
        if have < want {
            for _ in 0..(want - have).min(500) {
                let pod = pod_from_template(&rs, "ReplicaSet", "apps/v1", &rs["spec"]["template"], None);
                match ctx.create_pod(&rs, pod) {
                    Ok(Some(p)) => {
                        event(ctx, &rs, "Normal", "SuccessfulCreate", &format!("Created pod: {}", name_of(&p)))
                    }
                    Ok(None) => {}
                    Err(e) => {
                        event(ctx, &rs, "Warning", "FailedCreate", &format!("Error creating: {}", e.message));
                        break;
                    }
                }
            }
        } else if have > want {
            mine.sort_by_key(|p| deletion_order(p));
            for p in mine.iter().take((have - want) as usize) {
                let t = Target::new(&pod_rt, Some(&ns), Some(&name_of(p)));
                if ctx.store.delete(&t, &Default::default(), ctx.now).is_ok() {
                    event(ctx, &rs, "Normal", "SuccessfulDelete", &format!("Deleted pod: {}", name_of(p)));
                }
            }
        }
        let pods_now: Vec<Arc<Value>> = ctx.store.all(&key("", "pods"), Some(&ns));
        let mine_now: Vec<&Arc<Value>> = owned_by(&pods_now, &uid_of(&rs)).into_iter().filter(|p| active(p)).collect();
        let ready = mine_now.iter().filter(|p| is_ready(p)).count();
        let mut status = json!({"replicas": mine_now.len(), "fullyLabeledReplicas": mine_now.len(), "readyReplicas": ready,
                                "availableReplicas": ready, "observedGeneration": rs["metadata"]["generation"]});
        omit_zero(&mut status, &["readyReplicas", "availableReplicas", "fullyLabeledReplicas"]);
        write_status(ctx, &rs_rt, &rs, status);
    }
}

pub fn statefulsets(ctx: &mut Ctx<'_>) {
    let sets = ctx.store.all(&key("apps", "statefulsets"), None);
    let pods = ctx.pods_and_pending();
    let (Some(rt), Some(pod_rt)) = (ctx.rt("apps", "v1", "statefulsets"), ctx.rt("", "v1", "pods")) else { return };
    for s in sets {
        if !s["metadata"]["deletionTimestamp"].is_null() {
            continue;
        }
        let (ns, name) = (ns_of(&s), name_of(&s));
        let want = s["spec"]["replicas"].as_i64().unwrap_or(1);
        let parallel = s["spec"]["podManagementPolicy"] == "Parallel";
        let mine: BTreeMap<i64, Arc<Value>> = owned_by(&pods, &uid_of(&s))
            .into_iter()
            .filter_map(|p| Some((name_of(p).rsplit_once('-')?.1.parse::<i64>().ok()?, p.clone())))
            .collect();
        for i in 0..want {
            if mine.contains_key(&i) {
                continue;
            }
            // OrderedReady: create ordinal i only when all lower ordinals are ready.
            if !parallel && (0..i).any(|j| !mine.get(&j).is_some_and(|p| is_ready(p))) {
                break;
            }
            let mut template = s["spec"]["template"].clone();
            template["metadata"]["labels"]["statefulset.kubernetes.io/pod-name"] = json!(format!("{name}-{i}"));
            let pod = pod_from_template(&s, "StatefulSet", "apps/v1", &template, Some(format!("{name}-{i}")));
            if ctx.create_pod(&s, pod).is_err() {
                break;
            }
            if !parallel {
                break;
            }
        }
        for (i, p) in mine.iter().rev() {
            if *i >= want && p["metadata"]["deletionTimestamp"].is_null() {
                let _ =
                    ctx.store.delete(&Target::new(&pod_rt, Some(&ns), Some(&name_of(p))), &Default::default(), ctx.now);
                if !parallel {
                    break;
                }
            }
        }
        let ready = mine.values().filter(|p| active(p) && is_ready(p)).count();
        let count = mine.values().filter(|p| active(p)).count();
        let status = json!({"observedGeneration": s["metadata"]["generation"], "replicas": count, "readyReplicas": ready,
            "currentReplicas": count, "updatedReplicas": count, "availableReplicas": ready});
        write_status(ctx, &rt, &s, status);
    }
}

pub fn daemonsets(ctx: &mut Ctx<'_>) {
    let sets = ctx.store.all(&key("apps", "daemonsets"), None);
    let pods = ctx.pods_and_pending();
    let nodes = ctx.store.all(&key("", "nodes"), None);
    let Some(rt) = ctx.rt("apps", "v1", "daemonsets") else { return };
    // Nodes are converted once for every DaemonSet of this step.
    let live: Vec<Arc<Value>> =
        nodes.iter().filter(|n| n["metadata"]["deletionTimestamp"].is_null()).cloned().collect();
    let templates: Vec<&Value> = sets.iter().map(|s| &s["spec"]["template"]).collect();
    let fits = super::scheduler::daemon_eligible(&templates, &live);
    for (s, fits) in sets.iter().zip(fits) {
        if !s["metadata"]["deletionTimestamp"].is_null() {
            continue;
        }
        let mine: Vec<&Arc<Value>> = owned_by(&pods, &uid_of(s)).into_iter().filter(|p| active(p)).collect();
        let template = &s["spec"]["template"];
        let eligible: Vec<&Arc<Value>> = live.iter().zip(fits).filter(|(_, ok)| *ok).map(|(n, _)| n).collect();
        for n in &eligible {
            let node = name_of(n);
            if mine.iter().any(|p| p["spec"]["nodeName"] == node.as_str()) {
                continue;
            }
            let mut pod = pod_from_template(s, "DaemonSet", "apps/v1", template, None);
            pod["spec"]["nodeName"] = json!(node);
            let _ = ctx.create_pod(s, pod);
        }
        let ready = mine.iter().filter(|p| is_ready(p)).count();
        let status = json!({"observedGeneration": s["metadata"]["generation"], "desiredNumberScheduled": eligible.len(),
            "currentNumberScheduled": mine.len(), "numberReady": ready, "numberAvailable": ready, "updatedNumberScheduled": mine.len(), "numberMisscheduled": 0});
        write_status(ctx, &rt, s, status);
    }
}

/// The disruption controller: keeps each budget's `disruptionsAllowed` current, which the
/// eviction subresource then enforces.
pub fn disruption_budgets(ctx: &mut Ctx<'_>) {
    let pdbs = ctx.store.all(&key("policy", "poddisruptionbudgets"), None);
    let Some(rt) = ctx.rt("policy", "v1", "poddisruptionbudgets") else { return };
    for b in pdbs {
        let ns = ns_of(&b);
        let pods = ctx.store.all(&key("", "pods"), Some(&ns));
        let Ok(sel) = LabelSelector::from_json(&b["spec"]["selector"]) else { continue };
        let matched: Vec<&Arc<Value>> =
            pods.iter().filter(|p| !b["spec"]["selector"].is_null() && sel.matches_object(p) && active(p)).collect();
        let now_s = ctx.now;
        let mut disrupted = serde_json::Map::new();
        for (pod, at) in b["status"]["disruptedPods"].as_object().into_iter().flatten() {
            let recent = at
                .as_str()
                .and_then(|s| s.parse::<jiff::Timestamp>().ok())
                .is_some_and(|t| now_s.duration_since(t).as_secs() < 120);
            if recent && matched.iter().any(|p| name_of(p) == *pod) {
                disrupted.insert(pod.clone(), at.clone());
            }
        }
        let expected = matched.len() as i64;
        let healthy = matched.iter().filter(|p| is_ready(p) && !disrupted.contains_key(&name_of(p))).count() as i64;
        let desired = if !b["spec"]["minAvailable"].is_null() {
            int_or_percent(&b["spec"]["minAvailable"], expected, true)
        } else if !b["spec"]["maxUnavailable"].is_null() {
            (expected - int_or_percent(&b["spec"]["maxUnavailable"], expected, true)).max(0)
        } else {
            expected
        };
        let allowed = (healthy - desired).max(0);
        let t = json!(crate::store::ts(ctx.now));
        let mut status = json!({"observedGeneration": b["metadata"]["generation"], "expectedPods": expected, "currentHealthy": healthy,
            "desiredHealthy": desired, "disruptionsAllowed": allowed,
            "conditions": [{"type": "DisruptionAllowed", "status": if allowed > 0 { "True" } else { "False" },
                            "reason": if allowed > 0 { "SufficientPods" } else { "InsufficientPods" }, "message": "",
                            "observedGeneration": b["metadata"]["generation"], "lastTransitionTime": t}]});
        if !disrupted.is_empty() {
            status["disruptedPods"] = Value::Object(disrupted);
        }
        keep_transition_times(&b["status"]["conditions"], &mut status["conditions"]);
        write_status(ctx, &rt, &b, status);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_and_percentages() {
        let a = template_hash(&json!({"spec": {"containers": [{"image": "a"}]}}));
        let b = template_hash(&json!({"spec": {"containers": [{"image": "b"}]}}));
        assert_eq!(a.len(), 10);
        assert_ne!(a, b);
        assert_eq!(int_or_percent(&json!("25%"), 10, true), 3);
        assert_eq!(int_or_percent(&json!("25%"), 10, false), 2);
        assert_eq!(int_or_percent(&json!(2), 10, false), 2);
    }
}
