//! The probes of one golden ([`plan`]): one dimension varied at a time from a neutral request,
//! in four steps (identities, SNI, HTTP attributes, "most things match"), the values from
//! [`super::values`] and their forms from [`super::variants`].
//!
//! What cannot be produced on the wire is not generated; each such value is recorded in
//! [`PolicyValues::skipped`] with the reason, and the request then lacks the attribute on both
//! sides (still a valid comparison: a positive matcher fails, a negation holds).

use std::collections::BTreeSet;

use policy_engine::MeshConfig;

use super::probe::{HttpRequest, Listener, Peer, Probe};
use super::values::PolicyValues;
use super::variants::{
    header_variants, host_variants, ip_variants, method_variants, namespace_identities,
    path_variants, principal_identities, service_account_identities, sni_variants,
    trust_domain_identities, v, Variant,
};

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

#[derive(Default)]
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

/// The listeners as the steps use them: the one no policy names, and the named ones.
struct Ports<'a> {
    listeners: &'a [Listener],
    unnamed: usize,
    named: Vec<usize>,
}

impl<'a> Ports<'a> {
    fn new(listeners: &'a [Listener]) -> Self {
        let unnamed = listeners
            .iter()
            .position(|l| l.policy_port.is_none())
            .unwrap_or(0);
        let named = (0..listeners.len()).filter(|i| *i != unnamed).collect();
        Ports {
            listeners,
            unnamed,
            named,
        }
    }

    fn label(&self, i: usize) -> String {
        match self.listeners.get(i).and_then(|l| l.policy_port) {
            Some(p) => format!("port {p}"),
            None => "a port no policy names".to_string(),
        }
    }
}

/// Every identity form of every identity value, in a stable order (positive first within each
/// field as written), each URI SAN once.
fn identity_variants(pv: &PolicyValues, mesh: &MeshConfig) -> Vec<(String, Variant)> {
    let mut out: Vec<(String, Variant)> = Vec::new();
    for n in &pv.principals {
        for x in principal_identities(n, mesh) {
            out.push((format!("{} {:?}", n.field, n.value), x));
        }
    }
    for (i, n) in pv.namespaces.iter().enumerate() {
        for x in namespace_identities(n, i == 0) {
            out.push((format!("{} {:?}", n.field, n.value), x));
        }
    }
    for (ns, sa, n) in &pv.service_accounts {
        for x in service_account_identities(ns, sa) {
            out.push((format!("{} {:?}", n.field, n.value), x));
        }
    }
    for n in &pv.trust_domains {
        for x in trust_domain_identities(n) {
            out.push((format!("{} {:?}", n.field, n.value), x));
        }
    }
    out.push((
        "non-SPIFFE URI SAN".into(),
        v("urn:diff:not-spiffe", "URI SAN without spiffe://", false),
    ));
    let mut seen = BTreeSet::new();
    out.retain(|(_, x)| seen.insert(x.value.clone()));
    out
}

/// The first matching form of the first positive value of each identity field.
fn combined_identities(pv: &PolicyValues, mesh: &MeshConfig) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
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
            if !out.contains(&x.value) {
                out.push(x.value);
            }
        }
    }
    out
}

/// Step 1: identities on the neutral request (all named ports too on TCP when small enough).
fn identities_step(
    b: &mut Builder,
    ports: &Ports,
    identities: &[(String, Variant)],
    combined: &[String],
    base_http: &Option<HttpRequest>,
) {
    let http = base_http.is_some();
    let unnamed = ports.unnamed;
    b.push(
        unnamed,
        Peer::Plaintext,
        base_http.clone(),
        "plaintext, neutral request".into(),
    );
    for (what, x) in identities {
        b.push(
            unnamed,
            mtls(&x.value),
            base_http.clone(),
            format!("{what}: {} ({})", x.value, x.label),
        );
    }
    let small = identities.len() * ports.named.len() <= TCP_FULL_PRODUCT;
    for &l in &ports.named {
        b.push(
            l,
            Peer::Plaintext,
            base_http.clone(),
            format!("{}, plaintext", ports.label(l)),
        );
        b.push(
            l,
            mtls(NEUTRAL_IDENTITY),
            base_http.clone(),
            format!("{}, neutral identity", ports.label(l)),
        );
        // HTTP: the identities meet the named ports in step 4 (with the "most things match"
        // request); TCP has nothing else to vary, so identities cross the ports (sampled when large).
        let ids: Vec<&(String, Variant)> = match (http, small) {
            (true, _) => Vec::new(),
            (false, true) => identities.iter().collect(),
            (false, false) => identities.iter().take(2).collect(),
        };
        for (what, x) in ids {
            b.push(
                l,
                mtls(&x.value),
                base_http.clone(),
                format!("{}, {what}: {} ({})", ports.label(l), x.value, x.label),
            );
        }
        for id in combined.iter().filter(|_| !http) {
            b.push(
                l,
                mtls(id),
                base_http.clone(),
                format!("{}, identity {id}", ports.label(l)),
            );
        }
    }
}

