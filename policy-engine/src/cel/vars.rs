//! The attribute vocabulary (Envoy's names) and how each attribute is read from [`Attributes`].
//!
//! The compiler replaces every attribute path of an expression (`source.principal`,
//! `request.headers["x-tenant"]`, `has(request.auth.claims.groups)`, ...) by one flat variable whose
//! name contains a `.` or a `[`, so it cannot collide with a name the user can write. At evaluation
//! only those variables are built, and an absent attribute is simply not defined: reading it is an
//! error, testing it with `has()` is false.

use std::net::IpAddr;
use std::sync::Arc;

use cel_interpreter::objects::{Key, Map};
use cel_interpreter::Value;
use ipnet::IpNet;

use super::compile::Ty;
use crate::attributes::{Attributes, Requirements};

/// One named attribute.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Attr {
    SourceAddress,
    SourceRemoteAddress,
    SourcePrincipal,
    SourceNamespace,
    SourceServiceAccount,
    SourceTrustDomain,
    DestinationAddress,
    DestinationPort,
    ConnectionMtls,
    ConnectionSni,
    RequestMethod,
    RequestPath,
    RequestUrlPath,
    RequestHost,
    RequestHeaders,
    RequestAuthPrincipal,
    RequestAuthClaims,
}

/// Every attribute by its CEL name, in the order the documentation lists them.
pub(super) const ATTRIBUTES: &[(&str, Attr)] = &[
    ("source.address", Attr::SourceAddress),
    ("source.remote_address", Attr::SourceRemoteAddress),
    ("source.principal", Attr::SourcePrincipal),
    ("source.namespace", Attr::SourceNamespace),
    ("source.service_account", Attr::SourceServiceAccount),
    ("source.trust_domain", Attr::SourceTrustDomain),
    ("destination.address", Attr::DestinationAddress),
    ("destination.port", Attr::DestinationPort),
    ("connection.mtls", Attr::ConnectionMtls),
    ("connection.requested_server_name", Attr::ConnectionSni),
    ("request.method", Attr::RequestMethod),
    ("request.path", Attr::RequestPath),
    ("request.url_path", Attr::RequestUrlPath),
    ("request.host", Attr::RequestHost),
    ("request.headers", Attr::RequestHeaders),
    ("request.auth.principal", Attr::RequestAuthPrincipal),
    ("request.auth.claims", Attr::RequestAuthClaims),
];

/// The comma-separated list of attribute names, for error messages.
pub(super) fn known_attributes() -> String {
    ATTRIBUTES
        .iter()
        .map(|(name, _)| *name)
        .collect::<Vec<_>>()
        .join(", ")
}

