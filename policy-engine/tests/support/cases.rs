//! The table-driven cases: the case-file format (`tests/cases/README.md`) and the runner that
//! checks every case against the engine and reports all failures at once.
//!
//! Used by `tests/cases.rs` natively and in wasm32; it depends only on the engine's public API,
//! serde and the file contents, so other test crates can include it with `#[path]`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;

use policy_engine::path::ListenerNormalization;
use policy_engine::{
    load_str, load_value, plugin_config, Attributes, Cause, Decision, Diagnostics, Engine,
    HttpAttributes, LoadOptions, MeshConfig, MtlsMode, PluginConfig, PortMtls, Protocol,
    Requirements, RuleId, ShadowResult, Workload,
};
use serde::Deserialize;

/// One `tests/cases/*.yaml` file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CaseFile {
    pub description: String,
    #[serde(default)]
    pub mesh: MeshSpec,
    #[serde(default)]
    pub workload: WorkloadSpec,
    /// The Istio objects, as one (multi-document) YAML or JSON string.
    #[serde(default)]
    pub policies: String,
    pub cases: Vec<Case>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MeshSpec {
    #[serde(default = "default_root_namespace")]
    pub root_namespace: String,
    #[serde(default = "default_trust_domain")]
    pub trust_domain: String,
    #[serde(default)]
    pub trust_domain_aliases: Vec<String>,
}

fn default_root_namespace() -> String {
    "istio-system".to_string()
}

fn default_trust_domain() -> String {
    "cluster.local".to_string()
}

