//! One configured filter (a root context): its stage, its compiled configuration and counters,
//! and `on_configure` with last-good handling: a refused configuration never replaces a valid
//! one, and with none ever everything is denied.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use log::Level;

use crate::attrs::{decode_pairs, decode_str};
use crate::config::{self, Compiled, NodeWorkload};
use crate::metrics::{bump, Metrics, Plaintext};
use crate::names::{ROOT_HTTP, ROOT_HTTP_ENFORCE, ROOT_NET, ROOT_NET_ENFORCE};
use crate::traits::Host;
use crate::vm::{Stage, VmState};

/// One configured plugin (root context) and what its streams share.
pub struct Plugin {
    pub stage: Cell<Option<Stage>>,
    compiled: RefCell<Option<Rc<Compiled>>>,
    pub(crate) metrics: RefCell<Metrics>,
    pub vm: Rc<VmState>,
    errors_logged: Cell<u32>,
    /// Plaintext connections admitted on report-only STRICT ports, for the log's running count.
    report_only_seen: Cell<u64>,
    /// Which filter this is, for its last good configuration ([`last_good_key`]).
    key: RefCell<String>,
    /// A connection was decided under this root ([`VmState::serve`] told).
    served: Cell<bool>,
}

impl Plugin {
    pub fn new(vm: Rc<VmState>) -> Plugin {
        Plugin {
            stage: Cell::new(None),
            compiled: RefCell::new(None),
            metrics: RefCell::new(Metrics::default()),
            vm,
            errors_logged: Cell::new(0),
            report_only_seen: Cell::new(0),
            key: RefCell::new(String::new()),
            served: Cell::new(false),
        }
    }

    pub fn compiled(&self) -> Option<Rc<Compiled>> {
        self.compiled.borrow().clone()
    }

    /// Installs a compiled configuration (what a successful `configure` does).
    pub fn install(&self, host: &dyn Host, compiled: Rc<Compiled>) {
        if self.metrics.borrow().allowed.is_none() {
            *self.metrics.borrow_mut() = Metrics::define(host);
        }
        self.metrics
            .borrow_mut()
            .define_ports(host, &compiled.named_ports);
        *self.compiled.borrow_mut() = Some(compiled);
    }

    /// Puts a valid configuration in force and keeps it as this filter's last good one.
    fn accept(&self, host: &dyn Host, compiled: Rc<Compiled>) {
        self.vm.remember(&self.key.borrow(), &compiled);
        if self.vm.has_siblings(&self.key.borrow()) {
            host.log(
                Level::Warn,
                &format!(
                    "{}: another filter with this name carries other policies in this Envoy: each keeps its own, and their open connections do not follow updates in place; give each filter its own name",
                    self.key.borrow().replace('\u{0}', " ")
                ),
            );
        }
        self.install(host, compiled);
    }

    /// The configuration in force for this filter's streams, following an in-place update: when
    /// the VM has accepted a newer configuration for the same filter (plugin name and stage),
    /// Envoy has given it to a new root and kept this one only for the streams it already had;
    /// this root then adopts it, so those streams follow the policies in force, not the ones
    /// they started under. Two filters that share a name (two listeners configured with different
    /// policies under one Wasm `name`) show as two configurations accepted before any connection;
    /// their connections then keep their own filter's configuration.
    pub fn follow_update(&self, host: &dyn Host) -> Option<Rc<Compiled>> {
        let current = self.compiled();
        let key = self.key.borrow();
        if !self.served.get() {
            self.vm.serve(&key);
            self.served.set(true);
        }
        if self.vm.has_siblings(&key) {
            return current;
        }
        let Some(latest) = self.vm.last_good(&key) else {
            return current;
        };
        if current.as_ref().is_some_and(|c| Rc::ptr_eq(c, &latest)) {
            return current;
        }
        host.log(
            Level::Info,
            "configuration updated in place: the open connections of the previous configuration are decided again under the new one",
        );
        self.install(host, Rc::clone(&latest));
        Some(latest)
    }

