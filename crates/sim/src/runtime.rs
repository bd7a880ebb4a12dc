//! Starting and stopping a simulated cluster: the API server on loopback plus the simulated
//! control plane loop.

use crate::admission::{self, Write};
use crate::clock::Clock;
use crate::control::{self, Ctx, PendingPod, World};
use crate::error::Error;
use crate::server::{self, Cluster};
use crate::store::{Target, WriteOptions};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How to run a simulated cluster.
#[derive(Clone, Debug)]
pub struct SimOptions {
    pub listen: SocketAddr,
    pub speed: f64,
    /// Changes kept for resuming watches; older resourceVersions get 410 Gone.
    pub history: usize,
    /// Longest a watch stays open (wall clock); clients must reconnect after it.
    pub max_watch: Duration,
    pub bookmark_every: Duration,
    /// Simulated seconds between control-plane steps.
    pub tick: f64,
}

impl Default for SimOptions {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            speed: 1.0,
            history: 10_000,
            max_watch: Duration::from_secs(300),
            bookmark_every: Duration::from_secs(5),
            tick: 1.0,
        }
    }
}

/// A running simulated cluster. Dropping it does not stop it; call [`Running::shutdown`].
#[derive(Debug)]
pub struct Running {
    pub url: String,
    pub cluster: Cluster,
    pub world: Arc<Mutex<World>>,
    cancel: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    pub fn kubeconfig(&self) -> String {
        server::kubeconfig(&self.url)
    }

    pub fn cancel_token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Stops the control plane, ends open watches and closes the listener. Connections that
    /// do not finish within two seconds are dropped.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        self.cluster.shared.stopping.cancel();
        for t in self.tasks {
            let abort = t.abort_handle();
            if tokio::time::timeout(Duration::from_secs(2), t).await.is_err() {
                abort.abort();
            }
        }
    }
}

/// Binds the API server, starts serving and starts the control plane; returns once the port
/// accepts connections.
pub async fn start(opts: SimOptions, world: World) -> Result<Running, Error> {
    let clock = Clock::wall(opts.speed);
    let cluster = Cluster::new(clock, opts.history).with_watch_timing(opts.max_watch, opts.bookmark_every);
    let listener = tokio::net::TcpListener::bind(opts.listen).await?;
    let addr = listener.local_addr()?;
    let cancel = CancellationToken::new();
    let c = cancel.clone();
    let served = cluster.clone();
    let server = tokio::spawn(async move {
        if let Err(e) = server::serve(served, listener, async move { c.cancelled().await }).await {
            tracing::error!(error = %e, "simulated API server stopped");
        }
    });
    let world = Arc::new(Mutex::new(world));
    let control = tokio::spawn(control_loop(cluster.clone(), world.clone(), opts.tick, cancel.clone()));
    Ok(Running { url: format!("http://{addr}"), cluster, world, cancel, tasks: vec![server, control] })
}

/// Runs one control-plane step now (tests drive the simulation with this instead of waiting).
pub fn step_once(cluster: &Cluster, world: &Mutex<World>) {
    let mut store = cluster.store();
    let mut world = world.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut metrics = cluster.shared.metrics.write().unwrap_or_else(std::sync::PoisonError::into_inner);
    let now = cluster.now();
    let t = cluster.shared.clock.elapsed();
    control::step(&mut Ctx { store: &mut store, world: &mut world, metrics: &mut metrics, now, t });
}

/// One control-plane step, then the pod creates it queued for admission webhooks, awaited (tests
/// use this; the control loop runs the creates in the background instead).
pub async fn step_and_admit(cluster: &Cluster, world: &Mutex<World>) {
    step_once(cluster, world);
    let batch = take_pending(world);
    create_pending(cluster, world, batch).await;
}

fn lock_world(world: &Mutex<World>) -> std::sync::MutexGuard<'_, World> {
    world.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The queued pod creates not yet handed to a task.
fn take_pending(world: &Mutex<World>) -> Vec<PendingPod> {
    let mut w = lock_world(world);
    let batch: Vec<PendingPod> = w.pending_pods.iter().filter(|p| !p.dispatched).cloned().collect();
    for p in w.pending_pods.iter_mut() {
        p.dispatched = true;
    }
    batch
}

/// Creates queued pods through admission, then records the outcome on the owner as the
/// controller would and forgets them.
async fn create_pending(cluster: &Cluster, world: &Mutex<World>, batch: Vec<PendingPod>) {
    let Some(pod_rt) = cluster.store().registry.get("", "v1", "pods").cloned() else { return };
    for p in batch {
        let ns = p.pod["metadata"]["namespace"].as_str().unwrap_or_default().to_owned();
        let target = Target::new(&pod_rt, Some(&ns), None);
        let owner_kind = p.owner["kind"].as_str().unwrap_or_default();
        let opts = WriteOptions::manager("kube-controller-manager");
        let user = control::controller_user(owner_kind);
        let result = admission::write(cluster, &target, &Write::Create((*p.pod).clone()), &opts, user).await;
        let mut store = cluster.store();
        let mut w = lock_world(world);
        let mut metrics = cluster.shared.metrics.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        w.pending_pods.retain(|q| q.id != p.id);
        let (now, t) = (cluster.now(), cluster.shared.clock.elapsed());
        let mut ctx = Ctx { store: &mut store, world: &mut w, metrics: &mut metrics, now, t };
        match result {
            Ok(created) => {
                let name = created["metadata"]["name"].as_str().unwrap_or_default();
                control::event(&mut ctx, &p.owner, "Normal", "SuccessfulCreate", &format!("Created pod: {name}"));
            }
            Err(e) => {
                tracing::debug!(owner = %p.owner["metadata"]["name"], error = %e.message, "pod create failed in admission");
                control::event(
                    &mut ctx,
                    &p.owner,
                    "Warning",
                    "FailedCreate",
                    &format!("Error creating: {}", e.message),
                );
            }
        }
    }
}

async fn control_loop(cluster: Cluster, world: Arc<Mutex<World>>, tick: f64, cancel: CancellationToken) {
    let wall =
        cluster.shared.clock.wall_duration(Duration::from_secs_f64(tick.max(0.01))).max(Duration::from_millis(20));
    let mut interval = tokio::time::interval(wall);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = interval.tick() => {
                step_once(&cluster, &world);
                let batch = take_pending(&world);
                if !batch.is_empty() {
                    let (cluster, world) = (cluster.clone(), world.clone());
                    tokio::spawn(async move { create_pending(&cluster, &world, batch).await });
                }
            }
        }
    }
}
