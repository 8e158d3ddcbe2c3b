//! The error families of DESIGN §3 and the one place that turns them into responses.
//!
//! A `Rejection` is a refused client request, an `UpstreamFailure` is what went wrong
//! between sitegate and the app. Both are classified where they arise and rendered here,
//! and only here, as the JSON body of DESIGN §5. Rendering has no side effects: logging
//! and metrics are the pipeline's business.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use serde::Serialize;

/// The stable error codes of DESIGN §5; `as_str` is the wire name used in bodies, logs
/// and metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The body is not well-formed JSON.
    MalformedJson,
    /// The body is JSON but breaks the route's rules.
    ValidationFailed,
    /// The request itself is unusable (bad header, bad request target, ...).
    InvalidRequest,
    /// The request path has no single canonical form (an encoded `/`, a control
    /// character, a `..` above the root, invalid percent-encoding or UTF-8).
    InvalidPath,
    /// The client stopped sending its request body, or sent it too slowly.
    RequestTimeout,
    /// No or bad credentials.
    Unauthorized,
    /// Credentials fine, action not allowed.
    Forbidden,
    /// The `Origin` header is not on the allow-list.
    OriginNotAllowed,
    /// No route matched and `[unmatched] action = "deny"`.
    NotFound,
    /// The model is not registered.
    ModelUnknown,
    /// The model version is not locked.
    ModelNotLocked,
    /// Inference is switched off for this model version.
    ModelInferenceDisabled,
    /// The body is larger than the route allows.
    PayloadTooLarge,
    /// The batch has more records than the route allows.
    TooManyRecords,
    /// The content type (or encoding) is not accepted on this route.
    UnsupportedMediaType,
    /// A locked model version would be overwritten.
    ModelLocked,
    /// Retraining without the explicit force flag.
    RetrainNotConfirmed,
    /// The proxy is short of memory, CPU or capacity.
    ResourceExhausted,
    /// The caller exceeded its rate.
    RateLimited,
    /// Something inside sitegate broke; the message is generic.
    Internal,
    /// The upstream could not be reached (502), or the circuit is open (503).
    UpstreamUnavailable,
    /// The upstream did not answer in time.
    UpstreamTimeout,
}

impl ErrorCode {
    /// Every code, for tables, docs and tests.
    pub const ALL: [ErrorCode; 22] = [
        ErrorCode::MalformedJson,
        ErrorCode::ValidationFailed,
        ErrorCode::InvalidRequest,
        ErrorCode::InvalidPath,
        ErrorCode::RequestTimeout,
        ErrorCode::Unauthorized,
        ErrorCode::Forbidden,
        ErrorCode::OriginNotAllowed,
        ErrorCode::NotFound,
        ErrorCode::ModelUnknown,
        ErrorCode::ModelNotLocked,
        ErrorCode::ModelInferenceDisabled,
        ErrorCode::PayloadTooLarge,
        ErrorCode::TooManyRecords,
        ErrorCode::UnsupportedMediaType,
        ErrorCode::ModelLocked,
        ErrorCode::RetrainNotConfirmed,
        ErrorCode::ResourceExhausted,
        ErrorCode::RateLimited,
        ErrorCode::Internal,
        ErrorCode::UpstreamUnavailable,
        ErrorCode::UpstreamTimeout,
    ];

