//! `manifests/` is what users `kubectl apply`; these tests read it the way the API server would
//! (typed, no unknown fields) and hold it to the install guarantees in the README.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use k8s_openapi::api::{
    admissionregistration::v1::MutatingWebhookConfiguration,
    apps::v1::Deployment,
    core::v1::{Namespace, Service, ServiceAccount},
    policy::v1::PodDisruptionBudget,
    rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding},
};
use serde_json::Value;

fn manifests_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../manifests")
}

fn docs() -> Vec<(String, Value)> {
    let mut out = Vec::new();
    let mut files: Vec<_> =
        std::fs::read_dir(manifests_dir()).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default();
    files.sort();
    for path in files.into_iter().filter(|p| p.extension().is_some_and(|e| e == "yaml")) {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            match <Value as serde::Deserialize>::deserialize(doc) {
                Ok(Value::Null) => {}
                Ok(v) => out.push((path.display().to_string(), v)),
                Err(e) => panic!("{}: {e}", path.display()),
            }
        }
    }
    out
}

/// Decodes into the typed object and back; a misspelt or misplaced field would be dropped and
/// show up as a difference.
fn typed<T: serde::de::DeserializeOwned + serde::Serialize>(file: &str, v: &Value) -> T {
    let t: T = match serde_json::from_value(v.clone()) {
        Ok(t) => t,
        Err(e) => panic!("{file}: {e}"),
    };
    let back = serde_json::to_value(&t).unwrap_or(Value::Null);
    assert_eq!(&back, v, "{file}: fields lost in decoding (unknown or misplaced)");
    t
}

fn by_kind<T: serde::de::DeserializeOwned + serde::Serialize>(kind: &str) -> Vec<T> {
    docs().iter().filter(|(_, v)| v["kind"] == kind).map(|(f, v)| typed(f, v)).collect()
}

#[test]
fn every_document_is_a_known_kind_without_unknown_fields() {
    for (file, v) in docs() {
        match v["kind"].as_str().unwrap_or_default() {
            "CustomResourceDefinition" => {}
            "Namespace" => drop(typed::<Namespace>(&file, &v)),
            "ServiceAccount" => drop(typed::<ServiceAccount>(&file, &v)),
            "ClusterRole" => drop(typed::<ClusterRole>(&file, &v)),
            "ClusterRoleBinding" => drop(typed::<ClusterRoleBinding>(&file, &v)),
            "Role" => drop(typed::<Role>(&file, &v)),
            "RoleBinding" => drop(typed::<RoleBinding>(&file, &v)),
            "Deployment" => drop(typed::<Deployment>(&file, &v)),
            "PodDisruptionBudget" => drop(typed::<PodDisruptionBudget>(&file, &v)),
            "Service" => drop(typed::<Service>(&file, &v)),
            "MutatingWebhookConfiguration" => drop(typed::<MutatingWebhookConfiguration>(&file, &v)),
            other => panic!("{file}: unexpected kind {other}"),
        }
    }
}

#[test]
fn crd_file_matches_the_types() {
    let committed = std::fs::read_to_string(manifests_dir().join("00-crds.yaml")).unwrap_or_default();
    assert_eq!(omniscale_api::render_crds_yaml().ok(), Some(committed), "run `cargo xtask crds`");
}

/// The two wildcards upstream's HPA controller role also needs: the scale subresource of any
/// kind (targets can be any custom resource), and any metric of the custom and external
/// metrics APIs (metric names are the resources there) — read-only.
fn justified_wildcard(r: &PolicyRule) -> bool {
    let strs = |v: Option<&Vec<String>>| v.cloned().unwrap_or_default();
    let (groups, resources, verbs) = (strs(r.api_groups.as_ref()), strs(r.resources.as_ref()), r.verbs.clone());
    let scale = groups == ["*"]
        && resources == ["*/scale"]
        && verbs.iter().all(|v| ["get", "update", "patch"].contains(&v.as_str()));
    let metrics = groups.iter().all(|g| g == "custom.metrics.k8s.io" || g == "external.metrics.k8s.io")
        && resources == ["*"]
        && verbs.iter().all(|v| v == "get" || v == "list");
    scale || metrics
}

fn grants(r: &PolicyRule, resource: &str) -> bool {
    r.resources.iter().flatten().any(|s| s == resource)
}

fn rules_ok(rules: &[PolicyRule], where_: &str) {
    for r in rules {
        assert!(!r.verbs.iter().any(|v| v == "*"), "{where_}: wildcard verb in {r:?}");
        let all = [r.api_groups.as_deref(), r.resources.as_deref()];
        let wildcard = all.iter().flatten().flat_map(|v| v.iter()).any(|s| s == "*");
        assert!(!wildcard || justified_wildcard(r), "{where_}: wildcard in {r:?}");
    }
}

