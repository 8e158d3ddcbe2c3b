//! The listeners: the proxy (HTTP/1.1 and h2c on one port) and the admin endpoints,
//! the outer tower stack, and the graceful drain on shutdown.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use http::Response;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::{JoinHandle, JoinSet};
use tower_http::catch_panic::CatchPanicLayer;

use crate::error::{Failure, render};
use crate::observe::Category;
use crate::policy::Policy;
use crate::state::{LevelSetter, Overrides, Setup, Shared};
use crate::{admin, headers, pipeline, reload};

/// How to start a proxy.
pub struct Options {
    /// The main policy file, re-read on every reload.
    pub config: PathBuf,
    /// Settings imposed over the files.
    pub overrides: Overrides,
    /// Applies a new log level after a reload (none when logging is not sitegate's).
    pub set_log_level: Option<LevelSetter>,
}

/// A listener could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr}: {source}")]
pub struct BindError {
    /// The address from the policy.
    pub addr: SocketAddr,
    /// Why.
    pub source: std::io::Error,
}

/// A running proxy: its bound addresses, its state, and the threads and tasks it owns.
pub struct Running {
    /// Where the proxy listens (the real port when the policy said 0).
    pub addr: SocketAddr,
    /// Where the admin endpoints listen.
    pub admin_addr: SocketAddr,
    /// The shared state (policy, metrics, ...).
    pub shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    workers: Vec<oneshot::Receiver<()>>,
    others: Vec<JoinHandle<()>>,
}

impl Running {
    /// Starts draining: `/readyz` turns 503, the listener closes, in-flight requests
    /// finish (up to `shutdown_grace`).
    pub fn shutdown(&self) {
        self.shared.draining.store(true, Ordering::SeqCst);
        let _ = self.shutdown.send(true);
    }

    /// Waits for every worker to drain, then stops the admin listener and the reloader.
    pub async fn wait(self) {
        for done in self.workers {
            let _ = done.await;
        }
        for task in self.others {
            task.abort();
        }
    }
}

/// Binds the listeners and starts serving `policy`, loaded from `options.config`.
///
/// The proxy runs thread-per-core: each worker is a thread with its own single-threaded
/// runtime, accepting from the shared listening socket, with its own upstream pool. A
/// request never leaves the thread that accepted its connection, so there are no
/// cross-thread wake-ups on the hot path (nginx's worker model). The admin listener and
/// the reloader run on the caller's runtime.
pub async fn start(mut policy: Policy, options: Options) -> Result<Running, BindError> {
    options.overrides.apply(&mut policy);
    crate::observe::set_log_redactor(policy.redaction.redactor.clone());
    let listener = bind(policy.server.listen)?;
    let admin_listener =
        TcpListener::from_std(bind(policy.server.admin_listen)?).map_err(|source| BindError {
            addr: policy.server.admin_listen,
            source,
        })?;
    let local = |l: &std::net::TcpListener, addr| {
        l.local_addr().map_err(|source| BindError { addr, source })
    };
    let addr = local(&listener, policy.server.listen)?;
    let admin_addr = admin_listener.local_addr().map_err(|source| BindError {
        addr: policy.server.admin_listen,
        source,
    })?;
    let workers = policy
        .server
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));

    let (reload_tx, reload_rx) = mpsc::channel(64);
    let header_read_timeout = policy.server.header_read_timeout;
    let shared = Arc::new(Shared::new(
        policy,
        Setup {
            workers,
            transport: crate::upstream::pooled(),
            reload: reload_tx.clone(),
            main_path: options.config,
            overrides: options.overrides,
            set_log_level: options.set_log_level,
        },
    ));
    let (shutdown, shutdown_rx) = watch::channel(false);
    let connections = Arc::new(tokio::sync::Semaphore::new(
        shared.policy().server.max_connections,
    ));
    let mut done = Vec::with_capacity(workers);
    for worker in 0..workers {
        let listener = listener
            .try_clone()
            .map_err(|source| BindError { addr, source })?;
        let (tx, rx) = oneshot::channel();
        let (shared, shutdown_rx) = (shared.clone(), shutdown_rx.clone());
        let connections = connections.clone();
        std::thread::Builder::new()
            .name(format!("sitegate-worker-{worker}"))
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(rt) => rt.block_on(serve_proxy(
                        listener,
                        shared,
                        worker,
                        shutdown_rx,
                        header_read_timeout,
                        connections,
                    )),
                    Err(e) => tracing::error!(category = Category::SystemError.as_str(), error = %e, "cannot start a worker runtime"),
                }
                let _ = tx.send(());
            })
            .map_err(|source| BindError { addr, source })?;
        done.push(rx);
    }
    let admin = tokio::spawn(admin::serve(admin_listener, shared.clone()));
    let monitor = tokio::spawn(monitor_resources(shared.clone()));
    let reloader = reload::start(shared.clone(), reload_tx, reload_rx, shutdown_rx);
    let policy = shared.policy();
    tracing::info!(
        category = Category::Config.as_str(),
        listen = %addr,
        admin_listen = %admin_addr,
        upstream = %policy.upstream.authority,
        policy_version = %policy.version,
        workers,
        "sitegate listening"
    );
    Ok(Running {
        addr,
        admin_addr,
        shared,
        shutdown,
        workers: done,
        others: vec![admin, reloader, monitor],
    })
}

