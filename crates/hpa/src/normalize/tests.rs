//! The upstream normalisation vectors (`hpa-vpa.md` §2).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;

fn now() -> Timestamp {
    "2026-01-01T12:00:00Z".parse().unwrap()
}

fn ago(s: i64) -> Timestamp {
    now() - SignedDuration::from_secs(s)
}

fn recs(list: &[(i32, i64)]) -> Vec<Recommendation> {
    list.iter().map(|&(replicas, age)| Recommendation { at: ago(age), replicas }).collect()
}

#[test]
fn steady_history_compacts_to_its_latest_entry() {
    let steady = recs(&[(3, 300), (3, 285), (3, 270), (3, 255)]);
    assert_eq!(compact(&steady), recs(&[(3, 255)]));
    // A peak stays while it can hold a scale-down, and so does a trough for a scale-up; the
    // first 3 is dropped because a later 3 covers every window it is in.
    let peak = recs(&[(3, 300), (5, 200), (3, 100), (4, 0)]);
    assert_eq!(compact(&peak), recs(&[(5, 200), (3, 100), (4, 0)]));
}

fn pods(v: i32, period: i64) -> Policy {
    Policy { kind: PolicyKind::Pods, value: v, period: SignedDuration::from_secs(period) }
}

fn pct(v: i32, period: i64) -> Policy {
    Policy { kind: PolicyKind::Percent, value: v, period: SignedDuration::from_secs(period) }
}

fn behavior(up: Option<Vec<Policy>>, down: Option<Vec<Policy>>) -> Behavior {
    let mut b = Behavior::default();
    // The rate-limit vectors run without stabilisation windows.
    b.down.window = SignedDuration::ZERO;
    if let Some(p) = up {
        b.up.policies = p;
    }
    if let Some(p) = down {
        b.down.policies = p;
    }
    b
}

fn rate(cur: i32, des: i32, min: i32, max: i32, b: &Behavior, up_events: &[ScaleEvent]) -> (i32, Limit) {
    let n = with_behavior(des, cur, min, max, b, &mut vec![], up_events, &[], now());
    (n.replicas, n.limit)
}

#[test]
fn behavior_rate_limit_vectors() {
    use Limit::*;
    let d = behavior(None, None);
    assert_eq!(rate(5, 7, 3, 8, &d, &[]), (7, DesiredWithinRange), "B1");
    assert_eq!(rate(3, 1, 2, 8, &d, &[]), (2, TooFewReplicas), "B2");
    assert_eq!(rate(20, 1000, 1, 10, &d, &[]), (10, TooManyReplicas), "B4");
    assert_eq!(rate(3, 1000, 1, 2000, &behavior(Some(vec![pct(1, 60)]), None), &[]), (4, ScaleUpLimit), "B6");
    assert_eq!(rate(10, 50, 1, 1000, &d, &[]), (20, ScaleUpLimit), "B7");
    assert_eq!(
        rate(10, 500, 1, 1000, &behavior(Some(vec![pods(100, 60), pct(100, 60)]), None), &[]),
        (110, ScaleUpLimit),
        "B8"
    );
    assert_eq!(
        rate(10, 500, 1, 1000, &behavior(Some(vec![pods(2, 60), pct(100, 60)]), None), &[]),
        (20, ScaleUpLimit),
        "B9"
    );
    assert_eq!(rate(10, 50, 1, 1000, &behavior(Some(vec![pods(30, 60)]), None), &[]), (40, ScaleUpLimit), "B10");
    assert_eq!(rate(10, 50, 1, 1000, &behavior(Some(vec![pct(200, 60)]), None), &[]), (30, ScaleUpLimit), "B11");
    assert_eq!(
        rate(100, 2, 1, 1000, &behavior(None, Some(vec![pods(20, 60), pct(1, 60)])), &[]),
        (80, ScaleDownLimit),
        "B12"
    );
    assert_eq!(rate(10, 0, 1, 1000, &behavior(None, Some(vec![pods(100, 60)])), &[]), (1, TooFewReplicas), "B14");
    assert_eq!(rate(10, 2, 5, 1000, &behavior(None, Some(vec![pct(100, 60)])), &[]), (5, TooFewReplicas), "B15");
    assert_eq!(rate(10, 2, 1, 1000, &behavior(None, Some(vec![pods(5, 60)])), &[]), (5, ScaleDownLimit), "B16");
    let events: Vec<ScaleEvent> = [(1, 100), (5, 60), (9, 20)]
        .iter()
        .map(|&(change, age)| ScaleEvent { at: ago(age), change, outdated: false })
        .collect();
    assert_eq!(
        rate(100, 500, 1, 200, &behavior(Some(vec![pods(300, 60)]), None), &events),
        (200, TooManyReplicas),
        "B17"
    );
    assert_eq!(rate(100, 500, 1, 1000, &behavior(Some(vec![pods(5, 120)]), None), &events), (100, ScaleUpLimit), "B18");
}

