//! `meshauthz test CASES...`: policy unit tests. A case file names policies (paths or inline
//! text, read as `validate` reads them), the workload, the mesh, and cases: a request or a
//! connection and what the workload must do with it. Each case is evaluated by
//! [`crate::explain::evaluate`] (the engine's decision and mode) and compared. The format is
//! documented in `envoy-config/policy-tests/README.md`.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use policy_engine::{Cause, Engine, MeshConfig, Workload};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::explain::{evaluate, policy_of, Evaluation, Outcome, Traffic};

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct CaseFile {
    #[serde(default)]
    #[allow(dead_code, reason = "documentation of the file, not used")]
    description: Option<String>,
    policies: Vec<PolicySource>,
    #[serde(default)]
    workload: WorkloadSpec,
    #[serde(default)]
    mesh: MeshSpec,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum PolicySource {
    /// A file, relative to the case file (`-` is not allowed: standard input holds no policy here).
    Path(String),
    Inline(Inline),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Inline {
    inline: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WorkloadSpec {
    #[serde(default = "default_namespace")]
    namespace: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

impl Default for WorkloadSpec {
    fn default() -> Self {
        WorkloadSpec {
            namespace: default_namespace(),
            labels: BTreeMap::new(),
        }
    }
}

fn default_namespace() -> String {
    "default".to_string()
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct MeshSpec {
    root_namespace: Option<String>,
    trust_domain: Option<String>,
    #[serde(default)]
    trust_domain_aliases: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Case {
    name: String,
    request: Option<TrafficSpec>,
    connection: Option<TrafficSpec>,
    expect: Outcome,
    audit: Option<bool>,
    /// A plaintext connection admitted only because the port's STRICT is report-only.
    would_reset: Option<bool>,
    policy: Option<String>,
    rule: Option<u32>,
    dry_run: Option<DryRunSpec>,
}

impl<'de> Deserialize<'de> for Outcome {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match s.as_str() {
            "allow" => Ok(Outcome::Allow),
            "deny" => Ok(Outcome::Deny),
            "reset" => Ok(Outcome::Reset),
            other => Err(serde::de::Error::custom(format!(
                "expected allow, deny or reset, found {other:?}"
            ))),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DryRunSpec {
    allow: Option<ShadowSpec>,
    deny: Option<ShadowSpec>,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "lowercase")]
enum ShadowSpec {
    Allowed,
    Denied,
    None,
}

impl ShadowSpec {
    fn as_str(self) -> &'static str {
        match self {
            ShadowSpec::Allowed => "allowed",
            ShadowSpec::Denied => "denied",
            ShadowSpec::None => "none",
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct TrafficSpec {
    port: Option<u16>,
    principal: Option<String>,
    plaintext: Option<bool>,
    source_ip: Option<IpAddr>,
    remote_ip: Option<IpAddr>,
    destination_ip: Option<IpAddr>,
    sni: Option<String>,
    method: Option<String>,
    path: Option<String>,
    host: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, OneOrMany>,
    jwt: Option<Value>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// One case's result.
struct CaseResult {
    name: String,
    /// `expected`, `got` per field that differs.
    mismatches: Vec<(String, String, String)>,
    got: Value,
    expected: Value,
}

/// One case file's results, or why it could not run.
struct FileResult {
    file: String,
    cases: Vec<CaseResult>,
    filtered_out: usize,
    error: Option<String>,
}

pub struct Options<'a> {
    pub filter: Option<&'a str>,
    pub junit: Option<&'a Path>,
    pub json: bool,
}

/// Runs every case file; the exit status is 0 when every case passed.
pub fn run(files: &[String], opts: &Options<'_>) -> Result<(), ()> {
    let results: Vec<FileResult> = files.iter().map(|f| run_file(f, opts)).collect();
    let passed = count(&results, true);
    let failed = count(&results, false);
    let broken = results.iter().filter(|r| r.error.is_some()).count();
    let filtered: usize = results.iter().map(|r| r.filtered_out).sum();
    if opts.json {
        println!("{}", to_json(&results, passed, failed));
    } else {
        for r in &results {
            if let Some(e) = &r.error {
                println!("ERROR {}: {e}", r.file);
                continue;
            }
            for c in &r.cases {
                if c.mismatches.is_empty() {
                    println!("PASS  {}: {}", r.file, c.name);
                } else {
                    println!("FAIL  {}: {}", r.file, c.name);
                    for (field, want, got) in &c.mismatches {
                        println!("        {field}:");
                        println!("          expected: {want}");
                        println!("          got:      {got}");
                    }
                    if let Some(reason) = c.got.get("reason").and_then(Value::as_str) {
                        println!("        decided by: {reason}");
                    }
                }
            }
        }
        let mut tail = String::new();
        if filtered > 0 {
            tail.push_str(&format!(" ({filtered} filtered out)"));
        }
        if broken > 0 {
            tail.push_str(&format!(" ({broken} case file(s) could not run)"));
        }
        println!("{passed} passed, {failed} failed{tail}");
    }
    if let Some(path) = opts.junit {
        if let Err(e) = std::fs::write(path, junit(&results)) {
            eprintln!("error: --junit {}: {e}", path.display());
            return Err(());
        }
    }
    if failed == 0 && broken == 0 {
        Ok(())
    } else {
        Err(())
    }
}

fn count(results: &[FileResult], passed: bool) -> usize {
    results
        .iter()
        .flat_map(|r| &r.cases)
        .filter(|c| c.mismatches.is_empty() == passed)
        .count()
}

fn run_file(file: &str, opts: &Options<'_>) -> FileResult {
    let mut result = FileResult {
        file: file.to_string(),
        cases: Vec::new(),
        filtered_out: 0,
        error: None,
    };
    match load_and_run(file, opts, &mut result) {
        Ok(()) => {}
        Err(e) => result.error = Some(e),
    }
    result
}

fn load_and_run(file: &str, opts: &Options<'_>, out: &mut FileResult) -> Result<(), String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("cannot read: {e}"))?;
    let spec: CaseFile =
        serde_yaml_ng::from_str(&text).map_err(|e| format!("not a case file: {e}"))?;
    let base = Path::new(file).parent().unwrap_or(Path::new("."));
    let mut inputs: Vec<(String, String)> = Vec::new();
    for (i, p) in spec.policies.iter().enumerate() {
        match p {
            PolicySource::Path(path) => {
                let full: PathBuf = base.join(path);
                let text = std::fs::read_to_string(&full)
                    .map_err(|e| format!("policies[{i}]: {}: cannot read: {e}", full.display()))?;
                inputs.push((full.display().to_string(), text));
            }
            PolicySource::Inline(Inline { inline }) => {
                inputs.push((format!("{file}: policies[{i}] (inline)"), inline.clone()));
            }
        }
    }
    let set = crate::load_inputs(&inputs, &spec.workload.namespace, &mut Vec::new())
        .ok_or_else(|| "the policies do not load (errors above)".to_string())?;
    let defaults = MeshConfig::default();
    let mesh = MeshConfig {
        root_namespace: spec.mesh.root_namespace.unwrap_or(defaults.root_namespace),
        trust_domain: spec.mesh.trust_domain.unwrap_or(defaults.trust_domain),
        trust_domain_aliases: spec.mesh.trust_domain_aliases,
    };
    let workload = Workload {
        namespace: spec.workload.namespace,
        labels: spec.workload.labels,
    };
    let engine = match Engine::compile(&set, &workload, &mesh) {
        Ok((e, warnings)) => {
            crate::print_diagnostics(file, &warnings);
            e
        }
        Err(d) => {
            crate::print_diagnostics(file, &d);
            return Err("the policies do not compile for this workload (errors above)".into());
        }
    };
    let mut names = std::collections::BTreeSet::new();
    for (i, case) in spec.cases.iter().enumerate() {
        if !names.insert(case.name.as_str()) {
            return Err(format!("cases[{i}]: duplicate name {:?}", case.name));
        }
        let traffic = traffic(case).map_err(|e| format!("cases[{i}] ({}): {e}", case.name))?;
        if opts.filter.is_some_and(|f| !case.name.contains(f)) {
            out.filtered_out += 1;
            continue;
        }
        let ev = evaluate(&engine, &traffic);
        out.cases.push(compare(&engine, case, &ev));
    }
    Ok(())
}

fn traffic(case: &Case) -> Result<Traffic, String> {
    let (spec, tcp) = match (&case.request, &case.connection) {
        (Some(r), None) => (r, false),
        (None, Some(c)) => (c, true),
        _ => return Err("give exactly one of `request` (HTTP) or `connection` (TCP)".into()),
    };
    if tcp
        && (spec.method.is_some()
            || spec.path.is_some()
            || spec.host.is_some()
            || !spec.headers.is_empty()
            || spec.jwt.is_some())
    {
        return Err(
            "a `connection` has no method, path, host, headers or jwt (use `request`)".into(),
        );
    }
    let principal = match (&spec.principal, spec.plaintext) {
        (Some(_), Some(true)) => {
            return Err("`principal` and `plaintext: true` contradict each other".into())
        }
        (None, Some(false)) => {
            return Err("`plaintext: false` needs a `principal` (the mTLS peer identity)".into())
        }
        (p, _) => p.clone(),
    };
    let mut headers = Vec::new();
    for (name, v) in &spec.headers {
        let name = name.to_ascii_lowercase();
        match v {
            OneOrMany::One(v) => headers.push((name, v.clone())),
            OneOrMany::Many(vs) => headers.extend(vs.iter().map(|v| (name.clone(), v.clone()))),
        }
    }
    Ok(Traffic {
        tcp,
        port: spec.port,
        principal,
        source_ip: spec.source_ip,
        remote_ip: spec.remote_ip,
        destination_ip: spec.destination_ip,
        sni: spec.sni.clone(),
        host: spec.host.clone(),
        method: spec.method.clone().unwrap_or_else(|| "GET".into()),
        path: spec.path.clone().unwrap_or_else(|| "/".into()),
        headers,
        jwt: spec.jwt.clone(),
    })
}

fn compare(engine: &Engine, case: &Case, ev: &Evaluation) -> CaseResult {
    let mut mismatches = Vec::new();
    let mut expected = serde_json::Map::new();
    let mut check = |field: &str, want: String, got: String| {
        expected.insert(field.to_string(), json!(want));
        if want != got {
            mismatches.push((field.to_string(), want, got));
        }
    };
    check(
        "outcome",
        case.expect.as_str().into(),
        ev.outcome.as_str().into(),
    );
    if let Some(want) = case.would_reset {
        check("wouldReset", want.to_string(), ev.would_reset().to_string());
    }
    let d = ev.decision.as_ref();
    if let Some(want) = case.audit {
        let got = d.is_some_and(|d| d.access_log_hint());
        check("audit", want.to_string(), got.to_string());
    }
    let deciding = d.and_then(|d| d.deciding_rule());
    if let Some(want) = &case.policy {
        let got = match (deciding, d.map(|d| d.cause)) {
            (Some(r), _) => policy_of(engine, r),
            (None, Some(Cause::NoAllowRuleMatched)) => "none (no ALLOW rule matched)".into(),
            (None, Some(_)) => "none (no ALLOW policy applies)".into(),
            (None, None) => "none (reset before authorization)".into(),
        };
        check("policy", want.clone(), got);
    }
    if let Some(want) = case.rule {
        let got = deciding.map_or_else(|| "none".to_string(), |r| r.rule.to_string());
        check("rule", want.to_string(), got);
    }
    if let Some(dr) = &case.dry_run {
        for (label, want, got) in [
            ("dryRun.allow", dr.allow, d.and_then(|d| d.shadow_allow)),
            ("dryRun.deny", dr.deny, d.and_then(|d| d.shadow_deny)),
        ] {
            if let Some(want) = want {
                let got = match got {
                    None => ShadowSpec::None,
                    Some(s) if s.allowed => ShadowSpec::Allowed,
                    Some(_) => ShadowSpec::Denied,
                };
                check(label, want.as_str().into(), got.as_str().into());
            }
        }
    }
    CaseResult {
        name: case.name.clone(),
        mismatches,
        got: ev.to_json(engine),
        expected: Value::Object(expected),
    }
}

fn to_json(results: &[FileResult], passed: usize, failed: usize) -> Value {
    json!({
        "passed": passed,
        "failed": failed,
        "files": results.iter().map(|r| json!({
            "file": r.file,
            "error": r.error,
            "filteredOut": r.filtered_out,
            "cases": r.cases.iter().map(|c| json!({
                "name": c.name,
                "passed": c.mismatches.is_empty(),
                "expected": c.expected,
                "got": c.got,
                "mismatches": c.mismatches.iter().map(|(f, w, g)| json!({"field": f, "expected": w, "got": g})).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if (c as u32) < 0x20 && c != '\n' && c != '\t' && c != '\r' => {}
            c => out.push(c),
        }
    }
    out
}

/// JUnit XML: one `testsuite` per case file, one `testcase` per case; a case file that cannot
/// run is one `testcase` with an `error`.
fn junit(results: &[FileResult]) -> String {
    let total = results
        .iter()
        .map(|r| r.cases.len() + usize::from(r.error.is_some()))
        .sum::<usize>();
    let failures = count(results, false);
    let errors = results.iter().filter(|r| r.error.is_some()).count();
    let mut x = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"meshauthz test\" tests=\"{total}\" failures=\"{failures}\" errors=\"{errors}\">\n"
    );
    for r in results {
        let file = xml_escape(&r.file);
        let failed = r.cases.iter().filter(|c| !c.mismatches.is_empty()).count();
        x.push_str(&format!(
            "  <testsuite name=\"{file}\" tests=\"{}\" failures=\"{failed}\" errors=\"{}\" skipped=\"0\">\n",
            r.cases.len() + usize::from(r.error.is_some()),
            usize::from(r.error.is_some())
        ));
        if let Some(e) = &r.error {
            x.push_str(&format!(
                "    <testcase classname=\"{file}\" name=\"(case file)\"><error message=\"{}\"/></testcase>\n",
                xml_escape(e)
            ));
        }
        for c in &r.cases {
            let name = xml_escape(&c.name);
            if c.mismatches.is_empty() {
                x.push_str(&format!(
                    "    <testcase classname=\"{file}\" name=\"{name}\"/>\n"
                ));
            } else {
                let summary: Vec<String> = c
                    .mismatches
                    .iter()
                    .map(|(f, w, g)| format!("{f}: expected {w}, got {g}"))
                    .collect();
                let reason = c.got.get("reason").and_then(Value::as_str).unwrap_or("");
                x.push_str(&format!(
                    "    <testcase classname=\"{file}\" name=\"{name}\"><failure message=\"{}\">{}\ndecided by: {}</failure></testcase>\n",
                    xml_escape(&summary.join("; ")),
                    xml_escape(&summary.join("\n")),
                    xml_escape(reason)
                ));
            }
        }
        x.push_str("  </testsuite>\n");
    }
    x.push_str("</testsuites>\n");
    x
}
