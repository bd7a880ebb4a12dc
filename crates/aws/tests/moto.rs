#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]
//! `AwsProvider` against a real `moto_server`: the AWS wire protocol, pagination, the instance
//! type data and the write calls as moto implements them, not as we imagine them.
//!
//! The test binary starts one moto server on a free loopback port (`omniscale_aws::moto`) and
//! shares it; every test uses its own group, template and cluster names, so they run in
//! parallel. moto is found through `MOTO_SERVER`, then `$CARGO_TARGET_DIR/venv-moto/bin/moto_server`
//! (what `scripts/test` installs), then `PATH`; without it the tests fail rather than skip.

use std::collections::BTreeMap;
use std::time::Duration;

use aws_config::SdkConfig;
use aws_sdk_autoscaling::types::{
    InstancesDistribution, LaunchTemplate, LaunchTemplateOverrides, LaunchTemplateSpecification, MixedInstancesPolicy,
    Tag,
};
use aws_sdk_ec2::types::{InstanceType, RequestLaunchTemplateData};
use omniscale_aws::{AwsProvider, Options};
use omniscale_nodes::{CloudProvider, GroupSource, InstanceState, NodeGroup, ProviderError};

const AMI: &str = "ami-12c6146b";
const ZONE: &str = "us-east-1a";
const CA_ENABLED: &str = "k8s.io/cluster-autoscaler/enabled";

/// The shared SDK configuration for the process's moto server (started on first use). Built
/// per test: SDK clients hold connection pools tied to the runtime that made them.
async fn sdk() -> SdkConfig {
    omniscale_aws::moto::server().unwrap_or_else(|e| panic!("{e}")).sdk_config().await
}

// ---------------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------------

struct Aws {
    sdk: SdkConfig,
    asg: aws_sdk_autoscaling::Client,
    ec2: aws_sdk_ec2::Client,
}

async fn aws() -> Aws {
    let sdk = sdk().await;
    Aws { asg: aws_sdk_autoscaling::Client::new(&sdk), ec2: aws_sdk_ec2::Client::new(&sdk), sdk }
}

impl Aws {
    fn provider(&self, refresh_interval: Duration) -> AwsProvider {
        AwsProvider::new(&self.sdk, Options { refresh_interval, ..Options::default() })
    }

    /// A launch template with one version setting `instance_type`; returns its id.
    async fn launch_template(&self, name: &str, instance_type: &str) -> String {
        let out = self
            .ec2
            .create_launch_template()
            .launch_template_name(name)
            .launch_template_data(
                RequestLaunchTemplateData::builder()
                    .image_id(AMI)
                    .instance_type(InstanceType::from(instance_type))
                    .build(),
            )
            .send()
            .await
            .unwrap();
        out.launch_template().unwrap().launch_template_id().unwrap().to_owned()
    }

    /// A MixedInstancesPolicy group on `template` (`$Latest`) with `overrides`, half on-demand.
    async fn mixed_group(
        &self,
        name: &str,
        template: &str,
        overrides: &[&str],
        sizes: (i32, i32, i32),
        tags: &[(&str, &str)],
    ) {
        let mut lt = LaunchTemplate::builder().launch_template_specification(
            LaunchTemplateSpecification::builder().launch_template_name(template).version("$Latest").build(),
        );
        for ty in overrides {
            lt = lt.overrides(LaunchTemplateOverrides::builder().instance_type(*ty).build());
        }
        let policy = MixedInstancesPolicy::builder()
            .launch_template(lt.build())
            .instances_distribution(
                InstancesDistribution::builder().on_demand_percentage_above_base_capacity(50).build(),
            )
            .build();
        self.group(name, sizes, tags, |c| c.mixed_instances_policy(policy)).await;
    }

    /// A plain launch-template group.
    async fn template_group(&self, name: &str, template: &str, sizes: (i32, i32, i32), tags: &[(&str, &str)]) {
        let spec = LaunchTemplateSpecification::builder().launch_template_name(template).version("$Latest").build();
        self.group(name, sizes, tags, |c| c.launch_template(spec)).await;
    }

    /// A launch template `<name>-lt` setting `instance_type`, and a plain group on it.
    async fn plain_group(&self, name: &str, instance_type: &str, sizes: (i32, i32, i32)) {
        let template = format!("{name}-lt");
        self.launch_template(&template, instance_type).await;
        self.template_group(name, &template, sizes, &[]).await;
    }

