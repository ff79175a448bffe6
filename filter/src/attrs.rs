//! Decoding Envoy property values (`get_property`) and fetching the attributes a compiled policy
//! set needs. Encodings (Envoy `serializeValue`, see `docs/envoy-wasm.md` §2): strings raw,
//! int64/uint64 as 8 bytes little-endian, bool as 1 byte, maps as proxy-wasm pairs.

use std::net::{IpAddr, SocketAddr};

/// An int64 property (`destination.port`, `source.port`, ...): exactly 8 bytes, little-endian.
/// Anything else is "absent": a malformed value must never become a port that matches a policy.
pub fn decode_i64(bytes: &[u8]) -> Option<i64> {
    let arr: [u8; 8] = bytes.try_into().ok()?;
    Some(i64::from_le_bytes(arr))
}

/// A uint64 property (`connection_id`): exactly 8 bytes, little-endian.
pub fn decode_u64(bytes: &[u8]) -> Option<u64> {
    let arr: [u8; 8] = bytes.try_into().ok()?;
    Some(u64::from_le_bytes(arr))
}

/// A port property: an int64 in 0..=65535.
pub fn decode_port(bytes: &[u8]) -> Option<u16> {
    decode_i64(bytes).and_then(|v| u16::try_from(v).ok())
}

/// A bool property (`connection.mtls`): exactly one byte, `0` or `1`. Anything else is `None`, which
/// callers treat as "not mTLS".
pub fn decode_bool(bytes: &[u8]) -> Option<bool> {
    match bytes {
        [0] => Some(false),
        [1] => Some(true),
        _ => None,
    }
}

/// A UTF-8 string property. Invalid UTF-8 is `None`.
pub fn decode_str(bytes: Vec<u8>) -> Option<String> {
    String::from_utf8(bytes).ok()
}

/// The IP of an Envoy address string: `10.0.0.1:8080`, `[::1]:8080`, or a bare IP (the value the
/// network filter hands to the HTTP filter). A pipe path or garbage is `None`.
pub fn parse_ip(addr: &str) -> Option<IpAddr> {
    if let Ok(sa) = addr.parse::<SocketAddr>() {
        return Some(sa.ip());
    }
    addr.parse::<IpAddr>().ok()
}

/// proxy-wasm pairs encoding (maps such as `node.metadata.LABELS`): `u32 n`, `n` times
/// (`u32 key_len`, `u32 value_len`), then each key and value followed by a NUL. Returns `None`
/// on any inconsistency (never a partial map).
pub fn decode_pairs(bytes: &[u8]) -> Option<Vec<(String, String)>> {
    fn u32_at(b: &[u8], at: usize) -> Option<usize> {
        let arr: [u8; 4] = b.get(at..at.checked_add(4)?)?.try_into().ok()?;
        usize::try_from(u32::from_le_bytes(arr)).ok()
    }
    let n = u32_at(bytes, 0)?;
    let header_end = n.checked_mul(8)?.checked_add(4)?;
    if header_end > bytes.len() {
        return None;
    }
    let mut sizes = Vec::with_capacity(n);
    for i in 0..n {
        let base = 4 + i * 8;
        sizes.push((u32_at(bytes, base)?, u32_at(bytes, base + 4)?));
    }
    let mut pos = header_end;
    let mut out = Vec::with_capacity(n);
    let mut take = |len: usize| -> Option<String> {
        let end = pos.checked_add(len)?;
        let s = std::str::from_utf8(bytes.get(pos..end)?).ok()?.to_string();
        if bytes.get(end) != Some(&0) {
            return None;
        }
        pos = end + 1;
        Some(s)
    };
    for (klen, vlen) in sizes {
        let k = take(klen)?;
        let v = take(vlen)?;
        out.push((k, v));
    }
    Some(out)
}

/// Why a peer certificate's identity cannot be taken as Envoy RBAC would take it. Such a
/// certificate is refused wherever a policy reads the principal: Envoy's `authenticated`
/// matcher tries every URI SAN, every DNS SAN and the subject, and matching fewer could let a
/// DENY miss.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unseen {
    /// No SAN list in connection filter state: the `set_filter_state` companion is not on this
    /// filter chain (or runs after `meshauthz_net`).
    NoSanList,
    /// The certificate carries more than one SAN (URI and DNS counted together), or a SAN with a
    /// separator in it: one identity cannot stand for it.
    SeveralSans,
}

impl Unseen {
    pub fn message(self) -> &'static str {
        match self {
            Unseen::NoSanList => "the peer certificate's SAN list (connection filter state meshauthz.peer_sans) is missing: put envoy.filters.network.set_filter_state with on_downstream_tls_handshake first on the filter chain (see the templates): connection denied",
            Unseen::SeveralSans => "the peer certificate carries more than one SAN: Envoy RBAC would match every one of them, meshauthz matches one identity: connection denied",
        }
    }
}

