#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]
//! The admission webhook against the simulated cluster, which calls it over HTTPS as
//! kube-apiserver does, trusting only the configuration's caBundle: self-managed certificates
//! shared through a Secret, CA rotation without a failed call, the namespace exclusions of
//! `manifests/04-webhook.yaml`, cert-manager-style files, and the operator's own wiring.

use base64::Engine;
use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret, Service};
use kube::api::{Api, PostParams};
use omniscale_api::clock::Clock;
use omniscale_operator::cli::{Cli, Command};
use omniscale_operator::webhook::certs::{self, CertPolicy};
use omniscale_operator::webhook::{self, CertResolver, Handler, SelfManaged, SelfManagedConfig};
use omniscale_sim::control::World;
use omniscale_sim::runtime::{self, Running, SimOptions};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const NS: &str = "omniscale-system";
const SERVICE: &str = "omniscale-webhook";
const SECRET: &str = "omniscale-webhook-tls";
const CONFIG: &str = "omniscale";
const SERVER_NAME: &str = "omniscale-webhook.omniscale-system.svc";
const MARK: &str = "webhook.omniscale.dev/called";

async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..400 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for {what}");
}

/// A simulated cluster with omniscale's namespace and `manifests/04-webhook.yaml` applied
/// (caBundle empty, as a user installs it).
async fn cluster() -> (Running, kube::Client) {
    omniscale_operator::install_crypto_provider();
    let sim = runtime::start(SimOptions::default(), World::default()).await.unwrap();
    let client = kube::Client::try_from(kube::Config::new(sim.url.parse().unwrap())).unwrap();
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": NS}})).unwrap();
    Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &ns).await.unwrap();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../manifests/04-webhook.yaml");
    let text = std::fs::read_to_string(path).unwrap();
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let v: Value = serde::Deserialize::deserialize(doc).unwrap();
        match v["kind"].as_str() {
            Some("Service") => {
                let s: Service = serde_json::from_value(v).unwrap();
                Api::<Service>::namespaced(client.clone(), NS).create(&PostParams::default(), &s).await.unwrap();
            }
            Some("MutatingWebhookConfiguration") => {
                let c: MutatingWebhookConfiguration = serde_json::from_value(v).unwrap();
                assert!(c.webhooks.as_ref().unwrap()[0].client_config.ca_bundle.is_none());
                Api::<MutatingWebhookConfiguration>::all(client.clone())
                    .create(&PostParams::default(), &c)
                    .await
                    .unwrap();
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    (sim, client)
}

/// A handler that records who called and annotates the pod through a JSONPatch.
fn annotating(calls: Arc<Mutex<Vec<String>>>) -> Handler {
    Arc::new(move |body: &[u8]| {
        let review: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let req = &review["request"];
        calls.lock().unwrap().push(req["namespace"].as_str().unwrap_or_default().to_owned());
        let mut ops = Vec::new();
        if req["object"]["metadata"]["annotations"].is_null() {
            ops.push(json!({"op": "add", "path": "/metadata/annotations", "value": {}}));
        }
        ops.push(
            json!({"op": "add", "path": format!("/metadata/annotations/{}", MARK.replace('/', "~1")), "value": "yes"}),
        );
        let patch = base64::engine::general_purpose::STANDARD.encode(serde_json::to_vec(&ops).unwrap());
        serde_json::to_vec(&json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "response": {"uid": req["uid"], "allowed": true, "patchType": "JSONPatch", "patch": patch}}))
        .unwrap()
    })
}

fn config(policy: CertPolicy) -> SelfManagedConfig {
    SelfManagedConfig {
        namespace: NS.into(),
        secret: SECRET.into(),
        service: SERVICE.into(),
        webhook_config: CONFIG.into(),
        policy,
        recheck: Duration::from_millis(100),
    }
}

/// One "replica": the HTTPS server on an ephemeral port and the certificate loop.
struct Replica {
    addr: SocketAddr,
    resolver: Arc<CertResolver>,
    stop: CancellationToken,
}

