//! `meshauthz`: the policy engine from the command line.
//!
//! ```text
//! meshauthz validate POLICY.yaml...                       every error and warning, exit 1 on errors
//! meshauthz check --namespace foo --principal spiffe://cluster.local/ns/bar/sa/x --path /admin POLICY.yaml...
//! meshauthz mode --namespace foo --port 8080 POLICY.yaml...
//! meshauthz plugin-config --namespace foo --label app=echo POLICY.yaml...   the filter's JSON configuration
//! ```
//!
//! Every command reads its files with one rule for objects without `metadata.namespace` (the
//! `--namespace` given, else `default`, as `kubectl apply`), and `plugin-config`/`render` write
//! through the engine's one writer (`policy_engine::PluginConfig::write`), which the module's
//! decoder reads back unchanged.

mod render;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use policy_engine::{
    load_str, Attributes, Cause, Diagnostics, Engine, HttpAttributes, LoadOptions, MeshConfig,
    PluginConfig, PolicySet, Protocol, Workload,
};

#[derive(Parser)]
#[command(
    name = "meshauthz",
    version,
    about = "Istio AuthorizationPolicy and PeerAuthentication, evaluated locally"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Load and validate policies; print every error and warning.
    Validate {
        /// Namespace of objects without `metadata.namespace` (as `kubectl apply -n`).
        #[arg(long, default_value = "default", value_parser = non_empty)]
        namespace: String,
        /// Istio objects: YAML or JSON, multi-document, `kind: List`. `-` reads standard input.
        #[arg(required = true)]
        files: Vec<String>,
    },
    /// Evaluate one request or connection against the policies of a workload.
    Check(CheckArgs),
    /// Print the PeerAuthentication mode of a workload port.
    Mode {
        #[command(flatten)]
        workload: WorkloadArgs,
        #[arg(long)]
        port: u16,
        #[arg(required = true)]
        files: Vec<String>,
    },
    /// Render Istio attachments (`wasmplugin` or `envoyfilter`) carrying these policies.
    Render(RenderArgs),
    /// Print the filter's plugin configuration (JSON) carrying these policies for a workload.
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
        #[arg(required = true)]
        files: Vec<String>,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum RenderKind {
    Wasmplugin,
    Envoyfilter,
}

#[derive(Args)]
struct RenderArgs {
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
    /// The module's sha256 (required by Envoy for a remote URL).
    #[arg(long)]
    sha256: Option<String>,
    /// HTTP ports to attach to (workload ports).
    #[arg(long = "http-port")]
    http_ports: Vec<u16>,
    /// TCP ports to attach to (L4 authorization).
    #[arg(long = "tcp-port")]
    tcp_ports: Vec<u16>,
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
    #[arg(long, default_value = "istio-system", value_parser = non_empty)]
    root_namespace: String,
    #[arg(long, default_value = "cluster.local", value_parser = non_empty)]
    trust_domain: String,
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
    #[arg(long)]
    source_ip: Option<IpAddr>,
    #[arg(long)]
    remote_ip: Option<IpAddr>,
    #[arg(long)]
    destination_ip: Option<IpAddr>,
    #[arg(long)]
    port: Option<u16>,
    #[arg(long)]
    sni: Option<String>,
    /// Check a TCP connection (no HTTP attributes) instead of an HTTP request.
    #[arg(long)]
    tcp: bool,
    #[arg(long)]
    host: Option<String>,
    #[arg(long, default_value = "GET")]
    method: String,
    #[arg(long, default_value = "/")]
    path: String,
    /// A request header, `name: value`; repeat for more.
    #[arg(long = "header", value_parser = parse_header)]
    headers: Vec<(String, String)>,
    /// The verified JWT payload, as JSON.
    #[arg(long)]
    jwt: Option<String>,
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

/// Reads and validates every file (`-`: standard input). Objects without a namespace go to
/// `namespace`: the one rule, shared with `plugin-config` (which writes the namespace into each
/// object, so the module applies no rule of its own).
fn read(files: &[String], namespace: &str) -> Result<PolicySet, ExitCode> {
    let opts = LoadOptions {
        default_namespace: namespace.to_string(),
    };
    let mut set = PolicySet::default();
    let mut failed = false;
    for f in files {
        let text = if f == "-" {
            std::io::read_to_string(std::io::stdin())
        } else {
            std::fs::read_to_string(f)
        };
        let text = match text {
            Ok(t) => t,
            Err(e) => {
                eprintln!("error: {}: cannot read: {e}", display_name(f));
                failed = true;
                continue;
            }
        };
        match load_str(&text, &opts) {
            Ok((s, warnings)) => {
                print_diagnostics(display_name(f), &warnings);
                set.extend(s);
            }
            Err(d) => {
                print_diagnostics(display_name(f), &d);
                failed = true;
            }
        }
    }
    if failed {
        Err(ExitCode::FAILURE)
    } else {
        Ok(set)
    }
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
                Err(ExitCode::FAILURE)
            }
        }
    }
}

