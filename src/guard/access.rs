//! access: API keys, JWTs and the Origin allow-list (with CORS preflights answered by
//! the proxy). Pure: headers in, an identity or a rejection out; the count of failed
//! credentials per client is the caller's, behind [`FailedAuth`].

pub use crate::policy::access::{AccessPolicy, Auth, JwtKey, JwtPolicy, Keys};
use std::sync::Arc;

use http::{HeaderMap, HeaderValue, Method, header};
use sha2::{Digest, Sha256};

use crate::error::{ErrorCode, Rejection};

#[derive(serde::Deserialize)]
struct Claims {
    sub: Option<String>,
}

/// Checks `Authorization: Bearer <jwt>`; returns `jwt:<subject>`. Every failure
/// (missing, malformed, expired, wrong signature, algorithm or audience) answers the
/// same way.
pub fn check_jwt(jwt: Option<&JwtPolicy>, headers: &HeaderMap) -> Result<Arc<str>, Rejection> {
    let denied = || unauthorized("a valid bearer token is required");
    let jwt = jwt.ok_or_else(denied)?;
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .ok_or_else(denied)?;
    let token = token.trim();
    // RFC 7515 §4.1.11: a `crit` header names extensions the verifier must understand;
    // sitegate understands none, so a token that carries one is refused.
    if has_crit(token) {
        return Err(denied());
    }
    let key = match &jwt.key {
        JwtKey::Single(k) => k,
        JwtKey::Set(keys) => {
            let kid = jsonwebtoken::decode_header(token)
                .map_err(|_| denied())?
                .kid
                .ok_or_else(denied)?;
            &keys.iter().find(|(k, _)| *k == kid).ok_or_else(denied)?.1
        }
    };
    let data = jsonwebtoken::decode::<Claims>(token, key, &jwt.validation).map_err(|_| denied())?;
    Ok(Arc::from(format!(
        "jwt:{}",
        data.claims.sub.unwrap_or_default()
    )))
}

/// True when the token's protected header has a `crit` member (or cannot be read).
fn has_crit(token: &str) -> bool {
    use base64::Engine;
    let Some(header) = token.split('.').next() else {
        return true;
    };
    let Ok(bytes) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(header) else {
        return true;
    };
    match serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&bytes) {
        Ok(h) => h.contains_key("crit"),
        Err(_) => true,
    }
}

/// Failed credentials per client, as the access phase needs them: a client that kept
/// failing is refused before its credentials are tried.
pub trait FailedAuth {
    /// How long `client` is still refused, if it is.
    fn blocked(&self, client: std::net::IpAddr) -> Option<std::time::Duration>;
    /// Counts a failed credential from `client`.
    fn failed(&self, client: std::net::IpAddr);
}

/// No count of failed credentials: `sitegate try` decides one request, offline.
pub struct NoFailureCount;

impl FailedAuth for NoFailureCount {
    fn blocked(&self, _: std::net::IpAddr) -> Option<std::time::Duration> {
        None
    }

    fn failed(&self, _: std::net::IpAddr) {}
}

/// What the access phase let through.
#[derive(Debug, Default)]
pub struct Admitted {
    /// The caller's key or token id, when the route asks for credentials.
    pub caller: Option<Arc<str>>,
    /// The allowed Origin, to echo in `Access-Control-Allow-Origin`.
    pub cors_origin: Option<HeaderValue>,
}

/// access: the Origin, then the credentials `auth` asks for, from `client`.
pub fn admit(
    policy: &AccessPolicy,
    auth: Auth,
    headers: &HeaderMap,
    client: std::net::IpAddr,
    failures: &impl FailedAuth,
) -> Result<Admitted, Rejection> {
    let mut admitted = Admitted::default();
    if let OriginDecision::Allowed(origin) = check_origin(policy, headers)? {
        admitted.cors_origin = Some(origin);
    }
    if auth == Auth::None {
        return Ok(admitted);
    }
    if let Some(wait) = failures.blocked(client) {
        return Err(Rejection::new(
            ErrorCode::RateLimited,
            "too many failed credentials from this client; retry later",
        )
        .with_retry_after(wait.as_secs().max(1)));
    }
    match check_caller(policy, auth, headers) {
        Ok(caller) => admitted.caller = caller,
        Err(rejection) => {
            failures.failed(client);
            return Err(rejection);
        }
    }
    Ok(admitted)
}

