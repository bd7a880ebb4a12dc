//! Bin-packing pending pods onto existing nodes, then onto new nodes built from templates.
//!
//! Shape (Karpenter's scheduler, simplified): pods are taken largest first (cpu, then memory),
//! identical pods together; each pod goes to the first existing node that accepts it, else the
//! first node opened in this plan, else a new node. A new node is not one instance type but the
//! set of (template, zone) options every pod on it accepts and fits; when the plan is done each
//! new node takes its cheapest option that holds all its pods. A pod that fits nowhere relaxes
//! its next preference and tries again; with none left it is reported with the reasons.
//!
//! Speed comes from three things: identical pods share a class and a scan cursor (a node that
//! rejected a class for a reason that can only get worse is never asked again); zone-level
//! constraints are decided once per zone bucket, not per node; and a new node's options are a
//! bitset ANDed with each class's precomputed compatibility.

use crate::labels::{Labels, Sym};
use crate::model::{self, Resources, Taint};
use crate::snapshot::{ClassId, Domains, FxMap, NodeId, PodId, Reason, Snapshot};
use k8s_openapi::api::core::v1 as core;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

/// A kind of node that can be created: an Auto Scaling Group's template, or an instance type.
#[derive(Clone, Debug, Default)]
pub struct Template {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<core::Taint>,
    pub allocatable: Resources,
    /// Zones a node of this template can be created in (at least one).
    pub zones: Vec<String>,
    /// Hourly price: new nodes take their cheapest option.
    pub price: f64,
    /// How many more nodes of this template may be created (a node group's headroom).
    pub max_new: Option<u32>,
}

/// Limits of one packing run.
#[derive(Clone, Debug, Default)]
pub struct PackOptions {
    /// DaemonSet pods (their templates as pods): their requests are reserved on every new node
    /// they would run on.
    pub daemonsets: Vec<core::Pod>,
    /// At most this many new nodes in total.
    pub max_new_nodes: Option<u32>,
}

/// A node the plan creates.
#[derive(Clone, Debug, PartialEq)]
pub struct NewNode {
    pub template: usize,
    pub zone: String,
    pub pods: Vec<PodId>,
    /// The simulated node standing for it in the snapshot.
    pub node: NodeId,
}

/// A pod that fits nowhere, with the reasons.
#[derive(Clone, Debug, PartialEq)]
pub struct Unplaced {
    pub pod: PodId,
    pub reason: String,
}

/// The result of [`pack`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Packing {
    /// Pods that fit existing nodes.
    pub existing: Vec<(PodId, NodeId)>,
    pub new_nodes: Vec<NewNode>,
    pub unplaced: Vec<Unplaced>,
}

impl Packing {
    /// New nodes and pods per template, in template order (templates without nodes omitted).
    pub fn per_template(&self) -> Vec<(usize, usize, usize)> {
        let mut m: BTreeMap<usize, (usize, usize)> = BTreeMap::new();
        for n in &self.new_nodes {
            let e = m.entry(n.template).or_default();
            e.0 += 1;
            e.1 += n.pods.len();
        }
        m.into_iter().map(|(t, (n, p))| (t, n, p)).collect()
    }
}

/// A fixed-size bitset over (template, zone) options.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Bits(Vec<u64>);

impl Bits {
    fn empty(n: usize) -> Self {
        Bits(vec![0; n.div_ceil(64)])
    }
    fn set(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }
    fn and(&mut self, o: &Bits) {
        self.and_changed(o);
    }
    /// `self &= o`; whether any bit was cleared.
    fn and_changed(&mut self, o: &Bits) -> bool {
        let mut changed = false;
        for (a, b) in self.0.iter_mut().zip(&o.0) {
            changed |= *a & !b != 0;
            *a &= b;
        }
        changed
    }
    fn has(&self, i: usize) -> bool {
        self.0.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0)
    }
    fn any(&self) -> bool {
        self.0.iter().any(|w| *w != 0)
    }
    fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.iter_and(self)
    }
    /// Set bits of `self & o`, lowest first, without allocating.
    fn iter_and<'b>(&'b self, o: &'b Bits) -> impl Iterator<Item = usize> + 'b {
        self.0.iter().zip(&o.0).map(|(a, b)| a & b).enumerate().flat_map(|(wi, w)| {
            let mut w = w;
            std::iter::from_fn(move || {
                if w == 0 {
                    return None;
                }
                let b = w.trailing_zeros() as usize;
                w &= w - 1;
                Some(wi * 64 + b)
            })
        })
    }
}

