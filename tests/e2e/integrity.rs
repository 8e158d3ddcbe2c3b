//! Enforcement integrity: no client can switch a guard off for itself or for anyone
//! else (DESIGN §10). One regression test per way it was found to be possible.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::*;

use crate::harness::raw_exchange as raw;

const MODEL_ROUTES: &str = r#"
[[route]]
name = "retrain"
path = "/models/{name}/retrain"
methods = ["POST"]
model = { action = "retrain", name = "path:name", force = "json:/force_retrain" }

[[model]]
name = "m"
version = "1.0.0"
locked = true
inference = true

[model_policy]
retrain_requires_force = true
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lower_case_method_is_refused_not_passed_as_unmatched() {
    let env = Env::start(MODEL_ROUTES).await;
    let out = raw(
        env.proxy.addr,
        b"post /models/m/retrain HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
        Duration::from_secs(5),
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    assert!(out.contains("INVALID_REQUEST"), "{out}");
    // Percent-encoded, the same path gets the same guard.
    let r = send(
        "POST",
        &env.url("/models/m/%72etrain"),
        &[("content-type", "application/json")],
        "{}",
    )
    .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (428, "RETRAIN_NOT_CONFIRMED")
    );
    let r = send("POST", &env.url("/models/m%2Fx/retrain"), &[], "{}").await;
    assert_eq!((r.status, r.code().as_str()), (400, "INVALID_PATH"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_upload_is_the_clients_408_and_never_opens_the_breaker() {
    let env = Env::start_with_main(|m| {
        m.replace(
            "shutdown_grace = \"5s\"\n",
            "shutdown_grace = \"5s\"\nclient_body_timeout = \"300ms\"\n",
        ) + "\n[upstream.circuit]\nconsecutive_failures = 2\nopen_for = \"30s\"\n"
    })
    .await;
    for _ in 0..5 {
        let out = raw(
            env.proxy.addr,
            b"POST /sha256 HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{",
            Duration::from_secs(5),
        )
        .await;
        assert!(out.starts_with("HTTP/1.1 408"), "{out}");
        assert!(out.contains("REQUEST_TIMEOUT"), "{out}");
    }
    // Five stalls later the app is still asked: the breaker never counted them.
    let r = get(&env.url("/health")).await;
    assert_eq!(r.status, 200, "{}", r.body_text());
    let m = get(&env.admin("/metrics")).await.body_text();
    assert_eq!(metric(&m, "sitegate_circuit_state"), 0.0, "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_bodies_hold_only_what_they_sent_of_the_memory_budget() {
    let env = Env::start_with_main(|m| {
        m.replace(
            "shutdown_grace = \"5s\"\n",
            "shutdown_grace = \"5s\"\nclient_body_timeout = \"20s\"\n",
        )
    })
    .await;
    std::fs::write(
        env.path("routes.toml"),
        "[[route]]\nname = \"v\"\npath = \"/sha256\"\nmax_body = \"2 MiB\"\ntimeout = \"20s\"\nschema = \"r\"\n[schema.r]\nrequired = [\"id\"]\n",
    )
    .unwrap();
    let r = send("POST", &env.admin("/reload"), &[], "").await;
    assert_eq!(r.status, 200, "{}", r.body_text());
    // 26 clients declare 2 MiB and send one byte: before, each held 10 MiB at once
    // (2 MiB and the parse factor), and 26 of them the whole default 256 MiB budget.
    let mut held = Vec::new();
    for _ in 0..26 {
        let mut s = tokio::net::TcpStream::connect(env.proxy.addr)
            .await
            .unwrap();
        s.write_all(b"POST /sha256 HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2097152\r\n\r\n[")
            .await
            .unwrap();
        held.push(s);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = tokio::time::Instant::now();
    let r = send(
        "POST",
        &env.url("/sha256"),
        &[("content-type", "application/json")],
        r#"{"id":1}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body_text());
    // Not made to wait for room (the budget wait is up to 10 s).
    assert!(started.elapsed() < Duration::from_secs(5));
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_half_open_h2c_connections_are_closed_and_cannot_fill_max_connections() {
    let env = Env::start_with_main(|m| {
        m.replace(
            "shutdown_grace = \"5s\"\n",
            "shutdown_grace = \"5s\"\nheader_read_timeout = \"1s\"\nmax_connections = 4\nworkers = 1\n",
        )
    })
    .await;
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";
    // A HEADERS frame on stream 1 without END_HEADERS: half a header block.
    const HALF: &[u8] = b"\x00\x00\x01\x01\x00\x00\x00\x00\x01\x82";
    let mut conns = Vec::new();
    for i in 0..4 {
        let mut s = tokio::net::TcpStream::connect(env.proxy.addr)
            .await
            .unwrap();
        s.write_all(PREFACE).await.unwrap();
        if i % 2 == 1 {
            s.write_all(HALF).await.unwrap();
        }
        conns.push(s);
    }
    // Every one of them is closed by the server within the deadline (+ close grace).
    for mut s in conns {
        let mut buf = [0u8; 4096];
        let closed = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "an h2c connection was still open after 5 s");
    }
    // And a new client is served.
    let r = get(&env.url("/health")).await;
    assert_eq!(r.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_sitegate_headers_never_reach_the_app() {
    let env = Env::start("").await;
    let r = send(
        "GET",
        &env.url("/headers"),
        &[
            ("x-sitegate-dropped", "7"),
            ("x-sitegate-model-version", "9.9.9"),
        ],
        "",
    )
    .await;
    let seen = r.json();
    assert!(seen.get("x-sitegate-dropped").is_none(), "{seen}");
    assert!(seen.get("x-sitegate-model-version").is_none(), "{seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_failed_keys_are_rate_limited_before_they_are_tried() {
    let env = Env::start_with_files(
        "[[route]]\nname = \"k\"\npath = \"/health\"\nauth = \"api_key\"\n",
        "[access]\napi_keys_file = \"keys\"\nfailed_auth_limit = { per_minute = 5, burst = 5 }\n",
        &[("keys", format!("{} ops\n", "0".repeat(64)))],
    )
    .await;
    let mut statuses = Vec::new();
    for i in 0..50 {
        let key = format!("wrong-key-000000{i:04}");
        statuses.push(get_with(&env.url("/health"), &[("x-api-key", &key)]).await);
    }
    let unauthorized = statuses.iter().filter(|s| **s == 401).count();
    let limited = statuses.iter().filter(|s| **s == 429).count();
    assert!(unauthorized <= 7, "{statuses:?}");
    assert!(limited >= 43, "{statuses:?}");
}

async fn get_with(url: &str, headers: &[(&str, &str)]) -> u16 {
    send("GET", url, headers, "").await.status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wildcard_origin_is_answered_with_star_and_no_credentials() {
    let env = Env::start_with("", "[access]\nallowed_origins = [\"*\"]\n").await;
    let r = send(
        "GET",
        &env.url("/health"),
        &[("origin", "https://evil.example.net")],
        "",
    )
    .await;
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    assert_eq!(r.header("access-control-allow-credentials"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_removes_the_keys_a_route_needs_is_refused() {
    let env = Env::start_with_files(
        "[[route]]\nname = \"k\"\npath = \"/health\"\nauth = \"api_key\"\n",
        "[access]\napi_keys_file = \"keys\"\n",
        &[("keys", format!("{} ops\n", "0".repeat(64)))],
    )
    .await;
    let main = std::fs::read_to_string(env.path("sitegate.toml")).unwrap();
    std::fs::write(
        env.path("sitegate.toml"),
        main.replace("api_keys_file = \"keys\"", "# api_keys_file = \"keys\""),
    )
    .unwrap();
    let r = send("POST", &env.admin("/reload"), &[], "").await;
    assert_eq!(r.status, 422, "{}", r.body_text());
    assert!(
        r.body_text().contains("needs API keys"),
        "{}",
        r.body_text()
    );
    // `check` says the same of the same files.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sitegate"))
        .args(["check", "--config"])
        .arg(env.path("sitegate.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs API keys"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_that_would_do_nothing_are_refused_by_check_and_reload_alike() {
    let env = Env::start("").await;
    let main = std::fs::read_to_string(env.path("sitegate.toml")).unwrap();
    // Each one was (or would be) accepted while protecting nothing.
    let cases = [
        ("\n[limits]\nauth = \"api_key\"\n", "unknown field `auth`"),
        (
            "\n[limits]\nmodel = { action = \"inference\" }\n",
            "unknown field `model`",
        ),
        (
            "\n[access]\napi_key_header = \"x-key\"\n",
            "no `api_keys_file` holds any",
        ),
    ];
    for (extra, wanted) in cases {
        std::fs::write(env.path("sitegate.toml"), format!("{main}{extra}")).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_sitegate"))
            .args(["check", "--config"])
            .arg(env.path("sitegate.toml"))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{extra}: {stderr}");
        assert!(stderr.contains(wanted), "{extra}: {stderr}");
        let r = send("POST", &env.admin("/reload"), &[], "").await;
        assert_eq!(r.status, 422, "{extra}: {}", r.body_text());
        assert!(r.body_text().contains(wanted), "{}", r.body_text());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_included_file_caught_empty_mid_save_is_never_applied() {
    let env = Env::start(MODEL_ROUTES).await;
    let guarded = || async {
        send(
            "POST",
            &env.url("/models/m/retrain"),
            &[("content-type", "application/json")],
            "{}",
        )
        .await
        .status
    };
    assert_eq!(guarded().await, 428);
    // An in-place save: the file is empty for a moment, then written again.
    for hold_ms in [200u64, 500, 1000] {
        std::fs::write(env.path("routes.toml"), "").unwrap();
        let until = tokio::time::Instant::now() + Duration::from_millis(hold_ms);
        while tokio::time::Instant::now() < until {
            assert_eq!(
                guarded().await,
                428,
                "a guard went off while the file was empty"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        std::fs::write(env.path("routes.toml"), MODEL_ROUTES).unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(guarded().await, 428);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_reads_and_writes_need_a_loopback_peer_or_the_token() {
    // Every peer of this test is loopback (tests bind 127.0.0.1 only): it is served.
    let env = Env::start("").await;
    assert_eq!(get(&env.admin("/config")).await.status, 200);
    assert_eq!(get(&env.admin("/metrics")).await.status, 200);
    // A token too short is refused by the policy.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sitegate"))
        .args(["check", "--config"])
        .arg(env.path("sitegate.toml"))
        .env("SG_TEST_ADMIN", "short")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let main = std::fs::read_to_string(env.path("sitegate.toml")).unwrap();
    std::fs::write(
        env.path("sitegate.toml"),
        main.replace(
            "shutdown_grace = \"5s\"\n",
            "shutdown_grace = \"5s\"\nadmin_token_env = \"SG_TEST_ADMIN\"\n",
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sitegate"))
        .args(["check", "--config"])
        .arg(env.path("sitegate.toml"))
        .env("SG_TEST_ADMIN", "short")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 16 bytes"));
    // With loopback not trusted (every container of a pod shares it), only the token
    // opens /config and /reload; probes and scrapes stay open.
    let token: String = (0..32).map(|_| fastrand::alphanumeric()).collect();
    std::fs::write(env.path("admin.token"), format!("{token}\n")).unwrap();
    std::fs::write(
        env.path("sitegate.toml"),
        main.replace(
            "shutdown_grace = \"5s\"\n",
            "shutdown_grace = \"5s\"\nadmin_token_file = \"admin.token\"\nadmin_trust_loopback = false\n",
        ),
    )
    .unwrap();
    let r = send("POST", &env.admin("/reload"), &[], "").await;
    assert_eq!(r.status, 200, "{}", r.body_text());
    let bearer = format!("Bearer {token}");
    // One character changed, never the same one (a random token may end in any letter).
    let last = if token.ends_with('x') { 'y' } else { 'x' };
    let wrong = format!("Bearer {}{last}", &token[..31]);
    for (path, method) in [("/config", "GET"), ("/reload", "POST")] {
        let none = send(method, &env.admin(path), &[], "").await;
        assert_eq!(none.status, 401, "{path}: {}", none.body_text());
        assert!(none.header("www-authenticate").is_some());
        let bad = send(method, &env.admin(path), &[("authorization", &wrong)], "").await;
        assert_eq!(bad.status, 401, "{path}");
        let ok = send(method, &env.admin(path), &[("authorization", &bearer)], "").await;
        assert_eq!(ok.status, 200, "{path}: {}", ok.body_text());
    }
    let config = send(
        "GET",
        &env.admin("/config"),
        &[("authorization", &bearer)],
        "",
    )
    .await;
    assert!(!config.body_text().contains(&token));
    for path in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(get(&env.admin(path)).await.status, 200, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn try_answers_as_the_proxy_does_for_a_corpus_of_requests_and_head_keeps_its_length() {
    let flask = tokio::task::spawn_blocking(crate::legacy::Flask::start)
        .await
        .unwrap();
    let proxy = crate::legacy::proxy_for(&flask).await;
    // A HEAD answer carries the app's Content-Length of the body a GET would get
    // (it was rewritten to 0 by the redaction phase).
    let direct = send(
        "HEAD",
        &format!("http://127.0.0.1:{}/health", flask.port),
        &[],
        "",
    )
    .await;
    let via = send("HEAD", &format!("http://{}/health", proxy.addr), &[], "").await;
    let len = direct
        .header("content-length")
        .expect("Flask sends a length");
    assert_ne!(len, "0");
    assert_eq!(via.header("content-length"), Some(len));
    let corpus: &[(&str, &str)] = &[
        (
            "/models/delay-predictor/retrain",
            r#"{"force_retrain":"true"}"#,
        ),
        ("/models/delay-predictor/retrain", "{}"),
        (
            "/models/delay-predictor/retrain",
            r#"{"force_retrain":true}"#,
        ),
        ("/models/delay-predictor/%72etrain", "{}"),
        ("/%6dodels/risk-classifier/0.9.0/predict", "{}"),
        ("//models/no-such-model/6.6.6/predict", "{}"),
        ("/models/delay-predictor/2.1.0/predict", "{}"),
        ("/models/delay-predictor/predict", "{}"),
        ("/models/a%2Fb/1/predict", "{}"),
        ("/api/phase9/%69ntelligence", r#"{"project_id":"X"}"#),
        ("/api/phase9/intelligence", "{not json"),
        (
            "/api/phase9/intelligence",
            r#"{"project_id":"P001","project_name":" B ","budget":"5","scheduled_duration_days":9}"#,
        ),
        ("/api/phase13/budget-forecast", "[]"),
        ("/x/../../etc", "{}"),
        ("/api/phase12/delay-prediction;x", "{}"),
    ];
    for (path, body) in corpus {
        let r = send(
            "POST",
            &format!("http://{}{path}", proxy.addr),
            &[("content-type", "application/json")],
            *body,
        )
        .await;
        let json: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_default();
        let proxy_says = if r.status < 300 || json["error"]["request_id"].is_null() {
            "ALLOWED".to_string()
        } else {
            format!("REJECTED {}", r.code())
        };
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_sitegate"))
            .args(["try", "--config", "config/sitegate.toml", "--path", path])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all_sync(body.as_bytes());
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let try_says = text.split([' ', ';', ',']).take(2).collect::<Vec<_>>();
        let try_says = if try_says[0] == "ALLOWED" {
            "ALLOWED".to_string()
        } else {
            try_says.join(" ")
        };
        assert_eq!(try_says, proxy_says, "{path} {body}: try said {text}");
        assert_eq!(
            out.status.code(),
            Some(if try_says == "ALLOWED" { 0 } else { 1 })
        );
    }
}

trait WriteAllSync {
    fn write_all_sync(self, bytes: &[u8]);
}

impl WriteAllSync for std::process::ChildStdin {
    fn write_all_sync(mut self, bytes: &[u8]) {
        use std::io::Write;
        self.write_all(bytes).unwrap();
    }
}
