//! Compiling the upstream-failure parts of a policy: route fallbacks, failure
//! statuses, retries, the circuit breaker and the retry budget.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use toml::Spanned;

use super::Source;
use super::diag::Diagnostic;
use super::diag::Sink;
use super::raw::{RawCircuit, RawFallback, RawRetry, RawRetryBudget, RawRetryOn};
use crate::error::UpstreamFailure;
use crate::fallback::Fallback;
use crate::policy::{CircuitSettings, RetryBudgetSettings, RetryPolicy, StatusSet};

/// Where a file named in a policy file lives: relative paths are relative to the
/// policy file that names them.
pub(crate) fn resolve(policy_file: &Path, name: &str) -> PathBuf {
    policy_file.parent().unwrap_or(Path::new("")).join(name)
}

fn valid_status(s: u16) -> bool {
    (100..=599).contains(&s)
}

/// `fallback = { file | body, status, on, headers }`
pub(super) fn fallback(
    raw: Spanned<RawFallback>,
    src: &Source,
    data: &HashMap<&Path, &Source>,
    sink: &mut Sink,
) -> Option<Fallback> {
    let span = raw.span();
    let raw = raw.into_inner();
    let before = sink.diags.len();
    let body = match (&raw.file, &raw.body) {
        (Some(file), None) => {
            let path = resolve(&src.path, file.get_ref());
            match data.get(path.as_path()) {
                Some(text) => {
                    if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(&text.text) {
                        sink.at(
                            file,
                            format!("fallback file {} is not valid JSON ({e})", path.display()),
                        );
                    }
                    Some(text.text.clone())
                }
                // read_sources already reported why it could not be read.
                None => None,
            }
        }
        (None, Some(body)) => {
            if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(body.get_ref()) {
                sink.at(body, format!("fallback body is not valid JSON ({e})"));
            }
            Some(body.get_ref().clone())
        }
        _ => {
            sink.diags.push(Diagnostic::at(
                &src.path,
                &src.text,
                Some(span),
                "a fallback needs exactly one of `file` (a JSON file) or `body` (JSON text)",
            ));
            None
        }
    };
    let status = match raw.status {
        Some(s) if valid_status(*s.get_ref()) => StatusCode::from_u16(*s.get_ref()).ok(),
        Some(s) => {
            sink.at(&s, "fallback status must be between 100 and 599");
            None
        }
        None => Some(StatusCode::OK),
    };
    let mut on = Vec::new();
    match raw.on {
        None => on.extend(UpstreamFailure::ALL),
        Some(list) => {
            for item in &list {
                match UpstreamFailure::parse(item.get_ref()) {
                    Some(f) => on.push(f),
                    None => sink.at(
                        item,
                        "unknown failure; use connect, timeout, 5xx, circuit-open or invalid-response",
                    ),
                }
            }
        }
    }
    let mut headers = HeaderMap::new();
    for (name, value) in raw.headers.iter().flatten() {
        match (
            HeaderName::try_from(name.as_str()),
            HeaderValue::try_from(value.get_ref().as_str()),
        ) {
            (Ok(n), Ok(v)) => {
                headers.insert(n, v);
            }
            _ => sink.at(value, "invalid header name or value"),
        }
    }
    if sink.diags.len() > before {
        return None;
    }
    Some(Fallback::new(status?, &on, headers, &body?))
}

/// `failure_statuses = [500, 502, ...]`
pub(super) fn statuses(list: &[Spanned<u16>], sink: &mut Sink) -> StatusSet {
    for s in list.iter().filter(|s| !valid_status(*s.get_ref())) {
        sink.at(s, "a status must be between 100 and 599");
    }
    list.iter()
        .map(|s| *s.get_ref())
        .filter(|s| valid_status(*s))
        .collect()
}

/// `retry = { attempts, on, non_idempotent, max_body }`
pub(super) fn retry(raw: Spanned<RawRetry>, sink: &mut Sink) -> Option<RetryPolicy> {
    let raw = raw.into_inner();
    let before = sink.diags.len();
    if !(1..=5).contains(raw.attempts.get_ref()) {
        sink.at(
            &raw.attempts,
            "retry.attempts (extra attempts after the first) must be 1 to 5",
        );
    }
    let mut on_connect = raw.on.is_none();
    let mut statuses = Vec::new();
    for item in raw.on.iter().flatten() {
        match item.get_ref() {
            RawRetryOn::Reason(r) if r == "connect" => on_connect = true,
            RawRetryOn::Reason(_) => sink.at(
                item,
                "only `connect` failures and status codes are retried (a timeout may mean the app is still working)",
            ),
            RawRetryOn::Status(s) if valid_status(*s) => statuses.push(*s),
            RawRetryOn::Status(_) => sink.at(item, "a status must be between 100 and 599"),
        }
    }
    (sink.diags.len() == before).then(|| RetryPolicy {
        attempts: *raw.attempts.get_ref(),
        on_connect,
        statuses: statuses.into_iter().collect(),
        non_idempotent: raw.non_idempotent.unwrap_or(false),
        max_body: raw.max_body.map_or(64 * 1024, |s| s.0),
    })
}

/// `[upstream.circuit]`
pub(super) fn circuit(
    raw: RawCircuit,
    src: Option<&Source>,
    diags: &mut Vec<Diagnostic>,
) -> CircuitSettings {
    let open_for = raw.open_for.map_or(Duration::from_secs(10), |d| d.0);
    let max_open_for = raw.max_open_for.map_or(Duration::from_secs(300), |d| d.0);
    if let (Some(src), true) = (src, max_open_for < open_for) {
        diags.push(Diagnostic::file(
            &src.path,
            "[upstream.circuit] max_open_for must be at least open_for",
        ));
    }
    CircuitSettings {
        consecutive_failures: raw.consecutive_failures.map_or(5, Spanned::into_inner),
        open_for,
        max_open_for,
    }
}

/// `[upstream.retry_budget]`
pub(super) fn retry_budget(
    raw: RawRetryBudget,
    src: Option<&Source>,
    diags: &mut Vec<Diagnostic>,
) -> RetryBudgetSettings {
    let percent = match (raw.percent, src) {
        (Some(p), Some(src)) if !(0.0..=1000.0).contains(p.get_ref()) => {
            diags.push(Diagnostic::at(
                &src.path,
                &src.text,
                Some(p.span()),
                "retry_budget.percent must be between 0 and 1000",
            ));
            20.0
        }
        (p, _) => p.map_or(20.0, Spanned::into_inner),
    };
    RetryBudgetSettings {
        percent,
        min_per_second: raw.min_per_second.unwrap_or(10),
    }
}
