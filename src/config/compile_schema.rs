//! Compiling `[schema.NAME]` sections and a route's body keys into validation rules.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use toml::Spanned;

use super::Source;
use super::diag::Diagnostic;
use super::diag::Sink;
use super::raw::{RawBatch, RawField, RawSchema, RawTypes};
use crate::guard::validate::schema::{BodyRules, Format, Kind, ObjectRule, RecordRules, Rule};
use crate::policy::Limits;

/// The deepest nesting a policy may allow (the JSON parser stops at 128 on its own).
const MAX_DEPTH: usize = 100;

/// Checks a `max_depth` value.
pub(super) fn depth(
    raw: Option<Spanned<usize>>,
    src: &Source,
    diags: &mut Vec<Diagnostic>,
) -> Option<usize> {
    let d = raw?;
    if *d.get_ref() == 0 || *d.get_ref() > MAX_DEPTH {
        diags.push(Diagnostic::at(
            &src.path,
            &src.text,
            Some(d.span()),
            format!("max_depth must be between 1 and {MAX_DEPTH}"),
        ));
        return None;
    }
    Some(d.into_inner())
}

/// Compiles every schema, reporting each problem.
pub(super) fn schemas(
    raw: Vec<(String, Spanned<RawSchema>, &Source)>,
    diags: &mut Vec<Diagnostic>,
) -> HashMap<String, ObjectRule> {
    let mut out = HashMap::new();
    for (name, schema, src) in raw {
        let mut sink = Sink {
            diags: Vec::new(),
            file: &src.path,
            text: &src.text,
        };
        let schema = schema.into_inner();
        let rule = object(schema.required, schema.additional, schema.fields, &mut sink);
        diags.extend(sink.diags);
        out.insert(name, rule);
    }
    out
}

fn object(
    required: Option<Vec<String>>,
    additional: Option<crate::guard::validate::schema::Additional>,
    fields: Option<BTreeMap<String, Spanned<RawField>>>,
    sink: &mut Sink,
) -> ObjectRule {
    ObjectRule::new(
        required.unwrap_or_default(),
        additional.unwrap_or_default(),
        fields
            .into_iter()
            .flatten()
            .map(|(k, f)| (k, field(f, sink)))
            .collect(),
    )
}

fn field(raw: Spanned<RawField>, sink: &mut Sink) -> Rule {
    let span = raw.span();
    let f = raw.into_inner();
    let mut rule = Rule::default();
    if let Some(kinds) = &f.kind {
        let names: Vec<&str> = match kinds.get_ref() {
            RawTypes::One(n) => vec![n.as_str()],
            RawTypes::Many(ns) => ns.iter().map(String::as_str).collect(),
        };
        for n in names {
            match Kind::parse(n) {
                Some(k) => rule.kinds.push(k),
                None => sink.at(
                    kinds,
                    "unknown type; use string, number, integer, boolean, object, array or null",
                ),
            }
        }
    }
    no_op_keys(&f, &rule.kinds, &span, sink);
    rule.nullable = f.nullable.unwrap_or(false);
    rule.min = f.min;
    rule.max = f.max;
    rule.min_len = f.min_len;
    rule.max_len = f.max_len;
    if let Some(p) = &f.pattern {
        match regex::Regex::new(p.get_ref()) {
            Ok(re) => rule.pattern = Some(re),
            Err(e) => sink.at(p, format!("invalid pattern: {e}")),
        }
    }
    if let Some(values) = f.allowed {
        let converted: Result<Vec<serde_json::Value>, _> =
            values.into_iter().map(serde_json::to_value).collect();
        match converted {
            Ok(v) => rule.allowed = Some(v),
            Err(_) => sink.diags.push(Diagnostic::at(
                sink.file,
                sink.text,
                Some(span.clone()),
                "enum values must be plain values",
            )),
        }
    }
    if let Some(fmt) = &f.format {
        match Format::parse(fmt.get_ref()) {
            Some(x) => rule.format = Some(x),
            None => sink.at(fmt, "unknown format; use date-time, date, email or uuid"),
        }
    }
    rule.trim = f.trim.unwrap_or(false);
    rule.coerce = f.coerce.unwrap_or(false);
    if f.fields.is_some() || f.required.is_some() || f.additional.is_some() {
        rule.object = Some(object(f.required, f.additional, f.fields, sink));
    }
    rule.items = f.items.map(|i| Box::new(field(*i, sink)));
    rule.min_items = f.min_items;
    rule.max_items = f.max_items;
    rule
}

