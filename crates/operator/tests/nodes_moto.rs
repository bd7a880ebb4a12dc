#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]
//! The node shell end to end against a real `moto_server`: the same operator that drives the
//! simulated cloud drives an Auto Scaling Group over the AWS wire protocol, through
//! `omniscale_aws::AwsProvider`, and changes its desired capacity the same way.
//!
//! Nothing in moto runs a kubelet, so the test is the bridge: a background task describes the
//! group every 200 ms and makes the simulated cluster's Nodes match its `InService` instances,
//! as EKS nodes joining and leaving would. The simulated scheduler then binds pods to them.
//!
//! moto is found as `crates/aws/tests/moto.rs` finds it (`omniscale_aws::moto`); the server is
//! per test binary. This binary's one test owns the `demo` cluster's discovery tags on it: a test
//! added here must use other tag and group names.

mod support;

use support::moto::*;

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use omniscale_api::NodePool;
use omniscale_aws::{AwsProvider, Options};
use omniscale_nodes::provider::BoxFuture;
use omniscale_nodes::{CloudProvider, GroupSource, NodeGroup, ProviderError, TO_BE_DELETED_TAINT};
use omniscale_sim::control::World;
use omniscale_sim::runtime::{self, SimOptions};
use tokio_util::sync::CancellationToken;

/// Simulated seconds per wall second: the pool's 10-minute unneeded time and delay after a
/// scale-up pass in 10 s.
const SPEED: f64 = 60.0;
const BRIDGE_EVERY: Duration = Duration::from_millis(200);

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Polls `check` every 100 ms until it is `Ok`; panics after `timeout` with `what` and the last
/// state `check` described.
async fn eventually<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let last = match check().await {
            Ok(()) => return,
            Err(state) => state,
        };
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}; last seen: {last}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What the operator asked of the cloud.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Call {
    SetDesired(String, u32),
    Terminate(String, String),
}

/// `AwsProvider` with every write the operator makes recorded, so the test can assert on what
/// was asked and not only on where moto ended up.
#[derive(Debug)]
struct Recording {
    inner: AwsProvider,
    calls: Arc<Mutex<Vec<Call>>>,
}

impl CloudProvider for Recording {
    fn node_groups<'a>(&'a self, sources: &'a [GroupSource]) -> BoxFuture<'a, Result<Vec<NodeGroup>, ProviderError>> {
        self.inner.node_groups(sources)
    }

    fn set_desired_capacity<'a>(&'a self, group: &'a str, desired: u32) -> BoxFuture<'a, Result<(), ProviderError>> {
        self.calls.lock().unwrap().push(Call::SetDesired(group.to_owned(), desired));
        self.inner.set_desired_capacity(group, desired)
    }

    fn terminate_instance<'a>(
        &'a self,
        group: &'a str,
        instance_id: &'a str,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        self.calls.lock().unwrap().push(Call::Terminate(group.to_owned(), instance_id.to_owned()));
        self.inner.terminate_instance(group, instance_id)
    }
}

// ---------------------------------------------------------------------------------------------
// The bridge: moto's instances → the simulated cluster's Nodes
// ---------------------------------------------------------------------------------------------

/// What the bridge saw.
#[derive(Debug, Default)]
struct Seen {
    /// moto's desired capacity, each value it took (consecutive repeats folded).
    desired: Vec<i32>,
    /// `InService` instances at the last look.
    in_service: usize,
    /// Instance ids that became Nodes, in order.
    joined: Vec<String>,
    /// Instance ids whose Node was removed because the instance left, with whether the Node
    /// carried the deletion taint then.
    left: Vec<(String, bool)>,
    /// Anything that went wrong (asserted empty at the end).
    errors: Vec<String>,
}

fn tainted(n: &Node) -> bool {
    n.spec.as_ref().and_then(|s| s.taints.as_ref()).is_some_and(|t| t.iter().any(|t| t.key == TO_BE_DELETED_TAINT))
}