impl Default for MeshSpec {
    fn default() -> Self {
        MeshSpec {
            root_namespace: default_root_namespace(),
            trust_domain: default_trust_domain(),
            trust_domain_aliases: Vec::new(),
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadSpec {
    #[serde(default = "default_namespace")]
    pub namespace: String,
    #[serde(default = "default_labels")]
    pub labels: BTreeMap<String, String>,
}

fn default_namespace() -> String {
    "ns1".to_string()
}

fn default_labels() -> BTreeMap<String, String> {
    BTreeMap::from([("app".to_string(), "b".to_string())])
}

impl Default for WorkloadSpec {
    fn default() -> Self {
        WorkloadSpec {
            namespace: default_namespace(),
            labels: default_labels(),
        }
    }
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ProtocolSpec {
    #[default]
    Http,
    Tcp,
}

/// One case: a request (or none) and what must happen.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Case {
    pub name: String,
    /// Replaces the file's `policies` for this case.
    pub policies: Option<String>,
    pub mesh: Option<MeshSpec>,
    pub workload: Option<WorkloadSpec>,
    #[serde(default)]
    pub protocol: ProtocolSpec,
    #[serde(default)]
    pub request: RequestSpec,
    pub expect: Option<Expect>,
    /// Port (or `other`: a port no key names) to PeerAuthentication mode.
    pub expect_mtls: Option<BTreeMap<String, String>>,
    /// Loading or compiling fails with an error whose text contains this.
    pub expect_load_error: Option<String>,
    /// Loading and compiling succeed with a warning whose text contains this.
    pub expect_warning: Option<String>,
    /// Also played through a real Envoy running the module by `e2e/tests/cases.rs`: an HTTP
    /// request whose `expect.allowed` must be what the caller sees (200 or Istio's 403).
    #[serde(default)]
    pub e2e: bool,
}

/// A header value: one string, or a list (the header sent several times).
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum HeaderValue {
    One(String),
    Many(Vec<String>),
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RequestSpec {
    /// The verified peer identity (URI SAN); absent on plaintext.
    pub principal: Option<String>,
    /// Defaults to whether `principal` is set.
    pub mtls: Option<bool>,
    pub source_ip: Option<IpAddr>,
    pub remote_ip: Option<IpAddr>,
    pub destination_ip: Option<IpAddr>,
    pub port: Option<u16>,
    pub sni: Option<String>,
    pub dynamic_metadata: Option<serde_json::Value>,
    // HTTP only.
    pub host: Option<String>,
    pub method: Option<String>,
    pub path: Option<String>,
    /// What the listener did to `path` before the module saw it (default `NONE`: the module
    /// receives `path` as written).
    #[serde(default)]
    pub listener: ListenerSpec,
    #[serde(default)]
    pub headers: BTreeMap<String, HeaderValue>,
    pub jwt: Option<serde_json::Value>,
}

/// Istio's `meshConfig.pathNormalization.normalization` for the listener in front of the module.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ListenerSpec {
    #[default]
    None,
    Base,
    MergeSlashes,
}

impl ListenerSpec {
    pub fn normalization(self) -> ListenerNormalization {
        match self {
            ListenerSpec::None => ListenerNormalization::None,
            ListenerSpec::Base => ListenerNormalization::Base,
            ListenerSpec::MergeSlashes => ListenerNormalization::MergeSlashes,
        }
    }
}

pub const DEFAULT_SOURCE_IP: &str = "10.1.0.1";
pub const DEFAULT_DESTINATION_IP: &str = "10.2.0.1";
pub const DEFAULT_PORT: u16 = 8080;
pub const DEFAULT_HOST: &str = "b.ns1.svc.cluster.local";
pub const DEFAULT_METHOD: &str = "GET";
pub const DEFAULT_PATH: &str = "/";

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum CauseSpec {
    NoAllowPolicy,
    AllowRule,
    DenyRule,
    NoAllowRuleMatched,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ShadowSpec {
    Allowed,
    Denied,
    /// No dry-run policy of that action applies.
    None,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Expect {
    pub allowed: bool,
    pub cause: Option<CauseSpec>,
    /// `namespace/name` of the policy whose rule decided (Cause::AllowRule / DenyRule).
    pub policy: Option<String>,
    /// Index of that rule in `spec.rules`.
    pub rule: Option<u32>,
    /// `access_log_hint`: an AUDIT rule matched.
    pub audit: Option<bool>,
    /// `namespace/name#i`: the AUDIT rule that matched.
    pub audit_rule: Option<String>,
    /// At least one AUDIT policy applies.
    pub audit_applies: Option<bool>,
    pub shadow_allow: Option<ShadowSpec>,
    /// `namespace/name#i`.
    pub shadow_allow_rule: Option<String>,
    pub shadow_deny: Option<ShadowSpec>,
    /// `namespace/name#i`.
    pub shadow_deny_rule: Option<String>,
    pub cel_errors: Option<u32>,
}

/// The outcome of running every case of every file.
#[derive(Debug, Default)]
pub struct Report {
    pub files: usize,
    pub cases: usize,
    /// Cases with a CEL condition, not run by a build without the `cel` feature (which refuses
    /// them at load: `cel_is_refused_with_its_field_without_the_feature`).
    pub skipped_cel: usize,
    pub failures: Vec<String>,
    /// Every case name, for coverage checks.
    pub names: Vec<String>,
}

impl Report {
    pub fn summary(&self) -> String {
        let skipped = if self.skipped_cel > 0 {
            format!(
                " ({} cases with CEL conditions skipped: built without the `cel` feature)",
                self.skipped_cel
            )
        } else {
            String::new()
        };
        format!(
            "{} case files, {} cases, {} passed, {} failed{skipped}",
            self.files,
            self.cases,
            self.cases.saturating_sub(self.failures.len()),
            self.failures.len()
        )
    }

    /// The summary and every failure, one per paragraph.
    pub fn details(&self) -> String {
        let mut out = self.summary();
        for f in &self.failures {
            out.push_str("\n\n");
            out.push_str(f);
        }
        out
    }
}

/// Runs the cases of every `(file name, contents)` whose file name or case name contains `filter`
/// (every case if it is empty).
pub fn run_matching(files: &[(&str, &str)], filter: &str) -> Report {
    let mut report = Report::default();
    for (file, text) in files {
        report.files += 1;
        let parsed: CaseFile = match serde_yaml_ng::from_str(text) {
            Ok(f) => f,
            Err(e) => {
                report.cases += 1;
                report
                    .failures
                    .push(format!("{file}: the case file does not parse: {e}"));
                continue;
            }
        };
        if parsed.cases.is_empty() || parsed.description.trim().is_empty() {
            report.cases += 1;
            report.failures.push(format!(
                "{file}: a case file needs a description and at least one case"
            ));
        }
        for case in &parsed.cases {
            if !filter.is_empty() && !file.contains(filter) && !case.name.contains(filter) {
                continue;
            }
            if !policy_engine::cel::AVAILABLE
                && case
                    .policies
                    .as_deref()
                    .unwrap_or(&parsed.policies)
                    .contains(policy_engine::cel::CEL_CONDITION_KEY)
            {
                report.skipped_cel += 1;
                continue;
            }
            report.cases += 1;
            report.names.push(case.name.clone());
            let mut problems = run_case(&parsed, case);
            if case.e2e && (case.expect.is_none() || case.protocol != ProtocolSpec::Http) {
                problems.push(
                    "tagged `e2e: true` but not an HTTP decision (`expect`, protocol http): \
                     e2e/tests/cases.rs could not play it"
                        .to_string(),
                );
            }
            if !problems.is_empty() {
                let mut msg = format!("{file}: case {:?}:", case.name);
                for p in problems {
                    msg.push_str("\n    ");
                    msg.push_str(&p);
                }
                report.failures.push(msg);
            }
        }
    }
    report
}

fn mesh_config(m: &MeshSpec) -> MeshConfig {
    MeshConfig {
        root_namespace: m.root_namespace.clone(),
        trust_domain: m.trust_domain.clone(),
        trust_domain_aliases: m.trust_domain_aliases.clone(),
    }
}

fn workload(w: &WorkloadSpec) -> Workload {
    Workload {
        namespace: w.namespace.clone(),
        labels: w.labels.clone(),
    }
}

fn diagnostics_text(d: &Diagnostics) -> String {
    if d.is_empty() {
        return "(no diagnostics)".to_string();
    }
    d.0.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(" | ")
}

/// How the policies reach the engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FrontEnd {
    /// `load_str` on the YAML/JSON text, as the CLI and users load files.
    Text,
    /// `load_value` on the documents as JSON values.
    Json,
    /// The module's configuration path: `load_str` as the CLI reads files, the plugin
    /// configuration writer (`meshauthz plugin-config`), then the module's decoder
    /// (`plugin_config::decode`) and compilation for the workload the configuration names.
    PluginConfig,
}

/// The policy documents of `text` as JSON: one document as itself, several as an array (YAML
/// integer keys such as the ports of `portLevelMtls` become strings, as in JSON). `None` if the
/// text is not YAML at all.
fn documents_as_json(text: &str) -> Option<serde_json::Value> {
    let mut docs = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(text) {
        let value = serde_yaml_ng::Value::deserialize(doc).ok()?;
        if !value.is_null() {
            docs.push(yaml_to_json(value));
        }
    }
    if docs.len() == 1 {
        docs.pop()
    } else {
        Some(serde_json::Value::Array(docs))
    }
}

fn yaml_to_json(v: serde_yaml_ng::Value) -> serde_json::Value {
    use serde_yaml_ng::Value as Y;
    match v {
        Y::Null => serde_json::Value::Null,
        Y::Bool(b) => serde_json::Value::Bool(b),
        Y::Number(n) => serde_json::to_value(&n).unwrap_or(serde_json::Value::Null),
        Y::String(s) => serde_json::Value::String(s),
        Y::Sequence(items) => {
            serde_json::Value::Array(items.into_iter().map(yaml_to_json).collect())
        }
        Y::Mapping(map) => serde_json::Value::Object(
            map.into_iter()
                .map(|(k, v)| {
                    let key = match k {
                        Y::String(s) => s,
                        other => serde_yaml_ng::to_string(&other)
                            .unwrap_or_default()
                            .trim()
                            .to_string(),
                    };
                    (key, yaml_to_json(v))
                })
                .collect(),
        ),
        Y::Tagged(t) => yaml_to_json(t.value),
    }
}

/// Loads and compiles what the case names: the engine and every warning, or every error.
fn build(
    file: &CaseFile,
    case: &Case,
    front_end: FrontEnd,
) -> Result<(Engine, Diagnostics), Diagnostics> {
    let text = case.policies.as_deref().unwrap_or(&file.policies);
    let mesh = mesh_config(case.mesh.as_ref().unwrap_or(&file.mesh));
    let wl = workload(case.workload.as_ref().unwrap_or(&file.workload));
    let (set, mut warnings) = match front_end {
        FrontEnd::Text => load_str(text, &LoadOptions::default())?,
        FrontEnd::Json => match documents_as_json(text) {
            Some(docs) => load_value(&docs, &LoadOptions::default())?,
            None => load_str(text, &LoadOptions::default())?,
        },
        FrontEnd::PluginConfig => {
            let (set, warnings) = load_str(text, &LoadOptions::default())?;
            let config = PluginConfig {
                workload: Some(wl),
                mesh,
                ..PluginConfig::new(set)
            };
            let written = config.write()?.to_string();
            let (decoded, _) = plugin_config::decode(written.as_bytes())?;
            let Some(wl) = decoded.workload else {
                return Err(Diagnostics(Vec::new()));
            };
            // The module's compilation: the decoded set consumed (`Engine::compile_owned`).
            let (engine, more) = Engine::compile_owned(decoded.policies, &wl, &decoded.mesh)?;
            let mut all = warnings;
            all.extend(more);
            return Ok((engine, all));
        }
    };
    let (engine, more) = Engine::compile(&set, &wl, &mesh)?;
    warnings.extend(more);
    Ok((engine, warnings))
}

/// Runs one case three times: the policies loaded from text (`load_str`, the CLI's path), as
/// JSON values (`load_value`), and through the plugin configuration (writer, then the module's
/// decoder: the module's path); returns what did not match expectations (empty: passed). Every
/// path must meet the same expectations, so the CLI and the module decide alike.
pub fn run_case(file: &CaseFile, case: &Case) -> Vec<String> {
    let mut problems = run_case_with(file, case, FrontEnd::Text);
    for (front_end, label) in [
        (
            FrontEnd::Json,
            "[policies as JSON values (load_value), only the attributes Engine::requirements() names]",
        ),
        (
            FrontEnd::PluginConfig,
            "[module path: plugin-config writer, plugin_config::decode, only the attributes Engine::requirements() names]",
        ),
    ] {
        for p in run_case_with(file, case, front_end) {
            let p = format!("{label} {p}");
            if !problems.contains(&p) {
                problems.push(p);
            }
        }
    }
    problems
}

fn run_case_with(file: &CaseFile, case: &Case, front_end: FrontEnd) -> Vec<String> {
    let mut problems = Vec::new();
    if case.expect.is_none()
        && case.expect_mtls.is_none()
        && case.expect_load_error.is_none()
        && case.expect_warning.is_none()
    {
        problems.push(
            "case file error: the case expects nothing (set expect, expectMtls, expectLoadError or expectWarning)"
                .to_string(),
        );
        return problems;
    }
    let built = build(file, case, front_end);

    if let Some(want) = &case.expect_load_error {
        if case.expect.is_some() || case.expect_mtls.is_some() {
            problems.push(
                "case file error: expectLoadError cannot be combined with expect/expectMtls"
                    .to_string(),
            );
        }
        match built {
            Ok((_, warnings)) => problems.push(format!(
                "expected a load/compile error containing {want:?}, got success (warnings: {})",
                diagnostics_text(&warnings)
            )),
            Err(errors) => {
                let found = errors
                    .errors()
                    .any(|d| d.to_string().contains(want.as_str()));
                if !found {
                    problems.push(format!(
                        "expected a load/compile error containing {want:?}, got: {}",
                        diagnostics_text(&errors)
                    ));
                }
            }
        }
        return problems;
    }

    let (engine, warnings) = match built {
        Ok(b) => b,
        Err(errors) => {
            problems.push(format!(
                "loading/compiling the policies failed: {}",
                diagnostics_text(&errors)
            ));
            return problems;
        }
    };

    if let Some(want) = &case.expect_warning {
        if !warnings
            .warnings()
            .any(|d| d.to_string().contains(want.as_str()))
        {
            problems.push(format!(
                "expected a warning containing {want:?}, got: [{}]",
                diagnostics_text(&warnings)
            ));
        }
    }

    if let Some(ports) = &case.expect_mtls {
        check_mtls(&engine, ports, &mut problems);
    }

    if let Some(expect) = &case.expect {
        match check_request(&engine, case, front_end) {
            Ok(decision) => check_decision(&engine, &decision, expect, &mut problems),
            Err(e) => problems.push(format!("case file error: {e}")),
        }
    }
    problems
}

/// `STRICT_REPORT_ONLY`: STRICT made report-only by `meshauthz.io/strict-report-only`.
fn parse_mode(s: &str) -> Option<PortMtls> {
    match s {
        "DISABLE" => Some(PortMtls::enforced(MtlsMode::Disable)),
        "PERMISSIVE" => Some(PortMtls::enforced(MtlsMode::Permissive)),
        "STRICT" => Some(PortMtls::enforced(MtlsMode::Strict)),
        "STRICT_REPORT_ONLY" => Some(PortMtls {
            mode: MtlsMode::Strict,
            report_only: true,
        }),
        _ => None,
    }
}

fn check_mtls(engine: &Engine, ports: &BTreeMap<String, String>, problems: &mut Vec<String>) {
    let named: Vec<u16> = ports.keys().filter_map(|k| k.parse().ok()).collect();
    for (key, want) in ports {
        let port = if key == "other" {
            // A port no key names.
            match (1..=u16::MAX).rev().find(|p| !named.contains(p)) {
                Some(p) => p,
                None => continue,
            }
        } else {
            match key.parse::<u16>() {
                Ok(p) => p,
                Err(_) => {
                    problems.push(format!(
                        "case file error: expectMtls key {key:?} is neither a port nor `other`"
                    ));
                    continue;
                }
            }
        };
        let Some(want_mode) = parse_mode(want) else {
            problems.push(format!(
                "case file error: expectMtls[{key}] = {want:?} is not DISABLE, PERMISSIVE, STRICT or STRICT_REPORT_ONLY"
            ));
            continue;
        };
        let got = engine.mtls_mode_at(Some(port));
        if got != want_mode {
            problems.push(format!(
                "mTLS mode of port {key}: expected {}, got {}",
                want_mode.describe(),
                got.describe()
            ));
        }
    }
}

fn parse_ip(s: &str) -> Option<IpAddr> {
    s.parse().ok()
}

/// Checks the case's request. On the filter's path (`FrontEnd::Json`) the engine gets only the
/// attributes its `requirements()` name, as the proxy-wasm filter fetches them; so a requirement
/// the engine forgets to declare shows up as a wrong decision.
fn check_request(engine: &Engine, case: &Case, front_end: FrontEnd) -> Result<Decision, String> {
    let r = &case.request;
    let all = Requirements {
        principal: true,
        mtls: true,
        source_ip: true,
        remote_ip: true,
        destination_ip: true,
        destination_port: true,
        sni: true,
        host: true,
        method: true,
        path: true,
        jwt: true,
        headers: Vec::new(),
        all_headers: true,
        dynamic_metadata: Vec::new(),
    };
    let (need, all_metadata) = match front_end {
        FrontEnd::Text => (&all, true),
        FrontEnd::Json | FrontEnd::PluginConfig => (engine.requirements(), false),
    };
    let protocol = match case.protocol {
        ProtocolSpec::Http => Protocol::Http,
        ProtocolSpec::Tcp => Protocol::Tcp,
    };
    if protocol == Protocol::Tcp
        && (r.host.is_some()
            || r.method.is_some()
            || r.path.is_some()
            || r.listener != ListenerSpec::None
            || !r.headers.is_empty()
            || r.jwt.is_some())
    {
        return Err(
            "a tcp case has no host, method, path, headers or jwt (the TCP chain never sees them)"
                .to_string(),
        );
    }
    // A repeated header is several pairs: Envoy RBAC matches when any one value matches.
    let headers: Vec<(String, String)> = r
        .headers
        .iter()
        .flat_map(|(name, value)| {
            let values = match value {
                HeaderValue::One(v) => vec![v.clone()],
                HeaderValue::Many(vs) => vs.clone(),
            };
            values
                .into_iter()
                .map(move |v| (name.to_ascii_lowercase(), v))
        })
        .collect();
    let header_refs: Vec<(&str, &str)> = headers
        .iter()
        .filter(|(n, _)| need.all_headers || need.headers.iter().any(|h| h == n))
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    // Only the filters whose metadata is named, as the filter would fetch them one by one.
    let metadata = r.dynamic_metadata.as_ref().map(|md| match md {
        serde_json::Value::Object(filters) if !all_metadata => serde_json::Value::Object(
            filters
                .iter()
                .filter(|(f, _)| need.dynamic_metadata.iter().any(|n| n == *f))
                .map(|(f, v)| (f.clone(), v.clone()))
                .collect(),
        ),
        other => other.clone(),
    });
    let source_ip = r.source_ip.or_else(|| parse_ip(DEFAULT_SOURCE_IP));
    let forwarded_path = r
        .listener
        .normalization()
        .apply(r.path.as_deref().unwrap_or(DEFAULT_PATH));
    let attrs = Attributes {
        principal: given(need.principal, r.principal.as_deref()),
        mtls: need.mtls && r.mtls.unwrap_or(r.principal.is_some()),
        source_ip: given(need.source_ip, source_ip),
        remote_ip: given(need.remote_ip, r.remote_ip.or(source_ip)),
        destination_ip: given(
            need.destination_ip,
            r.destination_ip
                .or_else(|| parse_ip(DEFAULT_DESTINATION_IP)),
        ),
        destination_port: given(need.destination_port, Some(r.port.unwrap_or(DEFAULT_PORT))),
        sni: given(need.sni, r.sni.as_deref()),
        dynamic_metadata: metadata.as_ref(),
        http: match protocol {
            Protocol::Tcp => None,
            Protocol::Http => Some(HttpAttributes {
                host: given(need.host, Some(r.host.as_deref().unwrap_or(DEFAULT_HOST))),
                method: given(
                    need.method,
                    Some(r.method.as_deref().unwrap_or(DEFAULT_METHOD)),
                ),
                path: given(need.path, Some(&*forwarded_path)),
                headers: &header_refs,
                jwt: given(need.jwt, r.jwt.as_ref()),
            }),
        },
    };
    Ok(engine.check(protocol, &attrs))
}

/// `v` if the engine asked for the attribute, else absent.
fn given<T>(needed: bool, v: Option<T>) -> Option<T> {
    if needed {
        v
    } else {
        None
    }
}

fn rule_name(engine: &Engine, id: RuleId) -> String {
    match engine.policy(id) {
        Some(p) => format!("{}#{}", p.qualified_name(), id.rule),
        None => format!("<no policy {}>#{}", id.policy, id.rule),
    }
}

fn cause_text(engine: &Engine, cause: Cause) -> String {
    match cause {
        Cause::NoAllowPolicy => "noAllowPolicy".to_string(),
        Cause::NoAllowRuleMatched => "noAllowRuleMatched".to_string(),
        Cause::AllowRule(id) => format!("allowRule {}", rule_name(engine, id)),
        Cause::DenyRule(id) => format!("denyRule {}", rule_name(engine, id)),
    }
}

fn shadow_text(engine: &Engine, s: Option<ShadowResult>) -> String {
    match s {
        None => "none".to_string(),
        Some(ShadowResult { allowed, rule }) => {
            let mut t = if allowed { "allowed" } else { "denied" }.to_string();
            if let Some(id) = rule {
                let _ = write!(t, " by {}", rule_name(engine, id));
            }
            t
        }
    }
}

fn check_shadow(
    engine: &Engine,
    what: &str,
    got: Option<ShadowResult>,
    want: Option<ShadowSpec>,
    want_rule: Option<&String>,
    problems: &mut Vec<String>,
) {
    if let Some(want) = want {
        let ok = match (want, got) {
            (ShadowSpec::None, None) => true,
            (ShadowSpec::Allowed, Some(s)) => s.allowed,
            (ShadowSpec::Denied, Some(s)) => !s.allowed,
            _ => false,
        };
        if !ok {
            problems.push(format!(
                "{what}: expected {want:?}, got {}",
                shadow_text(engine, got)
            ));
        }
    }
    if let Some(want_rule) = want_rule {
        let got_rule = got.and_then(|s| s.rule).map(|id| rule_name(engine, id));
        if got_rule.as_deref() != Some(want_rule.as_str()) {
            problems.push(format!(
                "{what} rule: expected {want_rule}, got {}",
                shadow_text(engine, got)
            ));
        }
    }
}

fn check_decision(engine: &Engine, d: &Decision, e: &Expect, problems: &mut Vec<String>) {
    let got_cause = cause_text(engine, d.cause);
    if d.allowed() != e.allowed {
        problems.push(format!(
            "allowed: expected {}, got {} (cause: {got_cause})",
            e.allowed,
            d.allowed()
        ));
    }
    // What every decision must satisfy, whatever the case says (`allowed` follows from the
    // cause by construction).
    if d.audit_rule.is_some() && !d.audit_policy_applies {
        problems.push(
            "engine invariant: an AUDIT rule matched but no AUDIT policy applies".to_string(),
        );
    }
    if let Some(want) = e.cause {
        let ok = matches!(
            (want, d.cause),
            (CauseSpec::NoAllowPolicy, Cause::NoAllowPolicy)
                | (CauseSpec::NoAllowRuleMatched, Cause::NoAllowRuleMatched)
                | (CauseSpec::AllowRule, Cause::AllowRule(_))
                | (CauseSpec::DenyRule, Cause::DenyRule(_))
        );
        if !ok {
            problems.push(format!("cause: expected {want:?}, got {got_cause}"));
        }
    }
    if e.policy.is_some() || e.rule.is_some() {
        match d.deciding_rule() {
            None => problems.push(format!(
                "deciding rule: expected {}#{}, got none (cause: {got_cause})",
                e.policy.as_deref().unwrap_or("*"),
                e.rule.map_or("*".to_string(), |r| r.to_string())
            )),
            Some(id) => {
                let name = engine.policy(id).map(|p| p.qualified_name());
                let policy_ok = e.policy.as_ref().is_none_or(|p| name.as_ref() == Some(p));
                let rule_ok = e.rule.is_none_or(|r| r == id.rule);
                if !policy_ok || !rule_ok {
                    problems.push(format!(
                        "deciding rule: expected {}#{}, got {got_cause}",
                        e.policy.as_deref().unwrap_or("*"),
                        e.rule.map_or("*".to_string(), |r| r.to_string())
                    ));
                }
            }
        }
    }
    if let Some(want) = e.audit {
        if d.access_log_hint() != want {
            problems.push(format!(
                "audit (access_log_hint): expected {want}, got {} (audit rule: {})",
                d.access_log_hint(),
                d.audit_rule
                    .map_or("none".to_string(), |id| rule_name(engine, id))
            ));
        }
    }
    if let Some(want) = &e.audit_rule {
        let got = d.audit_rule.map(|id| rule_name(engine, id));
        if got.as_deref() != Some(want.as_str()) {
            problems.push(format!(
                "audit rule: expected {want}, got {}",
                got.as_deref().unwrap_or("none")
            ));
        }
    }
    if let Some(want) = e.audit_applies {
        if d.audit_policy_applies != want {
            problems.push(format!(
                "an AUDIT policy applies: expected {want}, got {}",
                d.audit_policy_applies
            ));
        }
    }
    check_shadow(
        engine,
        "shadow (dry-run) ALLOW",
        d.shadow_allow,
        e.shadow_allow,
        e.shadow_allow_rule.as_ref(),
        problems,
    );
    check_shadow(
        engine,
        "shadow (dry-run) DENY",
        d.shadow_deny,
        e.shadow_deny,
        e.shadow_deny_rule.as_ref(),
        problems,
    );
    if let Some(want) = e.cel_errors {
        if d.cel_errors != want {
            problems.push(format!(
                "CEL runtime errors: expected {want}, got {}",
                d.cel_errors
            ));
        }
    }
}

/// The names of every case, without running them (unparsable files are skipped: the runner
/// reports those).
pub fn case_names(files: &[(&str, &str)]) -> Vec<String> {
    files
        .iter()
        .filter_map(|(_, text)| serde_yaml_ng::from_str::<CaseFile>(text).ok())
        .flat_map(|f| f.cases.into_iter().map(|c| c.name))
        .collect()
}
