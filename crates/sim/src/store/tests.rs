use super::*;
use serde_json::json;

fn now() -> Timestamp {
    Timestamp::from_second(1_700_000_000).unwrap()
}

fn store() -> Store {
    Store::new(100, now())
}

fn rt(s: &Store, g: &str, v: &str, p: &str) -> ResourceType {
    s.registry.get(g, v, p).cloned().unwrap()
}

fn deployment(name: &str, replicas: i64) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "labels": {"app": name}},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}})
}

fn mgr(m: &str) -> WriteOptions {
    WriteOptions::manager(m)
}

#[test]
fn resource_versions_increase_and_stale_updates_conflict() {
    let mut s = store();
    let d = rt(&s, "apps", "v1", "deployments");
    let t = Target::new(&d, Some("default"), None);
    let created = s.create(&t, deployment("web", 1), &mgr("test"), now()).unwrap();
    let rv1: u64 = created["metadata"]["resourceVersion"].as_str().unwrap().parse().unwrap();
    assert_eq!(created["metadata"]["generation"], 1);
    let t = Target::new(&d, Some("default"), Some("web"));
    let mut changed = created.clone();
    changed["spec"]["replicas"] = json!(3);
    let updated = s.update(&t, changed.clone(), &mgr("test"), now()).unwrap();
    let rv2: u64 = updated["metadata"]["resourceVersion"].as_str().unwrap().parse().unwrap();
    assert!(rv2 > rv1);
    assert_eq!(updated["metadata"]["generation"], 2);
    let err = s.update(&t, changed, &mgr("test"), now()).unwrap_err();
    assert_eq!((err.code, err.reason), (409, "Conflict"));
    // A status write does not bump generation and ignores spec changes.
    let mut st = updated.clone();
    st["status"] = json!({"replicas": 3});
    st["spec"]["replicas"] = json!(7);
    let after = s.update(&t.clone().with_subresource("status"), st, &mgr("ctl"), now()).unwrap();
    assert_eq!(after["metadata"]["generation"], 2);
    assert_eq!(after["spec"]["replicas"], 3);
    assert_eq!(after["status"]["replicas"], 3);
    // A no-op write keeps the resourceVersion.
    let again = s.patch(&t, PatchType::Merge, &json!({"spec": {"replicas": 3}}), &mgr("test"), now()).unwrap();
    assert_eq!(again["metadata"]["resourceVersion"], after["metadata"]["resourceVersion"]);
}

#[test]
fn creation_errors_match_the_api_server() {
    let mut s = store();
    let d = rt(&s, "apps", "v1", "deployments");
    let err = s.create(&Target::new(&d, Some("nope"), None), deployment("a", 1), &mgr("t"), now()).unwrap_err();
    assert_eq!((err.code, err.message.as_str()), (404, "namespaces \"nope\" not found"));
    let t = Target::new(&d, Some("default"), None);
    s.create(&t, deployment("a", 1), &mgr("t"), now()).unwrap();
    assert_eq!(s.create(&t, deployment("a", 1), &mgr("t"), now()).unwrap_err().code, 409);
    let mut bad = deployment("b", 1);
    bad["spec"]["template"]["metadata"]["labels"] = json!({"app": "other"});
    let err = s.create(&t, bad, &mgr("t"), now()).unwrap_err();
    assert_eq!(err.code, 422);
    assert!(err.message.contains("selector"), "{}", err.message);
    let mut unknown = deployment("c", 1);
    unknown["spec"]["bogus"] = json!(1);
    let strict = WriteOptions { strict: true, ..mgr("t") };
    assert_eq!(s.create(&t, unknown.clone(), &strict, now()).unwrap_err().code, 400);
    let lenient = s.create(&t, unknown, &mgr("t"), now()).unwrap();
    assert!(lenient["spec"].get("bogus").is_none());
    let mut wrong = deployment("d", 1);
    wrong["spec"]["replicas"] = json!("three");
    assert_eq!(s.create(&t, wrong, &mgr("t"), now()).unwrap_err().code, 400);
    let generated = s
        .create(&t, json!({"metadata": {"generateName": "web-"}, "spec": deployment("x", 1)["spec"]}), &mgr("t"), now())
        .unwrap();
    assert!(generated["metadata"]["name"].as_str().unwrap().starts_with("web-"));
}

