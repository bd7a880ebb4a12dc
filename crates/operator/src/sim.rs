//! `omniscale sim`: the simulated cluster, optionally with the operator and a scenario.

use crate::cli::SimArgs;
use crate::{Error, Result};
use omniscale_sim::control::World;
use omniscale_sim::runtime::{self, SimOptions};
use omniscale_sim::world::scenario::StaticNodes;

pub async fn sim(args: SimArgs) -> Result<()> {
    let opts = SimOptions { listen: args.listen, speed: args.speed.unwrap_or(1.0), ..SimOptions::default() };
    let mut world = World::default();
    world.static_nodes = vec![StaticNodes {
        name_prefix: "node".into(),
        count: args.nodes,
        instance_type: Some("m5.xlarge".into()),
        cpu: None,
        memory: None,
        pods: None,
        zone: None,
        labels: Default::default(),
        taints: vec![],
    }];
    let running = runtime::start(opts, world).await.map_err(|e| Error::Sim(e.to_string()))?;
    if let Some(path) = &args.kubeconfig_out {
        std::fs::write(path, running.kubeconfig())?;
    }
    eprintln!("simulated cluster listening on {}", running.url);
    if let Some(path) = &args.kubeconfig_out {
        eprintln!("kubeconfig written to {}: kubectl --kubeconfig {} get nodes", path.display(), path.display());
    }
    if args.serve {
        tokio::signal::ctrl_c().await?;
        running.shutdown().await;
        return Ok(());
    }
    running.shutdown().await;
    Err(Error::NotBuilt("sim --scenario", "scenarios arrive later in issue #3"))
}
