//! What the API server's schema cannot check, decided without I/O.
//!
//! The shells gather facts (does the target kind exist, does it have `/scale`, which other
//! NodePools exist) and these functions turn spec + facts into the `Ready` condition. Keeping
//! them pure lets the tests cover every reason without a cluster.

use std::collections::BTreeSet;

use omniscale_api::{
    Autoscaler, NodePool,
    condition::{ConditionUpdate, READY},
    duration::{parse_duration, parse_duration_or_never},
    nodepool::RequirementOperator,
    quantity::Quantity,
};

/// What discovery says about an Autoscaler's `targetRef` kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetKind {
    /// Served, with a `scale` subresource.
    Scalable {
        /// Plural resource name, e.g. `deployments`.
        plural: String,
    },
    /// Served, without a `scale` subresource.
    NotScalable {
        /// Plural resource name.
        plural: String,
    },
    /// The group/version is served but has no such kind.
    UnknownKind,
    /// The group/version is not served at all.
    UnknownGroupVersion,
}

/// Whether the object `targetRef` names exists (read through its `scale` subresource).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetObject {
    /// The object exists.
    Found,
    /// The kind is served but no object has that name (yet).
    Missing,
    /// Not looked up: the kind is not served or has no `scale` subresource.
    Unchecked,
}

/// Reasons of the `Ready` condition, stable for alerts and `kubectl wait`.
pub mod reason {
    /// Everything checked out.
    pub const VALID: &str = "Valid";
    /// The spec holds a value the schema should have rejected (e.g. applied with an older CRD).
    pub const INVALID_SPEC: &str = "InvalidSpec";
    /// The object could not be read as this version of the resource at all.
    pub const MALFORMED: &str = "Malformed";
    /// The target's group/version or kind is not served by the cluster.
    pub const TARGET_KIND_NOT_FOUND: &str = "TargetKindNotFound";
    /// The target kind is served but the named object does not exist.
    pub const TARGET_NOT_FOUND: &str = "TargetNotFound";
    /// Horizontal scaling was asked for a kind without a `scale` subresource.
    pub const TARGET_NOT_SCALABLE: &str = "TargetNotScalable";
    /// Another NodePool already claims the same Auto Scaling Group or discovery tags.
    pub const CONFLICTING_NODE_POOL: &str = "ConflictingNodePool";
}

