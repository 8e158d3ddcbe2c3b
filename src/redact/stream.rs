//! Streaming redaction: a body wrapper that redacts as bytes pass, holding back only
//! what a secret could still start in (the engine's `safe` offset), so memory stays
//! bounded for any body size and a secret cut across two chunks is still found.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};

use super::{CONTEXT, Finding, Redactor};
use crate::body::BoxError;

/// The state of one redacted stream.
pub struct Redacting {
    redactor: Arc<Redactor>,
    /// Context bytes (already emitted) followed by pending bytes.
    buf: BytesMut,
    /// Where the pending bytes start in `buf`.
    from: usize,
    /// Secrets found so far (only the count: a long stream may hold millions).
    total: usize,
}

impl Redacting {
    /// A new stream through `redactor`.
    pub fn new(redactor: Arc<Redactor>) -> Self {
        Redacting {
            redactor,
            buf: BytesMut::new(),
            from: 0,
            total: 0,
        }
    }

    /// Feeds `chunk` (or the end, with `eof`); returns the output that is final now
    /// and the secrets replaced in it (ranges relative to this call's buffer).
    pub fn push(&mut self, chunk: &[u8], eof: bool) -> (Bytes, Vec<Finding>) {
        self.buf.extend_from_slice(chunk);
        let (mut found, mut safe) = self.redactor.scan(&self.buf, self.from, eof);
        // Nothing after a secret cut by its window is final: it may be more of it.
        if let Some(i) = found.iter().position(|f| f.cut) {
            safe = found[i].range.end;
            found.truncate(i + 1);
        }
        let out = if found.is_empty() {
            Bytes::copy_from_slice(&self.buf[self.from..safe])
        } else {
            let mut out = Vec::with_capacity(safe - self.from + 64);
            self.redactor
                .apply(&self.buf, self.from, safe, &found, &mut out);
            Bytes::from(out)
        };
        self.total += found.len();
        // Keep a little already-emitted context, drop the rest.
        let drop_to = safe.saturating_sub(CONTEXT);
        let _ = self.buf.split_to(drop_to);
        self.from = safe - drop_to;
        (out, found)
    }

    /// Secrets found so far.
    pub fn total(&self) -> usize {
        self.total
    }

    /// Bytes held back right now.
    pub fn held(&self) -> usize {
        self.buf.len() - self.from
    }
}

/// Called once per secret a stream finds (for metrics).
pub type OnFinding = Box<dyn Fn(&Finding) + Send>;

/// A response body redacted on the way through.
pub struct RedactBody<B> {
    inner: B,
    state: Redacting,
    done: bool,
    /// A secret longer than its window was found: the body ends (with an error) after
    /// the output that holds its replacement.
    cut: bool,
    on_finding: Option<OnFinding>,
}

impl<B> RedactBody<B> {
    /// Wraps `inner`; `on_finding` is called once per secret found (for metrics).
    pub fn new(inner: B, redactor: Arc<Redactor>, on_finding: Option<OnFinding>) -> Self {
        RedactBody {
            inner,
            state: Redacting::new(redactor),
            done: false,
            cut: false,
            on_finding,
        }
    }

    fn push(&mut self, chunk: &[u8], eof: bool) -> Bytes {
        let (out, found) = self.state.push(chunk, eof);
        if let Some(f) = &self.on_finding {
            found.iter().for_each(f);
        }
        // A secret cut by the window may go on past it: what follows is not sent.
        self.cut |= found.iter().any(|f| f.cut);
        out
    }
}

impl<B> Body for RedactBody<B>
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
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            if this.cut {
                this.done = true;
                return Poll::Ready(Some(Err(
                    "a secret longer than its detector's window: the body is cut there".into(),
                )));
            }
            match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        let out = this.push(&data, false);
                        if !out.is_empty() {
                            return Poll::Ready(Some(Ok(Frame::data(out))));
                        }
                    }
                    // Trailers pass after the held-back bytes.
                    Err(frame) => {
                        let out = this.push(&[], true);
                        // A cut found at the end still ends the body with an error
                        // (next poll), so it is not marked done yet.
                        this.done = !this.cut;
                        if out.is_empty() && !this.cut {
                            return Poll::Ready(Some(Ok(frame)));
                        }
                        // The trailers are dropped rather than reordered before data.
                        if !out.is_empty() {
                            return Poll::Ready(Some(Ok(Frame::data(out))));
                        }
                    }
                },
                Some(Err(e)) => return Poll::Ready(Some(Err(e.into()))),
                None => {
                    let out = this.push(&[], true);
                    this.done = !this.cut;
                    if !out.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(out))));
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        // The length changes when a secret is replaced.
        SizeHint::default()
    }
}
