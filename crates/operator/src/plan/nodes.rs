//! The node part of `omniscale plan`: Auto Scaling Group NodePools, planned offline by the same
//! engines the operator's node loop runs ([`omniscale_nodes::input::build`] then
//! [`omniscale_nodes::decide`]).
//!
//! Offline there is no cloud to describe the groups, so they come from the files, in either of
//! two forms (both may be mixed; a group given twice must be given identically):
//!
//! - what `aws autoscaling describe-auto-scaling-groups` prints, `{"AutoScalingGroups": [...]}`
//!   (or one element of it): `AutoScalingGroupName`, `MinSize`, `MaxSize`, `DesiredCapacity`,
//!   `AvailabilityZones`, `Tags[].Key/Value`, `Instances[].InstanceId/AvailabilityZone/
//!   LifecycleState/InstanceType`. Instance types are `MixedInstancesPolicy.LaunchTemplate.
//!   Overrides[].InstanceType` followed by the types of the instances; the launch template's own
//!   type is not in that output, so a group launched from a plain template is sized from its
//!   registered nodes (as Cluster Autoscaler's real-node template) — add an override or use the
//!   form below when it has none;
//! - a plan-only document, `apiVersion: omniscale.dev/v1alpha1`, `kind: AutoScalingGroup`, with
//!   `name` (or `metadata.name`), `minSize`, `maxSize`, `desiredCapacity`, `instanceTypes`,
//!   `availabilityZones`, `instances: [{instanceId, availabilityZone, lifecycleState
//!   (default InService), instanceType}]` and `tags`. Unknown fields are errors (typos would
//!   otherwise change the plan silently).
//!
//! Instance type specs (vCPUs, memory, max pods) come from the shipped us-east-1 table
//! (`omniscale_sim::world::instance_types`); a type not in it is an error naming the document
//! and field. The region of the group templates is the first availability zone's.
//!
//! The decision is one loop of the node engine with `History::default()`: no scale-up is in
//! flight, no group is backed off, and every node found unneeded is unneeded *since `now`*, so
//! removals wait the pool's `unneededTime` (reported as `waitingFor`) unless it is `0s`. A loop
//! that scales up does not scale down (Cluster Autoscaler), which is reported too.

use super::{Inputs, PlanError, typed};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use omniscale_api::NodePool;
use omniscale_nodes::decide::{Plan, PodRef, PoolSummary};
use omniscale_nodes::history::History;
use omniscale_nodes::input::{self, Input, Objects, Settings};
use omniscale_nodes::{Instance, InstanceState, InstanceTypeInfo, NodeGroup};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// The plan-only kind describing one Auto Scaling Group.
pub const GROUP_KIND: &str = "AutoScalingGroup";

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct GroupDoc {
    #[serde(rename = "apiVersion")]
    _api_version: String,
    #[serde(rename = "kind")]
    _kind: String,
    #[serde(default)]
    metadata: Option<GroupMeta>,
    #[serde(default)]
    name: Option<String>,
    min_size: u32,
    max_size: u32,
    desired_capacity: u32,
    #[serde(default)]
    instance_types: Vec<String>,
    #[serde(default)]
    availability_zones: Vec<String>,
    #[serde(default)]
    instances: Vec<InstanceDoc>,
    #[serde(default)]
    tags: BTreeMap<String, Value>,
}

