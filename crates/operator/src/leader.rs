//! Leader election on a `coordination.k8s.io/v1` Lease, with client-go's semantics.
//!
//! Only the leader runs reconcilers and cloud mutations; every replica serves HTTP (and later
//! the webhook). Why not a library: the safety property that matters is "a replica that cannot
//! renew stops acting before anyone else can take over". client-go gets it from two rules, kept
//! here:
//! - expiry is judged by *local observation time* (when this replica last saw the record change),
//!   never by the holder's clock, so clock skew cannot shorten a lease;
//! - a leader that has not renewed within `renew_deadline` (< `lease_duration`) steps down at
//!   once, even if the API is unreachable, so it stops before the lease can expire for others.
//!
//! Writes use `resourceVersion` preconditions, so two candidates racing for one lease get one
//! success and one 409, on any conforming API server.
//!
//! [`plan_attempt`] is the pure decision; [`LeaderElector`] does the I/O.

use std::time::Duration;

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
};
use kube::{Api, api::PostParams};
use tokio::{sync::watch, time::Instant};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// Timing of the election. Defaults follow VPA's (15 s / 10 s / 2 s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTiming {
    /// How long a lease is valid after the holder's last renewal, as seen by others.
    pub lease_duration: Duration,
    /// A leader that cannot renew for this long steps down. Must be below `lease_duration`.
    pub renew_deadline: Duration,
    /// Pause between attempts to acquire or renew.
    pub retry_period: Duration,
}

