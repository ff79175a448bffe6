//! PeerAuthentications that compete for one workload: Istio keeps one silently, meshauthz says
//! which. (Mesh- and namespace-level duplicates are reported where they are resolved,
//! `peer_authn.rs`; this covers the workload level, which depends on the workload's labels.)

use crate::error::{Diagnostic, Diagnostics, ObjectRef};
use crate::model::{PeerAuthentication, PolicySet};
use crate::workload::{MeshConfig, Workload};

/// Warns for every workload-level PeerAuthentication of `workload` that loses to an older one:
/// Istio applies only the oldest (creationTimestamp, then name), the others are ignored.
pub(crate) fn peer_authentications(
    set: &PolicySet,
    workload: &Workload,
    mesh: &MeshConfig,
    warnings: &mut Diagnostics,
) {
    if workload.namespace == mesh.root_namespace {
        return;
    }
    let mut selecting: Vec<&PeerAuthentication> = set
        .peer_authentications
        .iter()
        .filter(|pa| {
            pa.meta.namespace == workload.namespace
                && pa.spec.selector.as_ref().is_some_and(|s| {
                    !s.match_labels.is_empty()
                        && s.match_labels
                            .iter()
                            .all(|(k, v)| workload.labels.get(k) == Some(v))
                })
        })
        .collect();
    crate::order::sort_stable_by(&mut selecting, |a, b| {
        (a.meta.creation_timestamp, &a.meta.name).cmp(&(b.meta.creation_timestamp, &b.meta.name))
    });
    let Some((winner, losers)) = selecting.split_first() else {
        return;
    };
    for pa in losers {
        warnings.push(Diagnostic::warning(
            Some(ObjectRef {
                kind: "PeerAuthentication".to_string(),
                namespace: pa.meta.namespace.clone(),
                name: pa.meta.name.clone(),
            }),
            "spec.selector",
            format!(
                "PeerAuthentications {}/{} and {}/{} both select workload {} {}; Istio applies only the oldest (creationTimestamp, then name): {}/{} wins, this one is ignored",
                winner.meta.namespace,
                winner.meta.name,
                pa.meta.namespace,
                pa.meta.name,
                workload.namespace,
                labels(workload),
                winner.meta.namespace,
                winner.meta.name,
            ),
        ));
    }
}

fn labels(workload: &Workload) -> String {
    let pairs: Vec<String> = workload
        .labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    format!("({})", pairs.join(","))
}
