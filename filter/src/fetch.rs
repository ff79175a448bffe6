//! Fetching what the compiled policies need from the host, and nothing more
//! ([`policy_engine::Requirements`]): the transport facts of the stream (`Transport`), the peer
//! identity, the request attributes; then asking the policies (`evaluate`).

use std::borrow::Cow;
use std::net::IpAddr;
use std::ops::Range;

use policy_engine::{Attributes, Decision, HttpAttributes, MtlsMode, Protocol};

use crate::attrs::{decode_bool, decode_port, decode_str, parse_ip, single_san, Unseen};
use crate::names::{JWT_AUTHN, PEER_SANS, REQUEST_FACTS};
use crate::traits::{Authorizer, Host};
use crate::vm::ConnFacts;

pub(crate) fn prop_str(host: &dyn Host, path: &[&str]) -> Option<String> {
    host.property(path)
        .and_then(decode_str)
        .filter(|s| !s.is_empty())
}

pub(crate) fn prop_ip(host: &dyn Host, path: &[&str]) -> Option<IpAddr> {
    prop_str(host, path).and_then(|s| parse_ip(&s))
}

fn header(host: &dyn Host, name: &str) -> Option<String> {
    host.request_header(name).map(lossy)
}

/// Lossy: a value that is not UTF-8 still matches (or fails to match) as the bytes it has, never
/// disappears (an absent path would not match a DENY rule on it). Valid UTF-8 (the usual case) is
/// taken as is, without a second copy.
fn lossy(b: Vec<u8>) -> String {
    String::from_utf8(b).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// What Envoy's `set_filter_state` companion wrote for this request ([`REQUEST_FACTS`]): the
/// connection id and the pseudo-headers, read in one host call. The pseudo-headers stay in the
/// buffer the host returned (one allocation per request, not one per value).
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct RequestFacts {
    pub(crate) connection_id: u64,
    text: String,
    method: Option<Range<usize>>,
    authority: Option<Range<usize>>,
    path: Option<Range<usize>>,
}

impl RequestFacts {
    fn get(&self, pseudo: &str) -> Option<&str> {
        let range = match pseudo {
            ":method" => self.method.as_ref(),
            ":authority" => self.authority.as_ref(),
            ":path" => self.path.as_ref(),
            _ => None,
        }?;
        self.text.get(range.clone())
    }
}

/// The companion's value for this request, if the chain has one. `None` also when the value does
/// not have the documented shape (a companion configured with another format): the caller then
/// reads each fact from the host, so a wrong format can cost time, never a wrong attribute.
pub(crate) fn request_facts(host: &dyn Host) -> Option<RequestFacts> {
    parse_request_facts(lossy(host.property(&["filter_state", REQUEST_FACTS])?))
}

fn parse_request_facts(text: String) -> Option<RequestFacts> {
    // Four lines: the connection id, then the three pseudo-headers as byte ranges of `text`.
    let mut ranges = [0..0, 0..0, 0..0, 0..0];
    let mut start = 0;
    for (i, range) in ranges.iter_mut().enumerate() {
        let end = if i == 3 {
            text.len()
        } else {
            start + text.get(start..)?.find('\n')?
        };
        *range = start..end;
        start = end + 1;
    }
    let [id, method, authority, path] = ranges;
    let field = |r: &Range<usize>| text.get(r.clone()).unwrap_or_default();
    let connection_id = field(&id).parse().ok()?;
    // A method is a token; an authority has no `/` or space; a path (absent only for CONNECT)
    // is origin-form or `*`: fields in another order fail these.
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    };
    let (m, a, p) = (field(&method), field(&authority), field(&path));
    let valid =
        token(m) && !a.contains(['/', ' ']) && (p.is_empty() || p.starts_with('/') || p == "*");
    let present = |r: Range<usize>| (!r.is_empty()).then_some(r);
    valid.then(|| RequestFacts {
        connection_id,
        method: present(method),
        authority: present(authority),
        path: present(path),
        text,
    })
}

/// The peer identity as Envoy RBAC's `authenticated` principal sees it, for a certificate with at
/// most one SAN: that SAN (URI or DNS), else the subject. Read from the SAN list Envoy's
/// `set_filter_state` companion wrote ([`crate::names::PEER_SANS`]); proxy-wasm itself exposes
/// only the first URI SAN. Callers ask only on an mTLS connection.
pub(crate) fn peer_identity(host: &dyn Host) -> Result<Option<String>, Unseen> {
    let sans = host
        .property(&["filter_state", PEER_SANS])
        .and_then(decode_str)
        .ok_or(Unseen::NoSanList)?;
    match single_san(&sans)? {
        Some(san) => Ok(Some(san.to_string())),
        None => Ok(prop_str(host, &["connection", "subject_peer_certificate"])),
    }
}

