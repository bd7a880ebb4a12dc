//! The vertical shell. Every recommender interval (1 min, on the operator's clock) one cycle:
//!
//! 1. reads every Autoscaler with `vertical` and all pods from watch caches (no request);
//! 2. reads each target's `/scale` for its selector and configured replicas;
//! 3. reads PodMetrics once per namespace (the same per-cycle cache the horizontal shell uses);
//! 4. feeds usage and OOM kills to the recommender's model ([`omniscale_vpa::input::feed`]),
//!    restoring each Autoscaler's histograms from its status checkpoints the first time it is
//!    seen, so a restart or a new leader continues the same history;
//! 5. publishes the recommendation, resource owners, explanation, conditions and checkpoints;
//! 6. unless `mode: Recommend`, `updateMode: Off/Initial` or `--dry-run`, applies the updater's
//!    plan: in-place resizes through the pods' `resize` subresource, evictions through the
//!    Eviction API (so PodDisruptionBudgets hold), with Events.
//!
//! The admission side ([`review`]) runs in every replica and reads the published
//! recommendation from the Autoscaler cache, so a pod created during a leader change still
//! gets its requests.

use std::collections::{HashMap, HashSet};
use std::{sync::Arc, time::Duration};

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{LimitRange, Pod};
use kube::{
    Api, ResourceExt,
    api::{EvictParams, Patch, PatchParams},
    core::DeserializeGuard,
    runtime::{events::EventType, reflector::Store},
};
use omniscale_api::{
    Autoscaler,
    autoscaler::{Mode, UpdateMode},
    condition::ConditionUpdate,
};
use omniscale_metrics::{Answer, Cache, PodIndex, Query};
use omniscale_vpa::{
    admission::{self, LimitRanges},
    input,
    model::{Aggregate, Model},
    updater::{self, Action, RateLimiter, Settings},
};
use serde_json::{Value, json};
use tracing::{Instrument, debug, info, warn};

use crate::{Result, controller::Context};

/// Field manager of everything this shell writes in status.
pub const FIELD_MANAGER: &str = "omniscale-vertical";

/// Upstream's `--recommender-interval` and `--updater-interval`.
pub const INTERVAL: Duration = Duration::from_secs(60);

/// How many Autoscalers are read and acted on at once.
const CONCURRENCY: usize = 16;

/// What the leader remembers between cycles.
struct Memory {
    model: Model,
    /// Autoscalers whose checkpoints were already considered.
    restored: HashSet<String>,
    /// Paces evictions and in-place resizes across all Autoscalers.
    limits: tokio::sync::Mutex<Limits>,
}

/// The eviction and resize token buckets (`--eviction-rate-limit`, `--eviction-rate-burst`).
#[derive(Debug)]
pub struct Limits {
    pub evictions: RateLimiter,
    pub resizes: RateLimiter,
}

impl Limits {
    pub fn new(rate: Option<f64>, burst: u32) -> Self {
        Limits { evictions: RateLimiter::new(rate, burst), resizes: RateLimiter::new(rate, burst) }
    }
}

/// Runs until dropped (the leader section drops it when leadership is lost). The stores are the
/// process's watch caches, shared with the horizontal shell and the webhook.
pub async fn run(
    ctx: Arc<Context>,
    dry_run: bool,
    limits: Limits,
    pods: Store<Pod>,
    autoscalers: Store<DeserializeGuard<Autoscaler>>,
    ranges: Store<LimitRange>,
) {
    if pods.wait_until_ready().await.is_err()
        || autoscalers.wait_until_ready().await.is_err()
        || ranges.wait_until_ready().await.is_err()
    {
        return;
    }
    let metrics = omniscale_metrics::Client::new(ctx.client.clone());
    let mut memory =
        Memory { model: Model::default(), restored: HashSet::new(), limits: tokio::sync::Mutex::new(limits) };
    loop {
        let started = std::time::Instant::now();
        cycle(&ctx, &pods, &autoscalers, &ranges, &metrics, &mut memory, dry_run).await;
        ctx.metrics.observe_reconcile("vertical-cycle", started.elapsed().as_secs_f64());
        tokio::time::sleep(ctx.clock.wall_duration(INTERVAL).max(Duration::from_millis(20))).await;
    }
}

