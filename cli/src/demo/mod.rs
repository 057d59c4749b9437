//! `serin demo`: a whole canary release on one machine, with the production pieces.
//!
//! ```text
//!  load generator ──> serin-proxy (library, routing dir) ──> v1 "primary" / v2 "canary" apps
//!                          │ /metrics
//!  standalone engine <─────┘ built-in provider      acceptance-test webhook (pre-rollout)
//!        └── writes podinfo-primary / podinfo-canary Backends and the HTTPRoute
//! ```
//!
//! The engine, the provider, the webhook client and the proxy are the ones `serin rollout`
//! and `serin-proxy` use; the two app versions and the hook are serin-testapp, the app the
//! test cluster runs for podinfo; only the load is made up. The scenario decides how v2
//! behaves, through the test app's fault settings: `healthy`, `errors` (a share of 500s) or
//! `latency` (slow answers).

mod apps;
mod chart;
mod load;
mod progress;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serin_testapp::Faults;

use crate::manifest::load_canary;
use crate::standalone::{Engine, write_atomic};
use serin_controller::error::{Error, Result};
use serin_controller::event::{Event, EventType};
use serin_controller::provider::builtin::BuiltinProvider;
use serin_controller::status::Phase;
use serin_controller::webhook_client::HttpWebhookClient;

/// How the new version behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// v2 is as good as v1: the release is promoted.
    Healthy,
    /// v2 answers 500 to about one request in five: the release is rolled back.
    Errors,
    /// v2 takes about 700 ms per request: the release is rolled back.
    Latency,
}

impl Scenario {
    /// How serin-testapp's v2 misbehaves.
    pub fn faults(self) -> Faults {
        match self {
            Scenario::Healthy => Faults::default(),
            Scenario::Errors => Faults {
                error_percent: 20.0,
                ..Faults::default()
            },
            Scenario::Latency => Faults {
                delay: Duration::from_millis(700),
                ..Faults::default()
            },
        }
    }

    /// The phase the release must end in.
    pub fn expected(self) -> Phase {
        match self {
            Scenario::Healthy => Phase::Succeeded,
            Scenario::Errors | Scenario::Latency => Phase::Failed,
        }
    }
}

/// Demo settings.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    pub scenario: Scenario,
    /// Where `rollout.svg` is written.
    pub out: PathBuf,
    /// Requests per second the load generator sends.
    pub rate: u32,
    /// Redraw one progress line in place (a terminal) instead of printing lines.
    pub live: bool,
}

/// How the demo ended.
#[derive(Debug)]
pub struct DemoOutcome {
    pub phase: Option<Phase>,
    /// Every event, in order.
    pub events: Vec<String>,
    /// Canary weights announced by `Advance ...` events, in percent.
    pub weights: Vec<f64>,
    pub chart: PathBuf,
    pub elapsed: Duration,
}

const CANARY: &str = r#"
apiVersion: serin.dev/v1alpha1
kind: Canary
metadata:
  name: podinfo
  namespace: demo
spec:
  targetRef:
    apiVersion: serin.dev/v1alpha1
    kind: Backend
    name: podinfo
  progressDeadlineSeconds: 60
  service:
    port: 80
    gatewayRefs:
    - name: public
  analysis:
    interval: 1s
    threshold: 3
    maxWeight: 50
    stepWeight: 10
    metrics:
    - name: request-success-rate
      thresholdRange:
        min: 99
      interval: 3s
    - name: request-duration
      thresholdRange:
        max: 500
      interval: 3s
    webhooks:
    - name: acceptance-test
      type: pre-rollout
      url: WEBHOOK_URL
      timeout: 5s
      metadata:
        type: bash
        cmd: "curl -s http://podinfo-canary.demo/"
"#;

