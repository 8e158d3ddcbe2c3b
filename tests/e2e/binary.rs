//! The `sitegate` binary itself: `check`, `run` with signals, streaming fidelity and
//! memory, JSON log lines.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use sha2::{Digest, Sha256};
use sitegate::body::BoxError;

use crate::harness::*;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sitegate"))
}

/// `sitegate run` as a child process; killed when dropped.
struct Proc {
    child: Child,
    addr: String,
    admin: String,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    /// Starts the binary and waits for its "sitegate listening" log line, which carries
    /// the bound addresses.
    fn start(main: &Path) -> Proc {
        Proc::start_with(main, &[])
    }

    /// Same, with environment variables set.
    fn start_with(main: &Path, env: &[(&str, &str)]) -> Proc {
        let mut child = bin()
            .args(["run", "--config"])
            .arg(main)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.contains("\"sitegate listening\"") {
                    let _ = tx.send(line.clone());
                }
                sink.lock().unwrap().push(line);
            }
        });
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("sitegate did not start");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        Proc {
            child,
            addr: v["listen"].as_str().unwrap().to_string(),
            admin: v["admin_listen"].as_str().unwrap().to_string(),
            lines,
        }
    }

    /// Stops it the way an operator would (SIGTERM) and waits for it to exit, so
    /// nothing it writes is cut off half way.
    fn stop(mut self) {
        self.signal("-TERM");
        for _ in 0..200 {
            if self.child.try_wait().unwrap().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("sitegate did not stop within 10 s of SIGTERM");
    }

    fn pid(&self) -> String {
        self.child.id().to_string()
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.pid()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig} failed");
    }

    /// Peak resident memory so far, in KiB (Linux `VmHWM`).
    fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }
}

/// The stand-in app, and the `sitegate` binary in front of it with `extra` in its main
/// file and `routes` as routes.toml, in a temp dir (dropped in reverse: the proxy first).
async fn in_front_of_the_stand_in(
    extra: &str,
    routes: &str,
) -> (sitegate::demo::StandIn, tempfile::TempDir, Proc) {
    let app = sitegate::demo::start(([127, 0, 0, 1], 0).into())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let main = write_policy(dir.path(), &app.addr.to_string(), extra, routes);
    let p = Proc::start(&main);
    (app, dir, p)
}

fn write_policy(dir: &Path, upstream: &str, extra: &str, routes: &str) -> std::path::PathBuf {
    let main = dir.join("sitegate.toml");
    std::fs::write(&main, main_toml(upstream, extra)).unwrap();
    std::fs::write(dir.join("routes.toml"), routes_file(routes)).unwrap();
    main
}

