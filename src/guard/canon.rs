//! canon: the one canonical form of a request target, computed before any route is
//! matched (DESIGN §10.1). Every guard decides on the canonical path, and the app is
//! sent exactly that path, so sitegate and the app cannot read one request two ways.
//!
//! What it does, in order (Envoy's `normalize_path` + `merge_slashes` +
//! `path_with_escaped_slashes_action = REJECT_REQUEST`, and then some):
//!
//! 1. Only origin-form targets are served (`/path?query`). Absolute-form
//!    (`http://host/path`) is taken when its authority is the request's own `Host`
//!    (then it means exactly the origin-form request); asterisk-form (`*`) and
//!    authority-form (`CONNECT host:port`) are refused.
//! 2. Every percent-encoding is decoded (RFC 3986 §6.2.2.2 for the unreserved ones,
//!    and the rest too, since the app's framework decodes them all before routing).
//!    Refused, because no single decoded form keeps their meaning: an encoded `/` or
//!    `\` (`%2F`, `%5C`), any control character (`%00`–`%1F`, `%7F`), a raw `\`, a `%`
//!    not followed by two hex digits, and bytes that are not UTF-8 once decoded.
//! 3. Dot segments are removed (RFC 3986 §5.2.4) and repeated slashes merged; a `..`
//!    that would climb above the root is refused rather than clamped, since no client
//!    that means well sends one.
//! 4. The decoded path is what routes match and model-lock parameters read. The app is
//!    sent its canonical encoding: unreserved characters, `/` and `! $ & ' ( ) * , = :
//!    @` as they are, every other byte as `%XX` with upper-case hex. `;` and `+` are
//!    among the encoded ones: some frameworks strip `;` parameters or read `+` as a
//!    space, and encoded they mean themselves to every framework.
//!
//! The query string is passed on as sent (no route matches on it); model-lock values
//! read from it are decoded the way the app's framework decodes them.

use std::borrow::Cow;

use http::Method;
use http::header::HeaderMap;

use crate::error::{ErrorCode, Rejection};

/// A request target in canonical form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Canonical<'a> {
    /// The decoded path: what routes match and guards read.
    pub path: Cow<'a, str>,
    /// The path as sent to the app (`path` in its canonical encoding).
    pub encoded: Cow<'a, str>,
}

impl Canonical<'_> {
    /// True when the client sent the canonical form already (nothing to rewrite).
    pub fn unchanged(&self, sent: &str) -> bool {
        self.encoded == sent
    }
}

fn invalid_path(message: &str) -> Rejection {
    Rejection::new(ErrorCode::InvalidPath, message)
}

/// True for the bytes sent to the app as they are.
fn plain(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.'
                | b'_'
                | b'~'
                | b'/'
                | b'!'
                | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b','
                | b'='
                | b':'
                | b'@'
        )
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// True when `path` needs no work: only plain bytes, no empty or dot segment. One
/// pass over the bytes: every request's path goes through here.
fn already_canonical(path: &str) -> bool {
    let b = path.as_bytes();
    if b.first() != Some(&b'/') {
        return false;
    }
    // Segments after the leading slash: none empty (but the last), none `.` or `..`.
    let mut start = 1;
    for i in 1..=b.len() {
        let end = i == b.len();
        if !end {
            if !plain(b[i]) {
                return false;
            }
            if b[i] != b'/' {
                continue;
            }
        }
        let segment = &b[start..i];
        if (segment.is_empty() && !end) || segment == b"." || segment == b".." {
            return false;
        }
        start = i + 1;
    }
    true
}

/// Puts an origin-form path in canonical form, or refuses it.
pub fn path(raw: &str) -> Result<Canonical<'_>, Rejection> {
    if already_canonical(raw) {
        return Ok(Canonical {
            path: Cow::Borrowed(raw),
            encoded: Cow::Borrowed(raw),
        });
    }
    normalize(raw)
}

