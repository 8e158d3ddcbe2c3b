//! Fallback bodies: the precomputed answer a route gives when its upstream fails
//! (DESIGN §4, §5). Pure: (fallback, failure, request id) in, response out.

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};

use crate::error::UpstreamFailure;
use crate::headers::{FALLBACK, REQUEST_ID};

/// The placeholder replaced by the request id in a fallback body.
pub const REQUEST_ID_PLACEHOLDER: &str = "{request_id}";

/// A route's compiled fallback.
#[derive(Debug, Clone)]
pub struct Fallback {
    status: StatusCode,
    /// Which failures it answers for, one bit per `UpstreamFailure`.
    on: u8,
    headers: HeaderMap,
    /// The body cut at each `{request_id}`, so answering is a concatenation.
    pieces: Vec<Bytes>,
}

fn bit(f: UpstreamFailure) -> u8 {
    1 << UpstreamFailure::ALL
        .iter()
        .position(|x| *x == f)
        .unwrap_or(0)
}

impl Fallback {
    /// A fallback answering `status` with `body` (already checked to be JSON) and
    /// `headers`, for the failures in `on`.
    pub fn new(
        status: StatusCode,
        on: &[UpstreamFailure],
        mut headers: HeaderMap,
        body: &str,
    ) -> Self {
        if !headers.contains_key(header::CONTENT_TYPE) {
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
        }
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        let pieces = body
            .split(REQUEST_ID_PLACEHOLDER)
            .map(|p| Bytes::copy_from_slice(p.as_bytes()))
            .collect();
        Fallback {
            status,
            on: on.iter().fold(0, |acc, f| acc | bit(*f)),
            headers,
            pieces,
        }
    }

    /// True when this fallback answers for `failure`.
    pub fn covers(&self, failure: UpstreamFailure) -> bool {
        self.on & bit(failure) != 0
    }

    /// The fallback response for `failure`, with the request id in place.
    pub fn respond(&self, failure: UpstreamFailure, request_id: &HeaderValue) -> Response<Bytes> {
        let body = if self.pieces.len() == 1 {
            self.pieces[0].clone()
        } else {
            let mut out = BytesMut::new();
            for (i, piece) in self.pieces.iter().enumerate() {
                if i > 0 {
                    out.extend_from_slice(request_id.as_bytes());
                }
                out.extend_from_slice(piece);
            }
            out.freeze()
        };
        let mut resp = Response::new(body);
        *resp.status_mut() = self.status;
        *resp.headers_mut() = self.headers.clone();
        resp.headers_mut()
            .insert(FALLBACK, HeaderValue::from_static(failure.as_str()));
        resp.headers_mut().insert(REQUEST_ID, request_id.clone());
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_only_for_its_reasons_with_the_request_id_in_place() {
        let f = Fallback::new(
            StatusCode::OK,
            &[UpstreamFailure::Connect, UpstreamFailure::Timeout],
            HeaderMap::new(),
            r#"{"status":"degraded","request_id":"{request_id}","again":"{request_id}"}"#,
        );
        assert!(f.covers(UpstreamFailure::Connect));
        assert!(f.covers(UpstreamFailure::Timeout));
        assert!(!f.covers(UpstreamFailure::Status5xx));
        assert!(!f.covers(UpstreamFailure::CircuitOpen));
        let resp = f.respond(
            UpstreamFailure::Timeout,
            &HeaderValue::from_static("req_abc"),
        );
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["x-sitegate-fallback"], "timeout");
        assert_eq!(resp.headers()["x-request-id"], "req_abc");
        assert_eq!(resp.headers()["content-type"], "application/json");
        let v: serde_json::Value = serde_json::from_slice(resp.body()).unwrap();
        assert_eq!(v["request_id"], "req_abc");
        assert_eq!(v["again"], "req_abc");
    }

    #[test]
    fn a_body_without_placeholder_is_served_as_is() {
        let mut h = HeaderMap::new();
        h.insert("x-degraded", HeaderValue::from_static("1"));
        let f = Fallback::new(
            StatusCode::SERVICE_UNAVAILABLE,
            &UpstreamFailure::ALL,
            h,
            "{}",
        );
        let resp = f.respond(UpstreamFailure::CircuitOpen, &HeaderValue::from_static("r"));
        assert_eq!(resp.status(), 503);
        assert_eq!(&resp.body()[..], b"{}");
        assert_eq!(resp.headers()["x-degraded"], "1");
        assert_eq!(resp.headers()["x-sitegate-fallback"], "circuit-open");
    }
}