/// A key that cannot apply to any type the field allows would do nothing: the author
/// meant something else (`min` on a string, a length on a number), so it is an error.
fn no_op_keys(f: &RawField, kinds: &[Kind], span: &std::ops::Range<usize>, sink: &mut Sink) {
    let allows = |wanted: &[Kind]| kinds.is_empty() || kinds.iter().any(|k| wanted.contains(k));
    let numbers = [Kind::Number, Kind::Integer];
    let checks: [(&str, bool, &[Kind], &str); 13] = [
        ("min", f.min.is_some(), &numbers, "number or integer"),
        ("max", f.max.is_some(), &numbers, "number or integer"),
        ("min_len", f.min_len.is_some(), &[Kind::String], "string"),
        ("max_len", f.max_len.is_some(), &[Kind::String], "string"),
        ("pattern", f.pattern.is_some(), &[Kind::String], "string"),
        ("format", f.format.is_some(), &[Kind::String], "string"),
        ("trim", f.trim == Some(true), &[Kind::String], "string"),
        ("fields", f.fields.is_some(), &[Kind::Object], "object"),
        ("required", f.required.is_some(), &[Kind::Object], "object"),
        (
            "additional",
            f.additional.is_some(),
            &[Kind::Object],
            "object",
        ),
        ("items", f.items.is_some(), &[Kind::Array], "array"),
        ("min_items", f.min_items.is_some(), &[Kind::Array], "array"),
        ("max_items", f.max_items.is_some(), &[Kind::Array], "array"),
    ];
    let mut say = |message: String| {
        sink.diags.push(Diagnostic::at(
            sink.file,
            sink.text,
            Some(span.clone()),
            message,
        ))
    };
    for (key, set, wanted, what) in checks {
        if set && !allows(wanted) {
            say(format!(
                "`{key}` applies to a {what} and this field's type allows none: it would do nothing"
            ));
        }
    }
    // `coerce` turns a numeric string into a number: it needs a number type and no
    // string type (a string would be accepted as it is).
    let coerces = kinds.iter().any(|k| numbers.contains(k)) && !kinds.contains(&Kind::String);
    if f.coerce == Some(true) && !coerces {
        say(
            "`coerce` needs a number or integer type and no string type: it would do nothing"
                .into(),
        );
    }
    if f.nullable == Some(true) && (kinds.is_empty() || kinds.contains(&Kind::Null)) {
        say("`nullable` does nothing when the type already allows null (no `type`, or \"null\" listed)".into());
    }
}

/// Compiles a route's `schema_file` (draft 2020-12 unless its `$schema` names draft 7
/// or another draft). `None` when it cannot be used; the reason is reported.
pub(super) fn json_schema(
    file: &Spanned<String>,
    src: &Source,
    data: &HashMap<&Path, &Source>,
    sink: &mut Sink,
) -> Option<Arc<jsonschema::Validator>> {
    let path = super::compile_route::resolve(&src.path, file.get_ref());
    // read_sources already reported a file it could not read.
    let text = &data.get(path.as_path())?.text;
    let schema: serde_json::Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            sink.at(file, format!("{} is not valid JSON ({e})", path.display()));
            return None;
        }
    };
    // Formats (date-time, email, uuid, ...) are checked, as `[schema]` rules check them;
    // references stay inside the file (no network, no other files).
    match jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
    {
        Ok(v) => Some(Arc::new(v)),
        Err(e) => {
            // The schema's own text is not quoted: only where in it the problem is.
            sink.at(
                file,
                format!(
                    "{} is not a usable JSON Schema: `{}` at {}",
                    path.display(),
                    e.kind().keyword(),
                    match e.schema_path().to_string() {
                        p if p.is_empty() => "the top".to_string(),
                        p => p,
                    }
                ),
            );
            None
        }
    }
}

