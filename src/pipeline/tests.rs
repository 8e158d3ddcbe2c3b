//! The whole pipeline (routing, guards, forward, retries, breaker, fallback, redaction,
//! logging) against an in-memory app, on tokio's paused clock: what takes seconds of
//! timeouts and breaker cool-downs on a real socket takes none here, and no test
//! depends on how busy the machine is.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use tokio::sync::mpsc;

use super::{Peer, handle};
use crate::body::{AppBody, AppBodyError};
use crate::config::{Source, compile};
use crate::state::ReloadOutcome;
use crate::state::{Setup, Shared};
use crate::upstream::{MakeTransport, Transport, TransportFuture, circuit::CircuitState};

/// What the in-memory app does with its `n`th request (from 1).
enum Step {
    /// Nobody listens: the connection is refused.
    Refuse,
    /// Reads the whole request body first (failing as hyper's client does when the
    /// body fails), then answers 200.
    Drain,
    /// Answers `status` with `body` as JSON, after `after`.
    Reply {
        after: Duration,
        status: u16,
        body: String,
    },
}

fn ok(body: &str) -> Step {
    Step::Reply {
        after: Duration::ZERO,
        status: 200,
        body: body.to_string(),
    }
}

type Script = Box<dyn Fn(u32, &http::request::Parts) -> Step + Send + Sync>;

/// The app, in memory: a script from request number and head to answer.
struct App {
    calls: AtomicU32,
    script: Script,
}

impl App {
    fn new(
        script: impl Fn(u32, &http::request::Parts) -> Step + Send + Sync + 'static,
    ) -> Arc<Self> {
        Arc::new(App {
            calls: AtomicU32::new(0),
            script: Box::new(script),
        })
    }

    fn calls(&self) -> u32 {
        self.calls.load(Ordering::SeqCst)
    }
}

impl Transport for App {
    fn call(&self, req: Request<crate::body::BoxBody>) -> TransportFuture {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        let (parts, body) = req.into_parts();
        let step = (self.script)(n, &parts);
        Box::pin(async move {
            match step {
                Step::Refuse => Err(io::Error::from(io::ErrorKind::ConnectionRefused).into()),
                Step::Drain => {
                    let read = body.collect().await?.to_bytes();
                    let body: AppBody =
                        Full::new(Bytes::from(format!("{{\"read\":{}}}", read.len())))
                            .map_err(|never| -> AppBodyError { match never {} })
                            .boxed_unsync();
                    Ok(Response::new(body))
                }
                Step::Reply {
                    after,
                    status,
                    body,
                } => {
                    tokio::time::sleep(after).await;
                    let body: AppBody = Full::new(Bytes::from(body))
                        .map_err(|never| -> AppBodyError { match never {} })
                        .boxed_unsync();
                    let mut resp = Response::new(body);
                    *resp.status_mut() = StatusCode::from_u16(status)?;
                    resp.headers_mut().insert(
                        http::header::CONTENT_TYPE,
                        http::HeaderValue::from_static("application/json"),
                    );
                    Ok(resp)
                }
            }
        })
    }
}

/// A whole policy in one file: the upstream at `url`, then `main`. Lines of `main`
/// that start with `server.` go into `[server]`.
fn policy_text(url: &str, main: &str) -> String {
    let (server, main): (Vec<&str>, Vec<&str>) =
        main.lines().partition(|l| l.starts_with("server."));
    let server: Vec<&str> = server.iter().map(|l| &l["server.".len()..]).collect();
    let (server, main) = (server.join("\n"), main.join("\n"));
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n{server}\n\n[upstream]\nurl = \"{url}\"\nconnect_timeout = \"1s\"\ntimeout = \"5s\"\n{main}\n"
    )
}

const MAIN: &str = "/virtual/sitegate.toml";

