//! Which pods of one Autoscaler get new requests this round, how (in-place resize or
//! eviction), and in what order, within the disruption budget: upstream VPA updater's
//! semantics, with one deliberate change — a workload below `minReplicas` (typically a single
//! replica) may still be resized in place, since that needs no eviction.

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::{Container, Pod};
use omniscale_api::autoscaler::{ContainerMode, ControlledResource, Recommendation, ResourcePolicy, UpdateMode};

use crate::admission::{Capped, ContainerResources, LimitRanges, OBSERVED_ANNOTATION, cap, container_resources};
use crate::estimate::policy_for;

/// Updater parameters; `Default` is upstream's flag defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    /// Fewest live replicas before pods may be evicted (`updatePolicy.minReplicas` overrides).
    pub min_replicas: i32,
    /// Fraction of configured replicas that may be down at once.
    pub eviction_tolerance: f64,
    /// Smallest relative change worth a disruption for a pod inside its bounds.
    pub min_change: f64,
    /// A pod inside its bounds is left alone this long after it starts.
    pub lifetime_threshold: SignedDuration,
    /// An OOM kill this soon after start makes the pod eligible at once.
    pub quick_oom: SignedDuration,
    /// A resize deferred by the kubelet this long falls back to eviction.
    pub deferred_timeout: SignedDuration,
    /// A resize in progress this long falls back to eviction.
    pub in_progress_timeout: SignedDuration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            min_replicas: 2,
            eviction_tolerance: 0.5,
            min_change: 0.1,
            lifetime_threshold: SignedDuration::from_hours(12),
            quick_oom: SignedDuration::from_mins(10),
            deferred_timeout: SignedDuration::from_mins(5),
            in_progress_timeout: SignedDuration::from_hours(1),
        }
    }
}

/// How much a pod's requests are off.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Priority {
    /// Some request is outside [lowerBound, upperBound] (or missing).
    pub outside: bool,
    /// Some target is above its request.
    pub scale_up: bool,
    /// Σ over resources of |Σrequests − Σtargets| / Σrequests.
    pub diff: f64,
}

fn observed(pod: &Pod) -> Option<Vec<&str>> {
    let a = pod.metadata.annotations.as_ref()?.get(OBSERVED_ANNOTATION)?;
    Some(a.split(',').map(str::trim).filter(|s| !s.is_empty()).collect())
}

fn is_observed(obs: &Option<Vec<&str>>, name: &str) -> bool {
    obs.as_ref().is_none_or(|o| o.contains(&name))
}

fn milli_request(c: &Container, r: ControlledResource) -> Option<i64> {
    let q = c.resources.as_ref()?.requests.as_ref()?.get(crate::estimate::resource_name(r))?;
    let q = omniscale_api::quantity::Quantity::parse(&q.0).ok()?;
    i64::try_from(q.milli()).ok()
}

/// Upstream's update priority over the observed containers, in milli-units.
pub fn priority(pod: &Pod, capped: &[(String, Capped)]) -> Priority {
    let obs = observed(pod);
    let containers = pod.spec.as_ref().map(|s| s.containers.as_slice()).unwrap_or_default();
    let mut p = Priority::default();
    let mut totals: [(i64, i64, bool); 2] = [(0, 0, false); 2];
    for c in containers.iter().filter(|c| is_observed(&obs, &c.name)) {
        let Some((_, rec)) = capped.iter().find(|(n, _)| *n == c.name) else { continue };
        for (&r, &target) in &rec.target {
            let target_milli = if r == ControlledResource::Cpu { target } else { target.saturating_mul(1000) };
            let slot = &mut totals[r as usize];
            slot.2 = true;
            slot.1 = slot.1.saturating_add(target_milli);
            match milli_request(c, r) {
                Some(req) => {
                    slot.0 = slot.0.saturating_add(req);
                    if target_milli > req {
                        p.scale_up = true;
                    }
                    let bound = |m: Option<&i64>| {
                        m.map(|&v| if r == ControlledResource::Cpu { v } else { v.saturating_mul(1000) })
                    };
                    if bound(rec.lower.get(&r)).is_some_and(|l| req < l)
                        || bound(rec.upper.get(&r)).is_some_and(|u| req > u)
                    {
                        p.outside = true;
                    }
                }
                None => {
                    p.scale_up = true;
                    p.outside = true;
                }
            }
        }
    }
    for (req, target, seen) in totals {
        if seen {
            let req = (req as f64).max(1.0);
            p.diff += (req - target as f64).abs() / req;
        }
    }
    p
}

