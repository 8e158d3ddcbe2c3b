//! sitegate in front of the real Flask app (tests/legacy_app). The harness provisions
//! a virtualenv under target/ with the pinned requirements when it is missing or stale,
//! and fails — never skips — when it cannot.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::harness::*;

const APP_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/legacy_app");

/// The virtualenv's python, created on first use.
fn python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| venv("legacy-venv", &Path::new(APP_DIR).join("requirements.txt")))
}

/// The Flask app on a free port; killed when dropped.
pub(crate) struct Flask {
    child: Child,
    pub(crate) port: u16,
}

impl Drop for Flask {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Flask {
    pub(crate) fn start() -> Flask {
        Flask::start_on(0)
    }

    /// Starts the app on `port` (0 for any), retrying while a previous instance's
    /// socket is still being released.
    fn start_on(port: u16) -> Flask {
        let mut child = Command::new(python())
            .arg(Path::new(APP_DIR).join("app.py"))
            .args(["--port", &port.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start the Flask app");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .strip_prefix("LISTENING ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("the Flask app did not start: {line:?}"));
        Flask { child, port }
    }
}

/// sitegate with the shipped policy (config/), pointed at the Flask app.
pub(crate) async fn proxy_for(flask: &Flask) -> sitegate::server::Running {
    let overrides = sitegate::state::Overrides {
        upstream: Some(format!("127.0.0.1:{}", flask.port).parse().unwrap()),
        listen: Some(([127, 0, 0, 1], 0).into()),
        admin_listen: Some(([127, 0, 0, 1], 0).into()),
    };
    let main = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/sitegate.toml");
    start_proxy(&main, overrides).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_suite_endpoints_work_through_sitegate() {
    let flask = tokio::task::spawn_blocking(Flask::start).await.unwrap();
    let proxy = proxy_for(&flask).await;
    let url = |p: &str| format!("http://{}{p}", proxy.addr);
    let json = [("content-type", "application/json")];
    let project = r#"{"project_id":"P001","project_name":"Bridge","budget":1000,"scheduled_duration_days":400}"#;

    let r = send("POST", &url("/api/phase9/intelligence"), &json, project).await;
    assert_eq!(r.status, 200, "{}", r.body_text());
    assert_eq!(r.json()["project_id"], "P001");
    assert_eq!(r.json()["phase"], 9);
    assert!(r.header("x-request-id").unwrap().starts_with("req_"));

    let r = send(
        "POST",
        &url("/api/phase12/delay-prediction"),
        &json,
        project,
    )
    .await;
    assert_eq!(r.json()["phase"], 12);
    let r = send("POST", &url("/api/phase13/budget-forecast"), &json, project).await;
    assert_eq!(r.json()["forecast_total"], 1080.0);
    let r = send(
        "POST",
        &url("/models/delay-predictor/2.1.0/predict"),
        &json,
        "{}",
    )
    .await;
    assert_eq!(r.json()["version"], "2.1.0");
    // Retraining goes through only with the explicit force flag.
    let r = send("POST", &url("/models/delay-predictor/retrain"), &json, "{}").await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (428, "RETRAIN_NOT_CONFIRMED")
    );
    let r = send(
        "POST",
        &url("/models/delay-predictor/retrain"),
        &json,
        r#"{"force_retrain":true}"#,
    )
    .await;
    assert_eq!(r.status, 202);
    // Inference on a model the policy does not know never reaches Flask.
    let r = send("POST", &url("/models/unknown/1.0.0/predict"), &json, "{}").await;
    assert_eq!((r.status, r.code().as_str()), (409, "MODEL_UNKNOWN"));
    let r = get(&url("/health")).await;
    assert_eq!(r.json()["flask"], true);

    // Flask's own error passes through as Flask wrote it.
    let r = get(&url("/api/fail")).await;
    assert_eq!(r.status, 500);
    assert_eq!(r.json()["detail"], "the prediction service crashed");

    // What Flask sees: forwarding headers and the request id, no hop-by-hop headers.
    let r = send(
        "POST",
        &url("/headers"),
        &[
            ("x-request-id", "flask-1"),
            ("connection", "x-drop"),
            ("x-drop", "1"),
        ],
        "",
    )
    .await;
    let seen = r.json();
    assert_eq!(seen["x-request-id"], "flask-1");
    assert_eq!(seen["x-forwarded-for"], "127.0.0.1");
    assert!(seen.get("x-drop").is_none(), "{seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flask_bytes_headers_and_cookies_arrive_unchanged() {
    let flask = tokio::task::spawn_blocking(Flask::start).await.unwrap();
    let proxy = proxy_for(&flask).await;
    let r = get(&format!("http://{}/raw", proxy.addr)).await;
    assert_eq!(r.status, 200);
    assert_eq!(&r.body[..], b"line one\r\nline two\x00\xff");
    assert_eq!(r.header("x-legacy-header"), Some("kept"));
    assert!(
        r.header("set-cookie")
            .unwrap()
            .starts_with("session=abc123")
    );
    assert_eq!(r.header("content-type"), Some("application/octet-stream"));

    // A 5 MB upload on an unmatched path reaches Flask intact.
    let body: Vec<u8> = (0..5_000_000u32).map(|i| (i % 253) as u8).collect();
    let want = sitegate::demo::hex(&Sha256::digest(&body));
    let r = send(
        "POST",
        &format!("http://{}/sha256", proxy.addr),
        &[("content-type", "application/octet-stream")],
        body,
    )
    .await;
    assert_eq!(r.json()["sha256"], want.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guards_answer_before_flask_and_a_dead_flask_is_502() {
    let flask = tokio::task::spawn_blocking(Flask::start).await.unwrap();
    let proxy = proxy_for(&flask).await;
    let url = format!("http://{}/api/phase9/intelligence", proxy.addr);
    // 3 MB against the route's 2 MiB limit.
    let r = send(
        "POST",
        &url,
        &[("content-type", "application/json")],
        vec![b' '; 3_000_000],
    )
    .await;
    assert_eq!(r.status, 413);
    assert_eq!(r.code(), "PAYLOAD_TOO_LARGE");
    let r = send("POST", &url, &[("content-type", "text/csv")], "a,b").await;
    assert_eq!(r.status, 415);

    drop(flask);
    let url = format!("http://{}/health", proxy.addr);
    assert_eventually(
        "a stopped app answers 502 JSON",
        Duration::from_secs(10),
        || {
            let url = url.clone();
            async move {
                let r = get(&url).await;
                r.status == 502 && r.code() == "UPSTREAM_UNAVAILABLE"
            }
        },
    )
    .await;
}

/// A policy of the test's own, in front of Flask, with the failure handling on.
fn failure_policy(dir: &Path, port: u16) -> PathBuf {
    std::fs::create_dir(dir.join("fallbacks")).unwrap();
    std::fs::write(
        dir.join("fallbacks/phase9.json"),
        r#"{"project_id":null,"risk_score":null,"status":"degraded","request_id":"{request_id}"}"#,
    )
    .unwrap();
    let main = dir.join("sitegate.toml");
    std::fs::write(
        &main,
        main_toml(
            &format!("127.0.0.1:{port}"),
            "\n[upstream.circuit]\nconsecutive_failures = 5\nopen_for = \"500ms\"\n",
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("routes.toml"),
        r#"
[[route]]
name = "phase9"
path = "/api/phase9/intelligence"
methods = ["POST"]
fallback = { file = "fallbacks/phase9.json", on = ["connect", "timeout", "5xx", "circuit-open"] }

[[route]]
name = "slow"
path = "/api/slow"
timeout = "300ms"
fallback = { body = '{"status":"slow"}', on = ["timeout"] }

[[route]]
name = "fail"
path = "/api/fail"
fallback = { body = '{"status":"failed"}', status = 503, on = ["5xx"] }

[[route]]
name = "text"
path = "/api/text"
expect_json = true
"#,
    )
    .unwrap();
    main
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flask_failures_become_fallbacks_and_the_breaker_follows_the_app() {
    let flask = tokio::task::spawn_blocking(Flask::start).await.unwrap();
    let port = flask.port;
    let dir = tempfile::tempdir().unwrap();
    let proxy = start_proxy(&failure_policy(dir.path(), port), Default::default()).await;
    let url = |p: &str| format!("http://{}{p}", proxy.addr);
    let json = [("content-type", "application/json")];

    // Up: Flask answers.
    let r = send(
        "POST",
        &url("/api/phase9/intelligence"),
        &json,
        r#"{"project_id":"P001"}"#,
    )
    .await;
    assert_eq!(r.json()["project_id"], "P001");
    assert!(r.header("x-sitegate-fallback").is_none());
    // Slow: the route's timeout answers with its fallback.
    let r = get(&url("/api/slow?ms=3000")).await;
    assert_eq!(r.header("x-sitegate-fallback"), Some("timeout"));
    assert_eq!(r.json()["status"], "slow");
    // Flask's 500: the fallback's status and body.
    let r = get(&url("/api/fail")).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.header("x-sitegate-fallback"), Some("5xx"));
    // Text on a JSON route without a fallback: 502 JSON.
    let r = get(&url("/api/text")).await;
    assert_eq!(r.status, 502);
    assert_eq!(r.code(), "UPSTREAM_UNAVAILABLE");

    // Down: connect failures answer with the fallback; a burst opens the circuit.
    drop(flask);
    let mut reasons = Vec::new();
    for _ in 0..8 {
        let r = send("POST", &url("/api/phase9/intelligence"), &json, "{}").await;
        assert_eq!(r.status, 200);
        assert_eq!(r.json()["status"], "degraded");
        assert_eq!(r.json()["request_id"], r.header("x-request-id").unwrap());
        reasons.push(r.header("x-sitegate-fallback").unwrap().to_string());
    }
    let failed: Vec<&str> = reasons.iter().map(String::as_str).collect();
    // Five failures in a row (the answered /api/text reset the count) open it.
    assert_eq!(failed[..5], ["connect"; 5], "{failed:?}");
    assert_eq!(failed[5..], ["circuit-open"; 3], "{failed:?}");

    // Back: the app restarts on its port; the next probe closes the circuit.
    let _flask = tokio::task::spawn_blocking(move || Flask::start_on(port))
        .await
        .unwrap();
    let target = url("/api/phase9/intelligence");
    assert_eventually(
        "the circuit closes once Flask is back",
        Duration::from_secs(10),
        || {
            let target = target.clone();
            async move {
                let r = send(
                    "POST",
                    &target,
                    &[("content-type", "application/json")],
                    r#"{"project_id":"P002"}"#,
                )
                .await;
                r.header("x-sitegate-fallback").is_none() && r.json()["project_id"] == "P002"
            }
        },
    )
    .await;
    assert_eq!(
        get(&format!("http://{}/readyz", proxy.admin_addr))
            .await
            .json()["circuit"],
        "closed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_of_any_kind_leaves_flask_through_sitegate() {
    let flask = tokio::task::spawn_blocking(Flask::start).await.unwrap();
    let proxy = proxy_for(&flask).await;
    for (name, text, secret, _) in sitegate::redact::samples::cases() {
        for path in ["/api/reflect", "/api/reflect.txt"] {
            let r = send(
                "POST",
                &format!("http://{}{path}", proxy.addr),
                &[("content-type", "text/plain")],
                text.clone(),
            )
            .await;
            assert_eq!(r.status, 200, "{name} {path}");
            let body = r.body_text();
            // JSON escapes newlines inside PEM blocks; compare on the raw secret.
            assert!(
                !body.contains(&secret),
                "{name} leaked through {path}: {body}"
            );
            assert!(body.contains("[REDACTED]"), "{name} {path}: {body}");
        }
    }
    // A gzip answer is inspected too (Flask compresses nothing by itself; the stand-in
    // covers compressed bodies), and the app's own JSON keys are redacted at any depth.
    let r = send(
        "POST",
        &format!("http://{}/api/reflect", proxy.addr),
        &[("content-type", "application/json")],
        r#"{"user":{"password":"hunter2x"}}"#,
    )
    .await;
    assert!(!r.body_text().contains("hunter2x"), "{}", r.body_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_and_unlock_are_decided_before_flask() {
    let flask = tokio::task::spawn_blocking(Flask::start).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let main = dir.path().join("sitegate.toml");
    std::fs::write(
        &main,
        main_toml(
            &format!("127.0.0.1:{}", flask.port),
            r#"
[[model]]
name = "delay-predictor"
version = "2.1.0"
locked = true

[model_policy]
api_unlock = true
"#,
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("routes.toml"),
        r#"
[[route]]
name = "register"
path = "/models/{name}/{version}"
methods = ["PUT"]
model = { action = "register", name = "path:name", version = "path:version" }

[[route]]
name = "unlock"
path = "/models/{name}/{version}/unlock"
methods = ["POST"]
model = { action = "unlock", name = "path:name", version = "path:version", confirm = "header:X-Confirm-Unlock" }
"#,
    )
    .unwrap();
    let proxy = start_proxy(&main, Default::default()).await;
    let url = |p: &str| format!("http://{}{p}", proxy.addr);
    // Overwriting a locked version is refused; a new version goes on to Flask (which
    // has no such endpoint: its 404 shows the request got through).
    let r = send("PUT", &url("/models/delay-predictor/2.1.0"), &[], "{}").await;
    assert_eq!((r.status, r.code().as_str()), (423, "MODEL_LOCKED"));
    let r = send("PUT", &url("/models/delay-predictor/2.2.0"), &[], "{}").await;
    assert_eq!(r.status, 404, "{}", r.body_text());
    // Unlocking needs the exact confirmation.
    let r = send(
        "POST",
        &url("/models/delay-predictor/2.1.0/unlock"),
        &[],
        "",
    )
    .await;
    assert_eq!((r.status, r.code().as_str()), (403, "FORBIDDEN"));
    let r = send(
        "POST",
        &url("/models/delay-predictor/2.1.0/unlock"),
        &[("x-confirm-unlock", "delay-predictor@2.1")],
        "",
    )
    .await;
    assert_eq!(r.status, 403);
    let r = send(
        "POST",
        &url("/models/delay-predictor/2.1.0/unlock"),
        &[("x-confirm-unlock", "delay-predictor@2.1.0")],
        "",
    )
    .await;
    assert_eq!(
        r.status,
        404,
        "the confirmed unlock reaches the app: {}",
        r.body_text()
    );
}
