//! Istio's builder goldens: `X-in.yaml` (AuthorizationPolicies) and `X-out.yaml` / `X-outN.yaml`
//! (the RBAC filters istiod generates for them, protojson YAML), from
//! `shared/istio-testdata/pilot/pkg/security/authz/builder/testdata/{http,tcp}/`.
//!
//! The goldens are Envoy filter objects (`HttpFilter` for `http/`, listener `Filter` for `tcp/`):
//! `{name, typedConfig: {"@type": ..., rules, shadowRules, ...}}` with lowerCamelCase field
//! names. Envoy's configuration parser is protobuf JSON, which accepts lowerCamelCase as well as
//! the proto names, so the only conversion is YAML to JSON; the filters go into the listener
//! verbatim (after the port rewrite of [`super::ports`]).

use std::path::{Path, PathBuf};

use policy_engine::MeshConfig;
use serde::Deserialize;
use serde_json::Value;

use meshauthz_harness::{err, Error, Result};

/// Which filter chain istiod generated the filters for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Chain {
    /// `envoy.filters.http.rbac` filters in an HTTP connection manager.
    Http,
    /// `envoy.filters.network.rbac` filters before a `tcp_proxy`.
    Tcp,
}

/// One golden: the policies and the Envoy filters istiod generates for them.
#[derive(Clone, Debug)]
pub struct Golden {
    /// `http/<base>` or `tcp/<base>`.
    pub name: String,
    pub chain: Chain,
    /// The `-in.yaml` text.
    pub input: String,
    /// The `-out*.yaml` filters, in chain order, as JSON.
    pub filters: Vec<Value>,
    /// The mesh settings istiod used (`builder_test.go`: `tdBundle`).
    pub mesh: MeshConfig,
}

/// A golden deliberately left out, and why.
#[derive(Clone, Debug)]
pub struct Skipped {
    pub name: String,
    pub reason: String,
}

/// The builder test's proxy: namespace `foo`, labels `app=httpbin, version=v1`.
pub const WORKLOAD_NAMESPACE: &str = "foo";
/// The builder test's proxy labels.
pub const WORKLOAD_LABELS: [(&str, &str); 2] = [("app", "httpbin"), ("version", "v1")];

/// `shared/` (Istio's test data): `$MESHAUTHZ_SHARED_DIR` when set (and only there), else the
/// first `shared/` beside an ancestor of the repository (as `policy-engine/tests/validation.rs`
/// looks it up). An error on a bare clone: the differential tests then do not run.
pub fn shared_dir() -> Result<PathBuf> {
    let candidates: Vec<PathBuf> = match std::env::var_os("MESHAUTHZ_SHARED_DIR") {
        Some(dir) => vec![PathBuf::from(dir)],
        None => Path::new(env!("CARGO_MANIFEST_DIR"))
            .ancestors()
            .skip(2)
            .map(|a| a.join("shared"))
            .collect(),
    };
    match candidates
        .iter()
        .find(|d| d.join("istio-testdata").is_dir())
    {
        Some(dir) => Ok(dir.clone()),
        None => err(format!(
            "Istio's test data not found: expected `shared/istio-testdata` next to the repository, \
             or set MESHAUTHZ_SHARED_DIR. Tried: {candidates:?}"
        )),
    }
}

/// `.../authz/builder/testdata`.
pub fn builder_testdata() -> Result<PathBuf> {
    Ok(shared_dir()?.join("istio-testdata/pilot/pkg/security/authz/builder/testdata"))
}

