//! The price table the `price` expander ranks groups with.
//!
//! AWS's Pricing API is not something an autoscaler should call on its hot path (Cluster
//! Autoscaler's AWS provider does not implement prices at all, which is why its price expander
//! is unavailable on AWS). A shipped table of us-east-1 Linux on-demand rates (USD per hour,
//! from the public rate card) ranks types correctly in every region, because regional prices
//! scale roughly together. Unknown types have no price; the expander then falls back to
//! vCPU × m5.large's price per vCPU (a general-purpose baseline), so they still rank sensibly.

/// (instance type, on-demand USD per hour), sorted by name.
const TABLE: &[(&str, f64)] = &[
    ("t2.micro", 0.0116),
    ("t2.small", 0.023),
    ("t2.medium", 0.0464),
    ("t2.large", 0.0928),
    ("t2.xlarge", 0.1856),
    ("t3.micro", 0.0104),
    ("t3.small", 0.0208),
    ("t3.medium", 0.0416),
    ("t3.large", 0.0832),
    ("t3.xlarge", 0.1664),
    ("t3.2xlarge", 0.3328),
    ("t3a.medium", 0.0376),
    ("t3a.large", 0.0752),
    ("t4g.small", 0.0168),
    ("t4g.medium", 0.0336),
    ("t4g.large", 0.0672),
    ("m5.large", 0.096),
    ("m5.xlarge", 0.192),
    ("m5.2xlarge", 0.384),
    ("m5.4xlarge", 0.768),
    ("m6i.large", 0.096),
    ("m6i.xlarge", 0.192),
    ("m6i.2xlarge", 0.384),
    ("m6g.large", 0.077),
    ("m6g.xlarge", 0.154),
    ("c5.large", 0.085),
    ("c5.xlarge", 0.17),
    ("c5.2xlarge", 0.34),
    ("c5.4xlarge", 0.68),
    ("c6i.large", 0.085),
    ("c6i.xlarge", 0.17),
    ("r5.large", 0.126),
    ("r5.xlarge", 0.252),
    ("r5.2xlarge", 0.504),
];

/// The on-demand hourly price of a type, when the table has it.
pub fn on_demand(instance_type: &str) -> Option<f64> {
    TABLE.iter().find(|(n, _)| *n == instance_type).map(|(_, p)| *p)
}

/// Price per vCPU-hour used for types the table lacks: m5.large's.
pub fn per_vcpu_fallback() -> f64 {
    0.096 / 2.0
}

#[cfg(test)]
mod tests {
    #[test]
    fn known_and_unknown() {
        assert_eq!(super::on_demand("t3.small"), Some(0.0208));
        assert_eq!(super::on_demand("m5.large"), Some(0.096));
        assert_eq!(super::on_demand("z9.huge"), None);
    }
}
