//! Raw policy files → checked, immutable `Policy`. Pure: it takes the files' text as
//! values and touches neither disk nor clock. Every problem is collected, each with its
//! file, line and column, before the load fails.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http::Method;
use sha2::{Digest, Sha256};
use toml::Spanned;

use super::diag::{Diagnostic, Diagnostics, Sink};
use super::raw::{
    RawFile, RawLimits, RawLogging, RawRedaction, RawResources, RawRoute, RawSchema, RawServer,
    RawUnmatched, RawUpstream, UnmatchedAction,
};
use super::{Source, SourceKind, compile_redaction, compile_route, compile_schema};
use crate::policy::UNMATCHED;
use crate::policy::{
    Limits, LoggingSettings, Policy, RedactionPolicy, Route, RouteTable, ServerSettings,
    UpstreamSettings,
};

use crate::policy::DEFAULT_MAX_BODY;
const DEFAULT_MAX_INFLIGHT: usize = 1024;
const DEFAULT_BUFFER_BUDGET: u64 = 256 << 20;

/// Drops the value serde quotes in a type error (`invalid type: string "…", expected
/// …`): a diagnostic names the place, never the text, which may be a pasted secret.
fn scrub(message: &str) -> String {
    for kind in ["invalid type: string \"", "invalid value: string \""] {
        if let Some(rest) = message.strip_prefix(kind) {
            let head = &kind[..kind.len() - 2];
            return match rest.rfind("\", expected") {
                Some(i) => format!("{head}{}", &rest[i + 1..]),
                None => head.to_string(),
            };
        }
    }
    message.to_string()
}

/// Takes a single section (`[server]`, ...) from one file; a second file defining it is
/// an error at the second definition.
fn claim<'s, T>(
    slot: &mut Option<(T, &'s Source)>,
    found: Option<Spanned<T>>,
    name: &str,
    src: &'s Source,
    sink: &mut Sink,
) {
    let Some(found) = found else { return };
    if let Some((_, first)) = slot {
        sink.diags.push(Diagnostic::at(
            &src.path,
            &src.text,
            Some(found.span()),
            format!("[{name}] is already defined in {}", first.path.display()),
        ));
    } else {
        *slot = Some((found.into_inner(), src));
    }
}

