//! `[access]`, compiled: what callers must show and where they may come from. Data
//! only; `guard::access` checks requests against it.

use std::sync::Arc;

use http::HeaderName;

/// What a route requires of its callers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Auth {
    /// Anyone.
    #[default]
    None,
    /// A key from `api_keys_file` in `api_key_header`.
    ApiKey,
    /// A valid JWT in `Authorization: Bearer`.
    Jwt,
    /// Either.
    Any,
}

/// How JWTs are checked. The key never appears in `Debug` output.
#[derive(Clone)]
pub struct JwtPolicy {
    /// The key (HMAC secret or public key), or the keys of a JWKS by `kid`.
    pub key: JwtKey,
    /// Algorithms, issuer, audience, leeway; `exp` required.
    pub validation: jsonwebtoken::Validation,
}

/// Where a token's verification key comes from.
#[derive(Clone)]
pub enum JwtKey {
    /// One key for every token.
    Single(jsonwebtoken::DecodingKey),
    /// A JWKS: the token's `kid` picks the key.
    Set(Vec<(String, jsonwebtoken::DecodingKey)>),
}

impl std::fmt::Debug for JwtPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtPolicy")
            .field("key", &"[REDACTED]")
            .field("algorithms", &self.validation.algorithms)
            .finish()
    }
}

/// `[access]`, compiled.
#[derive(Debug, Clone)]
pub struct AccessPolicy {
    /// Where the key is sent.
    pub api_key_header: HeaderName,
    /// SHA-256 digests of the valid keys, each with the id logged in its place.
    pub keys: Keys,
    /// Origins allowed to call; `None` when no Origin check is configured.
    pub allowed_origins: Option<Vec<String>>,
    /// Methods a preflight may ask for.
    pub cors_methods: String,
    /// Headers a preflight may ask for.
    pub cors_headers: String,
    /// How long a browser may cache a preflight answer, in seconds.
    pub cors_max_age: u64,
    /// Requests per second per client (API key id, else IP), and the burst allowed.
    pub rate_limit: Option<(std::num::NonZeroU32, std::num::NonZeroU32)>,
    /// Failed credentials per minute per client IP, and the burst allowed; past it the
    /// client gets 429 without its credentials being tried.
    pub failed_auth_limit: (std::num::NonZeroU32, std::num::NonZeroU32),
    /// JWT checking, when configured.
    pub jwt: Option<JwtPolicy>,
}

impl Default for AccessPolicy {
    fn default() -> Self {
        AccessPolicy {
            api_key_header: HeaderName::from_static("x-api-key"),
            keys: Vec::new(),
            allowed_origins: None,
            cors_methods: "GET, POST, PUT, PATCH, DELETE, OPTIONS".into(),
            cors_headers: "content-type, authorization, x-api-key, x-request-id".into(),
            cors_max_age: 600,
            rate_limit: None,
            failed_auth_limit: (
                std::num::NonZeroU32::new(10).unwrap_or(std::num::NonZeroU32::MIN),
                std::num::NonZeroU32::new(10).unwrap_or(std::num::NonZeroU32::MIN),
            ),
            jwt: None,
        }
    }
}

/// The keys of an `api_keys_file`: digest and id.
pub type Keys = Vec<([u8; 32], Arc<str>)>;
