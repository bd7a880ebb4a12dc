//! Mutating admission webhooks, called the way kube-apiserver calls them: configurations in name
//! order, webhooks in listed order, each matched by rules, namespaceSelector and objectSelector,
//! called over HTTPS verified against its `caBundle`, with its `timeoutSeconds` and
//! `failurePolicy`, and `reinvocationPolicy: IfNeeded` honoured once.
//!
//! The store is locked while it works and webhooks are remote, so a write that a webhook may
//! change is done in two passes (see [`crate::store::Admission`]): a dry run captures the object
//! the webhooks must see, the webhooks are called without the lock, and the write is redone with
//! their result, provided the stored object did not change meanwhile (else the whole write is
//! redone, as the API server's optimistic-concurrency loop would).
//!
//! Not modelled: `matchConditions` (CEL), `matchPolicy: Equivalent` across versions (each
//! resource is served at one version), webhooks on the `scale`, `eviction` and `binding`
//! subresources and on DELETE/CONNECT, and the `sideEffects` dry-run refusal.

use crate::error::ApiError;
use crate::registry::{ResourceKey, ResourceType};
use crate::selector::{LabelSelector, labels_of};
use crate::server::Cluster;
use crate::store::{Admission, PatchType, Store, Target, WriteOptions};
use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Redo a write this many times when the object keeps changing under the webhook calls.
const MAX_ATTEMPTS: usize = 5;

/// One rule of a webhook.
#[derive(Clone, Debug, Default)]
struct Rule {
    operations: Vec<String>,
    groups: Vec<String>,
    versions: Vec<String>,
    resources: Vec<String>,
    scope: String,
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array().into_iter().flatten().filter_map(|s| s.as_str().map(str::to_owned)).collect()
}

fn any_of(list: &[String], x: &str) -> bool {
    list.iter().any(|l| l == "*" || l == x)
}

impl Rule {
    fn parse(v: &Value) -> Self {
        Self {
            operations: strings(&v["operations"]),
            groups: strings(&v["apiGroups"]),
            versions: strings(&v["apiVersions"]),
            resources: strings(&v["resources"]),
            scope: v["scope"].as_str().unwrap_or("*").to_owned(),
        }
    }

    /// Upstream's matcher: `pods` is the resource alone, `pods/status` one subresource,
    /// `pods/*` the resource and all its subresources, `*` every resource, `*/*` everything.
    fn matches(&self, operation: &str, rt: &ResourceType, sub: Option<&str>) -> bool {
        let resource = self.resources.iter().any(|r| {
            let (res, s) = r.split_once('/').unwrap_or((r, ""));
            (res == "*" || res == rt.plural) && (s == "*" || s == sub.unwrap_or(""))
        });
        let scope = match self.scope.as_str() {
            "Cluster" => !rt.namespaced,
            "Namespaced" => rt.namespaced,
            _ => true,
        };
        any_of(&self.operations, operation)
            && any_of(&self.groups, &rt.group)
            && any_of(&self.versions, &rt.version)
            && resource
            && scope
    }
}

/// Where a webhook is reached.
#[derive(Clone, Debug)]
struct Endpoint {
    /// The URL as upstream prints it in errors.
    url: String,
    connect: String,
    server_name: String,
    authority: String,
    path_and_query: String,
    ca: Vec<u8>,
}

/// One webhook of a MutatingWebhookConfiguration, ready to match and call.
#[derive(Clone, Debug)]
struct Hook {
    name: String,
    rules: Vec<Rule>,
    fail_closed: bool,
    namespace_selector: LabelSelector,
    object_selector: LabelSelector,
    timeout: Duration,
    reinvoke: bool,
    /// A webhook whose endpoint cannot be resolved fails like an unreachable one.
    endpoint: Result<Endpoint, String>,
}

fn selector(v: &Value) -> LabelSelector {
    if v.is_null() {
        LabelSelector::everything()
    } else {
        LabelSelector::from_json(v).unwrap_or_else(|_| LabelSelector::nothing())
    }
}

impl Hook {
    fn parse(w: &Value, store: &Store, routes: &HashMap<(String, String), SocketAddr>) -> Self {
        let timeout = w["timeoutSeconds"].as_u64().unwrap_or(10).clamp(1, 30);
        Self {
            name: w["name"].as_str().unwrap_or_default().to_owned(),
            rules: w["rules"].as_array().into_iter().flatten().map(Rule::parse).collect(),
            fail_closed: w["failurePolicy"].as_str() != Some("Ignore"),
            namespace_selector: selector(&w["namespaceSelector"]),
            object_selector: selector(&w["objectSelector"]),
            timeout: Duration::from_secs(timeout),
            reinvoke: w["reinvocationPolicy"] == "IfNeeded",
            endpoint: resolve(&w["clientConfig"], timeout, store, routes),
        }
    }

