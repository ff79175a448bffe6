//! CEL conformance, kept as data: every case of `tests/cel_conformance/*.yaml` (format and sources:
//! `tests/cel_conformance/README.md`) is compiled and evaluated through the public API, and its
//! outcome compared with what the CEL specification says.
//!
//! Every case runs; each mismatch is printed on one line (file, source, expression, expected, got)
//! and the test fails at the end with the count. A compile or an evaluation that panics counts as a
//! failure (a panic would trap the Wasm VM). Cases marked `known_parser_bug: true` (none
//! today: the 90 divergences of cel-parser 0.10 went with it) or `known_engine_bug` are run too and
//! must still diverge, so that a fix is noticed (then remove the flag).
//!
//! Natively with `cargo test`, and in wasm32-unknown-unknown under node with wasm-bindgen-test
//! (`make test-wasm`), as the module evaluates CEL: the files are embedded at build time by
//! `build.rs`. (In wasm32 a panic aborts the run instead of being counted: it fails all the same.)
// `allow`, not `expect`: natively the function is a `#[test]` and clippy already permits the
// panics; under wasm32 it is a `#[wasm_bindgen_test]`, which clippy does not know as a test.
#![allow(
    clippy::panic,
    clippy::unwrap_used,
    reason = "a test reports failure by panicking"
)]

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/cel_conformance_files.rs"));
}

#[cfg(target_arch = "wasm32")]
macro_rules! say {
    ($($t:tt)*) => { wasm_bindgen_test::console_log!($($t)*) };
}
#[cfg(not(target_arch = "wasm32"))]
macro_rules! say {
    ($($t:tt)*) => { println!($($t)*) };
}

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};

use policy_engine::cel::CelExpression;
use policy_engine::{Attributes, HttpAttributes};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseFile {
    description: String,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    /// The CEL expression, as a policy author writes it.
    expr: String,
    /// Where the case comes from: `cel-spec <file>.textproto <section>/<test>`,
    /// `cel-go parser_test.go ...`, or `meshauthz` for the engine's own refusals.
    source: String,
    /// The expression evaluates to this bool.
    expect: Option<bool>,
    /// The expression does not compile; the message contains this.
    compile_error: Option<String>,
    /// The expression compiles, and its evaluation fails with a message containing this.
    eval_error: Option<String>,
    /// The expression fails, at compile time or at evaluation (the specification's `eval_error`
    /// for a type error that a type checker finds first); the message contains this.
    error: Option<String>,
    /// Fails today in the parse step (see the README): must still fail.
    #[serde(default)]
    known_parser_bug: bool,
    /// Fails today for another reason (the interpreter, the compiler): what diverges. Must still
    /// fail, like `known_parser_bug`.
    known_engine_bug: Option<String>,
    /// Free text for the reader (why this case, what the spec says).
    #[serde(default)]
    #[expect(
        dead_code,
        reason = "documentation in the data, not read by the runner"
    )]
    note: Option<String>,
}

enum Expected {
    Value(bool),
    CompileError(String),
    EvalError(String),
    AnyError(String),
}

impl fmt::Display for Expected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expected::Value(b) => write!(f, "{b}"),
            Expected::CompileError(s) => write!(f, "compile error containing {s:?}"),
            Expected::EvalError(s) => write!(f, "evaluation error containing {s:?}"),
            Expected::AnyError(s) => write!(f, "an error containing {s:?}"),
        }
    }
}

enum Outcome {
    Value(bool),
    CompileError(String),
    EvalError(String),
    Panic(&'static str, String),
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Value(b) => write!(f, "{b}"),
            Outcome::CompileError(s) => write!(f, "compile error {s:?}"),
            Outcome::EvalError(s) => write!(f, "evaluation error {s:?}"),
            Outcome::Panic(stage, s) => write!(f, "PANIC in {stage}: {s:?}"),
        }
    }
}

impl Case {
    fn expected(&self) -> Result<Expected, String> {
        let given = [
            self.expect.map(Expected::Value),
            self.compile_error.clone().map(Expected::CompileError),
            self.eval_error.clone().map(Expected::EvalError),
            self.error.clone().map(Expected::AnyError),
        ];
        let mut given = given.into_iter().flatten();
        match (given.next(), given.next()) {
            (Some(e), None) => Ok(e),
            _ => Err(
                "needs exactly one of `expect`, `compile_error`, `eval_error`, `error`".to_string(),
            ),
        }
    }
}

