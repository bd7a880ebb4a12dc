//! Scale-up: which groups grow, by how much, for which pending pods.
//!
//! Cluster Autoscaler's order of work, one pass:
//! 1. nodes the groups are already getting (desired capacity not yet ready) are added to the
//!    snapshot as *upcoming* nodes with their DaemonSet pods, and pending pods that fit existing
//!    or upcoming nodes are set aside — no new capacity for them;
//! 2. for every group that may grow (not backed off, below its maximum, its NodePool's limits
//!    and `--max-nodes-total` leave room) the remaining pods are bin-packed onto new nodes of the
//!    group's template (first-fit decreasing; identical pods are one class, so this is Cluster
//!    Autoscaler's per-equivalence-group check and binpacking estimate in one step);
//! 3. the expander chain picks one option; the nodes are spread over *similar* groups (same
//!    shape and labels apart from zone), smallest first, to keep zones balanced;
//! 4. unlike Cluster Autoscaler (one option per loop unless `--salvo-scale-up`), the pods the
//!    choice did not help go round again, so one loop serves every pending pod it can.
//!
//! Pods no group can help get the reason per group, as `NotTriggerScaleUp` Events carry it.

use std::collections::{BTreeMap, HashMap};

use jiff::Timestamp;
use omniscale_cluster::{PackOptions, Packing, PodId, Snapshot, Template, model, pack};

use crate::expander::{self, Candidate};
use crate::history::History;
use crate::input::{Input, Settings};
use crate::prices;
use crate::template::GroupTemplate;

/// The scale-up decided in one loop.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ScaleUp {
    /// Group index → nodes to add.
    pub increases: BTreeMap<usize, u32>,
    /// Pending pods the new nodes are for, with the groups they will land in.
    pub triggered: Vec<(PodId, Vec<usize>)>,
    /// Pending pods that fit existing or upcoming nodes: no new capacity needed.
    pub fits_existing: Vec<PodId>,
    /// Pending pods no group can help, with the reason per group.
    pub not_triggered: Vec<(PodId, String)>,
}

/// Labels that differ between otherwise identical groups in different zones or made by
/// different tools (Cluster Autoscaler's AWS ignore list, plus zone and hostname).
const BALANCE_IGNORED_LABELS: &[&str] = &[
    "topology.kubernetes.io/zone",
    "failure-domain.beta.kubernetes.io/zone",
    "topology.ebs.csi.aws.com/zone",
    "topology.k8s.aws/zone-id",
    "kubernetes.io/hostname",
    "alpha.eksctl.io/nodegroup-name",
    "eks.amazonaws.com/nodegroup",
    "k8s.amazonaws.com/eniConfig",
    "lifecycle",
];

/// Decides the scale-up.
pub fn scale_up(input: &Input, settings: &Settings, history: &History, now: Timestamp) -> ScaleUp {
    let mut out = ScaleUp::default();
    if input.pending.is_empty() {
        return out;
    }
    let mut snap = input.snapshot.clone();
    add_upcoming(&mut snap, input, settings, now);
    let opts = PackOptions { daemonsets: input.daemonsets.clone(), max_new_nodes: None };
    // 1. Pods that existing or upcoming nodes take.
    // The placements stay: capacity they take is not there for the pods that need new nodes.
    let fit = pack(&mut snap, &input.pending, &[], &opts);
    out.fits_existing = fit.existing.iter().map(|(p, _)| *p).collect();
    let mut remaining: Vec<PodId> = fit.unplaced.iter().map(|u| u.pod).collect();
    if remaining.is_empty() {
        return out;
    }
    let mut added: Vec<u32> = vec![0; input.groups.len()];
    let mut reasons: HashMap<PodId, Vec<String>> = HashMap::new();
    let upcoming_total: u32 = input.groups.iter().map(|g| g.upcoming(now, settings.max_node_provision_time)).sum();
    for _round in 0..=input.groups.len() {
        if remaining.is_empty() {
            break;
        }
        reasons.clear();
        let mut options: Vec<(usize, Packing, Snapshot)> = Vec::new();
        let total_now = input.cluster_nodes + upcoming_total + added.iter().sum::<u32>();
        for (gi, g) in input.groups.iter().enumerate() {
            let headroom = match headroom(input, settings, history, gi, &added, total_now, now) {
                Ok(h) => h,
                Err(why) => {
                    for &p in &remaining {
                        reasons.entry(p).or_default().push(format!("{}: {why}", g.group.name));
                    }
                    continue;
                }
            };
            let Ok(t) = &g.template else { continue };
            let template = Template { max_new: Some(headroom), ..t.template.clone() };
            let mut fork = snap.clone();
            let opts = PackOptions { daemonsets: input.daemonsets.clone(), max_new_nodes: Some(headroom) };
            let packing = pack(&mut fork, &remaining, std::slice::from_ref(&template), &opts);
            for u in &packing.unplaced {
                reasons.entry(u.pod).or_default().push(format!("{}: {}", g.group.name, u.reason));
            }
            if !packing.new_nodes.is_empty() {
                options.push((gi, packing, fork));
            }
        }
        if options.is_empty() {
            break;
        }
        let candidates: Vec<Candidate> = options.iter().map(|(gi, p, _)| candidate(input, *gi, p)).collect();
        let seed = now.as_second() as u64;
        let Some(best) = expander::choose(&settings.expanders, &candidates, input.cluster_nodes, seed) else { break };
        let (gi, packing, fork) = options.swap_remove(best);
        let nodes = packing.new_nodes.len() as u32;
        let similar = similar_groups(input, gi, &options.iter().map(|(g, ..)| *g).collect::<Vec<_>>());
        let spread = balance(input, settings, history, &similar, nodes, &added, total_now, now);
        for (&g, &n) in &spread {
            added[g] += n;
            *out.increases.entry(g).or_default() += n;
        }
        let groups: Vec<usize> = spread.keys().copied().collect();
        for n in &packing.new_nodes {
            for &p in &n.pods {
                out.triggered.push((p, groups.clone()));
            }
        }
        remaining = packing.unplaced.iter().map(|u| u.pod).collect();
        snap = fork;
    }
    for p in remaining {
        let why = match reasons.remove(&p) {
            Some(r) if !r.is_empty() => r.join("; "),
            _ => "no node group in any NodePool".to_owned(),
        };
        out.not_triggered.push((p, why));
    }
    out
}

