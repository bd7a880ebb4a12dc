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

// Nodes: NodePools, Nodes, Pods and the Auto Scaling Groups through the node engines.

fn nginx(p: &str) -> String {
    example(&format!("nginx-test/plan/{p}")).to_string_lossy().into_owned()
}

fn plan_json(extra: &[&str]) -> Value {
    let mut argv = vec!["-o", "json"];
    argv.extend_from_slice(extra);
    serde_json::from_str(&plan::run(&args(&argv)).unwrap()).unwrap()
}

fn pool<'a>(v: &'a Value, name: &str) -> &'a Value {
    v["nodePools"].as_array().unwrap().iter().find(|p| p["name"] == name).unwrap_or_else(|| panic!("{v}"))
}

const NGINX_NOW: &str = "2026-01-01T12:00:30Z";

#[test]
fn nginx_test_grows_spot_ng_to_its_maximum() {
    let v = plan_json(&["--now", NGINX_NOW, &nginx("cluster.yaml"), &nginx("asg.yaml")]);
    assert_eq!(v["autoscalers"], serde_json::json!([]), "NodePools alone are something to plan");
    assert_eq!(v["nodeWarnings"], serde_json::json!([]), "{v}");
    let p = &v["nodePools"][0];
    assert_eq!(p["name"], "spot-ng");
    assert_eq!(p["groups"], serde_json::json!(["spot-ng"]));
    // A mixed group is sized by its smallest type: t2.small, 940m allocatable, one 500m pod per
    // node. The group's maximum (and the pool's limit) is 5: 4 new nodes for 4 of the 7 pods.
    assert_eq!(p["nodeTemplates"][0]["allocatable"]["cpu"], "940m");
    assert_eq!(p["nodeTemplates"][0]["allocatable"]["memory"], "1572Mi");
    assert_eq!((p["desired"]["now"].as_u64(), p["desired"]["after"].as_u64()), (Some(1), Some(5)));
    assert_eq!(p["ready"], 1);
    assert_eq!(p["scaleUp"]["nodes"], 4);
    let g = &p["scaleUp"]["groups"][0];
    assert_eq!((g["name"].as_str(), g["from"].as_u64(), g["to"].as_u64()), (Some("spot-ng"), Some(1), Some(5)));
    assert_eq!(g["pods"].as_array().unwrap().len(), 4);
    let pending = p["pendingPods"].as_array().unwrap();
    let triggered: Vec<&Value> = pending.iter().filter(|x| x["triggered"] == true).collect();
    let not: Vec<&Value> = pending.iter().filter(|x| x["triggered"] == false).collect();
    assert_eq!((triggered.len(), not.len()), (4, 3), "{pending:?}");
    assert!(triggered.iter().all(|x| x["groups"] == serde_json::json!(["spot-ng"])));
    for x in &not {
        assert_eq!(x["reason"], "spot-ng: max node group size reached (5)", "{x}");
        assert!(!g["pods"].as_array().unwrap().contains(&x["pod"]), "a pod is either triggered or not");
    }
    // No scale-down in a loop that scales up; the pool cannot grow any more after this plan.
    assert_eq!(p["scaleDown"]["nodes"], serde_json::json!([]));
    assert!(p["scaleDown"]["skipped"].as_str().unwrap().contains("scales up"));
    assert_eq!(
        (p["canScaleUp"]["status"].as_str(), p["canScaleUp"]["reason"].as_str()),
        (Some("False"), Some("AtMaximum"))
    );
    let table = plan::run(&args(&["--now", NGINX_NOW, &nginx("cluster.yaml"), &nginx("asg.yaml")])).unwrap();
    let row = table.lines().nth(1).unwrap();
    assert!(row.starts_with("spot-ng") && row.contains("1 → 5") && row.contains("+4"), "{table}");
    assert!(table.contains("pod default/nginx-7c5ddbdf54-9dmwl triggers scale-up: spot-ng"), "{table}");
    assert_eq!(table.matches("fits no group: spot-ng: max node group size reached (5)").count(), 3, "{table}");
}

