//! From Kubernetes objects to engine inputs: pods to [`PodSample`]s, PodMetrics to
//! [`Sample`]s, and autoscaling/v2 metric specs to [`Observation`]s. Pure conversions, shared by
//! the reconciler and `omniscale plan`.

use crate::calc::{Phase, PodSample, Readiness, Sample, Target};
use crate::decide::{Kind, Observation};
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::autoscaling::v2::MetricSpec;
use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use omniscale_api::quantity::Quantity as Exact;
use std::collections::BTreeMap;

/// metrics.k8s.io/v1beta1 PodMetrics (k8s-openapi does not ship the metrics API).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PodMetrics {
    #[serde(default)]
    pub metadata: ObjectMeta,
    pub timestamp: String,
    #[serde(default)]
    pub window: String,
    #[serde(default)]
    pub containers: Vec<ContainerMetrics>,
}

#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ContainerMetrics {
    pub name: String,
    #[serde(default)]
    pub usage: BTreeMap<String, Quantity>,
}

/// A value in milli-units; malformed is an error naming the quantity.
pub fn milli(q: &Quantity) -> Result<i64, String> {
    Exact::parse(&q.0)
        .map(|x| x.milli().clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64)
        .map_err(|e| format!("quantity {:?}: {e}", q.0))
}

fn container_request(c: &Container, resource: &str) -> Option<Result<i64, String>> {
    c.resources.as_ref()?.requests.as_ref()?.get(resource).map(milli)
}

fn phase(p: &Pod) -> Phase {
    match p.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Pending") => Phase::Pending,
        Some("Running") => Phase::Running,
        Some("Succeeded") => Phase::Succeeded,
        Some("Failed") => Phase::Failed,
        _ => Phase::Unknown,
    }
}

fn ts(t: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time) -> Timestamp {
    t.0
}

/// A pod as the calculator sees it; the request is for `resource` (in `container` only, when
/// given), summed over regular and restartable init containers, `None` when one lacks it.
pub fn pod_sample(p: &Pod, resource: &str, container: Option<&str>) -> Result<PodSample, String> {
    let spec = p.spec.clone().unwrap_or_default();
    let mut containers: Vec<&Container> = spec.containers.iter().collect();
    containers.extend(spec.init_containers.iter().flatten().filter(|c| c.restart_policy.as_deref() == Some("Always")));
    let request = match container {
        Some(name) => match containers.iter().find(|c| c.name == name) {
            Some(c) => container_request(c, resource).transpose()?,
            None => None,
        },
        None => {
            let mut sum = Some(0i64);
            for c in &containers {
                match container_request(c, resource).transpose()? {
                    Some(v) => sum = sum.map(|s| s + v),
                    None => sum = None,
                }
            }
            sum
        }
    };
    let status = p.status.clone().unwrap_or_default();
    let ready = status.conditions.iter().flatten().find(|c| c.type_ == "Ready").map(|c| Readiness {
        ready: c.status == "True",
        last_transition: c.last_transition_time.as_ref().map_or(Timestamp::UNIX_EPOCH, ts),
    });
    Ok(PodSample {
        name: p.metadata.name.clone().unwrap_or_default(),
        phase: phase(p),
        deleting: p.metadata.deletion_timestamp.is_some(),
        ready,
        start_time: status.start_time.as_ref().map(ts),
        request,
    })
}

/// A pod's usage of `resource` from its PodMetrics: the sum over containers (or the named
/// container); `None` when a container lacks the resource or there are no containers.
pub fn usage(m: &PodMetrics, resource: &str, container: Option<&str>) -> Result<Option<Sample>, String> {
    let timestamp: Timestamp =
        m.timestamp.parse().map_err(|e| format!("PodMetrics timestamp {:?}: {e}", m.timestamp))?;
    let window = if m.window.is_empty() {
        SignedDuration::ZERO
    } else {
        let d = omniscale_api::duration::parse_duration(&m.window)
            .map_err(|e| format!("PodMetrics window {:?}: {e}", m.window))?;
        SignedDuration::try_from(d).unwrap_or(SignedDuration::ZERO)
    };
    let chosen: Vec<&ContainerMetrics> = match container {
        Some(n) => m.containers.iter().filter(|c| c.name == n).collect(),
        None => m.containers.iter().collect(),
    };
    if chosen.is_empty() {
        return Ok(None);
    }
    let mut sum = 0i64;
    for c in chosen {
        match c.usage.get(resource) {
            Some(q) => sum += milli(q)?,
            None => return Ok(None),
        }
    }
    Ok(Some(Sample { value: sum, timestamp, window }))
}

