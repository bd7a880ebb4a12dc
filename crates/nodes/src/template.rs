//! What a node of a group will look like before it exists.
//!
//! Cluster Autoscaler takes a live node of the group when there is one and otherwise builds a
//! template from the launch template's *first* instance type with allocatable = capacity. Both
//! shortcuts make it wrong in ways users hit (a mixed-instances group sized from its largest
//! type; pods that "fit" a template but not the real node). Here:
//!
//! - every instance type the group may launch is considered, and the template is the
//!   element-wise **smallest** of them, because the ASG chooses the type, not us: a plan that
//!   holds on the smallest type holds on any;
//! - allocatable is capacity minus EKS's reservations (kube-reserved cpu and memory, the 100Mi
//!   eviction threshold), or a live node's real allocatable for its type when one is registered;
//! - labels and taints come from a live node when present (minus per-node labels), else from the
//!   well-known labels, the `k8s.io/cluster-autoscaler/node-template/*` tags and the NodePool's
//!   `template`; resources from the tags and the NodePool override the instance types' (GPUs
//!   and other extended resources a group adds through its AMI).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use omniscale_cluster::{Resources, Template, labels::Symbols};

use crate::provider::{InstanceTypeInfo, NodeGroup};

/// Tag prefixes Cluster Autoscaler reads for scale-from-zero.
pub const LABEL_TAG: &str = "k8s.io/cluster-autoscaler/node-template/label/";
pub const TAINT_TAG: &str = "k8s.io/cluster-autoscaler/node-template/taint/";
pub const RESOURCE_TAG: &str = "k8s.io/cluster-autoscaler/node-template/resources/";
pub const OPTION_TAG: &str = "k8s.io/cluster-autoscaler/node-template/autoscaling-options/";

/// Kubelet's hard eviction threshold on EKS AMIs, subtracted from allocatable memory.
const EVICTION_THRESHOLD_MIB: u64 = 100;
/// Pods per node when nothing better is known (Cluster Autoscaler's hard-coded value).
const DEFAULT_MAX_PODS: u32 = 110;

/// Labels that describe one node rather than the group: never copied from a live node.
const PER_NODE_LABELS: &[&str] = &[
    "kubernetes.io/hostname",
    "topology.kubernetes.io/zone",
    "failure-domain.beta.kubernetes.io/zone",
    "topology.ebs.csi.aws.com/zone",
    "topology.k8s.aws/zone-id",
    "node.kubernetes.io/instance-type",
    "beta.kubernetes.io/instance-type",
];

/// A group's template with what the engines need besides packing.
#[derive(Clone, Debug)]
pub struct GroupTemplate {
    /// The packing template (allocatable, labels, taints, zones).
    pub template: Template,
    /// Capacity of one node (for limits and least-waste), cpu in millicores, memory in bytes.
    pub capacity_cpu: i64,
    pub capacity_memory: i64,
    /// Per-group overrides from `.../autoscaling-options/*` tags.
    pub options: BTreeMap<String, String>,
}

/// The node-template tags of a group, parsed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TemplateTags {
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<core::Taint>,
    pub resources: BTreeMap<String, Quantity>,
    pub options: BTreeMap<String, String>,
}

/// Parses `k8s.io/cluster-autoscaler/node-template/*` tags. A taint's value is `value:Effect`
/// (or just `Effect`); an unknown effect is an error naming the tag, as it would otherwise
/// silently let pods through that the real node repels.
pub fn template_tags(tags: &BTreeMap<String, String>) -> Result<TemplateTags, String> {
    let mut out = TemplateTags::default();
    for (k, v) in tags {
        if let Some(label) = k.strip_prefix(LABEL_TAG) {
            out.labels.insert(label.to_owned(), v.clone());
        } else if let Some(key) = k.strip_prefix(TAINT_TAG) {
            let (value, effect) = match v.rsplit_once(':') {
                Some((value, effect)) => (Some(value.to_owned()).filter(|s| !s.is_empty()), effect),
                None => (None, v.as_str()),
            };
            if !matches!(effect, "NoSchedule" | "PreferNoSchedule" | "NoExecute") {
                return Err(format!(
                    "tag {k}: taint effect {effect:?} is not NoSchedule, PreferNoSchedule or NoExecute"
                ));
            }
            out.taints.push(core::Taint { key: key.to_owned(), value, effect: effect.to_owned(), time_added: None });
        } else if let Some(res) = k.strip_prefix(RESOURCE_TAG) {
            if omniscale_api::quantity::Quantity::parse(v).is_err() {
                return Err(format!("tag {k}: {v:?} is not a quantity"));
            }
            out.resources.insert(res.to_owned(), Quantity(v.clone()));
        } else if let Some(opt) = k.strip_prefix(OPTION_TAG) {
            out.options.insert(opt.to_owned(), v.clone());
        }
    }
    Ok(out)
}