/// The run flags' defaults, which the manifests must agree with.
fn run_defaults() -> omniscale_operator::cli::RunArgs {
    use clap::Parser;
    match omniscale_operator::cli::Cli::try_parse_from(["omniscale", "run"]) {
        Ok(omniscale_operator::cli::Cli { command: omniscale_operator::cli::Command::Run(args), .. }) => *args,
        other => panic!("{other:?}"),
    }
}

#[test]
fn rbac_is_least_privilege() {
    let cluster: Vec<ClusterRole> = by_kind("ClusterRole");
    assert!(!cluster.is_empty());
    for cr in &cluster {
        let rules = cr.rules.as_deref().unwrap_or_default();
        rules_ok(rules, "ClusterRole");
        assert!(!rules.iter().any(|r| grants(r, "leases")), "leases must not be granted cluster-wide");
        assert!(!rules.iter().any(|r| grants(r, "secrets")), "secrets must not be granted cluster-wide");
        // The webhook configuration: its own, by name, and only the verbs the caBundle
        // publication uses.
        for r in rules.iter().filter(|r| grants(r, "mutatingwebhookconfigurations")) {
            assert_eq!(r.resource_names.as_deref(), Some(&[run_defaults().webhook_config][..]), "{r:?}");
            assert!(r.verbs.iter().all(|v| v == "get" || v == "update"), "{r:?}");
        }
    }
    let roles: Vec<Role> = by_kind("Role");
    let lease_roles: Vec<&Role> = roles
        .iter()
        .filter(|r| r.rules.iter().flatten().any(|rule| rule.resources.iter().flatten().any(|s| s == "leases")))
        .collect();
    assert_eq!(lease_roles.len(), 1);
    assert_eq!(lease_roles[0].metadata.namespace.as_deref(), Some("omniscale-system"));
    for r in &roles {
        rules_ok(r.rules.as_deref().unwrap_or_default(), "Role");
    }
    // Secrets: the webhook's one Secret in omniscale's namespace; `create` is the one verb that
    // cannot name its object.
    let secret_rules: Vec<(&Role, &PolicyRule)> = roles
        .iter()
        .flat_map(|role| role.rules.iter().flatten().map(move |r| (role, r)))
        .filter(|(_, r)| grants(r, "secrets"))
        .collect();
    assert!(!secret_rules.is_empty(), "the webhook Secret needs a Role");
    for (role, r) in secret_rules {
        assert_eq!(role.metadata.namespace.as_deref(), Some("omniscale-system"));
        assert_eq!(r.resources.as_deref(), Some(&["secrets".to_string()][..]), "{r:?}");
        for v in &r.verbs {
            match v.as_str() {
                "create" => {}
                "get" | "update" => {
                    assert_eq!(r.resource_names.as_deref(), Some(&[run_defaults().webhook_secret][..]), "{r:?}")
                }
                other => panic!("secrets verb {other} in {r:?}"),
            }
        }
    }
}

#[test]
fn webhook_fails_open_and_reaches_the_operator() {
    let defaults = run_defaults();
    let configs: Vec<MutatingWebhookConfiguration> = by_kind("MutatingWebhookConfiguration");
    assert_eq!(configs.len(), 1);
    let c = &configs[0];
    assert_eq!(c.metadata.name.as_deref(), Some(defaults.webhook_config.as_str()));
    let hooks = c.webhooks.as_deref().unwrap_or_default();
    assert_eq!(hooks.len(), 1);
    let w = &hooks[0];
    assert_eq!(w.name, "pods.vertical.omniscale.dev");
    assert_eq!(w.failure_policy.as_deref(), Some("Ignore"), "a down operator must never block pod creation");
    assert_eq!(w.side_effects, "None");
    assert_eq!(w.timeout_seconds, Some(5));
    assert_eq!(w.admission_review_versions, ["v1"]);
    assert!(w.client_config.ca_bundle.is_none(), "re-applying must not erase the published caBundle");
    let rules = w.rules.as_deref().unwrap_or_default();
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0].operations.as_deref(), Some(&["CREATE".to_string()][..]));
    assert_eq!(rules[0].resources.as_deref(), Some(&["pods".to_string()][..]));
    let excluded: Vec<String> = w
        .namespace_selector
        .iter()
        .flat_map(|s| s.match_expressions.iter().flatten())
        .filter(|e| e.key == "kubernetes.io/metadata.name" && e.operator == "NotIn")
        .flat_map(|e| e.values.clone().unwrap_or_default())
        .collect();
    assert!(excluded.contains(&"kube-system".into()) && excluded.contains(&"omniscale-system".into()), "{excluded:?}");

    // The Service the webhook calls exists, is the one the certificate is made for, and
    // reaches the container's webhook port.
    let svc_ref = w.client_config.service.as_ref().expect("service clientConfig");
    assert_eq!(svc_ref.path.as_deref(), Some("/mutate-pods"));
    assert_eq!(
        (svc_ref.namespace.as_str(), svc_ref.name.as_str()),
        ("omniscale-system", defaults.webhook_service.as_str())
    );
    let services: Vec<Service> = by_kind("Service");
    let svc = services
        .iter()
        .find(|s| {
            s.metadata.name.as_deref() == Some(&svc_ref.name)
                && s.metadata.namespace.as_deref() == Some(&svc_ref.namespace)
        })
        .expect("the webhook Service");
    let spec = svc.spec.as_ref().expect("service spec");
    let port = spec.ports.iter().flatten().find(|p| Some(p.port) == svc_ref.port).expect("the webhook port");
    let target = match &port.target_port {
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(p)) => *p,
        other => panic!("numeric targetPort expected (the simulator resolves only those): {other:?}"),
    };
    assert_eq!(target, i32::from(defaults.webhook_addr.port()));
    let deployments: Vec<Deployment> = by_kind("Deployment");
    let template = &deployments[0].spec.as_ref().expect("spec").template;
    let labels = template.metadata.as_ref().and_then(|m| m.labels.clone()).unwrap_or_default();
    for (k, v) in spec.selector.iter().flatten() {
        assert_eq!(labels.get(k), Some(v), "the webhook Service must select the operator pods");
    }
    let pod = template.spec.as_ref().expect("pod spec");
    assert!(pod.containers[0].ports.iter().flatten().any(|p| p.container_port == target));
}