#[test]
fn finalizers_hold_deletion_until_removed() {
    let mut s = store();
    let cm = rt(&s, "", "v1", "configmaps");
    let t = Target::new(&cm, Some("default"), None);
    s.create(&t, json!({"metadata": {"name": "c", "finalizers": ["x/y"]}}), &mgr("t"), now()).unwrap();
    let t = Target::new(&cm, Some("default"), Some("c"));
    let d = s.delete(&t, &DeleteOptions::default(), now()).unwrap();
    assert!(d["metadata"]["deletionTimestamp"].is_string());
    assert!(s.get(&t).is_ok());
    s.patch(&t, PatchType::Merge, &json!({"metadata": {"finalizers": null}}), &mgr("t"), now()).unwrap();
    assert_eq!(s.get(&t).unwrap_err().code, 404);
}

#[test]
fn garbage_collector_deletes_orphans_and_respects_orphan_policy() {
    let mut s = store();
    let cm = rt(&s, "", "v1", "configmaps");
    let t = Target::new(&cm, Some("default"), None);
    let owner = s.create(&t, json!({"metadata": {"name": "owner"}}), &mgr("t"), now()).unwrap();
    let uid = owner["metadata"]["uid"].as_str().unwrap();
    let child = |n: &str| json!({"metadata": {"name": n, "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": uid}]}});
    s.create(&t, child("kid"), &mgr("t"), now()).unwrap();
    s.delete(&Target::new(&cm, Some("default"), Some("owner")), &DeleteOptions::default(), now()).unwrap();
    s.collect_garbage(now());
    assert_eq!(s.get(&Target::new(&cm, Some("default"), Some("kid"))).unwrap_err().code, 404);

    let owner = s.create(&t, json!({"metadata": {"name": "owner2"}}), &mgr("t"), now()).unwrap();
    let uid = owner["metadata"]["uid"].as_str().unwrap().to_owned();
    s.create(&t, json!({"metadata": {"name": "kid2", "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner2", "uid": uid}]}}), &mgr("t"), now()).unwrap();
    let orphan = DeleteOptions { propagation: Some("Orphan".into()), ..Default::default() };
    s.delete(&Target::new(&cm, Some("default"), Some("owner2")), &orphan, now()).unwrap();
    s.collect_garbage(now());
    let kid = s.get(&Target::new(&cm, Some("default"), Some("kid2"))).unwrap();
    assert!(kid["metadata"]["ownerReferences"].as_array().unwrap().is_empty());
}

#[test]
fn server_side_apply_tracks_owners_and_reports_conflicts() {
    let mut s = store();
    let d = rt(&s, "apps", "v1", "deployments");
    let t = Target::new(&d, Some("default"), Some("web"));
    let a = s.patch(&t, PatchType::Apply, &deployment("web", 2), &mgr("alice"), now()).unwrap();
    assert_eq!(a["spec"]["replicas"], 2);
    assert_eq!(a["metadata"]["managedFields"][0]["manager"], "alice");
    assert_eq!(a["metadata"]["managedFields"][0]["operation"], "Apply");
    let mut bob = deployment("web", 5);
    bob["metadata"]["labels"] = json!({"team": "b"});
    let err = s.patch(&t, PatchType::Apply, &bob, &mgr("bob"), now()).unwrap_err();
    assert_eq!(err.code, 409);
    assert!(err.message.contains("conflict with \"alice\": .spec.replicas"), "{}", err.message);
    let forced = s.patch(&t, PatchType::Apply, &bob, &WriteOptions { force: true, ..mgr("bob") }, now()).unwrap();
    assert_eq!(forced["spec"]["replicas"], 5);
    // Alice stops applying a label she owned alone: it is removed.
    let mut alice2 = deployment("web", 2);
    alice2["metadata"]["labels"] = json!({});
    alice2["spec"]["replicas"] = json!(5);
    let a2 = s.patch(&t, PatchType::Apply, &alice2, &mgr("alice"), now()).unwrap();
    assert!(a2["metadata"]["labels"].get("app").is_none(), "{}", a2["metadata"]);
    assert_eq!(a2["metadata"]["labels"]["team"], "b");
    // A merge patch by another manager takes the field without conflict.
    let c = s.patch(&t, PatchType::Merge, &json!({"spec": {"replicas": 1}}), &mgr("carol"), now()).unwrap();
    let owners: Vec<&str> =
        c["metadata"]["managedFields"].as_array().unwrap().iter().map(|m| m["manager"].as_str().unwrap()).collect();
    assert!(owners.contains(&"carol"));
}

