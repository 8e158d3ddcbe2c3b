//! The `sitegate` binary: parses arguments and runs a command.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "sitegate",
    version,
    about = "A guardrail sidecar proxy for JSON HTTP APIs"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args)]
struct ConfigArg {
    /// The main policy file.
    #[arg(long, env = "SITEGATE_CONFIG", default_value = "config/sitegate.toml")]
    config: PathBuf,
}

#[derive(Subcommand)]
enum Command {
    /// Serve until SIGTERM or SIGINT, then drain and exit.
    Run {
        #[command(flatten)]
        config: ConfigArg,
        /// Listen here instead of the policy's `server.listen` (a container binds
        /// 0.0.0.0 where a host install keeps 127.0.0.1, from the same policy files).
        #[arg(long, env = "SITEGATE_LISTEN")]
        listen: Option<std::net::SocketAddr>,
        /// Serve the admin endpoints here instead of the policy's `server.admin_listen`.
        #[arg(long, env = "SITEGATE_ADMIN_LISTEN")]
        admin_listen: Option<std::net::SocketAddr>,
    },
    /// Probe a running sitegate's /healthz (for container HEALTHCHECKs): exit 0 when
    /// it answers 200, 1 otherwise.
    Health {
        /// The admin address; an unspecified IP (0.0.0.0, [::]) is probed on loopback.
        #[arg(long, env = "SITEGATE_ADMIN_LISTEN", default_value = "127.0.0.1:9901")]
        admin: std::net::SocketAddr,
        /// Give up after this long.
        #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
    },
    /// Load and compile every policy file; print each problem as file:line:col: message.
    Check(ConfigArg),
    /// The proxy on 127.0.0.1:8080 in front of an embedded stand-in app.
    Demo(ConfigArg),
    /// Production-readiness report: READY_FOR_PRODUCTION (0), NEEDS_REVIEW (1), critical (2).
    Verify {
        #[command(flatten)]
        config: ConfigArg,
        /// Print JSON instead of the readable report.
        #[arg(long)]
        json: bool,
        /// Set each [audit] path to its expected mode.
        #[arg(long)]
        fix_permissions: bool,
    },
    /// Run a request body (FILE or stdin) through a route's guards offline.
    Try {
        #[command(flatten)]
        config: ConfigArg,
        /// The route, by name (its path is tried when --path is not given).
        #[arg(long)]
        route: Option<String>,
        /// The request path and query, as a client sends it.
        #[arg(long)]
        path: Option<String>,
        /// The method (default: the route's first, else POST).
        #[arg(long, short = 'X')]
        method: Option<String>,
        /// A request header, `Name: value` (repeatable).
        #[arg(long = "header", short = 'H')]
        headers: Vec<String>,
        /// The body; stdin when absent.
        file: Option<PathBuf>,
    },
    /// Copy FILE (or stdin) to stdout with secrets redacted; findings go to stderr.
    /// With --check, report where secrets are in FILEs and exit 1 if there are any.
    Redact {
        /// The file to clean (stdin when absent); with --check, the files to scan.
        files: Vec<PathBuf>,
        /// Also apply this policy's [redaction] settings (site patterns, replacement).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Print `file:line:col: detector` for each secret (never the secret) and exit
        /// 1 when there is one; a line holding `sitegate:allow` is not reported.
        #[arg(long)]
        check: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match &cli.command {
        Command::Check(args) => return sitegate::commands::check::check(&args.config),
        Command::Health { admin, timeout } => {
            return sitegate::commands::health::health(*admin, *timeout);
        }
        Command::Verify {
            config,
            json,
            fix_permissions,
        } => return sitegate::commands::verify::verify(&config.config, *json, *fix_permissions),
        Command::Try {
            config,
            route,
            path,
            method,
            headers,
            file,
        } => {
            let req = sitegate::commands::try_route::TryRequest {
                route: route.as_deref(),
                path: path.as_deref(),
                method: method.as_deref(),
                headers,
                file: file.as_deref(),
            };
            return match sitegate::commands::try_route::try_route(&config.config, &req) {
                Ok(code) => code,
                Err(e) => {
                    eprintln!("sitegate try: {e:#}");
                    ExitCode::FAILURE
                }
            };
        }
        Command::Redact {
            files,
            config,
            check,
        } => {
            let result = if *check {
                sitegate::commands::redact::check(files, config.as_deref())
            } else if files.len() > 1 {
                Err(anyhow::anyhow!(
                    "give one file to clean (or --check to scan several)"
                ))
            } else {
                sitegate::commands::redact::redact(
                    files.first().map(PathBuf::as_path),
                    config.as_deref(),
                )
            };
            return match result {
                Ok(code) => code,
                Err(e) => {
                    eprintln!("sitegate redact: {e:#}");
                    ExitCode::FAILURE
                }
            };
        }
        _ => {}
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sitegate: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run {
                config,
                listen,
                admin_listen,
            } => {
                let overrides = sitegate::state::Overrides {
                    listen,
                    admin_listen,
                    ..Default::default()
                };
                sitegate::commands::run::run(&config.config, overrides).await
            }
            Command::Demo(args) => sitegate::commands::demo::demo(&args.config).await,
            Command::Check(_)
            | Command::Redact { .. }
            | Command::Try { .. }
            | Command::Health { .. }
            | Command::Verify { .. } => {
                unreachable!("handled above")
            }
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("sitegate: {e:#}");
            ExitCode::FAILURE
        }
    }
}
