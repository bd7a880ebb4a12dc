//! The `pods/eviction` and `pods/binding` subresources. Eviction is where PodDisruptionBudgets are
//! enforced: it reads the budget's status (kept current by the disruption controller), refuses
//! with 429 when no disruption is allowed, and otherwise records the disruption in the budget
//! before deleting the pod, so concurrent evictions cannot overdraw it.

use crate::error::ApiError;
use crate::registry::ResourceKey;
use crate::selector::LabelSelector;
use crate::store::{DeleteOptions, Store, Target, ts};
use jiff::Timestamp;
use serde_json::{Value, json};

impl Store {
    pub fn evict(&mut self, ns: &str, name: &str, body: &Value, now: Timestamp) -> Result<Value, ApiError> {
        let pods = ResourceKey::new("", "pods");
        let pod = self.get_raw(&pods, ns, name).ok_or_else(|| ApiError::not_found("pods", name))?;
        if body["metadata"]["name"].as_str().is_some_and(|n| n != name) {
            return Err(ApiError::bad_request(format!("name in URL does not match name in Eviction object: {name}")));
        }
        let grace = body["deleteOptions"]["gracePeriodSeconds"].as_i64();
        let success = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201});
        let rt =
            self.registry.get("", "v1", "pods").cloned().ok_or_else(|| ApiError::internal("pods not registered"))?;
        let target = Target::new(&rt, Some(ns), Some(name));
        let delete = DeleteOptions { grace_period: grace, ..Default::default() };
        // Terminal, pending or already-terminating pods are not counted by budgets: evict freely.
        let phase = pod["status"]["phase"].as_str().unwrap_or("Pending");
        if matches!(phase, "Succeeded" | "Failed" | "Pending") || !pod["metadata"]["deletionTimestamp"].is_null() {
            self.delete(&target, &delete, now)?;
            return Ok(success);
        }
        let pdb_key = ResourceKey::new("policy", "poddisruptionbudgets");
        let matching: Vec<_> = self
            .all(&pdb_key, Some(ns))
            .into_iter()
            .filter(|b| {
                LabelSelector::from_json(&b["spec"]["selector"])
                    .is_ok_and(|s| !b["spec"]["selector"].is_null() && s.matches_object(&pod))
            })
            .collect();
        if matching.len() > 1 {
            return Err(ApiError::internal(
                "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
            ));
        }
        if let Some(pdb) = matching.first() {
            let pdb_name = pdb["metadata"]["name"].as_str().unwrap_or_default().to_owned();
            let observed = pdb["status"]["observedGeneration"].as_i64().unwrap_or(0);
            let generation = pdb["metadata"]["generation"].as_i64().unwrap_or(1);
            if observed < generation {
                return Err(ApiError::too_many_requests(
                    "Cannot evict pod as it would violate the pod's disruption budget.",
                    vec![
                        json!({"reason": "DisruptionBudget", "message": format!("The disruption budget {pdb_name} is still being processed by the server.")}),
                    ],
                ));
            }
            let allowed = pdb["status"]["disruptionsAllowed"].as_i64().unwrap_or(0);
            let ready = crate::store::condition_true(&pod, "Ready");
            let healthy = pdb["status"]["currentHealthy"].as_i64().unwrap_or(0);
            let desired = pdb["status"]["desiredHealthy"].as_i64().unwrap_or(0);
            // An unready pod may go if the budget is otherwise healthy (IfHealthyBudget, default).
            let unready_ok = !ready && healthy >= desired;
            if allowed <= 0 && !unready_ok {
                return Err(ApiError::too_many_requests(
                    "Cannot evict pod as it would violate the pod's disruption budget.",
                    vec![
                        json!({"reason": "DisruptionBudget", "message": format!("The disruption budget {pdb_name} needs {desired} healthy pods and has {healthy} currently")}),
                    ],
                ));
            }
            if ready {
                let mut updated = (**pdb).clone();
                updated["status"]["disruptionsAllowed"] = json!(allowed - 1);
                updated["status"]["disruptedPods"][name] = Value::String(ts(now));
                self.system_write(&pdb_key, updated);
            }
        }
        self.delete(&target, &delete, now)?;
        Ok(success)
    }

    /// `pods/binding`: what a scheduler posts to assign a node.
    pub fn bind(&mut self, ns: &str, name: &str, body: &Value) -> Result<Value, ApiError> {
        let pods = ResourceKey::new("", "pods");
        let pod = self.get_raw(&pods, ns, name).ok_or_else(|| ApiError::not_found("pods", name))?;
        let node = body["target"]["name"]
            .as_str()
            .filter(|n| !n.is_empty())
            .ok_or_else(|| ApiError::invalid("Binding", name, vec![("target.name".into(), "Required value".into())]))?;
        if pod["spec"]["nodeName"].as_str().is_some_and(|n| !n.is_empty()) {
            return Err(ApiError::conflict_msg(
                "pods",
                name,
                format!(
                    "Operation cannot be fulfilled on pods/binding \"{name}\": pod {name} is already assigned to node \"{}\"",
                    pod["spec"]["nodeName"].as_str().unwrap_or_default()
                ),
                vec![],
            ));
        }
        let mut p = (*pod).clone();
        p["spec"]["nodeName"] = Value::String(node.to_owned());
        self.system_write(&pods, p);
        Ok(json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}))
    }
}
