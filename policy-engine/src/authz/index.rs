//! The rule index: cost that grows far slower than the number of policies.
//!
//! Envoy RBAC scans every policy (a namespace regex each). Here each rule is filed under one thing
//! a matching request must carry, when the rule has one: an exact principal, an exact namespace, or
//! a port. A check then evaluates only the rules filed under what the request carries, plus the
//! rules that could not be filed. The index is only a pre-filter: every candidate is still matched
//! in full, so it cannot change a decision, only skip rules that cannot match.

use rustc_hash::FxHashMap;

use super::rule::{Clause, CompiledRule, Ctx, Matcher};
use crate::decision::RuleId;

/// Below this many rules a linear scan is cheaper than hashing.
const INDEX_THRESHOLD: usize = 8;

#[derive(Debug, Default)]
pub(crate) struct RuleSet {
    rules: Vec<CompiledRule>,
    by_principal: FxHashMap<Box<str>, Vec<u32>>,
    by_namespace: FxHashMap<Box<str>, Vec<u32>>,
    by_port: FxHashMap<u16, Vec<u32>>,
    always: Vec<u32>,
}

/// The values every clause of `clauses` requires through one field, if each clause has such a field.
fn required_keys<'r, T>(
    clauses: &'r [Clause],
    key: impl Fn(&'r Matcher) -> Option<T>,
) -> Option<Vec<T>> {
    if clauses.is_empty() {
        return None;
    }
    let mut keys = Vec::new();
    for clause in clauses {
        let field = clause
            .iter()
            .find(|f| !f.values.is_empty() && f.values.iter().all(|m| key(m).is_some()))?;
        keys.extend(field.values.iter().filter_map(&key));
    }
    Some(keys)
}

fn exact_principal(m: &Matcher) -> Option<&str> {
    match m {
        Matcher::Principal(p) => p.exact(),
        _ => None,
    }
}

fn exact_namespace(m: &Matcher) -> Option<&str> {
    match m {
        Matcher::Namespace(n) => n.exact(),
        _ => None,
    }
}

fn port(m: &Matcher) -> Option<u16> {
    match m {
        Matcher::Port(p) => Some(p.number()),
        _ => None,
    }
}

impl RuleSet {
    pub(crate) fn new(rules: Vec<CompiledRule>) -> RuleSet {
        let mut set = RuleSet {
            rules,
            ..RuleSet::default()
        };
        let index = set.rules.len() >= INDEX_THRESHOLD;
        for (i, rule) in set.rules.iter().enumerate() {
            let Ok(pos) = u32::try_from(i) else {
                break;
            };
            if !index {
                set.always.push(pos);
            } else if let Some(keys) = required_keys(&rule.from, exact_principal) {
                for k in keys {
                    push_unique(set.by_principal.entry(k.into()).or_default(), pos);
                }
            } else if let Some(keys) = required_keys(&rule.from, exact_namespace) {
                for k in keys {
                    push_unique(set.by_namespace.entry(k.into()).or_default(), pos);
                }
            } else if let Some(keys) = required_keys(&rule.to, port) {
                for k in keys {
                    push_unique(set.by_port.entry(k).or_default(), pos);
                }
            } else {
                set.always.push(pos);
            }
        }
        set
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    pub(crate) fn rules(&self) -> &[CompiledRule] {
        &self.rules
    }

    /// The first rule (in policy order) that matches.
    pub(crate) fn first_match(&self, ctx: &Ctx<'_>) -> Option<RuleId> {
        let mut best: Option<u32> = None;
        let mut scan = |list: &[u32]| {
            for &pos in list {
                if best.is_some_and(|b| pos >= b) {
                    break;
                }
                if self.rules.get(pos as usize).is_some_and(|r| r.matches(ctx)) {
                    best = Some(pos);
                    break;
                }
            }
        };
        scan(&self.always);
        let principal = ctx.attrs.principal.filter(|p| !p.is_empty());
        if let Some(p) = principal {
            if !self.by_principal.is_empty() {
                if let Some(list) = self.by_principal.get(p) {
                    scan(list);
                }
            }
            if !self.by_namespace.is_empty() {
                for ns in namespaces_in(p) {
                    if let Some(list) = self.by_namespace.get(ns) {
                        scan(list);
                    }
                }
            }
        }
        if let (false, Some(port)) = (self.by_port.is_empty(), ctx.attrs.destination_port) {
            if let Some(list) = self.by_port.get(&port) {
                scan(list);
            }
        }
        best.and_then(|pos| self.rules.get(pos as usize))
            .map(|r| r.id)
    }
}

fn push_unique(list: &mut Vec<u32>, pos: u32) {
    if list.last() != Some(&pos) {
        list.push(pos);
    }
}

/// Every `X` such that `/ns/X/` occurs in the principal (overlapping occurrences included), which
/// is exactly the set of exact namespaces whose matcher `.*/ns/X/.*` accepts the principal.
fn namespaces_in(principal: &str) -> impl Iterator<Item = &str> {
    let mut from = 0;
    std::iter::from_fn(move || loop {
        let i = principal.get(from..)?.find("/ns/")? + from;
        from = i + 1;
        let rest = principal.get(i + 4..)?;
        if let Some(end) = rest.find('/') {
            return rest.get(..end);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::namespaces_in;

    #[test]
    fn finds_every_namespace_marker() {
        let v: Vec<&str> = namespaces_in("spiffe://td/ns/ns/x/sa/y").collect();
        assert_eq!(v, vec!["ns", "x"]);
        let v: Vec<&str> = namespaces_in("spiffe://td/ns/foo/sa/bar").collect();
        assert_eq!(v, vec!["foo"]);
        assert_eq!(namespaces_in("spiffe://td/ns/foo").count(), 0);
    }
}
