//! model_lock: the model-lock decision for routes that touch a model. The decision is
//! the pure `ModelTable::decide`; this phase gathers the request's facts, counts and
//! logs the outcome, and tells the app which version it is to serve.

use http::HeaderValue;
use http::header::HeaderName;
use serde_json::Value;

use super::ctx::Ctx;
use crate::error::{ErrorCode, Failure, Rejection};
use crate::guard::canon;
use crate::observe::Category;
use crate::observe::metrics::ModelDecisionLabels;
use crate::policy::models::{Action, ModelFacts};
use crate::policy::{Policy, Route, RouteModel, ValueSource};

/// The version an inference without one is served with.
pub const MODEL_VERSION: HeaderName = HeaderName::from_static("x-sitegate-model-version");

/// One value of the request, read the way the app will read it. A header or query
/// parameter given more than once is refused: which copy the app reads is its code's
/// business, and sitegate must decide on the same one.
fn value(
    source: &Option<ValueSource>,
    params: Option<&matchit::Params>,
    parts: &http::request::Parts,
    json: Option<&Value>,
) -> Result<Option<Value>, Rejection> {
    let Some(source) = source.as_ref() else {
        return Ok(None);
    };
    Ok(match source {
        ValueSource::Path(p) => params
            .and_then(|ps| ps.get(p))
            .map(|v| Value::String(v.to_string())),
        ValueSource::Json(pointer) => json.and_then(|j| j.pointer(pointer)).cloned(),
        ValueSource::Header(h) => {
            let mut values = parts.headers.get_all(h).iter();
            let first = values.next();
            if values.next().is_some() {
                return Err(Rejection::new(
                    ErrorCode::InvalidRequest,
                    format!("the {h} header is given more than once"),
                ));
            }
            first
                .and_then(|v| v.to_str().ok())
                .map(|v| Value::String(v.to_string()))
        }
        ValueSource::Query(q) => parts
            .uri
            .query()
            .map(|query| canon::query_value(query, q))
            .transpose()?
            .flatten()
            .map(Value::String),
    })
}

fn text(v: Option<Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s),
        other => Some(other.to_string()),
    }
}

/// The model-lock facts of a request: `path` is the decoded canonical path the route
/// matched, `json` the body when a source reads it. Pure, shared by the proxy and
/// `sitegate try`.
pub(crate) fn facts(
    route: &Route,
    model: &RouteModel,
    path: &str,
    parts: &http::request::Parts,
    json: Option<&Value>,
) -> Result<ModelFacts, Rejection> {
    // The path is matched once for every value taken from it.
    let params = route.params(path);
    let params = params.as_ref();
    Ok(ModelFacts {
        name: text(value(&model.name, params, parts, json)?),
        version: text(value(&model.version, params, parts, json)?),
        force: value(&model.force, params, parts, json)?,
        confirm: text(value(&model.confirm, params, parts, json)?),
    })
}

/// Decides; on a denial, counts it, logs it (`ai_error`) and returns the rejection.
pub(super) fn check(
    ctx: &Ctx,
    policy: &Policy,
    route: &Route,
    model: &RouteModel,
    parts: &mut http::request::Parts,
    json: Option<&Value>,
) -> Result<(), Failure> {
    let path = ctx.decoded_path.as_deref().unwrap_or(parts.uri.path());
    let facts = facts(route, model, path, parts, json)?;
    let decision = policy
        .models
        .decide(&policy.model_policy, model.action, &facts);
    let name = facts.name.clone().unwrap_or_default();
    let result = match &decision {
        Ok(_) => "allowed",
        Err(_) => "denied",
    };
    ctx.shared
        .metrics
        .model_decisions
        .get_or_create(&ModelDecisionLabels {
            // Only registered names become labels: a client must not grow the metrics.
            model: if policy.models.knows(&name) {
                name.clone()
            } else {
                "unregistered".into()
            },
            action: model.action.as_str(),
            result,
        })
        .inc();
    match decision {
        Err(rejection) => {
            tracing::warn!(
                category = Category::AiError.as_str(),
                request_id = ctx.id(),
                route = %ctx.route,
                model = %name,
                version = facts.version.as_deref().unwrap_or(""),
                action = model.action.as_str(),
                error_code = rejection.code.as_str(),
                "model policy refused the request"
            );
            Err(Failure::Rejected(rejection))
        }
        Ok(allowed) => {
            if let Some(v) = allowed
                .chosen_version
                .as_deref()
                .and_then(|v| HeaderValue::from_str(v).ok())
            {
                parts.headers.insert(MODEL_VERSION, v);
            }
            if model.action != Action::Inference {
                tracing::warn!(
                    category = Category::Audit.as_str(),
                    request_id = ctx.id(),
                    route = %ctx.route,
                    model = %name,
                    version = allowed.version.as_deref().unwrap_or(""),
                    action = model.action.as_str(),
                    caller = ctx.caller.as_deref().unwrap_or("anonymous"),
                    "model change allowed"
                );
            }
            Ok(())
        }
    }
}
