//! Body wrappers for the streaming path: a request body held to its route's limit while
//! it streams, a response body that may not stall longer than the route's timeout, and
//! helpers for bodies sitegate writes itself. Nothing here buffers: each wrapper passes
//! frames through as they come and keeps only counters.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use tokio::time::{Instant, Sleep};

/// The error type of every body sitegate moves.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A body of any origin.
pub type BoxBody = UnsyncBoxBody<Bytes, BoxError>;

/// A client's request body as the pipeline reads it: hyper's `Incoming` in a running
/// proxy, any in-memory body in tests.
pub trait ClientBody: Body<Data = Bytes, Error: Into<BoxError>> + Send + Unpin + 'static {}

impl<B> ClientBody for B
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
}

/// The app's response body, whatever carried it.
pub type AppBody = UnsyncBoxBody<Bytes, AppBodyError>;

/// What failed in an app's response body. A named type rather than a [`BoxError`]:
/// the pipeline's futures must be `Send`, and rustc cannot show that for a future that
/// holds a body whose error is a boxed trait object (the object's lifetime is erased
/// in the future's type, and the `From` that converts it is not general enough).
#[derive(Debug)]
pub struct AppBodyError(pub BoxError);

impl std::fmt::Display for AppBodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for AppBodyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

/// A complete body from bytes.
pub fn full(bytes: impl Into<Bytes>) -> BoxBody {
    http_body_util::Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A content coding sitegate can undo (RFC 9110 §8.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    /// `gzip`, `x-gzip`.
    Gzip,
    /// `deflate`: zlib-wrapped, as HTTP means it.
    Deflate,
}

/// The codings a body carries, in the order they were applied: every
/// `Content-Encoding` field line and every item of their comma lists (`identity` is
/// none). A body with two header lines is encoded twice, so looking at the first alone
/// would pass the second coding's bytes on unread. `Err` names a coding sitegate
/// cannot undo.
pub fn codings(headers: &http::HeaderMap) -> Result<Vec<Coding>, String> {
    let mut out = Vec::new();
    for value in headers.get_all(http::header::CONTENT_ENCODING) {
        for item in value.as_bytes().split(|b| *b == b',') {
            match item.trim_ascii().to_ascii_lowercase().as_slice() {
                b"" | b"identity" => {}
                b"gzip" | b"x-gzip" => out.push(Coding::Gzip),
                b"deflate" => out.push(Coding::Deflate),
                other => return Err(String::from_utf8_lossy(other).into_owned()),
            }
        }
    }
    Ok(out)
}

/// Why an encoded body could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// Not valid data for its coding.
    Corrupt,
    /// It decodes to more than the limit (a compression bomb, or just too large).
    TooLarge,
}

/// Undoes `codings` (the last applied first). Every layer stops reading at `limit`
/// bytes of output, so a bomb costs at most `limit` bytes of memory per layer.
pub fn decode(raw: &[u8], codings: &[Coding], limit: u64) -> Result<Vec<u8>, DecodeError> {
    use std::io::Read;
    let mut body = std::borrow::Cow::Borrowed(raw);
    for coding in codings.iter().rev() {
        let mut out = Vec::new();
        let read = match coding {
            Coding::Gzip => flate2::read::MultiGzDecoder::new(&*body)
                .take(limit + 1)
                .read_to_end(&mut out),
            Coding::Deflate => flate2::read::ZlibDecoder::new(&*body)
                .take(limit + 1)
                .read_to_end(&mut out),
        };
        if read.is_err() {
            return Err(DecodeError::Corrupt);
        }
        if out.len() as u64 > limit {
            return Err(DecodeError::TooLarge);
        }
        body = std::borrow::Cow::Owned(out);
    }
    Ok(body.into_owned())
}

/// What a request body did on its way through: bytes seen, and whether it is waiting
/// on the client. Shared between the body (which writes) and the pipeline (which reads
/// it when a timeout strikes: whose fault it is).
#[derive(Debug, Default)]
pub struct BodyStats {
    bytes: AtomicU64,
    waiting_on_client: AtomicBool,
}

impl BodyStats {
    /// Bytes read from the client so far.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// True while the body is waiting for the client's next bytes (as opposed to
    /// waiting for the app to read them, or being done). A timeout that strikes then
    /// is the client's doing, not the app's.
    pub fn waiting_on_client(&self) -> bool {
        self.waiting_on_client.load(Ordering::Relaxed)
    }
}

