//! serin-controller's own HTTP endpoint: `/metrics` (Prometheus text format), `/healthz`
//! (the process serves) and `/readyz` (this replica leads and its watches have synced, or it
//! is a standby that reaches the API server's Lease).
//!
//! The metrics, as Flagger exports them under its own prefix:
//! - `serin_canary_weight{namespace,name}`: the canary's current weight (percent);
//! - `serin_canary_status{namespace,name}`: 0 while running, 1 after success, 2 after
//!   failure;
//! - `serin_canary_total{namespace}`: Canaries the controller drives;
//! - `serin_canary_analysis_duration_seconds{namespace,name}`: time per reconcile (one
//!   analysis step);
//! - `serin_reconcile_errors_total{kind}`: failed reconciles by error kind;
//! - `serin_controller_leader`: 1 while this replica leads.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tracing::warn;

use crate::status::{CanaryStatus, Phase};

/// A Canary's labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CanaryLabels {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NamespaceLabels {
    namespace: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

/// The controller's metrics and health.
pub struct Admin {
    registry: Registry,
    weight: Family<CanaryLabels, Gauge<f64, AtomicU64>>,
    status: Family<CanaryLabels, Gauge>,
    total: Family<NamespaceLabels, Gauge>,
    duration: Family<CanaryLabels, Histogram>,
    errors: Family<KindLabels, Counter>,
    leader: Gauge,
    /// Set once this replica leads and its watches have synced.
    pub synced: AtomicBool,
    /// Set while this replica is a standby that reaches its Lease.
    pub standby: AtomicBool,
}

impl Default for Admin {
    fn default() -> Admin {
        Admin::new()
    }
}

impl Admin {
    /// Registers every metric.
    pub fn new() -> Admin {
        let mut registry = Registry::default();
        let weight = Family::<CanaryLabels, Gauge<f64, AtomicU64>>::default();
        let status = Family::<CanaryLabels, Gauge>::default();
        let total = Family::<NamespaceLabels, Gauge>::default();
        let duration = Family::<CanaryLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ])
        });
        let errors = Family::<KindLabels, Counter>::default();
        let leader = Gauge::default();
        registry.register(
            "serin_canary_weight",
            "The canary's traffic weight (percent)",
            weight.clone(),
        );
        registry.register(
            "serin_canary_status",
            "The release's state: 0 running, 1 succeeded, 2 failed",
            status.clone(),
        );
        registry.register(
            "serin_canary_total",
            "Canaries this controller drives",
            total.clone(),
        );
        registry.register(
            "serin_canary_analysis_duration_seconds",
            "Time taken by one reconcile (one analysis step)",
            duration.clone(),
        );
        registry.register(
            "serin_reconcile_errors",
            "Reconciles that failed, by error kind",
            errors.clone(),
        );
        registry.register(
            "serin_controller_leader",
            "1 while this replica holds the leader Lease",
            leader.clone(),
        );
        Admin {
            registry,
            weight,
            status,
            total,
            duration,
            errors,
            leader,
            synced: AtomicBool::new(false),
            standby: AtomicBool::new(false),
        }
    }

    /// Records a reconcile of `canary` that took `seconds` and left `status`.
    pub fn observe(&self, canary: &CanaryLabels, status: &CanaryStatus, seconds: f64) {
        self.duration.get_or_create(canary).observe(seconds);
        self.weight
            .get_or_create(canary)
            .set(status.canary_weight.as_percent());
        let state = match status.phase {
            Some(Phase::Succeeded) => 1,
            Some(Phase::Failed) => 2,
            _ => 0,
        };
        self.status.get_or_create(canary).set(state);
    }

    /// Counts the Canaries per namespace (from the controller's store).
    pub fn count<'a>(&self, namespaces: impl Iterator<Item = &'a str>) {
        self.total.clear();
        for namespace in namespaces {
            self.total
                .get_or_create(&NamespaceLabels {
                    namespace: namespace.to_owned(),
                })
                .inc();
        }
    }

    /// Forgets a deleted Canary.
    pub fn forget(&self, canary: &CanaryLabels) {
        self.weight.remove(canary);
        self.status.remove(canary);
        self.duration.remove(canary);
    }

    /// Counts a failed reconcile.
    pub fn error(&self, kind: &str) {
        self.errors
            .get_or_create(&KindLabels {
                kind: kind.to_owned(),
            })
            .inc();
    }

    /// Records whether this replica leads.
    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    fn ready(&self) -> bool {
        self.synced.load(Ordering::Relaxed) || self.standby.load(Ordering::Relaxed)
    }

    fn answer(&self, path: &str) -> Response<Full<Bytes>> {
        let text = |status: StatusCode, body: &str| {
            Response::builder()
                .status(status)
                .header("content-type", "text/plain; charset=utf-8")
                .body(Full::new(Bytes::from(body.to_owned())))
                .expect("a valid response")
        };
        match path {
            "/healthz" => text(StatusCode::OK, "ok\n"),
            "/readyz" if self.ready() => text(StatusCode::OK, "ok\n"),
            "/readyz" => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
            "/metrics" => {
                let mut body = String::new();
                match prometheus_client::encoding::text::encode(&mut body, &self.registry) {
                    Ok(()) => Response::builder()
                        .header(
                            "content-type",
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )
                        .body(Full::new(Bytes::from(body)))
                        .expect("a valid response"),
                    Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
                }
            }
            _ => text(StatusCode::NOT_FOUND, "not found\n"),
        }
    }
}

/// Serves `admin` on `listener` until the process ends.
pub async fn serve(listener: TcpListener, admin: Arc<Admin>) {
    loop {
        let (stream, peer): (_, SocketAddr) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                warn!("admin endpoint: accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let admin = admin.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                let answer = admin.answer(request.uri().path());
                async move { Ok::<_, Infallible>(answer) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%peer, "admin connection: {e}");
            }
        });
    }
}
