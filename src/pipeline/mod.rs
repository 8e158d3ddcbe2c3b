//! One request's way through sitegate (DESIGN §3), as named phases in order; each is a
//! function below (or in the module it names), and `proxy` calls them top to bottom:
//!
//! ```text
//! framing ─ admit (inflight) ─ preflight (CORS, answered here) ─ route (canonicalize)
//!   ─ access (Origin, credentials: guard/access.rs) ─ rate_limit ─ shed ─ limits (head)
//!   ─ prepare_request_headers (DESIGN §4)
//!   ─ read_and_validate (read.rs: bounded, budgeted, decoded; validate + sanitize, batch)
//!   ─ model_lock (model_lock.rs) ─ forward_or_fall_back (forward.rs: breaker, timeout,
//!     classification, retries; then the route's fallback)
//!      ├─ app answered: respond (hop-by-hop stripped, request id; redact.rs) ─┐
//!      ├─ fallback: the route's body ──────────────────────────────────────────┤
//!      └─ refused or failed: the one error renderer (Ctx::fail) ──────────────┤
//!                              log (access line + metrics, when the body ends) ─┘
//! ```
//!
//! Each request takes one policy snapshot and keeps it to the end, so a reload never
//! changes a request half way. `handle` never fails: every outcome is a response.

mod ctx;
pub mod decide;
mod forward;
mod model_lock;
mod read;
mod redact;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::Arc;

use http::header::{ACCEPT_ENCODING, CONTENT_ENCODING, CONTENT_LENGTH, HOST, HeaderValue};
use http::{Request, Response};
use http_body_util::BodyExt;

use ctx::Ctx;
pub use ctx::Observed;
use forward::{Forwarded, RequestBody};

use crate::body::{AppBody, BoxBody, ClientBody, IdleTimeout};
use crate::error::{ErrorCode, Failure, Rejection};
use crate::guard::limits::{check_framing, check_head};
use crate::guard::{access, shed};
use crate::headers::DROPPED;
use crate::headers::{self, REQUEST_ID};
use crate::observe::metrics::ShedLabels;
use crate::policy::{Policy, Route};
use crate::state::Shared;