/// Step 2: SNI variants (mTLS, neutral identity).
fn sni_step(b: &mut Builder, ports: &Ports, pv: &PolicyValues, base_http: &Option<HttpRequest>) {
    let unnamed = ports.unnamed;
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
        if let Some(&l) = ports.named.first() {
            b.push(
                l,
                peer,
                base_http.clone(),
                format!("{}, {what}: SNI {} ({})", ports.label(l), x.value, x.label),
            );
        }
    }
}

/// The HTTP dimensions: each HTTP value with its forms and how to set it on a request. Records
/// the paths that cannot be sent in `pv.skipped`.
fn http_dimensions(pv: &mut PolicyValues) -> Vec<(String, Vec<Variant>, Apply)> {
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
    dims
}

/// Step 3: HTTP attributes, one at a time, plaintext. Returns the "most things match" request:
/// the first matching form of each field's first positive value.
fn http_step(
    b: &mut Builder,
    ports: &Ports,
    pv: &mut PolicyValues,
    neutral: &HttpRequest,
) -> HttpRequest {
    let unnamed = ports.unnamed;
    let mut first_match = neutral.clone();
    let dims = http_dimensions(pv);
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
        let field = what.split(' ').next().unwrap_or_default().to_string();
        let positive = !what.starts_with("not") && !what.contains(" notValues");
        if positive && !done_first.contains(&field) {
            if let Some(x) = variants.iter().find(|x| x.matching) {
                apply(&mut first_match, what, &x.value);
                done_first.insert(field);
            }
        }
    }
    if pv.hosts.is_empty() && pv.methods.is_empty() && pv.paths.is_empty() && pv.headers.is_empty()
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
    first_match
}

/// Step 4: "most things match" on every listener, plaintext and the combined identities.
fn most_things_match_step(
    b: &mut Builder,
    ports: &Ports,
    combined: &[String],
    combined_http: &Option<HttpRequest>,
) {
    for l in std::iter::once(ports.unnamed).chain(ports.named.iter().copied()) {
        b.push(
            l,
            Peer::Plaintext,
            combined_http.clone(),
            format!("{}, most things match, plaintext", ports.label(l)),
        );
        for id in combined {
            b.push(
                l,
                mtls(id),
                combined_http.clone(),
                format!("{}, most things match, identity {id}", ports.label(l)),
            );
        }
    }
}

/// Generate the probes: one dimension varied at a time from a neutral request, identities on the
/// neutral request, ports with a few peers, SNI variants, and a "most things match" request.
/// `http` selects HTTP probes (else TCP connections).
pub fn plan(pv: &mut PolicyValues, mesh: &MeshConfig, listeners: &[Listener], http: bool) -> Plan {
    let identities = identity_variants(pv, mesh);
    let combined = combined_identities(pv, mesh);
    let ports = Ports::new(listeners);
    let neutral = HttpRequest {
        method: neutral_method(pv),
        path: NEUTRAL_PATH.to_string(),
        host: NEUTRAL_HOST.to_string(),
        headers: Vec::new(),
    };
    let base_http = http.then(|| neutral.clone());
    let mut b = Builder::default();
    identities_step(&mut b, &ports, &identities, &combined, &base_http);
    sni_step(&mut b, &ports, pv, &base_http);
    let combined_http = if http {
        Some(http_step(&mut b, &ports, pv, &neutral))
    } else {
        None
    };
    most_things_match_step(&mut b, &ports, &combined, &combined_http);

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
}
