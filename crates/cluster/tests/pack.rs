#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]
//! Bin-packing onto templates and drain simulation: the behaviours node engines rely on.

use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use omniscale_cluster::{Block, DrainOutcome, PackOptions, Resources, Snapshot, Template, drain, pack};
use serde_json::{Value, json};
use std::collections::BTreeMap;

const GI: i64 = 1024 * 1024 * 1024;

fn template(name: &str, cpu: i64, price: f64, zones: &[&str]) -> Template {
    Template {
        name: name.into(),
        labels: BTreeMap::from([("node.kubernetes.io/instance-type".to_owned(), name.to_owned())]),
        taints: vec![],
        allocatable: Resources { cpu: cpu * 1000, memory: cpu * 4 * GI, pods: 110, ..Default::default() },
        zones: zones.iter().map(|z| z.to_string()).collect(),
        price,
        max_new: None,
    }
}

fn pod(name: &str, cpu: &str, extra: Value) -> Pod {
    let mut v = json!({"metadata": {"name": name, "namespace": "default", "labels": {"app": "web"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web", "uid": "rs-1", "controller": true}]},
        "spec": {"containers": [{"name": "c", "image": "i", "resources": {"requests": {"cpu": cpu, "memory": "100Mi"}}}]}});
    merge(&mut v, extra);
    serde_json::from_value(v).unwrap()
}

fn merge(a: &mut Value, b: Value) {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(Value::Null), v);
            }
        }
        (a, b) => *a = b,
    }
}

fn node(name: &str, cpu: &str, zone: &str) -> Node {
    serde_json::from_value(json!({"metadata": {"name": name, "labels": {"topology.kubernetes.io/zone": zone}},
        "status": {"allocatable": {"cpu": cpu, "memory": "16Gi", "pods": "110"}}}))
    .unwrap()
}

fn pending(snap: &mut Snapshot, n: usize, cpu: &str, extra: Value) -> Vec<u32> {
    (0..n).map(|i| snap.add_pod_object(&pod(&format!("p{i}"), cpu, extra.clone()), None).unwrap()).collect()
}

#[test]
fn existing_nodes_are_filled_before_new_ones() {
    let mut snap = Snapshot::new();
    snap.add_node_object(&node("n1", "2", "a")).unwrap();
    let pods = pending(&mut snap, 3, "1", json!({}));
    let plan = pack(&mut snap, &pods, &[template("m", 4, 1.0, &["a"])], &PackOptions::default());
    assert_eq!(plan.existing.len(), 2);
    assert_eq!(plan.new_nodes.len(), 1);
    assert_eq!(plan.new_nodes[0].pods.len(), 1);
    assert!(plan.unplaced.is_empty());
}

#[test]
fn new_nodes_take_their_cheapest_fitting_option() {
    let types = [template("small", 2, 1.0, &["a"]), template("large", 8, 3.0, &["a"])];
    let mut snap = Snapshot::new();
    let one = pending(&mut snap, 1, "1", json!({}));
    let plan = pack(&mut snap, &one, &types, &PackOptions::default());
    assert_eq!(plan.per_template(), vec![(0, 1, 1)], "one small node");
    let mut snap = Snapshot::new();
    let six = pending(&mut snap, 6, "1", json!({}));
    let plan = pack(&mut snap, &six, &types, &PackOptions::default());
    assert_eq!(plan.per_template(), vec![(1, 1, 6)], "six pods share one large node rather than three small ones");
}

#[test]
fn daemonset_overhead_is_reserved_on_templates_it_runs_on() {
    let ds = |selector: Value| -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "ds", "namespace": "kube-system"},
            "spec": {"nodeSelector": selector, "tolerations": [{"operator": "Exists"}],
                     "containers": [{"name": "c", "image": "i", "resources": {"requests": {"cpu": "1"}}}]}}))
        .unwrap()
    };
    let types = [template("m", 4, 1.0, &["a"])];
    let run = |daemonsets: Vec<Pod>| {
        let mut snap = Snapshot::new();
        let pods = pending(&mut snap, 4, "1", json!({}));
        pack(&mut snap, &pods, &types, &PackOptions { daemonsets, ..Default::default() }).new_nodes.len()
    };
    assert_eq!(run(vec![]), 1);
    assert_eq!(run(vec![ds(json!({}))]), 2, "3 cpu left per node after the DaemonSet's 1");
    assert_eq!(run(vec![ds(json!({"gpu": "true"}))]), 1, "a DaemonSet that does not run there costs nothing");
}

