//! Diagnostics: every problem found in the user's input names the object (`kind namespace/name`),
//! the field path (`spec.rules[0].from[1].source.principals[2]`) and what was expected, the way
//! kubectl and Istio's validating webhook report it. All problems of an input are collected, not
//! only the first.

use std::fmt;

/// Which object a diagnostic is about.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectRef {
    /// `AuthorizationPolicy`, `PeerAuthentication`, or the kind found in the input.
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Severity {
    /// The object is rejected; an input with any error is refused as a whole.
    Error,
    /// Accepted, but probably not what the user meant (Istio warns in the same places).
    Warning,
}

/// One problem in the input.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct Diagnostic {
    pub severity: Severity,
    /// `None` when the problem is not inside one object (unparsable document, ...).
    pub object: Option<ObjectRef>,
    /// Where in the input: `document 2` for document-level problems, else a field path such as
    /// `spec.rules[0].from[1].source.principals[2]`. Empty when the whole object is meant.
    pub path: String,
    /// What is wrong and what was expected. For rules Istio validates, Istio's own message.
    pub message: String,
}

impl Diagnostic {
    pub fn error(
        object: Option<ObjectRef>,
        path: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Diagnostic {
            severity: Severity::Error,
            object,
            path: path.into(),
            message: message.into(),
        }
    }

    pub fn warning(
        object: Option<ObjectRef>,
        path: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            object,
            path: path.into(),
            message: message.into(),
        }
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{level}: ")?;
        if let Some(object) = &self.object {
            write!(f, "{object}: ")?;
        }
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

/// All problems of an input. Returned as the error of loading or compiling when at least one of
/// them is an error; warnings travel beside a successful result.
#[derive(Clone, Debug, Default, PartialEq, Eq, thiserror::Error)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    pub fn push(&mut self, d: Diagnostic) {
        self.0.push(d);
    }

    pub fn has_errors(&self) -> bool {
        self.0.iter().any(Diagnostic::is_error)
    }

    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.0.iter().filter(|d| d.is_error())
    }

    pub fn warnings(&self) -> impl Iterator<Item = &Diagnostic> {
        self.0.iter().filter(|d| !d.is_error())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn extend(&mut self, other: Diagnostics) {
        self.0.extend(other.0);
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.errors().count();
        writeln!(f, "{n} error(s) in the policy input:")?;
        for d in &self.0 {
            writeln!(f, "  {d}")?;
        }
        Ok(())
    }
}
