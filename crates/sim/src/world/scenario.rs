//! The simulation scenario file: what cloud and nodes exist, what load hits which workload,
//! and what happens when. Parsing is strict (unknown fields are errors, with line numbers) and
//! validation reports every problem at once, each with the path of the offending field.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::cloud::{AutoScalingGroupSpec, CapacityLimit, Cloud, CloudConfig, CloudError, SecurityGroup, Subnet, Tags};
use super::common::{SimTime, parse_bytes, parse_cpu_millis};
use super::instance_types::{self, NodeResources};
use super::load::{ContainerUsage, WorkloadLoad};

fn default_duration() -> f64 {
    600.0
}
fn default_speed() -> f64 {
    10.0
}
fn default_sample_every() -> f64 {
    15.0
}
fn default_region() -> String {
    "us-east-1".to_string()
}
fn default_zones() -> Vec<String> {
    CloudConfig::default().zones
}
fn default_boot_delay() -> f64 {
    45.0
}
fn default_termination_delay() -> f64 {
    30.0
}
fn default_launch_retry() -> f64 {
    30.0
}
fn default_namespace() -> String {
    "default".to_string()
}
fn default_count() -> u32 {
    1
}
fn default_on_demand_percentage() -> u32 {
    100
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Simulated seconds to run.
    #[serde(default = "default_duration")]
    pub duration: f64,
    /// Simulated seconds per wall-clock second when run live.
    #[serde(default = "default_speed")]
    pub speed: f64,
    /// Seconds between timeline samples.
    #[serde(default = "default_sample_every")]
    pub sample_every: f64,
    #[serde(default)]
    pub cloud: Option<CloudSpec>,
    #[serde(default)]
    pub nodes: Vec<StaticNodes>,
    #[serde(default)]
    pub workloads: Vec<WorkloadSpec>,
    /// Series the simulated external metrics API serves (what KEDA or a Prometheus adapter
    /// would: a queue's depth, say).
    #[serde(default)]
    pub external_metrics: Vec<ExternalMetricSpec>,
    #[serde(default)]
    pub actions: Vec<TimedAction>,
}

/// One series of an external metric, its value following a rate model over time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExternalMetricSpec {
    #[serde(default = "default_namespace")]
    pub namespace: String,
    pub name: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(with = "serde_yaml::with::singleton_map")]
    pub value: super::load::RequestRate,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CloudSpec {
    #[serde(default = "default_region")]
    pub region: String,
    #[serde(default = "default_zones")]
    pub zones: Vec<String>,
    #[serde(default = "default_boot_delay")]
    pub boot_delay_seconds: f64,
    #[serde(default = "default_termination_delay")]
    pub termination_delay_seconds: f64,
    #[serde(default = "default_launch_retry")]
    pub launch_retry_seconds: f64,
    /// Account-wide ceiling on live instances.
    #[serde(default)]
    pub max_instances: Option<u32>,
    #[serde(default)]
    pub subnets: Vec<Subnet>,
    #[serde(default)]
    pub security_groups: Vec<SecurityGroup>,
    #[serde(default)]
    pub launch_templates: Vec<LaunchTemplateSpec>,
    #[serde(default)]
    pub auto_scaling_groups: Vec<AsgSpec>,
    /// Pools with limited capacity, to exercise InsufficientInstanceCapacity handling.
    #[serde(default)]
    pub capacity_limits: Vec<CapacityLimit>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LaunchTemplateSpec {
    pub name: String,
    #[serde(default)]
    pub instance_type: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaintEffect {
    NoSchedule,
    PreferNoSchedule,
    NoExecute,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Taint {
    pub key: String,
    #[serde(default)]
    pub value: String,
    pub effect: TaintEffect,
}

/// An Auto Scaling Group plus the labels and taints its nodes register with (what the
/// launch template's user data would set in a real cluster).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AsgSpec {
    pub name: String,
    pub min_size: u32,
    pub max_size: u32,
    /// Defaults to `minSize`.
    #[serde(default)]
    pub desired_capacity: Option<u32>,
    pub instance_types: Vec<String>,
    #[serde(default)]
    pub on_demand_base_capacity: u32,
    #[serde(default = "default_on_demand_percentage")]
    pub on_demand_percentage_above_base_capacity: u32,
    /// Defaults to the zones of `subnets`, else every zone of the cloud.
    #[serde(default)]
    pub zones: Vec<String>,
    /// Subnet ids from `cloud.subnets`.
    #[serde(default)]
    pub subnets: Vec<String>,
    #[serde(default)]
    pub tags: Tags,
    #[serde(default)]
    pub launch_template: Option<String>,
    #[serde(default)]
    pub node_labels: BTreeMap<String, String>,
    #[serde(default)]
    pub node_taints: Vec<Taint>,
}

impl AsgSpec {
    pub fn to_cloud_spec(&self) -> AutoScalingGroupSpec {
        AutoScalingGroupSpec {
            name: self.name.clone(),
            min_size: self.min_size,
            max_size: self.max_size,
            desired_capacity: self.desired_capacity,
            instance_types: self.instance_types.clone(),
            on_demand_base_capacity: self.on_demand_base_capacity,
            on_demand_percentage_above_base_capacity: self.on_demand_percentage_above_base_capacity,
            zones: self.zones.clone(),
            subnet_ids: self.subnets.clone(),
            tags: self.tags.clone(),
            launch_template_name: self.launch_template.clone(),
        }
    }
}

/// Nodes that exist from t = 0 and are not backed by the cloud (a control-plane-ish or
/// kind-like node pool that autoscalers can't remove).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StaticNodes {
    pub name_prefix: String,
    #[serde(default = "default_count")]
    pub count: u32,
    /// Capacity and allocatable from the instance type table.
    #[serde(default)]
    pub instance_type: Option<String>,
    /// Kubernetes quantity; overrides the instance type's CPU.
    #[serde(default)]
    pub cpu: Option<String>,
    /// Kubernetes quantity; overrides the instance type's memory.
    #[serde(default)]
    pub memory: Option<String>,
    /// Defaults to the instance type's max pods, else 110 (the kubelet default).
    #[serde(default)]
    pub pods: Option<u32>,
    #[serde(default)]
    pub zone: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub taints: Vec<Taint>,
}

/// Both views of a static node: what kubelet reports as capacity and what it offers to pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StaticNodeResources {
    pub capacity: NodeResources,
    pub allocatable: NodeResources,
}