    fn selects(&self, req: &Request<'_>, namespace_labels: &BTreeMap<String, String>) -> bool {
        if !self.rules.iter().any(|r| r.matches(req.operation, req.rt, req.sub)) {
            return false;
        }
        let ns_ok = if req.rt.kind == "Namespace" && req.rt.group.is_empty() {
            self.namespace_selector.matches(&labels_of(req.object))
        } else if req.rt.namespaced {
            self.namespace_selector.matches(namespace_labels)
        } else {
            true
        };
        let obj_ok = self.object_selector.matches(&labels_of(req.object))
            || req.old.is_some_and(|o| self.object_selector.matches(&labels_of(o)));
        ns_ok && obj_ok
    }
}

/// Turns a `clientConfig` into an address, a TLS server name and trust roots. A service is
/// reached on 127.0.0.1 at the Service port's `targetPort` (the simulated cluster has no pod
/// network), unless the embedding program routed it elsewhere with [`Cluster::route_service`].
fn resolve(
    cc: &Value,
    timeout: u64,
    store: &Store,
    routes: &HashMap<(String, String), SocketAddr>,
) -> Result<Endpoint, String> {
    let ca = match cc["caBundle"].as_str() {
        Some(b) => base64::engine::general_purpose::STANDARD.decode(b).map_err(|e| format!("invalid caBundle: {e}"))?,
        None => Vec::new(),
    };
    if let Some(url) = cc["url"].as_str() {
        let uri: http::Uri = url.parse().map_err(|e| format!("invalid url {url:?}: {e}"))?;
        let host = uri.host().ok_or_else(|| format!("url {url:?} has no host"))?.trim_matches(['[', ']']).to_owned();
        let port = uri.port_u16().unwrap_or(443);
        let path = uri.path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_else(|| "/".into());
        let sep = if path.contains('?') { '&' } else { '?' };
        return Ok(Endpoint {
            url: format!("{url}{sep}timeout={timeout}s"),
            connect: if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") },
            authority: uri.authority().map(|a| a.as_str().to_owned()).unwrap_or_else(|| host.clone()),
            server_name: host,
            path_and_query: format!("{path}{sep}timeout={timeout}s"),
            ca,
        });
    }
    let svc = &cc["service"];
    let (ns, name) = (svc["namespace"].as_str().unwrap_or_default(), svc["name"].as_str().unwrap_or_default());
    let port = svc["port"].as_u64().unwrap_or(443);
    let path = svc["path"].as_str().unwrap_or("/");
    let host = format!("{name}.{ns}.svc");
    let connect = match routes.get(&(ns.to_owned(), name.to_owned())) {
        Some(addr) => addr.to_string(),
        None => {
            let service = store
                .get_raw(&ResourceKey::new("", "services"), ns, name)
                .ok_or_else(|| format!("service \"{name}\" not found"))?;
            let ports = service["spec"]["ports"].as_array().cloned().unwrap_or_default();
            let p = ports
                .iter()
                .find(|p| p["port"].as_u64() == Some(port))
                .ok_or_else(|| format!("service {ns}/{name} has no port {port}"))?;
            let target = p["targetPort"].as_u64().or_else(|| p["port"].as_u64()).ok_or_else(|| {
                format!("service {ns}/{name} port {port}: named targetPorts are not resolved by the simulator")
            })?;
            format!("127.0.0.1:{target}")
        }
    };
    Ok(Endpoint {
        url: format!("https://{host}:{port}{path}?timeout={timeout}s"),
        connect,
        authority: format!("{host}:{port}"),
        server_name: host,
        path_and_query: format!("{path}?timeout={timeout}s"),
        ca,
    })
}

