//! The three metrics APIs as metrics-server and a Prometheus adapter answer them, computed from a
//! [`MetricsTable`]: `metrics.k8s.io/v1beta1` (PodMetrics, NodeMetrics),
//! `custom.metrics.k8s.io/v1beta2` and `external.metrics.k8s.io/v1beta1`.
//!
//! Shared by the embedded API server (which serves them itself) and the aggregated API server
//! the simulated world registers with a real kube-apiserver ([`crate::remote`]), so both answer
//! alike.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use crate::error::ApiError;
use crate::selector::LabelSelector;
use crate::server::MetricsTable;

/// Group/versions served, with the discovery document of each.
pub const GROUP_VERSIONS: [(&str, &str); 3] =
    [("metrics.k8s.io", "v1beta1"), ("custom.metrics.k8s.io", "v1beta2"), ("external.metrics.k8s.io", "v1beta1")];

/// The `APIResourceList` of one of [`GROUP_VERSIONS`].
pub fn discovery(group: &str, version: &str) -> Option<Value> {
    let resources = match group {
        "metrics.k8s.io" => json!([
            {"name": "nodes", "singularName": "", "namespaced": false, "kind": "NodeMetrics", "verbs": ["get", "list"]},
            {"name": "pods", "singularName": "", "namespaced": true, "kind": "PodMetrics", "verbs": ["get", "list"]}
        ]),
        // Adapters list the metrics they have; clients (HPA, omniscale) address them directly.
        "custom.metrics.k8s.io" => json!([
            {"name": "pods/requests_per_second", "singularName": "", "namespaced": true, "kind": "MetricValueList", "verbs": ["get"]}
        ]),
        "external.metrics.k8s.io" => json!([]),
        _ => return None,
    };
    GROUP_VERSIONS.contains(&(group, version)).then(|| {
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": format!("{group}/{version}"), "resources": resources})
    })
}

/// `pods` (in `ns`, or all) or `nodes` of metrics.k8s.io, one by `name` or a list, narrowed by
/// `labels`.
pub fn resource_metrics(
    table: &MetricsTable,
    plural: &str,
    ns: Option<&str>,
    name: Option<&str>,
    labels: &LabelSelector,
) -> Result<Value, ApiError> {
    let (kind, items): (&str, Vec<&Value>) = match plural {
        "pods" => {
            ("PodMetrics", table.pods.iter().filter(|((n, _), _)| ns.is_none_or(|x| x == n)).map(|(_, v)| v).collect())
        }
        "nodes" => ("NodeMetrics", table.nodes.values().collect()),
        _ => return Err(ApiError::not_found("the server could not find the requested resource", plural)),
    };
    let items: Vec<&Value> = items.into_iter().filter(|i| labels.matches_object(i)).collect();
    if let Some(n) = name {
        return items
            .into_iter()
            .find(|i| i["metadata"]["name"] == n)
            .cloned()
            .ok_or_else(|| ApiError::not_found(&format!("{plural}.metrics.k8s.io"), n));
    }
    Ok(json!({"kind": format!("{kind}List"), "apiVersion": "metrics.k8s.io/v1beta1", "metadata": {}, "items": items}))
}

/// custom.metrics.k8s.io/v1beta2, as an adapter serves it: `namespaces/NS/RESOURCE/NAME/METRIC`
/// (NAME `*` for every object) and `namespaces/NS/metrics/METRIC` for the namespace itself.
/// `described` gives the kind and apiVersion of a resource name; `selected` narrows `pods/*` to
/// the pods a label selector chose (adapters do that). Metric label selectors are accepted and
/// ignored: the simulated series carry no labels.
pub fn custom_metrics(
    table: &MetricsTable,
    rest: &[&str],
    now: &str,
    described: impl Fn(&str) -> (String, String),
    selected: Option<&BTreeSet<String>>,
) -> Result<Value, ApiError> {
    let (ns, resource, name, metric) = match rest {
        ["namespaces", ns, "metrics", metric] => (*ns, "namespaces", *ns, *metric),
        ["namespaces", ns, resource, name, metric] => (*ns, *resource, *name, *metric),
        _ => return Err(ApiError::not_found("path", &rest.join("/"))),
    };
    let (kind, api_version) = described(resource);
    let mut values: BTreeMap<&str, &String> = BTreeMap::new();
    for source in [&table.custom, &table.fixed_custom] {
        for ((n, r, o, m), v) in source {
            if n == ns && r == resource && m == metric && (name == "*" || o == name) {
                values.insert(o, v);
            }
        }
    }
    if let Some(selected) = selected {
        values.retain(|pod, _| selected.contains(*pod));
    }
    if values.is_empty() {
        return Err(ApiError::not_found(&format!("metric {metric} for {resource}"), name));
    }
    let items: Vec<Value> = values
        .into_iter()
        .map(|(o, v)| {
            json!({"describedObject": {"kind": kind, "namespace": ns, "name": o, "apiVersion": api_version},
                   "metric": {"name": metric}, "timestamp": now, "windowSeconds": 60, "value": v})
        })
        .collect();
    Ok(
        json!({"kind": "MetricValueList", "apiVersion": "custom.metrics.k8s.io/v1beta2", "metadata": {}, "items": items}),
    )
}

