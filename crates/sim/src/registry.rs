//! The resource types the simulated API server serves: the built-in kinds it knows from birth and
//! the custom resources CustomResourceDefinitions register while it runs.
//!
//! Discovery, routing, validation and the patch strategies all read from here, so adding a kind is
//! one table entry rather than a change in every layer.

use serde_json::Value;
use std::collections::BTreeMap;

/// Where a scale subresource finds its numbers: upstream's `CustomResourceSubresourceScale`,
/// expressed as JSON paths without the leading dot.
#[derive(Clone, Debug, PartialEq)]
pub struct ScalePaths {
    pub spec_replicas: Vec<String>,
    pub status_replicas: Vec<String>,
    pub label_selector: Option<Vec<String>>,
}

impl ScalePaths {
    fn standard() -> Self {
        Self {
            spec_replicas: vec!["spec".into(), "replicas".into()],
            status_replicas: vec!["status".into(), "replicas".into()],
            label_selector: Some(vec!["status".into(), "selector".into()]),
        }
    }

    /// Parses `.spec.replicas`-style paths; upstream only allows simple dotted paths here.
    pub fn parse(path: &str) -> Vec<String> {
        path.trim_start_matches('.').split('.').filter(|s| !s.is_empty()).map(str::to_owned).collect()
    }
}

/// A printer column in the sense of CRD `additionalPrinterColumns`: what `kubectl get` shows.
#[derive(Clone, Debug, PartialEq)]
pub struct PrinterColumn {
    pub name: String,
    pub type_: String,
    pub json_path: String,
    pub priority: i64,
    pub description: String,
}

/// One served resource: a (group, version, plural) with everything the layers above need.
#[derive(Clone, Debug)]
pub struct ResourceType {
    pub group: String,
    pub version: String,
    pub kind: String,
    pub plural: String,
    pub singular: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    pub status: bool,
    pub scale: Option<ScalePaths>,
    /// Whether `metadata.generation` tracks spec changes (workloads, PDBs, custom resources).
    pub generation: bool,
    /// The `openAPIV3Schema` for custom resources: drives pruning, validation and defaulting.
    pub schema: Option<Value>,
    pub printer_columns: Vec<PrinterColumn>,
    /// Virtual resources (metrics.k8s.io) are computed on read and only support get/list.
    pub read_only: bool,
    /// Verbs advertised in discovery.
    pub verbs: Vec<&'static str>,
    /// Extra subresources beyond status/scale (eviction, resize, binding).
    pub extra_subresources: Vec<&'static str>,
}

impl ResourceType {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() { self.version.clone() } else { format!("{}/{}", self.group, self.version) }
    }

    pub fn is_builtin(&self) -> bool {
        self.schema.is_none()
    }

    /// The storage key: objects are stored once per group and plural, whatever version is asked.
    pub fn key(&self) -> ResourceKey {
        ResourceKey { group: self.group.clone(), plural: self.plural.clone() }
    }
}

/// Identifies a stored collection independent of the version it is served at.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ResourceKey {
    pub group: String,
    pub plural: String,
}

impl ResourceKey {
    pub fn new(group: &str, plural: &str) -> Self {
        Self { group: group.to_owned(), plural: plural.to_owned() }
    }
}

impl std::fmt::Display for ResourceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.group.is_empty() { write!(f, "{}", self.plural) } else { write!(f, "{}.{}", self.plural, self.group) }
    }
}

const ALL_VERBS: &[&str] = &["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"];

struct Builtin {
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    namespaced: bool,
    short: &'static [&'static str],
    status: bool,
    scale: bool,
    generation: bool,
    extra: &'static [&'static str],
}

const BUILTINS: &[Builtin] = &[
    b("", "v1", "Namespace", "namespaces", false, &["ns"], true, false, false, &[]),
    b("", "v1", "Pod", "pods", true, &["po"], true, false, false, &["eviction", "resize", "binding"]),
    b("", "v1", "Node", "nodes", false, &["no"], true, false, false, &[]),
    b("", "v1", "Event", "events", true, &["ev"], false, false, false, &[]),
    b("", "v1", "Service", "services", true, &["svc"], true, false, false, &[]),
    b("", "v1", "ConfigMap", "configmaps", true, &["cm"], false, false, false, &[]),
    b("", "v1", "Secret", "secrets", true, &[], false, false, false, &[]),
    b("", "v1", "LimitRange", "limitranges", true, &["limits"], false, false, false, &[]),
    b("", "v1", "ServiceAccount", "serviceaccounts", true, &["sa"], false, false, false, &[]),
    b("apps", "v1", "Deployment", "deployments", true, &["deploy"], true, true, true, &[]),
    b("apps", "v1", "ReplicaSet", "replicasets", true, &["rs"], true, true, true, &[]),
    b("apps", "v1", "StatefulSet", "statefulsets", true, &["sts"], true, true, true, &[]),
    b("apps", "v1", "DaemonSet", "daemonsets", true, &["ds"], true, false, true, &[]),
    b("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets", true, &["pdb"], true, false, true, &[]),
    b("coordination.k8s.io", "v1", "Lease", "leases", true, &[], false, false, false, &[]),
    b("events.k8s.io", "v1", "Event", "events", true, &["ev"], false, false, false, &[]),
    b(
        "apiextensions.k8s.io",
        "v1",
        "CustomResourceDefinition",
        "customresourcedefinitions",
        false,
        &["crd", "crds"],
        true,
        false,
        true,
        &[],
    ),
    b(
        "admissionregistration.k8s.io",
        "v1",
        "MutatingWebhookConfiguration",
        "mutatingwebhookconfigurations",
        false,
        &[],
        false,
        false,
        true,
        &[],
    ),
    b("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", false, &[], false, false, false, &[]),
    b(
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRoleBinding",
        "clusterrolebindings",
        false,
        &[],
        false,
        false,
        false,
        &[],
    ),
    b("rbac.authorization.k8s.io", "v1", "Role", "roles", true, &[], false, false, false, &[]),
    b("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings", true, &[], false, false, false, &[]),
];

