//! The forkable cluster snapshot: nodes with what is placed on them, pod classes, and the pod
//! counts per topology domain that topology spread and inter-pod (anti-)affinity need.
//!
//! Counting scopes ("groups": a namespace set and a label selector) and topology keys are
//! registered as pods that use them arrive; every placement then updates a few integer counters,
//! so a predicate check never scans other pods.

use crate::labels::{Labels, Sym, Symbols};
use crate::model::{
    self, Constraints, DrainFacts, Group, GroupId, HostPort, PodClass, Preference, Resources, Spread, Taint, Term,
};
use k8s_openapi::api::core::v1 as core;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// The symbol of the empty string (interned fourth by [`Snapshot::new`]); the wildcard host IP.
pub const EMPTY: Sym = 3;

pub type NodeId = u32;
pub type PodId = u32;
pub type ClassId = u32;

/// A small, fast hasher for integer-tuple keys (the counters are hit on every placement).
#[derive(Default, Clone, Copy, Debug)]
pub struct FxHasher(u64);

impl Hasher for FxHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(u64::from(*b));
        }
    }
    fn write_u32(&mut self, i: u32) {
        self.write_u64(u64::from(i));
    }
    fn write_u64(&mut self, i: u64) {
        self.0 = (self.0.rotate_left(5) ^ i).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn write_usize(&mut self, i: usize) {
        self.write_u64(i as u64);
    }
}

pub type FxMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

/// Why a snapshot could not take an object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    #[error("{kind} {name}: {message}")]
    Invalid { kind: &'static str, name: String, message: String },
}

/// A node: real, or one a packing plan would create.
#[derive(Clone, Debug)]
pub struct Node {
    pub name: String,
    pub labels: Labels,
    pub taints: Vec<Taint>,
    pub allocatable: Resources,
    pub unschedulable: bool,
    /// Removed nodes keep their id (ids are indexes) but take no pods.
    pub removed: bool,
    pub used: Resources,
    pub pods: Vec<PodId>,
    pub host_ports: Vec<HostPort>,
}

/// A pod and where it is placed.
#[derive(Clone, Debug)]
pub struct Pod {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub class: ClassId,
    pub node: Option<NodeId>,
    pub drain: DrainFacts,
    pub owner_kind: Option<String>,
}

/// A PodDisruptionBudget: pods it selects and how many may still be disrupted.
#[derive(Clone, Debug)]
pub struct Pdb {
    pub name: String,
    pub namespace: Sym,
    pub selector: Option<crate::labels::Selector>,
    pub disruptions_allowed: i64,
}

#[derive(Clone, Debug)]
pub(crate) struct ClassInfo {
    pub class: PodClass,
    /// Constraints per relaxation level: `levels[0]` has every preference required, the last
    /// only the pod's hard constraints.
    pub levels: Vec<Constraints>,
    pub matches: Vec<GroupId>,
}

/// Which nodes a check may assume exist besides the snapshot's.
#[derive(Clone, Copy, Debug, Default)]
pub struct Domains<'a> {
    /// New nodes may be created: every new hostname is a domain with no pods (Karpenter's
    /// view), so hostname spread never waits for existing nodes to fill.
    pub new_hosts: bool,
    /// Zones new nodes could be created in: domains for zone spread even without a node yet.
    pub zones: &'a [Sym],
}

/// Why a pod does not fit a node, worded as kube-scheduler's filter plugins word it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    Unschedulable,
    NodeName,
    Taint { key: String, value: String, effect: &'static str },
    NodeAffinity,
    HostPorts,
    Insufficient(String),
    TooManyPods,
    VolumeZone,
    TopologySpread,
    TopologySpreadMissingLabel,
    PodAffinity,
    PodAntiAffinity,
    ExistingAntiAffinity,
    Removed,
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::Unschedulable => write!(f, "node(s) were unschedulable"),
            Reason::NodeName => write!(f, "node(s) didn't match the requested node name"),
            Reason::Taint { key, value, effect } => {
                write!(f, "node(s) had untolerated taint {{{key}: {value}}}")?;
                if *effect == "PreferNoSchedule" { write!(f, " (PreferNoSchedule)") } else { Ok(()) }
            }
            Reason::NodeAffinity => write!(f, "node(s) didn't match Pod's node affinity/selector"),
            Reason::HostPorts => write!(f, "node(s) didn't have free ports for the requested pod ports"),
            Reason::Insufficient(r) => write!(f, "Insufficient {r}"),
            Reason::TooManyPods => write!(f, "Too many pods"),
            Reason::VolumeZone => write!(f, "node(s) had no available volume zone"),
            Reason::TopologySpread => write!(f, "node(s) didn't match pod topology spread constraints"),
            Reason::TopologySpreadMissingLabel => {
                write!(f, "node(s) didn't match pod topology spread constraints (missing required label)")
            }
            Reason::PodAffinity => write!(f, "node(s) didn't match pod affinity rules"),
            Reason::PodAntiAffinity => write!(f, "node(s) didn't match pod anti-affinity rules"),
            Reason::ExistingAntiAffinity => write!(f, "node(s) didn't satisfy existing pods anti-affinity rules"),
            Reason::Removed => write!(f, "node(s) are being removed"),
        }
    }
}

