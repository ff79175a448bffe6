//! Issue 9, "Render and attachments": `render` carries only the policies that can apply to the
//! selected workloads, refuses a manifest over the Kubernetes API's 1.5 MiB, and an EnvoyFilter
//! fetching a remote module has its digest and the cluster the fetch goes through.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test helpers outside #[test] functions fail by panicking"
)]

mod common;

use std::process::Command;

use common::{file, run, Out};
use serde_json::Value;

fn docs(yaml: &str) -> Vec<Value> {
    yaml.split("\n---")
        .map(|d| d.trim_start_matches("---"))
        .filter(|d| !d.trim().is_empty())
        .map(|d| serde_yaml_ng::from_str(d).unwrap())
        .collect()
}

/// `namespace/name` of the policies a WasmPlugin carries.
fn carried(yaml: &str) -> Vec<String> {
    let plugin = &docs(yaml)[0];
    let mut names: Vec<String> = plugin["spec"]["pluginConfig"]["policies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            format!(
                "{}/{}",
                p["metadata"]["namespace"].as_str().unwrap(),
                p["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect();
    names.sort();
    names
}

fn policy(ns: &str, name: &str, selector: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  {selector}\n  action: DENY\n  rules:\n  - to: [{{operation: {{paths: [/{name}]}}}}]\n---\n"
    )
}

#[test]
fn render_carries_only_what_can_apply() {
    let text = [
        policy("foo", "ns-wide", ""),
        policy("foo", "echo", "selector: {matchLabels: {app: echo}}"),
        policy(
            "foo",
            "echo-v2",
            "selector: {matchLabels: {app: echo, version: v2}}",
        ),
        policy("foo", "other-app", "selector: {matchLabels: {app: other}}"),
        policy("bar", "other-ns", ""),
        policy("istio-system", "mesh", ""),
    ]
    .concat();
    let f = file("mixed.yaml", &text);
    let out = run(&[
        "render",
        "wasmplugin",
        "--namespace",
        "foo",
        "--label",
        "app=echo",
        "--http-port",
        "8080",
        &f,
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    // A pod with app=echo may also carry version=v2: that policy stays.
    assert_eq!(
        carried(&out.stdout),
        [
            "foo/echo",
            "foo/echo-v2",
            "foo/ns-wide",
            "istio-system/mesh"
        ]
    );
    assert!(
        out.stderr.contains("carrying 4 of 6 policies"),
        "{}",
        out.stderr
    );
    let all = run(&[
        "render",
        "wasmplugin",
        "--namespace",
        "foo",
        "--label",
        "app=echo",
        "--all",
        &f,
    ]);
    assert_eq!(all.code, 0, "{}", all.stderr);
    assert_eq!(carried(&all.stdout).len(), 6);
}

#[test]
fn a_manifest_over_the_api_limit_is_refused_with_its_size() {
    // 1,000 policies of 40 paths each: about 1.9 MB in each WasmPlugin.
    let paths: Vec<String> = (0..40).map(|i| format!("/api/v1/resource-{i}/*")).collect();
    let text: String = (0..1000)
        .map(|i| {
            format!(
                "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: p{i:04}, namespace: foo}}\nspec:\n  selector: {{matchLabels: {{app: echo}}}}\n  action: DENY\n  rules:\n  - to: [{{operation: {{ports: [\"8080\"], paths: [{}]}}}}]\n---\n",
                paths.join(", ")
            )
        })
        .collect();
    let f = file("many.yaml", &text);
    let mut args = vec![
        "render",
        "wasmplugin",
        "--namespace",
        "foo",
        "--label",
        "app=echo",
        "--http-port",
        "8080",
    ];
    args.push(&f);
    let out = run(&args);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stdout.is_empty(), "nothing printed when refused");
    assert!(
        out.stderr
            .contains("over the Kubernetes API's request limit of 1572864 bytes"),
        "{}",
        out.stderr
    );
    // Another workload's attachment does not carry them and fits.
    args[5] = "app=other";
    let out = run(&args);
    assert_eq!(out.code, 0, "{}", out.stderr);
}

#[test]
fn a_remote_module_needs_its_digest_and_gets_its_cluster() {
    let f = file("one.yaml", &policy("foo", "a", ""));
    let base = ["render", "envoyfilter", "--namespace", "foo"];
    let with = |extra: &[&str]| {
        let mut a = base.to_vec();
        a.extend_from_slice(extra);
        a.push(&f);
        run(&a)
    };
    let out = with(&["--url", "https://modules.example:8443/meshauthz.wasm"]);
    assert_eq!(out.code, 2, "{}", out.stdout);
    assert!(out.stderr.contains("needs --sha256"), "{}", out.stderr);
    let out = with(&["--url", "oci://registry.example/meshauthz:0.1.0"]);
    assert_eq!(out.code, 2);

    let sha = "ab".repeat(32);
    let out = with(&[
        "--url",
        "https://modules.example:8443/meshauthz.wasm",
        "--sha256",
        &sha,
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let ef = &docs(&out.stdout)[0];
    let patches = ef["spec"]["configPatches"].as_array().unwrap();
    let wasm = &patches
        .iter()
        .find(|p| p["patch"]["value"]["name"] == "envoy.filters.http.wasm")
        .expect("the module's HTTP filter")["patch"]["value"]["typed_config"]["config"]
        ["vm_config"]["code"]["remote"];
    assert_eq!(wasm["sha256"], sha.as_str());
    let cluster_name = wasm["http_uri"]["cluster"].as_str().unwrap();
    let cluster = patches
        .iter()
        .find(|p| p["applyTo"] == "CLUSTER")
        .expect("the cluster the fetch names")["patch"]["value"]
        .clone();
    assert_eq!(cluster["name"], cluster_name);
    let addr = &cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
        ["address"]["socket_address"];
    assert_eq!(addr["address"], "modules.example");
    assert_eq!(addr["port_value"], 8443);
    assert_eq!(
        cluster["transport_socket"]["typed_config"]["sni"],
        "modules.example"
    );

    // A local module: no cluster; its digest is computed for the WasmPlugin.
    let module = file("m.wasm", "\0asm-module-bytes");
    let url = format!("file://{module}");
    let out = with(&["--url", &url]);
    assert_eq!(out.code, 0);
    assert!(!out.stdout.contains("applyTo: CLUSTER"));
    let out = run(&[
        "render",
        "wasmplugin",
        "--namespace",
        "foo",
        "--url",
        &url,
        &f,
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let plugin = &docs(&out.stdout)[0];
    // sha256 of "\0asm-module-bytes".
    let want = {
        let o = Command::new("sha256sum").arg(&module).output().unwrap();
        String::from_utf8(o.stdout).unwrap()[..64].to_string()
    };
    assert_eq!(plugin["spec"]["sha256"], want.as_str());
}

fn audit(ns: &str, name: &str, selector: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  {selector}\n  action: AUDIT\n  rules:\n  - to: [{{operation: {{paths: [/{name}]}}}}]\n---\n"
    )
}

/// The shape of a rendered set: object names, the filters the EnvoyFilters insert, and the
/// `enforce` key of the plugin configuration (`None` when absent: the default, separate).
struct Shape {
    names: Vec<String>,
    patched: Vec<String>,
    enforce: Option<String>,
    /// How many request companions (`set_filter_state` before the HTTP decide stage) are placed;
    /// not in `patched`.
    request_companions: usize,
}

fn shape(yaml: &str) -> Shape {
    let docs = docs(yaml);
    let names = docs
        .iter()
        .map(|d| d["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    let mut patched = Vec::new();
    let mut enforce = None;
    let mut request_companions = 0;
    for d in &docs {
        if d["kind"] == "WasmPlugin" {
            enforce = d["spec"]["pluginConfig"]["enforce"]
                .as_str()
                .map(str::to_string);
        }
        for p in d["spec"]["configPatches"].as_array().into_iter().flatten() {
            let value = &p["patch"]["value"];
            let Some(name) = value["name"].as_str() else {
                continue;
            };
            if name == "envoy.filters.http.set_filter_state" {
                request_companions += 1;
                continue;
            }
            let root_id = value["typed_config"]["config"]["root_id"].as_str();
            patched.push(root_id.unwrap_or(name).to_string());
            if let Some(config) = value["typed_config"]["config"]["configuration"]["value"].as_str()
            {
                let config: Value = serde_json::from_str(config).unwrap();
                if config.get("policies").is_some() {
                    enforce = config["enforce"].as_str().map(str::to_string);
                }
            }
        }
    }
    // Every shape with an HTTP Wasm stage has the request companion right before it, once.
    let http_stage = docs.iter().any(|d| {
        d["spec"]["pluginName"] == "meshauthz_http" || patched.iter().any(|p| p == "meshauthz_http")
    });
    assert_eq!(request_companions, usize::from(http_stage), "{yaml}");
    Shape {
        names,
        patched,
        enforce,
        request_companions,
    }
}

fn render_with(kind: &str, extra: &[&str], file: &str) -> Out {
    let mut args = vec![
        "render",
        kind,
        "--namespace",
        "foo",
        "--label",
        "app=echo",
        "--http-port",
        "8080",
        "--tcp-port",
        "9000",
    ];
    args.extend_from_slice(extra);
    args.push(file);
    run(&args)
}

/// Issue 12: without AUDIT the attachments are the decide stages alone (one Wasm call per
/// request, `"enforce": "decide"`), with the peer-SAN companions kept; an AUDIT policy that may
/// apply to a selected pod brings the full chain back.
#[test]
fn render_follows_the_policy_set() {
    let no_audit = file(
        "no-audit.yaml",
        &[
            policy("foo", "deny-admin", ""),
            // An AUDIT policy for another app, and one in another namespace: they cannot apply.
            audit("foo", "other-app", "selector: {matchLabels: {app: other}}"),
            audit("bar", "other-ns", ""),
        ]
        .concat(),
    );
    let out = render_with("wasmplugin", &[], &no_audit);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.contains("the decide stages alone"),
        "{}",
        out.stderr
    );
    let s = shape(&out.stdout);
    assert_eq!(
        s.names,
        [
            "meshauthz-http",
            "meshauthz-net",
            "meshauthz-audit-companion"
        ]
    );
    assert_eq!(s.enforce.as_deref(), Some("decide"));
    // The SAN companions (first on the HTTP chains and on the TCP port's), and on the TCP port
    // the guard that refuses the verdict of a port misdeclared in httpPorts.
    assert_eq!(
        s.patched,
        [
            "envoy.filters.network.rbac",
            "envoy.filters.network.set_filter_state",
            "envoy.filters.network.set_filter_state"
        ]
    );
    assert!(out.stdout.contains("meshauthz-http-port-on-tcp-chain"));
    let plugins = docs(&out.stdout);
    // Without an enforce stage the network stage decides on TCP ports and watches HTTP ones.
    assert_eq!(
        plugins[1]["spec"]["match"][0]["ports"],
        serde_json::json!([{"number": 8080}, {"number": 9000}])
    );

    let out = render_with("envoyfilter", &[], &no_audit);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let s = shape(&out.stdout);
    assert_eq!(s.enforce.as_deref(), Some("decide"));
    assert_eq!(
        s.patched,
        [
            "meshauthz_http",
            "meshauthz_net",
            "envoy.filters.network.rbac",
            "envoy.filters.network.set_filter_state",
            "envoy.filters.network.set_filter_state"
        ]
    );

    // An AUDIT policy whose selector a selected pod may match (app=echo plus version=v2).
    let with_audit = file(
        "with-audit.yaml",
        &[
            policy("foo", "deny-admin", ""),
            audit(
                "foo",
                "audit-v2",
                "selector: {matchLabels: {app: echo, version: v2}}",
            ),
        ]
        .concat(),
    );
    let full_wasmplugins = [
        "meshauthz-http",
        "meshauthz-http-enforce",
        "meshauthz-net",
        "meshauthz-net-enforce",
        "meshauthz-audit-companion",
    ];
    // The RBAC LOG companions: after the network decide stage on the TCP port, after the HTTP
    // decide stage.
    let full_patches = [
        "envoy.filters.network.rbac",
        "envoy.filters.http.rbac",
        "envoy.filters.network.set_filter_state",
        "envoy.filters.network.set_filter_state",
    ];
    let out = render_with("wasmplugin", &[], &with_audit);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.contains("the full chain"), "{}", out.stderr);
    let s = shape(&out.stdout);
    assert_eq!(s.names, full_wasmplugins);
    assert_eq!(s.patched, full_patches);
    assert_eq!(s.enforce, None);
    let out = render_with("envoyfilter", &[], &with_audit);
    assert_eq!(
        shape(&out.stdout).patched,
        [
            "meshauthz_http",
            "envoy.filters.http.rbac",
            "meshauthz_http_enforce",
            "meshauthz_net",
            "envoy.filters.network.rbac",
            "meshauthz_net_enforce",
            "envoy.filters.network.set_filter_state",
            "envoy.filters.network.set_filter_state"
        ]
    );

    // The full chain on request, without AUDIT (AUDIT policies can be added later without
    // re-rendering the attachments).
    let out = render_with("wasmplugin", &["--enforce", "separate"], &no_audit);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let s = shape(&out.stdout);
    assert_eq!(s.names, full_wasmplugins);
    assert_eq!(s.patched, full_patches);
    assert_eq!(s.enforce, None);

    // `native`: the decide stages, the RBAC LOG companions and Envoy's RBAC filter in DENY mode
    // after them (no Wasm enforce stage), with or without AUDIT policies.
    for file in [&with_audit, &no_audit] {
        let out = render_with("wasmplugin", &["--enforce", "native"], file);
        assert_eq!(out.code, 0, "{}", out.stderr);
        let s = shape(&out.stdout);
        assert_eq!(
            s.names,
            [
                "meshauthz-http",
                "meshauthz-net",
                "meshauthz-audit-companion"
            ]
        );
        assert_eq!(s.enforce.as_deref(), Some("native"));
        assert_eq!(
            s.patched,
            [
                "envoy.filters.network.rbac",
                "envoy.filters.network.rbac",
                "envoy.filters.http.rbac",
                "envoy.filters.http.rbac",
                "envoy.filters.network.set_filter_state",
                "envoy.filters.network.set_filter_state"
            ]
        );
        // Inserted right after the decide stages one after the other (network, then HTTP): DENY
        // first, so that the LOG companion inserted next sits between the decide stage and it.
        let actions: Vec<String> = docs(&out.stdout)
            .iter()
            .flat_map(|d| {
                d["spec"]["configPatches"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .filter_map(|p| {
                p["patch"]["value"]["typed_config"]["rules"]["action"]
                    .as_str()
                    .map(|a| format!("{} {a}", p["patch"]["operation"].as_str().unwrap_or("")))
            })
            .collect();
        assert_eq!(
            actions,
            [
                "INSERT_AFTER DENY",
                "INSERT_AFTER LOG",
                "INSERT_AFTER DENY",
                "INSERT_AFTER LOG"
            ]
        );
        let out = render_with("envoyfilter", &["--enforce", "native"], file);
        assert_eq!(out.code, 0, "{}", out.stderr);
        let s = shape(&out.stdout);
        assert_eq!(s.enforce.as_deref(), Some("native"));
        assert_eq!(
            s.patched,
            [
                "meshauthz_http",
                "envoy.filters.http.rbac",
                "envoy.filters.http.rbac",
                "meshauthz_net",
                "envoy.filters.network.rbac",
                "envoy.filters.network.rbac",
                "envoy.filters.network.set_filter_state",
                "envoy.filters.network.set_filter_state"
            ]
        );
    }

    // `decide` where an AUDIT policy may apply: refused as the module would refuse it.
    let out = render_with("wasmplugin", &["--enforce", "decide"], &with_audit);
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(out.stdout.is_empty());
    assert!(
        out.stderr
            .contains("--enforce decide: AUDIT policies apply to this workload (foo/audit-v2)"),
        "{}",
        out.stderr
    );
}

/// `plugin-config` follows the policies that apply to the named workload, exactly as the module
/// selects them.
#[test]
fn plugin_config_follows_the_policies_that_apply() {
    let f = file(
        "pc.yaml",
        &[
            policy("foo", "deny-admin", ""),
            audit(
                "foo",
                "audit-v2",
                "selector: {matchLabels: {app: echo, version: v2}}",
            ),
        ]
        .concat(),
    );
    let config = |labels: &[&str], extra: &[&str]| {
        let mut args = vec!["plugin-config", "--namespace", "foo"];
        for l in labels {
            args.extend(["--label", l]);
        }
        args.extend_from_slice(extra);
        args.push(&f);
        run(&args)
    };
    let enforce = |out: &Out| {
        assert_eq!(out.code, 0, "{}", out.stderr);
        let v: Value = serde_json::from_str(&out.stdout).unwrap();
        v.get("enforce").cloned()
    };
    // app=echo without version=v2: the AUDIT policy does not select it.
    assert_eq!(
        enforce(&config(&["app=echo"], &[])),
        Some(Value::from("decide"))
    );
    assert_eq!(enforce(&config(&["app=echo", "version=v2"], &[])), None);
    assert_eq!(
        enforce(&config(&["app=echo"], &["--enforce", "separate"])),
        None
    );
    assert_eq!(
        enforce(&config(&["app=echo"], &["--enforce", "decide"])),
        Some(Value::from("decide"))
    );
    assert_eq!(
        enforce(&config(
            &["app=echo", "version=v2"],
            &["--enforce", "native"]
        )),
        Some(Value::from("native"))
    );
    let refused = config(&["app=echo", "version=v2"], &["--enforce", "decide"]);
    assert_eq!(refused.code, 1);
    assert!(refused.stdout.is_empty());
    assert!(
        refused.stderr.contains("(foo/audit-v2)"),
        "{}",
        refused.stderr
    );
    let bad = config(&["app=echo"], &["--enforce", "inline"]);
    assert_eq!(bad.code, 2, "{}", bad.stderr);
    // `connection`: the DENY reads paths, so a connection cannot be decided once; refused here
    // as the module refuses it.
    let refused = config(&["app=echo"], &["--enforce", "connection"]);
    assert_eq!(refused.code, 1, "{}", refused.stderr);
    assert!(refused.stdout.is_empty());
    assert!(
        refused.stderr.contains("paths / request.path"),
        "{}",
        refused.stderr
    );
}

/// An ALLOW that reads only the connection (a principal).
const BY_PRINCIPAL: &str = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: allow-bar, namespace: foo}\nspec:\n  action: ALLOW\n  rules:\n  - from: [{source: {principals: [cluster.local/ns/foo/sa/bar]}}]\n---\n";

/// `--enforce connection` is written for policies that read only the connection and refused with
/// AUDIT.
#[test]
fn connection_mode_is_written_only_for_connection_level_policies() {
    let by_principal = BY_PRINCIPAL;
    let f = file("conn.yaml", by_principal);
    let out = run(&[
        "plugin-config",
        "--namespace",
        "foo",
        "--enforce",
        "connection",
        &f,
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["enforce"], "connection");

    let with_audit = file(
        "conn-audit.yaml",
        &[
            by_principal,
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: audit-all, namespace: foo}\nspec:\n  action: AUDIT\n  rules:\n  - from: [{source: {notNamespaces: [foo]}}]\n---\n",
        ]
        .concat(),
    );
    let out = run(&[
        "plugin-config",
        "--namespace",
        "foo",
        "--enforce",
        "connection",
        &with_audit,
    ]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("(foo/audit-all)"), "{}", out.stderr);

    // Written for a plugin configuration only on request: the template is the user's choice.
    let out = run(&["plugin-config", "--namespace", "foo", &f]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["enforce"], "decide", "{v}");
}

/// Issue 12: `render` picks the connection shape when no policy that can apply reads a request
/// attribute and no AUDIT policy can apply: the network stage on the HTTP and TCP ports, Envoy's
/// RBAC filter on the connection's verdict before the router of each HTTP port, and no HTTP Wasm
/// stage; a policy that may apply to a pod of the selection and reads the request (a selector on
/// a label the selection does not fix) keeps the Wasm stage per request.
#[test]
fn render_picks_the_connection_shape_for_connection_level_policies() {
    let by_principal = BY_PRINCIPAL;
    let f = file("conn-render.yaml", by_principal);
    for extra in [&[][..], &["--enforce", "connection"][..]] {
        let out = render_with("wasmplugin", extra, &f);
        assert_eq!(out.code, 0, "{}", out.stderr);
        let s = shape(&out.stdout);
        assert_eq!(
            s.names,
            ["meshauthz-net", "meshauthz-audit-companion"],
            "{}",
            out.stdout
        );
        assert_eq!(s.enforce.as_deref(), Some("connection"));
        assert_eq!(s.request_companions, 0, "no HTTP Wasm stage to feed");
        assert!(
            s.patched.iter().any(|p| p == "envoy.filters.http.rbac"),
            "{:?}",
            s.patched
        );
        let docs = docs(&out.stdout);
        assert_eq!(
            docs[0]["spec"]["match"][0]["ports"],
            serde_json::json!([{"number": 8080}, {"number": 9000}]),
            "the network stage runs on the HTTP port too"
        );
        let rbac = docs[1]["spec"]["configPatches"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["patch"]["value"]["name"] == "envoy.filters.http.rbac")
            .unwrap();
        assert_eq!(rbac["match"]["listener"]["portNumber"], 8080, "{rbac}");
        assert_eq!(rbac["patch"]["operation"], "INSERT_BEFORE");
        assert!(rbac.to_string().contains("wasm.meshauthz_conn_decision"));
    }
    let out = render_with("envoyfilter", &[], &f);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.contains("decided once"), "{}", out.stderr);
    let s = shape(&out.stdout);
    assert_eq!(s.enforce.as_deref(), Some("connection"));
    assert!(
        !s.patched.iter().any(|p| p == "meshauthz_http"),
        "{:?}",
        s.patched
    );
    assert_eq!(
        s.patched.iter().filter(|p| *p == "meshauthz_net").count(),
        2,
        "HTTP and TCP port: {:?}",
        s.patched
    );
    assert!(
        out.stdout
            .contains("decision=%FILTER_STATE(wasm.meshauthz_conn_decision:PLAIN)%"),
        "the access log shows the connection's verdict"
    );

    // A path policy that may apply to some pods of the selection (version unknown).
    let maybe_paths = file(
        "conn-render-paths.yaml",
        &[
            by_principal,
            &policy(
                "foo",
                "deny-admin",
                "selector: {matchLabels: {version: v2}}",
            ),
        ]
        .concat(),
    );
    let out = render_with("wasmplugin", &[], &maybe_paths);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(shape(&out.stdout).enforce.as_deref(), Some("decide"));
    let out = render_with("wasmplugin", &["--enforce", "connection"], &maybe_paths);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("paths / request.path"),
        "{}",
        out.stderr
    );

    // Without HTTP ports there is nothing to decide per connection.
    let out = run(&[
        "render",
        "wasmplugin",
        "--namespace",
        "foo",
        "--enforce",
        "connection",
        &f,
    ]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("--http-port"), "{}", out.stderr);
}

/// `render` reads a `file://` module's recorded features (`make build` writes them): a module
/// built without CEL is refused for policies with a CEL condition (it would refuse them), and
/// suggested when no policy carried has one.
#[test]
fn render_checks_the_module_for_cel() {
    let cel = file(
        "cel-render.yaml",
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: public-only, namespace: foo}\nspec:\n  rules:\n  - from: [{source: {principals: [cluster.local/ns/foo/sa/bar]}}]\n    when:\n    - key: meshauthz.io/cel\n      values: [\"request.path == '/public'\"]\n",
    );
    let plain = file("plain-render.yaml", BY_PRINCIPAL);
    let module = |name: &str, features: &str| {
        let empty = b"\0asm\x01\0\0\0";
        let wasm = meshauthz_tools::wasm::with_custom_section(
            empty,
            meshauthz_tools::wasm::FEATURES_SECTION,
            features.as_bytes(),
        )
        .unwrap();
        let path = std::path::Path::new(&plain).with_file_name(name);
        std::fs::write(&path, wasm).unwrap();
        format!("file://{}", path.display())
    };
    let (with, without) = (module("with.wasm", "cel"), module("without.wasm", ""));
    let render = |url: &str, f: &str| {
        run(&[
            "render",
            "wasmplugin",
            "--namespace",
            "foo",
            "--http-port",
            "8080",
            "--url",
            url,
            f,
        ])
    };
    let out = render(&without, &cel);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("built without CEL"), "{}", out.stderr);
    assert!(out.stderr.contains("foo/public-only"), "{}", out.stderr);
    let out = render(&with, &cel);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        !out.stderr.contains("meshauthz-nocel.wasm"),
        "{}",
        out.stderr
    );
    let out = render(&with, &plain);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.contains("meshauthz-nocel.wasm"),
        "the suggestion: {}",
        out.stderr
    );
    let out = render(&without, &plain);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        !out.stderr.contains("meshauthz-nocel.wasm"),
        "{}",
        out.stderr
    );
}

/// Every object of an attachment carries `meshauthz.io/attachment: NAME`, whatever the chain's
/// shape, so that `kubectl apply --prune -l meshauthz.io/attachment=NAME` removes the objects an
/// earlier render created and this one no longer does (a switch from the full chain to the
/// connection shape leaves `NAME-http` and the enforce stages behind otherwise); a name that
/// cannot be a label value is refused before anything is rendered.
#[test]
fn every_object_is_labelled_with_its_attachment() {
    let by_principal = file("labels-conn.yaml", BY_PRINCIPAL);
    let with_audit = file(
        "labels-audit.yaml",
        &[BY_PRINCIPAL, &audit("foo", "audit-all", "")].concat(),
    );
    let mut names = Vec::new();
    for (f, kind) in [
        (&by_principal, "wasmplugin"),
        (&with_audit, "wasmplugin"),
        (&by_principal, "envoyfilter"),
        (&with_audit, "envoyfilter"),
    ] {
        let out = render_with(kind, &["--name", "shop-authz"], f);
        assert_eq!(out.code, 0, "{}", out.stderr);
        for doc in docs(&out.stdout) {
            let labels = &doc["metadata"]["labels"];
            assert_eq!(labels["meshauthz.io/attachment"], "shop-authz", "{doc}");
            assert_eq!(labels["app.kubernetes.io/managed-by"], "meshauthz", "{doc}");
            names.push(doc["metadata"]["name"].as_str().unwrap().to_string());
        }
    }
    // The shapes differ in their objects; the label is what ties them together.
    assert!(
        names.iter().any(|n| n == "shop-authz-http-enforce"),
        "{names:?}"
    );
    assert!(names.iter().any(|n| n == "shop-authz-net"), "{names:?}");

    for (bad, says) in [
        ("Shop", "'S' is not allowed"),
        ("shop_authz", "'_' is not allowed"),
        ("-shop", "begins and ends"),
        ("shop.", "begins and ends"),
        (&"a".repeat(64)[..], "at most 63"),
    ] {
        let out = render_with("wasmplugin", &[&format!("--name={bad}")], &by_principal);
        assert_eq!(out.code, 2, "{bad}: {}", out.stdout);
        assert!(out.stdout.is_empty(), "{bad}: nothing rendered");
        assert!(
            out.stderr.contains("--name") && out.stderr.contains(says),
            "{bad}: {}",
            out.stderr
        );
    }
    let out = render_with("wasmplugin", &["--name", &"a".repeat(63)], &by_principal);
    assert_eq!(
        out.code, 0,
        "63 characters are a valid label value: {}",
        out.stderr
    );
}
