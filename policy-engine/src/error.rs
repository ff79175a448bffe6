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
        write!(
            f,
            "{} {}/{}",
            shorten(&self.kind),
            shorten(&self.namespace),
            shorten(&self.name)
        )
    }
}

/// How many characters of one value (a run without spaces) a message shows.
pub const MAX_VALUE_CHARS: usize = 100;
/// How many characters of a whole message are shown.
pub const MAX_MESSAGE_CHARS: usize = 1000;

/// Cuts what is too long to be read in a message: every run of more than [`MAX_VALUE_CHARS`]
/// characters without a space (a 10 MB object name, a long key), and the whole text after
/// [`MAX_MESSAGE_CHARS`], each marked `… (N bytes)` with the length of what was cut from.
/// Messages stay readable and their size bounded whatever the input holds.
pub fn shorten(text: &str) -> std::borrow::Cow<'_, str> {
    let long_run = text
        .split(char::is_whitespace)
        .any(|run| run.len() > MAX_VALUE_CHARS && run.chars().count() > MAX_VALUE_CHARS);
    if !long_run && text.len() <= MAX_MESSAGE_CHARS {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::new();
    let mut rest = text;
    while !rest.is_empty() {
        let run_end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        let (run, after) = rest.split_at(run_end);
        match run.char_indices().nth(MAX_VALUE_CHARS) {
            Some((cut, _)) => {
                out.push_str(run.get(..cut).unwrap_or(""));
                out.push_str(&format!("… ({} bytes)", run.len()));
            }
            None => out.push_str(run),
        }
        let space_end = after
            .find(|c: char| !c.is_whitespace())
            .unwrap_or(after.len());
        let (spaces, next) = after.split_at(space_end);
        out.push_str(spaces);
        rest = next;
    }
    if let Some((cut, _)) = out.char_indices().nth(MAX_MESSAGE_CHARS) {
        let total = out.len();
        out.truncate(cut);
        out.push_str(&format!("… ({total} bytes)"));
    }
    std::borrow::Cow::Owned(out)
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
    /// An error. Long values in `path` and `message` are cut ([`shorten`]).
    pub fn error(
        object: Option<ObjectRef>,
        path: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self::new(Severity::Error, object, path.into(), message.into())
    }

    /// A warning. Long values in `path` and `message` are cut ([`shorten`]).
    pub fn warning(
        object: Option<ObjectRef>,
        path: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self::new(Severity::Warning, object, path.into(), message.into())
    }

    fn new(severity: Severity, object: Option<ObjectRef>, path: String, message: String) -> Self {
        let cut = |s: String| match shorten(&s) {
            std::borrow::Cow::Borrowed(_) => s,
            std::borrow::Cow::Owned(short) => short,
        };
        Diagnostic {
            severity,
            object,
            path: cut(path),
            message: cut(message),
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
