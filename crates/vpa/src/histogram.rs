//! Upstream VPA's usage histograms: buckets whose weights decay with a half-life, so old usage
//! counts less than new usage without storing samples.
//!
//! The arithmetic is upstream's, operation for operation and in f64, because the recommendation
//! is read off a bucket boundary: a weight one ulp off can move a percentile to the next bucket,
//! which is 5 % of the target.

use jiff::{SignedDuration, Timestamp};
use omniscale_api::autoscaler::HistogramCheckpoint;
use std::collections::BTreeMap;

/// Seconds from Go's zero time (0001-01-01T00:00:00Z) to the Unix epoch: upstream rounds
/// reference timestamps relative to the former.
const GO_ZERO_TO_UNIX_SECONDS: i128 = 62_135_596_800;

/// Renormalise when a sample is this many half-lives past the reference (2^100 still fits f64
/// comfortably).
const MAX_DECAY_EXPONENT: i128 = 100;

/// Checkpointed weights are scaled so the heaviest bucket is this (upstream's
/// `MaxCheckpointWeight`).
const MAX_CHECKPOINT_WEIGHT: f64 = 10_000.0;

/// Bucket layout of a histogram.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Options {
    /// Buckets growing by `ratio`: bucket 0 is `[0, first)`, bucket n starts at
    /// `first·(ratioⁿ−1)/(ratio−1)`. Usage spans five orders of magnitude, and a relative
    /// precision of 5 % is what a request needs.
    Exponential { first: f64, ratio: f64, buckets: usize, epsilon: f64 },
    /// Buckets of equal `size` (used by upstream's tests; kept for the same vectors).
    Linear { size: f64, buckets: usize, epsilon: f64 },
}

impl Options {
    /// Exponential buckets covering `[0, max]`.
    pub fn exponential(max: f64, first: f64, ratio: f64, epsilon: f64) -> Self {
        let buckets = ((max * (ratio - 1.0) / first + 1.0).ln() / ratio.ln()).ceil() as usize + 1;
        Options::Exponential { first, ratio, buckets, epsilon }
    }

    /// Linear buckets covering `[0, max]`.
    pub fn linear(max: f64, size: f64, epsilon: f64) -> Self {
        Options::Linear { size, buckets: (max / size).ceil() as usize + 1, epsilon }
    }

    /// CPU in cores: 10m first bucket, 5 % growth, up to 1000 cores (176 buckets).
    pub fn cpu() -> Self {
        Self::exponential(1000.0, 0.01, 1.05, 1e-4)
    }

    /// Memory in bytes: 10 MB first bucket, 5 % growth, up to 1 TB (176 buckets).
    pub fn memory() -> Self {
        Self::exponential(1e12, 1e7, 1.05, 1e-4)
    }

    pub fn buckets(&self) -> usize {
        match *self {
            Options::Exponential { buckets, .. } | Options::Linear { buckets, .. } => buckets,
        }
    }

    pub fn epsilon(&self) -> f64 {
        match *self {
            Options::Exponential { epsilon, .. } | Options::Linear { epsilon, .. } => epsilon,
        }
    }

    /// The bucket a value falls in; values past the end land in the last bucket.
    pub fn find(&self, value: f64) -> usize {
        let n = self.buckets();
        match *self {
            Options::Exponential { first, ratio, .. } => {
                if value < first {
                    return 0;
                }
                let b = ((value * (ratio - 1.0) / first + 1.0).ln() / ratio.ln()) as usize;
                b.min(n - 1)
            }
            Options::Linear { size, .. } => {
                let b = value / size;
                if b < 0.0 { 0 } else { (b as usize).min(n - 1) }
            }
        }
    }

    /// Where a bucket starts.
    pub fn start(&self, bucket: usize) -> f64 {
        match *self {
            Options::Exponential { first, ratio, .. } => {
                if bucket == 0 {
                    0.0
                } else {
                    first * (ratio.powi(bucket as i32) - 1.0) / (ratio - 1.0)
                }
            }
            Options::Linear { size, .. } => bucket as f64 * size,
        }
    }
}

