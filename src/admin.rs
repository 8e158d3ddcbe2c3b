//! The admin listener: `/healthz`, `/readyz`, `/metrics`, `/config` and `POST /reload`.
//! It never shows a secret: `/config` lists files, versions and error positions only.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinSet;

use crate::state::{ReloadOutcome, Shared, Trigger};

/// Serves the admin endpoints until the task is aborted.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let mut conns = JoinSet::new();
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let shared = shared.clone();
        conns.spawn(async move {
            let loopback = peer.ip().to_canonical().is_loopback();
            let svc = service_fn(move |req| {
                let shared = shared.clone();
                async move {
                    Ok::<_, std::convert::Infallible>(handle(&shared, req, loopback).await)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
        while conns.try_join_next().is_some() {}
    }
}

fn json_response(status: StatusCode, value: serde_json::Value) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(value.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    resp
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// True when the caller may read the policy or reload it: a loopback peer, or one that
/// shows the configured admin token (`Authorization: Bearer ...`).
fn trusted(
    token: Option<&crate::policy::AdminToken>,
    headers: &http::HeaderMap,
    loopback: bool,
) -> bool {
    if loopback {
        return true;
    }
    let Some(token) = token else {
        return false;
    };
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
        .is_some_and(|t| token.matches(t.trim_ascii()))
}

/// Answers one admin request. `/healthz`, `/readyz` and `/metrics` are open to probes
/// and scrapers; `/config` and `POST /reload` need a loopback peer or the admin token.
pub async fn handle<B>(shared: &Shared, req: Request<B>, loopback: bool) -> Response<Full<Bytes>> {
    let policy = shared.policy();
    if matches!(req.uri().path(), "/config" | "/reload")
        && !trusted(
            policy.server.admin_token.as_ref(),
            req.headers(),
            loopback && policy.server.admin_trust_loopback,
        )
    {
        let mut resp = json_response(
            StatusCode::UNAUTHORIZED,
            json!({"error": if policy.server.admin_trust_loopback {
                "/config and /reload need Authorization: Bearer <admin token> ([server] admin_token_env or admin_token_file), or a loopback peer"
            } else {
                "/config and /reload need Authorization: Bearer <admin token> ([server] admin_token_env or admin_token_file); admin_trust_loopback is off"
            }}),
        );
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer realm=\"sitegate-admin\""),
        );
        return resp;
    }
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/healthz") => json_response(StatusCode::OK, json!({"status": "ok"})),
        (&Method::GET, "/readyz") => {
            if shared.draining.load(Ordering::SeqCst) {
                json_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    json!({"ready": false, "reason": "draining", "policy_version": policy.version}),
                )
            } else {
                // An open circuit does not make sitegate unready: it is serving
                // fallbacks, which is its job.
                json_response(
                    StatusCode::OK,
                    json!({
                        "ready": true,
                        "policy_version": policy.version,
                        "circuit": shared.circuit.state().as_str(),
                    }),
                )
            }
        }
        (&Method::GET, "/metrics") => {
            let free = shared.buffer_budget.available_permits() as u64;
            let held = shared.buffer_budget_total.saturating_sub(free);
            shared.metrics.buffered_bytes.set(held as i64);
            // Read at scrape time: the circuit turns half-open by the clock alone.
            shared
                .metrics
                .circuit_state
                .set(shared.circuit.state().gauge());
            let mut resp = Response::new(Full::new(Bytes::from(shared.metrics.encode())));
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            resp
        }
        (&Method::GET, "/config") => {
            let status = match shared.status.lock() {
                Ok(s) => s.clone(),
                Err(poisoned) => poisoned.into_inner().clone(),
            };
            let last = status.last.map(|(at, outcome)| {
                let mut v = outcome_json(&outcome);
                v["at"] = json!(rfc3339(at));
                v
            });
            json_response(
                StatusCode::OK,
                json!({
                    "version": policy.version,
                    "files": policy.files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>(),
                    "loaded_at": rfc3339(status.loaded_at),
                    "last_reload": last,
                    "restart_required": status.restart_required,
                    "upstream": policy.upstream.authority.as_str(),
                    "routes": policy.routes.iter().map(|r| r.name.to_string()).collect::<Vec<_>>(),
                }),
            )
        }
        (&Method::POST, "/reload") => {
            let (tx, rx) = oneshot::channel();
            if shared.reload.send(Trigger::Admin(tx)).await.is_err() {
                return json_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    json!({"result": "error", "errors": ["the reloader is not running"]}),
                );
            }
            match tokio::time::timeout(Duration::from_secs(30), rx).await {
                Ok(Ok(outcome)) => {
                    let status = match outcome {
                        ReloadOutcome::Failed { .. } => StatusCode::UNPROCESSABLE_ENTITY,
                        _ => StatusCode::OK,
                    };
                    json_response(status, outcome_json(&outcome))
                }
                _ => json_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    json!({"result": "error", "errors": ["the reload did not finish in 30 s"]}),
                ),
            }
        }
        (_, "/healthz" | "/readyz" | "/metrics" | "/config" | "/reload") => json_response(
            StatusCode::METHOD_NOT_ALLOWED,
            json!({"error": "method not allowed"}),
        ),
        _ => json_response(
            StatusCode::NOT_FOUND,
            json!({"error": "not found", "endpoints": ["/healthz", "/readyz", "/metrics", "/config", "POST /reload"]}),
        ),
    }
}

fn outcome_json(outcome: &ReloadOutcome) -> serde_json::Value {
    match outcome {
        ReloadOutcome::Applied { version } => json!({"result": "ok", "version": version}),
        ReloadOutcome::Unchanged => json!({"result": "unchanged"}),
        ReloadOutcome::Failed { errors } => json!({"result": "error", "errors": errors}),
    }
}

#[cfg(test)]
mod tests {
    use super::trusted;
    use crate::policy::AdminToken;
    use http::{HeaderMap, HeaderValue, header};

    fn bearer(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        h
    }

    // The end-to-end suite binds loopback only, so its peers are always trusted; the
    // remote peer's side of the decision is held here.
    #[test]
    fn a_remote_peer_needs_the_exact_token() {
        let token = AdminToken::new("generated-admin-token-for-tests");
        let t = Some(&token);
        assert!(trusted(
            t,
            &bearer("Bearer generated-admin-token-for-tests"),
            false
        ));
        assert!(!trusted(t, &HeaderMap::new(), false));
        assert!(!trusted(
            t,
            &bearer("Bearer generated-admin-token-for-test"),
            false
        ));
        assert!(!trusted(
            t,
            &bearer("Bearer generated-admin-token-for-testsX"),
            false
        ));
        assert!(!trusted(
            t,
            &bearer("Basic generated-admin-token-for-tests"),
            false
        ));
        assert!(!trusted(
            t,
            &bearer("generated-admin-token-for-tests"),
            false
        ));
        // No token configured: a remote peer is never trusted, whatever it sends.
        assert!(!trusted(None, &bearer("Bearer anything"), false));
        assert!(!trusted(None, &bearer("Bearer "), false));
        assert!(trusted(None, &HeaderMap::new(), true));
    }
}
