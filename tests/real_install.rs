#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]
//! Installing omniscale on a real kube-apiserver (1.36, from `OMNISCALE_KUBE_ASSETS`), as a user
//! does: the manifests apply, the CRDs are Established and explained, and invalid custom
//! resources are rejected at apply time with the schema's message. Skipped without assets.

use omniscale_e2e::workspace_root;
use omniscale_testenv::{ControlPlane, Options};
use std::io::Write;
use std::process::{Output, Stdio};

fn control_plane() -> Option<&'static ControlPlane> {
    ControlPlane::shared(Options::api_server_only()).expect("control plane")
}

fn run(cp: &ControlPlane, args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = cp.kubectl();
    cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
    let mut child = cmd.spawn().expect("kubectl");
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes()).unwrap();
    }
    child.wait_with_output().unwrap()
}

fn ok(cp: &ControlPlane, args: &[&str]) -> String {
    let out = run(cp, args, None);
    assert!(out.status.success(), "kubectl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Applies `yaml` and returns kubectl's error output; panics if it was accepted.
fn rejected(cp: &ControlPlane, yaml: &str) -> String {
    let out = run(cp, &["apply", "--server-side", "-f", "-"], Some(yaml));
    assert!(!out.status.success(), "accepted: {yaml}\n{}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn install(cp: &ControlPlane) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let dir = workspace_root().join("manifests");
        let out = ok(cp, &["apply", "--server-side", "-f", dir.to_str().unwrap()]);
        assert!(
            out.contains("customresourcedefinition.apiextensions.k8s.io/autoscalers.omniscale.dev serverside-applied"),
            "{out}"
        );
        ok(
            cp,
            &[
                "wait",
                "--for=condition=Established",
                "--timeout=30s",
                "crd/autoscalers.omniscale.dev",
                "crd/nodepools.omniscale.dev",
            ],
        );
    });
}

#[test]
fn manifests_apply_server_side_and_crds_are_established() {
    let Some(cp) = control_plane() else { return };
    install(cp);
    let dir = workspace_root().join("manifests");
    // Re-applying is a no-op, as a GitOps controller would do it every minute.
    let again = ok(cp, &["apply", "--server-side", "-f", dir.to_str().unwrap()]);
    assert!(again.contains("deployment.apps/omniscale serverside-applied"), "{again}");
    let established = ok(
        cp,
        &[
            "get",
            "crd",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name}={.status.conditions[?(@.type==\"Established\")].status} {end}",
        ],
    );
    for crd in ["autoscalers.omniscale.dev=True", "nodepools.omniscale.dev=True"] {
        assert!(established.contains(crd), "{established}");
    }
    let explain = ok(cp, &["explain", "autoscaler.spec.horizontal"]);
    assert!(explain.contains("KIND:       Autoscaler") && explain.contains("maxReplicas"), "{explain}");
    let explain = ok(cp, &["explain", "nodepool.spec"]);
    assert!(explain.contains("KIND:       NodePool"), "{explain}");
    assert!(ok(cp, &["api-resources", "--api-group=omniscale.dev"]).contains("osa"));
    // The examples are valid against the real schema (server-side dry run: nothing is created).
    for example in ["php-apache", "hamster", "nginx-test", "groupless"] {
        let d = workspace_root().join("examples").join(example);
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let p = entry.path();
            if p.extension().is_some_and(|e| e == "yaml") {
                ok(cp, &["apply", "--server-side", "--dry-run=server", "-f", p.to_str().unwrap()]);
            }
        }
    }
}

#[test]
fn kustomization_builds_and_applies() {
    let Some(cp) = control_plane() else { return };
    install(cp);
    let dir = workspace_root().join("manifests");
    let built = ok(cp, &["kustomize", dir.to_str().unwrap()]);
    for kind in ["CustomResourceDefinition", "ClusterRole", "Deployment", "MutatingWebhookConfiguration"] {
        assert!(built.contains(&format!("kind: {kind}")), "{kind} missing from the kustomization");
    }
    assert!(built.contains("image: ghcr.io/omniscale/omniscale:0.1.0"), "{built}");
    let out = ok(cp, &["apply", "--server-side", "-k", dir.to_str().unwrap()]);
    assert!(out.contains("deployment.apps/omniscale serverside-applied"), "{out}");
}

const HORIZONTAL: &str = "apiVersion: omniscale.dev/v1alpha1
kind: Autoscaler
metadata: {name: bad, namespace: default}
spec:
  targetRef: {apiVersion: apps/v1, kind: Deployment, name: web}
  horizontal: {minReplicas: MIN, maxReplicas: 2}
";

const POOL: &str = "apiVersion: omniscale.dev/v1alpha1
kind: NodePool
metadata: {name: bad}
spec:
SPEC";

#[test]
fn invalid_resources_are_rejected_at_apply_time_with_the_message() {
    let Some(cp) = control_plane() else { return };
    install(cp);
    let err = rejected(cp, &HORIZONTAL.replace("MIN", "5"));
    assert!(err.contains("is invalid") && err.contains("minReplicas must not exceed maxReplicas"), "{err}");
    // The same object with min <= max is accepted (dry run), so the rule is what rejected it.
    let fine =
        run(cp, &["apply", "--server-side", "--dry-run=server", "-f", "-"], Some(&HORIZONTAL.replace("MIN", "1")));
    assert!(fine.status.success(), "{}", String::from_utf8_lossy(&fine.stderr));

    let group = "  autoScalingGroup: {name: workers}\n";
    let provisioner = "  provisioner:\n    requirements:\n    - {key: node.kubernetes.io/instance-type, operator: OPERATOR, values: [m5.large]}\n    subnetSelectorTerms: [{tags: {env: test}}]\n    securityGroupSelectorTerms: [{tags: {env: test}}]\n";
    let err = rejected(cp, &POOL.replace("SPEC", &provisioner.replace("OPERATOR", "Near")));
    assert!(err.contains("operator") && err.contains("Unsupported value: \"Near\""), "{err}");
    let err = rejected(cp, &POOL.replace("SPEC", &format!("{group}{}", provisioner.replace("OPERATOR", "In"))));
    assert!(err.contains("exactly one of autoScalingGroup and provisioner"), "{err}");
    let err = rejected(cp, &POOL.replace("SPEC", "  limits: {cpu: \"10\"}\n"));
    assert!(err.contains("exactly one of autoScalingGroup and provisioner"), "{err}");
    for ok_spec in [group.to_owned(), provisioner.replace("OPERATOR", "In")] {
        let out =
            run(cp, &["apply", "--server-side", "--dry-run=server", "-f", "-"], Some(&POOL.replace("SPEC", &ok_spec)));
        assert!(out.status.success(), "{ok_spec}: {}", String::from_utf8_lossy(&out.stderr));
    }
}