#[test]
fn scale_subresource_reads_and_writes_replicas() {
    let mut s = store();
    let d = rt(&s, "apps", "v1", "deployments");
    s.create(&Target::new(&d, Some("default"), None), deployment("web", 2), &mgr("t"), now()).unwrap();
    let t = Target::new(&d, Some("default"), Some("web")).with_subresource("scale");
    let scale = s.get(&t).unwrap();
    assert_eq!(scale["kind"], "Scale");
    assert_eq!(scale["spec"]["replicas"], 2);
    assert_eq!(scale["status"]["selector"], "app=web");
    s.patch(&t, PatchType::Merge, &json!({"spec": {"replicas": 4}}), &mgr("hpa"), now()).unwrap();
    let dep = s.get(&Target::new(&d, Some("default"), Some("web"))).unwrap();
    assert_eq!(dep["spec"]["replicas"], 4);
    assert_eq!(dep["metadata"]["generation"], 2);
    let err = s.patch(&t, PatchType::Merge, &json!({"spec": {"replicas": -1}}), &mgr("hpa"), now()).unwrap_err();
    assert_eq!(err.code, 422);
}

#[test]
fn watch_history_is_bounded_and_lists_paginate() {
    let mut s = Store::new(5, now());
    let cm = rt(&s, "", "v1", "configmaps");
    let t = Target::new(&cm, Some("default"), None);
    let start = s.resource_version();
    for i in 0..10 {
        s.create(&t, json!({"metadata": {"name": format!("c{i}")}}), &mgr("t"), now()).unwrap();
    }
    assert!(s.events_since(&cm.key(), start).is_none(), "old versions are compacted");
    let recent = s.events_since(&cm.key(), s.resource_version() - 2).unwrap();
    assert_eq!(recent.len(), 2);
    let page = s.list(&t, &ListOptions { limit: Some(4), ..Default::default() }).unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 4);
    let token = page["metadata"]["continue"].as_str().unwrap().to_owned();
    let page2 = s.list(&t, &ListOptions { limit: Some(100), continue_: Some(token), ..Default::default() }).unwrap();
    assert_eq!(page2["items"].as_array().unwrap().len(), 6);
    assert!(page2["metadata"].get("continue").is_none());
    assert_eq!(s.list(&t, &ListOptions { continue_: Some("zz".into()), ..Default::default() }).unwrap_err().code, 400);
}

#[test]
fn pods_delete_gracefully_when_bound() {
    let mut s = store();
    let p = rt(&s, "", "v1", "pods");
    let t = Target::new(&p, Some("default"), None);
    let pod = json!({"metadata": {"name": "p"}, "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "i",
        "resources": {"requests": {"cpu": "1"}, "limits": {"cpu": "1"}}}]}});
    let created = s.create(&t, pod, &mgr("t"), now()).unwrap();
    assert_eq!(created["status"]["phase"], "Pending");
    assert_eq!(created["status"]["qosClass"], "Burstable");
    let t = Target::new(&p, Some("default"), Some("p"));
    let d = s.delete(&t, &DeleteOptions::default(), now()).unwrap();
    assert_eq!(d["metadata"]["deletionGracePeriodSeconds"], 30);
    assert!(s.get(&t).is_ok());
    s.delete(&t, &DeleteOptions { grace_period: Some(0), ..Default::default() }, now()).unwrap();
    assert_eq!(s.get(&t).unwrap_err().code, 404);
    // Spec changes other than images are forbidden.
    s.create(
        &Target::new(&p, Some("default"), None),
        json!({"metadata": {"name": "q"}, "spec": {"containers": [{"name": "c", "image": "i"}]}}),
        &mgr("t"),
        now(),
    )
    .unwrap();
    let q = Target::new(&p, Some("default"), Some("q"));
    let err = s
        .patch(
            &q,
            PatchType::Strategic,
            &json!({"spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": "2"}}}]}}),
            &mgr("t"),
            now(),
        )
        .unwrap_err();
    assert_eq!(err.code, 422);
    let ok = s
        .patch(
            &q.clone().with_subresource("resize"),
            PatchType::Strategic,
            &json!({"spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": "2"}}}]}}),
            &mgr("t"),
            now(),
        )
        .unwrap();
    assert_eq!(ok["spec"]["containers"][0]["resources"]["requests"]["cpu"], "2");
}

