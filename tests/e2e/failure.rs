//! Upstream failure over real sockets: fallback bodies, retries, honest errors, app
//! restarts under load. The breaker's timing is tested on a paused clock in
//! `src/pipeline/tests.rs`.

use std::time::Duration;

use crate::harness::*;

const FALLBACK: &str = r#"{"status":"degraded","risk_score":null,"request_id":"{request_id}"}"#;

fn routes(extra: &str) -> String {
    format!(
        r#"
[[route]]
name = "slow"
path = "/api/slow"
timeout = "300ms"
fallback = {{ file = "fallbacks/slow.json", on = ["timeout"] }}

[[route]]
name = "fail"
path = "/api/fail"
fallback = {{ body = '{{"status":"degraded"}}', status = 203, on = ["5xx"], headers = {{ "X-Degraded" = "1" }} }}

[[route]]
name = "text"
path = "/api/text"
expect_json = true
fallback = {{ body = '{{"status":"not json"}}' }}

[[route]]
name = "text-plain"
path = "/api/text2"
expect_json = true
{extra}
"#
    )
}

/// Starts the env with the fallback file the policy refers to.
async fn start(main_extra: &str) -> Env {
    let files = [("fallbacks/slow.json", FALLBACK.to_string())];
    Env::start_with_files(&routes(""), main_extra, &files).await
}

#[tokio::test]
async fn fallbacks_answer_for_their_reasons_with_the_request_id() {
    let env = start("").await;
    // timeout → the file's body, 200, with the request id substituted.
    let r = send(
        "GET",
        &env.url("/api/slow?ms=2000"),
        &[("x-request-id", "fb-1")],
        "",
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-sitegate-fallback"), Some("timeout"));
    assert_eq!(r.header("x-request-id"), Some("fb-1"));
    assert_eq!(r.json()["status"], "degraded");
    assert_eq!(r.json()["request_id"], "fb-1");

    // 5xx → the inline body, its status and headers.
    let r = get(&env.url("/api/fail")).await;
    assert_eq!(r.status, 203);
    assert_eq!(r.header("x-sitegate-fallback"), Some("5xx"));
    assert_eq!(r.header("x-degraded"), Some("1"));
    assert_eq!(r.json()["status"], "degraded");

    // Non-JSON on a JSON route → invalid-response; without a fallback → 502 JSON.
    let r = get(&env.url("/api/text")).await;
    assert_eq!(r.header("x-sitegate-fallback"), Some("invalid-response"));
    assert_eq!(r.json()["status"], "not json");

    let m = get(&env.admin("/metrics")).await.body_text();
    for reason in ["timeout", "5xx", "invalid-response"] {
        let route = match reason {
            "timeout" => "slow",
            "5xx" => "fail",
            _ => "text",
        };
        let series = format!("sitegate_fallbacks_total{{route=\"{route}\",reason=\"{reason}\"}}");
        assert_eq!(metric(&m, &series), 1.0, "{series} in\n{m}");
    }
}

#[tokio::test]
async fn a_route_without_fallback_gets_502_for_invalid_json() {
    let env =
        Env::start("[[route]]\nname = \"t\"\npath = \"/api/text\"\nexpect_json = true\n").await;
    let r = get(&env.url("/api/text")).await;
    assert_eq!(r.status, 502);
    assert_eq!(r.code(), "UPSTREAM_UNAVAILABLE");
    assert!(r.header("x-sitegate-fallback").is_none());
}

#[tokio::test]
async fn retries_repeat_idempotent_requests_within_the_budget() {
    let env = Env::start(
        "[[route]]\nname = \"flaky\"\npath = \"/api/flaky\"\nmethods = [\"GET\"]\nretry = { attempts = 2, on = [\"connect\", 503] }\n\n[[route]]\nname = \"flaky-post\"\npath = \"/api/flaky\"\nmethods = [\"POST\"]\nretry = { attempts = 2, on = [503] }\n",
    )
    .await;
    // Fails twice, answers the third time: two retries make it.
    let r = get(&env.url("/api/flaky?key=a&fail=2")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["call"], 3);
    // Fails three times: the retries run out and the app's 503 passes on.
    let r = get(&env.url("/api/flaky?key=b&fail=3")).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["call"], 3);
    let m = get(&env.admin("/metrics")).await.body_text();
    assert_eq!(
        metric(&m, "sitegate_retries_total{route=\"flaky\"}"),
        4.0,
        "{m}"
    );
    // POST is not repeated unless the route says the app makes it safe.
    let r = send("POST", &env.url("/api/flaky?key=c&fail=1"), &[], "{}").await;
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["call"], 1);
}

#[tokio::test]
async fn an_empty_retry_budget_stops_retries() {
    let env = Env::start_with(
        "[[route]]\nname = \"flaky\"\npath = \"/api/flaky\"\nretry = { attempts = 2, on = [503] }\n",
        "\n[upstream.retry_budget]\npercent = 0\nmin_per_second = 0\n",
    )
    .await;
    let r = get(&env.url("/api/flaky?key=d&fail=1")).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["call"], 1);
}

