//! One worker's HTTP/1.1 connections to the app, over hyper's client connection API.
//!
//! Each worker owns its transport, so the pool needs no pool key to hash and no lock
//! that two threads contend for (the mutex only makes the type `Sync`; its one user
//! takes it for a push or a pop). A connection is taken for one request and given back
//! when that response's body has been read to its end; one whose body was abandoned
//! is closed by hyper and never returns. Idle connections close after
//! `pool_idle_timeout`, past `pool_max_idle` they are not kept, and a request whose
//! pooled connection turned out to be closed before the request was written goes out
//! on another (it never reached the app, so this is safe for every method).

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::time::Instant;

use super::{Transport, TransportFuture};
use crate::body::{AppBodyError, BoxBody, BoxError};
use crate::policy::UpstreamSettings;

/// The transport a running proxy's workers use.
pub(crate) struct Direct {
    pool: Arc<Pool>,
}

struct Pool {
    /// `host:port` to connect to.
    address: String,
    /// The Host header for a request that came without one (an HTTP/1.0 client).
    host: http::HeaderValue,
    connect_timeout: Duration,
    idle_timeout: Duration,
    max_idle: usize,
    /// Idle connections, the most recently used last (it is the likeliest to be open).
    idle: Mutex<Vec<Conn>>,
    /// When this pool was made: connection times are kept as milliseconds since.
    epoch: Instant,
}

/// A pooled connection: the way to send on it, and when it went idle.
struct Conn {
    sender: http1::SendRequest<BoxBody>,
    state: Arc<ConnState>,
}

/// Shared by a pooled connection and the task that drives it.
struct ConnState {
    /// Milliseconds from the pool's epoch to when the connection last went idle;
    /// `IN_USE` while a request has it.
    idle_since: AtomicU64,
}

const IN_USE: u64 = u64::MAX;

/// The transport could not connect.
#[derive(Debug, thiserror::Error)]
#[error("cannot connect to {address}")]
struct ConnectError {
    address: String,
    #[source]
    source: std::io::Error,
}

impl Direct {
    /// A pool for `settings`; no connection is opened until the first request.
    pub(crate) fn new(settings: &UpstreamSettings) -> Self {
        let authority = &settings.authority;
        let address = match authority.port_u16() {
            Some(_) => authority.as_str().to_string(),
            None => format!("{}:80", authority.as_str()),
        };
        let host = http::HeaderValue::from_str(authority.as_str())
            .unwrap_or_else(|_| http::HeaderValue::from_static("localhost"));
        Direct {
            pool: Arc::new(Pool {
                address,
                host,
                connect_timeout: settings.connect_timeout,
                idle_timeout: settings.pool_idle_timeout,
                max_idle: settings.pool_max_idle,
                idle: Mutex::new(Vec::new()),
                epoch: Instant::now(),
            }),
        }
    }
}

impl Transport for Direct {
    fn call(&self, req: Request<BoxBody>) -> TransportFuture {
        let pool = self.pool.clone();
        Box::pin(async move {
            let mut req = req;
            if !req.headers().contains_key(http::header::HOST) {
                req.headers_mut()
                    .insert(http::header::HOST, pool.host.clone());
            }
            loop {
                let (mut conn, reused) = match pool.checkout() {
                    Some(conn) => (conn, true),
                    None => (pool.connect().await?, false),
                };
                // A pooled connection may still be finishing the response before (its
                // last bytes read, not yet marked ready), or may have closed.
                if let Err(e) = conn.sender.ready().await {
                    if reused {
                        continue;
                    }
                    return Err(e.into());
                }
                match conn.sender.try_send_request(req).await {
                    Ok(resp) => {
                        return Ok(resp.map(|body| {
                            Returning {
                                body,
                                conn: Some(conn),
                                pool,
                            }
                            .map_err(|e| AppBodyError(e.into()))
                            .boxed_unsync()
                        }));
                    }
                    Err(mut e) => match e.take_message() {
                        // Closed before the request was written: try another.
                        Some(back) if reused => req = back,
                        _ => return Err(e.into_error().into()),
                    },
                }
            }
        })
    }
}

