#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]
//! `omniscale plan`: decisions and explanations from files, and precise errors for bad input.

use omniscale_operator::cli::{Cli, Command, PlanArgs};
use omniscale_operator::plan;
use serde_json::Value;
use std::path::PathBuf;

fn example(p: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples").join(p)
}

fn args(extra: &[&str]) -> PlanArgs {
    let mut argv = vec!["omniscale", "plan"];
    argv.extend_from_slice(extra);
    let Command::Plan(a) = clap::Parser::try_parse_from(argv).map(|c: Cli| c.command).unwrap() else { panic!() };
    a
}

fn write(dir: &std::path::Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_string_lossy().into_owned()
}

#[test]
fn php_apache_snapshot_scales_up_within_the_rate_limit() {
    let a = example("php-apache/autoscaler.yaml");
    let c = example("php-apache/plan/cluster.yaml");
    let out =
        plan::run(&args(&["-o", "json", "--now", "2026-01-01T12:01:00Z", a.to_str().unwrap(), c.to_str().unwrap()]))
            .unwrap();
    let v: Value = serde_json::from_str(&out).unwrap();
    let a = &v["autoscalers"][0];
    assert_eq!((a["namespace"].as_str(), a["name"].as_str()), (Some("default"), Some("php-apache")));
    let h = &a["horizontal"];
    // 480m of a 200m request is 240% against a 50% target: ratio 4.8 → 5 pods, but the legacy
    // scale-up limit from 1 replica is max(2 × 1, 4) = 4.
    assert_eq!(h["currentReplicas"], 1);
    assert_eq!(h["proposedReplicas"], 5);
    assert_eq!(h["desiredReplicas"], 4);
    let m = &h["metrics"][0];
    assert_eq!((m["type"].as_str(), m["name"].as_str()), (Some("Resource"), Some("cpu")));
    assert_eq!(m["proposal"]["utilization"], 240);
    assert_eq!(m["proposal"]["readyPods"], 1);
    let limited = h["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "ScalingLimited").unwrap();
    assert_eq!((limited["status"].as_str(), limited["reason"].as_str()), (Some("True"), Some("ScaleUpLimit")));
    let table = plan::run(&args(&["--now", "2026-01-01T12:01:00Z", &autoscaler(), c.to_str().unwrap()])).unwrap();
    assert!(table.lines().nth(1).unwrap().contains("cpu 240% → 5; ScaleUpLimit"), "{table}");
}

fn autoscaler() -> String {
    example("php-apache/autoscaler.yaml").to_string_lossy().into_owned()
}

#[test]
fn a_pod_still_starting_is_not_trusted_for_cpu() {
    // Ten seconds after the pod started, its first cpu sample covers its start-up: the pod counts
    // as unready, and a lone unready pod leaves nothing to measure.
    let dir = std::env::temp_dir().join(format!("omniscale-plan-start-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let text = std::fs::read_to_string(example("php-apache/plan/cluster.yaml")).unwrap();
    let c = write(&dir, "starting.yaml", &text.replace("2026-01-01T12:00:50Z", "2026-01-01T11:40:12Z"));
    let out = plan::run(&args(&["-o", "json", "--now", "2026-01-01T11:40:15Z", &autoscaler(), &c])).unwrap();
    let v: Value = serde_json::from_str(&out).unwrap();
    let h = &v["autoscalers"][0]["horizontal"];
    assert_eq!(h["branch"], "metrics failed");
    assert_eq!(h["desiredReplicas"], 1);
    assert_eq!(h["metrics"][0]["error"]["reason"], "FailedGetResourceMetric");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_input_names_the_document_and_field() {
    let dir = std::env::temp_dir().join(format!("omniscale-plan-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = write(
        &dir,
        "bad.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n---\napiVersion: omniscale.dev/v1alpha1\nkind: Autoscaler\nmetadata: {name: web, namespace: team}\nspec:\n  targetRef: {apiVersion: apps/v1, kind: Deployment, name: web}\n  horizontal: {maxReplicas: ten}\n",
    );
    let e = plan::run(&args(&[&bad])).unwrap_err().to_string();
    assert!(e.contains("bad.yaml: document 2 (Autoscaler team/web): field spec.horizontal.maxReplicas:"), "{e}");
    let broken = write(&dir, "broken.yaml", "kind: [unclosed\n");
    let e = plan::run(&args(&[&broken])).unwrap_err().to_string();
    assert!(e.contains("broken.yaml: document 1: not YAML or JSON"), "{e}");
    let nothing = write(&dir, "empty.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n");
    assert!(plan::run(&args(&[&nothing])).unwrap_err().to_string().contains("no Autoscaler"));
    let e = plan::run(&args(&["--now", "yesterday", &nothing])).unwrap_err().to_string();
    assert!(e.contains("--now \"yesterday\""), "{e}");
    // A missing target is reported per Autoscaler, the others are still planned.
    let out = plan::run(&args(&["-o", "json", &autoscaler()])).unwrap();
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["autoscalers"][0]["errors"][0], "target Deployment default/php-apache is not in the input");
    assert!(v["autoscalers"][0]["horizontal"].is_null());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn custom_and_external_metrics_from_raw_api_answers() {
    let dir = std::env::temp_dir().join(format!("omniscale-plan-custom-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let input = r#"
apiVersion: omniscale.dev/v1alpha1
kind: Autoscaler
metadata: {name: worker, namespace: team}
spec:
  targetRef: {apiVersion: apps/v1, kind: Deployment, name: worker}
  horizontal:
    minReplicas: 1
    maxReplicas: 20
    metrics:
    - type: Pods
      pods: {metric: {name: rps}, target: {type: AverageValue, averageValue: "10"}}
    - type: External
      external: {metric: {name: queue, selector: {matchLabels: {queue: jobs}}}, target: {type: AverageValue, averageValue: "30"}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: worker, namespace: team}
spec: {replicas: 2, selector: {matchLabels: {app: worker}}}
status: {replicas: 2}
---
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Pod
  metadata: {name: worker-1, namespace: team, labels: {app: worker}}
  status: {phase: Running, conditions: [{type: Ready, status: "True"}]}
- apiVersion: v1
  kind: Pod
  metadata: {name: worker-2, namespace: team, labels: {app: worker}}
  status: {phase: Running, conditions: [{type: Ready, status: "True"}]}
---
kind: MetricValueList
apiVersion: custom.metrics.k8s.io/v1beta2
metadata: {}
items:
- {describedObject: {kind: Pod, namespace: team, name: worker-1, apiVersion: /v1}, metric: {name: rps}, timestamp: "2026-01-01T12:00:00Z", value: "12"}
- {describedObject: {kind: Pod, namespace: team, name: worker-2, apiVersion: /v1}, metric: {name: rps}, timestamp: "2026-01-01T12:00:00Z", value: "18"}
---
kind: ExternalMetricValueList
apiVersion: external.metrics.k8s.io/v1beta1
metadata: {}
items:
- {metricName: queue, metricLabels: {queue: jobs}, timestamp: "2026-01-01T12:00:00Z", value: "150"}
- {metricName: queue, metricLabels: {queue: mail}, timestamp: "2026-01-01T12:00:00Z", value: "9000"}
"#;
    let f = write(&dir, "worker.yaml", input);
    let out = plan::run(&args(&["-o", "json", "--now", "2026-01-01T12:00:10Z", &f])).unwrap();
    let v: Value = serde_json::from_str(&out).unwrap();
    let h = &v["autoscalers"][0]["horizontal"];
    // rps: 15 per pod against 10 → 3; queue (jobs only): 150 at 30 per replica → 5.
    assert_eq!(h["metrics"][0]["proposal"]["replicas"], 3, "{h}");
    assert_eq!(h["metrics"][1]["proposal"]["replicas"], 5, "{h}");
    assert_eq!(h["proposedReplicas"], 5);
    assert_eq!(h["desiredReplicas"], 4, "the legacy scale-up limit from 2 replicas is 4");
    assert!(h["explanation"][1].as_str().unwrap().starts_with("queue: "), "{h}");
    // Without the answers, the metrics fail and say what was missing.
    let only = write(&dir, "only.yaml", input.split("---\nkind: MetricValueList").next().unwrap());
    let out = plan::run(&args(&["-o", "json", "--now", "2026-01-01T12:00:10Z", &only])).unwrap();
    let v: Value = serde_json::from_str(&out).unwrap();
    let e = &v["autoscalers"][0]["horizontal"]["metrics"][1]["error"];
    assert_eq!(e["reason"], "FailedGetExternalMetric");
    assert!(e["message"].as_str().unwrap().contains("not in the input"), "{e}");
    let bad = write(&dir, "bad.yaml", &input.replace("value: \"150\"", "value: lots"));
    let err = plan::run(&args(&[&bad])).unwrap_err().to_string();
    assert!(err.contains("bad.yaml: document 5 item 1: field value"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn hamster_history_gives_upstreams_587m_and_262144k() {
    let a = example("hamster/autoscaler.yaml");
    let c = example("hamster/plan/cluster.yaml");
    let now = "2026-01-01T12:30:00Z";
    let out = plan::run(&args(&["-o", "json", "--now", now, a.to_str().unwrap(), c.to_str().unwrap()])).unwrap();
    let v: Value = serde_json::from_str(&out).unwrap();
    let vert = &v["autoscalers"][0]["vertical"];
    let rec = &vert["recommendation"]["containerRecommendations"][0];
    assert_eq!(rec["containerName"], "hamster");
    assert_eq!(rec["target"]["cpu"], "587m");
    assert_eq!(rec["target"]["memory"], "262144k");
    assert_eq!(rec["uncappedTarget"]["cpu"], "587m");
    // Half an hour of history: the upper bound is the policy's maximum, as written.
    assert_eq!(rec["upperBound"]["memory"], "500Mi");
    assert!(vert["explanation"][0].as_str().unwrap().contains("60 cpu samples"), "{vert}");
    let low = vert["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "LowConfidence").unwrap();
    assert_eq!(low["status"], "True");
    // Both pods are outside the bounds; the budget lets one be resized this round.
    assert_eq!(vert["updates"].as_array().unwrap().len(), 1, "{vert}");
    assert_eq!(vert["updates"][0]["action"], "Resize");
    let table = plan::run(&args(&["--now", now, a.to_str().unwrap(), c.to_str().unwrap()])).unwrap();
    assert!(table.contains("hamster: cpu 587m, memory 262144k"), "{table}");
    // Without history: only the pod minimum, and a condition saying why.
    let dir = std::env::temp_dir().join(format!("omniscale-plan-vpa-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let text = std::fs::read_to_string(&c).unwrap();
    let cut = text.find("- apiVersion: metrics.k8s.io/v1beta1").unwrap();
    let no_metrics = write(&dir, "no-metrics.yaml", &text[..cut]);
    let out = plan::run(&args(&["-o", "json", "--now", now, a.to_str().unwrap(), &no_metrics])).unwrap();
    let v: Value = serde_json::from_str(&out).unwrap();
    let vert = &v["autoscalers"][0]["vertical"];
    assert!(vert["recommendation"]["containerRecommendations"].as_array().unwrap().is_empty());
    let provided =
        vert["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "RecommendationProvided").unwrap();
    assert_eq!((provided["status"].as_str(), provided["reason"].as_str()), (Some("False"), Some("NoUsageData")));
}
