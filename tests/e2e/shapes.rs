//! Every way an app can write a secret into a response, against both redaction paths:
//! the whole-buffer one (a sized body under `buffer_limit`) and the streaming one (a
//! chunked body in 7-byte chunks, so escapes and secrets fall across chunks). The
//! upstream is a raw socket, so the framing and headers are exactly what is written.

use std::io::Write;

use bytes::Bytes;
use http_body_util::BodyExt;

use crate::harness::*;

const SECRET: &str = "AKIAIOSFODNN7EXAMPLE";

#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    /// The client gets the body with the secret replaced.
    Redacted,
    /// Passed on byte for byte (a skipped binary type).
    Unchanged,
    /// 502: sitegate cannot read it, so it is not passed on.
    Refused,
    /// The streamed body ends early with an error, the secret not sent.
    Cut,
}

struct Shape {
    name: &'static str,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
    sized: Expect,
    chunked: Expect,
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn utf16(s: &str, big_endian: bool, bom: bool) -> Vec<u8> {
    let mut units: Vec<u16> = Vec::new();
    if bom {
        units.push(0xFEFF);
    }
    units.extend(s.encode_utf16());
    units
        .iter()
        .flat_map(|u| {
            if big_endian {
                u.to_be_bytes()
            } else {
                u.to_le_bytes()
            }
        })
        .collect()
}

fn key_block() -> (String, Vec<String>) {
    // 70 KiB of base64 lines: past the 64 KiB a stream may hold for one key.
    let lines: Vec<String> = (0..1100)
        .map(|i| {
            let mut rng = fastrand::Rng::with_seed(i);
            (0..64).map(|_| rng.alphanumeric()).collect()
        })
        .collect();
    let pem = format!(
        "-----BEGIN RSA PRIVATE KEY-----\n{}\n-----END RSA PRIVATE KEY-----\n",
        lines.join("\n")
    );
    (pem, lines)
}

fn shapes() -> Vec<Shape> {
    use Expect::*;
    let ct = |v: &str| vec![("content-type", v.to_string())];
    let plain = format!("{{\"k\":\"{SECRET}\",\"n\":1}}\n");
    let escaped = r#"{"k":"\u0041\u004bIAIOSFODNN7EXAMPLE","n":1}"#.to_string();
    let hook = format!(
        r#"{{"hook":"https:\/\/hooks.slack.com\/services\/T0000000\/B0000000\/{}"}}"#,
        "Q".repeat(24)
    );
    let mut out = vec![
        Shape {
            name: "json with \\u escapes",
            headers: ct("application/json"),
            body: escaped.into_bytes(),
            sized: Redacted,
            chunked: Redacted,
        },
        Shape {
            name: "json with escaped slashes",
            headers: ct("application/json"),
            body: hook.into_bytes(),
            sized: Redacted,
            chunked: Redacted,
        },
        Shape {
            name: "utf-16 with a byte order mark",
            headers: ct("application/json; charset=utf-16"),
            body: utf16(&plain, false, true),
            sized: Redacted,
            chunked: Refused,
        },
        Shape {
            name: "utf-16 big-endian without a mark",
            headers: ct("application/json; charset=\"UTF-16\""),
            body: utf16(&plain, true, false),
            sized: Redacted,
            chunked: Refused,
        },
        Shape {
            name: "utf-16le",
            headers: ct("text/plain; charset=utf-16le"),
            body: utf16(&plain, false, false),
            sized: Redacted,
            chunked: Refused,
        },
        Shape {
            name: "a charset sitegate does not know",
            headers: ct("text/plain; charset=utf-32"),
            body: plain.clone().into_bytes(),
            sized: Refused,
            chunked: Refused,
        },
        Shape {
            name: "identity, then gzip on a second line",
            headers: vec![
                ("content-type", "application/json".into()),
                ("content-encoding", "identity".into()),
                ("content-encoding", "gzip".into()),
            ],
            body: gzip(plain.as_bytes()),
            sized: Redacted,
            chunked: Refused,
        },
        Shape {
            name: "gzip twice in one list",
            headers: vec![
                ("content-type", "application/json".into()),
                ("content-encoding", "gzip, gzip".into()),
            ],
            body: gzip(&gzip(plain.as_bytes())),
            sized: Redacted,
            chunked: Refused,
        },
        Shape {
            name: "an unknown coding after a known one",
            headers: vec![
                ("content-type", "application/json".into()),
                ("content-encoding", "gzip, br".into()),
            ],
            body: plain.clone().into_bytes(),
            sized: Refused,
            chunked: Refused,
        },
        Shape {
            name: "no content type",
            headers: vec![],
            body: plain.clone().into_bytes(),
            sized: Redacted,
            chunked: Redacted,
        },
        Shape {
            name: "image/png",
            headers: ct("image/png"),
            body: plain.clone().into_bytes(),
            sized: Unchanged,
            chunked: Unchanged,
        },
        Shape {
            name: "application/octet-stream (a model file)",
            headers: ct("application/octet-stream"),
            body: plain.clone().into_bytes(),
            sized: Unchanged,
            chunked: Unchanged,
        },
        Shape {
            name: "a private key longer than the window",
            headers: ct("text/plain"),
            body: key_block().0.into_bytes(),
            sized: Refused,
            chunked: Cut,
        },
    ];
    for t in [
        "application/x-ndjson",
        "application/vnd.api+json",
        "text/event-stream",
        "multipart/mixed; boundary=b",
        "*/*",
        "application/x-unheard-of",
        "text/plain; charset=iso-8859-1",
    ] {
        out.push(Shape {
            name: t,
            headers: ct(t),
            body: plain.clone().into_bytes(),
            sized: Redacted,
            chunked: Redacted,
        });
    }
    out
}

/// Header values that must come back redacted on every shape.
fn leaky_headers(token: &str) -> Vec<(&'static str, String)> {
    vec![
        ("location", format!("https://app.example/cb?key={SECRET}")),
        ("set-cookie", format!("gh={token}; Path=/; HttpOnly")),
        ("set-cookie", "theme=dark; Path=/".to_string()),
        (
            "link",
            "<https://app.example/next?token=%41KIAIOSFODNN7EXAMPLE>; rel=\"next\"".to_string(),
        ),
        (
            "www-authenticate",
            format!("Bearer realm=\"app\", hint=\"{SECRET}\""),
        ),
        ("x-debug-aws", SECRET.to_string()),
    ]
}

/// A raw HTTP/1.1 upstream: `/N/sized` or `/N/chunked` answers shape N.
async fn upstream(shapes: Vec<Shape>, token: String) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shapes = std::sync::Arc::new(shapes);
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let shapes = shapes.clone();
            let token = token.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let line = String::from_utf8_lossy(&head);
                let method = line.split(' ').next().unwrap_or("").to_string();
                let path = line.split(' ').nth(1).unwrap_or("/").to_string();
                let mut parts = path.trim_matches('/').split('/');
                let i: usize = parts.next().unwrap_or("0").parse().unwrap_or(0);
                let chunked = parts.next() == Some("chunked");
                let shape = &shapes[i];
                let mut out = b"HTTP/1.1 200 OK\r\nconnection: close\r\n".to_vec();
                for (k, v) in shape.headers.iter().chain(leaky_headers(&token).iter()) {
                    out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
                }
                if chunked {
                    out.extend_from_slice(b"transfer-encoding: chunked\r\n\r\n");
                } else {
                    out.extend_from_slice(
                        format!("content-length: {}\r\n\r\n", shape.body.len()).as_bytes(),
                    );
                }
                if method != "HEAD" {
                    if chunked {
                        for c in shape.body.chunks(7) {
                            out.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
                            out.extend_from_slice(c);
                            out.extend_from_slice(b"\r\n");
                        }
                        out.extend_from_slice(b"0\r\n\r\n");
                    } else {
                        out.extend_from_slice(&shape.body);
                    }
                }
                let _ = s.write_all(&out).await;
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

/// Every way a client could read `bytes`: as sent, gunzipped (any number of times),
/// as UTF-16 either way round, and JSON strings unescaped.
fn readings(bytes: &[u8]) -> Vec<String> {
    use std::io::Read;
    let mut layers = vec![bytes.to_vec()];
    loop {
        let mut out = Vec::new();
        let last = layers.last().unwrap();
        match flate2::read::MultiGzDecoder::new(&last[..]).read_to_end(&mut out) {
            Ok(_) if !out.is_empty() => layers.push(out),
            _ => break,
        }
    }
    let mut texts = Vec::new();
    for l in &layers {
        texts.push(String::from_utf8_lossy(l).into_owned());
        for be in [false, true] {
            let units: Vec<u16> = l
                .chunks_exact(2)
                .map(|c| {
                    if be {
                        u16::from_be_bytes([c[0], c[1]])
                    } else {
                        u16::from_le_bytes([c[0], c[1]])
                    }
                })
                .collect();
            texts.push(String::from_utf16_lossy(&units));
        }
    }
    let unescaped: Vec<String> = texts
        .iter()
        .flat_map(|t| t.lines().map(str::to_string).collect::<Vec<_>>())
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(&line).ok())
        .map(|v| format!("{v:#}").replace("\\/", "/"))
        .collect();
    let json_strings: Vec<String> = texts
        .iter()
        .filter_map(|t| {
            serde_json::from_str::<serde_json::Value>(t.trim_start_matches('\u{feff}')).ok()
        })
        .map(|v| strings(&v))
        .collect();
    texts.extend(unescaped);
    texts.extend(json_strings);
    texts
}

