//! Every Kubernetes API permission omniscale uses, in one table, with the code that needs it.
//!
//! `manifests/02-rbac.yaml` must grant exactly this (a unit test compares them), and the
//! real-server tests check that every request the operator makes while running the
//! walkthroughs under that ServiceAccount is covered here and none is refused. Adding an API
//! call means adding its row, which makes the manifest change visible in review.

/// One RBAC rule: `verbs` on `resources` (`resource/subresource`, `*` wildcards as RBAC has them)
/// of `group`, optionally only the named objects, granted by `role` (`ClusterRole/omniscale`,
/// or a namespaced `Role/NAME` in omniscale's namespace).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Grant {
    pub role: &'static str,
    pub group: &'static str,
    pub resource: &'static str,
    pub verbs: &'static [&'static str],
    pub names: &'static [&'static str],
    /// Which code makes these calls.
    pub used_by: &'static str,
}

const CLUSTER: &str = "ClusterRole/omniscale";

const fn grant(
    role: &'static str,
    group: &'static str,
    resource: &'static str,
    verbs: &'static [&'static str],
    used_by: &'static str,
) -> Grant {
    Grant { role, group, resource, verbs, names: &[], used_by }
}

/// The table. Rows are one resource each; the manifest may group them.
pub const GRANTS: &[Grant] = &[
    grant(CLUSTER, "omniscale.dev", "autoscalers", &["get", "list", "watch"], "controller, horizontal, vertical"),
    grant(CLUSTER, "omniscale.dev", "nodepools", &["get", "list", "watch"], "controller, nodes"),
    grant(
        CLUSTER,
        "omniscale.dev",
        "autoscalers/status",
        &["get", "patch", "update"],
        "controller, horizontal, vertical",
    ),
    grant(CLUSTER, "omniscale.dev", "nodepools/status", &["get", "patch", "update"], "controller, nodes"),
    grant(CLUSTER, "events.k8s.io", "events", &["create", "patch"], "kube::runtime::events::Recorder in every loop"),
    grant(CLUSTER, "*", "*/scale", &["get", "update", "patch"], "horizontal (any target kind), targets"),
    grant(CLUSTER, "", "pods", &["get", "list", "watch"], "horizontal, vertical, nodes"),
    grant(CLUSTER, "metrics.k8s.io", "pods", &["get", "list"], "horizontal resource metrics, vertical recommender"),
    grant(CLUSTER, "metrics.k8s.io", "nodes", &["get", "list"], "vertical recommender (node usage)"),
    grant(CLUSTER, "custom.metrics.k8s.io", "*", &["get", "list"], "horizontal Pods and Object metrics"),
    grant(CLUSTER, "external.metrics.k8s.io", "*", &["get", "list"], "horizontal External metrics"),
    grant(CLUSTER, "", "pods/resize", &["patch"], "vertical updater, in place"),
    grant(CLUSTER, "", "pods/eviction", &["create"], "vertical updater, node scale-down drains"),
    grant(CLUSTER, "", "limitranges", &["get", "list", "watch"], "vertical (LimitRange caps)"),
    grant(CLUSTER, "", "nodes", &["get", "list", "watch", "patch"], "nodes (snapshot, deletion taint)"),
    grant(CLUSTER, "policy", "poddisruptionbudgets", &["list", "watch"], "nodes (drain simulation)"),
    grant(CLUSTER, "apps", "daemonsets", &["list", "watch"], "nodes (drain simulation, new-node overhead)"),
    Grant {
        role: CLUSTER,
        group: "admissionregistration.k8s.io",
        resource: "mutatingwebhookconfigurations",
        verbs: &["get", "update"],
        names: &["omniscale"],
        used_by: "webhook (caBundle publication)",
    },
    grant("Role/omniscale-leader-election", "coordination.k8s.io", "leases", &["create"], "leader"),
    Grant {
        role: "Role/omniscale-leader-election",
        group: "coordination.k8s.io",
        resource: "leases",
        verbs: &["get", "update"],
        names: &["omniscale-leader"],
        used_by: "leader",
    },
    grant("Role/omniscale-webhook-certs", "", "secrets", &["create"], "webhook (self-managed certificates)"),
    Grant {
        role: "Role/omniscale-webhook-certs",
        group: "",
        resource: "secrets",
        verbs: &["get", "update"],
        names: &["omniscale-webhook-tls"],
        used_by: "webhook (self-managed certificates)",
    },
];

