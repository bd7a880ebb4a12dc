#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]
//! The Auto Scaling Group engine, loop by loop, on hand-built clusters.

mod common;

use common::*;
use omniscale_nodes::history::History;
use omniscale_nodes::input::build;
use omniscale_nodes::{InstanceState, decide};

/// The nginx-test walkthrough: one t3.small node holding 3 of 10 pods of 500m/512Mi; seven
/// pending. A t3.small takes 3 such pods (1930m, 1572Mi allocatable), so 3 more nodes.
#[test]
fn nginx_walkthrough_scale_up() {
    let mut w = World { pools: vec![discovery_pool("spot-ng", Some(5))], ..World::default() };
    let g = group("spot-ng", 1, 5, 1, vec![t3_small()]);
    w.nodes.push(node_for("spot-ng", 0, &t3_small()));
    for i in 0..10 {
        let bound = (i < 3).then_some("ip-spot-ng-0");
        w.pods.push(pod("default", &format!("nginx-{i}"), "500m", "512Mi", bound));
    }
    let input = build(w.objects(), vec![g], &[], Some("us-east-1"));
    assert_eq!(input.pending.len(), 7);
    let plan = decide(&input, &settings(), &History::default(), at(0));
    assert_eq!(plan.scale_up.len(), 1, "{plan:#?}");
    let r = &plan.scale_up[0];
    assert_eq!((r.group.as_str(), r.from, r.to), ("spot-ng", 1, 4));
    assert_eq!(r.pods.len(), 7);
    assert_eq!(plan.triggered.len(), 7);
    assert!(plan.not_triggered.is_empty());
    assert!(plan.remove.is_empty(), "no scale-down in a loop that scaled up");
    assert_eq!(plan.history.requests["spot-ng"].to, 4);
    assert_eq!(plan.pools[0].desired, 4);
}

/// A mixed t2.small/t3.small group is sized by t2.small (940m: one 500m pod per node), and the
/// pool's node limit caps it: 7 pending pods want 7 nodes, the pool allows 4 more.
#[test]
fn mixed_group_sized_by_smallest_type_and_capped_by_limit() {
    let mut w = World { pools: vec![discovery_pool("spot-ng", Some(5))], ..World::default() };
    let g = group("spot-ng", 1, 10, 1, vec![t2_small(), t3_small()]);
    w.nodes.push(node_for("spot-ng", 0, &t3_small()));
    for i in 0..10 {
        w.pods.push(pod("default", &format!("nginx-{i}"), "500m", "512Mi", (i < 3).then_some("ip-spot-ng-0")));
    }
    let input = build(w.objects(), vec![g], &[], None);
    let plan = decide(&input, &settings(), &History::default(), at(0));
    assert_eq!(plan.scale_up[0].to, 5);
    assert_eq!(plan.triggered.len(), 4);
    assert_eq!(plan.not_triggered.len(), 3);
    assert!(plan.not_triggered[0].1.contains("limit of 5 nodes"), "{:?}", plan.not_triggered);
}

/// NodePool cpu and memory limits count the nodes' capacity: 5 cpu allows two more 2-vCPU
/// nodes; 5Gi allows two more 2Gi nodes.
#[test]
fn pool_cpu_and_memory_limits() {
    for limits in [serde_json::json!({"cpu": "5"}), serde_json::json!({"memory": "5Gi"})] {
        let spec = serde_json::json!({"autoScalingGroup": {"discovery": {"clusterName": "demo"}}, "limits": limits});
        let mut w = World { pools: vec![pool("ng", spec)], ..World::default() };
        for i in 0..9 {
            w.pods.push(pod("default", &format!("p{i}"), "1500m", "256Mi", None));
        }
        let input = build(w.objects(), vec![group("ng", 0, 10, 0, vec![t3_small()])], &[], None);
        let plan = decide(&input, &settings(), &History::default(), at(0));
        assert_eq!(plan.scale_up[0].to, 2, "{limits}: {plan:#?}");
        assert!(plan.not_triggered[0].1.contains("limit reached"), "{:?}", plan.not_triggered);
    }
}

/// Upcoming nodes (desired capacity not ready yet) absorb pending pods: no second scale-up.
#[test]
fn upcoming_nodes_count() {
    let mut w = World { pools: vec![discovery_pool("spot-ng", None)], ..World::default() };
    let mut g = group("spot-ng", 1, 5, 1, vec![t3_small()]);
    g.desired = 3;
    g.instances.push(instance("spot-ng", 1, InstanceState::Pending));
    g.instances.push(instance("spot-ng", 2, InstanceState::Pending));
    w.nodes.push(node_for("spot-ng", 0, &t3_small()));
    for i in 0..9 {
        w.pods.push(pod("default", &format!("p{i}"), "500m", "512Mi", (i < 3).then_some("ip-spot-ng-0")));
    }
    let input = build(w.objects(), vec![g], &[], None);
    let plan = decide(&input, &settings(), &History::default(), at(0));
    assert!(plan.scale_up.is_empty(), "{:?}", plan.scale_up);
    assert_eq!(plan.fits_existing.len(), 6);
}

