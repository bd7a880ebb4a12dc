#![allow(clippy::unwrap_used, clippy::panic)]

use super::*;
use crate::registry::Registry;

fn rt(g: &str, v: &str, p: &str) -> ResourceType {
    Registry::default().get(g, v, p).cloned().unwrap()
}

fn rule(v: Value) -> Rule {
    Rule::parse(&v)
}

#[test]
fn resource_patterns_follow_upstream_matcher() {
    let pods = rt("", "v1", "pods");
    let base = |resources: Value| {
        rule(json!({"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": resources}))
    };
    // (resources, subresource, matches)
    let cases = [
        (json!(["pods"]), None, true),
        (json!(["pods"]), Some("status"), false),
        (json!(["pods/status"]), Some("status"), true),
        (json!(["pods/status"]), None, false),
        (json!(["pods/*"]), None, true),
        (json!(["pods/*"]), Some("resize"), true),
        (json!(["*"]), None, true),
        (json!(["*"]), Some("status"), false),
        (json!(["*/*"]), Some("status"), true),
        (json!(["*/status"]), Some("status"), true),
        (json!(["deployments"]), None, false),
    ];
    for (resources, sub, want) in cases {
        assert_eq!(base(resources.clone()).matches("CREATE", &pods, sub), want, "{resources} {sub:?}");
    }
}