/// Compiles the policy from its files, main file first.
pub fn compile(sources: &[Source]) -> Result<Policy, Diagnostics> {
    let mut diags = Vec::new();
    let mut parsed: Vec<(&Source, RawFile)> = Vec::new();
    let data: HashMap<&Path, &Source> = sources
        .iter()
        .filter(|s| s.kind != SourceKind::Policy)
        .map(|s| (s.path.as_path(), s))
        .collect();
    for src in sources.iter().filter(|s| s.kind == SourceKind::Policy) {
        match toml::from_str::<RawFile>(&src.text) {
            Ok(raw) => parsed.push((src, raw)),
            // The message of a toml error never quotes the input; its Display would.
            Err(e) => diags.push(Diagnostic::at(
                &src.path,
                &src.text,
                e.span(),
                scrub(e.message()),
            )),
        }
    }

    // Single sections: at most one file may define each.
    let mut server: Option<(RawServer, &Source)> = None;
    let mut upstream: Option<(RawUpstream, &Source)> = None;
    let mut limits: Option<(RawLimits, &Source)> = None;
    let mut logging: Option<(RawLogging, &Source)> = None;
    let mut unmatched: Option<(RawUnmatched, &Source)> = None;
    let mut redaction: Option<(RawRedaction, &Source)> = None;
    let mut resources: Option<(RawResources, &Source)> = None;
    let mut schemas: Vec<(String, Spanned<RawSchema>, &Source)> = Vec::new();
    let mut models = Vec::new();
    let mut model_policy: Option<(crate::config::raw::RawModelPolicy, &Source)> = None;
    let mut access: Option<(crate::config::raw::RawAccess, &Source)> = None;
    let mut audit: Option<(crate::config::raw::RawAudit, &Source)> = None;
    let mut routes: Vec<(Spanned<RawRoute>, &Source)> = Vec::new();

    for (src, raw) in parsed {
        let mut sink = Sink {
            diags: Vec::new(),
            file: &src.path,
            text: &src.text,
        };
        if !std::ptr::eq(src, &sources[0])
            && let Some(inc) = raw.include.as_ref().and_then(|v| v.first())
        {
            sink.at(inc, "`include` is only allowed in the main policy file");
        }
        claim(&mut server, raw.server, "server", src, &mut sink);
        claim(&mut upstream, raw.upstream, "upstream", src, &mut sink);
        claim(&mut limits, raw.limits, "limits", src, &mut sink);
        claim(&mut logging, raw.logging, "logging", src, &mut sink);
        claim(&mut unmatched, raw.unmatched, "unmatched", src, &mut sink);
        claim(&mut redaction, raw.redaction, "redaction", src, &mut sink);
        claim(&mut resources, raw.resources, "resources", src, &mut sink);
        models.extend(raw.model.into_iter().map(|m| (m, src)));
        claim(
            &mut model_policy,
            raw.model_policy,
            "model_policy",
            src,
            &mut sink,
        );
        claim(&mut access, raw.access, "access", src, &mut sink);
        claim(&mut audit, raw.audit, "audit", src, &mut sink);
        for (name, schema) in raw.schema.into_iter().flatten() {
            if schemas.iter().any(|(n, _, _)| *n == name) {
                sink.at(&schema, format!("[schema.{name}] is defined twice"));
            } else {
                schemas.push((name, schema, src));
            }
        }
        routes.extend(raw.route.into_iter().map(|r| (r, src)));
        diags.extend(sink.diags);
    }
    let unmatched = unmatched.map(|(u, _)| u.action).unwrap_or_default();

    let admin_token_file = server.as_ref().and_then(|(raw, src)| {
        let f = raw.admin_token_file.as_ref()?;
        Some(compile_route::resolve(&src.path, f.get_ref()))
    });
    let server = compile_server(server, &data, &mut diags);
    let upstream = compile_upstream(upstream, &mut diags);
    let limits = compile_limits(limits, &mut diags);
    let logging = compile_logging(logging, &mut diags);
    let redaction = compile_redaction::redaction(redaction, &mut diags);
    let schemas = compile_schema::schemas(schemas, &mut diags);
    let ctx = RouteContext {
        limits: &limits,
        upstream: &upstream,
        redaction: &redaction,
        schemas: &schemas,
        data: &data,
    };
    // Where each route asks for credentials, to hold against [access] once compiled.
    let auth_uses: Vec<(Diagnostic, String)> = routes
        .iter()
        .filter_map(|(r, src)| {
            let a = r.get_ref().auth.as_ref()?;
            let at = Diagnostic::at(&src.path, &src.text, Some(a.span()), "");
            Some((at, a.get_ref().clone()))
        })
        .collect();
    let table = compile_routes(routes, unmatched, &ctx, &mut diags);

    let shed = compile_resources(resources, &mut diags);
    let secret_files: Vec<std::path::PathBuf> = access
        .as_ref()
        .and_then(|(a, src)| {
            let f = a.jwt.as_ref()?.get_ref().secret_file.as_ref()?;
            Some(compile_route::resolve(&src.path, f.get_ref()))
        })
        .into_iter()
        .chain(admin_token_file)
        .collect();
    let access = compile_schema::access(access, &data, &mut diags);
    // A route that asks for credentials nobody can have would refuse every caller: the
    // policy is refused instead, by `check`, a reload and `run` alike.
    for (at, auth) in auth_uses {
        let keys = !access.keys.is_empty();
        let jwt = access.jwt.is_some();
        let message = match auth.as_str() {
            "api_key" if !keys => {
                "this route needs API keys, and [access] has none (set api_keys_file to a file with at least one key)"
            }
            "jwt" if !jwt => "this route needs JWTs, and [access] has no jwt = { ... }",
            "any" if !keys && !jwt => "this route needs API keys or JWTs, and [access] has neither",
            _ => continue,
        };
        diags.push(Diagnostic {
            message: message.into(),
            ..at
        });
    }
    let audit = compile_schema::audit(audit, &mut diags);
    let mut models = compile_schema::models(models, &mut diags);
    let mut warnings = Vec::new();
    if let Some((p, src)) = &model_policy
        && let Some(file) = &p.registry_file
    {
        compile_schema::merge_registry(&mut models, file, src, &data, &mut diags, &mut warnings);
    }
    let model_policy = model_policy.map_or_else(Default::default, |(p, _)| {
        let d = crate::policy::models::ModelPolicy::default();
        crate::policy::models::ModelPolicy {
            require_locked_for_inference: p
                .require_locked_for_inference
                .unwrap_or(d.require_locked_for_inference),
            retrain_requires_force: p.retrain_requires_force.unwrap_or(d.retrain_requires_force),
            api_unlock: p.api_unlock.unwrap_or(d.api_unlock),
        }
    });
    if !diags.is_empty() {
        return Err(Diagnostics(diags));
    }
    Ok(Policy {
        version: version_of(sources),
        files: sources
            .iter()
            .filter(|s| s.kind != SourceKind::Env)
            .map(|s| s.path.clone())
            .collect(),
        server,
        upstream,
        limits,
        logging,
        routes: table,
        redaction,
        shed,
        models,
        model_policy,
        access,
        audit,
        secret_files,
        warnings,
    })
}