/// A pending pod an upcoming node takes leaves that node's room to no one else: the next
/// pending pod still gets a node of its own.
#[test]
fn upcoming_capacity_is_not_counted_twice() {
    let w = World {
        pools: vec![discovery_pool("ng", None)],
        pods: vec![pod("default", "a", "1500m", "256Mi", None), pod("default", "b", "1500m", "256Mi", None)],
        ..World::default()
    };
    let mut g = group("ng", 0, 10, 0, vec![t3_small()]);
    g.desired = 1;
    g.instances.push(instance("ng", 0, InstanceState::Pending));
    let plan = decide(&build(w.objects(), vec![g], &[], None), &settings(), &History::default(), at(0));
    assert_eq!(plan.fits_existing.len(), 1);
    assert_eq!(plan.scale_up.len(), 1, "{plan:#?}");
    assert_eq!((plan.scale_up[0].from, plan.scale_up[0].to), (1, 2));
}

/// A pod no group can take gets the reason per group.
#[test]
fn not_triggered_reasons() {
    let mut w = World { pools: vec![discovery_pool("spot-ng", None)], ..World::default() };
    let g = group("spot-ng", 0, 5, 0, vec![t3_small()]);
    w.pods.push(pod("default", "huge", "4", "1Gi", None));
    let mut tainted = pod("default", "picky", "100m", "64Mi", None);
    tainted.spec.as_mut().unwrap().node_selector = Some([("gpu".to_owned(), "true".to_owned())].into());
    w.pods.push(tainted);
    let input = build(w.objects(), vec![g], &[], None);
    let plan = decide(&input, &settings(), &History::default(), at(0));
    assert!(plan.scale_up.is_empty());
    let why: std::collections::BTreeMap<_, _> =
        plan.not_triggered.iter().map(|(p, w)| (p.name.as_str(), w.as_str())).collect();
    assert!(why["huge"].starts_with("spot-ng: ") && why["huge"].contains("cpu"), "{why:?}");
    assert!(why["picky"].contains("node affinity") || why["picky"].contains("selector"), "{why:?}");
}

/// Scale from zero through the node-template tags: a tainted GPU-like group only gets the pod
/// that tolerates the taint.
#[test]
fn scale_from_zero_via_tags() {
    let mut w = World { pools: vec![discovery_pool("pool", None)], ..World::default() };
    let mut g = group("gpu-ng", 0, 3, 0, vec![m5_large()]);
    g.tags.insert("k8s.io/cluster-autoscaler/node-template/label/workload".into(), "batch".into());
    g.tags.insert("k8s.io/cluster-autoscaler/node-template/taint/dedicated".into(), "batch:NoSchedule".into());
    let mut ok = pod("default", "batch-1", "1", "1Gi", None);
    let spec = ok.spec.as_mut().unwrap();
    spec.node_selector = Some([("workload".to_owned(), "batch".to_owned())].into());
    spec.tolerations = Some(vec![k8s_openapi::api::core::v1::Toleration {
        key: Some("dedicated".into()),
        operator: Some("Equal".into()),
        value: Some("batch".into()),
        effect: Some("NoSchedule".into()),
        ..Default::default()
    }]);
    w.pods.push(ok);
    w.pods.push(pod("default", "web-1", "1", "1Gi", None));
    let input = build(w.objects(), vec![g], &[], None);
    let plan = decide(&input, &settings(), &History::default(), at(0));
    assert_eq!(plan.scale_up.len(), 1);
    assert_eq!(plan.scale_up[0].to, 1);
    assert_eq!(plan.scale_up[0].pods[0].name, "batch-1");
    assert!(plan.not_triggered[0].1.contains("taint"), "{:?}", plan.not_triggered);
}

/// Similar groups in two zones share the new nodes, smallest first.
#[test]
fn balances_similar_groups() {
    let mut w = World { pools: vec![discovery_pool("pool", None)], ..World::default() };
    let mut a = group("ng-a", 0, 10, 0, vec![t3_small()]);
    a.zones = vec!["us-east-1a".into()];
    let mut b = group("ng-b", 0, 10, 0, vec![t3_small()]);
    b.zones = vec!["us-east-1b".into()];
    for i in 0..12 {
        w.pods.push(pod("default", &format!("p{i}"), "500m", "512Mi", None));
    }
    let input = build(w.objects(), vec![a, b], &[], None);
    let plan = decide(&input, &settings(), &History::default(), at(0));
    let to: Vec<(String, u32)> = plan.scale_up.iter().map(|r| (r.group.clone(), r.to)).collect();
    assert_eq!(to, vec![("ng-a".to_owned(), 2), ("ng-b".to_owned(), 2)]);
}

