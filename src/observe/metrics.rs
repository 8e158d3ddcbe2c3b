//! Every Prometheus metric sitegate exports, named once here (DESIGN §7), encoded by
//! `prometheus-client` in the Prometheus text format.

use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// A route or detector name as a label value: shares the policy's string instead of
/// copying it on every request.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct NameLabel(pub Arc<str>);

impl EncodeLabelValue for NameLabel {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(&self.0)
    }
}

/// Labels of one finished request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// Route name (`unmatched` for the rest).
    pub route: NameLabel,
    /// Request method (`OTHER` for non-standard ones, to bound cardinality).
    pub method: &'static str,
    /// Status class: `2xx`, `4xx`, ...
    pub status: &'static str,
}

/// Labels of a request duration sample.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabel {
    /// Route name.
    pub route: NameLabel,
}

/// Labels of a request sitegate refused.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectionLabels {
    /// Route name.
    pub route: NameLabel,
    /// DESIGN §5 error code.
    pub code: &'static str,
}

/// Labels of an upstream failure.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamFailureLabels {
    /// Route name.
    pub route: NameLabel,
    /// Failure reason (`connect`, `timeout`, ...).
    pub reason: &'static str,
}

/// Labels of a fallback answer.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FallbackLabels {
    /// Route name.
    pub route: NameLabel,
    /// The failure it answered for.
    pub reason: &'static str,
}

/// Labels of a redacted secret.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RedactionLabels {
    /// Route name.
    pub route: NameLabel,
    /// Detector name.
    pub detector: NameLabel,
}

/// Labels of a model-lock decision.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelDecisionLabels {
    /// Model name (as the request gave it; empty when it gave none).
    pub model: String,
    /// `inference`, `retrain`, `register` or `unlock`.
    pub action: &'static str,
    /// `allowed` or `denied`.
    pub result: &'static str,
}

/// Labels of a shed request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ShedLabels {
    /// `memory`, `cpu` or `inflight`.
    pub reason: &'static str,
}

/// Labels of a reload attempt.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    /// `ok`, `error` or `unchanged`.
    pub result: &'static str,
}

/// The process's metrics.
pub struct Metrics {
    registry: Registry,
    /// `sitegate_requests_total{route,method,status}`
    pub requests: Family<RequestLabels, Counter>,
    /// `sitegate_request_duration_seconds{route}`
    pub request_duration: Family<RouteLabel, Histogram>,
    /// `sitegate_upstream_duration_seconds{route}`: until response headers.
    pub upstream_duration: Family<RouteLabel, Histogram>,
    /// `sitegate_rejections_total{route,code}`
    pub rejections: Family<RejectionLabels, Counter>,
    /// `sitegate_upstream_failures_total{route,reason}`
    pub upstream_failures: Family<UpstreamFailureLabels, Counter>,
    /// `sitegate_config_reloads_total{result}`
    pub reloads: Family<ReloadLabels, Counter>,
    /// `sitegate_fallbacks_total{route,reason}`
    pub fallbacks: Family<FallbackLabels, Counter>,
    /// `sitegate_retries_total{route}`
    pub retries: Family<RouteLabel, Counter>,
    /// `sitegate_circuit_state`: 0 closed, 1 open, 2 half-open.
    pub circuit_state: Gauge,
    /// `sitegate_redactions_total{route,detector}`
    pub redactions: Family<RedactionLabels, Counter>,
    /// `sitegate_model_decisions_total{model,action,result}`
    pub model_decisions: Family<ModelDecisionLabels, Counter>,
    /// `sitegate_buffered_bytes`: body bytes held in memory now (set at scrape).
    pub buffered_bytes: Gauge,
    /// `sitegate_shed_total{reason}`
    pub shed: Family<ShedLabels, Counter>,
    /// `sitegate_system_memory_percent`
    pub system_memory_percent: Gauge<f64, AtomicU64>,
    /// `sitegate_system_cpu_percent`
    pub system_cpu_percent: Gauge<f64, AtomicU64>,
    /// `sitegate_process_resident_memory_bytes`
    pub process_rss_bytes: Gauge,
    /// `sitegate_process_cpu_percent` (100 = one core)
    pub process_cpu_percent: Gauge<f64, AtomicU64>,
    /// `sitegate_inflight_requests`
    pub inflight: Gauge,
    /// `sitegate_request_bytes_total`
    pub bytes_in: Counter,
    /// `sitegate_response_bytes_total`
    pub bytes_out: Counter,
}

