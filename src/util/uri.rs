//! Percent-coding, and the path and query of a request's URL. The runtime hands over a URL it has already
//! parsed and serialised (WHATWG), so reading them needs no URL parser: `worker`'s
//! `Request::path`/`url` go through the `url` crate, whose parser and IDNA tables are
//! about 40 KB of the wasm.

/// The path, still percent-encoded, as `url::Url::path` gives it.
pub fn path(url: &str) -> &str {
    let after_scheme = url.find("://").map_or(url, |i| &url[i + 3..]);
    let rest = after_scheme.find(['/', '?', '#']).map_or("", |i| &after_scheme[i..]);
    let path = &rest[..rest.find(['?', '#']).unwrap_or(rest.len())];
    if path.is_empty() {
        "/"
    } else {
        path
    }
}

/// The query's `application/x-www-form-urlencoded` pairs, decoded, as
/// `url::Url::query_pairs` gives them.
pub fn query_pairs(url: &str) -> Vec<(String, String)> {
    let url = &url[..url.find('#').unwrap_or(url.len())];
    let Some(query) = url.find('?').map(|i| &url[i + 1..]) else {
        return Vec::new();
    };
    let decode = |s: &str| String::from_utf8_lossy(&percent_decode(s.replace('+', " ").as_bytes())).into_owned();
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k), decode(v))
        })
        .collect()
}

/// Decodes `%XX` escapes; a `%` not followed by two hex digits stays a literal `%`.
pub fn percent_decode(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = match bytes.get(i + 1..i + 3) {
            Some(&[hi, lo]) if bytes[i] == b'%' => hex_value(hi).zip(hex_value(lo)).map(|(hi, lo)| (hi << 4) | lo),
            _ => None,
        };
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    out
}

fn hex_value(digit: u8) -> Option<u8> {
    char::from(digit).to_digit(16).map(|v| v as u8)
}

/// AWS's URI encoding: RFC 3986 unreserved characters as they are, every other byte as
/// `%XX` with uppercase hex.
pub fn uri_encode(out: &mut String, bytes: &[u8], keep_slash: bool) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in bytes {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') || (keep_slash && b == b'/') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 15)]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_of_a_served_url() {
        assert_eq!(path("https://gw.example/v1/chat/completions"), "/v1/chat/completions");
        assert_eq!(path("http://127.0.0.1:8787/admin/costs?from=2026-01-01#x"), "/admin/costs");
        assert_eq!(path("https://gw.example"), "/");
        assert_eq!(path("https://gw.example?a=1"), "/");
        assert_eq!(path("https://gw.example/a%20b/"), "/a%20b/");
    }

    #[test]
    fn query_pairs_decode_like_form_urlencoded() {
        let pairs =
            query_pairs("https://gw.example/admin/costs?group_by=team,model&team=a+b&x=%41%2&flag&&k=v=w#frag=1");
        let expect = [("group_by", "team,model"), ("team", "a b"), ("x", "A%2"), ("flag", ""), ("k", "v=w")];
        assert_eq!(pairs, expect.map(|(k, v)| (k.to_string(), v.to_string())));
        assert!(query_pairs("https://gw.example/admin/keys").is_empty());
        assert_eq!(query_pairs("https://gw.example/?n=%C3%A9%FF"), [("n".to_string(), "é\u{FFFD}".to_string())]);
    }
}