/// One pod class at one relaxation level, being placed.
#[derive(Clone, Copy, Debug)]
struct Probe<'b> {
    class: ClassId,
    level: usize,
    mins: &'b [i64],
    ok: &'b Bits,
    req: &'b Resources,
    zonal: bool,
}

/// One (template, zone) a new node could be.
#[derive(Debug)]
struct Opt {
    template: usize,
    zone: Sym,
    labels: Labels,
    taints: Vec<Taint>,
    /// Allocatable minus DaemonSet overhead.
    capacity: Resources,
    price: f64,
}

#[derive(Debug)]
struct Claim {
    node: NodeId,
    options: Bits,
    /// Element-wise maximum capacity over `options`: a pod that exceeds it is rejected without
    /// looking at single options.
    cap_max: Resources,
    zone: Option<Sym>,
    provisional: usize,
}

const NO_ZONE: Sym = Sym::MAX;

/// Places `pods` (unplaced pods of the snapshot): onto existing nodes, then onto new nodes
/// from `templates`. The snapshot is changed (placements and new nodes); fork it first to keep
/// the original.
pub fn pack(snap: &mut Snapshot, pods: &[PodId], templates: &[Template], opts: &PackOptions) -> Packing {
    snap.ready();
    let mut p = Packer::new(snap, templates, opts);
    p.run(pods);
    p.finish()
}

struct Packer<'a> {
    snap: &'a mut Snapshot,
    templates: &'a [Template],
    options: Vec<Opt>,
    zone_masks: HashMap<Sym, Bits>,
    zones: Vec<Sym>,
    class_ok: FxMap<(ClassId, usize), Rc<(Bits, bool)>>,
    claims: Vec<Claim>,
    /// Claim index per snapshot node id (`None`: an existing node).
    claim_of: Vec<Option<usize>>,
    /// Nodes by zone (sorted by zone symbol), in creation order within a zone.
    buckets: Vec<(Sym, Vec<NodeId>)>,
    cursors: FxMap<(ClassId, usize, Sym), usize>,
    level: FxMap<ClassId, usize>,
    provisional_count: Vec<u32>,
    max_new: Option<u32>,
    zone_groups: Vec<u32>,
    /// Where the last pod went: (class, level, node).
    last: Option<(ClassId, usize, NodeId)>,
    /// The class the last pod that found no place belonged to, and why, until anything is
    /// placed: the plan has not changed since, so another pod of the class fares the same (and
    /// `explain`, which checks every node, runs once per class rather than once per pod).
    last_failed: Option<(ClassId, String)>,
    /// Some template has limited headroom (`max_new`).
    any_limited: bool,
    /// The allocatable of a node not yet sized: unbounded in every resource some option offers,
    /// extended resources included (what a claim may really hold is checked against its
    /// options' capacities).
    unbounded: Resources,
    out: Packing,
}