    /// The stable wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::MalformedJson => "MALFORMED_JSON",
            ErrorCode::ValidationFailed => "VALIDATION_FAILED",
            ErrorCode::InvalidRequest => "INVALID_REQUEST",
            ErrorCode::InvalidPath => "INVALID_PATH",
            ErrorCode::RequestTimeout => "REQUEST_TIMEOUT",
            ErrorCode::Unauthorized => "UNAUTHORIZED",
            ErrorCode::Forbidden => "FORBIDDEN",
            ErrorCode::OriginNotAllowed => "ORIGIN_NOT_ALLOWED",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::ModelUnknown => "MODEL_UNKNOWN",
            ErrorCode::ModelNotLocked => "MODEL_NOT_LOCKED",
            ErrorCode::ModelInferenceDisabled => "MODEL_INFERENCE_DISABLED",
            ErrorCode::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            ErrorCode::TooManyRecords => "TOO_MANY_RECORDS",
            ErrorCode::UnsupportedMediaType => "UNSUPPORTED_MEDIA_TYPE",
            ErrorCode::ModelLocked => "MODEL_LOCKED",
            ErrorCode::RetrainNotConfirmed => "RETRAIN_NOT_CONFIRMED",
            ErrorCode::ResourceExhausted => "RESOURCE_EXHAUSTED",
            ErrorCode::RateLimited => "RATE_LIMITED",
            ErrorCode::Internal => "INTERNAL",
            ErrorCode::UpstreamUnavailable => "UPSTREAM_UNAVAILABLE",
            ErrorCode::UpstreamTimeout => "UPSTREAM_TIMEOUT",
        }
    }

    /// The HTTP status of DESIGN §5. `UPSTREAM_UNAVAILABLE` is 502 here; an open circuit
    /// answers 503 through [`UpstreamFailure::status`].
    pub fn status(self) -> StatusCode {
        match self {
            ErrorCode::MalformedJson
            | ErrorCode::ValidationFailed
            | ErrorCode::InvalidRequest
            | ErrorCode::InvalidPath => StatusCode::BAD_REQUEST,
            ErrorCode::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorCode::Forbidden | ErrorCode::OriginNotAllowed => StatusCode::FORBIDDEN,
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::ModelUnknown
            | ErrorCode::ModelNotLocked
            | ErrorCode::ModelInferenceDisabled => StatusCode::CONFLICT,
            ErrorCode::PayloadTooLarge | ErrorCode::TooManyRecords => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::ModelLocked => StatusCode::LOCKED,
            ErrorCode::RetrainNotConfirmed => StatusCode::PRECONDITION_REQUIRED,
            ErrorCode::ResourceExhausted | ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::UpstreamUnavailable => StatusCode::BAD_GATEWAY,
            ErrorCode::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }
}

/// One problem found in a request, for the `details` array.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Detail {
    /// Index of the record in a batch, when the body is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record: Option<usize>,
    /// JSON Pointer to the offending value ("" for the whole body).
    pub path: String,
    /// The rule that failed (`min`, `type`, `max_body`, ...).
    pub rule: String,
    /// A human sentence; never contains request values that could be secrets.
    pub message: String,
}

/// A refused client request.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    /// What kind of refusal.
    pub code: ErrorCode,
    /// A specific, human message.
    pub message: String,
    /// Per-field problems, if any.
    pub details: Vec<Detail>,
    /// Seconds for `Retry-After` (429s).
    pub retry_after: Option<u64>,
    /// The connection is closed after the answer: where the next request on it starts
    /// is in doubt (bad framing, a body that stalled half way).
    pub close: bool,
}

impl Rejection {
    /// A rejection with a message and no details.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Rejection {
            code,
            message: message.into(),
            details: Vec::new(),
            retry_after: None,
            close: false,
        }
    }

    /// Closes the connection after the answer.
    pub fn closing(mut self) -> Self {
        self.close = true;
        self
    }

    /// Adds the per-field details.
    pub fn with_details(mut self, details: Vec<Detail>) -> Self {
        self.details = details;
        self
    }

    /// Sets `Retry-After`.
    pub fn with_retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }
}

/// Why the upstream did not give a usable answer; the wire names are the
/// `X-Sitegate-Fallback` reasons of DESIGN §4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UpstreamFailure {
    /// Refused, reset before a response, or the address could not be resolved.
    Connect,
    /// No response within the connect or per-route timeout.
    Timeout,
    /// The upstream answered 500–599.
    Status5xx,
    /// The circuit breaker is open: the upstream was not asked.
    CircuitOpen,
    /// The upstream answered something the route cannot pass on.
    InvalidResponse,
}

impl UpstreamFailure {
    /// Every reason, for parsing and docs.
    pub const ALL: [UpstreamFailure; 5] = [
        UpstreamFailure::Connect,
        UpstreamFailure::Timeout,
        UpstreamFailure::Status5xx,
        UpstreamFailure::CircuitOpen,
        UpstreamFailure::InvalidResponse,
    ];