impl Default for LeaseTiming {
    fn default() -> Self {
        LeaseTiming {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// Why a timing is unsafe.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("leader election timing: {0}")]
pub struct TimingError(String);

impl LeaseTiming {
    /// Checks the ordering client-go requires: retry < renew deadline < lease duration.
    pub fn validate(&self) -> Result<(), TimingError> {
        if self.renew_deadline >= self.lease_duration {
            return Err(TimingError("renew deadline must be shorter than the lease duration".into()));
        }
        if self.retry_period.is_zero() || self.retry_period >= self.renew_deadline {
            return Err(TimingError("retry period must be positive and shorter than the renew deadline".into()));
        }
        Ok(())
    }
}

/// The last lease record this replica saw, and when it saw it change.
#[derive(Debug, Clone)]
pub struct Observation {
    record: Option<LeaseSpec>,
    changed_at: Instant,
}

impl Observation {
    /// Nothing seen yet.
    pub fn new(now: Instant) -> Self {
        Observation { record: None, changed_at: now }
    }

    /// Records what a read returned; the clock restarts only when the record differs.
    pub fn observe(&mut self, record: Option<&LeaseSpec>, now: Instant) {
        if self.record.as_ref() != record {
            self.record = record.cloned();
            self.changed_at = now;
        }
    }

    /// True when the holder has not renewed within `lease_duration` of our observing it.
    pub fn expired(&self, now: Instant, lease_duration: Duration) -> bool {
        now.saturating_duration_since(self.changed_at) >= lease_duration
    }
}

/// What one acquire-or-renew attempt should do.
#[derive(Debug, Clone, PartialEq)]
pub enum Attempt {
    /// No lease exists: create it with us as holder.
    Create(LeaseSpec),
    /// Write this record (renewal, takeover of an expired or released lease).
    Update(LeaseSpec),
    /// Someone else holds a live lease: stand by.
    Standby {
        /// The current holder.
        holder: String,
    },
}

fn holder(spec: Option<&LeaseSpec>) -> Option<&str> {
    spec.and_then(|s| s.holder_identity.as_deref()).filter(|h| !h.is_empty())
}

/// Decides the next write, given the lease as read (`None` if absent) and whether our
/// observation of it has expired.
pub fn plan_attempt(
    current: Option<&LeaseSpec>,
    exists: bool,
    me: &str,
    expired: bool,
    now: jiff::Timestamp,
    timing: &LeaseTiming,
) -> Attempt {
    let duration_secs = i32::try_from(timing.lease_duration.as_secs()).unwrap_or(i32::MAX).max(1);
    let fresh = |transitions: i32| LeaseSpec {
        holder_identity: Some(me.to_string()),
        lease_duration_seconds: Some(duration_secs),
        acquire_time: Some(MicroTime(now)),
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(transitions),
        ..LeaseSpec::default()
    };
    if !exists {
        return Attempt::Create(fresh(0));
    }
    let transitions = current.and_then(|s| s.lease_transitions).unwrap_or(0);
    match holder(current) {
        Some(h) if h == me => {
            let mut renewed = current.cloned().unwrap_or_default();
            renewed.renew_time = Some(MicroTime(now));
            renewed.lease_duration_seconds = Some(duration_secs);
            Attempt::Update(renewed)
        }
        Some(h) if !expired => Attempt::Standby { holder: h.to_string() },
        _ => Attempt::Update(fresh(transitions.saturating_add(1))),
    }
}

/// The record written on graceful release: no holder, so a standby takes over on its next try.
pub fn released(current: &LeaseSpec, now: jiff::Timestamp) -> LeaseSpec {
    LeaseSpec {
        holder_identity: None,
        lease_duration_seconds: Some(1),
        acquire_time: Some(MicroTime(now)),
        renew_time: Some(MicroTime(now)),
        lease_transitions: current.lease_transitions,
        ..LeaseSpec::default()
    }
}

/// Publishes `value`, waking watchers only on a change; returns the previous value.
fn set_leader(tx: &watch::Sender<bool>, value: bool) -> bool {
    let mut previous = false;
    tx.send_if_modified(|v| {
        previous = *v;
        *v = value;
        previous != value
    });
    previous
}

/// Errors talking to the API about the lease.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    /// The API call failed (network, 5xx, RBAC).
    #[error("lease API call failed: {0}")]
    Api(#[from] kube::Error),
    /// Another candidate wrote first (409).
    #[error("lost a race for the lease")]
    Conflict,
    /// No answer before the renew deadline.
    #[error("no answer from the API within {0:?}")]
    Timeout(Duration),
}

/// Runs the election for one replica.
#[derive(Debug, Clone)]
pub struct LeaderElector {
    api: Api<Lease>,
    name: String,
    identity: String,
    timing: LeaseTiming,
}

impl LeaderElector {
    /// An elector for the Lease `name` reachable through `api` (namespaced to the operator's own
    /// namespace), competing as `identity`.
    pub fn new(api: Api<Lease>, name: impl Into<String>, identity: impl Into<String>, timing: LeaseTiming) -> Self {
        LeaderElector { api, name: name.into(), identity: identity.into(), timing }
    }

    /// This replica's identity in the lease.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// Competes for the lease until `shutdown` fires, publishing leadership on `leader`.
    ///
    /// `leader` flips to false the moment leadership is lost or cannot be confirmed within the
    /// renew deadline. On shutdown a held lease is released so a standby takes over at once.
    pub async fn run(self, leader: watch::Sender<bool>, shutdown: CancellationToken) {
        let mut observation = Observation::new(Instant::now());
        let mut last_renew: Option<Instant> = None;
        let deadline = self.timing.renew_deadline;
        loop {
            // An attempt may not outlive our claim: a request that never returns must not keep
            // us leading past the renew deadline.
            let budget = last_renew.map_or(deadline, |t| (t + deadline).saturating_duration_since(Instant::now()));
            let outcome = tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                r = tokio::time::timeout(budget, self.try_acquire_or_renew(&mut observation)) => {
                    r.unwrap_or(Err(LeaderError::Timeout(budget)))
                }
            };
            let now = Instant::now();
            let mut failure = None;
            match outcome {
                Ok(true) => {
                    last_renew = Some(now);
                    if !set_leader(&leader, true) {
                        info!(identity = %self.identity, lease = %self.name, "became leader");
                    }
                }
                Ok(false) => {
                    last_renew = None;
                    if set_leader(&leader, false) {
                        warn!(identity = %self.identity, lease = %self.name, "lost leadership to another replica");
                    }
                }
                Err(e) => {
                    debug!(identity = %self.identity, error = %e, "lease attempt failed");
                    failure = Some(e);
                }
            }
            if last_renew.is_some_and(|t| now.saturating_duration_since(t) >= deadline) {
                last_renew = None;
                if set_leader(&leader, false) {
                    warn!(identity = %self.identity, error = ?failure.map(|e| e.to_string()), "could not renew the lease within the deadline; stepped down");
                }
            }
            // Wake up no later than the deadline, so the next attempt decides in time.
            let wait = last_renew.map_or(self.timing.retry_period, |t| {
                self.timing.retry_period.min((t + deadline).saturating_duration_since(now))
            });
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(wait) => {}
            }
        }
        let was_leader = set_leader(&leader, false);
        if was_leader {
            match self.release().await {
                Ok(()) => info!(identity = %self.identity, lease = %self.name, "released the lease"),
                Err(e) => {
                    warn!(identity = %self.identity, error = %e, "could not release the lease; it expires on its own")
                }
            }
        }
    }

    /// One attempt; Ok(true) when we hold the lease afterwards.
    async fn try_acquire_or_renew(&self, observation: &mut Observation) -> Result<bool, LeaderError> {
        let existing = self.api.get_opt(&self.name).await?;
        let spec = existing.as_ref().and_then(|l| l.spec.as_ref());
        let now = Instant::now();
        observation.observe(spec, now);
        let expired = observation.expired(now, self.timing.lease_duration);
        match plan_attempt(spec, existing.is_some(), &self.identity, expired, jiff::Timestamp::now(), &self.timing) {
            Attempt::Standby { holder } => {
                debug!(identity = %self.identity, %holder, "lease held by another replica");
                Ok(false)
            }
            Attempt::Create(spec) => {
                let lease = Lease {
                    metadata: ObjectMeta { name: Some(self.name.clone()), ..ObjectMeta::default() },
                    spec: Some(spec),
                };
                match self.api.create(&PostParams::default(), &lease).await {
                    Ok(_) => Ok(true),
                    Err(kube::Error::Api(s)) if s.code == 409 => Err(LeaderError::Conflict),
                    Err(e) => Err(e.into()),
                }
            }
            Attempt::Update(spec) => {
                let mut lease = existing.unwrap_or_default();
                lease.spec = Some(spec);
                match self.api.replace(&self.name, &PostParams::default(), &lease).await {
                    Ok(_) => Ok(true),
                    Err(kube::Error::Api(s)) if s.code == 409 => Err(LeaderError::Conflict),
                    Err(e) => Err(e.into()),
                }
            }
        }
    }

    async fn release(&self) -> Result<(), LeaderError> {
        let Some(mut lease) = self.api.get_opt(&self.name).await? else { return Ok(()) };
        let Some(spec) = lease.spec.as_ref() else { return Ok(()) };
        if holder(Some(spec)) != Some(self.identity.as_str()) {
            return Ok(());
        }
        lease.spec = Some(released(spec, jiff::Timestamp::now()));
        self.api.replace(&self.name, &PostParams::default(), &lease).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(secs).unwrap_or(jiff::Timestamp::UNIX_EPOCH)
    }

    fn held_by(h: &str, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(h.into()),
            lease_transitions: Some(transitions),
            acquire_time: Some(MicroTime(t(1))),
            renew_time: Some(MicroTime(t(1))),
            lease_duration_seconds: Some(15),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn creates_a_missing_lease() {
        let a = plan_attempt(None, false, "me", false, t(5), &LeaseTiming::default());
        let Attempt::Create(spec) = a else { panic!("expected create, got {a:?}") };
        assert_eq!(spec.holder_identity.as_deref(), Some("me"));
        assert_eq!(spec.lease_transitions, Some(0));
        assert_eq!(spec.lease_duration_seconds, Some(15));
    }

    #[test]
    fn renews_own_lease_keeping_acquire_time() {
        let cur = held_by("me", 3);
        let a = plan_attempt(Some(&cur), true, "me", true, t(9), &LeaseTiming::default());
        let Attempt::Update(spec) = a else { panic!("expected update, got {a:?}") };
        assert_eq!(spec.acquire_time, Some(MicroTime(t(1))));
        assert_eq!(spec.renew_time, Some(MicroTime(t(9))));
        assert_eq!(spec.lease_transitions, Some(3));
    }

    #[test]
    fn stands_by_while_another_holder_is_live_and_takes_over_when_expired() {
        let cur = held_by("other", 3);
        assert_eq!(
            plan_attempt(Some(&cur), true, "me", false, t(9), &LeaseTiming::default()),
            Attempt::Standby { holder: "other".into() }
        );
        let a = plan_attempt(Some(&cur), true, "me", true, t(9), &LeaseTiming::default());
        let Attempt::Update(spec) = a else { panic!("expected takeover, got {a:?}") };
        assert_eq!(spec.holder_identity.as_deref(), Some("me"));
        assert_eq!(spec.lease_transitions, Some(4));
        assert_eq!(spec.acquire_time, Some(MicroTime(t(9))));
    }

    #[test]
    fn a_released_lease_is_taken_at_once() {
        let cur = released(&held_by("other", 2), t(3));
        let a = plan_attempt(Some(&cur), true, "me", false, t(4), &LeaseTiming::default());
        assert!(matches!(a, Attempt::Update(ref s) if s.holder_identity.as_deref() == Some("me")), "{a:?}");
    }

    #[test]
    fn expiry_counts_from_local_observation_not_the_holders_clock() {
        let start = Instant::now();
        let mut obs = Observation::new(start);
        let rec = held_by("other", 1);
        obs.observe(Some(&rec), start);
        let d = Duration::from_secs(15);
        assert!(!obs.expired(start + Duration::from_secs(14), d));
        // The same record seen again does not restart the clock...
        obs.observe(Some(&rec), start + Duration::from_secs(10));
        assert!(obs.expired(start + Duration::from_secs(15), d));
        // ...a renewal does.
        let mut renewed = rec.clone();
        renewed.renew_time = Some(MicroTime(t(2)));
        obs.observe(Some(&renewed), start + Duration::from_secs(15));
        assert!(!obs.expired(start + Duration::from_secs(29), d));
    }

    #[test]
    fn timing_must_be_ordered() {
        assert!(LeaseTiming::default().validate().is_ok());
        let bad = LeaseTiming { renew_deadline: Duration::from_secs(15), ..LeaseTiming::default() };
        assert!(bad.validate().is_err());
        let bad = LeaseTiming { retry_period: Duration::from_secs(10), ..LeaseTiming::default() };
        assert!(bad.validate().is_err());
    }
}

#[cfg(test)]
mod failover_tests;