#[tokio::test]
async fn fallback_files_are_part_of_the_policy() {
    let env = start("").await;
    std::fs::write(
        env.path("fallbacks/slow.json"),
        r#"{"status":"changed","request_id":"{request_id}"}"#,
    )
    .unwrap();
    let url = env.url("/api/slow?ms=2000");
    assert_eventually(
        "the edited fallback file is served",
        Duration::from_secs(10),
        || {
            let url = url.clone();
            async move { get(&url).await.json()["status"] == "changed" }
        },
    )
    .await;
    // A broken fallback file is refused like any policy error.
    std::fs::write(env.path("fallbacks/slow.json"), "{not json").unwrap();
    let r = send("POST", &env.admin("/reload"), &[], "").await;
    assert_eq!(r.status, 422);
    let err = r.json()["errors"][0].as_str().unwrap().to_string();
    assert!(
        err.contains("routes.toml:6:21: fallback file") && err.contains("is not valid JSON"),
        "{err}"
    );
    assert_eq!(
        get(&env.url("/api/slow?ms=2000")).await.json()["status"],
        "changed"
    );
}

/// How a client saw one answer during the restart run.
#[derive(Default, Debug)]
struct Tally {
    app: u64,
    fallback: u64,
    design_error: u64,
    unexpected: u64,
    transport_error: u64,
    hung: u64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_load_app_restarts_give_only_app_answers_fallbacks_or_json_errors() {
    // SITEGATE_FAULT_SECS=30 for the long run quoted in the README.
    let secs: u64 = std::env::var("SITEGATE_FAULT_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(6);
    let port = closed_port();
    let app = sitegate::demo::start(port).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let main = dir.path().join("sitegate.toml");
    let circuit = "\n[upstream.circuit]\nconsecutive_failures = 5\nopen_for = \"300ms\"\n";
    std::fs::write(&main, main_toml(&port.to_string(), circuit)).unwrap();
    std::fs::write(
        dir.path().join("routes.toml"),
        "[[route]]\nname = \"h\"\npath = \"/health\"\ntimeout = \"2s\"\nfallback = { body = '{\"status\":\"cached\"}', on = [\"connect\", \"timeout\", \"circuit-open\"] }\n",
    )
    .unwrap();
    let proxy = start_proxy(&main, Default::default()).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    let codes = [
        "UPSTREAM_UNAVAILABLE",
        "UPSTREAM_TIMEOUT",
        "RESOURCE_EXHAUSTED",
    ];
    let mut clients = Vec::new();
    for i in 0..8 {
        let base = format!("http://{}", proxy.addr);
        clients.push(tokio::spawn(async move {
            let client = client();
            let mut t = Tally::default();
            let mut n = 0u64;
            while tokio::time::Instant::now() < deadline {
                n += 1;
                // Half the requests have a fallback, half (unmatched) do not.
                let path = if (n + i).is_multiple_of(2) {
                    "/health"
                } else {
                    "/api/slow?ms=1"
                };
                let req = http::Request::get(format!("{base}{path}"))
                    .body(sitegate::body::full(""))
                    .unwrap();
                let answer = tokio::time::timeout(Duration::from_secs(5), async {
                    let resp = client.request(req).await?;
                    let status = resp.status().as_u16();
                    let fallback = resp.headers().contains_key("x-sitegate-fallback");
                    let body = http_body_util::BodyExt::collect(resp.into_body())
                        .await?
                        .to_bytes();
                    Ok::<_, Box<dyn std::error::Error + Send + Sync>>((status, fallback, body))
                })
                .await;
                match answer {
                    Err(_) => t.hung += 1,
                    Ok(Err(_)) => t.transport_error += 1,
                    Ok(Ok((_, true, _))) => t.fallback += 1,
                    Ok(Ok((200, false, _))) => t.app += 1,
                    Ok(Ok((_, false, body))) => {
                        let code = serde_json::from_slice::<serde_json::Value>(&body)
                            .ok()
                            .and_then(|v| v["error"]["code"].as_str().map(String::from));
                        match code {
                            Some(c) if codes.contains(&c.as_str()) => t.design_error += 1,
                            _ => t.unexpected += 1,
                        }
                    }
                }
            }
            t
        }));
    }
    // Kill the app twice during the run and bring it back on the same port.
    let mut app = Some(app);
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_secs(secs) / 4).await;
        drop(app.take());
        tokio::time::sleep(Duration::from_secs(secs) / 8).await;
        app = Some(sitegate::demo::start(port).await.unwrap());
    }
    let mut total = Tally::default();
    for c in clients {
        let t = c.await.unwrap();
        total.app += t.app;
        total.fallback += t.fallback;
        total.design_error += t.design_error;
        total.unexpected += t.unexpected;
        total.transport_error += t.transport_error;
        total.hung += t.hung;
    }
    eprintln!("{secs} s, app killed and restarted twice: {total:?}");
    assert_eq!(total.transport_error, 0, "{total:?}");
    assert_eq!(total.hung, 0, "{total:?}");
    assert_eq!(total.unexpected, 0, "{total:?}");
    assert!(
        total.app > 0 && total.fallback > 0 && total.design_error > 0,
        "{total:?}"
    );
}