/// An observed container with a non-Off policy was OOM-killed within `threshold` of starting.
pub fn quick_oom(pod: &Pod, policy: Option<&ResourcePolicy>, threshold: SignedDuration) -> bool {
    let obs = observed(pod);
    let statuses = pod.status.as_ref().and_then(|s| s.container_statuses.as_ref());
    statuses.into_iter().flatten().any(|cs| {
        if !is_observed(&obs, &cs.name) || policy_for(policy, &cs.name).and_then(|p| p.mode) == Some(ContainerMode::Off)
        {
            return false;
        }
        let Some(t) = cs.last_state.as_ref().and_then(|s| s.terminated.as_ref()) else { return false };
        match (t.reason.as_deref(), &t.started_at, &t.finished_at) {
            (Some("OOMKilled"), Some(s), Some(f)) => f.0.duration_since(s.0) < threshold,
            _ => false,
        }
    })
}

/// Why a pod is (not) worth updating.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    Update(Priority),
    Skip(String),
}

/// Upstream's admission to the update list: outside the bounds, a quick OOM with something
/// to change, or old enough (12 h) with a change of at least `min_change`.
pub fn judge(
    pod: &Pod,
    capped: &[(String, Capped)],
    policy: Option<&ResourcePolicy>,
    s: &Settings,
    now: Timestamp,
) -> Verdict {
    let p = priority(pod, capped);
    let oom = quick_oom(pod, policy, s.quick_oom);
    if !p.outside && !oom {
        let Some(start) = pod.status.as_ref().and_then(|st| st.start_time.as_ref()) else {
            return Verdict::Skip("not started".into());
        };
        if now < start.0 + s.lifetime_threshold {
            return Verdict::Skip(format!("within bounds and younger than {}h", s.lifetime_threshold.as_hours()));
        }
        if p.diff < s.min_change {
            return Verdict::Skip(format!("within bounds, change {:.2} below {}", p.diff, s.min_change));
        }
    }
    if oom && p.diff == 0.0 {
        return Verdict::Skip("OOM-killed but the recommendation is what it has".into());
    }
    Verdict::Update(p)
}

/// The disruption budget of one workload this round.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Budget {
    pub configured: i32,
    pub running: i32,
    pub tolerance: i32,
    pub evicted: i32,
    pub in_place: i32,
}

impl Budget {
    pub fn new(configured: i32, running: i32, tolerance_fraction: f64) -> Self {
        let tolerance = (f64::from(configured) * tolerance_fraction).floor() as i32;
        Budget { configured, running, tolerance, evicted: 0, in_place: 0 }
    }

    /// More pods alive than the budget needs, or — when the tolerance rounds to zero — the
    /// first disruption of a fully running workload (so some pod can always be updated).
    pub fn disruptable(&self) -> bool {
        let should = self.configured - self.tolerance;
        let alive = self.running - self.evicted - self.in_place;
        alive > should
            || (self.configured == self.running && self.tolerance == 0 && self.evicted == 0 && self.in_place == 0)
    }
}

/// The kubelet's view of a pending in-place resize (Kubernetes 1.33 conditions).
#[derive(Clone, Debug, PartialEq)]
pub enum ResizeState {
    None,
    Deferred(Option<Timestamp>),
    Infeasible,
    InProgress(Option<Timestamp>),
    Error(String),
}

