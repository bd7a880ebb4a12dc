//! Keeping the webhook's certificate fresh, in either mode.
//!
//! **Self-managed** ([`SelfManaged`]): every replica runs the same loop, and they agree through
//! one Secret in the operator's namespace, so all replicas serve one certificate from one CA. A
//! pass reads the Secret, decides with the pure rules of [`super::certs`], writes with
//! optimistic concurrency (create → 409 means another replica won: re-read; replace carries the
//! resourceVersion read → 409: re-read), publishes the CA bundle into every webhook of the
//! MutatingWebhookConfiguration (get-modify-replace with resourceVersion: JSON merge patch
//! cannot address list items), and serves the Secret's certificate. A serving certificate from
//! a new CA is only ever written after that CA is published, so no replica serves a certificate
//! the API server does not trust yet.
//!
//! **cert-manager** ([`watch_dir`]): `tls.crt`/`tls.key` from a mounted Secret, re-read
//! periodically; cert-manager's CA injector fills the caBundle.

use std::{path::PathBuf, sync::Arc, time::Duration};

use jiff::Timestamp;
use k8s_openapi::{
    ByteString,
    api::{admissionregistration::v1::MutatingWebhookConfiguration, core::v1::Secret},
};
use kube::{
    Api, Client,
    api::{ObjectMeta, PostParams},
};
use omniscale_api::clock::Clock;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{
    CertResolver,
    certs::{self, Action, CertInfo, CertPolicy, Inspected, Material},
};
use crate::{Error, Result};

/// Field manager of every write.
const MANAGER: &str = "omniscale";
/// Writes per pass before giving up (each conflict or action is one).
const MAX_WRITES: usize = 8;

/// Exponential backoff for retried errors.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// Starts at `first`, doubling up to `max`.
    pub fn new(first: Duration, max: Duration) -> Self {
        Self { first, max, next: first }
    }

    /// The delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }

    /// After a success.
    pub fn reset(&mut self) {
        self.next = self.first;
    }
}

/// Settings of self-managed certificates.
#[derive(Debug, Clone)]
pub struct SelfManagedConfig {
    /// The operator's namespace (the Secret's and the Service's).
    pub namespace: String,
    /// Secret holding CA and serving certificate.
    pub secret: String,
    /// The webhook Service (certificate names derive from it).
    pub service: String,
    /// MutatingWebhookConfiguration whose webhooks get the CA bundle.
    pub webhook_config: String,
    /// Validities and renewal windows.
    pub policy: CertPolicy,
    /// Pause between passes when nothing is due (how fast a replica notices another's rotation).
    pub recheck: Duration,
}

impl SelfManagedConfig {
    /// The names the API server may use for the Service: `<svc>.<ns>.svc` (what it dials),
    /// the cluster-local FQDN and `<svc>.<ns>`.
    pub fn dns_names(&self) -> Vec<String> {
        let base = format!("{}.{}", self.service, self.namespace);
        vec![format!("{base}.svc"), format!("{base}.svc.cluster.local"), base]
    }
}

/// A bundle's certificates as a set (sorted DER), for order-insensitive comparison.
fn sorted_ders(v: &[CertInfo]) -> Vec<&[u8]> {
    let mut d: Vec<&[u8]> = v.iter().map(|c| c.der.as_slice()).collect();
    d.sort_unstable();
    d
}

/// Whether the caBundle reached the webhook configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Published {
    /// Every webhook already had it.
    Unchanged,
    /// The configuration was updated.
    Updated,
    /// No such MutatingWebhookConfiguration (not installed yet): nothing to protect.
    Missing,
}

/// What one pass did.
#[derive(Debug, Clone)]
pub struct Pass {
    /// Writes made to the Secret, in order (conflicts excluded).
    pub actions: Vec<Action>,
    /// The material now stored and served.
    pub material: Material,
    /// Outcome of the last caBundle publication.
    pub published: Published,
    /// When the next renewal falls due.
    pub next_due: Timestamp,
}

/// Self-managed certificates for one replica (cheap to clone; replicas share nothing but the
/// cluster).
#[derive(Debug, Clone)]
pub struct SelfManaged {
    secrets: Api<Secret>,
    configs: Api<MutatingWebhookConfiguration>,
    config: SelfManagedConfig,
    names: Vec<String>,
}

fn pp() -> PostParams {
    PostParams { field_manager: Some(MANAGER.into()), ..PostParams::default() }
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

fn text(secret: &Secret, key: &str) -> String {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|b| String::from_utf8_lossy(&b.0).into_owned())
        .unwrap_or_default()
}

/// The certificate material stored in a Secret (missing keys read as empty).
pub fn material_of(secret: &Secret) -> Material {
    Material {
        ca_bundle: text(secret, certs::CA_CRT),
        ca_key: text(secret, certs::CA_KEY),
        cert: text(secret, certs::TLS_CRT),
        key: text(secret, certs::TLS_KEY),
    }
}

