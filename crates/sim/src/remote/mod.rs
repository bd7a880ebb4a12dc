//! The simulated world driving a **real** kube-apiserver as a client, the way KWOK fakes nodes
//! for a real cluster: the scenario's static nodes and the simulated cloud's instances register
//! as Node objects (with Leases in `kube-node-lease`, so the node lifecycle controller keeps them
//! Ready), a kubelet for those nodes reports pod status (start, readiness, in-place resize) and
//! finishes graceful deletions, and the load models' usage is served as aggregated
//! `metrics.k8s.io`, `custom.metrics.k8s.io` and `external.metrics.k8s.io` APIs. Everything else
//! — Deployments, ReplicaSets, garbage collection, scheduling, upstream HPA — is the real
//! control plane's.
//!
//! The decisions are the embedded simulator's ([`crate::control::kubelet::report`],
//! [`crate::control::kubelet::refresh_metrics`], [`crate::control::nodes::cloud_nodes`]); this
//! module only reads the API server's objects and writes what those functions return.
//!
//! Only nodes labelled [`KUBELET_LABEL`]`=true` are served: real nodes of the cluster (and their
//! pods) are never touched. Nodes created by others with that label (a test bridging moto's
//! instances, say) are served too.

pub mod aggregated;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::control::{World, kubelet, nodes};
use crate::error::Error;
use crate::selector::LabelSelector;
use crate::server::MetricsTable;

/// The label on the Node objects this kubelet serves.
pub const KUBELET_LABEL: &str = "sim.omniscale.dev/kubelet";

/// Field manager of everything the remote world writes.
const MANAGER: &str = "omniscale-sim-kubelet";

/// How often node Leases are renewed (the kubelet's default is a quarter of the 40 s duration).
const LEASE_RENEW: Duration = Duration::from_secs(10);
const LEASE_DURATION_SECONDS: i64 = 40;

/// How to run the world against a real API server.
#[derive(Clone, Debug)]
pub struct RemoteOptions {
    /// Namespace of the metrics Service (created when missing).
    pub namespace: String,
    /// Name of the ExternalName Service the APIServices point at.
    pub service: String,
    /// Where the aggregated metrics server listens (kube-apiserver must reach it as `localhost`).
    pub listen: SocketAddr,
    /// Wall time between kubelet passes.
    pub tick: Duration,
}

impl Default for RemoteOptions {
    fn default() -> Self {
        Self {
            namespace: "omniscale-sim".into(),
            service: "sim-metrics".into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            tick: Duration::from_secs(1),
        }
    }
}

/// A simulated world attached to a real API server. Stop it with [`RemoteWorld::shutdown`].
#[derive(Debug)]
pub struct RemoteWorld {
    /// The world (cloud, load models); [`crate::world::cloud::Cloud`] calls go through it.
    pub world: Arc<Mutex<World>>,
    /// What the metrics APIs serve, refreshed every tick.
    pub metrics: Arc<RwLock<MetricsTable>>,
    /// The aggregated metrics server's address.
    pub metrics_addr: SocketAddr,
    cancel: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

fn core(kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("", "v1", kind), plural)
}

fn apps(kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("apps", "v1", kind), plural)
}

fn lease() -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("coordination.k8s.io", "v1", "Lease"), "leases")
}

impl RemoteWorld {
    /// Registers the metrics APIs (waiting until kube-apiserver reports them Available) and
    /// starts the kubelet loop.
    pub async fn start(client: kube::Client, world: World, clock: Clock, opts: RemoteOptions) -> Result<Self, Error> {
        let world = Arc::new(Mutex::new(world));
        let metrics = Arc::new(RwLock::new(MetricsTable::default()));
        let pods: Arc<RwLock<Vec<Arc<Value>>>> = Arc::default();
        let cancel = CancellationToken::new();
        let seen = pods.clone();
        let select: aggregated::PodSelector = Arc::new(move |ns: &str, sel: &LabelSelector| -> BTreeSet<String> {
            let pods = seen.read().unwrap_or_else(std::sync::PoisonError::into_inner);
            pods.iter()
                .filter(|p| p["metadata"]["namespace"] == ns && sel.matches_object(p))
                .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_owned))
                .collect()
        });
        let server =
            aggregated::start(client.clone(), metrics.clone(), select, clock.clone(), &opts, cancel.clone()).await?;
        let kubelet = Kubelet {
            client,
            world: world.clone(),
            metrics: metrics.clone(),
            pods,
            clock,
            static_created: false,
            leases: HashMap::new(),
        };
        let task = tokio::spawn(kubelet.run(opts.tick, cancel.clone()));
        Ok(Self { world, metrics, metrics_addr: server.addr, cancel, tasks: vec![task] })
    }

    /// Stops the kubelet and the metrics server; the Nodes stay (a real cluster's would, too).
    pub async fn shutdown(self) {
        self.cancel.cancel();
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
    }
}

