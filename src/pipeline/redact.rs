//! redact: the response body on its way out. JSON and text bodies up to the buffer
//! limit are redacted whole (exact `Content-Length`, `X-Sitegate-Redacted`); larger or
//! unsized ones stream through the engine. A body sitegate cannot inspect (an unknown
//! encoding, a compressed body over the limit) is refused, never passed unredacted.

use std::io::Read;

use bytes::Bytes;
use http::header::{CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use http::{HeaderMap, HeaderName, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::ctx::Ctx;
use crate::body::{BoxBody, IdleTimeout, full};
use crate::error::{Failure, UpstreamFailure};
use crate::observe::Category;
use crate::observe::metrics::{NameLabel, RedactionLabels};
use crate::policy::{Policy, Route};
use crate::redact::Finding;
use crate::redact::stream::RedactBody;

/// Number of secrets redacted from a buffered response.
pub const REDACTED: HeaderName = HeaderName::from_static("x-sitegate-redacted");

/// True for the content types redaction applies to: JSON, text and their kin, and a
/// body with no declared type (it may be anything, so it is inspected).
pub(super) fn redactable(headers: &HeaderMap) -> bool {
    let Some(ct) = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence.starts_with("text/")
        || essence.ends_with("+json")
        || essence.ends_with("+xml")
        || matches!(
            essence.as_str(),
            "application/json"
                | "application/xml"
                | "application/javascript"
                | "application/x-www-form-urlencoded"
                | "application/yaml"
                | "application/x-yaml"
                | "application/x-ndjson"
        )
}

enum Encoding {
    Identity,
    Gzip,
    Deflate,
    Unknown,
}

fn encoding(headers: &HeaderMap) -> Encoding {
    match headers
        .get(CONTENT_ENCODING)
        .map(|v| v.as_bytes().to_ascii_lowercase())
    {
        None => Encoding::Identity,
        Some(v) => match v.trim_ascii() {
            b"" | b"identity" => Encoding::Identity,
            b"gzip" | b"x-gzip" => Encoding::Gzip,
            b"deflate" => Encoding::Deflate,
            _ => Encoding::Unknown,
        },
    }
}

fn refuse(ctx: &Ctx, why: &str) -> Failure {
    tracing::error!(
        category = Category::SystemError.as_str(),
        request_id = ctx.id(),
        route = %ctx.route,
        why,
        "refused a response sitegate could not inspect for secrets"
    );
    Failure::Upstream(UpstreamFailure::InvalidResponse)
}

/// Decodes a compressed body, refusing one that decodes past `limit` bytes.
fn decode(enc: &Encoding, body: &[u8], limit: u64) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let read = match enc {
        Encoding::Gzip => flate2::read::MultiGzDecoder::new(body)
            .take(limit + 1)
            .read_to_end(&mut out),
        // HTTP "deflate" is zlib-wrapped.
        Encoding::Deflate => flate2::read::ZlibDecoder::new(body)
            .take(limit + 1)
            .read_to_end(&mut out),
        _ => return None,
    };
    (read.is_ok() && out.len() as u64 <= limit).then_some(out)
}

fn count(ctx: &Ctx, found: &Finding) {
    ctx.shared
        .metrics
        .redactions
        .get_or_create(&RedactionLabels {
            route: NameLabel(ctx.route.clone()),
            detector: NameLabel(found.detector.clone()),
        })
        .inc();
}

/// Redacts a response whose body is JSON or text.
pub(super) async fn redact(
    ctx: &mut Ctx,
    policy: &Policy,
    route: &Route,
    mut parts: http::response::Parts,
    incoming: Incoming,
) -> Result<Response<BoxBody>, Failure> {
    let limit = policy.redaction.buffer_limit;
    let redactor = policy.redaction.redactor.clone();
    let enc = encoding(&parts.headers);
    let length = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    // Buffer only what the memory budget can hold now; otherwise stream (for a plain
    // body) or refuse (a compressed one cannot be inspected without buffering).
    let permit = length
        .filter(|n| *n <= limit)
        .and_then(|n| ctx.take_budget(n));
    let buffered = permit.is_some();
    match (&enc, buffered) {
        (Encoding::Unknown, _) => return Err(refuse(ctx, "unknown content encoding")),
        (Encoding::Gzip | Encoding::Deflate, false) => {
            return Err(refuse(
                ctx,
                "compressed body larger than redaction.buffer_limit",
            ));
        }
        (Encoding::Identity, false) => {
            // Stream: the length may change, so it is not announced.
            parts.headers.remove(CONTENT_LENGTH);
            let shared = ctx.shared.clone();
            let route_name = ctx.route.clone();
            let on_finding = Box::new(move |f: &Finding| {
                shared
                    .metrics
                    .redactions
                    .get_or_create(&RedactionLabels {
                        route: NameLabel(route_name.clone()),
                        detector: NameLabel(f.detector.clone()),
                    })
                    .inc();
            });
            let body = RedactBody::new(
                IdleTimeout::new(incoming, route.timeout),
                redactor,
                Some(on_finding),
            );
            return Ok(Response::from_parts(parts, body.boxed_unsync()));
        }
        _ => {}
    }
    let collected =
        http_body_util::Limited::new(IdleTimeout::new(incoming, route.timeout), limit as usize)
            .collect()
            .await;
    let raw: Bytes = match collected {
        Ok(b) => b.to_bytes(),
        // The app broke off (or lied about the length) before the status line went out:
        // an honest error is still possible.
        Err(_) => return Err(Failure::Upstream(UpstreamFailure::Connect)),
    };
    let plain: Bytes = match enc {
        Encoding::Identity => raw,
        _ => match decode(&enc, &raw, limit) {
            Some(d) => {
                parts.headers.remove(CONTENT_ENCODING);
                Bytes::from(d)
            }
            None => {
                return Err(refuse(
                    ctx,
                    "compressed body did not decode within redaction.buffer_limit",
                ));
            }
        },
    };
    let body = match redactor.redact(&plain) {
        None => plain,
        Some((_, found)) if found.iter().any(|f| f.cut) => {
            return Err(refuse(
                ctx,
                "a secret longer than its detector's window (a private key block with no END within 64 KiB)",
            ));
        }
        Some((out, found)) => {
            for f in &found {
                count(ctx, f);
            }
            parts
                .headers
                .insert(REDACTED, HeaderValue::from(found.len()));
            Bytes::from(out)
        }
    };
    parts
        .headers
        .insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
    // The budget is given back when the body has been sent (or dropped).
    let body = full(body)
        .map_frame(move |frame| {
            let _held = &permit;
            frame
        })
        .boxed_unsync();
    Ok(Response::from_parts(parts, body))
}
