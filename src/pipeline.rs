//! One request's way through sitegate (DESIGN §3), as named phases in order:
//!
//! ```text
//! admit (inflight) ─ route ─ limits (head) ─ forward (streamed, bounded, timed)
//!    ├─ ok: response, hop-by-hop stripped, request id added, body idle-timed ─┐
//!    └─ failure: the one error renderer ──────────────────────────────────────┤
//!                                  log (access line + metrics, when the body ends) ─┘
//! ```
//!
//! Each request takes one policy snapshot and keeps it to the end, so a reload never
//! changes a request half way. `handle` never fails: every outcome is a response.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{HOST, HeaderValue};
use http::{Method, Request, Response};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::time::Instant;

use crate::body::{self, BodyStats, BoxBody, BoxError, IdleTimeout, Limited};
use crate::error::{ErrorCode, Failure, Rejection, UpstreamFailure, render};
use crate::guard::limits::check_head;
use crate::headers::{self, REQUEST_ID};
use crate::observe::Category;
use crate::observe::metrics::{
    RejectionLabels, RequestLabels, RouteLabel, RouteName, UpstreamFailureLabels, method_label,
    status_class,
};
use crate::policy::Policy;
use crate::state::Shared;

/// Handles one client request end to end.
pub async fn handle(
    shared: Arc<Shared>,
    worker: usize,
    req: Request<Incoming>,
    peer: Peer,
) -> Response<Observed> {
    let policy = shared.policy.load_full();
    // Kept as a header value: it is sent twice (upstream and back) and cloning one is
    // a reference count, not a copy.
    let request_id = match req.headers().get(REQUEST_ID) {
        Some(v) if headers::valid_request_id(v).is_some() => v.clone(),
        _ => HeaderValue::from_str(&headers::new_request_id(fastrand::u64(..)))
            .unwrap_or_else(|_| HeaderValue::from_static("req_000000000000")),
    };
    let mut ctx = Ctx::new(shared, worker, request_id, &req);
    let (parts, body) = req.into_parts();
    let mut body = Some(body);
    let result = match admit(&ctx, &policy) {
        Ok(()) => proxy(&mut ctx, &policy, parts, &mut body, peer).await,
        Err(r) => Err(r.into()),
    };
    // Answered without forwarding: let the client finish sending so it reads the answer.
    if let Some(unread) = body {
        crate::body::discard(unread);
    }
    let resp = match result {
        Ok(resp) => resp,
        Err(failure) => ctx.fail(&failure),
    };
    ctx.status = resp.status().as_u16();
    resp.map(|inner| Observed { inner, ctx })
}

/// admit: the global cap on concurrent requests.
fn admit(ctx: &Ctx, policy: &Policy) -> Result<(), Rejection> {
    if ctx.inflight_at_start > policy.limits.max_inflight {
        return Err(Rejection::new(
            ErrorCode::ResourceExhausted,
            "sitegate is handling as many requests as it may; retry shortly",
        )
        .with_retry_after(1));
    }
    Ok(())
}

