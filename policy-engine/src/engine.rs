//! The compiled view of a policy set for one workload: parse, validate and compile once, then
//! answer many checks.

use std::borrow::Borrow;

use crate::attributes::{Attributes, RepeatedHeaders, Requirements};
use crate::authz::{CompiledAuthz, PolicyInfo};
use crate::decision::{Decision, Protocol, RuleId};
use crate::error::Diagnostics;
use crate::model::{AuthorizationPolicy, MtlsMode, PolicySet};
use crate::peer_authn::{PortMtls, ResolvedMtls};
use crate::workload::{MeshConfig, Workload};

/// A policy set compiled for one workload.
#[derive(Debug)]
pub struct Engine {
    pub(crate) policies: Vec<PolicyInfo>,
    pub(crate) authz: CompiledAuthz,
    pub(crate) mtls: ResolvedMtls,
    pub(crate) requirements: Requirements,
    named_ports: Vec<u16>,
}

impl Engine {
    /// Selects what applies to `workload` and compiles it. `set` should come from
    /// [`crate::load_str`] or [`crate::load_value`], which validate; the warnings returned here
    /// are about applicability (for example a `targetRefs` policy not applied to a sidecar).
    pub fn compile(
        set: &PolicySet,
        workload: &Workload,
        mesh: &MeshConfig,
    ) -> Result<(Engine, Diagnostics), Diagnostics> {
        let peers = Peers::resolve(set, workload, mesh);
        Engine::assemble(&set.authorization_policies, workload, mesh, peers)
    }

    /// [`Engine::compile`], consuming the set: each AuthorizationPolicy is dropped as soon as it
    /// is compiled (those that do not apply, before compilation starts), so a load never holds
    /// the whole decoded set and the whole compiled engine at once. What the module uses: its
    /// VM's linear memory never shrinks, so the peak of a load is what the VM keeps.
    /// Same engine, same warnings in the same order.
    pub fn compile_owned(
        set: PolicySet,
        workload: &Workload,
        mesh: &MeshConfig,
    ) -> Result<(Engine, Diagnostics), Diagnostics> {
        let peers = Peers::resolve(&set, workload, mesh);
        let PolicySet {
            authorization_policies,
            peer_authentications,
        } = set;
        drop(peer_authentications);
        Engine::assemble(authorization_policies, workload, mesh, peers)
    }

    /// Compiles the AuthorizationPolicies (borrowed or owned) beside the resolved
    /// PeerAuthentications; warnings in that order.
    fn assemble<P: Borrow<AuthorizationPolicy>>(
        policies: impl IntoIterator<Item = P>,
        workload: &Workload,
        mesh: &MeshConfig,
        peers: Peers,
    ) -> Result<(Engine, Diagnostics), Diagnostics> {
        let mut warnings = Diagnostics::default();
        let (policies, authz) = crate::authz::compile(policies, workload, mesh, &mut warnings)?;
        warnings.extend(peers.warnings);
        Ok((
            Engine::new(policies, authz, peers.mtls, peers.named_ports),
            warnings,
        ))
    }

    fn new(
        policies: Vec<PolicyInfo>,
        authz: CompiledAuthz,
        mtls: ResolvedMtls,
        named_ports: Vec<u16>,
    ) -> Engine {
        let mut requirements = authz.requirements();
        // The transport decision (STRICT) needs to know whether the peer is authenticated.
        requirements.mtls = true;
        Engine {
            policies,
            authz,
            mtls,
            requirements,
            named_ports,
        }
    }

    /// How `request.headers[..]` conditions read a header sent several times: the module keeps
    /// the default, [`RepeatedHeaders::Strict`]; the differential test sets the reading of the
    /// Envoy release it compares with.
    #[must_use]
    pub fn with_repeated_headers(mut self, reading: RepeatedHeaders) -> Engine {
        self.authz.repeated_headers = reading;
        self
    }

    /// Istio's decision for one request (`Protocol::Http`) or connection (`Protocol::Tcp`): AUDIT
    /// evaluated on its own, then DENY, then ALLOW.
    pub fn check(&self, protocol: Protocol, attrs: &Attributes<'_>) -> Decision {
        self.authz.check(protocol, attrs)
    }

    /// Every AUDIT rule that matches this request or connection, in policy order: what an
    /// explanation lists ([`Engine::check`] reports the first, the one Envoy logs).
    pub fn audit_rules_matched(&self, protocol: Protocol, attrs: &Attributes<'_>) -> Vec<RuleId> {
        self.authz.audit_matches(protocol, attrs)
    }

    /// The PeerAuthentication mode of a workload port (never `Unset`: resolved to its parent).
    pub fn mtls_mode(&self, port: u16) -> MtlsMode {
        self.mtls.mode(port)
    }

