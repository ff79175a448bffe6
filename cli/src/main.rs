//! `meshauthz`: the policy engine from the command line.
//!
//! ```text
//! meshauthz validate POLICY.yaml...                       every error and warning, exit 1 on errors
//! meshauthz check --namespace foo --principal spiffe://cluster.local/ns/bar/sa/x --path /admin POLICY.yaml...
//! meshauthz mode --namespace foo --port 8080 POLICY.yaml...
//! meshauthz test CASES.yaml...                            policy unit tests (JUnit with --junit)
//! meshauthz plugin-config --namespace foo --label app=echo POLICY.yaml...   the filter's JSON configuration
//! ```
//!
//! Every command reads its files with one rule for objects without `metadata.namespace` (the
//! `--namespace` given, else `default`, as `kubectl apply`), and `plugin-config`/`render` write
//! through the engine's one writer (`policy_engine::PluginConfig::write`), which the module's
//! decoder reads back unchanged.

mod cases;
mod explain;
mod readiness;
mod render;

use std::collections::BTreeMap;
use std::io::IsTerminal as _;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use policy_engine::{
    load_str, Action, Diagnostic, Diagnostics, EnforceMode, Engine, LoadOptions, MeshConfig,
    PluginConfig, PolicySet, Workload,
};
use serde_json::json;

/// Exit statuses; they never collide (a usage error is not a DENY).
mod exit {
    /// Success: valid input, ALLOW, every test case passed.
    pub const OK: u8 = 0;
    /// Invalid input (a policy error, an unreadable file, a broken case file) or a failed test case.
    pub const FAILURE: u8 = 1;
    /// Usage error: an unknown flag, a missing or malformed argument (clap's status).
    pub const USAGE: u8 = 2;
    /// `check`: the request or connection is denied.
    pub const DENY: u8 = 3;
    /// `check`: the connection is reset (plaintext on a STRICT port, TLS on a DISABLE port).
    pub const RESET: u8 = 4;
    /// `strict-readiness`: plaintext is still accepted on a port.
    pub const NOT_READY: u8 = 5;
    /// `strict-readiness`: too little evidence either way.
    pub const NOT_ENOUGH_DATA: u8 = 6;
}

const EXIT_CODES: &str =
    "Exit status: 0 ok (valid, ALLOW, all cases passed); 1 invalid input or a \
failed test case; 2 usage error; 3 check: DENY; 4 check: RESET (plaintext on a STRICT port, TLS on \
a DISABLE port); 5 strict-readiness: not ready; 6 strict-readiness: not enough data.";