/// The expander picks between dissimilar groups: least-waste takes t3.small for 500m pods
/// (3 fill a node), most-pods is indifferent, priority follows the NodePool weight.
#[test]
fn expander_choice() {
    let mut w = World {
        pools: vec![
            pool("big", serde_json::json!({"autoScalingGroup": {"name": "m5"}, "weight": 50})),
            pool("small", serde_json::json!({"autoScalingGroup": {"name": "t3"}, "weight": 10})),
        ],
        ..World::default()
    };
    let groups = vec![group("m5", 0, 10, 0, vec![m5_large()]), group("t3", 0, 10, 0, vec![t3_small()])];
    for i in 0..3 {
        w.pods.push(pod("default", &format!("p{i}"), "500m", "512Mi", None));
    }
    let input = build(w.objects(), groups.clone(), &[], None);
    let plan = decide(&input, &settings(), &History::default(), at(0));
    assert_eq!(plan.scale_up[0].group, "t3", "least-waste");
    let mut s = settings();
    s.expanders = omniscale_nodes::expander::parse_chain("priority,least-waste").unwrap();
    let plan = decide(&input, &s, &History::default(), at(0));
    assert_eq!(plan.scale_up[0].group, "m5", "priority");
}

/// A scale-up that never registers is reverted after 15 minutes and the group backed off; a
/// failed scaling activity reverts at once.
#[test]
fn provisioning_timeout_and_failed_activity() {
    let mut w = World { pools: vec![discovery_pool("spot-ng", None)], ..World::default() };
    w.nodes.push(node_for("spot-ng", 0, &t3_small()));
    w.pods.push(pod("default", "resident", "1000m", "512Mi", Some("ip-spot-ng-0")));
    w.pods.push(pod("default", "p", "1500m", "512Mi", None));
    let g0 = group("spot-ng", 1, 5, 1, vec![t3_small()]);
    let plan = decide(&build(w.objects(), vec![g0.clone()], &[], None), &settings(), &History::default(), at(0));
    assert_eq!(plan.scale_up[0].to, 2);
    // The ASG launched an instance that never becomes a node.
    let mut g1 = g0.clone();
    g1.desired = 2;
    g1.instances.push(instance("spot-ng", 1, InstanceState::Pending));
    let input = build(w.objects(), vec![g1.clone()], &[], None);
    let wait = decide(&input, &settings(), &plan.history, at(14 * 60));
    assert!(wait.reverts.is_empty() && wait.scale_up.is_empty());
    let late = decide(&input, &settings(), &wait.history, at(15 * 60));
    assert_eq!(late.reverts.len(), 1, "{late:#?}");
    assert_eq!(late.reverts[0].terminate, vec!["i-spot-ng-1".to_owned()]);
    assert!(late.reverts[0].reason.contains("not ready after"));
    assert!(late.history.backed_off("spot-ng", at(15 * 60 + 1)).is_some());
    assert!(late.scale_up.is_empty(), "backed off: {:?}", late.not_triggered);
    assert!(late.not_triggered[0].1.contains("backed off"));
    // The instance did become a node, NotReady and still within its boot time when the
    // request times out: registered capacity is scale-down's to remove (with its pods'
    // evictions and its rules), never terminated by the revert.
    let mut registered = w.clone();
    registered.nodes.push(not_ready(node_for("spot-ng", 1, &t3_small()), at(10 * 60), at(12 * 60)));
    registered.pods.push(pod("default", "p", "1500m", "512Mi", Some("ip-spot-ng-1")));
    registered.pods.retain(|p| p.spec.as_ref().is_some_and(|s| s.node_name.is_some()));
    let mut g = g1.clone();
    g.instances[1] = instance("spot-ng", 1, InstanceState::Running);
    let late = decide(&build(registered.objects(), vec![g], &[], None), &settings(), &wait.history, at(15 * 60));
    assert_eq!(late.reverts.len(), 1, "{late:#?}");
    assert!(late.reverts[0].terminate.is_empty(), "{:?}", late.reverts[0]);
    assert_eq!(late.reverts[0].set_desired, None);
    // Failed activity right after the request: reverted without waiting, launched ones kept.
    let mut g2 = g1.clone();
    g2.desired = 4;
    g2.last_failed_activity = Some((at(30), "Could not launch Spot Instances. InsufficientInstanceCapacity".into()));
    let mut h = plan.history.clone();
    h.requests.get_mut("spot-ng").unwrap().to = 4;
    let failed = decide(&build(w.objects(), vec![g2], &[], None), &settings(), &h, at(60));
    assert_eq!(failed.reverts.len(), 1);
    assert!(failed.reverts[0].terminate.is_empty());
    assert_eq!(failed.reverts[0].set_desired, Some(2));
    assert!(failed.reverts[0].reason.contains("InsufficientInstanceCapacity"));
}

/// spot-ng's three t3.small nodes after a quiet spell: 0 holds pod a, 1 holds pod b, 2 is empty.
fn quiet_spot_ng() -> World {
    let mut w = World { pools: vec![discovery_pool("spot-ng", None)], ..World::default() };
    for k in 0..3 {
        w.nodes.push(node_for("spot-ng", k, &t3_small()));
    }
    w.pods.push(pod("default", "a", "500m", "512Mi", Some("ip-spot-ng-0")));
    w.pods.push(pod("default", "b", "500m", "256Mi", Some("ip-spot-ng-1")));
    w
}

