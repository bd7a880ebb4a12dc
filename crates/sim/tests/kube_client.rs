#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]
//! kube-rs against the simulated API server over real HTTP: watchers and reflectors through
//! 410 Gone, server-closed watches and bookmarks; optimistic concurrency; eviction and PDBs.

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, EvictParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use omniscale_sim::runtime::{Running, SimOptions};
mod common;
use common::eventually;
use serde_json::json;
use std::time::Duration;

async fn start(max_watch: Duration) -> (Running, kube::Client) {
    let opts = SimOptions {
        speed: 40.0,
        history: 50,
        max_watch,
        bookmark_every: Duration::from_millis(100),
        tick: 1.0,
        ..SimOptions::default()
    };
    common::start(opts).await
}

fn cm(name: &str) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name}, "data": {"k": "v"}})).unwrap()
}

#[tokio::test]
async fn reflector_survives_gone_and_server_closed_watches() {
    let (sim, client) = start(Duration::from_millis(400)).await;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let (reader, writer) = reflector::store();
    let stream = reflector(writer, watcher(api.clone(), watcher::Config::default())).applied_objects();
    let task = tokio::spawn(async move {
        let mut s = std::pin::pin!(stream);
        while let Some(r) = s.next().await {
            // Errors (410, closed streams) are retried by the watcher's default backoff.
            let _ = r;
        }
    });
    for i in 0..5 {
        api.create(&PostParams::default(), &cm(&format!("a{i}"))).await.unwrap();
    }
    eventually("5 objects in the reflector", || async { reader.state().len() == 5 }).await;
    // Expire all history: the next resume gets 410 and the watcher must relist.
    sim.cluster.store().compact();
    for i in 0..60 {
        api.create(&PostParams::default(), &cm(&format!("b{i}"))).await.unwrap();
    }
    api.delete("a0", &Default::default()).await.unwrap();
    eventually("reflector converged after 410 and reconnects", || async { reader.state().len() == 64 }).await;
    assert!(reader.get(&reflector::ObjectRef::new("a0").within("default")).is_none());
    task.abort();
    sim.shutdown().await;
}