#[derive(Parser)]
#[command(
    name = "meshauthz",
    version,
    about = "Istio AuthorizationPolicy and PeerAuthentication, evaluated locally",
    after_help = EXIT_CODES
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Output {
    /// For people.
    Text,
    /// One JSON document on standard output (fields documented in the README).
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Load and validate policies; print every error and warning.
    #[command(after_help = concat!(
        "Example:\n  meshauthz validate envoy-config/policies/*.yaml\n  kubectl get authorizationpolicies,peerauthentications -A -o yaml | meshauthz validate -\n\n",
        "Exit status: 0 valid (warnings allowed); 1 errors; 2 usage error."))]
    Validate {
        /// Namespace of objects without `metadata.namespace` (as `kubectl apply -n`).
        #[arg(long, default_value = "default", value_parser = non_empty)]
        namespace: String,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
        /// Istio objects: YAML or JSON, multi-document, `kind: List`. `-` reads standard input.
        #[arg(required = true)]
        files: Vec<String>,
    },
    /// Evaluate one request or connection against the policies of a workload, and explain why.
    #[command(after_help = concat!(
        "Example:\n  meshauthz check --namespace foo --label app=echo --port 8080 \\\n",
        "    --principal spiffe://cluster.local/ns/istioinaction/sa/sleep --path /admin envoy-config/policies/*.yaml\n\n",
        "Exit status: 0 ALLOW; 1 invalid input; 2 usage error; 3 DENY; 4 RESET."))]
    Check(CheckArgs),
    /// Print the PeerAuthentication mode of a workload port (or of every port) and which
    /// PeerAuthentication set it.
    #[command(after_help = concat!(
        "Example:\n  meshauthz mode --namespace foo --label app=echo --port 8080 envoy-config/policies/*.yaml\n\n",
        "Modes: DISABLE, PERMISSIVE, STRICT, and STRICT (report-only): a STRICT made report-only by the\n",
        "PeerAuthentication's annotation meshauthz.io/strict-report-only (\"true\": every STRICT it sets;\n",
        "\"8080,9000\": those ports' STRICT). The module then admits plaintext, authorizes it as on\n",
        "PERMISSIVE, and counts (meshauthz.plaintext.<port>.report_only) and logs each connection it\n",
        "would have reset. JSON: {\"mode\": \"STRICT\", \"reportOnly\": true, ...}.\n\n",
        "Exit status: 0 ok; 1 invalid input; 2 usage error."))]
    Mode {
        #[command(flatten)]
        workload: WorkloadArgs,
        /// The workload port; omit to list the mode of every port.
        #[arg(long)]
        port: Option<u16>,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
        /// Istio objects: YAML or JSON, multi-document, `kind: List`. `-` reads standard input.
        #[arg(required = true)]
        files: Vec<String>,
    },
    /// Run policy unit tests: case files of requests/connections and their expected outcomes.
    #[command(after_help = concat!(
        "Example:\n  meshauthz test envoy-config/policy-tests/*.yaml --junit target/policy-tests.xml\n\n",
        "Case file format: envoy-config/policy-tests/README.md.\n\n",
        "Exit status: 0 every case passed; 1 a case failed or a case file is broken; 2 usage error."))]
    Test {
        /// Write a JUnit XML report here as well.
        #[arg(long)]
        junit: Option<PathBuf>,
        /// Run only the cases whose name contains this text.
        #[arg(long)]
        filter: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
        /// Case files (YAML).
        #[arg(required = true)]
        files: Vec<String>,
    },
    /// Is it safe to switch to STRICT? Per port, from the module's plaintext counters on Envoy's
    /// admin endpoint (and the access log): plaintext seen since when, the callers, a verdict.
    #[command(after_help = concat!(
        "Example:\n  meshauthz strict-readiness --admin http://127.0.0.1:9901 --access-log .sandbox/server-access.log --port 8080\n\n",
        "Exit status: 0 ready; 1 the admin endpoint or the log cannot be read; 2 usage error; 5 not ready; 6 not enough data."))]
    StrictReadiness {
        /// Envoy's admin address, `http://HOST:PORT`.
        #[arg(long)]
        admin: String,
        /// Envoy's access log (JSON lines with `chain`/`peer`/`audit`, or `render`'s text format).
        #[arg(long)]
        access_log: Option<String>,
        /// A workload port to judge; repeat for more. Default: every port with counters.
        #[arg(long = "port")]
        ports: Vec<u16>,
        /// Less Envoy uptime than this (seconds) is not enough evidence.
        #[arg(long, default_value_t = 3600)]
        min_uptime: u64,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
    },
    /// Render Istio attachments (`wasmplugin` or `envoyfilter`) carrying these policies.
    #[command(after_help = concat!(
        "Example:\n  meshauthz render wasmplugin --namespace foo --label app=echo --http-port 8080 \\\n",
        "    --url oci://registry.example/meshauthz:0.1.0 envoy-config/policies/*.yaml\n\n",
        "Exit status: 0 ok; 1 invalid input; 2 usage error."))]
    Render(RenderArgs),
    /// Print the filter's plugin configuration (JSON) carrying these policies for a workload.
    #[command(after_help = concat!(
        "Example:\n  meshauthz plugin-config --namespace foo --label app=echo --http-port 8080 envoy-config/policies/*.yaml\n\n",
        "Exit status: 0 ok; 1 invalid input; 2 usage error."))]
    PluginConfig {
        #[command(flatten)]
        workload: WorkloadArgs,
        /// Filter chains that carry plaintext (checked against STRICT ports).
        #[arg(long = "plaintext-chain", default_value = "plaintext", value_parser = non_empty)]
        plaintext_chains: Vec<String>,
        /// Ports whose traffic is HTTP (authorized per request); every other port is authorized
        /// at L4 with Istio's TCP semantics.
        #[arg(long = "http-port")]
        http_ports: Vec<u16>,
        /// The chain the configuration is written for: `auto` follows the policy set (`decide`
        /// when no AUDIT policy applies to the workload, else `separate`); `separate` always
        /// (the full chain: add AUDIT policies later without re-rendering); `decide` refused
        /// when an AUDIT policy applies.
        #[arg(long, value_enum, default_value = "auto")]
        enforce: Enforce,
        /// Indent the JSON (the default when standard output is a terminal).
        #[arg(long)]
        pretty: bool,
        /// Istio objects: YAML or JSON, multi-document, `kind: List`. `-` reads standard input.
        #[arg(required = true)]
        files: Vec<String>,
    },
}

