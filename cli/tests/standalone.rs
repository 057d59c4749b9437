//! Standalone mode end to end: the engine drives a routing directory, a real serin-proxy serves
//! it, real backends answer. Metrics and webhooks come from scripted adapters here (the real
//! providers have their own tests); everything else is the production path.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serin_cli::manifest::load_canary;
use serin_cli::standalone::Engine;
use serin_controller::analysis::{BoxFuture, MetricProvider, MetricQuery, MetricValue};
use serin_controller::stage::HookResult;
use serin_controller::validation::Webhook;
use serin_controller::webhook::{WebhookClient, WebhookPayload};
use serin_controller::{Phase, Timestamp};

/// Answers `version` to every request.
async fn version_server(version: &'static str) -> (u16, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |_req| async move {
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                        Bytes::from_static(version.as_bytes()),
                    )))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (port, task)
}

/// Success rates to report, in order (the last one repeats).
struct Scripted(Mutex<VecDeque<f64>>);

impl MetricProvider for Scripted {
    fn measure<'a>(&'a self, _query: MetricQuery<'a>) -> BoxFuture<'a, MetricValue> {
        let mut values = self.0.lock().unwrap();
        let value = if values.len() > 1 {
            values.pop_front()
        } else {
            values.front().copied()
        };
        Box::pin(async move { MetricValue::Value(value.unwrap_or(100.0)) })
    }
}

/// Answers 100% and records each query's `since`.
#[derive(Default)]
struct SinceRecorder(Mutex<Vec<Option<Timestamp>>>);

impl MetricProvider for SinceRecorder {
    fn measure<'a>(&'a self, query: MetricQuery<'a>) -> BoxFuture<'a, MetricValue> {
        self.0.lock().unwrap().push(query.since);
        Box::pin(async { MetricValue::Value(100.0) })
    }
}

struct NoHooks;

impl WebhookClient for NoHooks {
    fn call<'a>(
        &'a self,
        _hook: &'a Webhook,
        _payload: &'a WebhookPayload,
    ) -> BoxFuture<'a, HookResult> {
        Box::pin(async { HookResult::Passed })
    }
}

fn write(dir: &Path, name: &str, text: &str) {
    serin_cli::standalone::write_atomic(&dir.join(name), text).unwrap();
}

fn backend(name: &str, port: u16) -> String {
    format!(
        "apiVersion: serin.dev/v1alpha1\nkind: Backend\nmetadata: {{name: {name}, namespace: test}}\nspec:\n  endpoints: [{{host: 127.0.0.1, port: {port}}}]\n"
    )
}

const CANARY: &str = r#"
apiVersion: serin.dev/v1alpha1
kind: Canary
metadata: {name: podinfo, namespace: test}
spec:
  targetRef: {apiVersion: serin.dev/v1alpha1, kind: Backend, name: podinfo}
  service:
    port: 80
    gatewayRefs: [{name: public, namespace: test}]
  analysis:
    interval: 1s
    threshold: 2
    maxWeight: 40
    stepWeight: 20
    metrics:
    - {name: request-success-rate, thresholdRange: {min: 99}, interval: 1m}
"#;

struct World {
    dir: tempfile::TempDir,
    proxy: serin_proxy::runtime::Running,
    port: u16,
    _servers: Vec<tokio::task::JoinHandle<()>>,
    v2: u16,
}

async fn world() -> World {
    let (v1, s1) = version_server("v1").await;
    let (v2, s2) = version_server("v2").await;
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    write(
        dir.path(),
        "gateway.yaml",
        &format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: public, namespace: test}}\nspec:\n  gatewayClassName: serin\n  listeners: [{{name: http, port: {port}, protocol: HTTP}}]\n"
        ),
    );
    write(dir.path(), "podinfo.yaml", &backend("podinfo", v1));
    let mut options = serin_proxy::runtime::Options::loopback(dir.path().to_owned());
    options.watch_interval = Duration::from_millis(50);
    let proxy = serin_proxy::runtime::start(options).await.unwrap();
    World {
        dir,
        proxy,
        port,
        _servers: vec![s1, s2],
        v2,
    }
}

