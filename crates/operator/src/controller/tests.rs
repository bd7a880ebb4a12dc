//! Scenario tests: the exact HTTP calls a reconcile makes, against tower-test mocks.

use super::*;
use crate::validate::TargetKind;
use http::{Method, Request, Response};
use kube::{client::Body, runtime::events::Reporter};
use omniscale_api::autoscaler::{AutoscalerSpec, HorizontalSpec, TargetRef};

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;
type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn context(leader: bool) -> (Arc<Context>, Handle, watch::Sender<bool>) {
    let (mock, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(mock, "default");
    let recorder =
        Recorder::new(client.clone(), Reporter { controller: "omniscale".into(), instance: Some("test".into()) });
    let (tx, rx) = watch::channel(leader);
    // A clock far from the wall clock shows that condition times come from the context's clock.
    let clock = Clock::new("2030-01-01T00:00:00Z".parse().unwrap_or(jiff::Timestamp::UNIX_EPOCH), 1.0);
    (Arc::new(Context::new(client, recorder, Arc::new(Metrics::default()), rx, None, clock)), handle, tx)
}

fn autoscaler(kind: &str) -> Autoscaler {
    let mut a = Autoscaler::new(
        "web",
        AutoscalerSpec {
            target_ref: TargetRef { api_version: "apps/v1".into(), kind: kind.into(), name: "web".into() },
            mode: Default::default(),
            horizontal: Some(HorizontalSpec {
                min_replicas: Some(1),
                max_replicas: 5,
                metrics: None,
                behavior: None,
                cpu_initialization_period: None,
                initial_readiness_delay: None,
            }),
            vertical: None,
        },
    );
    a.metadata.namespace = Some("default".into());
    a.metadata.generation = Some(3);
    a
}

fn apps_v1() -> serde_json::Value {
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "apps/v1", "resources": [
        {"name": "deployments", "singularName": "deployment", "namespaced": true, "kind": "Deployment", "verbs": ["get"]},
        {"name": "deployments/scale", "singularName": "", "namespaced": true, "kind": "Scale", "verbs": ["get"]},
        {"name": "daemonsets", "singularName": "daemonset", "namespaced": true, "kind": "DaemonSet", "verbs": ["get"]}
    ]})
}

async fn body_json(req: Request<Body>) -> Result<serde_json::Value, BoxError> {
    let bytes = req.into_body().collect_bytes().await?;
    Ok(serde_json::from_slice(&bytes)?)
}

fn ok(v: &serde_json::Value) -> Result<Response<Body>, BoxError> {
    Ok(Response::builder().body(Body::from(serde_json::to_vec(v)?))?)
}

/// What the target's `scale` GET answers.
#[derive(Clone, Copy)]
enum Scale {
    /// Not asked (the kind has no scale subresource).
    NotAsked,
    Found,
    Missing,
}

/// Answers the scale GET of the `web` Deployment.
async fn serve_scale(handle: &mut Handle, scale: Scale) -> Result<(), BoxError> {
    if let Scale::NotAsked = scale {
        return Ok(());
    }
    let (req, send) = handle.next_request().await.ok_or("no scale request")?;
    assert_eq!(req.method(), Method::GET);
    assert_eq!(req.uri().path(), "/apis/apps/v1/namespaces/default/deployments/web/scale");
    send.send_response(match scale {
        Scale::Found => ok(&json!({"kind": "Scale", "apiVersion": "autoscaling/v1",
            "metadata": {"name": "web", "namespace": "default"}, "spec": {"replicas": 1}, "status": {"replicas": 1}}))?,
        _ => Response::builder().status(404).body(Body::from(serde_json::to_vec(&json!({
            "kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404,
            "message": "deployments.apps \"web\" not found"}))?))?,
    });
    Ok(())
}