fn latency_histogram() -> Histogram {
    // 100 µs … ~105 s: sidecar overhead at the bottom, slow model calls at the top.
    Histogram::new(exponential_buckets(0.0001, 2.0, 21))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("sitegate");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests answered, by route, method and status class",
            requests.clone(),
        );
        let request_duration = Family::<RouteLabel, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        registry.register(
            "request_duration_seconds",
            "Time from request head to the end of the response body",
            request_duration.clone(),
        );
        let upstream_duration = Family::<RouteLabel, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        registry.register(
            "upstream_duration_seconds",
            "Time from sending a request upstream to its response headers",
            upstream_duration.clone(),
        );
        let rejections = Family::<RejectionLabels, Counter>::default();
        registry.register(
            "rejections",
            "Requests answered with a sitegate error, by code",
            rejections.clone(),
        );
        let upstream_failures = Family::<UpstreamFailureLabels, Counter>::default();
        registry.register(
            "upstream_failures",
            "Upstream calls that failed, by reason",
            upstream_failures.clone(),
        );
        let reloads = Family::<ReloadLabels, Counter>::default();
        registry.register(
            "config_reloads",
            "Policy reload attempts, by result",
            reloads.clone(),
        );
        // Closed label sets are exported at 0 from the start, so an `increase(...) > 0`
        // alert fires on the first event after a restart (a series born at 1 has no
        // increase) and a rollout check finds the series before anything happened.
        for result in ["ok", "error", "unchanged"] {
            drop(reloads.get_or_create(&ReloadLabels { result }));
        }
        let fallbacks = Family::<FallbackLabels, Counter>::default();
        registry.register(
            "fallbacks",
            "Fallback bodies served instead of a failed upstream answer, by reason",
            fallbacks.clone(),
        );
        let retries = Family::<RouteLabel, Counter>::default();
        registry.register(
            "retries",
            "Upstream requests sent again after a failure",
            retries.clone(),
        );
        let circuit_state = Gauge::default();
        registry.register(
            "circuit_state",
            "Upstream circuit breaker: 0 closed, 1 open, 2 half-open",
            circuit_state.clone(),
        );
        let redactions = Family::<RedactionLabels, Counter>::default();
        registry.register(
            "redactions",
            "Secrets replaced in responses, by route and detector",
            redactions.clone(),
        );
        let model_decisions = Family::<ModelDecisionLabels, Counter>::default();
        registry.register(
            "model_decisions",
            "Model-lock decisions, by model, action and result",
            model_decisions.clone(),
        );
        let buffered_bytes = Gauge::default();
        registry.register(
            "buffered_bytes",
            "Body bytes held in memory now, out of [limits] buffer_budget",
            buffered_bytes.clone(),
        );
        let shed = Family::<ShedLabels, Counter>::default();
        registry.register(
            "shed",
            "Requests refused with 429 to protect the proxy, by reason",
            shed.clone(),
        );
        for reason in ["memory", "cpu", "inflight"] {
            drop(shed.get_or_create(&ShedLabels { reason }));
        }
        let system_memory_percent = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "system_memory_percent",
            "System memory in use, percent (resource monitor)",
            system_memory_percent.clone(),
        );
        let system_cpu_percent = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "system_cpu_percent",
            "System CPU in use, percent (resource monitor)",
            system_cpu_percent.clone(),
        );
        let process_rss_bytes = Gauge::default();
        registry.register(
            "process_resident_memory_bytes",
            "Resident memory of the sitegate process",
            process_rss_bytes.clone(),
        );
        let process_cpu_percent = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "process_cpu_percent",
            "CPU used by the sitegate process, percent of one core",
            process_cpu_percent.clone(),
        );
        registry.register(
            "log_dropped",
            "Routine log lines dropped because the log writer fell behind",
            super::sink::DROPPED.clone(),
        );
        let inflight = Gauge::default();
        registry.register(
            "inflight_requests",
            "Requests being handled now",
            inflight.clone(),
        );
        let bytes_in = Counter::default();
        registry.register(
            "request_bytes",
            "Request body bytes read from clients",
            bytes_in.clone(),
        );
        let bytes_out = Counter::default();
        registry.register(
            "response_bytes",
            "Response body bytes sent to clients",
            bytes_out.clone(),
        );
        Metrics {
            registry,
            requests,
            request_duration,
            upstream_duration,
            rejections,
            upstream_failures,
            reloads,
            fallbacks,
            retries,
            circuit_state,
            redactions,
            model_decisions,
            buffered_bytes,
            shed,
            system_memory_percent,
            system_cpu_percent,
            process_rss_bytes,
            process_cpu_percent,
            inflight,
            bytes_in,
            bytes_out,
        }
    }
}