/// The identity the policies see on this stream: `Ok(None)` when they read none or the stream
/// is not authenticated (plaintext, or TLS on a DISABLE port). `facts`: what `meshauthz_net`
/// recorded for the connection (then lent, not copied); else the host is asked.
pub(crate) fn principal<'f>(
    host: &dyn Host,
    authz: &dyn Authorizer,
    t: &Transport,
    facts: Option<&'f ConnFacts>,
) -> Result<Option<Cow<'f, str>>, Unseen> {
    if !authz.requirements().principal || !t.authenticated() {
        return Ok(None);
    }
    match facts.and_then(|f| f.identity.as_ref()) {
        Some(Ok(identity)) => Ok(identity.as_deref().map(Cow::Borrowed)),
        Some(Err(unseen)) => Err(*unseen),
        None => peer_identity(host).map(|p| p.map(Cow::Owned)),
    }
}

/// The transport facts of a stream: whether it is mTLS and the mode of its port.
pub(crate) struct Transport {
    pub(crate) mtls: bool,
    pub(crate) port: Option<u16>,
    pub(crate) mode: MtlsMode,
    /// `mode` is STRICT made report-only (`meshauthz.io/strict-report-only`).
    pub(crate) report_only: bool,
}

impl Transport {
    /// Plaintext on a STRICT port that is enforced: the stream is refused.
    pub(crate) fn strict_refuses(&self) -> bool {
        self.mode == MtlsMode::Strict && !self.report_only && !self.mtls
    }

    /// Plaintext on a report-only STRICT port: admitted, counted and logged.
    pub(crate) fn strict_reports(&self) -> bool {
        self.mode == MtlsMode::Strict && self.report_only && !self.mtls
    }

    /// Whether the peer is authenticated. DISABLE: the workload does not authenticate peers; a
    /// TLS connection there is refused by the stages, and were it not, its certificate would
    /// grant nothing: no principal, not mTLS.
    pub(crate) fn authenticated(&self) -> bool {
        self.mtls && self.mode != MtlsMode::Disable
    }
}

/// `facts`: what `meshauthz_net` recorded for this connection, if anything; else the host is
/// asked.
pub(crate) fn transport(
    host: &dyn Host,
    authz: &dyn Authorizer,
    always_port: bool,
    facts: Option<&ConnFacts>,
) -> Transport {
    let mtls = match facts {
        Some(f) => f.mtls,
        None => host
            .property(&["connection", "mtls"])
            .and_then(|b| decode_bool(&b))
            .unwrap_or(false),
    };
    let need_port =
        always_port || authz.requirements().destination_port || authz.has_port_level_mtls();
    let port = match facts {
        _ if !need_port => None,
        Some(f) => f.port,
        None => host
            .property(&["destination", "port"])
            .and_then(|b| decode_port(&b)),
    };
    let answer = authz.mtls_mode_at(port);
    Transport {
        mtls,
        port,
        mode: answer.mode,
        report_only: answer.report_only,
    }
}

/// Attribute values fetched from the host (or borrowed from the request companion's value),
/// borrowed by [`Attributes`].
#[derive(Default)]
struct Fetched<'a> {
    principal: Option<Cow<'a, str>>,
    sni: Option<String>,
    host: Option<Cow<'a, str>>,
    method: Option<Cow<'a, str>>,
    path: Option<Cow<'a, str>>,
    headers: Vec<(String, String)>,
}

