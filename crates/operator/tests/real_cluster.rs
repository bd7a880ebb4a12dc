#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]
//! The operator on a **real** control plane (etcd, kube-apiserver, kube-controller-manager,
//! kube-scheduler 1.36 from `OMNISCALE_KUBE_ASSETS`), running as the ServiceAccount of
//! `manifests/02-rbac.yaml` with RBAC enforced. The simulated world drives the API server as a
//! client (`omniscale_sim::remote`): nodes, kubelet, metrics APIs. Skipped without assets.
//!
//! The walkthroughs own the cluster's nodes, so each test starts a control plane of its own
//! (about 8 s) instead of sharing one; they run in parallel.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use omniscale_sim::clock::Clock;
use omniscale_sim::control::World;
use omniscale_sim::remote::{RemoteOptions, RemoteWorld};
use omniscale_sim::world::report::Timeline;
use omniscale_sim::world::scenario::Scenario;
use omniscale_testenv::{Assets, AuditEvent, ControlPlane, Options};
use serde_json::Value;
use support::moto as asg_moto;

const SA_USER: &str = "system:serviceaccount:omniscale-system:omniscale";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A control plane of this test's own, or `None` without assets.
async fn control_plane() -> Option<ControlPlane> {
    let assets = Assets::from_env()?;
    let cp = tokio::task::spawn_blocking(move || ControlPlane::start(assets, Options::default())).await.unwrap();
    Some(cp.expect("control plane"))
}

