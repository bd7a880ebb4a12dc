#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;
use crate::calc::{Phase, Readiness};

fn now() -> Timestamp {
    "2026-01-01T12:00:00Z".parse().unwrap()
}

/// `n` ready pods with cpu requests of 2000m and the given usage.
fn cpu(usage: &[i64], target_pct: i32) -> Observation {
    let long_ago = now() - SignedDuration::from_hours(1);
    let pods: Vec<PodSample> = (0..usage.len())
        .map(|i| PodSample {
            name: format!("p{i}"),
            phase: Phase::Running,
            deleting: false,
            ready: Some(Readiness { ready: true, last_transition: long_ago }),
            start_time: Some(long_ago),
            request: Some(2000),
        })
        .collect();
    let samples = usage
        .iter()
        .enumerate()
        .map(|(i, &v)| (format!("p{i}"), Sample { value: v, timestamp: now(), window: SignedDuration::from_secs(30) }))
        .collect();
    Observation::PerPod {
        kind: Kind::Resource,
        resource: "cpu".into(),
        target: Target::Utilization(target_pct),
        pods,
        samples,
    }
}

fn input(current: i32, min: i32, max: i32, metrics: Vec<Observation>) -> Input {
    Input {
        min,
        max,
        spec_replicas: current,
        status_replicas: current,
        ready_pods: current as usize,
        metrics,
        behavior: None,
        tolerance: Tolerance::default(),
        timing: Timing::default(),
        downscale_window: SignedDuration::from_mins(5),
        scale_up_factor: 2.0,
        now: now(),
    }
}

fn reason(d: &Decision, t: &str) -> (String, String) {
    let c = d.conditions.iter().find(|c| c.type_ == t).unwrap();
    (c.status.to_owned(), c.reason.clone())
}

#[test]
fn scale_up_from_metrics() {
    // H1: three pods at 600/1000/1400m of 2000m with a 30% target → 5.
    let d = decide(&input(3, 1, 10, vec![cpu(&[600, 1000, 1400], 30)]), &mut History::default());
    assert_eq!((d.desired, d.branch), (5, "metrics"));
    assert_eq!(reason(&d, "ScalingActive"), ("True".into(), "ValidMetricFound".into()));
    assert_eq!(reason(&d, "ScalingLimited"), ("False".into(), "DesiredWithinRange".into()));
}

#[test]
fn capped_at_max_is_reported_as_limited() {
    // H4-like: the metrics want 7, max is 6.
    let d = decide(&input(3, 1, 6, vec![cpu(&[1400, 1400, 1400], 30)]), &mut History::default());
    assert_eq!(d.proposed, Some(7));
    assert_eq!(d.desired, 6);
    assert_eq!(reason(&d, "ScalingLimited"), ("True".into(), "TooManyReplicas".into()));
}

#[test]
fn out_of_range_counts_are_corrected_without_metrics() {
    // H5: spec 6 > max 5 → 5, no metrics read.
    let d = decide(
        &input(6, 1, 5, vec![Observation::Failed { reason: "x".into(), message: "y".into() }]),
        &mut History::default(),
    );
    assert_eq!((d.desired, d.branch, d.metrics.len()), (5, "above max", 0));
    let d = decide(&input(1, 3, 5, vec![]), &mut History::default());
    assert_eq!((d.desired, d.branch), (3, "below min"));
    let d = decide(&input(0, 1, 5, vec![cpu(&[2000], 10)]), &mut History::default());
    assert_eq!((d.desired, d.branch), (0, "disabled"));
    assert_eq!(reason(&d, "ScalingActive"), ("False".into(), "ScalingDisabled".into()));
}

#[test]
fn a_failing_metric_blocks_scale_down() {
    // H3: cpu says scale down, the other metric fails: stay, and say why.
    let failing = Observation::Failed { reason: Kind::External.failure_reason(), message: "no series".into() };
    let d =
        decide(&input(5, 1, 10, vec![cpu(&[100, 100, 100, 100, 100], 50), failing.clone()]), &mut History::default());
    assert_eq!((d.desired, d.branch), (5, "metrics failed"));
    assert_eq!(reason(&d, "ScalingActive"), ("False".into(), "FailedGetExternalMetric".into()));
    // H2: a scale-up still happens.
    let d = decide(&input(3, 1, 10, vec![cpu(&[600, 1000, 1400], 30), failing]), &mut History::default());
    assert_eq!(d.desired, 5);
}

#[test]
fn scale_down_waits_for_the_window_and_history_carries_it() {
    let mut history = History::default();
    // High load first: the recommendation of 5 is remembered.
    let d = decide(&input(3, 1, 10, vec![cpu(&[600, 1000, 1400], 30)]), &mut history);
    assert_eq!(d.desired, 5);
    // Load drops a minute later: the window holds the count at 5.
    let mut later = input(5, 1, 10, vec![cpu(&[100, 100, 100, 100, 100], 50)]);
    later.now = now() + SignedDuration::from_mins(1);
    let d = decide(&later, &mut history);
    assert_eq!(d.proposed, Some(1));
    assert_eq!(d.desired, 5);
    assert_eq!(reason(&d, "AbleToScale"), ("True".into(), "ScaleDownStabilized".into()));
    // A restart keeps the history (it is persisted as JSON in status).
    let mut restored: History = serde_json::from_str(&serde_json::to_string(&history).unwrap()).unwrap();
    later.now = now() + SignedDuration::from_mins(4);
    assert_eq!(decide(&later, &mut restored).desired, 5);
    // Past the 5-minute window the scale-down goes through.
    later.now = now() + SignedDuration::from_mins(7);
    assert_eq!(decide(&later, &mut restored).desired, 1);
}

#[test]
fn behavior_rate_limits_use_recorded_rescales() {
    let mut b = Behavior::default();
    b.up.policies =
        vec![normalize::Policy { kind: normalize::PolicyKind::Pods, value: 2, period: SignedDuration::from_mins(1) }];
    let mut i = input(2, 1, 20, vec![cpu(&[2000, 2000], 10)]);
    i.behavior = Some(b.clone());
    let mut history = History::default();
    let d = decide(&i, &mut history);
    assert_eq!((d.desired, reason(&d, "ScalingLimited").1), (4, "ScaleUpLimit".into()));
    record_rescale(&mut history, Some(&b), 2, 4, now());
    // Thirty seconds later the two pods added still count against the one-minute policy.
    let mut j = input(4, 1, 20, vec![cpu(&[2000; 4], 10)]);
    j.behavior = Some(b);
    j.now = now() + SignedDuration::from_secs(30);
    assert_eq!(decide(&j, &mut history).desired, 4);
}
