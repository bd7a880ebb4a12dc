//! One metric → one replica proposal, as upstream's replica calculator computes it.
//!
//! All quantities are integer milli-values, as upstream compares them; ratios are `f64` where
//! upstream uses float64.

use crate::Tolerance;
use jiff::{SignedDuration, Timestamp};
use std::collections::BTreeMap;

/// Pod phase, as far as the calculator cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Phase {
    Pending,
    Running,
    Succeeded,
    Failed,
    Unknown,
}

/// A pod's Ready condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Readiness {
    pub ready: bool,
    pub last_transition: Timestamp,
}

/// A pod the target's selector returns.
#[derive(Clone, Debug, PartialEq)]
pub struct PodSample {
    pub name: String,
    pub phase: Phase,
    pub deleting: bool,
    pub ready: Option<Readiness>,
    pub start_time: Option<Timestamp>,
    /// The pod's request for the metric's resource (milli), `None` when a container has none.
    /// Only Utilization targets read it.
    pub request: Option<i64>,
}

/// A metric value of one pod (milli), with the sample's time and window.
pub use omniscale_metrics::Sample;

/// What a pod metric aims at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Target {
    /// Percent of requests.
    Utilization(i32),
    /// Per-pod value (milli).
    AverageValue(i64),
}

/// The cpu-only readiness rules' timings (cluster-wide flags upstream, per Autoscaler here).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    pub cpu_initialization_period: SignedDuration,
    pub initial_readiness_delay: SignedDuration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            cpu_initialization_period: SignedDuration::from_mins(5),
            initial_readiness_delay: SignedDuration::from_secs(30),
        }
    }
}

/// Why a pod was left out of, or filled into, the calculation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Grouping {
    /// Deleting or failed: ignored.
    Ignored,
    /// Pending, or (cpu only) not yet ready or still starting: counted as 0 when scaling up.
    Unready,
    /// No metric: counted at the target when scaling down, 0 when scaling up.
    Missing,
}

/// The decision of one metric and what shaped it.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Proposal {
    pub replicas: i32,
    /// Usage ratio before fill-ins (what status reports).
    pub ratio: f64,
    /// Integer percent of requests, for Utilization targets.
    pub utilization: Option<i32>,
    /// Average value per pod (milli), as status reports it.
    pub average: i64,
    pub ready_pods: usize,
    /// Pods not counted as measured, and why.
    pub pods: Vec<(String, Grouping)>,
    /// Which rule produced `replicas`.
    pub rule: &'static str,
}

/// A metric that cannot be computed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CalcError {
    #[error("no metrics returned for the pods")]
    NoMetrics,
    #[error("missing request for {resource} on pod {pod}")]
    MissingRequest { resource: String, pod: String },
    #[error("no pods with both a metric and a request")]
    NothingToCompare,
    #[error("target must be positive")]
    BadTarget,
}

/// One pod metric's inputs.
#[derive(Clone, Copy, Debug)]
pub struct PodMetric<'a> {
    pub pods: &'a [PodSample],
    pub samples: &'a BTreeMap<String, Sample>,
    pub target: Target,
    /// The resource, for messages; `cpu` turns on the readiness rules.
    pub resource: &'a str,
}

/// Upstream's groupPods, one pod.
fn group(p: &PodSample, sample: Option<&Sample>, cpu: bool, timing: &Timing, now: Timestamp) -> Option<Grouping> {
    if p.deleting || p.phase == Phase::Failed {
        return Some(Grouping::Ignored);
    }
    if p.phase == Phase::Pending {
        return Some(Grouping::Unready);
    }
    let Some(s) = sample else { return Some(Grouping::Missing) };
    if !cpu {
        return None;
    }
    let (Some(r), Some(start)) = (p.ready, p.start_time) else { return Some(Grouping::Unready) };
    let unready = if now < start + timing.cpu_initialization_period {
        !r.ready || s.timestamp < r.last_transition + s.window
    } else {
        !r.ready && start + timing.initial_readiness_delay > r.last_transition
    };
    unready.then_some(Grouping::Unready)
}