pub fn resize_state(pod: &Pod) -> ResizeState {
    let conds = pod.status.as_ref().and_then(|s| s.conditions.as_ref());
    for c in conds.into_iter().flatten() {
        if c.status != "True" {
            continue;
        }
        let since = c.last_transition_time.as_ref().map(|t| t.0);
        match (c.type_.as_str(), c.reason.as_deref()) {
            ("PodResizePending", Some("Deferred")) => return ResizeState::Deferred(since),
            ("PodResizePending", Some("Infeasible")) => return ResizeState::Infeasible,
            ("PodResizePending", r) => {
                return ResizeState::Error(format!("resize pending: {}", r.unwrap_or("unknown")));
            }
            ("PodResizeInProgress", Some("Error")) => {
                return ResizeState::Error(c.message.clone().unwrap_or_else(|| "resize failed".into()));
            }
            ("PodResizeInProgress", _) => return ResizeState::InProgress(since),
            _ => {}
        }
    }
    ResizeState::None
}

/// QoS class as the API server computes it (only cpu and memory matter here).
fn qos(containers: &[Container], overrides: &[ContainerResources]) -> &'static str {
    let mut any = false;
    let mut guaranteed = true;
    for c in containers {
        let o = overrides.iter().find(|o| o.name == c.name);
        for r in [ControlledResource::Cpu, ControlledResource::Memory] {
            let req = o
                .and_then(|o| o.requests.get(&r).copied())
                .or_else(|| milli_request(c, r).map(|m| if r == ControlledResource::Cpu { m } else { m / 1000 }));
            let lim = o.and_then(|o| o.limits.get(&r).copied()).or_else(|| {
                let q = c.resources.as_ref()?.limits.as_ref()?.get(crate::estimate::resource_name(r))?;
                let q = omniscale_api::quantity::Quantity::parse(&q.0).ok()?;
                i64::try_from(if r == ControlledResource::Cpu { q.milli() } else { q.units_ceil() }).ok()
            });
            any |= req.is_some() || lim.is_some();
            // A limit without a request defaults the request to it.
            let req = req.or(lim);
            if lim.is_none() || req != lim {
                guaranteed = false;
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// What to do with one pod.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// PATCH the pod's `resize` subresource with these requests and limits (see
    /// [`crate::admission::resize_patch`]).
    Resize { pod: String, resources: Vec<ContainerResources>, priority: Priority },
    /// Evict through the Eviction API (PDBs apply); the webhook sets requests on the new pod.
    Evict { pod: String, reason: String, priority: Priority },
}

/// One Autoscaler's update round.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    pub actions: Vec<Action>,
    /// Pods left alone this round, and why.
    pub skipped: Vec<(String, String)>,
}

/// Everything the updater needs about one Autoscaler.
#[derive(Clone, Copy, Debug)]
pub struct Input<'a> {
    pub mode: UpdateMode,
    /// `updatePolicy.minReplicas`.
    pub min_replicas: Option<i32>,
    /// The workload's configured replicas.
    pub configured: i32,
    pub pods: &'a [&'a Pod],
    pub recommendation: &'a Recommendation,
    pub policy: Option<&'a ResourcePolicy>,
    pub ranges: &'a LimitRanges,
}

fn name(p: &Pod) -> String {
    p.metadata.name.clone().unwrap_or_default()
}

fn pending(p: &Pod) -> bool {
    p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Pending")
}