#[test]
fn crds_register_types_and_validate_custom_resources() {
    let mut s = store();
    let crd_rt = rt(&s, "apiextensions.k8s.io", "v1", "customresourcedefinitions");
    for crd in omniscale_api::crds() {
        let body = serde_json::to_value(&crd).unwrap();
        s.create(&Target::new(&crd_rt, None, None), body, &mgr("kubectl"), now()).unwrap();
    }
    let a = s.registry.get("omniscale.dev", "v1alpha1", "autoscalers").cloned().unwrap();
    let t = Target::new(&a, Some("default"), None);
    let ok = s
        .create(&t, json!({"apiVersion": "omniscale.dev/v1alpha1", "kind": "Autoscaler", "metadata": {"name": "x"},
            "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}, "horizontal": {"maxReplicas": 3}}}), &mgr("t"), now())
        .unwrap();
    assert_eq!(ok["spec"]["mode"], "Auto", "defaults applied");
    let err = s
        .create(&t, json!({"apiVersion": "omniscale.dev/v1alpha1", "kind": "Autoscaler", "metadata": {"name": "y"},
            "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}, "horizontal": {"minReplicas": 5, "maxReplicas": 3}}}), &mgr("t"), now())
        .unwrap_err();
    assert_eq!(err.code, 422, "{}", err.message);
    let err = s
        .patch(&Target::new(&a, Some("default"), Some("x")), PatchType::Strategic, &json!({}), &mgr("t"), now())
        .unwrap_err();
    assert_eq!(err.code, 415);
    s.delete(&Target::new(&crd_rt, None, Some("autoscalers.omniscale.dev")), &DeleteOptions::default(), now()).unwrap();
    assert!(s.registry.get("omniscale.dev", "v1alpha1", "autoscalers").is_none());
}

#[test]
fn crd_enum_values_must_match_their_type() {
    let mut s = store();
    let crd_rt = rt(&s, "apiextensions.k8s.io", "v1", "customresourcedefinitions");
    let crd = json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition", "metadata": {"name": "foos.x.dev"},
        "spec": {"group": "x.dev", "scope": "Namespaced", "names": {"plural": "foos", "kind": "Foo"},
          "versions": [{"name": "v1", "served": true, "storage": true, "schema": {"openAPIV3Schema": {"type": "object", "properties": {
              "mode": {"type": "string", "enum": ["Auto", false]}}}}}]}});
    let err = s.create(&Target::new(&crd_rt, None, None), crd, &mgr("t"), now()).unwrap_err();
    assert_eq!(err.code, 422);
    assert!(err.message.contains("properties[mode].enum[1]"), "{}", err.message);
}

#[test]
fn admission_capture_then_replace_validates_the_mutated_object_and_detects_staleness() {
    let mut s = store();
    let d = rt(&s, "apps", "v1", "deployments");
    let t = Target::new(&d, Some("default"), None);
    let mut body = deployment("web", 1);
    body["metadata"]["name"] = json!(null);
    body["metadata"]["generateName"] = json!("web-");
    // Capture: a dry run that records the defaulted object, before its name is generated.
    let capture = WriteOptions { dry_run: true, admission: Admission::Capture, ..mgr("t") };
    s.create(&t, body.clone(), &capture, now()).unwrap();
    let c = s.take_captured().unwrap();
    assert!(c.old.is_none());
    assert_eq!(c.object["metadata"]["name"], json!(null));
    assert_eq!(c.object["spec"]["revisionHistoryLimit"], 10, "defaulted before admission");
    assert!(s.all(&d.key(), None).is_empty(), "a capture writes nothing");
    // Replace: the webhook's object is validated (after mutation) and stored with a generated name.
    let mut invalid = c.object.clone();
    invalid["spec"]["replicas"] = json!(-1);
    let replace = |o: &Value| WriteOptions {
        admission: Admission::Replace { object: Arc::new(o.clone()), old_rv: None },
        ..mgr("t")
    };
    assert_eq!(s.create(&t, body.clone(), &replace(&invalid), now()).unwrap_err().code, 422);
    let mut mutated = c.object.clone();
    mutated["spec"]["replicas"] = json!(4);
    let created = s.create(&t, body, &replace(&mutated), now()).unwrap();
    assert_eq!(created["spec"]["replicas"], 4);
    assert!(created["metadata"]["name"].as_str().unwrap().starts_with("web-"));
    // An update whose object changed since the capture is stale and must be redone.
    let name = created["metadata"]["name"].as_str().unwrap().to_owned();
    let t = Target::new(&d, Some("default"), Some(&name));
    let patch = json!({"spec": {"replicas": 5}});
    let stale = WriteOptions {
        admission: Admission::Replace { object: Arc::new(created.clone()), old_rv: Some("1".into()) },
        ..mgr("t")
    };
    let e = s.patch(&t, PatchType::Merge, &patch, &stale, now()).unwrap_err();
    assert!(e.stale && e.code == 409);
}
