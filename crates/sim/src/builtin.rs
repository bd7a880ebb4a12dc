//! Decoding and validation of built-in kinds. Objects are round-tripped through the k8s-openapi
//! types, which gives the API server's decoding behaviour for free: wrong types are a 400, and
//! fields the kind does not have are dropped (or rejected under `fieldValidation=Strict`).

use crate::selector::LabelSelector;
use k8s_openapi::api::{
    admissionregistration::v1 as adm, apps::v1 as apps, coordination::v1 as coord, core::v1 as core, events::v1 as ev,
    policy::v1 as policy, rbac::v1 as rbac,
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1 as apiext;
use serde_json::Value;

fn rt<T: serde::de::DeserializeOwned + serde::Serialize>(v: &Value) -> Result<Value, String> {
    let typed: T = serde_json::from_value(v.clone()).map_err(|e| e.to_string())?;
    serde_json::to_value(typed).map_err(|e| e.to_string())
}

/// Round-trips `v` through the typed form of `group`/`kind`. Unknown kinds pass through.
pub fn decode(group: &str, kind: &str, v: &Value) -> Result<Value, String> {
    match (group, kind) {
        ("", "Namespace") => rt::<core::Namespace>(v),
        ("", "Pod") => rt::<core::Pod>(v),
        ("", "Node") => rt::<core::Node>(v),
        ("", "Event") => rt::<core::Event>(v),
        ("", "Service") => rt::<core::Service>(v),
        ("", "ConfigMap") => rt::<core::ConfigMap>(v),
        ("", "Secret") => rt::<core::Secret>(v),
        ("", "LimitRange") => rt::<core::LimitRange>(v),
        ("", "ServiceAccount") => rt::<core::ServiceAccount>(v),
        ("apps", "Deployment") => rt::<apps::Deployment>(v),
        ("apps", "ReplicaSet") => rt::<apps::ReplicaSet>(v),
        ("apps", "StatefulSet") => rt::<apps::StatefulSet>(v),
        ("apps", "DaemonSet") => rt::<apps::DaemonSet>(v),
        ("policy", "PodDisruptionBudget") => rt::<policy::PodDisruptionBudget>(v),
        ("policy", "Eviction") => rt::<policy::Eviction>(v),
        ("coordination.k8s.io", "Lease") => rt::<coord::Lease>(v),
        ("events.k8s.io", "Event") => rt::<ev::Event>(v),
        ("apiextensions.k8s.io", "CustomResourceDefinition") => rt::<apiext::CustomResourceDefinition>(v),
        ("admissionregistration.k8s.io", "MutatingWebhookConfiguration") => rt::<adm::MutatingWebhookConfiguration>(v),
        ("rbac.authorization.k8s.io", "ClusterRole") => rt::<rbac::ClusterRole>(v),
        ("rbac.authorization.k8s.io", "ClusterRoleBinding") => rt::<rbac::ClusterRoleBinding>(v),
        ("rbac.authorization.k8s.io", "Role") => rt::<rbac::Role>(v),
        ("rbac.authorization.k8s.io", "RoleBinding") => rt::<rbac::RoleBinding>(v),
        _ => Ok(v.clone()),
    }
}

/// Paths present in `input` but missing after decoding: the fields the kind does not have.
pub fn unknown_fields(input: &Value, decoded: &Value) -> Vec<String> {
    let mut out = Vec::new();
    diff(input, decoded, String::new(), &mut out);
    out
}

fn diff(a: &Value, b: &Value, path: String, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for (k, v) in x {
                let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                match y.get(k) {
                    Some(w) => diff(v, w, p, out),
                    None if v.is_null() || v.as_object().is_some_and(|o| o.is_empty()) => {}
                    None => out.push(p),
                }
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            for (i, (v, w)) in x.iter().zip(y).enumerate() {
                diff(v, w, format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// RFC 1123 subdomain, the rule for most object names.
pub fn valid_subdomain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

/// RFC 1123 label, the rule for namespaces and services.
pub fn valid_label(name: &str) -> bool {
    name.len() <= 63 && valid_subdomain(name) && !name.contains('.')
}

/// Semantic checks the API server's strategies run on create and update, for the fields the
/// simulator's users touch. Returns `(field, message)` causes for a 422.
pub fn validate(group: &str, kind: &str, obj: &Value) -> Vec<(String, String)> {
    let mut errs = Vec::new();
    let name = obj["metadata"]["name"].as_str().unwrap_or_default();
    let label_rule = matches!(kind, "Namespace" | "Service");
    if !(if label_rule { valid_label(name) } else { valid_subdomain(name) }) {
        let rule = if label_rule {
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character"
        } else {
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
        };
        errs.push(("metadata.name".into(), format!("Invalid value: \"{name}\": {rule}")));
    }
    let pod_spec = |spec: &Value, prefix: &str, errs: &mut Vec<(String, String)>| {
        let containers = spec["containers"].as_array().map(Vec::as_slice).unwrap_or_default();
        if containers.is_empty() {
            errs.push((format!("{prefix}.containers"), "Required value".into()));
        }
        for (i, c) in containers.iter().enumerate() {
            if c["name"].as_str().is_none_or(|n| !valid_label(n)) {
                errs.push((format!("{prefix}.containers[{i}].name"), "Required value".into()));
            }
            if c["image"].as_str().is_none_or(str::is_empty) {
                errs.push((format!("{prefix}.containers[{i}].image"), "Required value".into()));
            }
        }
    };
    match (group, kind) {
        ("", "Pod") => pod_spec(&obj["spec"], "spec", &mut errs),
        ("apps", "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet") => {
            let spec = &obj["spec"];
            if spec["replicas"].as_i64().is_some_and(|r| r < 0) {
                errs.push((
                    "spec.replicas".into(),
                    format!("Invalid value: {}: must be greater than or equal to 0", spec["replicas"]),
                ));
            }
            match LabelSelector::from_json(&spec["selector"]) {
                Err(e) => errs.push(("spec.selector".into(), e)),
                Ok(sel) if sel.is_empty() || spec["selector"].is_null() => {
                    errs.push(("spec.selector".into(), "Required value".into()))
                }
                Ok(sel) => {
                    if !sel.matches_object(&spec["template"]) {
                        errs.push((
                            "spec.template.metadata.labels".into(),
                            format!(
                                "Invalid value: {}: `selector` does not match template `labels`",
                                spec["template"]["metadata"]["labels"]
                            ),
                        ));
                    }
                }
            }
            pod_spec(&spec["template"]["spec"], "spec.template.spec", &mut errs);
        }
        ("admissionregistration.k8s.io", "MutatingWebhookConfiguration") => webhooks(obj, &mut errs),
        _ => {}
    }
    errs
}

/// The checks upstream makes on webhook configurations that decide whether a call is possible.
fn webhooks(obj: &Value, errs: &mut Vec<(String, String)>) {
    let mut seen = std::collections::BTreeSet::new();
    for (i, w) in obj["webhooks"].as_array().into_iter().flatten().enumerate() {
        let p = format!("webhooks[{i}]");
        let name = w["name"].as_str().unwrap_or_default();
        if name.split('.').count() < 3 || !valid_subdomain(name) {
            errs.push((
                format!("{p}.name"),
                format!("Invalid value: \"{name}\": should be a domain with at least three segments separated by dots"),
            ));
        } else if !seen.insert(name) {
            errs.push((format!("{p}.name"), format!("Duplicate value: \"{name}\"")));
        }
        let cc = &w["clientConfig"];
        if cc["url"].is_string() == cc["service"].is_object() {
            errs.push((
                format!("{p}.clientConfig"),
                "Required value: exactly one of url or service is required".into(),
            ));
        }
        if let Some(url) = cc["url"].as_str() {
            if !url.starts_with("https://") {
                errs.push((
                    format!("{p}.clientConfig.url"),
                    "Unsupported value: \"http\": supported values: \"https\"".into(),
                ));
            }
        }
        if !matches!(w["sideEffects"].as_str(), Some("None" | "NoneOnDryRun")) {
            errs.push((
                format!("{p}.sideEffects"),
                "Unsupported value: must specify one of \"None\", \"NoneOnDryRun\"".into(),
            ));
        }
        let versions = w["admissionReviewVersions"].as_array().map(Vec::as_slice).unwrap_or_default();
        if !versions.iter().any(|v| v == "v1" || v == "v1beta1") {
            errs.push((
                format!("{p}.admissionReviewVersions"),
                "Required value: must specify one of v1, v1beta1".into(),
            ));
        }
        if !matches!(w["failurePolicy"].as_str(), Some("Fail" | "Ignore")) {
            errs.push((
                format!("{p}.failurePolicy"),
                format!("Unsupported value: {}: supported values: \"Fail\", \"Ignore\"", w["failurePolicy"]),
            ));
        }
        if w["timeoutSeconds"].as_i64().is_some_and(|t| !(1..=30).contains(&t)) {
            errs.push((
                format!("{p}.timeoutSeconds"),
                format!("Invalid value: {}: the timeout value must be between 1 and 30 seconds", w["timeoutSeconds"]),
            ));
        }
        for (sel, field) in [(&w["namespaceSelector"], "namespaceSelector"), (&w["objectSelector"], "objectSelector")] {
            if let Err(e) = LabelSelector::from_json(sel) {
                errs.push((format!("{p}.{field}"), format!("Invalid value: {e}")));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn decoding_drops_and_reports_unknown_fields() {
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c", "image": "i", "imagePolicy": "x"}], "bogus": 1}});
        let d = decode("", "Pod", &pod).unwrap();
        let unknown = unknown_fields(&pod, &d);
        assert_eq!(unknown, vec!["spec.bogus".to_owned(), "spec.containers[0].imagePolicy".to_owned()]);
        assert!(decode("", "Pod", &json!({"spec": {"containers": "nope"}})).is_err());
    }

    #[test]
    fn workload_validation() {
        let d = json!({"metadata": {"name": "Bad_Name"}, "spec": {"replicas": -1,
            "selector": {"matchLabels": {"app": "a"}},
            "template": {"metadata": {"labels": {"app": "b"}}, "spec": {"containers": [{"name": "c"}]}}}});
        let errs: Vec<String> = validate("apps", "Deployment", &d).into_iter().map(|(f, _)| f).collect();
        assert_eq!(
            errs,
            vec![
                "metadata.name",
                "spec.replicas",
                "spec.template.metadata.labels",
                "spec.template.spec.containers[0].image"
            ]
        );
        assert!(valid_subdomain("a.b-c") && !valid_label("a.b") && !valid_subdomain("-a"));
    }
}
