//! The scheduling-relevant view of pods and nodes: resources, taints, tolerations and the
//! constraints of a pod class, converted once from the Kubernetes objects.

use crate::labels::{Labels, Op, Requirement, Selector, Sym, Symbols};
use k8s_openapi::api::core::v1 as core;
use omniscale_api::quantity::Quantity;
use std::collections::BTreeMap;

/// Well-known label keys.
pub const ZONE: &str = "topology.kubernetes.io/zone";
pub const HOSTNAME: &str = "kubernetes.io/hostname";
/// The field `matchFields` may select on.
pub const NODE_NAME_FIELD: &str = "metadata.name";
/// The pseudo-label every node carries so `matchFields` on `metadata.name` is a label match;
/// not a valid label key, so no real label or nodeSelector can collide with it.
pub const NODE_NAME_LABEL: &str = "\u{0}field:metadata.name";

/// Requests or allocatable. cpu in millicores, memory and ephemeral storage in bytes, pods and
/// extended resources in units.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Resources {
    pub cpu: i64,
    pub memory: i64,
    pub pods: i64,
    pub ephemeral: i64,
    /// Extended resources (`nvidia.com/gpu`, ...), sorted by name symbol.
    pub ext: Vec<(Sym, i64)>,
}

/// Which resource is short.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Resource {
    Cpu,
    Memory,
    Pods,
    Ephemeral,
    Extended(Sym),
}

fn sat(x: i128) -> i64 {
    x.clamp(i64::MIN as i128, i64::MAX as i128) as i64
}

impl Resources {
    pub fn cpu_mem(cpu: i64, memory: i64) -> Self {
        Self { cpu, memory, ..Self::default() }
    }

    /// Parses a `ResourceList`; unknown names become extended resources.
    pub fn from_list(
        list: &BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
        syms: &mut Symbols,
    ) -> Result<Self, String> {
        let mut r = Self::default();
        for (name, q) in list {
            let q = Quantity::parse(&q.0).map_err(|e| format!("{name}: {e}"))?;
            match name.as_str() {
                "cpu" => r.cpu = sat(q.milli()),
                "memory" => r.memory = sat(q.units_ceil()),
                "pods" => r.pods = sat(q.units_ceil()),
                "ephemeral-storage" => r.ephemeral = sat(q.units_ceil()),
                other if other.contains('/') || other.starts_with("hugepages-") => {
                    let s = syms.intern(other);
                    r.set_ext(s, sat(q.units_ceil()));
                }
                _ => {}
            }
        }
        Ok(r)
    }

    fn set_ext(&mut self, s: Sym, v: i64) {
        match self.ext.binary_search_by_key(&s, |e| e.0) {
            Ok(i) => self.ext[i].1 = v,
            Err(i) => self.ext.insert(i, (s, v)),
        }
    }

    pub fn ext(&self, s: Sym) -> i64 {
        self.ext.binary_search_by_key(&s, |e| e.0).map(|i| self.ext[i].1).unwrap_or(0)
    }

    pub fn add(&mut self, o: &Resources) {
        self.cpu += o.cpu;
        self.memory += o.memory;
        self.pods += o.pods;
        self.ephemeral += o.ephemeral;
        for &(s, v) in &o.ext {
            let cur = self.ext(s);
            self.set_ext(s, cur + v);
        }
    }

    pub fn sub(&mut self, o: &Resources) {
        self.cpu -= o.cpu;
        self.memory -= o.memory;
        self.pods -= o.pods;
        self.ephemeral -= o.ephemeral;
        for &(s, v) in &o.ext {
            let cur = self.ext(s);
            self.set_ext(s, cur - v);
        }
    }

    /// Element-wise max.
    pub fn max(&mut self, o: &Resources) {
        self.cpu = self.cpu.max(o.cpu);
        self.memory = self.memory.max(o.memory);
        self.pods = self.pods.max(o.pods);
        self.ephemeral = self.ephemeral.max(o.ephemeral);
        for &(s, v) in &o.ext {
            let cur = self.ext(s);
            self.set_ext(s, cur.max(v));
        }
    }