/// The one SAN of the peer SAN list `<uri,uri,...> <dns,dns,...>` (connection filter state
/// `meshauthz.peer_sans`, see `names::PEER_SANS`), `None` for none. Counting splits at every comma
/// and space, so a SAN that contains one is counted twice: refused, never matched in pieces.
pub fn single_san(sans: &str) -> Result<Option<&str>, Unseen> {
    let (uris, dns) = sans.split_once(' ').ok_or(Unseen::SeveralSans)?;
    let all = [uris, dns];
    let count: usize = all
        .iter()
        .map(|list| {
            if list.is_empty() {
                0
            } else {
                list.split([',', ' ']).count()
            }
        })
        .sum();
    match count {
        0 => Ok(None),
        1 => Ok(all.into_iter().find(|l| !l.is_empty())),
        _ => Err(Unseen::SeveralSans),
    }
}

#[cfg(test)]
#[path = "../tests/support/pairs.rs"]
mod encode;

#[cfg(test)]
mod tests {
    use super::encode::encode_pairs;
    use super::*;

    #[test]
    fn int64_is_eight_bytes_little_endian() {
        // Observed on Envoy 1.40: source.port 45456.
        assert_eq!(decode_i64(&[0x90, 0xb1, 0, 0, 0, 0, 0, 0]), Some(45456));
        assert_eq!(decode_port(&[0xa0, 0x3a, 0, 0, 0, 0, 0, 0]), Some(15008));
        assert_eq!(decode_i64(&(-1i64).to_le_bytes()), Some(-1));
    }

    #[test]
    fn malformed_ints_are_absent() {
        assert_eq!(decode_i64(&[0x90, 0xb1]), None);
        assert_eq!(decode_i64(&[0; 9]), None);
        assert_eq!(decode_i64(&[]), None);
        // Out of port range.
        assert_eq!(decode_port(&70000i64.to_le_bytes()), None);
        assert_eq!(decode_port(&(-5i64).to_le_bytes()), None);
    }

    #[test]
    fn bool_is_one_byte() {
        assert_eq!(decode_bool(&[1]), Some(true));
        assert_eq!(decode_bool(&[0]), Some(false));
        assert_eq!(decode_bool(&[]), None);
        assert_eq!(decode_bool(&[2]), None);
        assert_eq!(decode_bool(&[1, 0]), None);
        assert_eq!(decode_bool(b"true"), None);
    }

    #[test]
    fn addresses() {
        assert_eq!(
            parse_ip("127.0.0.1:45456"),
            Some("127.0.0.1".parse().unwrap())
        );
        assert_eq!(parse_ip("[::1]:80"), Some("::1".parse().unwrap()));
        assert_eq!(parse_ip("10.1.2.3"), Some("10.1.2.3".parse().unwrap()));
        assert_eq!(parse_ip("/tmp/envoy.sock"), None);
        assert_eq!(parse_ip(""), None);
    }

    #[test]
    fn pairs_round_trip() {
        let enc = encode_pairs(&[("app", "httpbin"), ("version", "v1")]);
        assert_eq!(
            decode_pairs(&enc).unwrap(),
            vec![
                ("app".to_string(), "httpbin".to_string()),
                ("version".to_string(), "v1".to_string())
            ]
        );
        assert_eq!(decode_pairs(&encode_pairs(&[])).unwrap(), vec![]);
    }

    #[test]
    fn truncated_pairs_are_rejected() {
        let enc = encode_pairs(&[("app", "httpbin")]);
        for cut in 0..enc.len() {
            assert_eq!(decode_pairs(&enc[..cut]), None, "cut at {cut}");
        }
        // A count far larger than the buffer.
        assert_eq!(decode_pairs(&[0xff, 0xff, 0xff, 0x7f]), None);
    }

    #[test]
    fn one_san_is_the_identity_several_are_refused() {
        let one = "spiffe://cluster.local/ns/foo/sa/admin";
        assert_eq!(single_san(&format!("{one} ")), Ok(Some(one)));
        assert_eq!(single_san(" client.foo.svc"), Ok(Some("client.foo.svc")));
        assert_eq!(single_san(" "), Ok(None));
        // As Envoy 1.40 writes a certificate with two URI SANs and a DNS SAN.
        for sans in [
            "spiffe://cluster.local/ns/foo/sa/admin,spiffe://cluster.local/ns/default/sa/blocked ",
            "spiffe://cluster.local/ns/foo/sa/admin x.example",
            " a.example,b.example",
            // A SAN with a separator inside is never read as one identity.
            "spiffe://td/a,b ",
            "spiffe://td/a b ",
            // Not what the companion writes.
            "",
            "spiffe://td/a",
        ] {
            assert_eq!(single_san(sans), Err(Unseen::SeveralSans), "{sans:?}");
        }
    }
}