/// Pod metrics of a target, by pod name (the latest sample when several are given).
pub type MetricsByPod = BTreeMap<String, PodMetrics>;

/// Values of Object and External metrics by kind and metric name: `None` when the source has
/// none, `Some(Err)` when reading it failed.
pub type CustomValues<'a> = &'a dyn Fn(Kind, &str) -> Option<Result<i64, String>>;

/// The observation for one metric spec from pods and their PodMetrics. Pods, Object and
/// External metrics need the custom and external metrics APIs: `custom` supplies them, keyed by
/// the metric's name (`None`: not available).
pub fn observe(spec: &MetricSpec, pods: &[Pod], metrics: &MetricsByPod, custom: CustomValues<'_>) -> Observation {
    let failed = |kind: Kind, message: String| Observation::Failed { reason: kind.failure_reason(), message };
    let per_pod = |kind: Kind, resource: &str, container: Option<&str>, target: Result<Target, String>| {
        let target = match target {
            Ok(t) => t,
            Err(e) => return failed(kind, e),
        };
        let mut samples = BTreeMap::new();
        let mut list = Vec::new();
        for p in pods {
            let s = match pod_sample(p, resource, container) {
                Ok(s) => s,
                Err(e) => return failed(kind, format!("pod {}: {e}", p.metadata.name.as_deref().unwrap_or(""))),
            };
            if let Some(m) = metrics.get(&s.name) {
                match usage(m, resource, container) {
                    Ok(Some(u)) => {
                        samples.insert(s.name.clone(), u);
                    }
                    Ok(None) => {}
                    Err(e) => return failed(kind, e),
                }
            }
            list.push(s);
        }
        Observation::PerPod { kind, resource: resource.to_owned(), target, pods: list, samples }
    };
    match spec.type_.as_str() {
        "Resource" => match &spec.resource {
            Some(r) => per_pod(Kind::Resource, &r.name, None, pod_target(&r.target)),
            None => failed(Kind::Resource, "metric type Resource needs `resource`".into()),
        },
        "ContainerResource" => match &spec.container_resource {
            Some(r) => per_pod(Kind::ContainerResource, &r.name, Some(&r.container), pod_target(&r.target)),
            None => failed(Kind::ContainerResource, "metric type ContainerResource needs `containerResource`".into()),
        },
        "Pods" => match &spec.pods {
            Some(p) => failed(
                Kind::Pods,
                format!("no values for pods metric {:?}: the custom metrics API is not available", p.metric.name),
            ),
            None => failed(Kind::Pods, "metric type Pods needs `pods`".into()),
        },
        "Object" | "External" => {
            let kind = if spec.type_ == "Object" { Kind::Object } else { Kind::External };
            let (name, target) = match (&spec.object, &spec.external) {
                (Some(o), _) if kind == Kind::Object => (o.metric.name.clone(), &o.target),
                (_, Some(e)) if kind == Kind::External => (e.metric.name.clone(), &e.target),
                _ => return failed(kind, format!("metric type {} needs `{}`", spec.type_, spec.type_.to_lowercase())),
            };
            let target = match (target.type_.as_str(), &target.value, &target.average_value) {
                ("Value", Some(v), _) => milli(v).map(crate::calc::ValueTarget::Value),
                ("AverageValue", _, Some(v)) => milli(v).map(crate::calc::ValueTarget::AverageValue),
                (t, _, _) => Err(format!("target type {t:?} needs the matching value")),
            };
            let target = match target {
                Ok(t) => t,
                Err(e) => return failed(kind, e),
            };
            match custom(kind, &name) {
                Some(Ok(value)) => Observation::Value { kind, value, target },
                Some(Err(e)) => failed(kind, e),
                None => failed(kind, format!("no value for {} metric {name:?} in the input", spec.type_)),
            }
        }
        other => Observation::Failed {
            reason: "InvalidMetricSourceType".into(),
            message: format!("unknown metric type {other:?}"),
        },
    }
}