    /// The reason named `name`, as written in a policy file.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.as_str() == name)
    }

    /// The stable reason name.
    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamFailure::Connect => "connect",
            UpstreamFailure::Timeout => "timeout",
            UpstreamFailure::Status5xx => "5xx",
            UpstreamFailure::CircuitOpen => "circuit-open",
            UpstreamFailure::InvalidResponse => "invalid-response",
        }
    }

    /// The error code a client sees when no fallback answers for this failure.
    pub fn code(self) -> ErrorCode {
        match self {
            UpstreamFailure::Timeout => ErrorCode::UpstreamTimeout,
            _ => ErrorCode::UpstreamUnavailable,
        }
    }

    /// The status a client sees when no fallback answers (503 while the circuit is open).
    pub fn status(self) -> StatusCode {
        match self {
            UpstreamFailure::CircuitOpen => StatusCode::SERVICE_UNAVAILABLE,
            other => other.code().status(),
        }
    }

    fn message(self) -> &'static str {
        match self {
            UpstreamFailure::Connect => "the upstream application could not be reached",
            UpstreamFailure::Timeout => "the upstream application did not answer in time",
            UpstreamFailure::Status5xx => "the upstream application failed",
            UpstreamFailure::CircuitOpen => {
                "the upstream application is failing; requests are paused for a moment"
            }
            UpstreamFailure::InvalidResponse => {
                "the upstream application sent a response that cannot be passed on"
            }
        }
    }
}

/// Any error a request can end in, ready to render.
#[derive(Debug, Clone, PartialEq)]
pub enum Failure {
    /// The client's request was refused.
    Rejected(Rejection),
    /// The upstream failed and no fallback applies.
    Upstream(UpstreamFailure),
    /// A bug or an I/O problem inside sitegate: what went wrong, for the log line.
    /// The client is never shown it.
    Internal(&'static str),
}

impl Failure {
    /// The code this failure is reported under.
    pub fn code(&self) -> ErrorCode {
        match self {
            Failure::Rejected(r) => r.code,
            Failure::Upstream(u) => u.code(),
            Failure::Internal(_) => ErrorCode::Internal,
        }
    }

    /// True when the connection must close after this failure's answer.
    pub fn closes_connection(&self) -> bool {
        matches!(self, Failure::Rejected(r) if r.close)
    }
}

impl From<Rejection> for Failure {
    fn from(r: Rejection) -> Self {
        Failure::Rejected(r)
    }
}

/// The most details one error body lists; the rest are counted.
pub const MAX_DETAILS: usize = 100;

#[derive(Serialize)]
struct Envelope<'a> {
    error: Body<'a>,
}

#[derive(Serialize)]
struct Body<'a> {
    code: &'static str,
    status: u16,
    message: &'a str,
    request_id: &'a str,
    #[serde(skip_serializing_if = "<[Detail]>::is_empty")]
    details: &'a [Detail],
    #[serde(skip_serializing_if = "Option::is_none")]
    more_details: Option<usize>,
}