/// A histogram of weighted samples.
#[derive(Clone, Debug, PartialEq)]
pub struct Histogram {
    options: Options,
    weights: Box<[f64]>,
    total: f64,
    /// Lowest and highest buckets that may hold at least epsilon; all others are below it.
    min_bucket: usize,
    max_bucket: usize,
}

impl Histogram {
    pub fn new(options: Options) -> Self {
        let n = options.buckets().max(1);
        Histogram { options, weights: vec![0.0; n].into_boxed_slice(), total: 0.0, min_bucket: n - 1, max_bucket: 0 }
    }

    pub fn options(&self) -> &Options {
        &self.options
    }

    pub fn total_weight(&self) -> f64 {
        self.total
    }

    /// Adds `weight` (non-negative; anything else is ignored) at `value`.
    pub fn add(&mut self, value: f64, weight: f64) {
        if weight.is_nan() || weight < 0.0 || !value.is_finite() {
            return;
        }
        let b = self.options.find(value);
        self.weights[b] += weight;
        self.total += weight;
        let eps = self.options.epsilon();
        if b < self.min_bucket && self.weights[b] >= eps {
            self.min_bucket = b;
        }
        if b > self.max_bucket && self.weights[b] >= eps {
            self.max_bucket = b;
        }
    }

    /// Removes up to `weight` at `value` (never below zero).
    pub fn subtract(&mut self, value: f64, weight: f64) {
        if weight.is_nan() || weight < 0.0 || !value.is_finite() {
            return;
        }
        let b = self.options.find(value);
        let w = weight.min(self.weights[b]);
        self.weights[b] -= w;
        self.total -= w;
        if self.weights[b] < self.options.epsilon() {
            self.update_min_max();
        }
    }

    /// Adds another histogram with the same layout.
    pub fn merge(&mut self, other: &Histogram) {
        if other.options != self.options {
            return;
        }
        for b in other.min_bucket..=other.max_bucket.min(other.weights.len() - 1) {
            self.weights[b] += other.weights[b];
        }
        self.total += other.total;
        self.min_bucket = self.min_bucket.min(other.min_bucket);
        self.max_bucket = self.max_bucket.max(other.max_bucket);
    }

    /// Multiplies every weight by `factor` (non-negative).
    pub fn scale(&mut self, factor: f64) {
        if factor.is_nan() || factor < 0.0 {
            return;
        }
        for w in self.weights.iter_mut() {
            *w *= factor;
        }
        self.total *= factor;
        self.update_min_max();
    }

    fn update_min_max(&mut self) {
        let last = self.weights.len() - 1;
        let eps = self.options.epsilon();
        while self.weights[self.min_bucket] < eps && self.min_bucket < last {
            self.min_bucket += 1;
        }
        while self.weights[self.max_bucket] < eps && self.max_bucket > 0 {
            self.max_bucket -= 1;
        }
    }

    pub fn is_empty(&self) -> bool {
        self.weights[self.min_bucket] < self.options.epsilon()
    }

    /// The smallest bucket end below which at least `p` of the weight lies (the start of the
    /// last bucket when that is where it lands); 0 when empty. Returning the bucket's end rounds
    /// every recommendation up, never down.
    pub fn percentile(&self, p: f64) -> f64 {
        if self.is_empty() {
            return 0.0;
        }
        let threshold = p * self.total;
        let mut sum = 0.0;
        let mut b = self.min_bucket;
        while b < self.max_bucket {
            sum += self.weights[b];
            if sum >= threshold {
                break;
            }
            b += 1;
        }
        if b < self.weights.len() - 1 { self.options.start(b + 1) } else { self.options.start(b) }
    }

