use super::*;

fn snapshot(at: Instant, text: &str) -> Snapshot {
    let samples = exposition::parse(text).unwrap_or_default();
    match Snapshot::from_samples(&samples, at) {
        Ok(snapshot) => snapshot,
        Err(err) => panic!("{err}"),
    }
}

fn requests(backend: &str, code: u16, traffic: &str, value: u64) -> String {
    format!(
        "serin_http_requests_total{{route=\"test/r\",backend=\"{backend}\",code=\"{code}\",traffic=\"{traffic}\"}} {value}\n"
    )
}

const CANARY: &str = "test/podinfo-canary";

#[test]
fn canary_backend_naming() {
    assert_eq!(canary_backend("test", "podinfo"), "test/podinfo-canary");
}

#[test]
fn metrics_urls() {
    let url = |a: &str| metrics_url(a).map(|u| u.to_string()).unwrap_or_default();
    assert_eq!(url("127.0.0.1:9901"), "http://127.0.0.1:9901/metrics");
    assert_eq!(url("http://proxy:9901"), "http://proxy:9901/metrics");
    assert_eq!(url("http://proxy:9901/"), "http://proxy:9901/metrics");
    assert_eq!(
        url("http://proxy:9901/admin/metrics"),
        "http://proxy:9901/admin/metrics"
    );
    assert!(metrics_url("").is_err());
    assert!(metrics_url("proxy:9901/metrics").is_err());
    assert!(metrics_url("https://proxy:9901").is_err());
    assert!(BuiltinProvider::new(Vec::<String>::new()).is_err());
}

#[test]
fn success_rate_sums_codes_routes_and_traffic_kinds_of_the_canary_only() {
    let t0 = Instant::now();
    let then = snapshot(
        t0,
        &[
            requests(CANARY, 200, "live", 100),
            requests(CANARY, 500, "live", 10),
            requests("test/podinfo-primary", 500, "live", 1000),
        ]
        .concat(),
    );
    let now = snapshot(
        t0 + Duration::from_secs(60),
        &[
            requests(CANARY, 200, "live", 160),
            requests(CANARY, 500, "live", 15),
            requests(CANARY, 404, "live", 10),
            requests(CANARY, 503, "mirror", 5),
            requests(CANARY, 200, "mirror", 10),
            requests("test/podinfo-primary", 500, "live", 2000),
        ]
        .concat(),
    );
    let window = Window::between(&now, &then, CANARY);
    // 60 + 5 + 10 (new series count from zero) + 5 + 10.
    assert_eq!(window.requests, 90.0);
    assert_eq!(window.errors, 10.0);
    assert_eq!(window.success_rate(), Some(100.0 * 80.0 / 90.0));
    assert_eq!(
        Window::between(&now, &then, "test/other").success_rate(),
        None
    );
}

#[test]
fn counter_resets_never_go_negative() {
    assert_eq!(counter_increase(15.0, Some(10.0)), 5.0);
    assert_eq!(
        counter_increase(3.0, Some(10.0)),
        3.0,
        "reset: the current value"
    );
    assert_eq!(counter_increase(4.0, None), 4.0, "new series: from zero");
    let t0 = Instant::now();
    let then = snapshot(t0, &requests(CANARY, 200, "live", 500));
    let now = snapshot(
        t0 + Duration::from_secs(60),
        &[
            requests(CANARY, 200, "live", 18),
            requests(CANARY, 500, "live", 2),
        ]
        .concat(),
    );
    let window = Window::between(&now, &then, CANARY);
    assert_eq!((window.requests, window.errors), (20.0, 2.0));
}

fn buckets(les: &[f64], counts: &[f64]) -> Vec<(f64, f64)> {
    les.iter().copied().zip(counts.iter().copied()).collect()
}

