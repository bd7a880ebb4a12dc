//! `omniscale plan FILE...`: what omniscale would decide for the resources in some files, and
//! why. Reads what `kubectl get -o yaml` writes (one or many documents, or `kind: List`):
//! Autoscalers, their target workloads, Pods and PodMetrics, and what `kubectl get --raw` returns
//! from the custom and external metrics APIs (MetricValueList, ExternalMetricValueList). The
//! files fill the same per-cycle metrics cache the operator fills from the network, and the
//! same pure engine decides.
//!
//! The JSON form (`-o json`) is stable: `{"now", "autoscalers": [{"namespace", "name",
//! "target", "horizontal": {"currentReplicas", "desiredReplicas", "proposedReplicas", "branch",
//! "metrics": [...], "normalization", "conditions": [...], "explanation": [...]},
//! "vertical": {"recommendation": {"containerRecommendations": [{"containerName", "target",
//! "lowerBound", "upperBound", "uncappedTarget"}]}, "resourceOwners", "conditions": [...],
//! "explanation": [...], "updates": [{"pod", "action", "reason"}], "skipped": [...]},
//! "errors": [...]}]}`. PodMetrics documents may repeat with many timestamps: all of them are
//! the vertical recommender's history.
//!
//! Nodes: NodePools, Nodes, PodDisruptionBudgets, DaemonSets and the Auto Scaling Groups (as
//! `aws autoscaling describe-auto-scaling-groups` prints them, or as plan-only `kind:
//! AutoScalingGroup` documents; see [`nodes`]) go through the node engines of the operator's
//! node loop, once, with no memory of earlier loops. The JSON adds `"nodePools": [{"name",
//! "groups": [<group names>], "desired": {"now", "after"}, "ready", "min", "max",
//! "nodeTemplates": [{"group", "allocatable": {"cpu", "memory", "pods", ...}, "taints"} |
//! {"group", "error"}], "scaleUp": {"nodes": <nodes added over all groups>, "groups": [{"name",
//! "from", "to", "pods": ["ns/name"]}]}, "scaleDown": {"nodes": [{"name", "group", "empty",
//! "evict": ["ns/name"], "unneededSince", "removable", "waitingFor": <why not removed now, only
//! when not removable>}], "blocked": [{"node", "reason"}], "utilized": [{"node",
//! "utilization"}], "skipped": <why no scale-down was considered, when it was not>},
//! "pendingPods": [{"pod", "triggered": true, "groups"} | {"pod", "triggered": false,
//! "reason"}], "canScaleUp": {"status", "reason", "message"}}]` (one entry per Auto Scaling
//! Group NodePool, in name order; `scaleDown.nodes` lists every unneeded node, removable now or
//! waiting, and `canScaleUp` is the NodePool condition after the plan) and `"nodeWarnings":
//! [...]` (input the engines could not use: groupless pools, pools without groups, nodes in no
//! group, objects left out). `pendingPods` of a pool holds the pods its groups scale up for and
//! every pod no group helps (the reason names each group tried).

pub mod nodes;

use crate::cli::{PlanArgs, PlanOutput};
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{LimitRange, Node, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use omniscale_api::{Autoscaler, NodePool};
use omniscale_hpa::decide::{History, MetricOutcome};
use omniscale_hpa::input::{self, Evaluation, Scale};
use omniscale_metrics::types::{ExternalMetricValue, MetricValue, PodMetrics};
use omniscale_metrics::{Answer, Cache, PodIndex, Query, Sample};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// A problem with the input, naming the file, the document and the field.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PlanError(pub String);

/// Everything read from the files.
#[derive(Debug, Default)]
pub struct Inputs {
    pub autoscalers: Vec<Autoscaler>,
    /// (namespace, kind, name) → the workload object.
    pub workloads: BTreeMap<(String, String, String), Value>,
    pub pods: Vec<Pod>,
    /// (namespace, pod) → its metrics, the latest when several are given.
    pub pod_metrics: BTreeMap<(String, String), PodMetrics>,
    /// Every PodMetrics document, for the vertical recommender's history (fed in time order).
    pub pod_metrics_series: Vec<PodMetrics>,
    /// LimitRanges, which cap what the vertical side applies.
    pub limit_ranges: Vec<LimitRange>,
    /// Custom metrics values (MetricValueList items).
    pub custom: Vec<MetricValue>,
    /// External metrics series (ExternalMetricValueList items); they carry no namespace, so
    /// they answer every namespace's queries.
    pub external: Vec<ExternalMetricValue>,
    pub nodes: Vec<Node>,
    pub pdbs: Vec<PodDisruptionBudget>,
    pub daemonsets: Vec<DaemonSet>,
    pub node_pools: Vec<NodePool>,
    /// Auto Scaling Groups, from AWS CLI output or plan-only `kind: AutoScalingGroup` documents.
    pub groups: Vec<omniscale_nodes::NodeGroup>,
    /// (kind, name) → where each NodePool and Auto Scaling Group was read, for duplicates.
    pub sources: BTreeMap<(String, String), String>,
}

fn typed<T: serde::de::DeserializeOwned>(v: Value, at: &str) -> Result<T, PlanError> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." { String::new() } else { format!(" field {path}:") };
        PlanError(format!("{at}:{field} {}", e.inner()))
    })
}

