//! `selector` and `targetRef`/`targetRefs` (`validateWorkloadSelector`,
//! `validatePolicyTargetReference`, `validateOneOfSelectorType`, plus the CRD limits).

use super::{too_many, FieldPath, Findings};
use crate::model::{PolicyTargetReference, WorkloadSelector};

/// The group/kind pairs a `targetRef` may name (Istio's `allowedTargetRefs`).
const ALLOWED_TARGETS: &[(&str, &str)] = &[
    ("", "Service"),
    ("networking.istio.io", "ServiceEntry"),
    ("gateway.networking.k8s.io", "Gateway"),
    ("gateway.networking.k8s.io", "GatewayClass"),
];

pub(super) fn workload_selector(f: &mut Findings, selector: Option<&WorkloadSelector>) {
    let Some(selector) = selector else { return };
    let path = FieldPath::root().field("spec").field("selector");
    let labels = path.field("matchLabels");
    for (k, v) in &selector.match_labels {
        let at = labels.key(k);
        if k.is_empty() {
            f.error(
                &at,
                format!(
                    "empty key is not supported in selector: {:?}",
                    format!("{k}={v}")
                ),
            );
        }
        if k.contains('*') || v.contains('*') {
            f.error(
                &at,
                format!(
                    "wildcard is not supported in selector: {:?}",
                    format!("{k}={v}")
                ),
            );
        }
        if v.len() > 63 {
            f.error(&at, "Too long: may not be more than 63 bytes");
        }
    }
    if selector.match_labels.len() > 4096 {
        f.error(
            &labels,
            format!(
                "Too many: {}: must have at most 4096 items",
                selector.match_labels.len()
            ),
        );
    }
    if selector.match_labels.is_empty() {
        f.absent_warning(&path, "workload selector specified without labels");
    }
}

/// At most one of `selector`, `targetRef`, `targetRefs`; then each reference.
pub(super) fn target_refs(
    f: &mut Findings,
    selector: Option<&WorkloadSelector>,
    target_ref: Option<&PolicyTargetReference>,
    target_refs: &[PolicyTargetReference],
) {
    let spec = FieldPath::root().field("spec");
    let set = usize::from(selector.is_some())
        + usize::from(target_ref.is_some())
        + usize::from(!target_refs.is_empty());
    if set > 1 {
        f.error(
            &spec,
            "only one of targetRefs or workloadSelector can be set",
        );
    }
    if let Some(r) = target_ref {
        target_reference(f, r, &spec.field("targetRef"));
    }
    let refs = spec.field("targetRefs");
    too_many(f, &refs, target_refs.len(), 16);
    for (i, r) in target_refs.iter().enumerate() {
        target_reference(f, r, &refs.index(i));
    }
}

fn target_reference(f: &mut Findings, r: &PolicyTargetReference, path: &FieldPath) {
    if r.name.is_empty() {
        f.error(&path.field("name"), "targetRef name must be set");
    }
    if !r.namespace.is_empty() {
        f.error(
            &path.field("namespace"),
            "targetRef namespace must not be set; cross namespace referencing is not supported",
        );
    }
    let group = if r.group == "core" {
        ""
    } else {
        r.group.as_str()
    };
    if !ALLOWED_TARGETS
        .iter()
        .any(|(g, k)| *g == group && *k == r.kind)
    {
        f.error(
            path,
            format!(
                "targetRef must be to one of [core/Service networking.istio.io/ServiceEntry \
                 gateway.networking.k8s.io/Gateway gateway.networking.k8s.io/GatewayClass] but was {}/{}",
                r.group, r.kind
            ),
        );
    }
}
