#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]
//! `omniscale sim --scenario` end to end: the simulated cluster, the operator and a scenario's
//! load, with the report written at the end.

use clap::Parser;
use omniscale_operator::cli::{Cli, Command};
use omniscale_sim::world::report::Timeline;

/// Runs `examples/<name>` for `duration` simulated seconds at 60x and returns its timeline.
async fn run_example(name: &str, duration: u32) -> (Timeline, std::path::PathBuf) {
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
        "60",
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
async fn php_apache_scenario_runs_and_reports() {
    // Two simulated minutes: load starts at one minute.
    let (timeline, dir) = run_example("php-apache", 120).await;
    let report = dir.join("report");
    assert_eq!(timeline.scenario, "php-apache");
    assert!(timeline.samples.len() >= 6, "one sample every 15 s over 2 minutes: {}", timeline.samples.len());
    let last = timeline.samples.last().unwrap();
    assert_eq!(last.ready_nodes, 3);
    let php = last.workloads.iter().find(|w| w.name == "php-apache").expect("php-apache sampled");
    assert_eq!(php.ready, 1);
    assert_eq!(php.cpu_request_millis, 200.0);
    // 100 rps at 4.8m each is 480m on one pod: 240% of the 200m request (below the 500m limit).
    let util = php.cpu_utilization_percent.expect("utilisation measured");
    assert!((util - 240.0).abs() < 1.0, "{util}");
    let before_load = &timeline.samples[1].workloads[0];
    assert!(before_load.cpu_utilization_percent.unwrap_or(0.0) < 5.0);
    let svg = std::fs::read_to_string(report.join("chart.svg")).unwrap();
    assert!(svg.starts_with("<svg") || svg.starts_with("<?xml"), "{}", &svg[..40]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hamster_scenario_burns_five_times_its_request() {
    let (timeline, dir) = run_example("hamster", 60).await;
    assert_eq!(timeline.scenario, "hamster");
    let last = timeline.samples.last().unwrap();
    let h = last.workloads.iter().find(|w| w.name == "hamster").expect("hamster sampled");
    assert_eq!((h.replicas, h.ready), (2, 2));
    assert_eq!(h.cpu_request_millis, 100.0);
    // ~500m used against a 100m request (the usage model has ±10% jitter).
    let util = h.cpu_utilization_percent.expect("utilisation measured");
    assert!((440.0..=560.0).contains(&util), "{util}");
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
