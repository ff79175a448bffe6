//! The Istio objects as the user wrote them, typed but not yet validated. Field names follow the
//! Istio API (`security.istio.io/v1`): `Source::not_principals` is `notPrincipals`, and so on.
//! Lists keep `None` entries where the input had `null`, and `Option<Vec<_>>` where Istio
//! tells an empty list from an absent one, so validation can report them as Istio does.

use std::collections::BTreeMap;

use crate::error::ObjectRef;

/// `metadata` of a Kubernetes object; only what Istio's semantics use.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ObjectMeta {
    pub name: String,
    pub namespace: String,
    pub annotations: BTreeMap<String, String>,
    /// `metadata.creationTimestamp`; `None` sorts first (Go's zero time).
    pub creation_timestamp: Option<Timestamp>,
}

impl ObjectMeta {
    /// `kind namespace/name`, as diagnostics name an object.
    pub(crate) fn object_ref(&self, kind: &str) -> ObjectRef {
        ObjectRef {
            kind: kind.to_string(),
            namespace: self.namespace.clone(),
            name: self.name.clone(),
        }
    }
}

/// An RFC 3339 instant as seconds and nanoseconds since the Unix epoch. Ordered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp {
    pub seconds: i64,
    pub nanos: u32,
}

/// As Kubernetes writes it (`2024-05-01T12:00:00Z`; a fraction only when there are nanoseconds):
/// the one writer of timestamps, also used by the CLI's reports.
impl std::fmt::Display for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&crate::input::format_rfc3339(*self))
    }
}

/// `selector` (`matchLabels` only: Istio has no `matchExpressions`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WorkloadSelector {
    pub match_labels: BTreeMap<String, String>,
}

/// `targetRef` / `targetRefs[i]`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicyTargetReference {
    pub group: String,
    pub kind: String,
    pub name: String,
    pub namespace: String,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    #[default]
    Allow,
    Deny,
    Audit,
    /// Accepted by the API; delegating to an external authorizer is out of scope and the engine
    /// rejects it (a CUSTOM policy that is silently ignored would widen access).
    Custom,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "ALLOW",
            Action::Deny => "DENY",
            Action::Audit => "AUDIT",
            Action::Custom => "CUSTOM",
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuthorizationPolicy {
    pub api_version: String,
    pub meta: ObjectMeta,
    pub spec: AuthorizationPolicySpec,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuthorizationPolicySpec {
    pub selector: Option<WorkloadSelector>,
    pub target_ref: Option<PolicyTargetReference>,
    pub target_refs: Vec<PolicyTargetReference>,
    /// `None`: no `rules` key (or `null`). `Some(vec![])`: `rules: []`, which Istio treats alike.
    pub rules: Option<Vec<Option<Rule>>>,
    pub action: Action,
    /// `provider.name` (CUSTOM only).
    pub provider: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rule {
    pub from: Option<Vec<Option<RuleFrom>>>,
    pub to: Option<Vec<Option<RuleTo>>>,
    pub when: Option<Vec<Option<Condition>>>,
}

/// `rules[i].from[j]`: `{source: {...}}`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuleFrom {
    pub source: Option<Source>,
}

/// `rules[i].to[j]`: `{operation: {...}}`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuleTo {
    pub operation: Option<Operation>,
}

/// `rules[i].from[j].source`. Each field is compiled and matched by one type in
/// `src/authz/source.rs` (`principals` by `Principal`, ...).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Source {
    pub principals: Vec<String>,
    pub not_principals: Vec<String>,
    pub request_principals: Vec<String>,
    pub not_request_principals: Vec<String>,
    pub namespaces: Vec<String>,
    pub not_namespaces: Vec<String>,
    pub service_accounts: Vec<String>,
    pub not_service_accounts: Vec<String>,
    pub trust_domains: Vec<String>,
    pub not_trust_domains: Vec<String>,
    pub ip_blocks: Vec<String>,
    pub not_ip_blocks: Vec<String>,
    pub remote_ip_blocks: Vec<String>,
    pub not_remote_ip_blocks: Vec<String>,
}

/// `rules[i].to[j].operation`. Each field is compiled and matched by one type in
/// `src/authz/operation.rs` (`paths` by `Path`, ...).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Operation {
    pub hosts: Vec<String>,
    pub not_hosts: Vec<String>,
    pub ports: Vec<String>,
    pub not_ports: Vec<String>,
    pub methods: Vec<String>,
    pub not_methods: Vec<String>,
    pub paths: Vec<String>,
    pub not_paths: Vec<String>,
}