/// Handles one client request end to end.
pub async fn handle<B: ClientBody>(
    shared: Arc<Shared>,
    worker: usize,
    req: Request<B>,
    peer: Peer,
) -> Response<Observed> {
    // One snapshot for the whole request: the policy and the runtime built from it.
    let serving = shared.serving.load_full();
    let policy = &*serving.policy;
    // Kept as a header value: it is sent twice (upstream and back) and cloning one is
    // a reference count, not a copy.
    let request_id = match req.headers().get(REQUEST_ID) {
        Some(v) if headers::valid_request_id(v).is_some() => v.clone(),
        _ => HeaderValue::from_str(&headers::new_request_id(fastrand::u64(..)))
            .unwrap_or_else(|_| HeaderValue::from_static("req_000000000000")),
    };
    let mut ctx = Box::new(Ctx::new(
        shared,
        serving.runtime.clone(),
        worker,
        request_id,
        &req,
    ));
    ctx.active = Some(peer.activity.begin());
    // Behind a trusted load balancer the client is further down its forwarding chain;
    // everything after this (credentials, rate limit, logs, the app) sees that client.
    let trusted = &policy.server.trusted_proxies;
    let forwarded = if trusted.is_empty() {
        ctx.client = Some(peer.addr.ip().to_canonical());
        Forwarding {
            chain: peer.ip.clone(),
            from_trusted: false,
        }
    } else {
        let found = crate::guard::client::find(trusted, peer.addr.ip(), req.headers());
        ctx.client = Some(found.ip);
        let chain: Vec<String> = found.chain.iter().map(|ip| ip.to_string()).collect();
        Forwarding {
            chain: HeaderValue::from_str(&chain.join(", ")).unwrap_or_else(|_| peer.ip.clone()),
            from_trusted: found.via_trusted,
        }
    };
    // Framing sitegate will not pass on: answered, and the connection closed after the
    // answer, since where the next request starts is what is in doubt.
    let framing = check_framing(req.headers());
    let (parts, body) = req.into_parts();
    let mut body = Some(body);
    let result = match framing.clone().and_then(|()| admit(&ctx, policy)) {
        // The global ceiling, whatever the route's own timeouts.
        Ok(()) => match tokio::time::timeout(
            policy.server.request_timeout,
            proxy(&mut ctx, policy, parts, &mut body, forwarded),
        )
        .await
        {
            Ok(result) => result,
            // Still waiting for the client's body: its delay, not the app's.
            Err(_) if ctx.body_in.as_ref().is_some_and(|s| s.waiting_on_client()) => {
                Err(read::request_timeout())
            }
            Err(_) => Err(Failure::Upstream(crate::error::UpstreamFailure::Timeout)),
        },
        Err(r) if r.code == ErrorCode::ResourceExhausted => {
            ctx.shared
                .metrics
                .shed
                .get_or_create(&ShedLabels { reason: "inflight" })
                .inc();
            Err(r.into())
        }
        Err(r) => Err(r.into()),
    };
    // Answered without forwarding: let the client finish sending so it reads the
    // answer. Not a body whose end is in doubt: that connection is closed instead.
    if let Some(unread) = body
        && framing.is_ok()
    {
        crate::body::discard(unread);
    }
    let close = matches!(&result, Err(f) if f.closes_connection());
    let mut resp = match result {
        Ok(resp) => resp,
        Err(failure) => ctx.fail(&failure),
    };
    if close {
        resp.headers_mut()
            .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    }
    if let Some(origin) = ctx.cors_origin.clone() {
        if origin == "*" {
            // Credentials are never shared with any Origin at all.
            resp.headers_mut()
                .remove(http::header::ACCESS_CONTROL_ALLOW_CREDENTIALS);
        }
        resp.headers_mut()
            .insert(http::header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        resp.headers_mut()
            .append(http::header::VARY, HeaderValue::from_static("Origin"));
    }
    ctx.status = resp.status().as_u16();
    resp.map(|inner| Observed::new(inner, ctx))
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

/// The phases of one admitted request, in order (DESIGN §3).
async fn proxy<B: ClientBody>(
    ctx: &mut Ctx,
    policy: &Policy,
    mut parts: http::request::Parts,
    body: &mut Option<B>,
    forwarded: Forwarding,
) -> Result<Response<BoxBody>, Failure> {
    if let Some(answer) = preflight(ctx, policy, &parts)? {
        return Ok(answer);
    }
    let route = route(ctx, policy, &mut parts)?;
    access(ctx, policy, route, &mut parts)?;
    rate_limit(ctx)?;
    shed(ctx, policy, route)?;
    check_head(route, &parts.headers)?;
    let incoming = body
        .take()
        .ok_or(Failure::Internal("the request body was taken twice"))?;
    prepare_request_headers(&mut parts, &ctx.request_id, forwarded, route);
    let body = read_and_validate(ctx, policy, route, &mut parts, incoming).await?;
    model_lock(ctx, policy, route, &mut parts, &body)?;
    let resp = match forward_or_fall_back(ctx, policy, route, parts, body).await? {
        Answer::App(resp) => resp,
        Answer::Fallback(resp) => return Ok(resp),
    };
    respond(ctx, policy, route, resp).await
}

/// preflight: a CORS preflight is answered here when sitegate owns the Origin policy,
/// and never forwarded.
fn preflight(
    ctx: &Ctx,
    policy: &Policy,
    parts: &http::request::Parts,
) -> Result<Option<Response<BoxBody>>, Failure> {
    if policy.access.allowed_origins.is_none()
        || !access::is_preflight(&parts.method, &parts.headers)
    {
        return Ok(None);
    }
    let access::OriginDecision::Allowed(origin) =
        access::check_origin(&policy.access, &parts.headers)?
    else {
        return Ok(None);
    };
    let mut resp = Response::new(crate::body::full(""));
    *resp.status_mut() = http::StatusCode::NO_CONTENT;
    *resp.headers_mut() = access::preflight_headers(&policy.access, origin);
    resp.headers_mut()
        .insert(REQUEST_ID, ctx.request_id.clone());
    Ok(Some(resp))
}

/// canonicalize, then route: the one form every guard reads and the app receives, and
/// the route it matches.
fn route<'p>(
    ctx: &mut Ctx,
    policy: &'p Policy,
    parts: &mut http::request::Parts,
) -> Result<&'p Route, Failure> {
    let sent = parts.uri.clone();
    ctx.decoded_path = decide::canonicalize(parts)?;
    if parts.uri != sent {
        ctx.uri = parts.uri.clone();
    }
    let path = ctx.decoded_path.as_deref().unwrap_or(parts.uri.path());
    let route = decide::route(policy, &parts.method, path)?;
    ctx.route = route.name.clone();
    ctx.route_index = Some(route.index);
    ctx.slow_after = route.slow_after;
    Ok(route)
}

