//! From Kubernetes objects and metrics answers to engine inputs, and one Autoscaler's whole
//! evaluation ([`evaluate`]). Pure: the shell fetches what [`want`] asks for into the cycle's
//! [`Cache`], and `omniscale plan` fills the same cache from files.

use crate::calc::{Phase, PodSample, Readiness, Target, ValueTarget};
use crate::decide::{self, Decision, History, Kind, MetricOutcome, Observation};
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::autoscaling::v2::{self as api, MetricSpec, MetricStatus};
use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use omniscale_api::autoscaler::HorizontalSpec;
use omniscale_api::quantity::{Format, Quantity as Exact};
use omniscale_api::selector::LabelSelector;
use omniscale_metrics::query::milli;
use omniscale_metrics::{Answer, Cache, PodIndex, Query};
use std::borrow::Cow;
use std::collections::BTreeMap;

/// Maps an Object metric's described object (`apiVersion`, `kind`) to the resource the custom
/// metrics API names it by (`deployments.apps`); `None` when the cluster does not serve it.
pub type ResourceOf<'a> = &'a (dyn Fn(&str, &str) -> Option<String> + Sync);

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

/// A pod as the calculator sees it; the request is for `resource` (in `container` only, when
/// given), summed over regular and restartable init containers, `None` when one lacks it.
pub fn pod_sample(p: &Pod, resource: &str, container: Option<&str>) -> Result<PodSample, String> {
    // Regular containers and restartable init containers (sidecars).
    let containers = || {
        p.spec.iter().flat_map(|spec| {
            spec.containers
                .iter()
                .chain(spec.init_containers.iter().flatten().filter(|c| c.restart_policy.as_deref() == Some("Always")))
        })
    };
    let request = match container {
        Some(name) => match containers().find(|c| c.name == name) {
            Some(c) => container_request(c, resource).transpose()?,
            None => None,
        },
        None => {
            let mut sum = Some(0i64);
            for c in containers() {
                match container_request(c, resource).transpose()? {
                    Some(v) => sum = sum.map(|s| s + v),
                    None => sum = None,
                }
            }
            sum
        }
    };
    let status = p.status.as_ref();
    let ready =
        status.and_then(|s| s.conditions.as_ref()).into_iter().flatten().find(|c| c.type_ == "Ready").map(|c| {
            Readiness {
                ready: c.status == "True",
                last_transition: c.last_transition_time.as_ref().map_or(Timestamp::UNIX_EPOCH, |t| t.0),
            }
        });
    Ok(PodSample {
        name: p.metadata.name.clone().unwrap_or_default(),
        phase: phase(p),
        deleting: p.metadata.deletion_timestamp.is_some(),
        ready,
        start_time: status.and_then(|s| s.start_time.as_ref()).map(|t| t.0),
        request,
    })
}

/// How an answer becomes an observation.
enum Source<'a> {
    PerPod { kind: Kind, resource: &'a str, container: Option<&'a str>, target: Target },
    Value { kind: Kind, target: ValueTarget },
}

fn failed(kind: Kind, message: String) -> Observation {
    Observation::Failed { reason: kind.failure_reason(), message }
}

/// A metric's label selector in query-string form, for the metrics APIs (and for matching
/// `omniscale plan`'s files against the queries).
pub fn selector_string(
    s: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>,
) -> Result<String, String> {
    match s {
        None => Ok(String::new()),
        Some(s) => LabelSelector::from_api(s).map(|s| s.to_query()).map_err(|e| format!("metric selector: {e}")),
    }
}

fn value_target(t: &api::MetricTarget) -> Result<ValueTarget, String> {
    match (t.type_.as_str(), &t.value, &t.average_value) {
        ("Value", Some(v), _) => milli(v).map(ValueTarget::Value),
        ("AverageValue", _, Some(v)) => milli(v).map(ValueTarget::AverageValue),
        (t, _, _) => Err(format!("target type {t:?} needs the matching value")),
    }
}

fn pod_target(t: &api::MetricTarget) -> Result<Target, String> {
    match (t.type_.as_str(), t.average_utilization, &t.average_value) {
        ("Utilization", Some(u), _) => Ok(Target::Utilization(u)),
        ("AverageValue", _, Some(v)) => milli(v).map(Target::AverageValue),
        (other, _, _) => Err(format!("target type {other:?} needs averageUtilization or averageValue")),
    }
}

