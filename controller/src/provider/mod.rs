//! Metric providers: the adapters behind [`MetricProvider`].
//!
//! * [`builtin`]: `request-success-rate` and `request-duration` from serin-proxy's own
//!   `/metrics`, no Prometheus needed;
//! * [`prometheus`]: `MetricTemplate` (and legacy inline) PromQL queries;
//! * [`Providers`]: one [`MetricProvider`] that sends each metric to the provider for its
//!   kind, which is what the controller and standalone mode hold.
//!
//! Building one for a set of proxy replicas:
//!
//! ```no_run
//! # async fn demo() -> serin_controller::Result<()> {
//! use std::{sync::Arc, time::Duration};
//! use serin_controller::provider::{BuiltinProvider, PrometheusProvider, Providers};
//!
//! let builtin = Arc::new(BuiltinProvider::new(["127.0.0.1:9901", "127.0.0.1:9902"])?);
//! // Keep a scrape history so every window has a start.
//! tokio::spawn(builtin.clone().scrape_every(Duration::from_secs(5)));
//! let providers = Providers::new(Some(builtin), PrometheusProvider::new());
//! # let _ = providers;
//! # Ok(())
//! # }
//! ```

pub mod builtin;
mod exposition;
pub(crate) mod fetch;
pub mod prometheus;

use std::sync::Arc;

pub use builtin::{BuiltinProvider, canary_backend};
pub use prometheus::PrometheusProvider;

use crate::analysis::{BoxFuture, MetricProvider, MetricQuery, MetricValue};

/// Sends built-in metrics to the built-in provider and custom ones (templates, inline
/// queries) to Prometheus.
#[derive(Clone, Debug)]
pub struct Providers {
    builtin: Option<Arc<BuiltinProvider>>,
    prometheus: PrometheusProvider,
}

impl Providers {
    /// Routes to `builtin` (when `None`, built-in metrics fail with an error saying no proxy
    /// address is configured) and `prometheus`.
    pub fn new(builtin: Option<Arc<BuiltinProvider>>, prometheus: PrometheusProvider) -> Providers {
        Providers {
            builtin,
            prometheus,
        }
    }
}

impl MetricProvider for Providers {
    fn measure<'a>(&'a self, query: MetricQuery<'a>) -> BoxFuture<'a, MetricValue> {
        if !query.check.kind.is_builtin() {
            return self.prometheus.measure(query);
        }
        match &self.builtin {
            Some(builtin) => builtin.measure(query),
            None => Box::pin(std::future::ready(MetricValue::Error(format!(
                "{} needs the built-in provider, but no serin-proxy admin address is configured",
                query.check.name
            )))),
        }
    }
}