/// external.metrics.k8s.io/v1beta1: `namespaces/NS/METRIC`, series narrowed by `labels`.
pub fn external_metrics(
    table: &MetricsTable,
    rest: &[&str],
    now: &str,
    labels: &LabelSelector,
) -> Result<Value, ApiError> {
    let ["namespaces", ns, metric] = rest else { return Err(ApiError::not_found("path", &rest.join("/"))) };
    let key = ((*ns).to_owned(), (*metric).to_owned());
    let items: Vec<Value> = [&table.external, &table.fixed_external]
        .into_iter()
        .filter_map(|t| t.get(&key))
        .flatten()
        .filter(|(l, _)| labels.matches(l))
        .map(|(l, v)| json!({"metricName": metric, "metricLabels": l, "timestamp": now, "value": v}))
        .collect();
    if items.is_empty() && ![&table.external, &table.fixed_external].iter().any(|t| t.contains_key(&key)) {
        return Err(ApiError::not_found(&format!("external metric {metric}"), ns));
    }
    Ok(
        json!({"kind": "ExternalMetricValueList", "apiVersion": "external.metrics.k8s.io/v1beta1", "metadata": {}, "items": items}),
    )
}

/// The kind and apiVersion of the common resources custom metrics describe, for a server
/// without a registry (the aggregated one): `pods` → (`Pod`, `/v1`), `deployments.apps` →
/// (`Deployment`, `apps/v1`)...
pub fn well_known_kind(resource: &str) -> (String, String) {
    let (plural, group) = resource.split_once('.').unwrap_or((resource, ""));
    let kind = match plural {
        "pods" => "Pod",
        "services" => "Service",
        "namespaces" => "Namespace",
        "nodes" => "Node",
        "deployments" => "Deployment",
        "replicasets" => "ReplicaSet",
        "statefulsets" => "StatefulSet",
        "ingresses" => "Ingress",
        other => other,
    };
    let api_version = match group {
        "" => "/v1".to_owned(),
        "networking.k8s.io" => "networking.k8s.io/v1".to_owned(),
        g => format!("{g}/v1"),
    };
    (kind.to_owned(), api_version)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> MetricsTable {
        let mut t = MetricsTable::default();
        t.pods.insert(
            ("a".into(), "p1".into()),
            json!({"kind": "PodMetrics", "metadata": {"name": "p1", "namespace": "a", "labels": {"app": "x"}}}),
        );
        t.pods.insert(
            ("b".into(), "p2".into()),
            json!({"kind": "PodMetrics", "metadata": {"name": "p2", "namespace": "b"}}),
        );
        t.custom.insert(("a".into(), "pods".into(), "p1".into(), "rps".into()), "5".into());
        t.external.insert(("a".into(), "queue".into()), vec![(BTreeMap::from([("q".into(), "x".into())]), "7".into())]);
        t
    }

    #[test]
    fn pod_metrics_by_namespace_name_and_labels() {
        let t = table();
        let all = LabelSelector::everything();
        assert_eq!(
            resource_metrics(&t, "pods", None, None, &all).map(|v| v["items"].as_array().map(Vec::len)).ok(),
            Some(Some(2))
        );
        assert_eq!(
            resource_metrics(&t, "pods", Some("a"), Some("p1"), &all).map(|v| v["metadata"]["name"].clone()).ok(),
            Some(json!("p1"))
        );
        assert_eq!(resource_metrics(&t, "pods", Some("a"), Some("p2"), &all).map_err(|e| e.code).err(), Some(404));
        let x = LabelSelector::parse("app=x").unwrap_or_default();
        assert_eq!(
            resource_metrics(&t, "pods", None, None, &x).map(|v| v["items"][0]["metadata"]["name"].clone()).ok(),
            Some(json!("p1"))
        );
    }

    #[test]
    fn custom_and_external_values() {
        let t = table();
        let v = custom_metrics(&t, &["namespaces", "a", "pods", "*", "rps"], "now", well_known_kind, None)
            .unwrap_or_default();
        assert_eq!(v["items"][0]["describedObject"]["kind"], "Pod");
        assert_eq!(v["items"][0]["value"], "5");
        let none = BTreeSet::new();
        assert!(
            custom_metrics(&t, &["namespaces", "a", "pods", "*", "rps"], "now", well_known_kind, Some(&none)).is_err()
        );
        let e = external_metrics(&t, &["namespaces", "a", "queue"], "now", &LabelSelector::everything())
            .unwrap_or_default();
        assert_eq!(e["items"][0]["value"], "7");
        assert_eq!(
            external_metrics(&t, &["namespaces", "b", "queue"], "now", &LabelSelector::everything())
                .map_err(|e| e.code)
                .err(),
            Some(404)
        );
    }

    #[test]
    fn discovery_documents() {
        assert!(discovery("metrics.k8s.io", "v1beta1").is_some_and(|d| d["resources"][1]["kind"] == "PodMetrics"));
        assert!(discovery("metrics.k8s.io", "v1").is_none());
        assert_eq!(well_known_kind("deployments.apps"), ("Deployment".into(), "apps/v1".into()));
    }
}
