//! A "sidecar": one Envoy rendered from a template in `envoy-config/envoy/` in front of an echo
//! application, with its certificates, access log and the module's plugin configuration.
//!
//! The templates are used verbatim: only their documented placeholders are substituted
//! (`{{ADMIN_PORT}}`, `{{INBOUND_PORT}}`, `{{APP_PORT}}`, `{{CERT_DIR}}`, `{{MODULE}}`,
//! `{{PLUGIN_CONFIG_JSON}}`, `{{ACCESS_LOG}}`), so the sandbox and compose files run what the
//! tests exercise. A test that needs a deliberately broken deployment passes an explicit,
//! documented text transformation ([`SidecarBuilder::transform`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::app::{HttpEcho, TcpEcho};
use crate::certs::{CertFiles, Pki};
use crate::client::{Request, Transport};
use crate::envoy::{free_port, render, template, Envoy};
use crate::{default_cli, module_path, policy, Error, Result, WorkDir};

/// The HTTP inbound template.
pub const HTTP_TEMPLATE: &str = "server-http.yaml";
/// The TCP inbound template.
pub const TCP_TEMPLATE: &str = "server-tcp.yaml";

/// Which kind of upstream application the sidecar fronts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppKind {
    /// [`HttpEcho`].
    Http,
    /// [`TcpEcho`].
    Tcp,
}

type PolicyFn = Box<dyn Fn(u16) -> String>;
type Transform = dyn Fn(&str) -> Result<String>;
type TransformFn = Box<Transform>;

/// Builds a [`Sidecar`].
pub struct SidecarBuilder {
    name: String,
    template: String,
    app: AppKind,
    policies: PolicyFn,
    config: Option<Value>,
    transform: Option<TransformFn>,
    fixed_port: Option<u16>,
    dynamic_listener: bool,
    ecds: bool,
    module: Option<PathBuf>,
}

impl SidecarBuilder {
    /// Istio objects (YAML, `---`-separated) for the plugin configuration.
    pub fn policies(mut self, yaml: &str) -> Self {
        let yaml = yaml.to_string();
        self.policies = Box::new(move |_| yaml.clone());
        self
    }

    /// Policies that name the listener port Envoy will use (`port` = `{{INBOUND_PORT}}`).
    pub fn policies_for_port(mut self, f: impl Fn(u16) -> String + 'static) -> Self {
        self.policies = Box::new(f);
        self
    }

    /// Use this whole plugin configuration instead of one built from [`Self::policies`].
    pub fn plugin_config(mut self, config: Value) -> Self {
        self.config = Some(config);
        self
    }

    /// Use another template under `envoy-config/envoy/`.
    pub fn template(mut self, name: &str) -> Self {
        self.template = name.to_string();
        self
    }

    /// Front a TCP echo instead of the HTTP echo.
    pub fn tcp_app(mut self) -> Self {
        self.app = AppKind::Tcp;
        self
    }

    /// A TCP port: the TCP template ([`TCP_TEMPLATE`]) in front of a TCP echo.
    pub fn tcp(self) -> Self {
        self.template(TCP_TEMPLATE).tcp_app()
    }

    /// Transform the rendered configuration (only for tests of broken deployments).
    pub fn transform(mut self, f: impl Fn(&str) -> Result<String> + 'static) -> Self {
        self.transform = Some(Box::new(f));
        self
    }

    /// Listen on this inbound port (allocated beforehand with [`free_port`]) instead of a fresh one,
    /// for policies that must name the ports of several listeners.
    pub fn inbound_port(mut self, port: u16) -> Self {
        self.fixed_port = Some(port);
        self
    }

    /// Serve the template's listeners through LDS from a file (see [`to_dynamic_listeners`]), so
    /// that [`Sidecar::update_policies`] can change the configuration of the running Envoy.
    pub fn dynamic_listener(mut self) -> Self {
        self.dynamic_listener = true;
        self
    }

