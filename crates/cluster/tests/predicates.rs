#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]
//! Table tests of `Snapshot::check` against kube-scheduler's filter plugins: one test (one table)
//! per plugin. Every case builds real `k8s_openapi` objects from JSON, so the conversion of the
//! objects is tested along with the predicate, and asserts the exact `Reason` and its message.

use k8s_openapi::api::core::v1::{Node, Pod};
use omniscale_cluster::{Domains, Reason, Snapshot};
use serde_json::{Value, json};

const ZONE: &str = "topology.kubernetes.io/zone";
const HOST: &str = "kubernetes.io/hostname";

// kube-scheduler's messages (the `ErrReason*` constants of the filter plugins).
const UNSCHEDULABLE: &str = "node(s) were unschedulable";
const NODE_NAME: &str = "node(s) didn't match the requested node name";
const NODE_AFFINITY: &str = "node(s) didn't match Pod's node affinity/selector";
const HOST_PORTS: &str = "node(s) didn't have free ports for the requested pod ports";
const VOLUME_ZONE: &str = "node(s) had no available volume zone";
const SPREAD: &str = "node(s) didn't match pod topology spread constraints";
const SPREAD_LABEL: &str = "node(s) didn't match pod topology spread constraints (missing required label)";
const POD_AFFINITY: &str = "node(s) didn't match pod affinity rules";
const POD_ANTI_AFFINITY: &str = "node(s) didn't match pod anti-affinity rules";
const EXISTING_ANTI_AFFINITY: &str = "node(s) didn't satisfy existing pods anti-affinity rules";

type Want = Result<(), (Reason, &'static str)>;

fn ok() -> Want {
    Ok(())
}

fn fail(reason: Reason, message: &'static str) -> Want {
    Err((reason, message))
}

fn taint_reason(key: &str, value: &str, effect: &'static str) -> Reason {
    Reason::Taint { key: key.to_owned(), value: value.to_owned(), effect }
}

fn insufficient(resource: &str) -> Reason {
    Reason::Insufficient(resource.to_owned())
}

// ----- building objects ------------------------------------------------------------------------

/// Merges `val` into the object at `path` (objects are created on the way); a non-object
/// value replaces what is there.
fn merge(mut v: Value, path: &[&str], val: Value) -> Value {
    let mut cur = &mut v;
    for seg in path {
        if !cur.is_object() {
            *cur = json!({});
        }
        cur = cur.as_object_mut().unwrap().entry((*seg).to_owned()).or_insert_with(|| json!({}));
    }
    if cur.is_object() && val.is_object() {
        let obj = cur.as_object_mut().unwrap();
        for (k, x) in val.as_object().unwrap() {
            obj.insert(k.clone(), x.clone());
        }
    } else {
        *cur = val;
    }
    v
}

/// A node with 4 cpu, 8Gi memory, 110 pods, 50Gi ephemeral storage and its hostname label.
fn node(name: &str) -> Value {
    json!({
        "metadata": {"name": name, "labels": {HOST: name}},
        "spec": {},
        "status": {"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110", "ephemeral-storage": "50Gi"}},
    })
}

fn zoned(name: &str, zone: &str) -> Value {
    labels(node(name), json!({ ZONE: zone }))
}

fn labels(v: Value, l: Value) -> Value {
    merge(v, &["metadata", "labels"], l)
}

fn meta(v: Value, m: Value) -> Value {
    merge(v, &["metadata"], m)
}

fn spec(v: Value, s: Value) -> Value {
    merge(v, &["spec"], s)
}

fn alloc(v: Value, a: Value) -> Value {
    merge(v, &["status", "allocatable"], a)
}

fn taints(v: Value, t: Value) -> Value {
    spec(v, json!({ "taints": t }))
}

/// A pod in `default` with one container and no requests.
fn pod(name: &str) -> Value {
    json!({
        "metadata": {"name": name, "namespace": "default", "labels": {}},
        "spec": {"containers": [{"name": "app"}]},
    })
}

fn app(name: &str, app: &str) -> Value {
    labels(pod(name), json!({ "app": app }))
}

fn web(name: &str) -> Value {
    app(name, "web")
}

fn on(v: Value, node: &str) -> Value {
    spec(v, json!({ "nodeName": node }))
}

fn requests(v: Value, r: Value) -> Value {
    merge(v, &["spec", "containers"], json!([{"name": "app", "resources": {"requests": r}}]))
}

fn cpu(name: &str, cpu: &str) -> Value {
    requests(pod(name), json!({ "cpu": cpu }))
}

fn tolerations(v: Value, t: Value) -> Value {
    spec(v, json!({ "tolerations": t }))
}

fn affinity(v: Value, a: Value) -> Value {
    merge(v, &["spec", "affinity"], a)
}

fn node_terms(terms: Value) -> Value {
    json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}})
}

fn expr(key: &str, op: &str, values: &[&str]) -> Value {
    if values.is_empty() {
        json!({"key": key, "operator": op})
    } else {
        json!({"key": key, "operator": op, "values": values})
    }
}

fn term(key: &str, match_labels: Value) -> Value {
    json!({"topologyKey": key, "labelSelector": {"matchLabels": match_labels}})
}

fn pod_affinity(terms: Value) -> Value {
    json!({"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": terms}})
}

fn pod_anti_affinity(terms: Value) -> Value {
    json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": terms}})
}

/// A `DoNotSchedule` spread constraint over `app=web` pods.
fn tsc(key: &str, max_skew: i32) -> Value {
    json!({
        "maxSkew": max_skew,
        "topologyKey": key,
        "whenUnsatisfiable": "DoNotSchedule",
        "labelSelector": {"matchLabels": {"app": "web"}},
    })
}

fn spread(v: Value, constraints: Value) -> Value {
    spec(v, json!({ "topologySpreadConstraints": constraints }))
}

fn host_port(port: i32, protocol: Option<&str>, ip: Option<&str>) -> Value {
    let mut p = json!({"containerPort": 80, "hostPort": port});
    if let Some(proto) = protocol {
        p["protocol"] = json!(proto);
    }
    if let Some(ip) = ip {
        p["hostIP"] = json!(ip);
    }
    p
}

fn with_ports(name: &str, ports: Value) -> Value {
    merge(pod(name), &["spec", "containers"], json!([{"name": "app", "ports": ports}]))
}

// ----- running tables ---------------------------------------------------------------------------

struct Case {
    name: &'static str,
    nodes: Vec<Value>,
    /// Pods already in the cluster; `spec.nodeName` binds them.
    pods: Vec<Value>,
    pod: Value,
    volume_zones: Option<&'static [&'static str]>,
    on: &'static str,
    want: Want,
}

fn case(name: &'static str, nodes: Vec<Value>, pods: Vec<Value>, pod: Value, on: &'static str, want: Want) -> Case {
    Case { name, nodes, pods, pod, volume_zones: None, on, want }
}

