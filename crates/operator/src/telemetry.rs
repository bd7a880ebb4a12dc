//! Logging set-up: plain or JSON lines on stderr, filtered like `RUST_LOG`.

use std::io::IsTerminal;

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use crate::cli::LogFormat;

/// Installs the global subscriber. An invalid filter falls back to `info` with a warning,
/// rather than refusing to start.
///
/// Logs go to stderr (stdout carries command output such as `omniscale crds` and the
/// simulator's table), coloured only when stderr is a terminal: escape codes in files and CI
/// logs are noise.
pub fn init(format: LogFormat, filter: &str) {
    let (env_filter, bad) = match EnvFilter::try_new(filter) {
        Ok(f) => (f, None),
        Err(e) => (EnvFilter::new("info"), Some(e)),
    };
    let registry = tracing_subscriber::registry().with(env_filter);
    let result = match format {
        LogFormat::Plain => registry.with(plain_layer(std::io::stderr().is_terminal(), std::io::stderr)).try_init(),
        LogFormat::Json => registry
            .with(fmt::layer().json().flatten_event(true).with_current_span(true).with_writer(std::io::stderr))
            .try_init(),
    };
    if let Err(e) = result {
        eprintln!("logging already initialised: {e}");
    }
    if let Some(e) = bad {
        tracing::warn!(filter, error = %e, "invalid log filter; using info");
    }
}

/// Human-readable lines; escape codes only when `ansi` (the writer is a terminal).
fn plain_layer<S, W>(ansi: bool, writer: W) -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    W: for<'w> fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    fmt::layer().with_target(false).with_ansi(ansi).with_writer(writer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A writer that keeps what was logged.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().map_err(|_| std::io::Error::other("poisoned"))?.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn logged(ansi: bool) -> String {
        let out = Captured::default();
        let w = out.clone();
        let subscriber = tracing_subscriber::registry().with(plain_layer(ansi, move || w.clone()));
        tracing::subscriber::with_default(subscriber, || tracing::warn!(autoscaler = "web", "hello"));
        let bytes = out.0.lock().map(|b| b.clone()).unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    #[test]
    fn no_escape_codes_off_a_terminal() {
        let plain = logged(false);
        assert!(plain.contains("WARN") && plain.contains("hello"), "{plain}");
        assert!(!plain.contains('\u{1b}'), "escape codes in {plain:?}");
        // The same layer on a terminal does colour, so the check above can fail.
        assert!(logged(true).contains('\u{1b}'));
    }
}
