//! What the four stages of one VM share: which stage a root context is ([`Stage`]), which
//! stages are configured, the last valid configuration of each filter, and the transport facts
//! `meshauthz_net` recorded per connection ([`ConnFacts`]) for the HTTP stages.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::IpAddr;
use std::rc::{Rc, Weak};

use crate::attrs::Unseen;
use crate::config::Compiled;
use crate::names::{ROOT_HTTP, ROOT_HTTP_ENFORCE, ROOT_NET, ROOT_NET_ENFORCE};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    HttpDecide,
    HttpEnforce,
    NetDecide,
    NetEnforce,
}

impl Stage {
    pub fn from_root_id(root_id: &str) -> Option<Stage> {
        match root_id {
            ROOT_HTTP => Some(Stage::HttpDecide),
            ROOT_HTTP_ENFORCE => Some(Stage::HttpEnforce),
            ROOT_NET => Some(Stage::NetDecide),
            ROOT_NET_ENFORCE => Some(Stage::NetEnforce),
            _ => None,
        }
    }

    pub fn is_network(self) -> bool {
        matches!(self, Stage::NetDecide | Stage::NetEnforce)
    }
}

/// State shared by every root context of one VM (one per worker thread).
#[derive(Default)]
pub struct VmState {
    /// A `meshauthz_http_enforce` root was configured in this VM.
    pub http_enforce: Cell<bool>,
    /// A `meshauthz_net_enforce` root was configured in this VM.
    pub net_enforce: Cell<bool>,
    /// A `meshauthz_http` root was configured in this VM.
    pub http_decide: Cell<bool>,
    /// A `meshauthz_http` stage of this VM has published an audit flag (AUDIT policies applied
    /// to a request). Never reset. While false, and `http_decide` is true, no request decided in
    /// this VM can carry an audit flag, so `meshauthz_http_enforce` does not read it (one host
    /// call less per request).
    pub http_audit_seen: Cell<bool>,
    /// A `meshauthz_net` root was configured in this VM: only then can connection facts exist,
    /// and only then does the HTTP decide stage ask for `connection_id`.
    pub net_decide: Cell<bool>,
    /// What the host said about each open downstream connection of this VM's worker, recorded by
    /// `meshauthz_net` and keyed by Envoy's `connection_id` (unique in the process, never reused).
    conns: RefCell<HashMap<u64, Rc<ConnFacts>, BuildHasherDefault<IdHasher>>>,
    /// The last valid configuration of each decide filter (plugin name and root id). An update (new plugin
    /// configuration from LDS/ECDS or a WasmPlugin change) gets a new root context in the same
    /// VM; when the update is refused, it starts from the previous valid one, not from nothing.
    last_good: RefCell<Vec<(String, Rc<Compiled>)>>,
    /// Every configuration compiled in this VM that a root still holds, by its bytes. The
    /// stages of one VM (network and HTTP decide, on every filter chain) are given the same
    /// plugin configuration, and Envoy's node (the workload, when the configuration does not
    /// name it) is the same for every VM of the process: the first stage compiles, the others
    /// share the result. Without this a listener with the HTTP and TCP chains compiled the
    /// same policies three times per VM (BENCHMARKS.md, "Loading").
    compiled: RefCell<Vec<(Vec<u8>, Weak<Compiled>)>>,
    /// Counts the configurations accepted in this VM ([`VmState::remember`]): a network stage
    /// compares it with the count it last saw, once per downstream read, to learn cheaply that a
    /// configuration may have been updated in place.
    generation: Cell<u64>,
    /// Filters (keys of `last_good`) under which a connection has been decided.
    serving: RefCell<Vec<String>>,
    /// Filters that two different configurations were accepted for before any connection was
    /// decided under them: two filters (two listeners) sharing one name, not one filter updated.
    /// Their open connections never follow "the latest" configuration of the name.
    siblings: RefCell<Vec<String>>,
}

impl VmState {
    pub(crate) fn last_good(&self, root_id: &str) -> Option<Rc<Compiled>> {
        self.last_good
            .borrow()
            .iter()
            .find(|(id, _)| id == root_id)
            .map(|(_, c)| Rc::clone(c))
    }