/// One entry of the ratio computation: a value and, for Utilization, a request.
#[derive(Clone, Copy, Debug)]
struct Entry {
    value: i64,
    request: Option<i64>,
}

/// (ratio, utilization percent, average).
fn ratio(entries: &[Entry], target: Target) -> Result<(f64, Option<i32>, i64), CalcError> {
    match target {
        Target::Utilization(pct) => {
            let (mut use_sum, mut req_sum, mut n) = (0i128, 0i128, 0i128);
            for e in entries {
                if let Some(r) = e.request {
                    use_sum += i128::from(e.value);
                    req_sum += i128::from(r);
                    n += 1;
                }
            }
            if n == 0 || req_sum == 0 {
                return Err(CalcError::NothingToCompare);
            }
            let u = (use_sum * 100 / req_sum) as i32;
            Ok((f64::from(u) / f64::from(pct), Some(u), (use_sum / n) as i64))
        }
        Target::AverageValue(t) => {
            if entries.is_empty() {
                return Err(CalcError::NoMetrics);
            }
            let sum: i128 = entries.iter().map(|e| i128::from(e.value)).sum();
            let avg = (sum / entries.len() as i128) as i64;
            Ok((avg as f64 / t as f64, None, avg))
        }
    }
}

fn ceil_i32(x: f64) -> i32 {
    let c = x.ceil();
    if c >= f64::from(i32::MAX) { i32::MAX } else { c as i32 }
}

/// Replicas for a Resource, ContainerResource or Pods metric: upstream's `GetResourceReplicas`
/// and `calcPlainMetricReplicas`. `current` is the scale's `spec.replicas`.
pub fn pod_metric_replicas(
    current: i32,
    m: PodMetric<'_>,
    tol: Tolerance,
    timing: &Timing,
    now: Timestamp,
) -> Result<Proposal, CalcError> {
    match m.target {
        Target::Utilization(p) if p <= 0 => return Err(CalcError::BadTarget),
        Target::AverageValue(v) if v <= 0 => return Err(CalcError::BadTarget),
        _ => {}
    }
    if m.samples.is_empty() {
        return Err(CalcError::NoMetrics);
    }
    let utilization = matches!(m.target, Target::Utilization(_));
    if utilization {
        if let Some(p) = m.pods.iter().find(|p| p.request.is_none()) {
            return Err(CalcError::MissingRequest { resource: m.resource.to_owned(), pod: p.name.clone() });
        }
    }
    let cpu = m.resource == "cpu";
    let mut ready: Vec<Entry> = Vec::new();
    let mut grouped: Vec<(String, Grouping, Option<i64>)> = Vec::new();
    for p in m.pods {
        let sample = m.samples.get(&p.name);
        match group(p, sample, cpu, timing, now) {
            None => ready.push(Entry { value: sample.map_or(0, |s| s.value), request: p.request }),
            Some(g) => grouped.push((p.name.clone(), g, p.request)),
        }
    }
    if ready.is_empty() && grouped.iter().all(|g| g.1 != Grouping::Missing) {
        return Err(CalcError::NoMetrics);
    }
    let ready_count = ready.len();
    let pods: Vec<(String, Grouping)> = grouped.iter().map(|(n, g, _)| (n.clone(), *g)).collect();
    let (r0, util, avg) = ratio(&ready, m.target)?;
    let proposal = |replicas: i32, rule: &'static str| Proposal {
        replicas,
        ratio: r0,
        utilization: util,
        average: avg,
        ready_pods: ready_count,
        pods: pods.clone(),
        rule,
    };
    let unready = grouped.iter().filter(|g| g.1 == Grouping::Unready).count();
    let missing = grouped.iter().filter(|g| g.1 == Grouping::Missing).count();
    let up_with_unready = unready > 0 && r0 > 1.0;
    if !up_with_unready && missing == 0 {
        if tol.within(r0) {
            return Ok(proposal(current, "within tolerance"));
        }
        return Ok(proposal(ceil_i32(r0 * ready_count as f64), "ratio × ready pods"));
    }
    let mut entries = ready.clone();
    for (_, g, request) in &grouped {
        match g {
            Grouping::Missing if r0 < 1.0 => {
                let value = match m.target {
                    Target::Utilization(p) => request.unwrap_or(0) * i64::from(p.max(100)) / 100,
                    Target::AverageValue(t) => t,
                };
                entries.push(Entry { value, request: *request });
            }
            Grouping::Missing if r0 > 1.0 => entries.push(Entry { value: 0, request: *request }),
            Grouping::Unready if up_with_unready => entries.push(Entry { value: 0, request: *request }),
            _ => {}
        }
    }
    let (r1, _, _) = ratio(&entries, m.target)?;
    if tol.within(r1) || (r0 < 1.0 && r1 > 1.0) || (r0 > 1.0 && r1 < 1.0) {
        return Ok(proposal(current, "fill-ins reverse or cancel the change"));
    }
    let n = ceil_i32(r1 * entries.len() as f64);
    if (r1 < 1.0 && n > current) || (r1 > 1.0 && n < current) {
        return Ok(proposal(current, "fill-ins reverse the direction"));
    }
    Ok(proposal(n, "ratio with fill-ins × pods"))
}

