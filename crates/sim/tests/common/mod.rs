//! Helpers shared by the simulator's integration tests.
#![allow(clippy::panic, clippy::unwrap_used, dead_code)]

use omniscale_sim::control::World;
use omniscale_sim::runtime::{self, Running, SimOptions};
use omniscale_sim::world::scenario::StaticNodes;
use std::time::Duration;

/// A simulated cluster with two m5.large nodes and a kube client for it. kube's default layer
/// retries 429s with backoff; these tests want to see them, so retries are off.
pub async fn start(opts: SimOptions) -> (Running, kube::Client) {
    if std::env::var("SIM_DEBUG").is_ok() {
        let _ = tracing_subscriber::fmt().with_env_filter("debug,hyper=info").with_test_writer().try_init();
    }
    let mut world = World::default();
    world.static_nodes = vec![StaticNodes::of_type("node", 2, "m5.large")];
    let running = runtime::start(opts, world).await.unwrap();
    let mut config = kube::Config::new(running.url.parse().unwrap());
    config.default_retry = false;
    let client = kube::Client::try_from(config).unwrap();
    (running, client)
}

/// Polls `f` every 50 ms for up to 10 s.
pub async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for i in 0..200 {
        if std::env::var("SIM_DEBUG").is_ok() {
            eprintln!("{what}: attempt {i}");
        }
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}
