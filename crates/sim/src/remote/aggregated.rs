//! The simulated metrics, served to a real kube-apiserver as aggregated APIs: an HTTPS server on
//! loopback answering `metrics.k8s.io/v1beta1`, `custom.metrics.k8s.io/v1beta2` and
//! `external.metrics.k8s.io/v1beta1` from the world's [`MetricsTable`], and the objects that
//! register it (an ExternalName Service to `localhost` and one APIService per group/version,
//! with the serving CA as `caBundle`). Clients (upstream HPA, omniscale) then read metrics
//! through kube-apiserver exactly as they read metrics-server's and an adapter's.
//!
//! kube-apiserver authenticates itself to this server with its front-proxy client certificate;
//! the metrics are not secret, so the server accepts every caller.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::error::{ApiError, Error};
use crate::metrics_api;
use crate::selector::LabelSelector;
use crate::server::MetricsTable;

/// Field manager of the registration objects.
const MANAGER: &str = "omniscale-sim";

/// The serving certificate for `<service>.<namespace>.svc` and the CA that signed it.
struct Tls {
    config: Arc<rustls::ServerConfig>,
    ca_pem: String,
}

fn tls(service: &str, namespace: &str) -> Result<Tls, Error> {
    let err = |e: rcgen::Error| Error::Config(format!("metrics API certificate: {e}"));
    let ca_key = rcgen::KeyPair::generate().map_err(err)?;
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(err)?;
    ca.distinguished_name.push(rcgen::DnType::CommonName, "omniscale-sim-metrics-ca");
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::DigitalSignature];
    let ca_pem = ca.self_signed(&ca_key).map_err(err)?.pem();
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = rcgen::KeyPair::generate().map_err(err)?;
    let names = vec![format!("{service}.{namespace}.svc"), format!("{service}.{namespace}.svc.cluster.local")];
    let mut params = rcgen::CertificateParams::new(names).map_err(err)?;
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.signed_by(&key, &issuer).map_err(err)?;
    let chain = vec![cert.der().clone()];
    let private = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der())
        .map_err(|e| Error::Config(format!("metrics API key: {e}")))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(format!("metrics API TLS: {e}")))?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(|e| Error::Config(format!("metrics API TLS: {e}")))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Tls { config: Arc::new(config), ca_pem })
}

/// A running metrics server, registered with the API server.
#[derive(Debug)]
pub struct MetricsServer {
    /// Where it listens.
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl MetricsServer {
    /// Stops serving (the APIServices stay; they turn unavailable).
    pub fn abort(&self) {
        self.task.abort();
    }
}

/// The names of the pods in a namespace that a selector matches (custom metrics by selector).
pub type PodSelector = Arc<dyn Fn(&str, &LabelSelector) -> BTreeSet<String> + Send + Sync>;

/// Serves `table` on `opts.listen` and registers it with the API server behind `client` as
/// Service `opts.namespace/opts.service`; returns once kube-apiserver reports every APIService
/// Available.
pub async fn start(
    client: kube::Client,
    table: Arc<RwLock<MetricsTable>>,
    pods: PodSelector,
    clock: Clock,
    opts: &super::RemoteOptions,
    cancel: CancellationToken,
) -> Result<MetricsServer, Error> {
    let (namespace, service) = (opts.namespace.as_str(), opts.service.as_str());
    let tls = tls(service, namespace)?;
    let listener = tokio::net::TcpListener::bind(opts.listen).await?;
    let addr = listener.local_addr()?;
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.config.clone());
    let handler = Handler { table, pods, clock };
    let task = tokio::spawn(serve(listener, acceptor, handler, cancel));
    register(&client, namespace, service, addr.port(), &tls.ca_pem).await?;
    wait_available(&client, Duration::from_secs(60)).await?;
    Ok(MetricsServer { addr, task })
}

#[derive(Clone)]
struct Handler {
    table: Arc<RwLock<MetricsTable>>,
    pods: PodSelector,
    clock: Clock,
}

async fn serve(
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    handler: Handler,
    cancel: CancellationToken,
) {
    loop {
        let (tcp, _) = tokio::select! {
            () = cancel.cancelled() => return,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics API: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let (acceptor, handler, cancel) = (acceptor.clone(), handler.clone(), cancel.clone());
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "metrics API: TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let service = hyper::service::service_fn(move |req| {
                let handler = handler.clone();
                async move { Ok::<_, std::convert::Infallible>(handler.answer(&req)) }
            });
            let conn = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tls), service);
            tokio::select! {
                r = conn => if let Err(e) = r { tracing::debug!(error = %e, "metrics API connection"); },
                () = cancel.cancelled() => {}
            }
        });
    }
}

fn json(code: u16, v: &Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(serde_json::to_vec(v).unwrap_or_default())));
    *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    r
}

/// The `labelSelector` of a query string.
fn label_selector(query: Option<&str>) -> Result<LabelSelector, ApiError> {
    for pair in query.unwrap_or_default().split('&') {
        if let Some(v) = pair.strip_prefix("labelSelector=") {
            let decoded = crate::server::decode(v);
            return LabelSelector::parse(&decoded).map_err(ApiError::bad_request);
        }
    }
    Ok(LabelSelector::everything())
}

impl Handler {
    fn answer<B>(&self, req: &Request<B>) -> Response<Full<Bytes>> {
        if req.method() != hyper::Method::GET {
            return json(405, &ApiError::method_not_allowed("metrics are read-only").status());
        }
        let path = req.uri().path().trim_end_matches('/');
        let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        match self.route(&segs, req.uri().query()) {
            Ok(v) => json(200, &v),
            Err(e) => json(e.code, &e.status()),
        }
    }

