//! One horizontal decision, as upstream's reconcile makes it (`hpa-vpa.md` §1.2): the
//! min/max/zero branches, every metric's proposal, the multiple-metric rules, normalisation and
//! the three conditions. The shell reads the scale, pods and metrics and applies the result.

use crate::Tolerance;
use crate::calc::{self, PodSample, Proposal, Sample, Target, Timing, ValueTarget};
use crate::normalize::{self, Behavior, Normalized, Recommendation, ScaleEvent};
use jiff::{SignedDuration, Timestamp};
use std::collections::BTreeMap;

/// The metric source types of autoscaling/v2.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Kind {
    Resource,
    ContainerResource,
    Pods,
    Object,
    External,
}

impl Kind {
    /// Upstream's ScalingActive reason when this kind of metric fails.
    pub fn failure_reason(self) -> String {
        format!("FailedGet{self:?}Metric")
    }
}

/// What the shell observed for one metric of the spec.
#[derive(Clone, Debug, PartialEq)]
pub enum Observation {
    /// Resource, ContainerResource or Pods: per-pod values, and each pod's request for the
    /// resource (Utilization) in `pods`.
    PerPod { kind: Kind, resource: String, target: Target, pods: Vec<PodSample>, samples: BTreeMap<String, Sample> },
    /// Object or External: one value (External: the sum of the series).
    Value { kind: Kind, value: i64, target: ValueTarget },
    /// The shell could not read it; `reason` is upstream's condition reason
    /// (`FailedGetResourceMetric`, `FailedGetExternalMetric`, ...).
    Failed { reason: String, message: String },
}

/// Stabilisation and rate-limit memory, persisted in status so restarts forget nothing.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct History {
    pub recommendations: Vec<Recommendation>,
    pub scale_up_events: Vec<ScaleEvent>,
    pub scale_down_events: Vec<ScaleEvent>,
}

/// Everything one decision needs.
#[derive(Clone, Debug)]
pub struct Input {
    pub min: i32,
    pub max: i32,
    /// The scale subresource: `spec.replicas` and `status.replicas`.
    pub spec_replicas: i32,
    pub status_replicas: i32,
    /// Pods of the target that are Running and Ready (Object/External Value targets).
    pub ready_pods: usize,
    pub metrics: Vec<Observation>,
    pub behavior: Option<Behavior>,
    pub tolerance: Tolerance,
    pub timing: Timing,
    /// The legacy path's scale-down window (upstream flag, 5m).
    pub downscale_window: SignedDuration,
    /// The legacy path's scale-up factor (2 upstream).
    pub scale_up_factor: f64,
    pub now: Timestamp,
}

/// A condition as upstream sets it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Cond {
    #[serde(rename = "type")]
    pub type_: &'static str,
    pub status: &'static str,
    pub reason: String,
    pub message: String,
}

fn cond(type_: &'static str, ok: bool, reason: &str, message: String) -> Cond {
    Cond { type_, status: if ok { "True" } else { "False" }, reason: reason.to_owned(), message }
}

/// One metric's outcome.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub enum MetricOutcome {
    Proposal(Proposal),
    Error { reason: String, message: String },
}

/// The decision and why.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Decision {
    pub current: i32,
    /// What to set `/scale` to (equal to `current`: nothing to do).
    pub desired: i32,
    pub metrics: Vec<MetricOutcome>,
    /// Proposal of the metrics before normalisation, when they produced one.
    pub proposed: Option<i32>,
    pub normalized: Option<Normalized>,
    pub conditions: Vec<Cond>,
    /// Which branch decided: "disabled", "above max", "below min", "metrics", "metrics failed".
    pub branch: &'static str,
}

