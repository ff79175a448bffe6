//! The forms a request takes for one policy value: the ones that should match and the near misses
//! (`+x` before or after, other case, a query string, a regex metacharacter taken literally, ...).
//! Each `*_variants` / `*_identities` function covers one attribute.

use std::collections::BTreeSet;
use std::net::IpAddr;

use policy_engine::MeshConfig;

use super::values::{Named, SKIP_RELATIVE_PATH};

/// A value to send and what it tests.
#[derive(Clone, Debug)]
pub(super) struct Variant {
    pub(super) value: String,
    pub(super) label: String,
    /// The form that should match the policy value (as opposed to a near miss).
    pub(super) matching: bool,
}

pub(super) fn v(value: impl Into<String>, label: impl Into<String>, matching: bool) -> Variant {
    Variant {
        value: value.into(),
        label: label.into(),
        matching,
    }
}

/// Regex metacharacters taken literally: `.` and `[..]` near misses of a matching form.
fn metachar_misses(form: &str) -> Vec<Variant> {
    let mut out = Vec::new();
    if form.contains('.') {
        out.push(v(
            form.replace('.', "X"),
            "'.' replaced by 'X' (miss unless '.' is a regex)",
            false,
        ));
    }
    if form.contains('[') || form.contains(']') {
        out.push(v(
            form.replace(['[', ']'], ""),
            "brackets removed (miss unless '[..]' is a regex class)",
            false,
        ));
    }
    out
}

/// Istio's generic wildcard forms: `abc` exact, `abc*` prefix, `*abc` suffix, `*` presence, a `*`
/// elsewhere literal.
fn affix_variants(value: &str, any: &str) -> Vec<Variant> {
    let mut out = Vec::new();
    if value == "*" {
        out.push(v(any, "any value for '*'", true));
        return out;
    }
    if let Some(p) = value.strip_suffix('*').filter(|_| !value.starts_with('*')) {
        out.push(v(p, "the prefix itself", true));
        out.push(v(format!("{p}x"), "prefix + x", true));
        out.push(v(format!("x{p}"), "x + prefix (miss)", false));
        out.extend(metachar_misses(&format!("{p}x")));
    } else if let Some(s) = value.strip_prefix('*').filter(|_| !value.ends_with('*')) {
        out.push(v(s, "the suffix itself", true));
        out.push(v(format!("x{s}"), "x + suffix", true));
        out.push(v(format!("{s}x"), "suffix + x (miss)", false));
        out.extend(metachar_misses(&format!("x{s}")));
    } else {
        out.push(v(value, "exact", true));
        out.push(v(format!("{value}x"), "exact + x (miss)", false));
        out.push(v(format!("x{value}"), "x + exact (miss)", false));
        if value.contains('*') {
            out.push(v(
                value.replace('*', "x"),
                "inner '*' replaced by x (miss: an inner '*' is literal)",
                false,
            ));
        }
        out.extend(metachar_misses(value));
    }
    out
}

