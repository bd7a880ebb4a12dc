//! The HTTP face of the simulated API server: kube-apiserver's URL layout, discovery, OpenAPI,
//! Table printing and streaming watches over the [`Store`].

use crate::admission::{self, Write};
use crate::clock::Clock;
use crate::error::ApiError;
use crate::registry::ResourceType;
use crate::selector::{FieldSelector, LabelSelector};
use crate::store::{DeleteOptions, EventType, ListOptions, PatchType, Store, Target, WatchEvent, WriteOptions};
use crate::{metrics_api, openapi, table};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use http::{HeaderMap, Method, StatusCode, Uri, header};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;

/// Who every HTTP client is: the kubeconfig's user (the simulator does not authenticate).
const USER: &str = "kubernetes-admin";

/// Series of one external metric: labels and a quantity each.
pub type ExternalSeries = Vec<(BTreeMap<String, String>, String)>;

/// Virtual `metrics.k8s.io` objects, refreshed by the simulated kubelets, and the values the
/// custom and external metrics APIs serve.
#[derive(Debug, Default)]
pub struct MetricsTable {
    pub pods: BTreeMap<(String, String), Value>,
    pub nodes: BTreeMap<String, Value>,
    /// (namespace, resource, object, metric) → quantity, refreshed every step (per-pod
    /// `requests_per_second` of workloads with a load model).
    pub custom: BTreeMap<(String, String, String, String), String>,
    /// (namespace, metric) → series (labels, quantity), refreshed every step from the scenario.
    pub external: BTreeMap<(String, String), ExternalSeries>,
    /// Values set with [`Cluster::set_custom_metric`]; they win over refreshed ones.
    pub fixed_custom: BTreeMap<(String, String, String, String), String>,
    /// Series set with [`Cluster::set_external_metric`], served with the refreshed ones.
    pub fixed_external: BTreeMap<(String, String), ExternalSeries>,
}

/// Everything the HTTP layer and the simulated control plane share.
#[derive(Debug)]
pub struct Shared {
    pub store: Mutex<Store>,
    pub clock: Clock,
    pub metrics: RwLock<MetricsTable>,
    /// Longest a watch stays open before the server ends it (clients reconnect), on the wall clock.
    pub max_watch: Duration,
    /// How often open watches receive a BOOKMARK, on the wall clock.
    pub bookmark_every: Duration,
    /// Cancelled when the cluster shuts down: open watches end at once.
    pub stopping: tokio_util::sync::CancellationToken,
    /// Where webhook Services are reached when not at 127.0.0.1:targetPort.
    pub routes: RwLock<HashMap<(String, String), std::net::SocketAddr>>,
}

/// A handle to one simulated cluster.
#[derive(Clone, Debug)]
pub struct Cluster {
    pub shared: Arc<Shared>,
}

impl Cluster {
    pub fn new(clock: Clock, history: usize) -> Self {
        let store = Store::new(history, clock.now());
        Self {
            shared: Arc::new(Shared {
                store: Mutex::new(store),
                clock,
                metrics: RwLock::new(MetricsTable::default()),
                max_watch: Duration::from_secs(300),
                bookmark_every: Duration::from_secs(5),
                stopping: tokio_util::sync::CancellationToken::new(),
                routes: RwLock::new(HashMap::new()),
            }),
        }
    }

    /// Builder for tests that exercise reconnects and bookmarks.
    pub fn with_watch_timing(self, max_watch: Duration, bookmark_every: Duration) -> Self {
        let Shared { store, clock, metrics, stopping, routes, .. } = match Arc::try_unwrap(self.shared) {
            Ok(s) => s,
            Err(shared) => return Self { shared },
        };
        Self { shared: Arc::new(Shared { store, clock, metrics, max_watch, bookmark_every, stopping, routes }) }
    }

    /// Sends admission webhook calls for Service `namespace/name` to `addr` (an in-process
    /// webhook server on an ephemeral port, say) instead of 127.0.0.1:targetPort.
    pub fn route_service(&self, namespace: &str, name: &str, addr: std::net::SocketAddr) {
        self.shared
            .routes
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert((namespace.to_owned(), name.to_owned()), addr);
    }

