//! The time every decision is made at. Engines are pure and take `now` as an argument; the shells
//! that call them read it here. In production this is the wall clock; in `omniscale sim` the
//! simulated cluster and the operator share one clock running `speed` times faster, so a 5-minute
//! stabilisation window passes in 30 seconds at speed 10 without anything sleeping for less.

use jiff::{SignedDuration, Timestamp};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A monotonic clock anchored at a timestamp and running `speed` times faster than the wall
/// clock; cheap to clone, and clones share time.
#[derive(Clone, Debug)]
pub struct Clock {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    start_wall: Instant,
    start: Timestamp,
    /// Speed as f64 bits (an atomic, so the clock stays `Sync` without a lock).
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

    /// The wall clock itself: what `omniscale run` uses against a real cluster.
    pub fn real() -> Self {
        Self::wall(1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speed_scales_durations_and_bad_speeds_fall_back_to_real_time() {
        let c = Clock::new(Timestamp::UNIX_EPOCH, 10.0);
        assert_eq!(c.wall_duration(Duration::from_secs(300)), Duration::from_secs(30));
        assert!(c.now() >= Timestamp::UNIX_EPOCH && c.elapsed() >= 0.0);
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert_eq!(Clock::new(Timestamp::UNIX_EPOCH, bad).speed(), 1.0);
        }
        let shared = c.clone();
        assert_eq!(shared.start(), c.start());
    }
}
