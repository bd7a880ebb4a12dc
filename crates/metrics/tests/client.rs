#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]
//! The live client against the simulated cluster's aggregated metrics APIs: one cache fill
//! answers every query once, and failures become answers that say which API failed.

use omniscale_metrics::{Answer, Cache, Client, Query};
use omniscale_sim::control::World;
use omniscale_sim::runtime::{self, SimOptions};
use std::collections::BTreeMap;

#[tokio::test]
async fn fills_a_cycle_from_all_three_apis() {
    let sim = runtime::start(SimOptions::default(), World::default()).await.unwrap();
    let mut config = kube::Config::new(sim.url.parse().unwrap());
    config.default_retry = false;
    let client = Client::new(kube::Client::try_from(config).unwrap());
    let c = &sim.cluster;
    c.set_custom_metric("team", "pods", "web-1", "rps", "10500m");
    c.set_custom_metric("team", "pods", "web-2", "rps", "7");
    c.set_custom_metric("team", "services", "front", "hits", "2k");
    c.set_custom_metric("team", "namespaces", "team", "backlog", "12");
    let labels = |q: &str| BTreeMap::from([("queue".to_owned(), q.to_owned())]);
    c.set_external_metric("team", "depth", vec![(labels("jobs"), "30".into()), (labels("mail"), "12".into())]);

    let pods = Query::Pods { namespace: "team".into(), metric: "rps".into(), metric_selector: String::new() };
    let object = |name: &str, resource: &str, metric: &str| Query::Object {
        namespace: "team".into(),
        resource: resource.into(),
        name: name.into(),
        metric: metric.into(),
        metric_selector: String::new(),
    };
    let external = |selector: &str| Query::External {
        namespace: "team".into(),
        metric: "depth".into(),
        selector: selector.into(),
    };
    let missing = object("front", "services", "latency");
    let mut cache = Cache::new();
    for q in [
        pods.clone(),
        pods.clone(),
        object("front", "services", "hits"),
        object("team", "namespaces", "backlog"),
        external(""),
        external("queue=jobs"),
        missing.clone(),
        Query::PodMetrics { namespace: "team".into() },
    ] {
        cache.want(q);
    }
    client.fill(&mut cache).await;
    assert_eq!(cache.requests(), 7, "the repeated query is made once");

    let Some(Ok(Answer::Pods(v))) = cache.get(&pods) else { panic!("{:?}", cache.get(&pods)) };
    assert_eq!((v["web-1"].value, v["web-2"].value), (10_500, 7_000));
    let Some(Ok(Answer::Object(s))) = cache.get(&object("front", "services", "hits")) else { panic!() };
    assert_eq!(s.value, 2_000_000);
    let Some(Ok(Answer::Object(s))) = cache.get(&object("team", "namespaces", "backlog")) else { panic!() };
    assert_eq!(s.value, 12_000);
    let Some(Ok(Answer::External(s))) = cache.get(&external("")) else { panic!() };
    assert_eq!(s.value, 42_000, "every series, summed");
    let Some(Ok(Answer::External(s))) = cache.get(&external("queue=jobs")) else { panic!() };
    assert_eq!(s.value, 30_000, "only the selected series");
    let Some(Ok(Answer::PodMetrics(m))) = cache.get(&Query::PodMetrics { namespace: "team".into() }) else { panic!() };
    assert!(m.is_empty(), "no pods, no PodMetrics, and that is not an error");
    let Some(Err(e)) = cache.get(&missing) else { panic!("{:?}", cache.get(&missing)) };
    assert!(e.starts_with("unable to fetch metrics from the custom metrics API"), "{e}");
    assert!(e.contains("latency"), "{e}");
    sim.shutdown().await;
}
