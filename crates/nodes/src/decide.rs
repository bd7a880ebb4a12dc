//! One loop of the Auto Scaling Group engine: check scale-ups in flight, scale up, scale down.
//! Returns what to do (by name, ready for the shell) and the history to keep.

use std::collections::BTreeMap;

use jiff::Timestamp;
use omniscale_cluster::NodeId;

use crate::history::{History, ScaleUpRequest};
use crate::input::{Input, Settings};
use crate::scaledown::{self, RemovalReason, ScaleDown};
use crate::scaleup::{self, ScaleUp};

/// A pod, by namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
}

/// Undoing a scale-up that did not come (Cluster Autoscaler's timeout revert and its early
/// abort on a failed scaling activity): instances that never became nodes are terminated with
/// decrement, and a desired capacity above the live instances is lowered to them, so nothing
/// keeps trying in the background and no registered node is hit by the ASG's own scale-in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Revert {
    pub group: String,
    pub terminate: Vec<String>,
    /// New desired capacity, when it must drop by more than the terminations.
    pub set_desired: Option<u32>,
    pub reason: String,
}

/// A desired-capacity increase.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resize {
    pub group: String,
    pub pool: String,
    pub from: u32,
    pub to: u32,
    /// Pending pods the new nodes are for.
    pub pods: Vec<PodRef>,
}

/// A node to remove.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Removal {
    pub node: String,
    pub group: String,
    pub pool: String,
    pub instance: String,
    pub evict: Vec<PodRef>,
    pub reason: RemovalReason,
}

/// Per-pool summary for status.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PoolSummary {
    pub name: String,
    pub groups: Vec<String>,
    /// Sum of the groups' desired capacities after this plan.
    pub desired: u32,
    /// Ready nodes of the pool's groups.
    pub ready: u32,
    pub min: u32,
    pub max: u32,
    /// Groups in backoff, with until when and why.
    pub backoff: Vec<(String, Timestamp, String)>,
    /// Why the pool cannot grow, when it cannot (at max, limits).
    pub cannot_grow: Option<String>,
    /// Group template problems.
    pub template_errors: Vec<String>,
    /// Why nothing scales this loop: the cluster is unhealthy.
    pub unhealthy: Option<String>,
}

/// Everything one loop decided.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    pub reverts: Vec<Revert>,
    pub scale_up: Vec<Resize>,
    /// Pods the scale-up is for, with the groups (`TriggeredScaleUp`).
    pub triggered: Vec<(PodRef, Vec<String>)>,
    /// Pods no group can help, with why (`NotTriggerScaleUp`).
    pub not_triggered: Vec<(PodRef, String)>,
    /// Pods that fit existing or upcoming nodes.
    pub fits_existing: Vec<PodRef>,
    pub remove: Vec<Removal>,
    /// Unneeded nodes and since when.
    pub unneeded: Vec<(String, Timestamp)>,
    /// NotReady nodes past their boot time, and since when they are NotReady.
    pub unready: Vec<(String, Timestamp)>,
    /// Nodes that must stay, with why.
    pub blocked: Vec<(String, String)>,
    /// Unneeded nodes waiting, with why.
    pub waiting: Vec<(String, String)>,
    /// Nodes above the utilisation threshold.
    pub utilized: Vec<(String, f64)>,
    /// Unneeded nodes to mark with the soft `DeletionCandidateOfClusterAutoscaler:PreferNoSchedule`
    /// taint, so the scheduler prefers other nodes for new pods; and marked nodes no longer
    /// unneeded, to unmark. At most `max_bulk_soft_taint` of each per loop.
    pub soft_taint: Vec<String>,
    pub soft_untaint: Vec<String>,
    /// Set when too many nodes are broken to trust the cluster's state (a network partition,
    /// a control-plane outage): nothing is added or removed until it recovers.
    pub unhealthy: Option<String>,
    pub pools: Vec<PoolSummary>,
    pub history: History,
}