/// `--enforce`: which chain the plugin configuration (and `render`'s attachments) are for.
#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum)]
enum Enforce {
    /// `decide` when no AUDIT policy applies to the workload, else `separate`; `render` picks
    /// `connection` when, besides, no policy that may apply reads a request attribute and HTTP
    /// ports are given.
    Auto,
    /// The decide stage answers denials itself: one Wasm filter per request, no RBAC LOG
    /// companion, no enforce stage. Refused when an AUDIT policy applies.
    Decide,
    /// Decide stage, RBAC LOG companion (the audit trail), enforce stage.
    Separate,
    /// Decide stage, RBAC LOG companion, then Envoy's own RBAC filter denying on the decision
    /// (templates `*-native.yaml`): one Wasm filter per request with AUDIT policies too.
    Native,
    /// `meshauthz_net` decides each connection once and Envoy's RBAC filter answers its requests
    /// (template `server-http-conn.yaml`; `render`: on the `--http-port` ports): no Wasm filter
    /// per request. Refused when a policy reads a request attribute or AUDIT applies.
    Connection,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum RenderKind {
    /// `WasmPlugin`s (Istio fetches the module) plus the audit companion `EnvoyFilter`.
    Wasmplugin,
    /// One `EnvoyFilter` carrying the module, its companions and the access-log format.
    Envoyfilter,
}

#[derive(Args)]
struct RenderArgs {
    /// What to render.
    kind: RenderKind,
    /// Object name of the attachment.
    #[arg(long, default_value = "meshauthz")]
    name: String,
    /// The workload namespace; the attachment's selector is the workload's labels.
    #[command(flatten)]
    workload: WorkloadArgs,
    /// Where Istio (or Envoy) fetches the module: `oci://...`, `file://...`, `https://...`.
    #[arg(long, default_value = "file:///var/local/wasm/meshauthz.wasm")]
    url: String,
    /// The module's sha256, 64 hex digits: required for an `http(s)://` URL; computed from the
    /// file for a readable `file://` URL.
    #[arg(long)]
    sha256: Option<String>,
    /// Carry every policy given (a configuration deliberately shared by several workloads);
    /// without it only the policies that can apply to the selected workloads (their namespace
    /// and the root namespace's, selectors not contradicting the labels) are carried.
    #[arg(long)]
    all: bool,
    /// HTTP ports to attach to (workload ports).
    #[arg(long = "http-port")]
    http_ports: Vec<u16>,
    /// TCP ports to attach to (L4 authorization).
    #[arg(long = "tcp-port")]
    tcp_ports: Vec<u16>,
    /// The chain the attachments are rendered for: `auto` follows the policy set (`connection`
    /// when no policy that may apply reads a request attribute and no AUDIT policy may apply,
    /// with `--http-port` given; else `decide` without AUDIT, `separate` with); `separate`
    /// always (the full chain: add AUDIT policies later without re-rendering); `decide` and
    /// `connection` refused when the policies need more.
    #[arg(long, value_enum, default_value = "auto")]
    enforce: Enforce,
    /// Istio objects: YAML or JSON, multi-document, `kind: List`. `-` reads standard input.
    #[arg(required = true)]
    files: Vec<String>,
}

#[derive(Args, Clone)]
struct WorkloadArgs {
    /// The workload's namespace; also the namespace of objects without `metadata.namespace`
    /// (kubectl's rule: the namespace you name, else `default`).
    #[arg(long, default_value = "default", value_parser = non_empty)]
    namespace: String,
    /// A workload label, `key=value`; repeat for more.
    #[arg(long = "label", value_parser = parse_label)]
    labels: Vec<(String, String)>,
    /// `meshConfig.rootNamespace`: its policies apply to every workload.
    #[arg(long, default_value = "istio-system", value_parser = non_empty)]
    root_namespace: String,
    /// `meshConfig.trustDomain`.
    #[arg(long, default_value = "cluster.local", value_parser = non_empty)]
    trust_domain: String,
    /// `meshConfig.trustDomainAliases`; repeat for more.
    #[arg(long = "trust-domain-alias", value_parser = non_empty)]
    trust_domain_aliases: Vec<String>,
}

fn non_empty(s: &str) -> Result<String, String> {
    if s.trim().is_empty() {
        Err("must not be empty".to_string())
    } else {
        Ok(s.to_string())
    }
}

#[derive(Args)]
struct CheckArgs {
    #[command(flatten)]
    workload: WorkloadArgs,
    /// The peer's SPIFFE identity (implies an mTLS connection); omit for plaintext.
    #[arg(long)]
    principal: Option<String>,
    /// The direct peer address (`ipBlocks`, `source.ip`).
    #[arg(long)]
    source_ip: Option<IpAddr>,
    /// The client address after X-Forwarded-For / PROXY protocol (`remoteIpBlocks`); defaults
    /// to --source-ip.
    #[arg(long)]
    remote_ip: Option<IpAddr>,
    /// The local address (`destination.ip`).
    #[arg(long)]
    destination_ip: Option<IpAddr>,
    /// The workload port (`ports`, and the port's mTLS mode); omit to be told the mode of every port.
    #[arg(long)]
    port: Option<u16>,
    /// The TLS server name (`connection.sni`).
    #[arg(long)]
    sni: Option<String>,
    /// Check a TCP connection (no HTTP attributes) instead of an HTTP request.
    #[arg(long)]
    tcp: bool,
    /// The `:authority` (`hosts`).
    #[arg(long)]
    host: Option<String>,
    /// The `:method` (`methods`).
    #[arg(long, default_value = "GET")]
    method: String,
    /// The `:path` as sent, query included (`paths`).
    #[arg(long, default_value = "/")]
    path: String,
    /// A request header, `name: value`; repeat for more.
    #[arg(long = "header", value_parser = parse_header)]
    headers: Vec<(String, String)>,
    /// The verified JWT payload, as JSON (`requestPrincipals`, `request.auth.claims`).
    #[arg(long)]
    jwt: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    output: Output,
    /// Istio objects: YAML or JSON, multi-document, `kind: List`. `-` reads standard input.
    #[arg(required = true)]
    files: Vec<String>,
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("expected key=value, found {s:?}"))
}

