//! From Kubernetes objects, NodePools and the cloud's groups to the engines' input. Pure and
//! shared by the operator's shell and `omniscale plan`, so both decide from the same view.
//!
//! - The snapshot holds the nodes and the pods bound to them, plus PodDisruptionBudgets. NotReady
//!   nodes are in it as unschedulable (their pods still count for spread and affinity, and
//!   nothing is planned onto them); a group counts its NotReady nodes as upcoming while they
//!   may still be booting (registered within `--max-node-provision-time`), and as broken after.
//! - Pending pods are the ones kube-scheduler marked `PodScheduled=False, reason=Unschedulable`,
//!   minus DaemonSet pods and pods below the expendable priority cutoff (Cluster Autoscaler's
//!   rules).
//! - A node belongs to the group holding the instance named by its `spec.providerID`.

use std::collections::{BTreeMap, HashMap};

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use omniscale_api::duration::parse_duration;
use omniscale_api::nodepool::NodePool;
use omniscale_api::quantity::Quantity;
use omniscale_cluster::{NodeId, PodId, Snapshot};

use crate::expander::Expander;
use crate::provider::{GroupSource, NodeGroup};
use crate::template::{GroupTemplate, group_template};

/// Cluster Autoscaler's `--expendable-pods-priority-cutoff` default: pods below this priority
/// never trigger a scale-up.
pub const EXPENDABLE_PRIORITY_CUTOFF: i32 = -10;

/// Annotation that keeps a node from being removed (Cluster Autoscaler's).
pub const SCALE_DOWN_DISABLED: &str = "cluster-autoscaler.kubernetes.io/scale-down-disabled";

/// Loop-wide settings (Cluster Autoscaler's flags of the same meaning).
#[derive(Clone, Debug)]
pub struct Settings {
    /// Expander chain, first filter first (`--expander`, default least-waste).
    pub expanders: Vec<Expander>,
    /// `--max-nodes-total`: ceiling on all nodes of the cluster.
    pub max_nodes_total: Option<u32>,
    /// `--max-node-provision-time` (15m): a scale-up whose nodes have not registered by then is
    /// reverted and the group backed off.
    pub max_node_provision_time: SignedDuration,
    /// Empty nodes removed per loop (`--max-scale-down-parallelism`, 10).
    pub max_empty_bulk_delete: usize,
    /// Non-empty nodes drained per loop (`--max-drain-parallelism`, 1).
    pub max_drain_parallelism: usize,
    /// `--scale-down-delay-after-failure` (3m).
    pub scale_down_delay_after_failure: SignedDuration,
    /// Soft deletion-candidate taints added or lifted per loop (`--max-bulk-soft-taint-count`).
    pub max_bulk_soft_taint: usize,
    /// The cluster is too unhealthy to autoscale when more than this many nodes, and more than
    /// `max_total_unready_percentage` of them, are broken (`--ok-total-unready-count`, 3).
    pub ok_total_unready_count: u32,
    /// `--max-total-unready-percentage` (45).
    pub max_total_unready_percentage: f64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            expanders: vec![Expander::LeastWaste],
            max_nodes_total: None,
            max_node_provision_time: SignedDuration::from_mins(15),
            max_empty_bulk_delete: 10,
            max_drain_parallelism: 1,
            scale_down_delay_after_failure: SignedDuration::from_mins(3),
            max_bulk_soft_taint: 10,
            ok_total_unready_count: 3,
            max_total_unready_percentage: 45.0,
        }
    }
}

/// A NodePool's ceilings, in the snapshot's units (cpu millicores, memory bytes).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PoolLimits {
    pub nodes: Option<u32>,
    pub cpu: Option<i64>,
    pub memory: Option<i64>,
}

/// A NodePool's scale-down settings, parsed.
#[derive(Clone, Debug, PartialEq)]
pub struct ScaleDownSettings {
    pub enabled: bool,
    pub utilization_threshold: f64,
    pub unneeded_time: SignedDuration,
    pub delay_after_add: SignedDuration,
    pub unready_time: SignedDuration,
}

