//! PeerAuthentication: the mTLS mode of a workload port (Istio `ComposePeerAuthentication`).
//!
//! Levels: mesh (root namespace, no selector), namespace (the workload's namespace, no selector),
//! workload (the workload's namespace, a non-empty selector that is a subset of its labels). A
//! root-namespace policy with a selector is ignored. Within a level the oldest wins
//! (creationTimestamp, then name). `UNSET` inherits the parent; the mesh's parent is PERMISSIVE.
//! `portLevelMtls` comes only from the winning workload policy; an `UNSET` port entry takes the
//! resolved workload mode.
//!
//! meshauthz adds report-only STRICT (`meshauthz.io/strict-report-only`): a STRICT is
//! report-only when the annotation of the PeerAuthentication that set it covers the port.

use std::collections::{BTreeMap, BTreeSet};

use crate::error::{Diagnostic, Diagnostics};
use crate::model::{MtlsMode, PeerAuthentication, PolicySet, ReportOnly};

/// The mTLS answer for one port: Istio's mode, and whether a STRICT there is report-only
/// (plaintext is admitted, counted and logged instead of reset). `report_only` is only ever true
/// with `mode == Strict`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortMtls {
    pub mode: MtlsMode,
    pub report_only: bool,
}

impl PortMtls {
    pub const fn enforced(mode: MtlsMode) -> PortMtls {
        PortMtls {
            mode,
            report_only: false,
        }
    }

    /// A plaintext connection is reset: STRICT, not report-only.
    pub fn resets_plaintext(&self) -> bool {
        self.mode == MtlsMode::Strict && !self.report_only
    }

    /// A plaintext connection is admitted only because the STRICT is report-only: it would be
    /// reset were the annotation removed.
    pub fn reports_plaintext(&self) -> bool {
        self.mode == MtlsMode::Strict && self.report_only
    }

    /// `STRICT`, `STRICT (report-only)`, `PERMISSIVE`, `DISABLE`.
    pub fn describe(&self) -> &'static str {
        if self.reports_plaintext() {
            "STRICT (report-only)"
        } else {
            self.mode.as_str()
        }
    }
}
use crate::workload::{MeshConfig, Workload};

/// The resolved mode of every port of one workload.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResolvedMtls {
    /// The mode of ports without a `portLevelMtls` entry (never `Unset`).
    pub default_mode: MtlsMode,
    /// `portLevelMtls` of the winning workload policy, resolved (never `Unset`).
    pub ports: BTreeMap<u16, MtlsMode>,
    /// `namespace/name` of the policies that decided, mesh to workload.
    pub sources: Vec<String>,
    /// `namespace/name` of the workload policy whose `portLevelMtls` gave [`Self::ports`].
    pub port_source: Option<String>,
    /// When [`Self::default_mode`] is STRICT: the `meshauthz.io/strict-report-only` of the
    /// PeerAuthentication that set it (for the ports without their own entry).
    pub default_report_only: Option<ReportOnly>,
    /// The ports of [`Self::ports`] whose STRICT is report-only.
    pub report_only_ports: BTreeSet<u16>,
}

impl ResolvedMtls {
    pub fn mode(&self, port: u16) -> MtlsMode {
        self.ports.get(&port).copied().unwrap_or(self.default_mode)
    }

    /// The answer at `port`: its mode and whether its STRICT is report-only.
    pub fn at(&self, port: u16) -> PortMtls {
        match self.ports.get(&port) {
            Some(&mode) => PortMtls {
                mode,
                report_only: mode == MtlsMode::Strict && self.report_only_ports.contains(&port),
            },
            None => PortMtls {
                mode: self.default_mode,
                report_only: self.default_mode == MtlsMode::Strict
                    && self
                        .default_report_only
                        .as_ref()
                        .is_some_and(|r| r.covers(port)),
            },
        }
    }

    /// The answer for the ports without an entry of their own and not listed by a report-only
    /// annotation (report-only only when the annotation is `"true"`).
    pub fn default_answer(&self) -> PortMtls {
        PortMtls {
            mode: self.default_mode,
            report_only: self.default_mode == MtlsMode::Strict
                && self.default_report_only == Some(ReportOnly::All),
        }
    }

    /// The ports whose answer may differ from [`Self::default_answer`], sorted: the
    /// `portLevelMtls` entries and the ports a report-only annotation lists.
    pub fn listed_ports(&self) -> Vec<u16> {
        let mut ports: Vec<u16> = self.ports.keys().copied().collect();
        if self.default_mode == MtlsMode::Strict {
            if let Some(ReportOnly::Ports(listed)) = &self.default_report_only {
                ports.extend(listed);
            }
        }
        crate::order::sort_dedup(&mut ports);
        ports
    }

