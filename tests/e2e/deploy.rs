//! deploy/: the Kubernetes manifests, the container image and the systemd unit, each
//! checked by the tool its platform would use (the Kubernetes schemas, hadolint,
//! systemd-analyze) and against what sitegate makes of the shipped policy, so a port,
//! probe path or policy file renamed on one side fails here and not in a rollout.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::harness::venv;

const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// The virtualenv with kubernetes-validate and hadolint (tests/deploy/requirements.txt).
fn tools() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let python = venv(
            "deploy-venv",
            &Path::new(REPO).join("tests/deploy/requirements.txt"),
        );
        python.parent().unwrap().to_path_buf()
    })
}

/// The shipped policy, compiled by sitegate itself.
fn shipped() -> sitegate::policy::Policy {
    sitegate::config::load(&Path::new(REPO).join("config/sitegate.toml"))
        .unwrap_or_else(|d| panic!("the shipped policy does not compile: {d:?}"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(Path::new(REPO).join(rel)).unwrap()
}

#[test]
fn kubernetes_manifests_are_valid_and_agree_with_the_policy() {
    let policy = shipped();
    let config_dir = Path::new(REPO).join("config").canonicalize().unwrap();
    let files: Vec<String> = policy
        .files
        .iter()
        .map(|f| {
            let f = f.canonicalize().unwrap();
            f.strip_prefix(&config_dir)
                .unwrap_or_else(|_| panic!("{} is outside config/", f.display()))
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    let facts = serde_json::json!({
        "main": "sitegate.toml",
        "files": files,
        "listen_port": policy.server.listen.port(),
        "admin_port": policy.server.admin_listen.port(),
        "shutdown_grace_secs": policy.server.shutdown_grace.as_secs(),
        "buffer_budget": policy.limits.buffer_budget,
    });
    let out = Command::new(tools().join("python"))
        .arg(Path::new(REPO).join("tests/deploy/check_kubernetes.py"))
        .arg(REPO)
        .arg(facts.to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "deploy/kubernetes disagrees with the schemas or the policy:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The Dockerfile's instructions, continuation lines joined, comments dropped.
fn instructions(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || (line.is_empty() && current.is_empty()) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(part) => current.push_str(part),
            None => {
                current.push_str(line);
                if let Some((op, rest)) = current.split_once(char::is_whitespace) {
                    out.push((op.to_uppercase(), rest.trim().to_string()));
                }
                current.clear();
            }
        }
    }
    out
}

#[test]
fn the_dockerfile_passes_hadolint_and_runs_the_policy_as_shipped() {
    let out = Command::new(tools().join("hadolint"))
        .arg(Path::new(REPO).join("deploy/container/Dockerfile"))
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty(),
        "hadolint:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let policy = shipped();
    let steps = instructions(&read("deploy/container/Dockerfile"));
    let all = |op: &str| -> Vec<&str> {
        steps
            .iter()
            .filter(|(o, _)| o == op)
            .map(|(_, a)| a.as_str())
            .collect()
    };
    let froms = all("FROM");
    assert!(froms.len() >= 2, "not multi-stage: {froms:?}");
    assert!(
        froms[0].ends_with(" AS build"),
        "the first stage builds: {froms:?}"
    );
    let runtime = froms.last().unwrap();
    assert!(
        runtime.starts_with("gcr.io/distroless/") || *runtime == "scratch",
        "the runtime image is not minimal: {runtime}"
    );
    assert!(
        all("RUN")
            .iter()
            .any(|r| r.contains("cargo build --release --locked")),
        "no locked release build"
    );
    // Everything after the last FROM is the runtime stage.
    let last_from = steps.iter().rposition(|(o, _)| o == "FROM").unwrap();
    let runtime_steps = &steps[last_from..];
    let user = runtime_steps
        .iter()
        .rev()
        .find(|(o, _)| o == "USER")
        .map(|(_, a)| a.as_str())
        .expect("the runtime stage sets no USER: it would run as root");
    assert!(
        !["root", "0", "0:0"].contains(&user) && !user.starts_with("0:"),
        "USER {user}"
    );
    let env = all("ENV").join(" ");
    let listen = format!("SITEGATE_LISTEN=0.0.0.0:{}", policy.server.listen.port());
    let admin = format!(
        "SITEGATE_ADMIN_LISTEN=0.0.0.0:{}",
        policy.server.admin_listen.port()
    );
    assert!(
        env.contains(&listen) && env.contains(&admin),
        "the image must bind {listen} and {admin}: {env}"
    );
    let exposed: Vec<&str> = all("EXPOSE")
        .iter()
        .flat_map(|e| e.split_whitespace())
        .collect();
    for port in [
        policy.server.listen.port(),
        policy.server.admin_listen.port(),
    ] {
        assert!(
            exposed.contains(&port.to_string().as_str()),
            "port {port} not exposed: {exposed:?}"
        );
    }
    let health = all("HEALTHCHECK").join(" ");
    assert!(
        health.contains(r#"CMD ["/usr/local/bin/sitegate", "health"]"#),
        "HEALTHCHECK does not run `sitegate health`: {health}"
    );

    // What the build stage copies must get through Dockerfile.dockerignore, and the
    // targets Cargo.toml declares (benches) must be among it, or the build fails.
    let ignore = read("deploy/container/Dockerfile.dockerignore");
    let allowed: Vec<&str> = ignore
        .lines()
        .filter_map(|l| l.trim().strip_prefix('!'))
        .map(|l| l.trim_end_matches('/'))
        .collect();
    let mut copied = Vec::new();
    for copy in all("COPY") {
        if copy.starts_with("--from") {
            continue;
        }
        let parts: Vec<&str> = copy.split_whitespace().collect();
        for src in &parts[..parts.len() - 1] {
            let src = src.trim_end_matches('/');
            assert!(
                allowed.contains(&src),
                "COPY {src}, but Dockerfile.dockerignore keeps it out of the context"
            );
            copied.push(src.to_string());
        }
    }
    let manifest: toml::Table = read("Cargo.toml").parse().unwrap();
    for bench in manifest["bench"].as_array().unwrap() {
        let name = bench["name"].as_str().unwrap();
        assert!(
            copied.contains(&"benches".to_string()),
            "Cargo.toml declares bench {name} but the image build does not copy benches/"
        );
    }
    assert!(
        copied.contains(&"config".to_string()),
        "the image has no policy"
    );
}

#[test]
fn the_systemd_unit_verifies_and_is_hardened() {
    let unit = read("deploy/systemd/sitegate.service");
    let values = |key: &str| -> Vec<&str> {
        unit.lines()
            .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .collect()
    };
    let one = |key: &str| -> &str {
        let v = values(key);
        assert_eq!(v.len(), 1, "{key}= appears {} times", v.len());
        v[0]
    };
    assert!(
        one("ExecStart").ends_with("sitegate run --config /etc/sitegate/sitegate.toml"),
        "ExecStart"
    );
    assert_eq!(one("ExecReload"), "/bin/kill -HUP $MAINPID");
    assert_eq!(one("DynamicUser"), "yes");
    assert_eq!(one("ProtectSystem"), "strict");
    assert_eq!(one("NoNewPrivileges"), "yes");
    assert_eq!(values("ReadWritePaths"), ["/var/log/sitegate"], "logs only");
    let stop = humantime::parse_duration(one("TimeoutStopSec")).unwrap();
    assert!(
        stop > shipped().server.shutdown_grace,
        "systemd would kill sitegate ({stop:?}) before shutdown_grace ends"
    );

    // systemd-analyze verify, in a scratch root that holds the binary the unit names
    // (it checks that ExecStart exists) and this host's unit library.
    let Ok(version) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("systemd-analyze is not installed: only the checks above ran");
        return;
    };
    assert!(version.status.success());
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    for dir in [
        "usr/local/bin",
        "bin",
        "etc/systemd/system",
        "usr/lib/systemd",
    ] {
        std::fs::create_dir_all(r.join(dir)).unwrap();
    }
    std::fs::copy(
        env!("CARGO_BIN_EXE_sitegate"),
        r.join("usr/local/bin/sitegate"),
    )
    .unwrap();
    std::fs::copy("/bin/kill", r.join("bin/kill")).unwrap();
    std::fs::write(r.join("etc/systemd/system/sitegate.service"), &unit).unwrap();
    let copied = Command::new("cp")
        .args(["-r", "/lib/systemd/system"])
        .arg(r.join("usr/lib/systemd/"))
        .status()
        .unwrap();
    assert!(copied.success());
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", r.display()))
        .arg("sitegate.service")
        .output()
        .unwrap();
    // A bad value is only a warning (exit 0) to systemd-analyze: any output fails.
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "systemd-analyze verify:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `docker build` cannot run here (no engine, and base images cannot be pulled), so this
/// replays the Dockerfile's build stage: every `WORKDIR`, `COPY` and `RUN`, in order, in
/// a directory that holds only what the build context would, with this machine's Rust
/// toolchain standing in for the `rust:` image's. A step that would fail in the image
/// build fails here; then the runtime stage's `COPY --from=build` must find the binary
/// the build stage made, and that binary must accept the shipped policy.
#[test]
fn the_dockerfile_build_stage_replays_on_a_clean_copy() {
    let steps = instructions(&read("deploy/container/Dockerfile"));
    let froms: Vec<usize> = (0..steps.len()).filter(|&i| steps[i].0 == "FROM").collect();
    assert!(froms.len() >= 2, "not multi-stage");
    // Kept between runs for its target/ only (docker would keep the dependency layer
    // the same way); everything else is removed, so only the build context is there.
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("image-replay");
    std::fs::create_dir_all(&root).unwrap();
    let in_root = |abs: &str| root.join(abs.trim_start_matches('/'));
    let started = std::time::SystemTime::now();
    let mut workdir = root.clone();
    for (op, args) in &steps[froms[0] + 1..froms[1]] {
        match op.as_str() {
            "WORKDIR" => {
                workdir = in_root(args);
                std::fs::create_dir_all(&workdir).unwrap();
                for entry in std::fs::read_dir(&workdir).unwrap() {
                    let path = entry.unwrap().path();
                    if path.file_name().unwrap() != "target" {
                        let removed = if path.is_dir() {
                            std::fs::remove_dir_all(&path)
                        } else {
                            std::fs::remove_file(&path)
                        };
                        removed.unwrap();
                    }
                }
            }
            "COPY" => {
                let parts: Vec<&str> = args.split_whitespace().collect();
                let (dest, srcs) = parts.split_last().unwrap();
                let dest = workdir.join(dest);
                for src in srcs {
                    let ok = Command::new("cp")
                        .arg("-r")
                        .arg(Path::new(REPO).join(src.trim_end_matches('/')))
                        .arg(&dest)
                        .status()
                        .unwrap();
                    assert!(ok.success(), "COPY {args}");
                }
            }
            "RUN" => {
                let mut run = Command::new("sh");
                run.arg("-c").arg(args).current_dir(&workdir);
                // The cargo that runs this test exports its own variables (target dir,
                // package name, jobserver); the image's cargo has none of them.
                for (key, _) in std::env::vars() {
                    if key.starts_with("CARGO_") && key != "CARGO_HOME" {
                        run.env_remove(&key);
                    }
                }
                // Fat LTO in one codegen unit (Cargo.toml's release profile) costs
                // minutes of CI for an optimisation that cannot make a step fail.
                run.env("CARGO_PROFILE_RELEASE_LTO", "off")
                    .env("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "16");
                let out = run.output().unwrap();
                assert!(
                    out.status.success(),
                    "RUN {args}\nfails on a clean copy of the build context:\n{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            other => panic!("the replay does not know {other} {args}: teach it"),
        }
    }

    let mut binary = None;
    for (op, args) in &steps[*froms.last().unwrap()..] {
        if let (true, Some(rest)) = (op == "COPY", args.strip_prefix("--from=build ")) {
            let (src, dest) = rest.split_once(' ').unwrap();
            let made = in_root(src);
            let modified = std::fs::metadata(&made)
                .and_then(|m| m.modified())
                .unwrap_or_else(|e| {
                    panic!("COPY --from=build {src}: the build made no such file ({e})")
                });
            assert!(
                modified >= started,
                "{src} was left by an earlier run, this build did not make it"
            );
            if dest.ends_with("/sitegate") {
                binary = Some(made);
            }
        }
    }
    let binary = binary.expect("the runtime stage copies no sitegate binary from the build");
    let out = Command::new(binary)
        .args(["check", "--config"])
        .arg(Path::new(REPO).join("config/sitegate.toml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the image's binary refuses the shipped policy:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
