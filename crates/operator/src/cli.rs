//! Command line. Every `run` flag can also be set through the environment variable shown in
//! `--help`, which is how the Deployment in `manifests/` configures it.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};

/// omniscale: one operator that autoscales pods horizontally and vertically, and nodes.
#[derive(Debug, Parser)]
#[command(name = "omniscale", version, about, long_about = None)]
pub struct Cli {
    /// Log line format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Plain, env = "OMNISCALE_LOG_FORMAT")]
    pub log_format: LogFormat,
    /// Log filter in `RUST_LOG` syntax, e.g. `info,omniscale_operator=debug`.
    #[arg(long, global = true, default_value = "info", env = "OMNISCALE_LOG")]
    pub log_filter: String,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Plain,
    /// One JSON object per line.
    Json,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the operator against a cluster (kubeconfig or in-cluster).
    Run(Box<RunArgs>),
    /// Print the CustomResourceDefinitions as YAML (the same as manifests/00-crds.yaml).
    Crds,
    /// Print the version.
    Version,
    /// Run omniscale on an embedded simulated cluster with an example scenario.
    Sim(SimArgs),
    /// Show what omniscale would decide for resources read from files, and why (horizontal and
    /// vertical).
    Plan(PlanArgs),
}

/// Flags of `omniscale run`.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Kubeconfig file; defaults to $KUBECONFIG, ~/.kube/config, then in-cluster configuration.
    #[arg(long, env = "OMNISCALE_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context to use instead of the current one.
    #[arg(long, env = "OMNISCALE_CONTEXT")]
    pub context: Option<String>,
    /// Only manage Autoscalers in this namespace (NodePools are cluster-scoped and always managed).
    #[arg(long, env = "OMNISCALE_WATCH_NAMESPACE")]
    pub namespace: Option<String>,
    /// Compute and publish decisions (status, Events, metrics) but never scale, resize, evict or
    /// call the cloud.
    #[arg(long, env = "OMNISCALE_DRY_RUN")]
    pub dry_run: bool,
    /// Vertical updater: evictions per second across all Autoscalers (upstream's
    /// `--eviction-rate-limit`); unset means no limit, as upstream's default. In-place resizes
    /// are paced by a second bucket with the same settings.
    #[arg(long, env = "OMNISCALE_EVICTION_RATE_LIMIT")]
    pub eviction_rate_limit: Option<f64>,
    /// Burst of the eviction and resize rate limits (upstream's `--eviction-rate-burst`).
    #[arg(long, default_value_t = 1, env = "OMNISCALE_EVICTION_RATE_BURST")]
    pub eviction_rate_burst: u32,
    /// Namespace omniscale runs in; its leader Lease lives here.
    #[arg(long, default_value = "omniscale-system", env = "POD_NAMESPACE")]
    pub pod_namespace: String,
    /// Name of this replica (its identity in the Lease and in Events); defaults to the hostname.
    #[arg(long, env = "POD_NAME")]
    pub pod_name: Option<String>,
    /// Name of the leader-election Lease.
    #[arg(long, default_value = "omniscale-leader", env = "OMNISCALE_LEASE_NAME")]
    pub lease_name: String,
    /// How long a leader's lease lasts without renewal.
    #[arg(long, default_value = "15s", value_parser = parse_duration, env = "OMNISCALE_LEASE_DURATION")]
    pub lease_duration: Duration,
    /// A leader that cannot renew for this long stops acting (must be below --lease-duration).
    #[arg(long, default_value = "10s", value_parser = parse_duration, env = "OMNISCALE_RENEW_DEADLINE")]
    pub renew_deadline: Duration,
    /// Pause between lease attempts.
    #[arg(long, default_value = "2s", value_parser = parse_duration, env = "OMNISCALE_RETRY_PERIOD")]
    pub retry_period: Duration,
    /// Address of the health and metrics server (/healthz, /readyz, /metrics).
    #[arg(long, default_value = "0.0.0.0:8080", env = "OMNISCALE_HTTP_ADDR")]
    pub http_addr: SocketAddr,
    /// Address of the HTTPS admission webhook server (/mutate-pods, /healthz).
    #[arg(long, default_value = "0.0.0.0:9443", env = "OMNISCALE_WEBHOOK_ADDR")]
    pub webhook_addr: SocketAddr,
    /// Serve the webhook with tls.crt/tls.key from this directory (e.g. a mounted cert-manager
    /// Secret), re-read when they change; the caBundle is then left to cert-manager's CA
    /// injector. Without it, omniscale manages a CA and certificate itself.
    #[arg(long, env = "OMNISCALE_WEBHOOK_CERT_DIR")]
    pub webhook_cert_dir: Option<PathBuf>,
    /// Service in front of the webhook (in --pod-namespace); self-managed certificates are for
    /// its DNS names.
    #[arg(long, default_value = "omniscale-webhook", env = "OMNISCALE_WEBHOOK_SERVICE")]
    pub webhook_service: String,
    /// MutatingWebhookConfiguration whose caBundle self-managed certificates keep up to date.
    #[arg(long, default_value = "omniscale", env = "OMNISCALE_WEBHOOK_CONFIG")]
    pub webhook_config: String,
    /// Secret (in --pod-namespace) holding the self-managed CA and certificate, shared by all
    /// replicas.
    #[arg(long, default_value = "omniscale-webhook-tls", env = "OMNISCALE_WEBHOOK_SECRET")]
    pub webhook_secret: String,
    /// Do not serve the admission webhook (nor manage its certificates).
    #[arg(long, env = "OMNISCALE_DISABLE_WEBHOOK")]
    pub disable_webhook: bool,
    /// Cloud behind Auto Scaling Group NodePools. `aws` reads the standard AWS environment
    /// (AWS_REGION, credentials, AWS_ENDPOINT_URL) on first use.
    #[arg(long, value_enum, default_value = "aws", env = "OMNISCALE_CLOUD_PROVIDER")]
    pub cloud_provider: crate::cloud::CloudKind,
    /// Expander chain for node scale-up: least-waste, most-pods, least-nodes, priority (NodePool
    /// weight), price, random; comma-separated, first filter first.
    #[arg(long, default_value = "least-waste", value_parser = parse_expanders, env = "OMNISCALE_EXPANDER")]
    pub expander: Expanders,
    /// Ceiling on the number of nodes in the cluster (Cluster Autoscaler's --max-nodes-total).
    #[arg(long, env = "OMNISCALE_MAX_NODES_TOTAL")]
    pub max_nodes_total: Option<u32>,
    /// A scale-up whose nodes are not ready by then is reverted and its group backed off.
    #[arg(long, default_value = "15m", value_parser = parse_duration, env = "OMNISCALE_MAX_NODE_PROVISION_TIME")]
    pub max_node_provision_time: Duration,
    /// Period of the node loop; it also runs whenever a pod becomes unschedulable.
    #[arg(long, default_value = "10s", value_parser = parse_duration, env = "OMNISCALE_SCAN_INTERVAL")]
    pub scan_interval: Duration,
    /// Wait after the first newly unschedulable pod before deciding, so a burst is one decision.
    #[arg(long, default_value = "100ms", value_parser = parse_duration, env = "OMNISCALE_SCALE_UP_BATCH_WINDOW")]
    pub scale_up_batch_window: Duration,
    /// The node this replica runs on (downward API `spec.nodeName`): never removed while this
    /// replica leads.
    #[arg(long, env = "NODE_NAME")]
    pub node_name: Option<String>,
}