impl World {
    fn engine(&self, rates: &[f64]) -> Engine {
        Engine::new(
            load_canary(CANARY).unwrap(),
            self.dir.path().to_owned(),
            self.dir.path().join(".state/podinfo.json"),
            Arc::new(Scripted(Mutex::new(rates.iter().copied().collect()))),
            Arc::new(NoHooks),
        )
        .unwrap()
    }

    /// Which versions 200 requests through the proxy reach, once the proxy has the new files.
    async fn versions(&self) -> (usize, usize) {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
        let (mut v1, mut v2) = (0, 0);
        for _ in 0..200 {
            let uri = format!("http://127.0.0.1:{}/", self.port).parse().unwrap();
            let body = client
                .get(uri)
                .await
                .unwrap()
                .into_body()
                .collect()
                .await
                .unwrap()
                .to_bytes();
            match &body[..] {
                b"v1" => v1 += 1,
                b"v2" => v2 += 1,
                other => panic!("unexpected answer {other:?}"),
            }
        }
        (v1, v2)
    }
}

fn messages(report: &serin_cli::standalone::StepReport) -> Vec<String> {
    report
        .plan
        .events
        .iter()
        .chain(&report.events)
        .map(|e| e.message.clone())
        .collect()
}

#[tokio::test]
async fn a_release_is_analysed_shifted_and_promoted_through_the_routing_directory() {
    let w = world().await;
    let mut engine = w.engine(&[100.0]);
    let mut now = Timestamp::from_unix_seconds(1_700_000_000);
    let mut tick = || {
        now = now.saturating_add(Duration::from_secs(1));
        now
    };

    // Bootstrap: podinfo-primary copies podinfo (v1); all traffic to the primary.
    let mut log = Vec::new();
    for _ in 0..2 {
        log.extend(messages(&engine.step(tick()).await.unwrap()));
    }
    assert_eq!(engine.status().phase, Some(Phase::Initialized), "{log:#?}");
    assert_eq!(w.versions().await, (200, 0));

    // Release v2: point the target at it.
    write(w.dir.path(), "podinfo.yaml", &backend("podinfo", w.v2));
    let mut weights = Vec::new();
    let mut shares = Vec::new();
    for _ in 0..12 {
        let report = engine.step(tick()).await.unwrap();
        log.extend(messages(&report));
        if report
            .plan
            .events
            .iter()
            .any(|e| e.message.starts_with("Advance"))
        {
            weights.push(engine.status().canary_weight);
            shares.push(w.versions().await.1);
        }
        // The engine restarts from its status file halfway through.
        if weights.len() == 1 {
            engine = w.engine(&[100.0]);
        }
        if engine.status().phase == Some(Phase::Succeeded) {
            break;
        }
    }
    assert_eq!(engine.status().phase, Some(Phase::Succeeded), "{log:#?}");
    assert!(
        log.iter()
            .any(|m| m == "New revision detected! Scaling up podinfo.test"),
        "{log:#?}"
    );
    assert!(
        log.iter()
            .any(|m| m == "Advance podinfo.test canary weight 20"),
        "{log:#?}"
    );
    assert!(
        log.iter()
            .any(|m| m == "Advance podinfo.test canary weight 40"),
        "{log:#?}"
    );
    assert!(
        log.iter()
            .any(|m| m == "Copying podinfo.test template spec to podinfo-primary.test"),
        "{log:#?}"
    );
    assert!(
        log.iter()
            .any(|m| m == "Promotion completed! Scaling down podinfo.test"),
        "{log:#?}"
    );
    // Traffic followed the weights: about 20% then 40% to v2 (binomial, n = 200).
    assert!((15..=70).contains(&shares[0]), "{shares:?}");
    assert!((50..=115).contains(&shares[1]), "{shares:?}");
    // Promoted: the primary now serves v2, and the canary Backend is empty.
    assert_eq!(w.versions().await, (0, 200));
    let canary = std::fs::read_to_string(w.dir.path().join("podinfo-canary.yaml")).unwrap();
    assert!(canary.contains("endpoints: []"), "{canary}");
    w.proxy.shutdown().await;
}

