//! The validation controllers: watch Autoscalers and NodePools, decide `Ready` with
//! [`crate::validate`], and publish it as a status condition plus an Event on change.
//!
//! Objects are read through `DeserializeGuard`, so one object that does not match the Rust types
//! (applied against an older CRD, hand-edited storage) becomes a `Ready=False/Malformed`
//! condition instead of breaking the watch for everyone.

use std::{
    collections::HashMap,
    fmt::Debug,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta};
use kube::{
    Api, Client, Resource, ResourceExt,
    core::DeserializeGuard,
    runtime::{
        Controller,
        controller::Action,
        events::{Event, EventType, Recorder},
        reflector::{ObjectRef, Store},
        watcher,
    },
};
use omniscale_api::{
    Autoscaler, NodePool,
    clock::Clock,
    condition::{ConditionStatus, ConditionUpdate, READY, find_condition, set_condition},
};
use serde_json::json;
use tokio::sync::watch;
use tracing::{Instrument, info, info_span, warn};

use crate::{Error, Result, metrics::Metrics, targets::TargetDiscovery, validate};

/// Field manager for the conditions this controller owns (engines use their own, so SSA keeps
/// each engine's conditions separate).
pub const FIELD_MANAGER: &str = "omniscale-validation";

/// How often a valid object is re-validated (a target kind or a peer pool can change without an
/// event on this object).
const RECHECK: Duration = Duration::from_secs(300);
/// How often an Autoscaler whose target object is missing looks for it again.
const TARGET_RECHECK: Duration = Duration::from_secs(10);

/// Shared state of the validation controllers.
pub struct Context {
    /// API client.
    pub client: Client,
    /// Event recorder shared by both controllers (one reporter, so events aggregate).
    pub recorder: Recorder,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// True while this replica leads; writes are skipped otherwise.
    pub leader: watch::Receiver<bool>,
    /// Discovery of scale targets.
    pub targets: TargetDiscovery,
    /// Namespace scope for Autoscalers (`None`: all namespaces).
    pub namespace: Option<String>,
    /// The time decisions and condition timestamps are taken at (the simulated cluster's under
    /// `omniscale sim`, so periods and windows shrink with its speed).
    pub clock: Clock,
    /// Consecutive failures per object, for exponential retry.
    failures: Mutex<HashMap<String, u32>>,
    /// Last condition written for objects whose status cannot be read (malformed ones).
    written: Mutex<HashMap<String, (Option<i64>, ConditionUpdate)>>,
}

impl Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("namespace", &self.namespace)
            .field("leader", &*self.leader.borrow())
            .finish_non_exhaustive()
    }
}

impl Context {
    /// A context for the controllers.
    pub fn new(
        client: Client,
        recorder: Recorder,
        metrics: Arc<Metrics>,
        leader: watch::Receiver<bool>,
        namespace: Option<String>,
        clock: Clock,
    ) -> Self {
        Context {
            targets: TargetDiscovery::new(client.clone()),
            client,
            recorder,
            metrics,
            leader,
            namespace,
            clock,
            failures: Mutex::default(),
            written: Mutex::default(),
        }
    }

    fn is_leader(&self) -> bool {
        *self.leader.borrow()
    }

    /// Books a successful reconcile (metrics, failure count reset) and schedules the periodic
    /// re-check after `recheck`.
    fn succeeded(
        &self,
        controller: &str,
        kind: &str,
        meta: &ObjectMeta,
        started: std::time::Instant,
        recheck: Duration,
    ) -> Action {
        self.metrics.observe_reconcile(controller, started.elapsed().as_secs_f64());
        if let Ok(mut f) = self.failures.lock() {
            f.remove(&object_key(kind, meta));
        }
        Action::requeue(self.clock.wall_duration(recheck))
    }
}

fn object_key(kind: &str, meta: &ObjectMeta) -> String {
    format!("{kind}/{}/{}", meta.namespace.as_deref().unwrap_or(""), meta.name.as_deref().unwrap_or(""))
}

/// Retry delay after `n` consecutive failures: 5 s doubling to 5 min.
pub fn backoff(n: u32) -> Duration {
    Duration::from_secs(5u64.saturating_mul(1u64 << n.min(6)).min(300))
}