/// The trust-domain bundle `builder_test.go` passes for a golden (`trustdomain.NewBundle(td,
/// aliases)`); the other cases pass none, which leaves principals as written, like the engine's
/// default `cluster.local` without aliases.
fn mesh_for(base: &str) -> MeshConfig {
    let bundle: Option<(&str, &[&str])> = match base {
        "simple-policy-td-aliases" => Some(("td1", &["cluster.local"])),
        "simple-policy-multiple-td-aliases" => Some(("td1", &["cluster.local", "some-td"])),
        "simple-policy-principal-with-wildcard" => Some(("td1", &["foobar"])),
        "td-aliases-source-principal" => Some(("new-td", &["old-td", "some-trustdomain"])),
        _ => None,
    };
    let mut mesh = MeshConfig::default();
    if let Some((td, aliases)) = bundle {
        mesh.trust_domain = td.to_string();
        mesh.trust_domain_aliases = aliases.iter().map(|a| a.to_string()).collect();
    }
    mesh
}

fn skip_reason(base: &str) -> Option<&'static str> {
    if base.starts_with("custom-") {
        Some("CUSTOM action (ext_authz): outside the engine's scope")
    } else if base == "allow-host-before-111" {
        Some("orphan golden, not referenced by builder_test.go (pre-1.11 regex host matcher)")
    } else {
        None
    }
}

/// Parse YAML (one document) into JSON.
fn yaml_to_json(text: &str, file: &Path) -> Result<Value> {
    let de = serde_yaml_ng::Deserializer::from_str(text);
    Value::deserialize(de).map_err(|e| Error(format!("{}: {e}", file.display())))
}

/// The `-out` files of `base` in `dir`, in order: `base-out.yaml`, or `base-out1.yaml`,
/// `base-out2.yaml`, ...
fn outputs(dir: &Path, base: &str) -> Result<Vec<PathBuf>> {
    let single = dir.join(format!("{base}-out.yaml"));
    if single.is_file() {
        return Ok(vec![single]);
    }
    let mut out = Vec::new();
    for n in 1.. {
        let p = dir.join(format!("{base}-out{n}.yaml"));
        if !p.is_file() {
            break;
        }
        out.push(p);
    }
    Ok(out)
}

/// Every golden of `http/` and `tcp/`, plus the ones left out with their reason. The
/// `extended-*-out*.yaml` files are byte-identical duplicates of other outputs (SOURCES.md) and
/// have no input of their own, so they are never picked up.
pub fn discover() -> Result<(Vec<Golden>, Vec<Skipped>)> {
    let root = builder_testdata()?;
    let mut goldens = Vec::new();
    let mut skipped = Vec::new();
    for (sub, chain) in [("http", Chain::Http), ("tcp", Chain::Tcp)] {
        let dir = root.join(sub);
        let mut inputs: Vec<String> = std::fs::read_dir(&dir)
            .map_err(|e| Error(format!("cannot read {}: {e}", dir.display())))?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                e.file_name()
                    .to_str()
                    .and_then(|n| n.strip_suffix("-in.yaml"))
                    .map(str::to_string)
            })
            .collect();
        inputs.sort();
        for base in inputs {
            let name = format!("{sub}/{base}");
            if let Some(reason) = skip_reason(&base) {
                skipped.push(Skipped {
                    name,
                    reason: reason.to_string(),
                });
                continue;
            }
            let outs = outputs(&dir, &base)?;
            if outs.is_empty() {
                return err(format!("{name}: no {base}-out*.yaml next to the input"));
            }
            let input_path = dir.join(format!("{base}-in.yaml"));
            let input = std::fs::read_to_string(&input_path)
                .map_err(|e| Error(format!("{}: {e}", input_path.display())))?;
            let mut filters = Vec::new();
            for out in &outs {
                let text = std::fs::read_to_string(out)
                    .map_err(|e| Error(format!("{}: {e}", out.display())))?;
                filters.push(yaml_to_json(&text, out)?);
            }
            goldens.push(Golden {
                name,
                chain,
                input,
                filters,
                mesh: mesh_for(&base),
            });
        }
    }
    Ok((goldens, skipped))
}

/// One golden by name (`http/deny-and-allow`).
pub fn by_name(name: &str) -> Result<Golden> {
    let (goldens, _) = discover()?;
    goldens
        .into_iter()
        .find(|g| g.name == name)
        .ok_or_else(|| Error(format!("no golden named {name}")))
}
