//! One server Envoy per variant: policies written out, plugin configuration through the CLI,
//! the sidecar template rendered and shaped (see [`crate::shape`]), Envoy started (optionally
//! under a launcher such as valgrind).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use meshauthz_harness::certs::{CertFiles, Pki};
use meshauthz_harness::envoy::{free_port, render, template, Envoy};
use meshauthz_harness::sidecar::{plugin_config_placeholder, HTTP_TEMPLATE};

/// The template of [`Chain::Connection`].
const CONNECTION_TEMPLATE: &str = "server-http-conn.yaml";
/// The template of [`Chain::Native`].
const NATIVE_TEMPLATE: &str = "server-http-native.yaml";
use meshauthz_harness::{module_path, Error, Result};
use serde_json::{json, Value};

use crate::load::cpu_seconds;
use crate::shape::shape;
use crate::variants::{Chain, Variant};

/// A started variant.
pub struct Server {
    pub variant: Variant,
    pub envoy: Envoy,
    pub port: u16,
    /// The benchmark client (the principal the mix's request comes from).
    pub client: CertFiles,
    /// A principal no policy names.
    pub outsider: CertFiles,
    pub started: Started,
}

/// What starting the Envoy took: wall-clock time until `/ready` answered 200 (process start
/// included), and the process's CPU time (all threads) at that point.
#[derive(Clone, Copy, Debug)]
pub struct Started {
    pub ready_s: f64,
    pub cpu_s: f64,
}

/// How to run Envoy.
pub struct Launch<'a> {
    /// Command prefix (empty: Envoy itself), see [`Envoy::start_via`].
    pub launcher: &'a [String],
    pub ready_timeout: Duration,
}

/// The plugin configuration from the Istio YAML, through the CLI (`meshauthz plugin-config`).
fn cli_plugin_config(cli: &Path, file: &Path, label: &str, http_port: u16) -> Result<Value> {
    let out = Command::new(cli)
        .args(["plugin-config", "--namespace", "foo", "--label", label])
        .args(["--http-port", &http_port.to_string()])
        .arg(file)
        .stdin(Stdio::null())
        .output()?;
    if !out.status.success() {
        return Err(Error(format!(
            "meshauthz plugin-config {} failed: {}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

pub fn start(v: Variant, dir: &Path, pki: &Pki, cli: &Path, launch: &Launch) -> Result<Server> {
    let tmpl = template(match v.chain {
        Chain::Native => NATIVE_TEMPLATE,
        Chain::Connection => CONNECTION_TEMPLATE,
        _ => HTTP_TEMPLATE,
    })?;
    let built = module_path()?;
    let noop = built.with_file_name(match v.chain {
        Chain::Noop { stripped: true, .. } => "bench_noop_stripped.wasm",
        _ => "bench_noop.wasm",
    });
    let module = v.module.clone().unwrap_or(built);
    let policy_file = dir.join(format!("{}-policies.yaml", v.key));
    std::fs::write(&policy_file, v.mix.istio_yaml(v.size))?;
    let rbac = if v.chain == Chain::Rbac {
        v.mix.rbac_filters(v.size)
    } else {
        Vec::new()
    };
    let mut last = Error("not started".into());
    for _ in 0..3 {
        let admin = free_port()?;
        let port = free_port()?;
        let plugin = match v.chain {
            Chain::Meshauthz {
                decide: true,
                log: false,
                enforce: false,
                ..
            } if v.module.is_none() && !v.mix.has_audit() => {
                // The one-stage chain (issue 12): the decide stage answers denials itself.
                let mut p = cli_plugin_config(cli, &policy_file, v.mix.workload_label(), port)?;
                if let Some(o) = p.as_object_mut() {
                    o.insert("enforce".into(), json!("decide"));
                }
                p
            }
            Chain::Meshauthz { .. } => {
                cli_plugin_config(cli, &policy_file, v.mix.workload_label(), port)?
            }
            Chain::Native | Chain::Connection => {
                let mut p = cli_plugin_config(cli, &policy_file, v.mix.workload_label(), port)?;
                if let Some(o) = p.as_object_mut() {
                    let mode = if v.chain == Chain::Native {
                        "native"
                    } else {
                        "connection"
                    };
                    o.insert("enforce".into(), json!(mode));
                }
                p
            }
            _ => json!({}),
        };
        let vars = BTreeMap::from([
            ("ADMIN_PORT", admin.to_string()),
            ("INBOUND_PORT", port.to_string()),
            // No upstream is ever contacted (direct response); the template's cluster needs a port.
            ("APP_PORT", free_port()?.to_string()),
            ("CERT_DIR", pki.dir().display().to_string()),
            ("MODULE", module.display().to_string()),
            ("PLUGIN_CONFIG_JSON", plugin_config_placeholder(&plugin)?),
            ("ACCESS_LOG", "/dev/null".to_string()),
        ]);
        let config = shape(&render(&tmpl, &vars)?, v.chain, &rbac, &noop)?;
        let t0 = Instant::now();
        match Envoy::start_via(
            dir,
            &v.key,
            &config,
            admin,
            launch.launcher,
            launch.ready_timeout,
        ) {
            Ok(envoy) => {
                let ready_s = t0.elapsed().as_secs_f64();
                let started = Started {
                    ready_s,
                    cpu_s: cpu_seconds(envoy.pid())?,
                };
                let (ns, sa) = v.mix.client(v.size);
                return Ok(Server {
                    client: pki.client(&ns, &sa)?,
                    outsider: pki.client("outsider", "nobody")?,
                    envoy,
                    port,
                    variant: v,
                    started,
                });
            }
            // Another process took a port between `free_port` and Envoy's bind: allocate again.
            Err(e) if e.0.contains("ddress already in use") => last = e,
            Err(e) => return Err(e),
        }
    }
    Err(last)
}

/// The benchmark request's URL on `s`.
pub fn url(s: &Server) -> String {
    format!(
        "https://127.0.0.1:{}{}",
        s.port,
        s.variant.mix.request_path()
    )
}