fn pod_target(t: &k8s_openapi::api::autoscaling::v2::MetricTarget) -> Result<Target, String> {
    match (t.type_.as_str(), t.average_utilization, &t.average_value) {
        ("Utilization", Some(u), _) => Ok(Target::Utilization(u)),
        ("AverageValue", _, Some(v)) => milli(v).map(Target::AverageValue),
        (other, _, _) => Err(format!("target type {other:?} needs averageUtilization or averageValue")),
    }
}

/// The metrics of a spec, with upstream's default (80% average cpu utilization) when none.
pub fn metric_specs(specs: Option<&[MetricSpec]>) -> Vec<MetricSpec> {
    match specs {
        Some(s) if !s.is_empty() => s.to_vec(),
        _ => vec![MetricSpec {
            type_: "Resource".into(),
            resource: Some(k8s_openapi::api::autoscaling::v2::ResourceMetricSource {
                name: "cpu".into(),
                target: k8s_openapi::api::autoscaling::v2::MetricTarget {
                    type_: "Utilization".into(),
                    average_utilization: Some(80),
                    ..Default::default()
                },
            }),
            ..Default::default()
        }],
    }
}

/// Whether a `metav1.LabelSelector` selects these labels (an absent selector selects nothing).
pub fn selects(
    sel: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>,
    labels: Option<&BTreeMap<String, String>>,
) -> bool {
    let Some(sel) = sel else { return false };
    let get = |k: &str| labels.and_then(|l| l.get(k));
    sel.match_labels.iter().flatten().all(|(k, v)| get(k) == Some(v))
        && sel.match_expressions.iter().flatten().all(|e| {
            let values = e.values.as_deref().unwrap_or_default();
            match e.operator.as_str() {
                "In" => get(&e.key).is_some_and(|v| values.contains(v)),
                "NotIn" => get(&e.key).is_none_or(|v| !values.contains(v)),
                "Exists" => get(&e.key).is_some(),
                "DoesNotExist" => get(&e.key).is_none(),
                _ => false,
            }
        })
}

/// Running pods whose Ready condition is True (Object/External Value targets scale by them).
pub fn ready_pods(pods: &[Pod]) -> usize {
    pods.iter()
        .filter(|p| phase(p) == Phase::Running)
        .filter(|p| {
            p.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .into_iter()
                .flatten()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        })
        .count()
}

fn duration(s: Option<&str>, default: SignedDuration) -> SignedDuration {
    s.and_then(|s| omniscale_api::duration::parse_duration(s).ok())
        .and_then(|d| SignedDuration::try_from(d).ok())
        .unwrap_or(default)
}

/// The engine input for an Autoscaler's horizontal spec, with upstream's defaults for
/// everything the spec leaves out (tolerance 0.1, 5m cpu initialisation, 30s readiness delay,
/// 5m scale-down window, scale-up factor 2).
pub fn engine_input(
    h: &omniscale_api::autoscaler::HorizontalSpec,
    spec_replicas: i32,
    status_replicas: i32,
    ready_pods: usize,
    metrics: Vec<Observation>,
    now: Timestamp,
) -> crate::decide::Input {
    let defaults = crate::calc::Timing::default();
    let window = SignedDuration::from_mins(5);
    crate::decide::Input {
        min: h.min_replicas(),
        max: h.max_replicas,
        spec_replicas,
        status_replicas,
        ready_pods,
        metrics,
        behavior: h.behavior.as_ref().map(|b| crate::normalize::Behavior::from_api(b, window)),
        tolerance: crate::Tolerance::from_behavior(h.behavior.as_ref(), 0.1),
        timing: crate::calc::Timing {
            cpu_initialization_period: duration(
                h.cpu_initialization_period.as_deref(),
                defaults.cpu_initialization_period,
            ),
            initial_readiness_delay: duration(h.initial_readiness_delay.as_deref(), defaults.initial_readiness_delay),
        },
        downscale_window: window,
        scale_up_factor: 2.0,
        now,
    }
}
