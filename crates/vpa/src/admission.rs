//! What a pod's containers should request and be limited to, given a recommendation: capped
//! by the namespace's LimitRange (pod, then container items), the Autoscaler's policy and, with
//! `RequestsOnly`, the existing limits; limits scaled to keep each container's limit:request
//! ratio. The admission webhook turns it into a JSON patch on pod creation; the updater uses
//! the same numbers to resize in place and to rank pods, so all three agree on what "right"
//! is.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, LimitRangeItem, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as K8sQuantity;
use omniscale_api::autoscaler::{
    ContainerPolicy, ContainerRecommendation, ControlledResource, ControlledValues, Recommendation, ResourcePolicy,
    TargetRef,
};
use omniscale_api::quantity::Quantity;
use serde_json::{Value, json};

use crate::estimate::{clamp, policy_for, quantity, resource_name};

/// Annotation listing what was changed at admission (upstream's name, so tooling keeps working).
pub const UPDATES_ANNOTATION: &str = "vpaUpdates";
/// Annotation listing the containers the recommendation covered when the pod was admitted.
pub const OBSERVED_ANNOTATION: &str = "vpaObservedContainers";

const RESOURCES: [ControlledResource; 2] = [ControlledResource::Cpu, ControlledResource::Memory];

/// A resource amount in upstream's units (millicores, bytes); absent and zero are both "unset".
fn amount(list: Option<&BTreeMap<String, K8sQuantity>>, r: ControlledResource) -> i64 {
    let Some(q) = list.and_then(|l| l.get(resource_name(r))).and_then(|q| Quantity::parse(&q.0).ok()) else {
        return 0;
    };
    let v = match r {
        ControlledResource::Cpu => q.milli(),
        ControlledResource::Memory => q.units_ceil(),
    };
    i64::try_from(v.max(0)).unwrap_or(i64::MAX)
}

fn requests(c: &Container, r: ControlledResource) -> i64 {
    amount(c.resources.as_ref().and_then(|x| x.requests.as_ref()), r)
}

fn limits(c: &Container, r: ControlledResource) -> i64 {
    amount(c.resources.as_ref().and_then(|x| x.limits.as_ref()), r)
}

/// The LimitRange items of a namespace, merged per type the way the limit ranger applies them
/// all: the tightest max, the largest min, the smallest default.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LimitRanges {
    pub container: Option<Bounds>,
    pub pod: Option<Bounds>,
}

/// Min, max and default limit of one LimitRange type, in upstream units (0 = unset).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bounds {
    pub min: [i64; 2],
    pub max: [i64; 2],
    pub default: [i64; 2],
}

fn idx(r: ControlledResource) -> usize {
    match r {
        ControlledResource::Cpu => 0,
        ControlledResource::Memory => 1,
    }
}

impl LimitRanges {
    pub fn from_items<'a>(items: impl IntoIterator<Item = &'a LimitRangeItem>) -> Self {
        let mut out = LimitRanges::default();
        for item in items {
            let slot = match item.type_.as_str() {
                "Container" => &mut out.container,
                "Pod" => &mut out.pod,
                _ => continue,
            };
            let b = slot.get_or_insert_with(Bounds::default);
            for r in RESOURCES {
                let i = idx(r);
                let tighter = |old: i64, new: i64, smaller: bool| match (old, new) {
                    (0, n) => n,
                    (o, 0) => o,
                    (o, n) => {
                        if smaller {
                            o.min(n)
                        } else {
                            o.max(n)
                        }
                    }
                };
                b.min[i] = tighter(b.min[i], amount(item.min.as_ref(), r), false);
                b.max[i] = tighter(b.max[i], amount(item.max.as_ref(), r), true);
                b.default[i] = tighter(b.default[i], amount(item.default.as_ref(), r), true);
            }
        }
        out
    }
}

/// `value × num / den` in exact integer arithmetic (floor); `None` when it does not fit i64.
fn proportional(value: i64, num: i64, den: i64) -> Option<i64> {
    if den == 0 {
        return None;
    }
    i64::try_from(i128::from(value) * i128::from(num) / i128::from(den)).ok()
}