impl<'a> Packer<'a> {
    fn new(snap: &'a mut Snapshot, templates: &'a [Template], opts: &PackOptions) -> Self {
        let ds_classes: Vec<ClassId> = opts.daemonsets.iter().filter_map(|d| snap.pod_class(d, None).ok()).collect();
        snap.ready();
        let mut options = Vec::new();
        let mut zones: Vec<Sym> = Vec::new();
        for (ti, t) in templates.iter().enumerate() {
            let base = model::labels(Some(&t.labels), &mut snap.syms);
            let taints = model::taints(&t.taints, &mut snap.syms);
            for z in &t.zones {
                let zone = snap.syms.intern(z);
                let mut labels = base.clone();
                labels.set(snap.zone_key, zone);
                let mut overhead = Resources::default();
                for &d in &ds_classes {
                    let c = snap.constraints(d, usize::MAX);
                    if snap.check_static(c, &labels, &taints, false).is_ok() {
                        overhead.add(&snap.class_of(d).requests);
                    }
                }
                let mut capacity = t.allocatable.clone();
                capacity.sub(&overhead);
                if !zones.contains(&zone) {
                    zones.push(zone);
                }
                options.push(Opt { template: ti, zone, labels, taints: taints.clone(), capacity, price: t.price });
            }
        }
        // Largest first: a new node's fit check stops at its first (largest) option.
        options.sort_by(|a: &Opt, b: &Opt| {
            (b.capacity.cpu, b.capacity.memory, a.template, a.zone).cmp(&(
                a.capacity.cpu,
                a.capacity.memory,
                b.template,
                b.zone,
            ))
        });
        const HUGE: i64 = i64::MAX / 4;
        let mut ext: Vec<(Sym, i64)> =
            options.iter().flat_map(|o| o.capacity.ext.iter().map(|&(s, _)| (s, HUGE))).collect();
        ext.sort_unstable();
        ext.dedup();
        let unbounded = Resources { cpu: HUGE, memory: HUGE, pods: HUGE, ephemeral: HUGE, ext };
        let mut zone_masks: HashMap<Sym, Bits> = HashMap::new();
        for (i, o) in options.iter().enumerate() {
            zone_masks.entry(o.zone).or_insert_with(|| Bits::empty(options.len())).set(i);
        }
        let mut by_zone: BTreeMap<Sym, Vec<NodeId>> = BTreeMap::new();
        for (i, n) in snap.nodes.iter().enumerate() {
            if !n.removed {
                by_zone.entry(n.labels.get(snap.zone_key).unwrap_or(NO_ZONE)).or_default().push(i as NodeId);
            }
        }
        let buckets: Vec<(Sym, Vec<NodeId>)> = by_zone.into_iter().collect();
        let zone_key = snap.zone_key;
        let snap_nodes = snap.nodes.len();
        let mut zone_groups = Vec::new();
        for c in 0..snap.classes.len() {
            for lvl in &snap.classes[c].levels {
                let terms = lvl.spread.iter().map(|s| (s.key, s.group));
                let aff = lvl.affinity.iter().chain(&lvl.anti_affinity).map(|t| (t.key, t.group));
                for (k, g) in terms.chain(aff) {
                    if k == zone_key && !zone_groups.contains(&g) {
                        zone_groups.push(g);
                    }
                }
            }
        }
        Self {
            snap,
            templates,
            provisional_count: vec![0; templates.len()],
            options,
            zone_masks,
            zones,
            class_ok: FxMap::default(),
            claims: Vec::new(),
            claim_of: vec![None; snap_nodes],
            buckets,
            cursors: FxMap::default(),
            level: FxMap::default(),
            max_new: opts.max_new_nodes,
            zone_groups,
            last: None,
            last_failed: None,
            any_limited: templates.iter().any(|t| t.max_new.is_some()),
            unbounded,
            out: Packing::default(),
        }
    }

    fn run(&mut self, pods: &[PodId]) {
        let mut order: Vec<(i64, i64, ClassId, usize, PodId)> = pods
            .iter()
            .enumerate()
            .filter(|&(_, &p)| self.snap.pods[p as usize].node.is_none())
            .map(|(i, &p)| {
                let c = self.snap.pods[p as usize].class;
                let r = &self.snap.class_of(c).requests;
                (-r.cpu, -r.memory, c, i, p)
            })
            .collect();
        order.sort_unstable();
        for (_, _, class, _, pod) in order {
            self.place(pod, class);
        }
    }

    /// Whether pods of this class need a decided zone on their node.
    fn zonal(&self, class: ClassId, level: usize) -> bool {
        let c = self.snap.constraints(class, level);
        let zk = self.snap.zone_key;
        c.spread.iter().any(|s| s.key == zk)
            || c.affinity.iter().chain(&c.anti_affinity).any(|t| t.key == zk)
            || self.zone_groups.iter().any(|&g| self.snap.matches_group(class, g))
    }