#[tokio::test]
async fn raw_watch_sees_bookmarks_and_gone() {
    let (sim, client) = start(Duration::from_secs(5)).await;
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    let list = api.list(&ListParams::default()).await.unwrap();
    let rv = list.metadata.resource_version.unwrap();
    api.create(&PostParams::default(), &cm("w1")).await.unwrap();
    let mut events = api.watch(&WatchParams::default(), &rv).await.unwrap().boxed();
    let mut saw_added = false;
    let mut saw_bookmark = false;
    while !(saw_added && saw_bookmark) {
        match tokio::time::timeout(Duration::from_secs(5), events.try_next()).await.unwrap().unwrap() {
            Some(WatchEvent::Added(c)) => saw_added |= c.metadata.name.as_deref() == Some("w1"),
            Some(WatchEvent::Bookmark(_)) => saw_bookmark = true,
            other => panic!("unexpected {other:?}"),
        }
    }
    sim.cluster.store().compact();
    let mut stale = api.watch(&WatchParams::default(), &rv).await.unwrap().boxed();
    match stale.try_next().await.unwrap() {
        Some(WatchEvent::Error(e)) => assert_eq!(e.code, 410),
        other => panic!("expected 410, got {other:?}"),
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn stale_updates_conflict_and_apply_reports_conflicts() {
    let (sim, client) = start(Duration::from_secs(5)).await;
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    let created = api.create(&PostParams::default(), &cm("c")).await.unwrap();
    let mut first = created.clone();
    first.data = Some([("k".to_owned(), "1".to_owned())].into());
    api.replace("c", &PostParams::default(), &first).await.unwrap();
    let mut stale = created;
    stale.data = Some([("k".to_owned(), "2".to_owned())].into());
    match api.replace("c", &PostParams::default(), &stale).await {
        Err(kube::Error::Api(e)) => assert_eq!((e.code, e.reason.as_str()), (409, "Conflict")),
        other => panic!("expected 409, got {other:?}"),
    }
    let apply = |v: &str| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"k": v}});
    // The replace above made its client the owner of data.k: taking it over needs force.
    match api.patch("c", &PatchParams::apply("alice"), &Patch::Apply(apply("3"))).await {
        Err(kube::Error::Api(e)) => assert_eq!(e.code, 409),
        other => panic!("expected an apply conflict with the updater, got {other:?}"),
    }
    api.patch("c", &PatchParams::apply("alice").force(), &Patch::Apply(apply("3"))).await.unwrap();
    match api.patch("c", &PatchParams::apply("bob"), &Patch::Apply(apply("4"))).await {
        Err(kube::Error::Api(e)) => {
            assert_eq!(e.code, 409);
            assert!(e.message.contains("conflict with \"alice\""), "{}", e.message);
        }
        other => panic!("expected an apply conflict, got {other:?}"),
    }
    let forced = api.patch("c", &PatchParams::apply("bob").force(), &Patch::Apply(apply("4"))).await.unwrap();
    assert_eq!(forced.data.unwrap()["k"], "4");
    match api.get("missing").await {
        Err(kube::Error::Api(e)) => assert_eq!(e.code, 404),
        other => panic!("expected 404, got {other:?}"),
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn eviction_respects_disruption_budgets() {
    let (sim, client) = start(Duration::from_secs(5)).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), "default");
    let d: Deployment = serde_json::from_value(json!({"metadata": {"name": "web"}, "spec": {"replicas": 2,
        "selector": {"matchLabels": {"app": "web"}},
        "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "nginx",
            "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]}}}}))
    .unwrap();
    deployments.create(&PostParams::default(), &d).await.unwrap();
    let pdb: PodDisruptionBudget = serde_json::from_value(json!({"metadata": {"name": "web"},
        "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "web"}}}}))
    .unwrap();
    pdbs.create(&PostParams::default(), &pdb).await.unwrap();
    let budget_allows_one = || async {
        pdbs.get("web")
            .await
            .ok()
            .and_then(|p| p.status)
            .is_some_and(|s| s.disruptions_allowed == 1 && s.current_healthy == 2)
    };
    eventually("budget allows one disruption", budget_allows_one).await;
    let names: Vec<String> = pods
        .list(&ListParams::default().labels("app=web"))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();
    assert_eq!(names.len(), 2);
    // Replacements now never become ready, so the budget cannot recover between evictions.
    sim.world.lock().unwrap().timings.pod_start = 1e9;
    pods.evict(&names[0], &EvictParams::default()).await.unwrap();
    match pods.evict(&names[1], &EvictParams::default()).await {
        Err(kube::Error::Api(e)) => {
            assert_eq!(e.code, 429);
            assert!(e.message.contains("disruption budget"), "{}", e.message);
        }
        other => panic!("second eviction must be refused, got {other:?}"),
    }
    // Once the replacement is ready the budget allows a disruption again.
    sim.world.lock().unwrap().timings.pod_start = 1.0;
    eventually("replacement ready and budget replenished", budget_allows_one).await;
    sim.shutdown().await;
}

#[tokio::test]
async fn malformed_requests_get_status_errors_not_dropped_connections() {
    let (sim, client) = start(Duration::from_secs(5)).await;
    let bodies = [
        "",
        "null",
        "[]",
        "\"x\"",
        "{",
        "{\"metadata\": 5}",
        "{\"metadata\": {\"labels\": [1]}}",
        "{\"metadata\": {\"name\": \"x\", \"finalizers\": \"f\"}}",
        "{\"metadata\": {\"name\": \"x\"}, \"status\": 3}",
        "{\"apiVersion\": \"apps/v1\", \"kind\": \"Deployment\", \"metadata\": {\"name\": \"d\"}, \"spec\": {\"template\": 7}}",
        "{\"metadata\": {\"name\": \"p\"}, \"spec\": {\"containers\": [{\"name\": 1}]}}",
    ];
    let paths = [
        "/api/v1/namespaces/default/configmaps",
        "/api/v1/namespaces/default/pods",
        "/apis/apps/v1/namespaces/default/deployments",
        "/api/v1/namespaces/default/pods/p/eviction",
        "/api/v1/nodes",
    ];
    api_cm(&client).await;
    for path in paths {
        for body in bodies {
            for (method, ct) in [
                ("POST", "application/json"),
                ("PUT", "application/json"),
                ("PATCH", "application/merge-patch+json"),
                ("PATCH", "application/json-patch+json"),
                ("PATCH", "application/strategic-merge-patch+json"),
                ("PATCH", "application/apply-patch+yaml"),
                ("PATCH", "text/plain"),
            ] {
                let uri = if method == "POST" {
                    path.to_owned()
                } else {
                    format!("{}/c?fieldManager=t", path.trim_end_matches("/eviction"))
                };
                let req = http::Request::builder()
                    .method(method)
                    .uri(&uri)
                    .header("Content-Type", ct)
                    .body(body.as_bytes().to_vec())
                    .unwrap();
                match client.request_text(req).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(e)) => assert!((400..500).contains(&e.code), "{method} {uri} {body}: {e:?}"),
                    Err(e) => panic!("{method} {uri} {body}: connection-level failure {e:?}"),
                }
            }
        }
    }
    for bad in [
        "/api/v1/namespaces/default/configmaps?labelSelector=a%20b%20c",
        "/api/v1/pods?fieldSelector=spec.bogus%3D1",
        "/api/v1/configmaps?limit=x",
        "/api/v1/configmaps?continue=zz",
        "/apis/nope/v1/things",
        "/api/v1/namespaces/default/configmaps?watch=true&resourceVersion=abc",
    ] {
        let req = http::Request::get(bad).body(Vec::new()).unwrap();
        match client.request_text(req).await {
            Err(kube::Error::Api(e)) => assert!((400..500).contains(&e.code), "{bad}: {e:?}"),
            other => panic!("{bad}: expected a 4xx Status, got {other:?}"),
        }
    }
    sim.shutdown().await;
}

async fn api_cm(client: &kube::Client) {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    api.create(&PostParams::default(), &cm("c")).await.unwrap();
}

#[tokio::test]
async fn scheduler_enforces_pod_anti_affinity_and_topology_spread() {
    let (sim, client) = start(Duration::from_secs(30)).await;
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    // Three replicas that refuse to share a node, on a two-node cluster.
    let d: Deployment = serde_json::from_value(json!({"metadata": {"name": "solo"},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "solo"}},
            "template": {"metadata": {"labels": {"app": "solo"}}, "spec": {
                "containers": [{"name": "c", "image": "nginx"}],
                "affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                    {"topologyKey": "kubernetes.io/hostname", "labelSelector": {"matchLabels": {"app": "solo"}}}]}}}}}}))
    .unwrap();
    deploys.create(&PostParams::default(), &d).await.unwrap();
    let lp = ListParams::default().labels("app=solo");
    eventually("two solo pods bound and one unschedulable", || async {
        let items = pods.list(&lp).await.unwrap().items;
        let bound: Vec<String> =
            items.iter().filter_map(|p| p.spec.as_ref().and_then(|s| s.node_name.clone())).collect();
        let unschedulable = items.iter().any(|p| {
            p.status.as_ref().and_then(|s| s.conditions.as_ref()).into_iter().flatten().any(|c| {
                c.type_ == "PodScheduled"
                    && c.message
                        .as_deref()
                        .is_some_and(|m| m.contains("2 node(s) didn't match pod anti-affinity rules"))
            })
        });
        bound.len() == 2 && bound[0] != bound[1] && unschedulable
    })
    .await;
    // Hostname spread with maxSkew 1: four replicas go two and two.
    let d: Deployment = serde_json::from_value(json!({"metadata": {"name": "even"},
        "spec": {"replicas": 4, "selector": {"matchLabels": {"app": "even"}},
            "template": {"metadata": {"labels": {"app": "even"}}, "spec": {
                "containers": [{"name": "c", "image": "nginx"}],
                "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                    "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"app": "even"}}}]}}}}))
    .unwrap();
    deploys.create(&PostParams::default(), &d).await.unwrap();
    let lp = ListParams::default().labels("app=even");
    eventually("four even pods spread two and two", || async {
        let items = pods.list(&lp).await.unwrap().items;
        let mut per_node: std::collections::BTreeMap<String, usize> = Default::default();
        for p in &items {
            if let Some(n) = p.spec.as_ref().and_then(|s| s.node_name.clone()) {
                *per_node.entry(n).or_default() += 1;
            }
        }
        per_node.values().copied().collect::<Vec<_>>() == vec![2, 2]
    })
    .await;
    sim.shutdown().await;
}
