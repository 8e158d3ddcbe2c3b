//! What the running proxy shares between connections, the admin listener and the
//! reload loop: the serving policy with the runtime built from it (swapped as one),
//! the breaker, metrics, counters and the reload status shown by `/config`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use tokio::sync::{mpsc, oneshot};

use crate::observe::metrics::{Metrics, RouteMetrics};
use crate::policy::Policy;
use tower::retry::budget::TpsBudget;

use crate::policy::RetryBudgetSettings;
use crate::upstream::{Circuit, MakeTransport, Upstream};

/// A per-client token bucket (keyed by API key id or client IP).
pub struct RateLimiter {
    /// The buckets.
    pub limiter: governor::DefaultKeyedRateLimiter<String>,
}

/// Failed credentials per client IP: past the limit the client is refused (429) until
/// its bucket refills, without its credentials being tried, so keys and tokens cannot
/// be guessed at line rate.
pub struct AuthFailures {
    limiter: governor::DefaultKeyedRateLimiter<std::net::IpAddr>,
    /// Clients refused until the time given. Bounded: past `MAX_BLOCKED` entries the
    /// expired ones are dropped first.
    blocked: Mutex<std::collections::HashMap<std::net::IpAddr, tokio::time::Instant>>,
    /// Entries in `blocked`, so the common case (nobody blocked) takes no lock.
    any: AtomicUsize,
}

const MAX_BLOCKED: usize = 65_536;

impl AuthFailures {
    /// Limits for `settings` (per minute, burst).
    pub fn new(settings: (std::num::NonZeroU32, std::num::NonZeroU32)) -> Self {
        let quota = governor::Quota::per_minute(settings.0).allow_burst(settings.1);
        AuthFailures {
            limiter: governor::RateLimiter::keyed(quota),
            blocked: Mutex::new(std::collections::HashMap::new()),
            any: AtomicUsize::new(0),
        }
    }

    /// How long `ip` is still refused, if it is.
    pub fn blocked(&self, ip: std::net::IpAddr) -> Option<std::time::Duration> {
        use std::sync::atomic::Ordering::Relaxed;
        if self.any.load(Relaxed) == 0 {
            return None;
        }
        let now = tokio::time::Instant::now();
        let map = self.blocked.lock().ok()?;
        map.get(&ip)
            .filter(|until| **until > now)
            .map(|until| *until - now)
    }

    /// Counts a failed credential from `ip`; past the limit, `ip` is refused for the
    /// time returned.
    pub fn count_failure(&self, ip: std::net::IpAddr) -> Option<std::time::Duration> {
        use governor::clock::Clock;
        use std::sync::atomic::Ordering::Relaxed;
        let not_until = self.limiter.check_key(&ip).err()?;
        let wait = not_until.wait_time_from(governor::clock::DefaultClock::default().now());
        let now = tokio::time::Instant::now();
        if let Ok(mut map) = self.blocked.lock() {
            if map.len() >= MAX_BLOCKED {
                map.retain(|_, until| *until > now);
            }
            if map.len() < MAX_BLOCKED {
                map.insert(ip, now + wait);
            }
            self.any.store(map.len(), Relaxed);
        }
        Some(wait)
    }
}

impl crate::guard::access::FailedAuth for AuthFailures {
    fn blocked(&self, client: std::net::IpAddr) -> Option<std::time::Duration> {
        AuthFailures::blocked(self, client)
    }

    fn failed(&self, client: std::net::IpAddr) {
        self.count_failure(client);
    }
}

/// The limiter for `settings`, if any.
pub fn rate_limiter(
    settings: Option<(std::num::NonZeroU32, std::num::NonZeroU32)>,
) -> Option<RateLimiter> {
    settings.map(|(per, burst)| RateLimiter {
        limiter: governor::RateLimiter::keyed(governor::Quota::per_second(per).allow_burst(burst)),
    })
}

/// A retry budget for `settings`: deposits from the last 10 seconds count.
pub fn retry_budget(settings: &RetryBudgetSettings) -> TpsBudget {
    TpsBudget::new(
        std::time::Duration::from_secs(10),
        settings.min_per_second,
        settings.percent / 100.0,
    )
}

/// Settings that the command line imposes over the policy files, reapplied after every
/// reload (the demo points the upstream at its embedded app this way).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// Replaces `upstream.url`.
    pub upstream: Option<http::uri::Authority>,
    /// Replaces `server.listen`.
    pub listen: Option<SocketAddr>,
    /// Replaces `server.admin_listen`.
    pub admin_listen: Option<SocketAddr>,
}