/// Serves discovery (and the scale GET), then expects the status patch and the Event,
/// returning both bodies.
async fn expect_discovery_status_event(
    mut handle: Handle,
    obj: serde_json::Value,
    scale: Scale,
) -> Result<(serde_json::Value, serde_json::Value), BoxError> {
    let (req, send) = handle.next_request().await.ok_or("no discovery request")?;
    assert_eq!(req.uri().path(), "/apis/apps/v1");
    send.send_response(ok(&apps_v1())?);
    serve_scale(&mut handle, scale).await?;

    let (req, send) = handle.next_request().await.ok_or("no status patch")?;
    assert_eq!(req.method(), Method::PATCH);
    assert_eq!(req.uri().path(), "/apis/omniscale.dev/v1alpha1/namespaces/default/autoscalers/web/status");
    let query = req.uri().query().unwrap_or_default().to_string();
    assert!(query.contains("fieldManager=omniscale-validation") && query.contains("force=true"), "{query}");
    let status = body_json(req).await?;
    send.send_response(ok(&obj)?);

    let (req, send) = handle.next_request().await.ok_or("no event")?;
    assert_eq!(req.method(), Method::POST);
    assert_eq!(req.uri().path(), "/apis/events.k8s.io/v1/namespaces/default/events");
    let event = body_json(req).await?;
    send.send_response(ok(&event)?);
    Ok((status, event))
}

#[tokio::test]
async fn invalid_target_gets_ready_false_and_a_warning_event() -> Result<(), BoxError> {
    let (ctx, handle, _leader) = context(true);
    let a = autoscaler("DaemonSet");
    let server = tokio::spawn(expect_discovery_status_event(handle, serde_json::to_value(&a)?, Scale::NotAsked));
    let action = reconcile_autoscaler(Arc::new(DeserializeGuard(Ok(a))), ctx.clone()).await;
    assert!(action.is_ok(), "{action:?}");
    let (status, event) = server.await??;
    let cond = &status["status"]["conditions"][0];
    assert_eq!(cond["type"], "Ready");
    assert_eq!(cond["status"], "False");
    assert_eq!(cond["reason"], "TargetNotScalable");
    assert_eq!(cond["observedGeneration"], 3);
    let at = cond["lastTransitionTime"].as_str().unwrap_or_default();
    assert!(at.starts_with("2030-01-01T00:00:0"), "condition time from the context's clock: {at}");
    assert_eq!(status["status"]["observedGeneration"], 3);
    assert_eq!(event["type"], "Warning");
    assert_eq!(event["reason"], "TargetNotScalable");
    assert_eq!(event["regarding"]["name"], "web");
    Ok(())
}

#[tokio::test]
async fn valid_target_gets_ready_true() -> Result<(), BoxError> {
    let (ctx, handle, _leader) = context(true);
    let a = autoscaler("Deployment");
    let server = tokio::spawn(expect_discovery_status_event(handle, serde_json::to_value(&a)?, Scale::Found));
    reconcile_autoscaler(Arc::new(DeserializeGuard(Ok(a))), ctx).await?;
    let (status, event) = server.await??;
    assert_eq!(status["status"]["conditions"][0]["status"], "True");
    assert_eq!(status["status"]["conditions"][0]["reason"], "Valid");
    assert_eq!(event["type"], "Normal");
    Ok(())
}

#[tokio::test]
async fn a_missing_target_gets_target_not_found_and_is_looked_for_again_soon() -> Result<(), BoxError> {
    let (ctx, handle, _leader) = context(true);
    let a = autoscaler("Deployment");
    let server = tokio::spawn(expect_discovery_status_event(handle, serde_json::to_value(&a)?, Scale::Missing));
    let action = reconcile_autoscaler(Arc::new(DeserializeGuard(Ok(a))), ctx).await?;
    let (status, event) = server.await??;
    let cond = &status["status"]["conditions"][0];
    assert_eq!((cond["status"].as_str(), cond["reason"].as_str()), (Some("False"), Some("TargetNotFound")));
    assert!(cond["message"].as_str().unwrap_or_default().contains("no Deployment named \"web\""), "{cond}");
    assert_eq!((event["type"].as_str(), event["reason"].as_str()), (Some("Warning"), Some("TargetNotFound")));
    assert_eq!(action, Action::requeue(TARGET_RECHECK));
    Ok(())
}

