//! Label and field selectors: the `?labelSelector=` / `?fieldSelector=` query syntax and the
//! structured `LabelSelector` (`matchLabels` + `matchExpressions`) used by workloads, PDBs and
//! webhooks. Parsing errors carry the message the real API server gives, so clients see the same
//! 400.

use serde_json::Value;
use std::collections::BTreeMap;

#[derive(Clone, Debug, PartialEq)]
enum Op {
    Eq(String),
    NotEq(String),
    In(Vec<String>),
    NotIn(Vec<String>),
    Exists,
    NotExists,
}

#[derive(Clone, Debug, PartialEq)]
struct Requirement {
    key: String,
    op: Op,
}

impl Requirement {
    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let v = labels.get(&self.key);
        match &self.op {
            Op::Eq(x) => v == Some(x),
            Op::NotEq(x) => v != Some(x),
            Op::In(xs) => v.is_some_and(|v| xs.contains(v)),
            Op::NotIn(xs) => v.is_none_or(|v| !xs.contains(v)),
            Op::Exists => v.is_some(),
            Op::NotExists => v.is_none(),
        }
    }
}

/// A parsed label selector; the empty selector matches everything.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LabelSelector {
    reqs: Vec<Requirement>,
    /// A structured selector that can never match (`null` selector in some APIs) is modelled as
    /// this flag rather than an impossible requirement.
    nothing: bool,
}

impl LabelSelector {
    pub fn everything() -> Self {
        Self::default()
    }

    pub fn nothing() -> Self {
        Self { reqs: vec![], nothing: true }
    }

    pub fn is_empty(&self) -> bool {
        self.reqs.is_empty() && !self.nothing
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        !self.nothing && self.reqs.iter().all(|r| r.matches(labels))
    }

    /// Matches the labels of a JSON object (`metadata.labels`).
    pub fn matches_object(&self, obj: &Value) -> bool {
        self.matches(&labels_of(obj))
    }

    /// Parses the query-string syntax: `a=b,c!=d,e in (x,y),f notin (z),g,!h`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut reqs = Vec::new();
        for part in split_top_level(s) {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            reqs.push(parse_requirement(part)?);
        }
        Ok(Self { reqs, nothing: false })
    }

    /// Converts a structured `metav1.LabelSelector`. An absent selector is "nothing" where the
    /// caller says so; an empty object matches everything, as upstream.
    pub fn from_json(v: &Value) -> Result<Self, String> {
        if v.is_null() {
            return Ok(Self::nothing());
        }
        let mut reqs = Vec::new();
        if let Some(m) = v.get("matchLabels").and_then(Value::as_object) {
            for (k, val) in m {
                let val = val.as_str().ok_or_else(|| format!("matchLabels.{k} must be a string"))?;
                reqs.push(Requirement { key: k.clone(), op: Op::Eq(val.to_owned()) });
            }
        }
        for e in v.get("matchExpressions").and_then(Value::as_array).into_iter().flatten() {
            let key = e["key"].as_str().ok_or("matchExpressions[].key is required")?.to_owned();
            let values: Vec<String> =
                e["values"].as_array().into_iter().flatten().filter_map(|x| x.as_str().map(str::to_owned)).collect();
            reqs.push(expression(key, e["operator"].as_str(), values)?);
        }
        Ok(Self { reqs, nothing: false })
    }

    /// Converts a typed `metav1.LabelSelector` (present: an empty one matches everything).
    pub fn from_api(s: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector) -> Result<Self, String> {
        let mut reqs: Vec<Requirement> = s
            .match_labels
            .iter()
            .flatten()
            .map(|(k, v)| Requirement { key: k.clone(), op: Op::Eq(v.clone()) })
            .collect();
        for e in s.match_expressions.iter().flatten() {
            reqs.push(expression(e.key.clone(), Some(&e.operator), e.values.clone().unwrap_or_default())?);
        }
        Ok(Self { reqs, nothing: false })
    }

    /// The `key=value` requirements: an index of labels can answer the selector by looking up
    /// the rarest of them and checking the rest, instead of testing every object.
    pub fn equalities(&self) -> impl Iterator<Item = (&str, &str)> {
        self.reqs.iter().filter_map(|r| match &r.op {
            Op::Eq(v) => Some((r.key.as_str(), v.as_str())),
            _ => None,
        })
    }

    /// Whether the selector can match nothing at all (a `null` selector where the API says so).
    pub fn is_nothing(&self) -> bool {
        self.nothing
    }

    /// The query-string form, as used in `Scale.status.selector`.
    pub fn to_query(&self) -> String {
        let mut parts = Vec::new();
        for r in &self.reqs {
            parts.push(match &r.op {
                Op::Eq(v) => format!("{}={v}", r.key),
                Op::NotEq(v) => format!("{}!={v}", r.key),
                Op::In(vs) => format!("{} in ({})", r.key, vs.join(",")),
                Op::NotIn(vs) => format!("{} notin ({})", r.key, vs.join(",")),
                Op::Exists => r.key.clone(),
                Op::NotExists => format!("!{}", r.key),
            });
        }
        parts.join(",")
    }
}

