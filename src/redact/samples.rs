//! Fake secrets of every format the built-in detectors know, generated at run time so
//! that no credential-shaped literal sits in the repository (AWS's documented example
//! key is the one exception, by design). Used by the unit tests and the end-to-end
//! suite; not part of the proxy's behaviour.

// Fake credentials built at run time so that no credential-shaped literal sits in the
// repository; AWS's documented example key is the one exception, by design.
pub fn rep(c: char, n: usize) -> String {
    std::iter::repeat_n(c, n).collect()
}

pub fn alnum(n: usize, seed: u64) -> String {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..n).map(|_| rng.alphanumeric()).collect()
}

pub fn hexs(n: usize, seed: u64) -> String {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..n)
        .map(|_| char::from(b"0123456789abcdef"[rng.usize(0..16)]))
        .collect()
}

/// One sample per built-in detector: (detector, text with a secret, the secret that
/// must disappear, a near miss that must stay).
pub fn cases() -> Vec<(&'static str, String, String, String)> {
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
            "gcp-service-account-key-id",
            format!(
                "{{\"type\": \"service_account\", \"private_key_id\": \"{}\"}}",
                hexs(40, 36)
            ),
            hexs(40, 36),
            "\"private_key_id\": \"\"".into(),
        ),
        (
            "azure-sas-token",
            format!(
                "https://acct.blob.core.windows.net/c?sv=2022-11-02&ss=b&srt=co&sp=r&se=2030-01-01T00:00:00Z&spr=https&sig={}%3D",
                alnum(43, 37)
            ),
            alnum(43, 37),
            "https://acct.blob.core.windows.net/c?sv=2022-11-02&ss=b".into(),
        ),
        (
            "azure-ad-client-secret",
            format!("AZURE_CLIENT_SECRET {}8Q~{}", alnum(3, 38), alnum(34, 39)),
            alnum(34, 39),
            "a Q~ b".into(),
        ),
        (
            "twilio-api-key",
            format!("key SK{}", hexs(32, 41)),
            format!("SK{}", hexs(32, 41)),
            "ASK me later".into(),
        ),
        (
            "mailgun-key",
            format!("MG key-{}", hexs(32, 42)),
            hexs(32, 42),
            "monkey-business".into(),
        ),
        (
            "datadog-key",
            format!("DD_API_KEY={}", hexs(32, 43)),
            hexs(32, 43),
            "DD_API_KEY=".into(),
        ),
        (
            "sentry-dsn",
            format!(
                "SENTRY_DSN=https://{}@o450123.ingest.sentry.io/5501234",
                hexs(32, 44)
            ),
            hexs(32, 44),
            "https://sentry.io/welcome".into(),
        ),
        (
            "sentry-token",
            format!("sntryu_{}", hexs(64, 45)),
            hexs(64, 45),
            "sntryu_x".into(),
        ),
        (
            "pem-private-key-base64",
            {
                use base64::Engine;
                base64::engine::general_purpose::STANDARD.encode(&pem)
            },
            {
                use base64::Engine;
                base64::engine::general_purpose::STANDARD.encode(&pem)[40..80].to_string()
            },
            "LS0tLS1CRUdJTiBQVUJMSUMgS0VZLS0tLS0=".into(),
        ),
        (
            "kubeconfig-client-key",
            format!("    client-key-data: {}", alnum(120, 46)),
            alnum(120, 46),
            "    client-key-data: \"\"".into(),
        ),
        (
            "curl-user",
            "curl -sS -u deploy:Kq3vX9pLm2 https://api.example.com/v1".into(),
            "Kq3vX9pLm2".into(),
            "curl -u deploy https://api.example.com/v1".into(),
        ),
        (
            "token-assignment",
            format!("GITHUB_TOKEN={}", alnum(40, 47)),
            alnum(40, 47),
            "token = self.next_token()".into(),
        ),
        (
            "json-key",
            format!("{{\"token\": \"{}\"}}", alnum(24, 35)),
            alnum(24, 35),
            "{\"token\": \"****\"}".into(),
        ),
    ]
}