/// A parsed `--expander` chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expanders(pub Vec<omniscale_nodes::expander::Expander>);

fn parse_expanders(s: &str) -> Result<Expanders, String> {
    omniscale_nodes::expander::parse_chain(s).map(Expanders)
}

/// Flags of `omniscale sim`.
#[derive(Debug, Clone, Args)]
pub struct SimArgs {
    /// Scenario directory, e.g. examples/php-apache: its `*.yaml` manifests are applied and
    /// `sim/scenario.yaml` describes nodes, cloud, load and timed actions.
    #[arg(long, required_unless_present = "serve")]
    pub scenario: Option<PathBuf>,
    /// Only run the simulated cluster (no operator, no scenario) until interrupted.
    #[arg(long)]
    pub serve: bool,
    /// Write a kubeconfig for the simulated API server here (for kubectl and `omniscale run`).
    #[arg(long)]
    pub kubeconfig_out: Option<PathBuf>,
    /// Address of the simulated API server.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Simulated seconds per wall-clock second (default: the scenario's, else 1 with --serve).
    #[arg(long)]
    pub speed: Option<f64>,
    /// Static nodes to create with --serve (each 4 cpu / 16Gi, m5.xlarge-like).
    #[arg(long, default_value_t = 3)]
    pub nodes: u32,
    /// Simulated seconds to run the scenario for (default: the scenario's `duration`).
    #[arg(long)]
    pub duration: Option<f64>,
    /// Where the scenario report (timeline.json, chart.svg) is written.
    #[arg(long, default_value = "target/sim-report")]
    pub report_dir: PathBuf,
    /// Run the scenario on the real Kubernetes API server of this kubeconfig instead of the
    /// embedded one: the simulated nodes (labelled sim.omniscale.dev/kubelet=true), their kubelet,
    /// the cloud and the metrics APIs drive it as a client, in real time. Needs cluster-admin.
    #[arg(long, conflicts_with = "serve")]
    pub kubeconfig: Option<PathBuf>,
    /// Start a Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager,
    /// kube-scheduler) from the binaries in this directory (as `setup-envtest` or
    /// ../shared/kube/install provide them) and run the scenario on it; upstream HPA runs in its
    /// controller manager beside omniscale.
    #[arg(long, conflicts_with_all = ["serve", "kubeconfig"])]
    pub kube_assets: Option<PathBuf>,
    /// Credentials the operator runs with on a real API server (e.g. a ServiceAccount token from
    /// `kubectl create token omniscale -n omniscale-system`); defaults to --kubeconfig's.
    #[arg(long)]
    pub operator_kubeconfig: Option<PathBuf>,
}