/// Renders a failure as the JSON error of DESIGN §5. This is the only function that
/// builds an error response.
pub fn render(failure: &Failure, request_id: &str) -> Response<Bytes> {
    let (code, status, message, details, retry_after): (_, _, &str, &[Detail], _) = match failure {
        Failure::Rejected(r) => (
            r.code,
            r.code.status(),
            &r.message,
            &r.details,
            r.retry_after,
        ),
        Failure::Upstream(u) => (u.code(), u.status(), u.message(), &[], None),
        Failure::Internal(_) => (
            ErrorCode::Internal,
            StatusCode::INTERNAL_SERVER_ERROR,
            "sitegate could not handle the request",
            &[],
            None,
        ),
    };
    let shown = &details[..details.len().min(MAX_DETAILS)];
    let more = (details.len() > shown.len()).then(|| details.len() - shown.len());
    let envelope = Envelope {
        error: Body {
            code: code.as_str(),
            status: status.as_u16(),
            message,
            request_id,
            details: shown,
            more_details: more,
        },
    };
    // Serializing plain strings and integers cannot fail; an empty object is the
    // fallback that still parses as JSON.
    let body = serde_json::to_vec(&envelope).unwrap_or_else(|_| b"{}".to_vec());
    let mut resp = Response::new(Bytes::from(body));
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(id) = HeaderValue::from_str(request_id) {
        headers.insert(crate::headers::REQUEST_ID, id);
    }
    if code == ErrorCode::Unauthorized {
        headers.insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"sitegate\""),
        );
    }
    if let Some(secs) = retry_after {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_the_designed_status() {
        let table = [
            ("MALFORMED_JSON", 400),
            ("VALIDATION_FAILED", 400),
            ("INVALID_REQUEST", 400),
            ("INVALID_PATH", 400),
            ("REQUEST_TIMEOUT", 408),
            ("UNAUTHORIZED", 401),
            ("FORBIDDEN", 403),
            ("ORIGIN_NOT_ALLOWED", 403),
            ("NOT_FOUND", 404),
            ("MODEL_UNKNOWN", 409),
            ("MODEL_NOT_LOCKED", 409),
            ("MODEL_INFERENCE_DISABLED", 409),
            ("PAYLOAD_TOO_LARGE", 413),
            ("TOO_MANY_RECORDS", 413),
            ("UNSUPPORTED_MEDIA_TYPE", 415),
            ("MODEL_LOCKED", 423),
            ("RETRAIN_NOT_CONFIRMED", 428),
            ("RESOURCE_EXHAUSTED", 429),
            ("RATE_LIMITED", 429),
            ("INTERNAL", 500),
            ("UPSTREAM_UNAVAILABLE", 502),
            ("UPSTREAM_TIMEOUT", 504),
        ];
        assert_eq!(table.len(), ErrorCode::ALL.len());
        for code in ErrorCode::ALL {
            let (_, status) = table
                .iter()
                .find(|(name, _)| *name == code.as_str())
                .unwrap_or_else(|| panic!("{} missing from the table", code.as_str()));
            assert_eq!(code.status().as_u16(), *status, "{}", code.as_str());
            // The rendered body carries the same code and status.
            let resp = render(&Failure::Rejected(Rejection::new(code, "m")), "req_1");
            assert_eq!(resp.status().as_u16(), *status);
            let v: serde_json::Value = serde_json::from_slice(resp.body()).unwrap();
            assert_eq!(v["error"]["code"], code.as_str());
            assert_eq!(v["error"]["status"], *status);
        }
    }

    #[test]
    fn open_circuit_is_503_other_upstream_failures_follow_their_code() {
        assert_eq!(UpstreamFailure::CircuitOpen.status().as_u16(), 503);
        assert_eq!(UpstreamFailure::Connect.status().as_u16(), 502);
        assert_eq!(UpstreamFailure::Timeout.status().as_u16(), 504);
        assert_eq!(UpstreamFailure::Status5xx.status().as_u16(), 502);
    }

    #[test]
    fn body_has_request_id_details_and_headers() {
        let details = (0..150)
            .map(|i| Detail {
                record: Some(i),
                path: "/budget".into(),
                rule: "min".into(),
                message: "must be >= 0".into(),
            })
            .collect();
        let r = Rejection::new(ErrorCode::ValidationFailed, "150 records are invalid")
            .with_details(details);
        let resp = render(&Failure::Rejected(r), "req_3fa85f64c2b1");
        assert_eq!(resp.headers()["x-request-id"], "req_3fa85f64c2b1");
        assert_eq!(resp.headers()["content-type"], "application/json");
        let v: serde_json::Value = serde_json::from_slice(resp.body()).unwrap();
        assert_eq!(v["error"]["request_id"], "req_3fa85f64c2b1");
        assert_eq!(v["error"]["details"].as_array().unwrap().len(), MAX_DETAILS);
        assert_eq!(v["error"]["more_details"], 50);
        assert_eq!(v["error"]["details"][0]["path"], "/budget");
    }

    #[test]
    fn unauthorized_carries_www_authenticate_and_429_retry_after() {
        let resp = render(
            &Failure::Rejected(Rejection::new(ErrorCode::Unauthorized, "no key")),
            "r",
        );
        assert!(resp.headers().contains_key("www-authenticate"));
        let resp = render(
            &Failure::Rejected(
                Rejection::new(ErrorCode::ResourceExhausted, "busy").with_retry_after(2),
            ),
            "r",
        );
        assert_eq!(resp.headers()["retry-after"], "2");
    }

    #[test]
    fn internal_errors_never_show_their_cause() {
        let resp = render(&Failure::Internal("a test"), "r");
        assert_eq!(resp.status().as_u16(), 500);
        let v: serde_json::Value = serde_json::from_slice(resp.body()).unwrap();
        assert_eq!(
            v["error"]["message"],
            "sitegate could not handle the request"
        );
    }
}
