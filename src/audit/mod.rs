//! `sitegate verify`: the production-readiness checks (DESIGN §9). Each check is pass,
//! warn or fail, some critical; `run` refuses to start on a critical failure. The
//! checks read the environment and the file system, so this is an I/O edge; the
//! environment comes in as a function so tests can give their own.

use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use crate::config::{self, Source, SourceKind};
use crate::policy::Policy;

/// A check's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// All good.
    Pass,
    /// Worth a look; does not block.
    Warn,
    /// Not ready.
    Fail,
}

/// One check.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// Stable name.
    pub name: &'static str,
    /// Outcome.
    pub status: Status,
    /// A failure here stops `run`.
    pub critical: bool,
    /// What was found (never a secret's value).
    pub detail: String,
    /// What to do about it.
    pub remedy: String,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `READY_FOR_PRODUCTION` or `NEEDS_REVIEW`.
    pub status: &'static str,
    /// Every check, in order.
    pub checks: Vec<Check>,
    /// The policy version checked, when it compiled.
    pub policy_version: Option<String>,
}

impl Report {
    /// True when a critical check failed.
    pub fn critical_failure(&self) -> bool {
        self.checks
            .iter()
            .any(|c| c.critical && c.status == Status::Fail)
    }
}

fn check(
    name: &'static str,
    critical: bool,
    problems: Vec<String>,
    ok: &str,
    remedy: &str,
) -> Check {
    Check {
        name,
        status: if problems.is_empty() {
            Status::Pass
        } else {
            Status::Fail
        },
        critical,
        detail: if problems.is_empty() {
            ok.to_string()
        } else {
            problems.join("; ")
        },
        remedy: if problems.is_empty() {
            String::new()
        } else {
            remedy.to_string()
        },
    }
}

const WEAK: &[&str] = &[
    "changeme",
    "change_me",
    "secret",
    "password",
    "passw0rd",
    "dev",
    "development",
    "test",
    "admin",
    "default",
    "12345678",
    "example",
];

fn truthy(v: &str) -> bool {
    matches!(
        v.trim().to_ascii_lowercase().as_str(),
        "1" | "true" | "yes" | "on"
    )
}

