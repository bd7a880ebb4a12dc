//! The `Autoscaler` resource: one per workload, horizontal and/or vertical intent.
//!
//! Field names and defaults mirror `autoscaling/v2` HorizontalPodAutoscalerSpec and the VPA
//! `autoscaling.k8s.io/v1` spec, so an HPA or VPA user can move a manifest over by copying
//! blocks. The horizontal block reuses k8s-openapi's own `MetricSpec` and behavior types, so the
//! schema (and `kubectl explain`) is upstream's, field for field.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::autoscaling::v2::{HorizontalPodAutoscalerBehavior, MetricSpec, MetricStatus},
    apimachinery::pkg::{
        api::resource::Quantity,
        apis::meta::v1::{Condition, Time},
    },
};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::schema;

/// Desired autoscaling of one workload.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "omniscale.dev",
    version = "v1alpha1",
    kind = "Autoscaler",
    plural = "autoscalers",
    namespaced,
    status = "AutoscalerStatus",
    shortname = "osa",
    category = "omniscale",
    printcolumn = r#"{"name":"Target","type":"string","jsonPath":".spec.targetRef.name"}"#,
    printcolumn = r#"{"name":"Kind","type":"string","jsonPath":".spec.targetRef.kind","priority":1}"#,
    printcolumn = r#"{"name":"Mode","type":"string","jsonPath":".spec.mode"}"#,
    printcolumn = r#"{"name":"Min","type":"integer","jsonPath":".spec.horizontal.minReplicas"}"#,
    printcolumn = r#"{"name":"Max","type":"integer","jsonPath":".spec.horizontal.maxReplicas"}"#,
    printcolumn = r#"{"name":"Replicas","type":"integer","jsonPath":".status.horizontal.currentReplicas"}"#,
    printcolumn = r#"{"name":"Desired","type":"integer","jsonPath":".status.horizontal.desiredReplicas"}"#,
    printcolumn = r#"{"name":"CPU","type":"string","jsonPath":".status.vertical.recommendation.containerRecommendations[0].target.cpu"}"#,
    printcolumn = r#"{"name":"Memory","type":"string","jsonPath":".status.vertical.recommendation.containerRecommendations[0].target.memory"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(validation = "has(self.horizontal) || has(self.vertical)")]
#[serde(rename_all = "camelCase")]
pub struct AutoscalerSpec {
    /// The workload to scale. Horizontal scaling needs a kind with a `scale` subresource
    /// (Deployment, StatefulSet, ReplicaSet, or a custom resource that declares one).
    pub target_ref: TargetRef,
    /// Auto acts on decisions; Recommend computes and publishes them in status without changing
    /// anything (like VPA `updateMode: Off`); Off does neither.
    #[serde(default)]
    pub mode: Mode,
    /// Replica-count scaling, with the same fields and defaults as autoscaling/v2
    /// HorizontalPodAutoscalerSpec (minus scaleTargetRef, which is `targetRef` here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub horizontal: Option<HorizontalSpec>,
    /// Request/limit scaling, with the same fields and defaults as the VPA spec's `updatePolicy`
    /// and `resourcePolicy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vertical: Option<VerticalSpec>,
}

/// Reference to the scaled workload, in the same namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct TargetRef {
    /// API version of the target, e.g. `apps/v1`.
    #[schemars(length(min = 1))]
    pub api_version: String,
    /// Kind of the target, e.g. `Deployment`.
    #[schemars(length(min = 1))]
    pub kind: String,
    /// Name of the target.
    #[schemars(length(min = 1))]
    pub name: String,
}

/// What an Autoscaler may do.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Mode {
    /// Compute decisions and act on them.
    #[default]
    Auto,
    /// Compute and publish decisions in status, Events and metrics; never change the workload.
    Recommend,
    /// Do nothing.
    Off,
}

fn default_min_replicas() -> Option<i32> {
    Some(1)
}

