//! `sitegate check`: load and compile the whole policy, like `nginx -t`.

use std::path::Path;
use std::process::ExitCode;

/// Prints every problem as `file:line:col: message` (exit 1), or a one-line summary.
pub fn check(main: &Path) -> ExitCode {
    // Exactly what `run` and a reload admit.
    match crate::audit::admit_file(main, &|v| std::env::var(v).ok()) {
        Ok(policy) => {
            for w in &policy.warnings {
                eprintln!("warning: {w}");
            }
            println!(
                "{}: policy is valid ({} file{}, {} route{}, version {})",
                main.display(),
                policy.files.len(),
                if policy.files.len() == 1 { "" } else { "s" },
                policy.routes.iter().count(),
                if policy.routes.iter().count() == 1 {
                    ""
                } else {
                    "s"
                },
                policy.version
            );
            ExitCode::SUCCESS
        }
        Err(diags) => {
            super::print_diagnostics(main, &diags);
            ExitCode::FAILURE
        }
    }
}
