//! Requests generated from a golden's own values, so that each matcher is exercised both ways:
//! for every principal, namespace, host, method, path, header value, remote IP, port and SNI the
//! policies name, a request that should match and near misses (`+x` before or after, other case,
//! a query string, a regex metacharacter taken literally, ...).
//!
//! What cannot be produced on the wire is not generated; each such value is recorded in
//! [`PolicyValues::skipped`] with the reason, and the request then lacks the attribute on both
//! sides (still a valid comparison: a positive matcher fails, a negation holds).

use std::collections::BTreeSet;
use std::net::IpAddr;

use policy_engine::MeshConfig;
use serde_json::Value;

/// A listener: one per port the golden names (`policy_port`), plus one the golden does not name.
#[derive(Clone, Copy, Debug)]
pub struct Listener {
    /// The port as the golden wrote it; `None` for the unnamed listener.
    pub policy_port: Option<u16>,
    /// The loopback port Envoy listens on (and the policies and filters were rewritten to).
    pub port: u16,
}

/// How the client reaches Envoy.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Peer {
    /// No TLS: no principal, no SNI.
    Plaintext,
    /// mTLS with a client certificate whose only URI SAN is `identity`, requesting `sni` (none
    /// when empty).
    Mtls { identity: String, sni: String },
}

/// The HTTP part of a probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpRequest {
    pub method: String,
    /// As sent on the wire (curl `--path-as-is`), query string included.
    pub path: String,
    /// The `Host` header (`:authority`).
    pub host: String,
    /// Extra headers as sent (name as written; an empty value is sent as `Name;`).
    pub headers: Vec<(String, String)>,
}

/// One request (HTTP) or connection (TCP).
#[derive(Clone, Debug)]
pub struct Probe {
    /// Unique within a golden; sent as `x-diff-id` on HTTP.
    pub id: u32,
    /// Index into the golden's listeners.
    pub listener: usize,
    pub peer: Peer,
    /// `None` for a TCP probe.
    pub http: Option<HttpRequest>,
    /// Which policy value this probe exercises, and how.
    pub why: String,
}

/// A policy value, with whether it came from a positive list (`principals`, `values`) or a
/// negative one (`notPrincipals`, `notValues`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Named {
    pub value: String,
    pub positive: bool,
    /// `principals`, `when source.namespace`, ...
    pub field: String,
}

/// Everything the policies name, by attribute.
#[derive(Clone, Debug, Default)]
pub struct PolicyValues {
    pub principals: Vec<Named>,
    pub namespaces: Vec<Named>,
    /// (namespace, service account): `sa` alone means the policy's namespace.
    pub service_accounts: Vec<(String, String, Named)>,
    pub trust_domains: Vec<Named>,
    pub hosts: Vec<Named>,
    pub methods: Vec<Named>,
    pub paths: Vec<Named>,
    /// (header name, value).
    pub headers: Vec<(String, Named)>,
    pub remote_ips: Vec<Named>,
    pub snis: Vec<Named>,
    /// Values that are not exercised, with the reason.
    pub skipped: BTreeSet<String>,
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect()
}

fn push_all(out: &mut Vec<Named>, obj: Option<&Value>, pos: &str, neg: &str, label: &str) {
    for (field, positive) in [(pos, true), (neg, false)] {
        for value in strings(obj.and_then(|o| o.get(field))) {
            let n = Named {
                value,
                positive,
                field: format!("{label}{field}"),
            };
            if !out.contains(&n) {
                out.push(n);
            }
        }
    }
}

const SKIP_SOURCE_IP: &str =
    "ipBlocks / notIpBlocks / source.ip: the direct peer is always 127.0.0.1 (loopback only)";
const SKIP_DESTINATION_IP: &str =
    "destination.ip: the listener's address is always 127.0.0.1 (loopback only)";
