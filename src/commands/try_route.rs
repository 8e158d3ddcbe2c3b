//! `sitegate try [--route NAME] [--path PATH] [--method M] [-H 'Name: value'] [FILE]`:
//! runs a request through the proxy's own decisions offline (`pipeline::decide`), to
//! test a rule change before saving it. The answer is the one the proxy would give.

use std::io::Read;
use std::path::Path;
use std::process::ExitCode;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method};

use crate::pipeline::decide;

/// The request to try.
pub struct TryRequest<'a> {
    /// The route, by name; its path is used when `path` is not given.
    pub route: Option<&'a str>,
    /// The request path (and query), as a client would send it.
    pub path: Option<&'a str>,
    /// The method; the route's first method (else POST) when absent.
    pub method: Option<&'a str>,
    /// Extra headers, `Name: value`.
    pub headers: &'a [String],
    /// The body; stdin when absent.
    pub file: Option<&'a Path>,
}

/// Prints the decision, every problem, and the body that would be forwarded.
/// Exit 0 when the request would be forwarded, 1 when it would be refused.
pub fn try_route(main: &Path, req: &TryRequest) -> anyhow::Result<ExitCode> {
    let policy = match crate::audit::admit_file(main, &|v| std::env::var(v).ok()) {
        Ok(p) => p,
        Err(diags) => {
            super::print_diagnostics(main, &diags);
            return Ok(ExitCode::FAILURE);
        }
    };
    let named = match req.route {
        Some(name) => Some(policy.routes.named(name).ok_or_else(|| {
            let names: Vec<String> = policy.routes.iter().map(|r| r.name.to_string()).collect();
            anyhow::anyhow!(
                "no route named `{name}`; the routes are: {}",
                names.join(", ")
            )
        })?),
        None => None,
    };
    let path = match (req.path, named) {
        (Some(p), _) => p.to_string(),
        (None, Some(route)) => match route.pattern() {
            Some(p) if !p.contains('{') => p.to_string(),
            Some(p) => anyhow::bail!(
                "route `{}` has path parameters ({p}); give the request's path with --path",
                route.name
            ),
            None => anyhow::bail!("give the request's path with --path"),
        },
        (None, None) => anyhow::bail!("give --route NAME, --path PATH, or both"),
    };
    let method = match (req.method, named) {
        (Some(m), _) => Method::from_bytes(m.as_bytes())
            .map_err(|_| anyhow::anyhow!("`{m}` is not an HTTP method"))?,
        (None, Some(route)) => route.methods().first().cloned().unwrap_or(Method::POST),
        (None, None) => Method::POST,
    };
    let limit = named.map_or(crate::policy::DEFAULT_MAX_BODY, |r| r.max_body);
    let input: Box<dyn Read> = match req.file {
        Some(path) => Box::new(
            std::fs::File::open(path)
                .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", path.display()))?,
        ),
        None => Box::new(std::io::stdin().lock()),
    };
    let mut body = Vec::new();
    // One byte past the limit is enough for the proxy's own size check to refuse it.
    input
        .take(limit.max(policy.limits.max_body) + 1)
        .read_to_end(&mut body)?;

    let mut builder = http::Request::builder()
        .method(method)
        .uri(path.as_str())
        .header(http::header::HOST, "sitegate.try");
    let mut has_type = false;
    for h in req.headers {
        let (name, value) = h
            .split_once(':')
            .ok_or_else(|| anyhow::anyhow!("a header is `Name: value`, not `{h}`"))?;
        let name = HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|_| anyhow::anyhow!("`{name}` is not a header name"))?;
        has_type |= name == http::header::CONTENT_TYPE;
        let value = HeaderValue::from_str(value.trim())
            .map_err(|_| anyhow::anyhow!("the value of {name} is not a valid header value"))?;
        builder = builder.header(name, value);
    }
    // What a JSON client sends: its body's type (the route's first, when it has a
    // list) and length.
    if !has_type && !body.is_empty() {
        let ct = named
            .and_then(|r| r.content_types.first().cloned())
            .unwrap_or_else(|| "application/json".into());
        builder = builder.header(http::header::CONTENT_TYPE, ct);
    }
    let request = builder
        .header(http::header::CONTENT_LENGTH, body.len())
        .body(())
        .map_err(|e| anyhow::anyhow!("the request is not valid: {e}"))?;
    let (parts, ()) = request.into_parts();

    match decide::offline(&policy, parts, Bytes::from(body)) {
        Ok(allowed) => {
            if let Some(wanted) = named
                && *wanted.name != *allowed.route
            {
                println!(
                    "NOTE: {} is served by route `{}`, not `{}`",
                    path, allowed.route, wanted.name
                );
            }
            let dropped = match allowed.dropped {
                0 => String::new(),
                n => format!(
                    ", {n} invalid record{} dropped",
                    if n == 1 { "" } else { "s" }
                ),
            };
            let changed = if allowed.changed {
                " (changed by sanitizing)"
            } else {
                ""
            };
            println!("ALLOWED{dropped}; forwarded body{changed}:");
            println!("{}", String::from_utf8_lossy(&allowed.body));
            if allowed.path != path {
                println!("forwarded path: {}", allowed.path);
            }
            if let Some(v) = allowed.model_version {
                println!("model version sent to the app: {v}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(rejection) => {
            println!(
                "REJECTED {} ({}): {}",
                rejection.code.as_str(),
                rejection.code.status().as_u16(),
                rejection.message
            );
            for d in &rejection.details {
                let record = d.record.map_or(String::new(), |r| format!("record {r} "));
                let path = if d.path.is_empty() { "/" } else { &d.path };
                println!("  {record}{path}: {} ({})", d.message, d.rule);
            }
            Ok(ExitCode::FAILURE)
        }
    }
}
