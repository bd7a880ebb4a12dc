//! Prometheus metrics served on `/metrics` by every replica.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

/// Labels naming a controller.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    /// `autoscaler` or `nodepool`.
    pub controller: String,
}

/// Labels of a failed reconcile.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// `autoscaler` or `nodepool`.
    pub controller: String,
    /// [`crate::Error::metric_label`].
    pub error: String,
}

/// Labels of [`Metrics::cycle_reads`].
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReadLabels {
    pub controller: String,
    pub kind: String,
}

/// Labels naming a node group.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GroupLabels {
    pub node_group: String,
}

/// Labels of a node-engine counter with a reason.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GroupReasonLabels {
    pub node_group: String,
    pub reason: String,
}

/// The node engines' series, named after Cluster Autoscaler's (`cluster_autoscaler_*` →
/// `omniscale_nodes_*`) so existing dashboards translate one to one.
#[derive(Debug)]
pub struct NodeMetrics {
    /// Pods kube-scheduler reports unschedulable.
    pub unschedulable_pods_count: Gauge,
    /// Ready nodes of NodePool groups.
    pub nodes_count: Gauge,
    pub node_group_min_count: Family<GroupLabels, Gauge>,
    pub node_group_max_count: Family<GroupLabels, Gauge>,
    pub node_group_target_count: Family<GroupLabels, Gauge>,
    /// 1 while a group is backed off after a failed scale-up.
    pub node_group_backoff_status: Family<GroupLabels, Gauge>,
    pub unneeded_nodes_count: Gauge,
    pub scaled_up_nodes_total: Family<GroupLabels, Counter>,
    /// By `reason`: empty, underutilized or unready.
    pub scaled_down_nodes_total: Family<GroupReasonLabels, Counter>,
    /// By `reason`: timeout, activity (the group reported a failed launch), api.
    pub failed_scale_ups_total: Family<GroupReasonLabels, Counter>,
    pub evicted_pods_total: Counter,
    /// From the watch seeing a pod unschedulable to the desired-capacity call returning.
    pub scale_up_latency_seconds: Histogram,
    /// One loop (describe, decide, act), in seconds.
    pub loop_duration_seconds: Histogram,
    /// Unix time of the last loop.
    pub last_activity: Gauge,
    /// 0 while too many nodes are NotReady to autoscale.
    pub cluster_safe_to_autoscale: Gauge,
}

impl NodeMetrics {
    /// Counts a failed scale-up of `group` (`timeout`, `activity` or `api`).
    pub fn failed_scale_up(&self, group: &str, reason: &str) {
        let labels = GroupReasonLabels { node_group: group.to_owned(), reason: reason.to_owned() };
        self.failed_scale_ups_total.get_or_create(&labels).inc();
    }

    fn register(&self, r: &mut Registry) {
        let r = r.sub_registry_with_prefix("nodes");
        r.register("unschedulable_pods_count", "Unschedulable pods", self.unschedulable_pods_count.clone());
        r.register("nodes_count", "Ready nodes of NodePool groups", self.nodes_count.clone());
        r.register("node_group_min_count", "Group minimum size", self.node_group_min_count.clone());
        r.register("node_group_max_count", "Group maximum size", self.node_group_max_count.clone());
        r.register("node_group_target_count", "Group desired capacity", self.node_group_target_count.clone());
        r.register(
            "node_group_backoff_status",
            "1 while a group is backed off",
            self.node_group_backoff_status.clone(),
        );
        r.register("unneeded_nodes_count", "Nodes that could be removed", self.unneeded_nodes_count.clone());
        r.register("scaled_up_nodes", "Nodes added", self.scaled_up_nodes_total.clone());
        r.register("scaled_down_nodes", "Nodes removed", self.scaled_down_nodes_total.clone());
        r.register("failed_scale_ups", "Scale-ups that failed", self.failed_scale_ups_total.clone());
        r.register("evicted_pods", "Pods evicted to remove nodes", self.evicted_pods_total.clone());
        r.register(
            "scale_up_latency_seconds",
            "Unschedulable pod seen to desired capacity set",
            self.scale_up_latency_seconds.clone(),
        );
        r.register("loop_duration_seconds", "One node loop", self.loop_duration_seconds.clone());
        r.register("last_activity", "Unix time of the last node loop", self.last_activity.clone());
        r.register(
            "cluster_safe_to_autoscale",
            "0 while too many nodes are NotReady to autoscale",
            self.cluster_safe_to_autoscale.clone(),
        );
    }
}

