//! The per-request context and the response body that carries it to the end.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::HeaderValue;
use http::{Method, Request, Response};
use http_body::{Body, Frame, SizeHint};
use tokio::time::Instant;

use crate::body::{self, BodyStats, BoxBody, BoxError};
use crate::error::{ErrorCode, Failure, UpstreamFailure, render};
use crate::fallback::Fallback;
use crate::observe::Category;
use crate::observe::metrics::{FallbackLabels, NameLabel, RejectionLabels, UpstreamFailureLabels};
use crate::state::{Runtime, Shared};

/// The per-request context: what the access line and the metrics report. It is moved
/// into the response body and reports when that body ends or is dropped, so the
/// duration and byte counts cover the whole response.
pub(crate) struct Ctx {
    pub(super) shared: Arc<Shared>,
    /// The runtime of the request's policy snapshot (pools, limiters, budgets).
    pub(super) runtime: Arc<Runtime>,
    pub(super) worker: usize,
    pub(super) request_id: HeaderValue,
    pub(super) method: Method,
    pub(super) uri: http::Uri,
    /// The connecting client's address, and what it said it is and asked for: for the
    /// access line.
    pub(super) client: Option<std::net::IpAddr>,
    pub(super) user_agent: Option<HeaderValue>,
    pub(super) host: Option<HeaderValue>,
    /// The decoded canonical path, when it differs from the one sent to the app (which
    /// is `uri`'s): what routes and guards read.
    pub(super) decoded_path: Option<Box<str>>,
    pub(super) route: Arc<str>,
    /// The matched route's `Route::index`, once routed.
    pub(super) route_index: Option<usize>,
    pub(super) slow_after: Option<std::time::Duration>,
    pub(super) start: Instant,
    pub(super) inflight_at_start: usize,
    pub(super) status: u16,
    pub(super) error_code: Option<ErrorCode>,
    pub(super) failure: Option<UpstreamFailure>,
    pub(super) upstream_status: Option<u16>,
    pub(super) upstream_ms: Option<std::time::Duration>,
    /// Why the last upstream call failed, its causes in one line.
    pub(super) upstream_cause: Option<String>,
    pub(super) body_in: Option<Arc<BodyStats>>,
    pub(super) bytes_out: u64,
    pub(super) stream_error: bool,
    /// The failure a fallback answered for.
    pub(super) fallback: Option<UpstreamFailure>,
    /// Upstream attempts made (more than 1 after retries).
    pub(super) attempts: u32,
    /// Records dropped from a batch.
    pub(super) dropped: usize,
    /// The caller's API key id, once checked.
    pub(super) caller: Option<Arc<str>>,
    /// The allowed Origin, echoed in `Access-Control-Allow-Origin`.
    pub(super) cors_origin: Option<HeaderValue>,
    /// Phase timings, for the slow-request line.
    pub(super) read_body_time: Option<std::time::Duration>,
    pub(super) validate_time: Option<std::time::Duration>,
    pub(super) redact_time: Option<std::time::Duration>,
    /// Keeps the connection's idle deadline off while the response is under way.
    pub(super) active: Option<super::Active>,
}

impl Ctx {
    pub(super) fn new<B>(
        shared: Arc<Shared>,
        runtime: Arc<Runtime>,
        worker: usize,
        request_id: HeaderValue,
        req: &Request<B>,
    ) -> Self {
        let inflight_at_start = shared.inflight.fetch_add(1, Ordering::Relaxed) + 1;
        // The access line's own fields are copied only when access lines are written
        // (at `warn`, as many run in production, they are not).
        let logged = tracing::enabled!(target: "sitegate::access", tracing::Level::INFO);
        shared.metrics.inflight.inc();
        Ctx {
            shared,
            runtime,
            worker,
            request_id,
            method: req.method().clone(),
            uri: req.uri().clone(),
            client: None,
            user_agent: logged
                .then(|| req.headers().get(http::header::USER_AGENT).cloned())
                .flatten(),
            host: logged
                .then(|| {
                    req.headers().get(http::header::HOST).cloned().or_else(|| {
                        req.uri()
                            .authority()
                            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
                    })
                })
                .flatten(),
            decoded_path: None,
            route: Arc::from(crate::policy::UNMATCHED),
            route_index: None,
            slow_after: None,
            start: Instant::now(),
            inflight_at_start,
            status: 0,
            error_code: None,
            failure: None,
            upstream_status: None,
            upstream_ms: None,
            upstream_cause: None,
            body_in: None,
            bytes_out: 0,
            stream_error: false,
            fallback: None,
            attempts: 0,
            dropped: 0,
            caller: None,
            cors_origin: None,
            read_body_time: None,
            validate_time: None,
            redact_time: None,
            active: None,
        }
    }