/// Horizontal scaling, as autoscaling/v2 HorizontalPodAutoscalerSpec.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(
    validation = Rule::new("!has(self.minReplicas) || self.minReplicas <= self.maxReplicas")
        .message("minReplicas must not exceed maxReplicas"),
    validation = Rule::new("!has(self.minReplicas) || self.minReplicas != 0 || (has(self.metrics) && self.metrics.exists(m, m.type == 'Object' || m.type == 'External'))")
        .message("minReplicas 0 needs at least one Object or External metric (as upstream HPAScaleToZero)")
)]
#[serde(rename_all = "camelCase")]
pub struct HorizontalSpec {
    /// Lower limit for the number of replicas. Defaults to 1; 0 is allowed when at least one
    /// Object or External metric is configured.
    #[serde(default = "default_min_replicas", skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub min_replicas: Option<i32>,
    /// Upper limit for the number of replicas. Must be at least 1 and at least minReplicas.
    #[schemars(range(min = 1))]
    pub max_replicas: i32,
    /// Metrics used to compute the desired replica count; the largest proposal wins. Defaults to
    /// 80% average cpu utilization when empty, as upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 16))]
    #[x_kube(validation = Rule::new("self.all(m, m.type in ['Resource', 'ContainerResource', 'Pods', 'Object', 'External'])")
        .message("metric type must be one of Resource, ContainerResource, Pods, Object, External"))]
    pub metrics: Option<Vec<MetricSpec>>,
    /// Scale-up and scale-down behavior (stabilization windows, policies), as autoscaling/v2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub behavior: Option<HorizontalPodAutoscalerBehavior>,
    /// How long after a pod starts its cpu samples are treated with suspicion (upstream's
    /// cluster-wide `--horizontal-pod-autoscaler-cpu-initialization-period`, 5m). Per Autoscaler here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::duration")]
    pub cpu_initialization_period: Option<String>,
    /// How long after start a pod that has not become ready counts as not yet ready (upstream's
    /// cluster-wide `--horizontal-pod-autoscaler-initial-readiness-delay`, 30s). Per Autoscaler here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::duration")]
    pub initial_readiness_delay: Option<String>,
}

impl HorizontalSpec {
    /// minReplicas with its default applied.
    pub fn min_replicas(&self) -> i32 {
        self.min_replicas.unwrap_or(1)
    }
}

/// Vertical scaling, as the VPA spec.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct VerticalSpec {
    /// When and how recommendations are applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_policy: Option<UpdatePolicy>,
    /// Per-container bounds and controlled resources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_policy: Option<ResourcePolicy>,
    /// Who controls a resource that `horizontal` also scales on (a Resource or ContainerResource
    /// metric): Horizontal (default) leaves it to the replica count, so the two never chase
    /// each other; Vertical lets the vertical side resize it anyway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared_resource_owner: Option<ResourceOwner>,
}

/// Which side controls a resource both could act on.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ResourceOwner {
    /// The replica count absorbs changes in usage of this resource.
    #[default]
    Horizontal,
    /// Requests of this resource follow usage.
    Vertical,
}

/// When and how recommendations are applied (VPA `updatePolicy`).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct UpdatePolicy {
    /// Off: recommend only. Initial: set requests at pod creation only. Recreate: evict pods to
    /// apply. InPlaceOrRecreate (default): resize in place, evict when that is infeasible.
    /// InPlace: resize in place only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_mode: Option<UpdateMode>,
    /// Minimum live replicas before the updater may evict (upstream flag default 2). A
    /// single-replica workload may still be resized in place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub min_replicas: Option<i32>,
}

/// VPA update modes.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum UpdateMode {
    /// Recommend only.
    Off,
    /// Apply at pod creation only.
    Initial,
    /// Evict pods whose requests are off.
    Recreate,
    /// Resize in place, evict when in-place is infeasible.
    #[default]
    InPlaceOrRecreate,
    /// Resize in place only.
    InPlace,
}

/// Per-container policies (VPA `resourcePolicy`).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ResourcePolicy {
    /// Policies by container name; `*` applies to containers without their own entry.
    #[serde(default)]
    #[schemars(length(max = 32))]
    pub container_policies: Vec<ContainerPolicy>,
}

/// Bounds and controlled resources for one container (VPA `ContainerResourcePolicy`).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new(
    "!has(self.minAllowed) || !has(self.maxAllowed) || self.minAllowed.all(r, !(r in self.maxAllowed) || quantity(string(self.minAllowed[r])).compareTo(quantity(string(self.maxAllowed[r]))) <= 0)"
).message("minAllowed must not exceed maxAllowed for any resource"))]
#[serde(rename_all = "camelCase")]
pub struct ContainerPolicy {
    /// Container name, or `*` for every container without its own policy.
    #[serde(default = "default_container_name")]
    #[schemars(length(min = 1))]
    pub container_name: String,
    /// Auto (default) or Off to leave this container alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<ContainerMode>,
    /// Lower bound for recommended requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::resource_map")]
    pub min_allowed: Option<BTreeMap<String, Quantity>>,
    /// Upper bound for recommended requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::resource_map")]
    pub max_allowed: Option<BTreeMap<String, Quantity>>,
    /// Resources to recommend for; defaults to cpu and memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2))]
    pub controlled_resources: Option<Vec<ControlledResource>>,
    /// RequestsAndLimits (default) scales limits proportionally; RequestsOnly leaves them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controlled_values: Option<ControlledValues>,
}

fn default_container_name() -> String {
    "*".to_string()
}

/// Whether a container is scaled.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ContainerMode {
    /// Scale this container.
    #[default]
    Auto,
    /// Leave this container alone.
    Off,
}

/// Resources the vertical side can control.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum ControlledResource {
    /// CPU.
    Cpu,
    /// Memory.
    Memory,
}

/// Which values the vertical side changes.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ControlledValues {
    /// Requests, with limits scaled proportionally.
    #[default]
    RequestsAndLimits,
    /// Requests only.
    RequestsOnly,
}