    /// The first resource for which `used + self` exceeds `alloc`, as NodeResourcesFit checks
    /// (a zero request never fails, even on an overcommitted node).
    pub fn short(&self, used: &Resources, alloc: &Resources) -> Option<Resource> {
        if self.pods > 0 && used.pods + self.pods > alloc.pods {
            return Some(Resource::Pods);
        }
        if self.cpu > 0 && used.cpu + self.cpu > alloc.cpu {
            return Some(Resource::Cpu);
        }
        if self.memory > 0 && used.memory + self.memory > alloc.memory {
            return Some(Resource::Memory);
        }
        if self.ephemeral > 0 && used.ephemeral + self.ephemeral > alloc.ephemeral {
            return Some(Resource::Ephemeral);
        }
        self.ext.iter().find(|&&(s, v)| v > 0 && used.ext(s) + v > alloc.ext(s)).map(|&(s, _)| Resource::Extended(s))
    }

    /// `max(Σcpu/alloc, Σmem/alloc)`: Cluster Autoscaler's utilisation of a node.
    pub fn utilization(&self, alloc: &Resources) -> f64 {
        let f = |u: i64, a: i64| if a > 0 { u as f64 / a as f64 } else { 0.0 };
        f(self.cpu, alloc.cpu).max(f(self.memory, alloc.memory))
    }
}

/// A taint effect.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Effect {
    NoSchedule,
    PreferNoSchedule,
    NoExecute,
}

impl Effect {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "NoSchedule" => Some(Self::NoSchedule),
            "PreferNoSchedule" => Some(Self::PreferNoSchedule),
            "NoExecute" => Some(Self::NoExecute),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoSchedule => "NoSchedule",
            Self::PreferNoSchedule => "PreferNoSchedule",
            Self::NoExecute => "NoExecute",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Taint {
    pub key: Sym,
    pub value: Sym,
    pub effect: Effect,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Toleration {
    /// `None`: empty key (only with `Exists`: tolerates every taint).
    pub key: Option<Sym>,
    pub exists: bool,
    pub value: Sym,
    pub effect: Option<Effect>,
}

impl Toleration {
    /// Upstream's `ToleratesTaint`.
    pub fn tolerates(&self, t: &Taint) -> bool {
        if self.effect.is_some_and(|e| e != t.effect) {
            return false;
        }
        match self.key {
            None => self.exists,
            Some(k) if k != t.key => false,
            Some(_) => self.exists || self.value == t.value,
        }
    }
}

/// A pod-counting scope: pods in `namespaces` (all when `None`) matching `selector` (none when
/// the selector is `None`, as a null label selector selects nothing).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Group {
    pub namespaces: Option<Vec<Sym>>,
    pub selector: Option<Selector>,
}

pub type GroupId = u32;

/// A required (or preferred-treated-as-required) pod (anti-)affinity term.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Term {
    pub key: Sym,
    pub group: GroupId,
}

/// A topology spread constraint.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Spread {
    pub key: Sym,
    pub max_skew: i64,
    pub group: GroupId,
    pub min_domains: Option<i64>,
    /// `labelSelector: {}`: upstream counts no existing pods for it, yet the incoming pod
    /// matches itself.
    pub empty_selector: bool,
}

impl Spread {
    /// Upstream's selfMatchNum.
    pub fn self_match(&self, class_matches_group: bool) -> i64 {
        i64::from(self.empty_selector || class_matches_group)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct HostPort {
    pub protocol: Sym,
    /// 0 for the wildcard address.
    pub ip: Sym,
    pub port: i32,
}

/// The hard constraints of a pod, after preferences were (or were not) promoted.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Constraints {
    pub node_name: Option<Sym>,
    /// `spec.nodeSelector` plus preferred node-affinity terms promoted to required.
    pub node_selector: Selector,
    /// Required node affinity terms, ORed; empty means unconstrained.
    pub node_terms: Vec<Selector>,
    pub tolerations: Vec<Toleration>,
    /// Karpenter's last relaxation: until relaxed, PreferNoSchedule taints are avoided.
    pub avoid_prefer_no_schedule: bool,
    pub spread: Vec<Spread>,
    pub affinity: Vec<Term>,
    pub anti_affinity: Vec<Term>,
    pub host_ports: Vec<HostPort>,
    /// Zones allowed by the pod's bound volumes.
    pub volume_zones: Option<Vec<Sym>>,
}

/// One soft constraint, in the order Karpenter relaxes them.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Preference {
    /// Only the first OR-term of required node affinity, until relaxed to all terms.
    FirstNodeTerm,
    PodAffinity(Term),
    PodAntiAffinity(Term),
    NodeAffinity(Selector),
    Spread(Spread),
    AvoidPreferNoSchedule,
}