fn kubectl(cp: &ControlPlane, args: &[&str]) -> String {
    let out = cp.kubectl().args(args).output().unwrap();
    assert!(out.status.success(), "kubectl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn json(cp: &ControlPlane, args: &[&str]) -> Value {
    let mut a = args.to_vec();
    a.extend(["-o", "json"]);
    serde_json::from_str(&kubectl(cp, &a)).unwrap()
}

/// Installs what a user applies before the operator runs (CRDs, namespace, RBAC, and the
/// webhook objects when asked) and returns a kubeconfig with the ServiceAccount's token.
async fn install(cp: &ControlPlane, webhook: bool) -> PathBuf {
    let m = root().join("manifests");
    let mut files = vec!["00-crds.yaml", "01-namespace.yaml", "02-rbac.yaml"];
    if webhook {
        files.push("04-webhook.yaml");
    }
    for f in files {
        kubectl(cp, &["apply", "--server-side", "-f", m.join(f).to_str().unwrap()]);
    }
    kubectl(cp, &["wait", "--for=condition=Established", "--timeout=30s", "crd/autoscalers.omniscale.dev"]);
    cp.service_account_kubeconfig("omniscale-system", "omniscale", 2).await.unwrap()
}

/// `omniscale run` as a process of its own (killed when dropped), logging to a file.
struct Operator {
    child: Child,
    log: PathBuf,
}

impl Operator {
    fn start(cp: &ControlPlane, kubeconfig: &Path, name: &str, extra: &[&str]) -> Operator {
        Self::start_with(cp, kubeconfig, name, extra, &[])
    }

    fn start_with(
        cp: &ControlPlane,
        kubeconfig: &Path,
        name: &str,
        extra: &[&str],
        env: &[(&str, String)],
    ) -> Operator {
        let log = cp.dir().join(format!("{name}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_omniscale"))
            .args(["run", "--kubeconfig", kubeconfig.to_str().unwrap(), "--pod-name", name])
            .args(["--http-addr", "127.0.0.1:0"])
            .args(if extra.contains(&"--cloud-provider") { &[][..] } else { &["--cloud-provider", "none"][..] })
            .args(extra)
            .env("OMNISCALE_LOG", "info")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Operator { child, log }
    }

    /// SIGKILL: no lease release, no goodbye.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn eventually<T>(what: &str, limit: Duration, f: impl FnMut() -> Option<T>) -> T {
    eventually_or(what, limit, f, String::new).await
}

/// [`eventually`], with `context()` (logs, state) in the failure message.
async fn eventually_or<T>(
    what: &str,
    limit: Duration,
    mut f: impl FnMut() -> Option<T>,
    context: impl Fn() -> String,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {limit:?} waiting for {what}\n{}", context());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn world_of(example: &str) -> World {
    let text = std::fs::read_to_string(root().join("examples").join(example).join("sim/scenario.yaml")).unwrap();
    let sc = Scenario::from_yaml(&text).unwrap();
    let mut world = World::default();
    world.static_nodes = sc.nodes.clone();
    world.workloads = sc.workloads.clone();
    world
}

async fn attach(cp: &ControlPlane, example: &str) -> RemoteWorld {
    RemoteWorld::start(cp.client().await.unwrap(), world_of(example), Clock::wall(1.0), RemoteOptions::default())
        .await
        .unwrap()
}

/// Every request the operator's ServiceAccount made: none refused, each covered by a row of
/// the code's permission table (which the manifest matches exactly; see `rbac` unit tests).
fn assert_rbac_clean(cp: &ControlPlane) -> Vec<AuditEvent> {
    let events: Vec<AuditEvent> =
        cp.audit_events().unwrap().into_iter().filter(|e| e.user.username == SA_USER).collect();
    assert!(!events.is_empty(), "the operator made no requests as its ServiceAccount");
    let forbidden: Vec<String> = events
        .iter()
        .filter(|e| e.response_status.as_ref().is_some_and(|s| s.code == 403))
        .map(|e| format!("{} {}", e.verb, e.request_uri))
        .collect();
    assert!(forbidden.is_empty(), "403 Forbidden for the operator: {forbidden:?}");
    for e in &events {
        let Some(o) = &e.object_ref else { continue };
        if o.resource.is_empty() {
            continue;
        }
        let resource =
            if o.subresource.is_empty() { o.resource.clone() } else { format!("{}/{}", o.resource, o.subresource) };
        let name = (!o.name.is_empty()).then_some(o.name.as_str());
        let ns = (!o.namespace.is_empty()).then_some(o.namespace.as_str());
        assert!(
            omniscale_operator::rbac::allowing(&o.api_group, &resource, &e.verb, name, ns, "omniscale-system")
                .is_some(),
            "a request the permission table does not list: {} {} ({}/{resource} {name:?})",
            e.verb,
            e.request_uri,
            o.api_group
        );
    }
    events
}

fn used(events: &[AuditEvent], verb: &str, resource: &str, subresource: &str) -> usize {
    events
        .iter()
        .filter(|e| e.verb == verb)
        .filter(|e| e.object_ref.as_ref().is_some_and(|o| o.resource == resource && o.subresource == subresource))
        .count()
}

/// The distinct replica counts a workload went through, and when each began.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn php_apache_makes_upstream_hpas_decisions_on_the_same_cluster() {
    let Some(cp) = control_plane().await else { return };
    let sa = install(&cp, false).await;
    let report = cp.dir().join("report");
    // The same scenario on the embedded cluster at the same time (its HPA is skipped there):
    // omniscale must decide the same on both backends.
    // Its log goes to a file: a pipe nobody reads for the 140 s would stall it once full.
    let embedded_report = cp.dir().join("report-embedded");
    let embedded_log_path = cp.dir().join("embedded-sim.log");
    let mut embedded = Command::new(env!("CARGO_BIN_EXE_omniscale"))
        .args(["sim", "--scenario", root().join("examples/php-apache-vs-hpa").to_str().unwrap()])
        .args(["--report-dir", embedded_report.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&embedded_log_path).unwrap())
        .spawn()
        .unwrap();
    // The one command a user runs, against this cluster; omniscale with the ServiceAccount's
    // token, upstream HPA in kube-controller-manager beside it.
    let out = Command::new(env!("CARGO_BIN_EXE_omniscale"))
        .args(["sim", "--scenario", root().join("examples/php-apache-vs-hpa").to_str().unwrap()])
        .args(["--kubeconfig", cp.kubeconfig().to_str().unwrap(), "--operator-kubeconfig", sa.to_str().unwrap()])
        .args(["--report-dir", report.to_str().unwrap()])
        .env("OMNISCALE_LOG", "info")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "omniscale sim: {stderr}");
    let timeline = Timeline::from_json(&std::fs::read_to_string(report.join("timeline.json")).unwrap()).unwrap();
    let ours = timeline.replica_changes("php-apache");
    let upstream = timeline.replica_changes("php-apache-hpa");
    println!("omniscale: {ours:?}\nupstream HPA: {upstream:?}");
    let counts = |s: &[(u32, f64)]| s.iter().map(|(r, _)| *r).collect::<Vec<_>>();
    assert_eq!(counts(&ours), counts(&upstream), "omniscale {ours:?} vs upstream HPA {upstream:?}\n{stderr}");
    assert!(counts(&ours).len() >= 3 && counts(&ours)[0] == 1, "scaled up and back down: {ours:?}");
    assert!(*counts(&ours).iter().max().unwrap() >= 4, "{ours:?}");
    assert_eq!(counts(&ours).last(), Some(&1));
    // Both loop every 15 s from different starting instants; samples are 5 s apart.
    for ((_, a), (_, b)) in ours.iter().zip(&upstream) {
        assert!((a - b).abs() <= 20.0, "decisions at {a} s and {b} s: {ours:?} vs {upstream:?}");
    }
    let embedded_status = embedded.wait().unwrap();
    let embedded_log = std::fs::read_to_string(&embedded_log_path).unwrap_or_default();
    assert!(embedded_status.success(), "embedded omniscale sim: {embedded_log}");
    assert!(embedded_log.contains("no HorizontalPodAutoscaler controller"), "{embedded_log}");
    let on_embedded = Timeline::from_json(&std::fs::read_to_string(embedded_report.join("timeline.json")).unwrap())
        .map(|t| t.replica_changes("php-apache"))
        .unwrap();
    println!("omniscale on the embedded cluster: {on_embedded:?}");
    assert_eq!(counts(&on_embedded), counts(&ours), "embedded {on_embedded:?} vs real {ours:?}");
    for ((_, a), (_, b)) in ours.iter().zip(&on_embedded) {
        assert!((a - b).abs() <= 20.0, "decisions at {a} s (real) and {b} s (embedded)");
    }
    let events = assert_rbac_clean(&cp);
    assert!(used(&events, "patch", "deployments", "scale") + used(&events, "update", "deployments", "scale") >= 2);
    assert!(used(&events, "list", "pods", "") >= 1);
}