/// One `matchExpressions` entry, validated as the API server does.
fn expression(key: String, operator: Option<&str>, values: Vec<String>) -> Result<Requirement, String> {
    let op = match operator {
        Some("In") if !values.is_empty() => Op::In(values),
        Some("NotIn") if !values.is_empty() => Op::NotIn(values),
        Some("Exists") => Op::Exists,
        Some("DoesNotExist") => Op::NotExists,
        Some(op @ ("In" | "NotIn")) => return Err(format!("{op} requires one or more values")),
        other => return Err(format!("{other:?} is not a valid label selector operator")),
    };
    Ok(Requirement { key, op })
}

pub fn labels_of(obj: &Value) -> BTreeMap<String, String> {
    obj["metadata"]["labels"]
        .as_object()
        .map(|m| m.iter().filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_owned()))).collect())
        .unwrap_or_default()
}

fn split_top_level(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

fn valid_key(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= 317
        && k.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
        && k.split('/').count() <= 2
}

fn valid_value(v: &str) -> bool {
    v.len() <= 63 && v.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn parse_requirement(part: &str) -> Result<Requirement, String> {
    let bad = || format!("unable to parse requirement: found '{part}', expected: in, notin, =, ==, !=, gt, lt");
    if let Some(key) = part.strip_prefix('!') {
        let key = key.trim();
        return if valid_key(key) { Ok(Requirement { key: key.into(), op: Op::NotExists }) } else { Err(bad()) };
    }
    for (sym, neg) in [("!=", true), ("==", false), ("=", false)] {
        if let Some((k, v)) = part.split_once(sym) {
            let (k, v) = (k.trim(), v.trim());
            if !valid_key(k) || !valid_value(v) {
                return Err(bad());
            }
            let op = if neg { Op::NotEq(v.into()) } else { Op::Eq(v.into()) };
            return Ok(Requirement { key: k.into(), op });
        }
    }
    let words: Vec<&str> = part.splitn(2, char::is_whitespace).collect();
    if words.len() == 2 {
        let rest = words[1].trim();
        let (neg, list) = if let Some(l) = rest.strip_prefix("notin") {
            (true, l)
        } else if let Some(l) = rest.strip_prefix("in") {
            (false, l)
        } else {
            return Err(bad());
        };
        let list = list.trim();
        let inner = list.strip_prefix('(').and_then(|l| l.strip_suffix(')')).ok_or_else(bad)?;
        let values: Vec<String> = inner.split(',').map(|v| v.trim().to_owned()).filter(|v| !v.is_empty()).collect();
        if !valid_key(words[0]) || values.iter().any(|v| !valid_value(v)) {
            return Err(bad());
        }
        let op = if neg { Op::NotIn(values) } else { Op::In(values) };
        return Ok(Requirement { key: words[0].into(), op });
    }
    if valid_key(part) { Ok(Requirement { key: part.into(), op: Op::Exists }) } else { Err(bad()) }
}

/// A field selector: conjunction of `path=value` / `path!=value` over a resource's supported fields.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FieldSelector {
    reqs: Vec<(String, bool, String)>,
}

impl FieldSelector {
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut reqs = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, neg, v) = if let Some((k, v)) = part.split_once("!=") {
                (k, true, v)
            } else if let Some((k, v)) = part.split_once("==") {
                (k, false, v)
            } else if let Some((k, v)) = part.split_once('=') {
                (k, false, v)
            } else {
                return Err(format!("invalid selector: '{s}'; can't understand '{part}'"));
            };
            reqs.push((k.trim().to_owned(), neg, v.trim().to_owned()));
        }
        Ok(Self { reqs })
    }

    pub fn is_empty(&self) -> bool {
        self.reqs.is_empty()
    }

    /// Field paths a kind supports, checked before listing so an unsupported field is a 400, as
    /// upstream ("field label not supported").
    pub fn check_supported(&self, kind: &str) -> Result<(), String> {
        for (k, _, _) in &self.reqs {
            if !supported_field(kind, k) {
                return Err(format!("field label not supported: {k}"));
            }
        }
        Ok(())
    }

    pub fn matches(&self, obj: &Value) -> bool {
        self.reqs.iter().all(|(k, neg, v)| {
            let actual = field_value(obj, k);
            (actual == *v) != *neg
        })
    }
}

