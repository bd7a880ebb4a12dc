//! The mutating admission webhook's serving side: an HTTPS server (tokio-rustls + hyper) for
//! `POST /mutate-pods` and `GET /healthz`, whose certificate can be swapped while it runs, and
//! the certificate sources behind it ([`maintain`]).
//!
//! Every replica serves the webhook, leader or not: the API server calls whichever endpoint the
//! Service picks, and the configuration is `failurePolicy: Ignore`, so a webhook that is down
//! delays nothing but is skipped. The mutation itself is a [`Handler`], plugged in by the caller;
//! this module only moves bytes and keeps certificates fresh.

pub mod certs;
pub mod maintain;

use std::{
    convert::Infallible,
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, PoisonError, RwLock},
    time::Duration,
};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use kube::Client;
use omniscale_api::clock::Clock;
use rustls::{
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};
use tokio::{net::TcpListener, sync::watch, task::JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::cli::RunArgs;
pub use certs::{CertError, CertPolicy};
pub use maintain::{SelfManaged, SelfManagedConfig};

/// The mutation: a raw AdmissionReview request body in, the response body out. It never fails:
/// on any error it answers "allowed" (a webhook that rejects pods it cannot read would take
/// the cluster's workloads down with it).
pub type Handler = Arc<dyn Fn(&[u8]) -> Vec<u8> + Send + Sync>;

/// Path the MutatingWebhookConfiguration calls.
pub const MUTATE_PATH: &str = "/mutate-pods";
/// Largest request body accepted. kube-apiserver caps objects at 3 MiB (etcd's 1.5 MiB plus
/// encoding headroom), so anything larger is not an AdmissionReview it sent.
pub const MAX_BODY: usize = 3 * 1024 * 1024;
/// A TLS handshake must finish within this; a stalled client only holds its own task.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Idle keep-alive connections and slow request headers are dropped after this.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(60);
/// How long shutdown waits for in-flight requests (the API server's own timeout is 5 s).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// The "allowed, unchanged" AdmissionReview response for request `uid`.
pub fn allowed(uid: &str) -> Vec<u8> {
    serde_json::json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": {"uid": uid, "allowed": true},
    })
    .to_string()
    .into_bytes()
}

/// The uid of an admission.k8s.io/v1 AdmissionReview request, if the body is one.
pub fn request_uid(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Review {
        request: Option<Req>,
    }
    #[derive(serde::Deserialize)]
    struct Req {
        uid: String,
    }
    serde_json::from_slice::<Review>(body).ok()?.request.map(|r| r.uid)
}

/// The handler until pods are mutated: allows everything unchanged. An unreadable body is still
/// allowed (with an empty uid, which the API server then ignores under `failurePolicy: Ignore`).
pub fn allow_all(body: &[u8]) -> Vec<u8> {
    match request_uid(body) {
        Some(uid) => allowed(&uid),
        None => {
            warn!(bytes = body.len(), "webhook request is not an AdmissionReview; allowing");
            allowed("")
        }
    }
}

/// The serving certificate, replaceable while connections are being accepted: rustls asks for it
/// at each handshake, so a swap takes effect on the next connection without a restart.
#[derive(Debug)]
pub struct CertResolver {
    current: RwLock<Option<Arc<CertifiedKey>>>,
    loaded: watch::Sender<bool>,
}

impl Default for CertResolver {
    fn default() -> Self {
        Self { current: RwLock::new(None), loaded: watch::channel(false).0 }
    }
}

impl CertResolver {
    /// Serves `key` from the next handshake on.
    pub fn set(&self, key: Arc<CertifiedKey>) {
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Some(key);
        self.loaded.send_replace(true);
    }

    /// Serves the PEM certificate chain and key; `Ok(false)` if that chain is already served.
    pub fn set_pem(&self, cert_pem: &[u8], key_pem: &[u8]) -> Result<bool, CertError> {
        use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
        let chain = CertificateDer::pem_slice_iter(cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| CertError::Invalid { what: "tls.crt", why: e.to_string() })?;
        if chain.is_empty() {
            return Err(CertError::Invalid { what: "tls.crt", why: "no certificate".into() });
        }
        if self.current().is_some_and(|c| c.cert == chain) {
            return Ok(false);
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem)
            .map_err(|e| CertError::Invalid { what: "tls.key", why: e.to_string() })?;
        let certified = CertifiedKey::from_der(chain, key, &rustls::crypto::aws_lc_rs::default_provider())?;
        self.set(Arc::new(certified));
        Ok(true)
    }

    /// What is served now.
    pub fn current(&self) -> Option<Arc<CertifiedKey>> {
        self.current.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Becomes `true` once a certificate is loaded (readiness waits for it).
    pub fn loaded(&self) -> watch::Receiver<bool> {
        self.loaded.subscribe()
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // None aborts the handshake: no certificate yet means no service yet.
        self.current()
    }
}

/// The TLS configuration: aws-lc-rs, TLS 1.2/1.3, HTTP/1.1 (what kube-apiserver speaks to
/// webhooks), certificate from `resolver`.
pub fn tls_config(resolver: Arc<CertResolver>) -> Result<Arc<rustls::ServerConfig>, CertError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn respond(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, http::HeaderValue::from_static(content_type));
    resp
}

