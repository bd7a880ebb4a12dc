//! Expanders: which of the groups that could help the pending pods grows.
//!
//! Cluster Autoscaler's expanders, as a chain: each keeps only the options it scores best, the
//! next breaks the ties. Remaining ties go to the group first by name (Cluster Autoscaler picks
//! at random; a deterministic choice makes plans reproducible and testable). `random` is
//! seeded by the loop's time, so it spreads choices over loops but repeats given the same input.

use std::str::FromStr;

use crate::prices;

/// One expander.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Expander {
    /// Least idle cpu + memory fraction on the new nodes (the default).
    LeastWaste,
    /// Most pending pods helped.
    MostPods,
    /// Fewest new nodes.
    LeastNodes,
    /// Highest NodePool `weight` (Cluster Autoscaler's priority expander, with the priority on
    /// the NodePool instead of a ConfigMap of regular expressions).
    Priority,
    /// Cheapest per helped pod with Cluster Autoscaler's node-size preference, from the shipped
    /// price table (CA's price expander, which its AWS provider cannot offer).
    Price,
    /// Any option.
    Random,
}

impl FromStr for Expander {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s.trim() {
            "least-waste" => Expander::LeastWaste,
            "most-pods" => Expander::MostPods,
            "least-nodes" => Expander::LeastNodes,
            "priority" => Expander::Priority,
            "price" => Expander::Price,
            "random" => Expander::Random,
            other => {
                return Err(format!(
                    "unknown expander {other:?} (least-waste, most-pods, least-nodes, priority, price, random)"
                ));
            }
        })
    }
}

/// Parses `--expander=priority,least-waste`.
pub fn parse_chain(s: &str) -> Result<Vec<Expander>, String> {
    let chain: Vec<Expander> =
        s.split(',').filter(|x| !x.trim().is_empty()).map(str::parse).collect::<Result<_, _>>()?;
    if chain.is_empty() { Err("the expander list is empty".into()) } else { Ok(chain) }
}

/// What an expander sees of one option.
#[derive(Clone, Debug, PartialEq)]
pub struct Candidate {
    pub group: String,
    pub nodes: u32,
    pub pods: u32,
    /// Requests of the helped pods (cpu millicores, memory bytes).
    pub pod_cpu: i64,
    pub pod_memory: i64,
    /// One new node's allocatable and vCPUs.
    pub node_cpu: i64,
    pub node_memory: i64,
    /// Hourly price of one node (the mean over the group's instance types), if known.
    pub node_price: Option<f64>,
    pub weight: i32,
}

impl Candidate {
    /// `(N·cpu − Σcpu)/(N·cpu) + (N·mem − Σmem)/(N·mem)`.
    pub fn waste(&self) -> f64 {
        let n = f64::from(self.nodes.max(1));
        let frac = |cap: i64, used: i64| {
            let total = n * cap.max(1) as f64;
            ((total - used as f64) / total).max(0.0)
        };
        frac(self.node_cpu, self.pod_cpu) + frac(self.node_memory, self.pod_memory)
    }

    /// Cluster Autoscaler's price score (lower is better): node cost over the pods' share,
    /// scaled up for nodes far from the preferred size for a cluster of `cluster_nodes`.
    pub fn price_score(&self, cluster_nodes: u32) -> f64 {
        let cpus = self.node_cpu.max(1) as f64 / 1000.0;
        let node_price = self.node_price.unwrap_or(cpus * prices::per_vcpu_fallback());
        let per_cpu = node_price / cpus;
        let n = f64::from(self.nodes.max(1));
        // A 0.5 cpu pod's price keeps tiny options from dividing by almost nothing.
        let stabiliser = 0.5 * per_cpu;
        let pods_price = (self.pod_cpu as f64 / 1000.0) * per_cpu;
        let price_sub = (n * node_price + stabiliser) / (pods_price + stabiliser);
        let preferred = match cluster_nodes {
            0..=2 => 1.0,
            3..=6 => 2.0,
            7..=20 => 4.0,
            21..=60 => 8.0,
            61..=200 => 16.0,
            _ => 32.0,
        };
        let unfit = (preferred / cpus).max(cpus / preferred);
        ((unfit - 1.0) * (1.0 - ((n - 1.0) / 15.0).tanh()) + 1.0) * price_sub
    }
}

