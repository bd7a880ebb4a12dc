//! Patch strategies and server-side-apply field ownership.
//!
//! JSON patch and JSON merge patch are exact (RFC 6902 / RFC 7386). Strategic merge patch and
//! server-side apply need to know how each list merges; upstream reads that from Go struct tags
//! and OpenAPI extensions. Here built-in kinds use a table of the list merge keys that matter for
//! the workloads the simulator runs, and custom resources read `x-kubernetes-list-type` /
//! `x-kubernetes-list-map-keys` from their schema, as upstream does.

use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};

/// How a list merges, in both strategic merge patch and server-side apply.
#[derive(Clone, Debug, PartialEq)]
pub enum ListType {
    /// Replaced as a whole.
    Atomic,
    /// Elements identified by these key fields and merged.
    Map(Vec<String>),
    /// Scalars merged as a set (finalizers).
    Set,
}

/// Answers "how does the list at this field path merge?" for one resource type.
#[derive(Clone, Debug)]
pub enum ListMeta {
    Builtin,
    Schema(Value),
}

impl ListMeta {
    /// `path` holds the field names from the object root, list positions omitted.
    pub fn list_type(&self, path: &[String]) -> ListType {
        match self {
            ListMeta::Builtin => builtin_list_type(path),
            ListMeta::Schema(schema) => {
                if path.first().map(String::as_str) == Some("metadata") {
                    return builtin_list_type(path);
                }
                let mut node = schema;
                for seg in path {
                    node = descend(node, seg);
                }
                match node.get("x-kubernetes-list-type").and_then(Value::as_str) {
                    Some("map") => ListType::Map(
                        node["x-kubernetes-list-map-keys"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(|k| k.as_str().map(str::to_owned))
                            .collect(),
                    ),
                    Some("set") => ListType::Set,
                    _ => ListType::Atomic,
                }
            }
        }
    }
}

fn descend<'a>(node: &'a Value, seg: &str) -> &'a Value {
    // Arrays are transparent in the path: step into `items` first.
    let node = if node.get("type").and_then(Value::as_str) == Some("array") { &node["items"] } else { node };
    node.get("properties")
        .and_then(|p| p.get(seg))
        .or_else(|| node.get("additionalProperties").filter(|a| a.is_object()))
        .unwrap_or(&Value::Null)
}

fn builtin_list_type(path: &[String]) -> ListType {
    let Some(last) = path.last().map(String::as_str) else { return ListType::Atomic };
    let parent = path.len().checked_sub(2).map(|i| path[i].as_str()).unwrap_or("");
    let keys = |ks: &[&str]| ListType::Map(ks.iter().map(|k| (*k).to_owned()).collect());
    match last {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "env"
        | "imagePullSecrets"
        | "resourceClaims"
        | "containerStatuses"
        | "initContainerStatuses" => keys(&["name"]),
        "conditions" => keys(&["type"]),
        "volumeMounts" => keys(&["mountPath"]),
        "volumeDevices" => keys(&["devicePath"]),
        "ownerReferences" => keys(&["uid"]),
        "finalizers" => ListType::Set,
        "addresses" if parent == "status" => keys(&["type"]),
        "ports" if path.iter().any(|p| p == "containers" || p == "initContainers") => {
            keys(&["containerPort", "protocol"])
        }
        "ports" if parent == "spec" => keys(&["port", "protocol"]),
        "managedFields" => ListType::Atomic,
        _ => ListType::Atomic,
    }
}

/// RFC 7386 JSON merge patch.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    json_patch::merge(target, patch);
}

/// RFC 6902 JSON patch.
pub fn json_patch(target: &mut Value, patch: &Value) -> Result<(), String> {
    let p: json_patch::Patch = serde_json::from_value(patch.clone()).map_err(|e| e.to_string())?;
    json_patch::patch(target, &p).map_err(|e| e.to_string())
}

