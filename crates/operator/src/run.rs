//! `omniscale run`: wires client, leader election, caches, controllers and the HTTP server.
//!
//! Data path: reflectors (every replica) → readiness; Lease → leadership → controllers (leader
//! only) → validate (pure) → status + Events. Losing the lease drops the controllers at once.

use std::{sync::Arc, time::Duration};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{LimitRange, Node, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::{
    Api, Client, Config, ResourceExt,
    api::ListParams,
    config::{KubeConfigOptions, Kubeconfig},
    core::DeserializeGuard,
    runtime::{
        WatchStreamExt,
        events::{Recorder, Reporter},
        reflector, watcher,
    },
};
use omniscale_api::{Autoscaler, NodePool, clock::Clock};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{
    Result,
    cli::RunArgs,
    controller::{self, Context},
    horizontal,
    http::{self, HttpState},
    leader::{LeaderElector, LeaseTiming},
    metrics::Metrics,
    nodes, vertical, webhook,
};

/// Builds a client from `--kubeconfig`/`--context`, else the usual inference.
pub async fn client(args: &RunArgs) -> Result<Client> {
    let options = KubeConfigOptions { context: args.context.clone(), ..KubeConfigOptions::default() };
    let config = match &args.kubeconfig {
        Some(path) => Config::from_custom_kubeconfig(Kubeconfig::read_from(path)?, &options).await?,
        None if args.context.is_some() => Config::from_kubeconfig(&options).await?,
        None => Config::infer().await?,
    };
    Ok(Client::try_from(config)?)
}

/// This replica's identity: pod name (or hostname) plus a per-process suffix, so a restarted
/// container never mistakes its predecessor's lease for its own.
pub fn identity(pod_name: Option<&str>) -> String {
    let base = pod_name
        .map(str::to_string)
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok().map(|s| s.trim().to_string()))
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "omniscale".into());
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    format!("{base}_{:x}{:x}", std::process::id(), nanos)
}

