//! Checks of single values, with Istio's messages (`pkg/config/security/security.go`).

use std::net::IpAddr;

/// `CheckEmptyValues`: `empty value not allowed, found in Principals`.
pub(super) fn non_empty(field: &str, value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err(format!("empty value not allowed, found in {field}"));
    }
    Ok(())
}

/// `ValidateIPs` for one value: an IP address, or a CIDR range when it contains `/`.
pub(super) fn ip_or_cidr(value: &str) -> Result<(), String> {
    match value.split_once('/') {
        Some((addr, bits)) => {
            let parse_error = |why: String| {
                Err(format!(
                    "bad CIDR range ({value}): netip.ParsePrefix({value:?}): {why}"
                ))
            };
            let Ok(ip) = addr.parse::<IpAddr>() else {
                return parse_error(format!("ParseAddr({addr:?}): unable to parse IP"));
            };
            let max = if ip.is_ipv4() { 32 } else { 128 };
            if bits.is_empty() || !bits.bytes().all(|b| b.is_ascii_digit()) || bits.len() > 3 {
                return parse_error(format!("bad bits after slash: {bits:?}"));
            }
            match bits.parse::<u32>() {
                Ok(n) if n <= max => Ok(()),
                _ => parse_error("prefix length out of range".to_string()),
            }
        }
        None => match value.parse::<IpAddr>() {
            Ok(_) => Ok(()),
            Err(_) => Err(format!("bad IP address ({value})")),
        },
    }
}

/// `ValidatePorts` for one value: an unsigned integer up to 65535. The error text follows Go's
/// `strconv.ParseUint` (`<nil>` when the number parses but is too large).
pub(super) fn port(value: &str) -> Result<(), String> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "bad port ({value}): strconv.ParseUint: parsing {value:?}: invalid syntax"
        ));
    }
    match value.parse::<u32>() {
        Ok(p) if p <= 65535 => Ok(()),
        Ok(_) => Err(format!("bad port ({value}): <nil>")),
        Err(_) => Err(format!(
            "bad port ({value}): strconv.ParseUint: parsing {value:?}: value out of range"
        )),
    }
}

/// `CheckServiceAccount` for one value: `sa` or `namespace/sa`, no wildcard, at most 320
/// characters.
pub(super) fn service_account(field: &str, value: &str) -> Result<(), String> {
    non_empty(field, value)?;
    if value.contains('*') {
        return Err(format!("wildcard not allowed, found in {field}"));
    }
    let expected = "expected format 'serviceAccount' or 'namespace/serviceAccount'";
    if value.matches('/').count() > 1 {
        return Err(format!("{expected}, found {value:?} in {field}"));
    }
    if value.len() > 320 {
        return Err(format!(
            "value cannot exceed 320 characters, found {value:?} in {field}"
        ));
    }
    if let Some((ns, sa)) = value.split_once('/') {
        if ns.is_empty() {
            return Err(format!(
                "{expected}, found empty namespace {value:?} in {field}"
            ));
        }
        if sa.is_empty() {
            return Err(format!(
                "{expected}, found empty serviceAccount {value:?} in {field}"
            ));
        }
    }
    Ok(())
}

/// `trustDomains` values: at most one `*`, only at the start or the end, no `/`.
pub(super) fn trust_domain(field: &str, value: &str) -> Result<(), String> {
    non_empty(field, value)?;
    let stars = value.matches('*').count();
    if stars > 1 {
        return Err(format!(
            "at most one wildcard is allowed, found in {field}: {value:?}"
        ));
    }
    if stars == 1 && !value.starts_with('*') && !value.ends_with('*') {
        return Err(format!(
            "wildcard is only allowed at the start or end, found in {field}: {value:?}"
        ));
    }
    if value.contains('/') {
        return Err(format!(
            "trust domain must not contain '/', found in {field}: {value:?}"
        ));
    }
    Ok(())
}

/// `CheckValidPathTemplate` for one value of `paths`/`notPaths`: `{*}` and `{**}` are whole
/// segments, `{**}` is the last operator, no other braces, and in a template every literal
/// segment is made of RFC 3986 `pchar`s.
pub(super) fn path_template(field: &str, path: &str) -> Result<(), String> {
    let is_template = path.contains("{*}") || path.contains("{**}");
    let trimmed = path.trim_matches('/');
    let invalid = |why: String| {
        Err(format!(
            "invalid or unsupported path {trimmed}, found in {field}. {why}"
        ))
    };
    let mut found_match_any = false;
    for glob in trimmed.split('/') {
        match glob {
            "{*}" | "{**}" if found_match_any => {
                return invalid("{**} is not the last operator".to_string());
            }
            "{*}" => continue,
            "{**}" => {
                found_match_any = true;
                continue;
            }
            _ => {}
        }
        if glob.contains('{') || glob.contains('}') {
            return invalid("Contains '{' or '}' beyond a supported path template".to_string());
        }
        if is_template && !is_valid_literal(glob) {
            return invalid(format!(
                "Contains segment {glob} with invalid string literal"
            ));
        }
    }
    Ok(())
}

