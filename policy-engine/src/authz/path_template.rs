//! `paths` values with `{*}` or `{**}` (Istio 1.22+, Envoy `uri_template`).
//!
//! `{*}` is exactly one path segment: one or more of `[a-zA-Z0-9-._~%!$&'()+,;:@=]`. `{**}` is
//! zero or more of those characters or `/`, so it may be empty and may span segments. Literal
//! characters match themselves and the whole path must match: `/allow/admin/{**}` matches
//! `/allow/admin/` but not `/allow/admin`; `/store/{**}/cart` matches `/store//cart` but not
//! `/store/cart`.

#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    Literal(Box<str>),
    /// `{*}`
    Segment,
    /// `{**}`
    Any,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PathTemplate {
    tokens: Vec<Token>,
}

/// Whether an Istio `paths` value is a template (Istio `security.ContainsPathTemplate`).
pub(crate) fn is_template(v: &str) -> bool {
    v.contains("{*}") || v.contains("{**}")
}

fn is_segment_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"-._~%!$&'()+,;:@=".contains(&c)
}

impl PathTemplate {
    pub(crate) fn parse(template: &str) -> PathTemplate {
        let mut tokens = Vec::new();
        let mut rest = template;
        while !rest.is_empty() {
            let next_many = rest.find("{**}");
            let next_one = rest.find("{*}");
            let (at, token, len) = match (next_one, next_many) {
                (Some(o), Some(m)) if m <= o => (m, Token::Any, 4),
                (Some(o), _) => (o, Token::Segment, 3),
                (None, Some(m)) => (m, Token::Any, 4),
                (None, None) => (rest.len(), Token::Literal(rest.into()), 0),
            };
            if let Some(lit) = rest.get(..at).filter(|l| !l.is_empty()) {
                tokens.push(Token::Literal(lit.into()));
            }
            if len == 0 {
                break;
            }
            tokens.push(token);
            rest = rest.get(at + len..).unwrap_or("");
        }
        PathTemplate { tokens }
    }

    pub(crate) fn matches(&self, path: &str) -> bool {
        match_tokens(&self.tokens, path.as_bytes())
    }
}

fn match_tokens(tokens: &[Token], path: &[u8]) -> bool {
    let Some((first, rest)) = tokens.split_first() else {
        return path.is_empty();
    };
    match first {
        Token::Literal(lit) => path
            .strip_prefix(lit.as_bytes())
            .is_some_and(|p| match_tokens(rest, p)),
        Token::Segment => {
            let run = path.iter().take_while(|&&c| is_segment_char(c)).count();
            (1..=run).any(|n| path.get(n..).is_some_and(|p| match_tokens(rest, p)))
        }
        Token::Any => {
            let run = path
                .iter()
                .take_while(|&&c| c == b'/' || is_segment_char(c))
                .count();
            (0..=run).any(|n| path.get(n..).is_some_and(|p| match_tokens(rest, p)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::PathTemplate;

    fn m(t: &str, p: &str) -> bool {
        PathTemplate::parse(t).matches(p)
    }

    #[test]
    fn istio_e2e_path_templating() {
        assert!(!m("/allow/admin/{**}", "/allow/admin"));
        assert!(m("/allow/admin/{**}", "/allow/admin/"));
        assert!(m("/allow/admin/{**}", "/allow/admin/foo/temp.txt"));
        assert!(m("/store/{**}/cart", "/store//cart"));
        assert!(!m("/store/{**}/cart", "/store/cart"));
        assert!(m("/store/{**}/cart", "/store/a/b/cart"));
        assert!(!m("/foo/{*}/bar/{**}", "/foo//bar/bat.txt"));
        assert!(m("/foo/{*}/bar/{**}", "/foo/buzz/bar/bat"));
        assert!(!m("/foo/{*}/bar", "/foo/a/b/bar"));
        assert!(m("/{**}/path/template", "/x/y/path/template"));
    }
}
