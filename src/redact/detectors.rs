//! The built-in secret detectors. Each has a stable name, the literal keywords that must
//! appear in a match (the pre-filter of [`super::keywords`]: without a keyword hit, its regex
//! never runs), how far before its keyword a match may start, and, for generic formats,
//! a check on the value (entropy floor, the shape of what is assigned).
//!
//! Every regex has a bounded longest match (its repetitions are bounded; a unit test
//! reads the bound from the compiled syntax): that bound is the detector's window, and
//! what makes a stream's output the same as a whole buffer's, and the search linear.

use std::ops::Range;

/// What part of a match is replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redact {
    /// The whole match (tokens with a recognisable format).
    Match,
    /// The first capture group that took part (the value of `password=...`, so the
    /// key stays readable).
    Group,
}

/// Extra checks on the redacted value, for formats a regex cannot pin down.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Check {
    /// The regex is enough.
    None,
    /// Not a placeholder, and at least this Shannon entropy (bits per character).
    Generic(f32),
    /// A `key = value` assignment: the value's shape must be a literal secret (not an
    /// identifier, path, type, placeholder or prose), the key must not name where a
    /// secret is kept (`_file`, `_env`, `_header`...), and the value must have at least
    /// this entropy.
    Assignment(f32),
    /// Base64 that decodes to `user:password`.
    BasicAuth,
}

impl Check {
    /// The entropy floor, for the checks that have one.
    pub fn entropy(self) -> Option<f32> {
        match self {
            Check::Generic(e) | Check::Assignment(e) => Some(e),
            Check::None | Check::BasicAuth => None,
        }
    }

    /// The same check with another entropy floor (`[redaction] entropy`).
    pub fn with_entropy(self, floor: f32) -> Check {
        match self {
            Check::Generic(_) => Check::Generic(floor),
            Check::Assignment(_) => Check::Assignment(floor),
            other => other,
        }
    }
}

/// A built-in detector.
#[derive(Debug, Clone, Copy)]
pub struct Builtin {
    /// Stable name (metric label, `disable` list).
    pub name: &'static str,
    /// What it matches, for the README's table and `sitegate redact --list`.
    pub matches: &'static str,
    /// Literals one of which every match contains (matched in any letter case).
    pub keywords: &'static [&'static str],
    /// The regex (bytes; anchored by the search window, not by `^`).
    pub regex: &'static str,
    /// Longest match in bytes; 0: read from the regex, whose repetitions are then all
    /// bounded. Large bounds are declared instead, with open repetitions in the regex:
    /// a counted repetition of thousands makes the automaton as many times larger.
    /// A longer match is cut at this length (and reported as cut).
    pub max_len: usize,
    /// Most bytes a match may start before its keyword.
    pub lookback: usize,
    /// What is replaced.
    pub redact: Redact,
    /// Checks on the value.
    pub check: Check,
    /// The last capture group marks a complete match (a private key's END line);
    /// a match without it is a block cut by the window, which must not pass.
    pub terminated: bool,
}

const fn token(
    name: &'static str,
    matches: &'static str,
    keywords: &'static [&'static str],
    regex: &'static str,
) -> Builtin {
    Builtin {
        name,
        matches,
        keywords,
        regex,
        max_len: 0,
        lookback: 0,
        redact: Redact::Match,
        check: Check::None,
        terminated: false,
    }
}

const fn value_of(
    name: &'static str,
    matches: &'static str,
    keywords: &'static [&'static str],
    regex: &'static str,
    lookback: usize,
    check: Check,
) -> Builtin {
    Builtin {
        name,
        matches,
        keywords,
        regex,
        max_len: 0,
        lookback,
        redact: Redact::Group,
        check,
        terminated: false,
    }
}

/// The separator and value of a `key = value` assignment, on one line: `=`, `:`, `:=`
/// or `=>`, then a double-quoted, single-quoted or bare value. A bare value stops at
/// white space, quotes, brackets, `,`, `;`, `&` and `|`.
macro_rules! assigned {
    () => {
        r#"["']?[ \t]{0,8}(?::=|=>|[:=])[ \t]{0,8}(?:"([^"\r\n]{1,300})"|'([^'\r\n]{1,300})'|([^\s"'`,;&|(){}\[\]<>]{1,300}))"#
    };
}

