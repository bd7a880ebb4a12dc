//! The horizontal shell. Every sync period (15 s, on the operator's clock) one cycle:
//!
//! 1. reads every Autoscaler with `horizontal` and all pods from watch caches (no request);
//! 2. reads each target's `/scale` (any kind with one, found through discovery) — one GET per
//!    target, concurrently;
//! 3. collects the metrics queries all Autoscalers need into one [`Cache`] and makes each once —
//!    one PodMetrics list per namespace, one read per distinct custom or external metric;
//! 4. evaluates each Autoscaler with the pure engine ([`omniscale_hpa::input::evaluate`]);
//! 5. rescales unless `mode: Recommend` or `--dry-run`, and publishes status (with the history
//!    the stabilisation windows need, so a restart or a new leader forgets nothing), conditions
//!    and Events.

use std::collections::HashMap;
use std::{sync::Arc, time::Duration};

use futures::StreamExt;
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{
    Api, ResourceExt,
    api::{ApiResource, DynamicObject, Patch, PatchParams},
    core::DeserializeGuard,
    runtime::{events::EventType, reflector::Store},
};
use omniscale_api::{
    Autoscaler,
    autoscaler::{HorizontalHistory, Mode, TimedCount},
};
use omniscale_hpa::decide::{self, Decision, History, MetricOutcome};
use omniscale_hpa::input::{self, Scale};
use omniscale_hpa::normalize::{self, Recommendation, ScaleEvent};
use omniscale_metrics::{Cache, PodIndex};
use serde_json::json;
use tracing::{debug, info, warn};

use crate::{Result, controller::Context, validate::TargetKind};

/// Field manager of everything this shell writes in status.
pub const FIELD_MANAGER: &str = "omniscale-horizontal";

/// Upstream's `--horizontal-pod-autoscaler-sync-period`.
pub const SYNC_PERIOD: Duration = Duration::from_secs(15);

/// How many targets' scales are read, and how many Autoscalers are acted on, at once.
const CONCURRENCY: usize = 16;

/// Runs until dropped (the leader section drops it when leadership is lost). `pods` and
/// `autoscalers` are the process's watch caches, shared with the vertical shell and webhook.
pub async fn run(ctx: Arc<Context>, dry_run: bool, pods: Store<Pod>, autoscalers: Store<DeserializeGuard<Autoscaler>>) {
    if pods.wait_until_ready().await.is_err() || autoscalers.wait_until_ready().await.is_err() {
        return;
    }
    let metrics = omniscale_metrics::Client::new(ctx.client.clone());
    let mut memory: HashMap<String, History> = HashMap::new();
    loop {
        let started = std::time::Instant::now();
        cycle(&ctx, &pods, &autoscalers, &metrics, &mut memory, dry_run).await;
        ctx.metrics.observe_reconcile("horizontal-cycle", started.elapsed().as_secs_f64());
        tokio::time::sleep(ctx.clock.wall_duration(SYNC_PERIOD).max(Duration::from_millis(20))).await;
    }
}

/// An Autoscaler of this cycle with what was read for it.
struct Item {
    a: Autoscaler,
    uid: String,
    target: Option<Api<DynamicObject>>,
    scale: std::result::Result<Scale, String>,
}

/// The Object metrics' described objects, resolved to the custom metrics API's resource names
/// through discovery (cached by [`crate::targets::TargetDiscovery`]).
async fn object_resources(ctx: &Context, autoscalers: &[Autoscaler]) -> HashMap<(String, String), Option<String>> {
    let mut out = HashMap::new();
    for a in autoscalers {
        for m in a.spec.horizontal.iter().flat_map(|h| h.metrics.iter().flatten()) {
            let Some(o) = &m.object else { continue };
            let api_version = o.described_object.api_version.clone().unwrap_or_else(|| "v1".into());
            let key = (api_version.clone(), o.described_object.kind.clone());
            if out.contains_key(&key) {
                continue;
            }
            let group = api_version.split_once('/').map_or("", |(g, _)| g);
            let resource = match ctx.targets.kind_of(&api_version, &key.1).await {
                Ok(TargetKind::Scalable { plural } | TargetKind::NotScalable { plural }) => {
                    Some(if group.is_empty() { plural } else { format!("{plural}.{group}") })
                }
                Ok(_) => None,
                Err(e) => {
                    debug!(error = %e, api_version, kind = %key.1, "discovery failed");
                    None
                }
            };
            out.insert(key, resource);
        }
    }
    out
}

