//! Logs and metrics. Log lines are JSON objects (or terminal lines) written through one
//! non-blocking writer, so a slow stdout never stalls a request; the level filter can
//! be changed by a reload. Every line, whichever crate wrote it, passes the redaction
//! engine on its way to that writer.

pub mod metrics;
pub mod resources;
pub mod sink;

use std::sync::Arc;
use std::time::Duration;

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
/// Matching sees what the line quotes decoded: JSON escapes and percent-encoding, so a
/// secret sent as `%41KIA…` in a path is not logged as it came.
pub fn redact_line(line: &[u8]) -> Option<Vec<u8>> {
    let current = LOG_REDACTOR.load();
    let redactor = match current.as_ref() {
        Some(r) => r.clone(),
        None => crate::redact::default_redactor(),
    };
    redactor
        .redact_with(line, crate::redact::unescape::Escapes::URL)
        .map(|(out, _)| out)
}

/// Keeps the log writer alive: dropping it writes out what is queued.
pub struct LogGuard {
    sink: sink::Sink,
    filter: reload::Handle<EnvFilter, Registry>,
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        self.sink.flush(Duration::from_secs(2));
    }
}

impl LogGuard {
    /// A function that applies a new level filter (already checked by
    /// `config::compile`), for the reloader.
    pub fn level_setter(&self) -> LevelSetter {
        let handle = self.filter.clone();
        Box::new(move |level| {
            if let Ok(filter) = EnvFilter::try_new(level) {
                let _ = handle.reload(filter);
            }
        })
    }
}

/// Applies a new log level filter.
pub type LevelSetter = Box<dyn Fn(&str) + Send + Sync>;

/// Installs the process-wide logger (see [`sink`]).
pub fn init(settings: &LoggingSettings) -> anyhow::Result<LogGuard> {
    let sink = sink::Sink::start(settings.file.as_ref())?;
    let writer = sink.clone();
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
        sink,
        filter: handle,
    })
}