    /// Serves `value` (a quantity) as custom metric `metric` of object `name` of `resource`
    /// (`pods`, `services`, `deployments.apps`, or `namespaces` with the namespace as name).
    pub fn set_custom_metric(&self, namespace: &str, resource: &str, name: &str, metric: &str, value: &str) {
        let mut m = self.shared.metrics.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        m.fixed_custom.insert((namespace.into(), resource.into(), name.into(), metric.into()), value.into());
    }

    /// Replaces the series of external metric `metric` in `namespace` (an empty list removes it).
    pub fn set_external_metric(&self, namespace: &str, metric: &str, series: ExternalSeries) {
        let mut m = self.shared.metrics.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if series.is_empty() {
            m.fixed_external.remove(&(namespace.to_owned(), metric.to_owned()));
        } else {
            m.fixed_external.insert((namespace.into(), metric.into()), series);
        }
    }

    /// Locks the store. A panic while holding the lock would poison it; the store is still
    /// consistent (each write is one `commit`), so the poison is ignored.
    pub fn store(&self) -> MutexGuard<'_, Store> {
        self.shared.store.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn now(&self) -> jiff::Timestamp {
        self.shared.clock.now()
    }

    pub fn router(&self) -> Router {
        Router::new().fallback(handle).with_state(self.clone())
    }
}

fn json_response(code: u16, v: &Value) -> Response {
    let body = serde_json::to_vec(v).unwrap_or_default();
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

fn error_response(e: &ApiError) -> Response {
    json_response(e.code, &e.status())
}

#[derive(Debug, Default)]
struct Query(HashMap<String, String>);

impl Query {
    fn parse(uri: &Uri) -> Self {
        let mut m = HashMap::new();
        for pair in uri.query().unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            m.insert(decode(k), decode(v));
        }
        Self(m)
    }

    fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str).filter(|s| !s.is_empty())
    }

    fn flag(&self, k: &str) -> bool {
        matches!(self.0.get(k).map(String::as_str), Some("true" | "1"))
    }
}

/// Decodes a query-string component (`%XX` escapes, `+` for space).
pub(crate) fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'+', _) => out.push(b' '),
            (b'%', Some(b)) => {
                out.push(b);
                i += 2;
            }
            (b, _) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn handle(State(cluster): State<Cluster>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let path = uri.path().trim_end_matches('/').to_owned();
    let q = Query::parse(&uri);
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    tracing::debug!(%method, %uri, "request");
    // A bug must not cost the client its connection: a panic becomes a 500 Status.
    let routed = std::panic::AssertUnwindSafe(route(&cluster, &method, &segs, &q, &headers, &body));
    let result = match futures::FutureExt::catch_unwind(routed).await {
        Ok(r) => r,
        Err(_) => {
            tracing::error!(%method, %uri, "request handler panicked");
            Err(ApiError::internal("the simulated API server failed to handle this request"))
        }
    };
    match result {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(%method, %uri, code = e.code, message = %e.message, "request failed");
            error_response(&e)
        }
    }
}

async fn route(
    cluster: &Cluster,
    method: &Method,
    segs: &[&str],
    q: &Query,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response, ApiError> {
    match segs {
        ["version"] => Ok(json_response(200, &version())),
        ["healthz" | "readyz" | "livez"] => Ok((StatusCode::OK, "ok").into_response()),
        ["openapi", "v3"] => Ok(json_response(200, &openapi::index(&cluster.store().registry))),
        ["openapi", "v3", "api", v] => doc(cluster, "", v),
        ["openapi", "v3", "apis", g, v] => doc(cluster, g, v),
        ["openapi", "v2"] => Err(ApiError::not_found("openapi", "v2")),
        ["api"] => Ok(json_response(
            200,
            &json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]}),
        )),
        ["apis"] => Ok(json_response(200, &group_list(cluster))),
        ["api", "v1"] => resource_list(cluster, "", "v1"),
        ["apis", g] => group(cluster, g),
        ["apis", g, v] => resource_list(cluster, g, v),
        ["apis", "custom.metrics.k8s.io", "v1beta2", rest @ ..] => custom_metrics(cluster, rest, method, q),
        ["apis", "external.metrics.k8s.io", "v1beta1", rest @ ..] => external_metrics(cluster, rest, method, q),
        ["api", "v1", rest @ ..] => resource(cluster, "", "v1", rest, method, q, headers, body).await,
        ["apis", g, v, rest @ ..] => resource(cluster, g, v, rest, method, q, headers, body).await,
        _ => Err(ApiError::not_found("path", &format!("/{}", segs.join("/")))),
    }
}

