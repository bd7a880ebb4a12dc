#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]
//! The image's kubectl against the simulated API server: everything a user does on day one.

use omniscale_e2e::{Sim, workspace_root};
use std::time::Duration;

const WEB: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, labels: {app: web}}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: nginx
        image: nginx:1.27
        resources: {requests: {cpu: 100m, memory: 64Mi}}
"#;

#[test]
fn apply_manifests_and_crds_then_get_describe_explain() {
    let sim = Sim::start("manifests", 20.0);
    let manifests = workspace_root().join("manifests");
    let out = sim.kubectl(&["apply", "-f", manifests.to_str().unwrap()]);
    assert!(out.contains("customresourcedefinition.apiextensions.k8s.io/autoscalers.omniscale.dev created"), "{out}");
    assert!(out.contains("deployment.apps/omniscale created"), "{out}");
    // Re-applying is a no-op.
    let again = sim.kubectl(&["apply", "-f", manifests.to_str().unwrap()]);
    assert!(again.contains("deployment.apps/omniscale unchanged"), "{again}");
    for example in ["php-apache", "hamster"] {
        let dir = workspace_root().join("examples").join(example);
        sim.kubectl(&["apply", "-f", dir.join("autoscaler.yaml").to_str().unwrap()]);
    }
    let osa = sim.kubectl(&["get", "osa", "-A"]);
    assert!(osa.contains("php-apache") && osa.contains("TARGET"), "printer columns are served: {osa}");
    // The Off enum value survives kubectl's YAML 1.1 reading of the CRD manifest.
    let mode = sim.kubectl(&[
        "get",
        "crd",
        "autoscalers.omniscale.dev",
        "-o",
        "jsonpath={.spec.versions[0].schema.openAPIV3Schema.properties.spec.properties.mode.enum}",
    ]);
    assert_eq!(mode, r#"["Auto","Recommend","Off"]"#);
    let explain = sim.kubectl(&["explain", "autoscaler.spec.horizontal.maxReplicas"]);
    assert!(explain.contains("KIND:       Autoscaler") && explain.contains("<integer>"), "{explain}");
    let explain = sim.kubectl(&["explain", "deployment.spec.replicas"]);
    assert!(explain.contains("<integer>"), "{explain}");
    let describe = sim.kubectl(&["describe", "deployment", "omniscale", "-n", "omniscale-system"]);
    assert!(
        describe.lines().any(|l| l.starts_with("StrategyType:") && l.ends_with("RollingUpdate")),
        "defaults applied: {describe}"
    );
    // Invalid custom resources get the API server's 422 with the CEL message.
    let err = sim.fails(
        &["apply", "-f", "-"],
        Some("apiVersion: omniscale.dev/v1alpha1\nkind: Autoscaler\nmetadata: {name: bad}\nspec:\n  targetRef: {apiVersion: apps/v1, kind: Deployment, name: x}\n  horizontal: {minReplicas: 5, maxReplicas: 2}\n"),
    );
    assert!(err.contains("is invalid") && err.contains("minReplicas"), "{err}");
    // Unknown fields are rejected under kubectl's default strict validation.
    let err = sim.fails(
        &["apply", "-f", "-"],
        Some("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {a: b}\nbogus: 1\n"),
    );
    assert!(err.contains("unknown field \"bogus\""), "{err}");
    let nodes = sim.kubectl(&["get", "nodes"]);
    assert_eq!(nodes.lines().filter(|l| l.contains(" Ready ")).count(), 3, "{nodes}");
    assert!(sim.kubectl(&["api-resources"]).contains("autoscalers"));
}

#[test]
fn scale_rollout_watch_and_delete() {
    let sim = Sim::start("rollout", 20.0);
    sim.ok(&["apply", "-f", "-"], Some(WEB));
    sim.kubectl(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    assert_eq!(sim.kubectl(&["get", "deploy", "web", "-o", "jsonpath={.status.readyReplicas}"]), "2");

    sim.kubectl(&["scale", "deployment/web", "--replicas=4"]);
    sim.kubectl(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    assert_eq!(
        sim.kubectl(&["get", "pods", "-l", "app=web", "--field-selector=status.phase=Running", "-o", "name"])
            .lines()
            .count(),
        4
    );

    // A template change rolls out a new ReplicaSet and scales the old one to zero.
    sim.kubectl(&["set", "image", "deployment/web", "nginx=nginx:1.28"]);
    sim.kubectl(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    let rs = sim.kubectl(&["get", "rs", "-l", "app=web", "-o", "jsonpath={range .items[*]}{.spec.replicas} {end}"]);
    let mut counts: Vec<&str> = rs.split_whitespace().collect();
    counts.sort_unstable();
    assert_eq!(counts, vec!["0", "4"], "{rs}");
    let history = sim.kubectl(&["rollout", "history", "deployment/web"]);
    assert!(history.contains('2'), "{history}");

    // A watch sees the deletion.
    let mut watch = std::process::Command::new(omniscale_e2e::kubectl())
        .args([
            "--kubeconfig",
            sim.kubeconfig.to_str().unwrap(),
            "get",
            "deploy",
            "web",
            "-w",
            "-o",
            "json",
            "--output-watch-events",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    sim.kubectl(&["delete", "deployment", "web"]);
    std::thread::sleep(Duration::from_millis(500));
    let _ = watch.kill();
    let out = watch.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(r#""type":"ADDED""#) && text.contains(r#""type":"DELETED""#), "{text}");
    // The garbage collector removes the ReplicaSets and the pods terminate.
    sim.eventually("dependents collected", Duration::from_secs(20), || {
        sim.kubectl(&["get", "rs,pods", "-l", "app=web", "-o", "name"]).trim().is_empty()
    });
    let err = sim.fails(&["get", "deployment", "web"], None);
    assert!(err.contains("NotFound") && err.contains("\"web\" not found"), "{err}");
}

#[test]
fn unschedulable_pods_and_events_show_in_describe() {
    let sim = Sim::start("pending", 20.0);
    let big = WEB.replace("cpu: 100m", "cpu: \"8\"").replace("name: web", "name: big").replace("app: web", "app: big");
    sim.ok(&["apply", "-f", "-"], Some(&big));
    sim.eventually("a pending pod marked unschedulable", Duration::from_secs(20), || {
        sim.kubectl(&[
            "get",
            "pods",
            "-l",
            "app=big",
            "-o",
            "jsonpath={.items[*].status.conditions[?(@.type==\"PodScheduled\")].reason}",
        ])
        .contains("Unschedulable")
    });
    let pod = sim.kubectl(&["get", "pods", "-l", "app=big", "-o", "name"]);
    let describe = sim.kubectl(&["describe", pod.lines().next().unwrap()]);
    assert!(describe.contains("FailedScheduling") && describe.contains("Insufficient cpu"), "{describe}");
    let top = sim.kubectl(&["top", "nodes"]);
    assert!(top.contains("node-0"), "{top}");
}
