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
            "json-key",
            format!("{{\"token\": \"{}\"}}", alnum(24, 35)),
            alnum(24, 35),
            "{\"token\": \"****\"}".into(),
        ),
    ]
}