    /// Zone-level verdict of the zone-keyed constraints.
    fn zone_allowed(&self, class: ClassId, level: usize, zone: Sym, mins: &[i64]) -> bool {
        let s = &*self.snap;
        let c = s.constraints(class, level);
        let zk = s.zone_key;
        let count = |g: u32| s.count_in(zk, zone, g);
        for (sp, &min) in c.spread.iter().zip(mins) {
            let here = i64::from(s.domain_count(c, zk, zone, sp.group));
            if sp.key == zk && here + sp.self_match(s.matches_group(class, sp.group)) - min > sp.max_skew {
                return false;
            }
        }
        let aff: Vec<_> = c.affinity.iter().filter(|t| t.key == zk).collect();
        if !aff.is_empty() && !aff.iter().all(|t| count(t.group) > 0) {
            let first = c.affinity.iter().all(|t| s.key_total(t.key, t.group) == 0 && s.matches_group(class, t.group));
            if !first {
                return false;
            }
        }
        !c.anti_affinity.iter().any(|t| t.key == zk && count(t.group) > 0)
    }

    /// Per class and level: which options it accepts statically, and whether it needs a zone.
    fn class_info(&mut self, class: ClassId, level: usize) -> Rc<(Bits, bool)> {
        if let Some(b) = self.class_ok.get(&(class, level)) {
            return b.clone();
        }
        let mut b = Bits::empty(self.options.len());
        let c = self.snap.constraints(class, level);
        for (i, o) in self.options.iter().enumerate() {
            if self.snap.check_static(c, &o.labels, &o.taints, false).is_ok() {
                b.set(i);
            }
        }
        let info = Rc::new((b, self.zonal(class, level)));
        self.class_ok.insert((class, level), info.clone());
        info
    }

    fn place(&mut self, pod: PodId, class: ClassId) {
        if let Some((c, reason)) = &self.last_failed {
            if *c == class {
                self.out.unplaced.push(Unplaced { pod, reason: reason.clone() });
                return;
            }
        }
        let start = self.level.get(&class).copied().unwrap_or(0);
        let levels = self.snap.levels(class);
        for level in start..levels {
            if self.try_place(pod, class, level) {
                return;
            }
            if level + 1 < levels {
                self.level.insert(class, level + 1);
            }
        }
        let reason = self.explain(class, levels - 1);
        self.last_failed = Some((class, reason.clone()));
        self.out.unplaced.push(Unplaced { pod, reason });
    }

    fn mins(&self, class: ClassId, level: usize) -> Vec<i64> {
        let c = self.snap.constraints(class, level);
        let domains = Domains { new_hosts: true, zones: &self.zones };
        c.spread.iter().map(|s| self.snap.spread_min(c, s, domains)).collect()
    }

    fn try_place(&mut self, pod: PodId, class: ClassId, level: usize) -> bool {
        let mins = self.mins(class, level);
        let info = self.class_info(class, level);
        let (ok, zonal) = (&info.0, info.1);
        let req = self.snap.class_of(class).requests.clone();
        // Fast path: the node the previous pod of this class went to. Valid when every
        // rejection is monotone (nodes before it rejected for good), i.e. no pod affinity and
        // no zone-level constraints.
        if let Some((lc, ll, ln)) = self.last {
            if lc == class && ll == level && !zonal && self.snap.constraints(class, level).affinity.is_empty() {
                let probe = Probe { class, level, mins: &mins, ok, req: &req, zonal };
                if self.accepts(ln, &probe).is_ok() {
                    self.commit(pod, ln, ok);
                    return true;
                }
            }
        }
        let mut best: Option<NodeId> = None;
        for bi in 0..self.buckets.len() {
            let b = self.buckets[bi].0;
            if b == NO_ZONE {
                // Nodes without a zone: existing ones are checked as kube-scheduler would;
                // undecided new nodes only take pods that need no zone.
            } else if zonal && !self.zone_allowed(class, level, b, &mins) {
                continue;
            }
            let list_len = self.buckets[bi].1.len();
            let cursor_key = (class, level, b);
            let mut i = self.cursors.get(&cursor_key).copied().unwrap_or(0);
            let mut advance = true;
            while i < list_len {
                let node = self.buckets[bi].1[i];
                if best.is_some_and(|bn| bn < node) {
                    break;
                }
                let probe = Probe { class, level, mins: &mins, ok, req: &req, zonal };
                match self.accepts(node, &probe) {
                    Ok(()) => {
                        best = Some(best.map_or(node, |bn| bn.min(node)));
                        break;
                    }
                    Err(monotone) => {
                        if monotone && advance {
                            self.cursors.insert(cursor_key, i + 1);
                        } else {
                            advance = false;
                        }
                        i += 1;
                    }
                }
            }
        }
        if let Some(node) = best {
            self.commit(pod, node, ok);
            return true;
        }
        match self.open(class, level, &mins, zonal, ok, &req) {
            Some(node) => {
                self.commit(pod, node, ok);
                true
            }
            None => false,
        }
    }

