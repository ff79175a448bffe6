//! Metadata checks Istio runs before the kind's own validation (`validateMetadata` and
//! `checkDryRunAnnotation`): the dry-run annotation and the internal annotations users may not set.

use super::{FieldPath, Findings};
use crate::model::{parse_go_bool, Action, ObjectMeta, DRY_RUN_ANNOTATION};

const ALWAYS_REJECT: &str = "internal.istio.io/webhook-always-reject";
const INTERNAL_PARENT_NAMESPACE: &str = "internal.istio.io/parent-namespace";
const INTERNAL_PARENT_NAMES: &str = "internal.istio.io/parents";

/// `action` is `Some` for an AuthorizationPolicy (the only kind that supports dry-run).
pub(super) fn validate(f: &mut Findings, meta: &ObjectMeta, action: Option<Action>) {
    let annotations = FieldPath::root().field("metadata").field("annotations");
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
