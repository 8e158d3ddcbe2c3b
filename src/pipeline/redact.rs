//! redact: the response on its way out. Header values are redacted on every response;
//! a body is redacted unless its type is on the skip list of binary types. Bodies up
//! to the buffer limit are redacted whole (exact `Content-Length`, `X-Sitegate-Redacted`);
//! larger or unsized ones stream through the engine. What is matched is what a client
//! would read: every `Content-Encoding` layer undone, the declared charset decoded, JSON
//! escapes decoded (by the engine). A body sitegate cannot read that way (an unknown
//! coding or charset, a compressed or UTF-16 body over the limit, a key block longer
//! than the engine's window) is refused, never passed on as if it had been scanned.

use bytes::Bytes;
use http::header::{
    CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, DATE, HeaderValue, TRANSFER_ENCODING,
};
use http::{HeaderMap, HeaderName, Response};
use http_body_util::BodyExt;

use super::ctx::Ctx;
use crate::body::{BoxBody, IdleTimeout, full};
use crate::error::{Failure, UpstreamFailure};
use crate::observe::Category;
use crate::observe::metrics::{NameLabel, RedactionLabels};
use crate::policy::{Policy, RedactionPolicy, Route, UnknownCharset};
use crate::redact::Finding;
use crate::redact::stream::RedactBody;
use crate::redact::unescape::Escapes;

/// Number of secrets redacted from a buffered response body.
pub const REDACTED: HeaderName = HeaderName::from_static("x-sitegate-redacted");

