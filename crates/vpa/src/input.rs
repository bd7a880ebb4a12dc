//! The bridge from what the API serves (Pods, PodMetrics answers, the Autoscaler spec) to the
//! engine, shared by the operator's vertical shell and `omniscale plan` so both decide from the
//! same inputs in the same way.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use omniscale_api::autoscaler::{AutoscalerSpec, ControlledResource, ResourceOwner};
use omniscale_api::condition::ConditionUpdate;
use omniscale_metrics::Usage;

use crate::estimate::{ContainerInput, Outcome, controlled, policy_for, recommend, resource_name};
use crate::model::{Model, Observation, Rejected};

/// Resources the horizontal side scales on (its Resource and ContainerResource metrics).
pub fn horizontal_resources(spec: &AutoscalerSpec) -> BTreeSet<ControlledResource> {
    let mut out = BTreeSet::new();
    let Some(h) = &spec.horizontal else { return out };
    let metrics = h.metrics.as_deref();
    let default_cpu = metrics.is_none_or(<[_]>::is_empty);
    if default_cpu {
        // No metrics means upstream's default: 80 % cpu utilisation.
        out.insert(ControlledResource::Cpu);
    }
    for m in metrics.into_iter().flatten() {
        let name = m
            .resource
            .as_ref()
            .map(|r| r.name.as_str())
            .or_else(|| m.container_resource.as_ref().map(|r| r.name.as_str()));
        match name {
            Some("cpu") => {
                out.insert(ControlledResource::Cpu);
            }
            Some("memory") => {
                out.insert(ControlledResource::Memory);
            }
            _ => {}
        }
    }
    out
}

/// Resources the vertical side leaves to the horizontal side.
pub fn yielded(spec: &AutoscalerSpec) -> BTreeSet<ControlledResource> {
    let owner = spec.vertical.as_ref().and_then(|v| v.shared_resource_owner).unwrap_or_default();
    match owner {
        ResourceOwner::Horizontal => horizontal_resources(spec),
        ResourceOwner::Vertical => BTreeSet::new(),
    }
}

/// Who controls each resource the vertical policy names, for status.
pub fn owners(spec: &AutoscalerSpec) -> BTreeMap<String, ResourceOwner> {
    let policy = spec.vertical.as_ref().and_then(|v| v.resource_policy.as_ref());
    let mut named: BTreeSet<ControlledResource> = controlled(policy_for(policy, "*"));
    for p in policy.map(|p| p.container_policies.as_slice()).unwrap_or_default() {
        named.extend(controlled(Some(p)));
    }
    let y = yielded(spec);
    named
        .into_iter()
        .map(|r| {
            let o = if y.contains(&r) { ResourceOwner::Horizontal } else { ResourceOwner::Vertical };
            (resource_name(r).to_owned(), o)
        })
        .collect()
}

/// What one round of feeding did, for metrics and logs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Fed {
    pub cpu_samples: usize,
    pub memory_samples: usize,
    pub ooms: usize,
    pub rejected: usize,
}

fn memory_request_bytes(pod: &Pod, container: &str) -> i64 {
    pod.spec
        .as_ref()
        .and_then(|s| s.containers.iter().find(|c| c.name == container))
        .and_then(|c| c.resources.as_ref()?.requests.as_ref()?.get("memory"))
        .and_then(|q| omniscale_api::quantity::Quantity::parse(&q.0).ok())
        .map_or(0, |q| i64::try_from(q.units_ceil()).unwrap_or(i64::MAX))
}

/// Feeds one round for one Autoscaler: each pod's usage (`usage` by pod name; the pods are in
/// the Autoscaler's namespace) and any OOM kill in its containers' last termination state.
pub fn feed(model: &mut Model, owner: &Arc<str>, pods: &[&Pod], usage: &HashMap<String, Usage>) -> Fed {
    let mut fed = Fed::default();
    let mut model = model.owner(owner);
    for pod in pods {
        let Some(name) = pod.metadata.name.as_deref() else { continue };
        if let Some(u) = usage.get(name) {
            for c in &u.containers {
                let o = Observation { time: u.timestamp, cpu_milli: c.cpu, memory_bytes: c.memory.map(|m| m / 1000) };
                let (cpu, mem) = model.observe(name, &c.name, o);
                fed.rejected += usize::from(cpu.is_err()) + usize::from(mem.is_err());
                fed.cpu_samples += usize::from(c.cpu.is_some() && cpu.is_ok());
                fed.memory_samples += usize::from(c.memory.is_some() && mem.is_ok());
            }
        }
        for cs in pod.status.as_ref().and_then(|s| s.container_statuses.as_ref()).into_iter().flatten() {
            let Some(t) = cs.last_state.as_ref().and_then(|s| s.terminated.as_ref()) else { continue };
            if t.reason.as_deref() != Some("OOMKilled") {
                continue;
            }
            let Some(at) = t.finished_at.as_ref().map(|f| f.0) else { continue };
            let container: Arc<str> = Arc::from(cs.name.as_str());
            match model.record_oom(name, &container, at, memory_request_bytes(pod, &cs.name)) {
                Ok(_) => fed.ooms += 1,
                Err(Rejected::OomAlreadyRecorded) => {}
                Err(_) => fed.rejected += 1,
            }
        }
    }
    fed
}