/// An Object or External metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum ValueTarget {
    /// Total value (milli).
    Value(i64),
    /// Value per replica (milli).
    AverageValue(i64),
}

/// Replicas for an Object or External metric. `current` is `spec.replicas`, `status` is
/// `status.replicas`, `ready_pods` counts Running and Ready pods. External values are summed by
/// the caller (capped at `i64::MAX`); `external` caps AverageValue proposals at `i32::MAX`.
pub fn value_replicas(
    current: i32,
    status: i32,
    ready_pods: usize,
    value: i64,
    target: ValueTarget,
    tol: Tolerance,
) -> Result<Proposal, CalcError> {
    let base = |replicas: i32, ratio: f64, average: i64, rule: &'static str| Proposal {
        replicas,
        ratio,
        utilization: None,
        average,
        ready_pods,
        pods: Vec::new(),
        rule,
    };
    match target {
        ValueTarget::Value(t) if t > 0 => {
            let r = value as f64 / t as f64;
            if current == 0 {
                return Ok(base(ceil_i32(r), r, value, "ratio (scaled to zero)"));
            }
            if tol.within(r) {
                return Ok(base(current, r, value, "within tolerance"));
            }
            Ok(base(ceil_i32(r * ready_pods as f64), r, value, "ratio × ready pods"))
        }
        ValueTarget::AverageValue(t) if t > 0 => {
            let status = status.max(0);
            let r = if status == 0 { f64::INFINITY } else { value as f64 / (t as f64 * f64::from(status)) };
            let usage = if status == 0 { value } else { (value as f64 / f64::from(status)).ceil() as i64 };
            if tol.within(r) {
                return Ok(base(status, r, usage, "within tolerance"));
            }
            Ok(base(ceil_i32(value as f64 / t as f64), r, usage, "value ÷ target"))
        }
        _ => Err(CalcError::BadTarget),
    }
}

/// Combines per-metric results as upstream does: the largest proposal wins, but a failing
/// metric blocks a scale-down (and everything when all fail). Returns the replicas to aim for,
/// or the index of the first failure that stops scaling.
pub fn combine(results: &[Result<Proposal, CalcError>], spec_replicas: i32) -> Result<i32, usize> {
    combine_counts(results.iter().map(|r| r.as_ref().ok().map(|p| p.replicas)), spec_replicas)
}

/// [`combine`] over each metric's proposed count (`None`: the metric failed).
pub fn combine_counts(proposals: impl Iterator<Item = Option<i32>> + Clone, spec_replicas: i32) -> Result<i32, usize> {
    let best = proposals.clone().flatten().max();
    let first_err = proposals.clone().position(|p| p.is_none());
    match (best, first_err) {
        (None, Some(i)) => Err(i),
        (Some(b), Some(i)) if b < spec_replicas => Err(i),
        (Some(b), _) => Ok(b),
        (None, None) => Ok(spec_replicas),
    }
}

#[cfg(test)]
mod tests;
