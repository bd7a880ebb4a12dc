//! The node shell for Auto Scaling Group NodePools (Cluster Autoscaler semantics), leader only.
//!
//! A loop runs every `--scan-interval` (10 s) and, sooner, when the pod watch sees a pod turn
//! unschedulable: after a short batching window (`--scale-up-batch-window`) the loop
//!
//! 1. describes the NodePools' groups through the cloud provider (cached there);
//! 2. builds the engines' input from the watch caches (Nodes, Pods, PDBs, DaemonSets) —
//!    [`omniscale_nodes::input::build`] — and decides — [`omniscale_nodes::decide`];
//! 3. carries out the plan: reverts of scale-ups that failed or timed out, `SetDesiredCapacity`
//!    for scale-ups, node removals (taint, evict through the Eviction API, terminate with
//!    decrement — in background tasks, one per node, so a drain never holds the loop);
//! 4. records Events (`TriggeredScaleUp`/`NotTriggerScaleUp` on pods, `ScaleDown` on nodes,
//!    `ScaledUpGroup`/`ScaleUpFailed`/`ScaleUpTimedOut` on NodePools), NodePool status and
//!    metrics.
//!
//! Under `--dry-run` the plan is computed and reported but nothing is changed.

mod actuate;
pub(crate) mod status;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Node, ObjectReference, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::core::DeserializeGuard;
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::Store;
use omniscale_api::NodePool;
use omniscale_nodes::decide::{Plan, PodRef};
use omniscale_nodes::history::History;
use omniscale_nodes::input::{self, Objects, Pool, Settings};
use omniscale_nodes::{CloudProvider, GroupSource};
use tokio::sync::{Notify, mpsc};
use tracing::{Instrument, debug, info, info_span, warn};

use crate::cloud::Cloud;
use crate::controller::Context;

/// Field manager of what this shell writes.
pub const FIELD_MANAGER: &str = "omniscale-nodes";

/// How long a `NotTriggerScaleUp` Event for the same pod and reason is not repeated (Cluster
/// Autoscaler deduplicates for 5 minutes).
const EVENT_DEDUP: Duration = Duration::from_secs(300);

/// The shell's settings (from `omniscale run` flags).
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub settings: Settings,
    pub scan_interval: Duration,
    pub batch_window: Duration,
    /// The node this replica runs on: never removed while it leads.
    pub own_node: Option<String>,
    pub dry_run: bool,
}

/// Unschedulable pods as the pod watch sees them: when each was first seen (for latency) and a
/// wake-up for the loop.
#[derive(Debug, Default)]
pub struct PendingPods {
    first_seen: Mutex<HashMap<(String, String), Instant>>,
    notify: Notify,
}

impl PendingPods {
    /// Called by the pod watch for every applied pod.
    pub fn observe(&self, p: &Pod) {
        if !input::unschedulable(p) {
            return;
        }
        let key = (p.metadata.namespace.clone().unwrap_or_default(), p.metadata.name.clone().unwrap_or_default());
        let mut seen = self.first_seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let std::collections::hash_map::Entry::Vacant(e) = seen.entry(key) {
            e.insert(Instant::now());
            self.notify.notify_one();
        }
    }

    fn take(&self, pod: &PodRef) -> Option<Instant> {
        let mut seen = self.first_seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        seen.remove(&(pod.namespace.clone(), pod.name.clone()))
    }

    /// Forgets pods that are no longer pending.
    fn retain(&self, pending: &HashSet<(String, String)>) {
        let mut seen = self.first_seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        seen.retain(|k, _| pending.contains(k));
    }
}

/// The watch caches the loop reads.
#[derive(Clone, Debug)]
pub struct Caches {
    pub pods: Store<Pod>,
    pub nodes: Store<Node>,
    pub pdbs: Store<PodDisruptionBudget>,
    pub daemonsets: Store<DaemonSet>,
    pub pools: Store<DeserializeGuard<NodePool>>,
}

/// What a background removal reports back.
#[derive(Debug)]
pub(crate) struct Removed {
    node: String,
    group: String,
    ok: bool,
}