    async fn group(
        &self,
        name: &str,
        (min, max, desired): (i32, i32, i32),
        tags: &[(&str, &str)],
        launch: impl FnOnce(
            aws_sdk_autoscaling::operation::create_auto_scaling_group::builders::CreateAutoScalingGroupFluentBuilder,
        )
            -> aws_sdk_autoscaling::operation::create_auto_scaling_group::builders::CreateAutoScalingGroupFluentBuilder,
    ) {
        let mut call = self
            .asg
            .create_auto_scaling_group()
            .auto_scaling_group_name(name)
            .min_size(min)
            .max_size(max)
            .desired_capacity(desired)
            .availability_zones(ZONE);
        for (k, v) in tags {
            call = call.tags(
                Tag::builder()
                    .resource_id(name)
                    .resource_type("auto-scaling-group")
                    .key(*k)
                    .value(*v)
                    .propagate_at_launch(true)
                    .build(),
            );
        }
        launch(call).send().await.unwrap();
    }

    /// Desired capacity and instance count as AWS (moto) has them, bypassing the provider.
    async fn raw(&self, name: &str) -> (i32, usize) {
        let out = self.asg.describe_auto_scaling_groups().auto_scaling_group_names(name).send().await.unwrap();
        let g = &out.auto_scaling_groups()[0];
        (g.desired_capacity().unwrap(), g.instances().len())
    }

    async fn set_desired_raw(&self, name: &str, desired: i32) {
        self.asg.set_desired_capacity().auto_scaling_group_name(name).desired_capacity(desired).send().await.unwrap();
    }
}

/// The Cluster Autoscaler discovery tags for `cluster`, as AWS users set them.
fn ca_tags(cluster: &str) -> Vec<(String, String)> {
    vec![
        (CA_ENABLED.to_owned(), "true".to_owned()),
        (format!("k8s.io/cluster-autoscaler/{cluster}"), "owned".to_owned()),
    ]
}