/// Strategic merge patch with the directives kubectl sends (`$patch`, `$retainKeys`,
/// `$setElementOrder/…`, `$deleteFromPrimitiveList/…`).
pub fn strategic_merge(target: &Value, patch: &Value, meta: &ListMeta) -> Result<Value, String> {
    let mut path = Vec::new();
    smp_value(target, patch, meta, &mut path)
}

fn smp_value(target: &Value, patch: &Value, meta: &ListMeta, path: &mut Vec<String>) -> Result<Value, String> {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => smp_object(t, p, meta, path),
        (_, Value::Object(p)) => smp_object(&Map::new(), p, meta, path),
        (_, p) => Ok(strip_directives(p)),
    }
}

fn smp_object(
    target: &Map<String, Value>,
    patch: &Map<String, Value>,
    meta: &ListMeta,
    path: &mut Vec<String>,
) -> Result<Value, String> {
    match patch.get("$patch").and_then(Value::as_str) {
        Some("replace") => {
            let mut p = patch.clone();
            p.remove("$patch");
            return Ok(strip_directives(&Value::Object(p)));
        }
        Some("delete") => return Ok(Value::Null),
        Some("merge") | None => {}
        Some(other) => return Err(format!("unknown patch type: {other}")),
    }
    let mut out = target.clone();
    if let Some(keep) = patch.get("$retainKeys").and_then(Value::as_array) {
        let keep: BTreeSet<&str> = keep.iter().filter_map(Value::as_str).collect();
        out.retain(|k, _| keep.contains(k.as_str()));
    }
    for (k, v) in patch {
        if k == "$patch" || k == "$retainKeys" || k.starts_with("$setElementOrder/") {
            continue;
        }
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(list)), Some(del)) = (out.get_mut(field), v.as_array()) {
                list.retain(|e| !del.contains(e));
            }
            continue;
        }
        if k.starts_with('$') {
            return Err(format!("unknown directive {k}"));
        }
        if v.is_null() {
            out.remove(k);
            continue;
        }
        path.push(k.clone());
        let merged = match (out.get(k), v) {
            (Some(cur), Value::Array(items)) => smp_list(cur, items, meta, path)?,
            (None, Value::Array(items)) => smp_list(&Value::Array(vec![]), items, meta, path)?,
            (Some(cur), p) => smp_value(cur, p, meta, path)?,
            (None, p) => smp_value(&Value::Null, p, meta, path)?,
        };
        path.pop();
        if merged.is_null() {
            out.remove(k);
        } else {
            out.insert(k.clone(), merged);
        }
    }
    Ok(Value::Object(out))
}

fn smp_list(current: &Value, items: &[Value], meta: &ListMeta, path: &mut Vec<String>) -> Result<Value, String> {
    let cur = current.as_array().cloned().unwrap_or_default();
    if items.iter().any(|i| i.get("$patch").and_then(Value::as_str) == Some("replace")) {
        let kept = items.iter().filter(|i| i.get("$patch").is_none()).map(strip_directives).collect();
        return Ok(Value::Array(kept));
    }
    match meta.list_type(path) {
        ListType::Atomic => Ok(Value::Array(items.iter().map(strip_directives).collect())),
        ListType::Set => {
            let mut out = cur;
            for i in items {
                if !out.contains(i) {
                    out.push(i.clone());
                }
            }
            Ok(Value::Array(out))
        }
        ListType::Map(keys) => {
            let mut out = cur;
            for item in items {
                let idx = out.iter().position(|e| same_key(e, item, &keys));
                let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
                match (idx, delete) {
                    (Some(i), true) => {
                        out.remove(i);
                    }
                    (None, true) => {}
                    (Some(i), false) => {
                        let merged = smp_value(&out[i], item, meta, path)?;
                        out[i] = merged;
                    }
                    (None, false) => out.push(strip_directives(item)),
                }
            }
            Ok(Value::Array(out))
        }
    }
}

fn same_key(a: &Value, b: &Value, keys: &[String]) -> bool {
    keys.iter().all(|k| key_field(a, k) == key_field(b, k))
}