/// Scale-down: an empty node goes after unneededTime; not during delayAfterAdd; never below
/// the group's minimum; a node with pods is drained (its pods listed for eviction).
#[test]
fn scale_down_timers_and_minimum() {
    let w = quiet_spot_ng();
    let input = build(w.objects(), vec![group("spot-ng", 1, 5, 3, vec![t3_small()])], &[], None);
    let p0 = decide(&input, &settings(), &History::default(), at(0));
    // Node 2 is empty; node 1's pod fits node 0; then node 0's pods have nowhere to go.
    let unneeded: Vec<&str> = p0.unneeded.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(unneeded, vec!["ip-spot-ng-2", "ip-spot-ng-1"]);
    assert!(p0.blocked[0].1.contains("no other node"), "{:?}", p0.blocked);
    assert!(p0.remove.is_empty());
    assert!(decide(&input, &settings(), &p0.history, at(599)).remove.is_empty());
    let p1 = decide(&input, &settings(), &p0.history, at(600));
    let removed: Vec<&str> = p1.remove.iter().map(|r| r.node.as_str()).collect();
    assert_eq!(removed, vec!["ip-spot-ng-2", "ip-spot-ng-1"], "{p1:#?}");
    assert!(p1.remove[0].evict.is_empty());
    assert_eq!(p1.remove[1].evict[0].name, "b");
    // With a minimum of 2, only one goes: the empty one.
    let input = build(w.objects(), vec![group("spot-ng", 2, 5, 3, vec![t3_small()])], &[], None);
    let p2 = decide(&input, &settings(), &p0.history, at(600));
    assert_eq!(p2.remove.len(), 1);
    assert_eq!(p2.remove[0].node, "ip-spot-ng-2");
    assert!(p2.waiting.iter().any(|(_, w)| w.contains("minimum")), "{:?}", p2.waiting);
    // Right after a scale-up nothing goes.
    let mut h = p0.history.clone();
    h.last_scale_up.insert("spot-ng".into(), at(300));
    let p3 = decide(&input, &settings(), &h, at(600));
    assert!(p3.remove.is_empty());
    assert!(p3.waiting.iter().all(|(_, w)| w.contains("grew")), "{:?}", p3.waiting);
}

/// Blockers: safe-to-evict false, a PDB with no disruptions left, no controller,
/// scale-down-disabled, the leader's node.
#[test]
fn scale_down_blockers() {
    let mut w = World { pools: vec![discovery_pool("spot-ng", None)], ..World::default() };
    let g = group("spot-ng", 0, 10, 6, vec![m5_large()]);
    for k in 0..6 {
        w.nodes.push(node_for("spot-ng", k, &m5_large()));
    }
    w.pods.push(annotate(
        pod("default", "precious", "100m", "64Mi", Some("ip-spot-ng-0")),
        "cluster-autoscaler.kubernetes.io/safe-to-evict",
        "false",
    ));
    let mut guarded = pod("default", "guarded", "100m", "64Mi", Some("ip-spot-ng-1"));
    guarded.metadata.labels = Some([("app".to_owned(), "db".to_owned())].into());
    w.pods.push(guarded);
    w.pdbs.push(pdb("default", "db", "db", 0));
    let mut bare = pod("default", "bare", "100m", "64Mi", Some("ip-spot-ng-2"));
    bare.metadata.owner_references = None;
    w.pods.push(bare);
    w.nodes[3].metadata.annotations =
        Some([("cluster-autoscaler.kubernetes.io/scale-down-disabled".to_owned(), "true".to_owned())].into());
    let input = build(w.objects(), vec![g], &["ip-spot-ng-4".to_owned()], None);
    let p0 = decide(&input, &settings(), &History::default(), at(0));
    let p1 = decide(&input, &settings(), &p0.history, at(3600));
    let removed: Vec<&str> = p1.remove.iter().map(|r| r.node.as_str()).collect();
    assert_eq!(removed, vec!["ip-spot-ng-5"], "{p1:#?}");
    let why: std::collections::BTreeMap<&str, &str> =
        p1.blocked.iter().map(|(n, w)| (n.as_str(), w.as_str())).collect();
    assert!(why["ip-spot-ng-0"].contains("safe-to-evict"), "{why:?}");
    assert!(why["ip-spot-ng-1"].contains("PodDisruptionBudget db"), "{why:?}");
    assert!(why["ip-spot-ng-2"].contains("no controller"), "{why:?}");
    assert!(why["ip-spot-ng-3"].contains("scale-down-disabled"), "{why:?}");
    assert!(why["ip-spot-ng-4"].contains("leader"), "{why:?}");
}