fn refs(tags: &[(String, String)]) -> Vec<(&str, &str)> {
    tags.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

fn names(groups: &[NodeGroup]) -> Vec<&str> {
    groups.iter().map(|g| g.name.as_str()).collect()
}

fn by_name(name: &str) -> Vec<GroupSource> {
    vec![GroupSource::Name(name.to_owned())]
}

async fn one(provider: &AwsProvider, name: &str) -> NodeGroup {
    let mut groups = provider.node_groups(&by_name(name)).await.unwrap();
    assert_eq!(groups.len(), 1, "{name}: {groups:?}");
    groups.remove(0)
}

/// Terminates the first instance of a group of `size` (desired = instances = `size`) through
/// the provider; checks desired went down by one and the instance left; returns it and the group.
async fn terminate_one(provider: &AwsProvider, group: &str, size: u32) -> (String, NodeGroup) {
    let before = one(provider, group).await;
    assert_eq!((before.desired, before.instances.len()), (size, size as usize), "{before:?}");
    let victim = before.instances[0].id.clone();
    provider.terminate_instance(group, &victim).await.unwrap();
    let after = one(provider, group).await;
    assert_eq!(after.desired, size - 1);
    assert!(after.instances.iter().all(|i| i.id != victim), "{:?}", after.instances);
    (victim, after)
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

/// (1) Groups carrying both discovery tags for the cluster are found; a group tagged for another
/// cluster, or untagged, is not; names and tag values select too; results are deduplicated and
/// in name order.
#[tokio::test]
async fn discovery_by_tags_and_by_name() {
    let aws = aws().await;
    aws.launch_template("disc-lt", "t3.small").await;
    let mut web = ca_tags("disc-cluster");
    web.push(("team".into(), "web".into()));
    let mut data = ca_tags("disc-cluster");
    data.push(("team".into(), "data".into()));
    // Created out of order, to see the provider sort.
    aws.template_group("disc-b", "disc-lt", (0, 3, 0), &refs(&data)).await;
    aws.template_group("disc-a", "disc-lt", (1, 5, 0), &refs(&web)).await;
    aws.template_group("disc-other", "disc-lt", (0, 3, 0), &refs(&ca_tags("disc-elsewhere"))).await;
    aws.template_group("disc-plain", "disc-lt", (0, 3, 0), &[]).await;

    let provider = aws.provider(Duration::from_secs(60));
    let by_tags = GroupSource::cluster_autoscaler("disc-cluster", &BTreeMap::new());
    let groups = provider.node_groups(std::slice::from_ref(&by_tags)).await.unwrap();
    assert_eq!(names(&groups), ["disc-a", "disc-b"]);
    let a = &groups[0];
    assert_eq!((a.min_size, a.max_size, a.desired), (1, 5, 0));
    assert_eq!(a.zones, [ZONE]);
    assert_eq!(a.tags.get("team").map(String::as_str), Some("web"));
    assert_eq!(a.tags.get(CA_ENABLED).map(String::as_str), Some("true"));
    assert_eq!(a.instance_types.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), ["t3.small"]);

    // A tag value narrows: only team=web.
    let web_only = GroupSource::cluster_autoscaler("disc-cluster", &[("team".to_owned(), "web".to_owned())].into());
    let groups = provider.node_groups(&[web_only]).await.unwrap();
    assert_eq!(names(&groups), ["disc-a"]);

    // By name, mixed with tags: deduplicated and sorted; an unknown name is just absent.
    let sources = [
        GroupSource::Name("disc-plain".into()),
        GroupSource::Name("disc-a".into()),
        by_tags,
        GroupSource::Name("disc-missing".into()),
    ];
    let groups = provider.node_groups(&sources).await.unwrap();
    assert_eq!(names(&groups), ["disc-a", "disc-b", "disc-plain"]);
    let groups = provider.node_groups(&by_name("disc-other")).await.unwrap();
    assert_eq!(names(&groups), ["disc-other"]);
}

/// More groups than one page (100) are all found, by tag (NextToken pagination) and by name
/// (two chunks of names).
#[tokio::test]
async fn discovery_pages_through_more_than_a_hundred_groups() {
    let aws = aws().await;
    aws.launch_template("page-lt", "t3.small").await;
    let all: Vec<String> = (0..105).map(|i| format!("page-{i:03}")).collect();
    for name in &all {
        aws.template_group(name, "page-lt", (0, 1, 0), &[("omniscale.test/page", "")]).await;
    }
    let provider = aws.provider(Duration::from_secs(60));
    let tagged = provider
        .node_groups(&[GroupSource::Tags([("omniscale.test/page".to_owned(), String::new())].into())])
        .await
        .unwrap();
    assert_eq!(names(&tagged), all);
    let named: Vec<GroupSource> = all.iter().rev().map(|n| GroupSource::Name(n.clone())).collect();
    let groups = provider.node_groups(&named).await.unwrap();
    assert_eq!(names(&groups), all);
}

/// (2) A MixedInstancesPolicy group lists the template's type and every override, with moto's
/// real specs (t2.small 1 vCPU, t3.small 2 vCPU, both 2048 MiB; 3 ENIs × (4 − 1) + 2 = 11 pods),
/// including an override that names its own launch template (arm64).
#[tokio::test]
async fn mixed_instances_yield_every_override_type() {
    let aws = aws().await;
    aws.launch_template("mixed-lt", "t2.small").await;
    let arm_lt = aws.launch_template("mixed-arm-lt", "m6g.large").await;
    let lt = LaunchTemplate::builder()
        .launch_template_specification(
            LaunchTemplateSpecification::builder().launch_template_name("mixed-lt").version("$Latest").build(),
        )
        .overrides(LaunchTemplateOverrides::builder().instance_type("t2.small").build())
        .overrides(LaunchTemplateOverrides::builder().instance_type("t3.small").build())
        .overrides(
            LaunchTemplateOverrides::builder()
                .launch_template_specification(
                    LaunchTemplateSpecification::builder().launch_template_id(&arm_lt).version("$Default").build(),
                )
                .build(),
        )
        .build();
    let policy = MixedInstancesPolicy::builder()
        .launch_template(lt)
        .instances_distribution(InstancesDistribution::builder().on_demand_percentage_above_base_capacity(50).build())
        .build();
    aws.group("mixed-ng", (0, 4, 0), &[], |c| c.mixed_instances_policy(policy)).await;

    let provider = aws.provider(Duration::from_secs(60));
    let group = one(&provider, "mixed-ng").await;
    let types: Vec<_> = group
        .instance_types
        .iter()
        .map(|t| (t.name.as_str(), t.vcpu, t.memory_mib, t.arch.as_str(), t.max_pods))
        .collect();
    assert_eq!(
        types,
        [
            ("t2.small", 1, 2048, "amd64", Some(11)),
            ("t3.small", 2, 2048, "amd64", Some(11)),
            ("m6g.large", 2, 8192, "arm64", Some(29)),
        ]
    );
    assert!(group.instance_types.iter().all(|t| t.gpus == 0));
}

/// Launch-template versions are honoured (`$Latest` vs `$Default`), and a launch configuration
/// group gets its type too.
#[tokio::test]
async fn template_versions_and_launch_configurations() {
    let aws = aws().await;
    let lt = aws.launch_template("ver-lt", "t3.small").await;
    aws.ec2
        .create_launch_template_version()
        .launch_template_id(&lt)
        .launch_template_data(
            RequestLaunchTemplateData::builder().image_id(AMI).instance_type(InstanceType::from("t3.medium")).build(),
        )
        .send()
        .await
        .unwrap();
    aws.template_group("ver-latest", "ver-lt", (0, 2, 0), &[]).await;
    let default_spec = LaunchTemplateSpecification::builder().launch_template_id(&lt).version("$Default").build();
    aws.group("ver-default", (0, 2, 0), &[], |c| c.launch_template(default_spec)).await;
    aws.asg
        .create_launch_configuration()
        .launch_configuration_name("lc-config")
        .image_id(AMI)
        .instance_type("m5.large")
        .send()
        .await
        .unwrap();
    aws.group("lc-ng", (0, 2, 0), &[], |c| c.launch_configuration_name("lc-config")).await;

    let provider = aws.provider(Duration::from_secs(60));
    let sources: Vec<_> = ["ver-latest", "ver-default", "lc-ng"].map(|n| GroupSource::Name(n.into())).to_vec();
    let groups = provider.node_groups(&sources).await.unwrap();
    let types: Vec<(&str, Vec<&str>)> =
        groups.iter().map(|g| (g.name.as_str(), g.instance_types.iter().map(|t| t.name.as_str()).collect())).collect();
    assert_eq!(
        types,
        [("lc-ng", vec!["m5.large"]), ("ver-default", vec!["t3.small"]), ("ver-latest", vec!["t3.medium"])]
    );
    let m5 = &groups[0].instance_types[0];
    assert_eq!((m5.vcpu, m5.memory_mib, m5.max_pods), (2, 8192, Some(29)));
}

/// (3) A group at zero, found by the discovery tags, comes back with no instances, its
/// node-template tags (labels, taints, resources) and the types it could launch.
#[tokio::test]
async fn scale_from_zero_via_tags() {
    let aws = aws().await;
    aws.launch_template("zero-lt", "t2.small").await;
    let mut tags = ca_tags("zero-cluster");
    tags.extend([
        ("k8s.io/cluster-autoscaler/node-template/label/workload".to_owned(), "batch".to_owned()),
        ("k8s.io/cluster-autoscaler/node-template/taint/dedicated".to_owned(), "batch:NoSchedule".to_owned()),
        ("k8s.io/cluster-autoscaler/node-template/resources/ephemeral-storage".to_owned(), "100Gi".to_owned()),
    ]);
    aws.mixed_group("zero-ng", "zero-lt", &["t2.small", "t3.small"], (0, 10, 0), &refs(&tags)).await;

    let provider = aws.provider(Duration::from_secs(60));
    let groups =
        provider.node_groups(&[GroupSource::cluster_autoscaler("zero-cluster", &BTreeMap::new())]).await.unwrap();
    assert_eq!(names(&groups), ["zero-ng"]);
    let g = &groups[0];
    assert_eq!((g.min_size, g.max_size, g.desired), (0, 10, 0));
    assert!(g.instances.is_empty(), "{:?}", g.instances);
    let want: BTreeMap<String, String> = tags.into_iter().collect();
    assert_eq!(g.tags, want);
    assert_eq!(g.instance_types.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), ["t2.small", "t3.small"]);
    // moto's DescribeScalingActivities is a stub (always empty).
    assert_eq!(g.last_failed_activity, None);
}

