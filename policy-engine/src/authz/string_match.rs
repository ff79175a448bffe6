//! Istio's wildcard forms and how each field turns them into a matcher.
//!
//! The API doc on `Rule`: "`abc` means exact, `abc*` means prefix, `*abc` means suffix, and `*`
//! means presence". A `*` anywhere else is literal, except in `namespaces`. What "presence" means
//! differs by field: for headers, methods and hosts it is Envoy's `present_match` (the header exists,
//! even empty); for paths, principals, SNI, claims and metadata it is the regex `.+` (non-empty).

/// A compiled string matcher. Patterns of case-insensitive matchers are stored in lower case.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum StrMatch {
    Exact(Box<str>),
    Prefix(Box<str>),
    Suffix(Box<str>),
    /// Starts with `prefix`, and what follows ends with `suffix` (the principal regex
    /// `spiffe://.*<suffix>`: the two may not overlap).
    PrefixThenSuffix {
        prefix: Box<str>,
        suffix: Box<str>,
    },
    /// Contains the string (`.*<s>.*`).
    Contains(Box<str>),
    /// `*`-glob over the whole value: `*` matches any run of characters, `/` included.
    Glob(Vec<Box<str>>),
    /// The regex `.+`.
    NonEmpty,
    /// Envoy `present_match`: the attribute exists, possibly empty.
    Present,
}

impl StrMatch {
    /// Istio `matcher.StringMatcher(v)`: `*` is `.+`, `*x` suffix, `x*` prefix, else exact.
    pub(crate) fn istio(v: &str) -> StrMatch {
        Self::with_presence(v, StrMatch::NonEmpty)
    }

    /// Istio `matcher.HeaderMatcher(k, v)`: like [`StrMatch::istio`] but `*` is `present_match`.
    pub(crate) fn header(v: &str) -> StrMatch {
        Self::with_presence(v, StrMatch::Present)
    }

    /// Istio `matcher.HostMatcher`: header semantics, case-insensitive (pattern lower-cased).
    pub(crate) fn host(v: &str) -> StrMatch {
        Self::with_presence(&v.to_ascii_lowercase(), StrMatch::Present)
    }

    fn with_presence(v: &str, presence: StrMatch) -> StrMatch {
        // `*` is checked first so that it means presence, not the suffix "".
        if v == "*" {
            presence
        } else if let Some(s) = v.strip_prefix('*') {
            StrMatch::Suffix(s.into())
        } else if let Some(p) = v.strip_suffix('*') {
            StrMatch::Prefix(p.into())
        } else {
            StrMatch::Exact(v.into())
        }
    }

    /// Istio `matcher.StringMatcherWithPrefix(v, "spiffe://")` for principals: `*` is `.+`, `*x` is
    /// the regex `spiffe://.*<quoted x>`, `x*` the prefix `spiffe://x`, else exact `spiffe://v`.
    pub(crate) fn spiffe_principal(v: &str) -> StrMatch {
        const SPIFFE: &str = "spiffe://";
        if v == "*" {
            StrMatch::NonEmpty
        } else if let Some(s) = v.strip_prefix('*') {
            StrMatch::PrefixThenSuffix {
                prefix: SPIFFE.into(),
                suffix: s.into(),
            }
        } else if let Some(p) = v.strip_suffix('*') {
            StrMatch::Prefix([SPIFFE, p].concat().into())
        } else {
            StrMatch::Exact([SPIFFE, v].concat().into())
        }
    }

    /// Istio's namespace matcher: the regex `.*/ns/<v>/.*` over the principal, where every `*` of
    /// `v` is a wildcard and everything else is literal (regex-quoted since the 1.30 security fix).
    pub(crate) fn namespace(v: &str) -> StrMatch {
        if v.contains('*') {
            let pattern = ["*/ns/", v, "/*"].concat();
            StrMatch::Glob(pattern.split('*').map(Into::into).collect())
        } else {
            StrMatch::Contains(["/ns/", v, "/"].concat().into())
        }
    }

    /// Case-sensitive match.
    pub(crate) fn matches(&self, value: &str) -> bool {
        match self {
            StrMatch::Exact(p) => value == &**p,
            StrMatch::Prefix(p) => value.starts_with(&**p),
            StrMatch::Suffix(s) => value.ends_with(&**s),
            StrMatch::PrefixThenSuffix { prefix, suffix } => value
                .strip_prefix(&**prefix)
                .is_some_and(|rest| rest.ends_with(&**suffix)),
            StrMatch::Contains(s) => value.contains(&**s),
            StrMatch::Glob(parts) => glob(parts, value),
            StrMatch::NonEmpty => !value.is_empty(),
            StrMatch::Present => true,
        }
    }

