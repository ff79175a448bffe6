//! A "sidecar": one Envoy rendered from a template in `envoy-config/envoy/` in front of an echo
//! application, with its certificates, access log and the module's plugin configuration.
//!
//! The templates are used verbatim: only their documented placeholders are substituted
//! (`{{ADMIN_PORT}}`, `{{INBOUND_PORT}}`, `{{APP_PORT}}`, `{{CERT_DIR}}`, `{{MODULE}}`,
//! `{{PLUGIN_CONFIG_JSON}}`, `{{ACCESS_LOG}}`), so the sandbox and compose files run what the
//! tests exercise. A test that needs a deliberately broken deployment passes an explicit,
//! documented text transformation ([`SidecarBuilder::transform`]).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::Value;

use crate::app::{HttpEcho, TcpEcho};
use crate::certs::{CertFiles, Pki};
use crate::client::{Request, Transport};
use crate::envoy::{free_port, render, template, Envoy};
use crate::{module_path, policy, Error, Result, WorkDir};

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
type TransformFn = Box<dyn Fn(&str) -> Result<String>>;

/// Builds a [`Sidecar`].
pub struct SidecarBuilder<'a> {
    name: String,
    template: String,
    app: AppKind,
    policies: PolicyFn,
    config: Option<Value>,
    transform: Option<TransformFn>,
    shared: Option<(&'a Pki, &'a WorkDir)>,
    fixed_port: Option<u16>,
}

impl<'a> SidecarBuilder<'a> {
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

    /// Share a PKI and work dir with another sidecar (one workload, two listener ports).
    pub fn shared(mut self, pki: &'a Pki, work: &'a WorkDir) -> Self {
        self.shared = Some((pki, work));
        self
    }

    /// Generate certificates (unless shared), start the app and Envoy; wait until ready.
    pub fn start(self) -> Result<Sidecar> {
        let own = match self.shared {
            Some(_) => None,
            None => {
                let work = WorkDir::new(&self.name)?;
                let pki = Pki::generate(&work.path().join("certs"))?;
                Some((pki, work))
            }
        };
        let (pki, work): (&Pki, &WorkDir) = match (&own, self.shared) {
            (Some((p, w)), _) => (p, w),
            (None, Some((p, w))) => (p, w),
            (None, None) => return Err(Error("no PKI".into())),
        };
        let app = match self.app {
            AppKind::Http => App::Http(HttpEcho::start()?),
            AppKind::Tcp => App::Tcp(TcpEcho::start()?),
        };
        let access_log = work.path().join(format!("{}-access.log", self.name));
        let tmpl = template(&self.template)?;
        let module = module_path()?;
        let mut inbound = 0;
        let mut plugin_config = Value::Null;
        let envoy = Envoy::start_with_retry(work.path(), &self.name, || {
            let admin = free_port()?;
            inbound = match self.fixed_port {
                Some(p) => p,
                None => free_port()?,
            };
            plugin_config = match &self.config {
                Some(c) => c.clone(),
                None => {
                    let mut c = policy::plugin_config_yaml(&(self.policies)(inbound))?;
                    if self.app == AppKind::Http {
                        // The listener's port carries HTTP: authorized per request at L7.
                        c["httpPorts"] = serde_json::json!([inbound]);
                    }
                    c
                }
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
            let mut config = render(&tmpl, &vars)?;
            if let Some(t) = &self.transform {
                config = t(&config)?;
            }
            Ok((config, admin))
        })?;
        let ca_cert = pki.ca_cert.clone();
        Ok(Sidecar {
            envoy,
            port: inbound,
            access_log,
            plugin_config,
            app,
            ca_cert,
            own,
        })
    }
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
    ca_cert: PathBuf,
    own: Option<(Pki, WorkDir)>,
}

impl Sidecar {
    /// Start describing a sidecar named `name` (used for its files), HTTP template, HTTP app, no policies.
    pub fn builder<'a>(name: &str) -> SidecarBuilder<'a> {
        SidecarBuilder {
            name: name.to_string(),
            template: HTTP_TEMPLATE.to_string(),
            app: AppKind::Http,
            policies: Box::new(|_| String::new()),
            config: None,
            transform: None,
            shared: None,
            fixed_port: None,
        }
    }

    /// The PKI (when this sidecar generated it).
    pub fn pki(&self) -> Result<&Pki> {
        self.own
            .as_ref()
            .map(|(p, _)| p)
            .ok_or_else(|| Error("this sidecar shares another's PKI".into()))
    }

    /// The work dir (when this sidecar created it).
    pub fn work(&self) -> Result<&WorkDir> {
        self.own
            .as_ref()
            .map(|(_, w)| w)
            .ok_or_else(|| Error("this sidecar shares another's work dir".into()))
    }

    /// A client certificate for `spiffe://cluster.local/ns/<ns>/sa/<sa>` from this sidecar's CA.
    pub fn client(&self, ns: &str, sa: &str) -> Result<CertFiles> {
        self.pki()?.client(ns, sa)
    }

    /// mTLS as `spiffe://cluster.local/ns/<ns>/sa/<sa>`.
    pub fn mtls(&self, ns: &str, sa: &str) -> Result<Transport> {
        let client = self.client(ns, sa)?;
        Ok(Transport::Tls {
            ca: self.ca_cert.clone(),
            client: Some(client),
        })
    }

    /// `GET path` to this sidecar over `transport`.
    pub fn get(&self, path: &str, transport: Transport) -> Request {
        Request::get(self.port, path, transport)
    }
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