/// Observed state of an Autoscaler.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct AutoscalerStatus {
    /// The generation of the spec the status reflects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready` says whether the spec is usable (target found, scalable, consistent); the
    /// horizontal and vertical engines add their own conditions.
    #[serde(default)]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// Results of the horizontal engine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub horizontal: Option<HorizontalStatus>,
    /// Results of the vertical engine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vertical: Option<VerticalStatus>,
}

/// Horizontal results, as autoscaling/v2 HorizontalPodAutoscalerStatus.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct HorizontalStatus {
    /// Replicas of the target as last seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_replicas: Option<i32>,
    /// Replicas last decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_replicas: Option<i32>,
    /// When the replica count was last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_time: Option<Time>,
    /// Last read value of each metric.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_metrics: Option<Vec<MetricStatus>>,
    /// Why the last decision is what it is: one line per metric (measured value, ratio, pods
    /// left out and why), then what stabilisation and limits did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    pub explanation: Option<Vec<String>>,
    /// What the stabilisation windows and rate limits remember. Upstream keeps this in the
    /// controller's memory and forgets it on restart; here it survives restarts and leader
    /// changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history: Option<HorizontalHistory>,
}

/// Recent recommendations and rescales of the horizontal engine.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct HorizontalHistory {
    /// Recent proposals (for stabilisation windows), without those a later proposal makes
    /// irrelevant: at most one per sync period of the longest window (1 h).
    #[serde(default)]
    #[schemars(length(max = 256))]
    pub recommendations: Vec<TimedCount>,
    /// Recent scale-ups, by how many replicas (for scale-up policies).
    #[serde(default)]
    #[schemars(length(max = 128))]
    pub scale_up_events: Vec<TimedCount>,
    /// Recent scale-downs, by how many replicas (for scale-down policies).
    #[serde(default)]
    #[schemars(length(max = 128))]
    pub scale_down_events: Vec<TimedCount>,
}

/// A replica count (or change) at a time.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TimedCount {
    /// When.
    pub time: Time,
    /// How many replicas.
    pub replicas: i32,
}

/// Vertical results, as the VPA status.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct VerticalStatus {
    /// The latest recommendation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recommendation: Option<Recommendation>,
    /// Which side controls each resource the vertical policy names (cpu, memory): a resource
    /// the horizontal side scales on is left to it unless `sharedResourceOwner` says otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_owners: Option<BTreeMap<String, ResourceOwner>>,
    /// Why the recommendation is what it is, one line per container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub explanation: Option<Vec<String>>,
    /// The recommender's usage histograms, one per container name, so a restart or a new
    /// leader resumes from the same history (upstream keeps these in
    /// VerticalPodAutoscalerCheckpoint objects).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub checkpoints: Option<Vec<ContainerCheckpoint>>,
}

/// Saved recommender state of one container name (upstream's checkpoint status, version v3).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ContainerCheckpoint {
    /// Container name.
    pub container_name: String,
    /// Checkpoint format; a checkpoint of another version is ignored.
    pub version: String,
    /// When this was saved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_update_time: Option<Time>,
    /// Start of the first cpu sample (confidence grows with the time covered).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_sample_start: Option<Time>,
    /// Start of the last cpu sample.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sample_start: Option<Time>,
    /// Number of cpu samples seen.
    #[serde(default)]
    pub total_samples_count: i64,
    /// Decaying cpu usage histogram.
    #[serde(default)]
    pub cpu_histogram: HistogramCheckpoint,
    /// Decaying histogram of memory peaks.
    #[serde(default)]
    pub memory_histogram: HistogramCheckpoint,
}

/// A saved histogram: weights relative to the heaviest bucket (10000).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct HistogramCheckpoint {
    /// The time the weights are relative to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference_timestamp: Option<Time>,
    /// Sum of the weights before scaling.
    #[serde(default)]
    pub total_weight: f64,
    /// Scaled weight by bucket number.
    #[serde(default)]
    #[schemars(schema_with = "schema::bucket_weights")]
    pub bucket_weights: BTreeMap<String, u32>,
}

/// Recommended requests per container.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Recommendation {
    /// One entry per container.
    #[serde(default)]
    pub container_recommendations: Vec<ContainerRecommendation>,
}

/// Recommendation for one container, as VPA `RecommendedContainerResources`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ContainerRecommendation {
    /// Container name.
    pub container_name: String,
    /// Recommended requests, capped by policy.
    #[serde(default)]
    pub target: BTreeMap<String, Quantity>,
    /// Minimum requests before the updater considers the pod under-provisioned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lower_bound: Option<BTreeMap<String, Quantity>>,
    /// Maximum requests before the updater considers the pod over-provisioned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upper_bound: Option<BTreeMap<String, Quantity>>,
    /// Target before policy caps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uncapped_target: Option<BTreeMap<String, Quantity>>,
}
