#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]
//! Property tests of `pack` and `drain` on random clusters. Every placement is judged twice:
//! by an independent model of the hard constraints used here (resources, taints, nodeSelector,
//! hostname anti-affinity) and by the crate's own predicates with the pod taken off its node.

use k8s_openapi::api::core::v1::{Node, Pod, Taint};
use omniscale_cluster::{
    Block, Domains, DrainOutcome, NodeId, PackOptions, Packing, PodId, Resources, Snapshot, Template, drain,
    drain_lost_first, pack,
};
use proptest::prelude::*;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet, HashMap};

const HOST: &str = "kubernetes.io/hostname";
const ZONE: &str = "topology.kubernetes.io/zone";
const MI: i64 = 1024 * 1024;
/// An extended resource some nodes and templates offer and some pods ask for.
const GPU: &str = "example.com/gpu";

// ----- the independent model ---------------------------------------------------------------------

/// What a node offers, as the model sees it.
#[derive(Clone, Copy, Debug)]
struct View {
    cpu: u32,
    mem: u32,
    pods: u32,
    pool: u8,
    tainted: bool,
    gpus: u32,
}

/// A pod's scheduling-relevant spec, as the model sees it.
#[derive(Clone, Debug)]
struct PodGen {
    cpu: u32,
    mem: u32,
    app: u8,
    tolerates: bool,
    selector: Option<u8>,
    /// Required anti-affinity (hostname) to pods labelled `app=a<n>`.
    anti: Option<u8>,
    gpus: u32,
}

/// Why this set of pods may not share this node (empty: it may).
fn violations(view: &View, pods: &[&PodGen]) -> Vec<String> {
    let mut out = Vec::new();
    let cpu: u64 = pods.iter().map(|p| u64::from(p.cpu)).sum();
    let mem: u64 = pods.iter().map(|p| u64::from(p.mem)).sum();
    if cpu > u64::from(view.cpu) {
        out.push(format!("cpu {cpu}m > {}m", view.cpu));
    }
    if mem > u64::from(view.mem) {
        out.push(format!("memory {mem}Mi > {}Mi", view.mem));
    }
    if pods.len() > view.pods as usize {
        out.push(format!("{} pods > {}", pods.len(), view.pods));
    }
    let gpus: u32 = pods.iter().map(|p| p.gpus).sum();
    if gpus > view.gpus {
        out.push(format!("{gpus} {GPU} > {}", view.gpus));
    }
    for (i, p) in pods.iter().enumerate() {
        if view.tainted && !p.tolerates {
            out.push(format!("pod #{i} does not tolerate the taint"));
        }
        if p.selector.is_some_and(|s| s != view.pool) {
            out.push(format!("pod #{i} selects pool p{:?}, node is p{}", p.selector, view.pool));
        }
        if let Some(a) = p.anti {
            if pods.iter().enumerate().any(|(j, q)| j != i && q.app == a) {
                out.push(format!("pod #{i} is anti-affine to app=a{a}, which is on the node"));
            }
        }
    }
    out
}

// ----- objects -----------------------------------------------------------------------------------

fn node_object(name: &str, view: &View, zone: &str) -> Node {
    let mut v = json!({
        "metadata": {"name": name, "labels": {HOST: name, ZONE: zone, "pool": format!("p{}", view.pool)}},
        "spec": {},
        "status": {"allocatable": {
            "cpu": format!("{}m", view.cpu),
            "memory": format!("{}Mi", view.mem),
            "pods": view.pods.to_string(),
        }},
    });
    if view.gpus > 0 {
        v["status"]["allocatable"][GPU] = json!(view.gpus.to_string());
    }
    if view.tainted {
        v["spec"]["taints"] = json!([{"key": "dedicated", "value": "special", "effect": "NoSchedule"}]);
    }
    serde_json::from_value(v).unwrap()
}