    fn route(&self, segs: &[&str], query: Option<&str>) -> Result<Value, ApiError> {
        let labels = label_selector(query)?;
        let now = crate::store::ts(self.clock.now());
        let table = self.table.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        match segs {
            ["healthz" | "readyz" | "livez"] => Ok(json!("ok")),
            ["apis", g, v] => metrics_api::discovery(g, v).ok_or_else(|| ApiError::not_found("group version", v)),
            ["apis", "metrics.k8s.io", "v1beta1", "namespaces", ns, "pods"] => {
                metrics_api::resource_metrics(&table, "pods", Some(ns), None, &labels)
            }
            ["apis", "metrics.k8s.io", "v1beta1", "namespaces", ns, "pods", name] => {
                metrics_api::resource_metrics(&table, "pods", Some(ns), Some(name), &labels)
            }
            ["apis", "metrics.k8s.io", "v1beta1", plural @ ("pods" | "nodes")] => {
                metrics_api::resource_metrics(&table, plural, None, None, &labels)
            }
            ["apis", "metrics.k8s.io", "v1beta1", "nodes", name] => {
                metrics_api::resource_metrics(&table, "nodes", None, Some(name), &labels)
            }
            ["apis", "custom.metrics.k8s.io", "v1beta2", rest @ ..] => {
                let selected = match rest {
                    ["namespaces", ns, "pods", ..] if !labels.is_empty() => Some((self.pods)(ns, &labels)),
                    _ => None,
                };
                metrics_api::custom_metrics(&table, rest, &now, metrics_api::well_known_kind, selected.as_ref())
            }
            ["apis", "external.metrics.k8s.io", "v1beta1", rest @ ..] => {
                metrics_api::external_metrics(&table, rest, &now, &labels)
            }
            _ => Err(ApiError::not_found("path", &segs.join("/"))),
        }
    }
}

/// The Namespace, ExternalName Service and APIServices that point kube-apiserver at `port`.
async fn register(client: &kube::Client, namespace: &str, service: &str, port: u16, ca_pem: &str) -> Result<(), Error> {
    use base64::Engine as _;
    let pp = PatchParams::apply(MANAGER).force();
    let ns_api: Api<DynamicObject> = Api::all_with(client.clone(), &core("Namespace", "namespaces"));
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}});
    ns_api.patch(namespace, &pp, &Patch::Apply(&ns)).await?;
    let svc_api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &core("Service", "services"));
    let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": service, "namespace": namespace},
        "spec": {"type": "ExternalName", "externalName": "localhost",
                 "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}});
    svc_api.patch(service, &pp, &Patch::Apply(&svc)).await?;
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &api_service());
    for (group, version) in metrics_api::GROUP_VERSIONS {
        let name = format!("{version}.{group}");
        let obj = json!({"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService", "metadata": {"name": name},
            "spec": {"group": group, "version": version, "groupPriorityMinimum": 100, "versionPriority": 100,
                     "caBundle": ca, "service": {"namespace": namespace, "name": service, "port": port}}});
        api.patch(&name, &pp, &Patch::Apply(&obj)).await?;
    }
    Ok(())
}

fn core(kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("", "v1", kind), plural)
}

fn api_service() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("apiregistration.k8s.io", "v1", "APIService"),
        "apiservices",
    )
}

/// Waits until every APIService reports `Available=True`.
async fn wait_available(client: &kube::Client, limit: Duration) -> Result<(), Error> {
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &api_service());
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let mut waiting = Vec::new();
        for (group, version) in metrics_api::GROUP_VERSIONS {
            let name = format!("{version}.{group}");
            let o = api.get(&name).await?;
            let available = o.data["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|c| c["type"] == "Available")
                .cloned()
                .unwrap_or(Value::Null);
            if available["status"] != "True" {
                waiting.push(format!("{name}: {}", available["message"].as_str().unwrap_or("no condition yet")));
            }
        }
        if waiting.is_empty() {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(Error::Config(format!("the metrics APIs did not become available: {}", waiting.join("; "))));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_are_decoded_from_the_query() {
        let s = label_selector(Some("limit=5&labelSelector=app%3Dweb%2Ctier+in+%28a%29")).unwrap_or_default();
        assert_eq!(s, LabelSelector::parse("app=web,tier in (a)").unwrap_or_default());
        assert!(label_selector(Some("labelSelector=%3D%3D")).is_err());
        assert!(label_selector(None).is_ok_and(|s| s.is_empty()));
    }

    #[test]
    fn routes_answer_from_the_table() {
        let mut t = MetricsTable::default();
        t.nodes.insert("n1".into(), json!({"kind": "NodeMetrics", "metadata": {"name": "n1"}}));
        let h = Handler {
            table: Arc::new(RwLock::new(t)),
            pods: Arc::new(|_: &str, _: &LabelSelector| BTreeSet::new()),
            clock: Clock::wall(1.0),
        };
        let v = h.route(&["apis", "metrics.k8s.io", "v1beta1", "nodes", "n1"], None).unwrap_or_default();
        assert_eq!(v["metadata"]["name"], "n1");
        assert_eq!(
            h.route(&["apis", "metrics.k8s.io", "v1beta1", "nodes", "n2"], None).map_err(|e| e.code).err(),
            Some(404)
        );
        assert!(h.route(&["apis", "metrics.k8s.io", "v1beta1"], None).is_ok_and(|d| d["kind"] == "APIResourceList"));
        assert_eq!(h.route(&["nope"], None).map_err(|e| e.code).err(), Some(404));
    }
}
