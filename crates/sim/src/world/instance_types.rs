//! A fixed catalogue of EC2 instance types in us-east-1, so the simulated cloud, Cluster
//! Autoscaler and Karpenter all reason about the same capacities and prices.
//!
//! Sources (public, copied by hand):
//! - vCPU / memory: the EC2 instance type pages.
//! - On-demand prices: the us-east-1 Linux on-demand rate card (USD per hour).
//! - Max pods: the EKS `eni-max-pods.txt` table, i.e. `ENIs * (IPv4 per ENI - 1) + 2`
//!   (ENI-limited pod density, no prefix delegation).
//!
//! Spot prices are NOT live and NOT a snapshot: every type's spot price is the on-demand price
//! times [`SPOT_PRICE_FRACTION`]. That keeps spot strictly cheaper and keeps the ordering of
//! types by price identical for both capacity types, which is all the simulation needs.
//!
//! Zone offerings: every type is offered in us-east-1a, us-east-1b and us-east-1c except the
//! older **t2** family, which is left out of **us-east-1c** so zone-aware launch logic has
//! something to route around.

use serde::{Deserialize, Serialize};

use super::common::{CapacityType, MIB};

/// Spot price as a fixed fraction of on-demand; see the module docs for why it's not live.
pub const SPOT_PRICE_FRACTION: f64 = 0.3;

/// Kubelet's hard eviction threshold on EKS AMIs; it's subtracted from allocatable memory.
pub const EVICTION_THRESHOLD_MIB: u64 = 100;

const ALL_ZONES: &[&str] = &["us-east-1a", "us-east-1b", "us-east-1c"];
const NO_1C: &[&str] = &["us-east-1a", "us-east-1b"];

/// CPU architecture, spelled as the `kubernetes.io/arch` label value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Architecture {
    Amd64,
    Arm64,
}

impl Architecture {
    /// The `kubernetes.io/arch` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Architecture::Amd64 => "amd64",
            Architecture::Arm64 => "arm64",
        }
    }
}

/// One row of the catalogue; fields mirror the `karpenter.k8s.aws/instance-*` labels so
/// selectors can be evaluated against it directly.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceType {
    pub name: &'static str,
    pub family: &'static str,
    pub size: &'static str,
    pub category: char,
    pub generation: u32,
    pub vcpu: u32,
    pub memory_mib: u64,
    pub architecture: Architecture,
    pub on_demand_usd_per_hour: f64,
    pub spot_usd_per_hour: f64,
    pub enis: u32,
    pub ipv4_per_eni: u32,
    pub max_pods: u32,
    pub zones: &'static [&'static str],
}

/// Node resources in the units the Kubernetes API uses, so they can go straight into a Node's
/// status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeResources {
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    pub pods: u32,
}

#[allow(clippy::too_many_arguments)]
const fn it(
    name: &'static str,
    family: &'static str,
    size: &'static str,
    category: char,
    generation: u32,
    vcpu: u32,
    memory_mib: u64,
    architecture: Architecture,
    on_demand_usd_per_hour: f64,
    enis: u32,
    ipv4_per_eni: u32,
    zones: &'static [&'static str],
) -> InstanceType {
    InstanceType {
        name,
        family,
        size,
        category,
        generation,
        vcpu,
        memory_mib,
        architecture,
        on_demand_usd_per_hour,
        spot_usd_per_hour: on_demand_usd_per_hour * SPOT_PRICE_FRACTION,
        enis,
        ipv4_per_eni,
        max_pods: enis * (ipv4_per_eni - 1) + 2,
        zones,
    }
}

use Architecture::{Amd64, Arm64};