    /// Records the facts of connection `id` (its network stage saw its first data).
    pub fn record_conn(&self, id: u64, facts: ConnFacts) {
        let mut conns = self.conns.borrow_mut();
        if conns.len() >= MAX_CONNS && !conns.contains_key(&id) {
            // Records are only ever lost to a fallback that asks the host again; this bounds the
            // map should the host ever skip deleting contexts.
            conns.clear();
        }
        conns.insert(id, Rc::new(facts));
    }

    /// Forgets connection `id` (its network context is deleted).
    pub fn forget_conn(&self, id: u64) {
        self.conns.borrow_mut().remove(&id);
    }

    pub fn conn(&self, id: u64) -> Option<Rc<ConnFacts>> {
        self.conns.borrow().get(&id).cloned()
    }

    /// How many connections have recorded facts.
    pub fn open_conns(&self) -> usize {
        self.conns.borrow().len()
    }

    /// The configuration compiled in this VM from exactly `bytes`, if a root still holds it.
    pub(crate) fn compiled_from(&self, bytes: &[u8]) -> Option<Rc<Compiled>> {
        self.compiled
            .borrow()
            .iter()
            .find(|(b, _)| b.as_slice() == bytes)
            .and_then(|(_, c)| c.upgrade())
    }

    /// Offers `compiled`, made from `bytes`, to the other stages of this VM (forgetting the
    /// configurations no root holds any more).
    pub(crate) fn share_compiled(&self, bytes: &[u8], compiled: &Rc<Compiled>) {
        let mut all = self.compiled.borrow_mut();
        all.retain(|(b, c)| c.strong_count() > 0 && b.as_slice() != bytes);
        all.push((bytes.to_vec(), Rc::downgrade(compiled)));
    }

    pub(crate) fn remember(&self, key: &str, compiled: &Rc<Compiled>) {
        let mut all = self.last_good.borrow_mut();
        let another = all
            .iter()
            .any(|(id, c)| id == key && !Rc::ptr_eq(c, compiled));
        if another && !self.serving.borrow().iter().any(|k| k == key) {
            let mut siblings = self.siblings.borrow_mut();
            if !siblings.iter().any(|k| k == key) {
                siblings.push(key.to_string());
            }
        }
        all.retain(|(id, _)| id != key);
        all.push((key.to_string(), Rc::clone(compiled)));
        self.generation.set(self.generation.get().wrapping_add(1));
    }

    /// A connection was decided under filter `key` (see `siblings`).
    pub(crate) fn serve(&self, key: &str) {
        let mut serving = self.serving.borrow_mut();
        if !serving.iter().any(|k| k == key) {
            serving.push(key.to_string());
        }
    }

    /// Two filters share the name `key` (see `siblings`).
    pub(crate) fn has_siblings(&self, key: &str) -> bool {
        self.siblings.borrow().iter().any(|k| k == key)
    }

    /// How many configurations this VM has accepted so far (see `generation`).
    pub fn generation(&self) -> u64 {
        self.generation.get()
    }
}

/// Hashes a connection id for [`VmState`]'s map, once per request: one multiplication instead of
/// SipHash (about 100 native instructions less a lookup). Connection ids are Envoy's counter, not
/// chosen by a client, so no key can be crafted to collide (and the map is bounded anyway).
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u64(&mut self, id: u64) {
        // Fibonacci hashing: the high bits, which hashbrown uses, depend on every bit of the id.
        self.0 = (self.0 ^ id).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// Bound of [`VmState`]'s connection map (a worker's open connections are far fewer).
const MAX_CONNS: usize = 1 << 16;

/// The transport facts of one downstream connection, exactly as the host reported them when
/// `meshauthz_net` saw the connection's first data (TLS handshake done). Policy-independent: the
/// HTTP stage applies its own mTLS mode to them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnFacts {
    /// `connection.mtls`.
    pub mtls: bool,
    /// The peer identity (`fetch::peer_identity`), or why it cannot be taken: `Ok(None)` on a
    /// plaintext connection; `None` when it was not read (an mTLS connection, and no policy of
    /// `meshauthz_net`'s configuration reads it): an HTTP stage whose configuration reads it
    /// (its own, possibly newer, configuration) asks the host.
    pub identity: Option<Result<Option<String>, Unseen>>,
    /// `destination.port`.
    pub port: Option<u16>,
    /// The socket peer (`source.address` in `on_new_connection`).
    pub peer_ip: Option<IpAddr>,
}