/// The webhooks that could apply to writes of this resource, in the order upstream calls them.
fn configured(
    store: &Store,
    rt: &ResourceType,
    sub: Option<&str>,
    routes: &HashMap<(String, String), SocketAddr>,
) -> Vec<Hook> {
    if sub == Some("scale") {
        return Vec::new();
    }
    let mut configs =
        store.all(&ResourceKey::new("admissionregistration.k8s.io", "mutatingwebhookconfigurations"), None);
    configs.sort_by(|a, b| a["metadata"]["name"].as_str().cmp(&b["metadata"]["name"].as_str()));
    configs
        .iter()
        .flat_map(|c| c["webhooks"].as_array().cloned().unwrap_or_default())
        .filter(|w| {
            w["rules"]
                .as_array()
                .into_iter()
                .flatten()
                .map(Rule::parse)
                .any(|r| r.matches("CREATE", rt, sub) || r.matches("UPDATE", rt, sub))
        })
        .map(|w| Hook::parse(&w, store, routes))
        .collect()
}

/// Whether a pod created now might be changed by a webhook: the simulated controllers then
/// create pods through [`write`] instead of directly.
pub fn pods_hooked(store: &Store) -> bool {
    let Some(rt) = store.registry.get("", "v1", "pods") else { return false };
    store
        .all(&ResourceKey::new("admissionregistration.k8s.io", "mutatingwebhookconfigurations"), None)
        .iter()
        .flat_map(|c| c["webhooks"].as_array().cloned().unwrap_or_default())
        .any(|w| w["rules"].as_array().into_iter().flatten().any(|r| Rule::parse(r).matches("CREATE", rt, None)))
}

/// A write as the HTTP layer received it.
#[derive(Clone, Debug)]
pub enum Write {
    Create(Value),
    Update(Value),
    Patch(PatchType, Value),
}

impl Write {
    fn run(&self, store: &mut Store, t: &Target, opts: &WriteOptions, now: jiff::Timestamp) -> Result<Value, ApiError> {
        match self {
            Write::Create(b) => store.create(t, b.clone(), opts, now),
            Write::Update(b) => store.update(t, b.clone(), opts, now),
            Write::Patch(k, b) => store.patch(t, *k, b, opts, now),
        }
    }

    fn options_kind(&self) -> &'static str {
        match self {
            Write::Create(_) => "CreateOptions",
            Write::Update(_) => "UpdateOptions",
            Write::Patch(..) => "PatchOptions",
        }
    }
}

/// What one admission request is about.
#[derive(Debug)]
struct Request<'a> {
    rt: &'a ResourceType,
    sub: Option<&'a str>,
    operation: &'static str,
    namespace: Option<&'a str>,
    object: &'a Value,
    old: Option<&'a Value>,
}

/// Performs a write with mutating admission: the path every create, update and patch takes,
/// from the HTTP layer and from the simulated controllers alike.
pub async fn write(
    cluster: &Cluster,
    t: &Target,
    w: &Write,
    opts: &WriteOptions,
    user: &str,
) -> Result<Value, ApiError> {
    let sub = t.subresource.as_deref();
    for _ in 0..MAX_ATTEMPTS {
        let (hooks, captured, namespace_labels) = {
            let routes = cluster.shared.routes.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
            let mut store = cluster.store();
            let hooks = configured(&store, &t.rt, sub, &routes);
            if hooks.is_empty() {
                return w.run(&mut store, t, opts, cluster.now());
            }
            let capture = WriteOptions { dry_run: true, admission: Admission::Capture, ..opts.clone() };
            w.run(&mut store, t, &capture, cluster.now())?;
            let Some(captured) = store.take_captured() else {
                return w.run(&mut store, t, opts, cluster.now());
            };
            let ns = captured.object["metadata"]["namespace"].as_str().unwrap_or_default();
            let labels =
                store.get_raw(&ResourceKey::new("", "namespaces"), "", ns).map(|n| labels_of(&n)).unwrap_or_default();
            (hooks, captured, labels)
        };
        let req = Request {
            rt: &t.rt,
            sub,
            operation: if captured.old.is_some() { "UPDATE" } else { "CREATE" },
            namespace: captured.object["metadata"]["namespace"].as_str(),
            object: &captured.object,
            old: captured.old.as_ref(),
        };
        let chosen: Vec<&Hook> = hooks.iter().filter(|h| h.selects(&req, &namespace_labels)).collect();
        let object = if chosen.is_empty() {
            None
        } else {
            let meta =
                json!({"apiVersion": "meta.k8s.io/v1", "kind": w.options_kind(), "fieldManager": opts.field_manager});
            Some(call_all(&chosen, &req, opts.dry_run, &meta, user).await?)
        };
        let old_rv = captured.old.as_ref().and_then(|o| o["metadata"]["resourceVersion"].as_str()).map(str::to_owned);
        let admission = match object {
            Some(o) => Admission::Replace { object: Arc::new(o), old_rv },
            None => Admission::Replace { object: Arc::new(captured.object.clone()), old_rv },
        };
        let commit = WriteOptions { admission, ..opts.clone() };
        match w.run(&mut cluster.store(), t, &commit, cluster.now()) {
            Err(e) if e.stale => continue,
            r => return r,
        }
    }
    Err(ApiError::conflict_msg(
        &t.rt.key().to_string(),
        t.name.as_deref().unwrap_or_default(),
        "the object kept changing while admission webhooks were called; try again",
        vec![],
    ))
}