/// (4) set_desired_capacity raises the group, and the next node_groups, though inside the
/// refresh interval, describes again and sees the new size and the launched instances.
#[tokio::test]
async fn desired_capacity_up_invalidates_the_cache() {
    let aws = aws().await;
    aws.launch_template("up-lt", "t2.small").await;
    aws.mixed_group("up-ng", "up-lt", &["t2.small", "t3.small"], (0, 6, 0), &[]).await;
    let provider = aws.provider(Duration::from_secs(3600));
    assert_eq!(one(&provider, "up-ng").await.desired, 0);

    provider.set_desired_capacity("up-ng", 4).await.unwrap();

    let g = one(&provider, "up-ng").await;
    assert_eq!(g.desired, 4);
    // An even count: moto's on-demand/spot split launches exactly 4.
    assert_eq!(g.instances.len(), 4, "{:?}", g.instances);
    assert_eq!(g.live().count(), 4);
    for i in &g.instances {
        assert!(i.id.starts_with("i-"), "{i:?}");
        assert_eq!(i.zone, ZONE);
        assert_eq!(i.state, InstanceState::Running);
        assert_eq!(i.provider_id(), format!("aws:///{ZONE}/{}", i.id));
        assert!(i.instance_type.is_some());
    }
    assert_eq!(aws.raw("up-ng").await, (4, 4));
}