/// Decides, updating `history` (recommendations now; scale events are recorded by
/// [`record_rescale`] once the shell has actually rescaled).
pub fn decide(input: &Input, history: &mut History) -> Decision {
    let current = input.spec_replicas;
    let (min, max) = (input.min, input.max);
    let able = cond(
        "AbleToScale",
        true,
        "SucceededGetScale",
        "the autoscaler was able to get the target's current scale".into(),
    );
    let mut decision = Decision {
        current,
        desired: current,
        metrics: Vec::new(),
        proposed: None,
        normalized: None,
        conditions: vec![able],
        branch: "metrics",
    };
    // Upstream seeds an unknown autoscaler's history with the current count, so a restart
    // never scales down at once.
    if history.recommendations.is_empty() {
        history.recommendations.push(Recommendation { at: input.now, replicas: current });
    }
    if current == 0 && min != 0 {
        decision.branch = "disabled";
        decision.conditions.push(cond(
            "ScalingActive",
            false,
            "ScalingDisabled",
            "scaling is disabled since the replica count of the target is zero".into(),
        ));
        return decision;
    }
    // Out-of-range counts are corrected at once: no metrics, no stabilisation, no rate limit.
    let clamp = if current > max {
        Some((max, "above max", normalize::Limit::TooManyReplicas))
    } else if current < min {
        Some((min, "below min", normalize::Limit::TooFewReplicas))
    } else {
        None
    };
    if let Some((to, branch, limit)) = clamp {
        decision.branch = branch;
        decision.desired = to;
        decision.conditions.push(cond("ScalingLimited", true, limit.as_str(), limit_message(limit, min, max)));
        return decision;
    }
    let results: Vec<Result<Proposal, (String, String)>> = input.metrics.iter().map(|m| evaluate(m, input)).collect();
    decision.metrics = results
        .iter()
        .map(|r| match r {
            Ok(p) => MetricOutcome::Proposal(p.clone()),
            Err((reason, message)) => MetricOutcome::Error { reason: reason.clone(), message: message.clone() },
        })
        .collect();
    let proposed = match calc::combine_counts(results.iter().map(|r| r.as_ref().ok().map(|p| p.replicas)), current) {
        Ok(p) => p,
        Err(i) => {
            let (reason, message) = results[i].clone().err().unwrap_or_default();
            decision.branch = "metrics failed";
            decision.conditions.push(cond("ScalingActive", false, &reason, message));
            return decision;
        }
    };
    decision.proposed = Some(proposed);
    decision.conditions.push(cond(
        "ScalingActive",
        true,
        "ValidMetricFound",
        "the autoscaler was able to successfully calculate a replica count from the metrics".into(),
    ));
    let n = match &input.behavior {
        None => normalize::legacy(
            proposed,
            current,
            min,
            max,
            &mut history.recommendations,
            input.now,
            input.downscale_window,
            input.scale_up_factor,
        ),
        Some(b) => normalize::with_behavior(
            proposed,
            current,
            min,
            max,
            b,
            &mut history.recommendations,
            &history.scale_up_events,
            &history.scale_down_events,
            input.now,
        ),
    };
    decision.desired = n.replicas;
    decision.normalized = Some(n);
    let stab = n.stabilization.as_str();
    decision.conditions[0] = cond(
        "AbleToScale",
        true,
        stab,
        match n.stabilization {
            normalize::Stabilization::ReadyForNewScale => "recommended size matches current size".into(),
            normalize::Stabilization::ScaleUpStabilized => {
                "recent recommendations were lower than current one, applying the lowest recent recommendation".into()
            }
            normalize::Stabilization::ScaleDownStabilized => {
                "recent recommendations were higher than current one, applying the highest recent recommendation".into()
            }
        },
    );
    let limited = n.replicas != n.stabilized;
    let message = limit_message(n.limit, min, max);
    let reason = if limited { n.limit.as_str() } else { "DesiredWithinRange" };
    decision.conditions.push(cond("ScalingLimited", limited, reason, message));
    decision
}

/// Upstream's ScalingLimited messages.
fn limit_message(limit: normalize::Limit, min: i32, max: i32) -> String {
    match limit {
        normalize::Limit::DesiredWithinRange => "the desired count is within the acceptable range".to_owned(),
        normalize::Limit::TooFewReplicas => {
            format!("the desired replica count is less than the minimum replica count ({min})")
        }
        normalize::Limit::TooManyReplicas => {
            format!("the desired replica count is more than the maximum replica count ({max})")
        }
        normalize::Limit::ScaleUpLimit => {
            "the desired replica count is increasing faster than the maximum scale rate".to_owned()
        }
        normalize::Limit::ScaleDownLimit => {
            "the desired replica count is decreasing faster than the maximum scale rate".to_owned()
        }
    }
}

fn evaluate(m: &Observation, input: &Input) -> Result<Proposal, (String, String)> {
    let current = input.spec_replicas;
    match m {
        Observation::Failed { reason, message } => Err((reason.clone(), message.clone())),
        Observation::PerPod { kind, resource, target, pods, samples } => {
            // The cpu-only readiness rules never apply to a Pods metric, whatever its name.
            let resource = if *kind == Kind::Pods { "" } else { resource.as_str() };
            let pm = calc::PodMetric { pods, samples, target: *target, resource };
            calc::pod_metric_replicas(current, pm, input.tolerance, &input.timing, input.now)
                .map_err(|e| (kind.failure_reason(), format!("the HPA was unable to compute the replica count: {e}")))
        }
        Observation::Value { kind, value, target } => {
            calc::value_replicas(current, input.status_replicas, input.ready_pods, *value, *target, input.tolerance)
                .map_err(|e| (kind.failure_reason(), format!("the HPA was unable to compute the replica count: {e}")))
        }
    }
}

/// Records a rescale the shell performed (behavior path only, as upstream).
pub fn record_rescale(history: &mut History, behavior: Option<&Behavior>, from: i32, to: i32, now: Timestamp) {
    let Some(b) = behavior else { return };
    if to > from {
        normalize::record_scale_event(&mut history.scale_up_events, &b.up, to - from, now);
    } else if to < from {
        normalize::record_scale_event(&mut history.scale_down_events, &b.down, from - to, now);
    }
}

#[cfg(test)]
mod tests;