/// Checks what `auth` asks of the caller; returns its id (`None` for `Auth::None`).
/// Shared by the proxy and `sitegate try`.
pub fn check_caller(
    policy: &AccessPolicy,
    auth: Auth,
    headers: &HeaderMap,
) -> Result<Option<Arc<str>>, Rejection> {
    let jwt = policy.jwt.as_ref();
    Ok(match auth {
        Auth::None => None,
        Auth::ApiKey => Some(check_api_key(policy, headers)?),
        Auth::Jwt => Some(check_jwt(jwt, headers)?),
        Auth::Any => Some(check_api_key(policy, headers).or_else(|_| check_jwt(jwt, headers))?),
    })
}

/// Parses an `api_keys_file`: `<sha256 hex> [id]` a line, `#` comments. Errors carry
/// the line number, never the line.
pub fn parse_key_file(text: &str) -> Result<Keys, (usize, &'static str)> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let mut parts = line.split_whitespace();
        let hex = parts.next().unwrap_or("");
        let id = parts
            .next()
            .map_or_else(|| format!("key-{}", n + 1), str::to_string);
        if parts.next().is_some() {
            return Err((n + 1, "expected `<sha256 hex> [id]`"));
        }
        let mut digest = [0u8; 32];
        if hex.len() != 64 {
            return Err((n + 1, "a key digest is 64 hex digits (SHA-256 of the key)"));
        }
        for (i, byte) in digest.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[i * 2..i * 2 + 2], 16)
                .map_err(|_| (n + 1, "a key digest is 64 hex digits (SHA-256 of the key)"))?;
        }
        out.push((digest, Arc::from(id)));
    }
    Ok(out)
}

fn unauthorized(message: &str) -> Rejection {
    Rejection::new(ErrorCode::Unauthorized, message)
}

/// Checks the API key; returns the key's id. "No such key" and "wrong key" answer
/// the same, and every stored digest is compared, so timing tells nothing.
pub fn check_api_key(policy: &AccessPolicy, headers: &HeaderMap) -> Result<Arc<str>, Rejection> {
    let Some(value) = headers.get(&policy.api_key_header) else {
        return Err(unauthorized("an API key is required"));
    };
    let key = value.as_bytes();
    // Malformed keys are refused before any hashing.
    if key.len() < 16 || key.len() > 256 || !key.iter().all(|b| b.is_ascii_graphic()) {
        return Err(unauthorized("the API key is not valid"));
    }
    let digest: [u8; 32] = Sha256::digest(key).into();
    let mut found: Option<&Arc<str>> = None;
    for (d, id) in &policy.keys {
        let diff = d
            .iter()
            .zip(digest.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if diff == 0 {
            found = Some(id);
        }
    }
    found
        .cloned()
        .ok_or_else(|| unauthorized("the API key is not valid"))
}

/// The CORS decision for a request that carries `Origin`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OriginDecision {
    /// No Origin check applies.
    NotChecked,
    /// Allowed: the value to echo in `Access-Control-Allow-Origin`.
    Allowed(HeaderValue),
}

/// Checks `Origin` against the allow-list.
pub fn check_origin(
    policy: &AccessPolicy,
    headers: &HeaderMap,
) -> Result<OriginDecision, Rejection> {
    let (Some(allowed), Some(origin)) = (&policy.allowed_origins, headers.get(header::ORIGIN))
    else {
        return Ok(OriginDecision::NotChecked);
    };
    // `*` is answered as `*`, never by reflecting the caller's Origin: browsers refuse
    // credentials with `*`, so a wildcard can never let any site read with the user's
    // cookies (the pipeline also drops the app's Access-Control-Allow-Credentials).
    if allowed.iter().any(|a| a == "*") {
        return Ok(OriginDecision::Allowed(HeaderValue::from_static("*")));
    }
    let ok = origin
        .to_str()
        .is_ok_and(|o| allowed.iter().any(|a| a.eq_ignore_ascii_case(o)));
    if ok {
        Ok(OriginDecision::Allowed(origin.clone()))
    } else {
        Err(Rejection::new(
            ErrorCode::OriginNotAllowed,
            "this Origin may not call this API",
        ))
    }
}