fn compile_server(
    raw: Option<(RawServer, &Source)>,
    data: &std::collections::HashMap<&Path, &Source>,
    diags: &mut Vec<Diagnostic>,
) -> ServerSettings {
    let (raw, src) = match raw {
        Some((raw, src)) => (raw, Some(src)),
        None => (RawServer::default(), None),
    };
    let admin_token = src.and_then(|src| admin_token(&raw, src, data, diags));
    let workers = match (raw.workers, src) {
        (Some(w), Some(src)) if *w.get_ref() == 0 || *w.get_ref() > 256 => {
            diags.push(Diagnostic::at(
                &src.path,
                &src.text,
                Some(w.span()),
                "server.workers must be between 1 and 256 (leave it out for one per CPU)",
            ));
            None
        }
        (w, _) => w.map(Spanned::into_inner),
    };
    ServerSettings {
        listen: raw.listen.unwrap_or(([127, 0, 0, 1], 8080).into()),
        admin_listen: raw.admin_listen.unwrap_or(([127, 0, 0, 1], 9901).into()),
        header_read_timeout: raw
            .header_read_timeout
            .map_or(Duration::from_secs(10), |d| d.0),
        shutdown_grace: raw.shutdown_grace.map_or(Duration::from_secs(30), |d| d.0),
        workers,
        max_connections: match (raw.max_connections, src) {
            (Some(n), Some(src)) if *n.get_ref() == 0 => {
                diags.push(Diagnostic::at(
                    &src.path,
                    &src.text,
                    Some(n.span()),
                    "server.max_connections must be at least 1",
                ));
                10_000
            }
            (n, _) => n.map_or(10_000, Spanned::into_inner),
        },
        request_timeout: raw
            .request_timeout
            .map_or(Duration::from_secs(300), |d| d.0),
        client_body_timeout: raw
            .client_body_timeout
            .map_or(Duration::from_secs(30), |d| d.0),
        admin_token,
        admin_trust_loopback: raw.admin_trust_loopback.unwrap_or(true),
        trusted_proxies: trusted_proxies(raw.trusted_proxies, src, diags),
    }
}

/// `[server] trusted_proxies`: CIDR blocks or single addresses.
fn trusted_proxies(
    raw: Option<Vec<Spanned<String>>>,
    src: Option<&Source>,
    diags: &mut Vec<Diagnostic>,
) -> Vec<ipnet::IpNet> {
    let (Some(raw), Some(src)) = (raw, src) else {
        return Vec::new();
    };
    let mut nets = Vec::new();
    for item in raw {
        let text = item.get_ref().trim();
        match text
            .parse::<ipnet::IpNet>()
            .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        {
            Ok(net) => nets.push(net.trunc()),
            Err(_) => diags.push(Diagnostic::at(
                &src.path,
                &src.text,
                Some(item.span()),
                "server.trusted_proxies: not an address or CIDR block (e.g. \"10.0.0.0/8\", \"fd00::/8\", \"192.0.2.10\")",
            )),
        }
    }
    nets
}

