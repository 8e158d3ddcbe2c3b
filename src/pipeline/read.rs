//! read_body: the whole request body, for routes whose guards need it. Bounded by the
//! route's `max_body` (decoded size, for `gzip` and `deflate` bodies), by the memory
//! budget (taken as bytes arrive), and by `client_body_timeout` between pieces.

use std::sync::Arc;

use bytes::Bytes;
use http::HeaderMap;
use http_body_util::BodyExt;
use tokio::sync::OwnedSemaphorePermit;

use super::ctx::Ctx;
use crate::body::{BodyStats, BoxError, ClientBody, ClientBodyError};
use crate::error::{ErrorCode, Failure, Rejection};
use crate::policy::Route;

/// The longest a request waits for room in the memory budget before it is refused.
const BUDGET_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// The memory a body being parsed may take, as a multiple of its size.
const PARSE_FACTOR: u64 = 5;

/// Reads the body whole. The returned permit holds its bytes in the memory budget.
pub(super) async fn read_body<B: ClientBody>(
    ctx: &mut Ctx,
    route: &Route,
    headers: &HeaderMap,
    incoming: B,
    idle: std::time::Duration,
) -> Result<(Bytes, Option<OwnedSemaphorePermit>), Failure> {
    let compressed = match super::decide::content_coding(headers) {
        Ok(c) => c,
        Err(rejection) => {
            // Refused unread: let the client finish sending so it sees the answer.
            crate::body::discard(incoming);
            return Err(rejection.into());
        }
    };
    let wait_until = tokio::time::Instant::now() + route.timeout.min(BUDGET_WAIT);
    let exhausted = || -> Failure {
        Rejection::new(
            ErrorCode::ResourceExhausted,
            "sitegate's memory for request bodies is in use; retry shortly",
        )
        .with_retry_after(1)
        .into()
    };
    let stats = Arc::new(BodyStats::default());
    ctx.body_in = Some(stats.clone());
    let mut body = crate::body::from_client(incoming, route.max_body, idle, stats.clone());
    // The budget is taken as the bytes arrive, not for the declared length up front:
    // a client that declares 2 MiB and sends one byte holds one byte, so slow clients
    // cannot hold the budget that others need (NGINX and Envoy buffer the same way).
    let mut permit: Option<OwnedSemaphorePermit> = None;
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut len = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(f) => f,
            Err(e) => return Err(body_fault(&e, route)),
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if data.is_empty() {
            continue;
        }
        let Some(more) = ctx.wait_budget(data.len() as u64, wait_until).await else {
            crate::body::discard(body);
            return Err(exhausted());
        };
        merge(&mut permit, more);
        len += data.len();
        chunks.push(data);
    }
    let raw = match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.pop().unwrap_or_default(),
        _ => {
            let mut all = bytes::BytesMut::with_capacity(len);
            for c in &chunks {
                all.extend_from_slice(c);
            }
            all.freeze()
        }
    };
    drop(chunks);
    let decoded = if compressed.is_empty() {
        raw
    } else {
        Bytes::from(crate::guard::limits::decode_body(
            &raw,
            &compressed,
            route.max_body,
        )?)
    };
    // Room for the parsed tree the body becomes (measured at up to four times the JSON
    // text for small records; see benches/budget.sh), taken once the body is whole.
    let held = raw_len(&permit);
    let want = (decoded.len() as u64)
        .saturating_mul(PARSE_FACTOR)
        .saturating_sub(held);
    if want > 0 {
        let Some(more) = ctx.wait_budget(want, wait_until).await else {
            return Err(exhausted());
        };
        merge(&mut permit, more);
    }
    Ok((decoded, permit))
}

/// What a client's body failing means for the client.
pub(super) fn client_fault(e: &ClientBodyError, route: &Route) -> Failure {
    match e {
        ClientBodyError::TooLarge(_) => too_large(route),
        ClientBodyError::Stalled(_) => request_timeout(),
        ClientBodyError::Broken(_) => broken_body(),
    }
}

/// The failure of a body read from [`crate::body::from_client`], from its error.
pub(super) fn body_fault(e: &BoxError, route: &Route) -> Failure {
    match ClientBodyError::find(&**e) {
        Some(e) => client_fault(e, route),
        // Every error of such a body is a ClientBodyError; a broken body is the
        // honest reading of any other.
        None => broken_body(),
    }
}

/// The client's body could not be read to its end (a malformed chunk, or the client
/// went away); the app's request, if it was under way, was aborted.
fn broken_body() -> Failure {
    Rejection::new(
        ErrorCode::InvalidRequest,
        "the request body could not be read to the end (malformed chunked encoding, or the client stopped sending)",
    )
    .into()
}

fn too_large(route: &Route) -> Failure {
    Rejection::new(
        ErrorCode::PayloadTooLarge,
        format!(
            "request body is larger than this route's limit of {} bytes",
            route.max_body
        ),
    )
    .into()
}

/// The client stopped sending its body (or sent it too slowly): its fault, 408. The
/// connection closes: where the rest of the body would end is in doubt.
pub(super) fn request_timeout() -> Failure {
    Rejection::new(
        ErrorCode::RequestTimeout,
        "the request body did not arrive in time (the client paused longer than client_body_timeout, or stopped sending)",
    )
    .closing()
    .into()
}

fn merge(permit: &mut Option<OwnedSemaphorePermit>, more: OwnedSemaphorePermit) {
    match permit {
        Some(p) => p.merge(more),
        None => *permit = Some(more),
    }
}

fn raw_len(permit: &Option<OwnedSemaphorePermit>) -> u64 {
    permit.as_ref().map_or(0, |p| p.num_permits() as u64)
}