/// A key name around a keyword: up to 40 name characters before it, 20 after.
macro_rules! key {
    ($words:literal) => {
        concat!(
            r"(?i)\b[a-z0-9_.\-]{0,40}(?:",
            $words,
            r")[a-z0-9_.\-]{0,20}"
        )
    };
}

/// Every built-in detector, most specific first (on equal matches, the first wins).
pub const BUILTINS: &[Builtin] = &[
    token(
        "aws-access-key-id",
        "AWS access key ids: AKIA, ASIA, ABIA, ACCA, A3T… and 16 base-32 characters",
        &["AKIA", "ASIA", "ABIA", "ACCA", "A3T"],
        r"\b(?:AKIA|ASIA|ABIA|ACCA|A3T[A-Z0-9])[A-Z2-7]{16}\b",
    ),
    value_of(
        "aws-secret-access-key",
        "the 40-character value of aws_secret_access_key / SecretAccessKey",
        &[
            "secret_access_key",
            "secretaccesskey",
            "secret-access-key",
            "aws_secret",
            "aws-secret",
        ],
        r#"(?i)(?:aws_?secret_?(?:access_?)?key|secret[_-]?access[_-]?key)["']?[ \t]{0,8}[:=][ \t]{0,8}["']?([A-Za-z0-9/+]{40})\b"#,
        12,
        Check::None,
    ),
    token(
        "github-token",
        "GitHub classic tokens: ghp_, gho_, ghu_, ghs_, ghr_ and 36+ characters",
        &["ghp_", "gho_", "ghu_", "ghs_", "ghr_"],
        r"\bgh[pousr]_[A-Za-z0-9]{36,251}\b",
    ),
    token(
        "github-fine-grained-token",
        "GitHub fine-grained tokens: github_pat_…",
        &["github_pat_"],
        r"\bgithub_pat_[A-Za-z0-9_]{60,244}\b",
    ),
    token(
        "gitlab-token",
        "GitLab tokens of every documented prefix (glpat-, gloas-, gldt-, glrt-, glrtr-, glcbt-, glptt-, glft-, glimt-, glagent-, glsoat-, glffct-, glwt-, GR1348941), routable ones with their suffix",
        &[
            "glpat-",
            "gloas-",
            "gldt-",
            "glrt-",
            "glrtr-",
            "glcbt-",
            "glptt-",
            "glft-",
            "glimt-",
            "glagent-",
            "glsoat-",
            "glffct-",
            "glwt-",
            "GR1348941",
        ],
        r"\b(?:gl(?:pat|oas|dt|rt|rtr|cbt|ptt|ft|imt|agent|soat|ffct|wt)-[0-9A-Za-z_\-]{20,300}(?:\.[0-9A-Za-z_\-]{1,40}){0,3}|GR1348941[0-9A-Za-z_\-]{20,64})",
    ),
    token(
        "slack-token",
        "Slack tokens: xoxb-, xoxp-, xoxa-, xoxr-, xoxs-, xoxe-, xoxe.xoxp-, xapp-",
        &[
            "xoxb-", "xoxp-", "xoxa-", "xoxr-", "xoxs-", "xoxe-", "xoxe.", "xapp-",
        ],
        r"\b(?:xox[bparse]-[0-9A-Za-z\-]{10,250}|xoxe\.xox[bp]-[0-9A-Za-z\-]{10,250}|xapp-[0-9]-[0-9A-Za-z\-]{10,250})",
    ),
    Builtin {
        lookback: 8,
        ..token(
            "slack-webhook",
            "Slack webhook and workflow URLs (services, workflows, triggers), with or without a scheme",
            &["hooks.slack.com/"],
            r"(?:https?://)?hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9+/_\-]{20,200}",
        )
    },
    token(
        "stripe-key",
        "Stripe secret and restricted keys, live and test (sk_live_, sk_test_, rk_live_, rk_test_), webhook secrets (whsec_)",
        &["sk_live_", "sk_test_", "rk_live_", "rk_test_", "whsec_"],
        r"\b(?:[sr]k_(?:live|test)_[0-9A-Za-z]{10,247}|whsec_[0-9A-Za-z+/]{24,100}={0,2})",
    ),
    token(
        "google-api-key",
        "Google API keys: AIza and 35 characters",
        &["AIza"],
        r"\bAIza[0-9A-Za-z_\-]{35}\b",
    ),
    token(
        "google-oauth-client-secret",
        "Google OAuth client secrets: GOCSPX-…",
        &["GOCSPX-"],
        r"\bGOCSPX-[A-Za-z0-9_\-]{28}\b",
    ),
    value_of(
        "gcp-service-account-key-id",
        "the private_key_id of a Google service-account JSON key (its private_key is a PEM block)",
        &["private_key_id"],
        r#"(?i)private_key_id\\?"[ \t]{0,8}:[ \t]{0,8}\\?"([a-f0-9]{40})\b"#,
        0,
        Check::None,
    ),
    token(
        "anthropic-key",
        "Anthropic API and admin keys: sk-ant-…",
        &["sk-ant-"],
        r"\bsk-ant-[A-Za-z0-9_\-]{20,200}",
    ),
    token(
        "openai-key",
        "OpenAI keys: sk-, sk-proj-, sk-svcacct-, sk-admin-",
        &["sk-"],
        r"\bsk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_\-]{20,200}",
    ),
    value_of(
        "azure-storage-key",
        "Azure storage and Service Bus keys: the value of AccountKey= and SharedAccessKey=",
        &["accountkey=", "sharedaccesskey="],
        r"(?i)(?:AccountKey|SharedAccessKey)=([A-Za-z0-9+/]{40,100}={0,2})",
        0,
        Check::None,
    ),
    value_of(
        "azure-sas-token",
        "the signature (sig=) of an Azure shared access signature (sv=YYYY-MM-DD&…)",
        &["sv=20"],
        r"(?i)\bsv=20[0-9]{2}-[0-9]{2}-[0-9]{2}&[A-Za-z0-9%&=:.,_\-]{0,400}?\bsig=([A-Za-z0-9%+/]{30,200}={0,2})",
        0,
        Check::None,
    ),
    value_of(
        "azure-ad-client-secret",
        "Microsoft Entra ID (Azure AD) client secrets: …Q~…",
        // Three bytes at least: a two-byte keyword fills a hundred slots of the
        // pre-filter's table and slows every clean byte.
        &[
            "0Q~", "1Q~", "2Q~", "3Q~", "4Q~", "5Q~", "6Q~", "7Q~", "8Q~", "9Q~",
        ],
        r"(?:^|[^A-Za-z0-9_~.\-])([A-Za-z0-9_~.]{3}[0-9]Q~[A-Za-z0-9_~.\-]{31,34})",
        4,
        Check::None,
    ),
    value_of(
        "twilio-credential",
        "a 32-hex Twilio auth token or SID near the word twilio",
        &["twilio"],
        r"(?i)twilio[^\r\n]{0,40}?\b((?:SK|AC)?[0-9a-f]{32})\b",
        0,
        Check::None,
    ),
    token(
        "twilio-api-key",
        "Twilio API key SIDs: SK and 32 hex digits",
        &[
            "SK0", "SK1", "SK2", "SK3", "SK4", "SK5", "SK6", "SK7", "SK8", "SK9", "SKa", "SKb",
            "SKc", "SKd", "SKe", "SKf",
        ],
        r"\bSK[0-9a-fA-F]{32}\b",
    ),
    token(
        "sendgrid-key",
        "SendGrid API keys: SG.….…",
        &["SG."],
        r"\bSG\.[A-Za-z0-9_\-]{22}\.[A-Za-z0-9_\-]{43}\b",
    ),
    value_of(
        "mailgun-key",
        "Mailgun keys: key- and 32 hex digits, and the newer …-…-… form near the word mailgun",
        &["key-", "mailgun"],
        r"(?i:\b(key-[0-9a-f]{32})\b|mailgun[^\r\n]{0,40}?\b([0-9a-f]{32}-[0-9a-f]{8}-[0-9a-f]{8})\b)",
        0,
        Check::None,
    ),
    value_of(
        "datadog-key",
        "Datadog API (32 hex) and application (40 hex) keys assigned to a datadog/dd api or app key",
        &["datadog", "dd_ap", "dd-ap", "ddap"],
        r#"(?i)\b(?:datadog[a-z0-9_.\-]{0,20}|dd)[_-]?(?:api|app(?:lication)?)[_-]?key["']?[ \t]{0,8}[:=][ \t]{0,8}["']?([a-f0-9]{40}|[a-f0-9]{32})\b"#,
        0,
        Check::None,
    ),
    value_of(
        "sentry-dsn",
        "the key of a Sentry DSN (https://KEY@…sentry…/N)",
        &["sentry"],
        r"https?://([0-9a-f]{32}(?::[0-9a-f]{32})?)@[A-Za-z0-9.\-]{0,64}sentry[A-Za-z0-9.\-]{0,64}",
        140,
        Check::None,
    ),
    token(
        "sentry-token",
        "Sentry organization and user auth tokens: sntrys_, sntryu_",
        &["sntrys_", "sntryu_"],
        r"\bsntry[su]_[A-Za-z0-9+/=_\-]{40,400}",
    ),
    token(
        "npm-token",
        "npm tokens: npm_ and 36 characters",
        &["npm_"],
        r"\bnpm_[A-Za-z0-9]{36}\b",
    ),
    Builtin {
        max_len: 1024,
        ..token(
            "pypi-token",
            "PyPI upload tokens: pypi-AgEIcHlwaS5vcmc…",
            &["pypi-AgEIcHlwaS5vcmc"],
            r"pypi-AgEIcHlwaS5vcmc[A-Za-z0-9_\-]{50,}",
        )
    },
    token(
        "huggingface-token",
        "Hugging Face user (hf_) and organization (api_org_) tokens",
        &["hf_", "api_org_"],
        r"\b(?:hf_|api_org_)[A-Za-z]{34}\b",
    ),
    token(
        "digitalocean-token",
        "DigitalOcean personal, OAuth and refresh tokens: dop_v1_, doo_v1_, dor_v1_",
        &["dop_v1_", "doo_v1_", "dor_v1_"],
        r"\bdo[opr]_v1_[a-f0-9]{64}\b",
    ),
    token(
        "shopify-token",
        "Shopify tokens: shpat_, shpca_, shppa_, shpss_",
        &["shpat_", "shpca_", "shppa_", "shpss_"],
        r"\bshp(?:at|ca|pa|ss)_[a-fA-F0-9]{32}\b",
    ),
    token(
        "databricks-token",
        "Databricks tokens: dapi and 32 hex digits",
        &["dapi"],
        r"\bdapi[a-f0-9]{32}(?:-[0-9])?\b",
    ),
    token(
        "postman-key",
        "Postman API keys: PMAK-…",
        &["PMAK-"],
        r"\bPMAK-[a-f0-9]{24}-[a-f0-9]{34}\b",
    ),
    token(
        "vault-token",
        "HashiCorp Vault service, batch and recovery tokens: hvs., hvb., hvr.",
        &["hvs.", "hvb.", "hvr."],
        r"\bhv[sbr]\.[A-Za-z0-9_\-]{24,250}\b",
    ),
    token(
        "age-secret-key",
        "age secret keys: AGE-SECRET-KEY-1…",
        &["AGE-SECRET-KEY-1"],
        r"AGE-SECRET-KEY-1[0-9A-Z]{58}",
    ),
    Builtin {
        lookback: 10,
        ..token(
            "telegram-bot-token",
            "Telegram bot tokens: digits:AA…",
            &[":AA"],
            r"\b[0-9]{8,10}:AA[0-9A-Za-z_\-]{33}\b",
        )
    },
    Builtin {
        max_len: 16 * 1024,
        ..token(
            "jwt",
            "JSON Web Tokens, signed or unsigned (eyJ….eyJ….…), Kubernetes service-account tokens among them",
            &["eyJ"],
            r"\beyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]*",
        )
    },
    Builtin {
        terminated: true,
        max_len: 64 * 1024,
        ..token(
            "pem-private-key",
            "PEM and PGP private key blocks, BEGIN to END; a block longer than 64 KiB is cut (and the response refused)",
            &["-----BEGIN"],
            r"-----BEGIN[ A-Z0-9]{0,40}PRIVATE KEY(?: BLOCK)?-----(?:(?s:.){16,}?(-----END[ A-Z0-9]{0,40}PRIVATE KEY(?: BLOCK)?-----)|(?s:.)*)",
        )
    },
    Builtin {
        max_len: 16 * 1024,
        ..token(
            "pem-private-key-base64",
            "a PEM private key block encoded in base64 (LS0tLS1CRUdJTi…, as in kubeconfig client-key-data)",
            &["LS0tLS1CRUdJTi"],
            r"LS0tLS1CRUdJTi[A-Za-z0-9+/]{0,80}?(?:UFJJVkFURSBLRV|BSSVZBVEUgS0VZ|QUklWQVRFIEtFW)[A-Za-z0-9+/]*={0,2}",
        )
    },
    Builtin {
        max_len: 16 * 1024,
        ..value_of(
            "kubeconfig-client-key",
            "the client-key-data of a kubeconfig user",
            &["client-key-data"],
            r#"(?i)client-key-data["']?[ \t]{0,8}:[ \t]{0,8}["']?([A-Za-z0-9+/]{20,}={0,2})"#,
            0,
            Check::None,
        )
    },
    Builtin {
        max_len: 4200,
        ..value_of(
            "bearer-credential",
            "the credential after Bearer (Authorization headers, logs)",
            &["bearer"],
            r"(?i)\bbearer[ \t]{1,8}([A-Za-z0-9\-._~+/]{16,}={0,2})",
            0,
            Check::Generic(3.0),
        )
    },
    Builtin {
        max_len: 1100,
        ..value_of(
            "basic-credential",
            "the credential after Basic, when it decodes to user:password",
            &["basic"],
            r"(?i)\bbasic[ \t]{1,8}([A-Za-z0-9+/]{8,}={0,2})",
            0,
            Check::BasicAuth,
        )
    },
    value_of(
        "url-password",
        "the password in scheme://user:password@host URLs of any scheme (postgres, mysql, mongodb, mongodb+srv, redis, amqp, https...), with or without a user",
        &["://"],
        r#"\b[A-Za-z][A-Za-z0-9+.\-]{1,20}://(?:[^\s:@/"'<>\[\]]{1,128}:([^\s@/"'<>\[\]]{1,256})|:([^\s:@/"'<>\[\]]{1,256}))@"#,
        22,
        Check::Generic(0.0),
    ),
    value_of(
        "curl-user",
        "the password of curl -u / --user user:password",
        &["curl"],
        r#"(?i)\bcurl\b[^\r\n]{0,300}?[ \t](?:-u|--user)(?:[ \t]{1,8}|=)['"]?[^\s:'"]{1,128}:([^\s'"]{1,256})"#,
        0,
        Check::Generic(0.0),
    ),
    value_of(
        "jdbc-password",
        "the password= of a JDBC URL",
        &["jdbc:"],
        r#"(?i)jdbc:[a-z0-9]{1,20}:[^\s"']{0,200}?\b(?:password|pwd)=([^;&\s"']{1,256})"#,
        0,
        Check::Generic(0.0),
    ),
    value_of(
        "password-assignment",
        "the value assigned to a key naming a password (password, passwd, pwd, passphrase)",
        &["password", "passwd", "pwd", "passphrase"],
        concat!(key!("password|passwd|pwd|passphrase"), assigned!()),
        40,
        Check::Assignment(1.5),
    ),
    value_of(
        "secret-assignment",
        "the value assigned to a key naming a secret (client_secret, SECRET_KEY...)",
        &["secret"],
        concat!(key!("secret"), assigned!()),
        40,
        Check::Assignment(3.0),
    ),
    value_of(
        "token-assignment",
        "the value assigned to a key naming a token or credentials (auth_token, GITHUB_TOKEN, credentials...)",
        &["token", "credential"],
        concat!(key!("token|credentials?"), assigned!()),
        40,
        Check::Assignment(3.0),
    ),
    value_of(
        "api-key-assignment",
        "the value assigned to a key naming an API, access or private key",
        &[
            "api_key",
            "apikey",
            "api-key",
            "access_key",
            "private_key",
            "access-key",
        ],
        concat!(key!("api[_-]?key|access[_-]key|private_key"), assigned!()),
        40,
        Check::Assignment(3.0),
    ),
];