/// Busy nodes are not candidates; pods that would not fit elsewhere block.
#[test]
fn utilization_threshold_and_no_room() {
    let mut w = World { pools: vec![discovery_pool("spot-ng", None)], ..World::default() };
    let g = group("spot-ng", 0, 5, 2, vec![t3_small()]);
    for k in 0..2 {
        w.nodes.push(node_for("spot-ng", k, &t3_small()));
    }
    // Node 0: 1500m of 1930m (78 %): busy. Node 1: 900m (47 %): a candidate, but 900m does not
    // fit in node 0's 430m left.
    w.pods.push(pod("default", "big", "1500m", "512Mi", Some("ip-spot-ng-0")));
    w.pods.push(pod("default", "mid", "900m", "512Mi", Some("ip-spot-ng-1")));
    let input = build(w.objects(), vec![g], &[], None);
    let p = decide(&input, &settings(), &History::default(), at(0));
    assert_eq!(p.utilized.len(), 1);
    assert_eq!(p.utilized[0].0, "ip-spot-ng-0");
    assert!(p.unneeded.is_empty());
    assert!(p.blocked[0].1.contains("no other node can take the pod"), "{:?}", p.blocked);
}

/// Scale from zero for an extended resource: the `node-template/resources/nvidia.com/gpu` tag
/// makes the group's new node offer the GPU, so a pod that asks for one triggers a scale-up, and
/// a pod asking for more than one node offers does not.
#[test]
fn scale_from_zero_with_extended_resource() {
    let mut w = World { pools: vec![discovery_pool("pool", None)], ..World::default() };
    let mut g = group("gpu-ng", 0, 3, 0, vec![m5_large()]);
    g.tags.insert("k8s.io/cluster-autoscaler/node-template/resources/nvidia.com/gpu".into(), "1".into());
    let gpu = |name: &str, n: &str| {
        let mut p = pod("default", name, "500m", "1Gi", None);
        let c = &mut p.spec.as_mut().unwrap().containers[0];
        let req = c.resources.as_mut().unwrap().requests.as_mut().unwrap();
        req.insert("nvidia.com/gpu".into(), k8s_openapi::apimachinery::pkg::api::resource::Quantity(n.into()));
        c.resources.as_mut().unwrap().limits = Some(
            [("nvidia.com/gpu".to_owned(), k8s_openapi::apimachinery::pkg::api::resource::Quantity(n.into()))].into(),
        );
        p
    };
    w.pods.push(gpu("train-1", "1"));
    w.pods.push(gpu("train-2", "1"));
    w.pods.push(gpu("too-big", "2"));
    let input = build(w.objects(), vec![g], &[], None);
    let plan = decide(&input, &settings(), &History::default(), at(0));
    assert_eq!(plan.scale_up.len(), 1, "{plan:#?}");
    // One GPU per node: the two one-GPU pods need two nodes.
    assert_eq!(plan.scale_up[0].to, 2, "{plan:#?}");
    let mut names: Vec<_> = plan.scale_up[0].pods.iter().map(|p| p.name.as_str()).collect();
    names.sort();
    assert_eq!(names, ["train-1", "train-2"]);
    let why: std::collections::BTreeMap<_, _> =
        plan.not_triggered.iter().map(|(p, w)| (p.name.as_str(), w.as_str())).collect();
    assert!(why["too-big"].contains("nvidia.com/gpu"), "{why:?}");
}