    /// Takes `bytes` from the buffer budget for as long as the permit lives; `None`
    /// when the budget cannot spare them now.
    pub(super) fn take_budget(&self, bytes: u64) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let n = u32::try_from(bytes.max(1)).ok()?;
        self.shared
            .buffer_budget
            .clone()
            .try_acquire_many_owned(n)
            .ok()
    }

    /// The access line's category: `user_error` when sitegate refused the request for
    /// something the client did, `system_error` when it answered for a failed upstream
    /// or shed the request to protect itself, else `access`.
    fn category(&self) -> Category {
        match (self.error_code, self.fallback) {
            (_, Some(_)) => Category::SystemError,
            (Some(ErrorCode::ResourceExhausted), None) => Category::SystemError,
            (Some(code), None) if code.status().is_client_error() => Category::UserError,
            (Some(_), None) => Category::SystemError,
            (None, None) => Category::Access,
        }
    }

    /// Waits up to `within` for `bytes` of the buffer budget. Meanwhile the request
    /// body stays unread in the socket, so the client is slowed down, not cut off.
    pub(super) async fn wait_budget(
        &self,
        bytes: u64,
        until: Instant,
    ) -> Option<tokio::sync::OwnedSemaphorePermit> {
        if let Some(p) = self.take_budget(bytes) {
            return Some(p);
        }
        let n = u32::try_from(bytes.max(1)).ok()?;
        // More than the whole budget can never be granted: do not wait for it.
        if u64::from(n) > self.shared.buffer_budget_total {
            return None;
        }
        let wait = self.shared.buffer_budget.clone().acquire_many_owned(n);
        tokio::time::timeout_at(until, wait).await.ok()?.ok()
    }

    /// The request id as text (it is always ASCII: checked or generated).
    pub(super) fn id(&self) -> &str {
        self.request_id.to_str().unwrap_or("")
    }

    /// Answers with a route's fallback for `failure`, and counts and logs it once.
    pub(super) fn fall_back(
        &mut self,
        fallback: &Fallback,
        failure: UpstreamFailure,
    ) -> Response<BoxBody> {
        self.fallback = Some(failure);
        self.shared
            .metrics
            .fallbacks
            .get_or_create(&FallbackLabels {
                route: NameLabel(self.route.clone()),
                reason: failure.as_str(),
            })
            .inc();
        tracing::warn!(
            category = Category::SystemError.as_str(),
            request_id = self.id(),
            route = %self.route,
            reason = failure.as_str(),
            cause = self.upstream_cause.as_deref(),
            "upstream failed; answered with the route's fallback"
        );
        fallback.respond(failure, &self.request_id).map(body::full)
    }

    /// Renders a failure, and counts it.
    pub(super) fn fail(&mut self, failure: &Failure) -> Response<BoxBody> {
        let code = failure.code();
        self.error_code = Some(code);
        let m = &self.shared.metrics;
        m.rejections
            .get_or_create(&RejectionLabels {
                route: NameLabel(self.route.clone()),
                code: code.as_str(),
            })
            .inc();
        if let Failure::Upstream(f) = failure {
            m.upstream_failures
                .get_or_create(&UpstreamFailureLabels {
                    route: NameLabel(self.route.clone()),
                    reason: f.as_str(),
                })
                .inc();
            tracing::warn!(
                category = Category::SystemError.as_str(),
                request_id = self.id(),
                route = %self.route,
                reason = f.as_str(),
                cause = self.upstream_cause.as_deref(),
                "upstream request failed"
            );
        }
        if let Failure::Internal(what) = failure {
            // The client sees only a generic message: the cause is here, once.
            tracing::error!(
                category = Category::SystemError.as_str(),
                request_id = self.id(),
                route = %self.route,
                cause = what,
                "internal error"
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
        let route = self.runtime.route_metrics(self.route_index);
        route.requests(m, &self.method, self.status).inc();
        route.request_duration.observe(elapsed.as_secs_f64());
        if let Some(limit) = self.slow_after.filter(|l| elapsed > *l) {
            tracing::warn!(
                category = Category::Perf.as_str(),
                request_id = self.id(),
                route = %self.route,
                duration_ms = millis(elapsed),
                read_body_ms = self.read_body_time.map(millis),
                validate_ms = self.validate_time.map(millis),
                upstream_ms = self.upstream_ms.map(millis),
                redact_ms = self.redact_time.map(millis),
                slow_after_ms = millis(limit),
                "slow request"
            );
        }
        tracing::info!(
            target: "sitegate::access",
            category = self.category().as_str(),
            request_id = self.id(),
            route = %self.route,
            method = %self.method,
            // The query string is left out: it may carry credentials.
            path = self.uri.path(),
            client = self.client.map(tracing::field::display),
            host = self.host.as_ref().and_then(|h| h.to_str().ok()),
            user_agent = self.user_agent.as_ref().and_then(|h| h.to_str().ok()),
            status = self.status,
            duration_ms = millis(elapsed),
            bytes_in,
            bytes_out = self.bytes_out,
            upstream_status = self.upstream_status,
            upstream_ms = self.upstream_ms.map(millis),
            error_code = self.error_code.map(ErrorCode::as_str),
            upstream_failure = self.failure.map(UpstreamFailure::as_str),
            fallback = self.fallback.map(UpstreamFailure::as_str),
            attempts = self.attempts,
            dropped = self.dropped,
            caller = self.caller.as_deref(),
            incomplete = self.stream_error,
            "request"
        );
    }
}

/// Milliseconds with microsecond precision, for log lines.
pub(super) fn millis(d: std::time::Duration) -> f64 {
    (d.as_secs_f64() * 1_000_000.0).round() / 1000.0
}

/// The response body as sent to the client: counts bytes and carries the request's
/// context until the body is done.
pub struct Observed {
    inner: BoxBody,
    /// Boxed: the response moves through the server's layers by value, and a context
    /// inline would be copied at each (it is a few hundred bytes).
    ctx: Box<Ctx>,
}

impl Observed {
    pub(super) fn new(inner: BoxBody, ctx: Box<Ctx>) -> Self {
        Observed { inner, ctx }
    }
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
