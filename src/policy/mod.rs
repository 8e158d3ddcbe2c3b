//! The compiled, immutable policy: what every request is checked against. Built only by
//! `config::compile`, shared through an `ArcSwap`, never changed in place: a reload
//! builds a new one.

pub mod access;
pub mod models;
mod route;
pub mod schema;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use route::{RetryPolicy, Route, RouteModel, RouteTable, StatusSet, UNMATCHED, ValueSource};

/// Everything compiled from the policy files.
#[derive(Debug)]
pub struct Policy {
    /// Content hash of every policy file (16 hex digits): equal files, equal version.
    pub version: String,
    /// Every file the policy was read from, main file first.
    pub files: Vec<PathBuf>,
    /// `[server]`
    pub server: ServerSettings,
    /// `[upstream]`
    pub upstream: UpstreamSettings,
    /// `[limits]`
    pub limits: Limits,
    /// `[logging]`
    pub logging: LoggingSettings,
    /// `[[route]]` and `[unmatched]`
    pub routes: RouteTable,
    /// `[redaction]`
    pub redaction: RedactionPolicy,
    /// `[resources]`
    pub shed: ShedSettings,
    /// `[[model]]`
    pub models: models::ModelTable,
    /// `[model_policy]`
    pub model_policy: models::ModelPolicy,
    /// `[access]`
    pub access: access::AccessPolicy,
    /// `[audit]`
    pub audit: AuditSettings,
    /// Files that hold secrets on purpose (a JWT secret file): `verify` does not
    /// report them as plaintext credentials.
    pub secret_files: Vec<PathBuf>,
    /// Problems that do not stop the policy from loading (registry conflicts), as
    /// `file: message` lines for `check` and the reload log.
    pub warnings: Vec<String>,
}

/// `[redaction]`, compiled.
#[derive(Debug, Clone)]
pub struct RedactionPolicy {
    /// Redact response bodies on routes that do not say otherwise.
    pub responses: bool,
    /// JSON and text responses up to this size are redacted whole (with
    /// `X-Sitegate-Redacted`); larger or unsized ones stream through the engine.
    pub buffer_limit: u64,
    /// The engine, shared with the log writer.
    pub redactor: std::sync::Arc<crate::redact::Redactor>,
    /// Content types passed on unscanned: `type/*` or exact essences, lower case.
    pub skip_types: Vec<String>,
    /// What a body in a charset sitegate cannot decode gets.
    pub unknown_charset: UnknownCharset,
}

/// `[redaction] unknown_charset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnknownCharset {
    /// 502: a body sitegate cannot read is not passed on as if it had been scanned.
    Refuse,
    /// Scanned as bytes, as if ASCII-compatible (catches the secrets of any charset
    /// that writes ASCII as ASCII).
    Scan,
}

/// Binary types whose bytes are data, not text: a replacement would corrupt them, and
/// a run of bytes in an image or a model file that looks like a token is not one.
/// `application/octet-stream` is here because it is how model weights, pickles and
/// archives are served: corrupting a model file is data lost too. Remove it from
/// `skip_content_types` for an app that sends text under it.
pub const DEFAULT_SKIP_TYPES: &[&str] = &[
    "image/*",
    "audio/*",
    "video/*",
    "font/*",
    "application/octet-stream",
    "application/zip",
    "application/gzip",
    "application/x-gzip",
    "application/x-tar",
    "application/x-bzip2",
    "application/x-xz",
    "application/zstd",
    "application/x-7z-compressed",
    "application/vnd.rar",
    "application/pdf",
    "application/wasm",
    "application/x-protobuf",
    "application/vnd.google.protobuf",
    "application/x-hdf5",
    "application/x-npy",
];

impl RedactionPolicy {
    /// True when a body of type `essence` (lower case) is passed on unscanned.
    pub fn skips(&self, essence: &str) -> bool {
        self.skip_types.iter().any(|t| match t.strip_suffix("/*") {
            Some(kind) => essence
                .strip_prefix(kind)
                .is_some_and(|rest| rest.starts_with('/')),
            None => t == essence,
        })
    }
}