/// A node NotReady for the pool's unreadyTime (20m) is removed as broken, whatever its
/// utilisation, with its pods evicted when they fit elsewhere; before that it waits, and it is
/// never counted as capacity on the way.
#[test]
fn broken_nodes_are_removed_after_unready_time() {
    let mut w = World { pools: vec![discovery_pool("spot-ng", None)], ..World::default() };
    for k in 0..3 {
        w.nodes.push(node_for("spot-ng", k, &m5_large()));
    }
    // Busy ready nodes (not unneeded); the broken one is busy too.
    w.pods.push(pod("default", "busy-0", "1500m", "1Gi", Some("ip-spot-ng-0")));
    w.pods.push(pod("default", "busy-1", "1200m", "1Gi", Some("ip-spot-ng-1")));
    w.pods.push(pod("default", "stuck", "300m", "1Gi", Some("ip-spot-ng-2")));
    w.nodes[2] = not_ready(w.nodes[2].clone(), at(-7200), at(-300));
    let g = || group("spot-ng", 1, 5, 3, vec![m5_large()]);
    let input = build(w.objects(), vec![g()], &[], None);
    let p0 = decide(&input, &settings(), &History::default(), at(0));
    assert!(p0.remove.is_empty(), "{p0:#?}");
    let waits: std::collections::BTreeMap<_, _> = p0.waiting.iter().map(|(n, w)| (n.as_str(), w.as_str())).collect();
    assert!(waits["ip-spot-ng-2"].starts_with("not ready for 5m"), "{waits:?}");
    assert_eq!(p0.unready, vec![("ip-spot-ng-2".to_owned(), at(-300))]);
    assert!(p0.unneeded.is_empty(), "busy nodes are not unneeded: {:?}", p0.unneeded);
    // 20 minutes after it went NotReady: removed, its pod evicted to a ready node.
    let p1 = decide(&input, &settings(), &p0.history, at(900));
    assert_eq!(p1.remove.len(), 1, "{p1:#?}");
    let r = &p1.remove[0];
    assert_eq!((r.node.as_str(), r.instance.as_str()), ("ip-spot-ng-2", "i-spot-ng-2"));
    assert_eq!(r.reason, omniscale_nodes::scaledown::RemovalReason::Unready);
    assert_eq!(r.evict.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), ["stuck"]);
    // A pod that fits nowhere does not keep a broken node (it is not running anyway): the node
    // goes, the pod comes back pending for a scale-up, and no other node goes in that loop.
    let mut crowded = w.clone();
    crowded.nodes.push(node_for("spot-ng", 3, &m5_large()));
    crowded.pods.push(pod("default", "huge", "1900m", "1Gi", Some("ip-spot-ng-2")));
    crowded.pods.push(pod("default", "small", "200m", "256Mi", Some("ip-spot-ng-3")));
    let input = build(crowded.objects(), vec![group("spot-ng", 1, 5, 4, vec![m5_large()])], &[], None);
    let p = decide(&input, &settings(), &p0.history, at(900));
    let p = decide(&input, &settings(), &p.history, at(1800));
    assert_eq!(p.remove.len(), 1, "{p:#?}");
    let mut evicted: Vec<&str> = p.remove[0].evict.iter().map(|p| p.name.as_str()).collect();
    evicted.sort();
    assert_eq!((p.remove[0].node.as_str(), evicted), ("ip-spot-ng-2", vec!["huge", "stuck"]));
    let quiet_waits = p.waiting.iter().find(|(n, _)| n == "ip-spot-ng-3").map(|(_, w)| w.as_str());
    assert!(quiet_waits.is_some_and(|w| w.contains("need the capacity first")), "{p:#?}");
    // Never below the group's minimum.
    let input = build(w.objects(), vec![group("spot-ng", 3, 5, 3, vec![m5_large()])], &[], None);
    let p2 = decide(&input, &settings(), &p0.history, at(900));
    assert!(p2.remove.is_empty());
    assert!(p2.waiting.iter().any(|(n, w)| n == "ip-spot-ng-2" && w.contains("minimum")), "{:?}", p2.waiting);
    // A pool may wait longer.
    let mut slow = w.clone();
    slow.pools = vec![pool(
        "spot-ng",
        serde_json::json!({"autoScalingGroup": {"discovery": {"clusterName": "demo"}}, "scaleDown": {"unreadyTime": "1h"}}),
    )];
    let input = build(slow.objects(), vec![g()], &[], None);
    assert!(decide(&input, &settings(), &p0.history, at(900)).remove.is_empty());
}

/// A NotReady node registered within the provisioning time is still booting: it counts as
/// upcoming capacity (a pending pod waits for it) and is no removal candidate. Past that time
/// it is broken: the pending pod gets a new node instead.
#[test]
fn booting_nodes_are_upcoming_and_broken_ones_are_not() {
    let mut w = World { pools: vec![discovery_pool("spot-ng", None)], ..World::default() };
    w.nodes.push(node_for("spot-ng", 0, &m5_large()));
    w.nodes.push(node_for("spot-ng", 1, &m5_large()));
    w.pods.push(pod("default", "full", "1800m", "1Gi", Some("ip-spot-ng-0")));
    w.pods.push(pod("default", "waiting", "1", "1Gi", None));
    let booting = not_ready(w.nodes[1].clone(), at(-120), at(-120));
    let broken = not_ready(w.nodes[1].clone(), at(-3600), at(-1800));
    let g = || group("spot-ng", 1, 5, 2, vec![m5_large()]);
    w.nodes[1] = booting;
    let p = decide(&build(w.objects(), vec![g()], &[], None), &settings(), &History::default(), at(0));
    assert!(p.scale_up.is_empty(), "{p:#?}");
    assert_eq!(p.fits_existing.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), ["waiting"]);
    assert!(p.unready.is_empty() && p.remove.is_empty(), "{p:#?}");
    w.nodes[1] = broken;
    let p = decide(&build(w.objects(), vec![g()], &[], None), &settings(), &History::default(), at(0));
    assert_eq!(p.scale_up.len(), 1, "{p:#?}");
    assert_eq!((p.scale_up[0].from, p.scale_up[0].to), (2, 3));
    // The loop scales up, so the broken node's removal waits for a later loop.
    assert!(p.remove.is_empty());
}

