//! The demo's load: a steady request rate through the proxy, open loop (requests are sent on
//! schedule whether or not earlier ones have answered, up to a concurrency bound).
//!
//! A request due while the bound is reached is not sent and is counted as `dropped`: that is
//! the load generator not keeping up with the rate, not a failure of the proxy, and the two are
//! reported apart.

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
    /// Sent, but no response (connection refused or reset, or the proxy closed it).
    pub(crate) failed: u64,
    /// Due but not sent: the concurrency bound was reached (the load generator is saturated).
    pub(crate) dropped: u64,
}

#[derive(Default)]
struct Shared {
    sent: AtomicU64,
    server_errors: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
}

pub(crate) struct Load {
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

/// Requests in flight at most.
pub(crate) const MAX_IN_FLIGHT: usize = 256;

/// Starts sending `rate` GET requests per second to the proxy's listener on `port`.
pub(crate) fn start(port: u16, rate: u32) -> Load {
    start_bounded(port, rate, MAX_IN_FLIGHT)
}

/// [`start`] with at most `max_in_flight` requests in flight.
fn start_bounded(port: u16, rate: u32, max_in_flight: usize) -> Load {
    let shared = Arc::new(Shared::default());
    let counts = shared.clone();
    let task = tokio::spawn(async move {
        let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
        let permits = Arc::new(Semaphore::new(max_in_flight));
        let mut ticker = tokio::time::interval(Duration::from_secs(1) / rate.max(1));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let Ok(uri) = format!("http://127.0.0.1:{port}/").parse::<http::Uri>() else {
            return;
        };
        loop {
            ticker.tick().await;
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                counts.dropped.fetch_add(1, Ordering::Relaxed);
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
            dropped: self.shared.dropped.load(Ordering::Relaxed),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn requests_the_generator_cannot_send_are_dropped_not_failed() {
        // A server that accepts connections and never answers: every request stays in flight.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                open.push(stream);
            }
        });
        let load = start_bounded(port, 200, 4);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let counts = load.stop().await;
        server.abort();
        assert_eq!(counts.sent, 4, "{counts:?}");
        assert_eq!(counts.failed, 0, "{counts:?}");
        assert!(counts.dropped > 0, "{counts:?}");
    }
}
