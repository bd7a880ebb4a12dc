//! Which kinds the cluster serves, and which of them have a `scale` subresource.
//!
//! Answers are cached per group/version for a minute: every Autoscaler reconcile asks, and
//! discovery documents change only when CRDs or the cluster version change.

use std::{collections::HashMap, sync::Mutex, time::Duration};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::APIResourceList;
use kube::Client;
use tokio::time::Instant;

use crate::validate::TargetKind;

const TTL: Duration = Duration::from_secs(60);

/// Discovery of scale targets through the API server.
pub struct TargetDiscovery {
    client: Client,
    cache: Mutex<HashMap<String, (Instant, Option<APIResourceList>)>>,
}

impl std::fmt::Debug for TargetDiscovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TargetDiscovery").finish_non_exhaustive()
    }
}

impl TargetDiscovery {
    /// Discovery through `client`.
    pub fn new(client: Client) -> Self {
        TargetDiscovery { client, cache: Mutex::new(HashMap::new()) }
    }

    /// What the cluster serves for `api_version` + `kind`.
    pub async fn kind_of(&self, api_version: &str, kind: &str) -> Result<TargetKind, kube::Error> {
        let cached = self.cache.lock().ok().and_then(|c| c.get(api_version).cloned());
        let list = match cached {
            Some((at, list)) if at.elapsed() < TTL => list,
            _ => {
                let fetched = self.fetch(api_version).await?;
                if let Ok(mut c) = self.cache.lock() {
                    c.insert(api_version.to_string(), (Instant::now(), fetched.clone()));
                }
                fetched
            }
        };
        Ok(classify(list.as_ref(), kind))
    }

    async fn fetch(&self, api_version: &str) -> Result<Option<APIResourceList>, kube::Error> {
        let result = if api_version.contains('/') {
            self.client.list_api_group_resources(api_version).await
        } else {
            self.client.list_core_api_resources(api_version).await
        };
        match result {
            Ok(list) => Ok(Some(list)),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// Classifies `kind` within a group/version's resource list (`None`: not served).
pub fn classify(list: Option<&APIResourceList>, kind: &str) -> TargetKind {
    let Some(list) = list else { return TargetKind::UnknownGroupVersion };
    let Some(resource) = list.resources.iter().find(|r| r.kind == kind && !r.name.contains('/')) else {
        return TargetKind::UnknownKind;
    };
    let plural = resource.name.clone();
    let scale = format!("{plural}/scale");
    if list.resources.iter().any(|r| r.name == scale) {
        TargetKind::Scalable { plural }
    } else {
        TargetKind::NotScalable { plural }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{Request, Response};
    use kube::client::Body;
    use serde_json::json;

    fn apps_v1() -> serde_json::Value {
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "apps/v1", "resources": [
            {"name": "deployments", "singularName": "deployment", "namespaced": true, "kind": "Deployment", "verbs": ["get"]},
            {"name": "deployments/scale", "singularName": "", "namespaced": true, "group": "autoscaling", "version": "v1", "kind": "Scale", "verbs": ["get", "patch"]},
            {"name": "daemonsets", "singularName": "daemonset", "namespaced": true, "kind": "DaemonSet", "verbs": ["get"]},
            {"name": "daemonsets/status", "singularName": "", "namespaced": true, "kind": "DaemonSet", "verbs": ["get"]}
        ]})
    }

    #[tokio::test]
    async fn discovers_scalable_kinds_and_caches_answers() {
        let (mock, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = Client::new(mock, "default");
        let d = TargetDiscovery::new(client);
        let server = tokio::spawn(async move {
            // Exactly two discovery requests: apps/v1 once (then cached), and a missing group.
            let (req, send) = handle.next_request().await.ok_or("no request")?;
            assert_eq!(req.uri().path(), "/apis/apps/v1");
            send.send_response(Response::builder().body(Body::from(serde_json::to_vec(&apps_v1())?))?);
            let (req, send) = handle.next_request().await.ok_or("no second request")?;
            assert_eq!(req.uri().path(), "/apis/example.com/v1");
            let status = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found"});
            send.send_response(Response::builder().status(404).body(Body::from(serde_json::to_vec(&status)?))?);
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
        });
        let got = |r: Result<TargetKind, kube::Error>| r.map_err(|e| e.to_string());
        assert_eq!(
            got(d.kind_of("apps/v1", "Deployment").await),
            Ok(TargetKind::Scalable { plural: "deployments".into() })
        );
        assert_eq!(
            got(d.kind_of("apps/v1", "DaemonSet").await),
            Ok(TargetKind::NotScalable { plural: "daemonsets".into() })
        );
        assert_eq!(got(d.kind_of("apps/v1", "Nope").await), Ok(TargetKind::UnknownKind));
        assert_eq!(got(d.kind_of("example.com/v1", "Widget").await), Ok(TargetKind::UnknownGroupVersion));
        match server.await {
            Ok(Ok(())) => {}
            other => panic!("mock server: {other:?}"),
        }
    }
}
