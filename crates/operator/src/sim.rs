//! `omniscale sim`: the simulated cluster, and with `--scenario`, the operator running against it
//! while the scenario's load and actions play out, sampled into a live table and a report.

use crate::cli::{Cli, SimArgs};
use crate::{Error, Result};
use clap::Parser;
use omniscale_sim::Cluster;
use omniscale_sim::control::World;
use omniscale_sim::runtime::{self, Running, SimOptions};
use omniscale_sim::store::{Target, WriteOptions};
use omniscale_sim::world::report::{self, Sample, Timeline, WorkloadSample};
use omniscale_sim::world::scenario::{Action, Scenario, StaticNodes};
use omniscale_sim::world::{common, instance_types};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub async fn sim(args: SimArgs) -> Result<()> {
    match &args.scenario {
        Some(dir) if !args.serve => scenario(&args, dir).await,
        _ => serve(&args).await,
    }
}

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
    let rt = store
        .registry
        .by_kind(&group, &version, kind)
        .cloned()
        .ok_or_else(|| sim_error(format!("no resource for {}/{kind}", obj["apiVersion"])))?;
    let ns = obj["metadata"]["namespace"].as_str().unwrap_or("default").to_owned();
    let target = Target::new(&rt, rt.namespaced.then_some(ns.as_str()), None);
    let now = cluster.now();
    match store.create(&target, obj, &WriteOptions::manager("omniscale-sim"), now) {
        Ok(_) => Ok(()),
        Err(e) if e.code == 409 => Ok(()),
        Err(e) => Err(sim_error(e)),
    }
}

async fn scenario(args: &SimArgs, dir: &Path) -> Result<()> {
    let file = dir.join("sim").join("scenario.yaml");
    let text = std::fs::read_to_string(&file).map_err(|e| sim_error(format!("{}: {e}", file.display())))?;
    let mut sc = Scenario::from_yaml(&text).map_err(|e| sim_error(format!("{}: {e}", file.display())))?;
    if let Some(d) = args.duration {
        sc.duration = d;
    }
    let docs = manifests(dir)?;
    let speed = args.speed.unwrap_or(sc.speed);
    let mut world = World::default();
    world.cloud = sc.build_cloud(0.0).map_err(sim_error)?;
    world.asgs = sc.cloud.as_ref().map(|c| c.auto_scaling_groups.clone()).unwrap_or_default();
    world.static_nodes = sc.nodes.clone();
    world.workloads = sc.workloads.clone();
    world.external_metrics = sc.external_metrics.clone();
    let opts = SimOptions { listen: args.listen, speed, ..SimOptions::default() };
    let running = runtime::start(opts, world).await.map_err(sim_error)?;
    announce(&running, args)?;
    let cluster = running.cluster.clone();
    for crd in omniscale_api::crds() {
        create(&cluster, serde_json::to_value(&crd)?)?;
    }
    create(
        &cluster,
        serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "omniscale-system"}}),
    )?;
    for doc in docs {
        create(&cluster, doc)?;
    }
    // The operator, unmodified, against the simulated API server.
    // One file per simulated cluster: several may run in one process (tests).
    let port = running.url.rsplit(':').next().unwrap_or("0");
    let kubeconfig = std::env::temp_dir().join(format!("omniscale-sim-{}-{port}.kubeconfig", std::process::id()));
    std::fs::write(&kubeconfig, running.kubeconfig())?;
    let cli = Cli::try_parse_from([
        "omniscale",
        "run",
        "--kubeconfig",
        &kubeconfig.to_string_lossy(),
        "--pod-name",
        "omniscale-sim",
        "--http-addr",
        "127.0.0.1:0",
    ])
    .map_err(sim_error)?;
    let crate::cli::Command::Run(run_args) = cli.command else {
        return Err(sim_error("internal: expected run arguments"));
    };
    let stop_operator = tokio_util::sync::CancellationToken::new();
    // The simulated cloud, called in memory where `omniscale run` would call AWS.
    let cloud: Option<std::sync::Arc<dyn omniscale_nodes::CloudProvider>> =
        running.world.lock().map(|w| w.cloud.is_some()).unwrap_or(false).then(|| {
            std::sync::Arc::new(crate::cloud::SimCloud::new(running.world.clone(), cluster.shared.clock.clone()))
                as std::sync::Arc<dyn omniscale_nodes::CloudProvider>
        });
    let operator =
        tokio::spawn(crate::run::run_in(*run_args, stop_operator.clone(), cluster.shared.clock.clone(), cloud));

    eprintln!("scenario {} ({}): {} simulated seconds at {speed}x", sc.name, sc.description.trim(), sc.duration);
    println!("{}", report::progress_header());
    let clock = cluster.shared.clock.clone();
    let mut actions = sc.sorted_actions().into_iter().cloned().collect::<Vec<_>>().into_iter().peekable();
    let mut timeline = Timeline { scenario: sc.name.clone(), speed, samples: Vec::new() };
    let mut next_sample = 0.0;
    loop {
        let t = clock.elapsed();
        while let Some(a) = actions.next_if(|a| a.at <= t) {
            run_action(&cluster, &a);
        }
        if t >= next_sample {
            let s = sample(&running, t);
            println!("{}", report::progress_row(&s));
            timeline.samples.push(s);
            next_sample += sc.sample_every;
        }
        if t >= sc.duration {
            break;
        }
        if operator.is_finished() {
            break;
        }
        tokio::time::sleep(clock.wall_duration(Duration::from_secs_f64(0.5)).max(Duration::from_millis(20))).await;
    }
    stop_operator.cancel();
    if tokio::time::timeout(Duration::from_secs(5), operator).await.is_err() {
        eprintln!("the operator did not stop within 5s");
    }
    std::fs::create_dir_all(&args.report_dir)?;
    let json = timeline.to_json()?;
    std::fs::write(args.report_dir.join("timeline.json"), json)?;
    std::fs::write(args.report_dir.join("chart.svg"), report::render_svg(&timeline))?;
    eprintln!("report: {}/timeline.json, {}/chart.svg", args.report_dir.display(), args.report_dir.display());
    running.shutdown().await;
    let _ = std::fs::remove_file(&kubeconfig);
    Ok(())
}