/// Samples the machine's resources into `shared` until the task is aborted.
async fn monitor_resources(shared: Arc<Shared>) {
    let Some(mut monitor) = crate::observe::resources::Monitor::new() else {
        tracing::warn!(
            category = Category::SystemError.as_str(),
            "cannot read system resources; load shedding by memory and CPU is off"
        );
        return;
    };
    // Whether memory and CPU were above their warning levels at the last reading: a
    // line is written when a level is crossed, not at every reading above it.
    let (mut memory_high, mut cpu_high) = (false, false);
    loop {
        let reading = monitor.read();
        shared.resources.store(reading.sample);
        let settings = shared.policy().shed;
        let crossed = |high: &mut bool, now: f32, level: f32, what: &str| {
            if let Some(above) = crate::guard::shed::crossing(*high, now, level) {
                *high = above;
                if above {
                    tracing::warn!(
                        category = Category::SystemError.as_str(),
                        resource = what,
                        percent = now,
                        warn_above = level,
                        "resource use is above its warning level"
                    );
                } else {
                    tracing::info!(
                        category = Category::SystemError.as_str(),
                        resource = what,
                        percent = now,
                        warn_above = level,
                        "resource use is back below its warning level"
                    );
                }
            }
        };
        crossed(
            &mut memory_high,
            reading.sample.memory_percent,
            settings.warn_memory_percent,
            "memory",
        );
        crossed(
            &mut cpu_high,
            reading.sample.cpu_percent,
            settings.warn_cpu_percent,
            "cpu",
        );
        let m = &shared.metrics;
        m.system_memory_percent
            .set(reading.sample.memory_percent as f64);
        m.system_cpu_percent.set(reading.sample.cpu_percent as f64);
        if let Some((rss, cpu)) = reading.process {
            m.process_rss_bytes
                .set(i64::try_from(rss).unwrap_or(i64::MAX));
            m.process_cpu_percent.set(cpu as f64);
        }
        // Forget clients that have been quiet long enough to have a full bucket.
        let serving = shared.serving.load_full();
        if let Some(rl) = &serving.runtime.rate_limiter {
            rl.limiter.retain_recent();
        }
        let every = settings.sample_every;
        drop(serving);
        tokio::time::sleep(every.max(Duration::from_millis(100))).await;
    }
}

/// A non-blocking listening socket, with `SO_REUSEADDR` so a restart does not wait for
/// old connections in TIME_WAIT (never `SO_REUSEPORT`: a second sitegate on the same
/// port must fail, not silently share it).
fn bind(addr: SocketAddr) -> Result<std::net::TcpListener, BindError> {
    let err = |source| BindError { addr, source };
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )
    .map_err(err)?;
    socket.set_reuse_address(true).map_err(err)?;
    socket.bind(&addr.into()).map_err(err)?;
    socket.listen(1024).map_err(err)?;
    socket.set_nonblocking(true).map_err(err)?;
    Ok(socket.into())
}

/// A panic inside a request becomes a 500 JSON, never a reset connection.
fn on_panic(_: Box<dyn std::any::Any + Send>) -> Response<http_body_util::Full<bytes::Bytes>> {
    let id = headers::new_request_id(fastrand::u64(..));
    tracing::error!(category = Category::SystemError.as_str(), request_id = %id, "request handler panicked");
    render(&Failure::Internal("request handler panicked"), &id).map(http_body_util::Full::new)
}

/// How long a connection told to close gracefully (HTTP/2 GOAWAY) may take before it is
/// dropped, when nothing is in flight on it.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Serves one connection until it ends, closing it gracefully when the server drains or
/// when nothing has been in flight on it for `idle` (the same deadline for HTTP/1.1
/// and HTTP/2; hyper enforces it for HTTP/1.1 only, so a silent or half-open HTTP/2
/// client could otherwise hold a `max_connections` slot for ever).
async fn serve_connection<C>(
    conn: C,
    activity: &pipeline::Activity,
    idle: Duration,
    stop: &mut watch::Receiver<bool>,
) where
    C: std::future::Future + GracefulClose,
{
    let mut conn = std::pin::pin!(conn);
    // Set once the connection was told to close for being idle: dropped at this time
    // if it is still open and idle then.
    let mut close_by: Option<tokio::time::Instant> = None;
    let mut draining = false;
    loop {
        let now = tokio::time::Instant::now();
        let deadline = match (close_by, activity.idle_deadline(idle)) {
            (Some(by), _) => by,
            (None, Some(at)) => at,
            // A request in flight: look again after one more period.
            (None, None) => now + idle,
        };
        tokio::select! {
            _ = conn.as_mut() => return,
            changed = stop.changed(), if !draining => {
                draining = true;
                if changed.is_err() || *stop.borrow() {
                    conn.as_mut().close_gracefully();
                }
            }
            _ = tokio::time::sleep_until(deadline) => {
                let now = tokio::time::Instant::now();
                let idle_now = activity.idle_deadline(idle).is_some_and(|at| at <= now);
                match close_by {
                    // Told to close, nothing in flight, and still open: drop it.
                    Some(by) if by <= now && activity.idle_deadline(idle).is_some() => return,
                    Some(_) => close_by = Some(now + CLOSE_GRACE),
                    None if idle_now => {
                        close_by = Some(now + CLOSE_GRACE);
                        conn.as_mut().close_gracefully();
                    }
                    None => {}
                }
            }
        }
    }
}