/// Index of the chosen candidate, or `None` when there are none.
pub fn choose(chain: &[Expander], candidates: &[Candidate], cluster_nodes: u32, seed: u64) -> Option<usize> {
    let mut alive: Vec<usize> = (0..candidates.len()).collect();
    for e in chain {
        if alive.len() <= 1 {
            break;
        }
        // Scores are minimised.
        let score = |c: &Candidate| -> f64 {
            match e {
                Expander::LeastWaste => c.waste(),
                Expander::MostPods => -f64::from(c.pods),
                Expander::LeastNodes => f64::from(c.nodes),
                Expander::Priority => -f64::from(c.weight),
                Expander::Price => c.price_score(cluster_nodes),
                Expander::Random => (hash(seed, &c.group) % 1_000_003) as f64,
            }
        };
        let best = alive.iter().map(|&i| score(&candidates[i])).fold(f64::INFINITY, f64::min);
        alive.retain(|&i| score(&candidates[i]) <= best + 1e-9);
    }
    alive.into_iter().min_by(|&a, &b| candidates[a].group.cmp(&candidates[b].group))
}

/// FNV-1a over the seed and a name: stable across runs and platforms.
fn hash(seed: u64, s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn cand(group: &str, nodes: u32, pods: u32, pod_cpu: i64, node_cpu: i64, price: f64) -> Candidate {
        Candidate {
            group: group.into(),
            nodes,
            pods,
            pod_cpu,
            pod_memory: i64::from(pods) * (512 << 20),
            node_cpu,
            node_memory: 2048 << 20,
            node_price: Some(price),
            weight: 0,
        }
    }

    #[test]
    fn parse() {
        assert_eq!(parse_chain("priority,least-waste").unwrap(), vec![Expander::Priority, Expander::LeastWaste]);
        assert!(parse_chain("cheapest").unwrap_err().contains("unknown expander"));
        assert!(parse_chain("").is_err());
    }

    #[test]
    fn least_waste_prefers_the_tighter_fit() {
        // 4 pods of 500m: 2 × 1000m nodes waste no cpu; 1 × 4000m wastes half.
        let mut c = [cand("big", 1, 4, 2000, 4000, 0.1), cand("small", 2, 4, 2000, 1000, 0.05)];
        c[1].node_memory = 1024 << 20;
        assert_eq!(choose(&[Expander::LeastWaste], &c, 3, 0), Some(1));
        assert!((c[1].waste() - 0.0).abs() < 1e-9);
    }

    #[test]
    fn most_pods_and_least_nodes() {
        let c = [cand("a", 1, 2, 1000, 2000, 0.1), cand("b", 3, 5, 2500, 1000, 0.1)];
        assert_eq!(choose(&[Expander::MostPods], &c, 3, 0), Some(1));
        assert_eq!(choose(&[Expander::LeastNodes], &c, 3, 0), Some(0));
    }

    #[test]
    fn priority_then_ties_broken_by_the_next() {
        let mut c = vec![cand("a", 1, 2, 1000, 4000, 0.1), cand("b", 2, 2, 1000, 1000, 0.1)];
        c.push(cand("c", 1, 2, 1000, 1000, 0.1));
        c[0].weight = 10;
        c[1].weight = 50;
        c[2].weight = 50;
        // b and c tie on priority; least-waste picks c (1 node of 1000m for 1000m of pods).
        assert_eq!(choose(&[Expander::Priority, Expander::LeastWaste], &c, 3, 0), Some(2));
        assert_eq!(choose(&[Expander::Priority], &c, 3, 0), Some(1), "ties go by name");
    }

    #[test]
    fn price_prefers_cheaper_nodes_of_the_preferred_size() {
        // Same shape, one cheaper.
        let c = [cand("dear", 2, 4, 2000, 1000, 0.05), cand("cheap", 2, 4, 2000, 1000, 0.02)];
        assert_eq!(choose(&[Expander::Price], &c, 3, 0), Some(1));
        // In a 100-node cluster (preferred 16 cpu) a 16-cpu node beats sixteen 1-cpu nodes at
        // the same price per cpu.
        let c = [cand("tiny", 16, 16, 8000, 1000, 0.05), cand("large", 1, 16, 8000, 16000, 0.8)];
        assert_eq!(choose(&[Expander::Price], &c, 100, 0), Some(1));
    }

    #[test]
    fn random_is_reproducible_for_a_seed() {
        let c: Vec<Candidate> = (0..8).map(|i| cand(&format!("g{i}"), 1, 1, 500, 1000, 0.1)).collect();
        let a = choose(&[Expander::Random], &c, 3, 42);
        assert_eq!(a, choose(&[Expander::Random], &c, 3, 42));
        let spread: std::collections::HashSet<_> =
            (0..50).map(|s| choose(&[Expander::Random], &c, 3, s).unwrap()).collect();
        assert!(spread.len() > 3, "random should not always pick the same group: {spread:?}");
    }
}