    /// `namespace/name` of the PeerAuthentication that set the mode of `port` (`None`: of the
    /// ports without their own entry); `None` when no policy sets it (Istio's default, PERMISSIVE).
    pub fn source(&self, port: Option<u16>) -> Option<&str> {
        match port {
            Some(p) if self.ports.contains_key(&p) => self.port_source.as_deref(),
            _ => self.sources.last().map(String::as_str),
        }
    }
}

fn has_labels(pa: &PeerAuthentication) -> bool {
    pa.spec
        .selector
        .as_ref()
        .is_some_and(|s| !s.match_labels.is_empty())
}

/// Istio's order: oldest first, then name, then namespace.
fn older(a: &PeerAuthentication, b: &PeerAuthentication) -> bool {
    (a.meta.creation_timestamp, &a.meta.name, &a.meta.namespace)
        < (b.meta.creation_timestamp, &b.meta.name, &b.meta.namespace)
}

fn oldest<'a>(
    candidates: impl Iterator<Item = &'a PeerAuthentication>,
) -> Option<&'a PeerAuthentication> {
    candidates.fold(None, |best, pa| match best {
        Some(b) if !older(pa, b) => Some(b),
        _ => Some(pa),
    })
}

pub(crate) fn resolve(
    set: &PolicySet,
    workload: &Workload,
    mesh: &MeshConfig,
    warnings: &mut Diagnostics,
) -> ResolvedMtls {
    let root = mesh.root_namespace.as_str();
    let all = &set.peer_authentications;

    for pa in all
        .iter()
        .filter(|pa| pa.meta.namespace == root && has_labels(pa))
    {
        warnings.push(Diagnostic::warning(
            Some(pa.object_ref()),
            "spec.selector",
            "a PeerAuthentication in the root namespace with a selector is ignored (Istio applies root-namespace policies mesh-wide only)",
        ));
    }

    let mesh_pa = oldest(
        all.iter()
            .filter(|pa| pa.meta.namespace == root && !has_labels(pa)),
    );
    let ns_pa = if workload.namespace == root {
        None
    } else {
        oldest(
            all.iter()
                .filter(|pa| pa.meta.namespace == workload.namespace && !has_labels(pa)),
        )
    };
    let wl_pa = if workload.namespace == root {
        None
    } else {
        oldest(all.iter().filter(|pa| {
            pa.meta.namespace == workload.namespace
                && pa.spec.selector.as_ref().is_some_and(|s| {
                    !s.match_labels.is_empty() && workload.selected_by(&s.match_labels)
                })
        }))
    };

    // Later policies at the mesh or namespace level are dropped, as Istio warns.
    for (level, winner, ns) in [
        ("mesh", mesh_pa, root),
        ("namespace", ns_pa, workload.namespace.as_str()),
    ] {
        if let Some(w) = winner {
            for pa in all
                .iter()
                .filter(|pa| pa.meta.namespace == ns && !has_labels(pa) && !std::ptr::eq(*pa, w))
            {
                warnings.push(Diagnostic::warning(
                    Some(pa.object_ref()),
                    "",
                    format!(
                        "{level}-level PeerAuthentication is already defined by {}/{} (the oldest wins); this one is ignored",
                        w.meta.namespace, w.meta.name
                    ),
                ));
            }
        }
    }

    let mut mode = MtlsMode::Permissive;
    let mut sources = Vec::new();
    let mut mode_pa = None;
    for pa in [mesh_pa, ns_pa, wl_pa].into_iter().flatten() {
        match pa.spec.mtls.unwrap_or(MtlsMode::Unset) {
            MtlsMode::Unset => {}
            m => {
                mode = m;
                mode_pa = Some(pa);
                sources.push(format!("{}/{}", pa.meta.namespace, pa.meta.name));
            }
        }
    }
    // The report-only annotation of the policy that set the workload mode applies to it.
    let default_report_only = mode_pa
        .filter(|_| mode == MtlsMode::Strict)
        .and_then(PeerAuthentication::strict_report_only);

    let mut ports = BTreeMap::new();
    let mut report_only_ports = BTreeSet::new();
    let mut port_source = None;
    if let Some((pa, levels)) =
        wl_pa.and_then(|pa| pa.spec.port_level_mtls.as_ref().map(|l| (pa, l)))
    {
        port_source = Some(format!("{}/{}", pa.meta.namespace, pa.meta.name));
        let own = pa.strict_report_only();
        for (&port, &m) in levels {
            if let Ok(port) = u16::try_from(port) {
                // An UNSET entry takes the workload mode, and with it the report-only
                // annotation of the policy that set it; an entry of its own, this policy's.
                let (m, report_only) = if m == MtlsMode::Unset {
                    (mode, default_report_only.as_ref())
                } else {
                    (m, own.as_ref())
                };
                if m == MtlsMode::Strict && report_only.is_some_and(|r| r.covers(port)) {
                    report_only_ports.insert(port);
                }
                ports.insert(port, m);
            }
        }
    }
    ResolvedMtls {
        default_mode: mode,
        ports,
        sources,
        port_source,
        default_report_only,
        report_only_ports,
    }
}
