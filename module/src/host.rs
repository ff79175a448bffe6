//! The proxy-wasm adapter: the only module that uses proxy-wasm. [`ProxyHost`] implements
//! [`Host`] with `proxy_wasm::hostcalls`; the context types forward each callback to its stage
//! (`meshauthz_filter::http`, `net`, `plugin`). The module's entry point (`_initialize`)
//! is defined here too.
//!
//! The SDK's host-call wrappers panic on statuses they do not expect (a panic traps the VM, and
//! with Envoy's failure policy every later request on that worker fails). `get_property` and
//! `increment_metric` return errors for the statuses Envoy uses and are handled; `set_property`,
//! `send_http_response` and `close_downstream` can only fail without a stream, so they are called
//! only from stream contexts; nothing here writes from a root context.

use std::rc::Rc;

use log::Level;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext, StreamContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType, MetricType};

use meshauthz_filter::names::{DENY_BODY, METRICS_FLUSH_PERIOD};
use meshauthz_filter::net::Conn;
use meshauthz_filter::plugin::Plugin;
use meshauthz_filter::traits::{Flow, Host};
use meshauthz_filter::vm::{Stage, VmState};
use meshauthz_filter::{http, net};

proxy_wasm::main! {{
    start();
}}

/// [`Host`] over the proxy-wasm ABI, for the context currently called.
pub struct ProxyHost;

impl Host for ProxyHost {
    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        hostcalls::get_property(path.to_vec()).ok().flatten()
    }

    fn request_header(&self, name: &str) -> Option<Vec<u8>> {
        hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, name)
            .ok()
            .flatten()
    }

    fn request_headers(&self) -> Vec<(String, String)> {
        hostcalls::get_map_bytes(MapType::HttpRequestHeaders)
            .map(|pairs| {
                pairs
                    .into_iter()
                    .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn set_filter_state(&self, key: &str, value: &[u8]) -> bool {
        hostcalls::set_property(vec![key], Some(value)).is_ok()
    }

    fn send_forbidden(&self) -> bool {
        hostcalls::send_http_response(403, Vec::new(), Some(DENY_BODY)).is_ok()
    }

    fn close_downstream(&self) -> bool {
        hostcalls::close_downstream().is_ok()
    }

    fn define_counter(&self, name: &str) -> Option<u32> {
        hostcalls::define_metric(MetricType::Counter, name).ok()
    }

    fn increment(&self, id: u32, by: i64) {
        // An error (unknown id) only loses a count.
        let _ = hostcalls::increment_metric(id, by);
    }

    fn log(&self, level: Level, message: &str) {
        let level = match level {
            Level::Error => LogLevel::Error,
            Level::Warn => LogLevel::Warn,
            Level::Info => LogLevel::Info,
            Level::Debug => LogLevel::Debug,
            Level::Trace => LogLevel::Trace,
        };
        let _ = hostcalls::log(level, message);
    }
}

thread_local! {
    /// One per VM (a VM runs on one worker thread).
    static VM: Rc<VmState> = Rc::new(VmState::default());
}

fn new_root(_context_id: u32) -> Box<dyn RootContext> {
    let vm = VM.with(Rc::clone);
    Box::new(Root {
        plugin: Rc::new(Plugin::new(vm)),
    })
}

/// Registers the root context factory; called from the module's `_initialize`.
fn start() {
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(new_root);
}

struct Root {
    plugin: Rc<Plugin>,
}

impl Context for Root {}

impl Drop for Root {
    /// A root context is deleted when its configuration is replaced: its last counts still count.
    fn drop(&mut self) {
        self.plugin.flush_metrics(&ProxyHost);
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, plugin_configuration_size: usize) -> bool {
        let host = ProxyHost;
        let root_id = host
            .property(&["plugin_root_id"])
            .and_then(|b| String::from_utf8(b).ok())
            .unwrap_or_default();
        let configuration = if plugin_configuration_size == 0 {
            None
        } else {
            hostcalls::get_buffer(
                BufferType::PluginConfiguration,
                0,
                plugin_configuration_size,
            )
            .ok()
            .flatten()
        };
        // Counters are summed in VM memory and handed to Envoy once per tick, not per request.
        // (Not the SDK's `set_tick_period`, which panics on an error status.)
        let _ = hostcalls::set_tick_period(METRICS_FLUSH_PERIOD);
        self.plugin
            .configure(&host, &root_id, configuration.as_deref())
    }

    fn on_tick(&mut self) {
        self.plugin.flush_metrics(&ProxyHost);
    }

    fn get_type(&self) -> Option<ContextType> {
        if self.plugin.is_network() {
            Some(ContextType::StreamContext)
        } else {
            Some(ContextType::HttpContext)
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Http {
            plugin: Rc::clone(&self.plugin),
        }))
    }

    fn create_stream_context(&self, _context_id: u32) -> Option<Box<dyn StreamContext>> {
        Some(Box::new(Net {
            plugin: Rc::clone(&self.plugin),
            conn: Conn::default(),
        }))
    }
}

fn action(flow: Flow) -> Action {
    match flow {
        Flow::Continue => Action::Continue,
        Flow::Stop => Action::Pause,
    }
}

struct Http {
    plugin: Rc<Plugin>,
}

impl Context for Http {}

impl HttpContext for Http {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let host = ProxyHost;
        action(match self.plugin.stage.get() {
            Some(Stage::HttpDecide) => http::decide(&host, &self.plugin),
            Some(Stage::HttpEnforce) => http::enforce(&host, &self.plugin),
            _ => http::unknown_root(&host),
        })
    }
}

struct Net {
    plugin: Rc<Plugin>,
    conn: Conn,
}

impl Context for Net {}

impl Drop for Net {
    /// The SDK drops a context on `proxy_on_delete` (Envoy deletes a network filter's context
    /// when its connection is gone).
    fn drop(&mut self) {
        net::done(&self.plugin, &mut self.conn);
    }
}

impl StreamContext for Net {
    fn on_new_connection(&mut self) -> Action {
        let host = ProxyHost;
        let conn = &mut self.conn;
        action(match self.plugin.stage.get() {
            Some(Stage::NetDecide) => net::new_connection(&host, &self.plugin, conn),
            Some(Stage::NetEnforce) => Flow::Continue,
            _ => net::unknown_root(&host, conn),
        })
    }

    fn on_downstream_data(&mut self, _data_size: usize, _end_of_stream: bool) -> Action {
        let host = ProxyHost;
        let conn = &mut self.conn;
        action(match self.plugin.stage.get() {
            Some(Stage::NetDecide) => net::decide(&host, &self.plugin, conn),
            Some(Stage::NetEnforce) => net::enforce(&host, &self.plugin, conn),
            _ => net::unknown_root(&host, conn),
        })
    }
}
