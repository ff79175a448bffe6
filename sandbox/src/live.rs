//! Live policy updates of the running sandbox (issue 11): a new policy set reaches the server
//! sidecar through Envoy's own file-based LDS, without a restart.
//!
//! The server sidecar's Envoy reads its listeners, the module's plugin configuration inside them,
//! from `<dir>/server-lds.yaml` (`dynamic_resources.lds_config.path_config_source`) and watches
//! that file's folder. [`Sandbox::apply`]:
//! 1. renders the plugin configuration with the CLI (`meshauthz plugin-config`, which validates
//!    first: a set it refuses is not sent; [`Check::Unchecked`] sends it anyway, as raw objects in
//!    the last good configuration, to show the module's own refusal);
//! 2. renders `server-http.yaml` with it and splits it as at start-up into the bootstrap and the
//!    listener file; the bootstrap must be the one Envoy runs (a changed bootstrap, e.g. other
//!    ports, clusters or admin, needs a restart: `make sandbox`);
//! 3. replaces the listener file (write aside, rename) and waits until Envoy has applied it
//!    (`listener_manager.lds.update_success` rises, no listener warming) and the replaced filter
//!    chains have drained ([`SERVER_DRAIN_TIME`]): new connections get the new set at once,
//!    connections open before the update finish on the old set while they drain;
//! 4. reads the module's verdict: the refusals it logged since (object, field path, message) and
//!    `wasmcustom.meshauthz.config_refused`. A refused set leaves the last good one in force.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use meshauthz_harness::envoy::{http10, READY_TIMEOUT};
use meshauthz_harness::{err, policy, Error, Result};
use serde_json::Value;

use crate::mesh::{
    plugin_config, shown, wait_until, write_replacing, Mode, Sandbox, SERVER_DRAIN_TIME,
    WORKLOAD_NAMESPACE,
};

/// Who validates a policy set before it is sent to Envoy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    /// `meshauthz plugin-config`: a set it refuses is not sent (the operator's path).
    Cli,
    /// Nobody: the objects go to the module as written (to see the module refuse a bad set).
    Unchecked,
}

/// What a live update did.
#[derive(Clone, Debug)]
pub struct Applied {
    /// The policy files sent.
    pub files: Vec<PathBuf>,
    /// The server sidecar's Envoy pid (the same before and after: no restart).
    pub server_pid: u32,
    /// `listener_manager.lds.update_success` before and after.
    pub lds_updates: (u64, u64),
    /// How long until the replaced filter chains had drained.
    pub drained_after: Duration,
    /// The module's refusal lines in Envoy's log since the update.
    pub refusals: Vec<String>,
    /// `wasmcustom.meshauthz.config_refused` before and after.
    pub config_refused: (u64, u64),
    /// Envoy's `server.uptime` (seconds) before and after: it only grows when Envoy was not
    /// restarted.
    pub uptime: (u64, u64),
}

impl Applied {
    /// Did the module refuse the set (the previous one then stays in force)?
    pub fn refused(&self) -> bool {
        !self.refusals.is_empty() || self.config_refused.1 > self.config_refused.0
    }
}

/// The policy files `inputs` name: a folder gives its `*.yaml`, `*.yml` and `*.json` files, sorted
/// by name; a file is taken as given.
pub fn expand(inputs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for input in inputs {
        if input.is_dir() {
            let mut found: Vec<PathBuf> = fs::read_dir(input)
                .map_err(|e| Error(format!("cannot read {}: {e}", input.display())))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.is_file()
                        && p.extension()
                            .is_some_and(|x| x == "yaml" || x == "yml" || x == "json")
                })
                .collect();
            found.sort();
            if found.is_empty() {
                return err(format!(
                    "{} has no policy file (*.yaml, *.yml, *.json)",
                    input.display()
                ));
            }
            files.extend(found);
        } else if input.is_file() {
            files.push(input.clone());
        } else {
            return err(format!("{}: no such file or folder", input.display()));
        }
    }
    if files.is_empty() {
        return err("no policy file given (a folder or files: sandbox apply PATH...)");
    }
    Ok(files)
}

/// Envoy's listener-manager stats, `server.uptime` and the module's counters, from the admin
/// endpoint.
pub fn admin_stats(admin: u16) -> Result<BTreeMap<String, u64>> {
    let (status, body) = http10(
        admin,
        "GET",
        "/stats?filter=%5E(listener_manager%5C.%7Cwasmcustom%5C.meshauthz%5C.%7Cserver%5C.uptime%24)",
    )?;
    if status != 200 {
        return err(format!("admin /stats on port {admin}: HTTP {status}"));
    }
    Ok(body
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(": ")?;
            Some((k.to_string(), v.trim().parse().ok()?))
        })
        .collect())
}

fn stat(stats: &BTreeMap<String, u64>, key: &str) -> u64 {
    stats.get(key).copied().unwrap_or(0)
}