/// The API of an Autoscaler's target kind in its namespace, `plural` as discovery named it.
pub(crate) fn target_api(client: &kube::Client, a: &Autoscaler, plural: String) -> Api<DynamicObject> {
    let ns = a.namespace().unwrap_or_else(|| "default".into());
    let t = &a.spec.target_ref;
    let (group, version) = t.api_version.split_once('/').unwrap_or(("", t.api_version.as_str()));
    let ar = ApiResource {
        group: group.into(),
        version: version.into(),
        api_version: t.api_version.clone(),
        kind: t.kind.clone(),
        plural,
    };
    Api::namespaced_with(client.clone(), &ns, &ar)
}

/// Reads one target's scale.
pub(crate) async fn read_scale(
    ctx: &Context,
    a: &Autoscaler,
) -> (Option<Api<DynamicObject>>, std::result::Result<Scale, String>) {
    let t = &a.spec.target_ref;
    let plural = match ctx.targets.kind_of(&t.api_version, &t.kind).await {
        Ok(TargetKind::Scalable { plural }) => plural,
        // The validation controller reports targets that are missing or not scalable.
        Ok(_) => return (None, Err(format!("{} {} has no scale subresource", t.api_version, t.kind))),
        Err(e) => return (None, Err(format!("discovery failed: {e}"))),
    };
    let target = target_api(&ctx.client, a, plural);
    let scale = match target.get_subresource("scale", &t.name).await {
        Ok(s) => match serde_json::to_value(&s) {
            Ok(v) => {
                let spec_replicas = v["spec"]["replicas"].as_i64().unwrap_or(0) as i32;
                Ok(Scale {
                    spec_replicas,
                    status_replicas: v["status"]["replicas"].as_i64().map_or(spec_replicas, |r| r as i32),
                    selector: v["status"]["selector"].as_str().unwrap_or_default().to_owned(),
                })
            }
            Err(e) => Err(e.to_string()),
        },
        Err(e) => Err(e.to_string()),
    };
    (Some(target), scale)
}