impl Pool {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(IN_USE - 1)
    }

    /// The idle list (a panic while it was held leaves it as it was: still a list).
    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<Conn>> {
        match self.idle.lock() {
            Ok(idle) => idle,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// The most recently idle connection that is still open.
    fn checkout(&self) -> Option<Conn> {
        let mut idle = self.idle();
        while let Some(conn) = idle.pop() {
            if !conn.sender.is_closed() {
                conn.state.idle_since.store(IN_USE, Ordering::Relaxed);
                return Some(conn);
            }
        }
        None
    }

    /// Gives a connection back, unless the pool holds enough idle ones.
    fn put(&self, conn: Conn) {
        if conn.sender.is_closed() {
            return;
        }
        let mut idle = self.idle();
        if idle.len() < self.max_idle {
            conn.state
                .idle_since
                .store(self.now_ms(), Ordering::Relaxed);
            idle.push(conn);
        }
    }

    /// Opens a connection and starts the task that drives it on this worker.
    async fn connect(self: &Arc<Self>) -> Result<Conn, BoxError> {
        let refused = |source| ConnectError {
            address: self.address.clone(),
            source,
        };
        let stream = match tokio::time::timeout(
            self.connect_timeout,
            tokio::net::TcpStream::connect(&self.address),
        )
        .await
        {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => return Err(refused(e).into()),
            // A connect timeout is a timeout, as far as the fallback is concerned.
            Err(_) => {
                let e = std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out");
                return Err(refused(e).into());
            }
        };
        stream.set_nodelay(true).map_err(refused)?;
        let keepalive = socket2::TcpKeepalive::new().with_time(Duration::from_secs(60));
        socket2::SockRef::from(&stream)
            .set_tcp_keepalive(&keepalive)
            .map_err(refused)?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
        let state = Arc::new(ConnState {
            idle_since: AtomicU64::new(IN_USE),
        });
        tokio::spawn(drive(connection, state.clone(), self.clone()));
        Ok(Conn { sender, state })
    }
}

/// Runs a connection until it closes, or until it has been idle for the pool's idle
/// timeout (dropping it closes the socket). The timer is looked at once per idle
/// timeout, not per request.
async fn drive(
    connection: http1::Connection<TokioIo<tokio::net::TcpStream>, BoxBody>,
    state: Arc<ConnState>,
    pool: Arc<Pool>,
) {
    let idle = pool.idle_timeout;
    let mut connection = std::pin::pin!(connection);
    let timer = tokio::time::sleep(idle);
    let mut timer = std::pin::pin!(timer);
    loop {
        tokio::select! {
            _ = connection.as_mut() => return,
            () = timer.as_mut() => {
                let since = state.idle_since.load(Ordering::Relaxed);
                let next = if since == IN_USE {
                    Instant::now() + idle
                } else {
                    let went_idle = pool.epoch + Duration::from_millis(since);
                    if Instant::now() >= went_idle + idle {
                        return;
                    }
                    went_idle + idle
                };
                timer.as_mut().reset(next);
            }
        }
    }
}

/// The app's response body; gives its connection back to the pool once read to the
/// end.
struct Returning {
    body: Incoming,
    conn: Option<Conn>,
    pool: Arc<Pool>,
}

impl Returning {
    fn give_back(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.pool.put(conn);
        }
    }
}

impl Body for Returning {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.give_back(),
            // hyper closes a connection whose response failed: it is not reused.
            Poll::Ready(Some(Err(_))) => self.conn = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for Returning {
    fn drop(&mut self) {
        // A body with nothing left (a HEAD answer, a 204, an empty one) may be dropped
        // without being polled: its connection is free all the same.
        if self.body.is_end_stream() {
            self.give_back();
        }
    }
}
