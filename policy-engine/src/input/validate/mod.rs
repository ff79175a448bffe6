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
    findings: Vec<Finding>,
    /// CEL expressions already checked while loading this input (shared by its objects).
    cel: CelChecked,
}

/// CEL expressions already compiled while loading one input, by source text: their cost bound,
/// or why they do not compile. The same expression in many policies is compiled once.
pub(crate) type CelChecked =
    std::rc::Rc<std::cell::RefCell<std::collections::HashMap<String, Result<u64, String>>>>;

struct Finding {
    diagnostic: Diagnostic,
    /// The finding is about something missing (`must not be empty`, `without rules`): when a
    /// value inside `path` failed to decode, it is missing only because of that, and the
    /// finding is noise.
    about_absence: bool,
}

impl Findings {
    pub(crate) fn new(object: ObjectRef, cel: CelChecked) -> Self {
        Findings {
            object,
            findings: Vec::new(),
            cel,
        }
    }

    /// Compiles a CEL expression (once per input): its cost bound, or what is wrong.
    fn cel_expression(&self, source: &str) -> Result<u64, String> {
        if let Some(known) = self.cel.borrow().get(source) {
            return known.clone();
        }
        let result = crate::cel::CelExpression::compile(source).map(|e| e.cost());
        self.cel
            .borrow_mut()
            .insert(source.to_string(), result.clone());
        result
    }

    fn push(&mut self, diagnostic: Diagnostic, about_absence: bool) {
        self.findings.push(Finding {
            diagnostic,
            about_absence,
        });
    }

    fn error(&mut self, path: &FieldPath, message: impl Into<String>) {
        let d = Diagnostic::error(Some(self.object.clone()), path.as_str(), message);
        self.push(d, false);
    }

    /// An error about something missing at `path` (see [`Finding::about_absence`]).
    fn absent(&mut self, path: &FieldPath, message: impl Into<String>) {
        let d = Diagnostic::error(Some(self.object.clone()), path.as_str(), message);
        self.push(d, true);
    }

    /// A warning about the value at `path`.
    fn warning(&mut self, path: &FieldPath, message: impl Into<String>) {
        let d = Diagnostic::warning(Some(self.object.clone()), path.as_str(), message);
        self.push(d, false);
    }

    /// A warning about something missing at `path`.
    fn absent_warning(&mut self, path: &FieldPath, message: impl Into<String>) {
        let d = Diagnostic::warning(Some(self.object.clone()), path.as_str(), message);
        self.push(d, true);
    }

    /// The diagnostics, without those that only restate a decoding error at `bad_paths`: a
    /// finding at or inside a value that failed to decode, or a finding about absence whose
    /// path contains one.
    pub(crate) fn into_diagnostics(self, bad_paths: &[FieldPath]) -> Vec<Diagnostic> {
        self.findings
            .into_iter()
            .filter(|f| {
                let at = FieldPath::root().field(&f.diagnostic.path);
                !bad_paths
                    .iter()
                    .any(|bad| at.is_within(bad) || (f.about_absence && bad.is_within(&at)))
            })
            .map(|f| f.diagnostic)
            .collect()
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