/// A route's body keys.
pub(super) struct RouteBody {
    pub schema: Option<Spanned<String>>,
    /// The compiled JSON Schema (None when it failed) and the key as written.
    pub schema_file: Option<(Option<Arc<jsonschema::Validator>>, Spanned<String>)>,
    pub sanitize: Option<bool>,
    pub batch: Option<Spanned<RawBatch>>,
    pub max_records: Option<usize>,
    pub max_depth: Option<Spanned<usize>>,
    pub max_string: Option<usize>,
}

/// The route's body rules, when it names a schema.
pub(super) fn body_rules(
    raw: RouteBody,
    schemas: &HashMap<String, ObjectRule>,
    limits: &Limits,
    sink: &mut Sink,
) -> Option<BodyRules> {
    let (schema_name, record) = match (raw.schema, raw.schema_file) {
        (Some(_), Some((_, file))) => {
            sink.at(&file, "a route takes `schema` or `schema_file`, not both");
            return None;
        }
        (None, None) => {
            if let Some(b) = &raw.batch {
                sink.at(
                    b,
                    "`batch` needs a `schema` or `schema_file` to check the records against",
                );
            }
            return None;
        }
        (None, Some((compiled, file))) => {
            if raw.sanitize == Some(true) {
                sink.at(
                    &file,
                    "`sanitize` needs `schema` rules (trim, coerce); a JSON Schema file is checked as is",
                );
            }
            (file.get_ref().clone(), RecordRules::JsonSchema(compiled?))
        }
        (Some(name), None) => {
            let Some(record) = schemas.get(name.get_ref()) else {
                sink.at(&name, format!("no [schema.{}] is defined", name.get_ref()));
                return None;
            };
            (name.get_ref().clone(), RecordRules::Fields(record.clone()))
        }
    };
    let max_depth = match raw.max_depth {
        Some(d) if *d.get_ref() == 0 || *d.get_ref() > MAX_DEPTH => {
            sink.at(&d, format!("max_depth must be between 1 and {MAX_DEPTH}"));
            limits.max_depth
        }
        Some(d) => d.into_inner(),
        None => limits.max_depth,
    };
    let mut rules = BodyRules {
        schema_name,
        record,
        sanitize: raw.sanitize.unwrap_or(false),
        batch_path: None,
        drop_invalid: false,
        max_records: raw.max_records.unwrap_or(limits.max_records),
        max_depth,
        max_string: raw.max_string.unwrap_or(limits.max_string),
    };
    if let Some(batch) = raw.batch {
        let batch = batch.into_inner();
        if let Some(n) = batch.max_records {
            rules.max_records = n;
        }
        if let Some(on) = &batch.on_invalid {
            match on.get_ref().as_str() {
                "reject" => {}
                "drop" => rules.drop_invalid = true,
                _ => sink.at(on, "on_invalid must be \"reject\" or \"drop\""),
            }
        }
        if let Some(path) = batch.path {
            if path.get_ref().starts_with('/') {
                rules.batch_path = Some(path.into_inner());
            } else {
                sink.at(
                    &path,
                    "batch.path is a JSON Pointer: it starts with '/' (like \"/records\")",
                );
            }
        }
    }
    Some(rules)
}

/// `[[model]]` entries: a version may be listed once.
pub(super) fn models(
    raw: Vec<(Spanned<crate::config::raw::RawModel>, &Source)>,
    diags: &mut Vec<Diagnostic>,
) -> crate::policy::models::ModelTable {
    let mut out: Vec<crate::policy::models::ModelVersion> = Vec::new();
    for (m, src) in raw {
        let m = m.into_inner();
        if out
            .iter()
            .any(|x| x.name == *m.name.get_ref() && x.version == *m.version.get_ref())
        {
            diags.push(Diagnostic::at(
                &src.path,
                &src.text,
                Some(m.version.span()),
                format!(
                    "model {}@{} is listed twice",
                    m.name.get_ref(),
                    m.version.get_ref()
                ),
            ));
            continue;
        }
        out.push(crate::policy::models::ModelVersion {
            name: m.name.into_inner(),
            version: m.version.into_inner(),
            locked: m.locked.unwrap_or(false),
            inference: m.inference.unwrap_or(true),
            retrain: m.retrain.unwrap_or(true),
        });
    }
    crate::policy::models::ModelTable::new(out)
}

