//! Issue 9, as an operator meets it through the `meshauthz` binary: `test` (case files, the diff
//! on failure, `N passed, N failed`, exit status, `--junit`, `--filter`), `check` explaining
//! (RESET on a STRICT port, the ALLOW policies considered, every AUDIT rule, the PeerAuthentication
//! that set the mode), `--output json`, and exit codes that do not collide.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test helpers outside #[test] functions fail by panicking"
)]

mod common;

// In the repository's root: the sample policies' paths are relative to it.
use common::{dir, each_says, file, run_in_root as run, Out};
use serde_json::Value;

/// `meshauthz CMD --namespace foo ARGS FILE`: every object and workload here is in `foo`.
fn in_foo(cmd: &str, args: &[&str], file: &str) -> Out {
    let mut all = vec![cmd, "--namespace", "foo"];
    all.extend_from_slice(args);
    all.push(file);
    run(&all)
}

const SAMPLES: [&str; 4] = [
    "envoy-config/policies/00-mesh-permissive.yaml",
    "envoy-config/policies/10-audit-callers-outside-mesh.yaml",
    "envoy-config/policies/20-deny-admin.yaml",
    "envoy-config/policies/90-strict.yaml",
];

const POLICIES: &str = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-get, namespace: foo}
spec:
  rules:
  - to: [{operation: {methods: [GET]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-health, namespace: foo}
spec:
  rules:
  - to: [{operation: {paths: [/healthz]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: audit-a, namespace: foo}
spec:
  action: AUDIT
  rules:
  - to: [{operation: {paths: ["/x*"]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: audit-b, namespace: foo}
spec:
  action: AUDIT
  rules:
  - to: [{operation: {methods: [POST]}}]
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: ports, namespace: foo}
spec:
  selector: {matchLabels: {app: echo}}
  mtls: {mode: PERMISSIVE}
  portLevelMtls:
    9000: {mode: STRICT}
    9100: {mode: DISABLE}
"#;

fn case_file(cases: &str) -> String {
    // One file per call: the tests run in parallel.
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let policies = file(&format!("policies-{n}.yaml"), POLICIES);
    format!(
        "policies:\n- {policies}\nworkload: {{namespace: foo, labels: {{app: echo}}}}\ncases:\n{cases}"
    )
}

#[test]
fn shipped_case_files_pass_and_write_junit() {
    let junit = dir().join("shipped.xml");
    let out = run(&[
        "test",
        "envoy-config/policy-tests/permissive.yaml",
        "envoy-config/policy-tests/strict.yaml",
        "--junit",
        junit.to_str().unwrap(),
    ]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let last = out.stdout.lines().last().unwrap();
    assert!(
        last.ends_with(" passed, 0 failed") && !last.starts_with("0 "),
        "{last}"
    );
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(xml.contains("failures=\"0\""), "{xml}");
    assert!(
        xml.contains("name=\"legacy plaintext caller is reset\""),
        "{xml}"
    );
    assert_eq!(
        xml.matches("<testcase ").count(),
        out.stdout.lines().filter(|l| l.starts_with("PASS")).count()
    );
}

#[test]
fn a_failing_case_shows_a_diff_and_exits_1() {
    let f = file(
        "failing.yaml",
        &case_file(
            r#"
- name: post is allowed
  request: {method: POST, principal: spiffe://cluster.local/ns/a/sa/b, port: 8080}
  expect: allow
  policy: foo/allow-get
- name: get is allowed by allow-get
  request: {method: GET, port: 8080}
  expect: allow
  policy: foo/allow-get
  rule: 0
"#,
        ),
    );
    let junit = dir().join("failing.xml");
    let out = run(&["test", &f, "--junit", junit.to_str().unwrap()]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    let text = &out.stdout;
    assert!(text.contains("FAIL  "), "{text}");
    assert!(text.contains("post is allowed"), "{text}");
    assert!(text.contains("expected: allow"), "{text}");
    assert!(text.contains("got:      deny"), "{text}");
    assert!(
        text.contains("considered: foo/allow-get, foo/allow-health"),
        "{text}"
    );
    assert!(text.contains("PASS  "), "{text}");
    assert_eq!(text.lines().last().unwrap(), "1 passed, 1 failed");
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(xml.contains("failures=\"1\""), "{xml}");
    assert!(
        xml.contains("<failure message=\"outcome: expected allow, got deny"),
        "{xml}"
    );

    // --filter runs only the matching case.
    let out = run(&["test", &f, "--filter", "get is"]);
    assert_eq!(out.code, 0, "{}", out.stdout);
    assert_eq!(
        out.stdout.lines().last().unwrap(),
        "1 passed, 0 failed (1 filtered out)"
    );

    // JSON: the same verdicts, machine-readable.
    let out = run(&["test", &f, "--output", "json"]);
    assert_eq!(out.code, 1);
    let v = out.json();
    assert_eq!(v["passed"], 1);
    assert_eq!(v["failed"], 1);
    let case = &v["files"][0]["cases"][0];
    assert_eq!(case["passed"], false);
    assert_eq!(case["got"]["outcome"], "deny");
    assert_eq!(case["got"]["cause"], "noAllowRuleMatched");
    assert_eq!(case["mismatches"][0]["field"], "outcome");
}

#[test]
fn reset_comes_from_the_port_mode() {
    let f = file(
        "modes.yaml",
        &case_file(
            r#"
- name: plaintext on the STRICT port
  connection: {port: 9000, plaintext: true}
  expect: reset
- name: mTLS on the STRICT port is authorized
  request: {port: 9000, principal: spiffe://cluster.local/ns/a/sa/b}
  expect: allow
  policy: foo/allow-get
- name: TLS on the DISABLE port
  connection: {port: 9100, principal: spiffe://cluster.local/ns/a/sa/b}
  expect: reset
- name: plaintext on a PERMISSIVE port
  request: {port: 8080, plaintext: true, path: /x1}
  expect: allow
  audit: true
"#,
        ),
    );
    let out = run(&["test", &f]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert_eq!(out.stdout.lines().last().unwrap(), "4 passed, 0 failed");
}

const REPORT_ONLY: &str = r#"
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: foo, annotations: {meshauthz.io/strict-report-only: "8080"}}
spec: {mtls: {mode: STRICT}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-admin, namespace: foo}
spec:
  action: DENY
  rules: [{to: [{operation: {paths: [/admin]}}]}]
"#;

#[test]
fn report_only_strict_in_mode_check_and_test() {
    let f = file("report-only.yaml", REPORT_ONLY);
    let mode = |port: &str| in_foo("mode", &["--port", port], &f);
    let out = mode("8080");
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout, "STRICT (report-only)\n");
    assert_eq!(mode("9000").stdout, "STRICT\n");
    let out = in_foo("mode", &["--output", "json"], &f);
    let v = out.json();
    assert_eq!(v["default"]["reportOnly"], false);
    assert_eq!(v["ports"]["8080"]["mode"], "STRICT");
    assert_eq!(v["ports"]["8080"]["reportOnly"], true);
    assert_eq!(v["ports"]["8080"]["source"], "foo/default");
    let out = in_foo("mode", &[], &f);
    assert!(
        out.stdout.contains(
            "mTLS: port 8080 STRICT (report-only) (set by PeerAuthentication foo/default)"
        ),
        "{}",
        out.stdout
    );

    // check: a plaintext request is authorized as on PERMISSIVE, and says it would be reset.
    let check = |path: &str, port: &str| in_foo("check", &["--port", port, "--path", path], &f);
    let out = check("/x", "8080");
    assert_eq!(out.code, 0, "{}", out.stdout);
    assert!(
        out.stdout
            .starts_with("ALLOW (report-only STRICT: would RESET): "),
        "{}",
        out.stdout
    );
    let out = check("/admin", "8080");
    assert_eq!(out.code, 3, "DENY still applies: {}", out.stdout);
    assert!(
        out.stdout.starts_with(
            "DENY (report-only STRICT: would RESET): DENY rule ns[foo]-policy[deny-admin]-rule[0]"
        ),
        "{}",
        out.stdout
    );
    assert_eq!(check("/x", "9000").code, 4, "the other ports are enforced");
    let out = in_foo("check", &["--port", "8080", "--output", "json"], &f);
    let v = out.json();
    assert_eq!(v["outcome"], "allow");
    assert_eq!(v["mtlsMode"], "STRICT");
    assert_eq!(v["mtlsReportOnly"], true);
    assert_eq!(v["wouldReset"], true);
    // mTLS is not "would reset".
    let out = in_foo(
        "check",
        &[
            "--port",
            "8080",
            "--principal",
            "spiffe://cluster.local/ns/a/sa/b",
            "--output",
            "json",
        ],
        &f,
    );
    let v = out.json();
    assert_eq!(v["wouldReset"], false);

    // meshauthz test: `wouldReset` is an expectation.
    let cases = file(
        "report-only-cases.yaml",
        &format!(
            "policies: [{f}]\nworkload: {{namespace: foo}}\ncases:\n{}",
            r#"- name: legacy caller is served but would be reset
  request: {port: 8080, plaintext: true}
  expect: allow
  wouldReset: true
- name: the enforced port resets
  connection: {port: 9000, plaintext: true}
  expect: reset
- name: a wrong expectation fails
  request: {port: 8080, plaintext: true}
  expect: allow
  wouldReset: false
"#
        ),
    );
    let out = run(&["test", &cases]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("wouldReset"), "{}", out.stdout);
    assert_eq!(out.stdout.lines().last().unwrap(), "2 passed, 1 failed");

    // A malformed annotation refuses the input, naming object, field and expectation.
    let bad = file(
        "report-only-bad.yaml",
        &REPORT_ONLY.replace("\"8080\"", "\"yes\""),
    );
    each_says(
        &["validate"],
        &bad,
        1,
        &["PeerAuthentication foo/default: metadata.annotations[meshauthz.io/strict-report-only]: invalid value \"yes\""],
    );
}

#[test]
fn broken_case_files_are_refused_with_the_reason() {
    for (cases, expect) in [
        (
            "- name: x\n  request: {port: 8080}\n  expect: allow\n  polcy: foo/a\n",
            "unknown field `polcy`",
        ),
        (
            "- name: x\n  request: {port: 8080}\n  connection: {port: 8080}\n  expect: allow\n",
            "exactly one of `request`",
        ),
        (
            "- name: x\n  connection: {port: 9000, path: /a}\n  expect: allow\n",
            "a `connection` has no method, path",
        ),
        (
            "- name: x\n  request: {port: 8080}\n  expect: permit\n",
            "expected allow, deny or reset",
        ),
        (
            "- name: x\n  request: {principal: spiffe://a, plaintext: true}\n  expect: allow\n",
            "contradict",
        ),
    ] {
        let f = file(&format!("broken-{}.yaml", expect.len()), &case_file(cases));
        let out = run(&["test", &f]);
        assert_eq!(out.code, 1, "{cases}: {}", out.stdout);
        assert!(out.stdout.contains(expect), "{cases}: {}", out.stdout);
    }
    // A policy error names the policy file.
    let bad = file(
        "bad-policy.yaml",
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: a, namespace: foo}\nspec: {actoin: DENY}\n",
    );
    let f = file(
        "bad-policies.yaml",
        &format!("policies: [{bad}]\ncases:\n- name: x\n  request: {{}}\n  expect: allow\n"),
    );
    let out = run(&["test", &f]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("actoin"), "{}", out.stderr);
}

#[test]
fn check_explains_and_exit_codes_do_not_collide() {
    let p = file("check.yaml", POLICIES);
    let base = ["check", "--namespace", "foo", "--label", "app=echo"];
    let with = |extra: &[&str]| {
        let mut a: Vec<&str> = base.to_vec();
        a.extend_from_slice(extra);
        a.push(&p);
        run(&a)
    };
    // Plaintext to the STRICT port: RESET, status 4, and which PeerAuthentication set it.
    let out = with(&["--port", "9000"]);
    assert_eq!(out.code, 4, "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.starts_with("RESET: plaintext connection to port 9000 in STRICT mode (set by PeerAuthentication foo/ports)"), "{}", out.stdout);
    // A DENY because no ALLOW rule matched: status 3, the ALLOW policies considered, both AUDIT rules.
    let out = with(&["--port", "8080", "--method", "POST", "--path", "/x1"]);
    assert_eq!(out.code, 3, "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("DENY: ALLOW policies apply and none of their rules matched (considered: foo/allow-get, foo/allow-health)"), "{}", out.stdout);
    assert!(out.stdout.contains("audit: access_log_hint=true (matched: ns[foo]-policy[audit-a]-rule[0], ns[foo]-policy[audit-b]-rule[0])"), "{}", out.stdout);
    // ALLOW: status 0.
    let out = with(&["--port", "8080"]);
    assert_eq!(out.code, 0, "{}", out.stdout);
    assert!(out
        .stdout
        .starts_with("ALLOW: ALLOW rule ns[foo]-policy[allow-get]-rule[0]"));
    // Without --port: the mode of every port.
    let out = with(&[]);
    assert!(
        out.stdout
            .contains("mTLS: PERMISSIVE on ports other than 9000, 9100"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("mTLS: port 9100 DISABLE"),
        "{}",
        out.stdout
    );
    // JSON.
    let out = with(&["--port", "8080", "--method", "POST", "--output", "json"]);
    assert_eq!(out.code, 3);
    let v = out.json();
    assert_eq!(v["outcome"], "deny");
    assert_eq!(
        v["allowPoliciesConsidered"],
        serde_json::json!(["foo/allow-get", "foo/allow-health"])
    );
    assert_eq!(v["audit"]["rules"][0]["policy"], "foo/audit-b");
    assert_eq!(v["mtlsModeSource"], "foo/ports");
    assert_eq!(v["modes"]["ports"]["9000"]["mode"], "STRICT");
    // A usage error is 2, never a verdict.
    let out = with(&["--port", "notaport"]);
    assert_eq!(out.code, 2);
    let out = with(&["--jwt", "{not json"]);
    assert_eq!(out.code, 2);
    // Invalid input is 1.
    let out = run(&["check", "/nonexistent/policies.yaml"]);
    assert_eq!(out.code, 1);
}

#[test]
fn validate_and_mode_speak_json() {
    let out = run(&["validate", "--output", "json", SAMPLES[0], SAMPLES[2]]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let v = out.json();
    assert_eq!(v["valid"], true);
    assert_eq!(v["authorizationPolicies"], 1);
    assert_eq!(v["peerAuthentications"], 1);
    let bad = file(
        "invalid.yaml",
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: a, namespace: foo}\nspec: {actoin: DENY}\n",
    );
    let out = run(&["validate", "--output", "json", &bad]);
    assert_eq!(out.code, 1);
    let v = out.json();
    assert_eq!(v["valid"], false);
    assert_eq!(v["diagnostics"][0]["severity"], "error");
    assert_eq!(v["diagnostics"][0]["object"]["name"], "a");

    let mut args = vec!["mode", "--namespace", "foo", "--output", "json"];
    args.extend(SAMPLES);
    let out = run(&args);
    let v = out.json();
    assert_eq!(v["default"]["mode"], "STRICT");
    assert_eq!(v["default"]["source"], "foo/default");
    let mut args = vec![
        "mode",
        "--namespace",
        "foo",
        "--port",
        "8080",
        "--output",
        "json",
    ];
    args.extend(&SAMPLES[..3]);
    let v = run(&args).json();
    assert_eq!(v["mode"], "PERMISSIVE");
    assert_eq!(v["source"], "istio-system/default");
}

#[test]
fn every_command_help_has_an_example_and_every_flag_a_description() {
    let top = run(&["--help"]);
    assert!(top.stdout.contains("3 check: DENY"), "{}", top.stdout);
    for cmd in [
        "validate",
        "check",
        "mode",
        "test",
        "render",
        "plugin-config",
    ] {
        let out = run(&[cmd, "--help"]);
        assert_eq!(out.code, 0);
        assert!(out.stdout.contains("Example:"), "{cmd}: {}", out.stdout);
        assert!(out.stdout.contains("Exit status:"), "{cmd}: {}", out.stdout);
        // clap prints a flag's description beside it or on the next, more indented, line.
        let lines: Vec<&str> = out
            .stdout
            .lines()
            .take_while(|l| !l.starts_with("Example:"))
            .collect();
        for (i, line) in lines.iter().enumerate() {
            let t = line.trim_start();
            if t.starts_with("--") || t.starts_with("-h") {
                let beside = t.trim_end().contains("  ");
                let below = lines.get(i + 1).is_some_and(|next| {
                    let n = next.trim_start();
                    !n.is_empty()
                        && !n.starts_with('-')
                        && next.len() - n.len() > line.len() - t.len()
                });
                assert!(beside || below, "{cmd}: flag without a description: {t}");
            }
        }
    }
}

#[test]
fn check_names_the_cel_expression_and_attribute_that_failed() {
    let p = file(
        "cel.yaml",
        r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: tenant, namespace: foo}
spec:
  action: DENY
  rules:
  - when:
    - key: meshauthz.io/cel
      notValues: ['request.headers["x-tenant"] == "a"']
"#,
    );
    let out = in_foo("check", &["--port", "8080"], &p);
    assert_eq!(out.code, 3, "{}", out.stdout);
    assert!(
        out.stdout.contains(
            "CEL error: foo/tenant spec.rules[0].when[0].notValues[0]: `request.headers[\"x-tenant\"] == \"a\"`: attribute `request.headers[\"x-tenant\"]` is absent"
        ),
        "{}",
        out.stdout
    );
    let out = in_foo("check", &["--port", "8080", "--output", "json"], &p);
    let v = out.json();
    assert_eq!(v["celErrors"], 1);
    assert!(v["celFailures"][0].as_str().unwrap().contains("is absent"));
    // With the header there is no error and nothing to explain.
    let out = in_foo("check", &["--port", "8080", "--header", "x-tenant: a"], &p);
    assert_eq!(out.code, 0);
    assert!(!out.stdout.contains("CEL"), "{}", out.stdout);
}

#[test]
fn plugin_config_is_one_line_in_a_pipe_and_indented_with_pretty() {
    let args = ["plugin-config", "--namespace", "foo", SAMPLES[2]];
    let piped = run(&args);
    assert_eq!(piped.code, 0, "{}", piped.stderr);
    assert_eq!(piped.stdout.trim_end().lines().count(), 1);
    let mut pretty_args = args.to_vec();
    pretty_args.push("--pretty");
    let pretty = run(&pretty_args);
    assert!(pretty.stdout.lines().count() > 10, "{}", pretty.stdout);
    assert!(pretty.stdout.contains("\n  \"policies\": ["));
    let a: Value = serde_json::from_str(&piped.stdout).unwrap();
    let b: Value = serde_json::from_str(&pretty.stdout).unwrap();
    assert_eq!(a, b);
}
