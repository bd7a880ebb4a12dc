//! `omniscale sim`: the simulated cluster, and with `--scenario`, the operator running against it
//! while the scenario's load and actions play out, sampled into a live table and a report.

use crate::cli::{Cli, SimArgs};
use crate::{Error, Result};
use clap::Parser;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use omniscale_sim::Cluster;
use omniscale_sim::clock::Clock;
use omniscale_sim::control::World;
use omniscale_sim::runtime::{self, Running, SimOptions};
use omniscale_sim::store::{Target, WriteOptions};
use omniscale_sim::world::report::{self, Sample, Timeline, WorkloadSample};
use omniscale_sim::world::scenario::{Action, Scenario, StaticNodes, TimedAction};
use omniscale_sim::world::{common, instance_types};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub async fn sim(args: SimArgs) -> Result<()> {
    match &args.scenario {
        Some(dir) if !args.serve => scenario(&args, dir).await,
        _ => serve(&args).await,
    }
}

/// Field manager of what `omniscale sim` writes (scenario manifests, actions).
const SIM_MANAGER: &str = "omniscale-sim";

fn sim_error(e: impl std::fmt::Display) -> Error {
    Error::Sim(e.to_string())
}

async fn serve(args: &SimArgs) -> Result<()> {
    let opts = SimOptions { listen: args.listen, speed: args.speed.unwrap_or(1.0), ..SimOptions::default() };
    let mut world = World::default();
    world.static_nodes = vec![StaticNodes::of_type("node", args.nodes, "m5.xlarge")];
    let running = runtime::start(opts, world).await.map_err(sim_error)?;
    announce(&running, args)?;
    tokio::signal::ctrl_c().await?;
    running.shutdown().await;
    Ok(())
}

fn announce(running: &Running, args: &SimArgs) -> Result<()> {
    eprintln!("simulated cluster listening on {}", running.url);
    if let Some(path) = &args.kubeconfig_out {
        std::fs::write(path, running.kubeconfig())?;
        eprintln!("kubeconfig written: kubectl --kubeconfig {} get nodes", path.display());
    }
    Ok(())
}

/// Manifests of a scenario directory: every `*.yaml` beside `sim/`, in name order.
fn manifests(dir: &Path) -> Result<Vec<Value>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    let mut docs = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f)?;
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let v: Value =
                serde::Deserialize::deserialize(doc).map_err(|e| sim_error(format!("{}: {e}", f.display())))?;
            if !v.is_null() {
                docs.push(v);
            }
        }
    }
    Ok(docs)
}

/// Creates an object in-process through the API semantics (admission, defaults, validation).
fn create(cluster: &Cluster, obj: Value) -> Result<()> {
    let (group, version) = match obj["apiVersion"].as_str().unwrap_or_default().split_once('/') {
        Some((g, v)) => (g.to_owned(), v.to_owned()),
        None => (String::new(), obj["apiVersion"].as_str().unwrap_or_default().to_owned()),
    };
    let kind = obj["kind"].as_str().unwrap_or_default();
    let mut store = cluster.store();
    let Some(rt) = store.registry.by_kind(&group, &version, kind).cloned() else {
        if group == "autoscaling" && kind == "HorizontalPodAutoscaler" {
            // Upstream HPA runs in kube-controller-manager, which only a real control plane
            // has: the scenario still runs, its HPA side stays as it is.
            let name = obj["metadata"]["name"].as_str().unwrap_or_default();
            tracing::warn!(
                hpa = %name,
                "skipped: the embedded cluster has no HorizontalPodAutoscaler controller; run with --kube-assets DIR or --kubeconfig to compare with upstream HPA"
            );
            return Ok(());
        }
        return Err(sim_error(format!("no resource for {}/{kind}", obj["apiVersion"])));
    };
    let ns = obj["metadata"]["namespace"].as_str().unwrap_or("default").to_owned();
    let target = Target::new(&rt, rt.namespaced.then_some(ns.as_str()), None);
    let now = cluster.now();
    match store.create(&target, obj, &WriteOptions::manager(SIM_MANAGER), now) {
        Ok(_) => Ok(()),
        Err(e) if e.code == 409 => Ok(()),
        Err(e) => Err(sim_error(e)),
    }
}