/// Decides one loop.
pub fn decide(input: &Input, settings: &Settings, history: &History, now: Timestamp) -> Plan {
    let mut history = history.clone();
    let mut plan = Plan { reverts: track(input, settings, &mut history, now), ..Plan::default() };
    // Reverted groups no longer expect those nodes: the scale-up must not count on them.
    let reverted;
    let input = if plan.reverts.is_empty() {
        input
    } else {
        reverted = apply_reverts(input, &plan.reverts);
        &reverted
    };
    plan.unhealthy = unhealthy(input, settings, now);
    if plan.unhealthy.is_some() {
        plan.pools = summaries(input, &plan, &history, now);
        plan.history = history;
        return plan;
    }
    let up: ScaleUp = scaleup::scale_up(input, settings, &history, now);
    let snap = &input.snapshot;
    let pod = |p: omniscale_cluster::PodId| {
        let p = &snap.pods[p as usize];
        PodRef { namespace: p.namespace.clone(), name: p.name.clone() }
    };
    let node = |n: omniscale_cluster::NodeId| snap.nodes[n as usize].name.clone();
    let group_name = |g: usize| input.groups[g].group.name.clone();
    let mut pods_of: BTreeMap<usize, Vec<PodRef>> = BTreeMap::new();
    for (p, groups) in &up.triggered {
        for g in groups {
            pods_of.entry(*g).or_default().push(pod(*p));
        }
        plan.triggered.push((pod(*p), groups.iter().map(|g| group_name(*g)).collect()));
    }
    for (&gi, &n) in &up.increases {
        let g = &input.groups[gi];
        let (from, to) = (g.group.desired, g.group.desired + n);
        plan.scale_up.push(Resize {
            group: g.group.name.clone(),
            pool: input.pools[g.pool].name.clone(),
            from,
            to,
            pods: pods_of.remove(&gi).unwrap_or_default(),
        });
        history.last_scale_up.insert(g.group.name.clone(), now);
        let req = history.requests.entry(g.group.name.clone()).or_insert(ScaleUpRequest {
            group: g.group.name.clone(),
            from,
            to,
            at: now,
        });
        req.to = to;
    }
    plan.not_triggered = up.not_triggered.iter().map(|(p, why)| (pod(*p), why.clone())).collect();
    plan.fits_existing = up.fits_existing.iter().map(|p| pod(*p)).collect();
    // A loop that scaled up does not scale down (Cluster Autoscaler); unneeded timers stay.
    if up.increases.is_empty() {
        let down: ScaleDown = scaledown::scale_down(input, settings, &history, now);
        history.unneeded_since = scaledown::unneeded_since(input, &down);
        plan.unneeded = down.unneeded.iter().map(|(n, t)| (node(*n), *t)).collect();
        plan.unready = down.unready.iter().map(|(n, t)| (node(*n), *t)).collect();
        plan.blocked = down.blocked.iter().map(|(n, w)| (node(*n), w.clone())).collect();
        plan.waiting = down.waiting.iter().map(|(n, w)| (node(*n), w.clone())).collect();
        plan.utilized = down.utilized.iter().map(|(n, u)| (node(*n), *u)).collect();
        let removed: Vec<NodeId> = down.remove.iter().map(|r| r.node).collect();
        let unneeded: Vec<NodeId> = down.unneeded.iter().map(|(n, _)| *n).collect();
        let marked = |n: &NodeId| input.soft_tainted.contains(n);
        plan.soft_taint = unneeded
            .iter()
            .filter(|n| !marked(n) && !removed.contains(n))
            .take(settings.max_bulk_soft_taint)
            .map(|n| node(*n))
            .collect();
        plan.soft_untaint = input
            .soft_tainted
            .iter()
            .filter(|n| !unneeded.contains(n) && !removed.contains(n))
            .take(settings.max_bulk_soft_taint)
            .map(|n| node(*n))
            .collect();
        plan.remove = down
            .remove
            .iter()
            .map(|r| Removal {
                node: node(r.node),
                group: group_name(r.group),
                pool: input.pools[input.groups[r.group].pool].name.clone(),
                instance: r.instance.clone(),
                evict: r.evict.iter().map(|p| pod(*p)).collect(),
                reason: r.reason,
            })
            .collect();
    }
    plan.pools = summaries(input, &plan, &history, now);
    plan.history = history;
    plan
}

