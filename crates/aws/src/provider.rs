//! [`AwsProvider`]: the [`CloudProvider`] the node shell drives, on Auto Scaling and EC2.
//!
//! The engines ask for the groups on every pending pod, so a full describe (groups, instance
//! types, scaling activities) is cached per set of sources for
//! [`Options::refresh_interval`], as Cluster Autoscaler refreshes its ASG cache every minute.
//! A write (`SetDesiredCapacity`, `TerminateInstanceInAutoScalingGroup`) drops the whole cache,
//! so the next call sees what the write did instead of a minute-old picture.
//!
//! The cache sits behind a `tokio::sync::Mutex` held for the whole refresh: concurrent callers
//! wait for one describe instead of each making their own, and a write's invalidation can
//! never be overwritten by a refresh that started before the write.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use aws_config::{BehaviorVersion, SdkConfig};
use aws_sdk_autoscaling::config::http::HttpResponse;
use aws_sdk_autoscaling::error::{ProvideErrorMetadata, SdkError};
use omniscale_nodes::provider::BoxFuture;
use omniscale_nodes::{CloudProvider, GroupSource, InstanceState, NodeGroup, ProviderError};
use tokio::sync::Mutex;

use crate::client::{Clients, retry_config};
use crate::errors::{AwsError, Kind};
use crate::instance_types::TypeResolver;
use crate::{activities, discovery};

/// How often the provider goes back to AWS, and for how long it trusts what it learnt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// How long one `node_groups` answer is reused (Cluster Autoscaler: 1 minute). A write
    /// through this provider ends it early.
    pub refresh_interval: Duration,
    /// How long instance-type specs and launch-template/configuration lookups are reused
    /// (Cluster Autoscaler: 20 minutes); they change far less often than group sizes.
    pub instance_type_ttl: Duration,
}

impl Default for Options {
    /// Cluster Autoscaler's intervals: 60 s for groups, 20 min for instance types.
    fn default() -> Self {
        Options { refresh_interval: Duration::from_secs(60), instance_type_ttl: Duration::from_secs(20 * 60) }
    }
}

/// One cached `node_groups` answer.
#[derive(Debug)]
struct Entry {
    at: Instant,
    groups: Vec<NodeGroup>,
}

/// The AWS cloud provider: Auto Scaling Groups as node groups.
///
/// Cheap to share behind an `Arc`; every method takes `&self`. See the module docs for caching
/// and the crate docs for retries.
#[derive(Debug)]
pub struct AwsProvider {
    clients: Clients,
    types: TypeResolver,
    options: Options,
    /// `node_groups` answers, keyed by the normalised sources.
    cache: Mutex<HashMap<Vec<GroupSource>, Entry>>,
}

/// The same sources in one canonical order, without repeats, so `[a, b]` and `[b, a, a]` share
/// a cache entry.
fn cache_key(sources: &[GroupSource]) -> Vec<GroupSource> {
    let mut key = sources.to_vec();
    key.sort_by_cached_key(|s| format!("{s:?}"));
    key.dedup();
    key
}

