//! Setup shared by the tests (and benchmarks) that run the operator against a simulated cluster.
// Each test binary uses part of it.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod moto;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, PostParams};
use omniscale_sim::runtime::Running;

/// A client for the simulated API server, with omniscale's CRDs and its namespace installed,
/// as `kubectl apply -f manifests/` would leave a cluster before the operator starts.
pub async fn prepared_client(sim: &Running) -> kube::Client {
    let client = kube::Client::try_from(kube::Config::new(sim.url.parse().unwrap())).unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for doc in serde_yaml::Deserializer::from_str(&omniscale_api::render_crds_yaml().unwrap()) {
        let crd: CustomResourceDefinition = serde::Deserialize::deserialize(doc).unwrap();
        crds.create(&PostParams::default(), &crd).await.unwrap();
    }
    let ns: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": "omniscale-system"}})).unwrap();
    Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &ns).await.unwrap();
    client
}

/// `omniscale run` against the simulated cluster on its clock, as the node tests start it: no
/// webhook, ephemeral ports, and `cloud` as the node shell's provider.
pub struct Operator {
    stop: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<omniscale_operator::Result<()>>,
    kubeconfig: std::path::PathBuf,
}

impl Operator {
    /// Starts it with `extra` flags appended; `name` keeps concurrent tests' kubeconfigs apart.
    pub fn start(
        sim: &Running,
        name: &str,
        extra: &[&str],
        cloud: std::sync::Arc<dyn omniscale_nodes::CloudProvider>,
    ) -> Operator {
        use clap::Parser;
        let kubeconfig = std::env::temp_dir().join(format!("omniscale-{name}-{}.kubeconfig", std::process::id()));
        std::fs::write(&kubeconfig, sim.kubeconfig()).unwrap();
        let mut argv = vec![
            "omniscale",
            "run",
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
            "--pod-name",
            name,
            "--http-addr",
            "127.0.0.1:0",
            "--disable-webhook",
        ];
        argv.extend_from_slice(extra);
        let cli = omniscale_operator::cli::Cli::try_parse_from(argv).unwrap();
        let omniscale_operator::cli::Command::Run(args) = cli.command else { panic!("run args") };
        let stop = tokio_util::sync::CancellationToken::new();
        let clock = sim.cluster.shared.clock.clone();
        let task = tokio::spawn(omniscale_operator::run::run_in(*args, stop.clone(), clock, Some(cloud)));
        Operator { stop, task, kubeconfig }
    }

    /// Stops it, waits (briefly) for it to step down, and removes its kubeconfig.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), self.task).await;
        let _ = std::fs::remove_file(&self.kubeconfig);
    }
}