fn pod_value(name: &str, g: &PodGen, node: Option<&str>) -> Value {
    let mut spec = json!({"containers": [{"name": "app", "resources": {"requests": {
        "cpu": format!("{}m", g.cpu),
        "memory": format!("{}Mi", g.mem),
    }}}]});
    if g.gpus > 0 {
        let resources = &mut spec["containers"][0]["resources"];
        resources["requests"][GPU] = json!(g.gpus.to_string());
        resources["limits"] = json!({GPU: g.gpus.to_string()});
    }
    if g.tolerates {
        spec["tolerations"] =
            json!([{"key": "dedicated", "operator": "Equal", "value": "special", "effect": "NoSchedule"}]);
    }
    if let Some(s) = g.selector {
        spec["nodeSelector"] = json!({"pool": format!("p{s}")});
    }
    if let Some(a) = g.anti {
        spec["affinity"] = json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"topologyKey": HOST, "labelSelector": {"matchLabels": {"app": format!("a{a}")}}},
        ]}});
    }
    if let Some(n) = node {
        spec["nodeName"] = json!(n);
    }
    json!({
        "metadata": {
            "name": name,
            "namespace": "default",
            "labels": {"app": format!("a{}", g.app)},
            "ownerReferences": [{
                "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": format!("rs-{}", g.app),
                "uid": format!("uid-{}", g.app), "controller": true,
            }],
        },
        "spec": spec,
    })
}

fn pod_object(v: Value) -> Pod {
    serde_json::from_value(v).unwrap()
}

/// Modest case counts, and no regression files written into the source tree.
fn config() -> ProptestConfig {
    // A fixed seed keeps the suite deterministic; PROPTEST_RNG_SEED explores other inputs.
    let seed = std::env::var("PROPTEST_RNG_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x0051_c1a5);
    ProptestConfig {
        cases: 64,
        failure_persistence: None,
        rng_seed: proptest::test_runner::RngSeed::Fixed(seed),
        ..ProptestConfig::default()
    }
}

// ----- pack --------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct TemplateGen {
    view: View,
    price: u32,
    zones: u8,
    max_new: Option<u32>,
}

#[derive(Clone, Debug)]
struct PackInput {
    nodes: Vec<View>,
    /// Pods already running: (node index, pod); kept only when the model allows them there.
    bound: Vec<(usize, PodGen)>,
    pending: Vec<PodGen>,
    templates: Vec<TemplateGen>,
    max_new_nodes: Option<u32>,
}

impl PackInput {
    fn unlimited(&self) -> bool {
        self.max_new_nodes.is_none() && self.templates.iter().all(|t| t.max_new.is_none())
    }
}

fn view_strategy(cpus: Vec<u32>, mems: Vec<u32>) -> impl Strategy<Value = View> {
    (
        prop::sample::select(cpus),
        prop::sample::select(mems),
        2u32..=12,
        0u8..2,
        prop::bool::weighted(0.25),
        prop::sample::select(vec![0u32, 0, 1, 4]),
    )
        .prop_map(|(cpu, mem, pods, pool, tainted, gpus)| View { cpu, mem, pods, pool, tainted, gpus })
}

fn pod_strategy() -> impl Strategy<Value = PodGen> {
    (
        50u32..3000,
        64u32..6000,
        0u8..3,
        any::<bool>(),
        prop::option::weighted(0.3, 0u8..2),
        prop::option::weighted(0.3, 0u8..3),
        prop::sample::select(vec![0u32, 0, 0, 1, 2]),
    )
        .prop_map(|(cpu, mem, app, tolerates, selector, anti, gpus)| PodGen {
            cpu,
            mem,
            app,
            tolerates,
            selector,
            anti,
            gpus,
        })
}

fn template_strategy() -> impl Strategy<Value = TemplateGen> {
    (
        view_strategy(vec![2000, 4000, 16000], vec![4096, 16384, 65536]),
        1u32..100,
        1u8..=2,
        prop::option::weighted(0.3, 0u32..4),
    )
        .prop_map(|(view, price, zones, max_new)| TemplateGen { view, price, zones, max_new })
}