#[allow(clippy::too_many_arguments)]
const fn b(
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    namespaced: bool,
    short: &'static [&'static str],
    status: bool,
    scale: bool,
    generation: bool,
    extra: &'static [&'static str],
) -> Builtin {
    Builtin { group, version, kind, plural, namespaced, short, status, scale, generation, extra }
}

fn builtin_types() -> Vec<ResourceType> {
    let mut out: Vec<ResourceType> = BUILTINS
        .iter()
        .map(|b| ResourceType {
            group: b.group.into(),
            version: b.version.into(),
            kind: b.kind.into(),
            plural: b.plural.into(),
            singular: b.kind.to_lowercase(),
            namespaced: b.namespaced,
            short_names: b.short.iter().map(|s| (*s).to_owned()).collect(),
            categories: if matches!(
                b.plural,
                "pods" | "services" | "deployments" | "replicasets" | "statefulsets" | "daemonsets"
            ) {
                vec!["all".into()]
            } else {
                vec![]
            },
            status: b.status,
            scale: b.scale.then(ScalePaths::standard),
            generation: b.generation,
            schema: None,
            printer_columns: vec![],
            read_only: false,
            verbs: ALL_VERBS.to_vec(),
            extra_subresources: b.extra.to_vec(),
        })
        .collect();
    for (kind, plural, namespaced) in [("PodMetrics", "pods", true), ("NodeMetrics", "nodes", false)] {
        out.push(ResourceType {
            group: "metrics.k8s.io".into(),
            version: "v1beta1".into(),
            kind: kind.into(),
            plural: plural.into(),
            singular: String::new(),
            namespaced,
            short_names: vec![],
            categories: vec![],
            status: false,
            scale: None,
            generation: false,
            schema: None,
            printer_columns: vec![],
            read_only: true,
            verbs: vec!["get", "list"],
            extra_subresources: vec![],
        });
    }
    out
}

/// All served resource types, keyed by (group, version, plural).
#[derive(Clone, Debug)]
pub struct Registry {
    types: BTreeMap<(String, String, String), ResourceType>,
}

impl Default for Registry {
    fn default() -> Self {
        let mut types = BTreeMap::new();
        for t in builtin_types() {
            types.insert((t.group.clone(), t.version.clone(), t.plural.clone()), t);
        }
        Self { types }
    }
}

impl Registry {
    pub fn get(&self, group: &str, version: &str, plural: &str) -> Option<&ResourceType> {
        self.types.get(&(group.to_owned(), version.to_owned(), plural.to_owned()))
    }

    pub fn all(&self) -> impl Iterator<Item = &ResourceType> {
        self.types.values()
    }

    /// The preferred (first served) version's type for a kind in a group; used to find the
    /// resource an object's `apiVersion`/`kind` belongs to.
    pub fn by_kind(&self, group: &str, version: &str, kind: &str) -> Option<&ResourceType> {
        self.types.values().find(|t| t.group == group && t.version == version && t.kind == kind)
    }

    /// Any served version of a stored collection, for controllers that need the type of a key.
    pub fn by_key(&self, key: &ResourceKey) -> Option<&ResourceType> {
        self.types.values().find(|t| t.group == key.group && t.plural == key.plural)
    }

    /// Group → versions in served order, for `/api` and `/apis`.
    pub fn groups(&self) -> BTreeMap<String, Vec<String>> {
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for t in self.types.values() {
            let versions = out.entry(t.group.clone()).or_default();
            if !versions.contains(&t.version) {
                versions.push(t.version.clone());
            }
        }
        for versions in out.values_mut() {
            versions.sort_by_key(|v| std::cmp::Reverse(version_priority(v)));
        }
        out
    }

