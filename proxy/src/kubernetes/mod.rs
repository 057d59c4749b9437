//! The Kubernetes configuration source: watches the API, builds the same [`Objects`] set the
//! file source builds, applies it through the one compiler, and reports the result in status.
//!
//! ```text
//!  watchers (one per kind, retry with backoff)
//!    GatewayClass Gateway HTTPRoute Service EndpointSlice Backend SessionAffinity
//!        │ reflector stores + a change signal
//!        ▼
//!  debounce (~50 ms) ─► snapshot ─► objects::build ─► Applier::apply(objects, strict=false)
//!                                                       │ table swapped atomically
//!                                                       ▼ problems
//!                                   status::compute (pure, skips no-op writes) ─► status writer
//! ```
//!
//! - [`objects`]: which API objects the proxy serves (Gateways of our classes, routes attached to
//!   them) and Service port resolution through ready `EndpointSlice` endpoints;
//! - [`status`]: HTTPRoute, Gateway and GatewayClass status, computed purely and written with
//!   merge patches to the status subresource;
//! - [`watch`]: the watchers and their stores.
//!
//! When the API server goes away the watchers retry with backoff and the last table keeps
//! serving; the stores keep their contents until a fresh list replaces them.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use tokio::sync::Notify;

use crate::reload::Applier;

pub mod objects;
pub mod status;
pub mod watch;

pub use objects::{GatewayFilter, build};
pub use watch::{Snapshot, Stores};

/// `GatewayClass.spec.controllerName` of the classes serin-proxy serves.
pub const CONTROLLER_NAME: &str = "serin.dev/gateway";
/// Field manager of every write the proxy makes.
pub const FIELD_MANAGER: &str = "serin-proxy";

/// Settings of the Kubernetes source.
#[derive(Debug, Clone)]
pub struct Options {
    /// Serve only the GatewayClass of this name (it must still name [`CONTROLLER_NAME`]);
    /// `None` serves every class that names it.
    pub gateway_class: Option<String>,
    /// How long to wait after a change for more changes before applying.
    pub debounce: Duration,
    /// How soon to try again after an apply failed (e.g. a listener port could not be bound).
    pub retry: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            gateway_class: Some("serin".to_owned()),
            debounce: Duration::from_millis(50),
            retry: Duration::from_secs(2),
        }
    }
}

/// Why the Kubernetes source could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no Kubernetes client configuration (KUBECONFIG or in-cluster): {0}")]
    Config(#[source] kube::Error),
}

/// Builds a client from `KUBECONFIG`, `~/.kube/config` or the in-cluster service account.
pub async fn client() -> Result<Client, Error> {
    Client::try_default().await.map_err(Error::Config)
}

/// Watches the API and applies every change until `stop` completes. `ready` is set once every
/// watcher has listed its kind and the first table has been applied.
pub async fn run(
    client: Client,
    options: Options,
    applier: &mut Applier,
    ready: &AtomicBool,
    stop: impl std::future::Future,
) {
    let changed = Arc::new(Notify::new());
    let stores = Stores::start(client.clone(), changed.clone());
    let (writer, writer_task) = status::Writer::start(client);
    tokio::pin!(stop);

    tokio::select! {
        () = stores.wait_synced() => {}
        _ = &mut stop => {
            stores.abort();
            writer_task.abort();
            return;
        }
    }
    tracing::info!("kubernetes: initial lists synced");

    let filter = GatewayFilter {
        controller_name: CONTROLLER_NAME.to_owned(),
        class: options.gateway_class.clone(),
    };
    let mut last: Option<watch::Fingerprint> = None;
    let mut last_problems = Vec::new();
    let mut failed: Option<String> = None;
    loop {
        let snapshot = stores.snapshot();
        let fingerprint = snapshot.fingerprint();
        if failed.is_some() || last.as_ref() != Some(&fingerprint) {
            let objects = build(&snapshot, &filter);
            match applier.apply(&objects, false) {
                Ok(problems) => {
                    for p in &problems {
                        tracing::warn!(
                            kind = p.kind,
                            object = %p.object,
                            field = %p.field,
                            reason = ?p.reason,
                            "not served as written: {}",
                            p.message
                        );
                    }
                    tracing::info!(
                        gateways = objects.gateways.len(),
                        routes = objects.routes.len(),
                        backends = objects.backends.len(),
                        services = objects.services.len(),
                        problems = problems.len(),
                        "kubernetes: configuration applied"
                    );
                    last_problems = problems;
                    failed = None;
                    if !ready.swap(true, Ordering::AcqRel) {
                        tracing::info!("kubernetes: first table applied; ready");
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "kubernetes: configuration rejected, keeping the last good table");
                    failed = Some(e.to_string());
                }
            }
            last = Some(fingerprint);
        }
        let patches = status::compute(
            &snapshot,
            &filter,
            &last_problems,
            failed.as_deref(),
            &Time(Timestamp::now()),
        );
        writer.send(patches);

        // Wait for the next change (or a retry after a failure), then let a burst settle.
        let wait = async {
            if failed.is_some() {
                let _ = tokio::time::timeout(options.retry, changed.notified()).await;
            } else {
                changed.notified().await;
            }
        };
        tokio::select! {
            () = wait => {}
            _ = &mut stop => break,
        }
        tokio::time::sleep(options.debounce).await;
    }
    stores.abort();
    writer_task.abort();
}