/// The limit that keeps the container's limit:request ratio at `recommended` (upstream's
/// `GetProportionalLimit`). `Ok(None)`: no limit. `Err(max)`: the ratio overflowed and the
/// limit is capped to i64::MAX.
pub fn proportional_limit(
    orig_limit: i64,
    orig_request: i64,
    recommended: i64,
    default_limit: i64,
) -> Result<Option<i64>, i64> {
    let limit = if orig_limit == 0 { default_limit } else { orig_limit };
    if limit == 0 || recommended == 0 {
        return Ok(None);
    }
    if orig_request == 0 || limit == orig_request {
        return Ok(Some(recommended));
    }
    proportional(limit, recommended, orig_request).map(Some).ok_or(i64::MAX)
}

/// The request whose proportional limit is `boundary` (upstream's `GetBoundaryRequest`);
/// 0 = no boundary.
fn boundary_request(orig_request: i64, orig_limit: i64, boundary: i64, default_limit: i64) -> i64 {
    let limit = if orig_limit == 0 { default_limit } else { orig_limit };
    if limit == 0 || boundary == 0 {
        return 0;
    }
    if orig_request == 0 || limit == orig_request {
        return boundary;
    }
    proportional(boundary, orig_request, limit).unwrap_or(i64::MAX)
}

/// Requests and limits one container should get.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerResources {
    pub name: String,
    /// Resource → amount; only resources the recommendation covers.
    pub requests: BTreeMap<ControlledResource, i64>,
    /// Resource → limit; a resource missing here keeps no limit (or its existing one when
    /// limits are not controlled).
    pub limits: BTreeMap<ControlledResource, i64>,
    /// What capping did, for the annotation and Events.
    pub notes: Vec<String>,
}

/// A container's recommendation after capping, in millicores and bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Capped {
    pub target: BTreeMap<ControlledResource, i64>,
    pub lower: BTreeMap<ControlledResource, i64>,
    pub upper: BTreeMap<ControlledResource, i64>,
    /// What capping changed in the target.
    pub notes: Vec<String>,
}

fn amounts(list: Option<&BTreeMap<String, K8sQuantity>>) -> BTreeMap<ControlledResource, i64> {
    RESOURCES
        .into_iter()
        .filter(|&r| list.is_some_and(|l| l.contains_key(resource_name(r))))
        .map(|r| (r, amount(list, r)))
        .collect()
}

fn controlled_values(p: Option<&ContainerPolicy>) -> ControlledValues {
    p.and_then(|p| p.controlled_values).unwrap_or_default()
}

/// The recommendation for `pod`, capped as the admission controller and updater see it, one
/// entry per container that has a recommendation.
pub fn cap(
    pod: &Pod,
    rec: &Recommendation,
    policy: Option<&ResourcePolicy>,
    ranges: &LimitRanges,
) -> Vec<(String, Capped)> {
    let containers = pod.spec.as_ref().map(|s| s.containers.as_slice()).unwrap_or_default();
    let find = |name: &str| rec.container_recommendations.iter().find(|c| c.container_name == name);
    let mut capped: Vec<(usize, Capped)> = containers
        .iter()
        .enumerate()
        .filter_map(|(i, c)| {
            let r: &ContainerRecommendation = find(&c.name)?;
            Some((
                i,
                Capped {
                    target: amounts(Some(&r.target)),
                    lower: amounts(r.lower_bound.as_ref()),
                    upper: amounts(r.upper_bound.as_ref()),
                    notes: Vec::new(),
                },
            ))
        })
        .collect();
    if let Some(pod_bounds) = &ranges.pod {
        let default = ranges.container.map(|b| b.default).unwrap_or_default();
        for r in RESOURCES {
            for field in [Field::Upper, Field::Target, Field::Lower] {
                pod_limit_range(containers, &mut capped, pod_bounds, &default, r, field);
            }
        }
    }
    capped
        .into_iter()
        .filter_map(|(i, mut cap)| {
            let c = containers.get(i)?;
            let p = policy_for(policy, &c.name);
            for (field, notes) in [(Field::Target, true), (Field::Lower, false), (Field::Upper, false)] {
                let mut out = Vec::new();
                let list = field.of(&mut cap);
                for (&r, v) in list.iter_mut() {
                    if let Some(b) = &ranges.container {
                        let i = idx(r);
                        let (req, lim, def) = (requests(c, r), limits(c, r), b.default[i]);
                        let min = boundary_request(req, lim, b.min[i], def).max(b.min[i]);
                        let max = boundary_request(req, lim, b.max[i], def);
                        if min > 0 && *v < min {
                            *v = min;
                            out.push(format!("{} changed to fit within limit range", resource_name(r)));
                        }
                        if max > 0 && *v > max {
                            *v = max;
                            out.push(format!("{} changed to fit within limit range", resource_name(r)));
                        }
                    }
                    let clamped = clamp(*v, r, p);
                    if clamped != *v {
                        let which = if clamped > *v { "minAllowed" } else { "maxAllowed" };
                        out.push(format!("{} capped to {which}", resource_name(r)));
                        *v = clamped;
                    }
                    if controlled_values(p) == ControlledValues::RequestsOnly {
                        let lim = limits(c, r);
                        if lim > 0 && *v > lim {
                            *v = lim;
                            out.push(format!("{} capped to container limit", resource_name(r)));
                        }
                    }
                }
                if notes {
                    cap.notes.extend(out);
                }
            }
            Some((c.name.clone(), cap))
        })
        .collect()
}