fn hamster_pods(cp: &ControlPlane) -> Vec<Value> {
    json(cp, &["get", "pods", "-n", "default", "-l", "app=hamster"])["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .collect()
}

fn request(p: &Value, field: &str) -> String {
    let r = if field == "status" {
        &p["status"]["containerStatuses"][0]["resources"]["requests"]
    } else {
        &p["spec"]["containers"][0]["resources"]["requests"]
    };
    format!("{}/{}", r["cpu"].as_str().unwrap_or("-"), r["memory"].as_str().unwrap_or("-"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hamster_is_resized_in_place_and_new_pods_get_the_recommendation_from_the_webhook() {
    let Some(cp) = control_plane().await else { return };
    let sa = install(&cp, true).await;
    // kube-apiserver calls the webhook through its Service, checking the certificate against
    // omniscale-webhook.omniscale-system.svc; the Service routes to this host.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    cp.route_service_to_host("omniscale-system", "omniscale-webhook", port).await.unwrap();
    let patch = format!(r#"[{{"op":"replace","path":"/webhooks/0/clientConfig/service/port","value":{port}}}]"#);
    kubectl(&cp, &["patch", "mutatingwebhookconfiguration", "omniscale", "--type=json", "-p", &patch]);
    let world = attach(&cp, "hamster").await;
    let mut op = Operator::start(&cp, &sa, "omniscale-a", &["--webhook-addr", &format!("127.0.0.1:{port}")]);
    let ex = root().join("examples/hamster");
    kubectl(&cp, &["apply", "--server-side", "-f", ex.join("deployment.yaml").to_str().unwrap()]);
    kubectl(&cp, &["apply", "--server-side", "-f", ex.join("autoscaler.yaml").to_str().unwrap()]);

    // The caBundle the operator publishes is what kube-apiserver then trusts.
    eventually("the caBundle published", Duration::from_secs(60), || {
        let mwc = json(&cp, &["get", "mutatingwebhookconfiguration", "omniscale"]);
        mwc["webhooks"][0]["clientConfig"]["caBundle"].as_str().filter(|s| !s.is_empty()).map(|_| ())
    })
    .await;
    let first: Vec<String> = eventually("two hamster pods running", Duration::from_secs(60), || {
        let pods = hamster_pods(&cp);
        (pods.len() == 2 && pods.iter().all(|p| p["status"]["phase"] == "Running"))
            .then(|| pods.iter().map(|p| p["metadata"]["uid"].as_str().unwrap().to_owned()).collect())
    })
    .await;
    let rec = eventually("upstream's recommendation", Duration::from_secs(180), || {
        let a = json(&cp, &["get", "autoscaler", "hamster", "-n", "default"]);
        let t = &a["status"]["vertical"]["recommendation"]["containerRecommendations"][0]["target"];
        (t["cpu"] == "587m" && t["memory"] == "262144k").then(|| t.clone())
    })
    .await;
    assert_eq!(rec["cpu"], "587m");
    eventually("both pods resized in place", Duration::from_secs(120), || {
        let pods = hamster_pods(&cp);
        let done = pods.len() == 2
            && pods.iter().all(|p| request(p, "spec") == "587m/262144k" && request(p, "status") == "587m/262144k");
        done.then_some(())
    })
    .await;
    let uids: Vec<String> =
        hamster_pods(&cp).iter().map(|p| p["metadata"]["uid"].as_str().unwrap().to_owned()).collect();
    assert_eq!(sorted(uids), sorted(first.clone()), "resized in place, not recreated");
    let events = assert_rbac_clean(&cp);
    assert!(used(&events, "patch", "pods", "resize") >= 2, "through pods/resize");
    assert_eq!(used(&events, "create", "pods", "eviction"), 0, "no eviction was needed");

    // A new pod gets the recommendation at admission, from kube-apiserver's call.
    let victim = hamster_pods(&cp)[0]["metadata"]["name"].as_str().unwrap().to_owned();
    kubectl(&cp, &["delete", "pod", &victim, "-n", "default", "--wait=false"]);
    let fresh = eventually("a replacement pod", Duration::from_secs(30), || {
        hamster_pods(&cp).into_iter().find(|p| !first.iter().any(|u| p["metadata"]["uid"] == u.as_str()))
    })
    .await;
    assert_eq!(request(&fresh, "spec"), "587m/262144k", "{fresh}");
    let note = fresh["metadata"]["annotations"]["vpaUpdates"].as_str().unwrap_or_default();
    assert!(note.contains("hamster"), "admission annotation: {fresh}");

    // With the operator gone, pods are still created (failurePolicy Ignore), as written.
    op.kill();
    let before = Instant::now();
    kubectl(&cp, &["scale", "deployment", "hamster", "-n", "default", "--replicas=3"]);
    let unpatched = eventually("a pod created without the webhook", Duration::from_secs(30), || {
        hamster_pods(&cp).into_iter().find(|p| request(p, "spec") == "100m/50Mi")
    })
    .await;
    assert!(before.elapsed() < Duration::from_secs(20), "created within the webhook timeout: {:?}", before.elapsed());
    assert!(unpatched["metadata"]["annotations"]["vpaUpdates"].is_null());
    world.shutdown().await;
    let log = op.log();
    assert!(!log.contains("panicked"), "{log}");
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

fn lease_holder(cp: &ControlPlane) -> Option<String> {
    let out = cp
        .kubectl()
        .args(["get", "lease", "omniscale-leader", "-n", "omniscale-system", "-o", "json"])
        .output()
        .ok()?;
    let v: Value = serde_json::from_slice(&out.stdout).ok()?;
    v["spec"]["holderIdentity"].as_str().filter(|s| !s.is_empty()).map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_one_leader_failover_within_the_lease_and_no_double_scaling() {
    let Some(cp) = control_plane().await else { return };
    let sa = install(&cp, false).await;
    // The side-by-side example's load model (from 15 s) for the php-apache Deployment.
    let world = attach(&cp, "php-apache-vs-hpa").await;
    let lease = ["--lease-duration", "6s", "--renew-deadline", "4s", "--retry-period", "1s", "--disable-webhook"];
    let mut a = Operator::start(&cp, &sa, "omniscale-a", &lease);
    let mut b = Operator::start(&cp, &sa, "omniscale-b", &lease);
    let ex = root().join("examples/php-apache");
    kubectl(&cp, &["apply", "--server-side", "-f", ex.join("deployment.yaml").to_str().unwrap()]);
    kubectl(&cp, &["apply", "--server-side", "-f", ex.join("autoscaler.yaml").to_str().unwrap()]);
    let leader = eventually("a leader", Duration::from_secs(30), || lease_holder(&cp)).await;
    // The load starts at 15 s: the leader scales up once it is there.
    let scaled = eventually("the scale-up", Duration::from_secs(150), || {
        let d = json(&cp, &["get", "deployment", "php-apache", "-n", "default"]);
        d["spec"]["replicas"].as_u64().filter(|r| *r > 1)
    })
    .await;
    // Kill the leader without letting it release the Lease.
    // Identities are `<pod name>_<nonce>`.
    let (dead, survivor) =
        if leader.starts_with("omniscale-a_") { (&mut a, "omniscale-b_") } else { (&mut b, "omniscale-a_") };
    dead.kill();
    let killed = Instant::now();
    eventually("the other replica leading", Duration::from_secs(20), || {
        lease_holder(&cp).filter(|h| h.starts_with(survivor)).map(|_| ())
    })
    .await;
    let took = killed.elapsed();
    // Lease duration plus one retry period, plus polling slack.
    assert!(took <= Duration::from_secs(6 + 1 + 2), "took over after {took:?}");
    // The new leader, under the same load, sees the same desired count: no second write.
    tokio::time::sleep(Duration::from_secs(20)).await;
    let d = json(&cp, &["get", "deployment", "php-apache", "-n", "default"]);
    let events = assert_rbac_clean(&cp);
    let writes = used(&events, "patch", "deployments", "scale") + used(&events, "update", "deployments", "scale");
    let now = d["spec"]["replicas"].as_u64().unwrap();
    assert!(now >= scaled, "{now} < {scaled}");
    // Each write is a distinct decision (1 -> scaled, then at most one settling step).
    assert!(writes <= 2 && writes as u64 <= now, "{writes} scale writes for 1 -> {scaled} -> {now}");
    world.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// nginx-test: an Auto Scaling Group on moto whose instances join the real cluster as Nodes
// ---------------------------------------------------------------------------------------------

/// What the bridge saw: moto's desired capacity values, instances that became Nodes and left.
#[derive(Debug, Default)]
struct Bridged {
    desired: Vec<i32>,
    joined: Vec<String>,
    left: Vec<String>,
    errors: Vec<String>,
}

/// One pass: a Node (served by the simulated kubelet) per `InService` instance, none for an
/// instance that left — what EKS nodes joining and leaving look like to the API server.
async fn bridge_once(
    asg: &aws_sdk_autoscaling::Client,
    nodes: &kube::Api<k8s_openapi::api::core::v1::Node>,
    seen: &std::sync::Mutex<Bridged>,
) -> Result<(), String> {
    use kube::api::{DeleteParams, ListParams, PostParams};
    let (desired, running) = asg_moto::describe(asg).await?;
    {
        let mut s = seen.lock().unwrap();
        if s.desired.last() != Some(&desired) {
            s.desired.push(desired);
        }
    }
    let existing = nodes.list(&ListParams::default()).await.map_err(|e| format!("listing nodes: {e}"))?.items;
    for n in &existing {
        let id = n.spec.as_ref().and_then(|s| s.provider_id.as_deref()).and_then(|p| p.rsplit('/').next());
        let Some(id) = id.filter(|id| !running.iter().any(|(r, ..)| r == id)) else { continue };
        let name = n.metadata.name.clone().unwrap_or_default();
        nodes.delete(&name, &DeleteParams::default()).await.map_err(|e| format!("deleting node {name}: {e}"))?;
        seen.lock().unwrap().left.push(id.to_owned());
    }
    let now = jiff::Timestamp::now().round(jiff::Unit::Second).unwrap().to_string();
    for (id, zone, instance_type) in &running {
        if existing.iter().any(|n| n.metadata.name.as_deref() == Some(asg_moto::node_name(id).as_str())) {
            continue;
        }
        let index = seen.lock().unwrap().joined.len();
        let mut node = asg_moto::node_for(index, id, zone, instance_type, &now);
        node.metadata.labels.get_or_insert_default().insert(omniscale_sim::remote::KUBELET_LABEL.into(), "true".into());
        nodes.create(&PostParams::default(), &node).await.map_err(|e| format!("creating node for {id}: {e}"))?;
        seen.lock().unwrap().joined.push(id.clone());
    }
    Ok(())
}

fn nginx(cp: &ControlPlane) -> (usize, usize) {
    let pods = json(cp, &["get", "pods", "-n", "default", "-l", "app=nginx"]);
    let live: Vec<&Value> = pods["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .collect();
    let running = live
        .iter()
        .filter(|p| {
            p["status"]["phase"] == "Running"
                && p["status"]["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
        .count();
    (live.len(), running)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_test_grows_the_moto_group_its_instances_join_as_nodes_and_it_shrinks_back() {
    let Some(cp) = control_plane().await else { return };
    let moto = omniscale_aws::moto::server().unwrap_or_else(|e| panic!("{e}"));
    let sdk = moto.sdk_config().await;
    let asg = aws_sdk_autoscaling::Client::new(&sdk);
    asg_moto::create_group(&asg, &aws_sdk_ec2::Client::new(&sdk)).await;
    let sa = install(&cp, false).await;
    // No simulated nodes: the cluster's only nodes are the group's instances.
    let world =
        RemoteWorld::start(cp.client().await.unwrap(), World::default(), Clock::wall(1.0), RemoteOptions::default())
            .await
            .unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Bridged::default()));
    let stop = tokio_util::sync::CancellationToken::new();
    let bridge = {
        let (asg, seen, stop) = (asg.clone(), seen.clone(), stop.clone());
        let nodes = kube::Api::all(cp.client().await.unwrap());
        tokio::spawn(async move {
            loop {
                if let Err(e) = bridge_once(&asg, &nodes, &seen).await {
                    seen.lock().unwrap().errors.push(e);
                }
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
            }
        })
    };
    // The walkthrough's NodePool with its 10-minute timers shortened to seconds (1x here).
    let ex = root().join("examples/nginx-test");
    let pool = std::fs::read_to_string(ex.join("nodepool.yaml"))
        .unwrap()
        .replace("unneededTime: 10m, delayAfterAdd: 10m", "unneededTime: 15s, delayAfterAdd: 5s");
    assert!(pool.contains("unneededTime: 15s"), "{pool}");
    let path = cp.dir().join("nodepool.yaml");
    std::fs::write(&path, pool).unwrap();
    kubectl(&cp, &["apply", "--server-side", "-f", path.to_str().unwrap()]);
    eventually("the group's first instance as a Ready Node", Duration::from_secs(30), || {
        let out = kubectl(&cp, &["get", "nodes", "-o", "name"]);
        (out.lines().count() == 1).then_some(())
    })
    .await;
    kubectl(&cp, &["apply", "--server-side", "-f", ex.join("deployment.yaml").to_str().unwrap()]);
    // The real scheduler fits three 500m pods on a t3.small; seven stay unschedulable.
    eventually("3 of 10 nginx pods running", Duration::from_secs(60), || (nginx(&cp) == (10, 3)).then_some(())).await;

    // The operator reads moto's address and dummy credentials from the standard environment.
    let aws = [
        ("AWS_ENDPOINT_URL", moto.endpoint()),
        ("AWS_REGION", omniscale_aws::moto::REGION.to_owned()),
        ("AWS_ACCESS_KEY_ID", "test".to_owned()),
        ("AWS_SECRET_ACCESS_KEY", "test".to_owned()),
        ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
    ];
    let op = Operator::start_with(
        &cp,
        &sa,
        "omniscale-a",
        &["--disable-webhook", "--cloud-provider", "aws", "--scan-interval", "2s"],
        &aws,
    );
    let state = || format!("{:?}; pods {:?}", seen.lock().unwrap(), nginx(&cp));
    let context = || format!("{}\n{}", state(), op.log());
    eventually_or(
        "all 10 nginx pods running on the group's new nodes",
        Duration::from_secs(120),
        || (nginx(&cp) == (10, 10)).then_some(()),
        context,
    )
    .await;
    let (desired, running) = asg_moto::describe(&asg).await.unwrap();
    // Four t3.small nodes hold the ten pods, bought in one step. (The new nodes report Ready
    // a moment before kube-controller-manager lifts their not-ready taint; counting them as
    // ready then once bought a fifth node here, which the simulator, without that taint,
    // never showed.)
    assert!(desired == 4 && running.len() == 4, "{}\n{}", state(), op.log());
    assert_eq!(seen.lock().unwrap().desired[..2], [1, 4], "one SetDesiredCapacity for the seven pods: {}", state());
    let nodes = kubectl(&cp, &["get", "nodes", "-o", "name"]);
    assert_eq!(nodes.lines().count(), desired as usize, "{nodes}");

    // The Deployment goes; the empty nodes are removed, the group returns to its minimum.
    kubectl(&cp, &["delete", "deployment", "nginx", "-n", "default"]);
    eventually_or(
        "the group back at 1 instance",
        Duration::from_secs(150),
        || {
            let s = seen.lock().unwrap();
            (s.desired.last() == Some(&1) && s.joined.len() - s.left.len() == 1).then_some(())
        },
        context,
    )
    .await;
    let nodes = kubectl(&cp, &["get", "nodes", "-o", "name"]);
    assert_eq!(nodes.lines().count(), 1, "{nodes}");
    let events = assert_rbac_clean(&cp);
    assert!(used(&events, "patch", "nodes", "") >= 3, "the deletion taint on each removed node");
    stop.cancel();
    let _ = bridge.await;
    {
        let s = seen.lock().unwrap();
        assert!(s.errors.is_empty(), "bridge errors: {:?}", s.errors);
        let peak = s.desired.iter().position(|d| *d == s.desired.iter().copied().max().unwrap_or(0)).unwrap_or(0);
        assert!(s.desired[peak..].windows(2).all(|w| w[1] < w[0]), "only down after the scale-up: {s:?}");
    }
    world.shutdown().await;
    let log = op.log();
    assert!(!log.contains("panicked"), "{log}");
}
