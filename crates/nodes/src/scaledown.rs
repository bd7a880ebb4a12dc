//! Scale-down: which nodes are unneeded, and which of them go now.
//!
//! Cluster Autoscaler's rules:
//! - a candidate is a ready node of a NodePool's group whose pool allows scale-down, not
//!   annotated `scale-down-disabled`, not running omniscale's leader, with
//!   `max(Σcpu requests/allocatable, Σmemory requests/allocatable)` at or below the pool's
//!   utilisation threshold (DaemonSet and mirror pods count, as by default upstream); a node
//!   offering `nvidia.com/gpu` is judged by its GPUs' utilisation alone;
//! - candidates are simulated cumulatively, empty ones first, then least utilised: every pod
//!   must be drainable (safe-to-evict, controller, kube-system, local storage, PDBs — the rules
//!   of `omniscale_cluster::drain`) and must fit on the remaining nodes;
//! - a node that stays unneeded for the pool's `unneededTime` is removed, unless the pool grew
//!   within `delayAfterAdd`, a removal failed within the failure delay, or its group would drop
//!   below its minimum. Empty nodes go in bulk (10 per loop); nodes with pods one at a time;
//! - a node NotReady for the pool's `unreadyTime` (after its boot time) is removed as broken,
//!   whatever its utilisation, under the same drain rules, timers and minimum; it goes first, so
//!   the group's replacement capacity comes from a scale-up rather than from waiting.

use std::collections::BTreeMap;

use jiff::Timestamp;
use omniscale_cluster::{DrainOutcome, NodeId, PodId, drain, drain_lost_first};

use crate::history::History;
use crate::input::{Input, Settings};

/// A node to remove now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Removal {
    pub node: NodeId,
    /// Index into `Input::groups`.
    pub group: usize,
    pub instance: String,
    /// Pods to evict first (none for an empty node).
    pub evict: Vec<PodId>,
    pub reason: RemovalReason,
}

/// The extended resource that makes a node a GPU node.
pub const GPU_RESOURCE: &str = "nvidia.com/gpu";

/// Why a node goes (Cluster Autoscaler's `scaled_down_nodes_total` reasons).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RemovalReason {
    /// No pods to move.
    Empty,
    /// Below the utilisation threshold, its pods fit elsewhere.
    Underutilized,
    /// NotReady for longer than the pool's `unreadyTime`.
    Unready,
}

impl RemovalReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RemovalReason::Empty => "empty",
            RemovalReason::Underutilized => "underutilized",
            RemovalReason::Unready => "unready",
        }
    }
}

/// The scale-down decided in one loop.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ScaleDown {
    /// Unneeded nodes with the time they became unneeded.
    pub unneeded: Vec<(NodeId, Timestamp)>,
    /// NotReady nodes past their boot time, with since when they are NotReady.
    pub unready: Vec<(NodeId, Timestamp)>,
    pub remove: Vec<Removal>,
    /// Candidates that must stay, with why.
    pub blocked: Vec<(NodeId, String)>,
    /// Nodes of groups that are not candidates because they are busy enough, with utilisation.
    pub utilized: Vec<(NodeId, f64)>,
    /// Unneeded nodes not removed this loop, with why (timers, minimum size, parallelism).
    pub waiting: Vec<(NodeId, String)>,
}