/// Everything that decides where a pod may go; identical pods share one class and are checked
/// once.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PodClass {
    pub namespace: Sym,
    pub labels: Labels,
    pub requests: Resources,
    pub hard: Constraints,
    /// Soft constraints in relaxation order.
    pub prefs: Vec<Preference>,
    /// Owner uid: pods of different controllers are never merged (Cluster Autoscaler's rule).
    pub owner: Option<Sym>,
    pub priority: i32,
}

impl PodClass {
    /// The constraints when the first `relaxed` preferences are dropped and the rest are
    /// required.
    pub fn effective(&self, relaxed: usize) -> Constraints {
        let mut c = self.hard.clone();
        let active = self.prefs.get(relaxed..).unwrap_or_default();
        for p in active {
            match p {
                Preference::FirstNodeTerm => c.node_terms.truncate(1),
                Preference::PodAffinity(t) => c.affinity.push(t.clone()),
                Preference::PodAntiAffinity(t) => c.anti_affinity.push(t.clone()),
                Preference::NodeAffinity(s) => c.node_selector.0.extend(s.0.iter().cloned()),
                Preference::Spread(s) => c.spread.push(s.clone()),
                Preference::AvoidPreferNoSchedule => c.avoid_prefer_no_schedule = true,
            }
        }
        c
    }
}

/// Facts the drainability rules need about a pod.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DrainFacts {
    pub mirror: bool,
    pub daemonset: bool,
    pub terminal: bool,
    /// `cluster-autoscaler.kubernetes.io/safe-to-evict`.
    pub safe_to_evict: Option<bool>,
    /// `karpenter.sh/do-not-disrupt: "true"`.
    pub do_not_disrupt: bool,
    pub has_controller: bool,
    pub kube_system: bool,
    /// Volumes that use local storage (hostPath, emptyDir not backed by memory).
    pub local_volumes: Vec<String>,
    /// `cluster-autoscaler.kubernetes.io/safe-to-evict-local-volumes`.
    pub safe_local_volumes: Vec<String>,
    pub terminating: bool,
}

/// Parses a node selector term (`matchExpressions` and `matchFields` on `metadata.name`).
pub fn node_term(t: &core::NodeSelectorTerm, syms: &mut Symbols) -> Result<Selector, String> {
    let mut reqs = Vec::new();
    for e in t.match_expressions.iter().flatten() {
        reqs.push(requirement(&e.key, &e.operator, e.values.as_deref().unwrap_or_default(), syms)?);
    }
    for e in t.match_fields.iter().flatten() {
        if e.key != NODE_NAME_FIELD {
            return Err(format!("unsupported matchFields key {:?}", e.key));
        }
        reqs.push(requirement(NODE_NAME_LABEL, &e.operator, e.values.as_deref().unwrap_or_default(), syms)?);
    }
    if reqs.is_empty() {
        // An empty term selects no node (upstream), unlike an empty label selector.
        reqs.push(Requirement { key: syms.intern(NODE_NAME_LABEL), op: Op::In(Vec::new()) });
    }
    Ok(Selector(reqs))
}

