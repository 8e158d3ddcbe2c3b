//! The pooled HTTP/1.1 client to the application, and the one place where an upstream
//! error is classified into an `UpstreamFailure`.

use std::error::Error as StdError;
use std::time::Duration;

use http::{Request, Response, Uri, Version};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::body::BoxBody;
use crate::error::UpstreamFailure;
use crate::policy::UpstreamSettings;

/// A connection pool to one upstream.
pub struct Upstream {
    client: Client<HttpConnector, BoxBody>,
    authority: http::uri::Authority,
}

impl Upstream {
    /// A pool for `settings`; no connection is opened until the first request.
    pub fn new(settings: &UpstreamSettings) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(settings.connect_timeout));
        connector.set_nodelay(true);
        connector.set_keepalive(Some(Duration::from_secs(60)));
        let client = Client::builder(TokioExecutor::new())
            // Without a timer the pool never evicts idle connections.
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .pool_idle_timeout(settings.pool_idle_timeout)
            .pool_max_idle_per_host(settings.pool_max_idle)
            // A request whose connection closed before it was sent is retried on another;
            // the body has not been read yet, so this is safe for every method.
            .retry_canceled_requests(true)
            .build(connector);
        Upstream {
            client,
            authority: settings.authority.clone(),
        }
    }

    /// Sends `req` (whose URI holds only the path and query) and waits at most
    /// `timeout` for the response head.
    pub async fn send(
        &self,
        mut req: Request<BoxBody>,
        timeout: Duration,
    ) -> Result<Response<Incoming>, UpstreamFailure> {
        let mut parts = std::mem::take(req.uri_mut()).into_parts();
        parts.scheme = Some(http::uri::Scheme::HTTP);
        parts.authority = Some(self.authority.clone());
        if parts.path_and_query.is_none() {
            parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
        }
        *req.uri_mut() = Uri::from_parts(parts).map_err(|_| UpstreamFailure::InvalidResponse)?;
        // The app speaks HTTP/1.1 whatever the client spoke to sitegate.
        *req.version_mut() = Version::HTTP_11;
        match tokio::time::timeout(timeout, self.client.request(req)).await {
            Err(_) => Err(UpstreamFailure::Timeout),
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => Err(classify(&e)),
        }
    }
}

/// Connect timeouts count as `timeout`; every other transport error (refused, reset,
/// closed before the response) as `connect`.
fn classify(err: &(dyn StdError + 'static)) -> UpstreamFailure {
    let mut source = Some(err);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::TimedOut
        {
            return UpstreamFailure::Timeout;
        }
        source = e.source();
    }
    UpstreamFailure::Connect
}
