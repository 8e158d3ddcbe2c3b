//! The built-in secret detectors. Each has a stable name, the literal keywords that must
//! appear in a match (the pre-filter of [`super::keywords`]: without a keyword hit, its regex
//! never runs), how far before its keyword a match may start, the longest match, and,
//! for generic formats, a check on the value (entropy floor, placeholders).

/// What part of a match is replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redact {
    /// The whole match (tokens with a recognisable format).
    Match,
    /// Capture group 1 only (the value of `password=...`, so the key stays readable).
    Group,
}

/// Extra checks on the redacted value, for formats a regex cannot pin down.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Check {
    /// The regex is enough.
    None,
    /// Not a placeholder, and at least this Shannon entropy (bits per character).
    Generic(f32),
    /// Base64 that decodes to `user:password`.
    BasicAuth,
}

/// A built-in detector.
#[derive(Debug, Clone, Copy)]
pub struct Builtin {
    /// Stable name (metric label, `disable` list).
    pub name: &'static str,
    /// Literals one of which every match contains.
    pub keywords: &'static [&'static str],
    /// Keywords match in any letter case.
    pub case_insensitive: bool,
    /// The regex (bytes; anchored by the search window, not by `^`).
    pub regex: &'static str,
    /// Most bytes a match may start before its keyword.
    pub lookback: usize,
    /// Longest match in bytes.
    pub max_len: usize,
    /// What is replaced.
    pub redact: Redact,
    /// Checks on the value.
    pub check: Check,
}

const fn token(
    name: &'static str,
    keywords: &'static [&'static str],
    regex: &'static str,
    max_len: usize,
) -> Builtin {
    Builtin {
        name,
        keywords,
        case_insensitive: false,
        regex,
        lookback: 0,
        max_len,
        redact: Redact::Match,
        check: Check::None,
    }
}

const fn assignment(
    name: &'static str,
    keywords: &'static [&'static str],
    regex: &'static str,
    lookback: usize,
    entropy: f32,
) -> Builtin {
    Builtin {
        name,
        keywords,
        case_insensitive: true,
        regex,
        lookback,
        max_len: 400,
        redact: Redact::Group,
        check: Check::Generic(entropy),
    }
}

/// Value characters of a `key = value` assignment: up to a quote, space or separator.
macro_rules! value {
    () => {
        r#"["']?\s*[:=]\s*["']?([^\s"',;&}<>]{4,300})"#
    };
}