/// Values that are obviously not secrets: templates, masks, documentation.
pub fn is_placeholder(value: &[u8]) -> bool {
    let v = String::from_utf8_lossy(value).to_ascii_lowercase();
    let v = v.trim_matches(|c: char| c == '"' || c == '\'');
    (v.starts_with("${") && v.ends_with('}'))
        || (v.starts_with('{') && v.ends_with('}'))
        || (v.starts_with('<') && v.ends_with('>'))
        || (v.starts_with('%') && v.ends_with('%'))
        || (v.starts_with("%(") && v.ends_with(")s"))
        || v.starts_with('$')
        || v.chars()
            .all(|c| c == '*' || c == 'x' || c == '.' || c == '#' || c == '-' || c == '•')
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
            "nil",
            "none",
            "undefined",
            "true",
            "false",
            "yes",
            "no",
            "on",
            "off",
            "required",
            "optional",
            "empty",
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

/// Key suffixes that name where a secret is kept or how it is shaped, not the secret:
/// `api_keys_file`, `secret_env`, `password_header`, `token_length`.
const KEY_NOT_A_SECRET: &[&str] = &[
    "_file",
    "-file",
    "_files",
    "_path",
    "-path",
    "_env",
    "-env",
    "_header",
    "-header",
    "_dir",
    "_name",
    "-name",
    "_type",
    "-type",
    "_length",
    "_len",
    "_field",
    "_format",
    "_prefix",
    "_id",
    "_ids",
    "_count",
    "_size",
    "_ttl",
    "_timeout",
    "_url",
    "_uri",
    "_endpoint",
    "_policy",
    "_regex",
    "_pattern",
    "_source",
    "_required",
    "_hint",
    "_expires",
    "_expiry",
    "_expiration",
    "_lifetime",
    "_algorithm",
    "_alg",
    "_mode",
    "_kind",
    "_version",
    "_scope",
    "_store",
    "_backend",
    "_provider",
    "_manager",
    "_param",
    "_class",
    "_option",
    "_options",
    "_label",
    "_key_id",
    "_key_ids",
    "_keys_file",
];

/// True when the bare (unquoted) `value` of an assignment is code, a name or prose,
/// not a literal: an identifier (`password = password_input`, `ENV_NAME`, `getPwd`),
/// an attribute or call (`self.password`, `os.getcwd()`), a type (`str`), a path, or a
/// plain word (`passwd: files systemd`).
fn bare_value_is_not_a_literal(value: &[u8], after: Option<u8>) -> bool {
    if matches!(after, Some(b'(' | b'[' | b'.')) {
        return true;
    }
    let ident = |s: &[u8]| {
        s.first()
            .is_some_and(|b| b.is_ascii_alphabetic() || *b == b'_')
            && s.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'_')
    };
    let parts: Vec<&[u8]> = value.split(|b| *b == b'.').collect();
    if parts.len() > 1 && parts.iter().all(|p| ident(p)) {
        return true;
    }
    if matches!(value.first(), Some(b'/' | b'~' | b'@' | b'-'))
        || value.starts_with(b"./")
        || value.starts_with(b"../")
        || (value.len() > 2 && value[1] == b':' && matches!(value[2], b'\\' | b'/'))
    {
        return true;
    }
    if !ident(value) {
        return false;
    }
    let letters_only = value.iter().all(u8::is_ascii_alphabetic);
    let upper = value.iter().filter(|b| b.is_ascii_uppercase()).count();
    let has_digit = value.iter().any(u8::is_ascii_digit);
    // snake_case, SCREAMING_CASE and camelCase names; a word, capitalised or not.
    value.contains(&b'_')
        || (letters_only && upper <= 1)
        || (letters_only && upper == value.len())
        || (!has_digit && value[0].is_ascii_lowercase() && upper > 0 && upper < 4)
}