/// A route's `model = { ... }`; `pattern` is the route's path, for `path:` sources.
pub(super) fn route_model(
    raw: Spanned<crate::config::raw::RawRouteModel>,
    pattern: &str,
    sink: &mut Sink,
) -> Option<crate::policy::RouteModel> {
    use crate::policy::ValueSource;
    let raw = raw.into_inner();
    let before = sink.diags.len();
    let action = crate::policy::models::Action::parse(raw.action.get_ref());
    if action.is_none() {
        sink.at(
            &raw.action,
            "unknown action; use inference, retrain, register or unlock",
        );
    }
    // The force flag is read for retraining only, the confirmation for unlocking only.
    use crate::policy::models::Action;
    if let (Some(f), Some(a)) = (&raw.force, action)
        && a != Action::Retrain
    {
        sink.at(
            f,
            "`force` is read for action \"retrain\" only: it would do nothing here",
        );
    }
    if let (Some(c), Some(a)) = (&raw.confirm, action)
        && a != Action::Unlock
    {
        sink.at(
            c,
            "`confirm` is read for action \"unlock\" only: it would do nothing here",
        );
    }
    let mut source = |s: Option<Spanned<String>>| -> Option<ValueSource> {
        let s = s?;
        let (kind, what) = s.get_ref().split_once(':').unwrap_or(("", ""));
        let parsed = match (kind, what) {
            ("path", p) if crate::policy::Route::has_param(pattern, p) => {
                Some(ValueSource::Path(p.to_string()))
            }
            ("path", _) => {
                sink.at(&s, "the route's path has no such parameter");
                return None;
            }
            ("json", p) if p.starts_with('/') => Some(ValueSource::Json(p.to_string())),
            ("header", h) => http::HeaderName::from_bytes(h.as_bytes())
                .ok()
                .map(ValueSource::Header),
            ("query", q) if !q.is_empty() => Some(ValueSource::Query(q.to_string())),
            _ => None,
        };
        if parsed.is_none() {
            sink.at(
                &s,
                "a source is path:PARAM, json:/pointer, header:Name or query:name",
            );
        }
        parsed
    };
    let name = source(raw.name);
    let version = source(raw.version);
    let force = source(raw.force);
    let confirm = source(raw.confirm);
    if sink.diags.len() > before {
        return None;
    }
    Some(crate::policy::RouteModel {
        action: action?,
        name,
        version,
        force,
        confirm,
    })
}

