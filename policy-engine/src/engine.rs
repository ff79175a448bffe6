//! The compiled view of a policy set for one workload: parse, validate and compile once, then
//! answer many checks.

use std::collections::BTreeMap;

use crate::attributes::{Attributes, Requirements};
use crate::authz::CompiledAuthz;
use crate::decision::{Decision, Protocol, RuleId};
use crate::error::Diagnostics;
use crate::model::{Action, MtlsMode, PolicySet};
use crate::peer_authn::ResolvedMtls;

/// Mesh-wide settings (Istio `meshConfig`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MeshConfig {
    /// `meshConfig.rootNamespace`: its policies apply mesh-wide.
    pub root_namespace: String,
    /// `meshConfig.trustDomain`.
    pub trust_domain: String,
    /// `meshConfig.trustDomainAliases`: principals written for any of these trust domains (or
    /// `cluster.local`) also match the others.
    pub trust_domain_aliases: Vec<String>,
}

impl Default for MeshConfig {
    fn default() -> Self {
        MeshConfig {
            root_namespace: "istio-system".to_string(),
            trust_domain: "cluster.local".to_string(),
            trust_domain_aliases: Vec::new(),
        }
    }
}

/// The workload the policies are compiled for: a sidecar's own namespace and pod labels.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Workload {
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
}

/// One applicable AuthorizationPolicy as the engine reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyInfo {
    pub namespace: String,
    pub name: String,
    pub action: Action,
    pub dry_run: bool,
}

impl PolicyInfo {
    /// `namespace/name`.
    pub fn qualified_name(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// A policy set compiled for one workload.
#[derive(Debug)]
pub struct Engine {
    pub(crate) policies: Vec<PolicyInfo>,
    pub(crate) authz: CompiledAuthz,
    pub(crate) mtls: ResolvedMtls,
    pub(crate) requirements: Requirements,
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
        let mut warnings = Diagnostics::default();
        let (policies, authz) = crate::authz::compile(set, workload, mesh, &mut warnings)?;
        let mtls = crate::peer_authn::resolve(set, workload, mesh, &mut warnings);
        crate::input::overlap::peer_authentications(set, workload, mesh, &mut warnings);
        let mut requirements = authz.requirements();
        // The transport decision (STRICT) needs to know whether the peer is authenticated.
        requirements.mtls = true;
        Ok((
            Engine {
                policies,
                authz,
                mtls,
                requirements,
            },
            warnings,
        ))
    }

    /// Istio's decision for one request (`Protocol::Http`) or connection (`Protocol::Tcp`): AUDIT
    /// evaluated on its own, then DENY, then ALLOW.
    pub fn check(&self, protocol: Protocol, attrs: &Attributes<'_>) -> Decision {
        self.authz.check(protocol, attrs)
    }

    /// The PeerAuthentication mode of a workload port (never `Unset`: resolved to its parent).
    pub fn mtls_mode(&self, port: u16) -> MtlsMode {
        self.mtls.mode(port)
    }

    /// The resolved PeerAuthentication of the workload.
    pub fn mtls(&self) -> &ResolvedMtls {
        &self.mtls
    }

    /// The attributes the compiled policies read.
    pub fn requirements(&self) -> &Requirements {
        &self.requirements
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