fn round_u64(x: f64) -> u64 {
    if x.is_finite() && x > 0.0 { x.round() as u64 } else { 0 }
}

impl StaticNodes {
    /// `count` identical nodes of an instance type, named `<prefix>-<i>`.
    pub fn of_type(prefix: &str, count: u32, instance_type: &str) -> Self {
        Self {
            name_prefix: prefix.to_owned(),
            count,
            instance_type: Some(instance_type.to_owned()),
            cpu: None,
            memory: None,
            pods: None,
            zone: None,
            labels: BTreeMap::new(),
            taints: vec![],
        }
    }

    /// The name of the `index`-th node of this group.
    pub fn node_name(&self, index: u32) -> String {
        format!("{}-{index}", self.name_prefix)
    }

    /// With an instance type, allocatable follows the EKS reservation formula; explicit
    /// `cpu`/`memory` are taken as both capacity and allocatable (nothing reserved).
    pub fn resources(&self) -> Result<StaticNodeResources, String> {
        let base = match &self.instance_type {
            Some(name) => {
                let ty = instance_types::find(name).ok_or_else(|| format!("unknown instance type {name:?}"))?;
                Some((ty.capacity(), ty.allocatable()))
            }
            None => None,
        };
        let cpu = self.cpu.as_deref().map(parse_cpu_millis).transpose().map_err(|e| format!("cpu: {e}"))?;
        let memory = self.memory.as_deref().map(parse_bytes).transpose().map_err(|e| format!("memory: {e}"))?;
        let (mut capacity, mut allocatable) = match base {
            Some(b) => b,
            None => {
                if cpu.is_none() || memory.is_none() {
                    return Err("needs either instanceType or both cpu and memory".to_string());
                }
                let empty = NodeResources { cpu_millis: 0, memory_bytes: 0, pods: 110 };
                (empty, empty)
            }
        };
        if let Some(c) = cpu {
            capacity.cpu_millis = round_u64(c);
            allocatable.cpu_millis = round_u64(c);
        }
        if let Some(m) = memory {
            capacity.memory_bytes = round_u64(m);
            allocatable.memory_bytes = round_u64(m);
        }
        if let Some(p) = self.pods {
            capacity.pods = p;
            allocatable.pods = p;
        }
        if allocatable.cpu_millis == 0 || allocatable.memory_bytes == 0 || allocatable.pods == 0 {
            return Err("cpu, memory and pods must be greater than zero".to_string());
        }
        Ok(StaticNodeResources { capacity, allocatable })
    }
}

