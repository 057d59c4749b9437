//! The built-in metric provider: measures a canary from serin-proxy's own counters, with no
//! Prometheus in between.
//!
//! It scrapes `http://ADDR/metrics` of every configured proxy replica and computes, for the
//! canary backend ([`canary_backend`]) over the metric's interval:
//!
//! * `request-success-rate`: the percentage of requests answered with a status below 500,
//!   from `serin_http_requests_total` summed over route, code and traffic kind. Mirrored
//!   requests (`traffic="mirror"`) count too: under blue/green mirroring the canary receives
//!   only mirrored traffic, and its answers to those copies are exactly what the analysis
//!   has to judge.
//! * `request-duration`: the 99th percentile in milliseconds, from the
//!   `serin_http_request_duration_seconds` bucket increases, interpolated linearly inside
//!   the bucket as Prometheus' `histogram_quantile` does (so it is as precise as the
//!   buckets: within about 13% with the proxy's ten buckets per decade).
//!
//! # Windows
//!
//! Counters are cumulative, so a value over an interval is the difference between a scrape
//! made now and a stored earlier one: the newest stored scrape taken at or before
//! `now - interval`, or, when the history does not reach that far back yet, the oldest one
//! (logged at debug level). Each replica keeps its own history of scrapes for an hour
//! (adjustable with [`BuiltinProvider::with_retention`]); every measurement and every
//! [`BuiltinProvider::scrape`] adds to it. Without history the window is empty and the
//! result is [`MetricValue::NoValues`]: run [`BuiltinProvider::scrape_every`] in the
//! background (or call [`BuiltinProvider::scrape`] when a release starts) so the first
//! measurement has something to compare with.
//!
//! A window never starts before [`MetricQuery::since`] (the release's start or its last
//! weight change, from the Canary's status): the start is the later of `now - interval` and
//! `since`, so counts of a previous release, or of the previous weight, are never measured
//! again. Scrapes younger than the minimum window ([`BuiltinProvider::with_min_window`], at
//! most the interval) are not used as a start either. Through [`MetricProvider::measure`],
//! when no stored scrape can start the window (the engine has just started, or no scrape was
//! taken since the last change), the scrape just made is kept as the start and the
//! measurement is made again once the minimum window has passed, instead of failing the
//! check.
//!
//! A series that went down between the two scrapes belongs to a restarted proxy: its
//! current value is taken as the increase (as Prometheus' `rate` does), never a negative
//! difference. A series that did not exist in the earlier scrape counts from zero (the
//! proxy creates a series on its first request).
//!
//! # Failures
//!
//! No request to the canary in the window is [`MetricValue::NoValues`], which fails the
//! check (as in Flagger: a canary that receives no traffic must not be promoted). When any
//! replica cannot be scraped the result is [`MetricValue::Error`] naming the address, even
//! if others answered: the missing replica may be the one that served the canary's
//! failures, and a partial sum could pass a bad release.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex, PoisonError, RwLock},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use http::{Request, Uri, header};
use http_body_util::Full;
use tracing::{debug, warn};

use super::{
    exposition::{self, Sample},
    fetch::{Fetcher, Oversize, http_url, report},
};
use crate::{
    analysis::{BoxFuture, MetricProvider, MetricQuery, MetricValue},
    error::{Error, Result},
    timestamp::Timestamp,
    validation::MetricKind,
};

pub use serin_api::names::{DURATION_BUCKET, REQUESTS_TOTAL, canary_backend};

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_RETENTION: Duration = Duration::from_secs(3600);
const DEFAULT_MIN_WINDOW: Duration = Duration::from_secs(1);
/// Safety net on memory whatever the scrape rate: the oldest scrapes go first.
const MAX_SNAPSHOTS: usize = 4096;
const MAX_SCRAPE_BYTES: usize = 32 << 20;

/// Measures `request-success-rate` and `request-duration` from serin-proxy replicas'
/// `/metrics`. Cheap to share: put it in an `Arc` to scrape in the background.
#[derive(Debug)]
pub struct BuiltinProvider {
    /// The replicas now; replaced as a whole by [`BuiltinProvider::set_addresses`].
    endpoints: RwLock<Vec<Arc<Endpoint>>>,
    /// Where the replicas come from, for the message when there are none.
    source: String,
    fetcher: Fetcher,
    timeout: Duration,
    retention: Duration,
    min_window: Duration,
}

