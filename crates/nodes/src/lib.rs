//! Node engines for Auto Scaling Group pools, with Cluster Autoscaler's semantics.
//!
//! Data path: the shell gathers Nodes, Pods, PDBs, DaemonSets, NodePools and the cloud's groups
//! → [`input::build`] (snapshot, pending pods, group templates) → [`decide::decide`] (in-flight
//! checks, [`scaleup`], [`scaledown`]) → a [`decide::Plan`] the shell carries out.
//!
//! - [`provider`]: the port to the cloud — what a node group looks like to the engines, and the
//!   three calls the shell makes (describe, set desired capacity, terminate with decrement).
//!   `omniscale-aws` implements it on the AWS SDK; the simulated cluster implements it in memory.
//! - [`template`]: what a group's next node looks like (every instance type of a mixed policy,
//!   EKS reservations, scale-from-zero tags).
//! - [`expander`], [`prices`]: choosing among groups.
//! - [`history`]: what is remembered between loops (unneeded timers, scale-ups in flight,
//!   backoff).
//!
//! Everything except the provider trait is pure: the engines take the input, the history and
//! `now`, and return a plan.

pub mod decide;
pub mod expander;
pub mod history;
pub mod input;
pub mod prices;
pub mod provider;
pub mod scaledown;
pub mod scaleup;
pub mod template;

pub use decide::{Plan, decide};
pub use provider::{CloudProvider, GroupSource, Instance, InstanceState, InstanceTypeInfo, NodeGroup, ProviderError};

/// The taint put on a node before it is drained and removed (Cluster Autoscaler's key, so tools
/// that know it — and kube-scheduler through it — treat the node as leaving).
pub const TO_BE_DELETED_TAINT: &str = "ToBeDeletedByClusterAutoscaler";
/// The soft taint on unneeded nodes, steering new pods elsewhere.
pub const DELETION_CANDIDATE_TAINT: &str = "DeletionCandidateOfClusterAutoscaler";