/// `rules[i].when[j]`. Compiled and matched in `src/authz/condition.rs` (keys on the source or
/// the operation by their field's type).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Condition {
    pub key: String,
    pub values: Vec<String>,
    pub not_values: Vec<String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MtlsMode {
    /// Inherit from the parent level (the mesh level's parent is PERMISSIVE).
    #[default]
    Unset,
    Disable,
    Permissive,
    Strict,
}

impl MtlsMode {
    pub fn as_str(self) -> &'static str {
        match self {
            MtlsMode::Unset => "UNSET",
            MtlsMode::Disable => "DISABLE",
            MtlsMode::Permissive => "PERMISSIVE",
            MtlsMode::Strict => "STRICT",
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerAuthentication {
    pub api_version: String,
    pub meta: ObjectMeta,
    pub spec: PeerAuthenticationSpec,
}

impl PeerAuthentication {
    pub(crate) fn object_ref(&self) -> ObjectRef {
        self.meta.object_ref("PeerAuthentication")
    }

    /// Which of the STRICT modes this object sets are report-only
    /// ([`STRICT_REPORT_ONLY_ANNOTATION`]). `None`: none (no annotation, `"false"`, or a value
    /// that does not parse: validation refuses those, and were one to get through, STRICT stays
    /// enforced).
    pub fn strict_report_only(&self) -> Option<ReportOnly> {
        self.meta
            .annotations
            .get(STRICT_REPORT_ONLY_ANNOTATION)
            .and_then(|v| crate::input::parse_strict_report_only(v).ok())
            .flatten()
    }
}

/// meshauthz's annotation on a PeerAuthentication: `"true"` makes every STRICT the object sets
/// (workload-wide and per port) report-only; a comma-separated list of ports (`"8080,9000"`)
/// only those ports' STRICT; `"false"` nothing. A report-only STRICT port admits plaintext (the
/// request is then authorized as on PERMISSIVE) and the module counts and logs each plaintext
/// connection it would have reset.
pub const STRICT_REPORT_ONLY_ANNOTATION: &str = "meshauthz.io/strict-report-only";

/// The value of [`STRICT_REPORT_ONLY_ANNOTATION`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReportOnly {
    /// `"true"`: every STRICT the object sets.
    All,
    /// A list of ports: the STRICT of those ports only.
    Ports(std::collections::BTreeSet<u16>),
}

impl ReportOnly {
    pub fn covers(&self, port: u16) -> bool {
        match self {
            ReportOnly::All => true,
            ReportOnly::Ports(ports) => ports.contains(&port),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerAuthenticationSpec {
    pub selector: Option<WorkloadSelector>,
    /// `mtls`; `None` and `{}` both mean UNSET.
    pub mtls: Option<MtlsMode>,
    /// `portLevelMtls`: port (as written, range-checked by validation) to mode (`{}` = UNSET).
    /// `Some(empty)` is `portLevelMtls: {}`, which validation rejects.
    pub port_level_mtls: Option<BTreeMap<u32, MtlsMode>>,
}

/// Everything the input held that the engine understands, in input order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicySet {
    pub authorization_policies: Vec<AuthorizationPolicy>,
    pub peer_authentications: Vec<PeerAuthentication>,
}

impl PolicySet {
    pub fn extend(&mut self, other: PolicySet) {
        self.authorization_policies
            .extend(other.authorization_policies);
        self.peer_authentications.extend(other.peer_authentications);
    }
}

/// The `istio.io/dry-run` annotation.
pub const DRY_RUN_ANNOTATION: &str = "istio.io/dry-run";

/// Go's `strconv.ParseBool`, which Istio uses for annotations.
pub fn parse_go_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// meshauthz has no external authorizer; ignoring a CUSTOM policy would widen access.
pub(crate) const CUSTOM_UNSUPPORTED: &str = "CUSTOM action is not supported by meshauthz (no external authorizer); refusing the policy rather than ignoring it";

impl AuthorizationPolicy {
    pub(crate) fn object_ref(&self) -> ObjectRef {
        self.meta.object_ref("AuthorizationPolicy")
    }

    /// Whether the policy is evaluated without being enforced. An unparsable value enforces the
    /// policy (Istio's builder does the same; validation rejects it anyway).
    pub fn dry_run(&self) -> bool {
        self.meta
            .annotations
            .get(DRY_RUN_ANNOTATION)
            .and_then(|v| parse_go_bool(v))
            .unwrap_or(false)
    }
}
