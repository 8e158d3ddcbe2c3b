//! forward: the upstream call. The circuit breaker decides whether the app is asked
//! at all; the answer is classified once (`connect`, `timeout`, `5xx`,
//! `invalid-response`); `connect` failures and configured statuses are retried when
//! the route opts in, the method is safe to repeat, the body can be sent again and the
//! retry budget allows.

use std::sync::Arc;

use bytes::Bytes;
use http::header::TRANSFER_ENCODING;
use http::{HeaderMap, Method, Request, Response, Uri};
use http_body_util::BodyExt;
use tokio::time::Instant;
use tower::retry::budget::Budget;

use super::ctx::Ctx;
use super::read::{body_fault, client_fault, request_timeout};
use crate::body::{AppBody, BodyStats, BoxBody, ClientBody, from_client, full};
use crate::error::{Failure, UpstreamFailure};
use crate::observe::Category;
use crate::observe::metrics::{NameLabel, RouteLabel};
use crate::policy::{Policy, RetryPolicy, Route};
use crate::upstream::Blame;

/// What the upstream call came to.
pub(super) enum Forwarded {
    /// The app's response, to pass on.
    Response(Response<AppBody>),
    /// The app failed. A `5xx` keeps its response: without a fallback it passes on.
    Failed(UpstreamFailure, Option<Response<AppBody>>),
}

/// True for methods that mean the same when sent twice (RFC 9110 §9.2.2).
fn idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// The request head, kept so that a retry can send it again.
#[derive(Clone)]
struct Head {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
}

impl Head {
    fn into_request(self, body: BoxBody) -> Request<BoxBody> {
        let mut req = Request::new(body);
        *req.method_mut() = self.method;
        *req.uri_mut() = self.uri;
        *req.headers_mut() = self.headers;
        req
    }
}

fn is_json(resp: &Response<AppBody>) -> bool {
    match crate::headers::essence(resp.headers()) {
        Some(essence) => essence == "application/json" || essence.ends_with("+json"),
        // Nothing to inspect in a body-less answer.
        None => matches!(resp.status().as_u16(), 204 | 304),
    }
}

/// Reads a body that may be sent more than once; `None` when it is too large or of
/// unknown length (it then streams, and is not retried).
async fn replayable<B: ClientBody>(
    parts: &http::request::Parts,
    incoming: B,
    retry: &RetryPolicy,
    route: &Route,
    stats: &Arc<BodyStats>,
    idle: std::time::Duration,
) -> Result<Result<Bytes, B>, Failure> {
    let length = crate::headers::content_length(&parts.headers);
    let chunked = parts.headers.contains_key(TRANSFER_ENCODING);
    match length {
        Some(n) if n <= retry.max_body && !chunked => {}
        None if !chunked => {}
        _ => return Ok(Err(incoming)),
    }
    let limited = from_client(
        incoming,
        route.max_body.min(retry.max_body),
        idle,
        stats.clone(),
    );
    match limited.collect().await {
        Ok(body) => Ok(Ok(body.to_bytes())),
        Err(e) => Err(body_fault(&e, route)),
    }
}

/// The request body on its way to the app.
pub(super) enum RequestBody<B> {
    /// Not read yet: it streams (and may still be kept for retries).
    Stream(B),
    /// Read, checked and held (its memory budget permit with it).
    Buffered(Bytes, Option<tokio::sync::OwnedSemaphorePermit>),
}