/// Upstream defaults `protocol` to TCP before merging port lists; treat a missing protocol so.
fn key_field<'a>(v: &'a Value, k: &str) -> &'a Value {
    static TCP: std::sync::LazyLock<Value> = std::sync::LazyLock::new(|| Value::String("TCP".into()));
    match v.get(k) {
        Some(x) if !x.is_null() => x,
        _ if k == "protocol" => &TCP,
        _ => &Value::Null,
    }
}

fn strip_directives(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter().filter(|(k, _)| !k.starts_with('$')).map(|(k, v)| (k.clone(), strip_directives(v))).collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(strip_directives).collect()),
        other => other.clone(),
    }
}

// ---------------------------------------------------------------------------------------------
// Server-side apply: field sets in the `FieldsV1` encoding.

/// One step of a field path in `FieldsV1` spelling: `f:name`, `k:{"name":"x"}`, `v:"a"`, `.`.
pub type FieldPath = Vec<String>;

/// Leaf field paths of an object with their values. List-map items contribute an item marker
/// (`.`) so ownership of the element itself is tracked, as upstream does.
pub fn leaves(v: &Value, meta: &ListMeta) -> BTreeMap<FieldPath, Value> {
    let mut out = BTreeMap::new();
    let mut fp = Vec::new();
    let mut names = Vec::new();
    collect(v, meta, &mut fp, &mut names, &mut out);
    out
}

fn collect(
    v: &Value,
    meta: &ListMeta,
    fp: &mut FieldPath,
    names: &mut Vec<String>,
    out: &mut BTreeMap<FieldPath, Value>,
) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, child) in m {
                fp.push(format!("f:{k}"));
                names.push(k.clone());
                collect(child, meta, fp, names, out);
                names.pop();
                fp.pop();
            }
        }
        Value::Array(items) if !items.is_empty() => match meta.list_type(names) {
            ListType::Map(keys) => {
                for item in items {
                    let mut key = Map::new();
                    for k in &keys {
                        let kv = key_field(item, k);
                        if !kv.is_null() {
                            key.insert(k.clone(), kv.clone());
                        }
                    }
                    fp.push(format!("k:{}", Value::Object(key)));
                    fp.push(".".into());
                    out.insert(fp.clone(), Value::Null);
                    fp.pop();
                    collect(item, meta, fp, names, out);
                    fp.pop();
                }
            }
            ListType::Set => {
                for item in items {
                    fp.push(format!("v:{item}"));
                    out.insert(fp.clone(), Value::Null);
                    fp.pop();
                }
            }
            ListType::Atomic => {
                out.insert(fp.clone(), v.clone());
            }
        },
        _ => {
            if !fp.is_empty() {
                out.insert(fp.clone(), v.clone());
            }
        }
    }
}

/// Encodes a field set as `FieldsV1` JSON.
pub fn to_fields_v1(set: &BTreeSet<FieldPath>) -> Value {
    let mut root = Map::new();
    for path in set {
        let mut node = &mut root;
        for seg in path {
            let entry = node.entry(seg.clone()).or_insert_with(|| Value::Object(Map::new()));
            let Value::Object(next) = entry else { break };
            node = next;
        }
    }
    Value::Object(root)
}

/// Decodes `FieldsV1` JSON into the set of leaf paths (and item markers).
pub fn from_fields_v1(v: &Value) -> BTreeSet<FieldPath> {
    let mut out = BTreeSet::new();
    let mut path = Vec::new();
    walk_fields(v, &mut path, &mut out);
    out
}

fn walk_fields(v: &Value, path: &mut FieldPath, out: &mut BTreeSet<FieldPath>) {
    match v.as_object() {
        Some(m) if !m.is_empty() => {
            for (k, child) in m {
                path.push(k.clone());
                walk_fields(child, path, out);
                path.pop();
            }
        }
        _ => {
            if !path.is_empty() {
                out.insert(path.clone());
            }
        }
    }
}

