//! Decoding tests: every field reaches the model, and the input shapes users have (multi-document
//! YAML, `kind: List`, JSON text, JSON arrays). The validation messages are tested as data in
//! `tests/validation/*.yaml`.

// Most cases are YAML text; without the `yaml` feature only the JSON ones run.
#![cfg_attr(
    not(feature = "yaml"),
    expect(unused_imports, dead_code, reason = "the YAML cases are compiled out")
)]

use std::collections::BTreeMap;

use serde_json::json;

use super::*;
use crate::model::{
    Action, Condition, MtlsMode, Operation, PolicyTargetReference, Rule, RuleFrom, RuleTo, Source,
    Timestamp, WorkloadSelector,
};

fn load_ok(text: &str) -> PolicySet {
    match load_str(text, &LoadOptions::default()) {
        Ok((set, warnings)) => {
            assert!(warnings.is_empty(), "unexpected warnings: {warnings}");
            set
        }
        Err(d) => panic!("expected to load:\n{d}"),
    }
}

fn load_err(text: &str) -> Diagnostics {
    match load_str(text, &LoadOptions::default()) {
        Ok((set, w)) => panic!("expected errors, loaded {set:?} {w}"),
        Err(d) => d,
    }
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[cfg(feature = "yaml")]
#[test]
fn every_authorization_policy_field_is_decoded() {
    let set = load_ok(
        r#"
apiVersion: security.istio.io/v1beta1
kind: AuthorizationPolicy
metadata:
  name: full
  namespace: foo
  annotations: {istio.io/dry-run: "true", note: "x"}
  creationTimestamp: "2024-05-01T12:00:00.25Z"
spec:
  selector: {matchLabels: {app: httpbin, version: v1}}
  action: DENY
  rules:
  - from:
    - source:
        principals: [p]
        notPrincipals: [np]
        requestPrincipals: [rp]
        notRequestPrincipals: [nrp]
        namespaces: [ns]
        notNamespaces: [nns]
        trustDomains: [td]
        notTrustDomains: [ntd]
        ipBlocks: [1.2.3.4]
        notIpBlocks: [5.6.7.8]
        remoteIpBlocks: [10.0.0.0/8]
        notRemoteIpBlocks: [10.1.0.0/16]
    - source:
        serviceAccounts: [ns/sa]
        notServiceAccounts: [other]
    to:
    - operation:
        hosts: [h]
        notHosts: [nh]
        ports: ["80"]
        notPorts: ["81"]
        methods: [GET]
        notMethods: [PUT]
        paths: [/a]
        notPaths: [/b]
    when:
    - key: request.headers[x-foo]
      values: [v]
      notValues: [nv]
"#,
    );
    assert!(set.peer_authentications.is_empty());
    let [ap] = set.authorization_policies.as_slice() else {
        panic!("one policy expected")
    };
    assert_eq!(ap.api_version, "security.istio.io/v1beta1");
    assert_eq!(ap.meta.name, "full");
    assert_eq!(ap.meta.namespace, "foo");
    assert_eq!(
        ap.meta.annotations,
        BTreeMap::from([
            ("istio.io/dry-run".to_string(), "true".to_string()),
            ("note".to_string(), "x".to_string())
        ])
    );
    assert_eq!(
        ap.meta.creation_timestamp,
        Some(Timestamp {
            seconds: 1_714_564_800,
            nanos: 250_000_000
        })
    );
    assert!(ap.dry_run());
    assert_eq!(
        ap.spec.selector,
        Some(WorkloadSelector {
            match_labels: BTreeMap::from([
                ("app".to_string(), "httpbin".to_string()),
                ("version".to_string(), "v1".to_string())
            ])
        })
    );
    assert_eq!(ap.spec.action, Action::Deny);
    assert_eq!(ap.spec.provider, None);
    let expected_rule = Rule {
        from: Some(vec![
            Some(RuleFrom {
                source: Some(Source {
                    principals: strings(&["p"]),
                    not_principals: strings(&["np"]),
                    request_principals: strings(&["rp"]),
                    not_request_principals: strings(&["nrp"]),
                    namespaces: strings(&["ns"]),
                    not_namespaces: strings(&["nns"]),
                    trust_domains: strings(&["td"]),
                    not_trust_domains: strings(&["ntd"]),
                    ip_blocks: strings(&["1.2.3.4"]),
                    not_ip_blocks: strings(&["5.6.7.8"]),
                    remote_ip_blocks: strings(&["10.0.0.0/8"]),
                    not_remote_ip_blocks: strings(&["10.1.0.0/16"]),
                    ..Source::default()
                }),
            }),
            Some(RuleFrom {
                source: Some(Source {
                    service_accounts: strings(&["ns/sa"]),
                    not_service_accounts: strings(&["other"]),
                    ..Source::default()
                }),
            }),
        ]),
        to: Some(vec![Some(RuleTo {
            operation: Some(Operation {
                hosts: strings(&["h"]),
                not_hosts: strings(&["nh"]),
                ports: strings(&["80"]),
                not_ports: strings(&["81"]),
                methods: strings(&["GET"]),
                not_methods: strings(&["PUT"]),
                paths: strings(&["/a"]),
                not_paths: strings(&["/b"]),
            }),
        })]),
        when: Some(vec![Some(Condition {
            key: "request.headers[x-foo]".to_string(),
            values: strings(&["v"]),
            not_values: strings(&["nv"]),
        })]),
    };
    assert_eq!(ap.spec.rules, Some(vec![Some(expected_rule)]));
}

#[test]
fn target_refs_and_provider_are_decoded() {
    let (set, _) = load_value(
        &json!({
            "apiVersion": "security.istio.io/v1",
            "kind": "AuthorizationPolicy",
            "metadata": {"name": "gw"},
            "spec": {
                "targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "g"}],
                "rules": [{}]
            }
        }),
        &LoadOptions::default(),
    )
    .unwrap();
    let ap = &set.authorization_policies[0];
    assert_eq!(
        ap.spec.target_refs,
        vec![PolicyTargetReference {
            group: "gateway.networking.k8s.io".to_string(),
            kind: "Gateway".to_string(),
            name: "g".to_string(),
            namespace: String::new(),
        }]
    );
    assert_eq!(ap.spec.target_ref, None);
    assert_eq!(ap.spec.rules, Some(vec![Some(Rule::default())]));

    // provider is kept for CUSTOM (which is then refused, but decoded first).
    let mut dec = decode::Decoder::new(None);
    let spec = authorization_policy::decode_spec(
        &mut dec,
        Some(
            &json!({"action": "CUSTOM", "provider": {"name": "ext"}, "targetRef": {"kind": "Service", "name": "s"}}),
        ),
    );
    assert!(dec.diagnostics.is_empty());
    assert_eq!(spec.action, Action::Custom);
    assert_eq!(spec.provider.as_deref(), Some("ext"));
    assert_eq!(
        spec.target_ref,
        Some(PolicyTargetReference {
            kind: "Service".to_string(),
            name: "s".to_string(),
            ..PolicyTargetReference::default()
        })
    );
}

#[test]
fn nulls_and_empty_lists_are_kept_apart_from_absence() {
    let mut dec = decode::Decoder::new(None);
    let spec = authorization_policy::decode_spec(
        &mut dec,
        Some(&json!({"rules": [null, {"from": [], "to": [null, {}], "when": null}]})),
    );
    assert!(dec.diagnostics.is_empty());
    assert_eq!(
        spec.rules,
        Some(vec![
            None,
            Some(Rule {
                from: Some(vec![]),
                to: Some(vec![None, Some(RuleTo { operation: None })]),
                when: None,
            })
        ])
    );
    let spec = authorization_policy::decode_spec(&mut dec, Some(&json!({"rules": []})));
    assert_eq!(spec.rules, Some(vec![]));
    let spec = authorization_policy::decode_spec(&mut dec, Some(&json!({"rules": null})));
    assert_eq!(spec.rules, None);
    let spec = authorization_policy::decode_spec(&mut dec, Some(&json!({"selector": {}})));
    assert_eq!(spec.selector, Some(WorkloadSelector::default()));
    assert_eq!(spec.action, Action::Allow);
    assert!(dec.diagnostics.is_empty());
}

#[cfg(feature = "yaml")]
#[test]
fn peer_authentication_fields_and_integer_port_keys() {
    let set = load_ok(
        r#"
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: p, namespace: foo}
spec:
  selector: {matchLabels: {app: a}}
  mtls: {mode: PERMISSIVE}
  portLevelMtls:
    8080: {mode: STRICT}
    "9090": {mode: DISABLE}
    9091: {}
    9092: null
"#,
    );
    let pa = &set.peer_authentications[0];
    assert_eq!(pa.meta.namespace, "foo");
    assert_eq!(pa.spec.mtls, Some(MtlsMode::Permissive));
    assert_eq!(
        pa.spec.port_level_mtls,
        Some(BTreeMap::from([
            (8080, MtlsMode::Strict),
            (9090, MtlsMode::Disable),
            (9091, MtlsMode::Unset),
            (9092, MtlsMode::Unset),
        ]))
    );

    let mut dec = decode::Decoder::new(None);
    let spec = peer_authentication::decode_spec(&mut dec, Some(&json!({"mtls": {}})));
    assert_eq!(spec.mtls, Some(MtlsMode::Unset));
    let spec = peer_authentication::decode_spec(&mut dec, None);
    assert_eq!(spec, crate::model::PeerAuthenticationSpec::default());
    assert!(dec.diagnostics.is_empty());
}

