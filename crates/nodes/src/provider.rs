//! The cloud-provider port: node groups as the engines see them, and the calls that change them.
//!
//! The shapes follow what an Auto Scaling Group exposes (min/max/desired, instances with their
//! lifecycle, the instance types a mixed-instances policy may launch, tags), so the Cluster
//! Autoscaler tag conventions (`k8s.io/cluster-autoscaler/node-template/*`) can be interpreted
//! by the pure engines rather than by each provider.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;

use jiff::Timestamp;

/// A boxed future, so the trait stays object-safe (`Arc<dyn CloudProvider>`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// How a NodePool names its groups.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum GroupSource {
    /// One group by name.
    Name(String),
    /// Every group carrying all these tags; an empty value matches any value (Cluster
    /// Autoscaler's `--node-group-auto-discovery=asg:tag=k1,k2=v`).
    Tags(BTreeMap<String, String>),
}

impl GroupSource {
    /// Cluster Autoscaler's discovery tags for `cluster`, plus `extra`.
    pub fn cluster_autoscaler(cluster: &str, extra: &BTreeMap<String, String>) -> Self {
        let mut tags = extra.clone();
        tags.insert("k8s.io/cluster-autoscaler/enabled".into(), String::new());
        tags.insert(format!("k8s.io/cluster-autoscaler/{cluster}"), String::new());
        GroupSource::Tags(tags)
    }

    /// Whether a group with this name and these tags is selected.
    pub fn selects(&self, name: &str, tags: &BTreeMap<String, String>) -> bool {
        match self {
            GroupSource::Name(n) => n == name,
            GroupSource::Tags(want) => {
                want.iter().all(|(k, v)| tags.get(k).is_some_and(|have| v.is_empty() || have == v))
            }
        }
    }
}

/// Where an instance is in its life, as the Auto Scaling Group reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum InstanceState {
    /// Launching (`Pending`, `Pending:Wait`, `Pending:Proceed`).
    Pending,
    /// `InService` (and `Standby`-like states that still hold capacity).
    Running,
    /// Leaving (`Terminating*`, `Terminated`, `Detaching`, ...): never counted, never acted on.
    Terminating,
}

impl InstanceState {
    /// Where an instance is, from its Auto Scaling lifecycle state (`LifecycleState`), for every
    /// reader of Auto Scaling's answers (the AWS provider, `omniscale plan`'s AWS CLI input).
    ///
    /// Standby and root-volume replacement keep the instance (and its capacity); anything leaving
    /// the group, or parked in a warm pool, is `Terminating` so it is neither counted nor acted
    /// on. A state this code does not know yet counts as `Pending`: capacity, but not yet a node.
    pub fn from_lifecycle(lifecycle: &str) -> Self {
        const LEAVING: &[&str] = &["Terminat", "Detach", "Warmed"];
        const HOLDING: &[&str] = &["InService", "Standby", "EnteringStandby", "Quarantined", "RootVolumeReplaced"];
        if LEAVING.iter().any(|p| lifecycle.starts_with(p)) {
            InstanceState::Terminating
        } else if HOLDING.contains(&lifecycle) || lifecycle.starts_with("ReplacingRootVolume") {
            InstanceState::Running
        } else {
            // `Pending`, `Pending:Wait`, `Pending:Proceed`, and states newer than this code.
            InstanceState::Pending
        }
    }
}

/// One member of a group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Instance {
    /// The EC2 instance id, `i-...`.
    pub id: String,
    /// Availability zone.
    pub zone: String,
    /// The instance type, when the provider knows it.
    pub instance_type: Option<String>,
    pub state: InstanceState,
}

impl Instance {
    /// The Node's `spec.providerID` for this instance (`aws:///<zone>/<id>`), the join key
    /// between nodes and instances.
    pub fn provider_id(&self) -> String {
        format!("aws:///{}/{}", self.zone, self.id)
    }
}

/// What the cloud says about an instance type (EC2 `DescribeInstanceTypes`).
#[derive(Clone, Debug, PartialEq)]
pub struct InstanceTypeInfo {
    pub name: String,
    pub vcpu: u32,
    pub memory_mib: u64,
    pub gpus: u32,
    /// `amd64` or `arm64`, as the `kubernetes.io/arch` label spells it.
    pub arch: String,
    /// Pods per node, when the provider knows the type's network limits (EKS's
    /// `ENIs × (IPv4 per ENI − 1) + 2`).
    pub max_pods: Option<u32>,
}

/// One node group (an Auto Scaling Group).
#[derive(Clone, Debug, PartialEq)]
pub struct NodeGroup {
    pub name: String,
    pub min_size: u32,
    pub max_size: u32,
    /// Desired capacity: the target the group converges to.
    pub desired: u32,
    pub instances: Vec<Instance>,
    /// Every type the group may launch: the launch template's (or launch configuration's)
    /// type and every override of a mixed-instances policy, in the order AWS lists them.
    pub instance_types: Vec<InstanceTypeInfo>,
    /// Availability zones the group launches into.
    pub zones: Vec<String>,
    /// The group's tags, including `k8s.io/cluster-autoscaler/node-template/*`.
    pub tags: BTreeMap<String, String>,
    /// The newest scaling activity that failed, with its time and status message: the group
    /// could not launch what was asked (capacity, quota, bad launch template).
    pub last_failed_activity: Option<(Timestamp, String)>,
}