/// access: Origin and credentials (`guard/access.rs`).
fn access(
    ctx: &mut Ctx,
    policy: &Policy,
    route: &Route,
    parts: &mut http::request::Parts,
) -> Result<(), Failure> {
    let client = ctx
        .client
        .ok_or(Failure::Internal("the client address is not set"))?;
    let admitted = access::admit(
        &policy.access,
        route.auth,
        &parts.headers,
        client,
        &*ctx.runtime.auth_failures,
    )?;
    ctx.cors_origin = admitted.cors_origin;
    if admitted.caller.is_some() {
        ctx.caller = admitted.caller;
        // The app has no use for sitegate's API keys.
        parts.headers.remove(&policy.access.api_key_header);
    }
    Ok(())
}

/// rate_limit: per caller (its key or token id) or, without one, per client address
/// (after `[server] trusted_proxies`).
fn rate_limit(ctx: &Ctx) -> Result<(), Failure> {
    let Some(rl) = &ctx.runtime.rate_limiter else {
        return Ok(());
    };
    let key = match &ctx.caller {
        Some(id) => format!("key:{id}"),
        None => match ctx.client {
            Some(ip) => format!("ip:{ip}"),
            None => return Err(Failure::Internal("the client address is not set")),
        },
    };
    if let Err(not_until) = rl.limiter.check_key(&key) {
        use governor::clock::Clock;
        let wait = not_until.wait_time_from(governor::clock::DefaultClock::default().now());
        return Err(Rejection::new(
            ErrorCode::RateLimited,
            "too many requests from this client; retry shortly",
        )
        .with_retry_after(wait.as_secs().max(1))
        .into());
    }
    Ok(())
}

/// shed: refused while memory or CPU is past the policy's thresholds.
fn shed(ctx: &Ctx, policy: &Policy, route: &Route) -> Result<(), Failure> {
    let sample = ctx.shared.resources.sample();
    if let Err((reason, rejection)) = shed::check(route.shed, sample, &policy.shed) {
        ctx.shared
            .metrics
            .shed
            .get_or_create(&ShedLabels {
                reason: reason.as_str(),
            })
            .inc();
        return Err(rejection.into());
    }
    Ok(())
}

/// read_body, then validate: the whole body, for routes whose guards need it; other
/// bodies stream.
async fn read_and_validate<B: ClientBody>(
    ctx: &mut Ctx,
    policy: &Policy,
    route: &Route,
    parts: &mut http::request::Parts,
    incoming: B,
) -> Result<RequestBody<B>, Failure> {
    let needs_body = route.body.is_some() || route.model.as_ref().is_some_and(|m| m.reads_body());
    if !needs_body || !wants_body(parts) {
        return Ok(RequestBody::Stream(incoming));
    }
    let started = tokio::time::Instant::now();
    let idle = policy.server.client_body_timeout;
    let (mut bytes, permit) = read::read_body(ctx, route, &parts.headers, incoming, idle).await?;
    ctx.read_body_time = Some(started.elapsed());
    let started = tokio::time::Instant::now();
    if route.body.is_some() {
        let accepted = decide::validate(route, bytes);
        ctx.validate_time = Some(started.elapsed());
        let (checked, _, dropped) = accepted?;
        bytes = checked;
        if dropped > 0 {
            parts.headers.insert(DROPPED, HeaderValue::from(dropped));
            ctx.dropped = dropped;
        }
    }
    // The app gets the body as checked: decoded, with its own length.
    parts.headers.remove(CONTENT_ENCODING);
    parts
        .headers
        .insert(CONTENT_LENGTH, HeaderValue::from(bytes.len()));
    Ok(RequestBody::Buffered(bytes, permit))
}