/// Human path for conflict messages: `.spec.replicas`, `.spec.containers[name="app"].image`.
pub fn display_path(path: &FieldPath) -> String {
    let mut s = String::new();
    for seg in path {
        if let Some(f) = seg.strip_prefix("f:") {
            s.push('.');
            s.push_str(f);
        } else if let Some(k) = seg.strip_prefix("k:") {
            let key: Map<String, Value> = serde_json::from_str(k).unwrap_or_default();
            let parts: Vec<String> = key.iter().map(|(k, v)| format!("{k}={v}")).collect();
            s.push_str(&format!("[{}]", parts.join(",")));
        } else if let Some(v) = seg.strip_prefix("v:") {
            s.push_str(&format!("[={v}]"));
        }
    }
    s
}

/// Merges an applied configuration into the live object: maps recursively, list-maps by key,
/// sets by union, everything else replaced.
pub fn apply_merge(live: &Value, config: &Value, meta: &ListMeta) -> Value {
    let mut names = Vec::new();
    apply_merge_at(live, config, meta, &mut names)
}

fn apply_merge_at(live: &Value, config: &Value, meta: &ListMeta, names: &mut Vec<String>) -> Value {
    match (live, config) {
        (Value::Object(l), Value::Object(c)) => {
            let mut out = l.clone();
            for (k, v) in c {
                names.push(k.clone());
                let merged = match out.get(k) {
                    Some(cur) => apply_merge_at(cur, v, meta, names),
                    None => v.clone(),
                };
                names.pop();
                out.insert(k.clone(), merged);
            }
            Value::Object(out)
        }
        (Value::Array(l), Value::Array(c)) => match meta.list_type(names) {
            ListType::Map(keys) => {
                let mut out = l.clone();
                for item in c {
                    match out.iter().position(|e| same_key(e, item, &keys)) {
                        Some(i) => out[i] = apply_merge_at(&out[i], item, meta, names),
                        None => out.push(item.clone()),
                    }
                }
                Value::Array(out)
            }
            ListType::Set => {
                let mut out = l.clone();
                for i in c {
                    if !out.contains(i) {
                        out.push(i.clone());
                    }
                }
                Value::Array(out)
            }
            ListType::Atomic => config.clone(),
        },
        _ => config.clone(),
    }
}

/// Removes the field at `path` (in `FieldsV1` spelling) from `obj`, if present. An item marker
/// (`.`) removes the whole list element.
pub fn remove_path(obj: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else { return };
    if last == "." {
        remove_item(obj, parents);
        return;
    }
    let Some(parent) = locate(obj, parents) else { return };
    if let Some(f) = last.strip_prefix("f:") {
        if let Some(m) = parent.as_object_mut() {
            m.remove(f);
        }
    } else if let Some(v) = last.strip_prefix("v:") {
        if let (Some(list), Ok(val)) = (parent.as_array_mut(), serde_json::from_str::<Value>(v)) {
            list.retain(|e| *e != val);
        }
    }
}

fn remove_item(obj: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else { return };
    let Some(key) = last.strip_prefix("k:").and_then(|k| serde_json::from_str::<Map<String, Value>>(k).ok()) else {
        return;
    };
    if let Some(Value::Array(list)) = locate(obj, parents) {
        list.retain(|e| !key.iter().all(|(k, v)| key_field(e, k) == v));
    }
}

fn locate<'a>(obj: &'a mut Value, path: &[String]) -> Option<&'a mut Value> {
    let mut cur = obj;
    for seg in path {
        if let Some(f) = seg.strip_prefix("f:") {
            cur = cur.as_object_mut()?.get_mut(f)?;
        } else if let Some(k) = seg.strip_prefix("k:") {
            let key: Map<String, Value> = serde_json::from_str(k).ok()?;
            cur = cur.as_array_mut()?.iter_mut().find(|e| key.iter().all(|(k, v)| key_field(e, k) == v))?;
        } else {
            return None;
        }
    }
    Some(cur)
}