/// Why a client's request body could not be read to its end: the error every body
/// from [`from_client`] fails with. It travels inside whatever error carries it (the
/// upstream client's, when the app was reading the body), and is found there again by
/// [`ClientBodyError::find`]: the cause is kept, not noted aside.
#[derive(Debug, thiserror::Error)]
pub enum ClientBodyError {
    /// It grew past the route's `max_body`.
    #[error("request body is larger than {0} bytes")]
    TooLarge(u64),
    /// The client paused longer than `client_body_timeout`.
    #[error("the client paused for more than {0:?} while sending the body")]
    Stalled(Duration),
    /// A malformed chunk, or the client went away mid-body.
    #[error("the request body broke off: {0}")]
    Broken(#[source] BoxError),
}

impl ClientBodyError {
    /// The client body error in `err`'s chain of causes, if there is one.
    pub fn find<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a ClientBodyError> {
        let mut next = Some(err);
        while let Some(e) = next {
            if let Some(found) = e.downcast_ref::<ClientBodyError>() {
                return Some(found);
            }
            next = e.source();
        }
        None
    }
}

/// How long, and how much, of a request body sitegate reads and throws away after it
/// answered without needing the rest. Closing a socket with unread data makes the
/// kernel send a reset, which can destroy the response before the client reads it;
/// nginx's "lingering close" solves the same problem the same way.
const LINGER_TIME: Duration = Duration::from_secs(5);
const LINGER_BYTES: usize = 64 << 20;

/// Discards the rest of a request body in the background, within the linger bounds,
/// so the client gets to read the answer sitegate already sent.
pub fn discard<B>(body: B)
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
{
    if body.is_end_stream() {
        return;
    }
    tokio::spawn(async move {
        let mut body = body;
        let mut seen = 0usize;
        let _ = tokio::time::timeout(LINGER_TIME, async {
            while let Some(Ok(frame)) = body.frame().await {
                seen += frame.data_ref().map_or(0, Bytes::len);
                if seen > LINGER_BYTES {
                    break;
                }
            }
        })
        .await;
    });
}

/// A client's request body as sitegate reads it: held to `limit` bytes, and to at
/// most `idle` between two pieces (`client_body_timeout`). What went wrong, if
/// anything, is recorded in `stats`, so the caller can tell the client's fault (too
/// large, stalled, broken) from the app's.
pub fn from_client<B>(
    body: B,
    limit: u64,
    idle: Duration,
    stats: Arc<BodyStats>,
) -> Limited<IdleTimeout<B>> {
    Limited::new(IdleTimeout::new(body, idle), limit, stats)
}

/// A request body that fails as soon as it passes `limit` bytes, so a chunked upload
/// that is too large is cut off while it streams and the upstream request is aborted.
pub struct Limited<B> {
    /// `None` once the limit was passed and the rest handed to `discard`.
    inner: Option<B>,
    limit: u64,
    stats: Arc<BodyStats>,
}

impl<B> Limited<B> {
    /// Wraps `inner`, counting into `stats`.
    pub fn new(inner: B, limit: u64, stats: Arc<BodyStats>) -> Self {
        Limited {
            inner: Some(inner),
            limit,
            stats,
        }
    }
}

impl<B> Body for Limited<B>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(Some(Err(Box::new(ClientBodyError::TooLarge(this.limit)))));
        };
        let polled = Pin::new(inner).poll_frame(cx);
        this.stats
            .waiting_on_client
            .store(polled.is_pending(), Ordering::Relaxed);
        let frame = match ready!(polled) {
            None => return Poll::Ready(None),
            Some(Err(e)) => {
                let e: BoxError = e.into();
                let e = match e.downcast::<Stalled>() {
                    Ok(stalled) => ClientBodyError::Stalled(stalled.0),
                    Err(e) => ClientBodyError::Broken(e),
                };
                return Poll::Ready(Some(Err(Box::new(e))));
            }
            Some(Ok(frame)) => frame,
        };
        if let Some(data) = frame.data_ref() {
            let total = this
                .stats
                .bytes
                .fetch_add(data.len() as u64, Ordering::Relaxed)
                + data.len() as u64;
            if total > this.limit {
                if let Some(rest) = this.inner.take() {
                    discard(rest);
                }
                return Poll::Ready(Some(Err(Box::new(ClientBodyError::TooLarge(this.limit)))));
            }
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}

