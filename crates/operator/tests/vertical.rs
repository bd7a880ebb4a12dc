#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]
//! The vertical shell against the simulated cluster: the hamster walkthrough's recommendation
//! is upstream's exactly, it is applied by resizing the running pods in place, and the
//! recommender's history survives an operator restart through the status checkpoints.

mod support;

use clap::Parser;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use omniscale_api::Autoscaler;
use omniscale_operator::cli::{Cli, Command};
use omniscale_sim::control::World;
use omniscale_sim::runtime::{self, SimOptions};
use omniscale_sim::world::load::ContainerUsage;
use omniscale_sim::world::scenario::{StaticNodes, WorkloadSpec};
use serde_json::json;
use std::collections::BTreeMap;
use std::time::Duration;

async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..600 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

struct Operator {
    stop: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<omniscale_operator::Result<()>>,
}

impl Operator {
    fn start(sim: &runtime::Running, kubeconfig: &std::path::Path, extra: &[&str]) -> Self {
        let mut argv = vec!["omniscale", "run", "--kubeconfig", kubeconfig.to_str().unwrap(), "--pod-name", "test"];
        argv.extend(["--http-addr", "127.0.0.1:0"]);
        if !extra.contains(&"--webhook-addr") {
            argv.extend(["--webhook-addr", "127.0.0.1:0"]);
        }
        argv.extend_from_slice(extra);
        let cli = Cli::try_parse_from(argv).unwrap();
        let Command::Run(args) = cli.command else { panic!("run args") };
        let stop = tokio_util::sync::CancellationToken::new();
        let task =
            tokio::spawn(omniscale_operator::run::run_with(*args, stop.clone(), sim.cluster.shared.clock.clone()));
        Operator { stop, task }
    }

    async fn stop(self) {
        self.stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.task).await;
    }
}

/// The hamster walkthrough on a simulated cluster: two pods requesting 100m / 50Mi that burn
/// about half a core each, and the walkthrough's Autoscaler with `update_mode`.
async fn hamster(update_mode: &str) -> (runtime::Running, kube::Client) {
    omniscale_operator::install_crypto_provider();
    let mut world = World::default();
    world.static_nodes = vec![StaticNodes::of_type("node", 2, "m5.large")];
    world.workloads = vec![WorkloadSpec {
        namespace: "default".into(),
        name: "hamster".into(),
        load: None,
        containers: BTreeMap::from([(
            "hamster".to_owned(),
            ContainerUsage { cpu_millis: 495.0, memory_mib: 8.0, jitter: 0.03 },
        )]),
    }];
    let sim = runtime::start(SimOptions { speed: 60.0, ..SimOptions::default() }, world).await.unwrap();
    let client = support::prepared_client(&sim).await;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/hamster");
    let d: Deployment = serde_yaml::from_str(&std::fs::read_to_string(dir.join("deployment.yaml")).unwrap()).unwrap();
    Api::<Deployment>::namespaced(client.clone(), "default").create(&PostParams::default(), &d).await.unwrap();
    let mut a: Autoscaler =
        serde_yaml::from_str(&std::fs::read_to_string(dir.join("autoscaler.yaml")).unwrap()).unwrap();
    let v = a.spec.vertical.as_mut().unwrap();
    v.update_policy.as_mut().unwrap().update_mode = Some(serde_json::from_value(json!(update_mode)).unwrap());
    Api::<Autoscaler>::namespaced(client.clone(), "default").create(&PostParams::default(), &a).await.unwrap();
    (sim, client)
}

fn kubeconfig(sim: &runtime::Running, tag: &str) -> std::path::PathBuf {
    let p = std::env::temp_dir().join(format!("omniscale-vertical-{}-{tag}.kubeconfig", std::process::id()));
    std::fs::write(&p, sim.kubeconfig()).unwrap();
    p
}

/// Names of the hamster pods.
async fn names(pods: &Api<Pod>) -> Vec<String> {
    let list = pods.list(&ListParams::default().labels("app=hamster")).await.unwrap().items;
    list.iter().map(|p| p.metadata.name.clone().unwrap()).collect()
}