/// The snapshot. `Clone` is the fork: plain vectors and maps, no shared mutable state.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub syms: Symbols,
    pub nodes: Vec<Node>,
    pub pods: Vec<Pod>,
    pub pdbs: Vec<Pdb>,
    pub(crate) classes: Vec<ClassInfo>,
    class_ids: HashMap<PodClass, ClassId>,
    groups: Vec<Group>,
    group_ids: HashMap<Group, GroupId>,
    /// Topology keys some constraint counts by.
    keys: Vec<Sym>,
    counts: FxMap<(Sym, Sym, GroupId), u32>,
    /// Pods of a group on nodes that have the key (the first-pod exception of pod affinity).
    key_totals: FxMap<(Sym, GroupId), u32>,
    /// Live nodes lacking each counted key: when none do, spread counts need no node filter.
    missing: FxMap<Sym, u32>,
    totals: Vec<u32>,
    /// Placed pods holding a required anti-affinity term, per (key, domain, group).
    anti: FxMap<(Sym, Sym, GroupId), u32>,
    anti_terms: Vec<(Sym, GroupId)>,
    node_index: HashMap<String, NodeId>,
    pub hostname_key: Sym,
    pub zone_key: Sym,
    name_field: Sym,
    /// Set when groups or keys changed after pods were placed: counts are rebuilt lazily.
    stale_counts: bool,
}

impl Default for Snapshot {
    fn default() -> Self {
        Self::new()
    }
}

impl Snapshot {
    pub fn new() -> Self {
        let mut syms = Symbols::default();
        let hostname_key = syms.intern(model::HOSTNAME);
        let zone_key = syms.intern(model::ZONE);
        let name_field = syms.intern(model::NODE_NAME_LABEL);
        let empty = syms.intern("");
        debug_assert_eq!(empty, EMPTY);
        Self {
            syms,
            nodes: Vec::new(),
            pods: Vec::new(),
            pdbs: Vec::new(),
            classes: Vec::new(),
            class_ids: HashMap::new(),
            groups: Vec::new(),
            group_ids: HashMap::new(),
            keys: Vec::new(),
            counts: FxMap::default(),
            key_totals: FxMap::default(),
            missing: FxMap::default(),
            totals: Vec::new(),
            anti: FxMap::default(),
            anti_terms: Vec::new(),
            node_index: HashMap::new(),
            hostname_key,
            zone_key,
            name_field,
            stale_counts: false,
        }
    }

    // ----- building -------------------------------------------------------------------------

    /// Adds a node from its parts; `kubernetes.io/hostname` defaults to the name.
    pub fn add_node(
        &mut self,
        name: &str,
        labels: Labels,
        taints: Vec<Taint>,
        allocatable: Resources,
        unschedulable: bool,
    ) -> NodeId {
        let mut labels = labels;
        let name_sym = self.syms.intern(name);
        if labels.get(self.hostname_key).is_none() {
            labels.set(self.hostname_key, name_sym);
        }
        labels.set(self.name_field, name_sym);
        let id = self.nodes.len() as NodeId;
        self.nodes.push(Node {
            name: name.to_owned(),
            labels,
            taints,
            allocatable,
            unschedulable,
            removed: false,
            used: Resources::default(),
            pods: Vec::new(),
            host_ports: Vec::new(),
        });
        self.node_index.insert(name.to_owned(), id);
        for &k in &self.keys {
            if self.nodes[id as usize].labels.get(k).is_none() {
                *self.missing.entry(k).or_insert(0) += 1;
            }
        }
        id
    }

    pub fn add_node_object(&mut self, n: &core::Node) -> Result<NodeId, BuildError> {
        let name = n.metadata.name.clone().unwrap_or_default();
        let invalid = |message: String| BuildError::Invalid { kind: "Node", name: name.clone(), message };
        let labels = model::labels(n.metadata.labels.as_ref(), &mut self.syms);
        let spec = n.spec.clone().unwrap_or_default();
        let taints = model::taints(spec.taints.as_deref().unwrap_or_default(), &mut self.syms);
        let status = n.status.clone().unwrap_or_default();
        let alloc = status.allocatable.or(status.capacity).unwrap_or_default();
        let allocatable = Resources::from_list(&alloc, &mut self.syms).map_err(invalid)?;
        Ok(self.add_node(&name, labels, taints, allocatable, spec.unschedulable.unwrap_or(false)))
    }

    pub fn node_id(&self, name: &str) -> Option<NodeId> {
        self.node_index.get(name).copied()
    }

