//! The two paths a check can see.
//!
//! **The forwarded path** ([`url_path`]): `:path` as the module receives it, after whatever the
//! listener's HTTP connection manager did (Istio's default `BASE`: RFC 3986 dot segments, decoding
//! of unreserved `%XX`, `\` to `/`; slashes are merged only with `MERGE_SLASHES`), without query
//! or fragment (Envoy `url_path`). It is the path the application receives, and the one Istio's
//! RBAC matches: ALLOW rules match it, exactly as in Istio.
//!
//! **The normalized path** ([`normalize`]): the forwarded path normalized again as `BASE` does,
//! plus merged slashes. The listener may not normalize at all (`NONE`) and does not merge slashes
//! by default, while applications often do both. DENY and AUDIT path conditions match when either
//! path matches, so `%2e%2e`, `/./`, `//` or `\` cannot move a request past a DENY; this can only
//! tighten, never widen, what Istio would decide.

use std::borrow::Cow;

/// The forwarded path: `raw` without its query string or fragment (Envoy `url_path`).
pub fn url_path(raw: &str) -> &str {
    // A byte scan (both are ASCII, so the cut is a character boundary): once per request.
    match raw.bytes().position(|b| b == b'?' || b == b'#') {
        Some(end) => raw.get(..end).unwrap_or(raw),
        None => raw,
    }
}

/// The normalized path: [`url_path`], then `BASE` normalization and merged slashes. Borrowed
/// when nothing changes.
pub fn normalize(raw: &str) -> Cow<'_, str> {
    normalize_url_path(url_path(raw))
}

/// [`normalize`] of a path already cut by [`url_path`] (not scanned again).
pub(crate) fn normalize_url_path(path: &str) -> Cow<'_, str> {
    normalize_path(path, true)
}

/// What the listener's HTTP connection manager does to `:path` before any filter sees it, named as
/// Istio's `meshConfig.pathNormalization.normalization`. The engine never applies this (the module
/// receives its result); tests use it to play a listener.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ListenerNormalization {
    /// `normalize_path: false`: the path is forwarded as the client sent it.
    #[default]
    None,
    /// Istio's default, `normalize_path: true`: dot segments, unreserved `%XX`, `\` to `/`.
    Base,
    /// `BASE` plus `merge_slashes: true`.
    MergeSlashes,
}

impl ListenerNormalization {
    /// The `:path` the listener forwards for `raw` (the query string is kept).
    pub fn apply(self, raw: &str) -> Cow<'_, str> {
        let merge_slashes = match self {
            ListenerNormalization::None => return Cow::Borrowed(raw),
            ListenerNormalization::Base => false,
            ListenerNormalization::MergeSlashes => true,
        };
        let path = url_path(raw);
        match normalize_path(path, merge_slashes) {
            Cow::Borrowed(_) => Cow::Borrowed(raw),
            Cow::Owned(p) => Cow::Owned(format!("{p}{}", raw.get(path.len()..).unwrap_or(""))),
        }
    }
}

fn normalize_path(path: &str, merge_slashes: bool) -> Cow<'_, str> {
    if !needs_work(path) {
        return Cow::Borrowed(path);
    }
    let decoded = decode_unreserved(path);
    let slashed = decoded.replace('\\', "/");
    Cow::Owned(remove_dot_segments(&slashed, merge_slashes))
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

/// RFC 3986 section 5.2.4 on an absolute path; with `merge_slashes`, empty segments are removed.
fn remove_dot_segments(path: &str, merge_slashes: bool) -> String {
    let mut segments: Vec<&str> = Vec::new();
    let mut parts = path.split('/');
    // An absolute path starts with `/`: its first part is empty.
    if path.starts_with('/') {
        parts.next();
    }
    // The path ends in a directory: after `.`, `..` or (merged) an empty last segment.
    let mut trailing = false;
    for seg in parts {
        trailing = true;
        match seg {
            "." => {}
            ".." => {
                segments.pop();
            }
            "" if merge_slashes => {}
            s => {
                segments.push(s);
                trailing = false;
            }
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
    use super::{normalize, url_path};

    #[test]
    fn url_path_stops_at_the_first_query_or_fragment() {
        for (raw, want) in [
            ("/a/b", "/a/b"),
            ("/a?x=1#f", "/a"),
            ("/a#f?x", "/a"),
            ("?x", ""),
            ("/é?q", "/é"),
            ("", ""),
        ] {
            assert_eq!(url_path(raw), want, "{raw}");
        }
    }

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

    #[test]
    fn listener_settings() {
        use super::ListenerNormalization::{Base, MergeSlashes, None};
        for (raw, none, base, merged) in [
            (
                "/store//cart",
                "/store//cart",
                "/store//cart",
                "/store/cart",
            ),
            (
                "/a/%2e%2e/b?x=/..",
                "/a/%2e%2e/b?x=/..",
                "/b?x=/..",
                "/b?x=/..",
            ),
            ("//admin/./x/", "//admin/./x/", "//admin/x/", "/admin/x/"),
            ("/a//../b", "/a//../b", "/a/b", "/b"),
            ("/a\\b", "/a\\b", "/a/b", "/a/b"),
            ("/%2561dmin", "/%2561dmin", "/%2561dmin", "/%2561dmin"),
            ("/", "/", "/", "/"),
        ] {
            assert_eq!(None.apply(raw), none, "NONE {raw}");
            assert_eq!(Base.apply(raw), base, "BASE {raw}");
            assert_eq!(MergeSlashes.apply(raw), merged, "MERGE_SLASHES {raw}");
        }
    }
}