/// How many nodes group `gi` may still gain, or why none.
fn headroom(
    input: &Input,
    settings: &Settings,
    history: &History,
    gi: usize,
    added: &[u32],
    total_now: u32,
    now: Timestamp,
) -> Result<u32, String> {
    let g = &input.groups[gi];
    let pool = &input.pools[g.pool];
    if let Some(why) = &pool.invalid {
        return Err(format!("NodePool {} is invalid: {why}", pool.name));
    }
    let t = g.template.as_ref().map_err(|e| format!("no node template: {e}"))?;
    if let Some(b) = history.backed_off(&g.group.name, now) {
        return Err(format!("backed off until {} after a failed scale-up ({})", b.until, b.reason));
    }
    let target = g.group.desired + added[gi];
    let mut room = i64::from(g.group.max_size) - i64::from(target);
    if room <= 0 {
        return Err(format!("max node group size reached ({})", g.group.max_size));
    }
    // The pool's limits count every group of the pool at its target.
    let members: Vec<usize> = (0..input.groups.len()).filter(|&i| input.groups[i].pool == g.pool).collect();
    let pool_nodes: i64 = members.iter().map(|&i| i64::from(input.groups[i].group.desired + added[i])).sum();
    if let Some(max) = pool.limits.nodes {
        room = room.min(i64::from(max) - pool_nodes);
        if room <= 0 {
            return Err(format!("NodePool {} limit of {max} nodes reached", pool.name));
        }
    }
    // cpu and memory limits count capacity: a resource of one node of group `i`.
    type PerNode = fn(&GroupTemplate) -> i64;
    let resources: [(Option<i64>, &str, PerNode); 2] =
        [(pool.limits.cpu, "cpu", |t| t.capacity_cpu), (pool.limits.memory, "memory", |t| t.capacity_memory)];
    for (limit, name, of) in resources {
        let Some(limit) = limit else { continue };
        let used: i64 = members
            .iter()
            .map(|&i| {
                let one = input.groups[i].template.as_ref().map_or(0, of);
                i64::from(input.groups[i].group.desired + added[i]) * one
            })
            .sum();
        room = room.min((limit - used) / of(t).max(1));
        if room <= 0 {
            return Err(format!("NodePool {} {name} limit reached", pool.name));
        }
    }
    if let Some(max) = settings.max_nodes_total {
        room = room.min(i64::from(max) - i64::from(total_now));
        if room <= 0 {
            return Err(format!("max-nodes-total ({max}) reached"));
        }
    }
    Ok(room.clamp(0, i64::from(u32::MAX)) as u32)
}

