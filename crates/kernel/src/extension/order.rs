//! Deterministic ordering of a point's implementors.
//!
//! `before`/`after` are hard constraints; among the implementors free to go next, the lower
//! `order` goes first and ties are broken by plugin name, never by load order.

use crate::KernelError;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap};

/// Where one plugin's implementor sits among the others of the same point.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderSpec {
    /// Lower runs earlier among implementors not constrained by `before`/`after`.
    #[serde(default)]
    pub order: i32,
    /// Plugins whose implementor must run after this one (ignored if they do not implement the point).
    #[serde(default)]
    pub before: Vec<String>,
    /// Plugins whose implementor must run before this one (ignored if they do not implement the point).
    #[serde(default)]
    pub after: Vec<String>,
}

impl OrderSpec {
    /// Sets the order: lower runs earlier (default 0; ties go by plugin name).
    pub fn order(&mut self, order: i32) -> &mut Self {
        self.order = order;
        self
    }
    /// Runs before `plugin`'s implementor of the same point.
    pub fn before(&mut self, plugin: &str) -> &mut Self {
        self.before.push(plugin.to_owned());
        self
    }
    /// Runs after `plugin`'s implementor of the same point.
    pub fn after(&mut self, plugin: &str) -> &mut Self {
        self.after.push(plugin.to_owned());
        self
    }
}

/// Returns the indices of `entries` (plugin name, spec) in calling order.
pub(crate) fn sort(point: &str, entries: &[(&str, &OrderSpec)]) -> Result<Vec<usize>, KernelError> {
    let index: HashMap<&str, usize> = entries
        .iter()
        .enumerate()
        .map(|(i, (name, _))| (*name, i))
        .collect();
    let mut successors = vec![Vec::new(); entries.len()];
    let mut pending = vec![0usize; entries.len()];
    for (i, (_, spec)) in entries.iter().enumerate() {
        let edges = spec
            .before
            .iter()
            .filter_map(|b| index.get(b.as_str()).map(|&j| (i, j)))
            .chain(
                spec.after
                    .iter()
                    .filter_map(|a| index.get(a.as_str()).map(|&j| (j, i))),
            );
        for (from, to) in edges {
            successors[from].push(to);
            pending[to] += 1;
        }
    }
    let key = |i: usize| (entries[i].1.order, entries[i].0, i);
    let mut ready: BTreeSet<_> = (0..entries.len())
        .filter(|&i| pending[i] == 0)
        .map(key)
        .collect();
    let mut out = Vec::with_capacity(entries.len());
    while let Some(first) = ready.pop_first() {
        let i = first.2;
        out.push(i);
        for &j in &successors[i] {
            pending[j] -= 1;
            if pending[j] == 0 {
                ready.insert(key(j));
            }
        }
    }
    if out.len() < entries.len() {
        let mut plugins: Vec<String> = (0..entries.len())
            .filter(|i| pending[*i] > 0)
            .map(|i| entries[i].0.to_owned())
            .collect();
        plugins.sort();
        return Err(KernelError::OrderingCycle {
            point: point.to_owned(),
            plugins,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(order: i32, before: &[&str], after: &[&str]) -> OrderSpec {
        OrderSpec {
            order,
            before: before.iter().map(|s| s.to_string()).collect(),
            after: after.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn names(entries: &[(&str, &OrderSpec)]) -> Result<Vec<String>, KernelError> {
        Ok(sort("p", entries)?
            .into_iter()
            .map(|i| entries[i].0.to_owned())
            .collect())
    }

    #[test]
    fn ties_are_broken_by_plugin_name_not_registration_order() {
        let d = OrderSpec::default();
        assert_eq!(
            names(&[("zeta", &d), ("alpha", &d), ("mid", &d)]).unwrap(),
            ["alpha", "mid", "zeta"]
        );
    }

    #[test]
    fn order_then_constraints() {
        let late = spec(10, &[], &[]);
        let early = spec(-5, &[], &[]);
        let after_late = spec(-100, &[], &["late"]);
        let before_early = spec(50, &["early"], &[]);
        assert_eq!(
            names(&[
                ("late", &late),
                ("early", &early),
                ("after_late", &after_late),
                ("before_early", &before_early),
            ])
            .unwrap(),
            // `late` is free first and goes; that frees `after_late` (-100), which then
            // outranks `before_early` (50); `early` waits for `before_early`.
            ["late", "after_late", "before_early", "early"]
        );
    }

    #[test]
    fn constraints_on_absent_plugins_are_ignored() {
        let a = spec(0, &["not-loaded"], &["also-absent"]);
        assert_eq!(names(&[("a", &a)]).unwrap(), ["a"]);
    }

    #[test]
    fn a_cycle_names_its_plugins() {
        let a = spec(0, &["b"], &[]);
        let b = spec(0, &["c"], &[]);
        let c = spec(0, &["a"], &[]);
        let free = OrderSpec::default();
        let err = names(&[("a", &a), ("b", &b), ("c", &c), ("free", &free)]).unwrap_err();
        assert_eq!(
            err,
            KernelError::OrderingCycle {
                point: "p".into(),
                plugins: vec!["a".into(), "b".into(), "c".into()]
            }
        );
    }
}
