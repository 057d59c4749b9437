//! The proxy's Prometheus metrics (OpenMetrics text on the admin listener's `/metrics`).
//!
//! Handles for the request path ([`RouteBackendMetrics`]) are resolved when a table is compiled;
//! a request only increments atomics it already holds. Families outlive tables, so counters
//! keep counting across reloads.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, OnceLock};
use std::time::Duration;

use prometheus_client::encoding::{
    EncodeLabelSet, EncodeLabelValue, EncodeMetric, MetricEncoder, NoLabelSet,
};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
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
    /// The mirror queue, shared by every mirror backend, was full.
    queue_full,
    /// The request body is larger than the mirror body limit.
    body_too_large,
    /// The live request body did not complete (client gone, early response, error).
    body_incomplete,
    /// The mirror backend has no endpoints.
    no_endpoints,
    /// The mirror backend already has its share of copies waiting or in flight (it is slow,
    /// hung or down).
    backend_busy,
}

type HistogramFactory = fn() -> LatencyHistogram;

/// Every metric the proxy exports.
#[derive(Clone)]
pub struct Metrics {
    requests: Family<RequestLabels, Counter>,
    durations: Family<DurationLabels, LatencyHistogram, HistogramFactory>,
    connect_errors: Family<BackendLabels, Counter>,
    reloads: Family<ReloadLabels, Counter>,
    open_connections: Family<ListenerLabels, Gauge>,
    unrouted: Counter,
    mirror_dropped: Family<MirrorDropLabels, Counter>,
    /// `mirror_dropped` handles by reason, in the order of [`MirrorDrop`]'s variants.
    mirror_drops: [Counter; 5],
}

/// Upper bounds of the request-duration buckets, in seconds (for the exposition) and in whole
/// nanoseconds (for [`LatencyHistogram::observe`]): ten per decade from 1 ms to 10 s, fine
/// enough for a p99 estimate within about 13% by linear interpolation inside a bucket.
static BOUNDS: LazyLock<[(f64, u64); 41]> = LazyLock::new(|| {
    std::array::from_fn(|i| {
        let seconds = 0.001 * 10f64.powf(i as f64 / 10.0);
        // A duration of n ns is at most the bound exactly when n <= floor(bound in ns).
        (seconds, (seconds * 1e9).floor() as u64)
    })
});

/// The request-duration histogram: fixed buckets ([`BOUNDS`] and +Inf), lock-free. An
/// observation is two relaxed atomic adds (its bucket, and the sum in nanoseconds);
/// prometheus-client's `Histogram` takes a mutex per observation instead, which the serving
/// threads would contend for on a busy route.
#[derive(Clone, Debug, Default)]
pub struct LatencyHistogram(Arc<HistogramCells>);

#[derive(Debug)]
struct HistogramCells {
    /// Observations per bucket (not cumulative); the last is +Inf.
    buckets: [AtomicU64; 42],
    sum_nanos: AtomicU64,
}

impl Default for HistogramCells {
    fn default() -> Self {
        HistogramCells {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_nanos: AtomicU64::new(0),
        }
    }
}