/// The recommendation for one Autoscaler from the model: containers named by its current pods
/// (or every container it has history for, when it has no pods), its policy, and the resources
/// left to the horizontal side.
pub fn recommendation(model: &Model, owner: &str, spec: &AutoscalerSpec, pods: &[&Pod]) -> Outcome {
    let present: BTreeSet<&str> = pods
        .iter()
        .filter_map(|p| p.spec.as_ref())
        .flat_map(|s| s.containers.iter().map(|c| c.name.as_str()))
        .collect();
    let containers: Vec<ContainerInput<'_>> = model
        .aggregates_of(owner)
        .filter(|(name, _)| present.is_empty() || present.contains(name))
        .map(|(name, aggregate)| ContainerInput { name, aggregate })
        .collect();
    let policy = spec.vertical.as_ref().and_then(|v| v.resource_policy.as_ref());
    recommend(&containers, policy, &yielded(spec), &model.config)
}

/// The recommender's conditions, upstream's types and reasons: RecommendationProvided,
/// NoPodsMatched, LowConfidence.
pub fn conditions(outcome: &Outcome, matched_pods: usize, model: &Model, owner: &str) -> Vec<ConditionUpdate> {
    let mut out = Vec::new();
    let n = outcome.recommendation.container_recommendations.len();
    out.push(if n > 0 {
        ConditionUpdate::holds(
            "RecommendationProvided",
            "RecommendationProvided",
            format!("{n} container(s) recommended"),
        )
    } else {
        ConditionUpdate::fails(
            "RecommendationProvided",
            "NoUsageData",
            "no usage samples for any controlled container yet",
        )
    });
    out.push(if matched_pods == 0 {
        ConditionUpdate::holds("NoPodsMatched", "NoPodsMatched", "no running pod matches the target's selector")
    } else {
        ConditionUpdate::fails("NoPodsMatched", "PodsMatched", format!("{matched_pods} pod(s) matched"))
    });
    let low: Vec<&str> =
        model.aggregates_of(owner).filter(|(_, a)| a.confidence(&model.config) < 1.0).map(|(name, _)| name).collect();
    out.push(if low.is_empty() {
        ConditionUpdate::fails("LowConfidence", "EnoughHistory", "a day or more of usage history")
    } else {
        let mut low = low;
        low.sort_unstable();
        ConditionUpdate::holds(
            "LowConfidence",
            "ShortHistory",
            format!("less than a day of usage history for {}: bounds are wide", low.join(", ")),
        )
    });
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use omniscale_metrics::ContainerUsage;
    use serde_json::json;

    fn pod(oom_at: Option<&str>) -> Pod {
        let mut status = json!({"phase": "Running", "containerStatuses": [{"name": "app", "ready": true,
            "restartCount": 1, "image": "x", "imageID": "", "started": true}]});
        if let Some(at) = oom_at {
            status["containerStatuses"][0]["lastState"] = json!({"terminated": {"exitCode": 137, "reason": "OOMKilled", "startedAt": "2026-01-01T00:00:00Z", "finishedAt": at}});
        }
        serde_json::from_value(json!({"metadata": {"name": "app-1", "namespace": "default"},
            "spec": {"containers": [{"name": "app", "image": "x", "resources": {"requests": {"memory": "500Mi"}}}]},
            "status": status}))
        .unwrap()
    }

    #[test]
    fn oom_kills_in_the_last_state_bump_memory_once() {
        let mut m = Model::default();
        let owner: Arc<str> = Arc::from("default/app");
        let t0: jiff::Timestamp = "2026-01-01T00:01:00Z".parse().unwrap();
        let usage = HashMap::from([(
            "app-1".to_owned(),
            Usage {
                timestamp: t0,
                window: jiff::SignedDuration::from_secs(30),
                containers: vec![ContainerUsage::new("app", [("cpu", 100), ("memory", 200 * 1024 * 1024 * 1000)])],
            },
        )]);
        let p = pod(Some("2026-01-01T00:02:00Z"));
        let fed = feed(&mut m, &owner, &[&p], &usage);
        assert_eq!((fed.cpu_samples, fed.memory_samples, fed.ooms), (1, 1, 1));
        // The bump is over the 500Mi request: max(+100Mi, ×1.2) = 600Mi.
        let a = m.aggregate("default/app", "app").unwrap();
        assert!(a.memory.percentile(1.0) >= 600.0 * 1024.0 * 1024.0, "{}", a.memory.percentile(1.0));
        // The same termination seen again next round is not counted twice.
        let fed = feed(&mut m, &owner, &[&p], &HashMap::new());
        assert_eq!(fed.ooms, 0);
        let fed = feed(&mut m, &owner, &[&pod(None)], &HashMap::new());
        assert_eq!((fed.ooms, fed.rejected), (0, 0));
    }
}