/// How a body is read for matching.
#[derive(Debug, PartialEq)]
enum Text {
    /// Its type is on the skip list: passed on as it is.
    Skip,
    /// Bytes as they are: UTF-8, ASCII and every charset that writes ASCII as ASCII
    /// (secrets are ASCII), or no declared charset.
    Bytes,
    /// A charset that does not write ASCII as ASCII (UTF-16, ISO-2022-JP): decoded to
    /// UTF-8 for matching and, when something was replaced, encoded back.
    Transcode(&'static encoding_rs::Encoding, String),
    /// A charset sitegate does not know: refused or scanned as bytes, per
    /// `[redaction] unknown_charset`.
    Unknown(String),
}

fn text(redaction: &RedactionPolicy, headers: &HeaderMap) -> Text {
    let media = match crate::headers::media_type(headers) {
        // No type, or one that cannot be read: it may be anything, so it is scanned.
        None | Some(Err(())) => return Text::Bytes,
        Some(Ok(m)) => m,
    };
    if redaction.skips(&media.essence) {
        return Text::Skip;
    }
    let Some(label) = media.charset else {
        return Text::Bytes;
    };
    match encoding_rs::Encoding::for_label(label.as_bytes()) {
        Some(e) if e == encoding_rs::REPLACEMENT => Text::Unknown(label),
        Some(e) if e.is_ascii_compatible() => Text::Bytes,
        Some(e) => Text::Transcode(e, label),
        None => Text::Unknown(label),
    }
}

/// How a transcoded body is written back.
enum Writer {
    Utf16 { big_endian: bool, bom: bool },
    Encoder(&'static encoding_rs::Encoding),
}

/// `body` in `enc` decoded to UTF-8, and how to encode it back; `None` when it is not
/// valid text in that charset.
fn decode_text(
    enc: &'static encoding_rs::Encoding,
    label: &str,
    body: &[u8],
) -> Option<(String, Writer)> {
    if enc == encoding_rs::UTF_16LE || enc == encoding_rs::UTF_16BE {
        let (big_endian, bom) = match body {
            [0xFE, 0xFF, ..] => (true, true),
            [0xFF, 0xFE, ..] => (false, true),
            // Plain "utf-16" without a byte order mark: RFC 2781 says big-endian,
            // WHATWG little. ASCII text has its zero bytes first in big-endian, so
            // the text decides.
            _ if label == "utf-16" => {
                let sample = &body[..body.len().min(4096)];
                let zeros = |parity| {
                    sample
                        .iter()
                        .skip(parity)
                        .step_by(2)
                        .filter(|b| **b == 0)
                        .count()
                };
                (zeros(0) > zeros(1), false)
            }
            _ => (enc == encoding_rs::UTF_16BE, false),
        };
        let enc = if big_endian {
            encoding_rs::UTF_16BE
        } else {
            encoding_rs::UTF_16LE
        };
        let rest = &body[if bom { 2 } else { 0 }..];
        let text = enc.decode_without_bom_handling_and_without_replacement(rest)?;
        return Some((text.into_owned(), Writer::Utf16 { big_endian, bom }));
    }
    let text = enc.decode_without_bom_handling_and_without_replacement(body)?;
    Some((text.into_owned(), Writer::Encoder(enc)))
}

fn encode_text(text: &str, writer: &Writer) -> Vec<u8> {
    match writer {
        Writer::Utf16 { big_endian, bom } => {
            let mut out = Vec::with_capacity(text.len() * 2 + 2);
            let mut put = |u: u16| {
                out.extend_from_slice(&if *big_endian {
                    u.to_be_bytes()
                } else {
                    u.to_le_bytes()
                })
            };
            if *bom {
                put(0xFEFF);
            }
            text.encode_utf16().for_each(put);
            out
        }
        // Every character came from this charset and the replacement is ASCII, so
        // nothing is lost on the way back.
        Writer::Encoder(enc) => enc.encode(text).0.into_owned(),
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

/// Headers that describe the message itself, written by the app's HTTP stack and read
/// by the client's: not scanned (a replacement would break the framing).
fn structural(name: &HeaderName) -> bool {
    name == CONTENT_LENGTH
        || name == CONTENT_TYPE
        || name == CONTENT_ENCODING
        || name == TRANSFER_ENCODING
        || name == DATE
        || name.as_str().starts_with("x-sitegate-")
        || name == crate::headers::REQUEST_ID
}

/// Redacts every response header value but the structural ones (`Location`,
/// `Set-Cookie`, `Link`, `WWW-Authenticate`, every custom header...), matching through
/// percent-encoding and JSON escapes, since header values are mostly URLs and tokens.
/// One scan over all of them finds nothing in the usual case; only then is each value
/// looked at alone.
pub(super) fn redact_headers(ctx: &Ctx, policy: &Policy, headers: &mut HeaderMap) {
    let redactor = &policy.redaction.redactor;
    let mut all = Vec::with_capacity(512);
    for (name, value) in headers.iter() {
        if !structural(name) {
            all.extend_from_slice(value.as_bytes());
            all.push(b'\n');
        }
    }
    if redactor.scan_with(&all, 0, true, Escapes::URL).0.is_empty() {
        return;
    }
    let names: Vec<HeaderName> = headers.keys().filter(|n| !structural(n)).cloned().collect();
    for name in names {
        let values: Vec<HeaderValue> = headers.get_all(&name).iter().cloned().collect();
        let mut changed = false;
        let redacted: Vec<HeaderValue> = values
            .into_iter()
            .map(|v| match redactor.redact_with(v.as_bytes(), Escapes::URL) {
                None => v,
                Some((out, found)) => {
                    changed = true;
                    found.iter().for_each(|f| count(ctx, f));
                    HeaderValue::from_bytes(&out)
                        .unwrap_or_else(|_| HeaderValue::from_static("[REDACTED]"))
                }
            })
            .collect();
        if changed {
            headers.remove(&name);
            for v in redacted {
                headers.append(name.clone(), v);
            }
        }
    }
}

/// Redacts a response body, unless its type is one that is skipped.
pub(super) async fn redact(
    ctx: &mut Ctx,
    policy: &Policy,
    route: &Route,
    mut parts: http::response::Parts,
    incoming: crate::body::AppBody,
) -> Result<Response<BoxBody>, Failure> {
    let redaction = &policy.redaction;
    let limit = redaction.buffer_limit;
    let redactor = redaction.redactor.clone();
    let text = match text(redaction, &parts.headers) {
        Text::Skip => {
            let body = IdleTimeout::new(incoming, route.timeout).boxed_unsync();
            return Ok(Response::from_parts(parts, body));
        }
        Text::Unknown(label) => match redaction.unknown_charset {
            UnknownCharset::Refuse => {
                return Err(refuse(
                    ctx,
                    &format!(
                        "charset {label:?} is unknown ([redaction] unknown_charset = \"refuse\")"
                    ),
                ));
            }
            UnknownCharset::Scan => Text::Bytes,
        },
        other => other,
    };
    let codings = match crate::body::codings(&parts.headers) {
        Ok(c) => c,
        Err(coding) => return Err(refuse(ctx, &format!("unknown content coding {coding:?}"))),
    };
    let length = crate::headers::content_length(&parts.headers);
    // Buffer only what the memory budget can hold now; otherwise stream (a plain
    // body) or refuse (a compressed or transcoded one cannot be read as it streams).
    let permit = length
        .filter(|n| *n <= limit)
        .and_then(|n| ctx.take_budget(n));
    if permit.is_none() {
        if !codings.is_empty() {
            return Err(refuse(
                ctx,
                "compressed body larger than redaction.buffer_limit",
            ));
        }
        if let Text::Transcode(_, label) = &text {
            return Err(refuse(
                ctx,
                &format!("{label} body larger than redaction.buffer_limit"),
            ));
        }
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
    let plain: Bytes = if codings.is_empty() {
        raw
    } else {
        match crate::body::decode(&raw, &codings, limit) {
            Ok(d) => {
                parts.headers.remove(CONTENT_ENCODING);
                Bytes::from(d)
            }
            Err(_) => {
                return Err(refuse(
                    ctx,
                    "compressed body did not decode within redaction.buffer_limit",
                ));
            }
        }
    };
    let decoded = match &text {
        Text::Transcode(enc, label) => match decode_text(enc, label, &plain) {
            Some(decoded) => Some(decoded),
            None => return Err(refuse(ctx, &format!("the body is not valid {label}"))),
        },
        _ => None,
    };
    let matched: &[u8] = decoded.as_ref().map_or(&plain, |(s, _)| s.as_bytes());
    let body = match redactor.redact(matched) {
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
            match &decoded {
                // The engine replaces whole escapes and characters, so this is text.
                Some((_, writer)) => {
                    Bytes::from(encode_text(&String::from_utf8_lossy(&out), writer))
                }
                None => Bytes::from(out),
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn textual_and_unknown_types_are_scanned_binary_ones_skipped() {
        let p = RedactionPolicy::default();
        let of = |ct: &'static str| text(&p, &headers(&[("content-type", ct)]));
        for ct in [
            "application/json",
            "application/x-ndjson",
            "application/vnd.api+json",
            "text/event-stream",
            "multipart/form-data; boundary=x",
            "*/*",
            "application/x-unheard-of",
            "text/plain; charset=iso-8859-1",
            "text/plain; charset=Shift_JIS",
        ] {
            assert_eq!(of(ct), Text::Bytes, "{ct}");
        }
        assert_eq!(text(&p, &HeaderMap::new()), Text::Bytes);
        for ct in [
            "image/png",
            "video/mp4",
            "font/woff2",
            "application/octet-stream",
            "application/zip",
            "IMAGE/PNG; q=1",
        ] {
            assert_eq!(of(ct), Text::Skip, "{ct}");
        }
        // Two Content-Types that disagree: read as unknown, so scanned.
        let two = headers(&[
            ("content-type", "image/png"),
            ("content-type", "text/plain"),
        ]);
        assert_eq!(text(&p, &two), Text::Bytes);
        assert!(matches!(
            of("application/json; charset=\"UTF-16\""),
            Text::Transcode(_, l) if l == "utf-16"
        ));
        assert!(matches!(
            of("text/plain; charset=iso-2022-jp"),
            Text::Transcode(..)
        ));
        assert!(matches!(of("text/plain; charset=utf-32"), Text::Unknown(l) if l == "utf-32"));
        assert!(matches!(
            of("text/plain; charset=hz-gb-2312"),
            Text::Unknown(_)
        ));
    }

    #[test]
    fn utf16_round_trips_in_either_byte_order_with_or_without_a_mark() {
        let s = "{\"k\":\"AKIAIOSFODNN7EXAMPLE\",\"é\":\"\u{1F600}\"}";
        for (label, big_endian, bom) in [
            ("utf-16", true, false),
            ("utf-16", false, false),
            ("utf-16", true, true),
            ("utf-16", false, true),
            ("utf-16le", false, false),
            ("utf-16be", true, false),
        ] {
            let writer = Writer::Utf16 { big_endian, bom };
            let bytes = encode_text(s, &writer);
            let enc = encoding_rs::Encoding::for_label(label.as_bytes()).unwrap();
            let (back, w) = decode_text(enc, label, &bytes).unwrap();
            assert_eq!(back, s, "{label} {big_endian} {bom}");
            assert_eq!(encode_text(&back, &w), bytes);
        }
        // Not UTF-16 at all (an odd length): refused, not guessed.
        assert!(decode_text(encoding_rs::UTF_16LE, "utf-16le", b"abc").is_none());
    }
}
