//! The policy files as written: serde structs that mirror the TOML one to one and
//! refuse unknown keys. Nothing here is checked beyond its type; `compile` does that.

pub use crate::policy::{LogFormat, UnmatchedAction};
use std::net::SocketAddr;

use serde::Deserialize;
use toml::Spanned;

use super::units::{Dur, Size};

/// One policy file. The main file and every included file share this shape; a section
/// other than `[[route]]` may appear in one file only.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFile {
    /// Files to read with this one, relative to it (main file only).
    pub include: Option<Vec<Spanned<String>>>,
    /// `[server]`
    pub server: Option<Spanned<RawServer>>,
    /// `[upstream]`
    pub upstream: Option<Spanned<RawUpstream>>,
    /// `[limits]`
    pub limits: Option<Spanned<RawLimits>>,
    /// `[logging]`
    pub logging: Option<Spanned<RawLogging>>,
    /// `[[route]]`, in order.
    #[serde(default)]
    pub route: Vec<Spanned<RawRoute>>,
    /// `[unmatched]`
    pub unmatched: Option<Spanned<RawUnmatched>>,
    /// `[redaction]`
    pub redaction: Option<Spanned<RawRedaction>>,
    /// `[resources]`
    pub resources: Option<Spanned<RawResources>>,
    /// `[schema.NAME]`
    pub schema: Option<std::collections::BTreeMap<String, Spanned<RawSchema>>>,
    /// `[[model]]`
    #[serde(default)]
    pub model: Vec<Spanned<RawModel>>,
    /// `[model_policy]`
    pub model_policy: Option<Spanned<RawModelPolicy>>,
    /// `[access]`
    pub access: Option<Spanned<RawAccess>>,
    /// `[audit]`
    pub audit: Option<Spanned<RawAudit>>,
}

/// `[audit]`: what `sitegate verify` checks beyond the policy itself.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAudit {
    #[serde(default)]
    pub required_env: Vec<String>,
    #[serde(default)]
    pub sensitive_env: Vec<String>,
    #[serde(default)]
    pub expect_env: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub forbid_truthy_env: Vec<String>,
    #[serde(default)]
    pub paths: std::collections::BTreeMap<String, Spanned<String>>,
}

/// `[access]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAccess {
    pub api_key_header: Option<Spanned<String>>,
    pub api_keys_file: Option<Spanned<String>>,
    pub allowed_origins: Option<Vec<String>>,
    pub cors_methods: Option<Vec<String>>,
    pub cors_headers: Option<Vec<String>>,
    pub cors_max_age: Option<Dur>,
    pub rate_limit: Option<Spanned<RawRateLimit>>,
    pub failed_auth_limit: Option<Spanned<RawFailedAuthLimit>>,
    pub jwt: Option<Spanned<RawJwt>>,
}

/// `[access] failed_auth_limit = { per_minute, burst }`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFailedAuthLimit {
    pub per_minute: u32,
    pub burst: Option<u32>,
}

/// `[access] jwt = { ... }`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJwt {
    pub secret_env: Option<Spanned<String>>,
    pub secret_file: Option<Spanned<String>>,
    pub public_key_file: Option<Spanned<String>>,
    pub jwks_file: Option<Spanned<String>>,
    pub algorithms: Vec<Spanned<String>>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub leeway: Option<Dur>,
}

/// `[access] rate_limit = { per_second, burst }`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimit {
    pub per_second: u32,
    pub burst: Option<u32>,
}

/// `[[model]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawModel {
    pub name: Spanned<String>,
    pub version: Spanned<String>,
    pub locked: Option<bool>,
    pub inference: Option<bool>,
    pub retrain: Option<bool>,
}

/// `[model_policy]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawModelPolicy {
    pub require_locked_for_inference: Option<bool>,
    pub retrain_requires_force: Option<bool>,
    pub api_unlock: Option<bool>,
    pub registry_file: Option<Spanned<String>>,
}

/// A route's `model = { action, name, version, force, confirm }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRouteModel {
    pub action: Spanned<String>,
    pub name: Option<Spanned<String>>,
    pub version: Option<Spanned<String>>,
    pub force: Option<Spanned<String>>,
    pub confirm: Option<Spanned<String>>,
}

/// `[schema.NAME]`: the rules of a record.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSchema {
    pub required: Option<Vec<String>>,
    pub additional: Option<crate::guard::validate::schema::Additional>,
    pub fields: Option<std::collections::BTreeMap<String, Spanned<RawField>>>,
}

/// One field's rule.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawField {
    #[serde(rename = "type")]
    pub kind: Option<Spanned<RawTypes>>,
    pub nullable: Option<bool>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub min_len: Option<usize>,
    pub max_len: Option<usize>,
    pub pattern: Option<Spanned<String>>,
    #[serde(rename = "enum")]
    pub allowed: Option<Vec<toml::Value>>,
    pub format: Option<Spanned<String>>,
    pub trim: Option<bool>,
    pub coerce: Option<bool>,
    pub fields: Option<std::collections::BTreeMap<String, Spanned<RawField>>>,
    pub required: Option<Vec<String>>,
    pub additional: Option<crate::guard::validate::schema::Additional>,
    pub items: Option<Box<Spanned<RawField>>>,
    pub min_items: Option<usize>,
    pub max_items: Option<usize>,
}