impl Default for ScaleDownSettings {
    fn default() -> Self {
        ScaleDownSettings {
            enabled: true,
            utilization_threshold: 0.5,
            unneeded_time: SignedDuration::from_mins(10),
            delay_after_add: SignedDuration::from_mins(10),
            unready_time: SignedDuration::from_mins(20),
        }
    }
}

/// One Auto Scaling Group NodePool.
#[derive(Clone, Debug)]
pub struct Pool {
    pub name: String,
    pub source: GroupSource,
    pub limits: PoolLimits,
    pub scale_down: ScaleDownSettings,
    pub weight: Option<i32>,
    /// Why the pool cannot be used as written (the engines leave it alone).
    pub invalid: Option<String>,
}

impl Pool {
    /// Reads a NodePool; `None` for groupless pools (another engine's).
    pub fn from_spec(p: &NodePool) -> Option<Pool> {
        let asg = p.spec.auto_scaling_group.as_ref()?;
        let name = p.metadata.name.clone().unwrap_or_default();
        let source = match (&asg.name, &asg.discovery) {
            (Some(n), _) => GroupSource::Name(n.clone()),
            (None, Some(d)) => GroupSource::cluster_autoscaler(&d.cluster_name, &d.tags),
            (None, None) => GroupSource::Tags(BTreeMap::new()),
        };
        let mut invalid = None;
        let mut bad = |why: String| {
            invalid.get_or_insert(why);
        };
        let quantity = |q: &Option<k8s_openapi::apimachinery::pkg::api::resource::Quantity>, milli: bool| {
            q.as_ref().map(|q| Quantity::parse(&q.0).map(|v| if milli { v.milli() } else { v.units_ceil() }))
        };
        let limits = p.spec.limits.clone().unwrap_or_default();
        let cpu = match quantity(&limits.cpu, true) {
            Some(Ok(v)) => Some(v.clamp(0, i64::MAX as i128) as i64),
            Some(Err(e)) => {
                bad(format!("spec.limits.cpu: {e}"));
                None
            }
            None => None,
        };
        let memory = match quantity(&limits.memory, false) {
            Some(Ok(v)) => Some(v.clamp(0, i64::MAX as i128) as i64),
            Some(Err(e)) => {
                bad(format!("spec.limits.memory: {e}"));
                None
            }
            None => None,
        };
        let sd = p.spec.scale_down.clone().unwrap_or_default();
        let mut dur = |field: &str, v: &str, default: SignedDuration| match parse_duration(v) {
            Ok(d) => SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX),
            Err(e) => {
                bad(format!("spec.scaleDown.{field}: {e}"));
                default
            }
        };
        let scale_down = ScaleDownSettings {
            enabled: sd.enabled,
            utilization_threshold: sd.utilization_threshold,
            unneeded_time: dur("unneededTime", &sd.unneeded_time, SignedDuration::from_mins(10)),
            delay_after_add: dur("delayAfterAdd", &sd.delay_after_add, SignedDuration::from_mins(10)),
            unready_time: dur("unreadyTime", &sd.unready_time, SignedDuration::from_mins(20)),
        };
        Some(Pool {
            name,
            source,
            limits: PoolLimits { nodes: limits.nodes.map(|n| n.max(0) as u32), cpu, memory },
            scale_down,
            weight: p.spec.weight,
            invalid,
        })
    }
}

/// A group with what the engines derived for it.
#[derive(Clone, Debug)]
pub struct Group {
    pub group: NodeGroup,
    /// Index into [`Input::pools`].
    pub pool: usize,
    pub template: Result<GroupTemplate, String>,
    /// The group's ready nodes in the snapshot, with their instance ids.
    pub nodes: Vec<(NodeId, String)>,
    /// The group's registered NotReady nodes (unschedulable in the snapshot).
    pub unready: Vec<UnreadyNode>,
}

/// A registered node whose kubelet does not report Ready.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnreadyNode {
    pub node: NodeId,
    pub instance: String,
    /// When the Node object was created (registration).
    pub registered: Option<Timestamp>,
    /// Since when it has not been Ready: the Ready condition's last transition, else its
    /// registration.
    pub since: Option<Timestamp>,
}

