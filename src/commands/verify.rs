//! `sitegate verify`: the production-readiness report.

use std::path::Path;
use std::process::ExitCode;

use crate::audit;

/// Prints the report (text or JSON); exit 0 ready, 1 needs review, 2 critical.
pub fn verify(main: &Path, json: bool, fix_permissions: bool) -> ExitCode {
    let report = audit::verify(main, &|v| std::env::var(v).ok(), fix_permissions);
    if json {
        match serde_json::to_string_pretty(&report) {
            Ok(s) => println!("{s}"),
            Err(_) => println!("{{\"status\":\"{}\"}}", report.status),
        }
    } else {
        print!("{}", audit::render_text(&report));
    }
    if report.critical_failure() {
        ExitCode::from(2)
    } else if report.status == "READY_FOR_PRODUCTION" {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
