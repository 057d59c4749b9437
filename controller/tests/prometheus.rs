//! The Prometheus provider against the real Prometheus server (Debian package `prometheus`,
//! `/usr/bin/prometheus`) scraping a real serin-proxy that routes to backends with a known
//! error ratio. Without the binary these tests fail: they never skip.

mod provider_support;

use std::{
    collections::BTreeMap,
    path::Path,
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use provider_support::{Backend, Proxy, dead_address, free_port, query};
use serin_controller::{
    analysis::{MetricProvider, MetricValue},
    canary::ThresholdRange,
    provider::PrometheusProvider,
    template::{MetricTemplateProvider, MetricTemplateSpec},
    validation::{MetricCheck, MetricKind},
};

const PROMETHEUS: &str = "/usr/bin/prometheus";

/// A Prometheus server on a free loopback port, killed on drop.
struct PrometheusServer {
    child: Child,
    address: String,
    dir: tempfile::TempDir,
}

impl Drop for PrometheusServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl PrometheusServer {
    /// Starts Prometheus scraping `targets` (`HOST:PORT`, `/metrics`) every second and waits
    /// until it is ready.
    async fn start(targets: &[String]) -> PrometheusServer {
        assert!(
            Path::new(PROMETHEUS).exists(),
            "{PROMETHEUS} is missing: install the Debian package `prometheus` \
             (apt-get install prometheus); the Prometheus provider is tested against the real server"
        );
        let dir = tempfile::tempdir().unwrap();
        let targets: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: serin-proxy\n    static_configs:\n      - targets: [{}]\n",
            targets.join(", ")
        );
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).unwrap();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let port = free_port();
        let child = Command::new(PROMETHEUS)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start {PROMETHEUS}: {err}"));
        let mut server = PrometheusServer {
            child,
            address: format!("http://127.0.0.1:{port}"),
            dir,
        };
        server.wait_ready().await;
        server
    }

    async fn wait_ready(&mut self) {
        let provider = PrometheusProvider::new().with_timeout(Duration::from_millis(500));
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("prometheus exited with {status}:\n{}", self.log());
            }
            // `vector(1)` answers once the query engine is up.
            if provider.run(&self.address, "vector(1)").await == MetricValue::Value(1.0) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "prometheus not ready after 60s:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    fn template(&self, query: &str) -> MetricTemplateSpec {
        MetricTemplateSpec {
            provider: Some(MetricTemplateProvider {
                provider_type: Some("prometheus".into()),
                address: Some(self.address.clone()),
                ..MetricTemplateProvider::default()
            }),
            query: Some(query.to_owned()),
        }
    }
}

fn template_check(interval: Duration, variables: &[(&str, &str)]) -> MetricCheck {
    MetricCheck {
        name: "error-rate".into(),
        kind: MetricKind::Template {
            name: "error-rate".into(),
            namespace: None,
            variables: variables
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<BTreeMap<_, _>>(),
        },
        interval,
        range: ThresholdRange {
            min: None,
            max: Some(1.0),
        },
    }
}

