//! The simulated control plane: the controllers kube-controller-manager runs, a scheduler,
//! kubelets, metrics-server and the cloud's node lifecycle. One [`step`] advances all of them
//! at a simulated instant; the runtime calls it in a loop on the shared clock.

pub mod kubelet;
pub mod nodes;
pub mod scheduler;
pub mod workloads;

use crate::error::ApiError;
use crate::registry::{ResourceKey, ResourceType};
use crate::server::MetricsTable;
use crate::store::{PatchType, Store, Target, WriteOptions};
use crate::world::cloud::Cloud;
use crate::world::scenario::{AsgSpec, StaticNodes, WorkloadSpec};
use jiff::Timestamp;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;

/// Delays of the simulated machinery, in simulated seconds.
#[derive(Clone, Debug)]
pub struct Timings {
    /// Bound pod → containers running (image pull and start).
    pub pod_start: f64,
    /// Running → Ready (readiness probe).
    pub pod_ready: f64,
    /// Longest a terminating pod lingers before the kubelet removes it.
    pub pod_stop: f64,
}

impl Default for Timings {
    fn default() -> Self {
        Self { pod_start: 2.0, pod_ready: 3.0, pod_stop: 2.0 }
    }
}

/// State of the simulated world that is not API objects.
#[derive(Debug, Default)]
pub struct World {
    pub cloud: Option<Cloud>,
    pub asgs: Vec<AsgSpec>,
    pub static_nodes: Vec<StaticNodes>,
    pub workloads: Vec<WorkloadSpec>,
    pub external_metrics: Vec<crate::world::scenario::ExternalMetricSpec>,
    pub timings: Timings,
    pub seed: u64,
    /// When the kubelet first saw a pod bound / terminating, by uid.
    pub(crate) bound_at: HashMap<String, f64>,
    pub(crate) stopping_at: HashMap<String, f64>,
    pub(crate) events: HashMap<(String, String, String), String>,
    pub(crate) static_created: bool,
    /// Whether some mutating webhook matches pod creation (refreshed every step).
    pub(crate) pods_hooked: bool,
    pub(crate) pending_pods: Vec<PendingPod>,
    pub(crate) pending_seq: u64,
}

/// A pod a workload controller asked for while a mutating webhook watches pod creation. The
/// runtime creates it through admission, off the control-plane lock; until then the
/// controllers count it, as upstream's controller expectations do, so they do not ask twice.
#[derive(Clone, Debug)]
pub struct PendingPod {
    pub(crate) id: u64,
    pub(crate) owner: Arc<Value>,
    pub(crate) pod: Arc<Value>,
    pub(crate) dispatched: bool,
}

/// What every controller gets for one step.
#[derive(Debug)]
pub struct Ctx<'a> {
    pub store: &'a mut Store,
    pub world: &'a mut World,
    pub metrics: &'a mut MetricsTable,
    pub now: Timestamp,
    /// Simulated seconds since the simulation started.
    pub t: f64,
}

impl Ctx<'_> {
    pub fn rt(&self, g: &str, v: &str, p: &str) -> Option<ResourceType> {
        self.store.registry.get(g, v, p).cloned()
    }

    /// Pods in the store plus those still on their way through admission.
    pub(crate) fn pods_and_pending(&self) -> Vec<Arc<Value>> {
        let mut pods = self.store.all(&key("", "pods"), None);
        pods.extend(self.world.pending_pods.iter().map(|p| p.pod.clone()));
        pods
    }

    /// Creates a controller's pod: at once, or queued for admission when a webhook may change
    /// it (`Ok(None)`; the runtime records the outcome Event when the create completes).
    pub(crate) fn create_pod(&mut self, owner: &Value, pod: Value) -> Result<Option<Value>, ApiError> {
        let rt = self.rt("", "v1", "pods").ok_or_else(|| ApiError::not_found("resource", "pods"))?;
        if self.world.pods_hooked {
            self.world.pending_seq += 1;
            let id = self.world.pending_seq;
            self.world.pending_pods.push(PendingPod {
                id,
                owner: Arc::new(owner.clone()),
                pod: Arc::new(pod),
                dispatched: false,
            });
            return Ok(None);
        }
        let ns = ns_of(&pod);
        let opts = WriteOptions::manager("kube-controller-manager");
        self.store.create(&Target::new(&rt, Some(&ns), None), pod, &opts, self.now).map(Some)
    }
}

