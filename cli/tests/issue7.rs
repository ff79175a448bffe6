//! Issue 7 §1 ("the CLI and the module read different policy sets") and §6 ("nothing vanishes
//! silently"), bullet by bullet, as a user meets them: the real `meshauthz` binary, and the
//! module's configuration path (`plugin_config::decode`, what `filter/src/config.rs` calls, then
//! `Engine::compile`) fed what `plugin-config` wrote.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test helpers outside #[test] functions fail by panicking"
)]

mod common;

use common::{each_says, file, run, run_stdin};
use policy_engine::{plugin_config, Attributes, Engine, HttpAttributes, MtlsMode, Protocol};
use serde_json::Value;

/// `meshauthz plugin-config ARGS`, then the module's path: the compiled engine and the JSON.
fn module(args: &[&str], stdin: &str) -> (Engine, Value) {
    let mut all = vec!["plugin-config"];
    all.extend_from_slice(args);
    let out = run_stdin(&all, stdin);
    assert_eq!(out.code, 0, "plugin-config failed:\n{}", out.stderr);
    let (cfg, _) = plugin_config::decode(out.stdout.as_bytes())
        .unwrap_or_else(|d| panic!("the module refuses what plugin-config wrote:\n{d}"));
    let (engine, _) = Engine::compile(&cfg.policies, &cfg.workload.unwrap(), &cfg.mesh).unwrap();
    (engine, serde_json::from_str(&out.stdout).unwrap())
}

/// `meshauthz mode` of workload `foo` (`app=echo`) at `port`.
fn echo_mode(port: &str, file: &str) -> common::Out {
    run(&[
        "mode",
        "--namespace",
        "foo",
        "--label",
        "app=echo",
        "--port",
        port,
        file,
    ])
}

fn allows(engine: &Engine, path: &str) -> bool {
    let attrs = Attributes {
        principal: None,
        mtls: false,
        source_ip: Some("10.1.0.1".parse().unwrap()),
        remote_ip: None,
        destination_ip: None,
        destination_port: Some(8080),
        sni: None,
        dynamic_metadata: None,
        http: Some(HttpAttributes {
            host: Some("echo"),
            method: Some("GET"),
            path: Some(path),
            headers: &[],
            jwt: None,
        }),
    };
    engine.check(Protocol::Http, &attrs).allowed()
}

const DENY_ADMIN_ITEM: &str = r#"
- apiVersion: security.istio.io/v1
  kind: AuthorizationPolicy
  metadata: {name: deny-admin, namespace: foo, resourceVersion: "1", uid: x}
  spec:
    action: DENY
    rules:
    - to:
      - operation: {paths: ["/admin"]}
"#;

