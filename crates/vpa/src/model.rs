//! What the recommender remembers: one aggregate per (Autoscaler, container name) holding the
//! decaying cpu and memory-peak histograms, and one small state per running container that
//! turns its samples into those histograms (deduplication, one memory peak per interval, OOM
//! bumps).
//!
//! Upstream aggregates per (namespace, container name, pod labels) and merges the aggregates of
//! every VPA that selects them; with one Autoscaler per workload the result is the same and
//! this keeps one histogram pair per recommendation instead of a merge on every read.

use std::collections::HashMap;
use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use omniscale_api::autoscaler::ContainerCheckpoint;

use crate::histogram::{Decaying, Options};

/// The checkpoint format this recommender reads and writes (upstream's current one).
pub const CHECKPOINT_VERSION: &str = "v3";

/// Recommender parameters; `Default` is upstream's flag defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub cpu_histogram: Options,
    pub memory_histogram: Options,
    pub cpu_half_life: SignedDuration,
    pub memory_half_life: SignedDuration,
    /// Weight of one cpu sample (a constant since VPA 1.4).
    pub cpu_sample_weight: f64,
    /// Memory keeps one peak per interval…
    pub memory_interval: SignedDuration,
    /// …for this many intervals (8 days of history).
    pub memory_interval_count: i64,
    /// An OOM asks for at least this many more bytes…
    pub oom_min_bump_bytes: i64,
    /// …and at least this factor over what the container had.
    pub oom_bump_ratio: f64,
    pub target_percentile: f64,
    pub lower_percentile: f64,
    pub upper_percentile: f64,
    /// Added on top of every percentile.
    pub safety_margin: f64,
    /// History length at which confidence is 1.
    pub confidence_interval: SignedDuration,
    /// Smallest recommendation for a whole pod, split evenly over its containers.
    pub pod_min_cpu_milli: i64,
    pub pod_min_memory_bytes: i64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            cpu_histogram: Options::cpu(),
            memory_histogram: Options::memory(),
            cpu_half_life: SignedDuration::from_hours(24),
            memory_half_life: SignedDuration::from_hours(24),
            cpu_sample_weight: 0.1,
            memory_interval: SignedDuration::from_hours(24),
            memory_interval_count: 8,
            oom_min_bump_bytes: 100 * 1024 * 1024,
            oom_bump_ratio: 1.2,
            target_percentile: 0.9,
            lower_percentile: 0.5,
            upper_percentile: 0.95,
            safety_margin: 0.15,
            confidence_interval: SignedDuration::from_hours(24),
            pod_min_cpu_milli: 25,
            pod_min_memory_bytes: 250 * 1024 * 1024,
        }
    }
}

impl Config {
    /// How long an aggregate without samples is kept (the memory history length).
    pub fn history(&self) -> SignedDuration {
        self.memory_interval * i32::try_from(self.memory_interval_count).unwrap_or(8)
    }
}

/// The histograms of one container name of one Autoscaler.
#[derive(Clone, Debug, PartialEq)]
pub struct Aggregate {
    pub cpu: Decaying,
    pub memory: Decaying,
    pub first_sample_start: Option<Timestamp>,
    pub last_sample_start: Option<Timestamp>,
    pub total_samples_count: i64,
    /// When the aggregate was created or restored (for garbage collection of empty ones).
    pub created: Timestamp,
}

impl Aggregate {
    pub fn new(config: &Config, now: Timestamp) -> Self {
        Aggregate {
            cpu: Decaying::new(config.cpu_histogram, config.cpu_half_life),
            memory: Decaying::new(config.memory_histogram, config.memory_half_life),
            first_sample_start: None,
            last_sample_start: None,
            total_samples_count: 0,
            created: now,
        }
    }

    fn add_cpu(&mut self, config: &Config, cores: f64, t: Timestamp) {
        self.cpu.add(cores, config.cpu_sample_weight, t);
        if self.last_sample_start.is_none_or(|l| t > l) {
            self.last_sample_start = Some(t);
        }
        if self.first_sample_start.is_none_or(|f| t < f) {
            self.first_sample_start = Some(t);
        }
        self.total_samples_count += 1;
    }

