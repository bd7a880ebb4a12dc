//! Drain simulation: can every pod of a node be re-placed on the rest of the cluster?
//!
//! Candidates are evaluated in order and cumulatively, as Cluster Autoscaler does: a node that
//! can go is taken out of the snapshot, its pods stay on their new nodes, and PodDisruptionBudget
//! allowances are spent, so later candidates see the cluster as it would be.
//!
//! Drainability follows Cluster Autoscaler's rules (`nodes.md` §1.7) plus Karpenter's
//! `do-not-disrupt`: mirror, DaemonSet, terminating and finished pods need no new home;
//! `safe-to-evict: "true"` pods always may move; otherwise pods without a controller,
//! kube-system pods without a PDB, `safe-to-evict: "false"` pods, pods with local storage not
//! listed in `safe-to-evict-local-volumes`, and pods whose PDB allows no more disruptions block
//! the node. A *lost* node (broken, its pods not running anyway) obeys the same rules but is
//! never kept for want of room: pods that fit nowhere are left unplaced, for a scale-up.

use crate::snapshot::{ClassId, Domains, NodeId, PodId, Snapshot};

/// Why a node cannot be drained.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Block {
    NoController,
    KubeSystemWithoutPdb,
    NotSafeToEvict,
    DoNotDisrupt,
    LocalStorage(String),
    Pdb(String),
    /// Fits nowhere else; the reason from the last node tried, or none when no node is left.
    NoPlace(String),
}

impl std::fmt::Display for Block {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Block::NoController => write!(f, "pod is not replicated (no controller)"),
            Block::KubeSystemWithoutPdb => write!(f, "non-DaemonSet kube-system pod without a PodDisruptionBudget"),
            Block::NotSafeToEvict => write!(f, "pod is annotated cluster-autoscaler.kubernetes.io/safe-to-evict=false"),
            Block::DoNotDisrupt => write!(f, "pod is annotated karpenter.sh/do-not-disrupt=true"),
            Block::LocalStorage(v) => write!(f, "pod uses local storage (volume {v})"),
            Block::Pdb(name) => write!(f, "PodDisruptionBudget {name} allows no more disruptions"),
            Block::NoPlace(why) => write!(f, "no other node can take the pod: {why}"),
        }
    }
}

/// The verdict on one candidate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DrainOutcome {
    /// The node can go; each moved pod with its destination.
    Removable(Vec<(PodId, NodeId)>),
    /// The node must stay, because of this pod.
    Blocked { pod: PodId, block: Block },
    /// A lost node goes although some of its pods fit nowhere: they are left unplaced
    /// (`homeless`), to come back pending and be served by a scale-up.
    Lost { moved: Vec<(PodId, NodeId)>, homeless: Vec<PodId> },
}

/// Pods of a node that must find a new home, or the first pod that blocks the drain.
pub fn pods_to_move(snap: &Snapshot, node: NodeId, pdb_left: &[i64]) -> Result<Vec<PodId>, (PodId, Block)> {
    let mut out = Vec::new();
    let mut spent: Vec<i64> = vec![0; snap.pdbs.len()];
    for &p in &snap.nodes[node as usize].pods {
        let pod = &snap.pods[p as usize];
        let f = &pod.drain;
        if f.mirror || f.daemonset || f.terminating || f.terminal {
            continue;
        }
        let pdbs = covering_pdbs(snap, pod.class);
        if f.safe_to_evict != Some(true) {
            if f.do_not_disrupt {
                return Err((p, Block::DoNotDisrupt));
            }
            if !f.has_controller {
                return Err((p, Block::NoController));
            }
            if f.kube_system && pdbs.is_empty() {
                return Err((p, Block::KubeSystemWithoutPdb));
            }
            if f.safe_to_evict == Some(false) {
                return Err((p, Block::NotSafeToEvict));
            }
            if let Some(v) = f.local_volumes.iter().find(|v| !f.safe_local_volumes.contains(v)) {
                return Err((p, Block::LocalStorage(v.clone())));
            }
        }
        for &i in &pdbs {
            if pdb_left[i] - spent[i] <= 0 {
                return Err((p, Block::Pdb(snap.pdbs[i].name.clone())));
            }
            spent[i] += 1;
        }
        out.push(p);
    }
    Ok(out)
}

