//! A real Kubernetes control plane on loopback: etcd, kube-apiserver and, where wanted,
//! kube-controller-manager and kube-scheduler, started from a directory of release binaries with
//! freshly generated certificates, and torn down with the process that started it.
//!
//! This is omniscale's envtest: the simulator is fast but it is not kube-apiserver, and the two
//! have disagreed (a CRD the simulator accepted was rejected by the real server's CEL cost
//! budget). Tests that must hold on a real cluster run here: RBAC is enforced, admission
//! webhooks and aggregated APIs are called by kube-apiserver itself, Deployments are rolled out
//! by the real controllers and pods placed by the real scheduler. Nothing runs pods: the
//! simulated world (`omniscale_sim::remote`) acts as the kubelets.
//!
//! The binaries come from `OMNISCALE_KUBE_ASSETS`, or `KUBEBUILDER_ASSETS` (setup-envtest's
//! layout: etcd, kube-apiserver, kubectl; controller manager and scheduler where present).
//! Without either, [`ControlPlane::shared`] returns `None` and the tests that need it skip.
//!
//! Processes are started through a small shell guard that stops them when this process's end of
//! a pipe closes, so a test binary that exits (or panics, or is killed) never leaves a control
//! plane behind, although the shared instance lives in a `static` that is never dropped.

mod certs;
mod process;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use process::Guarded;

/// What can go wrong starting or using a control plane.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A binary the caller asked for is not in the assets directory.
    #[error("{0} not found in {1} (set OMNISCALE_KUBE_ASSETS to a directory holding it)")]
    MissingBinary(&'static str, PathBuf),
    /// Starting a process or writing its files failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        source: std::io::Error,
    },
    /// Certificates could not be generated.
    #[error("generating certificates: {0}")]
    Certs(#[from] rcgen::Error),
    /// A component did not become ready; the tail of its log says why.
    #[error("{component} did not become ready within {seconds}s; last log lines:\n{log}")]
    NotReady {
        /// Which component.
        component: &'static str,
        /// How long it was given.
        seconds: u64,
        /// The end of its log.
        log: String,
    },
    /// A Kubernetes API call failed.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// The generated kubeconfig could not be loaded.
    #[error("kubeconfig: {0}")]
    Kubeconfig(#[from] kube::config::KubeconfigError),
    /// The audit log holds a line that is not JSON.
    #[error("audit log: {0}")]
    Audit(#[from] serde_json::Error),
    /// Something else went wrong, said in words.
    #[error("{0}")]
    Other(String),
}

/// Results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |source| Error::Io { what, source }
}

/// The environment variables that name an assets directory, in the order they are read.
pub const ASSETS_VARIABLES: [&str; 2] = ["OMNISCALE_KUBE_ASSETS", "KUBEBUILDER_ASSETS"];

/// A directory of Kubernetes binaries.
#[derive(Clone, Debug)]
pub struct Assets {
    dir: PathBuf,
}

impl Assets {
    /// The directory named by `OMNISCALE_KUBE_ASSETS` or `KUBEBUILDER_ASSETS`, if either is set.
    pub fn from_env() -> Option<Assets> {
        ASSETS_VARIABLES
            .iter()
            .filter_map(std::env::var_os)
            .find(|v| !v.is_empty())
            .map(|dir| Assets { dir: PathBuf::from(dir) })
    }

    /// Binaries in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Assets {
        Assets { dir: dir.into() }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Path of `name` in the directory, if it is there.
    pub fn binary(&self, name: &'static str) -> Result<PathBuf> {
        let p = self.dir.join(name);
        if p.is_file() { Ok(p) } else { Err(Error::MissingBinary(name, self.dir.clone())) }
    }

    /// Whether every binary `options` needs is present.
    pub fn serves(&self, options: &Options) -> bool {
        options.binaries().iter().all(|b| self.binary(b).is_ok())
    }
}

/// Which components to run, and extra flags for them.
#[derive(Clone, Debug)]
pub struct Options {
    /// Run kube-controller-manager (Deployments, ReplicaSets, garbage collection, HPA, service
    /// accounts, node lifecycle...).
    pub controller_manager: bool,
    /// Run kube-scheduler.
    pub scheduler: bool,
    /// Extra kube-apiserver flags.
    pub apiserver_args: Vec<String>,
    /// Extra kube-controller-manager flags (e.g. `--horizontal-pod-autoscaler-sync-period=5s`).
    pub controller_manager_args: Vec<String>,
    /// Audit-log requests of service accounts in these namespaces (metadata level), for tests
    /// that check which API calls a component made and with what result.
    pub audit_namespaces: Vec<String>,
}

impl Default for Options {
    /// Everything: API server, controller manager and scheduler, auditing `omniscale-system`.
    fn default() -> Self {
        Options {
            controller_manager: true,
            scheduler: true,
            apiserver_args: Vec::new(),
            controller_manager_args: Vec::new(),
            audit_namespaces: vec!["omniscale-system".into()],
        }
    }
}

impl Options {
    /// etcd and kube-apiserver only (setup-envtest's assets suffice).
    pub fn api_server_only() -> Options {
        Options { controller_manager: false, scheduler: false, ..Options::default() }
    }

    fn binaries(&self) -> Vec<&'static str> {
        let mut b = vec!["etcd", "kube-apiserver", "kubectl"];
        if self.controller_manager {
            b.push("kube-controller-manager");
        }
        if self.scheduler {
            b.push("kube-scheduler");
        }
        b
    }
}

