//! Trust-domain aliases (`meshConfig.trustDomain` + `trustDomainAliases`), as Istio's
//! `pilot/pkg/security/trustdomain/bundle.go` applies them to `principals` and `trustDomains`.

use crate::workload::MeshConfig;

const CLUSTER_LOCAL: &str = "cluster.local";

#[derive(Clone, Debug)]
pub(crate) struct TrustBundle {
    /// The mesh trust domain first, then its aliases.
    domains: Vec<String>,
}

/// `pattern` is `*`, or `x*` / `*x` matching `a` by prefix / suffix.
fn wildcard_matches(a: &str, pattern: &str) -> bool {
    pattern == "*"
        || pattern.strip_suffix('*').is_some_and(|p| a.starts_with(p))
        || pattern.strip_prefix('*').is_some_and(|s| a.ends_with(s))
}

/// Istio's `trustdomain.stringMatch`: exact, or a wildcard on EITHER side ("the pattern can be in
/// the string or the list"), so a policy's `*bar` matches the alias `foobar` and the alias
/// `*-td` would match a policy's `old-td`.
fn domain_pattern_matches(a: &str, pattern: &str) -> bool {
    a == pattern || wildcard_matches(a, pattern) || wildcard_matches(pattern, a)
}

impl TrustBundle {
    pub(crate) fn new(mesh: &MeshConfig) -> TrustBundle {
        let mut domains = vec![mesh.trust_domain.clone()];
        domains.extend(mesh.trust_domain_aliases.iter().cloned());
        TrustBundle { domains }
    }

    /// `ReplaceTrustDomainAliases` for one principal: a SPIFFE-looking value
    /// (`td/ns/x/sa/y`, exactly five `/`-separated parts, `td` not `*`) whose trust domain is
    /// `cluster.local` or one of the bundle expands to one value per trust domain of the bundle.
    pub(crate) fn expand_principal(&self, principal: &str) -> Vec<String> {
        // Five `/`-separated parts: the trust domain, then `rest` (`ns/x/sa/y`).
        let (td, rest) = match principal.split_once('/') {
            Some((td, rest)) if rest.bytes().filter(|b| *b == b'/').count() == 3 => (td, rest),
            _ => return vec![principal.to_string()],
        };
        if td == "*" {
            return vec![principal.to_string()];
        }
        // Without aliases, a principal of the mesh's own trust domain expands to itself (the loop
        // below would rebuild the same text).
        if let [only] = self.domains.as_slice() {
            if only == td {
                return vec![principal.to_string()];
            }
        }
        if !(td == CLUSTER_LOCAL || self.domains.iter().any(|d| domain_pattern_matches(td, d))) {
            return vec![principal.to_string()];
        }
        let mut out: Vec<String> = Vec::new();
        for d in &self.domains {
            // A principal whose trust domain is `*suffix` matching this domain is kept as written.
            let candidate = if td.strip_prefix('*').is_some_and(|s| d.ends_with(s)) {
                principal.to_string()
            } else {
                [d.as_str(), "/", rest].concat()
            };
            if !out.contains(&candidate) {
                out.push(candidate);
            }
        }
        out
    }

    /// `ExpandTrustDomainAliases` for one `trustDomains` value.
    pub(crate) fn expand_trust_domain(&self, v: &str) -> Vec<String> {
        if self.domains.iter().any(|d| d == v) {
            self.domains.clone()
        } else {
            vec![v.to_string()]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::TrustBundle;
    use crate::workload::MeshConfig;

    #[test]
    fn default_bundle_keeps_principals() {
        let b = TrustBundle::new(&MeshConfig::default());
        assert_eq!(
            b.expand_principal("cluster.local/ns/a/sa/b"),
            vec!["cluster.local/ns/a/sa/b"]
        );
        assert_eq!(b.expand_principal("ns/a/sa/b"), vec!["ns/a/sa/b"]);
    }

    #[test]
    fn wildcard_trust_domain_in_the_policy_expands_to_matching_aliases() {
        // Istio golden `simple-policy-td-aliases`: `*bar/ns/foo/sa/x` with td1 + alias foobar.
        let mesh = MeshConfig {
            trust_domain: "td1".into(),
            trust_domain_aliases: vec!["foobar".into()],
            ..MeshConfig::default()
        };
        let b = TrustBundle::new(&mesh);
        assert_eq!(
            b.expand_principal("*bar/ns/foo/sa/x"),
            vec!["td1/ns/foo/sa/x", "*bar/ns/foo/sa/x"]
        );
        let mesh = MeshConfig {
            trust_domain: "new-td".into(),
            trust_domain_aliases: vec!["old-td".into(), "some-trustdomain".into()],
            ..MeshConfig::default()
        };
        let b = TrustBundle::new(&mesh);
        assert_eq!(
            b.expand_principal("*-td/ns/foo/sa/p"),
            vec!["*-td/ns/foo/sa/p", "some-trustdomain/ns/foo/sa/p"]
        );
    }

    #[test]
    fn aliases_expand() {
        let mesh = MeshConfig {
            trust_domain: "td2".into(),
            trust_domain_aliases: vec!["td1".into()],
            ..MeshConfig::default()
        };
        let b = TrustBundle::new(&mesh);
        assert_eq!(
            b.expand_principal("td1/ns/foo/sa/bar"),
            vec!["td2/ns/foo/sa/bar", "td1/ns/foo/sa/bar"]
        );
        assert_eq!(
            b.expand_principal("cluster.local/ns/foo/sa/bar"),
            vec!["td2/ns/foo/sa/bar", "td1/ns/foo/sa/bar"]
        );
        assert_eq!(
            b.expand_principal("other/ns/foo/sa/bar"),
            vec!["other/ns/foo/sa/bar"]
        );
        assert_eq!(b.expand_trust_domain("td1"), vec!["td2", "td1"]);
    }
}
