//! Removing one node, Cluster Autoscaler's way: taint it `ToBeDeletedByClusterAutoscaler`
//! (NoSchedule) before anything else so nothing new lands on it, evict its pods through the
//! Eviction API (PodDisruptionBudgets are enforced by the API server; a refusal is retried every
//! 10 s for up to 2 minutes, then the removal is abandoned and the taint lifted), wait for the
//! pods to go, then terminate the instance with `ShouldDecrementDesiredCapacity` so the group
//! does not replace it. The Node object is left to the cloud's node lifecycle, as upstream.
//! A NotReady node's pods are evicted but not waited for: no kubelet is there to stop them, and
//! they go with the Node object.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, ObjectReference, Pod, Taint};
use kube::api::{EvictParams, Patch, PatchParams};
use kube::runtime::events::EventType;
use kube::runtime::reflector::Store;
use kube::{Api, ResourceExt};
use omniscale_nodes::decide::Removal as Planned;
use omniscale_nodes::scaledown::RemovalReason;
use omniscale_nodes::{CloudProvider, DELETION_CANDIDATE_TAINT, TO_BE_DELETED_TAINT};
use serde_json::json;
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::{Removed, publish};
use crate::controller::Context;

/// Longest a refused eviction is retried (`--max-pod-eviction-time`).
const MAX_EVICTION_TIME: Duration = Duration::from_secs(120);
const EVICTION_RETRY: Duration = Duration::from_secs(10);
/// Longest the pods get to terminate (`--max-graceful-termination-sec` plus 30 s).
const MAX_TERMINATION: Duration = Duration::from_secs(630);

/// One node removal, run as a background task.
pub(crate) struct Removal {
    pub ctx: Arc<Context>,
    pub provider: Arc<dyn CloudProvider>,
    pub removal: Planned,
    pub pods: Store<Pod>,
    pub nodes: Store<Node>,
    pub done: mpsc::UnboundedSender<Removed>,
}

impl Removal {
    pub async fn run(self) {
        let ok = match self.remove().await {
            Ok(()) => true,
            Err(why) => {
                warn!(node = %self.removal.node, reason = %why, "node removal abandoned");
                if let Err(e) = set_taint(&self.ctx, &self.removal.node, DELETION, false).await {
                    warn!(node = %self.removal.node, error = %e, "could not lift the deletion taint");
                }
                self.node_event(EventType::Warning, "ScaleDownFailed", &format!("failed to remove node: {why}")).await;
                false
            }
        };
        let _ = self.done.send(Removed { node: self.removal.node.clone(), group: self.removal.group.clone(), ok });
    }

    async fn remove(&self) -> Result<(), String> {
        let r = &self.removal;
        set_taint(&self.ctx, &r.node, DELETION, true).await?;
        for p in &r.evict {
            self.evict(&p.namespace, &p.name).await?;
        }
        if !r.evict.is_empty() && r.reason != RemovalReason::Unready {
            self.wait_for_pods().await;
        }
        self.provider.terminate_instance(&r.group, &r.instance).await.map_err(|e| e.to_string())?;
        let how = match (r.reason, r.evict.len()) {
            (RemovalReason::Unready, n) => format!("not ready, {n} pods evicted"),
            (_, 0) => "empty".to_owned(),
            (_, n) => format!("drained {n} pods"),
        };
        info!(node = %r.node, group = %r.group, instance = %r.instance, %how, "node removed");
        let m = &self.ctx.metrics.nodes;
        m.scaled_down_nodes_total
            .get_or_create(&crate::metrics::GroupReasonLabels {
                node_group: r.group.clone(),
                reason: r.reason.as_str().into(),
            })
            .inc();
        self.node_event(
            EventType::Normal,
            "ScaleDown",
            &format!("node removed by omniscale ({how}), instance {}", r.instance),
        )
        .await;
        Ok(())
    }

