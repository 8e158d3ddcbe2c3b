//! The app sees what the guards saw (DESIGN §10.1), proved against the real Flask app:
//! thousands of generated variants of every guarded route of the shipped policy, sent
//! through sitegate over HTTP/1.1 and h2c, and straight to the app to learn where its
//! own router lands them. A variant either never reaches the app (sitegate refused it
//! as ambiguous), or gets exactly the decision of the plain path, or lands on no
//! endpoint of the app at all.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::legacy::{Flask, proxy_for};

/// What came back, reduced to what decides the test.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    /// sitegate answered itself: status and error code.
    Refused(u16, String),
    /// The app answered from one of its endpoints: status and JSON body.
    Served(u16, String),
    /// The app's router found no endpoint (404, 405, a redirect).
    NoEndpoint(u16),
}

fn outcome(status: u16, body: &[u8]) -> Outcome {
    let json: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    match json {
        Some(v) if v["error"]["request_id"].is_string() => Outcome::Refused(
            status,
            v["error"]["code"].as_str().unwrap_or_default().to_string(),
        ),
        Some(v) if (200..300).contains(&status) => Outcome::Served(status, v.to_string()),
        // hyper's own parser refused the request head (sitegate's listener answers
        // such a 400 without a body): it never reached the app.
        None if status == 400 && body.is_empty() => Outcome::Refused(400, "HTTP_PARSER".into()),
        _ if matches!(status, 404 | 405 | 301 | 302 | 307 | 308) => Outcome::NoEndpoint(status),
        // Anything else (a Werkzeug 400 for a target it cannot parse) never reached an
        // endpoint either.
        _ => Outcome::NoEndpoint(status),
    }
}

/// One request over HTTP/1.1 with the request target sent byte for byte.
async fn h1(addr: SocketAddr, method: &str, target: &str, body: &str) -> Outcome {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "{method} {target} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out);
    let status: u16 = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line for {method} {target}: {text:?}"));
    let split = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(out.len());
    let head = text[..split.min(text.len())].to_ascii_lowercase();
    let mut body = out[(split + 4).min(out.len())..].to_vec();
    if head.contains("transfer-encoding: chunked") {
        body = dechunk(&body);
    }
    outcome(status, &body)
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
        let size =
            usize::from_str_radix(String::from_utf8_lossy(&b[..eol]).trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = eol + 2;
        out.extend_from_slice(&b[start..(start + size).min(b.len())]);
        b = &b[(start + size + 2).min(b.len())..];
    }
    out
}

/// One request over h2c (prior knowledge); `None` when the variant is not a URI the
/// client library can send at all.
async fn h2(
    client: &hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        http_body_util::Full<Bytes>,
    >,
    addr: SocketAddr,
    method: &str,
    target: &str,
    body: &str,
) -> Option<Outcome> {
    let uri: http::Uri = format!("http://{addr}{target}").parse().ok()?;
    let method = http::Method::from_bytes(method.as_bytes()).ok()?;
    let req = http::Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(Bytes::from(body.to_string())))
        .ok()?;
    let resp = client.request(req).await.ok()?;
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.ok()?.to_bytes();
    Some(outcome(status, &bytes))
}