impl Attr {
    pub(super) fn name(self) -> &'static str {
        ATTRIBUTES
            .iter()
            .find(|(_, a)| *a == self)
            .map_or("?", |(name, _)| *name)
    }

    pub(super) fn ty(self) -> Ty {
        match self {
            Attr::DestinationPort => Ty::Int,
            Attr::ConnectionMtls => Ty::Bool,
            Attr::RequestHeaders | Attr::RequestAuthClaims => Ty::Map,
            _ => Ty::String,
        }
    }

    /// `source.address`, `source.remote_address`, `destination.address`.
    pub(super) fn is_address(self) -> bool {
        matches!(
            self,
            Attr::SourceAddress | Attr::SourceRemoteAddress | Attr::DestinationAddress
        )
    }

    /// The IP of an address attribute.
    fn address(self, attrs: &Attributes<'_>) -> Option<IpAddr> {
        match self {
            Attr::SourceAddress => attrs.source_ip,
            Attr::SourceRemoteAddress => attrs.remote_ip,
            Attr::DestinationAddress => attrs.destination_ip,
            _ => None,
        }
    }

    /// `request.*` exists only on an HTTP check.
    pub(super) fn is_http(self) -> bool {
        matches!(
            self,
            Attr::RequestMethod
                | Attr::RequestPath
                | Attr::RequestUrlPath
                | Attr::RequestHost
                | Attr::RequestHeaders
                | Attr::RequestAuthPrincipal
                | Attr::RequestAuthClaims
        )
    }

    fn require(self, req: &mut Requirements) {
        match self {
            Attr::SourceAddress => req.source_ip = true,
            Attr::SourceRemoteAddress => req.remote_ip = true,
            Attr::SourcePrincipal
            | Attr::SourceNamespace
            | Attr::SourceServiceAccount
            | Attr::SourceTrustDomain => req.principal = true,
            Attr::DestinationAddress => req.destination_ip = true,
            Attr::DestinationPort => req.destination_port = true,
            Attr::ConnectionMtls => req.mtls = true,
            Attr::ConnectionSni => req.sni = true,
            Attr::RequestMethod => req.method = true,
            Attr::RequestPath | Attr::RequestUrlPath => req.path = true,
            Attr::RequestHost => req.host = true,
            Attr::RequestHeaders => req.all_headers = true,
            Attr::RequestAuthPrincipal | Attr::RequestAuthClaims => req.jwt = true,
        }
    }

    fn value(self, attrs: &Attributes<'_>) -> Option<Value> {
        let http = || attrs.http.as_ref();
        match self {
            Attr::SourceAddress => attrs.source_ip.map(ip_value),
            Attr::SourceRemoteAddress => attrs.remote_ip.map(ip_value),
            Attr::SourcePrincipal => attrs.principal.map(str_value),
            Attr::SourceNamespace => spiffe(attrs.principal?).map(|(_, ns, _)| str_value(ns)),
            Attr::SourceServiceAccount => spiffe(attrs.principal?).map(|(_, _, sa)| str_value(sa)),
            Attr::SourceTrustDomain => spiffe(attrs.principal?).map(|(td, _, _)| str_value(td)),
            Attr::DestinationAddress => attrs.destination_ip.map(ip_value),
            Attr::DestinationPort => attrs.destination_port.map(|p| Value::Int(i64::from(p))),
            Attr::ConnectionMtls => Some(Value::Bool(attrs.mtls)),
            Attr::ConnectionSni => attrs.sni.map(str_value),
            Attr::RequestMethod => http()?.method.map(str_value),
            Attr::RequestPath | Attr::RequestUrlPath => {
                http()?.path.map(|p| str_value(crate::path::url_path(p)))
            }
            Attr::RequestHost => http()?.host.map(str_value),
            Attr::RequestHeaders => {
                let headers = http()?.headers;
                // A repeated header is one entry, its values joined with `,` (Envoy's attribute).
                let mut joined: Vec<(String, String)> = Vec::with_capacity(headers.len());
                for (n, v) in headers {
                    // Past the limit the map fails its check anyway: stop joining (which is
                    // quadratic in the number of names) there.
                    if joined.len() as u64 > super::cost::MAX_HEADERS {
                        break;
                    }
                    let name = n.to_ascii_lowercase();
                    match joined.iter_mut().find(|(k, _)| *k == name) {
                        Some((_, existing)) => {
                            existing.push(',');
                            existing.push_str(v);
                        }
                        None => joined.push((name, (*v).to_string())),
                    }
                }
                let map = joined
                    .into_iter()
                    .map(|(n, v)| (Key::from(n), str_value(&v)))
                    .collect();
                Some(Value::Map(Map { map: Arc::new(map) }))
            }
            Attr::RequestAuthPrincipal => {
                let jwt = http()?.jwt?;
                let iss = jwt.get("iss")?.as_str()?;
                let sub = jwt.get("sub")?.as_str()?;
                Some(Value::String(Arc::new(format!("{iss}/{sub}"))))
            }
            Attr::RequestAuthClaims => http()?.jwt.map(json_value),
        }
    }
}

/// What one flat variable holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum VarKind {
    /// A whole attribute.
    Attr(Attr),
    /// One request header, name in lower case.
    Header(String),
    /// The JWT claim at this path of object keys (never empty).
    Claim(Vec<String>),
    /// `has(<path>)`: defined (as a bool) when the path's parent exists.
    Has(Box<VarKind>),
    /// `ip_in_cidr(<address attribute>, "<constant>")`: defined when the address is present.
    InCidr(Attr, IpNet),
}

impl VarKind {
    /// The variable name the rewritten expression reads.
    pub(super) fn name(&self) -> String {
        match self {
            VarKind::Attr(a) => a.name().to_string(),
            VarKind::Header(h) => format!("request.headers[{h:?}]"),
            VarKind::Claim(path) => {
                let mut name = String::from("request.auth.claims");
                for key in path {
                    name.push_str(&format!("[{key:?}]"));
                }
                name
            }
            VarKind::Has(inner) => format!("has({})", inner.name()),
            VarKind::InCidr(attr, net) => format!("ip_in_cidr({}, \"{net}\")", attr.name()),
        }
    }

    /// The name a user would recognize in an error message.
    pub(super) fn display(&self) -> String {
        match self {
            VarKind::InCidr(attr, _) => attr.name().to_string(),
            other => other.name(),
        }
    }