    /// `Err(true)` when the rejection can only persist as the plan fills up.
    fn accepts(&self, node: NodeId, p: &Probe<'_>) -> Result<(), bool> {
        let Probe { class, level, mins, ok, req, zonal } = *p;
        let s = &*self.snap;
        let c = s.constraints(class, level);
        let n = &s.nodes[node as usize];
        match self.claim_of.get(node as usize).copied().flatten() {
            None => {
                s.check_static(c, &n.labels, &n.taints, n.unschedulable).map_err(|_| true)?;
            }
            Some(ci) => {
                let claim = &self.claims[ci];
                if zonal && claim.zone.is_none() {
                    return Err(false);
                }
                let mut total = n.used.clone();
                total.add(req);
                if !total_fits(&total, &claim.cap_max)
                    || !claim
                        .options
                        .iter_and(ok)
                        .any(|o| self.usable(claim, o) && total_fits(&total, &self.options[o].capacity))
                {
                    return Err(true);
                }
            }
        }
        s.check_dynamic(class, c, n, mins).map_err(|r| {
            matches!(
                r,
                Reason::Insufficient(_)
                    | Reason::TooManyPods
                    | Reason::HostPorts
                    | Reason::PodAntiAffinity
                    | Reason::ExistingAntiAffinity
                    | Reason::TopologySpreadMissingLabel
            ) || (r == Reason::TopologySpread && c.spread.iter().all(|sp| sp.key == s.hostname_key))
        })
    }

    /// Opens a new node for a pod of this class, if some option takes it.
    fn open(
        &mut self,
        class: ClassId,
        level: usize,
        mins: &[i64],
        zonal: bool,
        ok: &Bits,
        req: &Resources,
    ) -> Option<NodeId> {
        if self.max_new.is_some_and(|m| self.claims.len() as u32 >= m) {
            return None;
        }
        let mut cands = ok.clone();
        let fitting: Vec<usize> = cands
            .iter()
            .filter(|&o| {
                let opt = &self.options[o];
                total_fits(req, &opt.capacity)
                    && self.templates[opt.template].max_new.is_none_or(|m| self.provisional_count[opt.template] < m)
            })
            .collect();
        let mut mask = Bits::empty(self.options.len());
        for &o in &fitting {
            mask.set(o);
        }
        cands.and(&mask);
        let mut zone = None;
        if zonal {
            // The allowed zone with the fewest pods of the class's spread groups.
            let c = self.snap.constraints(class, level);
            let groups: Vec<u32> = c.spread.iter().filter(|s| s.key == self.snap.zone_key).map(|s| s.group).collect();
            let mut best: Option<(u64, Sym)> = None;
            for &z in &self.zones {
                let Some(zm) = self.zone_masks.get(&z) else { continue };
                let mut zc = cands.clone();
                zc.and(zm);
                if !zc.any() || !self.zone_allowed(class, level, z, mins) {
                    continue;
                }
                let load: u64 = groups.iter().map(|&g| u64::from(self.snap.count_in(self.snap.zone_key, z, g))).sum();
                if best.is_none_or(|(l, _)| load < l) {
                    best = Some((load, z));
                }
            }
            let (_, z) = best?;
            if let Some(zm) = self.zone_masks.get(&z) {
                cands.and(zm);
            }
            zone = Some(z);
        }
        if !cands.any() {
            return None;
        }
        // Provisionally the cheapest option (counts against template headroom).
        let provisional = cands.iter().min_by(|&a, &b| self.options[a].price.total_cmp(&self.options[b].price))?;
        let template = self.options[provisional].template;
        let name = format!("new-{}-{}", self.templates[template].name, self.claims.len());
        let mut labels = Labels::default();
        if let Some(z) = zone {
            labels.set(self.snap.zone_key, z);
        }
        let big = self.unbounded.clone();
        // The dynamic predicates on the empty node first (host ports, spread, affinity).
        let mut probe_labels = labels.clone();
        let name_sym = self.snap.syms.intern(&name);
        probe_labels.set(self.snap.hostname_key, name_sym);
        let probe = crate::snapshot::Node {
            name: name.clone(),
            labels: probe_labels,
            taints: Vec::new(),
            allocatable: big.clone(),
            unschedulable: false,
            removed: false,
            used: Resources::default(),
            pods: Vec::new(),
            host_ports: Vec::new(),
        };
        let c = self.snap.constraints(class, level);
        if self.snap.check_dynamic(class, c, &probe, mins).is_err() {
            return None;
        }
        self.provisional_count[template] += 1;
        let node = self.snap.add_node(&name, labels, Vec::new(), big, false);
        let ci = self.claims.len();
        let cap_max = self.cap_max(&cands);
        self.claims.push(Claim { node, options: cands, cap_max, zone, provisional });
        if self.claim_of.len() <= node as usize {
            self.claim_of.resize(node as usize + 1, None);
        }
        self.claim_of[node as usize] = Some(ci);
        let key = zone.unwrap_or(NO_ZONE);
        match self.buckets.binary_search_by_key(&key, |b| b.0) {
            Ok(i) => self.buckets[i].1.push(node),
            Err(i) => self.buckets.insert(i, (key, vec![node])),
        }
        Some(node)
    }

