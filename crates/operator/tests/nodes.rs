#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]
//! The node shell end to end on the simulated cluster and its simulated cloud: the nginx-test
//! walkthrough scales spot-ng up until every pod runs, never past 5 nodes, and back to 1 after
//! the Deployment is deleted — with a PodDisruptionBudget-guarded workload drained through the
//! Eviction API and a `safe-to-evict: "false"` pod whose node is never removed. The invariants
//! are checked continuously by a watcher task, not only at the end.

mod support;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use omniscale_api::NodePool;
use omniscale_operator::cloud::SimCloud;
use omniscale_sim::control::World;
use omniscale_sim::runtime::{self, SimOptions};
use omniscale_sim::world::scenario::Scenario;
use serde_json::json;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

async fn eventually<F, Fut>(what: &str, secs: u64, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    while std::time::Instant::now() < deadline {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out after {secs}s waiting for {what}");
}

fn example(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/nginx-test").join(name)
}

fn running_on(p: &Pod) -> Option<String> {
    let running = p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
    let live = p.metadata.deletion_timestamp.is_none();
    (running && live).then(|| p.spec.as_ref().and_then(|s| s.node_name.clone())).flatten()
}

fn ready(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_none()
        && p.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// (desired capacity, live instances) of spot-ng.
fn asg(world: &Mutex<World>) -> (u32, usize) {
    let w = world.lock().unwrap();
    let cloud = w.cloud.as_ref().unwrap();
    let g = cloud.auto_scaling_group("spot-ng").unwrap();
    let live = g.instance_ids.iter().filter(|id| cloud.instance(id).is_some_and(|i| i.state.is_live())).count();
    (g.desired_capacity, live)
}

/// The nginx-test scenario's cluster and cloud (spot-ng at one node) at 60x, with a client.
async fn nginx_sim() -> (runtime::Running, kube::Client) {
    omniscale_operator::install_crypto_provider();
    let sc = Scenario::from_yaml(&std::fs::read_to_string(example("sim/scenario.yaml")).unwrap()).unwrap();
    let mut world = World::default();
    world.cloud = sc.build_cloud(0.0).unwrap();
    world.asgs = sc.cloud.as_ref().map(|c| c.auto_scaling_groups.clone()).unwrap();
    let sim = runtime::start(SimOptions { speed: 60.0, ..SimOptions::default() }, world).await.unwrap();
    let client = support::prepared_client(&sim).await;
    (sim, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nginx_walkthrough_scales_up_and_back_with_safe_drains() {
    let (sim, client) = nginx_sim().await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");

    // A pod that must never be evicted, on the group's first node.
    eventually("the first spot-ng node", 30, || async { asg(&sim.world).1 == 1 && node_count(&client).await == 1 })
        .await;
    let pinned: Pod = serde_json::from_value(json!({
        "metadata": {"name": "pinned", "annotations": {"cluster-autoscaler.kubernetes.io/safe-to-evict": "false"},
                     "ownerReferences": []},
        "spec": {"containers": [{"name": "c", "image": "busybox", "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]}
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pinned).await.unwrap();
    eventually("the pinned pod running", 30, || async {
        pods.get("pinned").await.ok().and_then(|p| running_on(&p)).is_some()
    })
    .await;
    let pinned = pods.get("pinned").await.unwrap();
    let pinned_node = running_on(&pinned).unwrap();
    let pinned_uid = pinned.metadata.uid.clone().unwrap();

    let cloud = Arc::new(SimCloud::new(sim.world.clone(), sim.cluster.shared.clock.clone()));
    let operator = support::Operator::start(&sim, "nodes", &[], cloud.clone());
    let pool: NodePool = serde_yaml::from_str(&std::fs::read_to_string(example("nodepool.yaml")).unwrap()).unwrap();
    let pool_api: Api<NodePool> = Api::all(client.clone());
    pool_api.create(&PostParams::default(), &pool).await.unwrap();
    let nginx: Deployment =
        serde_yaml::from_str(&std::fs::read_to_string(example("deployment.yaml")).unwrap()).unwrap();
    deployments.create(&PostParams::default(), &nginx).await.unwrap();

    // Invariants, checked all along.
    let violations: Arc<Mutex<Vec<String>>> = Arc::default();
    let guard_armed = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (world, pods, violations, guard_armed, done) =
            (sim.world.clone(), pods.clone(), violations.clone(), guard_armed.clone(), done.clone());
        let (pinned_node, pinned_uid) = (pinned_node.clone(), pinned_uid.clone());
        let client = client.clone();
        tokio::spawn(async move {
            while !done.load(Ordering::SeqCst) {
                let (desired, live) = asg(&world);
                let mut v = violations.lock().unwrap().clone();
                if !(1..=5).contains(&desired) || live > 5 {
                    v.push(format!("spot-ng desired {desired}, live {live}: outside [1, 5]"));
                }
                if let Ok(list) = pods.list(&ListParams::default()).await {
                    match list.items.iter().find(|p| p.metadata.name.as_deref() == Some("pinned")) {
                        Some(p)
                            if p.metadata.uid.as_deref() == Some(&pinned_uid)
                                && p.metadata.deletion_timestamp.is_none() => {}
                        _ => v.push("the safe-to-evict=false pod was evicted or deleted".into()),
                    }
                    let guards = list
                        .items
                        .iter()
                        .filter(|p| {
                            p.metadata.labels.as_ref().and_then(|l| l.get("app")).map(String::as_str) == Some("guard")
                        })
                        .filter(|p| ready(p))
                        .count();
                    if guard_armed.load(Ordering::SeqCst) && guards < 1 {
                        v.push("PodDisruptionBudget guard (minAvailable 1) violated: no ready guard pod".into());
                    }
                }
                if !node_names(&client).await.contains(&pinned_node) {
                    v.push(format!("node {pinned_node} holding the safe-to-evict=false pod was removed"));
                }
                v.dedup();
                *violations.lock().unwrap() = v;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };

    eventually("all 10 nginx pods running", 60, || async {
        let list = pods.list(&ListParams::default().labels("app=nginx")).await.unwrap().items;
        list.iter().filter(|p| running_on(p).is_some()).count() == 10
    })
    .await;
    let (desired, _) = asg(&sim.world);
    assert!((2..=5).contains(&desired), "desired {desired}");
    assert!(!cloud.calls.lock().unwrap().is_empty(), "the operator set the desired capacity");
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    eventually("TriggeredScaleUp events on nginx pods", 20, || async {
        let list = events.list(&ListParams::default()).await.unwrap().items;
        list.iter().any(|e| {
            e.reason.as_deref() == Some("TriggeredScaleUp") && e.note.as_deref().unwrap_or("").contains("spot-ng")
        })
    })
    .await;
    eventually("NodePool status with desired nodes", 20, || async {
        let p = pool_api.get("spot-ng").await.unwrap();
        p.status.as_ref().and_then(|s| s.desired_nodes) == Some(asg(&sim.world).0 as i32)
            && p.status.as_ref().is_some_and(|s| s.last_scale_up_time.is_some())
    })
    .await;

    // A PDB-guarded workload on the new nodes, then the walkthrough's deletion.
    let guard: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "guard"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "guard"}},
                 "template": {"metadata": {"labels": {"app": "guard"}},
                              "spec": {"containers": [{"name": "c", "image": "busybox",
                                       "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]}}}
    }))
    .unwrap();
    deployments.create(&PostParams::default(), &guard).await.unwrap();
    let pdb: PodDisruptionBudget = serde_json::from_value(json!({
        "metadata": {"name": "guard"}, "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "guard"}}}
    }))
    .unwrap();
    Api::<PodDisruptionBudget>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &pdb)
        .await
        .unwrap();
    eventually("both guard pods ready", 30, || async {
        pods.list(&ListParams::default().labels("app=guard")).await.unwrap().items.iter().filter(|p| ready(p)).count()
            == 2
    })
    .await;
    guard_armed.store(true, Ordering::SeqCst);
    deployments.delete("nginx", &DeleteParams::default()).await.unwrap();
    eventually("an unneeded node marked as a deletion candidate", 30, || async {
        let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(client.clone());
        nodes.list(&ListParams::default()).await.unwrap().items.iter().any(|n| {
            let taints = n.spec.as_ref().and_then(|s| s.taints.as_ref());
            taints.is_some_and(|t| {
                t.iter().any(|t| t.key == omniscale_nodes::DELETION_CANDIDATE_TAINT && t.effect == "PreferNoSchedule")
            })
        })
    })
    .await;

    eventually("spot-ng back to 1 node", 120, || async {
        let (desired, live) = asg(&sim.world);
        desired == 1 && live == 1 && node_count(&client).await == 1
    })
    .await;
    eventually("guard pods running again", 30, || async {
        pods.list(&ListParams::default().labels("app=guard")).await.unwrap().items.iter().filter(|p| ready(p)).count()
            == 2
    })
    .await;
    done.store(true, Ordering::SeqCst);
    let _ = watcher.await;
    let v = violations.lock().unwrap().clone();
    assert!(v.is_empty(), "invariants violated: {v:?}");
    assert_eq!(node_names(&client).await, vec![pinned_node.clone()], "the survivor is the pinned pod's node");
    let p = pool_api.get("spot-ng").await.unwrap();
    assert!(p.status.as_ref().unwrap().last_scale_down_time.is_some());
    let node_events: Api<Event> = Api::all(client.clone());
    let scale_downs = node_events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| {
            e.reason.as_deref() == Some("ScaleDown")
                && e.regarding.as_ref().and_then(|r| r.kind.as_deref()) == Some("Node")
        })
        .count();
    assert!(scale_downs >= 1, "ScaleDown events on nodes");
    let guard_evictions = events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("ScaleDown"))
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()).is_some_and(|n| n.starts_with("guard-")))
        .count();
    assert!(guard_evictions >= 1, "the PDB-guarded pods were drained through the Eviction API");
    operator.stop().await;
    sim.shutdown().await;
}

async fn node_names(client: &kube::Client) -> Vec<String> {
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(client.clone());
    nodes
        .list(&ListParams::default())
        .await
        .map(|l| l.items.into_iter().filter_map(|n| n.metadata.name).collect())
        .unwrap_or_default()
}

async fn node_count(client: &kube::Client) -> usize {
    node_names(client).await.len()
}

/// Every Event's reason and note, in order: what a failing assertion shows.
async fn event_notes(client: &kube::Client) -> String {
    let mut events = Api::<Event>::all(client.clone()).list(&ListParams::default()).await.unwrap().items;
    events.sort_by_key(|e| e.metadata.creation_timestamp.clone().map(|t| t.0));
    let line = |e: &Event| {
        let on = e.regarding.as_ref().and_then(|r| r.name.clone()).unwrap_or_default();
        format!("{} {on}: {}", e.reason.as_deref().unwrap_or(""), e.note.as_deref().unwrap_or(""))
    };
    let nodes =
        Api::<k8s_openapi::api::core::v1::Node>::all(client.clone()).list(&ListParams::default()).await.unwrap();
    let node = |n: &k8s_openapi::api::core::v1::Node| {
        let taints: Vec<String> =
            n.spec.iter().flat_map(|s| s.taints.iter().flatten()).map(|t| format!("{}:{}", t.key, t.effect)).collect();
        format!(
            "node {} created {:?} taints {taints:?}",
            n.metadata.name.as_deref().unwrap_or(""),
            n.metadata.creation_timestamp
        )
    };
    let pods = Api::<Pod>::all(client.clone()).list(&ListParams::default()).await.unwrap();
    let pod = |p: &Pod| {
        let on = p.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default();
        format!(
            "pod {} on {on:?} created {:?}",
            p.metadata.name.as_deref().unwrap_or(""),
            p.metadata.creation_timestamp
        )
    };
    events
        .iter()
        .map(line)
        .chain(nodes.items.iter().map(node))
        .chain(pods.items.iter().map(pod))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A node whose kubelet stops reporting is removed once the pool's `unreadyTime` has passed
/// (and it is past its boot time), its pods are evicted, and the group gets a replacement node
/// for them through an ordinary scale-up, so every pod runs again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_broken_node_is_replaced() {
    use k8s_openapi::api::core::v1::Node;
    use kube::api::{Patch, PatchParams};
    let (sim, client) = nginx_sim().await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let nodes: Api<Node> = Api::all(client.clone());
    // Ready and past kube-controller-manager's not-ready taint: until then the group has no
    // node to take its template from, and the smallest type of its mixed instances policy
    // (t2.small: one vCPU, one of these pods each) is what a scale-up would be planned with.
    eventually("the first spot-ng node, untainted", 30, || async {
        let list = nodes.list(&ListParams::default()).await.unwrap().items;
        list.len() == 1 && list[0].spec.as_ref().and_then(|s| s.taints.as_ref()).is_none_or(Vec::is_empty)
    })
    .await;

    let cloud = Arc::new(SimCloud::new(sim.world.clone(), sim.cluster.shared.clock.clone()));
    let operator = support::Operator::start(&sim, "broken", &["--max-node-provision-time", "5m"], cloud);
    let mut pool: NodePool = serde_yaml::from_str(&std::fs::read_to_string(example("nodepool.yaml")).unwrap()).unwrap();
    pool.spec.scale_down.as_mut().unwrap().unready_time = "2m".into();
    Api::<NodePool>::all(client.clone()).create(&PostParams::default(), &pool).await.unwrap();
    // Four 500m pods: a t3.small takes three, so the group grows to two nodes.
    let web: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"replicas": 4, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "c", "image": "nginx",
                                       "resources": {"requests": {"cpu": "500m", "memory": "512Mi"}}}]}}}
    }))
    .unwrap();
    Api::<Deployment>::namespaced(client.clone(), "default").create(&PostParams::default(), &web).await.unwrap();
    let all_running = || async {
        let list = pods.list(&ListParams::default().labels("app=web")).await.unwrap().items;
        list.iter().filter(|p| running_on(p).is_some()).count() == 4
    };
    eventually("all 4 web pods running", 60, all_running).await;
    let before = node_names(&client).await;
    assert_eq!(before.len(), 2, "{before:?}\n{}", event_notes(&client).await);
    let first = pods.list(&ListParams::default()).await.unwrap().items;
    // Break the node that holds the fewest web pods (the one the scale-up added).
    let count_on = |n: &str| first.iter().filter(|p| running_on(p).as_deref() == Some(n)).count();
    let broken = before.iter().min_by_key(|n| count_on(n)).unwrap().clone();
    let status = json!({"status": {"conditions": [{"type": "Ready", "status": "Unknown", "reason": "NodeStatusUnknown",
        "message": "Kubelet stopped posting node status.",
        "lastHeartbeatTime": sim.cluster.now().to_string(), "lastTransitionTime": sim.cluster.now().to_string()}]}});
    nodes.patch_status(&broken, &PatchParams::default(), &Patch::Merge(&status)).await.unwrap();

    eventually("the broken node removed", 90, || async { !node_names(&client).await.contains(&broken) }).await;
    eventually("all 4 web pods running again", 90, all_running).await;
    let after = node_names(&client).await;
    assert_eq!(after.len(), 2, "a replacement node joined: {after:?}");
    assert_eq!(asg(&sim.world), (2, 2));
    let events = Api::<Event>::all(client.clone()).list(&ListParams::default()).await.unwrap().items;
    let removal = events.iter().find(|e| {
        e.reason.as_deref() == Some("ScaleDown")
            && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(broken.as_str())
    });
    let note = removal.and_then(|e| e.note.clone()).unwrap_or_default();
    assert!(note.contains("not ready"), "ScaleDown event on the broken node: {note:?}");
    operator.stop().await;
    sim.shutdown().await;
}
