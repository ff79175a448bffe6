//! What a policy set is compiled for: the workload (a sidecar's namespace and pod labels) and the
//! mesh-wide settings that change how policies read.

use std::collections::BTreeMap;

/// Mesh-wide settings (Istio `meshConfig`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MeshConfig {
    /// `meshConfig.rootNamespace`: its policies apply mesh-wide.
    pub root_namespace: String,
    /// `meshConfig.trustDomain`.
    pub trust_domain: String,
    /// `meshConfig.trustDomainAliases`: principals written for any of these trust domains (or
    /// `cluster.local`) also match the others.
    pub trust_domain_aliases: Vec<String>,
}

impl Default for MeshConfig {
    fn default() -> Self {
        MeshConfig {
            root_namespace: "istio-system".to_string(),
            trust_domain: "cluster.local".to_string(),
            trust_domain_aliases: Vec::new(),
        }
    }
}

/// The workload the policies are compiled for: a sidecar's own namespace and pod labels.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Workload {
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
}

impl Workload {
    /// Whether a `selector.matchLabels` selects this workload: every label is present with the
    /// same value (exact, no wildcards). An empty selector selects every workload.
    pub(crate) fn selected_by(&self, match_labels: &BTreeMap<String, String>) -> bool {
        match_labels
            .iter()
            .all(|(k, v)| self.labels.get(k) == Some(v))
    }
}
