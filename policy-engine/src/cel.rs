//! CEL conditions: the meshauthz extension for what Istio cannot express.
//!
//! A `when` condition with key [`CEL_CONDITION_KEY`] holds CEL expressions in `values` (the
//! condition matches when any of them is true) or `notValues` (it matches when none is). They are
//! compiled when the policies load and evaluated with Envoy's attribute names.

use crate::attributes::{Attributes, Requirements};

/// The `when.key` that marks a CEL condition.
pub const CEL_CONDITION_KEY: &str = "meshauthz.io/cel";

/// A compiled CEL expression.
#[derive(Debug)]
pub struct CelExpression {
    source: String,
}

/// Why an expression failed at run time.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("CEL evaluation failed: {0}")]
pub struct CelError(pub String);

impl CelExpression {
    /// Compiles `source`; the error says what is wrong (syntax, unknown attribute, ...).
    pub fn compile(source: &str) -> Result<CelExpression, String> {
        Ok(CelExpression {
            source: source.to_string(),
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// The expression reads request-level attributes (`request.*`), so on a TCP chain it behaves
    /// like an HTTP-only field.
    pub fn is_http_only(&self) -> bool {
        false
    }

    /// Adds the attributes the expression reads.
    pub fn add_requirements(&self, req: &mut Requirements) {
        let _ = req;
    }

    /// Evaluates to a boolean; a non-boolean result is an error.
    pub fn evaluate(&self, attrs: &Attributes<'_>) -> Result<bool, CelError> {
        let _ = attrs;
        Err(CelError("not implemented".to_string()))
    }
}
