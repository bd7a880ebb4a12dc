//! From the metrics' proposal to the replicas to set: stabilisation windows and rate limits,
//! on upstream's legacy path (no `behavior`) and its `behavior` path, with the reasons upstream
//! puts in the AbleToScale and ScalingLimited conditions.

use jiff::{SignedDuration, Timestamp};

/// A past proposal, kept for the stabilisation windows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Recommendation {
    pub at: Timestamp,
    pub replicas: i32,
}

/// A past rescale, kept for rate limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScaleEvent {
    pub at: Timestamp,
    pub change: i32,
    #[serde(default)]
    pub outdated: bool,
}

/// What limited the result, as the ScalingLimited condition reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Limit {
    DesiredWithinRange,
    TooFewReplicas,
    TooManyReplicas,
    ScaleUpLimit,
    ScaleDownLimit,
}

impl Limit {
    pub fn as_str(self) -> &'static str {
        match self {
            Limit::DesiredWithinRange => "DesiredWithinRange",
            Limit::TooFewReplicas => "TooFewReplicas",
            Limit::TooManyReplicas => "TooManyReplicas",
            Limit::ScaleUpLimit => "ScaleUpLimit",
            Limit::ScaleDownLimit => "ScaleDownLimit",
        }
    }
}

/// The AbleToScale reason of the stabilisation step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Stabilization {
    ReadyForNewScale,
    ScaleUpStabilized,
    ScaleDownStabilized,
}

impl Stabilization {
    pub fn as_str(self) -> &'static str {
        match self {
            Stabilization::ReadyForNewScale => "ReadyForNewScale",
            Stabilization::ScaleUpStabilized => "ScaleUpStabilized",
            Stabilization::ScaleDownStabilized => "ScaleDownStabilized",
        }
    }
}

/// The normalised decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Normalized {
    pub replicas: i32,
    /// After the stabilisation window, before limits.
    pub stabilized: i32,
    pub stabilization: Stabilization,
    pub limit: Limit,
}

/// The recommendations that can still decide a stabilisation window, oldest first. Windows
/// always end now, so a recommendation is irrelevant once a later one is at least as high
/// (for the scale-down window's maximum) and a later one is at least as low (for the scale-up
/// window's minimum): every window holding it holds those too. A steady load compacts to one
/// entry, which keeps the persisted history small.
pub fn compact(recs: &[Recommendation]) -> Vec<Recommendation> {
    let mut sorted = recs.to_vec();
    sorted.sort_by_key(|r| r.at);
    let mut kept = Vec::new();
    let (mut hi, mut lo) = (i32::MIN, i32::MAX);
    for r in sorted.into_iter().rev() {
        if r.replicas > hi || r.replicas < lo {
            kept.push(r);
        }
        hi = hi.max(r.replicas);
        lo = lo.min(r.replicas);
    }
    kept.reverse();
    kept
}

fn newer(at: Timestamp, now: Timestamp, window: SignedDuration) -> bool {
    at > now - window
}

/// Stores a recommendation in the first slot `reusable` allows, else appends.
fn record(recs: &mut Vec<Recommendation>, rec: Recommendation, reusable: impl Fn(&Recommendation) -> bool) {
    match recs.iter_mut().find(|r| reusable(r)) {
        Some(slot) => *slot = rec,
        None => recs.push(rec),
    }
}