const SKIP_JWT: &str = "requestPrincipals / request.auth.*: no jwt_authn filter here; requests carry no JWT on both sides";
const SKIP_METADATA: &str = "experimental.envoy.filters.*: no filter writes that dynamic metadata here; absent on both sides";
const SKIP_LOWER_METHOD: &str = "methods other than GET POST PUT DELETE OPTIONS TRACE PATCH (e.g. lower-case ones): Envoy's HTTP/1 codec answers 400 before any filter runs; the known methods are sent instead";
const SKIP_RELATIVE_PATH: &str =
    "paths not starting with '/' or '*': an HTTP/1.1 origin-form path starts with '/' (only '/'+value is sent)";

impl PolicyValues {
    /// Everything the policy documents name.
    pub fn collect(docs: &[Value]) -> PolicyValues {
        let mut pv = PolicyValues::default();
        for doc in docs {
            let ns = doc
                .get("metadata")
                .and_then(|m| m.get("namespace"))
                .and_then(Value::as_str)
                .unwrap_or("default")
                .to_string();
            let rules = doc
                .get("spec")
                .and_then(|s| s.get("rules"))
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for rule in &rules {
                for from in rule
                    .get("from")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    pv.collect_source(from.get("source"), &ns);
                }
                for to in rule
                    .get("to")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let op = to.get("operation");
                    push_all(&mut pv.hosts, op, "hosts", "notHosts", "");
                    push_all(&mut pv.methods, op, "methods", "notMethods", "");
                    push_all(&mut pv.paths, op, "paths", "notPaths", "");
                }
                for c in rule
                    .get("when")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    pv.collect_condition(c, &ns);
                }
            }
        }
        if pv.methods.iter().any(|m| {
            let bare = m.value.trim_matches('*');
            !bare.is_empty() && !KNOWN_METHODS.iter().any(|k| k.contains(bare))
        }) {
            pv.skipped.insert(SKIP_LOWER_METHOD.into());
        }
        pv
    }

    fn collect_source(&mut self, src: Option<&Value>, ns: &str) {
        push_all(&mut self.principals, src, "principals", "notPrincipals", "");
        push_all(&mut self.namespaces, src, "namespaces", "notNamespaces", "");
        push_all(
            &mut self.trust_domains,
            src,
            "trustDomains",
            "notTrustDomains",
            "",
        );
        push_all(
            &mut self.remote_ips,
            src,
            "remoteIpBlocks",
            "notRemoteIpBlocks",
            "",
        );
        for (field, positive) in [("serviceAccounts", true), ("notServiceAccounts", false)] {
            for v in strings(src.and_then(|s| s.get(field))) {
                self.push_service_account(v, ns, positive, field.to_string());
            }
        }
        let has = |f: &str| src.and_then(|s| s.get(f)).is_some();
        if has("ipBlocks") || has("notIpBlocks") {
            self.skipped.insert(SKIP_SOURCE_IP.into());
        }
        if has("requestPrincipals") || has("notRequestPrincipals") {
            self.skipped.insert(SKIP_JWT.into());
        }
    }

    /// A service account value `v` (`ns/sa`, or `sa` in the policy's namespace `ns`) named at
    /// `field`.
    fn push_service_account(&mut self, v: String, ns: &str, positive: bool, field: String) {
        let (sa_ns, sa) = match v.split_once('/') {
            Some((a, b)) => (a.to_string(), b.to_string()),
            None => (ns.to_string(), v.clone()),
        };
        self.service_accounts.push((
            sa_ns,
            sa,
            Named {
                value: v,
                positive,
                field,
            },
        ));
    }

    fn collect_condition(&mut self, c: &Value, ns: &str) {
        let key = c.get("key").and_then(Value::as_str).unwrap_or_default();
        let label = format!("when {key} ");
        let target: Option<&mut Vec<Named>> = match key {
            "source.principal" => Some(&mut self.principals),
            "source.namespace" => Some(&mut self.namespaces),
            "source.trustDomain" => Some(&mut self.trust_domains),
            "remote.ip" => Some(&mut self.remote_ips),
            "connection.sni" => Some(&mut self.snis),
            "request.headers[:method]" => Some(&mut self.methods),
            "request.headers[:authority]" => Some(&mut self.hosts),
            "request.headers[:path]" => Some(&mut self.paths),
            _ => None,
        };
        if let Some(list) = target {
            push_all(list, Some(c), "values", "notValues", &label);
            return;
        }
        if key == "source.serviceAccount" {
            for (field, positive) in [("values", true), ("notValues", false)] {
                for v in strings(c.get(field)) {
                    self.push_service_account(v, ns, positive, format!("{label}{field}"));
                }
            }
        } else if let Some(name) = key
            .strip_prefix("request.headers[")
            .and_then(|r| r.strip_suffix(']'))
        {
            let mut list = Vec::new();
            push_all(&mut list, Some(c), "values", "notValues", &label);
            for n in list {
                self.headers.push((name.to_string(), n));
            }
        } else if key == "source.ip" {
            self.skipped.insert(SKIP_SOURCE_IP.into());
        } else if key == "destination.ip" {
            self.skipped.insert(SKIP_DESTINATION_IP.into());
        } else if key.starts_with("request.auth.") {
            self.skipped.insert(SKIP_JWT.into());
        } else if key.starts_with("experimental.envoy.filters.") {
            self.skipped.insert(SKIP_METADATA.into());
        }
        // destination.port: a listener per port (super::ports).
    }
}

