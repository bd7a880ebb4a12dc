//! Load models that turn simulated time into per-pod resource usage, standing in for the
//! metrics-server numbers the autoscalers under test react to.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::common::{MIB, SimTime, splitmix64, unit_f64};

/// One step of a piecewise-constant rate: from `at` seconds on, `rps` requests per second.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateStep {
    pub at: f64,
    pub rps: f64,
}

/// A rate oscillating around `base`, e.g. a day/night pattern compressed in time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SineRate {
    pub base: f64,
    pub amplitude: f64,
    pub period_seconds: f64,
}

/// `base` rate, replaced by `burst` for `durationSeconds` at the start of every
/// `everySeconds` window (the first burst starts at t = 0).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BurstRate {
    pub base: f64,
    pub burst: f64,
    pub every_seconds: f64,
    pub duration_seconds: f64,
}

/// Requests per second reaching a workload as a function of time. In YAML it is a
/// single-key map: `{constant: 100}`, `{steps: [...]}`, `{sine: {...}}`, `{bursts: {...}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum RequestRate {
    Constant(f64),
    /// Before the first step the rate is 0; steps need not be sorted (the latest `at` ≤ t wins,
    /// and among equal `at` the later entry wins).
    Steps(Vec<RateStep>),
    Sine(SineRate),
    Bursts(BurstRate),
}

fn non_negative(x: f64) -> f64 {
    if x.is_finite() && x > 0.0 { x } else { 0.0 }
}

impl RequestRate {
    /// Requests per second at `t`; never negative, never NaN.
    pub fn rate_at(&self, t: SimTime) -> f64 {
        let r = match self {
            RequestRate::Constant(r) => *r,
            RequestRate::Steps(steps) => {
                let mut best: Option<&RateStep> = None;
                for s in steps {
                    if s.at <= t && best.is_none_or(|b| s.at >= b.at) {
                        best = Some(s);
                    }
                }
                best.map_or(0.0, |s| s.rps)
            }
            RequestRate::Sine(s) => {
                if s.period_seconds > 0.0 {
                    s.base + s.amplitude * (std::f64::consts::TAU * t / s.period_seconds).sin()
                } else {
                    s.base
                }
            }
            RequestRate::Bursts(b) => {
                if b.every_seconds > 0.0 && t.rem_euclid(b.every_seconds) < b.duration_seconds {
                    b.burst
                } else {
                    b.base
                }
            }
        };
        non_negative(r)
    }

    /// Problems a scenario author should hear about (negative or non-finite parameters).
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut check = |name: &str, v: f64| {
            if !v.is_finite() || v < 0.0 {
                out.push(format!("{name} must be a finite number >= 0, got {v}"));
            }
        };
        match self {
            RequestRate::Constant(r) => check("constant", *r),
            RequestRate::Steps(steps) => {
                for (i, s) in steps.iter().enumerate() {
                    check(&format!("steps[{i}].at"), s.at);
                    check(&format!("steps[{i}].rps"), s.rps);
                }
            }
            RequestRate::Sine(s) => {
                check("sine.base", s.base);
                check("sine.amplitude", s.amplitude);
                check("sine.periodSeconds", s.period_seconds);
            }
            RequestRate::Bursts(b) => {
                check("bursts.base", b.base);
                check("bursts.burst", b.burst);
                check("bursts.everySeconds", b.every_seconds);
                check("bursts.durationSeconds", b.duration_seconds);
            }
        }
        out
    }
}

/// What one pod consumes at an instant, in metrics-server units.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodUsage {
    pub cpu_millis: f64,
    pub memory_bytes: f64,
}

/// A request-driven workload: traffic spread evenly over the ready pods behind a Service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadLoad {
    #[serde(with = "serde_yaml::with::singleton_map")]
    pub rate: RequestRate,
    pub cpu_per_request_millis: f64,
    #[serde(rename = "memoryBaseMiB")]
    pub memory_base_mib: f64,
    #[serde(rename = "memoryPerRequestMiB")]
    pub memory_per_request_mib: f64,
}

impl WorkloadLoad {
    /// Usage of each ready pod at `t`. A CPU limit caps usage like CFS throttling does, and a
    /// throttled pod also serves fewer requests, so per-request memory follows the served rate.
    /// With no ready pods nothing is served and nothing is used.
    pub fn pod_usage(&self, t: SimTime, ready_pods: u32, cpu_limit_millis: Option<f64>) -> PodUsage {
        if ready_pods == 0 {
            return PodUsage::default();
        }
        let rps = self.rate.rate_at(t) / f64::from(ready_pods);
        let per_req = non_negative(self.cpu_per_request_millis);
        let mut cpu = rps * per_req;
        let mut served = rps;
        if let Some(limit) = cpu_limit_millis.filter(|l| l.is_finite() && *l >= 0.0) {
            if cpu > limit {
                cpu = limit;
                served = if per_req > 0.0 { limit / per_req } else { rps };
            }
        }
        let mem_mib = non_negative(self.memory_base_mib) + served * non_negative(self.memory_per_request_mib);
        PodUsage { cpu_millis: non_negative(cpu), memory_bytes: non_negative(mem_mib * MIB) }
    }
}