/// Decides the round: candidates ranked (scale-ups first, then by how far off), each resized
/// in place when the mode allows and the kubelet can, else evicted when the mode and budget
/// allow.
pub fn plan(input: &Input<'_>, s: &Settings, now: Timestamp) -> Plan {
    let mut out = Plan::default();
    if matches!(input.mode, UpdateMode::Off | UpdateMode::Initial) {
        return out;
    }
    let live: Vec<&Pod> = input.pods.iter().copied().filter(|p| p.metadata.deletion_timestamp.is_none()).collect();
    let running = live.iter().filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")).count();
    let min_replicas = input.min_replicas.unwrap_or(s.min_replicas);
    let below_min = (live.len() as i32) < min_replicas;
    let mut budget = Budget::new(input.configured, running as i32, s.eviction_tolerance);

    let mut candidates = Vec::new();
    for pod in &live {
        let capped = cap(pod, input.recommendation, input.policy, input.ranges);
        match judge(pod, &capped, input.policy, s, now) {
            Verdict::Update(p) => candidates.push((*pod, p)),
            Verdict::Skip(why) => out.skipped.push((name(pod), why)),
        }
    }
    candidates.sort_by(|(_, a), (_, b)| b.scale_up.cmp(&a.scale_up).then(b.diff.total_cmp(&a.diff)));

    let in_place_mode = matches!(input.mode, UpdateMode::InPlaceOrRecreate | UpdateMode::InPlace);
    let may_evict = input.mode != UpdateMode::InPlace;
    for (pod, priority) in candidates {
        let pod_name = name(pod);
        let mut evict_reason = None;
        if in_place_mode {
            let resources = container_resources(pod, input.recommendation, input.policy, input.ranges);
            let containers = pod.spec.as_ref().map(|s| s.containers.as_slice()).unwrap_or_default();
            let qos_changes = qos(containers, &[]) != qos(containers, &resources);
            let state = resize_state(pod);
            if pending(pod) {
                out.skipped.push((pod_name, "pending: resize deferred until it runs".into()));
                continue;
            }
            let stuck = match &state {
                ResizeState::None => None,
                ResizeState::Deferred(since) => since
                    .is_none_or(|t| now.duration_since(t) > s.deferred_timeout)
                    .then(|| "resize deferred too long".to_owned()),
                ResizeState::Infeasible => Some("resize infeasible on its node".to_owned()),
                ResizeState::InProgress(since) => since
                    .is_none_or(|t| now.duration_since(t) > s.in_progress_timeout)
                    .then(|| "resize in progress too long".to_owned()),
                ResizeState::Error(e) => Some(format!("resize failed: {e}")),
            };
            if qos_changes {
                evict_reason = Some("the new requests change the QoS class, which a resize cannot".to_owned());
            } else if let Some(why) = stuck {
                evict_reason = Some(why);
            } else if state != ResizeState::None {
                out.skipped.push((pod_name, "resize already under way".into()));
                continue;
            } else if budget.disruptable() {
                budget.in_place += 1;
                out.actions.push(Action::Resize { pod: pod_name, resources, priority });
                continue;
            } else {
                out.skipped.push((pod_name, "disruption budget used up this round".into()));
                continue;
            }
        }
        if !may_evict {
            out.skipped.push((pod_name, format!("{}; InPlace mode never evicts", evict_reason.unwrap_or_default())));
            continue;
        }
        if below_min {
            out.skipped.push((
                pod_name,
                format!("{} live pods, fewer than minReplicas {min_replicas}: no eviction", live.len()),
            ));
            continue;
        }
        if !pending(pod) && !budget.disruptable() {
            out.skipped.push((pod_name, "eviction tolerance used up this round".into()));
            continue;
        }
        if !pending(pod) {
            budget.evicted += 1;
        }
        let reason = evict_reason.unwrap_or_else(|| {
            if priority.outside { "requests outside the recommended range" } else { "requests far from the target" }
                .to_owned()
        });
        out.actions.push(Action::Evict { pod: pod_name, reason, priority });
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use serde_json::{Value, json};

    fn t(h: i64) -> Timestamp {
        "2026-01-01T00:00:00Z".parse::<Timestamp>().unwrap() + SignedDuration::from_hours(h)
    }

    fn pod(name: &str, req: Value, phase: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"containers": [{"name": "app", "image": "x", "resources": {"requests": req}}]},
            "status": {"phase": phase, "startTime": "2026-01-01T00:00:00Z"}
        }))
        .unwrap()
    }

    fn capped(target: &[(ControlledResource, i64)], bounds: Option<(i64, i64)>) -> Vec<(String, Capped)> {
        let mut c = Capped { target: target.iter().copied().collect(), ..Default::default() };
        if let Some((l, u)) = bounds {
            c.lower = target.iter().map(|&(r, _)| (r, l)).collect();
            c.upper = target.iter().map(|&(r, _)| (r, u)).collect();
        }
        vec![("app".into(), c)]
    }

    use ControlledResource::{Cpu, Memory};

    #[test]
    fn v11_resource_diff() {
        let p = |cpu: &str| pod("p", json!({"cpu": cpu}), "Running");
        let pr = priority(&p("2"), &capped(&[(Cpu, 10_000)], None));
        assert_eq!((pr.diff, pr.scale_up), (4.0, true));
        assert_eq!(priority(&p("4"), &capped(&[(Cpu, 2000)], None)).diff, 0.5);
        let pr = priority(&p("10m"), &capped(&[(Cpu, 900)], None));
        assert_eq!((pr.diff, pr.scale_up), (89.0, true));
        let pr = priority(&p("4"), &capped(&[(Cpu, 10_000)], Some((6000, 14_000))));
        assert_eq!((pr.diff, pr.scale_up, pr.outside), (1.5, true, true));
        let pr = priority(&p("8"), &capped(&[(Cpu, 2000)], Some((1000, 3000))));
        assert_eq!((pr.diff, pr.scale_up, pr.outside), (0.75, false, true));
        let both = pod("p", json!({"cpu": "3", "memory": "10M"}), "Running");
        assert_eq!(priority(&both, &capped(&[(Cpu, 6000), (Memory, 20_000_000)], None)).diff, 2.0);
        // No request at all: both scale-up and outside.
        let none = pod("p", json!({}), "Running");
        let pr = priority(&none, &capped(&[(Cpu, 100)], None));
        assert!(pr.outside && pr.scale_up);
    }

    #[test]
    fn v12_min_change_and_lifetime() {
        let s = Settings { min_change: 0.5, ..Settings::default() };
        let big = pod("big", json!({"cpu": "2"}), "Running");
        let small = pod("small", json!({"cpu": "4"}), "Running");
        let outside = pod("outside", json!({"cpu": "8"}), "Running");
        let judge_all = |now| {
            [
                (&big, capped(&[(Cpu, 10_000)], None)),
                (&small, capped(&[(Cpu, 5000)], None)),
                (&outside, capped(&[(Cpu, 2000)], Some((1000, 3000)))),
            ]
            .iter()
            .filter(|(p, c)| matches!(judge(p, c, None, &s, now), Verdict::Update(_)))
            .map(|(p, _)| name(p))
            .collect::<Vec<_>>()
        };
        assert_eq!(judge_all(t(13)), vec!["big", "outside"]);
        assert_eq!(judge_all(t(11)), vec!["outside"]);
    }

    #[test]
    fn v13_eviction_tolerance() {
        let evictions = |tolerance: f64, min_replicas: Option<i32>| {
            let pods: Vec<Pod> = (0..5).map(|i| pod(&format!("p{i}"), json!({"cpu": "100m"}), "Running")).collect();
            let refs: Vec<&Pod> = pods.iter().collect();
            let rec: Recommendation = serde_json::from_value(json!({"containerRecommendations": [{
                "containerName": "app", "target": {"cpu": "1"}, "lowerBound": {"cpu": "500m"}, "upperBound": {"cpu": "2"}}]}))
            .unwrap();
            let input = Input {
                mode: UpdateMode::Recreate,
                min_replicas,
                configured: 5,
                pods: &refs,
                recommendation: &rec,
                policy: None,
                ranges: &LimitRanges::default(),
            };
            let s = Settings { eviction_tolerance: tolerance, ..Settings::default() };
            plan(&input, &s, t(1)).actions.iter().filter(|a| matches!(a, Action::Evict { .. })).count()
        };
        assert_eq!(evictions(0.8, None), 4);
        assert_eq!(evictions(0.1, None), 1);
        assert_eq!(evictions(0.5, Some(10)), 0);
    }

    fn hamster_rec() -> Recommendation {
        serde_json::from_value(json!({"containerRecommendations": [{
            "containerName": "app", "target": {"cpu": "587m", "memory": "262144k"},
            "lowerBound": {"cpu": "400m", "memory": "262144k"}, "upperBound": {"cpu": "1", "memory": "500Mi"}}]}))
        .unwrap()
    }

    #[test]
    fn single_replica_is_resized_in_place_but_never_evicted() {
        let p = pod("only", json!({"cpu": "100m", "memory": "50Mi"}), "Running");
        let pods = [&p];
        let rec = hamster_rec();
        let mut input = Input {
            mode: UpdateMode::InPlaceOrRecreate,
            min_replicas: None,
            configured: 1,
            pods: &pods,
            recommendation: &rec,
            policy: None,
            ranges: &LimitRanges::default(),
        };
        let out = plan(&input, &Settings::default(), t(1));
        let [Action::Resize { pod, resources, .. }] = out.actions.as_slice() else { panic!("{out:?}") };
        assert_eq!(pod, "only");
        let patch = crate::admission::resize_patch(resources);
        assert_eq!(patch["spec"]["containers"][0]["resources"]["requests"]["cpu"], "587m");
        assert_eq!(patch["spec"]["containers"][0]["name"], "app");
        input.mode = UpdateMode::Recreate;
        let out = plan(&input, &Settings::default(), t(1));
        assert!(out.actions.is_empty());
        assert!(out.skipped[0].1.contains("fewer than minReplicas"), "{:?}", out.skipped);
    }

    #[test]
    fn infeasible_resize_falls_back_to_eviction_unless_in_place_only() {
        let mut p = pod("a", json!({"cpu": "100m", "memory": "50Mi"}), "Running");
        let q = pod("b", json!({"cpu": "587m", "memory": "262144k"}), "Running");
        p.status.as_mut().unwrap().conditions = Some(vec![
            serde_json::from_value(json!({
            "type": "PodResizePending", "status": "True", "reason": "Infeasible"}))
            .unwrap(),
        ]);
        let pods = [&p, &q];
        let rec = hamster_rec();
        let mut input = Input {
            mode: UpdateMode::InPlaceOrRecreate,
            min_replicas: None,
            configured: 2,
            pods: &pods,
            recommendation: &rec,
            policy: None,
            ranges: &LimitRanges::default(),
        };
        let out = plan(&input, &Settings::default(), t(1));
        let [Action::Evict { pod, reason, .. }] = out.actions.as_slice() else { panic!("{out:?}") };
        assert_eq!((pod.as_str(), reason.as_str()), ("a", "resize infeasible on its node"));
        input.mode = UpdateMode::InPlace;
        let out = plan(&input, &Settings::default(), t(1));
        assert!(out.actions.is_empty());
        assert!(out.skipped.iter().any(|(p, why)| p == "a" && why.contains("never evicts")), "{:?}", out.skipped);
    }

    #[test]
    fn qos_change_is_not_resized() {
        // Guaranteed today (request = limit); the recommendation without limits keeps the
        // ratio, so it stays Guaranteed and resizes.
        let g: Pod = serde_json::from_value(json!({
            "metadata": {"name": "g"},
            "spec": {"containers": [{"name": "app", "image": "x", "resources": {
                "requests": {"cpu": "100m", "memory": "50Mi"}, "limits": {"cpu": "100m", "memory": "50Mi"}}}]},
            "status": {"phase": "Running"}
        }))
        .unwrap();
        let res = container_resources(&g, &hamster_rec(), None, &LimitRanges::default());
        let c = &g.spec.as_ref().unwrap().containers;
        assert_eq!(qos(c, &[]), "Guaranteed");
        assert_eq!(qos(c, &res), "Guaranteed");
        // A policy that only scales requests would make it Burstable.
        let ro: ResourcePolicy = serde_json::from_value(
            json!({"containerPolicies": [{"containerName": "*", "controlledValues": "RequestsOnly"}]}),
        )
        .unwrap();
        let res = container_resources(&g, &hamster_rec(), Some(&ro), &LimitRanges::default());
        // RequestsOnly caps requests at the limits, so nothing changes class.
        assert_eq!(qos(c, &res), "Guaranteed");
    }

    #[test]
    fn scale_ups_come_first_then_bigger_changes() {
        let a = pod("down", json!({"cpu": "4"}), "Running");
        let b = pod("up", json!({"cpu": "500m"}), "Running");
        let c = pod("up-more", json!({"cpu": "100m"}), "Running");
        let pods = [&a, &b, &c];
        let rec: Recommendation = serde_json::from_value(json!({"containerRecommendations": [{
            "containerName": "app", "target": {"cpu": "1"}, "lowerBound": {"cpu": "900m"}, "upperBound": {"cpu": "1100m"}}]}))
        .unwrap();
        let input = Input {
            mode: UpdateMode::Recreate,
            min_replicas: None,
            configured: 3,
            pods: &pods,
            recommendation: &rec,
            policy: None,
            ranges: &LimitRanges::default(),
        };
        let s = Settings { eviction_tolerance: 1.0, ..Settings::default() };
        let order: Vec<String> = plan(&input, &s, t(1))
            .actions
            .into_iter()
            .map(|a| match a {
                Action::Evict { pod, .. } | Action::Resize { pod, .. } => pod,
            })
            .collect();
        assert_eq!(order, vec!["up-more", "up", "down"]);
    }
}