/// A connection that can be asked to finish its requests and close.
trait GracefulClose {
    fn close_gracefully(self: std::pin::Pin<&mut Self>);
}

impl<I, S, E, B> GracefulClose for auto::Connection<'_, I, S, E>
where
    S: hyper::service::HttpService<hyper::body::Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::Future: 'static,
    B: http_body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + 'static,
    E: hyper::rt::bounds::Http2ServerConnExec<S::Future, B>,
{
    fn close_gracefully(self: std::pin::Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

/// One worker's accept loop, then its share of the drain.
async fn serve_proxy(
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
    worker: usize,
    mut shutdown: watch::Receiver<bool>,
    header_read_timeout: Duration,
    connections: Arc<tokio::sync::Semaphore>,
) {
    let listener = match TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(category = Category::SystemError.as_str(), error = %e, worker, "cannot register the listener");
            return;
        }
    };
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        // Bounds each connection's read buffer (and so the request head): with many
        // clients uploading at once, hyper's default (~400 KiB each) adds up; 32 KiB is
        // room for any sane request head (nginx allows 4 × 8 KiB).
        .max_buf_size(32 * 1024);
    builder.http2().timer(TokioTimer::new());
    let mut conns = JoinSet::new();
    loop {
        // At max_connections, stop accepting: new clients wait in the listen backlog
        // instead of each costing memory here.
        let permit = tokio::select! {
            p = connections.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = shutdown.changed() => break,
        };
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, addr)) => {
                    let _ = stream.set_nodelay(true);
                    let peer = pipeline::Peer::new(addr);
                    let activity = peer.activity.clone();
                    let shared = shared.clone();
                    let svc = tower::ServiceBuilder::new()
                        .layer(CatchPanicLayer::custom(on_panic))
                        .service_fn(move |req| {
                            let (shared, peer) = (shared.clone(), peer.clone());
                            async move { Ok::<_, Infallible>(pipeline::handle(shared, worker, req, peer).await) }
                        });
                    let builder = builder.clone();
                    let mut stop = shutdown.clone();
                    conns.spawn(async move {
                        // hyper-util's sniffing of the protocol (HTTP/1.1 or h2c) waits for
                        // a connection's first bytes with no deadline: a client that
                        // connects and sends nothing would hold its place forever (and
                        // max_connections of them would lock everyone else out). It gets
                        // header_read_timeout, like a slow request head.
                        // (`peek`, not `readable`: readiness may be reported spuriously.)
                        let mut first = [0u8; 1];
                        let spoke = tokio::select! {
                            r = tokio::time::timeout(header_read_timeout, stream.peek(&mut first)) => matches!(r, Ok(Ok(n)) if n > 0),
                            _ = stop.changed() => false,
                        };
                        if spoke {
                            let conn = builder
                                .serve_connection(TokioIo::new(stream), TowerToHyperService::new(svc));
                            serve_connection(conn, &activity, header_read_timeout, &mut stop).await;
                        }
                        drop(permit);
                    });
                }
                Err(e) => {
                    // Out of file descriptors, most likely: back off instead of spinning.
                    tracing::warn!(category = Category::SystemError.as_str(), error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = shutdown.changed() => break,
        }
        while conns.try_join_next().is_some() {}
    }
    drop(listener);
    let grace = shared.policy().server.shutdown_grace;
    tracing::info!(
        category = Category::Config.as_str(),
        worker,
        connections = conns.len(),
        grace_secs = grace.as_secs_f64(),
        "draining: no new connections; finishing in-flight requests"
    );
    // Each connection saw the shutdown signal and is closing itself gracefully.
    let all_closed = async { while conns.join_next().await.is_some() {} };
    tokio::select! {
        _ = all_closed => {}
        _ = tokio::time::sleep(grace) => {
            tracing::warn!(
                category = Category::Config.as_str(),
                worker,
                connections = conns.len(),
                "shutdown grace ran out; closing the remaining connections"
            );
        }
    }
    conns.abort_all();
}