#[test]
fn a_pod_that_does_not_tolerate_the_taint_fits_no_group() {
    let files = [nginx("cluster.yaml"), nginx("asg.yaml"), nginx("tainted.yaml")];
    let v = plan_json(&["--now", NGINX_NOW, &files[0], &files[1], &files[2]]);
    let batch = pool(&v, "batch");
    assert_eq!(batch["groups"], serde_json::json!(["batch-ng"]));
    assert_eq!(batch["nodeTemplates"][0]["taints"], serde_json::json!(["dedicated=batch:NoSchedule"]));
    assert_eq!(batch["scaleUp"]["nodes"], 0);
    let report = "batch/nightly-report-29001-x7k2p";
    let pod = batch["pendingPods"].as_array().unwrap().iter().find(|x| x["pod"] == report).unwrap();
    assert_eq!(pod["triggered"], false);
    let why = pod["reason"].as_str().unwrap();
    assert!(why.contains("batch-ng: ") && why.contains("node(s) had untolerated taint {dedicated: batch}"), "{why}");
    // spot-ng's plan is unchanged by the tainted pool.
    assert_eq!(pool(&v, "spot-ng")["scaleUp"]["nodes"], 4);
    let table = plan::run(&args(&["--now", NGINX_NOW, &files[0], &files[1], &files[2]])).unwrap();
    assert!(table.contains(&format!("pod {report} fits no group: spot-ng: ")), "{table}");
    assert!(table.contains("group batch-ng: a new node has 1930m cpu"), "{table}");
    // With the toleration, batch-ng grows by one node for it.
    let dir = std::env::temp_dir().join(format!("omniscale-plan-taint-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let text = std::fs::read_to_string(&files[2]).unwrap();
    let tolerating = text.replace(
        "    nodeSelector: {workload: batch}\n",
        "    nodeSelector: {workload: batch}\n    tolerations: [{key: dedicated, value: batch, effect: NoSchedule}]\n",
    );
    assert_ne!(text, tolerating);
    let f = write(&dir, "tainted.yaml", &tolerating);
    let v = plan_json(&["--now", NGINX_NOW, &files[0], &files[1], &f]);
    let batch = pool(&v, "batch");
    assert_eq!(batch["scaleUp"]["nodes"], 1, "{batch}");
    assert_eq!(batch["scaleUp"]["groups"][0]["pods"], serde_json::json!([report]));
    let pod = batch["pendingPods"].as_array().unwrap().iter().find(|x| x["pod"] == report).unwrap();
    assert_eq!((pod["triggered"].as_bool(), &pod["groups"]), (Some(true), &serde_json::json!(["batch-ng"])));
    // A pod triggered in one pool is not listed in another's.
    let spot = pool(&v, "spot-ng")["pendingPods"].as_array().unwrap();
    assert!(spot.iter().all(|x| x["pod"] != report));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn scale_down_reports_unneeded_and_blocked_nodes() {
    let now = "2026-01-01T12:20:00Z";
    let v = plan_json(&["--now", now, &nginx("scale-down.yaml")]);
    let p = pool(&v, "spot-ng");
    assert_eq!(p["scaleUp"]["nodes"], 0);
    let down = &p["scaleDown"];
    assert!(down["skipped"].is_null(), "{down}");
    let nodes = down["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 1, "{down}");
    let n = &nodes[0];
    assert_eq!((n["name"].as_str(), n["group"].as_str()), (Some("ip-10-0-2-41.ec2.internal"), Some("spot-ng")));
    assert_eq!((n["empty"].as_bool(), n["removable"].as_bool()), (Some(false), Some(false)));
    assert_eq!(n["evict"], serde_json::json!(["default/nginx-7c5ddbdf54-9dmwl"]));
    assert_eq!(n["unneededSince"], now, "offline, a node is unneeded since --now");
    let wait = n["waitingFor"].as_str().unwrap();
    assert!(wait.contains("removal after 10m") && wait.contains("unneededTime"), "{wait}");
    assert_eq!(down["blocked"][0]["node"], "ip-10-0-1-88.ec2.internal");
    let blocked = down["blocked"][0]["reason"].as_str().unwrap();
    assert!(blocked.contains("default/report-28950120-kq7vd") && blocked.contains("safe-to-evict=false"), "{blocked}");
    assert_eq!(down["utilized"][0]["node"], "ip-10-0-1-17.ec2.internal");
    let table = plan::run(&args(&["--now", now, &nginx("scale-down.yaml")])).unwrap();
    assert!(
        table.contains("node ip-10-0-2-41.ec2.internal unneeded (evicts default/nginx-7c5ddbdf54-9dmwl), waits: "),
        "{table}"
    );
    assert!(table.contains("node ip-10-0-1-88.ec2.internal stays: pod default/report-28950120-kq7vd"), "{table}");
    // With no unneeded time the node goes now, its pod evicted first.
    let dir = std::env::temp_dir().join(format!("omniscale-plan-down-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let text =
        std::fs::read_to_string(nginx("scale-down.yaml")).unwrap().replace("unneededTime: 10m", "unneededTime: 0s");
    let f = write(&dir, "scale-down.yaml", &text);
    let v = plan_json(&["--now", now, &f]);
    let n = &pool(&v, "spot-ng")["scaleDown"]["nodes"][0];
    assert_eq!((n["name"].as_str(), n["removable"].as_bool()), (Some("ip-10-0-2-41.ec2.internal"), Some(true)));
    assert!(n["waitingFor"].is_null(), "{n}");
    assert_eq!(n["evict"], serde_json::json!(["default/nginx-7c5ddbdf54-9dmwl"]));
    let table = plan::run(&args(&["--now", now, &f])).unwrap();
    assert!(
        table.contains("ip-10-0-2-41.ec2.internal unneeded (evicts default/nginx-7c5ddbdf54-9dmwl), removed now"),
        "{table}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

const AWS_OUTPUT: &str = r#"{
    "AutoScalingGroups": [
        {
            "AutoScalingGroupName": "spot-ng",
            "AutoScalingGroupARN": "arn:aws:autoscaling:us-east-1:111122223333:autoScalingGroup:1f2e3d4c:autoScalingGroupName/spot-ng",
            "MixedInstancesPolicy": {
                "LaunchTemplate": {
                    "LaunchTemplateSpecification": {"LaunchTemplateId": "lt-0123456789abcdef0", "LaunchTemplateName": "spot-ng", "Version": "$Latest"},
                    "Overrides": [{"InstanceType": "t3.small"}, {"InstanceType": "t2.small"}]
                },
                "InstancesDistribution": {"OnDemandBaseCapacity": 0, "OnDemandPercentageAboveBaseCapacity": 50, "SpotAllocationStrategy": "price-capacity-optimized"}
            },
            "MinSize": 1,
            "MaxSize": 5,
            "DesiredCapacity": 1,
            "DefaultCooldown": 300,
            "AvailabilityZones": ["us-east-1a", "us-east-1b"],
            "HealthCheckType": "EC2",
            "HealthCheckGracePeriod": 300,
            "Instances": [
                {"InstanceId": "i-0a1b2c3d4e5f60001", "InstanceType": "t3.small", "AvailabilityZone": "us-east-1a", "LifecycleState": "InService",
                 "HealthStatus": "Healthy", "LaunchTemplate": {"LaunchTemplateId": "lt-0123456789abcdef0", "LaunchTemplateName": "spot-ng", "Version": "1"}, "ProtectedFromScaleIn": false},
                {"InstanceId": "i-0a1b2c3d4e5f60009", "InstanceType": "t2.small", "AvailabilityZone": "us-east-1b", "LifecycleState": "Terminating",
                 "HealthStatus": "Unhealthy", "ProtectedFromScaleIn": false}
            ],
            "CreatedTime": "2026-01-01T10:00:00.000Z",
            "SuspendedProcesses": [],
            "VPCZoneIdentifier": "subnet-0aaa,subnet-0bbb",
            "EnabledMetrics": [],
            "Tags": [
                {"ResourceId": "spot-ng", "ResourceType": "auto-scaling-group", "Key": "k8s.io/cluster-autoscaler/enabled", "Value": "true", "PropagateAtLaunch": false},
                {"ResourceId": "spot-ng", "ResourceType": "auto-scaling-group", "Key": "k8s.io/cluster-autoscaler/demo", "Value": "owned", "PropagateAtLaunch": false}
            ],
            "TerminationPolicies": ["Default"],
            "NewInstancesProtectedFromScaleIn": false,
            "CapacityRebalance": true
        }
    ]
}"#;

#[test]
fn aws_cli_output_is_read_as_it_is() {
    let dir = std::env::temp_dir().join(format!("omniscale-plan-aws-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let asg = write(&dir, "asg.json", AWS_OUTPUT);
    let v = plan_json(&["--now", NGINX_NOW, &nginx("cluster.yaml"), &asg]);
    let p = pool(&v, "spot-ng");
    // The same group as examples/nginx-test/plan/asg.yaml: the same plan.
    assert_eq!(p["groups"], serde_json::json!(["spot-ng"]));
    assert_eq!(p["nodeTemplates"][0]["allocatable"]["cpu"], "940m");
    assert_eq!(p["scaleUp"]["nodes"], 4);
    assert_eq!(
        (p["scaleUp"]["groups"][0]["from"].as_u64(), p["scaleUp"]["groups"][0]["to"].as_u64()),
        (Some(1), Some(5))
    );
    assert_eq!(p["pendingPods"].as_array().unwrap().iter().filter(|x| x["triggered"] == false).count(), 3);
    let yaml = plan_json(&["--now", NGINX_NOW, &nginx("cluster.yaml"), &nginx("asg.yaml")]);
    assert_eq!(yaml["nodePools"], v["nodePools"]);
    // Given twice, identically (one group of the list on its own): fine. Differently: an error.
    let one: Value = serde_json::from_str(AWS_OUTPUT).unwrap();
    let single = write(&dir, "one.json", &one["AutoScalingGroups"][0].to_string());
    plan::run(&args(&["--now", NGINX_NOW, &nginx("cluster.yaml"), &asg, &single])).unwrap();
    let e = plan::run(&args(&["--now", NGINX_NOW, &nginx("cluster.yaml"), &asg, &nginx("asg.yaml")]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("asg.yaml: document 1 (AutoScalingGroup spot-ng): AutoScalingGroup spot-ng is also in "), "{e}");
    // An instance type the shipped table does not know is an error naming where it is.
    let bad = write(
        &dir,
        "bad.json",
        &AWS_OUTPUT.replace(r#"{"InstanceType": "t2.small"}"#, r#"{"InstanceType": "m7i.large"}"#),
    );
    let e = plan::run(&args(&[&nginx("cluster.yaml"), &bad])).unwrap_err().to_string();
    assert!(
        e.contains("bad.json: document 1 AutoScalingGroups[0] (AutoScalingGroup spot-ng): field MixedInstancesPolicy.LaunchTemplate.Overrides[1].InstanceType: instance type \"m7i.large\" is not in the shipped us-east-1 table"),
        "{e}"
    );
    let bad = write(&dir, "bad2.json", &AWS_OUTPUT.replace(r#""MaxSize": 5"#, r#""MaxSize": "five""#));
    let e = plan::run(&args(&[&nginx("cluster.yaml"), &bad])).unwrap_err().to_string();
    assert!(e.contains("(AutoScalingGroup spot-ng): field MaxSize: invalid type"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_node_input_names_the_document_and_field() {
    let dir = std::env::temp_dir().join(format!("omniscale-plan-nodes-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let asg = std::fs::read_to_string(nginx("asg.yaml")).unwrap();
    let cases = [
        (asg.replace("maxSize: 5", "maxSize: five"), "(AutoScalingGroup spot-ng): field maxSize: invalid type"),
        (asg.replace("maxSize: 5", "maxsize: 5"), "(AutoScalingGroup spot-ng): field maxsize: unknown field `maxsize`"),
        (
            asg.replace("desiredCapacity: 1", "desiredCapacity: 7"),
            "field desiredCapacity: 7 is outside minSize..maxSize (1..5)",
        ),
        (
            asg.replace("[t3.small, t2.small]", "[t3.small, t9.huge]"),
            "field instanceTypes[1]: instance type \"t9.huge\" is not in",
        ),
        (asg.replace("name: spot-ng\n", ""), "document 1 (AutoScalingGroup ): field name: required"),
    ];
    for (i, (text, want)) in cases.iter().enumerate() {
        let f = write(&dir, &format!("asg-{i}.yaml"), text);
        let e = plan::run(&args(&[&nginx("cluster.yaml"), &f])).unwrap_err().to_string();
        assert!(e.contains(&format!("asg-{i}.yaml: document 1 ")) && e.contains(want), "{e}\nwanted {want}");
    }
    let node = write(&dir, "node.yaml", "apiVersion: v1\nkind: Node\nmetadata: {name: n1}\nspec: {taints: oops}\n");
    let e = plan::run(&args(&[&nginx("cluster.yaml"), &node])).unwrap_err().to_string();
    assert!(e.contains("node.yaml: document 1 (Node n1): field spec.taints:"), "{e}");
    let pool =
        std::fs::read_to_string(nginx("cluster.yaml")).unwrap().replace("limits: {nodes: 5}", "limits: {nodes: 3}");
    let pool = write(&dir, "pool.yaml", &pool);
    let e = plan::run(&args(&[&nginx("cluster.yaml"), &pool])).unwrap_err().to_string();
    assert!(e.contains("pool.yaml: document 1 item 1 (NodePool spot-ng): NodePool spot-ng is also in "), "{e}");
    // What the engines cannot use is a warning, not an error: here, no group for the pool, and
    // a node whose instance is in no group.
    let v = plan_json(&[&nginx("cluster.yaml")]);
    let warnings: Vec<&str> = v["nodeWarnings"].as_array().unwrap().iter().map(|w| w.as_str().unwrap()).collect();
    assert!(
        warnings.iter().any(|w| w.contains("NodePool spot-ng: no Auto Scaling Group in the input")),
        "{warnings:?}"
    );
    assert!(
        warnings.iter().any(|w| w.contains("instance i-0a1b2c3d4e5f60001 is in no AutoScalingGroup")),
        "{warnings:?}"
    );
    assert_eq!(pool_of(&v)["canScaleUp"]["reason"], "NoGroupsFound");
    let _ = std::fs::remove_dir_all(&dir);
}

fn pool_of(v: &Value) -> &Value {
    &v["nodePools"][0]
}

#[test]
fn expander_and_node_ceiling_flags() {
    let a = args(&["--expander", "priority,least-waste", "--max-nodes-total", "3", "x.yaml"]);
    assert_eq!(a.expander.0.len(), 2);
    assert_eq!(a.max_nodes_total, Some(3));
    let bad = clap::Parser::try_parse_from(["omniscale", "plan", "--expander", "cheapest", "x.yaml"]).map(|_: Cli| ());
    assert!(bad.unwrap_err().to_string().contains("unknown expander \"cheapest\""));
    // --max-nodes-total 3 leaves room for 2 of the 4 nodes nginx-test wants.
    let v = plan_json(&["--now", NGINX_NOW, "--max-nodes-total", "3", &nginx("cluster.yaml"), &nginx("asg.yaml")]);
    let p = pool(&v, "spot-ng");
    assert_eq!(p["scaleUp"]["nodes"], 2, "{p}");
    let not: Vec<&str> = p["pendingPods"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["triggered"] == false)
        .map(|x| x["reason"].as_str().unwrap())
        .collect();
    assert_eq!(not.len(), 5);
    assert!(not.iter().all(|r| r.contains("max-nodes-total (3) reached")), "{not:?}");
}

/// Scale from zero for GPUs, from the plan's files: the group's `node-template/resources` tag
/// gives its new nodes `nvidia.com/gpu`, so a pod asking for one GPU grows it and a pod asking
/// for two is told the group's nodes have too few.
#[test]
fn gpu_group_scales_from_zero_through_its_resources_tag() {
    let dir = std::env::temp_dir().join(format!("omniscale-plan-gpu-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pod = |name: &str, gpus: u32| {
        format!(
            r#"- apiVersion: v1
  kind: Pod
  metadata:
    name: {name}
    namespace: ml
    ownerReferences: [{{apiVersion: batch/v1, kind: Job, name: {name}, uid: uid-{name}, controller: true}}]
  spec:
    tolerations: [{{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}}]
    containers:
    - name: train
      image: trainer:1
      resources:
        requests: {{cpu: "1", memory: 2Gi, nvidia.com/gpu: "{gpus}"}}
        limits: {{nvidia.com/gpu: "{gpus}"}}
  status:
    phase: Pending
    conditions: [{{type: PodScheduled, status: "False", reason: Unschedulable, message: "0/1 nodes are available"}}]
"#
        )
    };
    let text = format!(
        r#"apiVersion: v1
kind: List
items:
- apiVersion: omniscale.dev/v1alpha1
  kind: NodePool
  metadata: {{name: gpu}}
  spec:
    autoScalingGroup: {{name: gpu-ng}}
- apiVersion: omniscale.dev/v1alpha1
  kind: AutoScalingGroup
  name: gpu-ng
  minSize: 0
  maxSize: 4
  desiredCapacity: 0
  instanceTypes: [m5.xlarge]
  availabilityZones: [us-east-1a]
  tags:
    k8s.io/cluster-autoscaler/node-template/resources/nvidia.com/gpu: "1"
    k8s.io/cluster-autoscaler/node-template/taint/nvidia.com/gpu: "present:NoSchedule"
{}{}{}"#,
        pod("train-a", 1),
        pod("train-b", 1),
        pod("train-wide", 2)
    );
    let f = write(&dir, "gpu.yaml", &text);
    let v = plan_json(&["--now", NGINX_NOW, &f]);
    let gpu = pool(&v, "gpu");
    assert_eq!(gpu["nodeTemplates"][0]["allocatable"]["nvidia.com/gpu"], 1, "{gpu}");
    assert_eq!(gpu["scaleUp"]["nodes"], 2, "{gpu}");
    let pending = gpu["pendingPods"].as_array().unwrap();
    let of = |name: &str| pending.iter().find(|x| x["pod"] == format!("ml/{name}")).unwrap();
    assert_eq!(of("train-a")["triggered"], true);
    assert_eq!(of("train-b")["triggered"], true);
    assert_eq!(of("train-wide")["triggered"], false);
    let why = of("train-wide")["reason"].as_str().unwrap();
    assert!(why.contains("gpu-ng: ") && why.contains("Insufficient nvidia.com/gpu"), "{why}");
    let table = plan::run(&args(&["--now", NGINX_NOW, &f])).unwrap();
    assert!(table.contains("1 nvidia.com/gpu"), "{table}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A NotReady node is reported with since when, waits the pool's unreadyTime, then goes (its
/// pods evicted) whatever its utilisation.
#[test]
fn a_not_ready_node_is_removed_after_unready_time() {
    let text = std::fs::read_to_string(nginx("scale-down.yaml")).unwrap();
    let (head, tail) = text.split_once("name: ip-10-0-2-41.ec2.internal").unwrap();
    let tail = tail.replacen(
        r#"{type: Ready, status: "True", lastTransitionTime: "2026-01-01T11:00:00Z"}"#,
        r#"{type: Ready, status: "Unknown", lastTransitionTime: "2026-01-01T12:00:00Z"}"#,
        1,
    );
    let text = format!("{head}name: ip-10-0-2-41.ec2.internal{tail}");
    let dir = std::env::temp_dir().join(format!("omniscale-plan-unready-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = write(&dir, "scale-down.yaml", &text);
    let node = |now: &str| {
        let v = plan_json(&["--now", now, &f]);
        let nodes = pool(&v, "spot-ng")["scaleDown"]["nodes"].as_array().unwrap().clone();
        nodes.into_iter().find(|n| n["name"] == "ip-10-0-2-41.ec2.internal").unwrap()
    };
    let n = node("2026-01-01T12:10:00Z");
    assert_eq!(n["notReadySince"], "2026-01-01T12:00:00Z", "{n}");
    assert_eq!(n["removable"], false);
    let wait = n["waitingFor"].as_str().unwrap();
    assert!(wait.starts_with("not ready for 10m, removal after 20m") && wait.contains("unreadyTime"), "{wait}");
    let n = node("2026-01-01T12:20:00Z");
    assert_eq!(
        (n["removable"].as_bool(), &n["evict"]),
        (Some(true), &serde_json::json!(["default/nginx-7c5ddbdf54-9dmwl"]))
    );
    let table = plan::run(&args(&["--now", "2026-01-01T12:20:00Z", &f])).unwrap();
    assert!(
        table.contains("node ip-10-0-2-41.ec2.internal not ready (evicts default/nginx-7c5ddbdf54-9dmwl), removed now"),
        "{table}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
