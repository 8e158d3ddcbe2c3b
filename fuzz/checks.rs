//! What each fuzz target checks, shared by the libFuzzer targets (fuzz_targets/) and by
//! `cargo test`, which replays every input kept under fuzz/regressions/ through the
//! same functions (tests/e2e/fuzz_regressions.rs). Each function panics on a finding.

#![allow(dead_code)]

use std::io::Write;
use std::sync::{Arc, OnceLock};

use http::Method;
use sitegate::config::{Source, compile};
use sitegate::error::ErrorCode;
use sitegate::guard::limits::decode_body;
use sitegate::guard::validate::{self, schema::BodyRules};
use sitegate::redact::Redactor;
use sitegate::redact::stream::Redacting;

/// The shipped phase 9 route (the `project` schema, a batch that is refused whole)
/// and a stricter one that drops invalid records, strips unknown fields and sets
/// small depth and string limits, so every branch of the guard is reachable.
fn rule_sets() -> &'static [BodyRules; 2] {
    static RULES: OnceLock<[BodyRules; 2]> = OnceLock::new();
    RULES.get_or_init(|| {
        let rules = |text: String, path: &str| {
            let p = compile(&[Source::policy("routes.toml", text)]).expect("fuzz policy compiles");
            let route = p.routes.find(&Method::POST, path).expect("route");
            route.body.clone().expect("route validates")
        };
        let shipped = include_str!("../config/routes.toml").to_string();
        let strict = r#"
[[route]]
name = "strict"
path = "/strict"
methods = ["POST"]
schema = "rec"
sanitize = true
max_depth = 5
max_string = 50
batch = { path = "/records", max_records = 20, on_invalid = "drop" }

[schema.rec]
required = ["id"]
additional = "strip"
[schema.rec.fields]
id = { type = "string", pattern = "^R[0-9]{1,4}$" }
n = { type = "integer", min = -5, max = 5, coerce = true }
x = { type = ["number", "null"], coerce = true }
name = { type = "string", max_len = 10, trim = true }
when = { type = "string", format = "date-time" }
day = { type = "string", format = "date" }
mail = { type = "string", format = "email" }
uid = { type = "string", format = "uuid" }
kind = { type = "string", enum = ["a", "b"] }
tags = { type = "array", max_items = 3, items = { type = "string", max_len = 5, trim = true } }
sub = { type = "object", nullable = true, fields = { k = { type = "boolean" } } }
"#
        .to_string();
        [
            rules(shipped, "/api/phase9/intelligence"),
            rules(strict, "/strict"),
        ]
    })
}

/// The request guard never panics; what it forwards is JSON that passes the same
/// guard unchanged (sanitizing is idempotent, dropping leaves only valid records);
/// what it refuses, it refuses with a body error whose details point into the body.
pub fn validate(data: &[u8]) {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let rules = &rule_sets()[usize::from(pick & 1)];
    // The fast path may only accept what the full check accepts, forwarding the same.
    if let Some(fast) = validate::fast_path(body, rules) {
        assert_eq!(
            validate::check_full(body, rules),
            Ok(fast),
            "the fast path and the full check disagree"
        );
    }
    match validate::check(body, rules) {
        Ok(accepted) => {
            let forwarded = accepted.body.as_deref().unwrap_or(body);
            serde_json::from_slice::<serde_json::Value>(forwarded)
                .expect("the guard forwarded a body that is not JSON");
            let again = validate::check(forwarded, rules)
                .expect("the forwarded body fails the guard that produced it");
            assert_eq!(again.body, None, "sanitizing is not idempotent");
            assert_eq!(
                again.dropped, 0,
                "a dropped batch still held invalid records"
            );
        }
        Err(rejection) => {
            assert!(
                matches!(
                    rejection.code,
                    ErrorCode::MalformedJson
                        | ErrorCode::ValidationFailed
                        | ErrorCode::TooManyRecords
                ),
                "unexpected code {:?}",
                rejection.code
            );
            // (How many details reach the client is the renderer's business: at most
            // 100, tested in src/error.rs.)
            for d in &rejection.details {
                assert!(
                    d.path.is_empty() || d.path.starts_with('/'),
                    "path {:?}",
                    d.path
                );
                assert!(!d.rule.is_empty() && !d.message.is_empty(), "{d:?}");
            }
        }
    }
}