/// `[access]`: the key file (read as a data source) and the Origin settings.
pub(super) fn access(
    raw: Option<(crate::config::raw::RawAccess, &Source)>,
    data: &HashMap<&std::path::Path, &Source>,
    diags: &mut Vec<Diagnostic>,
) -> crate::guard::access::AccessPolicy {
    use crate::guard::access::{AccessPolicy, parse_key_file};
    let mut out = AccessPolicy::default();
    let Some((raw, src)) = raw else { return out };
    if let (Some(h), None) = (&raw.api_key_header, &raw.api_keys_file) {
        diags.push(Diagnostic::at(
            &src.path,
            &src.text,
            Some(h.span()),
            "`api_key_header` names where keys are read, but no `api_keys_file` holds any: it would do nothing",
        ));
    }
    if raw.allowed_origins.is_none()
        && (raw.cors_methods.is_some() || raw.cors_headers.is_some() || raw.cors_max_age.is_some())
    {
        diags.push(Diagnostic::file(
            &src.path,
            "[access] cors_methods, cors_headers and cors_max_age answer preflights for `allowed_origins`, which is not set: they would do nothing",
        ));
    }
    if let Some(h) = raw.api_key_header {
        match http::HeaderName::from_bytes(h.get_ref().as_bytes()) {
            Ok(name) => out.api_key_header = name,
            Err(_) => diags.push(Diagnostic::at(
                &src.path,
                &src.text,
                Some(h.span()),
                "not a valid header name",
            )),
        }
    }
    if let Some(file) = raw.api_keys_file {
        let path = super::compile_route::resolve(&src.path, file.get_ref());
        if let Some(text) = data.get(path.as_path()) {
            match parse_key_file(&text.text) {
                Ok(keys) => out.keys = keys,
                Err((line, message)) => diags.push(Diagnostic {
                    file: path.clone(),
                    line,
                    col: 1,
                    message: message.into(),
                }),
            }
        }
    }
    out.allowed_origins = raw.allowed_origins;
    if let Some(m) = raw.cors_methods {
        out.cors_methods = m.join(", ");
    }
    if let Some(h) = raw.cors_headers {
        out.cors_headers = h.join(", ");
    }
    if let Some(a) = raw.cors_max_age {
        out.cors_max_age = a.0.as_secs();
    }
    if let Some(j) = raw.jwt {
        out.jwt = jwt(j, src, data, diags);
    }
    if let Some(r) = raw.failed_auth_limit {
        let (span, r) = (r.span(), r.into_inner());
        if let Some(b) = bucket(
            r.per_minute,
            r.burst,
            span,
            src,
            diags,
            "failed_auth_limit.per_minute and burst must be at least 1 (failed credentials are always limited)",
        ) {
            out.failed_auth_limit = b;
        }
    }
    if let Some(r) = raw.rate_limit {
        let (span, r) = (r.span(), r.into_inner());
        out.rate_limit = bucket(
            r.per_second,
            r.burst,
            span,
            src,
            diags,
            "rate_limit.per_second and burst must be at least 1",
        );
    }
    out
}

/// A token bucket's rate and burst (the burst defaults to the rate); both at least 1.
fn bucket(
    rate: u32,
    burst: Option<u32>,
    span: std::ops::Range<usize>,
    src: &Source,
    diags: &mut Vec<Diagnostic>,
    message: &str,
) -> Option<(std::num::NonZeroU32, std::num::NonZeroU32)> {
    use std::num::NonZeroU32;
    let both = NonZeroU32::new(rate).zip(NonZeroU32::new(burst.unwrap_or(rate)));
    if both.is_none() {
        diags.push(Diagnostic::at(&src.path, &src.text, Some(span), message));
    }
    both
}

/// A route's `auth`.
pub(super) fn auth(raw: Option<Spanned<String>>, sink: &mut Sink) -> crate::guard::access::Auth {
    use crate::guard::access::Auth;
    let Some(a) = raw else { return Auth::None };
    match a.get_ref().as_str() {
        "none" => Auth::None,
        "api_key" => Auth::ApiKey,
        // Refused rather than accepted and ignored: a route that asks for JWT must
        // not quietly let everyone in.
        "jwt" => Auth::Jwt,
        "any" => Auth::Any,
        _ => {
            // Refused, not defaulted: a typo must not open a route.
            sink.at(&a, "auth must be none, api_key, jwt or any");
            Auth::ApiKey
        }
    }
}