impl Default for RedactionPolicy {
    fn default() -> Self {
        RedactionPolicy {
            responses: true,
            buffer_limit: 1 << 20,
            redactor: crate::redact::default_redactor(),
            skip_types: DEFAULT_SKIP_TYPES.iter().map(|t| t.to_string()).collect(),
            unknown_charset: UnknownCharset::Refuse,
        }
    }
}

/// The largest request body when neither `[limits]` nor the route says (10 MiB).
pub const DEFAULT_MAX_BODY: u64 = 10 << 20;

/// Listener settings. The addresses are bound once: changing them needs a restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSettings {
    /// Where clients connect.
    pub listen: SocketAddr,
    /// Where `/healthz`, `/readyz`, `/metrics`, `/config` and `/reload` are served.
    pub admin_listen: SocketAddr,
    /// Time a client has to send a complete request head.
    pub header_read_timeout: Duration,
    /// How long in-flight requests may run after SIGTERM.
    pub shutdown_grace: Duration,
    /// Worker threads serving the proxy listener; `None` for one per CPU.
    pub workers: Option<usize>,
    /// Client connections served at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// The longest a request may take to get its response head, whatever its route.
    pub request_timeout: Duration,
    /// The longest a client may pause between two pieces of its request body (NGINX's
    /// `client_body_timeout`); past it the request ends in 408 `REQUEST_TIMEOUT`.
    pub client_body_timeout: Duration,
    /// The token `/config` and `POST /reload` accept from a non-loopback peer
    /// (`admin_token_env` / `admin_token_file`); `None`: loopback peers only.
    pub admin_token: Option<AdminToken>,
    /// Whether a loopback peer may read `/config` and reload without the token. In a
    /// Kubernetes pod every container shares loopback, so an operator who does not
    /// trust the app container turns this off and gives the token to whoever needs it.
    pub admin_trust_loopback: bool,
    /// Peers whose `Forwarded` / `X-Forwarded-For` is believed (load balancers,
    /// ingress controllers): see `guard/client.rs`. Empty: the peer is the client.
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

/// The admin listener's bearer token. Never printed: `Debug` shows `[REDACTED]`.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken([u8; 32]);

impl AdminToken {
    /// Keeps the token's SHA-256 digest only.
    pub fn new(token: &str) -> Self {
        use sha2::Digest;
        AdminToken(sha2::Sha256::digest(token.trim().as_bytes()).into())
    }

    /// Compares `presented` with the token in constant time (over the digests).
    pub fn matches(&self, presented: &[u8]) -> bool {
        use sha2::Digest;
        let digest: [u8; 32] = sha2::Sha256::digest(presented).into();
        digest
            .iter()
            .zip(self.0.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[REDACTED]")
    }
}

/// The application behind sitegate.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamSettings {
    /// `host:port` of the app (plain HTTP: sitegate is its sidecar).
    pub authority: http::uri::Authority,
    /// Time to establish a TCP connection.
    pub connect_timeout: Duration,
    /// Default time for the app to send response headers, and the longest gap between
    /// two pieces of a response body; routes may set their own.
    pub timeout: Duration,
    /// Idle pooled connections are closed after this.
    pub pool_idle_timeout: Duration,
    /// At most this many idle pooled connections are kept.
    pub pool_max_idle: usize,
    /// `[upstream.circuit]`
    pub circuit: CircuitSettings,
    /// `[upstream.retry_budget]`
    pub retry_budget: RetryBudgetSettings,
}

/// How many retries the upstream may get on top of the original requests.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryBudgetSettings {
    /// Retries allowed as a share of recent requests (20.0 = 20 %).
    pub percent: f32,
    /// Retries allowed per second whatever the traffic (so a quiet service can retry).
    pub min_per_second: u32,
}

impl UpstreamSettings {
    /// True when `other` needs a new connection pool (a different address or timeouts).
    pub fn pool_differs(&self, other: &UpstreamSettings) -> bool {
        self.authority != other.authority
            || self.connect_timeout != other.connect_timeout
            || self.pool_idle_timeout != other.pool_idle_timeout
            || self.pool_max_idle != other.pool_max_idle
    }
}