/// Adds each group's upcoming nodes (desired capacity not ready yet) with their DaemonSet pods.
fn add_upcoming(snap: &mut Snapshot, input: &Input, settings: &Settings, now: Timestamp) {
    for g in &input.groups {
        let Ok(t) = &g.template else { continue };
        for i in 0..g.upcoming(now, settings.max_node_provision_time) {
            let zone = &t.template.zones[i as usize % t.template.zones.len()];
            let mut labels = t.template.labels.clone();
            labels.insert(model::ZONE.to_owned(), zone.clone());
            let name = format!("upcoming-{}-{i}", g.group.name);
            labels.insert(model::HOSTNAME.to_owned(), name.clone());
            let l = model::labels(Some(&labels), &mut snap.syms);
            let taints = model::taints(&t.template.taints, &mut snap.syms);
            let node = snap.add_node(&name, l, taints, t.template.allocatable.clone(), false);
            for ds in &input.daemonsets {
                let Ok(class) = snap.pod_class(ds, None) else { continue };
                let n = &snap.nodes[node as usize];
                if snap.check_static(snap.constraints(class, usize::MAX), &n.labels, &n.taints, false).is_ok() {
                    let pod = snap.add_pod(&format!("{name}-ds"), "", class);
                    snap.place(pod, node);
                }
            }
        }
    }
}

fn candidate(input: &Input, gi: usize, p: &Packing) -> Candidate {
    let g = &input.groups[gi];
    let (node_cpu, node_memory) =
        g.template.as_ref().map(|t| (t.template.allocatable.cpu, t.template.allocatable.memory)).unwrap_or((1, 1));
    let (mut pod_cpu, mut pod_memory, mut pods) = (0, 0, 0);
    for n in &p.new_nodes {
        for &pod in &n.pods {
            let r = &input.snapshot.class_of(input.snapshot.pods[pod as usize].class).requests;
            pod_cpu += r.cpu;
            pod_memory += r.memory;
            pods += 1;
        }
    }
    let known: Vec<f64> = g.group.instance_types.iter().filter_map(|t| prices::on_demand(&t.name)).collect();
    let node_price = (!known.is_empty()).then(|| known.iter().sum::<f64>() / known.len() as f64);
    Candidate {
        group: g.group.name.clone(),
        nodes: p.new_nodes.len() as u32,
        pods,
        pod_cpu,
        pod_memory,
        node_cpu,
        node_memory,
        node_price,
        weight: input.pools[g.pool].weight.unwrap_or(0),
    }
}

/// Groups among `viable` that are interchangeable with `gi`: same allocatable (memory within
/// 1.5 %), same taints, same labels apart from zone-like ones. Includes `gi`.
fn similar_groups(input: &Input, gi: usize, viable: &[usize]) -> Vec<usize> {
    let Ok(a) = &input.groups[gi].template else { return vec![gi] };
    let strip = |l: &BTreeMap<String, String>| -> BTreeMap<String, String> {
        l.iter()
            .filter(|(k, _)| !BALANCE_IGNORED_LABELS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    let la = strip(&a.template.labels);
    let mut out = vec![gi];
    for &o in viable {
        let Ok(b) = &input.groups[o].template else { continue };
        let (ma, mb) = (a.template.allocatable.memory as f64, b.template.allocatable.memory as f64);
        let same = a.template.allocatable.cpu == b.template.allocatable.cpu
            && a.template.allocatable.pods == b.template.allocatable.pods
            && (ma - mb).abs() <= 0.015 * ma.max(mb)
            && a.template.taints == b.template.taints
            && la == strip(&b.template.labels);
        if same && o != gi {
            out.push(o);
        }
    }
    out
}

/// Spreads `nodes` over the similar groups: one at a time to the group with the smallest
/// target that still has headroom (ties by name).
#[allow(clippy::too_many_arguments)]
fn balance(
    input: &Input,
    settings: &Settings,
    history: &History,
    similar: &[usize],
    nodes: u32,
    added: &[u32],
    total_now: u32,
    now: Timestamp,
) -> BTreeMap<usize, u32> {
    let mut local = added.to_vec();
    let mut out = BTreeMap::new();
    for _ in 0..nodes {
        let pick = similar
            .iter()
            .copied()
            .filter(|&g| {
                let taken: u32 = local.iter().sum::<u32>() - added.iter().sum::<u32>();
                headroom(input, settings, history, g, &local, total_now + taken, now).is_ok_and(|h| h > 0)
            })
            .min_by(|&a, &b| {
                let ta = input.groups[a].group.desired + local[a];
                let tb = input.groups[b].group.desired + local[b];
                ta.cmp(&tb).then_with(|| input.groups[a].group.name.cmp(&input.groups[b].group.name))
            });
        // Cannot happen while the chosen group had room for `nodes`; stopping short never overshoots.
        let Some(g) = pick else { break };
        local[g] += 1;
        *out.entry(g).or_insert(0) += 1;
    }
    out
}
