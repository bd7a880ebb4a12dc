//! The two SDK clients (Auto Scaling and EC2), built with the retry and timeout policy this
//! provider relies on.
//!
//! Retrying lives in the SDK rather than in our code: the standard retry mode retries throttling
//! (`Throttling`, `RequestLimitExceeded`), 5xx answers, timeouts and I/O failures with
//! exponential backoff and jitter, up to [`MAX_ATTEMPTS`] attempts per call, and its token bucket
//! stops a whole fleet of callers from hammering a struggling endpoint. A call that still fails is
//! classified by `errors` for the engines, which back off on their own schedule.
//!
//! Everything else (region, credentials, endpoint overrides such as `AWS_ENDPOINT_URL`,
//! `AWS_ENDPOINT_URL_AUTO_SCALING`, `AWS_ENDPOINT_URL_EC2`) comes from the [`SdkConfig`] the
//! caller loaded, so the standard AWS environment works unchanged.

use std::time::Duration;

use aws_config::SdkConfig;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;

/// Attempts per call, first one included.
pub(crate) const MAX_ATTEMPTS: u32 = 5;

/// One attempt may not hang longer than this (the SDK sets no such limit by default).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);

/// A whole call, retries and backoff included, gives up after this.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(120);

/// The retry policy: standard mode (exponential backoff with jitter), [`MAX_ATTEMPTS`] attempts.
pub(crate) fn retry_config() -> RetryConfig {
    RetryConfig::standard().with_max_attempts(MAX_ATTEMPTS)
}

/// The caller's timeouts, with attempt and operation limits added where it set none.
fn timeout_config(sdk: &SdkConfig) -> TimeoutConfig {
    let mut builder = sdk.timeout_config().map(TimeoutConfig::to_builder).unwrap_or_default();
    let current = builder.clone().build();
    if current.operation_attempt_timeout().is_none() {
        builder = builder.operation_attempt_timeout(ATTEMPT_TIMEOUT);
    }
    if current.operation_timeout().is_none() {
        builder = builder.operation_timeout(OPERATION_TIMEOUT);
    }
    builder.build()
}

/// Both service clients, sharing one configuration.
#[derive(Clone, Debug)]
pub(crate) struct Clients {
    pub(crate) autoscaling: aws_sdk_autoscaling::Client,
    pub(crate) ec2: aws_sdk_ec2::Client,
}

impl Clients {
    /// Builds the clients from `sdk`, overriding only the retry policy and the missing timeouts.
    pub(crate) fn new(sdk: &SdkConfig) -> Self {
        let timeouts = timeout_config(sdk);
        let autoscaling = aws_sdk_autoscaling::config::Builder::from(sdk)
            .retry_config(retry_config())
            .timeout_config(timeouts.clone())
            .build();
        let ec2 = aws_sdk_ec2::config::Builder::from(sdk).retry_config(retry_config()).timeout_config(timeouts).build();
        Clients {
            autoscaling: aws_sdk_autoscaling::Client::from_conf(autoscaling),
            ec2: aws_sdk_ec2::Client::from_conf(ec2),
        }
    }
}

/// The token to ask for the next page with, or `None` after the last page. A token that does
/// not move would page forever, so it ends the listing too.
pub(crate) fn next_page(current: Option<&str>, next: Option<&str>) -> Option<String> {
    next.filter(|n| !n.is_empty() && current != Some(*n)).map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paging_stops_on_missing_empty_or_repeated_tokens() {
        assert_eq!(next_page(None, Some("g-100")), Some("g-100".to_owned()));
        assert_eq!(next_page(Some("g-100"), Some("g-200")), Some("g-200".to_owned()));
        assert_eq!(next_page(Some("g-100"), None), None);
        assert_eq!(next_page(Some("g-100"), Some("")), None);
        assert_eq!(next_page(Some("g-100"), Some("g-100")), None);
    }
}
