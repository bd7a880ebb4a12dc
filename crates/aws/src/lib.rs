//! The AWS cloud provider: Auto Scaling Groups as node groups, with Cluster Autoscaler's AWS
//! semantics, so groups set up for Cluster Autoscaler work here unchanged.
//!
//! [`AwsProvider`] implements [`omniscale_nodes::CloudProvider`]:
//! - **discovery** by the Cluster Autoscaler tags or by name (`DescribeAutoScalingGroups`);
//! - **instance types** from the launch template, launch configuration, or every type of a
//!   mixed-instances policy, with their specs from `DescribeInstanceTypes`, for scale from zero;
//! - **failed scaling activities** (`DescribeScalingActivities`), so a scale-up AWS cannot
//!   fulfil is noticed early;
//! - **writes**: `SetDesiredCapacity` (`HonorCooldown=false`) and
//!   `TerminateInstanceInAutoScalingGroup` (`ShouldDecrementDesiredCapacity=true`, one instance
//!   a call, a no-op for an instance already leaving).
//!
//! Throttling, 5xx answers, timeouts and I/O failures are retried inside each call by the SDK's
//! standard retry mode (5 attempts, exponential backoff with jitter); what still fails reaches
//! the caller as a [`omniscale_nodes::ProviderError`] whose variant says whether to retry, and
//! whose text carries the AWS error code and message.
//!
//! Tested against a real `moto_server` (`tests/moto.rs`); [`moto`] starts one for any crate's
//! tests.

mod activities;
mod client;
mod discovery;
mod errors;
mod instance_types;
pub mod moto;
mod provider;

pub use provider::{AwsProvider, Options};
