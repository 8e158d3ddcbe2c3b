//! Checks on the request head before any body byte is read (framing, declared size,
//! content type), and the bounded decoding of a compressed body. A body that lies
//! about its size is cut off while it streams (`body::Limited`).

use http::HeaderMap;
use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};

use crate::error::{ErrorCode, Rejection};
use crate::policy::Route;

/// Refuses a request whose framing could be read two ways (request smuggling) or
/// whose body sitegate would pass on with a coding it did not undo.
///
/// hyper already refuses differing `Content-Length`s, obs-fold, a final coding other
/// than `chunked` and bad chunk sizes; with both `Content-Length` and
/// `Transfer-Encoding` it does what RFC 9112 §6.3 requires of an intermediary (drops
/// the length, reads the chunks, closes the connection after the answer), so the
/// length never reaches this check or the app. What it lets through is a coding
/// before `chunked` (`gzip, chunked`, or a second `Transfer-Encoding` line): the app
/// would get compressed bytes as if they were plain. Only a single plain `chunked` is
/// accepted.
pub fn check_framing(headers: &HeaderMap) -> Result<(), Rejection> {
    let mut codings = headers.get_all(TRANSFER_ENCODING).iter();
    let Some(first) = codings.next() else {
        return Ok(());
    };
    let plain_chunked = first
        .to_str()
        .is_ok_and(|v| v.trim().eq_ignore_ascii_case("chunked"));
    if !plain_chunked || codings.next().is_some() {
        return Err(Rejection::new(
            ErrorCode::InvalidRequest,
            "Transfer-Encoding must be exactly \"chunked\"; use Content-Encoding for compression",
        )
        .closing());
    }
    if headers.contains_key(CONTENT_LENGTH) {
        return Err(Rejection::new(
            ErrorCode::InvalidRequest,
            "a request may not carry both Content-Length and Transfer-Encoding",
        )
        .closing());
    }
    Ok(())
}

/// Refuses a request whose declared length is over the route's `max_body`, or whose
/// body has a content type the route does not accept.
pub fn check_head(route: &Route, headers: &HeaderMap) -> Result<(), Rejection> {
    let length = crate::headers::content_length(headers);
    if let Some(len) = length
        && len > route.max_body
    {
        return Err(Rejection::new(
            ErrorCode::PayloadTooLarge,
            format!(
                "request body is {len} bytes; this route accepts at most {}",
                route.max_body
            ),
        ));
    }
    let has_body = length.is_some_and(|l| l > 0) || headers.contains_key(TRANSFER_ENCODING);
    if has_body && !route.content_types.is_empty() {
        let essence = crate::headers::essence(headers);
        let accepted = essence
            .as_deref()
            .is_some_and(|e| route.content_types.iter().any(|ct| ct == e));
        if !accepted {
            let what = match essence {
                Some(_) => "this content type is not accepted",
                None => "a request body needs a Content-Type",
            };
            return Err(Rejection::new(
                ErrorCode::UnsupportedMediaType,
                format!(
                    "{what}; this route accepts {}",
                    route.content_types.join(", ")
                ),
            ));
        }
    }
    Ok(())
}

/// Decodes a request body carrying `codings`, at most `limit` bytes decoded.
pub fn decode_body(
    raw: &[u8],
    codings: &[crate::body::Coding],
    limit: u64,
) -> Result<Vec<u8>, Rejection> {
    crate::body::decode(raw, codings, limit).map_err(|e| match e {
        crate::body::DecodeError::Corrupt => Rejection::new(
            ErrorCode::InvalidRequest,
            "the compressed request body is corrupt",
        ),
        crate::body::DecodeError::TooLarge => Rejection::new(
            ErrorCode::PayloadTooLarge,
            format!("the request body decodes to more than this route's limit of {limit} bytes"),
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Source, compile};
    use http::Method;

    #[test]
    fn framing_that_two_parsers_could_read_differently_is_refused() {
        let refused = |pairs: &[(&'static str, &'static str)]| {
            check_framing(&headers(pairs)).map_err(|r| r.code)
        };
        assert_eq!(refused(&[("content-length", "7")]), Ok(()));
        assert_eq!(refused(&[("transfer-encoding", "chunked")]), Ok(()));
        assert_eq!(
            refused(&[("content-length", "7"), ("transfer-encoding", "chunked")]),
            Err(ErrorCode::InvalidRequest)
        );
        assert_eq!(refused(&[("transfer-encoding", " Chunked ")]), Ok(()));
        for twice in [
            &[
                ("transfer-encoding", "chunked"),
                ("transfer-encoding", "chunked"),
            ][..],
            &[
                ("transfer-encoding", "gzip"),
                ("transfer-encoding", "chunked"),
            ][..],
            &[("transfer-encoding", "gzip, chunked")][..],
        ] {
            assert_eq!(refused(twice), Err(ErrorCode::InvalidRequest), "{twice:?}");
        }
    }

    fn route(extra: &str) -> crate::policy::Policy {
        let text = format!("[[route]]\nname = \"r\"\npath = \"/r\"\n{extra}\n");
        compile(&[Source::policy("m.toml", text)]).unwrap()
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    http::HeaderName::from_static(k),
                    http::HeaderValue::from_static(v),
                )
            })
            .collect()
    }

    #[test]
    fn declared_length_over_the_limit_is_413() {
        let p = route("max_body = 10");
        let r = p.routes.find(&Method::POST, "/r").unwrap();
        assert!(check_head(r, &headers(&[("content-length", "10")])).is_ok());
        let e = check_head(r, &headers(&[("content-length", "11")])).unwrap_err();
        assert_eq!(e.code, ErrorCode::PayloadTooLarge);
        assert!(e.message.contains("at most 10"));
    }

    #[test]
    fn content_type_is_checked_only_when_there_is_a_body() {
        let p = route("content_types = [\"application/json\"]");
        let r = p.routes.find(&Method::POST, "/r").unwrap();
        assert!(check_head(r, &headers(&[])).is_ok());
        assert!(check_head(r, &headers(&[("content-length", "0")])).is_ok());
        let ok = headers(&[
            ("content-length", "2"),
            ("content-type", "Application/JSON; charset=utf-8"),
        ]);
        assert!(check_head(r, &ok).is_ok());
        let wrong = headers(&[("content-length", "2"), ("content-type", "text/plain")]);
        assert_eq!(
            check_head(r, &wrong).unwrap_err().code,
            ErrorCode::UnsupportedMediaType
        );
        let missing = headers(&[("transfer-encoding", "chunked")]);
        let e = check_head(r, &missing).unwrap_err();
        assert_eq!(e.code, ErrorCode::UnsupportedMediaType);
        assert!(e.message.contains("needs a Content-Type"));
    }
}