/// True for a value shaped like a name rather than a token: two or more words of
/// letters, each a lower-case run, a capitalised word or a short acronym, run together
/// or joined by `::`, `:`, `.`, `-`, `_` or `/` (`NextPageToken`, `TokenMergeFilter`,
/// `AWS::SecretsManager::Secret`, `secretsmanager:GetSecretValue`, `Token.PromptNum`).
/// Generated tokens have digits, or single letters between their case changes, so
/// they are not names.
fn is_name(v: &[u8]) -> bool {
    if v.is_empty() || v.iter().any(u8::is_ascii_digit) {
        return false;
    }
    let mut words = 0;
    for seg in v.split(|b| matches!(b, b':' | b'.' | b'-' | b'_' | b'/')) {
        let mut i = 0;
        while i < seg.len() {
            let run =
                |from: usize, f: fn(&u8) -> bool| seg[from..].iter().take_while(|b| f(b)).count();
            let upper = run(i, u8::is_ascii_uppercase);
            let lower = run(i + upper, u8::is_ascii_lowercase);
            match (upper, lower) {
                (0, 0) => return false,
                // An acronym, alone or before a capitalised word (`APIKey`).
                (u, 0) if u <= 5 => words += 1,
                (u, l) if l >= 2 && u <= 6 => words += 1 + usize::from(u > 1),
                _ => return false,
            }
            i += upper + lower;
        }
    }
    words >= 2 && v.iter().any(u8::is_ascii_alphabetic)
}