    /// `(last − first) / interval` and `samples / interval-in-minutes`, whichever is smaller:
    /// a long history of few samples is as uncertain as many samples over a short time.
    pub fn confidence(&self, config: &Config) -> f64 {
        let (Some(first), Some(last)) = (self.first_sample_start, self.last_sample_start) else {
            return 0.0;
        };
        let ci = config.confidence_interval.as_secs_f64();
        if ci <= 0.0 {
            return 0.0;
        }
        let life = last.duration_since(first).as_secs_f64() / ci;
        let samples = self.total_samples_count as f64 / (ci / 60.0);
        life.min(samples)
    }

    /// Whether nothing was seen for the whole history (counted from creation when empty).
    pub fn expired(&self, config: &Config, now: Timestamp) -> bool {
        let since = self.last_sample_start.unwrap_or(self.created);
        now.duration_since(since) >= config.history()
    }

    /// The checkpoint form.
    pub fn save(&self, container: &str, now: Timestamp) -> ContainerCheckpoint {
        ContainerCheckpoint {
            container_name: container.to_owned(),
            version: CHECKPOINT_VERSION.to_owned(),
            last_update_time: Some(Time(now)),
            first_sample_start: self.first_sample_start.map(Time),
            last_sample_start: self.last_sample_start.map(Time),
            total_samples_count: self.total_samples_count,
            cpu_histogram: self.cpu.save(),
            memory_histogram: self.memory.save(),
        }
    }

    /// Restores a checkpoint; another version or a malformed histogram is refused with why.
    pub fn load(config: &Config, cp: &ContainerCheckpoint, now: Timestamp) -> Result<Self, String> {
        if cp.version != CHECKPOINT_VERSION {
            return Err(format!("checkpoint version {:?} is not {CHECKPOINT_VERSION:?}", cp.version));
        }
        let mut a = Aggregate::new(config, now);
        a.cpu.load(&cp.cpu_histogram).map_err(|e| format!("cpuHistogram: {e}"))?;
        a.memory.load(&cp.memory_histogram).map_err(|e| format!("memoryHistogram: {e}"))?;
        a.first_sample_start = cp.first_sample_start.as_ref().map(|t| t.0);
        a.last_sample_start = cp.last_sample_start.as_ref().map(|t| t.0);
        a.total_samples_count = cp.total_samples_count.max(0);
        Ok(a)
    }

    /// Bytes held, inline and on the heap.
    pub fn size_bytes(&self) -> usize {
        std::mem::size_of::<Self>() + self.cpu.heap_bytes() + self.memory.heap_bytes()
    }
}

/// Per running container: what turns its samples into aggregate updates.
#[derive(Clone, Debug, Default, PartialEq)]
struct Container {
    last_cpu: Option<Timestamp>,
    last_memory: Option<Timestamp>,
    window_end: Option<Timestamp>,
    memory_peak: i64,
    oom_peak: i64,
    /// finishedAt of the last OOM recorded, so one termination counts once.
    last_oom: Option<Timestamp>,
    seen: bool,
}

/// Why a sample or OOM did not count.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rejected {
    /// Negative usage.
    Invalid,
    /// Not newer than the last sample of that resource.
    OutOfOrder,
    /// An OOM from before the current memory history window.
    OomTooOld,
    /// This termination was already counted.
    OomAlreadyRecorded,
}

/// One Autoscaler's part of the model: an aggregate per container name and the states of its
/// pods' containers. Kept together so a round touches one owner entry and then only small
/// per-owner collections, with no per-sample allocation once a pod is known.
#[derive(Clone, Debug, Default)]
struct Owner {
    aggregates: Vec<(Arc<str>, Aggregate)>,
    /// Pod name → its containers' states.
    pods: HashMap<Box<str>, Vec<(Arc<str>, Container)>>,
}

