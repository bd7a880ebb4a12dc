//! AWS failures, sorted into what the caller should do about them.
//!
//! The engines only care whether to back off and retry, give up on a group, or alert a human, so
//! every SDK error is classified once, here, by its AWS error code, message and HTTP status
//! ([`classify`], a pure function so the table is unit-tested without a network). The original
//! code and message stay in the text, because the operator reading a log needs them.
//!
//! Retrying happens inside the SDK (standard retry mode, see `client`); an error that reaches
//! this module already survived those attempts.

use aws_sdk_autoscaling::config::http::HttpResponse;
use aws_sdk_autoscaling::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use omniscale_nodes::ProviderError;

/// What a failure means for the caller; the variants mirror [`ProviderError`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Throttled,
    Transient,
    NotFound,
    Rejected,
    Fatal,
}

/// One failed AWS call (or a precondition this crate checks before calling), with enough
/// context to be acted on from a log line.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AwsError {
    /// AWS answered with an error document.
    #[error("{operation}: {code}: {message}{}", status_suffix(*status))]
    Service { operation: &'static str, code: String, message: String, status: Option<u16>, kind: Kind },
    /// No usable answer: connection, timeout, credentials resolution or an unreadable response.
    #[error("{operation}: {detail}")]
    Call { operation: &'static str, detail: String, kind: Kind },
    /// Found out before calling AWS (e.g. the group is not there, or the value is out of range).
    #[error("{0}")]
    Precondition(String, Kind),
}

fn status_suffix(status: Option<u16>) -> String {
    status.map(|s| format!(" (HTTP {s})")).unwrap_or_default()
}

impl AwsError {
    /// Wraps an SDK error of any Auto Scaling or EC2 operation.
    pub(crate) fn sdk<E>(operation: &'static str, err: SdkError<E, HttpResponse>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let status = err.raw_response().map(|r| r.status().as_u16());
        match &err {
            SdkError::ServiceError(service) => {
                let e = service.err();
                let code = e.code().unwrap_or("Unknown").to_owned();
                let message = e.message().unwrap_or("").to_owned();
                let kind = classify(&code, &message, status);
                AwsError::Service { operation, code, message, status, kind }
            }
            SdkError::ConstructionFailure(_) => {
                // The request could not even be built: a configuration problem (e.g. no region).
                AwsError::Call { operation, detail: DisplayErrorContext(&err).to_string(), kind: Kind::Fatal }
            }
            SdkError::DispatchFailure(d) if d.is_user() => {
                AwsError::Call { operation, detail: DisplayErrorContext(&err).to_string(), kind: Kind::Fatal }
            }
            SdkError::ResponseError(_) => {
                let kind = match status {
                    Some(s) => classify("", "", Some(s)),
                    None => Kind::Transient,
                };
                // An unreadable 2xx is as likely a cut connection as anything: retry.
                let kind = if kind == Kind::Rejected { Kind::Transient } else { kind };
                AwsError::Call { operation, detail: DisplayErrorContext(&err).to_string(), kind }
            }
            // Timeouts, I/O, and credential-provider failures (IMDS or STS briefly unreachable).
            _ => AwsError::Call { operation, detail: DisplayErrorContext(&err).to_string(), kind: Kind::Transient },
        }
    }

    /// What the caller should do about it.
    pub(crate) fn kind(&self) -> Kind {
        match self {
            AwsError::Service { kind, .. } | AwsError::Call { kind, .. } | AwsError::Precondition(_, kind) => *kind,
        }
    }
}

impl From<AwsError> for ProviderError {
    fn from(err: AwsError) -> Self {
        let text = err.to_string();
        match err.kind() {
            Kind::Throttled => ProviderError::Throttled(text),
            Kind::Transient => ProviderError::Transient(text),
            Kind::NotFound => ProviderError::NotFound(text),
            Kind::Rejected => ProviderError::Rejected(text),
            Kind::Fatal => ProviderError::Fatal(text),
        }
    }
}

/// Rate limiting, as Auto Scaling (`Throttling`), EC2 (`RequestLimitExceeded`) and the JSON
/// services (`ThrottlingException`) spell it.
const THROTTLING: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestLimitExceeded",
    "RequestThrottled",
    "RequestThrottledException",
    "TooManyRequestsException",
    "SlowDown",
    "EC2ThrottledException",
    "PriorRequestNotComplete",
    "BandwidthLimitExceeded",
];

/// Credentials and permissions: nothing changes until someone fixes IAM or the configuration.
const FATAL: &[&str] = &[
    "UnauthorizedOperation",
    "AccessDenied",
    "AccessDeniedException",
    "InvalidClientTokenId",
    "ExpiredToken",
    "ExpiredTokenException",
    "RequestExpired",
    "AuthFailure",
    "SignatureDoesNotMatch",
    "IncompleteSignature",
    "MissingAuthenticationToken",
    "UnrecognizedClientException",
    "InvalidAccessKeyId",
    "OptInRequired",
    "Blocked",
    "UnauthorizedException",
];