/// A new node reports Ready a few seconds before kube-controller-manager lifts its
/// `node.kubernetes.io/not-ready` taint. In that window it is still booting capacity: the
/// pending pod waits for it, no second node is bought (seen on a real control plane).
#[test]
fn a_ready_node_still_tainted_not_ready_is_upcoming_capacity() {
    use k8s_openapi::api::core::v1::Taint;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    let mut w = World { pools: vec![discovery_pool("spot-ng", None)], ..World::default() };
    w.nodes.push(node_for("spot-ng", 0, &m5_large()));
    let mut fresh = node_for("spot-ng", 1, &m5_large());
    fresh.metadata.creation_timestamp = Some(Time(at(-20)));
    fresh.spec.get_or_insert_default().taints = Some(vec![Taint {
        key: "node.kubernetes.io/not-ready".into(),
        effect: "NoSchedule".into(),
        time_added: Some(Time(at(-20))),
        value: None,
    }]);
    w.nodes.push(fresh);
    w.pods.push(pod("default", "full", "1800m", "1Gi", Some("ip-spot-ng-0")));
    w.pods.push(pod("default", "waiting", "1", "1Gi", None));
    let input = build(w.objects(), vec![group("spot-ng", 1, 5, 2, vec![m5_large()])], &[], None);
    assert!(input.groups[0].nodes.iter().all(|(_, i)| i != "i-spot-ng-1"), "not counted as a ready node");
    let p = decide(&input, &settings(), &History::default(), at(0));
    assert!(p.scale_up.is_empty(), "{p:#?}");
    assert_eq!(p.fits_existing.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), ["waiting"]);
    assert!(p.remove.is_empty() && p.unready.is_empty(), "{p:#?}");
    // Left on for good (the kubelet lost its connection): past the boot time it is broken,
    // NotReady since the taint was added (without the pending pod, whose scale-up would put
    // scale-down off for this loop).
    w.pods.retain(|p| p.metadata.name.as_deref() != Some("waiting"));
    let input = build(w.objects(), vec![group("spot-ng", 1, 5, 2, vec![m5_large()])], &[], None);
    let p = decide(&input, &settings(), &History::default(), at(3600));
    assert_eq!(p.unready, vec![("ip-spot-ng-1".to_owned(), at(-20))], "{p:#?}");
}

/// A scale-up that arrives is not reverted because an older node of the group is broken: the
/// broken node counts as arrived (scale-down removes it, with its rules), and a timeout never
/// terminates it.
#[test]
fn a_broken_node_does_not_time_out_a_scale_up() {
    let mut w = World { pools: vec![discovery_pool("spot-ng", None)], ..World::default() };
    w.nodes.push(not_ready(node_for("spot-ng", 0, &m5_large()), at(-7200), at(0)));
    w.pods.push(pod("default", "p", "1", "1Gi", None));
    let mut g = group("spot-ng", 1, 5, 1, vec![m5_large()]);
    let p0 = decide(&build(w.objects(), vec![g.clone()], &[], None), &settings(), &History::default(), at(0));
    assert_eq!((p0.scale_up[0].from, p0.scale_up[0].to), (1, 2));
    // The new node arrives and takes the pod; the broken one stays broken.
    g.desired = 2;
    g.instances.push(instance("spot-ng", 1, InstanceState::Running));
    w.nodes.push(node_for("spot-ng", 1, &m5_large()));
    w.pods[0] = pod("default", "p", "1", "1Gi", Some("ip-spot-ng-1"));
    let p1 = decide(&build(w.objects(), vec![g.clone()], &[], None), &settings(), &p0.history, at(60 * 16));
    assert!(p1.reverts.is_empty(), "{:?}", p1.reverts);
    assert!(p1.history.requests.is_empty(), "the request is done: {:?}", p1.history.requests);
    assert!(p1.history.backed_off("spot-ng", at(60 * 16)).is_none());
}

/// Unneeded nodes get the soft deletion-candidate taint, marked nodes that are needed again
/// lose it, both capped per loop; a loop that scales up leaves the marks alone.
#[test]
fn soft_deletion_candidate_taints() {
    let mut w = quiet_spot_ng();
    let g = || group("spot-ng", 1, 5, 3, vec![t3_small()]);
    let p = decide(&build(w.objects(), vec![g()], &[], None), &settings(), &History::default(), at(0));
    assert_eq!(p.soft_taint, ["ip-spot-ng-2", "ip-spot-ng-1"]);
    assert!(p.soft_untaint.is_empty());
    // Node 2 is marked already; node 0 is marked but needed (its pods have nowhere to go).
    let mark = |n: &mut k8s_openapi::api::core::v1::Node| {
        n.spec.as_mut().unwrap().taints = Some(vec![k8s_openapi::api::core::v1::Taint {
            key: omniscale_nodes::DELETION_CANDIDATE_TAINT.into(),
            effect: "PreferNoSchedule".into(),
            value: Some("1800000000".into()),
            time_added: None,
        }]);
    };
    mark(&mut w.nodes[0]);
    mark(&mut w.nodes[2]);
    let p = decide(&build(w.objects(), vec![g()], &[], None), &settings(), &History::default(), at(0));
    assert_eq!(
        (p.soft_taint.as_slice(), p.soft_untaint.as_slice()),
        (&["ip-spot-ng-1".to_owned()][..], &["ip-spot-ng-0".to_owned()][..])
    );
    let capped = omniscale_nodes::input::Settings { max_bulk_soft_taint: 0, ..settings() };
    let p = decide(&build(w.objects(), vec![g()], &[], None), &capped, &History::default(), at(0));
    assert!(p.soft_taint.is_empty() && p.soft_untaint.is_empty());
    // Pending pods that need a new node (one fits the empty node): the loop scales up and does
    // not touch the marks.
    w.pods.push(pod("default", "big-1", "1800m", "256Mi", None));
    w.pods.push(pod("default", "big-2", "1800m", "256Mi", None));
    let p = decide(&build(w.objects(), vec![g()], &[], None), &settings(), &History::default(), at(0));
    assert_eq!(p.scale_up.len(), 1);
    assert!(p.soft_taint.is_empty() && p.soft_untaint.is_empty(), "{p:#?}");
}

