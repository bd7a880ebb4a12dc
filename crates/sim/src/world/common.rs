//! Small pieces shared by the world modules: simulated time, capacity types, a seeded
//! generator and Kubernetes quantity helpers.

use serde::{Deserialize, Serialize};

/// Seconds since the scenario started; every pure function takes it as an argument so a
/// run is reproducible and can be fast-forwarded.
pub type SimTime = f64;

/// Bytes in one mebibyte; the tables and scenario files speak MiB while Kubernetes speaks bytes.
pub const MIB: f64 = 1024.0 * 1024.0;

/// How an instance is bought; it drives price, launch preference and (for ASGs) the mixed
/// instances split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CapacityType {
    OnDemand,
    Spot,
}

impl CapacityType {
    /// The spelling used by the `karpenter.sh/capacity-type` label and the AWS APIs.
    pub fn as_str(self) -> &'static str {
        match self {
            CapacityType::OnDemand => "on-demand",
            CapacityType::Spot => "spot",
        }
    }
}

impl std::fmt::Display for CapacityType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One step of splitmix64: a tiny, well-mixed hash that makes jitter depend only on
/// (seed, time) so replays are identical.
pub fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Maps a hash to [0, 1) using its top 53 bits, the precision an f64 can hold exactly.
pub fn unit_f64(x: u64) -> f64 {
    (x >> 11) as f64 / (1u64 << 53) as f64
}

/// A seeded deterministic generator, for callers that need a stream rather than a hash.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        let out = splitmix64(self.state);
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        out
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        unit_f64(self.next_u64())
    }
}

/// Why a quantity string was rejected; carries the input so the scenario error can quote it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid quantity {input:?}: {reason}")]
pub struct QuantityError {
    pub input: String,
    pub reason: String,
}

/// A non-negative quantity in milli-units, parsed by the project's exact quantity parser.
fn parse_milli(input: &str) -> Result<f64, QuantityError> {
    let err = |reason: String| QuantityError { input: input.to_string(), reason };
    let q = omniscale_api::quantity::Quantity::parse(input.trim()).map_err(|e| err(e.to_string()))?;
    if q.is_negative() {
        return Err(err("must be non-negative".into()));
    }
    Ok(q.milli() as f64)
}

/// Parses a Kubernetes quantity ("2", "500m", "1.5") as CPU millicores.
pub fn parse_cpu_millis(input: &str) -> Result<f64, QuantityError> {
    parse_milli(input)
}

/// Parses a Kubernetes quantity ("8Gi", "512Mi", "1G", "100") as bytes.
pub fn parse_bytes(input: &str) -> Result<f64, QuantityError> {
    Ok(parse_milli(input)? / 1000.0)
}

/// Renders millicores the way `kubectl` would ("250m", "2").
pub fn format_cpu_millis(millis: f64) -> String {
    if !millis.is_finite() {
        return "-".to_string();
    }
    let m = millis.round();
    if m >= 1000.0 && (m % 1000.0) == 0.0 { format!("{}", m / 1000.0) } else { format!("{m}m") }
}

/// Renders bytes in the largest binary unit that keeps the number readable ("250Mi", "1.5Gi").
pub fn format_bytes(bytes: f64) -> String {
    if !bytes.is_finite() {
        return "-".to_string();
    }
    let units = [("Gi", 1024f64.powi(3)), ("Mi", MIB), ("Ki", 1024.0)];
    for (suffix, size) in units {
        if bytes.abs() >= size {
            let v = bytes / size;
            return if (v - v.round()).abs() < 0.05 {
                format!("{}{suffix}", v.round())
            } else {
                format!("{v:.1}{suffix}")
            };
        }
    }
    format!("{}", bytes.round())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_is_deterministic_and_spread() {
        assert_eq!(splitmix64(0), splitmix64(0));
        assert_ne!(splitmix64(1), splitmix64(2));
        let mut rng = SplitMix64::new(42);
        let mut again = SplitMix64::new(42);
        let a: Vec<f64> = (0..100).map(|_| rng.next_f64()).collect();
        let b: Vec<f64> = (0..100).map(|_| again.next_f64()).collect();
        assert_eq!(a, b);
        assert!(a.iter().all(|x| (0.0..1.0).contains(x)));
        let mean = a.iter().sum::<f64>() / a.len() as f64;
        assert!((0.35..0.65).contains(&mean), "mean {mean}");
    }

    #[test]
    fn quantities() {
        assert_eq!(parse_cpu_millis("2").unwrap(), 2000.0);
        assert_eq!(parse_cpu_millis("500m").unwrap(), 500.0);
        assert_eq!(parse_cpu_millis("1.5").unwrap(), 1500.0);
        assert_eq!(parse_bytes("8Gi").unwrap(), 8.0 * 1024.0 * 1024.0 * 1024.0);
        assert_eq!(parse_bytes("512Mi").unwrap(), 512.0 * MIB);
        assert_eq!(parse_bytes("1G").unwrap(), 1e9);
        assert_eq!(parse_bytes("1e3").unwrap(), 1000.0);
        assert!(parse_bytes("8GB").is_err());
        assert!(parse_cpu_millis("").is_err());
        assert!(parse_cpu_millis("abc").is_err());
        assert!(parse_cpu_millis("-1").is_err());
    }

    #[test]
    fn formatting() {
        assert_eq!(format_cpu_millis(250.0), "250m");
        assert_eq!(format_cpu_millis(2000.0), "2");
        assert_eq!(format_bytes(250.0 * MIB), "250Mi");
        assert_eq!(format_bytes(1.5 * 1024.0 * MIB), "1.5Gi");
        assert_eq!(format_bytes(f64::NAN), "-");
    }
}