/// The one decision whether a policy may serve (DESIGN §10.3): it compiles (which
/// includes every route's credentials being configured) and no critical check fails.
/// `check`, every reload and `run` call this, so they accept and refuse exactly the
/// same policies; `verify` reports the same checks one by one.
pub fn admit(
    main: &Path,
    sources: &[Source],
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Policy, config::Diagnostics> {
    let policy = config::compile(sources)?;
    let problems: Vec<config::Diagnostic> = critical_checks(&policy, sources, env)
        .into_iter()
        .filter(|c| c.status == Status::Fail)
        .map(|c| {
            config::Diagnostic::file(
                main,
                format!("FAIL {} (critical): {}; {}", c.name, c.detail, c.remedy),
            )
        })
        .collect();
    if problems.is_empty() {
        Ok(policy)
    } else {
        Err(config::Diagnostics(problems))
    }
}

/// Reads the policy rooted at `main` and admits it.
pub fn admit_file(
    main: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Policy, config::Diagnostics> {
    admit(main, &config::read_sources(main)?, env)
}

/// The checks beyond compiling that a policy must pass to serve.
fn critical_checks(
    policy: &Policy,
    sources: &[Source],
    env: &dyn Fn(&str) -> Option<String>,
) -> Vec<Check> {
    vec![
        environment(policy, env),
        log_destination(policy),
        plaintext_credentials(policy, sources),
    ]
}

/// Runs every check.
pub fn verify(main: &Path, env: &dyn Fn(&str) -> Option<String>, fix_permissions: bool) -> Report {
    let mut checks = Vec::new();
    let sources = config::read_sources(main);
    let policy = sources
        .as_ref()
        .map_err(Clone::clone)
        .and_then(|s| config::compile(s));
    let (policy, sources) = match (policy, sources) {
        (Ok(p), Ok(s)) => (p, s),
        (Err(d), _) | (_, Err(d)) => {
            let lines: Vec<String> = d.0.iter().take(5).map(|x| x.to_string()).collect();
            checks.push(check(
                "policy compiles",
                true,
                lines,
                "",
                "run `sitegate check` and fix each problem",
            ));
            return finish(checks, None);
        }
    };
    checks.push(check(
        "policy compiles",
        true,
        vec![],
        &format!("{} files", policy.files.len()),
        "",
    ));
    checks.extend(critical_checks(&policy, &sources, env));
    checks.push(permissions(&policy, fix_permissions));
    checks.push(models(&policy));
    checks.push(not_root());
    checks.push(upstream(&policy));
    finish(checks, Some(policy.version))
}

fn finish(checks: Vec<Check>, version: Option<String>) -> Report {
    let ready = checks.iter().all(|c| c.status != Status::Fail);
    Report {
        status: if ready {
            "READY_FOR_PRODUCTION"
        } else {
            "NEEDS_REVIEW"
        },
        checks,
        policy_version: version,
    }
}

fn environment(policy: &Policy, env: &dyn Fn(&str) -> Option<String>) -> Check {
    let a = &policy.audit;
    let mut problems = Vec::new();
    for v in &a.required_env {
        if env(v).is_none_or(|x| x.is_empty()) {
            problems.push(format!("{v} is not set"));
        }
    }
    for v in &a.sensitive_env {
        match env(v) {
            None => problems.push(format!("{v} is not set")),
            Some(x) if x.is_empty() || WEAK.contains(&x.to_ascii_lowercase().as_str()) => {
                problems.push(format!("{v} is empty or a well-known default"));
            }
            Some(_) => {}
        }
    }
    for (v, want) in &a.expect_env {
        if env(v).as_deref() != Some(want.as_str()) {
            problems.push(format!("{v} is not {want}"));
        }
    }
    for v in &a.forbid_truthy_env {
        if env(v).is_some_and(|x| truthy(&x)) {
            problems.push(format!("{v} is on"));
        }
    }
    check(
        "environment",
        true,
        problems,
        "as [audit] expects",
        "set the variables as [audit] says (and never a default or a debug flag in production)",
    )
}

fn log_destination(policy: &Policy) -> Check {
    let mut problems = Vec::new();
    if let Some(f) = &policy.logging.file {
        // What `run` does at start: create the directory, open the file for append.
        let dir_ok = f
            .path
            .parent()
            .is_none_or(|d| d.as_os_str().is_empty() || std::fs::create_dir_all(d).is_ok());
        let writable = dir_ok
            && std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&f.path)
                .is_ok();
        if !writable {
            problems.push(format!("{} cannot be written", f.path.display()));
        }
    }
    check(
        "log destination writable",
        true,
        problems,
        "ok",
        "create the log directory and give sitegate's user write access",
    )
}

/// A credential pasted into a policy file (a fallback body, a header value, a URL)
/// leaks to everyone who can read the policy, its ConfigMap or its backups: critical,
/// as in the suite's own report. A line marked `# sitegate:allow` is an operator's
/// decision and is not reported. Reported as `file:line: detector`, never the value.
fn plaintext_credentials(policy: &Policy, sources: &[Source]) -> Check {
    let mut problems = Vec::new();
    for s in sources
        .iter()
        .filter(|s| s.kind != SourceKind::Env && !policy.secret_files.contains(&s.path))
    {
        for (line, _, detector) in
            crate::redact::locate(&policy.redaction.redactor, s.text.as_bytes())
        {
            problems.push(format!("{}:{line}: {detector}", s.path.display()));
        }
    }
    check(
        "no plaintext credentials in policy files",
        true,
        problems,
        "none found",
        "move each secret out of the policy and reference it with *_env or *_file, or mark a line that is not one with `# sitegate:allow`",
    )
}

fn permissions(policy: &Policy, fix: bool) -> Check {
    use std::os::unix::fs::PermissionsExt;
    let mut problems = Vec::new();
    let mut fixed = Vec::new();
    for (path, want) in &policy.audit.paths {
        let Ok(meta) = std::fs::metadata(path) else {
            problems.push(format!("{} does not exist", path.display()));
            continue;
        };
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o022 != 0 || mode != *want {
            if fix && std::fs::set_permissions(path, std::fs::Permissions::from_mode(*want)).is_ok()
            {
                fixed.push(format!("{}: {mode:o} -> {want:o}", path.display()));
            } else if mode & 0o022 != 0 {
                problems.push(format!(
                    "{} is group- or world-writable ({mode:o}, want {want:o})",
                    path.display()
                ));
            } else {
                problems.push(format!(
                    "{} has mode {mode:o}, want {want:o}",
                    path.display()
                ));
            }
        }
    }
    let mut c = check(
        "permissions",
        false,
        problems,
        "as [audit] paths say",
        "run `sitegate verify --fix-permissions`, or chmod as listed",
    );
    if !fixed.is_empty() && c.status == Status::Pass {
        c.detail = format!("fixed: {}", fixed.join(", "));
    }
    c
}

fn models(policy: &Policy) -> Check {
    let mut problems = Vec::new();
    let has_model_routes = policy.routes.iter().any(|r| r.model.is_some());
    if has_model_routes && policy.models.versions().is_empty() {
        problems.push("routes act on models but no [[model]] is registered".to_string());
    }
    problems.extend(policy.warnings.iter().cloned());
    check(
        "model policy consistent",
        false,
        problems,
        "ok",
        "register the models in models.toml; make the app registry agree",
    )
}

fn not_root() -> Check {
    use std::os::unix::fs::MetadataExt;
    let root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
    Check {
        name: "not running as root",
        status: if root { Status::Warn } else { Status::Pass },
        critical: false,
        detail: if root {
            "running as root".into()
        } else {
            "ok".into()
        },
        remedy: if root {
            "run sitegate as an unprivileged user".into()
        } else {
            String::new()
        },
    }
}

fn upstream(policy: &Policy) -> Check {
    use std::net::ToSocketAddrs;
    let addr = policy.upstream.authority.as_str();
    let reachable = addr
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .is_some_and(|a| std::net::TcpStream::connect_timeout(&a, Duration::from_secs(2)).is_ok());
    let problems = if reachable {
        vec![]
    } else {
        vec![format!("{addr} does not accept connections")]
    };
    check(
        "upstream reachable",
        false,
        problems,
        "ok",
        "start the app, or fix [upstream] url",
    )
}

/// The readable report.
pub fn render_text(report: &Report) -> String {
    let mut out = String::new();
    for c in &report.checks {
        let mark = match c.status {
            Status::Pass => "PASS",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        };
        let crit = if c.critical && c.status == Status::Fail {
            " (critical)"
        } else {
            ""
        };
        out.push_str(&format!("{mark} {}{crit}: {}\n", c.name, c.detail));
        if !c.remedy.is_empty() {
            out.push_str(&format!("     -> {}\n", c.remedy));
        }
    }
    out.push_str(&format!("{}\n", report.status));
    out
}