impl UnreadyNode {
    /// Registered recently enough to be still booting (Cluster Autoscaler's NotStarted).
    pub fn starting(&self, now: Timestamp, provision_time: SignedDuration) -> bool {
        booting(self.registered, now, provision_time)
    }
}

/// Whether a NotReady node registered at `registered` may still be booting.
pub fn booting(registered: Option<Timestamp>, now: Timestamp, provision_time: SignedDuration) -> bool {
    registered.is_some_and(|t| now.duration_since(t) < provision_time)
}

impl Group {
    /// Nodes the group is expected to gain: desired capacity neither ready nor broken (a
    /// NotReady node past its boot time will not become capacity by waiting).
    pub fn upcoming(&self, now: Timestamp, provision_time: SignedDuration) -> u32 {
        self.group.desired.saturating_sub(self.registered(now, provision_time))
    }

    /// Nodes that have arrived: ready, or NotReady past their boot time (broken nodes are
    /// scale-down's business, not a scale-up that failed to come).
    pub fn registered(&self, now: Timestamp, provision_time: SignedDuration) -> u32 {
        (self.nodes.len() + self.broken(now, provision_time).count()) as u32
    }

    /// NotReady nodes past their boot time.
    pub fn broken(&self, now: Timestamp, provision_time: SignedDuration) -> impl Iterator<Item = &UnreadyNode> {
        self.unready.iter().filter(move |u| !u.starting(now, provision_time))
    }
}

/// Everything the engines look at in one loop.
#[derive(Clone, Debug)]
pub struct Input {
    pub snapshot: Snapshot,
    /// Unschedulable pods, in the snapshot (unplaced).
    pub pending: Vec<PodId>,
    /// DaemonSet pod templates, whose requests every new node reserves.
    pub daemonsets: Vec<core::Pod>,
    pub pools: Vec<Pool>,
    pub groups: Vec<Group>,
    /// Node → index into `groups`.
    pub node_group: HashMap<NodeId, usize>,
    /// Nodes that must not be removed, with why (annotation, omniscale's leader, already being
    /// deleted).
    pub keep: HashMap<NodeId, String>,
    /// Registered nodes of the cluster (ready or not), for `--max-nodes-total`.
    pub cluster_nodes: u32,
    /// Nodes carrying the soft `DeletionCandidateOfClusterAutoscaler` taint.
    pub soft_tainted: Vec<NodeId>,
    /// Every NotReady node of the cluster (in a group or not), by registration time.
    pub unready_registered: Vec<Option<Timestamp>>,
    /// Objects that could not be read, with why (they are left out, never fatal).
    pub skipped: Vec<String>,
}

/// The Kubernetes objects of one loop.
#[derive(Clone, Copy, Debug)]
pub struct Objects<'a> {
    pub nodes: &'a [core::Node],
    pub pods: &'a [core::Pod],
    pub pdbs: &'a [PodDisruptionBudget],
    pub daemonsets: &'a [DaemonSet],
    pub node_pools: &'a [NodePool],
}

/// Taints the node lifecycle controller (kube-controller-manager) puts on a node that is not
/// Ready, and lifts only on a later pass after the kubelet reports Ready.
const NOT_READY_TAINTS: [&str; 2] = ["node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"];

/// Whether a node is Ready and not being deleted. A node that reports Ready while it still
/// carries a not-ready or unreachable taint is not ready yet, as in Cluster Autoscaler: the
/// scheduler will not use it, and treating it as a full node whose room the pending pods
/// cannot use would buy a second node for them (seen on a real control plane: a new node is
/// Ready seconds before the controller lifts its taint).
pub fn node_ready(n: &core::Node) -> bool {
    n.metadata.deletion_timestamp.is_none()
        && ready_condition(n).is_some_and(|c| c.status == "True")
        && not_ready_taint(n).is_none()
}

