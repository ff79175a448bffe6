//! Field paths as users read them: `spec.rules[0].from[1].source.principals[2]`,
//! `spec.portLevelMtls.8080`, `metadata.annotations[istio.io/dry-run]`.

use std::fmt;

/// A path inside one object, built while walking it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct FieldPath(String);

impl FieldPath {
    pub(crate) fn root() -> Self {
        FieldPath(String::new())
    }

    /// `parent.name`. The decoder builds a path for every field it reads, so paths are joined
    /// by hand: `format!` costs several times as much (about a fifth of loading a policy set).
    pub(crate) fn field(&self, name: &str) -> Self {
        if self.0.is_empty() {
            FieldPath(name.to_string())
        } else {
            self.joined(&[".", name])
        }
    }

    /// `parent[i]`.
    pub(crate) fn index(&self, i: usize) -> Self {
        self.joined(&["[", &i.to_string(), "]"])
    }

    fn joined(&self, parts: &[&str]) -> Self {
        let len = self.0.len() + parts.iter().map(|p| p.len()).sum::<usize>();
        let mut out = String::with_capacity(len);
        out.push_str(&self.0);
        for p in parts {
            out.push_str(p);
        }
        FieldPath(out)
    }

    /// A map key: `parent.key` when the key is a plain word (`spec.portLevelMtls.8080`), else
    /// `parent[key]` (`metadata.annotations[istio.io/dry-run]`), as kubectl prints them.
    pub(crate) fn key(&self, key: &str) -> Self {
        let plain = !key.is_empty()
            && key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if plain {
            self.field(key)
        } else {
            self.joined(&["[", key, "]"])
        }
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `self` is `other` or lies inside it (`a.b[0]` is inside `a.b`, `a.bc` is not).
    pub(crate) fn is_within(&self, other: &FieldPath) -> bool {
        let (me, them) = (self.0.as_str(), other.0.as_str());
        if them.is_empty() {
            return true;
        }
        match me.strip_prefix(them) {
            Some(rest) => rest.is_empty() || rest.starts_with('.') || rest.starts_with('['),
            None => false,
        }
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<FieldPath> for String {
    fn from(p: FieldPath) -> String {
        p.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_kubectl_style_paths() {
        let p = FieldPath::root()
            .field("spec")
            .field("rules")
            .index(0)
            .field("from")
            .index(1);
        assert_eq!(p.as_str(), "spec.rules[0].from[1]");
        assert_eq!(
            FieldPath::root()
                .field("spec")
                .field("portLevelMtls")
                .key("8080")
                .as_str(),
            "spec.portLevelMtls.8080"
        );
        assert_eq!(
            FieldPath::root()
                .field("metadata")
                .field("annotations")
                .key("istio.io/dry-run")
                .as_str(),
            "metadata.annotations[istio.io/dry-run]"
        );
        assert_eq!(FieldPath::root().key("").as_str(), "[]");
        let rules = FieldPath::root().field("rules");
        for i in [0, 7, 10, 99, 1234, usize::MAX] {
            assert_eq!(rules.index(i).as_str(), format!("rules[{i}]"));
        }
    }

    #[test]
    fn within_respects_segment_boundaries() {
        let rules = FieldPath::root().field("spec").field("rules");
        assert!(rules.index(0).is_within(&rules));
        assert!(rules.is_within(&rules));
        assert!(!FieldPath::root()
            .field("spec")
            .field("rulesX")
            .is_within(&rules));
        assert!(!rules.is_within(&rules.index(0)));
    }
}