/// One sync cycle over every horizontal Autoscaler.
async fn cycle(
    ctx: &Context,
    pods: &Store<Pod>,
    autoscalers: &Store<DeserializeGuard<Autoscaler>>,
    metrics: &omniscale_metrics::Client,
    memory: &mut HashMap<String, History>,
    dry_run: bool,
) {
    let list: Vec<Autoscaler> = autoscalers
        .state()
        .iter()
        .filter_map(|g| g.0.as_ref().ok())
        .filter(|a| a.spec.horizontal.is_some() && a.spec.mode != Mode::Off)
        .cloned()
        .collect();
    memory.retain(|uid, _| list.iter().any(|a| a.uid().as_deref() == Some(uid.as_str())));
    let resources = object_resources(ctx, &list).await;
    let resource_of = |api_version: &str, kind: &str| -> Option<String> {
        resources.get(&(api_version.to_owned(), kind.to_owned())).cloned().flatten()
    };
    let items: Vec<Item> = futures::stream::iter(list)
        .map(|a| async move {
            let (target, scale) = read_scale(ctx, &a).await;
            Item { uid: a.uid().unwrap_or_default(), a, target, scale }
        })
        .buffered(CONCURRENCY)
        .collect()
        .await;
    let scale_reads = items.iter().filter(|i| i.target.is_some()).count();
    let mut cache = Cache::new();
    for i in items.iter().filter(|i| i.scale.is_ok()) {
        let ns = i.a.namespace().unwrap_or_default();
        let specs = input::metric_specs(i.a.spec.horizontal.as_ref().and_then(|h| h.metrics.as_deref()));
        input::want(&specs, &ns, &mut cache, &resource_of);
    }
    metrics.fill(&mut cache).await;
    ctx.metrics.count_reads("horizontal", "scale", scale_reads);
    ctx.metrics.count_reads("horizontal", "metrics", cache.requests());
    debug!(autoscalers = items.len(), scale_reads, metrics_reads = cache.requests(), "horizontal cycle read");
    // Only the label keys the targets' selectors test for equality are indexed.
    let selectors: Vec<omniscale_api::selector::LabelSelector> = items
        .iter()
        .filter_map(|i| i.scale.as_ref().ok())
        .filter_map(|s| omniscale_api::selector::LabelSelector::parse(&s.selector).ok())
        .collect();
    let index = PodIndex::with_keys(pods.state(), selectors.iter().flat_map(|s| s.equalities().map(|(k, _)| k)));
    let now = ctx.clock.now();
    let work: Vec<(Item, History)> = items
        .into_iter()
        .map(|i| {
            let h = memory.remove(&i.uid).unwrap_or_else(|| {
                history_from(i.a.status.as_ref().and_then(|s| s.horizontal.as_ref()).and_then(|s| s.history.as_ref()))
            });
            (i, h)
        })
        .collect();
    let (cache, index, resource_of) = (&cache, &index, &resource_of);
    let done: Vec<(String, History)> = futures::stream::iter(work)
        .map(|(item, mut history)| async move {
            let span = tracing::info_span!("horizontal", autoscaler = %format!("{}/{}", item.a.namespace().unwrap_or_default(), item.a.name_any()));
            let _guard = span.enter();
            if let Err(e) = reconcile(ctx, &item, cache, index, resource_of, &mut history, dry_run, now).await {
                warn!(error = %e, "horizontal reconcile failed; retrying next period");
            }
            (item.uid, history)
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    memory.extend(done);
}

fn history_from(h: Option<&HorizontalHistory>) -> History {
    let Some(h) = h else { return History::default() };
    let events =
        |v: &[TimedCount]| v.iter().map(|e| ScaleEvent { at: e.time.0, change: e.replicas, outdated: false }).collect();
    History {
        recommendations: h
            .recommendations
            .iter()
            .map(|r| Recommendation { at: r.time.0, replicas: r.replicas })
            .collect(),
        scale_up_events: events(&h.scale_up_events),
        scale_down_events: events(&h.scale_down_events),
    }
}

/// Keeps what the windows can still need: the longest window or period is 1 h upstream, and
/// recommendations a later one makes irrelevant are dropped ([`normalize::compact`]).
fn history_to(h: &History, now: Timestamp) -> HorizontalHistory {
    let keep = |at: Timestamp| at > now - SignedDuration::from_hours(1);
    let counts = |v: &[ScaleEvent]| {
        v.iter()
            .filter(|e| keep(e.at) && !e.outdated)
            .map(|e| TimedCount { time: Time(e.at), replicas: e.change })
            .collect()
    };
    HorizontalHistory {
        recommendations: normalize::compact(&h.recommendations)
            .iter()
            .filter(|r| keep(r.at))
            .map(|r| TimedCount { time: Time(r.at), replicas: r.replicas })
            .collect(),
        scale_up_events: counts(&h.scale_up_events),
        scale_down_events: counts(&h.scale_down_events),
    }
}

/// One Autoscaler, one decision, from what the cycle read.
#[allow(clippy::too_many_arguments)]
async fn reconcile(
    ctx: &Context,
    item: &Item,
    cache: &Cache,
    pods: &PodIndex,
    resource_of: input::ResourceOf<'_>,
    history: &mut History,
    dry_run: bool,
    now: Timestamp,
) -> Result<()> {
    let a = &item.a;
    let Some(h) = &a.spec.horizontal else { return Ok(()) };
    let Some(target) = &item.target else { return Ok(()) };
    let ns = a.namespace().unwrap_or_else(|| "default".into());
    let existing = a.status.clone().unwrap_or_default();
    let scale = match &item.scale {
        Ok(s) => s,
        Err(e) => {
            let cond = decide::Cond {
                type_: "AbleToScale",
                status: "False",
                reason: "FailedGetScale".into(),
                message: format!("the autoscaler was unable to get the target's current scale: {e}"),
            };
            publish(ctx, a, None, &[cond], history, now).await?;
            event(ctx, a, EventType::Warning, "FailedGetScale", e).await;
            return Ok(());
        }
    };
    let spec_replicas = scale.spec_replicas;
    let e = input::evaluate(h, &ns, scale, pods, cache, resource_of, history, now);
    let d = &e.decision;
    let mut conditions = d.conditions.clone();
    let mut rescaled = false;
    if d.desired != spec_replicas {
        let why = rescale_reason(d);
        if a.spec.mode == Mode::Recommend || dry_run {
            debug!(from = spec_replicas, to = d.desired, "would rescale (recommend only)");
        } else {
            let patch = json!({"spec": {"replicas": d.desired}});
            let t = &a.spec.target_ref;
            match target.patch_subresource("scale", &t.name, &PatchParams::default(), &Patch::Merge(&patch)).await {
                Ok(_) => {
                    rescaled = true;
                    decide::record_rescale(history, e.behavior.as_ref(), spec_replicas, d.desired, now);
                    info!(from = spec_replicas, to = d.desired, reason = %why, "rescaled");
                    set(
                        &mut conditions,
                        "AbleToScale",
                        "True",
                        "SucceededRescale",
                        format!("the HPA controller was able to update the target scale to {}", d.desired),
                    );
                    event(
                        ctx,
                        a,
                        EventType::Normal,
                        "SuccessfulRescale",
                        &format!("New size: {}; reason: {why}", d.desired),
                    )
                    .await;
                }
                Err(err) => {
                    set(
                        &mut conditions,
                        "AbleToScale",
                        "False",
                        "FailedUpdateScale",
                        format!("the HPA controller was unable to update the target scale: {err}"),
                    );
                    event(
                        ctx,
                        a,
                        EventType::Warning,
                        "FailedRescale",
                        &format!("New size: {}; reason: {why}; error: {err}", d.desired),
                    )
                    .await;
                }
            }
        }
    }
    if d.branch == "metrics failed" {
        if let Some(MetricOutcome::Error { reason, message }) =
            d.metrics.iter().find(|m| matches!(m, MetricOutcome::Error { .. }))
        {
            event(ctx, a, EventType::Warning, reason, message).await;
            event(
                ctx,
                a,
                EventType::Warning,
                "FailedComputeMetricsReplicas",
                &format!(
                    "invalid metrics ({} invalid out of {}), first error is: {message}",
                    d.metrics.iter().filter(|m| matches!(m, MetricOutcome::Error { .. })).count(),
                    d.metrics.len()
                ),
            )
            .await;
        }
    }
    let last_scale = if rescaled {
        Some(now)
    } else {
        existing.horizontal.as_ref().and_then(|s| s.last_scale_time.as_ref()).map(|t| t.0)
    };
    let status = json!({
        "currentReplicas": spec_replicas,
        "desiredReplicas": d.desired,
        "lastScaleTime": last_scale.map(|t| t.to_string()),
        "currentMetrics": input::current_metrics(&e),
        "explanation": input::explain(&e),
    });
    publish(ctx, a, Some(status), &conditions, history, now).await
}

fn set(conds: &mut Vec<decide::Cond>, type_: &'static str, status: &'static str, reason: &str, message: String) {
    conds.retain(|c| c.type_ != type_);
    conds.push(decide::Cond { type_, status, reason: reason.into(), message });
}

/// Upstream's rescale reason, e.g. "cpu resource utilization (percentage of request) above target".
fn rescale_reason(d: &Decision) -> String {
    match d.branch {
        "above max" => "Current number of replicas above Spec.MaxReplicas".into(),
        "below min" => "Current number of replicas below Spec.MinReplicas".into(),
        _ => {
            let dir = if d.desired > d.current { "above" } else { "below" };
            format!("All metrics {dir} target")
        }
    }
}

async fn event(ctx: &Context, a: &Autoscaler, type_: EventType, reason: &str, note: &str) {
    crate::report::event(ctx, a, type_, "Scale", reason, note).await;
}

/// Writes `status.horizontal` and this shell's conditions with server-side apply.
async fn publish(
    ctx: &Context,
    a: &Autoscaler,
    horizontal: Option<serde_json::Value>,
    conds: &[decide::Cond],
    history: &History,
    now: Timestamp,
) -> Result<()> {
    let conditions: Vec<serde_json::Value> =
        conds.iter().map(|c| crate::report::condition(a, c.type_, c.status, &c.reason, &c.message, now)).collect();
    let mut h = horizontal.unwrap_or_else(|| json!({}));
    h["history"] = serde_json::to_value(history_to(history, now))?;
    let body = json!({"apiVersion": "omniscale.dev/v1alpha1", "kind": "Autoscaler",
        "status": {"horizontal": h, "conditions": conditions}});
    let api: Api<Autoscaler> = Api::namespaced(ctx.client.clone(), &a.namespace().unwrap_or_default());
    api.patch_status(&a.name_any(), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&body)).await?;
    Ok(())
}