#[test]
fn deployment_is_hardened_and_highly_available() {
    let deployments: Vec<Deployment> = by_kind("Deployment");
    assert_eq!(deployments.len(), 1);
    let d = &deployments[0];
    let spec = d.spec.as_ref().map(|s| (s.replicas, s.template.spec.clone()));
    let Some((replicas, Some(pod))) = spec else { panic!("deployment without pod spec") };
    assert_eq!(replicas, Some(2));
    assert_eq!(pod.priority_class_name.as_deref(), Some("system-cluster-critical"));
    assert!(pod.affinity.as_ref().and_then(|a| a.pod_anti_affinity.as_ref()).is_some(), "anti-affinity");
    assert_eq!(pod.security_context.as_ref().and_then(|s| s.run_as_non_root), Some(true));
    let c = &pod.containers[0];
    let sc = c.security_context.clone().unwrap_or_default();
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert!(
        c.resources
            .as_ref()
            .and_then(|r| r.requests.as_ref())
            .is_some_and(|r| r.contains_key("cpu") && r.contains_key("memory"))
    );
    let path = |p: &Option<k8s_openapi::api::core::v1::Probe>| {
        p.as_ref().and_then(|p| p.http_get.as_ref()).and_then(|h| h.path.clone())
    };
    assert_eq!(path(&c.liveness_probe).as_deref(), Some("/healthz"));
    assert_eq!(path(&c.readiness_probe).as_deref(), Some("/readyz"));
    let env: Vec<&str> = c.env.iter().flatten().map(|e| e.name.as_str()).collect();
    assert!(env.contains(&"POD_NAME") && env.contains(&"POD_NAMESPACE"), "{env:?}");

    let pdbs: Vec<PodDisruptionBudget> = by_kind("PodDisruptionBudget");
    assert_eq!(pdbs.len(), 1);
    let services: Vec<Service> = by_kind("Service");
    let ports: Vec<String> = services
        .iter()
        .flat_map(|s| s.spec.iter().flat_map(|s| s.ports.iter().flatten()))
        .filter_map(|p| p.name.clone())
        .collect();
    assert!(ports.contains(&"webhook".to_string()) && ports.contains(&"http".to_string()), "{ports:?}");
}

/// The node engines protect the leader's node, which the Deployment passes through the
/// downward API; the ClusterRole grants what the node shell uses and no more.
#[test]
fn node_shell_gets_its_node_name_and_exactly_its_verbs() {
    let deployments: Vec<Deployment> = by_kind("Deployment");
    let c = &deployments[0].spec.as_ref().unwrap().template.spec.as_ref().unwrap().containers[0];
    let env = c.env.as_deref().unwrap_or_default();
    let node = env.iter().find(|e| e.name == "NODE_NAME").expect("NODE_NAME env");
    let field = node.value_from.as_ref().and_then(|v| v.field_ref.as_ref()).map(|f| f.field_path.as_str());
    assert_eq!(field, Some("spec.nodeName"));
    let roles: Vec<ClusterRole> = by_kind("ClusterRole");
    let rules: Vec<&PolicyRule> = roles.iter().flat_map(|r| r.rules.iter().flatten()).collect();
    let verbs = |res: &str| -> Vec<String> {
        let mut v: Vec<String> =
            rules.iter().filter(|r| grants(r, res)).flat_map(|r| r.verbs.iter().cloned()).collect();
        v.sort();
        v.dedup();
        v
    };
    assert_eq!(verbs("nodes"), ["get", "list", "patch", "watch"]);
    assert_eq!(verbs("poddisruptionbudgets"), ["list", "watch"]);
    assert_eq!(verbs("daemonsets"), ["list", "watch"]);
    assert_eq!(verbs("pods/eviction"), ["create"]);
}