#[cfg(feature = "yaml")]
#[test]
fn multi_document_yaml_keeps_input_order_and_default_namespace() {
    let text = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: first}
---
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: mesh, namespace: istio-system}
spec: {mtls: {mode: STRICT}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: second, namespace: other}
spec: {rules: [{}]}
"#;
    let opts = LoadOptions {
        default_namespace: "team-a".to_string(),
    };
    let (set, warnings) = load_str(text, &opts).unwrap();
    assert!(warnings.is_empty());
    let names: Vec<_> = set
        .authorization_policies
        .iter()
        .map(|p| format!("{}/{}", p.meta.namespace, p.meta.name))
        .collect();
    assert_eq!(names, ["team-a/first", "other/second"]);
    assert_eq!(set.peer_authentications[0].meta.namespace, "istio-system");
}

#[test]
fn json_text_array_and_list() {
    let policy = json!({
        "apiVersion": "security.istio.io/v1",
        "kind": "AuthorizationPolicy",
        "metadata": {"name": "a"},
        "spec": {"rules": [{"to": [{"operation": {"ports": ["80"]}}]}]}
    });
    let pa = json!({
        "apiVersion": "security.istio.io/v1",
        "kind": "PeerAuthentication",
        "metadata": {"name": "p"},
        "spec": {"mtls": {"mode": "STRICT"}}
    });
    // JSON text works with and without the `yaml` feature.
    let set = load_ok(&serde_json::to_string_pretty(&policy).unwrap());
    assert_eq!(set.authorization_policies.len(), 1);
    let set = load_ok(&json!([policy, pa]).to_string());
    assert_eq!(
        (
            set.authorization_policies.len(),
            set.peer_authentications.len()
        ),
        (1, 1)
    );
    let list = json!({"apiVersion": "v1", "kind": "List", "metadata": {}, "items": [pa, policy]});
    let set = load_ok(&list.to_string());
    assert_eq!(
        (
            set.authorization_policies.len(),
            set.peer_authentications.len()
        ),
        (1, 1)
    );
    let (set, _) = load_value(&list, &LoadOptions::default()).unwrap();
    assert_eq!(set.peer_authentications[0].meta.name, "p");
    // An API list kind (`AuthorizationPolicyList`) too.
    let api_list = json!({"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicyList", "items": [policy]});
    let (set, _) = load_value(&api_list, &LoadOptions::default()).unwrap();
    assert_eq!(set.authorization_policies.len(), 1);
    // Empty inputs load nothing, with a warning: a wrong file or an empty selection means
    // "allow everything".
    for empty in ["", "[]"] {
        let (set, warnings) = load_str(empty, &LoadOptions::default()).unwrap();
        assert_eq!(set, PolicySet::default());
        assert!(
            warnings.to_string().contains("warning: no policies"),
            "{warnings}"
        );
    }
}