fn version() -> Value {
    json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0-omniscale-sim", "gitCommit": "0000000000000000000000000000000000000000",
           "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z", "goVersion": "n/a", "compiler": "rustc", "platform": "linux/amd64"})
}

fn doc(cluster: &Cluster, g: &str, v: &str) -> Result<Response, ApiError> {
    let registry = cluster.store().registry.clone();
    openapi::document(&registry, g, v)
        .map(|d| json_response(200, &d))
        .ok_or_else(|| ApiError::not_found("openapi", &format!("{g}/{v}")))
}

fn group_json(name: &str, versions: &[String]) -> Value {
    let vs: Vec<Value> =
        versions.iter().map(|v| json!({"groupVersion": format!("{name}/{v}"), "version": v})).collect();
    json!({"name": name, "versions": vs, "preferredVersion": vs.first().cloned().unwrap_or(Value::Null)})
}

fn group_list(cluster: &Cluster) -> Value {
    let groups = cluster.store().registry.groups();
    let list: Vec<Value> = groups.iter().filter(|(g, _)| !g.is_empty()).map(|(g, vs)| group_json(g, vs)).collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": list})
}

fn group(cluster: &Cluster, g: &str) -> Result<Response, ApiError> {
    let groups = cluster.store().registry.groups();
    let vs = groups.get(g).ok_or_else(|| ApiError::not_found("groups", g))?;
    let mut v = group_json(g, vs);
    v["kind"] = json!("APIGroup");
    v["apiVersion"] = json!("v1");
    Ok(json_response(200, &v))
}

fn resource_list(cluster: &Cluster, g: &str, v: &str) -> Result<Response, ApiError> {
    let store = cluster.store();
    let types: Vec<&ResourceType> = store.registry.all().filter(|t| t.group == g && t.version == v).collect();
    if types.is_empty() {
        return Err(ApiError::not_found("groupversion", &format!("{g}/{v}")));
    }
    let mut resources = Vec::new();
    for t in types {
        let mut r = json!({"name": t.plural, "singularName": t.singular, "namespaced": t.namespaced, "kind": t.kind, "verbs": t.verbs});
        if !t.short_names.is_empty() {
            r["shortNames"] = json!(t.short_names);
        }
        if !t.categories.is_empty() {
            r["categories"] = json!(t.categories);
        }
        resources.push(r);
        if t.status {
            resources.push(json!({"name": format!("{}/status", t.plural), "singularName": "", "namespaced": t.namespaced, "kind": t.kind, "verbs": ["get", "patch", "update"]}));
        }
        if t.scale.is_some() {
            resources.push(json!({"name": format!("{}/scale", t.plural), "singularName": "", "namespaced": t.namespaced, "group": "autoscaling", "version": "v1", "kind": "Scale", "verbs": ["get", "patch", "update"]}));
        }
        for sub in &t.extra_subresources {
            let (kind, group, version, verbs) = match *sub {
                "eviction" => ("Eviction", "policy", "v1", json!(["create"])),
                "binding" => ("Binding", "", "v1", json!(["create"])),
                _ => (t.kind.as_str(), "", "", json!(["get", "patch", "update"])),
            };
            let mut r = json!({"name": format!("{}/{sub}", t.plural), "singularName": "", "namespaced": t.namespaced, "kind": kind, "verbs": verbs});
            if !group.is_empty() {
                r["group"] = json!(group);
                r["version"] = json!(version);
            }
            resources.push(r);
        }
    }
    let gv = if g.is_empty() { v.to_owned() } else { format!("{g}/{v}") };
    Ok(json_response(
        200,
        &json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
    ))
}