impl Metrics {
    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(8192);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry);
        out
    }
}

/// One route's metric handles, resolved once per policy: a family lookup hashes its
/// labels and takes a lock on every call, and a request makes three.
pub struct RouteMetrics {
    /// `sitegate_request_duration_seconds{route}`
    pub request_duration: Histogram,
    /// `sitegate_upstream_duration_seconds{route}`
    pub upstream_duration: Histogram,
    /// `sitegate_requests_total{route,method,status}`, by method and status class
    /// index, made on first use (most never are).
    requests: [[std::sync::OnceLock<Counter>; STATUS_CLASSES.len()]; METHODS.len()],
    route: NameLabel,
}

const METHODS: [&str; 10] = [
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT", "OTHER",
];
const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

impl RouteMetrics {
    /// The handles of `route`'s series in `metrics`.
    pub fn new(metrics: &Metrics, route: Arc<str>) -> Self {
        let label = RouteLabel {
            route: NameLabel(route.clone()),
        };
        RouteMetrics {
            request_duration: metrics.request_duration.get_or_create(&label).clone(),
            upstream_duration: metrics.upstream_duration.get_or_create(&label).clone(),
            requests: Default::default(),
            route: NameLabel(route),
        }
    }

    /// The counter of finished requests with `method` and `status`.
    pub fn requests(&self, metrics: &Metrics, method: &http::Method, status: u16) -> &Counter {
        let method = method_label(method);
        let status = status_class(status);
        let m = METHODS
            .iter()
            .position(|x| *x == method)
            .unwrap_or(METHODS.len() - 1);
        let s = STATUS_CLASSES
            .iter()
            .position(|x| *x == status)
            .unwrap_or(STATUS_CLASSES.len() - 1);
        self.requests[m][s].get_or_init(|| {
            metrics
                .requests
                .get_or_create(&RequestLabels {
                    route: self.route.clone(),
                    method,
                    status,
                })
                .clone()
        })
    }
}

impl Metrics {
    /// Exports at 0 every series with a closed set of labels that `policy` can
    /// produce, so an alert on `increase(...) > 0` sees the first event after a start
    /// or a reload (a series that appears at 1 has no increase): each route's
    /// upstream failures by reason, its fallbacks by the reasons its fallback covers,
    /// the refusals its guards can answer with, and each registered model's decisions
    /// for the actions routes take on models.
    pub fn declare(&self, policy: &crate::policy::Policy) {
        use crate::error::{ErrorCode as C, UpstreamFailure};
        let routes: Vec<_> = policy.routes.all().collect();
        for route in &routes {
            let name = NameLabel(route.name.clone());
            for reason in UpstreamFailure::ALL {
                drop(
                    self.upstream_failures
                        .get_or_create(&UpstreamFailureLabels {
                            route: name.clone(),
                            reason: reason.as_str(),
                        }),
                );
                if route.fallback.as_ref().is_some_and(|f| f.covers(reason)) {
                    drop(self.fallbacks.get_or_create(&FallbackLabels {
                        route: name.clone(),
                        reason: reason.as_str(),
                    }));
                }
            }
            let mut codes = vec![
                C::InvalidRequest,
                C::InvalidPath,
                C::RequestTimeout,
                C::PayloadTooLarge,
                C::ResourceExhausted,
                C::Internal,
                C::UpstreamUnavailable,
                C::UpstreamTimeout,
            ];
            let reads_body =
                route.body.is_some() || route.model.as_ref().is_some_and(|m| m.reads_body());
            if route.body.is_some() {
                codes.extend([C::MalformedJson, C::ValidationFailed, C::TooManyRecords]);
            }
            if reads_body || !route.content_types.is_empty() {
                codes.push(C::UnsupportedMediaType);
            }
            let auth = route.auth != crate::policy::access::Auth::None;
            if auth {
                codes.push(C::Unauthorized);
            }
            if auth || policy.access.rate_limit.is_some() {
                codes.push(C::RateLimited);
            }
            if policy.access.allowed_origins.is_some() {
                codes.push(C::OriginNotAllowed);
            }
            if route.model.is_some() {
                codes.extend([
                    C::ModelUnknown,
                    C::ModelNotLocked,
                    C::ModelInferenceDisabled,
                    C::ModelLocked,
                    C::RetrainNotConfirmed,
                    C::Forbidden,
                ]);
                if reads_body && route.body.is_none() {
                    codes.push(C::MalformedJson);
                }
            }
            for code in codes {
                drop(self.rejections.get_or_create(&RejectionLabels {
                    route: name.clone(),
                    code: code.as_str(),
                }));
            }
        }
        if policy.routes.denies_unmatched() {
            drop(self.rejections.get_or_create(&RejectionLabels {
                route: NameLabel(crate::policy::UNMATCHED.into()),
                code: C::NotFound.as_str(),
            }));
        }
        let mut models: Vec<&str> = policy.models.versions().iter().map(|v| &*v.name).collect();
        models.sort_unstable();
        models.dedup();
        let mut actions: Vec<&'static str> = routes
            .iter()
            .filter_map(|r| r.model.as_ref().map(|m| m.action.as_str()))
            .collect();
        actions.sort_unstable();
        actions.dedup();
        for model in models {
            for action in &actions {
                for result in ["allowed", "denied"] {
                    drop(self.model_decisions.get_or_create(&ModelDecisionLabels {
                        model: model.to_string(),
                        action,
                        result,
                    }));
                }
            }
        }
    }
}