fn parse_header(s: &str) -> Result<(String, String), String> {
    s.split_once(':')
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .ok_or_else(|| format!("expected `name: value`, found {s:?}"))
}

fn failure() -> ExitCode {
    ExitCode::from(exit::FAILURE)
}

/// Loads and validates named texts; objects without a namespace go to `namespace`: the one rule,
/// shared with `plugin-config` (which writes the namespace into each object, so the module
/// applies no rule of its own). Diagnostics are printed on standard error and kept in `seen`.
/// `None` when any input has errors.
fn load_inputs(
    inputs: &[(String, String)],
    namespace: &str,
    seen: &mut Vec<(String, Diagnostic)>,
) -> Option<PolicySet> {
    let opts = LoadOptions {
        default_namespace: namespace.to_string(),
    };
    let mut set = PolicySet::default();
    let mut failed = false;
    for (name, text) in inputs {
        let d = match load_str(text, &opts) {
            Ok((s, warnings)) => {
                set.extend(s);
                warnings
            }
            Err(d) => {
                failed = true;
                d
            }
        };
        print_diagnostics(name, &d);
        seen.extend(d.0.into_iter().map(|d| (name.clone(), d)));
    }
    (!failed).then_some(set)
}

/// Reads and validates every file (`-`: standard input), see [`load_inputs`].
fn read_seen(
    files: &[String],
    namespace: &str,
    seen: &mut Vec<(String, Diagnostic)>,
) -> Option<PolicySet> {
    let mut inputs = Vec::new();
    let mut failed = false;
    for f in files {
        let text = if f == "-" {
            std::io::read_to_string(std::io::stdin())
        } else {
            std::fs::read_to_string(f)
        };
        match text {
            Ok(t) => inputs.push((display_name(f).to_string(), t)),
            Err(e) => {
                let msg = format!("cannot read: {e}");
                eprintln!("error: {}: {msg}", display_name(f));
                seen.push((
                    display_name(f).to_string(),
                    Diagnostic::error(None, "", msg),
                ));
                failed = true;
            }
        }
    }
    let set = load_inputs(&inputs, namespace, seen);
    if failed {
        None
    } else {
        set
    }
}

fn read(files: &[String], namespace: &str) -> Result<PolicySet, ExitCode> {
    read_seen(files, namespace, &mut Vec::new()).ok_or_else(failure)
}

/// How a file argument is named in messages.
fn display_name(file: &str) -> &str {
    if file == "-" {
        "<stdin>"
    } else {
        file
    }
}

fn print_diagnostics(file: &str, d: &Diagnostics) {
    for diag in &d.0 {
        eprintln!("{file}: {diag}");
    }
}

fn diagnostic_json(file: &str, d: &Diagnostic) -> serde_json::Value {
    json!({
        "file": file,
        "severity": if d.is_error() { "error" } else { "warning" },
        "object": d.object.as_ref().map(|o| json!({"kind": o.kind, "namespace": o.namespace, "name": o.name})),
        "field": d.path,
        "message": d.message,
        "text": d.to_string(),
    })
}

impl WorkloadArgs {
    fn workload(&self) -> Workload {
        Workload {
            namespace: self.namespace.clone(),
            labels: self.labels.iter().cloned().collect::<BTreeMap<_, _>>(),
        }
    }

    fn mesh(&self) -> MeshConfig {
        MeshConfig {
            root_namespace: self.root_namespace.clone(),
            trust_domain: self.trust_domain.clone(),
            trust_domain_aliases: self.trust_domain_aliases.clone(),
        }
    }

    fn engine(&self, set: &PolicySet) -> Result<Engine, ExitCode> {
        match Engine::compile(set, &self.workload(), &self.mesh()) {
            Ok((e, warnings)) => {
                print_diagnostics("compile", &warnings);
                Ok(e)
            }
            Err(d) => {
                print_diagnostics("compile", &d);
                Err(failure())
            }
        }
    }
}

fn validate(files: &[String], namespace: &str, output: Output) -> ExitCode {
    let mut seen = Vec::new();
    let set = read_seen(files, namespace, &mut seen);
    let (aps, pas) = set.as_ref().map_or((0, 0), |s| {
        (s.authorization_policies.len(), s.peer_authentications.len())
    });
    match output {
        Output::Json => println!(
            "{}",
            json!({
                "valid": set.is_some(),
                "authorizationPolicies": aps,
                "peerAuthentications": pas,
                "diagnostics": seen.iter().map(|(f, d)| diagnostic_json(f, d)).collect::<Vec<_>>(),
            })
        ),
        Output::Text if set.is_some() => {
            println!("ok: {aps} AuthorizationPolicy, {pas} PeerAuthentication");
        }
        Output::Text => {}
    }
    if set.is_some() {
        ExitCode::from(exit::OK)
    } else {
        failure()
    }
}