/// Every documented format of every family, one generated token each:
/// (detector, format, text holding it, the secret that must disappear).
pub fn formats() -> Vec<(&'static str, String, String, String)> {
    let mut out = Vec::new();
    let mut push = |d: &'static str, format: &str, text: String, secret: String| {
        out.push((d, format.to_string(), text, secret));
    };
    for p in ["AKIA", "ASIA", "ABIA", "ACCA", "A3TX"] {
        let t = format!("{p}{}", upper32(16, 50));
        push("aws-access-key-id", p, format!("id={t}"), t);
    }
    for p in ["ghp_", "gho_", "ghu_", "ghs_", "ghr_"] {
        let t = format!("{p}{}", alnum(36, 51));
        push("github-token", p, format!("t {t}"), t);
    }
    let gl = [
        "glpat-", "gloas-", "gldt-", "glrt-", "glrtr-", "glcbt-", "glptt-", "glft-", "glimt-",
        "glagent-", "glsoat-", "glffct-",
    ];
    for p in gl {
        let t = format!("{p}{}", alnum(20, 52));
        push("gitlab-token", p, format!("token: {t}"), t);
    }
    let routable = format!("glpat-{}.01.{}", alnum(27, 53), hexs(9, 54));
    push(
        "gitlab-token",
        "routable",
        format!("t={routable} "),
        routable,
    );
    let runner = format!("GR1348941{}", alnum(20, 55));
    push("gitlab-token", "GR1348941", format!("reg {runner}"), runner);
    for p in ["xoxb-", "xoxp-", "xoxa-", "xoxr-", "xoxs-", "xoxe-"] {
        let t = format!("{p}{}-{}", hexs(12, 56), alnum(24, 57));
        push("slack-token", p, format!("SLACK={t}"), t);
    }
    let t = format!("xoxe.xoxp-1-{}", alnum(40, 58));
    push("slack-token", "xoxe.xoxp-", format!("r {t}"), t);
    let t = format!(
        "xapp-1-A{}-{}-{}",
        alnum(10, 59),
        hexs(13, 60),
        hexs(64, 61)
    );
    push("slack-token", "xapp-", format!("app {t}"), t);
    for (form, scheme) in [
        ("services", "https://"),
        ("services", "http://"),
        ("services", ""),
        ("workflows", "https://"),
        ("triggers", "https://"),
    ] {
        let path = format!("T{}/B{}/{}", upper32(8, 62), upper32(8, 63), alnum(24, 64));
        let t = format!("{scheme}hooks.slack.com/{form}/{path}");
        push(
            "slack-webhook",
            &format!("{scheme}{form}"),
            format!("url {t}"),
            path,
        );
    }
    for p in ["sk_live_", "sk_test_", "rk_live_", "rk_test_"] {
        let t = format!("{p}{}", alnum(24, 65));
        push("stripe-key", p, format!("STRIPE={t}"), t);
    }
    let t = format!("whsec_{}", alnum(32, 66));
    push("stripe-key", "whsec_", format!("wh {t}"), t);
    for p in ["dop_v1_", "doo_v1_", "dor_v1_"] {
        let t = format!("{p}{}", hexs(64, 67));
        push("digitalocean-token", p, format!("do {t}"), t);
    }
    for p in ["hf_", "api_org_"] {
        let t = format!("{p}{}", letters(34, 68));
        push("huggingface-token", p, format!("HF={t}"), t);
    }
    for p in ["hvs.", "hvb.", "hvr."] {
        let t = format!("{p}{}", alnum(90, 69));
        push("vault-token", p, format!("VAULT_TOKEN {t}"), t);
    }
    for p in ["shpat_", "shpca_", "shppa_", "shpss_"] {
        let t = format!("{p}{}", hexs(32, 70));
        push("shopify-token", p, format!("s {t}"), t);
    }
    for p in ["sntrys_", "sntryu_"] {
        let t = format!("{p}{}", alnum(64, 71));
        push("sentry-token", p, format!("SENTRY_AUTH_TOKEN {t}"), t);
    }
    for p in ["sk-", "sk-proj-", "sk-svcacct-", "sk-admin-"] {
        let t = format!("{p}{}", alnum(48, 72));
        push("openai-key", p, format!("OPENAI {t}"), t);
    }
    for p in ["sk-ant-api03-", "sk-ant-admin01-"] {
        let t = format!("{p}{}", alnum(93, 73));
        push("anthropic-key", p, format!("ANTHROPIC {t}"), t);
    }
    for key in ["AccountKey", "SharedAccessKey"] {
        let v = format!("{}=", alnum(43, 74));
        push(
            "azure-storage-key",
            key,
            format!("Endpoint=sb://x/;{key}={v};"),
            v,
        );
    }
    // Kubernetes service-account tokens are JWTs; unsigned ones end with the dot.
    let jwt = format!(
        "eyJ{}.eyJ{}.{}",
        alnum(30, 75),
        alnum(200, 76),
        alnum(342, 77)
    );
    push(
        "jwt",
        "signed (service-account)",
        format!("token: {jwt}"),
        jwt,
    );
    let unsigned = format!("eyJ{}.eyJ{}.", alnum(20, 78), alnum(40, 79));
    push(
        "jwt",
        "unsigned (alg none)",
        format!("t={unsigned} "),
        unsigned,
    );
    for scheme in [
        "postgres",
        "postgresql",
        "mysql",
        "mongodb",
        "mongodb+srv",
        "redis",
        "rediss",
        "amqp",
        "amqps",
        "https",
    ] {
        let pw = format!("Pw{}", alnum(14, 80));
        push(
            "url-password",
            &format!("{scheme} with a user"),
            format!("URL={scheme}://app:{pw}@db.internal:1234/x"),
            pw.clone(),
        );
        push(
            "url-password",
            &format!("{scheme} without a user"),
            format!("URL={scheme}://:{pw}@db.internal:1234/x"),
            pw,
        );
    }
    for flag in ["-u ", "--user ", "--user="] {
        let pw = format!("Pw{}", alnum(12, 81));
        push(
            "curl-user",
            flag.trim(),
            format!("curl -s {flag}ops:{pw} https://api.example.com"),
            pw,
        );
    }
    for (d, key) in [
        ("password-assignment", "password"),
        ("password-assignment", "DB_PASSWD"),
        ("password-assignment", "pwd"),
        ("password-assignment", "passphrase"),
        ("secret-assignment", "client_secret"),
        ("secret-assignment", "SECRET_KEY"),
        ("token-assignment", "auth_token"),
        ("token-assignment", "credentials"),
        ("api-key-assignment", "api_key"),
        ("api-key-assignment", "apiKey"),
        ("api-key-assignment", "access-key"),
    ] {
        for (sep, q) in [
            ("=", ""),
            (": ", "\""),
            (" = ", "'"),
            (" := ", "\""),
            (" => ", "'"),
        ] {
            let v = alnum(24, 82);
            push(
                d,
                &format!("{key}{sep}{q}"),
                format!("{key}{sep}{q}{v}{q}\n"),
                v,
            );
        }
    }
    out
}

fn upper32(n: usize, seed: u64) -> String {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..n)
        .map(|_| char::from(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"[rng.usize(0..32)]))
        .collect()
}

fn letters(n: usize, seed: u64) -> String {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..n).map(|_| rng.alphabetic()).collect()
}

/// `secret` as a JSON encoder that escapes everything would write it: every other
/// ASCII character as `\u00XX`, `/` as `\/`, a line break as `\n`.
pub fn json_escaped(secret: &str) -> String {
    secret
        .chars()
        .enumerate()
        .map(|(i, c)| match c {
            '/' => r"\/".to_string(),
            '\n' => r"\n".to_string(),
            c if i % 2 == 0 && (c as u32) < 0x80 => format!("\\u{:04x}", c as u32),
            c => serde_json::to_string(&c.to_string())
                .unwrap_or_default()
                .trim_matches('"')
                .to_string(),
        })
        .collect()
}
