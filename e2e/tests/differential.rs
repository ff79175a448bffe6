//! Differential test: the policy engine against Envoy's own RBAC filters as istiod generates
//! them, on Istio's builder goldens (`shared/istio-testdata/.../authz/builder/testdata`).
//!
//! Per golden, a real Envoy 1.40 runs the generated RBAC filters; requests built from the
//! policies' own values go through it; the engine evaluates the same requests from the golden's
//! input policies; every disagreement (allowed/denied, which filter denied, AUDIT hint, dry-run
//! shadow results) is reported in one failure message per chain (HTTP, TCP). Needs the Envoy
//! binary, not the module.
//!
//! Besides the goldens as written, projections (`differential::projection`) keep one field of a
//! rule on both sides, because most golden rules can never match on the wire and would hide how
//! each wildcard form is matched.
//!
//! Not exercised (absent on both sides, still compared): JWT-derived attributes (no jwt_authn),
//! `experimental.envoy.filters.*` metadata, `source.ip`/`ipBlocks` and `destination.ip` other
//! than 127.0.0.1, methods Envoy's HTTP/1 codec refuses (lower-case or unknown: 400 before any
//! filter). `remote.ip`/`remoteIpBlocks` are exercised through `X-Forwarded-For`. Ports the
//! goldens name are rewritten to free loopback ports on both sides (`differential::ports`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test helpers outside #[test] functions fail by panicking"
)]

use std::io::Write as _;

use meshauthz_e2e::differential::golden::{self, Chain};
use meshauthz_e2e::differential::{self as diff, Run};

/// Disagreements that are documented and expected, with the reason and its evidence:
/// (golden, a substring of the disagreement line, reason). Empty: the goldens come from an Istio
/// snapshot after the regex-quoting fix (istio-semantics.md §5), which the engine follows, so no
/// quoting difference is expected; anything else found is a finding, not an expected difference.
const EXPECTED_DIFFERENCES: &[(&str, &str, &str)] = &[];

/// Upper bound on requests per chain, so the test stays bounded as goldens are added.
const MAX_PROBES: usize = 2500;

/// Istio's goldens live in `shared/` beside the repository. Without them (a bare clone) the
/// tests of this file return without running, and one line (once per run) says so.
fn goldens_present() -> bool {
    let missing = golden::shared_dir().err();
    if let Some(e) = &missing {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            // Straight to stderr: the test harness captures `eprintln!` of passing tests.
            let _ = writeln!(
                std::io::stderr(),
                "e2e/tests/differential.rs: not run (the differential test against Envoy RBAC on \
                 Istio's goldens): {e}"
            );
        });
    }
    missing.is_none()
}

fn run_chain(chain: Chain) -> Vec<Run> {
    let (mut goldens, skipped) = golden::discover().unwrap();
    goldens.extend(diff::projection::projections().unwrap());
    for s in &skipped {
        eprintln!("differential: skipped {}: {}", s.name, s.reason);
    }
    let goldens: Vec<_> = goldens.into_iter().filter(|g| g.chain == chain).collect();
    let mut runs = Vec::new();
    for g in &goldens {
        let run = diff::run(g, None).unwrap_or_else(|e| panic!("{}: {e}", g.name));
        let allowed = run
            .records
            .iter()
            .filter(|r| r.observed.allowed == Some(true))
            .count();
        eprintln!(
            "differential: {}: {} probes{} ({allowed} allowed by Envoy), {} listeners, {:?}",
            run.golden,
            run.records.len(),
            if run.generated > run.records.len() {
                format!(" (sampled from {})", run.generated)
            } else {
                String::new()
            },
            run.listeners.len(),
            run.elapsed
        );
        for s in &run.skipped {
            eprintln!("differential:   not exercised: {s}");
        }
        if std::env::var_os("MESHAUTHZ_DIFF_VERBOSE").is_some() {
            for r in &run.records {
                eprintln!(
                    "differential:   {} -> engine {} ({}), Envoy {}",
                    r.describe(),
                    if r.expected.allowed { "allow" } else { "deny" },
                    r.expected.cause,
                    r.observed.what
                );
            }
        }
        runs.push(run);
    }
    runs
}

fn assert_agreement(runs: &[Run], min_goldens: usize) {
    assert!(
        runs.len() >= min_goldens,
        "only {} goldens found, expected at least {min_goldens}",
        runs.len()
    );
    let total: usize = runs.iter().map(|r| r.records.len()).sum();
    assert!(total <= MAX_PROBES, "{total} probes: keep the test bounded");
    let mut unexpected = Vec::new();
    let mut expected = Vec::new();
    for run in runs {
        for line in run.disagreements() {
            match EXPECTED_DIFFERENCES
                .iter()
                .find(|(g, needle, _)| *g == run.golden && line.contains(needle))
            {
                Some((_, _, why)) => expected.push(format!("{line}\n    expected: {why}")),
                None => unexpected.push(line),
            }
        }
    }
    for e in &expected {
        eprintln!("differential: documented difference: {e}");
    }
    assert!(
        unexpected.is_empty(),
        "{} disagreement(s) between the engine and Envoy RBAC over {total} probes \
         (MESHAUTHZ_DIFF_VERBOSE=1 lists every probe with both answers):\n{}",
        unexpected.len(),
        unexpected.join("\n")
    );
}