fn covering_pdbs(snap: &Snapshot, class: ClassId) -> Vec<usize> {
    let c = snap.class_of(class);
    snap.pdbs
        .iter()
        .enumerate()
        .filter(|(_, b)| {
            b.namespace == c.namespace
                && b.selector.as_ref().is_some_and(|s| !s.is_empty() && s.matches(&c.labels, &snap.syms))
        })
        .map(|(i, _)| i)
        .collect()
}

/// Evaluates `candidates` in order (see the module docs). Removable nodes are removed from the
/// snapshot and their pods placed on their destinations; fork the snapshot to keep the original.
pub fn drain(snap: &mut Snapshot, candidates: &[NodeId]) -> Vec<(NodeId, DrainOutcome)> {
    drain_lost_first(snap, &[], candidates)
}

/// As [`drain`], with `lost` nodes (broken: their pods are not running anyway) evaluated first.
/// Their pods obey the same drainability rules and move where they fit, but a pod that fits
/// nowhere does not keep a lost node: holding it hostage would only delay its replacement.
pub fn drain_lost_first(snap: &mut Snapshot, lost: &[NodeId], candidates: &[NodeId]) -> Vec<(NodeId, DrainOutcome)> {
    snap.ready();
    let mut pdb_left: Vec<i64> = snap.pdbs.iter().map(|p| p.disruptions_allowed).collect();
    let mut hints: std::collections::HashMap<ClassId, NodeId> = std::collections::HashMap::new();
    let mut out = Vec::with_capacity(lost.len() + candidates.len());
    let all = lost.iter().map(|&n| (n, true)).chain(candidates.iter().map(|&n| (n, false)));
    for (node, is_lost) in all {
        if snap.nodes[node as usize].removed {
            continue;
        }
        let movable = match pods_to_move(snap, node, &pdb_left) {
            Ok(m) => m,
            Err((pod, block)) => {
                out.push((node, DrainOutcome::Blocked { pod, block }));
                continue;
            }
        };
        // Largest first, as the scheduler would get them back.
        let mut movable = movable;
        movable.sort_by_key(|&p| {
            let r = &snap.class_of(snap.pods[p as usize].class).requests;
            (std::cmp::Reverse(r.cpu), std::cmp::Reverse(r.memory), p)
        });
        // Take the node out while its pods look for homes, so none lands back on it.
        snap.set_removed(node, true);
        let mut moved: Vec<(PodId, NodeId)> = Vec::with_capacity(movable.len());
        let mut homeless = Vec::new();
        let mut failure = None;
        for &p in &movable {
            let class = snap.pods[p as usize].class;
            match destination(snap, class, node, hints.get(&class).copied()) {
                Ok(dest) => {
                    snap.place(p, dest);
                    hints.insert(class, dest);
                    moved.push((p, dest));
                }
                Err(_) if is_lost => homeless.push(p),
                Err(why) => {
                    failure = Some((p, why));
                    break;
                }
            }
        }
        match failure {
            Some((pod, why)) => {
                for &(p, _) in &moved {
                    snap.place(p, node);
                }
                snap.set_removed(node, false);
                out.push((node, DrainOutcome::Blocked { pod, block: Block::NoPlace(why) }));
            }
            None => {
                for &p in &movable {
                    let class = snap.pods[p as usize].class;
                    for i in covering_pdbs(snap, class) {
                        pdb_left[i] -= 1;
                    }
                }
                // Pods that did not need a new home (DaemonSet, mirror, finished) go with the node.
                let rest: Vec<PodId> = snap.nodes[node as usize].pods.clone();
                for p in rest {
                    snap.unplace(p);
                }
                let outcome = if homeless.is_empty() {
                    DrainOutcome::Removable(moved)
                } else {
                    DrainOutcome::Lost { moved, homeless }
                };
                out.push((node, outcome));
            }
        }
    }
    out
}

/// The first node, starting from the hint and wrapping around, that takes a pod of this class.
fn destination(snap: &Snapshot, class: ClassId, from: NodeId, hint: Option<NodeId>) -> Result<NodeId, String> {
    let n = snap.nodes.len() as NodeId;
    let start = hint.filter(|h| *h < n).unwrap_or(0);
    let domains = Domains::default();
    let mut last = None;
    for i in 0..n {
        let node = (start + i) % n;
        if node == from || snap.nodes[node as usize].removed {
            continue;
        }
        match snap.check(class, usize::MAX, node, domains) {
            Ok(()) => return Ok(node),
            Err(r) => last = Some(r),
        }
    }
    Err(last.map(|r| r.to_string()).unwrap_or_else(|| "no other node".into()))
}
