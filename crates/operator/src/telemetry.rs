//! Logging set-up: plain or JSON lines, filtered like `RUST_LOG`.

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use crate::cli::LogFormat;

/// Installs the global subscriber. An invalid filter falls back to `info` with a warning,
/// rather than refusing to start.
pub fn init(format: LogFormat, filter: &str) {
    let (env_filter, bad) = match EnvFilter::try_new(filter) {
        Ok(f) => (f, None),
        Err(e) => (EnvFilter::new("info"), Some(e)),
    };
    let registry = tracing_subscriber::registry().with(env_filter);
    let result = match format {
        LogFormat::Plain => registry.with(fmt::layer().with_target(false)).try_init(),
        LogFormat::Json => registry.with(fmt::layer().json().flatten_event(true).with_current_span(true)).try_init(),
    };
    if let Err(e) = result {
        eprintln!("logging already initialised: {e}");
    }
    if let Some(e) = bad {
        tracing::warn!(filter, error = %e, "invalid log filter; using info");
    }
}