impl Overrides {
    /// Applies the overrides to a freshly compiled policy.
    pub fn apply(&self, policy: &mut Policy) {
        if let Some(a) = &self.upstream {
            policy.upstream.authority = a.clone();
        }
        if let Some(a) = self.listen {
            policy.server.listen = a;
        }
        if let Some(a) = self.admin_listen {
            policy.server.admin_listen = a;
        }
    }
}

pub use crate::observe::LevelSetter;

/// Why the reload loop should look at the policy files again.
#[derive(Debug)]
pub enum Trigger {
    /// A file system event in a watched directory.
    Watch,
    /// The periodic poll (for file systems without events).
    Poll,
    /// SIGHUP.
    Signal,
    /// `POST /reload`; the outcome is sent back.
    Admin(oneshot::Sender<ReloadOutcome>),
}

/// What one reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// A new policy is serving.
    Applied {
        /// Its version.
        version: String,
    },
    /// The files are as they were.
    Unchanged,
    /// The files do not compile; the old policy keeps serving.
    Failed {
        /// `file:line:col: message` lines.
        errors: Vec<String>,
    },
}

impl ReloadOutcome {
    /// The metric label.
    pub fn label(&self) -> &'static str {
        match self {
            ReloadOutcome::Applied { .. } => "ok",
            ReloadOutcome::Unchanged => "unchanged",
            ReloadOutcome::Failed { .. } => "error",
        }
    }
}

/// What `/config` reports about loading.
#[derive(Debug, Clone)]
pub struct ReloadStatus {
    /// When the serving policy was loaded.
    pub loaded_at: SystemTime,
    /// The last reload that changed something or failed, and when.
    pub last: Option<(SystemTime, ReloadOutcome)>,
    /// Changed settings that wait for a restart.
    pub restart_required: Vec<&'static str>,
}

/// The runtime parts a policy calls for. Built from it by [`Runtime::build`], and
/// swapped with it as one [`Snapshot`], so a request never pairs one policy with
/// another's pools or limits.
pub struct Runtime {
    /// One upstream pool per worker (a pool's connections live on its worker's
    /// runtime); carried over while the upstream settings stay the same.
    pub upstreams: Vec<Arc<Upstream>>,
    /// Limits retries to a share of the traffic of routes that retry.
    pub retry_budget: Arc<TpsBudget>,
    /// Per-client rate limiter, when `[access] rate_limit` is set.
    pub rate_limiter: Option<Arc<RateLimiter>>,
    /// Failed credentials per client.
    pub auth_failures: Arc<AuthFailures>,
    /// Each route's metric handles, by `Route::index`.
    pub routes: Vec<RouteMetrics>,
    /// The handles of requests answered before a route was found (framing, the
    /// inflight cap, a path no route serves), under `unmatched`.
    pub unrouted: RouteMetrics,
}

impl Runtime {
    /// The runtime for `next`. Parts whose settings `next` keeps from `current` are
    /// carried over with their state (pooled connections, buckets, counts); the rest
    /// are new.
    pub fn build(
        next: &Policy,
        current: Option<(&Policy, &Runtime)>,
        workers: usize,
        transport: &MakeTransport,
        metrics: &Metrics,
    ) -> Runtime {
        let keep =
            |same: &dyn Fn(&Policy) -> bool| current.filter(|(p, _)| same(p)).map(|(_, r)| r);
        let upstreams = match keep(&|p| !p.upstream.pool_differs(&next.upstream)) {
            Some(r) => r.upstreams.clone(),
            None => (0..workers.max(1))
                .map(|_| Arc::new(Upstream::new(&next.upstream, transport)))
                .collect(),
        };
        let retry_budget = match keep(&|p| p.upstream.retry_budget == next.upstream.retry_budget) {
            Some(r) => r.retry_budget.clone(),
            None => Arc::new(retry_budget(&next.upstream.retry_budget)),
        };
        let rate_limiter = match keep(&|p| p.access.rate_limit == next.access.rate_limit) {
            Some(r) => r.rate_limiter.clone(),
            None => rate_limiter(next.access.rate_limit).map(Arc::new),
        };
        let auth_failures =
            match keep(&|p| p.access.failed_auth_limit == next.access.failed_auth_limit) {
                Some(r) => r.auth_failures.clone(),
                None => Arc::new(AuthFailures::new(next.access.failed_auth_limit)),
            };
        metrics.declare(next);
        Runtime {
            upstreams,
            retry_budget,
            rate_limiter,
            auth_failures,
            routes: next
                .routes
                .all()
                .map(|r| RouteMetrics::new(metrics, r.name.clone()))
                .collect(),
            unrouted: RouteMetrics::new(metrics, crate::policy::UNMATCHED.into()),
        }
    }

