//! AuthorizationPolicy: which policies apply to a workload, compiled matchers, the decision.

use crate::attributes::{Attributes, Requirements};
use crate::decision::{Cause, Decision, Protocol};
use crate::engine::{MeshConfig, PolicyInfo, Workload};
use crate::error::Diagnostics;
use crate::model::PolicySet;

#[derive(Debug, Default)]
pub struct CompiledAuthz {}

pub(crate) fn compile(
    set: &PolicySet,
    workload: &Workload,
    mesh: &MeshConfig,
    warnings: &mut Diagnostics,
) -> Result<(Vec<PolicyInfo>, CompiledAuthz), Diagnostics> {
    let _ = (set, workload, mesh, warnings);
    Ok((Vec::new(), CompiledAuthz {}))
}

impl CompiledAuthz {
    pub(crate) fn requirements(&self) -> Requirements {
        Requirements::default()
    }

    pub(crate) fn check(&self, protocol: Protocol, attrs: &Attributes<'_>) -> Decision {
        let _ = (protocol, attrs);
        Decision {
            allowed: false,
            cause: Cause::NoAllowRuleMatched,
            audit_policy_applies: false,
            audit_rule: None,
            shadow_allow: None,
            shadow_deny: None,
            cel_errors: 0,
        }
    }
}