/// Splits `[namespaces/{ns}/]{plural}[/{name}[/{sub}]]`.
/// (namespace, plural, name, subresource) of a resource path.
type PathParts<'a> = (Option<&'a str>, &'a str, Option<&'a str>, Option<&'a str>);

fn parse_target<'a>(rest: &[&'a str]) -> Option<PathParts<'a>> {
    match rest {
        ["namespaces"] => Some((None, "namespaces", None, None)),
        ["namespaces", name] => Some((None, "namespaces", Some(name), None)),
        ["namespaces", name, sub @ ("status" | "finalize")] => Some((None, "namespaces", Some(name), Some(sub))),
        ["namespaces", ns, plural] => Some((Some(ns), plural, None, None)),
        ["namespaces", ns, plural, name] => Some((Some(ns), plural, Some(name), None)),
        ["namespaces", ns, plural, name, sub] => Some((Some(ns), plural, Some(name), Some(sub))),
        [plural] => Some((None, plural, None, None)),
        [plural, name] => Some((None, plural, Some(name), None)),
        [plural, name, sub] => Some((None, plural, Some(name), Some(sub))),
        _ => None,
    }
}

fn wants_table(headers: &HeaderMap) -> bool {
    headers.get(header::ACCEPT).and_then(|a| a.to_str().ok()).is_some_and(|a| a.contains("as=Table"))
}

fn write_options(q: &Query, headers: &HeaderMap) -> WriteOptions {
    let manager = q.get("fieldManager").map(str::to_owned).unwrap_or_else(|| {
        headers
            .get(header::USER_AGENT)
            .and_then(|u| u.to_str().ok())
            .map(|u| u.split('/').next().unwrap_or(u).to_owned())
            .unwrap_or_else(|| "unknown".into())
    });
    WriteOptions {
        field_manager: manager,
        force: q.flag("force"),
        dry_run: q.get("dryRun").is_some(),
        strict: q.get("fieldValidation") == Some("Strict"),
        admission: Default::default(),
    }
}

fn parse_body(headers: &HeaderMap, body: &Bytes) -> Result<Value, ApiError> {
    let ct = headers.get(header::CONTENT_TYPE).and_then(|c| c.to_str().ok()).unwrap_or("application/json");
    if ct.contains("yaml") {
        let text = std::str::from_utf8(body).map_err(|_| ApiError::bad_request("body is not UTF-8"))?;
        serde_yaml::from_str(text).map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))
    } else if ct.contains("protobuf") {
        Err(ApiError::unsupported_media_type(ct))
    } else {
        serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("couldn't get version/kind; json parse error: {e}")))
    }
}