fn redactor() -> Arc<Redactor> {
    static R: OnceLock<Arc<Redactor>> = OnceLock::new();
    R.get_or_init(sitegate::redact::default_redactor).clone()
}

/// Streaming redaction equals whole-buffer redaction for any cut of the input: the
/// first two bytes seed the chunk sizes (1 byte up to 4 KiB). And the keyword
/// pre-filter, which both rely on, misses no keyword a naive search finds.
pub fn redact_stream(data: &[u8]) {
    if data.len() < 2 {
        return;
    }
    let (seed, input) = data.split_at(2);
    let redactor = redactor();
    let compiled = redactor.keywords();
    let list = compiled.patterns();
    let mut found = Vec::new();
    compiled.find(input, |id, at| found.push((id, at)));
    // Naive, but only over the keywords whose first letter matches, to keep the fuzzer
    // fast.
    let mut naive = Vec::new();
    for at in 0..input.len() {
        let first = input[at].to_ascii_lowercase();
        for (id, k) in list.iter().enumerate() {
            if k[0].to_ascii_lowercase() == first
                && input
                    .get(at..at + k.len())
                    .is_some_and(|h| h.eq_ignore_ascii_case(k))
            {
                naive.push((id, at));
            }
        }
    }
    assert!(
        found == naive,
        "the keyword pre-filter disagrees with a naive search"
    );
    let whole = match redactor.redact(input) {
        Some((out, _)) => out,
        None => input.to_vec(),
    };
    let mut state = u32::from(u16::from_le_bytes([seed[0], seed[1]])) | 1;
    let mut stream = Redacting::new(redactor.clone());
    let mut streamed = Vec::with_capacity(input.len());
    let mut rest = input;
    while !rest.is_empty() {
        state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let size = 1 + (state >> 8) as usize % 4096;
        let (chunk, tail) = rest.split_at(size.min(rest.len()));
        streamed.extend_from_slice(&stream.push(chunk, false).0);
        rest = tail;
    }
    streamed.extend_from_slice(&stream.push(&[], true).0);
    assert!(
        streamed == whole,
        "streamed output differs from the whole-buffer output"
    );
}

/// The policy compiler never panics, and every problem it reports points into the
/// text it was given. A NUL byte splits the input into the main file and routes.toml.
pub fn policy(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (main, routes) = match text.split_once('\0') {
        Some((main, routes)) => (main, Some(routes)),
        None => (text, None),
    };
    let mut sources = vec![Source::policy("sitegate.toml", main)];
    if let Some(routes) = routes {
        sources.push(Source::policy("routes.toml", routes));
    }
    if let Err(diags) = compile(&sources) {
        assert!(!diags.0.is_empty(), "refused without a reason");
        for d in &diags.0 {
            let source = match routes {
                Some(routes) if d.file.ends_with("routes.toml") => routes,
                _ => main,
            };
            let lines = source.split('\n').count();
            assert!(d.line <= lines, "{d}: line past the end ({lines} lines)");
            let _ = d.to_string();
        }
    }
}

/// Decoding a compressed body never passes its limit, and what it decodes is what
/// was compressed: the input is decoded as sent (gzip or deflate by the first byte)
/// and, compressed by us, round-trips.
pub fn gzip(data: &[u8]) {
    const LIMIT: u64 = 64 * 1024;
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let gzip = pick & 1 == 0;
    let coding = [if gzip {
        sitegate::body::Coding::Gzip
    } else {
        sitegate::body::Coding::Deflate
    }];
    match decode_body(body, &coding, LIMIT) {
        Ok(out) => assert!(out.len() as u64 <= LIMIT, "decoded past the limit"),
        Err(r) => assert!(
            matches!(
                r.code,
                ErrorCode::InvalidRequest | ErrorCode::PayloadTooLarge
            ),
            "{:?}",
            r.code
        ),
    }
    let compressed = if gzip {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(body).unwrap();
        e.finish().unwrap()
    } else {
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(body).unwrap();
        e.finish().unwrap()
    };
    match decode_body(&compressed, &coding, LIMIT) {
        Ok(out) => assert!(out == body, "round trip changed the body"),
        Err(r) => assert!(
            r.code == ErrorCode::PayloadTooLarge && body.len() as u64 > LIMIT,
            "a valid body of {} bytes was refused: {:?}",
            body.len(),
            r.code
        ),
    }
}