/// Writes the Ready condition through the status subresource (server-side apply) and emits an
/// Event when it changed. Skips the write when nothing a reader would see changed.
async fn publish_ready<K>(
    ctx: &Context,
    api: Api<K>,
    meta: &ObjectMeta,
    existing: Option<&[Condition]>,
    update: ConditionUpdate,
) -> Result<()>
where
    K: Resource<DynamicType = ()> + Clone + Debug + serde::de::DeserializeOwned,
{
    let key = object_key(&K::kind(&()), meta);
    let generation = meta.generation;
    let now = ctx.clock.now();
    let mut conditions: Vec<Condition> = existing.map(<[Condition]>::to_vec).unwrap_or_default();
    let changed = match existing {
        Some(_) => set_condition(&mut conditions, update.clone(), generation, now),
        None => {
            let memo = ctx.written.lock().ok().and_then(|w| w.get(&key).cloned());
            let changed = memo.as_ref() != Some(&(generation, update.clone()));
            set_condition(&mut conditions, update.clone(), generation, now);
            changed
        }
    };
    if !changed {
        return Ok(());
    }
    if !ctx.is_leader() {
        return Ok(());
    }
    let previous = existing.and_then(|c| find_condition(c, READY)).map(|c| (c.status.clone(), c.reason.clone()));
    let ready = conditions.iter().find(|c| c.type_ == READY).cloned();
    let patch = json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": {"observedGeneration": generation, "conditions": [ready]},
    });
    let name = meta.name.clone().unwrap_or_default();
    api.patch_status(&name, &kube::api::PatchParams::apply(FIELD_MANAGER).force(), &kube::api::Patch::Apply(&patch))
        .await?;
    if let Ok(mut w) = ctx.written.lock() {
        w.insert(key, (generation, update.clone()));
    }
    if previous != Some((update.status.as_str().to_string(), update.reason.clone())) {
        let event = Event {
            type_: if update.status == ConditionStatus::True { EventType::Normal } else { EventType::Warning },
            reason: update.reason.clone(),
            note: Some(update.message.chars().take(1000).collect()),
            action: "Validate".into(),
            secondary: None,
        };
        let reference = object_reference::<K>(meta);
        if let Err(e) = ctx.recorder.publish(&event, &reference).await {
            // An event is a courtesy; the condition already carries the information.
            warn!(error = %e, "could not publish event");
        }
    }
    info!(ready = update.status.as_str(), reason = %update.reason, message = %update.message, "published Ready condition");
    Ok(())
}

fn object_reference<K: Resource<DynamicType = ()>>(meta: &ObjectMeta) -> k8s_openapi::api::core::v1::ObjectReference {
    k8s_openapi::api::core::v1::ObjectReference {
        api_version: Some(K::api_version(&()).into_owned()),
        kind: Some(K::kind(&()).into_owned()),
        name: meta.name.clone(),
        namespace: meta.namespace.clone(),
        uid: meta.uid.clone(),
        resource_version: meta.resource_version.clone(),
        field_path: None,
    }
}

fn malformed(kind: &str, error: &str) -> ConditionUpdate {
    ConditionUpdate::fails(
        READY,
        validate::reason::MALFORMED,
        format!("cannot read this object as {}/{} {kind}: {error}", omniscale_api::GROUP, omniscale_api::VERSION),
    )
}

/// Reconciles one Autoscaler: validate, publish Ready.
pub async fn reconcile_autoscaler(obj: Arc<DeserializeGuard<Autoscaler>>, ctx: Arc<Context>) -> Result<Action> {
    let started = std::time::Instant::now();
    let (meta, existing, update) = match &obj.0 {
        Ok(a) => {
            let t = &a.spec.target_ref;
            let target = ctx.targets.kind_of(&t.api_version, &t.kind).await?;
            let object = match &target {
                validate::TargetKind::Scalable { plural } => target_object(&ctx, a, plural).await?,
                _ => validate::TargetObject::Unchecked,
            };
            (
                &a.metadata,
                Some(a.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default()),
                validate::autoscaler_ready(a, &target, object),
            )
        }
        Err(invalid) => (&invalid.metadata, None, malformed("Autoscaler", &invalid.error)),
    };
    let span = info_span!(
        "reconcile",
        kind = "Autoscaler",
        namespace = meta.namespace.as_deref().unwrap_or(""),
        name = meta.name.as_deref().unwrap_or("")
    );
    // Guarded, so the response of a patch on a malformed object decodes too.
    let api: Api<DeserializeGuard<Autoscaler>> =
        Api::namespaced(ctx.client.clone(), meta.namespace.as_deref().unwrap_or("default"));
    // A missing target is looked for again soon: nothing on this object changes when it appears.
    let recheck = if update.reason == validate::reason::TARGET_NOT_FOUND { TARGET_RECHECK } else { RECHECK };
    publish_ready(&ctx, api, meta, existing, update).instrument(span).await?;
    Ok(ctx.succeeded("autoscaler", "Autoscaler", meta, started, recheck))
}

