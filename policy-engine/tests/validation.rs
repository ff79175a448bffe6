//! Validation cases kept as data (`tests/validation/*.yaml`), and Istio's own validation
//! fixtures from `../shared/istio-testdata`.
//!
//! A case file holds one or more YAML documents, each:
//!
//! ```yaml
//! name: what the case shows
//! input: |            # the objects as YAML/JSON text (load_str) ...
//!   apiVersion: security.istio.io/v1
//!   ...
//! # input: [{...}]    # ... or as a list of objects (load_value, the filter's path)
//! expect:             # every diagnostic expected; any other error or warning fails the case
//!   - severity: error             # error | warning
//!     object: AuthorizationPolicy default/a   # optional, `kind namespace/name`
//!     path: spec.rules[0]                     # optional, exact
//!     message: must not be empty              # substring of the message
//! ```
//!
//! An empty `expect` means the input must load with no diagnostic at all.

// The cases are YAML text: without the `yaml` feature `load_str` reads JSON only.
#![cfg(feature = "yaml")]
#![expect(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers outside #[test] functions fail by panicking"
)]

use std::io::Write as _;
use std::path::{Path, PathBuf};

use policy_engine::{load_str, load_value, Diagnostic, Diagnostics, LoadOptions, Severity};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    input: serde_json::Value,
    #[serde(default)]
    expect: Vec<Expected>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Expected {
    severity: String,
    #[serde(default)]
    object: Option<String>,
    #[serde(default)]
    path: Option<String>,
    message: String,
}

impl Expected {
    fn matches(&self, d: &Diagnostic) -> bool {
        let severity = match d.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        severity == self.severity
            && self
                .object
                .as_ref()
                .is_none_or(|o| d.object.as_ref().is_some_and(|obj| obj.to_string() == *o))
            && self.path.as_ref().is_none_or(|p| d.path == *p)
            && d.message.contains(&self.message)
    }
}

fn load(input: &serde_json::Value) -> Diagnostics {
    let opts = LoadOptions::default();
    let result = match input {
        serde_json::Value::String(text) => load_str(text, &opts),
        other => load_value(other, &opts),
    };
    match result {
        Ok((_, warnings)) => {
            assert!(
                !warnings.has_errors(),
                "Ok result carries errors: {warnings}"
            );
            warnings
        }
        Err(diagnostics) => {
            assert!(
                diagnostics.has_errors(),
                "Err result without an error: {diagnostics}"
            );
            diagnostics
        }
    }
}

fn case_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/validation");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

fn documents(text: &str) -> Vec<serde_json::Value> {
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|doc| serde_json::Value::deserialize(doc).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

#[test]
fn validation_cases() {
    let files = case_files();
    assert!(!files.is_empty(), "no case files in tests/validation");
    let mut failures = Vec::new();
    let mut count = 0;
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for doc in documents(&text) {
            let case: Case = serde_json::from_value(doc)
                .unwrap_or_else(|e| panic!("{}: bad case: {e}", file.display()));
            count += 1;
            let got = load(&case.input);
            let label = format!(
                "{} / {}",
                file.file_name().unwrap().to_string_lossy(),
                case.name
            );
            for e in &case.expect {
                if !got.0.iter().any(|d| e.matches(d)) {
                    failures.push(format!("{label}: missing {e:?}\n  got:\n{got}"));
                }
            }
            for d in &got.0 {
                if !case.expect.iter().any(|e| e.matches(d)) {
                    failures.push(format!("{label}: unexpected {d}"));
                }
            }
        }
    }
    assert!(count >= 20, "only {count} cases found");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The tests of this file that read Istio's test data.
const SHARED_TESTS: &str =
    "istio_validation_dataset_loads, istio_crd_fixtures, istio_golden_inputs_load";

/// `shared/` (Istio's test data): `$MESHAUTHZ_SHARED_DIR` when set (and only there), else the
/// first `shared/` beside an ancestor of the repository (CI has it next to the repository, a
/// worktree may have it further up). `None` on a bare clone: the test returns without running,
/// and one line (once per run) says which tests were not run.
fn shared_dir() -> Option<PathBuf> {
    let candidates: Vec<PathBuf> = match std::env::var_os("MESHAUTHZ_SHARED_DIR") {
        Some(dir) => vec![PathBuf::from(dir)],
        None => Path::new(env!("CARGO_MANIFEST_DIR"))
            .ancestors()
            .skip(2)
            .map(|a| a.join("shared"))
            .collect(),
    };
    let found = candidates
        .iter()
        .find(|d| d.join("istio-testdata").is_dir())
        .cloned();
    if found.is_none() {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            // Straight to stderr: the test harness captures `eprintln!` of passing tests.
            let _ = writeln!(
                std::io::stderr(),
                "policy-engine/tests/validation.rs: not run (no shared/istio-testdata beside the \
                 repository; set MESHAUTHZ_SHARED_DIR): {SHARED_TESTS}"
            );
        });
    }
    found
}