    pub fn node_value(&self, node: NodeId, key: Sym) -> Option<Sym> {
        self.nodes.get(node as usize).and_then(|n| n.labels.get(key))
    }

    pub fn zone_of(&self, node: NodeId) -> Option<Sym> {
        self.node_value(node, self.zone_key)
    }

    /// Sets a label on a node (a new node's zone, once decided), keeping counts right.
    pub fn set_node_label(&mut self, node: NodeId, key: Sym, value: Sym) {
        let pods = self.nodes[node as usize].pods.clone();
        for &p in &pods {
            self.count_pod(p, node, -1);
        }
        let n = &mut self.nodes[node as usize];
        if n.labels.get(key).is_none() && !n.removed && self.keys.contains(&key) {
            if let Some(m) = self.missing.get_mut(&key) {
                *m = m.saturating_sub(1);
            }
        }
        n.labels.set(key, value);
        for &p in &pods {
            self.count_pod(p, node, 1);
        }
    }

    fn group(&mut self, g: Group) -> GroupId {
        if let Some(&id) = self.group_ids.get(&g) {
            return id;
        }
        let id = self.groups.len() as GroupId;
        for c in &mut self.classes {
            if group_matches(&g, &c.class) {
                c.matches.push(id);
            }
        }
        self.groups.push(g.clone());
        self.group_ids.insert(g, id);
        self.totals.push(0);
        self.stale_counts = true;
        id
    }

    fn key(&mut self, k: Sym) {
        if !self.keys.contains(&k) {
            self.keys.push(k);
            let missing = self.nodes.iter().filter(|n| !n.removed && n.labels.get(k).is_none()).count() as u32;
            self.missing.insert(k, missing);
            self.stale_counts = true;
        }
    }

    /// Interns a pod class; identical classes share an id.
    pub fn class(&mut self, class: PodClass) -> ClassId {
        if let Some(&id) = self.class_ids.get(&class) {
            return id;
        }
        let levels: Vec<Constraints> = (0..=class.prefs.len()).map(|l| class.effective(l)).collect();
        let matches =
            (0..self.groups.len()).filter(|&g| group_matches(&self.groups[g], &class)).map(|g| g as GroupId).collect();
        let id = self.classes.len() as ClassId;
        self.class_ids.insert(class.clone(), id);
        self.classes.push(ClassInfo { class, levels, matches });
        id
    }

    pub fn class_of(&self, id: ClassId) -> &PodClass {
        &self.classes[id as usize].class
    }

    /// Number of relaxation levels of a class (preferences + 1).
    pub fn levels(&self, id: ClassId) -> usize {
        self.classes[id as usize].levels.len()
    }

    pub fn constraints(&self, id: ClassId, level: usize) -> &Constraints {
        let c = &self.classes[id as usize];
        &c.levels[level.min(c.levels.len() - 1)]
    }