fn check(args: &CheckArgs) -> Result<ExitCode, ExitCode> {
    let jwt: Option<serde_json::Value> = match &args.jwt {
        Some(j) => Some(serde_json::from_str(j).map_err(|e| {
            eprintln!("error: --jwt: not JSON: {e}");
            ExitCode::from(exit::USAGE)
        })?),
        None => None,
    };
    let set = read(&args.files, &args.workload.namespace)?;
    let engine = args.workload.engine(&set)?;
    let traffic = explain::Traffic {
        tcp: args.tcp,
        port: args.port,
        principal: args.principal.clone(),
        source_ip: args.source_ip,
        remote_ip: args.remote_ip,
        destination_ip: args.destination_ip,
        sni: args.sni.clone(),
        host: args.host.clone(),
        method: args.method.clone(),
        path: args.path.clone(),
        headers: args.headers.clone(),
        jwt,
    };
    let ev = explain::evaluate(&engine, &traffic);
    let cel = if ev.decision.is_some_and(|d| d.cel_errors > 0) {
        explain::cel_failures(&set, &engine, &traffic)
    } else {
        Vec::new()
    };
    match args.output {
        Output::Json => {
            let mut v = ev.to_json(&engine);
            if let Some(o) = v.as_object_mut() {
                o.insert("celFailures".into(), json!(cel));
                o.insert("modes".into(), explain::modes_json(&engine));
            }
            println!("{v}");
        }
        Output::Text => {
            for line in ev.explain(&engine) {
                println!("{line}");
            }
            for line in &cel {
                println!("CEL error: {line}");
            }
            if args.port.is_none() {
                for line in explain::modes_by_port(&engine) {
                    println!("{line}");
                }
            }
        }
    }
    Ok(ExitCode::from(match ev.outcome {
        explain::Outcome::Allow => exit::OK,
        explain::Outcome::Deny => exit::DENY,
        explain::Outcome::Reset => exit::RESET,
    }))
}

fn mode(
    workload: &WorkloadArgs,
    port: Option<u16>,
    output: Output,
    files: &[String],
) -> Result<ExitCode, ExitCode> {
    let set = read(files, &workload.namespace)?;
    let engine = workload.engine(&set)?;
    let m = engine.mtls();
    match (port, output) {
        (Some(p), Output::Text) => println!("{}", engine.mtls_mode_at(Some(p)).describe()),
        (Some(p), Output::Json) => {
            let mut v = explain::port_mode_json(engine.mtls_mode_at(Some(p)), m.source(Some(p)));
            if let Some(o) = v.as_object_mut() {
                o.insert("port".into(), json!(p));
            }
            println!("{v}");
        }
        (None, Output::Text) => {
            for line in explain::modes_by_port(&engine) {
                println!("{line}");
            }
        }
        (None, Output::Json) => println!("{}", explain::modes_json(&engine)),
    }
    Ok(ExitCode::from(exit::OK))
}

/// The filter's plugin configuration for these files, written by the one writer
/// ([`PluginConfig::write`]): the policies as `read` loaded them (namespaces filled in, Lists
/// flattened, merge keys resolved), compiled for the workload first, and checked to read back
/// as written. In an Istio attachment the workload comes from the sidecar's node metadata
/// instead (`with_workload = false`). Also the chain it was written for (`enforce`).
fn plugin_config_value(
    workload: &WorkloadArgs,
    plaintext_chains: &[String],
    http_ports: &[u16],
    set: PolicySet,
    with_workload: bool,
    enforce: Enforce,
) -> Result<(String, EnforceMode), ExitCode> {
    // The policies the module may apply: for a named workload exactly those the engine selects
    // (the module refuses "decide" and "connection" on the same tests); in an attachment, whose
    // pods may carry more labels than the selector, every policy that may apply to one of them.
    let engine = if with_workload {
        workload.engine(&set)?
    } else {
        workload.engine(&for_any_selected_pod(&set, workload))?
    };
    let audits: Vec<String> = engine
        .policies()
        .iter()
        .filter(|p| p.action == Action::Audit)
        .map(|p| p.qualified_name())
        .collect();
    let request_reads = engine.request_attributes_read();
    // `auto` picks the connection shape only where the whole chain is rendered (`render`), on
    // the HTTP ports it is given: a plugin configuration goes into a template the user chose.
    let auto_connection = !with_workload && !http_ports.is_empty();
    let enforce = enforce_mode(enforce, &audits, &request_reads, auto_connection)?;
    let config = PluginConfig {
        policies: set,
        workload: with_workload.then(|| workload.workload()),
        mesh: workload.mesh(),
        plaintext_filter_chains: plaintext_chains.to_vec(),
        // meshauthz_net runs on HTTP ports too (STRICT, direct peer for ipBlocks) and must leave
        // their authorization to meshauthz_http.
        http_ports: http_ports.to_vec(),
        enforce,
    };
    // The compact text, written one policy at a time (a `Value` of the whole document would
    // take several times its memory: issue 8).
    config
        .write_json()
        .map(|text| (text, enforce))
        .map_err(|d| {
            print_diagnostics("plugin configuration", &d);
            failure()
        })
}