async fn proxy(
    ctx: &mut Ctx,
    policy: &Policy,
    mut parts: http::request::Parts,
    body: &mut Option<Incoming>,
    peer: Peer,
) -> Result<Response<BoxBody>, Failure> {
    // route
    let Some(route) = policy.routes.find(&parts.method, parts.uri.path()) else {
        return Err(
            Rejection::new(ErrorCode::NotFound, "no route serves this method and path").into(),
        );
    };
    ctx.route = route.name.clone();
    // limits
    check_head(route, &parts.headers)?;

    // forward
    let Some(incoming) = body.take() else {
        return Err(Failure::Internal);
    };
    prepare_request_headers(&mut parts, &ctx.request_id, &peer);
    let stats = Arc::new(BodyStats::default());
    ctx.body_in = Some(stats.clone());
    let body = Limited::new(incoming, route.max_body, stats.clone()).boxed_unsync();
    let upstream = ctx.shared.upstreams[ctx.worker].load_full();
    let sent = Instant::now();
    let result = upstream
        .send(Request::from_parts(parts, body), route.timeout)
        .await;
    let upstream_time = sent.elapsed();
    ctx.upstream_ms = Some(upstream_time);
    let resp = match result {
        Ok(resp) => resp,
        // The upstream call failed because the body passed the limit while streaming.
        Err(_) if stats.over_limit() => {
            return Err(Rejection::new(
                ErrorCode::PayloadTooLarge,
                format!(
                    "request body is larger than this route's limit of {} bytes",
                    route.max_body
                ),
            )
            .into());
        }
        Err(failure) => {
            ctx.failure = Some(failure);
            return Err(Failure::Upstream(failure));
        }
    };
    ctx.shared
        .metrics
        .upstream_duration
        .get_or_create(&RouteLabel {
            route: RouteName(route.name.clone()),
        })
        .observe(upstream_time.as_secs_f64());
    ctx.upstream_status = Some(resp.status().as_u16());

    // response
    let (mut parts, incoming) = resp.into_parts();
    headers::strip_hop_by_hop(&mut parts.headers);
    parts.headers.insert(REQUEST_ID, ctx.request_id.clone());
    let body = IdleTimeout::new(incoming, route.timeout).boxed_unsync();
    Ok(Response::from_parts(parts, body))
}

/// Rewrites the request head for the upstream (DESIGN §4).
fn prepare_request_headers(
    parts: &mut http::request::Parts,
    request_id: &HeaderValue,
    peer: &Peer,
) {
    let h = &mut parts.headers;
    headers::strip_hop_by_hop(h);
    // sitegate already answered any `Expect: 100-continue` by reading the body.
    h.remove(http::header::EXPECT);
    // An HTTP/2 request carries its host in the URI; the app expects a Host header.
    if !h.contains_key(HOST)
        && let Some(v) = parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    {
        h.insert(HOST, v);
    }
    if let Some(host) = h.get(HOST).cloned() {
        h.insert(headers::FORWARDED_HOST, host);
    }
    let xff = match h.get(headers::FORWARDED_FOR).map(HeaderValue::as_bytes) {
        Some(prev) => {
            let mut v = Vec::with_capacity(prev.len() + 2 + peer.ip.len());
            v.extend_from_slice(prev);
            v.extend_from_slice(b", ");
            v.extend_from_slice(peer.ip.as_bytes());
            HeaderValue::from_bytes(&v).unwrap_or_else(|_| peer.ip.clone())
        }
        None => peer.ip.clone(),
    };
    h.insert(headers::FORWARDED_FOR, xff);
    h.insert(headers::FORWARDED_PROTO, HeaderValue::from_static("http"));
    h.insert(REQUEST_ID, request_id.clone());
}

/// The client end of a connection, computed once per connection.
#[derive(Clone)]
pub struct Peer {
    /// The client's address.
    pub addr: SocketAddr,
    /// Its IP as a header value, for `X-Forwarded-For`.
    pub ip: HeaderValue,
}

impl Peer {
    /// The peer of a newly accepted connection.
    pub fn new(addr: SocketAddr) -> Self {
        let ip = HeaderValue::from_str(&addr.ip().to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
        Peer { addr, ip }
    }
}

/// The per-request context: what the access line and the metrics report. It is moved
/// into the response body and reports when that body ends or is dropped, so the
/// duration and byte counts cover the whole response.
pub(crate) struct Ctx {
    shared: Arc<Shared>,
    worker: usize,
    request_id: HeaderValue,
    method: Method,
    uri: http::Uri,
    route: Arc<str>,
    start: Instant,
    inflight_at_start: usize,
    status: u16,
    error_code: Option<ErrorCode>,
    failure: Option<UpstreamFailure>,
    upstream_status: Option<u16>,
    upstream_ms: Option<std::time::Duration>,
    body_in: Option<Arc<BodyStats>>,
    bytes_out: u64,
    stream_error: bool,
}

impl Ctx {
    fn new(
        shared: Arc<Shared>,
        worker: usize,
        request_id: HeaderValue,
        req: &Request<Incoming>,
    ) -> Self {
        let inflight_at_start = shared.inflight.fetch_add(1, Ordering::Relaxed) + 1;
        shared.metrics.inflight.inc();
        Ctx {
            shared,
            worker,
            request_id,
            method: req.method().clone(),
            uri: req.uri().clone(),
            route: Arc::from(crate::policy::UNMATCHED),
            start: Instant::now(),
            inflight_at_start,
            status: 0,
            error_code: None,
            failure: None,
            upstream_status: None,
            upstream_ms: None,
            body_in: None,
            bytes_out: 0,
            stream_error: false,
        }
    }

