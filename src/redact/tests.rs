use super::stream::Redacting;
use super::*;

use super::samples::{alnum, cases, formats, json_escaped as escaped, rep};

fn default() -> Redactor {
    Redactor::new(&RedactionSettings::default()).unwrap()
}

#[test]
fn at_least_thirty_builtin_detectors_each_with_a_true_and_a_false_positive() {
    let r = default();
    let names: Vec<&str> = r.detector_names().collect();
    assert!(BUILTINS.len() >= 30, "{}", BUILTINS.len());
    let cases = cases();
    for b in BUILTINS {
        assert!(
            cases.iter().any(|c| c.0 == b.name),
            "no test case for {}",
            b.name
        );
    }
    for (name, text, secret, near_miss) in &cases {
        assert!(names.contains(name), "{name} not active");
        let (out, found) = r
            .redact(text.as_bytes())
            .unwrap_or_else(|| panic!("{name}: nothing found in {text}"));
        let out = String::from_utf8(out).unwrap();
        assert!(
            !out.contains(secret.as_str()),
            "{name}: secret left in {out}"
        );
        assert!(out.contains("[REDACTED]"), "{name}: {out}");
        assert!(
            found.iter().any(|f| &*f.detector == *name),
            "{name}: found by {found:?}"
        );
        assert!(
            r.redact(near_miss.as_bytes()).is_none(),
            "{name}: false positive in {near_miss:?}"
        );
    }
}

#[test]
fn clean_input_is_untouched_and_findings_never_hold_the_secret() {
    let r = default();
    let text = b"{\"project_id\":\"P001\",\"budget\":1200000,\"note\":\"ask the site manager\"}";
    assert!(r.redact(text).is_none());
    let (out, found) = r.redact(b"k=AKIAIOSFODNN7EXAMPLE").unwrap();
    assert_eq!(out, b"k=[REDACTED]");
    assert_eq!(found[0].range, 2..22);
    assert!(!format!("{found:?}").contains("AKIA"));
}