/// `--enforce` for a policy set whose applicable AUDIT policies are `audits` (`namespace/name`):
/// `auto` is `decide` without AUDIT (one Wasm call per request), `separate` with, and with
/// `auto_connection`, `connection` when no request attribute is read either (no Wasm call per
/// request); an explicit `decide` with AUDIT is refused here, as the module would refuse it.
/// `connection` is refused on the module's own two tests (request attributes read, AUDIT).
fn enforce_mode(
    requested: Enforce,
    audits: &[String],
    request_reads: &[&str],
    auto_connection: bool,
) -> Result<EnforceMode, ExitCode> {
    if requested == Enforce::Auto
        && auto_connection
        && audits.is_empty()
        && request_reads.is_empty()
    {
        return Ok(EnforceMode::Connection);
    }
    match (requested, audits.is_empty()) {
        (Enforce::Connection, _) if !request_reads.is_empty() => {
            eprintln!(
                "error: --enforce connection: the policies that apply read request attributes ({}), so a connection cannot be decided once; the module refuses \"connection\" for them; use --enforce auto",
                request_reads.join(", ")
            );
            Err(failure())
        }
        (Enforce::Connection, false) => {
            eprintln!(
                "error: --enforce connection: AUDIT policies apply to this workload ({}): the audit trail is written per request by the RBAC LOG companion; use --enforce auto, separate or native",
                audits.join(", ")
            );
            Err(failure())
        }
        (Enforce::Connection, true) => Ok(EnforceMode::Connection),
        (Enforce::Separate, _) | (Enforce::Auto, false) => Ok(EnforceMode::Separate),
        (Enforce::Native, _) => Ok(EnforceMode::Native),
        (Enforce::Decide | Enforce::Auto, true) => Ok(EnforceMode::Decide),
        (Enforce::Decide, false) => {
            eprintln!(
                "error: --enforce decide: AUDIT policies apply to this workload ({}): the audit trail needs the RBAC LOG companion and the enforce stage, and the module refuses \"decide\" with AUDIT policies; use --enforce auto or separate",
                audits.join(", ")
            );
            Err(failure())
        }
    }
}

/// The Kubernetes API's default request limit (etcd's): a larger object is refused by the API
/// server, so `render` refuses it first.
const MANIFEST_LIMIT: usize = 1536 * 1024;

/// Whether a policy can apply to a workload the attachment selects: its namespace is the
/// workload's or the root namespace, and its selector does not contradict the attachment's
/// labels (a selected pod may carry more labels, so a selector naming other keys may apply).
fn may_apply(
    namespace: &str,
    selector: Option<&BTreeMap<String, String>>,
    w: &WorkloadArgs,
) -> bool {
    (namespace == w.namespace || namespace == w.root_namespace)
        && selector.is_none_or(|sel| {
            w.labels
                .iter()
                .all(|(k, v)| sel.get(k).is_none_or(|want| want == v))
        })
}

/// `set` with the selector of each AuthorizationPolicy that may apply to a pod of the attachment
/// (see [`may_apply`]) dropped: compiled for the attachment's labels, it selects every policy
/// that one of its pods, which may carry more labels, can get.
fn for_any_selected_pod(set: &PolicySet, w: &WorkloadArgs) -> PolicySet {
    let mut all = set.clone();
    for p in &mut all.authorization_policies {
        if may_apply(
            &p.meta.namespace,
            p.spec.selector.as_ref().map(|s| &s.match_labels),
            w,
        ) {
            p.spec.selector = None;
        }
    }
    all
}

/// The policies of `set` (`namespace/name`) with a CEL condition (`meshauthz.io/cel`).
fn cel_policies(set: &PolicySet) -> Vec<String> {
    set.authorization_policies
        .iter()
        .filter(|p| {
            p.spec
                .rules
                .iter()
                .flatten()
                .flatten()
                .flat_map(|r| r.when.iter().flatten().flatten())
                .any(|c| c.key == policy_engine::cel::CEL_CONDITION_KEY)
        })
        .map(|p| format!("{}/{}", p.meta.namespace, p.meta.name))
        .collect()
}