    /// Converts a pod's scheduling-relevant spec into a class.
    pub fn pod_class(&mut self, p: &core::Pod, volume_zones: Option<&[String]>) -> Result<ClassId, BuildError> {
        let name = p.metadata.name.clone().unwrap_or_default();
        let invalid = |message: String| BuildError::Invalid { kind: "Pod", name: name.clone(), message };
        let spec = p.spec.clone().unwrap_or_default();
        let ns = p.metadata.namespace.as_deref().unwrap_or("default");
        let namespace = self.syms.intern(ns);
        let labels = model::labels(p.metadata.labels.as_ref(), &mut self.syms);
        let requests = model::pod_requests(&spec, &mut self.syms).map_err(&invalid)?;
        let mut hard = Constraints {
            node_name: spec.node_name.as_deref().filter(|n| !n.is_empty()).map(|n| self.syms.intern(n)),
            ..Constraints::default()
        };
        for (k, v) in spec.node_selector.iter().flatten() {
            let key = self.syms.intern(k);
            let val = self.syms.intern(v);
            hard.node_selector.0.push(crate::labels::Requirement { key, op: crate::labels::Op::In(vec![val]) });
        }
        hard.tolerations = model::tolerations(spec.tolerations.as_deref().unwrap_or_default(), &mut self.syms);
        let mut prefs = Vec::new();
        let affinity = spec.affinity.clone().unwrap_or_default();
        if let Some(na) = &affinity.node_affinity {
            if let Some(req) = &na.required_during_scheduling_ignored_during_execution {
                for t in &req.node_selector_terms {
                    hard.node_terms.push(model::node_term(t, &mut self.syms).map_err(&invalid)?);
                }
                if hard.node_terms.len() > 1 {
                    prefs.push(Preference::FirstNodeTerm);
                }
            }
        }
        let term = |this: &mut Self, t: &core::PodAffinityTerm| -> Result<Term, BuildError> {
            let key = this.syms.intern(&t.topology_key);
            this.key(key);
            let selector = model::label_selector(t.label_selector.as_ref(), &mut this.syms).map_err(&invalid)?;
            let namespaces = match (&t.namespaces, &t.namespace_selector) {
                // An empty namespaceSelector selects every namespace.
                (_, Some(sel))
                    if sel.match_labels.as_ref().is_none_or(|m| m.is_empty())
                        && sel.match_expressions.as_ref().is_none_or(|m| m.is_empty()) =>
                {
                    None
                }
                (Some(list), _) if !list.is_empty() => Some(list.iter().map(|n| this.syms.intern(n)).collect()),
                _ => Some(vec![namespace]),
            };
            let group = this.group(Group { namespaces, selector });
            Ok(Term { key, group })
        };
        let mut weighted_aff: Vec<(i32, Term)> = Vec::new();
        let mut weighted_anti: Vec<(i32, Term)> = Vec::new();
        if let Some(pa) = &affinity.pod_affinity {
            for t in pa.required_during_scheduling_ignored_during_execution.iter().flatten() {
                let t = term(self, t)?;
                hard.affinity.push(t);
            }
            // Upstream counts, for every required term, the pods that match all of them.
            if hard.affinity.len() > 1 {
                let mut namespaces: Option<Vec<Sym>> = None;
                let mut reqs = Vec::new();
                let mut nothing = false;
                for t in &hard.affinity {
                    let g = self.groups[t.group as usize].clone();
                    match g.selector {
                        Some(sel) => reqs.extend(sel.0),
                        None => nothing = true,
                    }
                    if let Some(ns) = g.namespaces {
                        namespaces = Some(match namespaces {
                            None => ns,
                            Some(cur) => cur.into_iter().filter(|n| ns.contains(n)).collect(),
                        });
                    }
                }
                let selector = if nothing { None } else { Some(crate::labels::Selector(reqs)) };
                let all = self.group(Group { namespaces, selector });
                for t in &mut hard.affinity {
                    t.group = all;
                }
            }
            for w in pa.preferred_during_scheduling_ignored_during_execution.iter().flatten() {
                weighted_aff.push((w.weight, term(self, &w.pod_affinity_term)?));
            }
        }
        if let Some(pa) = &affinity.pod_anti_affinity {
            for t in pa.required_during_scheduling_ignored_during_execution.iter().flatten() {
                let t = term(self, t)?;
                hard.anti_affinity.push(t);
            }
            for w in pa.preferred_during_scheduling_ignored_during_execution.iter().flatten() {
                weighted_anti.push((w.weight, term(self, &w.pod_affinity_term)?));
            }
        }
        // Lighter preferences are relaxed first.
        weighted_aff.sort_by_key(|w| w.0);
        weighted_anti.sort_by_key(|w| w.0);
        prefs.extend(weighted_aff.into_iter().map(|w| Preference::PodAffinity(w.1)));
        prefs.extend(weighted_anti.into_iter().map(|w| Preference::PodAntiAffinity(w.1)));
        if let Some(na) = &affinity.node_affinity {
            let mut weighted: Vec<(i32, crate::labels::Selector)> = Vec::new();
            for w in na.preferred_during_scheduling_ignored_during_execution.iter().flatten() {
                weighted.push((w.weight, model::node_term(&w.preference, &mut self.syms).map_err(&invalid)?));
            }
            weighted.sort_by_key(|w| w.0);
            prefs.extend(weighted.into_iter().map(|w| Preference::NodeAffinity(w.1)));
        }
        for c in spec.topology_spread_constraints.iter().flatten() {
            let key = self.syms.intern(&c.topology_key);
            self.key(key);
            let selector = model::label_selector(c.label_selector.as_ref(), &mut self.syms).map_err(&invalid)?;
            let empty_selector = selector.as_ref().is_some_and(|s| s.is_empty());
            let selector = if empty_selector { None } else { selector };
            let group = self.group(Group { namespaces: Some(vec![namespace]), selector });
            let s = Spread {
                key,
                max_skew: i64::from(c.max_skew.max(1)),
                group,
                min_domains: c.min_domains.map(i64::from),
                empty_selector,
            };
            if c.when_unsatisfiable == "ScheduleAnyway" {
                prefs.push(Preference::Spread(s));
            } else {
                hard.spread.push(s);
            }
        }
        prefs.push(Preference::AvoidPreferNoSchedule);
        for c in &spec.containers {
            for port in c.ports.iter().flatten() {
                if let Some(hp) = port.host_port.filter(|p| *p > 0) {
                    let protocol = self.syms.intern(port.protocol.as_deref().unwrap_or("TCP"));
                    let ip = match port.host_ip.as_deref() {
                        None | Some("") | Some("0.0.0.0") => EMPTY,
                        Some(ip) => self.syms.intern(ip),
                    };
                    hard.host_ports.push(HostPort { protocol, ip, port: hp });
                }
            }
        }
        hard.volume_zones = volume_zones.map(|zs| zs.iter().map(|z| self.syms.intern(z)).collect());
        let owner = p
            .metadata
            .owner_references
            .iter()
            .flatten()
            .find(|o| o.controller == Some(true))
            .map(|o| self.syms.intern(&o.uid));
        Ok(self.class(PodClass {
            namespace,
            labels,
            requests,
            hard,
            prefs,
            owner,
            priority: spec.priority.unwrap_or(0),
        }))
    }

