//! The control plane itself: it starts, serves with RBAC, runs the controllers and the
//! scheduler, and stops with the process. Skipped without assets (see the crate docs).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Api;
use kube::api::PostParams;
use omniscale_testenv::{ControlPlane, Options};
use std::time::{Duration, Instant};

fn control_plane() -> Option<&'static ControlPlane> {
    ControlPlane::shared(Options::default()).expect("control plane")
}

#[tokio::test]
async fn rbac_is_enforced_for_service_accounts() {
    let Some(cp) = control_plane() else { return };
    let ns = cp.namespace("rbac").await.unwrap();
    cp.kubectl_ok(&["create", "serviceaccount", "reader", "-n", &ns]).unwrap();
    let kc = cp.service_account_kubeconfig(&ns, "reader", 1).await.unwrap();
    let denied = cp.kubectl_with(&kc).args(["get", "pods", "-n", &ns]).output().unwrap();
    assert!(!denied.status.success());
    assert!(String::from_utf8_lossy(&denied.stderr).contains("Forbidden"), "{denied:?}");
    cp.kubectl_ok(&["create", "role", "pod-reader", "--verb=list", "--resource=pods", "-n", &ns]).unwrap();
    cp.kubectl_ok(&[
        "create",
        "rolebinding",
        "r",
        "--role=pod-reader",
        &format!("--serviceaccount={ns}:reader"),
        "-n",
        &ns,
    ])
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = cp.kubectl_with(&kc).args(["get", "pods", "-n", &ns]).output().unwrap();
        if out.status.success() {
            break;
        }
        assert!(Instant::now() < deadline, "the binding never took effect: {out:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn the_controllers_and_scheduler_place_a_deployments_pod_on_a_ready_node() {
    let Some(cp) = control_plane() else { return };
    let client = cp.client().await.unwrap();
    let ns = cp.namespace("sched").await.unwrap();
    let node: Node = serde_json::from_value(serde_json::json!({
        "metadata": {"name": format!("{ns}-node"), "labels": {"kubernetes.io/hostname": format!("{ns}-node"), "test": ns}},
        "status": {"capacity": {"cpu": "2", "memory": "4Gi", "pods": "10"},
                   "allocatable": {"cpu": "2", "memory": "4Gi", "pods": "10"},
                   "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "ok"}]}
    }))
    .unwrap();
    Api::<Node>::all(client.clone()).create(&PostParams::default(), &node).await.unwrap();
    let d: Deployment = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "web", "namespace": ns},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"nodeSelector": {"test": ns},
                                       "tolerations": [{"operator": "Exists"}],
                                       "containers": [{"name": "c", "image": "nginx"}]}}}
    }))
    .unwrap();
    Api::<Deployment>::namespaced(client.clone(), &ns).create(&PostParams::default(), &d).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let list = pods.list(&Default::default()).await.unwrap();
        if let Some(bound) = list.items.iter().find_map(|p| p.spec.as_ref()?.node_name.clone()) {
            assert_eq!(bound, format!("{ns}-node"));
            break;
        }
        assert!(Instant::now() < deadline, "no pod was bound: {:?}", list.items.len());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Api::<Node>::all(client).delete(&format!("{ns}-node"), &Default::default()).await.unwrap();
}

#[tokio::test]
async fn service_account_requests_are_audited() {
    let Some(cp) = control_plane() else { return };
    cp.kubectl_ok(&["create", "namespace", "omniscale-system"]).ok();
    cp.kubectl_ok(&["create", "serviceaccount", "auditee", "-n", "omniscale-system"]).ok();
    let kc = cp.service_account_kubeconfig("omniscale-system", "auditee", 1).await.unwrap();
    let _ = cp.kubectl_with(&kc).args(["get", "configmaps", "-n", "kube-system"]).output().unwrap();
    let events = cp.audit_events().unwrap();
    let e = events
        .iter()
        .find(|e| {
            e.user.username == "system:serviceaccount:omniscale-system:auditee"
                && e.object_ref.as_ref().is_some_and(|o| o.resource == "configmaps")
        })
        .unwrap_or_else(|| panic!("no audited configmaps request among {} events", events.len()));
    assert_eq!(e.verb, "list");
    assert_eq!(e.response_status.as_ref().map(|s| s.code), Some(403));
}