/// The recommender's whole memory, by Autoscaler (`namespace/name`).
#[derive(Clone, Debug, Default)]
pub struct Model {
    pub config: Config,
    owners: HashMap<Arc<str>, Owner>,
}

/// One container's usage in one round.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Observation {
    /// Start of the measurement window.
    pub time: Timestamp,
    pub cpu_milli: Option<i64>,
    pub memory_bytes: Option<i64>,
}

impl Model {
    pub fn new(config: Config) -> Self {
        Model { config, owners: HashMap::new() }
    }

    pub fn aggregate(&self, owner: &str, container: &str) -> Option<&Aggregate> {
        self.owners.get(owner)?.aggregates.iter().find(|(c, _)| &**c == container).map(|(_, a)| a)
    }

    /// Aggregates of one Autoscaler, by container name.
    pub fn aggregates_of<'a>(&'a self, owner: &str) -> impl Iterator<Item = (&'a str, &'a Aggregate)> + 'a {
        self.owners.get(owner).into_iter().flat_map(|o| o.aggregates.iter().map(|(c, a)| (&**c, a)))
    }

    pub fn aggregate_count(&self) -> usize {
        self.owners.values().map(|o| o.aggregates.len()).sum()
    }

    pub fn container_count(&self) -> usize {
        self.owners.values().flat_map(|o| o.pods.values()).map(Vec::len).sum()
    }

    /// Installs a restored aggregate (from a checkpoint), unless one with samples exists.
    pub fn restore(&mut self, owner: Arc<str>, container: Arc<str>, aggregate: Aggregate) {
        let o = self.owners.entry(owner).or_default();
        match o.aggregates.iter_mut().find(|(c, _)| *c == container) {
            Some((_, slot)) => {
                if slot.total_samples_count == 0 && slot.memory.is_empty() {
                    *slot = aggregate;
                }
            }
            None => o.aggregates.push((container, aggregate)),
        }
    }

    /// One Autoscaler's part of the model, looked up once for all of its samples of a round.
    pub fn owner(&mut self, owner: &Arc<str>) -> OwnerRef<'_> {
        OwnerRef { config: &self.config, o: self.owners.entry(owner.clone()).or_default() }
    }

    /// [`OwnerRef::observe`] for one sample.
    pub fn observe(
        &mut self,
        owner: &Arc<str>,
        pod: &str,
        container: &Arc<str>,
        o: Observation,
    ) -> (Result<(), Rejected>, Result<(), Rejected>) {
        self.owner(owner).observe(pod, container, o)
    }

    /// [`OwnerRef::record_oom`] for one OOM kill.
    pub fn record_oom(
        &mut self,
        owner: &Arc<str>,
        pod: &str,
        container: &Arc<str>,
        time: Timestamp,
        request_bytes: i64,
    ) -> Result<i64, Rejected> {
        self.owner(owner).record_oom(pod, container, time, request_bytes)
    }

    /// Starts a round: containers not observed by [`Model::end_round`] are forgotten.
    pub fn begin_round(&mut self) {
        for c in self.owners.values_mut().flat_map(|o| o.pods.values_mut()).flatten() {
            c.1.seen = false;
        }
    }

    /// Forgets containers of pods that are gone, and aggregates of Autoscalers that are gone
    /// (`live(owner)` false) or that saw nothing for the whole history.
    pub fn end_round(&mut self, now: Timestamp, live: impl Fn(&str) -> bool) {
        let config = &self.config;
        self.owners.retain(|owner, o| {
            if !live(owner) {
                return false;
            }
            o.pods.retain(|_, cs| {
                cs.retain(|(_, c)| c.seen);
                !cs.is_empty()
            });
            o.aggregates.retain(|(_, a)| !a.expired(config, now));
            !o.aggregates.is_empty() || !o.pods.is_empty()
        });
    }
}

/// Mutable access to one Autoscaler's histograms and container states.
#[derive(Debug)]
pub struct OwnerRef<'a> {
    config: &'a Config,
    o: &'a mut Owner,
}