/// Where a scenario runs: the embedded simulated API server, or a real one (given by a
/// kubeconfig, or started here from control-plane binaries) that the simulated world drives as a
/// client.
enum Backend {
    Embedded(Running),
    Real(Box<Real>),
}

struct Real {
    client: kube::Client,
    remote: omniscale_sim::remote::RemoteWorld,
    clock: Clock,
    /// The admin kubeconfig (the operator's too, unless `--operator-kubeconfig`).
    kubeconfig: PathBuf,
    /// A control plane started for this run (`--kube-assets`); stopped when dropped.
    control_plane: Option<omniscale_testenv::ControlPlane>,
}

/// The objects a timeline sample is read from, as a user would list them.
struct View {
    deployments: Vec<Arc<Value>>,
    pods: Vec<Arc<Value>>,
    autoscalers: Vec<Arc<Value>>,
    nodes: Vec<Arc<Value>>,
    pod_metrics: BTreeMap<(String, String), Value>,
}

impl Backend {
    fn clock(&self) -> Clock {
        match self {
            Backend::Embedded(r) => r.cluster.shared.clock.clone(),
            Backend::Real(r) => r.clock.clone(),
        }
    }

    fn world(&self) -> Arc<Mutex<World>> {
        match self {
            Backend::Embedded(r) => r.world.clone(),
            Backend::Real(r) => r.remote.world.clone(),
        }
    }

    async fn apply(&self, obj: Value) -> Result<()> {
        match self {
            Backend::Embedded(r) => create(&r.cluster, obj),
            Backend::Real(r) => apply_remote(&r.client, &obj).await,
        }
    }

    async fn view(&self) -> Result<View> {
        match self {
            Backend::Embedded(r) => {
                let store = r.cluster.store();
                let key = omniscale_sim::registry::ResourceKey::new;
                Ok(View {
                    deployments: store.all(&key("apps", "deployments"), None),
                    pods: store.all(&key("", "pods"), None),
                    autoscalers: store.all(&key("omniscale.dev", "autoscalers"), None),
                    nodes: store.all(&key("", "nodes"), None),
                    pod_metrics: r.cluster.shared.metrics.read().map(|m| m.pods.clone()).unwrap_or_default(),
                })
            }
            Backend::Real(r) => {
                let list = |g: &str, v: &str, kind: &str, plural: &str| {
                    let ar = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(g, v, kind), plural);
                    let api: Api<DynamicObject> = Api::all_with(r.client.clone(), &ar);
                    async move {
                        let items = api.list(&ListParams::default()).await?.items;
                        Ok::<_, Error>(
                            items.into_iter().filter_map(|o| serde_json::to_value(o).ok()).map(Arc::new).collect(),
                        )
                    }
                };
                Ok(View {
                    deployments: list("apps", "v1", "Deployment", "deployments").await?,
                    pods: list("", "v1", "Pod", "pods").await?,
                    autoscalers: list("omniscale.dev", "v1alpha1", "Autoscaler", "autoscalers").await?,
                    nodes: list("", "v1", "Node", "nodes").await?,
                    pod_metrics: r.remote.metrics.read().map(|m| m.pods.clone()).unwrap_or_default(),
                })
            }
        }
    }

    async fn act(&self, a: &TimedAction) {
        let result = match self {
            Backend::Embedded(r) => run_action(&r.cluster, a),
            Backend::Real(r) => action_remote(&r.client, a).await,
        };
        if let Err(e) = result {
            eprintln!("action at {}s: {e}", a.at);
        }
    }

    async fn shutdown(self) {
        match self {
            Backend::Embedded(r) => r.shutdown().await,
            Backend::Real(r) => {
                let Real { remote, control_plane, .. } = *r;
                remote.shutdown().await;
                drop(control_plane);
            }
        }
    }
}