/// Whether the module at `url` has CEL conditions, when it says (a readable `file://` module
/// built by `make build`, which records its features in a custom section); `None` otherwise.
fn module_has_cel(url: &str) -> Option<bool> {
    let bytes = std::fs::read(url.strip_prefix("file://")?).ok()?;
    let features =
        meshauthz_tools::wasm::custom_section(&bytes, meshauthz_tools::wasm::FEATURES_SECTION)?;
    Some(
        String::from_utf8_lossy(features)
            .split_whitespace()
            .any(|f| f == "cel"),
    )
}

/// The policies an attachment carries (see [`may_apply`]).
fn for_attachment(set: PolicySet, w: &WorkloadArgs) -> PolicySet {
    PolicySet {
        authorization_policies: set
            .authorization_policies
            .into_iter()
            .filter(|p| {
                may_apply(
                    &p.meta.namespace,
                    p.spec.selector.as_ref().map(|s| &s.match_labels),
                    w,
                )
            })
            .collect(),
        peer_authentications: set
            .peer_authentications
            .into_iter()
            .filter(|p| {
                may_apply(
                    &p.meta.namespace,
                    p.spec.selector.as_ref().map(|s| &s.match_labels),
                    w,
                )
            })
            .collect(),
    }
}

/// The module digest: given (checked), computed for a readable `file://`, required for
/// `http(s)://`.
fn module_sha256(args: &RenderArgs) -> Result<Option<String>, ExitCode> {
    if let Some(given) = &args.sha256 {
        if given.len() != 64 || !given.bytes().all(|b| b.is_ascii_hexdigit()) {
            eprintln!("error: --sha256: expected 64 hex digits, found {given:?}");
            return Err(ExitCode::from(exit::USAGE));
        }
        return Ok(Some(given.to_ascii_lowercase()));
    }
    if let Some(path) = args.url.strip_prefix("file://") {
        return Ok(std::fs::read(path).ok().map(|bytes| {
            use sha2::Digest as _;
            sha2::Sha256::digest(&bytes)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect()
        }));
    }
    if args.url.starts_with("http://") || args.url.starts_with("https://") {
        eprintln!(
            "error: --url {}: a remote module needs --sha256 (Envoy refuses to load a fetched module without it): `sha256sum meshauthz.wasm`",
            args.url
        );
        return Err(ExitCode::from(exit::USAGE));
    }
    Ok(None)
}