struct Kubelet {
    client: kube::Client,
    world: Arc<Mutex<World>>,
    metrics: Arc<RwLock<MetricsTable>>,
    pods: Arc<RwLock<Vec<Arc<Value>>>>,
    clock: Clock,
    static_created: bool,
    /// When each served node's Lease was last renewed (wall clock).
    leases: HashMap<String, std::time::Instant>,
}

fn values(list: kube::core::ObjectList<DynamicObject>) -> Vec<Arc<Value>> {
    list.items.into_iter().filter_map(|o| serde_json::to_value(o).ok()).map(Arc::new).collect()
}

fn name_of(v: &Value) -> String {
    v["metadata"]["name"].as_str().unwrap_or_default().to_owned()
}

/// The RFC 3339 time with microseconds that `MicroTime` fields (Lease `renewTime`) require.
fn micro_time(t: jiff::Timestamp) -> String {
    format!("{}.{:06}Z", t.strftime("%Y-%m-%dT%H:%M:%S"), t.subsec_microsecond())
}

impl Kubelet {
    async fn run(mut self, tick: Duration, cancel: CancellationToken) {
        let mut failures = 0u32;
        loop {
            match self.pass().await {
                Ok(()) => failures = 0,
                Err(e) => {
                    failures += 1;
                    tracing::warn!(error = %e, failures, "simulated kubelet pass failed; retrying");
                }
            }
            // Back off on repeated API errors, up to 10 passes' worth.
            let wait = tick * failures.clamp(1, 10);
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    async fn pass(&mut self) -> Result<(), Error> {
        let t = self.clock.elapsed();
        let now = self.clock.now();
        let stamp = crate::store::ts(now);
        let node_api: Api<DynamicObject> = Api::all_with(self.client.clone(), &core("Node", "nodes"));
        let pod_api: Api<DynamicObject> = Api::all_with(self.client.clone(), &core("Pod", "pods"));
        let rs_api: Api<DynamicObject> = Api::all_with(self.client.clone(), &apps("ReplicaSet", "replicasets"));

        // Nodes: the scenario's static ones once, the cloud's as instances boot and terminate.
        let (mut wanted, gone, region) = {
            let mut w = self.world.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let (templates, gone) = nodes::cloud_nodes(&mut w, t);
            let mut wanted = if self.static_created { Vec::new() } else { nodes::static_templates(&w.static_nodes) };
            wanted.extend(templates);
            let region = w.cloud.as_ref().map(|c| c.region().to_owned()).unwrap_or_else(|| "us-east-1".into());
            (wanted, gone, region)
        };
        let all_nodes = values(node_api.list(&ListParams::default()).await?);
        let existing: HashSet<String> = all_nodes.iter().map(|n| name_of(n)).collect();
        wanted.retain(|tpl| !existing.contains(&tpl.name));
        for tpl in &wanted {
            let mut node = tpl.to_node(&region, &stamp);
            node["metadata"]["labels"][KUBELET_LABEL] = json!("true");
            let obj: DynamicObject =
                serde_json::from_value(node).map_err(|e| Error::Config(format!("node {}: {e}", tpl.name)))?;
            match node_api.create(&PostParams { field_manager: Some(MANAGER.into()), ..Default::default() }, &obj).await
            {
                Ok(_) => tracing::info!(node = %tpl.name, "registered simulated node"),
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(e) => return Err(e.into()),
            }
        }
        self.static_created = true;
        let served: Vec<Arc<Value>> =
            all_nodes.into_iter().filter(|n| n["metadata"]["labels"][KUBELET_LABEL] == "true").collect();
        for name in gone.iter().filter(|n| served.iter().any(|s| &name_of(s) == *n)) {
            match node_api.delete(name, &DeleteParams::default()).await {
                Ok(_) => tracing::info!(node = %name, "simulated instance gone; node deleted"),
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
            self.leases.remove(name);
        }
        let served: HashMap<String, Arc<Value>> = served.into_iter().map(|n| (name_of(&n), n)).collect();
        self.renew_leases(&served, now).await?;

        // Pods on served nodes: status reports and the end of graceful deletions.
        let pods = values(pod_api.list(&ListParams::default()).await?);
        *self.pods.write().unwrap_or_else(std::sync::PoisonError::into_inner) = pods.clone();
        let timings = self.world.lock().unwrap_or_else(std::sync::PoisonError::into_inner).timings.clone();
        let mut live = HashSet::new();
        for p in &pods {
            let uid = p["metadata"]["uid"].as_str().unwrap_or_default().to_owned();
            live.insert(uid.clone());
            let Some(node) = p["spec"]["nodeName"].as_str().and_then(|n| served.get(n)) else { continue };
            let ns = p["metadata"]["namespace"].as_str().unwrap_or_default();
            let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), ns, &core("Pod", "pods"));
            let name = name_of(p);
            if !p["metadata"]["deletionTimestamp"].is_null() {
                let since = *self.lock_world().stopping_at.entry(uid.clone()).or_insert(t);
                if kubelet::finished_terminating(p, since, t, &timings) {
                    let dp = DeleteParams {
                        grace_period_seconds: Some(0),
                        preconditions: Some(Preconditions { uid: Some(uid.clone()), resource_version: None }),
                        ..Default::default()
                    };
                    match api.delete(&name, &dp).await {
                        Ok(_) => {}
                        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                continue;
            }
            let bound = *self.lock_world().bound_at.entry(uid.clone()).or_insert(t);
            let Some(r) = kubelet::report(p, node, &pods, bound, t, &timings, &stamp) else { continue };
            let patch = json!({"status": r.status});
            match api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch)).await {
                Ok(_) => {}
                // Deleted or replaced meanwhile: the next pass sees the new state.
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
                Err(e) => return Err(e.into()),
            }
        }
        {
            let mut w = self.lock_world();
            w.bound_at.retain(|u, _| live.contains(u));
            w.stopping_at.retain(|u, _| live.contains(u));
        }

        // Metrics, from the pods as they were at the start of this pass.
        let replicasets = values(rs_api.list(&ListParams::default()).await?);
        let node_list: Vec<Arc<Value>> = served.values().cloned().collect();
        let w = self.lock_world();
        let mut table = self.metrics.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        kubelet::refresh_metrics(&mut table, &pods, &replicasets, &node_list, &w, t, &stamp);
        Ok(())
    }

    fn lock_world(&self) -> std::sync::MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Renews the `kube-node-lease` Lease of every served node that is due.
    async fn renew_leases(&mut self, served: &HashMap<String, Arc<Value>>, now: jiff::Timestamp) -> Result<(), Error> {
        let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), "kube-node-lease", &lease());
        let pp = PatchParams::apply(MANAGER).force();
        self.leases.retain(|n, _| served.contains_key(n));
        for (name, node) in served {
            if self.leases.get(name).is_some_and(|at| at.elapsed() < LEASE_RENEW) {
                continue;
            }
            let uid = node["metadata"]["uid"].clone();
            let obj = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": name, "namespace": "kube-node-lease",
                             "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": name, "uid": uid}]},
                "spec": {"holderIdentity": name, "leaseDurationSeconds": LEASE_DURATION_SECONDS, "renewTime": micro_time(now)}});
            api.patch(name, &pp, &Patch::Apply(&obj)).await?;
            self.leases.insert(name.clone(), std::time::Instant::now());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn micro_time_has_six_fractional_digits() {
        let t: jiff::Timestamp = "2026-12-07T15:30:28.123456789Z".parse().unwrap_or_default();
        assert_eq!(micro_time(t), "2026-12-07T15:30:28.123456Z");
        let t: jiff::Timestamp = "2026-12-07T15:30:28Z".parse().unwrap_or_default();
        assert_eq!(micro_time(t), "2026-12-07T15:30:28.000000Z");
    }
}