/// The kind and plural of an object, resolved by discovery (CRDs included).
async fn resolve(client: &kube::Client, obj: &Value) -> Result<(ApiResource, bool)> {
    let (group, version) = match obj["apiVersion"].as_str().unwrap_or_default().split_once('/') {
        Some((g, v)) => (g.to_owned(), v.to_owned()),
        None => (String::new(), obj["apiVersion"].as_str().unwrap_or_default().to_owned()),
    };
    let gvk = GroupVersionKind::gvk(&group, &version, obj["kind"].as_str().unwrap_or_default());
    let (ar, caps) = kube::discovery::pinned_kind(client, &gvk)
        .await
        .map_err(|e| sim_error(format!("no resource for {}/{}: {e}", obj["apiVersion"], obj["kind"])))?;
    Ok((ar, caps.scope == kube::discovery::Scope::Namespaced))
}

/// Server-side apply, as `kubectl apply --server-side` would.
async fn apply_remote(client: &kube::Client, obj: &Value) -> Result<()> {
    let (ar, namespaced) = resolve(client, obj).await?;
    let name = obj["metadata"]["name"].as_str().unwrap_or_default();
    let api: Api<DynamicObject> = if namespaced {
        Api::namespaced_with(client.clone(), obj["metadata"]["namespace"].as_str().unwrap_or("default"), &ar)
    } else {
        Api::all_with(client.clone(), &ar)
    };
    api.patch(name, &PatchParams::apply(SIM_MANAGER).force(), &Patch::Apply(obj)).await?;
    Ok(())
}