/// `[server] admin_token_env` or `admin_token_file`: at least 16 bytes.
fn admin_token(
    raw: &RawServer,
    src: &Source,
    data: &std::collections::HashMap<&Path, &Source>,
    diags: &mut Vec<Diagnostic>,
) -> Option<crate::policy::AdminToken> {
    let mut err =
        |span, msg: String| diags.push(Diagnostic::at(&src.path, &src.text, Some(span), msg));
    let (span, path, what) = match (&raw.admin_token_env, &raw.admin_token_file) {
        (None, None) => return None,
        (Some(_), Some(f)) => {
            err(
                f.span(),
                "give admin_token_env or admin_token_file, not both".into(),
            );
            return None;
        }
        (Some(var), None) => (
            var.span(),
            std::path::PathBuf::from(format!("env:{}", var.get_ref())),
            format!("the environment variable {}", var.get_ref()),
        ),
        (None, Some(f)) => (
            f.span(),
            compile_route::resolve(&src.path, f.get_ref()),
            "the admin token file".to_string(),
        ),
    };
    let Some(text) = data.get(path.as_path()).map(|s| s.text.trim()) else {
        err(span, format!("{what} is not set"));
        return None;
    };
    if text.len() < 16 {
        err(
            span,
            format!("{what} must hold a token of at least 16 bytes"),
        );
        return None;
    }
    Some(crate::policy::AdminToken::new(text))
}

fn compile_upstream(
    raw: Option<(RawUpstream, &Source)>,
    diags: &mut Vec<Diagnostic>,
) -> UpstreamSettings {
    let default_authority = http::uri::Authority::from_static("127.0.0.1:5000");
    let (raw, src) = match raw {
        Some((raw, src)) => (raw, Some(src)),
        None => (RawUpstream::default(), None),
    };
    let authority = match (&raw.url, src) {
        (Some(url), Some(src)) => match parse_upstream_url(url.get_ref()) {
            Ok(a) => a,
            Err(msg) => {
                diags.push(Diagnostic::at(&src.path, &src.text, Some(url.span()), msg));
                default_authority
            }
        },
        _ => default_authority,
    };
    UpstreamSettings {
        authority,
        connect_timeout: raw.connect_timeout.map_or(Duration::from_secs(2), |d| d.0),
        timeout: raw.timeout.map_or(Duration::from_secs(60), |d| d.0),
        pool_idle_timeout: raw
            .pool_idle_timeout
            .map_or(Duration::from_secs(90), |d| d.0),
        pool_max_idle: raw.pool_max_idle.unwrap_or(256),
        circuit: compile_route::circuit(raw.circuit.unwrap_or_default(), src, diags),
        retry_budget: compile_route::retry_budget(raw.retry_budget.unwrap_or_default(), src, diags),
    }
}

/// `http://host:port` with no path, query or credentials.
fn parse_upstream_url(url: &str) -> Result<http::uri::Authority, String> {
    let uri: http::Uri = url.parse().map_err(|_| {
        "upstream.url is not a valid URL; write it like \"http://127.0.0.1:5000\"".to_string()
    })?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err("upstream.url: https upstreams are not supported; sitegate runs beside the app and speaks plain HTTP to it".into());
        }
        _ => return Err("upstream.url must start with http://".into()),
    }
    if uri.path_and_query().is_some_and(|p| p.as_str() != "/") {
        return Err(
            "upstream.url must not have a path or query; requests keep their own path".into(),
        );
    }
    let authority = uri.authority().cloned().ok_or("upstream.url has no host")?;
    if authority.as_str().contains('@') {
        return Err("upstream.url must not contain credentials".into());
    }
    Ok(authority)
}

fn compile_limits(raw: Option<(RawLimits, &Source)>, diags: &mut Vec<Diagnostic>) -> Limits {
    let Some((raw, src)) = raw else {
        return Limits {
            max_body: DEFAULT_MAX_BODY,
            max_inflight: DEFAULT_MAX_INFLIGHT,
            buffer_budget: DEFAULT_BUFFER_BUDGET,
            max_records: 10_000,
            max_depth: 10,
            max_string: 1000,
        };
    };
    let max_inflight = match raw.max_inflight {
        Some(n) if *n.get_ref() == 0 => {
            diags.push(Diagnostic::at(
                &src.path,
                &src.text,
                Some(n.span()),
                "limits.max_inflight must be at least 1",
            ));
            DEFAULT_MAX_INFLIGHT
        }
        Some(n) => n.into_inner(),
        None => DEFAULT_MAX_INFLIGHT,
    };
    Limits {
        max_body: raw.max_body.map_or(DEFAULT_MAX_BODY, |s| s.0),
        max_inflight,
        buffer_budget: raw.buffer_budget.map_or(DEFAULT_BUFFER_BUDGET, |s| s.0),
        max_records: raw.max_records.unwrap_or(10_000),
        max_depth: compile_schema::depth(raw.max_depth, src, diags).unwrap_or(10),
        max_string: raw.max_string.unwrap_or(1000),
    }
}

