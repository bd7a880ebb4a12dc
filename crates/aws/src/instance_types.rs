//! Which instance types a group may launch, and what each one offers.
//!
//! Scale-from-zero needs a group's shape without a node to look at, so, like Cluster
//! Autoscaler, we read the type from the launch template (`DescribeLaunchTemplateVersions`) or
//! launch configuration (`DescribeLaunchConfigurations`, batches of 50), and for a
//! MixedInstancesPolicy from the policy's template **and every override** (an override may name
//! its own launch template, whose type is resolved too). The specs come from
//! `DescribeInstanceTypes` (≤ 100 names a call).
//!
//! Overrides that give `InstanceRequirements` instead of a type are skipped with a warning:
//! resolving them takes `GetInstanceTypesFromInstanceRequirements`, which moto does not
//! implement, so it could not be tested here.
//!
//! Types and launch-template lookups change rarely and are asked for on every refresh, so both
//! are cached for [`crate::Options::instance_type_ttl`] (Cluster Autoscaler: 20 minutes). A
//! failed lookup is not cached, so a fixed template shows up on the next refresh.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use aws_sdk_autoscaling::types::{AutoScalingGroup, LaunchTemplateSpecification};
use aws_sdk_ec2::types::{ArchitectureType, InstanceType};
use omniscale_nodes::InstanceTypeInfo;

use crate::client::{Clients, next_page};
use crate::errors::{AwsError, Kind};

/// Launch configurations per `DescribeLaunchConfigurations` call (Cluster Autoscaler's batch).
const CONFIGS_PER_CALL: usize = 50;

/// Type names per `DescribeInstanceTypes` call (the API's limit).
const TYPES_PER_CALL: usize = 100;

/// One launch-template version, as a group or an override refers to it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct TemplateRef {
    /// `lt-...` when given; AWS prefers it over the name.
    id: Option<String>,
    name: Option<String>,
    /// A number, `$Latest` or `$Default` (AWS's default when the spec has none).
    version: String,
}

impl TemplateRef {
    fn from_spec(spec: &LaunchTemplateSpecification) -> Option<Self> {
        let id = spec.launch_template_id().filter(|s| !s.is_empty()).map(str::to_owned);
        let name = spec.launch_template_name().filter(|s| !s.is_empty()).map(str::to_owned);
        if id.is_none() && name.is_none() {
            return None;
        }
        let version = spec.version().filter(|v| !v.is_empty()).unwrap_or("$Default").to_owned();
        Some(TemplateRef { id, name, version })
    }
}

/// Where one of a group's instance types comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum TypeSource {
    /// Named directly (a mixed-instances override).
    Named(String),
    /// The type set in a launch-template version.
    Template(TemplateRef),
    /// The type set in a launch configuration.
    Config(String),
}

/// Where a group's types come from, in the order AWS lists them: the template (or launch
/// configuration) first, then every mixed-instances override.
pub(crate) fn type_sources(group: &AutoScalingGroup) -> Vec<TypeSource> {
    let mut out = Vec::new();
    if let Some(lt) = group.mixed_instances_policy().and_then(|p| p.launch_template()) {
        if let Some(t) = lt.launch_template_specification().and_then(TemplateRef::from_spec) {
            out.push(TypeSource::Template(t));
        }
        for o in lt.overrides() {
            if let Some(ty) = o.instance_type().filter(|t| !t.is_empty()) {
                out.push(TypeSource::Named(ty.to_owned()));
            } else if let Some(t) = o.launch_template_specification().and_then(TemplateRef::from_spec) {
                out.push(TypeSource::Template(t));
            } else if o.instance_requirements().is_some() {
                tracing::warn!(
                    group = group.auto_scaling_group_name().unwrap_or_default(),
                    "mixed-instances override with InstanceRequirements skipped: attribute-based types are not resolved"
                );
            }
        }
    } else if let Some(t) = group.launch_template().and_then(TemplateRef::from_spec) {
        out.push(TypeSource::Template(t));
    } else if let Some(lc) = group.launch_configuration_name().filter(|s| !s.is_empty()) {
        out.push(TypeSource::Config(lc.to_owned()));
    }
    out
}

