//! Secret redaction through the proxy: buffered and streamed responses, compressed
//! bodies, and the log lines themselves.

use crate::harness::*;

const SECRET: &str = "AKIAIOSFODNN7EXAMPLE";

#[tokio::test]
async fn a_buffered_json_response_is_redacted_with_exact_length_and_count() {
    let env = Env::start("").await;
    let r = get(&env.url("/api/leak")).await;
    assert_eq!(r.status, 200);
    let text = r.body_text();
    assert!(!text.contains(SECRET), "{text}");
    assert_eq!(r.json()["debug"]["aws_access_key_id"], "[REDACTED]");
    assert_eq!(r.header("x-sitegate-redacted"), Some("1"));
    assert_eq!(
        r.header("content-length").unwrap(),
        r.body.len().to_string()
    );
    let m = get(&env.admin("/metrics")).await.body_text();
    assert_eq!(
        metric(
            &m,
            "sitegate_redactions_total{route=\"unmatched\",detector=\"aws-access-key-id\"}"
        ),
        1.0,
        "{m}"
    );
    // A clean JSON response is untouched and carries no count.
    let r = get(&env.url("/health")).await;
    assert!(r.header("x-sitegate-redacted").is_none());
    assert_eq!(r.json()["status"], "healthy");
}

#[tokio::test]
async fn a_streamed_response_is_redacted_across_chunk_boundaries() {
    let env = Env::start("").await;
    // 1 MB of log lines with no Content-Length (so it streams), a secret on each
    // 100-byte line, frames of 64 KiB cutting through secrets.
    let n = 1_000_000;
    let r = get(&env.url(&format!("/secrets?n={n}"))).await;
    assert_eq!(r.status, 200);
    assert!(r.header("content-length").is_none() || r.header("transfer-encoding").is_some());
    let text = r.body_text();
    assert!(
        !text.contains("AKIAIOSFODNN7"),
        "a secret (or part of one) got through"
    );
    // Every complete line's secret became the replacement; the cut-off last line too.
    assert_eq!(text.matches("key=[REDACTED] user").count(), n / 100);
}

#[tokio::test]
async fn compressed_responses_are_decoded_and_redacted_or_refused() {
    let env = Env::start("").await;
    let r = get(&env.url("/api/gzip-leak")).await;
    assert_eq!(r.status, 200);
    assert!(r.header("content-encoding").is_none());
    assert_eq!(r.json()["aws_access_key_id"], "[REDACTED]");
    // An encoding sitegate cannot read is refused, not passed on unread.
    let r = get(&env.url("/api/brotli")).await;
    assert_eq!(r.status, 502);
    assert_eq!(r.code(), "UPSTREAM_UNAVAILABLE");
}

#[tokio::test]
async fn routes_can_opt_out_and_binary_bodies_pass_unchanged() {
    let env = Env::start("[[route]]\nname = \"raw\"\npath = \"/api/leak\"\nredact = false\n").await;
    let r = get(&env.url("/api/leak")).await;
    assert!(
        r.body_text().contains(SECRET),
        "redact = false must pass the body as is"
    );
    let body = format!("binary {SECRET}");
    let r = send(
        "POST",
        &env.url("/echo"),
        &[("content-type", "application/octet-stream")],
        body.clone(),
    )
    .await;
    assert_eq!(r.body_text(), body);
}

#[tokio::test]
async fn site_patterns_apply_and_reload() {
    let env = Env::start_with("", "\n[redaction]\nreplacement = \"<gone>\"\n").await;
    let r = send(
        "POST",
        &env.url("/echo"),
        &[("content-type", "text/plain")],
        format!("k={SECRET}"),
    )
    .await;
    assert_eq!(r.body_text(), "k=<gone>");
    let token = format!("CAI-{}", "Q".repeat(24));
    let r = send(
        "POST",
        &env.url("/echo"),
        &[("content-type", "text/plain")],
        token.clone(),
    )
    .await;
    assert_eq!(r.body_text(), token);
    let main = std::fs::read_to_string(env.path("sitegate.toml")).unwrap();
    std::fs::write(
        env.path("sitegate.toml"),
        format!("{main}\n[[redaction.pattern]]\nname = \"suite-service-token\"\nregex = \"CAI-[A-Z0-9]{{24}}\"\n"),
    )
    .unwrap();
    let url = env.url("/echo");
    assert_eventually(
        "the site pattern applies",
        std::time::Duration::from_secs(10),
        || {
            let (url, token) = (url.clone(), token.clone());
            async move {
                send("POST", &url, &[("content-type", "text/plain")], token)
                    .await
                    .body_text()
                    == "<gone>"
            }
        },
    )
    .await;
}

#[tokio::test]
async fn without_room_in_the_memory_budget_a_response_streams_instead_of_buffering() {
    let env = Env::start_with("", "\n[limits]\nbuffer_budget = 64\n").await;
    let r = get(&env.url("/api/leak")).await;
    assert_eq!(r.status, 200);
    // Streamed: still redacted, but no count header and no Content-Length.
    assert!(r.header("x-sitegate-redacted").is_none(), "{:?}", r.headers);
    assert!(r.header("content-length").is_none());
    assert_eq!(r.json()["debug"]["aws_access_key_id"], "[REDACTED]");
    let m = get(&env.admin("/metrics")).await.body_text();
    assert_eq!(metric(&m, "sitegate_buffered_bytes"), 0.0, "{m}");
}

#[test]
fn redact_check_gates_a_pipeline_on_secrets_and_never_prints_them() {
    let dir = tempfile::tempdir().unwrap();
    let token = format!("ghp_{}", sitegate::redact::samples::alnum(36, 90));
    let leaky = dir.path().join("settings.env");
    std::fs::write(
        &leaky,
        format!(
            "NAME=suite\nGITHUB_TOKEN_X={token}\nDEMO_KEY=AKIAIOSFODNN7EXAMPLE # sitegate:allow\n"
        ),
    )
    .unwrap();
    let clean = dir.path().join("sitegate.toml");
    std::fs::write(
        &clean,
        "[access]\napi_keys_file = \"/etc/sitegate/api-keys\"\napi_key_header = \"x-api-key\"\n",
    )
    .unwrap();
    let run = |files: &[&std::path::Path]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_sitegate"))
            .args(["redact", "--check"])
            .args(files)
            .output()
            .unwrap()
    };
    let out = run(&[&leaky, &clean]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert_eq!(
        stdout.trim(),
        format!("{}:2:16: github-token", leaky.display())
    );
    assert!(!stdout.contains(&token) && !String::from_utf8_lossy(&out.stderr).contains(&token));
    // sitegate's own policy keys are not secrets: the policy passes.
    let out = run(&[&clean]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = run(&[&dir.path().join("missing")]);
    assert_eq!(out.status.code(), Some(2));
    // Cleaning a file: a key block with no END within the window stops the output.
    let key = dir.path().join("key.txt");
    std::fs::write(
        &key,
        format!(
            "-----BEGIN RSA PRIVATE KEY-----\n{}\n",
            "QUJD".repeat(40_000)
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sitegate"))
        .arg("redact")
        .arg(&key)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(out.stdout, b"[REDACTED]");
}
