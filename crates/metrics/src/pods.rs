//! Pods by namespace with a label index, built once per cycle from the watch cache, so each
//! Autoscaler finds its target's pods without a request and without testing every pod in the
//! namespace.

use k8s_openapi::api::core::v1::Pod;
use omniscale_api::selector::LabelSelector;
use std::collections::HashMap;
use std::sync::Arc;

#[derive(Debug, Default)]
struct Namespace {
    pods: Vec<Arc<Pod>>,
    /// `key=value` → positions in `pods`, ascending.
    postings: HashMap<(String, String), Vec<u32>>,
}

/// The pods of one cycle.
#[derive(Debug, Default)]
pub struct PodIndex {
    namespaces: HashMap<String, Namespace>,
}

impl PodIndex {
    pub fn new(pods: impl IntoIterator<Item = Arc<Pod>>) -> Self {
        let mut namespaces: HashMap<String, Namespace> = HashMap::new();
        for p in pods {
            let ns = namespaces.entry(p.metadata.namespace.clone().unwrap_or_default()).or_default();
            let at = ns.pods.len() as u32;
            for (k, v) in p.metadata.labels.iter().flatten() {
                ns.postings.entry((k.clone(), v.clone())).or_default().push(at);
            }
            ns.pods.push(p);
        }
        Self { namespaces }
    }

    /// The pods of `namespace` that `selector` selects, in the order they were given. An empty
    /// selector selects every pod of the namespace, as the API server's list does.
    pub fn select(&self, namespace: &str, selector: &LabelSelector) -> Vec<&Pod> {
        let Some(ns) = self.namespaces.get(namespace) else { return Vec::new() };
        if selector.is_nothing() {
            return Vec::new();
        }
        let labels_match = |p: &Pod| match &p.metadata.labels {
            Some(l) => selector.matches(l),
            None => selector.matches(&Default::default()),
        };
        let rarest = selector
            .equalities()
            .map(|(k, v)| ns.postings.get(&(k.to_owned(), v.to_owned())).map_or(&[][..], Vec::as_slice))
            .min_by_key(|p| p.len());
        match rarest {
            Some(positions) => positions.iter().map(|&i| &*ns.pods[i as usize]).filter(|p| labels_match(p)).collect(),
            None => ns.pods.iter().map(|p| &**p).filter(|p| labels_match(p)).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn pod(ns: &str, name: &str, labels: &[(&str, &str)]) -> Arc<Pod> {
        let mut p = Pod::default();
        p.metadata.namespace = Some(ns.into());
        p.metadata.name = Some(name.into());
        p.metadata.labels = Some(labels.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect());
        Arc::new(p)
    }

    fn names(v: Vec<&Pod>) -> Vec<String> {
        v.into_iter().map(|p| p.metadata.name.clone().unwrap()).collect()
    }

    #[test]
    fn selects_like_a_full_scan() {
        let idx = PodIndex::new([
            pod("a", "web-1", &[("app", "web"), ("tier", "fe")]),
            pod("a", "web-2", &[("app", "web"), ("tier", "be")]),
            pod("a", "db-1", &[("app", "db")]),
            pod("b", "web-1", &[("app", "web")]),
        ]);
        let sel = |s: &str| LabelSelector::parse(s).unwrap();
        assert_eq!(names(idx.select("a", &sel("app=web"))), ["web-1", "web-2"]);
        assert_eq!(names(idx.select("a", &sel("app=web,tier!=fe"))), ["web-2"]);
        assert_eq!(names(idx.select("a", &sel("app in (web,db),tier notin (be)"))), ["web-1", "db-1"]);
        assert_eq!(names(idx.select("a", &sel("app=cache"))), Vec::<String>::new());
        assert_eq!(names(idx.select("a", &sel(""))).len(), 3);
        assert_eq!(names(idx.select("b", &sel("app=web"))), ["web-1"]);
        assert!(idx.select("c", &sel("")).is_empty());
        assert!(idx.select("a", &LabelSelector::nothing()).is_empty());
    }
}
