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
        Metrics { registry, reconciles, reconcile_errors, reconcile_duration, cycle_reads, leader, ready }
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