/// One replica's admin endpoint and its scrape history.
struct Endpoint {
    /// As configured, for messages.
    address: String,
    url: Uri,
    /// Scrapes in time order.
    history: Mutex<VecDeque<Snapshot>>,
}

/// The canary-relevant series of one scrape, by backend.
#[derive(Clone, Debug)]
struct Snapshot {
    at: Instant,
    backends: HashMap<String, Series>,
}

/// One backend's series in one scrape.
#[derive(Clone, Debug, Default)]
struct Series {
    /// `serin_http_requests_total` by (route, code, traffic).
    requests: HashMap<(String, u16, String), f64>,
    /// Cumulative duration bucket counts `(le, count)`, sorted by `le`, by (route, traffic).
    histograms: HashMap<(String, String), Vec<(f64, f64)>>,
}

/// What one backend did during a window, summed over series (and replicas).
#[derive(Clone, Debug, Default, PartialEq)]
struct Window {
    requests: f64,
    /// Requests answered 5xx.
    errors: f64,
    /// Cumulative bucket increases `(le, count)`, sorted by `le`.
    buckets: Vec<(f64, f64)>,
}

/// One measurement, or none because no stored scrape can start its window.
#[derive(Debug)]
enum Measured {
    Value(MetricValue),
    NoBaseline,
}

/// The built-in metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Builtin {
    SuccessRate,
    Duration,
}