/// §1: `kind: AuthorizationPolicyList` was validated and checked, but `plugin-config` and
/// `render` wrote `"policies": []` and the module allowed `/admin`.
#[test]
fn an_authorization_policy_list_reaches_the_module() {
    let list = format!(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicyList\nmetadata: {{resourceVersion: \"9\"}}\nitems:{DENY_ADMIN_ITEM}"
    );
    // The API may also leave kind and apiVersion out of the items.
    let bare = list.replace(
        "- apiVersion: security.istio.io/v1\n  kind: AuthorizationPolicy\n  metadata",
        "- metadata",
    );
    assert_ne!(bare, list);
    // kubectl's `kind: List` holding the API's list (several `-o yaml` outputs concatenated).
    let nested = format!(
        "apiVersion: v1\nkind: List\nitems:\n- {}",
        bare.replace('\n', "\n  ").trim_end()
    );
    for text in [&list, &bare, &nested] {
        let f = file("list.yaml", text);
        let check = run(&["check", "--namespace", "foo", "--path", "/admin", &f]);
        assert_eq!(check.code, 3, "{}{}", check.stdout, check.stderr);
        assert!(check
            .stdout
            .starts_with("DENY: DENY rule ns[foo]-policy[deny-admin]-rule[0]"));
        let (engine, json) = module(&["--namespace", "foo", &f], "");
        assert_eq!(json["policies"].as_array().unwrap().len(), 1, "{json}");
        assert!(!allows(&engine, "/admin"), "the module allows /admin");
        assert!(allows(&engine, "/other"));
        let render = run(&[
            "render",
            "wasmplugin",
            "--namespace",
            "foo",
            "--http-port",
            "8080",
            &f,
        ]);
        assert_eq!(render.code, 0, "{}", render.stderr);
        assert!(
            render.stdout.contains("name: deny-admin"),
            "{}",
            render.stdout
        );
    }
}

const NO_NAMESPACE: &str = r#"
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: strict}
spec: {mtls: {mode: STRICT}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-admin}
spec:
  action: DENY
  rules:
  - to:
    - operation: {paths: ["/admin"]}
"#;

/// §1: an object without `metadata.namespace` went to `default` in the CLI and to the workload's
/// namespace in the module. One rule now (kubectl's: the namespace you name, else `default`),
/// applied by the CLI and written into the configuration.
#[test]
fn an_object_without_namespace_is_placed_by_one_rule() {
    let f = file("no-namespace.yaml", NO_NAMESPACE);
    // mTLS: the STRICT PeerAuthentication would reset plaintext before authorization.
    let peer = "--principal=spiffe://cluster.local/ns/x/sa/y";
    let check = run(&["check", "--namespace", "foo", peer, "--path", "/admin", &f]);
    assert_eq!(check.code, 3, "DENY\n{}{}", check.stdout, check.stderr);
    let mode = run(&["mode", "--namespace", "foo", "--port", "8080", &f]);
    assert_eq!(mode.stdout.trim(), "STRICT", "{}", mode.stderr);
    let (engine, json) = module(&["--namespace", "foo", &f], "");
    for p in json["policies"].as_array().unwrap() {
        assert_eq!(p["metadata"]["namespace"], "foo", "{p}");
    }
    assert_eq!(engine.mtls_mode(8080), MtlsMode::Strict);
    assert!(!allows(&engine, "/admin"));
    // Without --namespace: `default` for the objects and the workload, in both.
    let check = run(&["check", peer, "--path", "/admin", &f]);
    assert_eq!(check.code, 3, "DENY\n{}{}", check.stdout, check.stderr);
    let (engine, json) = module(&[&f], "");
    assert_eq!(json["policies"][0]["metadata"]["namespace"], "default");
    assert_eq!(engine.mtls_mode(8080), MtlsMode::Strict);
}

/// §1: the CLI refused `"action": "DENY", "action": "ALLOW"`; the module took ALLOW. Both refuse
/// it now (the module's side: `filter/src/config.rs` tests).
#[test]
fn duplicate_keys_are_refused_by_every_command() {
    let f = file(
        "dup.json",
        r#"{"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
            "metadata": {"name": "x", "namespace": "foo"}, "spec": {"action": "DENY", "action": "ALLOW"}}"#,
    );
    // JSON input gets a JSON error, with its line and column (issue 8), and the file's name.
    each_says(
        &["validate", "plugin-config"],
        &f,
        1,
        &[
            "cannot parse JSON: duplicate key \"action\" at line 2 column",
            &f,
        ],
    );
}

/// §1: a YAML merge key went to the module as a literal `"<<"` field.
#[test]
fn merge_keys_reach_the_module_resolved() {
    let text = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-admin, namespace: foo}
spec:
  action: DENY
  rules:
  - to:
    - operation: &admin {paths: ["/admin"]}
  - to:
    - operation:
        <<: *admin
        methods: ["POST"]
"#;
    let (engine, json) = module(&["--namespace", "foo", "-"], text);
    assert!(!json.to_string().contains("<<"), "{json}");
    assert_eq!(
        json["policies"][0]["spec"]["rules"][1]["to"][0]["operation"]["paths"][0],
        "/admin"
    );
    assert!(!allows(&engine, "/admin"));
}

/// §1: `portLevelMtls` keys `08081` / `0x1F92` were ports for `validate` and strings in the
/// configuration. A YAML integer (`0x1F92`) is written as the port it is; a key that YAML 1.1
/// (kubectl) and 1.2 read differently (`08081`) is refused, with the file named.
#[test]
fn port_keys_mean_one_port_everywhere() {
    let pa = |key: &str| {
        format!(
            "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {{name: p, namespace: foo}}\nspec:\n  selector: {{matchLabels: {{app: echo}}}}\n  portLevelMtls:\n    {key}: {{mode: STRICT}}\n"
        )
    };
    let f = file("hex.yaml", &pa("0x1F92"));
    let mode = echo_mode("8082", &f);
    assert_eq!(mode.stdout.trim(), "STRICT", "{}", mode.stderr);
    let (engine, json) = module(&["--namespace", "foo", "--label", "app=echo", &f], "");
    assert!(
        json["policies"][0]["spec"]["portLevelMtls"]["8082"].is_object(),
        "{json}"
    );
    assert_eq!(engine.mtls_mode(8082), MtlsMode::Strict);

    let f = file("leading-zero.yaml", &pa("08081"));
    each_says(
        &["validate", "plugin-config"],
        &f,
        1,
        &[
            &f,
            "spec.portLevelMtls.08081: port key \"08081\" is ambiguous",
        ],
    );
}

