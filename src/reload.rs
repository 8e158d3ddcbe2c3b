//! Hot reload (DESIGN §8). File events in the policy's directories, a slow poll,
//! SIGHUP and `POST /reload` all feed one loop: debounce, re-read every file, compare a
//! content hash, compile, swap. A policy that fails to compile is never swapped in.
//!
//! Directories are watched, not files: an editor's rename-into-place and a Kubernetes
//! ConfigMap's `..data` symlink swap both end a watch on the file itself.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::{mpsc, oneshot, watch};

use crate::config;
use crate::observe::Category;
use crate::observe::metrics::ReloadLabels;
use crate::state::{ReloadOutcome, Runtime, Shared, Snapshot, Trigger};

/// Events closer together than this are one change (an editor's save is several).
const DEBOUNCE: Duration = Duration::from_millis(150);
/// The poll that backs the watcher up on file systems that send no events.
const POLL_EVERY: Duration = Duration::from_secs(2);

/// The directories whose events matter for `files`: each file's directory and, for a
/// symlink, its target's directory.
fn watch_dirs(files: &[PathBuf]) -> BTreeSet<PathBuf> {
    let mut dirs = BTreeSet::new();
    for f in files {
        let parent = |p: &Path| match p.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        dirs.insert(parent(f));
        if let Ok(real) = std::fs::canonicalize(f) {
            dirs.insert(parent(&real));
        }
    }
    dirs
}

struct Watch {
    watcher: Option<RecommendedWatcher>,
    dirs: BTreeSet<PathBuf>,
}

impl Watch {
    fn new(tx: mpsc::Sender<Trigger>) -> Self {
        let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            let relevant = match res {
                // Our own reads must not trigger reloads.
                Ok(ev) => !matches!(
                    ev.kind,
                    EventKind::Access(
                        AccessKind::Open(_)
                            | AccessKind::Read
                            | AccessKind::Close(AccessMode::Read)
                    )
                ),
                Err(_) => true,
            };
            if relevant {
                // A full queue already holds a trigger: nothing is lost.
                let _ = tx.try_send(Trigger::Watch);
            }
        });
        let watcher = match watcher {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(category = Category::Config.as_str(), error = %e,
                    "cannot watch policy files; changes are picked up by the poll and SIGHUP only");
                None
            }
        };
        Watch {
            watcher,
            dirs: BTreeSet::new(),
        }
    }

    fn update(&mut self, files: &[PathBuf]) {
        let Some(w) = self.watcher.as_mut() else {
            return;
        };
        let wanted = watch_dirs(files);
        for gone in self.dirs.difference(&wanted) {
            let _ = w.unwatch(gone);
        }
        for new in wanted.difference(&self.dirs) {
            if let Err(e) = w.watch(new, RecursiveMode::NonRecursive) {
                tracing::warn!(category = Category::Config.as_str(), dir = %new.display(), error = %e,
                    "cannot watch a policy directory; changes there are picked up by the poll");
            }
        }
        self.dirs = wanted;
    }
}

/// Starts the reload loop. The SIGHUP handler is installed before this returns, so a
/// SIGHUP sent once sitegate says it is listening reloads instead of killing it.
pub fn start(
    shared: Arc<Shared>,
    tx: mpsc::Sender<Trigger>,
    rx: mpsc::Receiver<Trigger>,
    shutdown: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let hup = hangup_signal();
    tokio::spawn(run(shared, tx, rx, shutdown, hup))
}

/// The reload loop; runs until shutdown.
async fn run(
    shared: Arc<Shared>,
    tx: mpsc::Sender<Trigger>,
    mut rx: mpsc::Receiver<Trigger>,
    mut shutdown: watch::Receiver<bool>,
    mut hup: Hangup,
) {
    let mut watch = Watch::new(tx);
    watch.update(&shared.policy().files);
    let mut poll = tokio::time::interval(POLL_EVERY);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_failure: Option<Vec<String>> = None;
    loop {
        let first = tokio::select! {
            t = rx.recv() => match t { Some(t) => t, None => return },
            _ = poll.tick() => Trigger::Poll,
            _ = recv_hangup(&mut hup) => Trigger::Signal,
            _ = shutdown.changed() => return,
        };
        let mut waiting: Vec<oneshot::Sender<ReloadOutcome>> = Vec::new();
        let mut explicit = !matches!(first, Trigger::Poll | Trigger::Watch);
        // Debounce: gather what arrives while the writer finishes.
        if !matches!(first, Trigger::Poll) {
            tokio::time::sleep(DEBOUNCE).await;
        }
        if let Trigger::Admin(reply) = first {
            waiting.push(reply);
        }
        while let Ok(t) = rx.try_recv() {
            explicit |= !matches!(t, Trigger::Poll | Trigger::Watch);
            if let Trigger::Admin(reply) = t {
                waiting.push(reply);
            }
        }
        let read = read_settled(&shared.main_path, &shared.policy().version).await;
        let outcome = reload_once(&shared, &mut last_failure, explicit, read);
        if let ReloadOutcome::Applied { .. } = outcome {
            watch.update(&shared.policy().files);
        }
        for reply in waiting {
            let _ = reply.send(outcome.clone());
        }
    }
}

/// How many times the files are re-read, `DEBOUNCE` apart, waiting for them to settle.
const SETTLE_TRIES: usize = 20;