    fn commit(&mut self, pod: PodId, node: NodeId, ok: &Bits) {
        let class = self.snap.pods[pod as usize].class;
        let level = self.level.get(&class).copied().unwrap_or(0);
        self.last = Some((class, level, node));
        self.last_failed = None;
        self.snap.place(pod, node);
        match self.claim_of.get(node as usize).copied().flatten() {
            Some(ci) => {
                if self.claims[ci].options.and_changed(ok) {
                    self.claims[ci].cap_max = self.cap_max(&self.claims[ci].options);
                }
                let n = &self.snap.nodes[node as usize];
                let p = self.claims[ci].provisional;
                // With limited headroom somewhere, reservations must follow the node's growth at
                // once; otherwise the final choice in `finish` is enough.
                if !self.claims[ci].options.has(p)
                    || (self.any_limited && !total_fits(&n.used, &self.options[p].capacity))
                {
                    let used = n.used.clone();
                    self.reassign(ci, &used);
                }
            }
            None => self.out.existing.push((pod, node)),
        }
    }

    /// Whether a claim may end up as option `o`: its provisional template, or one with headroom
    /// left (headroom is reserved per claim, so `max_new` is never exceeded).
    fn usable(&self, claim: &Claim, o: usize) -> bool {
        let t = self.options[o].template;
        t == self.options[claim.provisional].template
            || self.templates[t].max_new.is_none_or(|m| self.provisional_count[t] < m)
    }

    /// Moves a claim's reservation to its cheapest usable option that holds `used`.
    fn reassign(&mut self, ci: usize, used: &Resources) {
        let claim = &self.claims[ci];
        let best = claim
            .options
            .iter()
            .filter(|&o| self.usable(claim, o) && total_fits(used, &self.options[o].capacity))
            .min_by(|&a, &b| self.options[a].price.total_cmp(&self.options[b].price).then(a.cmp(&b)));
        if let Some(o) = best {
            let old = self.options[self.claims[ci].provisional].template;
            let new = self.options[o].template;
            self.provisional_count[old] = self.provisional_count[old].saturating_sub(1);
            self.provisional_count[new] += 1;
            self.claims[ci].provisional = o;
        }
    }

    fn cap_max(&self, options: &Bits) -> Resources {
        let mut m = Resources::default();
        for o in options.iter() {
            m.max(&self.options[o].capacity);
        }
        m
    }