    /// The mode at a port the host may not have reported, and whether its STRICT is
    /// report-only (`meshauthz.io/strict-report-only`): the one answer the module, `check`,
    /// `mode` and `strict-readiness` read. At an unknown port it is the workload's answer when
    /// no port has its own; otherwise enforced STRICT, the mode that refuses plaintext and
    /// keeps the peer identity, so not knowing the port never admits more.
    pub fn mtls_mode_at(&self, port: Option<u16>) -> PortMtls {
        match port {
            Some(p) => self.mtls.at(p),
            None if self.has_port_level_mtls() => PortMtls::enforced(MtlsMode::Strict),
            None => self.mtls.default_answer(),
        }
    }

    /// Whether the answer depends on the port: some port has its own mode (`portLevelMtls`),
    /// or a report-only annotation lists ports.
    pub fn has_port_level_mtls(&self) -> bool {
        !self.mtls.listed_ports().is_empty()
    }

    /// The ports the configuration names, sorted: `portLevelMtls` of the PeerAuthentication that
    /// applies, the ports its report-only annotation lists, and `ports` / `notPorts` of every
    /// AuthorizationPolicy that applies.
    pub fn named_ports(&self) -> &[u16] {
        &self.named_ports
    }

    /// The resolved PeerAuthentication of the workload.
    pub fn mtls(&self) -> &ResolvedMtls {
        &self.mtls
    }

    /// The attributes the compiled policies read.
    pub fn requirements(&self) -> &Requirements {
        &self.requirements
    }

    /// The request attributes (beyond the connection) the compiled policies read, as a policy
    /// names them. Empty: every request of a connection gets the same answer, so the connection
    /// can be decided once (`"enforce": "connection"`).
    pub fn request_attributes_read(&self) -> Vec<&'static str> {
        let r = &self.requirements;
        [
            (r.host, "hosts / request.host"),
            (r.method, "methods / request.method"),
            (r.path, "paths / request.path"),
            (r.jwt, "requestPrincipals / request.auth.*"),
            (r.all_headers || !r.headers.is_empty(), "request.headers"),
            (r.remote_ip, "remoteIpBlocks / remote.ip"),
            (
                !r.dynamic_metadata.is_empty(),
                "experimental.envoy.filters.* metadata",
            ),
        ]
        .into_iter()
        .filter_map(|(read, what)| read.then_some(what))
        .collect()
    }

    /// The applicable AuthorizationPolicies, in Istio's order (creationTimestamp, name, namespace).
    pub fn policies(&self) -> &[PolicyInfo] {
        &self.policies
    }

    pub fn policy(&self, id: RuleId) -> Option<&PolicyInfo> {
        self.policies.get(id.policy as usize)
    }

    /// The name Envoy RBAC gives the rule: `ns[<namespace>]-policy[<name>]-rule[<i>]`.
    pub fn rule_name(&self, id: RuleId) -> String {
        match self.policy(id) {
            Some(p) => format!("ns[{}]-policy[{}]-rule[{}]", p.namespace, p.name, id.rule),
            None => format!("unknown-rule[{}:{}]", id.policy, id.rule),
        }
    }
}

/// What the set's PeerAuthentications (and the ports its policies name) give the workload,
/// resolved before the AuthorizationPolicies are compiled, with the warnings found.
struct Peers {
    mtls: ResolvedMtls,
    named_ports: Vec<u16>,
    warnings: Diagnostics,
}

impl Peers {
    fn resolve(set: &PolicySet, workload: &Workload, mesh: &MeshConfig) -> Peers {
        let mut warnings = Diagnostics::default();
        let mtls = crate::peer_authn::resolve(set, workload, mesh, &mut warnings);
        crate::input::overlap::peer_authentications(set, workload, mesh, &mut warnings);
        let named_ports = named_ports(set, workload, mesh, &mtls);
        Peers {
            mtls,
            named_ports,
            warnings,
        }
    }
}

