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
    /// Hash of `key=value` → positions in `pods`, ascending. Hashes, not strings, so building
    /// the index allocates nothing per label; a collision only costs a selector check, since
    /// every candidate is matched against the whole selector.
    postings: HashMap<u64, Vec<u32>>,
}

/// FNV-1a over `key`, a separator no label can contain, and `value`.
fn label_hash(k: &str, v: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in k.bytes().chain(std::iter::once(0)).chain(v.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The pods of one cycle.
#[derive(Debug, Default)]
pub struct PodIndex {
    namespaces: HashMap<String, Namespace>,
    /// The label keys indexed; `None`: all of them.
    indexed: Option<std::collections::HashSet<String>>,
}

impl PodIndex {
    /// Indexes every label of every pod.
    pub fn new(pods: impl IntoIterator<Item = Arc<Pod>>) -> Self {
        Self::build(pods, None)
    }

    /// Indexes only the label keys the cycle's selectors test for equality (from
    /// [`LabelSelector::equalities`]); selection is the same, building is cheaper.
    pub fn with_keys<'k>(pods: impl IntoIterator<Item = Arc<Pod>>, keys: impl IntoIterator<Item = &'k str>) -> Self {
        let keys: std::collections::HashSet<&str> = keys.into_iter().collect();
        Self::build(pods, Some(&keys))
    }

    fn build(pods: impl IntoIterator<Item = Arc<Pod>>, keys: Option<&std::collections::HashSet<&str>>) -> Self {
        let mut namespaces: HashMap<String, Namespace> = HashMap::new();
        for p in pods {
            let name = p.metadata.namespace.as_deref().unwrap_or_default();
            if !namespaces.contains_key(name) {
                namespaces.insert(name.to_owned(), Namespace::default());
            }
            let Some(ns) = namespaces.get_mut(name) else { continue };
            let at = ns.pods.len() as u32;
            for (k, v) in p.metadata.labels.iter().flatten() {
                if keys.is_none_or(|keys| keys.contains(k.as_str())) {
                    ns.postings.entry(label_hash(k, v)).or_default().push(at);
                }
            }
            ns.pods.push(p);
        }
        Self { namespaces, indexed: keys.map(|k| k.iter().map(|s| (*s).to_owned()).collect()) }
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
            .filter(|(k, _)| self.indexed.as_ref().is_none_or(|i| i.contains(*k)))
            .map(|(k, v)| ns.postings.get(&label_hash(k, v)).map_or(&[][..], Vec::as_slice))
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
        // Indexing only some keys changes nothing about what is selected.
        let pods = || {
            [
                pod("a", "web-1", &[("app", "web"), ("tier", "fe")]),
                pod("a", "web-2", &[("app", "web"), ("tier", "be")]),
                pod("a", "db-1", &[("app", "db")]),
            ]
        };
        let partial = PodIndex::with_keys(pods(), ["app"]);
        let none = PodIndex::with_keys(pods(), []);
        for s in ["app=web", "app=web,tier=be", "tier=fe", "app in (web,db)", ""] {
            let full = names(PodIndex::new(pods()).select("a", &sel(s)));
            assert_eq!(names(partial.select("a", &sel(s))), full, "{s}");
            assert_eq!(names(none.select("a", &sel(s))), full, "{s}");
        }
    }
}