/// One HTTP request: routing, the body limit, the handler.
async fn route(req: Request<Incoming>, handler: Handler) -> Result<Response<Full<Bytes>>, Infallible> {
    let text = "text/plain; charset=utf-8";
    let resp = match (req.method(), req.uri().path()) {
        (&Method::POST, MUTATE_PATH) => {
            let declared = req
                .headers()
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            if declared.is_some_and(|n| n > MAX_BODY as u64) {
                respond(StatusCode::PAYLOAD_TOO_LARGE, text, "request body exceeds 3 MiB\n")
            } else {
                match Limited::new(req.into_body(), MAX_BODY).collect().await {
                    Ok(body) => respond(StatusCode::OK, "application/json", handler(&body.to_bytes())),
                    Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                        respond(StatusCode::PAYLOAD_TOO_LARGE, text, "request body exceeds 3 MiB\n")
                    }
                    Err(e) => {
                        debug!(error = %e, "webhook request body not read");
                        respond(StatusCode::BAD_REQUEST, text, "cannot read request body\n")
                    }
                }
            }
        }
        (&Method::GET, "/healthz") => respond(StatusCode::OK, text, "ok"),
        (_, MUTATE_PATH | "/healthz") => respond(StatusCode::METHOD_NOT_ALLOWED, text, "method not allowed\n"),
        _ => respond(StatusCode::NOT_FOUND, text, "not found\n"),
    };
    Ok(resp)
}

/// Serves one accepted TCP connection: TLS handshake (bounded), then HTTP/1.1 with keep-alive
/// until the client leaves or shutdown asks it to finish its current request.
async fn connection(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    acceptor: tokio_rustls::TlsAcceptor,
    handler: Handler,
    shutdown: CancellationToken,
) {
    let tls = tokio::select! {
        r = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)) => match r {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                debug!(%peer, error = %e, "webhook TLS handshake failed");
                return;
            }
            Err(_) => {
                debug!(%peer, "webhook TLS handshake timed out");
                return;
            }
        },
        () = shutdown.cancelled() => return,
    };
    let service = hyper::service::service_fn(move |req| route(req, handler.clone()));
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT).keep_alive(true);
    let conn = builder.serve_connection(TokioIo::new(tls), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        () = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        debug!(%peer, error = %e, "webhook connection ended with an error");
    }
}