/// Decides the scale-down. Unneeded times come from `history`; the caller stores the new ones
/// (`unneeded` in the result).
pub fn scale_down(input: &Input, settings: &Settings, history: &History, now: Timestamp) -> ScaleDown {
    let mut out = ScaleDown::default();
    let snap = &input.snapshot;
    let mut candidates: Vec<(NodeId, f64, bool)> = Vec::new();
    let mut broken: Vec<NodeId> = Vec::new();
    let no_pdb_limit = vec![i64::MAX; snap.pdbs.len()];
    let is_empty = |node: NodeId| drain::pods_to_move(snap, node, &no_pdb_limit).is_ok_and(|p| p.is_empty());
    let gpu = snap.syms.get(GPU_RESOURCE);
    for g in &input.groups {
        let pool = &input.pools[g.pool];
        if !pool.scale_down.enabled || pool.invalid.is_some() {
            continue;
        }
        // Nodes still booting are the provisioning timeout's business, not scale-down's.
        for u in g.broken(now, settings.max_node_provision_time) {
            if let Some(why) = input.keep.get(&u.node) {
                out.blocked.push((u.node, why.clone()));
                continue;
            }
            let since = u.since.unwrap_or(now);
            out.unready.push((u.node, since));
            let down = now.duration_since(since);
            if down < pool.scale_down.unready_time {
                out.waiting.push((
                    u.node,
                    format!("not ready for {down:#}, removal after {:#}", pool.scale_down.unready_time),
                ));
                continue;
            }
            broken.push(u.node);
        }
        for (node, _) in &g.nodes {
            if let Some(why) = input.keep.get(node) {
                out.blocked.push((*node, why.clone()));
                continue;
            }
            let n = &snap.nodes[*node as usize];
            // A GPU node is worth its GPUs: judged by them alone, as upstream.
            let util = match gpu.filter(|&g| n.allocatable.ext(g) > 0) {
                Some(g) => utilization(n.used.ext(g), n.allocatable.ext(g)),
                None => {
                    utilization(n.used.cpu, n.allocatable.cpu).max(utilization(n.used.memory, n.allocatable.memory))
                }
            };
            if util > pool.scale_down.utilization_threshold {
                out.utilized.push((*node, util));
                continue;
            }
            candidates.push((*node, util, is_empty(*node)));
        }
    }
    candidates.sort_by(|a, b| b.2.cmp(&a.2).then(a.1.total_cmp(&b.1)).then(a.0.cmp(&b.0)));
    let order: Vec<NodeId> = candidates.iter().map(|c| c.0).collect();
    let mut sim = snap.clone();
    let outcomes = drain_lost_first(&mut sim, &broken, &order);
    // Removals left per group before its minimum.
    let mut room: Vec<i64> = input
        .groups
        .iter()
        .map(|g| {
            let live = g.group.live().count() as i64;
            i64::from(g.group.desired).min(live) - i64::from(g.group.min_size)
        })
        .collect();
    let (mut empties, mut drains) = (0usize, 0usize);
    let failed_recently = history
        .last_scale_down_failure
        .is_some_and(|t| now.duration_since(t) < settings.scale_down_delay_after_failure);
    // Pods of a removed broken node that fit nowhere need new capacity: no other node goes
    // in the same loop.
    let mut homeless_pods = false;
    for (node, outcome) in outcomes {
        let mut leaves_homeless = false;
        let evict: Vec<PodId> = match outcome {
            DrainOutcome::Blocked { pod, block } => {
                let p = &snap.pods[pod as usize];
                out.blocked.push((node, format!("pod {}/{}: {block}", p.namespace, p.name)));
                continue;
            }
            DrainOutcome::Removable(moved) => moved.iter().map(|(p, _)| *p).collect(),
            DrainOutcome::Lost { moved, homeless } => {
                leaves_homeless = true;
                moved.iter().map(|(p, _)| *p).chain(homeless).collect()
            }
        };
        let unready = broken.contains(&node);
        // A broken node's clock is its Ready condition (checked above), not the unneeded timer.
        let since = if unready {
            now
        } else {
            let since = snap.nodes.get(node as usize).and_then(|n| history.unneeded_since.get(&n.name).copied());
            let since = since.unwrap_or(now);
            out.unneeded.push((node, since));
            since
        };
        let Some(&gi) = input.node_group.get(&node) else { continue };
        let g = &input.groups[gi];
        let pool = &input.pools[g.pool];
        let empty = evict.is_empty();
        let wait = if !unready && now.duration_since(since) < pool.scale_down.unneeded_time {
            Some(format!(
                "unneeded for {:#}, removal after {:#}",
                now.duration_since(since),
                pool.scale_down.unneeded_time
            ))
        } else if let Some(t) =
            pool_scaled_up(input, history, g.pool).filter(|t| now.duration_since(*t) < pool.scale_down.delay_after_add)
        {
            Some(format!(
                "NodePool {} grew at {t}; no removal for {:#} after",
                pool.name, pool.scale_down.delay_after_add
            ))
        } else if room[gi] <= 0 {
            Some(format!("group {} is at its minimum size {}", g.group.name, g.group.min_size))
        } else if !unready && homeless_pods {
            Some("pods of a NotReady node being removed need the capacity first".to_owned())
        } else if !empty && failed_recently {
            Some("a removal failed recently".to_owned())
        } else if empty && empties >= settings.max_empty_bulk_delete {
            Some("empty-node removals per loop used up".to_owned())
        } else if !empty && drains >= settings.max_drain_parallelism {
            Some("one node with pods is drained at a time".to_owned())
        } else {
            None
        };
        if let Some(why) = wait {
            out.waiting.push((node, why));
            continue;
        }
        room[gi] -= 1;
        homeless_pods |= leaves_homeless;
        if empty {
            empties += 1;
        } else {
            drains += 1;
        }
        let instance = g.nodes.iter().find(|(n, _)| *n == node).map(|(_, i)| i.clone());
        let instance = instance.or_else(|| g.unready.iter().find(|u| u.node == node).map(|u| u.instance.clone()));
        let reason = match (unready, empty) {
            (true, _) => RemovalReason::Unready,
            (false, true) => RemovalReason::Empty,
            (false, false) => RemovalReason::Underutilized,
        };
        out.remove.push(Removal { node, group: gi, instance: instance.unwrap_or_default(), evict, reason });
    }
    out
}

fn utilization(used: i64, alloc: i64) -> f64 {
    if alloc <= 0 { if used > 0 { f64::INFINITY } else { 0.0 } } else { used as f64 / alloc as f64 }
}

/// When any group of the pool last grew.
fn pool_scaled_up(input: &Input, history: &History, pool: usize) -> Option<Timestamp> {
    input
        .groups
        .iter()
        .filter(|g| g.pool == pool)
        .filter_map(|g| history.last_scale_up.get(&g.group.name))
        .max()
        .copied()
}

/// The unneeded-since map to remember, by node name.
pub fn unneeded_since(input: &Input, plan: &ScaleDown) -> BTreeMap<String, Timestamp> {
    plan.unneeded.iter().filter_map(|(n, t)| Some((input.snapshot.nodes.get(*n as usize)?.name.clone(), *t))).collect()
}