#[test]
fn select_policy_min_and_disabled() {
    let mut b = behavior(Some(vec![pods(2, 60), pct(50, 60)]), Some(vec![pods(2, 60), pct(50, 60)]));
    b.up.select = Select::Min;
    b.down.select = Select::Min;
    assert_eq!(rate(1, 10, 1, 100, &b, &[]).0, 2, "B27: min(3, ceil(1.5))");
    assert_eq!(rate(5, 1, 1, 100, &b, &[]).0, 3, "B28: max(3, trunc(2.5))");
    b.up.select = Select::Disabled;
    b.down.select = Select::Disabled;
    assert_eq!(rate(5, 10, 1, 100, &b, &[]), (5, Limit::ScaleUpLimit));
    assert_eq!(rate(5, 1, 1, 100, &b, &[]), (5, Limit::ScaleDownLimit));
}

#[test]
fn behavior_stabilization_vectors() {
    let run = |r: &[(i32, i64)], cur: i32, des: i32, up: i64, down: i64| {
        let mut b = Behavior::default();
        b.up.window = SignedDuration::from_secs(up);
        b.down.window = SignedDuration::from_secs(down);
        // No rate limit in these vectors.
        b.up.policies = vec![pods(10_000, 15)];
        b.down.policies = vec![pct(100, 15)];
        let mut recs = recs(r);
        with_behavior(des, cur, 1, 10_000, &b, &mut recs, &[], &[], now())
    };
    assert_eq!(run(&[], 100, 5, 0, 0).replicas, 5, "S1");
    let s2 = run(&[(4, 120), (5, 60)], 100, 3, 0, 180);
    assert_eq!((s2.replicas, s2.stabilization), (5, Stabilization::ScaleDownStabilized), "S2");
    let s3 = run(&[(4, 120), (5, 60)], 1, 7, 300, 0);
    assert_eq!((s3.replicas, s3.stabilization), (4, Stabilization::ScaleUpStabilized), "S3");
    assert_eq!(run(&[(1, 120), (2, 60)], 100, 3, 300, 0).replicas, 3, "S4");
}

#[test]
fn legacy_stabilization_and_limits() {
    let run = |r: &[(i32, i64)], desired: i32| {
        let mut recs = recs(r);
        let n = legacy(desired, 5, 1, 100, &mut recs, now(), SignedDuration::from_mins(5), 2.0);
        (n.stabilized, recs)
    };
    assert_eq!(run(&[], 5).0, 5, "L1");
    assert_eq!(run(&[(4, 120), (5, 60)], 3).0, 5, "L2");
    assert_eq!(run(&[(1, 120), (2, 60)], 3).0, 3, "L3");
    assert_eq!(run(&[(10, 600), (9, 540)], 3).0, 3, "L4");
    let (s, stored) = run(&[(10, 600), (4, 60), (5, 120), (9, 540)], 3);
    assert_eq!(s, 5, "L5");
    assert_eq!(stored.len(), 4, "an expired slot is reused");
    assert!(stored.iter().any(|r| r.at == now() && r.replicas == 3));
    // C5: 3 → 1000 with max 2000: limited to max(2 × 3, 4) = 6 in production (24 with the
    // test harness's factor 8).
    let n = legacy(1000, 3, 1, 2000, &mut vec![], now(), SignedDuration::from_mins(5), 2.0);
    assert_eq!((n.replicas, n.limit), (6, Limit::ScaleUpLimit));
    let n = legacy(1000, 3, 1, 2000, &mut vec![], now(), SignedDuration::from_mins(5), 8.0);
    assert_eq!(n.replicas, 24);
    let n = legacy(0, 3, 2, 10, &mut vec![], now(), SignedDuration::from_mins(5), 2.0);
    assert_eq!((n.replicas, n.limit), (2, Limit::TooFewReplicas));
}

#[test]
fn scale_events_reuse_outdated_slots() {
    let rules = Behavior::default().up;
    let mut events = vec![ScaleEvent { at: ago(100), change: 3, outdated: false }];
    record_scale_event(&mut events, &rules, -2, now());
    assert_eq!(events, vec![ScaleEvent { at: now(), change: 2, outdated: false }]);
    record_scale_event(&mut events, &rules, 4, now());
    assert_eq!(events.len(), 2);
}