/// A timed action through the API: the kinds scenarios act on, by their usual group.
async fn action_remote(client: &kube::Client, a: &TimedAction) -> Result<()> {
    let (kind, ns, name) = match a.action() {
        Some(Action::Delete(r)) => (r.kind.clone(), r.namespace.clone(), r.name.clone()),
        Some(Action::Scale(s)) => (s.kind.clone(), s.namespace.clone(), s.name.clone()),
        None => return Ok(()),
    };
    let api_version = match kind.as_str() {
        "Deployment" | "StatefulSet" | "ReplicaSet" | "DaemonSet" => "apps/v1",
        "Autoscaler" | "NodePool" => "omniscale.dev/v1alpha1",
        "HorizontalPodAutoscaler" => "autoscaling/v2",
        "PodDisruptionBudget" => "policy/v1",
        _ => "v1",
    };
    let obj = serde_json::json!({"apiVersion": api_version, "kind": kind});
    let (ar, namespaced) = resolve(client, &obj).await?;
    let api: Api<DynamicObject> =
        if namespaced { Api::namespaced_with(client.clone(), &ns, &ar) } else { Api::all_with(client.clone(), &ar) };
    match a.action() {
        Some(Action::Delete(_)) => {
            api.delete(&name, &DeleteParams::foreground()).await?;
        }
        Some(Action::Scale(s)) => {
            let patch = serde_json::json!({"spec": {"replicas": s.replicas}});
            api.patch_subresource("scale", &name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
        }
        None => {}
    }
    Ok(())
}

/// Applies the omniscale CRDs and waits until the API server serves them.
async fn install_crds(backend: &Backend) -> Result<()> {
    for crd in omniscale_api::crds() {
        backend.apply(serde_json::to_value(&crd)?).await?;
    }
    let Backend::Real(r) = backend else { return Ok(()) };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    for kind in ["Autoscaler", "NodePool"] {
        let gvk = GroupVersionKind::gvk("omniscale.dev", "v1alpha1", kind);
        while kube::discovery::pinned_kind(&r.client, &gvk).await.is_err() {
            if tokio::time::Instant::now() > deadline {
                return Err(sim_error(format!("the {kind} CRD was not served within 60 s")));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(())
}

async fn start_backend(args: &SimArgs, world: World, speed: f64) -> Result<Backend> {
    let (kubeconfig, control_plane) = match (&args.kubeconfig, &args.kube_assets) {
        (None, None) => {
            let opts = SimOptions { listen: args.listen, speed, ..SimOptions::default() };
            let running = runtime::start(opts, world).await.map_err(sim_error)?;
            announce(&running, args)?;
            return Ok(Backend::Embedded(running));
        }
        (Some(k), None) => (k.clone(), None),
        (_, Some(dir)) => {
            let assets = omniscale_testenv::Assets::new(dir);
            eprintln!("starting a Kubernetes control plane from {}", dir.display());
            let options =
                omniscale_testenv::Options { audit_namespaces: Vec::new(), ..omniscale_testenv::Options::default() };
            let cp = tokio::task::spawn_blocking(move || omniscale_testenv::ControlPlane::start(assets, options))
                .await
                .map_err(sim_error)?
                .map_err(sim_error)?;
            eprintln!("control plane ready at {}: kubectl --kubeconfig {}", cp.url(), cp.kubeconfig().display());
            (cp.kubeconfig().to_owned(), Some(cp))
        }
    };
    if (speed - 1.0).abs() > f64::EPSILON {
        return Err(sim_error(format!("a real API server runs in real time: --speed must be 1 (got {speed})")));
    }
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(&kubeconfig).map_err(sim_error)?,
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .map_err(sim_error)?;
    let client = kube::Client::try_from(config)?;
    let clock = Clock::wall(1.0);
    let remote = omniscale_sim::remote::RemoteWorld::start(
        client.clone(),
        world,
        clock.clone(),
        omniscale_sim::remote::RemoteOptions::default(),
    )
    .await
    .map_err(sim_error)?;
    eprintln!("simulated nodes, kubelets and metrics APIs attached (metrics served on {})", remote.metrics_addr);
    Ok(Backend::Real(Box::new(Real { client, remote, clock, kubeconfig, control_plane })))
}

async fn scenario(args: &SimArgs, dir: &Path) -> Result<()> {
    let file = dir.join("sim").join("scenario.yaml");
    let text = std::fs::read_to_string(&file).map_err(|e| sim_error(format!("{}: {e}", file.display())))?;
    let mut sc = Scenario::from_yaml(&text).map_err(|e| sim_error(format!("{}: {e}", file.display())))?;
    if let Some(d) = args.duration {
        sc.duration = d;
    }
    let docs = manifests(dir)?;
    let real = args.kubeconfig.is_some() || args.kube_assets.is_some();
    let speed = args.speed.unwrap_or(if real { 1.0 } else { sc.speed });
    let mut world = World::default();
    world.cloud = sc.build_cloud(0.0).map_err(sim_error)?;
    world.asgs = sc.cloud.as_ref().map(|c| c.auto_scaling_groups.clone()).unwrap_or_default();
    world.static_nodes = sc.nodes.clone();
    world.workloads = sc.workloads.clone();
    world.external_metrics = sc.external_metrics.clone();
    let backend = start_backend(args, world, speed).await?;
    install_crds(&backend).await?;
    backend
        .apply(serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "omniscale-system"}}))
        .await?;
    for doc in docs {
        backend.apply(doc).await?;
    }
    // The operator, unmodified, against the API server. One kubeconfig file per simulated
    // cluster: several may run in one process (tests).
    let (kubeconfig, temporary) = match &backend {
        Backend::Embedded(running) => {
            let port = running.url.rsplit(':').next().unwrap_or("0");
            let path = std::env::temp_dir().join(format!("omniscale-sim-{}-{port}.kubeconfig", std::process::id()));
            std::fs::write(&path, running.kubeconfig())?;
            (path, true)
        }
        Backend::Real(r) => (args.operator_kubeconfig.clone().unwrap_or_else(|| r.kubeconfig.clone()), false),
    };
    let cli = Cli::try_parse_from([
        "omniscale",
        "run",
        "--kubeconfig",
        &kubeconfig.to_string_lossy(),
        "--pod-name",
        "omniscale-sim",
        "--http-addr",
        "127.0.0.1:0",
        "--webhook-addr",
        "127.0.0.1:0",
    ])
    .map_err(sim_error)?;
    let crate::cli::Command::Run(run_args) = cli.command else {
        return Err(sim_error("internal: expected run arguments"));
    };
    let stop_operator = tokio_util::sync::CancellationToken::new();
    let clock = backend.clock();
    // The simulated cloud, called in memory where `omniscale run` would call AWS.
    let world = backend.world();
    let cloud: Option<Arc<dyn omniscale_nodes::CloudProvider>> =
        world.lock().map(|w| w.cloud.is_some()).unwrap_or(false).then(|| {
            Arc::new(crate::cloud::SimCloud::new(world.clone(), clock.clone()))
                as Arc<dyn omniscale_nodes::CloudProvider>
        });
    let operator = tokio::spawn(crate::run::run_in(*run_args, stop_operator.clone(), clock.clone(), cloud));

    let on = if real { "a real API server" } else { "the embedded simulated cluster" };
    eprintln!(
        "scenario {} ({}): {} simulated seconds at {speed}x on {on}",
        sc.name,
        sc.description.trim(),
        sc.duration
    );
    println!("{}", report::progress_header());
    let mut actions = sc.sorted_actions().into_iter().cloned().collect::<Vec<_>>().into_iter().peekable();
    let mut timeline = Timeline { scenario: sc.name.clone(), speed, samples: Vec::new() };
    let mut next_sample = 0.0;
    loop {
        let t = clock.elapsed();
        while let Some(a) = actions.next_if(|a| a.at <= t) {
            backend.act(&a).await;
        }
        if t >= next_sample {
            match backend.view().await {
                Ok(view) => {
                    let s = {
                        let w = world.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                        sample(&view, &w, t)
                    };
                    println!("{}", report::progress_row(&s));
                    timeline.samples.push(s);
                }
                Err(e) => eprintln!("sample at {t:.0}s: {e}"),
            }
            next_sample += sc.sample_every;
        }
        if t >= sc.duration || operator.is_finished() {
            break;
        }
        tokio::time::sleep(clock.wall_duration(Duration::from_secs_f64(0.5)).max(Duration::from_millis(20))).await;
    }
    stop_operator.cancel();
    match tokio::time::timeout(Duration::from_secs(5), operator).await {
        Ok(Ok(Err(e))) => eprintln!("the operator stopped with an error: {e}"),
        Err(_) => eprintln!("the operator did not stop within 5s"),
        _ => {}
    }
    std::fs::create_dir_all(&args.report_dir)?;
    let json = timeline.to_json()?;
    std::fs::write(args.report_dir.join("timeline.json"), json)?;
    std::fs::write(args.report_dir.join("chart.svg"), report::render_svg(&timeline))?;
    eprintln!("report: {}/timeline.json, {}/chart.svg", args.report_dir.display(), args.report_dir.display());
    backend.shutdown().await;
    if temporary {
        let _ = std::fs::remove_file(&kubeconfig);
    }
    Ok(())
}

fn run_action(cluster: &Cluster, a: &TimedAction) -> Result<()> {
    let now = cluster.now();
    let mut store = cluster.store();
    let (kind, ns, name) = match a.action() {
        Some(Action::Delete(r)) => (r.kind.clone(), r.namespace.clone(), r.name.clone()),
        Some(Action::Scale(s)) => (s.kind.clone(), s.namespace.clone(), s.name.clone()),
        None => return Ok(()),
    };
    let Some(rt) = store.registry.all().find(|t| t.kind == kind && !t.read_only).cloned() else {
        return Err(sim_error(format!("unknown kind {kind}")));
    };
    let target = Target::new(&rt, Some(&ns), Some(&name));
    let result = match a.action() {
        Some(Action::Delete(_)) => store.delete(&target, &Default::default(), now).map(|_| ()),
        Some(Action::Scale(s)) => store
            .patch(
                &target.with_subresource("scale"),
                omniscale_sim::store::PatchType::Merge,
                &serde_json::json!({"spec": {"replicas": s.replicas}}),
                &WriteOptions::manager(SIM_MANAGER),
                now,
            )
            .map(|_| ()),
        None => Ok(()),
    };
    result.map_err(|e| sim_error(format!("{kind} {ns}/{name}: {e}")))
}

fn milli(v: &Value) -> f64 {
    omniscale_sim::control::scheduler::quantity_milli(v) as f64
}

/// One timeline sample, from the objects and metrics the way a user would see them.
fn sample(view: &View, world: &World, t: f64) -> Sample {
    let View { deployments, pods, autoscalers, nodes, pod_metrics: metrics } = view;
    let mut workloads = Vec::new();
    for d in deployments {
        let ns = d["metadata"]["namespace"].as_str().unwrap_or_default().to_owned();
        if ns == "kube-system" || ns == "omniscale-system" {
            continue;
        }
        let name = d["metadata"]["name"].as_str().unwrap_or_default().to_owned();
        let containers = d["spec"]["template"]["spec"]["containers"].as_array().cloned().unwrap_or_default();
        let cpu_req: f64 = containers.iter().map(|c| milli(&c["resources"]["requests"]["cpu"])).sum();
        let mem_req: f64 = containers.iter().map(|c| milli(&c["resources"]["requests"]["memory"]) / 1000.0).sum();
        let selector = omniscale_sim::selector::LabelSelector::from_json(&d["spec"]["selector"]).unwrap_or_default();
        let mut used = 0.0;
        let mut requested = 0.0;
        for p in pods.iter().filter(|p| p["metadata"]["namespace"] == ns.as_str() && selector.matches_object(p)) {
            let pname = p["metadata"]["name"].as_str().unwrap_or_default().to_owned();
            if let Some(m) = metrics.get(&(ns.clone(), pname)) {
                used +=
                    m["containers"].as_array().into_iter().flatten().map(|c| milli(&c["usage"]["cpu"])).sum::<f64>();
                requested += p["spec"]["containers"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|c| milli(&c["resources"]["requests"]["cpu"]))
                    .sum::<f64>();
            }
        }
        let rec = autoscalers
            .iter()
            .find(|a| a["metadata"]["namespace"] == ns.as_str() && a["spec"]["targetRef"]["name"] == name.as_str())
            .map(|a| a["status"]["vertical"]["recommendation"]["containerRecommendations"].clone())
            .and_then(|r| r.as_array().cloned())
            .filter(|r| !r.is_empty());
        let rec_sum =
            |res: &str, div: f64| rec.as_ref().map(|r| r.iter().map(|c| milli(&c["target"][res]) / div).sum::<f64>());
        workloads.push(WorkloadSample {
            namespace: ns,
            name,
            replicas: d["status"]["replicas"].as_u64().unwrap_or(0) as u32,
            desired_replicas: d["spec"]["replicas"].as_u64().unwrap_or(0) as u32,
            ready: d["status"]["readyReplicas"].as_u64().unwrap_or(0) as u32,
            cpu_utilization_percent: (requested > 0.0).then(|| 100.0 * used / requested),
            cpu_request_millis: cpu_req,
            memory_request_bytes: mem_req,
            recommendation_cpu_millis: rec_sum("cpu", 1.0),
            recommendation_memory_bytes: rec_sum("memory", 1000.0),
        });
    }
    let pending = pods
        .iter()
        .filter(|p| {
            p["spec"]["nodeName"].as_str().is_none_or(str::is_empty) && p["metadata"]["deletionTimestamp"].is_null()
        })
        .count() as u32;
    let ready_nodes = nodes.iter().filter(|n| omniscale_sim::control::is_ready(n)).count() as u32;
    let static_cost: f64 = world
        .static_nodes
        .iter()
        .filter_map(|g| {
            Some(
                instance_types::find(g.instance_type.as_deref()?)?.price(common::CapacityType::OnDemand)
                    * f64::from(g.count),
            )
        })
        .sum();
    let cloud_cost = world.cloud.as_ref().map(|c| c.hourly_cost()).unwrap_or(0.0);
    Sample {
        t,
        workloads,
        pending_pods: pending,
        nodes: nodes.len() as u32,
        ready_nodes,
        hourly_cost: static_cost + cloud_cost,
    }
}
