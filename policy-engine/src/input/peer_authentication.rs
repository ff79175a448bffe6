//! Decoding `PeerAuthentication.spec`: `selector`, `mtls: {mode}`, `portLevelMtls` (keys are
//! ports, written as strings or, in YAML, as integers). Rules are checked in `validate/`.

use std::collections::BTreeMap;

use serde_json::Value;

use super::authorization_policy::decode_selector;
use super::decode::Decoder;
use super::field_path::FieldPath;
use crate::model::{MtlsMode, PeerAuthenticationSpec};

const SPEC_FIELDS: &[&str] = &["selector", "mtls", "portLevelMtls"];

const MODES: &[(&str, MtlsMode)] = &[
    ("UNSET", MtlsMode::Unset),
    ("DISABLE", MtlsMode::Disable),
    ("PERMISSIVE", MtlsMode::Permissive),
    ("STRICT", MtlsMode::Strict),
];

pub(crate) fn decode_spec(dec: &mut Decoder, value: Option<&Value>) -> PeerAuthenticationSpec {
    let path = FieldPath::root().field("spec");
    let mut spec = PeerAuthenticationSpec::default();
    let Some(value) = value.filter(|v| !v.is_null()) else {
        return spec;
    };
    let Some(map) = dec.object(value, &path, SPEC_FIELDS) else {
        return spec;
    };
    spec.selector = decode_selector(dec, map.get("selector"), &path.field("selector"));
    spec.mtls = match map.get("mtls") {
        None | Some(Value::Null) => None,
        Some(v) => Some(decode_mtls(dec, v, &path.field("mtls"))),
    };
    spec.port_level_mtls = match map.get("portLevelMtls") {
        None | Some(Value::Null) => None,
        Some(v) => decode_port_level_mtls(dec, v, &path.field("portLevelMtls")),
    };
    spec
}

/// `{mode: ...}`; `{}` and `{mode: null}` are UNSET.
fn decode_mtls(dec: &mut Decoder, value: &Value, path: &FieldPath) -> MtlsMode {
    let Some(map) = dec.object(value, path, &["mode"]) else {
        return MtlsMode::Unset;
    };
    dec.enumeration(map.get("mode"), &path.field("mode"), MODES)
        .unwrap_or_default()
}

/// Port keys must be integers (the API server converts them: "type conversion error" otherwise).
/// The range 1..65535 is checked by validation, like Istio's; a key that does not even fit the
/// model's `u32` (or is negative) is reported here with the same message.
fn decode_port_level_mtls(
    dec: &mut Decoder,
    value: &Value,
    path: &FieldPath,
) -> Option<BTreeMap<u32, MtlsMode>> {
    let map = dec.object_any_fields(value, path)?;
    let mut out = BTreeMap::new();
    for (key, v) in map {
        let key_path = path.key(key);
        let mode = match v {
            Value::Null => MtlsMode::Unset,
            v => decode_mtls(dec, v, &key_path),
        };
        let port = match parse_port_key(key) {
            PortKey::Port(p) => p,
            PortKey::NotInteger => {
                dec.error(
                    &key_path,
                    format!(
                        "type conversion error from string {key:?} to integer: portLevelMtls keys are port numbers (1..65535)"
                    ),
                );
                continue;
            }
            PortKey::NotCanonical(n) => {
                dec.error(
                    &key_path,
                    format!(
                        "port key {key:?} is ambiguous: write the port as a plain decimal number ({n}); a sign or a leading zero is read differently by YAML 1.1 (kubectl: `010` is octal 8) and YAML 1.2"
                    ),
                );
                continue;
            }
            PortKey::OutOfRange => {
                dec.error(&key_path, "port must be in range 1..65535");
                continue;
            }
        };
        out.insert(port, mode);
    }
    Some(out)
}

/// How a `portLevelMtls` key reads.
#[derive(Debug, PartialEq, Eq)]
enum PortKey {
    /// Plain decimal digits, no leading zero: the only form the writer emits.
    Port(u32),
    /// Not an integer at all.
    NotInteger,
    /// An integer written with a sign or leading zeros (the number it would be in base 10).
    NotCanonical(String),
    /// Negative, or beyond `u32`.
    OutOfRange,
}

/// Reads a key as the API server would convert it, refusing the forms YAML parsers disagree on
/// (YAML integer keys arrive here already in canonical form: `0x1F92:` is `8082`).
fn parse_port_key(key: &str) -> PortKey {
    let (sign, digits) = match key.as_bytes().first() {
        Some(b'-' | b'+') => (true, key.get(1..).unwrap_or_default()),
        _ => (false, key),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return PortKey::NotInteger;
    }
    let trimmed = digits.trim_start_matches('0');
    let canonical = if trimmed.is_empty() { "0" } else { trimmed };
    if key.starts_with('-') && canonical != "0" {
        return PortKey::OutOfRange;
    }
    if sign || canonical != digits {
        return PortKey::NotCanonical(canonical.to_string());
    }
    match digits.parse::<u32>() {
        Ok(p) => PortKey::Port(p),
        Err(_) => PortKey::OutOfRange,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_decimal_port_keys_are_ports() {
        assert_eq!(parse_port_key("8080"), PortKey::Port(8080));
        assert_eq!(parse_port_key("0"), PortKey::Port(0));
        assert_eq!(parse_port_key("99999999999"), PortKey::OutOfRange);
        assert_eq!(parse_port_key("-80"), PortKey::OutOfRange);
        for (key, n) in [("08081", "8081"), ("010", "10"), ("+80", "80"), ("-0", "0")] {
            assert_eq!(
                parse_port_key(key),
                PortKey::NotCanonical(n.to_string()),
                "{key}"
            );
        }
        for key in ["0x1F92", "http", "", "80.0", "8 0"] {
            assert_eq!(parse_port_key(key), PortKey::NotInteger, "{key}");
        }
    }
}