#[test]
fn assignments_keep_the_key_and_replace_the_value() {
    let r = default();
    let (out, _) = r.redact(b"password: hunter2x and more").unwrap();
    assert_eq!(out, b"password: [REDACTED] and more");
    let (out, _) = r.redact(br#"{"user":{"password":"hunter2x"}}"#).unwrap();
    assert_eq!(out, br#"{"user":{"password":"[REDACTED]"}}"#);
}

#[test]
fn json_escaped_inside_a_json_string_is_redacted_too() {
    let r = default();
    let inner = format!(r#"{{"config":"{{\"token\": \"{}\"}}"}}"#, alnum(24, 40));
    let (out, found) = r.redact(inner.as_bytes()).unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        r#"{"config":"{\"token\": \"[REDACTED]\"}"}"#
    );
    assert_eq!(&*found[0].detector, "json-key");
}

#[test]
fn settings_disable_add_and_replace() {
    let settings = RedactionSettings {
        replacement: "***".into(),
        disable: vec!["aws-access-key-id".into()],
        patterns: vec![CustomPattern {
            name: "suite-service-token".into(),
            regex: Regex::new("CAI-[A-Z0-9]{24}").unwrap(),
            max_len: 28,
        }],
        ..RedactionSettings::default()
    };
    let r = Redactor::new(&settings).unwrap();
    assert!(r.redact(b"AKIAIOSFODNN7EXAMPLE").is_none());
    let token = format!("CAI-{}", rep('Z', 24));
    let (out, found) = r.redact(format!("t={token}.").as_bytes()).unwrap();
    assert_eq!(out, b"t=***.");
    assert_eq!(&*found[0].detector, "suite-service-token");
}

/// Streams `input` through the engine in chunks cut at `cuts`.
fn streamed(r: &Arc<Redactor>, input: &[u8], cuts: &[usize]) -> (Vec<u8>, usize) {
    let mut s = Redacting::new(r.clone());
    let mut out = Vec::new();
    let mut at = 0;
    for &c in cuts {
        out.extend_from_slice(&s.push(&input[at..c], false).0);
        at = c;
    }
    out.extend_from_slice(&s.push(&input[at..], true).0);
    (out, s.total())
}

fn whole(r: &Redactor, input: &[u8]) -> (Vec<u8>, usize) {
    match r.redact(input) {
        Some((out, found)) => (out, found.len()),
        None => (input.to_vec(), 0),
    }
}

/// A random body: JSON-ish filler with secrets of every kind planted in it.
fn planted(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let cases = cases();
    let mut out = Vec::new();
    while out.len() < len {
        match rng.u8(0..6) {
            0 => {
                let c = &cases[rng.usize(0..cases.len())];
                out.extend_from_slice(if rng.bool() {
                    c.1.as_bytes()
                } else {
                    c.3.as_bytes()
                });
            }
            1 => out.extend_from_slice(b"{\"k\": \"v\", \"n\": 12},\n"),
            2 => out.push(b' '),
            _ => {
                let n = rng.usize(1..40);
                out.extend((0..n).map(|_| rng.alphanumeric() as u8));
            }
        }
    }
    out
}

#[test]
fn streaming_equals_whole_buffer_for_every_cut() {
    let r = Arc::new(default());
    // Every single cut point, and every pair of nearby cuts, on bodies small enough.
    for seed in 0..6 {
        let input = planted(seed, 600);
        let expected = whole(&r, &input);
        for c in 0..=input.len() {
            assert_eq!(
                streamed(&r, &input, &[c]),
                expected,
                "seed {seed}, cut at {c}"
            );
        }
        for c in (0..input.len()).step_by(7) {
            let cuts: Vec<usize> = (c..input.len()).step_by(13).collect();
            assert_eq!(
                streamed(&r, &input, &cuts),
                expected,
                "seed {seed}, cuts from {c}"
            );
        }
    }
}

#[test]
fn streaming_equals_whole_buffer_for_random_chunkings() {
    let r = Arc::new(default());
    let mut rng = fastrand::Rng::with_seed(99);
    for seed in 0..16 {
        let input = planted(1000 + seed, 8_000);
        let expected = whole(&r, &input);
        assert!(expected.1 > 0);
        for _ in 0..5 {
            let mut cuts = Vec::new();
            let mut at = 0;
            loop {
                at += rng.usize(1..3000);
                if at >= input.len() {
                    break;
                }
                cuts.push(at);
            }
            assert_eq!(streamed(&r, &input, &cuts), expected, "seed {seed}");
        }
        // One byte at a time.
        if seed < 1 {
            let cuts: Vec<usize> = (1..input.len()).collect();
            assert_eq!(
                streamed(&r, &input, &cuts),
                expected,
                "seed {seed}, bytewise"
            );
        }
    }
}

#[test]
fn a_stream_holds_back_a_bounded_window() {
    let r = Arc::new(default());
    let mut s = Redacting::new(r.clone());
    let chunk = vec![b'a'; 64 * 1024];
    let mut max_held = 0;
    for _ in 0..200 {
        let (out, _) = s.push(&chunk, false);
        assert!(!out.is_empty());
        max_held = max_held.max(s.held());
    }
    assert!(max_held <= r.max_window(), "held {max_held}");
    // A PEM header without its end holds at most the PEM window, then lets go.
    let mut s = Redacting::new(r.clone());
    s.push(b"-----BEGIN RSA PRIVATE KEY-----", false);
    for _ in 0..3 {
        s.push(&chunk, false);
        assert!(s.held() <= r.max_window());
    }
}

#[test]
fn every_documented_format_of_every_family_is_caught() {
    let r = default();
    let formats = formats();
    assert!(formats.len() > 100, "{}", formats.len());
    let mut missed = Vec::new();
    for (detector, format, text, secret) in &formats {
        let out = r
            .redact(text.as_bytes())
            .map(|(o, f)| (String::from_utf8(o).unwrap(), f));
        match out {
            // Caught by its family, or by an assignment around it (which starts first).
            Some((out, found)) if !out.contains(secret.as_str()) => assert!(
                found
                    .iter()
                    .any(|f| &*f.detector == *detector || f.detector.ends_with("-assignment")),
                "{detector} {format}: caught by {found:?}"
            ),
            _ => missed.push(format!("{detector} {format}: {text}")),
        }
        // The same token cut short is not a token of the format.
        let short = &secret[..(secret.len() / 3).min(12)];
        if let Some((out, _)) = r.redact(short.as_bytes()) {
            assert_ne!(out, b"[REDACTED]", "{detector} {format}: {short}");
        }
    }
    assert!(missed.is_empty(), "missed:\n{}", missed.join("\n"));
}

#[test]
fn assignments_stay_on_their_line_and_leave_code_and_names_alone() {
    let r = default();
    let clean = [
        "if not password:\n    raise X",
        "connect(user, pwd=None)",
        "passwd: files systemd",
        "password = self.password",
        "pwd = os.getcwd()",
        "password: str | None = None",
        "token = tokens[0]",
        "api_keys_file = \"/etc/sitegate/api-keys\"",
        "secret_env = \"SG_JWT\"",
        "secret_file = \"jwt.secret\"",
        "api_key_header = \"x-api-key\"",
        "password = \"${DB_PASSWORD}\"",
        "password = \"<password>\"",
        "password: The password to use",
        "token = \"example\"",
        "password_file = /run/secrets/db",
        "DB_PASSWORD=DB_PASSWORD_FROM_VAULT",
        "secret = get_secret(name)",
        "'MODULE_PWD_STATE': 'yes',",
        "cvs://:pserver:anoncvs@sources.example.org:/cvs/src",
        // Names, prose and resource names where a token, key or secret would be.
        "\"output_token\": \"NextPageToken\",",
        "'tokenmerge':     TokenMergeFilter,",
        "\"AWS::SecretsManager::Secret\": \"AWS::SecretsManager::Secret\"",
        "\"secret\": \"secretsmanager:GetSecretValue\"",
        "TOKEN_EOF: \"end of template\",",
        "\"SecretArn\": \"arn:aws:secretsmanager:us-west-2:123456789012:secret:db-a1b2c3\"",
        "--token-secret-version=projects/myproj/secrets/read-pat/versions/1",
        "token = '{__relative_name__}'",
        "help=\"a proxy as scheme://[user:passwd@]proxy.server:port\"",
    ];
    for text in clean {
        assert!(r.redact(text.as_bytes()).is_none(), "changed: {text}");
    }
    for (text, want) in [
        ("password = \"hunter2\"", "password = \"[REDACTED]\""),
        ("pwd=Tr0ub4dor3)", "pwd=[REDACTED])"),
        (
            "password: hunter2x\nnext: line",
            "password: [REDACTED]\nnext: line",
        ),
        ("{'password': 's3cr3t-x'}", "{'password': '[REDACTED]'}"),
        (
            "password = \"correct horse battery\"",
            "password = \"[REDACTED]\"",
        ),
        // Generated values stay secrets, slashes and mixed case included.
        (
            "\"SecretAccessKey\": \"wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY\"",
            "\"SecretAccessKey\": \"[REDACTED]\"",
        ),
        ("token = \"xKcdQpLmNvRtZw\"", "token = \"[REDACTED]\""),
    ] {
        let (out, _) = r
            .redact(text.as_bytes())
            .unwrap_or_else(|| panic!("{text}"));
        assert_eq!(String::from_utf8(out).unwrap(), want);
    }
}

#[test]
fn entropy_floors_are_settings_per_detector() {
    let strict = Redactor::new(&RedactionSettings {
        entropy: vec![("password-assignment".into(), 3.5)],
        ..RedactionSettings::default()
    })
    .unwrap();
    assert!(default().redact(b"password = \"hunter2\"").is_some());
    assert!(strict.redact(b"password = \"hunter2\"").is_none());
}

#[test]
fn a_private_key_longer_than_the_window_is_cut_and_says_so() {
    // (What dense keywords cost is measured in `cargo bench --bench redact`.)
    let r = default();
    let open = format!("-----BEGIN RSA PRIVATE KEY-----\n{}", "A".repeat(100_000));
    let (out, found) = r.redact(open.as_bytes()).unwrap();
    assert!(found.iter().any(|f| f.cut), "{found:?}");
    assert!(out.len() < 100_000 - 60_000);
    let closed = format!(
        "-----BEGIN RSA PRIVATE KEY-----\n{}\n-----END RSA PRIVATE KEY-----",
        "A".repeat(20_000)
    );
    let (out, found) = r.redact(closed.as_bytes()).unwrap();
    assert_eq!(out, b"[REDACTED]");
    assert!(!found[0].cut);
}

#[test]
fn every_keyword_has_three_bytes_so_clean_text_stays_fast() {
    // A shorter keyword starts a hundred trigrams of the pre-filter's table, and each
    // one sends ordinary text down the slow path.
    for b in BUILTINS {
        for k in b.keywords {
            assert!(k.len() >= 3, "{}: {k}", b.name);
        }
    }
}

#[test]
fn the_readme_lists_every_detector_with_what_it_matches() {
    let readme = include_str!("../../README.md");
    let mut table = String::new();
    for b in BUILTINS {
        let ent = b
            .check
            .entropy()
            .map_or(String::new(), |e| format!(" (entropy floor {e})"));
        table.push_str(&format!("| `{}` | {}{ent} |\n", b.name, b.matches));
    }
    assert!(
        readme.contains(&table),
        "README's detector table is out of date; it should read:\n{table}"
    );
}

#[tokio::test]
async fn a_stream_holding_a_cut_secret_ends_with_an_error_after_the_replacement() {
    use http_body_util::BodyExt;
    let r = Arc::new(default());
    let mut text = b"ok -----BEGIN RSA PRIVATE KEY-----\n".to_vec();
    text.extend(std::iter::repeat_n(b'A', 200_000));
    let inner = http_body_util::Full::new(bytes::Bytes::from(text));
    let mut body = super::stream::RedactBody::new(inner, r, None);
    let mut sent = Vec::new();
    let mut failed = false;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => sent.extend_from_slice(f.data_ref().map_or(&[][..], |d| &d[..])),
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    assert!(failed, "the body was passed whole");
    assert!(sent.starts_with(b"ok [REDACTED]"));
    assert!(
        sent.len() < 1000,
        "{} bytes of the key block were sent",
        sent.len()
    );
}

#[test]
fn every_format_is_caught_through_json_escapes_whole_and_streamed() {
    let r = Arc::new(default());
    for (detector, format, text, secret) in formats() {
        let plain = serde_json::to_string(&serde_json::json!({ "v": text })).unwrap();
        let plain_secret = serde_json::to_string(&secret).unwrap();
        let body = plain.replace(plain_secret.trim_matches('"'), &escaped(&secret));
        assert_ne!(body, plain, "{detector} {format}");
        let (out, n) = whole(&r, body.as_bytes());
        assert!(n > 0, "{detector} {format}: nothing found in {body}");
        // What a JSON client reads holds no secret, and it is still JSON.
        let read: serde_json::Value = serde_json::from_slice(&out).unwrap_or_else(|e| {
            panic!(
                "{detector} {format}: {e}: {}",
                String::from_utf8_lossy(&out)
            )
        });
        let read = read["v"].as_str().unwrap();
        assert!(!read.contains(&secret), "{detector} {format}: {read}");
        assert!(read.contains("[REDACTED]"), "{detector} {format}: {read}");
        // An escape cut between two chunks is still decoded.
        let cuts: Vec<usize> = (1..body.len()).step_by(5).collect();
        assert_eq!(
            streamed(&r, body.as_bytes(), &cuts),
            (out, n),
            "{detector} {format}"
        );
    }
}

#[test]
fn escapes_are_replaced_whole_and_slack_webhooks_survive_escaped_slashes() {
    let r = default();
    let hook = format!(
        r"https:\/\/hooks.slack.com\/services\/T{}\/B{}\/{}",
        rep('A', 8),
        rep('B', 8),
        alnum(24, 7)
    );
    let body = format!(r#"{{"url":"{hook}","n":1}}"#);
    let (out, _) = r.redact(body.as_bytes()).unwrap();
    let out = String::from_utf8(out).unwrap();
    assert!(!out.contains(&alnum(24, 7)), "{out}");
    serde_json::from_str::<serde_json::Value>(&out).unwrap();
    // A surrogate pair inside the match is replaced with the match, never split.
    let (out, _) = r
        .redact(br#"{"k":"password=\ud83d\ude00hunter2x"}"#)
        .unwrap();
    assert_eq!(out, br#"{"k":"password=[REDACTED]"}"#);
    // Percent-encoding is decoded where URLs are (log lines, header values), not in bodies.
    let line = b"GET /cb?key=%41KIAIOSFODNN7EXAMPLE HTTP/1.1";
    assert!(r.redact(line).is_none());
    let (out, _) = r.redact_with(line, unescape::Escapes::URL).unwrap();
    assert_eq!(out, b"GET /cb?key=[REDACTED] HTTP/1.1");
}

/// A body of the given chunks, one frame each.
struct Chunks(std::collections::VecDeque<bytes::Bytes>);

impl http_body::Body for Chunks {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        std::task::Poll::Ready(self.0.pop_front().map(|b| Ok(http_body::Frame::data(b))))
    }
}

#[tokio::test]
async fn a_streamed_body_cut_at_its_very_end_still_ends_with_an_error() {
    use http_body_util::BodyExt;
    let r = Arc::new(default());
    // A key block that opens and never closes: decided only at the end of the body.
    let open = format!("-----BEGIN RSA PRIVATE KEY-----\n{}", "A".repeat(2_000));
    for size in [open.len(), 7] {
        let chunks = open
            .as_bytes()
            .chunks(size)
            .map(bytes::Bytes::copy_from_slice)
            .collect();
        let body = stream::RedactBody::new(Chunks(chunks), r.clone(), None);
        assert!(
            body.collect().await.is_err(),
            "chunks of {size}: the cut body ended as if whole"
        );
    }
}
