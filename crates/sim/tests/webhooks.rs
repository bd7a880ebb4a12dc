#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]
//! Mutating admission webhooks against real HTTPS servers: the simulated API server must call
//! them as kube-apiserver does (caBundle trust, service and URL client configs, selectors,
//! failure policy, timeouts, denials) for client writes and for pods its controllers create.

use base64::Engine;
use http_body_util::{BodyExt, Full};
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Pod, Service};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use omniscale_sim::runtime::{self, Running, SimOptions};
mod common;
use common::eventually;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A CA and a serving certificate for the given names, as PEM.
struct Pki {
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

fn make_pki(names: &[&str]) -> Pki {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "test-ca");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    Pki { ca_pem: ca.pem(), cert_pem: cert.pem(), key_pem: key.serialize_pem() }
}

type Handler = Arc<dyn Fn(&Value) -> Value + Send + Sync>;

/// An HTTPS webhook server on an ephemeral port; records every AdmissionReview request.
struct HookServer {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Value>>>,
}

impl HookServer {
    async fn start(pki: &Pki, delay: Duration, handler: Handler) -> Self {
        use rustls::pki_types::pem::PemObject;
        let certs = rustls::pki_types::CertificateDer::pem_slice_iter(pki.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(pki.key_pem.as_bytes()).unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let seen2 = seen.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { return };
                let (acceptor, seen, handler) = (acceptor.clone(), seen2.clone(), handler.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else { return };
                    let svc = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let (seen, handler) = (seen.clone(), handler.clone());
                        async move {
                            let body = req.into_body().collect().await?.to_bytes();
                            let review: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                            seen.lock().unwrap().push(review.clone());
                            tokio::time::sleep(delay).await;
                            let out = serde_json::to_vec(&handler(&review)).unwrap();
                            Ok::<_, hyper::Error>(http::Response::new(Full::new(bytes::Bytes::from(out))))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        Self { addr, seen }
    }

    fn requests(&self) -> Vec<Value> {
        self.seen.lock().unwrap().clone()
    }
}

fn allow(review: &Value, ops: Option<Value>) -> Value {
    let mut resp = json!({"uid": review["request"]["uid"], "allowed": true});
    if let Some(ops) = ops {
        resp["patchType"] = json!("JSONPatch");
        resp["patch"] = json!(base64::engine::general_purpose::STANDARD.encode(serde_json::to_vec(&ops).unwrap()));
    }
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": resp})
}

/// Labels the object and, for pods, sets the first container's cpu request: what a VPA-style
/// webhook does.
fn label_and_resize(review: &Value) -> Value {
    let obj = &review["request"]["object"];
    let mut ops = vec![];
    if obj["metadata"]["labels"].is_null() {
        ops.push(json!({"op": "add", "path": "/metadata/labels", "value": {}}));
    }
    ops.push(json!({"op": "add", "path": "/metadata/labels/mutated", "value": "yes"}));
    if obj["kind"] == "Pod" {
        ops.push(json!({"op": "add", "path": "/spec/containers/0/resources", "value": {"requests": {"cpu": "250m"}}}));
    }
    allow(review, Some(Value::Array(ops)))
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn mwc(name: &str, webhook: Value) -> MutatingWebhookConfiguration {
    serde_json::from_value(json!({"metadata": {"name": name}, "webhooks": [webhook]})).unwrap()
}

fn webhook(name: &str, client_config: Value, resources: &[&str], operations: &[&str], extra: Value) -> Value {
    let mut w = json!({"name": name, "clientConfig": client_config, "sideEffects": "None",
        "admissionReviewVersions": ["v1"],
        "rules": [{"operations": operations, "apiGroups": ["", "apps"], "apiVersions": ["v1"], "resources": resources}]});
    if let (Some(m), Some(e)) = (w.as_object_mut(), extra.as_object()) {
        m.extend(e.clone());
    }
    w
}

async fn start() -> (Running, kube::Client) {
    common::start(SimOptions { speed: 20.0, ..SimOptions::default() }).await
}

fn pod(generate_name: &str) -> Pod {
    serde_json::from_value(json!({"metadata": {"generateName": generate_name},
        "spec": {"containers": [{"name": "c", "image": "nginx"}]}}))
    .unwrap()
}

fn cm(name: &str, labels: Value) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}, "data": {"k": "v"}})).unwrap()
}