/// Reads and classifies the documents of one file's text.
pub fn read(name: &str, text: &str, into: &mut Inputs) -> Result<(), PlanError> {
    for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let at = format!("{name}: document {}", i + 1);
        let yaml = <serde_yaml::Value as serde::Deserialize>::deserialize(doc)
            .map_err(|e| PlanError(format!("{at}: not YAML or JSON: {e}")))?;
        let v: Value = serde_json::to_value(yaml).map_err(|e| PlanError(format!("{at}: {e}")))?;
        if v.is_null() {
            continue;
        }
        if nodes::is_aws_output(&v) {
            nodes::read_aws(v, &at, into)?;
            continue;
        }
        if let Some(kind @ ("MetricValueList" | "ExternalMetricValueList")) = v["kind"].as_str() {
            // The aggregated APIs' items carry no apiVersion or kind of their own.
            for (j, item) in v["items"].as_array().cloned().unwrap_or_default().into_iter().enumerate() {
                let at = format!("{at} item {}", j + 1);
                if kind == "MetricValueList" {
                    let m: MetricValue = typed(item, &at)?;
                    check_value(&m.timestamp, &m.value, &at)?;
                    into.custom.push(m);
                } else {
                    let m: ExternalMetricValue = typed(item, &at)?;
                    check_value(&m.timestamp, &m.value, &at)?;
                    into.external.push(m);
                }
            }
            continue;
        }
        if v["kind"] == "List" || v["kind"].as_str().is_some_and(|k| k.ends_with("List")) && v["items"].is_array() {
            for (j, item) in v["items"].as_array().cloned().unwrap_or_default().into_iter().enumerate() {
                classify(item, &format!("{at} item {}", j + 1), into)?;
            }
        } else {
            classify(v, &at, into)?;
        }
    }
    Ok(())
}

fn check_value(
    timestamp: &str,
    value: &k8s_openapi::apimachinery::pkg::api::resource::Quantity,
    at: &str,
) -> Result<(), PlanError> {
    timestamp.parse::<Timestamp>().map_err(|e| PlanError(format!("{at}: field timestamp: {e}")))?;
    omniscale_metrics::query::milli(value).map_err(|e| PlanError(format!("{at}: field value: {e}")))?;
    Ok(())
}

fn classify(v: Value, at: &str, into: &mut Inputs) -> Result<(), PlanError> {
    let api = v["apiVersion"].as_str().unwrap_or_default().to_owned();
    let kind = v["kind"].as_str().unwrap_or_default().to_owned();
    let ns = v["metadata"]["namespace"].as_str().unwrap_or("default").to_owned();
    let name = v["metadata"]["name"].as_str().or_else(|| v["name"].as_str()).unwrap_or_default().to_owned();
    let cluster_scoped = matches!(kind.as_str(), "Node" | "NodePool" | nodes::GROUP_KIND);
    let at = if cluster_scoped { format!("{at} ({kind} {name})") } else { format!("{at} ({kind} {ns}/{name})") };
    if kind.is_empty() || api.is_empty() {
        return Err(PlanError(format!("{at}: apiVersion and kind are required")));
    }
    match (api.split('/').next().unwrap_or_default(), kind.as_str()) {
        ("omniscale.dev", "Autoscaler") => into.autoscalers.push(typed(v, &at)?),
        ("omniscale.dev", "NodePool") => nodes::add_pool(typed(v, &at)?, &at, into)?,
        ("omniscale.dev", nodes::GROUP_KIND) => nodes::read_group(v, &at, into)?,
        ("apps", "Deployment" | "StatefulSet" | "ReplicaSet") => {
            into.workloads.insert((ns, kind, name), v);
        }
        ("apps", "DaemonSet") => into.daemonsets.push(typed(v, &at)?),
        ("v1", "Pod") => into.pods.push(typed(v, &at)?),
        ("v1", "Node") => into.nodes.push(typed(v, &at)?),
        ("policy", "PodDisruptionBudget") => into.pdbs.push(typed(v, &at)?),
        ("v1", "LimitRange") => into.limit_ranges.push(typed(v, &at)?),
        ("metrics.k8s.io", "PodMetrics") => {
            let m: PodMetrics = typed(v, &at)?;
            m.timestamp.parse::<Timestamp>().map_err(|e| PlanError(format!("{at}: field timestamp: {e}")))?;
            into.pod_metrics_series.push(m.clone());
            let key = (ns, name);
            let newer = into.pod_metrics.get(&key).is_none_or(|old| old.timestamp < m.timestamp);
            if newer {
                into.pod_metrics.insert(key, m);
            }
        }
        _ => {}
    }
    Ok(())
}