/// The assignment check: `whole` is the match (key, separator, value), `value` the
/// group replaced.
fn assignment_passes(hay: &[u8], whole: &Range<usize>, value: &Range<usize>, floor: f32) -> bool {
    let v = &hay[value.clone()];
    // `…:secret:db-a1b2c3` is a field of a colon-separated name (an ARN), not a key.
    if whole.start > 0 && hay[whole.start - 1] == b':' {
        return false;
    }
    let key = &hay[whole.start..value.start];
    // A JSON key starts at its quote (escaped, inside a JSON string).
    let key = key.strip_prefix(b"\\").unwrap_or(key);
    let key = key.strip_prefix(b"\"").unwrap_or(key);
    let key_end = key
        .iter()
        .position(|b| matches!(b, b'"' | b'\'' | b' ' | b'\t' | b':' | b'=' | b'\\'))
        .unwrap_or(key.len());
    let key_name = key[..key_end].to_ascii_lowercase();
    if KEY_NOT_A_SECRET
        .iter()
        .any(|s| key_name.ends_with(s.as_bytes()))
    {
        return false;
    }
    let quoted = value.start > 0 && matches!(hay[value.start - 1], b'"' | b'\'');
    if !quoted && bare_value_is_not_a_literal(v, hay.get(value.end).copied()) {
        return false;
    }
    // A password may be a phrase or a pair of words; a token, key or secret is
    // neither: a value with a space is prose (`TOKEN_EOF: "end of template"`), one
    // shaped like a name is a field or type name (`"output_token": "NextPageToken"`).
    let password = [&b"pass"[..], b"pwd"]
        .iter()
        .any(|p| key_name.windows(p.len()).any(|w| w == *p));
    if !password && (v.contains(&b' ') || is_name(v)) {
        return false;
    }
    // A quoted environment-variable name or path names a secret kept elsewhere.
    let env_name = v.len() > 1
        && v[0].is_ascii_uppercase()
        && v.iter()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || *b == b'_')
        && v.contains(&b'_');
    let path = v.first() == Some(&b'/') && v.iter().filter(|b| **b == b'/').count() > 1;
    // A resource name: an ARN, or lower-case segments between slashes
    // (`projects/myproj/secrets/pat/versions/1`). A key with slashes has mixed case.
    let resource = v.starts_with(b"arn:")
        || (v.iter().filter(|b| **b == b'/').count() > 1
            && v.iter().all(|b| {
                b.is_ascii_lowercase()
                    || b.is_ascii_digit()
                    || matches!(b, b'/' | b'-' | b'_' | b'.')
            }));
    if resource {
        return false;
    }
    !env_name && !path && !is_placeholder(v) && entropy(v) >= floor
}

/// True when the value at `value` (inside the match `whole` of `hay`) passes the check.
pub fn passes(check: Check, hay: &[u8], whole: &Range<usize>, value: &Range<usize>) -> bool {
    let v = &hay[value.clone()];
    match check {
        Check::None => true,
        Check::Generic(floor) => !is_placeholder(v) && entropy(v) >= floor,
        Check::Assignment(floor) => assignment_passes(hay, whole, value, floor),
        Check::BasicAuth => {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD
                .decode(v)
                .is_ok_and(|d| d.contains(&b':') && d.iter().all(|b| !b.is_ascii_control()))
        }
    }
}