fn swap_case(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_lowercase() {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect()
}

fn with_case_variants(mut vs: Vec<Variant>, insensitive: bool) -> Vec<Variant> {
    let extra: Vec<Variant> = vs
        .iter()
        .filter(|x| x.matching && swap_case(&x.value) != x.value)
        .map(|x| {
            v(
                swap_case(&x.value),
                format!(
                    "{}, other case ({})",
                    x.label,
                    if insensitive { "still matches" } else { "miss" }
                ),
                insensitive,
            )
        })
        .collect();
    vs.extend(extra);
    vs
}

fn dedup(vs: Vec<Variant>) -> Vec<Variant> {
    let mut seen = BTreeSet::new();
    vs.into_iter()
        .filter(|x| seen.insert(x.value.clone()))
        .collect()
}

/// The identities (URI SANs) for principal values: `spiffe://` + each form; SPIFFE-shaped values
/// also with every trust domain of the mesh's bundle (alias rewriting).
pub(super) fn principal_identities(n: &Named, mesh: &MeshConfig) -> Vec<Variant> {
    let mut out = Vec::new();
    for x in with_case_variants(affix_variants(&n.value, "anything"), false) {
        out.push(v(format!("spiffe://{}", x.value), x.label, x.matching));
    }
    let parts: Vec<&str> = n.value.split('/').collect();
    if parts.len() == 5 && parts.get(1) == Some(&"ns") && parts.get(3) == Some(&"sa") {
        let rest = parts.get(1..).map(|p| p.join("/")).unwrap_or_default();
        let mut tds: Vec<String> = vec![mesh.trust_domain.clone(), "cluster.local".into()];
        tds.extend(mesh.trust_domain_aliases.iter().cloned());
        tds.push("other-td".into());
        for td in tds {
            let rest = rest.replace('*', "x");
            out.push(v(
                format!("spiffe://{td}/{rest}"),
                format!("trust domain {td}"),
                td != "other-td",
            ));
        }
    }
    out
}

/// Namespaces: regex `.*/ns/<v>/.*` where every `*` is a wildcard.
pub(super) fn namespace_identities(n: &Named, first: bool) -> Vec<Variant> {
    let val = &n.value;
    let mut forms = vec![
        v(val.replace('*', "x"), "'*' as x", true),
        v(val.replace('*', ""), "'*' as empty", true),
    ];
    if !val.ends_with('*') {
        forms.push(v(
            format!("{}x", val.replace('*', "x")),
            "+ x (miss)",
            false,
        ));
    }
    if !val.starts_with('*') {
        forms.push(v(
            format!("x{}", val.replace('*', "x")),
            "x + (miss)",
            false,
        ));
    }
    forms.extend(metachar_misses(&val.replace('*', "x")));
    let forms = with_case_variants(dedup(forms), false);
    let mut out: Vec<Variant> = forms
        .iter()
        .filter(|f| !f.value.is_empty())
        .map(|f| {
            v(
                format!("spiffe://cluster.local/ns/{}/sa/diff", f.value),
                f.label.clone(),
                f.matching,
            )
        })
        .collect();
    if first {
        if let Some(f) = forms.first() {
            out.push(v(
                format!("spiffe://cluster.local/ns/other/sa/x/ns/{}/y", f.value),
                "namespace in a later path segment (regex .*/ns/<v>/.* still matches)",
                true,
            ));
            out.push(v(
                format!("spiffe://cluster.local/ns/{}", f.value),
                "namespace without a trailing segment (miss)",
                false,
            ));
        }
    }
    out
}

pub(super) fn service_account_identities(ns: &str, sa: &str) -> Vec<Variant> {
    vec![
        v(
            format!("spiffe://cluster.local/ns/{ns}/sa/{sa}"),
            "exact",
            true,
        ),
        v(
            format!("spiffe://other-td/ns/{ns}/sa/{sa}"),
            "other trust domain",
            true,
        ),
        v(
            format!("spiffe://cluster.local/ns/{ns}/sa/{sa}x"),
            "sa + x (miss)",
            false,
        ),
        v(
            format!("spiffe://cluster.local/ns/{ns}/sa/{sa}/extra"),
            "extra segment after sa",
            true,
        ),
        v(
            format!("spiffe://cluster.local/ns/{ns}/extra/sa/{sa}"),
            "extra segment before sa",
            true,
        ),
        v(
            format!("spiffe://cluster.local/ns/{ns}x/sa/{sa}"),
            "namespace + x (miss)",
            false,
        ),
    ]
}

pub(super) fn trust_domain_identities(n: &Named) -> Vec<Variant> {
    let mut out = Vec::new();
    for x in affix_variants(&n.value, "anything") {
        out.push(v(
            format!("spiffe://{}/ns/foo/sa/diff", x.value),
            x.label.clone(),
            x.matching,
        ));
        if x.label == "exact" {
            out.push(v(
                format!("spiffe://{}", x.value),
                "no path after the trust domain (miss)",
                false,
            ));
        }
    }
    out
}

pub(super) fn host_variants(n: &Named) -> Vec<Variant> {
    let mut out = with_case_variants(affix_variants(&n.value, "anything.diff.test"), true);
    if !n.value.contains('*') {
        out.push(v(
            format!("{}:80", n.value),
            "exact with a port (miss)",
            false,
        ));
    }
    out
}

/// The methods Envoy's HTTP/1 codec accepts (it answers 400 to any other token, before filters).
/// `HEAD` and `CONNECT` are left out: neither carries an ordinary request through curl.
pub(super) const KNOWN_METHODS: [&str; 7] =
    ["GET", "POST", "PUT", "DELETE", "OPTIONS", "TRACE", "PATCH"];

/// Methods: every method the codec accepts, marked by whether Istio's wildcard form of `n` matches
/// it (exact, `X*` prefix, `*X` suffix, `*` presence).
pub(super) fn method_variants(n: &Named) -> Vec<Variant> {
    let val = n.value.as_str();
    KNOWN_METHODS
        .iter()
        .map(|m| {
            let matching = if val == "*" {
                true
            } else if let Some(p) = val.strip_suffix('*').filter(|_| !val.starts_with('*')) {
                m.starts_with(p)
            } else if let Some(s) = val.strip_prefix('*') {
                m.ends_with(s)
            } else {
                *m == val
            };
            v(*m, if matching { "matches" } else { "miss" }, matching)
        })
        .collect()
}

pub(super) fn path_variants(n: &Named, skipped: &mut BTreeSet<String>) -> Vec<Variant> {
    let val = &n.value;
    if val == "*" {
        return vec![v("/anything", "any path for '*'", true)];
    }
    if val.contains('{') {
        let t1 = val.replace("{**}", "a/b").replace("{*}", "seg");
        return vec![
            v(t1.clone(), "template: {*}=seg, {**}=a/b", true),
            v(
                val.replace("{**}", "").replace("{*}", "seg"),
                "template: {**} empty",
                true,
            ),
            v(
                val.replace("{**}", "a/b").replace("{*}", "a/b"),
                "template: {*} spanning '/' (miss)",
                false,
            ),
            v(
                val.replace("{**}", "a/b").replace("{*}", ""),
                "template: {*} empty (miss)",
                false,
            ),
            v(format!("{t1}x"), "template + x", false),
            v(format!("{t1}?q=1"), "template with a query", true),
        ];
    }
    if let Some(p) = val.strip_suffix('*').filter(|_| !val.starts_with('*')) {
        let mut out = vec![
            v(p, "the prefix itself", true),
            v(format!("{p}x"), "prefix + x", true),
            v(format!("/x{p}"), "/x + prefix (miss)", false),
        ];
        if let Some(short) = p.strip_suffix('/') {
            if !short.is_empty() {
                out.push(v(short, "prefix without its trailing '/' (miss)", false));
            }
        }
        return out;
    }
    if let Some(s) = val.strip_prefix('*') {
        return vec![
            v(format!("/x{s}"), "/x + suffix", true),
            v(s, "the suffix itself", s.starts_with('/')),
            v(format!("/x{s}x"), "suffix + x (miss)", false),
            v(format!("/x{s}?q=1"), "suffix with a query", true),
        ];
    }
    if !val.starts_with('/') {
        skipped.insert(SKIP_RELATIVE_PATH.into());
        return vec![v(format!("/{val}"), "'/' + relative value (miss)", false)];
    }
    let mut out = vec![
        v(val.clone(), "exact", true),
        v(format!("{val}?x=1"), "exact with a query string", true),
        v(format!("{val}x"), "exact + x (miss)", false),
        v(format!("{val}/"), "exact + '/' (miss)", false),
        v(swap_case(val), "other case (miss)", false),
        v(
            format!("/x/..{val}"),
            "dot segments normalize to exact",
            true,
        ),
        v(format!("/{val}"), "double slash merges to exact", true),
        v(
            percent_encode_first_letter(val),
            "a letter percent-encoded (decoded by normalization)",
            true,
        ),
    ];
    if val.contains('*') {
        out.push(v(
            val.replace('*', "x"),
            "inner '*' replaced by x (miss: literal)",
            false,
        ));
    }
    out
}

/// `/exact` -> `/%65xact`: the first ASCII letter as `%XX` (an unreserved character, which
/// `normalize_path` decodes).
fn percent_encode_first_letter(path: &str) -> String {
    let mut done = false;
    path.chars()
        .map(|c| {
            if !done && c.is_ascii_alphabetic() {
                done = true;
                format!("%{:02X}", u32::from(c))
            } else {
                c.to_string()
            }
        })
        .collect()
}

pub(super) fn header_variants(n: &Named) -> Vec<Variant> {
    let mut out = with_case_variants(affix_variants(&n.value, "anything"), false);
    if n.value == "*" {
        out.push(v("", "empty value for '*' (present)", true));
    }
    // The header twice: Envoy 1.40 RBAC matches when any one value matches; a second value
    // must not hide the first from a DENY (or from notValues).
    if let Some(first) = out.iter().find(|x| x.matching).cloned() {
        out.push(v(
            format!("{}\u{1}other", first.value),
            format!("{}, sent twice (second value 'other')", first.label),
            false,
        ));
    }
    out
}

pub(super) fn ip_variants(n: &Named) -> Vec<Variant> {
    let (addr, len) = match n.value.split_once('/') {
        Some((a, l)) => (a, l.parse::<u32>().ok()),
        None => (n.value.as_str(), None),
    };
    let Ok(ip) = addr.parse::<IpAddr>() else {
        return Vec::new();
    };
    let (bits, raw) = match ip {
        IpAddr::V4(a) => (32u32, u128::from(u32::from(a))),
        IpAddr::V6(a) => (128u32, u128::from(a)),
    };
    let len = len.unwrap_or(bits).min(bits);
    let host_bits = bits - len;
    let mask: u128 = if host_bits >= 128 {
        u128::MAX
    } else {
        (1u128 << host_bits) - 1
    };
    let first = raw & !mask;
    let last = first | mask;
    let max = if bits == 32 {
        u128::from(u32::MAX)
    } else {
        u128::MAX
    };
    let to_ip = |x: u128| -> Option<String> {
        if bits == 32 {
            u32::try_from(x)
                .ok()
                .map(|y| std::net::Ipv4Addr::from(y).to_string())
        } else {
            Some(std::net::Ipv6Addr::from(x).to_string())
        }
    };
    let mut out = Vec::new();
    if let Some(s) = to_ip(first) {
        out.push(v(s, "first address of the block", true));
    }
    if last != first {
        if let Some(s) = to_ip(last) {
            out.push(v(s, "last address of the block", true));
        }
    }
    if last < max {
        if let Some(s) = to_ip(last + 1) {
            out.push(v(s, "address just after the block (miss)", false));
        }
    }
    if first > 0 {
        if let Some(s) = to_ip(first - 1) {
            out.push(v(s, "address just before the block (miss)", false));
        }
    }
    out
}

/// SNI forms, lower-case: Envoy reports the requested server name in lower case (as a wasm host
/// would hand it to the engine).
pub(super) fn sni_variants(n: &Named) -> Vec<Variant> {
    affix_variants(&n.value, "anything.sni.test")
        .into_iter()
        .map(|x| v(x.value.to_ascii_lowercase(), x.label, x.matching))
        .filter(|x| {
            !x.value.is_empty()
                && !x.value.starts_with('.')
                && !x.value.ends_with('.')
                && x.value.parse::<IpAddr>().is_err()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(vs: &[Variant]) -> Vec<(&str, bool)> {
        vs.iter().map(|x| (x.value.as_str(), x.matching)).collect()
    }

    #[test]
    fn wildcard_forms() {
        assert_eq!(
            values(&affix_variants("abc*", "any")),
            vec![("abc", true), ("abcx", true), ("xabc", false)]
        );
        assert_eq!(
            values(&affix_variants("*.a.b", "any")),
            vec![
                (".a.b", true),
                ("x.a.b", true),
                (".a.bx", false),
                ("xXaXb", false)
            ]
        );
        assert_eq!(
            values(&affix_variants("a*b", "any")),
            vec![
                ("a*b", true),
                ("a*bx", false),
                ("xa*b", false),
                ("axb", false)
            ]
        );
        assert_eq!(values(&affix_variants("*", "any")), vec![("any", true)]);
    }

    #[test]
    fn ip_blocks() {
        let n = |s: &str| Named {
            value: s.into(),
            positive: true,
            field: String::new(),
        };
        assert_eq!(
            values(&ip_variants(&n("192.168.10.0/24"))),
            vec![
                ("192.168.10.0", true),
                ("192.168.10.255", true),
                ("192.168.11.0", false),
                ("192.168.9.255", false)
            ]
        );
        assert_eq!(
            values(&ip_variants(&n("1.2.3.4"))),
            vec![("1.2.3.4", true), ("1.2.3.5", false), ("1.2.3.3", false)]
        );
    }
}