/// Whether RBAC pattern `pattern` (`*`, `*/sub`, `res`, `res/sub`) matches `resource`.
fn resource_matches(pattern: &str, resource: &str) -> bool {
    if pattern == "*" || pattern == resource {
        return true;
    }
    match (pattern.strip_prefix("*/"), resource.split_once('/')) {
        (Some(sub), Some((_, s))) => sub == s,
        _ => false,
    }
}

/// The row that allows `verb` on `group`/`resource` (`res` or `res/sub`) named `name` in
/// `namespace` (None: cluster-scoped or all namespaces), if any. Namespaced roles only apply in
/// `own_namespace`.
pub fn allowing(
    group: &str,
    resource: &str,
    verb: &str,
    name: Option<&str>,
    namespace: Option<&str>,
    own_namespace: &str,
) -> Option<&'static Grant> {
    GRANTS.iter().find(|g| {
        (g.group == "*" || g.group == group)
            && resource_matches(g.resource, resource)
            && g.verbs.contains(&verb)
            && (g.names.is_empty() || name.is_some_and(|n| g.names.contains(&n)))
            && (g.role.starts_with("ClusterRole/") || namespace == Some(own_namespace))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;
    use std::collections::BTreeSet;

    type Row = (String, String, String, String, Vec<String>);

    /// The rules of the manifest's roles, one row per (role, group, resource, verb), with names.
    fn manifest_rows() -> BTreeSet<Row> {
        let text = include_str!("../../../manifests/02-rbac.yaml");
        let mut rows = BTreeSet::new();
        for doc in serde_yaml::Deserializer::from_str(text) {
            let v: Value = serde::Deserialize::deserialize(doc).unwrap_or(Value::Null);
            let kind = v["kind"].as_str().unwrap_or_default();
            if kind != "ClusterRole" && kind != "Role" {
                continue;
            }
            let role = format!("{kind}/{}", v["metadata"]["name"].as_str().unwrap_or_default());
            for rule in v["rules"].as_array().into_iter().flatten() {
                let list = |k: &str| -> Vec<String> {
                    rule[k].as_array().into_iter().flatten().filter_map(|x| x.as_str().map(str::to_owned)).collect()
                };
                let mut names = list("resourceNames");
                names.sort();
                for g in list("apiGroups") {
                    for r in list("resources") {
                        for verb in list("verbs") {
                            rows.insert((role.clone(), g.clone(), r.clone(), verb, names.clone()));
                        }
                    }
                }
            }
        }
        rows
    }

    fn table_rows() -> BTreeSet<Row> {
        let mut rows = BTreeSet::new();
        for g in GRANTS {
            let mut names: Vec<String> = g.names.iter().map(|n| (*n).to_owned()).collect();
            names.sort();
            for verb in g.verbs {
                rows.insert((g.role.into(), g.group.into(), g.resource.into(), (*verb).into(), names.clone()));
            }
        }
        rows
    }

    #[test]
    fn the_manifest_grants_exactly_the_table() {
        let (manifest, table) = (manifest_rows(), table_rows());
        let extra: Vec<_> = manifest.difference(&table).collect();
        let missing: Vec<_> = table.difference(&manifest).collect();
        assert!(extra.is_empty(), "02-rbac.yaml grants what the code does not use: {extra:?}");
        assert!(missing.is_empty(), "02-rbac.yaml lacks what the code uses: {missing:?}");
    }

    #[test]
    fn wildcards_and_names_match_as_rbac_does() {
        let own = "omniscale-system";
        assert!(allowing("apps", "deployments/scale", "patch", Some("web"), Some("default"), own).is_some());
        assert!(allowing("apps", "deployments", "patch", Some("web"), Some("default"), own).is_none());
        assert!(allowing("custom.metrics.k8s.io", "pods/requests_per_second", "get", None, Some("d"), own).is_some());
        assert!(allowing("", "secrets", "get", Some("omniscale-webhook-tls"), Some(own), own).is_some());
        assert!(allowing("", "secrets", "get", Some("other"), Some(own), own).is_none());
        assert!(allowing("", "secrets", "create", None, Some("default"), own).is_none(), "Roles are namespaced");
        assert!(allowing("", "pods", "delete", Some("p"), Some("default"), own).is_none());
    }
}