/// The policy files as read once they have stopped changing: two reads `DEBOUNCE`
/// apart must agree (an editor saving in place, or a ConfigMap update, may still be
/// writing them), so a file caught half-written is never applied. `Ok(None)` when they
/// are what is serving already.
async fn read_settled(
    main: &Path,
    serving: &str,
) -> Result<Option<Vec<config::Source>>, Vec<String>> {
    let lines = |d: config::Diagnostics| d.0.iter().map(|d| d.to_string()).collect::<Vec<_>>();
    let fingerprint = |r: &Result<Vec<config::Source>, Vec<String>>| match r {
        Ok(sources) => config::version_of(sources),
        Err(e) => e.join("\n"),
    };
    let mut read = config::read_sources(main).map_err(lines);
    if matches!(&read, Ok(s) if config::version_of(s) == serving) {
        return Ok(None);
    }
    for _ in 0..SETTLE_TRIES {
        tokio::time::sleep(DEBOUNCE).await;
        let again = config::read_sources(main).map_err(lines);
        if fingerprint(&again) == fingerprint(&read) {
            return again.map(Some);
        }
        read = again;
    }
    Err(vec![format!(
        "{}: the policy files kept changing for {:?}; not applied yet (the next change or poll tries again)",
        main.display(),
        DEBOUNCE * SETTLE_TRIES as u32
    )])
}

/// One reload: compare, admit (the same decision as `check` and `run`), swap. A
/// failure already reported with the same errors is not logged or counted again unless
/// someone asked for this reload.
pub(crate) fn reload_once(
    shared: &Shared,
    last_failure: &mut Option<Vec<String>>,
    explicit: bool,
    read: Result<Option<Vec<config::Source>>, Vec<String>>,
) -> ReloadOutcome {
    let serving = shared.serving.load_full();
    let current = &serving.policy;
    let lines = |d: config::Diagnostics| d.0.iter().map(|d| d.to_string()).collect::<Vec<_>>();
    let env = |v: &str| std::env::var(v).ok();
    let compiled = match read {
        Err(e) => Err(e),
        Ok(None) => Ok(None),
        Ok(Some(sources)) if config::version_of(&sources) == current.version => Ok(None),
        Ok(Some(sources)) => crate::audit::admit(&shared.main_path, &sources, &env)
            .map(Some)
            .map_err(lines),
    };
    let outcome = match compiled {
        Ok(None) => {
            *last_failure = None;
            ReloadOutcome::Unchanged
        }
        Ok(Some(mut next)) => {
            *last_failure = None;
            shared.overrides.apply(&mut next);
            let restart_required = current.restart_required(&next);
            let runtime = Runtime::build(
                &next,
                Some((current, &serving.runtime)),
                shared.workers,
                &shared.transport,
                &shared.metrics,
            );
            if next.logging.level != current.logging.level
                && let Some(set) = &shared.set_log_level
            {
                set(&next.logging.level);
            }
            for w in &next.warnings {
                tracing::warn!(category = Category::Config.as_str(), warning = %w, "policy warning");
            }
            for (model, version, was, now) in current.models.lock_changes(&next.models) {
                tracing::warn!(
                    category = Category::Audit.as_str(),
                    model = %model,
                    version = %version,
                    was_locked = ?was,
                    now_locked = ?now,
                    "model lock state changed by a policy reload"
                );
            }
            for setting in &restart_required {
                tracing::warn!(
                    category = Category::Config.as_str(),
                    setting,
                    "this setting changed but takes effect only after a restart"
                );
            }
            tracing::info!(
                category = Category::Config.as_str(),
                old_version = %current.version,
                new_version = %next.version,
                files = next.files.len(),
                "policy reloaded"
            );
            let version = next.version.clone();
            crate::observe::set_log_redactor(next.redaction.redactor.clone());
            // The policy and what it runs with, as one: no request sees one without
            // the other.
            shared.serving.store(Arc::new(Snapshot {
                policy: Arc::new(next),
                runtime: Arc::new(runtime),
            }));
            if let Ok(mut s) = shared.status.lock() {
                s.loaded_at = SystemTime::now();
                s.restart_required = restart_required;
            }
            ReloadOutcome::Applied { version }
        }
        Err(errors) => {
            let repeated = last_failure.as_ref() == Some(&errors);
            *last_failure = Some(errors.clone());
            if repeated && !explicit {
                return ReloadOutcome::Failed { errors };
            }
            tracing::error!(
                category = Category::Config.as_str(),
                errors = %errors.join("; "),
                serving_version = %current.version,
                "policy reload failed; the previous policy keeps serving"
            );
            ReloadOutcome::Failed { errors }
        }
    };
    if outcome != ReloadOutcome::Unchanged || explicit {
        shared
            .metrics
            .reloads
            .get_or_create(&ReloadLabels {
                result: outcome.label(),
            })
            .inc();
        if let Ok(mut s) = shared.status.lock() {
            s.last = Some((SystemTime::now(), outcome.clone()));
        }
    }
    outcome
}

#[cfg(unix)]
type Hangup = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangup = Option<()>;

#[cfg(unix)]
fn hangup_signal() -> Option<tokio::signal::unix::Signal> {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok()
}

#[cfg(unix)]
async fn recv_hangup(sig: &mut Option<tokio::signal::unix::Signal>) {
    match sig {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending().await,
    }
}

#[cfg(not(unix))]
fn hangup_signal() -> Option<()> {
    None
}

#[cfg(not(unix))]
async fn recv_hangup(_: &mut Option<()>) {
    std::future::pending().await
}