    /// Counts one of `which` (see [`Metrics::add`]).
    pub(crate) fn count(&self, which: impl FnOnce(&Metrics) -> Option<u32>) {
        let m = self.metrics.borrow();
        m.add(which(&m), 1);
    }

    /// Counts a plaintext connection or request at `port` (its counters are defined the first
    /// time the port is seen).
    pub(crate) fn count_plaintext(&self, host: &dyn Host, port: Option<u16>, outcome: Plaintext) {
        let m = self.metrics.borrow();
        m.add(m.plaintext_id(host, port, outcome), 1);
    }

    /// A connection (or request) to `port` was seen: the port gets its plaintext counters (at
    /// zero) if it has none yet, so that every port the workload serves shows.
    pub(crate) fn see_port(&self, host: &dyn Host, port: Option<u16>) {
        if let Some(p) = port {
            self.metrics.borrow().see_port(host, p);
        }
    }

    /// A plaintext connection (or, without a network stage, request) admitted on a report-only
    /// STRICT port: counted in `meshauthz.plaintext.<port>.report_only` and logged at warning
    /// level with the caller's address (`ip:port`): the first 256, then one in 256, each with
    /// the running count (the counter has the exact number).
    pub(crate) fn report_plaintext(
        &self,
        host: &dyn Host,
        port: Option<u16>,
        source: Option<&str>,
        what: &str,
    ) {
        self.count_plaintext(host, port, Plaintext::ReportOnly);
        let n = self.report_only_seen.get().saturating_add(1);
        self.report_only_seen.set(n);
        if n <= 256 || n % 256 == 0 {
            let port = port.map_or_else(|| "an unknown port".to_string(), |p| format!("port {p}"));
            host.log(
                Level::Warn,
                &format!(
                    "report-only STRICT: plaintext {what} from {} to {port} admitted; it would be reset without meshauthz.io/strict-report-only (report-only plaintext {what}s so far: {n})",
                    source.unwrap_or("an unknown address"),
                ),
            );
        }
    }

    /// `on_tick`: hands the counts of this root's streams to the host.
    pub fn flush_metrics(&self, host: &dyn Host) {
        self.metrics.borrow().flush(host);
    }

    /// Request-path errors that mean a broken deployment are logged at error level, but not for
    /// every request: the first 16, then one in 1024.
    pub(crate) fn log_error(&self, host: &dyn Host, message: &str) {
        let n = self.errors_logged.get();
        self.errors_logged.set(n.wrapping_add(1));
        if n < 16 || n % 1024 == 0 {
            host.log(Level::Error, message);
        }
    }