/// `namespace/name`, the model's key for an Autoscaler.
fn owner_key(a: &Autoscaler) -> String {
    format!("{}/{}", a.namespace().unwrap_or_default(), a.name_any())
}

/// The LimitRange items of one namespace, merged.
pub fn limit_ranges(store: &Store<LimitRange>, ns: &str) -> LimitRanges {
    let all = store.state();
    LimitRanges::from_items(
        all.iter()
            .filter(|l| l.metadata.namespace.as_deref() == Some(ns))
            .filter_map(|l| l.spec.as_ref())
            .flat_map(|s| s.limits.iter()),
    )
}

#[allow(clippy::too_many_arguments)]
async fn cycle(
    ctx: &Context,
    pods: &Store<Pod>,
    autoscalers: &Store<DeserializeGuard<Autoscaler>>,
    ranges: &Store<LimitRange>,
    metrics: &omniscale_metrics::Client,
    memory: &mut Memory,
    dry_run: bool,
) {
    let list: Vec<Autoscaler> = autoscalers
        .state()
        .iter()
        .filter_map(|g| g.0.as_ref().ok())
        .filter(|a| a.spec.vertical.is_some() && a.spec.mode != Mode::Off)
        .cloned()
        .collect();
    let scales: Vec<(Autoscaler, std::result::Result<omniscale_hpa::input::Scale, String>)> =
        futures::stream::iter(list)
            .map(|a| async move {
                let (_, scale) = crate::horizontal::read_scale(ctx, &a).await;
                (a, scale)
            })
            .buffered(CONCURRENCY)
            .collect()
            .await;
    let mut cache = Cache::new();
    for (a, _) in scales.iter().filter(|(_, s)| s.is_ok()) {
        cache.want(Query::PodMetrics { namespace: a.namespace().unwrap_or_default() });
    }
    metrics.fill(&mut cache).await;
    ctx.metrics.count_reads("vertical", "scale", scales.len());
    ctx.metrics.count_reads("vertical", "metrics", cache.requests());
    let index = PodIndex::new(pods.state());
    let now = ctx.clock.now();
    memory.model.begin_round();
    let mut work = Vec::new();
    for (a, scale) in &scales {
        let key = owner_key(a);
        let owner: Arc<str> = Arc::from(key.as_str());
        if memory.restored.insert(key.clone()) {
            restore(&mut memory.model, &owner, a, now);
        }
        let ns = a.namespace().unwrap_or_default();
        let scale = match scale {
            Ok(s) => s,
            Err(e) => {
                work.push(Work { a, pods: Vec::new(), scale_error: Some(e.clone()), configured: 0 });
                continue;
            }
        };
        let selector = omniscale_api::selector::LabelSelector::parse(&scale.selector).ok().filter(|s| !s.is_nothing());
        let matched: Vec<&Pod> = match &selector {
            Some(sel) => index
                .select(&ns, sel)
                .into_iter()
                .filter(|p| admission::controlled_by(p, &a.spec.target_ref) || p.metadata.owner_references.is_none())
                .collect(),
            None => Vec::new(),
        };
        let running = running(&matched);
        let empty = HashMap::new();
        let usage = match cache.get(&Query::PodMetrics { namespace: ns.clone() }) {
            Some(Ok(Answer::PodMetrics(u))) => u,
            Some(Err(e)) => {
                debug!(namespace = %ns, error = %e, "no pod metrics this round");
                &empty
            }
            _ => &empty,
        };
        let fed = input::feed(&mut memory.model, &owner, &running, usage);
        if fed.ooms > 0 {
            info!(autoscaler = %key, ooms = fed.ooms, "OOM kills recorded: memory bumped");
        }
        work.push(Work { a, pods: matched, scale_error: None, configured: scale.spec_replicas });
    }
    let live: HashSet<String> = scales.iter().map(|(a, _)| owner_key(a)).collect();
    memory.model.end_round(now, |o| live.contains(o));
    memory.restored.retain(|k| live.contains(k));
    let round = Round { ctx, model: &memory.model, limits: &memory.limits, ranges, dry_run, now };
    let jobs: Vec<_> = work.iter().map(|w| round.reconcile_logged(w)).collect();
    futures::stream::iter(jobs).buffer_unordered(CONCURRENCY).collect::<Vec<()>>().await;
}

