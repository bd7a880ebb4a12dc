//! A simulated Kubernetes cluster and cloud.
//!
//! The API server speaks the real wire protocol on loopback so the unmodified operator and
//! `kubectl` can talk to it; the control plane (controllers, scheduler, kubelets, metrics) and the
//! cloud are simulated in-process. Deviations from kube-apiserver are listed in the README.

pub mod admission;
pub mod builtin;
/// The clock the simulated cluster shares with the operator.
pub use omniscale_api::clock;
pub mod control;
pub mod defaults;
pub mod error;
mod eviction;
pub mod metrics_api;
pub mod openapi;
pub mod patch;
pub mod registry;
pub mod remote;
pub mod runtime;
pub mod schema;
/// Label and field selectors (shared with the operator through `omniscale_api`).
pub use omniscale_api::selector;
pub mod server;
pub mod store;
pub mod table;
pub mod world;

pub use error::{ApiError, Error};
pub use server::Cluster;
