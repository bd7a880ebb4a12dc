//! Where can these pods go? One fast, pure answer shared by every node engine (Auto Scaling
//! Group scale-up and scale-down, groupless provisioning and consolidation) and by the simulated
//! cluster's scheduler.
//!
//! - [`snapshot`]: a forkable snapshot of nodes and pods built from Kubernetes objects, with
//!   kube-scheduler's filter predicates.
//! - [`pack`]: bin-packing onto existing nodes, then onto new nodes from templates.
//! - [`drain`]: can a node's pods be re-placed elsewhere, for many candidate nodes at once.
//!
//! # Semantics and deviations from kube-scheduler
//! - Filters mirrored: NodeUnschedulable, NodeName, TaintToleration (NoSchedule/NoExecute),
//!   NodeAffinity (nodeSelector and required terms, `matchFields` on `metadata.name`), NodePorts,
//!   NodeResourcesFit (cpu, memory, pods, ephemeral-storage, extended resources; effective
//!   requests with init containers, sidecars and overhead), VolumeZone (zones given per pod by
//!   the caller from its bound volumes), PodTopologySpread (`DoNotSchedule`, any key;
//!   nodeAffinityPolicy Honor and nodeTaintsPolicy Ignore, the defaults; `minDomains`), and
//!   InterPodAffinity (required affinity with the first-pod exception, required anti-affinity,
//!   and existing pods' anti-affinity).
//! - Not mirrored: `matchLabelKeys`, non-default node inclusion policies, `namespaceSelector`
//!   other than empty (all namespaces), volume limits and binding, DRA, preemption. Terminating
//!   pods are left out of inter-pod affinity counts as well as spread counts (upstream leaves
//!   them out of spread only).
//! - In [`pack`], a new node carries only its zone (once decided) and hostname while the plan is
//!   built; spread or (anti-)affinity on other keys that only a template's labels would satisfy
//!   is judged against existing nodes only. Headroom (`Template::max_new`) is reserved per new
//!   node, so it is never exceeded.
//! - Preferences (preferred node affinity, preferred pod (anti-)affinity, `ScheduleAnyway`
//!   spread, PreferNoSchedule taints, and the extra OR-terms of required node affinity) are
//!   ignored by [`Snapshot::check`] (kube-scheduler only scores them) and, in [`pack`], start
//!   required and are relaxed one at a time in Karpenter's order. Relaxation is per pod class:
//!   once a class relaxed, its remaining pods keep the relaxed level.
//! - When new nodes may be created, each new hostname is a domain with no pods (as Karpenter
//!   counts), and zones new nodes could be created in are spread domains before any node exists.

pub mod drain;
pub mod labels;
pub mod model;
pub mod pack;
pub mod snapshot;

pub use drain::{Block, DrainOutcome, drain, drain_lost_first};
pub use model::Resources;
pub use pack::{NewNode, PackOptions, Packing, Template, Unplaced, pack};
pub use snapshot::{BuildError, ClassId, Domains, NodeId, PodId, Reason, Snapshot};