/// `[audit]`, compiled.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditSettings {
    /// Variables that must be set.
    pub required_env: Vec<String>,
    /// Variables that must be set to something other than a well-known default.
    pub sensitive_env: Vec<String>,
    /// Variables that must have exactly these values.
    pub expect_env: Vec<(String, String)>,
    /// Variables that must not be truthy (`1`, `true`, `yes`, `on`).
    pub forbid_truthy_env: Vec<String>,
    /// Paths (relative to the policy file) and the mode each should have.
    pub paths: Vec<(PathBuf, u32)>,
}

/// Global limits; routes may set their own `max_body`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest request body, in bytes.
    pub max_body: u64,
    /// Most requests handled at once; more get 429 `RESOURCE_EXHAUSTED`.
    pub max_inflight: usize,
    /// Body bytes all requests together may hold in memory (restart to change).
    pub buffer_budget: u64,
    /// Most records in a batch, for routes that validate.
    pub max_records: usize,
    /// Deepest JSON nesting, for routes that validate.
    pub max_depth: usize,
    /// Longest JSON string, for routes that validate.
    pub max_string: usize,
}

/// `[logging]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggingSettings {
    /// JSON lines or a terminal format (fixed at start).
    pub format: LogFormat,
    /// A `tracing` filter such as `info` or `info,hyper=warn` (reloadable).
    pub level: String,
    /// A rotating log file besides stdout (fixed at start).
    pub file: Option<FileSettings>,
}

impl Policy {
    /// Settings that changed between `self` and `next` but only take effect after a
    /// restart, named as in the policy file.
    pub fn restart_required(&self, next: &Policy) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.server.listen != next.server.listen {
            out.push("server.listen");
        }
        if self.server.admin_listen != next.server.admin_listen {
            out.push("server.admin_listen");
        }
        if self.server.header_read_timeout != next.server.header_read_timeout {
            out.push("server.header_read_timeout");
        }
        if self.server.max_connections != next.server.max_connections {
            out.push("server.max_connections");
        }
        if self.server.workers != next.server.workers {
            out.push("server.workers");
        }
        if self.logging.format != next.logging.format {
            out.push("logging.format");
        }
        if self.limits.buffer_budget != next.limits.buffer_budget {
            out.push("limits.buffer_budget");
        }
        if self.logging.file != next.logging.file {
            out.push("logging.file");
        }
        out
    }
}

/// `[upstream.circuit]`
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CircuitSettings {
    /// Failures in a row that open the circuit; 0 disables the breaker.
    pub consecutive_failures: u32,
    /// How long the circuit first stays open.
    pub open_for: Duration,
    /// The longest it stays open after repeated failed probes.
    pub max_open_for: Duration,
}

/// `[resources]`
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ShedSettings {
    /// Shed above this share of system memory in use (percent).
    pub memory_percent: f32,
    /// Shed above this system CPU use (percent).
    pub cpu_percent: f32,
    /// Log a warning when system memory in use rises above this (percent), and a line
    /// when it falls back below.
    pub warn_memory_percent: f32,
    /// The same for system CPU use.
    pub warn_cpu_percent: f32,
    /// How often the monitor samples; also the `Retry-After` given.
    pub sample_every: std::time::Duration,
}

/// A log file with size-based rotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSettings {
    /// The current file; rotated ones get `.1`, `.2`, ... (`.1` the newest).
    pub path: std::path::PathBuf,
    /// Rotate once the current file passes this size.
    pub max_size: u64,
    /// Files kept in all, the current one included; older ones are deleted.
    pub max_files: usize,
}

/// How log lines are written.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object a line (the default: for collectors).
    #[default]
    Json,
    /// Human-readable lines (for a terminal).
    Pretty,
}

/// What happens to a request no route matches.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnmatchedAction {
    /// Forward it under the global limits.
    #[default]
    Pass,
    /// Answer 404 `NOT_FOUND`.
    Deny,
}