fn api_error(e: kube::Error) -> (u16, String) {
    match e {
        kube::Error::Api(s) => (s.code, s.message),
        other => panic!("expected an API error, got {other}"),
    }
}

#[tokio::test]
async fn service_webhook_mutates_client_and_controller_pods() {
    let (sim, client) = start().await;
    let pki = make_pki(&["hook.default.svc"]);
    let server = HookServer::start(&pki, Duration::ZERO, Arc::new(label_and_resize)).await;
    // The Service's targetPort is where the simulator reaches the webhook on loopback.
    let svc: Service = serde_json::from_value(json!({"metadata": {"name": "hook"},
        "spec": {"ports": [{"port": 443, "targetPort": server.addr.port()}]}}))
    .unwrap();
    Api::<Service>::namespaced(client.clone(), "default").create(&PostParams::default(), &svc).await.unwrap();
    let cc =
        json!({"service": {"namespace": "default", "name": "hook", "path": "/mutate"}, "caBundle": b64(&pki.ca_pem)});
    let hooks: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    hooks
        .create(&PostParams::default(), &mwc("pods", webhook("pods.hook.test", cc, &["pods"], &["CREATE"], json!({}))))
        .await
        .unwrap();
    let stored = hooks.get("pods").await.unwrap();
    let w = &stored.webhooks.unwrap()[0];
    assert_eq!(
        (w.failure_policy.as_deref(), w.timeout_seconds, w.reinvocation_policy.as_deref()),
        (Some("Fail"), Some(10), Some("Never")),
        "upstream defaults"
    );

    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let created = pods.create(&PostParams::default(), &pod("direct-")).await.unwrap();
    assert_eq!(created.metadata.labels.unwrap()["mutated"], "yes");
    let requests = created.spec.unwrap().containers[0].resources.clone().unwrap().requests.unwrap();
    assert_eq!(requests["cpu"].0, "250m");
    let seen = server.requests();
    assert_eq!(seen.len(), 1);
    let req = &seen[0]["request"];
    assert_eq!(req["operation"], "CREATE");
    assert_eq!(req["name"], "", "a generated name is chosen after mutating admission");
    assert_eq!(req["object"]["metadata"]["generateName"], "direct-");
    assert_eq!(req["object"]["spec"]["restartPolicy"], "Always", "webhooks see defaulted objects");
    assert_eq!(req["userInfo"]["username"], "kubernetes-admin");
    assert_eq!(req["resource"], json!({"group": "", "version": "v1", "resource": "pods"}));

    // Pods a ReplicaSet controller creates go through the webhook too.
    let deploy: Deployment = serde_json::from_value(json!({"metadata": {"name": "web"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}}))
    .unwrap();
    Api::<Deployment>::namespaced(client.clone(), "default").create(&PostParams::default(), &deploy).await.unwrap();
    let lp = ListParams::default().labels("app=web");
    eventually("2 web pods", || async { pods.list(&lp).await.unwrap().items.len() == 2 }).await;
    // The controller must not create extra pods while earlier ones are in admission.
    for _ in 0..5 {
        runtime::step_and_admit(&sim.cluster, &sim.world).await;
    }
    let web = pods.list(&lp).await.unwrap().items;
    assert_eq!(web.len(), 2);
    for p in &web {
        assert_eq!(p.metadata.labels.as_ref().unwrap()["mutated"], "yes");
        let c = &p.spec.as_ref().unwrap().containers[0];
        assert_eq!(c.resources.as_ref().unwrap().requests.as_ref().unwrap()["cpu"].0, "250m");
    }
    let users: Vec<String> =
        server.requests().iter().map(|r| r["request"]["userInfo"]["username"].as_str().unwrap().to_owned()).collect();
    assert_eq!(users.iter().filter(|u| u.ends_with(":replicaset-controller")).count(), 2, "{users:?}");
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    eventually("SuccessfulCreate events", || async {
        events
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .iter()
            .filter(|e| e.reason.as_deref() == Some("SuccessfulCreate"))
            .count()
            == 2
    })
    .await;
    sim.shutdown().await;
}