/// The `kubernetes.io/arch` spelling of the first architecture Kubernetes runs on (`i386`,
/// listed first for old x86 types, is passed over); `amd64` when EC2 says nothing usable.
fn arch(archs: &[ArchitectureType]) -> String {
    archs
        .iter()
        .find_map(|a| match a {
            ArchitectureType::X8664 | ArchitectureType::X8664Mac => Some("amd64"),
            ArchitectureType::Arm64 | ArchitectureType::Arm64Mac => Some("arm64"),
            _ => None,
        })
        .unwrap_or("amd64")
        .to_owned()
}

/// What the engines need from a `DescribeInstanceTypes` entry; `None` without a type name.
pub(crate) fn type_info(t: &aws_sdk_ec2::types::InstanceTypeInfo) -> Option<InstanceTypeInfo> {
    let name = t.instance_type()?.as_str().to_owned();
    let vcpu = t.v_cpu_info().and_then(|v| v.default_v_cpus()).and_then(|v| u32::try_from(v).ok()).unwrap_or(0);
    let memory_mib = t.memory_info().and_then(|m| m.size_in_mib()).and_then(|m| u64::try_from(m).ok()).unwrap_or(0);
    let gpus = t
        .gpu_info()
        .map(|g| g.gpus().iter().filter_map(|d| d.count()).filter_map(|c| u32::try_from(c).ok()).sum())
        .unwrap_or(0);
    let arch = arch(t.processor_info().map(|p| p.supported_architectures()).unwrap_or_default());
    let max_pods = t.network_info().and_then(|n| {
        let enis = u32::try_from(n.maximum_network_interfaces()?).ok()?;
        let ips = u32::try_from(n.ipv4_addresses_per_interface()?).ok()?;
        enis.checked_mul(ips.checked_sub(1)?)?.checked_add(2)
    });
    Some(InstanceTypeInfo { name, vcpu, memory_mib, gpus, arch, max_pods })
}

/// A value and when it was learnt.
#[derive(Debug)]
struct Cached<T> {
    at: Instant,
    value: T,
}

/// A map whose entries expire after `ttl`. `std::sync::Mutex` because it is never held across
/// an await.
#[derive(Debug)]
struct TtlMap<K, V> {
    ttl: Duration,
    entries: Mutex<HashMap<K, Cached<V>>>,
}

impl<K: std::hash::Hash + Eq + Clone, V: Clone> TtlMap<K, V> {
    fn new(ttl: Duration) -> Self {
        TtlMap { ttl, entries: Mutex::new(HashMap::new()) }
    }

    fn get(&self, key: &K) -> Option<V> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.get(key).filter(|c| c.at.elapsed() < self.ttl).map(|c| c.value.clone())
    }

    fn put(&self, key: K, value: V) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let ttl = self.ttl;
        entries.retain(|_, c| c.at.elapsed() < ttl);
        entries.insert(key, Cached { at: Instant::now(), value });
    }
}

/// Resolves groups' instance types, with the caches that keep that cheap.
#[derive(Debug)]
pub(crate) struct TypeResolver {
    clients: Clients,
    /// Launch-template version → its instance type (`None`: the version sets none).
    templates: TtlMap<TemplateRef, Option<String>>,
    /// Launch configuration → its instance type.
    configs: TtlMap<String, Option<String>>,
    /// Type name → its specs.
    infos: TtlMap<String, InstanceTypeInfo>,
}

/// Whether a failure is about this one item (skip it, keep the rest) rather than the whole
/// account or network (fail the refresh).
fn item_specific(err: &AwsError) -> bool {
    matches!(err.kind(), Kind::NotFound | Kind::Rejected)
}

impl TypeResolver {
    pub(crate) fn new(clients: Clients, ttl: Duration) -> Self {
        TypeResolver { clients, templates: TtlMap::new(ttl), configs: TtlMap::new(ttl), infos: TtlMap::new(ttl) }
    }