#[derive(Clone, Copy)]
enum Field {
    Target,
    Lower,
    Upper,
}

impl Field {
    fn of(self, c: &mut Capped) -> &mut BTreeMap<ControlledResource, i64> {
        match self {
            Field::Target => &mut c.target,
            Field::Lower => &mut c.lower,
            Field::Upper => &mut c.upper,
        }
    }
}

/// Pod-type LimitRange: when the containers' proportional limits (recommended, or current
/// requests for containers without a recommendation) break the pod's min or max, scale every
/// recommendation by the same factor (up to whole units for min, down for max).
fn pod_limit_range(
    containers: &[Container],
    capped: &mut [(usize, Capped)],
    bounds: &Bounds,
    default: &[i64; 2],
    r: ControlledResource,
    field: Field,
) {
    let i = idx(r);
    let (min, max) = (bounds.min[i], bounds.max[i]);
    let (mut sum_limit, mut sum_rec) = (0i64, 0i64);
    for (ci, c) in containers.iter().enumerate() {
        let rec = capped
            .iter_mut()
            .find(|(j, _)| *j == ci)
            .and_then(|(_, cap)| field.of(cap).get(&r).copied())
            .unwrap_or_else(|| requests(c, r));
        let lim = proportional_limit(limits(c, r), requests(c, r), rec, default[i]).unwrap_or(Some(i64::MAX));
        sum_limit = sum_limit.saturating_add(lim.unwrap_or(0));
        sum_rec = sum_rec.saturating_add(rec);
    }
    if min <= sum_limit && min <= sum_rec && (max == 0 || max >= sum_limit) {
        return;
    }
    let unit = if r == ControlledResource::Cpu { 1000 } else { 1 };
    if min > sum_rec && sum_limit != 0 {
        for (_, cap) in capped.iter_mut() {
            if let Some(v) = field.of(cap).get_mut(&r) {
                let scaled = proportional(*v, min, sum_rec.max(1)).unwrap_or(i64::MAX);
                *v = scaled.saturating_add((unit - scaled % unit) % unit);
            }
        }
        return;
    }
    if sum_limit == 0 {
        return;
    }
    let mut target_total = 0;
    if min > sum_limit {
        target_total = min;
    }
    if max != 0 && max < sum_limit {
        target_total = max;
    }
    for (_, cap) in capped.iter_mut() {
        if let Some(v) = field.of(cap).get_mut(&r) {
            let scaled = proportional(*v, target_total, sum_limit).unwrap_or(i64::MAX);
            *v = scaled - scaled % unit;
        }
    }
}

/// Requests (capped targets) and limits each recommended container of `pod` should get.
pub fn container_resources(
    pod: &Pod,
    rec: &Recommendation,
    policy: Option<&ResourcePolicy>,
    ranges: &LimitRanges,
) -> Vec<ContainerResources> {
    let containers = pod.spec.as_ref().map(|s| s.containers.as_slice()).unwrap_or_default();
    let default = ranges.container.map(|b| b.default).unwrap_or_default();
    cap(pod, rec, policy, ranges)
        .into_iter()
        .filter_map(|(name, capped)| {
            let c = containers.iter().find(|c| c.name == name)?;
            let p = policy_for(policy, &name);
            let mut out =
                ContainerResources { name, requests: capped.target.clone(), notes: capped.notes, ..Default::default() };
            if controlled_values(p) == ControlledValues::RequestsAndLimits {
                for (&r, &v) in &capped.target {
                    match proportional_limit(limits(c, r), requests(c, r), v, default[idx(r)]) {
                        Ok(Some(l)) => {
                            out.limits.insert(r, l);
                        }
                        Ok(None) => {}
                        Err(l) => {
                            out.limits.insert(r, l);
                            out.notes.push(format!(
                                "{}: failed to keep limit to request ratio; capping limit to int64",
                                resource_name(r)
                            ));
                        }
                    }
                }
            }
            Some(out)
        })
        .collect()
}

