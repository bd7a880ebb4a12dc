//! Interned strings, label sets and compiled selectors. Every label key and value is interned
//! once per snapshot, so matching a selector against a node is a few integer comparisons.

use std::collections::HashMap;

/// An interned string.
pub type Sym = u32;

/// The interner of one snapshot.
#[derive(Clone, Debug, Default)]
pub struct Symbols {
    map: HashMap<String, Sym>,
    names: Vec<String>,
}

impl Symbols {
    pub fn intern(&mut self, s: &str) -> Sym {
        if let Some(&id) = self.map.get(s) {
            return id;
        }
        let id = self.names.len() as Sym;
        self.names.push(s.to_owned());
        self.map.insert(s.to_owned(), id);
        id
    }

    pub fn get(&self, s: &str) -> Option<Sym> {
        self.map.get(s).copied()
    }

    pub fn name(&self, s: Sym) -> &str {
        self.names.get(s as usize).map(String::as_str).unwrap_or("")
    }
}

/// A label set, sorted by key.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Labels(Vec<(Sym, Sym)>);

impl Labels {
    pub fn from_pairs(mut pairs: Vec<(Sym, Sym)>) -> Self {
        pairs.sort_unstable();
        pairs.dedup_by_key(|p| p.0);
        Self(pairs)
    }

    pub fn get(&self, key: Sym) -> Option<Sym> {
        self.0.binary_search_by_key(&key, |p| p.0).ok().map(|i| self.0[i].1)
    }

    pub fn set(&mut self, key: Sym, value: Sym) {
        match self.0.binary_search_by_key(&key, |p| p.0) {
            Ok(i) => self.0[i].1 = value,
            Err(i) => self.0.insert(i, (key, value)),
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (Sym, Sym)> + '_ {
        self.0.iter().copied()
    }
}

/// A selector requirement operator, covering label selectors and node selector terms.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    In(Vec<Sym>),
    NotIn(Vec<Sym>),
    Exists,
    DoesNotExist,
    Gt(i64),
    Lt(i64),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Requirement {
    pub key: Sym,
    pub op: Op,
}

impl Requirement {
    pub fn matches(&self, labels: &Labels, syms: &Symbols) -> bool {
        let v = labels.get(self.key);
        match &self.op {
            Op::In(vs) => v.is_some_and(|v| vs.contains(&v)),
            Op::NotIn(vs) => v.is_none_or(|v| !vs.contains(&v)),
            Op::Exists => v.is_some(),
            Op::DoesNotExist => v.is_none(),
            Op::Gt(n) => v.and_then(|v| syms.name(v).parse::<i64>().ok()).is_some_and(|x| x > *n),
            Op::Lt(n) => v.and_then(|v| syms.name(v).parse::<i64>().ok()).is_some_and(|x| x < *n),
        }
    }

    /// The values this requirement allows for its key, when it pins them (`In`).
    pub fn allowed(&self) -> Option<&[Sym]> {
        match &self.op {
            Op::In(vs) => Some(vs),
            _ => None,
        }
    }
}

/// A conjunction of requirements; the empty selector matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Selector(pub Vec<Requirement>);

impl Selector {
    pub fn matches(&self, labels: &Labels, syms: &Symbols) -> bool {
        self.0.iter().all(|r| r.matches(labels, syms))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}