/// The plugin configuration of the last good set with `policies` replaced by the objects of
/// `files` as written (namespace filled in as `kubectl apply` would, nothing else checked).
fn unchecked_config(last_good: &Path, files: &[PathBuf]) -> Result<Value> {
    let text = fs::read_to_string(last_good)
        .map_err(|e| Error(format!("cannot read {}: {e}", shown(last_good))))?;
    let mut config: Value = serde_json::from_str(&text)?;
    let mut objects = Vec::new();
    for f in files {
        let text = fs::read_to_string(f)
            .map_err(|e| Error(format!("cannot read {}: {e}", f.display())))?;
        for mut object in
            policy::from_yaml(&text).map_err(|e| Error(format!("{}: {}", f.display(), e.0)))?
        {
            if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
                meta.entry("namespace")
                    .or_insert_with(|| Value::String(WORKLOAD_NAMESPACE.into()));
            }
            objects.push(object);
        }
    }
    match config.as_object_mut() {
        Some(o) => {
            o.insert("policies".into(), Value::Array(objects));
        }
        None => return err(format!("{} is not a JSON object", shown(last_good))),
    }
    Ok(config)
}

/// Envoy's log from byte `from` on: the module's refusal lines.
fn refusal_lines(log: &Path, from: u64) -> Vec<String> {
    let Ok(bytes) = fs::read(log) else {
        return Vec::new();
    };
    let start = usize::try_from(from).unwrap_or(usize::MAX);
    String::from_utf8_lossy(bytes.get(start..).unwrap_or_default())
        .lines()
        .filter(|l| {
            l.contains("configuration refused")
                || l.contains("previous valid configuration stays in force")
        })
        .map(str::to_string)
        .collect()
}

