//! The vertical engine: upstream VPA's decisions, pure. Callers pass usage samples, pods, the
//! Autoscaler and `now`; nothing here reads a clock or the network.
//!
//! - [`histogram`]: decaying exponential histograms and their checkpoints.
//! - [`model`]: per-container sample handling (deduplication, memory peaks, OOM bumps) feeding
//!   one aggregate per (Autoscaler, container name).
//! - [`estimate`]: percentiles, margin, confidence, pod minimums, then the Autoscaler's policy.
//! - [`updater`]: which pods to resize or evict, in what order, within what budget.
//! - [`admission`]: the requests and limits a new pod gets, as a JSON patch.
//!
//! Every result says why, so status, Events and `omniscale plan` can explain it.

pub mod admission;
pub mod estimate;
pub mod histogram;
pub mod input;
pub mod model;
pub mod updater;
