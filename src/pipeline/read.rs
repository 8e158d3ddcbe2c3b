//! read_body: the whole request body, for routes whose guards need it. Bounded by the
//! route's `max_body` (decoded size, for `gzip` and `deflate` bodies), by the memory
//! budget, and by the route's timeout between pieces.

use std::sync::Arc;

use bytes::Bytes;
use http::HeaderMap;
use http::header::{CONTENT_ENCODING, CONTENT_LENGTH};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::sync::OwnedSemaphorePermit;

use super::ctx::Ctx;
use super::forward::too_large;
use crate::body::{BodyStats, IdleTimeout, Limited};
use crate::error::{ErrorCode, Failure, Rejection};
use crate::policy::Route;

/// The longest a request waits for room in the memory budget before it is refused.
const BUDGET_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// The memory a body being parsed may take, as a multiple of its size.
const PARSE_FACTOR: u64 = 5;

/// Reads the body whole. The returned permit holds its bytes in the memory budget.
pub(super) async fn read_body(
    ctx: &mut Ctx,
    route: &Route,
    headers: &HeaderMap,
    incoming: Incoming,
) -> Result<(Bytes, Option<OwnedSemaphorePermit>), Failure> {
    let compressed = match headers
        .get(CONTENT_ENCODING)
        .map(|v| v.as_bytes().to_ascii_lowercase())
    {
        None => None,
        Some(v) => match v.trim_ascii() {
            b"" | b"identity" => None,
            b"gzip" | b"x-gzip" => Some(true),
            b"deflate" => Some(false),
            _ => {
                // Refused unread: let the client finish sending so it sees the answer.
                crate::body::discard(incoming);
                return Err(Rejection::new(
                    ErrorCode::UnsupportedMediaType,
                    "this Content-Encoding cannot be read; send the body plain, gzip or deflate",
                )
                .into());
            }
        },
    };
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    // What the body may occupy: its declared size, else the route's limit, times the
    // text plus the parsed tree it becomes (the tree measured at up to four times the
    // JSON text for small records; see benches/budget.sh).
    let want = declared.unwrap_or(route.max_body).min(route.max_body);
    let wait = route.timeout.min(BUDGET_WAIT);
    let Some(permit) = ctx
        .wait_budget(want.saturating_mul(PARSE_FACTOR), wait)
        .await
    else {
        crate::body::discard(incoming);
        return Err(Rejection::new(
            ErrorCode::ResourceExhausted,
            "sitegate's memory for request bodies is in use; retry shortly",
        )
        .with_retry_after(1)
        .into());
    };
    let stats = Arc::new(BodyStats::default());
    ctx.body_in = Some(stats.clone());
    let limited = Limited::new(incoming, route.max_body, stats.clone());
    let raw = match IdleTimeout::new(limited, route.timeout).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) if stats.over_limit() => return Err(too_large(route)),
        Err(_) => return Err(super::forward::broken_body()),
    };
    let Some(gzip) = compressed else {
        return Ok((raw, Some(permit)));
    };
    let out = crate::guard::limits::decode_body(&raw, gzip, route.max_body)?;
    Ok((Bytes::from(out), Some(permit)))
}