impl Sandbox {
    /// Send the policy set of `inputs` (folders and files) to the running server sidecar by a
    /// live update, no restart (module doc). With [`Check::Cli`], a set the CLI refuses is an
    /// error and nothing is sent. The state records the new set only when the module accepted it.
    pub fn apply(&self, inputs: &[PathBuf], check: Check) -> Result<Applied> {
        let mut state = self.running_state()?;
        self.check_running(&state)?;
        let server_pid = state
            .processes
            .iter()
            .find(|p| p.name == "server")
            .map(|p| p.pid)
            .ok_or_else(|| Error("the state records no server sidecar".into()))?;
        let files = expand(inputs)?;
        let ports = state.ports;
        let plugin = match check {
            Check::Cli => plugin_config(&self.cli, &files, Some(ports.inbound)).map_err(|e| {
                Error(format!(
                    "{}\nnothing was sent to Envoy; the set in force is unchanged",
                    e.0
                ))
            })?,
            Check::Unchecked => unchecked_config(&self.plugin_config_path(), &files)?,
        };
        let (bootstrap, listeners) = self.server_configs(&ports, &plugin)?;
        let running = fs::read_to_string(self.config("server"))?;
        if bootstrap != running {
            return err(format!(
                "the server sidecar's bootstrap would change ({}): that needs a restart (make sandbox), not a live update",
                shown(&self.config("server"))
            ));
        }
        let log = self.log("server");
        let log_from = fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
        let before = admin_stats(ports.admin)?;
        let updates_before = stat(&before, "listener_manager.lds.update_success");
        let rejected_before = stat(&before, "listener_manager.lds.update_rejected");
        let refused_before = stat(&before, "wasmcustom.meshauthz.config_refused");
        let uptime_before = stat(&before, "server.uptime");

        write_replacing(&self.lds_path(), &listeners)?;
        let sent = Instant::now();
        let deadline = sent + READY_TIMEOUT;
        let updates_after = loop {
            let now = admin_stats(ports.admin)?;
            if stat(&now, "listener_manager.lds.update_rejected") > rejected_before {
                return err(format!(
                    "Envoy rejected the listener update; last lines of {}:\n{}",
                    shown(&log),
                    crate::mesh::tail(&log, 20)
                ));
            }
            let applied = stat(&now, "listener_manager.lds.update_success");
            if applied > updates_before
                && stat(&now, "listener_manager.total_listeners_warming") == 0
            {
                break applied;
            }
            if Instant::now() > deadline {
                return err(format!(
                    "Envoy did not apply {} within {READY_TIMEOUT:?}; last lines of {}:\n{}",
                    shown(&self.lds_path()),
                    shown(&log),
                    crate::mesh::tail(&log, 20)
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        // The replaced chains drain for --drain-time-s; after that every connection is new.
        let mut drained = false;
        wait_until(SERVER_DRAIN_TIME + Duration::from_secs(10), || {
            drained = admin_stats(ports.admin).is_ok_and(|s| {
                stat(&s, "listener_manager.total_listeners_draining") == 0
                    && stat(&s, "listener_manager.total_filter_chains_draining") == 0
            });
            drained
        });
        if !drained {
            return err(format!(
                "the replaced listener chains did not drain within {:?}",
                SERVER_DRAIN_TIME + Duration::from_secs(10)
            ));
        }
        let drained_after = sent.elapsed();
        // The module hands its counters to Envoy once a second (on_tick): a refusal shows in the
        // log at once and in the counter within a tick or two.
        let mut refusals = refusal_lines(&log, log_from);
        let mut refused_after = refused_before;
        let mut uptime_after = 0;
        wait_until(Duration::from_millis(2500), || {
            if let Ok(s) = admin_stats(ports.admin) {
                refused_after = stat(&s, "wasmcustom.meshauthz.config_refused");
                uptime_after = stat(&s, "server.uptime");
            }
            refusals = refusal_lines(&log, log_from);
            // A set the CLI accepted is never refused: no need to wait for a counter that
            // should not move (it is still read once).
            check == Check::Cli || (refused_after > refused_before && !refusals.is_empty())
        });
        let applied = Applied {
            files: files.clone(),
            server_pid,
            lds_updates: (updates_before, updates_after),
            drained_after,
            refusals,
            config_refused: (refused_before, refused_after),
            uptime: (uptime_before, uptime_after),
        };
        if !applied.refused() {
            fs::write(
                self.plugin_config_path(),
                serde_json::to_string_pretty(&plugin)?,
            )?;
            state.mode = Mode::of(&files);
            state.policies = files;
            self.save_state(&state)?;
        }
        Ok(applied)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshauthz_harness::WorkDir;

    #[test]
    fn a_folder_gives_its_policy_files_sorted_and_a_file_is_taken_as_given() {
        let w = WorkDir::new("live-expand").unwrap();
        let dir = w.path().join("set");
        fs::create_dir_all(&dir).unwrap();
        for f in ["20-b.yaml", "00-a.yml", "10-c.json", "README.md"] {
            fs::write(dir.join(f), "").unwrap();
        }
        let extra = w.path().join("extra.yaml");
        fs::write(&extra, "").unwrap();
        let files = expand(&[dir.clone(), extra.clone()]).unwrap();
        let names: Vec<_> = files
            .iter()
            .map(|f| f.file_name().unwrap().to_string_lossy().to_string())
            .collect();
        assert_eq!(names, ["00-a.yml", "10-c.json", "20-b.yaml", "extra.yaml"]);

        let missing = expand(&[w.path().join("nope")]).unwrap_err();
        assert!(missing.0.contains("no such file or folder"), "{missing}");
        let empty = w.path().join("empty");
        fs::create_dir_all(&empty).unwrap();
        let none = expand(&[empty]).unwrap_err();
        assert!(none.0.contains("has no policy file"), "{none}");
        assert!(expand(&[]).is_err());
    }

    #[test]
    fn an_unchecked_set_replaces_only_the_policies_of_the_last_good_configuration() {
        let w = WorkDir::new("live-unchecked").unwrap();
        let last = w.path().join("plugin-config.json");
        fs::write(
            &last,
            r#"{"policies": [{"kind": "old"}], "workload": {"namespace": "foo"}, "httpPorts": [8080]}"#,
        )
        .unwrap();
        let f = w.path().join("p.yaml");
        fs::write(
            &f,
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: a}\nspec: {action: DENY, rules: [{to: [{operation: {path: [\"/x\"]}}]}]}\n---\nkind: PeerAuthentication\nmetadata: {name: b, namespace: other}\n",
        )
        .unwrap();
        let c = unchecked_config(&last, &[f]).unwrap();
        assert_eq!(c["httpPorts"], serde_json::json!([8080]));
        assert_eq!(c["workload"]["namespace"], "foo");
        let p = c["policies"].as_array().unwrap();
        assert_eq!(p.len(), 2);
        // Written as kubectl apply would place it; nothing else is checked or changed.
        assert_eq!(p[0]["metadata"]["namespace"], WORKLOAD_NAMESPACE);
        assert_eq!(
            p[0]["spec"]["rules"][0]["to"][0]["operation"]["path"],
            serde_json::json!(["/x"])
        );
        assert_eq!(p[1]["metadata"]["namespace"], "other");
    }

    #[test]
    fn the_mode_follows_the_peer_authentication_file_in_the_set() {
        let p = |names: &[&str]| -> Vec<PathBuf> { names.iter().map(PathBuf::from).collect() };
        assert_eq!(Mode::of(&p(&["a/00-x.yaml"])), Mode::Permissive);
        assert_eq!(
            Mode::of(&p(&["a/00-x.yaml", crate::mesh::REPORT_ONLY_POLICY])),
            Mode::ReportOnly
        );
        assert_eq!(
            Mode::of(&p(&["a/00-x.yaml", "envoy-config/policies/90-strict.yaml"])),
            Mode::Strict
        );
    }
}
