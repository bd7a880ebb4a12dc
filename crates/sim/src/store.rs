//! The object store and the API server's write semantics, free of HTTP: one global
//! resourceVersion, optimistic concurrency, generation, finalizers, graceful pod deletion,
//! server-side apply ownership, subresources and the watch history that `410 Gone` is measured
//! against. The HTTP layer and the simulated controllers both go through these methods, so the
//! controllers see exactly the conflicts and events a client would.

use crate::builtin;
use crate::error::ApiError;
use crate::patch::{self, FieldPath, ListMeta};
use crate::registry::{Registry, ResourceKey, ResourceType};
use crate::selector::{FieldSelector, LabelSelector};
use jiff::Timestamp;
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::sync::Arc;
use tokio::sync::broadcast;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change, as retained for watches that resume from an older resourceVersion.
#[derive(Debug)]
pub struct WatchEvent {
    pub rv: u64,
    pub key: ResourceKey,
    pub namespace: String,
    pub type_: EventType,
    pub object: Arc<Value>,
    /// The object before a modification, so a label-selected watch can turn "stopped matching"
    /// into DELETED and "started matching" into ADDED, as upstream does.
    pub prev: Option<Arc<Value>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchType {
    Json,
    Merge,
    Strategic,
    Apply,
}

impl PatchType {
    pub fn from_content_type(ct: &str) -> Option<Self> {
        let base = ct.split(';').next().unwrap_or_default().trim();
        match base {
            "application/json-patch+json" => Some(Self::Json),
            "application/merge-patch+json" => Some(Self::Merge),
            "application/strategic-merge-patch+json" => Some(Self::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+json" => Some(Self::Apply),
            _ => None,
        }
    }
}

/// Per-request write options (query parameters).
#[derive(Clone, Debug, Default)]
pub struct WriteOptions {
    pub field_manager: String,
    pub force: bool,
    pub dry_run: bool,
    pub strict: bool,
    pub admission: Admission,
}

/// Where a write stands with respect to mutating admission webhooks. The store cannot call them
/// itself (they are remote and slow while the store is locked), so a write that webhooks may
/// change runs twice: a dry run that captures what the webhooks must see, then, after the calls,
/// the real write with their result (see `crate::admission`).
#[derive(Clone, Debug, Default)]
pub enum Admission {
    /// No webhook applies: the write goes straight through.
    #[default]
    None,
    /// Record the object as webhooks see it (decoded and defaulted, not yet validated, before a
    /// `generateName` is resolved) and the stored object it replaces. Only with `dry_run`.
    Capture,
    /// Use the webhooks' result, provided the stored object is still the one captured
    /// (`old_rv` is `None` for a create); otherwise the write fails as stale and is redone.
    Replace { object: Arc<Value>, old_rv: Option<String> },
}

/// What [`Admission::Capture`] recorded.
#[derive(Clone, Debug)]
pub struct Captured {
    pub object: Value,
    pub old: Option<Value>,
}

impl WriteOptions {
    pub fn manager(name: &str) -> Self {
        Self { field_manager: name.to_owned(), ..Self::default() }
    }
}

#[derive(Clone, Debug, Default)]
pub struct DeleteOptions {
    pub propagation: Option<String>,
    pub grace_period: Option<i64>,
    pub precondition_uid: Option<String>,
    pub precondition_rv: Option<String>,
    pub dry_run: bool,
}

#[derive(Clone, Debug, Default)]
pub struct ListOptions {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    pub limit: Option<usize>,
    pub continue_: Option<String>,
}

/// Where a request points: the type plus optional namespace, name and subresource.
#[derive(Clone, Debug)]
pub struct Target {
    pub rt: ResourceType,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
}

impl Target {
    pub fn new(rt: &ResourceType, namespace: Option<&str>, name: Option<&str>) -> Self {
        Self {
            rt: rt.clone(),
            namespace: namespace.map(str::to_owned),
            name: name.map(str::to_owned),
            subresource: None,
        }
    }

    pub fn with_subresource(mut self, s: &str) -> Self {
        self.subresource = Some(s.to_owned());
        self
    }

    fn ns(&self) -> String {
        if self.rt.namespaced { self.namespace.clone().unwrap_or_default() } else { String::new() }
    }