fn same(a: &Arc<str>, b: &Arc<str>) -> bool {
    Arc::ptr_eq(a, b) || a == b
}

impl OwnerRef<'_> {
    fn with_slot<R>(&mut self, pod: &str, container: &Arc<str>, now: Timestamp, f: impl FnOnce(Slot<'_>) -> R) -> R {
        let config = self.config;
        let o = &mut *self.o;
        let ai = match o.aggregates.iter().position(|(c, _)| same(c, container)) {
            Some(i) => i,
            None => {
                o.aggregates.push((container.clone(), Aggregate::new(config, now)));
                o.aggregates.len() - 1
            }
        };
        let states = match o.pods.get_mut(pod) {
            Some(s) => s,
            None => o.pods.entry(Box::from(pod)).or_default(),
        };
        let si = match states.iter().position(|(c, _)| same(c, container)) {
            Some(i) => i,
            None => {
                states.push((container.clone(), Container::default()));
                states.len() - 1
            }
        };
        let state = &mut states[si].1;
        state.seen = true;
        f(Slot { config, aggregate: &mut o.aggregates[ai].1, state })
    }

    /// Feeds one round of one container's usage (`pod` names the pod within the Autoscaler's
    /// namespace). Returns what was refused, if anything.
    pub fn observe(
        &mut self,
        pod: &str,
        container: &Arc<str>,
        o: Observation,
    ) -> (Result<(), Rejected>, Result<(), Rejected>) {
        self.with_slot(pod, container, o.time, |mut s| {
            let cpu = o.cpu_milli.map_or(Ok(()), |m| s.add_cpu(o.time, m));
            let mem = o.memory_bytes.map_or(Ok(()), |b| s.add_memory(o.time, b, false));
            (cpu, mem)
        })
    }

    /// Records an OOM kill at `time` of a container that requested `request_bytes` (0 if none):
    /// the next memory peak becomes what it had plus max(100 MiB, 20 %).
    pub fn record_oom(
        &mut self,
        pod: &str,
        container: &Arc<str>,
        time: Timestamp,
        request_bytes: i64,
    ) -> Result<i64, Rejected> {
        self.with_slot(pod, container, time, |mut s| {
            if s.state.last_oom.is_some_and(|l| time <= l) {
                return Err(Rejected::OomAlreadyRecorded);
            }
            if let Some(last) = s.state.last_memory {
                if time < last - s.config.memory_interval {
                    return Err(Rejected::OomTooOld);
                }
            }
            let used = request_bytes.max(s.state.memory_peak);
            let needed = used.saturating_add(s.config.oom_min_bump_bytes).max(scale(used, s.config.oom_bump_ratio));
            s.add_memory(time, needed, true)?;
            s.state.last_oom = Some(time);
            Ok(needed)
        })
    }
}

struct Slot<'a> {
    config: &'a Config,
    aggregate: &'a mut Aggregate,
    state: &'a mut Container,
}

