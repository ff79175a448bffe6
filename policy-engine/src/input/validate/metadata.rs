//! Metadata checks Istio runs before the kind's own validation (`validateMetadata` and
//! `checkDryRunAnnotation`): the dry-run annotation and the internal annotations users may not set.

use super::{FieldPath, Findings};
use crate::model::{parse_go_bool, Action, ObjectMeta, DRY_RUN_ANNOTATION};

const ALWAYS_REJECT: &str = "internal.istio.io/webhook-always-reject";
const INTERNAL_PARENT_NAMESPACE: &str = "internal.istio.io/parent-namespace";
const INTERNAL_PARENT_NAMES: &str = "internal.istio.io/parents";

/// `action` is `Some` for an AuthorizationPolicy (the only kind that supports dry-run).
pub(super) fn validate(f: &mut Findings, meta: &ObjectMeta, action: Option<Action>) {
    let metadata = FieldPath::root().field("metadata");
    names(f, meta, &metadata);
    let annotations = metadata.field("annotations");
    let (ns, name) = (&meta.namespace, &meta.name);
    if let Some(value) = meta.annotations.get(DRY_RUN_ANNOTATION) {
        let at = annotations.key(DRY_RUN_ANNOTATION);
        match action {
            None => f.error(
                &at,
                format!(
                    "{ns}/{name} has unsupported annotation {DRY_RUN_ANNOTATION}, please remove the annotation"
                ),
            ),
            Some(Action::Allow | Action::Deny) => {
                if parse_go_bool(value).is_none() {
                    f.error(
                        &at,
                        format!(
                            "{ns}/{name} has annotation {DRY_RUN_ANNOTATION} with invalid value ({value}): \
                             strconv.ParseBool: parsing {value:?}: invalid syntax"
                        ),
                    );
                }
            }
            Some(other) => f.error(
                &at,
                format!(
                    "the annotation {DRY_RUN_ANNOTATION} currently only supports action ALLOW/DENY, \
                     found action {} in {ns}/{name}",
                    other.as_str()
                ),
            ),
        }
    }
    if meta.annotations.contains_key(ALWAYS_REJECT) {
        f.error(
            &annotations.key(ALWAYS_REJECT),
            format!("{ALWAYS_REJECT:?} annotation found, rejecting"),
        );
    }
    for internal in [INTERNAL_PARENT_NAMESPACE, INTERNAL_PARENT_NAMES] {
        if meta.annotations.contains_key(internal) {
            f.error(
                &annotations.key(internal),
                format!("{internal:?} annotation found, this may not be set by users"),
            );
        }
    }
}

/// The API server's rules for names: a name is a DNS-1123 subdomain, a namespace a DNS-1123
/// label. (A missing name is reported while decoding.)
fn names(f: &mut Findings, meta: &ObjectMeta, metadata: &FieldPath) {
    if !meta.name.is_empty() && !is_dns1123_subdomain(&meta.name) {
        f.error(
            &metadata.field("name"),
            format!(
                "Invalid value: {:?}: a lowercase RFC 1123 subdomain must consist of lower case \
                 alphanumeric characters, '-' or '.', and must start and end with an alphanumeric \
                 character (e.g. 'example.com'), at most 253 characters",
                meta.name
            ),
        );
    }
    if !is_dns1123_label(&meta.namespace) {
        f.error(
            &metadata.field("namespace"),
            format!(
                "Invalid value: {:?}: a lowercase RFC 1123 label must consist of lower case \
                 alphanumeric characters or '-', and must start and end with an alphanumeric \
                 character (e.g. 'my-name', or '123-abc'), at most 63 characters",
                meta.namespace
            ),
        );
    }
}

fn is_dns1123_label(s: &str) -> bool {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    !s.is_empty()
        && s.len() <= 63
        && s.chars().all(|c| alnum(c) || c == '-')
        && s.starts_with(alnum)
        && s.ends_with(alnum)
}

fn is_dns1123_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns1123_label)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_names() {
        assert!(is_dns1123_label("istio-system"));
        assert!(is_dns1123_label("123-abc"));
        assert!(!is_dns1123_label("Foo"));
        assert!(!is_dns1123_label("-a"));
        assert!(!is_dns1123_label("a_b"));
        assert!(!is_dns1123_label(&"a".repeat(64)));
        assert!(is_dns1123_subdomain("allow.get.v1"));
        assert!(!is_dns1123_subdomain("a..b"));
        assert!(!is_dns1123_subdomain("a."));
    }
}