/// §1: empty `--namespace` / `--trust-domain` were accepted (and the module then refused or
/// misread the configuration).
#[test]
fn empty_names_are_refused() {
    let f = file(
        "deny.yaml",
        &format!("apiVersion: v1\nkind: List\nitems:{DENY_ADMIN_ITEM}"),
    );
    for (flag, cmds) in [
        (
            "--namespace",
            &["validate", "check", "mode", "plugin-config"][..],
        ),
        ("--trust-domain", &["check", "plugin-config"][..]),
        ("--root-namespace", &["plugin-config"][..]),
        ("--trust-domain-alias", &["plugin-config"][..]),
    ] {
        for cmd in cmds {
            let mut args = vec![*cmd, flag, ""];
            if *cmd == "mode" {
                args.extend(["--port", "80"]);
            }
            args.push(&f);
            let out = run(&args);
            assert_ne!(out.code, 0, "{args:?} accepted");
            assert!(
                out.stderr.contains("must not be empty"),
                "{args:?}: {}",
                out.stderr
            );
        }
    }
}

/// §1: a custom YAML tag was dropped by `validate` and failed `plugin-config` without a file
/// name.
#[test]
fn a_custom_tag_fails_with_the_file_name() {
    let f = file(
        "tag.yaml",
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: t, namespace: foo}\nspec: {action: !Deny DENY}\n",
    );
    each_says(
        &["validate", "plugin-config", "check"],
        &f,
        1,
        &[&format!(
            "{f}: error: document 1: YAML tag !Deny is not supported"
        )],
    );
}

/// §1: `plugin-config -` exited 1 without a message.
#[test]
fn plugin_config_reads_standard_input() {
    let text = format!("apiVersion: v1\nkind: List\nitems:{DENY_ADMIN_ITEM}");
    let (engine, _) = module(&["--namespace", "foo", "-"], &text);
    assert!(!allows(&engine, "/admin"));
    let out = run_stdin(&["plugin-config", "-"], "kind: [");
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .starts_with("<stdin>: error: document 1: cannot parse YAML"),
        "{}",
        out.stderr
    );
}

/// §6: a misspelt kind was a warning (exit 0), so a DENY policy could vanish.
#[test]
fn a_misspelt_kind_is_an_error_with_a_suggestion() {
    for (kind, suggestion) in [
        ("AuthorisationPolicy", "AuthorizationPolicy"),
        ("authorizationpolicy", "AuthorizationPolicy"),
        ("PeerAuthenticaton", "PeerAuthentication"),
    ] {
        let f = file("kind.yaml", &format!("apiVersion: security.istio.io/v1\nkind: {kind}\nmetadata: {{name: x, namespace: foo}}\nspec: {{action: DENY}}\n"));
        each_says(
            &["validate", "plugin-config"],
            &f,
            1,
            &[&format!(
                "kind: unknown kind {kind:?}; did you mean {suggestion:?}?"
            )],
        );
    }
    let f = file("kind.yaml", "apiVersion: security.istio.io/v1\nkind: AuthzPolicy\nmetadata: {name: x, namespace: foo}\n");
    each_says(
        &["validate"],
        &f,
        1,
        &["unknown kind \"AuthzPolicy\" in group security.istio.io; did you mean"],
    );
}

/// §6: two PeerAuthentications selecting one workload: one was silently ignored.
#[test]
fn competing_peer_authentications_are_named_with_the_winner() {
    let f = file(
        "two-pa.yaml",
        r#"
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: echo-permissive, namespace: foo, creationTimestamp: "2026-02-01T00:00:00Z"}
spec: {selector: {matchLabels: {app: echo}}, mtls: {mode: PERMISSIVE}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: echo-strict, namespace: foo, creationTimestamp: "2026-01-01T00:00:00Z"}
spec: {selector: {matchLabels: {app: echo}}, mtls: {mode: STRICT}}
"#,
    );
    let out = echo_mode("80", &f);
    assert_eq!(out.stdout.trim(), "STRICT");
    assert!(
        out.stderr.contains("PeerAuthentication foo/echo-permissive: spec.selector: PeerAuthentications foo/echo-strict and foo/echo-permissive both select workload foo (app=echo); Istio applies only the oldest (creationTimestamp, then name): foo/echo-strict wins"),
        "{}",
        out.stderr
    );
}

/// §6: `spiffe://` in `principals` can never match; an empty input means "allow everything".
#[test]
fn spiffe_principals_and_empty_inputs_warn() {
    let f = file(
        "spiffe.yaml",
        r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-admin-sa, namespace: foo}
spec:
  action: DENY
  rules:
  - from:
    - source: {principals: ["spiffe://cluster.local/ns/foo/sa/admin"]}
"#,
    );
    each_says(
        &["validate"],
        &f,
        0,
        &["warning: AuthorizationPolicy foo/deny-admin-sa: spec.rules[0].from[0].source.principals[0]: \"spiffe://cluster.local/ns/foo/sa/admin\" can never match"],
    );
    let empty = file("empty.yaml", "# nothing here\n");
    each_says(
        &["validate", "plugin-config"],
        &empty,
        0,
        &[&format!("{empty}: warning: no policies")],
    );
}
