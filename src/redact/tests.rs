use super::stream::Redacting;
use super::*;

// Fake credentials built at run time so that no credential-shaped literal sits in the
// repository; AWS's documented example key is the one exception, by design.
fn rep(c: char, n: usize) -> String {
    std::iter::repeat_n(c, n).collect()
}

fn alnum(n: usize, seed: u64) -> String {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..n).map(|_| rng.alphanumeric()).collect()
}

fn hexs(n: usize, seed: u64) -> String {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..n)
        .map(|_| std::char::from_digit(rng.u32(0..16), 16).unwrap())
        .collect()
}

/// (detector, text with a secret, the secret that must disappear, a near miss that must stay)
fn cases() -> Vec<(&'static str, String, String, String)> {
    let b64 = |s: &str| {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(s)
    };
    let jwt = format!("eyJ{}.eyJ{}.{}", alnum(20, 1), alnum(30, 2), alnum(43, 3));
    let pem = format!(
        "-----BEGIN RSA PRIVATE KEY-----\n{}\n{}\n-----END RSA PRIVATE KEY-----",
        alnum(64, 4),
        alnum(64, 5)
    );
    vec![
        (
            "aws-access-key-id",
            "key=AKIAIOSFODNN7EXAMPLE;".into(),
            "AKIAIOSFODNN7EXAMPLE".into(),
            "AKIAIOSFODNN7EXAMPL is 19".into(),
        ),
        (
            "aws-secret-access-key",
            format!(
                "aws_secret_access_key = {}",
                alnum(40, 6).replace(['0', '1'], "A")
            ),
            alnum(40, 6).replace(['0', '1'], "A"),
            "aws_secret_access_key = ${AWS_SECRET_ACCESS_KEY}".into(),
        ),
        (
            "github-token",
            format!("token ghp_{}", alnum(36, 8)),
            format!("ghp_{}", alnum(36, 8)),
            format!("ghp_{}", alnum(10, 8)),
        ),
        (
            "github-fine-grained-token",
            format!("github_pat_{}", alnum(82, 9)),
            format!("github_pat_{}", alnum(82, 9)),
            "github_pat_short".into(),
        ),
        (
            "gitlab-token",
            format!("glpat-{}", alnum(20, 10)),
            format!("glpat-{}", alnum(20, 10)),
            "glpat-short".into(),
        ),
        (
            "slack-token",
            format!("xoxb-{}-{}", hexs(12, 11), alnum(24, 12)),
            format!("xoxb-{}", hexs(12, 11)),
            "xoxb-tiny".into(),
        ),
        (
            "slack-webhook",
            format!(
                "https://hooks.slack.com/services/T{}/B{}/{}",
                rep('A', 8),
                rep('B', 8),
                alnum(24, 13)
            ),
            alnum(24, 13),
            "https://hooks.slack.com/help".into(),
        ),
        (
            "stripe-key",
            format!("sk_live_{}", alnum(24, 14)),
            format!("sk_live_{}", alnum(24, 14)),
            "sk_live_short".into(),
        ),
        (
            "google-api-key",
            format!("AIza{}", alnum(35, 15)),
            format!("AIza{}", alnum(35, 15)),
            format!("AIza{}", alnum(20, 15)),
        ),
        (
            "google-oauth-client-secret",
            format!("GOCSPX-{}", alnum(28, 16)),
            format!("GOCSPX-{}", alnum(28, 16)),
            "GOCSPX-short".into(),
        ),
        (
            "anthropic-key",
            format!("sk-ant-api03-{}", alnum(40, 17)),
            alnum(40, 17),
            "sk-ant-x".into(),
        ),
        (
            "openai-key",
            format!("sk-proj-{}", alnum(48, 18)),
            alnum(48, 18),
            "task-list is not a key".into(),
        ),
        (
            "azure-storage-key",
            format!(
                "DefaultEndpointsProtocol=https;AccountName=x;AccountKey={}==;",
                alnum(86, 19)
            ),
            alnum(86, 19),
            "AccountKey=;".into(),
        ),
        (
            "twilio-credential",
            format!("twilio sid AC{}", hexs(32, 20)),
            hexs(32, 20),
            "twilio is a company".into(),
        ),
        (
            "sendgrid-key",
            format!("SG.{}.{}", alnum(22, 21), alnum(43, 22)),
            alnum(43, 22),
            "SG.short.x".into(),
        ),
        (
            "npm-token",
            format!("npm_{}", alnum(36, 23)),
            format!("npm_{}", alnum(36, 23)),
            "npm_install".into(),
        ),
        (
            "pypi-token",
            format!("pypi-AgEIcHlwaS5vcmc{}", alnum(60, 24)),
            alnum(60, 24),
            "pypi-AgEIcHlwaS5vcmc".into(),
        ),
        (
            "huggingface-token",
            format!("hf_{}", "aBcDeFgHiJkLmNoPqRsTuVwXyZaBcDeFgH"),
            "aBcDeFgHiJkLmNoPqRsTuVwXyZaBcDeFgH".into(),
            "hf_short".into(),
        ),
        (
            "digitalocean-token",
            format!("dop_v1_{}", hexs(64, 25)),
            hexs(64, 25),
            "dop_v1_abc".into(),
        ),
        (
            "shopify-token",
            format!("shpat_{}", hexs(32, 26)),
            hexs(32, 26),
            "shpat_x".into(),
        ),
        (
            "databricks-token",
            format!("dapi{}", hexs(32, 27)),
            hexs(32, 27),
            "dapital".into(),
        ),
        (
            "postman-key",
            format!("PMAK-{}-{}", hexs(24, 28), hexs(34, 29)),
            hexs(34, 29),
            "PMAK-1".into(),
        ),
        (
            "vault-token",
            format!("hvs.{}", alnum(24, 30)),
            alnum(24, 30),
            "hvs.x".into(),
        ),
        (
            "age-secret-key",
            format!("AGE-SECRET-KEY-1{}", rep('Q', 58)),
            rep('Q', 58),
            "AGE-SECRET-KEY-1".into(),
        ),
        (
            "telegram-bot-token",
            format!("123456789:AA{}", alnum(33, 31)),
            alnum(33, 31),
            "12:AAx".into(),
        ),
        (
            "jwt",
            format!("id_token {jwt}"),
            jwt.clone(),
            "eyJhbGciOi only a header".into(),
        ),
        (
            "pem-private-key",
            format!("key: {pem}"),
            alnum(64, 4),
            "-----BEGIN PUBLIC KEY-----\nabc\n-----END PUBLIC KEY-----".into(),
        ),
        (
            "bearer-credential",
            format!("Authorization: Bearer {}", alnum(32, 32)),
            alnum(32, 32),
            "the bearer of bad news".into(),
        ),
        (
            "basic-credential",
            format!("Authorization: Basic {}", b64("ops:correct-horse-battery")),
            b64("ops:correct-horse-battery"),
            "basic information about the site".into(),
        ),
        (
            "url-password",
            "DATABASE_URL=postgres://suite:s3cr3t-Pa55@db:5432/suite".into(),
            "s3cr3t-Pa55".into(),
            "see https://suite.example.com/docs and user@example.com".into(),
        ),
        (
            "jdbc-password",
            "jdbc:mysql://db:3306/suite?user=app&password=Tr0ub4dor3".into(),
            "Tr0ub4dor3".into(),
            "jdbc:mysql://db:3306/suite?user=app".into(),
        ),
        (
            "password-assignment",
            "db_password=hunter2x\n".into(),
            "hunter2x".into(),
            "password=${DB_PASSWORD}".into(),
        ),
        (
            "secret-assignment",
            format!("client_secret: {}", alnum(32, 33)),
            alnum(32, 33),
            "secret: changeme".into(),
        ),
        (
            "api-key-assignment",
            format!("API_KEY={}", alnum(32, 34)),
            alnum(32, 34),
            "api_key: <your-api-key>".into(),
        ),
        (
            "json-key",
            format!("{{\"token\": \"{}\"}}", alnum(24, 35)),
            alnum(24, 35),
            "{\"token\": \"****\"}".into(),
        ),
    ]
}

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
