use super::stream::Redacting;
use super::*;

use super::samples::{alnum, cases, rep};

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
