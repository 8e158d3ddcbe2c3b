//! The route table: `[[route]]` entries tried in order, first match of method and path
//! wins, and the `[unmatched]` rule for the rest.

use std::sync::Arc;
use std::time::Duration;

use http::Method;

use crate::fallback::Fallback;

/// One compiled route.
#[derive(Debug)]
pub struct Route {
    /// Stable name, used in logs and metric labels.
    pub name: Arc<str>,
    /// Its place in the table (the catch-all comes after the configured routes): what
    /// per-route state built from the policy is indexed by.
    pub index: usize,
    /// The path pattern, matchit syntax; `None` for the unmatched catch-all.
    matcher: Option<matchit::Router<()>>,
    /// The pattern as written in the policy.
    pub pattern: Option<Arc<str>>,
    /// Allowed methods; empty means any.
    methods: Vec<Method>,
    /// Largest request body, in bytes.
    pub max_body: u64,
    /// Accepted `Content-Type` essences (lowercase, no parameters); empty means any.
    pub content_types: Vec<String>,
    /// Time for the upstream to send response headers, and the longest gap between
    /// two pieces of its body.
    pub timeout: Duration,
    /// The answer when the upstream fails, if any.
    pub fallback: Option<Fallback>,
    /// Responses must be JSON (`invalid-response` otherwise).
    pub expect_json: bool,
    /// Upstream statuses that count as the `5xx` failure.
    pub failure_statuses: StatusSet,
    /// Retries, when the route opts in.
    pub retry: Option<RetryPolicy>,
    /// Redact JSON and text response bodies.
    pub redact: bool,
    /// Requests slower than this write a `perf` warning.
    pub slow_after: Option<Duration>,
    /// May be refused (429) while the host is short of memory or CPU.
    pub shed: bool,
    /// JSON body rules, when the route validates its bodies.
    pub body: Option<super::schema::BodyRules>,
    /// The model this route touches, when it is under the model-lock policy.
    pub model: Option<RouteModel>,
    /// What callers must show.
    pub auth: super::access::Auth,
}

/// Where a request carries a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValueSource {
    /// A parameter of the route's path (`path:name`).
    Path(String),
    /// A JSON Pointer into the body (`json:/force_retrain`).
    Json(String),
    /// A header (`header:X-Model`).
    Header(http::HeaderName),
    /// A query-string parameter (`query:version`).
    Query(String),
}

/// A route's `model = { ... }`.
#[derive(Debug, Clone)]
pub struct RouteModel {
    /// What the route does.
    pub action: crate::policy::models::Action,
    /// Where the model name is.
    pub name: Option<ValueSource>,
    /// Where the version is.
    pub version: Option<ValueSource>,
    /// Where the retrain force flag is.
    pub force: Option<ValueSource>,
    /// Where the unlock confirmation is.
    pub confirm: Option<ValueSource>,
}

impl RouteModel {
    /// True when a source reads the body.
    pub fn reads_body(&self) -> bool {
        [&self.name, &self.version, &self.force, &self.confirm]
            .iter()
            .any(|s| matches!(s, Some(ValueSource::Json(_))))
    }
}

/// A set of HTTP status codes (100–999).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusSet([u64; 16]);

impl StatusSet {
    /// No status.
    pub const EMPTY: StatusSet = StatusSet([0; 16]);

    /// 500–599.
    pub fn server_errors() -> Self {
        (500..600).collect()
    }

    /// True when `status` is in the set.
    pub fn contains(&self, status: u16) -> bool {
        let s = status as usize;
        s < 1024 && self.0[s / 64] & (1 << (s % 64)) != 0
    }
}

impl FromIterator<u16> for StatusSet {
    fn from_iter<I: IntoIterator<Item = u16>>(iter: I) -> Self {
        let mut set = StatusSet::EMPTY;
        for s in iter {
            let s = s as usize;
            if s < 1024 {
                set.0[s / 64] |= 1 << (s % 64);
            }
        }
        set
    }
}