fn jwt(
    raw: Spanned<crate::config::raw::RawJwt>,
    src: &Source,
    data: &HashMap<&std::path::Path, &Source>,
    diags: &mut Vec<Diagnostic>,
) -> Option<crate::guard::access::JwtPolicy> {
    use jsonwebtoken::{Algorithm, DecodingKey};
    let span = raw.span();
    let raw = raw.into_inner();
    let mut err = |span: std::ops::Range<usize>, msg: String| {
        diags.push(Diagnostic::at(&src.path, &src.text, Some(span), msg));
    };
    let mut algorithms = Vec::new();
    for a in &raw.algorithms {
        match a.get_ref().as_str() {
            "HS256" => algorithms.push(Algorithm::HS256),
            "HS384" => algorithms.push(Algorithm::HS384),
            "HS512" => algorithms.push(Algorithm::HS512),
            "RS256" => algorithms.push(Algorithm::RS256),
            "ES256" => algorithms.push(Algorithm::ES256),
            _ => err(
                a.span(),
                "unsupported algorithm; use HS256, HS384, HS512, RS256 or ES256 (never none)"
                    .into(),
            ),
        }
    }
    if algorithms.is_empty() {
        err(
            span,
            "jwt.algorithms must name at least one algorithm".into(),
        );
        return None;
    }
    let hmac = algorithms
        .iter()
        .all(|a| matches!(a, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512));
    let public =
        algorithms.len() == 1 && matches!(algorithms[0], Algorithm::RS256 | Algorithm::ES256);
    // One key kind for all algorithms: mixing them is how algorithm confusion starts.
    use crate::guard::access::JwtKey;
    if let Some(file) = &raw.jwks_file {
        if raw.secret_env.is_some() || raw.secret_file.is_some() || raw.public_key_file.is_some() {
            err(
                span,
                "jwks_file replaces secret_env, secret_file and public_key_file: give one".into(),
            );
            return None;
        }
        let path = super::compile_route::resolve(&src.path, file.get_ref());
        let text = &data.get(path.as_path())?.text;
        let set: jsonwebtoken::jwk::JwkSet = match serde_json::from_str(text) {
            Ok(s) => s,
            Err(_) => {
                err(
                    file.span(),
                    "the JWKS file is not a JSON Web Key Set".into(),
                );
                return None;
            }
        };
        let mut keys = Vec::new();
        for jwk in &set.keys {
            match (&jwk.common.key_id, DecodingKey::from_jwk(jwk)) {
                (Some(kid), Ok(k)) => keys.push((kid.clone(), k)),
                _ => {
                    err(
                        file.span(),
                        "every key of the JWKS needs a kid and a supported key type".into(),
                    );
                    return None;
                }
            }
        }
        return Some(crate::guard::access::JwtPolicy {
            key: JwtKey::Set(keys),
            validation: validation(algorithms, &raw),
        });
    }
    let key = match (&raw.secret_env, &raw.secret_file, &raw.public_key_file) {
        (Some(var), None, None) if hmac => {
            let path = std::path::PathBuf::from(format!("env:{}", var.get_ref()));
            match data.get(path.as_path()) {
                Some(s) if s.text.len() >= 32 => DecodingKey::from_secret(s.text.as_bytes()),
                Some(_) => {
                    err(
                        var.span(),
                        "the JWT secret must be at least 32 bytes".into(),
                    );
                    return None;
                }
                None => {
                    err(
                        var.span(),
                        format!("the environment variable {} is not set", var.get_ref()),
                    );
                    return None;
                }
            }
        }
        (None, Some(file), None) if hmac => {
            let path = super::compile_route::resolve(&src.path, file.get_ref());
            let text = data.get(path.as_path())?.text.trim_end().to_string();
            if text.len() < 32 {
                err(
                    file.span(),
                    "the JWT secret must be at least 32 bytes".into(),
                );
                return None;
            }
            DecodingKey::from_secret(text.as_bytes())
        }
        (None, None, Some(file)) if public => {
            let path = super::compile_route::resolve(&src.path, file.get_ref());
            let pem = data.get(path.as_path())?.text.as_bytes().to_vec();
            let key = if algorithms[0] == Algorithm::RS256 {
                DecodingKey::from_rsa_pem(&pem)
            } else {
                DecodingKey::from_ec_pem(&pem)
            };
            match key {
                Ok(k) => k,
                Err(_) => {
                    err(
                        file.span(),
                        "the public key file is not a PEM key for that algorithm".into(),
                    );
                    return None;
                }
            }
        }
        _ => {
            err(
                span,
                "jwt needs secret_env or secret_file with HS algorithms, or public_key_file with one of RS256, ES256".into(),
            );
            return None;
        }
    };
    Some(crate::guard::access::JwtPolicy {
        key: JwtKey::Single(key),
        validation: validation(algorithms, &raw),
    })
}