const ERROR_RATE: &str = r#"sum(rate(serin_http_requests_total{backend="{{ namespace }}/{{ target }}-canary",code=~"{{ variables.errors }}"}[{{ interval }}]))
/
sum(rate(serin_http_requests_total{backend="{{namespace}}/{{target}}-canary"}[{{interval}}]))
* 100"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_percentage_of_the_canary_through_a_real_prometheus() {
    // The canary fails one request in four; the primary fails them all, so a query that
    // picked the wrong backend could not come out near 25%.
    let primary = Backend::start(1, Duration::ZERO).await;
    let canary = Backend::start(4, Duration::ZERO).await;
    let proxy = Arc::new(Proxy::start((&primary, 50), (&canary, 50)).await);
    let traffic = {
        let proxy = proxy.clone();
        tokio::spawn(async move {
            loop {
                proxy.send(5, 5).await;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let prometheus = PrometheusServer::start(&[proxy.admin()]).await;
    let provider = PrometheusProvider::new();
    let template = prometheus.template(ERROR_RATE);
    let check = template_check(Duration::from_secs(10), &[("errors", "5..")]);
    let mut q = query(&check);
    q.template = Some(&template);

    // Until Prometheus has two scrapes with canary traffic, the ratio has no value.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match provider.measure(q).await {
            MetricValue::Value(_) => break,
            MetricValue::NoValues => {}
            MetricValue::Error(err) => panic!("{err}\n{}", prometheus.log()),
        }
        assert!(
            Instant::now() < deadline,
            "no samples after 60s:\n{}",
            prometheus.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // A few more scrapes so the rate covers several seconds of traffic.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let value = match provider.measure(q).await {
        MetricValue::Value(v) => v,
        other => panic!("expected a value, got {other:?}"),
    };
    assert!((value - 25.0).abs() < 3.0, "error rate {value}%");
    assert!(canary.hits() > 100 && primary.hits() > 100);
    traffic.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_results_nan_api_errors_and_unreachable_servers() {
    let prometheus = PrometheusServer::start(&[]).await;
    let provider = PrometheusProvider::new();
    let address = prometheus.address.as_str();

    assert_eq!(
        provider.run(address, "vector(42)").await,
        MetricValue::Value(42.0)
    );
    assert_eq!(
        provider.run(address, "2.5").await,
        MetricValue::Value(2.5),
        "a scalar"
    );
    assert_eq!(
        provider
            .run(address, r#"serin_http_requests_total{backend="nope"}"#)
            .await,
        MetricValue::NoValues,
        "an empty vector"
    );
    assert_eq!(
        provider.run(address, "vector(0) / vector(0)").await,
        MetricValue::NoValues,
        "NaN: a ratio over no traffic"
    );
    match provider.run(address, "up[1m]").await {
        MetricValue::Error(message) => {
            assert!(message.contains("must return a single number"), "{message}")
        }
        other => panic!("expected an error, got {other:?}"),
    }

    // A rendered template with a syntax error: Prometheus' own message.
    let template = prometheus.template("sum(rate(serin_http_requests_total[{{ interval }}])");
    let check = template_check(Duration::from_secs(30), &[]);
    let mut q = query(&check);
    q.template = Some(&template);
    match provider.measure(q).await {
        MetricValue::Error(message) => {
            assert!(message.contains("prometheus bad_data"), "{message}");
            assert!(message.contains("parse error"), "{message}");
        }
        other => panic!("expected an error, got {other:?}"),
    }

    // An unknown variable never reaches Prometheus.
    let template = prometheus.template("sum(x{ns=\"{{ namespcae }}\"})");
    q.template = Some(&template);
    match provider.measure(q).await {
        MetricValue::Error(message) => {
            assert!(
                message.contains("unknown variable {{ namespcae }}"),
                "{message}"
            )
        }
        other => panic!("expected an error, got {other:?}"),
    }

    // A missing template, an unreachable server, a server that never answers.
    q.template = None;
    match provider.measure(q).await {
        MetricValue::Error(message) => {
            assert!(
                message.contains("MetricTemplate test/error-rate was not found"),
                "{message}"
            )
        }
        other => panic!("expected an error, got {other:?}"),
    }
    let (dead, _refusing) = dead_address();
    match provider.run(&format!("http://{dead}"), "vector(1)").await {
        MetricValue::Error(message) => {
            let expected = format!("request to http://{dead}/api/v1/query failed: ");
            assert!(message.starts_with(&expected), "{message}");
            assert!(message.contains("Connection refused"), "{message}");
        }
        other => panic!("expected an error, got {other:?}"),
    }
    let hung = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hung_address = format!("http://{}", hung.local_addr().unwrap());
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = hung.accept().await {
            held.push(stream);
        }
    });
    let started = Instant::now();
    let impatient = PrometheusProvider::new().with_timeout(Duration::from_millis(300));
    match impatient.run(&hung_address, "vector(1)").await {
        MetricValue::Error(message) => {
            assert!(message.contains("timed out after 300ms"), "{message}")
        }
        other => panic!("expected an error, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(3));
    holder.abort();
}