/// One pass: one Ready Node per `InService` instance, no Node for an instance that left.
async fn bridge_once(
    asg: &aws_sdk_autoscaling::Client,
    nodes: &Api<Node>,
    sim: &omniscale_sim::Cluster,
    seen: &Mutex<Seen>,
) -> Result<(), String> {
    let (desired, running) = describe(asg).await?;
    {
        let mut s = seen.lock().unwrap();
        if s.desired.last() != Some(&desired) {
            s.desired.push(desired);
        }
        s.in_service = running.len();
    }
    let existing = nodes.list(&ListParams::default()).await.map_err(|e| format!("listing nodes: {e}"))?.items;
    let ids: BTreeSet<&str> = running.iter().map(|(id, ..)| id.as_str()).collect();
    for n in &existing {
        let id = n.spec.as_ref().and_then(|s| s.provider_id.as_deref()).and_then(|p| p.rsplit('/').next());
        let Some(id) = id.filter(|id| !ids.contains(id)) else { continue };
        let name = n.metadata.name.clone().unwrap_or_default();
        nodes.delete(&name, &DeleteParams::default()).await.map_err(|e| format!("deleting node {name}: {e}"))?;
        seen.lock().unwrap().left.push((id.to_owned(), tainted(n)));
    }
    let names: BTreeSet<String> = existing.iter().filter_map(|n| n.metadata.name.clone()).collect();
    let now = sim.now().round(jiff::Unit::Second).unwrap().to_string();
    for (id, zone, instance_type) in &running {
        if names.contains(&node_name(id)) {
            continue;
        }
        if instance_type != INSTANCE_TYPE {
            return Err(format!("instance {id} is a {instance_type}; the bridge only knows {INSTANCE_TYPE}"));
        }
        let index = seen.lock().unwrap().joined.len();
        let node = node_for(index, id, zone, instance_type, &now);
        nodes.create(&PostParams::default(), &node).await.map_err(|e| format!("creating node for {id}: {e}"))?;
        seen.lock().unwrap().joined.push(id.clone());
    }
    Ok(())
}

fn start_bridge(
    asg: aws_sdk_autoscaling::Client,
    nodes: Api<Node>,
    sim: omniscale_sim::Cluster,
    seen: Arc<Mutex<Seen>>,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            if let Err(e) = bridge_once(&asg, &nodes, &sim, &seen).await {
                seen.lock().unwrap().errors.push(e);
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(BRIDGE_EVERY) => {}
            }
        }
    })
}

// ---------------------------------------------------------------------------------------------
// Set-up
// ---------------------------------------------------------------------------------------------

/// The walkthrough's NodePool (unchanged).
async fn install(client: &kube::Client) {
    let pool: NodePool = serde_yaml::from_str(&example("nodepool.yaml")).unwrap();
    let spec = pool.spec.auto_scaling_group.as_ref().unwrap();
    assert_eq!(spec.discovery.as_ref().map(|d| d.cluster_name.as_str()), Some(CLUSTER), "the example's cluster");
    Api::<NodePool>::all(client.clone()).create(&PostParams::default(), &pool).await.unwrap();
}

fn example(file: &str) -> String {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/nginx-test");
    std::fs::read_to_string(dir.join(file)).unwrap()
}

/// The nginx pods: (all, Running on a bridge node, unschedulable), terminating ones counted only
/// in the first.
async fn nginx_pods(pods: &Api<Pod>) -> Result<(usize, usize, usize), String> {
    let list = pods.list(&ListParams::default().labels("app=nginx")).await.map_err(|e| e.to_string())?.items;
    let live: Vec<&Pod> = list.iter().filter(|p| p.metadata.deletion_timestamp.is_none()).collect();
    let running = live
        .iter()
        .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()).is_some_and(|n| n.starts_with("ip-i-")))
        .count();
    let unschedulable = live.iter().filter(|p| omniscale_nodes::input::unschedulable(p)).count();
    Ok((list.len(), running, unschedulable))
}

fn calls(log: &Mutex<Vec<Call>>) -> Vec<Call> {
    log.lock().unwrap().clone()
}

// ---------------------------------------------------------------------------------------------
// The test
// ---------------------------------------------------------------------------------------------