    /// Adds a pod; bound (and counted) when `spec.nodeName` names a node of the snapshot.
    pub fn add_pod_object(&mut self, p: &core::Pod, volume_zones: Option<&[String]>) -> Result<PodId, BuildError> {
        let mut unbound = p.clone();
        let node = p.spec.as_ref().and_then(|s| s.node_name.as_deref()).and_then(|n| self.node_id(n));
        if let Some(s) = unbound.spec.as_mut() {
            s.node_name = None;
        }
        let class = self.pod_class(&unbound, volume_zones)?;
        let meta = &p.metadata;
        let drain = drain_facts(p);
        let owner_kind =
            meta.owner_references.iter().flatten().find(|o| o.controller == Some(true)).map(|o| o.kind.clone());
        let id = self.pods.len() as PodId;
        self.pods.push(Pod {
            name: meta.name.clone().unwrap_or_default(),
            namespace: meta.namespace.clone().unwrap_or_else(|| "default".into()),
            uid: meta.uid.clone().unwrap_or_default(),
            class,
            node: None,
            drain,
            owner_kind,
        });
        if let Some(n) = node {
            self.place(id, n);
        }
        Ok(id)
    }

    /// Adds a pod of an already-interned class (benchmarks and packing inputs).
    pub fn add_pod(&mut self, name: &str, namespace: &str, class: ClassId) -> PodId {
        let id = self.pods.len() as PodId;
        self.pods.push(Pod {
            name: name.to_owned(),
            namespace: namespace.to_owned(),
            uid: format!("{namespace}/{name}"),
            class,
            node: None,
            drain: DrainFacts { has_controller: true, ..DrainFacts::default() },
            owner_kind: None,
        });
        id
    }

    pub fn add_pdb(&mut self, pdb: &k8s_openapi::api::policy::v1::PodDisruptionBudget) -> Result<(), BuildError> {
        let name = pdb.metadata.name.clone().unwrap_or_default();
        let ns = self.syms.intern(pdb.metadata.namespace.as_deref().unwrap_or("default"));
        let spec = pdb.spec.clone().unwrap_or_default();
        let selector = model::label_selector(spec.selector.as_ref(), &mut self.syms)
            .map_err(|message| BuildError::Invalid { kind: "PodDisruptionBudget", name: name.clone(), message })?;
        let allowed = pdb.status.as_ref().map(|s| i64::from(s.disruptions_allowed)).unwrap_or(0);
        self.pdbs.push(Pdb { name, namespace: ns, selector, disruptions_allowed: allowed });
        Ok(())
    }

    // ----- placement --------------------------------------------------------------------------

    fn count_pod(&mut self, pod: PodId, node: NodeId, delta: i64) {
        let class = self.pods[pod as usize].class as usize;
        let n = &self.nodes[node as usize];
        let info = &self.classes[class];
        // Terminating pods hold resources but no longer count for spread or affinity.
        let counted = !self.pods[pod as usize].drain.terminating;
        for &k in self.keys.iter().filter(|_| counted) {
            let Some(v) = n.labels.get(k) else { continue };
            for &g in &info.matches {
                let c = self.counts.entry((k, v, g)).or_insert(0);
                *c = (*c as i64 + delta).max(0) as u32;
                let t = self.key_totals.entry((k, g)).or_insert(0);
                *t = (*t as i64 + delta).max(0) as u32;
            }
        }
        let hard = info.levels.last().map(|l| &l.anti_affinity);
        for t in hard.into_iter().flatten() {
            if let Some(v) = n.labels.get(t.key) {
                let c = self.anti.entry((t.key, v, t.group)).or_insert(0);
                *c = (*c as i64 + delta).max(0) as u32;
                if !self.anti_terms.contains(&(t.key, t.group)) {
                    self.anti_terms.push((t.key, t.group));
                }
            }
        }
    }

    fn refresh_counts(&mut self) {
        if !self.stale_counts {
            return;
        }
        self.stale_counts = false;
        self.counts.clear();
        self.key_totals.clear();
        self.anti.clear();
        self.totals.iter_mut().for_each(|t| *t = 0);
        for p in 0..self.pods.len() {
            if let Some(n) = self.pods[p].node {
                self.count_pod(p as PodId, n, 1);
                for &g in &self.classes[self.pods[p].class as usize].matches {
                    self.totals[g as usize] += 1;
                }
            }
        }
    }

