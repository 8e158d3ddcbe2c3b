//! `sitegate run`: serve until SIGTERM/SIGINT, then drain and exit 0.

use std::path::Path;
use std::process::ExitCode;

use crate::state::Overrides;
use crate::{observe, server};

/// Loads the policy (refusing to start on any problem), serves, drains on a signal.
/// `overrides` are the command line's listen addresses, kept across reloads.
pub async fn run(main: &Path, overrides: Overrides) -> anyhow::Result<ExitCode> {
    // The same admission as `check` and every reload: compiles, and no critical check
    // (the ones `verify` marks critical) fails.
    let policy = match crate::audit::admit_file(main, &|v| std::env::var(v).ok()) {
        Ok(p) => p,
        Err(diags) => {
            super::print_diagnostics(main, &diags);
            eprintln!("sitegate: refusing to start with a policy that may not serve");
            return Ok(ExitCode::FAILURE);
        }
    };
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
    // What `verify` would report beyond the critical checks (permissions, the model
    // table, running as root, the app not answering yet) is logged once, off the
    // request path: it reads files and may wait on a connection.
    let path = main.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let report = crate::audit::verify(&path, &|v| std::env::var(v).ok(), false);
        for c in report
            .checks
            .iter()
            .filter(|c| c.status != crate::audit::Status::Pass)
        {
            tracing::warn!(
                category = observe::Category::Audit.as_str(),
                check = c.name,
                detail = %c.detail,
                remedy = %c.remedy,
                "verify: a check did not pass"
            );
        }
    });
    stop.await;
    running.shutdown();
    running.wait().await;
    tracing::info!(
        category = observe::Category::Config.as_str(),
        "sitegate stopped"
    );
    Ok(ExitCode::SUCCESS)
}