/// Steady per-container usage for vertical-scaling scenarios, where demand doesn't depend on
/// traffic (the VPA "hamster" example burns ~500m regardless of replicas).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContainerUsage {
    pub cpu_millis: f64,
    #[serde(rename = "memoryMiB")]
    pub memory_mib: f64,
    /// Relative noise amplitude in [0, 1]: each value moves within ±jitter of its nominal value.
    #[serde(default)]
    pub jitter: f64,
}

impl ContainerUsage {
    /// The upstream VPA example's hamster container: a busy loop using about half a core and
    /// very little memory.
    pub fn hamster() -> Self {
        Self { cpu_millis: 500.0, memory_mib: 8.0, jitter: 0.1 }
    }

    /// Usage at `t`. The noise is a hash of `seed` and the whole second of `t`, so samples
    /// within one second agree and every replay yields the same series.
    pub fn usage_at(&self, t: SimTime, seed: u64) -> PodUsage {
        let jitter = if self.jitter.is_finite() { self.jitter.clamp(0.0, 1.0) } else { 0.0 };
        let second = if t.is_finite() { t.floor() as i64 } else { 0 };
        let h = splitmix64(seed ^ splitmix64(second as u64));
        let noise_cpu = unit_f64(h) * 2.0 - 1.0;
        let noise_mem = unit_f64(splitmix64(h)) * 2.0 - 1.0;
        PodUsage {
            cpu_millis: non_negative(self.cpu_millis * (1.0 + jitter * noise_cpu)),
            memory_bytes: non_negative(self.memory_mib * (1.0 + jitter * noise_mem) * MIB),
        }
    }
}

