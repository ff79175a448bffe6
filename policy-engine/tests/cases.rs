//! Runs every table-driven case in `tests/cases/*.yaml` (format: `tests/cases/README.md`).
//! Natively with `cargo test`, and in wasm32-unknown-unknown under node with wasm-bindgen-test
//! (`make test-wasm`): the files are embedded at build time by `build.rs`, so both see the same
//! cases. Every failing case is reported, then the test fails.
// `allow`, not `expect`: natively the functions are `#[test]` and clippy already permits the
// panics; under wasm32 they are `#[wasm_bindgen_test]`, which clippy does not know as tests.
#![allow(clippy::panic, reason = "a test reports failure by panicking")]

mod support;

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/case_files.rs"));
}

use embedded::CASE_FILES;
use support::cases::{case_names, run_matching};

#[cfg(target_arch = "wasm32")]
macro_rules! say {
    ($($t:tt)*) => { wasm_bindgen_test::console_log!($($t)*) };
}
#[cfg(not(target_arch = "wasm32"))]
macro_rules! say {
    ($($t:tt)*) => { println!($($t)*) };
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn every_case_matches_the_engine() {
    assert!(
        !CASE_FILES.is_empty(),
        "no case files embedded from tests/cases"
    );
    // `MESHAUTHZ_CASES=jwt cargo test --test cases` runs only the cases whose file or name
    // contains `jwt` (natively; the wasm32 run always runs everything).
    let filter = std::env::var("MESHAUTHZ_CASES").unwrap_or_default();
    let report = run_matching(CASE_FILES, &filter);
    if filter.is_empty() {
        say!("{}", report.summary());
    } else {
        say!(
            "{} (only those matching MESHAUTHZ_CASES={filter:?})",
            report.summary()
        );
    }
    if !report.failures.is_empty() {
        panic!("{}", report.details());
    }
}

/// The rows of the "tricky cases" table of istio-semantics.md §13 that the case files must cover,
/// each by a case whose name starts with the row label (`#5 ...`, `PA-1 ...`).
#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn every_tricky_case_row_is_covered() {
    let names = case_names(CASE_FILES);
    let rows = (1..=44)
        .map(|n| format!("#{n}"))
        .chain((1..=6).map(|n| format!("PA-{n}")));
    let missing: Vec<String> = rows
        .filter(|row| {
            !names.iter().any(|name| {
                name.strip_prefix(row.as_str())
                    .is_some_and(|rest| rest.starts_with([' ', 'a', 'b', 'c', 'd', 'e', 'f']))
            })
        })
        .collect();
    assert!(missing.is_empty(), "§13 rows without a case: {missing:?}");
    let mut seen = std::collections::BTreeSet::new();
    let dups: Vec<&String> = names.iter().filter(|n| !seen.insert(n.as_str())).collect();
    assert!(dups.is_empty(), "case names must be unique: {dups:?}");
    assert!(
        names.len() >= 150,
        "expected at least 150 cases, found {}",
        names.len()
    );
}

/// Built without the `cel` feature (the module `meshauthz-nocel.wasm`), a policy with a CEL
/// condition is refused when it loads, with the object, the field and the reason; the decision
/// cases without CEL run above, unchanged.
#[cfg(not(feature = "cel"))]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn cel_is_refused_with_its_field_without_the_feature() {
    let doc = serde_json::json!({
        "apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
        "metadata": {"name": "tenant", "namespace": "shop"},
        "spec": {"rules": [{"when": [{"key": policy_engine::cel::CEL_CONDITION_KEY,
                                       "values": ["request.path == '/a'"]}]}]}});
    let Err(errors) = policy_engine::load_value(&doc, &policy_engine::LoadOptions::default())
    else {
        panic!("a CEL condition loaded without the cel feature");
    };
    let text = errors.to_string();
    assert!(text.contains("shop/tenant"), "{text}");
    assert!(text.contains("spec.rules[0].when[0].values[0]"), "{text}");
    assert!(text.contains(policy_engine::cel::WITHOUT_CEL), "{text}");
}
