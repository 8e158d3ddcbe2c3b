//! Where log lines go: a bounded queue to one writer thread, which writes each line
//! to stdout and, when configured, to a size-rotated file. A slow disk or a blocked
//! stdout never stalls a request: when the queue is full, routine lines (access, info)
//! are dropped and counted; warnings and errors (audit, failures) wait up to a second
//! for room and then go to stderr rather than be lost. Every line is redacted first.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender, SyncSender, channel, sync_channel};
use std::time::Duration;

use file_rotate::compression::Compression;
use file_rotate::suffix::AppendCount;
use file_rotate::{ContentLimit, FileRotate};
use tracing::{Level, Metadata};
use tracing_subscriber::fmt::MakeWriter;

/// Lines the queue holds before routine lines are dropped.
const QUEUE: usize = 64 * 1024;

/// Lines dropped because the queue was full (`sitegate_log_dropped_total`); one
/// counter for the process, registered in every metrics registry.
pub static DROPPED: std::sync::LazyLock<prometheus_client::metrics::counter::Counter> =
    std::sync::LazyLock::new(Default::default);

enum Msg {
    Line(Vec<u8>),
    Flush(SyncSender<()>),
}

pub use crate::policy::FileSettings;

/// The log file could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot write the log file {path}: {source}")]
pub struct FileError {
    path: PathBuf,
    source: std::io::Error,
}

/// The sending side of the queue, cloned into every writer. The queue is std's
/// unbounded channel held to `QUEUE` lines by a counter: a preallocated bounded
/// channel would keep 2 MiB of slots resident from the start.
#[derive(Clone)]
pub struct Sink {
    tx: Sender<Msg>,
    queued: Arc<AtomicUsize>,
}

impl Sink {
    /// Starts the writer thread. Fails when the log file cannot be created or written
    /// (checked here, so `run` refuses to start rather than log into the void).
    pub fn start(file: Option<&FileSettings>) -> Result<Sink, FileError> {
        let file = match file {
            Some(f) => Some(open(f)?),
            None => None,
        };
        let (tx, rx) = channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let counter = queued.clone();
        std::thread::Builder::new()
            .name("sitegate-log".into())
            .spawn(move || write_loop(rx, counter, file))
            .map_err(|source| FileError {
                path: PathBuf::from("(log thread)"),
                source,
            })?;
        Ok(Sink { tx, queued })
    }

    /// Takes a place in the queue, if there is one.
    fn reserve(&self) -> bool {
        if self.queued.fetch_add(1, Ordering::AcqRel) < QUEUE {
            return true;
        }
        self.queued.fetch_sub(1, Ordering::AcqRel);
        false
    }

    /// Queues a line; `important` lines wait for room, the others are dropped.
    fn send(&self, line: Vec<u8>, important: bool) {
        for _ in 0..1000 {
            if self.reserve() {
                if self.tx.send(Msg::Line(line)).is_err() {
                    self.queued.fetch_sub(1, Ordering::AcqRel);
                }
                return;
            }
            if !important {
                DROPPED.inc();
                return;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        // A second without room: stderr, unqueued, rather than losing it.
        let _ = std::io::stderr().write_all(&line);
    }

    /// Waits (up to `within`) until every line queued so far is written.
    pub fn flush(&self, within: Duration) {
        let (tx, rx) = sync_channel(1);
        if self.tx.send(Msg::Flush(tx)).is_ok() {
            let _ = rx.recv_timeout(within);
        }
    }
}

fn open(f: &FileSettings) -> Result<FileRotate<AppendCount>, FileError> {
    let err = |source| FileError {
        path: f.path.clone(),
        source,
    };
    if let Some(dir) = f.path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    // Open once ourselves: FileRotate would otherwise swallow the error.
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&f.path)
        .map_err(err)?;
    Ok(FileRotate::new(
        &f.path,
        AppendCount::new(f.max_files.saturating_sub(1).max(1)),
        ContentLimit::BytesSurpassed(f.max_size.max(1) as usize),
        Compression::None,
        None,
    ))
}

fn write_loop(
    rx: Receiver<Msg>,
    queued: Arc<AtomicUsize>,
    mut file: Option<FileRotate<AppendCount>>,
) {
    // Stdout is locked per line, never for the thread's life: other code (the demo's
    // banner, a panic message) must still be able to print.
    let mut out = std::io::stdout();
    while let Ok(msg) = rx.recv() {
        match msg {
            Msg::Line(line) => {
                queued.fetch_sub(1, Ordering::AcqRel);
                let _ = out.write_all(&line);
                if let Some(f) = file.as_mut()
                    && f.write_all(&line).is_err()
                {
                    let _ = std::io::stderr().write_all(b"sitegate: cannot write the log file\n");
                }
            }
            Msg::Flush(done) => {
                let _ = out.flush();
                if let Some(f) = file.as_mut() {
                    let _ = f.flush();
                }
                let _ = done.send(());
            }
        }
    }
}

/// The writer tracing formats one event into: redacts it, then queues it.
/// tracing-subscriber formats each event whole and writes it with one call, so a
/// secret is never split across two writes.
pub struct LineWriter {
    sink: Sink,
    important: bool,
}

impl Write for LineWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let line = super::redact_line(buf).unwrap_or_else(|| buf.to_vec());
        self.sink.send(line, self.important);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Sink {
    type Writer = LineWriter;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter {
            sink: self.clone(),
            important: true,
        }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Self::Writer {
        LineWriter {
            sink: self.clone(),
            // Warnings and errors carry failures and audit events: never dropped.
            important: *meta.level() <= Level::WARN,
        }
    }
}

/// The files a rotation keeps for `path`, newest first (for tests and ops).
pub fn rotated_files(path: &Path) -> Vec<PathBuf> {
    let mut out = vec![path.to_path_buf()];
    for i in 1.. {
        let p = PathBuf::from(format!("{}.{i}", path.display()));
        if !p.exists() {
            break;
        }
        out.push(p);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_writer_thread_leaves_stdout_usable_for_others() {
        let sink = Sink::start(None).unwrap();
        sink.send(b"{\"line\":1}\n".to_vec(), true);
        sink.flush(Duration::from_secs(2));
        // Another thread printing must not wait for the log thread (the demo prints
        // its banner this way).
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            // The real stdout, not the test harness's capture.
            let _ = std::io::stdout().write_all(b"printed beside the log writer\n");
            let _ = tx.send(());
        });
        assert!(
            rx.recv_timeout(Duration::from_secs(5)).is_ok(),
            "stdout is held by the log thread"
        );
    }
}
