//! The request decisions that need no I/O, in the order the proxy takes them: the
//! canonical target, the route, Origin, credentials, the head limits, then (with the
//! body) validation and the model lock. The proxy calls these between its I/O steps;
//! `sitegate try` calls [`offline`], which runs the very same functions in the same
//! order, so the two cannot answer differently for the same request.

use std::sync::Arc;

use bytes::Bytes;
use http::HeaderValue;
use http::header::{CONTENT_ENCODING, CONTENT_LENGTH, HOST};
use serde_json::Value;

use super::model_lock;
use crate::error::{ErrorCode, Rejection};
use crate::guard::access;
use crate::guard::{canon, limits, validate};
use crate::policy::{Policy, Route};

/// canonicalize: refuses a method or request target the app could read differently,
/// and rewrites the target to its canonical origin form (`guard::canon`). Returns the
/// decoded path when it differs from the path now in `parts.uri`.
pub(super) fn canonicalize(
    parts: &mut http::request::Parts,
) -> Result<Option<Box<str>>, Rejection> {
    canon::method(&parts.method)?;
    let http2 = parts.version == http::Version::HTTP_2;
    let origin = canon::target(&parts.uri, &parts.headers, http2)?;
    let (sent, query) = match memchr::memchr(b'?', origin.as_bytes()) {
        Some(i) => (&origin[..i], Some(&origin[i + 1..])),
        None => (origin, None),
    };
    let canonical = canon::path(sent)?;
    // An HTTP/1.1 absolute-form target is sent on in origin form; HTTP/2 keeps its
    // :authority (the upstream call sets its own).
    let absolute_h1 = !http2 && parts.uri.authority().is_some();
    if canonical.unchanged(sent) && !absolute_h1 {
        return Ok(None);
    }
    let decoded = (canonical.path != canonical.encoded).then(|| Box::from(&*canonical.path));
    let pq = match query {
        Some(q) => format!("{}?{q}", canonical.encoded),
        None => canonical.encoded.into_owned(),
    };
    let mut uri = std::mem::take(&mut parts.uri).into_parts();
    if absolute_h1 {
        if !parts.headers.contains_key(HOST)
            && let Some(a) = uri
                .authority
                .as_ref()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        {
            parts.headers.insert(HOST, a);
        }
        uri.scheme = None;
        uri.authority = None;
    }
    uri.path_and_query = Some(
        http::uri::PathAndQuery::try_from(pq)
            .map_err(|_| Rejection::new(ErrorCode::InvalidPath, "the request path is invalid"))?,
    );
    parts.uri = http::Uri::from_parts(uri)
        .map_err(|_| Rejection::new(ErrorCode::InvalidRequest, "the request target is invalid"))?;
    Ok(decoded)
}

/// route: the first route whose method and (decoded, canonical) path match.
pub(super) fn route<'p>(
    policy: &'p Policy,
    method: &http::Method,
    path: &str,
) -> Result<&'p Route, Rejection> {
    policy
        .routes
        .find(method, path)
        .ok_or_else(|| Rejection::new(ErrorCode::NotFound, "no route serves this method and path"))
}

/// The codings of a request body sitegate reads, or 415 for one it cannot undo.
pub(super) fn content_coding(
    headers: &http::HeaderMap,
) -> Result<Vec<crate::body::Coding>, Rejection> {
    crate::body::codings(headers).map_err(|coding| {
        Rejection::new(
            ErrorCode::UnsupportedMediaType,
            format!(
                "Content-Encoding {coding:?} cannot be read; send the body plain, gzip or deflate"
            ),
        )
    })
}

/// validate: the route's body rules. Returns the body to forward (cleaned, when
/// sanitizing changed it) and how many records were dropped.
pub(super) fn validate(route: &Route, body: Bytes) -> Result<(Bytes, bool, usize), Rejection> {
    let Some(rules) = &route.body else {
        return Ok((body, false, 0));
    };
    let accepted = validate::check(&body, rules)?;
    let changed = accepted.body.is_some();
    Ok((
        accepted.body.map_or(body, Bytes::from),
        changed,
        accepted.dropped,
    ))
}

/// The body as JSON, for model-lock values read from it.
pub(super) fn model_json(route: &Route, body: Option<&Bytes>) -> Option<Value> {
    let model = route.model.as_ref()?;
    if !model.reads_body() {
        return None;
    }
    serde_json::from_slice(body?).ok()
}

/// What [`offline`] decided for an allowed request.
#[derive(Debug)]
pub struct Offline {
    /// The route that served it.
    pub route: Arc<str>,
    /// The path the app would get.
    pub path: String,
    /// The body the app would get.
    pub body: Bytes,
    /// True when sanitizing changed the body.
    pub changed: bool,
    /// Records dropped from a batch.
    pub dropped: usize,
    /// The model version the app would be told to serve, for an inference without one.
    pub model_version: Option<String>,
}

/// The proxy's decisions for one request, without a socket: what `sitegate try` runs.
/// Skips only what depends on the running process (rate limits, failed-credential
/// limits, load shedding, the memory budget).
pub fn offline(
    policy: &Policy,
    mut parts: http::request::Parts,
    body: Bytes,
) -> Result<Offline, Rejection> {
    let decoded = canonicalize(&mut parts)?;
    let path = decoded.as_deref().unwrap_or(parts.uri.path()).to_string();
    let route = route(policy, &parts.method, &path)?;
    // The proxy's access phase, with no client to count failures against.
    let offline_client = std::net::IpAddr::from([127, 0, 0, 1]);
    access::admit(
        &policy.access,
        route.auth,
        &parts.headers,
        offline_client,
        &access::NoFailureCount,
    )?;
    limits::check_head(route, &parts.headers)?;
    // What the proxy does to the head before the model lock reads it.
    crate::headers::strip_hop_by_hop(&mut parts.headers);
    crate::headers::strip_sitegate(&mut parts.headers);
    let needs_body = route.body.is_some() || route.model.as_ref().is_some_and(|m| m.reads_body());
    let (body, changed, dropped) = if needs_body {
        let codings = content_coding(&parts.headers)?;
        let body = if codings.is_empty() {
            body
        } else {
            Bytes::from(limits::decode_body(&body, &codings, route.max_body)?)
        };
        parts.headers.remove(CONTENT_ENCODING);
        let validated = validate(route, body)?;
        parts
            .headers
            .insert(CONTENT_LENGTH, HeaderValue::from(validated.0.len()));
        validated
    } else {
        (body, false, 0)
    };
    let mut model_version = None;
    if let Some(model) = &route.model {
        let json = model_json(route, Some(&body));
        let facts = model_lock::facts(route, model, &path, &parts, json.as_ref())?;
        let allowed = policy
            .models
            .decide(&policy.model_policy, model.action, &facts)?;
        model_version = allowed.chosen_version;
    }
    Ok(Offline {
        route: route.name.clone(),
        path: parts.uri.path().to_string(),
        body,
        changed,
        dropped,
        model_version,
    })
}
