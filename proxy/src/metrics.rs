//! The proxy's Prometheus metrics (OpenMetrics text on the admin listener's `/metrics`).
//!
//! Handles for the request path ([`RouteBackendMetrics`]) are resolved when a table is compiled;
//! a request only increments atomics it already holds. Families outlive tables, so counters
//! keep counting across reloads.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Whether a request was live traffic or a mirrored copy.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum Traffic {
    #[allow(non_camel_case_types)]
    live,
    #[allow(non_camel_case_types)]
    mirror,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: String,
    pub backend: String,
    pub code: u16,
    pub traffic: Traffic,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DurationLabels {
    pub route: String,
    pub backend: String,
    pub traffic: Traffic,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendLabels {
    pub backend: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    pub result: ReloadResult,
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum ReloadResult {
    #[allow(non_camel_case_types)]
    applied,
    #[allow(non_camel_case_types)]
    rejected,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabels {
    pub port: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MirrorDropLabels {
    pub reason: MirrorDrop,
}

/// Why a mirror copy was not sent.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum MirrorDrop {
    /// The mirror queue was full (the mirror is slow or down).
    queue_full,
    /// The request body is larger than the mirror body limit.
    body_too_large,
    /// The live request body did not complete (client gone, early response, error).
    body_incomplete,
    /// The mirror backend has no endpoints.
    no_endpoints,
}

type HistogramFactory = fn() -> Histogram;

/// Every metric the proxy exports.
#[derive(Clone)]
pub struct Metrics {
    requests: Family<RequestLabels, Counter>,
    durations: Family<DurationLabels, Histogram, HistogramFactory>,
    connect_errors: Family<BackendLabels, Counter>,
    reloads: Family<ReloadLabels, Counter>,
    open_connections: Family<ListenerLabels, Gauge>,
    unrouted: Counter,
    mirror_dropped: Family<MirrorDropLabels, Counter>,
    /// `mirror_dropped` handles by reason, in the order of [`MirrorDrop`]'s variants.
    mirror_drops: [Counter; 4],
}

/// Request-duration buckets: ten per decade from 1 ms to 10 s, fine enough for a p99 estimate
/// within about 13% by linear interpolation inside a bucket.
fn duration_histogram() -> Histogram {
    Histogram::new((0..=40).map(|i| 0.001 * 10f64.powf(f64::from(i) / 10.0)))
}

impl Metrics {
    pub fn register(registry: &mut Registry) -> Metrics {
        let mirror_dropped: Family<MirrorDropLabels, Counter> = Family::default();
        let mirror_drops = [
            MirrorDrop::queue_full,
            MirrorDrop::body_too_large,
            MirrorDrop::body_incomplete,
            MirrorDrop::no_endpoints,
        ]
        .map(|reason| mirror_dropped.get_or_create_owned(&MirrorDropLabels { reason }));
        let metrics = Metrics {
            requests: Family::default(),
            durations: Family::new_with_constructor(duration_histogram as HistogramFactory),
            connect_errors: Family::default(),
            reloads: Family::default(),
            open_connections: Family::default(),
            unrouted: Counter::default(),
            mirror_dropped,
            mirror_drops,
        };
        registry.register(
            "serin_http_requests",
            "HTTP requests by route, backend, status code sent to the client and traffic kind",
            metrics.requests.clone(),
        );
        registry.register_with_unit(
            "serin_http_request_duration",
            "Time from receiving a request to sending the response headers",
            prometheus_client::registry::Unit::Seconds,
            metrics.durations.clone(),
        );
        registry.register(
            "serin_upstream_connect_errors",
            "Failed connection attempts to a backend",
            metrics.connect_errors.clone(),
        );
        registry.register(
            "serin_config_reloads",
            "Configuration changes applied or rejected",
            metrics.reloads.clone(),
        );
        registry.register(
            "serin_open_connections",
            "Client connections currently open, per listener port",
            metrics.open_connections.clone(),
        );
        registry.register(
            "serin_http_unrouted_requests",
            "Requests that matched no route (answered 404)",
            metrics.unrouted.clone(),
        );
        registry.register(
            "serin_mirror_dropped",
            "Mirror copies not sent, by reason",
            metrics.mirror_dropped.clone(),
        );
        metrics
    }

    /// Resolves the handles of one backend of one route.
    pub fn route_backend(
        &self,
        route: &str,
        backend: &str,
        traffic: Traffic,
    ) -> RouteBackendMetrics {
        let labels = DurationLabels {
            route: route.to_owned(),
            backend: backend.to_owned(),
            traffic,
        };
        RouteBackendMetrics {
            duration: self.durations.get_or_create_owned(&labels),
            codes: Box::new([const { OnceLock::new() }; CODES]),
            requests: self.requests.clone(),
            labels,
        }
    }

    pub fn connect_errors(&self, backend: &str) -> Counter {
        self.connect_errors.get_or_create_owned(&BackendLabels {
            backend: backend.to_owned(),
        })
    }

    pub fn reloaded(&self, result: ReloadResult) {
        self.reloads.get_or_create(&ReloadLabels { result }).inc();
    }

    pub fn open_connections(&self, port: u16) -> Gauge {
        self.open_connections
            .get_or_create_owned(&ListenerLabels { port })
    }

    pub fn unrouted(&self) {
        self.unrouted.inc();
    }

    /// Counts a mirror copy not sent. Handles are resolved at start: a saturated mirror drops
    /// on every request, so this is on the hot path.
    pub fn mirror_dropped(&self, reason: MirrorDrop) {
        let index = match reason {
            MirrorDrop::queue_full => 0,
            MirrorDrop::body_too_large => 1,
            MirrorDrop::body_incomplete => 2,
            MirrorDrop::no_endpoints => 3,
        };
        self.mirror_drops[index].inc();
    }
}

const CODES: usize = 500; // status codes 100..=599

/// Pre-resolved metric handles of one (route, backend, traffic).
pub struct RouteBackendMetrics {
    duration: Histogram,
    /// Counter per status code, resolved on first use so unused codes are not exported.
    codes: Box<[OnceLock<Counter>; CODES]>,
    requests: Family<RequestLabels, Counter>,
    labels: DurationLabels,
}

impl RouteBackendMetrics {
    /// Records one finished request.
    #[inline]
    pub fn record(&self, status: u16, elapsed: Duration) {
        self.duration.observe(elapsed.as_secs_f64());
        let index = usize::from(status.clamp(100, 599) - 100);
        self.codes[index]
            .get_or_init(|| {
                self.requests.get_or_create_owned(&RequestLabels {
                    route: self.labels.route.clone(),
                    backend: self.labels.backend.clone(),
                    code: status,
                    traffic: self.labels.traffic,
                })
            })
            .inc();
    }
}

impl std::fmt::Debug for RouteBackendMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteBackendMetrics")
            .field("labels", &self.labels)
            .finish_non_exhaustive()
    }
}

/// The registry and the metrics registered in it.
pub struct Telemetry {
    pub registry: Registry,
    pub metrics: Metrics,
}

impl Telemetry {
    pub fn new() -> Arc<Telemetry> {
        let mut registry = Registry::default();
        let metrics = Metrics::register(&mut registry);
        Arc::new(Telemetry { registry, metrics })
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
