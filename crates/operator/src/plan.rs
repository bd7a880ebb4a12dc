//! `omniscale plan FILE...`: what omniscale would decide for the resources in some files, and
//! why. Reads what `kubectl get -o yaml` writes (one or many documents, or `kind: List`):
//! Autoscalers, their target workloads, Pods and PodMetrics, then runs the same pure engines the
//! operator runs.
//!
//! The JSON form (`-o json`) is stable: `{"now", "autoscalers": [{"namespace", "name",
//! "target", "horizontal": {"currentReplicas", "desiredReplicas", "proposedReplicas", "branch",
//! "metrics": [...], "normalization", "conditions": [...]}, "errors": [...]}]}`.

use crate::cli::{PlanArgs, PlanOutput};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use omniscale_api::Autoscaler;
use omniscale_hpa::decide::{self, Decision, History, MetricOutcome};
use omniscale_hpa::input::{self, MetricsByPod, PodMetrics};
use serde_json::{Value, json};
use std::collections::BTreeMap;

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

fn classify(v: Value, at: &str, into: &mut Inputs) -> Result<(), PlanError> {
    let api = v["apiVersion"].as_str().unwrap_or_default().to_owned();
    let kind = v["kind"].as_str().unwrap_or_default().to_owned();
    let ns = v["metadata"]["namespace"].as_str().unwrap_or("default").to_owned();
    let name = v["metadata"]["name"].as_str().unwrap_or_default().to_owned();
    let at = format!("{at} ({kind} {ns}/{name})");
    if kind.is_empty() || api.is_empty() {
        return Err(PlanError(format!("{at}: apiVersion and kind are required")));
    }
    match (api.split('/').next().unwrap_or_default(), kind.as_str()) {
        ("omniscale.dev", "Autoscaler") => into.autoscalers.push(typed(v, &at)?),
        ("apps", "Deployment" | "StatefulSet" | "ReplicaSet") => {
            into.workloads.insert((ns, kind, name), v);
        }
        ("v1", "Pod") => into.pods.push(typed(v, &at)?),
        ("metrics.k8s.io", "PodMetrics") => {
            let m: PodMetrics = typed(v, &at)?;
            m.timestamp.parse::<Timestamp>().map_err(|e| PlanError(format!("{at}: field timestamp: {e}")))?;
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

/// The decision for one Autoscaler, as JSON.
pub fn plan_one(a: &Autoscaler, inputs: &Inputs, now: Timestamp) -> Value {
    let ns = a.metadata.namespace.clone().unwrap_or_else(|| "default".into());
    let name = a.metadata.name.clone().unwrap_or_default();
    let t = &a.spec.target_ref;
    let mut out = json!({"namespace": ns, "name": name,
        "target": {"apiVersion": t.api_version, "kind": t.kind, "name": t.name}, "errors": []});
    let Some(h) = &a.spec.horizontal else { return out };
    let Some(workload) = inputs.workloads.get(&(ns.clone(), t.kind.clone(), t.name.clone())) else {
        out["errors"] = json!([format!("target {} {ns}/{} is not in the input", t.kind, t.name)]);
        return out;
    };
    let spec_replicas = workload["spec"]["replicas"].as_i64().unwrap_or(1) as i32;
    let status_replicas = workload["status"]["replicas"].as_i64().map_or(spec_replicas, |r| r as i32);
    let selector: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector> =
        serde_json::from_value(workload["spec"]["selector"].clone()).ok();
    let pods: Vec<Pod> = inputs
        .pods
        .iter()
        .filter(|p| p.metadata.namespace.as_deref().unwrap_or("default") == ns)
        .filter(|p| input::selects(selector.as_ref(), p.metadata.labels.as_ref()))
        .cloned()
        .collect();
    let metrics: MetricsByPod = pods
        .iter()
        .filter_map(|p| {
            let n = p.metadata.name.clone()?;
            inputs.pod_metrics.get(&(ns.clone(), n.clone())).map(|m| (n, m.clone()))
        })
        .collect();
    let specs = input::metric_specs(h.metrics.as_deref());
    let none = |_: decide::Kind, _: &str| None;
    let observations: Vec<decide::Observation> =
        specs.iter().map(|s| input::observe(s, &pods, &metrics, &none)).collect();
    let engine_input =
        input::engine_input(h, spec_replicas, status_replicas, input::ready_pods(&pods), observations, now);
    let d = decide::decide(&engine_input, &mut History::default());
    out["horizontal"] = horizontal_json(&d, &specs);
    out
}

fn horizontal_json(d: &Decision, specs: &[k8s_openapi::api::autoscaling::v2::MetricSpec]) -> Value {
    let metrics: Vec<Value> = d
        .metrics
        .iter()
        .zip(specs)
        .map(|(m, s)| {
            let mut v = json!({"type": s.type_, "name": metric_name(s)});
            match m {
                MetricOutcome::Proposal(p) => v["proposal"] = json!(p),
                MetricOutcome::Error { reason, message } => v["error"] = json!({"reason": reason, "message": message}),
            }
            v
        })
        .collect();
    json!({"currentReplicas": d.current, "desiredReplicas": d.desired, "proposedReplicas": d.proposed,
           "branch": d.branch, "metrics": metrics, "normalization": d.normalized, "conditions": d.conditions})
}

fn metric_name(s: &k8s_openapi::api::autoscaling::v2::MetricSpec) -> String {
    match s.type_.as_str() {
        "Resource" => s.resource.as_ref().map(|r| r.name.clone()),
        "ContainerResource" => s.container_resource.as_ref().map(|r| format!("{}/{}", r.container, r.name)),
        "Pods" => s.pods.as_ref().map(|p| p.metric.name.clone()),
        "Object" => s.object.as_ref().map(|o| o.metric.name.clone()),
        "External" => s.external.as_ref().map(|e| e.metric.name.clone()),
        _ => None,
    }
    .unwrap_or_default()
}

/// Reads the files and plans every Autoscaler in them.
pub fn plan(files: &[std::path::PathBuf], now: Timestamp) -> Result<Value, PlanError> {
    let mut inputs = Inputs::default();
    for f in files {
        let text = std::fs::read_to_string(f).map_err(|e| PlanError(format!("{}: {e}", f.display())))?;
        read(&f.display().to_string(), &text, &mut inputs)?;
    }
    if inputs.autoscalers.is_empty() {
        return Err(PlanError("no Autoscaler (omniscale.dev) in the input".into()));
    }
    let autoscalers: Vec<Value> = inputs.autoscalers.iter().map(|a| plan_one(a, &inputs, now)).collect();
    Ok(json!({"now": now.to_string(), "autoscalers": autoscalers}))
}

/// One line per Autoscaler.
pub fn table(plan: &Value) -> String {
    let mut rows = vec![["NAMESPACE", "NAME", "TARGET", "CURRENT", "DESIRED", "WHY"].map(str::to_owned)];
    for a in plan["autoscalers"].as_array().into_iter().flatten() {
        let h = &a["horizontal"];
        let why = if let Some(e) = a["errors"].as_array().and_then(|e| e.first()) {
            e.as_str().unwrap_or_default().to_owned()
        } else if h.is_null() {
            "no horizontal spec".to_owned()
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

/// `omniscale plan`.
pub fn run(args: &PlanArgs) -> Result<String, PlanError> {
    let now = match &args.now {
        Some(s) => s
            .parse::<Timestamp>()
            .map_err(|e| PlanError(format!("--now {s:?}: {e} (RFC 3339, e.g. 2026-01-01T12:00:00Z)")))?,
        None => Timestamp::now(),
    };
    let plan = plan(&args.files, now)?;
    Ok(match args.output {
        PlanOutput::Json => serde_json::to_string_pretty(&plan).unwrap_or_default(),
        PlanOutput::Table => table(&plan),
    })
}