fn not_ready_taint(n: &core::Node) -> Option<&core::Taint> {
    n.spec.as_ref()?.taints.iter().flatten().find(|t| NOT_READY_TAINTS.contains(&t.key.as_str()))
}

/// Since when a NotReady node has not been Ready: the Ready condition's last transition, or,
/// when the condition says Ready, the time its not-ready taint was added.
fn unready_since(n: &core::Node) -> Option<Timestamp> {
    match ready_condition(n) {
        Some(c) if c.status == "True" => not_ready_taint(n).and_then(|t| t.time_added.as_ref()).map(|t| t.0),
        c => c.and_then(|c| c.last_transition_time.as_ref()).map(|t| t.0),
    }
}

fn ready_condition(n: &core::Node) -> Option<&core::NodeCondition> {
    n.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == "Ready")
}

/// Whether kube-scheduler gave up on the pod for now.
pub fn unschedulable(p: &core::Pod) -> bool {
    p.metadata.deletion_timestamp.is_none()
        && p.spec.as_ref().is_none_or(|s| s.node_name.as_deref().is_none_or(str::is_empty))
        && p.status.as_ref().is_some_and(|s| {
            s.phase.as_deref().is_none_or(|ph| ph == "Pending")
                && s.conditions.iter().flatten().any(|c| {
                    c.type_ == "PodScheduled" && c.status == "False" && c.reason.as_deref() == Some("Unschedulable")
                })
        })
}

fn owned_by_daemonset(p: &core::Pod) -> bool {
    p.metadata.owner_references.iter().flatten().any(|o| o.controller == Some(true) && o.kind == "DaemonSet")
}

/// The instance id in a `spec.providerID` (`aws:///us-east-1a/i-0123` → `i-0123`).
pub fn instance_id(provider_id: &str) -> Option<&str> {
    provider_id.rsplit('/').next().filter(|s| !s.is_empty())
}

