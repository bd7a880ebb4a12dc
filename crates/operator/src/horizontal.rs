//! The horizontal shell. Every sync period (15 s, on the operator's clock), for each Autoscaler
//! with `horizontal`: read the target's `/scale` (any kind that has one, found through
//! discovery), its pods and their PodMetrics; run [`omniscale_hpa::decide`]; rescale unless
//! `mode: Recommend` or `--dry-run`; publish status (with the history the windows need, so a
//! restart forgets nothing), conditions and Events.
//!
//! Pods, Object and External metrics need the custom and external metrics APIs, which this shell
//! does not read yet: they report `FailedGet…Metric`, which blocks scale-down as upstream does.

use std::{sync::Arc, time::Duration};

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{
    Api, Resource, ResourceExt,
    api::{ApiResource, DynamicObject, ListParams, Patch, PatchParams},
    core::DeserializeGuard,
    runtime::events::{Event, EventType},
};
use omniscale_api::{
    Autoscaler,
    autoscaler::{HorizontalHistory, Mode, TimedCount},
};
use omniscale_hpa::decide::{self, Decision, History, MetricOutcome, Observation};
use omniscale_hpa::input::{self, MetricsByPod, PodMetrics};
use omniscale_hpa::normalize::{Recommendation, ScaleEvent};
use serde_json::json;
use tracing::{debug, info, warn};

use crate::{Result, controller::Context, validate::TargetKind};

/// Field manager of everything this shell writes in status.
pub const FIELD_MANAGER: &str = "omniscale-horizontal";

/// Upstream's `--horizontal-pod-autoscaler-sync-period`.
pub const SYNC_PERIOD: Duration = Duration::from_secs(15);

/// What one sync cycle has read, per namespace: Pods and PodMetrics are listed once per
/// namespace per cycle however many Autoscalers live there.
#[derive(Debug, Default)]
pub struct Cycle {
    pods: std::collections::HashMap<String, Vec<Pod>>,
    metrics: std::collections::HashMap<String, Result<MetricsByPod, String>>,
}

impl Cycle {
    async fn pods(&mut self, ctx: &Context, ns: &str) -> Result<&Vec<Pod>> {
        if !self.pods.contains_key(ns) {
            let list = Api::<Pod>::namespaced(ctx.client.clone(), ns).list(&ListParams::default()).await?.items;
            self.pods.insert(ns.to_owned(), list);
        }
        Ok(self.pods.get(ns).map_or(&EMPTY, |p| p))
    }

    async fn metrics(&mut self, ctx: &Context, ns: &str) -> &Result<MetricsByPod, String> {
        if !self.metrics.contains_key(ns) {
            let m = pod_metrics(ctx, ns).await;
            self.metrics.insert(ns.to_owned(), m);
        }
        self.metrics.get(ns).unwrap_or(&NO_METRICS)
    }
}

static EMPTY: Vec<Pod> = Vec::new();
static NO_METRICS: Result<MetricsByPod, String> = Ok(MetricsByPod::new());