impl AwsProvider {
    /// A provider on `sdk`'s region, credentials and endpoints. The SDK's standard retry mode
    /// (5 attempts, exponential backoff) is set on both clients whatever `sdk` says.
    pub fn new(sdk: &SdkConfig, options: Options) -> Self {
        let clients = Clients::new(sdk);
        AwsProvider {
            types: TypeResolver::new(clients.clone(), options.instance_type_ttl),
            clients,
            options,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// A provider configured from the standard AWS environment: `AWS_REGION`, the default
    /// credential chain (environment, profile, web identity/IRSA, container and instance
    /// metadata), and `AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_AUTO_SCALING`, `AWS_ENDPOINT_URL_EC2`.
    pub async fn from_env(options: Options) -> Self {
        let sdk = aws_config::defaults(BehaviorVersion::latest()).retry_config(retry_config()).load().await;
        Self::new(&sdk, options)
    }

    /// Drops every cached `node_groups` answer, so the next call describes again.
    pub async fn invalidate(&self) {
        self.cache.lock().await.clear();
    }

    /// Describes the selected groups with their instance types and failed activities.
    async fn describe(&self, sources: &[GroupSource]) -> Result<Vec<NodeGroup>, AwsError> {
        let raw = discovery::describe_groups(&self.clients.autoscaling, sources).await?;
        let types = self.types.resolve(&raw).await?;
        let names = raw.iter().filter_map(|g| g.auto_scaling_group_name().map(str::to_owned)).collect();
        let mut failed = activities::last_failed_all(&self.clients.autoscaling, names).await;
        Ok(raw
            .iter()
            .zip(types)
            .map(|(g, instance_types)| {
                let mut group = discovery::node_group(g);
                group.instance_types = instance_types;
                group.last_failed_activity = failed.remove(&group.name);
                group
            })
            .collect())
    }

    async fn node_groups_cached(&self, sources: &[GroupSource]) -> Result<Vec<NodeGroup>, ProviderError> {
        let key = cache_key(sources);
        let mut cache = self.cache.lock().await;
        if let Some(entry) = cache.get(&key) {
            if entry.at.elapsed() < self.options.refresh_interval {
                return Ok(entry.groups.clone());
            }
        }
        let groups = self.describe(&key).await.map_err(|err| {
            tracing::warn!(error = %err, "describing node groups failed");
            ProviderError::from(err)
        })?;
        let ttl = self.options.refresh_interval;
        cache.retain(|_, e| e.at.elapsed() < ttl);
        cache.insert(key, Entry { at: Instant::now(), groups: groups.clone() });
        Ok(groups)
    }

    /// The group as a still-fresh cache entry has it, if any.
    async fn cached_group(&self, name: &str) -> Option<NodeGroup> {
        let cache = self.cache.lock().await;
        cache
            .values()
            .filter(|e| e.at.elapsed() < self.options.refresh_interval)
            .flat_map(|e| e.groups.iter())
            .find(|g| g.name == name)
            .cloned()
    }

    /// The group as AWS has it now (sizes and instances only); `NotFound` when it is gone.
    async fn current_group(&self, name: &str) -> Result<NodeGroup, AwsError> {
        match discovery::describe_one(&self.clients.autoscaling, name).await? {
            Some(g) => Ok(discovery::node_group(&g)),
            None => Err(AwsError::Precondition(format!("AutoScalingGroup {name:?} not found"), Kind::NotFound)),
        }
    }

    /// Ends a write, failed or not: the cached picture may no longer be true, so it is dropped.
    async fn finish_write<T, E>(
        &self,
        operation: &'static str,
        result: Result<T, SdkError<E, HttpResponse>>,
    ) -> Result<(), AwsError>
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        self.invalidate().await;
        result.map(|_| ()).map_err(|e| AwsError::sdk(operation, e))
    }

    async fn set_desired(&self, group: &str, desired: u32) -> Result<(), AwsError> {
        let within = |g: &NodeGroup| (g.min_size..=g.max_size).contains(&desired);
        // A cached group whose bounds allow the value is enough; anything else is checked
        // against AWS now (the bounds may have changed since the cache was filled).
        if !self.cached_group(group).await.is_some_and(|g| within(&g)) {
            let current = self.current_group(group).await?;
            if !within(&current) {
                return Err(AwsError::Precondition(
                    format!(
                        "desired capacity {desired} for {group:?} is outside min {} / max {}",
                        current.min_size, current.max_size
                    ),
                    Kind::Rejected,
                ));
            }
        }
        let desired_i32 = i32::try_from(desired).map_err(|_| {
            AwsError::Precondition(format!("desired capacity {desired} is out of range"), Kind::Rejected)
        })?;
        tracing::debug!(group, desired, "SetDesiredCapacity");
        let result = self
            .clients
            .autoscaling
            .set_desired_capacity()
            .auto_scaling_group_name(group)
            .desired_capacity(desired_i32)
            .honor_cooldown(false)
            .send()
            .await;
        self.finish_write("SetDesiredCapacity", result).await
    }

    async fn terminate(&self, group: &str, instance_id: &str) -> Result<(), AwsError> {
        let state_in = |g: &NodeGroup| g.instances.iter().find(|i| i.id == instance_id).map(|i| i.state);
        // Terminating is final, so the cache may say so; "not a member" may only mean the cache
        // predates the instance, so that is checked against AWS.
        let cached = self.cached_group(group).await.and_then(|g| state_in(&g));
        let state = match cached {
            Some(state) => Some(state),
            None => state_in(&self.current_group(group).await?),
        };
        match state {
            None => {
                tracing::debug!(group, instance_id, "instance is not a member; nothing to terminate");
                return Ok(());
            }
            Some(InstanceState::Terminating) => {
                tracing::debug!(group, instance_id, "instance already terminating");
                return Ok(());
            }
            Some(_) => {}
        }
        tracing::debug!(group, instance_id, "TerminateInstanceInAutoScalingGroup");
        let result = self
            .clients
            .autoscaling
            .terminate_instance_in_auto_scaling_group()
            .instance_id(instance_id)
            .should_decrement_desired_capacity(true)
            .send()
            .await;
        self.finish_write("TerminateInstanceInAutoScalingGroup", result).await
    }
}

impl CloudProvider for AwsProvider {
    fn node_groups<'a>(&'a self, sources: &'a [GroupSource]) -> BoxFuture<'a, Result<Vec<NodeGroup>, ProviderError>> {
        Box::pin(self.node_groups_cached(sources))
    }

    fn set_desired_capacity<'a>(&'a self, group: &'a str, desired: u32) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(async move {
            self.set_desired(group, desired).await.map_err(|err| {
                tracing::warn!(group, desired, error = %err, "setting desired capacity failed");
                ProviderError::from(err)
            })
        })
    }

    fn terminate_instance<'a>(
        &'a self,
        group: &'a str,
        instance_id: &'a str,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(async move {
            self.terminate(group, instance_id).await.map_err(|err| {
                tracing::warn!(group, instance_id, error = %err, "terminating instance failed");
                ProviderError::from(err)
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn cache_key_ignores_order_and_repeats() {
        let a = GroupSource::Name("a".into());
        let b = GroupSource::cluster_autoscaler("demo", &BTreeMap::new());
        assert_eq!(cache_key(&[a.clone(), b.clone()]), cache_key(&[b.clone(), a.clone(), a.clone()]));
        assert_ne!(cache_key(&[a]), cache_key(&[b]));
    }
}
