//! The rule index: cost that grows far slower than the number of policies.
//!
//! Envoy RBAC scans every policy (a namespace regex each). Here each rule is filed under what a
//! matching request must carry, when the rule says: its source's principals (exact, `x*` prefix,
//! `*x` suffix) or namespaces (exact, `x*` prefix), else an exact port. A check then evaluates
//! only the rules filed under what the request carries, plus the rules that could not be filed.
//! The index is only a pre-filter: every candidate is still matched in full, so it cannot change
//! a decision, only skip rules that cannot match (`index_gives_same_answer_as_scan` compares it
//! with a scan of every rule).
//!
//! Wildcards are looked up by length: a [`Affixes`] table keeps its prefixes (or suffixes) in a
//! hash map and the few distinct lengths they have, so a lookup is one hash probe per distinct
//! length, whatever the number of rules.

use rustc_hash::FxHashMap;

use super::rule::{Clause, CompiledRule, Ctx, Matcher};
use crate::decision::RuleId;

/// Below this many rules a linear scan is cheaper than hashing.
const INDEX_THRESHOLD: usize = 8;

/// Rules filed under prefixes (or suffixes) of a value.
#[derive(Debug, Default)]
struct Affixes {
    by_affix: FxHashMap<Box<str>, Vec<u32>>,
    /// The distinct lengths of the keys of `by_affix`, ascending.
    lengths: Vec<usize>,
    /// Suffixes instead of prefixes.
    suffix: bool,
}

impl Affixes {
    fn suffixes() -> Affixes {
        Affixes {
            suffix: true,
            ..Affixes::default()
        }
    }

    fn insert(&mut self, affix: &str, pos: u32) {
        push_unique(self.by_affix.entry(affix.into()).or_default(), pos);
        if let Err(i) = self.lengths.binary_search(&affix.len()) {
            self.lengths.insert(i, affix.len());
        }
    }

    fn is_empty(&self) -> bool {
        self.by_affix.is_empty()
    }

    /// Calls `f` with the rules filed under each prefix (suffix) of `value`.
    fn lookup<'s>(&'s self, value: &str, mut f: impl FnMut(&'s [u32])) {
        for &len in &self.lengths {
            let part = if self.suffix {
                value
                    .len()
                    .checked_sub(len)
                    .and_then(|start| value.get(start..))
            } else {
                value.get(..len)
            };
            match part {
                Some(part) => {
                    if let Some(list) = self.by_affix.get(part) {
                        f(list);
                    }
                }
                // Longer than the value: so are the rest.
                None if len > value.len() => break,
                // Not at a character boundary: no key (valid UTF-8) ends or starts there.
                None => {}
            }
        }
    }
}

#[derive(Debug)]
pub(crate) struct RuleSet {
    rules: Vec<CompiledRule>,
    by_principal: FxHashMap<Box<str>, Vec<u32>>,
    by_principal_prefix: Affixes,
    by_principal_suffix: Affixes,
    by_namespace: FxHashMap<Box<str>, Vec<u32>>,
    /// Keyed by the namespace prefix; looked up with the text after each `/ns/` of the principal.
    by_namespace_prefix: Affixes,
    by_port: FxHashMap<u16, Vec<u32>>,
    always: Vec<u32>,
}

impl Default for RuleSet {
    fn default() -> RuleSet {
        RuleSet {
            rules: Vec::new(),
            by_principal: FxHashMap::default(),
            by_principal_prefix: Affixes::default(),
            by_principal_suffix: Affixes::suffixes(),
            by_namespace: FxHashMap::default(),
            by_namespace_prefix: Affixes::default(),
            by_port: FxHashMap::default(),
            always: Vec::new(),
        }
    }
}