fn validation(
    algorithms: Vec<jsonwebtoken::Algorithm>,
    raw: &crate::config::raw::RawJwt,
) -> jsonwebtoken::Validation {
    let mut validation = jsonwebtoken::Validation::new(algorithms[0]);
    validation.algorithms = algorithms;
    validation.leeway = raw.leeway.map_or(30, |d| d.0.as_secs());
    validation.validate_nbf = true;
    // A configured issuer or audience is required of every token, not only checked
    // when the token happens to carry the claim: a token without `iss` must not pass a
    // policy that names one.
    let mut required = vec!["exp"];
    if let Some(iss) = &raw.issuer {
        validation.set_issuer(&[iss]);
        required.push("iss");
    }
    match &raw.audience {
        Some(aud) => {
            validation.set_audience(&[aud]);
            required.push("aud");
        }
        None => validation.validate_aud = false,
    }
    validation.set_required_spec_claims(&required);
    validation
}

/// Merges the app's JSON model registry under the `[[model]]` entries: a list (or a
/// map of lists or objects) of `{name, version, locked, inference, retrain}`. The TOML
/// wins where both list a version; a disagreement is a warning, not an error.
pub(super) fn merge_registry(
    models: &mut crate::policy::models::ModelTable,
    file: &Spanned<String>,
    src: &Source,
    data: &HashMap<&std::path::Path, &Source>,
    diags: &mut Vec<Diagnostic>,
    warnings: &mut Vec<String>,
) {
    #[derive(serde::Deserialize)]
    struct Entry {
        name: String,
        version: String,
        #[serde(default)]
        locked: bool,
        inference: Option<bool>,
        retrain: Option<bool>,
    }
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Item {
        One(Entry),
        Many(Vec<Entry>),
    }
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Registry {
        List(Vec<Entry>),
        Map(BTreeMap<String, Item>),
    }
    let path = super::compile_route::resolve(&src.path, file.get_ref());
    // read_sources reported a file it could not read.
    let Some(text) = data.get(path.as_path()) else {
        return;
    };
    let entries = match serde_json::from_str::<Registry>(&text.text) {
        Ok(Registry::List(v)) => v,
        Ok(Registry::Map(m)) => m
            .into_values()
            .flat_map(|i| match i {
                Item::One(e) => vec![e],
                Item::Many(v) => v,
            })
            .collect(),
        Err(e) => {
            diags.push(Diagnostic {
                file: path.clone(),
                line: e.line(),
                col: e.column(),
                message: "not a model registry: a JSON list (or map) of {name, version, locked}"
                    .into(),
            });
            return;
        }
    };
    for e in entries {
        let v = crate::policy::models::ModelVersion {
            name: e.name,
            version: e.version,
            locked: e.locked,
            inference: e.inference.unwrap_or(true),
            retrain: e.retrain.unwrap_or(true),
        };
        if let Some(toml) = models.add_under(v.clone()) {
            warnings.push(format!(
                "{}: {}@{}: the registry says locked = {}, inference = {}; the [[model]] entry (locked = {}, inference = {}) wins",
                path.display(),
                v.name,
                v.version,
                v.locked,
                v.inference,
                toml.locked,
                toml.inference,
            ));
        }
    }
}

/// `[audit]`
pub(super) fn audit(
    raw: Option<(crate::config::raw::RawAudit, &Source)>,
    diags: &mut Vec<Diagnostic>,
) -> crate::policy::AuditSettings {
    let Some((raw, src)) = raw else {
        return Default::default();
    };
    let mut paths = Vec::new();
    for (p, mode) in raw.paths {
        match u32::from_str_radix(mode.get_ref().trim_start_matches("0o"), 8) {
            Ok(m) if m <= 0o7777 => paths.push((super::compile_route::resolve(&src.path, &p), m)),
            _ => diags.push(Diagnostic::at(
                &src.path,
                &src.text,
                Some(mode.span()),
                "a mode is octal, like \"0755\"",
            )),
        }
    }
    crate::policy::AuditSettings {
        required_env: raw.required_env,
        sensitive_env: raw.sensitive_env,
        expect_env: raw.expect_env.into_iter().collect(),
        forbid_truthy_env: raw.forbid_truthy_env,
        paths,
    }
}
