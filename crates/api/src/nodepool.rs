//! The `NodePool` resource: one per group of interchangeable nodes.
//!
//! A pool is backed either by an existing Auto Scaling Group (found by name or by the Cluster
//! Autoscaler discovery tags, so an existing CA setup carries over unchanged) or by groupless
//! provisioning (instance requirements plus subnet and security-group selectors, as Karpenter's
//! NodePool + EC2NodeClass). Knob names follow Cluster Autoscaler flags (`scaleDown`) and
//! Karpenter's NodePool (`disruption`, `limits`, `weight`).

use std::collections::BTreeMap;

use k8s_openapi::{
    api::core::v1::Taint,
    apimachinery::pkg::{
        api::resource::Quantity,
        apis::meta::v1::{Condition, Time},
    },
};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::schema;

/// A group of interchangeable nodes that omniscale may grow and shrink.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "omniscale.dev",
    version = "v1alpha1",
    kind = "NodePool",
    plural = "nodepools",
    status = "NodePoolStatus",
    shortname = "onp",
    category = "omniscale",
    printcolumn = r#"{"name":"ASG","type":"string","jsonPath":".spec.autoScalingGroup.name"}"#,
    printcolumn = r#"{"name":"Nodes","type":"integer","jsonPath":".status.currentNodes"}"#,
    printcolumn = r#"{"name":"Desired","type":"integer","jsonPath":".status.desiredNodes"}"#,
    printcolumn = r#"{"name":"Max","type":"integer","jsonPath":".spec.limits.nodes"}"#,
    printcolumn = r#"{"name":"Weight","type":"integer","jsonPath":".spec.weight","priority":1}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(validation = Rule::new("has(self.autoScalingGroup) != has(self.provisioner)")
    .message("exactly one of autoScalingGroup and provisioner must be set"))]
#[serde(rename_all = "camelCase")]
pub struct NodePoolSpec {
    /// Back the pool with an existing Auto Scaling Group (Cluster Autoscaler semantics).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_scaling_group: Option<AutoScalingGroupSource>,
    /// Launch instances directly, choosing types from requirements (Karpenter semantics).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioner: Option<ProvisionerSpec>,
    /// What nodes of this pool look like before they exist: used to decide whether pending pods
    /// would fit, including when the pool is at zero.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<NodeTemplate>,
    /// Ceilings on what the pool may hold in total.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Limits>,
    /// Removal of underutilised nodes in Auto Scaling Group pools (Cluster Autoscaler flags).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_down: Option<ScaleDown>,
    /// Consolidation of groupless pools (Karpenter's `disruption`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disruption: Option<Disruption>,
    /// Preference among pools that could all host a pod: higher first (1-100, default 1... as
    /// Karpenter; pools without a weight rank lowest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub weight: Option<i32>,
}

/// Which Auto Scaling Group(s) back the pool.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[x_kube(validation = Rule::new("has(self.name) != has(self.discovery)")
    .message("exactly one of name and discovery must be set"))]
#[serde(rename_all = "camelCase")]
pub struct AutoScalingGroupSource {
    /// The group's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255))]
    pub name: Option<String>,
    /// Find groups by Cluster Autoscaler tags instead of naming one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discovery: Option<AsgDiscovery>,
}

/// Cluster Autoscaler-compatible discovery: groups tagged `k8s.io/cluster-autoscaler/enabled`
/// and `k8s.io/cluster-autoscaler/<clusterName>`, plus any extra tags.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AsgDiscovery {
    /// The cluster name in the `k8s.io/cluster-autoscaler/<clusterName>` tag.
    #[schemars(length(min = 1))]
    pub cluster_name: String,
    /// Further tags every discovered group must carry (value "" matches any value).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
}

