//! `sitegate run`: serve until SIGTERM/SIGINT, then drain and exit 0.

use std::path::Path;
use std::process::ExitCode;

use crate::state::Overrides;
use crate::{config, observe, server};

/// Loads the policy (refusing to start on any problem), serves, drains on a signal.
/// `overrides` are the command line's listen addresses, kept across reloads.
pub async fn run(main: &Path, overrides: Overrides) -> anyhow::Result<ExitCode> {
    let policy = match config::load(main) {
        Ok(p) => p,
        Err(diags) => {
            super::print_diagnostics(main, &diags);
            eprintln!("sitegate: refusing to start with an invalid policy");
            return Ok(ExitCode::FAILURE);
        }
    };
    // The critical readiness checks: the same ones `verify` reports.
    let report = crate::audit::verify(main, &|v| std::env::var(v).ok(), false, true);
    if report.critical_failure() {
        eprint!("{}", crate::audit::render_text(&report));
        eprintln!("sitegate: refusing to start: a critical check failed");
        return Ok(ExitCode::FAILURE);
    }
    let logs = observe::init(&policy.logging)?;
    let stop = super::termination();
    let running = server::start(
        policy,
        server::Options {
            config: main.to_path_buf(),
            overrides,
            set_log_level: Some(logs.level_setter()),
        },
    )
    .await?;
    stop.await;
    running.shutdown();
    running.wait().await;
    tracing::info!(
        category = observe::Category::Config.as_str(),
        "sitegate stopped"
    );
    Ok(ExitCode::SUCCESS)
}