/// cpu and memory requests of a pod's first container, as written.
fn requests(p: &Pod) -> (String, String) {
    let r = p.spec.as_ref().unwrap().containers[0].resources.as_ref().unwrap().requests.as_ref().unwrap();
    (r["cpu"].0.clone(), r["memory"].0.clone())
}

/// What the kubelet runs with (status.containerStatuses[0].resources), once a resize is done.
fn running_requests(p: &Pod) -> Option<(String, String)> {
    let cs = p.status.as_ref()?.container_statuses.as_ref()?.first()?;
    let r = cs.resources.as_ref()?.requests.as_ref()?;
    Some((r.get("cpu")?.0.clone(), r.get("memory")?.0.clone()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hamster_is_resized_in_place_to_upstreams_recommendation() {
    let (sim, client) = hamster("InPlaceOrRecreate").await;
    let kc = kubeconfig(&sim, "inplace");
    let op = Operator::start(&sim, &kc, &[]);
    let autoscalers: Api<Autoscaler> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let want = ("587m".to_owned(), "262144k".to_owned());
    let first: Vec<String> = {
        eventually("two running hamster pods", || async {
            pods.list(&ListParams::default().labels("app=hamster")).await.unwrap().items.len() == 2
        })
        .await;
        names(&pods).await
    };
    eventually("both pods running with the recommended requests", || async {
        let list = pods.list(&ListParams::default().labels("app=hamster")).await.unwrap().items;
        list.len() == 2 && list.iter().all(|p| requests(p) == want && running_requests(p).as_ref() == Some(&want))
    })
    .await;
    // Resized in place: the same pods, never evicted.
    assert_eq!(names(&pods).await, first);
    let a = autoscalers.get("hamster").await.unwrap();
    let v = a.status.as_ref().unwrap().vertical.as_ref().unwrap();
    let r = &v.recommendation.as_ref().unwrap().container_recommendations[0];
    assert_eq!((r.target["cpu"].0.as_str(), r.target["memory"].0.as_str()), ("587m", "262144k"));
    assert_eq!(r.upper_bound.as_ref().unwrap()["cpu"].0, "1");
    let conds = &a.status.as_ref().unwrap().conditions;
    let provided = conds.iter().find(|c| c.type_ == "RecommendationProvided").unwrap();
    assert_eq!(provided.status, "True");
    assert!(conds.iter().any(|c| c.type_ == "LowConfidence" && c.status == "True"));
    let cps = v.checkpoints.as_ref().unwrap();
    assert_eq!(cps[0].container_name, "hamster");
    assert!(cps[0].total_samples_count >= 4, "{}", cps[0].total_samples_count);

    // A new leader continues the history from the checkpoints: the sample count keeps
    // growing from where it was instead of starting over.
    op.stop().await;
    let before = autoscalers.get("hamster").await.unwrap().status.unwrap().vertical.unwrap().checkpoints.unwrap()[0]
        .total_samples_count;
    let op = Operator::start(&sim, &kc, &[]);
    eventually("a checkpoint written by the new leader", || async {
        let a = autoscalers.get("hamster").await.unwrap();
        let cps = a.status.unwrap().vertical.unwrap().checkpoints.unwrap();
        cps[0].total_samples_count > before
    })
    .await;
    let a = autoscalers.get("hamster").await.unwrap();
    let after = a.status.unwrap().vertical.unwrap();
    assert!(after.checkpoints.unwrap()[0].total_samples_count <= before + 6, "restored, not restarted");
    assert_eq!(after.recommendation.unwrap().container_recommendations[0].target["cpu"].0, "587m");
    op.stop().await;
    let _ = std::fs::remove_file(&kc);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn off_mode_recommends_without_touching_pods() {
    let (sim, client) = hamster("Off").await;
    let kc = kubeconfig(&sim, "off");
    let op = Operator::start(&sim, &kc, &[]);
    let autoscalers: Api<Autoscaler> = Api::namespaced(client.clone(), "default");
    eventually("a recommendation", || async {
        let a = autoscalers.get("hamster").await.unwrap();
        a.status
            .and_then(|s| s.vertical)
            .and_then(|v| v.recommendation)
            .is_some_and(|r| !r.container_recommendations.is_empty())
    })
    .await;
    // A few more intervals: requests stay as written.
    tokio::time::sleep(Duration::from_millis(3000)).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    for p in pods.list(&ListParams::default().labels("app=hamster")).await.unwrap().items {
        assert_eq!(requests(&p), ("100m".to_owned(), "50Mi".to_owned()));
    }
    // Horizontal on cpu takes cpu away from the vertical side by default.
    let patch = json!({"spec": {"horizontal": {"minReplicas": 2, "maxReplicas": 4, "metrics": [
        {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "AverageValue", "averageValue": "1"}}}]}}});
    autoscalers.patch("hamster", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    eventually("memory-only recommendation with cpu owned by horizontal", || async {
        let a = autoscalers.get("hamster").await.unwrap();
        let Some(v) = a.status.and_then(|s| s.vertical) else { return false };
        let owners = v.resource_owners.unwrap_or_default();
        let rec = v.recommendation.unwrap_or_default();
        owners.get("cpu") == Some(&omniscale_api::autoscaler::ResourceOwner::Horizontal)
            && rec.container_recommendations.first().is_some_and(|r| !r.target.contains_key("cpu"))
    })
    .await;
    op.stop().await;
    let _ = std::fs::remove_file(&kc);
    sim.shutdown().await;
}

/// Applies `manifests/04-webhook.yaml` and routes its Service to a free local port, returned
/// for the operator's `--webhook-addr`.
async fn install_webhook(sim: &runtime::Running, client: &kube::Client) -> String {
    use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
    use k8s_openapi::api::core::v1::Service;
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../manifests/04-webhook.yaml");
    for doc in serde_yaml::Deserializer::from_str(&std::fs::read_to_string(path).unwrap()) {
        let v: serde_json::Value = serde::Deserialize::deserialize(doc).unwrap();
        match v["kind"].as_str() {
            Some("Service") => {
                let s: Service = serde_json::from_value(v).unwrap();
                Api::<Service>::namespaced(client.clone(), "omniscale-system")
                    .create(&PostParams::default(), &s)
                    .await
                    .unwrap();
            }
            Some("MutatingWebhookConfiguration") => {
                let c: MutatingWebhookConfiguration = serde_json::from_value(v).unwrap();
                Api::<MutatingWebhookConfiguration>::all(client.clone())
                    .create(&PostParams::default(), &c)
                    .await
                    .unwrap();
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    sim.cluster.route_service("omniscale-system", "omniscale-webhook", addr);
    addr.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recreate_evicts_and_the_webhook_sets_requests_on_the_new_pods_over_tls() {
    let (sim, client) = hamster("Recreate").await;
    let addr = install_webhook(&sim, &client).await;
    let kc = kubeconfig(&sim, "recreate");
    let op = Operator::start(&sim, &kc, &["--webhook-addr", &addr]);
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let original: Vec<String> = {
        eventually("two hamster pods", || async {
            pods.list(&ListParams::default().labels("app=hamster")).await.unwrap().items.len() == 2
        })
        .await;
        names(&pods).await
    };
    let want = ("587m".to_owned(), "262144k".to_owned());
    eventually("two new pods created with the recommendation by the webhook", || async {
        let list = pods.list(&ListParams::default().labels("app=hamster")).await.unwrap().items;
        let live: Vec<&Pod> = list.iter().filter(|p| p.metadata.deletion_timestamp.is_none()).collect();
        live.len() == 2
            && live.iter().all(|p| {
                !original.contains(p.metadata.name.as_ref().unwrap())
                    && requests(p) == want
                    && p.metadata.annotations.as_ref().and_then(|a| a.get("vpaUpdates")).is_some_and(|u| {
                        u == "Pod resources updated by hamster: container 0: cpu request, memory request"
                    })
            })
    })
    .await;
    // The Deployment's template is untouched: only the pods were changed, at admission.
    let d = Api::<Deployment>::namespaced(client.clone(), "default").get("hamster").await.unwrap();
    let t = d.spec.unwrap().template.spec.unwrap().containers[0].resources.clone().unwrap().requests.unwrap();
    assert_eq!(t["cpu"].0, "100m");
    op.stop().await;
    let _ = std::fs::remove_file(&kc);
    sim.shutdown().await;
}