fn supported_field(kind: &str, path: &str) -> bool {
    if matches!(path, "metadata.name" | "metadata.namespace") {
        return true;
    }
    match kind {
        "Pod" => matches!(
            path,
            "spec.nodeName"
                | "spec.restartPolicy"
                | "spec.schedulerName"
                | "spec.serviceAccountName"
                | "spec.hostNetwork"
                | "status.phase"
                | "status.podIP"
                | "status.nominatedNodeName"
        ),
        "Node" => path == "spec.unschedulable",
        "Event" => {
            path.starts_with("involvedObject.")
                || matches!(path, "reason" | "source" | "type" | "reportingComponent" | "regarding.name")
                || path.starts_with("regarding.")
        }
        "Namespace" => path == "status.phase",
        "Secret" => path == "type",
        "ReplicaSet" | "ReplicationController" => path == "status.replicas",
        _ => false,
    }
}

fn field_value(obj: &Value, path: &str) -> String {
    let mut cur = obj;
    for seg in path.split('.') {
        cur = &cur[seg];
    }
    match cur {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        Value::Bool(b) => b.to_string(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn l(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn typed_and_json_selectors_agree() {
        let v = json!({"matchLabels": {"app": "web"}, "matchExpressions": [
            {"key": "env", "operator": "In", "values": ["prod", "stage"]},
            {"key": "legacy", "operator": "DoesNotExist"}]});
        let typed: k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector =
            serde_json::from_value(v.clone()).unwrap();
        let a = LabelSelector::from_api(&typed).unwrap();
        assert_eq!(a, LabelSelector::from_json(&v).unwrap());
        assert_eq!(a.to_query(), "app=web,env in (prod,stage),!legacy");
        let bad: k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector =
            serde_json::from_value(json!({"matchExpressions": [{"key": "env", "operator": "In", "values": []}]}))
                .unwrap();
        assert_eq!(LabelSelector::from_api(&bad).unwrap_err(), "In requires one or more values");
    }

    #[test]
    fn query_syntax() {
        let s = LabelSelector::parse("app=web,tier!=db,env in (prod, stage),zone notin (a),team,!legacy").unwrap();
        assert!(s.matches(&l(&[("app", "web"), ("env", "prod"), ("team", "x"), ("zone", "b")])));
        assert!(!s.matches(&l(&[("app", "web"), ("env", "prod"), ("team", "x"), ("legacy", "1")])));
        assert!(!s.matches(&l(&[("app", "web"), ("env", "dev"), ("team", "x")])));
        assert!(LabelSelector::parse("").unwrap().matches(&l(&[])));
        assert!(LabelSelector::parse("a=(").is_err());
        assert!(LabelSelector::parse("a b c").is_err());
        assert_eq!(LabelSelector::parse("app==web").unwrap().to_query(), "app=web");
    }

    #[test]
    fn structured_selector() {
        let s = LabelSelector::from_json(&json!({"matchLabels": {"app": "a"},
            "matchExpressions": [{"key": "v", "operator": "In", "values": ["1", "2"]}]}))
        .unwrap();
        assert!(s.matches(&l(&[("app", "a"), ("v", "2")])));
        assert!(!s.matches(&l(&[("app", "a")])));
        assert!(LabelSelector::from_json(&json!({})).unwrap().matches(&l(&[])));
        assert!(!LabelSelector::from_json(&Value::Null).unwrap().matches(&l(&[])));
        assert!(LabelSelector::from_json(&json!({"matchExpressions": [{"key": "v", "operator": "In"}]})).is_err());
        let round = LabelSelector::parse(&s.to_query()).unwrap();
        assert!(round.matches(&l(&[("app", "a"), ("v", "1")])));
    }

    #[test]
    fn field_selectors() {
        let pod = json!({"metadata": {"name": "p", "namespace": "d"}, "spec": {"nodeName": "n1"}, "status": {"phase": "Running"}});
        let f = FieldSelector::parse("spec.nodeName=n1,status.phase!=Failed").unwrap();
        assert!(f.check_supported("Pod").is_ok());
        assert!(f.matches(&pod));
        assert!(!FieldSelector::parse("spec.nodeName=n2").unwrap().matches(&pod));
        assert!(FieldSelector::parse("spec.nodeName=").unwrap().matches(&json!({"spec": {}})));
        assert!(FieldSelector::parse("spec.foo=1").unwrap().check_supported("Pod").is_err());
        assert!(FieldSelector::parse("nonsense").is_err());
    }
}