/// Object metrics are matched by their described object here, not through discovery: the
/// "resource" is an opaque key built the same way for queries and for answers.
fn resource_key(api_version: &str, kind: &str) -> Option<String> {
    Some(format!("{kind}.{api_version}"))
}

/// Answers a query from the files, as the metrics APIs would have; `None`: not in the input.
fn answer(q: &Query, inputs: &Inputs) -> Option<Answer> {
    match q {
        Query::PodMetrics { namespace } => {
            let usage: HashMap<String, omniscale_metrics::Usage> = inputs
                .pod_metrics
                .iter()
                .filter(|((ns, _), _)| ns == namespace)
                .filter_map(|((_, pod), m)| Some((pod.clone(), omniscale_metrics::query::pod_usage(m).ok()?)))
                .collect();
            Some(Answer::PodMetrics(usage))
        }
        Query::NodeMetrics => None,
        Query::Pods { namespace, metric, metric_selector } => {
            let values: HashMap<String, Sample> = inputs
                .custom
                .iter()
                .filter(|m| m.described_object.kind == "Pod" && m.metric.name == *metric)
                .filter(|m| m.described_object.namespace.as_deref().unwrap_or("default") == namespace)
                .filter(|m| input::selector_string(m.metric.selector.as_ref()).as_ref() == Ok(metric_selector))
                .filter_map(|m| {
                    Some((m.described_object.name.clone(), omniscale_metrics::query::custom_sample(m).ok()?))
                })
                .collect();
            (!values.is_empty()).then_some(Answer::Pods(values))
        }
        Query::Object { namespace, resource, name, metric, metric_selector } => inputs
            .custom
            .iter()
            .filter(|m| {
                let d = &m.described_object;
                resource_key(&d.api_version, &d.kind).as_ref() == Some(resource)
                    && d.name == *name
                    && (d.namespace.as_deref().unwrap_or(namespace) == namespace || d.kind == "Namespace")
                    && m.metric.name == *metric
                    && input::selector_string(m.metric.selector.as_ref()).as_ref() == Ok(metric_selector)
            })
            .find_map(|m| omniscale_metrics::query::custom_sample(m).ok())
            .map(Answer::Object),
        Query::External { metric, selector, .. } => {
            let sel = omniscale_api::selector::LabelSelector::parse(selector).ok()?;
            let series: Vec<&ExternalMetricValue> =
                inputs.external.iter().filter(|m| m.metric_name == *metric && sel.matches(&m.metric_labels)).collect();
            let first = series.first()?;
            let value = series
                .iter()
                .filter_map(|m| omniscale_metrics::query::milli(&m.value).ok())
                .fold(0i64, i64::saturating_add);
            Some(Answer::External(Sample {
                value,
                timestamp: first.timestamp.parse().ok()?,
                window: jiff::SignedDuration::from_secs(first.window.unwrap_or(0)),
            }))
        }
    }
}

/// The cycle's cache, filled from the files for every query these Autoscalers make.
fn fill(autoscalers: &[Autoscaler], inputs: &Inputs) -> Cache {
    let mut cache = Cache::new();
    for a in autoscalers {
        let ns = a.metadata.namespace.clone().unwrap_or_else(|| "default".into());
        let specs = input::metric_specs(a.spec.horizontal.as_ref().and_then(|h| h.metrics.as_deref()));
        input::want(&specs, &ns, &mut cache, &resource_key);
    }
    for q in cache.take_pending() {
        let a =
            answer(&q, inputs).ok_or_else(|| format!("not in the input: no data from {} for {}", q.api(), q.path()));
        cache.put(q, a);
    }
    cache
}

