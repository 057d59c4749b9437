//! The built-in metric provider against real serin-proxy replicas (in-process) routing to
//! real backends with known error ratios and delays.

mod provider_support;

use std::{
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use provider_support::{Backend, Proxy, dead_address, query};
use serin_controller::{
    analysis::{MetricProvider, MetricValue},
    canary::ThresholdRange,
    provider::{BuiltinProvider, PrometheusProvider, Providers, canary_backend},
    validation::{MetricCheck, MetricKind},
};

const MINUTE: Duration = Duration::from_secs(60);

fn check(kind: MetricKind) -> MetricCheck {
    let name = match kind {
        MetricKind::RequestSuccessRate => "request-success-rate",
        MetricKind::RequestDuration => "request-duration",
        _ => "custom",
    };
    MetricCheck {
        name: name.to_owned(),
        kind,
        interval: MINUTE,
        range: ThresholdRange::default(),
    }
}

fn provider(addresses: &[String]) -> BuiltinProvider {
    match BuiltinProvider::new(addresses) {
        Ok(provider) => provider.with_timeout(Duration::from_secs(2)),
        Err(err) => panic!("{err}"),
    }
}

fn value(measured: MetricValue) -> f64 {
    match measured {
        MetricValue::Value(v) => v,
        other => panic!("expected a value, got {other:?}"),
    }
}

#[tokio::test]
async fn success_rate_of_the_canary_over_the_window() {
    // The primary fails everything: counting it would drag the rate far below 90%.
    let primary = Backend::start(1, Duration::ZERO).await;
    let canary = Backend::start(10, Duration::ZERO).await;
    let proxy = Proxy::start((&primary, 50), (&canary, 50)).await;
    let provider = provider(&[proxy.admin()]);
    let success = check(MetricKind::RequestSuccessRate);
    let t0 = Instant::now();

    // No history and no traffic yet.
    assert_eq!(
        provider.measure_at(query(&success), t0).await,
        MetricValue::NoValues
    );

    let statuses = proxy.send(400, 8).await;
    let hits = canary.hits();
    assert!(hits > 100 && primary.hits() > 100, "{statuses:?}");
    // Exactly every tenth canary request failed.
    let expected = 100.0 * (hits - hits / 10) as f64 / hits as f64;
    let rate = value(provider.measure_at(query(&success), t0 + MINUTE).await);
    assert!((rate - expected).abs() < 1e-9, "{rate} != {expected}");
    assert!((89.5..=90.5).contains(&rate), "{rate}");

    // The next window holds only what came after: the canary stopped failing.
    canary.fail_every.store(0, Ordering::SeqCst);
    proxy.send(100, 8).await;
    let rate = value(provider.measure_at(query(&success), t0 + 2 * MINUTE).await);
    assert_eq!(rate, 100.0);

    // No request in the window: no value, which fails the check.
    assert_eq!(
        provider.measure_at(query(&success), t0 + 3 * MINUTE).await,
        MetricValue::NoValues
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn p99_of_a_slow_canary_from_the_histogram() {
    // The primary is slower still: counting it would put the p99 near 400 ms.
    let primary = Backend::start(0, Duration::from_millis(400)).await;
    let canary = Backend::start(0, Duration::from_millis(200)).await;
    let proxy = Proxy::start((&primary, 50), (&canary, 50)).await;
    let provider = provider(&[proxy.admin()]);
    let duration = check(MetricKind::RequestDuration);
    let t0 = Instant::now();
    assert_eq!(
        provider.measure_at(query(&duration), t0).await,
        MetricValue::NoValues
    );

    proxy.send(80, 20).await;
    assert!(canary.hits() >= 20, "canary got {} requests", canary.hits());
    let p99 = value(provider.measure_at(query(&duration), t0 + MINUTE).await);
    // The proxy's buckets are 10^(i/10) ms: 200 ms requests land in (199.5, 251.2]; a
    // loaded machine may push a few into the next bucket, up to 316.2.
    assert!((199.5..=316.3).contains(&p99), "p99 {p99} ms");
    proxy.shutdown().await;
}

#[tokio::test]
async fn replicas_are_summed() {
    let (primary_a, primary_b) = (
        Backend::start(0, Duration::ZERO).await,
        Backend::start(0, Duration::ZERO).await,
    );
    // Replica A's canary never fails, replica B's always does.
    let canary_a = Backend::start(0, Duration::ZERO).await;
    let canary_b = Backend::start(1, Duration::ZERO).await;
    let a = Proxy::start((&primary_a, 0), (&canary_a, 100)).await;
    let b = Proxy::start((&primary_b, 0), (&canary_b, 100)).await;
    let provider = provider(&[a.admin(), b.admin()]);
    let success = check(MetricKind::RequestSuccessRate);
    let t0 = Instant::now();
    assert_eq!(
        provider.measure_at(query(&success), t0).await,
        MetricValue::NoValues
    );

    a.send(30, 5).await;
    b.send(10, 5).await;
    // 30 good on A and 10 bad on B: 75%, which neither replica alone shows.
    let rate = value(provider.measure_at(query(&success), t0 + MINUTE).await);
    assert_eq!(rate, 75.0);
    assert_eq!(provider.urls().len(), 2);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn an_unreachable_replica_is_an_error_naming_it() {
    let primary = Backend::start(0, Duration::ZERO).await;
    let canary = Backend::start(0, Duration::ZERO).await;
    let proxy = Proxy::start((&primary, 0), (&canary, 100)).await;
    let (dead, _refusing) = dead_address();
    let provider = provider(&[proxy.admin(), dead.clone()]);
    let success = check(MetricKind::RequestSuccessRate);
    let t0 = Instant::now();
    let _ = provider.measure_at(query(&success), t0).await;
    proxy.send(20, 5).await;

    // The live replica alone would say 100%: a partial sum is not trusted.
    match provider.measure_at(query(&success), t0 + MINUTE).await {
        MetricValue::Error(message) => {
            assert!(message.contains(&dead), "{message}");
            assert!(!message.contains(&proxy.admin()), "{message}");
            assert!(message.contains("Connection refused"), "{message}");
        }
        other => panic!("expected an error, got {other:?}"),
    }
    // The explicit scrape reports it too.
    assert!(provider.scrape().await.is_err());

    let all_dead = self::provider(std::slice::from_ref(&dead));
    match all_dead.measure_at(query(&success), t0).await {
        MetricValue::Error(message) => assert!(message.contains(&dead), "{message}"),
        other => panic!("expected an error, got {other:?}"),
    }
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_restarted_replica_counts_from_its_restart() {
    let primary = Backend::start(0, Duration::ZERO).await;
    let canary = Backend::start(0, Duration::ZERO).await;
    let before = Proxy::start((&primary, 0), (&canary, 100)).await;
    let (port, admin) = (before.port, before.admin_addr());
    let provider = provider(&[before.admin()]);
    let success = check(MetricKind::RequestSuccessRate);
    before.send(50, 5).await;
    let t0 = Instant::now();
    // The baseline: 50 good requests.
    let _ = provider.measure_at(query(&success), t0).await;

    // The replica restarts on the same addresses and counts from zero: 18 good, 2 bad.
    before.shutdown().await;
    let flaky = Backend::start(10, Duration::ZERO).await;
    let after = Proxy::start_on(port, Some(admin), (&primary, 0), (&flaky, 100)).await;
    after.send(20, 5).await;
    let rate = value(provider.measure_at(query(&success), t0 + MINUTE).await);
    assert_eq!(
        rate, 90.0,
        "counters that went down count from zero, never negative"
    );
    after.shutdown().await;
}

#[tokio::test]
async fn background_scrapes_give_real_time_windows() {
    let primary = Backend::start(0, Duration::ZERO).await;
    let canary = Backend::start(0, Duration::ZERO).await;
    let proxy = Proxy::start((&primary, 0), (&canary, 100)).await;
    let provider = Arc::new(provider(&[proxy.admin()]));
    let scraper = tokio::spawn(provider.clone().scrape_every(Duration::from_millis(50)));

    // Earlier traffic, all good (e.g. the previous release on the same backend).
    proxy.send(100, 10).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let window_start = Instant::now();
    tokio::time::sleep(Duration::from_millis(100)).await;
    canary.fail_every.store(4, Ordering::SeqCst);
    canary.hits.store(0, Ordering::SeqCst);
    proxy.send(40, 4).await;

    // Through the MetricProvider trait, as the controller calls it, with a window that
    // starts after the earlier traffic.
    let mut success = check(MetricKind::RequestSuccessRate);
    success.interval = window_start.elapsed();
    let rate = value(provider.measure(query(&success)).await);
    assert_eq!(rate, 75.0);
    scraper.abort();
    proxy.shutdown().await;
}

#[tokio::test]
async fn providers_route_each_metric_to_its_provider() {
    let primary = Backend::start(0, Duration::ZERO).await;
    let canary = Backend::start(5, Duration::ZERO).await;
    let proxy = Proxy::start((&primary, 0), (&canary, 100)).await;
    let builtin = Arc::new(provider(&[proxy.admin()]));
    builtin.scrape().await.unwrap_or_else(|err| panic!("{err}"));
    proxy.send(20, 5).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let (prometheus_address, _refusing) = dead_address();
    let providers = Providers::new(
        Some(builtin),
        PrometheusProvider::new().with_default_address(format!("http://{prometheus_address}")),
    );
    let mut success = check(MetricKind::RequestSuccessRate);
    success.interval = Duration::from_millis(1);
    assert_eq!(value(providers.measure(query(&success)).await), 80.0);

    // An inline query goes to Prometheus (here: nothing listening there).
    let custom = check(MetricKind::Query("vector(1)".into()));
    match providers.measure(query(&custom)).await {
        MetricValue::Error(message) => assert!(message.contains(&prometheus_address), "{message}"),
        other => panic!("expected an error, got {other:?}"),
    }

    // No proxy address configured: built-in metrics fail, saying why.
    let without = Providers::new(None, PrometheusProvider::new());
    match without.measure(query(&success)).await {
        MetricValue::Error(message) => assert!(
            message.contains("no serin-proxy admin address"),
            "{message}"
        ),
        other => panic!("expected an error, got {other:?}"),
    }
    proxy.shutdown().await;
}

#[tokio::test]
async fn the_canary_backend_name_is_what_the_proxy_exports() {
    let primary = Backend::start(0, Duration::ZERO).await;
    let canary = Backend::start(0, Duration::ZERO).await;
    let proxy = Proxy::start((&primary, 0), (&canary, 100)).await;
    proxy.send(3, 1).await;
    let metrics = proxy.metrics().await;
    let label = format!("backend=\"{}\"", canary_backend("test", "podinfo"));
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("serin_http_requests_total{") && l.contains(&label)),
        "{label} not in:\n{metrics}"
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_window_starts_no_earlier_than_the_release() {
    let primary = Backend::start(0, Duration::ZERO).await;
    let canary = Backend::start(2, Duration::ZERO).await;
    let proxy = Proxy::start((&primary, 0), (&canary, 100)).await;
    let provider = provider(&[proxy.admin()]).with_min_window(Duration::from_millis(100));
    // The previous release: half of its requests failed, and were scraped.
    provider
        .scrape()
        .await
        .unwrap_or_else(|err| panic!("{err}"));
    proxy.send(20, 4).await;
    provider
        .scrape()
        .await
        .unwrap_or_else(|err| panic!("{err}"));
    // The next release starts (status.lastTransitionTime has second precision), healthy.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let since = serin_controller::Timestamp::now();
    provider
        .scrape()
        .await
        .unwrap_or_else(|err| panic!("{err}"));
    canary.fail_every.store(0, Ordering::SeqCst);
    proxy.send(20, 4).await;
    tokio::time::sleep(Duration::from_millis(150)).await;

    // The metric's interval (a minute) reaches back into the previous release; `since` cuts
    // it at the release's start.
    let success = check(MetricKind::RequestSuccessRate);
    let mut released = query(&success);
    released.since = Some(since);
    assert_eq!(value(provider.measure(released).await), 100.0);
    // Without it, the previous release's failures would count.
    assert_eq!(value(provider.measure(query(&success)).await), 75.0);
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_first_measurement_waits_for_its_second_scrape() {
    let primary = Backend::start(0, Duration::ZERO).await;
    let canary = Backend::start(5, Duration::ZERO).await;
    let proxy = Proxy::start((&primary, 0), (&canary, 100)).await;
    // A freshly started engine: no scrape history, traffic flowing.
    let provider = provider(&[proxy.admin()]).with_min_window(Duration::from_millis(600));
    let success = check(MetricKind::RequestSuccessRate);
    let (rate, _) = tokio::join!(provider.measure(query(&success)), async {
        tokio::time::sleep(Duration::from_millis(150)).await;
        proxy.send(20, 5).await
    });
    assert_eq!(value(rate), 80.0);
    proxy.shutdown().await;
}
