//! moto helpers shared by the tests that drive an Auto Scaling Group over the AWS wire
//! protocol (`nodes_moto.rs` on the simulated cluster, `real_cluster.rs` on a real one): the
//! walkthrough's group and the Node an `InService` instance becomes.

use aws_sdk_autoscaling::types::{LaunchTemplateSpecification, LifecycleState, Tag};
use aws_sdk_ec2::types::{InstanceType, RequestLaunchTemplateData};
use k8s_openapi::api::core::v1::Node;
use serde_json::json;

/// The walkthrough's group. A plain launch template, not the walkthrough's MixedInstancesPolicy
/// (t3.small and t2.small overrides, 50% on-demand): moto splits a mixed group's capacity into
/// on-demand and spot parts that each round down, so at the starting desired capacity of 1 it
/// launches no instance at all (and 4 for 5), which would leave the group without its first
/// node; and a mixed group would be sized by its smallest type (t2.small, one 500m pod per
/// node), not by the t3.small nodes moto actually launches.
pub const GROUP: &str = "spot-ng";
/// The NodePool of examples/nginx-test.
pub const POOL: &str = "spot-ng";
pub const TEMPLATE: &str = "spot-ng-lt";
pub const CLUSTER: &str = "demo";
pub const AMI: &str = "ami-12c6146b";
pub const ZONE: &str = "us-east-1a";
pub const INSTANCE_TYPE: &str = "t3.small";
pub const MIN: i32 = 1;
pub const MAX: i32 = 5;

/// The group as moto has it: desired capacity and `InService` instances (id, zone, type).
pub async fn describe(asg: &aws_sdk_autoscaling::Client) -> Result<(i32, Vec<(String, String, String)>), String> {
    let out = asg.describe_auto_scaling_groups().auto_scaling_group_names(GROUP).send().await;
    let out = out.map_err(|e| format!("DescribeAutoScalingGroups: {e:?}"))?;
    let g = out.auto_scaling_groups().first().ok_or("the group is gone")?;
    let running = g
        .instances()
        .iter()
        .filter(|i| i.lifecycle_state() == Some(&LifecycleState::InService))
        .map(|i| {
            (
                i.instance_id().unwrap_or_default().to_owned(),
                i.availability_zone().unwrap_or_default().to_owned(),
                i.instance_type().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    Ok((g.desired_capacity().unwrap_or_default(), running))
}

pub fn node_name(instance_id: &str) -> String {
    format!("ip-{instance_id}")
}

/// A t3.small joining an EKS cluster: capacity from the type, allocatable as EKS reserves
/// (kube-reserved 70m cpu and 11 MiB × 11 pods + 255 MiB, 100 MiB eviction threshold).
pub fn node_for(index: usize, id: &str, zone: &str, instance_type: &str, now: &str) -> Node {
    let name = node_name(id);
    let cond = |t: &str, s: &str, reason: &str| {
        json!({"type": t, "status": s, "reason": reason, "message": reason,
               "lastHeartbeatTime": now, "lastTransitionTime": now})
    };
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {
            "kubernetes.io/hostname": name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "topology.kubernetes.io/zone": zone,
            "topology.kubernetes.io/region": omniscale_aws::moto::REGION,
            "node.kubernetes.io/instance-type": instance_type,
        }},
        "spec": {"providerID": format!("aws:///{zone}/{id}")},
        "status": {
            "capacity": {"cpu": "2", "memory": "2048Mi", "pods": "11"},
            "allocatable": {"cpu": "1930m", "memory": "1572Mi", "pods": "11"},
            "conditions": [
                cond("MemoryPressure", "False", "KubeletHasSufficientMemory"),
                cond("DiskPressure", "False", "KubeletHasNoDiskPressure"),
                cond("PIDPressure", "False", "KubeletHasSufficientPID"),
                cond("Ready", "True", "KubeletReady"),
            ],
            "addresses": [{"type": "InternalIP", "address": format!("10.0.1.{}", 10 + index)},
                          {"type": "Hostname", "address": name}],
            "nodeInfo": {"kubeletVersion": "v1.33.0", "kubeProxyVersion": "", "architecture": "amd64",
                         "operatingSystem": "linux", "osImage": "Amazon Linux 2023", "kernelVersion": "6.1.0",
                         "containerRuntimeVersion": "containerd://1.7.27", "machineID": "", "systemUUID": "",
                         "bootID": ""},
        },
    }))
    .unwrap()
}

/// The launch template and the group, tagged for Cluster Autoscaler discovery in `demo`.
pub async fn create_group(asg: &aws_sdk_autoscaling::Client, ec2: &aws_sdk_ec2::Client) {
    ec2.create_launch_template()
        .launch_template_name(TEMPLATE)
        .launch_template_data(
            RequestLaunchTemplateData::builder().image_id(AMI).instance_type(InstanceType::from(INSTANCE_TYPE)).build(),
        )
        .send()
        .await
        .unwrap();
    let mut call = asg
        .create_auto_scaling_group()
        .auto_scaling_group_name(GROUP)
        .min_size(MIN)
        .max_size(MAX)
        .desired_capacity(MIN)
        .availability_zones(ZONE)
        .launch_template(
            LaunchTemplateSpecification::builder().launch_template_name(TEMPLATE).version("$Latest").build(),
        );
    for (k, v) in
        [("k8s.io/cluster-autoscaler/enabled", "true"), (&format!("k8s.io/cluster-autoscaler/{CLUSTER}"), "owned")]
    {
        call = call.tags(
            Tag::builder()
                .resource_id(GROUP)
                .resource_type("auto-scaling-group")
                .key(k)
                .value(v)
                .propagate_at_launch(true)
                .build(),
        );
    }
    call.send().await.unwrap();
}