    /// ASCII case-insensitive match (the pattern is already lower case).
    pub(crate) fn matches_ignore_case(&self, value: &str) -> bool {
        let v = value.as_bytes();
        match self {
            StrMatch::Exact(p) => v.eq_ignore_ascii_case(p.as_bytes()),
            StrMatch::Prefix(p) => v
                .get(..p.len())
                .is_some_and(|h| h.eq_ignore_ascii_case(p.as_bytes())),
            StrMatch::Suffix(s) => {
                v.len() >= s.len()
                    && v.get(v.len() - s.len()..)
                        .is_some_and(|t| t.eq_ignore_ascii_case(s.as_bytes()))
            }
            other => other.matches(&value.to_ascii_lowercase()),
        }
    }

    /// The exact value, if this matcher is an exact match (used by the rule index).
    pub(crate) fn exact(&self) -> Option<&str> {
        match self {
            StrMatch::Exact(p) => Some(p),
            _ => None,
        }
    }
}

/// Matches `value` against `parts`, the pattern split at its `*`s (so there are `stars + 1`
/// parts): the first part is a prefix, the last a suffix, the middle ones appear in order.
fn glob(parts: &[Box<str>], value: &str) -> bool {
    let (Some(first), Some(last)) = (parts.first(), parts.last()) else {
        return value.is_empty();
    };
    if parts.len() == 1 {
        return value == &**first;
    }
    let Some(mut rest) = value.strip_prefix(&**first) else {
        return false;
    };
    if rest.len() < last.len() {
        return false;
    }
    let Some(tail_start) = rest.len().checked_sub(last.len()) else {
        return false;
    };
    if !rest.is_char_boundary(tail_start) || !rest.ends_with(&**last) {
        return false;
    }
    let Some(middle_region) = rest.get(..tail_start) else {
        return false;
    };
    rest = middle_region;
    // Greedy leftmost placement of each middle part is optimal for `*` globs.
    for part in parts.iter().skip(1).take(parts.len().saturating_sub(2)) {
        match rest.find(&**part) {
            Some(i) => rest = rest.get(i + part.len()..).unwrap_or(""),
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::StrMatch;

    #[test]
    fn generic_forms() {
        assert!(StrMatch::istio("abc").matches("abc"));
        assert!(!StrMatch::istio("abc").matches("abcd"));
        assert!(StrMatch::istio("ab*").matches("abcd"));
        assert!(StrMatch::istio("*cd").matches("abcd"));
        assert!(StrMatch::istio("*").matches("x"));
        assert!(!StrMatch::istio("*").matches(""));
        assert!(StrMatch::header("*").matches(""));
        // A `*` in the middle is literal.
        assert!(StrMatch::istio("/a/*/b").matches("/a/*/b"));
        assert!(!StrMatch::istio("/a/*/b").matches("/a/x/b"));
    }

    #[test]
    fn hosts_ignore_case() {
        assert!(StrMatch::host("deny.b.com").matches_ignore_case("Deny.b.Com"));
        assert!(StrMatch::host("*.suffix.b.com").matches_ignore_case("DENY.SUFFIX.b.COM"));
        assert!(StrMatch::host("prefix.b.*").matches_ignore_case("Prefix.b.Com"));
        assert!(!StrMatch::host("example.com").matches_ignore_case("example.com:8080"));
    }

    #[test]
    fn principals_are_spiffe_and_quoted() {
        let m = StrMatch::spiffe_principal("*admin.example");
        assert!(m.matches("spiffe://cluster.local/ns/a/sa/admin.example"));
        assert!(!m.matches("spiffe://cluster.local/ns/a/sa/adminXexample"));
        assert!(StrMatch::spiffe_principal("cluster.local/ns/a/*")
            .matches("spiffe://cluster.local/ns/a/sa/x"));
        assert!(StrMatch::spiffe_principal("*").matches("spiffe://x"));
    }

    #[test]
    fn namespaces_wildcard_anywhere() {
        let m = StrMatch::namespace("ns.*.prod");
        assert!(m.matches("spiffe://cluster.local/ns/ns.any.prod/sa/x"));
        assert!(!m.matches("spiffe://cluster.local/ns/nsXanyXprod/sa/x"));
        assert!(StrMatch::namespace("ns-*").matches("spiffe://td/ns/ns-1/sa/x"));
        assert!(!StrMatch::namespace("ns.prod").matches("spiffe://td/ns/nsXprod/sa/x"));
        assert!(StrMatch::namespace("*").matches("spiffe://td/ns/a/sa/x"));
        assert!(!StrMatch::namespace("*").matches("spiffe://td/sa/x"));
    }
}