#[test]
fn node_group_headroom_and_global_limit_cap_new_nodes() {
    let mut t = template("m", 1, 1.0, &["a"]);
    t.max_new = Some(2);
    let mut snap = Snapshot::new();
    let pods = pending(&mut snap, 5, "1", json!({}));
    let plan = pack(&mut snap, &pods, std::slice::from_ref(&t), &PackOptions::default());
    assert_eq!(plan.new_nodes.len(), 2);
    assert_eq!(plan.unplaced.len(), 3);
    assert!(plan.unplaced[0].reason.contains("node group at its maximum size"), "{}", plan.unplaced[0].reason);
    t.max_new = None;
    let mut snap = Snapshot::new();
    let pods = pending(&mut snap, 5, "1", json!({}));
    let plan = pack(&mut snap, &pods, &[t], &PackOptions { max_new_nodes: Some(3), ..Default::default() });
    assert_eq!((plan.new_nodes.len(), plan.unplaced.len()), (3, 2));
}

#[test]
fn unplaced_pods_say_why() {
    let mut snap = Snapshot::new();
    snap.add_node_object(&node("n1", "1", "a")).unwrap();
    let pods = pending(&mut snap, 1, "2", json!({"spec": {"nodeSelector": {"gpu": "true"}}}));
    let mut tainted = template("t", 4, 1.0, &["a"]);
    tainted.labels.insert("gpu".into(), "true".into());
    tainted.taints =
        vec![serde_json::from_value(json!({"key": "dedicated", "value": "ml", "effect": "NoSchedule"})).unwrap()];
    let plan = pack(&mut snap, &pods, &[template("m", 4, 1.0, &["a"]), tainted], &PackOptions::default());
    assert_eq!(plan.unplaced.len(), 1);
    let why = &plan.unplaced[0].reason;
    assert!(why.starts_with("0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector"), "{why}");
    assert!(why.contains("1 node(s) had untolerated taint {dedicated: ml}"), "{why}");
    assert!(why.contains("1 node(s) didn't match Pod's node affinity/selector"), "{why}");
}