#[test]
fn api_behavior_defaults() {
    let api: k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscalerBehavior = Default::default();
    let b = Behavior::from_api(&api, SignedDuration::from_mins(5));
    assert_eq!(b, Behavior::default());
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    fn config() -> ProptestConfig {
        ProptestConfig {
            cases: 256,
            failure_persistence: None,
            rng_seed: proptest::test_runner::RngSeed::Fixed(0x4a5),
            ..ProptestConfig::default()
        }
    }

    fn policy() -> impl Strategy<Value = Policy> {
        (any::<bool>(), 1..200i32, 1..600i64).prop_map(|(p, v, s)| Policy {
            kind: if p { PolicyKind::Pods } else { PolicyKind::Percent },
            value: v,
            period: SignedDuration::from_secs(s),
        })
    }

    fn select() -> impl Strategy<Value = Select> {
        prop_oneof![Just(Select::Max), Just(Select::Min), Just(Select::Disabled)]
    }

    proptest! {
        #![proptest_config(config())]

        /// Whatever the history and policies, the result stays within [min, max] when the
        /// current count does (counts outside are clamped before normalisation, as upstream).
        #[test]
        fn result_within_bounds(
            min in 1..50i32, span in 0..200i32, cur_off in 0..200i32, desired in 0..1000i32,
            up in proptest::collection::vec(policy(), 1..3), down in proptest::collection::vec(policy(), 1..3),
            up_sel in select(), down_sel in select(), up_win in 0..600i64, down_win in 0..600i64,
            history in proptest::collection::vec((0..1000i32, 0..900i64), 0..8),
            events in proptest::collection::vec((0..50i32, 0..900i64), 0..6),
        ) {
            let max = min + span;
            let current = min + cur_off.min(span);
            let b = Behavior {
                up: Rules { window: SignedDuration::from_secs(up_win), select: up_sel, policies: up },
                down: Rules { window: SignedDuration::from_secs(down_win), select: down_sel, policies: down },
            };
            let mut r = recs(&history);
            let ev: Vec<ScaleEvent> = events.iter().map(|&(c, a)| ScaleEvent { at: ago(a), change: c, outdated: false }).collect();
            let n = with_behavior(desired, current, min, max, &b, &mut r, &ev, &ev, now());
            prop_assert!(n.replicas >= min && n.replicas <= max, "{n:?}");
            let mut r = recs(&history);
            let l = legacy(desired, current, min, max, &mut r, now(), SignedDuration::from_mins(5), 2.0);
            prop_assert!(l.replicas >= min && l.replicas <= max, "{l:?}");
        }

        /// Compacting the history never changes what a window sees: for every window ending
        /// now, the highest and lowest recommendation inside it are the same.
        #[test]
        fn compact_keeps_every_window_extreme(
            history in proptest::collection::vec((0..20i32, 0..3600i64), 0..40), window in 0..3700i64,
        ) {
            let all = recs(&history);
            let small = compact(&all);
            prop_assert!(small.len() <= all.len());
            let inside = |v: &[Recommendation]| -> (Option<i32>, Option<i32>) {
                let w: Vec<i32> = v.iter().filter(|r| newer(r.at, now(), SignedDuration::from_secs(window))).map(|r| r.replicas).collect();
                (w.iter().copied().max(), w.iter().copied().min())
            };
            prop_assert_eq!(inside(&all), inside(&small));
        }

        /// No flapping: usage within tolerance of the target never changes the count.
        #[test]
        fn no_change_within_tolerance(current in 1..50i32, target in 100..10_000i64, skew in -0.099f64..0.099) {
            use crate::calc::*;
            let value = (target as f64 * (1.0 + skew)) as i64;
            let pods: Vec<PodSample> = (0..current).map(|i| PodSample {
                name: format!("p{i}"), phase: Phase::Running, deleting: false, ready: None, start_time: None, request: None,
            }).collect();
            let samples: std::collections::BTreeMap<String, Sample> = pods.iter()
                .map(|p| (p.name.clone(), Sample { value, timestamp: now(), window: SignedDuration::ZERO })).collect();
            let m = PodMetric { pods: &pods, samples: &samples, target: Target::AverageValue(target), resource: "x" };
            let p = pod_metric_replicas(current, m, crate::Tolerance::default(), &Timing::default(), now()).unwrap();
            prop_assert_eq!(p.replicas, current);
        }
    }
}