/// What a metric spec reads, and how; a spec that cannot be read is its failed observation.
fn source<'a>(spec: &'a MetricSpec, ns: &str, resource_of: ResourceOf<'_>) -> Result<(Query, Source<'a>), Observation> {
    let missing = |kind: Kind, field: &str| failed(kind, format!("metric type {} needs `{field}`", spec.type_));
    match spec.type_.as_str() {
        "Resource" => {
            let r = spec.resource.as_ref().ok_or_else(|| missing(Kind::Resource, "resource"))?;
            let target = pod_target(&r.target).map_err(|e| failed(Kind::Resource, e))?;
            let src = Source::PerPod { kind: Kind::Resource, resource: &r.name, container: None, target };
            Ok((Query::PodMetrics { namespace: ns.into() }, src))
        }
        "ContainerResource" => {
            let kind = Kind::ContainerResource;
            let r = spec.container_resource.as_ref().ok_or_else(|| missing(kind, "containerResource"))?;
            let target = pod_target(&r.target).map_err(|e| failed(kind, e))?;
            let src = Source::PerPod { kind, resource: &r.name, container: Some(&r.container), target };
            Ok((Query::PodMetrics { namespace: ns.into() }, src))
        }
        "Pods" => {
            let p = spec.pods.as_ref().ok_or_else(|| missing(Kind::Pods, "pods"))?;
            let target = match pod_target(&p.target).map_err(|e| failed(Kind::Pods, e))? {
                Target::Utilization(_) => {
                    return Err(failed(Kind::Pods, "a Pods metric's target must be AverageValue".into()));
                }
                t => t,
            };
            let metric_selector = selector_string(p.metric.selector.as_ref()).map_err(|e| failed(Kind::Pods, e))?;
            let q = Query::Pods { namespace: ns.into(), metric: p.metric.name.clone(), metric_selector };
            Ok((q, Source::PerPod { kind: Kind::Pods, resource: &p.metric.name, container: None, target }))
        }
        "Object" => {
            let o = spec.object.as_ref().ok_or_else(|| missing(Kind::Object, "object"))?;
            let target = value_target(&o.target).map_err(|e| failed(Kind::Object, e))?;
            let d = &o.described_object;
            let api_version = d.api_version.as_deref().unwrap_or("v1");
            let resource = resource_of(api_version, &d.kind).ok_or_else(|| {
                failed(Kind::Object, format!("the cluster does not serve {} in {api_version}", d.kind))
            })?;
            let metric_selector = selector_string(o.metric.selector.as_ref()).map_err(|e| failed(Kind::Object, e))?;
            let q = Query::Object {
                namespace: ns.into(),
                resource,
                name: d.name.clone(),
                metric: o.metric.name.clone(),
                metric_selector,
            };
            Ok((q, Source::Value { kind: Kind::Object, target }))
        }
        "External" => {
            let e = spec.external.as_ref().ok_or_else(|| missing(Kind::External, "external"))?;
            let target = value_target(&e.target).map_err(|m| failed(Kind::External, m))?;
            let selector = selector_string(e.metric.selector.as_ref()).map_err(|m| failed(Kind::External, m))?;
            let q = Query::External { namespace: ns.into(), metric: e.metric.name.clone(), selector };
            Ok((q, Source::Value { kind: Kind::External, target }))
        }
        other => Err(Observation::Failed {
            reason: "InvalidMetricSourceType".into(),
            message: format!("unknown metric type {other:?}"),
        }),
    }
}

/// Records in `cache` what these metric specs read in `ns`.
pub fn want(specs: &[MetricSpec], ns: &str, cache: &mut Cache, resource_of: ResourceOf<'_>) {
    for s in specs {
        if let Ok((q, _)) = source(s, ns, resource_of) {
            cache.want(q);
        }
    }
}

/// The observation for one metric spec, from the target's pods and the cycle's answers.
pub fn observe(spec: &MetricSpec, ns: &str, pods: &[&Pod], cache: &Cache, resource_of: ResourceOf<'_>) -> Observation {
    let (q, src) = match source(spec, ns, resource_of) {
        Ok(x) => x,
        Err(o) => return o,
    };
    let kind = match &src {
        Source::PerPod { kind, .. } | Source::Value { kind, .. } => *kind,
    };
    let answer = match cache.get(&q) {
        Some(Ok(a)) => a,
        Some(Err(e)) => return failed(kind, format!("unable to get metric {}: {e}", metric_name(spec))),
        None => return failed(kind, format!("no answer from {} for {}", q.api(), q.path())),
    };
    match (src, answer) {
        (Source::PerPod { kind, resource, container, target }, answer) => {
            let mut list = Vec::with_capacity(pods.len());
            let mut samples = BTreeMap::new();
            for p in pods {
                let s = match pod_sample(p, resource, container) {
                    Ok(s) => s,
                    Err(e) => return failed(kind, format!("pod {}: {e}", p.metadata.name.as_deref().unwrap_or(""))),
                };
                let sample = match answer {
                    Answer::PodMetrics(m) => m.get(&s.name).and_then(|u| u.of(resource, container)),
                    Answer::Pods(m) => m.get(&s.name).copied(),
                    _ => None,
                };
                if let Some(v) = sample {
                    samples.insert(s.name.clone(), v);
                }
                list.push(s);
            }
            Observation::PerPod { kind, resource: resource.to_owned(), target, pods: list, samples }
        }
        (Source::Value { kind, target }, Answer::Object(s) | Answer::External(s)) => {
            Observation::Value { kind, value: s.value, target }
        }
        (Source::Value { kind, .. }, _) => failed(kind, format!("unexpected answer for {}", q.path())),
    }
}

