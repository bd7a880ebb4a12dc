//! The upstream replica-calculator vectors (`hpa-vpa.md` §2), per-pod totals in milli.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;

fn now() -> Timestamp {
    "2026-01-01T12:00:00Z".parse().unwrap()
}

/// The harness's timing: init period 2m, readiness delay 10s.
fn timing() -> Timing {
    Timing {
        cpu_initialization_period: SignedDuration::from_mins(2),
        initial_readiness_delay: SignedDuration::from_secs(10),
    }
}

#[derive(Clone, Copy)]
enum P {
    /// Ready, started long ago, with this usage.
    Ok(i64),
    /// Ready=False and never ready (zero start time): cpu-unready, with this usage.
    Unready(i64),
    /// Started now, Ready since now: cpu-unready ("hot").
    Hot(i64),
    Failed,
    Pending,
    Deleting,
    /// No metric.
    Missing,
}

fn run(cur: i32, target: Target, resource: &str, requests: &[i64], pods: &[P]) -> Result<Proposal, CalcError> {
    let long_ago = now() - SignedDuration::from_hours(1);
    let mut samples = BTreeMap::new();
    let mut list = Vec::new();
    for (i, (p, &req)) in pods.iter().zip(requests.iter().cycle()).enumerate() {
        let name = format!("pod-{i}");
        let mut s = PodSample {
            name: name.clone(),
            phase: Phase::Running,
            deleting: false,
            ready: Some(Readiness { ready: true, last_transition: long_ago }),
            start_time: Some(long_ago),
            request: Some(req),
        };
        let sample = |v: i64| Sample { value: v, timestamp: now(), window: SignedDuration::from_secs(30) };
        match *p {
            P::Ok(v) => {
                samples.insert(name.clone(), sample(v));
            }
            P::Unready(v) => {
                // Not ready since it started: the never-ready rule.
                s.ready = Some(Readiness { ready: false, last_transition: Timestamp::UNIX_EPOCH });
                s.start_time = Some(Timestamp::UNIX_EPOCH);
                samples.insert(name.clone(), sample(v));
            }
            P::Hot(v) => {
                s.start_time = Some(now());
                s.ready = Some(Readiness { ready: true, last_transition: now() });
                samples.insert(name.clone(), sample(v));
            }
            P::Failed => s.phase = Phase::Failed,
            P::Pending => s.phase = Phase::Pending,
            P::Deleting => s.deleting = true,
            P::Missing => {}
        }
        list.push(s);
    }
    let m = PodMetric { pods: &list, samples: &samples, target, resource };
    pod_metric_replicas(cur, m, Tolerance::default(), &timing(), now())
}

fn util(cur: i32, pct: i32, requests: &[i64], pods: &[P]) -> (i32, Option<i32>, i64) {
    let p = run(cur, Target::Utilization(pct), "cpu", requests, pods).unwrap();
    (p.replicas, p.utilization, p.average)
}

use P::*;

