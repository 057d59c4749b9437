//! Listeners: one accept loop per Gateway listener port, HTTP/1.1 and h2c on each connection,
//! and graceful drain.
//!
//! Accept loops run on the control runtime and hand each connection to a serving thread
//! ([`Workers`]), where it is served to its end.
//!
//! Ports follow the table: a reload binds new ports *before* the table is swapped (a port that
//! cannot be bound rejects the reload) and stops accepting on removed ports after; connections
//! already open on a removed port finish normally.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

use crate::deadline;
use crate::error::ConfigError;
use crate::forward::{Peer, Proxy};
use crate::metrics::OpenConnection;
use crate::upstream::Upstream;
use crate::workers::Workers;

/// Listeners bound but not yet serving; see [`Listeners::bind_new`].
pub struct Bound(Vec<(u16, std::net::TcpListener)>);

/// The running listeners and the drain machinery shared by every connection.
pub struct Listeners {
    bind: IpAddr,
    proxy: Arc<Proxy>,
    workers: Arc<Workers>,
    running: BTreeMap<u16, Running>,
    shutdown: watch::Sender<bool>,
    /// Each connection holds a clone; draining waits until all are dropped.
    alive: Option<mpsc::Sender<()>>,
    drained: mpsc::Receiver<()>,
}

struct Running {
    stop: watch::Sender<bool>,
    local: SocketAddr,
}

impl Listeners {
    /// Listeners on `bind` whose connections are served by `workers`.
    pub fn new(bind: IpAddr, proxy: Arc<Proxy>, workers: Arc<Workers>) -> Listeners {
        let (alive, drained) = mpsc::channel(1);
        Listeners {
            bind,
            proxy,
            workers,
            running: BTreeMap::new(),
            shutdown: watch::channel(false).0,
            alive: Some(alive),
            drained,
        }
    }

    /// Binds the ports of `wanted` that are not listening yet. Nothing changes on error.
    pub fn bind_new(&self, wanted: impl IntoIterator<Item = u16>) -> Result<Bound, ConfigError> {
        let mut bound = Vec::new();
        for port in wanted {
            if self.running.contains_key(&port) {
                continue;
            }
            let listener = std::net::TcpListener::bind((self.bind, port))
                .and_then(|l| l.set_nonblocking(true).map(|()| l))
                .map_err(|source| ConfigError::Bind { port, source })?;
            bound.push((port, listener));
        }
        Ok(Bound(bound))
    }

    /// Starts serving `bound` and stops accepting on running ports not in `wanted`.
    pub fn commit(&mut self, bound: Bound, wanted: &[u16]) {
        for (port, listener) in bound.0 {
            let Ok(listener) = TcpListener::from_std(listener) else {
                tracing::error!(port, "listener could not be registered with the runtime");
                continue;
            };
            let local = listener
                .local_addr()
                .unwrap_or_else(|_| SocketAddr::new(self.bind, port));
            let (stop, stopped) = watch::channel(false);
            tracing::info!(%local, "listening");
            tokio::spawn(accept_loop(
                listener,
                port,
                self.proxy.clone(),
                self.workers.clone(),
                stopped,
                self.shutdown.subscribe(),
                self.alive.clone(),
            ));
            self.running.insert(port, Running { stop, local });
        }
        let removed: Vec<u16> = self
            .running
            .keys()
            .copied()
            .filter(|p| !wanted.contains(p))
            .collect();
        for port in removed {
            if let Some(r) = self.running.remove(&port) {
                tracing::info!(local = %r.local, "no longer listening");
                let _ = r.stop.send(true);
            }
        }
    }

    /// Addresses being listened on.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.running.values().map(|r| r.local).collect()
    }

    /// Stops accepting, asks every connection to finish its in-flight requests, and waits up to
    /// `timeout` for them.
    pub async fn drain(mut self, timeout: Duration) {
        for r in self.running.values() {
            let _ = r.stop.send(true);
        }
        let _ = self.shutdown.send(true);
        self.alive = None;
        if tokio::time::timeout(timeout, self.drained.recv())
            .await
            .is_err()
        {
            tracing::warn!(?timeout, "drain timed out; closing remaining connections");
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    port: u16,
    proxy: Arc<Proxy>,
    workers: Arc<Workers>,
    mut stopped: watch::Receiver<bool>,
    shutdown: watch::Receiver<bool>,
    alive: Option<mpsc::Sender<()>>,
) {
    let open = proxy.telemetry().metrics.open_connections(port);
    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(port, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stopped.changed() => return,
        };
        let _ = stream.set_nodelay(true);
        // Leave this runtime's reactor; the worker registers the socket with its own.
        let stream = match stream.into_std() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(port, %remote, error = %e, "accepted connection could not be handed over");
                continue;
            }
        };
        let worker = workers.next();
        let connection = Connection {
            proxy: proxy.clone(),
            upstream: worker.upstream.clone(),
            peer: Peer::new(remote),
            port,
        };
        let (shutdown, alive, open) = (shutdown.clone(), alive.clone(), OpenConnection::new(&open));
        worker.spawn(async move {
            let _alive = alive;
            let _open = open;
            match TcpStream::from_std(stream) {
                Ok(stream) => serve(Arc::new(connection), stream, shutdown).await,
                Err(e) => tracing::warn!(%remote, error = %e, "connection could not be registered"),
            }
        });
    }
}

/// What every request of one client connection shares.
struct Connection {
    proxy: Arc<Proxy>,
    /// The serving thread's upstream pool.
    upstream: Upstream,
    peer: Peer,
    port: u16,
}

/// Serves one client connection (HTTP/1.1 or h2c) until it closes, or until `shutdown` asks
/// it to finish its in-flight requests.
async fn serve(
    connection: Arc<Connection>,
    stream: TcpStream,
    mut shutdown: watch::Receiver<bool>,
) {
    let remote = connection.peer.addr;
    let service = service_fn(move |req| {
        let connection = connection.clone();
        async move {
            let c = &*connection;
            Ok::<_, Infallible>(c.proxy.serve(c.port, &c.peer, &c.upstream, req).await)
        }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(deadline::ListTimer)
        .header_read_timeout(Duration::from_secs(30))
        // One buffer per write: a response's head and its first body bytes go out together
        // with `write`, instead of hyper queueing them for `writev` (fewer instructions per
        // proxied request in `benches/callgrind`; body bytes are copied once more).
        .writev(false);
    builder.http2().timer(TokioTimer::new());
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = async { let _ = shutdown.wait_for(|s| *s).await; } => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(%remote, error = %e, "connection ended with an error");
    }
}