#[allow(clippy::too_many_arguments)]
async fn resource(
    cluster: &Cluster,
    g: &str,
    v: &str,
    rest: &[&str],
    method: &Method,
    q: &Query,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response, ApiError> {
    let (ns, plural, name, sub) = parse_target(rest).ok_or_else(|| ApiError::not_found("path", &rest.join("/")))?;
    let rt = cluster
        .store()
        .registry
        .get(g, v, plural)
        .cloned()
        .ok_or_else(|| ApiError::not_found("the server could not find the requested resource", plural))?;
    if ns.is_some() && !rt.namespaced {
        return Err(ApiError::not_found("the server could not find the requested resource", plural));
    }
    if rt.group == "metrics.k8s.io" {
        return metrics(cluster, &rt, ns, name, method, q);
    }
    let mut target = Target::new(&rt, ns, name);
    if let Some(s) = sub {
        let known =
            (s == "status" && rt.status) || (s == "scale" && rt.scale.is_some()) || rt.extra_subresources.contains(&s);
        if !known {
            return Err(ApiError::not_found(&format!("{}/{s}", rt.key()), name.unwrap_or_default()));
        }
        target = target.with_subresource(s);
    }
    let now = cluster.now();
    match (method.clone(), name, sub) {
        (Method::GET, None, _) if q.flag("watch") => watch(cluster, &rt, ns, q, headers),
        (Method::GET, Some(n), None) if q.flag("watch") => {
            let mut q2 = Query(q.0.clone());
            q2.0.insert("fieldSelector".into(), format!("metadata.name={n}"));
            watch(cluster, &rt, ns, &q2, headers)
        }
        (Method::GET, None, _) => {
            let opts = list_options(q)?;
            let list = cluster.store().list(&target, &opts)?;
            if wants_table(headers) {
                let items = list["items"].as_array().cloned().unwrap_or_default();
                let t = table::table(
                    &rt,
                    &items,
                    q.get("includeObject").unwrap_or("Metadata"),
                    now,
                    list["metadata"].clone(),
                );
                return Ok(json_response(200, &t));
            }
            Ok(json_response(200, &list))
        }
        (Method::GET, Some(_), _) => {
            let obj = cluster.store().get(&target)?;
            if wants_table(headers) && sub.is_none() {
                let t = table::table(
                    &rt,
                    std::slice::from_ref(&obj),
                    q.get("includeObject").unwrap_or("Metadata"),
                    now,
                    json!({"resourceVersion": obj["metadata"]["resourceVersion"]}),
                );
                return Ok(json_response(200, &t));
            }
            Ok(json_response(200, &obj))
        }
        (Method::POST, None, None) => {
            let obj = parse_body(headers, body)?;
            let created =
                admission::write(cluster, &target, &Write::Create(obj), &write_options(q, headers), USER).await?;
            Ok(json_response(201, &created))
        }
        (Method::POST, Some(n), Some("eviction")) => {
            let obj = parse_body(headers, body)?;
            let r = cluster.store().evict(ns.unwrap_or_default(), n, &obj, now)?;
            Ok(json_response(201, &r))
        }
        (Method::POST, Some(n), Some("binding")) => {
            let obj = parse_body(headers, body)?;
            let r = cluster.store().bind(ns.unwrap_or_default(), n, &obj)?;
            Ok(json_response(201, &r))
        }
        (Method::PUT, Some(_), _) => {
            let obj = parse_body(headers, body)?;
            let updated =
                admission::write(cluster, &target, &Write::Update(obj), &write_options(q, headers), USER).await?;
            Ok(json_response(200, &updated))
        }
        (Method::PATCH, Some(_), _) => {
            let ct = headers.get(header::CONTENT_TYPE).and_then(|c| c.to_str().ok()).unwrap_or("");
            let kind = PatchType::from_content_type(ct).ok_or_else(|| ApiError::unsupported_media_type(ct))?;
            let patch = if kind == PatchType::Apply {
                parse_body(&yaml_headers(), body)?
            } else {
                serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?
            };
            let code = if kind == PatchType::Apply
                && cluster.store().get(&Target { subresource: None, ..target.clone() }).is_err()
            {
                201
            } else {
                200
            };
            let r = admission::write(cluster, &target, &Write::Patch(kind, patch), &write_options(q, headers), USER)
                .await?;
            Ok(json_response(code, &r))
        }
        (Method::DELETE, Some(_), None) => {
            let body_opts: Value =
                if body.is_empty() { Value::Null } else { serde_json::from_slice(body).unwrap_or(Value::Null) };
            let opts = delete_options(q, &body_opts);
            let r = cluster.store().delete(&target, &opts, now)?;
            Ok(json_response(200, &r))
        }
        (Method::DELETE, None, None) => {
            let body_opts: Value =
                if body.is_empty() { Value::Null } else { serde_json::from_slice(body).unwrap_or(Value::Null) };
            let opts = delete_options(q, &body_opts);
            let r = cluster.store().delete_collection(&target, &list_options(q)?, &opts, now)?;
            Ok(json_response(200, &r))
        }
        (m, _, _) => Err(ApiError::method_not_allowed(format!(
            "the server does not allow this method on the requested resource: {m}"
        ))),
    }
}

fn yaml_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(header::CONTENT_TYPE, http::HeaderValue::from_static("application/yaml"));
    h
}