fn strings(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Array(a) => a.iter().map(strings).collect::<Vec<_>>().join(" "),
        serde_json::Value::Object(o) => o.values().map(strings).collect::<Vec<_>>().join(" "),
        _ => String::new(),
    }
}

fn percent_decoded(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (
            b[i],
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

struct Got {
    status: u16,
    headers: http::HeaderMap,
    body: Bytes,
    /// The body ended with an error rather than its end.
    broken: bool,
}

async fn fetch(method: &str, url: &str) -> Got {
    let req = http::Request::builder()
        .method(method)
        .uri(url)
        .body(sitegate::body::full(Bytes::new()))
        .unwrap();
    let resp = client().request(req).await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let mut body = resp.into_body();
    let mut got = Vec::new();
    let mut broken = false;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => {
                if let Ok(d) = f.into_data() {
                    got.extend_from_slice(&d);
                }
            }
            Err(_) => {
                broken = true;
                break;
            }
        }
    }
    Got {
        status,
        headers,
        body: Bytes::from(got),
        broken,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_response_shape_carries_a_secret_past_sitegate_on_either_path() {
    let token = format!("ghp_{}", "Z".repeat(36));
    let all = shapes();
    let expected: Vec<(&str, Expect, Expect, Vec<u8>)> = all
        .iter()
        .map(|s| (s.name, s.sized, s.chunked, s.body.clone()))
        .collect();
    let (_, key_lines) = key_block();
    let addr = upstream(all, token.clone()).await;
    let env = Env::start_with_main(|main| {
        let start = main.find("url = \"http://").unwrap() + "url = \"http://".len();
        let end = start + main[start..].find('"').unwrap();
        format!("{}{addr}{}", &main[..start], &main[end..])
    })
    .await;
    let mut failures = Vec::new();
    for (i, (name, sized, chunked, sent)) in expected.iter().enumerate() {
        for (mode, expect) in [("sized", sized), ("chunked", chunked)] {
            let got = fetch("GET", &env.url(&format!("/{i}/{mode}"))).await;
            let what = format!("{name} ({mode})");
            let mut fail = |why: String| failures.push(format!("{what}: {why}"));
            // Nothing the client can decode holds a secret: body or header.
            for text in readings(&got.body) {
                if *expect != Expect::Unchanged && (text.contains(SECRET) || text.contains(&token))
                {
                    fail(format!("the secret got through: {text:.200}"));
                }
            }
            if *expect != Expect::Unchanged
                && key_lines
                    .iter()
                    .any(|l| got.body.windows(64).any(|w| w == l.as_bytes()))
            {
                fail("a line of the key block got through".into());
            }
            if *expect == Expect::Refused || got.status == 502 {
                // A refusal has nothing of the app's, headers included.
            } else {
                for (k, v) in &got.headers {
                    let v = percent_decoded(&String::from_utf8_lossy(v.as_bytes()));
                    if v.contains(SECRET) || v.contains(&token) {
                        fail(format!("header {k} holds the secret: {v}"));
                    }
                }
                let cookies: Vec<_> = got.headers.get_all("set-cookie").iter().collect();
                if cookies.len() != 2 || cookies[1] != "theme=dark; Path=/" {
                    fail(format!("cookies not kept in order: {cookies:?}"));
                }
            }
            match expect {
                Expect::Redacted => {
                    let redacted = readings(&got.body).iter().any(|t| t.contains("[REDACTED]"));
                    if got.status != 200 || got.broken || !redacted {
                        fail(format!(
                            "expected a redacted 200, got {} (broken {}): {:.200}",
                            got.status,
                            got.broken,
                            String::from_utf8_lossy(&got.body)
                        ));
                    }
                    let is_json = got
                        .headers
                        .get("content-type")
                        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
                    if is_json
                        && !name.starts_with("utf-16")
                        && got.headers.get("content-encoding").is_none()
                        && serde_json::from_slice::<serde_json::Value>(&got.body).is_err()
                    {
                        fail(format!(
                            "no longer JSON: {}",
                            String::from_utf8_lossy(&got.body)
                        ));
                    }
                }
                Expect::Unchanged => {
                    if got.status != 200 || got.body != sent[..] {
                        fail(format!("expected the body unchanged, got {}", got.status));
                    }
                }
                Expect::Refused => {
                    if got.status != 502 {
                        fail(format!("expected 502, got {}", got.status));
                    }
                }
                Expect::Cut => {
                    if got.status != 200 || !got.broken {
                        fail(format!(
                            "expected a cut body, got {} broken {}, {} bytes ending {:?}",
                            got.status,
                            got.broken,
                            got.body.len(),
                            String::from_utf8_lossy(&got.body[got.body.len().saturating_sub(80)..])
                        ));
                    }
                }
            }
        }
    }
    // A UTF-16 body stays UTF-16, its byte order kept.
    let got = fetch("GET", &env.url("/3/sized")).await;
    let units: Vec<u16> = got
        .body
        .chunks_exact(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]))
        .collect();
    assert_eq!(
        String::from_utf16(&units).unwrap(),
        "{\"k\":\"[REDACTED]\",\"n\":1}\n"
    );
    // A HEAD answer has no body to scan, but its headers are.
    let got = fetch("HEAD", &env.url("/0/sized")).await;
    assert_eq!(got.status, 200);
    assert_eq!(
        got.headers.get("location").unwrap(),
        "https://app.example/cb?key=[REDACTED]"
    );
    assert_eq!(got.headers.get("x-debug-aws").unwrap(), "[REDACTED]");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn skip_list_and_unknown_charsets_are_settings() {
    let token = format!("ghp_{}", "Z".repeat(36));
    let addr = upstream(shapes(), token).await;
    let env = Env::start_with_main(|main| {
        let start = main.find("url = \"http://").unwrap() + "url = \"http://".len();
        let end = start + main[start..].find('"').unwrap();
        format!(
            "{}{addr}{}\n[redaction]\nskip_content_types = [\"image/*\"]\nunknown_charset = \"scan\"\n",
            &main[..start],
            &main[end..]
        )
    })
    .await;
    let index = |name: &str| shapes().iter().position(|s| s.name == name).unwrap();
    // octet-stream is now scanned; utf-32 is scanned as bytes (ASCII survives in it
    // only as ASCII-compatible text, which this body is).
    for name in [
        "application/octet-stream (a model file)",
        "a charset sitegate does not know",
    ] {
        let got = fetch("GET", &env.url(&format!("/{}/sized", index(name)))).await;
        assert_eq!(got.status, 200, "{name}");
        let text = String::from_utf8_lossy(&got.body);
        assert!(
            text.contains("[REDACTED]") && !text.contains(SECRET),
            "{name}: {text}"
        );
    }
    let got = fetch("GET", &env.url(&format!("/{}/sized", index("image/png")))).await;
    assert!(String::from_utf8_lossy(&got.body).contains(SECRET));
    // A bad entry is an error at its place, like every key.
    let bad = tempfile::tempdir().unwrap();
    std::fs::write(
        bad.path().join("sitegate.toml"),
        "[upstream]\nurl = \"http://127.0.0.1:1\"\n[redaction]\nskip_content_types = [\"image\"]\nunknown_charset = \"maybe\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sitegate"))
        .args(["check", "--config"])
        .arg(bad.path().join("sitegate.toml"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("`type/subtype` or `type/*`"), "{err}");
    assert!(err.contains("unknown_charset is"), "{err}");
}