fn matches(expected: &Expected, got: &Outcome) -> bool {
    match (expected, got) {
        (Expected::Value(e), Outcome::Value(g)) => e == g,
        (Expected::CompileError(e), Outcome::CompileError(g))
        | (Expected::EvalError(e), Outcome::EvalError(g))
        | (Expected::AnyError(e), Outcome::CompileError(g) | Outcome::EvalError(g)) => {
            g.contains(e.as_str())
        }
        _ => false,
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(non-string panic payload)".to_string())
}

fn run(expr: &str, attrs: &Attributes<'_>) -> Outcome {
    let compiled = match catch_unwind(|| CelExpression::compile(expr)) {
        Err(payload) => return Outcome::Panic("compile", panic_message(&*payload)),
        Ok(Err(e)) => return Outcome::CompileError(e),
        Ok(Ok(c)) => c,
    };
    match catch_unwind(AssertUnwindSafe(|| compiled.evaluate(attrs))) {
        Err(payload) => Outcome::Panic("evaluate", panic_message(&*payload)),
        Ok(Err(e)) => Outcome::EvalError(e.to_string()),
        Ok(Ok(b)) => Outcome::Value(b),
    }
}

fn ip(s: &str) -> Option<IpAddr> {
    Some(s.parse().unwrap())
}

#[derive(Default)]
struct Tally {
    cases: usize,
    passed: usize,
    parser_bugs: usize,
    engine_bugs: usize,
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn cel_follows_the_specification() {
    // On the test thread's default stack: meshauthz's own parser needs no large one (cel-parser's
    // ANTLR parser did, in a debug build).
    run_every_case();
}

fn run_every_case() {
    // The one request every case is evaluated against (README: "Attributes"). Most cases are
    // constant expressions; the others read these attributes (maps, `has()`, JWT claims).
    let claims = serde_json::json!({
        "iss": "https://issuer.example",
        "sub": "alice",
        "groups": ["admin", "dev"],
        "org": {"id": 7, "name": "acme"},
        "active": true
    });
    let headers = [("x-tenant", "tenant-a"), ("x-empty", "")];
    let attrs = Attributes {
        principal: Some("spiffe://cluster.local/ns/tenant-a/sa/admin"),
        mtls: true,
        source_ip: ip("10.1.2.3"),
        remote_ip: ip("192.0.2.7"),
        destination_ip: ip("10.9.9.9"),
        destination_port: Some(8443),
        sni: Some("api.example.com"),
        dynamic_metadata: None,
        http: Some(HttpAttributes {
            host: Some("orders.shop:8443"),
            method: Some("GET"),
            path: Some("/api/v1/orders?page=2"),
            headers: &headers,
            jwt: Some(&claims),
        }),
    };

    // `CEL_CONFORMANCE_VERBOSE=1 cargo test ... -- --nocapture` prints every case's outcome.
    let verbose =
        cfg!(not(target_arch = "wasm32")) && std::env::var_os("CEL_CONFORMANCE_VERBOSE").is_some();
    let mut failures = Vec::new();
    let mut parser_bugs = Vec::new();
    let mut engine_bugs = Vec::new();
    let mut by_file: BTreeMap<String, Tally> = BTreeMap::new();
    assert!(
        !embedded::CEL_CONFORMANCE_FILES.is_empty(),
        "no case file embedded from tests/cel_conformance"
    );
    for (name, text) in embedded::CEL_CONFORMANCE_FILES {
        let name = name.to_string();
        let file: CaseFile =
            serde_yaml_ng::from_str(text).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!file.description.is_empty(), "{name}: empty description");
        let tally = by_file.entry(name.clone()).or_default();
        for case in &file.cases {
            tally.cases += 1;
            let expected = match case.expected() {
                Ok(e) => e,
                Err(why) => {
                    failures.push(format!("{name}: {}: `{}`: {why}", case.source, case.expr));
                    continue;
                }
            };
            let got = run(&case.expr, &attrs);
            let ok = matches(&expected, &got) && !matches!(got, Outcome::Panic(..));
            if verbose {
                say!("CASE {name}: {}: `{}`: {got}", case.source, case.expr);
            }
            let known = if case.known_parser_bug {
                tally.parser_bugs += 1;
                Some(("known_parser_bug", &mut parser_bugs))
            } else if case.known_engine_bug.is_some() {
                tally.engine_bugs += 1;
                Some(("known_engine_bug", &mut engine_bugs))
            } else {
                None
            };
            if let Some((flag, list)) = known {
                if ok {
                    failures.push(format!(
                        "{name}: {}: `{}`: marked {flag} but now gives the specified {got}: \
                         remove the flag",
                        case.source, case.expr
                    ));
                } else if matches!(got, Outcome::Panic(..)) {
                    failures.push(format!(
                        "{name}: {}: `{}`: expected {expected}, got {got}",
                        case.source, case.expr
                    ));
                } else {
                    list.push(format!(
                        "{name}: {}: `{}`: expected {expected}, got {got}",
                        case.source, case.expr
                    ));
                }
            } else if ok {
                tally.passed += 1;
            } else {
                failures.push(format!(
                    "{name}: {}: `{}`: expected {expected}, got {got}",
                    case.source, case.expr
                ));
            }
        }
    }

    let total: usize = by_file.values().map(|t| t.cases).sum();
    for (name, t) in &by_file {
        say!(
            "{name}: {} cases, {} pass, {} known parser bugs, {} known engine bugs",
            t.cases,
            t.passed,
            t.parser_bugs,
            t.engine_bugs
        );
    }
    for (what, list) in [
        ("known parser bugs", &parser_bugs),
        ("known engine bugs", &engine_bugs),
    ] {
        say!("{what}, still diverging as expected ({}):", list.len());
        for line in list {
            say!("  KNOWN {line}");
        }
    }
    for line in &failures {
        say!("FAIL {line}");
    }
    assert!(total >= 150, "expected at least 150 cases, found {total}");
    assert!(
        failures.is_empty(),
        "{} of {total} CEL conformance cases failed (lines starting with FAIL above; \
         `cargo test -p meshauthz-policy-engine --test cel_conformance -- --nocapture`)",
        failures.len()
    );
}