/// The metric's name as status and explanations show it.
pub fn metric_name(s: &MetricSpec) -> String {
    match s.type_.as_str() {
        "Resource" => s.resource.as_ref().map(|r| r.name.clone()),
        "ContainerResource" => s.container_resource.as_ref().map(|r| format!("{}/{}", r.container, r.name)),
        "Pods" => s.pods.as_ref().map(|p| p.metric.name.clone()),
        "Object" => s.object.as_ref().map(|o| o.metric.name.clone()),
        "External" => s.external.as_ref().map(|e| e.metric.name.clone()),
        _ => None,
    }
    .unwrap_or_default()
}

/// The metrics of a spec, with upstream's default (80% average cpu utilization) when none.
pub fn metric_specs(specs: Option<&[MetricSpec]>) -> Cow<'_, [MetricSpec]> {
    match specs {
        Some(s) if !s.is_empty() => Cow::Borrowed(s),
        _ => Cow::Owned(vec![MetricSpec {
            type_: "Resource".into(),
            resource: Some(api::ResourceMetricSource {
                name: "cpu".into(),
                target: api::MetricTarget {
                    type_: "Utilization".into(),
                    average_utilization: Some(80),
                    ..Default::default()
                },
            }),
            ..Default::default()
        }]),
    }
}

/// What the target's `/scale` said.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scale {
    pub spec_replicas: i32,
    pub status_replicas: i32,
    /// `status.selector`, in query-string form.
    pub selector: String,
}

/// One Autoscaler's decision, and the metric specs it was made for (the default when the
/// spec has none).
#[derive(Clone, Debug)]
pub struct Evaluation<'a> {
    pub specs: Cow<'a, [MetricSpec]>,
    pub decision: Decision,
    pub behavior: Option<crate::normalize::Behavior>,
}

/// The whole horizontal evaluation of one Autoscaler in namespace `ns`: its pods by the scale's
/// selector, an observation per metric from the cycle's answers, then [`decide::decide`].
#[allow(clippy::too_many_arguments)]
pub fn evaluate<'a>(
    h: &'a HorizontalSpec,
    ns: &str,
    scale: &Scale,
    pods: &PodIndex,
    cache: &Cache,
    resource_of: ResourceOf<'_>,
    history: &mut History,
    now: Timestamp,
) -> Evaluation<'a> {
    let specs = metric_specs(h.metrics.as_deref());
    // Upstream refuses to compute anything without a usable selector.
    let selector = if scale.selector.is_empty() {
        Err(("SelectorRequired", "selector is required".to_owned()))
    } else {
        LabelSelector::parse(&scale.selector).map_err(|e| {
            ("InvalidSelector", format!("couldn't convert selector into a corresponding internal selector object: {e}"))
        })
    };
    let (observations, ready) = match selector {
        Err((reason, message)) => {
            (specs.iter().map(|_| Observation::Failed { reason: reason.into(), message: message.clone() }).collect(), 0)
        }
        Ok(sel) => {
            let mine = pods.select(ns, &sel);
            let obs: Vec<Observation> = specs.iter().map(|s| observe(s, ns, &mine, cache, resource_of)).collect();
            (obs, ready_pods(&mine))
        }
    };
    let input = engine_input(h, scale.spec_replicas, scale.status_replicas, ready, observations, now);
    let behavior = input.behavior.clone();
    let decision = decide::decide(&input, history);
    Evaluation { specs, decision, behavior }
}

fn quantity(milli: i64) -> Quantity {
    Quantity(milli_text(milli))
}

