//! The demo's load: a steady request rate through the proxy, open loop (requests are sent on
//! schedule whether or not earlier ones have answered, up to a concurrency bound).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

/// Counts of what the load saw.
#[derive(Debug, Default)]
pub(crate) struct Counts {
    pub(crate) sent: u64,
    pub(crate) server_errors: u64,
    pub(crate) failed: u64,
}

#[derive(Default)]
struct Shared {
    sent: AtomicU64,
    server_errors: AtomicU64,
    failed: AtomicU64,
}

pub(crate) struct Load {
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

/// Starts sending `rate` GET requests per second to the proxy's listener on `port`.
pub(crate) fn start(port: u16, rate: u32) -> Load {
    let shared = Arc::new(Shared::default());
    let counts = shared.clone();
    let task = tokio::spawn(async move {
        let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
        let permits = Arc::new(Semaphore::new(256));
        let mut ticker = tokio::time::interval(Duration::from_secs(1) / rate.max(1));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let Ok(uri) = format!("http://127.0.0.1:{port}/").parse::<http::Uri>() else {
            return;
        };
        loop {
            ticker.tick().await;
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                counts.failed.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let (client, uri, counts) = (client.clone(), uri.clone(), counts.clone());
            counts.sent.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(async move {
                match client.get(uri).await {
                    Ok(response) => {
                        if response.status().is_server_error() {
                            counts.server_errors.fetch_add(1, Ordering::Relaxed);
                        }
                        let _ = response.into_body().collect().await;
                    }
                    Err(_) => {
                        counts.failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                drop(permit);
            });
        }
    });
    Load { shared, task }
}

impl Load {
    pub(crate) fn stats(&self) -> Counts {
        Counts {
            sent: self.shared.sent.load(Ordering::Relaxed),
            server_errors: self.shared.server_errors.load(Ordering::Relaxed),
            failed: self.shared.failed.load(Ordering::Relaxed),
        }
    }

    /// Stops sending and returns the totals.
    pub(crate) async fn stop(self) -> Counts {
        self.task.abort();
        let counts = self.stats();
        let _ = self.task.await;
        counts
    }
}