impl Slot<'_> {
    fn add_cpu(&mut self, t: Timestamp, milli: i64) -> Result<(), Rejected> {
        if milli < 0 {
            return Err(Rejected::Invalid);
        }
        if self.state.last_cpu.is_some_and(|l| t <= l) {
            return Err(Rejected::OutOfOrder);
        }
        self.aggregate.add_cpu(self.config, milli as f64 / 1000.0, t);
        self.state.last_cpu = Some(t);
        Ok(())
    }

    /// One peak per interval: a higher sample in the same interval replaces the peak; the
    /// first sample of a later interval starts a new one. OOM samples are always taken.
    fn add_memory(&mut self, t: Timestamp, bytes: i64, oom: bool) -> Result<(), Rejected> {
        if bytes < 0 {
            return Err(Rejected::Invalid);
        }
        if !oom && self.state.last_memory.is_some_and(|l| t < l) {
            return Err(Rejected::OutOfOrder);
        }
        let st = &mut *self.state;
        st.last_memory = Some(t);
        let end = *st.window_end.get_or_insert(t);
        let interval = self.config.memory_interval;
        let mut new_peak = false;
        if t < end {
            let old = st.memory_peak.max(st.oom_peak);
            if old != 0 && bytes > old {
                self.aggregate.memory.subtract(old as f64, 1.0, end);
                new_peak = true;
            }
        } else {
            let i = interval.as_nanos().max(1);
            let behind = t.duration_since(end).as_nanos();
            let shift = behind - behind.rem_euclid(i) + i;
            let shifted = end.as_nanosecond().saturating_add(shift);
            st.window_end = Some(Timestamp::from_nanosecond(shifted).unwrap_or(t));
            st.memory_peak = 0;
            st.oom_peak = 0;
            new_peak = true;
        }
        if new_peak {
            let end = st.window_end.unwrap_or(t);
            self.aggregate.memory.add(bytes as f64, 1.0, end);
            if oom {
                st.oom_peak = bytes;
            } else {
                st.memory_peak = bytes;
            }
        }
        Ok(())
    }
}

/// `amount × factor`, truncated, as upstream's `ScaleResource` (capped at its 1e14 maximum).
pub fn scale(amount: i64, factor: f64) -> i64 {
    from_float(amount as f64 * factor)
}