#[test]
fn http_goldens_agree_with_envoy_rbac() {
    if !goldens_present() {
        return;
    }
    let runs = run_chain(Chain::Http);
    // 17 goldens, 18 + 4 projections of allow-full-rule, 2 of the trust-domain goldens.
    assert_agreement(&runs, 17 + 22 + 2);
}

#[test]
fn tcp_goldens_agree_with_envoy_rbac() {
    if !goldens_present() {
        return;
    }
    let runs = run_chain(Chain::Tcp);
    // 5 goldens, 9 + 2 + 2 projections on a network RBAC filter.
    assert_agreement(&runs, 5 + 13);
}

/// The comparison can fail: a deliberately wrong expectation on one known request is reported
/// (and only that one), and an engine fed other policies than Envoy's disagrees on every request.
#[test]
fn self_check_detects_wrong_expectations() {
    if !goldens_present() {
        return;
    }
    let golden = golden::by_name("http/deny-and-allow").unwrap();
    let mut run = diff::run(&golden, None).unwrap();
    assert!(
        run.disagreements().is_empty(),
        "{}",
        run.disagreements().join("\n")
    );
    // The request from spiffe://allow is the one the ALLOW policy admits on both sides.
    let known = run
        .records
        .iter_mut()
        .find(|r| {
            matches!(&r.probe.peer, meshauthz_e2e::differential::probe::Peer::Mtls { identity, .. }
                if identity == "spiffe://allow")
                && r.probe
                    .http
                    .as_ref()
                    .is_some_and(|h| h.path == "/diff-neutral")
        })
        .expect("a probe from spiffe://allow");
    assert_eq!(known.observed.allowed, Some(true), "{known:?}");
    assert!(known.expected.allowed, "{known:?}");
    known.expected.allowed = false;
    known.expected.cause = "deliberately wrong".into();
    let lines = run.disagreements();
    assert_eq!(lines.len(), 1, "{}", lines.join("\n"));
    assert!(
        lines[0].contains("spiffe://allow")
            && lines[0].contains("engine DENIES (deliberately wrong), Envoy ALLOWS"),
        "{}",
        lines[0]
    );

    // Envoy denies everything (allow-nil-rule: an ALLOW policy without rules); the engine is
    // given allow-empty-rule's policy (allow everything): every request must disagree.
    let deny_all = golden::by_name("http/allow-nil-rule").unwrap();
    let allow_all = golden::by_name("http/allow-empty-rule").unwrap();
    let run = diff::run(&deny_all, Some(&allow_all.input)).unwrap();
    assert!(!run.records.is_empty());
    let lines = run.disagreements();
    assert_eq!(lines.len(), run.records.len(), "{}", lines.join("\n"));
    assert!(
        lines
            .iter()
            .all(|l| l.contains("engine ALLOWS") && l.contains("Envoy DENIES")),
        "{}",
        lines.join("\n")
    );

    // The audit hint and the dry-run shadow result are compared too.
    let mut run = diff::run(&golden::by_name("http/audit-full-rule").unwrap(), None).unwrap();
    assert!(
        run.disagreements().is_empty(),
        "{}",
        run.disagreements().join("\n")
    );
    let first = &mut run.records[0];
    assert_eq!(first.observed.hint, Some(true), "{first:?}");
    first.expected.hint = Some(false);
    let lines = run.disagreements();
    assert_eq!(lines.len(), 1, "{}", lines.join("\n"));
    assert!(
        lines[0].contains("access_log_hint: engine Some(false), Envoy Some(true)"),
        "{}",
        lines[0]
    );

    let mut run = diff::run(&golden::by_name("http/dry-run-mix").unwrap(), None).unwrap();
    assert!(
        run.disagreements().is_empty(),
        "{}",
        run.disagreements().join("\n")
    );
    let first = &mut run.records[0];
    assert!(first.observed.shadow[0].is_some(), "{first:?}");
    first.expected.shadow[0] = None;
    let lines = run.disagreements();
    assert_eq!(lines.len(), 1, "{}", lines.join("\n"));
    assert!(
        lines[0].contains("istio_dry_run_allow_shadow: engine None"),
        "{}",
        lines[0]
    );
}