/// What every Autoscaler's reconcile in one cycle shares.
struct Round<'a> {
    ctx: &'a Context,
    model: &'a Model,
    limits: &'a tokio::sync::Mutex<Limits>,
    ranges: &'a Store<LimitRange>,
    dry_run: bool,
    now: Timestamp,
}

impl Round<'_> {
    async fn reconcile_logged(&self, w: &Work<'_>) {
        let span = tracing::info_span!("vertical", autoscaler = %owner_key(w.a));
        if let Err(e) = reconcile(self, w).instrument(span).await {
            warn!(autoscaler = %owner_key(w.a), error = %e, "vertical reconcile failed; retrying next interval");
        }
    }
}

/// The pods that run (only they have usage; pending ones count as not matched yet).
fn running<'a>(pods: &[&'a Pod]) -> Vec<&'a Pod> {
    pods.iter().copied().filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")).collect()
}

/// One Autoscaler's share of a cycle.
struct Work<'a> {
    a: &'a Autoscaler,
    pods: Vec<&'a Pod>,
    scale_error: Option<String>,
    configured: i32,
}

/// Loads the Autoscaler's checkpoints into the model; a bad one is logged and skipped.
fn restore(model: &mut Model, owner: &Arc<str>, a: &Autoscaler, now: Timestamp) {
    let cps = a.status.as_ref().and_then(|s| s.vertical.as_ref()).and_then(|v| v.checkpoints.as_ref());
    for cp in cps.into_iter().flatten() {
        match Aggregate::load(&model.config, cp, now) {
            Ok(agg) => model.restore(owner.clone(), Arc::from(cp.container_name.as_str()), agg),
            Err(e) => warn!(container = %cp.container_name, error = %e, "checkpoint ignored"),
        }
    }
}

async fn reconcile(round: &Round<'_>, w: &Work<'_>) -> Result<()> {
    let Round { ctx, model, limits, ranges, dry_run, now } = *round;
    let a = w.a;
    let key = owner_key(a);
    if let Some(e) = &w.scale_error {
        let c = ConditionUpdate::fails(
            "RecommendationProvided",
            "FailedGetScale",
            format!("cannot read the target's scale: {e}"),
        );
        return publish(ctx, a, None, &[c], now).await;
    }
    let outcome = input::recommendation(model, &key, &a.spec, &w.pods);
    let conditions = input::conditions(&outcome, running(&w.pods).len(), model, &key);
    let checkpoints: Vec<_> = {
        let mut v: Vec<_> = model.aggregates_of(&key).map(|(name, agg)| agg.save(name, now)).collect();
        v.sort_by(|x, y| x.container_name.cmp(&y.container_name));
        v
    };
    let status = json!({
        "recommendation": outcome.recommendation,
        "resourceOwners": input::owners(&a.spec),
        "explanation": outcome.explanation,
        "checkpoints": checkpoints,
    });
    publish(ctx, a, Some(status), &conditions, now).await?;

    let v = a.spec.vertical.as_ref();
    let mode = v.and_then(|v| v.update_policy.as_ref()).and_then(|u| u.update_mode).unwrap_or_default();
    if a.spec.mode == Mode::Recommend || dry_run || matches!(mode, UpdateMode::Off | UpdateMode::Initial) {
        return Ok(());
    }
    if outcome.recommendation.container_recommendations.is_empty() {
        return Ok(());
    }
    let ns = a.namespace().unwrap_or_default();
    let lr = limit_ranges(ranges, &ns);
    let input = updater::Input {
        mode,
        min_replicas: v.and_then(|v| v.update_policy.as_ref()).and_then(|u| u.min_replicas),
        configured: w.configured,
        pods: &w.pods,
        recommendation: &outcome.recommendation,
        policy: v.and_then(|v| v.resource_policy.as_ref()),
        ranges: &lr,
    };
    let plan = updater::plan(&input, &Settings::default(), now);
    for (pod, why) in &plan.skipped {
        debug!(pod, why, "not updated this round");
    }
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    for action in &plan.actions {
        let allowed = {
            let mut l = limits.lock().await;
            match action {
                Action::Resize { .. } => l.resizes.take(now),
                Action::Evict { .. } => l.evictions.take(now),
            }
        };
        if !allowed {
            debug!("rate limit reached; the rest waits for the next interval");
            break;
        }
        act(ctx, a, &pods, action).await;
    }
    Ok(())
}

