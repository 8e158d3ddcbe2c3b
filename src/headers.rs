//! The headers sitegate reads and writes on the wire (DESIGN §4): their names, the
//! request-id rule, and hop-by-hop stripping. Pure: headers in, headers out.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// The request id, kept from the client or generated.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// Set on a fallback response: the failure reason.
pub const FALLBACK: HeaderName = HeaderName::from_static("x-sitegate-fallback");
/// Records dropped from a batch, to the app and back to the client.
pub const DROPPED: HeaderName = HeaderName::from_static("x-sitegate-dropped");
/// Client address chain sent upstream.
pub const FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// Scheme the client used.
pub const FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// Host the client asked for.
pub const FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Returns the client's request id when it is 1–128 characters of `[A-Za-z0-9._-]`.
pub fn valid_request_id(value: &HeaderValue) -> Option<&str> {
    let bytes = value.as_bytes();
    let ok = !bytes.is_empty()
        && bytes.len() <= 128
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    // All bytes are ASCII when `ok`, so to_str cannot fail.
    if ok { value.to_str().ok() } else { None }
}

/// A new request id: `req_` and 12 lowercase hex digits (48 random bits).
pub fn new_request_id(random: u64) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(16);
    out.push_str("req_");
    for i in (0..12).rev() {
        out.push(HEX[((random >> (i * 4)) & 0xf) as usize] as char);
    }
    out
}

/// The headers that describe one connection, not the message: never forwarded.
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    HeaderName::from_static("proxy-connection"),
];

/// Removes hop-by-hop headers: the fixed list, every `Proxy-*` header, and every header
/// that `Connection` names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the names present (a handful), instead of one hash lookup per
    // name that could be: this runs twice on every request, and a message almost never
    // carries any of them. The Vec allocates only when there is something to remove.
    let mut doomed: Vec<HeaderName> = Vec::new();
    for name in headers.keys() {
        if HOP_BY_HOP.contains(name) || name.as_str().starts_with("proxy-") {
            doomed.push(name.clone());
        }
    }
    if doomed.is_empty() {
        return;
    }
    // Names listed in Connection are collected first: removing Connection loses them.
    doomed.extend(
        headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok()),
    );
    for name in doomed {
        headers.remove(name);
    }
}

/// Removes every `X-Sitegate-*` header: on a request, only sitegate may set them.
pub fn strip_sitegate(headers: &mut HeaderMap) {
    // The same single pass as hop-by-hop stripping; allocates only when one is there.
    let doomed: Vec<HeaderName> = headers
        .keys()
        .filter(|n| n.as_str().starts_with("x-sitegate-"))
        .cloned()
        .collect();
    for name in doomed {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_id_rule() {
        let ok = HeaderValue::from_static("abc-1.2_X");
        assert_eq!(valid_request_id(&ok), Some("abc-1.2_X"));
        for bad in ["", "has space", "semi;colon", "ünï"] {
            let v = HeaderValue::from_bytes(bad.as_bytes()).unwrap();
            assert_eq!(valid_request_id(&v), None, "{bad:?}");
        }
        let long = HeaderValue::from_str(&"a".repeat(129)).unwrap();
        assert_eq!(valid_request_id(&long), None);
        let max = HeaderValue::from_str(&"a".repeat(128)).unwrap();
        assert!(valid_request_id(&max).is_some());
    }

    #[test]
    fn generated_ids_have_the_designed_shape() {
        let id = new_request_id(0x0123_4567_89ab_cdef);
        assert_eq!(id, "req_456789abcdef");
        let id = new_request_id(0);
        assert_eq!(id, "req_000000000000");
    }

    #[test]
    fn hop_by_hop_headers_are_removed_and_end_to_end_kept() {
        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("close, x-private"));
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("te", HeaderValue::from_static("trailers"));
        h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        h.insert("upgrade", HeaderValue::from_static("websocket"));
        h.insert(
            "proxy-authorization",
            HeaderValue::from_static("Basic eA=="),
        );
        h.insert("proxy-foo", HeaderValue::from_static("1"));
        h.insert("content-type", HeaderValue::from_static("application/json"));
        h.insert("x-api-key", HeaderValue::from_static("k"));
        strip_hop_by_hop(&mut h);
        let left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left.len(), 2, "{left:?}");
        assert!(h.contains_key("content-type"));
        assert!(h.contains_key("x-api-key"));
    }

    #[test]
    fn client_sitegate_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert("x-sitegate-dropped", HeaderValue::from_static("0"));
        h.insert("X-Sitegate-Model-Version", HeaderValue::from_static("9"));
        h.insert("x-sitegatex", HeaderValue::from_static("kept"));
        strip_sitegate(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-sitegatex"));
    }
}

/// A `Content-Type`, as far as sitegate reads one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaType {
    /// `type/subtype`, lower case.
    pub essence: String,
    /// The `charset` parameter, lower case, unquoted.
    pub charset: Option<String>,
}

/// The body's media type. `None` without one; `Some(Err(()))` when it cannot be read
/// (not text, or two field lines that disagree: a parser that takes the other one
/// would see another type).
pub fn media_type(headers: &HeaderMap) -> Option<Result<MediaType, ()>> {
    let mut values = headers.get_all(header::CONTENT_TYPE).iter();
    let first = values.next()?;
    if values.any(|v| v != first) {
        return Some(Err(()));
    }
    let Ok(text) = first.to_str() else {
        return Some(Err(()));
    };
    let mut parts = text.split(';');
    let essence = parts.next().unwrap_or("").trim().to_ascii_lowercase();
    let charset = parts.find_map(|p| {
        let (name, value) = p.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("charset")
            .then(|| value.trim().trim_matches('"').to_ascii_lowercase())
    });
    Some(Ok(MediaType { essence, charset }))
}

/// The essence of the body's media type (`None` when absent or unreadable).
pub fn essence(headers: &HeaderMap) -> Option<String> {
    media_type(headers).and_then(Result::ok).map(|m| m.essence)
}

/// The declared `Content-Length`, when there is one that reads as a number (the
/// framing check refuses the others before any guard reads this).
pub fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}