/// A proxy state serving `text`, reaching the app through `transport`.
fn serve(text: String, transport: MakeTransport) -> Arc<Shared> {
    let policy = match compile(&[Source::policy(MAIN, text)]) {
        Ok(p) => p,
        Err(d) => panic!("the test policy does not compile: {d:?}"),
    };
    Arc::new(Shared::new(
        policy,
        Setup {
            workers: 1,
            transport,
            reload: mpsc::channel(1).0,
            main_path: MAIN.into(),
            overrides: Default::default(),
            set_log_level: None,
        },
    ))
}

/// A proxy state serving `main` in front of `app`.
fn proxy(main: &str, app: &Arc<App>) -> Arc<Shared> {
    let app = app.clone();
    serve(
        policy_text("http://app.test:80", main),
        Arc::new(move |_| app.clone() as Arc<dyn Transport>),
    )
}

/// What the client got.
struct Got {
    status: u16,
    headers: HeaderMap,
    body: String,
}

impl Got {
    async fn read<B: http_body::Body>(resp: Response<B>) -> Got
    where
        B::Error: std::fmt::Debug,
    {
        let (parts, body) = resp.into_parts();
        let bytes = body.collect().await.unwrap().to_bytes();
        Got {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

async fn send(shared: &Arc<Shared>, method: &str, path: &str, headers: &[(&str, &str)]) -> Got {
    send_body(shared, method, path, headers, Full::new(Bytes::new())).await
}

async fn send_body<B: crate::body::ClientBody>(
    shared: &Arc<Shared>,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: B,
) -> Got {
    send_from(shared, CLIENT, method, path, headers, body).await
}

const CLIENT: &str = "127.0.0.1:40000";

/// A request from the connecting peer `peer`.
async fn send_from<B: crate::body::ClientBody>(
    shared: &Arc<Shared>,
    peer: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: B,
) -> Got {
    let mut req = Request::builder().method(method).uri(path);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(body).unwrap();
    // Collecting the body ends the request: its access line and metrics are written.
    Got::read(handle(shared.clone(), 0, req, Peer::new(peer.parse().unwrap())).await).await
}

/// A GET to `path` from the connecting peer `peer`.
async fn get_from(shared: &Arc<Shared>, peer: &str, path: &str, headers: &[(&str, &str)]) -> Got {
    send_from(shared, peer, "GET", path, headers, Full::new(Bytes::new())).await
}

async fn get(shared: &Arc<Shared>, path: &str) -> Got {
    send(shared, "GET", path, &[]).await
}

async fn admin(shared: &Arc<Shared>, path: &str) -> Got {
    let req = Request::builder().uri(path).body(()).unwrap();
    Got::read(crate::admin::handle(shared, req, true).await).await
}

fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(start_paused = true)]
async fn connect_failures_open_the_breaker_and_one_probe_closes_it() {
    let up = Arc::new(AtomicBool::new(false));
    let app = {
        let up = up.clone();
        App::new(move |_, _| {
            if up.load(Ordering::SeqCst) {
                ok(r#"{"status":"healthy"}"#)
            } else {
                Step::Refuse
            }
        })
    };
    let shared = proxy(
        "[upstream.circuit]\nconsecutive_failures = 3\nopen_for = \"400ms\"\n\n\
         [[route]]\nname = \"h\"\npath = \"/health\"\nfallback = { body = '{\"status\":\"cached\"}', on = [\"connect\", \"circuit-open\"] }\n\n\
         [[route]]\nname = \"plain\"\npath = \"/plain\"\n",
        &app,
    );
    for _ in 0..3 {
        let r = get(&shared, "/health").await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-sitegate-fallback"), Some("connect"));
        assert_eq!(r.json()["status"], "cached");
    }
    // Three failures in a row: the circuit is open; the app is not even tried.
    let r = get(&shared, "/health").await;
    assert_eq!(r.header("x-sitegate-fallback"), Some("circuit-open"));
    let r = get(&shared, "/plain").await;
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["error"]["code"], "UPSTREAM_UNAVAILABLE");
    assert_eq!(app.calls(), 3);
    let ready = admin(&shared, "/readyz").await;
    assert_eq!(ready.status, 200, "an open circuit keeps sitegate ready");
    assert_eq!(ready.json()["circuit"], "open");
    let m = admin(&shared, "/metrics").await.body;
    assert_eq!(metric(&m, "sitegate_circuit_state"), Some(1.0), "{m}");

    // Still open just before open_for has passed.
    tokio::time::advance(Duration::from_millis(390)).await;
    assert_eq!(get(&shared, "/plain").await.status, 503);
    // Past it, with no request yet: half-open, the next request is the probe.
    tokio::time::advance(Duration::from_millis(20)).await;
    assert_eq!(
        admin(&shared, "/readyz").await.json()["circuit"],
        "half-open"
    );
    let m = admin(&shared, "/metrics").await.body;
    assert_eq!(metric(&m, "sitegate_circuit_state"), Some(2.0), "{m}");
    // The app is back; one probe closes the circuit.
    up.store(true, Ordering::SeqCst);
    let r = get(&shared, "/health").await;
    assert_eq!(r.status, 200);
    assert!(r.header("x-sitegate-fallback").is_none(), "{:?}", r.headers);
    assert_eq!(r.json()["status"], "healthy");
    assert_eq!(shared.circuit.state(), CircuitState::Closed);
    assert_eq!(admin(&shared, "/readyz").await.json()["circuit"], "closed");
    let m = admin(&shared, "/metrics").await.body;
    assert_eq!(metric(&m, "sitegate_circuit_state"), Some(0.0), "{m}");
    assert_eq!(app.calls(), 4);
}

#[tokio::test(start_paused = true)]
async fn a_failed_probe_reopens_the_circuit_for_twice_as_long() {
    let app = App::new(|_, _| Step::Refuse);
    let shared = proxy(
        "[upstream.circuit]\nconsecutive_failures = 2\nopen_for = \"200ms\"\nmax_open_for = \"1s\"\n\n[[route]]\nname = \"x\"\npath = \"/x\"\n",
        &app,
    );
    for _ in 0..2 {
        assert_eq!(get(&shared, "/x").await.status, 502);
    }
    assert_eq!(get(&shared, "/x").await.status, 503);
    tokio::time::advance(Duration::from_millis(210)).await;
    // The probe fails (still down): 502 for it, then open again, now for 400 ms.
    assert_eq!(get(&shared, "/x").await.status, 502);
    assert_eq!(get(&shared, "/x").await.status, 503);
    tokio::time::advance(Duration::from_millis(390)).await;
    assert_eq!(
        get(&shared, "/x").await.status,
        503,
        "the second opening lasts twice as long"
    );
    tokio::time::advance(Duration::from_millis(20)).await;
    assert_eq!(
        get(&shared, "/x").await.status,
        502,
        "the next probe is let through"
    );
    assert_eq!(app.calls(), 4);
}

#[tokio::test(start_paused = true)]
async fn a_slow_app_gets_the_timeout_fallback_and_the_request_id() {
    let app = App::new(|_, parts| {
        let slow = parts.uri.path() == "/api/slow";
        Step::Reply {
            after: Duration::from_secs(if slow { 2 } else { 0 }),
            status: 200,
            body: r#"{"status":"late"}"#.into(),
        }
    });
    let shared = proxy(
        "[[route]]\nname = \"slow\"\npath = \"/api/slow\"\ntimeout = \"300ms\"\nfallback = { body = '{\"status\":\"degraded\",\"request_id\":\"{request_id}\"}', on = [\"timeout\"] }\n\n\
         [[route]]\nname = \"bare\"\npath = \"/api/bare\"\ntimeout = \"300ms\"\n",
        &app,
    );
    let started = tokio::time::Instant::now();
    let r = send(&shared, "GET", "/api/slow", &[("x-request-id", "fb-1")]).await;
    // The route's timeout, not the app's two seconds.
    assert_eq!(started.elapsed(), Duration::from_millis(300));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-sitegate-fallback"), Some("timeout"));
    assert_eq!(r.header("x-request-id"), Some("fb-1"));
    assert_eq!(r.json()["status"], "degraded");
    assert_eq!(r.json()["request_id"], "fb-1");
    let m = admin(&shared, "/metrics").await.body;
    let series = "sitegate_fallbacks_total{route=\"slow\",reason=\"timeout\"}";
    assert_eq!(metric(&m, series), Some(1.0), "{m}");
}

/// Every log line written in this test process, as JSON text. One process-wide
/// subscriber rather than one per test: a callsite first reached on a thread without a
/// subscriber can keep that verdict, so a per-test subscriber misses lines. Tests tell
/// their lines apart by request id.
#[derive(Clone, Copy)]
struct Lines;

static LINES: Mutex<Vec<u8>> = Mutex::new(Vec::new());

impl io::Write for Lines {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        LINES.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Lines {
    fn capture() -> Lines {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            let subscriber = tracing_subscriber::fmt()
                .json()
                .flatten_event(true)
                .with_max_level(tracing::Level::INFO)
                .with_writer(|| Lines)
                .finish();
            tracing::subscriber::set_global_default(subscriber).unwrap();
        });
        Lines
    }

    /// The lines of the requests whose ids start with `prefix`.
    fn of(&self, prefix: &str) -> Vec<serde_json::Value> {
        let text = String::from_utf8(LINES.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|l| {
                l["request_id"]
                    .as_str()
                    .is_some_and(|id| id.starts_with(prefix))
            })
            .collect()
    }
}

#[tokio::test(start_paused = true)]
async fn a_request_past_slow_after_writes_one_perf_warning_with_its_phases() {
    let app = App::new(|_, parts| Step::Reply {
        after: Duration::from_millis(if parts.uri.query() == Some("slow") {
            300
        } else {
            1
        }),
        status: 200,
        body: "{}".into(),
    });
    let shared = proxy(
        "[[route]]\nname = \"slow\"\npath = \"/api/slow\"\nslow_after = \"100ms\"\n",
        &app,
    );
    let lines = Lines::capture();
    for (path, id) in [
        ("/api/slow?fast", "slowlog-fast"),
        ("/api/slow?slow", "slowlog-slow"),
    ] {
        let headers = [
            ("x-request-id", id),
            ("user-agent", "sitegate-test/1"),
            ("host", "api.example.test"),
        ];
        let r = send(&shared, "GET", path, &headers).await;
        assert_eq!(r.status, 200);
    }
    let perf: Vec<_> = lines
        .of("slowlog-")
        .into_iter()
        .filter(|l| l["category"] == "perf")
        .collect();
    assert_eq!(perf.len(), 1, "{perf:?}");
    assert_eq!(perf[0]["request_id"], "slowlog-slow");
    assert_eq!(perf[0]["level"], "WARN");
    assert_eq!(perf[0]["duration_ms"], 300.0);
    assert_eq!(perf[0]["upstream_ms"], 300.0);
    assert_eq!(perf[0]["slow_after_ms"], 100.0);
    // Every request has its access line, the fast one too, with who asked for what.
    let first = lines
        .of("slowlog-fast")
        .into_iter()
        .find(|l| l["target"] == "sitegate::access")
        .unwrap();
    assert_eq!(first["category"], "access");
    assert_eq!(first["client"], "127.0.0.1");
    assert_eq!(first["host"], "api.example.test");
    assert_eq!(first["user_agent"], "sitegate-test/1");
    let access: Vec<_> = lines
        .of("slowlog-")
        .into_iter()
        .filter(|l| l["category"] == "access")
        .map(|l| l["request_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(access, ["slowlog-fast", "slowlog-slow"]);
}

#[tokio::test(start_paused = true)]
async fn retries_repeat_a_failed_get_and_the_breaker_counts_the_final_answer() {
    let app = App::new(|n, _| {
        if n < 3 {
            Step::Reply {
                after: Duration::ZERO,
                status: 503,
                body: r#"{"busy":true}"#.into(),
            }
        } else {
            ok(&format!(r#"{{"call":{n}}}"#))
        }
    });
    let shared = proxy(
        "[[route]]\nname = \"flaky\"\npath = \"/api/flaky\"\nretry = { attempts = 2, on = [503] }\n",
        &app,
    );
    let r = get(&shared, "/api/flaky").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["call"], 3);
    let m = admin(&shared, "/metrics").await.body;
    assert_eq!(
        metric(&m, "sitegate_retries_total{route=\"flaky\"}"),
        Some(2.0),
        "{m}"
    );
    assert_eq!(shared.circuit.state(), CircuitState::Closed);
}

/// Reloads `text` as the reload loop does, and expects it applied.
fn reload(shared: &Shared, text: String) {
    let sources = vec![Source::policy(MAIN, text)];
    let outcome = crate::reload::reload_once(shared, &mut None, true, Ok(Some(sources)));
    assert!(
        matches!(outcome, ReloadOutcome::Applied { .. }),
        "{outcome:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_reload_swaps_the_policy_and_its_upstream_as_one() {
    let slow_a = App::new(|_, _| Step::Reply {
        after: Duration::from_secs(1),
        status: 200,
        body: r#"{"app":"a"}"#.into(),
    });
    let b = App::new(|_, _| ok(r#"{"app":"b"}"#));
    let (ta, tb) = (slow_a.clone(), b.clone());
    let transport: MakeTransport = Arc::new(move |settings| {
        if settings.authority.host() == "app-a.test" {
            ta.clone() as Arc<dyn Transport>
        } else {
            tb.clone() as Arc<dyn Transport>
        }
    });
    let route = "[access]\nrate_limit = { per_second = 100, burst = 100 }\n\n[[route]]\nname = \"x\"\npath = \"/x\"\n";
    let shared = serve(policy_text("http://app-a.test:80", route), transport);
    let in_flight = {
        let shared = shared.clone();
        tokio::spawn(async move { get(&shared, "/x").await })
    };
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(slow_a.calls(), 1, "the first request is at app a");
    let before = shared.serving.load_full();

    // A reload that moves the upstream: new requests go to b at once, and the one in
    // flight finishes with a, under the policy it started with.
    reload(&shared, policy_text("http://app-b.test:80", route));
    assert_eq!(get(&shared, "/x").await.json()["app"], "b");
    assert_eq!(in_flight.await.unwrap().json()["app"], "a");
    assert_eq!((slow_a.calls(), b.calls()), (1, 1));
    let after = shared.serving.load_full();
    assert!(!Arc::ptr_eq(
        &before.runtime.upstreams[0],
        &after.runtime.upstreams[0]
    ));
    // The rate limit did not change: its buckets are carried over, not reset.
    let (was, now) = (&before.runtime.rate_limiter, &after.runtime.rate_limiter);
    assert!(Arc::ptr_eq(was.as_ref().unwrap(), now.as_ref().unwrap()));

    // A reload that changes only a route keeps the pool with its connections.
    reload(
        &shared,
        policy_text("http://app-b.test:80", &route.replace("\"x\"", "\"y\"")),
    );
    let last = shared.serving.load_full();
    assert!(Arc::ptr_eq(
        &after.runtime.upstreams[0],
        &last.runtime.upstreams[0]
    ));
    assert_eq!(last.policy.routes.iter().next().unwrap().name.as_ref(), "y");
}

/// A body of `chunks`, ended, as a chunked upload arrives.
async fn chunked(chunks: &[&'static [u8]]) -> http_body_util::channel::Channel<Bytes, io::Error> {
    let (mut tx, body) = http_body_util::channel::Channel::<Bytes, io::Error>::new(chunks.len());
    for c in chunks {
        tx.send_data(Bytes::from_static(c)).await.unwrap();
    }
    body
}

#[tokio::test(start_paused = true)]
async fn a_client_body_that_fails_while_the_app_reads_it_is_the_clients_error() {
    let app = App::new(|_, _| Step::Drain);
    let shared = proxy(
        "server.client_body_timeout = \"2s\"\n[[route]]\nname = \"up\"\npath = \"/upload\"\nmax_body = \"10B\"\n",
        &app,
    );
    // Within the limit: streamed to the app as it is.
    let r = send_body(&shared, "POST", "/upload", &[], chunked(&[b"12345"]).await).await;
    assert_eq!((r.status, r.json()["read"].as_u64()), (200, Some(5)));
    // Past it, with no Content-Length to refuse up front: cut off while it streams.
    let big = chunked(&[b"123456", b"789012"]).await;
    let r = send_body(&shared, "POST", "/upload", &[], big).await;
    assert_eq!(r.status, 413, "{}", r.body);
    assert_eq!(r.json()["error"]["code"], "PAYLOAD_TOO_LARGE");
    assert!(r.header("connection").is_none());
    // A client that stops sending half way: 408, and the connection closes.
    let (mut tx, stalled) = http_body_util::channel::Channel::<Bytes, io::Error>::new(4);
    tx.send_data(Bytes::from_static(b"12")).await.unwrap();
    let r = send_body(&shared, "POST", "/upload", &[], stalled).await;
    assert_eq!(r.status, 408, "{}", r.body);
    assert_eq!(r.header("connection"), Some("close"));
    drop(tx);
    // The app was up throughout: the breaker saw no failure.
    assert_eq!(shared.circuit.state(), CircuitState::Closed);
    let m = admin(&shared, "/metrics").await.body;
    let series = "sitegate_upstream_failures_total{route=\"up\",reason=\"connect\"}";
    assert_eq!(metric(&m, series).unwrap_or(0.0), 0.0, "{m}");
}

#[tokio::test(start_paused = true)]
async fn every_series_the_policy_can_produce_is_there_at_zero_from_the_start() {
    let app = App::new(|_, _| ok("{}"));
    let route = "[access]\nrate_limit = { per_second = 100, burst = 100 }\n\n[unmatched]\naction = \"deny\"\n\n[[route]]\nname = \"x\"\npath = \"/x\"\nfallback = { body = '{}', on = [\"timeout\", \"5xx\"] }\n";
    let shared = proxy(route, &app);
    let m = admin(&shared, "/metrics").await.body;
    for series in [
        "sitegate_upstream_failures_total{route=\"x\",reason=\"connect\"}",
        "sitegate_upstream_failures_total{route=\"x\",reason=\"circuit-open\"}",
        "sitegate_fallbacks_total{route=\"x\",reason=\"timeout\"}",
        "sitegate_fallbacks_total{route=\"x\",reason=\"5xx\"}",
        "sitegate_rejections_total{route=\"x\",code=\"RATE_LIMITED\"}",
        "sitegate_rejections_total{route=\"x\",code=\"PAYLOAD_TOO_LARGE\"}",
        "sitegate_rejections_total{route=\"unmatched\",code=\"NOT_FOUND\"}",
        "sitegate_request_duration_seconds_count{route=\"x\"}",
    ] {
        assert_eq!(metric(&m, series), Some(0.0), "{series} in\n{m}");
    }
    // Only what the policy can produce: the fallback does not cover connect, and
    // the route has no schema.
    for absent in [
        "sitegate_fallbacks_total{route=\"x\",reason=\"connect\"}",
        "sitegate_rejections_total{route=\"x\",code=\"VALIDATION_FAILED\"}",
    ] {
        assert_eq!(metric(&m, absent), None, "{absent} in\n{m}");
    }
    // A reload that adds a route declares its series too.
    reload(
        &shared,
        policy_text(
            "http://app.test:80",
            &format!("{route}\n[[route]]\nname = \"y\"\npath = \"/y\"\n"),
        ),
    );
    let m = admin(&shared, "/metrics").await.body;
    let series = "sitegate_upstream_failures_total{route=\"y\",reason=\"timeout\"}";
    assert_eq!(metric(&m, series), Some(0.0), "{series} in\n{m}");
}

#[tokio::test(start_paused = true)]
async fn a_refusal_is_the_clients_error_and_shedding_is_the_systems() {
    let app = App::new(|_, _| ok("{}"));
    let shared = proxy(
        "[[route]]\nname = \"r\"\npath = \"/r\"\nmethods = [\"GET\"]\n",
        &app,
    );
    let lines = Lines::capture();
    let refused = send(
        &shared,
        "GET",
        "/r/%00",
        &[("x-request-id", "category-refused")],
    )
    .await;
    assert_eq!(refused.status, 400, "{}", refused.body);
    shared.resources.store(crate::guard::shed::Sample {
        memory_percent: 99.0,
        cpu_percent: 10.0,
    });
    let shed = send(&shared, "GET", "/r", &[("x-request-id", "category-shed")]).await;
    assert_eq!(shed.status, 429);
    let category = |id: &str| {
        lines
            .of(id)
            .into_iter()
            .find(|l| l["target"] == "sitegate::access")
            .map(|l| l["category"].clone())
    };
    assert_eq!(category("category-refused").unwrap(), "user_error");
    assert_eq!(category("category-shed").unwrap(), "system_error");
    assert_eq!(app.calls(), 0);
}

#[tokio::test(start_paused = true)]
async fn behind_a_trusted_balancer_each_client_is_itself_and_spoofing_gets_nowhere() {
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    let app = App::new(move |_, head| {
        let header = |name: &str| {
            head.headers
                .get(name)
                .map(|v| v.to_str().unwrap().to_string())
        };
        record
            .lock()
            .unwrap()
            .push((header("x-forwarded-for"), header("forwarded")));
        ok("{}")
    });
    let shared = proxy(
        "server.trusted_proxies = [\"10.0.0.0/8\", \"fd00::1\"]\n[access]\nrate_limit = { per_second = 1, burst = 1 }\n\n[[route]]\nname = \"x\"\npath = \"/x\"\n",
        &app,
    );
    let lb = "10.0.0.2:5000";
    // Two clients behind one balancer have a bucket each.
    let a = get_from(&shared, lb, "/x", &[("x-forwarded-for", "198.51.100.1")]).await;
    let b = get_from(
        &shared,
        lb,
        "/x",
        &[("forwarded", r#"for="[2001:db8::2]:4711""#)],
    )
    .await;
    assert_eq!((a.status, b.status), (200, 200));
    // The first client again: its own bucket is empty, whichever header it came in.
    let again = get_from(&shared, lb, "/x", &[("forwarded", "for=198.51.100.1")]).await;
    assert_eq!(again.status, 429, "{}", again.body);
    // A client that connects directly cannot pose as another one.
    let direct = "203.0.113.9:6000";
    let spoof = [
        ("x-forwarded-for", "198.51.100.77"),
        ("forwarded", "for=198.51.100.78"),
    ];
    assert_eq!(get_from(&shared, direct, "/x", &spoof).await.status, 200);
    assert_eq!(
        get_from(
            &shared,
            direct,
            "/x",
            &[("x-forwarded-for", "198.51.100.79")]
        )
        .await
        .status,
        429
    );
    // A trusted IPv6 peer, listed as a single address.
    let v6 = get_from(
        &shared,
        "[fd00::1]:7000",
        "/x",
        &[("x-forwarded-for", "198.51.100.5")],
    )
    .await;
    assert_eq!(v6.status, 200);

    let seen = seen.lock().unwrap().clone();
    let some = |s: &str| Some(s.to_string());
    assert_eq!(
        seen,
        [
            (some("198.51.100.1, 10.0.0.2"), None),
            (
                some("2001:db8::2, 10.0.0.2"),
                some(r#"for="[2001:db8::2]:4711""#)
            ),
            // What the untrusted client claimed is not passed on.
            (some("203.0.113.9"), None),
            (some("198.51.100.5, fd00::1"), None),
        ]
    );
}
