//! Status conditions (metav1 `Condition`) with the transition semantics users rely on.
//!
//! `lastTransitionTime` must only move when `status` flips; otherwise `kubectl wait` and alerting
//! on condition age break. [`set_condition`] is the one place that rule lives.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// Condition type every omniscale resource carries: is the resource usable as written?
pub const READY: &str = "Ready";

/// A condition about to be written, without timestamps (they are filled in by [`set_condition`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConditionUpdate {
    /// Condition type, e.g. [`READY`].
    pub type_: String,
    /// True, False or Unknown.
    pub status: ConditionStatus,
    /// CamelCase machine-readable reason.
    pub reason: String,
    /// Human-readable explanation.
    pub message: String,
}

/// The three states of a condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConditionStatus {
    /// The condition holds.
    True,
    /// The condition does not hold.
    False,
    /// Not known yet.
    Unknown,
}

impl ConditionStatus {
    /// The API spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ConditionStatus::True => "True",
            ConditionStatus::False => "False",
            ConditionStatus::Unknown => "Unknown",
        }
    }
}

impl From<bool> for ConditionStatus {
    fn from(b: bool) -> Self {
        if b { ConditionStatus::True } else { ConditionStatus::False }
    }
}

impl ConditionUpdate {
    /// A condition of type `type_` that holds.
    pub fn holds(type_: &str, reason: &str, message: impl Into<String>) -> Self {
        Self::new(type_, ConditionStatus::True, reason, message)
    }

    /// A condition of type `type_` that does not hold.
    pub fn fails(type_: &str, reason: &str, message: impl Into<String>) -> Self {
        Self::new(type_, ConditionStatus::False, reason, message)
    }

    /// Any condition.
    pub fn new(type_: &str, status: ConditionStatus, reason: &str, message: impl Into<String>) -> Self {
        ConditionUpdate { type_: type_.into(), status, reason: reason.into(), message: message.into() }
    }
}

/// Writes `update` into `conditions`, keeping `lastTransitionTime` when the status is unchanged.
///
/// Returns true when anything a reader would notice changed (status, reason, message or
/// observedGeneration), so callers can skip no-op status writes.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    update: ConditionUpdate,
    observed_generation: Option<i64>,
    now: jiff::Timestamp,
) -> bool {
    let status = update.status.as_str();
    match conditions.iter_mut().find(|c| c.type_ == update.type_) {
        Some(existing) => {
            let changed = existing.status != status
                || existing.reason != update.reason
                || existing.message != update.message
                || existing.observed_generation != observed_generation;
            if existing.status != status {
                existing.last_transition_time = Time(now);
                existing.status = status.to_string();
            }
            existing.reason = update.reason;
            existing.message = update.message;
            existing.observed_generation = observed_generation;
            changed
        }
        None => {
            conditions.push(Condition {
                type_: update.type_,
                status: status.to_string(),
                reason: update.reason,
                message: update.message,
                observed_generation,
                last_transition_time: Time(now),
            });
            true
        }
    }
}

/// The condition of the given type, if present.
pub fn find_condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(secs: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(secs).unwrap_or(jiff::Timestamp::UNIX_EPOCH)
    }

    #[test]
    fn transition_time_moves_only_when_status_flips() {
        let mut conds = Vec::new();
        assert!(set_condition(&mut conds, ConditionUpdate::fails(READY, "A", "a"), Some(1), ts(10)));
        assert!(set_condition(&mut conds, ConditionUpdate::fails(READY, "B", "b"), Some(2), ts(20)));
        assert_eq!(conds[0].last_transition_time, Time(ts(10)));
        assert_eq!(conds[0].reason, "B");
        assert_eq!(conds[0].observed_generation, Some(2));
        assert!(set_condition(&mut conds, ConditionUpdate::holds(READY, "C", "c"), Some(2), ts(30)));
        assert_eq!(conds[0].last_transition_time, Time(ts(30)));
        assert_eq!(conds[0].status, "True");
        assert_eq!(conds.len(), 1);
    }

    #[test]
    fn identical_update_reports_no_change() {
        let mut conds = Vec::new();
        set_condition(&mut conds, ConditionUpdate::holds(READY, "Valid", "ok"), Some(1), ts(1));
        assert!(!set_condition(&mut conds, ConditionUpdate::holds(READY, "Valid", "ok"), Some(1), ts(5)));
        assert_eq!(conds[0].last_transition_time, Time(ts(1)));
        assert!(find_condition(&conds, READY).is_some());
        assert!(find_condition(&conds, "Other").is_none());
    }
}