fn render(args: &RenderArgs) -> Result<ExitCode, ExitCode> {
    if let Err(why) = render::check_attachment_name(&args.name) {
        eprintln!("error: --name {:?}: {why}", args.name);
        return Err(ExitCode::from(exit::USAGE));
    }
    if args.enforce == Enforce::Connection && args.http_ports.is_empty() {
        eprintln!(
            "error: --enforce connection needs the HTTP ports (--http-port): meshauthz_net decides their connections and Envoy's RBAC filter is placed on their chains"
        );
        return Err(ExitCode::from(exit::USAGE));
    }
    if matches!(args.kind, RenderKind::Envoyfilter)
        && !["file://", "http://", "https://"]
            .iter()
            .any(|s| args.url.starts_with(s))
    {
        eprintln!(
            "error: --url {}: an EnvoyFilter loads the module itself, from file://, http:// or https:// (oci:// needs `render wasmplugin`)",
            args.url
        );
        return Err(ExitCode::from(exit::USAGE));
    }
    let sha256 = module_sha256(args)?;
    let remote = match args.kind {
        RenderKind::Envoyfilter => match render::RemoteSource::parse(&args.url) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("error: --url {}: {e}", args.url);
                return Err(ExitCode::from(exit::USAGE));
            }
        },
        RenderKind::Wasmplugin => None,
    };
    let set = read(&args.files, &args.workload.namespace)?;
    let given = set.authorization_policies.len() + set.peer_authentications.len();
    let set = if args.all {
        set
    } else {
        for_attachment(set, &args.workload)
    };
    let carried = set.authorization_policies.len() + set.peer_authentications.len();
    let with_cel = cel_policies(&set);
    match (module_has_cel(&args.url), with_cel.is_empty()) {
        (Some(false), false) => {
            eprintln!(
                "error: --url {}: this module is built without CEL conditions (meshauthz-nocel.wasm) and would refuse these policies, which have meshauthz.io/cel conditions: {}; deploy meshauthz.wasm",
                args.url,
                with_cel.join(", ")
            );
            return Err(failure());
        }
        (Some(true) | None, true) => eprintln!(
            "render: no policy carried has a meshauthz.io/cel condition: the module built without CEL (meshauthz-nocel.wasm, `make build`) enforces them the same and starts faster (README, \"The module without CEL\"); --url chooses the file"
        ),
        _ => {}
    }
    if carried < given {
        eprintln!(
            "render: carrying {carried} of {given} policies, those that can apply to the selected workloads (--all carries every one)"
        );
    }
    // Istio's sidecar inbound chains are not named `plaintext`; STRICT is Istio's own there.
    let (config, enforce) = plugin_config_value(
        &args.workload,
        &[],
        &args.http_ports,
        set,
        false,
        args.enforce,
    )?;
    if args.enforce == Enforce::Auto {
        eprintln!(
            "{}",
            match enforce {
                EnforceMode::Decide => "render: no AUDIT policy can apply: the decide stages alone (\"enforce\": \"decide\", one Wasm filter per request); --enforce separate renders the full chain",
                EnforceMode::Separate => "render: AUDIT policies can apply: the full chain (decide stage, RBAC LOG companion, enforce stage)",
                EnforceMode::Native => "render: the decide stage, the RBAC LOG companion and Envoy's RBAC filter denying on the decision",
                EnforceMode::Connection => "render: no policy that can apply reads a request attribute and no AUDIT policy can apply: each connection is decided once by the network stage, Envoy's RBAC filter answers its requests (\"enforce\": \"connection\", no Wasm filter per request); --enforce decide renders a Wasm stage per request",
            }
        );
    }
    let config: serde_json::Value = serde_json::from_str(&config).map_err(|e| {
        eprintln!("error: internal error: the plugin configuration is not JSON: {e}");
        failure()
    })?;
    let attachment = render::Attachment {
        name: &args.name,
        namespace: &args.workload.namespace,
        selector: &args.workload.labels,
        url: &args.url,
        sha256: sha256.as_deref(),
        remote: remote.as_ref(),
        http_ports: &args.http_ports,
        tcp_ports: &args.tcp_ports,
        plugin_config: &config,
        enforce,
    };
    let docs = match args.kind {
        RenderKind::Wasmplugin => render::wasm_plugins(&attachment),
        RenderKind::Envoyfilter => vec![render::envoy_filter(&attachment)],
    };
    let mut out = String::new();
    for doc in docs {
        let yaml = serde_yaml_ng::to_string(&doc).map_err(|e| {
            eprintln!("error: {e}");
            failure()
        })?;
        if yaml.len() > MANIFEST_LIMIT {
            let name = doc
                .pointer("/metadata/name")
                .and_then(serde_json::Value::as_str)
                .unwrap_or_default();
            let kind = doc
                .get("kind")
                .and_then(serde_json::Value::as_str)
                .unwrap_or_default();
            eprintln!(
                "error: {kind} {}/{name} is {} bytes, over the Kubernetes API's request limit of {MANIFEST_LIMIT} bytes (1.5 MiB): the API server would refuse it. Carry fewer policies (one attachment per workload, without --all).",
                args.workload.namespace,
                yaml.len()
            );
            return Err(failure());
        }
        out.push_str(&format!("---\n{}\n", yaml.trim_end()));
    }
    print!("{out}");
    Ok(ExitCode::from(exit::OK))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Validate {
            namespace,
            output,
            files,
        } => Ok(validate(files, namespace, *output)),
        Command::Check(args) => check(args),
        Command::Mode {
            workload,
            port,
            output,
            files,
        } => mode(workload, *port, *output, files),
        Command::Test {
            junit,
            filter,
            output,
            files,
        } => {
            let opts = cases::Options {
                filter: filter.as_deref(),
                junit: junit.as_deref(),
                json: *output == Output::Json,
            };
            Ok(match cases::run(files, &opts) {
                Ok(()) => ExitCode::from(exit::OK),
                Err(()) => failure(),
            })
        }
        Command::StrictReadiness {
            admin,
            access_log,
            ports,
            min_uptime,
            output,
        } => {
            let o = readiness::Options {
                admin,
                access_log: access_log.as_deref(),
                ports,
                min_uptime: *min_uptime,
                json: *output == Output::Json,
            };
            match readiness::run(&o) {
                Ok(readiness::Verdict::Ready) => Ok(ExitCode::from(exit::OK)),
                Ok(readiness::Verdict::NotReady) => Ok(ExitCode::from(exit::NOT_READY)),
                Ok(readiness::Verdict::NotEnoughData) => Ok(ExitCode::from(exit::NOT_ENOUGH_DATA)),
                Err(e) => {
                    eprintln!("error: {e}");
                    Err(failure())
                }
            }
        }
        Command::Render(args) => render(args),
        Command::PluginConfig {
            workload,
            plaintext_chains,
            http_ports,
            enforce,
            pretty,
            files,
        } => read(files, &workload.namespace)
            .and_then(|set| {
                plugin_config_value(workload, plaintext_chains, http_ports, set, true, *enforce)
            })
            .map(|(c, _)| {
                if *pretty || std::io::stdout().is_terminal() {
                    match serde_json::from_str::<serde_json::Value>(&c)
                        .and_then(|v| serde_json::to_string_pretty(&v))
                    {
                        Ok(text) => println!("{text}"),
                        Err(_) => println!("{c}"),
                    }
                } else {
                    println!("{c}");
                }
                ExitCode::from(exit::OK)
            }),
    };
    result.unwrap_or_else(|code| code)
}