/// Runs until dropped (the leader section drops it when leadership is lost).
pub async fn run(ctx: Arc<Context>, config: NodeConfig, cloud: Cloud, caches: Caches, pending: Arc<PendingPods>) {
    for ready in [
        caches.pods.wait_until_ready().await.is_ok(),
        caches.nodes.wait_until_ready().await.is_ok(),
        caches.pdbs.wait_until_ready().await.is_ok(),
        caches.daemonsets.wait_until_ready().await.is_ok(),
        caches.pools.wait_until_ready().await.is_ok(),
    ] {
        if !ready {
            return;
        }
    }
    let mut shell = Shell {
        ctx,
        config,
        cloud,
        caches,
        pending,
        history: History::default(),
        removing: HashSet::new(),
        events: HashMap::new(),
        done: mpsc::unbounded_channel(),
        cleaned: false,
    };
    loop {
        let started = Instant::now();
        shell.cycle().instrument(info_span!("nodes")).await;
        let took = started.elapsed();
        shell.ctx.metrics.nodes.loop_duration_seconds.observe(took.as_secs_f64());
        shell.ctx.metrics.nodes.last_activity.set(shell.ctx.clock.now().as_second());
        let interval = shell.ctx.clock.wall_duration(shell.config.scan_interval).max(Duration::from_millis(20));
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = shell.pending.notify.notified() => {
                // Let a burst of pods (a Deployment scaling out) arrive before deciding.
                tokio::time::sleep(shell.config.batch_window).await;
            }
        }
    }
}

struct Shell {
    ctx: Arc<Context>,
    config: NodeConfig,
    cloud: Cloud,
    caches: Caches,
    pending: Arc<PendingPods>,
    history: History,
    /// Nodes with a removal in progress.
    removing: HashSet<String>,
    /// Last `NotTriggerScaleUp` per pod: reason and when.
    events: HashMap<(String, String), (String, Instant)>,
    done: (mpsc::UnboundedSender<Removed>, mpsc::UnboundedReceiver<Removed>),
    /// Whether stale deletion taints (from a leader that died mid-removal) were cleared.
    cleaned: bool,
}

impl Shell {
    async fn cycle(&mut self) {
        let now = self.ctx.clock.now();
        while let Ok(r) = self.done.1.try_recv() {
            self.removing.remove(&r.node);
            if r.ok {
                self.history.last_scale_down.insert(r.group, now);
            } else {
                self.history.last_scale_down_failure = Some(now);
            }
        }
        let node_pools: Vec<NodePool> = self
            .caches
            .pools
            .state()
            .iter()
            .filter_map(|g| g.0.as_ref().ok().cloned())
            .filter(|p| p.spec.auto_scaling_group.is_some())
            .collect();
        let pods: Vec<Pod> = self.caches.pods.state().iter().map(|p| (**p).clone()).collect();
        let unschedulable: HashSet<(String, String)> = pods
            .iter()
            .filter(|p| input::unschedulable(p))
            .map(|p| (p.metadata.namespace.clone().unwrap_or_default(), p.metadata.name.clone().unwrap_or_default()))
            .collect();
        self.pending.retain(&unschedulable);
        self.ctx.metrics.nodes.unschedulable_pods_count.set(unschedulable.len() as i64);
        if node_pools.is_empty() {
            return;
        }
        let nodes: Vec<Node> = self.caches.nodes.state().iter().map(|n| (**n).clone()).collect();
        if !self.cleaned && !self.config.dry_run {
            self.cleaned = true;
            actuate::clear_stale_taints(&self.ctx, &nodes, &self.removing).await;
        }
        let sources: Vec<GroupSource> = node_pools.iter().filter_map(Pool::from_spec).map(|p| p.source).collect();
        let provider = match self.cloud.get().await {
            Ok(p) => p,
            Err(e) => {
                warn!(error = %e, "no cloud provider");
                status::cloud_error(&self.ctx, &node_pools, &e.to_string(), now).await;
                return;
            }
        };
        let groups = match provider.node_groups(&sources).await {
            Ok(g) => g,
            Err(e) => {
                warn!(error = %e, "describing node groups failed; retrying next loop");
                status::cloud_error(&self.ctx, &node_pools, &e.to_string(), now).await;
                return;
            }
        };
        let pdbs: Vec<PodDisruptionBudget> = self.caches.pdbs.state().iter().map(|p| (**p).clone()).collect();
        let daemonsets: Vec<DaemonSet> = self.caches.daemonsets.state().iter().map(|d| (**d).clone()).collect();
        let objects =
            Objects { nodes: &nodes, pods: &pods, pdbs: &pdbs, daemonsets: &daemonsets, node_pools: &node_pools };
        let protected: Vec<String> =
            self.config.own_node.iter().cloned().chain(self.removing.iter().cloned()).collect();
        let region = groups.iter().flat_map(|g| g.zones.first()).next().map(|z| region_of(z));
        let input = input::build(objects, groups, &protected, region.as_deref());
        for s in &input.skipped {
            debug!(reason = %s, "object left out of the node snapshot");
        }
        let plan = omniscale_nodes::decide(&input, &self.config.settings, &self.history, now);
        self.history = plan.history.clone();
        self.observe(&input, &plan);
        self.act(provider, &plan, &pods).await;
        status::publish(&self.ctx, &node_pools, &plan, &self.history, now).await;
    }