impl LatencyHistogram {
    #[inline]
    pub fn observe(&self, elapsed: Duration) {
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let bucket = BOUNDS.partition_point(|&(_, bound)| bound < nanos);
        self.0.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.0.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// (upper bound in seconds, observations) per bucket, +Inf last; the sum in seconds.
    fn snapshot(&self) -> (Vec<(f64, u64)>, f64) {
        let buckets = BOUNDS
            .iter()
            .map(|&(seconds, _)| seconds)
            .chain([f64::INFINITY])
            .zip(&self.0.buckets)
            .map(|(bound, n)| (bound, n.load(Ordering::Relaxed)))
            .collect();
        let sum = self.0.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        (buckets, sum)
    }
}

impl TypedMetric for LatencyHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for LatencyHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let (buckets, sum) = self.snapshot();
        let count = buckets.iter().map(|&(_, n)| n).sum();
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

impl Metrics {
    pub fn register(registry: &mut Registry) -> Metrics {
        let mirror_dropped: Family<MirrorDropLabels, Counter> = Family::default();
        let mirror_drops = [
            MirrorDrop::queue_full,
            MirrorDrop::body_too_large,
            MirrorDrop::body_incomplete,
            MirrorDrop::no_endpoints,
            MirrorDrop::backend_busy,
        ]
        .map(|reason| mirror_dropped.get_or_create_owned(&MirrorDropLabels { reason }));
        let metrics = Metrics {
            requests: Family::default(),
            durations: Family::new_with_constructor(LatencyHistogram::default as HistogramFactory),
            connect_errors: Family::default(),
            reloads: Family::default(),
            open_connections: Family::default(),
            unrouted: Counter::default(),
            mirror_dropped,
            mirror_drops,
        };
        registry.register(
            serin_api::names::REQUESTS,
            "HTTP requests by route, backend, status code sent to the client and traffic kind",
            metrics.requests.clone(),
        );
        registry.register_with_unit(
            serin_api::names::REQUEST_DURATION,
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
            MirrorDrop::backend_busy => 4,
        };
        self.mirror_drops[index].inc();
    }
}

const CODES: usize = 500; // status codes 100..=599

/// Pre-resolved metric handles of one (route, backend, traffic).
pub struct RouteBackendMetrics {
    duration: LatencyHistogram,
    /// Counter per status code, resolved on first use so unused codes are not exported.
    codes: Box<[OnceLock<Counter>; CODES]>,
    requests: Family<RequestLabels, Counter>,
    labels: DurationLabels,
}

impl RouteBackendMetrics {
    /// Records one finished request.
    #[inline]
    pub fn record(&self, status: u16, elapsed: Duration) {
        self.duration.observe(elapsed);
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

/// The handles of a route's requests that no backend answers for (`backend=""`): those of a
/// rule without a weighted backend, and those the client broke. Created on first use, so that
/// a route that never has such a request costs nothing and exports no such series.
pub struct Unattributed {
    handles: OnceLock<RouteBackendMetrics>,
    metrics: Metrics,
    route: Arc<str>,
}

impl Unattributed {
    pub fn new(metrics: &Metrics, route: Arc<str>) -> Unattributed {
        Unattributed {
            handles: OnceLock::new(),
            metrics: metrics.clone(),
            route,
        }
    }

    /// Records one finished request.
    pub fn record(&self, status: u16, elapsed: Duration) {
        self.handles
            .get_or_init(|| self.metrics.route_backend(&self.route, "", Traffic::live))
            .record(status, elapsed);
    }
}

impl std::fmt::Debug for Unattributed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Unattributed")
            .field("route", &self.route)
            .finish_non_exhaustive()
    }
}

/// One client connection counted in `serin_open_connections` for as long as it lives.
pub struct OpenConnection(Gauge);

impl OpenConnection {
    pub fn new(gauge: &Gauge) -> OpenConnection {
        gauge.inc();
        OpenConnection(gauge.clone())
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
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

#[cfg(test)]
mod tests {
    use prometheus_client::metrics::histogram::Histogram;

    use super::*;

    fn exposition(register: impl FnOnce(&mut Registry)) -> String {
        let mut registry = Registry::default();
        register(&mut registry);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
        out
    }

    /// The lock-free histogram is exposed exactly as prometheus-client's own `Histogram` with
    /// the same bounds (what dashboards and the built-in metrics provider were written against).
    #[test]
    fn latency_histogram_exposition_matches_prometheus_clients_histogram() {
        let ours = LatencyHistogram::default();
        let theirs = Histogram::new(BOUNDS.iter().map(|&(s, _)| s));
        let mut observations = vec![
            Duration::ZERO,
            Duration::from_micros(999),
            Duration::from_millis(1),
            Duration::from_micros(1001),
            Duration::from_millis(250),
            Duration::from_secs(10),
            Duration::from_secs(11),
            Duration::from_secs(3600),
        ];
        // Exactly on, and one nanosecond past, every bound.
        for &(_, nanos) in BOUNDS.iter() {
            observations.push(Duration::from_nanos(nanos));
            observations.push(Duration::from_nanos(nanos + 1));
        }
        for d in &observations {
            ours.observe(*d);
            theirs.observe(d.as_secs_f64());
        }
        let a = exposition(|r| r.register("d", "help", ours));
        let b = exposition(|r| r.register("d", "help", theirs));
        let buckets = |s: &str| -> Vec<String> {
            s.lines()
                .filter(|l| l.starts_with("d_bucket") || l.starts_with("d_count"))
                .map(str::to_owned)
                .collect()
        };
        assert_eq!(buckets(&a), buckets(&b));
        let sum = |s: &str| -> f64 {
            let line = s.lines().find(|l| l.starts_with("d_sum")).unwrap();
            line.rsplit(' ').next().unwrap().parse().unwrap()
        };
        assert!(
            (sum(&a) - sum(&b)).abs() < 1e-6,
            "{} vs {}",
            sum(&a),
            sum(&b)
        );
    }

    #[test]
    fn a_route_backend_counts_codes_and_durations() {
        let mut registry = Registry::default();
        let metrics = Metrics::register(&mut registry);
        let handles = metrics.route_backend("ns/r", "ns/b", Traffic::live);
        handles.record(200, Duration::from_millis(2));
        handles.record(200, Duration::from_millis(3));
        handles.record(503, Duration::from_millis(40));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
        let labels = r#"route="ns/r",backend="ns/b""#;
        assert!(out.contains(&format!(
            r#"serin_http_requests_total{{{labels},code="200",traffic="live"}} 2"#
        )));
        assert!(out.contains(&format!(
            r#"serin_http_requests_total{{{labels},code="503",traffic="live"}} 1"#
        )));
        assert!(out.contains(&format!(
            r#"serin_http_request_duration_seconds_count{{{labels},traffic="live"}} 3"#
        )));
        assert!(out.contains(&format!(
            r#"serin_http_request_duration_seconds_sum{{{labels},traffic="live"}} 0.045"#
        )));
    }
}