/// Decides the `Ready` condition of an Autoscaler given what discovery found for its target's
/// kind and whether the object itself exists.
pub fn autoscaler_ready(a: &Autoscaler, target: &TargetKind, object: TargetObject) -> ConditionUpdate {
    let spec = &a.spec;
    let t = &spec.target_ref;
    let mut problems = Vec::new();
    if spec.horizontal.is_none() && spec.vertical.is_none() {
        problems.push("set horizontal, vertical or both".to_string());
    }
    if let Some(h) = &spec.horizontal {
        if h.max_replicas < 1 {
            problems.push(format!("horizontal.maxReplicas is {}, must be at least 1", h.max_replicas));
        }
        if h.min_replicas() < 0 || h.min_replicas() > h.max_replicas {
            problems.push(format!(
                "horizontal.minReplicas {} must be between 0 and maxReplicas {}",
                h.min_replicas(),
                h.max_replicas
            ));
        }
        for (field, value) in [
            ("cpuInitializationPeriod", &h.cpu_initialization_period),
            ("initialReadinessDelay", &h.initial_readiness_delay),
        ] {
            if let Some(Err(e)) = value.as_deref().map(parse_duration) {
                problems.push(format!("horizontal.{field}: {e}"));
            }
        }
    }
    if let Some(v) = &spec.vertical {
        let policies = v.resource_policy.as_ref().map(|p| p.container_policies.as_slice()).unwrap_or_default();
        let mut seen = BTreeSet::new();
        for p in policies {
            if !seen.insert(p.container_name.as_str()) {
                problems.push(format!("vertical: more than one containerPolicy for {:?}", p.container_name));
            }
            for (field, map) in [("minAllowed", &p.min_allowed), ("maxAllowed", &p.max_allowed)] {
                for (resource, q) in map.iter().flatten() {
                    match Quantity::try_from(q) {
                        Ok(q) if q.is_negative() => {
                            problems.push(format!("vertical {}: {field}.{resource} is negative", p.container_name));
                        }
                        Ok(_) => {}
                        Err(e) => problems.push(format!("vertical {}: {field}.{resource}: {e}", p.container_name)),
                    }
                }
            }
            for (resource, min) in p.min_allowed.iter().flatten() {
                let max = p.max_allowed.as_ref().and_then(|m| m.get(resource));
                if let (Ok(min), Some(Ok(max))) = (Quantity::try_from(min), max.map(Quantity::try_from)) {
                    if min > max {
                        problems.push(format!(
                            "vertical {}: minAllowed.{resource} {min} exceeds maxAllowed.{resource} {max}",
                            p.container_name
                        ));
                    }
                }
            }
        }
    }
    if !problems.is_empty() {
        return ConditionUpdate::fails(READY, reason::INVALID_SPEC, problems.join("; "));
    }
    let what = format!("{} {} {:?}", t.api_version, t.kind, t.name);
    match target {
        TargetKind::UnknownGroupVersion => ConditionUpdate::fails(
            READY,
            reason::TARGET_KIND_NOT_FOUND,
            format!("targetRef {what}: API group/version {} is not served by this cluster", t.api_version),
        ),
        TargetKind::UnknownKind => ConditionUpdate::fails(
            READY,
            reason::TARGET_KIND_NOT_FOUND,
            format!("targetRef {what}: kind {} is not served in {}", t.kind, t.api_version),
        ),
        TargetKind::NotScalable { plural } if spec.horizontal.is_some() => ConditionUpdate::fails(
            READY,
            reason::TARGET_NOT_SCALABLE,
            format!("targetRef {what}: {plural} has no scale subresource, so horizontal scaling cannot work"),
        ),
        TargetKind::Scalable { .. } if object == TargetObject::Missing => ConditionUpdate::fails(
            READY,
            reason::TARGET_NOT_FOUND,
            format!(
                "targetRef {what}: no {} named {:?} in namespace {}",
                t.kind,
                t.name,
                a.metadata.namespace.as_deref().unwrap_or("default")
            ),
        ),
        TargetKind::NotScalable { .. } | TargetKind::Scalable { .. } => ConditionUpdate::holds(
            READY,
            reason::VALID,
            format!("targetRef {what} is served and the spec is consistent"),
        ),
    }
}

/// The claim a NodePool makes on cloud capacity; two pools must never make the same claim.
fn claim(p: &NodePool) -> Option<String> {
    let asg = p.spec.auto_scaling_group.as_ref()?;
    if let Some(name) = &asg.name {
        return Some(format!("Auto Scaling Group {name:?}"));
    }
    asg.discovery.as_ref().map(|d| {
        let tags: Vec<String> = d.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
        format!("Auto Scaling Groups discovered for cluster {:?} with tags [{}]", d.cluster_name, tags.join(", "))
    })
}

