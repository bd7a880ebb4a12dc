//! `cargo xtask bench webhook [FILTER]` (or `cargo bench -p omniscale-operator --bench webhook`):
//! latency of the admission webhook's HTTPS server on loopback, as kube-apiserver loads it.
//!
//! Open loop: requests are scheduled at a fixed rate (500/s for 10 s) over 8 keep-alive TLS
//! connections, round-robin, whatever the server's speed. A request held back by the previous
//! response on its connection is timed from its *scheduled* time, so a stall counts against
//! every request it delays (no coordinated omission); otherwise from when it was sent (the
//! client's timer wakes up to a millisecond late, which is not the server's doing). The body
//! is a ~3 KB AdmissionReview for a pod, as the API server sends on pod creation. A second case
//! opens a new TLS connection per request (the handshake cost a client without keep-alive
//! pays). Client and server share this process and its two worker threads. One JSON object per
//! line.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use omniscale_operator::webhook::{self, CertPolicy, CertResolver, Handler, certs};
use serde_json::json;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

const SERVER_NAME: &str = "omniscale-webhook.omniscale-system.svc";

/// A pod-creation AdmissionReview of about 3 KB: a Deployment's pod with two containers, env,
/// probes, volumes, owner reference and the usual labels and annotations.
fn review_body() -> Vec<u8> {
    let container = |name: &str, image: &str| {
        json!({"name": name, "image": image, "imagePullPolicy": "IfNotPresent",
            "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
            "env": [{"name": "LOG_LEVEL", "value": "info"}, {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}},
            "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"}, "periodSeconds": 5},
            "volumeMounts": [{"name": "config", "mountPath": "/etc/app", "readOnly": true},
                {"name": "kube-api-access-x7k2p", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "readOnly": true}],
            "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File"})
    };
    let pod = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"generateName": "checkout-7d9f8c6b5-", "namespace": "shop",
            "labels": {"app.kubernetes.io/name": "checkout", "app.kubernetes.io/part-of": "shop", "pod-template-hash": "7d9f8c6b5", "version": "v2"},
            "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": "9090", "kubectl.kubernetes.io/restartedAt": "2026-01-01T12:00:00Z"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "checkout-7d9f8c6b5",
                "uid": "4b1f3a2e-9c8d-4e7f-a6b5-c4d3e2f1a0b9", "controller": true, "blockOwnerDeletion": true}]},
        "spec": {"containers": [container("checkout", "registry.example.com/shop/checkout:2.14.1"), container("envoy", "envoyproxy/envoy:v1.31.0")],
            "volumes": [{"name": "config", "configMap": {"name": "checkout-config", "defaultMode": 420}},
                {"name": "kube-api-access-x7k2p", "projected": {"defaultMode": 420, "sources": [{"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}}]}}],
            "restartPolicy": "Always", "terminationGracePeriodSeconds": 30, "dnsPolicy": "ClusterFirst",
            "serviceAccountName": "checkout", "securityContext": {"runAsNonRoot": true, "runAsUser": 10001},
            "schedulerName": "default-scheduler", "priority": 0, "enableServiceLinks": true, "preemptionPolicy": "PreemptLowerPriority",
            "tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
                {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}]}});
    let kind = json!({"group": "", "version": "v1", "kind": "Pod"});
    let resource = json!({"group": "", "version": "v1", "resource": "pods"});
    serde_json::to_vec(&json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": "0d6f5d1c-8a3e-4ac1-9b4b-3f2e1d0c9b8a", "kind": kind, "resource": resource,
            "requestKind": kind, "requestResource": resource, "name": "", "namespace": "shop", "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller",
                "uid": "8e7d6c5b-4a39-4827-9615-0f1e2d3c4b5a", "groups": ["system:serviceaccounts", "system:serviceaccounts:kube-system", "system:authenticated"]},
            "object": pod, "oldObject": null, "dryRun": false,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"}}}))
    .unwrap()
}

/// The real pod mutation: 1,000 Autoscalers in the cache, one of which (`checkout`, in `shop`)
/// controls the benchmark's pod and has a published recommendation for both containers.
fn vertical_handler() -> Handler {
    use kube::runtime::{reflector, watcher};
    let (store, mut writer) = reflector::store::<kube::core::DeserializeGuard<omniscale_api::Autoscaler>>();
    let (ranges, _lr) = reflector::store::<k8s_openapi::api::core::v1::LimitRange>();
    for i in 0..1000 {
        let name = if i == 0 { "checkout".to_owned() } else { format!("app-{i}") };
        let a: omniscale_api::Autoscaler = serde_json::from_value(json!({
            "apiVersion": "omniscale.dev/v1alpha1", "kind": "Autoscaler",
            "metadata": {"name": name, "namespace": if i % 10 == 0 { "shop" } else { "other" }, "uid": format!("u{i}")},
            "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                "vertical": {"updatePolicy": {"updateMode": "Recreate"}}},
            "status": {"vertical": {"recommendation": {"containerRecommendations": [
                {"containerName": "checkout", "target": {"cpu": "250m", "memory": "300Mi"}},
                {"containerName": "envoy", "target": {"cpu": "50m", "memory": "64Mi"}}]}}}}))
        .unwrap();
        writer.apply_watcher_event(&watcher::Event::Apply(kube::core::DeserializeGuard(Ok(a))));
    }
    Arc::new(move |body: &[u8]| omniscale_operator::vertical::review(body, &store.state(), &ranges))
}

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

async fn connect(addr: SocketAddr, connector: &tokio_rustls::TlsConnector) -> Tls {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let name = rustls::pki_types::ServerName::try_from(SERVER_NAME).unwrap();
    connector.connect(name, tcp).await.unwrap()
}

async fn http(stream: Tls) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
    let (sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    sender
}

async fn call(sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>, body: &Bytes) -> bool {
    let req = http::Request::post("/mutate-pods?timeout=5s")
        .header(http::header::HOST, SERVER_NAME)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(body.clone()))
        .unwrap();
    match sender.send_request(req).await {
        Ok(resp) => {
            let ok = resp.status() == 200;
            ok && resp.into_body().collect().await.is_ok()
        }
        Err(_) => false,
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Runs one case against a server with `handler`; `keep_alive: false` opens a connection per
/// request.
async fn bench(label: &str, handler: Handler, rate: u64, seconds: u64, connections: usize, keep_alive: bool) {
    let names = vec![SERVER_NAME.to_string()];
    let material = certs::generate(&names, jiff::Timestamp::now(), &CertPolicy::default()).unwrap();
    let resolver = Arc::new(CertResolver::default());
    resolver.set_pem(material.cert.as_bytes(), material.key.as_bytes()).unwrap();
    let listener = webhook::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let server = tokio::spawn(webhook::serve(listener, resolver, handler, stop.clone()));

    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    for c in CertificateDer::pem_slice_iter(material.ca_bundle.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let body = Bytes::from(review_body());
    let total = rate * seconds;
    let interval = Duration::from_secs_f64(1.0 / rate as f64);

    // Connections are opened (and warmed with one request) before the clock starts.
    let mut senders = Vec::new();
    if keep_alive {
        for _ in 0..connections {
            let mut s = http(connect(addr, &connector).await).await;
            assert!(call(&mut s, &body).await, "warm-up request failed");
            senders.push(s);
        }
    }
    let start = tokio::time::Instant::now() + Duration::from_millis(50);
    let mut tasks = Vec::new();
    for c in 0..connections {
        let (body, connector) = (body.clone(), connector.clone());
        let mut sender = if keep_alive { Some(senders.remove(0)) } else { None };
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0u64;
            let mut prev_done = start;
            for k in (c as u64..total).step_by(connections) {
                let due = start + interval * k as u32;
                tokio::time::sleep_until(due).await;
                let sent = tokio::time::Instant::now();
                let ok = match sender.as_mut() {
                    Some(s) => call(s, &body).await,
                    None => call(&mut http(connect(addr, &connector).await).await, &body).await,
                };
                // Late because the previous response was late: that wait counts (from the
                // scheduled time). Late only because the timer woke us late (tokio's timer has
                // millisecond granularity): that is the client's, so from the actual send.
                let from = if prev_done > due { due } else { sent };
                prev_done = tokio::time::Instant::now();
                if ok {
                    lat.push((prev_done - from).as_secs_f64() * 1000.0);
                } else {
                    errors += 1;
                }
            }
            (lat, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (lat, e) = t.await.unwrap();
        all.extend(lat);
        errors += e;
    }
    let wall = start.elapsed().as_secs_f64();
    all.sort_by(f64::total_cmp);
    let r = |x: f64| (x * 1000.0).round() / 1000.0;
    println!(
        "{}",
        json!({"bench": "webhook", "case": label, "rate_per_s": rate, "seconds": seconds, "connections": connections,
            "keep_alive": keep_alive, "body_bytes": body.len(), "requests": all.len(), "errors": errors,
            "achieved_per_s": r(all.len() as f64 / wall),
            "p50_ms": r(percentile(&all, 50.0)), "p90_ms": r(percentile(&all, 90.0)),
            "p99_ms": r(percentile(&all, 99.0)), "max_ms": r(all.last().copied().unwrap_or(f64::NAN))})
    );
    stop.cancel();
    let _ = server.await;
}

#[tokio::main]
async fn main() {
    omniscale_operator::install_crypto_provider();
    // `cargo bench` passes `--bench`; anything else is a filter on the case name.
    let filter: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let wanted = |case: &str| filter.is_empty() || filter.iter().any(|f| case.contains(f.as_str()));
    let started = Instant::now();
    let allow_all: Handler = Arc::new(webhook::allow_all);
    if wanted("allow_all/keep-alive") {
        bench("allow_all/keep-alive", allow_all.clone(), 500, 10, 8, true).await;
    }
    if wanted("allow_all/new-connection") {
        bench("allow_all/new-connection", allow_all, 100, 5, 8, false).await;
    }
    if wanted("vertical/keep-alive") {
        bench("vertical/keep-alive", vertical_handler(), 500, 10, 8, true).await;
    }
    eprintln!("webhook benchmarks took {:.1}s", started.elapsed().as_secs_f64());
}