/// See [`Engine::named_ports`]. Values that are not ports are skipped (validation refuses them).
/// Only the policies that apply to the workload are read: the others are never compiled, nor
/// walked (issue 12: policies of other workloads cost nothing).
fn named_ports(
    set: &PolicySet,
    workload: &Workload,
    mesh: &MeshConfig,
    mtls: &ResolvedMtls,
) -> Vec<u16> {
    let mut ports: Vec<u16> = mtls.listed_ports();
    let operations = set
        .authorization_policies
        .iter()
        .filter(|p| crate::authz::selects(p, workload, mesh) == Some(true))
        .flat_map(|p| p.spec.rules.iter().flatten().flatten())
        .flat_map(|rule| rule.to.iter().flatten().flatten())
        .filter_map(|to| to.operation.as_ref());
    for op in operations {
        ports.extend(
            op.ports
                .iter()
                .chain(&op.not_ports)
                .filter_map(|p| p.parse::<u16>().ok()),
        );
    }
    crate::order::sort_dedup(&mut ports);
    ports
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::{Engine, PortMtls};
    use crate::model::MtlsMode;
    use crate::workload::{MeshConfig, Workload};
    use crate::LoadOptions;

    fn engine(objects: serde_json::Value) -> Engine {
        let (set, _) =
            crate::load_value(&objects, &LoadOptions::default()).unwrap_or_else(|d| panic!("{d}"));
        let workload = Workload {
            namespace: "ns1".into(),
            labels: [("app".to_string(), "b".to_string())].into(),
        };
        match Engine::compile(&set, &workload, &MeshConfig::default()) {
            Ok((e, _)) => e,
            Err(d) => panic!("{d}"),
        }
    }

    fn peer_authn(port_level: serde_json::Value) -> serde_json::Value {
        json!({"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
               "metadata": {"name": "pa", "namespace": "ns1"},
               "spec": {"selector": {"matchLabels": {"app": "b"}}, "mtls": {"mode": "PERMISSIVE"},
                        "portLevelMtls": port_level}})
    }

    #[test]
    fn mode_at_an_unknown_port() {
        let mixed = engine(json!([peer_authn(json!({"8080": {"mode": "DISABLE"}}))]));
        assert!(mixed.has_port_level_mtls());
        assert_eq!(mixed.mtls_mode_at(Some(8080)).mode, MtlsMode::Disable);
        assert_eq!(mixed.mtls_mode_at(Some(9000)).mode, MtlsMode::Permissive);
        // Ports differ and the port is unknown: the strictest answer.
        assert_eq!(
            mixed.mtls_mode_at(None),
            PortMtls::enforced(MtlsMode::Strict)
        );

        let uniform = engine(json!([]));
        assert!(!uniform.has_port_level_mtls());
        assert_eq!(uniform.mtls_mode_at(None).mode, MtlsMode::Permissive);
    }

    fn pa(name: &str, annotation: Option<&str>, spec: serde_json::Value) -> serde_json::Value {
        let mut meta = json!({"name": name, "namespace": "ns1"});
        if let Some(a) = annotation {
            meta["annotations"] = json!({"meshauthz.io/strict-report-only": a});
        }
        json!({"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
               "metadata": meta, "spec": spec})
    }

    const REPORT_ONLY: PortMtls = PortMtls {
        mode: MtlsMode::Strict,
        report_only: true,
    };
    const STRICT: PortMtls = PortMtls::enforced(MtlsMode::Strict);

    #[test]
    fn report_only_strict_workload_wide() {
        let e = engine(json!([pa(
            "ns-wide",
            Some("true"),
            json!({"mtls": {"mode": "STRICT"}})
        )]));
        assert_eq!(e.mtls_mode_at(Some(8080)), REPORT_ONLY);
        assert_eq!(e.mtls_mode_at(None), REPORT_ONLY);
        assert!(!e.mtls_mode_at(Some(1)).resets_plaintext());
        assert!(e.mtls_mode_at(Some(1)).reports_plaintext());
        // The mode itself stays STRICT (what Istio would enforce).
        assert_eq!(e.mtls_mode(8080), MtlsMode::Strict);

        let off = engine(json!([pa(
            "ns-wide",
            Some("false"),
            json!({"mtls": {"mode": "STRICT"}})
        )]));
        assert_eq!(off.mtls_mode_at(Some(8080)), STRICT);
        assert!(off.mtls_mode_at(Some(8080)).resets_plaintext());
    }

    #[test]
    fn report_only_strict_on_listed_ports() {
        let e = engine(json!([pa(
            "ns-wide",
            Some("8080,9000"),
            json!({"mtls": {"mode": "STRICT"}})
        )]));
        assert_eq!(e.mtls_mode_at(Some(8080)), REPORT_ONLY);
        assert_eq!(e.mtls_mode_at(Some(9000)), REPORT_ONLY);
        assert_eq!(e.mtls_mode_at(Some(8081)), STRICT);
        // The port is unknown and ports differ: enforced.
        assert_eq!(e.mtls_mode_at(None), STRICT);
        assert!(e.has_port_level_mtls());
        assert_eq!(e.named_ports(), [8080, 9000]);
        assert_eq!(e.mtls().listed_ports(), [8080, 9000]);
        assert_eq!(e.mtls().default_answer(), STRICT);
    }

    #[test]
    fn report_only_follows_the_policy_that_set_the_strict() {
        // The namespace's STRICT is report-only; the workload policy's own STRICT on 9000 is
        // not (its annotation is absent); 8080 inherits (UNSET) the namespace's, report-only.
        let e = engine(json!([
            pa("ns-wide", Some("true"), json!({"mtls": {"mode": "STRICT"}})),
            pa(
                "wl",
                None,
                json!({"selector": {"matchLabels": {"app": "b"}},
                                   "portLevelMtls": {"8080": {"mode": "UNSET"},
                                                     "9000": {"mode": "STRICT"},
                                                     "7000": {"mode": "PERMISSIVE"}}})
            )
        ]));
        assert_eq!(e.mtls_mode_at(Some(8080)), REPORT_ONLY);
        assert_eq!(e.mtls_mode_at(Some(9000)), STRICT);
        assert_eq!(
            e.mtls_mode_at(Some(7000)),
            PortMtls::enforced(MtlsMode::Permissive)
        );
        assert_eq!(e.mtls_mode_at(Some(1)), REPORT_ONLY);

        // The workload policy's annotation covers its own port entries only.
        let e = engine(json!([
            pa("ns-wide", None, json!({"mtls": {"mode": "STRICT"}})),
            pa(
                "wl",
                Some("9000"),
                json!({"selector": {"matchLabels": {"app": "b"}},
                                            "portLevelMtls": {"9000": {"mode": "STRICT"},
                                                              "9001": {"mode": "STRICT"}}})
            )
        ]));
        assert_eq!(e.mtls_mode_at(Some(9000)), REPORT_ONLY);
        assert_eq!(e.mtls_mode_at(Some(9001)), STRICT);
        assert_eq!(e.mtls_mode_at(Some(1)), STRICT);

        // A report-only workload policy whose mode is PERMISSIVE does not touch a STRICT it
        // did not set.
        let e = engine(json!([
            pa("ns-wide", None, json!({"mtls": {"mode": "STRICT"}})),
            pa(
                "wl",
                Some("true"),
                json!({"selector": {"matchLabels": {"app": "b"}},
                                            "portLevelMtls": {"9000": {"mode": "UNSET"}}})
            )
        ]));
        assert_eq!(e.mtls_mode_at(Some(9000)), STRICT);
        assert_eq!(e.mtls_mode_at(Some(1)), STRICT);
    }

    #[test]
    fn the_peer_authentication_that_set_each_mode() {
        let e = engine(json!([
            {"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
             "metadata": {"name": "ns-wide", "namespace": "ns1"}, "spec": {"mtls": {"mode": "STRICT"}}},
            {"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
             "metadata": {"name": "pa", "namespace": "ns1"},
             "spec": {"selector": {"matchLabels": {"app": "b"}},
                      "portLevelMtls": {"8080": {"mode": "DISABLE"}}}}
        ]));
        assert_eq!(e.mtls().source(Some(8080)), Some("ns1/pa"));
        assert_eq!(e.mtls().source(Some(9000)), Some("ns1/ns-wide"));
        assert_eq!(e.mtls().source(None), Some("ns1/ns-wide"));
        assert_eq!(engine(json!([])).mtls().source(Some(1)), None);
    }

    #[test]
    fn every_matching_audit_rule_in_policy_order() {
        let audit = |name: &str, rules: serde_json::Value| {
            json!({"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
                   "metadata": {"name": name, "namespace": "ns1"},
                   "spec": {"action": "AUDIT", "rules": rules}})
        };
        let e = engine(json!([
            audit("b", json!([{"to": [{"operation": {"methods": ["GET"]}}]}])),
            audit(
                "a",
                json!([{"to": [{"operation": {"methods": ["POST"]}}]},
                              {"to": [{"operation": {"paths": ["/x"]}}]}])
            ),
        ]));
        let headers = [];
        let attrs = crate::Attributes {
            http: Some(crate::HttpAttributes {
                method: Some("GET"),
                path: Some("/x"),
                headers: &headers,
                ..Default::default()
            }),
            ..Default::default()
        };
        let names: Vec<String> = e
            .audit_rules_matched(crate::Protocol::Http, &attrs)
            .into_iter()
            .map(|r| e.rule_name(r))
            .collect();
        assert_eq!(
            names,
            ["ns[ns1]-policy[a]-rule[1]", "ns[ns1]-policy[b]-rule[0]"]
        );
        let first = e.check(crate::Protocol::Http, &attrs).audit_rule;
        assert_eq!(
            first.map(|r| e.rule_name(r)).as_deref(),
            Some("ns[ns1]-policy[a]-rule[1]")
        );
    }

    #[test]
    fn named_ports_from_port_level_mtls_and_operations() {
        let e = engine(json!([
            peer_authn(json!({"9000": {"mode": "STRICT"}})),
            {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
             "metadata": {"name": "a", "namespace": "ns1"},
             "spec": {"rules": [{"to": [{"operation": {"ports": ["8080", "9000"]}},
                                        {"operation": {"notPorts": ["15000"]}}]}]}}
        ]));
        assert_eq!(e.named_ports(), [8080, 9000, 15000]);
    }
}
