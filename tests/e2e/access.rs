//! API keys and the Origin allow-list through the proxy.

use sha2::{Digest, Sha256};

use crate::harness::*;

// A generated test key, not a credential.
const KEY: &str = "test-key-7c1f0b2e9a4d4c55";

async fn env() -> Env {
    let digest: String = Sha256::digest(KEY.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Env::start_with_files(
        "[[route]]\nname = \"private\"\npath = \"/headers\"\nauth = \"api_key\"\n",
        "\n[access]\napi_keys_file = \"api-keys\"\nallowed_origins = [\"https://suite.example.com\"]\n",
        &[("api-keys", format!("# test keys\n{digest} ci-runner\n"))],
    )
    .await
}

#[tokio::test]
async fn api_keys_gate_the_route_and_never_reach_the_app() {
    let env = env().await;
    let url = env.url("/headers");
    let before = env.app.requests();
    for headers in [
        vec![],
        vec![("x-api-key", "short")],
        vec![("x-api-key", "test-key-0000000000000000")],
    ] {
        let r = send("GET", &url, &headers, "").await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (401, "UNAUTHORIZED"),
            "{headers:?}"
        );
        assert!(r.header("www-authenticate").is_some());
    }
    assert_eq!(env.app.requests(), before);
    let r = send("GET", &url, &[("x-api-key", KEY)], "").await;
    assert_eq!(r.status, 200);
    assert!(
        r.json().get("x-api-key").is_none(),
        "the key was forwarded to the app"
    );
    // Unprotected paths need no key.
    assert_eq!(get(&env.url("/health")).await.status, 200);
}

#[tokio::test]
async fn origins_are_checked_and_preflights_answered_by_the_proxy() {
    let env = env().await;
    let r = send(
        "GET",
        &env.url("/health"),
        &[("origin", "https://evil.example.net")],
        "",
    )
    .await;
    assert_eq!((r.status, r.code().as_str()), (403, "ORIGIN_NOT_ALLOWED"));
    let r = send(
        "GET",
        &env.url("/health"),
        &[("origin", "https://suite.example.com")],
        "",
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://suite.example.com")
    );
    let before = env.app.requests();
    let r = send(
        "OPTIONS",
        &env.url("/headers"),
        &[
            ("origin", "https://suite.example.com"),
            ("access-control-request-method", "POST"),
        ],
        "",
    )
    .await;
    assert_eq!(r.status, 204);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://suite.example.com")
    );
    assert!(
        r.header("access-control-allow-methods")
            .unwrap()
            .contains("POST")
    );
    assert_eq!(env.app.requests(), before, "a preflight was forwarded");
}

#[tokio::test]
async fn clients_past_their_rate_get_429_with_retry_after() {
    let env = Env::start_with(
        "",
        "\n[access]\nrate_limit = { per_second = 1, burst = 3 }\n",
    )
    .await;
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(get(&env.url("/health")).await);
    }
    // A burst of 3 (a 4th token may refill if the machine is slow), then 429.
    let ok = statuses.iter().filter(|r| r.status == 200).count();
    assert!((3..=4).contains(&ok), "{ok} allowed");
    let limited = statuses.iter().find(|r| r.status == 429).unwrap();
    assert_eq!(limited.code(), "RATE_LIMITED");
    assert!(limited.header("retry-after").is_some());
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn token(secret: &[u8], alg: jsonwebtoken::Algorithm, claims: serde_json::Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(alg),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
    .unwrap()
}