/// RFC 6901 escaping of one path segment.
fn escape(s: &str) -> String {
    s.replace('~', "~0").replace('/', "~1")
}

/// The JSON patch (RFC 6902) that sets `resources` on `pod`'s containers, creating the
/// `resources`, `requests` and `limits` objects where the pod has none. Limits are only
/// written for resources in `ContainerResources::limits`.
pub fn resources_patch(pod: &Pod, resources: &[ContainerResources]) -> Vec<Value> {
    let containers = pod.spec.as_ref().map(|s| s.containers.as_slice()).unwrap_or_default();
    let mut ops = Vec::new();
    for res in resources {
        let Some((i, c)) = containers.iter().enumerate().find(|(_, c)| c.name == res.name) else { continue };
        let base = format!("/spec/containers/{i}/resources");
        let r = c.resources.as_ref();
        if r.is_none() {
            ops.push(json!({"op": "add", "path": base, "value": {}}));
        }
        for (field, values, existing) in [
            ("requests", &res.requests, r.and_then(|r| r.requests.as_ref())),
            ("limits", &res.limits, r.and_then(|r| r.limits.as_ref())),
        ] {
            if values.is_empty() {
                continue;
            }
            if existing.is_none() {
                ops.push(json!({"op": "add", "path": format!("{base}/{field}"), "value": {}}));
            }
            for (&rsrc, &v) in values {
                ops.push(json!({
                    "op": "add",
                    "path": format!("{base}/{field}/{}", escape(resource_name(rsrc))),
                    "value": quantity(rsrc, v).0,
                }));
            }
        }
    }
    ops
}

/// The strategic merge patch for a pod's `resize` subresource (containers merge by name, so
/// only the named resources change — the form `kubectl patch --subresource resize` sends).
pub fn resize_patch(resources: &[ContainerResources]) -> Value {
    let containers: Vec<Value> = resources
        .iter()
        .map(|c| {
            let list = |m: &BTreeMap<ControlledResource, i64>| -> serde_json::Map<String, Value> {
                m.iter().map(|(&r, &v)| (resource_name(r).to_owned(), Value::String(quantity(r, v).0))).collect()
            };
            let mut res = serde_json::Map::new();
            if !c.requests.is_empty() {
                res.insert("requests".into(), Value::Object(list(&c.requests)));
            }
            if !c.limits.is_empty() {
                res.insert("limits".into(), Value::Object(list(&c.limits)));
            }
            json!({"name": c.name, "resources": res})
        })
        .collect();
    json!({"spec": {"containers": containers}})
}

/// The whole admission mutation of a new pod.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Mutation {
    /// RFC 6902 operations; empty means leave the pod alone.
    pub patch: Vec<Value>,
    /// The `vpaUpdates` annotation text.
    pub updates: String,
}

/// Sets requests (and proportional limits) from `rec` on a pod being created, with upstream's
/// annotations. A pod the recommendation does not cover gets no patch.
pub fn mutate(
    pod: &Pod,
    autoscaler: &str,
    rec: &Recommendation,
    policy: Option<&ResourcePolicy>,
    ranges: &LimitRanges,
) -> Mutation {
    let resources = container_resources(pod, rec, policy, ranges);
    let containers = pod.spec.as_ref().map(|s| s.containers.as_slice()).unwrap_or_default();
    if resources.iter().all(|r| r.requests.is_empty()) {
        return Mutation::default();
    }
    let mut patch = resources_patch(pod, &resources);
    let mut parts = Vec::new();
    for res in &resources {
        let Some(i) = containers.iter().position(|c| c.name == res.name) else { continue };
        let mut what: Vec<String> = res.requests.keys().map(|&r| format!("{} request", resource_name(r))).collect();
        what.extend(res.limits.keys().map(|&r| format!("{} limit", resource_name(r))));
        what.extend(res.notes.iter().cloned());
        parts.push(format!("container {i}: {}", what.join(", ")));
    }
    let updates = format!("Pod resources updated by {autoscaler}: {}", parts.join("; "));
    let observed: Vec<&str> = containers.iter().map(|c| c.name.as_str()).collect();
    if pod.metadata.annotations.is_none() {
        patch.push(json!({"op": "add", "path": "/metadata/annotations", "value": {}}));
    }
    patch.push(json!({"op": "add", "path": format!("/metadata/annotations/{UPDATES_ANNOTATION}"), "value": updates}));
    patch.push(json!({
        "op": "add",
        "path": format!("/metadata/annotations/{OBSERVED_ANNOTATION}"),
        "value": observed.join(", "),
    }));
    Mutation { patch, updates }
}

