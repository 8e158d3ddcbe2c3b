//! The subcommands. Thin: each loads what it needs, calls the library, and maps the
//! result to an exit status; `anyhow` is allowed here and in `main.rs` only.

pub mod check;
pub mod demo;
pub mod run;

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

/// Waits for SIGTERM or SIGINT (Ctrl-C).
pub(crate) async fn termination() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
