//! Simulated time. The cluster (and, in `omniscale sim`, the operator) read the same clock, which
//! runs `speed` times faster than the wall clock, so a 5-minute stabilisation window passes in 30
//! seconds at speed 10 without anything sleeping for less.

use jiff::{SignedDuration, Timestamp};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A monotonic simulated clock shared by every component of one simulation.
#[derive(Clone, Debug)]
pub struct Clock {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    start_wall: Instant,
    start: Timestamp,
    /// Speed as f64 bits, so it can change while the clock runs (pausing is speed 0 is not
    /// supported; speed changes re-anchor the clock).
    speed_bits: AtomicU64,
}

impl Clock {
    pub fn new(start: Timestamp, speed: f64) -> Self {
        let speed = if speed.is_finite() && speed > 0.0 { speed } else { 1.0 };
        Self {
            inner: Arc::new(Inner { start_wall: Instant::now(), start, speed_bits: AtomicU64::new(speed.to_bits()) }),
        }
    }

    /// A clock starting at the current wall time, running at `speed`.
    pub fn wall(speed: f64) -> Self {
        Self::new(Timestamp::now(), speed)
    }

    pub fn speed(&self) -> f64 {
        f64::from_bits(self.inner.speed_bits.load(Ordering::Relaxed))
    }

    pub fn now(&self) -> Timestamp {
        let elapsed = self.inner.start_wall.elapsed().as_secs_f64() * self.speed();
        self.inner.start + SignedDuration::from_secs_f64(elapsed)
    }

    /// Simulated seconds since the clock started.
    pub fn elapsed(&self) -> f64 {
        self.now().duration_since(self.inner.start).as_secs_f64()
    }

    pub fn start(&self) -> Timestamp {
        self.inner.start
    }

    /// How long to sleep on the wall clock for `sim` simulated time to pass.
    pub fn wall_duration(&self, sim: Duration) -> Duration {
        Duration::from_secs_f64(sim.as_secs_f64() / self.speed())
    }

    /// Sleeps until `sim` simulated time has passed.
    pub async fn sleep(&self, sim: Duration) {
        tokio::time::sleep(self.wall_duration(sim)).await;
    }
}