/// A body let one frame wait longer than its idle limit: the app's response (the
/// route's timeout), or a client's request body, which [`Limited`] then reports as
/// [`ClientBodyError::Stalled`].
#[derive(Debug, thiserror::Error)]
#[error("body stalled for more than {0:?}")]
pub struct Stalled(pub Duration);

/// A response body whose every frame must arrive within `idle` of the previous one,
/// so an upstream that stops half way cannot hold a client connection forever.
pub struct IdleTimeout<B> {
    inner: B,
    idle: Duration,
    /// Created the first time the body is not ready, so a response that arrives in one
    /// piece (most of them) never touches the timer wheel.
    sleep: Option<Pin<Box<Sleep>>>,
    /// True while `sleep` counts down from the current stall.
    armed: bool,
}

impl<B> IdleTimeout<B> {
    /// Wraps `inner`; each stall may last at most `idle`.
    pub fn new(inner: B, idle: Duration) -> Self {
        IdleTimeout {
            inner,
            idle,
            sleep: None,
            armed: false,
        }
    }
}

impl<B> Body for IdleTimeout<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.armed = false;
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                let deadline = Instant::now() + this.idle;
                let sleep = this
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if !this.armed {
                    sleep.as_mut().reset(deadline);
                    this.armed = true;
                }
                ready!(sleep.as_mut().poll(cx));
                Poll::Ready(Some(Err(Box::new(Stalled(this.idle)))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    use http_body_util::BodyExt;

    /// A body that yields the given chunks, one frame each.
    struct Chunks(VecDeque<&'static [u8]>);

    impl Body for Chunks {
        type Data = Bytes;
        type Error = BoxError;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            Poll::Ready(
                self.0
                    .pop_front()
                    .map(|c| Ok(Frame::data(Bytes::from_static(c)))),
            )
        }
    }

    fn chunks(parts: Vec<&'static [u8]>) -> Chunks {
        Chunks(parts.into())
    }

    #[tokio::test]
    async fn limited_passes_bodies_up_to_the_limit() {
        let stats = Arc::new(BodyStats::default());
        let body = Limited::new(chunks(vec![b"abc", b"def"]), 6, stats.clone());
        let out = body.collect().await.unwrap().to_bytes();
        assert_eq!(&out[..], b"abcdef");
        assert_eq!(stats.bytes(), 6);
    }

    #[tokio::test]
    async fn limited_fails_at_the_chunk_that_passes_the_limit() {
        let stats = Arc::new(BodyStats::default());
        let mut body = Limited::new(
            chunks(vec![b"abc", b"defg", b"never read"]),
            6,
            stats.clone(),
        );
        assert!(body.frame().await.unwrap().is_ok());
        let err = body.frame().await.unwrap().unwrap_err();
        assert!(matches!(
            err.downcast_ref::<ClientBodyError>(),
            Some(ClientBodyError::TooLarge(6))
        ));
        assert_eq!(stats.bytes(), 7);
        // Nothing more is read: the rest is the limit's error again.
        let again = body.frame().await.unwrap().unwrap_err();
        assert!(matches!(
            ClientBodyError::find(&*again),
            Some(ClientBodyError::TooLarge(6))
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn idle_timeout_fires_only_when_the_body_stalls() {
        let (mut tx, rx) = http_body_util::channel::Channel::<Bytes, BoxError>::new(1);
        let mut body = IdleTimeout::new(rx, Duration::from_secs(5));
        tx.send_data(Bytes::from_static(b"x")).await.unwrap();
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert!(body.frame().await.unwrap().is_ok());
        // Four more seconds after the last frame: still within the idle time.
        let waiter = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(4)).await;
            tx.send_data(Bytes::from_static(b"y")).await.unwrap();
            tx
        });
        assert!(body.frame().await.unwrap().is_ok());
        let _tx = waiter.await.unwrap();
        let err = body.frame().await.unwrap().unwrap_err();
        assert!(err.is::<Stalled>());
    }
}
