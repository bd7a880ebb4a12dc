//! The operator crate's one error type.

/// Everything that can go wrong in the shells.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// Building the client configuration failed.
    #[error("kubeconfig: {0}")]
    Kubeconfig(#[from] kube::config::KubeconfigError),
    /// In-cluster or inferred configuration failed.
    #[error("client configuration: {0}")]
    InferConfig(#[from] kube::config::InferConfigError),
    /// Serialising a status or patch failed.
    #[error("serialisation: {0}")]
    Serde(#[from] serde_json::Error),
    /// Writing YAML failed.
    #[error("yaml: {0}")]
    Yaml(#[from] serde_yaml::Error),
    /// Leader election settings are unsafe.
    #[error(transparent)]
    Timing(#[from] crate::leader::TimingError),
    /// Local I/O (binding the HTTP port, signals).
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The simulated cluster failed to start or run.
    #[error("simulated cluster: {0}")]
    Sim(String),
    /// `omniscale plan` input that cannot be used (names the file, document and field).
    #[error("plan: {0}")]
    Plan(#[from] crate::plan::PlanError),
    /// Webhook certificates that cannot be made, read or served.
    #[error("webhook certificate: {0}")]
    Cert(#[from] crate::webhook::CertError),
    /// The webhook's Secret or configuration could not be brought up to date.
    #[error("webhook: {0}")]
    Webhook(String),
}

impl Error {
    /// Short label for the `error` dimension of metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(kube::Error::Api(_)) => "api",
            Error::Kube(_) => "client",
            Error::Kubeconfig(_) | Error::InferConfig(_) => "config",
            Error::Serde(_) | Error::Yaml(_) => "serde",
            Error::Timing(_) => "config",
            Error::Sim(_) => "sim",
            Error::Io(_) => "io",
            Error::Plan(_) => "input",
            Error::Cert(_) => "cert",
            Error::Webhook(_) => "webhook",
        }
    }
}

/// Result with the crate's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;