/// A value to send and what it tests.
#[derive(Clone, Debug)]
struct Variant {
    value: String,
    label: String,
    /// The form that should match the policy value (as opposed to a near miss).
    matching: bool,
}

fn v(value: impl Into<String>, label: impl Into<String>, matching: bool) -> Variant {
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
fn principal_identities(n: &Named, mesh: &MeshConfig) -> Vec<Variant> {
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
fn namespace_identities(n: &Named, first: bool) -> Vec<Variant> {
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

fn service_account_identities(ns: &str, sa: &str) -> Vec<Variant> {
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

fn trust_domain_identities(n: &Named) -> Vec<Variant> {
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

fn host_variants(n: &Named) -> Vec<Variant> {
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
const KNOWN_METHODS: [&str; 7] = ["GET", "POST", "PUT", "DELETE", "OPTIONS", "TRACE", "PATCH"];

/// Methods: every method the codec accepts, marked by whether Istio's wildcard form of `n` matches
/// it (exact, `X*` prefix, `*X` suffix, `*` presence).
fn method_variants(n: &Named) -> Vec<Variant> {
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

fn path_variants(n: &Named, skipped: &mut BTreeSet<String>) -> Vec<Variant> {
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

fn header_variants(n: &Named) -> Vec<Variant> {
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

fn ip_variants(n: &Named) -> Vec<Variant> {
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
fn sni_variants(n: &Named) -> Vec<Variant> {
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

/// Sets one attribute of a request: (request, dimension, value).
type Apply = fn(&mut HttpRequest, &str, &str);

/// The neutral request: nothing in it is named by the policies.
const NEUTRAL_PATH: &str = "/diff-neutral";
const NEUTRAL_HOST: &str = "neutral.diff.test";
/// The SNI of mTLS probes that do not exercise `connection.sni`.
pub const NEUTRAL_SNI: &str = "neutral.sni.test";
/// The identity of probes that exercise the SNI or a port rather than a principal.
pub const NEUTRAL_IDENTITY: &str = "spiffe://cluster.local/ns/diff/sa/neutral";

/// At most this many identities cross every named port on TCP; beyond, the product is sampled.
const TCP_FULL_PRODUCT: usize = 60;

/// The probes of one golden.
pub struct Plan {
    pub probes: Vec<Probe>,
    /// Unique URI SANs of the client certificates the probes need.
    pub identities: Vec<String>,
    /// How many probes were generated before sampling down to [`MAX_PROBES_PER_GOLDEN`].
    pub generated: usize,
}

/// A golden with more probes than this is sampled evenly (the neutral request always kept): the
/// big goldens (`allow-full-rule`, `single-policy`) are the ones whose rules can never match on the
/// wire, and their fields are exercised one by one by the projections instead.
pub const MAX_PROBES_PER_GOLDEN: usize = 150;

/// Keep `max` probes spread evenly over `probes` (ids stay unique; the first is kept).
fn sample(probes: Vec<Probe>, max: usize) -> Vec<Probe> {
    let n = probes.len();
    if n <= max || max == 0 {
        return probes;
    }
    probes
        .into_iter()
        .enumerate()
        .filter(|(i, _)| {
            // Index i is kept when it starts a new bucket of n/max probes.
            (i * max) / n != ((i + 1) * max) / n || *i == 0
        })
        .map(|(_, p)| p)
        .take(max)
        .collect()
}

struct Builder {
    probes: Vec<Probe>,
    seen: BTreeSet<String>,
}

impl Builder {
    fn push(&mut self, listener: usize, peer: Peer, http: Option<HttpRequest>, why: String) {
        let key = format!("{listener}|{peer:?}|{http:?}");
        if !self.seen.insert(key) {
            return;
        }
        let id = u32::try_from(self.probes.len()).unwrap_or(u32::MAX);
        self.probes.push(Probe {
            id,
            listener,
            peer,
            http,
            why,
        });
    }
}

fn neutral_method(pv: &PolicyValues) -> String {
    for m in ["GET", "PUT", "DELETE", "OPTIONS", "PATCH", "POST"] {
        if !pv.methods.iter().any(|n| n.value == m) {
            return m.to_string();
        }
    }
    "TRACE".to_string()
}

fn mtls(identity: &str) -> Peer {
    Peer::Mtls {
        identity: identity.to_string(),
        sni: NEUTRAL_SNI.to_string(),
    }
}

/// Generate the probes: one dimension varied at a time from a neutral request, identities on the
/// neutral request, ports with a few peers, SNI variants, and a "most things match" request.
/// `http` selects HTTP probes (else TCP connections).
pub fn plan(pv: &mut PolicyValues, mesh: &MeshConfig, listeners: &[Listener], http: bool) -> Plan {
    // Identities, in a stable order: positive first within each field as written.
    let mut identity_variants: Vec<(String, Variant)> = Vec::new();
    for n in &pv.principals {
        for x in principal_identities(n, mesh) {
            identity_variants.push((format!("{} {:?}", n.field, n.value), x));
        }
    }
    for (i, n) in pv.namespaces.iter().enumerate() {
        for x in namespace_identities(n, i == 0) {
            identity_variants.push((format!("{} {:?}", n.field, n.value), x));
        }
    }
    for (ns, sa, n) in &pv.service_accounts {
        for x in service_account_identities(ns, sa) {
            identity_variants.push((format!("{} {:?}", n.field, n.value), x));
        }
    }
    for n in &pv.trust_domains {
        for x in trust_domain_identities(n) {
            identity_variants.push((format!("{} {:?}", n.field, n.value), x));
        }
    }
    identity_variants.push((
        "non-SPIFFE URI SAN".into(),
        v("urn:diff:not-spiffe", "URI SAN without spiffe://", false),
    ));
    let mut seen = BTreeSet::new();
    identity_variants.retain(|(_, x)| seen.insert(x.value.clone()));
    // The first matching form of the first positive value of each identity field.
    let mut combined_ids: Vec<String> = Vec::new();
    {
        let firsts = [
            pv.principals
                .iter()
                .find(|n| n.positive)
                .map(|n| principal_identities(n, mesh)),
            pv.namespaces
                .iter()
                .find(|n| n.positive)
                .map(|n| namespace_identities(n, false)),
            pv.service_accounts
                .iter()
                .find(|(_, _, n)| n.positive)
                .map(|(ns, sa, _)| service_account_identities(ns, sa)),
            pv.trust_domains
                .iter()
                .find(|n| n.positive)
                .map(trust_domain_identities),
        ];
        for list in firsts.into_iter().flatten() {
            if let Some(x) = list.into_iter().find(|x| x.matching) {
                if !combined_ids.contains(&x.value) {
                    combined_ids.push(x.value);
                }
            }
        }
    }

    let unnamed = listeners
        .iter()
        .position(|l| l.policy_port.is_none())
        .unwrap_or(0);
    let named: Vec<usize> = (0..listeners.len()).filter(|i| *i != unnamed).collect();
    let neutral = HttpRequest {
        method: neutral_method(pv),
        path: NEUTRAL_PATH.to_string(),
        host: NEUTRAL_HOST.to_string(),
        headers: Vec::new(),
    };
    let base_http = http.then(|| neutral.clone());
    let mut b = Builder {
        probes: Vec::new(),
        seen: BTreeSet::new(),
    };
    let port_label = |i: usize| match listeners.get(i).and_then(|l| l.policy_port) {
        Some(p) => format!("port {p}"),
        None => "a port no policy names".to_string(),
    };

    // 1. Identities on the neutral request (all named ports too on TCP when small enough).
    b.push(
        unnamed,
        Peer::Plaintext,
        base_http.clone(),
        "plaintext, neutral request".into(),
    );
    for (what, x) in &identity_variants {
        b.push(
            unnamed,
            mtls(&x.value),
            base_http.clone(),
            format!("{what}: {} ({})", x.value, x.label),
        );
    }
    let small = identity_variants.len() * named.len() <= TCP_FULL_PRODUCT;
    for &l in &named {
        b.push(
            l,
            Peer::Plaintext,
            base_http.clone(),
            format!("{}, plaintext", port_label(l)),
        );
        b.push(
            l,
            mtls(NEUTRAL_IDENTITY),
            base_http.clone(),
            format!("{}, neutral identity", port_label(l)),
        );
        // HTTP: the identities meet the named ports in step 4 (with the "most things match"
        // request); TCP has nothing else to vary, so identities cross the ports (sampled when large).
        let ids: Vec<&(String, Variant)> = match (http, small) {
            (true, _) => Vec::new(),
            (false, true) => identity_variants.iter().collect(),
            (false, false) => identity_variants.iter().take(2).collect(),
        };
        for (what, x) in ids {
            b.push(
                l,
                mtls(&x.value),
                base_http.clone(),
                format!("{}, {what}: {} ({})", port_label(l), x.value, x.label),
            );
        }
        for id in combined_ids.iter().filter(|_| !http) {
            b.push(
                l,
                mtls(id),
                base_http.clone(),
                format!("{}, identity {id}", port_label(l)),
            );
        }
    }

    // 2. SNI variants (mTLS, neutral identity).
    let snis: Vec<(String, Variant)> = pv
        .snis
        .iter()
        .flat_map(|n| {
            sni_variants(n)
                .into_iter()
                .map(move |x| (format!("{} {:?}", n.field, n.value), x))
        })
        .collect();
    if !snis.is_empty() {
        // TLS without SNI: `connection.sni` is absent (positive matchers fail, negations hold).
        b.push(
            unnamed,
            Peer::Mtls {
                identity: NEUTRAL_IDENTITY.to_string(),
                sni: String::new(),
            },
            base_http.clone(),
            "connection.sni: TLS without SNI".to_string(),
        );
    }
    for (what, x) in &snis {
        let peer = Peer::Mtls {
            identity: NEUTRAL_IDENTITY.to_string(),
            sni: x.value.clone(),
        };
        b.push(
            unnamed,
            peer.clone(),
            base_http.clone(),
            format!("{what}: SNI {} ({})", x.value, x.label),
        );
        if let Some(&l) = named.first() {
            b.push(
                l,
                peer,
                base_http.clone(),
                format!("{}, {what}: SNI {} ({})", port_label(l), x.value, x.label),
            );
        }
    }

    // 3. HTTP attributes, one at a time, plaintext.
    let mut first_match = neutral.clone();
    if http {
        let mut skipped = std::mem::take(&mut pv.skipped);
        let mut dims: Vec<(String, Vec<Variant>, Apply)> = Vec::new();
        for n in &pv.methods {
            dims.push((
                format!("{} {:?}", n.field, n.value),
                method_variants(n),
                |r, _, x| r.method = x.to_string(),
            ));
        }
        for n in &pv.paths {
            dims.push((
                format!("{} {:?}", n.field, n.value),
                path_variants(n, &mut skipped),
                |r, _, x| r.path = x.to_string(),
            ));
        }
        for n in &pv.hosts {
            dims.push((
                format!("{} {:?}", n.field, n.value),
                host_variants(n),
                |r, _, x| r.host = x.to_string(),
            ));
        }
        for (name, n) in &pv.headers {
            let name = name.clone();
            let vs: Vec<Variant> = header_variants(n)
                .into_iter()
                .map(|x| v(format!("{name}\u{0}{}", x.value), x.label, x.matching))
                .collect();
            dims.push((format!("{} {:?}", n.field, n.value), vs, |r, _, x| {
                if let Some((h, vals)) = x.split_once('\u{0}') {
                    r.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(h));
                    for val in vals.split('\u{1}') {
                        r.headers.push((h.to_string(), val.to_string()));
                    }
                }
            }));
        }
        for n in &pv.remote_ips {
            dims.push((
                format!("{} {:?}", n.field, n.value),
                ip_variants(n),
                |r, _, x| {
                    r.headers
                        .retain(|(n, _)| !n.eq_ignore_ascii_case("x-forwarded-for"));
                    r.headers
                        .push(("X-Forwarded-For".to_string(), x.to_string()));
                },
            ));
        }
        pv.skipped = skipped;
        let mut done_first: BTreeSet<String> = BTreeSet::new();
        for (what, variants, apply) in &dims {
            for x in variants {
                let mut req = neutral.clone();
                apply(&mut req, what, &x.value);
                let shown = x.value.replace('\u{0}', ": ").replace('\u{1}', " + ");
                b.push(
                    unnamed,
                    Peer::Plaintext,
                    Some(req),
                    format!("{what}: {shown:?} ({})", x.label),
                );
            }
            // The "most things match" request takes the first matching form of each field's first
            // positive value.
            let field = what.split(' ').next().unwrap_or_default().to_string();
            let positive = !what.starts_with("not") && !what.contains(" notValues");
            if positive && !done_first.contains(&field) {
                if let Some(x) = variants.iter().find(|x| x.matching) {
                    apply(&mut first_match, what, &x.value);
                    done_first.insert(field);
                }
            }
        }
        if pv.hosts.is_empty()
            && pv.methods.is_empty()
            && pv.paths.is_empty()
            && pv.headers.is_empty()
        {
            // Nothing HTTP-specific: a second neutral method still shows the verb is irrelevant.
            let mut req = neutral.clone();
            req.method = if neutral.method == "POST" {
                "GET".into()
            } else {
                "POST".into()
            };
            b.push(unnamed, Peer::Plaintext, Some(req), "another method".into());
        }
    }

    // 4. "Most things match": on every listener, plaintext and the combined identities.
    let combined_http = http.then(|| first_match.clone());
    for l in std::iter::once(unnamed).chain(named.iter().copied()) {
        b.push(
            l,
            Peer::Plaintext,
            combined_http.clone(),
            format!("{}, most things match, plaintext", port_label(l)),
        );
        for id in &combined_ids {
            b.push(
                l,
                mtls(id),
                combined_http.clone(),
                format!("{}, most things match, identity {id}", port_label(l)),
            );
        }
    }

    let generated = b.probes.len();
    let probes = sample(b.probes, MAX_PROBES_PER_GOLDEN);
    let mut identities: Vec<String> = Vec::new();
    for p in &probes {
        if let Peer::Mtls { identity, .. } = &p.peer {
            if !identities.contains(identity) {
                identities.push(identity.clone());
            }
        }
    }
    Plan {
        probes,
        identities,
        generated,
    }
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
    fn sampling_spreads_and_bounds() {
        let probes: Vec<Probe> = (0..10)
            .map(|id| Probe {
                id,
                listener: 0,
                peer: Peer::Plaintext,
                http: None,
                why: String::new(),
            })
            .collect();
        let ids = |v: Vec<Probe>| v.into_iter().map(|p| p.id).collect::<Vec<_>>();
        assert_eq!(ids(sample(probes.clone(), 20)).len(), 10);
        let kept = ids(sample(probes.clone(), 4));
        assert_eq!(kept.len(), 4, "{kept:?}");
        assert_eq!(kept[0], 0);
        assert!(kept.windows(2).all(|w| w[1] > w[0] + 1), "{kept:?}");
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