    /// Weights scaled so the heaviest bucket is 10000, rounded, zeros dropped: small, and exact
    /// enough for percentiles.
    fn save(&self) -> (f64, BTreeMap<String, u32>) {
        let mut out = BTreeMap::new();
        if self.is_empty() {
            return (self.total, out);
        }
        let max = (self.min_bucket..=self.max_bucket).map(|b| self.weights[b]).fold(0.0, f64::max);
        if max <= 0.0 {
            return (self.total, out);
        }
        let ratio = MAX_CHECKPOINT_WEIGHT / max;
        for b in self.min_bucket..=self.max_bucket {
            let w = (self.weights[b] * ratio).round();
            if w >= 1.0 {
                out.insert(b.to_string(), w as u32);
            }
        }
        (self.total, out)
    }

    /// Restores weights as `wᵢ·total/Σw`, then forgets buckets under epsilon (upstream issue
    /// 7726: without that, a restored histogram could report 0).
    fn load(&mut self, total: f64, weights: &BTreeMap<String, u32>) -> Result<(), String> {
        if total.is_nan() || total < 0.0 {
            return Err(format!("totalWeight {total} is negative"));
        }
        let mut parsed = Vec::with_capacity(weights.len());
        let mut sum = 0u64;
        for (k, &w) in weights {
            let b: usize = k.parse().map_err(|_| format!("bucket {k:?} is not a bucket number"))?;
            if b >= self.weights.len() {
                return Err(format!("bucket {b} is past the last bucket ({})", self.weights.len() - 1));
            }
            sum += u64::from(w);
            parsed.push((b, w));
        }
        if sum == 0 {
            return Ok(());
        }
        let ratio = total / sum as f64;
        for (b, w) in parsed {
            // By index: `find(start(b))` can land one bucket low in floating point.
            self.weights[b] += f64::from(w) * ratio;
        }
        self.total += total;
        self.min_bucket = 0;
        self.max_bucket = self.weights.len() - 1;
        self.update_min_max();
        Ok(())
    }

    /// Heap bytes held (for the state-size figure).
    pub fn heap_bytes(&self) -> usize {
        std::mem::size_of_val(&*self.weights)
    }
}

/// A histogram whose samples lose half their weight every `half_life`: implemented by giving
/// newer samples exponentially more weight relative to a reference time, and renormalising when
/// the exponent grows large.
#[derive(Clone, Debug, PartialEq)]
pub struct Decaying {
    hist: Histogram,
    half_life: SignedDuration,
    /// `None` is upstream's zero time: no sample yet.
    reference: Option<Timestamp>,
}

impl Decaying {
    pub fn new(options: Options, half_life: SignedDuration) -> Self {
        Decaying { hist: Histogram::new(options), half_life, reference: None }
    }

    pub fn histogram(&self) -> &Histogram {
        &self.hist
    }

    pub fn reference(&self) -> Option<Timestamp> {
        self.reference
    }

    pub fn add(&mut self, value: f64, weight: f64, t: Timestamp) {
        let f = self.decay_factor(t);
        self.hist.add(value, weight * f);
    }

    pub fn subtract(&mut self, value: f64, weight: f64, t: Timestamp) {
        let f = self.decay_factor(t);
        self.hist.subtract(value, weight * f);
    }

    pub fn percentile(&self, p: f64) -> f64 {
        self.hist.percentile(p)
    }

    pub fn is_empty(&self) -> bool {
        self.hist.is_empty()
    }

    /// Adds `other` after bringing both to the later reference time.
    pub fn merge(&mut self, other: &Decaying) {
        match (self.reference, other.reference) {
            (_, None) => self.hist.merge(&other.hist),
            (None, Some(r)) => {
                self.shift(r);
                self.hist.merge(&other.hist);
            }
            (Some(a), Some(b)) if a < b => {
                self.shift(b);
                self.hist.merge(&other.hist);
            }
            (Some(a), Some(b)) if b < a => {
                let mut o = other.clone();
                o.shift(a);
                self.hist.merge(&o.hist);
            }
            _ => self.hist.merge(&other.hist),
        }
    }

