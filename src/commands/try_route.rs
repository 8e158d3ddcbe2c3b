//! `sitegate try --route NAME [FILE]`: run a body through a route's request guards
//! offline, to test a rule change before saving it.

use std::io::Read;
use std::path::Path;
use std::process::ExitCode;

use crate::config;
use crate::guard::validate;

/// Prints the decision, every problem, and the body that would be forwarded.
/// Exit 0 when the body would be forwarded, 1 when it would be refused.
pub fn try_route(main: &Path, route_name: &str, file: Option<&Path>) -> anyhow::Result<ExitCode> {
    let policy = match config::load(main) {
        Ok(p) => p,
        Err(diags) => {
            super::print_diagnostics(main, &diags);
            return Ok(ExitCode::FAILURE);
        }
    };
    let Some(route) = policy.routes.named(route_name) else {
        let names: Vec<String> = policy.routes.iter().map(|r| r.name.to_string()).collect();
        anyhow::bail!(
            "no route named `{route_name}`; the routes are: {}",
            names.join(", ")
        );
    };
    let input: Box<dyn Read> = match file {
        Some(path) => Box::new(
            std::fs::File::open(path)
                .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", path.display()))?,
        ),
        None => Box::new(std::io::stdin().lock()),
    };
    let mut body = Vec::new();
    input.take(route.max_body + 1).read_to_end(&mut body)?;
    if body.len() as u64 > route.max_body {
        println!(
            "REJECTED PAYLOAD_TOO_LARGE (413): the body is larger than the route's limit of {} bytes",
            route.max_body
        );
        return Ok(ExitCode::FAILURE);
    }
    let Some(rules) = &route.body else {
        println!(
            "ALLOWED: route `{route_name}` has no body rules; the body is forwarded unchanged"
        );
        return Ok(ExitCode::SUCCESS);
    };
    match validate::check(&body, rules) {
        Ok(accepted) => {
            let dropped = match accepted.dropped {
                0 => String::new(),
                n => format!(
                    ", {n} invalid record{} dropped",
                    if n == 1 { "" } else { "s" }
                ),
            };
            let changed = if accepted.body.is_some() {
                " (changed by sanitizing)"
            } else {
                ""
            };
            println!("ALLOWED{dropped}; forwarded body{changed}:");
            let out = accepted.body.unwrap_or(body);
            println!("{}", String::from_utf8_lossy(&out));
            Ok(ExitCode::SUCCESS)
        }
        Err(rejection) => {
            println!(
                "REJECTED {} ({}): {}",
                rejection.code.as_str(),
                rejection.code.status().as_u16(),
                rejection.message
            );
            for d in &rejection.details {
                let record = d.record.map_or(String::new(), |r| format!("record {r} "));
                let path = if d.path.is_empty() { "/" } else { &d.path };
                println!("  {record}{path}: {} ({})", d.message, d.rule);
            }
            Ok(ExitCode::FAILURE)
        }
    }
}