static TYPES: &[InstanceType] = &[
    it("t2.micro", "t2", "micro", 't', 2, 1, 1024, Amd64, 0.0116, 2, 2, NO_1C),
    it("t2.small", "t2", "small", 't', 2, 1, 2048, Amd64, 0.023, 3, 4, NO_1C),
    it("t2.medium", "t2", "medium", 't', 2, 2, 4096, Amd64, 0.0464, 3, 6, NO_1C),
    it("t2.large", "t2", "large", 't', 2, 2, 8192, Amd64, 0.0928, 3, 12, NO_1C),
    it("t2.xlarge", "t2", "xlarge", 't', 2, 4, 16384, Amd64, 0.1856, 3, 15, NO_1C),
    it("t3.micro", "t3", "micro", 't', 3, 2, 1024, Amd64, 0.0104, 2, 2, ALL_ZONES),
    it("t3.small", "t3", "small", 't', 3, 2, 2048, Amd64, 0.0208, 3, 4, ALL_ZONES),
    it("t3.medium", "t3", "medium", 't', 3, 2, 4096, Amd64, 0.0416, 3, 6, ALL_ZONES),
    it("t3.large", "t3", "large", 't', 3, 2, 8192, Amd64, 0.0832, 3, 12, ALL_ZONES),
    it("t3.xlarge", "t3", "xlarge", 't', 3, 4, 16384, Amd64, 0.1664, 4, 15, ALL_ZONES),
    it("t3.2xlarge", "t3", "2xlarge", 't', 3, 8, 32768, Amd64, 0.3328, 4, 15, ALL_ZONES),
    it("t3a.medium", "t3a", "medium", 't', 3, 2, 4096, Amd64, 0.0376, 3, 6, ALL_ZONES),
    it("t3a.large", "t3a", "large", 't', 3, 2, 8192, Amd64, 0.0752, 3, 12, ALL_ZONES),
    it("t4g.small", "t4g", "small", 't', 4, 2, 2048, Arm64, 0.0168, 3, 4, ALL_ZONES),
    it("t4g.medium", "t4g", "medium", 't', 4, 2, 4096, Arm64, 0.0336, 3, 6, ALL_ZONES),
    it("t4g.large", "t4g", "large", 't', 4, 2, 8192, Arm64, 0.0672, 3, 12, ALL_ZONES),
    it("m5.large", "m5", "large", 'm', 5, 2, 8192, Amd64, 0.096, 3, 10, ALL_ZONES),
    it("m5.xlarge", "m5", "xlarge", 'm', 5, 4, 16384, Amd64, 0.192, 4, 15, ALL_ZONES),
    it("m5.2xlarge", "m5", "2xlarge", 'm', 5, 8, 32768, Amd64, 0.384, 4, 15, ALL_ZONES),
    it("m5.4xlarge", "m5", "4xlarge", 'm', 5, 16, 65536, Amd64, 0.768, 8, 30, ALL_ZONES),
    it("m6i.large", "m6i", "large", 'm', 6, 2, 8192, Amd64, 0.096, 3, 10, ALL_ZONES),
    it("m6i.xlarge", "m6i", "xlarge", 'm', 6, 4, 16384, Amd64, 0.192, 4, 15, ALL_ZONES),
    it("m6i.2xlarge", "m6i", "2xlarge", 'm', 6, 8, 32768, Amd64, 0.384, 4, 15, ALL_ZONES),
    it("m6g.large", "m6g", "large", 'm', 6, 2, 8192, Arm64, 0.077, 3, 10, ALL_ZONES),
    it("m6g.xlarge", "m6g", "xlarge", 'm', 6, 4, 16384, Arm64, 0.154, 4, 15, ALL_ZONES),
    it("c5.large", "c5", "large", 'c', 5, 2, 4096, Amd64, 0.085, 3, 10, ALL_ZONES),
    it("c5.xlarge", "c5", "xlarge", 'c', 5, 4, 8192, Amd64, 0.17, 4, 15, ALL_ZONES),
    it("c5.2xlarge", "c5", "2xlarge", 'c', 5, 8, 16384, Amd64, 0.34, 4, 15, ALL_ZONES),
    it("c5.4xlarge", "c5", "4xlarge", 'c', 5, 16, 32768, Amd64, 0.68, 8, 30, ALL_ZONES),
    it("c6i.large", "c6i", "large", 'c', 6, 2, 4096, Amd64, 0.085, 3, 10, ALL_ZONES),
    it("c6i.xlarge", "c6i", "xlarge", 'c', 6, 4, 8192, Amd64, 0.17, 4, 15, ALL_ZONES),
    it("r5.large", "r5", "large", 'r', 5, 2, 16384, Amd64, 0.126, 3, 10, ALL_ZONES),
    it("r5.xlarge", "r5", "xlarge", 'r', 5, 4, 32768, Amd64, 0.252, 4, 15, ALL_ZONES),
    it("r5.2xlarge", "r5", "2xlarge", 'r', 5, 8, 65536, Amd64, 0.504, 4, 15, ALL_ZONES),
];

/// The whole catalogue, in a stable order (family, then size).
pub fn all() -> &'static [InstanceType] {
    TYPES
}

/// Looks a type up by its API name ("m5.large").
pub fn find(name: &str) -> Option<&'static InstanceType> {
    TYPES.iter().find(|t| t.name == name)
}

/// CPU kubelet reserves on EKS AMIs: 6% of the first core, 1% of the second, 0.5% of the
/// third and fourth, 0.25% of every core above four.
pub fn kube_reserved_cpu_millis(vcpu: u32) -> u64 {
    let n = u64::from(vcpu);
    let mut m = 0;
    if n >= 1 {
        m += 60;
    }
    if n >= 2 {
        m += 10;
    }
    m += 5 * n.saturating_sub(2).min(2);
    // 2.5m per core above four, rounded up to whole millicores.
    m += (n.saturating_sub(4) * 25).div_ceil(10);
    m
}

/// Memory kubelet reserves on EKS AMIs: 255Mi plus 11Mi per schedulable pod.
pub fn kube_reserved_memory_mib(max_pods: u32) -> u64 {
    255 + 11 * u64::from(max_pods)
}

