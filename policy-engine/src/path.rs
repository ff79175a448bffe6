//! Path normalization before matching.
//!
//! Istio relies on the HTTP connection manager to normalize `:path` (its default `BASE`:
//! RFC 3986 dot segments, decoding of unreserved `%XX`, `\` to `/`). meshauthz does not trust the
//! listener to be configured that way: it normalizes again, and also merges repeated slashes, so
//! that `%2e%2e`, `/./`, `//` or `\` cannot move a request past a DENY on the path the application
//! will serve. The query string and fragment are removed first (Envoy `url_path`).

use std::borrow::Cow;

/// The path to match: no query or fragment, normalized.
pub fn normalize(raw: &str) -> Cow<'_, str> {
    let path = raw.split(['?', '#']).next().unwrap_or(raw);
    if !needs_work(path) {
        return Cow::Borrowed(path);
    }
    let decoded = decode_unreserved(path);
    let slashed = decoded.replace('\\', "/");
    Cow::Owned(remove_dot_segments_and_merge_slashes(&slashed))
}

fn needs_work(path: &str) -> bool {
    let b = path.as_bytes();
    if b.contains(&b'%') || b.contains(&b'\\') {
        return true;
    }
    // `//`, `/.` (dot segments) anywhere.
    b.windows(2).any(|w| w == b"//" || w == b"/.")
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decodes `%XX` of unreserved characters (ALPHA, DIGIT, `-._~`), as Envoy's `normalize_path`
/// does; other escapes stay encoded, with upper-case hex digits.
fn decode_unreserved(path: &str) -> String {
    let b = path.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        if c == b'%' {
            if let (Some(h), Some(l)) = (
                b.get(i + 1).copied().and_then(hex),
                b.get(i + 2).copied().and_then(hex),
            ) {
                let v = h * 16 + l;
                if v.is_ascii_alphanumeric() || matches!(v, b'-' | b'.' | b'_' | b'~') {
                    out.push(v);
                } else {
                    out.push(b'%');
                    out.extend(format!("{v:02X}").bytes());
                }
                i += 3;
                continue;
            }
        }
        out.push(c);
        i += 1;
    }
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// RFC 3986 section 5.2.4 on an absolute path, with empty segments removed (merged slashes).
fn remove_dot_segments_and_merge_slashes(path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    let trailing = path.ends_with('/') || path.ends_with("/.") || path.ends_with("/..");
    for seg in path.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut out = String::with_capacity(path.len());
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if trailing || out.is_empty() {
        out.push('/');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::normalize;

    #[test]
    fn normalizes_like_envoy_base_plus_merge_slashes() {
        for (raw, want) in [
            ("/allow?param=value", "/allow"),
            ("/a/b#frag", "/a/b"),
            ("/public/%2e%2e/private", "/private"),
            ("/public/%2E%2E/private", "/private"),
            ("/public/../private", "/private"),
            ("/./admin", "/admin"),
            ("//admin", "/admin"),
            ("/admin//x/", "/admin/x/"),
            ("/a\\..\\admin", "/admin"),
            ("/%61dmin", "/admin"),
            ("/a%2fb", "/a%2Fb"),
            ("/", "/"),
            ("/..", "/"),
            ("/a/..", "/"),
            ("/plain/path", "/plain/path"),
        ] {
            assert_eq!(normalize(raw), want, "{raw}");
        }
    }
}