/// Usage of a whole pod given per-container fixed usage, so callers can sum containers in one
/// place; each container gets its own noise stream derived from `seed` and its name.
pub fn containers_usage_at(containers: &BTreeMap<String, ContainerUsage>, t: SimTime, seed: u64) -> PodUsage {
    let mut total = PodUsage::default();
    for (name, c) in containers {
        let name_hash =
            name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
        let u = c.usage_at(t, seed ^ name_hash);
        total.cpu_millis += u.cpu_millis;
        total.memory_bytes += u.memory_bytes;
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    fn php_apache() -> WorkloadLoad {
        WorkloadLoad {
            rate: RequestRate::Constant(100.0),
            cpu_per_request_millis: 4.8,
            memory_base_mib: 10.0,
            memory_per_request_mib: 0.0,
        }
    }

    #[test]
    fn php_apache_numbers() {
        let load = php_apache();
        let limit = Some(500.0);
        let one = load.pod_usage(30.0, 1, limit);
        assert!((one.cpu_millis - 480.0).abs() < 1e-9);
        // 240% of the 200m request.
        assert!((one.cpu_millis / 200.0 * 100.0 - 240.0).abs() < 1e-9);
        assert!((load.pod_usage(30.0, 2, limit).cpu_millis - 240.0).abs() < 1e-9);
        let seven = load.pod_usage(30.0, 7, limit).cpu_millis;
        assert!((seven - 480.0 / 7.0).abs() < 1e-9 && (68.0..70.0).contains(&seven));
        assert_eq!(one.memory_bytes, 10.0 * MIB);
        assert_eq!(load.pod_usage(30.0, 0, limit), PodUsage::default());
    }

    #[test]
    fn cpu_limit_caps_usage_and_served_memory() {
        let mut load = php_apache();
        load.rate = RequestRate::Constant(200.0);
        load.memory_per_request_mib = 1.0;
        let capped = load.pod_usage(0.0, 1, Some(500.0));
        assert_eq!(capped.cpu_millis, 500.0);
        // 500m / 4.8m per request ≈ 104.2 served rps.
        assert!((capped.memory_bytes / MIB - (10.0 + 500.0 / 4.8)).abs() < 1e-9);
        let uncapped = load.pod_usage(0.0, 1, None);
        assert!((uncapped.cpu_millis - 960.0).abs() < 1e-9);
    }

    #[test]
    fn steps() {
        let r = RequestRate::Steps(vec![
            RateStep { at: 0.0, rps: 0.0 },
            RateStep { at: 60.0, rps: 100.0 },
            RateStep { at: 480.0, rps: 0.0 },
        ]);
        assert_eq!(r.rate_at(0.0), 0.0);
        assert_eq!(r.rate_at(59.9), 0.0);
        assert_eq!(r.rate_at(60.0), 100.0);
        assert_eq!(r.rate_at(479.0), 100.0);
        assert_eq!(r.rate_at(480.0), 0.0);
        let unsorted = RequestRate::Steps(vec![RateStep { at: 100.0, rps: 5.0 }, RateStep { at: 10.0, rps: 1.0 }]);
        assert_eq!(unsorted.rate_at(5.0), 0.0);
        assert_eq!(unsorted.rate_at(50.0), 1.0);
        assert_eq!(unsorted.rate_at(150.0), 5.0);
    }

    #[test]
    fn sine_and_bursts() {
        let s = RequestRate::Sine(SineRate { base: 100.0, amplitude: 50.0, period_seconds: 400.0 });
        assert!((s.rate_at(0.0) - 100.0).abs() < 1e-9);
        assert!((s.rate_at(100.0) - 150.0).abs() < 1e-9);
        assert!((s.rate_at(300.0) - 50.0).abs() < 1e-9);
        let deep = RequestRate::Sine(SineRate { base: 10.0, amplitude: 50.0, period_seconds: 400.0 });
        assert_eq!(deep.rate_at(300.0), 0.0);
        let b = RequestRate::Bursts(BurstRate { base: 5.0, burst: 80.0, every_seconds: 300.0, duration_seconds: 60.0 });
        assert_eq!(b.rate_at(0.0), 80.0);
        assert_eq!(b.rate_at(59.0), 80.0);
        assert_eq!(b.rate_at(60.0), 5.0);
        assert_eq!(b.rate_at(310.0), 80.0);
        assert_eq!(RequestRate::Constant(-3.0).rate_at(0.0), 0.0);
        assert_eq!(RequestRate::Constant(f64::NAN).rate_at(0.0), 0.0);
        assert!(RequestRate::Constant(-3.0).problems()[0].contains("constant"));
        assert!(s.problems().is_empty());
    }

    #[test]
    fn yaml_round_trip() {
        let snippets = [
            "rate: {constant: 100}\ncpuPerRequestMillis: 4.8\nmemoryBaseMiB: 10\nmemoryPerRequestMiB: 0\n",
            "rate: {steps: [{at: 0, rps: 0}, {at: 60, rps: 100}]}\ncpuPerRequestMillis: 1\nmemoryBaseMiB: 1\nmemoryPerRequestMiB: 0.1\n",
            "rate: {sine: {base: 10, amplitude: 5, periodSeconds: 600}}\ncpuPerRequestMillis: 1\nmemoryBaseMiB: 1\nmemoryPerRequestMiB: 0\n",
            "rate: {bursts: {base: 1, burst: 50, everySeconds: 300, durationSeconds: 30}}\ncpuPerRequestMillis: 1\nmemoryBaseMiB: 1\nmemoryPerRequestMiB: 0\n",
        ];
        for s in snippets {
            let load: WorkloadLoad = serde_yaml::from_str(s).unwrap();
            let yaml = serde_yaml::to_string(&load).unwrap();
            assert!(!yaml.contains('!'), "map form expected: {yaml}");
            assert_eq!(serde_yaml::from_str::<WorkloadLoad>(&yaml).unwrap(), load);
            let json = serde_json::to_string(&load).unwrap();
            assert_eq!(serde_json::from_str::<WorkloadLoad>(&json).unwrap(), load);
        }
        let load: WorkloadLoad = serde_yaml::from_str(snippets[0]).unwrap();
        assert_eq!(load.rate, RequestRate::Constant(100.0));
        let bad = "rate: {constant: 1}\ncpuPerRequest: 1\nmemoryBaseMiB: 1\nmemoryPerRequestMiB: 0\n";
        let err = serde_yaml::from_str::<WorkloadLoad>(bad).unwrap_err().to_string();
        assert!(err.contains("cpuPerRequest"), "{err}");
        let bad = "rate: {linear: 1}\ncpuPerRequestMillis: 1\nmemoryBaseMiB: 1\nmemoryPerRequestMiB: 0\n";
        assert!(serde_yaml::from_str::<WorkloadLoad>(bad).is_err());
        let c: ContainerUsage = serde_yaml::from_str("{cpuMillis: 500, memoryMiB: 100, jitter: 0.1}").unwrap();
        assert_eq!(c, ContainerUsage { cpu_millis: 500.0, memory_mib: 100.0, jitter: 0.1 });
    }

    #[test]
    fn container_jitter_is_bounded_and_deterministic() {
        let h = ContainerUsage::hamster();
        let mut min = f64::MAX;
        let mut max = f64::MIN;
        for i in 0..600 {
            let t = f64::from(i);
            let u = h.usage_at(t, 7);
            assert_eq!(u, h.usage_at(t, 7));
            assert_eq!(u, h.usage_at(t + 0.5, 7));
            assert!((450.0..=550.0).contains(&u.cpu_millis), "{}", u.cpu_millis);
            assert!(u.memory_bytes >= 8.0 * 0.9 * MIB && u.memory_bytes <= 8.0 * 1.1 * MIB);
            min = min.min(u.cpu_millis);
            max = max.max(u.cpu_millis);
        }
        assert!(max - min > 50.0, "noise should actually vary: {min}..{max}");
        assert_ne!(h.usage_at(1.0, 7), h.usage_at(1.0, 8));
        let still = ContainerUsage { cpu_millis: 100.0, memory_mib: 10.0, jitter: 0.0 };
        assert_eq!(still.usage_at(3.0, 1).cpu_millis, 100.0);
        let mut map = BTreeMap::new();
        map.insert("a".to_string(), still.clone());
        map.insert("b".to_string(), still);
        assert_eq!(containers_usage_at(&map, 0.0, 1).cpu_millis, 200.0);
    }
}