#[test]
fn preferences_are_required_until_relaxed() {
    // Avoid PreferNoSchedule while another option exists, even a dearer one.
    let mut soft = template("soft", 4, 1.0, &["a"]);
    soft.taints = vec![serde_json::from_value(json!({"key": "spot", "effect": "PreferNoSchedule"})).unwrap()];
    let clean = template("clean", 4, 2.0, &["a"]);
    let mut snap = Snapshot::new();
    let pods = pending(&mut snap, 1, "1", json!({}));
    let plan = pack(&mut snap, &pods, &[soft.clone(), clean], &PackOptions::default());
    assert_eq!(plan.per_template(), vec![(1, 1, 1)]);
    // ...and take it when nothing else exists.
    let mut snap = Snapshot::new();
    let pods = pending(&mut snap, 1, "1", json!({}));
    let plan = pack(&mut snap, &pods, &[soft], &PackOptions::default());
    assert_eq!(plan.per_template(), vec![(0, 1, 1)]);
    // A preferred node affinity nothing satisfies is relaxed, not fatal.
    let pref = json!({"spec": {"affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 10, "preference": {"matchExpressions": [{"key": "gpu", "operator": "In", "values": ["true"]}]}}]}}}});
    let mut snap = Snapshot::new();
    let pods = pending(&mut snap, 1, "1", pref);
    let plan = pack(&mut snap, &pods, &[template("m", 4, 1.0, &["a"])], &PackOptions::default());
    assert!(plan.unplaced.is_empty() && plan.new_nodes.len() == 1);
    // ScheduleAnyway spread is honoured while it can be: three pods over three zones.
    let spread = json!({"spec": {"topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
        "whenUnsatisfiable": "ScheduleAnyway", "labelSelector": {"matchLabels": {"app": "web"}}}]}});
    let mut snap = Snapshot::new();
    let pods = pending(&mut snap, 3, "1", spread);
    let plan = pack(&mut snap, &pods, &[template("m", 8, 1.0, &["a", "b", "c"])], &PackOptions::default());
    let mut zones: Vec<String> = plan.new_nodes.iter().map(|n| n.zone.clone()).collect();
    zones.sort();
    assert_eq!(zones, vec!["a", "b", "c"]);
}

#[test]
fn hard_zone_spread_and_anti_affinity_shape_new_nodes() {
    let spread = json!({"spec": {"topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
        "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"app": "web"}}}]}});
    let mut snap = Snapshot::new();
    let pods = pending(&mut snap, 6, "1", spread);
    let plan = pack(&mut snap, &pods, &[template("m", 8, 1.0, &["a", "b", "c"])], &PackOptions::default());
    let mut per_zone: BTreeMap<String, usize> = BTreeMap::new();
    for n in &plan.new_nodes {
        *per_zone.entry(n.zone.clone()).or_default() += n.pods.len();
    }
    assert_eq!(per_zone.values().copied().collect::<Vec<_>>(), vec![2, 2, 2]);
    let anti = json!({"spec": {"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"topologyKey": "kubernetes.io/hostname", "labelSelector": {"matchLabels": {"app": "web"}}}]}}}});
    let mut snap = Snapshot::new();
    let pods = pending(&mut snap, 4, "100m", anti);
    let plan = pack(&mut snap, &pods, &[template("m", 8, 1.0, &["a"])], &PackOptions::default());
    assert_eq!(plan.new_nodes.len(), 4, "one pod per node");
}

#[test]
fn packing_is_deterministic() {
    let run = || {
        let mut snap = Snapshot::new();
        snap.add_node_object(&node("n1", "3", "b")).unwrap();
        let mut pods = pending(&mut snap, 7, "700m", json!({}));
        pods.extend(pending(&mut snap, 5, "1500m", json!({"metadata": {"labels": {"app": "big"}}})));
        let types = [template("s", 2, 1.0, &["a", "b"]), template("l", 4, 1.9, &["a", "b"])];
        pack(&mut snap, &pods, &types, &PackOptions::default())
    };
    assert_eq!(run(), run());
}

fn pdb(name: &str, allowed: i32) -> PodDisruptionBudget {
    serde_json::from_value(json!({"metadata": {"name": name, "namespace": "default"},
        "spec": {"selector": {"matchLabels": {"app": "web"}}}, "status": {"disruptionsAllowed": allowed,
        "currentHealthy": 2, "desiredHealthy": 1, "expectedPods": 2}}))
    .unwrap()
}

#[test]
fn drain_moves_pods_and_spends_disruption_budgets() {
    let build = |allowed: i32| {
        let mut snap = Snapshot::new();
        for (i, cpu) in ["2", "2", "2"].iter().enumerate() {
            snap.add_node_object(&node(&format!("n{i}"), cpu, "a")).unwrap();
        }
        for i in 0..2 {
            snap.add_pod_object(&pod(&format!("w{i}"), "500m", json!({"spec": {"nodeName": "n0"}})), None).unwrap();
        }
        snap.add_pdb(&pdb("web", allowed)).unwrap();
        snap
    };
    let mut snap = build(2);
    let out = drain(&mut snap, &[0]);
    match &out[0].1 {
        DrainOutcome::Removable(moves) => {
            assert_eq!(moves.len(), 2);
            assert!(moves.iter().all(|(_, to)| *to != 0));
        }
        other => panic!("{other:?}"),
    }
    assert!(snap.nodes[0].removed && snap.nodes[0].pods.is_empty());
    let mut snap = build(1);
    match &drain(&mut snap, &[0])[0].1 {
        DrainOutcome::Blocked { block: Block::Pdb(name), .. } => assert_eq!(name, "web"),
        other => panic!("{other:?}"),
    }
    assert!(!snap.nodes[0].removed && snap.nodes[0].pods.len() == 2, "a blocked candidate is left as it was");
}

/// Drains node n0 of a two-node cluster holding one 100m pod shaped by `extra`.
fn drain_one(extra: &Value) -> DrainOutcome {
    let mut snap = Snapshot::new();
    snap.add_node_object(&node("n0", "2", "a")).unwrap();
    snap.add_node_object(&node("n1", "2", "a")).unwrap();
    let mut extra = extra.clone();
    merge(&mut extra, json!({"spec": {"nodeName": "n0"}}));
    snap.add_pod_object(&pod("x", "100m", extra), None).unwrap();
    drain(&mut snap, &[0]).remove(0).1
}

#[test]
fn drain_rules_block_what_cannot_move() {
    let cases = [
        (json!({"metadata": {"ownerReferences": null}}), "pod is not replicated"),
        (json!({"metadata": {"namespace": "kube-system"}}), "kube-system pod without a PodDisruptionBudget"),
        (
            json!({"metadata": {"annotations": {"cluster-autoscaler.kubernetes.io/safe-to-evict": "false"}}}),
            "safe-to-evict=false",
        ),
        (json!({"metadata": {"annotations": {"karpenter.sh/do-not-disrupt": "true"}}}), "do-not-disrupt"),
        (json!({"spec": {"volumes": [{"name": "scratch", "emptyDir": {}}]}}), "local storage (volume scratch)"),
    ];
    for (extra, want) in cases {
        match &drain_one(&extra) {
            DrainOutcome::Blocked { block, .. } => assert!(block.to_string().contains(want), "{block} vs {want}"),
            other => panic!("{extra}: {other:?}"),
        }
    }
    // Listed local volumes, safe-to-evict, DaemonSet and mirror pods do not block.
    for extra in [
        json!({"metadata": {"annotations": {"cluster-autoscaler.kubernetes.io/safe-to-evict-local-volumes": "scratch"}},
               "spec": {"volumes": [{"name": "scratch", "emptyDir": {}}]}}),
        json!({"metadata": {"ownerReferences": null, "annotations": {"cluster-autoscaler.kubernetes.io/safe-to-evict": "true"}}}),
        json!({"metadata": {"ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "d", "uid": "d", "controller": true}]}}),
        json!({"metadata": {"ownerReferences": null, "annotations": {"kubernetes.io/config.mirror": "x"}}}),
    ] {
        assert!(matches!(drain_one(&extra), DrainOutcome::Removable(_)), "{extra}");
    }
}

#[test]
fn drain_is_cumulative_across_candidates() {
    // Three nodes with one 800m pod each: the first can go (its pod joins the second), the
    // second cannot then (its two pods no longer fit the third alone).
    let mut snap = Snapshot::new();
    for i in 0..3 {
        snap.add_node_object(&node(&format!("n{i}"), "2", "a")).unwrap();
        snap.add_pod_object(&pod(&format!("p{i}"), "800m", json!({"spec": {"nodeName": format!("n{i}")}})), None)
            .unwrap();
    }
    let out = drain(&mut snap, &[0, 1]);
    assert!(matches!(out[0].1, DrainOutcome::Removable(_)), "{:?}", out[0]);
    match &out[1].1 {
        DrainOutcome::Blocked { block: Block::NoPlace(why), .. } => assert!(why.contains("Insufficient cpu"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(snap.nodes[1].pods.len(), 2, "the blocked candidate keeps its pods");
}

/// Extended resources are sized like cpu: a GPU pod opens a node only on an option that offers
/// GPUs, several share one when it offers enough, and a pod asking for more than any offers is
/// unplaced with the resource named.
#[test]
fn extended_resources_open_new_nodes_only_where_offered() {
    let mut snap = Snapshot::new();
    let gpu = snap.syms.intern("nvidia.com/gpu");
    let mut one = template("gpu-1", 4, 1.0, &["a"]);
    one.allocatable.ext = vec![(gpu, 1)];
    let mut four = template("gpu-4", 16, 3.0, &["a"]);
    four.allocatable.ext = vec![(gpu, 4)];
    let plain = template("cpu-only", 64, 0.5, &["a"]);
    let wants = |n: &str| {
        json!({"spec": {"containers": [{"name": "c", "image": "i",
        "resources": {"requests": {"cpu": "1", "nvidia.com/gpu": n}, "limits": {"nvidia.com/gpu": n}}}]}})
    };
    let mut pods = pending(&mut snap, 4, "1", wants("1"));
    pods.push(snap.add_pod_object(&pod("greedy", "1", wants("5")), None).unwrap());
    let plan = pack(&mut snap, &pods, &[one, four, plain], &PackOptions::default());
    assert_eq!(plan.per_template(), vec![(1, 1, 4)], "four one-GPU pods share one four-GPU node");
    assert_eq!(plan.unplaced.len(), 1);
    assert!(plan.unplaced[0].reason.contains("Insufficient nvidia.com/gpu"), "{}", plan.unplaced[0].reason);
}
