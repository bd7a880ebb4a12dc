//! One sync cycle's reads. Engines say what they need ([`Cache::want`]), the shell fetches
//! everything pending at once, and engines read the answers; a query asked for twice in a cycle
//! is fetched once.

use crate::query::{Answer, Query};
use std::collections::{BTreeSet, HashMap};

/// Answers of one cycle, and what is still to be fetched. Build a new one every cycle: nothing
/// here expires.
#[derive(Debug, Default)]
pub struct Cache {
    answers: HashMap<Query, Result<Answer, String>>,
    pending: BTreeSet<Query>,
    fetched: usize,
}

impl Cache {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that this cycle needs `q`; a no-op when it is answered or already pending.
    pub fn want(&mut self, q: Query) {
        if !self.answers.contains_key(&q) {
            self.pending.insert(q);
        }
    }

    /// The queries still to fetch, in a stable order; they stop being pending.
    pub fn take_pending(&mut self) -> Vec<Query> {
        std::mem::take(&mut self.pending).into_iter().collect()
    }

    /// Stores the outcome of fetching `q` (an error is kept as its message and is the answer
    /// for the rest of the cycle: one failing API is asked once, not once per Autoscaler).
    pub fn put(&mut self, q: Query, answer: Result<Answer, String>) {
        self.pending.remove(&q);
        self.fetched += 1;
        self.answers.insert(q, answer);
    }

    /// The answer for `q`, `None` when it was never fetched.
    pub fn get(&self, q: &Query) -> Option<&Result<Answer, String>> {
        self.answers.get(q)
    }

    /// How many requests this cycle has made.
    pub fn requests(&self) -> usize {
        self.fetched
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_queries_are_fetched_once_and_errors_are_answers() {
        let mut c = Cache::new();
        let q = |ns: &str| Query::PodMetrics { namespace: ns.into() };
        c.want(q("a"));
        c.want(q("a"));
        c.want(q("b"));
        let pending = c.take_pending();
        assert_eq!(pending, vec![q("a"), q("b")]);
        c.put(q("a"), Ok(Answer::PodMetrics(HashMap::new())));
        c.put(q("b"), Err("down".into()));
        c.want(q("a"));
        c.want(q("b"));
        assert!(c.take_pending().is_empty(), "answered queries, errors included, are not asked again");
        assert_eq!(c.requests(), 2);
        assert_eq!(c.get(&q("b")), Some(&Err("down".into())));
        assert_eq!(c.get(&q("c")), None);
    }
}