    fn half_life_nanos(&self) -> i128 {
        self.half_life.as_nanos().max(1)
    }

    fn decay_factor(&mut self, t: Timestamp) -> f64 {
        let hl = self.half_life_nanos();
        let too_far = match self.reference {
            None => true,
            Some(r) => t.as_nanosecond() > r.as_nanosecond() + hl * MAX_DECAY_EXPONENT,
        };
        if too_far {
            self.shift(t);
        }
        let r = self.reference.map_or(0, Timestamp::as_nanosecond);
        ((t.as_nanosecond() - r) as f64 / hl as f64).exp2()
    }

    /// Moves the reference to `t` rounded to a whole number of half-lives (as Go's
    /// `Time.Round`), rescaling the weights by the whole number of half-lives moved.
    fn shift(&mut self, t: Timestamp) {
        let hl = self.half_life_nanos();
        let since_zero = t.as_nanosecond() + GO_ZERO_TO_UNIX_SECONDS * 1_000_000_000;
        let r = since_zero.rem_euclid(hl);
        let rounded = if r + r < hl { t.as_nanosecond() - r } else { t.as_nanosecond() + (hl - r) };
        let new_ref = Timestamp::from_nanosecond(rounded).unwrap_or(t);
        match self.reference {
            // From zero time every weight would scale by 2^-huge: nothing survives.
            None => self.hist.scale(0.0),
            Some(old) => {
                let exponent = ((old.as_nanosecond() - rounded) as f64 / hl as f64 + 0.5).floor();
                self.hist.scale(exponent.exp2());
            }
        }
        self.reference = Some(new_ref);
    }

    /// The checkpoint form (upstream's `HistogramCheckpoint`).
    pub fn save(&self) -> HistogramCheckpoint {
        let (total, bucket_weights) = self.hist.save();
        HistogramCheckpoint {
            reference_timestamp: self.reference.map(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time),
            total_weight: total,
            bucket_weights,
        }
    }

    /// Restores a checkpoint into an empty histogram.
    pub fn load(&mut self, cp: &HistogramCheckpoint) -> Result<(), String> {
        let mut fresh = Decaying::new(self.hist.options, self.half_life);
        fresh.reference = cp.reference_timestamp.as_ref().map(|t| t.0);
        fresh.hist.load(cp.total_weight, &cp.bucket_weights)?;
        *self = fresh;
        Ok(())
    }