const NO_LOG_FILE: &str = "logging.max_file_size and max_files rotate `logging.file`, which is not set: they would do nothing";

fn compile_logging(
    raw: Option<(RawLogging, &Source)>,
    diags: &mut Vec<Diagnostic>,
) -> LoggingSettings {
    let Some((raw, src)) = raw else {
        return LoggingSettings {
            format: Default::default(),
            level: "info".into(),
            file: None,
        };
    };
    let level = match raw.level {
        Some(level) => {
            if tracing_subscriber::EnvFilter::try_new(level.get_ref()).is_err() {
                diags.push(Diagnostic::at(
                    &src.path,
                    &src.text,
                    Some(level.span()),
                    "logging.level is not a valid filter; use error, warn, info, debug or trace (optionally with per-target overrides like \"info,hyper=warn\")",
                ));
            }
            level.into_inner()
        }
        None => "info".into(),
    };
    if raw.file.is_none() && (raw.max_file_size.is_some() || raw.max_files.is_some()) {
        diags.push(match &raw.max_files {
            Some(n) => Diagnostic::at(&src.path, &src.text, Some(n.span()), NO_LOG_FILE),
            None => Diagnostic::file(&src.path, NO_LOG_FILE),
        });
    }
    let max_files = match raw.max_files {
        Some(n) if *n.get_ref() < 1 || *n.get_ref() > 1000 => {
            diags.push(Diagnostic::at(
                &src.path,
                &src.text,
                Some(n.span()),
                "logging.max_files must be between 1 and 1000",
            ));
            10
        }
        Some(n) => n.into_inner(),
        None => 10,
    };
    let file = raw.file.map(|f| crate::observe::sink::FileSettings {
        // Relative to the policy file, like every other path in it.
        path: super::compile_route::resolve(&src.path, &f),
        max_size: raw.max_file_size.map_or(100 << 20, |s| s.0.max(1)),
        max_files,
    });
    LoggingSettings {
        format: raw.format.unwrap_or_default(),
        level,
        file,
    }
}

fn compile_resources(
    raw: Option<(RawResources, &Source)>,
    diags: &mut Vec<Diagnostic>,
) -> crate::guard::shed::ShedSettings {
    let (raw, src) = match raw {
        Some((raw, src)) => (raw, Some(src)),
        None => (RawResources::default(), None),
    };
    let mut percent = |v: Option<Spanned<f32>>, default: f32, key: &str| match (v, src) {
        (Some(p), Some(src)) if !(0.0..=100.0).contains(p.get_ref()) => {
            diags.push(Diagnostic::at(
                &src.path,
                &src.text,
                Some(p.span()),
                format!(
                    "resources.{key} must be between 0 and 100 (100 never {})",
                    if key.starts_with("shed") {
                        "sheds"
                    } else {
                        "warns"
                    }
                ),
            ));
            default
        }
        (p, _) => p.map_or(default, Spanned::into_inner),
    };
    crate::guard::shed::ShedSettings {
        // CPU shedding is off unless asked for: a saturated CPU is normal under load,
        // and shedding then throws away work the proxy could still do.
        memory_percent: percent(raw.shed_memory_percent, 90.0, "shed_memory_percent"),
        cpu_percent: percent(raw.shed_cpu_percent, 100.0, "shed_cpu_percent"),
        // The suite's own warnings were at 80 % memory and 90 % CPU.
        warn_memory_percent: percent(raw.warn_memory_percent, 80.0, "warn_memory_percent"),
        warn_cpu_percent: percent(raw.warn_cpu_percent, 90.0, "warn_cpu_percent"),
        sample_every: raw.sample_every.map_or(Duration::from_secs(1), |d| d.0),
    }
}

const METHODS: [Method; 8] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
    Method::OPTIONS,
    Method::TRACE,
];

/// What compiling a route needs from the rest of the policy.
struct RouteContext<'a> {
    limits: &'a Limits,
    upstream: &'a UpstreamSettings,
    redaction: &'a RedactionPolicy,
    schemas: &'a HashMap<String, crate::guard::validate::schema::ObjectRule>,
    data: &'a HashMap<&'a Path, &'a Source>,
}