/// Every built-in detector. Quantifiers may be open-ended: the scan window (keyword
/// position + `max_len`) bounds every match, identically for streams and buffers.
pub const BUILTINS: &[Builtin] = &[
    token(
        "aws-access-key-id",
        &["AKIA", "ASIA", "ABIA", "ACCA"],
        r"\b(?:AKIA|ASIA|ABIA|ACCA)[A-Z2-7]{16}\b",
        20,
    ),
    Builtin {
        name: "aws-secret-access-key",
        keywords: &[
            "secret_access_key",
            "secretaccesskey",
            "secret-access-key",
            "aws_secret",
            "aws-secret",
        ],
        case_insensitive: true,
        regex: r#"(?i)(?:aws_?secret_?(?:access_?)?key|secret[_-]?access[_-]?key)["']?\s*[:=]\s*["']?([A-Za-z0-9/+]{40})\b"#,
        lookback: 12,
        max_len: 120,
        redact: Redact::Group,
        check: Check::None,
    },
    token(
        "github-token",
        &["ghp_", "gho_", "ghu_", "ghs_", "ghr_"],
        r"\bgh[pousr]_[A-Za-z0-9]{36,251}\b",
        255,
    ),
    token(
        "github-fine-grained-token",
        &["github_pat_"],
        r"\bgithub_pat_[A-Za-z0-9_]{60,244}\b",
        255,
    ),
    token(
        "gitlab-token",
        &["glpat-"],
        r"\bglpat-[A-Za-z0-9_\-]{20,64}\b",
        70,
    ),
    token(
        "slack-token",
        &["xoxb-", "xoxp-", "xoxa-", "xoxr-", "xoxs-"],
        r"\bxox[bpars]-[0-9A-Za-z\-]{10,250}",
        255,
    ),
    Builtin {
        lookback: 8,
        ..token(
            "slack-webhook",
            &["hooks.slack.com/"],
            r"https://hooks\.slack\.com/(?:services|workflows)/[A-Za-z0-9+/]{40,120}",
            160,
        )
    },
    token(
        "stripe-key",
        &["sk_live_", "rk_live_"],
        r"\b[sr]k_live_[0-9A-Za-z]{24,99}\b",
        107,
    ),
    token(
        "google-api-key",
        &["AIza"],
        r"\bAIza[0-9A-Za-z_\-]{35}\b",
        39,
    ),
    token(
        "google-oauth-client-secret",
        &["GOCSPX-"],
        r"\bGOCSPX-[A-Za-z0-9_\-]{28}\b",
        35,
    ),
    token(
        "anthropic-key",
        &["sk-ant-"],
        r"\bsk-ant-[A-Za-z0-9_\-]{20,200}",
        207,
    ),
    token(
        "openai-key",
        &["sk-"],
        r"\bsk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_\-]{20,200}",
        215,
    ),
    Builtin {
        name: "azure-storage-key",
        keywords: &["accountkey="],
        case_insensitive: true,
        regex: r"(?i)AccountKey=([A-Za-z0-9+/]{40,100}={0,2})",
        lookback: 0,
        max_len: 120,
        redact: Redact::Group,
        check: Check::None,
    },
    Builtin {
        name: "twilio-credential",
        keywords: &["twilio"],
        case_insensitive: true,
        regex: r"(?i)twilio[^\n]{0,40}?\b((?:SK|AC)?[0-9a-f]{32})\b",
        lookback: 0,
        max_len: 90,
        redact: Redact::Group,
        check: Check::None,
    },
    token(
        "sendgrid-key",
        &["SG."],
        r"\bSG\.[A-Za-z0-9_\-]{22}\.[A-Za-z0-9_\-]{43}\b",
        69,
    ),
    token("npm-token", &["npm_"], r"\bnpm_[A-Za-z0-9]{36}\b", 40),
    token(
        "pypi-token",
        &["pypi-AgEIcHlwaS5vcmc"],
        r"pypi-AgEIcHlwaS5vcmc[A-Za-z0-9_\-]{50,}",
        1020,
    ),
    token("huggingface-token", &["hf_"], r"\bhf_[A-Za-z]{34}\b", 37),
    token(
        "digitalocean-token",
        &["dop_v1_", "doo_v1_"],
        r"\bdo[op]_v1_[a-f0-9]{64}\b",
        71,
    ),
    token(
        "shopify-token",
        &["shpat_", "shpca_", "shppa_", "shpss_"],
        r"\bshp(?:at|ca|pa|ss)_[a-fA-F0-9]{32}\b",
        38,
    ),
    token(
        "databricks-token",
        &["dapi"],
        r"\bdapi[a-f0-9]{32}(?:-\d)?\b",
        38,
    ),
    token(
        "postman-key",
        &["PMAK-"],
        r"\bPMAK-[a-f0-9]{24}-[a-f0-9]{34}\b",
        64,
    ),
    token(
        "vault-token",
        &["hvs.", "hvb."],
        r"\bhv[sb]\.[A-Za-z0-9_\-]{24,250}\b",
        255,
    ),
    token(
        "age-secret-key",
        &["AGE-SECRET-KEY-1"],
        r"AGE-SECRET-KEY-1[0-9A-Z]{58}",
        74,
    ),
    Builtin {
        lookback: 10,
        ..token(
            "telegram-bot-token",
            &[":AA"],
            r"\b[0-9]{8,10}:AA[0-9A-Za-z_\-]{33}\b",
            50,
        )
    },
    token(
        "jwt",
        &["eyJ"],
        r"\beyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}",
        8192,
    ),
    Builtin {
        name: "pem-private-key",
        keywords: &["-----BEGIN"],
        case_insensitive: false,
        regex: r"-----BEGIN (?:RSA |EC |DSA |OPENSSH |ENCRYPTED |PGP )?PRIVATE KEY(?: BLOCK)?-----(?s:.){16,}?-----END (?:RSA |EC |DSA |OPENSSH |ENCRYPTED |PGP )?PRIVATE KEY(?: BLOCK)?-----",
        lookback: 0,
        max_len: 16 * 1024,
        redact: Redact::Match,
        check: Check::None,
    },
    Builtin {
        name: "bearer-credential",
        keywords: &["bearer "],
        case_insensitive: true,
        regex: r"(?i)\bbearer\s+([A-Za-z0-9\-._~+/]{16,}=*)",
        lookback: 0,
        max_len: 4200,
        redact: Redact::Group,
        check: Check::Generic(3.0),
    },
    Builtin {
        name: "basic-credential",
        keywords: &["basic "],
        case_insensitive: true,
        regex: r"(?i)\bbasic\s+([A-Za-z0-9+/]{8,}={0,2})",
        lookback: 0,
        max_len: 1100,
        redact: Redact::Group,
        check: Check::BasicAuth,
    },
    Builtin {
        name: "url-password",
        keywords: &["://"],
        case_insensitive: false,
        regex: r#"\b[A-Za-z][A-Za-z0-9+.\-]{1,20}://[^\s:@/"'<>]{1,128}:([^\s@/"'<>]{1,256})@"#,
        lookback: 22,
        max_len: 420,
        redact: Redact::Group,
        check: Check::Generic(0.0),
    },
    Builtin {
        name: "jdbc-password",
        keywords: &["jdbc:"],
        case_insensitive: true,
        regex: r#"(?i)jdbc:[a-z0-9]+:[^\s"']{0,200}?\b(?:password|pwd)=([^;&\s"']{1,256})"#,
        lookback: 0,
        max_len: 480,
        redact: Redact::Group,
        check: Check::Generic(0.0),
    },
    assignment(
        "password-assignment",
        &["password", "passwd", "pwd"],
        concat!(
            r"(?i)\b(?:[a-z0-9_.\-]*_)?(?:password|passwd|pwd)",
            value!()
        ),
        40,
        1.5,
    ),
    assignment(
        "secret-assignment",
        &["secret"],
        concat!(
            r"(?i)\b[a-z0-9_.\-]{0,40}secret[a-z0-9_.\-]{0,40}",
            value!()
        ),
        40,
        3.0,
    ),
    assignment(
        "api-key-assignment",
        &[
            "api_key",
            "apikey",
            "api-key",
            "access_token",
            "auth_token",
            "private_key",
        ],
        concat!(
            r"(?i)\b[a-z0-9_.\-]{0,40}(?:api[_-]?key|access_token|auth_token|private_key)[a-z0-9_.\-]{0,20}",
            value!()
        ),
        40,
        3.0,
    ),
];