/// Upstream's `--eviction-rate-limit`/`--eviction-rate-burst` token bucket (a separate bucket
/// with the same settings paces in-place resizes). Time is passed in, so it stays pure.
#[derive(Clone, Debug, PartialEq)]
pub struct RateLimiter {
    /// Tokens per second; `None` is upstream's default of no limit.
    rate: Option<f64>,
    burst: f64,
    tokens: f64,
    last: Option<Timestamp>,
}

impl RateLimiter {
    pub fn new(rate: Option<f64>, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        RateLimiter { rate: rate.filter(|r| r.is_finite() && *r > 0.0), burst, tokens: burst, last: None }
    }

    /// Takes a token if one is available at `now`.
    pub fn take(&mut self, now: Timestamp) -> bool {
        let Some(rate) = self.rate else { return true };
        if let Some(last) = self.last {
            let secs = now.duration_since(last).as_secs_f64().max(0.0);
            self.tokens = (self.tokens + secs * rate).min(self.burst);
        }
        self.last = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod limiter_tests {
    #![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn the_bucket_refills_at_the_rate_up_to_the_burst() {
        let t = |s: i64| "2026-01-01T00:00:00Z".parse::<Timestamp>().unwrap() + SignedDuration::from_secs(s);
        let mut off = RateLimiter::new(None, 1);
        assert!((0..100).all(|_| off.take(t(0))));
        let mut l = RateLimiter::new(Some(0.1), 2);
        assert!(l.take(t(0)) && l.take(t(0)));
        assert!(!l.take(t(0)));
        assert!(!l.take(t(5)));
        assert!(l.take(t(10)));
        // A long pause refills only up to the burst.
        assert!(l.take(t(1000)) && l.take(t(1000)) && !l.take(t(1000)));
    }
}