/// (5) terminate_instance lowers desired capacity by one and the instance leaves the group; a
/// second call for the same instance does nothing (it is no longer a member).
#[tokio::test]
async fn terminate_with_decrement() {
    let aws = aws().await;
    // A plain template group: moto launches exactly what is asked.
    aws.plain_group("term-ng", "t3.small", (0, 5, 3)).await;
    let provider = aws.provider(Duration::from_secs(3600));
    let (victim, after) = terminate_one(&provider, "term-ng", 3).await;
    assert_eq!(after.instances.len(), 2);
    // Idempotent: the instance is gone, so nothing is called and desired stays.
    provider.terminate_instance("term-ng", &victim).await.unwrap();
    assert_eq!(aws.raw("term-ng").await, (2, 2));

    // A mixed group, as the appendix saw it: desired goes 4 → 3 as asked, the instance leaves,
    // and moto's truncating on-demand/spot split may take one more (3 → 2 instances).
    aws.mixed_group("term-mixed", "term-ng-lt", &["t2.small", "t3.small"], (0, 6, 4), &[]).await;
    let (_, after) = terminate_one(&provider, "term-mixed", 4).await;
    let (desired, count) = aws.raw("term-mixed").await;
    assert_eq!((desired, after.instances.len()), (3, count));
    assert!((2..=3).contains(&count), "moto left {count} instances");
}

/// (6) Missing groups come back as NotFound, values outside min/max as Rejected, never a panic
/// or a retry storm.
#[tokio::test]
async fn missing_things_are_not_found_and_bad_values_rejected() {
    let aws = aws().await;
    aws.plain_group("miss-ng", "t3.small", (0, 2, 0)).await;
    let provider = aws.provider(Duration::from_secs(60));

    let err = provider.set_desired_capacity("miss-nope", 1).await.unwrap_err();
    assert!(matches!(err, ProviderError::NotFound(_)), "{err:?}");
    assert!(err.to_string().contains("miss-nope"), "{err}");
    let err = provider.terminate_instance("miss-nope", "i-0123456789abcdef0").await.unwrap_err();
    assert!(matches!(err, ProviderError::NotFound(_)), "{err:?}");
    assert!(!err.is_retryable());

    let err = provider.set_desired_capacity("miss-ng", 3).await.unwrap_err();
    assert!(matches!(err, ProviderError::Rejected(_)), "{err:?}");
    assert_eq!(aws.raw("miss-ng").await, (0, 0));

    // An instance that is not a member: nothing to do.
    provider.terminate_instance("miss-ng", "i-0123456789abcdef0").await.unwrap();
    assert!(provider.node_groups(&by_name("miss-nope")).await.unwrap().is_empty());

    // A group whose launch template was deleted: EC2's NotFound error is read off the wire and
    // the group still comes back, without types, rather than failing the whole describe.
    aws.plain_group("miss-gone", "t3.small", (0, 2, 0)).await;
    aws.ec2.delete_launch_template().launch_template_name("miss-gone-lt").send().await.unwrap();
    let g = one(&provider, "miss-gone").await;
    assert!(g.instance_types.is_empty(), "{:?}", g.instance_types);
}

/// (7) Within the refresh interval node_groups answers from the cache: a change made behind the
/// provider's back is not seen until invalidate() or until the interval has passed.
#[tokio::test]
async fn node_groups_are_cached_for_the_refresh_interval() {
    let aws = aws().await;
    aws.plain_group("cache-ng", "t3.small", (0, 4, 0)).await;

    // Invalidation half: a long interval, so only invalidate() can end it.
    let provider = aws.provider(Duration::from_secs(3600));
    assert_eq!(one(&provider, "cache-ng").await.desired, 0);
    aws.set_desired_raw("cache-ng", 1).await;
    assert_eq!(one(&provider, "cache-ng").await.desired, 0, "served from the cache");
    provider.invalidate().await;
    assert_eq!(one(&provider, "cache-ng").await.desired, 1);

    // Expiry half: a short interval.
    let provider = aws.provider(Duration::from_secs(2));
    assert_eq!(one(&provider, "cache-ng").await.desired, 1);
    aws.set_desired_raw("cache-ng", 2).await;
    assert_eq!(one(&provider, "cache-ng").await.desired, 1, "served from the cache");
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let g = one(&provider, "cache-ng").await;
    assert_eq!((g.desired, g.instances.len()), (2, 2));
}