/// The decision for one Autoscaler, as JSON.
pub fn plan_one(a: &Autoscaler, inputs: &Inputs, pods: &PodIndex, cache: &Cache, now: Timestamp) -> Value {
    let ns = a.metadata.namespace.clone().unwrap_or_else(|| "default".into());
    let name = a.metadata.name.clone().unwrap_or_default();
    let t = &a.spec.target_ref;
    let mut out = json!({"namespace": ns, "name": name,
        "target": {"apiVersion": t.api_version, "kind": t.kind, "name": t.name}, "errors": []});
    let Some(workload) = inputs.workloads.get(&(ns.clone(), t.kind.clone(), t.name.clone())) else {
        out["errors"] = json!([format!("target {} {ns}/{} is not in the input", t.kind, t.name)]);
        return out;
    };
    let spec_replicas = workload["spec"]["replicas"].as_i64().unwrap_or(1) as i32;
    let selector = omniscale_api::selector::LabelSelector::from_json(&workload["spec"]["selector"])
        .ok()
        .filter(|s| !s.is_nothing());
    if let Some(h) = &a.spec.horizontal {
        // The scale subresource's selector is the workload's, in query-string form.
        let scale = Scale {
            spec_replicas,
            status_replicas: workload["status"]["replicas"].as_i64().map_or(spec_replicas, |r| r as i32),
            selector: selector.as_ref().map(|s| s.to_query()).unwrap_or_default(),
        };
        let e = input::evaluate(h, &ns, &scale, pods, cache, &resource_key, &mut History::default(), now);
        out["horizontal"] = horizontal_json(&e);
    }
    if a.spec.vertical.is_some() {
        out["vertical"] = match &selector {
            Some(sel) => vertical_json(a, &ns, sel, spec_replicas, inputs, pods, now),
            None => json!({"error": "the target has no selector, so no pods can be matched"}),
        };
    }
    out
}

/// Feeds every PodMetrics document of the Autoscaler's pods to a fresh recommender in time
/// order, then asks the recommender and the updater what they would do.
fn vertical_json(
    a: &Autoscaler,
    ns: &str,
    selector: &omniscale_api::selector::LabelSelector,
    configured: i32,
    inputs: &Inputs,
    pods: &PodIndex,
    now: Timestamp,
) -> Value {
    let owner: Arc<str> = Arc::from(format!("{ns}/{}", a.metadata.name.as_deref().unwrap_or_default()));
    let current: Vec<&Pod> = pods.select(ns, selector);
    let mut series: Vec<&PodMetrics> = inputs
        .pod_metrics_series
        .iter()
        .filter(|m| m.metadata.namespace.as_deref().unwrap_or("default") == ns)
        .filter(|m| {
            let name = m.metadata.name.as_deref().unwrap_or_default();
            match current.iter().find(|p| p.metadata.name.as_deref() == Some(name)) {
                Some(_) => true,
                None => m.metadata.labels.as_ref().is_some_and(|l| selector.matches(l)),
            }
        })
        .collect();
    series.sort_by(|x, y| x.timestamp.cmp(&y.timestamp));
    let mut model = omniscale_vpa::model::Model::default();
    for m in series {
        let name = m.metadata.name.clone().unwrap_or_default();
        let Ok(usage) = omniscale_metrics::query::pod_usage(m) else { continue };
        let pod = current
            .iter()
            .find(|p| p.metadata.name.as_deref() == Some(name.as_str()))
            .map_or_else(|| Pod { metadata: m.metadata.clone(), ..Pod::default() }, |p| (*p).clone());
        let usage = HashMap::from([(name, usage)]);
        omniscale_vpa::input::feed(&mut model, &owner, &[&pod], &usage);
    }
    let outcome = omniscale_vpa::input::recommendation(&model, &owner, &a.spec, &current);
    let conditions = omniscale_vpa::input::conditions(&outcome, current.len(), &model, &owner);
    let v = a.spec.vertical.as_ref();
    let ranges = omniscale_vpa::admission::LimitRanges::from_items(
        inputs
            .limit_ranges
            .iter()
            .filter(|l| l.metadata.namespace.as_deref().unwrap_or("default") == ns)
            .filter_map(|l| l.spec.as_ref())
            .flat_map(|s| s.limits.iter()),
    );
    let update = omniscale_vpa::updater::Input {
        mode: v.and_then(|v| v.update_policy.as_ref()).and_then(|u| u.update_mode).unwrap_or_default(),
        min_replicas: v.and_then(|v| v.update_policy.as_ref()).and_then(|u| u.min_replicas),
        configured,
        pods: &current,
        recommendation: &outcome.recommendation,
        policy: v.and_then(|v| v.resource_policy.as_ref()),
        ranges: &ranges,
    };
    let plan = omniscale_vpa::updater::plan(&update, &omniscale_vpa::updater::Settings::default(), now);
    let updates: Vec<Value> = plan
        .actions
        .iter()
        .map(|act| match act {
            omniscale_vpa::updater::Action::Resize { pod, .. } => {
                json!({"pod": pod, "action": "Resize", "reason": "requests differ from the recommendation"})
            }
            omniscale_vpa::updater::Action::Evict { pod, reason, .. } => {
                json!({"pod": pod, "action": "Evict", "reason": reason})
            }
        })
        .collect();
    let skipped: Vec<Value> = plan.skipped.iter().map(|(p, why)| json!({"pod": p, "reason": why})).collect();
    let conditions: Vec<Value> = conditions
        .iter()
        .map(|c| json!({"type": c.type_, "status": c.status.as_str(), "reason": c.reason, "message": c.message}))
        .collect();
    json!({
        "recommendation": outcome.recommendation,
        "resourceOwners": omniscale_vpa::input::owners(&a.spec),
        "conditions": conditions,
        "explanation": outcome.explanation,
        "updates": updates,
        "skipped": skipped,
    })
}

