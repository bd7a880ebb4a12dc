//! Server-side printing: the `meta.k8s.io/v1` Table responses `kubectl get` asks for, with the
//! columns kube-apiserver prints for the built-in kinds and CRD `additionalPrinterColumns`.

use crate::registry::ResourceType;
use jiff::Timestamp;
use serde_json::{Value, json};

fn col(name: &str, type_: &str, priority: i64) -> Value {
    let format = if name == "Name" { "name" } else { "" };
    json!({"name": name, "type": type_, "format": format, "description": "", "priority": priority})
}

/// `kubectl`'s human duration ("5m", "2d3h"), measured on the simulated clock.
pub fn human_age(created: &Value, now: Timestamp) -> String {
    let Some(t) = created.as_str().and_then(|s| s.parse::<Timestamp>().ok()) else { return "<unknown>".into() };
    let secs = now.duration_since(t).as_secs();
    if secs < -1 {
        return "<invalid>".into();
    }
    let s = secs.max(0);
    let (m, h, d) = (s / 60, s / 3600, s / 86_400);
    if s < 120 {
        format!("{s}s")
    } else if m < 10 {
        if s % 60 == 0 { format!("{m}m") } else { format!("{m}m{}s", s % 60) }
    } else if m < 180 {
        format!("{m}m")
    } else if h < 8 {
        if m % 60 == 0 { format!("{h}h") } else { format!("{h}h{}m", m % 60) }
    } else if h < 48 {
        format!("{h}h")
    } else if h < 24 * 8 {
        if h % 24 == 0 { format!("{d}d") } else { format!("{d}d{}h", h % 24) }
    } else if d < 365 * 2 {
        format!("{d}d")
    } else {
        format!("{}y", d / 365)
    }
}

fn n(v: &Value) -> i64 {
    v.as_i64().unwrap_or(0)
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "<none>".into(),
        other => other.to_string(),
    }
}