/// Carries out one resize or eviction; failures are reported and retried next interval.
async fn act(ctx: &Context, a: &Autoscaler, pods: &Api<Pod>, action: &Action) {
    match action {
        Action::Resize { pod, resources, .. } => {
            let body = admission::resize_patch(resources);
            match pods.patch_subresource("resize", pod, &PatchParams::default(), &Patch::Strategic(&body)).await {
                Ok(_) => {
                    info!(pod, "resized in place");
                    ctx.metrics.count_reads("vertical", "resize", 1);
                    event(ctx, a, EventType::Normal, "ResizedInPlace", &format!("pod {pod}: {}", describe(resources)))
                        .await;
                }
                Err(e) => {
                    warn!(pod, error = %e, "in-place resize refused");
                    event(ctx, a, EventType::Warning, "FailedResize", &format!("pod {pod}: {e}")).await;
                }
            }
        }
        Action::Evict { pod, reason, .. } => match pods.evict(pod, &EvictParams::default()).await {
            Ok(_) => {
                info!(pod, reason, "evicted to apply the recommendation");
                ctx.metrics.count_reads("vertical", "eviction", 1);
                event(ctx, a, EventType::Normal, "EvictedPod", &format!("pod {pod}: {reason}")).await;
            }
            Err(kube::Error::Api(e)) if e.code == 429 => {
                info!(pod, "eviction refused by a PodDisruptionBudget; retrying next interval");
                event(ctx, a, EventType::Normal, "EvictionBlocked", &format!("pod {pod}: {}", e.message)).await;
            }
            Err(e) => {
                warn!(pod, error = %e, "eviction failed");
                event(ctx, a, EventType::Warning, "FailedEviction", &format!("pod {pod}: {e}")).await;
            }
        },
    }
}

fn describe(resources: &[admission::ContainerResources]) -> String {
    resources
        .iter()
        .map(|c| {
            let r: Vec<String> = c
                .requests
                .iter()
                .map(|(&r, &v)| {
                    format!(
                        "{} {}",
                        omniscale_vpa::estimate::resource_name(r),
                        omniscale_vpa::estimate::quantity(r, v).0
                    )
                })
                .collect();
            format!("{} requests {}", c.name, r.join(", "))
        })
        .collect::<Vec<_>>()
        .join("; ")
}

async fn event(ctx: &Context, a: &Autoscaler, type_: EventType, reason: &str, note: &str) {
    crate::report::event(ctx, a, type_, "Resize", reason, note).await;
}

/// Writes `status.vertical` and this shell's conditions with server-side apply.
async fn publish(
    ctx: &Context,
    a: &Autoscaler,
    vertical: Option<Value>,
    conds: &[ConditionUpdate],
    now: Timestamp,
) -> Result<()> {
    let conditions: Vec<Value> = conds
        .iter()
        .map(|c| crate::report::condition(a, &c.type_, c.status.as_str(), &c.reason, &c.message, now))
        .collect();
    let mut status = json!({"conditions": conditions});
    if let Some(v) = vertical {
        status["vertical"] = v;
    }
    let body = json!({"apiVersion": "omniscale.dev/v1alpha1", "kind": "Autoscaler", "status": status});
    let api: Api<Autoscaler> = Api::namespaced(ctx.client.clone(), &a.namespace().unwrap_or_default());
    api.patch_status(&a.name_any(), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&body)).await?;
    Ok(())
}