#[tokio::test]
async fn jwt_outcomes() {
    // A secret generated for this test run.
    let secret: String = (0..48).map(|_| fastrand::alphanumeric()).collect();
    let env = Env::start_with_files(
        "[[route]]\nname = \"p\"\npath = \"/headers\"\nauth = \"jwt\"\n",
        "\n[access]\njwt = { secret_file = \"jwt.secret\", algorithms = [\"HS256\"], issuer = \"suite\", audience = \"sitegate\", leeway = \"5s\" }\n",
        &[("jwt.secret", secret.clone())],
    )
    .await;
    let url = env.url("/headers");
    let s = secret.as_bytes();
    let good = serde_json::json!({"sub": "planner-7", "iss": "suite", "aud": "sitegate", "exp": now() + 300});
    let bearer = |t: &str| format!("Bearer {t}");
    let valid = token(s, jsonwebtoken::Algorithm::HS256, good.clone());
    let r = send("GET", &url, &[("authorization", &bearer(&valid))], "").await;
    assert_eq!(r.status, 200, "{}", r.body_text());

    let mut expired = good.clone();
    expired["exp"] = (now() - 600).into();
    let mut early = good.clone();
    early["nbf"] = (now() + 600).into();
    let mut wrong_aud = good.clone();
    wrong_aud["aud"] = "someone-else".into();
    let mut tampered = valid.clone();
    tampered.insert(tampered.rfind('.').unwrap() + 2, 'x');
    let mut no_iss = good.clone();
    no_iss.as_object_mut().unwrap().remove("iss");
    let mut no_aud = good.clone();
    no_aud.as_object_mut().unwrap().remove("aud");
    // A header naming an extension the verifier must understand (RFC 7515 §4.1.11):
    // sitegate understands none, so any `crit` is refused, even with a valid signature.
    let b64 = |v: serde_json::Value| {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let signed = |header: serde_json::Value| {
        let input = format!("{}.{}", b64(header), b64(good.clone()));
        let sig = jsonwebtoken::crypto::sign(
            input.as_bytes(),
            &jsonwebtoken::EncodingKey::from_secret(s),
            jsonwebtoken::Algorithm::HS256,
        )
        .unwrap();
        format!("{input}.{sig}")
    };
    // The same hand-built token without `crit` is accepted, so the refusal below is
    // the `crit` and nothing else.
    let plain = signed(serde_json::json!({"alg": "HS256", "typ": "JWT"}));
    let r = send("GET", &url, &[("authorization", &bearer(&plain))], "").await;
    assert_eq!(r.status, 200, "{}", r.body_text());
    let with_crit = signed(
        serde_json::json!({"alg": "HS256", "typ": "JWT", "crit": ["exp-ext"], "exp-ext": 1}),
    );
    let unsigned = format!(
        "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{}.",
        valid.split('.').nth(1).unwrap()
    );
    let cases = [
        ("missing", String::new()),
        ("malformed", bearer("not-a-token")),
        (
            "expired",
            bearer(&token(s, jsonwebtoken::Algorithm::HS256, expired)),
        ),
        (
            "not yet valid",
            bearer(&token(s, jsonwebtoken::Algorithm::HS256, early)),
        ),
        (
            "wrong audience",
            bearer(&token(s, jsonwebtoken::Algorithm::HS256, wrong_aud)),
        ),
        (
            "wrong algorithm",
            bearer(&token(s, jsonwebtoken::Algorithm::HS384, good.clone())),
        ),
        ("tampered", bearer(&tampered)),
        (
            "no iss though an issuer is configured",
            bearer(&token(s, jsonwebtoken::Algorithm::HS256, no_iss)),
        ),
        (
            "no aud though an audience is configured",
            bearer(&token(s, jsonwebtoken::Algorithm::HS256, no_aud)),
        ),
        ("crit header", bearer(&with_crit)),
        ("alg none", bearer(&unsigned)),
    ];
    for (what, auth) in cases {
        let headers: Vec<(&str, &str)> = if auth.is_empty() {
            vec![]
        } else {
            vec![("authorization", &auth)]
        };
        let r = send("GET", &url, &headers, "").await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (401, "UNAUTHORIZED"),
            "{what}"
        );
    }
}

#[tokio::test]
async fn jwks_keys_are_picked_by_kid() {
    use base64::Engine;
    let secret: String = (0..48).map(|_| fastrand::alphanumeric()).collect();
    let k = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret.as_bytes());
    let jwks =
        format!(r#"{{"keys":[{{"kty":"oct","kid":"suite-2026","alg":"HS256","k":"{k}"}}]}}"#);
    let env = Env::start_with_files(
        "[[route]]\nname = \"p\"\npath = \"/headers\"\nauth = \"jwt\"\n",
        "\n[access]\njwt = { jwks_file = \"jwks.json\", algorithms = [\"HS256\"] }\n",
        &[("jwks.json", jwks)],
    )
    .await;
    let url = env.url("/headers");
    let claims = serde_json::json!({"sub": "ops", "exp": now() + 300});
    let signed = |kid: &str| {
        let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        h.kid = Some(kid.into());
        let t = jsonwebtoken::encode(
            &h,
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap();
        format!("Bearer {t}")
    };
    assert_eq!(
        send("GET", &url, &[("authorization", &signed("suite-2026"))], "")
            .await
            .status,
        200
    );
    let r = send(
        "GET",
        &url,
        &[("authorization", &signed("unknown-kid"))],
        "",
    )
    .await;
    assert_eq!((r.status, r.code().as_str()), (401, "UNAUTHORIZED"));
}