#[test]
fn quantile_matches_prometheus_histogram_quantile() {
    let les = [0.1, 0.2, 0.4, f64::INFINITY];
    // 100 observations: 50 in (0, 0.1], 40 in (0.1, 0.2], 10 in (0.2, 0.4].
    let b = buckets(&les, &[50.0, 90.0, 100.0, 100.0]);
    let q = |q: f64| histogram_quantile(q, &b).unwrap_or(f64::NAN);
    assert!((q(0.5) - 0.1).abs() < 1e-12, "{}", q(0.5));
    assert!((q(0.25) - 0.05).abs() < 1e-12);
    assert!((q(0.7) - 0.15).abs() < 1e-12);
    // Rank 99 is the 9th of 10 in (0.2, 0.4].
    assert!((q(0.99) - 0.38).abs() < 1e-12, "{}", q(0.99));
    // In the +Inf bucket: the highest finite bound.
    let b = buckets(&les, &[0.0, 0.0, 0.0, 10.0]);
    assert_eq!(histogram_quantile(0.99, &b), Some(0.4));
    // No observations, no +Inf bucket, a single bucket: no value (Prometheus: NaN).
    assert_eq!(histogram_quantile(0.99, &buckets(&les, &[0.0; 4])), None);
    assert_eq!(
        histogram_quantile(0.99, &buckets(&les[..3], &[1.0, 2.0, 3.0])),
        None
    );
    assert_eq!(histogram_quantile(0.99, &[(f64::INFINITY, 3.0)]), None);
    // Non-monotonic counts are forced monotonic.
    let b = buckets(&les, &[50.0, 40.0, 100.0, 100.0]);
    assert!((histogram_quantile(0.5, &b).unwrap_or(f64::NAN) - 0.1).abs() < 1e-12);
}

fn histogram(backend: &str, counts: &[(&str, u64)]) -> String {
    counts
        .iter()
        .map(|(le, count)| {
            format!(
                "serin_http_request_duration_seconds_bucket{{le=\"{le}\",route=\"test/r\",backend=\"{backend}\",traffic=\"live\"}} {count}\n"
            )
        })
        .collect()
}

#[test]
fn p99_from_bucket_increases() {
    let t0 = Instant::now();
    let then = snapshot(
        t0,
        &histogram(
            CANARY,
            &[("0.1", 1000), ("0.2", 1000), ("0.4", 1000), ("+Inf", 1000)],
        ),
    );
    // 100 new observations, all in (0.2, 0.4]: the old fast ones must not count.
    let now = snapshot(
        t0 + Duration::from_secs(60),
        &histogram(
            CANARY,
            &[("0.1", 1000), ("0.2", 1000), ("0.4", 1100), ("+Inf", 1100)],
        ),
    );
    let window = Window::between(&now, &then, CANARY);
    let p99 = window.p99_millis().unwrap_or(f64::NAN);
    assert!((p99 - 398.0).abs() < 1e-9, "{p99}");
    // A restarted proxy: its buckets are the increase.
    let restarted = snapshot(
        t0 + Duration::from_secs(60),
        &histogram(
            CANARY,
            &[("0.1", 10), ("0.2", 10), ("0.4", 10), ("+Inf", 10)],
        ),
    );
    let window = Window::between(&restarted, &then, CANARY);
    assert!((window.p99_millis().unwrap_or(f64::NAN) - 99.0).abs() < 1e-9);
    // Two replicas' windows add up bucket by bucket.
    let mut sum = Window::between(&now, &then, CANARY);
    sum.add(&Window::between(&restarted, &then, CANARY));
    assert_eq!(
        sum.buckets,
        vec![
            (0.1, 10.0),
            (0.2, 10.0),
            (0.4, 110.0),
            (f64::INFINITY, 110.0)
        ]
    );
}

#[test]
fn baseline_is_the_newest_scrape_old_enough_else_the_oldest() {
    let t0 = Instant::now();
    let at = |s: u64| t0 + Duration::from_secs(s);
    let history: VecDeque<Snapshot> = [0, 30, 60, 90]
        .into_iter()
        .map(|s| snapshot(at(s), ""))
        .collect();
    let bounds = |now: u64, interval: u64| Bounds {
        now: at(now),
        interval: Duration::from_secs(interval),
        since: None,
        min_window: Duration::from_secs(1),
    };
    let picked = |bounds: Bounds| {
        baseline(&history, bounds).map(|(s, exact)| (s.at.duration_since(t0).as_secs(), exact))
    };
    let pick = |now: u64, interval: u64| picked(bounds(now, interval));
    assert_eq!(pick(120, 60), Some((60, true)));
    assert_eq!(pick(119, 60), Some((30, true)));
    assert_eq!(pick(95, 60), Some((30, true)));
    assert_eq!(
        pick(50, 60),
        Some((0, false)),
        "history too short: the oldest"
    );
    assert_eq!(baseline(&VecDeque::new(), bounds(10, 5)).map(|_| ()), None);

    // The release started (or the weight changed) at 45: the window starts there, whatever
    // the interval.
    let since = |now: u64, interval: u64, since: u64| Bounds {
        since: Some(at(since)),
        ..bounds(now, interval)
    };
    assert_eq!(picked(since(120, 100, 45)), Some((60, false)));
    assert_eq!(
        picked(since(120, 60, 45)),
        Some((60, true)),
        "since earlier: the interval"
    );
    assert_eq!(picked(since(120, 30, 45)), Some((90, true)));
    assert_eq!(picked(since(95, 60, 91)), None, "nothing scraped since");
    // Too young to start a window: none, until the minimum window has passed.
    let young = |now: u64| Bounds {
        min_window: Duration::from_secs(10),
        ..since(now, 60, 85)
    };
    assert_eq!(picked(young(95)), None);
    assert_eq!(picked(young(100)), Some((90, false)));
}