static REQUEST_SEQ: AtomicU64 = AtomicU64::new(1);

fn request_uid() -> String {
    let n = REQUEST_SEQ.fetch_add(1, Ordering::Relaxed);
    format!("00000000-0000-4000-8000-{n:012x}")
}

/// Calls the chosen webhooks in order, each on the previous one's output, then once more those
/// with `reinvocationPolicy: IfNeeded` that a later webhook's change may concern.
async fn call_all(
    chosen: &[&Hook],
    req: &Request<'_>,
    dry_run: bool,
    options: &Value,
    user: &str,
) -> Result<Value, ApiError> {
    let mut obj = req.object.clone();
    let mut last_change = None;
    for (i, h) in chosen.iter().enumerate() {
        let next = call_one(h, req, &obj, dry_run, options, user).await?;
        if next != obj {
            last_change = Some(i);
            obj = next;
        }
    }
    if let Some(last) = last_change {
        for h in chosen.iter().take(last).filter(|h| h.reinvoke) {
            obj = call_one(h, req, &obj, dry_run, options, user).await?;
        }
    }
    Ok(obj)
}

/// One call, with the failure policy applied: a webhook that cannot be reached, times out or
/// answers nonsense rejects the write when it fails closed and is skipped when it fails open; a
/// webhook that says no always rejects.
async fn call_one(
    h: &Hook,
    req: &Request<'_>,
    obj: &Value,
    dry_run: bool,
    options: &Value,
    user: &str,
) -> Result<Value, ApiError> {
    let uid = request_uid();
    let review = review(&uid, req, obj, dry_run, options, user);
    let result = match &h.endpoint {
        Err(e) => Err(e.clone()),
        Ok(ep) => post(ep, &review, h.timeout).await.map_err(|e| format!("Post \"{}\": {e}", ep.url)),
    };
    let outcome = result
        .map_err(|e| Failure::Call(format!("failed to call webhook: {e}")))
        .and_then(|resp| respond(&h.name, &uid, &resp, obj));
    match outcome {
        Ok(o) => Ok(o),
        Err(Failure::Reject(e)) => Err(e),
        Err(Failure::Call(msg)) if h.fail_closed => {
            tracing::warn!(webhook = %h.name, error = %msg, "webhook call failed; failurePolicy Fail rejects the request");
            Err(ApiError::internal(format!("Internal error occurred: failed calling webhook \"{}\": {msg}", h.name)))
        }
        Err(Failure::Call(msg)) => {
            tracing::warn!(webhook = %h.name, error = %msg, "webhook call failed; failurePolicy Ignore lets the request through");
            Ok(obj.clone())
        }
    }
}

/// The AdmissionReview v1 request body.
fn review(uid: &str, req: &Request<'_>, obj: &Value, dry_run: bool, options: &Value, user: &str) -> Value {
    let rt = req.rt;
    let kind = json!({"group": rt.group, "version": rt.version, "kind": rt.kind});
    let resource = json!({"group": rt.group, "version": rt.version, "resource": rt.plural});
    let mut r = json!({
        "uid": uid, "kind": kind, "resource": resource, "requestKind": kind, "requestResource": resource,
        "name": obj["metadata"]["name"].as_str().unwrap_or_default(),
        "operation": req.operation,
        "userInfo": {"username": user, "groups": ["system:authenticated"]},
        "object": obj, "oldObject": req.old.cloned().unwrap_or(Value::Null),
        "dryRun": dry_run, "options": options,
    });
    if let Some(s) = req.sub {
        r["subResource"] = json!(s);
        r["requestSubResource"] = json!(s);
    }
    if let Some(ns) = req.namespace {
        r["namespace"] = json!(ns);
    }
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": r})
}

/// Why a webhook's answer did not produce an object.
#[derive(Debug)]
enum Failure {
    /// Subject to the failure policy.
    Call(String),
    /// Rejects the request whatever the policy.
    Reject(ApiError),
}