/// Runs until dropped (the leader section drops it when leadership is lost).
pub async fn run(ctx: Arc<Context>, dry_run: bool) {
    loop {
        let mut cycle = Cycle::default();
        let api: Api<DeserializeGuard<Autoscaler>> = match &ctx.namespace {
            Some(ns) => Api::namespaced(ctx.client.clone(), ns),
            None => Api::all(ctx.client.clone()),
        };
        match api.list(&ListParams::default()).await {
            Ok(list) => {
                for a in list.items.into_iter().filter_map(|g| g.0.ok()) {
                    if a.spec.horizontal.is_none() || a.spec.mode == Mode::Off {
                        continue;
                    }
                    let span = tracing::info_span!("horizontal", autoscaler = %format!("{}/{}", a.namespace().unwrap_or_default(), a.name_any()));
                    let _guard = span.enter();
                    if let Err(e) = reconcile(&ctx, &a, dry_run, &mut cycle).await {
                        warn!(error = %e, "horizontal reconcile failed; retrying next period");
                    }
                }
            }
            Err(e) => warn!(error = %e, "cannot list Autoscalers"),
        }
        tokio::time::sleep(ctx.clock.wall_duration(SYNC_PERIOD).max(Duration::from_millis(20))).await;
    }
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

/// Keeps what the windows can still need (the longest window or period is 1 h upstream).
fn history_to(h: &History, now: Timestamp) -> HorizontalHistory {
    let keep = |at: Timestamp| at > now - SignedDuration::from_hours(1);
    let counts = |v: &[ScaleEvent]| {
        v.iter()
            .filter(|e| keep(e.at) && !e.outdated)
            .map(|e| TimedCount { time: Time(e.at), replicas: e.change })
            .collect()
    };
    HorizontalHistory {
        recommendations: h
            .recommendations
            .iter()
            .filter(|r| keep(r.at))
            .map(|r| TimedCount { time: Time(r.at), replicas: r.replicas })
            .collect(),
        scale_up_events: counts(&h.scale_up_events),
        scale_down_events: counts(&h.scale_down_events),
    }
}

/// One Autoscaler, one decision.
pub async fn reconcile(ctx: &Context, a: &Autoscaler, dry_run: bool, cycle: &mut Cycle) -> Result<()> {
    let Some(h) = &a.spec.horizontal else { return Ok(()) };
    let ns = a.namespace().unwrap_or_else(|| "default".into());
    let t = &a.spec.target_ref;
    // The validation controller reports targets that are missing or not scalable.
    let TargetKind::Scalable { plural } = ctx.targets.kind_of(&t.api_version, &t.kind).await? else { return Ok(()) };
    let (group, version) = t.api_version.split_once('/').unwrap_or(("", t.api_version.as_str()));
    let ar = ApiResource {
        group: group.into(),
        version: version.into(),
        api_version: t.api_version.clone(),
        kind: t.kind.clone(),
        plural,
    };
    let target: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), &ns, &ar);
    let now = ctx.clock.now();
    let existing = a.status.clone().unwrap_or_default();
    let mut history = history_from(existing.horizontal.as_ref().and_then(|s| s.history.as_ref()));
    let scale = match target.get_subresource("scale", &t.name).await {
        Ok(s) => serde_json::to_value(&s)?,
        Err(e) => {
            let cond = decide::Cond {
                type_: "AbleToScale",
                status: "False",
                reason: "FailedGetScale".into(),
                message: format!("the autoscaler was unable to get the target's current scale: {e}"),
            };
            publish(ctx, a, None, &[cond], &history, now).await?;
            event(ctx, a, EventType::Warning, "FailedGetScale", &format!("{e}")).await;
            return Ok(());
        }
    };
    let spec_replicas = scale["spec"]["replicas"].as_i64().unwrap_or(0) as i32;
    let status_replicas = scale["status"]["replicas"].as_i64().map_or(spec_replicas, |r| r as i32);
    let selector = scale["status"]["selector"].as_str().unwrap_or_default().to_owned();
    let specs = input::metric_specs(h.metrics.as_deref());
    let (pods, metrics, metrics_error) = match omniscale_api::selector::LabelSelector::parse(&selector) {
        _ if selector.is_empty() => {
            (Vec::new(), MetricsByPod::new(), Some("the target's scale has no selector".to_owned()))
        }
        Err(e) => (Vec::new(), MetricsByPod::new(), Some(format!("the target's selector is invalid: {e}"))),
        Ok(sel) => {
            let pods: Vec<Pod> = cycle
                .pods(ctx, &ns)
                .await?
                .iter()
                .filter(|p| p.metadata.labels.as_ref().map_or(sel.is_empty(), |l| sel.matches(l)))
                .cloned()
                .collect();
            match cycle.metrics(ctx, &ns).await {
                Ok(all) => {
                    let mine: MetricsByPod = pods
                        .iter()
                        .filter_map(|p| p.metadata.name.as_ref())
                        .filter_map(|n| all.get(n).map(|m| (n.clone(), m.clone())))
                        .collect();
                    (pods, mine, None)
                }
                Err(e) => (pods, MetricsByPod::new(), Some(e.clone())),
            }
        }
    };
    let none = |_: decide::Kind, _: &str| None;
    let observations: Vec<Observation> = specs
        .iter()
        .map(|s| match (&metrics_error, s.type_.as_str()) {
            (Some(e), "Resource" | "ContainerResource") => Observation::Failed {
                reason: if s.type_ == "Resource" {
                    "FailedGetResourceMetric"
                } else {
                    "FailedGetContainerResourceMetric"
                }
                .into(),
                message: format!("unable to get metrics from the resource metrics API: {e}"),
            },
            _ => input::observe(s, &pods, &metrics, &none),
        })
        .collect();
    let engine_input =
        input::engine_input(h, spec_replicas, status_replicas, input::ready_pods(&pods), observations, now);
    let behavior = engine_input.behavior.clone();
    let d = decide::decide(&engine_input, &mut history);
    let mut conditions = d.conditions.clone();
    let mut rescaled = false;
    if d.desired != spec_replicas {
        let why = rescale_reason(&d);
        if a.spec.mode == Mode::Recommend || dry_run {
            debug!(from = spec_replicas, to = d.desired, "would rescale (recommend only)");
        } else {
            let patch = json!({"spec": {"replicas": d.desired}});
            match target.patch_subresource("scale", &t.name, &PatchParams::default(), &Patch::Merge(&patch)).await {
                Ok(_) => {
                    rescaled = true;
                    decide::record_rescale(&mut history, behavior.as_ref(), spec_replicas, d.desired, now);
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
                Err(e) => {
                    set(
                        &mut conditions,
                        "AbleToScale",
                        "False",
                        "FailedUpdateScale",
                        format!("the HPA controller was unable to update the target scale: {e}"),
                    );
                    event(
                        ctx,
                        a,
                        EventType::Warning,
                        "FailedRescale",
                        &format!("New size: {}; reason: {why}; error: {e}", d.desired),
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
        "currentMetrics": current_metrics(&d, &specs),
    });
    publish(ctx, a, Some(status), &conditions, &history, now).await
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

async fn pod_metrics(ctx: &Context, ns: &str) -> Result<MetricsByPod, String> {
    let ar = ApiResource {
        group: "metrics.k8s.io".into(),
        version: "v1beta1".into(),
        api_version: "metrics.k8s.io/v1beta1".into(),
        kind: "PodMetrics".into(),
        plural: "pods".into(),
    };
    let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), ns, &ar);
    match api.list(&ListParams::default()).await {
        Ok(list) => {
            let mut out = MetricsByPod::new();
            for item in list.items {
                let name = item.name_any();
                match serde_json::to_value(&item).and_then(serde_json::from_value::<PodMetrics>) {
                    Ok(m) => {
                        out.insert(name, m);
                    }
                    Err(e) => debug!(pod = %name, error = %e, "malformed PodMetrics skipped"),
                }
            }
            Ok(out)
        }
        Err(e) => Err(e.to_string()),
    }
}

fn current_metrics(d: &Decision, specs: &[k8s_openapi::api::autoscaling::v2::MetricSpec]) -> serde_json::Value {
    let items: Vec<serde_json::Value> = d
        .metrics
        .iter()
        .zip(specs)
        .filter_map(|(m, s)| {
            let MetricOutcome::Proposal(p) = m else { return None };
            let r = s.resource.as_ref()?;
            let mut current = json!({"averageValue": format!("{}m", p.average)});
            if let Some(u) = p.utilization {
                current["averageUtilization"] = json!(u);
            }
            Some(json!({"type": "Resource", "resource": {"name": r.name, "current": current}}))
        })
        .collect();
    json!(items)
}

async fn event(ctx: &Context, a: &Autoscaler, type_: EventType, reason: &str, note: &str) {
    let ev = Event {
        type_,
        reason: reason.into(),
        note: Some(note.chars().take(1000).collect()),
        action: "Scale".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&ev, &a.object_ref(&())).await {
        debug!(error = %e, "event not recorded");
    }
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
    let existing: Vec<Condition> = a.status.as_ref().map(|s| s.conditions.clone()).unwrap_or_default();
    let conditions: Vec<serde_json::Value> = conds
        .iter()
        .map(|c| {
            let same = existing.iter().find(|e| e.type_ == c.type_ && e.status == c.status);
            let ltt = same.map_or_else(|| now.to_string(), |e| e.last_transition_time.0.to_string());
            json!({"type": c.type_, "status": c.status, "reason": c.reason, "message": c.message,
                   "lastTransitionTime": ltt, "observedGeneration": a.metadata.generation})
        })
        .collect();
    let mut h = horizontal.unwrap_or_else(|| json!({}));
    h["history"] = serde_json::to_value(history_to(history, now))?;
    let body = json!({"apiVersion": "omniscale.dev/v1alpha1", "kind": "Autoscaler",
        "status": {"horizontal": h, "conditions": conditions}});
    let api: Api<Autoscaler> = Api::namespaced(ctx.client.clone(), &a.namespace().unwrap_or_default());
    api.patch_status(&a.name_any(), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&body)).await?;
    Ok(())
}
