#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]
//! The admission webhook's pod mutation: what the hamster pod gets, when nothing is changed,
//! and that no request body whatsoever makes it fail or block a pod.

use base64::Engine;
use k8s_openapi::api::core::v1::LimitRange;
use kube::core::DeserializeGuard;
use kube::runtime::reflector;
use omniscale_api::Autoscaler;
use omniscale_operator::vertical::review;
use proptest::prelude::*;
use serde_json::{Value, json};
use std::sync::Arc;

fn hamster(mode: &str, update_mode: &str) -> Arc<DeserializeGuard<Autoscaler>> {
    let a: Autoscaler = serde_json::from_value(json!({
        "apiVersion": "omniscale.dev/v1alpha1", "kind": "Autoscaler",
        "metadata": {"name": "hamster", "namespace": "default", "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"mode": mode, "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "hamster"},
            "vertical": {"updatePolicy": {"updateMode": update_mode}}},
        "status": {"vertical": {"recommendation": {"containerRecommendations": [{
            "containerName": "hamster", "target": {"cpu": "587m", "memory": "262144k"}}]}}}
    }))
    .unwrap();
    Arc::new(DeserializeGuard(Ok(a)))
}

fn request(ns: &str, owner: &str) -> Value {
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": "0d1f", "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "namespace": ns, "operation": "CREATE",
        "object": {"metadata": {"generateName": "hamster-7c9d8b6f5-", "labels": {"app": "hamster"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": owner, "uid": "u", "controller": true}]},
            "spec": {"containers": [{"name": "hamster", "image": "x", "resources": {"requests": {"cpu": "100m", "memory": "50Mi"}}}]}}}})
}

fn answer(body: &[u8], autoscalers: &[Arc<DeserializeGuard<Autoscaler>>]) -> Value {
    let (ranges, _writer) = reflector::store::<LimitRange>();
    let out = review(body, autoscalers, &ranges);
    serde_json::from_slice(&out).unwrap()
}

fn patch_of(v: &Value) -> Vec<Value> {
    let b64 = v["response"]["patch"].as_str().unwrap();
    serde_json::from_slice(&base64::engine::general_purpose::STANDARD.decode(b64).unwrap()).unwrap()
}

#[test]
fn hamster_pod_gets_the_recommendation_and_annotations() {
    let v =
        answer(&serde_json::to_vec(&request("default", "hamster-7c9d8b6f5")).unwrap(), &[hamster("Auto", "Recreate")]);
    assert_eq!(v["kind"], "AdmissionReview");
    assert_eq!(v["response"]["uid"], "0d1f");
    assert_eq!(v["response"]["allowed"], true);
    assert_eq!(v["response"]["patchType"], "JSONPatch");
    let ops = patch_of(&v);
    let find = |path: &str| ops.iter().find(|o| o["path"] == path).map(|o| o["value"].clone());
    assert_eq!(find("/spec/containers/0/resources/requests/cpu"), Some(json!("587m")));
    assert_eq!(find("/spec/containers/0/resources/requests/memory"), Some(json!("262144k")));
    assert_eq!(
        find("/metadata/annotations/vpaUpdates"),
        Some(json!("Pod resources updated by hamster: container 0: cpu request, memory request"))
    );
    assert_eq!(find("/metadata/annotations/vpaObservedContainers"), Some(json!("hamster")));
}

#[test]
fn pods_the_autoscaler_does_not_control_are_left_alone() {
    let cases = [
        (request("other", "hamster-7c9d8b6f5"), hamster("Auto", "Recreate")),
        (request("default", "web-7c9d8b6f5"), hamster("Auto", "Recreate")),
        (request("default", "hamster-7c9d8b6f5"), hamster("Recommend", "Recreate")),
        (request("default", "hamster-7c9d8b6f5"), hamster("Auto", "Off")),
    ];
    for (req, a) in cases {
        let v = answer(&serde_json::to_vec(&req).unwrap(), &[a]);
        assert_eq!(v["response"]["allowed"], true);
        assert!(v["response"]["patch"].is_null(), "{req}");
    }
    // Initial mode applies at creation only: the webhook still sets requests.
    let v =
        answer(&serde_json::to_vec(&request("default", "hamster-7c9d8b6f5")).unwrap(), &[hamster("Auto", "Initial")]);
    assert!(v["response"]["patch"].is_string());
}

/// Any JSON value, a few levels deep.
fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        "[a-zA-Z0-9/._:-]{0,12}".prop_map(Value::String),
        prop_oneof![Just("Pod"), Just("CREATE"), Just("100m"), Just("-5"), Just("1e400"), Just("hamster")]
            .prop_map(|s| Value::String(s.into())),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("metadata".to_owned()),
                    Just("spec".to_owned()),
                    Just("containers".to_owned()),
                    Just("resources".to_owned()),
                    Just("requests".to_owned()),
                    Just("limits".to_owned()),
                    Just("name".to_owned()),
                    Just("ownerReferences".to_owned()),
                    "[a-z]{1,6}"
                ],
                inner,
                0..5
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_are_admitted_unchanged(body in prop::collection::vec(any::<u8>(), 0..512)) {
        let v = answer(&body, &[hamster("Auto", "Recreate")]);
        prop_assert_eq!(&v["response"]["allowed"], &json!(true));
        prop_assert!(v["response"]["patch"].is_null());
    }

    #[test]
    fn arbitrary_reviews_never_block_a_pod(object in arb_json(), ns in "[a-z]{0,8}", op in "[A-Z]{0,7}", uid in "[a-f0-9-]{0,12}") {
        let mut req = request("default", "hamster-7c9d8b6f5");
        req["request"]["object"] = object;
        req["request"]["uid"] = json!(uid);
        if !ns.is_empty() { req["request"]["namespace"] = json!(ns); }
        if !op.is_empty() { req["request"]["operation"] = json!(op); }
        let v = answer(&serde_json::to_vec(&req).unwrap(), &[hamster("Auto", "Recreate")]);
        prop_assert_eq!(&v["response"]["allowed"], &json!(true));
        prop_assert_eq!(&v["response"]["uid"], &json!(uid));
        if v["response"]["patch"].is_string() {
            // Whatever is patched is a well-formed JSON patch.
            for o in patch_of(&v) {
                prop_assert_eq!(&o["op"], &json!("add"));
                prop_assert!(o["path"].as_str().unwrap().starts_with('/'));
            }
        }
    }

    #[test]
    fn mangled_valid_reviews_never_block_a_pod(cut in 0usize..2000, flip in any::<u8>(), at in 0usize..2000) {
        let mut body = serde_json::to_vec(&request("default", "hamster-7c9d8b6f5")).unwrap();
        if at < body.len() { body[at] ^= flip; }
        body.truncate(cut.max(1));
        let v = answer(&body, &[hamster("Auto", "Recreate")]);
        prop_assert_eq!(&v["response"]["allowed"], &json!(true));
    }
}
