//! What the node engines remember between loops: when nodes became unneeded, scale-ups still
//! in flight, per-group backoff. The shell keeps it in memory (as Cluster Autoscaler does; a new
//! leader starts its unneeded timers afresh, which only delays removals).

use std::collections::BTreeMap;

use jiff::{SignedDuration, Timestamp};

/// Cluster Autoscaler's exponential backoff: 5 min, doubling after each failure that follows
/// an expired backoff, at most 30 min, forgotten after 3 h without failure.
pub const BACKOFF_INITIAL: SignedDuration = SignedDuration::from_secs(5 * 60);
pub const BACKOFF_MAX: SignedDuration = SignedDuration::from_secs(30 * 60);
pub const BACKOFF_RESET: SignedDuration = SignedDuration::from_secs(3 * 60 * 60);

/// A group that failed to scale up and is not tried again until `until`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backoff {
    pub until: Timestamp,
    pub duration: SignedDuration,
    pub last_failure: Timestamp,
    pub reason: String,
}

impl Backoff {
    /// The backoff after a failure at `now`, given the previous one.
    pub fn after_failure(previous: Option<&Backoff>, now: Timestamp, reason: String) -> Backoff {
        let duration = match previous {
            Some(p) if now.duration_since(p.last_failure) < BACKOFF_RESET => {
                if now < p.until {
                    p.duration
                } else {
                    (p.duration * 2).min(BACKOFF_MAX)
                }
            }
            _ => BACKOFF_INITIAL,
        };
        Backoff { until: now + duration, duration, last_failure: now, reason }
    }

    pub fn active(&self, now: Timestamp) -> bool {
        now < self.until
    }
}

/// A scale-up the engine asked for and is waiting to see registered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScaleUpRequest {
    pub group: String,
    /// Desired capacity before and after.
    pub from: u32,
    pub to: u32,
    pub at: Timestamp,
}

/// The node engines' memory.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct History {
    /// Node name → since when it has been unneeded (continuously).
    pub unneeded_since: BTreeMap<String, Timestamp>,
    /// Scale-ups not yet fully registered, by group.
    pub requests: BTreeMap<String, ScaleUpRequest>,
    pub backoff: BTreeMap<String, Backoff>,
    /// When each group last grew.
    pub last_scale_up: BTreeMap<String, Timestamp>,
    /// When each group last shrank.
    pub last_scale_down: BTreeMap<String, Timestamp>,
    /// When a removal last failed (an eviction refused, a terminate error): removals of
    /// non-empty nodes pause for `scale_down_delay_after_failure`.
    pub last_scale_down_failure: Option<Timestamp>,
}

impl History {
    /// Records a failed scale-up of `group` at `now`.
    pub fn fail(&mut self, group: &str, now: Timestamp, reason: String) {
        let b = Backoff::after_failure(self.backoff.get(group), now, reason);
        self.backoff.insert(group.to_owned(), b);
    }

    /// The group's backoff if it is in force at `now`.
    pub fn backed_off(&self, group: &str, now: Timestamp) -> Option<&Backoff> {
        self.backoff.get(group).filter(|b| b.active(now))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    #[test]
    fn backoff_doubles_caps_and_resets() {
        let b1 = Backoff::after_failure(None, at(0), "x".into());
        assert_eq!(b1.duration, BACKOFF_INITIAL);
        assert!(b1.active(at(299)) && !b1.active(at(300)));
        // A failure during the backoff keeps the duration.
        let b = Backoff::after_failure(Some(&b1), at(100), "x".into());
        assert_eq!(b.duration, BACKOFF_INITIAL);
        // After it expired: doubled, then capped at 30 min.
        let b2 = Backoff::after_failure(Some(&b1), at(400), "x".into());
        assert_eq!(b2.duration.as_secs(), 600);
        let mut b = b2;
        let mut t = 400;
        for _ in 0..5 {
            t += b.duration.as_secs() + 1;
            b = Backoff::after_failure(Some(&b), at(t), "x".into());
        }
        assert_eq!(b.duration, BACKOFF_MAX);
        // Three hours without failure: back to 5 min.
        let fresh = Backoff::after_failure(Some(&b), at(t + 3 * 3600), "x".into());
        assert_eq!(fresh.duration, BACKOFF_INITIAL);
    }
}