fn pod_status(p: &Value) -> String {
    if !p["metadata"]["deletionTimestamp"].is_null() {
        return "Terminating".into();
    }
    if let Some(r) = p["status"]["reason"].as_str() {
        return r.into();
    }
    for cs in p["status"]["containerStatuses"].as_array().into_iter().flatten() {
        if let Some(r) = cs["state"]["waiting"]["reason"].as_str() {
            return r.into();
        }
    }
    let unschedulable = p["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "PodScheduled" && c["status"] == "False");
    if unschedulable {
        return "Pending".into();
    }
    p["status"]["phase"].as_str().unwrap_or("Pending").into()
}

fn columns_and_cells(rt: &ResourceType, o: &Value, now: Timestamp) -> (Vec<Value>, Vec<Value>) {
    let name = o["metadata"]["name"].clone();
    let age = Value::String(human_age(&o["metadata"]["creationTimestamp"], now));
    let (st, sp) = (&o["status"], &o["spec"]);
    match (rt.group.as_str(), rt.kind.as_str()) {
        ("", "Pod") => {
            let total = sp["containers"].as_array().map_or(0, Vec::len);
            let statuses = st["containerStatuses"].as_array().cloned().unwrap_or_default();
            let ready = statuses.iter().filter(|c| c["ready"] == true).count();
            let restarts: i64 = statuses.iter().map(|c| n(&c["restartCount"])).sum();
            (
                vec![
                    col("Name", "string", 0),
                    col("Ready", "string", 0),
                    col("Status", "string", 0),
                    col("Restarts", "string", 0),
                    col("Age", "string", 0),
                    col("IP", "string", 1),
                    col("Node", "string", 1),
                ],
                vec![
                    name,
                    json!(format!("{ready}/{total}")),
                    json!(pod_status(o)),
                    json!(restarts.to_string()),
                    age,
                    json!(st["podIP"].as_str().unwrap_or("<none>")),
                    json!(sp["nodeName"].as_str().unwrap_or("<none>")),
                ],
            )
        }
        ("", "Node") => {
            let ready = st["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True");
            let mut status = if ready { "Ready".to_owned() } else { "NotReady".to_owned() };
            if sp["unschedulable"] == true {
                status.push_str(",SchedulingDisabled");
            }
            let ip = st["addresses"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|a| a["type"] == "InternalIP")
                .map(|a| s(&a["address"]));
            let itype = o["metadata"]["labels"]["node.kubernetes.io/instance-type"].as_str().unwrap_or("<none>");
            (
                vec![
                    col("Name", "string", 0),
                    col("Status", "string", 0),
                    col("Roles", "string", 0),
                    col("Age", "string", 0),
                    col("Version", "string", 0),
                    col("Internal-IP", "string", 1),
                    col("Instance-Type", "string", 1),
                ],
                vec![
                    name,
                    json!(status),
                    json!("<none>"),
                    age,
                    json!(st["nodeInfo"]["kubeletVersion"].as_str().unwrap_or("")),
                    json!(ip.unwrap_or_else(|| "<none>".into())),
                    json!(itype),
                ],
            )
        }
        ("apps", "Deployment") => (
            vec![
                col("Name", "string", 0),
                col("Ready", "string", 0),
                col("Up-to-date", "integer", 0),
                col("Available", "integer", 0),
                col("Age", "string", 0),
            ],
            vec![
                name,
                json!(format!("{}/{}", n(&st["readyReplicas"]), n(&sp["replicas"]))),
                json!(n(&st["updatedReplicas"])),
                json!(n(&st["availableReplicas"])),
                age,
            ],
        ),
        ("apps", "ReplicaSet") => (
            vec![
                col("Name", "string", 0),
                col("Desired", "integer", 0),
                col("Current", "integer", 0),
                col("Ready", "integer", 0),
                col("Age", "string", 0),
            ],
            vec![name, json!(n(&sp["replicas"])), json!(n(&st["replicas"])), json!(n(&st["readyReplicas"])), age],
        ),
        ("apps", "StatefulSet") => (
            vec![col("Name", "string", 0), col("Ready", "string", 0), col("Age", "string", 0)],
            vec![name, json!(format!("{}/{}", n(&st["readyReplicas"]), n(&sp["replicas"]))), age],
        ),
        ("apps", "DaemonSet") => (
            vec![
                col("Name", "string", 0),
                col("Desired", "integer", 0),
                col("Current", "integer", 0),
                col("Ready", "integer", 0),
                col("Age", "string", 0),
            ],
            vec![
                name,
                json!(n(&st["desiredNumberScheduled"])),
                json!(n(&st["currentNumberScheduled"])),
                json!(n(&st["numberReady"])),
                age,
            ],
        ),
        ("", "Namespace") => (
            vec![col("Name", "string", 0), col("Status", "string", 0), col("Age", "string", 0)],
            vec![name, json!(st["phase"].as_str().unwrap_or("Active")), age],
        ),
        ("policy", "PodDisruptionBudget") => (
            vec![
                col("Name", "string", 0),
                col("Min Available", "string", 0),
                col("Max Unavailable", "string", 0),
                col("Allowed Disruptions", "integer", 0),
                col("Age", "string", 0),
            ],
            vec![
                name,
                json!(if sp["minAvailable"].is_null() { "N/A".into() } else { s(&sp["minAvailable"]) }),
                json!(if sp["maxUnavailable"].is_null() { "N/A".into() } else { s(&sp["maxUnavailable"]) }),
                json!(n(&st["disruptionsAllowed"])),
                age,
            ],
        ),
        ("coordination.k8s.io", "Lease") => (
            vec![col("Name", "string", 0), col("Holder", "string", 0), col("Age", "string", 0)],
            vec![name, json!(sp["holderIdentity"].as_str().unwrap_or("")), age],
        ),
        ("", "Event") => (
            vec![
                col("Last Seen", "string", 0),
                col("Type", "string", 0),
                col("Reason", "string", 0),
                col("Object", "string", 0),
                col("Message", "string", 0),
            ],
            vec![
                json!(human_age(if o["lastTimestamp"].is_null() { &o["eventTime"] } else { &o["lastTimestamp"] }, now)),
                json!(o["type"].as_str().unwrap_or("")),
                json!(o["reason"].as_str().unwrap_or("")),
                json!(format!(
                    "{}/{}",
                    o["involvedObject"]["kind"].as_str().unwrap_or("").to_lowercase(),
                    o["involvedObject"]["name"].as_str().unwrap_or("")
                )),
                json!(o["message"].as_str().unwrap_or("")),
            ],
        ),
        ("apiextensions.k8s.io", "CustomResourceDefinition") => (
            vec![col("Name", "string", 0), col("Created At", "date", 0)],
            vec![name, o["metadata"]["creationTimestamp"].clone()],
        ),
        _ if !rt.printer_columns.is_empty() => {
            let mut cols = vec![col("Name", "string", 0)];
            let mut cells = vec![name];
            for c in &rt.printer_columns {
                let mut d = col(&c.name, &c.type_, c.priority);
                d["description"] = json!(c.description);
                cols.push(d);
                let v = json_path(o, &c.json_path);
                cells.push(if c.type_ == "date" {
                    if v.is_null() { Value::Null } else { json!(human_age(&v, now)) }
                } else {
                    v
                });
            }
            (cols, cells)
        }
        _ => (vec![col("Name", "string", 0), col("Age", "string", 0)], vec![name, age]),
    }
}

/// A tiny JSONPath for printer columns: `.a.b`, `.a[0].b`, `.a[?(@.k=="v")].b`.
pub fn json_path(obj: &Value, path: &str) -> Value {
    let mut cur = vec![obj.clone()];
    let mut rest = path.trim().trim_start_matches('{').trim_end_matches('}').trim_start_matches('$');
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            let field = &r[..end];
            cur = cur.iter().map(|v| v[field].clone()).collect();
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let Some(end) = r.find(']') else { return Value::Null };
            let inner = &r[..end];
            rest = &r[end + 1..];
            if let Some(filter) = inner.strip_prefix("?(@.").and_then(|f| f.strip_suffix(')')) {
                let Some((k, v)) = filter.split_once("==") else { return Value::Null };
                let v = v.trim().trim_matches(|c| c == '"' || c == '\'');
                cur = cur
                    .iter()
                    .flat_map(|x| x.as_array().cloned().unwrap_or_default())
                    .filter(|e| e[k.trim()].as_str() == Some(v) || e[k.trim()] == v)
                    .collect();
            } else if let Ok(i) = inner.parse::<usize>() {
                cur = cur.iter().map(|x| x[i].clone()).collect();
            } else if inner == "*" {
                cur = cur.iter().flat_map(|x| x.as_array().cloned().unwrap_or_default()).collect();
            } else {
                return Value::Null;
            }
        } else {
            return Value::Null;
        }
    }
    match cur.len() {
        0 => Value::Null,
        1 => cur.pop().unwrap_or(Value::Null),
        _ => Value::String(cur.iter().map(s).collect::<Vec<_>>().join(",")),
    }
}

