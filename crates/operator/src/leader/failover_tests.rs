//! Two electors against one in-memory Lease API with the real API server's optimistic
//! concurrency (resourceVersion preconditions, 409 on stale writes, 409 AlreadyExists on create).
//! Time is virtual (tokio paused clock), so lease expiry is tested without waiting.

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicBool, Ordering},
};

use http::{Method, Request, Response, StatusCode};
use kube::{Client, client::Body};
use serde_json::json;

use super::*;

const NS: &str = "omniscale-system";
const NAME: &str = "omniscale-leader";

#[derive(Clone, Default)]
struct FakeLeases {
    state: Arc<Mutex<(u64, Option<Lease>)>>,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn status(code: StatusCode, reason: &str) -> Result<Response<Body>, BoxError> {
    let body = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason, "code": code.as_u16(), "message": reason});
    Ok(Response::builder().status(code).body(Body::from(serde_json::to_vec(&body)?))?)
}

fn ok(code: StatusCode, lease: &Lease) -> Result<Response<Body>, BoxError> {
    Ok(Response::builder().status(code).body(Body::from(serde_json::to_vec(lease)?))?)
}

impl FakeLeases {
    async fn handle(&self, req: Request<Body>) -> Result<Response<Body>, BoxError> {
        let collection = format!("/apis/coordination.k8s.io/v1/namespaces/{NS}/leases");
        let item = format!("{collection}/{NAME}");
        let (method, path) = (req.method().clone(), req.uri().path().to_string());
        let body = req.into_body().collect_bytes().await?;
        let mut guard = self.state.lock().map_err(|_| "poisoned")?;
        let (rv, stored) = &mut *guard;
        match (method, path.as_str()) {
            (Method::GET, p) if p == item => match stored {
                Some(l) => ok(StatusCode::OK, l),
                None => status(StatusCode::NOT_FOUND, "NotFound"),
            },
            (Method::POST, p) if p == collection => {
                if stored.is_some() {
                    return status(StatusCode::CONFLICT, "AlreadyExists");
                }
                let mut lease: Lease = serde_json::from_slice(&body)?;
                *rv += 1;
                lease.metadata.resource_version = Some(rv.to_string());
                *stored = Some(lease.clone());
                ok(StatusCode::CREATED, &lease)
            }
            (Method::PUT, p) if p == item => {
                let mut lease: Lease = serde_json::from_slice(&body)?;
                let current = stored.as_ref().and_then(|l| l.metadata.resource_version.clone());
                if current.is_none() {
                    return status(StatusCode::NOT_FOUND, "NotFound");
                }
                if lease.metadata.resource_version != current {
                    return status(StatusCode::CONFLICT, "Conflict");
                }
                *rv += 1;
                lease.metadata.resource_version = Some(rv.to_string());
                *stored = Some(lease.clone());
                ok(StatusCode::OK, &lease)
            }
            _ => status(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed"),
        }
    }

    /// A client of this fake; while `down` is set its requests fail at once as if the API were
    /// unavailable, while `hang` is set they never get an answer (a black-holed connection).
    fn client(&self, down: Arc<AtomicBool>, hang: Arc<AtomicBool>) -> Client {
        let fake = self.clone();
        let svc = tower::service_fn(move |req: Request<Body>| {
            let fake = fake.clone();
            let (down, hang) = (down.clone(), hang.clone());
            async move {
                if hang.load(Ordering::SeqCst) {
                    std::future::pending::<()>().await;
                }
                if down.load(Ordering::SeqCst) {
                    return status(StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable");
                }
                fake.handle(req).await
            }
        });
        Client::new(svc, NS)
    }

    fn holder(&self) -> Option<String> {
        self.state.lock().ok()?.1.as_ref()?.spec.as_ref()?.holder_identity.clone()
    }
}

/// Leadership changes as (virtual time, replica, is leader).
type ChangeLog = Arc<Mutex<Vec<(Instant, String, bool)>>>;

struct Replica {
    leader: watch::Receiver<bool>,
    shutdown: CancellationToken,
    down: Arc<AtomicBool>,
    hang: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

fn start(fake: &FakeLeases, identity: &str, log: &ChangeLog) -> Replica {
    let down = Arc::new(AtomicBool::new(false));
    let hang = Arc::new(AtomicBool::new(false));
    let api: Api<Lease> = Api::namespaced(fake.client(down.clone(), hang.clone()), NS);
    let elector = LeaderElector::new(api, NAME, identity, LeaseTiming::default());
    let (tx, rx) = watch::channel(false);
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(elector.run(tx, shutdown.clone()));
    // Record every leadership change with its (virtual) time.
    let mut watch_rx = rx.clone();
    let (log, name) = (log.clone(), identity.to_string());
    tokio::spawn(async move {
        while watch_rx.changed().await.is_ok() {
            let v = *watch_rx.borrow_and_update();
            if let Ok(mut l) = log.lock() {
                l.push((Instant::now(), name.clone(), v));
            }
        }
    });
    Replica { leader: rx, shutdown, down, hang, task }
}

async fn becomes(r: &mut Replica, value: bool, within: Duration) -> bool {
    tokio::time::timeout(within, r.leader.wait_for(|l| *l == value)).await.is_ok()
}

/// Starts `a`, waits until it leads, then starts `b` as its standby.
async fn leader_and_standby(fake: &FakeLeases, log: &ChangeLog) -> (Replica, Replica) {
    let mut a = start(fake, "a", log);
    assert!(becomes(&mut a, true, Duration::from_secs(5)).await, "a should lead");
    let b = start(fake, "b", log);
    (a, b)
}

/// Never two leaders at once, judged from the recorded change log.
fn assert_never_two_leaders(log: &ChangeLog) {
    let Ok(log) = log.lock() else { panic!("log poisoned") };
    let mut leaders = std::collections::BTreeSet::new();
    for (at, who, is_leader) in log.iter() {
        if *is_leader {
            leaders.insert(who.clone());
        } else {
            leaders.remove(who);
        }
        assert!(leaders.len() <= 1, "two leaders at {at:?}: {leaders:?} (log {log:?})");
    }
}

#[tokio::test(start_paused = true)]
async fn standby_waits_and_takes_over_at_once_on_graceful_stop() {
    let fake = FakeLeases::default();
    let log = ChangeLog::default();
    let (mut a, mut b) = leader_and_standby(&fake, &log).await;
    // b stays standby however long a keeps renewing.
    assert!(!becomes(&mut b, true, Duration::from_secs(60)).await, "b must stand by while a renews");
    assert_eq!(fake.holder().as_deref(), Some("a"));
    // SIGTERM on a: it releases the lease and b takes over well before the lease would expire.
    a.shutdown.cancel();
    let _ = (&mut a.task).await;
    assert!(!*a.leader.borrow());
    assert!(becomes(&mut b, true, Duration::from_secs(3)).await, "b should take over within a retry period");
    assert_eq!(fake.holder().as_deref(), Some("b"));
    assert_never_two_leaders(&log);
}

#[tokio::test(start_paused = true)]
async fn a_crashed_leader_is_replaced_only_after_its_lease_expires() {
    let fake = FakeLeases::default();
    let log = ChangeLog::default();
    let (a, mut b) = leader_and_standby(&fake, &log).await;
    tokio::time::sleep(Duration::from_secs(7)).await;
    // Crash: no release. A crashed process acts no more; its channel simply closes.
    a.task.abort();
    if let Ok(mut l) = log.lock() {
        l.push((Instant::now(), "a".into(), false));
    }
    // a renewed at most one retry period (2s) ago, so its lease is good for another 13s.
    assert!(!becomes(&mut b, true, Duration::from_secs(12)).await, "b took over a live lease");
    assert!(becomes(&mut b, true, Duration::from_secs(10)).await, "b should take over once the lease expired");
    let transitions = fake.state.lock().ok().and_then(|s| s.1.clone()).and_then(|l| l.spec?.lease_transitions);
    assert_eq!(transitions, Some(1));
    assert_never_two_leaders(&log);
}

#[tokio::test(start_paused = true)]
async fn a_partitioned_leader_steps_down_before_anyone_else_can_lead() {
    let fake = FakeLeases::default();
    let log = ChangeLog::default();
    let (mut a, mut b) = leader_and_standby(&fake, &log).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    a.down.store(true, Ordering::SeqCst);
    // a cannot renew: it must stop acting within the renew deadline (10s)...
    assert!(becomes(&mut a, false, Duration::from_secs(10)).await, "a kept leading without renewing");
    // ...and b may only lead after the lease expired, i.e. after a stepped down.
    assert!(becomes(&mut b, true, Duration::from_secs(20)).await, "b should take over");
    assert_never_two_leaders(&log);
    // When the network heals, a sees b's lease and stays standby.
    a.down.store(false, Ordering::SeqCst);
    assert!(!becomes(&mut a, true, Duration::from_secs(30)).await, "a must not grab b's live lease");
    assert_eq!(fake.holder().as_deref(), Some("b"));
    assert_never_two_leaders(&log);
}

#[tokio::test(start_paused = true)]
async fn a_leader_whose_requests_hang_steps_down_by_the_deadline() {
    let fake = FakeLeases::default();
    let log = ChangeLog::default();
    let (mut a, mut b) = leader_and_standby(&fake, &log).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    // No answer at all: a renew that never returns must not extend a's claim.
    a.hang.store(true, Ordering::SeqCst);
    assert!(becomes(&mut a, false, Duration::from_secs(10)).await, "a kept leading while its renew hung");
    assert!(becomes(&mut b, true, Duration::from_secs(20)).await, "b should take over");
    assert_never_two_leaders(&log);
}

#[tokio::test(start_paused = true)]
async fn simultaneous_candidates_elect_exactly_one() {
    let fake = FakeLeases::default();
    let log = ChangeLog::default();
    let mut replicas: Vec<Replica> = ["a", "b", "c"].iter().map(|n| start(&fake, n, &log)).collect();
    tokio::time::sleep(Duration::from_secs(30)).await;
    let leaders = replicas.iter_mut().filter(|r| *r.leader.borrow()).count();
    assert_eq!(leaders, 1);
    assert_never_two_leaders(&log);
}