    /// The metric handles of the route at `index`, or of unrouted requests.
    pub fn route_metrics(&self, index: Option<usize>) -> &RouteMetrics {
        index
            .and_then(|i| self.routes.get(i))
            .unwrap_or(&self.unrouted)
    }
}

/// What serves requests: a compiled policy and its runtime. Each request takes one
/// snapshot and keeps it to the end, so a reload never changes a request half way.
pub struct Snapshot {
    /// The policy.
    pub policy: Arc<Policy>,
    /// What it runs with.
    pub runtime: Arc<Runtime>,
}

/// The shared state of one running proxy.
pub struct Shared {
    /// The serving policy and runtime, swapped whole by a reload.
    pub serving: ArcSwap<Snapshot>,
    /// Worker threads, each with its own upstream pool.
    pub workers: usize,
    /// Builds each worker's way to the app (again when the pool settings change).
    pub transport: MakeTransport,
    /// The circuit breaker of the upstream. Its state outlives reloads: the app is as
    /// down after a reload as before it.
    pub circuit: Circuit,
    /// Body bytes that may still be held in memory: every buffered body takes its
    /// size from here first, so no mix of clients can exceed `[limits] buffer_budget`.
    pub buffer_budget: Arc<tokio::sync::Semaphore>,
    /// The budget's size, for the `sitegate_buffered_bytes` gauge.
    pub buffer_budget_total: u64,
    /// The resource monitor's last sample.
    pub resources: crate::observe::resources::Readings,
    /// Every metric.
    pub metrics: Metrics,
    /// Requests being handled.
    pub inflight: AtomicUsize,
    /// Set on SIGTERM: `/readyz` answers 503.
    pub draining: AtomicBool,
    /// Shown by `/config`. Never held across an await.
    pub status: Mutex<ReloadStatus>,
    /// Into the reload loop.
    pub reload: mpsc::Sender<Trigger>,
    /// The main policy file.
    pub main_path: PathBuf,
    /// Imposed over every compiled policy.
    pub overrides: Overrides,
    /// Applies a reloaded log level, when sitegate owns the logger.
    pub set_log_level: Option<LevelSetter>,
}

/// What a proxy's shared state is made with, besides its policy.
pub struct Setup {
    /// Worker threads, each with its own upstream pool.
    pub workers: usize,
    /// How each worker reaches the app.
    pub transport: MakeTransport,
    /// Into the reload loop.
    pub reload: mpsc::Sender<Trigger>,
    /// The main policy file.
    pub main_path: PathBuf,
    /// Imposed over every compiled policy.
    pub overrides: Overrides,
    /// Applies a reloaded log level, when sitegate owns the logger.
    pub set_log_level: Option<LevelSetter>,
}

impl Shared {
    /// The state that serves `policy`: the runtime parts it calls for (an upstream per
    /// worker, the breaker, the budgets and limiters) built from it.
    pub fn new(policy: Policy, setup: Setup) -> Self {
        let budget_bytes = policy.limits.buffer_budget;
        let metrics = Metrics::default();
        let runtime = Runtime::build(&policy, None, setup.workers, &setup.transport, &metrics);
        Shared {
            serving: ArcSwap::from_pointee(Snapshot {
                policy: Arc::new(policy),
                runtime: Arc::new(runtime),
            }),
            workers: setup.workers.max(1),
            transport: setup.transport,
            circuit: Circuit::default(),
            buffer_budget: Arc::new(tokio::sync::Semaphore::new(budget_permits(budget_bytes))),
            buffer_budget_total: budget_bytes,
            resources: Default::default(),
            metrics,
            inflight: AtomicUsize::new(0),
            draining: AtomicBool::new(false),
            status: Mutex::new(ReloadStatus {
                loaded_at: SystemTime::now(),
                last: None,
                restart_required: Vec::new(),
            }),
            reload: setup.reload,
            main_path: setup.main_path,
            overrides: setup.overrides,
            set_log_level: setup.set_log_level,
        }
    }

    /// The serving policy.
    pub fn policy(&self) -> Arc<Policy> {
        self.serving.load().policy.clone()
    }
}

/// Semaphore permits for a byte budget (the semaphore's own maximum bounds it).
fn budget_permits(bytes: u64) -> usize {
    usize::try_from(bytes)
        .unwrap_or(usize::MAX)
        .min(tokio::sync::Semaphore::MAX_PERMITS)
}
