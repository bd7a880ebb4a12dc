//! Wire types of the three metrics APIs, as their servers write them. k8s-openapi does not ship
//! them (they are aggregated APIs, not part of kube-apiserver's OpenAPI).
//!
//! Fields the engines do not read are still kept so `omniscale plan` can take a `kubectl get
//! --raw` dump verbatim.

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use std::collections::BTreeMap;

/// metrics.k8s.io/v1beta1 PodMetrics: per-container usage over `window`, ending at `timestamp`.
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

/// One container of a [`PodMetrics`].
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ContainerMetrics {
    pub name: String,
    #[serde(default)]
    pub usage: BTreeMap<String, Quantity>,
}

/// metrics.k8s.io/v1beta1 NodeMetrics.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NodeMetrics {
    #[serde(default)]
    pub metadata: ObjectMeta,
    pub timestamp: String,
    #[serde(default)]
    pub window: String,
    #[serde(default)]
    pub usage: BTreeMap<String, Quantity>,
}

/// The `items` of any metrics list (PodMetricsList, NodeMetricsList, MetricValueList,
/// ExternalMetricValueList); the list metadata carries nothing the engines use.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct List<T> {
    #[serde(default = "Vec::new")]
    pub items: Vec<T>,
}

/// custom.metrics.k8s.io/v1beta2 MetricValue: one metric of one object.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetricValue {
    pub described_object: DescribedObject,
    pub metric: MetricIdentifier,
    pub timestamp: String,
    /// Upstream's client assumes one minute when absent.
    #[serde(default)]
    pub window_seconds: Option<i64>,
    pub value: Quantity,
}

/// The object a [`MetricValue`] describes.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DescribedObject {
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub api_version: String,
}

/// A metric's name and the label selector that narrows its series.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MetricIdentifier {
    pub name: String,
    #[serde(default)]
    pub selector: Option<LabelSelector>,
}

/// external.metrics.k8s.io/v1beta1 ExternalMetricValue: one series of an external metric.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExternalMetricValue {
    pub metric_name: String,
    #[serde(default)]
    pub metric_labels: BTreeMap<String, String>,
    pub timestamp: String,
    #[serde(default)]
    pub window: Option<i64>,
    pub value: Quantity,
}