#[tokio::test]
async fn failed_checks_roll_back_to_the_untouched_primary() {
    let w = world().await;
    let mut engine = w.engine(&[100.0, 50.0]);
    let mut now = Timestamp::from_unix_seconds(1_700_000_000);
    let mut log = Vec::new();
    for _ in 0..2 {
        now = now.saturating_add(Duration::from_secs(1));
        log.extend(messages(&engine.step(now).await.unwrap()));
    }
    write(w.dir.path(), "podinfo.yaml", &backend("podinfo", w.v2));
    for _ in 0..10 {
        now = now.saturating_add(Duration::from_secs(1));
        log.extend(messages(&engine.step(now).await.unwrap()));
        if engine.status().phase == Some(Phase::Failed) {
            break;
        }
    }
    assert_eq!(engine.status().phase, Some(Phase::Failed), "{log:#?}");
    assert!(
        log.iter()
            .any(|m| m == "Rolling back podinfo.test failed checks threshold reached 2"),
        "{log:#?}"
    );
    assert!(
        log.iter()
            .any(|m| m == "Canary failed! Scaling down podinfo.test"),
        "{log:#?}"
    );
    assert_eq!(
        w.versions().await,
        (200, 0),
        "all traffic back on the v1 primary"
    );
    w.proxy.shutdown().await;
}

#[tokio::test]
async fn a_missing_target_is_reported_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let mut engine = Engine::new(
        load_canary(CANARY).unwrap(),
        dir.path().to_owned(),
        dir.path().join(".state/podinfo.json"),
        Arc::new(Scripted(Mutex::new(VecDeque::new()))),
        Arc::new(NoHooks),
    )
    .unwrap();
    let err = engine
        .step(Timestamp::from_unix_seconds(1))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("Backend test/podinfo (spec.targetRef) not found"),
        "{err}"
    );
}

#[tokio::test]
async fn metrics_are_measured_from_the_last_traffic_change() {
    let w = world().await;
    let recorder = Arc::new(SinceRecorder::default());
    let mut engine = Engine::new(
        load_canary(CANARY).unwrap(),
        w.dir.path().to_owned(),
        w.dir.path().join(".state/podinfo.json"),
        recorder.clone(),
        Arc::new(NoHooks),
    )
    .unwrap();
    let mut now = Timestamp::from_unix_seconds(1_700_000_000);
    for _ in 0..2 {
        now = now.saturating_add(Duration::from_secs(1));
        engine.step(now).await.unwrap();
    }
    write(w.dir.path(), "podinfo.yaml", &backend("podinfo", w.v2));
    let mut measured = 0;
    for _ in 0..8 {
        // The status the step starts from says when the traffic last changed.
        let changed = engine.status().last_transition_time;
        now = now.saturating_add(Duration::from_secs(1));
        engine.step(now).await.unwrap();
        let since: Vec<_> = recorder.0.lock().unwrap().drain(..).collect();
        measured += since.len();
        assert!(
            since.iter().all(|s| *s == changed),
            "{since:?} != {changed:?}"
        );
        assert!(changed.is_some());
    }
    assert!(measured >= 2, "the release was analysed");
    w.proxy.shutdown().await;
}

/// Every step applies the whole desired state: a route file deleted or edited while nothing
/// changes is put back at the next step (not only when the weight changes).
#[tokio::test]
async fn a_deleted_or_edited_route_is_put_back_at_the_next_step() {
    let w = world().await;
    let mut engine = w.engine(&[100.0]);
    let mut now = Timestamp::from_unix_seconds(1_700_000_000);
    for _ in 0..3 {
        now = now.saturating_add(Duration::from_secs(1));
        engine.step(now).await.unwrap();
    }
    assert_eq!(engine.status().phase, Some(Phase::Initialized));
    let route = w.dir.path().join("podinfo-route.yaml");
    let written = std::fs::read_to_string(&route).unwrap();
    assert_eq!(w.versions().await, (200, 0));

    std::fs::remove_file(&route).unwrap();
    now = now.saturating_add(Duration::from_secs(1));
    engine.step(now).await.unwrap();
    assert_eq!(
        std::fs::read_to_string(&route).unwrap(),
        written,
        "rewritten"
    );

    std::fs::write(&route, written.replace("podinfo-primary", "podinfo-canary")).unwrap();
    now = now.saturating_add(Duration::from_secs(1));
    engine.step(now).await.unwrap();
    assert_eq!(
        std::fs::read_to_string(&route).unwrap(),
        written,
        "repaired"
    );
    assert_eq!(
        w.versions().await,
        (200, 0),
        "all traffic on the primary again"
    );
    w.proxy.shutdown().await;
}