#[test]
fn api_list_items_take_the_list_item_kind() {
    // The API's typed list may leave kind and apiVersion out of its items.
    let list = json!({"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicyList",
        "items": [{"metadata": {"name": "deny-admin", "namespace": "foo"},
                   "spec": {"action": "DENY", "rules": [{"to": [{"operation": {"paths": ["/admin"]}}]}]}}]});
    let (set, _) = load_value(&list, &LoadOptions::default()).unwrap();
    assert_eq!(set.authorization_policies.len(), 1);
    assert_eq!(
        set.authorization_policies[0].api_version,
        "security.istio.io/v1"
    );
    assert_eq!(set.authorization_policies[0].spec.action, Action::Deny);
}

#[test]
fn misspelt_kinds_are_errors_with_a_suggestion() {
    for (kind, want) in [
        (
            "AuthorisationPolicy",
            "did you mean \"AuthorizationPolicy\"?",
        ),
        (
            "authorizationpolicy",
            "did you mean \"AuthorizationPolicy\"?",
        ),
        (
            "PeerAuthentification",
            "did you mean \"PeerAuthentication\"?",
        ),
        (
            "Sidecar",
            "unknown kind \"Sidecar\" in group security.istio.io; did you mean",
        ),
    ] {
        let doc = json!({"apiVersion": "security.istio.io/v1", "kind": kind,
            "metadata": {"name": "x", "namespace": "foo"}, "spec": {"action": "DENY"}});
        let d = load_value(&doc, &LoadOptions::default()).unwrap_err();
        assert!(d.to_string().contains(want), "{kind}: {d}");
        assert!(d.errors().any(|e| e.path == "kind"), "{d}");
    }
    // Kinds of other groups, and RequestAuthentication, are still skipped with a warning.
    for (api, kind) in [
        ("v1", "Service"),
        ("security.istio.io/v1", "RequestAuthentication"),
        ("networking.istio.io/v1", "VirtualService"),
    ] {
        let doc = json!({"apiVersion": api, "kind": kind, "metadata": {"name": "x"}});
        let (_, w) = load_value(&doc, &LoadOptions::default()).unwrap();
        assert!(w.to_string().contains(&format!("skipping {kind}")), "{w}");
    }
}

