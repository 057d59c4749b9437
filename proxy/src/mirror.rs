//! Traffic mirroring: copies of live requests sent to a mirror backend, whose responses are
//! discarded. The live path never waits for a mirror and is never affected by one:
//!
//! ```text
//! live request ──tee──> primary            (body frames pass through untouched)
//!      │         └─ copy of the body, up to `body_limit`, handed over when the body ends
//!      ├─ mirror backend has `concurrency` copies admitted: dropped, reason="backend_busy"
//!      ├─ queue full: dropped, reason="queue_full"
//!      └─ try_send(job) ──> bounded queue ──> worker ──(≤ total_concurrency)──> mirror
//! ```
//!
//! Both checks come before the request head is copied, so a saturated mirror costs the live
//! path two atomic operations and a counter. The per-backend bound isolates mirrors from each
//! other: a hung mirror backend holds at most `concurrency` copies, and the others' copies
//! still flow.
//!
//! A mirrored request is recorded under `traffic="mirror"` with the mirror's status code (502 on
//! connect errors, 504 after `timeout`), so a canary's success rate and latency under mirroring
//! are measurable. `Host` is the mirror Service's cluster name (`name.namespace.svc.cluster.local`)
//! or, for a `serin.dev/Backend`, the endpoint address; the original host stays in
//! `X-Forwarded-Host`.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::request::Parts;
use http::uri::{PathAndQuery, Uri};
use http::{HeaderName, HeaderValue, Request, Version, header};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Full};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::time::Instant;

use crate::body::{BoxError, ClientBody};
use crate::metrics::{Metrics, MirrorDrop};
use crate::table::MirrorPolicy;
use crate::upstream::{PoolOptions, SendError, Upstream};

/// Bounds of the mirroring machinery.
#[derive(Debug, Clone)]
pub struct MirrorOptions {
    /// Copies waiting to be sent, all mirror backends together; more are dropped.
    pub queue: usize,
    /// Copies admitted (waiting or in flight) per mirror backend; more are dropped, so one slow
    /// or hung mirror backend holds up no other.
    pub concurrency: usize,
    /// Copies in flight at once, all mirror backends together.
    pub total_concurrency: usize,
    /// Largest request body mirrored; a larger body is not mirrored.
    pub body_limit: usize,
    /// Time allowed for a mirror's response headers (and for the live body to finish).
    pub timeout: Duration,
    pub connect_timeout: Duration,
}

impl Default for MirrorOptions {
    fn default() -> Self {
        MirrorOptions {
            queue: 1024,
            concurrency: 128,
            total_concurrency: 1024,
            body_limit: 64 * 1024,
            timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(2),
        }
    }
}

/// The sending side of the mirror queue.
pub struct Mirror {
    jobs: mpsc::Sender<Job>,
    metrics: Metrics,
    body_limit: usize,
    per_backend: usize,
    /// Admitted copies per mirror backend name, shared by every table's policies for it, so that
    /// a reload does not forget copies still hanging.
    admitted: Mutex<HashMap<Arc<str>, Arc<AtomicUsize>>>,
}

struct Job {
    policy: Arc<MirrorPolicy>,
    head: Parts,
    body: BodyCopy,
    _slot: Slot,
}

/// One admitted copy, counted against its mirror backend until dropped.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

enum BodyCopy {
    Ready(Bytes),
    /// Completed by the [`TeeBody`] when the live body ends; `Err` names why there is no copy.
    Pending(oneshot::Receiver<Result<Bytes, MirrorDrop>>),
}

impl Mirror {
    /// Starts the worker; must be called inside a Tokio runtime.
    pub fn start(options: &MirrorOptions, metrics: Metrics) -> Mirror {
        let (jobs, queue) = mpsc::channel(options.queue.max(1));
        let upstream = Upstream::new(PoolOptions {
            connect_timeout: options.connect_timeout,
            ..PoolOptions::default()
        });
        tokio::spawn(worker(queue, upstream, options.clone(), metrics.clone()));
        Mirror {
            jobs,
            metrics,
            body_limit: options.body_limit,
            per_backend: options.concurrency.max(1),
            admitted: Mutex::new(HashMap::new()),
        }
    }

    /// Admits one more copy for `policy`'s backend, unless it already has its share.
    fn admit(&self, policy: &MirrorPolicy) -> Option<Slot> {
        let counter = policy.admitted.get_or_init(|| {
            let mut admitted = self.admitted.lock().unwrap_or_else(|e| e.into_inner());
            admitted
                .entry(policy.target.name.clone())
                .or_default()
                .clone()
        });
        if counter.fetch_add(1, Ordering::AcqRel) >= self.per_backend {
            counter.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Slot(counter.clone()))
    }

    /// Queues copies of a request for `policies`. Returns the body to send to the primary: the
    /// original, or a tee that hands the mirrors a copy when it ends.
    pub fn copy<'p>(
        &self,
        policies: impl Iterator<Item = &'p Arc<MirrorPolicy>>,
        head: &Parts,
        extra: &[(HeaderName, HeaderValue)],
        body: ClientBody,
    ) -> RequestBody {
        let empty = body.is_end_stream();
        let too_large = body.size_hint().lower() > self.body_limit as u64;
        let mut waiting = Vec::new();
        for policy in policies {
            if too_large {
                self.metrics.mirror_dropped(MirrorDrop::body_too_large);
                continue;
            }
            // A busy mirror or a full queue drops the copy: find out before copying the head.
            let Some(slot) = self.admit(policy) else {
                self.metrics.mirror_dropped(MirrorDrop::backend_busy);
                continue;
            };
            if self.jobs.capacity() == 0 {
                self.metrics.mirror_dropped(MirrorDrop::queue_full);
                continue;
            }
            let (copy, tx) = if empty {
                (BodyCopy::Ready(Bytes::new()), None)
            } else {
                let (tx, rx) = oneshot::channel();
                (BodyCopy::Pending(rx), Some(tx))
            };
            let job = Job {
                policy: policy.clone(),
                head: copy_head(head, extra),
                body: copy,
                _slot: slot,
            };
            match self.jobs.try_send(job) {
                Ok(()) => waiting.extend(tx),
                Err(_) => self.metrics.mirror_dropped(MirrorDrop::queue_full),
            }
        }
        if waiting.is_empty() {
            RequestBody::Plain { body }
        } else {
            RequestBody::Tee {
                body,
                tee: Tee {
                    copy: BytesMut::new(),
                    limit: self.body_limit,
                    waiting,
                },
            }
        }
    }
}

