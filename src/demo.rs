//! An embedded stand-in of the Construction AI Suite's Flask API, for `sitegate demo`
//! and as the test upstream: the same code serves both, so what the demo shows is what
//! the tests check.
//!
//! Endpoints: `/health`; the phase 9 / 12 / 13 JSON endpoints; model predict and
//! retrain; `/api/fail` (500), `/api/slow?ms=N`, `/api/text` (text where JSON was
//! promised), `/api/flaky?key=K&fail=N` (503 for the first N calls per key),
//! `/api/leak` (a fake, documented AWS example key); and test helpers `/echo` (streams the body back), `/bytes?n=N`
//! (streams N deterministic bytes), `/sha256` (digests a streamed body) and `/headers`
//! (the request headers as JSON).

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

use crate::body::{BoxBody, BoxError, full};

/// A running stand-in app; stops when dropped.
pub struct StandIn {
    /// Where it listens.
    pub addr: SocketAddr,
    requests: Arc<AtomicU64>,
    connections: Arc<AtomicU64>,
    open: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl StandIn {
    /// Requests the app has received, so tests can show a refused request never
    /// reached it.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }

    /// Connections accepted so far (to see keep-alive reuse).
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::SeqCst)
    }

    /// Connections open now (to see idle connections closed).
    pub fn open_connections(&self) -> u64 {
        self.open.load(Ordering::SeqCst)
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts the stand-in on `addr` (port 0 for any free port).
pub async fn start(addr: SocketAddr) -> std::io::Result<StandIn> {
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let requests = Arc::new(AtomicU64::new(0));
    let counter = requests.clone();
    let connections = Arc::new(AtomicU64::new(0));
    let open = Arc::new(AtomicU64::new(0));
    let (accepted, open_now) = (connections.clone(), open.clone());
    let task = tokio::spawn(async move {
        let mut conns = JoinSet::new();
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let _ = stream.set_nodelay(true);
            let counter = counter.clone();
            accepted.fetch_add(1, Ordering::SeqCst);
            open_now.fetch_add(1, Ordering::SeqCst);
            let open_now = open_now.clone();
            conns.spawn(async move {
                let svc = service_fn(move |req| {
                    counter.fetch_add(1, Ordering::SeqCst);
                    async move { Ok::<_, std::convert::Infallible>(route(req).await) }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
                open_now.fetch_sub(1, Ordering::SeqCst);
            });
            while conns.try_join_next().is_some() {}
        }
    });
    Ok(StandIn {
        addr,
        requests,
        connections,
        open,
        task,
    })
}

fn json_resp(status: StatusCode, v: Value) -> Response<BoxBody> {
    let mut r = Response::new(full(v.to_string()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}

fn query_u64(req: &Request<Incoming>, key: &str) -> Option<u64> {
    req.uri().query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| v.parse().ok()).flatten()
    })
}

/// Reads a JSON body of at most 1 MiB; the stand-in is a demo, not a validator.
async fn json_body(req: Request<Incoming>) -> Option<Value> {
    let body = http_body_util::Limited::new(req.into_body(), 1 << 20)
        .collect()
        .await
        .ok()?;
    serde_json::from_slice(&body.to_bytes()).ok()
}

async fn route(req: Request<Incoming>) -> Response<BoxBody> {
    let path = req.uri().path().to_string();
    // `?fail=1` on a phase endpoint makes the app crash, to show the fallbacks.
    if path.starts_with("/api/phase") && query_u64(&req, "fail") == Some(1) {
        return json_resp(
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({"error": "Internal Server Error", "detail": "model server crashed"}),
        );
    }
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (req.method().clone(), segments.as_slice()) {
        (Method::GET, ["health"]) => json_resp(
            StatusCode::OK,
            json!({"status": "healthy", "service": "construction-ai-suite"}),
        ),
        (Method::POST, ["api", "phase9", "intelligence"]) => {
            let body = json_body(req).await.unwrap_or(Value::Null);
            let project = body.get("project_id").cloned().unwrap_or(Value::Null);
            json_resp(
                StatusCode::OK,
                json!({
                    "project_id": project,
                    "risk_score": 0.37,
                    "delay_risk": "medium",
                    "recommendations": ["add a buffer to the concrete pour schedule", "review subcontractor capacity"],
                    "phase": 9,
                }),
            )
        }
        (Method::POST, ["api", "phase12", "delay-prediction"]) => {
            let body = json_body(req).await.unwrap_or(Value::Null);
            json_resp(
                StatusCode::OK,
                json!({
                    "project_id": body.get("project_id").cloned().unwrap_or(Value::Null),
                    "predicted_delay_days": 12,
                    "confidence": 0.81,
                    "model": "delay-predictor@2.1.0",
                    "phase": 12,
                }),
            )
        }
        (Method::POST, ["api", "phase13", "budget-forecast"]) => {
            let body = json_body(req).await.unwrap_or(Value::Null);
            let budget = body.get("budget").and_then(Value::as_f64).unwrap_or(0.0);
            json_resp(
                StatusCode::OK,
                json!({
                    "project_id": body.get("project_id").cloned().unwrap_or(Value::Null),
                    "forecast_total": budget * 1.08,
                    "overrun_probability": 0.22,
                    "phase": 13,
                }),
            )
        }
        (Method::POST, ["models", name, version, "predict"]) => json_resp(
            StatusCode::OK,
            json!({
                "model": name, "version": version, "prediction": {"delay_days": 9, "probability": 0.64},
            }),
        ),
        (Method::POST, ["models", name, "predict"]) => {
            // The version sitegate chose for us, as the suite's app would read it.
            let version = req
                .headers()
                .get("x-sitegate-model-version")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            json_resp(
                StatusCode::OK,
                json!({"model": name, "version": version, "prediction": {"delay_days": 9}}),
            )
        }
        (Method::POST, ["models", name, "retrain"]) => json_resp(
            StatusCode::ACCEPTED,
            json!({
                "model": name, "status": "retraining started",
            }),
        ),
        (Method::GET, ["api", "fail"]) => json_resp(
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({
                "error": "Internal Server Error", "detail": "the prediction service crashed",
            }),
        ),
        (Method::GET, ["api", "slow"]) => {
            let ms = query_u64(&req, "ms").unwrap_or(3000).min(120_000);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            json_resp(StatusCode::OK, json!({"status": "finally", "slept_ms": ms}))
        }
        (Method::GET, ["api", "text"]) => {
            let mut r = Response::new(full("plain text where JSON was promised\n"));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("text/plain"),
            );
            r
        }
        (_, ["api", "flaky"]) => {
            // Fails with 503 the first `fail` times a `key` is asked for, then answers.
            let fail = query_u64(&req, "fail").unwrap_or(1);
            let key = req
                .uri()
                .query()
                .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("key=")))
                .unwrap_or("")
                .to_string();
            let seen = {
                let mut calls = match FLAKY.lock() {
                    Ok(c) => c,
                    Err(p) => p.into_inner(),
                };
                let n = calls.entry(key).or_insert(0);
                *n += 1;
                *n
            };
            if seen <= fail {
                json_resp(
                    StatusCode::SERVICE_UNAVAILABLE,
                    json!({"error": "try again", "call": seen}),
                )
            } else {
                json_resp(StatusCode::OK, json!({"status": "ok", "call": seen}))
            }
        }
        (Method::GET, ["secrets"]) => {
            // N bytes of log-like text, a fake secret on every line, streamed in 64 KiB
            // frames so that secrets fall across frame boundaries.
            let n = query_u64(&req, "n").unwrap_or(1 << 20);
            // No announced length: a stream of unknown size, like a log tail.
            let body = Generated {
                offset: 0,
                len: n,
                byte: |i| LEAKY_LINE[(i % LEAKY_LINE.len() as u64) as usize],
                sized: false,
            };
            let mut r = Response::new(body.boxed_unsync());
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("text/plain"),
            );
            r
        }
        (Method::GET, ["api", "gzip-leak"]) => {
            // Compressed whatever the request asked for.
            use std::io::Write;
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            let _ = enc.write_all(br#"{"aws_access_key_id":"AKIAIOSFODNN7EXAMPLE","ok":true}"#);
            let gz = enc.finish().unwrap_or_default();
            let mut r = Response::new(full(gz));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("application/json"),
            );
            r.headers_mut().insert(
                header::CONTENT_ENCODING,
                header::HeaderValue::from_static("gzip"),
            );
            r
        }
        (Method::GET, ["api", "brotli"]) => {
            let mut r = Response::new(full("not really brotli"));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("application/json"),
            );
            r.headers_mut().insert(
                header::CONTENT_ENCODING,
                header::HeaderValue::from_static("br"),
            );
            r
        }
        (Method::GET, ["api", "leak"]) => json_resp(
            StatusCode::OK,
            json!({
                "status": "ok",
                "debug": {"aws_access_key_id": "AKIAIOSFODNN7EXAMPLE", "note": "AWS's documented example key, not a real one"},
            }),
        ),
        (_, ["echo"]) => {
            let ct = req.headers().get(header::CONTENT_TYPE).cloned();
            let mut r = Response::new(req.into_body().map_err(BoxError::from).boxed_unsync());
            if let Some(ct) = ct {
                r.headers_mut().insert(header::CONTENT_TYPE, ct);
            }
            r
        }
        (Method::GET, ["bytes"]) => {
            let n = query_u64(&req, "n").unwrap_or(1024);
            let body = Generated {
                offset: 0,
                len: n,
                byte: pattern_byte,
                sized: true,
            };
            let mut r = Response::new(body.boxed_unsync());
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("application/octet-stream"),
            );
            r
        }
        (Method::POST | Method::PUT, ["sha256"]) => {
            let mut body = req.into_body();
            let mut hasher = Sha256::new();
            let mut n = 0u64;
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(f) => {
                        if let Some(d) = f.data_ref() {
                            hasher.update(d);
                            n += d.len() as u64;
                        }
                    }
                    Err(_) => {
                        return json_resp(StatusCode::BAD_REQUEST, json!({"error": "body failed"}));
                    }
                }
            }
            json_resp(
                StatusCode::OK,
                json!({"sha256": hex(&hasher.finalize()), "bytes": n}),
            )
        }
        (_, ["headers"]) => {
            let headers: serde_json::Map<String, Value> = req
                .headers()
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_string(),
                        Value::String(String::from_utf8_lossy(v.as_bytes()).into()),
                    )
                })
                .collect();
            json_resp(StatusCode::OK, Value::Object(headers))
        }
        _ => json_resp(
            StatusCode::NOT_FOUND,
            json!({"error": "Not Found", "path": path}),
        ),
    }
}