    /// Binds a pod to a node (no predicate check: callers check first, or record reality).
    pub fn place(&mut self, pod: PodId, node: NodeId) {
        self.refresh_counts();
        if self.pods[pod as usize].node.is_some() {
            self.unplace(pod);
        }
        let class = self.pods[pod as usize].class as usize;
        let info = &self.classes[class];
        let req = info.class.requests.clone();
        let ports = info.levels.last().map(|l| l.host_ports.clone()).unwrap_or_default();
        for &g in &info.matches {
            self.totals[g as usize] += 1;
        }
        let n = &mut self.nodes[node as usize];
        n.used.add(&req);
        n.pods.push(pod);
        n.host_ports.extend(ports);
        self.pods[pod as usize].node = Some(node);
        self.count_pod(pod, node, 1);
    }

    /// Takes a pod off its node.
    pub fn unplace(&mut self, pod: PodId) {
        self.refresh_counts();
        let Some(node) = self.pods[pod as usize].node else { return };
        self.count_pod(pod, node, -1);
        let class = self.pods[pod as usize].class as usize;
        let info = &self.classes[class];
        for &g in &info.matches {
            self.totals[g as usize] = self.totals[g as usize].saturating_sub(1);
        }
        let req = info.class.requests.clone();
        let ports = info.levels.last().map(|l| l.host_ports.clone()).unwrap_or_default();
        let n = &mut self.nodes[node as usize];
        n.used.sub(&req);
        n.pods.retain(|&p| p != pod);
        for hp in ports {
            if let Some(i) = n.host_ports.iter().position(|x| *x == hp) {
                n.host_ports.swap_remove(i);
            }
        }
        self.pods[pod as usize].node = None;
    }

    /// Marks a node removed; its pods are unplaced and returned.
    pub fn remove_node(&mut self, node: NodeId) -> Vec<PodId> {
        let pods = self.nodes[node as usize].pods.clone();
        for &p in &pods {
            self.unplace(p);
        }
        self.set_removed(node, true);
        pods
    }

    /// Takes a node out of (or back into) consideration, keeping per-key bookkeeping right.
    pub fn set_removed(&mut self, node: NodeId, removed: bool) {
        let n = &mut self.nodes[node as usize];
        if n.removed == removed {
            return;
        }
        n.removed = removed;
        for &k in &self.keys {
            if self.nodes[node as usize].labels.get(k).is_none() {
                let m = self.missing.entry(k).or_insert(0);
                *m = if removed { m.saturating_sub(1) } else { *m + 1 };
            }
        }
    }

    // ----- predicates -------------------------------------------------------------------------

    /// Node-only predicates (no other pods involved): unschedulable, node name, taints, node
    /// affinity and selector, volume zone. Also valid for node templates.
    pub fn check_static(
        &self,
        c: &Constraints,
        labels: &Labels,
        taints: &[Taint],
        unschedulable: bool,
    ) -> Result<(), Reason> {
        if unschedulable {
            let taint = Taint {
                key: self.syms.get("node.kubernetes.io/unschedulable").unwrap_or(Sym::MAX),
                value: EMPTY,
                effect: model::Effect::NoSchedule,
            };
            let tolerated = c.tolerations.iter().any(|t| t.tolerates(&taint));
            if !tolerated {
                return Err(Reason::Unschedulable);
            }
        }
        if let Some(n) = c.node_name {
            if labels.get(self.name_field) != Some(n) {
                return Err(Reason::NodeName);
            }
        }
        for t in taints {
            let relevant = match t.effect {
                model::Effect::NoSchedule | model::Effect::NoExecute => true,
                model::Effect::PreferNoSchedule => c.avoid_prefer_no_schedule,
            };
            if relevant && !c.tolerations.iter().any(|tol| tol.tolerates(t)) {
                return Err(Reason::Taint {
                    key: self.syms.name(t.key).to_owned(),
                    value: self.syms.name(t.value).to_owned(),
                    effect: t.effect.as_str(),
                });
            }
        }
        if !c.node_selector.matches(labels, &self.syms)
            || (!c.node_terms.is_empty() && !c.node_terms.iter().any(|t| t.matches(labels, &self.syms)))
        {
            return Err(Reason::NodeAffinity);
        }
        self.check_volume_zone(c, labels)
    }

    /// VolumeZone: a node without a zone label takes any volume (upstream).
    fn check_volume_zone(&self, c: &Constraints, labels: &Labels) -> Result<(), Reason> {
        match (&c.volume_zones, labels.get(self.zone_key)) {
            (Some(zones), Some(z)) if !zones.contains(&z) => Err(Reason::VolumeZone),
            _ => Ok(()),
        }
    }

    /// Whether a node counts as a domain for a spread constraint of this pod: node affinity
    /// and selector are honoured, taints ignored (upstream's defaults).
    fn spread_eligible(&self, c: &Constraints, node: &Node) -> bool {
        !node.removed
            && c.spread.iter().all(|s| node.labels.get(s.key).is_some())
            && c.node_selector.matches(&node.labels, &self.syms)
            && (c.node_terms.is_empty() || c.node_terms.iter().any(|t| t.matches(&node.labels, &self.syms)))
    }