/// Interprets an AdmissionReview response: the patched object, a denial, or a bad answer.
fn respond(hook: &str, uid: &str, review: &Value, obj: &Value) -> Result<Value, Failure> {
    let invalid = |why: String| Failure::Call(format!("received invalid webhook response: {why}"));
    if !matches!(review["apiVersion"].as_str(), Some("admission.k8s.io/v1" | "admission.k8s.io/v1beta1"))
        || review["kind"] != "AdmissionReview"
    {
        return Err(invalid(format!(
            "expected admission.k8s.io/v1, Kind=AdmissionReview, got {}, Kind={}",
            review["apiVersion"].as_str().unwrap_or_default(),
            review["kind"].as_str().unwrap_or_default()
        )));
    }
    let resp = &review["response"];
    if !resp.is_object() {
        return Err(invalid("response is missing".into()));
    }
    if resp["uid"].as_str() != Some(uid) {
        return Err(invalid(format!(
            "expected response.uid=\"{uid}\", got \"{}\"",
            resp["uid"].as_str().unwrap_or_default()
        )));
    }
    if resp["allowed"] != Value::Bool(true) {
        return Err(Failure::Reject(denied(hook, &resp["status"])));
    }
    let Some(patch) = resp["patch"].as_str().filter(|p| !p.is_empty()) else { return Ok(obj.clone()) };
    if resp["patchType"].as_str() != Some("JSONPatch") {
        return Err(invalid(format!(
            "webhook returned response.patch with patchType {:?}; only JSONPatch is supported",
            resp["patchType"].as_str().unwrap_or_default()
        )));
    }
    let reject = |why: String| Failure::Reject(ApiError::internal(format!("Internal error occurred: {why}")));
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(patch)
        .map_err(|e| reject(format!("webhook {hook:?} returned a patch that is not base64: {e}")))?;
    let ops: Value = serde_json::from_slice(&bytes)
        .map_err(|e| reject(format!("webhook {hook:?} returned a patch that is not JSON: {e}")))?;
    let mut out = obj.clone();
    crate::patch::json_patch(&mut out, &ops)
        .map_err(|e| reject(format!("webhook {hook:?} returned a patch that does not apply: {e}")))?;
    Ok(out)
}

/// Upstream's wording and code for a denial: the webhook's own code if it is an error code
/// (400 otherwise) and its message, reason or "without explanation".
fn denied(hook: &str, status: &Value) -> ApiError {
    let code = status["code"].as_u64().filter(|c| (400..600).contains(c)).unwrap_or(400) as u16;
    let by = format!("admission webhook \"{hook}\" denied the request");
    let message = match (status["message"].as_str().filter(|m| !m.is_empty()), status["reason"].as_str()) {
        (Some(m), _) => format!("{by}: {m}"),
        (None, Some(r)) if !r.is_empty() => format!("{by}: {r}"),
        _ => format!("{by} without explanation"),
    };
    ApiError::from_code(code, message)
}

/// POSTs a review over HTTPS, trusting only the configured CA bundle.
async fn post(ep: &Endpoint, review: &Value, timeout: Duration) -> Result<Value, String> {
    let body = serde_json::to_vec(review).map_err(|e| e.to_string())?;
    let call = async {
        let tcp =
            tokio::net::TcpStream::connect(&ep.connect).await.map_err(|e| format!("dial tcp {}: {e}", ep.connect))?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in <rustls::pki_types::CertificateDer<'_> as rustls::pki_types::pem::PemObject>::pem_slice_iter(&ep.ca)
            .flatten()
        {
            let _ = roots.add(cert);
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from(ep.server_name.clone()).map_err(|e| e.to_string())?;
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(|e| format!("tls: {e}"))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .map_err(|e| e.to_string())?;
        let driver = tokio::spawn(conn);
        let req = http::Request::post(ep.path_and_query.as_str())
            .header(http::header::HOST, ep.authority.as_str())
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::ACCEPT, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let resp = sender.send_request(req).await.map_err(|e| e.to_string());
        let out = match resp {
            Ok(resp) => {
                let status = resp.status();
                let bytes = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
                if !status.is_success() {
                    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(256)]).into_owned();
                    Err(format!("the server responded with status {status}: {text}"))
                } else {
                    serde_json::from_slice(&bytes).map_err(|e| format!("received invalid webhook response: {e}"))
                }
            }
            Err(e) => Err(e),
        };
        driver.abort();
        out
    };
    tokio::time::timeout(timeout, call).await.unwrap_or_else(|_| Err("context deadline exceeded".into()))
}

#[cfg(test)]
mod tests;