/// A running control plane.
#[derive(Debug)]
pub struct ControlPlane {
    assets: Assets,
    dir: PathBuf,
    url: String,
    kubeconfig: PathBuf,
    ca_pem: String,
    audit_log: Option<PathBuf>,
    processes: Vec<Guarded>,
    /// Removes `dir` once every process is gone.
    _cleanup: Guarded,
}

static SHARED: OnceLock<std::result::Result<Option<ControlPlane>, String>> = OnceLock::new();
static SKIP_NOTED: OnceLock<()> = OnceLock::new();

impl ControlPlane {
    /// This process's control plane, started on first use with `options` (later callers get the
    /// same one, whatever they pass), or `None` when no assets directory is configured or it
    /// lacks a binary `options` need. One per test binary keeps a suite within minutes: each
    /// test takes a namespace of its own ([`ControlPlane::namespace`]).
    ///
    /// # Panics
    /// Never; a control plane that fails to start is an error for every caller.
    pub fn shared(options: Options) -> Result<Option<&'static ControlPlane>> {
        let started = SHARED.get_or_init(|| match Assets::from_env() {
            Some(assets) if assets.serves(&options) => {
                ControlPlane::start(assets, options).map(Some).map_err(|e| e.to_string())
            }
            found => {
                note_skip(found.as_ref(), &options);
                Ok(None)
            }
        });
        match started {
            Ok(cp) => Ok(cp.as_ref()),
            Err(e) => Err(Error::Other(format!("the shared control plane failed to start: {e}"))),
        }
    }

    /// Starts a control plane of its own (stopped when dropped).
    pub fn start(assets: Assets, options: Options) -> Result<ControlPlane> {
        let begun = Instant::now();
        let dir = std::env::temp_dir().join(format!("omniscale-kube-{}-{}", std::process::id(), nanos_now()));
        std::fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
        let cleanup = process::cleanup(&dir).map_err(io("starting the cleanup guard"))?;
        let port = free_port().map_err(io("finding a free port"))?;
        let url = format!("https://127.0.0.1:{port}");
        let material = certs::generate()?;
        let files = material.write(&dir).map_err(io(format!("writing certificates to {}", dir.display())))?;
        let kubeconfig = dir.join("admin.kubeconfig");
        let admin = admin_kubeconfig(&url, &files);
        std::fs::write(&kubeconfig, &admin).map_err(io("writing the kubeconfig"))?;

        let mut processes = Vec::new();
        let etcd_url = etcd(&assets)?;
        let audit_log = (!options.audit_namespaces.is_empty()).then(|| dir.join("audit.log"));
        let mut args = vec![
            format!("--etcd-servers={etcd_url}"),
            // Its own keyspace: an etcd another test binary started can be shared safely.
            format!("--etcd-prefix=/omniscale-{}", dir.file_name().and_then(|n| n.to_str()).unwrap_or("x")),
            "--bind-address=127.0.0.1".into(),
            format!("--secure-port={port}"),
            // Endpoints validation rejects loopback, and without an address it picks a NIC.
            "--advertise-address=127.0.0.1".into(),
            "--endpoint-reconciler-type=none".into(),
            format!("--tls-cert-file={}", files.serving_cert.display()),
            format!("--tls-private-key-file={}", files.serving_key.display()),
            format!("--client-ca-file={}", files.ca_cert.display()),
            format!("--service-account-key-file={}", files.sa_public.display()),
            format!("--service-account-signing-key-file={}", files.sa_private.display()),
            "--service-account-issuer=https://kubernetes.default.svc".into(),
            "--authorization-mode=Node,RBAC".into(),
            "--service-cluster-ip-range=10.0.0.0/24".into(),
            format!("--requestheader-client-ca-file={}", files.front_proxy_ca.display()),
            "--requestheader-allowed-names=front-proxy-client".into(),
            "--requestheader-username-headers=X-Remote-User".into(),
            "--requestheader-group-headers=X-Remote-Group".into(),
            "--requestheader-extra-headers-prefix=X-Remote-Extra-".into(),
            format!("--proxy-client-cert-file={}", files.front_proxy_cert.display()),
            format!("--proxy-client-key-file={}", files.front_proxy_key.display()),
        ];
        if let Some(log) = &audit_log {
            let policy = dir.join("audit-policy.yaml");
            std::fs::write(&policy, audit_policy(&options.audit_namespaces)).map_err(io("writing the audit policy"))?;
            args.push(format!("--audit-policy-file={}", policy.display()));
            args.push(format!("--audit-log-path={}", log.display()));
            // Every request reaches the file at once, so a test can read it right after acting.
            args.push("--audit-log-mode=blocking".into());
        }
        args.extend(options.apiserver_args.iter().cloned());
        processes.push(Guarded::spawn("kube-apiserver", &assets.binary("kube-apiserver")?, &args, &dir)?);
        let cp_partial = Partial { assets: &assets, kubeconfig: &kubeconfig };
        cp_partial.wait_ready(&processes[processes.len() - 1], Duration::from_secs(60))?;

        if options.controller_manager {
            let args = [
                format!("--kubeconfig={}", kubeconfig.display()),
                "--secure-port=0".into(),
                "--leader-elect=false".into(),
                "--use-service-account-credentials=true".into(),
                format!("--root-ca-file={}", files.ca_cert.display()),
                format!("--service-account-private-key-file={}", files.sa_private.display()),
                format!("--cluster-signing-cert-file={}", files.ca_cert.display()),
                format!("--cluster-signing-key-file={}", files.ca_key.display()),
                "--controllers=*".into(),
            ]
            .into_iter()
            .chain(options.controller_manager_args.iter().cloned())
            .collect::<Vec<_>>();
            processes.push(Guarded::spawn(
                "kube-controller-manager",
                &assets.binary("kube-controller-manager")?,
                &args,
                &dir,
            )?);
        }
        if options.scheduler {
            let args = [
                format!("--kubeconfig={}", kubeconfig.display()),
                "--secure-port=0".into(),
                "--leader-elect=false".into(),
            ];
            processes.push(Guarded::spawn("kube-scheduler", &assets.binary("kube-scheduler")?, &args, &dir)?);
        }
        let cp = ControlPlane {
            assets,
            dir,
            url,
            kubeconfig,
            ca_pem: material.ca_pem,
            audit_log,
            processes,
            _cleanup: cleanup,
        };
        if options.controller_manager {
            // Pods cannot be created in a namespace before its `default` ServiceAccount exists;
            // the controller manager makes them. Waiting for the first one here means tests
            // wait only for their own namespace's.
            cp.wait_for_default_service_account("default", Duration::from_secs(60))?;
        }
        tracing::info!(url = %cp.url, dir = %cp.dir.display(), seconds = begun.elapsed().as_secs_f64(), "control plane ready");
        Ok(cp)
    }

    /// The API server's address (`https://127.0.0.1:PORT`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The cluster CA (PEM), which signed the API server's certificate.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// A kubeconfig file with cluster-admin (`system:masters`) credentials.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The directory holding certificates, kubeconfigs and component logs (`*.log`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The binaries this control plane runs.
    pub fn assets(&self) -> &Assets {
        &self.assets
    }

    /// A cluster-admin client.
    pub async fn client(&self) -> Result<kube::Client> {
        client_from(&self.kubeconfig).await
    }

    /// `kubectl --kubeconfig <admin>`, ready for arguments.
    pub fn kubectl(&self) -> Command {
        self.kubectl_with(&self.kubeconfig)
    }

    /// `kubectl --kubeconfig <kubeconfig>` (e.g. a service account's).
    pub fn kubectl_with(&self, kubeconfig: &Path) -> Command {
        let bin = self.assets.dir.join("kubectl");
        let mut c = Command::new(bin);
        c.arg("--kubeconfig").arg(kubeconfig);
        c
    }

    /// Runs kubectl (admin) with `args`; its combined output, or an error with it.
    pub fn kubectl_ok(&self, args: &[&str]) -> Result<String> {
        let out = self.kubectl().args(args).output().map_err(io("running kubectl"))?;
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        if out.status.success() { Ok(text) } else { Err(Error::Other(format!("kubectl {}: {text}", args.join(" ")))) }
    }

    /// A fresh namespace named `<prefix>-<n>`, with its `default` ServiceAccount when the
    /// controller manager runs (so pods can be created in it at once).
    pub async fn namespace(&self, prefix: &str) -> Result<String> {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("{prefix}-{n}");
        let client = self.client().await?;
        let ns: k8s_openapi::api::core::v1::Namespace =
            serde_json::from_value(serde_json::json!({"metadata": {"name": name}}))?;
        let api: kube::Api<k8s_openapi::api::core::v1::Namespace> = kube::Api::all(client.clone());
        match api.create(&Default::default(), &ns).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
        if self.runs("kube-controller-manager") {
            let sas: kube::Api<k8s_openapi::api::core::v1::ServiceAccount> = kube::Api::namespaced(client, &name);
            let deadline = Instant::now() + Duration::from_secs(30);
            while sas.get_opt("default").await?.is_none() {
                if Instant::now() > deadline {
                    return Err(Error::Other(format!("namespace {name}: no default ServiceAccount after 30s")));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(name)
    }

    /// A kubeconfig for service account `namespace/name`, with a token from the TokenRequest
    /// API (as `kubectl create token` makes), valid for `hours`: what a pod running as that
    /// account would be allowed to do, RBAC enforced.
    pub async fn service_account_kubeconfig(&self, namespace: &str, name: &str, hours: i64) -> Result<PathBuf> {
        use k8s_openapi::api::authentication::v1::TokenRequest;
        let client = self.client().await?;
        let sas: kube::Api<k8s_openapi::api::core::v1::ServiceAccount> = kube::Api::namespaced(client, namespace);
        let request: TokenRequest =
            serde_json::from_value(serde_json::json!({"spec": {"expirationSeconds": hours * 3600, "audiences": []}}))?;
        let token = sas.create_token_request(name, &Default::default(), &request).await?;
        let token = token.status.map(|s| s.token).ok_or_else(|| Error::Other("TokenRequest without status".into()))?;
        let path = self.dir.join(format!("sa-{namespace}-{name}.kubeconfig"));
        let ca = self.dir.join(certs::CA_CERT);
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: omniscale-test\n  cluster:\n    server: {}\n    certificate-authority: {}\nusers:\n- name: {namespace}-{name}\n  user:\n    token: {token}\ncontexts:\n- name: omniscale-test\n  context: {{cluster: omniscale-test, user: {namespace}-{name}, namespace: {namespace}}}\ncurrent-context: omniscale-test\n",
            self.url,
            ca.display()
        );
        std::fs::write(&path, text).map_err(io("writing a service-account kubeconfig"))?;
        Ok(path)
    }

    /// Requests made so far by service accounts in [`Options::audit_namespaces`] (each request
    /// once, at its `ResponseComplete` stage).
    pub fn audit_events(&self) -> Result<Vec<AuditEvent>> {
        let Some(path) = &self.audit_log else { return Ok(Vec::new()) };
        let text = std::fs::read_to_string(path).map_err(io(format!("reading {}", path.display())))?;
        let mut out = Vec::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let e: AuditEvent = serde_json::from_str(line)?;
            if e.stage == "ResponseComplete" {
                out.push(e);
            }
        }
        Ok(out)
    }

    /// Routes Service `namespace/name` to this host, as the README of the assets explains: an
    /// ExternalName Service to `localhost`, whose port `port` (named `name`) kube-apiserver dials
    /// for webhooks and aggregated APIs. The serving certificate is still checked against
    /// `<name>.<namespace>.svc`.
    pub async fn route_service_to_host(&self, namespace: &str, name: &str, port: u16) -> Result<()> {
        use kube::api::{Patch, PatchParams};
        let client = self.client().await?;
        let api: kube::Api<k8s_openapi::api::core::v1::Service> = kube::Api::namespaced(client, namespace);
        let svc = serde_json::json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"type": "ExternalName", "externalName": "localhost",
                     "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}});
        api.patch(name, &PatchParams::apply("omniscale-testenv").force(), &Patch::Apply(&svc)).await?;
        Ok(())
    }

    fn runs(&self, component: &str) -> bool {
        self.processes.iter().any(|p| p.name() == component)
    }

    fn wait_for_default_service_account(&self, namespace: &str, limit: Duration) -> Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            let out = self
                .kubectl()
                .args(["get", "serviceaccount", "default", "-n", namespace, "-o", "name"])
                .output()
                .map_err(io("running kubectl"))?;
            if out.status.success() {
                return Ok(());
            }
            if let Some(dead) = self.processes.iter().find(|p| p.exited()) {
                return Err(dead.not_ready(limit));
            }
            if Instant::now() > deadline {
                let kcm = self.processes.iter().find(|p| p.name() == "kube-controller-manager");
                return Err(kcm.map(|p| p.not_ready(limit)).unwrap_or_else(|| {
                    Error::Other(format!("no default ServiceAccount in {namespace} after {}s", limit.as_secs()))
                }));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// What [`ControlPlane::start`] needs before the struct exists.
struct Partial<'a> {
    assets: &'a Assets,
    kubeconfig: &'a Path,
}

impl Partial<'_> {
    /// Polls `/readyz` through kubectl (no HTTP client needed before a runtime exists).
    fn wait_ready(&self, apiserver: &Guarded, limit: Duration) -> Result<()> {
        let deadline = Instant::now() + limit;
        let kubectl = self.assets.binary("kubectl")?;
        loop {
            let ok = Command::new(&kubectl)
                .arg("--kubeconfig")
                .arg(self.kubeconfig)
                .args(["get", "--raw", "/readyz"])
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false);
            if ok {
                return Ok(());
            }
            if apiserver.exited() || Instant::now() > deadline {
                return Err(apiserver.not_ready(limit));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// One audited request (the fields tests read).
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEvent {
    /// Audit stage; only `ResponseComplete` events are returned.
    pub stage: String,
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`...
    pub verb: String,
    /// The request path and query.
    #[serde(rename = "requestURI")]
    pub request_uri: String,
    /// Who asked.
    pub user: AuditUser,
    /// What was asked for (absent for non-resource URLs such as `/apis`).
    #[serde(default)]
    pub object_ref: Option<AuditObjectRef>,
    /// The answer.
    #[serde(default)]
    pub response_status: Option<AuditStatus>,
}

/// The user of an [`AuditEvent`].
#[derive(Clone, Debug, serde::Deserialize)]
pub struct AuditUser {
    /// e.g. `system:serviceaccount:omniscale-system:omniscale`.
    pub username: String,
}

/// The object of an [`AuditEvent`].
#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditObjectRef {
    /// Plural resource name.
    #[serde(default)]
    pub resource: String,
    /// Subresource (`status`, `scale`, `eviction`...), empty for the resource itself.
    #[serde(default)]
    pub subresource: String,
    /// API group, empty for core.
    #[serde(default)]
    pub api_group: String,
    /// Namespace, empty for cluster-scoped objects.
    #[serde(default)]
    pub namespace: String,
    /// Object name, empty for collections.
    #[serde(default)]
    pub name: String,
}

/// The response of an [`AuditEvent`].
#[derive(Clone, Debug, serde::Deserialize)]
pub struct AuditStatus {
    /// HTTP status code.
    #[serde(default)]
    pub code: u16,
}

fn note_skip(found: Option<&Assets>, options: &Options) {
    if SKIP_NOTED.set(()).is_err() {
        return;
    }
    let why = match found {
        None => format!("neither {} is set", ASSETS_VARIABLES.join(" nor ")),
        Some(a) => format!(
            "{} lacks one of {}",
            a.dir.display(),
            options.binaries().iter().filter(|b| a.binary(b).is_err()).copied().collect::<Vec<_>>().join(", ")
        ),
    };
    // Printed once per test binary; `scripts/test` prints the one-line summary for the run.
    eprintln!("real-API-server tests skipped: {why} (see README, \"Tests\")");
}

fn nanos_now() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
}

/// A loopback port nothing listens on right now.
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port())
}

/// A kube client from a kubeconfig file (installing the process's rustls provider if none is).
pub async fn client_from(kubeconfig: &Path) -> Result<kube::Client> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(kubeconfig)?,
        &kube::config::KubeConfigOptions::default(),
    )
    .await?;
    Ok(kube::Client::try_from(config)?)
}

fn admin_kubeconfig(url: &str, files: &certs::Files) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: omniscale-test\n  cluster:\n    server: {url}\n    certificate-authority: {}\nusers:\n- name: admin\n  user:\n    client-certificate: {}\n    client-key: {}\ncontexts:\n- name: omniscale-test\n  context: {{cluster: omniscale-test, user: admin}}\ncurrent-context: omniscale-test\n",
        files.ca_cert.display(),
        files.admin_cert.display(),
        files.admin_key.display()
    )
}

fn audit_policy(namespaces: &[String]) -> String {
    let groups: Vec<String> = namespaces.iter().map(|n| format!("\"system:serviceaccounts:{n}\"")).collect();
    format!(
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n- level: Metadata\n  userGroups: [{}]\n- level: None\n",
        groups.join(", ")
    )
}

/// etcd on 127.0.0.1:2379: the one already serving there (another test binary's, or a leftover;
/// each API server uses its own prefix), else one of ours. The binary takes no flags, so the
/// port cannot be chosen.
/// The etcd every control plane of this process shares (each API server has its own key
/// prefix). It lives as long as the process: a control plane that is dropped must not take the
/// others' storage with it. Started under a lock, so concurrent tests do not race for its port.
static ETCD: std::sync::Mutex<Option<(Guarded, Guarded)>> = std::sync::Mutex::new(None);

fn etcd(assets: &Assets) -> Result<String> {
    const URL: &str = "http://127.0.0.1:2379";
    let mut shared = ETCD.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if process::etcd_healthy() {
        return Ok(URL.into());
    }
    let dir = std::env::temp_dir().join(format!("omniscale-etcd-{}-{}", std::process::id(), nanos_now()));
    std::fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
    let cleanup = process::cleanup(&dir).map_err(io("starting the cleanup guard"))?;
    let data = dir.join("data");
    let p = Guarded::spawn("etcd", &assets.binary("etcd")?, &[data.display().to_string()], &dir)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if process::etcd_healthy() {
            // Ours, or another process's that won the port (ours then exits): either serves.
            *shared = Some((p, cleanup));
            return Ok(URL.into());
        }
        if Instant::now() > deadline {
            return Err(p.not_ready(Duration::from_secs(30)));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_without_the_binaries_serves_nothing() {
        let empty = std::env::temp_dir().join(format!("omniscale-no-assets-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&empty);
        let a = Assets::new(&empty);
        assert!(!a.serves(&Options::api_server_only()));
        assert!(matches!(a.binary("etcd"), Err(Error::MissingBinary("etcd", _))));
        let _ = std::fs::remove_dir(&empty);
    }

    #[test]
    fn the_audit_policy_names_each_namespace_group() {
        let p = audit_policy(&["omniscale-system".into(), "x".into()]);
        assert!(p.contains("userGroups: [\"system:serviceaccounts:omniscale-system\", \"system:serviceaccounts:x\"]"));
        assert!(p.trim_end().ends_with("- level: None"), "everything else is not logged: {p}");
    }
}