    pub fn heap_bytes(&self) -> usize {
        self.hist.heap_bytes()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn t0() -> Timestamp {
        "2026-01-01T00:00:00Z".parse().unwrap()
    }

    fn h(n: i64) -> SignedDuration {
        SignedDuration::from_hours(n)
    }

    #[test]
    fn v1_exponential_buckets() {
        let o = Options::exponential(500.0, 40.0, 1.5, 1e-4);
        assert_eq!(o.buckets(), 6);
        let starts: Vec<f64> = (0..6).map(|b| o.start(b)).collect();
        assert_eq!(starts, vec![0.0, 40.0, 100.0, 190.0, 325.0, 527.5]);
        assert_eq!(o.find(39.99), 0);
        assert_eq!(o.find(40.0), 1);
        assert_eq!(o.find(900.0), 5);
    }

    #[test]
    fn v2_linear_buckets() {
        let o = Options::linear(5.0, 0.3, 1e-4);
        assert_eq!(o.buckets(), 18);
        assert_eq!(o.find(1.3), 4);
    }

    #[test]
    fn cpu_and_memory_have_176_buckets() {
        assert_eq!(Options::cpu().buckets(), 176);
        assert_eq!(Options::memory().buckets(), 176);
    }

    #[test]
    fn v3_percentiles_return_bucket_ends() {
        let mut hist = Histogram::new(Options::linear(10.0, 1.0, 1e-4));
        for v in 1..=4 {
            hist.add(f64::from(v), f64::from(v));
        }
        assert_eq!(hist.percentile(0.0), 2.0);
        assert_eq!(hist.percentile(0.2), 3.0);
        assert_eq!(hist.percentile(0.4), 4.0);
        assert_eq!(hist.percentile(0.7), 5.0);
    }

    #[test]
    fn empty_histogram_has_percentile_zero() {
        let hist = Histogram::new(Options::cpu());
        assert!(hist.is_empty());
        assert_eq!(hist.percentile(0.9), 0.0);
    }

    #[test]
    fn v4_decay_favours_recent_samples() {
        let mut d = Decaying::new(Options::linear(10.0, 1.0, 1e-4), h(1));
        for i in 1..=4 {
            d.add(f64::from(i), f64::from(i), t0() + h(i64::from(i)));
        }
        // Weights i·2^i: 2, 8, 24, 64, cumulative 2/98, 10/98, 34/98, 1.
        assert_eq!(d.percentile(0.02), 2.0);
        assert_eq!(d.percentile(0.03), 3.0);
        assert_eq!(d.percentile(0.11), 4.0);
        assert_eq!(d.percentile(0.35), 5.0);
    }

    #[test]
    fn v5_old_heavy_sample_loses_to_twenty_half_lives() {
        let mut d = Decaying::new(Options::linear(10.0, 1.0, 1e-4), h(1));
        d.add(2.0, 1000.0, t0());
        d.add(1.0, 1.0, t0() + h(20));
        assert_eq!(d.percentile(0.999), 2.0);
        assert_eq!(d.percentile(1.0), 3.0);
    }

    #[test]
    fn renormalising_far_in_the_future_keeps_percentiles() {
        let mut d = Decaying::new(Options::linear(10.0, 1.0, 1e-4), h(1));
        d.add(1.0, 1.0, t0());
        d.add(5.0, 1.0, t0() + h(150));
        // The first sample decayed to nothing; the reference moved.
        assert_eq!(d.percentile(0.5), 6.0);
        assert_eq!(d.reference(), Some(t0() + h(150)));
        assert!(d.histogram().total_weight() < 2.0);
    }

    #[test]
    fn subtract_never_goes_negative() {
        let mut hist = Histogram::new(Options::linear(10.0, 1.0, 1e-4));
        hist.add(3.0, 1.0);
        hist.subtract(3.0, 5.0);
        assert!(hist.is_empty());
        assert_eq!(hist.total_weight(), 0.0);
    }

    #[test]
    fn checkpoint_round_trip_keeps_percentiles() {
        let mut d = Decaying::new(Options::cpu(), h(24));
        for i in 0..500 {
            d.add(0.1 + f64::from(i % 50) * 0.02, 0.1, t0() + SignedDuration::from_mins(i64::from(i)));
        }
        let cp = d.save();
        assert!(cp.bucket_weights.values().any(|&w| w == 10_000));
        let mut back = Decaying::new(Options::cpu(), h(24));
        back.load(&cp).unwrap();
        for p in [0.5, 0.9, 0.95] {
            assert_eq!(back.percentile(p), d.percentile(p), "p{p}");
        }
        assert!((back.histogram().total_weight() - d.histogram().total_weight()).abs() < 1e-6);
    }

    #[test]
    fn bad_checkpoints_are_refused() {
        let mut d = Decaying::new(Options::cpu(), h(24));
        let mut cp = HistogramCheckpoint { reference_timestamp: None, total_weight: 1.0, ..Default::default() };
        cp.bucket_weights.insert("400".into(), 3);
        assert!(d.load(&cp).unwrap_err().contains("past the last bucket"));
        cp.bucket_weights.clear();
        cp.bucket_weights.insert("x".into(), 3);
        assert!(d.load(&cp).is_err());
        cp.total_weight = -1.0;
        assert!(d.load(&cp).is_err());
    }
}