    fn observe(&self, input: &input::Input, plan: &Plan) {
        let m = &self.ctx.metrics.nodes;
        m.unneeded_nodes_count.set(plan.unneeded.len() as i64);
        m.cluster_safe_to_autoscale.set(i64::from(plan.unhealthy.is_none()));
        if let Some(why) = &plan.unhealthy {
            warn!(reason = %why, "not autoscaling nodes");
        }
        m.nodes_count.set(input.groups.iter().map(|g| g.nodes.len() as i64).sum());
        for g in &input.groups {
            let l = crate::metrics::GroupLabels { node_group: g.group.name.clone() };
            m.node_group_min_count.get_or_create(&l).set(i64::from(g.group.min_size));
            m.node_group_max_count.get_or_create(&l).set(i64::from(g.group.max_size));
            let target = plan.scale_up.iter().find(|r| r.group == g.group.name).map_or(g.group.desired, |r| r.to);
            m.node_group_target_count.get_or_create(&l).set(i64::from(target));
            let backed = self.history.backed_off(&g.group.name, self.ctx.clock.now()).is_some();
            m.node_group_backoff_status.get_or_create(&l).set(i64::from(backed));
        }
    }

    async fn act(&mut self, provider: Arc<dyn CloudProvider>, plan: &Plan, pods: &[Pod]) {
        let dry = self.config.dry_run;
        for r in &plan.reverts {
            warn!(group = %r.group, reason = %r.reason, "reverting scale-up");
            let reason = if r.reason.contains("failed") { "activity" } else { "timeout" };
            self.ctx.metrics.nodes.failed_scale_up(&r.group, reason);
            let event_reason = if reason == "timeout" { "ScaleUpTimedOut" } else { "ScaleUpFailed" };
            self.pool_event(plan, &r.group, EventType::Warning, event_reason, &r.reason).await;
            if dry {
                continue;
            }
            for id in &r.terminate {
                if let Err(e) = provider.terminate_instance(&r.group, id).await {
                    warn!(group = %r.group, instance = %id, error = %e, "terminating an instance that never became a node failed");
                }
            }
            if let Some(d) = r.set_desired {
                if let Err(e) = provider.set_desired_capacity(&r.group, d).await {
                    warn!(group = %r.group, desired = d, error = %e, "lowering desired capacity failed");
                }
            }
        }
        for r in &plan.scale_up {
            let max = plan.pools.iter().find(|p| p.groups.contains(&r.group)).map_or(0, |p| p.max);
            let note =
                format!("Scale-up: setting group {} size to {} instead of {} (max: {max})", r.group, r.to, r.from);
            if dry {
                info!(group = %r.group, from = r.from, to = r.to, "dry run: would scale up");
                continue;
            }
            match provider.set_desired_capacity(&r.group, r.to).await {
                Ok(()) => {
                    info!(group = %r.group, from = r.from, to = r.to, pods = r.pods.len(), "scaled up");
                    let m = &self.ctx.metrics.nodes;
                    let l = crate::metrics::GroupLabels { node_group: r.group.clone() };
                    m.scaled_up_nodes_total.get_or_create(&l).inc_by(u64::from(r.to - r.from));
                    for p in &r.pods {
                        if let Some(seen) = self.pending.take(p) {
                            m.scale_up_latency_seconds.observe(seen.elapsed().as_secs_f64());
                        }
                    }
                    self.pool_event(plan, &r.group, EventType::Normal, "ScaledUpGroup", &note).await;
                    let text = format!("pod triggered scale-up: [{{{} {}->{} (max: {max})}}]", r.group, r.from, r.to);
                    for p in &r.pods {
                        self.pod_event(p, pods, EventType::Normal, "TriggeredScaleUp", &text).await;
                    }
                }
                Err(e) => {
                    warn!(group = %r.group, error = %e, "scale-up failed");
                    self.history.fail(&r.group, self.ctx.clock.now(), e.to_string());
                    self.history.requests.remove(&r.group);
                    self.ctx.metrics.nodes.failed_scale_up(&r.group, "api");
                    let text = format!("setting group {} size to {} failed: {e}", r.group, r.to);
                    self.pool_event(plan, &r.group, EventType::Warning, "ScaleUpFailed", &text).await;
                }
            }
        }
        for (p, why) in &plan.not_triggered {
            let key = (p.namespace.clone(), p.name.clone());
            let fresh = self.events.get(&key).is_none_or(|(w, at)| w != why || at.elapsed() > EVENT_DEDUP);
            if fresh {
                self.events.insert(key, (why.clone(), Instant::now()));
                let text = format!("pod didn't trigger scale-up: {why}");
                self.pod_event(p, pods, EventType::Normal, "NotTriggerScaleUp", &text).await;
            }
        }
        self.events.retain(|_, (_, at)| at.elapsed() <= EVENT_DEDUP);
        if !dry {
            let marks = plan.soft_taint.iter().map(|n| (n, true)).chain(plan.soft_untaint.iter().map(|n| (n, false)));
            for (node, on) in marks {
                if let Err(e) = actuate::set_taint(&self.ctx, node, actuate::CANDIDATE, on).await {
                    debug!(node = %node, error = %e, "deletion-candidate taint not updated; next loop retries");
                }
            }
        }
        for r in &plan.remove {
            if self.removing.contains(&r.node) {
                continue;
            }
            if dry {
                info!(node = %r.node, group = %r.group, pods = r.evict.len(), "dry run: would remove node");
                continue;
            }
            self.removing.insert(r.node.clone());
            let job = actuate::Removal {
                ctx: self.ctx.clone(),
                provider: provider.clone(),
                removal: r.clone(),
                pods: self.caches.pods.clone(),
                nodes: self.caches.nodes.clone(),
                done: self.done.0.clone(),
            };
            tokio::spawn(job.run().instrument(info_span!("remove", node = %r.node)));
        }
    }