#[derive(Debug, Deserialize)]
struct GroupMeta {
    #[serde(default)]
    name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct InstanceDoc {
    instance_id: String,
    #[serde(default)]
    availability_zone: String,
    #[serde(default = "in_service")]
    lifecycle_state: String,
    #[serde(default)]
    instance_type: Option<String>,
}

fn in_service() -> String {
    "InService".to_owned()
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AwsGroup {
    auto_scaling_group_name: String,
    min_size: u32,
    max_size: u32,
    desired_capacity: u32,
    #[serde(default)]
    instances: Vec<AwsInstance>,
    #[serde(default)]
    availability_zones: Vec<String>,
    #[serde(default)]
    tags: Vec<AwsTag>,
    #[serde(default)]
    mixed_instances_policy: Option<AwsMixed>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AwsInstance {
    instance_id: String,
    #[serde(default)]
    availability_zone: String,
    #[serde(default)]
    lifecycle_state: String,
    #[serde(default)]
    instance_type: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AwsTag {
    key: String,
    #[serde(default)]
    value: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AwsMixed {
    #[serde(default)]
    launch_template: Option<AwsLaunchTemplate>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AwsLaunchTemplate {
    #[serde(default)]
    overrides: Vec<AwsOverride>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AwsOverride {
    #[serde(default)]
    instance_type: Option<String>,
}

/// Whether a document is AWS CLI output (`{"AutoScalingGroups": [...]}` or one group of it).
pub fn is_aws_output(v: &Value) -> bool {
    v["AutoScalingGroups"].is_array() || v["AutoScalingGroupName"].is_string()
}

/// Reads `aws autoscaling describe-auto-scaling-groups` output.
pub fn read_aws(v: Value, at: &str, into: &mut Inputs) -> Result<(), PlanError> {
    let items = match v {
        Value::Object(mut o) if o.contains_key("AutoScalingGroups") => match o.remove("AutoScalingGroups") {
            Some(Value::Array(items)) => items.into_iter().enumerate().map(|(i, g)| (Some(i), g)).collect(),
            _ => Vec::new(),
        },
        one => vec![(None, one)],
    };
    for (i, item) in items {
        let name = item["AutoScalingGroupName"].as_str().unwrap_or_default().to_owned();
        let at = match i {
            Some(i) => format!("{at} AutoScalingGroups[{i}] ({GROUP_KIND} {name})"),
            None => format!("{at} ({GROUP_KIND} {name})"),
        };
        let g: AwsGroup = typed(item, &at)?;
        let mut types = Vec::new();
        let overrides =
            g.mixed_instances_policy.as_ref().and_then(|m| m.launch_template.as_ref()).map(|l| l.overrides.as_slice());
        for (j, o) in overrides.unwrap_or_default().iter().enumerate() {
            if let Some(t) = &o.instance_type {
                let field = format!("MixedInstancesPolicy.LaunchTemplate.Overrides[{j}].InstanceType");
                add_type(&mut types, t, &at, &field)?;
            }
        }
        for (j, i) in g.instances.iter().enumerate() {
            if let Some(t) = &i.instance_type {
                add_type(&mut types, t, &at, &format!("Instances[{j}].InstanceType"))?;
            }
        }
        let group = NodeGroup {
            name: g.auto_scaling_group_name,
            min_size: g.min_size,
            max_size: g.max_size,
            desired: g.desired_capacity,
            instances: g
                .instances
                .into_iter()
                .map(|i| Instance {
                    id: i.instance_id,
                    zone: i.availability_zone,
                    instance_type: i.instance_type,
                    state: InstanceState::from_lifecycle(&i.lifecycle_state),
                })
                .collect(),
            instance_types: types,
            zones: g.availability_zones,
            tags: g.tags.into_iter().map(|t| (t.key, t.value)).collect(),
            last_failed_activity: None,
        };
        add_group(group, &at, ("MinSize", "MaxSize", "DesiredCapacity"), into)?;
    }
    Ok(())
}

/// Reads a plan-only `kind: AutoScalingGroup` document.
pub fn read_group(v: Value, at: &str, into: &mut Inputs) -> Result<(), PlanError> {
    let d: GroupDoc = typed(v, at)?;
    let name = d.name.clone().or_else(|| d.metadata.as_ref().and_then(|m| m.name.clone())).unwrap_or_default();
    if name.is_empty() {
        return Err(PlanError(format!("{at}: field name: required (the Auto Scaling Group's name)")));
    }
    let mut types = Vec::new();
    for (j, t) in d.instance_types.iter().enumerate() {
        add_type(&mut types, t, at, &format!("instanceTypes[{j}]"))?;
    }
    for (j, i) in d.instances.iter().enumerate() {
        if let Some(t) = &i.instance_type {
            add_type(&mut types, t, at, &format!("instances[{j}].instanceType"))?;
        }
    }
    let mut tags = BTreeMap::new();
    for (k, v) in d.tags {
        let v = match v {
            Value::String(s) => s,
            Value::Bool(_) | Value::Number(_) => v.to_string(),
            Value::Null => String::new(),
            _ => return Err(PlanError(format!("{at}: field tags.{k}: a tag value is a string"))),
        };
        tags.insert(k, v);
    }
    let group = NodeGroup {
        name,
        min_size: d.min_size,
        max_size: d.max_size,
        desired: d.desired_capacity,
        instances: d
            .instances
            .into_iter()
            .map(|i| Instance {
                id: i.instance_id,
                zone: i.availability_zone,
                instance_type: i.instance_type,
                state: InstanceState::from_lifecycle(&i.lifecycle_state),
            })
            .collect(),
        instance_types: types,
        zones: d.availability_zones,
        tags,
        last_failed_activity: None,
    };
    add_group(group, at, ("minSize", "maxSize", "desiredCapacity"), into)
}

fn add_type(types: &mut Vec<InstanceTypeInfo>, name: &str, at: &str, field: &str) -> Result<(), PlanError> {
    if types.iter().any(|t| t.name == name) {
        return Ok(());
    }
    let Some(t) = crate::cloud::shipped_type(name) else {
        return Err(PlanError(format!(
            "{at}: field {field}: instance type {name:?} is not in the shipped us-east-1 table \
             (t2, t3, t3a, t4g, m5, m6i, m6g, c5, c6i, r5 families)"
        )));
    };
    types.push(t);
    Ok(())
}

fn add_group(g: NodeGroup, at: &str, fields: (&str, &str, &str), into: &mut Inputs) -> Result<(), PlanError> {
    let (min, max, desired) = fields;
    if g.min_size > g.max_size {
        return Err(PlanError(format!("{at}: field {min}: {} is above {max} {}", g.min_size, g.max_size)));
    }
    if g.desired < g.min_size || g.desired > g.max_size {
        return Err(PlanError(format!(
            "{at}: field {desired}: {} is outside {min}..{max} ({}..{})",
            g.desired, g.min_size, g.max_size
        )));
    }
    if let Some(i) = into.groups.iter().position(|x| x.name == g.name) {
        if into.groups[i] == g {
            return Ok(());
        }
        let other = into.sources.get(&(GROUP_KIND.to_owned(), g.name.clone())).cloned().unwrap_or_default();
        return Err(PlanError(format!("{at}: {GROUP_KIND} {} is also in {other}, differently", g.name)));
    }
    into.sources.insert((GROUP_KIND.to_owned(), g.name.clone()), at.to_owned());
    into.groups.push(g);
    Ok(())
}

/// Adds a NodePool; the same pool twice is fine when both copies are identical.
pub fn add_pool(p: NodePool, at: &str, into: &mut Inputs) -> Result<(), PlanError> {
    let name = p.metadata.name.clone().unwrap_or_default();
    if let Some(old) = into.node_pools.iter().find(|x| x.metadata.name.as_deref() == Some(name.as_str())) {
        if serde_json::to_value(old).ok() == serde_json::to_value(&p).ok() {
            return Ok(());
        }
        let other = into.sources.get(&("NodePool".to_owned(), name.clone())).cloned().unwrap_or_default();
        return Err(PlanError(format!("{at}: NodePool {name} is also in {other}, differently")));
    }
    into.sources.insert(("NodePool".to_owned(), name), at.to_owned());
    into.node_pools.push(p);
    Ok(())
}

/// Plans the Auto Scaling Group NodePools: their JSON entries and warnings about the input.
pub fn plan_nodes(inputs: &Inputs, settings: &Settings, now: Timestamp) -> (Vec<Value>, Vec<String>) {
    let mut warnings = Vec::new();
    for p in &inputs.node_pools {
        if p.spec.auto_scaling_group.is_none() {
            warnings.push(format!(
                "NodePool {}: groupless (spec.provisioner) pools are not planned offline",
                p.metadata.name.as_deref().unwrap_or_default()
            ));
        }
    }
    if !inputs.node_pools.iter().any(|p| p.spec.auto_scaling_group.is_some()) {
        if !inputs.groups.is_empty() {
            warnings
                .push("Auto Scaling Groups but no Auto Scaling Group NodePool in the input: nothing to plan".into());
        }
        return (Vec::new(), warnings);
    }
    let pods: Vec<Pod> = inputs
        .pods
        .iter()
        .cloned()
        .map(|mut p| {
            p.metadata.namespace.get_or_insert_with(|| "default".into());
            p
        })
        .collect();
    let region = inputs
        .groups
        .iter()
        .flat_map(|g| g.zones.iter())
        .next()
        .map(|z| z.trim_end_matches(|c: char| c.is_ascii_lowercase()).to_owned());
    let objects = Objects {
        nodes: &inputs.nodes,
        pods: &pods,
        pdbs: &inputs.pdbs,
        daemonsets: &inputs.daemonsets,
        node_pools: &inputs.node_pools,
    };
    let input = input::build(objects, inputs.groups.clone(), &[], region.as_deref());
    warnings.extend(input.skipped.iter().map(|s| format!("left out: {s}")));
    for p in &input.pools {
        if let Some(why) = &p.invalid {
            warnings.push(format!("NodePool {} is invalid, so it is left alone: {why}", p.name));
        }
        if !input.groups.iter().any(|g| input.pools.get(g.pool).is_some_and(|x| x.name == p.name)) {
            warnings.push(format!(
                "NodePool {}: no Auto Scaling Group in the input matches its name or discovery tags",
                p.name
            ));
        }
    }
    for g in &inputs.groups {
        if !input.groups.iter().any(|x| x.group.name == g.name) {
            warnings.push(format!("{GROUP_KIND} {}: no NodePool selects it", g.name));
        }
    }
    for n in &inputs.nodes {
        let provider = n.spec.as_ref().and_then(|s| s.provider_id.as_deref()).and_then(input::instance_id);
        let known = provider.is_some_and(|id| inputs.groups.iter().any(|g| g.instances.iter().any(|i| i.id == id)));
        if !known {
            warnings.push(format!(
                "node {}: {}, so it belongs to no group",
                n.metadata.name.as_deref().unwrap_or_default(),
                match provider {
                    Some(id) => format!("instance {id} is in no {GROUP_KIND} of the input"),
                    None => "no spec.providerID".to_owned(),
                }
            ));
        }
    }
    let plan = omniscale_nodes::decide(&input, settings, &History::default(), now);
    let pools = plan.pools.iter().enumerate().map(|(i, s)| pool_json(i, s, &input, &plan)).collect();
    (pools, warnings)
}

fn pod_name(p: &PodRef) -> String {
    format!("{}/{}", p.namespace, p.name)
}

fn cpu(m: i64) -> String {
    if m % 1000 == 0 { (m / 1000).to_string() } else { format!("{m}m") }
}

fn bytes(b: i64) -> String {
    const MI: i64 = 1024 * 1024;
    if b % (1024 * MI) == 0 {
        format!("{}Gi", b / (1024 * MI))
    } else if b % MI == 0 {
        format!("{}Mi", b / MI)
    } else {
        b.to_string()
    }
}

fn pool_json(pi: usize, s: &PoolSummary, input: &Input, plan: &Plan) -> Value {
    let snap = &input.snapshot;
    let members: Vec<&input::Group> = input.groups.iter().filter(|g| g.pool == pi).collect();
    let desired_now: u32 = members.iter().map(|g| g.group.desired).sum();
    // The pool's registered nodes, by name, with their group.
    let group_of: HashMap<&str, &str> = members
        .iter()
        .flat_map(|g| {
            let ids = g.nodes.iter().map(|(id, _)| *id).chain(g.unready.iter().map(|u| u.node));
            ids.filter_map(|id| Some((snap.nodes.get(id as usize)?.name.as_str(), g.group.name.as_str())))
        })
        .collect();
    let ups: Vec<Value> = plan
        .scale_up
        .iter()
        .filter(|r| r.pool == s.name)
        .map(|r| json!({"name": r.group, "from": r.from, "to": r.to, "pods": r.pods.iter().map(pod_name).collect::<Vec<_>>()}))
        .collect();
    let added: u32 = plan.scale_up.iter().filter(|r| r.pool == s.name).map(|r| r.to.saturating_sub(r.from)).sum();
    let pdb_free = vec![i64::MAX; snap.pdbs.len()];
    let unneeded = plan.unneeded.iter().map(|(n, t)| (n, t, false));
    let down_nodes: Vec<Value> = unneeded
        .chain(plan.unready.iter().map(|(n, t)| (n, t, true)))
        .filter_map(|(node, since, unready)| {
            let group = *group_of.get(node.as_str())?;
            let removal = plan.remove.iter().find(|r| &r.node == node);
            let evict: Vec<String> = match removal {
                Some(r) => r.evict.iter().map(pod_name).collect(),
                None => snap
                    .node_id(node)
                    .and_then(|id| omniscale_cluster::drain::pods_to_move(snap, id, &pdb_free).ok())
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|p| snap.pods.get(*p as usize))
                    .map(|p| format!("{}/{}", p.namespace, p.name))
                    .collect(),
            };
            let mut v = json!({"name": node, "group": group, "empty": evict.is_empty(), "evict": evict,
                               "removable": removal.is_some()});
            v[if unready { "notReadySince" } else { "unneededSince" }] = json!(since.to_string());
            if removal.is_none() {
                let why = plan.waiting.iter().find(|(n, _)| n == node).map(|(_, w)| w.clone());
                let why = match why {
                    Some(w) if w.starts_with("unneeded for") => {
                        format!("{w} (spec.scaleDown.unneededTime; offline, a node is unneeded since --now)")
                    }
                    Some(w) if w.starts_with("not ready for") => format!("{w} (spec.scaleDown.unreadyTime)"),
                    Some(w) => w,
                    None => "not removed this loop".to_owned(),
                };
                v["waitingFor"] = json!(why);
            }
            Some(v)
        })
        .collect();
    let blocked: Vec<Value> = plan
        .blocked
        .iter()
        .filter(|(n, _)| group_of.contains_key(n.as_str()))
        .map(|(n, why)| json!({"node": n, "reason": why}))
        .collect();
    let utilized: Vec<Value> = plan
        .utilized
        .iter()
        .filter(|(n, _)| group_of.contains_key(n.as_str()))
        .map(|(n, u)| json!({"node": n, "utilization": (u * 100.0).round() / 100.0}))
        .collect();
    let mut scale_down = json!({"nodes": down_nodes, "blocked": blocked, "utilized": utilized});
    let pool = input.pools.get(pi);
    if !plan.scale_up.is_empty() {
        scale_down["skipped"] = json!("this loop scales up, and a loop that scales up does not scale down");
    } else if pool.is_some_and(|p| !p.scale_down.enabled) {
        scale_down["skipped"] = json!("spec.scaleDown.enabled is false");
    }
    let ours: BTreeSet<&str> = s.groups.iter().map(String::as_str).collect();
    let mut pending: Vec<Value> = plan
        .triggered
        .iter()
        .filter(|(_, groups)| groups.iter().any(|g| ours.contains(g.as_str())))
        .map(|(p, groups)| json!({"pod": pod_name(p), "triggered": true, "groups": groups}))
        .collect();
    pending.extend(
        plan.not_triggered.iter().map(|(p, why)| json!({"pod": pod_name(p), "triggered": false, "reason": why})),
    );
    pending.extend(plan.fits_existing.iter().map(|p| {
        json!({"pod": pod_name(p), "triggered": false,
               "reason": "fits an existing node or one already coming (desired capacity not yet ready)"})
    }));
    let templates: Vec<Value> = members
        .iter()
        .map(|g| match &g.template {
            Ok(t) => {
                let a = &t.template.allocatable;
                let mut alloc = json!({"cpu": cpu(a.cpu), "memory": bytes(a.memory), "pods": a.pods});
                for (sym, v) in &a.ext {
                    alloc[snap.syms.name(*sym)] = json!(v);
                }
                let taints: Vec<String> = t
                    .template
                    .taints
                    .iter()
                    .map(|t| match &t.value {
                        Some(v) => format!("{}={v}:{}", t.key, t.effect),
                        None => format!("{}:{}", t.key, t.effect),
                    })
                    .collect();
                json!({"group": g.group.name, "allocatable": alloc, "taints": taints})
            }
            Err(e) => json!({"group": g.group.name, "error": e}),
        })
        .collect();
    let (status, reason, message) = crate::nodes::status::can_scale_up(s);
    json!({
        "name": s.name,
        "groups": s.groups,
        "desired": {"now": desired_now, "after": s.desired},
        "ready": s.ready,
        "min": s.min,
        "max": s.max,
        "nodeTemplates": templates,
        "scaleUp": {"nodes": added, "groups": ups},
        "scaleDown": scale_down,
        "pendingPods": pending,
        "canScaleUp": {"status": status, "reason": reason, "message": message},
    })
}

/// The node part of the table: one line per pool, then pods, nodes, notes and warnings.
pub fn table(plan: &Value) -> String {
    let str_of = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    let mut rows = vec![
        ["NODEPOOL", "GROUPS", "DESIRED", "READY", "SCALE-UP", "UNNEEDED", "REMOVABLE", "CAN-SCALE-UP"]
            .map(str::to_owned),
    ];
    // Lines in sections: groups, pods that trigger, pods that fit, pods no group helps, nodes.
    let mut sections: [Vec<String>; 5] = Default::default();
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut push = |section: usize, l: String| {
        if seen.insert(l.clone()) {
            sections[section].push(l);
        }
    };
    let mut notes: Vec<String> = Vec::new();
    let pools: Vec<&Value> = plan["nodePools"].as_array().into_iter().flatten().collect();
    for p in &pools {
        let groups: Vec<String> = p["groups"].as_array().into_iter().flatten().map(str_of).collect();
        let nodes: Vec<&Value> = p["scaleDown"]["nodes"].as_array().into_iter().flatten().collect();
        let removable = nodes.iter().filter(|n| n["removable"] == true).count();
        let can = &p["canScaleUp"];
        let can = if can["status"] == "True" {
            "True".to_owned()
        } else {
            format!("False ({}: {})", str_of(&can["reason"]), str_of(&can["message"]))
        };
        rows.push([
            str_of(&p["name"]),
            if groups.is_empty() { "-".to_owned() } else { groups.join(",") },
            format!("{} → {}", p["desired"]["now"], p["desired"]["after"]),
            p["ready"].to_string(),
            format!("+{}", p["scaleUp"]["nodes"]),
            nodes.len().to_string(),
            removable.to_string(),
            can,
        ]);
        for t in p["nodeTemplates"].as_array().into_iter().flatten() {
            let group = str_of(&t["group"]);
            if let Some(e) = t["error"].as_str() {
                push(0, format!("group {group}: no node template: {e}"));
            } else {
                let a = &t["allocatable"];
                let extra: String = a
                    .as_object()
                    .into_iter()
                    .flatten()
                    .filter(|(k, _)| !matches!(k.as_str(), "cpu" | "memory" | "pods"))
                    .map(|(k, v)| format!(", {v} {k}"))
                    .collect();
                let taints: Vec<String> = t["taints"].as_array().into_iter().flatten().map(str_of).collect();
                let taints = if taints.is_empty() { String::new() } else { format!(", taints {}", taints.join(", ")) };
                push(
                    0,
                    format!(
                        "group {group}: a new node has {} cpu, {} memory, {} pods{extra} allocatable{taints}",
                        str_of(&a["cpu"]),
                        str_of(&a["memory"]),
                        a["pods"]
                    ),
                );
            }
        }
        for pod in p["pendingPods"].as_array().into_iter().flatten() {
            let name = str_of(&pod["pod"]);
            if pod["triggered"] == true {
                let groups: Vec<String> = pod["groups"].as_array().into_iter().flatten().map(str_of).collect();
                push(1, format!("pod {name} triggers scale-up: {}", groups.join(", ")));
            } else {
                let why = str_of(&pod["reason"]);
                if why.starts_with("fits ") {
                    push(2, format!("pod {name} {why}"));
                } else {
                    push(3, format!("pod {name} fits no group: {why}"));
                }
            }
        }
        for n in &nodes {
            let evict: Vec<String> = n["evict"].as_array().into_iter().flatten().map(str_of).collect();
            let what = if evict.is_empty() { "empty".to_owned() } else { format!("evicts {}", evict.join(", ")) };
            let state = if n["notReadySince"].is_string() { "not ready" } else { "unneeded" };
            let line = match n["waitingFor"].as_str() {
                Some(w) => format!("node {} {state} ({what}), waits: {w}", str_of(&n["name"])),
                None => format!("node {} {state} ({what}), removed now", str_of(&n["name"])),
            };
            push(4, line);
        }
        for b in p["scaleDown"]["blocked"].as_array().into_iter().flatten() {
            push(4, format!("node {} stays: {}", str_of(&b["node"]), str_of(&b["reason"])));
        }
        for u in p["scaleDown"]["utilized"].as_array().into_iter().flatten() {
            let pct = (u["utilization"].as_f64().unwrap_or_default() * 100.0).round();
            push(
                4,
                format!(
                    "node {} stays: {pct}% of its cpu or memory requested, above the pool's threshold",
                    str_of(&u["node"])
                ),
            );
        }
        if let Some(s) = p["scaleDown"]["skipped"].as_str() {
            let note = format!("no scale-down: {s}");
            if !notes.contains(&note) {
                notes.push(note);
            }
        }
    }
    let widths: Vec<usize> = (0..8).map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0)).collect();
    let mut out: Vec<String> = if pools.is_empty() {
        Vec::new()
    } else {
        rows.iter()
            .map(|r| {
                r.iter()
                    .enumerate()
                    .map(|(i, c)| if i == 7 { c.clone() } else { format!("{c:<w$}", w = widths[i]) })
                    .collect::<Vec<_>>()
                    .join("  ")
            })
            .collect()
    };
    out.extend(sections.into_iter().flatten());
    out.extend(notes.into_iter().map(|n| format!("note: {n}")));
    out.extend(plan["nodeWarnings"].as_array().into_iter().flatten().map(|w| format!("warning: {}", str_of(w))));
    out.join("\n")
}