    /// The request id as text (it is always ASCII: checked or generated).
    fn id(&self) -> &str {
        self.request_id.to_str().unwrap_or("")
    }

    /// Renders a failure, and counts it.
    fn fail(&mut self, failure: &Failure) -> Response<BoxBody> {
        let code = failure.code();
        self.error_code = Some(code);
        let m = &self.shared.metrics;
        m.rejections
            .get_or_create(&RejectionLabels {
                route: RouteName(self.route.clone()),
                code: code.as_str(),
            })
            .inc();
        if let Failure::Upstream(f) = failure {
            m.upstream_failures
                .get_or_create(&UpstreamFailureLabels {
                    route: RouteName(self.route.clone()),
                    reason: f.as_str(),
                })
                .inc();
            tracing::warn!(
                category = Category::SystemError.as_str(),
                request_id = self.id(),
                route = %self.route,
                reason = f.as_str(),
                "upstream request failed"
            );
        }
        render(failure, self.id()).map(body::full)
    }
}

impl Drop for Ctx {
    fn drop(&mut self) {
        let elapsed = self.start.elapsed();
        let bytes_in = self.body_in.as_ref().map_or(0, |s| s.bytes());
        let m = &self.shared.metrics;
        self.shared.inflight.fetch_sub(1, Ordering::Relaxed);
        m.inflight.dec();
        m.bytes_in.inc_by(bytes_in);
        m.bytes_out.inc_by(self.bytes_out);
        m.requests
            .get_or_create(&RequestLabels {
                route: RouteName(self.route.clone()),
                method: method_label(&self.method),
                status: status_class(self.status),
            })
            .inc();
        m.request_duration
            .get_or_create(&RouteLabel {
                route: RouteName(self.route.clone()),
            })
            .observe(elapsed.as_secs_f64());
        tracing::info!(
            target: "sitegate::access",
            category = Category::Access.as_str(),
            request_id = self.id(),
            route = %self.route,
            method = %self.method,
            // The query string is left out: it may carry credentials.
            path = self.uri.path(),
            status = self.status,
            duration_ms = millis(elapsed),
            bytes_in,
            bytes_out = self.bytes_out,
            upstream_status = self.upstream_status,
            upstream_ms = self.upstream_ms.map(millis),
            error_code = self.error_code.map(ErrorCode::as_str),
            upstream_failure = self.failure.map(UpstreamFailure::as_str),
            incomplete = self.stream_error,
            "request"
        );
    }
}

/// Milliseconds with microsecond precision, for log lines.
fn millis(d: std::time::Duration) -> f64 {
    (d.as_secs_f64() * 1_000_000.0).round() / 1000.0
}

/// The response body as sent to the client: counts bytes and carries the request's
/// context until the body is done.
pub struct Observed {
    inner: BoxBody,
    ctx: Ctx,
}

impl Body for Observed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.ctx.bytes_out += data.len() as u64;
                }
            }
            Poll::Ready(Some(Err(e))) => {
                // The status line is gone already: the response can only be cut short.
                this.ctx.stream_error = true;
                tracing::warn!(
                    category = Category::SystemError.as_str(),
                    request_id = this.ctx.id(),
                    route = %this.ctx.route,
                    error = %e,
                    "response body failed mid-stream; the client sees a truncated response"
                );
            }
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