fn requirement(key: &str, op: &str, values: &[String], syms: &mut Symbols) -> Result<Requirement, String> {
    let key_sym = syms.intern(key);
    let vals: Vec<Sym> = values.iter().map(|v| syms.intern(v)).collect();
    let num = || -> Result<i64, String> {
        match values {
            [v] => v.parse::<i64>().map_err(|_| format!("{key}: {op} needs an integer value, got {v:?}")),
            _ => Err(format!("{key}: {op} needs exactly one value")),
        }
    };
    let op = match op {
        "In" | "NotIn" if values.is_empty() => return Err(format!("{key}: {op} needs at least one value")),
        "In" => Op::In(vals),
        "NotIn" => Op::NotIn(vals),
        "Exists" => Op::Exists,
        "DoesNotExist" => Op::DoesNotExist,
        "Gt" => Op::Gt(num()?),
        "Lt" => Op::Lt(num()?),
        other => return Err(format!("{key}: unknown operator {other:?}")),
    };
    Ok(Requirement { key: key_sym, op })
}

/// Parses a `metav1.LabelSelector`; `None` (null) selects nothing.
pub fn label_selector(
    s: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>,
    syms: &mut Symbols,
) -> Result<Option<Selector>, String> {
    let Some(s) = s else { return Ok(None) };
    let mut reqs = Vec::new();
    for (k, v) in s.match_labels.iter().flatten() {
        let key = syms.intern(k);
        let val = syms.intern(v);
        reqs.push(Requirement { key, op: Op::In(vec![val]) });
    }
    for e in s.match_expressions.iter().flatten() {
        match e.operator.as_str() {
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {
                reqs.push(requirement(&e.key, &e.operator, e.values.as_deref().unwrap_or_default(), syms)?)
            }
            other => return Err(format!("{}: unknown label selector operator {other:?}", e.key)),
        }
    }
    Ok(Some(Selector(reqs)))
}

pub fn labels(map: Option<&BTreeMap<String, String>>, syms: &mut Symbols) -> Labels {
    Labels::from_pairs(map.into_iter().flatten().map(|(k, v)| (syms.intern(k), syms.intern(v))).collect())
}

pub fn taints(list: &[core::Taint], syms: &mut Symbols) -> Vec<Taint> {
    list.iter()
        .filter_map(|t| {
            Some(Taint {
                key: syms.intern(&t.key),
                value: syms.intern(t.value.as_deref().unwrap_or("")),
                effect: Effect::parse(&t.effect)?,
            })
        })
        .collect()
}

pub fn tolerations(list: &[core::Toleration], syms: &mut Symbols) -> Vec<Toleration> {
    list.iter()
        .map(|t| Toleration {
            key: t.key.as_deref().filter(|k| !k.is_empty()).map(|k| syms.intern(k)),
            exists: t.operator.as_deref() == Some("Exists"),
            value: syms.intern(t.value.as_deref().unwrap_or("")),
            effect: t.effect.as_deref().and_then(Effect::parse),
        })
        .collect()
}

/// Effective requests as kube-scheduler computes them: per resource, the larger of (app
/// containers + restartable init containers) and each init container plus the sidecars started
/// before it; plus pod overhead; plus one pod.
pub fn pod_requests(spec: &core::PodSpec, syms: &mut Symbols) -> Result<Resources, String> {
    let req = |c: &core::Container, syms: &mut Symbols| -> Result<Resources, String> {
        match c.resources.as_ref().and_then(|r| r.requests.as_ref()) {
            Some(list) => Resources::from_list(list, syms).map_err(|e| format!("container {:?}: {e}", c.name)),
            None => Ok(Resources::default()),
        }
    };
    let mut app = Resources::default();
    for c in &spec.containers {
        app.add(&req(c, syms)?);
    }
    let mut sidecars = Resources::default();
    let mut init_peak = Resources::default();
    for c in spec.init_containers.iter().flatten() {
        let r = req(c, syms)?;
        if c.restart_policy.as_deref() == Some("Always") {
            sidecars.add(&r);
            let mut at_start = sidecars.clone();
            at_start.max(&Resources::default());
            init_peak.max(&at_start);
        } else {
            let mut with_sidecars = sidecars.clone();
            with_sidecars.add(&r);
            init_peak.max(&with_sidecars);
        }
    }
    let mut total = app;
    total.add(&sidecars);
    total.max(&init_peak);
    if let Some(o) = &spec.overhead {
        total.add(&Resources::from_list(o, syms).map_err(|e| format!("overhead: {e}"))?);
    }
    total.pods = 1;
    Ok(total)
}