    /// Every group's instance types, in the order of `groups`. A template, configuration or
    /// type that AWS does not know is left out with a warning; throttling, network and
    /// permission failures fail the whole call.
    pub(crate) async fn resolve(&self, groups: &[AutoScalingGroup]) -> Result<Vec<Vec<InstanceTypeInfo>>, AwsError> {
        let sources: Vec<Vec<TypeSource>> = groups.iter().map(type_sources).collect();

        let mut configs: Vec<String> = Vec::new();
        for s in sources.iter().flatten() {
            match s {
                TypeSource::Template(t) => {
                    self.template_type(t).await?;
                }
                TypeSource::Config(c) if self.configs.get(c).is_none() && !configs.contains(c) => {
                    configs.push(c.clone());
                }
                _ => {}
            }
        }
        for chunk in configs.chunks(CONFIGS_PER_CALL) {
            self.describe_configs(chunk).await?;
        }

        let mut names_per_group: Vec<Vec<String>> = Vec::with_capacity(groups.len());
        for s in &sources {
            let mut names: Vec<String> = Vec::new();
            for source in s {
                let name = match source {
                    TypeSource::Named(n) => Some(n.clone()),
                    TypeSource::Template(t) => self.templates.get(t).flatten(),
                    TypeSource::Config(c) => self.configs.get(c).flatten(),
                };
                if let Some(n) = name.filter(|n| !names.contains(n)) {
                    names.push(n);
                }
            }
            names_per_group.push(names);
        }

        let mut missing: Vec<String> = Vec::new();
        for n in names_per_group.iter().flatten() {
            if self.infos.get(n).is_none() && !missing.contains(n) {
                missing.push(n.clone());
            }
        }
        for chunk in missing.chunks(TYPES_PER_CALL) {
            self.describe_types(chunk).await?;
        }

        Ok(names_per_group.into_iter().map(|names| names.iter().filter_map(|n| self.infos.get(n)).collect()).collect())
    }

    /// The type a launch-template version sets, from the cache or `DescribeLaunchTemplateVersions`.
    async fn template_type(&self, t: &TemplateRef) -> Result<Option<String>, AwsError> {
        if let Some(ty) = self.templates.get(t) {
            return Ok(ty);
        }
        tracing::debug!(template_id = ?t.id, template_name = ?t.name, version = %t.version, "DescribeLaunchTemplateVersions");
        let call = self.clients.ec2.describe_launch_template_versions().versions(t.version.clone());
        let call = match (&t.id, &t.name) {
            (Some(id), _) => call.launch_template_id(id),
            (None, name) => call.set_launch_template_name(name.clone()),
        };
        match call.send().await {
            Ok(out) => {
                let ty = out
                    .launch_template_versions()
                    .iter()
                    .find_map(|v| v.launch_template_data()?.instance_type())
                    .map(|ty| ty.as_str().to_owned());
                self.templates.put(t.clone(), ty.clone());
                Ok(ty)
            }
            Err(e) => {
                let err = AwsError::sdk("DescribeLaunchTemplateVersions", e);
                if item_specific(&err) {
                    tracing::warn!(error = %err, "launch template skipped");
                    Ok(None)
                } else {
                    Err(err)
                }
            }
        }
    }

    /// Caches the type of each named launch configuration (≤ 50 names).
    async fn describe_configs(&self, names: &[String]) -> Result<(), AwsError> {
        tracing::debug!(configs = ?names, "DescribeLaunchConfigurations");
        let mut token: Option<String> = None;
        loop {
            let out = self
                .clients
                .autoscaling
                .describe_launch_configurations()
                .set_launch_configuration_names(Some(names.to_vec()))
                .max_records(CONFIGS_PER_CALL as i32)
                .set_next_token(token.clone())
                .send()
                .await;
            let out = match out {
                Ok(out) => out,
                Err(e) => {
                    let err = AwsError::sdk("DescribeLaunchConfigurations", e);
                    if item_specific(&err) {
                        tracing::warn!(error = %err, "launch configurations skipped");
                        return Ok(());
                    }
                    return Err(err);
                }
            };
            for lc in out.launch_configurations() {
                if let Some(name) = lc.launch_configuration_name() {
                    self.configs.put(name.to_owned(), lc.instance_type().map(str::to_owned));
                }
            }
            token = next_page(token.as_deref(), out.next_token());
            if token.is_none() {
                return Ok(());
            }
        }
    }

    /// Caches the specs of the named types (≤ 100). One unknown name makes EC2 refuse the whole
    /// batch, so a refused batch is retried name by name and the unknown ones are left out.
    async fn describe_types(&self, names: &[String]) -> Result<(), AwsError> {
        match self.describe_types_once(names).await {
            Err(err) if item_specific(&err) && names.len() > 1 => {
                for name in names {
                    if let Err(err) = self.describe_types_once(std::slice::from_ref(name)).await {
                        if !item_specific(&err) {
                            return Err(err);
                        }
                        tracing::warn!(instance_type = %name, error = %err, "instance type skipped");
                    }
                }
                Ok(())
            }
            Err(err) if item_specific(&err) => {
                tracing::warn!(instance_types = ?names, error = %err, "instance type skipped");
                Ok(())
            }
            other => other,
        }
    }