/// A route's retry rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Extra attempts after the first.
    pub attempts: u32,
    /// Retry when the app could not be reached.
    pub on_connect: bool,
    /// Retry when the app answers one of these statuses.
    pub statuses: StatusSet,
    /// Also retry POST and PATCH (the app must make them safe to repeat).
    pub non_idempotent: bool,
    /// Largest request body kept in memory so it can be sent again; larger bodies
    /// stream and are not retried.
    pub max_body: u64,
}

impl Route {
    /// A route for `pattern` (already checked to insert), or the catch-all when `None`.
    pub(crate) fn new(
        name: &str,
        pattern: Option<matchit::Router<()>>,
        methods: Vec<Method>,
        max_body: u64,
        content_types: Vec<String>,
        timeout: Duration,
    ) -> Self {
        Route {
            name: Arc::from(name),
            index: 0,
            matcher: pattern,
            pattern: None,
            methods,
            max_body,
            content_types,
            timeout,
            fallback: None,
            expect_json: false,
            failure_statuses: StatusSet::server_errors(),
            retry: None,
            redact: true,
            slow_after: None,
            shed: true,
            body: None,
            model: None,
            auth: super::access::Auth::None,
        }
    }

    /// The path pattern as written, `None` for the catch-all.
    pub fn pattern(&self) -> Option<&str> {
        self.pattern.as_deref()
    }

    /// The methods the route serves (empty: any).
    pub fn methods(&self) -> &[Method] {
        &self.methods
    }

    /// The path parameters of `path`, borrowed from it (none for the catch-all).
    pub fn params<'a>(&'a self, path: &'a str) -> Option<matchit::Params<'a, 'a>> {
        Some(self.matcher.as_ref()?.at(path).ok()?.params)
    }

    /// True when the route's path pattern has a parameter `name`.
    pub(crate) fn has_param(pattern: &str, name: &str) -> bool {
        pattern.contains(&format!("{{{name}}}")) || pattern.contains(&format!("{{*{name}}}"))
    }

    fn matches(&self, method: &Method, path: &str) -> bool {
        let method_ok = self.methods.is_empty() || self.methods.contains(method);
        method_ok && self.matcher.as_ref().is_none_or(|m| m.at(path).is_ok())
    }
}

/// The routes in policy order and what to do with the rest.
#[derive(Debug)]
pub struct RouteTable {
    routes: Vec<Route>,
    /// `Some` when unmatched requests pass (under the global limits), `None` to deny.
    unmatched: Option<Route>,
}

/// The name unmatched requests are logged and counted under.
pub const UNMATCHED: &str = "unmatched";

impl RouteTable {
    pub(crate) fn new(mut routes: Vec<Route>, mut unmatched: Option<Route>) -> Self {
        for (i, r) in routes.iter_mut().enumerate() {
            r.index = i;
        }
        if let Some(u) = &mut unmatched {
            u.index = routes.len();
        }
        RouteTable { routes, unmatched }
    }

    /// True when a request no route matches is refused (`[unmatched] action = "deny"`).
    pub fn denies_unmatched(&self) -> bool {
        self.unmatched.is_none()
    }

    /// Every route a request can match, the catch-all last, each at its `index`.
    pub fn all(&self) -> impl Iterator<Item = &Route> {
        self.routes.iter().chain(self.unmatched.as_ref())
    }

    /// The route for a request: the first whose method and path match, else the
    /// unmatched catch-all, or `None` when unmatched requests are denied.
    pub fn find(&self, method: &Method, path: &str) -> Option<&Route> {
        self.routes
            .iter()
            .find(|r| r.matches(method, path))
            .or(self.unmatched.as_ref())
    }

    /// The route named `name`.
    pub fn named(&self, name: &str) -> Option<&Route> {
        self.routes.iter().find(|r| &*r.name == name)
    }

    /// The configured routes, in order.
    pub fn iter(&self) -> impl Iterator<Item = &Route> {
        self.routes.iter()
    }
}
