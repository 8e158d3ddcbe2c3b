//! Logs and metrics. Log lines are JSON objects (or terminal lines) written through one
//! non-blocking writer, so a slow stdout never stalls a request; the level filter can
//! be changed by a reload. Every line, whichever crate wrote it, passes the redaction
//! engine on its way to that writer.

pub mod metrics;

use std::io::Write;
use std::sync::Arc;

use tracing_appender::non_blocking::NonBlocking;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, reload};

use crate::policy::{LogFormat, LoggingSettings};
use crate::redact::Redactor;

/// The `category` field of a log line (DESIGN §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Category {
    /// One line per request.
    Access,
    /// A 4xx sitegate produced.
    UserError,
    /// Upstream or infrastructure trouble.
    SystemError,
    /// Model policy or inference failures.
    AiError,
    /// Security-relevant events.
    Audit,
    /// Slow requests.
    Perf,
    /// Policy loads and reloads.
    Config,
}

impl Category {
    /// The stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Access => "access",
            Category::UserError => "user_error",
            Category::SystemError => "system_error",
            Category::AiError => "ai_error",
            Category::Audit => "audit",
            Category::Perf => "perf",
            Category::Config => "config",
        }
    }
}

/// The engine every log line passes; the policy's once one is loaded.
static LOG_REDACTOR: arc_swap::ArcSwapOption<Redactor> = arc_swap::ArcSwapOption::const_empty();

/// Makes log lines pass `redactor` from now on (called on load and on every reload).
pub fn set_log_redactor(redactor: Arc<Redactor>) {
    LOG_REDACTOR.store(Some(redactor));
}

/// Redacts `line` with the current log engine (the built-ins before a policy loads).
pub fn redact_line(line: &[u8]) -> Option<Vec<u8>> {
    let current = LOG_REDACTOR.load();
    let redactor = match current.as_ref() {
        Some(r) => r.clone(),
        None => crate::redact::default_redactor(),
    };
    redactor.redact(line).map(|(out, _)| out)
}

/// The writer tracing formats into: redacts, then queues for the writer thread.
/// tracing-subscriber formats each event whole and writes it with one call, so a
/// secret is never split across two writes.
pub struct RedactingWriter<W>(W);

impl<W: Write> Write for RedactingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match redact_line(buf) {
            Some(clean) => self.0.write_all(&clean)?,
            None => self.0.write_all(buf)?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// Makes [`RedactingWriter`]s over the non-blocking writer.
#[derive(Clone)]
pub struct RedactingMakeWriter(NonBlocking);

impl<'a> MakeWriter<'a> for RedactingMakeWriter {
    type Writer = RedactingWriter<NonBlocking>;

    fn make_writer(&'a self) -> Self::Writer {
        RedactingWriter(self.0.clone())
    }
}

/// Keeps the log writer alive: dropping it flushes what is queued.
pub struct LogGuard {
    _worker: tracing_appender::non_blocking::WorkerGuard,
    filter: reload::Handle<EnvFilter, Registry>,
}

impl LogGuard {
    /// A function that applies a new level filter (already checked by
    /// `config::compile`), for the reloader.
    pub fn level_setter(&self) -> crate::state::LevelSetter {
        let handle = self.filter.clone();
        Box::new(move |level| {
            if let Ok(filter) = EnvFilter::try_new(level) {
                let _ = handle.reload(filter);
            }
        })
    }
}

/// Installs the process-wide logger. Lines are queued (up to 128k) for a writer thread;
/// if the queue is full, lines are dropped rather than blocking a request.
pub fn init(settings: &LoggingSettings) -> anyhow::Result<LogGuard> {
    let (writer, worker) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .buffered_lines_limit(128 * 1024)
        .lossy(true)
        .finish(std::io::stdout());
    let writer = RedactingMakeWriter(writer);
    let (filter, handle) = reload::Layer::new(EnvFilter::try_new(&settings.level)?);
    let registry = tracing_subscriber::registry().with(filter);
    match settings.format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_span_list(false)
                    .with_writer(writer),
            )
            .try_init()?,
        LogFormat::Pretty => registry
            .with(tracing_subscriber::fmt::layer().with_writer(writer))
            .try_init()?,
    }
    Ok(LogGuard {
        _worker: worker,
        filter: handle,
    })
}