/// `type = "string"` or `type = ["string", "null"]`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawTypes {
    /// One type.
    One(String),
    /// Several.
    Many(Vec<String>),
}

/// A route's `batch = { ... }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBatch {
    pub max_records: Option<usize>,
    pub on_invalid: Option<Spanned<String>>,
    pub path: Option<Spanned<String>>,
}

/// `[resources]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawResources {
    pub sample_every: Option<Dur>,
    pub shed_memory_percent: Option<Spanned<f32>>,
    pub shed_cpu_percent: Option<Spanned<f32>>,
    pub warn_memory_percent: Option<Spanned<f32>>,
    pub warn_cpu_percent: Option<Spanned<f32>>,
}

/// `[redaction]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRedaction {
    pub responses: Option<bool>,
    pub replacement: Option<Spanned<String>>,
    pub json_keys: Option<Vec<Spanned<String>>>,
    pub disable: Option<Vec<Spanned<String>>>,
    pub entropy: Option<std::collections::BTreeMap<Spanned<String>, Spanned<f32>>>,
    pub buffer_limit: Option<Size>,
    pub skip_content_types: Option<Vec<Spanned<String>>>,
    pub unknown_charset: Option<Spanned<String>>,
    pub pattern: Option<Vec<RawPattern>>,
}

/// `[[redaction.pattern]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPattern {
    pub name: Spanned<String>,
    pub regex: Spanned<String>,
    pub max_len: Option<Spanned<usize>>,
}

/// `[server]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub listen: Option<SocketAddr>,
    pub admin_listen: Option<SocketAddr>,
    pub header_read_timeout: Option<Dur>,
    pub shutdown_grace: Option<Dur>,
    pub workers: Option<Spanned<usize>>,
    pub max_connections: Option<Spanned<usize>>,
    pub request_timeout: Option<Dur>,
    pub client_body_timeout: Option<Dur>,
    pub admin_token_env: Option<Spanned<String>>,
    pub admin_token_file: Option<Spanned<String>>,
    pub admin_trust_loopback: Option<bool>,
    pub trusted_proxies: Option<Vec<Spanned<String>>>,
}

/// `[upstream]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    pub url: Option<Spanned<String>>,
    pub connect_timeout: Option<Dur>,
    pub timeout: Option<Dur>,
    pub pool_idle_timeout: Option<Dur>,
    pub pool_max_idle: Option<usize>,
    pub circuit: Option<RawCircuit>,
    pub retry_budget: Option<RawRetryBudget>,
}

/// `[upstream.circuit]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCircuit {
    pub consecutive_failures: Option<Spanned<u32>>,
    pub open_for: Option<Dur>,
    pub max_open_for: Option<Dur>,
}

/// `[upstream.retry_budget]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetryBudget {
    pub percent: Option<Spanned<f32>>,
    pub min_per_second: Option<u32>,
}

/// `[limits]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    pub max_body: Option<Size>,
    pub max_inflight: Option<Spanned<usize>>,
    pub buffer_budget: Option<Size>,
    pub max_records: Option<usize>,
    pub max_depth: Option<Spanned<usize>>,
    pub max_string: Option<usize>,
}

/// `[logging]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLogging {
    pub format: Option<LogFormat>,
    pub level: Option<Spanned<String>>,
    pub file: Option<String>,
    pub max_file_size: Option<Size>,
    pub max_files: Option<Spanned<usize>>,
}

/// `[[route]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub name: Spanned<String>,
    pub path: Spanned<String>,
    pub methods: Option<Vec<Spanned<String>>>,
    pub max_body: Option<Size>,
    pub content_types: Option<Vec<Spanned<String>>>,
    pub timeout: Option<Dur>,
    pub fallback: Option<Spanned<RawFallback>>,
    pub expect_json: Option<bool>,
    pub failure_statuses: Option<Vec<Spanned<u16>>>,
    pub retry: Option<Spanned<RawRetry>>,
    pub redact: Option<bool>,
    pub slow_after: Option<Dur>,
    pub shed: Option<bool>,
    pub schema: Option<Spanned<String>>,
    pub schema_file: Option<Spanned<String>>,
    pub sanitize: Option<bool>,
    pub batch: Option<Spanned<RawBatch>>,
    pub max_records: Option<usize>,
    pub max_depth: Option<Spanned<usize>>,
    pub max_string: Option<usize>,
    pub model: Option<Spanned<RawRouteModel>>,
    pub auth: Option<Spanned<String>>,
}

/// A route's `fallback = { ... }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFallback {
    pub file: Option<Spanned<String>>,
    pub body: Option<Spanned<String>>,
    pub status: Option<Spanned<u16>>,
    pub on: Option<Vec<Spanned<String>>>,
    pub headers: Option<std::collections::BTreeMap<String, Spanned<String>>>,
}

/// A route's `retry = { ... }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetry {
    pub attempts: Spanned<u32>,
    pub on: Option<Vec<Spanned<RawRetryOn>>>,
    pub non_idempotent: Option<bool>,
    pub max_body: Option<Size>,
}

/// One entry of `retry.on`: `"connect"` or a status code.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawRetryOn {
    /// A failure reason (only `connect` is retried).
    Reason(String),
    /// An upstream status.
    Status(u16),
}

/// `[unmatched]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUnmatched {
    #[serde(default)]
    pub action: UnmatchedAction,
}
