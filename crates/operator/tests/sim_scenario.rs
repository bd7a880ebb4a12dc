#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]
//! `omniscale sim --scenario` end to end: the simulated cluster, the operator and a scenario's
//! load, with the report written at the end.

use clap::Parser;
use omniscale_operator::cli::{Cli, Command};
use omniscale_sim::world::report::Timeline;

/// Runs `examples/<name>` for `duration` simulated seconds at 60x and returns its timeline.
async fn run_example(name: &str, duration: u32) -> (Timeline, std::path::PathBuf) {
    run_example_at(name, duration, 60).await
}

async fn run_example_at(name: &str, duration: u32, speed: u32) -> (Timeline, std::path::PathBuf) {
    omniscale_operator::install_crypto_provider();
    let dir = std::env::temp_dir().join(format!("omniscale-sim-{name}-{}", std::process::id()));
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples").join(name);
    let report = dir.join("report");
    let cli = Cli::try_parse_from([
        "omniscale",
        "sim",
        "--scenario",
        example.to_str().unwrap(),
        "--speed",
        &speed.to_string(),
        "--duration",
        &duration.to_string(),
        "--report-dir",
        report.to_str().unwrap(),
    ])
    .unwrap();
    let Command::Sim(args) = cli.command else { panic!("sim args") };
    omniscale_operator::sim::sim(args).await.unwrap();
    let timeline = Timeline::from_json(&std::fs::read_to_string(report.join("timeline.json")).unwrap()).unwrap();
    (timeline, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn php_apache_scales_up_under_load_and_back_down_after_the_window() {
    // The walkthrough: load from minute 1 to minute 8; 14 simulated minutes at 120x.
    let (timeline, dir) = run_example_at("php-apache", 840, 120).await;
    let report = dir.join("report");
    assert_eq!(timeline.scenario, "php-apache");
    assert!(timeline.samples.len() >= 50, "one sample every 15 s: {}", timeline.samples.len());
    let php = |t_min: f64, t_max: f64| -> Vec<&omniscale_sim::world::report::WorkloadSample> {
        timeline
            .samples
            .iter()
            .filter(|s| s.t >= t_min && s.t < t_max)
            .filter_map(|s| s.workloads.iter().find(|w| w.name == "php-apache"))
            .collect()
    };
    // Before the load: one replica, idle.
    assert!(php(20.0, 60.0).iter().all(|w| w.replicas == 1 && w.cpu_utilization_percent.unwrap_or(0.0) < 5.0));
    // Under load the count climbs (the first step is limited to max(2 × 1, 4) = 4) and settles
    // where utilisation is near the 50% target, as upstream's walkthrough does.
    let loaded = php(240.0, 480.0);
    let peak = loaded.iter().map(|w| w.replicas).max().unwrap();
    assert!((4..=7).contains(&peak), "peak {peak}");
    let util = loaded.last().unwrap().cpu_utilization_percent.unwrap();
    assert!((35.0..=60.0).contains(&util), "settled utilisation {util}");
    // After the load stops the count holds for the 5-minute window, then returns to 1.
    assert!(php(500.0, 760.0).iter().all(|w| w.replicas == peak), "held during the stabilisation window");
    assert_eq!(php(820.0, 841.0).last().unwrap().replicas, 1);
    let svg = std::fs::read_to_string(report.join("chart.svg")).unwrap();
    assert!(svg.starts_with("<svg") || svg.starts_with("<?xml"), "{}", &svg[..40]);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The side-by-side scenario also runs on the embedded cluster: its upstream HPA is skipped
/// (no kube-controller-manager there), omniscale's side scales as on the real one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn php_apache_vs_hpa_runs_omniscales_side_on_the_embedded_cluster() {
    let (timeline, dir) = run_example_at("php-apache-vs-hpa", 140, 20).await;
    let replicas = |name: &str| -> Vec<u32> { timeline.replica_changes(name).into_iter().map(|(r, _)| r).collect() };
    let ours = replicas("php-apache");
    assert_eq!((ours.first(), ours.last()), (Some(&1), Some(&1)), "{ours:?}");
    assert!(ours.iter().max().is_some_and(|m| *m >= 4), "{ours:?}");
    assert_eq!(replicas("php-apache-hpa"), [1], "nothing scales the HPA's Deployment here");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hamster_scenario_is_resized_to_upstreams_recommendation() {
    let (timeline, dir) = run_example("hamster", 300).await;
    assert_eq!(timeline.scenario, "hamster");
    let hamster = |s: &omniscale_sim::world::report::Sample| s.workloads.iter().find(|w| w.name == "hamster").cloned();
    // At first ~500m is used against a 100m request (the first sample, 30 s in, may already
    // see one pod resized: 1000m of 687m).
    let first = timeline.samples.iter().filter_map(hamster).find(|h| h.cpu_utilization_percent.is_some()).unwrap();
    let util = first.cpu_utilization_percent.unwrap();
    assert!((130.0..=560.0).contains(&util), "{util}");
    // Then the recommendation is upstream's, and the pods run with it: ~495m of 587m.
    let last = hamster(timeline.samples.last().unwrap()).unwrap();
    assert_eq!((last.replicas, last.ready), (2, 2));
    assert_eq!(last.recommendation_cpu_millis, Some(587.0));
    assert_eq!(last.recommendation_memory_bytes, Some(262_144_000.0));
    let util = last.cpu_utilization_percent.unwrap();
    assert!((75.0..=92.0).contains(&util), "{util}");
    // The template is unchanged: the pods were resized, the Deployment was not edited.
    assert_eq!(last.cpu_request_millis, 100.0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groupless_scenario_leaves_pods_pending_without_a_provisioner() {
    let (timeline, dir) = run_example("groupless", 60).await;
    assert_eq!(timeline.scenario, "groupless");
    let last = timeline.samples.last().unwrap();
    // The only node is a tainted system node: all ten pods wait for groupless provisioning.
    assert_eq!((last.nodes, last.pending_pods), (1, 10));
    let _ = std::fs::remove_dir_all(&dir);
}