/// Builds the engines' input. `protected` names nodes that must never be removed (the one
/// running omniscale's leader).
pub fn build(objects: Objects<'_>, groups: Vec<NodeGroup>, protected: &[String], region: Option<&str>) -> Input {
    let mut snap = Snapshot::new();
    let mut skipped = Vec::new();
    let mut keep = HashMap::new();
    // Pools in name order: a group two pools select goes to the first (validation flags the
    // conflict on the other).
    let mut pools: Vec<Pool> = objects.node_pools.iter().filter_map(Pool::from_spec).collect();
    pools.sort_by(|a, b| a.name.cmp(&b.name));
    let by_instance: HashMap<&str, usize> =
        groups.iter().enumerate().flat_map(|(gi, g)| g.instances.iter().map(move |i| (i.id.as_str(), gi))).collect();
    let mut node_objects: Vec<(usize, &core::Node)> = Vec::new();
    let mut ready_of: Vec<Vec<(NodeId, String)>> = vec![Vec::new(); groups.len()];
    let mut unready_of: Vec<Vec<UnreadyNode>> = vec![Vec::new(); groups.len()];
    let mut node_group = HashMap::new();
    let mut soft_tainted = Vec::new();
    let mut unready_registered = Vec::new();
    for n in objects.nodes {
        let name = n.metadata.name.clone().unwrap_or_default();
        let provider = n.spec.as_ref().and_then(|s| s.provider_id.as_deref()).and_then(instance_id);
        let gi = provider.and_then(|id| by_instance.get(id).copied());
        if n.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let ready = node_ready(n);
        let registered = n.metadata.creation_timestamp.as_ref().map(|t| t.0);
        if !ready {
            unready_registered.push(registered);
        }
        match snap.add_node_object(n) {
            Ok(id) => {
                if !ready {
                    snap.nodes[id as usize].unschedulable = true;
                }
                if let (Some(gi), Some(inst)) = (gi, provider) {
                    node_group.insert(id, gi);
                    if ready {
                        ready_of[gi].push((id, inst.to_owned()));
                        node_objects.push((gi, n));
                    } else {
                        let since = unready_since(n);
                        unready_of[gi].push(UnreadyNode {
                            node: id,
                            instance: inst.to_owned(),
                            registered,
                            since: since.or(registered),
                        });
                    }
                }
                let ann = n.metadata.annotations.as_ref();
                if ann.and_then(|a| a.get(SCALE_DOWN_DISABLED)).is_some_and(|v| v == "true") {
                    keep.insert(id, format!("node is annotated {SCALE_DOWN_DISABLED}=true"));
                }
                if protected.contains(&name) {
                    keep.insert(id, "node runs omniscale's leader".to_owned());
                }
                let taints = n.spec.as_ref().and_then(|s| s.taints.as_ref());
                if taints.is_some_and(|t| t.iter().any(|t| t.key == crate::TO_BE_DELETED_TAINT)) {
                    keep.insert(id, "node is already being removed".to_owned());
                }
                if taints.is_some_and(|t| t.iter().any(|t| t.key == crate::DELETION_CANDIDATE_TAINT)) {
                    soft_tainted.push(id);
                }
            }
            Err(e) => skipped.push(e.to_string()),
        }
    }
    for pdb in objects.pdbs {
        if let Err(e) = snap.add_pdb(pdb) {
            skipped.push(e.to_string());
        }
    }
    let mut pending = Vec::new();
    for p in objects.pods {
        let bound = p.spec.as_ref().and_then(|s| s.node_name.as_deref()).is_some_and(|n| !n.is_empty());
        let finished = matches!(p.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed"));
        if bound {
            if finished {
                continue;
            }
            let on_node = p.spec.as_ref().and_then(|s| s.node_name.as_deref()).and_then(|n| snap.node_id(n)).is_some();
            if on_node {
                if let Err(e) = snap.add_pod_object(p, None) {
                    skipped.push(e.to_string());
                }
            }
            continue;
        }
        if !unschedulable(p) || owned_by_daemonset(p) {
            continue;
        }
        let priority = p.spec.as_ref().and_then(|s| s.priority).unwrap_or(0);
        if priority < EXPENDABLE_PRIORITY_CUTOFF {
            continue;
        }
        match snap.add_pod_object(p, None) {
            Ok(id) => pending.push(id),
            Err(e) => skipped.push(e.to_string()),
        }
    }
    let daemonsets = objects
        .daemonsets
        .iter()
        .filter_map(|d| {
            let t = &d.spec.as_ref()?.template;
            Some(core::Pod { metadata: t.metadata.clone().unwrap_or_default(), spec: t.spec.clone(), status: None })
        })
        .collect();
    // Groups → pools, templates from live nodes and tags.
    let specs: BTreeMap<&str, &NodePool> =
        objects.node_pools.iter().map(|p| (p.metadata.name.as_deref().unwrap_or(""), p)).collect();
    let mut out_groups = Vec::new();
    let mut index_of = vec![usize::MAX; groups.len()];
    for (gi, g) in groups.into_iter().enumerate() {
        let Some(pool) = pools.iter().position(|p| p.source.selects(&g.name, &g.tags)) else { continue };
        let live: Vec<&core::Node> = node_objects.iter().filter(|(i, _)| *i == gi).map(|(_, n)| *n).collect();
        let pool_template = specs.get(pools[pool].name.as_str()).and_then(|p| p.spec.template.as_ref());
        let template = group_template(&g, &live, pool_template, region, &mut snap.syms);
        index_of[gi] = out_groups.len();
        out_groups.push(Group {
            group: g,
            pool,
            template,
            nodes: std::mem::take(&mut ready_of[gi]),
            unready: std::mem::take(&mut unready_of[gi]),
        });
    }
    let node_group = node_group
        .into_iter()
        .filter_map(|(n, gi)| Some((n, *index_of.get(gi).filter(|i| **i != usize::MAX)?)))
        .collect();
    Input {
        snapshot: snap,
        pending,
        daemonsets,
        pools,
        groups: out_groups,
        node_group,
        keep,
        cluster_nodes: objects.nodes.len() as u32,
        soft_tainted,
        unready_registered,
        skipped,
    }
}