fn pack_input() -> impl Strategy<Value = PackInput> {
    (
        prop::collection::vec(view_strategy(vec![1000, 2000, 4000, 8000], vec![1024, 4096, 8192, 16384]), 0..6),
        prop::collection::vec((0usize..6, pod_strategy()), 0..10),
        prop::collection::vec(pod_strategy(), 1..30),
        prop::collection::vec(template_strategy(), 1..4),
        prop::option::weighted(0.3, 0u32..6),
    )
        .prop_map(|(nodes, bound, pending, templates, max_new_nodes)| PackInput {
            nodes,
            bound,
            pending,
            templates,
            max_new_nodes,
        })
}

/// The snapshot, the pending pods' ids, the templates, and the model of every pod by id.
struct Built {
    snap: Snapshot,
    pending: Vec<PodId>,
    templates: Vec<Template>,
    model: HashMap<PodId, PodGen>,
    /// Pods running before packing, per node index.
    bound: Vec<Vec<PodId>>,
}

fn build_pack(input: &PackInput) -> Built {
    let mut snap = Snapshot::new();
    for (i, v) in input.nodes.iter().enumerate() {
        snap.add_node_object(&node_object(&format!("n{i}"), v, &format!("z{}", i % 2))).unwrap();
    }
    let mut model = HashMap::new();
    let mut bound: Vec<Vec<PodId>> = vec![Vec::new(); input.nodes.len()];
    for (k, (n, g)) in input.bound.iter().enumerate() {
        if input.nodes.is_empty() {
            break;
        }
        let n = n % input.nodes.len();
        let mut together: Vec<&PodGen> = bound[n].iter().map(|p| &model[p]).collect();
        together.push(g);
        if !violations(&input.nodes[n], &together).is_empty() {
            continue;
        }
        let id =
            snap.add_pod_object(&pod_object(pod_value(&format!("bound{k}"), g, Some(&format!("n{n}")))), None).unwrap();
        assert_eq!(snap.pods[id as usize].node, Some(n as NodeId));
        model.insert(id, g.clone());
        bound[n].push(id);
    }
    let mut pending = Vec::new();
    for (k, g) in input.pending.iter().enumerate() {
        let id = snap.add_pod_object(&pod_object(pod_value(&format!("pending{k}"), g, None)), None).unwrap();
        model.insert(id, g.clone());
        pending.push(id);
    }
    let gpu = snap.syms.intern(GPU);
    let templates = input
        .templates
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let taints: Vec<Taint> = if t.view.tainted {
                serde_json::from_value(json!([{"key": "dedicated", "value": "special", "effect": "NoSchedule"}]))
                    .unwrap()
            } else {
                Vec::new()
            };
            Template {
                name: format!("t{i}"),
                labels: BTreeMap::from([("pool".to_owned(), format!("p{}", t.view.pool))]),
                taints,
                allocatable: Resources {
                    cpu: i64::from(t.view.cpu),
                    memory: i64::from(t.view.mem) * MI,
                    pods: i64::from(t.view.pods),
                    ext: if t.view.gpus > 0 { vec![(gpu, i64::from(t.view.gpus))] } else { vec![] },
                    ..Resources::default()
                },
                zones: (0..t.zones).map(|z| format!("z{z}")).collect(),
                price: f64::from(t.price),
                max_new: t.max_new,
            }
        })
        .collect();
    Built { snap, pending, templates, model, bound }
}

fn run_pack(input: &PackInput) -> (Built, Packing) {
    let mut b = build_pack(input);
    let opts = PackOptions { max_new_nodes: input.max_new_nodes, ..PackOptions::default() };
    let packing = pack(&mut b.snap, &b.pending, &b.templates, &opts);
    (b, packing)
}

/// Takes the pod off its node, asks the crate's predicates, and puts it back.
fn recheck(snap: &mut Snapshot, pod: PodId, node: NodeId) -> Result<(), String> {
    let class = snap.pods[pod as usize].class;
    snap.unplace(pod);
    let verdict = snap.check(class, usize::MAX, node, Domains::default());
    snap.place(pod, node);
    verdict.map_err(|r| r.to_string())
}

/// Whether a fresh node of this template would take the pod alone (model view).
fn template_takes(t: &TemplateGen, p: &PodGen) -> bool {
    violations(&t.view, &[p]).is_empty()
}

