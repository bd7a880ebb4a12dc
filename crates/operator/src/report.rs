//! What the Autoscaler shells write about their decisions: Events on the Autoscaler and status
//! conditions in the server-side-apply form, shared so every shell reports the same way.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{
    Resource,
    runtime::events::{Event, EventType},
};
use omniscale_api::Autoscaler;
use serde_json::{Value, json};
use tracing::debug;

use crate::controller::Context;

/// Records an Event on the Autoscaler (notes are cut to the API's 1 KiB); a failure to record is
/// only logged, as an Event is never worth failing a decision for.
pub async fn event(ctx: &Context, a: &Autoscaler, type_: EventType, action: &str, reason: &str, note: &str) {
    let ev = Event {
        type_,
        reason: reason.into(),
        note: Some(note.chars().take(1000).collect()),
        action: action.into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&ev, &a.object_ref(&())).await {
        debug!(error = %e, "event not recorded");
    }
}

/// One condition as applied, keeping `lastTransitionTime` when the status did not flip.
pub fn condition(a: &Autoscaler, type_: &str, status: &str, reason: &str, message: &str, now: Timestamp) -> Value {
    let existing: Option<&Condition> =
        a.status.as_ref().and_then(|s| s.conditions.iter().find(|e| e.type_ == type_ && e.status == status));
    let ltt = existing.map_or_else(|| now.to_string(), |e| e.last_transition_time.0.to_string());
    json!({"type": type_, "status": status, "reason": reason, "message": message,
           "lastTransitionTime": ltt, "observedGeneration": a.metadata.generation})
}