/// Sends the request to the app, with the breaker, classification and retries.
pub(super) async fn forward<B: ClientBody>(
    ctx: &mut Ctx,
    policy: &Policy,
    route: &Route,
    parts: http::request::Parts,
    body: RequestBody<B>,
) -> Result<Forwarded, Failure> {
    let shared = ctx.shared.clone();
    let idle = policy.server.client_body_timeout;
    let stats = match &ctx.body_in {
        Some(s) => s.clone(),
        None => {
            let s = Arc::new(BodyStats::default());
            ctx.body_in = Some(s.clone());
            s
        }
    };
    let retry = route
        .retry
        .as_ref()
        .filter(|r| r.non_idempotent || idempotent(&parts.method));
    let (replay, mut stream, permit) = match body {
        RequestBody::Buffered(bytes, permit) => (Some(bytes), None, permit),
        RequestBody::Stream(incoming) => {
            // A body kept for retries draws on the memory budget; without room, it
            // streams and is not retried.
            let permit = retry.and_then(|r| ctx.take_budget(r.max_body));
            match retry.filter(|_| permit.is_some()) {
                Some(r) => match replayable(&parts, incoming, r, route, &stats, idle).await? {
                    Ok(bytes) => (Some(bytes), None, permit),
                    Err(incoming) => (None, Some(incoming), permit),
                },
                None => (None, Some(incoming), permit),
            }
        }
    };
    // Held until the app has answered: the body may be sent again until then.
    let _permit = permit;
    let retry = retry.filter(|_| replay.is_some());
    if retry.is_some() {
        ctx.runtime.retry_budget.deposit();
    }
    // Kept for a second attempt only when there may be one; otherwise it moves into
    // the one request (copying a header map costs more than the rest of this function).
    let mut head = Some(Head {
        method: parts.method,
        uri: parts.uri,
        headers: parts.headers,
    });
    let runtime = ctx.runtime.clone();
    let upstream = &runtime.upstreams[ctx.worker % runtime.upstreams.len()];
    let circuit_cfg = &policy.upstream.circuit;
    let label = || RouteLabel {
        route: NameLabel(route.name.clone()),
    };
    loop {
        let Some(permit) = shared.circuit.admit(circuit_cfg) else {
            return Ok(Forwarded::Failed(UpstreamFailure::CircuitOpen, None));
        };
        ctx.attempts += 1;
        let body = match (&replay, stream.take()) {
            (Some(bytes), _) => full(bytes.clone()),
            (None, Some(incoming)) => {
                from_client(incoming, route.max_body, idle, stats.clone()).boxed_unsync()
            }
            // A streamed body cannot be sent twice; the retry filter above ensures it is not.
            (None, None) => return Err(Failure::Internal("a streamed body was to be sent twice")),
        };
        let sent = Instant::now();
        let req = match (&head, retry) {
            (Some(h), Some(_)) => h.clone().into_request(body),
            _ => match head.take() {
                Some(h) => h.into_request(body),
                // Without a retry policy the loop below never comes round again.
                None => return Err(Failure::Internal("a request head was to be sent twice")),
            },
        };
        let result = upstream.send(req, route.timeout).await;
        let elapsed = sent.elapsed();
        ctx.upstream_ms = Some(elapsed);
        let outcome = match result {
            Err(e) => match e.classify() {
                // The client's body, not the app, failed (too large, broken, stalled;
                // or the app was still waiting for it when the timeout struck): nothing
                // to tell the breaker, and the client's own error code.
                Blame::Client(fault) => {
                    drop(permit);
                    return Err(client_fault(fault, route));
                }
                Blame::App(UpstreamFailure::Timeout) if stats.waiting_on_client() => {
                    drop(permit);
                    return Err(request_timeout());
                }
                Blame::App(failure) => {
                    ctx.upstream_cause = Some(e.to_string());
                    Forwarded::Failed(failure, None)
                }
            },
            Ok(resp) => {
                runtime
                    .route_metrics(Some(route.index))
                    .upstream_duration
                    .observe(elapsed.as_secs_f64());
                ctx.upstream_status = Some(resp.status().as_u16());
                if route.failure_statuses.contains(resp.status().as_u16()) {
                    Forwarded::Failed(UpstreamFailure::Status5xx, Some(resp))
                } else if route.expect_json && !is_json(&resp) {
                    Forwarded::Failed(UpstreamFailure::InvalidResponse, None)
                } else {
                    Forwarded::Response(resp)
                }
            }
        };
        // The app answered something (even non-JSON): it is up, as far as the breaker
        // is concerned.
        let app_failed = matches!(
            outcome,
            Forwarded::Failed(
                UpstreamFailure::Connect | UpstreamFailure::Timeout | UpstreamFailure::Status5xx,
                _
            )
        );
        if let Some((from, to)) = shared.circuit.record(circuit_cfg, permit, !app_failed) {
            tracing::warn!(
                category = Category::SystemError.as_str(),
                request_id = ctx.id(),
                from = from.as_str(),
                to = to.as_str(),
                "upstream circuit changed state"
            );
        }
        let again = match (&outcome, retry) {
            (Forwarded::Failed(UpstreamFailure::Connect, _), Some(r)) => r.on_connect,
            (Forwarded::Failed(_, Some(resp)), Some(r)) | (Forwarded::Response(resp), Some(r)) => {
                r.statuses.contains(resp.status().as_u16())
            }
            _ => false,
        };
        let attempts_left = retry.is_some_and(|r| ctx.attempts <= r.attempts);
        if again && attempts_left && runtime.retry_budget.withdraw() {
            shared.metrics.retries.get_or_create(&label()).inc();
            continue;
        }
        return Ok(outcome);
    }
}
