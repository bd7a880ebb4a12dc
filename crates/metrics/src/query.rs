//! What an engine can ask the metrics APIs ([`Query`]), and the parsed answer ([`Answer`]).
//!
//! Queries are deliberately coarse so one answer serves many Autoscalers: PodMetrics and Pods
//! metrics are read for a whole namespace (no pod selector), and each Autoscaler picks its
//! pods' values from the answer. Parsing is pure, so `omniscale plan` and the benchmark use the
//! same code as the live client.

use crate::types::{ExternalMetricValue, List, MetricValue, NodeMetrics, PodMetrics};
use crate::{Sample, Usage};
use jiff::{SignedDuration, Timestamp};
use std::collections::HashMap;
use tracing::debug;

/// One read of a metrics API. Equal queries in one cycle are made once.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Query {
    /// metrics.k8s.io PodMetrics of every pod in a namespace.
    PodMetrics { namespace: String },
    /// metrics.k8s.io NodeMetrics of every node.
    NodeMetrics,
    /// custom.metrics.k8s.io: a metric of every pod in a namespace.
    Pods { namespace: String, metric: String, metric_selector: String },
    /// custom.metrics.k8s.io: a metric of one object. `resource` is `plural` or `plural.group`
    /// (`deployments.apps`); a Namespace is `namespaces` with `name` the namespace.
    Object { namespace: String, resource: String, name: String, metric: String, metric_selector: String },
    /// external.metrics.k8s.io: the series of an external metric, narrowed by `selector`.
    External { namespace: String, metric: String, selector: String },
}

impl Query {
    /// The request path and query string, as the aggregated API servers serve them.
    pub fn path(&self) -> String {
        let seg = |s: &str| encode(s, false);
        let with = |path: String, key: &str, selector: &str| {
            if selector.is_empty() { path } else { format!("{path}?{key}={}", encode(selector, true)) }
        };
        match self {
            Query::PodMetrics { namespace } => {
                format!("/apis/metrics.k8s.io/v1beta1/namespaces/{}/pods", seg(namespace))
            }
            Query::NodeMetrics => "/apis/metrics.k8s.io/v1beta1/nodes".into(),
            Query::Pods { namespace, metric, metric_selector } => with(
                format!("/apis/custom.metrics.k8s.io/v1beta2/namespaces/{}/pods/*/{}", seg(namespace), seg(metric)),
                "metricLabelSelector",
                metric_selector,
            ),
            Query::Object { namespace, resource, name, metric, metric_selector } => {
                let path = if resource == "namespaces" {
                    format!("/apis/custom.metrics.k8s.io/v1beta2/namespaces/{}/metrics/{}", seg(name), seg(metric))
                } else {
                    format!(
                        "/apis/custom.metrics.k8s.io/v1beta2/namespaces/{}/{}/{}/{}",
                        seg(namespace),
                        seg(resource),
                        seg(name),
                        seg(metric)
                    )
                };
                with(path, "metricLabelSelector", metric_selector)
            }
            Query::External { namespace, metric, selector } => with(
                format!("/apis/external.metrics.k8s.io/v1beta1/namespaces/{}/{}", seg(namespace), seg(metric)),
                "labelSelector",
                selector,
            ),
        }
    }