fn list_options(q: &Query) -> Result<ListOptions, ApiError> {
    let labels = match q.get("labelSelector") {
        Some(s) => LabelSelector::parse(s).map_err(ApiError::bad_request)?,
        None => LabelSelector::everything(),
    };
    let fields = match q.get("fieldSelector") {
        Some(s) => FieldSelector::parse(s).map_err(ApiError::bad_request)?,
        None => FieldSelector::default(),
    };
    let limit = match q.get("limit") {
        Some(l) => Some(l.parse::<usize>().map_err(|_| ApiError::bad_request(format!("invalid limit: {l}")))?),
        None => None,
    };
    Ok(ListOptions { labels, fields, limit, continue_: q.get("continue").map(str::to_owned) })
}

fn delete_options(q: &Query, body: &Value) -> DeleteOptions {
    DeleteOptions {
        propagation: q
            .get("propagationPolicy")
            .map(str::to_owned)
            .or_else(|| body["propagationPolicy"].as_str().map(str::to_owned)),
        grace_period: q
            .get("gracePeriodSeconds")
            .and_then(|g| g.parse().ok())
            .or_else(|| body["gracePeriodSeconds"].as_i64()),
        precondition_uid: body["preconditions"]["uid"].as_str().map(str::to_owned),
        precondition_rv: body["preconditions"]["resourceVersion"].as_str().map(str::to_owned),
        dry_run: q.get("dryRun").is_some() || body["dryRun"].is_array(),
    }
}

fn metrics(
    cluster: &Cluster,
    rt: &ResourceType,
    ns: Option<&str>,
    name: Option<&str>,
    method: &Method,
    q: &Query,
) -> Result<Response, ApiError> {
    if method != Method::GET {
        return Err(ApiError::method_not_allowed("metrics are read-only"));
    }
    if q.flag("watch") {
        return Err(ApiError::method_not_allowed("watch is not supported on metrics.k8s.io"));
    }
    let labels = list_options(q)?.labels;
    let table = cluster.shared.metrics.read().unwrap_or_else(std::sync::PoisonError::into_inner);
    metrics_api::resource_metrics(&table, &rt.plural, ns, name, &labels).map(|v| json_response(200, &v))
}

/// The kind and apiVersion a custom metrics adapter reports for a resource name.
fn described_kind(registry: &crate::registry::Registry, resource: &str) -> (String, String) {
    let (plural, group) = resource.split_once('.').unwrap_or((resource, ""));
    let found = registry.all().find(|rt| rt.plural == plural && rt.group == group);
    match found {
        Some(rt) => (rt.kind.clone(), if group.is_empty() { format!("/{}", rt.version) } else { rt.api_version() }),
        None => (plural.to_owned(), String::new()),
    }
}

/// custom.metrics.k8s.io/v1beta2 (see [`metrics_api::custom_metrics`]).
fn custom_metrics(cluster: &Cluster, rest: &[&str], method: &Method, q: &Query) -> Result<Response, ApiError> {
    if method != Method::GET {
        return Err(ApiError::method_not_allowed("metrics are read-only"));
    }
    let labels = list_options(q)?.labels;
    // A pod label selector narrows `pods/*` to the pods it selects, as adapters do. Read before
    // the metrics table is locked: the control loop takes the store, then the table.
    let selected: Option<std::collections::BTreeSet<String>> = match rest {
        ["namespaces", ns, "pods", ..] if !labels.is_empty() => Some(
            cluster
                .store()
                .all(&crate::registry::ResourceKey::new("", "pods"), Some(ns))
                .iter()
                .filter(|p| labels.matches_object(p))
                .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_owned))
                .collect(),
        ),
        _ => None,
    };
    let now = crate::store::ts(cluster.now());
    // The registry is copied out for the same reason: `described` runs with the table locked,
    // and taking the store there would invert the control loop's order (a deadlock).
    let registry = cluster.store().registry.clone();
    let described = |r: &str| described_kind(&registry, r);
    let table = cluster.shared.metrics.read().unwrap_or_else(std::sync::PoisonError::into_inner);
    metrics_api::custom_metrics(&table, rest, &now, described, selected.as_ref()).map(|v| json_response(200, &v))
}