impl NodeGroup {
    /// Instances holding or about to hold capacity.
    pub fn live(&self) -> impl Iterator<Item = &Instance> {
        self.instances.iter().filter(|i| i.state != InstanceState::Terminating)
    }
}

/// Why a provider call failed, sorted by what the caller should do about it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// Rate limited (`Throttling`, `RequestLimitExceeded`): retry with backoff.
    #[error("throttled: {0}")]
    Throttled(String),
    /// Network trouble or a 5xx: retry with backoff.
    #[error("transient: {0}")]
    Transient(String),
    /// The group or instance does not exist (any more).
    #[error("not found: {0}")]
    NotFound(String),
    /// The request was refused as invalid (e.g. desired capacity outside min/max).
    #[error("rejected: {0}")]
    Rejected(String),
    /// Credentials, permissions, configuration: retrying will not help until someone acts.
    #[error("{0}")]
    Fatal(String),
}

impl ProviderError {
    /// Whether retrying the same call later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, ProviderError::Throttled(_) | ProviderError::Transient(_))
    }
}

/// The cloud as the node shell uses it. Implementations cache describes (the engines run on
/// every pending pod) and refresh on their own schedule or when a write invalidated the cache.
pub trait CloudProvider: Send + Sync + std::fmt::Debug {
    /// Every group some source selects, deduplicated, in name order.
    fn node_groups<'a>(&'a self, sources: &'a [GroupSource]) -> BoxFuture<'a, Result<Vec<NodeGroup>, ProviderError>>;

    /// Sets a group's desired capacity (`SetDesiredCapacity`, `HonorCooldown=false`).
    fn set_desired_capacity<'a>(&'a self, group: &'a str, desired: u32) -> BoxFuture<'a, Result<(), ProviderError>>;

    /// Terminates one member and lowers the desired capacity with it
    /// (`TerminateInstanceInAutoScalingGroup`, `ShouldDecrementDesiredCapacity=true`), so the
    /// group does not launch a replacement.
    fn terminate_instance<'a>(
        &'a self,
        group: &'a str,
        instance_id: &'a str,
    ) -> BoxFuture<'a, Result<(), ProviderError>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovery_tags_match_cluster_autoscaler() {
        let src = GroupSource::cluster_autoscaler("demo", &BTreeMap::new());
        let mut tags: BTreeMap<String, String> = [
            ("k8s.io/cluster-autoscaler/enabled".to_owned(), "true".to_owned()),
            ("k8s.io/cluster-autoscaler/demo".to_owned(), "owned".to_owned()),
        ]
        .into();
        assert!(src.selects("spot-ng", &tags));
        tags.remove("k8s.io/cluster-autoscaler/demo");
        tags.insert("k8s.io/cluster-autoscaler/other".into(), "owned".into());
        assert!(!src.selects("spot-ng", &tags));
        let named = GroupSource::Name("spot-ng".into());
        assert!(named.selects("spot-ng", &BTreeMap::new()));
        assert!(!named.selects("spot-ng-2", &BTreeMap::new()));
    }

    #[test]
    fn lifecycle_states_map_like_cluster_autoscaler() {
        for s in ["Pending", "Pending:Wait", "Pending:Proceed"] {
            assert_eq!(InstanceState::from_lifecycle(s), InstanceState::Pending, "{s}");
        }
        for s in ["InService", "Standby", "EnteringStandby"] {
            assert_eq!(InstanceState::from_lifecycle(s), InstanceState::Running, "{s}");
        }
        for s in [
            "Terminating",
            "Terminating:Wait",
            "Terminating:Proceed",
            "Terminated",
            "Detaching",
            "Detached",
            "Warmed:Pending",
            "Warmed:Running",
            "Warmed:Stopped",
        ] {
            assert_eq!(InstanceState::from_lifecycle(s), InstanceState::Terminating, "{s}");
        }
    }

    #[test]
    fn extra_tags_need_their_value() {
        let extra: BTreeMap<String, String> = [("team".to_owned(), "web".to_owned())].into();
        let src = GroupSource::cluster_autoscaler("demo", &extra);
        let mut tags: BTreeMap<String, String> = [
            ("k8s.io/cluster-autoscaler/enabled".to_owned(), "true".to_owned()),
            ("k8s.io/cluster-autoscaler/demo".to_owned(), "owned".to_owned()),
            ("team".to_owned(), "data".to_owned()),
        ]
        .into();
        assert!(!src.selects("a", &tags));
        tags.insert("team".into(), "web".into());
        assert!(src.selects("a", &tags));
    }
}