#[test]
fn check_accepts_the_shipped_policy() {
    let out = bin()
        .args(["check", "--config", "config/sitegate.toml"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("policy is valid (6 files, 7 routes"),
        "{stdout}"
    );
}

#[test]
fn run_binds_where_the_environment_says_and_health_probes_it() {
    let dir = tempfile::tempdir().unwrap();
    let main = write_policy(dir.path(), &closed_port().to_string(), "", "");
    // The policy says 127.0.0.1:0; a container overrides it to the unspecified address.
    let proc = Proc::start_with(&main, &[("SITEGATE_ADMIN_LISTEN", "0.0.0.0:0")]);
    assert!(proc.admin.starts_with("0.0.0.0:"), "{}", proc.admin);
    let health = |admin: &str| {
        bin()
            .args(["health", "--admin", admin])
            .env_remove("SITEGATE_ADMIN_LISTEN")
            .output()
            .unwrap()
    };
    let up = health(&proc.admin);
    assert!(
        up.status.success(),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );
    let admin = proc.admin.clone();
    proc.stop();
    let down = health(&admin);
    assert_eq!(down.status.code(), Some(1));
    let why = String::from_utf8_lossy(&down.stderr);
    assert!(why.contains("/healthz"), "{why}");
}

#[test]
fn checks_verify_would_flag_are_logged_once_at_start() {
    // The app is not up yet: `verify` would say so, and `run` starts anyway (the
    // check is not critical) but writes it down.
    let dir = tempfile::tempdir().unwrap();
    let main = write_policy(dir.path(), &closed_port().to_string(), "", "");
    let proc = Proc::start(&main);
    let lines = proc.lines.clone();
    let found = || {
        lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains("verify: a check did not pass"))
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .collect::<Vec<_>>()
    };
    for _ in 0..100 {
        if found().iter().any(|l| l["check"] == "upstream reachable") {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let warned = found();
    let upstream = warned
        .iter()
        .find(|l| l["check"] == "upstream reachable")
        .unwrap_or_else(|| panic!("no verify line for the upstream in {warned:?}"));
    assert_eq!(upstream["level"], "WARN");
    assert_eq!(upstream["category"], "audit");
    assert!(
        upstream["remedy"]
            .as_str()
            .unwrap()
            .contains("start the app")
    );
    // Once each, not at every request or reload.
    let names: Vec<_> = warned.iter().map(|l| l["check"].to_string()).collect();
    let mut unique = names.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(names.len(), unique.len(), "{names:?}");
    proc.stop();
}

#[test]
fn check_lists_every_problem_with_its_position_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let main = write_policy(
        dir.path(),
        "127.0.0.1:5000",
        "[limits]\nmax_body = \"AKIAIOSFODNN7EXAMPLE\"\n",
        "[[route]]\nname = \"r\"\npath = \"/r\"\ntimeout = \"soon\"\nmethods = [\"GETT\"]\n",
    );
    let out = bin()
        .args(["check", "--config"])
        .arg(&main)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 3, "{stderr}");
    assert!(
        lines[0].contains("sitegate.toml:13:12: invalid size"),
        "{stderr}"
    );
    assert!(
        lines[1].contains("routes.toml:4:11: invalid duration"),
        "{stderr}"
    );
    assert!(
        lines[2].ends_with("sitegate.toml: policy is invalid (2 problems)"),
        "{stderr}"
    );
    // The pasted credential is never echoed.
    assert!(!stderr.contains("AKIAIOSFODNN7EXAMPLE"), "{stderr}");
}