/// Whether `target` is the pod's top-level controller: the pod's controller owner is the
/// target itself, or (for a Deployment) a ReplicaSet named after it. Upstream resolves the
/// chain through the API; a Deployment's ReplicaSets are always `<deployment>-<hash>`.
pub fn controlled_by(pod: &Pod, target: &TargetRef) -> bool {
    let Some(owner) = pod.metadata.owner_references.iter().flatten().find(|o| o.controller == Some(true)) else {
        return false;
    };
    if owner.kind == target.kind && owner.name == target.name {
        return true;
    }
    target.kind == "Deployment"
        && owner.kind == "ReplicaSet"
        && owner
            .name
            .strip_prefix(target.name.as_str())
            .and_then(|s| s.strip_prefix('-'))
            .is_some_and(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_alphanumeric()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn v14_proportional_limits() {
        // CPU in millicores: limit / request / recommendation.
        assert_eq!(proportional_limit(2000, 1000, 10000, 0), Ok(Some(20000)));
        assert_eq!(proportional_limit(0, 1000, 10000, 2000), Ok(Some(20000)));
        assert_eq!(proportional_limit(0, 1000, 10000, 0), Ok(None));
        assert_eq!(proportional_limit(2000, 0, 10000, 0), Ok(Some(10000)));
        assert_eq!(proportional_limit(1000, 1000, 10000, 0), Ok(Some(10000)));
        assert_eq!(proportional_limit(2000, 1500, 1000, 0), Ok(Some(1333)));
        // Memory in bytes.
        assert_eq!(proportional_limit(200, 150, 100, 0), Ok(Some(133)));
        assert_eq!(proportional_limit(i64::MAX, 1, 2, 0), Err(i64::MAX));
        assert_eq!(proportional_limit(2000, 1000, 0, 0), Ok(None));
    }

    fn pod(resources: Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "default"},
            "spec": {"containers": [{"name": "app", "image": "x", "resources": resources}, {"name": "side", "image": "y"}]}
        }))
        .unwrap()
    }

    fn rec(cpu: &str, mem: &str) -> Recommendation {
        serde_json::from_value(json!({"containerRecommendations": [{
            "containerName": "app",
            "target": {"cpu": cpu, "memory": mem},
            "lowerBound": {"cpu": cpu, "memory": mem},
            "upperBound": {"cpu": cpu, "memory": mem}}]}))
        .unwrap()
    }

    #[test]
    fn patch_sets_requests_and_scales_limits() {
        let p = pod(json!({"requests": {"cpu": "100m"}, "limits": {"cpu": "200m"}}));
        let m = mutate(&p, "hamster", &rec("587m", "262144k"), None, &LimitRanges::default());
        let ops: Vec<(String, Value)> =
            m.patch.iter().map(|o| (o["path"].as_str().unwrap().to_owned(), o["value"].clone())).collect();
        assert!(ops.contains(&("/spec/containers/0/resources/requests/cpu".into(), json!("587m"))), "{ops:?}");
        assert!(ops.contains(&("/spec/containers/0/resources/requests/memory".into(), json!("262144k"))));
        assert!(ops.contains(&("/spec/containers/0/resources/limits/cpu".into(), json!("1174m"))));
        // No memory limit before, none after.
        assert!(!ops.iter().any(|(p, _)| p.ends_with("limits/memory")));
        assert!(ops.contains(&("/metadata/annotations".into(), json!({}))));
        assert_eq!(m.updates, "Pod resources updated by hamster: container 0: cpu request, memory request, cpu limit");
        assert!(ops.contains(&("/metadata/annotations/vpaObservedContainers".into(), json!("app, side"))));
        // The patch applies to the pod as JSON.
        let mut doc = serde_json::to_value(&p).unwrap();
        for op in &m.patch {
            let path: Vec<String> = op["path"]
                .as_str()
                .unwrap()
                .split('/')
                .skip(1)
                .map(|s| s.replace("~1", "/").replace("~0", "~"))
                .collect();
            let (last, parents) = path.split_last().unwrap();
            let mut cur = &mut doc;
            for seg in parents {
                cur = match cur {
                    Value::Array(a) => &mut a[seg.parse::<usize>().unwrap()],
                    other => other.get_mut(seg.as_str()).unwrap(),
                };
            }
            cur.as_object_mut().unwrap().insert(last.clone(), op["value"].clone());
        }
        let back: Pod = serde_json::from_value(doc).unwrap();
        let r = back.spec.unwrap().containers[0].resources.clone().unwrap();
        assert_eq!(r.requests.unwrap()["cpu"].0, "587m");
    }

    #[test]
    fn missing_resources_objects_are_created() {
        let p = pod(Value::Null);
        let m = mutate(&p, "a", &rec("1", "1Gi"), None, &LimitRanges::default());
        assert_eq!(m.patch[0], json!({"op": "add", "path": "/spec/containers/0/resources", "value": {}}));
        assert_eq!(m.patch[1], json!({"op": "add", "path": "/spec/containers/0/resources/requests", "value": {}}));
        // A pod with no recommended container is left alone.
        let none = Recommendation::default();
        assert!(mutate(&p, "a", &none, None, &LimitRanges::default()).patch.is_empty());
    }

    #[test]
    fn container_limit_range_caps_by_the_limit_ratio() {
        let item: LimitRangeItem =
            serde_json::from_value(json!({"type": "Container", "max": {"cpu": "1"}, "min": {"memory": "300Mi"}}))
                .unwrap();
        let ranges = LimitRanges::from_items([&item]);
        // limit:request 2:1, max limit 1 cpu → request at most 500m.
        let p = pod(json!({"requests": {"cpu": "100m", "memory": "100Mi"}, "limits": {"cpu": "200m"}}));
        let r = container_resources(&p, &rec("800m", "100Mi"), None, &ranges);
        assert_eq!(r[0].requests[&ControlledResource::Cpu], 500);
        assert_eq!(r[0].limits[&ControlledResource::Cpu], 1000);
        assert_eq!(r[0].requests[&ControlledResource::Memory], 300 * 1024 * 1024);
        assert!(r[0].notes.iter().any(|n| n == "cpu changed to fit within limit range"), "{:?}", r[0].notes);
    }

    #[test]
    fn pod_limit_range_scales_all_containers() {
        let item: LimitRangeItem = serde_json::from_value(json!({"type": "Pod", "max": {"cpu": "1"}})).unwrap();
        let ranges = LimitRanges::from_items([&item]);
        let p = pod(json!({"requests": {"cpu": "100m"}, "limits": {"cpu": "100m"}}));
        // Limit = request; 2 cpu recommended but the pod may have 1.
        let r = container_resources(&p, &rec("2", "1Gi"), None, &ranges);
        assert_eq!(r[0].requests[&ControlledResource::Cpu], 1000);
    }

    #[test]
    fn requests_only_caps_to_the_existing_limit() {
        let policy: ResourcePolicy = serde_json::from_value(json!({"containerPolicies": [{
            "containerName": "app", "controlledValues": "RequestsOnly", "maxAllowed": {"memory": "200Mi"}}]}))
        .unwrap();
        let p = pod(json!({"requests": {"cpu": "100m"}, "limits": {"cpu": "300m"}}));
        let r = container_resources(&p, &rec("800m", "1Gi"), Some(&policy), &LimitRanges::default());
        assert_eq!(r[0].requests[&ControlledResource::Cpu], 300);
        assert_eq!(r[0].requests[&ControlledResource::Memory], 200 * 1024 * 1024);
        assert!(r[0].limits.is_empty());
        assert!(r[0].notes.contains(&"cpu capped to container limit".to_string()));
        assert!(r[0].notes.contains(&"memory capped to maxAllowed".to_string()));
    }

    #[test]
    fn controller_matching() {
        let mut p = pod(Value::Null);
        let target = TargetRef { api_version: "apps/v1".into(), kind: "Deployment".into(), name: "web".into() };
        assert!(!controlled_by(&p, &target));
        p.metadata.owner_references = Some(vec![
            serde_json::from_value(json!({
            "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7d4b9c", "uid": "u", "controller": true}))
            .unwrap(),
        ]);
        assert!(controlled_by(&p, &target));
        let other = TargetRef { name: "we".into(), ..target.clone() };
        assert!(!controlled_by(&p, &other));
    }
}