#[cfg(feature = "yaml")]
#[test]
fn yaml_merge_keys_are_resolved_and_custom_tags_refused() {
    let set = load_ok(
        r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: merged, namespace: foo}
spec:
  rules:
  - to:
    - operation: &op {paths: ["/admin"]}
  - to:
    - operation:
        <<: *op
        methods: ["GET"]
"#,
    );
    let rules = set.authorization_policies[0].spec.rules.clone().unwrap();
    let op = rules[1].clone().unwrap().to.unwrap()[0]
        .clone()
        .unwrap()
        .operation
        .unwrap();
    assert_eq!(op.paths, strings(&["/admin"]));
    assert_eq!(op.methods, strings(&["GET"]));

    let d = load_err(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: t, namespace: foo}\nspec: {action: !Deny DENY}\n",
    );
    assert!(
        d.to_string().contains("YAML tag !Deny is not supported"),
        "{d}"
    );
}

#[cfg(feature = "yaml")]
#[test]
fn non_canonical_port_keys_are_refused() {
    let pa = |key: &str| {
        format!(
            "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {{name: p, namespace: foo}}\nspec:\n  selector: {{matchLabels: {{app: a}}}}\n  portLevelMtls:\n    {key}: {{mode: DISABLE}}\n"
        )
    };
    // A YAML integer is a port, whatever its notation: `0x1F92` is 8082 for every YAML reader.
    let set = load_ok(&pa("0x1F92"));
    let ports = set.peer_authentications[0]
        .spec
        .port_level_mtls
        .clone()
        .unwrap();
    assert_eq!(ports.keys().copied().collect::<Vec<_>>(), [8082]);
    // Leading zeros: YAML 1.1 (kubectl) and YAML 1.2 disagree (`010` is 8 or 10): refused.
    for key in ["08081", "010", "\"0777\"", "\"+80\""] {
        let d = load_err(&pa(key));
        assert!(
            d.to_string()
                .contains("is ambiguous: write the port as a plain decimal number"),
            "{key}: {d}"
        );
    }
}