/// `status.currentMetrics`, as upstream's HPA reports them: one entry per metric that produced
/// a proposal.
pub fn current_metrics(e: &Evaluation<'_>) -> Vec<MetricStatus> {
    e.decision
        .metrics
        .iter()
        .zip(e.specs.iter())
        .filter_map(|(m, s)| {
            let MetricOutcome::Proposal(p) = m else { return None };
            let per_pod = api::MetricValueStatus {
                average_value: Some(quantity(p.average)),
                average_utilization: p.utilization,
                value: None,
            };
            let value = |t: &api::MetricTarget| {
                if t.type_ == "Value" {
                    api::MetricValueStatus { value: Some(quantity(p.average)), ..Default::default() }
                } else {
                    api::MetricValueStatus { average_value: Some(quantity(p.average)), ..Default::default() }
                }
            };
            let mut out = MetricStatus { type_: s.type_.clone(), ..Default::default() };
            match s.type_.as_str() {
                "Resource" => {
                    let r = s.resource.as_ref()?;
                    out.resource = Some(api::ResourceMetricStatus { name: r.name.clone(), current: per_pod });
                }
                "ContainerResource" => {
                    let r = s.container_resource.as_ref()?;
                    out.container_resource = Some(api::ContainerResourceMetricStatus {
                        name: r.name.clone(),
                        container: r.container.clone(),
                        current: per_pod,
                    });
                }
                "Pods" => {
                    let r = s.pods.as_ref()?;
                    out.pods = Some(api::PodsMetricStatus { metric: r.metric.clone(), current: per_pod });
                }
                "Object" => {
                    let r = s.object.as_ref()?;
                    out.object = Some(api::ObjectMetricStatus {
                        described_object: r.described_object.clone(),
                        metric: r.metric.clone(),
                        current: value(&r.target),
                    });
                }
                "External" => {
                    let r = s.external.as_ref()?;
                    out.external =
                        Some(api::ExternalMetricStatus { metric: r.metric.clone(), current: value(&r.target) });
                }
                _ => return None,
            }
            Some(out)
        })
        .collect()
}

/// Running pods whose Ready condition is True (Object/External Value targets scale by them).
pub fn ready_pods(pods: &[&Pod]) -> usize {
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

fn milli_text(v: i64) -> String {
    Exact::from_milli(i128::from(v), Format::DecimalSi).to_string()
}

/// Why the decision is what it is, one line per metric and one for the result: what each
/// metric measured against its target, which pods were left out and why, and which step
/// (stabilisation, rate limit, min/max) shaped the count. Status and `omniscale plan` show it.
pub fn explain(e: &Evaluation<'_>) -> Vec<String> {
    let d = &e.decision;
    let mut lines: Vec<String> = d
        .metrics
        .iter()
        .zip(e.specs.iter())
        .map(|(m, s)| {
            let name = metric_name(s);
            match m {
                MetricOutcome::Error { reason, message } => format!("{name}: {reason}: {message}"),
                MetricOutcome::Proposal(p) => {
                    let measured = match p.utilization {
                        Some(u) => format!("{u}% of requests"),
                        None if p.pods.is_empty() && p.ready_pods == 0 => milli_text(p.average),
                        None => format!("{} per pod", milli_text(p.average)),
                    };
                    let mut line = format!(
                        "{name}: {measured}, ratio {:.2} over {} ready pod(s) → {} ({})",
                        p.ratio, p.ready_pods, p.replicas, p.rule
                    );
                    for (label, g) in [
                        ("ignored (deleting or failed)", crate::calc::Grouping::Ignored),
                        ("unready", crate::calc::Grouping::Unready),
                        ("missing metrics", crate::calc::Grouping::Missing),
                    ] {
                        let names: Vec<&str> =
                            p.pods.iter().filter(|(_, x)| *x == g).map(|(n, _)| n.as_str()).collect();
                        if !names.is_empty() {
                            let shown = names.iter().take(5).copied().collect::<Vec<_>>().join(", ");
                            let more =
                                if names.len() > 5 { format!(" and {} more", names.len() - 5) } else { String::new() };
                            line.push_str(&format!("; {label}: {shown}{more}"));
                        }
                    }
                    line
                }
            }
        })
        .collect();
    lines.push(match (d.branch, d.proposed, &d.normalized) {
        ("disabled", _, _) => "scaling is disabled: the target has 0 replicas".into(),
        ("above max" | "below min", _, _) => format!("{} → {} ({})", d.current, d.desired, d.branch),
        ("metrics failed", _, _) => format!("kept at {}: a metric failed and no metric asks for more", d.current),
        (_, Some(p), Some(n)) => {
            let mut s = format!("proposed {p}");
            if n.stabilized != p {
                s.push_str(&format!(", {} by the stabilisation window", n.stabilized));
            }
            if n.replicas != n.stabilized {
                s.push_str(&format!(", limited to {} ({})", n.replicas, n.limit.as_str()));
            }
            if d.desired == d.current {
                s.push_str(&format!("; stays at {}", d.current));
            } else {
                s.push_str(&format!("; {} → {}", d.current, d.desired));
            }
            s
        }
        _ => format!("stays at {}", d.current),
    });
    lines
}