/// Decides the `Ready` condition of a NodePool, given every NodePool in the cluster.
///
/// When two pools claim the same Auto Scaling Group, the older one (then the lower name) keeps
/// it, so adding a duplicate never disturbs a working pool.
pub fn nodepool_ready(pool: &NodePool, all: &[&NodePool]) -> ConditionUpdate {
    let spec = &pool.spec;
    let mut problems = Vec::new();
    match (&spec.auto_scaling_group, &spec.provisioner) {
        (Some(_), Some(_)) | (None, None) => {
            problems.push("set exactly one of autoScalingGroup and provisioner".into())
        }
        _ => {}
    }
    if let Some(asg) = &spec.auto_scaling_group {
        if asg.name.is_some() == asg.discovery.is_some() {
            problems.push("autoScalingGroup: set exactly one of name and discovery".into());
        }
    }
    if let Some(p) = &spec.provisioner {
        if p.subnet_selector_terms.is_empty() || p.security_group_selector_terms.is_empty() {
            problems.push("provisioner: subnetSelectorTerms and securityGroupSelectorTerms must not be empty".into());
        }
        for r in &p.requirements {
            let values = r.values.as_deref().unwrap_or_default();
            match r.operator {
                RequirementOperator::Gt | RequirementOperator::Lt => {
                    if values.len() != 1 || values[0].parse::<i64>().is_err() {
                        problems
                            .push(format!("requirement {}: {:?} needs exactly one integer value", r.key, r.operator));
                    }
                }
                RequirementOperator::In | RequirementOperator::NotIn if values.is_empty() => {
                    problems.push(format!("requirement {}: {:?} needs at least one value", r.key, r.operator));
                }
                _ => {}
            }
            if let Some(min) = r.min_values {
                if r.operator == RequirementOperator::In && values.len() < usize::try_from(min).unwrap_or(0) {
                    problems.push(format!(
                        "requirement {}: minValues {min} exceeds the {} values listed",
                        r.key,
                        values.len()
                    ));
                }
            }
        }
        if let Some(Err(e)) = p.expire_after.as_deref().map(parse_duration_or_never) {
            problems.push(format!("provisioner.expireAfter: {e}"));
        }
    }
    if let Some(sd) = &spec.scale_down {
        if !(0.0..=1.0).contains(&sd.utilization_threshold) {
            problems.push(format!("scaleDown.utilizationThreshold {} must be within 0..1", sd.utilization_threshold));
        }
        for (field, value) in [
            ("unneededTime", &sd.unneeded_time),
            ("delayAfterAdd", &sd.delay_after_add),
            ("unreadyTime", &sd.unready_time),
        ] {
            if let Err(e) = parse_duration(value) {
                problems.push(format!("scaleDown.{field}: {e}"));
            }
        }
    }
    if let Some(d) = &spec.disruption {
        if let Err(e) = parse_duration_or_never(&d.consolidate_after) {
            problems.push(format!("disruption.consolidateAfter: {e}"));
        }
        for b in &d.budgets {
            if let Some(schedule) = &b.schedule {
                if schedule.split_whitespace().count() != 5 && !schedule.starts_with('@') {
                    problems.push(format!("budget schedule {schedule:?}: expected 5 cron fields or a @macro"));
                }
            }
        }
    }
    if let Some(limits) = &spec.limits {
        for (field, q) in [("cpu", &limits.cpu), ("memory", &limits.memory)] {
            if let Some(q) = q {
                match Quantity::try_from(q) {
                    Ok(q) if q.is_negative() => problems.push(format!("limits.{field} is negative")),
                    Ok(_) => {}
                    Err(e) => problems.push(format!("limits.{field}: {e}")),
                }
            }
        }
    }
    if !problems.is_empty() {
        return ConditionUpdate::fails(READY, reason::INVALID_SPEC, problems.join("; "));
    }
    if let Some(mine) = claim(pool) {
        let key = |p: &NodePool| (p.metadata.creation_timestamp.clone().map(|t| t.0), p.metadata.name.clone());
        let earlier_owner = all
            .iter()
            .filter(|other| other.metadata.name != pool.metadata.name && claim(other).as_ref() == Some(&mine))
            .filter(|other| key(other) < key(pool))
            .map(|other| other.metadata.name.clone().unwrap_or_default())
            .min();
        if let Some(owner) = earlier_owner {
            return ConditionUpdate::fails(
                READY,
                reason::CONFLICTING_NODE_POOL,
                format!("{mine} is already managed by NodePool {owner:?}; remove one of the two"),
            );
        }
    }
    ConditionUpdate::holds(READY, reason::VALID, "the spec is consistent")
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::{api::resource::Quantity as Q, apis::meta::v1::Time};
    use omniscale_api::{
        autoscaler::{AutoscalerSpec, ContainerPolicy, HorizontalSpec, ResourcePolicy, TargetRef, VerticalSpec},
        condition::ConditionStatus,
        nodepool::{AsgDiscovery, AutoScalingGroupSource, NodePoolSpec, ScaleDown},
    };

    fn autoscaler(horizontal: Option<HorizontalSpec>, vertical: Option<VerticalSpec>) -> Autoscaler {
        Autoscaler::new(
            "a",
            AutoscalerSpec {
                target_ref: TargetRef { api_version: "apps/v1".into(), kind: "Deployment".into(), name: "web".into() },
                mode: Default::default(),
                horizontal,
                vertical,
            },
        )
    }

    fn horizontal(min: Option<i32>, max: i32) -> HorizontalSpec {
        HorizontalSpec {
            min_replicas: min,
            max_replicas: max,
            metrics: None,
            behavior: None,
            cpu_initialization_period: None,
            initial_readiness_delay: None,
        }
    }

    fn scalable() -> TargetKind {
        TargetKind::Scalable { plural: "deployments".into() }
    }

    #[test]
    fn valid_autoscaler_is_ready() {
        let c = autoscaler_ready(&autoscaler(Some(horizontal(Some(1), 10)), None), &scalable(), TargetObject::Found);
        assert_eq!((c.status, c.reason.as_str()), (ConditionStatus::True, reason::VALID));
    }

    #[test]
    fn target_problems_have_their_own_reasons() {
        let a = autoscaler(Some(horizontal(None, 3)), None);
        let c = autoscaler_ready(&a, &TargetKind::UnknownGroupVersion, TargetObject::Unchecked);
        assert_eq!((c.status, c.reason.as_str()), (ConditionStatus::False, reason::TARGET_KIND_NOT_FOUND));
        assert!(c.message.contains("apps/v1"), "{}", c.message);
        let c = autoscaler_ready(&a, &TargetKind::UnknownKind, TargetObject::Unchecked);
        assert_eq!(c.reason, reason::TARGET_KIND_NOT_FOUND);
        let c = autoscaler_ready(&a, &TargetKind::NotScalable { plural: "daemonsets".into() }, TargetObject::Unchecked);
        assert_eq!(c.reason, reason::TARGET_NOT_SCALABLE);
        assert!(c.message.contains("daemonsets has no scale subresource"), "{}", c.message);
        // Vertical-only scaling does not need /scale.
        let v = autoscaler(None, Some(VerticalSpec::default()));
        let c = autoscaler_ready(&v, &TargetKind::NotScalable { plural: "daemonsets".into() }, TargetObject::Unchecked);
        assert_eq!(c.status, ConditionStatus::True);
    }

    #[test]
    fn a_missing_target_object_is_not_ready() {
        let mut a = autoscaler(Some(horizontal(None, 3)), None);
        a.metadata.namespace = Some("shop".into());
        let c = autoscaler_ready(&a, &scalable(), TargetObject::Missing);
        assert_eq!((c.status, c.reason.as_str()), (ConditionStatus::False, reason::TARGET_NOT_FOUND));
        assert!(c.message.contains("no Deployment named \"web\" in namespace shop"), "{}", c.message);
        // A spec problem is reported first: it needs fixing whether or not the target exists.
        let bad = autoscaler(Some(horizontal(Some(5), 2)), None);
        assert_eq!(autoscaler_ready(&bad, &scalable(), TargetObject::Missing).reason, reason::INVALID_SPEC);
    }

    #[test]
    fn spec_errors_the_schema_should_have_caught_are_still_reported() {
        let c = autoscaler_ready(&autoscaler(Some(horizontal(Some(5), 2)), None), &scalable(), TargetObject::Found);
        assert_eq!(c.reason, reason::INVALID_SPEC);
        assert!(c.message.contains("minReplicas 5"), "{}", c.message);
        let c = autoscaler_ready(&autoscaler(None, None), &scalable(), TargetObject::Found);
        assert_eq!(c.reason, reason::INVALID_SPEC);
        let mut h = horizontal(None, 2);
        h.cpu_initialization_period = Some("5 minutes".into());
        let c = autoscaler_ready(&autoscaler(Some(h), None), &scalable(), TargetObject::Found);
        assert!(c.message.contains("cpuInitializationPeriod"), "{}", c.message);

        let policy = |name: &str, min: &str, max: &str| ContainerPolicy {
            container_name: name.into(),
            mode: None,
            min_allowed: Some([("cpu".to_string(), Q(min.into()))].into()),
            max_allowed: Some([("cpu".to_string(), Q(max.into()))].into()),
            controlled_resources: None,
            controlled_values: None,
        };
        let v = VerticalSpec {
            update_policy: None,
            resource_policy: Some(ResourcePolicy {
                container_policies: vec![policy("app", "2", "1500m"), policy("app", "1", "2"), policy("x", "1x", "2")],
            }),
            shared_resource_owner: None,
        };
        let c = autoscaler_ready(&autoscaler(None, Some(v)), &scalable(), TargetObject::Found);
        assert_eq!(c.reason, reason::INVALID_SPEC);
        assert!(c.message.contains("minAllowed.cpu 2 exceeds maxAllowed.cpu 1500m"), "{}", c.message);
        assert!(c.message.contains("more than one containerPolicy"), "{}", c.message);
        assert!(c.message.contains("unknown suffix"), "{}", c.message);
    }

    fn pool(name: &str, created: i64, asg: AutoScalingGroupSource) -> NodePool {
        let mut p = NodePool::new(
            name,
            NodePoolSpec {
                auto_scaling_group: Some(asg),
                provisioner: None,
                template: None,
                limits: None,
                scale_down: None,
                disruption: None,
                weight: None,
            },
        );
        p.metadata.creation_timestamp = jiff::Timestamp::from_second(created).ok().map(Time);
        p
    }

    fn named(n: &str) -> AutoScalingGroupSource {
        AutoScalingGroupSource { name: Some(n.into()), discovery: None }
    }

    #[test]
    fn the_older_pool_keeps_a_contested_group() {
        let a = pool("a", 100, named("spot-ng"));
        let b = pool("b", 50, named("spot-ng"));
        let c = pool("c", 10, named("other"));
        let all = [&a, &b, &c];
        let ca = nodepool_ready(&a, &all);
        assert_eq!((ca.status, ca.reason.as_str()), (ConditionStatus::False, reason::CONFLICTING_NODE_POOL));
        assert!(ca.message.contains("\"b\""), "{}", ca.message);
        assert_eq!(nodepool_ready(&b, &all).status, ConditionStatus::True);
        assert_eq!(nodepool_ready(&c, &all).status, ConditionStatus::True);
        let d1 = AutoScalingGroupSource {
            name: None,
            discovery: Some(AsgDiscovery { cluster_name: "demo".into(), tags: Default::default() }),
        };
        let (x, y) = (pool("x", 1, d1.clone()), pool("y", 1, d1));
        assert_eq!(nodepool_ready(&y, &[&x, &y]).reason, reason::CONFLICTING_NODE_POOL, "same age: lower name wins");
        assert_eq!(nodepool_ready(&x, &[&x, &y]).status, ConditionStatus::True);
    }

    #[test]
    fn nodepool_spec_errors_are_reported() {
        let mut p = pool(
            "a",
            1,
            AutoScalingGroupSource {
                name: Some("n".into()),
                discovery: Some(AsgDiscovery { cluster_name: "c".into(), tags: Default::default() }),
            },
        );
        p.spec.scale_down =
            Some(ScaleDown { utilization_threshold: 1.5, unneeded_time: "ten".into(), ..ScaleDown::default() });
        let c = nodepool_ready(&p, &[&p]);
        assert_eq!(c.reason, reason::INVALID_SPEC);
        for needle in ["exactly one of name and discovery", "utilizationThreshold 1.5", "unneededTime"] {
            assert!(c.message.contains(needle), "{needle} not in {}", c.message);
        }
    }
}
