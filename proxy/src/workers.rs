//! Serving threads: client connections are served on a fixed set of threads, each running a
//! single-threaded Tokio runtime with its own upstream pool.
//!
//! ```text
//! accept loop (control runtime) ──round robin──> worker 0: connections, upstream pool 0
//!                                            └─> worker 1: connections, upstream pool 1 ...
//! ```
//!
//! A connection, the upstream connections its requests use and the tasks driving them all live
//! on one thread, as in nginx's worker processes: a request is never handed between threads,
//! wakes no other thread, and its pool is never contended. Everything else (accepting,
//! configuration, the admin listener, mirroring, Kubernetes watches) runs on the control runtime
//! the proxy was started from.

use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::runtime::Handle;
use tokio::sync::oneshot;

use crate::deadline;
use crate::upstream::{PoolOptions, Upstream};

/// The serving threads. Dropping this stops them; tasks still running on them are dropped.
pub struct Workers {
    workers: Box<[Worker]>,
    next: AtomicUsize,
}

/// One serving thread.
pub struct Worker {
    handle: Handle,
    /// This thread's upstream connections.
    pub upstream: Upstream,
    /// Dropped with the worker, which ends the thread's runtime.
    _stop: oneshot::Sender<()>,
}

impl Workers {
    /// Starts `count` serving threads (at least one).
    pub fn start(count: usize, pool: &PoolOptions) -> io::Result<Workers> {
        let workers = (0..count.max(1))
            .map(|index| Worker::start(index, pool))
            .collect::<io::Result<Vec<_>>>()?;
        Ok(Workers {
            workers: workers.into_boxed_slice(),
            next: AtomicUsize::new(0),
        })
    }

    /// The threads' count when none is configured: one per available core.
    pub fn default_count() -> usize {
        std::thread::available_parallelism().map_or(1, usize::from)
    }

    /// The worker the next connection goes to (round robin).
    pub fn next(&self) -> &Worker {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.workers.len();
        &self.workers[i]
    }
}

impl Worker {
    fn start(index: usize, pool: &PoolOptions) -> io::Result<Worker> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        // The pool's own tasks (expiry) belong on the thread that uses it.
        let upstream = {
            let _entered = runtime.enter();
            Upstream::new(pool.clone())
        };
        let (stop, stopped) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name(format!("serin-worker-{index}"))
            .spawn(move || {
                // A current-thread runtime runs its tasks while `block_on` runs; the
                // thread's request deadlines are kept by this same future.
                runtime.block_on(async {
                    tokio::select! {
                        _ = stopped => {}
                        () = deadline::tick() => {}
                    }
                });
            })?;
        Ok(Worker {
            handle,
            upstream,
            _stop: stop,
        })
    }

    /// Runs `task` on this worker's thread.
    pub fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.handle.spawn(task);
    }
}