#[test]
fn resource_utilization_vectors() {
    assert_eq!(util(3, 30, &[2000], &[Ok(600), Ok(1000), Ok(1400)]), (5, Some(50), 1000), "R1");
    assert_eq!(util(3, 30, &[2000], &[Unready(600), Ok(1000), Ok(1400)]), (4, Some(60), 1200), "R2");
    assert_eq!(util(3, 30, &[2000], &[Hot(600), Ok(1000), Ok(1400)]), (4, Some(60), 1200), "R3");
    assert_eq!(util(3, 30, &[2000], &[Ok(800), Unready(1000), Unready(1400)]), (3, Some(40), 800), "R4");
    assert_eq!(util(2, 30, &[2000], &[Ok(1000), Ok(1400), Failed, Failed]), (4, Some(60), 1200), "R5");
    assert_eq!(util(5, 50, &[2000], &[Ok(200), Ok(600), Ok(1000), Ok(500), Ok(500)]), (3, Some(28), 560), "R7");
    assert_eq!(
        util(5, 50, &[2000], &[Ok(200), Ok(600), Ok(1000), Unready(500), Unready(500)]),
        (2, Some(30), 600),
        "R8"
    );
    assert_eq!(util(5, 50, &[2000], &[Ok(200), Pending, Pending, Pending, Pending]), (1, Some(10), 200), "R9");
    assert_eq!(util(3, 100, &[1800, 2000, 2200], &[Ok(2020), Ok(2060), Ok(2040)]), (3, Some(102), 2040), "R11");
    assert_eq!(util(4, 100, &[2000], &[Ok(800), Ok(190), Missing, Missing]), (3, Some(24), 495), "R13");
    assert_eq!(util(2, 100, &[2000], &[Ok(2000), Missing]), (2, Some(100), 2000), "R14");
    assert_eq!(util(2, 100, &[2000], &[Ok(3800), Missing]), (2, Some(190), 3800), "R15");
    assert_eq!(util(2, 100, &[2000], &[Ok(1200), Missing]), (2, Some(60), 1200), "R16");
    assert_eq!(util(2, 50, &[2000], &[Ok(200), Ok(200), Missing]), (2, Some(10), 200), "R21");
    let skewed: Vec<i64> = [100, -100, 10, -10, 2, -2, 1, -1, 0, 0].iter().map(|d| 2 * (300 + d)).collect();
    let flat = [Ok(300); 10];
    assert_eq!(util(10, 56, &skewed, &flat), (9, Some(50), 300), "R22");
    assert_eq!(util(10, 55, &skewed, &flat), (10, Some(50), 300), "R23");
    assert_eq!(util(3, 30, &[1000], &[Ok(300), Ok(500), Ok(700)]), (5, Some(50), 500), "R24");
}

#[test]
fn pod_grouping_is_explained() {
    let p =
        run(5, Target::Utilization(50), "cpu", &[2000], &[Ok(200), Unready(600), Missing, Deleting, Pending]).unwrap();
    assert_eq!(
        p.pods,
        vec![
            ("pod-1".to_owned(), Grouping::Unready),
            ("pod-2".to_owned(), Grouping::Missing),
            ("pod-3".to_owned(), Grouping::Ignored),
            ("pod-4".to_owned(), Grouping::Unready),
        ]
    );
    assert_eq!(p.ready_pods, 1);
    // Memory ignores readiness: the never-ready pod counts.
    let m = run(2, Target::Utilization(50), "memory", &[2000], &[Ok(1000), Unready(3000)]).unwrap();
    assert_eq!((m.ready_pods, m.utilization), (2, Some(100)));
}

#[test]
fn errors() {
    let mut pods = vec![PodSample {
        name: "a".into(),
        phase: Phase::Running,
        deleting: false,
        ready: None,
        start_time: None,
        request: None,
    }];
    let samples =
        BTreeMap::from([("a".to_owned(), Sample { value: 1, timestamp: now(), window: SignedDuration::ZERO })]);
    let m = PodMetric { pods: &pods, samples: &samples, target: Target::Utilization(50), resource: "cpu" };
    assert_eq!(
        pod_metric_replicas(1, m, Tolerance::default(), &timing(), now()),
        Err(CalcError::MissingRequest { resource: "cpu".into(), pod: "a".into() })
    );
    pods[0].request = Some(100);
    let empty = BTreeMap::new();
    let m = PodMetric { pods: &pods, samples: &empty, target: Target::Utilization(50), resource: "cpu" };
    assert_eq!(pod_metric_replicas(1, m, Tolerance::default(), &timing(), now()), Err(CalcError::NoMetrics));
    let m = PodMetric { pods: &pods, samples: &samples, target: Target::AverageValue(0), resource: "x" };
    assert_eq!(pod_metric_replicas(1, m, Tolerance::default(), &timing(), now()), Err(CalcError::BadTarget));
}

fn plain(cur: i32, target: i64, pods: &[P]) -> (i32, i64) {
    let p = run(cur, Target::AverageValue(target), "packets", &[0], pods).unwrap();
    (p.replicas, p.average)
}