#[test]
fn check_reports_a_missing_file() {
    let out = bin()
        .args(["check", "--config", "/nonexistent/sitegate.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("/nonexistent/sitegate.toml: cannot open"),
        "{stderr}"
    );
}

#[test]
fn run_refuses_an_invalid_policy() {
    let dir = tempfile::tempdir().unwrap();
    let main = write_policy(
        dir.path(),
        "127.0.0.1:5000",
        "",
        "[[route]]\nname = \"r\"\n",
    );
    let out = bin().args(["run", "--config"]).arg(&main).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("routes.toml:1:1: missing field `path`"),
        "{stderr}"
    );
    assert!(stderr.contains("refusing to start"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_and_sigterm_drains_and_exits_0() {
    let (_app, _dir, mut p) = in_front_of_the_stand_in("", "").await;
    let metrics = format!("http://{}/metrics", p.admin);
    p.signal("-HUP");
    assert_eventually("SIGHUP triggered a reload", Duration::from_secs(10), || {
        let metrics = metrics.clone();
        async move {
            metric(
                &get(&metrics).await.body_text(),
                "sitegate_config_reloads_total{result=\"unchanged\"}",
            ) >= 1.0
        }
    })
    .await;

    // An access line is JSON with the designed fields.
    let r = send(
        "GET",
        &format!("http://{}/health", p.addr),
        &[("x-request-id", "log-check-1")],
        "",
    )
    .await;
    assert_eq!(r.status, 200);
    let lines = p.lines.clone();
    assert_eventually(
        "the access line is written",
        Duration::from_secs(10),
        || {
            let found = lines
                .lock()
                .unwrap()
                .iter()
                .any(|l| l.contains("log-check-1"));
            async move { found }
        },
    )
    .await;
    let line = lines
        .lock()
        .unwrap()
        .iter()
        .find(|l| l.contains("log-check-1"))
        .cloned()
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    for field in [
        "timestamp",
        "level",
        "target",
        "message",
        "request_id",
        "route",
        "category",
        "method",
        "path",
        "status",
        "duration_ms",
        "bytes_in",
        "bytes_out",
        "upstream_status",
    ] {
        assert!(v.get(field).is_some(), "{field} missing: {line}");
    }
    assert_eq!(v["category"], "access");
    assert_eq!(v["status"], 200);
    assert!(v["timestamp"].as_str().unwrap().ends_with('Z'));

    p.signal("-TERM");
    let status = tokio::task::spawn_blocking(move || {
        for _ in 0..200 {
            if let Some(s) = p.child.try_wait().unwrap() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    })
    .await
    .unwrap();
    let status = status.expect("sitegate did not exit within 10 s of SIGTERM");
    assert!(status.success(), "{status:?}");
}

/// Streams `len` bytes of a fixed pattern up, in 64 KiB chunks, hashing as it goes.
fn upload(len: usize) -> (sitegate::body::BoxBody, tokio::task::JoinHandle<String>) {
    let (mut tx, body) = http_body_util::channel::Channel::<Bytes, BoxError>::new(4);
    let feeder = tokio::spawn(async move {
        let mut hash = Sha256::new();
        let mut sent = 0;
        while sent < len {
            let n = (len - sent).min(64 * 1024);
            let chunk: Vec<u8> = (sent..sent + n).map(|i| (i * 7 % 256) as u8).collect();
            hash.update(&chunk);
            tx.send_data(Bytes::from(chunk)).await.unwrap();
            sent += n;
        }
        sitegate::demo::hex(&hash.finalize())
    });
    (body.boxed_unsync(), feeder)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_megabytes_stream_both_ways_intact_in_bounded_memory() {
    const LEN: usize = 50 * 1024 * 1024;
    let (_app, _dir, p) = in_front_of_the_stand_in("[limits]\nmax_body = \"64 MiB\"\n", "").await;

    // Up: a chunked 50 MB body reaches the app with the same SHA-256.
    let (body, feeder) = upload(LEN);
    let r = send_body(
        &client(),
        "POST",
        &format!("http://{}/sha256", p.addr),
        &[],
        body,
    )
    .await;
    let sent_hash = feeder.await.unwrap();
    assert_eq!(r.status, 200, "{}", r.body_text());
    assert_eq!(r.json()["bytes"], LEN as u64);
    assert_eq!(r.json()["sha256"], sent_hash.as_str());

    // Down: 50 MB from the app arrive with the same SHA-256, read as a stream.
    let req = http::Request::get(format!("http://{}/bytes?n={LEN}", p.addr))
        .body(sitegate::body::full(""))
        .unwrap();
    let resp = client().request(req).await.unwrap();
    assert_eq!(resp.headers()["content-length"], LEN.to_string().as_str());
    let mut body = resp.into_body();
    let mut got = Sha256::new();
    let mut n = 0u64;
    while let Some(frame) = body.frame().await {
        if let Some(d) = frame.unwrap().data_ref() {
            got.update(d);
            n += d.len() as u64;
        }
    }
    let mut want = Sha256::new();
    let pattern: Vec<u8> = (0..LEN as u64).map(sitegate::demo::pattern_byte).collect();
    want.update(&pattern);
    assert_eq!(n, LEN as u64);
    assert_eq!(
        sitegate::demo::hex(&got.finalize()),
        sitegate::demo::hex(&want.finalize())
    );

    let peak = p.peak_rss_kib();
    eprintln!(
        "sitegate peak RSS while streaming 50 MB each way: {} KiB",
        peak
    );
    assert!(
        peak < 64 * 1024,
        "peak RSS {peak} KiB is over 64 MiB: the proxy buffered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_megabytes_of_secrets_stream_redacted_in_flat_memory_and_logs_stay_clean() {
    const LEN: u64 = 100_000_000;
    let (_app, _dir, p) = in_front_of_the_stand_in("", "").await;

    let req = http::Request::get(format!("http://{}/secrets?n={LEN}", p.addr))
        .body(sitegate::body::full(""))
        .unwrap();
    let resp = client().request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    // Look for the secret across frame boundaries too: keep the tail of the last frame.
    let mut carry: Vec<u8> = Vec::new();
    let (mut bytes, mut replaced) = (0u64, 0usize);
    while let Some(frame) = body.frame().await {
        let frame = frame.unwrap();
        let Some(d) = frame.data_ref() else { continue };
        bytes += d.len() as u64;
        carry.extend_from_slice(d);
        let text = String::from_utf8_lossy(&carry);
        assert!(
            !text.contains("AKIAIOSFODNN7"),
            "a secret got through near byte {bytes}"
        );
        replaced += text.matches("[REDACTED]").count();
        // Keep less than one replacement, so none is counted twice.
        let keep = carry.len().min(9);
        carry.drain(..carry.len() - keep);
    }
    assert_eq!(replaced as u64, LEN / 100);
    assert_eq!(
        bytes,
        LEN - (LEN / 100) * 10,
        "each 20-byte key became 10 bytes"
    );

    // A secret in a request path reaches the log only redacted.
    let r = get(&format!(
        "http://{}/api/keys/{}",
        p.addr, "AKIAIOSFODNN7EXAMPLE"
    ))
    .await;
    assert_eq!(r.status, 404);
    let peak = p.peak_rss_kib();
    eprintln!("sitegate peak RSS while redacting a 100 MB stream: {peak} KiB");
    assert!(
        peak < 64 * 1024,
        "peak RSS {peak} KiB: the redactor buffered"
    );

    let lines = p.lines.clone();
    assert_eventually(
        "the access line of the path request is written",
        Duration::from_secs(10),
        || {
            let n = lines
                .lock()
                .unwrap()
                .iter()
                .filter(|l| l.contains("/api/keys/"))
                .count();
            async move { n > 0 }
        },
    )
    .await;
    let all = p.lines.lock().unwrap().join("\n");
    assert!(
        !all.contains("AKIAIOSFODNN7EXAMPLE"),
        "a secret reached the log"
    );
    assert!(all.contains("/api/keys/[REDACTED]"), "{all}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_file_rotates_keeping_max_files_and_holds_no_secret() {
    let (_app, dir, p) = in_front_of_the_stand_in(
        "\n[logging]\nfile = \"logs/sitegate.log\"\nmax_file_size = 2048\nmax_files = 3\n",
        "",
    )
    .await;
    // The key as it is, and percent-encoded as a client may send it.
    let forms = [
        "AKIAIOSFODNN7EXAMPLE",
        "%41KIAIOSFODNN7EXAMPLE",
        "AKIA%49OSFODNN7EXAMPL%45",
        "%41%4b%49%41IOSFODNN7EXAMPLE",
        // Reserved characters stay encoded in the path sent (and logged): the webhook
        // is a secret only once decoded.
        "https%3A%2F%2Fhooks.slack.com%2Fservices%2FT00000000%2FB00000000%2FQQQQQQQQQQQQQQQQQQQQQQQQ",
    ];
    for i in 0..60 {
        let r = get(&format!(
            "http://{}/api/keys/{}?n={i}",
            p.addr,
            forms[i % forms.len()]
        ))
        .await;
        assert!(matches!(r.status, 400 | 404), "{}", r.status);
    }
    let log = dir.path().join("logs/sitegate.log");
    assert_eventually("the log rotated", Duration::from_secs(10), || {
        let rotated = dir.path().join("logs/sitegate.log.2").exists();
        async move { rotated }
    })
    .await;
    // A graceful stop: a kill could land in the middle of a rotation.
    tokio::task::spawn_blocking(move || p.stop()).await.unwrap();
    let files = sitegate::observe::sink::rotated_files(&log);
    let names: Vec<String> = std::fs::read_dir(dir.path().join("logs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(files.len(), 3, "{names:?}");
    assert_eq!(names.len(), 3, "{names:?}");
    let mut lines = 0;
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        // The secrets, or the webhook's secret part.
        for leak in forms
            .iter()
            .take(4)
            .chain(["QQQQQQQQQQQQQQQQQQQQQQQQ"].iter())
        {
            assert!(
                !text.contains(leak),
                "a secret reached {} as {leak}",
                f.display()
            );
        }
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            assert!(
                v["timestamp"].is_string() && v["level"].is_string(),
                "{line}"
            );
            lines += 1;
        }
        // Whole lines only: rotation never cuts one.
        assert!(text.is_empty() || text.ends_with('\n'));
    }
    assert!(lines > 5);
}

#[test]
fn try_shows_the_decision_and_the_forwarded_body() {
    let run = |body: &str| {
        let mut child = bin()
            .args([
                "try",
                "--config",
                "config/sitegate.toml",
                "--route",
                "phase9-intelligence",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(body.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, out) = run(
        r#"{"project_id":"P001","project_name":" Bridge ","budget":"5","scheduled_duration_days":9}"#,
    );
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.starts_with("ALLOWED; forwarded body (changed by sanitizing):"),
        "{out}"
    );
    assert!(
        out.contains(r#""project_name":"Bridge","budget":5"#),
        "{out}"
    );
    let (code, out) = run(r#"[{"project_id":"X","budget":-1}]"#);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.starts_with("REJECTED VALIDATION_FAILED (400): 1 of 1 records are invalid"),
        "{out}"
    );
    assert!(
        out.contains("record 0 /budget: must be >= 0 (min)"),
        "{out}"
    );
    let out = bin()
        .args(["try", "--config", "config/sitegate.toml", "--route", "nope"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no route named `nope`"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_large_uploads_stay_within_the_memory_budget() {
    // 100 concurrent 2 MB uploads to a validating route with a 16 MiB budget (the
    // README's benchmark runs the full 1 000 × 8 MB / 256 MiB case).
    let (_app, _dir, p) = in_front_of_the_stand_in("\n[limits]\nbuffer_budget = \"16 MiB\"\nmax_records = 100000\n", "[[route]]\nname = \"v\"\npath = \"/sha256\"\nschema = \"r\"\nmax_body = \"4 MiB\"\n\n[schema.r]\nrequired = [\"id\"]\n[schema.r.fields]\nid = { type = \"integer\" }\n").await;
    let record = r#"{"id":1,"note":"0123456789012345678901234567890123456789"},"#;
    let mut body = String::from("[");
    while body.len() < 2_000_000 {
        body.push_str(record);
    }
    body.pop();
    body.push(']');
    let body = bytes::Bytes::from(body);
    let url = format!("http://{}/sha256", p.addr);
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let (url, body) = (url.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            send("POST", &url, &[("content-type", "application/json")], body)
                .await
                .status
        }));
    }
    let mut statuses = std::collections::BTreeMap::new();
    for t in tasks {
        *statuses.entry(t.await.unwrap()).or_insert(0) += 1;
    }
    let peak = p.peak_rss_kib();
    eprintln!("100 × 2 MB uploads, 16 MiB budget: {statuses:?}, peak RSS {peak} KiB");
    assert!(
        statuses.keys().all(|s| *s == 200 || *s == 429),
        "{statuses:?}"
    );
    assert!(statuses.get(&200).is_some_and(|n| *n > 0), "{statuses:?}");
    assert!(
        peak < (16 + 64) * 1024,
        "peak RSS {peak} KiB over budget + 64 MiB"
    );
}

/// Runs `verify --json` on a policy with `extra` in the main file and `routes`, with
/// `env` set; returns the exit code and the report.
fn verify_with(
    dir: &Path,
    upstream: &str,
    extra: &str,
    routes: &str,
    env: &[(&str, &str)],
    args: &[&str],
) -> (Option<i32>, serde_json::Value) {
    let main = write_policy(dir, upstream, extra, routes);
    let mut cmd = bin();
    cmd.args(["verify", "--json", "--config"])
        .arg(&main)
        .args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let report = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    (out.status.code(), report)
}

fn failing(report: &serde_json::Value) -> Vec<String> {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["status"] == "fail")
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_reports_each_check_on_its_own() {
    use std::os::unix::fs::PermissionsExt;
    let app = sitegate::demo::start(([127, 0, 0, 1], 0).into())
        .await
        .unwrap();
    let up = app.addr.to_string();
    let audit = "\n[audit]\nrequired_env = [\"SG_TEST_REQUIRED\"]\nsensitive_env = [\"SG_TEST_SECRET\"]\nexpect_env = { SG_TEST_MODE = \"production\" }\nforbid_truthy_env = [\"SG_TEST_DEBUG\"]\npaths = { \"data\" = \"0750\" }\n";
    let good_env = [
        ("SG_TEST_REQUIRED", "1"),
        ("SG_TEST_SECRET", "a-long-generated-value-7f3c"),
        ("SG_TEST_MODE", "production"),
        ("SG_TEST_DEBUG", "0"),
    ];
    let fresh = || {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("data")).unwrap();
        std::fs::set_permissions(
            dir.path().join("data"),
            std::fs::Permissions::from_mode(0o750),
        )
        .unwrap();
        dir
    };

    // A clean setup is ready.
    let dir = fresh();
    let (code, report) = verify_with(dir.path(), &up, audit, "", &good_env, &[]);
    assert_eq!(
        (code, report["status"].as_str()),
        (Some(0), Some("READY_FOR_PRODUCTION")),
        "{report}"
    );
    assert_eq!(report["policy_version"].as_str().unwrap().len(), 16);

    // Each environment problem on its own is a critical failure (exit 2).
    for (var, value) in [
        ("SG_TEST_REQUIRED", ""),
        ("SG_TEST_SECRET", "changeme"),
        ("SG_TEST_MODE", "dev"),
        ("SG_TEST_DEBUG", "true"),
    ] {
        let env: Vec<(&str, &str)> = good_env
            .iter()
            .map(|(k, v)| if *k == var { (*k, value) } else { (*k, *v) })
            .collect();
        let (code, report) = verify_with(fresh().path(), &up, audit, "", &env, &[]);
        assert_eq!(code, Some(2), "{var}={value}: {report}");
        assert_eq!(failing(&report), vec!["environment"], "{var}");
        assert!(
            !report.to_string().contains("changeme"),
            "a value was shown"
        );
    }

    // World-writable path: a failure; --fix-permissions mends it.
    let dir = fresh();
    std::fs::set_permissions(
        dir.path().join("data"),
        std::fs::Permissions::from_mode(0o777),
    )
    .unwrap();
    let (code, report) = verify_with(dir.path(), &up, audit, "", &good_env, &[]);
    assert_eq!(
        (code, failing(&report)),
        (Some(1), vec!["permissions".to_string()]),
        "{report}"
    );
    let (code, report) = verify_with(
        dir.path(),
        &up,
        audit,
        "",
        &good_env,
        &["--fix-permissions"],
    );
    assert_eq!(code, Some(0), "{report}");
    let mode = std::fs::metadata(dir.path().join("data"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o750);

    // A pasted credential in a policy file (a fallback body here).
    let dir = fresh();
    let routes = "[[route]]\nname = \"r\"\npath = \"/r\"\nfallback = { body = '{\"k\":\"AKIAIOSFODNN7EXAMPLE\"}' }\n";
    let (code, report) = verify_with(dir.path(), &up, audit, routes, &good_env, &[]);
    assert_eq!(
        (code, failing(&report)),
        (
            Some(2),
            vec!["no plaintext credentials in policy files".to_string()]
        )
    );
    assert!(
        !report.to_string().contains("AKIAIOSFODNN7EXAMPLE"),
        "the credential was echoed"
    );
    // Critical: it says where, and `check` (so every reload and `run`) refuses it too.
    let c = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "no plaintext credentials in policy files")
        .unwrap()
        .clone();
    assert_eq!(c["critical"], true, "{c}");
    assert!(
        c["detail"]
            .as_str()
            .unwrap()
            .ends_with("routes.toml:4: aws-access-key-id"),
        "{c}"
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sitegate"))
        .args(["check", "--config"])
        .arg(dir.path().join("sitegate.toml"))
        .envs(good_env.iter().map(|(k, v)| (*k, *v)))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("no plaintext credentials in policy files (critical)"),
        "{err}"
    );
    assert!(!err.contains("AKIAIOSFODNN7EXAMPLE"));
    // A line the operator marked is their decision.
    let dir = fresh();
    let marked = routes.replace(
        "}' }\n",
        "}' }  # sitegate:allow (AWS's documented example key)\n",
    );
    let (code, report) = verify_with(dir.path(), &up, audit, &marked, &good_env, &[]);
    assert_eq!((code, failing(&report)), (Some(0), vec![]), "{report}");

    // Unreachable upstream; a route needing keys nobody configured; models missing.
    let (code, report) = verify_with(
        fresh().path(),
        &closed_port().to_string(),
        audit,
        "",
        &good_env,
        &[],
    );
    assert_eq!(
        (code, failing(&report)),
        (Some(1), vec!["upstream reachable".to_string()])
    );
    let routes = "[[route]]\nname = \"r\"\npath = \"/r\"\nauth = \"api_key\"\n";
    let (code, report) = verify_with(fresh().path(), &up, audit, routes, &good_env, &[]);
    // A policy `check` and `run` refuse: it does not compile (one admission rule).
    assert_eq!(
        (code, failing(&report)),
        (Some(2), vec!["policy compiles".to_string()])
    );
    assert!(report.to_string().contains("needs API keys"), "{report}");
    let routes = "[[route]]\nname = \"m\"\npath = \"/m/{name}\"\nmodel = { action = \"inference\", name = \"path:name\" }\n";
    let (code, report) = verify_with(fresh().path(), &up, audit, routes, &good_env, &[]);
    assert_eq!(
        (code, failing(&report)),
        (Some(1), vec!["model policy consistent".to_string()])
    );
    // A log file that cannot be written.
    let dir = fresh();
    std::fs::write(dir.path().join("not-a-dir"), "").unwrap();
    let logging = format!("{audit}\n[logging]\nfile = \"not-a-dir/sitegate.log\"\n");
    let (code, report) = verify_with(dir.path(), &up, &logging, "", &good_env, &[]);
    assert_eq!(
        (code, failing(&report)),
        (Some(2), vec!["log destination writable".to_string()])
    );
    // A broken policy.
    let (code, report) = verify_with(
        fresh().path(),
        &up,
        "\n[limits]\nmax_body = \"lots\"\n",
        "",
        &good_env,
        &[],
    );
    assert_eq!(
        (code, failing(&report)),
        (Some(2), vec!["policy compiles".to_string()])
    );
}

#[test]
fn run_refuses_to_start_on_a_critical_check() {
    let dir = tempfile::tempdir().unwrap();
    let main = write_policy(
        dir.path(),
        "127.0.0.1:5000",
        "\n[audit]\nrequired_env = [\"SG_TEST_NEVER_SET\"]\n",
        "",
    );
    let out = bin()
        .args(["run", "--config"])
        .arg(&main)
        .env_remove("SG_TEST_NEVER_SET")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("FAIL environment (critical): SG_TEST_NEVER_SET is not set"),
        "{stderr}"
    );
    assert!(stderr.contains("refusing to start"), "{stderr}");
}