/// Whether the target object exists, read through its `scale` subresource (the one read the
/// RBAC grants for every kind).
async fn target_object(ctx: &Context, a: &Autoscaler, plural: &str) -> Result<validate::TargetObject> {
    let api = crate::horizontal::target_api(&ctx.client, a, plural.to_owned());
    match api.get_subresource("scale", &a.spec.target_ref.name).await {
        Ok(_) => Ok(validate::TargetObject::Found),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(validate::TargetObject::Missing),
        Err(e) => Err(e.into()),
    }
}

/// Reconciles one NodePool, given every NodePool (for conflicting claims).
pub async fn reconcile_nodepool(
    obj: Arc<DeserializeGuard<NodePool>>,
    ctx: Arc<Context>,
    all: &[Arc<DeserializeGuard<NodePool>>],
) -> Result<Action> {
    let started = std::time::Instant::now();
    let (meta, existing, update) = match &obj.0 {
        Ok(p) => {
            let peers: Vec<&NodePool> = all.iter().filter_map(|g| g.0.as_ref().ok()).collect();
            (
                &p.metadata,
                Some(p.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default()),
                validate::nodepool_ready(p, &peers),
            )
        }
        Err(invalid) => (&invalid.metadata, None, malformed("NodePool", &invalid.error)),
    };
    let span = info_span!("reconcile", kind = "NodePool", name = meta.name.as_deref().unwrap_or(""));
    publish_ready(&ctx, Api::<DeserializeGuard<NodePool>>::all(ctx.client.clone()), meta, existing, update)
        .instrument(span)
        .await?;
    Ok(ctx.succeeded("nodepool", "NodePool", meta, started, RECHECK))
}

/// Error policy shared by both controllers: count, log, retry with exponential backoff.
fn error_policy<K: Resource>(controller: &'static str, kind: &str, obj: &K, err: &Error, ctx: &Context) -> Action {
    ctx.metrics.observe_error(controller, err.metric_label());
    let key = object_key(kind, obj.meta());
    let n = ctx
        .failures
        .lock()
        .map(|mut f| {
            let n = f.entry(key).or_insert(0);
            *n = n.saturating_add(1);
            *n
        })
        .unwrap_or(1);
    let delay = backoff(n - 1);
    warn!(controller, name = %obj.name_any(), error = %err, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// Runs both controllers until the future is dropped (on loss of leadership or shutdown).
pub async fn run(ctx: Arc<Context>) {
    let autoscalers: Api<DeserializeGuard<Autoscaler>> = match &ctx.namespace {
        Some(ns) => Api::namespaced(ctx.client.clone(), ns),
        None => Api::all(ctx.client.clone()),
    };
    let pools: Api<DeserializeGuard<NodePool>> = Api::all(ctx.client.clone());

    let a = Controller::new(autoscalers, watcher::Config::default().any_semantic())
        .run(
            reconcile_autoscaler,
            |obj, err, ctx| error_policy("autoscaler", "Autoscaler", obj.as_ref(), err, ctx.as_ref()),
            ctx.clone(),
        )
        .for_each(|_| async {});

    let pool_controller = Controller::new(pools.clone(), watcher::Config::default().any_semantic());
    let store: Store<DeserializeGuard<NodePool>> = pool_controller.store();
    let mapper_store = store.clone();
    // A change to any pool can change whether another pool's claim conflicts.
    let p = pool_controller
        .watches(pools, watcher::Config::default().any_semantic(), move |_changed| {
            mapper_store.state().iter().map(|o| ObjectRef::from_obj(o.as_ref())).collect::<Vec<_>>()
        })
        .run(
            move |obj, ctx| {
                let all = store.state();
                async move { reconcile_nodepool(obj, ctx, &all).await }
            },
            |obj, err, ctx| error_policy("nodepool", "NodePool", obj.as_ref(), err, ctx.as_ref()),
            ctx.clone(),
        )
        .for_each(|_| async {});
    futures::join!(a, p);
}

#[cfg(test)]
mod tests;