/// True for a CORS preflight: OPTIONS with `Origin` and `Access-Control-Request-Method`.
pub fn is_preflight(method: &Method, headers: &HeaderMap) -> bool {
    method == Method::OPTIONS
        && headers.contains_key(header::ORIGIN)
        && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

/// The headers of the proxy's answer to an allowed preflight.
pub fn preflight_headers(policy: &AccessPolicy, origin: HeaderValue) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    if let Ok(v) = HeaderValue::from_str(&policy.cors_methods) {
        h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, v);
    }
    if let Ok(v) = HeaderValue::from_str(&policy.cors_headers) {
        h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v);
    }
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from(policy.cors_max_age),
    );
    h.insert(header::VARY, HeaderValue::from_static("Origin"));
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderName;

    fn policy() -> AccessPolicy {
        let key = "demo-key-0000000000000001";
        let hex: String = Sha256::digest(key.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        AccessPolicy {
            keys: parse_key_file(&format!("# ops keys\n{hex} ops-ci\n")).unwrap(),
            allowed_origins: Some(vec!["https://suite.example.com".into()]),
            ..AccessPolicy::default()
        }
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| (HeaderName::from_static(k), HeaderValue::from_static(v)))
            .collect()
    }

    /// Failed credentials counted per client; `blocked` once a client has `limit`.
    struct Counted {
        limit: usize,
        failures: std::cell::RefCell<Vec<std::net::IpAddr>>,
    }

    impl FailedAuth for Counted {
        fn blocked(&self, client: std::net::IpAddr) -> Option<std::time::Duration> {
            let n = self
                .failures
                .borrow()
                .iter()
                .filter(|c| **c == client)
                .count();
            (n >= self.limit).then_some(std::time::Duration::from_secs(30))
        }

        fn failed(&self, client: std::net::IpAddr) {
            self.failures.borrow_mut().push(client);
        }
    }

    #[test]
    fn admit_checks_origin_then_credentials_and_stops_a_client_that_keeps_failing() {
        let p = policy();
        let counted = Counted {
            limit: 2,
            failures: Default::default(),
        };
        let (a, b): (std::net::IpAddr, std::net::IpAddr) =
            ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        let good = headers(&[
            ("x-api-key", "demo-key-0000000000000001"),
            ("origin", "https://suite.example.com"),
        ]);
        let ok = admit(&p, Auth::ApiKey, &good, a, &counted).unwrap();
        assert_eq!(ok.caller.as_deref(), Some("ops-ci"));
        assert_eq!(ok.cors_origin.unwrap(), "https://suite.example.com");
        // An Origin not on the list is refused before any key is looked at.
        let foreign = headers(&[
            ("x-api-key", "demo-key-0000000000000009"),
            ("origin", "https://evil.example"),
        ]);
        let r = admit(&p, Auth::ApiKey, &foreign, a, &counted).unwrap_err();
        assert_eq!(r.code, ErrorCode::OriginNotAllowed);
        assert!(counted.failures.borrow().is_empty());
        // Two wrong keys from `a`: then even its right key is not tried.
        let wrong = headers(&[("x-api-key", "demo-key-0000000000000009")]);
        for _ in 0..2 {
            let r = admit(&p, Auth::ApiKey, &wrong, a, &counted).unwrap_err();
            assert_eq!(r.code, ErrorCode::Unauthorized);
        }
        let r = admit(&p, Auth::ApiKey, &good, a, &counted).unwrap_err();
        assert_eq!(r.code, ErrorCode::RateLimited);
        assert_eq!(r.retry_after, Some(30));
        // Another client, and a route that asks for nothing, are not affected.
        assert!(admit(&p, Auth::ApiKey, &good, b, &counted).is_ok());
        let open = admit(&p, Auth::None, &headers(&[]), a, &counted).unwrap();
        assert!(open.caller.is_none());
        assert_eq!(counted.failures.borrow().len(), 2);
    }

    #[test]
    fn keys_missing_malformed_wrong_and_right() {
        let p = policy();
        let missing = check_api_key(&p, &headers(&[])).unwrap_err();
        assert_eq!(missing.code, ErrorCode::Unauthorized);
        let malformed = check_api_key(&p, &headers(&[("x-api-key", "short")])).unwrap_err();
        let wrong =
            check_api_key(&p, &headers(&[("x-api-key", "demo-key-0000000000000002")])).unwrap_err();
        // "No such key" and "wrong key" look the same.
        assert_eq!(malformed, wrong);
        let id =
            check_api_key(&p, &headers(&[("x-api-key", "demo-key-0000000000000001")])).unwrap();
        assert_eq!(&*id, "ops-ci");
    }

    #[test]
    fn configured_issuer_and_audience_are_required_and_crit_refused() {
        use jsonwebtoken::{Algorithm, EncodingKey, Header, Validation, encode};
        let secret = b"a-test-secret-of-at-least-32-bytes!!";
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&["suite"]);
        validation.set_audience(&["sitegate"]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        let policy = JwtPolicy {
            key: JwtKey::Single(jsonwebtoken::DecodingKey::from_secret(secret)),
            validation,
        };
        let token = |claims: serde_json::Value, header: Header| {
            let t = encode(&header, &claims, &EncodingKey::from_secret(secret)).unwrap();
            let mut h = HeaderMap::new();
            h.insert(
                header::AUTHORIZATION,
                HeaderValue::from_str(&format!("Bearer {t}")).unwrap(),
            );
            h
        };
        let exp = 4_000_000_000u64;
        let full = serde_json::json!({"sub": "u", "exp": exp, "iss": "suite", "aud": "sitegate"});
        assert!(check_jwt(Some(&policy), &token(full, Header::default())).is_ok());
        let no_iss = serde_json::json!({"sub": "u", "exp": exp, "aud": "sitegate"});
        assert!(check_jwt(Some(&policy), &token(no_iss, Header::default())).is_err());
        let no_aud = serde_json::json!({"sub": "u", "exp": exp, "iss": "suite"});
        assert!(check_jwt(Some(&policy), &token(no_aud, Header::default())).is_err());
        // A valid token whose header names a critical extension sitegate cannot know.
        let crit = {
            use base64::Engine;
            let full =
                serde_json::json!({"sub": "u", "exp": exp, "iss": "suite", "aud": "sitegate"});
            let t = encode(&Header::default(), &full, &EncodingKey::from_secret(secret)).unwrap();
            let rest = t.split_once('.').unwrap().1.to_string();
            let head = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(br#"{"alg":"HS256","typ":"JWT","crit":["exp"]}"#);
            format!("{head}.{rest}")
        };
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {crit}")).unwrap(),
        );
        assert!(check_jwt(Some(&policy), &h).is_err());
        assert!(has_crit(&crit));
    }

    #[test]
    fn key_files_are_checked_line_by_line() {
        assert_eq!(parse_key_file("abc\n").unwrap_err().0, 1);
        assert_eq!(
            parse_key_file(&format!("# c\n\n{} id extra\n", "a".repeat(64)))
                .unwrap_err()
                .0,
            3
        );
        let keys = parse_key_file(&format!("{}\n", "0".repeat(64))).unwrap();
        assert_eq!(&*keys[0].1, "key-1");
    }

    #[test]
    fn origins_and_preflights() {
        let p = policy();
        assert_eq!(
            check_origin(&p, &headers(&[])).unwrap(),
            OriginDecision::NotChecked
        );
        let ok = check_origin(&p, &headers(&[("origin", "https://suite.example.com")])).unwrap();
        assert!(matches!(ok, OriginDecision::Allowed(_)));
        let e = check_origin(&p, &headers(&[("origin", "https://evil.example.net")])).unwrap_err();
        assert_eq!(e.code, ErrorCode::OriginNotAllowed);
        let pre = headers(&[
            ("origin", "https://suite.example.com"),
            ("access-control-request-method", "POST"),
        ]);
        assert!(is_preflight(&Method::OPTIONS, &pre));
        assert!(!is_preflight(&Method::POST, &pre));
        let h = preflight_headers(&p, HeaderValue::from_static("https://suite.example.com"));
        assert_eq!(h["access-control-max-age"], "600");
    }
}
