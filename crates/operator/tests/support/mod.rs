//! Setup shared by the tests (and benchmarks) that run the operator against a simulated cluster.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

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