fn yaml_files(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no *{suffix} in {}", dir.display());
    files
}

/// istioctl's validation dataset: valid samples of both kinds, v1 and v1beta1.
#[test]
fn istio_validation_dataset_loads() {
    let Some(shared) = shared_dir() else {
        return;
    };
    let dir = shared.join("istio-testdata/pkg/test/datasets/validation/dataset");
    for file in yaml_files(&dir, ".yaml") {
        let text = std::fs::read_to_string(&file).unwrap();
        let (set, _warnings) = load_str(&text, &LoadOptions::default())
            .unwrap_or_else(|d| panic!("{} must load:\n{d}", file.display()));
        assert_eq!(
            set.authorization_policies.len() + set.peer_authentications.len(),
            1,
            "{}",
            file.display()
        );
    }
}

/// The API server's message (`_err`) and the one Istio's webhook gives for the same problem;
/// meshauthz reports the latter.
const WEBHOOK_EQUIVALENT: &[(&str, &str)] = &[
    (
        "Cannot set serviceAccounts with namespaces or principals",
        "cannot set serviceAccounts with namespaces or principals",
    ),
    (
        "portLevelMtls requires selector",
        "mesh/namespace peer authentication cannot have port level mTLS",
    ),
    (
        "spec.portLevelMtls in body should have at least 1 properties",
        "port level mTLS, if defined, must have at least one element",
    ),
    (
        "port must be between 1-65535",
        "port must be in range 1..65535",
    ),
];

/// The CRD (OpenAPI + CEL) fixtures: each `*-invalid.yaml` document is refused with the matching
/// message, each `*-valid.yaml` document loads.
#[test]
fn istio_crd_fixtures() {
    let Some(shared) = shared_dir() else {
        return;
    };
    let dir = shared.join("istio-testdata/pkg/config/validation/testdata/crds");
    let mut invalid = 0;
    for file in yaml_files(&dir, "-invalid.yaml") {
        for mut doc in documents(&std::fs::read_to_string(&file).unwrap()) {
            let expected = doc
                .as_object_mut()
                .and_then(|m| m.remove("_err"))
                .and_then(|e| e.as_str().map(str::to_string))
                .unwrap_or_else(|| panic!("{}: document without _err", file.display()));
            let wanted = WEBHOOK_EQUIVALENT
                .iter()
                .find(|(api, _)| expected.contains(api))
                .map_or(expected.as_str(), |(_, webhook)| webhook);
            let name = doc["metadata"]["name"].clone();
            match load_value(&doc, &LoadOptions::default()) {
                Ok(_) => panic!("{} {name}: must be refused ({expected})", file.display()),
                Err(d) => assert!(
                    d.errors().any(|e| e.message.contains(wanted)),
                    "{} {name}: expected an error containing {wanted:?}, got:\n{d}",
                    file.display()
                ),
            }
            invalid += 1;
        }
    }
    assert!(invalid >= 7, "only {invalid} invalid fixtures");
    for file in yaml_files(&dir, "-valid.yaml") {
        for doc in documents(&std::fs::read_to_string(&file).unwrap()) {
            if let Err(d) = load_value(&doc, &LoadOptions::default()) {
                panic!(
                    "{} {}: must load:\n{d}",
                    file.display(),
                    doc["metadata"]["name"]
                );
            }
        }
    }
}

/// The inputs of Istio's builder and ambient golden tests: all valid for Istio. They load,
/// except CUSTOM policies, which meshauthz refuses (and only for that reason).
#[test]
fn istio_golden_inputs_load() {
    let Some(shared) = shared_dir() else {
        return;
    };
    let shared = shared.join("istio-testdata/pilot/pkg");
    let dirs = [
        "security/authz/builder/testdata/http",
        "security/authz/builder/testdata/tcp",
        "serviceregistry/ambient/testdata",
    ];
    let mut loaded = 0;
    for dir in dirs {
        for file in yaml_files(&shared.join(dir), "-in.yaml") {
            let text = std::fs::read_to_string(&file).unwrap();
            match load_str(&text, &LoadOptions::default()) {
                Ok((set, _)) => {
                    assert!(
                        !set.authorization_policies.is_empty()
                            || !set.peer_authentications.is_empty(),
                        "{}: nothing loaded",
                        file.display()
                    );
                    loaded += 1;
                }
                Err(d) => {
                    let custom = file
                        .file_name()
                        .unwrap()
                        .to_string_lossy()
                        .starts_with("custom-");
                    assert!(
                        custom
                            && d.errors().all(|e| e.path == "spec.action"
                                && e.message.starts_with("CUSTOM action is not supported")),
                        "{} must load:\n{d}",
                        file.display()
                    );
                }
            }
        }
    }
    assert!(loaded >= 30, "only {loaded} golden inputs loaded");
}