fn compile_routes(
    raw: Vec<(Spanned<RawRoute>, &Source)>,
    unmatched: UnmatchedAction,
    ctx: &RouteContext,
    diags: &mut Vec<Diagnostic>,
) -> RouteTable {
    let mut names: HashSet<String> = HashSet::new();
    let mut routes = Vec::new();
    for (spanned, src) in raw {
        let mut sink = Sink {
            diags: Vec::new(),
            file: &src.path,
            text: &src.text,
        };
        let r = spanned.into_inner();
        let name = r.name.get_ref();
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            sink.at(
                &r.name,
                "route name must be non-empty letters, digits, '-', '_' or '.'",
            );
        } else if name == UNMATCHED {
            sink.at(
                &r.name,
                "route name \"unmatched\" is reserved for requests no route matches",
            );
        } else if !names.insert(name.clone()) {
            sink.at(&r.name, format!("route name \"{name}\" is used twice"));
        }

        let mut router = matchit::Router::new();
        if !r.path.get_ref().starts_with('/') {
            sink.at(&r.path, "route path must start with '/'");
        } else if let Err(e) = router.insert(r.path.get_ref(), ()) {
            sink.at(&r.path, format!("invalid route path: {e}"));
        }

        let mut methods = Vec::new();
        for m in r.methods.iter().flatten() {
            match METHODS.iter().find(|k| k.as_str() == m.get_ref()) {
                Some(k) if !methods.contains(k) => methods.push(k.clone()),
                Some(_) => sink.at(m, "method listed twice"),
                None => sink.at(m, "unknown method; use GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS or TRACE (upper case)"),
            }
        }

        let mut content_types = Vec::new();
        for ct in r.content_types.iter().flatten() {
            let essence = ct.get_ref().trim().to_ascii_lowercase();
            let valid = essence.split_once('/').is_some_and(|(a, b)| {
                !a.is_empty() && !b.is_empty() && !essence.contains([';', ' ', ','])
            });
            if valid {
                content_types.push(essence);
            } else {
                sink.at(
                    ct,
                    "content type must look like \"application/json\" (no parameters)",
                );
            }
        }

        let mut route = Route::new(
            name,
            Some(router),
            methods,
            r.max_body.map_or(ctx.limits.max_body, |s| s.0),
            content_types,
            r.timeout.map_or(ctx.upstream.timeout, |d| d.0),
        );
        route.pattern = Some(Arc::from(r.path.get_ref().as_str()));
        route.fallback = r
            .fallback
            .and_then(|f| compile_route::fallback(f, src, ctx.data, &mut sink));
        route.expect_json = r.expect_json.unwrap_or(false);
        if let Some(statuses) = r.failure_statuses {
            route.failure_statuses = compile_route::statuses(&statuses, &mut sink);
        }
        route.retry = r.retry.and_then(|rt| compile_route::retry(rt, &mut sink));
        route.redact = r.redact.unwrap_or(ctx.redaction.responses);
        route.slow_after = r.slow_after.map(|d| d.0);
        route.shed = r.shed.unwrap_or(true);
        route.auth = compile_schema::auth(r.auth, &mut sink);
        route.model = r
            .model
            .and_then(|m| compile_schema::route_model(m, r.path.get_ref(), &mut sink));
        route.body = compile_schema::body_rules(
            compile_schema::RouteBody {
                schema: r.schema,
                schema_file: r
                    .schema_file
                    .map(|f| (compile_schema::json_schema(&f, src, ctx.data, &mut sink), f)),
                sanitize: r.sanitize,
                batch: r.batch,
                max_records: r.max_records,
                max_depth: r.max_depth,
                max_string: r.max_string,
            },
            ctx.schemas,
            ctx.limits,
            &mut sink,
        );
        routes.push(route);
        diags.extend(sink.diags);
    }
    let unmatched = (unmatched == UnmatchedAction::Pass).then(|| {
        let mut route = Route::new(
            UNMATCHED,
            None,
            Vec::new(),
            ctx.limits.max_body,
            Vec::new(),
            ctx.upstream.timeout,
        );
        route.redact = ctx.redaction.responses;
        route
    });
    RouteTable::new(routes, unmatched)
}

/// A content hash over every file's path and text: the same files give the same
/// version, whatever their timestamps.
pub fn version_of(sources: &[Source]) -> String {
    let mut h = Sha256::new();
    for s in sources {
        h.update(s.path.to_string_lossy().as_bytes());
        h.update([0]);
        h.update((s.text.len() as u64).to_le_bytes());
        h.update(s.text.as_bytes());
    }
    let digest = h.finalize();
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}