    async fn evict(&self, ns: &str, name: &str) -> Result<(), String> {
        let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), ns);
        let started = tokio::time::Instant::now();
        loop {
            match api.evict(name, &EvictParams::default()).await {
                Ok(_) => {
                    self.ctx.metrics.nodes.evicted_pods_total.inc();
                    let reference = ObjectReference {
                        api_version: Some("v1".into()),
                        kind: Some("Pod".into()),
                        name: Some(name.into()),
                        namespace: Some(ns.into()),
                        ..ObjectReference::default()
                    };
                    publish(&self.ctx, &reference, EventType::Normal, "ScaleDown", "deleting pod for node scale down")
                        .await;
                    return Ok(());
                }
                Err(kube::Error::Api(s)) if s.code == 404 => return Ok(()),
                Err(kube::Error::Api(s)) if s.code == 429 => {
                    let wall = self.ctx.clock.wall_duration(MAX_EVICTION_TIME);
                    if started.elapsed() >= wall {
                        return Err(format!(
                            "eviction of {ns}/{name} refused for {MAX_EVICTION_TIME:?}: {}",
                            s.message
                        ));
                    }
                    tokio::time::sleep(self.ctx.clock.wall_duration(EVICTION_RETRY)).await;
                }
                Err(e) => return Err(format!("eviction of {ns}/{name} failed: {e}")),
            }
        }
    }

    /// Waits until no evicted pod is left on the node (DaemonSet and mirror pods stay).
    async fn wait_for_pods(&self) {
        let deadline = tokio::time::Instant::now() + self.ctx.clock.wall_duration(MAX_TERMINATION);
        let wanted: Vec<(String, String)> =
            self.removal.evict.iter().map(|p| (p.namespace.clone(), p.name.clone())).collect();
        while tokio::time::Instant::now() < deadline {
            let left = self.pods.state().iter().any(|p| {
                p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(self.removal.node.as_str())
                    && wanted.iter().any(|(ns, n)| p.metadata.namespace.as_deref() == Some(ns) && p.name_any() == *n)
            });
            if !left {
                return;
            }
            tokio::time::sleep(self.ctx.clock.wall_duration(Duration::from_secs(1)).max(Duration::from_millis(20)))
                .await;
        }
        warn!(node = %self.removal.node, "pods still terminating after the grace period; removing the node anyway");
    }

    async fn node_event(&self, type_: EventType, reason: &str, note: &str) {
        let uid =
            self.nodes.state().iter().find(|n| n.name_any() == self.removal.node).and_then(|n| n.metadata.uid.clone());
        let reference = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Node".into()),
            name: Some(self.removal.node.clone()),
            uid,
            ..ObjectReference::default()
        };
        publish(&self.ctx, &reference, type_, reason, note).await;
    }
}

/// omniscale's own taints: (key, effect).
pub(crate) type Mark = (&'static str, &'static str);
/// Set before a node is drained: nothing new may land on it.
const DELETION: Mark = (TO_BE_DELETED_TAINT, "NoSchedule");
/// Set on unneeded nodes: new pods prefer other nodes.
pub(crate) const CANDIDATE: Mark = (DELETION_CANDIDATE_TAINT, "PreferNoSchedule");

/// Adds or removes one of omniscale's taints (its value: when, in Unix seconds), with the node's
/// resourceVersion as a precondition so a concurrent change to its taints is never overwritten
/// (a conflict is re-read and retried).
pub(crate) async fn set_taint(ctx: &Context, name: &str, (key, effect): Mark, on: bool) -> Result<(), String> {
    let api: Api<Node> = Api::all(ctx.client.clone());
    let mut last = String::new();
    for _ in 0..3 {
        let node = match api.get(name).await {
            Ok(n) => n,
            Err(kube::Error::Api(s)) if s.code == 404 => return if on { Err("node is gone".into()) } else { Ok(()) },
            Err(e) => return Err(e.to_string()),
        };
        let mut taints: Vec<Taint> = node.spec.as_ref().and_then(|s| s.taints.clone()).unwrap_or_default();
        let has = taints.iter().any(|t| t.key == key);
        if has == on {
            return Ok(());
        }
        if on {
            taints.push(Taint {
                key: key.into(),
                value: Some(ctx.clock.now().as_second().to_string()),
                effect: effect.into(),
                time_added: None,
            });
        } else {
            taints.retain(|t| t.key != key);
        }
        let patch =
            json!({"metadata": {"resourceVersion": node.metadata.resource_version}, "spec": {"taints": taints}});
        match api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 => last = s.message,
            Err(e) => return Err(e.to_string()),
        }
    }
    Err(format!("node kept changing: {last}"))
}

/// Lifts deletion taints a previous leader left behind (it died mid-removal), except on nodes
/// this leader is removing.
pub(crate) async fn clear_stale_taints(ctx: &Context, nodes: &[Node], removing: &std::collections::HashSet<String>) {
    let stale: Vec<&Node> = nodes
        .iter()
        .filter(|n| !removing.contains(&n.name_any()))
        .filter(|n| {
            n.spec
                .as_ref()
                .and_then(|s| s.taints.as_ref())
                .is_some_and(|t| t.iter().any(|t| t.key == TO_BE_DELETED_TAINT))
        })
        .collect();
    for n in stale {
        match set_taint(ctx, &n.name_any(), DELETION, false).await {
            Ok(()) => info!(node = %n.name_any(), "lifted a deletion taint left by a previous leader"),
            Err(e) => warn!(node = %n.name_any(), error = %e, "could not lift a stale deletion taint"),
        }
    }
}