async fn replica(client: &kube::Client, handler: Handler, policy: CertPolicy) -> Replica {
    let listener = webhook::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let resolver = Arc::new(CertResolver::default());
    let stop = CancellationToken::new();
    tokio::spawn(webhook::serve(listener, resolver.clone(), handler, stop.clone()));
    let manager = SelfManaged::new(client.clone(), config(policy));
    tokio::spawn(manager.run(resolver.clone(), Clock::real(), stop.clone()));
    Replica { addr, resolver, stop }
}

async fn secret(client: &kube::Client) -> Option<Secret> {
    Api::<Secret>::namespaced(client.clone(), NS).get_opt(SECRET).await.unwrap()
}

fn data(s: &Secret, key: &str) -> Vec<u8> {
    s.data.as_ref().and_then(|d| d.get(key)).map(|b| b.0.clone()).unwrap_or_default()
}

/// Every webhook's caBundle in the configuration.
async fn ca_bundles(client: &kube::Client) -> Vec<Vec<u8>> {
    let c = Api::<MutatingWebhookConfiguration>::all(client.clone()).get(CONFIG).await.unwrap();
    c.webhooks
        .unwrap()
        .iter()
        .map(|w| w.client_config.ca_bundle.as_ref().map(|b| b.0.clone()).unwrap_or_default())
        .collect()
}

/// Waits until the Secret exists and the configuration trusts exactly its bundle.
async fn published(client: &kube::Client) -> Secret {
    eventually("the Secret and a published caBundle", || async {
        match secret(client).await {
            Some(s) => ca_bundles(client).await.iter().all(|b| !b.is_empty() && *b == data(&s, "ca.crt")),
            None => false,
        }
    })
    .await;
    secret(client).await.unwrap()
}

async fn create_pod(client: &kube::Client, ns: &str, name: &str) -> Pod {
    let pod: Pod = serde_json::from_value(json!({"metadata": {"name": name},
        "spec": {"containers": [{"name": "c", "image": "nginx"}]}}))
    .unwrap();
    Api::<Pod>::namespaced(client.clone(), ns).create(&PostParams::default(), &pod).await.unwrap()
}

fn mutated(p: &Pod) -> bool {
    p.metadata.annotations.as_ref().is_some_and(|a| a.get(MARK).is_some_and(|v| v == "yes"))
}

/// A TLS connection to `addr` for the webhook Service's name, trusting only `ca_pem`.
async fn tls(addr: SocketAddr, ca_pem: &[u8]) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    connect(addr, ca_pem).await.unwrap()
}