    fn count(&self, key: Sym, value: Sym, g: GroupId) -> u32 {
        self.counts.get(&(key, value, g)).copied().unwrap_or(0)
    }

    /// Placed pods of group `g` in the domain `key=value`.
    pub fn count_in(&self, key: Sym, value: Sym, g: GroupId) -> u32 {
        self.count(key, value, g)
    }

    pub fn key_total(&self, key: Sym, g: GroupId) -> u32 {
        self.key_totals.get(&(key, g)).copied().unwrap_or(0)
    }

    /// Pods of group `g` in domain `key=value` as topology spread counts them for a pod with
    /// constraints `c`: only on nodes that pass its node affinity and carry all its spread keys.
    pub fn domain_count(&self, c: &Constraints, key: Sym, value: Sym, g: GroupId) -> u32 {
        let restricted = !c.node_selector.is_empty() || !c.node_terms.is_empty();
        // Counts by `key` already leave out nodes without `key`; only nodes lacking another of
        // the pod's spread keys need filtering out.
        let complete = c.spread.iter().all(|s| s.key == key || self.missing.get(&s.key).copied().unwrap_or(0) == 0);
        if !restricted && complete {
            return self.count(key, value, g);
        }
        self.nodes
            .iter()
            .filter(|n| n.labels.get(key) == Some(value) && self.spread_eligible(c, n))
            .map(|n| {
                n.pods
                    .iter()
                    .filter(|&&p| {
                        let pod = &self.pods[p as usize];
                        !pod.drain.terminating && self.classes[pod.class as usize].matches.contains(&g)
                    })
                    .count() as u32
            })
            .sum()
    }

    /// Placed pods of group `g` anywhere.
    pub fn total(&self, g: GroupId) -> u32 {
        self.totals.get(g as usize).copied().unwrap_or(0)
    }

    /// The smallest count over a spread constraint's domains.
    pub fn spread_min(&self, c: &Constraints, s: &Spread, domains: Domains<'_>) -> i64 {
        if s.key == self.hostname_key && domains.new_hosts {
            return 0;
        }
        let mut seen: Vec<Sym> = Vec::new();
        let mut min = i64::MAX;
        for n in &self.nodes {
            if let Some(v) = n.labels.get(s.key) {
                if !seen.contains(&v) && self.spread_eligible(c, n) {
                    seen.push(v);
                    min = min.min(i64::from(self.domain_count(c, s.key, v, s.group)));
                }
            }
        }
        if s.key == self.zone_key {
            for &z in domains.zones {
                if !seen.contains(&z) {
                    seen.push(z);
                    min = min.min(i64::from(self.domain_count(c, s.key, z, s.group)));
                }
            }
        }
        if min == i64::MAX || s.min_domains.is_some_and(|m| (seen.len() as i64) < m) {
            return 0;
        }
        min
    }

    /// Whether the class matches a counting group (it counts toward its own spread/affinity).
    pub fn matches_group(&self, class: ClassId, g: GroupId) -> bool {
        self.classes[class as usize].matches.contains(&g)
    }

    /// The predicates that depend on other pods, for a node with these labels and usage.
    /// `mins` holds the precomputed [`Snapshot::spread_min`] per spread constraint.
    pub fn check_dynamic(&self, class: ClassId, c: &Constraints, node: &Node, mins: &[i64]) -> Result<(), Reason> {
        debug_assert!(!self.stale_counts, "call Snapshot::ready() after adding classes");
        self.check_fit(class, c, node)?;
        let info = &self.classes[class as usize];
        for (s, &min) in c.spread.iter().zip(mins) {
            let Some(v) = node.labels.get(s.key) else { return Err(Reason::TopologySpreadMissingLabel) };
            let self_match = s.self_match(info.matches.contains(&s.group));
            if i64::from(self.domain_count(c, s.key, v, s.group)) + self_match - min > s.max_skew {
                return Err(Reason::TopologySpread);
            }
        }
        if !c.affinity.is_empty() {
            let satisfied =
                c.affinity.iter().all(|t| node.labels.get(t.key).is_some_and(|v| self.count(t.key, v, t.group) > 0));
            if !satisfied {
                // The first pod of a group that selects itself may go anywhere: no matching pod
                // on any node that has the term's key.
                let first =
                    c.affinity.iter().all(|t| self.key_total(t.key, t.group) == 0 && info.matches.contains(&t.group));
                let has_keys = c.affinity.iter().all(|t| node.labels.get(t.key).is_some());
                if !(first && has_keys) {
                    return Err(Reason::PodAffinity);
                }
            }
        }
        for t in &c.anti_affinity {
            if let Some(v) = node.labels.get(t.key) {
                if self.count(t.key, v, t.group) > 0 {
                    return Err(Reason::PodAntiAffinity);
                }
            }
        }
        for &(k, g) in &self.anti_terms {
            if info.matches.contains(&g) {
                if let Some(v) = node.labels.get(k) {
                    if self.anti.get(&(k, v, g)).copied().unwrap_or(0) > 0 {
                        return Err(Reason::ExistingAntiAffinity);
                    }
                }
            }
        }
        Ok(())
    }