/// What a source value requires of the principal.
enum SourceKey<'r> {
    Principal(&'r str),
    PrincipalPrefix(&'r str),
    PrincipalSuffix(&'r str),
    Namespace(&'r str),
    NamespacePrefix(&'r str),
}

fn source_key(m: &Matcher) -> Option<SourceKey<'_>> {
    match m {
        Matcher::Principal(p) => p
            .exact()
            .map(SourceKey::Principal)
            .or_else(|| p.prefix().map(SourceKey::PrincipalPrefix))
            .or_else(|| p.suffix().map(SourceKey::PrincipalSuffix)),
        Matcher::Namespace(n) => n
            .exact()
            .map(SourceKey::Namespace)
            .or_else(|| n.prefix().map(SourceKey::NamespacePrefix)),
        _ => None,
    }
}

/// The values every clause of `clauses` requires through one field, if each clause has such a
/// field (one whose every value gives a key: the clause matches only if one of them holds).
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

fn port(m: &Matcher) -> Option<u16> {
    match m {
        Matcher::Port(p) => Some(p.number()),
        _ => None,
    }
}

impl RuleSet {
    pub(crate) fn new(rules: Vec<CompiledRule>) -> RuleSet {
        let mut set = RuleSet::default();
        let index = rules.len() >= INDEX_THRESHOLD;
        for (i, rule) in rules.iter().enumerate() {
            let Ok(pos) = u32::try_from(i) else {
                break;
            };
            if !index {
                set.always.push(pos);
            } else if let Some(keys) = required_keys(&rule.from, source_key) {
                for k in keys {
                    set.file(k, pos);
                }
            } else if let Some(keys) = required_keys(&rule.to, port) {
                for k in keys {
                    push_unique(set.by_port.entry(k).or_default(), pos);
                }
            } else {
                set.always.push(pos);
            }
        }
        set.rules = rules;
        set.shrink();
        set
    }

    /// The index lives as long as the configuration: no spare capacity in its lists (the hash
    /// tables are left as they are: shrinking them costs module size for little).
    fn shrink(&mut self) {
        let lists = self
            .by_principal
            .values_mut()
            .chain(self.by_namespace.values_mut())
            .chain(self.by_principal_prefix.by_affix.values_mut())
            .chain(self.by_principal_suffix.by_affix.values_mut())
            .chain(self.by_namespace_prefix.by_affix.values_mut())
            .chain(self.by_port.values_mut())
            .chain(std::iter::once(&mut self.always));
        lists.for_each(Vec::shrink_to_fit);
    }

    fn file(&mut self, key: SourceKey<'_>, pos: u32) {
        match key {
            SourceKey::Principal(p) => {
                push_unique(self.by_principal.entry(p.into()).or_default(), pos);
            }
            SourceKey::PrincipalPrefix(p) => self.by_principal_prefix.insert(p, pos),
            SourceKey::PrincipalSuffix(s) => self.by_principal_suffix.insert(s, pos),
            SourceKey::Namespace(n) => {
                push_unique(self.by_namespace.entry(n.into()).or_default(), pos);
            }
            SourceKey::NamespacePrefix(n) => self.by_namespace_prefix.insert(n, pos),
        }
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
        if let Some(p) = ctx.principal() {
            if let Some(list) = self.by_principal.get(p) {
                scan(list);
            }
            if !self.by_principal_prefix.is_empty() {
                self.by_principal_prefix.lookup(p, &mut scan);
            }
            if !self.by_principal_suffix.is_empty() {
                self.by_principal_suffix.lookup(p, &mut scan);
            }
            if !self.by_namespace.is_empty() {
                for ns in namespaces_in(p) {
                    if let Some(list) = self.by_namespace.get(ns) {
                        scan(list);
                    }
                }
            }
            if !self.by_namespace_prefix.is_empty() {
                for rest in after_each_ns(p) {
                    self.by_namespace_prefix.lookup(rest, &mut scan);
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

    /// How many rules are evaluated for every request (not filed under any key).
    #[cfg(test)]
    pub(crate) fn unindexed(&self) -> usize {
        self.always.len()
    }

    /// The first rule (in policy order) that matches, by evaluating every rule: what
    /// [`RuleSet::first_match`] must always answer.
    #[cfg(test)]
    pub(crate) fn first_match_by_scan(&self, ctx: &Ctx<'_>) -> Option<RuleId> {
        self.rules.iter().find(|r| r.matches(ctx)).map(|r| r.id)
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
        let i = find_ns_marker(principal, from)?;
        from = i + 1;
        let rest = principal.get(i + 4..)?;
        if let Some(end) = rest.find('/') {
            return rest.get(..end);
        }
    })
}

/// The text after each `/ns/` of the principal (overlapping occurrences included): a namespace
/// prefix `x*` (pattern `*/ns/x*/*`) can match only if one of them starts with `x`.
fn after_each_ns(principal: &str) -> impl Iterator<Item = &str> {
    let mut from = 0;
    std::iter::from_fn(move || {
        let i = find_ns_marker(principal, from)?;
        from = i + 1;
        principal.get(i + 4..)
    })
}

/// The first `/ns/` in `principal` at or after byte `from`. Once per request per namespace
/// table: a scan for `/` (a principal has a handful) instead of `str::find`, which builds a
/// two-way searcher on every call.
fn find_ns_marker(principal: &str, from: usize) -> Option<usize> {
    let bytes = principal.as_bytes();
    let mut at = from;
    loop {
        at += bytes.get(at..)?.iter().position(|&b| b == b'/')?;
        if bytes.get(at..at + 4) == Some(b"/ns/".as_slice()) {
            return Some(at);
        }
        at += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::{after_each_ns, find_ns_marker, namespaces_in, Affixes};

    #[test]
    fn finds_the_namespace_marker_as_str_find_does() {
        let samples = [
            "",
            "/ns/",
            "/ns",
            "ns/x",
            "//ns//ns/a/",
            "spiffe://td/ns/ns/x/sa/y",
            "cluster.local/ns/team-3/sa/client",
            "a/n/ns/b/ns/",
            "/ns/ns/ns/",
            "x/ñs/ns/é/ns/",
        ];
        for p in samples {
            // The callers start at 0 or just after a `/`: always a character boundary.
            for from in (0..=p.len()).filter(|&i| p.is_char_boundary(i)) {
                let want = p.get(from..).and_then(|r| r.find("/ns/")).map(|i| i + from);
                assert_eq!(find_ns_marker(p, from), want, "{p:?} from {from}");
            }
        }
    }

    #[test]
    fn finds_every_namespace_marker() {
        let v: Vec<&str> = namespaces_in("spiffe://td/ns/ns/x/sa/y").collect();
        assert_eq!(v, vec!["ns", "x"]);
        let v: Vec<&str> = namespaces_in("spiffe://td/ns/foo/sa/bar").collect();
        assert_eq!(v, vec!["foo"]);
        assert_eq!(namespaces_in("spiffe://td/ns/foo").count(), 0);
    }

    #[test]
    fn after_each_ns_gives_every_remainder() {
        let v: Vec<&str> = after_each_ns("spiffe://td/ns/ns/x/sa/y").collect();
        assert_eq!(v, vec!["ns/x/sa/y", "x/sa/y"]);
        assert_eq!(after_each_ns("spiffe://td/sa/y").count(), 0);
    }

    #[test]
    fn affixes_find_every_key_that_begins_or_ends_the_value() {
        let mut pre = Affixes::default();
        pre.insert("spiffe://td/ns/a/", 0);
        pre.insert("spiffe://td/ns/ab/", 1);
        pre.insert("spiffe://td/", 2);
        pre.insert("", 3);
        let found = |t: &Affixes, v: &str| {
            let mut out = Vec::new();
            t.lookup(v, |l| out.extend_from_slice(l));
            out.sort_unstable();
            out
        };
        assert_eq!(found(&pre, "spiffe://td/ns/a/sa/x"), [0, 2, 3]);
        assert_eq!(found(&pre, "spiffe://td/ns/ab/sa/x"), [1, 2, 3]);
        assert_eq!(found(&pre, "spiffe://other/ns/a/"), [3]);
        assert_eq!(found(&pre, "sp"), [3]);
        // A length that falls inside a multi-byte character is skipped, not a panic.
        assert_eq!(found(&pre, "spiffe://tdé/ns/a/é"), [3]);
        let mut suf = Affixes::suffixes();
        suf.insert("/sa/client", 0);
        suf.insert("client", 1);
        assert_eq!(found(&suf, "spiffe://td/ns/a/sa/client"), [0, 1]);
        assert_eq!(found(&suf, "spiffe://td/ns/a/sa/worker"), Vec::<u32>::new());
        assert_eq!(found(&suf, "é"), Vec::<u32>::new());
    }
}