    /// `on_configure`. Always returns true: returning false would make Envoy reject the whole
    /// listener (at startup Envoy would not start at all). An invalid configuration is refused
    /// instead: every problem is logged, `meshauthz.config_refused` counts it, and the last good
    /// configuration stays in force; with none ever, everything is denied.
    pub fn configure(&self, host: &dyn Host, root_id: &str, configuration: Option<&[u8]>) -> bool {
        let stage = Stage::from_root_id(root_id);
        self.stage.set(stage);
        if self.metrics.borrow().allowed.is_none() {
            *self.metrics.borrow_mut() = Metrics::define(host);
        }
        let Some(stage) = stage else {
            host.log(
                Level::Error,
                &format!(
                    "unknown root_id {root_id:?} (expected {ROOT_HTTP}, {ROOT_HTTP_ENFORCE}, {ROOT_NET} or {ROOT_NET_ENFORCE}): this filter denies everything"
                ),
            );
            return true;
        };
        match stage {
            Stage::HttpEnforce | Stage::NetEnforce => {
                if stage == Stage::HttpEnforce {
                    self.vm.http_enforce.set(true);
                } else {
                    self.vm.net_enforce.set(true);
                }
                // The enforce stages act on the decide stage's verdict only; a configuration given
                // to them is checked so that mistakes show, and otherwise unused.
                if let Some(bytes) =
                    configuration.filter(|b| !b.iter().all(u8::is_ascii_whitespace))
                {
                    if let Err(errors) = config::parse(bytes) {
                        for e in errors {
                            host.log(
                                Level::Warn,
                                &format!(
                                    "{root_id}: configuration (unused by the enforce stage): {e}"
                                ),
                            );
                        }
                    }
                }
                true
            }
            Stage::HttpDecide | Stage::NetDecide => {
                *self.key.borrow_mut() = last_good_key(host, root_id);
                if stage == Stage::NetDecide {
                    self.vm.net_decide.set(true);
                } else {
                    self.vm.http_decide.set(true);
                }
                let bytes = configuration.unwrap_or_default();
                if let Some(shared) = self.vm.compiled_from(bytes) {
                    // Another stage of this VM compiled these very bytes: share its result.
                    host.log(
                        Level::Info,
                        &format!(
                            "{root_id}: configuration accepted (compiled once in this VM, shared)"
                        ),
                    );
                    self.accept(host, shared);
                    return true;
                }
                let result = config::parse(bytes).and_then(|cfg| {
                    let node = if cfg.workload.is_none() {
                        node_workload(host)
                    } else {
                        NodeWorkload::default()
                    };
                    config::compile(cfg, &node)
                });
                match result {
                    Ok(compiled) => {
                        for w in &compiled.warnings {
                            host.log(Level::Warn, &format!("{root_id}: {w}"));
                        }
                        let n = compiled.authz.requirements();
                        host.log(
                            Level::Info,
                            &format!("{root_id}: configuration accepted (fetches: {n:?})"),
                        );
                        let compiled = Rc::new(compiled);
                        self.vm.share_compiled(bytes, &compiled);
                        self.accept(host, compiled);
                    }
                    Err(errors) => {
                        for e in &errors {
                            host.log(
                                Level::Error,
                                &format!("{root_id}: configuration refused: {e}"),
                            );
                        }
                        bump(host, self.metrics.borrow().config_refused);
                        if self.compiled.borrow().is_none() {
                            let previous = self.vm.last_good(&self.key.borrow());
                            if let Some(previous) = previous {
                                self.install(host, previous);
                            }
                        }
                        let what = if self.compiled.borrow().is_some() {
                            "the previous valid configuration stays in force"
                        } else {
                            "no valid configuration yet: every request and connection is denied"
                        };
                        host.log(Level::Error, &format!("{root_id}: {what}"));
                    }
                }
                true
            }
        }
    }

    /// Which proxy-wasm context type streams of this root get. An unknown root id gets HTTP
    /// contexts that deny every request (on a network filter that makes the VM fail, which
    /// Envoy's failure policy turns into closed connections).
    pub fn is_network(&self) -> bool {
        self.stage.get().is_some_and(Stage::is_network)
    }
}

/// Which earlier configuration a refused one may fall back to: the same filter (Envoy plugin
/// `name`; Istio: `<namespace>.<WasmPlugin name>`) and stage. Two differently named filters in one
/// VM never inherit each other's policies.
fn last_good_key(host: &dyn Host, root_id: &str) -> String {
    let name = host
        .property(&["plugin_name"])
        .and_then(decode_str)
        .unwrap_or_default();
    format!("{name}\u{0}{root_id}")
}

fn node_workload(host: &dyn Host) -> NodeWorkload {
    // Envoy 1.40 exposes the node as `xds.node` (verified); older releases as `node`.
    let meta = |key: &str| {
        host.property(&["xds", "node", "metadata", key])
            .or_else(|| host.property(&["node", "metadata", key]))
    };
    let namespace = meta("NAMESPACE").and_then(decode_str);
    let raw_labels = meta("LABELS");
    let labels = raw_labels.as_deref().and_then(decode_pairs).map(|pairs| {
        // Inserted one by one (a later repeat wins, as with `collect`): `collect` into a
        // BTreeMap sorts first, a copy of the standard sort the module need not carry.
        let mut labels = std::collections::BTreeMap::new();
        for (k, v) in pairs {
            labels.insert(k, v);
        }
        labels
    });
    NodeWorkload {
        namespace,
        labels_unreadable: raw_labels.is_some() && labels.is_none(),
        labels,
    }
}