#[test]
fn since_is_placed_on_the_monotonic_clock() {
    let now = Instant::now();
    let wall = UNIX_EPOCH + Duration::from_secs(1_000_000);
    let since = |secs: i64| instant_of(Timestamp::from_unix_seconds(secs), now, wall);
    assert_eq!(since(999_990), now.checked_sub(Duration::from_secs(10)));
    assert_eq!(since(1_000_005), Some(now), "a future start: now");
}

#[test]
fn history_keeps_what_the_retention_needs() {
    let provider = match BuiltinProvider::new(["127.0.0.1:1"]) {
        Ok(p) => p.with_retention(Duration::from_secs(100)),
        Err(err) => panic!("{err}"),
    };
    let endpoint = &provider.endpoints()[0];
    let t0 = Instant::now();
    for s in [0, 40, 80, 120, 160, 200] {
        provider.record(endpoint, snapshot(t0 + Duration::from_secs(s), ""));
    }
    // Out of order (an explicit clock): still sorted.
    provider.record(endpoint, snapshot(t0 + Duration::from_secs(150), ""));
    let kept: Vec<u64> = endpoint
        .history
        .lock()
        .map(|h| {
            h.iter()
                .map(|s| s.at.duration_since(t0).as_secs())
                .collect()
        })
        .unwrap_or_default();
    // Horizon 200 - 100 = 100: 80 is the newest at or before it, so it stays.
    assert_eq!(kept, vec![80, 120, 150, 160, 200]);
}

#[test]
fn replicas_that_stay_keep_their_history_when_the_set_changes() {
    let provider = BuiltinProvider::discovering("test");
    assert!(provider.urls().is_empty());
    provider
        .set_addresses(["10.0.0.1:9901", "10.0.0.2:9901"])
        .unwrap();
    let kept = provider.endpoints()[1].clone();
    provider.record(&kept, snapshot(Instant::now(), ""));
    provider
        .set_addresses(["10.0.0.2:9901", "10.0.0.3:9901", "10.0.0.3:9901"])
        .unwrap();
    let now = provider.endpoints();
    assert_eq!(
        provider.urls(),
        [
            "http://10.0.0.2:9901/metrics",
            "http://10.0.0.3:9901/metrics"
        ]
    );
    assert!(
        Arc::ptr_eq(&now[0], &kept),
        "the same replica, history and all"
    );
    assert_eq!(now[0].history.lock().unwrap().len(), 1);
    // An unusable address changes nothing.
    assert!(provider.set_addresses(["http://[bad"]).is_err());
    assert_eq!(provider.endpoints().len(), 2);
}

#[tokio::test]
async fn without_replicas_a_measurement_is_an_error_naming_where_they_come_from() {
    let provider = BuiltinProvider::discovering("no ready endpoint behind --proxy-metrics a/b");
    let check = crate::validation::MetricCheck {
        name: "request-success-rate".to_owned(),
        kind: MetricKind::RequestSuccessRate,
        interval: Duration::from_secs(60),
        range: Default::default(),
    };
    let query = MetricQuery {
        check: &check,
        name: "podinfo",
        namespace: "test",
        target: "podinfo",
        service: "podinfo",
        template: None,
        since: None,
    };
    match provider.measure_at(query, Instant::now()).await {
        MetricValue::Error(message) => assert_eq!(
            message,
            "no serin-proxy replica to read metrics from (no ready endpoint behind \
             --proxy-metrics a/b)"
        ),
        other => panic!("{other:?}"),
    }
}