/// The head of a copy: `head` with the `extra` fields the live request gets on the wire.
fn copy_head(head: &Parts, extra: &[(HeaderName, HeaderValue)]) -> Parts {
    let mut request = Request::new(());
    *request.method_mut() = head.method.clone();
    *request.uri_mut() = head.uri.clone();
    let mut headers = head.headers.clone();
    for (name, value) in extra {
        headers.insert(name, value.clone());
    }
    *request.headers_mut() = headers;
    request.into_parts().0
}

async fn worker(
    mut queue: mpsc::Receiver<Job>,
    upstream: Upstream,
    options: MirrorOptions,
    metrics: Metrics,
) {
    let permits = Arc::new(Semaphore::new(options.total_concurrency.max(1)));
    while let Some(job) = queue.recv().await {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let upstream = upstream.clone();
        let metrics = metrics.clone();
        let timeout = options.timeout;
        tokio::spawn(async move {
            send(job, &upstream, timeout, &metrics).await;
            drop(permit);
        });
    }
}

async fn send(job: Job, upstream: &Upstream, timeout: Duration, metrics: &Metrics) {
    let body = match job.body {
        BodyCopy::Ready(b) => b,
        BodyCopy::Pending(rx) => match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(Ok(b))) => b,
            Ok(Ok(Err(reason))) => return metrics.mirror_dropped(reason),
            Ok(Err(_)) | Err(_) => return metrics.mirror_dropped(MirrorDrop::body_incomplete),
        },
    };
    let policy = job.policy;
    let Some(endpoint) = policy.target.endpoint() else {
        return metrics.mirror_dropped(MirrorDrop::no_endpoints);
    };
    let mut head = job.head;
    head.uri = Uri::from(
        head.uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/")),
    );
    head.version = Version::HTTP_11;
    let host = policy
        .host
        .clone()
        .or_else(|| HeaderValue::from_str(endpoint.as_str()).ok());
    if let Some(host) = host {
        head.headers.insert(header::HOST, host);
    }
    head.headers.remove(header::CONTENT_LENGTH);
    head.headers.remove(header::TRANSFER_ENCODING);
    let started = Instant::now();
    let status = match tokio::time::timeout(
        timeout,
        upstream.send(endpoint, Request::from_parts(head, Full::new(body)), &[]),
    )
    .await
    {
        Ok(Ok(response)) => {
            let status = response.status().as_u16();
            // Read and discard the body: at its end the connection can be reused.
            let _ = tokio::time::timeout(timeout, response.into_body().collect()).await;
            status
        }
        Ok(Err(SendError::Connect(e))) => {
            tracing::debug!(error = %e, "mirror unreachable");
            policy.target.connect_errors.inc();
            502
        }
        Ok(Err(SendError::Exchange { .. })) => 502,
        Err(_) => 504,
    };
    policy.metrics.record(status, started.elapsed());
}

/// The body sent to the live backend: the client's body, teed when mirrors wait for a copy.
#[derive(Debug)]
pub enum RequestBody {
    Plain { body: ClientBody },
    Tee { body: ClientBody, tee: Tee },
}

/// Copies the body's data as it streams past, until the end or the size limit.
#[derive(Debug)]
pub struct Tee {
    copy: BytesMut,
    limit: usize,
    waiting: Vec<oneshot::Sender<Result<Bytes, MirrorDrop>>>,
}

impl Tee {
    fn finish(&mut self, result: Result<(), MirrorDrop>) {
        let copy = std::mem::take(&mut self.copy).freeze();
        for tx in self.waiting.drain(..) {
            let _ = tx.send(result.map(|()| copy.clone()));
        }
    }
}

impl Drop for Tee {
    fn drop(&mut self) {
        // The live side stopped reading before the end (early response, client gone).
        self.finish(Err(MirrorDrop::body_incomplete));
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            RequestBody::Plain { body } => Pin::new(body).poll_frame(cx),
            RequestBody::Tee { body, tee } => {
                let polled = Pin::new(&mut *body).poll_frame(cx);
                if tee.waiting.is_empty() {
                    return polled;
                }
                match &polled {
                    Poll::Ready(Some(Ok(frame))) => {
                        if let Some(data) = frame.data_ref() {
                            if tee.copy.len() + data.len() > tee.limit {
                                tee.finish(Err(MirrorDrop::body_too_large));
                            } else {
                                tee.copy.extend_from_slice(data);
                            }
                        }
                        if body.is_end_stream() {
                            tee.finish(Ok(()));
                        }
                    }
                    Poll::Ready(None) => tee.finish(Ok(())),
                    Poll::Ready(Some(Err(_))) => tee.finish(Err(MirrorDrop::body_incomplete)),
                    Poll::Pending => {}
                }
                polled
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Plain { body } | RequestBody::Tee { body, .. } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Plain { body } | RequestBody::Tee { body, .. } => body.size_hint(),
        }
    }
}