impl SelfManaged {
    /// Talks to the cluster through `client`.
    pub fn new(client: Client, config: SelfManagedConfig) -> Self {
        Self {
            secrets: Api::namespaced(client.clone(), &config.namespace),
            configs: Api::all(client),
            names: config.dns_names(),
            config,
        }
    }

    /// The certificate names.
    pub fn dns_names(&self) -> &[String] {
        &self.names
    }

    async fn read(&self) -> Result<Option<Secret>> {
        Ok(self.secrets.get_opt(&self.config.secret).await?)
    }

    /// Creates (no `current`) or replaces (`current`'s resourceVersion) the Secret; `None` on a
    /// conflict, i.e. another replica wrote first.
    async fn write(&self, current: Option<&Secret>, m: &Material) -> Result<Option<Secret>> {
        let data = [
            (certs::TLS_CRT, &m.cert),
            (certs::TLS_KEY, &m.key),
            (certs::CA_CRT, &m.ca_bundle),
            (certs::CA_KEY, &m.ca_key),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
        .collect();
        let labels = [
            ("app.kubernetes.io/name".to_string(), "omniscale".to_string()),
            ("app.kubernetes.io/component".to_string(), "webhook".to_string()),
        ]
        .into();
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(self.config.secret.clone()),
                namespace: Some(self.config.namespace.clone()),
                labels: Some(labels),
                resource_version: current.and_then(|c| c.metadata.resource_version.clone()),
                ..ObjectMeta::default()
            },
            // The type is immutable: keep whatever an existing Secret has.
            type_: current.and_then(|c| c.type_.clone()).or_else(|| Some("kubernetes.io/tls".into())),
            data: Some(data),
            ..Secret::default()
        };
        let written = match current {
            None => self.secrets.create(&pp(), &secret).await,
            Some(_) => self.secrets.replace(&self.config.secret, &pp(), &secret).await,
        };
        match written {
            Ok(s) => Ok(Some(s)),
            Err(e) if is_conflict(&e) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Makes every webhook of the configuration trust `bundle` (see
    /// [`certs::bundle_to_publish`] for the one exception).
    pub async fn publish(&self, bundle: &[CertInfo], now: Timestamp) -> Result<Published> {
        let name = &self.config.webhook_config;
        for _ in 0..MAX_WRITES {
            let Some(mut mwc) = self.configs.get_opt(name).await? else {
                debug!(config = %name, "MutatingWebhookConfiguration not found; caBundle not published");
                return Ok(Published::Missing);
            };
            let mut changed = false;
            for w in mwc.webhooks.iter_mut().flatten() {
                let current = w.client_config.ca_bundle.as_ref().map(|b| b.0.as_slice()).unwrap_or_default();
                let published = certs::parse_pem_certs(current, "caBundle").unwrap_or_default();
                let want = certs::bundle_to_publish(bundle, &published, now);
                // The same CAs in another order trust the same: no write (replicas with views
                // a rotation apart would otherwise reorder the bundle back and forth).
                let same = sorted_ders(&want) == sorted_ders(&published)
                    && certs::bundle_pem(&published).as_bytes() == current;
                if !same {
                    w.client_config.ca_bundle = Some(ByteString(certs::bundle_pem(&want).into_bytes()));
                    changed = true;
                }
            }
            if !changed {
                return Ok(Published::Unchanged);
            }
            // `mwc` carries the resourceVersion it was read at: a concurrent change is a 409.
            match self.configs.replace(name, &pp(), &mwc).await {
                Ok(_) => {
                    info!(config = %name, cas = bundle.len(), "published the webhook CA bundle");
                    return Ok(Published::Updated);
                }
                Err(e) if is_conflict(&e) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::Webhook(format!("MutatingWebhookConfiguration {name} kept changing; caBundle not published")))
    }

    /// One pass at `now`: bring the Secret up to date, publish its CA bundle, serve its
    /// certificate.
    pub async fn reconcile(&self, resolver: &CertResolver, now: Timestamp) -> Result<Pass> {
        let policy = &self.config.policy;
        let mut secret = self.read().await?;
        let mut actions = Vec::new();
        for _ in 0..MAX_WRITES {
            let stored = match secret.as_ref().map(|s| certs::inspect(&material_of(s))) {
                None => None,
                Some(Ok(i)) => Some(i),
                Some(Err(e)) => {
                    let secret = &self.config.secret;
                    warn!(%secret, error = %e, "webhook certificate Secret is unusable; replacing it");
                    None
                }
            };
            if let Some(s) = &stored {
                // What is stored was written only after its CA was published: safe to serve
                // while anything else is sorted out.
                self.serve(resolver, s)?;
            }
            let action = certs::decide(stored.as_ref(), &self.names, now, policy);
            let inspected = match (&action, stored) {
                (Action::Keep, Some(s)) => {
                    let published = self.publish(&s.bundle, now).await?;
                    let next_due = certs::next_due(&s, policy);
                    return Ok(Pass { actions, material: s.material, published, next_due });
                }
                (Action::IssueServing(_), Some(s)) => {
                    // The new certificate comes from the signing CA: clients must trust it first.
                    self.publish(&s.bundle, now).await?;
                    Some(s)
                }
                (_, s) => s,
            };
            let next = certs::apply(&action, inspected.as_ref(), &self.names, now, policy)?;
            match self.write(secret.as_ref(), &next).await? {
                Some(written) => {
                    info!(secret = %self.config.secret, action = ?action, "webhook certificate Secret updated");
                    actions.push(action);
                    secret = Some(written);
                }
                None => {
                    debug!(secret = %self.config.secret, "another replica wrote the webhook Secret first; re-reading");
                    secret = self.read().await?;
                }
            }
        }
        Err(Error::Webhook(format!("Secret {} kept changing; try again", self.config.secret)))
    }

    fn serve(&self, resolver: &CertResolver, s: &Inspected) -> Result<()> {
        if resolver.set_pem(s.material.cert.as_bytes(), s.material.key.as_bytes())? {
            info!(
                not_after = %s.leaf.not_after,
                ca = %s.signing_ca().common_name,
                "serving webhook certificate from Secret {}", self.config.secret
            );
        }
        Ok(())
    }

    /// Runs passes until `shutdown`: every `recheck`, sooner when a renewal falls due, with
    /// backoff (1 s doubling to 1 min) after errors.
    pub async fn run(self, resolver: Arc<CertResolver>, clock: Clock, shutdown: CancellationToken) {
        if let Err(e) = self.config.policy.validate() {
            warn!(error = %e, "webhook certificates are not maintained");
            return;
        }
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        loop {
            let now = clock.now();
            let wait = match self.reconcile(&resolver, now).await {
                Ok(pass) => {
                    backoff.reset();
                    let until_due = pass.next_due.duration_since(now);
                    let until_due = if until_due.is_positive() {
                        clock.wall_duration(until_due.unsigned_abs())
                    } else {
                        Duration::ZERO
                    };
                    until_due.max(Duration::from_secs(1)).min(self.config.recheck)
                }
                Err(e) => {
                    let wait = backoff.next_delay();
                    warn!(error = %e, retry_in = ?wait, "webhook certificate maintenance failed");
                    wait
                }
            };
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
        }
    }
}

/// cert-manager mode: serves `dir/tls.crt` + `dir/tls.key`, re-reading them every `poll` and
/// swapping when their content changes (kubelet updates a mounted Secret by swapping a
/// symlink, so content is what to compare; a half-written pair fails to load and is retried).
pub async fn watch_dir(dir: PathBuf, poll: Duration, resolver: Arc<CertResolver>, shutdown: CancellationToken) {
    let (crt, key) = (dir.join(certs::TLS_CRT), dir.join(certs::TLS_KEY));
    let mut last: Option<(Vec<u8>, Vec<u8>)> = None;
    let mut backoff = Backoff::new(Duration::from_millis(500), poll);
    loop {
        // Two small local files every `poll`: a blocking read is cheaper than a thread hop.
        let wait = match (std::fs::read(&crt), std::fs::read(&key)) {
            (Ok(c), Ok(k)) if last.as_ref().is_some_and(|(lc, lk)| *lc == c && *lk == k) => poll,
            (Ok(c), Ok(k)) => match resolver.set_pem(&c, &k) {
                Ok(_) => {
                    let not_after = certs::parse_pem_certs(&c, "tls.crt").ok().map(|v| v[0].not_after.to_string());
                    info!(dir = %dir.display(), not_after = ?not_after, "serving webhook certificate from files");
                    last = Some((c, k));
                    backoff.reset();
                    poll
                }
                Err(e) => {
                    let wait = backoff.next_delay();
                    warn!(dir = %dir.display(), error = %e, retry_in = ?wait, "cannot load webhook certificate files");
                    wait
                }
            },
            (Err(e), _) | (_, Err(e)) => {
                let wait = backoff.next_delay();
                warn!(dir = %dir.display(), error = %e, retry_in = ?wait, "cannot read webhook certificate files");
                wait
            }
        };
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(5));
        let got: Vec<u64> = (0..5).map(|_| b.next_delay().as_secs()).collect();
        assert_eq!(got, [1, 2, 4, 5, 5]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_secs(1));
    }

    #[test]
    fn names_cover_how_the_service_is_addressed() {
        let c = SelfManagedConfig {
            namespace: "omniscale-system".into(),
            secret: "s".into(),
            service: "omniscale-webhook".into(),
            webhook_config: "omniscale".into(),
            policy: CertPolicy::default(),
            recheck: Duration::from_secs(60),
        };
        assert_eq!(
            c.dns_names(),
            [
                "omniscale-webhook.omniscale-system.svc",
                "omniscale-webhook.omniscale-system.svc.cluster.local",
                "omniscale-webhook.omniscale-system"
            ]
        );
    }
}
