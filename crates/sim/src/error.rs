//! The simulator's one error type. API failures render as `metav1.Status` bodies with the codes
//! and reasons kube-apiserver uses, because clients (kube-rs, client-go, kubectl) branch on them.

use serde_json::{Value, json};

/// A failed API request, carried to the HTTP layer and rendered as a `Status`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{code} {reason}: {message}")]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
    /// Set only by [`ApiError::stale_admission`]: the write is redone, never shown to a client.
    pub(crate) stale: bool,
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self { code, reason, message: message.into(), details: None, stale: false }
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    /// `resource` is the qualified resource ("deployments.apps", "pods").
    pub fn not_found(resource: &str, name: &str) -> Self {
        Self::new(404, "NotFound", format!("{resource} \"{name}\" not found")).with_details(details(
            resource,
            name,
            vec![],
        ))
    }

    pub fn already_exists(resource: &str, name: &str) -> Self {
        Self::new(409, "AlreadyExists", format!("{resource} \"{name}\" already exists")).with_details(details(
            resource,
            name,
            vec![],
        ))
    }

    pub fn conflict(resource: &str, name: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {resource} \"{name}\": the object has been modified; please apply your changes to the latest version and try again"
            ),
        )
        .with_details(details(resource, name, vec![]))
    }

    pub fn conflict_msg(resource: &str, name: &str, message: impl Into<String>, causes: Vec<Value>) -> Self {
        Self::new(409, "Conflict", message).with_details(details(resource, name, causes))
    }

    /// 422 with one cause per invalid field, the shape `kubectl` prints field by field.
    pub fn invalid(kind: &str, name: &str, causes: Vec<(String, String)>) -> Self {
        let msg = causes.iter().map(|(f, m)| format!("{f}: {m}")).collect::<Vec<_>>().join(", ");
        let causes_json: Vec<Value> =
            causes.iter().map(|(f, m)| json!({"reason": "FieldValueInvalid", "message": m, "field": f})).collect();
        Self::new(422, "Invalid", format!("{kind} \"{name}\" is invalid: {msg}")).with_details(json!({
            "name": name, "kind": kind, "causes": causes_json
        }))
    }

    /// The object changed while admission webhooks were being called.
    pub(crate) fn stale_admission() -> Self {
        Self { stale: true, ..Self::new(409, "Conflict", "the object changed during admission; retry") }
    }

    /// An error whose code came from elsewhere (a webhook's denial), with the reason that goes
    /// with the code.
    pub fn from_code(code: u16, message: impl Into<String>) -> Self {
        let reason = match code {
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "NotFound",
            405 => "MethodNotAllowed",
            409 => "Conflict",
            410 => "Expired",
            422 => "Invalid",
            429 => "TooManyRequests",
            500.. => "InternalError",
            _ => "BadRequest",
        };
        Self::new(code, reason, message)
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(405, "MethodNotAllowed", message)
    }

    pub fn unsupported_media_type(content_type: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json; got {content_type:?}"
            ),
        )
    }

    pub fn gone(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    pub fn too_many_requests(message: impl Into<String>, causes: Vec<Value>) -> Self {
        Self::new(429, "TooManyRequests", message).with_details(json!({"causes": causes}))
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalError", message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(403, "Forbidden", message)
    }

    pub fn status(&self) -> Value {
        let mut s = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": self.message, "reason": self.reason, "code": self.code,
        });
        if let Some(d) = &self.details {
            s["details"] = d.clone();
        }
        s
    }
}

fn details(resource: &str, name: &str, causes: Vec<Value>) -> Value {
    let (kind, group) = resource.split_once('.').unwrap_or((resource, ""));
    let mut d = json!({"name": name, "group": group, "kind": kind});
    if !causes.is_empty() {
        d["causes"] = Value::Array(causes);
    }
    d
}

/// Errors outside request handling: start-up, scenario files, the listener.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Config(String),
    /// A call to a real API server (the simulated world driving one) failed.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
}