    async fn describe_types_once(&self, names: &[String]) -> Result<(), AwsError> {
        tracing::debug!(instance_types = ?names, "DescribeInstanceTypes");
        let mut token: Option<String> = None;
        loop {
            let out = self
                .clients
                .ec2
                .describe_instance_types()
                .set_instance_types(Some(names.iter().map(|n| InstanceType::from(n.as_str())).collect()))
                .set_next_token(token.clone())
                .send()
                .await
                .map_err(|e| AwsError::sdk("DescribeInstanceTypes", e))?;
            for info in out.instance_types().iter().filter_map(type_info) {
                self.infos.put(info.name.clone(), info);
            }
            token = next_page(token.as_deref(), out.next_token());
            if token.is_none() {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_autoscaling::types::{LaunchTemplate, LaunchTemplateOverrides, MixedInstancesPolicy};
    use aws_sdk_ec2::types::{GpuDeviceInfo, GpuInfo, MemoryInfo, NetworkInfo, ProcessorInfo, VCpuInfo};

    use super::*;

    fn spec(name: &str, version: Option<&str>) -> LaunchTemplateSpecification {
        LaunchTemplateSpecification::builder()
            .launch_template_name(name)
            .set_version(version.map(str::to_owned))
            .build()
    }

    #[test]
    fn mixed_policy_yields_template_and_every_override() {
        let policy = MixedInstancesPolicy::builder()
            .launch_template(
                LaunchTemplate::builder()
                    .launch_template_specification(spec("base", Some("$Latest")))
                    .overrides(LaunchTemplateOverrides::builder().instance_type("t2.small").build())
                    .overrides(LaunchTemplateOverrides::builder().instance_type("t3.small").build())
                    .overrides(
                        LaunchTemplateOverrides::builder().launch_template_specification(spec("arm", None)).build(),
                    )
                    .build(),
            )
            .build();
        let group = AutoScalingGroup::builder().auto_scaling_group_name("g").mixed_instances_policy(policy).build();
        let tref = |name: &str, version: &str| {
            TypeSource::Template(TemplateRef { id: None, name: Some(name.into()), version: version.into() })
        };
        assert_eq!(
            type_sources(&group),
            vec![
                tref("base", "$Latest"),
                TypeSource::Named("t2.small".into()),
                TypeSource::Named("t3.small".into()),
                tref("arm", "$Default"),
            ]
        );
    }

    #[test]
    fn plain_template_and_launch_configuration() {
        let group = AutoScalingGroup::builder().launch_template(spec("lt", Some("3"))).build();
        assert_eq!(
            type_sources(&group),
            vec![TypeSource::Template(TemplateRef { id: None, name: Some("lt".into()), version: "3".into() })]
        );
        let group = AutoScalingGroup::builder().launch_configuration_name("lc").build();
        assert_eq!(type_sources(&group), vec![TypeSource::Config("lc".into())]);
    }

    #[test]
    fn specs_map_to_engine_units() {
        let t = aws_sdk_ec2::types::InstanceTypeInfo::builder()
            .instance_type(InstanceType::from("g5.xlarge"))
            .v_cpu_info(VCpuInfo::builder().default_v_cpus(4).build())
            .memory_info(MemoryInfo::builder().size_in_mib(16384).build())
            .gpu_info(GpuInfo::builder().gpus(GpuDeviceInfo::builder().count(1).build()).build())
            .processor_info(
                ProcessorInfo::builder()
                    .supported_architectures(ArchitectureType::I386)
                    .supported_architectures(ArchitectureType::X8664)
                    .build(),
            )
            .network_info(NetworkInfo::builder().maximum_network_interfaces(4).ipv4_addresses_per_interface(15).build())
            .build();
        assert_eq!(
            type_info(&t),
            Some(InstanceTypeInfo {
                name: "g5.xlarge".into(),
                vcpu: 4,
                memory_mib: 16384,
                gpus: 1,
                arch: "amd64".into(),
                max_pods: Some(58),
            })
        );
        let arm = aws_sdk_ec2::types::InstanceTypeInfo::builder()
            .instance_type(InstanceType::from("m7g.large"))
            .processor_info(ProcessorInfo::builder().supported_architectures(ArchitectureType::Arm64).build())
            .build();
        let info = type_info(&arm);
        assert_eq!(info.as_ref().map(|i| i.arch.as_str()), Some("arm64"));
        assert_eq!(info.and_then(|i| i.max_pods), None);
    }
}