/// The status class label of a status code.
pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// The method label: standard methods by name, anything else as `OTHER`.
pub fn method_label(method: &http::Method) -> &'static str {
    use http::Method as M;
    match *method {
        M::GET => "GET",
        M::HEAD => "HEAD",
        M::POST => "POST",
        M::PUT => "PUT",
        M::PATCH => "PATCH",
        M::DELETE => "DELETE",
        M::OPTIONS => "OPTIONS",
        M::TRACE => "TRACE",
        M::CONNECT => "CONNECT",
        _ => "OTHER",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_handles_count_into_the_families_series() {
        let m = Metrics::default();
        let r = RouteMetrics::new(&m, "r".into());
        r.requests(&m, &http::Method::GET, 204).inc();
        r.requests(&m, &http::Method::GET, 200).inc();
        r.requests(&m, &http::Method::from_bytes(b"PURGE").unwrap(), 503)
            .inc();
        r.request_duration.observe(0.25);
        let text = m.encode();
        let count = |series: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
                .unwrap_or_else(|| panic!("no {series} in\n{text}"))
                .to_string()
        };
        assert_eq!(
            count("sitegate_requests_total{route=\"r\",method=\"GET\",status=\"2xx\"}"),
            "2"
        );
        assert_eq!(
            count("sitegate_requests_total{route=\"r\",method=\"OTHER\",status=\"5xx\"}"),
            "1"
        );
        assert_eq!(
            count("sitegate_request_duration_seconds_count{route=\"r\"}"),
            "1"
        );
        // Made with the handles, before any request: the series is there at 0.
        assert_eq!(
            count("sitegate_upstream_duration_seconds_count{route=\"r\"}"),
            "0"
        );
    }

    #[test]
    fn exposition_has_the_designed_names() {
        let m = Metrics::default();
        m.requests
            .get_or_create(&RequestLabels {
                route: NameLabel("r".into()),
                method: "GET",
                status: "2xx",
            })
            .inc();
        m.request_duration
            .get_or_create(&RouteLabel {
                route: NameLabel("r".into()),
            })
            .observe(0.01);
        m.reloads
            .get_or_create(&ReloadLabels { result: "error" })
            .inc();
        m.inflight.set(3);
        let text = m.encode();
        for needle in [
            "sitegate_requests_total{route=\"r\",method=\"GET\",status=\"2xx\"} 1",
            "sitegate_request_duration_seconds_bucket{route=\"r\",le=\"0.0128\"} 1",
            "sitegate_config_reloads_total{result=\"error\"} 1",
            "sitegate_inflight_requests 3",
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
    }

    #[test]
    fn closed_label_sets_are_exported_at_zero_from_the_start() {
        let text = Metrics::default().encode();
        for series in [
            "sitegate_config_reloads_total{result=\"ok\"} 0",
            "sitegate_config_reloads_total{result=\"error\"} 0",
            "sitegate_config_reloads_total{result=\"unchanged\"} 0",
            "sitegate_shed_total{reason=\"memory\"} 0",
            "sitegate_shed_total{reason=\"cpu\"} 0",
            "sitegate_shed_total{reason=\"inflight\"} 0",
        ] {
            assert!(text.contains(series), "missing {series} in\n{text}");
        }
    }

    #[test]
    fn labels_stay_bounded() {
        assert_eq!(
            method_label(&http::Method::from_bytes(b"BREW").unwrap()),
            "OTHER"
        );
        assert_eq!(status_class(204), "2xx");
        assert_eq!(status_class(599), "5xx");
    }
}
