//! Istio's validation rules and messages (`pkg/config/validation/validation.go`,
//! `pkg/config/security/security.go`) plus the CRD-level (OpenAPI and CEL) constraints the API
//! server applies, on the decoded objects. Each finding carries the field path of the offending
//! value. See `istio-semantics.md` §11 for the table this implements.
//!
//! * `metadata.rs`: annotations (dry-run, internal ones), common to both kinds.
//! * `selector.rs`: `selector` and `targetRef(s)`.
//! * `authorization_policy.rs`: action, provider, rules, `from.source`, `to.operation`.
//! * `condition.rs`: `when` keys and their values (and the `meshauthz.io/cel` extension).
//! * `values.rs`: IPs/CIDRs, ports, service accounts, trust domains, path templates.
//! * `peer_authentication.rs`: `portLevelMtls`.

mod authorization_policy;
mod condition;
mod metadata;
mod peer_authentication;
mod selector;
mod values;

pub(crate) use authorization_policy::validate as authorization_policy;
pub(crate) use peer_authentication::validate as peer_authentication;

use super::field_path::FieldPath;
use crate::error::{Diagnostic, ObjectRef};

/// The findings about one object.
pub(crate) struct Findings {
    object: ObjectRef,
    pub(crate) diagnostics: Vec<Diagnostic>,
}

impl Findings {
    pub(crate) fn new(object: ObjectRef) -> Self {
        Findings {
            object,
            diagnostics: Vec::new(),
        }
    }

    fn error(&mut self, path: &FieldPath, message: impl Into<String>) {
        self.diagnostics.push(Diagnostic::error(
            Some(self.object.clone()),
            path.as_str(),
            message,
        ));
    }

    fn warning(&mut self, path: &FieldPath, message: impl Into<String>) {
        self.diagnostics.push(Diagnostic::warning(
            Some(self.object.clone()),
            path.as_str(),
            message,
        ));
    }

    /// Reports `result`'s error at `path`.
    fn check(&mut self, path: &FieldPath, result: Result<(), String>) {
        if let Err(e) = result {
            self.error(path, e);
        }
    }
}

/// `Too many: 513: must have at most 512 items` (the API server's `maxItems` message).
fn too_many(f: &mut Findings, path: &FieldPath, len: usize, max: usize) {
    if len > max {
        f.error(
            path,
            format!("Too many: {len}: must have at most {max} items"),
        );
    }
}