    async fn pool_event(&self, plan: &Plan, group: &str, type_: EventType, reason: &str, note: &str) {
        let Some(pool) = plan.pools.iter().find(|p| p.groups.iter().any(|g| g == group)) else { return };
        let reference = ObjectReference {
            api_version: Some("omniscale.dev/v1alpha1".into()),
            kind: Some("NodePool".into()),
            name: Some(pool.name.clone()),
            uid: self
                .caches
                .pools
                .state()
                .iter()
                .filter_map(|g| g.0.as_ref().ok())
                .find(|p| p.metadata.name.as_deref() == Some(pool.name.as_str()))
                .and_then(|p| p.metadata.uid.clone()),
            ..ObjectReference::default()
        };
        publish(&self.ctx, &reference, type_, reason, note).await;
    }

    async fn pod_event(&self, p: &PodRef, pods: &[Pod], type_: EventType, reason: &str, note: &str) {
        let uid = pods
            .iter()
            .find(|x| {
                x.metadata.name.as_deref() == Some(&p.name) && x.metadata.namespace.as_deref() == Some(&p.namespace)
            })
            .and_then(|x| x.metadata.uid.clone());
        let reference = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: Some(p.name.clone()),
            namespace: Some(p.namespace.clone()),
            uid,
            ..ObjectReference::default()
        };
        publish(&self.ctx, &reference, type_, reason, note).await;
    }
}

/// Records an Event; failures are only logged (an Event never fails a decision).
pub(crate) async fn publish(ctx: &Context, reference: &ObjectReference, type_: EventType, reason: &str, note: &str) {
    let ev = Event {
        type_,
        reason: reason.into(),
        note: Some(note.chars().take(1000).collect()),
        action: "Autoscale".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&ev, reference).await {
        debug!(error = %e, "event not recorded");
    }
}

/// `us-east-1a` → `us-east-1` (zone ids end in one letter).
fn region_of(zone: &str) -> String {
    zone.trim_end_matches(|c: char| c.is_ascii_lowercase()).to_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn region_from_zone() {
        assert_eq!(super::region_of("us-east-1a"), "us-east-1");
        assert_eq!(super::region_of("eu-west-3c"), "eu-west-3");
    }
}