    /// Deliver the module's filter configurations as Istio delivers a `WasmPlugin`: through ECDS
    /// (extension config discovery, here from files; see [`to_ecds`]), so that
    /// [`Sidecar::update_policies`] replaces them in place while the listener, and every open
    /// connection, stays.
    pub fn ecds(mut self) -> Self {
        self.ecds = true;
        self
    }

    /// Run this module file instead of [`crate::module_path()`]'s (e.g. [`crate::module_nocel_path`]).
    pub fn module(mut self, path: PathBuf) -> Self {
        self.module = Some(path);
        self
    }

    /// Generate certificates, start the app and Envoy; wait until ready.
    pub fn start(self) -> Result<Sidecar> {
        let work = WorkDir::new(&self.name)?;
        let pki = Pki::generate(&work.path().join("certs"))?;
        let app = match self.app {
            AppKind::Http => App::Http(HttpEcho::start()?),
            AppKind::Tcp => App::Tcp(TcpEcho::start()?),
        };
        let access_log = work.path().join(format!("{}-access.log", self.name));
        let tmpl = template(&self.template)?;
        let module = match self.module {
            Some(m) => m,
            None => module_path()?,
        };
        let mut inbound = 0;
        let mut plugin_config = Value::Null;
        let mut vars_used = BTreeMap::new();
        let lds_path = self
            .dynamic_listener
            .then(|| work.path().join(format!("{}-lds.yaml", self.name)));
        let ecds_dir = self.ecds.then(|| work.path().join("ecds"));
        if let Some(d) = &ecds_dir {
            std::fs::create_dir_all(d)?;
        }
        let delivery = match (&lds_path, &ecds_dir) {
            (Some(p), _) => Delivery::Lds(p.clone()),
            (None, Some(d)) => Delivery::Ecds(d.clone()),
            (None, None) => Delivery::Static,
        };
        let envoy = Envoy::start_with_retry(work.path(), &self.name, || {
            let admin = free_port()?;
            inbound = match self.fixed_port {
                Some(p) => p,
                None => free_port()?,
            };
            plugin_config = match &self.config {
                Some(c) => c.clone(),
                None => build_plugin_config(&(self.policies)(inbound), self.app, inbound)?,
            };
            let vars = BTreeMap::from([
                ("ADMIN_PORT", admin.to_string()),
                ("INBOUND_PORT", inbound.to_string()),
                ("APP_PORT", app.port().to_string()),
                ("CERT_DIR", pki.dir().display().to_string()),
                ("MODULE", module.display().to_string()),
                (
                    "PLUGIN_CONFIG_JSON",
                    plugin_config_placeholder(&plugin_config)?,
                ),
                ("ACCESS_LOG", access_log.display().to_string()),
            ]);
            let (config, _) = produce(&tmpl, &vars, self.transform.as_deref(), &delivery)?;
            vars_used = vars.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
            Ok((config, admin))
        })?;
        Ok(Sidecar {
            envoy,
            port: inbound,
            access_log,
            plugin_config,
            app,
            rendering: Rendering {
                template: tmpl,
                vars: vars_used,
                transform: self.transform,
                delivery,
                app: self.app,
            },
            pki,
            work,
        })
    }
}

fn build_plugin_config(yaml: &str, app: AppKind, inbound: u16) -> Result<Value> {
    // An HTTP listener's port carries HTTP: authorized per request at L7.
    let http_ports: &[u16] = if app == AppKind::Http {
        &[inbound]
    } else {
        &[]
    };
    policy::plugin_config_for(yaml, http_ports)
}

/// How the rendered configuration reaches Envoy.
#[derive(Clone, Debug)]
enum Delivery {
    /// All in the bootstrap.
    Static,
    /// The listeners from this LDS file ([`to_dynamic_listeners`]).
    Lds(PathBuf),
    /// The Wasm filters' configurations from ECDS files in this folder ([`to_ecds`]).
    Ecds(PathBuf),
}