/// The legacy path: a scale-down stabilisation window, then `max(factor × current, 4)` as the
/// scale-up limit (factor 2 upstream).
#[allow(clippy::too_many_arguments)]
pub fn legacy(
    desired: i32,
    current: i32,
    min: i32,
    max: i32,
    recs: &mut Vec<Recommendation>,
    now: Timestamp,
    window: SignedDuration,
    scale_up_factor: f64,
) -> Normalized {
    let stabilized = recs.iter().filter(|r| newer(r.at, now, window)).map(|r| r.replicas).fold(desired, i32::max);
    record(recs, Recommendation { at: now, replicas: desired }, |r| !newer(r.at, now, window));
    let stabilization =
        if stabilized != desired { Stabilization::ScaleDownStabilized } else { Stabilization::ReadyForNewScale };
    let up_limit = ((scale_up_factor * f64::from(current)).ceil() as i32).max(4);
    let (hi, hi_reason) = if up_limit < max { (up_limit, Limit::ScaleUpLimit) } else { (max, Limit::TooManyReplicas) };
    let (replicas, limit) = if stabilized < min {
        (min, Limit::TooFewReplicas)
    } else if stabilized > hi {
        (hi, hi_reason)
    } else {
        (stabilized, Limit::DesiredWithinRange)
    };
    Normalized { replicas, stabilized, stabilization, limit }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum PolicyKind {
    Pods,
    Percent,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Policy {
    pub kind: PolicyKind,
    pub value: i32,
    pub period: SignedDuration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Select {
    Max,
    Min,
    Disabled,
}

/// One direction of `behavior`, defaults filled in.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Rules {
    pub window: SignedDuration,
    pub select: Select,
    pub policies: Vec<Policy>,
}

/// `behavior` with upstream's defaults for what is unset.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Behavior {
    pub up: Rules,
    pub down: Rules,
}

impl Default for Behavior {
    fn default() -> Self {
        let s15 = SignedDuration::from_secs(15);
        Self {
            up: Rules {
                window: SignedDuration::ZERO,
                select: Select::Max,
                policies: vec![
                    Policy { kind: PolicyKind::Pods, value: 4, period: s15 },
                    Policy { kind: PolicyKind::Percent, value: 100, period: s15 },
                ],
            },
            down: Rules {
                window: SignedDuration::from_mins(5),
                select: Select::Max,
                policies: vec![Policy { kind: PolicyKind::Percent, value: 100, period: s15 }],
            },
        }
    }
}

impl Behavior {
    /// From the API type; `down_window_default` is what an unset scale-down window means (the
    /// cluster's `--horizontal-pod-autoscaler-downscale-stabilization`, 5m).
    pub fn from_api(
        b: &k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscalerBehavior,
        down_window_default: SignedDuration,
    ) -> Self {
        let d = Behavior::default();
        let rules =
            |r: Option<&k8s_openapi::api::autoscaling::v2::HPAScalingRules>, dflt: &Rules, window: SignedDuration| {
                let Some(r) = r else { return Rules { window, ..dflt.clone() } };
                Rules {
                    window: r.stabilization_window_seconds.map_or(window, |s| SignedDuration::from_secs(i64::from(s))),
                    select: match r.select_policy.as_deref() {
                        Some("Min") => Select::Min,
                        Some("Disabled") => Select::Disabled,
                        _ => Select::Max,
                    },
                    policies: match &r.policies {
                        Some(ps) if !ps.is_empty() => ps
                            .iter()
                            .map(|p| Policy {
                                kind: if p.type_ == "Percent" { PolicyKind::Percent } else { PolicyKind::Pods },
                                value: p.value,
                                period: SignedDuration::from_secs(i64::from(p.period_seconds)),
                            })
                            .collect(),
                        _ => dflt.policies.clone(),
                    },
                }
            };
        Self {
            up: rules(b.scale_up.as_ref(), &d.up, SignedDuration::ZERO),
            down: rules(b.scale_down.as_ref(), &d.down, down_window_default),
        }
    }
}

fn changed(events: &[ScaleEvent], period: SignedDuration, now: Timestamp) -> i32 {
    events.iter().filter(|e| newer(e.at, now, period)).map(|e| e.change).sum()
}

/// The behavior path: stabilise with both windows, then apply the rate-limit policies.
#[allow(clippy::too_many_arguments)]
pub fn with_behavior(
    desired: i32,
    current: i32,
    min: i32,
    max: i32,
    b: &Behavior,
    recs: &mut Vec<Recommendation>,
    up_events: &[ScaleEvent],
    down_events: &[ScaleEvent],
    now: Timestamp,
) -> Normalized {
    let mut up_rec = desired;
    let mut down_rec = desired;
    for r in recs.iter() {
        if newer(r.at, now, b.up.window) {
            up_rec = up_rec.min(r.replicas);
        }
        if newer(r.at, now, b.down.window) {
            down_rec = down_rec.max(r.replicas);
        }
    }
    let mut stabilized = current;
    if stabilized < up_rec {
        stabilized = up_rec;
    }
    if stabilized > down_rec {
        stabilized = down_rec;
    }
    record(recs, Recommendation { at: now, replicas: desired }, |r| {
        !newer(r.at, now, b.up.window) && !newer(r.at, now, b.down.window)
    });
    let stabilization = if stabilized == desired {
        Stabilization::ReadyForNewScale
    } else if desired >= current {
        Stabilization::ScaleUpStabilized
    } else {
        Stabilization::ScaleDownStabilized
    };
    let (replicas, limit) = if stabilized > current {
        let limit = match b.up.select {
            Select::Disabled => current,
            sel => {
                let proposals = b.up.policies.iter().map(|p| {
                    let start = current - changed(up_events, p.period, now) + changed(down_events, p.period, now);
                    match p.kind {
                        PolicyKind::Pods => start.saturating_add(p.value),
                        PolicyKind::Percent => (f64::from(start) * (1.0 + f64::from(p.value) / 100.0)).ceil() as i32,
                    }
                });
                let pick = if sel == Select::Max { proposals.max() } else { proposals.min() };
                pick.unwrap_or(current)
            }
        }
        .max(current);
        let (hi, reason) = if max > limit { (limit, Limit::ScaleUpLimit) } else { (max, Limit::TooManyReplicas) };
        if stabilized > hi { (hi, reason) } else { (stabilized, Limit::DesiredWithinRange) }
    } else if stabilized < current {
        let limit = match b.down.select {
            Select::Disabled => current,
            sel => {
                let proposals = b.down.policies.iter().map(|p| {
                    let start = current + changed(down_events, p.period, now) - changed(up_events, p.period, now);
                    match p.kind {
                        PolicyKind::Pods => start - p.value,
                        PolicyKind::Percent => (f64::from(start) * (1.0 - f64::from(p.value) / 100.0)) as i32,
                    }
                });
                // "Max" means the policy allowing the biggest change: the smallest floor.
                let pick = if sel == Select::Max { proposals.min() } else { proposals.max() };
                pick.unwrap_or(current)
            }
        }
        .min(current);
        let (lo, reason) = if min < limit { (limit, Limit::ScaleDownLimit) } else { (min, Limit::TooFewReplicas) };
        if stabilized < lo { (lo, reason) } else { (stabilized, Limit::DesiredWithinRange) }
    } else {
        (stabilized, Limit::DesiredWithinRange)
    };
    Normalized { replicas, stabilized, stabilization, limit }
}

/// Records a rescale of `change` replicas in its direction's history, reusing a slot older than
/// the direction's longest policy period.
pub fn record_scale_event(events: &mut Vec<ScaleEvent>, rules: &Rules, change: i32, now: Timestamp) {
    let longest = rules.policies.iter().map(|p| p.period).max().unwrap_or(SignedDuration::ZERO);
    for e in events.iter_mut() {
        if !newer(e.at, now, longest) {
            e.outdated = true;
        }
    }
    let ev = ScaleEvent { at: now, change: change.abs(), outdated: false };
    match events.iter_mut().find(|e| e.outdated) {
        Some(slot) => *slot = ev,
        None => events.push(ev),
    }
}

#[cfg(test)]
mod tests;
