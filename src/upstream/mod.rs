//! The way to the application: a [`Transport`] (each worker's connection pool in a
//! running proxy, an in-memory app in the pipeline's tests) behind an [`Upstream`],
//! which puts the request in origin form and bounds the wait for the answer; a failed
//! call's cause is kept whole in a [`SendError`], whose `classify` is the one place an
//! upstream error becomes an `UpstreamFailure` (or the client's fault).

pub mod circuit;
mod direct;

use std::error::Error as StdError;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, Uri, Version};

use crate::body::{AppBody, BoxBody, BoxError, ClientBodyError};
use crate::error::UpstreamFailure;
use crate::policy::UpstreamSettings;

/// What a [`Transport`] call resolves to.
pub type TransportFuture =
    Pin<Box<dyn Future<Output = Result<Response<AppBody>, BoxError>> + Send + 'static>>;

/// Carries one request to the app and resolves to its response head. An error keeps
/// its cause chain: [`SendError::classify`] reads it to tell a timeout from a refusal,
/// and the app's failure from the client's.
pub trait Transport: Send + Sync + 'static {
    /// Sends `req`, whose URI is in origin form (`/path?query`) and whose version is
    /// HTTP/1.1; the transport knows where the app is.
    fn call(&self, req: Request<BoxBody>) -> TransportFuture;
}

/// Builds the transport for a set of upstream settings: once per worker at start, and
/// again when a reload changes the pool settings.
pub type MakeTransport = Arc<dyn Fn(&UpstreamSettings) -> Arc<dyn Transport> + Send + Sync>;

/// What a running proxy uses: one [`direct::Direct`] pool per worker.
pub fn pooled() -> MakeTransport {
    Arc::new(|settings| Arc::new(direct::Direct::new(settings)))
}

/// The app, as one worker reaches it.
pub struct Upstream {
    transport: Arc<dyn Transport>,
}

impl Upstream {
    /// The upstream of `settings`, reached through `make`'s transport.
    pub fn new(settings: &UpstreamSettings, make: &MakeTransport) -> Self {
        Upstream {
            transport: make(settings),
        }
    }

    /// Sends `req` and waits at most `timeout` for the response head.
    pub async fn send(
        &self,
        mut req: Request<BoxBody>,
        timeout: Duration,
    ) -> Result<Response<AppBody>, SendError> {
        // The request line carries the path and query only (an HTTP/2 request's URI
        // also holds its scheme and authority, which the Host header carries).
        if req.uri().scheme().is_some() || req.uri().path_and_query().is_none() {
            let path = req
                .uri()
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
            *req.uri_mut() = Uri::from(path);
        }
        // The app speaks HTTP/1.1 whatever the client spoke to sitegate.
        *req.version_mut() = Version::HTTP_11;
        match tokio::time::timeout(timeout, self.transport.call(req)).await {
            Err(_) => Err(SendError::Timeout(timeout)),
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => Err(SendError::Transport(e)),
        }
    }
}

/// Why a call to the app brought no response head, with its cause kept whole until
/// the pipeline classifies it ([`SendError::classify`]) and logs it.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// No response head within the route's timeout.
    #[error("no response head within {0:?}")]
    Timeout(Duration),
    /// The transport failed: connecting, writing the request (or its body), or
    /// reading the answer.
    #[error("{}", chain(&**.0))]
    Transport(BoxError),
}

/// Whose failure a [`SendError`] is.
#[derive(Debug)]
pub enum Blame<'a> {
    /// The client's body failed while the app was reading it.
    Client(&'a ClientBodyError),
    /// The app (or the way to it).
    App(UpstreamFailure),
}

impl SendError {
    /// The one classification of a failed call. Connect timeouts count as
    /// `timeout`; every other transport error (refused, reset, closed before the
    /// response) as `connect`, unless the client's body is what broke.
    pub fn classify(&self) -> Blame<'_> {
        let err = match self {
            SendError::Timeout(_) => return Blame::App(UpstreamFailure::Timeout),
            SendError::Transport(e) => &**e,
        };
        if let Some(client) = ClientBodyError::find(err) {
            return Blame::Client(client);
        }
        let mut source = Some(err as &(dyn StdError + 'static));
        while let Some(e) = source {
            if let Some(io) = e.downcast_ref::<std::io::Error>()
                && io.kind() == std::io::ErrorKind::TimedOut
            {
                return Blame::App(UpstreamFailure::Timeout);
            }
            source = e.source();
        }
        Blame::App(UpstreamFailure::Connect)
    }
}

/// An error and its causes, as one line: `a: b: c`.
fn chain(err: &(dyn StdError + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        let next = e.to_string();
        // Wrappers often repeat their cause's text.
        if !text.ends_with(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = e.source();
    }
    text
}

/// The circuit breaker shared by every worker. The lock is held for a few
/// instructions and never across an await; while the circuit is closed with no failure
/// counted (the usual case) a flag lets requests pass without taking it.
pub struct Circuit {
    breaker: std::sync::Mutex<circuit::Breaker>,
    clean: std::sync::atomic::AtomicBool,
}

/// Leave to send one request; say how it ended with [`Circuit::record`]. A permit
/// dropped without a record (the client went away) gives up its probe.
pub struct Permit<'a> {
    circuit: &'a Circuit,
    probe: bool,
    recorded: bool,
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if self.probe && !self.recorded {
            self.circuit.with(|b| b.abandon_probe());
        }
    }
}

