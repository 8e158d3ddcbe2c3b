//! Forwarding: fidelity, headers, limits, upstream failures, admin, drain.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use sitegate::body::BoxError;

use crate::harness::*;

const ROUTES: &str = r#"
[[route]]
name = "intel"
path = "/api/phase9/intelligence"
methods = ["POST"]
max_body = 100
content_types = ["application/json"]

[[route]]
name = "slow"
path = "/api/slow"
timeout = "300ms"

[[route]]
name = "echo"
path = "/echo"
max_body = "1 KiB"

[[route]]
name = "sha"
path = "/sha256"
max_body = "1 KiB"
"#;

#[tokio::test]
async fn bodies_and_headers_pass_through_unchanged() {
    let env = Env::start(ROUTES).await;
    // A 300 KB streamed response arrives byte for byte, with its content type.
    let r = get(&env.url("/bytes?n=300000")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/octet-stream"));
    assert_eq!(r.body.len(), 300_000);
    assert!(
        r.body
            .iter()
            .enumerate()
            .all(|(i, b)| *b == sitegate::demo::pattern_byte(i as u64))
    );
    // A request body goes up and comes back byte for byte, even bytes that are not UTF-8.
    let payload: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
    let r = send(
        "POST",
        &env.url("/echo"),
        &[("content-type", "application/x-thing")],
        payload.clone(),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/x-thing"));
    assert_eq!(&r.body[..], &payload[..]);
    // Query strings reach the app.
    let r = get(&env.url("/api/slow?ms=1")).await;
    assert_eq!(r.json()["slept_ms"], 1);
}

#[tokio::test]
async fn hop_by_hop_headers_are_dropped_and_forwarding_headers_added() {
    let env = Env::start(ROUTES).await;
    let r = send(
        "GET",
        &env.url("/headers"),
        &[
            ("connection", "keep-alive, x-hop-secret"),
            ("x-hop-secret", "must not reach the app"),
            ("keep-alive", "timeout=5"),
            ("proxy-authorization", "Basic Zm9vOmJhcg=="),
            ("te", "trailers"),
            ("x-end-to-end", "kept"),
            ("x-forwarded-for", "203.0.113.9"),
        ],
        Bytes::new(),
    )
    .await;
    let seen = r.json();
    for gone in [
        "connection",
        "x-hop-secret",
        "keep-alive",
        "proxy-authorization",
        "te",
    ] {
        assert!(seen.get(gone).is_none(), "{gone} was forwarded: {seen}");
    }
    assert_eq!(seen["x-end-to-end"], "kept");
    // The client is not a trusted proxy: what it claimed about itself is dropped.
    assert_eq!(seen["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen["x-forwarded-proto"], "http");
    assert_eq!(seen["x-forwarded-host"], env.proxy.addr.to_string());
    // The generated request id went upstream and came back.
    let id = r.header("x-request-id").unwrap().to_string();
    assert_eq!(seen["x-request-id"], id.as_str());
    assert!(id.starts_with("req_") && id.len() == 16, "{id}");
    assert!(
        id[4..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "{id}"
    );
}

#[tokio::test]
async fn client_request_ids_are_kept_when_valid_and_replaced_when_not() {
    let env = Env::start(ROUTES).await;
    let r = send(
        "GET",
        &env.url("/headers"),
        &[("x-request-id", "trace-42.a_b")],
        Bytes::new(),
    )
    .await;
    assert_eq!(r.header("x-request-id"), Some("trace-42.a_b"));
    assert_eq!(r.json()["x-request-id"], "trace-42.a_b");
    let r = send(
        "GET",
        &env.url("/headers"),
        &[("x-request-id", "bad id;drop table")],
        Bytes::new(),
    )
    .await;
    let id = r.header("x-request-id").unwrap();
    assert!(id.starts_with("req_"), "{id}");
    assert_eq!(r.json()["x-request-id"], id);
}

#[tokio::test]
async fn h2c_clients_are_served() {
    let env = Env::start(ROUTES).await;
    let h2 = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let r = send_body(
        &h2,
        "POST",
        &env.url("/echo"),
        &[],
        sitegate::body::full("over h2c"),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(&r.body[..], b"over h2c");
    let r = send_body(
        &h2,
        "GET",
        &env.url("/headers"),
        &[],
        sitegate::body::full(""),
    )
    .await;
    // The app got HTTP/1.1 with a Host header built from the h2 authority.
    assert_eq!(r.json()["host"], env.proxy.addr.to_string());
}

#[tokio::test]
async fn declared_oversize_and_wrong_type_never_reach_the_app() {
    let env = Env::start(ROUTES).await;
    let before = env.app.requests();
    let big = vec![b' '; 101];
    let r = send(
        "POST",
        &env.url("/api/phase9/intelligence"),
        &[("content-type", "application/json")],
        big,
    )
    .await;
    assert_eq!(r.status, 413);
    assert_eq!(r.code(), "PAYLOAD_TOO_LARGE");
    assert_eq!(
        r.json()["error"]["request_id"],
        r.header("x-request-id").unwrap()
    );
    let r = send(
        "POST",
        &env.url("/api/phase9/intelligence"),
        &[("content-type", "text/plain")],
        "{}",
    )
    .await;
    assert_eq!(r.status, 415);
    assert_eq!(r.code(), "UNSUPPORTED_MEDIA_TYPE");
    assert_eq!(
        env.app.requests(),
        before,
        "a refused request reached the app"
    );
    let r = send(
        "POST",
        &env.url("/api/phase9/intelligence"),
        &[("content-type", "application/json")],
        "{}",
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(env.app.requests(), before + 1);
}

#[tokio::test]
async fn a_chunked_body_is_cut_off_at_the_limit() {
    let env = Env::start(ROUTES).await;
    // Chunks against a 1 KiB limit, with no Content-Length: about 16 MiB in all.
    let (mut tx, body) = http_body_util::channel::Channel::<Bytes, BoxError>::new(1);
    let feeder = tokio::spawn(async move {
        for i in 0..260 {
            // Small chunks across the limit, then larger ones (fast, even under load).
            let size = if i < 4 { 512 } else { 64 * 1024 };
            if tx.send_data(Bytes::from(vec![b'x'; size])).await.is_err() {
                break;
            }
        }
    });
    // /sha256 reads the whole body before it answers (unlike /echo, which answers at
    // once and would race the limit).
    let r = send_body(
        &client(),
        "POST",
        &env.url("/sha256"),
        &[],
        body.boxed_unsync(),
    )
    .await;
    assert_eq!(r.status, 413);
    assert_eq!(r.code(), "PAYLOAD_TOO_LARGE");
    let _ = feeder.await;
    // The proxy stopped forwarding at the chunk that passed the limit; the rest was
    // read only to let the client see the answer, never sent on.
    let m = get(&env.admin("/metrics")).await.body_text();
    let forwarded = metric(&m, "sitegate_request_bytes_total");
    assert!(
        forwarded <= 1024.0 + 512.0,
        "forwarded {forwarded} bytes:\n{m}"
    );
}

#[tokio::test]
async fn unmatched_requests_can_be_denied() {
    let env = Env::start(&format!("{ROUTES}\n[unmatched]\naction = \"deny\"\n")).await;
    let r = get(&env.url("/not/a/route")).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.code(), "NOT_FOUND");
    // A known path with a method the route does not allow is unmatched too.
    let r = get(&env.url("/api/phase9/intelligence")).await;
    assert_eq!(r.status, 404);
    assert_eq!(env.app.requests(), 0);
}

#[tokio::test]
async fn upstream_connect_failure_is_502_json() {
    let app = sitegate::demo::start(([127, 0, 0, 1], 0).into())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let main = dir.path().join("sitegate.toml");
    std::fs::write(&main, main_toml(&closed_port().to_string(), "")).unwrap();
    std::fs::write(dir.path().join("routes.toml"), routes_file("")).unwrap();
    let proxy = start_proxy(&main, Default::default()).await;
    let r = get(&format!("http://{}/health", proxy.addr)).await;
    assert_eq!(r.status, 502);
    assert_eq!(r.code(), "UPSTREAM_UNAVAILABLE");
    assert_eq!(r.header("content-type"), Some("application/json"));
    drop(app);
}

#[tokio::test]
async fn upstream_timeout_is_504_and_5xx_passes_through() {
    let env = Env::start(ROUTES).await;
    let r = get(&env.url("/api/slow?ms=3000")).await;
    assert_eq!(r.status, 504);
    assert_eq!(r.code(), "UPSTREAM_TIMEOUT");
    let r = get(&env.url("/api/fail")).await;
    assert_eq!(r.status, 500);
    assert_eq!(r.json()["detail"], "the prediction service crashed");
}

#[tokio::test]
async fn past_max_inflight_requests_get_429_with_retry_after() {
    let env = Env::start_with(
        "[[route]]\nname = \"slow\"\npath = \"/api/slow\"\n",
        "[limits]\nmax_inflight = 1\n",
    )
    .await;
    let url = env.url("/api/slow?ms=1500");
    let first = tokio::spawn(async move { get(&url).await });
    let admin = env.admin("/metrics");
    assert_eventually("the first request is in flight", Duration::from_secs(5), || {
        let admin = admin.clone();
        async move { metric(&get(&admin).await.body_text(), "sitegate_inflight_requests") >= 1.0 }
    })
    .await;
    let r = get(&env.url("/health")).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.code(), "RESOURCE_EXHAUSTED");
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(first.await.unwrap().status, 200);
    assert_eq!(get(&env.url("/health")).await.status, 200);
}

#[tokio::test]
async fn admin_endpoints_report_health_metrics_and_policy() {
    let env = Env::start(ROUTES).await;
    assert_eq!(get(&env.admin("/healthz")).await.status, 200);
    let ready = get(&env.admin("/readyz")).await;
    assert_eq!(ready.status, 200);
    let version = env.proxy.shared.policy().version.clone();
    assert_eq!(ready.json()["policy_version"], version.as_str());

    get(&env.url("/health")).await;
    send(
        "POST",
        &env.url("/api/phase9/intelligence"),
        &[("content-type", "text/plain")],
        "x",
    )
    .await;
    let m = get(&env.admin("/metrics")).await;
    assert!(m.header("content-type").unwrap().starts_with("text/plain"));
    let text = m.body_text();
    assert_eq!(
        metric(
            &text,
            "sitegate_requests_total{route=\"unmatched\",method=\"GET\",status=\"2xx\"}"
        ),
        1.0,
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            "sitegate_rejections_total{route=\"intel\",code=\"UNSUPPORTED_MEDIA_TYPE\"}"
        ),
        1.0,
        "{text}"
    );
    assert!(
        text.contains("sitegate_request_duration_seconds_bucket"),
        "{text}"
    );
    assert!(text.contains("sitegate_inflight_requests 0"), "{text}");

    let c = get(&env.admin("/config")).await.json();
    assert_eq!(c["version"], version.as_str());
    assert_eq!(c["files"].as_array().unwrap().len(), 2);
    assert_eq!(
        c["routes"],
        serde_json::json!(["intel", "slow", "echo", "sha"])
    );
    assert!(c["loaded_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(get(&env.admin("/nope")).await.status, 404);
}

#[tokio::test]
async fn shutdown_drains_in_flight_requests() {
    let env =
        Env::start("[[route]]\nname = \"slow\"\npath = \"/api/slow\"\ntimeout = \"10s\"\n").await;
    let url = env.url("/api/slow?ms=700");
    let in_flight = tokio::spawn(async move { get(&url).await });
    let shared = env.proxy.shared.clone();
    assert_eventually("the request is in flight", Duration::from_secs(5), || {
        let n = shared.inflight.load(std::sync::atomic::Ordering::SeqCst);
        async move { n == 1 }
    })
    .await;
    env.proxy.shutdown();
    let r = get(&env.admin("/readyz")).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["reason"], "draining");
    // The listener is closed: new connections are refused.
    let addr = env.proxy.addr;
    assert_eventually(
        "new connections are refused",
        Duration::from_secs(5),
        || async move { tokio::net::TcpStream::connect(addr).await.is_err() },
    )
    .await;
    // The request that was running finishes normally.
    let r = in_flight.await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["slept_ms"], 700);
    tokio::time::timeout(Duration::from_secs(5), env.proxy.wait())
        .await
        .expect("drain did not end");
}

#[tokio::test]
async fn upstream_connections_are_reused_and_idle_ones_closed() {
    // One worker: each worker keeps its own pool, and every `get` here opens a new
    // client connection that any worker may accept.
    let env = Env::start_with_main(|main| {
        main.replace(
            "shutdown_grace = \"5s\"",
            "shutdown_grace = \"5s\"\nworkers = 1",
        )
        .replace(
            "timeout = \"5s\"",
            "timeout = \"5s\"\npool_idle_timeout = \"300ms\"",
        )
    })
    .await;
    for _ in 0..10 {
        assert_eq!(get(&env.url("/health")).await.status, 200);
    }
    assert_eq!(
        env.app.connections(),
        1,
        "sequential requests did not share one upstream connection"
    );
    assert_eq!(env.app.open_connections(), 1);
    // The pool's timer closes the idle connection.
    assert_eventually(
        "the idle upstream connection is closed",
        Duration::from_secs(5),
        || {
            let open = env.app.open_connections();
            async move { open == 0 }
        },
    )
    .await;
}

/// A proxy that gives clients 300 ms to send a request head.
async fn with_short_header_timeout() -> Env {
    Env::start_with_main(|main| {
        main.replace(
            "shutdown_grace = \"5s\"",
            "shutdown_grace = \"5s\"\nheader_read_timeout = \"300ms\"",
        )
    })
    .await
}

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let env = with_short_header_timeout().await;
    let mut s = tokio::net::TcpStream::connect(env.proxy.addr)
        .await
        .unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // Never sends the blank line: the proxy closes the connection at the timeout.
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the connection was still open after 5 s");
    assert_eq!(env.app.requests(), 0);
}

#[tokio::test]
async fn a_client_that_connects_and_says_nothing_is_cut_off() {
    use tokio::io::AsyncReadExt;
    let env = with_short_header_timeout().await;
    // Not a byte: the protocol is never known, and the connection must still end.
    let mut silent = tokio::net::TcpStream::connect(env.proxy.addr)
        .await
        .unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), silent.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "a silent connection was still open after 5 s");
    // Others are served as usual.
    assert_eq!(get(&env.url("/health")).await.status, 200);
}

#[tokio::test]
async fn sheddable_routes_get_429_above_the_resource_thresholds() {
    // Thresholds of 0: any real machine is "short" of memory.
    let env = Env::start_with(
        "[[route]]\nname = \"shed\"\npath = \"/api/slow\"\n\n[[route]]\nname = \"keep\"\npath = \"/health\"\nshed = false\n",
        "\n[resources]\nshed_memory_percent = 0\nsample_every = \"100ms\"\n",
    )
    .await;
    let url = env.url("/api/slow?ms=1");
    assert_eventually(
        "the monitor's first sample sheds the route",
        Duration::from_secs(5),
        || {
            let url = url.clone();
            async move { get(&url).await.status == 429 }
        },
    )
    .await;
    let r = get(&env.url("/api/slow?ms=1")).await;
    assert_eq!(r.code(), "RESOURCE_EXHAUSTED");
    assert_eq!(r.header("retry-after"), Some("1"));
    // A route marked shed = false, and the admin endpoints, are never shed.
    assert_eq!(get(&env.url("/health")).await.status, 200);
    assert_eq!(get(&env.admin("/readyz")).await.status, 200);
    let m = get(&env.admin("/metrics")).await.body_text();
    assert!(
        metric(&m, "sitegate_shed_total{reason=\"memory\"}") >= 2.0,
        "{m}"
    );
    assert!(
        metric(&m, "sitegate_process_resident_memory_bytes") > 0.0,
        "{m}"
    );
    assert!(metric(&m, "sitegate_system_memory_percent") > 0.0, "{m}");
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed_after_the_header_read_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let env = with_short_header_timeout().await;
    let mut s = tokio::net::TcpStream::connect(env.proxy.addr)
        .await
        .unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    // Keep-alive, then silence: the proxy closes the idle connection.
    let started = tokio::time::Instant::now();
    let rest = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await;
    assert!(
        matches!(rest, Ok(Ok(0)) | Ok(Err(_))),
        "still open: {rest:?}"
    );
    assert!(started.elapsed() >= Duration::from_millis(250));
}

#[tokio::test]
async fn max_connections_holds_new_clients_until_a_connection_closes() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let env = Env::start_with_main(|main| {
        main.replace(
            "shutdown_grace = \"5s\"",
            "shutdown_grace = \"5s\"\nmax_connections = 1",
        )
    })
    .await;
    let mut first = tokio::net::TcpStream::connect(env.proxy.addr)
        .await
        .unwrap();
    first
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    assert!(first.read(&mut buf).await.unwrap() > 0);
    // The first connection stays open (keep-alive): the second client is not served.
    let url = env.url("/health");
    let second = tokio::spawn(async move { get(&url).await.status });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !second.is_finished(),
        "a second connection was served past max_connections"
    );
    drop(first);
    let status = tokio::time::timeout(Duration::from_secs(5), second)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status, 200);
}

#[tokio::test]
async fn the_global_request_timeout_caps_every_route() {
    let env = Env::start_with_main(|main| {
        main.replace(
            "shutdown_grace = \"5s\"",
            "shutdown_grace = \"5s\"\nrequest_timeout = \"300ms\"",
        )
    })
    .await;
    // The upstream timeout is 5 s; the ceiling answers first.
    let r = get(&env.url("/api/slow?ms=3000")).await;
    assert_eq!(r.status, 504);
    assert_eq!(r.code(), "UPSTREAM_TIMEOUT");
}