/// The full decoding and normalizing of `path`, for a path that may need it.
fn normalize(raw: &str) -> Result<Canonical<'_>, Rejection> {
    if !raw.starts_with('/') {
        return Err(invalid_path("the request path must start with /"));
    }
    // Decode every escape; refuse what has no single decoded meaning.
    let bytes = raw.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let byte = if b == b'%' {
            let pair = bytes
                .get(i + 1)
                .and_then(|&h| hex(h))
                .zip(bytes.get(i + 2).and_then(|&l| hex(l)));
            let Some((h, l)) = pair else {
                return Err(invalid_path(
                    "the request path has a % that is not followed by two hex digits",
                ));
            };
            i += 3;
            let c = h << 4 | l;
            if c == b'/' || c == b'\\' {
                return Err(invalid_path(
                    "the request path has an encoded / or \\ (%2F, %5C); send the path without it",
                ));
            }
            c
        } else {
            i += 1;
            if b == b'\\' {
                return Err(invalid_path(
                    "the request path has a \\; paths are separated by / only",
                ));
            }
            b
        };
        if byte < 0x20 || byte == 0x7f {
            return Err(invalid_path(
                "the request path has a control character (such as %00)",
            ));
        }
        decoded.push(byte);
    }
    let Ok(decoded) = String::from_utf8(decoded) else {
        return Err(invalid_path("the request path is not UTF-8 once decoded"));
    };
    // Dot segments and empty segments, over the decoded text (so `%2e%2e` is `..`).
    let trailing = decoded.ends_with('/')
        || decoded.ends_with("/.")
        || decoded.ends_with("/..")
        || decoded == "/";
    let mut out: Vec<&str> = Vec::new();
    for segment in decoded.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                if out.pop().is_none() {
                    return Err(invalid_path(
                        "the request path climbs above the root with ..",
                    ));
                }
            }
            s => out.push(s),
        }
    }
    let mut path = String::with_capacity(decoded.len() + 1);
    for s in &out {
        path.push('/');
        path.push_str(s);
    }
    if trailing || path.is_empty() {
        path.push('/');
    }
    let encoded = encode(&path);
    Ok(Canonical {
        path: Cow::Owned(path),
        encoded: Cow::Owned(encoded),
    })
}

/// The canonical encoding of a decoded path.
fn encode(path: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(path.len());
    for &b in path.as_bytes() {
        if plain(b) {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX[(b >> 4) as usize] as char);
            out.push(HEX[(b & 0xf) as usize] as char);
        }
    }
    out
}

/// Refuses a method the app could read differently from sitegate. Methods are
/// case-sensitive (RFC 9110 §9.1), but the app's framework upper-cases them: `post`
/// would be matched by sitegate as an unknown method and served by the app as POST.
/// sitegate does not guess what a lower-case method means; it refuses it.
pub fn method(method: &Method) -> Result<(), Rejection> {
    if method.as_str().bytes().any(|b| b.is_ascii_lowercase()) {
        return Err(Rejection::new(
            ErrorCode::InvalidRequest,
            "HTTP methods are upper-case (send POST, not post)",
        ));
    }
    if method == Method::CONNECT {
        return Err(Rejection::new(
            ErrorCode::InvalidRequest,
            "CONNECT is not served: sitegate is a reverse proxy",
        ));
    }
    Ok(())
}

/// Checks the request target's form and returns the origin-form part of it (path and
/// query). `http2` says whether the request came over HTTP/2, where the URI always
/// carries the `:authority` and `:scheme` pseudo-headers.
pub fn target<'a>(
    uri: &'a http::Uri,
    headers: &HeaderMap,
    http2: bool,
) -> Result<&'a str, Rejection> {
    let invalid = |m: &str| Rejection::new(ErrorCode::InvalidRequest, m);
    let path = uri.path();
    if path == "*" {
        return Err(invalid("asterisk-form request targets (*) are not served"));
    }
    if let Some(authority) = uri.authority() {
        if !matches!(uri.scheme_str(), Some("http") | Some("https")) {
            return Err(invalid("the request target's scheme must be http"));
        }
        // The target's authority and the Host header must name the same host: the app
        // reads Host, and sitegate forwards origin-form.
        let host = headers.get(http::header::HOST);
        let agrees = host.is_none_or(|h| {
            h.as_bytes()
                .eq_ignore_ascii_case(authority.as_str().as_bytes())
        });
        if !agrees {
            return Err(invalid(if http2 {
                "the :authority and Host of the request differ"
            } else {
                "an absolute-form request target must name the same host as the Host header"
            }));
        }
        if authority.as_str().contains('@') {
            return Err(invalid("the request target may not carry credentials"));
        }
    } else if !path.starts_with('/') {
        return Err(invalid("the request target must be a path starting with /"));
    }
    Ok(uri.path_and_query().map_or(path, |pq| pq.as_str()))
}