impl Default for Circuit {
    fn default() -> Self {
        Circuit {
            breaker: std::sync::Mutex::new(circuit::Breaker::new(tokio::time::Instant::now())),
            clean: std::sync::atomic::AtomicBool::new(true),
        }
    }
}

impl Circuit {
    fn with<T>(&self, f: impl FnOnce(&mut circuit::Breaker) -> T) -> T {
        let mut b = match self.breaker.lock() {
            Ok(b) => b,
            Err(poisoned) => poisoned.into_inner(),
        };
        let out = f(&mut b);
        self.clean
            .store(b.is_clean(), std::sync::atomic::Ordering::Release);
        out
    }

    /// A permit to send a request now, or `None` while the circuit is open.
    pub fn admit(&self, cfg: &circuit::CircuitSettings) -> Option<Permit<'_>> {
        let decision = if self.clean.load(std::sync::atomic::Ordering::Acquire) {
            circuit::Admit::Allow
        } else {
            self.with(|b| b.admit(tokio::time::Instant::now(), cfg))
        };
        let probe = match decision {
            circuit::Admit::Allow => false,
            circuit::Admit::Probe => true,
            circuit::Admit::Reject => return None,
        };
        Some(Permit {
            circuit: self,
            probe,
            recorded: false,
        })
    }

    /// Records how a permitted request ended; returns the state before and after when
    /// it changed.
    pub fn record(
        &self,
        cfg: &circuit::CircuitSettings,
        mut permit: Permit<'_>,
        success: bool,
    ) -> Option<(circuit::CircuitState, circuit::CircuitState)> {
        permit.recorded = true;
        if success && !permit.probe && self.clean.load(std::sync::atomic::Ordering::Acquire) {
            return None;
        }
        self.with(|b| {
            let before = b.state();
            b.record(tokio::time::Instant::now(), cfg, permit.probe, success);
            (before != b.state()).then(|| (before, b.state()))
        })
    }

    /// The current state, as `/readyz` and the `sitegate_circuit_state` gauge show it
    /// (half-open once an open circuit's time is up, before any probe).
    pub fn state(&self) -> circuit::CircuitState {
        let now = tokio::time::Instant::now();
        self.with(|b| b.state_at(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error that wraps another, as hyper's client errors do.
    #[derive(Debug, thiserror::Error)]
    #[error("client error (SendRequest)")]
    struct Wrapper(#[source] BoxError);

    fn transport(e: impl StdError + Send + Sync + 'static) -> SendError {
        SendError::Transport(Box::new(Wrapper(Box::new(e))))
    }

    #[test]
    fn a_send_error_is_blamed_on_whoever_caused_it_and_keeps_its_text() {
        let refused = transport(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(matches!(
            refused.classify(),
            Blame::App(UpstreamFailure::Connect)
        ));
        assert!(
            refused
                .to_string()
                .starts_with("client error (SendRequest): "),
            "{refused}"
        );
        let slow = transport(std::io::Error::from(std::io::ErrorKind::TimedOut));
        assert!(matches!(
            slow.classify(),
            Blame::App(UpstreamFailure::Timeout)
        ));
        let head = SendError::Timeout(Duration::from_secs(2));
        assert!(matches!(
            head.classify(),
            Blame::App(UpstreamFailure::Timeout)
        ));
        // The client's body broke while the app read it: the client's fault, however
        // deep in the chain it sits.
        let big = transport(Wrapper(Box::new(ClientBodyError::TooLarge(10))));
        assert!(matches!(
            big.classify(),
            Blame::Client(ClientBodyError::TooLarge(10))
        ));
        assert!(big.to_string().ends_with("larger than 10 bytes"), "{big}");
    }
}