fn horizontal_json(e: &Evaluation<'_>) -> Value {
    let d = &e.decision;
    let metrics: Vec<Value> = d
        .metrics
        .iter()
        .zip(e.specs.iter())
        .map(|(m, s)| {
            let mut v = json!({"type": s.type_, "name": input::metric_name(s)});
            match m {
                MetricOutcome::Proposal(p) => v["proposal"] = json!(p),
                MetricOutcome::Error { reason, message } => v["error"] = json!({"reason": reason, "message": message}),
            }
            v
        })
        .collect();
    json!({"currentReplicas": d.current, "desiredReplicas": d.desired, "proposedReplicas": d.proposed,
           "branch": d.branch, "metrics": metrics, "normalization": d.normalized, "conditions": d.conditions,
           "explanation": input::explain(e)})
}

/// Reads the files and plans every Autoscaler and NodePool in them, with the node engines'
/// default settings.
pub fn plan(files: &[std::path::PathBuf], now: Timestamp) -> Result<Value, PlanError> {
    plan_with(files, now, &omniscale_nodes::input::Settings::default())
}

/// Reads the files and plans every Autoscaler and NodePool in them.
pub fn plan_with(
    files: &[std::path::PathBuf],
    now: Timestamp,
    settings: &omniscale_nodes::input::Settings,
) -> Result<Value, PlanError> {
    let mut inputs = Inputs::default();
    for f in files {
        let text = std::fs::read_to_string(f).map_err(|e| PlanError(format!("{}: {e}", f.display())))?;
        read(&f.display().to_string(), &text, &mut inputs)?;
    }
    if inputs.autoscalers.is_empty() && inputs.node_pools.is_empty() {
        return Err(PlanError("no Autoscaler or NodePool (omniscale.dev) in the input".into()));
    }
    let cache = fill(&inputs.autoscalers, &inputs);
    let pods = PodIndex::new(inputs.pods.iter().cloned().map(|mut p| {
        p.metadata.namespace.get_or_insert_with(|| "default".into());
        Arc::new(p)
    }));
    let autoscalers: Vec<Value> = inputs.autoscalers.iter().map(|a| plan_one(a, &inputs, &pods, &cache, now)).collect();
    let (node_pools, warnings) = nodes::plan_nodes(&inputs, settings, now);
    Ok(json!({"now": now.to_string(), "autoscalers": autoscalers, "nodePools": node_pools, "nodeWarnings": warnings}))
}