/// Upstream's `resourceAmountFromFloat`: negative → 0, above 1e14 → 1e14, else truncated.
pub fn from_float(v: f64) -> i64 {
    const MAX: f64 = 1e14;
    if v.is_nan() || v < 0.0 {
        0
    } else if v > MAX {
        MAX as i64
    } else {
        v as i64
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    const MIB: i64 = 1024 * 1024;

    fn t(mins: i64) -> Timestamp {
        "2026-01-01T00:00:00Z".parse::<Timestamp>().unwrap() + SignedDuration::from_mins(mins)
    }

    fn keys() -> (Arc<str>, &'static str, Arc<str>) {
        (Arc::from("default/app"), "app-1", Arc::from("main"))
    }

    fn obs(mins: i64, cpu: Option<i64>, mem: Option<i64>) -> Observation {
        Observation { time: t(mins), cpu_milli: cpu, memory_bytes: mem }
    }

    #[test]
    fn v10_oom_bumps() {
        for (request, peak, want) in [(1000 * MIB, 0, 1200 * MIB), (MIB, 0, 101 * MIB), (0, 3000 * MIB, 3600 * MIB)] {
            let mut m = Model::default();
            let (o, p, c) = keys();
            if peak > 0 {
                let _ = m.observe(&o, p, &c, obs(0, None, Some(peak)));
            }
            assert_eq!(m.record_oom(&o, p, &c, t(1), request), Ok(want), "request {request} peak {peak}");
        }
    }

    #[test]
    fn oom_counts_once_and_not_when_too_old() {
        let mut m = Model::default();
        let (o, p, c) = keys();
        let _ = m.observe(&o, p, &c, obs(3 * 24 * 60, None, Some(10 * MIB)));
        assert!(m.record_oom(&o, p, &c, t(3 * 24 * 60 + 5), 100 * MIB).is_ok());
        assert_eq!(m.record_oom(&o, p, &c, t(3 * 24 * 60 + 5), 100 * MIB), Err(Rejected::OomAlreadyRecorded));
        assert_eq!(m.record_oom(&o, p, &c, t(0), 100 * MIB).err(), Some(Rejected::OomAlreadyRecorded));
        let mut m = Model::default();
        let _ = m.observe(&o, p, &c, obs(3 * 24 * 60, None, Some(10 * MIB)));
        assert_eq!(m.record_oom(&o, p, &c, t(0), 100 * MIB), Err(Rejected::OomTooOld));
    }

    #[test]
    fn cpu_samples_must_be_newer_and_count() {
        let mut m = Model::default();
        let (o, p, c) = keys();
        assert_eq!(m.observe(&o, p, &c, obs(1, Some(500), None)).0, Ok(()));
        assert_eq!(m.observe(&o, p, &c, obs(1, Some(500), None)).0, Err(Rejected::OutOfOrder));
        assert_eq!(m.observe(&o, p, &c, obs(0, Some(500), None)).0, Err(Rejected::OutOfOrder));
        assert_eq!(m.observe(&o, p, &c, obs(2, Some(-1), None)).0, Err(Rejected::Invalid));
        assert_eq!(m.observe(&o, p, &c, obs(3, Some(500), None)).0, Ok(()));
        let a = m.aggregate("default/app", "main").unwrap();
        assert_eq!(a.total_samples_count, 2);
        assert_eq!(a.first_sample_start, Some(t(1)));
        assert_eq!(a.last_sample_start, Some(t(3)));
    }

    #[test]
    fn memory_keeps_one_peak_per_interval() {
        let mut m = Model::default();
        let (o, p, c) = keys();
        for (i, mb) in [100, 300, 200].into_iter().enumerate() {
            let _ = m.observe(&o, p, &c, obs(i as i64, None, Some(mb * MIB)));
        }
        let a = m.aggregate("default/app", "main").unwrap();
        // One peak (300 MiB) with weight 1 at the window end.
        assert!((a.memory.histogram().total_weight() - 1.0).abs() < 1e-9, "{}", a.memory.histogram().total_weight());
        let p95 = a.memory.percentile(0.95);
        assert!(p95 > 300.0 * MIB as f64 && p95 < 1.06 * 300.0 * MIB as f64, "{p95}");
        // The next day starts a second peak.
        let _ = m.observe(&o, p, &c, obs(24 * 60 + 1, None, Some(50 * MIB)));
        let a = m.aggregate("default/app", "main").unwrap();
        assert!(a.memory.histogram().total_weight() > 1.5);
    }

    #[test]
    fn rounds_forget_gone_pods_and_expired_aggregates() {
        let mut m = Model::default();
        let (o, p, c) = keys();
        let _ = m.observe(&o, p, &c, obs(0, Some(100), Some(MIB)));
        m.begin_round();
        m.end_round(t(1), |_| true);
        assert_eq!(m.container_count(), 0);
        assert_eq!(m.aggregate_count(), 1);
        m.end_round(t(8 * 24 * 60), |_| true);
        assert_eq!(m.aggregate_count(), 0);
        let _ = m.observe(&o, p, &c, obs(9 * 24 * 60, Some(100), None));
        m.end_round(t(9 * 24 * 60), |owner| owner != "default/app");
        assert_eq!(m.aggregate_count(), 0);
    }

    #[test]
    fn aggregate_state_fits_in_4_kib() {
        let a = Aggregate::new(&Config::default(), t(0));
        assert!(a.size_bytes() <= 4096, "{}", a.size_bytes());
    }

    #[test]
    fn checkpoint_round_trip_keeps_the_aggregate() {
        let mut m = Model::default();
        let (o, p, c) = keys();
        for i in 0..300 {
            let _ = m.observe(&o, p, &c, obs(i, Some(200 + (i % 7) * 40), Some((20 + i % 5) * MIB)));
        }
        let a = m.aggregate("default/app", "main").unwrap();
        let cp = a.save("main", t(300));
        let json = serde_json::to_string(&cp).unwrap();
        let back: ContainerCheckpoint = serde_json::from_str(&json).unwrap();
        let b = Aggregate::load(&m.config, &back, t(301)).unwrap();
        assert_eq!(b.total_samples_count, 300);
        assert_eq!(b.first_sample_start, a.first_sample_start);
        for q in [0.5, 0.9, 0.95] {
            assert_eq!(b.cpu.percentile(q), a.cpu.percentile(q));
            assert_eq!(b.memory.percentile(q), a.memory.percentile(q));
        }
        let mut wrong = back.clone();
        wrong.version = "v2".into();
        assert!(Aggregate::load(&m.config, &wrong, t(301)).unwrap_err().contains("v2"));
    }
}
