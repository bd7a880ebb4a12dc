//! The metrics every engine reads: typed clients for metrics.k8s.io (PodMetrics, NodeMetrics),
//! custom.metrics.k8s.io/v1beta2 (Pods and Object metrics) and external.metrics.k8s.io/v1beta1,
//! behind one [`Cache`] per sync cycle.
//!
//! A cycle first collects the [`Query`]s its Autoscalers need (equal ones collapse, so a
//! hundred Autoscalers in a namespace cost one PodMetrics list), then [`Client::fill`] makes them
//! concurrently, then the pure engines read the parsed [`Answer`]s. Planning and reading never
//! touch the network, which is what lets `omniscale plan` and the benchmarks run the same code.

pub mod cache;
pub mod client;
pub mod pods;
pub mod query;
pub mod types;

pub use cache::Cache;
pub use client::Client;
pub use pods::PodIndex;
pub use query::{Answer, Query};

use jiff::{SignedDuration, Timestamp};

/// One value of a metric: `value` in milli-units, measured over `window` ending at `timestamp`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Sample {
    pub value: i64,
    pub timestamp: Timestamp,
    pub window: SignedDuration,
}

/// A pod's usage from its PodMetrics, parsed once per cycle: per container, in milli-units.
#[derive(Clone, Debug, PartialEq)]
pub struct Usage {
    pub timestamp: Timestamp,
    pub window: SignedDuration,
    pub containers: Vec<ContainerUsage>,
}

/// One container's usage. cpu and memory get fields of their own because every engine reads
/// them and a namespace's answer holds thousands of pods: fewer allocations per cycle.
#[derive(Clone, Debug, PartialEq)]
pub struct ContainerUsage {
    /// Shared by every pod of a list with this container name (parsing interns it).
    pub name: std::sync::Arc<str>,
    pub cpu: Option<i64>,
    pub memory: Option<i64>,
    pub other: Vec<(String, i64)>,
}

impl ContainerUsage {
    /// A container's usage from (resource, milli) pairs.
    pub fn new(name: &str, usage: impl IntoIterator<Item = (impl AsRef<str>, i64)>) -> Self {
        let mut c = ContainerUsage { name: name.into(), cpu: None, memory: None, other: Vec::new() };
        for (r, v) in usage {
            c.set(r.as_ref(), v);
        }
        c
    }

    /// Records the usage of `resource`.
    pub fn set(&mut self, resource: &str, milli: i64) {
        match resource {
            "cpu" => self.cpu = Some(milli),
            "memory" => self.memory = Some(milli),
            other => self.other.push((other.to_owned(), milli)),
        }
    }

    pub fn get(&self, resource: &str) -> Option<i64> {
        match resource {
            "cpu" => self.cpu,
            "memory" => self.memory,
            other => self.other.iter().find(|(r, _)| r == other).map(|(_, v)| *v),
        }
    }
}

impl Usage {
    /// The pod's usage of `resource`, summed over its containers (or only `container`).
    /// `None` when a counted container does not report the resource or none is counted, which
    /// upstream treats as a missing pod.
    pub fn of(&self, resource: &str, container: Option<&str>) -> Option<Sample> {
        let mut sum = 0i64;
        let mut counted = 0;
        for c in &self.containers {
            if container.is_some_and(|n| n != &*c.name) {
                continue;
            }
            sum = sum.saturating_add(c.get(resource)?);
            counted += 1;
        }
        (counted > 0).then_some(Sample { value: sum, timestamp: self.timestamp, window: self.window })
    }
}

/// Why a metrics read failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("unable to fetch metrics from {api}: {source}")]
    Api {
        api: &'static str,
        #[source]
        source: kube::Error,
    },
    #[error("unable to fetch metrics from {api}: {message}")]
    Malformed { api: &'static str, message: String },
    #[error("invalid request {path:?}: {source}")]
    Request {
        path: String,
        #[source]
        source: http::Error,
    },
}
