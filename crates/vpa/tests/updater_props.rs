#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]
//! Safety properties of the updater's plan, over arbitrary pods, recommendations and budgets:
//! it never disrupts more pods than the eviction tolerance allows, never evicts below
//! minReplicas, never evicts in InPlace mode, and never acts in Off or Initial mode.

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::Pod;
use omniscale_api::autoscaler::{Recommendation, UpdateMode};
use omniscale_vpa::admission::LimitRanges;
use omniscale_vpa::updater::{Action, Input, Settings, plan};
use proptest::prelude::*;
use serde_json::json;

fn pod(i: usize, cpu: u32, phase: &str, resize: Option<&str>) -> Pod {
    let mut conds = vec![];
    if let Some(reason) = resize {
        conds.push(json!({"type": "PodResizePending", "status": "True", "reason": reason,
            "lastTransitionTime": "2026-01-01T00:00:00Z"}));
    }
    serde_json::from_value(json!({
        "metadata": {"name": format!("p{i}")},
        "spec": {"containers": [{"name": "app", "image": "x", "resources": {"requests": {"cpu": format!("{cpu}m"), "memory": "64Mi"}}}]},
        "status": {"phase": phase, "startTime": "2026-01-01T00:00:00Z", "conditions": conds}
    }))
    .unwrap()
}

fn mode() -> impl Strategy<Value = UpdateMode> {
    prop_oneof![
        Just(UpdateMode::Off),
        Just(UpdateMode::Initial),
        Just(UpdateMode::Recreate),
        Just(UpdateMode::InPlaceOrRecreate),
        Just(UpdateMode::InPlace),
    ]
}

proptest! {
    #[test]
    fn plans_respect_budgets_and_modes(
        pods in prop::collection::vec((10u32..3000, prop_oneof![Just("Running"), Just("Pending")],
            prop_oneof![Just(None), Just(Some("Infeasible")), Just(Some("Deferred"))]), 0..12),
        configured in 0i32..12,
        tolerance in 0.0f64..1.0,
        min_replicas in prop::option::of(1i32..6),
        target in 10u32..3000,
        mode in mode(),
        hours in 0i64..48,
    ) {
        let pods: Vec<Pod> = pods.iter().enumerate().map(|(i, (cpu, phase, resize))| pod(i, *cpu, phase, *resize)).collect();
        let refs: Vec<&Pod> = pods.iter().collect();
        let rec: Recommendation = serde_json::from_value(json!({"containerRecommendations": [{
            "containerName": "app", "target": {"cpu": format!("{target}m"), "memory": "64Mi"},
            "lowerBound": {"cpu": format!("{}m", target / 2), "memory": "64Mi"},
            "upperBound": {"cpu": format!("{}m", target * 2), "memory": "64Mi"}}]})).unwrap();
        let input = Input { mode, min_replicas, configured, pods: &refs, recommendation: &rec, policy: None,
            ranges: &LimitRanges::default() };
        let s = Settings { eviction_tolerance: tolerance, ..Settings::default() };
        let now: Timestamp = "2026-01-01T00:00:00Z".parse::<Timestamp>().unwrap() + SignedDuration::from_hours(hours);
        let out = plan(&input, &s, now);
        let running = pods.iter().filter(|p| p.status.as_ref().unwrap().phase.as_deref() == Some("Running")).count() as i32;
        let phase_of = |name: &str| pods.iter().find(|p| p.metadata.name.as_deref() == Some(name)).unwrap()
            .status.as_ref().unwrap().phase.clone().unwrap();
        let mut disrupted_running = 0;
        let mut evictions = 0;
        for a in &out.actions {
            let (Action::Resize { pod, .. } | Action::Evict { pod, .. }) = a;
            if phase_of(pod) == "Running" { disrupted_running += 1; }
            if matches!(a, Action::Evict { .. }) { evictions += 1; }
            // Every pod is acted on at most once.
            prop_assert_eq!(out.actions.iter().filter(|b| matches!(b, Action::Resize { pod: q, .. } | Action::Evict { pod: q, .. } if q == pod)).count(), 1);
        }
        if matches!(mode, UpdateMode::Off | UpdateMode::Initial) {
            prop_assert!(out.actions.is_empty());
        }
        if mode == UpdateMode::InPlace {
            prop_assert_eq!(evictions, 0);
        }
        if (pods.len() as i32) < min_replicas.unwrap_or(2) {
            prop_assert_eq!(evictions, 0, "below minReplicas");
        }
        // Disruptions of running pods stay within the tolerance, except the one pod upstream
        // always lets go when the tolerance rounds to zero.
        let tol = (f64::from(configured) * tolerance).floor() as i32;
        let allowed = (running - (configured - tol)).max(0).max(i32::from(configured == running && tol == 0).min(running));
        prop_assert!(disrupted_running <= allowed, "{disrupted_running} > {allowed} (running {running}, configured {configured}, tol {tol})");
    }
}