#[tokio::test]
async fn selectors_and_operations_decide_which_writes_are_sent() {
    let (sim, client) = start().await;
    let pki = make_pki(&["127.0.0.1"]);
    let server = HookServer::start(&pki, Duration::ZERO, Arc::new(label_and_resize)).await;
    let url = format!("https://127.0.0.1:{}/cm", server.addr.port());
    let cc = json!({"url": url, "caBundle": b64(&pki.ca_pem)});
    let not_system = json!({"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["kube-system"]}]});
    let hooks: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let w = webhook(
        "cm.hook.test",
        cc,
        &["configmaps"],
        &["CREATE"],
        json!({"namespaceSelector": not_system, "objectSelector": {"matchLabels": {"inject": "yes"}}}),
    );
    hooks.create(&PostParams::default(), &mwc("cm", w)).await.unwrap();
    let default: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let system: Api<ConfigMap> = Api::namespaced(client.clone(), "kube-system");
    let a = default.create(&PostParams::default(), &cm("a", json!({"inject": "yes"}))).await.unwrap();
    assert_eq!(a.metadata.labels.unwrap().get("mutated").map(String::as_str), Some("yes"));
    let b = default.create(&PostParams::default(), &cm("b", json!({}))).await.unwrap();
    assert!(!b.metadata.labels.unwrap_or_default().contains_key("mutated"), "objectSelector excludes b");
    let c = system.create(&PostParams::default(), &cm("c", json!({"inject": "yes"}))).await.unwrap();
    assert!(!c.metadata.labels.unwrap().contains_key("mutated"), "namespaceSelector excludes kube-system");
    // The rule lists CREATE only: an update is not sent.
    let patch = json!({"data": {"k": "v2"}});
    default.patch("a", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    assert_eq!(server.requests().len(), 1);

    // An UPDATE rule sees patches, with the old object, and may mutate them.
    let cc = json!({"url": format!("https://127.0.0.1:{}/u", server.addr.port()), "caBundle": b64(&pki.ca_pem)});
    hooks
        .create(
            &PostParams::default(),
            &mwc("cm-update", webhook("update.hook.test", cc, &["configmaps"], &["UPDATE"], json!({}))),
        )
        .await
        .unwrap();
    let patch = json!({"metadata": {"labels": {"mutated": null}}, "data": {"k": "v3"}});
    let out = default.patch("b", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    assert_eq!(out.metadata.labels.unwrap()["mutated"], "yes");
    let seen = server.requests();
    let last = &seen.last().unwrap()["request"];
    assert_eq!(last["operation"], "UPDATE");
    assert_eq!(last["oldObject"]["data"]["k"], "v");
    assert_eq!(last["object"]["data"]["k"], "v3");
    assert_eq!(last["options"]["kind"], "PatchOptions");
    // A patch that changes nothing still goes to the webhooks, and their change is stored.
    let d = default.create(&PostParams::default(), &cm("d", json!({}))).await.unwrap();
    let same = json!({"data": {"k": "v"}});
    let out = default.patch("d", &PatchParams::default(), &Patch::Merge(&same)).await.unwrap();
    assert_eq!(out.metadata.labels.unwrap()["mutated"], "yes");
    assert_ne!(out.metadata.resource_version, d.metadata.resource_version);
    hooks.delete("cm-update", &DeleteParams::default()).await.unwrap();
    let out = default.patch("d", &PatchParams::default(), &Patch::Merge(&json!({"data": {"k": "v9"}}))).await.unwrap();
    assert_eq!(out.data.unwrap()["k"], "v9");
    sim.shutdown().await;
}

#[tokio::test]
async fn failure_policy_timeouts_trust_and_denials() {
    let (sim, client) = start().await;
    let pki = make_pki(&["127.0.0.1"]);
    let other = make_pki(&["127.0.0.1"]);
    let hooks: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let slow = HookServer::start(&pki, Duration::from_millis(2500), Arc::new(label_and_resize)).await;
    let deny = HookServer::start(
        &pki,
        Duration::ZERO,
        Arc::new(|r: &Value| {
            json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                "response": {"uid": r["request"]["uid"], "allowed": false, "status": {"code": 403, "message": "not today"}}})
        }),
    )
    .await;
    let bad_uid = HookServer::start(
        &pki,
        Duration::ZERO,
        Arc::new(|_: &Value| json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": {"uid": "nope", "allowed": true}})),
    )
    .await;
    let good = HookServer::start(&pki, Duration::ZERO, Arc::new(label_and_resize)).await;
    // A port nobody listens on.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = |port: u16| format!("https://127.0.0.1:{port}/m");
    type Case<'a> = (&'a str, Value, Value, Option<(u16, &'a str)>);
    let cases: Vec<Case<'_>> = vec![
        // (name, clientConfig, extra, expected error with Fail)
        (
            "unreachable",
            json!({"url": url(closed), "caBundle": b64(&pki.ca_pem)}),
            json!({}),
            Some((500, "failed calling webhook")),
        ),
        (
            "slow",
            json!({"url": url(slow.addr.port()), "caBundle": b64(&pki.ca_pem)}),
            json!({"timeoutSeconds": 1}),
            Some((500, "context deadline exceeded")),
        ),
        (
            "untrusted",
            json!({"url": url(good.addr.port()), "caBundle": b64(&other.ca_pem)}),
            json!({}),
            Some((500, "tls")),
        ),
        (
            "bad-uid",
            json!({"url": url(bad_uid.addr.port()), "caBundle": b64(&pki.ca_pem)}),
            json!({}),
            Some((500, "received invalid webhook response")),
        ),
        ("deny", json!({"url": url(deny.addr.port()), "caBundle": b64(&pki.ca_pem)}), json!({}), None),
    ];
    for (i, (name, cc, extra, fail_error)) in cases.into_iter().enumerate() {
        for policy in ["Fail", "Ignore"] {
            let mut extra = extra.clone();
            extra["failurePolicy"] = json!(policy);
            let w = webhook(&format!("{name}.hook.test"), cc.clone(), &["configmaps"], &["CREATE"], extra);
            hooks.create(&PostParams::default(), &mwc(name, w)).await.unwrap();
            let result =
                cms.create(&PostParams::default(), &cm(&format!("x{i}-{}", policy.to_lowercase()), json!({}))).await;
            match (name, policy, fail_error) {
                ("deny", _, _) => {
                    let (code, msg) = api_error(result.unwrap_err());
                    assert_eq!(code, 403, "a denial rejects whatever the policy");
                    assert_eq!(msg, "admission webhook \"deny.hook.test\" denied the request: not today");
                }
                (_, "Fail", Some((code, needle))) => {
                    let (got, msg) = api_error(result.unwrap_err());
                    assert_eq!(got, code, "{name}: {msg}");
                    assert!(msg.contains(needle), "{name}: {msg}");
                    assert!(msg.contains(&format!("failed calling webhook \"{name}.hook.test\"")), "{msg}");
                }
                (_, "Ignore", _) => {
                    let created = result.unwrap_or_else(|e| panic!("{name} with Ignore: {e}"));
                    assert!(!created.metadata.labels.unwrap_or_default().contains_key("mutated"));
                }
                other => panic!("unexpected case {other:?}"),
            }
            hooks.delete(name, &DeleteParams::default()).await.unwrap();
        }
    }
    // The slow webhook was called (twice) but its answers came too late to count.
    assert_eq!(slow.requests().len(), 2);
    assert!(good.requests().is_empty(), "the TLS handshake failed before any request");
    sim.shutdown().await;
}

#[tokio::test]
async fn invalid_webhook_configurations_are_rejected() {
    let (sim, client) = start().await;
    let hooks: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let bad = json!({"name": "short", "clientConfig": {}, "admissionReviewVersions": ["v2"],
        "timeoutSeconds": 31, "rules": []});
    let (code, msg) = api_error(hooks.create(&PostParams::default(), &mwc("bad", bad)).await.unwrap_err());
    assert_eq!(code, 422);
    for field in [
        "webhooks[0].name",
        "webhooks[0].clientConfig",
        "webhooks[0].sideEffects",
        "webhooks[0].admissionReviewVersions",
        "webhooks[0].timeoutSeconds",
    ] {
        assert!(msg.contains(field), "{field} missing from: {msg}");
    }
    sim.shutdown().await;
}