/// Variants of `path`: every character percent-encoded (both hex cases), dot segments,
/// doubled and trailing slashes, case changes, `;` parameters, encoded and raw
/// backslashes and slashes, absolute-form, and random combinations of them.
fn variants(path: &str, rng: &mut fastrand::Rng) -> Vec<String> {
    let mut out = Vec::new();
    let chars: Vec<char> = path.chars().collect();
    for (i, c) in chars.iter().enumerate() {
        let (a, b): (String, String) =
            (chars[..i].iter().collect(), chars[i + 1..].iter().collect());
        let code = *c as u32;
        out.push(format!("{a}%{code:02x}{b}"));
        out.push(format!("{a}%{code:02X}{b}"));
        if c.is_ascii_alphabetic() && in_literal(path, i) {
            let flipped = if c.is_ascii_lowercase() {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            };
            out.push(format!("{a}{flipped}{b}"));
        }
        if *c == '/' {
            for insert in [
                "/",
                "./",
                "%2e/",
                "%2E%2E/x/../",
                "x/../",
                "x/%2e%2e/",
                ".%2F",
                "%2f",
                "%5c",
                "\\",
            ] {
                out.push(format!("{a}/{insert}{b}"));
            }
            out.push(format!("{a};x=1/{b}"));
            out.push(format!("{a}/%2e%2e/{b}"));
        }
    }
    out.push(format!("{path}/"));
    out.push(format!("{path}/."));
    out.push(format!("{path}/x/.."));
    out.push(format!("{path};"));
    out.push(format!("{path};jsessionid=1"));
    out.push(format!("{path}%00"));
    out.push(format!("{path}%"));
    out.push(format!("{path}?a=1"));
    out.push(format!("{path}#frag"));
    out.push(format!("/{path}"));
    out.push(format!("//{path}"));
    out.push(format!("/..{path}"));
    out.push(path.to_uppercase());
    out.push(
        path.bytes()
            .map(|b| {
                if b == b'/' {
                    "/".to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect(),
    );
    // Combinations: two to four random single edits applied in turn.
    for _ in 0..120 {
        let mut p = path.to_string();
        for _ in 0..rng.usize(2..5) {
            let vs = variants_once(&p, rng);
            p = vs[rng.usize(..vs.len())].clone();
        }
        out.push(p);
    }
    out.sort();
    out.dedup();
    out
}

/// The path's fixed words (not route parameters): changing their case must not change
/// the decision. A parameter in another case is another model, not a variant.
const LITERALS: &[&str] = &[
    "models",
    "predict",
    "retrain",
    "api",
    "phase9",
    "intelligence",
    "phase12",
    "delay-prediction",
    "phase13",
    "budget-forecast",
];

/// True when the character at `i` is in one of the path's fixed words.
fn in_literal(path: &str, i: usize) -> bool {
    let start = path[..i].rfind('/').map_or(0, |p| p + 1);
    let end = path[i..].find('/').map_or(path.len(), |p| i + p);
    LITERALS.contains(&&path[start..end])
}

/// One random single edit of `path` (no combinations), for building combinations.
fn variants_once(path: &str, rng: &mut fastrand::Rng) -> Vec<String> {
    let chars: Vec<char> = path.chars().collect();
    let i = rng.usize(..chars.len().max(1));
    let (a, b): (String, String) = (chars[..i].iter().collect(), chars[i..].iter().collect());
    let first = b.chars().next().unwrap_or('/');
    let rest: String = b.chars().skip(1).collect();
    let mut out = vec![
        format!("{a}%{:02x}{rest}", first as u32),
        format!("{a}/{b}"),
        format!("{a}/./{b}"),
        format!("{a}/x/../{b}"),
        format!("{a};p{b}"),
    ];
    if i < path.len() && path.is_char_boundary(i) && in_literal(path, i) {
        out.push(format!("{a}{}{rest}", first.to_ascii_uppercase()));
    }
    out
}

/// The plain path of what the app served, from its answer: the endpoint and the
/// parameters as the app's router read them, each percent-encoded whole so that the
/// path means exactly those values.
fn app_view(served: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(served).ok()?;
    let enc = |s: &str| -> String {
        s.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect()
    };
    if let Some(phase) = v["phase"].as_i64() {
        return Some(
            match phase {
                9 => "/api/phase9/intelligence",
                12 => "/api/phase12/delay-prediction",
                _ => "/api/phase13/budget-forecast",
            }
            .to_string(),
        );
    }
    let model = v["model"].as_str()?;
    Some(match v["version"].as_str() {
        Some(version) => format!("/models/{}/{}/predict", enc(model), enc(version)),
        None => format!("/models/{}/retrain", enc(model)),
    })
}

struct Case {
    path: &'static str,
    body: &'static str,
}

/// Every guarded route of the shipped policy, with a request its guard refuses and one
/// it lets through.
const CASES: &[Case] = &[
    Case {
        path: "/models/risk-classifier/0.9.0/predict",
        body: "{}",
    },
    Case {
        path: "/models/no-such-model/6.6.6/predict",
        body: "{}",
    },
    Case {
        path: "/models/delay-predictor/2.1.0/predict",
        body: "{}",
    },
    Case {
        path: "/models/risk-classifier/predict",
        body: "{}",
    },
    Case {
        path: "/models/delay-predictor/retrain",
        body: "{}",
    },
    Case {
        path: "/models/delay-predictor/retrain",
        body: r#"{"force_retrain":true}"#,
    },
    Case {
        path: "/api/phase9/intelligence",
        body: r#"{"project_id":"X"}"#,
    },
    Case {
        path: "/api/phase12/delay-prediction",
        body: r#"{"project_id":"X"}"#,
    },
    Case {
        path: "/api/phase13/budget-forecast",
        body: r#"{"project_id":"P001","project_name":"B","budget":1,"scheduled_duration_days":2}"#,
    },
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_variant_of_a_guarded_path_reaches_the_app_with_another_decision() {
    let flask = tokio::task::spawn_blocking(Flask::start).await.unwrap();
    let proxy = proxy_for(&flask).await;
    let app: SocketAddr = ([127, 0, 0, 1], flask.port).into();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<http_body_util::Full<Bytes>>();
    let mut rng = fastrand::Rng::with_seed(11);
    let mut tried = 0usize;
    let mut tally: BTreeMap<String, usize> = BTreeMap::new();
    let mut wrong = Vec::new();
    for case in CASES {
        let mut plain_of: BTreeMap<String, Outcome> = BTreeMap::new();
        let plain = h1(proxy.addr, "POST", case.path, case.body).await;
        assert!(
            !matches!(plain, Outcome::NoEndpoint(_)),
            "{}: the plain path must reach a guard or the app: {plain:?}",
            case.path
        );
        let all = variants(case.path, &mut rng);
        // The method as the app reads it, too.
        let methods = ["POST", "post", "Post"];
        let jobs: Vec<(String, &str)> = all
            .iter()
            .map(|v| (v.clone(), "POST"))
            .chain(methods[1..].iter().map(|m| (case.path.to_string(), *m)))
            .chain(std::iter::once((
                format!("http://{}{}", proxy.addr, case.path),
                "POST",
            )))
            .chain(std::iter::once((
                format!("http://evil.example{}", case.path),
                "POST",
            )))
            .collect();
        for chunk in jobs.chunks(16) {
            let mut set = tokio::task::JoinSet::new();
            for (target, method) in chunk.iter().cloned() {
                let (client, body, proxy_addr) = (client.clone(), case.body, proxy.addr);
                set.spawn(async move {
                    let direct = h1(app, method, &target, body).await;
                    let via = h1(proxy_addr, method, &target, body).await;
                    let via2 = h2(&client, proxy_addr, method, &target, body).await;
                    (target, method, direct, via, via2)
                });
            }
            while let Some(r) = set.join_next().await {
                let (target, method, direct, via, via2) = r.unwrap();
                // What sitegate decides for the request the app's router saw, sent
                // plainly: the decision every variant the app serves must get.
                let expected = match &direct {
                    Outcome::Served(_, body) => {
                        let seen = app_view(body).expect("an endpoint's answer names it");
                        if !plain_of.contains_key(&seen) {
                            let o = h1(proxy.addr, "POST", &seen, case.body).await;
                            plain_of.insert(seen.clone(), o);
                        }
                        Some(plain_of[&seen].clone())
                    }
                    _ => None,
                };
                for (proto, got) in [("h1", Some(via)), ("h2c", via2)] {
                    let Some(got) = got else { continue };
                    tried += 1;
                    let ambiguous = matches!(&got, Outcome::Refused(_, c) if c == "INVALID_PATH" || c == "INVALID_REQUEST" || c == "HTTP_PARSER");
                    let (ok, label) = match &expected {
                        _ if ambiguous => (true, "refused as ambiguous"),
                        // The app routes the variant to an endpoint: sitegate's answer
                        // is the one it gives the plain path of what the app saw.
                        Some(e) if got == *e && *e == plain => {
                            (true, "same decision as the plain path")
                        }
                        Some(e) => (got == *e, "same decision as the app's own view of it"),
                        // The app routes it nowhere: sitegate must not get it served.
                        None if got == plain => {
                            (true, "same decision as the plain path (normalized)")
                        }
                        None => (
                            !matches!(got, Outcome::Served(..)),
                            "no endpoint in the app",
                        ),
                    };
                    if !ok {
                        wrong.push(format!("{proto} {method} {target}: got {got:?}, plain {plain:?}, app direct {direct:?}"));
                    }
                    *tally.entry(label.to_string()).or_default() += 1;
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {tried} variants disagree:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    assert!(tried >= 3000, "only {tried} variants were tried");
    // Both ways a variant is settled occur: the test is not vacuous.
    assert!(
        tally.get("refused as ambiguous").copied().unwrap_or(0) > 100,
        "{tally:?}"
    );
    let same = tally
        .get("same decision as the plain path")
        .copied()
        .unwrap_or(0)
        + tally
            .get("same decision as the plain path (normalized)")
            .copied()
            .unwrap_or(0);
    assert!(same > 1000, "{tally:?}");
    eprintln!("{tried} variants: {tally:?}");
}