/// Server-side trouble and conflicts that clear by themselves.
const TRANSIENT: &[&str] = &[
    "ResourceContention",
    "InternalFailure",
    "InternalError",
    "InternalServerError",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "Unavailable",
    "RequestTimeout",
    "RequestTimeoutException",
    "IDPCommunicationError",
];

/// Sorts one AWS error by its code, message and HTTP status.
///
/// The code decides when it is known; `ValidationError` (Auto Scaling's catch-all) is split on
/// its message, because a missing group comes back as `ValidationError: AutoScalingGroup name
/// not found`. Unknown codes fall back on the HTTP status: 429 throttled, 401/403 fatal, 5xx
/// transient, other 4xx rejected.
pub(crate) fn classify(code: &str, message: &str, status: Option<u16>) -> Kind {
    if THROTTLING.contains(&code) {
        return Kind::Throttled;
    }
    if FATAL.contains(&code) {
        return Kind::Fatal;
    }
    if TRANSIENT.contains(&code) {
        return Kind::Transient;
    }
    // EC2 spells missing things `InvalidInstanceID.NotFound`, `InvalidLaunchTemplateName.NotFoundException`,
    // `InvalidLaunchTemplateId.VersionNotFound`, ...
    if code.contains("NotFound") {
        return Kind::NotFound;
    }
    if code == "ValidationError" || code == "InvalidParameterValue" || code == "InvalidParameter" {
        let m = message.to_ascii_lowercase();
        return if m.contains("not found") || m.contains("does not exist") { Kind::NotFound } else { Kind::Rejected };
    }
    if code == "ScalingActivityInProgress" || code == "LimitExceeded" || code == "AlreadyExists" {
        return Kind::Rejected;
    }
    match status {
        Some(429) => Kind::Throttled,
        Some(401 | 403) => Kind::Fatal,
        Some(404) => Kind::NotFound,
        Some(s) if s >= 500 => Kind::Transient,
        _ => Kind::Rejected,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttling_codes_are_throttled() {
        for code in ["Throttling", "RequestLimitExceeded", "ThrottlingException"] {
            assert_eq!(classify(code, "Rate exceeded", Some(400)), Kind::Throttled, "{code}");
        }
        assert_eq!(classify("Whatever", "", Some(429)), Kind::Throttled);
    }

    #[test]
    fn server_errors_and_contention_are_transient() {
        assert_eq!(classify("InternalFailure", "", Some(500)), Kind::Transient);
        assert_eq!(classify("", "", Some(503)), Kind::Transient);
        assert_eq!(classify("SomethingNew", "boom", Some(502)), Kind::Transient);
        assert_eq!(classify("ResourceContention", "You already have a pending update", Some(500)), Kind::Transient);
    }

    #[test]
    fn missing_things_are_not_found() {
        assert_eq!(classify("ValidationError", "AutoScalingGroup name not found - null", Some(400)), Kind::NotFound);
        assert_eq!(
            classify("InvalidInstanceID.NotFound", "The instance ID 'i-1' does not exist", Some(400)),
            Kind::NotFound
        );
        assert_eq!(classify("InvalidLaunchTemplateId.VersionNotFound", "", Some(400)), Kind::NotFound);
    }

    #[test]
    fn invalid_requests_are_rejected() {
        assert_eq!(
            classify("ValidationError", "New SetDesiredCapacity value 9 is above max value 3", Some(400)),
            Kind::Rejected
        );
        assert_eq!(classify("ScalingActivityInProgress", "Scaling activity in progress", Some(400)), Kind::Rejected);
        assert_eq!(classify("InvalidInstanceType", "bogus", Some(400)), Kind::Rejected);
    }

    #[test]
    fn auth_problems_are_fatal() {
        for code in ["UnauthorizedOperation", "AccessDenied", "InvalidClientTokenId", "ExpiredToken", "AuthFailure"] {
            assert_eq!(classify(code, "", Some(403)), Kind::Fatal, "{code}");
        }
        assert_eq!(classify("Unknown", "", Some(401)), Kind::Fatal);
    }

    #[test]
    fn text_carries_code_and_message() {
        let err = AwsError::Service {
            operation: "SetDesiredCapacity",
            code: "ValidationError".into(),
            message: "New SetDesiredCapacity value 9 is above max value 3".into(),
            status: Some(400),
            kind: Kind::Rejected,
        };
        let provider: ProviderError = err.into();
        assert_eq!(
            provider,
            ProviderError::Rejected(
                "SetDesiredCapacity: ValidationError: New SetDesiredCapacity value 9 is above max value 3 (HTTP 400)"
                    .into()
            )
        );
        assert!(!provider.is_retryable());
    }
}