/// model_lock: inference and retraining only as the model table allows
/// (`model_lock.rs`), read from the checked body when the route reads one.
fn model_lock<B>(
    ctx: &mut Ctx,
    policy: &Policy,
    route: &Route,
    parts: &mut http::request::Parts,
    body: &RequestBody<B>,
) -> Result<(), Failure> {
    let Some(model) = &route.model else {
        return Ok(());
    };
    let json = match body {
        RequestBody::Buffered(bytes, _) => decide::model_json(route, Some(bytes)),
        RequestBody::Stream(_) => None,
    };
    model_lock::check(ctx, policy, route, model, parts, json.as_ref())
}

/// What the client is answered with after the upstream call.
enum Answer {
    /// The app's response, to pass on (redacted if the route says so).
    App(Response<AppBody>),
    /// The route's fallback, final as it is.
    Fallback(Response<BoxBody>),
}

/// forward, then fallback: the app's answer, or the route's fallback for the failure.
async fn forward_or_fall_back<B: ClientBody>(
    ctx: &mut Ctx,
    policy: &Policy,
    route: &Route,
    parts: http::request::Parts,
    body: RequestBody<B>,
) -> Result<Answer, Failure> {
    match forward::forward(ctx, policy, route, parts, body).await? {
        Forwarded::Response(resp) => Ok(Answer::App(resp)),
        Forwarded::Failed(failure, resp) => {
            ctx.failure = Some(failure);
            if let Some(fallback) = route.fallback.as_ref().filter(|f| f.covers(failure)) {
                return Ok(Answer::Fallback(ctx.fall_back(fallback, failure)));
            }
            match resp {
                // An app's 5xx without a fallback passes on as the app wrote it.
                Some(resp) => Ok(Answer::App(resp)),
                None => Err(Failure::Upstream(failure)),
            }
        }
    }
}

/// response, then redact: the app's answer made fit to pass on.
async fn respond(
    ctx: &mut Ctx,
    policy: &Policy,
    route: &Route,
    resp: Response<AppBody>,
) -> Result<Response<BoxBody>, Failure> {
    let (mut parts, incoming) = resp.into_parts();
    headers::strip_hop_by_hop(&mut parts.headers);
    parts.headers.insert(REQUEST_ID, ctx.request_id.clone());
    if ctx.dropped > 0 {
        parts
            .headers
            .insert(DROPPED, HeaderValue::from(ctx.dropped));
    }
    // Headers on every answer; a HEAD answer, a 204 and a 304 have no body to scan,
    // and their Content-Length describes the body a GET would get: it passes on as the
    // app sent it.
    if route.redact {
        redact::redact_headers(ctx, policy, &mut parts.headers);
    }
    let bodiless = ctx.method == http::Method::HEAD || matches!(parts.status.as_u16(), 204 | 304);
    if route.redact && !bodiless {
        let started = tokio::time::Instant::now();
        let redacted = redact::redact(ctx, policy, route, parts, incoming).await;
        // Buffered redaction only; a streamed body is redacted while it is sent.
        ctx.redact_time = Some(started.elapsed());
        return redacted;
    }
    let body = IdleTimeout::new(incoming, route.timeout).boxed_unsync();
    Ok(Response::from_parts(parts, body))
}

/// True when the request carries a body to check (a declared or chunked one, or any
/// POST, PUT or PATCH: an empty one of those is checked, and refused, too).
fn wants_body(parts: &http::request::Parts) -> bool {
    use http::Method;
    let declared = crate::headers::content_length(&parts.headers);
    declared.is_some_and(|n| n > 0)
        || parts.headers.contains_key(http::header::TRANSFER_ENCODING)
        || matches!(parts.method, Method::POST | Method::PUT | Method::PATCH)
}

