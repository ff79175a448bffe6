//! `ValidatePeerAuthentication` and the PeerAuthentication CRD rules.

use super::{metadata, selector, FieldPath, Findings};
use crate::input::parse_strict_report_only;
use crate::model::{MtlsMode, PeerAuthentication, ReportOnly, STRICT_REPORT_ONLY_ANNOTATION};

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
    strict_report_only(f, policy);
}

/// `meshauthz.io/strict-report-only`: a value that does not parse is an error (a typo must not
/// leave an operator believing STRICT is enforced, or report-only); a port the object sets no
/// STRICT on is a warning (the annotation does nothing there).
fn strict_report_only(f: &mut Findings, policy: &PeerAuthentication) {
    let Some(value) = policy.meta.annotations.get(STRICT_REPORT_ONLY_ANNOTATION) else {
        return;
    };
    let at = FieldPath::root()
        .field("metadata")
        .field("annotations")
        .key(STRICT_REPORT_ONLY_ANNOTATION);
    let (ns, name) = (&policy.meta.namespace, &policy.meta.name);
    let scope = match parse_strict_report_only(value) {
        Ok(Some(scope)) => scope,
        Ok(None) => return,
        Err(e) => {
            f.error(&at, e);
            return;
        }
    };
    let spec = &policy.spec;
    let workload_strict = spec.mtls == Some(MtlsMode::Strict);
    // The STRICT this object sets on `port`: its own `portLevelMtls` entry, or (no entry, or an
    // UNSET one) its workload-wide mode.
    let sets_strict_on = |port: u16| match spec
        .port_level_mtls
        .as_ref()
        .and_then(|l| l.get(&u32::from(port)))
    {
        Some(MtlsMode::Unset) | None => workload_strict,
        Some(m) => *m == MtlsMode::Strict,
    };
    match scope {
        ReportOnly::All => {
            let any_port_strict = spec
                .port_level_mtls
                .iter()
                .flatten()
                .any(|(_, m)| *m == MtlsMode::Strict);
            if !workload_strict && !any_port_strict {
                f.warning(
                    &at,
                    format!(
                        "{ns}/{name} sets no STRICT mode (spec.mtls.mode or portLevelMtls): {STRICT_REPORT_ONLY_ANNOTATION} has no effect"
                    ),
                );
            }
        }
        ReportOnly::Ports(ports) => {
            for port in ports.into_iter().filter(|p| !sets_strict_on(*p)) {
                f.warning(
                    &at,
                    format!(
                        "{ns}/{name} does not set STRICT on port {port} (neither spec.mtls.mode nor portLevelMtls[{port}] is STRICT): {STRICT_REPORT_ONLY_ANNOTATION} has no effect on that port"
                    ),
                );
            }
        }
    }
}