#[test]
fn operations_groups_versions_and_scope() {
    let pods = rt("", "v1", "pods");
    let nodes = rt("", "v1", "nodes");
    let deploys = rt("apps", "v1", "deployments");
    let r = rule(json!({"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["*"]}));
    assert!(r.matches("CREATE", &pods, None));
    assert!(!r.matches("UPDATE", &pods, None));
    assert!(!r.matches("CREATE", &deploys, None), "group must match");
    let any = rule(json!({"operations": ["*"], "apiGroups": ["*"], "apiVersions": ["*"], "resources": ["*"]}));
    assert!(any.matches("UPDATE", &deploys, None));
    let v2 = rule(json!({"operations": ["*"], "apiGroups": ["*"], "apiVersions": ["v2"], "resources": ["*"]}));
    assert!(!v2.matches("CREATE", &pods, None), "version must match");
    let namespaced = rule(
        json!({"operations": ["*"], "apiGroups": ["*"], "apiVersions": ["*"], "resources": ["*"], "scope": "Namespaced"}),
    );
    assert!(namespaced.matches("CREATE", &pods, None) && !namespaced.matches("CREATE", &nodes, None));
    let cluster = rule(
        json!({"operations": ["*"], "apiGroups": ["*"], "apiVersions": ["*"], "resources": ["*"], "scope": "Cluster"}),
    );
    assert!(!cluster.matches("CREATE", &pods, None) && cluster.matches("CREATE", &nodes, None));
}

fn hook(ns_sel: Value, obj_sel: Value) -> Hook {
    let store = Store::new(10, jiff::Timestamp::UNIX_EPOCH);
    Hook::parse(
        &json!({"name": "h.example.com", "rules": [{"operations": ["CREATE", "UPDATE"], "apiGroups": ["*"],
            "apiVersions": ["*"], "resources": ["*"]}], "namespaceSelector": ns_sel, "objectSelector": obj_sel,
            "clientConfig": {"url": "https://127.0.0.1:1/x"}}),
        &store,
        &HashMap::new(),
    )
}

#[test]
fn selectors_use_namespace_labels_and_old_or_new_object_labels() {
    let pods = rt("", "v1", "pods");
    let namespaces = rt("", "v1", "namespaces");
    let labelled = json!({"metadata": {"name": "p", "labels": {"inject": "yes"}}});
    let plain = json!({"metadata": {"name": "p"}});
    let selects = |h: &Hook, object: &Value, old: Option<&Value>, rt: &ResourceType, ns: &BTreeMap<String, String>| {
        let operation = if old.is_some() { "UPDATE" } else { "CREATE" };
        h.selects(&Request { rt, sub: None, operation, namespace: Some("default"), object, old }, ns)
    };
    let ns_default: BTreeMap<String, String> =
        [("kubernetes.io/metadata.name".to_owned(), "default".to_owned())].into();
    let ns_system: BTreeMap<String, String> =
        [("kubernetes.io/metadata.name".to_owned(), "kube-system".to_owned())].into();

    let not_system = hook(
        json!({"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["kube-system"]}]}),
        json!({}),
    );
    assert!(selects(&not_system, &plain, None, &pods, &ns_default));
    assert!(!selects(&not_system, &plain, None, &pods, &ns_system));

    let inject = hook(json!({}), json!({"matchLabels": {"inject": "yes"}}));
    assert!(selects(&inject, &labelled, None, &pods, &ns_default));
    assert!(!selects(&inject, &plain, None, &pods, &ns_default));
    // An update that removes the label is still sent: the old object matched.
    assert!(selects(&inject, &plain, Some(&labelled), &pods, &ns_default));

    // For a Namespace, the namespaceSelector looks at the object itself.
    let on_inject_ns = hook(json!({"matchLabels": {"inject": "yes"}}), json!({}));
    assert!(selects(&on_inject_ns, &labelled, None, &namespaces, &BTreeMap::new()));
    assert!(!selects(&on_inject_ns, &plain, None, &namespaces, &BTreeMap::new()));
}

fn answer(uid: &str, extra: Value) -> Value {
    let mut r = json!({"uid": uid, "allowed": true});
    if let (Some(m), Some(e)) = (r.as_object_mut(), extra.as_object()) {
        m.extend(e.clone());
    }
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": r})
}

fn b64(v: &Value) -> String {
    base64::engine::general_purpose::STANDARD.encode(serde_json::to_vec(v).unwrap())
}

#[test]
fn responses_patch_deny_or_fail() {
    let obj = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c"}]}});
    // Allowed without a patch: unchanged.
    assert_eq!(respond("h", "u1", &answer("u1", json!({})), &obj).unwrap(), obj);
    // A JSON patch is applied.
    let ops = json!([{"op": "add", "path": "/metadata/labels", "value": {"a": "b"}}]);
    let out = respond("h", "u1", &answer("u1", json!({"patchType": "JSONPatch", "patch": b64(&ops)})), &obj).unwrap();
    assert_eq!(out["metadata"]["labels"]["a"], "b");
    // Wrong uid, wrong kind, patch without JSONPatch type: call failures (failure policy decides).
    for bad in [
        answer("other", json!({})),
        json!({"apiVersion": "v1", "kind": "Status"}),
        answer("u1", json!({"patch": b64(&ops)})),
    ] {
        assert!(matches!(respond("h", "u1", &bad, &obj), Err(Failure::Call(_))), "{bad}");
    }
    // A patch that cannot apply rejects whatever the policy.
    let broken = json!([{"op": "replace", "path": "/nope/x", "value": 1}]);
    match respond("h", "u1", &answer("u1", json!({"patchType": "JSONPatch", "patch": b64(&broken)})), &obj) {
        Err(Failure::Reject(e)) => assert_eq!(e.code, 500),
        other => panic!("{other:?}"),
    }
    match respond("h", "u1", &answer("u1", json!({"patchType": "JSONPatch", "patch": "%%%"})), &obj) {
        Err(Failure::Reject(e)) => assert!(e.message.contains("not base64"), "{}", e.message),
        other => panic!("{other:?}"),
    }
}

#[test]
fn denials_carry_the_webhooks_code_and_message() {
    let deny = |status: Value| {
        let r = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "response": {"uid": "u", "allowed": false, "status": status}});
        match respond("policy.example.com", "u", &r, &json!({})) {
            Err(Failure::Reject(e)) => e,
            other => panic!("{other:?}"),
        }
    };
    let e = deny(json!({"code": 403, "message": "no privileged pods"}));
    assert_eq!((e.code, e.reason), (403, "Forbidden"));
    assert_eq!(e.message, "admission webhook \"policy.example.com\" denied the request: no privileged pods");
    let e = deny(json!({"code": 200, "reason": "Because"}));
    assert_eq!(e.code, 400, "a non-error code becomes 400");
    assert!(e.message.ends_with("denied the request: Because"));
    let e = deny(Value::Null);
    assert_eq!(e.message, "admission webhook \"policy.example.com\" denied the request without explanation");
}

#[test]
fn service_endpoints_resolve_to_target_ports_or_routes() {
    let mut store = Store::new(10, jiff::Timestamp::UNIX_EPOCH);
    let svc_rt = store.registry.get("", "v1", "services").cloned().unwrap();
    let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "hook", "namespace": "default"},
        "spec": {"ports": [{"port": 443, "targetPort": 9443}]}});
    store
        .create(
            &Target::new(&svc_rt, Some("default"), None),
            svc,
            &WriteOptions::manager("t"),
            jiff::Timestamp::UNIX_EPOCH,
        )
        .unwrap();
    let cc = json!({"service": {"namespace": "default", "name": "hook", "path": "/mutate", "port": 443}});
    let ep = resolve(&cc, 5, &store, &HashMap::new()).unwrap();
    assert_eq!(ep.connect, "127.0.0.1:9443");
    assert_eq!(ep.server_name, "hook.default.svc");
    assert_eq!(ep.url, "https://hook.default.svc:443/mutate?timeout=5s");
    let routed: SocketAddr = "127.0.0.1:7000".parse().unwrap();
    let routes = HashMap::from([(("default".to_owned(), "hook".to_owned()), routed)]);
    assert_eq!(resolve(&cc, 5, &store, &routes).unwrap().connect, "127.0.0.1:7000");
    let missing = json!({"service": {"namespace": "default", "name": "gone", "port": 443}});
    assert_eq!(resolve(&missing, 5, &store, &HashMap::new()).unwrap_err(), "service \"gone\" not found");
    let url = resolve(&json!({"url": "https://127.0.0.1:8443/m"}), 10, &store, &HashMap::new()).unwrap();
    assert_eq!((url.connect.as_str(), url.path_and_query.as_str()), ("127.0.0.1:8443", "/m?timeout=10s"));
}
