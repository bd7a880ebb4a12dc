//! The HTTP server every replica runs: `/healthz`, `/readyz`, `/metrics`.
//!
//! Readiness follows cache sync, never leadership: a standby replica is ready (it will serve the
//! webhook), and tying readiness to the lease would drop Service endpoints on every failover.

use std::{net::SocketAddr, sync::Arc};

use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use tokio::{net::TcpListener, sync::watch};
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// What the HTTP handlers read.
#[derive(Debug, Clone)]
pub struct HttpState {
    /// Metrics to expose.
    pub metrics: Arc<Metrics>,
    /// Why the replica is not ready yet, or `None` once it is.
    pub not_ready: watch::Receiver<Option<String>>,
}

/// Builds the router (separate from serving, so tests can call it in-process).
pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn readyz(State(s): State<HttpState>) -> impl IntoResponse {
    match s.not_ready.borrow().clone() {
        None => (StatusCode::OK, "ready".to_string()),
        Some(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}")),
    }
}

async fn metrics(State(s): State<HttpState>) -> impl IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        s.metrics.encode(),
    )
}

/// Binds `addr` and serves until `shutdown` fires; returns the bound address via `bound`.
pub async fn serve(
    addr: SocketAddr,
    state: HttpState,
    shutdown: CancellationToken,
    bound: Option<tokio::sync::oneshot::Sender<SocketAddr>>,
) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tracing::info!(addr = %local, "serving /healthz, /readyz and /metrics");
    if let Some(tx) = bound {
        let _ = tx.send(local);
    }
    axum::serve(listener, router(state)).with_graceful_shutdown(shutdown.cancelled_owned()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = match tokio::net::TcpStream::connect(addr).await {
            Ok(s) => s,
            Err(e) => panic!("connect: {e}"),
        };
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.ok();
        let mut buf = String::new();
        s.read_to_string(&mut buf).await.ok();
        let code = buf.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        (code, buf)
    }

    #[tokio::test]
    async fn probes_and_metrics_over_real_http() {
        let metrics = Arc::new(Metrics::default());
        let (ready_tx, not_ready) = watch::channel(Some("caches not synced".to_string()));
        let shutdown = CancellationToken::new();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let server = tokio::spawn(serve(
            "127.0.0.1:0".parse().unwrap_or(SocketAddr::from(([127, 0, 0, 1], 0))),
            HttpState { metrics: metrics.clone(), not_ready },
            shutdown.clone(),
            Some(tx),
        ));
        let addr = match rx.await {
            Ok(a) => a,
            Err(e) => panic!("server did not bind: {e}"),
        };
        assert_eq!(get(addr, "/healthz").await.0, 200);
        let (code, body) = get(addr, "/readyz").await;
        assert_eq!(code, 503);
        assert!(body.contains("caches not synced"));
        ready_tx.send_replace(None);
        assert_eq!(get(addr, "/readyz").await.0, 200);
        metrics.leader.set(1);
        metrics.observe_reconcile("autoscaler", 0.002);
        metrics.observe_error("autoscaler", "api");
        let (code, body) = get(addr, "/metrics").await;
        assert_eq!(code, 200);
        assert!(body.contains("omniscale_leader 1"), "{body}");
        assert!(body.contains("omniscale_reconcile_total{controller=\"autoscaler\"} 1"), "{body}");
        assert!(body.contains("omniscale_reconcile_errors_total{controller=\"autoscaler\",error=\"api\"} 1"), "{body}");
        shutdown.cancel();
        assert!(matches!(server.await, Ok(Ok(()))));
    }
}