    pub(super) fn is_http(&self) -> bool {
        match self {
            VarKind::Attr(a) => a.is_http(),
            VarKind::Header(_) | VarKind::Claim(_) => true,
            VarKind::Has(inner) => inner.is_http(),
            VarKind::InCidr(attr, _) => attr.is_http(),
        }
    }

    pub(super) fn require(&self, req: &mut Requirements) {
        match self {
            VarKind::Attr(a) => a.require(req),
            VarKind::Header(h) => req.add_header(h),
            VarKind::Claim(_) => req.jwt = true,
            // Whether the request has headers at all needs no header.
            VarKind::Has(inner) if **inner == VarKind::Attr(Attr::RequestHeaders) => {}
            VarKind::Has(inner) => inner.require(req),
            VarKind::InCidr(attr, _) => attr.require(req),
        }
    }

    /// The variable's value; `None` leaves it undefined, so reading it is an error.
    pub(super) fn value(&self, attrs: &Attributes<'_>) -> Option<Value> {
        match self {
            VarKind::Attr(a) => a.value(attrs),
            VarKind::Header(h) => attrs.http.as_ref()?.header_joined(h).map(|v| str_value(&v)),
            VarKind::Claim(path) => claim(attrs.http.as_ref()?.jwt?, path).map(json_value),
            VarKind::Has(inner) => inner.present(attrs).map(Value::Bool),
            VarKind::InCidr(attr, net) => attr
                .address(attrs)
                .map(|ip| Value::Bool(super::functions::contains_addr(net, ip))),
        }
    }

    /// Whether the attribute is present; `None` when its parent is absent (CEL makes `has()` on a
    /// missing parent an error): `request` on a TCP check, a claim below a missing object.
    fn present(&self, attrs: &Attributes<'_>) -> Option<bool> {
        match self {
            VarKind::Attr(a) if a.is_http() && attrs.http.is_none() => None,
            VarKind::Attr(Attr::RequestHeaders) => Some(true),
            VarKind::Attr(Attr::RequestAuthClaims) => Some(attrs.http.as_ref()?.jwt.is_some()),
            VarKind::Attr(a) => Some(a.value(attrs).is_some()),
            VarKind::Header(h) => Some(attrs.http.as_ref()?.header(h).is_some()),
            VarKind::Claim(path) => {
                let (last, parent) = path.split_last()?;
                let object = claim(attrs.http.as_ref()?.jwt?, parent)?.as_object()?;
                Some(object.contains_key(last))
            }
            VarKind::Has(_) | VarKind::InCidr(..) => None,
        }
    }
}

/// The JSON value at `path` (object keys) below `root`.
fn claim<'v>(root: &'v serde_json::Value, path: &[String]) -> Option<&'v serde_json::Value> {
    path.iter().try_fold(root, |v, key| v.as_object()?.get(key))
}

/// `spiffe://<trust domain>/ns/<namespace>/sa/<service account>` into its three parts.
pub(super) fn spiffe(principal: &str) -> Option<(&str, &str, &str)> {
    let mut parts = principal.strip_prefix("spiffe://")?.split('/');
    let (td, ns_label, ns, sa_label, sa) = (
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
    );
    let well_formed = parts.next().is_none()
        && ns_label == "ns"
        && sa_label == "sa"
        && !td.is_empty()
        && !ns.is_empty()
        && !sa.is_empty();
    well_formed.then_some((td, ns, sa))
}

fn str_value(s: &str) -> Value {
    Value::String(Arc::new(s.to_string()))
}

fn ip_value(ip: IpAddr) -> Value {
    Value::String(Arc::new(ip.to_string()))
}

/// A JSON value as a CEL value: objects become maps with string keys, integers `int` (or `uint`
/// above `i64::MAX`), other numbers `double`.
pub(super) fn json_value(v: &serde_json::Value) -> Value {
    match v {
        serde_json::Value::Null => Value::Null,
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::Int(i)
            } else if let Some(u) = n.as_u64() {
                Value::UInt(u)
            } else {
                Value::Float(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        serde_json::Value::String(s) => str_value(s),
        serde_json::Value::Array(items) => {
            Value::List(Arc::new(items.iter().map(json_value).collect()))
        }
        serde_json::Value::Object(o) => {
            let map = o
                .iter()
                .map(|(k, v)| (Key::from(k.as_str()), json_value(v)))
                .collect();
            Value::Map(Map { map: Arc::new(map) })
        }
    }
}