/// Values that are obviously not secrets: templates, masks, documentation.
pub fn is_placeholder(value: &[u8]) -> bool {
    let v = String::from_utf8_lossy(value).to_ascii_lowercase();
    let v = v.trim_matches(|c: char| c == '"' || c == '\'');
    (v.starts_with("${") && v.ends_with('}'))
        || (v.starts_with("{{") && v.ends_with("}}"))
        || (v.starts_with('<') && v.ends_with('>'))
        || (v.starts_with('%') && v.ends_with('%'))
        || v.starts_with("$")
        || v.chars()
            .all(|c| c == '*' || c == 'x' || c == '.' || c == '#' || c == '-')
        || [
            "changeme",
            "change_me",
            "password",
            "secret",
            "redacted",
            "[redacted]",
            "your_",
            "your-",
            "example",
            "placeholder",
            "dummy",
            "null",
            "none",
            "undefined",
            "true",
            "false",
        ]
        .iter()
        .any(|p| v == *p || (p.ends_with(['_', '-']) && v.starts_with(p)))
}

/// Shannon entropy of `value`, in bits per byte.
pub fn entropy(value: &[u8]) -> f32 {
    if value.is_empty() {
        return 0.0;
    }
    let mut counts = [0u32; 256];
    for b in value {
        counts[*b as usize] += 1;
    }
    let n = value.len() as f32;
    counts
        .iter()
        .filter(|c| **c > 0)
        .map(|c| {
            let p = *c as f32 / n;
            -p * p.log2()
        })
        .sum()
}

/// True when `value` passes the detector's check.
pub fn passes(check: Check, value: &[u8]) -> bool {
    match check {
        Check::None => true,
        Check::Generic(floor) => !is_placeholder(value) && entropy(value) >= floor,
        Check::BasicAuth => {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD
                .decode(value)
                .is_ok_and(|d| d.contains(&b':') && d.iter().all(|b| !b.is_ascii_control()))
        }
    }
}