/// One line per Autoscaler, then the NodePools (one line each, then pods, nodes and notes).
pub fn table(plan: &Value) -> String {
    let autoscalers = plan["autoscalers"].as_array().is_some_and(|a| !a.is_empty());
    let node_part = nodes::table(plan);
    match (autoscalers, node_part.is_empty()) {
        (true, true) => autoscaler_table(plan),
        (true, false) => format!("{}\n\n{node_part}", autoscaler_table(plan)),
        (false, _) => node_part,
    }
}

/// One line per Autoscaler.
fn autoscaler_table(plan: &Value) -> String {
    let mut rows = vec![["NAMESPACE", "NAME", "TARGET", "CURRENT", "DESIRED", "WHY"].map(str::to_owned)];
    for a in plan["autoscalers"].as_array().into_iter().flatten() {
        let h = &a["horizontal"];
        let why = if let Some(e) = a["errors"].as_array().and_then(|e| e.first()) {
            e.as_str().unwrap_or_default().to_owned()
        } else if h.is_null() {
            vertical_summary(&a["vertical"])
        } else {
            let mut parts: Vec<String> = h["metrics"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|m| match (&m["proposal"], &m["error"]) {
                    (p, _) if p.is_object() => match p["utilization"].as_i64() {
                        Some(u) => format!("{} {u}% → {}", m["name"].as_str().unwrap_or_default(), p["replicas"]),
                        None => format!(
                            "{} avg {}m → {}",
                            m["name"].as_str().unwrap_or_default(),
                            p["average"],
                            p["replicas"]
                        ),
                    },
                    (_, e) => format!(
                        "{}: {}",
                        m["name"].as_str().unwrap_or_default(),
                        e["reason"].as_str().unwrap_or_default()
                    ),
                })
                .collect();
            for c in h["conditions"].as_array().into_iter().flatten() {
                let reason = c["reason"].as_str().unwrap_or_default();
                let interesting = (c["type"] == "ScalingLimited" && c["status"] == "True")
                    || (c["type"] == "ScalingActive" && c["status"] == "False")
                    || reason.ends_with("Stabilized");
                if interesting {
                    parts.push(reason.to_owned());
                }
            }
            parts.join("; ")
        };
        let target = format!(
            "{}/{}",
            a["target"]["kind"].as_str().unwrap_or_default(),
            a["target"]["name"].as_str().unwrap_or_default()
        );
        let num = |v: &Value| v.as_i64().map(|n| n.to_string()).unwrap_or_else(|| "-".into());
        rows.push([
            a["namespace"].as_str().unwrap_or_default().to_owned(),
            a["name"].as_str().unwrap_or_default().to_owned(),
            target,
            num(&h["currentReplicas"]),
            num(&h["desiredReplicas"]),
            why,
        ]);
    }
    let widths: Vec<usize> = (0..6).map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0)).collect();
    rows.iter()
        .map(|r| {
            r.iter()
                .enumerate()
                .map(|(i, c)| if i == 5 { c.clone() } else { format!("{c:<w$}", w = widths[i]) })
                .collect::<Vec<_>>()
                .join("  ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `app: cpu 587m, memory 262144k` per recommended container.
fn vertical_summary(v: &Value) -> String {
    if let Some(e) = v["error"].as_str() {
        return e.to_owned();
    }
    let recs: Vec<String> = v["recommendation"]["containerRecommendations"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            let target: Vec<String> = c["target"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(r, q)| format!("{r} {}", q.as_str().unwrap_or_default()))
                .collect();
            format!("{}: {}", c["containerName"].as_str().unwrap_or_default(), target.join(", "))
        })
        .collect();
    if recs.is_empty() { "no vertical recommendation yet".to_owned() } else { recs.join("; ") }
}

/// `omniscale plan`.
pub fn run(args: &PlanArgs) -> Result<String, PlanError> {
    let now = match &args.now {
        Some(s) => s
            .parse::<Timestamp>()
            .map_err(|e| PlanError(format!("--now {s:?}: {e} (RFC 3339, e.g. 2026-01-01T12:00:00Z)")))?,
        None => Timestamp::now(),
    };
    let settings = omniscale_nodes::input::Settings {
        expanders: args.expander.0.clone(),
        max_nodes_total: args.max_nodes_total,
        ..omniscale_nodes::input::Settings::default()
    };
    let plan = plan_with(&args.files, now, &settings)?;
    Ok(match args.output {
        PlanOutput::Json => serde_json::to_string_pretty(&plan).unwrap_or_default(),
        PlanOutput::Table => table(&plan),
    })
}