/// Binds the webhook address (port 0 picks one; `local_addr` tells which).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Accepts connections on `listener` until `shutdown`, each in its own task, then waits (up to
/// 10 s) for in-flight requests to finish.
pub async fn serve(
    listener: TcpListener,
    resolver: Arc<CertResolver>,
    handler: Handler,
    shutdown: CancellationToken,
) -> Result<(), CertError> {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls_config(resolver)?);
    let local = listener.local_addr().ok();
    info!(addr = ?local, path = MUTATE_PATH, "serving the admission webhook");
    let mut conns = JoinSet::new();
    loop {
        while conns.try_join_next().is_some() {}
        let accepted = tokio::select! {
            r = listener.accept() => r,
            () = shutdown.cancelled() => break,
        };
        match accepted {
            Ok((tcp, peer)) => {
                let _ = tcp.set_nodelay(true);
                conns.spawn(connection(tcp, peer, acceptor.clone(), handler.clone(), shutdown.clone()));
            }
            Err(e) => {
                // Out of file descriptors and the like: pause rather than spin.
                warn!(error = %e, "webhook accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, async { while conns.join_next().await.is_some() {} }).await.is_err() {
        warn!(connections = conns.len(), "webhook connections still open at shutdown; closing them");
        conns.abort_all();
    }
    Ok(())
}

/// Where the serving certificate comes from.
#[derive(Debug, Clone)]
pub enum CertSource {
    /// `tls.crt`/`tls.key` in a directory (a mounted cert-manager Secret), re-read every `poll`.
    Dir {
        /// The directory.
        path: PathBuf,
        /// Re-read period.
        poll: Duration,
    },
    /// A CA and certificate omniscale creates and rotates itself, shared through a Secret.
    SelfManaged(SelfManagedConfig),
}

/// Everything the webhook needs to run.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// Listen address.
    pub addr: SocketAddr,
    /// Certificate source.
    pub certs: CertSource,
}

impl WebhookConfig {
    /// From `omniscale run` flags; `None` under `--disable-webhook`.
    pub fn from_args(args: &RunArgs) -> Option<Self> {
        if args.disable_webhook {
            return None;
        }
        let certs = match &args.webhook_cert_dir {
            Some(path) => CertSource::Dir { path: path.clone(), poll: Duration::from_secs(30) },
            None => CertSource::SelfManaged(SelfManagedConfig {
                namespace: args.pod_namespace.clone(),
                secret: args.webhook_secret.clone(),
                service: args.webhook_service.clone(),
                webhook_config: args.webhook_config.clone(),
                policy: CertPolicy::default(),
                recheck: Duration::from_secs(60),
            }),
        };
        Some(Self { addr: args.webhook_addr, certs })
    }
}

/// The running webhook: its tasks and what readiness needs to know.
#[derive(Debug)]
pub struct Webhook {
    /// The bound address, once bound.
    pub bound: watch::Receiver<Option<SocketAddr>>,
    /// The served certificate.
    pub resolver: Arc<CertResolver>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Webhook {
    /// Resolves `true` once the port is bound and a certificate is loaded (`false` if the
    /// webhook stopped first). Owned, so a readiness task can hold it.
    pub fn ready(&self) -> impl std::future::Future<Output = bool> + Send + 'static {
        let (mut bound, mut loaded) = (self.bound.clone(), self.resolver.loaded());
        async move { bound.wait_for(Option::is_some).await.is_ok() && loaded.wait_for(|l| *l).await.is_ok() }
    }

    /// Waits for the server and the certificate task to stop (after shutdown).
    pub async fn stopped(self) {
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// Starts the webhook: the server (binding `config.addr`, retried with backoff if it is taken)
/// and the certificate task. Runs until `shutdown`. `clock` times certificate decisions; it must
/// be the wall clock in production, since TLS peers check validity against theirs.
pub fn start(
    client: Client,
    config: WebhookConfig,
    handler: Handler,
    clock: Clock,
    shutdown: CancellationToken,
) -> Webhook {
    let resolver = Arc::new(CertResolver::default());
    let (bound_tx, bound) = watch::channel(None);
    let server = {
        let (resolver, shutdown) = (resolver.clone(), shutdown.clone());
        tokio::spawn(async move {
            let mut backoff = maintain::Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
            let listener = loop {
                match bind(config.addr).await {
                    Ok(l) => break l,
                    Err(e) => {
                        let wait = backoff.next_delay();
                        error!(addr = %config.addr, error = %e, retry_in = ?wait, "cannot bind the webhook port");
                        tokio::select! {
                            () = shutdown.cancelled() => return,
                            () = tokio::time::sleep(wait) => {}
                        }
                    }
                }
            };
            bound_tx.send_replace(listener.local_addr().ok());
            if let Err(e) = serve(listener, resolver, handler, shutdown).await {
                error!(error = %e, "admission webhook server failed");
            }
        })
    };
    let certs = match config.certs {
        CertSource::Dir { path, poll } => tokio::spawn(maintain::watch_dir(path, poll, resolver.clone(), shutdown)),
        CertSource::SelfManaged(cfg) => {
            let m = SelfManaged::new(client, cfg);
            tokio::spawn(m.run(resolver.clone(), clock, shutdown))
        }
    };
    Webhook { bound, resolver, tasks: vec![server, certs] }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_all_echoes_the_uid_and_allows_garbage() {
        let body = br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview",
            "request":{"uid":"705ab4f5-6393-11e8-b7cc-42010a800002","object":{"kind":"Pod"}}}"#;
        let out: serde_json::Value = serde_json::from_slice(&allow_all(body)).unwrap();
        assert_eq!(
            out,
            serde_json::json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                "response": {"uid": "705ab4f5-6393-11e8-b7cc-42010a800002", "allowed": true}})
        );
        for garbage in [&b"not json"[..], b"{}", b"{\"request\":{\"uid\":5}}", b""] {
            let out: serde_json::Value = serde_json::from_slice(&allow_all(garbage)).unwrap();
            assert_eq!(out["response"], serde_json::json!({"uid": "", "allowed": true}));
        }
    }

    #[test]
    fn the_resolver_swaps_certificates_in_place() {
        let names = vec!["a.ns.svc".to_string()];
        let now = jiff::Timestamp::now();
        let a = certs::generate(&names, now, &CertPolicy::default()).unwrap();
        let b = certs::generate(&names, now, &CertPolicy::default()).unwrap();
        let r = CertResolver::default();
        let loaded = r.loaded();
        assert!(r.current().is_none() && !*loaded.borrow());
        assert!(r.set_pem(a.cert.as_bytes(), a.key.as_bytes()).unwrap());
        assert!(*loaded.borrow());
        let der = |m: &certs::Material| certs::parse_pem_certs(m.cert.as_bytes(), "tls.crt").unwrap()[0].der.clone();
        assert_eq!(r.current().unwrap().cert[0].as_ref(), der(&a).as_slice());
        assert!(!r.set_pem(a.cert.as_bytes(), a.key.as_bytes()).unwrap(), "same certificate: no swap");
        assert!(r.set_pem(b.cert.as_bytes(), b.key.as_bytes()).unwrap());
        assert_eq!(r.current().unwrap().cert[0].as_ref(), der(&b).as_slice());
        // A key that does not match is refused and the served certificate stays.
        assert!(r.set_pem(a.cert.as_bytes(), b.key.as_bytes()).is_err());
        assert_eq!(r.current().unwrap().cert[0].as_ref(), der(&b).as_slice());
    }
}