/// Load attached to a Deployment from the scenario's manifests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadSpec {
    #[serde(default = "default_namespace")]
    pub namespace: String,
    pub name: String,
    #[serde(default)]
    pub load: Option<WorkloadLoad>,
    /// Fixed usage per container name, for workloads whose demand doesn't follow traffic.
    #[serde(default)]
    pub containers: BTreeMap<String, ContainerUsage>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ObjectRef {
    pub kind: String,
    #[serde(default = "default_namespace")]
    pub namespace: String,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScaleAction {
    pub kind: String,
    #[serde(default = "default_namespace")]
    pub namespace: String,
    pub name: String,
    pub replicas: u32,
}

/// Something done to the cluster at a given time; exactly one action field must be set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TimedAction {
    pub at: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete: Option<ObjectRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale: Option<ScaleAction>,
}

/// The action of a [`TimedAction`], once validation has ensured there is exactly one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action<'a> {
    Delete(&'a ObjectRef),
    Scale(&'a ScaleAction),
}

impl TimedAction {
    pub fn action(&self) -> Option<Action<'_>> {
        match (&self.delete, &self.scale) {
            (Some(d), None) => Some(Action::Delete(d)),
            (None, Some(s)) => Some(Action::Scale(s)),
            _ => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// Syntax or schema errors; serde_yaml's message carries the field path and line/column.
    #[error("invalid scenario YAML: {0}")]
    Parse(#[from] serde_yaml::Error),
    /// Every semantic problem found, each prefixed with the path of the field.
    #[error("invalid scenario: {}", .0.join("; "))]
    Invalid(Vec<String>),
    #[error("cloud setup failed: {0}")]
    Cloud(#[from] CloudError),
}

fn check_finite(issues: &mut Vec<String>, path: &str, v: f64, min_exclusive: Option<f64>) {
    if !v.is_finite() || v < 0.0 {
        issues.push(format!("{path}: must be a finite number >= 0, got {v}"));
    } else if let Some(min) = min_exclusive {
        if v <= min {
            issues.push(format!("{path}: must be greater than {min}, got {v}"));
        }
    }
}

fn check_taints(issues: &mut Vec<String>, path: &str, taints: &[Taint]) {
    for (i, t) in taints.iter().enumerate() {
        if t.key.is_empty() {
            issues.push(format!("{path}[{i}].key: must not be empty"));
        }
    }
}

impl Scenario {
    /// Parses and validates.
    pub fn from_yaml(yaml: &str) -> Result<Scenario, ScenarioError> {
        let scenario: Scenario = serde_yaml::from_str(yaml)?;
        let issues = scenario.validate();
        if issues.is_empty() { Ok(scenario) } else { Err(ScenarioError::Invalid(issues)) }
    }

    /// Every semantic problem, each naming the field path (e.g.
    /// `cloud.autoScalingGroups[0] (spot-ng).desiredCapacity: ...`). Empty when valid.
    pub fn validate(&self) -> Vec<String> {
        let mut issues = Vec::new();
        if self.name.trim().is_empty() {
            issues.push("name: must not be empty".to_string());
        }
        check_finite(&mut issues, "duration", self.duration, Some(0.0));
        check_finite(&mut issues, "speed", self.speed, Some(0.0));
        check_finite(&mut issues, "sampleEvery", self.sample_every, Some(0.0));
        let zones: Vec<String> = self.cloud.as_ref().map(|c| c.zones.clone()).unwrap_or_default();
        if let Some(cloud) = &self.cloud {
            validate_cloud(cloud, &mut issues);
        }

        let mut prefixes = BTreeSet::new();
        for (i, n) in self.nodes.iter().enumerate() {
            let path = format!("nodes[{i}] ({})", n.name_prefix);
            if n.name_prefix.is_empty() {
                issues.push(format!("nodes[{i}].namePrefix: must not be empty"));
            } else if !prefixes.insert(n.name_prefix.as_str()) {
                issues.push(format!("{path}.namePrefix: duplicate name prefix {:?}", n.name_prefix));
            }
            if let Err(e) = n.resources() {
                issues.push(format!("{path}: {e}"));
            }
            if let Some(z) = &n.zone {
                if !zones.is_empty() && !zones.contains(z) {
                    issues.push(format!("{path}.zone: {z:?} is not one of cloud.zones {zones:?}"));
                }
            }
            check_taints(&mut issues, &format!("{path}.taints"), &n.taints);
        }

        for (i, m) in self.external_metrics.iter().enumerate() {
            if m.name.is_empty() {
                issues.push(format!("externalMetrics[{i}].name: must not be empty"));
            }
            for p in m.value.problems() {
                issues.push(format!("externalMetrics[{i}].value.{p}"));
            }
        }
        let mut workloads = BTreeSet::new();
        for (i, w) in self.workloads.iter().enumerate() {
            let path = format!("workloads[{i}] ({}/{})", w.namespace, w.name);
            if w.name.is_empty() {
                issues.push(format!("workloads[{i}].name: must not be empty"));
            }
            if !workloads.insert((w.namespace.as_str(), w.name.as_str())) {
                issues.push(format!("{path}: duplicate workload {}/{}", w.namespace, w.name));
            }
            if w.load.is_none() && w.containers.is_empty() {
                issues.push(format!("{path}: needs `load`, `containers` or both"));
            }
            if let Some(load) = &w.load {
                for p in load.rate.problems() {
                    issues.push(format!("{path}.load.rate.{p}"));
                }
                check_finite(
                    &mut issues,
                    &format!("{path}.load.cpuPerRequestMillis"),
                    load.cpu_per_request_millis,
                    None,
                );
                check_finite(&mut issues, &format!("{path}.load.memoryBaseMiB"), load.memory_base_mib, None);
                check_finite(
                    &mut issues,
                    &format!("{path}.load.memoryPerRequestMiB"),
                    load.memory_per_request_mib,
                    None,
                );
            }
            for (name, c) in &w.containers {
                let cpath = format!("{path}.containers.{name}");
                check_finite(&mut issues, &format!("{cpath}.cpuMillis"), c.cpu_millis, None);
                check_finite(&mut issues, &format!("{cpath}.memoryMiB"), c.memory_mib, None);
                if !(0.0..=1.0).contains(&c.jitter) {
                    issues.push(format!("{cpath}.jitter: must be between 0 and 1, got {}", c.jitter));
                }
            }
        }

        for (i, a) in self.actions.iter().enumerate() {
            let path = format!("actions[{i}]");
            check_finite(&mut issues, &format!("{path}.at"), a.at, None);
            if a.at.is_finite() && self.duration.is_finite() && a.at > self.duration {
                issues.push(format!("{path}.at: {} is after the scenario ends (duration {})", a.at, self.duration));
            }
            let (kind, name) = match a.action() {
                Some(Action::Delete(d)) => (&d.kind, &d.name),
                Some(Action::Scale(s)) => (&s.kind, &s.name),
                None => {
                    issues.push(format!("{path}: exactly one of `delete` or `scale` must be set"));
                    continue;
                }
            };
            if kind.is_empty() {
                issues.push(format!("{path}: kind must not be empty"));
            }
            if name.is_empty() {
                issues.push(format!("{path}: name must not be empty"));
            }
        }
        issues
    }

    /// Actions in the order they happen; equal times keep file order.
    pub fn sorted_actions(&self) -> Vec<&TimedAction> {
        let mut v: Vec<&TimedAction> = self.actions.iter().collect();
        v.sort_by(|a, b| a.at.total_cmp(&b.at));
        v
    }

    pub fn asg(&self, name: &str) -> Option<&AsgSpec> {
        self.cloud.as_ref()?.auto_scaling_groups.iter().find(|g| g.name == name)
    }

    pub fn workload(&self, namespace: &str, name: &str) -> Option<&WorkloadSpec> {
        self.workloads.iter().find(|w| w.namespace == namespace && w.name == name)
    }

    /// The cloud described by the `cloud` section at time `t` (ASGs created, no instances yet:
    /// the first [`Cloud::tick`] launches them). `None` when the scenario has no cloud.
    pub fn build_cloud(&self, t: SimTime) -> Result<Option<Cloud>, ScenarioError> {
        let Some(spec) = &self.cloud else { return Ok(None) };
        let config = CloudConfig {
            region: spec.region.clone(),
            zones: spec.zones.clone(),
            boot_delay_seconds: spec.boot_delay_seconds,
            termination_delay_seconds: spec.termination_delay_seconds,
            launch_retry_seconds: spec.launch_retry_seconds,
            capacity_limits: spec.capacity_limits.clone(),
            max_instances: spec.max_instances,
        };
        let mut cloud = Cloud::new(config);
        for s in &spec.subnets {
            cloud.add_subnet(s.clone())?;
        }
        for g in &spec.security_groups {
            cloud.add_security_group(g.clone())?;
        }
        for lt in &spec.launch_templates {
            cloud.create_launch_template(&lt.name, lt.instance_type.as_deref())?;
        }
        for asg in &spec.auto_scaling_groups {
            cloud.create_auto_scaling_group(asg.to_cloud_spec(), t)?;
        }
        Ok(Some(cloud))
    }
}

fn validate_cloud(cloud: &CloudSpec, issues: &mut Vec<String>) {
    if cloud.region.is_empty() {
        issues.push("cloud.region: must not be empty".to_string());
    }
    if cloud.zones.is_empty() {
        issues.push("cloud.zones: must list at least one zone".to_string());
    }
    let mut seen = BTreeSet::new();
    for z in &cloud.zones {
        if !seen.insert(z.as_str()) {
            issues.push(format!("cloud.zones: duplicate zone {z:?}"));
        }
    }
    check_finite(issues, "cloud.bootDelaySeconds", cloud.boot_delay_seconds, None);
    check_finite(issues, "cloud.terminationDelaySeconds", cloud.termination_delay_seconds, None);
    check_finite(issues, "cloud.launchRetrySeconds", cloud.launch_retry_seconds, None);
    let zone_ok = |z: &String| cloud.zones.contains(z);

    let mut subnet_ids = BTreeSet::new();
    for (i, s) in cloud.subnets.iter().enumerate() {
        if !subnet_ids.insert(s.id.as_str()) {
            issues.push(format!("cloud.subnets[{i}].id: duplicate subnet id {:?}", s.id));
        }
        if !zone_ok(&s.zone) {
            issues.push(format!(
                "cloud.subnets[{i}] ({}).zone: {:?} is not one of cloud.zones {:?}",
                s.id, s.zone, cloud.zones
            ));
        }
    }
    let mut sg_ids = BTreeSet::new();
    for (i, g) in cloud.security_groups.iter().enumerate() {
        if !sg_ids.insert(g.id.as_str()) {
            issues.push(format!("cloud.securityGroups[{i}].id: duplicate security group id {:?}", g.id));
        }
    }
    let mut lt_names = BTreeSet::new();
    for (i, lt) in cloud.launch_templates.iter().enumerate() {
        if !lt_names.insert(lt.name.as_str()) {
            issues.push(format!("cloud.launchTemplates[{i}].name: duplicate launch template {:?}", lt.name));
        }
        if let Some(ty) = &lt.instance_type {
            if instance_types::find(ty).is_none() {
                issues.push(format!("cloud.launchTemplates[{i}].instanceType: unknown instance type {ty:?}"));
            }
        }
    }
    for (i, l) in cloud.capacity_limits.iter().enumerate() {
        if instance_types::find(&l.instance_type).is_none() {
            issues.push(format!("cloud.capacityLimits[{i}].instanceType: unknown instance type {:?}", l.instance_type));
        }
        if !zone_ok(&l.zone) {
            issues.push(format!("cloud.capacityLimits[{i}].zone: {:?} is not one of cloud.zones", l.zone));
        }
    }

    let mut asg_names = BTreeSet::new();
    for (i, g) in cloud.auto_scaling_groups.iter().enumerate() {
        let path = format!("cloud.autoScalingGroups[{i}] ({})", g.name);
        if g.name.is_empty() {
            issues.push(format!("cloud.autoScalingGroups[{i}].name: must not be empty"));
        } else if !asg_names.insert(g.name.as_str()) {
            issues.push(format!("{path}.name: duplicate Auto Scaling Group name"));
        }
        if g.min_size > g.max_size {
            issues.push(format!("{path}: minSize {} is above maxSize {}", g.min_size, g.max_size));
        }
        if let Some(d) = g.desired_capacity {
            if d < g.min_size {
                issues.push(format!("{path}.desiredCapacity: {d} is below minSize {}", g.min_size));
            }
            if d > g.max_size {
                issues.push(format!("{path}.desiredCapacity: {d} is above maxSize {}", g.max_size));
            }
        }
        if g.on_demand_percentage_above_base_capacity > 100 {
            issues.push(format!(
                "{path}.onDemandPercentageAboveBaseCapacity: must be between 0 and 100, got {}",
                g.on_demand_percentage_above_base_capacity
            ));
        }
        for z in &g.zones {
            if !zone_ok(z) {
                issues.push(format!("{path}.zones: {z:?} is not one of cloud.zones {:?}", cloud.zones));
            }
        }
        let mut group_zones: Vec<&String> = g.zones.iter().collect();
        for id in &g.subnets {
            match cloud.subnets.iter().find(|s| &s.id == id) {
                None => issues.push(format!("{path}.subnets: unknown subnet {id:?} (not in cloud.subnets)")),
                Some(s) => {
                    if g.zones.is_empty() {
                        group_zones.push(&s.zone);
                    } else if !g.zones.contains(&s.zone) {
                        issues.push(format!(
                            "{path}.subnets: subnet {id:?} is in {}, not one of the group's zones",
                            s.zone
                        ));
                    }
                }
            }
        }
        if group_zones.is_empty() {
            group_zones = cloud.zones.iter().collect();
        }
        if let Some(lt) = &g.launch_template {
            if !cloud.launch_templates.iter().any(|l| &l.name == lt) {
                issues.push(format!("{path}.launchTemplate: unknown launch template {lt:?}"));
            }
        }
        if g.instance_types.is_empty() {
            issues.push(format!("{path}.instanceTypes: must list at least one instance type"));
        }
        for ty in &g.instance_types {
            match instance_types::find(ty) {
                None => issues.push(format!("{path}.instanceTypes: unknown instance type {ty:?}")),
                Some(t) => {
                    if !group_zones.iter().any(|z| t.offered_in(z)) {
                        issues.push(format!(
                            "{path}.instanceTypes: {ty:?} is not offered in any of the group's zones {group_zones:?}"
                        ));
                    }
                }
            }
        }
        check_taints(issues, &format!("{path}.nodeTaints"), &g.node_taints);
    }
}

#[cfg(test)]
mod tests {
    use super::super::common::CapacityType;
    use super::super::load::RequestRate;
    use super::*;

    const FULL: &str = r#"
name: php-apache
description: free text
duration: 900
speed: 10
sampleEvery: 15
cloud:
  region: us-east-1
  zones: [us-east-1a, us-east-1b, us-east-1c]
  bootDelaySeconds: 45
  subnets: [{id: subnet-a, zone: us-east-1a, tags: {karpenter.sh/discovery: demo}}]
  securityGroups: [{id: sg-1, tags: {karpenter.sh/discovery: demo}}]
  autoScalingGroups:
  - name: spot-ng
    minSize: 1
    maxSize: 5
    desiredCapacity: 1
    instanceTypes: [t2.small, t3.small]
    onDemandBaseCapacity: 0
    onDemandPercentageAboveBaseCapacity: 50
    zones: [us-east-1a, us-east-1b]
    tags: {k8s.io/cluster-autoscaler/enabled: "true", k8s.io/cluster-autoscaler/demo: owned}
    nodeLabels: {pool: spot-ng}
    nodeTaints: []
nodes:
- namePrefix: static
  count: 1
  instanceType: m5.large
  cpu: "2"
  memory: 8Gi
  pods: 110
  labels: {}
  taints: []
workloads:
- namespace: default
  name: php-apache
  load: {rate: {steps: [{at: 0, rps: 0}, {at: 60, rps: 100}, {at: 480, rps: 0}]}, cpuPerRequestMillis: 4.8, memoryBaseMiB: 10, memoryPerRequestMiB: 0}
  containers: {hamster: {cpuMillis: 500, memoryMiB: 100, jitter: 0.1}}
actions:
- at: 600
  delete: {kind: Deployment, namespace: default, name: nginx}
- at: 60
  scale: {kind: Deployment, namespace: default, name: nginx, replicas: 10}
"#;

    fn invalid(yaml: &str) -> Vec<String> {
        match Scenario::from_yaml(yaml) {
            Err(ScenarioError::Invalid(issues)) => issues,
            other => panic!("expected validation issues, got {other:?}"),
        }
    }

    fn parse_error(yaml: &str) -> String {
        match Scenario::from_yaml(yaml) {
            Err(e @ ScenarioError::Parse(_)) => e.to_string(),
            other => panic!("expected a parse error, got {other:?}"),
        }
    }

    #[test]
    fn parses_full_example() {
        let s = Scenario::from_yaml(FULL).unwrap();
        assert_eq!((s.name.as_str(), s.duration, s.speed, s.sample_every), ("php-apache", 900.0, 10.0, 15.0));
        let cloud = s.cloud.as_ref().unwrap();
        assert_eq!(cloud.termination_delay_seconds, 30.0);
        let asg = s.asg("spot-ng").unwrap();
        assert_eq!(asg.on_demand_percentage_above_base_capacity, 50);
        assert_eq!(asg.tags.get("k8s.io/cluster-autoscaler/enabled").map(String::as_str), Some("true"));
        assert_eq!(asg.node_labels.get("pool").map(String::as_str), Some("spot-ng"));
        let w = s.workload("default", "php-apache").unwrap();
        assert!(matches!(w.load.as_ref().unwrap().rate, RequestRate::Steps(ref v) if v.len() == 3));
        assert_eq!(w.containers["hamster"].cpu_millis, 500.0);
        let order: Vec<f64> = s.sorted_actions().iter().map(|a| a.at).collect();
        assert_eq!(order, vec![60.0, 600.0]);
        assert!(matches!(s.actions[1].action(), Some(Action::Scale(sc)) if sc.replicas == 10));
        let r = s.nodes[0].resources().unwrap();
        assert_eq!(r.allocatable.cpu_millis, 2000);
        assert_eq!(r.allocatable.memory_bytes, 8 * 1024 * 1024 * 1024);
        assert_eq!(r.allocatable.pods, 110);
        assert_eq!(s.nodes[0].node_name(0), "static-0");
        // Serializing and parsing again gives the same scenario.
        let yaml = serde_yaml::to_string(&s).unwrap();
        assert_eq!(Scenario::from_yaml(&yaml).unwrap(), s);
    }

    #[test]
    fn defaults() {
        let s = Scenario::from_yaml(
            "name: tiny\nworkloads: [{name: web, containers: {c: {cpuMillis: 1, memoryMiB: 1}}}]\ncloud: {}\n",
        )
        .unwrap();
        assert_eq!((s.duration, s.speed, s.sample_every), (600.0, 10.0, 15.0));
        assert_eq!(s.workloads[0].namespace, "default");
        assert_eq!(s.workloads[0].containers["c"].jitter, 0.0);
        let c = s.cloud.unwrap();
        assert_eq!(c.zones, vec!["us-east-1a", "us-east-1b", "us-east-1c"]);
        assert_eq!((c.region.as_str(), c.boot_delay_seconds), ("us-east-1", 45.0));
    }

    #[test]
    fn static_node_resources() {
        let n: StaticNodes = serde_yaml::from_str("{namePrefix: s, instanceType: m5.large}").unwrap();
        let r = n.resources().unwrap();
        assert_eq!(r.capacity.cpu_millis, 2000);
        assert_eq!(r.allocatable.cpu_millis, 1930);
        assert_eq!(r.allocatable.pods, 29);
        let n: StaticNodes = serde_yaml::from_str("{namePrefix: s, cpu: 500m, memory: 1Gi}").unwrap();
        let r = n.resources().unwrap();
        assert_eq!((r.allocatable.cpu_millis, r.allocatable.memory_bytes, r.allocatable.pods), (500, 1 << 30, 110));
        let n: StaticNodes = serde_yaml::from_str("{namePrefix: s, cpu: '2'}").unwrap();
        assert!(n.resources().unwrap_err().contains("instanceType"));
        let n: StaticNodes = serde_yaml::from_str("{namePrefix: s, cpu: two, memory: 1Gi}").unwrap();
        assert!(n.resources().unwrap_err().contains("cpu"));
    }

    #[test]
    fn external_metrics_follow_their_rate_model() {
        let s = Scenario::from_yaml(
            "name: x\nexternalMetrics:\n- {name: queue_depth, labels: {queue: jobs}, value: {steps: [{at: 0, rps: 5}, {at: 60, rps: 90}]}}\n",
        )
        .unwrap();
        let m = &s.external_metrics[0];
        assert_eq!((m.namespace.as_str(), m.labels["queue"].as_str()), ("default", "jobs"));
        assert_eq!((m.value.rate_at(10.0), m.value.rate_at(61.0)), (5.0, 90.0));
        let mut bad = s.clone();
        bad.external_metrics[0].name.clear();
        bad.external_metrics[0].value = super::super::load::RequestRate::Constant(-1.0);
        let issues = bad.validate();
        assert!(issues.iter().any(|i| i.starts_with("externalMetrics[0].name")), "{issues:?}");
        assert!(issues.iter().any(|i| i.starts_with("externalMetrics[0].value")), "{issues:?}");
    }

    #[test]
    fn parse_errors_name_field_and_line() {
        let err = parse_error("name: x\ndurration: 5\n");
        assert!(err.contains("durration") && err.contains("line 2"), "{err}");
        let err = parse_error(
            "name: x\nworkloads:\n- name: a\n  load: {rate: {constant: 1}, cpuPerRequest: 1, memoryBaseMiB: 1, memoryPerRequestMiB: 0}\n",
        );
        assert!(err.contains("cpuPerRequest") && err.contains("line 4"), "{err}");
        let err = parse_error(
            "name: x\nworkloads:\n- name: a\n  load: {rate: {linear: 1}, cpuPerRequestMillis: 1, memoryBaseMiB: 1, memoryPerRequestMiB: 0}\n",
        );
        assert!(err.contains("linear"), "{err}");
        let err = parse_error(
            "name: x\ncloud:\n  autoScalingGroups:\n  - name: a\n    minSize: one\n    maxSize: 1\n    instanceTypes: [t3.small]\n",
        );
        assert!(err.contains("line 5"), "{err}");
        let err = parse_error("description: no name\n");
        assert!(err.contains("name"), "{err}");
        let err = parse_error(
            "name: x\nnodes: [{namePrefix: s, cpu: 1, memory: 1Gi, taints: [{key: k, effect: NoScheduel}]}]\n",
        );
        assert!(err.contains("NoScheduel"), "{err}");
    }

    #[test]
    fn validation_errors_name_the_field() {
        let bad_type = FULL.replace("[t2.small, t3.small]", "[t2.small, t3.smol]");
        let issues = invalid(&bad_type);
        assert!(
            issues
                .iter()
                .any(|i| i.contains("cloud.autoScalingGroups[0] (spot-ng).instanceTypes") && i.contains("t3.smol")),
            "{issues:?}"
        );

        let bad_desired = FULL.replace("desiredCapacity: 1", "desiredCapacity: 6");
        let issues = invalid(&bad_desired);
        assert!(issues.iter().any(|i| i.contains("desiredCapacity: 6 is above maxSize 5")), "{issues:?}");

        let bad_bounds = FULL.replace("minSize: 1", "minSize: 7");
        let issues = invalid(&bad_bounds);
        assert!(issues.iter().any(|i| i.contains("minSize 7 is above maxSize 5")), "{issues:?}");

        let bad_zone = FULL.replace("zones: [us-east-1a, us-east-1b]", "zones: [us-east-1a, us-west-2b]");
        let issues = invalid(&bad_zone);
        assert!(issues.iter().any(|i| i.contains(".zones") && i.contains("us-west-2b")), "{issues:?}");

        // t2 isn't offered in us-east-1c.
        let no_offer = FULL
            .replace("[t2.small, t3.small]", "[t2.small]")
            .replace("zones: [us-east-1a, us-east-1b]", "zones: [us-east-1c]");
        let issues = invalid(&no_offer);
        assert!(issues.iter().any(|i| i.contains("not offered")), "{issues:?}");

        let dup = FULL.replace("- namespace: default\n  name: php-apache\n", "- name: php-apache\n  containers: {c: {cpuMillis: 1, memoryMiB: 1}}\n- namespace: default\n  name: php-apache\n");
        let issues = invalid(&dup);
        assert!(issues.iter().any(|i| i.contains("duplicate workload default/php-apache")), "{issues:?}");

        let mut s = Scenario::from_yaml(FULL).unwrap();
        let mut g = s.cloud.as_ref().unwrap().auto_scaling_groups[0].clone();
        g.desired_capacity = None;
        s.cloud.as_mut().unwrap().auto_scaling_groups.push(g);
        s.nodes.push(s.nodes[0].clone());
        s.nodes[1].instance_type = Some("z1.mega".into());
        s.actions.push(TimedAction { at: 1000.0, delete: None, scale: None });
        s.duration = 0.0;
        s.workloads[0].containers.get_mut("hamster").unwrap().jitter = 2.0;
        let issues = s.validate();
        let expect = [
            "cloud.autoScalingGroups[1] (spot-ng).name: duplicate",
            "nodes[1] (static).namePrefix: duplicate",
            "nodes[1] (static): unknown instance type \"z1.mega\"",
            "actions[2]: exactly one of",
            "actions[2].at: 1000 is after the scenario ends",
            "duration: must be greater than 0",
            "containers.hamster.jitter",
        ];
        for e in expect {
            assert!(issues.iter().any(|i| i.contains(e)), "missing {e:?} in {issues:?}");
        }
        let msg = ScenarioError::Invalid(issues).to_string();
        assert!(msg.starts_with("invalid scenario: "));
    }

    #[test]
    fn builds_cloud() {
        let s = Scenario::from_yaml(FULL).unwrap();
        let mut cloud = s.build_cloud(0.0).unwrap().unwrap();
        assert_eq!(cloud.describe_subnets_by_tags(&[("karpenter.sh/discovery", "demo")]).len(), 1);
        assert_eq!(cloud.describe_security_groups_by_tags(&[("karpenter.sh/discovery", "demo")]).len(), 1);
        let asg = cloud.auto_scaling_group("spot-ng").unwrap();
        assert_eq!((asg.min_size, asg.max_size, asg.desired_capacity), (1, 5, 1));
        assert_eq!(asg.zones, vec!["us-east-1a", "us-east-1b"]);
        cloud.tick(0.0);
        let inst: Vec<_> = cloud.live_instances().collect();
        assert_eq!(inst.len(), 1);
        assert_eq!(inst[0].capacity_type, CapacityType::OnDemand);
        assert_eq!(inst[0].zone, "us-east-1a");
        assert_eq!(inst[0].subnet_id.as_deref(), Some("subnet-a"));

        let none =
            Scenario::from_yaml("name: x\nworkloads: [{name: a, containers: {c: {cpuMillis: 1, memoryMiB: 1}}}]\n")
                .unwrap();
        assert!(none.build_cloud(0.0).unwrap().is_none());
    }
}
