//! Cloud providers the node shell can use: AWS through the SDK (created on first use, so a
//! cluster without Auto Scaling Group NodePools never needs AWS credentials), and the simulated
//! cloud of `omniscale sim`, called in memory.

use std::sync::{Arc, Mutex};

use jiff::{SignedDuration, Timestamp};
use omniscale_nodes::provider::BoxFuture;
use omniscale_nodes::{
    CloudProvider, GroupSource, Instance, InstanceState, InstanceTypeInfo, NodeGroup, ProviderError,
};
use omniscale_sim::control::World;
use omniscale_sim::world::cloud::{self, ActivityStatus, CloudError};
use omniscale_sim::world::instance_types;
use tokio::sync::OnceCell;

/// Which cloud `omniscale run` talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum CloudKind {
    /// AWS Auto Scaling and EC2, configured from the standard AWS environment (region,
    /// credentials, `AWS_ENDPOINT_URL`).
    Aws,
    /// No cloud: Auto Scaling Group NodePools are reported as unusable.
    None,
}

/// The provider the shell uses, made on first need.
#[derive(Debug, Clone)]
pub struct Cloud {
    kind: CloudKind,
    given: Option<Arc<dyn CloudProvider>>,
    made: Arc<OnceCell<Arc<dyn CloudProvider>>>,
}

impl Cloud {
    /// A cloud of `kind`, or `given` when an embedding program (the simulator) supplies one.
    pub fn new(kind: CloudKind, given: Option<Arc<dyn CloudProvider>>) -> Self {
        Cloud { kind, given, made: Arc::new(OnceCell::new()) }
    }

    /// The provider, or why there is none.
    pub async fn get(&self) -> Result<Arc<dyn CloudProvider>, ProviderError> {
        if let Some(p) = &self.given {
            return Ok(p.clone());
        }
        match self.kind {
            CloudKind::None => Err(ProviderError::Fatal(
                "no cloud provider configured (--cloud-provider none); Auto Scaling Group NodePools cannot be scaled"
                    .into(),
            )),
            CloudKind::Aws => Ok(self
                .made
                .get_or_init(|| async {
                    let p = omniscale_aws::AwsProvider::from_env(omniscale_aws::Options::default()).await;
                    Arc::new(p) as Arc<dyn CloudProvider>
                })
                .await
                .clone()),
        }
    }
}

/// The simulated cloud as a provider: the same three calls, answered from the simulation's
/// state with AWS's error wording. Each call is recorded with its wall-clock instant so tests
/// can measure decision latency.
#[derive(Debug, Clone)]
pub struct SimCloud {
    world: Arc<Mutex<World>>,
    clock: omniscale_api::clock::Clock,
    /// (wall instant, group, desired) of every SetDesiredCapacity.
    pub calls: Arc<Mutex<Vec<(std::time::Instant, String, u32)>>>,
}

impl SimCloud {
    pub fn new(world: Arc<Mutex<World>>, clock: omniscale_api::clock::Clock) -> Self {
        SimCloud { world, clock, calls: Arc::default() }
    }

    fn with_cloud<T>(
        &self,
        f: impl FnOnce(&mut cloud::Cloud, f64) -> Result<T, ProviderError>,
    ) -> Result<T, ProviderError> {
        let t = self.clock.elapsed();
        let mut w = self.world.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let c = w.cloud.as_mut().ok_or_else(|| ProviderError::Fatal("the simulation has no cloud".into()))?;
        f(c, t)
    }

    fn sim_time(&self, t: f64) -> Timestamp {
        self.clock.start() + SignedDuration::from_secs_f64(t.max(0.0))
    }
}

fn sim_error(e: CloudError) -> ProviderError {
    let text = format!("{}: {e}", e.code());
    match e {
        CloudError::AutoScalingGroupNotFound { .. } | CloudError::InstanceNotFound { .. } => {
            ProviderError::NotFound(text)
        }
        _ => ProviderError::Rejected(text),
    }
}

impl CloudProvider for SimCloud {
    fn node_groups<'a>(&'a self, sources: &'a [GroupSource]) -> BoxFuture<'a, Result<Vec<NodeGroup>, ProviderError>> {
        Box::pin(async move {
            self.with_cloud(|c, _| {
                let mut out = Vec::new();
                for g in c.auto_scaling_groups() {
                    if !sources.iter().any(|s| s.selects(&g.name, &g.tags)) {
                        continue;
                    }
                    let instances = g
                        .instance_ids
                        .iter()
                        .filter_map(|id| c.instance(id))
                        .map(|i| Instance {
                            id: i.id.clone(),
                            zone: i.zone.clone(),
                            instance_type: Some(i.instance_type.clone()),
                            state: match i.state {
                                cloud::InstanceState::Pending => InstanceState::Pending,
                                cloud::InstanceState::Running => InstanceState::Running,
                                _ => InstanceState::Terminating,
                            },
                        })
                        .collect();
                    let instance_types = g.instance_types.iter().filter_map(|n| shipped_type(n)).collect();
                    let last_failed_activity =
                        g.activities.iter().rev().find(|a| a.status == ActivityStatus::Failed).map(|a| {
                            (self.sim_time(a.t), a.status_message.clone().unwrap_or_else(|| a.description.clone()))
                        });
                    out.push(NodeGroup {
                        name: g.name.clone(),
                        min_size: g.min_size,
                        max_size: g.max_size,
                        desired: g.desired_capacity,
                        instances,
                        instance_types,
                        zones: g.zones.clone(),
                        tags: g.tags.clone(),
                        last_failed_activity,
                    });
                }
                out.sort_by(|a, b| a.name.cmp(&b.name));
                Ok(out)
            })
        })
    }

    fn set_desired_capacity<'a>(&'a self, group: &'a str, desired: u32) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(async move {
            self.with_cloud(|c, t| c.set_desired_capacity(group, desired, t).map_err(sim_error))?;
            if let Ok(mut calls) = self.calls.lock() {
                calls.push((std::time::Instant::now(), group.to_owned(), desired));
            }
            Ok(())
        })
    }

    fn terminate_instance<'a>(
        &'a self,
        group: &'a str,
        instance_id: &'a str,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(async move {
            let _ = group;
            self.with_cloud(|c, t| {
                c.terminate_instance_in_auto_scaling_group(instance_id, true, t).map(|_| ()).map_err(sim_error)
            })
        })
    }
}

/// An instance type from the shipped us-east-1 table (the simulated cloud's and `omniscale
/// plan`'s), as the node engines see it.
pub(crate) fn shipped_type(name: &str) -> Option<InstanceTypeInfo> {
    let t = instance_types::find(name)?;
    Some(InstanceTypeInfo {
        name: t.name.to_owned(),
        vcpu: t.vcpu,
        memory_mib: t.memory_mib,
        gpus: 0,
        arch: t.architecture.as_str().to_owned(),
        max_pods: Some(t.max_pods),
    })
}
