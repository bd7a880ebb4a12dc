//! Starting and stopping a simulated cluster: the API server on loopback plus the simulated
//! control plane loop.

use crate::clock::Clock;
use crate::control::{self, Ctx, World};
use crate::error::Error;
use crate::server::{self, Cluster};
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

async fn control_loop(cluster: Cluster, world: Arc<Mutex<World>>, tick: f64, cancel: CancellationToken) {
    let wall =
        cluster.shared.clock.wall_duration(Duration::from_secs_f64(tick.max(0.01))).max(Duration::from_millis(20));
    let mut interval = tokio::time::interval(wall);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = interval.tick() => step_once(&cluster, &world),
        }
    }
}