/// The first value of `name` in a query string, decoded as the app's framework decodes
/// it (`application/x-www-form-urlencoded`: `+` is a space, then percent-decoding,
/// keys compared decoded). More than one value for `name` is refused: which one the
/// app reads is up to its code, not to sitegate.
pub fn query_value(query: &str, name: &str) -> Result<Option<String>, Rejection> {
    let mut found = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if form_decode(k).as_deref() != Some(name) {
            continue;
        }
        if found.is_some() {
            return Err(Rejection::new(
                ErrorCode::InvalidRequest,
                format!("the query parameter `{name}` is given more than once"),
            ));
        }
        found = Some(form_decode(v).ok_or_else(|| {
            Rejection::new(
                ErrorCode::InvalidRequest,
                format!("the query parameter `{name}` is not valid percent-encoded UTF-8"),
            )
        })?);
    }
    Ok(found)
}

/// `application/x-www-form-urlencoded` decoding; `None` for invalid escapes or UTF-8.
fn form_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' => {
                let h = hex(*b.get(i + 1)?)?;
                let l = hex(*b.get(i + 2)?)?;
                out.push(h << 4 | l);
                i += 3;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(p: &str) -> (String, String) {
        let c = path(p).unwrap_or_else(|e| panic!("{p}: {}", e.message));
        (c.path.into_owned(), c.encoded.into_owned())
    }

    fn refused(p: &str) -> String {
        path(p).expect_err(p).message
    }

    #[test]
    fn canonical_paths_are_kept_as_they_are() {
        for p in [
            "/",
            "/health",
            "/models/delay-predictor/2.1.0/predict",
            "/a/b/",
            "/x:y@z/!$&'()*,=",
        ] {
            let c = path(p).unwrap();
            assert!(matches!(c.path, Cow::Borrowed(_)), "{p}");
            assert!(c.unchanged(p));
        }
    }

    #[test]
    fn escapes_are_decoded_and_the_rest_encoded_canonically() {
        assert_eq!(
            canon("/%6dodels/risk-classifier/0.9.0/%70redict").0,
            "/models/risk-classifier/0.9.0/predict"
        );
        assert_eq!(
            canon("/models/delay-predictor/%72etrain").1,
            "/models/delay-predictor/retrain"
        );
        // Reserved and other characters: decoded for matching, sent encoded.
        assert_eq!(
            canon("/a;b+c%3bd%2Be f"),
            ("/a;b+c;d+e f".into(), "/a%3Bb%2Bc%3Bd%2Be%20f".into())
        );
        assert_eq!(canon("/caf%C3%A9"), ("/café".into(), "/caf%C3%A9".into()));
        assert_eq!(canon("/100%25"), ("/100%".into(), "/100%25".into()));
        assert_eq!(canon("/%7e%7E").0, "/~~");
    }

    #[test]
    fn dot_segments_and_repeated_slashes_go() {
        assert_eq!(canon("//models//x/").0, "/models/x/");
        assert_eq!(canon("/a/./b/../c").0, "/a/c");
        assert_eq!(canon("/a/%2e%2E/b").0, "/b");
        assert_eq!(canon("/a/b/..").0, "/a/");
        assert_eq!(canon("/a/.").0, "/a/");
        assert_eq!(canon("/a/..").0, "/");
        assert_eq!(canon("/.").0, "/");
        // A segment that only contains dots is not a dot segment.
        assert_eq!(canon("/.../a").0, "/.../a");
    }

    #[test]
    fn ambiguous_paths_are_refused() {
        for p in [
            "/a%2Fb",
            "/a%2fb",
            "/a%5Cb",
            "/a\\b",
            "/a%00",
            "/a%0a",
            "/a%7F",
            "/a%",
            "/a%4",
            "/a%zz",
            "/%C3",
            "/%FF",
            "/..",
            "/a/../..",
            "/%2e%2e/x",
            "relative",
        ] {
            let e = path(p).expect_err(p);
            assert_eq!(e.code, ErrorCode::InvalidPath, "{p}");
        }
        assert!(refused("/a%2Fb").contains("%2F"));
        assert!(refused("/../etc").contains(".."));
    }

    #[test]
    fn the_canonical_form_is_a_fixed_point() {
        // Whatever the input, canonicalizing the sent form again changes nothing: the
        // app, decoding it once, reads what sitegate matched.
        let mut rng = fastrand::Rng::with_seed(7);
        let alphabet = b"/.%2eEfF0aA;+~ -_:@!x";
        for _ in 0..20_000 {
            let len = rng.usize(1..16);
            let mut s = String::from("/");
            for _ in 0..len {
                s.push(alphabet[rng.usize(..alphabet.len())] as char);
            }
            if let Ok(c) = path(&s) {
                let again = path(&c.encoded).unwrap();
                assert_eq!(again.path, c.path, "{s}");
                assert_eq!(again.encoded, c.encoded, "{s}");
            }
        }
    }

    #[test]
    fn the_quick_check_passes_only_what_normalizing_leaves_as_it_is() {
        let mut rng = fastrand::Rng::with_seed(11);
        let alphabet = b"//..a~-%2e";
        let mut passed = 0;
        for _ in 0..50_000 {
            let len = rng.usize(0..10);
            let mut s = String::from("/");
            for _ in 0..len {
                s.push(alphabet[rng.usize(..alphabet.len())] as char);
            }
            if already_canonical(&s) {
                passed += 1;
                let slow = normalize(&s).unwrap();
                assert_eq!((&*slow.path, &*slow.encoded), (&*s, &*s), "{s}");
            }
        }
        assert!(passed > 1000, "{passed}");
    }

    #[test]
    fn methods_must_be_upper_case() {
        assert!(method(&Method::POST).is_ok());
        assert!(method(&Method::from_bytes(b"PROPFIND").unwrap()).is_ok());
        for m in ["post", "Post", "gEt"] {
            let e = method(&Method::from_bytes(m.as_bytes()).unwrap()).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidRequest);
        }
        assert!(method(&Method::CONNECT).is_err());
    }

    #[test]
    fn targets_other_than_origin_form_need_the_own_host() {
        let host = |h: &'static str| {
            let mut m = HeaderMap::new();
            m.insert(http::header::HOST, http::HeaderValue::from_static(h));
            m
        };
        let uri: http::Uri = "http://sg.local:8080/a?b=1".parse().unwrap();
        assert_eq!(
            target(&uri, &host("sg.local:8080"), false).unwrap(),
            "/a?b=1"
        );
        assert!(target(&uri, &host("other"), false).is_err());
        assert!(target(&uri, &HeaderMap::new(), true).is_ok());
        let star: http::Uri = "*".parse().unwrap();
        assert!(target(&star, &HeaderMap::new(), false).is_err());
    }

    #[test]
    fn query_values_are_read_as_the_app_reads_them() {
        assert_eq!(
            query_value("a=1&ver%73ion=2%2E1+x", "version").unwrap(),
            Some("2.1 x".into())
        );
        assert_eq!(query_value("a=1", "version").unwrap(), None);
        assert!(query_value("version=1&version=2", "version").is_err());
        assert!(query_value("version=%ff", "version").is_err());
    }
}