#[test]
fn spiffe_prefix_in_principals_warns() {
    let doc = json!({"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
        "metadata": {"name": "x", "namespace": "foo"},
        "spec": {"action": "DENY", "rules": [{"from": [{"source": {
            "principals": ["spiffe://cluster.local/ns/foo/sa/admin"],
            "notPrincipals": ["spiffe://cluster.local/ns/foo/sa/ok"]}}]}]}});
    let (_, w) = load_value(&doc, &LoadOptions::default()).unwrap();
    let text = w.to_string();
    assert!(text.contains("spec.rules[0].from[0].source.principals[0]: \"spiffe://cluster.local/ns/foo/sa/admin\" can never match"), "{text}");
    assert!(text.contains("source.notPrincipals[0]"), "{text}");
}

#[cfg(feature = "yaml")]
#[test]
fn all_errors_are_reported_at_once_with_paths() {
    let d = load_err(
        r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: a, namespace: ns}
spec:
  action: DENY
  rules:
  - from:
    - source:
        principals: ["ok", 80, ""]
        notNamespace: [x]
      source2: {}
    when:
    - key: source.ip
      values: ["1.2.3.4", "10.0.0.0/40"]
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: p, namespace: ns}
spec:
  mtls: {mode: BLAH}
"#,
    );
    let got: Vec<(String, String)> = d
        .errors()
        .map(|e| (e.object.as_ref().unwrap().to_string(), e.path.clone()))
        .collect();
    let want = [
        (
            "AuthorizationPolicy ns/a",
            "spec.rules[0].from[0].source.principals[1]",
        ),
        (
            "AuthorizationPolicy ns/a",
            "spec.rules[0].from[0].source.notNamespace",
        ),
        ("AuthorizationPolicy ns/a", "spec.rules[0].from[0].source2"),
        (
            "AuthorizationPolicy ns/a",
            "spec.rules[0].from[0].source.principals[2]",
        ),
        (
            "AuthorizationPolicy ns/a",
            "spec.rules[0].when[0].values[1]",
        ),
        ("PeerAuthentication ns/p", "spec.mtls.mode"),
    ];
    for (object, path) in want {
        assert!(
            got.contains(&(object.to_string(), path.to_string())),
            "missing {object} {path} in:\n{d}"
        );
    }
    assert_eq!(got.len(), want.len(), "{d}");
    let text = d.to_string();
    assert!(text.contains(
        r#"error: AuthorizationPolicy ns/a: spec.rules[0].from[0].source.notNamespace: unknown field "notNamespace"; did you mean "notNamespaces"?"#
    ), "{text}");
    assert!(text.contains(
        r#"spec.rules[0].from[0].source.principals[1]: expected a string, found number 80; quote it"#
    ), "{text}");
}

#[test]
fn input_with_any_error_is_refused_with_its_warnings() {
    let input = json!([
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}},
        {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
         "metadata": {"name": "a"}, "spec": {"action": "DENY"}}
    ]);
    let d = load_value(&input, &LoadOptions::default()).unwrap_err();
    assert_eq!(d.errors().count(), 1, "{d}");
    assert_eq!(d.warnings().count(), 1, "{d}");
    assert!(d
        .warnings()
        .all(|w| w.message.contains("skipping ConfigMap default/c")));
}

#[test]
fn cel_conditions_are_compiled() {
    // On this branch the compiler accepts everything; what matters here is that the values are
    // handed to it and an empty one is refused at its exact path.
    let input = json!({"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
        "metadata": {"name": "a"},
        "spec": {"rules": [{"when": [{"key": crate::cel::CEL_CONDITION_KEY, "values": ["true", ""]}]}]}});
    let d = load_value(&input, &LoadOptions::default()).unwrap_err();
    let e = d.errors().next().unwrap();
    assert_eq!(e.path, "spec.rules[0].when[0].values[1]");
    assert!(e
        .message
        .starts_with("invalid `value` for `key` meshauthz.io/cel: "));
}

#[test]
fn cel_compile_errors_are_reported_at_the_value() {
    // Whatever the CEL compiler says about a broken expression, the loader reports it verbatim
    // at the value's path (on a branch where the compiler accepts everything, it must load).
    let broken = "request.method == ";
    let input = json!({"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
        "metadata": {"name": "a"},
        "spec": {"rules": [{"when": [{"key": crate::cel::CEL_CONDITION_KEY,
                                        "values": ["true"], "notValues": [broken]}]}]}});
    let result = load_value(&input, &LoadOptions::default());
    match crate::cel::CelExpression::compile(broken) {
        Ok(_) => assert!(result.is_ok(), "{:?}", result.err()),
        Err(message) => {
            let d = result.unwrap_err();
            let [e] = d.0.as_slice() else {
                panic!("one error expected: {d}")
            };
            assert_eq!(e.path, "spec.rules[0].when[0].notValues[0]");
            assert_eq!(
                e.message,
                format!("invalid `notValue` for `key` meshauthz.io/cel: {message}")
            );
        }
    }
}