/// Flags of `omniscale plan`.
#[derive(Debug, Clone, Args)]
pub struct PlanArgs {
    /// YAML or JSON files as `kubectl get -o yaml` writes them: Autoscalers, their target
    /// workloads, Pods, PodMetrics (many timestamps feed the vertical recommender) and
    /// LimitRanges (one or many documents, or `kind: List`). For nodes: NodePools, Nodes,
    /// PodDisruptionBudgets, DaemonSets, and the Auto Scaling Groups, either as what
    /// `aws autoscaling describe-auto-scaling-groups` prints (`{"AutoScalingGroups": [...]}`) or
    /// as plan-only `kind: AutoScalingGroup` documents (apiVersion omniscale.dev/v1alpha1; name,
    /// minSize, maxSize, desiredCapacity, instanceTypes, availabilityZones, instances, tags).
    /// Instance types are looked up in the shipped us-east-1 table.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// The time to decide at (RFC 3339); defaults to now. Offline there is no memory of earlier
    /// loops: nodes found unneeded count as unneeded since this time.
    #[arg(long)]
    pub now: Option<String>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = PlanOutput::Table)]
    pub output: PlanOutput,
    /// Expander chain for node scale-up, as `omniscale run --expander`.
    #[arg(long, default_value = "least-waste", value_parser = parse_expanders)]
    pub expander: Expanders,
    /// Ceiling on the number of nodes in the cluster, as `omniscale run --max-nodes-total`.
    #[arg(long)]
    pub max_nodes_total: Option<u32>,
}

/// Output of `omniscale plan`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PlanOutput {
    /// One line per Autoscaler.
    Table,
    /// The full decisions with explanations (stable, documented in the README).
    Json,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    omniscale_api::duration::parse_duration(s).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_flags_parse_with_defaults() {
        let cli = Cli::try_parse_from(["omniscale", "run", "--dry-run", "--namespace", "team-a"]);
        let Ok(Cli { command: Command::Run(args), log_format, .. }) = cli else { panic!("{cli:?}") };
        assert!(args.dry_run);
        assert_eq!(args.namespace.as_deref(), Some("team-a"));
        assert_eq!(args.lease_duration, Duration::from_secs(15));
        assert_eq!(args.renew_deadline, Duration::from_secs(10));
        assert_eq!(log_format, LogFormat::Plain);
        assert_eq!(args.webhook_addr, SocketAddr::from(([0, 0, 0, 0], 9443)));
        assert_eq!(args.webhook_cert_dir, None);
        assert_eq!(
            (args.webhook_service.as_str(), args.webhook_config.as_str(), args.webhook_secret.as_str()),
            ("omniscale-webhook", "omniscale", "omniscale-webhook-tls")
        );
        assert!(!args.disable_webhook);
    }

    #[test]
    fn webhook_flags_select_the_certificate_source() {
        use crate::webhook::{CertSource, WebhookConfig};
        let parse = |extra: &[&str]| {
            let mut argv = vec!["omniscale", "run", "--pod-namespace", "ops"];
            argv.extend(extra);
            match Cli::try_parse_from(argv) {
                Ok(Cli { command: Command::Run(args), .. }) => args,
                other => panic!("{other:?}"),
            }
        };
        let args = parse(&["--webhook-cert-dir", "/certs", "--webhook-addr", "127.0.0.1:0"]);
        let Some(WebhookConfig { addr, certs: CertSource::Dir { path, .. } }) = WebhookConfig::from_args(&args) else {
            panic!("cert-manager mode expected")
        };
        assert_eq!((addr.port(), path), (0, PathBuf::from("/certs")));
        let args = parse(&["--webhook-secret", "s", "--webhook-service", "svc", "--webhook-config", "cfg"]);
        let Some(WebhookConfig { certs: CertSource::SelfManaged(c), .. }) = WebhookConfig::from_args(&args) else {
            panic!("self-managed mode expected")
        };
        assert_eq!((c.namespace.as_str(), c.secret.as_str(), c.webhook_config.as_str()), ("ops", "s", "cfg"));
        assert_eq!(c.dns_names()[0], "svc.ops.svc");
        assert!(WebhookConfig::from_args(&parse(&["--disable-webhook"])).is_none());
    }

    #[test]
    fn bad_durations_are_rejected_with_the_reason() {
        let err = Cli::try_parse_from(["omniscale", "run", "--lease-duration", "fifteen"]);
        let msg = err.map(|_| String::new()).unwrap_or_else(|e| e.to_string());
        assert!(msg.contains("units ms, s, m, h"), "{msg}");
    }

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