    /// Which API answers it, for error messages ("the custom metrics API").
    pub fn api(&self) -> &'static str {
        match self {
            Query::PodMetrics { .. } | Query::NodeMetrics => "the resource metrics API",
            Query::Pods { .. } | Query::Object { .. } => "the custom metrics API",
            Query::External { .. } => "the external metrics API",
        }
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters (and `*`, which the custom
/// metrics API uses as "every pod").
fn encode(s: &str, query: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => out.push(b as char),
            b'*' if !query => out.push('*'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// A parsed answer. Values are in milli-units, as the engines compute.
#[derive(Clone, Debug, PartialEq)]
pub enum Answer {
    /// Pod name → usage per container.
    PodMetrics(HashMap<String, Usage>),
    /// Node name → usage per resource.
    NodeMetrics(HashMap<String, NodeUsage>),
    /// Pod name → value.
    Pods(HashMap<String, Sample>),
    /// The object's value.
    Object(Sample),
    /// The sum over the series, with the first series' timestamp (upstream's reading).
    External(Sample),
}

/// A node's usage, per resource, in milli-units.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeUsage {
    pub timestamp: Timestamp,
    pub window: SignedDuration,
    pub usage: HashMap<String, i64>,
}

/// A quantity in milli-units; malformed is an error naming it.
pub fn milli(q: &k8s_openapi::apimachinery::pkg::api::resource::Quantity) -> Result<i64, String> {
    quantity_milli(&q.0)
}

fn timestamp(s: &str) -> Result<Timestamp, String> {
    s.parse().map_err(|e| format!("timestamp {s:?}: {e}"))
}

/// metrics-server writes windows as Go durations ("15s", "1m0s").
fn window(s: &str) -> Result<SignedDuration, String> {
    if s.is_empty() {
        return Ok(SignedDuration::ZERO);
    }
    let d = omniscale_api::duration::parse_duration(s).map_err(|e| format!("window {s:?}: {e}"))?;
    SignedDuration::try_from(d).map_err(|e| format!("window {s:?}: {e}"))
}

/// One PodMetrics, parsed.
pub fn pod_usage(m: &PodMetrics) -> Result<Usage, String> {
    let mut containers = Vec::with_capacity(m.containers.len());
    for c in &m.containers {
        let mut usage = Vec::with_capacity(c.usage.len());
        for (r, q) in &c.usage {
            usage.push((r.as_str(), milli(q)?));
        }
        containers.push(crate::ContainerUsage::new(&c.name, usage));
    }
    Ok(Usage { timestamp: timestamp(&m.timestamp)?, window: window(&m.window)?, containers })
}

fn node_usage(m: &NodeMetrics) -> Result<NodeUsage, String> {
    let mut usage = HashMap::with_capacity(m.usage.len());
    for (r, q) in &m.usage {
        usage.insert(r.clone(), milli(q)?);
    }
    Ok(NodeUsage { timestamp: timestamp(&m.timestamp)?, window: window(&m.window)?, usage })
}

/// Upstream's custom metrics client assumes a one-minute window when the server gives none.
const DEFAULT_CUSTOM_WINDOW: SignedDuration = SignedDuration::from_mins(1);

/// One custom metrics value as a sample (also how `omniscale plan` reads them from files).
pub fn custom_sample(m: &MetricValue) -> Result<Sample, String> {
    Ok(Sample {
        value: milli(&m.value)?,
        timestamp: timestamp(&m.timestamp)?,
        window: m.window_seconds.map_or(DEFAULT_CUSTOM_WINDOW, SignedDuration::from_secs),
    })
}

fn list<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<Vec<T>, String> {
    serde_json::from_slice::<List<T>>(body).map(|l| l.items).map_err(|e| format!("malformed response: {e}"))
}

/// PodMetrics as they come off the wire, borrowing from the body: a namespace's list is read
/// once per cycle but holds every pod, so it is parsed without building ObjectMeta.
#[derive(serde::Deserialize)]
struct WirePodMetrics<'a> {
    #[serde(borrow)]
    metadata: WireMeta<'a>,
    #[serde(borrow)]
    timestamp: std::borrow::Cow<'a, str>,
    #[serde(borrow, default)]
    window: std::borrow::Cow<'a, str>,
    #[serde(borrow, default)]
    containers: Vec<WireContainer<'a>>,
}

#[derive(serde::Deserialize)]
struct WireMeta<'a> {
    #[serde(borrow, default)]
    name: std::borrow::Cow<'a, str>,
}

#[derive(serde::Deserialize)]
struct WireContainer<'a> {
    #[serde(borrow)]
    name: std::borrow::Cow<'a, str>,
    #[serde(borrow, default)]
    usage: std::collections::BTreeMap<std::borrow::Cow<'a, str>, std::borrow::Cow<'a, str>>,
}

#[derive(serde::Deserialize)]
struct WireList<T> {
    #[serde(default = "Vec::new")]
    items: Vec<T>,
}

/// Parses a string once per distinct value: the items of one list almost always share their
/// timestamp and window.
struct Memo<T> {
    last: Option<(String, T)>,
}

impl<T: Copy> Memo<T> {
    fn get(&mut self, s: &str, parse: impl Fn(&str) -> Result<T, String>) -> Result<T, String> {
        if let Some((k, v)) = &self.last {
            if k == s {
                return Ok(*v);
            }
        }
        let v = parse(s)?;
        self.last = Some((s.to_owned(), v));
        Ok(v)
    }
}