/// Cluster Autoscaler's health gate: with more than 3 nodes broken and more than 45% of all,
/// nothing is added or removed (a partition must not turn into mass replacement); booting
/// nodes do not count.
#[test]
fn an_unhealthy_cluster_is_not_scaled() {
    let mut w = World { pools: vec![discovery_pool("spot-ng", None)], ..World::default() };
    for k in 0..8 {
        w.nodes.push(node_for("spot-ng", k, &m5_large()));
    }
    w.pods.push(pod("default", "waiting", "1900m", "1Gi", None));
    for k in 0..4 {
        w.pods.push(pod("default", &format!("busy-{k}"), "1900m", "1Gi", Some(&format!("ip-spot-ng-{k}"))));
    }
    for k in 4..8 {
        w.nodes[k] = not_ready(w.nodes[k].clone(), at(-7200), at(-3600));
    }
    let g = || group("spot-ng", 1, 20, 8, vec![m5_large()]);
    // 4 of 8 broken: more than 3, but 50% > 45%: unhealthy.
    let p = decide(&build(w.objects(), vec![g()], &[], None), &settings(), &History::default(), at(0));
    let why = p.unhealthy.as_deref().unwrap_or_default();
    assert!(why.starts_with("4 of 8 nodes are NotReady"), "{p:#?}");
    assert!(p.scale_up.is_empty() && p.remove.is_empty() && p.not_triggered.is_empty(), "{p:#?}");
    assert_eq!(p.pools[0].unhealthy.as_deref(), Some(why));
    // One of them just registered (booting): 3 broken, not more than 3: healthy again. The
    // pending pod waits for the booting node; the three broken ones go.
    w.nodes[7] = not_ready(w.nodes[7].clone(), at(-60), at(-60));
    let p = decide(&build(w.objects(), vec![g()], &[], None), &settings(), &History::default(), at(0));
    assert!(p.unhealthy.is_none(), "{p:#?}");
    assert_eq!(p.fits_existing.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), ["waiting"]);
    let removed: Vec<&str> = p.remove.iter().map(|r| r.node.as_str()).collect();
    assert_eq!(removed, ["ip-spot-ng-4", "ip-spot-ng-5", "ip-spot-ng-6"], "{p:#?}");
}

/// A GPU node is judged by its GPUs alone: busy cpu without a GPU pod leaves it unneeded, an
/// idle cpu with its GPU taken keeps it.
#[test]
fn gpu_nodes_are_judged_by_gpu_utilization() {
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    let mut w = World { pools: vec![discovery_pool("pool", None)], ..World::default() };
    for k in 0..3 {
        w.nodes.push(node_for("ng", k, &m5_large()));
    }
    for k in 1..3 {
        w.nodes[k]
            .status
            .as_mut()
            .unwrap()
            .allocatable
            .as_mut()
            .unwrap()
            .insert("nvidia.com/gpu".into(), Quantity("1".into()));
    }
    w.pods.push(pod("default", "cpu-hog", "1800m", "1Gi", Some("ip-ng-1")));
    let mut trainer = pod("default", "trainer", "100m", "1Gi", Some("ip-ng-2"));
    let c = &mut trainer.spec.as_mut().unwrap().containers[0];
    c.resources.as_mut().unwrap().requests.as_mut().unwrap().insert("nvidia.com/gpu".into(), Quantity("1".into()));
    w.pods.push(trainer);
    let input = build(w.objects(), vec![group("ng", 0, 5, 3, vec![m5_large()])], &[], None);
    let p = decide(&input, &settings(), &History::default(), at(0));
    let utilized: Vec<(&str, f64)> = p.utilized.iter().map(|(n, u)| (n.as_str(), *u)).collect();
    assert_eq!(utilized, [("ip-ng-2", 1.0)], "{p:#?}");
    let unneeded: Vec<&str> = p.unneeded.iter().map(|(n, _)| n.as_str()).collect();
    assert!(unneeded.contains(&"ip-ng-1"), "93% cpu but no GPU in use: {p:#?}");
}