    /// NodePorts and NodeResourcesFit.
    fn check_fit(&self, class: ClassId, c: &Constraints, node: &Node) -> Result<(), Reason> {
        let info = &self.classes[class as usize];
        if !c.host_ports.is_empty() {
            let clash = c.host_ports.iter().any(|want| {
                node.host_ports.iter().any(|have| {
                    have.port == want.port
                        && have.protocol == want.protocol
                        && (have.ip == EMPTY || want.ip == EMPTY || have.ip == want.ip)
                })
            });
            if clash {
                return Err(Reason::HostPorts);
            }
        }
        match info.class.requests.short(&node.used, &node.allocatable) {
            None => {}
            Some(model::Resource::Pods) => return Err(Reason::TooManyPods),
            Some(r) => return Err(Reason::Insufficient(self.resource_name(r))),
        }
        Ok(())
    }

    pub fn resource_name(&self, r: model::Resource) -> String {
        match r {
            model::Resource::Cpu => "cpu".into(),
            model::Resource::Memory => "memory".into(),
            model::Resource::Pods => "pods".into(),
            model::Resource::Ephemeral => "ephemeral-storage".into(),
            model::Resource::Extended(s) => self.syms.name(s).to_owned(),
        }
    }

    /// Every filter, as kube-scheduler runs them for one pod class on one existing node.
    pub fn check(&self, class: ClassId, level: usize, node: NodeId, domains: Domains<'_>) -> Result<(), Reason> {
        let c = self.constraints(class, level);
        let n = &self.nodes[node as usize];
        if n.removed {
            return Err(Reason::Removed);
        }
        if let Err(r) = self.check_static(c, &n.labels, &n.taints, n.unschedulable) {
            // Upstream runs NodePorts and NodeResourcesFit before VolumeZone.
            if r == Reason::VolumeZone {
                self.check_fit(class, c, n)?;
            }
            return Err(r);
        }
        let mins: Vec<i64> = c.spread.iter().map(|s| self.spread_min(c, s, domains)).collect();
        self.check_dynamic(class, c, n, &mins)
    }

    /// Makes sure counts reflect every registered group and key (after building).
    pub fn ready(&mut self) {
        self.refresh_counts();
    }
}

fn group_matches(g: &Group, c: &PodClass) -> bool {
    let ns_ok = g.namespaces.as_ref().is_none_or(|ns| ns.contains(&c.namespace));
    // `Symbols` is not needed: selectors of groups never use Gt/Lt.
    ns_ok
        && g.selector.as_ref().is_some_and(|s| {
            s.0.iter().all(|r| {
                let v = c.labels.get(r.key);
                match &r.op {
                    crate::labels::Op::In(vs) => v.is_some_and(|v| vs.contains(&v)),
                    crate::labels::Op::NotIn(vs) => v.is_none_or(|v| !vs.contains(&v)),
                    crate::labels::Op::Exists => v.is_some(),
                    crate::labels::Op::DoesNotExist => v.is_none(),
                    crate::labels::Op::Gt(_) | crate::labels::Op::Lt(_) => false,
                }
            })
        })
}

/// What the drainability rules need from a pod object.
pub fn drain_facts(p: &core::Pod) -> DrainFacts {
    let meta = &p.metadata;
    let ann = meta.annotations.clone().unwrap_or_default();
    let controller = meta.owner_references.iter().flatten().find(|o| o.controller == Some(true));
    let spec = p.spec.clone().unwrap_or_default();
    let local_volumes = spec
        .volumes
        .iter()
        .flatten()
        .filter(|v| {
            v.host_path.is_some() || v.empty_dir.as_ref().is_some_and(|e| e.medium.as_deref() != Some("Memory"))
        })
        .map(|v| v.name.clone())
        .collect();
    DrainFacts {
        mirror: ann.contains_key("kubernetes.io/config.mirror"),
        daemonset: controller.is_some_and(|o| o.kind == "DaemonSet"),
        terminal: matches!(p.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed")),
        safe_to_evict: ann.get("cluster-autoscaler.kubernetes.io/safe-to-evict").map(|v| v == "true"),
        do_not_disrupt: ann.get("karpenter.sh/do-not-disrupt").is_some_and(|v| v == "true"),
        has_controller: controller.is_some(),
        kube_system: meta.namespace.as_deref() == Some("kube-system"),
        local_volumes,
        safe_local_volumes: ann
            .get("cluster-autoscaler.kubernetes.io/safe-to-evict-local-volumes")
            .map(|v| v.split(',').map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect())
            .unwrap_or_default(),
        terminating: meta.deletion_timestamp.is_some(),
    }
}