impl BuiltinProvider {
    /// A provider for the proxy replicas at `addresses`: `HOST:PORT` of an admin listener
    /// (scraped at `http://HOST:PORT/metrics`) or a full `http://` URL (`/metrics` is added
    /// when it has no path). Fails on an empty list or an unusable address.
    pub fn new<I, S>(addresses: I) -> Result<BuiltinProvider>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let provider = BuiltinProvider::discovering("--proxy-admin");
        provider.set_addresses(addresses)?;
        if provider.endpoints().is_empty() {
            return Err(Error::InvalidUrl {
                url: String::new(),
                reason: "no serin-proxy admin address configured".to_owned(),
            });
        }
        Ok(provider)
    }

    /// A provider without replicas yet: [`BuiltinProvider::set_addresses`] supplies them as
    /// they are discovered (`source` says from where, in the error while there are none).
    pub fn discovering(source: impl Into<String>) -> BuiltinProvider {
        BuiltinProvider {
            endpoints: RwLock::default(),
            source: source.into(),
            // A fresh connection per scrape: scrapes are seconds apart, so pooling would save
            // little, and each scrape then reaches whatever listens on the address now (a
            // replaced replica), never a connection kept from the one before.
            fetcher: Fetcher::unpooled(),
            timeout: DEFAULT_TIMEOUT,
            retention: DEFAULT_RETENTION,
            min_window: DEFAULT_MIN_WINDOW,
        }
    }

    /// Replaces the replicas with those at `addresses` (as in [`BuiltinProvider::new`]); a
    /// replica already known keeps its scrape history. Fails on an unusable address, leaving
    /// the replicas as they were.
    pub fn set_addresses<I, S>(&self, addresses: I) -> Result<()>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let known = self.endpoints();
        let mut next: Vec<Arc<Endpoint>> = Vec::new();
        for address in addresses {
            let address = address.as_ref().trim();
            if next.iter().any(|e| e.address == address) {
                continue;
            }
            match known.iter().find(|e| e.address == address) {
                Some(endpoint) => next.push(endpoint.clone()),
                None => next.push(Arc::new(Endpoint {
                    address: address.to_owned(),
                    url: metrics_url(address)?,
                    history: Mutex::new(VecDeque::new()),
                })),
            }
        }
        *self
            .endpoints
            .write()
            .unwrap_or_else(PoisonError::into_inner) = next;
        Ok(())
    }

    fn endpoints(&self) -> Vec<Arc<Endpoint>> {
        self.endpoints
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Sets the time allowed for one scrape (default 5s).
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> BuiltinProvider {
        self.timeout = timeout;
        self
    }

    /// Sets how long scrapes are kept (default one hour); metric intervals longer than
    /// this are measured over the retention instead.
    #[must_use]
    pub fn with_retention(mut self, retention: Duration) -> BuiltinProvider {
        self.retention = retention;
        self
    }

    /// Sets the shortest window measured (default 1s, capped by each metric's interval): a
    /// scrape younger than this is not used as a window's start. Set it to about the
    /// background scrape period.
    #[must_use]
    pub fn with_min_window(mut self, min_window: Duration) -> BuiltinProvider {
        self.min_window = min_window;
        self
    }

    /// The scrape URLs, in configuration order.
    pub fn urls(&self) -> Vec<String> {
        self.endpoints().iter().map(|e| e.url.to_string()).collect()
    }

    /// Scrapes every replica now and stores the results. Fails with the first replica's
    /// error if any could not be scraped (each failure is also logged); the others are
    /// stored regardless.
    pub async fn scrape(&self) -> Result<()> {
        self.scrape_at(Instant::now()).await
    }

    /// [`scrape`](BuiltinProvider::scrape), recording the scrapes as taken at `now`.
    pub async fn scrape_at(&self, now: Instant) -> Result<()> {
        let endpoints = self.endpoints();
        let results =
            futures_util::future::join_all(endpoints.iter().map(|e| self.fetch(e, now))).await;
        let mut first_error = None;
        for (endpoint, result) in endpoints.iter().zip(results) {
            match result {
                Ok(snapshot) => self.record(endpoint, snapshot),
                Err(err) => {
                    warn!(address = %endpoint.address, error = %report(&err), "cannot scrape serin-proxy");
                    first_error.get_or_insert(err);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Scrapes every replica every `period`, forever: spawn it (`tokio::spawn(provider
    /// .clone().scrape_every(period))`) and abort the task to stop. A period well below the
    /// shortest metric interval keeps windows close to their nominal length.
    pub async fn scrape_every(self: Arc<Self>, period: Duration) {
        let mut ticker = tokio::time::interval(period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            // Failures are logged by `scrape_at`; the next tick tries again.
            let _ = self.scrape().await;
        }
    }

    /// Measures `query` as of `now` (see the module docs); also stores the scrapes it makes.
    /// Without a stored scrape to start the window from, the result is
    /// [`MetricValue::NoValues`] (the trait's [`measure`](MetricProvider::measure) waits for
    /// one instead).
    pub async fn measure_at(&self, query: MetricQuery<'_>, now: Instant) -> MetricValue {
        match self.measure_once(query, now).await {
            Measured::Value(value) => value,
            Measured::NoBaseline => MetricValue::NoValues,
        }
    }

    async fn measure_once(&self, query: MetricQuery<'_>, now: Instant) -> Measured {
        let metric = match &query.check.kind {
            MetricKind::RequestSuccessRate => Builtin::SuccessRate,
            MetricKind::RequestDuration => Builtin::Duration,
            MetricKind::Template { .. } | MetricKind::Query(_) => {
                return Measured::Value(MetricValue::Error(format!(
                    "the built-in provider measures request-success-rate and request-duration \
                     only; {} is a custom metric",
                    query.check.name
                )));
            }
        };
        let backend = canary_backend(query.namespace, query.service);
        let interval = query.interval();
        let bounds = Bounds {
            now,
            interval,
            since: query
                .since
                .and_then(|since| instant_of(since, now, SystemTime::now())),
            min_window: self.min_window.min(interval),
        };
        let endpoints = self.endpoints();
        if endpoints.is_empty() {
            return Measured::Value(MetricValue::Error(format!(
                "no serin-proxy replica to read metrics from ({})",
                self.source
            )));
        }
        let results = futures_util::future::join_all(
            endpoints.iter().map(|e| self.window(e, &backend, bounds)),
        )
        .await;
        let mut total = Window::default();
        let mut failures = Vec::new();
        let mut without_baseline = false;
        for (endpoint, result) in endpoints.iter().zip(results) {
            match result {
                Ok(Some(window)) => total.add(&window),
                Ok(None) => without_baseline = true,
                Err(err) => failures.push(format!("{}: {}", endpoint.address, report(&err))),
            }
        }
        if !failures.is_empty() {
            let message = format!("cannot scrape serin-proxy at {}", failures.join("; "));
            warn!(metric = %query.check.name, %backend, error = %message, "metric query failed");
            return Measured::Value(MetricValue::Error(message));
        }
        if without_baseline {
            return Measured::NoBaseline;
        }
        let value = match metric {
            Builtin::SuccessRate => total.success_rate(),
            Builtin::Duration => total.p99_millis(),
        };
        debug!(
            metric = %query.check.name,
            %backend,
            interval_s = interval.as_secs_f64(),
            requests = total.requests,
            errors = total.errors,
            value,
            "measured"
        );
        Measured::Value(value.map_or(MetricValue::NoValues, MetricValue::Value))
    }

    /// Scrapes one replica.
    async fn fetch(&self, endpoint: &Endpoint, now: Instant) -> Result<Snapshot> {
        let request = Request::get(endpoint.url.clone())
            .header(
                header::ACCEPT,
                "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
            )
            .body(Full::new(Bytes::new()))
            .map_err(|err| Error::InvalidUrl {
                url: endpoint.url.to_string(),
                reason: err.to_string(),
            })?;
        let fetched = self
            .fetcher
            .send(request, self.timeout, MAX_SCRAPE_BYTES, Oversize::Reject)
            .await?;
        let bad = |reason: String| Error::BadResponse {
            url: endpoint.url.to_string(),
            reason,
        };
        if !fetched.status.is_success() {
            return Err(bad(format!("HTTP {}", fetched.status)));
        }
        let text = std::str::from_utf8(&fetched.body)
            .map_err(|err| bad(format!("metrics are not UTF-8: {err}")))?;
        let samples = exposition::parse(text).map_err(|err| bad(format!("metrics: {err}")))?;
        Snapshot::from_samples(&samples, now).map_err(|err| bad(format!("metrics: {err}")))
    }

    /// Scrapes one replica and returns what `backend` did in the window ending `now`, or
    /// `None` when no stored scrape can start it (the scrape made now is stored either way).
    async fn window(
        &self,
        endpoint: &Endpoint,
        backend: &str,
        bounds: Bounds,
    ) -> Result<Option<Window>> {
        let Bounds { now, interval, .. } = bounds;
        let snapshot = self.fetch(endpoint, now).await?;
        let window = {
            let history = endpoint
                .history
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            match baseline(&history, bounds) {
                Some((then, exact)) => {
                    if !exact {
                        debug!(
                            address = %endpoint.address,
                            %backend,
                            interval_s = interval.as_secs_f64(),
                            window_s = now.saturating_duration_since(then.at).as_secs_f64(),
                            "no scrape as old as the interval yet: measuring since the oldest"
                        );
                    }
                    Some(Window::between(&snapshot, then, backend))
                }
                None => {
                    debug!(
                        address = %endpoint.address,
                        %backend,
                        "no scrape of this replica can start the window yet"
                    );
                    None
                }
            }
        };
        self.record(endpoint, snapshot);
        Ok(window)
    }

    /// Stores a scrape in time order and drops what the retention no longer needs.
    fn record(&self, endpoint: &Endpoint, snapshot: Snapshot) {
        let mut history = endpoint
            .history
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let at = snapshot.at;
        let position = history.partition_point(|s| s.at <= at);
        history.insert(position, snapshot);
        if let Some(horizon) = at.checked_sub(self.retention) {
            // Keep the newest scrape at or before the horizon: the baseline for a window as
            // long as the retention.
            while history.len() >= 2 && history[1].at <= horizon {
                history.pop_front();
            }
        }
        while history.len() > MAX_SNAPSHOTS {
            history.pop_front();
        }
    }
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scrapes = self
            .history
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        f.debug_struct("Endpoint")
            .field("address", &self.address)
            .field("url", &self.url)
            .field("scrapes", &scrapes)
            .finish()
    }
}

impl MetricProvider for BuiltinProvider {
    fn measure<'a>(&'a self, query: MetricQuery<'a>) -> BoxFuture<'a, MetricValue> {
        Box::pin(async move {
            if let Measured::Value(value) = self.measure_once(query, Instant::now()).await {
                return value;
            }
            // The scrape just made starts the window: measure again once it is long enough.
            debug!(metric = %query.check.name, "no scrape to start the window from yet: waiting");
            tokio::time::sleep(self.min_window.min(query.interval())).await;
            match self.measure_once(query, Instant::now()).await {
                Measured::Value(value) => value,
                Measured::NoBaseline => MetricValue::NoValues,
            }
        })
    }
}

/// The wall-clock instant `since` on the monotonic clock, given that `wall_now` is `now`;
/// `None` when it is before the monotonic clock's origin (no stored scrape is that old).
fn instant_of(since: Timestamp, now: Instant, wall_now: SystemTime) -> Option<Instant> {
    let since = UNIX_EPOCH.checked_add(Duration::from_secs(
        u64::try_from(since.unix_seconds()).unwrap_or(0),
    ))?;
    match wall_now.duration_since(since) {
        Ok(ago) => now.checked_sub(ago),
        // In the future: nothing stored so far may start the window.
        Err(_) => Some(now),
    }
}

/// The scrape URL for an admin address.
fn metrics_url(address: &str) -> Result<Uri> {
    if address.contains("://") {
        let uri = http_url(address)?;
        if matches!(uri.path(), "" | "/") && uri.query().is_none() {
            return http_url(&format!("{}/metrics", address.trim_end_matches('/')));
        }
        return Ok(uri);
    }
    if address.is_empty() || address.contains('/') {
        return Err(Error::InvalidUrl {
            url: address.to_owned(),
            reason: "expected HOST:PORT or an http:// URL".to_owned(),
        });
    }
    http_url(&format!("http://{address}/metrics"))
}

/// Where a window may start and end.
#[derive(Clone, Copy, Debug)]
struct Bounds {
    /// The window's end.
    now: Instant,
    /// The metric's interval: the window's nominal length.
    interval: Duration,
    /// No scrape before this starts a window (the release's start or last weight change).
    since: Option<Instant>,
    /// No scrape younger than this starts a window.
    min_window: Duration,
}

/// The scrape to measure from, among those taken at or after `since` and at least
/// `min_window` before `now`: the newest at or before `now - interval` (`exact`), else the
/// oldest (the window starts at `since`, or the history is shorter than the interval).
fn baseline(history: &VecDeque<Snapshot>, bounds: Bounds) -> Option<(&Snapshot, bool)> {
    let latest = bounds.now.checked_sub(bounds.min_window)?;
    let usable = |s: &&Snapshot| s.at <= latest && bounds.since.is_none_or(|since| s.at >= since);
    let exact = bounds
        .now
        .checked_sub(bounds.interval)
        .and_then(|start| history.iter().rev().filter(usable).find(|s| s.at <= start));
    match exact {
        Some(snapshot) => Some((snapshot, true)),
        None => history
            .iter()
            .find(usable)
            .map(|snapshot| (snapshot, false)),
    }
}

/// The increase of a counter from `before` to `now`; a counter that went down was reset,
/// and one that did not exist started from zero, so its current value is the increase.
fn counter_increase(now: f64, before: Option<f64>) -> f64 {
    match before {
        Some(before) if now >= before => now - before,
        _ => now,
    }
}

/// The bucket increases of one histogram series, with reset detection over the whole
/// series (any bucket down, or a bucket gone, means the proxy restarted).
fn histogram_increase(now: &[(f64, f64)], before: Option<&[(f64, f64)]>) -> Vec<(f64, f64)> {
    let Some(before) = before else {
        return now.to_vec();
    };
    let find = |le: f64| now.iter().find(|(l, _)| *l == le).map(|(_, c)| *c);
    let reset = before
        .iter()
        .any(|(le, count)| find(*le).is_none_or(|current| current < *count));
    if reset {
        return now.to_vec();
    }
    now.iter()
        .map(|(le, count)| {
            let earlier = before
                .iter()
                .find(|(l, _)| l == le)
                .map_or(0.0, |(_, c)| *c);
            (*le, count - earlier)
        })
        .collect()
}

/// Adds `extra` cumulative buckets into `into`, both sorted by `le`.
fn merge_buckets(into: &mut Vec<(f64, f64)>, extra: &[(f64, f64)]) {
    for (le, count) in extra {
        match into.binary_search_by(|(l, _)| l.total_cmp(le)) {
            Ok(i) => into[i].1 += count,
            Err(i) => into.insert(i, (*le, *count)),
        }
    }
}

/// The `q` quantile of cumulative `buckets` (sorted by `le`, the last one `+Inf`), exactly
/// as Prometheus' `histogram_quantile`: linear interpolation inside the bucket holding the
/// rank, the lower bound of the first bucket taken as 0, and the highest finite bound when
/// the rank falls in the `+Inf` bucket. `None` without observations (Prometheus' NaN).
fn histogram_quantile(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
    let (last_le, _) = *buckets.last()?;
    if buckets.len() < 2 || last_le != f64::INFINITY || !(0.0..=1.0).contains(&q) {
        return None;
    }
    // Bucket counts must not decrease with `le`; sums over series with reset corrections
    // may, so force it as Prometheus does.
    let mut counts = Vec::with_capacity(buckets.len());
    let mut running: f64 = 0.0;
    for (_, count) in buckets {
        running = running.max(*count);
        counts.push(running);
    }
    let total = *counts.last()?;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let b = counts[..counts.len() - 1]
        .iter()
        .position(|count| *count >= rank)
        .unwrap_or(counts.len() - 1);
    if b == buckets.len() - 1 {
        return Some(buckets[buckets.len() - 2].0);
    }
    if b == 0 && buckets[0].0 <= 0.0 {
        return Some(buckets[0].0);
    }
    let (start, below) = if b == 0 {
        (0.0, 0.0)
    } else {
        (buckets[b - 1].0, counts[b - 1])
    };
    let end = buckets[b].0;
    let in_bucket = counts[b] - below;
    Some(start + (end - start) * ((rank - below) / in_bucket))
}

impl Snapshot {
    /// The requests and duration series of `samples`, by backend.
    fn from_samples(samples: &[Sample<'_>], at: Instant) -> Result<Snapshot, String> {
        let mut backends: HashMap<String, Series> = HashMap::new();
        for sample in samples {
            let is_requests = sample.name == REQUESTS_TOTAL;
            if !is_requests && sample.name != DURATION_BUCKET {
                continue;
            }
            let backend = sample
                .label("backend")
                .ok_or_else(|| format!("{} without a backend label", sample.name))?;
            let route = sample.label("route").unwrap_or_default().to_owned();
            let traffic = sample.label("traffic").unwrap_or("live").to_owned();
            let series = backends.entry(backend.to_owned()).or_default();
            if is_requests {
                let code = sample.label("code").unwrap_or_default();
                let code: u16 = code
                    .parse()
                    .map_err(|_| format!("{REQUESTS_TOTAL} with an invalid code {code:?}"))?;
                *series.requests.entry((route, code, traffic)).or_default() += sample.value;
            } else {
                let le = sample.label("le").unwrap_or_default();
                let le = exposition::parse_value(le)
                    .map_err(|_| format!("{DURATION_BUCKET} with an invalid le {le:?}"))?;
                series
                    .histograms
                    .entry((route, traffic))
                    .or_default()
                    .push((le, sample.value));
            }
        }
        for series in backends.values_mut() {
            for buckets in series.histograms.values_mut() {
                buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
            }
        }
        Ok(Snapshot { at, backends })
    }
}

impl Window {
    /// What `backend` did between the scrapes `then` and `now`.
    fn between(now: &Snapshot, then: &Snapshot, backend: &str) -> Window {
        let mut window = Window::default();
        let Some(current) = now.backends.get(backend) else {
            return window;
        };
        let earlier = then.backends.get(backend);
        for (key, value) in &current.requests {
            let increase =
                counter_increase(*value, earlier.and_then(|e| e.requests.get(key).copied()));
            window.requests += increase;
            if key.1 >= 500 {
                window.errors += increase;
            }
        }
        for (key, buckets) in &current.histograms {
            let before = earlier
                .and_then(|e| e.histograms.get(key))
                .map(Vec::as_slice);
            merge_buckets(&mut window.buckets, &histogram_increase(buckets, before));
        }
        window
    }

    /// Adds another replica's window.
    fn add(&mut self, other: &Window) {
        self.requests += other.requests;
        self.errors += other.errors;
        merge_buckets(&mut self.buckets, &other.buckets);
    }

    /// Percentage of requests answered below 500; `None` without requests.
    fn success_rate(&self) -> Option<f64> {
        (self.requests > 0.0).then(|| 100.0 * (self.requests - self.errors) / self.requests)
    }

    /// The 99th percentile duration in milliseconds; `None` without observations.
    fn p99_millis(&self) -> Option<f64> {
        histogram_quantile(0.99, &self.buckets).map(|seconds| seconds * 1000.0)
    }
}

#[cfg(test)]
mod tests;