/// The nginx-test walkthrough on moto: one t3.small node holds 3 of the 10 nginx pods; the
/// operator raises the group's desired capacity 1 → 4 (a t3.small takes three 500m/512Mi pods);
/// the pods run on the new nodes; the Deployment is deleted and the three empty nodes are
/// removed by TerminateInstanceInAutoScalingGroup with decrement, back to the minimum of 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_operator_against_moto_changes_desired_capacity_the_same_way() {
    let started = Instant::now();
    omniscale_operator::install_crypto_provider();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();

    // moto: the group at its minimum, one instance.
    let sdk = omniscale_aws::moto::server().unwrap_or_else(|e| panic!("{e}")).sdk_config().await;
    let asg = aws_sdk_autoscaling::Client::new(&sdk);
    let ec2 = aws_sdk_ec2::Client::new(&sdk);
    create_group(&asg, &ec2).await;

    // The simulated cluster: no nodes, no simulated cloud.
    let sim = runtime::start(SimOptions { speed: SPEED, ..SimOptions::default() }, World::default()).await.unwrap();
    let client = support::prepared_client(&sim).await;
    install(&client).await;
    let nodes: Api<Node> = Api::all(client.clone());
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let pools: Api<NodePool> = Api::all(client.clone());

    let seen = Arc::new(Mutex::new(Seen::default()));
    let stop_bridge = CancellationToken::new();
    let bridge = start_bridge(asg.clone(), nodes.clone(), sim.cluster.clone(), seen.clone(), stop_bridge.clone());
    let seen_now = || format!("{:?}", seen.lock().unwrap());

    // The group's first instance joins; the Deployment's pods fill it (3) and the rest wait, as
    // in the walkthrough, before the operator starts.
    eventually("the group's first instance to join as a Node", Duration::from_secs(10), || async {
        let n = nodes.list(&ListParams::default()).await.map_err(|e| e.to_string())?.items.len();
        if n == 1 { Ok(()) } else { Err(format!("{n} nodes; bridge {}", seen_now())) }
    })
    .await;
    let d: Deployment = serde_yaml::from_str(&example("deployment.yaml")).unwrap();
    deployments.create(&PostParams::default(), &d).await.unwrap();
    eventually("3 nginx pods Running and 7 unschedulable", Duration::from_secs(10), || async {
        let (total, running, unschedulable) = nginx_pods(&pods).await?;
        if (total, running, unschedulable) == (10, 3, 7) {
            Ok(())
        } else {
            Err(format!("{total} pods, {running} running, {unschedulable} unschedulable"))
        }
    })
    .await;

    // The operator, on the simulator's clock, with the AWS provider on moto.
    let log = Arc::new(Mutex::new(Vec::new()));
    let provider = Recording {
        inner: AwsProvider::new(&sdk, Options { refresh_interval: Duration::from_millis(500), ..Options::default() }),
        calls: log.clone(),
    };
    let operator = support::Operator::start(&sim, "nodes-moto", &[], Arc::new(provider));

    // Scale-up: desired 1 → 4, the three new instances join, all ten pods run.
    eventually("all 10 nginx pods Running on bridge nodes", Duration::from_secs(20), || async {
        let (total, running, unschedulable) = nginx_pods(&pods).await?;
        if running == 10 {
            Ok(())
        } else {
            Err(format!(
                "{total} pods, {running} running, {unschedulable} unschedulable; calls {:?}; bridge {}",
                calls(&log),
                seen_now()
            ))
        }
    })
    .await;
    let (desired, running) = describe(&asg).await.unwrap();
    assert_eq!(desired, 4, "desired capacity after the scale-up; calls {:?}", calls(&log));
    assert_eq!(running.len(), 4, "moto launched what was asked: {running:?}");
    let ups: Vec<u32> = calls(&log)
        .iter()
        .map(|c| match c {
            Call::SetDesired(g, n) if g == GROUP => *n,
            other => panic!("unexpected call while scaling up: {other:?}"),
        })
        .collect();
    assert_eq!(ups, [4], "one SetDesiredCapacity for all 7 pending pods");
    assert!(ups.iter().all(|&n| n <= MAX as u32));

    eventually("NodePool spot-ng status: 4 desired, 4 current", Duration::from_secs(10), || async {
        let p = pools.get(POOL).await.map_err(|e| e.to_string())?;
        let s = p.status.unwrap_or_default();
        match (s.desired_nodes, s.current_nodes) {
            (Some(4), Some(4)) => Ok(()),
            other => Err(format!("(desired, current) = {other:?}")),
        }
    })
    .await;
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    let triggered: BTreeSet<String> = events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("TriggeredScaleUp"))
        .inspect(|e| {
            assert_eq!(e.regarding.as_ref().and_then(|r| r.kind.as_deref()), Some("Pod"));
            assert_eq!(e.note.as_deref(), Some("pod triggered scale-up: [{spot-ng 1->4 (max: 5)}]"));
        })
        .filter_map(|e| e.regarding.and_then(|r| r.name))
        .collect();
    assert_eq!(triggered.len(), 7, "TriggeredScaleUp on each of the 7 pending pods: {triggered:?}");

    // Scale-down: the Deployment goes; after the pool's 10-minute unneeded time (10 s here) the
    // three empty nodes are tainted and their instances terminated with decrement; the group
    // stays at its minimum.
    let scaled_up = calls(&log).len();
    deployments.delete("nginx", &DeleteParams::default()).await.unwrap();
    eventually("desired capacity back to 1 with one instance", Duration::from_secs(30), || async {
        let (desired, running) = describe(&asg).await?;
        let left = seen.lock().unwrap().left.len();
        if (desired, running.len(), left) == (1, 1, 3) {
            Ok(())
        } else {
            Err(format!(
                "desired {desired}, {} in service, {left} nodes left; calls {:?}; bridge {}",
                running.len(),
                calls(&log),
                seen_now()
            ))
        }
    })
    .await;
    // A few more loops (2 s wall is 12 scan intervals): nothing below the minimum.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (desired, running) = describe(&asg).await.unwrap();
    assert_eq!((desired, running.len()), (1, 1));

    let down: Vec<Call> = calls(&log)[scaled_up..].to_vec();
    let terminated: BTreeSet<String> = down
        .iter()
        .map(|c| match c {
            Call::Terminate(g, id) if g == GROUP => id.clone(),
            other => panic!("unexpected call while scaling down: {other:?}"),
        })
        .collect();
    assert_eq!(down.len(), 3, "one terminate per removed node: {down:?}");
    let seen_final = std::mem::take(&mut *seen.lock().unwrap());
    let left: BTreeSet<String> = seen_final.left.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(terminated, left, "the instances terminated are the ones whose Nodes left");
    assert!(seen_final.left.iter().all(|(_, t)| *t), "every removed Node was tainted first: {:?}", seen_final.left);
    let remaining = nodes.list(&ListParams::default()).await.unwrap().items;
    assert_eq!(remaining.len(), 1);
    assert!(!tainted(&remaining[0]), "the node kept is not marked for deletion");
    // moto's desired capacity as the bridge sampled it (every 200 ms, so the steps of the three
    // terminations may be folded): 1, up to 4, down to 1, within min and max throughout.
    let d = &seen_final.desired;
    let top = d.iter().position(|&x| x == 4).unwrap_or_else(|| panic!("desired never seen at 4: {d:?}"));
    assert!(d[..=top].windows(2).all(|w| w[0] < w[1]) && d[top..].windows(2).all(|w| w[0] > w[1]), "{d:?}");
    assert_eq!((d[0], d[d.len() - 1]), (1, 1), "{d:?}");
    assert!(d.iter().all(|x| (MIN..=MAX).contains(x)), "{d:?}");
    assert!(seen_final.errors.is_empty(), "bridge errors: {:?}", seen_final.errors);

    let node_events: Api<Event> = Api::namespaced(client.clone(), "default");
    let scale_down: BTreeSet<String> = node_events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("ScaleDown"))
        .filter(|e| e.regarding.as_ref().and_then(|r| r.kind.as_deref()) == Some("Node"))
        .filter_map(|e| e.regarding.and_then(|r| r.name))
        .collect();
    let left_names: BTreeSet<String> = left.iter().map(|id| node_name(id)).collect();
    assert_eq!(scale_down, left_names, "a ScaleDown Event on each removed Node");
    eventually("NodePool spot-ng status: 1 desired", Duration::from_secs(10), || async {
        let p = pools.get(POOL).await.map_err(|e| e.to_string())?;
        let s = p.status.unwrap_or_default();
        if s.desired_nodes == Some(1) && s.last_scale_down_time.is_some() { Ok(()) } else { Err(format!("{s:?}")) }
    })
    .await;

    operator.stop().await;
    stop_bridge.cancel();
    let _ = bridge.await;
    sim.shutdown().await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(60), "took {took:?}");
}
