//! Decoding `PeerAuthentication.spec`: `selector`, `mtls: {mode}`, `portLevelMtls` (keys are
//! ports, written as strings or, in YAML, as integers). Rules are checked in `validate/`.

use std::collections::BTreeMap;

use serde_json::Value;

use super::authorization_policy::decode_selector;
use super::decode::Decoder;
use super::field_path::FieldPath;
use crate::model::{MtlsMode, PeerAuthenticationSpec, ReportOnly};

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

/// Reads the value of `meshauthz.io/strict-report-only` (the one parser: validation, the engine
/// and the module call it). `Ok(None)`: `"false"`. The error says what was expected.
pub(crate) fn parse_strict_report_only(value: &str) -> Result<Option<ReportOnly>, String> {
    const EXPECTED: &str = "expected \"true\" (every STRICT this PeerAuthentication sets is report-only), \"false\", or a comma-separated list of port numbers such as \"8080,9000\" (only those ports' STRICT)";
    match value {
        "true" => return Ok(Some(ReportOnly::All)),
        "false" => return Ok(None),
        _ => {}
    }
    let mut ports = std::collections::BTreeSet::new();
    for item in value.split(',') {
        let item = item.trim_matches(' ');
        let port = match parse_port_key(item) {
            PortKey::Port(p) => u16::try_from(p).ok().filter(|p| *p != 0),
            _ => None,
        };
        let Some(port) = port else {
            let what = if item.is_empty() {
                "an empty item".to_string()
            } else {
                format!("{item:?}, which is not a port number (1..65535, plain decimal)")
            };
            return Err(format!("invalid value {value:?}: found {what}; {EXPECTED}"));
        };
        if !ports.insert(port) {
            return Err(format!(
                "invalid value {value:?}: port {port} is listed twice; {EXPECTED}"
            ));
        }
    }
    Ok(Some(ReportOnly::Ports(ports)))
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
    fn strict_report_only_values() {
        assert_eq!(parse_strict_report_only("true"), Ok(Some(ReportOnly::All)));
        assert_eq!(parse_strict_report_only("false"), Ok(None));
        assert_eq!(
            parse_strict_report_only("8080"),
            Ok(Some(ReportOnly::Ports([8080].into())))
        );
        assert_eq!(
            parse_strict_report_only("8080,9000"),
            Ok(Some(ReportOnly::Ports([8080, 9000].into())))
        );
        assert_eq!(
            parse_strict_report_only("9000, 8080"),
            Ok(Some(ReportOnly::Ports([8080, 9000].into())))
        );
        for (bad, found) in [
            ("yes", "\"yes\", which is not a port"),
            ("True", "\"True\", which is not a port"),
            ("1", ""),
            ("", "an empty item"),
            ("8080,", "an empty item"),
            ("8080,,9000", "an empty item"),
            ("0", "\"0\", which is not a port"),
            ("65536", "\"65536\", which is not a port"),
            ("08080", "\"08080\", which is not a port"),
            ("+80", "\"+80\", which is not a port"),
            ("80;90", "\"80;90\", which is not a port"),
            ("8080,8080", "port 8080 is listed twice"),
        ] {
            match parse_strict_report_only(bad) {
                // "1" is a port: a list of one.
                Ok(Some(ReportOnly::Ports(p))) if bad == "1" => assert_eq!(p, [1].into()),
                Err(e) => {
                    assert!(e.contains(found), "{bad}: {e}");
                    assert!(e.contains("comma-separated list of port numbers"), "{e}");
                }
                other => panic!("{bad:?} was accepted: {other:?}"),
            }
        }
    }

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