fn eval(c: &Case) -> Result<(), Reason> {
    let mut snap = Snapshot::new();
    for n in &c.nodes {
        let n: Node = serde_json::from_value(n.clone()).unwrap_or_else(|e| panic!("{}: node: {e}", c.name));
        snap.add_node_object(&n).unwrap_or_else(|e| panic!("{}: {e}", c.name));
    }
    for p in &c.pods {
        let obj: Pod = serde_json::from_value(p.clone()).unwrap_or_else(|e| panic!("{}: pod: {e}", c.name));
        let id = snap.add_pod_object(&obj, None).unwrap_or_else(|e| panic!("{}: {e}", c.name));
        let bound = obj.spec.as_ref().and_then(|s| s.node_name.as_deref()).is_some();
        assert_eq!(snap.pods[id as usize].node.is_some(), bound, "{}: existing pod not bound as written", c.name);
    }
    let pod: Pod = serde_json::from_value(c.pod.clone()).unwrap_or_else(|e| panic!("{}: pod: {e}", c.name));
    let zones: Option<Vec<String>> = c.volume_zones.map(|z| z.iter().map(|s| (*s).to_owned()).collect());
    let class = snap.pod_class(&pod, zones.as_deref()).unwrap_or_else(|e| panic!("{}: {e}", c.name));
    snap.ready();
    let node = snap.node_id(c.on).unwrap_or_else(|| panic!("{}: no node {}", c.name, c.on));
    snap.check(class, usize::MAX, node, Domains::default())
}