fn node_metrics() -> NodeMetrics {
    let buckets = [0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0];
    NodeMetrics {
        unschedulable_pods_count: Gauge::default(),
        nodes_count: Gauge::default(),
        node_group_min_count: Family::default(),
        node_group_max_count: Family::default(),
        node_group_target_count: Family::default(),
        node_group_backoff_status: Family::default(),
        unneeded_nodes_count: Gauge::default(),
        scaled_up_nodes_total: Family::default(),
        scaled_down_nodes_total: Family::default(),
        failed_scale_ups_total: Family::default(),
        evicted_pods_total: Counter::default(),
        scale_up_latency_seconds: Histogram::new(buckets),
        loop_duration_seconds: Histogram::new(buckets),
        last_activity: Gauge::default(),
        cluster_safe_to_autoscale: {
            // Safe until a loop finds otherwise.
            let g = Gauge::default();
            g.set(1);
            g
        },
    }
}

/// All operator metrics, registered once at start-up.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Reconciles run, by controller.
    pub reconciles: Family<ControllerLabels, Counter>,
    /// Reconciles failed, by controller and error kind.
    pub reconcile_errors: Family<ErrorLabels, Counter>,
    /// Reconcile durations in seconds.
    pub reconcile_duration: Family<ControllerLabels, Histogram>,
    /// Reads made by the periodic sync cycles, by controller and kind (`scale`, `metrics`).
    pub cycle_reads: Family<ReadLabels, Counter>,
    /// 1 while this replica holds the leader lease.
    pub leader: Gauge,
    /// 1 once caches are synced.
    pub ready: Gauge,
    /// The node engines' series.
    pub nodes: NodeMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("omniscale");
        let reconciles = Family::<ControllerLabels, Counter>::default();
        let reconcile_errors = Family::<ErrorLabels, Counter>::default();
        let reconcile_duration = Family::<ControllerLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0])
        });
        let cycle_reads = Family::<ReadLabels, Counter>::default();
        let leader = Gauge::default();
        let ready = Gauge::default();
        registry.register("reconcile", "Reconciles run", reconciles.clone());
        registry.register("reconcile_errors", "Reconciles that failed", reconcile_errors.clone());
        registry.register("reconcile_duration_seconds", "Reconcile duration", reconcile_duration.clone());
        registry.register("cycle_reads", "API reads made by periodic sync cycles", cycle_reads.clone());
        registry.register("leader", "1 while this replica holds the leader lease", leader.clone());
        registry.register("ready", "1 once this replica's caches are synced", ready.clone());
        let build = Family::<Vec<(String, String)>, Gauge>::default();
        build.get_or_create(&vec![("version".to_string(), env!("CARGO_PKG_VERSION").to_string())]).set(1);
        registry.register("build_info", "Build information", build);
        let nodes = node_metrics();
        nodes.register(&mut registry);
        Metrics { registry, reconciles, reconcile_errors, reconcile_duration, cycle_reads, leader, ready, nodes }
    }
}

impl Metrics {
    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        match prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            Ok(()) => out,
            Err(e) => format!("# encoding failed: {e}\n"),
        }
    }

    /// Counts `n` reads of `kind` made by `controller`'s sync cycle.
    pub fn count_reads(&self, controller: &str, kind: &str, n: usize) {
        let labels = ReadLabels { controller: controller.to_string(), kind: kind.to_string() };
        self.cycle_reads.get_or_create(&labels).inc_by(n as u64);
    }

    /// Counts one reconcile of `controller` taking `seconds`.
    pub fn observe_reconcile(&self, controller: &str, seconds: f64) {
        let labels = ControllerLabels { controller: controller.to_string() };
        self.reconciles.get_or_create(&labels).inc();
        self.reconcile_duration.get_or_create(&labels).observe(seconds);
    }

    /// Counts one failed reconcile.
    pub fn observe_error(&self, controller: &str, error: &str) {
        self.reconcile_errors
            .get_or_create(&ErrorLabels { controller: controller.to_string(), error: error.to_string() })
            .inc();
    }
}