/// Checks scale-ups in flight: done when the nodes are ready, failed when the group reports a
/// failed scaling activity since the request (no 15-minute wait for capacity that will not
/// come), timed out after `max_node_provision_time`. Failures are reverted and back off the
/// group.
fn track(input: &Input, settings: &Settings, history: &mut History, now: Timestamp) -> Vec<Revert> {
    let mut reverts = Vec::new();
    let requests: Vec<ScaleUpRequest> = history.requests.values().cloned().collect();
    for req in requests {
        let Some(g) = input.groups.iter().find(|g| g.group.name == req.group) else {
            history.requests.remove(&req.group);
            continue;
        };
        let arrived = g.registered(now, settings.max_node_provision_time);
        if arrived >= req.to.min(g.group.desired) || g.group.desired < req.to {
            // Arrived, or someone lowered the target since: nothing to wait for.
            history.requests.remove(&req.group);
            continue;
        }
        let failed = g.group.last_failed_activity.as_ref().filter(|(t, _)| *t >= req.at);
        let timed_out = now.duration_since(req.at) >= settings.max_node_provision_time;
        let reason = match (failed, timed_out) {
            (Some((_, msg)), _) => format!("scaling activity failed: {msg}"),
            (None, true) => format!(
                "{} of {} requested nodes not ready after {:#}",
                req.to.saturating_sub(arrived),
                req.to - req.from.min(req.to),
                settings.max_node_provision_time
            ),
            (None, false) => continue,
        };
        // A failed activity: the instances that did launch are kept; the target drops to them
        // (Cluster Autoscaler's placeholder removal). A timeout: instances that never registered
        // a node are given up too. Every registered node stays, ready or not, booting or broken:
        // it may run pods, and removing it is scale-down's job, with evictions and its rules.
        let registered_ids: Vec<&str> =
            g.nodes.iter().map(|(_, i)| i.as_str()).chain(g.unready.iter().map(|u| u.instance.as_str())).collect();
        let terminate: Vec<String> = if failed.is_some() {
            Vec::new()
        } else {
            g.group.live().filter(|i| !registered_ids.contains(&i.id.as_str())).map(|i| i.id.clone()).collect()
        };
        let live = g.group.live().count() as u32;
        let after = live.saturating_sub(terminate.len() as u32).max(g.group.min_size);
        let set_desired = (g.group.desired.saturating_sub(terminate.len() as u32) > after).then_some(after);
        history.fail(&g.group.name, now, reason.clone());
        history.requests.remove(&req.group);
        reverts.push(Revert { group: g.group.name.clone(), terminate, set_desired, reason });
    }
    reverts
}

/// Cluster Autoscaler's health gate: more than `ok_total_unready_count` broken nodes that are
/// also more than `max_total_unready_percentage` of all nodes.
fn unhealthy(input: &Input, settings: &Settings, now: Timestamp) -> Option<String> {
    let booting = |r: &Option<Timestamp>| crate::input::booting(*r, now, settings.max_node_provision_time);
    let broken = input.unready_registered.iter().filter(|r| !booting(r)).count() as u32;
    let total = input.cluster_nodes;
    let share = settings.max_total_unready_percentage;
    (broken > settings.ok_total_unready_count && f64::from(broken) > share / 100.0 * f64::from(total)).then(|| {
        format!(
            "{broken} of {total} nodes are NotReady (more than {} and more than {share}%): the cluster is \
             unhealthy, no node is added or removed until it recovers",
            settings.ok_total_unready_count
        )
    })
}

fn apply_reverts(input: &Input, reverts: &[Revert]) -> Input {
    let mut out = input.clone();
    for r in reverts {
        let Some(g) = out.groups.iter_mut().find(|g| g.group.name == r.group) else { continue };
        for i in g.group.instances.iter_mut().filter(|i| r.terminate.contains(&i.id)) {
            i.state = crate::provider::InstanceState::Terminating;
        }
        g.group.desired = g.group.desired.saturating_sub(r.terminate.len() as u32);
        if let Some(d) = r.set_desired {
            g.group.desired = d;
        }
    }
    out
}

fn summaries(input: &Input, plan: &Plan, history: &History, now: Timestamp) -> Vec<PoolSummary> {
    let mut out: Vec<PoolSummary> =
        input.pools.iter().map(|p| PoolSummary { name: p.name.clone(), ..PoolSummary::default() }).collect();
    for g in &input.groups {
        let s = &mut out[g.pool];
        s.groups.push(g.group.name.clone());
        let to = plan.scale_up.iter().find(|r| r.group == g.group.name).map_or(g.group.desired, |r| r.to);
        s.desired += to;
        s.ready += g.nodes.len() as u32;
        s.min += g.group.min_size;
        s.max += g.group.max_size;
        if let Some(b) = history.backed_off(&g.group.name, now) {
            s.backoff.push((g.group.name.clone(), b.until, b.reason.clone()));
        }
        if let Err(e) = &g.template {
            s.template_errors.push(format!("{}: {e}", g.group.name));
        }
        s.unhealthy.clone_from(&plan.unhealthy);
    }
    for (i, s) in out.iter_mut().enumerate() {
        let pool = &input.pools[i];
        if s.groups.is_empty() {
            continue;
        }
        if s.desired >= s.max {
            s.cannot_grow = Some(format!("all groups at their maximum size ({} nodes)", s.max));
        } else if let Some(n) = pool.limits.nodes.filter(|n| s.desired >= *n) {
            s.cannot_grow = Some(format!("limit of {n} nodes reached"));
        }
    }
    out
}