/// `^[a-zA-Z0-9-._~%!$&'()+,;:@=]+$`.
fn is_valid_literal(glob: &str) -> bool {
    !glob.is_empty()
        && glob
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._~%!$&'()+,;:@=".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ips_and_cidrs() {
        for ok in ["1.2.3.4", "10.0.0.0/8", "::1", "2001:db8::/32", "0.0.0.0/0"] {
            assert_eq!(ip_or_cidr(ok), Ok(()), "{ok}");
        }
        assert_eq!(
            ip_or_cidr("1.2.3"),
            Err("bad IP address (1.2.3)".to_string())
        );
        assert!(ip_or_cidr("1.2.3.4/33")
            .is_err_and(|e| e.starts_with("bad CIDR range (1.2.3.4/33): ")
                && e.ends_with("prefix length out of range")));
        assert!(ip_or_cidr("::/129").is_err());
        assert!(ip_or_cidr("1.2.3.4/x").is_err_and(|e| e.contains("bad bits after slash")));
        assert!(ip_or_cidr("foo/8").is_err_and(|e| e.contains("unable to parse IP")));
    }

    #[test]
    fn ports() {
        assert_eq!(port("80"), Ok(()));
        assert_eq!(port("65535"), Ok(()));
        assert_eq!(port("65536"), Err("bad port (65536): <nil>".to_string()));
        assert!(port("http").is_err_and(|e| e.contains("invalid syntax")));
        assert!(port("-1").is_err_and(|e| e.contains("invalid syntax")));
        assert!(port("+80").is_err());
        assert!(port("99999999999").is_err_and(|e| e.contains("value out of range")));
    }

    #[test]
    fn service_accounts() {
        let f = "ServiceAccounts";
        assert_eq!(service_account(f, "sa"), Ok(()));
        assert_eq!(service_account(f, "ns/sa"), Ok(()));
        assert!(service_account(f, "ns/*").is_err_and(|e| e.contains("wildcard not allowed")));
        assert!(service_account(f, "a/b/c").is_err_and(|e| e.contains("found \"a/b/c\"")));
        assert!(service_account(f, "/sa").is_err_and(|e| e.contains("empty namespace")));
        assert!(service_account(f, "ns/").is_err_and(|e| e.contains("empty serviceAccount")));
        assert!(service_account(f, &"x".repeat(321)).is_err_and(|e| e.contains("320")));
    }

    #[test]
    fn trust_domains() {
        let f = "TrustDomains";
        for ok in ["cluster.local", "*", "*.local", "cluster-*"] {
            assert_eq!(trust_domain(f, ok), Ok(()), "{ok}");
        }
        assert!(trust_domain(f, "*a*").is_err_and(|e| e.contains("at most one wildcard")));
        assert!(trust_domain(f, "a*b").is_err_and(|e| e.contains("start or end")));
        assert!(trust_domain(f, "a/b").is_err_and(|e| e.contains("must not contain '/'")));
    }

    #[test]
    fn path_templates() {
        let f = "Paths";
        for ok in [
            "/exact",
            "/prefix/*",
            "*",
            "/a/{*}/b",
            "/{**}/path/template",
            "/allow/admin/{**}",
            "/a/*/b{",
        ] {
            // The last one is not a template: a brace is still rejected.
            if ok.ends_with('{') {
                assert!(path_template(f, ok).is_err());
            } else {
                assert_eq!(path_template(f, ok), Ok(()), "{ok}");
            }
        }
        assert_eq!(
            path_template(f, "/{**}/a/{*}"),
            Err("invalid or unsupported path {**}/a/{*}, found in Paths. {**} is not the last operator".to_string())
        );
        assert!(path_template(f, "/{foo}/a")
            .is_err_and(|e| e.contains("Contains '{' or '}' beyond a supported path template")));
        assert!(path_template(f, "/a b/{*}")
            .is_err_and(|e| e.contains("Contains segment a b with invalid string literal")));
        assert!(path_template(f, "/a/*/{*}").is_err_and(|e| e.contains("segment *")));
    }
}