fn check_packing(input: &PackInput, b: &mut Built, packing: &Packing) -> Result<(), TestCaseError> {
    let original = input.nodes.len();
    // Every pending pod is accounted for exactly once.
    let mut seen: HashMap<PodId, usize> = HashMap::new();
    for &(p, n) in &packing.existing {
        *seen.entry(p).or_default() += 1;
        prop_assert!((n as usize) < original, "existing placement on a new node {n}");
        prop_assert_eq!(b.snap.pods[p as usize].node, Some(n));
    }
    for nn in &packing.new_nodes {
        prop_assert!(nn.node as usize >= original, "new node {} is an existing node", nn.node);
        prop_assert!(!nn.pods.is_empty(), "new node {} has no pods", nn.node);
        prop_assert!(b.templates[nn.template].zones.contains(&nn.zone), "zone {} not offered by the template", nn.zone);
        for &p in &nn.pods {
            *seen.entry(p).or_default() += 1;
            prop_assert_eq!(b.snap.pods[p as usize].node, Some(nn.node));
        }
    }
    for u in &packing.unplaced {
        *seen.entry(u.pod).or_default() += 1;
        prop_assert_eq!(b.snap.pods[u.pod as usize].node, None);
    }
    let pending: BTreeSet<PodId> = b.pending.iter().copied().collect();
    prop_assert_eq!(seen.keys().copied().collect::<BTreeSet<_>>(), pending);
    prop_assert!(seen.values().all(|&c| c == 1), "a pod is reported twice: {:?}", seen);

    // (a) The model accepts every node's final set of pods, and so does the crate, pod by pod.
    for (n, view) in input.nodes.iter().enumerate() {
        let mut ids = b.bound[n].clone();
        ids.extend(packing.existing.iter().filter(|e| e.1 as usize == n).map(|e| e.0));
        let pods: Vec<&PodGen> = ids.iter().map(|p| &b.model[p]).collect();
        let v = violations(view, &pods);
        prop_assert!(v.is_empty(), "existing node n{n}: {v:?}");
    }
    for nn in &packing.new_nodes {
        let pods: Vec<&PodGen> = nn.pods.iter().map(|p| &b.model[p]).collect();
        let v = violations(&input.templates[nn.template].view, &pods);
        prop_assert!(v.is_empty(), "new node {} (template t{}): {v:?}", nn.node, nn.template);
    }
    let placed: Vec<(PodId, NodeId)> = packing
        .existing
        .iter()
        .copied()
        .chain(packing.new_nodes.iter().flat_map(|nn| nn.pods.iter().map(move |&p| (p, nn.node))))
        .collect();
    for &(p, n) in &placed {
        let verdict = recheck(&mut b.snap, p, n);
        prop_assert!(verdict.is_ok(), "pod {p} on node {n}: {verdict:?}");
    }
    for (i, node) in b.snap.nodes.iter().enumerate() {
        let (u, a) = (&node.used, &node.allocatable);
        prop_assert!(
            u.cpu <= a.cpu && u.memory <= a.memory && u.pods <= a.pods,
            "node {i} over-committed: used {u:?}, allocatable {a:?}"
        );
    }

    // (b) Never worse than one pod per new node, and within the limits.
    let on_new: usize = packing.new_nodes.iter().map(|nn| nn.pods.len()).sum();
    prop_assert!(packing.new_nodes.len() <= on_new);
    if let Some(m) = input.max_new_nodes {
        prop_assert!(packing.new_nodes.len() <= m as usize, "{} new nodes, limit {m}", packing.new_nodes.len());
    }

    // An unplaced pod fits no node of the final plan, and no template when nothing limits new
    // nodes (placements only ever make room scarcer for these constraints).
    for u in &packing.unplaced {
        let class = b.snap.pods[u.pod as usize].class;
        for n in 0..b.snap.nodes.len() as NodeId {
            let verdict = b.snap.check(class, usize::MAX, n, Domains::default());
            prop_assert!(verdict.is_err(), "unplaced pod {} ({}) fits node {n}", u.pod, u.reason);
        }
        if input.unlimited() {
            let g = &b.model[&u.pod];
            prop_assert!(
                !input.templates.iter().any(|t| template_takes(t, g)),
                "unplaced pod {} ({}) fits a template alone",
                u.pod,
                u.reason
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    /// (a) Every placement passes the hard predicates, nothing is over-committed, and (b) a new
    /// node always carries at least one pod.
    #[test]
    fn pack_places_only_where_allowed(input in pack_input()) {
        let (mut b, packing) = run_pack(&input);
        check_packing(&input, &mut b, &packing)?;
    }

    /// (c) Identical inputs, identical plans.
    #[test]
    fn pack_is_deterministic(input in pack_input()) {
        let (b1, first) = run_pack(&input);
        let (b2, second) = run_pack(&input);
        prop_assert_eq!(&first, &second);
        let where1: Vec<Option<NodeId>> = b1.snap.pods.iter().map(|p| p.node).collect();
        let where2: Vec<Option<NodeId>> = b2.snap.pods.iter().map(|p| p.node).collect();
        prop_assert_eq!(where1, where2);
    }
}

// ----- drain -------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Normal,
    NoController,
    NotSafeToEvict,
    EmptyDir,
    HostPath,
    EmptyDirAllowed,
    SafeToEvictWithoutController,
    MemoryEmptyDir,
    DaemonSet,
}

impl Kind {
    /// The drainability rule this pod trips, if any.
    fn block(self) -> Option<Block> {
        match self {
            Kind::NoController => Some(Block::NoController),
            Kind::NotSafeToEvict => Some(Block::NotSafeToEvict),
            Kind::EmptyDir => Some(Block::LocalStorage("scratch".to_owned())),
            Kind::HostPath => Some(Block::LocalStorage("host".to_owned())),
            _ => None,
        }
    }

    /// Whether the pod needs a new home when its node goes.
    fn moves(self) -> bool {
        self != Kind::DaemonSet
    }
}

#[derive(Clone, Debug)]
struct DrainPod {
    node: usize,
    pod: PodGen,
    kind: Kind,
}

#[derive(Clone, Debug)]
struct DrainInput {
    nodes: Vec<View>,
    pods: Vec<DrainPod>,
    /// Candidates: a permutation of node indexes, filtered by `take`.
    order: Vec<usize>,
    take: Vec<bool>,
    /// Candidates that are lost (broken) nodes, evaluated first.
    lost: Vec<bool>,
}

fn kind_strategy() -> impl Strategy<Value = Kind> {
    prop_oneof![
        8 => Just(Kind::Normal),
        1 => Just(Kind::NoController),
        1 => Just(Kind::NotSafeToEvict),
        1 => Just(Kind::EmptyDir),
        1 => Just(Kind::HostPath),
        1 => Just(Kind::EmptyDirAllowed),
        1 => Just(Kind::SafeToEvictWithoutController),
        1 => Just(Kind::MemoryEmptyDir),
        1 => Just(Kind::DaemonSet),
    ]
}

fn drain_input() -> impl Strategy<Value = DrainInput> {
    (2usize..8).prop_flat_map(|n| {
        let view = (
            prop::sample::select(vec![2000u32, 4000, 8000]),
            prop::sample::select(vec![4096u32, 8192, 16384]),
            4u32..=16,
        )
            .prop_map(|(cpu, mem, pods)| View { cpu, mem, pods, pool: 0, tainted: false, gpus: 0 });
        let pod = (0..n, (50u32..1500, 64u32..3000, 0u8..3, prop::option::weighted(0.25, 0u8..3)), kind_strategy())
            .prop_map(|(node, (cpu, mem, app, anti), kind)| DrainPod {
                node,
                pod: PodGen { cpu, mem, app, tolerates: false, selector: None, anti, gpus: 0 },
                kind,
            });
        (
            prop::collection::vec(view, n),
            prop::collection::vec(pod, 0..28),
            Just((0..n).collect::<Vec<usize>>()).prop_shuffle(),
            prop::collection::vec(prop::bool::weighted(0.8), n),
            prop::collection::vec(prop::bool::weighted(0.2), n),
        )
            .prop_map(|(nodes, pods, order, take, lost)| DrainInput { nodes, pods, order, take, lost })
    })
}

fn drain_pod_value(name: &str, p: &DrainPod) -> Value {
    let mut v = pod_value(name, &p.pod, Some(&format!("n{}", p.node)));
    let annotate = |v: &mut Value, k: &str, val: &str| {
        v["metadata"]["annotations"][k] = json!(val);
    };
    match p.kind {
        Kind::Normal => {}
        Kind::NoController => v["metadata"]["ownerReferences"] = json!([]),
        Kind::NotSafeToEvict => annotate(&mut v, "cluster-autoscaler.kubernetes.io/safe-to-evict", "false"),
        Kind::EmptyDir => v["spec"]["volumes"] = json!([{"name": "scratch", "emptyDir": {}}]),
        Kind::HostPath => v["spec"]["volumes"] = json!([{"name": "host", "hostPath": {"path": "/var/lib/x"}}]),
        Kind::EmptyDirAllowed => {
            v["spec"]["volumes"] = json!([{"name": "scratch", "emptyDir": {}}]);
            annotate(&mut v, "cluster-autoscaler.kubernetes.io/safe-to-evict-local-volumes", "scratch");
        }
        Kind::SafeToEvictWithoutController => {
            v["metadata"]["ownerReferences"] = json!([]);
            v["spec"]["volumes"] = json!([{"name": "scratch", "emptyDir": {}}]);
            annotate(&mut v, "cluster-autoscaler.kubernetes.io/safe-to-evict", "true");
        }
        Kind::MemoryEmptyDir => v["spec"]["volumes"] = json!([{"name": "shm", "emptyDir": {"medium": "Memory"}}]),
        Kind::DaemonSet => {
            v["metadata"]["ownerReferences"] = json!([{
                "apiVersion": "apps/v1", "kind": "DaemonSet", "name": "ds", "uid": "uid-ds", "controller": true,
            }]);
        }
    }
    v
}

proptest! {
    #![proptest_config(config())]

    /// (d) Removable nodes send every pod that needs a home to another node that stays, nothing
    /// ends up over-committed, and nodes holding a pod that a drain rule protects are Blocked by
    /// that rule. Lost nodes go first and are never kept for want of room: the pods that fit
    /// nowhere are left unplaced.
    #[test]
    fn drain_moves_pods_only_where_allowed(input in drain_input()) {
        let mut snap = Snapshot::new();
        for (i, v) in input.nodes.iter().enumerate() {
            snap.add_node_object(&node_object(&format!("n{i}"), v, &format!("z{}", i % 2))).unwrap();
        }
        let mut kinds: HashMap<PodId, Kind> = HashMap::new();
        let mut model: HashMap<PodId, PodGen> = HashMap::new();
        let mut on_node: Vec<Vec<PodId>> = vec![Vec::new(); input.nodes.len()];
        for (k, p) in input.pods.iter().enumerate() {
            let mut together: Vec<&PodGen> = on_node[p.node].iter().map(|id| &model[id]).collect();
            together.push(&p.pod);
            if !violations(&input.nodes[p.node], &together).is_empty() {
                continue;
            }
            let id = snap.add_pod_object(&pod_object(drain_pod_value(&format!("p{k}"), p)), None).unwrap();
            prop_assert_eq!(snap.pods[id as usize].node, Some(p.node as NodeId));
            kinds.insert(id, p.kind);
            model.insert(id, p.pod.clone());
            on_node[p.node].push(id);
        }
        let taken = input.order.iter().filter(|&&n| input.take[n]);
        let (lost, rest): (Vec<usize>, Vec<usize>) = taken.partition(|&&n| input.lost[n]);
        let lost: Vec<NodeId> = lost.into_iter().map(|n| n as NodeId).collect();
        let rest: Vec<NodeId> = rest.into_iter().map(|n| n as NodeId).collect();
        let candidates: Vec<NodeId> = lost.iter().chain(&rest).copied().collect();

        let outcomes = if lost.is_empty() { drain(&mut snap, &rest) } else { drain_lost_first(&mut snap, &lost, &rest) };

        prop_assert_eq!(outcomes.iter().map(|o| o.0).collect::<Vec<_>>(), candidates.clone());
        // Replay the outcomes on the model: where every pod is, which nodes are gone.
        let mut location: HashMap<PodId, Option<NodeId>> =
            on_node.iter().enumerate().flat_map(|(n, ps)| ps.iter().map(move |&p| (p, Some(n as NodeId)))).collect();
        let mut removed: BTreeSet<NodeId> = BTreeSet::new();
        for (node, outcome) in &outcomes {
            let node = *node;
            let mut here: Vec<PodId> =
                location.iter().filter(|(_, l)| **l == Some(node)).map(|(&p, _)| p).collect();
            here.sort_unstable();
            // The first original pod (in binding order) that a drain rule protects.
            let protected = on_node[node as usize].iter().find_map(|&p| kinds[&p].block().map(|b| (p, b)));
            match outcome {
                DrainOutcome::Blocked { pod, block: Block::NoPlace(why) } => {
                    prop_assert!(!lost.contains(&node), "lost node {node} kept for want of room: {why}");
                    prop_assert!(protected.is_none(), "node {node}: NoPlace ({why}) although {protected:?}");
                    prop_assert!(here.contains(pod) && kinds[pod].moves(), "node {node}: NoPlace names pod {pod}");
                }
                DrainOutcome::Blocked { pod, block } => {
                    prop_assert_eq!(Some((*pod, block.clone())), protected.clone(), "node {}", node);
                }
                DrainOutcome::Removable(moved) | DrainOutcome::Lost { moved, .. } => {
                    let homeless: &[PodId] = match outcome {
                        DrainOutcome::Lost { homeless, .. } => homeless,
                        _ => &[],
                    };
                    prop_assert!(homeless.is_empty() || lost.contains(&node), "node {node} is not lost: {homeless:?}");
                    prop_assert!(protected.is_none(), "node {node} removable although {protected:?}");
                    let moved_pods: BTreeSet<PodId> = moved.iter().map(|m| m.0).chain(homeless.iter().copied()).collect();
                    let must_move: BTreeSet<PodId> = here.iter().copied().filter(|p| kinds[p].moves()).collect();
                    prop_assert_eq!(&moved_pods, &must_move, "node {}", node);
                    prop_assert_eq!(moved_pods.len(), moved.len() + homeless.len(), "node {}: a pod listed twice", node);
                    for &p in homeless {
                        location.insert(p, None);
                    }
                    for &(p, dest) in moved {
                        prop_assert!(dest != node, "pod {p} moved onto its own node {node}");
                        prop_assert!((dest as usize) < input.nodes.len(), "pod {p} moved to unknown node {dest}");
                        prop_assert!(!removed.contains(&dest), "pod {p} moved to removed node {dest}");
                        location.insert(p, Some(dest));
                    }
                    for p in here.iter().filter(|p| !kinds[p].moves()) {
                        location.insert(*p, None);
                    }
                    removed.insert(node);
                }
            }
        }
        // The snapshot agrees with the replay.
        for (&p, &l) in &location {
            prop_assert_eq!(snap.pods[p as usize].node, l, "pod {}", p);
        }
        for n in 0..snap.nodes.len() {
            let gone = removed.contains(&(n as NodeId));
            prop_assert_eq!(snap.nodes[n].removed, gone, "node {}", n);
            if gone {
                prop_assert!(snap.nodes[n].pods.is_empty(), "removed node {n} still has pods {:?}", snap.nodes[n].pods);
                continue;
            }
            // No node over-committed, no constraint broken (model), and the crate agrees.
            let ids: Vec<PodId> = location.iter().filter(|(_, l)| **l == Some(n as NodeId)).map(|(&p, _)| p).collect();
            let pods: Vec<&PodGen> = ids.iter().map(|p| &model[p]).collect();
            let v = violations(&input.nodes[n], &pods);
            prop_assert!(v.is_empty(), "node {n} after drain: {v:?}");
            for &p in &ids {
                let verdict = recheck(&mut snap, p, n as NodeId);
                prop_assert!(verdict.is_ok(), "pod {p} on node {n} after drain: {verdict:?}");
            }
        }
    }
}
