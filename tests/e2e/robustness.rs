//! HTTP/1.1 framing attacks, sent as raw bytes: every ambiguous request is refused by
//! sitegate itself and never reaches the app in any reading, so a front proxy and the
//! app can never disagree about where one request ends (request smuggling).

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::*;

/// A pass-through route (the body streams to the app) ...
const PASS: &str = r#"
[[route]]
name = "pass"
path = "/echo"
"#;

/// ... and a validating one (the body is read whole first).
const CHECKED: &str = r#"
[[route]]
name = "checked"
path = "/echo"
methods = ["POST"]
content_types = ["application/json"]
schema = "s"

[schema.s]
required = ["a"]
"#;

/// Sends `raw` on a fresh connection and reads until the proxy closes it (or 5 s).
async fn exchange(env: &Env, raw: &[u8]) -> String {
    raw_exchange(env.proxy.addr, raw, Duration::from_secs(5)).await
}

/// The requests that must be refused: (what, bytes).
fn ambiguous(path: &str) -> Vec<(&'static str, String)> {
    let smuggled = "GET /echo/smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    vec![
        (
            "a coding before chunked",
            format!(
                "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: gzip, chunked\r\n\r\n7\r\n{{\"a\":1}}\r\n0\r\n\r\n"
            ),
        ),
        (
            "two Transfer-Encoding lines",
            format!(
                "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: identity\r\nTransfer-Encoding: chunked\r\n\r\n7\r\n{{\"a\":1}}\r\n0\r\n\r\n"
            ),
        ),
        (
            "two different Content-Lengths",
            format!(
                "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 7\r\nContent-Length: 49\r\n\r\n{{\"a\":1}}{smuggled}"
            ),
        ),
        (
            "a Content-Length list",
            format!(
                "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 7, 49\r\n\r\n{{\"a\":1}}{smuggled}"
            ),
        ),
        (
            "a signed Content-Length",
            format!(
                "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: +7\r\n\r\n{{\"a\":1}}"
            ),
        ),
        (
            "obs-fold (a header continued on the next line)",
            format!(
                "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nX-Note: a\r\n Transfer-Encoding: chunked\r\nContent-Length: 7\r\n\r\n{{\"a\":1}}"
            ),
        ),
        (
            "a transfer coding other than chunked last",
            format!(
                "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked, identity\r\n\r\n7\r\n{{\"a\":1}}\r\n0\r\n\r\n"
            ),
        ),
        (
            "an obfuscated Transfer-Encoding",
            format!(
                "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: xchunked\r\nContent-Length: 7\r\n\r\n{{\"a\":1}}"
            ),
        ),
        (
            "a space before the colon",
            format!(
                "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding : chunked\r\nContent-Length: 7\r\n\r\n{{\"a\":1}}"
            ),
        ),
        (
            "a chunk size that is not hex",
            format!(
                "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{{\"a\":1}}\r\n0\r\n\r\n"
            ),
        ),
        (
            "a chunk size that overflows",
            format!(
                "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n1000000000000000000000007\r\n{{\"a\":1}}\r\n0\r\n\r\n"
            ),
        ),
    ]
}

#[tokio::test]
async fn ambiguous_framing_is_refused_and_never_reaches_the_app() {
    for routes in [PASS, CHECKED] {
        let env = Env::start(routes).await;
        let path = "/echo";
        for (what, raw) in ambiguous(path) {
            let before = env.app.requests();
            let answer = exchange(&env, raw.as_bytes()).await;
            let status = answer.split(' ').nth(1).unwrap_or("");
            assert!(
                status.starts_with('4'),
                "{what} on {path}: answered {answer:?}"
            );
            assert_eq!(
                env.app.requests(),
                before,
                "{what} on {path} reached the app (answer {answer:?})"
            );
        }
        // The same checks leave a well-formed chunked request alone.
        let ok = exchange(
            &env,
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n7\r\n{\"a\":1}\r\n0\r\n\r\n",
        )
        .await;
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
        assert!(ok.contains("{\"a\":1}"), "{ok}");
        assert_eq!(env.app.requests(), 1);
    }
}

/// Content-Length and Transfer-Encoding together, in both orders. RFC 9112 §6.3 lets an
/// intermediary forward such a request if it drops the length, reads the chunks and
/// closes the connection afterwards, which is what hyper does: the bytes after the
/// chunked body (the smuggled request) are never read as a request, and the app gets
/// the body framed one way only.
#[tokio::test]
async fn content_length_with_transfer_encoding_cannot_smuggle_a_request() {
    let env = Env::start(PASS).await;
    let smuggled = "GET /echo/smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    for (what, raw) in [
        (
            "length first",
            format!(
                "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}"
            ),
        ),
        (
            "chunked first",
            format!(
                "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 50\r\n\r\n0\r\n\r\n{smuggled}"
            ),
        ),
    ] {
        let before = env.app.requests();
        let answer = exchange(&env, raw.as_bytes()).await;
        assert_eq!(
            answer.matches("HTTP/1.1 ").count(),
            1,
            "{what}: more than one answer: {answer:?}"
        );
        assert!(
            answer.to_ascii_lowercase().contains("connection: close"),
            "{what}: the connection stays open: {answer:?}"
        );
        assert_eq!(env.app.requests(), before + 1, "{what}: {answer:?}");
    }
}

#[tokio::test]
async fn an_oversized_header_block_gets_431() {
    let env = Env::start(PASS).await;
    let big = "a".repeat(40 * 1024);
    let answer = exchange(
        &env,
        format!("GET /echo HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n").as_bytes(),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:?}");
    // Many small headers add up the same way.
    let many: String = (0..2000)
        .map(|i| format!("X-H{i}: {}\r\n", "b".repeat(20)))
        .collect();
    let answer = exchange(
        &env,
        format!("GET /echo HTTP/1.1\r\nHost: x\r\n{many}\r\n").as_bytes(),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:?}");
    assert_eq!(env.app.requests(), 0);
}

/// A body that turns malformed after the app's request is under way: the app's request
/// is aborted (it never gets a complete one) and the client is told it was its body,
/// not the app, that failed.
#[tokio::test]
async fn a_chunked_body_that_breaks_mid_stream_is_the_clients_error() {
    // /sha256 reads the whole body before it answers.
    let env = Env::start("[[route]]\nname = \"pass\"\npath = \"/sha256\"\n").await;
    let mut s = tokio::net::TcpStream::connect(env.proxy.addr)
        .await
        .unwrap();
    s.write_all(
        b"POST /sha256 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n",
    )
    .await
    .unwrap();
    // Let the request reach the app before the body goes bad.
    assert_eventually(
        "the app sees the request",
        Duration::from_secs(5),
        || async { env.app.requests() == 1 },
    )
    .await;
    s.write_all(b"zz\r\nnot a chunk\r\n").await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    let answer = String::from_utf8_lossy(&buf);
    assert!(
        answer.starts_with("HTTP/1.1 400") && answer.contains("INVALID_REQUEST"),
        "{answer:?}"
    );
    let m = get(&env.admin("/metrics")).await.body_text();
    assert_eq!(
        metric(
            &m,
            "sitegate_upstream_failures_total{route=\"pass\",reason=\"connect\"}"
        ),
        0.0,
        "{m}"
    );
}