    /// Why nothing takes pods of this class: per existing node and per template option.
    fn explain(&mut self, class: ClassId, level: usize) -> String {
        let c = self.snap.constraints(class, level).clone();
        let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
        let domains = Domains { new_hosts: false, zones: &[] };
        let existing: Vec<NodeId> = (0..self.snap.nodes.len() as NodeId)
            .filter(|n| {
                self.claim_of.get(*n as usize).copied().flatten().is_none() && !self.snap.nodes[*n as usize].removed
            })
            .collect();
        for &n in &existing {
            if let Err(r) = self.snap.check(class, level, n, domains) {
                *reasons.entry(r.to_string()).or_default() += 1;
            }
        }
        let mut msg = format!("0/{} nodes are available", existing.len());
        if !reasons.is_empty() {
            let parts: Vec<String> = reasons.iter().map(|(r, n)| format!("{n} {r}")).collect();
            msg.push_str(&format!(": {}", parts.join(", ")));
        }
        if self.options.is_empty() {
            return msg + "; no node templates";
        }
        let req = self.snap.class_of(class).requests.clone();
        let mut treasons: BTreeMap<String, usize> = BTreeMap::new();
        for (i, o) in self.options.iter().enumerate() {
            let _ = i;
            let why = match self.snap.check_static(&c, &o.labels, &o.taints, false) {
                Err(r) => r.to_string(),
                Ok(()) => match req.short(&Resources::default(), &o.capacity) {
                    Some(r) => format!("Insufficient {}", self.snap.resource_name(r)),
                    None if self.templates[o.template]
                        .max_new
                        .is_some_and(|m| self.provisional_count[o.template] >= m) =>
                    {
                        "node group at its maximum size".to_owned()
                    }
                    None if self.max_new.is_some_and(|m| self.claims.len() as u32 >= m) => {
                        "new node limit reached".to_owned()
                    }
                    None => "topology or affinity constraints".to_owned(),
                },
            };
            *treasons.entry(why).or_default() += 1;
        }
        let parts: Vec<String> = treasons.iter().map(|(r, n)| format!("{n} {r}")).collect();
        format!(
            "{msg}; new nodes: {}/{} template options rejected: {}",
            self.options.len(),
            self.options.len(),
            parts.join(", ")
        )
    }

    fn finish(mut self) -> Packing {
        for ci in 0..self.claims.len() {
            let claim = &self.claims[ci];
            let n = &self.snap.nodes[claim.node as usize];
            if n.pods.is_empty() {
                continue;
            }
            let used = n.used.clone();
            // The cheapest option that holds the node's pods, within template headroom.
            self.reassign(ci, &used);
            let claim = &self.claims[ci];
            let n = &self.snap.nodes[claim.node as usize];
            let opt = &self.options[claim.provisional];
            let zone_name = self.snap.syms.name(opt.zone).to_owned();
            let (node, pods) = (claim.node, n.pods.clone());
            let alloc = opt.capacity.clone();
            let labels = opt.labels.clone();
            let taints = opt.taints.clone();
            let template = opt.template;
            // Make the snapshot node look like what will be created (labels through
            // `set_node_label`, so topology counts follow).
            for (k, v) in labels.iter() {
                if self.snap.nodes[node as usize].labels.get(k) != Some(v) {
                    self.snap.set_node_label(node, k, v);
                }
            }
            let sn = &mut self.snap.nodes[node as usize];
            sn.allocatable = alloc;
            sn.taints = taints;
            self.out.new_nodes.push(NewNode { template, zone: zone_name, pods, node });
        }
        // Final types can have room a pod was refused while headroom was still reserved
        // elsewhere: give unplaced pods a last try on the new nodes as they will be.
        let domains = Domains { new_hosts: true, zones: &self.zones };
        let mut still = Vec::new();
        for u in std::mem::take(&mut self.out.unplaced) {
            let class = self.snap.pods[u.pod as usize].class;
            let level = self.level.get(&class).copied().unwrap_or(0);
            let home = self.out.new_nodes.iter_mut().find(|n| self.snap.check(class, level, n.node, domains).is_ok());
            match home {
                Some(n) => {
                    n.pods.push(u.pod);
                    self.snap.place(u.pod, n.node);
                }
                None => still.push(u),
            }
        }
        self.out.unplaced = still;
        self.out
    }
}

fn total_fits(total: &Resources, cap: &Resources) -> bool {
    total.short(&Resources::default(), cap).is_none()
}