/// external.metrics.k8s.io/v1beta1 (see [`metrics_api::external_metrics`]).
fn external_metrics(cluster: &Cluster, rest: &[&str], method: &Method, q: &Query) -> Result<Response, ApiError> {
    if method != Method::GET {
        return Err(ApiError::method_not_allowed("metrics are read-only"));
    }
    let labels = list_options(q)?.labels;
    let now = crate::store::ts(cluster.now());
    let table = cluster.shared.metrics.read().unwrap_or_else(std::sync::PoisonError::into_inner);
    metrics_api::external_metrics(&table, rest, &now, &labels).map(|v| json_response(200, &v))
}

// ---------------------------------------------------------------------------------------------
// Watch

struct WatchFilter {
    rt: ResourceType,
    ns: Option<String>,
    labels: LabelSelector,
    fields: FieldSelector,
    table: bool,
    include: String,
}

impl WatchFilter {
    fn matches(&self, o: &Value) -> bool {
        self.labels.matches_object(o) && self.fields.matches(o)
    }

    /// Translates a stored event into what this watcher should see, if anything.
    fn translate(&self, e: &WatchEvent) -> Option<(EventType, Value)> {
        if e.key != self.rt.key() || self.ns.as_ref().is_some_and(|n| *n != e.namespace) {
            return None;
        }
        let now_matches = self.matches(&e.object);
        let was = e.prev.as_ref().map(|p| self.matches(p));
        let t = match (e.type_, was, now_matches) {
            (EventType::Deleted, _, true) => EventType::Deleted,
            (EventType::Deleted, _, false) => return None,
            (EventType::Added, _, true) => EventType::Added,
            (EventType::Modified, Some(true), true) => EventType::Modified,
            (EventType::Modified, Some(true), false) => EventType::Deleted,
            (EventType::Modified, _, true) => EventType::Added,
            _ => return None,
        };
        Some((t, self.render(&e.object)))
    }

    fn render(&self, o: &Value) -> Value {
        let mut v = o.clone();
        v["apiVersion"] = json!(self.rt.api_version());
        v["kind"] = json!(self.rt.kind);
        v
    }
}

fn frame(type_: &str, object: Value) -> Bytes {
    let mut b = serde_json::to_vec(&json!({"type": type_, "object": object})).unwrap_or_default();
    b.push(b'\n');
    Bytes::from(b)
}

fn gone_frame(msg: String) -> Bytes {
    frame("ERROR", ApiError::gone(msg).status())
}

