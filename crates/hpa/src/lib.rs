//! The horizontal engine: upstream HPA's decisions, pure. Callers pass samples, the spec, the
//! recorded history and `now`; nothing here reads a clock or the network.
//!
//! - [`calc`]: one metric → a replica proposal (pod metrics with pod grouping and the
//!   missing/unready fill-ins; Object and External Value/AverageValue).
//! - [`normalize`]: stabilisation windows and rate limits, legacy and `behavior` paths, with the
//!   condition reason upstream would set.
//! - [`decide`]: the whole decision of one reconcile (branches, metrics, normalisation,
//!   conditions), with the history that must survive restarts.
//!
//! Every result carries what produced it, so status, Events and `omniscale plan` can explain it.

pub mod calc;
pub mod decide;
pub mod input;
pub mod normalize;

/// `within(r) ⇔ 1 − down ≤ r ≤ 1 + up`, bounds inclusive; upstream's default is 0.1 both ways,
/// and KEP-4951 lets `behavior` set each direction.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct Tolerance {
    pub up: f64,
    pub down: f64,
}

impl Default for Tolerance {
    fn default() -> Self {
        Self { up: 0.1, down: 0.1 }
    }
}

impl Tolerance {
    pub fn within(&self, ratio: f64) -> bool {
        1.0 - self.down <= ratio && ratio <= 1.0 + self.up
    }

    /// `behavior.scaleUp.tolerance` / `scaleDown.tolerance` (KEP-4951), else `default`.
    pub fn from_behavior(
        b: Option<&k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscalerBehavior>,
        default: f64,
    ) -> Self {
        let pick = |r: Option<&k8s_openapi::api::autoscaling::v2::HPAScalingRules>| {
            r.and_then(|r| r.tolerance.as_ref())
                .and_then(|q| omniscale_api::quantity::Quantity::parse(&q.0).ok())
                .map_or(default, |q| q.milli() as f64 / 1000.0)
        };
        Self { up: pick(b.and_then(|b| b.scale_up.as_ref())), down: pick(b.and_then(|b| b.scale_down.as_ref())) }
    }
}