    /// Registers (or replaces) the types a CRD serves. Returns the keys it took over.
    pub fn register_crd(&mut self, crd: &Value) -> Result<Vec<ResourceType>, String> {
        let spec = &crd["spec"];
        let group = spec["group"].as_str().ok_or("spec.group is required")?.to_owned();
        let names = &spec["names"];
        let plural = names["plural"].as_str().ok_or("spec.names.plural is required")?.to_owned();
        let kind = names["kind"].as_str().ok_or("spec.names.kind is required")?.to_owned();
        let singular = names["singular"].as_str().map(str::to_owned).unwrap_or_else(|| kind.to_lowercase());
        let namespaced = spec["scope"].as_str() != Some("Cluster");
        let strings = |v: &Value| -> Vec<String> {
            v.as_array().map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_owned)).collect()).unwrap_or_default()
        };
        let mut added = Vec::new();
        self.unregister_crd(&group, &plural);
        for version in spec["versions"].as_array().into_iter().flatten() {
            if version["served"] == Value::Bool(false) {
                continue;
            }
            let Some(name) = version["name"].as_str() else { continue };
            let sub = &version["subresources"];
            let scale = sub.get("scale").filter(|s| s.is_object()).map(|s| ScalePaths {
                spec_replicas: ScalePaths::parse(s["specReplicasPath"].as_str().unwrap_or(".spec.replicas")),
                status_replicas: ScalePaths::parse(s["statusReplicasPath"].as_str().unwrap_or(".status.replicas")),
                label_selector: s["labelSelectorPath"].as_str().map(ScalePaths::parse),
            });
            let printer_columns = version["additionalPrinterColumns"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| PrinterColumn {
                    name: c["name"].as_str().unwrap_or_default().to_owned(),
                    type_: c["type"].as_str().unwrap_or("string").to_owned(),
                    json_path: c["jsonPath"].as_str().unwrap_or_default().to_owned(),
                    priority: c["priority"].as_i64().unwrap_or(0),
                    description: c["description"].as_str().unwrap_or_default().to_owned(),
                })
                .collect();
            let t = ResourceType {
                group: group.clone(),
                version: name.to_owned(),
                kind: kind.clone(),
                plural: plural.clone(),
                singular: singular.clone(),
                namespaced,
                short_names: strings(&names["shortNames"]),
                categories: strings(&names["categories"]),
                status: sub.get("status").is_some_and(Value::is_object),
                scale,
                generation: true,
                schema: Some(version["schema"]["openAPIV3Schema"].clone()),
                printer_columns,
                read_only: false,
                verbs: ALL_VERBS.to_vec(),
                extra_subresources: vec![],
            };
            self.types.insert((group.clone(), name.to_owned(), plural.clone()), t.clone());
            added.push(t);
        }
        Ok(added)
    }

    pub fn unregister_crd(&mut self, group: &str, plural: &str) {
        self.types.retain(|(g, _, p), t| !(g == group && p == plural && !t.is_builtin()));
    }
}

/// Kubernetes version priority: GA > beta > alpha, higher numbers first (v2 > v1 > v1beta2).
pub fn version_priority(v: &str) -> (u8, u32, u32) {
    let Some(rest) = v.strip_prefix('v') else { return (0, 0, 0) };
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let major = digits.parse().unwrap_or(0);
    let tail = &rest[digits.len()..];
    if tail.is_empty() {
        return (3, major, 0);
    }
    let (stage, minor) = if let Some(n) = tail.strip_prefix("beta") {
        (2, n)
    } else if let Some(n) = tail.strip_prefix("alpha") {
        (1, n)
    } else {
        return (0, 0, 0);
    };
    (stage, major, minor.parse().unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn versions_sort_like_kubernetes() {
        let mut v = vec!["v1alpha1", "v1", "v2beta1", "v1beta2", "v2", "foo"];
        v.sort_by_key(|s| std::cmp::Reverse(version_priority(s)));
        assert_eq!(v, vec!["v2", "v1", "v2beta1", "v1beta2", "v1alpha1", "foo"]);
    }

    #[test]
    fn crd_registers_each_served_version_with_subresources() {
        let mut r = Registry::default();
        let crd = json!({"spec": {"group": "x.dev", "scope": "Namespaced",
        "names": {"plural": "foos", "kind": "Foo", "shortNames": ["f"]},
        "versions": [
            {"name": "v1", "served": true, "storage": true, "schema": {"openAPIV3Schema": {"type": "object"}},
             "subresources": {"status": {}, "scale": {"specReplicasPath": ".spec.n", "statusReplicasPath": ".status.n"}}},
            {"name": "v0", "served": false, "storage": false}
        ]}});
        let added = r.register_crd(&crd).unwrap();
        assert_eq!(added.len(), 1);
        let t = r.get("x.dev", "v1", "foos").unwrap();
        assert!(t.status);
        assert_eq!(t.scale.as_ref().unwrap().spec_replicas, vec!["spec", "n"]);
        assert!(r.get("x.dev", "v0", "foos").is_none());
        r.unregister_crd("x.dev", "foos");
        assert!(r.get("x.dev", "v1", "foos").is_none());
        assert!(r.get("apps", "v1", "deployments").is_some());
    }
}
