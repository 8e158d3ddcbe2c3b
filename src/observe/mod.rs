//! Logs and metrics. Log lines are JSON objects (or terminal lines) written through one
//! non-blocking writer, so a slow stdout never stalls a request; the level filter can
//! be changed by a reload.

pub mod metrics;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, reload};

use crate::policy::{LogFormat, LoggingSettings};

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
