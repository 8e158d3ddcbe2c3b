//! The subcommands. Thin: each loads what it needs, calls the library, and maps the
//! result to an exit status; `anyhow` is allowed here and in `main.rs` only.

pub mod check;
pub mod demo;
pub mod health;
pub mod redact;
pub mod run;
pub mod try_route;
pub mod verify;

use std::path::Path;

use crate::config::Diagnostics;

/// Prints policy problems the way `check` does, one `file:line:col: message` a line.
pub(crate) fn print_diagnostics(main: &Path, diags: &Diagnostics) {
    for d in &diags.0 {
        eprintln!("{d}");
    }
    let n = diags.0.len();
    eprintln!(
        "{}: policy is invalid ({n} problem{})",
        main.display(),
        if n == 1 { "" } else { "s" }
    );
}

/// A future that ends on SIGTERM or SIGINT (Ctrl-C). The handlers are installed when
/// this is called, not when the future is first polled: call it before starting to
/// serve, so an early SIGTERM drains instead of killing the process.
pub(crate) fn termination() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let term = signal(SignalKind::terminate()).ok();
        let int = signal(SignalKind::interrupt()).ok();
        async move {
            let wait = |s: Option<tokio::signal::unix::Signal>| async move {
                match s {
                    Some(mut s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = wait(term) => {}
                _ = wait(int) => {}
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