    fn qualified(&self) -> String {
        self.rt.key().to_string()
    }
}

type Objects = BTreeMap<(String, String), Arc<Value>>;

/// The whole simulated etcd plus API semantics.
#[derive(Debug)]
pub struct Store {
    pub registry: Registry,
    objects: BTreeMap<ResourceKey, Objects>,
    rv: u64,
    log: VecDeque<Arc<WatchEvent>>,
    log_capacity: usize,
    /// Events at or below this version were compacted away; watches from there get 410.
    compacted: u64,
    uid_counter: u64,
    tx: broadcast::Sender<Arc<WatchEvent>>,
    captured: Option<Captured>,
}

pub const SYSTEM_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public", "kube-node-lease"];

impl Store {
    /// `log_capacity` is how many changes a watch may lag behind before it gets `410 Gone`
    /// (kube-apiserver's watch cache keeps a comparable window of recent changes).
    pub fn new(log_capacity: usize, now: Timestamp) -> Self {
        let (tx, _) = broadcast::channel(16_384);
        let mut s = Self {
            registry: Registry::default(),
            objects: BTreeMap::new(),
            rv: 0,
            log: VecDeque::new(),
            log_capacity: log_capacity.max(1),
            compacted: 0,
            uid_counter: 0,
            tx,
            captured: None,
        };
        for ns in SYSTEM_NAMESPACES {
            let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
            if let Some(rt) = s.registry.get("", "v1", "namespaces").cloned() {
                let _ = s.create(&Target::new(&rt, None, None), body, &WriteOptions::manager("sim"), now);
            }
        }
        s
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<WatchEvent>> {
        self.tx.subscribe()
    }

    pub fn resource_version(&self) -> u64 {
        self.rv
    }

    pub fn compacted(&self) -> u64 {
        self.compacted
    }

    /// Events after `rv` for a collection, or `None` if they were compacted (410 Gone).
    pub fn events_since(&self, key: &ResourceKey, rv: u64) -> Option<Vec<Arc<WatchEvent>>> {
        if rv < self.compacted {
            return None;
        }
        Some(self.log.iter().filter(|e| e.rv > rv && &e.key == key).cloned().collect())
    }

    /// Drops history so that watches older than now are expired: what etcd compaction does.
    pub fn compact(&mut self) {
        self.log.clear();
        self.compacted = self.rv;
    }

    fn next_uid(&mut self) -> String {
        self.uid_counter += 1;
        let n = self.uid_counter;
        format!("{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}", n as u32, (n >> 32) as u16, n % 0xfff, (n * 7) % 0xfff, n)
    }

    fn random_suffix(&mut self) -> String {
        // kube-apiserver uses 5 characters from a consonant-and-digit alphabet.
        const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
        self.uid_counter += 1;
        let mut x = self.uid_counter.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let mut s = String::new();
        for _ in 0..5 {
            s.push(ALPHABET[(x % ALPHABET.len() as u64) as usize] as char);
            x /= ALPHABET.len() as u64;
            x = x.wrapping_mul(0x2545_F491_4F6C_DD1D).rotate_left(17);
        }
        s
    }

    fn commit(&mut self, key: &ResourceKey, ns: &str, name: &str, obj: Value, type_: EventType) -> Arc<Value> {
        self.rv += 1;
        let mut obj = obj;
        obj["metadata"]["resourceVersion"] = Value::String(self.rv.to_string());
        let obj = Arc::new(obj);
        let coll = self.objects.entry(key.clone()).or_default();
        let prev = if type_ == EventType::Deleted {
            coll.remove(&(ns.to_owned(), name.to_owned()))
        } else {
            coll.insert((ns.to_owned(), name.to_owned()), obj.clone())
        };
        let ev = Arc::new(WatchEvent {
            rv: self.rv,
            key: key.clone(),
            namespace: ns.to_owned(),
            type_,
            object: obj.clone(),
            prev,
        });
        self.log.push_back(ev.clone());
        while self.log.len() > self.log_capacity {
            if let Some(old) = self.log.pop_front() {
                self.compacted = old.rv;
            }
        }
        let _ = self.tx.send(ev);
        obj
    }

    pub fn get_raw(&self, key: &ResourceKey, ns: &str, name: &str) -> Option<Arc<Value>> {
        self.objects.get(key)?.get(&(ns.to_owned(), name.to_owned())).cloned()
    }

    /// All objects of a collection (optionally one namespace), for controllers.
    pub fn all(&self, key: &ResourceKey, ns: Option<&str>) -> Vec<Arc<Value>> {
        let Some(c) = self.objects.get(key) else { return vec![] };
        match ns {
            Some(ns) => c
                .range((ns.to_owned(), String::new())..)
                .take_while(|((n, _), _)| n == ns)
                .map(|(_, v)| v.clone())
                .collect(),
            None => c.values().cloned().collect(),
        }
    }

    pub fn namespace_exists(&self, ns: &str) -> bool {
        self.get_raw(&ResourceKey::new("", "namespaces"), "", ns).is_some()
    }

    fn present(rt: &ResourceType, obj: &Value) -> Value {
        let mut v = obj.clone();
        v["apiVersion"] = Value::String(rt.api_version());
        v["kind"] = Value::String(rt.kind.clone());
        v
    }

    // -----------------------------------------------------------------------------------------
    // Reads

    pub fn get(&self, t: &Target) -> Result<Value, ApiError> {
        let name = t.name.as_deref().unwrap_or_default();
        let obj = self.get_raw(&t.rt.key(), &t.ns(), name).ok_or_else(|| ApiError::not_found(&t.qualified(), name))?;
        match t.subresource.as_deref() {
            None | Some("status") => Ok(Self::present(&t.rt, &obj)),
            Some("scale") => scale_view(&t.rt, &obj),
            Some(other) => Err(ApiError::not_found(&format!("{}/{other}", t.qualified()), name)),
        }
    }

    pub fn list(&self, t: &Target, opts: &ListOptions) -> Result<Value, ApiError> {
        opts.fields.check_supported(&t.rt.kind).map_err(ApiError::bad_request)?;
        let start = match &opts.continue_ {
            Some(token) => Some(decode_continue(token, self.compacted)?),
            None => None,
        };
        let ns = if t.rt.namespaced { t.namespace.as_deref() } else { None };
        let mut items = Vec::new();
        let mut next = None;
        for obj in self.all(&t.rt.key(), ns) {
            let pos = (
                obj["metadata"]["namespace"].as_str().unwrap_or_default().to_owned(),
                obj["metadata"]["name"].as_str().unwrap_or_default().to_owned(),
            );
            if let Some((_, s)) = &start {
                if &pos <= s {
                    continue;
                }
            }
            if !opts.labels.matches_object(&obj) || !opts.fields.matches(&obj) {
                continue;
            }
            if opts.limit.is_some_and(|l| l > 0 && items.len() >= l) {
                next = Some(pos);
                break;
            }
            items.push(Self::present(&t.rt, &obj));
        }
        let rv = start.map(|(rv, _)| rv).unwrap_or(self.rv);
        let mut meta = json!({"resourceVersion": rv.to_string()});
        if let Some((ns, name)) = next {
            // The last returned item is where the next page starts.
            let last = items
                .last()
                .map(|i| {
                    (
                        i["metadata"]["namespace"].as_str().unwrap_or_default().to_owned(),
                        i["metadata"]["name"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .unwrap_or((ns, name));
            meta["continue"] = Value::String(encode_continue(rv, &last));
            meta["remainingItemCount"] = json!(0);
        }
        Ok(
            json!({"apiVersion": t.rt.api_version(), "kind": format!("{}List", t.rt.kind), "metadata": meta, "items": items}),
        )
    }

    // -----------------------------------------------------------------------------------------
    // Writes

    fn meta_of(rt: &ResourceType) -> ListMeta {
        match &rt.schema {
            Some(s) => ListMeta::Schema(s.clone()),
            None => ListMeta::Builtin,
        }
    }

    fn check_kind(rt: &ResourceType, body: &Value) -> Result<(), ApiError> {
        check_shape(body)?;
        if let Some(av) = body["apiVersion"].as_str() {
            if av != rt.api_version() {
                return Err(ApiError::bad_request(format!(
                    "the API version in the data ({av}) does not match the expected API version ({})",
                    rt.api_version()
                )));
            }
        }
        if let Some(k) = body["kind"].as_str() {
            if k != rt.kind {
                return Err(ApiError::bad_request(format!(
                    "the kind in the data ({k}) does not match the expected kind ({})",
                    rt.kind
                )));
            }
        }
        Ok(())
    }

    /// Decode, prune and default a candidate object as the API server would before admission.
    fn decode(rt: &ResourceType, obj: Value, strict: bool) -> Result<Value, ApiError> {
        let mut obj = obj;
        obj["apiVersion"] = Value::String(rt.api_version());
        obj["kind"] = Value::String(rt.kind.clone());
        match &rt.schema {
            None => {
                let mut decoded = builtin::decode(&rt.group, &rt.kind, &obj)
                    .map_err(|e| ApiError::bad_request(format!("error decoding {}: {e}", rt.kind)))?;
                if strict {
                    let unknown = builtin::unknown_fields(&obj, &decoded);
                    if !unknown.is_empty() {
                        let list: Vec<String> = unknown.iter().map(|u| format!("unknown field \"{u}\"")).collect();
                        return Err(ApiError::bad_request(format!("strict decoding error: {}", list.join(", "))));
                    }
                }
                crate::defaults::apply(&rt.group, &rt.kind, &mut decoded);
                Ok(decoded)
            }
            Some(schema) => {
                if strict {
                    let mut pruned = obj.clone();
                    crate::schema::prune(&mut pruned, schema);
                    let unknown = builtin::unknown_fields(&obj, &pruned);
                    if !unknown.is_empty() {
                        let list: Vec<String> = unknown.iter().map(|u| format!("unknown field \"{u}\"")).collect();
                        return Err(ApiError::bad_request(format!("strict decoding error: {}", list.join(", "))));
                    }
                }
                crate::schema::prune(&mut obj, schema);
                Ok(crate::schema::default(&obj, schema))
            }
        }
    }

    /// Validation, after mutating admission as upstream orders it.
    fn validate(rt: &ResourceType, obj: &Value, old: Option<&Value>) -> Result<(), ApiError> {
        let name = obj["metadata"]["name"].as_str().unwrap_or_default();
        let errs = match &rt.schema {
            None => builtin::validate(&rt.group, &rt.kind, obj),
            Some(schema) => {
                let mut errs = Vec::new();
                if !builtin::valid_subdomain(name) {
                    errs.push(("metadata.name".to_owned(), format!("Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character")));
                }
                errs.extend(crate::schema::validate(obj, old, schema));
                errs
            }
        };
        if errs.is_empty() { Ok(()) } else { Err(ApiError::invalid(&rt.kind, name, errs)) }
    }

    /// The mutating-admission point of a write (see [`Admission`]).
    fn mutate(
        &mut self,
        rt: &ResourceType,
        obj: Value,
        old: Option<&Value>,
        opts: &WriteOptions,
    ) -> Result<Value, ApiError> {
        match &opts.admission {
            Admission::None => Ok(obj),
            Admission::Capture => {
                self.captured = Some(Captured { object: obj.clone(), old: old.cloned() });
                Ok(obj)
            }
            Admission::Replace { object, old_rv } => {
                if old.and_then(|o| o["metadata"]["resourceVersion"].as_str()) != old_rv.as_deref() {
                    return Err(ApiError::stale_admission());
                }
                let mut mutated = (**object).clone();
                // Identity and bookkeeping are the server's, whatever a webhook returned.
                for k in
                    ["name", "namespace", "uid", "creationTimestamp", "resourceVersion", "generation", "managedFields"]
                {
                    match obj["metadata"].get(k) {
                        Some(v) => mutated["metadata"][k] = v.clone(),
                        None => {
                            if let Some(m) = mutated["metadata"].as_object_mut() {
                                m.remove(k);
                            }
                        }
                    }
                }
                Self::decode(rt, mutated, false)
            }
        }
    }

    /// Takes what the last [`Admission::Capture`] write recorded.
    pub fn take_captured(&mut self) -> Option<Captured> {
        self.captured.take()
    }

    pub fn create(&mut self, t: &Target, body: Value, opts: &WriteOptions, now: Timestamp) -> Result<Value, ApiError> {
        let rt = &t.rt;
        if rt.read_only {
            return Err(ApiError::method_not_allowed(format!("create is not supported on {}", t.qualified())));
        }
        Self::check_kind(rt, &body)?;
        let mut obj = body;
        let ns = t.ns();
        if rt.namespaced {
            match obj["metadata"]["namespace"].as_str() {
                Some(n) if n != ns => {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ));
                }
                _ => obj["metadata"]["namespace"] = Value::String(ns.clone()),
            }
            match self.get_raw(&ResourceKey::new("", "namespaces"), "", &ns) {
                None => return Err(ApiError::not_found("namespaces", &ns)),
                Some(n) if !n["metadata"]["deletionTimestamp"].is_null() => {
                    return Err(ApiError::forbidden(format!(
                        "{} \"{}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                        t.qualified(),
                        obj["metadata"]["name"].as_str().unwrap_or_default()
                    )));
                }
                Some(_) => {}
            }
        } else if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("namespace");
        }
        let has_name = obj["metadata"]["name"].as_str().is_some_and(|n| !n.is_empty());
        let prefix = obj["metadata"]["generateName"].as_str().filter(|p| !p.is_empty()).map(str::to_owned);
        if !has_name && prefix.is_none() {
            return Err(ApiError::invalid(
                &rt.kind,
                "",
                vec![("metadata.name".into(), "Required value: name or generateName is required".into())],
            ));
        }
        if has_name {
            let name = obj["metadata"]["name"].as_str().unwrap_or_default();
            if self.get_raw(&rt.key(), &ns, name).is_some() {
                return Err(ApiError::already_exists(&t.qualified(), name));
            }
        }
        if rt.status && rt.kind != "Node" {
            if let Some(m) = obj.as_object_mut() {
                m.remove("status");
            }
        }
        let obj = Self::decode(rt, obj, opts.strict)?;
        let mut obj = self.mutate(rt, obj, None, opts)?;
        // As upstream, a generated name is chosen after mutating admission: webhooks see `name: ""`.
        if let (false, Some(prefix)) = (has_name, prefix) {
            let suffix = self.random_suffix();
            obj["metadata"]["name"] = Value::String(format!("{prefix}{suffix}"));
        }
        let name = obj["metadata"]["name"].as_str().unwrap_or_default().to_owned();
        if !has_name && self.get_raw(&rt.key(), &ns, &name).is_some() {
            return Err(ApiError::already_exists(&t.qualified(), &name));
        }
        if !matches!(opts.admission, Admission::Capture) {
            Self::validate(rt, &obj, None)?;
        }
        initial_status(rt, &mut obj);
        if rt.kind == "CustomResourceDefinition" {
            self.check_crd(&obj)?;
        }
        let meta =
            obj["metadata"].as_object_mut().ok_or_else(|| ApiError::bad_request("metadata must be an object"))?;
        for k in ["resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds", "selfLink"] {
            meta.remove(k);
        }
        meta.remove("managedFields");
        let uid = self.next_uid();
        let meta =
            obj["metadata"].as_object_mut().ok_or_else(|| ApiError::bad_request("metadata must be an object"))?;
        meta.insert("uid".into(), Value::String(uid));
        meta.insert("creationTimestamp".into(), Value::String(ts(now)));
        if rt.generation {
            meta.insert("generation".into(), json!(1));
        } else {
            meta.remove("generation");
        }
        let fields: BTreeSet<FieldPath> = patch::leaves(&ownable(&obj, None), &Self::meta_of(rt)).into_keys().collect();
        set_managers(&mut obj, vec![Manager::new(&opts.field_manager, "Update", &rt.api_version(), now, None, fields)]);
        if opts.dry_run {
            return Ok(obj);
        }
        if rt.kind == "CustomResourceDefinition" {
            self.registry
                .register_crd(&obj)
                .map_err(|e| ApiError::invalid(&rt.kind, &name, vec![("spec".into(), e)]))?;
        }
        let stored = self.commit(&rt.key(), &ns, &name, obj, EventType::Added);
        Ok(Self::present(rt, &stored))
    }

    fn check_crd(&self, crd: &Value) -> Result<(), ApiError> {
        let name = crd["metadata"]["name"].as_str().unwrap_or_default();
        let group = crd["spec"]["group"].as_str().unwrap_or_default();
        let plural = crd["spec"]["names"]["plural"].as_str().unwrap_or_default();
        if name != format!("{plural}.{group}") {
            return Err(ApiError::invalid(
                "CustomResourceDefinition",
                name,
                vec![(
                    "metadata.name".into(),
                    format!("Invalid value: \"{name}\": must be spec.names.plural+\".\"+spec.group"),
                )],
            ));
        }
        let mut errs = Vec::new();
        for (i, v) in crd["spec"]["versions"].as_array().into_iter().flatten().enumerate() {
            check_enum_types(
                &v["schema"]["openAPIV3Schema"],
                &format!("spec.versions[{i}].schema.openAPIV3Schema"),
                &mut errs,
            );
        }
        if !errs.is_empty() {
            return Err(ApiError::invalid("CustomResourceDefinition", name, errs));
        }
        if self.registry.all().any(|t| t.group == group && t.plural == plural && t.is_builtin()) {
            return Err(ApiError::invalid(
                "CustomResourceDefinition",
                name,
                vec![("spec.group".into(), "Invalid value: cannot override a built-in resource".into())],
            ));
        }
        Ok(())
    }

    /// PUT: whole-object replacement with optimistic concurrency.
    pub fn update(&mut self, t: &Target, body: Value, opts: &WriteOptions, now: Timestamp) -> Result<Value, ApiError> {
        let rt = &t.rt;
        if rt.read_only {
            return Err(ApiError::method_not_allowed(format!("update is not supported on {}", t.qualified())));
        }
        let name = t.name.clone().unwrap_or_default();
        let ns = t.ns();
        let old = self.get_raw(&rt.key(), &ns, &name).ok_or_else(|| ApiError::not_found(&t.qualified(), &name))?;
        let sub = t.subresource.as_deref();
        let candidate = match sub {
            Some("scale") => {
                let body_rv = body["metadata"]["resourceVersion"].as_str().map(str::to_owned);
                if let Some(rv) = body_rv {
                    if Some(rv.as_str()) != old["metadata"]["resourceVersion"].as_str() {
                        return Err(ApiError::conflict(&t.qualified(), &name));
                    }
                }
                from_scale(rt, &old, &body)?
            }
            _ => {
                Self::check_kind(rt, &body)?;
                if body["metadata"]["name"].as_str().is_some_and(|n| n != name) {
                    return Err(ApiError::bad_request("the name of the object does not match the name on the URL"));
                }
                match body["metadata"]["resourceVersion"].as_str() {
                    Some(rv) if Some(rv) != old["metadata"]["resourceVersion"].as_str() => {
                        return Err(ApiError::conflict(&t.qualified(), &name));
                    }
                    None if !rt.is_builtin() => {
                        return Err(ApiError::invalid(
                            &rt.kind,
                            &name,
                            vec![(
                                "metadata.resourceVersion".into(),
                                "Invalid value: 0x0: must be specified for an update".into(),
                            )],
                        ));
                    }
                    _ => {}
                }
                body
            }
        };
        let out = self.finish_update(t, &old, candidate, opts, now, None)?;
        if sub == Some("scale") { scale_view(rt, &out) } else { Ok(out) }
    }

    pub fn patch(
        &mut self,
        t: &Target,
        kind: PatchType,
        body: &Value,
        opts: &WriteOptions,
        now: Timestamp,
    ) -> Result<Value, ApiError> {
        let rt = &t.rt;
        if rt.read_only {
            return Err(ApiError::method_not_allowed(format!("patch is not supported on {}", t.qualified())));
        }
        let name = t.name.clone().unwrap_or_default();
        let ns = t.ns();
        let sub = t.subresource.as_deref();
        let old = self.get_raw(&rt.key(), &ns, &name);
        if kind == PatchType::Apply {
            if opts.field_manager.is_empty() {
                return Err(ApiError::bad_request(
                    "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
                ));
            }
            return self.apply(t, old.as_deref(), body, opts, now);
        }
        let old = old.ok_or_else(|| ApiError::not_found(&t.qualified(), &name))?;
        if kind == PatchType::Strategic && !rt.is_builtin() {
            return Err(ApiError::unsupported_media_type("application/strategic-merge-patch+json"));
        }
        let base = match sub {
            Some("scale") => scale_view(rt, &old)?,
            _ => Self::present(rt, &old),
        };
        let mut patched = base.clone();
        match kind {
            PatchType::Json => patch::json_patch(&mut patched, body)
                .map_err(|e| ApiError::invalid(&rt.kind, &name, vec![("patch".into(), e)]).with_code(422))?,
            PatchType::Merge => {
                if !body.is_object() {
                    return Err(ApiError::bad_request("merge patch must be a JSON object"));
                }
                patch::merge_patch(&mut patched, body)
            }
            PatchType::Strategic => {
                if !body.is_object() {
                    return Err(ApiError::bad_request("strategic merge patch must be a JSON object"));
                }
                patched = patch::strategic_merge(&base, body, &Self::meta_of(rt)).map_err(ApiError::bad_request)?;
            }
            PatchType::Apply => {}
        }
        // A resourceVersion carried in the patch is a precondition, as upstream.
        if let Some(rv) = patched["metadata"]["resourceVersion"].as_str() {
            if Some(rv) != old["metadata"]["resourceVersion"].as_str() {
                return Err(ApiError::conflict(&t.qualified(), &name));
            }
        }
        let candidate = match sub {
            Some("scale") => from_scale(rt, &old, &patched)?,
            _ => patched,
        };
        let out = self.finish_update(t, &old, candidate, opts, now, None)?;
        if sub == Some("scale") { scale_view(rt, &out) } else { Ok(out) }
    }

    fn apply(
        &mut self,
        t: &Target,
        old: Option<&Value>,
        config: &Value,
        opts: &WriteOptions,
        now: Timestamp,
    ) -> Result<Value, ApiError> {
        let rt = &t.rt;
        let name = t.name.clone().unwrap_or_default();
        if !config.is_object() {
            return Err(ApiError::bad_request("apply patch must be an object"));
        }
        if config["apiVersion"].as_str().is_none() || config["kind"].as_str().is_none() {
            return Err(ApiError::bad_request("apiVersion and kind must be set in an apply configuration"));
        }
        if t.subresource.as_deref() != Some("scale") {
            Self::check_kind(rt, config)?;
        }
        if config["metadata"]["name"].as_str().is_some_and(|n| n != name) {
            return Err(ApiError::bad_request("the name of the object does not match the name on the URL"));
        }
        let sub = t.subresource.as_deref();
        let meta = Self::meta_of(rt);
        let live = match old {
            Some(o) => Self::present(rt, o),
            None => {
                if sub.is_some() {
                    return Err(ApiError::not_found(&t.qualified(), &name));
                }
                let mut v = json!({"apiVersion": rt.api_version(), "kind": rt.kind, "metadata": {"name": name}});
                if rt.namespaced {
                    v["metadata"]["namespace"] = Value::String(t.ns());
                }
                v
            }
        };
        let cfg = ownable(config, sub_scope(rt, sub));
        let cfg_leaves = patch::leaves(&cfg, &meta);
        let live_leaves = patch::leaves(&ownable(&live, sub_scope(rt, sub)), &meta);
        let mut managers = managers_of(&live);
        let mut conflicts: Vec<(String, FieldPath)> = Vec::new();
        for m in managers.iter_mut() {
            if m.manager == opts.field_manager {
                continue;
            }
            let clashing: Vec<FieldPath> = m
                .fields
                .iter()
                .filter(|p| p.last().map(String::as_str) != Some("."))
                .filter(|p| cfg_leaves.get(*p).is_some_and(|v| live_leaves.get(*p) != Some(v)))
                .cloned()
                .collect();
            if opts.force {
                for p in &clashing {
                    m.fields.remove(p);
                }
            } else {
                conflicts.extend(clashing.into_iter().map(|p| (m.manager.clone(), p)));
            }
        }
        if !conflicts.is_empty() {
            let causes: Vec<Value> = conflicts
                .iter()
                .map(|(m, p)| json!({"reason": "FieldManagerConflict", "message": format!("conflict with \"{m}\""), "field": patch::display_path(p)}))
                .collect();
            let list: Vec<String> =
                conflicts.iter().map(|(m, p)| format!("conflict with \"{m}\": {}", patch::display_path(p))).collect();
            let n = conflicts.len();
            return Err(ApiError::conflict_msg(
                &t.qualified(),
                &name,
                format!("Apply failed with {n} conflict{}: {}", if n == 1 { "" } else { "s" }, list.join("\n")),
                causes,
            ));
        }
        let sub_name = sub.filter(|s| *s == "status").map(str::to_owned);
        let own_idx = managers
            .iter()
            .position(|m| m.manager == opts.field_manager && m.operation == "Apply" && m.subresource == sub_name);
        let previous: BTreeSet<FieldPath> = own_idx.map(|i| managers[i].fields.clone()).unwrap_or_default();
        let mut merged = if sub == Some("scale") {
            let scale = scale_view(rt, old.unwrap_or(&live))?;
            let applied = patch::apply_merge(&scale, config, &meta);
            from_scale(rt, old.unwrap_or(&live), &applied)?
        } else {
            patch::apply_merge(&live, &cfg_merge_view(config, rt, sub), &meta)
        };
        let new_fields: BTreeSet<FieldPath> = cfg_leaves.keys().cloned().collect();
        for p in previous.difference(&new_fields) {
            let shared = managers
                .iter()
                .enumerate()
                .any(|(i, m)| Some(i) != own_idx && m.fields.iter().any(|q| q.starts_with(p) || p.starts_with(q)));
            if !shared {
                patch::remove_path(&mut merged, p);
            }
        }
        patch::prune_empty(&mut merged, 0);
        match own_idx {
            Some(i) => {
                managers[i].fields = new_fields;
                managers[i].time = ts(now);
            }
            None => {
                managers.push(Manager::new(&opts.field_manager, "Apply", &rt.api_version(), now, sub_name, new_fields))
            }
        }
        set_managers(&mut merged, managers);
        match old {
            Some(o) => {
                let o = o.clone();
                let out = self.finish_update(t, &o, merged, opts, now, Some(()))?;
                if sub == Some("scale") { scale_view(rt, &out) } else { Ok(out) }
            }
            None => {
                let target = Target { subresource: None, ..t.clone() };
                let keep = merged["metadata"]["managedFields"].clone();
                let created = self.create(&target, merged, opts, now)?;
                // create() records an Update entry; an apply that creates owns its fields as Apply.
                let mut fixed =
                    (*self.get_raw(&rt.key(), &t.ns(), &name).unwrap_or_else(|| Arc::new(created.clone()))).clone();
                if opts.dry_run {
                    return Ok(created);
                }
                fixed["metadata"]["managedFields"] = keep;
                let stored = self.replace_quiet(&rt.key(), &t.ns(), &name, fixed);
                Ok(Self::present(rt, &stored))
            }
        }
    }

    /// Rewrites the object just created without a second event: the managedFields fix-up after
    /// an apply-create is part of the same logical write.
    fn replace_quiet(&mut self, key: &ResourceKey, ns: &str, name: &str, obj: Value) -> Arc<Value> {
        let obj = Arc::new(obj);
        if let Some(c) = self.objects.get_mut(key) {
            c.insert((ns.to_owned(), name.to_owned()), obj.clone());
        }
        if let Some(last) = self.log.back_mut() {
            if last.key == *key && last.namespace == ns && last.object["metadata"]["name"].as_str() == Some(name) {
                *last = Arc::new(WatchEvent {
                    rv: last.rv,
                    key: key.clone(),
                    namespace: ns.to_owned(),
                    type_: last.type_,
                    object: obj.clone(),
                    prev: None,
                });
            }
        }
        obj
    }

    /// Shared tail of PUT, PATCH and apply: subresource scoping, immutable metadata, generation,
    /// admission, ownership tracking, no-op detection and finalizer-driven deletion.
    fn finish_update(
        &mut self,
        t: &Target,
        old: &Value,
        candidate: Value,
        opts: &WriteOptions,
        now: Timestamp,
        applied: Option<()>,
    ) -> Result<Value, ApiError> {
        let rt = &t.rt;
        let name = t.name.clone().unwrap_or_default();
        let ns = t.ns();
        let sub = t.subresource.as_deref();
        check_shape(&candidate)?;
        let mut new = match sub {
            Some("status") => {
                let mut n = old.clone();
                n["status"] = candidate["status"].clone();
                if applied.is_some() || candidate["metadata"]["managedFields"].is_array() {
                    n["metadata"]["managedFields"] = candidate["metadata"]["managedFields"].clone();
                }
                n
            }
            Some("resize") => {
                let mut n = old.clone();
                let (Some(oc), Some(nc)) =
                    (old["spec"]["containers"].as_array(), candidate["spec"]["containers"].as_array())
                else {
                    return Err(ApiError::invalid(
                        &rt.kind,
                        &name,
                        vec![("spec.containers".into(), "Required value".into())],
                    ));
                };
                if oc.len() != nc.len() {
                    return Err(ApiError::invalid(
                        &rt.kind,
                        &name,
                        vec![(
                            "spec.containers".into(),
                            "Forbidden: containers may not be added or removed by a resize".into(),
                        )],
                    ));
                }
                for (i, c) in nc.iter().enumerate() {
                    n["spec"]["containers"][i]["resources"] = c["resources"].clone();
                }
                n
            }
            Some("scale") | None => {
                let mut n = candidate;
                if rt.status && sub.is_none() {
                    n["status"] = old["status"].clone();
                    if n["status"].is_null() {
                        if let Some(m) = n.as_object_mut() {
                            m.remove("status");
                        }
                    }
                }
                if rt.kind == "Pod" && sub.is_none() {
                    check_pod_update(old, &n).map_err(|e| ApiError::invalid("Pod", &name, vec![("spec".into(), e)]))?;
                }
                n
            }
            Some(other) => return Err(ApiError::not_found(&format!("{}/{other}", t.qualified()), &name)),
        };
        if new["metadata"]["namespace"].as_str().is_some_and(|n| n != ns) && rt.namespaced {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        for k in ["uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "namespace", "name"] {
            match old["metadata"].get(k) {
                Some(v) => new["metadata"][k] = v.clone(),
                None => {
                    if let Some(m) = new["metadata"].as_object_mut() {
                        m.remove(k);
                    }
                }
            }
        }
        new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"].clone();
        // Generation follows spec changes (everything outside metadata and status).
        if rt.generation {
            let generation = old["metadata"]["generation"].as_i64().unwrap_or(1);
            let changed = strip_for_generation(old, rt) != strip_for_generation(&new, rt);
            new["metadata"]["generation"] = json!(if changed { generation + 1 } else { generation });
        }
        let new = Self::decode(rt, new, opts.strict)?;
        let mut new = self.mutate(rt, new, Some(old), opts)?;
        if !matches!(opts.admission, Admission::Capture) {
            Self::validate(rt, &new, Some(old))?;
        }
        if rt.kind == "CustomResourceDefinition" {
            self.check_crd(&new)?;
        }
        if applied.is_none() {
            track_update(old, &mut new, rt, &opts.field_manager, sub, now);
        }
        if without_volatile(old) == without_volatile(&new) {
            return Ok(Self::present(rt, old));
        }
        if opts.dry_run {
            return Ok(Self::present(rt, &new));
        }
        let finalizers_empty = new["metadata"]["finalizers"].as_array().is_none_or(Vec::is_empty);
        if !new["metadata"]["deletionTimestamp"].is_null() && finalizers_empty && !is_pending_graceful(rt, &new) {
            let stored = self.commit(&rt.key(), &ns, &name, new, EventType::Deleted);
            self.after_delete(rt, &stored);
            return Ok(Self::present(rt, &stored));
        }
        if rt.kind == "CustomResourceDefinition" {
            self.registry
                .register_crd(&new)
                .map_err(|e| ApiError::invalid(&rt.kind, &name, vec![("spec".into(), e)]))?;
        }
        let stored = self.commit(&rt.key(), &ns, &name, new, EventType::Modified);
        Ok(Self::present(rt, &stored))
    }

    pub fn delete(&mut self, t: &Target, opts: &DeleteOptions, now: Timestamp) -> Result<Value, ApiError> {
        let rt = &t.rt;
        if rt.read_only {
            return Err(ApiError::method_not_allowed(format!("delete is not supported on {}", t.qualified())));
        }
        let name = t.name.clone().unwrap_or_default();
        let ns = t.ns();
        let old = self.get_raw(&rt.key(), &ns, &name).ok_or_else(|| ApiError::not_found(&t.qualified(), &name))?;
        if let Some(uid) = &opts.precondition_uid {
            if old["metadata"]["uid"].as_str() != Some(uid) {
                return Err(ApiError::conflict_msg(
                    &t.qualified(),
                    &name,
                    format!(
                        "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                        old["metadata"]["uid"].as_str().unwrap_or_default()
                    ),
                    vec![],
                ));
            }
        }
        if let Some(rv) = &opts.precondition_rv {
            if old["metadata"]["resourceVersion"].as_str() != Some(rv) {
                return Err(ApiError::conflict_msg(
                    &t.qualified(),
                    &name,
                    format!(
                        "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                        old["metadata"]["resourceVersion"].as_str().unwrap_or_default()
                    ),
                    vec![],
                ));
            }
        }
        if opts.dry_run {
            return Ok(Self::present(rt, &old));
        }
        let mut obj = (*old).clone();
        let uid = obj["metadata"]["uid"].as_str().unwrap_or_default().to_owned();
        let policy = opts.propagation.clone().unwrap_or_else(|| "Background".into());
        if policy == "Orphan" {
            self.orphan_dependents(&uid);
        }
        let mut finalizers: Vec<Value> = obj["metadata"]["finalizers"].as_array().cloned().unwrap_or_default();
        if policy == "Foreground" && self.has_dependents(&uid) && !finalizers.contains(&json!("foregroundDeletion")) {
            finalizers.push(json!("foregroundDeletion"));
            obj["metadata"]["finalizers"] = Value::Array(finalizers.clone());
        }
        if rt.kind == "Namespace" {
            obj["status"]["phase"] = json!("Terminating");
            if !finalizers.contains(&json!("kubernetes")) {
                obj["spec"]["finalizers"] = json!(["kubernetes"]);
            }
            if obj["metadata"]["deletionTimestamp"].is_null() {
                obj["metadata"]["deletionTimestamp"] = Value::String(ts(now));
                obj["metadata"]["deletionGracePeriodSeconds"] = json!(0);
                let stored = self.commit(&rt.key(), &ns, &name, obj, EventType::Modified);
                return Ok(Self::present(rt, &stored));
            }
            return Ok(Self::present(rt, &old));
        }
        // Pods on a node terminate gracefully: the kubelet finishes the deletion.
        if rt.kind == "Pod" {
            let bound = obj["spec"]["nodeName"].as_str().is_some_and(|n| !n.is_empty());
            let terminal = matches!(obj["status"]["phase"].as_str(), Some("Succeeded" | "Failed"));
            let grace = opts.grace_period.or(obj["spec"]["terminationGracePeriodSeconds"].as_i64()).unwrap_or(30);
            if bound && !terminal && grace > 0 {
                let current = obj["metadata"]["deletionGracePeriodSeconds"].as_i64();
                if current.is_none_or(|c| grace < c) {
                    obj["metadata"]["deletionTimestamp"] =
                        Value::String(ts(now + jiff::SignedDuration::from_secs(grace)));
                    obj["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
                    let stored = self.commit(&rt.key(), &ns, &name, obj, EventType::Modified);
                    return Ok(Self::present(rt, &stored));
                }
                return Ok(Self::present(rt, &old));
            }
        }
        if !finalizers.is_empty() {
            if obj["metadata"]["deletionTimestamp"].is_null() {
                obj["metadata"]["deletionTimestamp"] = Value::String(ts(now));
                obj["metadata"]["deletionGracePeriodSeconds"] = json!(0);
                let stored = self.commit(&rt.key(), &ns, &name, obj, EventType::Modified);
                return Ok(Self::present(rt, &stored));
            }
            if obj != *old {
                let stored = self.commit(&rt.key(), &ns, &name, obj, EventType::Modified);
                return Ok(Self::present(rt, &stored));
            }
            return Ok(Self::present(rt, &old));
        }
        if obj["metadata"]["deletionTimestamp"].is_null() {
            obj["metadata"]["deletionTimestamp"] = Value::String(ts(now));
            obj["metadata"]["deletionGracePeriodSeconds"] = json!(0);
        }
        let stored = self.commit(&rt.key(), &ns, &name, obj, EventType::Deleted);
        self.after_delete(rt, &stored);
        Ok(Self::present(rt, &stored))
    }

    pub fn delete_collection(
        &mut self,
        t: &Target,
        list: &ListOptions,
        opts: &DeleteOptions,
        now: Timestamp,
    ) -> Result<Value, ApiError> {
        let items = self.list(t, &ListOptions { limit: None, continue_: None, ..list.clone() })?;
        let mut deleted = Vec::new();
        for item in items["items"].as_array().into_iter().flatten() {
            let name = item["metadata"]["name"].as_str().unwrap_or_default();
            let target = Target { name: Some(name.to_owned()), ..t.clone() };
            if let Ok(v) = self.delete(&target, opts, now) {
                deleted.push(v);
            }
        }
        Ok(
            json!({"apiVersion": t.rt.api_version(), "kind": format!("{}List", t.rt.kind), "metadata": {"resourceVersion": self.rv.to_string()}, "items": deleted}),
        )
    }

    fn after_delete(&mut self, rt: &ResourceType, obj: &Value) {
        if rt.kind == "CustomResourceDefinition" {
            let group = obj["spec"]["group"].as_str().unwrap_or_default().to_owned();
            let plural = obj["spec"]["names"]["plural"].as_str().unwrap_or_default().to_owned();
            self.registry.unregister_crd(&group, &plural);
            let key = ResourceKey { group, plural };
            let gone: Vec<Arc<Value>> = self.all(&key, None);
            for o in gone {
                let ns = o["metadata"]["namespace"].as_str().unwrap_or_default().to_owned();
                let name = o["metadata"]["name"].as_str().unwrap_or_default().to_owned();
                self.commit(&key, &ns, &name, (*o).clone(), EventType::Deleted);
            }
        }
    }

    fn has_dependents(&self, uid: &str) -> bool {
        self.objects.values().flat_map(BTreeMap::values).any(|o| owner_uids(o).any(|u| u == uid))
    }

    fn orphan_dependents(&mut self, uid: &str) {
        let dependents: Vec<(ResourceKey, Arc<Value>)> = self
            .objects
            .iter()
            .flat_map(|(k, c)| c.values().map(move |o| (k.clone(), o.clone())))
            .filter(|(_, o)| owner_uids(o).any(|u| u == uid))
            .collect();
        for (key, o) in dependents {
            let mut n = (*o).clone();
            if let Some(refs) = n["metadata"]["ownerReferences"].as_array_mut() {
                refs.retain(|r| r["uid"].as_str() != Some(uid));
            }
            let ns = n["metadata"]["namespace"].as_str().unwrap_or_default().to_owned();
            let name = n["metadata"]["name"].as_str().unwrap_or_default().to_owned();
            self.commit(&key, &ns, &name, n, EventType::Modified);
        }
    }

    /// The garbage collector and namespace controller in one pass: delete dependents whose
    /// owners are all gone, finish foreground deletions, and empty terminating namespaces.
    pub fn collect_garbage(&mut self, now: Timestamp) {
        let uids: HashSet<String> = self
            .objects
            .values()
            .flat_map(BTreeMap::values)
            .filter_map(|o| o["metadata"]["uid"].as_str().map(str::to_owned))
            .collect();
        let mut doomed: Vec<(ResourceKey, String, String)> = Vec::new();
        let mut foreground_done: Vec<(ResourceKey, String, String)> = Vec::new();
        let owners_in_foreground: HashSet<String> = self
            .objects
            .values()
            .flat_map(BTreeMap::values)
            .filter(|o| {
                o["metadata"]["finalizers"].as_array().is_some_and(|f| f.contains(&json!("foregroundDeletion")))
            })
            .filter_map(|o| o["metadata"]["uid"].as_str().map(str::to_owned))
            .collect();
        for (key, coll) in &self.objects {
            for ((ns, name), o) in coll {
                let refs: Vec<&str> = owner_uids(o).collect();
                let orphaned = !refs.is_empty() && refs.iter().all(|u| !uids.contains(*u));
                let owner_foreground = refs.iter().any(|u| owners_in_foreground.contains(*u));
                if (orphaned || owner_foreground) && o["metadata"]["deletionTimestamp"].is_null() {
                    doomed.push((key.clone(), ns.clone(), name.clone()));
                }
                if let Some(uid) = o["metadata"]["uid"].as_str() {
                    if owners_in_foreground.contains(uid) && !self.has_dependents(uid) {
                        foreground_done.push((key.clone(), ns.clone(), name.clone()));
                    }
                }
            }
        }
        let terminating: Vec<String> = self
            .all(&ResourceKey::new("", "namespaces"), None)
            .iter()
            .filter(|n| !n["metadata"]["deletionTimestamp"].is_null())
            .filter_map(|n| n["metadata"]["name"].as_str().map(str::to_owned))
            .collect();
        for ns in &terminating {
            for (key, coll) in &self.objects {
                if key.plural == "namespaces" && key.group.is_empty() {
                    continue;
                }
                for ((ons, name), o) in coll {
                    if ons == ns && o["metadata"]["deletionTimestamp"].is_null() {
                        doomed.push((key.clone(), ons.clone(), name.clone()));
                    }
                }
            }
        }
        for (key, ns, name) in doomed {
            if let Some(rt) = self.registry.by_key(&key).cloned() {
                let t = Target::new(&rt, Some(&ns), Some(&name));
                let _ = self.delete(
                    &t,
                    &DeleteOptions { grace_period: Some(if rt.kind == "Pod" { 30 } else { 0 }), ..Default::default() },
                    now,
                );
            }
        }
        for (key, ns, name) in foreground_done {
            if let (Some(rt), Some(o)) = (self.registry.by_key(&key).cloned(), self.get_raw(&key, &ns, &name)) {
                let mut n = (*o).clone();
                if let Some(f) = n["metadata"]["finalizers"].as_array_mut() {
                    f.retain(|x| x != "foregroundDeletion");
                }
                let t = Target::new(&rt, Some(&ns), Some(&name));
                let _ = self.finish_update(&t, &o, n, &WriteOptions::manager("garbage-collector"), now, None);
            }
        }
        for ns in terminating {
            let empty = self
                .objects
                .iter()
                .all(|(k, c)| (k.plural == "namespaces" && k.group.is_empty()) || c.keys().all(|(n, _)| n != &ns));
            let key = ResourceKey::new("", "namespaces");
            if empty {
                if let Some(o) = self.get_raw(&key, "", &ns) {
                    self.commit(&key, "", &ns, (*o).clone(), EventType::Deleted);
                }
            }
        }
    }

    /// Writes an object directly (no admission): for the simulated control plane's own status
    /// bookkeeping where the API path would only add noise, e.g. node heartbeats. Still bumps the
    /// resourceVersion and emits a watch event.
    pub fn system_write(&mut self, key: &ResourceKey, obj: Value) -> Arc<Value> {
        let ns = obj["metadata"]["namespace"].as_str().unwrap_or_default().to_owned();
        let name = obj["metadata"]["name"].as_str().unwrap_or_default().to_owned();
        let existed = self.get_raw(key, &ns, &name).is_some();
        self.commit(key, &ns, &name, obj, if existed { EventType::Modified } else { EventType::Added })
    }
}

/// Enum values must have the schema's type: a YAML 1.1 reader turning `Off` into `false` is the
/// classic way to break this.
fn check_enum_types(schema: &Value, path: &str, errs: &mut Vec<(String, String)>) {
    if let (Some(t), Some(values)) = (schema["type"].as_str(), schema["enum"].as_array()) {
        for (i, v) in values.iter().enumerate() {
            let ok = match t {
                "string" => v.is_string(),
                "integer" => v.is_i64() || v.is_u64(),
                "number" => v.is_number(),
                "boolean" => v.is_boolean(),
                _ => true,
            };
            if !(ok || v.is_null() && schema["nullable"] == json!(true)) {
                errs.push((format!("{path}.enum[{i}]"), format!("Invalid value: {v}: must be of type {t}")));
            }
        }
    }
    if let Some(props) = schema["properties"].as_object() {
        for (k, child) in props {
            check_enum_types(child, &format!("{path}.properties[{k}]"), errs);
        }
    }
    for key in ["items", "additionalProperties"] {
        if schema[key].is_object() {
            check_enum_types(&schema[key], &format!("{path}.{key}"), errs);
        }
    }
}

/// The shape every stored object has; checked before any field is touched, so malformed input
/// is a 400 rather than a failed request.
fn check_shape(body: &Value) -> Result<(), ApiError> {
    if !body.is_object() {
        return Err(ApiError::bad_request("the object provided is not a JSON object"));
    }
    match body.get("metadata") {
        None | Some(Value::Object(_)) => {}
        Some(_) => return Err(ApiError::bad_request("metadata must be a JSON object")),
    }
    for k in ["labels", "annotations"] {
        match body["metadata"].get(k) {
            None | Some(Value::Null) => {}
            Some(Value::Object(m)) if m.values().all(Value::is_string) => {}
            Some(_) => return Err(ApiError::bad_request(format!("metadata.{k} must be a map of strings"))),
        }
    }
    for k in ["finalizers", "ownerReferences", "managedFields"] {
        match body["metadata"].get(k) {
            None | Some(Value::Null) | Some(Value::Array(_)) => {}
            Some(_) => return Err(ApiError::bad_request(format!("metadata.{k} must be a list"))),
        }
    }
    match body.get("status") {
        None | Some(Value::Null) | Some(Value::Object(_)) => Ok(()),
        Some(_) => Err(ApiError::bad_request("status must be a JSON object")),
    }
}

trait WithCode {
    fn with_code(self, code: u16) -> Self;
}

impl WithCode for ApiError {
    fn with_code(mut self, code: u16) -> Self {
        self.code = code;
        self
    }
}

/// Whether `obj` has condition `type_` with status `True`.
pub fn condition_true(obj: &Value, type_: &str) -> bool {
    obj["status"]["conditions"].as_array().into_iter().flatten().any(|c| c["type"] == type_ && c["status"] == "True")
}

fn owner_uids(o: &Value) -> impl Iterator<Item = &str> {
    o["metadata"]["ownerReferences"].as_array().into_iter().flatten().filter_map(|r| r["uid"].as_str())
}

fn is_pending_graceful(rt: &ResourceType, obj: &Value) -> bool {
    rt.kind == "Pod" && obj["metadata"]["deletionGracePeriodSeconds"].as_i64().is_some_and(|g| g > 0)
}

pub fn ts(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn encode_continue(rv: u64, last: &(String, String)) -> String {
    let raw = json!({"v": "meta.k8s.io/v1", "rv": rv, "start": format!("{}/{}", last.0, last.1)}).to_string();
    raw.bytes().map(|b| format!("{b:02x}")).collect()
}

fn decode_continue(token: &str, compacted: u64) -> Result<(u64, (String, String)), ApiError> {
    let bad = || {
        ApiError::bad_request(
            "continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)",
        )
    };
    if !token.len().is_multiple_of(2) {
        return Err(bad());
    }
    let bytes: Result<Vec<u8>, _> =
        (0..token.len()).step_by(2).map(|i| u8::from_str_radix(&token[i..i + 2], 16)).collect();
    let v: Value = serde_json::from_slice(&bytes.map_err(|_| bad())?).map_err(|_| bad())?;
    let rv = v["rv"].as_u64().ok_or_else(bad)?;
    let start = v["start"].as_str().ok_or_else(bad)?;
    let (ns, name) = start.split_once('/').ok_or_else(bad)?;
    if rv < compacted {
        return Err(ApiError::gone(
            "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.",
        ));
    }
    Ok((rv, (ns.to_owned(), name.to_owned())))
}

/// Which part of an object a write through `sub` may own.
#[derive(Clone, Copy)]
enum Scope {
    Main { has_status: bool },
    Status,
}

fn sub_scope(rt: &ResourceType, sub: Option<&str>) -> Option<Scope> {
    match sub {
        Some("status") => Some(Scope::Status),
        Some("scale") => None,
        _ => Some(Scope::Main { has_status: rt.status }),
    }
}

/// The part of an object field managers own: no identity or server-set metadata.
fn ownable(obj: &Value, scope: Option<Scope>) -> Value {
    let mut v = obj.clone();
    if let Some(m) = v.as_object_mut() {
        m.remove("apiVersion");
        m.remove("kind");
        match scope {
            Some(Scope::Main { has_status: true }) => {
                m.remove("status");
            }
            Some(Scope::Status) => m.retain(|k, _| k == "status"),
            _ => {}
        }
    }
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        for k in [
            "name",
            "namespace",
            "uid",
            "resourceVersion",
            "generation",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "managedFields",
            "selfLink",
            "generateName",
        ] {
            meta.remove(k);
        }
        if meta.is_empty() {
            if let Some(m) = v.as_object_mut() {
                m.remove("metadata");
            }
        }
    }
    v
}

fn cfg_merge_view(config: &Value, rt: &ResourceType, sub: Option<&str>) -> Value {
    let mut c = config.clone();
    if let Some(m) = c.as_object_mut() {
        match sub_scope(rt, sub) {
            Some(Scope::Main { has_status: true }) => {
                m.remove("status");
            }
            Some(Scope::Status) => m.retain(|k, _| k == "status" || k == "apiVersion" || k == "kind"),
            _ => {}
        }
    }
    if let Some(meta) = c.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("resourceVersion");
        meta.remove("managedFields");
    }
    c
}

#[derive(Clone, Debug)]
struct Manager {
    manager: String,
    operation: String,
    api_version: String,
    time: String,
    subresource: Option<String>,
    fields: BTreeSet<FieldPath>,
}

impl Manager {
    fn new(
        manager: &str,
        op: &str,
        api_version: &str,
        now: Timestamp,
        subresource: Option<String>,
        fields: BTreeSet<FieldPath>,
    ) -> Self {
        Self {
            manager: manager.to_owned(),
            operation: op.to_owned(),
            api_version: api_version.to_owned(),
            time: ts(now),
            subresource,
            fields,
        }
    }
}

fn managers_of(obj: &Value) -> Vec<Manager> {
    obj["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| Manager {
            manager: m["manager"].as_str().unwrap_or_default().to_owned(),
            operation: m["operation"].as_str().unwrap_or("Update").to_owned(),
            api_version: m["apiVersion"].as_str().unwrap_or_default().to_owned(),
            time: m["time"].as_str().unwrap_or_default().to_owned(),
            subresource: m["subresource"].as_str().map(str::to_owned),
            fields: patch::from_fields_v1(&m["fieldsV1"]),
        })
        .collect()
}

fn set_managers(obj: &mut Value, managers: Vec<Manager>) {
    let list: Vec<Value> = managers
        .into_iter()
        .filter(|m| !m.fields.is_empty() && !m.manager.is_empty())
        .map(|m| {
            let mut e = json!({"manager": m.manager, "operation": m.operation, "apiVersion": m.api_version, "time": m.time,
                "fieldsType": "FieldsV1", "fieldsV1": patch::to_fields_v1(&m.fields)});
            if let Some(s) = m.subresource {
                e["subresource"] = Value::String(s);
            }
            e
        })
        .collect();
    if list.is_empty() {
        if let Some(m) = obj["metadata"].as_object_mut() {
            m.remove("managedFields");
        }
    } else {
        obj["metadata"]["managedFields"] = Value::Array(list);
    }
}

/// Non-apply writes take ownership of every field they change, from whoever held it.
fn track_update(old: &Value, new: &mut Value, rt: &ResourceType, manager: &str, sub: Option<&str>, now: Timestamp) {
    let meta = match &rt.schema {
        Some(s) => ListMeta::Schema(s.clone()),
        None => ListMeta::Builtin,
    };
    let scope = sub_scope(rt, sub);
    let before = patch::leaves(&ownable(old, scope), &meta);
    let after = patch::leaves(&ownable(new, scope), &meta);
    let changed: BTreeSet<FieldPath> =
        after.iter().filter(|(p, v)| before.get(*p) != Some(*v)).map(|(p, _)| p.clone()).collect();
    let removed: BTreeSet<FieldPath> = before.keys().filter(|p| !after.contains_key(*p)).cloned().collect();
    if changed.is_empty() && removed.is_empty() {
        new["metadata"]["managedFields"] = old["metadata"]["managedFields"].clone();
        if new["metadata"]["managedFields"].is_null() {
            if let Some(m) = new["metadata"].as_object_mut() {
                m.remove("managedFields");
            }
        }
        return;
    }
    let mut managers = managers_of(old);
    for m in managers.iter_mut() {
        m.fields.retain(|p| !changed.contains(p) && !removed.contains(p));
    }
    let sub_name = sub.filter(|s| *s == "status").map(str::to_owned);
    let name = if manager.is_empty() { "unknown" } else { manager };
    match managers.iter_mut().find(|m| m.manager == name && m.operation == "Update" && m.subresource == sub_name) {
        Some(m) => {
            m.fields.extend(changed);
            m.time = ts(now);
        }
        None => managers.push(Manager::new(name, "Update", &rt.api_version(), now, sub_name, changed)),
    }
    set_managers(new, managers);
}

fn strip_for_generation(obj: &Value, rt: &ResourceType) -> Value {
    let mut v = obj.clone();
    if let Some(m) = v.as_object_mut() {
        m.remove("metadata");
        m.remove("apiVersion");
        m.remove("kind");
        if rt.status || rt.is_builtin() {
            m.remove("status");
        }
    }
    v
}

fn without_volatile(obj: &Value) -> Value {
    let mut v = obj.clone();
    if let Some(m) = v["metadata"].as_object_mut() {
        m.remove("resourceVersion");
        if let Some(Value::Array(mf)) = m.get_mut("managedFields") {
            for e in mf {
                if let Some(e) = e.as_object_mut() {
                    e.remove("time");
                }
            }
        }
    }
    if let Some(m) = v.as_object_mut() {
        m.remove("apiVersion");
    }
    v
}

/// Pods allow few spec changes after creation; the rest is a 422 as upstream.
fn check_pod_update(old: &Value, new: &Value) -> Result<(), String> {
    let normalize = |p: &Value| {
        let mut s = p["spec"].clone();
        if let Some(m) = s.as_object_mut() {
            for k in ["activeDeadlineSeconds", "tolerations", "terminationGracePeriodSeconds", "schedulingGates"] {
                m.remove(k);
            }
            if let Some(Value::Array(cs)) = m.get_mut("containers") {
                for c in cs {
                    if let Some(c) = c.as_object_mut() {
                        c.remove("image");
                    }
                }
            }
            if old["spec"]["nodeName"].as_str().is_none_or(str::is_empty) {
                m.remove("nodeName");
            }
        }
        s
    };
    if normalize(old) != normalize(new) {
        return Err("Forbidden: pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)".into());
    }
    Ok(())
}

fn initial_status(rt: &ResourceType, obj: &mut Value) {
    match (rt.group.as_str(), rt.kind.as_str()) {
        ("", "Pod") => {
            obj["status"] = json!({"phase": "Pending", "qosClass": qos_class(&obj["spec"])});
        }
        ("", "Namespace") => {
            obj["status"] = json!({"phase": "Active"});
            if obj["spec"]["finalizers"].is_null() {
                obj["spec"] = json!({"finalizers": ["kubernetes"]});
            }
        }
        ("apiextensions.k8s.io", "CustomResourceDefinition") => {
            obj["status"] = json!({
                "acceptedNames": obj["spec"]["names"].clone(),
                "storedVersions": obj["spec"]["versions"].as_array().into_iter().flatten().filter(|v| v["storage"] == json!(true)).map(|v| v["name"].clone()).collect::<Vec<_>>(),
                "conditions": [
                    {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found", "lastTransitionTime": obj["metadata"]["creationTimestamp"].clone()},
                    {"type": "Established", "status": "True", "reason": "InitialNamesAccepted", "message": "the initial names have been accepted", "lastTransitionTime": obj["metadata"]["creationTimestamp"].clone()}
                ]
            });
        }
        _ => {}
    }
}

/// The pod QoS class from its containers' requests and limits, as the API server records it.
pub fn qos_class(spec: &Value) -> &'static str {
    let containers = spec["containers"].as_array().map(Vec::as_slice).unwrap_or_default();
    let mut any = false;
    let mut guaranteed = !containers.is_empty();
    for c in containers {
        let req = &c["resources"]["requests"];
        let lim = &c["resources"]["limits"];
        for r in ["cpu", "memory"] {
            let (q, l) = (req.get(r).filter(|v| !v.is_null()), lim.get(r).filter(|v| !v.is_null()));
            if q.is_some() || l.is_some() {
                any = true;
            }
            match (q, l) {
                (_, None) => guaranteed = false,
                (Some(q), Some(l)) if q != l => guaranteed = false,
                _ => {}
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

fn get_path<'a>(v: &'a Value, path: &[String]) -> &'a Value {
    path.iter().fold(v, |cur, seg| &cur[seg.as_str()])
}

fn set_path(v: &mut Value, path: &[String], value: Value) {
    let mut cur = v;
    for seg in path {
        if !cur.is_object() {
            *cur = Value::Object(Map::new());
        }
        cur = &mut cur[seg.as_str()];
    }
    *cur = value;
}

/// The `autoscaling/v1` Scale view of an object with a scale subresource.
pub fn scale_view(rt: &ResourceType, obj: &Value) -> Result<Value, ApiError> {
    let name = obj["metadata"]["name"].as_str().unwrap_or_default();
    let Some(paths) = &rt.scale else {
        return Err(ApiError::not_found(&format!("{}/scale", rt.key()), name));
    };
    let selector = match &paths.label_selector {
        // Built-in workloads publish the selector from spec.selector.
        Some(_) if rt.is_builtin() => {
            LabelSelector::from_json(&obj["spec"]["selector"]).map(|s| s.to_query()).unwrap_or_default()
        }
        Some(p) => get_path(obj, p).as_str().unwrap_or_default().to_owned(),
        None => String::new(),
    };
    let mut status = json!({"replicas": get_path(obj, &paths.status_replicas).as_i64().unwrap_or(0)});
    if !selector.is_empty() {
        status["selector"] = Value::String(selector);
    }
    Ok(json!({
        "kind": "Scale", "apiVersion": "autoscaling/v1",
        "metadata": {"name": name, "namespace": obj["metadata"]["namespace"], "uid": obj["metadata"]["uid"],
                      "resourceVersion": obj["metadata"]["resourceVersion"], "creationTimestamp": obj["metadata"]["creationTimestamp"]},
        "spec": {"replicas": get_path(obj, &paths.spec_replicas).as_i64().unwrap_or(0)},
        "status": status,
    }))
}

fn from_scale(rt: &ResourceType, obj: &Value, scale: &Value) -> Result<Value, ApiError> {
    let name = obj["metadata"]["name"].as_str().unwrap_or_default();
    let Some(paths) = &rt.scale else {
        return Err(ApiError::not_found(&format!("{}/scale", rt.key()), name));
    };
    let replicas = match &scale["spec"]["replicas"] {
        Value::Null => 0,
        v => v.as_i64().ok_or_else(|| ApiError::bad_request("spec.replicas must be an integer"))?,
    };
    if replicas < 0 {
        return Err(ApiError::invalid(
            "Scale",
            name,
            vec![("spec.replicas".into(), format!("Invalid value: {replicas}: must be greater than or equal to 0"))],
        ));
    }
    let mut out = obj.clone();
    set_path(&mut out, &paths.spec_replicas, json!(replicas));
    Ok(out)
}

#[cfg(test)]
mod tests;