/// Fetches what the policies need and asks them. `principal`: from [`principal()`]; `peer_ip` is
/// the direct peer (L4: the socket peer; L7: handed over by the network filter); `pre`: the
/// pseudo-headers Envoy's companion wrote for the request, if any.
pub(crate) fn evaluate<'a>(
    host: &dyn Host,
    authz: &dyn Authorizer,
    protocol: Protocol,
    t: &Transport,
    principal: Option<Cow<'a, str>>,
    peer_ip: Option<IpAddr>,
    pre: Option<&'a RequestFacts>,
) -> Decision {
    let req = authz.requirements();
    let authenticated = t.authenticated();
    let mut f = Fetched {
        principal,
        ..Fetched::default()
    };
    if req.sni {
        f.sni = prop_str(host, &["connection", "requested_server_name"]);
    }
    let http = protocol == Protocol::Http;
    if http {
        // Envoy RBAC matches a header sent several times when any one of its values matches.
        // The host's single-header read returns the first value only, so a second copy could
        // hide the value a DENY names: when policies name headers, the whole list is read once
        // (one host call). The pseudo-headers are then taken from that list, not read one by
        // one (each read is a host call); one missing from the list is still read by itself.
        let all = (req.all_headers || !req.headers.is_empty()).then(|| host.request_headers());
        let pseudo = |name: &str| -> Option<Cow<'_, str>> {
            if let Some(pre) = pre {
                // The companion wrote the three pseudo-headers; an empty one is absent.
                return pre.get(name).map(Cow::Borrowed);
            }
            all.as_ref()
                .and_then(|all| all.iter().find(|(n, _)| n == name))
                .map(|(_, v)| v.clone())
                .or_else(|| header(host, name))
                .map(Cow::Owned)
        };
        if req.host {
            f.host = pseudo(":authority");
        }
        if req.method {
            f.method = pseudo(":method");
        }
        if req.path {
            f.path = pseudo(":path");
        }
        if let Some(all) = all {
            if req.all_headers {
                f.headers = all;
            } else {
                // Every value of the headers the policies name.
                for (n, value) in all {
                    if let Some(name) = req.headers.iter().find(|h| n.eq_ignore_ascii_case(h)) {
                        f.headers.push((name.clone(), value));
                    }
                }
            }
        }
    }
    let remote_ip = if req.remote_ip {
        prop_ip(host, &["source", "address"])
    } else {
        None
    };
    let destination_ip = if req.destination_ip {
        prop_ip(host, &["destination", "address"])
    } else {
        None
    };
    // Dynamic metadata: the JWT payload Envoy's jwt_authn filter verified, and
    // `experimental.envoy.filters.*` conditions. Never a request header.
    let metadata = if (http && req.jwt) || !req.dynamic_metadata.is_empty() {
        host.property(&["metadata"])
            .and_then(|b| crate::proto::decode_metadata(&b))
    } else {
        None
    };
    let jwt = if http && req.jwt {
        metadata
            .as_ref()
            .and_then(|m| m.get(JWT_AUTHN))
            .and_then(|f| f.get("payload"))
    } else {
        None
    };
    let pairs: Vec<(&str, &str)> = f
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let attrs = Attributes {
        principal: f.principal.as_deref(),
        mtls: authenticated,
        source_ip: peer_ip,
        remote_ip,
        destination_ip,
        destination_port: t.port,
        sni: f.sni.as_deref(),
        dynamic_metadata: metadata.as_ref(),
        http: http.then(|| HttpAttributes {
            host: f.host.as_deref(),
            method: f.method.as_deref(),
            path: f.path.as_deref(),
            headers: &pairs,
            jwt,
        }),
    };
    authz.check(protocol, &attrs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_facts_are_taken_only_in_their_documented_shape() {
        let parse = |s: &str| parse_request_facts(s.to_string());
        let f = parse("17\nGET\nshop.example:8080\n/api/orders?id=1").unwrap();
        assert_eq!(f.connection_id, 17);
        assert_eq!(f.get(":method"), Some("GET"));
        assert_eq!(f.get(":authority"), Some("shop.example:8080"));
        assert_eq!(f.get(":path"), Some("/api/orders?id=1"));
        assert_eq!(f.get(":scheme"), None);
        // Absent authority (HTTP/1.0 without Host) and path (CONNECT): empty lines.
        let f = parse("3\nCONNECT\n\n").unwrap();
        assert_eq!(f.get(":method"), Some("CONNECT"));
        assert_eq!((f.get(":authority"), f.get(":path")), (None, None));
        assert_eq!(parse("3\nOPTIONS\nh\n*").unwrap().get(":path"), Some("*"));
        // A path may hold what the other lines may not (it is the last field).
        let f = parse("3\nGET\nh\n/a b\nc").unwrap();
        assert_eq!(f.get(":path"), Some("/a b\nc"));
        for wrong in [
            "",
            "x\nGET\nh\n/",
            "3\nGET\nh",
            "3\n/admin\nh\nGET",
            "3\nGET\n/admin\nh",
            "3\n\nh\n/",
            "3\nGET\nh\nadmin",
        ] {
            assert_eq!(parse(wrong), None, "{wrong:?}");
        }
    }
}