#[tokio::test]
async fn unchanged_condition_is_not_rewritten() -> Result<(), BoxError> {
    let (ctx, mut handle, _leader) = context(true);
    let mut a = autoscaler("Deployment");
    let mut conditions = Vec::new();
    set_condition(
        &mut conditions,
        validate::autoscaler_ready(
            &a,
            &TargetKind::Scalable { plural: "deployments".into() },
            validate::TargetObject::Found,
        ),
        Some(3),
        jiff::Timestamp::UNIX_EPOCH,
    );
    a.status = Some(omniscale_api::AutoscalerStatus { observed_generation: Some(3), conditions, ..Default::default() });
    let server = tokio::spawn(async move {
        let (_, send) = handle.next_request().await.ok_or("no discovery request")?;
        send.send_response(ok(&apps_v1())?);
        serve_scale(&mut handle, Scale::Found).await?;
        // No further request may arrive.
        let next = tokio::time::timeout(Duration::from_millis(200), handle.next_request()).await;
        assert!(matches!(next, Err(_) | Ok(None)), "unexpected extra request");
        Ok::<_, BoxError>(())
    });
    reconcile_autoscaler(Arc::new(DeserializeGuard(Ok(a))), ctx).await?;
    server.await??;
    Ok(())
}

#[tokio::test]
async fn a_standby_replica_writes_nothing() -> Result<(), BoxError> {
    let (ctx, mut handle, _leader) = context(false);
    let server = tokio::spawn(async move {
        let (_, send) = handle.next_request().await.ok_or("no discovery request")?;
        send.send_response(ok(&apps_v1())?);
        let next = tokio::time::timeout(Duration::from_millis(200), handle.next_request()).await;
        assert!(matches!(next, Err(_) | Ok(None)), "a standby must not write");
        Ok::<_, BoxError>(())
    });
    reconcile_autoscaler(Arc::new(DeserializeGuard(Ok(autoscaler("DaemonSet")))), ctx).await?;
    server.await??;
    Ok(())
}

#[tokio::test]
async fn malformed_objects_get_a_condition_not_a_crash() -> Result<(), BoxError> {
    let (ctx, mut handle, _leader) = context(true);
    // What the watcher hands over when an object does not match the Rust types.
    let raw = json!({"apiVersion": "omniscale.dev/v1alpha1", "kind": "Autoscaler",
        "metadata": {"name": "web", "namespace": "default", "generation": 1},
        "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}, "horizontal": {"maxReplicas": "ten"}}});
    let guard: DeserializeGuard<Autoscaler> = serde_json::from_value(raw.clone())?;
    assert!(guard.0.is_err(), "the fixture must be malformed");
    let obj = Arc::new(guard);
    let server = tokio::spawn(async move {
        let (req, send) = handle.next_request().await.ok_or("no status patch")?;
        assert_eq!(req.method(), Method::PATCH);
        let status = body_json(req).await?;
        send.send_response(ok(&raw)?);
        let (req, send) = handle.next_request().await.ok_or("no event")?;
        let event = body_json(req).await?;
        send.send_response(ok(&event)?);
        Ok::<_, BoxError>(status)
    });
    reconcile_autoscaler(obj.clone(), ctx.clone()).await?;
    let status = server.await??;
    let cond = &status["status"]["conditions"][0];
    assert_eq!(cond["reason"], "Malformed");
    assert!(cond["message"].as_str().unwrap_or_default().contains("cannot read this object"), "{cond}");
    Ok(())
}

#[test]
fn backoff_doubles_up_to_five_minutes() {
    assert_eq!(backoff(0), Duration::from_secs(5));
    assert_eq!(backoff(1), Duration::from_secs(10));
    assert_eq!(backoff(5), Duration::from_secs(160));
    assert_eq!(backoff(6), Duration::from_secs(300));
    assert_eq!(backoff(60), Duration::from_secs(300));
}