/// Groupless provisioning: which instances may be launched and where.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ProvisionerSpec {
    /// Constraints on instance type, family, size, architecture, capacity type and zone, with
    /// Karpenter's keys (`karpenter.k8s.aws/instance-family`, `karpenter.sh/capacity-type`,
    /// `topology.kubernetes.io/zone`, `kubernetes.io/arch`, `node.kubernetes.io/instance-type`…).
    #[serde(default)]
    #[schemars(length(max = 32))]
    pub requirements: Vec<Requirement>,
    /// Subnets to launch into, by tag (e.g. `karpenter.sh/discovery: <cluster>`) or id.
    #[schemars(length(min = 1, max = 16))]
    pub subnet_selector_terms: Vec<SelectorTerm>,
    /// Security groups to attach, by tag or id.
    #[schemars(length(min = 1, max = 16))]
    pub security_group_selector_terms: Vec<SelectorTerm>,
    /// Launch template to launch from (its AMI, user data and instance profile); by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launch_template: Option<String>,
    /// Tags added to every launched instance.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// Replace nodes older than this (Karpenter `expireAfter`, default 720h), or Never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::duration_or_never")]
    pub expire_after: Option<String>,
}

/// A node-selector requirement with Karpenter's `minValues` flexibility floor.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[x_kube(
    validation = Rule::new("!(self.operator in ['In', 'NotIn']) || (has(self.values) && size(self.values) > 0)")
        .message("In and NotIn need at least one value"),
    validation = Rule::new("!(self.operator in ['Exists', 'DoesNotExist']) || !has(self.values) || size(self.values) == 0")
        .message("Exists and DoesNotExist take no values"),
    validation = Rule::new("!(self.operator in ['Gt', 'Lt']) || (has(self.values) && size(self.values) == 1)")
        .message("Gt and Lt take exactly one integer value")
)]
#[serde(rename_all = "camelCase")]
pub struct Requirement {
    /// Label key, e.g. `karpenter.k8s.aws/instance-family`.
    #[schemars(length(min = 1, max = 316))]
    pub key: String,
    /// How the values constrain the label.
    pub operator: RequirementOperator,
    /// Values for In, NotIn (any number), Gt and Lt (one integer); label values, so at most 63
    /// characters each.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), inner(length(max = 63)))]
    pub values: Option<Vec<String>>,
    /// With In: at least this many distinct values must remain possible (Karpenter `minValues`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 50))]
    pub min_values: Option<i32>,
}

/// Node-selector operators.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequirementOperator {
    /// The label's value is one of the values.
    In,
    /// The label's value is none of the values.
    NotIn,
    /// The label is present.
    Exists,
    /// The label is absent.
    DoesNotExist,
    /// The label's integer value is greater.
    Gt,
    /// The label's integer value is less.
    Lt,
}

/// Selects cloud resources by tags (all must match) or by id.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[x_kube(validation = Rule::new("has(self.id) != (has(self.tags) && size(self.tags) > 0)")
    .message("set either id or tags, not both"))]
#[serde(rename_all = "camelCase")]
pub struct SelectorTerm {
    /// Tags the resource must carry; `*` as a value matches any value.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 16))]
    pub tags: BTreeMap<String, String>,
    /// The resource id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

/// What a pool's nodes look like.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct NodeTemplate {
    /// Labels every node of the pool carries.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Taints every node of the pool carries; pods must tolerate them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub taints: Vec<Taint>,
    /// Taints present only while a node starts (removed by an agent); pods need not tolerate them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub startup_taints: Vec<Taint>,
    /// Allocatable resources of a node when none exists to look at (scale from zero), as the
    /// `k8s.io/cluster-autoscaler/node-template/resources/*` tags do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::resource_map")]
    pub resources: Option<BTreeMap<String, Quantity>>,
}

/// Ceilings on the pool's total size.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Limits {
    /// Maximum number of nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub nodes: Option<i32>,
    /// Maximum total cpu capacity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::optional_quantity")]
    pub cpu: Option<Quantity>,
    /// Maximum total memory capacity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::optional_quantity")]
    pub memory: Option<Quantity>,
}