fn run_action(cluster: &Cluster, a: &omniscale_sim::world::scenario::TimedAction) {
    let now = cluster.now();
    let mut store = cluster.store();
    let (kind, ns, name) = match a.action() {
        Some(Action::Delete(r)) => (r.kind.clone(), r.namespace.clone(), r.name.clone()),
        Some(Action::Scale(s)) => (s.kind.clone(), s.namespace.clone(), s.name.clone()),
        None => return,
    };
    let Some(rt) = store.registry.all().find(|t| t.kind == kind && !t.read_only).cloned() else {
        eprintln!("action at {}s: unknown kind {kind}", a.at);
        return;
    };
    let target = Target::new(&rt, Some(&ns), Some(&name));
    let result = match a.action() {
        Some(Action::Delete(_)) => store.delete(&target, &Default::default(), now).map(|_| ()),
        Some(Action::Scale(s)) => store
            .patch(
                &target.with_subresource("scale"),
                omniscale_sim::store::PatchType::Merge,
                &serde_json::json!({"spec": {"replicas": s.replicas}}),
                &WriteOptions::manager("omniscale-sim"),
                now,
            )
            .map(|_| ()),
        None => Ok(()),
    };
    if let Err(e) = result {
        eprintln!("action at {}s on {kind} {ns}/{name}: {e}", a.at);
    }
}

fn milli(v: &Value) -> f64 {
    omniscale_sim::control::scheduler::quantity_milli(v) as f64
}

/// One timeline sample, read from the store and metrics the way a user would see them.
fn sample(running: &Running, t: f64) -> Sample {
    let cluster = &running.cluster;
    let store = cluster.store();
    let metrics = cluster.shared.metrics.read().map(|m| m.pods.clone()).unwrap_or_default();
    let key = omniscale_sim::registry::ResourceKey::new;
    let pods = store.all(&key("", "pods"), None);
    let autoscalers = store.all(&key("omniscale.dev", "autoscalers"), None);
    let mut workloads = Vec::new();
    for d in store.all(&key("apps", "deployments"), None) {
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
    let nodes = store.all(&key("", "nodes"), None);
    let ready_nodes = nodes.iter().filter(|n| omniscale_sim::control::is_ready(n)).count() as u32;
    drop(store);
    let world = running.world.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
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