/// Rewrites the request head for the upstream (DESIGN §4).
fn prepare_request_headers(
    parts: &mut http::request::Parts,
    request_id: &HeaderValue,
    forwarded: Forwarding,
    route: &Route,
) {
    let h = &mut parts.headers;
    headers::strip_hop_by_hop(h);
    // The app must be able to trust sitegate's headers: none comes from the client.
    headers::strip_sitegate(h);
    // sitegate already answered any `Expect: 100-continue` by reading the body.
    h.remove(http::header::EXPECT);
    // An HTTP/2 request carries its host in the URI; the app expects a Host header.
    // (Each lookup below hashes the name: one per header, on every request.)
    let host = match h.get(HOST) {
        Some(v) => Some(v.clone()),
        None => {
            let v = parts
                .uri
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok());
            if let Some(v) = &v {
                h.insert(HOST, v.clone());
            }
            v
        }
    };
    if let Some(host) = host {
        h.insert(headers::FORWARDED_HOST, host);
    }
    // Only what sitegate can vouch for (guard/client.rs): the client, then any trusted
    // proxies, then the peer. What an untrusted client wrote itself is dropped, so the
    // app may take the first address as the client's. `Forwarded` likewise: the app
    // gets it only from a trusted proxy, never as the client wrote it.
    h.insert(headers::FORWARDED_FOR, forwarded.chain);
    if !forwarded.from_trusted {
        h.remove(http::header::FORWARDED);
    }
    h.insert(headers::FORWARDED_PROTO, HeaderValue::from_static("http"));
    h.insert(REQUEST_ID, request_id.clone());
    if route.redact {
        // A compressed answer would have to be decoded to be inspected. Set last:
        // nothing the client sent (a `Connection` list naming it) takes it off again.
        h.insert(ACCEPT_ENCODING, HeaderValue::from_static("identity"));
    }
}

/// What the app is told about the way the request came (`X-Forwarded-For`, `Forwarded`).
pub(crate) struct Forwarding {
    /// `X-Forwarded-For`: client first, the peer last.
    chain: HeaderValue,
    /// Whether the peer is a trusted proxy, whose `Forwarded` header is passed on.
    from_trusted: bool,
}

/// The client end of a connection, computed once per connection.
#[derive(Clone)]
pub struct Peer {
    /// The client's address.
    pub addr: SocketAddr,
    /// Its IP as a header value, for `X-Forwarded-For`.
    pub ip: HeaderValue,
    /// What the connection's requests are doing, for its idle deadline.
    pub activity: Arc<Activity>,
}

impl Peer {
    /// The peer of a newly accepted connection.
    pub fn new(addr: SocketAddr) -> Self {
        // A dual-stack socket reports IPv4 clients as `::ffff:a.b.c.d`; the app and the
        // logs get the IPv4 address.
        let ip = HeaderValue::from_str(&addr.ip().to_canonical().to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
        Peer {
            addr,
            ip,
            activity: Arc::new(Activity::new()),
        }
    }
}

/// One connection's requests in flight and when the last one ended: the server closes
/// a connection that has had nothing in flight for its idle deadline, whatever the
/// protocol (hyper enforces `header_read_timeout` on HTTP/1.1 only; an HTTP/2 client
/// that sends its preface, or half a header block, would otherwise hold its place).
#[derive(Debug)]
pub struct Activity {
    start: tokio::time::Instant,
    inflight: std::sync::atomic::AtomicUsize,
    /// Milliseconds from `start` to the end of the last request.
    last_ms: std::sync::atomic::AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Activity {
            start: tokio::time::Instant::now(),
            inflight: Default::default(),
            last_ms: Default::default(),
        }
    }

    /// Marks a request in flight until the returned guard is dropped.
    fn begin(self: &Arc<Self>) -> Active {
        self.inflight
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Active(self.clone())
    }

    /// When the connection becomes idle for `deadline`, or `None` while a request is
    /// in flight.
    pub fn idle_deadline(&self, deadline: std::time::Duration) -> Option<tokio::time::Instant> {
        use std::sync::atomic::Ordering::Relaxed;
        if self.inflight.load(Relaxed) > 0 {
            return None;
        }
        let last = std::time::Duration::from_millis(self.last_ms.load(Relaxed));
        Some(self.start + last + deadline)
    }
}

/// A request in flight on its connection.
pub(crate) struct Active(Arc<Activity>);

impl Drop for Active {
    fn drop(&mut self) {
        use std::sync::atomic::Ordering::Relaxed;
        let ms = self.0.start.elapsed().as_millis();
        self.0
            .last_ms
            .store(u64::try_from(ms).unwrap_or(u64::MAX), Relaxed);
        self.0.inflight.fetch_sub(1, Relaxed);
    }
}