/// Scale-down of Auto Scaling Group pools (Cluster Autoscaler's flags, per pool).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ScaleDown {
    /// Remove unneeded nodes at all (default true).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// A node whose requested cpu and memory are both at or below this fraction of allocatable
    /// is a removal candidate (`--scale-down-utilization-threshold`, default 0.5).
    #[serde(default = "default_utilization_threshold")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub utilization_threshold: f64,
    /// How long a node must be unneeded before removal (`--scale-down-unneeded-time`, default 10m).
    #[serde(default = "default_ten_minutes")]
    #[schemars(schema_with = "schema::duration")]
    pub unneeded_time: String,
    /// No removal for this long after the pool grew (`--scale-down-delay-after-add`, default 10m).
    #[serde(default = "default_ten_minutes")]
    #[schemars(schema_with = "schema::duration")]
    pub delay_after_add: String,
    /// How long a node of the pool may stay NotReady before it is removed as broken
    /// (`--scale-down-unready-time`, default 20m). Nodes still booting are left to the
    /// provisioning timeout instead.
    #[serde(default = "default_twenty_minutes")]
    #[schemars(schema_with = "schema::duration")]
    pub unready_time: String,
}

impl Default for ScaleDown {
    fn default() -> Self {
        ScaleDown {
            enabled: true,
            utilization_threshold: default_utilization_threshold(),
            unneeded_time: default_ten_minutes(),
            delay_after_add: default_ten_minutes(),
            unready_time: default_twenty_minutes(),
        }
    }
}

fn default_true() -> bool {
    true
}
fn default_utilization_threshold() -> f64 {
    0.5
}
fn default_twenty_minutes() -> String {
    "20m".into()
}

fn default_ten_minutes() -> String {
    "10m".into()
}

/// Consolidation of groupless pools (Karpenter's `disruption`).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Disruption {
    /// WhenEmpty removes only empty nodes; WhenEmptyOrUnderutilized (default) also replaces or
    /// removes nodes whose pods fit elsewhere more cheaply.
    #[serde(default)]
    pub consolidation_policy: ConsolidationPolicy,
    /// How long a node must stay a candidate before it is consolidated (default 0s), or Never.
    #[serde(default = "default_zero_seconds")]
    #[schemars(schema_with = "schema::duration_or_never")]
    pub consolidate_after: String,
    /// How many nodes may be disrupted at once (default one budget of 10%).
    #[serde(default = "default_budgets")]
    #[schemars(length(max = 50))]
    pub budgets: Vec<Budget>,
}

impl Default for Disruption {
    fn default() -> Self {
        Disruption {
            consolidation_policy: ConsolidationPolicy::default(),
            consolidate_after: default_zero_seconds(),
            budgets: default_budgets(),
        }
    }
}

fn default_zero_seconds() -> String {
    "0s".into()
}
fn default_budgets() -> Vec<Budget> {
    vec![Budget { nodes: "10%".into(), reasons: None, schedule: None, duration: None }]
}

/// Which nodes consolidation may touch.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ConsolidationPolicy {
    /// Only empty nodes.
    WhenEmpty,
    /// Empty and underutilised nodes.
    #[default]
    WhenEmptyOrUnderutilized,
}

/// A disruption budget (Karpenter semantics).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[x_kube(validation = Rule::new("has(self.schedule) == has(self.duration)")
    .message("schedule and duration go together"))]
#[serde(rename_all = "camelCase")]
pub struct Budget {
    /// At most this many nodes (`5`) or this share of the pool (`10%`) disrupted at once.
    #[schemars(regex(pattern = r"^((100|[0-9]{1,2})%|[0-9]+)$"))]
    pub nodes: String,
    /// Reasons the budget applies to; all when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasons: Option<Vec<DisruptionReason>>,
    /// Cron schedule (UTC) when the budget is active; always when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// How long the budget stays active after each scheduled start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::duration")]
    pub duration: Option<String>,
}

/// Why a node is being disrupted.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum DisruptionReason {
    /// The node has no pods to move.
    Empty,
    /// The node's pods fit elsewhere more cheaply.
    Underutilized,
    /// The node no longer matches its pool.
    Drifted,
}

/// Observed state of a NodePool.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct NodePoolStatus {
    /// The generation of the spec the status reflects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready` says whether the pool is usable as written; the node engines add their own.
    #[serde(default)]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// Nodes the pool should have.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_nodes: Option<i32>,
    /// Nodes the pool has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_nodes: Option<i32>,
    /// When the pool last grew.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_up_time: Option<Time>,
    /// When the pool last shrank.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_down_time: Option<Time>,
}
