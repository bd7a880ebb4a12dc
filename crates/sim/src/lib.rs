//! A simulated Kubernetes cluster and cloud.
//!
//! The API server speaks the real wire protocol on loopback so the unmodified operator and
//! `kubectl` can talk to it; the control plane (controllers, scheduler, kubelets, metrics) and the
//! cloud are simulated in-process. Deviations from kube-apiserver are listed in the README.

pub mod builtin;
pub mod error;
pub mod patch;
pub mod registry;
pub mod schema;
pub mod selector;
pub mod store;

pub use error::{ApiError, Error};