#[test]
fn pods_metric_vectors() {
    assert_eq!(plain(3, 15000, &[Ok(20000), Ok(10000), Ok(30000)]), (4, 20000), "P1");
    assert_eq!(plain(3, 15000, &[Ok(50000), Ok(10000), Ok(30000)]), (6, 30000), "P2");
    assert_eq!(plain(5, 20000, &[Ok(12000); 5]), (3, 12000), "P4");
    assert_eq!(plain(3, 20000, &[Ok(20000), Ok(21000), Ok(21000)]), (3, 20666), "P5");
    assert_eq!(plain(5, 20000, &[Ok(20000), Ok(19000), Ok(21000), Missing, Missing]), (5, 20000), "P6");
    assert_eq!(plain(2, 17000, &[Ok(10000), Ok(10000), Missing]), (2, 10000), "P7");
    // Readiness is ignored for pods metrics: a never-ready pod's value counts.
    assert_eq!(plain(3, 15000, &[Ok(20000), Unready(10000), Ok(30000)]), (4, 20000));
}

fn value(cur: i32, status: i32, ready: usize, v: i64, t: ValueTarget) -> (i32, i64) {
    let p = value_replicas(cur, status, ready, v, t, Tolerance::default()).unwrap();
    (p.replicas, p.average)
}

#[test]
fn object_and_external_vectors() {
    use ValueTarget::{AverageValue, Value};
    assert_eq!(value(3, 3, 3, 20000, Value(15000)), (4, 20000), "O1");
    assert_eq!(value(3, 3, 1, 50000, Value(10000)), (5, 50000), "O2");
    assert_eq!(value(5, 5, 5, 12000, Value(20000)), (3, 12000), "O3");
    assert_eq!(value(3, 3, 3, 20666, Value(20000)), (3, 20666), "O4");
    assert_eq!(value(0, 0, 0, 20000, Value(15000)), (2, 20000), "Z1");
    assert_eq!(value(3, 3, 3, 20000, AverageValue(5000)), (4, 6667), "O5");
    assert_eq!(value(5, 5, 5, 6000, AverageValue(2000)), (3, 1200), "O6");
    assert_eq!(value(3, 3, 1, 8600, Value(4400)), (2, 8600), "E1");
    assert_eq!(value(5, 5, 5, 8600, Value(14334)), (3, 8600), "E2");
    assert_eq!(value(3, 3, 3, 8600, Value(8888)), (3, 8600), "E3");
}

#[test]
fn a_broken_metric_blocks_scale_down_not_scale_up() {
    let ok = |r: i32| {
        Result::<Proposal, CalcError>::Ok(
            value_replicas(r, r, r as usize, 1, ValueTarget::Value(1), Tolerance::default()).unwrap(),
        )
    };
    let bad = || Result::<Proposal, CalcError>::Err(CalcError::NoMetrics);
    assert_eq!(combine(&[ok(4), bad()], 3), Result::Ok(4), "H2: scale-up proceeds");
    assert_eq!(combine(&[ok(2), bad()], 5), Err(1), "H3: no scale-down");
    assert_eq!(combine(&[bad(), bad()], 5), Err(0));
    assert_eq!(combine(&[ok(2), ok(6)], 5), Result::Ok(6), "the largest proposal wins");
}

#[test]
fn configurable_tolerance_per_direction() {
    let pods = [Ok(1080), Ok(1080)];
    let tight = Tolerance { up: 0.05, down: 0.1 };
    let p = run(2, Target::AverageValue(1000), "x", &[0], &pods).unwrap();
    assert_eq!(p.replicas, 2, "8% over is within the default 10%");
    let list: Vec<PodSample> = (0..2)
        .map(|i| PodSample {
            name: format!("p{i}"),
            phase: Phase::Running,
            deleting: false,
            ready: None,
            start_time: None,
            request: None,
        })
        .collect();
    let samples: BTreeMap<String, Sample> = (0..2)
        .map(|i| (format!("p{i}"), Sample { value: 1080, timestamp: now(), window: SignedDuration::ZERO }))
        .collect();
    let m = PodMetric { pods: &list, samples: &samples, target: Target::AverageValue(1000), resource: "x" };
    assert_eq!(pod_metric_replicas(2, m, tight, &timing(), now()).unwrap().replicas, 3, "but not within 5%");
}