/// Waits until both CRDs are served, logging how to install them meanwhile.
async fn wait_for_crds(
    client: &Client,
    not_ready: &watch::Sender<Option<String>>,
    shutdown: &CancellationToken,
) -> bool {
    loop {
        let a = Api::<DeserializeGuard<Autoscaler>>::all(client.clone())
            .list_metadata(&ListParams::default().limit(1))
            .await;
        let p =
            Api::<DeserializeGuard<NodePool>>::all(client.clone()).list_metadata(&ListParams::default().limit(1)).await;
        let missing: Vec<&str> = [("autoscalers.omniscale.dev", a.err()), ("nodepools.omniscale.dev", p.err())]
            .into_iter()
            .filter_map(|(name, err)| match err {
                None => None,
                Some(kube::Error::Api(s)) if s.code == 404 => Some(name),
                Some(e) => {
                    warn!(crd = name, error = %e, "cannot check CRD");
                    Some(name)
                }
            })
            .collect();
        if missing.is_empty() {
            return true;
        }
        let why = format!(
            "CustomResourceDefinitions {} are not installed; run `kubectl apply -f manifests/00-crds.yaml` (or `omniscale crds | kubectl apply -f -`)",
            missing.join(", ")
        );
        warn!("{why}");
        not_ready.send_replace(Some(why));
        tokio::select! {
            () = shutdown.cancelled() => return false,
            () = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
    }
}

/// Runs the operator until SIGTERM/SIGINT.
pub async fn run(args: RunArgs) -> Result<()> {
    run_until(args, CancellationToken::new()).await
}

/// [`run`], also stopping (gracefully: the lease is released) when `shutdown` is cancelled.
pub async fn run_until(args: RunArgs, shutdown: CancellationToken) -> Result<()> {
    run_with(args, shutdown, Clock::real()).await
}

/// [`run_until`] on a given clock: `omniscale sim` passes the simulated cluster's, so the
/// operator's decisions, periods and windows run at the simulation's speed. Leader election stays
/// on the wall clock: it is about real processes being alive.
pub async fn run_with(args: RunArgs, shutdown: CancellationToken, clock: Clock) -> Result<()> {
    run_in(args, shutdown, clock, None).await
}

/// [`run_with`], with the cloud provider given by the embedding program (`omniscale sim` and
/// tests pass the simulated cloud) instead of the one `--cloud-provider` names.
pub async fn run_in(
    args: RunArgs,
    shutdown: CancellationToken,
    clock: Clock,
    cloud: Option<Arc<dyn omniscale_nodes::CloudProvider>>,
) -> Result<()> {
    let cloud = crate::cloud::Cloud::new(args.cloud_provider, cloud);
    let timing = LeaseTiming {
        lease_duration: args.lease_duration,
        renew_deadline: args.renew_deadline,
        retry_period: args.retry_period,
    };
    timing.validate()?;
    let client = client(&args).await?;
    let identity = identity(args.pod_name.as_deref());
    info!(%identity, namespace = ?args.namespace, dry_run = args.dry_run, "starting omniscale");

    let metrics = Arc::new(Metrics::default());
    let (not_ready_tx, not_ready_rx) = watch::channel(Some("starting".to_string()));

    let http_task = tokio::spawn(http::serve(
        args.http_addr,
        HttpState { metrics: metrics.clone(), not_ready: not_ready_rx },
        shutdown.clone(),
        None,
    ));
    let signal_task = tokio::spawn(wait_for_signal(shutdown.clone()));

    if wait_for_crds(&client, &not_ready_tx, &shutdown).await {
        let process = Process { identity, timing, metrics, clock, cloud };
        operate(client, args, process, not_ready_tx, shutdown.clone()).await;
    }
    shutdown.cancel();
    signal_task.abort();
    match http_task.await {
        Ok(Err(e)) => Err(e.into()),
        _ => Ok(()),
    }
}

/// What this operator process is: who it is, how it holds the lease, what it reports, what time
/// it is.
struct Process {
    identity: String,
    timing: LeaseTiming,
    metrics: Arc<Metrics>,
    clock: Clock,
    cloud: crate::cloud::Cloud,
}

async fn operate(
    client: Client,
    args: RunArgs,
    process: Process,
    not_ready: watch::Sender<Option<String>>,
    shutdown: CancellationToken,
) {
    let Process { identity, timing, metrics, clock, cloud } = process;
    // Every replica serves the admission webhook, leader or not: the API server calls whichever
    // endpoint the Service picks. Certificates follow the wall clock whatever `clock` is (as
    // leader election does): TLS peers check validity against their own clocks.
    // Every replica keeps caches of both resources (the webhook will read them); readiness
    // follows their first full list and, with the webhook on, a bound port and a certificate (a
    // replica that cannot answer the webhook must not be one of the Service's endpoints).
    let autoscaler_api: Api<DeserializeGuard<Autoscaler>> = match &args.namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let (autoscalers, a_writer) = reflector::store();
    let (pools, p_writer) = reflector::store::<DeserializeGuard<NodePool>>();
    let a_stream = watcher(autoscaler_api, watcher::Config::default().any_semantic())
        .default_backoff()
        .reflect(a_writer)
        .for_each(|_| async {});
    let p_stream =
        watcher(Api::<DeserializeGuard<NodePool>>::all(client.clone()), watcher::Config::default().any_semantic())
            .default_backoff()
            .reflect(p_writer)
            .for_each(|_| async {});
    // The webhook reads LimitRanges to cap what it sets (as upstream's admission controller).
    let lr_api: Api<LimitRange> = match &args.namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let (ranges, lr_writer) = reflector::store();
    let lr_stream = watcher(lr_api, watcher::Config::default().any_semantic())
        .default_backoff()
        .reflect(lr_writer)
        .for_each(|_| async {});
    let caches = tokio::spawn(async move { futures::join!(a_stream, p_stream, lr_stream) });
    let webhook = webhook::WebhookConfig::from_args(&args).map(|config| {
        let (autoscalers, ranges) = (autoscalers.clone(), ranges.clone());
        let handler: webhook::Handler =
            Arc::new(move |body: &[u8]| vertical::review(body, &autoscalers.state(), &ranges));
        webhook::start(client.clone(), config, handler, Clock::real(), shutdown.clone())
    });
    let webhook_ready = webhook.as_ref().map(webhook::Webhook::ready);
    not_ready.send_replace(Some("caches not synced".into()));
    let ready_metrics = metrics.clone();
    let shared = (autoscalers.clone(), ranges.clone(), pools.clone());
    let readiness = tokio::spawn(async move {
        if autoscalers.wait_until_ready().await.is_ok() && pools.wait_until_ready().await.is_ok() {
            if let Some(ready) = webhook_ready {
                not_ready
                    .send_replace(Some("admission webhook not serving yet (port not bound or no certificate)".into()));
                if !ready.await {
                    return;
                }
            }
            not_ready.send_replace(None);
            ready_metrics.ready.set(1);
            info!("caches synced; ready");
        }
    });

    let (leader_tx, mut leader_rx) = watch::channel(false);
    let elector =
        LeaderElector::new(Api::namespaced(client.clone(), &args.pod_namespace), &args.lease_name, &identity, timing);
    let election = tokio::spawn(elector.run(leader_tx, shutdown.clone()));

    let recorder =
        Recorder::new(client.clone(), Reporter { controller: "omniscale".into(), instance: Some(identity.clone()) });
    let ctx =
        Arc::new(Context::new(client, recorder, metrics.clone(), leader_rx.clone(), args.namespace.clone(), clock));
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            r = leader_rx.wait_for(|l| *l) => if r.is_err() { break },
        }
        metrics.leader.set(1);
        info!("leading: controllers started");
        // Only the leader keeps pods (the largest cache), one copy for both shells.
        let (pods, pod_writer) = reflector::store::<Pod>();
        let pod_api: Api<Pod> = match &args.namespace {
            Some(ns) => Api::namespaced(ctx.client.clone(), ns),
            None => Api::all(ctx.client.clone()),
        };
        // Pods are kept without managed fields: no engine reads them and they are most of a
        // pod's size. Every applied pod also goes past the node shell's pending tracker, which
        // wakes the node loop when one turns unschedulable.
        let pending = Arc::new(nodes::PendingPods::default());
        let seen = pending.clone();
        let pod_watch = watcher(pod_api, watcher::Config::default().any_semantic())
            .default_backoff()
            .modify(|p| p.managed_fields_mut().clear())
            .reflect(pod_writer)
            .for_each(move |ev| {
                if let Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) = &ev {
                    seen.observe(p);
                }
                async {}
            });
        let (autoscalers, ranges, pools) = &shared;
        // The node shell's other caches: leader only, like pods.
        let (node_store, node_writer) = reflector::store::<Node>();
        let (pdb_store, pdb_writer) = reflector::store::<PodDisruptionBudget>();
        let (ds_store, ds_writer) = reflector::store::<DaemonSet>();
        let node_watch = watcher(Api::<Node>::all(ctx.client.clone()), watcher::Config::default().any_semantic())
            .default_backoff()
            .modify(|n| n.managed_fields_mut().clear())
            .reflect(node_writer)
            .for_each(|_| async {});
        let pdb_watch =
            watcher(Api::<PodDisruptionBudget>::all(ctx.client.clone()), watcher::Config::default().any_semantic())
                .default_backoff()
                .reflect(pdb_writer)
                .for_each(|_| async {});
        let ds_watch = watcher(Api::<DaemonSet>::all(ctx.client.clone()), watcher::Config::default().any_semantic())
            .default_backoff()
            .modify(|d| d.managed_fields_mut().clear())
            .reflect(ds_writer)
            .for_each(|_| async {});
        let node_caches = nodes::Caches {
            pods: pods.clone(),
            nodes: node_store,
            pdbs: pdb_store,
            daemonsets: ds_store,
            pools: pools.clone(),
        };
        let node_config = nodes::NodeConfig {
            settings: omniscale_nodes::input::Settings {
                expanders: args.expander.0.clone(),
                max_nodes_total: args.max_nodes_total,
                max_node_provision_time: jiff::SignedDuration::try_from(args.max_node_provision_time)
                    .unwrap_or(jiff::SignedDuration::from_mins(15)),
                ..omniscale_nodes::input::Settings::default()
            },
            scan_interval: args.scan_interval,
            batch_window: args.scale_up_batch_window,
            own_node: args.node_name.clone(),
            dry_run: args.dry_run,
        };
        let node_loop = async {
            futures::join!(
                node_watch,
                pdb_watch,
                ds_watch,
                nodes::run(ctx.clone(), node_config, cloud.clone(), node_caches, pending.clone())
            )
        };
        tokio::select! {
            _ = futures::future::join5(
                controller::run(ctx.clone()),
                pod_watch,
                node_loop,
                horizontal::run(ctx.clone(), args.dry_run, pods.clone(), autoscalers.clone()),
                vertical::run(
                    ctx.clone(),
                    args.dry_run,
                    vertical::Limits::new(args.eviction_rate_limit, args.eviction_rate_burst),
                    pods,
                    autoscalers.clone(),
                    ranges.clone(),
                ),
            ) => {
                warn!("controllers stopped unexpectedly")
            }
            // On shutdown the elector steps down too; only an unasked-for loss is worth a warning.
            r = leader_rx.wait_for(|l| !*l) => if r.is_ok() && !shutdown.is_cancelled() {
                warn!("leadership lost: controllers stopped")
            },
            () = shutdown.cancelled() => {}
        }
        metrics.leader.set(0);
        if shutdown.is_cancelled() {
            break;
        }
    }
    // The elector releases the lease on shutdown; wait for it so a standby takes over at once.
    let _ = election.await;
    if let Some(w) = webhook {
        w.stopped().await;
    }
    caches.abort();
    readiness.abort();
}

async fn wait_for_signal(shutdown: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => info!("SIGTERM: shutting down"),
                    _ = tokio::signal::ctrl_c() => info!("SIGINT: shutting down"),
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    shutdown.cancel();
}