fn run(table: &str, cases: Vec<Case>) {
    let mut failures = Vec::new();
    for c in &cases {
        let got = eval(c);
        let want = c.want.clone().map_err(|(r, _)| r);
        let got_message = got.as_ref().err().map(ToString::to_string);
        let want_message = c.want.as_ref().err().map(|(_, m)| (*m).to_owned());
        if got != want || got_message != want_message {
            failures.push(format!("  {}: want {want:?} ({want_message:?}), got {got:?} ({got_message:?})", c.name));
        }
    }
    assert!(
        failures.is_empty(),
        "{table}: {} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

// ----- NodeUnschedulable -----------------------------------------------------------------------

#[test]
fn node_unschedulable() {
    let cordoned = || vec![spec(node("n"), json!({"unschedulable": true})), node("open")];
    let tolerating = |t: Value| tolerations(pod("p"), json!([t]));
    let key = "node.kubernetes.io/unschedulable";
    run(
        "NodeUnschedulable",
        vec![
            case("cordoned node", cordoned(), vec![], pod("p"), "n", fail(Reason::Unschedulable, UNSCHEDULABLE)),
            case("schedulable node", cordoned(), vec![], pod("p"), "open", ok()),
            case(
                "unschedulable: false",
                vec![spec(node("n"), json!({"unschedulable": false}))],
                vec![],
                pod("p"),
                "n",
                ok(),
            ),
            case(
                "tolerates the unschedulable taint (Exists, NoSchedule)",
                cordoned(),
                vec![],
                tolerating(json!({"key": key, "operator": "Exists", "effect": "NoSchedule"})),
                "n",
                ok(),
            ),
            case(
                "tolerates the unschedulable taint (Exists, any effect)",
                cordoned(),
                vec![],
                tolerating(json!({"key": key, "operator": "Exists"})),
                "n",
                ok(),
            ),
            case(
                "tolerates the unschedulable taint (Equal, empty value)",
                cordoned(),
                vec![],
                tolerating(json!({"key": key, "operator": "Equal", "effect": "NoSchedule"})),
                "n",
                ok(),
            ),
            case(
                "tolerates everything (Exists, empty key)",
                cordoned(),
                vec![],
                tolerating(json!({"operator": "Exists"})),
                "n",
                ok(),
            ),
            case(
                "toleration with the wrong effect",
                cordoned(),
                vec![],
                tolerating(json!({"key": key, "operator": "Exists", "effect": "NoExecute"})),
                "n",
                fail(Reason::Unschedulable, UNSCHEDULABLE),
            ),
            case(
                "toleration with a value the taint does not have",
                cordoned(),
                vec![],
                tolerating(json!({"key": key, "operator": "Equal", "value": "true", "effect": "NoSchedule"})),
                "n",
                fail(Reason::Unschedulable, UNSCHEDULABLE),
            ),
            case(
                "toleration of another key",
                cordoned(),
                vec![],
                tolerating(json!({"key": "node.kubernetes.io/not-ready", "operator": "Exists"})),
                "n",
                fail(Reason::Unschedulable, UNSCHEDULABLE),
            ),
            case(
                "reported before a node name mismatch (plugin order)",
                cordoned(),
                vec![],
                spec(pod("p"), json!({"nodeName": "open"})),
                "n",
                fail(Reason::Unschedulable, UNSCHEDULABLE),
            ),
        ],
    );
}

// ----- NodeName ----------------------------------------------------------------------------------

#[test]
fn node_name() {
    // The hostname labels deliberately differ from the names: spec.nodeName names the node object.
    let nodes = || vec![labels(node("a"), json!({ HOST: "host-a" })), labels(node("b"), json!({ HOST: "a" }))];
    run(
        "NodeName",
        vec![
            case("named node", nodes(), vec![], spec(pod("p"), json!({"nodeName": "a"})), "a", ok()),
            case(
                "other node",
                nodes(),
                vec![],
                spec(pod("p"), json!({"nodeName": "a"})),
                "b",
                fail(Reason::NodeName, NODE_NAME),
            ),
            case(
                "hostname label equal to the requested name does not count",
                nodes(),
                vec![],
                spec(pod("p"), json!({"nodeName": "host-a"})),
                "a",
                fail(Reason::NodeName, NODE_NAME),
            ),
            case("no nodeName", nodes(), vec![], pod("p"), "b", ok()),
            case("empty nodeName", nodes(), vec![], spec(pod("p"), json!({"nodeName": ""})), "b", ok()),
        ],
    );
}

// ----- TaintToleration ---------------------------------------------------------------------------

#[test]
fn taint_toleration() {
    let tainted = |t: Value| vec![taints(node("t"), t)];
    let gpu = |effect: &str| json!([{"key": "dedicated", "value": "gpu", "effect": effect}]);
    let tol = |t: Value| tolerations(pod("p"), t);
    let untolerated = |effect: &'static str| {
        fail(taint_reason("dedicated", "gpu", effect), "node(s) had untolerated taint {dedicated: gpu}")
    };
    run(
        "TaintToleration",
        vec![
            case(
                "untolerated NoSchedule",
                tainted(gpu("NoSchedule")),
                vec![],
                pod("p"),
                "t",
                untolerated("NoSchedule"),
            ),
            case(
                "Equal with matching value and effect",
                tainted(gpu("NoSchedule")),
                vec![],
                tol(json!([{"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}])),
                "t",
                ok(),
            ),
            case(
                "operator omitted means Equal",
                tainted(gpu("NoSchedule")),
                vec![],
                tol(json!([{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}])),
                "t",
                ok(),
            ),
            case(
                "Equal with another value",
                tainted(gpu("NoSchedule")),
                vec![],
                tol(json!([{"key": "dedicated", "operator": "Equal", "value": "cpu", "effect": "NoSchedule"}])),
                "t",
                untolerated("NoSchedule"),
            ),
            case(
                "Exists on the key, any value",
                tainted(gpu("NoSchedule")),
                vec![],
                tol(json!([{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}])),
                "t",
                ok(),
            ),
            case(
                "Exists on another key",
                tainted(gpu("NoSchedule")),
                vec![],
                tol(json!([{"key": "special", "operator": "Exists"}])),
                "t",
                untolerated("NoSchedule"),
            ),
            case(
                "toleration for another effect",
                tainted(gpu("NoSchedule")),
                vec![],
                tol(json!([{"key": "dedicated", "operator": "Exists", "effect": "NoExecute"}])),
                "t",
                untolerated("NoSchedule"),
            ),
            case(
                "effect-less toleration matches every effect",
                tainted(gpu("NoSchedule")),
                vec![],
                tol(json!([{"key": "dedicated", "operator": "Equal", "value": "gpu"}])),
                "t",
                ok(),
            ),
            case("untolerated NoExecute", tainted(gpu("NoExecute")), vec![], pod("p"), "t", untolerated("NoExecute")),
            case(
                "NoExecute tolerated (tolerationSeconds does not matter)",
                tainted(gpu("NoExecute")),
                vec![],
                tol(
                    json!([{"key": "dedicated", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 60}]),
                ),
                "t",
                ok(),
            ),
            case(
                "NoSchedule toleration does not cover NoExecute",
                tainted(gpu("NoExecute")),
                vec![],
                tol(json!([{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}])),
                "t",
                untolerated("NoExecute"),
            ),
            case("PreferNoSchedule is not a filter", tainted(gpu("PreferNoSchedule")), vec![], pod("p"), "t", ok()),
            case(
                "Exists with empty key tolerates every taint",
                tainted(json!([
                    {"key": "dedicated", "value": "gpu", "effect": "NoSchedule"},
                    {"key": "node.kubernetes.io/not-ready", "effect": "NoExecute"},
                ])),
                vec![],
                tol(json!([{"operator": "Exists"}])),
                "t",
                ok(),
            ),
            case(
                "Exists with empty key but an effect covers only that effect",
                tainted(json!([
                    {"key": "a", "value": "1", "effect": "NoSchedule"},
                    {"key": "dedicated", "value": "gpu", "effect": "NoExecute"},
                ])),
                vec![],
                tol(json!([{"operator": "Exists", "effect": "NoSchedule"}])),
                "t",
                untolerated("NoExecute"),
            ),
            case(
                "first untolerated taint in node order is reported",
                tainted(json!([
                    {"key": "a", "value": "1", "effect": "NoSchedule"},
                    {"key": "b", "value": "2", "effect": "NoSchedule"},
                ])),
                vec![],
                pod("p"),
                "t",
                fail(taint_reason("a", "1", "NoSchedule"), "node(s) had untolerated taint {a: 1}"),
            ),
            case(
                "only the untolerated one of two taints is reported",
                tainted(json!([
                    {"key": "a", "value": "1", "effect": "NoSchedule"},
                    {"key": "b", "value": "2", "effect": "NoExecute"},
                ])),
                vec![],
                tol(json!([{"key": "a", "operator": "Exists"}])),
                "t",
                fail(taint_reason("b", "2", "NoExecute"), "node(s) had untolerated taint {b: 2}"),
            ),
            case(
                "a PreferNoSchedule taint before is skipped",
                tainted(json!([
                    {"key": "soft", "value": "x", "effect": "PreferNoSchedule"},
                    {"key": "dedicated", "value": "gpu", "effect": "NoSchedule"},
                ])),
                vec![],
                pod("p"),
                "t",
                untolerated("NoSchedule"),
            ),
            case(
                "taint without value",
                tainted(json!([{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}])),
                vec![],
                pod("p"),
                "t",
                fail(
                    taint_reason("node-role.kubernetes.io/control-plane", "", "NoSchedule"),
                    "node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }",
                ),
            ),
            case(
                "taint without value tolerated by Equal without value",
                tainted(json!([{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}])),
                vec![],
                tol(
                    json!([{"key": "node-role.kubernetes.io/control-plane", "operator": "Equal", "effect": "NoSchedule"}]),
                ),
                "t",
                ok(),
            ),
            case("untainted node", vec![node("t")], vec![], pod("p"), "t", ok()),
        ],
    );
}

// ----- NodeAffinity ------------------------------------------------------------------------------

#[test]
fn node_affinity() {
    let nodes = || {
        vec![
            labels(node("a"), json!({ZONE: "a", "disk": "ssd", "cores": "8"})),
            labels(node("b"), json!({ZONE: "b", "cores": "2"})),
        ]
    };
    let selector = |s: Value| spec(pod("p"), json!({ "nodeSelector": s }));
    let required = |terms: Value| affinity(pod("p"), node_terms(terms));
    let no = || fail(Reason::NodeAffinity, NODE_AFFINITY);
    run(
        "NodeAffinity",
        vec![
            case("nodeSelector matches", nodes(), vec![], selector(json!({"disk": "ssd"})), "a", ok()),
            case("nodeSelector label missing", nodes(), vec![], selector(json!({"disk": "ssd"})), "b", no()),
            case("nodeSelector value differs", nodes(), vec![], selector(json!({ ZONE: "b" })), "a", no()),
            case(
                "nodeSelector entries are ANDed",
                nodes(),
                vec![],
                selector(json!({"disk": "ssd", ZONE: "b"})),
                "a",
                no(),
            ),
            case("nodeSelector on hostname", nodes(), vec![], selector(json!({ HOST: "b" })), "b", ok()),
            case(
                "terms are ORed (second term matches)",
                nodes(),
                vec![],
                required(
                    json!([{"matchExpressions": [expr(ZONE, "In", &["b"])]}, {"matchExpressions": [expr("disk", "In", &["ssd"])]}]),
                ),
                "a",
                ok(),
            ),
            case(
                "terms are ORed (first term matches)",
                nodes(),
                vec![],
                required(
                    json!([{"matchExpressions": [expr(ZONE, "In", &["b"])]}, {"matchExpressions": [expr("disk", "In", &["ssd"])]}]),
                ),
                "b",
                ok(),
            ),
            case(
                "no term matches",
                nodes(),
                vec![],
                required(
                    json!([{"matchExpressions": [expr(ZONE, "In", &["c"])]}, {"matchExpressions": [expr("disk", "In", &["hdd"])]}]),
                ),
                "a",
                no(),
            ),
            case(
                "expressions within a term are ANDed",
                nodes(),
                vec![],
                required(json!([{"matchExpressions": [expr(ZONE, "In", &["a"]), expr("disk", "In", &["hdd"])]}])),
                "a",
                no(),
            ),
            case(
                "In with several values",
                nodes(),
                vec![],
                required(json!([{"matchExpressions": [expr(ZONE, "In", &["c", "b"])]}])),
                "b",
                ok(),
            ),
            case(
                "NotIn excludes the value",
                nodes(),
                vec![],
                required(json!([{"matchExpressions": [expr(ZONE, "NotIn", &["b"])]}])),
                "b",
                no(),
            ),
            case(
                "NotIn allows other values",
                nodes(),
                vec![],
                required(json!([{"matchExpressions": [expr(ZONE, "NotIn", &["b"])]}])),
                "a",
                ok(),
            ),
            case(
                "NotIn matches a missing label",
                nodes(),
                vec![],
                required(json!([{"matchExpressions": [expr("disk", "NotIn", &["ssd"])]}])),
                "b",
                ok(),
            ),
            case(
                "Exists with the label",
                nodes(),
                vec![],
                required(json!([{"matchExpressions": [expr("disk", "Exists", &[])]}])),
                "a",
                ok(),
            ),
            case(
                "Exists without the label",
                nodes(),
                vec![],
                required(json!([{"matchExpressions": [expr("disk", "Exists", &[])]}])),
                "b",
                no(),
            ),
            case(
                "DoesNotExist without the label",
                nodes(),
                vec![],
                required(json!([{"matchExpressions": [expr("disk", "DoesNotExist", &[])]}])),
                "b",
                ok(),
            ),
            case(
                "DoesNotExist with the label",
                nodes(),
                vec![],
                required(json!([{"matchExpressions": [expr("disk", "DoesNotExist", &[])]}])),
                "a",
                no(),
            ),
            case(
                "Gt greater",
                nodes(),
                vec![],
                required(json!([{"matchExpressions": [expr("cores", "Gt", &["4"])]}])),
                "a",
                ok(),
            ),
            case(
                "Gt smaller",
                nodes(),
                vec![],
                required(json!([{"matchExpressions": [expr("cores", "Gt", &["4"])]}])),
                "b",
                no(),
            ),
            case(
                "Gt is strict",
                nodes(),
                vec![],
                required(json!([{"matchExpressions": [expr("cores", "Gt", &["8"])]}])),
                "a",
                no(),
            ),
            case(
                "Lt smaller",
                nodes(),
                vec![],
                required(json!([{"matchExpressions": [expr("cores", "Lt", &["4"])]}])),
                "b",
                ok(),
            ),
            case(
                "Lt greater",
                nodes(),
                vec![],
                required(json!([{"matchExpressions": [expr("cores", "Lt", &["4"])]}])),
                "a",
                no(),
            ),
            case(
                "Gt on a non-integer label value",
                nodes(),
                vec![],
                required(json!([{"matchExpressions": [expr(ZONE, "Gt", &["0"])]}])),
                "a",
                no(),
            ),
            case(
                "Lt on a missing label",
                nodes(),
                vec![],
                required(json!([{"matchExpressions": [expr("gpus", "Lt", &["100"])]}])),
                "a",
                no(),
            ),
            case(
                "matchFields metadata.name In",
                nodes(),
                vec![],
                required(json!([{"matchFields": [expr("metadata.name", "In", &["a"])]}])),
                "a",
                ok(),
            ),
            case(
                "matchFields metadata.name In, other node",
                nodes(),
                vec![],
                required(json!([{"matchFields": [expr("metadata.name", "In", &["a"])]}])),
                "b",
                no(),
            ),
            case(
                "matchFields metadata.name NotIn",
                nodes(),
                vec![],
                required(json!([{"matchFields": [expr("metadata.name", "NotIn", &["a"])]}])),
                "b",
                ok(),
            ),
            case(
                "matchFields and matchExpressions in one term are ANDed",
                nodes(),
                vec![],
                required(json!([{
                    "matchFields": [expr("metadata.name", "In", &["a"])],
                    "matchExpressions": [expr(ZONE, "In", &["b"])],
                }])),
                "a",
                no(),
            ),
            case(
                "nodeSelector and required affinity must both hold",
                nodes(),
                vec![],
                affinity(
                    selector(json!({"disk": "ssd"})),
                    node_terms(json!([{"matchExpressions": [expr(ZONE, "In", &["b"])]}])),
                ),
                "a",
                no(),
            ),
            case(
                "nodeSelector and required affinity both hold",
                nodes(),
                vec![],
                affinity(
                    selector(json!({"disk": "ssd"})),
                    node_terms(json!([{"matchExpressions": [expr(ZONE, "In", &["a"])]}])),
                ),
                "a",
                ok(),
            ),
            case("empty term matches nothing", nodes(), vec![], required(json!([{}])), "a", no()),
            case(
                "empty term ORed with a term that does not match",
                nodes(),
                vec![],
                required(json!([{}, {"matchExpressions": [expr(ZONE, "In", &["a"])]}])),
                "b",
                no(),
            ),
            case(
                "empty term ORed with a term that matches",
                nodes(),
                vec![],
                required(json!([{}, {"matchExpressions": [expr(ZONE, "In", &["a"])]}])),
                "a",
                ok(),
            ),
            case(
                "nodeSelector on a metadata.name label is a label, not the name field",
                nodes(),
                vec![],
                selector(json!({"metadata.name": "a"})),
                "a",
                no(),
            ),
            case(
                "preferred node affinity is not a filter",
                nodes(),
                vec![],
                affinity(
                    pod("p"),
                    json!({"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                        {"weight": 100, "preference": {"matchExpressions": [expr(ZONE, "In", &["b"])]}},
                    ]}}),
                ),
                "a",
                ok(),
            ),
        ],
    );
}

// ----- NodePorts ---------------------------------------------------------------------------------

#[test]
fn node_ports() {
    let nodes = || vec![node("n"), node("m")];
    let existing = |ports: Value| vec![on(with_ports("old", ports), "n")];
    let clash = || fail(Reason::HostPorts, HOST_PORTS);
    run(
        "NodePorts",
        vec![
            case(
                "same port and protocol",
                nodes(),
                existing(json!([host_port(8080, Some("TCP"), None)])),
                with_ports("p", json!([host_port(8080, Some("TCP"), None)])),
                "n",
                clash(),
            ),
            case(
                "protocol defaults to TCP",
                nodes(),
                existing(json!([host_port(8080, None, None)])),
                with_ports("p", json!([host_port(8080, Some("TCP"), None)])),
                "n",
                clash(),
            ),
            case(
                "same port, other protocol",
                nodes(),
                existing(json!([host_port(8080, Some("TCP"), None)])),
                with_ports("p", json!([host_port(8080, Some("UDP"), None)])),
                "n",
                ok(),
            ),
            case(
                "same port, SCTP and UDP",
                nodes(),
                existing(json!([host_port(53, Some("SCTP"), None)])),
                with_ports("p", json!([host_port(53, Some("UDP"), None)])),
                "n",
                ok(),
            ),
            case(
                "other port",
                nodes(),
                existing(json!([host_port(8080, Some("TCP"), None)])),
                with_ports("p", json!([host_port(8081, Some("TCP"), None)])),
                "n",
                ok(),
            ),
            case(
                "same port on another node",
                nodes(),
                existing(json!([host_port(8080, Some("TCP"), None)])),
                with_ports("p", json!([host_port(8080, Some("TCP"), None)])),
                "m",
                ok(),
            ),
            case(
                "different specific host IPs",
                nodes(),
                existing(json!([host_port(8080, Some("TCP"), Some("127.0.0.1"))])),
                with_ports("p", json!([host_port(8080, Some("TCP"), Some("127.0.0.2"))])),
                "n",
                ok(),
            ),
            case(
                "same specific host IP",
                nodes(),
                existing(json!([host_port(8080, Some("TCP"), Some("127.0.0.1"))])),
                with_ports("p", json!([host_port(8080, Some("TCP"), Some("127.0.0.1"))])),
                "n",
                clash(),
            ),
            case(
                "existing 0.0.0.0 against a specific IP",
                nodes(),
                existing(json!([host_port(8080, Some("TCP"), Some("0.0.0.0"))])),
                with_ports("p", json!([host_port(8080, Some("TCP"), Some("10.0.0.1"))])),
                "n",
                clash(),
            ),
            case(
                "specific IP against existing unset hostIP (0.0.0.0)",
                nodes(),
                existing(json!([host_port(8080, Some("TCP"), None)])),
                with_ports("p", json!([host_port(8080, Some("TCP"), Some("10.0.0.1"))])),
                "n",
                clash(),
            ),
            case(
                "wildcard against an existing specific IP",
                nodes(),
                existing(json!([host_port(8080, Some("TCP"), Some("10.0.0.1"))])),
                with_ports("p", json!([host_port(8080, Some("TCP"), Some("0.0.0.0"))])),
                "n",
                clash(),
            ),
            case(
                "specific IP clashes only on the same protocol",
                nodes(),
                existing(json!([host_port(8080, Some("TCP"), None)])),
                with_ports("p", json!([host_port(8080, Some("UDP"), Some("10.0.0.1"))])),
                "n",
                ok(),
            ),
            case(
                "a containerPort without hostPort takes no host port",
                nodes(),
                existing(json!([{"containerPort": 8080}])),
                with_ports("p", json!([host_port(8080, Some("TCP"), None)])),
                "n",
                ok(),
            ),
            case(
                "any container of the pod",
                nodes(),
                existing(json!([host_port(9090, Some("TCP"), None)])),
                merge(
                    pod("p"),
                    &["spec", "containers"],
                    json!([
                        {"name": "a", "ports": [host_port(8080, Some("TCP"), None)]},
                        {"name": "b", "ports": [host_port(9090, Some("TCP"), None)]},
                    ]),
                ),
                "n",
                clash(),
            ),
            case(
                "one of several existing ports",
                nodes(),
                existing(json!([host_port(7070, Some("UDP"), None), host_port(8080, Some("TCP"), None)])),
                with_ports("p", json!([host_port(8080, Some("TCP"), None)])),
                "n",
                clash(),
            ),
        ],
    );
}

// ----- NodeResourcesFit --------------------------------------------------------------------------

#[test]
fn node_resources_fit() {
    let small = || alloc(node("n"), json!({"cpu": "2", "memory": "4Gi", "ephemeral-storage": "10Gi"}));
    let nodes =
        || vec![small(), alloc(node("g"), json!({"nvidia.com/gpu": "2"})), alloc(node("tiny"), json!({"pods": "2"}))];
    let with_init = |app_cpu: &str, inits: Value| {
        spec(requests(pod("p"), json!({ "cpu": app_cpu })), json!({ "initContainers": inits }))
    };
    let init = |name: &str, cpu: &str| json!({"name": name, "resources": {"requests": {"cpu": cpu}}});
    let sidecar = |name: &str, cpu: &str| json!({"name": name, "restartPolicy": "Always", "resources": {"requests": {"cpu": cpu}}});
    let no_cpu = || fail(insufficient("cpu"), "Insufficient cpu");
    run(
        "NodeResourcesFit",
        vec![
            case("exactly fits", nodes(), vec![], cpu("p", "2"), "n", ok()),
            case("one millicore too many", nodes(), vec![], cpu("p", "2001m"), "n", no_cpu()),
            case("fits next to a placed pod", nodes(), vec![on(cpu("old", "1500m"), "n")], cpu("p", "500m"), "n", ok()),
            case("placed pods use it up", nodes(), vec![on(cpu("old", "1500m"), "n")], cpu("p", "600m"), "n", no_cpu()),
            case(
                "memory",
                nodes(),
                vec![],
                requests(pod("p"), json!({"memory": "4097Mi"})),
                "n",
                fail(insufficient("memory"), "Insufficient memory"),
            ),
            case("memory exactly fits", nodes(), vec![], requests(pod("p"), json!({"memory": "4Gi"})), "n", ok()),
            case(
                "ephemeral-storage",
                nodes(),
                vec![],
                requests(pod("p"), json!({"ephemeral-storage": "11Gi"})),
                "n",
                fail(insufficient("ephemeral-storage"), "Insufficient ephemeral-storage"),
            ),
            case(
                "extended resource the node lacks",
                nodes(),
                vec![],
                requests(pod("p"), json!({"nvidia.com/gpu": "1"})),
                "n",
                fail(insufficient("nvidia.com/gpu"), "Insufficient nvidia.com/gpu"),
            ),
            case(
                "extended resource fits",
                nodes(),
                vec![],
                requests(pod("p"), json!({"nvidia.com/gpu": "2"})),
                "g",
                ok(),
            ),
            case(
                "extended resource used by a placed pod",
                nodes(),
                vec![on(requests(pod("old"), json!({"nvidia.com/gpu": "1"})), "g")],
                requests(pod("p"), json!({"nvidia.com/gpu": "2"})),
                "g",
                fail(insufficient("nvidia.com/gpu"), "Insufficient nvidia.com/gpu"),
            ),
            case(
                "zero extended request never fails",
                nodes(),
                vec![],
                requests(pod("p"), json!({"nvidia.com/gpu": "0"})),
                "n",
                ok(),
            ),
            case(
                "hugepages are checked like extended resources",
                nodes(),
                vec![],
                requests(pod("p"), json!({"hugepages-2Mi": "4Mi"})),
                "n",
                fail(insufficient("hugepages-2Mi"), "Insufficient hugepages-2Mi"),
            ),
            case(
                "pod count",
                nodes(),
                vec![on(pod("a"), "tiny"), on(pod("b"), "tiny")],
                pod("p"),
                "tiny",
                fail(Reason::TooManyPods, "Too many pods"),
            ),
            case("pod count with room", nodes(), vec![on(pod("a"), "tiny")], pod("p"), "tiny", ok()),
            case(
                "pod count is reported first",
                nodes(),
                vec![on(cpu("a", "4"), "tiny"), on(pod("b"), "tiny")],
                cpu("p", "1"),
                "tiny",
                fail(Reason::TooManyPods, "Too many pods"),
            ),
            case(
                "zero requests fit an overcommitted node",
                nodes(),
                vec![on(requests(pod("old"), json!({"cpu": "3", "memory": "5Gi"})), "n")],
                pod("p"),
                "n",
                ok(),
            ),
            case(
                "a zero cpu request ignores cpu overcommit",
                nodes(),
                vec![on(cpu("old", "3"), "n")],
                requests(pod("p"), json!({"memory": "1Gi"})),
                "n",
                ok(),
            ),
            case(
                "init container larger than the app containers",
                nodes(),
                vec![],
                with_init("1", json!([init("init", "2100m")])),
                "n",
                no_cpu(),
            ),
            case(
                "init containers are not added to app containers",
                nodes(),
                vec![],
                with_init("1", json!([init("init", "1500m")])),
                "n",
                ok(),
            ),
            case(
                "init containers run one at a time",
                nodes(),
                vec![],
                with_init("1", json!([init("one", "1500m"), init("two", "1500m")])),
                "n",
                ok(),
            ),
            case(
                "init container peak counts against placed pods",
                nodes(),
                vec![on(cpu("old", "600m"), "n")],
                with_init("1", json!([init("init", "1500m")])),
                "n",
                no_cpu(),
            ),
            case(
                "sidecar is added to the app containers",
                nodes(),
                vec![],
                with_init("1500m", json!([sidecar("side", "600m")])),
                "n",
                no_cpu(),
            ),
            case(
                "init container after a sidecar runs next to it",
                nodes(),
                vec![],
                with_init("1", json!([sidecar("side", "500m"), init("init", "1600m")])),
                "n",
                no_cpu(),
            ),
            case(
                "init container before a sidecar runs alone",
                nodes(),
                vec![],
                with_init("1", json!([init("init", "1600m"), sidecar("side", "500m")])),
                "n",
                ok(),
            ),
            case(
                "overhead is added",
                nodes(),
                vec![],
                spec(cpu("p", "1800m"), json!({"overhead": {"cpu": "250m"}})),
                "n",
                no_cpu(),
            ),
            case(
                "overhead that still fits",
                nodes(),
                vec![],
                spec(cpu("p", "1750m"), json!({"overhead": {"cpu": "250m"}})),
                "n",
                ok(),
            ),
            case(
                "requests of every app container add up",
                nodes(),
                vec![],
                merge(
                    pod("p"),
                    &["spec", "containers"],
                    json!([
                        {"name": "a", "resources": {"requests": {"cpu": "1"}}},
                        {"name": "b", "resources": {"requests": {"cpu": "1001m"}}},
                    ]),
                ),
                "n",
                no_cpu(),
            ),
        ],
    );
}

// ----- VolumeZone --------------------------------------------------------------------------------

#[test]
fn volume_zone() {
    let nodes = || vec![zoned("a", "a"), alloc(zoned("b", "b"), json!({"cpu": "1"}))];
    let with_zones = |mut c: Case, zones: &'static [&'static str]| {
        c.volume_zones = Some(zones);
        c
    };
    run(
        "VolumeZone",
        vec![
            with_zones(case("volume in the node's zone", nodes(), vec![], pod("p"), "a", ok()), &["a"]),
            with_zones(
                case("volume in another zone", nodes(), vec![], pod("p"), "b", fail(Reason::VolumeZone, VOLUME_ZONE)),
                &["a"],
            ),
            with_zones(case("regional volume", nodes(), vec![], pod("p"), "b", ok()), &["a", "b"]),
            case("no bound volumes", nodes(), vec![], pod("p"), "b", ok()),
            with_zones(
                case("node without zone labels takes any volume", vec![node("bare")], vec![], pod("p"), "bare", ok()),
                &["a"],
            ),
            with_zones(
                case(
                    "NodeResourcesFit runs before VolumeZone",
                    nodes(),
                    vec![],
                    cpu("p", "2"),
                    "b",
                    fail(insufficient("cpu"), "Insufficient cpu"),
                ),
                &["a"],
            ),
        ],
    );
}

// ----- PodTopologySpread -------------------------------------------------------------------------

#[test]
fn pod_topology_spread() {
    let nodes = || vec![zoned("a1", "a"), zoned("a2", "a"), zoned("b1", "b")];
    let zone1 = |p: Value| spread(p, json!([tsc(ZONE, 1)]));
    let skewed = || fail(Reason::TopologySpread, SPREAD);
    run(
        "PodTopologySpread",
        vec![
            case(
                "zone: adding to the fuller zone",
                nodes(),
                vec![on(web("w1"), "a1")],
                zone1(web("p")),
                "a2",
                skewed(),
            ),
            case("zone: adding to the emptier zone", nodes(), vec![on(web("w1"), "a1")], zone1(web("p")), "b1", ok()),
            case(
                "zone: skew exactly maxSkew",
                nodes(),
                vec![on(web("w1"), "a1"), on(web("w2"), "a1")],
                spread(web("p"), json!([tsc(ZONE, 3)])),
                "a2",
                ok(),
            ),
            case(
                "zone: skew above maxSkew",
                nodes(),
                vec![on(web("w1"), "a1"), on(web("w2"), "a1")],
                spread(web("p"), json!([tsc(ZONE, 2)])),
                "a2",
                skewed(),
            ),
            case(
                "zone: balanced domains",
                nodes(),
                vec![on(web("w1"), "a1"), on(web("w2"), "b1")],
                zone1(web("p")),
                "a2",
                ok(),
            ),
            case(
                "selfMatch: a pod outside the selector adds nothing",
                nodes(),
                vec![on(web("w1"), "a1")],
                zone1(app("p", "api")),
                "a2",
                ok(),
            ),
            case(
                "selfMatch: a pod outside the selector still may not exceed",
                nodes(),
                vec![on(web("w1"), "a1"), on(web("w2"), "a1")],
                zone1(app("p", "api")),
                "a2",
                skewed(),
            ),
            case(
                "hostname: node already has one",
                nodes(),
                vec![on(web("w1"), "a1")],
                spread(web("p"), json!([tsc(HOST, 1)])),
                "a1",
                skewed(),
            ),
            case(
                "hostname: another node in the same zone",
                nodes(),
                vec![on(web("w1"), "a1")],
                spread(web("p"), json!([tsc(HOST, 1)])),
                "a2",
                ok(),
            ),
            case(
                "hostname: every node has one",
                nodes(),
                vec![on(web("w1"), "a1"), on(web("w2"), "a2"), on(web("w3"), "b1")],
                spread(web("p"), json!([tsc(HOST, 1)])),
                "a1",
                ok(),
            ),
            case(
                "node without the topology label",
                vec![zoned("a1", "a"), node("bare")],
                vec![],
                zone1(web("p")),
                "bare",
                fail(Reason::TopologySpreadMissingLabel, SPREAD_LABEL),
            ),
            case(
                "ScheduleAnyway is not a filter",
                nodes(),
                vec![on(web("w1"), "a1"), on(web("w2"), "a1")],
                spread(web("p"), json!([merge(tsc(ZONE, 1), &[], json!({"whenUnsatisfiable": "ScheduleAnyway"}))])),
                "a2",
                ok(),
            ),
            case(
                "only pods in the pod's namespace count",
                nodes(),
                vec![on(meta(web("w1"), json!({"namespace": "other"})), "a1")],
                zone1(web("p")),
                "a2",
                ok(),
            ),
            case(
                "selector with matchExpressions",
                nodes(),
                vec![on(app("w1", "api"), "a1")],
                spread(
                    web("p"),
                    json!([merge(
                        tsc(ZONE, 1),
                        &["labelSelector"],
                        json!({"matchLabels": null, "matchExpressions": [expr("app", "In", &["web", "api"])]})
                    )]),
                ),
                "a2",
                skewed(),
            ),
            case(
                "minDomains above the domain count makes the global minimum 0",
                nodes(),
                vec![on(web("w1"), "a1"), on(web("w2"), "b1")],
                spread(web("p"), json!([merge(tsc(ZONE, 1), &[], json!({"minDomains": 3}))])),
                "a2",
                skewed(),
            ),
            case(
                "minDomains met",
                nodes(),
                vec![on(web("w1"), "a1"), on(web("w2"), "b1")],
                spread(web("p"), json!([merge(tsc(ZONE, 1), &[], json!({"minDomains": 2}))])),
                "a2",
                ok(),
            ),
            case(
                "nodeSelector: zones the pod cannot go to are not domains",
                nodes(),
                vec![on(web("w1"), "a1")],
                spec(zone1(web("p")), json!({"nodeSelector": {ZONE: "a"}})),
                "a2",
                ok(),
            ),
            case(
                "required node affinity: zones the pod cannot go to are not domains",
                nodes(),
                vec![on(web("w1"), "a1")],
                affinity(zone1(web("p")), node_terms(json!([{"matchExpressions": [expr(ZONE, "In", &["a"])]}]))),
                "a2",
                ok(),
            ),
            case(
                "tainted nodes still are domains (nodeTaintsPolicy Ignore)",
                vec![
                    zoned("a1", "a"),
                    zoned("a2", "a"),
                    taints(zoned("b1", "b"), json!([{"key": "x", "effect": "NoSchedule"}])),
                ],
                vec![on(web("w1"), "a1")],
                zone1(web("p")),
                "a2",
                skewed(),
            ),
            case(
                "pods on nodes the pod cannot go to are not counted",
                vec![
                    labels(zoned("a1", "a"), json!({"disk": "ssd"})),
                    zoned("a2", "a"),
                    labels(zoned("b1", "b"), json!({"disk": "ssd"})),
                ],
                vec![on(web("w1"), "a2"), on(web("w2"), "a2")],
                spec(zone1(web("p")), json!({"nodeSelector": {"disk": "ssd"}})),
                "a1",
                ok(),
            ),
            case(
                "terminating pods are not counted",
                nodes(),
                vec![on(meta(web("w1"), json!({"deletionTimestamp": "2025-01-01T00:00:00Z"})), "a1")],
                zone1(web("p")),
                "a2",
                ok(),
            ),
            case(
                "a node missing any constraint's key is no domain for the others",
                vec![zoned("a1", "a"), zoned("a2", "a"), node("x")],
                vec![on(web("w1"), "a1"), on(web("w2"), "a2")],
                spread(web("p"), json!([tsc(ZONE, 1), tsc(HOST, 1)])),
                "a1",
                ok(),
            ),
            case(
                "an empty labelSelector counts no pods",
                nodes(),
                vec![on(web("w1"), "a1"), on(web("w2"), "a1")],
                spread(web("p"), json!([merge(tsc(ZONE, 1), &[], json!({"labelSelector": {}}))])),
                "a2",
                ok(),
            ),
            case(
                "every constraint must hold",
                nodes(),
                vec![on(web("w1"), "a1")],
                spread(web("p"), json!([tsc(ZONE, 2), tsc(HOST, 1)])),
                "a1",
                skewed(),
            ),
            case(
                "two constraints that hold",
                nodes(),
                vec![on(web("w1"), "a1")],
                spread(web("p"), json!([tsc(ZONE, 2), tsc(HOST, 1)])),
                "a2",
                ok(),
            ),
        ],
    );
}

// ----- InterPodAffinity --------------------------------------------------------------------------

#[test]
fn inter_pod_affinity() {
    let nodes = || vec![zoned("a1", "a"), zoned("a2", "a"), zoned("b1", "b")];
    let db = |name: &str| app(name, "db");
    let near_db = |p: Value, key: &str| affinity(p, pod_affinity(json!([term(key, json!({"app": "db"}))])));
    let away_from_web = |p: Value, key: &str| affinity(p, pod_anti_affinity(json!([term(key, json!({"app": "web"}))])));
    let aff = || fail(Reason::PodAffinity, POD_AFFINITY);
    let anti = || fail(Reason::PodAntiAffinity, POD_ANTI_AFFINITY);
    let existing_anti = || fail(Reason::ExistingAntiAffinity, EXISTING_ANTI_AFFINITY);
    run(
        "InterPodAffinity",
        vec![
            // Required affinity.
            case("affinity: same node", nodes(), vec![on(db("d"), "a1")], near_db(pod("p"), HOST), "a1", ok()),
            case("affinity: other node", nodes(), vec![on(db("d"), "a1")], near_db(pod("p"), HOST), "a2", aff()),
            case("affinity: same zone", nodes(), vec![on(db("d"), "a1")], near_db(pod("p"), ZONE), "a2", ok()),
            case("affinity: other zone", nodes(), vec![on(db("d"), "a1")], near_db(pod("p"), ZONE), "b1", aff()),
            case("affinity: no matching pod at all", nodes(), vec![], near_db(pod("p"), ZONE), "a1", aff()),
            case(
                "affinity: pods of other namespaces do not count",
                nodes(),
                vec![on(meta(db("d"), json!({"namespace": "other"})), "a1")],
                near_db(pod("p"), HOST),
                "a1",
                aff(),
            ),
            case(
                "affinity: term namespaces",
                nodes(),
                vec![on(meta(db("d"), json!({"namespace": "other"})), "a1")],
                affinity(
                    pod("p"),
                    pod_affinity(json!([merge(
                        term(HOST, json!({"app": "db"})),
                        &[],
                        json!({"namespaces": ["other"]})
                    )])),
                ),
                "a1",
                ok(),
            ),
            case(
                "affinity: empty namespaceSelector means all namespaces",
                nodes(),
                vec![on(meta(db("d"), json!({"namespace": "other"})), "a1")],
                affinity(
                    pod("p"),
                    pod_affinity(json!([merge(
                        term(HOST, json!({"app": "db"})),
                        &[],
                        json!({"namespaceSelector": {}})
                    )])),
                ),
                "a1",
                ok(),
            ),
            case(
                "affinity: first pod matching its own term may go anywhere",
                nodes(),
                vec![on(web("w"), "b1")],
                near_db(db("p"), ZONE),
                "a1",
                ok(),
            ),
            case(
                "affinity: no first-pod exception once a matching pod exists",
                nodes(),
                vec![on(db("d"), "b1")],
                near_db(db("p"), ZONE),
                "a1",
                aff(),
            ),
            case(
                "affinity: first-pod exception needs the topology label on the node",
                nodes(),
                vec![],
                near_db(db("p"), "example.com/rack"),
                "a1",
                aff(),
            ),
            case(
                "affinity: node without the topology label",
                vec![zoned("a1", "a"), node("bare")],
                vec![on(db("d"), "a1"), on(db("e"), "bare")],
                near_db(pod("p"), ZONE),
                "bare",
                aff(),
            ),
            case(
                "affinity: several terms must be met by one pod",
                nodes(),
                vec![on(db("d"), "a1"), on(labels(pod("c"), json!({"tier": "cache"})), "a1")],
                affinity(
                    pod("p"),
                    pod_affinity(json!([term(HOST, json!({"app": "db"})), term(HOST, json!({"tier": "cache"}))])),
                ),
                "a1",
                aff(),
            ),
            case(
                "affinity: several terms met by one pod",
                nodes(),
                vec![on(labels(db("d"), json!({"tier": "cache"})), "a1")],
                affinity(
                    pod("p"),
                    pod_affinity(json!([term(HOST, json!({"app": "db"})), term(ZONE, json!({"tier": "cache"}))])),
                ),
                "a1",
                ok(),
            ),
            case(
                "affinity: first-pod exception when the only match is on a node without the key",
                vec![zoned("a1", "a"), node("bare")],
                vec![on(db("d"), "bare")],
                near_db(db("p"), ZONE),
                "a1",
                ok(),
            ),
            case(
                "affinity: preferred terms are not a filter",
                nodes(),
                vec![],
                affinity(
                    pod("p"),
                    json!({"podAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                        {"weight": 10, "podAffinityTerm": term(HOST, json!({"app": "db"}))},
                    ]}}),
                ),
                "a1",
                ok(),
            ),
            // Required anti-affinity.
            case(
                "anti-affinity: hostname, same node",
                nodes(),
                vec![on(web("w"), "a1")],
                away_from_web(pod("p"), HOST),
                "a1",
                anti(),
            ),
            case(
                "anti-affinity: hostname, other node",
                nodes(),
                vec![on(web("w"), "a1")],
                away_from_web(pod("p"), HOST),
                "a2",
                ok(),
            ),
            case(
                "anti-affinity: zone, same zone",
                nodes(),
                vec![on(web("w"), "a1")],
                away_from_web(pod("p"), ZONE),
                "a2",
                anti(),
            ),
            case(
                "anti-affinity: zone, other zone",
                nodes(),
                vec![on(web("w"), "a1")],
                away_from_web(pod("p"), ZONE),
                "b1",
                ok(),
            ),
            case(
                "anti-affinity: the pod itself does not count",
                nodes(),
                vec![],
                away_from_web(web("p"), HOST),
                "a1",
                ok(),
            ),
            case(
                "anti-affinity: pods of other namespaces do not count",
                nodes(),
                vec![on(meta(web("w"), json!({"namespace": "other"})), "a1")],
                away_from_web(pod("p"), HOST),
                "a1",
                ok(),
            ),
            case(
                "anti-affinity: preferred terms are not a filter",
                nodes(),
                vec![on(web("w"), "a1")],
                affinity(
                    pod("p"),
                    json!({"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                        {"weight": 10, "podAffinityTerm": term(HOST, json!({"app": "web"}))},
                    ]}}),
                ),
                "a1",
                ok(),
            ),
            case(
                "affinity is reported before anti-affinity",
                nodes(),
                vec![on(web("w"), "a1")],
                away_from_web(near_db(pod("p"), HOST), HOST),
                "a1",
                aff(),
            ),
            // Existing pods' anti-affinity (symmetry).
            case(
                "existing anti-affinity: hostname, same node",
                nodes(),
                vec![on(away_from_web(pod("lonely"), HOST), "a1")],
                web("p"),
                "a1",
                existing_anti(),
            ),
            case(
                "existing anti-affinity: hostname, other node",
                nodes(),
                vec![on(away_from_web(pod("lonely"), HOST), "a1")],
                web("p"),
                "a2",
                ok(),
            ),
            case(
                "existing anti-affinity: zone, same zone",
                nodes(),
                vec![on(away_from_web(pod("lonely"), ZONE), "a1")],
                web("p"),
                "a2",
                existing_anti(),
            ),
            case(
                "existing anti-affinity: zone, other zone",
                nodes(),
                vec![on(away_from_web(pod("lonely"), ZONE), "a1")],
                web("p"),
                "b1",
                ok(),
            ),
            case(
                "existing anti-affinity: pod outside the selector",
                nodes(),
                vec![on(away_from_web(pod("lonely"), HOST), "a1")],
                app("p", "api"),
                "a1",
                ok(),
            ),
            case(
                "existing anti-affinity: scoped to the existing pod's namespace",
                nodes(),
                vec![on(meta(away_from_web(pod("lonely"), HOST), json!({"namespace": "other"})), "a1")],
                web("p"),
                "a1",
                ok(),
            ),
            case(
                "existing anti-affinity: preferred terms are not a filter",
                nodes(),
                vec![on(
                    affinity(
                        pod("lonely"),
                        json!({"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                            {"weight": 10, "podAffinityTerm": term(HOST, json!({"app": "web"}))},
                        ]}}),
                    ),
                    "a1",
                )],
                web("p"),
                "a1",
                ok(),
            ),
            case(
                "existing anti-affinity is reported after the pod's own anti-affinity",
                nodes(),
                vec![on(away_from_web(web("lonely"), HOST), "a1")],
                away_from_web(web("p"), HOST),
                "a1",
                anti(),
            ),
        ],
    );
}
