//! A simulated AWS-like cloud: EC2 instances, Auto Scaling Groups, subnets and security groups
//! as a pure state machine. Autoscalers under test call the operation methods the way they'd
//! call the AWS APIs; the simulation loop calls [`Cloud::tick`] to let time pass.
//!
//! Simplifications, on purpose:
//! - Launches are instant API-wise; an instance stays `pending` for `boot_delay_seconds`, which
//!   stands for the whole EC2 boot plus kubelet registration.
//! - Billing follows EC2's rule that `shutting-down` and `terminated` instances aren't charged;
//!   `pending` is charged because here it also covers OS boot, which AWS bills as `running`.
//! - ASG scale-in follows the default termination policy only partly: first the capacity type
//!   that is over its mixed-instances target, then the zone with the most instances (ties: the
//!   zone listed last), then the instance closest to its next billing hour (ties: the newest).
//!   "Oldest launch template" is skipped because launch templates have no versions here.
//! - ASG launch retries after a failure wait `launch_retry_seconds` (AWS uses a growing backoff).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::common::{CapacityType, SimTime};
use super::instance_types::{self, InstanceType};

/// Tags as AWS stores them; a sorted map keeps iteration deterministic.
pub type Tags = BTreeMap<String, String>;

/// The tag AWS puts on every ASG member; Cluster Autoscaler and node controllers rely on it.
pub const ASG_NAME_TAG: &str = "aws:autoscaling:groupName";

/// Errors carrying AWS's own wording, so the autoscalers under test see the messages they
/// would in production. `code()` gives the AWS error code.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CloudError {
    #[error("{message}")]
    Validation { message: String },
    #[error("AutoScalingGroup name not found - AutoScalingGroup '{name}' not found")]
    AutoScalingGroupNotFound { name: String },
    #[error("AutoScalingGroup by this name already exists - A group with the name {name} already exists")]
    AlreadyExists { name: String },
    #[error("The instance ID '{id}' does not exist")]
    InstanceNotFound { id: String },
    #[error("The subnet ID '{id}' does not exist")]
    SubnetNotFound { id: String },
    #[error("The specified launch template, with template name {name}, does not exist.")]
    LaunchTemplateNotFound { name: String },
    #[error("Invalid value '{name}' for InstanceType.")]
    UnknownInstanceType { name: String },
    #[error(
        "Your requested instance type ({instance_type}) is not supported in your requested Availability Zone ({zone})."
    )]
    Unsupported { instance_type: String, zone: String },
    #[error(
        "We currently do not have sufficient {instance_type} {capacity_type} capacity in the Availability Zone you requested ({zone})."
    )]
    InsufficientInstanceCapacity { instance_type: String, zone: String, capacity_type: CapacityType },
    #[error("You have requested more instances ({requested}) than your current instance limit of {limit} allows.")]
    InstanceLimitExceeded { requested: u32, limit: u32 },
}

impl CloudError {
    /// The AWS error code; ASG "not found" is a `ValidationError` in the real API too.
    pub fn code(&self) -> &'static str {
        match self {
            CloudError::Validation { .. } | CloudError::AutoScalingGroupNotFound { .. } => "ValidationError",
            CloudError::AlreadyExists { .. } => "AlreadyExists",
            CloudError::InstanceNotFound { .. } => "InvalidInstanceID.NotFound",
            CloudError::SubnetNotFound { .. } => "InvalidSubnetID.NotFound",
            CloudError::LaunchTemplateNotFound { .. } => "InvalidLaunchTemplateName.NotFoundException",
            CloudError::UnknownInstanceType { .. } => "InvalidParameterValue",
            CloudError::Unsupported { .. } => "Unsupported",
            CloudError::InsufficientInstanceCapacity { .. } => "InsufficientInstanceCapacity",
            CloudError::InstanceLimitExceeded { .. } => "InstanceLimitExceeded",
        }
    }

    fn validation(message: impl Into<String>) -> Self {
        CloudError::Validation { message: message.into() }
    }
}

/// EC2 instance lifecycle states that matter to a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InstanceState {
    Pending,
    Running,
    ShuttingDown,
    Terminated,
}