/// Calls per key of `/api/flaky`.
static FLAKY: std::sync::LazyLock<std::sync::Mutex<std::collections::HashMap<String, u64>>> =
    std::sync::LazyLock::new(Default::default);

/// Lowercase hex of a digest.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The byte at `i` of the `/bytes` pattern; tests recompute it to check bodies.
pub fn pattern_byte(i: u64) -> u8 {
    (i % 251) as u8
}

/// One line of `/secrets`: 100 bytes with AWS's documented example key at column 30.
pub const LEAKY_LINE: &[u8; 100] =
    b"2026-11-28T00:00:00Z INFO key=AKIAIOSFODNN7EXAMPLE user=ops action=deploy status=ok ...............\n";

/// Streams `len` generated bytes (`byte(i)` at offset `i`) in 64 KiB frames without
/// holding them; `sized` says whether it announces its length.
struct Generated {
    offset: u64,
    len: u64,
    byte: fn(u64) -> u8,
    sized: bool,
}

impl Body for Generated {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.offset >= self.len {
            return Poll::Ready(None);
        }
        let n = (self.len - self.offset).min(64 * 1024);
        let chunk: Vec<u8> = (self.offset..self.offset + n).map(self.byte).collect();
        self.offset += n;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(chunk)))))
    }

    fn size_hint(&self) -> SizeHint {
        if self.sized {
            SizeHint::with_exact(self.len - self.offset)
        } else {
            SizeHint::default()
        }
    }

    fn is_end_stream(&self) -> bool {
        self.offset >= self.len
    }
}