async fn connect(
    addr: SocketAddr,
    ca_pem: &[u8],
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem) {
        roots.add(c.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = ServerName::try_from(SERVER_NAME).unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await
}

/// The certificate `addr` serves now (DER).
async fn served(addr: SocketAddr, ca_pem: &[u8]) -> Vec<u8> {
    let s = tls(addr, ca_pem).await;
    s.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

fn leaf_der(pem: &[u8]) -> Vec<u8> {
    certs::parse_pem_certs(pem, "tls.crt").unwrap()[0].der.clone()
}

/// One HTTPS request: (status, content type, body).
async fn request(addr: SocketAddr, ca_pem: &[u8], method: &str, path: &str, body: Vec<u8>) -> (u16, String, Vec<u8>) {
    let stream = tls(addr, ca_pem).await;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, SERVER_NAME)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let ct = resp.headers().get(http::header::CONTENT_TYPE).map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    let body = resp.into_body().collect().await.unwrap().to_bytes().to_vec();
    (status, ct, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_go_through_the_webhook_with_one_shared_self_managed_certificate() {
    let (sim, client) = cluster().await;
    let calls = Arc::new(Mutex::new(Vec::new()));
    let a = replica(&client, annotating(calls.clone()), CertPolicy::default()).await;
    sim.cluster.route_service(NS, SERVICE, a.addr);

    // The first replica creates the Secret and publishes its CA.
    let s = published(&client).await;
    assert_eq!(s.type_.as_deref(), Some("kubernetes.io/tls"));
    for key in ["tls.crt", "tls.key", "ca.crt", "ca.key"] {
        assert!(!data(&s, key).is_empty(), "{key}");
    }
    let bundle = data(&s, "ca.crt");
    eventually("the certificate served", || async { a.resolver.current().is_some() }).await;
    assert_eq!(served(a.addr, &bundle).await, leaf_der(&data(&s, "tls.crt")));

    // A pod in `default` is sent to the webhook and comes back patched.
    let pod = create_pod(&client, "default", "web-1").await;
    assert!(mutated(&pod), "{:?}", pod.metadata.annotations);
    assert_eq!(*calls.lock().unwrap(), ["default"]);
    // kube-system is excluded by the namespaceSelector: no call, no patch.
    let sys = create_pod(&client, "kube-system", "sys-1").await;
    assert!(!mutated(&sys));
    assert_eq!(calls.lock().unwrap().len(), 1);

    // A second replica finds the Secret and reuses it: no write, same certificate served.
    let before = s.metadata.resource_version.clone();
    let b = SelfManaged::new(client.clone(), config(CertPolicy::default()));
    let resolver_b = CertResolver::default();
    let pass = b.reconcile(&resolver_b, jiff::Timestamp::now()).await.unwrap();
    assert!(pass.actions.is_empty(), "{:?}", pass.actions);
    assert_eq!(pass.published, webhook::maintain::Published::Unchanged);
    let after = secret(&client).await.unwrap();
    assert_eq!(after.metadata.resource_version, before);
    assert_eq!(resolver_b.current().unwrap().cert, a.resolver.current().unwrap().cert);

    a.stop.cancel();
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ca_rotation_keeps_the_old_ca_trusted_and_no_call_fails() {
    let (sim, client) = cluster().await;
    let calls = Arc::new(Mutex::new(Vec::new()));
    // Replica A issues short-lived certificates: a 2-day CA, a 1-day serving certificate.
    let hours = |h: i64| jiff::SignedDuration::from_hours(h);
    let short = CertPolicy {
        ca_validity: hours(48),
        ca_renew_before: hours(24),
        serving_validity: hours(24),
        serving_renew_before: hours(12),
        backdate: hours(1),
    };
    let a = replica(&client, annotating(calls.clone()), short).await;
    sim.cluster.route_service(NS, SERVICE, a.addr);
    let old = published(&client).await;
    let old_ca = certs::parse_pem_certs(&data(&old, "ca.crt"), "ca.crt").unwrap();
    assert_eq!(old_ca.len(), 1);
    eventually("the first certificate served", || async { a.resolver.current().is_some() }).await;

    // Pods keep being created all through the rotation; with failurePolicy Ignore a failed call
    // would show as a pod without the annotation.
    let stop_pods = CancellationToken::new();
    let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let created = || count.load(std::sync::atomic::Ordering::SeqCst);
    let creator = {
        let (client, stop, count) = (client.clone(), stop_pods.clone(), count.clone());
        tokio::spawn(async move {
            let mut made = Vec::new();
            for i in 0.. {
                if stop.is_cancelled() {
                    break;
                }
                made.push(create_pod(&client, "default", &format!("during-{i}")).await);
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            made
        })
    };
    eventually("pods created before the rotation", || async { created() >= 2 }).await;

    // Replica B runs the default policy: to it, A's CA (2 days left) is due. It rotates the CA,
    // publishes [new, old], then reissues the serving certificate from the new CA.
    let b = SelfManaged::new(client.clone(), config(CertPolicy::default()));
    let resolver_b = CertResolver::default();
    let pass = b.reconcile(&resolver_b, jiff::Timestamp::now()).await.unwrap();
    assert_eq!(
        pass.actions,
        [certs::Action::RotateCa, certs::Action::IssueServing("issued by another CA")],
        "{:?}",
        pass.actions
    );
    let new = secret(&client).await.unwrap();
    let bundle = certs::parse_pem_certs(&data(&new, "ca.crt"), "ca.crt").unwrap();
    assert_eq!(bundle.len(), 2, "new CA first, old one still trusted");
    assert_eq!(bundle[1], old_ca[0]);
    assert!(bundle[0].not_after > old_ca[0].not_after);
    let leaf = certs::parse_pem_certs(&data(&new, "tls.crt"), "tls.crt").unwrap().remove(0);
    assert_ne!(leaf.der, leaf_der(&data(&old, "tls.crt")));
    assert!(leaf.signed_by(&bundle[0]));
    assert!(ca_bundles(&client).await.iter().all(|b| *b == data(&new, "ca.crt")));
    // The order that makes this safe: the configuration trusted the new CA before a certificate
    // from it was stored (the simulator has one global, numeric resourceVersion).
    let rv = |m: &kube::api::ObjectMeta| m.resource_version.as_deref().unwrap().parse::<u64>().unwrap();
    let config_rv = rv(&Api::<MutatingWebhookConfiguration>::all(client.clone()).get(CONFIG).await.unwrap().metadata);
    assert!(
        config_rv < rv(&new.metadata),
        "caBundle published at {config_rv}, certificate stored at {:?}",
        new.metadata.resource_version
    );

    // A notices on its next pass (its short policy is happy with the new material) and swaps
    // the served certificate without restarting.
    eventually("replica A serving the new certificate", || async {
        a.resolver.current().is_some_and(|c| c.cert[0].as_ref() == leaf.der.as_slice())
    })
    .await;
    assert_eq!(served(a.addr, &data(&new, "ca.crt")).await, leaf.der);
    // A client that only knew the old CA could no longer connect: the old CA alone was never
    // what the configuration trusted once the new certificate could be served.
    assert!(connect(a.addr, &data(&old, "ca.crt")).await.is_err());
    let swapped_at = created();
    eventually("pods created after the swap", || async { created() >= swapped_at + 2 }).await;
    stop_pods.cancel();
    let made = creator.await.unwrap();
    let unmutated: Vec<_> = made.iter().filter(|p| !mutated(p)).map(|p| p.metadata.name.clone()).collect();
    assert!(unmutated.is_empty(), "calls failed during the rotation: {unmutated:?}");
    assert!(mutated(&create_pod(&client, "default", "after").await));
    let secret_now = secret(&client).await.unwrap();
    assert_eq!(secret_now.metadata.resource_version, new.metadata.resource_version, "A did not undo B's work");

    a.stop.cancel();
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_serves_allow_all_over_tls_and_fails_open_on_garbage() {
    let (sim, client) = cluster().await;
    // A free port for the operator's webhook (the operator binds it itself).
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    sim.cluster.route_service(NS, SERVICE, addr);
    let crds = Api::<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>::all(
        client.clone(),
    );
    for crd in omniscale_api::crds() {
        crds.create(&PostParams::default(), &crd).await.unwrap();
    }
    let kubeconfig = std::env::temp_dir().join(format!("omniscale-webhook-{}-{port}.kubeconfig", std::process::id()));
    std::fs::write(&kubeconfig, sim.kubeconfig()).unwrap();
    let port_arg = addr.to_string();
    let cli = Cli::try_parse_from([
        "omniscale",
        "run",
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
        "--pod-name",
        "webhook-test",
        "--http-addr",
        "127.0.0.1:0",
        "--webhook-addr",
        &port_arg,
    ])
    .unwrap();
    let Command::Run(args) = cli.command else { panic!("run args") };
    let stop = CancellationToken::new();
    let operator = tokio::spawn(omniscale_operator::run::run_with(*args, stop.clone(), Clock::real()));

    let s = published(&client).await;
    let bundle = data(&s, "ca.crt");
    eventually("the operator's webhook answering", || async { tokio::net::TcpStream::connect(addr).await.is_ok() })
        .await;

    // A stalled TLS handshake holds only its own connection.
    let _stalled = tokio::net::TcpStream::connect(addr).await.unwrap();

    let (status, ct, body) = request(addr, &bundle, "POST", "/mutate-pods?timeout=5s", b"garbage".to_vec()).await;
    assert_eq!((status, ct.as_str()), (200, "application/json"));
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        v,
        json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "response": {"uid": "", "allowed": true}})
    );
    let review = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": "0d6f5d1c-1111-4ac1-9b4b-000000000001", "operation": "CREATE", "object": {"kind": "Pod"}}});
    let (status, _, body) = request(addr, &bundle, "POST", "/mutate-pods", serde_json::to_vec(&review).unwrap()).await;
    assert_eq!(status, 200);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["response"], json!({"uid": "0d6f5d1c-1111-4ac1-9b4b-000000000001", "allowed": true}));
    assert_eq!(request(addr, &bundle, "GET", "/healthz", Vec::new()).await.0, 200);
    assert_eq!(request(addr, &bundle, "GET", "/mutate-pods", Vec::new()).await.0, 405);
    assert_eq!(request(addr, &bundle, "GET", "/nope", Vec::new()).await.0, 404);

    // A declared body over 3 MiB is refused before it is read.
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tls(addr, &bundle).await;
        let length = 3 * 1024 * 1024 + 1;
        let head = format!("POST /mutate-pods HTTP/1.1\r\nHost: {SERVER_NAME}\r\nContent-Length: {length}\r\n\r\n");
        s.write_all(head.as_bytes()).await.unwrap();
        let mut buf = vec![0; 256];
        let n = s.read(&mut buf).await.unwrap();
        let text = String::from_utf8_lossy(&buf[..n]);
        assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    }

    // And the simulated API server's calls go through: the pod is admitted unchanged.
    let pod = create_pod(&client, "default", "plain").await;
    assert!(pod.metadata.annotations.is_none_or(|a| a.is_empty()));

    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(15), operator).await;
    let _ = std::fs::remove_file(&kubeconfig);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_from_a_directory_are_swapped_when_the_files_change() {
    omniscale_operator::install_crypto_provider();
    let dir = std::env::temp_dir().join(format!("omniscale-webhook-certs-{}-{:x}", std::process::id(), rand_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    let names = vec![SERVER_NAME.to_string()];
    let now = jiff::Timestamp::now();
    let first = certs::generate(&names, now, &CertPolicy::default()).unwrap();
    let second = certs::generate(&names, now, &CertPolicy::default()).unwrap();
    let put = |m: &certs::Material| {
        // Write then rename, as kubelet's atomic symlink swap makes the pair appear at once.
        for (name, text) in [("tls.key", &m.key), ("tls.crt", &m.cert)] {
            let tmp = dir.join(format!("{name}.tmp"));
            std::fs::write(&tmp, text).unwrap();
            std::fs::rename(&tmp, dir.join(name)).unwrap();
        }
    };
    put(&first);

    let listener = webhook::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let resolver = Arc::new(CertResolver::default());
    let stop = CancellationToken::new();
    tokio::spawn(webhook::serve(listener, resolver.clone(), Arc::new(webhook::allow_all), stop.clone()));
    tokio::spawn(webhook::maintain::watch_dir(dir.clone(), Duration::from_millis(50), resolver.clone(), stop.clone()));

    eventually("the first certificate loaded", || async { resolver.current().is_some() }).await;
    assert_eq!(served(addr, first.ca_bundle.as_bytes()).await, leaf_der(first.cert.as_bytes()));
    put(&second);
    eventually("the second certificate served", || async {
        resolver.current().is_some_and(|c| c.cert[0].as_ref() == leaf_der(second.cert.as_bytes()).as_slice())
    })
    .await;
    assert_eq!(served(addr, second.ca_bundle.as_bytes()).await, leaf_der(second.cert.as_bytes()));
    // Garbage in the files keeps the last good certificate.
    std::fs::write(dir.join("tls.crt"), "not a certificate").unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(served(addr, second.ca_bundle.as_bytes()).await, leaf_der(second.cert.as_bytes()));

    stop.cancel();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Distinguishes temp directories of concurrent test processes and runs.
fn rand_suffix() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
}