fn watch(
    cluster: &Cluster,
    rt: &ResourceType,
    ns: Option<&str>,
    q: &Query,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let opts = list_options(q)?;
    opts.fields.check_supported(&rt.kind).map_err(ApiError::bad_request)?;
    let filter = Arc::new(WatchFilter {
        rt: rt.clone(),
        ns: if rt.namespaced { ns.map(str::to_owned) } else { None },
        labels: opts.labels,
        fields: opts.fields,
        table: wants_table(headers),
        include: q.get("includeObject").unwrap_or("Metadata").to_owned(),
    });
    let bookmarks = q.flag("allowWatchBookmarks");
    let send_initial = q.flag("sendInitialEvents");
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(cluster.shared.max_watch)
        .min(cluster.shared.max_watch);
    let now = cluster.now();
    // Under the store lock: replay history (or the current state) and subscribe, so no change
    // falls between the two.
    let (initial, rx, start_rv, expired) = {
        let store = cluster.store();
        let rx = store.subscribe();
        let current = store.resource_version();
        let mut initial: Vec<Bytes> = Vec::new();
        let mut expired = None;
        let rv_param = q.get("resourceVersion").unwrap_or("");
        if rv_param.is_empty() || rv_param == "0" || send_initial {
            for o in store.all(&rt.key(), filter.ns.as_deref()) {
                if filter.matches(&o) {
                    initial.push(render_frame(&filter, "ADDED", filter.render(&o), now));
                }
            }
            if send_initial {
                initial.push(frame("BOOKMARK", json!({"kind": rt.kind, "apiVersion": rt.api_version(), "metadata": {"resourceVersion": current.to_string(), "annotations": {"k8s.io/initial-events-end": "true"}}})));
            }
        } else {
            let rv: u64 =
                rv_param.parse().map_err(|_| ApiError::bad_request(format!("invalid resource version: {rv_param}")))?;
            match store.events_since(&rt.key(), rv) {
                Some(evs) => {
                    for e in evs {
                        if let Some((t, o)) = filter.translate(&e) {
                            initial.push(render_frame(&filter, t.as_str(), o, now));
                        }
                    }
                }
                None => expired = Some(format!("too old resource version: {rv} ({})", store.compacted() + 1)),
            }
        }
        (initial, rx, current, expired)
    };
    if let Some(msg) = expired {
        let body = Body::from_stream(futures::stream::iter(vec![Ok::<_, std::io::Error>(gone_frame(msg))]));
        return Ok(stream_response(body));
    }
    let clock = cluster.shared.clock.clone();
    let bookmark_every = cluster.shared.bookmark_every;
    let deadline = tokio::time::Instant::now() + timeout;
    let stopping = cluster.shared.stopping.clone();
    struct St {
        rx: tokio::sync::broadcast::Receiver<Arc<WatchEvent>>,
        filter: Arc<WatchFilter>,
        last_rv: u64,
        ticker: tokio::time::Interval,
        done: bool,
    }
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + bookmark_every, bookmark_every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let st = St { rx, filter, last_rv: start_rv, ticker, done: false };
    let live = futures::stream::unfold(st, move |mut st| {
        let clock = clock.clone();
        let stopping = stopping.clone();
        async move {
            if st.done {
                return None;
            }
            loop {
                tokio::select! {
                    _ = tokio::time::sleep_until(deadline) => return None,
                    _ = stopping.cancelled() => return None,
                    _ = st.ticker.tick(), if bookmarks => {
                        let f = &st.filter;
                        let b = frame("BOOKMARK", json!({"kind": f.rt.kind, "apiVersion": f.rt.api_version(), "metadata": {"resourceVersion": st.last_rv.to_string()}}));
                        return Some((b, st));
                    }
                    r = st.rx.recv() => match r {
                        Ok(e) => {
                            st.last_rv = st.last_rv.max(e.rv);
                            if let Some((t, o)) = st.filter.translate(&e) {
                                let b = render_frame(&st.filter, t.as_str(), o, clock.now());
                                return Some((b, st));
                            }
                        }
                        Err(RecvError::Lagged(_)) => {
                            st.done = true;
                            return Some((gone_frame("the watcher fell too far behind".into()), st));
                        }
                        Err(RecvError::Closed) => return None,
                    }
                }
            }
        }
    });
    let stream = futures::stream::iter(initial).chain(live).map(Ok::<_, std::io::Error>);
    Ok(stream_response(Body::from_stream(stream)))
}

fn render_frame(filter: &WatchFilter, type_: &str, o: Value, now: jiff::Timestamp) -> Bytes {
    if filter.table {
        let rv = o["metadata"]["resourceVersion"].clone();
        let t = table::table(&filter.rt, &[o], &filter.include, now, json!({"resourceVersion": rv}));
        frame(type_, t)
    } else {
        frame(type_, o)
    }
}

fn stream_response(body: Body) -> Response {
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(body)
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// Serves the API on `listener` until `shutdown` completes.
pub async fn serve(
    cluster: Cluster,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, cluster.router()).with_graceful_shutdown(shutdown).await
}

/// A kubeconfig pointing at the simulated API server.
pub fn kubeconfig(url: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: omniscale-sim\n  cluster:\n    server: {url}\ncontexts:\n- name: omniscale-sim\n  context:\n    cluster: omniscale-sim\n    user: omniscale-sim\n    namespace: default\ncurrent-context: omniscale-sim\nusers:\n- name: omniscale-sim\n  user:\n    token: omniscale-sim\n"
    )
}