/// Builds a Table from objects already presented at the requested version.
pub fn table(rt: &ResourceType, objects: &[Value], include: &str, now: Timestamp, list_meta: Value) -> Value {
    let mut defs = None;
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| {
            let (cols, cells) = columns_and_cells(rt, o, now);
            defs.get_or_insert(cols);
            let object = match include {
                "None" => Value::Null,
                "Object" => o.clone(),
                _ => {
                    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o["metadata"]})
                }
            };
            json!({"cells": cells, "object": object})
        })
        .collect();
    let defs = defs.unwrap_or_else(|| columns_and_cells(rt, &json!({"metadata": {}}), now).0);
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": list_meta, "columnDefinitions": defs, "rows": rows})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_like_kubectl() {
        let now: Timestamp = "2024-01-01T12:00:00Z".parse().unwrap();
        let at = |s: &str| json!(s);
        assert_eq!(human_age(&at("2024-01-01T11:59:30Z"), now), "30s");
        assert_eq!(human_age(&at("2024-01-01T11:55:30Z"), now), "4m30s");
        assert_eq!(human_age(&at("2024-01-01T11:00:00Z"), now), "60m");
        assert_eq!(human_age(&at("2024-01-01T07:30:00Z"), now), "4h30m");
        assert_eq!(human_age(&at("2023-12-29T12:00:00Z"), now), "3d");
        assert_eq!(human_age(&at("2024-01-01T13:00:00Z"), now), "<invalid>");
    }

    #[test]
    fn json_paths_for_printer_columns() {
        let o = json!({"status": {"conditions": [{"type": "A", "status": "False"}, {"type": "Ready", "status": "True"}]}, "spec": {"n": 3}});
        assert_eq!(json_path(&o, ".spec.n"), json!(3));
        assert_eq!(json_path(&o, ".status.conditions[?(@.type==\"Ready\")].status"), json!("True"));
        assert_eq!(json_path(&o, ".status.conditions[0].type"), json!("A"));
        assert_eq!(json_path(&o, ".missing.x"), Value::Null);
    }
}