// ---- Hostile and unusual input (issue 8): bounded work, exact positions, bounded messages ----

const POLICY_YAML: &str = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: a\nspec:\n  action: ALLOW\n  rules: [{}]\n";

fn only_error(d: &Diagnostics) -> String {
    let errors: Vec<String> = d.errors().map(ToString::to_string).collect();
    assert_eq!(errors.len(), 1, "{d}");
    errors.into_iter().next().unwrap()
}

#[test]
fn deep_nesting_is_refused_with_one_message() {
    for (text, at) in [
        // JSON (serde_json gives up at 128 levels; the YAML parser it fell back on took minutes).
        (r#"{"a":"#.repeat(100_000), "line 1, column 321"),
        // YAML flow and block nesting.
        (
            "a:\n  b: ".to_string() + &"[".repeat(100_000),
            "line 2, column 68",
        ),
        ("- ".repeat(100_000), "line 1, column 129"),
    ] {
        let e = only_error(&load_err(&text));
        assert!(
            e.contains("nesting deeper than 64 levels") && e.contains(at),
            "{e}"
        );
    }
}

#[test]
fn a_byte_order_mark_is_read() {
    let bom = "\u{feff}";
    assert_eq!(
        load_ok(&format!("{bom}{POLICY_YAML}")).authorization_policies[0]
            .meta
            .name,
        "a"
    );
    let json = r#"{"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy", "metadata": {"name": "j"}, "spec": {}}"#;
    assert_eq!(
        load_ok(&format!("{bom}{json}")).authorization_policies[0]
            .meta
            .name,
        "j"
    );
}

#[test]
fn control_characters_are_reported_where_they_are() {
    let text = POLICY_YAML.replace("name: a", "name: a\u{0}b");
    let e = only_error(&load_err(&text));
    assert!(
        e.contains("U+0000") && e.contains("line 4, column 10"),
        "{e}"
    );
}

#[test]
fn json_errors_are_json_errors() {
    let dup = "{\"apiVersion\": \"security.istio.io/v1\",\n \"kind\": \"AuthorizationPolicy\", \"metadata\": {\"name\": \"a\"}, \"spec\": {\"action\": \"DENY\", \"action\": \"ALLOW\"}}";
    let e = only_error(&load_err(dup));
    assert!(
        e.contains("cannot parse JSON: duplicate key \"action\" at line 2 column")
            && !e.contains("YAML"),
        "{e}"
    );
    let trailing = "[{\"kind\": \"AuthorizationPolicy\"},\n]";
    let e = only_error(&load_err(trailing));
    assert!(
        e.contains("cannot parse JSON") && e.contains("line 2"),
        "{e}"
    );
    // Flow-style YAML still reads as YAML.
    assert_eq!(
        load_ok(
            "{apiVersion: security.istio.io/v1, kind: AuthorizationPolicy, metadata: {name: f}}"
        )
        .authorization_policies[0]
            .meta
            .name,
        "f"
    );
}

#[test]
fn long_values_are_cut_in_messages() {
    let name = "x".repeat(10_000_000);
    let text = POLICY_YAML
        .replace("name: a", &format!("name: {name}"))
        .replace(
            "action: ALLOW\n  rules: [{}]",
            "action: NOPE\n  rules: 3\n  notAField: 1",
        );
    let d = load_err(&text);
    let shown = d.to_string();
    assert!(d.errors().count() >= 3, "{shown}");
    assert!(shown.len() < 4_000, "{} bytes", shown.len());
    assert!(shown.contains("… (10000000 bytes)"), "{shown}");
    // The same through the module's decoder.
    let doc = format!(
        r#"{{"policies": [{{"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy", "metadata": {{"name": "{name}", "namespace": "n"}}, "spec": {{"action": "NOPE"}}}}]}}"#
    );
    let shown = plugin_config::decode(doc.as_bytes())
        .unwrap_err()
        .to_string();
    assert!(
        shown.len() < 2_000 && shown.contains("… (10000000 bytes)"),
        "{} bytes",
        shown.len()
    );
}

#[test]
fn the_plugin_configuration_refuses_deep_nesting_and_reads_a_byte_order_mark() {
    let deep = format!(
        r#"{{"policies": [], "workload": {}}}"#,
        r#"{"a":"#.repeat(100_000)
    );
    let d = plugin_config::decode(deep.as_bytes()).unwrap_err();
    let e = only_error(&d);
    assert!(e.contains("nesting deeper than 64 levels"), "{e}");
    let (cfg, _) = plugin_config::decode("\u{feff}{\"policies\": []}".as_bytes()).unwrap();
    assert_eq!(cfg, plugin_config::PluginConfig::new(PolicySet::default()));
}

/// A kubectl List as `kubectl get -o yaml` prints it: `n` policies, a few of them in error.
fn kubectl_list(n: usize, bad: &[usize]) -> (String, String) {
    let mut list = String::from("apiVersion: v1\nitems:\n");
    let mut docs = String::new();
    for i in 0..n {
        let action = if bad.contains(&i) { "NOPE" } else { "ALLOW" };
        let object = format!(
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  annotations:\n    kubectl.kubernetes.io/last-applied-configuration: |\n      {{\"kind\":\"AuthorizationPolicy\",\"spec\":{{\"rules\":[{{}}]}}}}\n  name: p{i}\n  namespace: ns{}\nspec:\n  action: {action}\n  rules:\n  - to:\n    - operation:\n        paths: [\"/a/{i}\"]\n",
            i % 3
        );
        let indented: Vec<String> = object.lines().map(|l| format!("  {l}")).collect();
        list.push_str(&format!("- {}\n", &indented.join("\n")[2..]));
        docs.push_str(&format!("---\n{object}"));
    }
    list.push_str("kind: List\nmetadata:\n  resourceVersion: \"\"\n");
    (list, docs)
}

#[test]
fn a_list_read_item_by_item_reads_as_its_documents() {
    let (list, docs) = kubectl_list(50, &[]);
    let from_list = load_ok(&list);
    assert_eq!(from_list.authorization_policies.len(), 50);
    assert_eq!(from_list, load_ok(&docs));
    // As JSON (`kubectl get -o json`), too.
    let value: serde_json::Value = serde_yaml_ng::from_str(&list).unwrap();
    assert_eq!(
        load_ok(&serde_json::to_string_pretty(&value).unwrap()),
        from_list
    );
    // Errors name the item.
    let (list, _) = kubectl_list(5, &[1, 3]);
    let shown = load_err(&list).to_string();
    assert!(
        shown.contains("AuthorizationPolicy ns1/p1: spec.action: Unsupported value: \"NOPE\"")
            && shown.contains("ns0/p3"),
        "{shown}"
    );
    // A duplicate across items is found, and only once.
    let (list, _) = kubectl_list(4, &[]);
    let dup = list.replace(
        "name: p3\n    namespace: ns0",
        "name: p0\n    namespace: ns0",
    );
    let shown = load_err(&dup).to_string();
    assert!(
        shown.contains("duplicate AuthorizationPolicy ns0/p0 (document 1, items[3]): already defined in document 1, items[0]"),
        "{shown}"
    );
}

#[test]
fn a_list_that_cannot_be_cut_is_read_whole() {
    // An anchor in one item used in another: the items cannot be parsed apart.
    let text = "apiVersion: v1\nitems:\n- apiVersion: security.istio.io/v1\n  kind: AuthorizationPolicy\n  metadata: {name: a}\n  spec: &spec\n    action: DENY\n    rules: [{}]\n- apiVersion: security.istio.io/v1\n  kind: AuthorizationPolicy\n  metadata: {name: b}\n  spec: *spec\nkind: List\n";
    let set = load_ok(text);
    assert_eq!(set.authorization_policies.len(), 2);
    assert_eq!(set.authorization_policies[1].spec.action, Action::Deny);
    // `items` that is not a List's: an object with an unknown field.
    let e = load_err(&format!("{POLICY_YAML}items:\n- a\n")).to_string();
    assert!(e.contains("unknown field \"items\""), "{e}");
}