/// EKS's kube-reserved cpu: 6% of the first core, 1% of the second, 0.5% of the next two and
/// 0.25% of every core above four.
pub fn kube_reserved_cpu_millis(vcpu: u32) -> i64 {
    let v = i64::from(vcpu);
    let mut m = 0;
    m += v.min(1) * 60;
    m += (v - 1).clamp(0, 1) * 10;
    m += (v - 2).clamp(0, 2) * 5;
    m += (v - 4).max(0) * 25 / 10;
    m
}

/// Allocatable of a type as EKS computes it: capacity minus kube-reserved (cpu above; memory
/// `11 MiB × max pods + 255 MiB`) minus the eviction threshold.
pub fn estimated_allocatable(t: &InstanceTypeInfo) -> Resources {
    let pods = t.max_pods.unwrap_or(DEFAULT_MAX_PODS);
    let reserved_mib = 11 * u64::from(pods) + 255 + EVICTION_THRESHOLD_MIB;
    let mut r = Resources::cpu_mem(
        i64::from(t.vcpu) * 1000 - kube_reserved_cpu_millis(t.vcpu),
        (t.memory_mib.saturating_sub(reserved_mib) as i64) * 1024 * 1024,
    );
    r.pods = i64::from(pods);
    r
}

fn min_resources(a: &mut Resources, b: &Resources) {
    a.cpu = a.cpu.min(b.cpu);
    a.memory = a.memory.min(b.memory);
    a.pods = a.pods.min(b.pods);
    a.ephemeral = a.ephemeral.min(b.ephemeral);
}

