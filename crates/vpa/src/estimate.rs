//! From histograms to a recommendation: percentiles, safety margin, confidence, pod minimums,
//! then the Autoscaler's policy (container mode, controlled resources, min/maxAllowed).

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::api::resource::Quantity as K8sQuantity;
use omniscale_api::autoscaler::{
    ContainerMode, ContainerPolicy, ContainerRecommendation, ControlledResource, Recommendation, ResourcePolicy,
};
use omniscale_api::quantity::{Format, Quantity};

use crate::model::{Aggregate, Config, from_float, scale};

/// Amounts in the units upstream compares: cpu millicores, memory bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Amounts {
    pub cpu_milli: i64,
    pub memory_bytes: i64,
}

impl Amounts {
    pub fn get(&self, r: ControlledResource) -> i64 {
        match r {
            ControlledResource::Cpu => self.cpu_milli,
            ControlledResource::Memory => self.memory_bytes,
        }
    }

    fn map(self, f: impl Fn(ControlledResource, i64) -> i64) -> Amounts {
        Amounts {
            cpu_milli: f(ControlledResource::Cpu, self.cpu_milli),
            memory_bytes: f(ControlledResource::Memory, self.memory_bytes),
        }
    }
}

/// The recommender's estimate for one container, before policy.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Estimate {
    pub target: Amounts,
    pub lower: Amounts,
    pub upper: Amounts,
    /// What the history is worth: 1 is a day of history at one sample a minute.
    pub confidence: f64,
    /// The target percentile before the margin, and after it (before the pod minimum), for the
    /// explanation.
    pub raw_target: Amounts,
    pub margin_target: Amounts,
}

/// Upstream's estimator chain for one aggregate among `containers` of the pod:
/// percentile → +margin → (bounds only) confidence multiplier → pod minimum share.
pub fn estimate(a: &Aggregate, config: &Config, containers: usize) -> Estimate {
    let pct = |p: f64| Amounts {
        cpu_milli: from_float(a.cpu.percentile(p) * 1000.0),
        memory_bytes: from_float(a.memory.percentile(p)),
    };
    let margin = |x: Amounts| x.map(|_, v| v.saturating_add(scale(v, config.safety_margin)));
    let conf = a.confidence(config);
    // (1 + m/conf)^e: confidence 0 gives +∞ for the upper bound (capped) and 0 for the lower.
    let confident = |x: Amounts, m: f64, e: f64| x.map(|_, v| scale(v, (1.0 + m / conf).powf(e)));
    let share = 1.0 / containers.max(1) as f64;
    let min = Amounts {
        cpu_milli: scale(config.pod_min_cpu_milli, share),
        memory_bytes: scale(config.pod_min_memory_bytes, share),
    };
    let floor = |x: Amounts| x.map(|r, v| v.max(min.get(r)));
    let raw_target = pct(config.target_percentile);
    let margin_target = margin(raw_target);
    Estimate {
        target: floor(margin_target),
        lower: floor(confident(margin(pct(config.lower_percentile)), 0.001, -2.0)),
        upper: floor(confident(margin(pct(config.upper_percentile)), 1.0, 1.0)),
        confidence: conf,
        raw_target,
        margin_target,
    }
}

/// The policy that applies to a container: its own entry, else `*`.
pub fn policy_for<'a>(policy: Option<&'a ResourcePolicy>, container: &str) -> Option<&'a ContainerPolicy> {
    let list = &policy?.container_policies;
    list.iter().find(|p| p.container_name == container).or_else(|| list.iter().find(|p| p.container_name == "*"))
}

/// Resources a container's policy controls (cpu and memory unless it names them).
pub fn controlled(p: Option<&ContainerPolicy>) -> BTreeSet<ControlledResource> {
    match p.and_then(|p| p.controlled_resources.as_ref()) {
        Some(list) => list.iter().copied().collect(),
        None => [ControlledResource::Cpu, ControlledResource::Memory].into_iter().collect(),
    }
}

