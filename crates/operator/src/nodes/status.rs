//! NodePool status from the node loop: desired and current nodes, last scale-up and scale-down,
//! and the `CanScaleUp` condition — written by server-side apply under this shell's field
//! manager, so the validation controller's `Ready` and `observedGeneration` are left alone.

use jiff::Timestamp;
use kube::Api;
use kube::api::{Patch, PatchParams};
use kube::core::DeserializeGuard;
use omniscale_api::NodePool;
use omniscale_nodes::decide::{Plan, PoolSummary};
use omniscale_nodes::history::History;
use serde_json::{Value, json};
use tracing::warn;

use super::FIELD_MANAGER;
use crate::controller::Context;

/// The condition this shell owns.
pub const CAN_SCALE_UP: &str = "CanScaleUp";

/// `CanScaleUp` for a pool: (status, reason, message).
pub fn can_scale_up(s: &PoolSummary) -> (&'static str, &'static str, String) {
    if s.groups.is_empty() {
        return ("False", "NoGroupsFound", "no Auto Scaling Group matches the pool's name or discovery tags".into());
    }
    if let Some(why) = &s.unhealthy {
        return ("False", "ClusterUnhealthy", why.clone());
    }
    if !s.template_errors.is_empty() {
        return ("False", "TemplateError", s.template_errors.join("; "));
    }
    if s.backoff.len() == s.groups.len() {
        let (g, until, why) = &s.backoff[0];
        return ("False", "BackedOff", format!("group {g} backed off until {until}: {why}"));
    }
    if let Some(why) = &s.cannot_grow {
        let reason = if why.contains("limit") { "LimitReached" } else { "AtMaximum" };
        return ("False", reason, why.clone());
    }
    let mut msg = format!("{} of at most {} nodes desired", s.desired, s.max);
    for (g, until, why) in &s.backoff {
        msg.push_str(&format!("; group {g} backed off until {until}: {why}"));
    }
    ("True", "Headroom", msg)
}

fn condition(pool: &NodePool, status: &str, reason: &str, message: &str, now: Timestamp) -> Value {
    let existing =
        pool.status.as_ref().and_then(|s| s.conditions.iter().find(|c| c.type_ == CAN_SCALE_UP && c.status == status));
    let ltt = existing.map_or_else(|| now.to_string(), |c| c.last_transition_time.0.to_string());
    json!({"type": CAN_SCALE_UP, "status": status, "reason": reason, "message": message,
           "lastTransitionTime": ltt, "observedGeneration": pool.metadata.generation})
}

fn unchanged(pool: &NodePool, status: &Value) -> bool {
    let Some(s) = &pool.status else { return false };
    let cond = s.conditions.iter().find(|c| c.type_ == CAN_SCALE_UP);
    let c = &status["conditions"][0];
    s.desired_nodes == status["desiredNodes"].as_i64().map(|v| v as i32)
        && s.current_nodes == status["currentNodes"].as_i64().map(|v| v as i32)
        && s.last_scale_up_time.as_ref().map(|t| t.0.to_string())
            == status["lastScaleUpTime"].as_str().map(String::from)
        && s.last_scale_down_time.as_ref().map(|t| t.0.to_string())
            == status["lastScaleDownTime"].as_str().map(String::from)
        && cond.is_some_and(|x| {
            Some(x.status.as_str()) == c["status"].as_str()
                && Some(x.reason.as_str()) == c["reason"].as_str()
                && Some(x.message.as_str()) == c["message"].as_str()
        })
}

async fn apply(ctx: &Context, pool: &NodePool, status: Value) {
    if unchanged(pool, &status) || !*ctx.leader.borrow() {
        return;
    }
    let name = pool.metadata.name.clone().unwrap_or_default();
    let patch = json!({"apiVersion": "omniscale.dev/v1alpha1", "kind": "NodePool", "status": status});
    let api: Api<DeserializeGuard<NodePool>> = Api::all(ctx.client.clone());
    if let Err(e) = api.patch_status(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch)).await {
        warn!(pool = %name, error = %e, "NodePool status not written");
    }
}

fn time_of(
    history: &History,
    groups: &[String],
    map: fn(&History) -> &std::collections::BTreeMap<String, Timestamp>,
) -> Option<String> {
    groups
        .iter()
        .filter_map(|g| map(history).get(g))
        .max()
        .map(|t| t.round(jiff::Unit::Second).map_or_else(|_| t.to_string(), |t| t.to_string()))
}

/// Publishes every ASG pool's status after a loop.
pub async fn publish(ctx: &Context, pools: &[NodePool], plan: &Plan, history: &History, now: Timestamp) {
    for pool in pools {
        let name = pool.metadata.name.as_deref().unwrap_or("");
        let Some(s) = plan.pools.iter().find(|s| s.name == name) else { continue };
        let (st, reason, message) = can_scale_up(s);
        let mut status = json!({
            "desiredNodes": s.desired,
            "currentNodes": s.ready,
            "conditions": [condition(pool, st, reason, &message, now)],
        });
        if let Some(t) = time_of(history, &s.groups, |h| &h.last_scale_up) {
            status["lastScaleUpTime"] = json!(t);
        }
        if let Some(t) = time_of(history, &s.groups, |h| &h.last_scale_down) {
            status["lastScaleDownTime"] = json!(t);
        }
        apply(ctx, pool, status).await;
    }
}

/// Marks every ASG pool as unable to scale because the cloud could not be reached.
pub async fn cloud_error(ctx: &Context, pools: &[NodePool], error: &str, now: Timestamp) {
    for pool in pools {
        let mut status = json!({"conditions": [condition(pool, "False", "CloudError", error, now)]});
        if let Some(s) = &pool.status {
            status["desiredNodes"] = json!(s.desired_nodes);
            status["currentNodes"] = json!(s.current_nodes);
        }
        apply(ctx, pool, status).await;
    }
}

#[cfg(test)]
mod tests {
    use super::can_scale_up;
    use omniscale_nodes::decide::PoolSummary;

    /// The reasons in order of precedence: an unhealthy cluster says so before anything else.
    #[test]
    fn can_scale_up_reasons() {
        let mut s = PoolSummary { name: "p".into(), max: 5, desired: 2, ..PoolSummary::default() };
        assert_eq!(can_scale_up(&s).1, "NoGroupsFound");
        s.groups = vec!["g".into()];
        assert_eq!(can_scale_up(&s), ("True", "Headroom", "2 of at most 5 nodes desired".to_owned()));
        s.cannot_grow = Some("limit of 2 nodes reached".into());
        assert_eq!(can_scale_up(&s).1, "LimitReached");
        s.unhealthy = Some("4 of 8 nodes are NotReady".into());
        assert_eq!(can_scale_up(&s), ("False", "ClusterUnhealthy", "4 of 8 nodes are NotReady".to_owned()));
    }
}
