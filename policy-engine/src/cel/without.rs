//! [`CelExpression`] in a build without the `cel` feature: no expression compiles
//! ([`super::WITHOUT_CEL`]), so no value of the type exists and its methods are never called.

use std::fmt;

use super::CelError;
use crate::attributes::{Attributes, Requirements};

/// No CEL expression can be compiled in this build.
pub struct CelExpression {
    never: Never,
}

/// A type without values.
enum Never {}

impl fmt::Debug for CelExpression {
    fn fmt(&self, _: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.never {}
    }
}

impl CelExpression {
    /// Refuses `source`: this build has no CEL.
    pub fn compile(_source: &str) -> Result<CelExpression, String> {
        Err(super::WITHOUT_CEL.to_string())
    }

    pub fn source(&self) -> &str {
        match self.never {}
    }

    pub fn cost(&self) -> u64 {
        match self.never {}
    }

    pub fn is_http_only(&self) -> bool {
        match self.never {}
    }

    pub fn add_requirements(&self, _req: &mut Requirements) {
        match self.never {}
    }

    pub fn evaluate(&self, _attrs: &Attributes<'_>) -> Result<bool, CelError> {
        match self.never {}
    }
}