/// Builds a group's template.
///
/// `live` are the group's registered, ready nodes (their labels, taints and real allocatable per
/// instance type); `pool` the NodePool's `template`, which wins over tags and live nodes.
/// Errors say why no template can be built (no instance type known, malformed tags).
pub fn group_template(
    group: &NodeGroup,
    live: &[&core::Node],
    pool: Option<&omniscale_api::nodepool::NodeTemplate>,
    region: Option<&str>,
    syms: &mut Symbols,
) -> Result<GroupTemplate, String> {
    let tags = template_tags(&group.tags)?;
    // Allocatable: per type, a live node's when one of that type is registered, else estimated.
    let mut alloc: Option<Resources> = None;
    let (mut cap_cpu, mut cap_mem) = (i64::MAX, i64::MAX);
    for t in &group.instance_types {
        let real = live.iter().find(|n| instance_type_of(n) == Some(t.name.as_str())).and_then(|n| {
            let list = n.status.as_ref()?.allocatable.as_ref()?;
            Resources::from_list(list, syms).ok()
        });
        let a = real.unwrap_or_else(|| estimated_allocatable(t));
        match alloc.as_mut() {
            Some(acc) => min_resources(acc, &a),
            None => alloc = Some(a),
        }
        cap_cpu = cap_cpu.min(i64::from(t.vcpu) * 1000);
        cap_mem = cap_mem.min((t.memory_mib as i64) * 1024 * 1024);
    }
    // No type known: a live node is still a template (as Cluster Autoscaler's real-node path).
    if alloc.is_none() {
        if let Some(n) = live.first() {
            let status = n.status.as_ref();
            let list = status.and_then(|s| s.allocatable.as_ref()).cloned().unwrap_or_default();
            let a = Resources::from_list(&list, syms)?;
            let cap = status.and_then(|s| s.capacity.as_ref()).cloned().unwrap_or_default();
            let c = Resources::from_list(&cap, syms)?;
            cap_cpu = c.cpu.max(a.cpu);
            cap_mem = c.memory.max(a.memory);
            alloc = Some(a);
        }
    }
    let Some(mut allocatable) = alloc else {
        return Err(format!("group {} has no instance type the cloud describes and no registered node", group.name));
    };
    // Extra resources (GPUs, hugepages, ...) from tags and then the pool override.
    let mut extra = tags.resources.clone();
    if let Some(res) = pool.and_then(|p| p.resources.as_ref()) {
        extra.extend(res.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    if !extra.is_empty() {
        let r = Resources::from_list(&extra, syms)?;
        for k in extra.keys() {
            match k.as_str() {
                "cpu" => allocatable.cpu = r.cpu,
                "memory" => allocatable.memory = r.memory,
                "pods" => allocatable.pods = r.pods,
                "ephemeral-storage" => allocatable.ephemeral = r.ephemeral,
                _ => {}
            }
        }
        for (s, v) in r.ext {
            match allocatable.ext.binary_search_by_key(&s, |e| e.0) {
                Ok(i) => allocatable.ext[i].1 = v,
                Err(i) => allocatable.ext.insert(i, (s, v)),
            }
        }
    }
    // Labels and taints: a live node's, else generated from what the group says.
    let mut labels = BTreeMap::new();
    let mut taints;
    if let Some(n) = live.first() {
        for (k, v) in n.metadata.labels.iter().flatten() {
            if !PER_NODE_LABELS.contains(&k.as_str()) {
                labels.insert(k.clone(), v.clone());
            }
        }
        taints = n.spec.as_ref().and_then(|s| s.taints.clone()).unwrap_or_default();
        taints.retain(|t| !is_transient_taint(&t.key));
    } else {
        labels.insert("kubernetes.io/os".to_owned(), "linux".to_owned());
        if let Some(arch) = group.instance_types.first().map(|t| t.arch.clone()) {
            labels.insert("kubernetes.io/arch".to_owned(), arch);
        }
        if let Some(r) = region {
            labels.insert("topology.kubernetes.io/region".to_owned(), r.to_owned());
        }
        labels.extend(tags.labels.clone());
        taints = tags.taints.clone();
    }
    if let [only] = group.instance_types.as_slice() {
        labels.insert("node.kubernetes.io/instance-type".to_owned(), only.name.clone());
    }
    if let Some(p) = pool {
        labels.extend(p.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
        for t in &p.taints {
            if !taints.iter().any(|x: &core::Taint| x.key == t.key && x.effect == t.effect) {
                taints.push(t.clone());
            }
        }
    }
    let zones = if group.zones.is_empty() {
        live.iter().filter_map(|n| zone_of(n)).map(str::to_owned).take(1).collect()
    } else {
        group.zones.clone()
    };
    if zones.is_empty() {
        return Err(format!("group {} has no availability zone", group.name));
    }
    Ok(GroupTemplate {
        template: Template { name: group.name.clone(), labels, taints, allocatable, zones, price: 0.0, max_new: None },
        capacity_cpu: cap_cpu,
        capacity_memory: cap_mem,
        options: tags.options,
    })
}

/// Taints that come and go on a live node (not-ready, cordon, our own deletion marks): a
/// template must not inherit them.
pub fn is_transient_taint(key: &str) -> bool {
    key.starts_with("node.kubernetes.io/")
        || key.starts_with("node.cloudprovider.kubernetes.io/")
        || key == crate::TO_BE_DELETED_TAINT
        || key == crate::DELETION_CANDIDATE_TAINT
}

fn instance_type_of(n: &core::Node) -> Option<&str> {
    let l = n.metadata.labels.as_ref()?;
    l.get("node.kubernetes.io/instance-type").or_else(|| l.get("beta.kubernetes.io/instance-type")).map(String::as_str)
}

fn zone_of(n: &core::Node) -> Option<&str> {
    n.metadata.labels.as_ref()?.get("topology.kubernetes.io/zone").map(String::as_str)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::provider::NodeGroup;

    fn t(name: &str, vcpu: u32, mib: u64, pods: u32) -> InstanceTypeInfo {
        InstanceTypeInfo {
            name: name.into(),
            vcpu,
            memory_mib: mib,
            gpus: 0,
            arch: "amd64".into(),
            max_pods: Some(pods),
        }
    }

    fn group(types: Vec<InstanceTypeInfo>, tags: &[(&str, &str)]) -> NodeGroup {
        NodeGroup {
            name: "spot-ng".into(),
            min_size: 0,
            max_size: 5,
            desired: 0,
            instances: vec![],
            instance_types: types,
            zones: vec!["us-east-1a".into(), "us-east-1b".into()],
            tags: tags.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
            last_failed_activity: None,
        }
    }

    #[test]
    fn eks_reservations() {
        assert_eq!(kube_reserved_cpu_millis(1), 60);
        assert_eq!(kube_reserved_cpu_millis(2), 70);
        assert_eq!(kube_reserved_cpu_millis(4), 80);
        assert_eq!(kube_reserved_cpu_millis(8), 90);
        // t3.small: 2048 MiB − (11×11 + 255) − 100 = 1572 MiB.
        let a = estimated_allocatable(&t("t3.small", 2, 2048, 11));
        assert_eq!((a.cpu, a.memory, a.pods), (1930, 1572 * 1024 * 1024, 11));
    }

    #[test]
    fn mixed_group_takes_the_smallest_type() {
        let g = group(vec![t("t2.small", 1, 2048, 11), t("t3.small", 2, 2048, 11)], &[]);
        let mut syms = Symbols::default();
        let gt = group_template(&g, &[], None, Some("us-east-1"), &mut syms).unwrap();
        assert_eq!(gt.template.allocatable.cpu, 940);
        assert_eq!(gt.capacity_cpu, 1000);
        assert!(!gt.template.labels.contains_key("node.kubernetes.io/instance-type"));
        assert_eq!(gt.template.labels["kubernetes.io/arch"], "amd64");
        assert_eq!(gt.template.zones.len(), 2);
    }

    #[test]
    fn scale_from_zero_tags() {
        let g = group(
            vec![t("p3.2xlarge", 8, 62464, 58)],
            &[
                ("k8s.io/cluster-autoscaler/node-template/label/workload", "gpu"),
                ("k8s.io/cluster-autoscaler/node-template/taint/dedicated", "gpu:NoSchedule"),
                ("k8s.io/cluster-autoscaler/node-template/resources/nvidia.com/gpu", "1"),
                ("k8s.io/cluster-autoscaler/node-template/autoscaling-options/scaledownunneededtime", "5m"),
            ],
        );
        let mut syms = Symbols::default();
        let gt = group_template(&g, &[], None, None, &mut syms).unwrap();
        assert_eq!(gt.template.labels["workload"], "gpu");
        assert_eq!(gt.template.labels["node.kubernetes.io/instance-type"], "p3.2xlarge");
        assert_eq!(gt.template.taints[0].key, "dedicated");
        assert_eq!(gt.template.taints[0].value.as_deref(), Some("gpu"));
        assert_eq!(gt.template.taints[0].effect, "NoSchedule");
        let gpu = syms.get("nvidia.com/gpu").unwrap();
        assert_eq!(gt.template.allocatable.ext(gpu), 1);
        assert_eq!(gt.options["scaledownunneededtime"], "5m");
    }

    #[test]
    fn bad_taint_tag_is_an_error() {
        let g =
            group(vec![t("t3.small", 2, 2048, 11)], &[("k8s.io/cluster-autoscaler/node-template/taint/x", "y:Never")]);
        let err = group_template(&g, &[], None, None, &mut Symbols::default()).unwrap_err();
        assert!(err.contains("taint effect"), "{err}");
    }

    #[test]
    fn live_node_gives_labels_and_real_allocatable() {
        let g = group(vec![t("t3.small", 2, 2048, 11)], &[]);
        let node: core::Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "ip-10-0-0-1", "labels": {
                "pool": "spot-ng", "kubernetes.io/hostname": "ip-10-0-0-1",
                "node.kubernetes.io/instance-type": "t3.small", "topology.kubernetes.io/zone": "us-east-1a"}},
            "spec": {"taints": [{"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"},
                                {"key": "team", "value": "web", "effect": "NoSchedule"}]},
            "status": {"allocatable": {"cpu": "1900m", "memory": "1500Mi", "pods": "11"}}
        }))
        .unwrap();
        let gt = group_template(&g, &[&node], None, None, &mut Symbols::default()).unwrap();
        assert_eq!(gt.template.allocatable.cpu, 1900);
        assert_eq!(gt.template.labels["pool"], "spot-ng");
        assert!(!gt.template.labels.contains_key("kubernetes.io/hostname"));
        assert_eq!(gt.template.taints.len(), 1);
        assert_eq!(gt.template.taints[0].key, "team");
    }

    #[test]
    fn no_type_and_no_node_is_an_error() {
        let g = group(vec![], &[]);
        assert!(group_template(&g, &[], None, None, &mut Symbols::default()).is_err());
    }
}