impl InstanceState {
    /// Pending or running: counts toward an ASG's capacity and the bill.
    pub fn is_live(self) -> bool {
        matches!(self, InstanceState::Pending | InstanceState::Running)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Subnet {
    pub id: String,
    pub zone: String,
    #[serde(default)]
    pub tags: Tags,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecurityGroup {
    pub id: String,
    #[serde(default)]
    pub tags: Tags,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LaunchTemplate {
    pub id: String,
    pub name: String,
    pub instance_type: Option<String>,
}

/// A (type, zone, capacity type) pool with a ceiling on concurrent instances, to provoke
/// `InsufficientInstanceCapacity` deterministically. A ceiling of 0 means "no capacity at all".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CapacityLimit {
    pub instance_type: String,
    pub zone: String,
    pub capacity_type: CapacityType,
    pub max_instances: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CloudConfig {
    pub region: String,
    pub zones: Vec<String>,
    pub boot_delay_seconds: f64,
    pub termination_delay_seconds: f64,
    /// How long an ASG waits before trying again after a failed launch.
    pub launch_retry_seconds: f64,
    pub capacity_limits: Vec<CapacityLimit>,
    /// Account-wide ceiling on live instances, to provoke `InstanceLimitExceeded`.
    pub max_instances: Option<u32>,
}

impl Default for CloudConfig {
    fn default() -> Self {
        Self {
            region: "us-east-1".to_string(),
            zones: vec!["us-east-1a".to_string(), "us-east-1b".to_string(), "us-east-1c".to_string()],
            boot_delay_seconds: 45.0,
            termination_delay_seconds: 30.0,
            launch_retry_seconds: 30.0,
            capacity_limits: Vec::new(),
            max_instances: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ActivityStatus {
    Successful,
    Failed,
}

/// An entry of DescribeScalingActivities; Cluster Autoscaler reads failed ones to back off
/// from a node group that can't get capacity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScalingActivity {
    pub t: SimTime,
    pub description: String,
    pub cause: String,
    pub status: ActivityStatus,
    pub status_message: Option<String>,
}

/// Arguments of CreateAutoScalingGroup with a mixed instances policy.
#[derive(Debug, Clone, PartialEq)]
pub struct AutoScalingGroupSpec {
    pub name: String,
    pub min_size: u32,
    pub max_size: u32,
    /// Defaults to `min_size`, as in AWS.
    pub desired_capacity: Option<u32>,
    /// On-demand launches use this order (AWS "prioritized"); spot picks the cheapest.
    pub instance_types: Vec<String>,
    pub on_demand_base_capacity: u32,
    pub on_demand_percentage_above_base_capacity: u32,
    /// Empty: the zones of `subnet_ids`, or every zone of the cloud when that is empty too.
    pub zones: Vec<String>,
    pub subnet_ids: Vec<String>,
    pub tags: Tags,
    pub launch_template_name: Option<String>,
}

impl AutoScalingGroupSpec {
    /// An all-on-demand group over every zone, the common case in tests and scenarios.
    pub fn new(name: impl Into<String>, min_size: u32, max_size: u32, instance_types: &[&str]) -> Self {
        Self {
            name: name.into(),
            min_size,
            max_size,
            desired_capacity: None,
            instance_types: instance_types.iter().map(|s| s.to_string()).collect(),
            on_demand_base_capacity: 0,
            on_demand_percentage_above_base_capacity: 100,
            zones: Vec::new(),
            subnet_ids: Vec::new(),
            tags: Tags::new(),
            launch_template_name: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AutoScalingGroup {
    pub name: String,
    pub min_size: u32,
    pub max_size: u32,
    pub desired_capacity: u32,
    pub instance_types: Vec<String>,
    pub on_demand_base_capacity: u32,
    pub on_demand_percentage_above_base_capacity: u32,
    pub zones: Vec<String>,
    pub subnet_ids: Vec<String>,
    pub tags: Tags,
    pub launch_template_name: Option<String>,
    /// Members that are not yet terminated (including shutting-down ones), oldest first.
    pub instance_ids: Vec<String>,
    pub activities: Vec<ScalingActivity>,
    pub created_at: SimTime,
    /// Launches are not attempted before this time (set after a failure).
    pub next_launch_attempt_at: SimTime,
    /// Why desired capacity last changed, quoted in activity causes like AWS does.
    pub last_cause: String,
}

impl AutoScalingGroup {
    /// How many of `desired` instances the mixed instances policy wants on-demand. AWS rounds
    /// the percentage above base up, in favour of on-demand.
    pub fn on_demand_target(&self, desired: u32) -> u32 {
        let base = desired.min(self.on_demand_base_capacity);
        let above = u64::from(desired - base);
        let pct = u64::from(self.on_demand_percentage_above_base_capacity.min(100));
        let od_above = (above * pct).div_ceil(100);
        base + u32::try_from(od_above).unwrap_or(u32::MAX)
    }
}

/// Optional arguments of UpdateAutoScalingGroup.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UpdateAutoScalingGroup {
    pub min_size: Option<u32>,
    pub max_size: Option<u32>,
    pub desired_capacity: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Instance {
    pub id: String,
    pub instance_type: String,
    pub zone: String,
    pub subnet_id: Option<String>,
    pub capacity_type: CapacityType,
    pub state: InstanceState,
    pub launch_time: SimTime,
    pub ready_at: SimTime,
    pub shutdown_at: Option<SimTime>,
    /// When the instance becomes (or became) `terminated`.
    pub terminated_at: Option<SimTime>,
    pub private_ip: String,
    pub private_dns_name: String,
    pub provider_id: String,
    pub tags: Tags,
    pub asg_name: Option<String>,
    pub price_usd_per_hour: f64,
}

/// One launch option of a groupless (CreateFleet-like) launch.
#[derive(Debug, Clone, PartialEq)]
pub struct LaunchCandidate {
    pub instance_type: String,
    pub zone: String,
    pub subnet_id: Option<String>,
    pub capacity_type: CapacityType,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AllocationStrategy {
    /// Cheapest candidate first: Karpenter's `lowest-price` for on-demand, and our stand-in
    /// for `price-capacity-optimized` spot.
    #[default]
    LowestPrice,
    /// Candidates in the order given.
    Prioritized,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LaunchRequest {
    pub candidates: Vec<LaunchCandidate>,
    pub count: u32,
    pub strategy: AllocationStrategy,
    pub tags: Tags,
}

/// Like CreateFleet's `instant` response: launching fewer than requested (even none) is not
/// an error; `errors` names each pool that was skipped so a caller can mark it unavailable.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LaunchOutcome {
    pub instance_ids: Vec<String>,
    pub errors: Vec<CloudError>,
}

/// What changed during a tick or an operation, in the order it happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum CloudEvent {
    InstanceLaunched { id: String },
    InstanceRunning { id: String },
    InstanceTerminating { id: String },
    InstanceTerminated { id: String },
    LaunchFailed { asg: String, reason: String },
}

#[derive(Debug, Clone)]
pub struct Cloud {
    config: CloudConfig,
    subnets: BTreeMap<String, Subnet>,
    security_groups: BTreeMap<String, SecurityGroup>,
    launch_templates: BTreeMap<String, LaunchTemplate>,
    asgs: BTreeMap<String, AutoScalingGroup>,
    instances: BTreeMap<String, Instance>,
    instance_counter: u64,
    launch_template_counter: u64,
    events: Vec<CloudEvent>,
}

/// Whether every `(key, value)` filter matches; a value of `*` matches any value of the key,
/// as in Karpenter's tag selectors. An empty filter list matches everything.
fn tags_match(tags: &Tags, filters: &[(&str, &str)]) -> bool {
    filters.iter().all(|(k, v)| tags.get(*k).is_some_and(|have| *v == "*" || have == v))
}

fn fmt_t(t: SimTime) -> String {
    format!("{t:.0}s")
}

impl Cloud {
    pub fn new(config: CloudConfig) -> Self {
        Self {
            config,
            subnets: BTreeMap::new(),
            security_groups: BTreeMap::new(),
            launch_templates: BTreeMap::new(),
            asgs: BTreeMap::new(),
            instances: BTreeMap::new(),
            instance_counter: 0,
            launch_template_counter: 0,
            events: Vec::new(),
        }
    }

    pub fn config(&self) -> &CloudConfig {
        &self.config
    }

    pub fn region(&self) -> &str {
        &self.config.region
    }

    pub fn zones(&self) -> &[String] {
        &self.config.zones
    }

    fn check_zone(&self, zone: &str) -> Result<(), CloudError> {
        if self.config.zones.iter().any(|z| z == zone) {
            Ok(())
        } else {
            Err(CloudError::validation(format!("Invalid Availability Zone: {zone}")))
        }
    }

    pub fn add_subnet(&mut self, subnet: Subnet) -> Result<(), CloudError> {
        self.check_zone(&subnet.zone)?;
        if self.subnets.contains_key(&subnet.id) {
            return Err(CloudError::validation(format!("Subnet {} already exists", subnet.id)));
        }
        self.subnets.insert(subnet.id.clone(), subnet);
        Ok(())
    }

    pub fn add_security_group(&mut self, group: SecurityGroup) -> Result<(), CloudError> {
        if self.security_groups.contains_key(&group.id) {
            return Err(CloudError::validation(format!("Security group {} already exists", group.id)));
        }
        self.security_groups.insert(group.id.clone(), group);
        Ok(())
    }

    /// Returns the new template's id (`lt-` plus 17 hex digits, from a counter).
    pub fn create_launch_template(&mut self, name: &str, instance_type: Option<&str>) -> Result<String, CloudError> {
        if self.launch_templates.contains_key(name) {
            return Err(CloudError::validation(format!(
                "Launch template name already in use: a launch template named {name} already exists"
            )));
        }
        if let Some(ty) = instance_type {
            instance_types::find(ty).ok_or_else(|| CloudError::UnknownInstanceType { name: ty.to_string() })?;
        }
        self.launch_template_counter += 1;
        let id = format!("lt-{:017x}", self.launch_template_counter);
        let lt =
            LaunchTemplate { id: id.clone(), name: name.to_string(), instance_type: instance_type.map(String::from) };
        self.launch_templates.insert(name.to_string(), lt);
        Ok(id)
    }

    /// Adds or replaces the limit for one pool, e.g. to make spot capacity vanish mid-scenario.
    pub fn set_capacity_limit(&mut self, limit: CapacityLimit) {
        self.config.capacity_limits.retain(|l| {
            !(l.instance_type == limit.instance_type && l.zone == limit.zone && l.capacity_type == limit.capacity_type)
        });
        self.config.capacity_limits.push(limit);
    }

    pub fn clear_capacity_limit(&mut self, instance_type: &str, zone: &str, capacity_type: CapacityType) {
        self.config
            .capacity_limits
            .retain(|l| !(l.instance_type == instance_type && l.zone == zone && l.capacity_type == capacity_type));
    }

    // ---- describe -------------------------------------------------------------------------

    pub fn subnet(&self, id: &str) -> Option<&Subnet> {
        self.subnets.get(id)
    }

    pub fn subnets(&self) -> impl Iterator<Item = &Subnet> {
        self.subnets.values()
    }

    pub fn describe_subnets_by_tags(&self, filters: &[(&str, &str)]) -> Vec<&Subnet> {
        self.subnets.values().filter(|s| tags_match(&s.tags, filters)).collect()
    }

    pub fn security_groups(&self) -> impl Iterator<Item = &SecurityGroup> {
        self.security_groups.values()
    }

    pub fn describe_security_groups_by_tags(&self, filters: &[(&str, &str)]) -> Vec<&SecurityGroup> {
        self.security_groups.values().filter(|s| tags_match(&s.tags, filters)).collect()
    }

    pub fn launch_template(&self, name: &str) -> Option<&LaunchTemplate> {
        self.launch_templates.get(name)
    }

    pub fn auto_scaling_group(&self, name: &str) -> Option<&AutoScalingGroup> {
        self.asgs.get(name)
    }

    pub fn auto_scaling_groups(&self) -> impl Iterator<Item = &AutoScalingGroup> {
        self.asgs.values()
    }

    /// Cluster Autoscaler's auto-discovery: groups carrying all the given tags.
    pub fn describe_auto_scaling_groups_by_tags(&self, filters: &[(&str, &str)]) -> Vec<&AutoScalingGroup> {
        self.asgs.values().filter(|g| tags_match(&g.tags, filters)).collect()
    }

    pub fn instance(&self, id: &str) -> Option<&Instance> {
        self.instances.get(id)
    }

    /// Every instance ever launched, terminated ones included, in launch order.
    pub fn instances(&self) -> impl Iterator<Item = &Instance> {
        self.instances.values()
    }

    /// Pending and running instances.
    pub fn live_instances(&self) -> impl Iterator<Item = &Instance> {
        self.instances.values().filter(|i| i.state.is_live())
    }

    pub fn describe_instances_by_tags(&self, filters: &[(&str, &str)]) -> Vec<&Instance> {
        self.instances.values().filter(|i| tags_match(&i.tags, filters)).collect()
    }

    /// USD per hour of everything currently billed (pending and running instances).
    pub fn hourly_cost(&self) -> f64 {
        self.live_instances().map(|i| i.price_usd_per_hour).sum()
    }

    // ---- auto scaling ---------------------------------------------------------------------

    pub fn create_auto_scaling_group(&mut self, spec: AutoScalingGroupSpec, t: SimTime) -> Result<(), CloudError> {
        if spec.name.is_empty() {
            return Err(CloudError::validation("AutoScalingGroupName must not be empty"));
        }
        if self.asgs.contains_key(&spec.name) {
            return Err(CloudError::AlreadyExists { name: spec.name });
        }
        check_bounds(spec.min_size, spec.max_size)?;
        let desired = spec.desired_capacity.unwrap_or(spec.min_size);
        check_desired(desired, spec.min_size, spec.max_size)?;
        if spec.instance_types.is_empty() {
            return Err(CloudError::validation("At least one instance type must be specified in Overrides"));
        }
        for ty in &spec.instance_types {
            instance_types::find(ty).ok_or_else(|| CloudError::UnknownInstanceType { name: ty.clone() })?;
        }
        if spec.on_demand_percentage_above_base_capacity > 100 {
            return Err(CloudError::validation("OnDemandPercentageAboveBaseCapacity must be between 0 and 100"));
        }
        if let Some(lt) = &spec.launch_template_name {
            if !self.launch_templates.contains_key(lt) {
                return Err(CloudError::LaunchTemplateNotFound { name: lt.clone() });
            }
        }
        for zone in &spec.zones {
            self.check_zone(zone)?;
        }
        let mut subnet_zones: Vec<String> = Vec::new();
        for id in &spec.subnet_ids {
            let subnet = self.subnets.get(id).ok_or_else(|| CloudError::SubnetNotFound { id: id.clone() })?;
            if !spec.zones.is_empty() && !spec.zones.contains(&subnet.zone) {
                return Err(CloudError::validation(format!(
                    "Subnet {id} is in {}, which is not one of the group's Availability Zones",
                    subnet.zone
                )));
            }
            if !subnet_zones.contains(&subnet.zone) {
                subnet_zones.push(subnet.zone.clone());
            }
        }
        let zones = if !spec.zones.is_empty() {
            spec.zones
        } else if !subnet_zones.is_empty() {
            subnet_zones
        } else {
            self.config.zones.clone()
        };
        let cause = format!(
            "At {} a user request created an AutoScalingGroup changing the desired capacity from 0 to {desired}.",
            fmt_t(t)
        );
        let asg = AutoScalingGroup {
            name: spec.name.clone(),
            min_size: spec.min_size,
            max_size: spec.max_size,
            desired_capacity: desired,
            instance_types: spec.instance_types,
            on_demand_base_capacity: spec.on_demand_base_capacity,
            on_demand_percentage_above_base_capacity: spec.on_demand_percentage_above_base_capacity,
            zones,
            subnet_ids: spec.subnet_ids,
            tags: spec.tags,
            launch_template_name: spec.launch_template_name,
            instance_ids: Vec::new(),
            activities: Vec::new(),
            created_at: t,
            next_launch_attempt_at: t,
            last_cause: cause,
        };
        self.asgs.insert(spec.name, asg);
        Ok(())
    }

    fn asg_mut(&mut self, name: &str) -> Result<&mut AutoScalingGroup, CloudError> {
        self.asgs.get_mut(name).ok_or_else(|| CloudError::AutoScalingGroupNotFound { name: name.to_string() })
    }

    /// SetDesiredCapacity, with AWS's validation messages.
    pub fn set_desired_capacity(&mut self, name: &str, desired: u32, t: SimTime) -> Result<(), CloudError> {
        let asg = self.asg_mut(name)?;
        if desired > asg.max_size {
            return Err(CloudError::validation(format!(
                "New SetDesiredCapacity value {desired} is above max value {} for the AutoScalingGroup.",
                asg.max_size
            )));
        }
        if desired < asg.min_size {
            return Err(CloudError::validation(format!(
                "New SetDesiredCapacity value {desired} is below min value {} for the AutoScalingGroup.",
                asg.min_size
            )));
        }
        set_desired(asg, desired, t, "a user request explicitly set group desired capacity");
        Ok(())
    }

    /// UpdateAutoScalingGroup: a desired capacity left out is clamped into the new bounds.
    pub fn update_auto_scaling_group(
        &mut self,
        name: &str,
        update: UpdateAutoScalingGroup,
        t: SimTime,
    ) -> Result<(), CloudError> {
        let asg = self.asg_mut(name)?;
        let min = update.min_size.unwrap_or(asg.min_size);
        let max = update.max_size.unwrap_or(asg.max_size);
        check_bounds(min, max)?;
        if let Some(d) = update.desired_capacity {
            check_desired(d, min, max)?;
        }
        let desired = update.desired_capacity.unwrap_or(asg.desired_capacity.clamp(min, max));
        asg.min_size = min;
        asg.max_size = max;
        set_desired(asg, desired, t, "a user request update of AutoScalingGroup constraints");
        Ok(())
    }

    /// TerminateInstanceInAutoScalingGroup. Terminating an instance that is already shutting
    /// down is accepted and changes nothing.
    pub fn terminate_instance_in_auto_scaling_group(
        &mut self,
        instance_id: &str,
        should_decrement_desired_capacity: bool,
        t: SimTime,
    ) -> Result<ScalingActivity, CloudError> {
        let not_managed = || {
            CloudError::validation(format!(
                "Instance Id not found - No managed instance found for instance ID: {instance_id}"
            ))
        };
        let inst = self.instances.get(instance_id).ok_or_else(not_managed)?;
        let asg_name = inst.asg_name.clone().ok_or_else(not_managed)?;
        let state = inst.state;
        if state == InstanceState::Terminated {
            return Err(not_managed());
        }
        let asg = self.asg_mut(&asg_name)?;
        let old = asg.desired_capacity;
        let mut new = old;
        if state.is_live() && should_decrement_desired_capacity {
            if old <= asg.min_size {
                return Err(CloudError::validation(format!(
                    "Currently, desiredSize equals minSize ({}). Terminating instance without replacement will violate group's min size constraint. Either set shouldDecrementDesiredCapacity flag to false or lower group's min size.",
                    asg.min_size
                )));
            }
            new = old - 1;
            asg.desired_capacity = new;
        }
        let cause = if new != old {
            format!(
                "At {} instance {instance_id} was taken out of service in response to a user request, shrinking the capacity from {old} to {new}.",
                fmt_t(t)
            )
        } else {
            format!("At {} instance {instance_id} was taken out of service in response to a user request.", fmt_t(t))
        };
        let activity = ScalingActivity {
            t,
            description: format!("Terminating EC2 instance: {instance_id}"),
            cause,
            status: ActivityStatus::Successful,
            status_message: None,
        };
        asg.activities.push(activity.clone());
        if state.is_live() {
            self.begin_termination(instance_id, t);
        }
        Ok(activity)
    }

    // ---- EC2 --------------------------------------------------------------------------------

    /// TerminateInstances. All ids must exist (nothing changes otherwise); returns the ids that
    /// started shutting down now. An ASG member terminated this way is replaced on the next tick.
    pub fn terminate_instances<S: AsRef<str>>(&mut self, ids: &[S], t: SimTime) -> Result<Vec<String>, CloudError> {
        for id in ids {
            if !self.instances.contains_key(id.as_ref()) {
                return Err(CloudError::InstanceNotFound { id: id.as_ref().to_string() });
            }
        }
        let mut changed = Vec::new();
        for id in ids {
            let id = id.as_ref();
            if self.instances.get(id).is_some_and(|i| i.state.is_live()) {
                self.begin_termination(id, t);
                changed.push(id.to_string());
            }
        }
        Ok(changed)
    }

    /// Groupless launch in the spirit of CreateFleet (`instant`): each of `count` instances goes
    /// to the best candidate, by the request's strategy, that is offered in its zone and has
    /// capacity. Invalid requests (unknown type, subnet or zone; no candidates) are errors.
    pub fn launch_instances(&mut self, request: LaunchRequest, t: SimTime) -> Result<LaunchOutcome, CloudError> {
        if request.count == 0 {
            return Err(CloudError::validation("The minimum count must be at least 1"));
        }
        if request.candidates.is_empty() {
            return Err(CloudError::validation("At least one launch candidate must be specified"));
        }
        let mut ordered: Vec<(&'static InstanceType, &LaunchCandidate)> = Vec::new();
        for c in &request.candidates {
            let ty = instance_types::find(&c.instance_type)
                .ok_or_else(|| CloudError::UnknownInstanceType { name: c.instance_type.clone() })?;
            self.check_zone(&c.zone)?;
            if let Some(subnet_id) = &c.subnet_id {
                let subnet =
                    self.subnets.get(subnet_id).ok_or_else(|| CloudError::SubnetNotFound { id: subnet_id.clone() })?;
                if subnet.zone != c.zone {
                    return Err(CloudError::validation(format!(
                        "Subnet {subnet_id} is in {}, not in the requested Availability Zone {}",
                        subnet.zone, c.zone
                    )));
                }
            }
            ordered.push((ty, c));
        }
        if request.strategy == AllocationStrategy::LowestPrice {
            // Stable: equal prices keep the caller's order.
            ordered.sort_by(|a, b| a.0.price(a.1.capacity_type).total_cmp(&b.0.price(b.1.capacity_type)));
        }
        let mut outcome = LaunchOutcome::default();
        for _ in 0..request.count {
            if let Err(e) = self.check_instance_limit(request.count) {
                if outcome.instance_ids.is_empty() {
                    return Err(e);
                }
                outcome.errors.push(e);
                break;
            }
            let mut launched = None;
            for (ty, c) in &ordered {
                match self.offering_error(ty, &c.zone, c.capacity_type) {
                    None => {
                        launched = Some(self.launch_one(
                            ty,
                            &c.zone,
                            c.subnet_id.clone(),
                            c.capacity_type,
                            request.tags.clone(),
                            None,
                            t,
                        ));
                        break;
                    }
                    Some(e) => {
                        if !outcome.errors.contains(&e) {
                            outcome.errors.push(e);
                        }
                    }
                }
            }
            match launched {
                Some(id) => outcome.instance_ids.push(id),
                None => break,
            }
        }
        Ok(outcome)
    }

    // ---- time -------------------------------------------------------------------------------

    /// Lets time pass: ASGs converge towards their desired capacity, then instances move
    /// pending→running and shutting-down→terminated once their time has come. Returns every
    /// event since the previous tick (including those caused by operations in between).
    pub fn tick(&mut self, t: SimTime) -> Vec<CloudEvent> {
        let names: Vec<String> = self.asgs.keys().cloned().collect();
        for name in &names {
            self.reconcile_asg(name, t);
        }
        for inst in self.instances.values_mut() {
            match inst.state {
                InstanceState::Pending if t >= inst.ready_at => {
                    inst.state = InstanceState::Running;
                    self.events.push(CloudEvent::InstanceRunning { id: inst.id.clone() });
                }
                InstanceState::ShuttingDown if inst.terminated_at.is_some_and(|at| t >= at) => {
                    inst.state = InstanceState::Terminated;
                    self.events.push(CloudEvent::InstanceTerminated { id: inst.id.clone() });
                }
                _ => {}
            }
        }
        let instances = &self.instances;
        for asg in self.asgs.values_mut() {
            asg.instance_ids.retain(|id| instances.get(id).is_some_and(|i| i.state != InstanceState::Terminated));
        }
        std::mem::take(&mut self.events)
    }

    fn live_members<'a>(&'a self, asg: &'a AutoScalingGroup) -> impl Iterator<Item = &'a Instance> + 'a {
        asg.instance_ids.iter().filter_map(|id| self.instances.get(id)).filter(|i| i.state.is_live())
    }

    fn reconcile_asg(&mut self, name: &str, t: SimTime) {
        let Some(asg) = self.asgs.get(name) else { return };
        let desired = asg.desired_capacity as usize;
        let live = self.live_members(asg).count();
        if live < desired {
            if t < asg.next_launch_attempt_at {
                return;
            }
            for _ in live..desired {
                match self.asg_launch_one(name, t) {
                    Ok(id) => {
                        if let Some(asg) = self.asgs.get_mut(name) {
                            let cause = asg.last_cause.clone();
                            asg.activities.push(ScalingActivity {
                                t,
                                description: format!("Launching a new EC2 instance: {id}"),
                                cause,
                                status: ActivityStatus::Successful,
                                status_message: None,
                            });
                        }
                    }
                    Err(e) => {
                        let reason = e.to_string();
                        if let Some(asg) = self.asgs.get_mut(name) {
                            let cause = asg.last_cause.clone();
                            asg.activities.push(ScalingActivity {
                                t,
                                description: format!("Launching a new EC2 instance.  Status Reason: {reason}"),
                                cause,
                                status: ActivityStatus::Failed,
                                status_message: Some(reason.clone()),
                            });
                            asg.next_launch_attempt_at = t + self.config.launch_retry_seconds;
                        }
                        self.events.push(CloudEvent::LaunchFailed { asg: name.to_string(), reason });
                        break;
                    }
                }
            }
        } else if live > desired {
            for _ in desired..live {
                let Some(id) = self.pick_for_scale_in(name, t) else { break };
                self.begin_termination(&id, t);
                if let Some(asg) = self.asgs.get_mut(name) {
                    let cause = format!(
                        "{} An instance was taken out of service in response to a difference between desired and actual capacity, shrinking the capacity from {live} to {desired}.",
                        asg.last_cause
                    );
                    asg.activities.push(ScalingActivity {
                        t,
                        description: format!("Terminating EC2 instance: {id}"),
                        cause,
                        status: ActivityStatus::Successful,
                        status_message: None,
                    });
                }
            }
        }
    }

    fn asg_launch_one(&mut self, name: &str, t: SimTime) -> Result<String, CloudError> {
        let asg = self.asgs.get(name).ok_or_else(|| CloudError::AutoScalingGroupNotFound { name: name.to_string() })?;
        let live: Vec<&Instance> = self.live_members(asg).collect();
        let od_live = live.iter().filter(|i| i.capacity_type == CapacityType::OnDemand).count();
        let od_target = asg.on_demand_target(asg.desired_capacity) as usize;
        let capacity_type = if od_live < od_target { CapacityType::OnDemand } else { CapacityType::Spot };

        let mut zones: Vec<(usize, usize, &String)> = asg
            .zones
            .iter()
            .enumerate()
            .map(|(idx, z)| (live.iter().filter(|i| &i.zone == z).count(), idx, z))
            .collect();
        zones.sort();
        let mut types: Vec<(usize, &'static InstanceType)> =
            asg.instance_types.iter().filter_map(|n| instance_types::find(n)).enumerate().collect();
        if capacity_type == CapacityType::Spot {
            types.sort_by(|a, b| a.1.spot_usd_per_hour.total_cmp(&b.1.spot_usd_per_hour).then(a.0.cmp(&b.0)));
        }
        self.check_instance_limit(1)?;

        let mut first_err = None;
        let mut choice = None;
        'zones: for (_, _, zone) in &zones {
            for (_, ty) in &types {
                match self.offering_error(ty, zone, capacity_type) {
                    None => {
                        choice = Some((*ty, (*zone).clone()));
                        break 'zones;
                    }
                    Some(e) => {
                        first_err.get_or_insert(e);
                    }
                }
            }
        }
        let Some((ty, zone)) = choice else {
            return Err(first_err.unwrap_or_else(|| CloudError::validation("The group has no usable instance types")));
        };
        let subnet = self.subnet_for(&asg.subnet_ids, &zone);
        let mut tags = asg.tags.clone();
        tags.insert(ASG_NAME_TAG.to_string(), name.to_string());
        let id = self.launch_one(ty, &zone, subnet, capacity_type, tags, Some(name.to_string()), t);
        if let Some(asg) = self.asgs.get_mut(name) {
            asg.instance_ids.push(id.clone());
        }
        Ok(id)
    }

    /// The group's first subnet in `zone`, else any subnet of the cloud in that zone.
    fn subnet_for(&self, group_subnets: &[String], zone: &str) -> Option<String> {
        group_subnets
            .iter()
            .find(|id| self.subnets.get(*id).is_some_and(|s| s.zone == zone))
            .cloned()
            .or_else(|| self.subnets.values().find(|s| s.zone == zone).map(|s| s.id.clone()))
    }

    fn pick_for_scale_in(&self, name: &str, t: SimTime) -> Option<String> {
        let asg = self.asgs.get(name)?;
        let live: Vec<&Instance> = self.live_members(asg).collect();
        let desired = asg.desired_capacity;
        let od_target = asg.on_demand_target(desired) as usize;
        let spot_target = desired as usize - od_target.min(desired as usize);
        let od_live = live.iter().filter(|i| i.capacity_type == CapacityType::OnDemand).count();
        let spot_live = live.len() - od_live;
        let pool: Vec<&Instance> = if od_live > od_target {
            live.into_iter().filter(|i| i.capacity_type == CapacityType::OnDemand).collect()
        } else if spot_live > spot_target {
            live.into_iter().filter(|i| i.capacity_type == CapacityType::Spot).collect()
        } else {
            live
        };
        let zone_rank = |zone: &str| asg.zones.iter().position(|z| z == zone).unwrap_or(usize::MAX);
        let zone = pool
            .iter()
            .map(|i| i.zone.as_str())
            .max_by_key(|z| (pool.iter().filter(|i| i.zone == *z).count(), zone_rank(z)))?;
        let billing = |i: &Instance| (t - i.launch_time).rem_euclid(3600.0);
        pool.iter()
            .filter(|i| i.zone == zone)
            .max_by(|a, b| billing(a).total_cmp(&billing(b)).then(a.id.cmp(&b.id)))
            .map(|i| i.id.clone())
    }

    fn check_instance_limit(&self, requested: u32) -> Result<(), CloudError> {
        if let Some(limit) = self.config.max_instances {
            let live = self.live_instances().count();
            if live >= limit as usize {
                return Err(CloudError::InstanceLimitExceeded { requested, limit });
            }
        }
        Ok(())
    }

    /// Why one more instance of this pool can't be launched now, if it can't.
    fn offering_error(&self, ty: &InstanceType, zone: &str, capacity_type: CapacityType) -> Option<CloudError> {
        if !ty.offered_in(zone) {
            return Some(CloudError::Unsupported { instance_type: ty.name.to_string(), zone: zone.to_string() });
        }
        let limit = self
            .config
            .capacity_limits
            .iter()
            .find(|l| l.instance_type == ty.name && l.zone == zone && l.capacity_type == capacity_type)?;
        let used = self
            .instances
            .values()
            .filter(|i| {
                i.state != InstanceState::Terminated
                    && i.instance_type == ty.name
                    && i.zone == zone
                    && i.capacity_type == capacity_type
            })
            .count();
        (used >= limit.max_instances as usize).then(|| CloudError::InsufficientInstanceCapacity {
            instance_type: ty.name.to_string(),
            zone: zone.to_string(),
            capacity_type,
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn launch_one(
        &mut self,
        ty: &InstanceType,
        zone: &str,
        subnet_id: Option<String>,
        capacity_type: CapacityType,
        tags: Tags,
        asg_name: Option<String>,
        t: SimTime,
    ) -> String {
        self.instance_counter += 1;
        let n = self.instance_counter;
        let id = format!("i-{n:017x}");
        // 10.0.0.5 onwards, skipping the addresses AWS reserves at the start of a range.
        let (x, y) = ((n / 250) % 256, n % 250 + 4);
        let inst = Instance {
            id: id.clone(),
            instance_type: ty.name.to_string(),
            zone: zone.to_string(),
            subnet_id,
            capacity_type,
            state: InstanceState::Pending,
            launch_time: t,
            ready_at: t + self.config.boot_delay_seconds,
            shutdown_at: None,
            terminated_at: None,
            private_ip: format!("10.0.{x}.{y}"),
            private_dns_name: format!("ip-10-0-{x}-{y}.ec2.internal"),
            provider_id: format!("aws:///{zone}/{id}"),
            tags,
            asg_name,
            price_usd_per_hour: ty.price(capacity_type),
        };
        self.instances.insert(id.clone(), inst);
        self.events.push(CloudEvent::InstanceLaunched { id: id.clone() });
        id
    }

    fn begin_termination(&mut self, id: &str, t: SimTime) {
        if let Some(inst) = self.instances.get_mut(id) {
            if inst.state.is_live() {
                inst.state = InstanceState::ShuttingDown;
                inst.shutdown_at = Some(t);
                inst.terminated_at = Some(t + self.config.termination_delay_seconds);
                self.events.push(CloudEvent::InstanceTerminating { id: id.to_string() });
            }
        }
    }
}

fn check_bounds(min: u32, max: u32) -> Result<(), CloudError> {
    if min > max {
        return Err(CloudError::validation(format!(
            "Max bound, {max}, must be greater than or equal to min bound, {min}"
        )));
    }
    Ok(())
}

fn check_desired(desired: u32, min: u32, max: u32) -> Result<(), CloudError> {
    if desired < min || desired > max {
        return Err(CloudError::validation(format!(
            "Desired capacity:{desired} must be between the specified min size:{min} and max size:{max}"
        )));
    }
    Ok(())
}

fn set_desired(asg: &mut AutoScalingGroup, desired: u32, t: SimTime, why: &str) {
    if desired != asg.desired_capacity {
        asg.last_cause =
            format!("At {} {why} changing the desired capacity from {} to {desired}.", fmt_t(t), asg.desired_capacity);
        asg.desired_capacity = desired;
        // An explicit change is acted on at once, even during a failure backoff.
        asg.next_launch_attempt_at = t;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cloud() -> Cloud {
        Cloud::new(CloudConfig::default())
    }

    fn spot_spec(name: &str, desired: u32) -> AutoScalingGroupSpec {
        let mut s = AutoScalingGroupSpec::new(name, 0, 10, &["t2.small", "t3.small"]);
        s.desired_capacity = Some(desired);
        s.on_demand_percentage_above_base_capacity = 50;
        s.zones = vec!["us-east-1a".into(), "us-east-1b".into()];
        s
    }

    fn count_state(c: &Cloud, state: InstanceState) -> usize {
        c.instances().filter(|i| i.state == state).count()
    }

    fn count_events(events: &[CloudEvent], f: fn(&CloudEvent) -> bool) -> usize {
        events.iter().filter(|e| f(e)).count()
    }

    #[test]
    fn desired_capacity_bounds() {
        let mut c = cloud();
        let mut s = AutoScalingGroupSpec::new("ng", 1, 5, &["t3.small"]);
        s.desired_capacity = Some(1);
        c.create_auto_scaling_group(s, 0.0).unwrap();
        let err = c.set_desired_capacity("ng", 6, 1.0).unwrap_err();
        assert_eq!(err.to_string(), "New SetDesiredCapacity value 6 is above max value 5 for the AutoScalingGroup.");
        assert_eq!(err.code(), "ValidationError");
        let err = c.set_desired_capacity("ng", 0, 1.0).unwrap_err();
        assert_eq!(err.to_string(), "New SetDesiredCapacity value 0 is below min value 1 for the AutoScalingGroup.");
        let err = c.set_desired_capacity("nope", 1, 1.0).unwrap_err();
        assert!(matches!(err, CloudError::AutoScalingGroupNotFound { .. }));
        c.set_desired_capacity("ng", 5, 1.0).unwrap();
        assert_eq!(c.auto_scaling_group("ng").unwrap().desired_capacity, 5);
        assert!(c.auto_scaling_group("ng").unwrap().last_cause.contains("from 1 to 5"));
    }

    #[test]
    fn create_validation() {
        let mut c = cloud();
        let err = c.create_auto_scaling_group(AutoScalingGroupSpec::new("a", 3, 2, &["t3.small"]), 0.0).unwrap_err();
        assert_eq!(err.to_string(), "Max bound, 2, must be greater than or equal to min bound, 3");
        let mut s = AutoScalingGroupSpec::new("a", 1, 2, &["t3.small"]);
        s.desired_capacity = Some(3);
        let err = c.create_auto_scaling_group(s, 0.0).unwrap_err();
        assert_eq!(err.to_string(), "Desired capacity:3 must be between the specified min size:1 and max size:2");
        let err = c.create_auto_scaling_group(AutoScalingGroupSpec::new("a", 0, 2, &["t9.huge"]), 0.0).unwrap_err();
        assert_eq!(err, CloudError::UnknownInstanceType { name: "t9.huge".into() });
        let mut s = AutoScalingGroupSpec::new("a", 0, 2, &["t3.small"]);
        s.zones = vec!["us-west-2a".into()];
        assert!(c.create_auto_scaling_group(s, 0.0).is_err());
        c.create_auto_scaling_group(AutoScalingGroupSpec::new("a", 0, 2, &["t3.small"]), 0.0).unwrap();
        let err = c.create_auto_scaling_group(AutoScalingGroupSpec::new("a", 0, 2, &["t3.small"]), 0.0).unwrap_err();
        assert_eq!(err.code(), "AlreadyExists");
        let err =
            c.update_auto_scaling_group("a", UpdateAutoScalingGroup { min_size: Some(3), ..Default::default() }, 0.0);
        assert!(err.unwrap_err().to_string().starts_with("Max bound, 2"));
    }

    #[test]
    fn update_clamps_desired() {
        let mut c = cloud();
        c.create_auto_scaling_group(AutoScalingGroupSpec::new("a", 0, 5, &["t3.small"]), 0.0).unwrap();
        let u = UpdateAutoScalingGroup { min_size: Some(2), ..Default::default() };
        c.update_auto_scaling_group("a", u, 1.0).unwrap();
        assert_eq!(c.auto_scaling_group("a").unwrap().desired_capacity, 2);
        let u = UpdateAutoScalingGroup { min_size: Some(0), max_size: Some(1), desired_capacity: None };
        c.update_auto_scaling_group("a", u, 2.0).unwrap();
        assert_eq!(c.auto_scaling_group("a").unwrap().desired_capacity, 1);
        let u = UpdateAutoScalingGroup { desired_capacity: Some(4), ..Default::default() };
        let err = c.update_auto_scaling_group("a", u, 3.0).unwrap_err();
        assert_eq!(err.to_string(), "Desired capacity:4 must be between the specified min size:0 and max size:1");
    }

    #[test]
    fn scale_out_and_boot_delay() {
        let mut c = cloud();
        c.create_auto_scaling_group(AutoScalingGroupSpec::new("ng", 0, 5, &["t3.small"]), 0.0).unwrap();
        assert!(c.tick(0.0).is_empty());
        c.set_desired_capacity("ng", 3, 10.0).unwrap();
        let ev = c.tick(10.0);
        assert_eq!(count_events(&ev, |e| matches!(e, CloudEvent::InstanceLaunched { .. })), 3);
        assert_eq!(count_state(&c, InstanceState::Pending), 3);
        assert!(c.tick(54.999).is_empty());
        let ev = c.tick(55.0);
        assert_eq!(count_events(&ev, |e| matches!(e, CloudEvent::InstanceRunning { .. })), 3);
        assert_eq!(count_state(&c, InstanceState::Running), 3);
        assert!(c.tick(60.0).is_empty());
        let asg = c.auto_scaling_group("ng").unwrap();
        assert_eq!(asg.instance_ids.len(), 3);
        assert_eq!(asg.activities.len(), 3);
        assert!(asg.activities[0].description.starts_with("Launching a new EC2 instance: i-"));
        let inst = c.instance(&asg.instance_ids[0]).unwrap();
        assert_eq!(inst.tags.get(ASG_NAME_TAG).map(String::as_str), Some("ng"));
        assert_eq!(inst.asg_name.as_deref(), Some("ng"));
    }

    #[test]
    fn scale_in_and_termination_delay() {
        let mut c = cloud();
        let mut s = AutoScalingGroupSpec::new("ng", 0, 6, &["t3.small"]);
        s.desired_capacity = Some(3);
        c.create_auto_scaling_group(s, 0.0).unwrap();
        c.tick(0.0);
        c.tick(45.0);
        c.set_desired_capacity("ng", 1, 100.0).unwrap();
        let ev = c.tick(100.0);
        assert_eq!(count_events(&ev, |e| matches!(e, CloudEvent::InstanceTerminating { .. })), 2);
        assert_eq!(count_state(&c, InstanceState::ShuttingDown), 2);
        assert!(c.hourly_cost() > 0.0 && c.hourly_cost() < 0.021);
        assert!(c.tick(129.9).is_empty());
        let ev = c.tick(130.0);
        assert_eq!(count_events(&ev, |e| matches!(e, CloudEvent::InstanceTerminated { .. })), 2);
        assert_eq!(c.auto_scaling_group("ng").unwrap().instance_ids.len(), 1);
        assert_eq!(count_state(&c, InstanceState::Terminated), 2);
    }

    #[test]
    fn zones_stay_balanced() {
        let mut c = cloud();
        let mut s = AutoScalingGroupSpec::new("ng", 0, 10, &["t3.small"]);
        s.desired_capacity = Some(6);
        c.create_auto_scaling_group(s, 0.0).unwrap();
        c.tick(0.0);
        let per_zone = |c: &Cloud| {
            c.zones().iter().map(|z| c.live_instances().filter(|i| &i.zone == z).count()).collect::<Vec<_>>()
        };
        assert_eq!(per_zone(&c), vec![2, 2, 2]);
        c.set_desired_capacity("ng", 4, 10.0).unwrap();
        c.tick(10.0);
        assert_eq!(per_zone(&c), vec![2, 1, 1]);
        c.set_desired_capacity("ng", 5, 20.0).unwrap();
        c.tick(20.0);
        assert_eq!(per_zone(&c), vec![2, 2, 1]);
    }

    #[test]
    fn mixed_instances_split() {
        let mut c = cloud();
        c.create_auto_scaling_group(spot_spec("spot", 4), 0.0).unwrap();
        c.tick(0.0);
        let live: Vec<&Instance> = c.live_instances().collect();
        let od: Vec<&&Instance> = live.iter().filter(|i| i.capacity_type == CapacityType::OnDemand).collect();
        let spot: Vec<&&Instance> = live.iter().filter(|i| i.capacity_type == CapacityType::Spot).collect();
        assert_eq!((od.len(), spot.len()), (2, 2));
        // On-demand honours the listed priority; spot takes the cheapest pool.
        assert!(od.iter().all(|i| i.instance_type == "t2.small"));
        assert!(spot.iter().all(|i| i.instance_type == "t3.small"));
        let expected = 2.0 * 0.023 + 2.0 * 0.0208 * 0.3;
        assert!((c.hourly_cost() - expected).abs() < 1e-9);

        let asg = c.auto_scaling_group("spot").unwrap();
        assert_eq!(asg.on_demand_target(3), 2);
        assert_eq!(asg.on_demand_target(1), 1);
        assert_eq!(asg.on_demand_target(0), 0);
        let mut s = spot_spec("based", 0);
        s.on_demand_base_capacity = 2;
        s.on_demand_percentage_above_base_capacity = 0;
        c.create_auto_scaling_group(s, 0.0).unwrap();
        let b = c.auto_scaling_group("based").unwrap();
        assert_eq!((b.on_demand_target(1), b.on_demand_target(5)), (1, 2));

        // Scale-in removes from the over-target capacity type.
        c.set_desired_capacity("spot", 2, 10.0).unwrap();
        c.tick(10.0);
        let live: Vec<&Instance> = c.live_instances().filter(|i| i.asg_name.as_deref() == Some("spot")).collect();
        assert_eq!(live.iter().filter(|i| i.capacity_type == CapacityType::OnDemand).count(), 1);
        assert_eq!(live.iter().filter(|i| i.capacity_type == CapacityType::Spot).count(), 1);
    }

    #[test]
    fn terminate_in_asg() {
        let mut c = cloud();
        let mut s = AutoScalingGroupSpec::new("ng", 1, 5, &["t3.small"]);
        s.desired_capacity = Some(3);
        c.create_auto_scaling_group(s, 0.0).unwrap();
        c.tick(0.0);
        let ids = c.auto_scaling_group("ng").unwrap().instance_ids.clone();
        let act = c.terminate_instance_in_auto_scaling_group(&ids[0], true, 50.0).unwrap();
        assert!(act.cause.contains("shrinking the capacity from 3 to 2"));
        assert_eq!(c.auto_scaling_group("ng").unwrap().desired_capacity, 2);
        let ev = c.tick(50.0);
        assert_eq!(
            ev,
            vec![
                CloudEvent::InstanceTerminating { id: ids[0].clone() },
                CloudEvent::InstanceRunning { id: ids[1].clone() },
                CloudEvent::InstanceRunning { id: ids[2].clone() },
            ]
        );
        // Without decrement the group replaces the instance.
        c.terminate_instance_in_auto_scaling_group(&ids[1], false, 60.0).unwrap();
        let ev = c.tick(60.0);
        assert_eq!(count_events(&ev, |e| matches!(e, CloudEvent::InstanceLaunched { .. })), 1);
        assert_eq!(c.auto_scaling_group("ng").unwrap().desired_capacity, 2);
        // Down to min: decrementing would violate it.
        c.terminate_instance_in_auto_scaling_group(&ids[2], true, 70.0).unwrap();
        let last = c.auto_scaling_group("ng").unwrap().instance_ids.last().cloned().unwrap();
        let err = c.terminate_instance_in_auto_scaling_group(&last, true, 71.0).unwrap_err();
        assert!(err.to_string().starts_with("Currently, desiredSize equals minSize (1)."), "{err}");
        let err = c.terminate_instance_in_auto_scaling_group("i-nope", true, 71.0).unwrap_err();
        assert!(err.to_string().contains("No managed instance found for instance ID: i-nope"));
    }

    #[test]
    fn ec2_terminate_replaces_asg_member() {
        let mut c = cloud();
        let mut s = AutoScalingGroupSpec::new("ng", 0, 5, &["t3.small"]);
        s.desired_capacity = Some(1);
        c.create_auto_scaling_group(s, 0.0).unwrap();
        c.tick(0.0);
        let id = c.auto_scaling_group("ng").unwrap().instance_ids[0].clone();
        assert!(c.terminate_instances(&[id.as_str(), "i-missing"], 1.0).is_err());
        assert_eq!(c.instance(&id).unwrap().state, InstanceState::Pending);
        assert_eq!(c.terminate_instances(&[id.as_str()], 1.0).unwrap(), vec![id.clone()]);
        assert!(c.terminate_instances(&[id.as_str()], 2.0).unwrap().is_empty());
        let ev = c.tick(2.0);
        assert_eq!(count_events(&ev, |e| matches!(e, CloudEvent::InstanceLaunched { .. })), 1);
        assert_eq!(c.auto_scaling_group("ng").unwrap().desired_capacity, 1);
    }

    #[test]
    fn groupless_launch_falls_back_on_insufficient_capacity() {
        let mut c = cloud();
        c.add_subnet(Subnet { id: "subnet-a".into(), zone: "us-east-1a".into(), tags: Tags::new() }).unwrap();
        c.set_capacity_limit(CapacityLimit {
            instance_type: "t3.small".into(),
            zone: "us-east-1a".into(),
            capacity_type: CapacityType::Spot,
            max_instances: 1,
        });
        let cand = |ty: &str, zone: &str, ct| LaunchCandidate {
            instance_type: ty.into(),
            zone: zone.into(),
            subnet_id: None,
            capacity_type: ct,
        };
        let req = LaunchRequest {
            candidates: vec![
                cand("t3.medium", "us-east-1a", CapacityType::Spot),
                cand("t3.small", "us-east-1a", CapacityType::Spot),
                cand("t3.small", "us-east-1a", CapacityType::OnDemand),
                cand("t2.small", "us-east-1c", CapacityType::Spot),
            ],
            count: 3,
            strategy: AllocationStrategy::LowestPrice,
            tags: [("karpenter.sh/nodepool".to_string(), "default".to_string())].into(),
        };
        let out = c.launch_instances(req.clone(), 5.0).unwrap();
        let types: Vec<&str> =
            out.instance_ids.iter().map(|id| c.instance(id).unwrap().instance_type.as_str()).collect();
        assert_eq!(types, vec!["t3.small", "t3.medium", "t3.medium"]);
        assert!(
            out.errors
                .contains(&CloudError::Unsupported { instance_type: "t2.small".into(), zone: "us-east-1c".into() })
        );
        assert!(out.errors.iter().any(|e| e.code() == "InsufficientInstanceCapacity"));
        assert!(c.instance(&out.instance_ids[0]).unwrap().tags.contains_key("karpenter.sh/nodepool"));

        // Prioritized keeps the given order.
        let mut p = req.clone();
        p.strategy = AllocationStrategy::Prioritized;
        p.count = 1;
        p.candidates.swap(0, 2);
        let out = c.launch_instances(p, 6.0).unwrap();
        assert_eq!(c.instance(&out.instance_ids[0]).unwrap().capacity_type, CapacityType::OnDemand);

        // Nothing available: an empty outcome, not an error.
        let mut none = req.clone();
        none.candidates = vec![cand("t3.small", "us-east-1a", CapacityType::Spot)];
        let out = c.launch_instances(none, 7.0).unwrap();
        assert!(out.instance_ids.is_empty());
        assert_eq!(out.errors.len(), 1);

        let mut bad = req;
        bad.candidates = vec![cand("t3.small", "us-east-1a", CapacityType::Spot)];
        bad.candidates[0].subnet_id = Some("subnet-zzz".into());
        assert_eq!(c.launch_instances(bad, 8.0).unwrap_err().code(), "InvalidSubnetID.NotFound");
    }

    #[test]
    fn asg_launch_failure_and_retry() {
        let mut c = cloud();
        let mut s = AutoScalingGroupSpec::new("ng", 0, 5, &["t3.small"]);
        s.zones = vec!["us-east-1a".into(), "us-east-1b".into()];
        s.desired_capacity = Some(2);
        c.create_auto_scaling_group(s, 0.0).unwrap();
        let limit = |zone: &str| CapacityLimit {
            instance_type: "t3.small".into(),
            zone: zone.into(),
            capacity_type: CapacityType::OnDemand,
            max_instances: 0,
        };
        c.set_capacity_limit(limit("us-east-1a"));
        c.tick(0.0);
        // Zone a has no capacity: both land in b.
        assert!(c.live_instances().all(|i| i.zone == "us-east-1b"));
        assert_eq!(c.live_instances().count(), 2);

        c.set_capacity_limit(limit("us-east-1b"));
        c.set_desired_capacity("ng", 3, 10.0).unwrap();
        let ev = c.tick(10.0);
        assert!(
            matches!(&ev[..], [CloudEvent::LaunchFailed { asg, reason }] if asg == "ng" && reason.contains("sufficient"))
        );
        let asg = c.auto_scaling_group("ng").unwrap();
        assert_eq!(asg.activities.last().unwrap().status, ActivityStatus::Failed);
        // Backoff: no retry before launch_retry_seconds.
        c.clear_capacity_limit("t3.small", "us-east-1a", CapacityType::OnDemand);
        assert!(c.tick(39.0).iter().all(|e| !matches!(e, CloudEvent::InstanceLaunched { .. })));
        let ev = c.tick(40.0);
        assert_eq!(count_events(&ev, |e| matches!(e, CloudEvent::InstanceLaunched { .. })), 1);
    }

    #[test]
    fn instance_limit() {
        let mut c = Cloud::new(CloudConfig { max_instances: Some(1), ..CloudConfig::default() });
        let mut s = AutoScalingGroupSpec::new("ng", 0, 5, &["t3.small"]);
        s.desired_capacity = Some(2);
        c.create_auto_scaling_group(s, 0.0).unwrap();
        let ev = c.tick(0.0);
        assert_eq!(count_events(&ev, |e| matches!(e, CloudEvent::InstanceLaunched { .. })), 1);
        assert!(ev.iter().any(|e| matches!(e, CloudEvent::LaunchFailed { .. })));
    }

    #[test]
    fn deterministic_ids_and_names() {
        let run = || {
            let mut c = cloud();
            c.add_subnet(Subnet { id: "subnet-a".into(), zone: "us-east-1a".into(), tags: Tags::new() }).unwrap();
            let mut s = AutoScalingGroupSpec::new("ng", 0, 5, &["m5.large"]);
            s.desired_capacity = Some(2);
            s.zones = vec!["us-east-1a".into()];
            c.create_auto_scaling_group(s, 0.0).unwrap();
            c.tick(0.0);
            c.instances().cloned().collect::<Vec<_>>()
        };
        let a = run();
        assert_eq!(a, run());
        assert_eq!(a[0].id, "i-00000000000000001");
        assert_eq!(a[0].id.len(), 19);
        assert_eq!(a[1].id, "i-00000000000000002");
        assert_eq!(a[0].private_dns_name, "ip-10-0-0-5.ec2.internal");
        assert_eq!(a[0].private_ip, "10.0.0.5");
        assert_eq!(a[0].provider_id, "aws:///us-east-1a/i-00000000000000001");
        assert_eq!(a[0].subnet_id.as_deref(), Some("subnet-a"));
    }

    #[test]
    fn describe_by_tags() {
        let mut c = cloud();
        let tags = |k: &str, v: &str| -> Tags { [(k.to_string(), v.to_string())].into() };
        c.add_subnet(Subnet {
            id: "s-1".into(),
            zone: "us-east-1a".into(),
            tags: tags("karpenter.sh/discovery", "demo"),
        })
        .unwrap();
        c.add_subnet(Subnet {
            id: "s-2".into(),
            zone: "us-east-1b".into(),
            tags: tags("karpenter.sh/discovery", "other"),
        })
        .unwrap();
        c.add_security_group(SecurityGroup { id: "sg-1".into(), tags: tags("karpenter.sh/discovery", "demo") })
            .unwrap();
        let ids = |v: Vec<&Subnet>| v.into_iter().map(|s| s.id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(c.describe_subnets_by_tags(&[("karpenter.sh/discovery", "demo")])), vec!["s-1"]);
        assert_eq!(ids(c.describe_subnets_by_tags(&[("karpenter.sh/discovery", "*")])), vec!["s-1", "s-2"]);
        assert!(c.describe_subnets_by_tags(&[("nope", "*")]).is_empty());
        assert_eq!(c.describe_security_groups_by_tags(&[("karpenter.sh/discovery", "demo")]).len(), 1);
        assert!(c.add_subnet(Subnet { id: "s-3".into(), zone: "eu-west-1a".into(), tags: Tags::new() }).is_err());

        let mut s = AutoScalingGroupSpec::new("ng", 0, 5, &["t3.small"]);
        s.tags = tags("k8s.io/cluster-autoscaler/enabled", "true");
        c.create_auto_scaling_group(s, 0.0).unwrap();
        c.create_auto_scaling_group(AutoScalingGroupSpec::new("other", 0, 5, &["t3.small"]), 0.0).unwrap();
        let found = c.describe_auto_scaling_groups_by_tags(&[("k8s.io/cluster-autoscaler/enabled", "*")]);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].name, "ng");
    }

    #[test]
    fn launch_templates() {
        let mut c = cloud();
        let id = c.create_launch_template("lt", Some("t3.small")).unwrap();
        assert_eq!(id, "lt-00000000000000001");
        assert!(c.create_launch_template("lt", None).is_err());
        let mut s = AutoScalingGroupSpec::new("ng", 0, 1, &["t3.small"]);
        s.launch_template_name = Some("missing".into());
        assert_eq!(
            c.create_auto_scaling_group(s.clone(), 0.0).unwrap_err().code(),
            "InvalidLaunchTemplateName.NotFoundException"
        );
        s.launch_template_name = Some("lt".into());
        c.create_auto_scaling_group(s, 0.0).unwrap();
    }
}