fn check(args: &CheckArgs) -> Result<ExitCode, ExitCode> {
    let set = read(&args.files, &args.workload.namespace)?;
    let engine = args.workload.engine(&set)?;
    let jwt: Option<serde_json::Value> = match &args.jwt {
        Some(j) => Some(serde_json::from_str(j).map_err(|e| {
            eprintln!("error: --jwt: {e}");
            ExitCode::FAILURE
        })?),
        None => None,
    };
    let headers: Vec<(&str, &str)> = args
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let attrs = Attributes {
        principal: args.principal.as_deref(),
        mtls: args.principal.is_some(),
        source_ip: args.source_ip,
        remote_ip: args.remote_ip.or(args.source_ip),
        destination_ip: args.destination_ip,
        destination_port: args.port,
        sni: args.sni.as_deref(),
        dynamic_metadata: None,
        http: (!args.tcp).then(|| HttpAttributes {
            host: args.host.as_deref(),
            method: Some(args.method.as_str()),
            path: Some(args.path.as_str()),
            headers: &headers,
            jwt: jwt.as_ref(),
        }),
    };
    let protocol = if args.tcp {
        Protocol::Tcp
    } else {
        Protocol::Http
    };
    let d = engine.check(protocol, &attrs);
    let why = match d.cause {
        Cause::NoAllowPolicy => "no DENY rule matched and no ALLOW policy applies".to_string(),
        Cause::AllowRule(r) => format!("ALLOW rule {}", engine.rule_name(r)),
        Cause::DenyRule(r) => format!("DENY rule {}", engine.rule_name(r)),
        Cause::NoAllowRuleMatched => {
            "ALLOW policies apply and none of their rules matched".to_string()
        }
    };
    println!("{}: {why}", if d.allowed() { "ALLOW" } else { "DENY" });
    if d.audit_policy_applies {
        match d.audit_rule {
            Some(r) => println!("audit: access_log_hint=true ({})", engine.rule_name(r)),
            None => println!("audit: access_log_hint=false"),
        }
    }
    for (label, shadow) in [
        ("dry-run ALLOW", d.shadow_allow),
        ("dry-run DENY", d.shadow_deny),
    ] {
        if let Some(s) = shadow {
            let rule = s
                .rule
                .map(|r| format!(" ({})", engine.rule_name(r)))
                .unwrap_or_default();
            println!(
                "{label}: would be {}{rule}",
                if s.allowed { "allowed" } else { "denied" }
            );
        }
    }
    if d.cel_errors > 0 {
        println!("CEL evaluation errors: {}", d.cel_errors);
    }
    if let Some(port) = args.port {
        println!(
            "mTLS mode of port {port}: {}",
            engine.mtls_mode(port).as_str()
        );
    }
    Ok(if d.allowed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

/// The filter's plugin configuration for these files, written by the one writer
/// ([`PluginConfig::write`]): the policies as `read` loaded them (namespaces filled in, Lists
/// flattened, merge keys resolved), compiled for the workload first, and checked to read back
/// as written. In an Istio attachment the workload comes from the sidecar's node metadata
/// instead (`with_workload = false`).
fn plugin_config_value(
    workload: &WorkloadArgs,
    plaintext_chains: &[String],
    http_ports: &[u16],
    files: &[String],
    with_workload: bool,
) -> Result<String, ExitCode> {
    let set = read(files, &workload.namespace)?;
    workload.engine(&set)?;
    let config = PluginConfig {
        policies: set,
        workload: with_workload.then(|| workload.workload()),
        mesh: workload.mesh(),
        plaintext_filter_chains: plaintext_chains.to_vec(),
        // meshauthz_net runs on HTTP ports too (STRICT, direct peer for ipBlocks) and must leave
        // their authorization to meshauthz_http.
        http_ports: http_ports.to_vec(),
    };
    // The text, written one policy at a time (a `Value` of the whole would take several times
    // its memory).
    config.write_json().map_err(|d| {
        print_diagnostics("plugin configuration", &d);
        ExitCode::FAILURE
    })
}

fn render(args: &RenderArgs) -> Result<ExitCode, ExitCode> {
    // Istio's sidecar inbound chains are not named `plaintext`; STRICT is Istio's own there.
    let config = plugin_config_value(&args.workload, &[], &args.http_ports, &args.files, false)?;
    let config: serde_json::Value = serde_json::from_str(&config).map_err(|e| {
        eprintln!("error: internal error: the plugin configuration is not JSON: {e}");
        ExitCode::FAILURE
    })?;
    let attachment = render::Attachment {
        name: &args.name,
        namespace: &args.workload.namespace,
        selector: &args.workload.labels,
        url: &args.url,
        sha256: args.sha256.as_deref(),
        http_ports: &args.http_ports,
        tcp_ports: &args.tcp_ports,
        plugin_config: &config,
    };
    let docs = match args.kind {
        RenderKind::Wasmplugin => render::wasm_plugins(&attachment),
        RenderKind::Envoyfilter => vec![render::envoy_filter(&attachment)],
    };
    for doc in docs {
        let yaml = serde_yaml_ng::to_string(&doc).map_err(|e| {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        })?;
        println!("---\n{}", yaml.trim_end());
    }
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Validate { namespace, files } => read(files, namespace).map(|set| {
            println!(
                "ok: {} AuthorizationPolicy, {} PeerAuthentication",
                set.authorization_policies.len(),
                set.peer_authentications.len()
            );
            ExitCode::SUCCESS
        }),
        Command::Check(args) => check(args),
        Command::Mode {
            workload,
            port,
            files,
        } => read(files, &workload.namespace).and_then(|set| {
            let engine = workload.engine(&set)?;
            println!("{}", engine.mtls_mode(*port).as_str());
            Ok(ExitCode::SUCCESS)
        }),
        Command::Render(args) => render(args),
        Command::PluginConfig {
            workload,
            plaintext_chains,
            http_ports,
            files,
        } => plugin_config_value(workload, plaintext_chains, http_ports, files, true).map(|c| {
            println!("{c}");
            ExitCode::SUCCESS
        }),
    };
    result.unwrap_or_else(|code| code)
}