/// Drops empty maps left behind after removing owned fields, so `metadata.labels: {}` does not
/// linger once its last owned label is gone.
pub fn prune_empty(v: &mut Value, depth: usize) {
    if let Value::Object(m) = v {
        for child in m.values_mut() {
            prune_empty(child, depth + 1);
        }
        if depth > 0 {
            m.retain(|_, c| !matches!(c, Value::Object(o) if o.is_empty()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn smp_merges_containers_by_name_and_honours_directives() {
        let live = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "a", "image": "a:1", "env": [{"name": "X", "value": "1"}]},
            {"name": "b", "image": "b:1"}]}}, "replicas": 1},
            "metadata": {"finalizers": ["f1"], "labels": {"x": "1", "y": "2"}}});
        let patch = json!({
            "metadata": {"finalizers": ["f2"], "labels": {"y": null}},
            "spec": {"replicas": 3, "template": {"spec": {
                "$setElementOrder/containers": [{"name": "a"}, {"name": "b"}],
                "containers": [{"name": "a", "image": "a:2", "env": [{"name": "Y", "value": "2"}]},
                               {"name": "b", "$patch": "delete"}]}}}});
        let out = strategic_merge(&live, &patch, &ListMeta::Builtin).unwrap();
        assert_eq!(out["spec"]["replicas"], 3);
        let cs = out["spec"]["template"]["spec"]["containers"].as_array().unwrap();
        assert_eq!(cs.len(), 1);
        assert_eq!(cs[0]["image"], "a:2");
        assert_eq!(cs[0]["env"].as_array().unwrap().len(), 2);
        assert_eq!(out["metadata"]["finalizers"], json!(["f1", "f2"]));
        assert_eq!(out["metadata"]["labels"], json!({"x": "1"}));
        let replaced =
            strategic_merge(&live, &json!({"spec": {"$patch": "replace", "replicas": 9}}), &ListMeta::Builtin).unwrap();
        assert_eq!(replaced["spec"], json!({"replicas": 9}));
        assert!(strategic_merge(&live, &json!({"$bogus": 1}), &ListMeta::Builtin).is_err());
    }

    #[test]
    fn field_sets_round_trip_through_fields_v1() {
        let obj = json!({"metadata": {"labels": {"a": "1"}}, "spec": {"replicas": 2, "template": {"spec": {
            "containers": [{"name": "c", "image": "i"}]}}}});
        let set: BTreeSet<FieldPath> = leaves(&obj, &ListMeta::Builtin).into_keys().collect();
        let v1 = to_fields_v1(&set);
        assert_eq!(v1["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"c\"}"]["f:image"], json!({}));
        assert_eq!(from_fields_v1(&v1), set);
        assert!(set.iter().any(|p| display_path(p) == ".spec.template.spec.containers[name=\"c\"].image"));
    }

    #[test]
    fn schema_list_types_drive_apply_merge() {
        let schema = json!({"type": "object", "properties": {"status": {"type": "object", "properties": {
            "conditions": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"],
                           "items": {"type": "object"}}}}}});
        let meta = ListMeta::Schema(schema);
        let live =
            json!({"status": {"conditions": [{"type": "A", "status": "True"}, {"type": "B", "status": "False"}]}});
        let cfg = json!({"status": {"conditions": [{"type": "B", "status": "True"}]}});
        let out = apply_merge(&live, &cfg, &meta);
        assert_eq!(out["status"]["conditions"].as_array().unwrap().len(), 2);
        assert_eq!(out["status"]["conditions"][1]["status"], "True");
        let mut o = out.clone();
        remove_path(&mut o, &["f:status".into(), "f:conditions".into(), "k:{\"type\":\"A\"}".into(), ".".into()]);
        assert_eq!(o["status"]["conditions"].as_array().unwrap().len(), 1);
    }
}