impl InstanceType {
    /// Price for the given purchase option, USD per hour.
    pub fn price(&self, capacity_type: CapacityType) -> f64 {
        match capacity_type {
            CapacityType::OnDemand => self.on_demand_usd_per_hour,
            CapacityType::Spot => self.spot_usd_per_hour,
        }
    }

    /// Whether the type can be launched in `zone`.
    pub fn offered_in(&self, zone: &str) -> bool {
        self.zones.contains(&zone)
    }

    /// Node capacity as kubelet reports it (nominal memory; the real kernel overhead is ignored).
    pub fn capacity(&self) -> NodeResources {
        NodeResources {
            cpu_millis: u64::from(self.vcpu) * 1000,
            memory_bytes: self.memory_mib * MIB as u64,
            pods: self.max_pods,
        }
    }

    /// Node allocatable: capacity minus EKS kube-reserved and the eviction threshold, which is
    /// what the scheduler packs pods against.
    pub fn allocatable(&self) -> NodeResources {
        let cpu = u64::from(self.vcpu) * 1000 - kube_reserved_cpu_millis(self.vcpu);
        let reserved_mib = kube_reserved_memory_mib(self.max_pods) + EVICTION_THRESHOLD_MIB;
        let mem_mib = self.memory_mib.saturating_sub(reserved_mib);
        NodeResources { cpu_millis: cpu, memory_bytes: mem_mib * MIB as u64, pods: self.max_pods }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups() {
        let t = find("t3.small").unwrap();
        assert_eq!((t.vcpu, t.memory_mib, t.max_pods), (2, 2048, 11));
        assert_eq!((t.family, t.size, t.category, t.generation), ("t3", "small", 't', 3));
        assert_eq!(find("m5.large").unwrap().max_pods, 29);
        assert_eq!(find("t2.micro").unwrap().max_pods, 4);
        assert_eq!(find("t3.xlarge").unwrap().max_pods, 58);
        assert_eq!(find("m5.4xlarge").unwrap().max_pods, 234);
        assert_eq!(find("t4g.medium").unwrap().architecture, Architecture::Arm64);
        assert_eq!(find("m6g.large").unwrap().architecture.as_str(), "arm64");
        assert_eq!(find("c5.large").unwrap().architecture.as_str(), "amd64");
        assert!(find("t3.nano").is_none());
        assert_eq!(all().len(), 34);
    }

    #[test]
    fn names_are_consistent_and_unique() {
        let mut names: Vec<&str> = all().iter().map(|t| t.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), all().len());
        for t in all() {
            assert_eq!(t.name, format!("{}.{}", t.family, t.size));
            assert!(t.family.starts_with(t.category));
            assert!(t.family[1..].starts_with(&t.generation.to_string()));
            assert!(!t.zones.is_empty());
        }
    }

    #[test]
    fn prices() {
        for t in all() {
            assert!(t.on_demand_usd_per_hour > 0.0, "{}", t.name);
            assert!(t.spot_usd_per_hour > 0.0, "{}", t.name);
            assert!(t.spot_usd_per_hour < t.on_demand_usd_per_hour, "{}", t.name);
            assert_eq!(t.price(CapacityType::Spot), t.spot_usd_per_hour);
        }
        assert_eq!(find("m5.large").unwrap().on_demand_usd_per_hour, 0.096);
        assert!(
            find("t3.small").unwrap().price(CapacityType::Spot) < find("t2.small").unwrap().price(CapacityType::Spot)
        );
    }

    #[test]
    fn zones() {
        assert!(!find("t2.small").unwrap().offered_in("us-east-1c"));
        assert!(find("t2.small").unwrap().offered_in("us-east-1a"));
        assert!(find("t3.small").unwrap().offered_in("us-east-1c"));
    }

    #[test]
    fn reserved_cpu() {
        assert_eq!(kube_reserved_cpu_millis(1), 60);
        assert_eq!(kube_reserved_cpu_millis(2), 70);
        assert_eq!(kube_reserved_cpu_millis(4), 80);
        assert_eq!(kube_reserved_cpu_millis(8), 90);
        assert_eq!(kube_reserved_cpu_millis(16), 110);
    }

    #[test]
    fn allocatable_below_capacity() {
        for t in all() {
            let (c, a) = (t.capacity(), t.allocatable());
            assert!(a.cpu_millis < c.cpu_millis, "{}", t.name);
            assert!(a.memory_bytes < c.memory_bytes, "{}", t.name);
            assert!(a.memory_bytes > 0, "{}", t.name);
            assert_eq!(a.pods, t.max_pods);
        }
        // m5.large: 2000m - 70m; 8192Mi - (255 + 11*29)Mi - 100Mi = 7518Mi.
        let a = find("m5.large").unwrap().allocatable();
        assert_eq!(a.cpu_millis, 1930);
        assert_eq!(a.memory_bytes, 7518 * 1024 * 1024);
        // t3.small: 2048 - (255 + 121) - 100 = 1572Mi.
        assert_eq!(find("t3.small").unwrap().allocatable().memory_bytes, 1572 * 1024 * 1024);
    }
}
