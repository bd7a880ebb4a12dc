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
}