pub fn resource_name(r: ControlledResource) -> &'static str {
    match r {
        ControlledResource::Cpu => "cpu",
        ControlledResource::Memory => "memory",
    }
}

/// A policy bound in the resource's units, with the quantity as written; zero or unparsable
/// means unset.
fn bound(map: Option<&BTreeMap<String, K8sQuantity>>, r: ControlledResource) -> Option<(i64, Quantity)> {
    let q = Quantity::parse(&map?.get(resource_name(r))?.0).ok()?;
    let v = match r {
        ControlledResource::Cpu => q.milli(),
        ControlledResource::Memory => q.units_ceil(),
    };
    (v > 0).then(|| (i64::try_from(v).unwrap_or(i64::MAX), q))
}

/// Clamps to minAllowed, then maxAllowed (so max wins when they cross, as upstream).
pub fn clamp(v: i64, r: ControlledResource, p: Option<&ContainerPolicy>) -> i64 {
    clamp_quantity(v, r, p).0
}

/// [`clamp`], and the quantity to publish: the policy's own bound when it applied (upstream
/// publishes `500Mi`, not `524288k`), else the amount.
pub fn clamp_quantity(v: i64, r: ControlledResource, p: Option<&ContainerPolicy>) -> (i64, K8sQuantity) {
    let mut out = (v, None);
    if let Some((min, q)) = bound(p.and_then(|p| p.min_allowed.as_ref()), r) {
        if out.0 < min {
            out = (min, Some(q));
        }
    }
    if let Some((max, q)) = bound(p.and_then(|p| p.max_allowed.as_ref()), r) {
        if out.0 > max {
            out = (max, Some(q));
        }
    }
    let q = out.1.map_or_else(|| quantity(r, out.0), K8sQuantity::from);
    (out.0, q)
}

/// The API form of an amount: millicores or bytes, decimal suffixes (`587m`, `262144k`).
pub fn quantity(r: ControlledResource, v: i64) -> K8sQuantity {
    match r {
        ControlledResource::Cpu => Quantity::from_milli(i128::from(v), Format::DecimalSi).into(),
        ControlledResource::Memory => Quantity::from_units(i128::from(v), Format::DecimalSi).into(),
    }
}

/// The input of [`recommend`] for one container name.
#[derive(Clone, Copy, Debug)]
pub struct ContainerInput<'a> {
    pub name: &'a str,
    pub aggregate: &'a Aggregate,
}

/// One Autoscaler's recommendation and how it came about.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Outcome {
    pub recommendation: Recommendation,
    /// One line per container.
    pub explanation: Vec<String>,
}