/// Checks the options before anything starts: a rate of at least 1 request per second, and an
/// output directory that exists and accepts files.
pub fn check_options(options: &DemoOptions) -> Result<()> {
    if options.rate < 1 {
        return Err(Error::Standalone(format!(
            "--rate {}: must be at least 1 request per second",
            options.rate
        )));
    }
    let out = options.out.display();
    if !options.out.is_dir() {
        return Err(Error::Standalone(format!(
            "--out {out}: not found or not a directory"
        )));
    }
    tempfile::Builder::new()
        .prefix(".serin-demo-")
        .tempfile_in(&options.out)
        .map_err(|e| Error::Standalone(format!("--out {out}: cannot write there: {e}")))?;
    Ok(())
}

/// Where `rollout.svg` goes when no `--out` is given: `serin-demo` in the system's temporary
/// directory (created), so a run never leaves files in the working directory.
pub fn default_out() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join("serin-demo");
    std::fs::create_dir_all(&dir)
        .map_err(|e| Error::Standalone(format!("{}: {e}", dir.display())))?;
    Ok(dir)
}

/// Runs the demo; `report` receives each line to print. Fails at once, before starting
/// anything, on the problems [`check_options`] finds.
pub async fn run(options: &DemoOptions, mut report: impl FnMut(&str)) -> Result<DemoOutcome> {
    check_options(options)?;
    let started = Instant::now();
    let io = |what: &str, e: std::io::Error| Error::Standalone(format!("{what}: {e}"));
    let work = tempfile::Builder::new()
        .prefix("serin-demo-")
        .tempdir()
        .map_err(|e| io("temporary directory", e))?;
    let routes = work.path().join("routes");

    // The two versions of the app, and the acceptance-test hook.
    let v1 = apps::start("1.0.0", Faults::default()).await?;
    let v2 = apps::start("2.0.0", options.scenario.faults()).await?;
    let hook = apps::start_webhook().await?;

    // The routing directory: a Gateway and the operator's Backend, pointing at v1.
    let port = free_port().map_err(|e| io("listener port", e))?;
    write_atomic(
        &routes.join("gateway.yaml"),
        &format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: public, namespace: demo}}\nspec:\n  gatewayClassName: serin\n  listeners: [{{name: http, port: {port}, protocol: HTTP}}]\n"
        ),
    )?;
    write_atomic(
        &routes.join("podinfo.yaml"),
        &target_backend(v1.local_addr().port()),
    )?;

    let mut proxy_options = serin_proxy::runtime::Options::loopback(routes.clone());
    proxy_options.watch_interval = Duration::from_millis(100);
    proxy_options.drain_timeout = Duration::from_secs(2);
    let proxy = serin_proxy::runtime::start(proxy_options)
        .await
        .map_err(|e| Error::Standalone(format!("serin-proxy: {e}")))?;
    report(&format!(
        "serin-proxy listening on 127.0.0.1:{port} (admin {}), routing directory {}",
        proxy.admin_addr,
        routes.display()
    ));

    let provider = Arc::new(
        BuiltinProvider::new([proxy.admin_addr.to_string()])?
            .with_min_window(Duration::from_millis(500)),
    );
    let scraper = tokio::spawn(provider.clone().scrape_every(Duration::from_millis(500)));
    let load = load::start(port, options.rate);
    report(&format!(
        "load: {} requests/s through the proxy; v1 on :{}, v2 on :{} ({:?})",
        options.rate,
        v1.local_addr().port(),
        v2.local_addr().port(),
        options.scenario
    ));

    let canary = load_canary(&CANARY.replace("WEBHOOK_URL", &apps::webhook_url(&hook)))?;
    let mut engine = Engine::new(
        canary,
        routes.clone(),
        work.path().join("state/podinfo.json"),
        provider,
        Arc::new(HttpWebhookClient::new()),
    )?;

    let mut outcome = DemoOutcome {
        phase: None,
        events: Vec::new(),
        weights: Vec::new(),
        chart: options.out.join("rollout.svg"),
        elapsed: Duration::ZERO,
    };
    let mut timeline = Vec::new();
    let mut progress = progress::Progress::new(options.live);
    let mut released = false;
    let deadline = started + Duration::from_secs(100);
    let interval = engine.settings().interval;
    loop {
        let tick = Instant::now();
        let step = engine.step(serin_controller::Timestamp::now()).await?;
        let status = engine.status();
        for event in step.plan.events.iter().chain(&step.events) {
            progress.clear();
            report(&format_event(started, event));
            if let Some(w) = event
                .message
                .strip_prefix("Advance podinfo.demo canary weight ")
                && let Ok(w) = w.parse()
            {
                outcome.weights.push(w);
            }
            outcome.events.push(event.message.clone());
        }
        let sample = chart::Sample {
            at: started.elapsed().as_secs_f64(),
            weight: status.canary_weight.as_percent(),
            success_rate: metric(&step.plan.status, "request-success-rate"),
            p99_ms: metric(&step.plan.status, "request-duration"),
            events: step.plan.events.iter().map(|e| e.message.clone()).collect(),
        };
        if let Some(line) = progress.line(status, &sample, load.stats()) {
            report(&line);
        }
        timeline.push(sample);

        match status.phase {
            Some(Phase::Initialized) if !released => {
                // The release: point the operator's Backend at v2.
                write_atomic(
                    &routes.join("podinfo.yaml"),
                    &target_backend(v2.local_addr().port()),
                )?;
                progress.clear();
                report(&format!(
                    "{:>5.1}s  Deploying podinfo v2 ({:?}): Backend podinfo now points at :{}",
                    started.elapsed().as_secs_f64(),
                    options.scenario,
                    v2.local_addr().port()
                ));
                released = true;
            }
            Some(phase @ (Phase::Succeeded | Phase::Failed)) if released => {
                outcome.phase = Some(phase);
                break;
            }
            _ => {}
        }
        if Instant::now() > deadline {
            progress.clear();
            report("the release did not finish within 100 s");
            outcome.phase = status.phase;
            break;
        }
        let next = step.plan.requeue_after.min(interval);
        tokio::time::sleep(next.saturating_sub(tick.elapsed())).await;
    }
    progress.clear();
    outcome.elapsed = started.elapsed();
    let served = load.stop().await;
    report(&format!(
        "load: {} requests sent, {} answered 5xx, {} failed (no response)",
        served.sent, served.server_errors, served.failed
    ));
    if served.dropped > 0 {
        report(&format!(
            "load: {} requests not sent: the load generator could not keep up with {} \
             requests/s (at most {} in flight); that is its own limit on this machine, not a \
             proxy failure; try a lower --rate",
            served.dropped,
            options.rate,
            load::MAX_IN_FLIGHT
        ));
    }
    scraper.abort();
    proxy.shutdown().await;

    let thresholds = chart::Thresholds {
        min_success_rate: 99.0,
        max_p99_ms: 500.0,
    };
    let title = format!("serin demo: {:?} scenario", options.scenario);
    chart::draw(&outcome.chart, &timeline, thresholds, &title)?;
    report(&format!("chart written to {}", outcome.chart.display()));
    Ok(outcome)
}

fn target_backend(port: u16) -> String {
    format!(
        "# The operator's Backend: the version being released.\napiVersion: serin.dev/v1alpha1\nkind: Backend\nmetadata: {{name: podinfo, namespace: demo}}\nspec:\n  endpoints: [{{host: 127.0.0.1, port: {port}}}]\n"
    )
}

fn metric(status: &serin_controller::status::CanaryStatus, name: &str) -> Option<f64> {
    status
        .metrics
        .iter()
        .find(|m| m.name == name)
        .and_then(|m| m.value)
}

fn format_event(started: Instant, event: &Event) -> String {
    let kind = match event.event_type {
        EventType::Normal => "Normal ",
        EventType::Warning => "Warning",
    };
    format!(
        "{:>5.1}s  {kind}  {}",
        started.elapsed().as_secs_f64(),
        event.message
    )
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}