/// The service account upstream's controller for `owner_kind` runs as (webhooks see it).
pub(crate) fn controller_user(owner_kind: &str) -> &'static str {
    match owner_kind {
        "StatefulSet" => "system:serviceaccount:kube-system:statefulset-controller",
        "DaemonSet" => "system:serviceaccount:kube-system:daemon-set-controller",
        _ => "system:serviceaccount:kube-system:replicaset-controller",
    }
}

/// Advances every simulated component to `now`.
pub fn step(ctx: &mut Ctx<'_>) {
    ctx.world.pods_hooked = crate::admission::pods_hooked(ctx.store);
    nodes::sync(ctx);
    ctx.store.collect_garbage(ctx.now);
    workloads::deployments(ctx);
    workloads::replicasets(ctx);
    workloads::statefulsets(ctx);
    workloads::daemonsets(ctx);
    scheduler::schedule(ctx);
    kubelet::run(ctx);
    workloads::disruption_budgets(ctx);
    kubelet::metrics(ctx);
}

pub(crate) fn key(group: &str, plural: &str) -> ResourceKey {
    ResourceKey::new(group, plural)
}

pub(crate) fn name_of(o: &Value) -> String {
    o["metadata"]["name"].as_str().unwrap_or_default().to_owned()
}

pub(crate) fn ns_of(o: &Value) -> String {
    o["metadata"]["namespace"].as_str().unwrap_or_default().to_owned()
}

pub(crate) fn uid_of(o: &Value) -> String {
    o["metadata"]["uid"].as_str().unwrap_or_default().to_owned()
}

/// A pod's or node's `Ready` condition is `True`.
pub fn is_ready(o: &Value) -> bool {
    crate::store::condition_true(o, "Ready")
}

/// Records a core/v1 Event about `obj`, aggregating repeats into `count` as the event
/// recorder does.
pub fn event(ctx: &mut Ctx<'_>, obj: &Value, type_: &str, reason: &str, message: &str) {
    let Some(rt) = ctx.rt("", "v1", "events") else { return };
    let uid = uid_of(obj);
    let ns = match ns_of(obj) {
        n if n.is_empty() => "default".to_owned(),
        n => n,
    };
    let now = crate::store::ts(ctx.now);
    let k = (uid.clone(), reason.to_owned(), message.to_owned());
    if let Some(existing) = ctx.world.events.get(&k).cloned() {
        let t = Target::new(&rt, Some(&ns), Some(&existing));
        if let Ok(e) = ctx.store.get(&t) {
            let count = e["count"].as_i64().unwrap_or(1) + 1;
            let patch = json!({"count": count, "lastTimestamp": now});
            if ctx.store.patch(&t, PatchType::Merge, &patch, &WriteOptions::manager("event-recorder"), ctx.now).is_ok()
            {
                return;
            }
        }
    }
    let kind = obj["kind"].as_str().unwrap_or_default();
    let component = match reason {
        "Scheduled" | "FailedScheduling" => "default-scheduler",
        "Pulled" | "Started" | "Created" | "Killing" => "kubelet",
        _ => match kind {
            "Deployment" => "deployment-controller",
            "ReplicaSet" => "replicaset-controller",
            _ => "omniscale-sim",
        },
    };
    let ev = json!({"apiVersion": "v1", "kind": "Event",
        "metadata": {"generateName": format!("{}.", name_of(obj)), "namespace": ns},
        "involvedObject": {"kind": kind, "namespace": ns_of(obj), "name": name_of(obj), "uid": uid,
                           "apiVersion": obj["apiVersion"], "resourceVersion": obj["metadata"]["resourceVersion"]},
        "reason": reason, "message": message, "type": type_, "count": 1,
        "firstTimestamp": now, "lastTimestamp": now, "source": {"component": component},
        "reportingComponent": component, "reportingInstance": ""});
    if let Ok(created) =
        ctx.store.create(&Target::new(&rt, Some(&ns), None), ev, &WriteOptions::manager("event-recorder"), ctx.now)
    {
        ctx.world.events.insert(k, name_of(&created));
    }
}