/// The admission webhook's decision for one AdmissionReview body: the pod's controlling
/// Autoscaler's published recommendation applied as a JSON patch, or allowed unchanged. Never
/// fails: anything unexpected is logged and the pod is admitted as it is.
pub fn review(body: &[u8], autoscalers: &[Arc<DeserializeGuard<Autoscaler>>], ranges: &Store<LimitRange>) -> Vec<u8> {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let uid = parsed.as_ref().and_then(|v| v["request"]["uid"].as_str()).unwrap_or_default().to_owned();
    let api_version =
        parsed.as_ref().and_then(|v| v["apiVersion"].as_str()).unwrap_or("admission.k8s.io/v1").to_owned();
    let response = match parsed.as_ref().map(|v| mutation(v, autoscalers, ranges)) {
        Some(Ok(Some((who, patch)))) => {
            use base64::Engine;
            let bytes = serde_json::to_vec(&patch).unwrap_or_default();
            debug!(uid, autoscaler = %who, ops = patch.len(), "pod requests set at admission");
            json!({"uid": uid, "allowed": true, "patchType": "JSONPatch",
                   "patch": base64::engine::general_purpose::STANDARD.encode(bytes)})
        }
        Some(Ok(None)) => json!({"uid": uid, "allowed": true}),
        Some(Err(why)) => {
            warn!(uid, why, "admission request not understood; pod admitted unchanged");
            json!({"uid": uid, "allowed": true})
        }
        None => {
            warn!("admission body is not JSON; pod admitted unchanged");
            json!({"uid": uid, "allowed": true})
        }
    };
    serde_json::to_vec(&json!({"apiVersion": api_version, "kind": "AdmissionReview", "response": response}))
        .unwrap_or_default()
}

/// `Ok(None)`: nothing to change. `Err`: the request is not something this webhook handles.
fn mutation(
    review: &Value,
    autoscalers: &[Arc<DeserializeGuard<Autoscaler>>],
    ranges: &Store<LimitRange>,
) -> std::result::Result<Option<(String, Vec<Value>)>, String> {
    let req = &review["request"];
    if !req.is_object() {
        return Err("no request".into());
    }
    if req["kind"]["kind"] != "Pod" || req["operation"] != "CREATE" || req["subResource"].is_string() {
        return Ok(None);
    }
    let mut pod: Pod =
        serde_json::from_value(req["object"].clone()).map_err(|e| format!("object is not a Pod: {e}"))?;
    let ns =
        req["namespace"].as_str().map(str::to_owned).or_else(|| pod.metadata.namespace.clone()).unwrap_or_default();
    pod.metadata.namespace = Some(ns.clone());
    let mut candidates: Vec<&Autoscaler> = autoscalers
        .iter()
        .filter_map(|g| g.0.as_ref().ok())
        .filter(|a| a.namespace().as_deref() == Some(ns.as_str()) && a.spec.mode != Mode::Off)
        .filter(|a| {
            a.spec.vertical.as_ref().is_some_and(|v| {
                v.update_policy.as_ref().and_then(|u| u.update_mode).unwrap_or_default() != UpdateMode::Off
            })
        })
        .filter(|a| admission::controlled_by(&pod, &a.spec.target_ref))
        .collect();
    // Several claim the pod: the oldest wins, then the lower name (upstream's rule).
    candidates.sort_by(|x, y| {
        x.metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0)
            .cmp(&y.metadata.creation_timestamp.as_ref().map(|t| t.0))
            .then_with(|| x.name_any().cmp(&y.name_any()))
    });
    let Some(a) = candidates.first() else { return Ok(None) };
    if a.spec.mode == Mode::Recommend {
        return Ok(None);
    }
    let Some(rec) = a.status.as_ref().and_then(|s| s.vertical.as_ref()).and_then(|v| v.recommendation.as_ref()) else {
        return Ok(None);
    };
    let policy = a.spec.vertical.as_ref().and_then(|v| v.resource_policy.as_ref());
    let m = admission::mutate(&pod, &a.name_any(), rec, policy, &limit_ranges(ranges, &ns));
    if m.patch.is_empty() { Ok(None) } else { Ok(Some((owner_key(a), m.patch))) }
}