fn quantity_milli(s: &str) -> Result<i64, String> {
    omniscale_api::quantity::Quantity::parse(s)
        .map(|x| x.milli().clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64)
        .map_err(|e| format!("quantity {s:?}: {e}"))
}

fn parse_pod_metrics(body: &[u8]) -> Result<Answer, String> {
    let list: WireList<WirePodMetrics<'_>> =
        serde_json::from_slice(body).map_err(|e| format!("malformed response: {e}"))?;
    let mut out: HashMap<String, Usage> = HashMap::with_capacity(list.items.len());
    let (mut ts, mut win) = (Memo { last: None }, Memo { last: None });
    let mut names: HashMap<String, std::sync::Arc<str>> = HashMap::new();
    for m in list.items {
        let parsed = (|| -> Result<Usage, String> {
            let timestamp = ts.get(&m.timestamp, timestamp)?;
            let window = win.get(&m.window, window)?;
            let mut containers = Vec::with_capacity(m.containers.len());
            for c in &m.containers {
                let name = match names.get(c.name.as_ref()) {
                    Some(n) => n.clone(),
                    None => {
                        let n: std::sync::Arc<str> = std::sync::Arc::from(c.name.as_ref());
                        names.insert(c.name.to_string(), n.clone());
                        n
                    }
                };
                let mut usage = crate::ContainerUsage { name, cpu: None, memory: None, other: Vec::new() };
                for (r, q) in &c.usage {
                    usage.set(r, quantity_milli(q)?);
                }
                containers.push(usage);
            }
            Ok(Usage { timestamp, window, containers })
        })();
        match parsed {
            Ok(u) => {
                let newer = out.get(m.metadata.name.as_ref()).is_none_or(|old| old.timestamp < u.timestamp);
                if newer {
                    out.insert(m.metadata.name.into_owned(), u);
                }
            }
            Err(e) => debug!(pod = %m.metadata.name, error = %e, "malformed PodMetrics left out"),
        }
    }
    Ok(Answer::PodMetrics(out))
}

impl Answer {
    /// Parses a response body for `q`. A malformed item of a per-pod or per-node list is left
    /// out (that pod then counts as missing, as upstream treats a pod without metrics) and
    /// logged; anything else malformed is an error.
    pub fn parse(q: &Query, body: &[u8]) -> Result<Answer, String> {
        match q {
            Query::PodMetrics { .. } => parse_pod_metrics(body),
            Query::NodeMetrics => {
                let mut out = HashMap::new();
                for m in list::<NodeMetrics>(body)? {
                    let name = m.metadata.name.clone().unwrap_or_default();
                    match node_usage(&m) {
                        Ok(u) => {
                            out.insert(name, u);
                        }
                        Err(e) => debug!(node = %name, error = %e, "malformed NodeMetrics left out"),
                    }
                }
                Ok(Answer::NodeMetrics(out))
            }
            Query::Pods { .. } => {
                let mut out = HashMap::new();
                for m in list::<MetricValue>(body)? {
                    match custom_sample(&m) {
                        Ok(s) => {
                            out.insert(m.described_object.name.clone(), s);
                        }
                        Err(e) => debug!(pod = %m.described_object.name, error = %e, "malformed MetricValue left out"),
                    }
                }
                Ok(Answer::Pods(out))
            }
            Query::Object { .. } => {
                let items = list::<MetricValue>(body)?;
                match items.as_slice() {
                    [one] => custom_sample(one).map(Answer::Object),
                    _ => Err(format!(
                        "the custom metrics API returned {} values where exactly one was asked for",
                        items.len()
                    )),
                }
            }
            Query::External { .. } => {
                let items = list::<ExternalMetricValue>(body)?;
                let first = items.first().ok_or("no metrics returned from the external metrics API")?;
                let mut sum = 0i64;
                for m in &items {
                    sum = sum.saturating_add(milli(&m.value)?);
                }
                Ok(Answer::External(Sample {
                    value: sum,
                    timestamp: timestamp(&first.timestamp)?,
                    window: first.window.map_or(SignedDuration::ZERO, SignedDuration::from_secs),
                }))
            }
        }
    }
}