/// Render, transform, and (with LDS or ECDS) write the resource files; returns the bootstrap and
/// how many resource files changed (each is one update for Envoy to apply).
fn produce(
    tmpl: &str,
    vars: &BTreeMap<&str, String>,
    transform: Option<&Transform>,
    delivery: &Delivery,
) -> Result<(String, u64)> {
    let mut config = render(tmpl, vars)?;
    if let Some(t) = transform {
        config = t(&config)?;
    }
    match delivery {
        Delivery::Static => Ok((config, 0)),
        Delivery::Lds(path) => {
            let (bootstrap, lds) = to_dynamic_listeners(&config, path)?;
            let changed = replace_file(path, &lds)?;
            Ok((bootstrap, u64::from(changed)))
        }
        Delivery::Ecds(dir) => {
            let (bootstrap, resources) = to_ecds(&config, dir)?;
            let mut changed = 0;
            for (path, text) in resources {
                changed += u64::from(replace_file(&path, &text)?);
            }
            Ok((bootstrap, changed))
        }
    }
}

/// Envoy watches a resource file's folder for a rename onto it: write aside, then rename. A file
/// that already holds `text` is left alone (Envoy would have nothing to apply); returns whether
/// it was written.
fn replace_file(path: &Path, text: &str) -> Result<bool> {
    if std::fs::read_to_string(path).ok().as_deref() == Some(text) {
        return Ok(false);
    }
    let tmp = path.with_extension("yaml.tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)?;
    Ok(true)
}

/// The `@type`s of the module's filters.
const WASM_FILTER_TYPES: [&str; 2] = [
    "type.googleapis.com/envoy.extensions.filters.network.wasm.v3.Wasm",
    "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
];

/// The documented transformation behind [`SidecarBuilder::ecds`]: each Wasm filter of the rendered
/// template (network or HTTP) is replaced by a `config_discovery` entry naming its plugin
/// (`config.name`), served from `<dir>/<name>.yaml` (a `TypedExtensionConfig` with the filter's
/// `typed_config` unchanged). This is how Istio delivers a `WasmPlugin`: the listener stays when
/// the filter's configuration changes. Returns the bootstrap (JSON) and the resource files.
pub fn to_ecds(config: &str, dir: &Path) -> Result<(String, Vec<(PathBuf, String)>)> {
    let yaml: serde_yaml_ng::Value = serde_yaml_ng::from_str(config)?;
    let mut boot: Value = serde_json::to_value(yaml)?;
    // By plugin name (both filter chains of a listener carry the same filters): file and content.
    let mut resources: BTreeMap<String, (PathBuf, Value)> = BTreeMap::new();
    let mut walk = |filter: &mut Value| -> Result<()> {
        let Some(typed) = filter.get("typed_config") else {
            return Ok(());
        };
        let Some(kind) = typed.get("@type").and_then(Value::as_str) else {
            return Ok(());
        };
        if !WASM_FILTER_TYPES.contains(&kind) {
            return Ok(());
        }
        let kind = kind.to_string();
        let name = typed
            .pointer("/config/name")
            .and_then(Value::as_str)
            .ok_or_else(|| Error("a Wasm filter without config.name".into()))?
            .to_string();
        let path = dir.join(format!("{name}.yaml"));
        let resource = serde_json::json!({"resources": [{
            "@type": "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig",
            "name": name,
            "typed_config": typed,
        }]});
        resources.insert(name.clone(), (path.clone(), resource));
        *filter = serde_json::json!({
            "name": name,
            "config_discovery": {
                "config_source": {
                    "resource_api_version": "V3",
                    "path_config_source": {"path": path.display().to_string()},
                },
                "type_urls": [kind],
            },
        });
        Ok(())
    };
    let listeners = boot
        .pointer_mut("/static_resources/listeners")
        .and_then(Value::as_array_mut)
        .ok_or_else(|| Error("the configuration has no static_resources.listeners".into()))?;
    for listener in listeners {
        let chains = listener
            .get_mut("filter_chains")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten();
        for chain in chains {
            for filter in chain
                .get_mut("filters")
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
            {
                walk(filter)?;
                let http = filter
                    .pointer_mut("/typed_config/http_filters")
                    .and_then(Value::as_array_mut)
                    .into_iter()
                    .flatten();
                for h in http {
                    walk(h)?;
                }
            }
        }
    }
    if resources.is_empty() {
        return Err(Error(
            "the configuration has no Wasm filter to deliver by ECDS".into(),
        ));
    }
    if let Some(obj) = boot.as_object_mut() {
        obj.insert(
            "node".into(),
            serde_json::json!({"id": "meshauthz-e2e", "cluster": "meshauthz-e2e"}),
        );
    }
    let files = resources
        .into_values()
        .map(|(path, r)| Ok((path, serde_json::to_string_pretty(&r)?)))
        .collect::<Result<Vec<_>>>()?;
    Ok((serde_json::to_string_pretty(&boot)?, files))
}

/// The documented transformation behind [`SidecarBuilder::dynamic_listener`]: the rendered
/// template's `static_resources.listeners` move, unchanged, into an LDS resource file at
/// `lds_path`, and the bootstrap gets `dynamic_resources.lds_config.path_config_source` pointing
/// at it (plus the `node` id/cluster Envoy requires for xDS). Returns (bootstrap, LDS file), both
/// JSON (which is YAML too).
pub fn to_dynamic_listeners(config: &str, lds_path: &Path) -> Result<(String, String)> {
    let yaml: serde_yaml_ng::Value = serde_yaml_ng::from_str(config)?;
    let mut boot: Value = serde_json::to_value(yaml)?;
    let listeners = boot
        .get_mut("static_resources")
        .and_then(|s| s.as_object_mut())
        .and_then(|s| s.remove("listeners"))
        .ok_or_else(|| Error("the configuration has no static_resources.listeners".into()))?;
    let Value::Array(listeners) = listeners else {
        return Err(Error("static_resources.listeners is not a list".into()));
    };
    let resources: Vec<Value> = listeners
        .into_iter()
        .map(|mut l| {
            if let Some(o) = l.as_object_mut() {
                o.insert(
                    "@type".into(),
                    Value::String("type.googleapis.com/envoy.config.listener.v3.Listener".into()),
                );
            }
            l
        })
        .collect();
    let Some(obj) = boot.as_object_mut() else {
        return Err(Error("the configuration is not a mapping".into()));
    };
    obj.insert(
        "node".into(),
        serde_json::json!({"id": "meshauthz-e2e", "cluster": "meshauthz-e2e"}),
    );
    obj.insert(
        "dynamic_resources".into(),
        serde_json::json!({"lds_config": {
            "resource_api_version": "V3",
            "path_config_source": {"path": lds_path.display().to_string()},
        }}),
    );
    Ok((
        serde_json::to_string_pretty(&boot)?,
        serde_json::to_string_pretty(&serde_json::json!({ "resources": resources }))?,
    ))
}

/// How the plugin configuration JSON is written into the template: a JSON string literal's
/// contents (the template puts `{{PLUGIN_CONFIG_JSON}}` inside a quoted string), see
/// `envoy-config/README.md`.
pub fn plugin_config_placeholder(config: &Value) -> Result<String> {
    let json = serde_json::to_string(config)?;
    // Escape as a JSON string and strip the surrounding quotes.
    let quoted = serde_json::to_string(&json)?;
    Ok(quoted
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(&quoted)
        .to_string())
}

/// The upstream application.
pub enum App {
    /// HTTP echo.
    Http(HttpEcho),
    /// TCP echo.
    Tcp(TcpEcho),
}

impl App {
    fn port(&self) -> u16 {
        match self {
            App::Http(a) => a.port(),
            App::Tcp(a) => a.port(),
        }
    }

    /// Requests (HTTP) or connections (TCP) that reached the application.
    pub fn hits(&self) -> u64 {
        match self {
            App::Http(a) => a.requests(),
            App::Tcp(a) => a.connections(),
        }
    }
}

/// A running sidecar. Drops Envoy first, then the app, then the certificates and work dir.
pub struct Sidecar {
    /// The Envoy process.
    pub envoy: Envoy,
    /// The inbound listener port (`{{INBOUND_PORT}}`).
    pub port: u16,
    /// The access log file (`{{ACCESS_LOG}}`).
    pub access_log: PathBuf,
    /// The plugin configuration it was started with.
    pub plugin_config: Value,
    /// The application behind it.
    pub app: App,
    rendering: Rendering,
    /// The certificates (`{{CERT_DIR}}`): CA, server, client leaves on demand.
    pub pki: Pki,
    /// The work dir (dropped last: removed if the test passed).
    pub work: WorkDir,
}

/// What is needed to render the configuration again (for LDS updates).
struct Rendering {
    template: String,
    vars: BTreeMap<String, String>,
    transform: Option<TransformFn>,
    delivery: Delivery,
    app: AppKind,
}

impl Sidecar {
    /// Start describing a sidecar named `name` (used for its files), HTTP template, HTTP app, no policies.
    pub fn builder(name: &str) -> SidecarBuilder {
        SidecarBuilder {
            name: name.to_string(),
            template: HTTP_TEMPLATE.to_string(),
            app: AppKind::Http,
            policies: Box::new(|_| String::new()),
            config: None,
            transform: None,
            fixed_port: None,
            dynamic_listener: false,
            ecds: false,
            module: None,
        }
    }

    /// A client certificate for `spiffe://cluster.local/ns/<ns>/sa/<sa>` from this sidecar's CA.
    pub fn client(&self, ns: &str, sa: &str) -> Result<CertFiles> {
        self.pki.client(ns, sa)
    }

    /// mTLS as `spiffe://cluster.local/ns/<ns>/sa/<sa>`.
    pub fn mtls(&self, ns: &str, sa: &str) -> Result<Transport> {
        let client = self.client(ns, sa)?;
        Ok(Transport::mtls(&self.pki, &client))
    }

    /// Replace the policies of a running sidecar started with
    /// [`SidecarBuilder::dynamic_listener`] or [`SidecarBuilder::ecds`]: the template is rendered
    /// again with the new plugin configuration and Envoy picks up the listener file (LDS: the
    /// listener is replaced, its open connections drain) or the Wasm filters' files (ECDS: the
    /// filters' configurations change in place, open connections stay). Waits (bounded) until
    /// Envoy has applied it.
    pub fn update_policies(&mut self, yaml: &str) -> Result<()> {
        let r = &self.rendering;
        let config = build_plugin_config(yaml, r.app, self.port)?;
        let mut vars: BTreeMap<&str, String> = r
            .vars
            .iter()
            .map(|(k, v)| (k.as_str(), v.clone()))
            .collect();
        vars.insert("PLUGIN_CONFIG_JSON", plugin_config_placeholder(&config)?);
        // What shows that Envoy applied an update (once per changed file), and a rejection.
        let (applied, failed) = match &r.delivery {
            Delivery::Static => {
                return Err(Error(
                    "update_policies needs a sidecar built with dynamic_listener() or ecds()"
                        .into(),
                ))
            }
            Delivery::Lds(_) => (
                "listener_manager.lds.update_success",
                "listener_manager.lds.update_rejected",
            ),
            Delivery::Ecds(_) => (".config_reload", ".config_fail"),
        };
        let sum = |stats: &BTreeMap<String, u64>, what: &str| -> u64 {
            stats
                .iter()
                .filter(|(k, _)| match &r.delivery {
                    Delivery::Ecds(_) => {
                        k.starts_with("extension_config_discovery.") && k.ends_with(what)
                    }
                    _ => k.as_str() == what,
                })
                .map(|(_, v)| *v)
                .sum()
        };
        let stats = self.envoy.stats()?;
        let (applied_before, failed_before) = (sum(&stats, applied), sum(&stats, failed));
        let (_, more) = produce(&r.template, &vars, r.transform.as_deref(), &r.delivery)?;
        let deadline = std::time::Instant::now() + crate::envoy::READY_TIMEOUT;
        loop {
            let stats = self.envoy.stats()?;
            if sum(&stats, failed) > failed_before {
                return Err(Error(format!(
                    "Envoy rejected the update; log:\n{}",
                    self.envoy.log()
                )));
            }
            let warming = stats
                .get("listener_manager.total_listeners_warming")
                .copied()
                .unwrap_or(0);
            if sum(&stats, applied) >= applied_before + more && warming == 0 {
                break;
            }
            if std::time::Instant::now() > deadline {
                return Err(Error(format!(
                    "Envoy did not apply the update; log:\n{}",
                    self.envoy.log()
                )));
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        self.plugin_config = config;
        Ok(())
    }

    /// `GET path` to this sidecar over `transport`.
    pub fn get(&self, path: &str, transport: Transport) -> Request {
        Request::get(self.port, path, transport)
    }

    /// `meshauthz strict-readiness` (the CLI at [`default_cli`]) on this sidecar: its admin
    /// endpoint, access log and inbound port, no minimum uptime. Its exit status and what it
    /// printed (standard output, then standard error).
    pub fn strict_readiness(&self) -> Result<(i32, String)> {
        let cli = default_cli();
        if !cli.exists() {
            return Err(Error(format!(
                "{} is missing: cargo build -p meshauthz-cli",
                cli.display()
            )));
        }
        let out = Command::new(&cli)
            .args([
                "strict-readiness",
                "--admin",
                &format!("http://127.0.0.1:{}", self.envoy.admin_port),
                "--access-log",
            ])
            .arg(&self.access_log)
            .args(["--port", &self.port.to_string(), "--min-uptime", "0"])
            .stdin(Stdio::null())
            .output()?;
        Ok((
            out.status.code().unwrap_or(-1),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        ))
    }
}

/// The module's counter of plaintext connections to `port` (a port number, or `other`) by
/// `outcome` (`accepted`, `rejected`, `report_only`), as Envoy's `/stats` names it.
pub fn plaintext_stat(port: impl std::fmt::Display, outcome: &str) -> String {
    format!("wasmcustom.meshauthz.plaintext.{port}.{outcome}")
}

/// Remove, from a rendered Envoy YAML configuration, every list item `- name: <filter>` (with
/// everything indented under it) whose typed config contains `marker`; fails unless exactly
/// `expected` items were removed. This is the documented, minimal transformation the tests use
/// to build deliberately broken deployments (e.g. a companion filter left out).
pub fn remove_filter(config: &str, filter: &str, marker: &str, expected: usize) -> Result<String> {
    let lines: Vec<&str> = config.lines().collect();
    let mut out: Vec<&str> = Vec::with_capacity(lines.len());
    let mut removed = 0;
    let mut i = 0;
    let head = format!("- name: {filter}");
    while let Some(line) = lines.get(i) {
        let trimmed = line.trim_start();
        if trimmed == head {
            let indent = line.len() - trimmed.len();
            // The item ends at the next line indented at most `indent`.
            let mut end = i + 1;
            while let Some(l) = lines.get(end) {
                let t = l.trim_start();
                if !t.is_empty() && l.len() - t.len() <= indent {
                    break;
                }
                end += 1;
            }
            let block = lines.get(i..end).unwrap_or_default();
            if block.iter().any(|l| l.contains(marker)) {
                removed += 1;
                i = end;
                continue;
            }
        }
        out.push(line);
        i += 1;
    }
    if removed != expected {
        return Err(Error(format!(
            "remove_filter({filter}, {marker}): removed {removed} items, expected {expected}"
        )));
    }
    Ok(out.join("\n") + "\n")
}