/// Estimates every container and applies the policy. `yielded` are resources the horizontal
/// side owns (left out of every container's recommendation).
pub fn recommend(
    containers: &[ContainerInput<'_>],
    policy: Option<&ResourcePolicy>,
    yielded: &BTreeSet<ControlledResource>,
    config: &Config,
) -> Outcome {
    let mut out = Outcome::default();
    let mut sorted: Vec<_> = containers.to_vec();
    sorted.sort_by(|a, b| a.name.cmp(b.name));
    for c in &sorted {
        let p = policy_for(policy, c.name);
        if p.and_then(|p| p.mode) == Some(ContainerMode::Off) {
            out.explanation.push(format!("{}: mode Off, not recommended", c.name));
            continue;
        }
        let e = estimate(c.aggregate, config, sorted.len());
        let resources: Vec<ControlledResource> = controlled(p).difference(yielded).copied().collect();
        if resources.is_empty() {
            out.explanation.push(format!("{}: no resource left to control", c.name));
            continue;
        }
        let list = |x: Amounts, capped: bool| -> BTreeMap<String, K8sQuantity> {
            resources
                .iter()
                .map(|&r| {
                    let q = if capped { clamp_quantity(x.get(r), r, p).1 } else { quantity(r, x.get(r)) };
                    (resource_name(r).to_owned(), q)
                })
                .collect()
        };
        out.explanation.push(explain(c, &e, &resources, p, sorted.len(), config));
        out.recommendation.container_recommendations.push(ContainerRecommendation {
            container_name: c.name.to_owned(),
            target: list(e.target, true),
            lower_bound: Some(list(e.lower, true)),
            upper_bound: Some(list(e.upper, true)),
            uncapped_target: Some(list(e.target, false)),
        });
    }
    out
}

fn explain(
    c: &ContainerInput<'_>,
    e: &Estimate,
    resources: &[ControlledResource],
    p: Option<&ContainerPolicy>,
    containers: usize,
    config: &Config,
) -> String {
    let a = c.aggregate;
    let mut parts = Vec::new();
    for &r in resources {
        let raw = e.raw_target.get(r);
        let margin = e.margin_target.get(r);
        let target = e.target.get(r);
        let capped = clamp(target, r, p);
        let show = |v: i64| quantity(r, v).0;
        let mut s = format!(
            "{} P{:.0} {} +{:.0}% = {}",
            resource_name(r),
            config.target_percentile * 100.0,
            show(raw),
            config.safety_margin * 100.0,
            show(margin)
        );
        if target > margin {
            s.push_str(&format!(", raised to the pod minimum's 1/{containers} share {}", show(target)));
        }
        if capped != target {
            let which = if capped > target { "minAllowed" } else { "maxAllowed" };
            s.push_str(&format!(", capped to {which} {}", show(capped)));
        }
        parts.push(s);
    }
    format!(
        "{}: {}; {} cpu samples over {}, confidence {:.2}",
        c.name,
        parts.join("; "),
        a.total_samples_count,
        span(a),
        e.confidence
    )
}

fn span(a: &Aggregate) -> String {
    match (a.first_sample_start, a.last_sample_start) {
        (Some(f), Some(l)) => {
            let secs = l.duration_since(f).as_secs();
            if secs >= 3600 { format!("{:.1}h", secs as f64 / 3600.0) } else { format!("{}m", secs / 60) }
        }
        _ => "no time".into(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::model::{Model, Observation};
    use jiff::{SignedDuration, Timestamp};
    use std::sync::Arc;

    fn t(mins: i64) -> Timestamp {
        "2026-01-01T00:00:00Z".parse::<Timestamp>().unwrap() + SignedDuration::from_mins(mins)
    }

    #[test]
    fn v8_margin_is_truncated() {
        assert_eq!(3140 + scale(3140, 0.1), 3454);
    }

    #[test]
    fn v9_pod_minimum_split_over_containers() {
        let config = Config::default();
        let empty = Aggregate::new(&config, t(0));
        let one = estimate(&empty, &config, 1);
        assert_eq!(one.target, Amounts { cpu_milli: 25, memory_bytes: 262_144_000 });
        let two = estimate(&empty, &config, 2);
        assert_eq!(two.target, Amounts { cpu_milli: 12, memory_bytes: 131_072_000 });
        // No history: 0 × ∞ bounds are NaN, which upstream's conversion turns negative, so
        // both bounds are the minimum too.
        assert_eq!(one.upper, one.target);
        assert_eq!(one.lower, one.target);
    }

    /// The hamster walkthrough: half a core, a few MiB.
    fn hamster(minutes: i64) -> Model {
        let mut m = Model::default();
        let owner: Arc<str> = Arc::from("default/hamster");
        let c: Arc<str> = Arc::from("hamster");
        for pod in ["default/hamster-a", "default/hamster-b"] {
            let pod: Arc<str> = Arc::from(pod);
            for i in 0..minutes {
                let cpu = 490 + (i * 7 + pod.len() as i64) % 21;
                let _ = m.observe(
                    &owner,
                    &pod,
                    &c,
                    Observation { time: t(i), cpu_milli: Some(cpu), memory_bytes: Some(8 * 1024 * 1024) },
                );
            }
        }
        m
    }

    fn policy() -> ResourcePolicy {
        serde_json::from_value(serde_json::json!({"containerPolicies": [{
            "containerName": "*",
            "minAllowed": {"cpu": "100m", "memory": "50Mi"},
            "maxAllowed": {"cpu": "1", "memory": "500Mi"},
            "controlledResources": ["cpu", "memory"]}]}))
        .unwrap()
    }

    #[test]
    fn hamster_recommends_587m_and_262144k() {
        let m = hamster(30);
        let a = m.aggregate("default/hamster", "hamster").unwrap();
        let out = recommend(
            &[ContainerInput { name: "hamster", aggregate: a }],
            Some(&policy()),
            &BTreeSet::new(),
            &m.config,
        );
        let r = &out.recommendation.container_recommendations[0];
        assert_eq!(r.target["cpu"].0, "587m");
        assert_eq!(r.target["memory"].0, "262144k");
        assert_eq!(r.uncapped_target.as_ref().unwrap()["cpu"].0, "587m");
        // Thirty minutes of history: the upper bound is capped by maxAllowed.
        assert_eq!(r.upper_bound.as_ref().unwrap()["cpu"].0, "1");
        assert_eq!(r.upper_bound.as_ref().unwrap()["memory"].0, "500Mi");
        let lower = Quantity::parse(&r.lower_bound.as_ref().unwrap()["cpu"].0).unwrap();
        assert!(lower.milli() > 100 && lower.milli() < 587, "{lower}");
        assert!(out.explanation[0].contains("cpu P90 511m +15% = 587m"), "{}", out.explanation[0]);
        assert!(out.explanation[0].contains("pod minimum"), "{}", out.explanation[0]);
    }

    #[test]
    fn confidence_narrows_bounds() {
        let config = Config::default();
        let m = hamster(24 * 60);
        let a = m.aggregate("default/hamster", "hamster").unwrap();
        let e = estimate(a, &config, 1);
        // Two pods, one sample a minute each for a day: confidence is ~1 (span-limited).
        assert!((e.confidence - 1.0).abs() < 0.01, "{}", e.confidence);
        assert!(e.upper.cpu_milli >= 2 * e.target.cpu_milli - 5 && e.upper.cpu_milli < 3 * e.target.cpu_milli);
        assert!(e.lower.cpu_milli < e.target.cpu_milli && e.lower.cpu_milli > e.target.cpu_milli * 9 / 10);
    }

    #[test]
    fn policy_off_yielded_and_controlled_resources() {
        let m = hamster(10);
        let a = m.aggregate("default/hamster", "hamster").unwrap();
        let c = [ContainerInput { name: "hamster", aggregate: a }, ContainerInput { name: "sidecar", aggregate: a }];
        let p: ResourcePolicy = serde_json::from_value(serde_json::json!({"containerPolicies": [
            {"containerName": "sidecar", "mode": "Off"},
            {"containerName": "*", "controlledResources": ["memory"]}]}))
        .unwrap();
        let out = recommend(&c, Some(&p), &BTreeSet::new(), &m.config);
        assert_eq!(out.recommendation.container_recommendations.len(), 1);
        let r = &out.recommendation.container_recommendations[0];
        assert_eq!(r.target.keys().collect::<Vec<_>>(), vec!["memory"]);
        // Two containers share the pod minimum even when one is Off (as upstream).
        assert_eq!(r.target["memory"].0, "131072k");
        let yielded = [ControlledResource::Memory].into_iter().collect();
        let out = recommend(&c, Some(&p), &yielded, &m.config);
        assert!(out.recommendation.container_recommendations.is_empty());
        assert!(out.explanation.iter().any(|l| l.contains("no resource left")));
    }

    #[test]
    fn min_allowed_raises_and_max_allowed_caps() {
        let config = Config::default();
        let p: ContainerPolicy = serde_json::from_value(serde_json::json!({
            "containerName": "*", "minAllowed": {"cpu": "2"}, "maxAllowed": {"cpu": "1", "memory": "0"}}))
        .unwrap();
        // min and max cross: max wins; a zero bound is unset.
        assert_eq!(clamp(500, ControlledResource::Cpu, Some(&p)), 1000);
        assert_eq!(clamp(5_000_000_000, ControlledResource::Memory, Some(&p)), 5_000_000_000);
        let _ = config;
    }
}
