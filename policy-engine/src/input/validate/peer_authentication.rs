//! `ValidatePeerAuthentication` and the PeerAuthentication CRD rules.

use super::{metadata, selector, FieldPath, Findings};
use crate::model::PeerAuthentication;

pub(crate) fn validate(f: &mut Findings, policy: &PeerAuthentication) {
    let spec = &policy.spec;
    let path = FieldPath::root().field("spec").field("portLevelMtls");
    metadata::validate(f, &policy.meta, None);

    let empty_selector = spec
        .selector
        .as_ref()
        .is_none_or(|s| s.match_labels.is_empty());
    if let Some(ports) = &spec.port_level_mtls {
        if empty_selector && !ports.is_empty() {
            f.error(
                &path,
                "mesh/namespace peer authentication cannot have port level mTLS",
            );
        }
        if ports.is_empty() {
            f.absent(
                &path,
                "port level mTLS, if defined, must have at least one element",
            );
        }
        for port in ports.keys() {
            if *port == 0 || *port > 65535 {
                f.error(
                    &path.key(&port.to_string()),
                    "port must be in range 1..65535",
                );
            }
        }
    }
    selector::workload_selector(f, spec.selector.as_ref());
}
